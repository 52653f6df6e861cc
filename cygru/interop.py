"""Conversion between cygru modules and other frameworks' GRUs.

Four entry points:

* :func:`from_torch` -- a ``torch.nn.GRU`` / ``torch.nn.GRUCell`` to the equal cygru module;
* :func:`from_keras` -- the three weight arrays of a Keras ``GRU`` layer to a cygru ``GRU``;
* :func:`from_onnx` -- one ONNX ``GRU`` node to a cygru ``GRU``;
* :func:`to_onnx` -- a cygru ``GRU`` to an ONNX model that ONNX Runtime runs.

cygru keeps PyTorch's gate order **r, z, n** everywhere. Keras and ONNX store their gates in the
order **z, r, h** (h is the candidate state, PyTorch's n), so every conversion permutes the three
row (or column) blocks of each weight and bias. The gate math is otherwise the same in all four
frameworks, ``h' = (1 - z) * n + z * h``, and the two candidate-state variants map as follows:

* cygru/PyTorch ``reset_after=True`` = Keras ``reset_after=True`` (its default) = ONNX
  ``linear_before_reset=1``: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``;
* cygru ``reset_after=False`` = Keras ``reset_after=False`` = ONNX ``linear_before_reset=0``:
  ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.

None of these functions imports torch or keras, and ``onnx`` is imported only inside the ONNX
functions, so ``import cygru`` never needs any of them.
"""

from __future__ import annotations

import os
import operator

import numpy as np

__all__ = ["from_torch", "from_keras", "from_onnx", "to_onnx"]

_ONNX_HINT = "pip install cygru[onnx]"
_DEFAULT_OPSET = 17
_MIN_OPSET = 13


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _modules():
    # Imported lazily: cygru/__init__.py imports this module, and modules.py may import us.
    from . import modules

    return modules


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"cygru's ONNX conversion needs the 'onnx' package: {_ONNX_HINT}"
        ) from exc
    return onnx


def _as_host(array):
    """A NumPy view of a parameter that may live on the GPU (CuPy arrays have ``.get()``)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    if callable(get) and type(array).__module__.split(".")[0] == "cupy":
        return get()
    return np.asarray(array)


def _float_dtype(dtype, what):
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return np.dtype(np.float32)
    if dtype == np.float64:
        return np.dtype(np.float64)
    raise TypeError(f"{what} has dtype {dtype}; cygru supports float32 and float64 only")


# Gate-block permutations. ``hidden_size`` is the block size H; ``axis`` the axis stacking the
# three gates. z,r,h (Keras/ONNX) -> r,z,n (cygru) swaps the first two blocks, and so does the
# inverse, so one function serves both directions.
def _swap_rz(array, hidden_size, axis=0):
    h = hidden_size
    a = np.moveaxis(np.asarray(array), axis, 0)
    out = np.concatenate([a[h : 2 * h], a[:h], a[2 * h : 3 * h]], axis=0)
    return np.moveaxis(out, 0, axis)


def _suffix(direction):
    return "_reverse" if direction == 1 else ""


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------


def from_torch(module):
    """Build the cygru module equal to a ``torch.nn.GRU`` or ``torch.nn.GRUCell``.

    The conversion does not import torch: it reads the module's options and converts each
    tensor of ``module.state_dict()`` with ``.detach().cpu().numpy()`` (so a CUDA module works
    too). Gate order, parameter names and shapes are PyTorch's in cygru as well, so the
    weights are copied as they are.

    Parameters
    ----------
    module : torch.nn.GRU or torch.nn.GRUCell
        The module to convert. Its parameters must all be float32 or all float64.

    Returns
    -------
    cygru.GRU or cygru.GRUCell
        A module with the same options (``num_layers``, ``bias``, ``batch_first``,
        ``dropout``, ``bidirectional``) and a copy of the weights, in the same dtype
        (``torch.float32`` -> ``np.float32``, ``torch.float64`` -> ``np.float64``). The
        result does not share memory with ``module``. ``dropout`` is copied as an option;
        cygru applies it only inside ``vjp`` (training), never in a plain call, whatever
        the torch module's ``training`` flag was.

    Raises
    ------
    TypeError
        If ``module`` is neither a GRU nor a GRUCell, or its dtype is not float32/float64
        (``module.half()`` and ``module.bfloat16()`` are refused).
    ValueError
        If ``module`` uses a feature cygru does not have (``proj_size != 0``, a mode other than
        ``"GRU"``) or its ``state_dict()`` lacks an expected parameter (a quantized GRU, say).

    Examples
    --------
    >>> import numpy as np, torch
    >>> import cygru
    >>> tgru = torch.nn.GRU(4, 8, num_layers=2, batch_first=True).double()
    >>> gru = cygru.from_torch(tgru)
    >>> gru.num_layers, gru.batch_first, gru.dtype == np.float64
    (2, True, True)
    >>> x = np.random.default_rng(0).standard_normal((3, 5, 4))
    >>> out, h_n = gru(x)
    >>> t_out, t_h_n = tgru(torch.from_numpy(x))
    >>> bool(np.allclose(out, t_out.detach().numpy(), atol=1e-12))
    True
    """
    kind = type(module).__name__
    if kind not in ("GRU", "GRUCell"):
        raise TypeError(
            "from_torch expects a torch.nn.GRU or torch.nn.GRUCell, "
            f"got {type(module).__qualname__}"
        )
    for attr in ("input_size", "hidden_size", "bias", "state_dict"):
        if not hasattr(module, attr):
            raise TypeError(
                f"{type(module).__qualname__} has no attribute {attr!r}; "
                "from_torch expects a torch.nn.GRU or torch.nn.GRUCell"
            )
    modules = _modules()
    input_size = int(module.input_size)
    hidden_size = int(module.hidden_size)
    bias = bool(module.bias)

    if kind == "GRU":
        mode = getattr(module, "mode", "GRU")
        if mode != "GRU":
            raise ValueError(f"from_torch: unsupported RNN mode {mode!r} (only 'GRU')")
        proj_size = int(getattr(module, "proj_size", 0) or 0)
        if proj_size != 0:
            raise ValueError(f"from_torch: proj_size={proj_size} is not supported (cygru needs 0)")
        num_layers = int(module.num_layers)
        bidirectional = bool(module.bidirectional)
        num_directions = 2 if bidirectional else 1
        names = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                sfx = f"_l{layer}{_suffix(direction)}"
                names += [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                if bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
    else:
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])

    state = module.state_dict()
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(
            f"from_torch: the {kind}'s state_dict() lacks {missing} "
            "(quantized or otherwise modified modules are not supported)"
        )
    arrays = {}
    dtype = None
    for name in names:
        tensor = state[name]
        # Check the dtype before converting: .numpy() itself fails on bfloat16.
        tdtype = str(getattr(tensor, "dtype", ""))
        if tdtype.startswith("torch.") and tdtype not in ("torch.float32", "torch.float64"):
            raise TypeError(
                f"torch parameter {name!r} has dtype {tdtype}; cygru supports float32 and "
                "float64 only (convert with module.float() or module.double())"
            )
        array = np.array(tensor.detach().cpu().numpy(), copy=True)
        this = _float_dtype(array.dtype, f"torch parameter {name!r}")
        if dtype is None:
            dtype = this
        elif this != dtype:
            raise TypeError(
                f"from_torch: parameters have mixed dtypes ({dtype} and {this} for {name!r})"
            )
        arrays[name] = array

    if kind == "GRU":
        out = modules.GRU(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=bool(module.batch_first),
            dropout=float(module.dropout),
            bidirectional=bidirectional,
            dtype=dtype,
        )
    else:
        out = modules.GRUCell(input_size, hidden_size, bias=bias, dtype=dtype)
    out.load_state_dict(arrays)
    return out


# --------------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------------


def from_keras(kernel, recurrent_kernel, bias, *, reset_after=True, dtype=None):
    """Build a one-layer cygru ``GRU`` equal to a Keras ``GRU`` layer.

    Pass the layer's three weights, as returned by ``layer.get_weights()`` (or the
    variables ``layer.cell.kernel``, ``.recurrent_kernel``, ``.bias``; anything
    ``np.asarray`` accepts). Keras stores the gates in the order z, r, h and multiplies
    from the right (``x @ kernel``); cygru stores r, z, n and multiplies by the transpose
    (``x @ weight_ih.T``), so each matrix is transposed and its gate blocks permuted.

    Bias mapping:

    * ``reset_after=True`` (Keras' default, cuDNN-compatible): ``bias`` is (2, 3H); row 0 is
      the input bias (-> ``bias_ih_l0``), row 1 the recurrent bias (-> ``bias_hh_l0``). Keras
      then computes ``h~ = tanh(x W_h + b_h + r * (h U_h + b'_h))``, which is cygru's
      ``reset_after=True``.
    * ``reset_after=False``: ``bias`` is (3H,) and Keras computes
      ``h~ = tanh(x W_h + b_h + (r * h) U_h)``. The single bias goes to ``bias_ih_l0`` and
      ``bias_hh_l0`` is zero -- exact, since with ``reset_after=False`` cygru adds ``b_hn``
      outside the reset product (``tanh(W_in x + b_in + W_hn (r * h) + b_hn)``).
    * ``bias=None`` (a layer built with ``use_bias=False``): a cygru ``GRU(bias=False)``.

    Parameters
    ----------
    kernel : array_like, shape (I, 3H)
        Input weights, gate columns ordered z, r, h.
    recurrent_kernel : array_like, shape (H, 3H)
        Recurrent weights, gate columns ordered z, r, h.
    bias : array_like or None
        Shape (2, 3H) with ``reset_after=True``, (3H,) with ``reset_after=False``; None when
        the Keras layer has no bias.
    reset_after : bool, default True
        The Keras layer's ``reset_after`` option; becomes the cygru module's.
    dtype : {None, np.float32, np.float64}, optional
        The module's dtype. None takes ``kernel``'s dtype, which must then be float32 or
        float64 (a mixed-precision float16 layer needs ``dtype=np.float32``).

    Returns
    -------
    cygru.GRU
        ``GRU(I, H, batch_first=True, reset_after=reset_after)`` -- Keras' layout, (B, T, I).
        Keras' ``return_sequences`` output is ``output``; its final state is ``h_n[0]``.
        A Keras layer with ``go_backwards=True`` runs backwards in time and returns its
        sequence reversed; it corresponds to ``GRU(..., reverse=True)`` applied to the same
        input with ``output[:, ::-1]``.

    Raises
    ------
    ValueError
        If the shapes are inconsistent with each other (the message names what was expected).
    TypeError
        If ``dtype`` is None and the kernel is neither float32 nor float64.

    Examples
    --------
    >>> import numpy as np
    >>> import cygru
    >>> rng = np.random.default_rng(0)
    >>> I, H = 3, 4
    >>> kernel = rng.standard_normal((I, 3 * H)).astype(np.float32)
    >>> recurrent = rng.standard_normal((H, 3 * H)).astype(np.float32)
    >>> bias = rng.standard_normal((2, 3 * H)).astype(np.float32)
    >>> gru = cygru.from_keras(kernel, recurrent, bias)
    >>> gru.weight_ih_l0.shape, gru.batch_first, gru.reset_after
    ((12, 3), True, True)
    >>> bool(np.array_equal(gru.weight_ih_l0[:H], kernel[:, H:2 * H].T))  # r gate
    True
    >>> out, h_n = gru(rng.standard_normal((2, 5, I)).astype(np.float32))
    >>> out.shape, h_n.shape
    ((2, 5, 4), (1, 2, 4))
    """
    modules = _modules()
    reset_after = bool(reset_after)
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    if dtype is None:
        dtype = _float_dtype(kernel.dtype, "the Keras kernel")
    else:
        dtype = _float_dtype(dtype, "dtype")

    if kernel.ndim != 2 or kernel.shape[1] % 3 != 0 or kernel.shape[1] == 0:
        raise ValueError(
            f"from_keras: kernel must have shape (input_size, 3*units), got {kernel.shape}"
        )
    input_size, h3 = kernel.shape
    hidden_size = h3 // 3
    if input_size == 0:
        raise ValueError("from_keras: kernel has input_size 0")
    if recurrent_kernel.shape != (hidden_size, h3):
        raise ValueError(
            f"from_keras: recurrent_kernel must have shape (units, 3*units) = "
            f"{(hidden_size, h3)} to match kernel {kernel.shape}, got {recurrent_kernel.shape}"
        )
    if bias is not None:
        bias = np.asarray(bias)
        expected = (2, h3) if reset_after else (h3,)
        if bias.shape != expected:
            hint = ""
            if reset_after and bias.shape == (h3,):
                hint = " (a (3*units,) bias comes from a reset_after=False layer)"
            elif not reset_after and bias.shape == (2, h3):
                hint = " (a (2, 3*units) bias comes from a reset_after=True layer)"
            raise ValueError(
                f"from_keras: with reset_after={reset_after} bias must have shape {expected} "
                f"for units={hidden_size}, got {bias.shape}{hint}"
            )

    gru = modules.GRU(
        input_size,
        hidden_size,
        bias=bias is not None,
        batch_first=True,
        reset_after=reset_after,
        dtype=dtype,
    )
    state = {
        "weight_ih_l0": _swap_rz(kernel.T, hidden_size).astype(dtype),
        "weight_hh_l0": _swap_rz(recurrent_kernel.T, hidden_size).astype(dtype),
    }
    if bias is not None:
        if reset_after:
            b_ih, b_hh = bias[0], bias[1]
        else:
            b_ih, b_hh = bias, np.zeros(h3, dtype=dtype)
        state["bias_ih_l0"] = _swap_rz(b_ih, hidden_size).astype(dtype)
        state["bias_hh_l0"] = _swap_rz(b_hh, hidden_size).astype(dtype)
    gru.load_state_dict(state)
    return gru


# --------------------------------------------------------------------------------------------
# ONNX import
# --------------------------------------------------------------------------------------------

_DEFAULT_ACTIVATIONS = ("sigmoid", "tanh")


def _load_model(model):
    """The ``onnx.ModelProto`` that ``from_onnx``'s ``model`` argument stands for.

    A ModelProto is used as it is (and never modified); ``bytes``-like objects are parsed as a
    serialized model; a path is read, parsed, and its external data (if any) loaded from the
    file's directory, as ``onnx.load`` does. Input that protobuf cannot decode, or that decodes
    to something without a graph (an empty file, most garbage), raises a ValueError naming its
    source.
    """
    onnx = _import_onnx()
    if isinstance(model, onnx.ModelProto):
        source, path, data = "the onnx.ModelProto given", None, None
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        source, path = f"the {type(model).__name__} object given ({len(data)} bytes)", None
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        source = f"the file {os.fsdecode(path)!r}"
        with open(path, "rb") as fh:  # a missing file raises FileNotFoundError naming it
            data = fh.read()
    else:
        raise TypeError(
            "cygru.from_onnx: expected a path (str or os.PathLike), a serialized model (bytes, "
            f"bytearray or memoryview) or an onnx.ModelProto, got {type(model).__qualname__}"
        )

    hint = " (bytes are read as a serialized model; pass a file's path as str or os.PathLike)"
    hint = hint if path is None and data is not None else ""
    if data is not None:
        if not data:
            raise ValueError(f"cygru.from_onnx: {source} is not a readable ONNX model: it is empty")
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load_model_from_string(data)
        except DecodeError as exc:
            raise ValueError(
                f"cygru.from_onnx: {source} is not a readable ONNX model: protobuf cannot decode "
                f"it as an onnx.ModelProto (a truncated or corrupt file, or not an ONNX model at "
                f"all): {exc}{hint}"
            ) from exc
    if not model.HasField("graph"):
        raise ValueError(
            f"cygru.from_onnx: {source} is not a readable ONNX model: it holds no graph{hint}"
        )
    if path is not None:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, os.path.dirname(path))
    return model


def _constant_values(graph):
    """Name -> (where it is stored, TensorProto or ndarray) for the graph's initializers and
    the outputs of its Constant nodes (``value``, ``value_float(s)``, ``value_int(s)``)."""
    values = {init.name: (f"the initializer {init.name!r}", init) for init in graph.initializer}
    plain = {
        "value_float": lambda a: np.array(a.f, dtype=np.float32),
        "value_floats": lambda a: np.array(a.floats, dtype=np.float32),
        "value_int": lambda a: np.array(a.i, dtype=np.int64),
        "value_ints": lambda a: np.array(a.ints, dtype=np.int64),
    }
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or not node.output:
            continue
        origin = f"the Constant node {node.name!r}" if node.name else "a Constant node"
        origin += f" (output {node.output[0]!r})"
        for attr in node.attribute:
            if attr.name == "value":
                values[node.output[0]] = (origin, attr.t)
            elif attr.name in plain:
                values[node.output[0]] = (origin, plain[attr.name](attr))
    return values


def _stored_array(value, what, label):
    """The ndarray of a ``_constant_values`` entry; never reads files."""
    from onnx import TensorProto, numpy_helper

    origin, tensor = value
    if isinstance(tensor, np.ndarray):
        return tensor
    if tensor.data_location == TensorProto.EXTERNAL:
        # numpy_helper.to_array would look for the file relative to the working directory.
        raise ValueError(
            f"cygru.from_onnx: {label}'s input {what} ({origin}) keeps its data in an external "
            "file that was not loaded; pass the model's path, or a ModelProto from onnx.load(path)"
        )
    return numpy_helper.to_array(tensor)


def from_onnx(model, node_name=None):
    """Build a cygru ``GRU`` equal to one ``GRU`` node of an ONNX model.

    The node's ``W``, ``R`` and (optional) ``B`` inputs must be stored in the model, as
    initializers or ``Constant`` nodes; ONNX stores the gates in the order z, r, h, which is
    permuted to cygru's r, z, n. ``B`` of shape (D, 6H) holds ``[Wb, Rb]``; ``Wb`` becomes
    ``bias_ih`` and ``Rb`` ``bias_hh``, for both ``linear_before_reset`` values (ONNX adds
    ``Rbh`` inside the reset product when ``linear_before_reset=1`` and outside it when 0,
    exactly as cygru's ``reset_after`` True/False do). A node without ``B`` gives a
    ``GRU(bias=False)``.

    Attribute mapping: ``direction`` ``"forward"`` -> ``GRU()``, ``"reverse"`` ->
    ``GRU(reverse=True)`` (one direction running backwards in time), ``"bidirectional"`` ->
    ``GRU(bidirectional=True)``; ``linear_before_reset`` 0/1 -> ``reset_after`` False/True;
    ``layout`` 0/1 -> ``batch_first`` False/True; ``hidden_size`` is checked against ``R``.

    The node's run-time inputs are not part of the module: pass its ``initial_h`` as ``h0``
    and its ``sequence_lens`` as ``lengths`` when calling the module. ``h0`` and ``h_n``
    are always (D, B, H) in cygru, also for ``layout=1`` (where ONNX uses (B, D, H)), and
    ``output`` is ONNX's ``Y`` with the direction axis merged into the features:
    ``Y.reshape(T, B, D*H)`` after moving D next to H for ``layout=0``.

    A module holds no run-time inputs, so a node whose ``initial_h`` or ``sequence_lens`` is
    *stored* in the model (an initializer, also one that is a graph input with a default, or
    a ``Constant`` node) is refused rather than converted without it -- except an all-zero
    ``initial_h``, which is what the module starts from anyway. To convert such a node, read
    the array with ``onnx.numpy_helper.to_array``, set the node's input (``input[4]`` for
    ``sequence_lens``, ``input[5]`` for ``initial_h``) to ``""`` in a copy of the model,
    convert the copy, and pass the array as ``lengths=`` or ``h0=`` when calling the module
    (``h0 = initial_h.transpose(1, 0, 2)`` for ``layout=1``). An input that is a graph input
    or computed by other nodes is taken to be supplied at run time.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        The path of a model file (its external data, if any, is read from the file's
        directory); a serialized model (``bytes``, ``bytearray`` or ``memoryview``, e.g.
        ``model.SerializeToString()`` or a file's contents); or a model, which is only read,
        never modified.
    node_name : str, optional
        The name of the GRU node to convert; needed when the graph has several.

    Returns
    -------
    cygru.GRU
        A one-layer module in the dtype of ``W`` (float32 or float64).

    Raises
    ------
    ValueError
        If ``model`` is not a readable ONNX model (an empty, garbage or truncated file or
        bytes; the message names the file); if the graph has no GRU node, several and no (or
        an unknown) ``node_name``; if ``W``, ``R`` or ``B`` is not stored in the model (e.g.
        it is a graph input); if shapes disagree; if the node's ``initial_h`` (other than
        zeros) or ``sequence_lens`` is stored in the model (see above; the message names the
        stored tensor and says how to proceed); or if the node uses an attribute cygru does
        not implement (``activations`` other than Sigmoid, Tanh; ``clip``;
        ``activation_alpha``; ``activation_beta``) -- the message names the attribute.
    TypeError
        If ``model`` is none of the types above, or the weights are neither float32 nor
        float64.
    FileNotFoundError
        If ``model`` is the path of a file that does not exist (other ``OSError`` s of
        reading the file are raised as they are).
    ImportError
        If the ``onnx`` package is missing (``pip install cygru[onnx]``).

    Examples
    --------
    >>> import numpy as np
    >>> from onnx import helper, numpy_helper, TensorProto
    >>> import cygru
    >>> rng = np.random.default_rng(0)
    >>> I, H = 3, 4
    >>> W = rng.standard_normal((1, 3 * H, I)).astype(np.float32)
    >>> R = rng.standard_normal((1, 3 * H, H)).astype(np.float32)
    >>> node = helper.make_node("GRU", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=H,
    ...                         linear_before_reset=1, name="gru")
    >>> graph = helper.make_graph(
    ...     [node], "g",
    ...     [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
    ...     [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    ...     initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")])
    >>> gru = cygru.from_onnx(helper.make_model(graph))
    >>> gru.hidden_size, gru.bias, gru.reset_after
    (4, False, True)
    >>> bool(np.array_equal(gru.weight_hh_l0[H:2 * H], R[0, :H]))  # z gate
    True
    """
    onnx = _import_onnx()
    model = _load_model(model)
    graph = model.graph
    grus = [n for n in graph.node if n.op_type == "GRU" and n.domain in ("", "ai.onnx")]
    if not grus:
        raise ValueError("cygru.from_onnx: the graph has no GRU node")
    names = [n.name for n in grus]
    if node_name is None:
        if len(grus) > 1:
            raise ValueError(
                f"cygru.from_onnx: the graph has {len(grus)} GRU nodes; pick one with node_name= "
                f"(names: {names})"
            )
        node = grus[0]
    else:
        matches = [n for n in grus if n.name == node_name]
        if not matches:
            raise ValueError(f"cygru.from_onnx: no GRU node named {node_name!r} (names: {names})")
        if len(matches) > 1:
            raise ValueError(f"cygru.from_onnx: several GRU nodes are named {node_name!r}")
        node = matches[0]
    label = f"GRU node {node.name!r}" if node.name else "the GRU node"

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    for unsupported in ("clip", "activation_alpha", "activation_beta"):
        if unsupported in attrs:
            raise ValueError(
                f"cygru.from_onnx: {label} sets the attribute {unsupported!r}, which cygru does "
                "not support"
            )
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"cygru.from_onnx: {label} has an unknown direction {direction!r}")
    num_directions = 2 if direction == "bidirectional" else 1
    if "activations" in attrs:
        acts = tuple(
            (a.decode() if isinstance(a, bytes) else str(a)).lower() for a in attrs["activations"]
        )
        if acts != _DEFAULT_ACTIVATIONS * num_directions:
            raise ValueError(
                f"cygru.from_onnx: {label} has the attribute 'activations'={list(acts)}; cygru "
                "supports only the default (Sigmoid, Tanh) per direction"
            )
    lbr = int(attrs.get("linear_before_reset", 0))
    layout = int(attrs.get("layout", 0))
    if lbr not in (0, 1):
        raise ValueError(
            f"cygru.from_onnx: {label} has linear_before_reset={lbr} (expected 0 or 1)"
        )
    if layout not in (0, 1):
        raise ValueError(f"cygru.from_onnx: {label} has layout={layout} (expected 0 or 1)")

    values = _constant_values(graph)
    graph_inputs = {i.name for i in graph.input}
    # ONNX GRU inputs: X, W, R, B, sequence_lens, initial_h; '' (or absent) omits one.
    inputs = list(node.input) + [""] * (6 - len(node.input))

    def fetch(index, what):
        name = inputs[index]
        if name in values:
            return _stored_array(values[name], what, label)
        if name in graph_inputs:
            raise ValueError(
                f"cygru.from_onnx: {label}'s input {what} ({name!r}) is a graph input, not an "
                "initializer; cygru needs the weights stored in the model"
            )
        raise ValueError(
            f"cygru.from_onnx: {label}'s input {what} ({name!r}) is computed by another node; "
            "cygru needs it stored in the model as an initializer"
        )

    W = fetch(1, "W")
    R = fetch(2, "R")
    B = fetch(3, "B") if inputs[3] else None
    dtype = _float_dtype(W.dtype, f"{label}'s W")
    if R.dtype != W.dtype or (B is not None and B.dtype != W.dtype):
        raise TypeError(f"cygru.from_onnx: {label}'s W, R and B have different dtypes")

    if R.ndim != 3 or R.shape[0] != num_directions or R.shape[1] != 3 * R.shape[2]:
        raise ValueError(
            f"cygru.from_onnx: {label}'s R must have shape (num_directions, 3*hidden_size, "
            f"hidden_size) with num_directions={num_directions} (direction={direction!r}), "
            f"got {R.shape}"
        )
    hidden_size = R.shape[2]
    if "hidden_size" in attrs and int(attrs["hidden_size"]) != hidden_size:
        raise ValueError(
            f"cygru.from_onnx: {label} has hidden_size={int(attrs['hidden_size'])} but R has shape "
            f"{R.shape} (hidden_size {hidden_size})"
        )
    if hidden_size < 1:
        raise ValueError(f"cygru.from_onnx: {label} has hidden_size 0")
    if W.ndim != 3 or W.shape[:2] != (num_directions, 3 * hidden_size) or W.shape[2] < 1:
        raise ValueError(
            f"cygru.from_onnx: {label}'s W must have shape ({num_directions}, {3 * hidden_size}, "
            f"input_size), got {W.shape}"
        )
    if B is not None and B.shape != (num_directions, 6 * hidden_size):
        raise ValueError(
            f"cygru.from_onnx: {label}'s B must have shape ({num_directions}, {6 * hidden_size}), "
            f"got {B.shape}"
        )
    input_size = W.shape[2]

    # sequence_lens and initial_h are run-time inputs, which a module does not hold: stored in
    # the model (an initializer, possibly also a graph input with a default, or a Constant
    # node), they would be lost without a word. Only an all-zero initial_h is exactly what the
    # module does anyway (h0=None means zeros), so it is accepted; anything else is refused
    # with the way to proceed. Names that are graph inputs only, or computed by other nodes,
    # are supplied at run time, and '' omits the input: nothing to check.
    stored = []
    for index, what, keyword in ((4, "sequence_lens", "lengths"), (5, "initial_h", "h0")):
        name = inputs[index]
        if not name or name not in values:
            continue
        array = _stored_array(values[name], what, label)
        if what == "initial_h" and not np.any(array):
            continue
        origin = values[name][0]
        if name in graph_inputs:
            origin += " (also a graph input: the stored array is its default)"
        stored.append((index, what, keyword, origin, array))
    if stored:
        several = len(stored) > 1
        found = " and ".join(
            f"its input {what} from {origin} ({array.dtype}, shape {array.shape})"
            for _, what, _, origin, array in stored
        )
        slots = " and ".join(f"input[{index}]" for index, *_ in stored)
        keywords = " and ".join(f"{keyword}=" for _, _, keyword, _, _ in stored)
        transpose = ""
        if layout == 1 and any(what == "initial_h" for _, what, *_ in stored):
            transpose = (
                "; the node has layout=1, so first transpose initial_h from ONNX's (batch, "
                "num_directions, hidden_size) to cygru's (num_directions, batch, hidden_size): "
                "h0 = array.transpose(1, 0, 2)"
            )
        raise ValueError(
            f"cygru.from_onnx: {label} takes {found}, stored in the model; a cygru.GRU holds "
            f"weights only, not run-time inputs, so it cannot keep {'them' if several else 'it'}. "
            f"To proceed, read the array{'s' if several else ''} with "
            f"onnx.numpy_helper.to_array, set the node's {slots} to '' (ONNX's name for an "
            "omitted input) in a copy of the model (copy.deepcopy), convert that copy with "
            f"from_onnx, and pass the array{'s' if several else ''} as {keywords} when calling "
            f"the module{transpose}"
        )

    gru = _modules().GRU(
        input_size,
        hidden_size,
        bias=B is not None,
        batch_first=bool(layout),
        bidirectional=num_directions == 2,
        reset_after=bool(lbr),
        reverse=direction == "reverse",
        dtype=dtype,
    )
    h = hidden_size
    state = {}
    for d in range(num_directions):
        sfx = f"_l0{_suffix(d)}"
        state[f"weight_ih{sfx}"] = _swap_rz(W[d], h).astype(dtype)
        state[f"weight_hh{sfx}"] = _swap_rz(R[d], h).astype(dtype)
        if B is not None:
            state[f"bias_ih{sfx}"] = _swap_rz(B[d, : 3 * h], h).astype(dtype)
            state[f"bias_hh{sfx}"] = _swap_rz(B[d, 3 * h :], h).astype(dtype)
    gru.load_state_dict(state)
    return gru


# --------------------------------------------------------------------------------------------
# ONNX export
# --------------------------------------------------------------------------------------------


def to_onnx(module, path_or_file, *, opset=_DEFAULT_OPSET, h0="optional"):
    """Write a cygru ``GRU`` as an ONNX model that ONNX Runtime runs.

    The graph has one ONNX ``GRU`` node per layer (``linear_before_reset =
    int(module.reset_after)``; ``direction`` ``"forward"``, ``"reverse"`` for
    ``reverse=True``, or ``"bidirectional"``), with the weights stored as initializers in
    ONNX's gate order z, r, h. Between layers the node output ``Y`` (T, D, B, H) is transposed
    and reshaped to (T, B, D*H). A ``batch_first`` module gets ``Transpose`` nodes on the input
    and the output (the graph's GRU nodes use ``layout=0``; ONNX Runtime rejects ``layout=1``).

    Graph inputs and outputs (``T`` and ``B`` are dynamic):

    * ``x`` -- (T, B, I), or (B, T, I) for ``batch_first`` modules;
    * ``h0`` -- the initial state, (L*D, B, H); a fed (L*D, 1, H) state is broadcast over the
      batch. How it appears depends on the ``h0`` argument: ``"optional"`` (default) makes it
      an input with a zero default (a zero initializer of the same name, which ONNX allows to
      be overridden), so a session runs with ``x`` alone or with ``x`` and ``h0``;
      ``"required"`` makes it an ordinary second input; ``"none"`` leaves it out (zero
      initial state);
    * ``output`` -- (T, B, D*H), or (B, T, D*H) for ``batch_first`` modules;
    * ``h_n`` -- (L*D, B, H).

    The model is for inference: ``dropout`` is not applied and per-sequence ``lengths`` are not
    exported. **float64 modules are exported as float32** (the weights are rounded; ONNX
    Runtime has no double-precision GRU kernel), so feed float32 arrays.

    Parameters
    ----------
    module : cygru.GRU
        The module to export (a ``GRUCell`` is refused).
    path_or_file : str, os.PathLike or binary file object
        Where to write the serialized model.
    opset : int, default 17
        The ``ai.onnx`` opset to declare, at least 13.
    h0 : {"optional", "required", "none"}, default "optional"
        Whether the graph takes an initial state, see above. With ``"optional"`` ONNX Runtime
        lists ``h0`` under ``session.get_overridable_initializers()`` rather than
        ``get_inputs()`` and logs a warning when it loads the model (an initializer that is
        also a graph input cannot be constant-folded; here nothing is lost by that). Choose
        ``"required"`` or ``"none"`` for runtimes that treat initializers as constants.

    Returns
    -------
    onnx.ModelProto
        The model that was written.

    Raises
    ------
    TypeError
        If ``module`` is not a cygru ``GRU``.
    ValueError
        If ``opset`` is out of range or ``h0`` is not one of the three choices.
    ImportError
        If the ``onnx`` package is missing (``pip install cygru[onnx]``).

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> import onnxruntime as ort
    >>> import cygru
    >>> gru = cygru.GRU(3, 4, num_layers=2, batch_first=True, seed=0)
    >>> buf = io.BytesIO()
    >>> from cygru.interop import to_onnx
    >>> _ = to_onnx(gru, buf)
    >>> sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    >>> out, h_n = sess.run(["output", "h_n"], {"x": x})
    >>> ref_out, ref_h_n = gru(x)
    >>> bool(np.allclose(out, ref_out, atol=1e-5)), h_n.shape
    (True, (2, 2, 4))
    """
    modules = _modules()
    if not isinstance(module, modules.GRU):
        raise TypeError(f"to_onnx exports a cygru.GRU, got {type(module).__qualname__}")
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    if h0 not in ("optional", "required", "none"):
        raise ValueError(f"to_onnx: h0 must be 'optional', 'required' or 'none', got {h0!r}")
    opset = operator.index(opset)
    max_opset = onnx.defs.onnx_opset_version()
    if not _MIN_OPSET <= opset <= max_opset:
        raise ValueError(
            f"to_onnx: opset must be between {_MIN_OPSET} and {max_opset} "
            f"(the installed onnx's newest), got {opset}"
        )

    I = int(module.input_size)
    H = int(module.hidden_size)
    L = int(module.num_layers)
    D = 2 if module.bidirectional else 1
    reverse = bool(getattr(module, "reverse", False))
    reset_after = bool(getattr(module, "reset_after", True))
    batch_first = bool(module.batch_first)
    has_bias = bool(module.bias)
    direction = "bidirectional" if D == 2 else ("reverse" if reverse else "forward")
    f32 = np.float32

    state = module.state_dict()
    initializers = []
    nodes = []

    def const(name, array):
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, outputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))

    # x in time-major order
    if batch_first:
        node("Transpose", ["x"], ["x_tm"], "x_to_time_major", perm=[1, 0, 2])
        layer_in = "x_tm"
    else:
        layer_in = "x"

    # h0 (input, or an overridable zero initializer) broadcast to (L*D, B, H), B from x's shape
    if h0 == "optional":
        const("h0", np.zeros((L * D, 1, H), dtype=f32))
    if h0 != "none":
        node("Shape", ["x"], ["x_shape"], "x_shape")
        const("batch_axis", np.array([0 if batch_first else 1], dtype=np.int64))
        node("Gather", ["x_shape", "batch_axis"], ["batch_dim"], "batch_dim", axis=0)
        const("ld_dim", np.array([L * D], dtype=np.int64))
        const("h_dim", np.array([H], dtype=np.int64))
        node("Concat", ["ld_dim", "batch_dim", "h_dim"], ["h0_shape"], "h0_shape", axis=0)
        node("Expand", ["h0", "h0_shape"], ["h0_full"], "h0_expand")
        if L > 1:
            const("slice_axis0", np.array([0], dtype=np.int64))
    const("feature_shape", np.array([0, 0, D * H], dtype=np.int64))

    y_h_names = []
    for k in range(L):
        in_size = I if k == 0 else D * H
        W = np.empty((D, 3 * H, in_size), dtype=f32)
        R = np.empty((D, 3 * H, H), dtype=f32)
        Bv = np.zeros((D, 6 * H), dtype=f32)
        for d in range(D):
            sfx = f"_l{k}{_suffix(d)}"
            W[d] = _swap_rz(_as_host(state[f"weight_ih{sfx}"]), H)
            R[d] = _swap_rz(_as_host(state[f"weight_hh{sfx}"]), H)
            if has_bias:
                Bv[d, : 3 * H] = _swap_rz(_as_host(state[f"bias_ih{sfx}"]), H)
                Bv[d, 3 * H :] = _swap_rz(_as_host(state[f"bias_hh{sfx}"]), H)
        w_name = const(f"W_l{k}", W)
        r_name = const(f"R_l{k}", R)
        b_name = const(f"B_l{k}", Bv) if has_bias else ""

        if h0 == "none":
            h_init = ""
        elif L == 1:
            h_init = "h0_full"
        else:
            const(f"h0_start_l{k}", np.array([k * D], dtype=np.int64))
            const(f"h0_end_l{k}", np.array([(k + 1) * D], dtype=np.int64))
            h_init = f"h0_l{k}"
            node(
                "Slice",
                ["h0_full", f"h0_start_l{k}", f"h0_end_l{k}", "slice_axis0"],
                [h_init],
                f"h0_slice_l{k}",
            )

        y, y_h = f"Y_l{k}", f"Y_h_l{k}"
        # ONNX GRU inputs: X, W, R, B, sequence_lens, initial_h (empty name = absent)
        gru_inputs = [layer_in, w_name, r_name, b_name, "", h_init]
        while not gru_inputs[-1]:
            gru_inputs.pop()
        node(
            "GRU",
            gru_inputs,
            [y, y_h],
            f"gru_l{k}",
            hidden_size=H,
            direction=direction,
            linear_before_reset=int(reset_after),
        )
        y_h_names.append(y_h)
        # Y (T, D, B, H) -> (T, B, D, H) -> (T, B, D*H)
        node("Transpose", [y], [f"Y_tbdh_l{k}"], f"y_transpose_l{k}", perm=[0, 2, 1, 3])
        last = k == L - 1
        merged = "output_tm" if (last and batch_first) else ("output" if last else f"out_l{k}")
        node("Reshape", [f"Y_tbdh_l{k}", "feature_shape"], [merged], f"y_merge_l{k}")
        layer_in = merged

    if batch_first:
        node("Transpose", ["output_tm"], ["output"], "output_to_batch_first", perm=[1, 0, 2])
    if L == 1:
        node("Identity", [y_h_names[0]], ["h_n"], "h_n")
    else:
        node("Concat", y_h_names, ["h_n"], "h_n", axis=0)

    x_dims = ["batch", "seq_len", I] if batch_first else ["seq_len", "batch", I]
    out_dims = ["batch", "seq_len", D * H] if batch_first else ["seq_len", "batch", D * H]
    graph = helper.make_graph(
        nodes,
        "cygru_GRU",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)]
        + (
            []
            if h0 == "none"
            else [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [L * D, "h0_batch", H])]
        ),
        outputs=[
            helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims),
            helper.make_tensor_value_info("h_n", TensorProto.FLOAT, [L * D, "batch", H]),
        ],
        initializer=initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="cygru",
        doc_string=(
            f"cygru.GRU(input_size={I}, hidden_size={H}, num_layers={L}, bias={has_bias}, "
            f"batch_first={batch_first}, bidirectional={D == 2}, reset_after={reset_after}, "
            f"reverse={reverse}); exported as float32"
        ),
    )
    # The oldest IR version that carries this opset: keeps the file loadable by older runtimes.
    model.ir_version = max(4, helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)

    data = model.SerializeToString()
    if isinstance(path_or_file, (str, bytes, os.PathLike)):
        with open(os.fspath(path_or_file), "wb") as fh:
            fh.write(data)
    elif hasattr(path_or_file, "write"):
        path_or_file.write(data)
    else:
        raise TypeError(
            "to_onnx: path_or_file must be a path or a binary file object, got "
            f"{type(path_or_file).__qualname__}"
        )
    return model

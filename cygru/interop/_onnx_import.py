"""ONNX -> cygru: :func:`from_onnx`."""

from __future__ import annotations

import os

import numpy as np

from ._common import _float_dtype, _import_onnx, _layer_suffix, _modules, _swap_rz

__all__ = ["from_onnx"]



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
        sfx = _layer_suffix(0, d)
        state[f"weight_ih{sfx}"] = _swap_rz(W[d], h).astype(dtype)
        state[f"weight_hh{sfx}"] = _swap_rz(R[d], h).astype(dtype)
        if B is not None:
            state[f"bias_ih{sfx}"] = _swap_rz(B[d, : 3 * h], h).astype(dtype)
            state[f"bias_hh{sfx}"] = _swap_rz(B[d, 3 * h :], h).astype(dtype)
    gru.load_state_dict(state)
    return gru

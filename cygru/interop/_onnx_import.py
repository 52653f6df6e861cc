"""ONNX -> cygru: :func:`from_onnx`."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Union

import numpy as np

# at run time too, for typing.get_type_hints
from .._typing import ArrayLike, ModelProto
from ..modules import GRU
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


def _read_node(onnx, node, values, graph_inputs, weights, used):
    """Check one GRU node and read its weights: a dict of what the module needs."""
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

    # ONNX GRU inputs: X, W, R, B, sequence_lens, initial_h; '' (or absent) omits one.
    inputs = list(node.input) + [""] * (6 - len(node.input))

    def fetch(index, what):
        name = inputs[index]
        if name in weights and name in graph_inputs:
            used.add(name)
            return weights[name]
        if name in values:
            return _stored_array(values[name], what, label)
        if name in graph_inputs:
            raise ValueError(
                f"cygru.from_onnx: {label}'s input {what} ({name!r}) is a graph input, not an "
                f"initializer; pass its array as weights={{{name!r}: ...}}"
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

    return {
        "node": node,
        "label": label,
        "direction": direction,
        "D": num_directions,
        "lbr": lbr,
        "layout": layout,
        "H": hidden_size,
        "I": input_size,
        "dtype": dtype,
        "W": W,
        "R": R,
        "B": B,
        "seq_lens": inputs[4],
        "initial_h": inputs[5],
    }


def from_onnx(
    model: Union[str, os.PathLike[str], bytes, bytearray, memoryview, ModelProto],
    node_name: Optional[str] = None,
    *,
    weights: Optional[Mapping[str, ArrayLike]] = None,
) -> GRU:
    """Build the cygru ``GRU`` equal to the GRU stack of an ONNX model, or to one node of it.

    **The whole stack** (``node_name=None``): exporters write one ``GRU`` node per layer
    with layout nodes between them (``Transpose``, ``Squeeze``, ``Reshape``, ...: what
    PyTorch's TorchScript and dynamo exporters and cygru's :func:`to_onnx` write). The GRU
    nodes must form one chain, each reading the one before; the nodes between two of them
    must be layout nodes that feed the later one exactly the earlier one's ``Y`` with its
    directions merged into the features (checked by running them with onnx's reference
    evaluator on probe values); and the layers must agree in ``hidden_size``, ``direction``,
    ``linear_before_reset``, ``layout``, bias, dtype and ``sequence_lens`` input. They become
    one module with ``num_layers`` = the number of nodes. ``batch_first``: where the first
    node's input is a graph input reached through layout nodes only, a swap of its first two
    axes on the way (a ``Transpose`` with ``perm=[1, 0, 2]``) flips the node's ``layout``, and
    a graph output that is the last layer's merged sequence must come out the same way.
    Nodes before the stack that do more than layout (an embedding), and a head after it, are
    not part of the module. A graph that is not such a stack is refused with a message
    naming the node that breaks the chain.

    **One node** (``node_name`` given): that node alone, as a one-layer module with
    ``batch_first`` from its ``layout``.

    The nodes' ``W``, ``R`` and (optional) ``B`` inputs must be stored in the model, as
    initializers or ``Constant`` nodes, or be graph inputs whose arrays are passed as
    ``weights``; ONNX stores the gates in the order z, r, h, which is
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
        The name of one GRU node to convert alone.
    weights : dict of str to array_like, optional
        Arrays for ``W``, ``R`` and ``B`` inputs that are graph inputs rather than stored in
        the model, keyed by the inputs' names (``{"W": ..., "R": ..., "B": ...}`` for ONNX's
        own node tests). Each name must be a W, R or B input of a converted node that is a
        graph input (a stored weight cannot be replaced); run-time inputs (``sequence_lens``,
        ``initial_h``) are passed when calling the module instead.

    Returns
    -------
    cygru.GRU
        A module in the dtype of ``W`` (float32 or float64), with one layer per GRU node.

    Raises
    ------
    ValueError
        If ``model`` is not a readable ONNX model (an empty, garbage or truncated file or
        bytes; the message names the file); if the graph has no GRU node, or an unknown
        ``node_name``; if the GRU nodes are not one plain stack (see above; the message names
        the node that breaks it); if ``W``, ``R`` or ``B`` is neither stored in the model nor
        given in ``weights``, or ``weights`` names something else; if shapes disagree; if the node's ``initial_h`` (other than
        zeros) or ``sequence_lens`` is stored in the model (see above; the message names the
        stored tensor and says how to proceed); or if the node uses an attribute cygru does
        not implement (``activations`` other than Sigmoid, Tanh; ``clip``;
        ``activation_alpha``; ``activation_beta``) -- the message names the attribute.
    TypeError
        If ``model`` is none of the types above, ``weights`` is not a dict, or the weights
        are neither float32 nor float64.
    FileNotFoundError
        If ``model`` is the path of a file that does not exist (other ``OSError`` s of
        reading the file are raised as they are).
    ImportError
        If the ``onnx`` package is missing (``pip install "cygru[onnx]"``).

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

    A three-layer stack written by :func:`to_onnx` comes back whole:

    >>> import io
    >>> stack = cygru.GRU(3, 4, num_layers=3, batch_first=True, seed=0)
    >>> cygru.from_onnx(stack.to_onnx(io.BytesIO()))
    GRU(3, 4, num_layers=3, batch_first=True, dtype=float32)
    """
    onnx = _import_onnx()
    model = _load_model(model)
    graph = model.graph
    grus = [n for n in graph.node if n.op_type == "GRU" and n.domain in ("", "ai.onnx")]
    if not grus:
        raise ValueError("cygru.from_onnx: the graph has no GRU node")
    names = [n.name for n in grus]
    weights = _check_weights(weights)
    values = _constant_values(graph)
    graph_inputs = {i.name for i in graph.input}
    if node_name is not None:
        matches = [n for n in grus if n.name == node_name]
        if not matches:
            raise ValueError(f"cygru.from_onnx: no GRU node named {node_name!r} (names: {names})")
        if len(matches) > 1:
            raise ValueError(f"cygru.from_onnx: several GRU nodes are named {node_name!r}")
        chain = matches
    else:
        chain = _gru_chain(graph, grus)
    used = set()
    layers = [_read_node(onnx, n, values, graph_inputs, weights, used) for n in chain]
    unused = sorted(set(weights) - used)
    if unused:
        raise ValueError(
            f"cygru.from_onnx: weights= names {unused}, which no converted GRU node takes as a "
            "W, R or B graph input (run-time inputs -- sequence_lens, initial_h -- are passed "
            "when calling the module)"
        )
    first = layers[0]
    for layer in layers[1:]:
        for key, what in (
            ("direction", "direction"),
            ("lbr", "linear_before_reset"),
            ("layout", "layout"),
            ("H", "hidden_size"),
            ("dtype", "dtype"),
            ("seq_lens", "sequence_lens input"),
        ):
            if layer[key] != first[key]:
                raise ValueError(
                    f"cygru.from_onnx: {layer['label']} has {what} {layer[key]!r} but "
                    f"{first['label']} has {first[key]!r}; the layers of one cygru.GRU share it "
                    "(convert the nodes one by one with node_name=)"
                )
        if (layer["B"] is None) != (first["B"] is None):
            raise ValueError(
                f"cygru.from_onnx: {layer['label']} {'has no' if layer['B'] is None else 'has a'} "
                f"bias B but {first['label']} {'has' if layer['B'] is None else 'has none'}; the "
                "layers of one cygru.GRU all have biases or none"
            )
        if layer["I"] != first["D"] * first["H"]:
            raise ValueError(
                f"cygru.from_onnx: {layer['label']} takes {layer['I']} input features, but a "
                f"stacked layer reads the {first['D'] * first['H']} features of the one before"
            )
    batch_first = bool(first["layout"])
    if node_name is None:
        batch_first = _check_layouts(model, layers)

    D, H, dtype = first["D"], first["H"], first["dtype"]
    gru = _modules().GRU(
        first["I"],
        H,
        num_layers=len(layers),
        bias=first["B"] is not None,
        batch_first=batch_first,
        bidirectional=D == 2,
        reset_after=bool(first["lbr"]),
        reverse=first["direction"] == "reverse",
        dtype=dtype,
    )
    state = {}
    for k, layer in enumerate(layers):
        W, R, B = layer["W"], layer["R"], layer["B"]
        for d in range(D):
            sfx = _layer_suffix(k, d)
            state[f"weight_ih{sfx}"] = _swap_rz(W[d], H).astype(dtype)
            state[f"weight_hh{sfx}"] = _swap_rz(R[d], H).astype(dtype)
            if B is not None:
                state[f"bias_ih{sfx}"] = _swap_rz(B[d, : 3 * H], H).astype(dtype)
                state[f"bias_hh{sfx}"] = _swap_rz(B[d, 3 * H :], H).astype(dtype)
    gru.load_state_dict(state)
    return gru


def _check_weights(weights):
    """``weights=`` as a dict of name -> ndarray (the module copies them when it loads them)."""
    if weights is None:
        return {}
    if not hasattr(weights, "items"):
        raise TypeError(
            "cygru.from_onnx: weights must be a dict of graph-input name -> array, got "
            f"{type(weights).__qualname__}"
        )
    out = {}
    for name, array in weights.items():
        if not isinstance(name, str):
            raise TypeError(f"cygru.from_onnx: weights' keys are tensor names (str), got {name!r}")
        out[name] = np.asarray(array)
    return out


# Nodes that only move, reshape, select or describe data, and the shape arithmetic around
# them: what exporters write between the GRU nodes of a stack (and around it). Whether such
# nodes really are a stack's layout is then checked by running them (see _run_piece).
# Ops that create data of a size read from a tensor (Expand, ConstantOfShape, Range, Tile,
# Pad) are left out: the probe never runs a node that a hostile model could make allocate
# without bound.
_LAYOUT_OPS = frozenset(
    [
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Reshape",
        "Flatten",
        "Identity",
        "Concat",
        "Slice",
        "Split",
        "Gather",
        "Shape",
        "Size",
        "Constant",
        "Cast",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Equal",
        "Where",
        "Max",
        "Min",
    ]
)
# The most elements a probe tensor may have: sizes a graph declares beyond it are not used.
_PROBE_LIMIT = 1 << 20


def _node_label(node):
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


def _producers(graph):
    return {out: node for node in graph.node for out in node.output if out}


def _upstream(graph, tensor, stop=()):
    """The nodes that ``tensor`` is computed from, in graph order, not looking past the tensors
    in ``stop``; and the graph inputs it reads (initializers count as constants)."""
    producers = _producers(graph)
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name for i in graph.input}
    seen, reads, todo = set(), set(), [tensor]
    while todo:
        name = todo.pop()
        if not name or name in stop:
            continue
        node = producers.get(name)
        if node is None:
            if name in inputs and name not in initializers:
                reads.add(name)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        todo.extend(node.input)
        for attr in node.attribute:  # a subgraph (If, Loop) reads outer names too
            if attr.HasField("g"):
                todo.extend(i for inner in attr.g.node for i in inner.input)
    return [n for n in graph.node if id(n) in seen], reads


def _gru_chain(graph, grus):
    """The graph's GRU nodes in stack order (each reads the one before), or a ValueError naming
    the node that breaks the chain."""
    names = [n.name for n in grus]
    before = {}
    for g in grus:
        nodes, _ = _upstream(graph, g.input[0])
        upstream = {id(n): n for n in nodes if n.op_type == "GRU"}
        # the nearest GRU node upstream: the one no other upstream GRU node is computed from
        nearest = dict(upstream)
        for f in upstream.values():
            for n in _upstream(graph, f.input[0])[0]:
                nearest.pop(id(n), None)
        if len(nearest) > 1:
            raise ValueError(
                f"cygru.from_onnx: the graph's GRU nodes {names} are not one stack: "
                f"{_node_label(g)} reads the outputs of several GRU nodes "
                f"({[n.name for n in nearest.values()]}); pick one with node_name="
            )
        before[id(g)] = next(iter(nearest.values()), None)
    firsts = [g for g in grus if before[id(g)] is None]
    if not firsts:
        raise ValueError(
            f"cygru.from_onnx: the graph's GRU nodes {names} read each other in a cycle "
            "(not a valid ONNX graph); pick one with node_name="
        )
    if len(firsts) > 1:
        raise ValueError(
            f"cygru.from_onnx: the graph's GRU nodes {names} are not one stack: "
            f"{_node_label(firsts[1])} does not read the output of another GRU node, nor does "
            f"{_node_label(firsts[0])}; pick one with node_name="
        )
    chain = [firsts[0]]
    while len(chain) < len(grus):
        nxt = [g for g in grus if before[id(g)] is chain[-1]]
        if len(nxt) != 1:
            raise ValueError(
                f"cygru.from_onnx: the graph's GRU nodes {names} are not one stack: "
                f"{len(nxt)} GRU nodes read {_node_label(chain[-1])} "
                f"({[n.name for n in nxt]}); pick one with node_name="
            )
        chain.append(nxt[0])
    return chain


def _tagged(shape, offset=0.0):
    """Distinct values of both signs, so that any misplaced or altered element shows."""
    n = int(np.prod(shape))
    return (np.arange(n, dtype=np.float32) - n // 2 + 0.25 + offset).reshape(shape)


def _run_piece(model, nodes, feeds, target):
    """Run ``nodes`` (a piece of ``model``'s graph) on ``feeds`` with onnx's reference
    evaluator: ``target``'s value, or None where the piece does not run."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    needed = {i for n in nodes for i in n.input}
    inits = [t for t in graph.initializer if t.name in needed and t.name not in feeds]
    sub = helper.make_graph(
        list(nodes),
        "piece",
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for name, a in feeds.items()
        ],
        [helper.make_tensor_value_info(target, 0, None)],
        initializer=inits,
    )
    sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
    sub_model.ir_version = model.ir_version
    try:
        return np.asarray(ReferenceEvaluator(sub_model).run(None, feeds)[0])
    except Exception:  # noqa: BLE001 - whatever fails here is not a layout we can vouch for
        return None


def _same(got, expected):
    return got is not None and got.shape == expected.shape and np.array_equal(got, expected)


def _merge(Y, layout):
    """What a stack feeds its next layer: Y (T, D, B, H) -> (T, B, D*H); layout 1:
    (B, T, D, H) -> (B, T, D*H)."""
    if layout == 0:
        Y = Y.transpose(0, 2, 1, 3)
    return Y.reshape(Y.shape[0], Y.shape[1], -1)


def _static_dims(graph, name):
    """The first two dims of a graph input, None where dynamic."""
    for value in graph.input:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            dims = [
                d.dim_value if d.dim_value > 0 else None for d in value.type.tensor_type.shape.dim
            ]
            if len(dims) == 3:
                return dims[:2]
    return [None, None]


def _static_y_shape(model, y_name):
    """The static shape of a GRU node's Y by onnx's shape inference, or None."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no shapes to go by: the probe uses its own sizes
        return None
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.name == y_name and value.type.tensor_type.HasField("shape"):
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
            if (
                len(dims) == 4
                and all(d > 0 for d in dims)
                and int(np.prod(dims, dtype=np.float64)) <= _PROBE_LIMIT
            ):
                return dims
    return None


def _blame(nodes, fallback):
    odd = [n for n in nodes if n.op_type not in _LAYOUT_OPS]
    return _node_label(odd[0] if odd else fallback)


def _check_layouts(model, layers):
    """Check the nodes before, between and after the GRU nodes of a stack; ``batch_first``.

    Before the first GRU node: if its input is computed from one graph input by layout nodes
    only, that input must arrive unchanged (``batch_first`` is the node's layout) or with its
    first two axes swapped (``batch_first`` the other way); otherwise the nodes before are
    not part of the module and ``batch_first`` is the node's layout. Between two GRU nodes:
    the nodes must feed the later one exactly the earlier one's Y with its directions merged
    into the features. After the last: a graph output computed from its Y by layout nodes
    that is the merged sequence must be batch first exactly when the input is.
    """
    graph = model.graph
    producers = _producers(graph)
    layout = layers[0]["layout"]
    D, H, I = layers[0]["D"], layers[0]["H"], layers[0]["I"]
    batch_first = bool(layout)
    x_tensor = layers[0]["node"].input[0]
    nodes, reads = _upstream(graph, x_tensor)
    T, B = 3, 2  # time and batch sizes to run the pieces with
    x_name = x_value = None
    if len(reads) == 1 and all(n.op_type in _LAYOUT_OPS for n in nodes):
        (name,) = reads
        d0, d1 = _static_dims(graph, name)
        d0, d1 = d0 or 2, d1 or 3
        if d0 * d1 * max(I, D * H) > _PROBE_LIMIT:
            d0, d1 = 2, 3
        value = _tagged((d0, d1, I), 0.5)
        got = value if not nodes else _run_piece(model, nodes, {name: value}, x_tensor)
        if _same(got, value):
            x_name, x_value = name, value
        elif _same(got, value.transpose(1, 0, 2)):
            x_name, x_value, batch_first = name, value, not batch_first
        if x_value is not None:
            b, t = x_value.shape[:2] if batch_first else x_value.shape[1::-1]
            B, T = b, t
    if x_value is None:  # the sizes the graph was exported for, where it says
        inferred = _static_y_shape(model, layers[0]["node"].output[0])
        if inferred is not None:
            T, B = (inferred[1], inferred[0]) if layout else (inferred[0], inferred[2])
    y_shape = (B, T, D, H) if layout else (T, D, B, H)

    for prev, layer in zip(layers, layers[1:]):
        y_name = prev["node"].output[0] if len(prev["node"].output) else ""
        src = layer["node"].input[0]
        nodes, reads = _upstream(graph, src, stop={y_name})
        culprit = producers.get(src, layer["node"])
        for name in reads - {x_name}:
            reader = next(n for n in nodes if name in n.input)
            raise ValueError(
                f"cygru.from_onnx: the graph's GRU nodes are not a plain stack: between "
                f"{prev['label']} and {layer['label']}, {_node_label(reader)} reads the graph "
                f"input {name!r}; convert the nodes one by one with node_name="
            )
        y_value = _tagged(y_shape)
        feeds = {y_name: y_value, **({x_name: x_value} if x_name in reads else {})}
        expected = _merge(y_value, layout)
        if src == y_name:
            got = y_value
        elif not y_name or any(n.op_type not in _LAYOUT_OPS for n in nodes):
            got = None
        else:
            got = _run_piece(model, nodes, feeds, src)
        if not _same(got, expected):
            raise ValueError(
                f"cygru.from_onnx: the graph's GRU nodes are not a plain stack: between "
                f"{prev['label']} and {layer['label']}, {_blame(nodes, culprit)} does not pass "
                f"on the output Y with its directions merged into the features (what a stack "
                f"feeds its next layer); convert the nodes one by one with node_name="
            )

    if x_value is None:
        return batch_first
    last = layers[-1]["node"]
    y_name = last.output[0] if len(last.output) else ""
    if not y_name:
        return batch_first
    y_value = _tagged(y_shape)
    merged = _merge(y_value, layout)
    time_major = merged if layout == 0 else merged.transpose(1, 0, 2)
    for out in graph.output:
        nodes, reads = _upstream(graph, out.name, stop={y_name})
        if out.name == y_name or not any(y_name in n.input for n in nodes):
            continue
        if reads - {x_name} or any(n.op_type not in _LAYOUT_OPS for n in nodes):
            continue  # computed by more than layout nodes: not the module's to match
        feeds = {y_name: y_value, **({x_name: x_value} if x_name in reads else {})}
        got = _run_piece(model, nodes, feeds, out.name)
        if _same(got, time_major):
            out_batch_first = False
        elif _same(got, time_major.transpose(1, 0, 2)):
            out_batch_first = True
        else:
            continue  # another use of the sequence (its last step, say)
        if out_batch_first != batch_first:
            raise ValueError(
                f"cygru.from_onnx: the graph's input {x_name!r} reaches {layers[0]['label']} "
                f"{'batch' if batch_first else 'time'} first but its output {out.name!r} "
                f"(from {_node_label(producers[out.name])}) is "
                f"{'batch' if out_batch_first else 'time'} first; a cygru.GRU has one "
                "batch_first for both"
            )
    return batch_first

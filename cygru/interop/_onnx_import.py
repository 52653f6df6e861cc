"""ONNX -> cygru: :func:`from_onnx`."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Mapping, Optional, Union

import numpy as np

# at run time too, for typing.get_type_hints
from .._typing import ArrayLike, ModelProto
from ..modules import GRU
from ._common import _import_onnx, _layer_suffix, _modules, _swap_rz

__all__ = ["from_onnx"]


_DEFAULT_ACTIVATIONS = ("sigmoid", "tanh")


def _load_model(model, who="cygru.from_onnx"):
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
            f"{who}: expected a path (str or os.PathLike), a serialized model (bytes, "
            f"bytearray or memoryview) or an onnx.ModelProto, got {type(model).__qualname__}"
        )

    hint = " (bytes are read as a serialized model; pass a file's path as str or os.PathLike)"
    hint = hint if path is None and data is not None else ""
    if data is not None:
        if not data:
            raise ValueError(f"{who}: {source} is not a readable ONNX model: it is empty")
        from google.protobuf.message import DecodeError

        try:
            model = onnx.load_model_from_string(data)
        except DecodeError as exc:
            raise ValueError(
                f"{who}: {source} is not a readable ONNX model: protobuf cannot decode "
                f"it as an onnx.ModelProto (a truncated or corrupt file, or not an ONNX model at "
                f"all): {exc}{hint}"
            ) from exc
    if not model.HasField("graph"):
        raise ValueError(f"{who}: {source} is not a readable ONNX model: it holds no graph{hint}")
    if path is not None:
        from onnx.external_data_helper import load_external_data_for_model

        base = os.path.dirname(path)
        _check_external_data(onnx, model, base, source, who)
        try:
            load_external_data_for_model(model, base)
        except (ValueError, OSError, onnx.checker.ValidationError) as exc:
            raise ValueError(
                f"{who}: {source} refers to external data that cannot be loaded: {exc}"
            ) from None
    return model


def _model_tensors(graph):
    """Every TensorProto a graph stores (initializers and node attributes, in subgraphs
    too), as ``onnx``'s external-data loader visits them (a FunctionProto has nodes
    only)."""
    yield from getattr(graph, "initializer", ())
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _model_tensors(attr.g)
            for sub in attr.graphs:
                yield from _model_tensors(sub)


def _check_external_data(onnx, model, base, source, who="cygru.from_onnx"):
    """Refuse external data that would be read more than once: the bytes the tensors'
    references select, summed, may not exceed the size of the files they name (a small
    file naming one data file in many tensors would otherwise read it again for each,
    without bound). Each file must be a regular file; other faults (a path outside the
    directory, a symbolic link) are onnx's checks, reported when it loads."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graphs = [model.graph] + list(model.functions)
    files, total = {}, 0
    for graph in graphs:
        for tensor in _model_tensors(graph):
            if not uses_external_data(tensor):
                continue
            try:
                info = ExternalDataInfo(tensor)
            except ValueError as exc:
                raise ValueError(
                    f"{who}: {source}: the tensor {tensor.name!r} has bad "
                    f"external data fields: {exc}"
                ) from None
            where = os.path.join(base, info.location)
            try:
                st = os.stat(where)
            except OSError:
                continue  # onnx names the missing file when it loads
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(
                    f"{who}: {source}: the tensor {tensor.name!r} keeps its data "
                    f"in {info.location!r}, which is not a regular file"
                )
            files[os.path.realpath(where)] = st.st_size
            available = max(0, st.st_size - (info.offset or 0))
            total += available if info.length is None else min(info.length, available)
    if total > sum(files.values()):
        raise ValueError(
            f"{who}: {source}: its tensors' external data references select "
            f"{total} bytes from files of {sum(files.values())} bytes: some bytes would be "
            "read more than once (a file named by many tensors); refused"
        )


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
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:  # noqa: BLE001 - onnx's errors for malformed tensors vary
        raise ValueError(
            f"cygru.from_onnx: {label}'s input {what} ({origin}) is not a readable tensor "
            f"(data type {tensor.data_type}, dims {list(tensor.dims)}): {exc}"
        ) from None


def _dtype_name(dtype):
    return np.dtype(dtype).name  # byte order aside: '>f4' and '<f4' are both float32


def _weight_dtype(dtype, label):
    """The module's dtype for weights of ``dtype``: float32 and float64 as they are (either
    byte order), float16 and bfloat16 as float32 (every value of theirs is a float32 value:
    the conversion is exact)."""
    name = _dtype_name(dtype)
    if name in ("float32", "float64"):
        return np.dtype(name)
    if name in ("float16", "bfloat16"):
        return np.dtype(np.float32)
    raise TypeError(
        f"cygru.from_onnx: {label}'s W has dtype {name}; cygru converts float32 and float64 "
        "weights, and float16 and bfloat16 ones to float32 (exactly)"
    )


def _gru_label(node):
    return f"GRU node {node.name!r}" if node.name else "the GRU node"


# ONNX's GRU attributes (every opset: ``output_sequence`` is opset 1's) and their types.
_GRU_ATTRIBUTES = {
    "activation_alpha": "FLOATS",
    "activation_beta": "FLOATS",
    "activations": "STRINGS",
    "clip": "FLOAT",
    "direction": "STRING",
    "hidden_size": "INT",
    "layout": "INT",
    "linear_before_reset": "INT",
    "output_sequence": "INT",
}
# The AttributeProto field that holds a value of each type.
_VALUE_FIELDS = {
    "FLOAT": "f",
    "INT": "i",
    "STRING": "s",
    "FLOATS": "floats",
    "INTS": "ints",
    "STRINGS": "strings",
}
_NOT_VALUES = frozenset(["name", "type", "doc_string", "ref_attr_name"])


def _shown(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_value(attr, field):
    """An attribute field's value for a message (floats as float32, which they are)."""
    value = getattr(attr, field)
    if field == "f":
        return str(np.float32(value))
    if field == "floats":
        return _shown([float(str(np.float32(v))) for v in value])
    if field in ("i", "s"):
        return _shown(value)
    if field in ("ints", "strings"):
        return _shown(list(value))
    if field in ("t", "g", "sparse_tensor", "tp"):  # a TensorProto, a graph...: named
        return f"a {type(value).__name__}"
    return f"{len(value)} value(s)"  # tensors, graphs, ...


def _text(raw, label, name):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"cygru.from_onnx: {label}'s attribute {name!r} is not UTF-8 text: {_shown(raw)}"
        ) from None


def _read_attributes(node, label):
    """The GRU node's attributes as Python values, each checked to be one ONNX's GRU
    defines, of the type the operator's schema gives it, set once, and holding exactly
    that type's value (a FLOAT 0.7 is not read as the INT 0)."""
    from onnx import AttributeProto

    attrs = {}
    for attr in node.attribute:
        name = attr.name
        expected = _GRU_ATTRIBUTES.get(name)
        if expected is None:
            raise ValueError(
                f"cygru.from_onnx: {label} has the attribute {name!r}, which ONNX's GRU does "
                f"not define (it defines {sorted(_GRU_ATTRIBUTES)})"
            )
        if name in attrs:
            raise ValueError(f"cygru.from_onnx: {label} sets the attribute {name!r} twice")
        if attr.ref_attr_name:
            raise ValueError(
                f"cygru.from_onnx: {label}'s attribute {name!r} refers to the attribute "
                f"{attr.ref_attr_name!r} of an enclosing function, which a graph node cannot do"
            )
        try:
            got = AttributeProto.AttributeType.Name(attr.type)
        except ValueError:
            got = f"an unknown type ({attr.type})"
        fields = [f.name for f, _ in attr.ListFields() if f.name not in _NOT_VALUES]
        field = _VALUE_FIELDS[expected]
        given = ", ".join(f"{f}={_field_value(attr, f)}" for f in fields) or "no value"
        if got != expected:
            raise ValueError(
                f"cygru.from_onnx: {label}'s attribute {name!r} must be of ONNX type "
                f"{expected} (ONNX's GRU schema), got type {got} with {given}"
            )
        if any(f != field for f in fields):
            raise ValueError(
                f"cygru.from_onnx: {label}'s attribute {name!r} is of type {expected} but holds "
                f"{given}; an attribute holds one value, in its type's field ({field!r})"
            )
        if expected in ("INT", "FLOAT", "STRING") and not attr.HasField(field):
            raise ValueError(
                f"cygru.from_onnx: {label}'s attribute {name!r} ({expected}) holds no value"
            )
        value = getattr(attr, field)
        if expected == "STRING":
            value = _text(value, label, name)
        elif expected == "STRINGS":
            value = [_text(v, label, name) for v in value]
        elif expected in ("INTS", "FLOATS"):
            value = list(value)
        attrs[name] = value
    return attrs


def _read_node(onnx, node, values, graph_inputs, weights, used):
    """Check one GRU node and read its weights: a dict of what the module needs."""
    label = _gru_label(node)

    attrs = _read_attributes(node, label)
    for unsupported in ("clip", "activation_alpha", "activation_beta"):
        if unsupported in attrs:
            raise ValueError(
                f"cygru.from_onnx: {label} sets the attribute {unsupported!r} "
                f"(= {_shown(attrs[unsupported])}), which cygru does not support"
            )
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(
            f"cygru.from_onnx: {label}'s attribute 'direction' must be 'forward', 'reverse' "
            f"or 'bidirectional', got {direction!r}"
        )
    num_directions = 2 if direction == "bidirectional" else 1
    if "activations" in attrs:
        acts = tuple(a.lower() for a in attrs["activations"])
        if acts != _DEFAULT_ACTIVATIONS * num_directions:
            raise ValueError(
                f"cygru.from_onnx: {label} has the attribute 'activations'="
                f"{attrs['activations']}; cygru supports only the default (Sigmoid, Tanh) per "
                f"direction ({num_directions * 2} names for direction={direction!r})"
            )
    for name in ("linear_before_reset", "layout", "output_sequence"):
        if attrs.get(name, 0) not in (0, 1):
            raise ValueError(
                f"cygru.from_onnx: {label}'s attribute {name!r} must be 0 or 1, got {attrs[name]}"
            )
    lbr = attrs.get("linear_before_reset", 0)
    layout = attrs.get("layout", 0)
    if "hidden_size" in attrs and attrs["hidden_size"] < 1:
        raise ValueError(
            f"cygru.from_onnx: {label}'s attribute 'hidden_size' must be >= 1, got "
            f"{attrs['hidden_size']}"
        )

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
    dtype = _weight_dtype(W.dtype, label)
    for what, array in (("R", R), ("B", B)):
        if array is not None and _dtype_name(array.dtype) != _dtype_name(W.dtype):
            raise TypeError(
                f"cygru.from_onnx: {label}'s W, R and B must have one dtype (ONNX's GRU takes "
                f"one type T for all three), got W {_dtype_name(W.dtype)} and {what} "
                f"{_dtype_name(array.dtype)}"
            )

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
        A module in the dtype of ``W`` (float32 or float64; float16 and bfloat16 weights
        give float32, exactly), with one layer per GRU node.

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
        ``activation_alpha``; ``activation_beta``) -- the message names the attribute; if a
        GRU node lacks ``X``, ``W`` or ``R``, or an attribute is not of the type ONNX's GRU
        schema gives it (a FLOAT ``linear_before_reset`` is refused, not truncated), out of
        range, unknown or set twice; if the graph has a cycle; or if checking the layout
        nodes would allocate more than 64 MiB in all or run more than 2,000 of them (a
        hostile file: see the Reliability page). Every message starts with ``cygru.from_onnx:`` and names the node.
    TypeError
        If ``model`` is none of the types above, ``node_name`` is not a str, ``weights`` is
        not a dict, or the weights are not float32, float64, float16 or bfloat16 (or W, R
        and B differ in dtype).
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
    if node_name is not None and not isinstance(node_name, str):
        raise TypeError(
            f"cygru.from_onnx: node_name must be None or a GRU node's name (str), got "
            f"{type(node_name).__name__} {_shown(node_name)}"
        )
    model = _load_model(model)
    graph = model.graph
    grus = [n for n in graph.node if _is_gru(n)]
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
        _check_gru_inputs(chain[0], _gru_label(chain[0]))
    else:
        for g in grus:
            _check_gru_inputs(g, _gru_label(g))
        index = _GraphIndex(graph)
        chain = _gru_chain(index, grus)
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
        batch_first = _check_layouts(model, layers, index)

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
# nodes really are a stack's layout is then checked by running them (see _Probe). Ops that
# create data of a size read from a tensor's *values* (Expand, ConstantOfShape, Range, Tile,
# Pad) are left out. The ones kept can still make data larger than their inputs -- Concat
# (x, x, ...), Gather with repeated indices, broadcasting arithmetic -- so the probe predicts
# each node's output size from its inputs' shapes before running it, and stops at a budget
# for the whole call (_PROBE_BUDGET), not just per tensor.
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
_BROADCASTING_OPS = frozenset(["Add", "Sub", "Mul", "Div", "Equal", "Where", "Max", "Min"])
# The most elements a probe tensor may have: sizes a graph declares beyond it are not used.
_PROBE_LIMIT = 1 << 20
# The most bytes the layout probe may allocate at one of its sizes (_probe_sizes, checked one
# after the other) in a from_onnx call: its probe values and every output of every node it
# runs (predicted before the node runs), all added up.
_PROBE_BUDGET = 64 << 20
# The most nodes the probe may run at one size (each run builds a one-node model and an
# evaluator, about half a millisecond): exporters write a handful of layout nodes around a
# stack, and the pieces repeated between layers run once.
_PROBE_NODES = 2000
_ONNX_DOMAINS = ("", "ai.onnx")


def _is_gru(node):
    return node.op_type == "GRU" and node.domain in _ONNX_DOMAINS


def _is_layout(node):
    return node.op_type in _LAYOUT_OPS and node.domain in _ONNX_DOMAINS


def _node_label(node):
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


def _node_reads(node):
    """The tensor names ``node`` reads: its inputs, and the outer names its subgraphs (If,
    Loop, Scan: at any depth) read."""
    names = list(node.input)
    todo = list(node.attribute)
    while todo:
        attr = todo.pop()
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in sub.node:
                names.extend(inner.input)
                todo.extend(inner.attribute)
    return names


def _first_two(groups, key=id):
    """The first two distinct items of the tuples in ``groups`` (by ``key``)."""
    out, seen = [], set()
    for group in groups:
        for item in group:
            k = key(item)
            if k not in seen:
                seen.add(k)
                out.append(item)
                if len(out) == 2:
                    return tuple(out)
    return tuple(out)


def _same_name(name):
    return name


class _Cone:
    """What a tensor is computed from, not looking past GRU nodes: the GRU nodes and the GRU
    outputs it reads, the graph inputs it reads (two of each at most: "none", "this one" or
    "several" is all that is asked), and one node in it that is not a layout node (or None).
    """

    __slots__ = ("grus", "outs", "reads", "odd")

    def __init__(self, grus=(), outs=(), reads=(), odd=None):
        self.grus, self.outs, self.reads, self.odd = grus, outs, reads, odd


_BUSY = object()


class _GraphIndex:
    """The graph's producers and the :class:`_Cone` of every tensor asked about, each node
    visited once for the whole ``from_onnx`` call (a walk per GRU node, or per pair of them,
    made stack detection quadratic in the graph's size). ``steps`` counts the visits (the
    nodes and the names they read), so tests can check the work is linear."""

    def __init__(self, graph):
        self.steps = 0
        self.producers = {}
        for node in graph.node:
            self.steps += 1
            for out in node.output:
                if out:
                    self.producers[out] = node
        initializers = {t.name for t in graph.initializer}
        self.inputs = {i.name for i in graph.input if i.name not in initializers}
        self._cones = {}  # id(node) -> _Cone of its outputs (or _BUSY while being visited)
        self._reads = {}  # id(node) -> _node_reads(node)

    def reads(self, node):
        names = self._reads.get(id(node))
        if names is None:
            names = self._reads[id(node)] = _node_reads(node)
            self.steps += len(names)
        return names

    def cone(self, tensor):
        node = self.producers.get(tensor) if tensor else None
        if node is None:
            return _Cone(reads=(tensor,) if tensor in self.inputs else ())
        if _is_gru(node):
            return _Cone(grus=(node,), outs=(tensor,))
        return self._node_cone(node)

    def _node_cone(self, start):
        """Depth first, without recursion (a hostile chain may be longer than Python's
        recursion limit); a node met again while its inputs are visited is a cycle."""
        cones = self._cones
        stack = [start]
        while stack:
            node = stack[-1]
            state = cones.get(id(node))
            if state is not None and state is not _BUSY:
                stack.pop()
                continue
            if state is None:
                cones[id(node)] = _BUSY
                for name in self.reads(node):
                    inner = self.producers.get(name) if name else None
                    if inner is None or _is_gru(inner):
                        continue
                    mark = cones.get(id(inner))
                    if mark is _BUSY:
                        raise ValueError(
                            f"cygru.from_onnx: the graph has a cycle through {_node_label(inner)} "
                            "(not a valid ONNX graph)"
                        )
                    if mark is None:
                        stack.append(inner)
                continue
            stack.pop()
            parts = [self.cone(name) for name in self.reads(node)]
            self.steps += len(parts)
            odd = None if _is_layout(node) else node
            if odd is None:
                odd = next((p.odd for p in parts if p.odd is not None), None)
            cones[id(node)] = _Cone(
                _first_two(p.grus for p in parts),
                _first_two((p.outs for p in parts), _same_name),
                _first_two((p.reads for p in parts), _same_name),
                odd,
            )
        return cones[id(start)]

    def reader(self, tensor, name):
        """A node in ``tensor``'s cone that reads the graph input ``name`` (for a message)."""
        seen, todo = set(), [tensor]
        while todo:
            node = self.producers.get(todo.pop())
            if node is None or _is_gru(node) or id(node) in seen:
                continue
            seen.add(id(node))
            reads = self.reads(node)
            if name in reads:
                return node
            todo.extend(reads)
        return None


def _check_gru_inputs(node, label):
    """A GRU node's inputs: X, W and R present (non-empty), six inputs at most."""
    if len(node.input) > 6:
        raise ValueError(
            f"cygru.from_onnx: {label} has {len(node.input)} inputs; ONNX's GRU takes at most 6 "
            "(X, W, R, B, sequence_lens, initial_h)"
        )
    for index, what in ((0, "X"), (1, "W"), (2, "R")):
        if len(node.input) <= index or not node.input[index]:
            raise ValueError(
                f"cygru.from_onnx: {label} has no input {what} (input[{index}]); ONNX's GRU "
                f"requires X, W and R, got inputs {list(node.input)}"
            )


def _gru_chain(index, grus):
    """The graph's GRU nodes in stack order (each reads the one before), or a ValueError naming
    the node that breaks the chain. Linear in the graph's size: one cone per GRU node."""
    names = [n.name for n in grus]
    before, after = {}, {}
    for g in grus:
        # the nearest GRU node upstream: the one whose output reaches g without passing
        # through another GRU node
        nearest = index.cone(g.input[0]).grus
        if len(nearest) > 1:
            raise ValueError(
                f"cygru.from_onnx: the graph's GRU nodes {names} are not one stack: "
                f"{_node_label(g)} reads the outputs of several GRU nodes "
                f"({[n.name for n in nearest]}); pick one with node_name="
            )
        before[id(g)] = nearest[0] if nearest else None
        if nearest:
            after.setdefault(id(nearest[0]), []).append(g)
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
        nxt = after.get(id(chain[-1]), [])
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


class _Budget:
    """The bytes and nodes the layout probe may still allocate and run at one probe size."""

    def __init__(self, limit=None, nodes=None):
        self.limit = _PROBE_BUDGET if limit is None else limit
        self.nodes = _PROBE_NODES if nodes is None else nodes
        self.spent = 0
        self.runs = 0

    def run(self, node):
        """Count one node run against the limit on runs."""
        if self.runs >= self.nodes:
            raise ValueError(
                f"cygru.from_onnx: checking the layout nodes around the GRU nodes would run "
                f"more than {self.nodes} nodes ({_node_label(node)} is one too many); a stack's "
                "layout is a handful of nodes, the same between every two layers (a hostile "
                "or broken model?); convert the GRU nodes one by one with node_name="
            )
        self.runs += 1

    def spend(self, nbytes, what):
        self.check(nbytes, what)
        self.spent += nbytes

    def check(self, nbytes, what):
        """Refuse ``nbytes`` more where they do not fit (before they are allocated)."""
        if self.spent + nbytes > self.limit:
            raise ValueError(
                f"cygru.from_onnx: checking the layout nodes around the GRU nodes would "
                f"allocate more than {self.limit >> 20} MiB ({what} alone needs "
                f"{nbytes:,} bytes, after {self.spent:,}); nodes that make data this large "
                "are not a stack's layout that cygru can vouch for (a hostile or broken "
                "model?); convert the GRU nodes one by one with node_name="
            )


def _attribute(node, name, default):
    for attr in node.attribute:
        if attr.name == name:
            return attr
    return default


def _predicted_bytes(node, inputs):
    """An upper bound of the bytes ``node`` (a layout op) allocates for its outputs, from its
    inputs' shapes, before it runs (8 bytes an element: int64 and float64 are the widest
    numbers; a Cast to strings gets more)."""
    op = node.op_type
    arrays = [a for a in inputs if a is not None]
    if op in ("Shape", "Size"):
        elements = max((a.ndim for a in arrays), default=1) + 1
    elif op == "Constant":
        elements = 1
        for attr in node.attribute:
            if attr.HasField("t"):
                elements = max(elements, int(np.prod(attr.t.dims, dtype=object)))
            if attr.HasField("sparse_tensor"):
                elements = max(elements, int(np.prod(attr.sparse_tensor.dims, dtype=object)))
            elements = max(elements, len(attr.floats), len(attr.ints), len(attr.strings))
    elif op == "Gather":
        if len(arrays) < 2 or arrays[0].ndim == 0:
            return 0  # the node fails
        data, indices = arrays[0], arrays[1]
        attr = _attribute(node, "axis", None)
        axis = attr.i if attr is not None else 0
        if not -data.ndim <= axis < data.ndim:
            return 0
        rows = data.shape[axis]
        elements = indices.size * (data.size // rows if rows else 0)
    elif op in _BROADCASTING_OPS:
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError:
            return 0  # the node fails
        elements = int(np.prod(shape, dtype=object))
    else:  # moves or selects its inputs' elements: Concat, Reshape, Slice, Split, Cast, ...
        elements = sum(a.size for a in arrays)
    per_element = 8
    if op == "Cast":
        to = _attribute(node, "to", None)
        if to is not None and to.i == 8:  # TensorProto.STRING: Python objects
            per_element = 64
    return int(elements) * per_element


def _run_node(model, node, feeds):
    """``node``'s outputs on ``feeds`` by onnx's reference evaluator (a one-node model), or
    None where it does not run."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    try:
        sub = helper.make_graph(
            [node],
            "probe",
            [
                helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape
                )
                for name, a in feeds.items()
            ],
            [helper.make_tensor_value_info(out, 0, None) for out in node.output if out],
        )
        sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
        sub_model.ir_version = model.ir_version
        results = ReferenceEvaluator(sub_model).run(None, feeds)
    except Exception:  # noqa: BLE001 - whatever fails here is not a layout we can vouch for
        return None
    return [np.asarray(r) for r in results]


class _Probe:
    """Runs a graph's layout nodes on probe values: every node at most once (values are kept
    for the call), each only after its outputs' size, predicted from its inputs' shapes,
    fits the budget. ``value(name)`` is a tensor's value, or None where it cannot be
    computed from the feeds by layout nodes (a node fails, or is not a layout node)."""

    def __init__(self, model, index, feeds, budget):
        self.model, self.index, self.budget = model, index, budget
        self.values = dict(feeds)
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.digests = {}
        counted = set()  # every GRU's Y is fed the same array: it is allocated once
        for name, value in feeds.items():
            if id(value) not in counted:
                counted.add(id(value))
                budget.spend(value.nbytes, f"the probe value for {name!r}")

    def digest(self, name):
        """A key for ``name``'s value: equal for equal values (under any name)."""
        found = self.digests.get(name)
        if found is None:
            value = self.value(name)
            if value is None or value.dtype.kind not in "biuf":
                found = ("tensor", name)
            else:
                data = hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest()
                found = ("value", value.dtype.str, value.shape, data)
            self.digests[name] = found
        return found

    def _leaf(self, name):
        from onnx import TensorProto, numpy_helper

        tensor = self.initializers.get(name)
        if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
            return None
        self.budget.spend(8 * int(np.prod(tensor.dims, dtype=object)), f"the initializer {name!r}")
        try:
            return numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001 - a malformed initializer: nothing to run with
            return None

    def value(self, tensor):
        values, producers = self.values, self.index.producers
        stack, expanded = [tensor], set()
        while stack:
            name = stack[-1]
            if name in values:
                stack.pop()
                continue
            node = producers.get(name)
            if node is None:
                values[name] = self._leaf(name)
                stack.pop()
                continue
            if not _is_layout(node):
                values[name] = None
                stack.pop()
                continue
            missing = [i for i in node.input if i and i not in values]
            if missing:
                if name in expanded:  # an input still being computed: a cycle
                    values[name] = None  # (cones refuse cycles first: never reached)
                    stack.pop()
                    continue
                expanded.add(name)
                stack.extend(missing)
                continue
            stack.pop()
            self._run(node)
            values.setdefault(name, None)
        return values[tensor]

    def _run(self, node):
        inputs = [self.values[i] if i else None for i in node.input]
        outputs = None
        if all(v is not None for i, v in zip(node.input, inputs) if i):
            predicted = _predicted_bytes(node, inputs)
            self.budget.run(node)
            self.budget.spend(predicted, _node_label(node))
            feeds = {i: v for i, v in zip(node.input, inputs) if i}
            outputs = _run_node(self.model, node, feeds)
            if outputs is not None:
                actual = sum(o.nbytes for o in outputs)
                if actual > predicted:
                    self.budget.spend(actual - predicted, _node_label(node))
        for k, out in enumerate(node.output):
            if out:
                self.values[out] = outputs[k] if outputs and k < len(outputs) else None


def _piece_key(index, probe, tensor, y_name):
    """What the nodes computing ``tensor`` from ``y_name`` are, without their names: each
    node's op, attributes and wiring, in order, with the values (digests) of the inputs that
    do not depend on ``y_name``. Exporters write the same nodes between every two layers, so
    a deep stack runs one piece, not one per layer (the probe's budget is for all the layers).
    Only the nodes that depend on ``y_name`` are visited: those of no other piece."""
    local = {y_name: "Y"}
    parts = []
    stack = [tensor]
    while stack:
        name = stack[-1]
        if name in local:
            stack.pop()
            continue
        node = index.producers[name]
        pending = [i for i in node.input if i and i not in local and index.cone(i).outs]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        refs = tuple(local[i] if i in local else probe.digest(i) if i else "" for i in node.input)
        attrs = tuple(a.SerializeToString() for a in node.attribute)
        parts.append((node.op_type, node.domain, attrs, refs, len(node.output)))
        for k, out in enumerate(node.output):
            if out:
                local[out] = (len(parts) - 1, k)
    return tuple(parts), local[tensor]


def _same(got, expected):
    return got is not None and got.shape == expected.shape and np.array_equal(got, expected)


def _merge(Y, layout):
    """What a stack feeds its next layer: Y (T, D, B, H) -> (T, B, D*H); layout 1:
    (B, T, D, H) -> (B, T, D*H)."""
    if layout == 0:
        Y = Y.transpose(0, 2, 1, 3)
    return Y.reshape(Y.shape[0], Y.shape[1], -1)


def _enforced_shapes(model):
    """{tensor: static shape} for the 4-d tensors whose sizes ONNX's shape inference derives
    from what ``run`` enforces (the graph inputs' declared sizes, stored tensors), not from
    the sizes a model declares for its outputs or intermediate tensors, which nothing checks:
    a layout node verified only at a declared size that the inputs do not fix would be bound
    at other sizes too."""
    import onnx

    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for vo in bare.graph.output:
        if vo.type.HasField("tensor_type"):
            vo.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(bare)
    except Exception:  # noqa: BLE001 - no shapes to go by: the probe uses its own sizes
        return {}
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim]
            if (
                len(dims) == 4
                and all(d > 0 for d in dims)
                and int(np.prod(dims, dtype=np.float64)) <= _PROBE_LIMIT
            ):
                shapes[vi.name] = dims
    return shapes


#: numbers at least this large in a layout node's constants stand for "to the end" (Slice
#: ends of INT64_MAX, ...): no probe size goes beyond them
_ENDLESS = 1 << 24


def _numbers_given(node, stored, index, memo, shared=None):
    """The numbers (absolute values below :data:`_ENDLESS`) a node is given: its integer
    attributes and the integers stored in, or made by Constant nodes for, the tensors it
    reads that no GRU node's output reaches (``stored``: the initializers by name). Kept in
    ``memo`` for the session's construction: a node after many GRU nodes (a Concat of their
    outputs) is walked once. ``shared``: the tensors earlier calls walked, whose numbers the
    caller has from them (each tensor walked once for all the calls: linear, no cap);
    without it, at most 4096 tensors a call."""
    found = memo.get(id(node))
    if found is not None:
        return found
    from onnx import TensorProto, numpy_helper

    ints = (TensorProto.INT64, TensorProto.INT32)
    numbers: set = set()

    def consider(values):
        for v in np.abs(np.asarray(values, dtype=np.float64)).ravel():
            if v < _ENDLESS:
                numbers.add(int(v))

    def given(tensor):
        if tensor.data_type in ints and int(np.prod(tensor.dims, dtype=np.int64)) <= 4096:
            consider(numpy_helper.to_array(tensor))

    todo, seen = [node], (set() if shared is None else shared)
    cap = 4096 if shared is None else None
    while todo:
        item = todo.pop()
        if isinstance(item, str):  # a tensor a node reads: stored, or made by a node
            if item in seen or (cap is not None and len(seen) > cap):
                continue
            seen.add(item)
            if item in stored:
                given(stored[item])
                continue
            if index.cone(item).outs:  # computed from a GRU node's output: not a number given
                continue
            item = index.producers.get(item)
            if item is None:
                continue
        for attr in item.attribute:
            consider(list(attr.ints) + ([attr.i] if attr.HasField("i") else []))
            if attr.HasField("t"):
                given(attr.t)
        todo.extend(r for r in item.input if r)
    memo[id(node)] = numbers
    return numbers


#: the (T, B) sizes the layout nodes around GRU nodes are checked at: distinct sizes, and
#: sizes of 1 (a Squeeze without axes drops them: streaming calls have T = 1)
_PROBE_SIZES = ((3, 2), (2, 5), (1, 4), (4, 1), (1, 1))


def _probe_sizes(given, features, static=(None, None)):
    """The (T, B) sizes to check layout nodes at: :data:`_PROBE_SIZES`, and sizes beyond
    every number the nodes are ``given`` (:func:`_numbers_given`) other than the
    ``features`` sizes (a Slice that ends at 5 keeps all of a shorter Y; a Reshape to a
    fixed shape fits one size only). ``static``: the sizes the graph's inputs fix (None
    where they do not), which replace the probe's own: the model runs at no other."""
    static_t, static_b = static
    if static_t and static_b:
        return [(static_t, static_b)]
    sizes = list(_PROBE_SIZES)
    beyond = max(set(given) - set(features), default=0) + 1
    if beyond > 4:
        sizes += [(beyond, 2), (2, beyond)]
    chosen = []
    for T, B in sizes:
        size = (static_t or T, static_b or B)
        if size not in chosen:
            chosen.append(size)
    return chosen


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


def _y_nodes(index, tensor, seen):
    """The layout nodes computing ``tensor`` that read a GRU node's output (each once in the
    call: ``seen`` holds those already listed)."""
    found, todo = [], [tensor]
    while todo:
        name = todo.pop()
        node = index.producers.get(name) if name else None
        if node is None or _is_gru(node) or id(node) in seen or not index.cone(name).outs:
            continue
        seen.add(id(node))
        found.append(node)
        todo.extend(index.reads(node))
    return found


def _check_layouts(model, layers, index):
    """Check the nodes before, between and after the GRU nodes of a stack; ``batch_first``.

    Before the first GRU node: if its input is computed from one graph input by layout nodes
    only, that input must arrive unchanged (``batch_first`` is the node's layout) or with its
    first two axes swapped (``batch_first`` the other way); otherwise the nodes before are
    not part of the module and ``batch_first`` is the node's layout. Between two GRU nodes:
    the nodes must feed the later one exactly the earlier one's Y with its directions merged
    into the features. After the last: a graph output computed from its Y by layout nodes
    that is the merged sequence must be batch first exactly when the input is.

    The nodes run on probe values (:class:`_Probe`) of several sizes (:func:`_probe_sizes`:
    a Reshape to a fixed shape, a Squeeze without axes or a Slice to a fixed end passes at
    some sizes only), at each size every node at most once, within one budget of bytes and
    nodes; what they read and whether they are all layout nodes comes from ``index``
    (:class:`_GraphIndex`), so the whole check is linear in the graph's size.
    """
    graph = model.graph
    producers = index.producers
    layout = layers[0]["layout"]
    D, H, I = layers[0]["D"], layers[0]["H"], layers[0]["I"]
    batch_first = bool(layout)
    x_tensor = layers[0]["node"].input[0]
    last = layers[-1]["node"]
    last_y = last.output[0] if len(last.output) else ""

    # the numbers the layout nodes are given, which the probe sizes must go beyond
    stored = {t.name: t for t in graph.initializer}
    walked, seen = [], set()
    for layer in layers[1:]:
        walked += _y_nodes(index, layer["node"].input[0], seen)
    for out in graph.output:
        cone = index.cone(out.name)
        if last_y and cone.outs == (last_y,) and cone.odd is None:
            walked += _y_nodes(index, out.name, seen)
    cone = index.cone(x_tensor)
    layout_input = len(cone.reads) == 1 and cone.odd is None and not cone.grus
    if layout_input and x_tensor in producers:
        walked.append(producers[x_tensor])
    memo, shared = {}, set()
    given = set().union(*(_numbers_given(n, stored, index, memo, shared) for n in walked))
    features = (D, H, D * H, I)

    x_name, sizes = None, None
    if layout_input:
        (name,) = cone.reads
        d0, d1 = _static_dims(graph, name)
        if d0 and d1 and d0 * d1 * max(I, D * H) > _PROBE_LIMIT:
            d0 = d1 = None
        x_sizes = _probe_sizes(given, features, (d0, d1))
        ways = {False, True}  # the input unchanged, or its first two axes swapped
        for a, b in x_sizes:
            budget = _Budget()
            budget.check(4 * a * b * I, f"the probe value for {name!r}")
            value = _tagged((a, b, I), 0.5)
            if x_tensor == name:
                got = value
            else:
                got = _Probe(model, index, {name: value}, budget).value(x_tensor)
            ways &= {w for w in ways if _same(got, value.transpose(1, 0, 2) if w else value)}
            if not ways:
                break
        if ways:
            x_name, batch_first = name, batch_first != (False not in ways)
            sizes = [(b, a) if batch_first else (a, b) for a, b in x_sizes]
    if sizes is None:  # the sizes the graph's inputs fix, where they do
        static = _enforced_shapes(model).get(layers[0]["node"].output[0])
        if static is not None:
            static = (static[1], static[0]) if layout else (static[0], static[2])
        sizes = _probe_sizes(given, features, static or (None, None))

    outputs = []  # graph outputs layout nodes compute from the last Y (and x)
    if x_name is not None and last_y:
        for out in graph.output:
            cone = index.cone(out.name)
            if out.name != last_y and cone.outs == (last_y,) and cone.odd is None:
                if not set(cone.reads) - {x_name}:
                    outputs.append(out.name)
    ways_out = {name: {False, True} for name in outputs}  # batch first, time first or both
    for T, B in sizes:  # one at a time: what a size's probe made is freed before the next
        _check_size(model, layers, index, (T, B, x_name, batch_first), ways_out)

    for out in graph.output:
        ways = ways_out.get(out.name)
        if not ways or len(ways) == 2:
            continue  # another use of the sequence (its last step, say)
        (out_batch_first,) = ways
        if out_batch_first != batch_first:
            raise ValueError(
                f"cygru.from_onnx: the graph's input {x_name!r} reaches {layers[0]['label']} "
                f"{'batch' if batch_first else 'time'} first but its output {out.name!r} "
                f"(from {_node_label(producers[out.name])}) is "
                f"{'batch' if out_batch_first else 'time'} first; a cygru.GRU has one "
                "batch_first for both"
            )
    return batch_first


def _check_size(model, layers, index, size, ways_out):
    """At one probe size ``(T, B, x_name, batch_first)``: check the pieces between layers
    (:func:`_check_between`), and narrow ``ways_out`` (graph output -> whether it is the
    merged sequence batch first (True), time first (False)) to the ways it is at this size.
    """
    T, B, x_name, batch_first = size
    layout, D, H, I = (layers[0][k] for k in ("layout", "D", "H", "I"))
    budget = _Budget()
    budget.check(4 * T * B * (D * H + (I if x_name else 0)), "the probe values")
    y_value = _tagged((B, T, D, H) if layout else (T, D, B, H))
    # Every layer's Y is bound to the same probe value: a piece that passes the cone checks
    # reads one Y only, so each node runs once for the whole stack.
    feeds = {layer["node"].output[0]: y_value for layer in layers if layer["node"].output}
    feeds.pop("", None)
    if x_name is not None:
        feeds[x_name] = _tagged((B, T, I) if batch_first else (T, B, I), 0.5)
    probe = _Probe(model, index, feeds, budget)
    expected = _merge(y_value, layout)
    _check_between(layers, index, probe, expected, x_name)
    time_major = expected if layout == 0 else expected.transpose(1, 0, 2)
    want = (time_major, time_major.transpose(1, 0, 2))
    for name, ways in ways_out.items():
        if ways:
            got = probe.value(name)
            ways_out[name] = {w for w in ways if _same(got, want[w])}


def _check_between(layers, index, probe, expected, x_name):
    """Check, at one probe size, that the nodes between every two GRU nodes feed the later
    one ``expected`` (the earlier one's Y with its directions merged into the features)."""
    producers = index.producers
    verified = set()  # _piece_key of the pieces between two layers found to be layout
    for prev, layer in zip(layers, layers[1:]):
        y_name = prev["node"].output[0] if len(prev["node"].output) else ""
        src = layer["node"].input[0]
        if y_name and src == y_name:
            continue
        cone = index.cone(src)
        culprit = producers.get(src, layer["node"])
        for name in cone.reads:
            if name != x_name:
                reader = index.reader(src, name) or culprit
                raise ValueError(
                    f"cygru.from_onnx: the graph's GRU nodes are not a plain stack: between "
                    f"{prev['label']} and {layer['label']}, {_node_label(reader)} reads the "
                    f"graph input {name!r}; convert the nodes one by one with node_name="
                )
        got = None
        if y_name and cone.outs == (y_name,) and cone.odd is None:
            key = _piece_key(index, probe, src, y_name)
            if key in verified:  # the same nodes on the same values: the same result
                continue
            got = probe.value(src)
            if _same(got, expected):
                verified.add(key)
                continue
        if not _same(got, expected):
            raise ValueError(
                f"cygru.from_onnx: the graph's GRU nodes are not a plain stack: between "
                f"{prev['label']} and {layer['label']}, {_node_label(cone.odd or culprit)} does "
                f"not pass on the output Y with its directions merged into the features (what "
                f"a stack feeds its next layer); convert the nodes one by one with node_name="
            )

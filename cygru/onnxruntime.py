"""cygru inside ONNX Runtime: run a whole ONNX model with its GRU nodes in cygru.

:class:`InferenceSession` takes the model that ``onnxruntime.InferenceSession`` takes and
answers the same ``run(output_names, input_feed)``. It cuts the graph at its GRU nodes: the
nodes between them run in ONNX Runtime, as parts of the model (each an
``onnxruntime.InferenceSession`` of its own), and each GRU node runs as a
:class:`cygru.GRU` built from the node's stored weights by :func:`cygru.from_onnx` (or, with
``quantize=``, as a :class:`cygru.QuantizedGRU`). Everything a GRU node reads at run time
(its input ``X``, its ``initial_h``, its ``sequence_lens``) may be computed by the graph
around it: the part before the node computes it, the part after reads the node's outputs.

Importing this module imports ``onnx`` and ``onnxruntime`` (``import cygru`` imports
neither). It sits above :mod:`cygru.interop`: it uses :func:`cygru.from_onnx` to read the
nodes and :func:`cygru.quantize` for reduced precision.

Why a partition of the graph and not a custom operator: ONNX Runtime loads native custom
operators from a shared library built against its C API headers, which its Python wheel
does not ship, and its Python custom operators (``onnxruntime-extensions``) are one more
dependency whose calls into Python cost about as much as a part boundary does here (both
measured on the Interoperability page). A partition needs nothing beyond ``onnx`` and
``onnxruntime``, and cygru's calls release the GIL.
"""

from __future__ import annotations

import os
import weakref
from collections import namedtuple
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as _ort
from onnx import helper, numpy_helper

from ._typing import ModelProto
from .interop import from_onnx
from .interop._onnx_import import (
    _Budget,
    _enforced_shapes,
    _GraphIndex,
    _is_gru,
    _is_layout,
    _load_model,
    _merge,
    _model_tensors,
    _node_label,
    _numbers_given,
    _Probe,
    _probe_sizes,
    _same,
    _tagged,
)
from .quantized import quantize as _quantize

__all__ = ["InferenceSession", "NodeArg"]

_WHO = "cygru.onnxruntime.InferenceSession"

#: what :meth:`InferenceSession.get_inputs` and :meth:`~InferenceSession.get_outputs` list,
#: with the fields of ``onnxruntime.NodeArg``
NodeArg = namedtuple("NodeArg", ["name", "type", "shape"])
NodeArg.__doc__ = """A graph input or output: ``name``, ``type`` (ONNX Runtime's spelling,
e.g. ``"tensor(float)"``) and ``shape`` (ints for fixed sizes, strings for named ones,
None for unknown ones), as ``onnxruntime.NodeArg`` gives them."""

_ORT_TYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float",
    onnx.TensorProto.DOUBLE: "double",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}
_GRU_FLOATS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64}
_QUANTIZE = (None, "int8", "bf16")


def _subgraph_reads(graph):
    """Names a subgraph reads from the scopes around it (not those it defines itself)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    reads = set()
    for node in graph.node:
        for name in _node_reads(node):
            if name and name not in defined:
                reads.add(name)
        defined.update(node.output)
    return reads


def _node_reads(node):
    """Every name a node reads: its inputs and what its subgraphs (If, Loop, Scan) read from
    the graph around them."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for g in graphs:
            names.extend(sorted(_subgraph_reads(g)))
    return names


def _complete(type_proto):
    """Whether a TypeProto names its element type all the way down (a tensor's, or the
    tensors' in a sequence, optional or map)."""
    kind = type_proto.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        return bool(getattr(type_proto, kind).elem_type)
    if kind in ("sequence_type", "optional_type"):
        return _complete(getattr(type_proto, kind).elem_type)
    if kind == "map_type":
        return bool(type_proto.map_type.key_type) and _complete(type_proto.map_type.value_type)
    return False


def _value_types(model):
    """name -> TypeProto of every value (tensor, or sequence, optional or map of tensors)
    whose element type the model declares or ONNX's shape inference finds."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model onnx cannot infer still runs: declared types only
        inferred = model
    types = {}
    for vi in list(inferred.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if _complete(vi.type):
            types[vi.name] = vi.type
    for t in model.graph.initializer:
        types.setdefault(t.name, helper.make_tensor_type_proto(t.data_type, None))
    return types


def _strip_shapes(type_proto):
    kind = type_proto.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        getattr(type_proto, kind).ClearField("shape")
    elif kind in ("sequence_type", "optional_type"):
        _strip_shapes(getattr(type_proto, kind).elem_type)
    elif kind == "map_type":
        _strip_shapes(type_proto.map_type.value_type)


def _type_only(type_proto):
    """The type without its sizes (the element type of a tensor, of the tensors of a
    sequence, ...): the parts of a cut model check what they are fed against the original
    model's declarations, which name sizes."""
    bare = onnx.TypeProto()
    bare.CopyFrom(type_proto)
    bare.ClearField("denotation")
    _strip_shapes(bare)
    return bare


def _elem_name(elem_type):
    return _ORT_TYPE_NAMES.get(elem_type, onnx.TensorProto.DataType.Name(elem_type).lower())


def _type_name(type_proto):
    """ONNX Runtime's spelling of a type: tensor(float), seq(tensor(int64)), ..."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_elem_name(type_proto.tensor_type.elem_type)})"
    if kind == "sparse_tensor_type":
        return f"sparse_tensor({_elem_name(type_proto.sparse_tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({_type_name(type_proto.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({_type_name(type_proto.optional_type.elem_type)})"
    if kind == "map_type":
        key = _elem_name(type_proto.map_type.key_type)
        return f"map({key},{_type_name(type_proto.map_type.value_type)})"
    return str(kind)


def _arg(vi_type, name):
    kind = vi_type.WhichOneof("value")
    if kind == "optional_type":  # ONNX Runtime gives the shape of the tensor inside
        inner = vi_type.optional_type.elem_type
        tt = inner.tensor_type if inner.WhichOneof("value") == "tensor_type" else None
    else:
        tt = vi_type.tensor_type if kind == "tensor_type" else None
    shape = None if tt is not None else []
    if tt is not None and tt.HasField("shape"):
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)
    return NodeArg(name, _type_name(vi_type), shape)


def _fold_weights(model, types, providers):
    """Give every GRU node's W, R and B that other nodes compute from stored tensors alone
    (PyTorch's dynamo exporter leaves the gate reordering of large weights as ``Slice`` and
    ``Concat`` nodes) a stored value: the tensor is computed once by ONNX Runtime and added
    to ``model`` as an initializer. Returns {tensor name: initializer name} and the names
    the folded nodes read (overriding one of them at run time would not be seen)."""
    graph = model.graph
    stored = {t.name for t in graph.initializer}
    fed = {i.name for i in graph.input} - stored
    producers = {o: n for n in graph.node for o in n.output if o}
    order = {id(n): i for i, n in enumerate(graph.node)}
    wanted = []
    for node in graph.node:
        if _is_gru(node):
            for name in node.input[1:4]:
                if name and name not in stored and name in producers and name not in wanted:
                    wanted.append(name)
    result, leaves = {}, set()
    for name in wanted:
        nodes, todo, seen, constant = [], [name], set(), True
        while todo and constant:
            t = todo.pop()
            if t in seen or not t:
                continue
            seen.add(t)
            if t in fed:
                constant = False
            elif t in producers:
                node = producers[t]
                if node.op_type in (
                    "RandomNormal",
                    "RandomUniform",
                    "RandomNormalLike",
                    "RandomUniformLike",
                    "Multinomial",
                    "Bernoulli",
                ):
                    constant = False
                if id(node) not in {id(n) for n in nodes}:
                    nodes.append(node)
                todo.extend(_node_reads(node))
        if not constant or len(nodes) > 64:
            continue
        nodes.sort(key=lambda n: order[id(n)])
        reads = {r for n in nodes for r in _node_reads(n)}
        inits = [t for t in graph.initializer if t.name in reads]
        if name not in types:
            continue
        out = helper.make_value_info(name, _type_only(types[name]))
        piece = helper.make_model(
            helper.make_graph(nodes, "fold", [], [out], inits),
            opset_imports=list(model.opset_import),
            ir_version=model.ir_version,
            functions=list(model.functions),
        )
        if not _fold_fits(piece):
            continue
        try:
            session = _ort.InferenceSession(piece.SerializeToString(), providers=providers)
            (value,) = session.run([name], {})
        except Exception:  # noqa: BLE001 - not computable alone: the node stays in ONNX Runtime
            continue
        label = f"{name}__cygru_stored"
        while label in stored or label in producers:
            label += "_"
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), label))
        stored.add(label)
        result[name] = label
        leaves.update(reads)
    return result, leaves


def _check_no_external_data(model):
    """A model given as bytes or a ModelProto whose tensors still name external data files:
    neither the session nor ONNX Runtime (which reads bytes) knows the directory they are in."""
    from onnx.external_data_helper import uses_external_data

    graphs = [model.graph] + list(model.functions)
    for graph in graphs:
        for tensor in _model_tensors(graph):
            if uses_external_data(tensor):
                where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
                raise ValueError(
                    f"{_WHO}: the model's tensor {tensor.name!r} keeps its data in the external "
                    f"file {where!r}, which was not loaded: pass the model file's path (its "
                    "external data is read from its directory), or a model loaded with "
                    "onnx.load(path)"
                )


#: the most bytes the nodes that compute one GRU node's weights may make when the session
#: folds them (ONNX Runtime's own constant folding stops at the same size)
_FOLD_LIMIT = 1 << 30


def _fold_fits(piece):
    """Whether every tensor the nodes of ``piece`` (a model of stored tensors alone) compute
    has a size ONNX's shape inference knows, together at most :data:`_FOLD_LIMIT` bytes: a
    model cannot make the session allocate without bound when it is built (a
    ``ConstantOfShape`` of a huge stored shape, say); such weights stay in ONNX Runtime."""
    try:
        inferred = onnx.shape_inference.infer_shapes(piece, data_prop=True)
    except Exception:  # noqa: BLE001 - sizes unknown: not folded
        return False
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    total = 0
    for node in piece.graph.node:
        for out in node.output:
            vi = known.get(out) if out else None
            if vi is None:
                if not out:
                    continue
                return False
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
                return False
            if not all(d.HasField("dim_value") for d in tt.shape.dim):
                return False
            size = int(np.prod([d.dim_value for d in tt.shape.dim], dtype=object))
            try:
                itemsize = helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
            except Exception:  # noqa: BLE001 - strings and other odd types: not folded
                return False
            total += size * itemsize
            if total > _FOLD_LIMIT:
                return False
    return True


def _check_sorted(graph, initializers):
    """ONNX requires a graph's nodes in an order where each reads only what is computed
    before it (or stored, or fed), each name defined once, and distinct node names (as ONNX
    Runtime checks them): the parts are cut in that order, and told apart by name."""
    known = set(initializers) | {i.name for i in graph.input}
    produced_by, named = {}, {}
    for node in graph.node:
        if node.name:  # the parts and cygru's nodes are told apart by name
            other = named.setdefault(node.name, node)
            if other is not node:
                raise ValueError(
                    f"{_WHO}: two nodes of the graph are named {node.name!r} ({other.op_type} "
                    f"and {node.op_type}); ONNX requires distinct node names (not a valid ONNX "
                    "graph)"
                )
        for o in node.output:
            if not o:
                continue
            if o in known or o in produced_by:
                what = (
                    "a graph input"
                    if o in {i.name for i in graph.input}
                    else "a stored tensor"
                    if o in initializers
                    else f"the output of {_node_label(produced_by[o])}"
                )
                raise ValueError(
                    f"{_WHO}: {_node_label(node)} computes {o!r}, which is also {what}; ONNX "
                    "requires each name defined once (not a valid ONNX graph)"
                )
            produced_by[o] = node
    for node in graph.node:
        for name in _node_reads(node):
            if name not in known and name in produced_by:
                later = produced_by[name]
                raise ValueError(
                    f"{_WHO}: the graph's nodes are not in topological order: node "
                    f"{node.name!r} ({node.op_type}) reads {name!r}, which node "
                    f"{later.name!r} ({later.op_type}) computes after it (not a valid ONNX "
                    "graph)"
                )
        known.update(o for o in node.output if o)


def _merged_outputs(model, cygru_parts):
    """{tensor: the _GruPart whose output it equals}: the tensors that layout nodes compute
    from a cygru node's Y alone and that hold Y with its directions merged into the features
    (what PyTorch's exporters feed the next layer or the head: ``Transpose`` + ``Reshape``
    or ``Squeeze``), which is what cygru's call returns, so those nodes need not run. Each is
    checked by running its nodes (with onnx's reference evaluator) on probe values of
    several sizes, sizes of 1 among them (the model's own, where its inputs fix them)."""
    if not cygru_parts:
        return {}
    graph = model.graph
    index = _GraphIndex(graph)
    consumers: Dict[str, list] = {}
    for node in graph.node:
        for r in _node_reads(node):
            consumers.setdefault(r, []).append(node)
    found, shapes, stored, memo = {}, None, None, {}
    for part in cygru_parts.values():
        if not part.y:
            continue
        candidates, todo, seen, walked = [], [part.y], set(), []
        while todo:  # the tensors layout nodes compute from Y
            name = todo.pop()
            for node in consumers.get(name, ()):
                if id(node) in seen or not _is_layout(node):
                    continue
                seen.add(id(node))
                walked.append(node)
                for out in node.output:
                    if out:
                        cone = index.cone(out)
                        if cone.outs == (part.y,) and cone.odd is None and not cone.reads:
                            candidates.append(out)
                            todo.append(out)
        if not candidates:
            continue
        module = part.module
        D, H = (2 if module.bidirectional else 1), module.hidden_size
        if shapes is None:
            shapes = _enforced_shapes(model)
        static = shapes.get(part.y)
        if stored is None:
            stored = {t.name: t for t in graph.initializer}
        given = set().union(*(_numbers_given(n, stored, index, memo) for n in walked))
        if static is None:
            static = (None, None)
        else:
            static = (static[0], static[2]) if part.layout == 0 else (static[1], static[0])
        sizes = _probe_sizes(given, (D, H, D * H), static)
        verified = set(candidates)
        for T, B in sizes:
            shape = (T, D, B, H) if part.layout == 0 else (B, T, D, H)
            try:
                budget = _Budget()
                budget.check(4 * T * B * D * H, "the probe value for Y")  # before it is made
                y_value = _tagged(shape)
                expected = _merge(y_value, part.layout)
                probe = _Probe(model, index, {part.y: y_value}, budget)
                verified = {t for t in verified if _same(probe.value(t), expected)}
            except ValueError:  # over the probe's budget: computed by ONNX Runtime instead
                verified = set()
        for t in verified:
            found[t] = part
        if verified:  # what the skipped nodes read is fixed for the session
            part.fixed_reads.update(r for n in walked for r in _node_reads(n) if r)
    return found


_SPINNING = "session.intra_op.allow_spinning"


class _quiet_threads:
    """The session options for a part: ONNX Runtime's worker threads spin for a while after
    each run by default, waiting for more work, which here takes cores from the cygru call
    that comes next (a medium model at 2 threads: 31.5 ms with spinning parts, 17.6 ms
    without). So the parts' threads do not spin unless the caller's ``sess_options`` asks
    for it explicitly. The caller's object is
    set for the part's creation only (ONNX Runtime copies the options into the session) and
    restored after."""

    def __init__(self, options):
        self.options, self.set = options, False

    def __enter__(self):
        if self.options is None:
            self.options = _ort.SessionOptions()
        try:
            self.options.get_session_config_entry(_SPINNING)
            by_caller = self.options not in _RESTORED
        except RuntimeError:  # not set: ONNX Runtime's default
            by_caller = False
        if not by_caller:
            self.options.add_session_config_entry(_SPINNING, "0")
            self.set = True
        return self.options

    def __exit__(self, *exc):
        if self.set:  # back to ONNX Runtime's default ("1"): an entry cannot be removed,
            # so the object is remembered as not set by its owner
            self.options.add_session_config_entry(_SPINNING, "1")
            _RESTORED.add(self.options)
        return False


_RESTORED: "weakref.WeakSet[Any]" = weakref.WeakSet()


class _OrtPart:
    """Consecutive non-GRU nodes of one level, as a model of their own."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.inputs: List[str] = []
        self.outputs: List[str] = []
        self.optional: set = set()  # inputs with a stored default: fed only if overridden
        self.session = None

    def run(self, env, run_options):
        feed = {name: env[name] for name in self.inputs if name in env or name not in self.optional}
        for name, value in zip(self.outputs, self.session.run(self.outputs, feed, run_options)):
            env[name] = value


class _GruPart:
    """One GRU node run by a cygru module."""

    def __init__(self, node, module, layout, dtype):
        self.node = node
        self.module = module
        self.layout = layout
        self.dtype = dtype
        io = list(node.input) + [""] * (6 - len(node.input))
        self.x, self.lengths, self.h0 = io[0], io[4], io[5]
        out = list(node.output) + [""] * (2 - len(node.output))
        self.y, self.y_h = out[0], out[1]
        # tensors that layout nodes compute from Y and that equal cygru's own output (Y with
        # its directions merged into the features): set to it, those nodes skipped
        self.merged: List[str] = []
        self.needed = (self.y, self.y_h)  # the outputs the rest of the model reads
        self.fixed_reads: set = set()  # what the layout nodes skipped for it read

    def run(self, env, run_options=None):
        who = f"{_WHO}.run: the GRU node {self.node.name!r}"
        x = env[self.x]
        if not isinstance(x, np.ndarray) or x.dtype != self.dtype or x.ndim != 3:
            got = f"{getattr(x, 'dtype', type(x).__name__)} of shape {np.shape(x)}"
            raise TypeError(
                f"{who} expected its input {self.x!r} as a 3-d array of "
                f"{np.dtype(self.dtype)}, got {got}"
            )
        module = self.module
        D, H = (2 if module.bidirectional else 1), module.hidden_size
        T, B = (x.shape[0], x.shape[1]) if self.layout == 0 else (x.shape[1], x.shape[0])
        h0 = env[self.h0] if self.h0 else None
        if h0 is not None:
            want = (D, B, H) if self.layout == 0 else (B, D, H)
            if np.shape(h0) != want:
                raise ValueError(
                    f"{who} expected its initial_h {self.h0!r} of shape {want} "
                    f"({'(D, B, H)' if self.layout == 0 else '(B, D, H)'}: X has "
                    f"shape {x.shape}), got {np.shape(h0)}"
                )
            if self.layout == 1:
                h0 = h0.transpose(1, 0, 2)  # ONNX's (B, D, H) for layout 1; cygru's (D, B, H)
        lengths = env[self.lengths] if self.lengths else None
        shortest = T
        if lengths is not None:
            lengths, shortest = self._checked_lengths(who, lengths, T, B)
        elif T == 0:
            raise ValueError(
                f"{who}: its input {self.x!r} has no time steps (shape {x.shape}) and the node "
                "has no sequence_lens; expected at least one time step"
            )
        try:
            if lengths is not None and (T == 0 or shortest == 0):
                output, h_n = self._with_empty_rows(x, h0, lengths, T, B, D, H)
            else:
                output, h_n = module(x, h0, lengths=lengths)
        except (ValueError, TypeError) as exc:  # named after the node, not the module
            kind = TypeError if isinstance(exc, TypeError) else ValueError
            raise kind(f"{who}: {exc}") from None
        if output.dtype != self.dtype:  # a quantized module returns float32
            output, h_n = output.astype(self.dtype), h_n.astype(self.dtype)
        for name in self.merged:
            env[name] = output
        if self.y and self.y in self.needed:
            if self.layout == 0:  # (T, B, D*H) -> ONNX's (T, D, B, H)
                y = np.ascontiguousarray(output.reshape(T, B, D, H).transpose(0, 2, 1, 3))
            else:  # (B, T, D*H) -> (B, T, D, H): a view
                y = output.reshape(B, T, D, H)
            env[self.y] = y
        if self.y_h and self.y_h in self.needed:
            env[self.y_h] = (
                h_n if self.layout == 0 else np.ascontiguousarray(h_n.transpose(1, 0, 2))
            )

    @staticmethod
    def _checked_lengths(who, lengths, T, B):
        """sequence_lens as ONNX Runtime takes it: integers of shape (B,), each in [0, T];
        with the shortest (T for an empty batch)."""
        if not isinstance(lengths, np.ndarray) or lengths.dtype.kind not in "iu":
            got = getattr(lengths, "dtype", type(lengths).__name__)
            raise TypeError(f"{who} expected its sequence_lens as an integer array, got {got}")
        if lengths.shape != (B,):
            raise ValueError(
                f"{who} expected its sequence_lens of shape ({B},) (one per batch row), got "
                f"{lengths.shape}"
            )
        lo = int(lengths.min()) if B else T
        if B and (lo < 0 or lengths.max() > T):
            bad = lo if lo < 0 else int(lengths.max())
            raise ValueError(
                f"{who}: every sequence length must be in [0, {T}] (the sequence length of "
                f"its input X), got {bad}"
            )
        return lengths, lo

    def _with_empty_rows(self, x, h0, lengths, T, B, D, H):
        """ONNX Runtime's answer for rows of length 0 (cygru's modules take lengths >= 1):
        their Y and Y_h are zeros (not initial_h); the other rows run in cygru."""
        keep = np.flatnonzero(lengths)
        output = np.zeros((T, B, D * H) if self.layout == 0 else (B, T, D * H), self.dtype)
        h_n = np.zeros((D, B, H), self.dtype)
        if keep.size:
            axis = 1 if self.layout == 0 else 0
            rows = np.take(x, keep, axis=axis)
            some_h0 = None if h0 is None else np.ascontiguousarray(h0[:, keep])
            out_k, h_k = self.module(rows, some_h0, lengths=lengths[keep])
            if self.layout == 0:
                output[:, keep] = out_k
            else:
                output[keep] = out_k
            h_n[:, keep] = h_k
        return output, h_n


def _fresh(args):
    """Copies of NodeArgs whose shape lists the caller may change."""
    return [a._replace(shape=None if a.shape is None else list(a.shape)) for a in args]


def _owner(array):
    """The id of the object that owns ``array``'s memory (itself, or the base of a view)."""
    while isinstance(getattr(array, "base", None), np.ndarray):
        array = array.base
    base = getattr(array, "base", None)
    return id(array if base is None else base)


def _check_quantize(quantize):
    if quantize not in _QUANTIZE:
        raise ValueError(f"{_WHO}: expected quantize=None, 'int8' or 'bf16', got {quantize!r}")


class InferenceSession:
    """An ONNX model run by ONNX Runtime with its GRU nodes run by cygru.

    A drop-in for ``onnxruntime.InferenceSession`` for inference on the CPU: the same model
    argument, ``run(output_names, input_feed)``, ``get_inputs()`` and ``get_outputs()``.
    The graph is cut at its GRU nodes into parts (see the module's documentation and the
    Interoperability page): every GRU node that :func:`cygru.from_onnx` can read alone
    runs in cygru; every other node runs in ONNX Runtime. A GRU node cygru cannot run (its
    weights are computed or are graph inputs, activations other than sigmoid and tanh, a
    ``clip``, an input other than float32 or float64) stays in ONNX Runtime, and
    :attr:`onnxruntime_gru_nodes` says why.

    Parameters
    ----------
    model : str, os.PathLike, bytes or onnx.ModelProto
        A model file's path (its external data is read from its directory), a serialized
        model, or a model (only read, never modified).
    sess_options : onnxruntime.SessionOptions, optional
        Options for the ONNX Runtime parts (threads, graph optimisation level, ...). cygru's
        threads are set as usual (:func:`cygru.set_num_threads`).
    providers : list, optional
        ONNX Runtime's execution providers for its parts; ``["CPUExecutionProvider"]`` by
        default.
    quantize : {None, "int8", "bf16"}, optional
        Run the GRU nodes as :func:`cygru.quantize` modules of that precision instead of in
        the weights' own dtype.
    gru_nodes : iterable of str, optional
        The names of the GRU nodes to run in cygru; by default all that it can run. An empty
        list runs the whole model in ONNX Runtime (for comparisons).

    Attributes
    ----------
    gru_modules : dict
        The cygru module of each GRU node run in cygru, by node name (an unnamed node is
        named ``GRU_<index>`` after its position among the graph's nodes).
    onnxruntime_gru_nodes : dict
        The GRU nodes left in ONNX Runtime, by name, with the reason.
    parts : list of tuple
        The order of execution: ``("onnxruntime", number_of_nodes)`` or ``("cygru",
        node_name)`` per part.

    Raises
    ------
    ValueError
        If ``model`` is not a readable ONNX model (or not a valid graph: nodes out of
        order, two nodes of one name, a name defined twice; or, given as bytes or a
        ModelProto, its tensors name external data files that were not loaded),
        ``quantize`` is not one of the values above, or ``gru_nodes`` names a node that is
        not a GRU node of the graph.
    TypeError
        If ``model``, ``sess_options`` or ``providers`` is not one of the types above.

    Examples
    --------
    >>> import io, numpy as np, cygru
    >>> from cygru.onnxruntime import InferenceSession
    >>> gru = cygru.GRU(4, 8, num_layers=2)
    >>> model = gru.to_onnx(io.BytesIO(), h0="none", lengths="none")
    >>> session = InferenceSession(model)
    >>> session.parts
    [('cygru', 'gru_l0'), ('cygru', 'gru_l1'), ('onnxruntime', 1)]
    >>> x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
    >>> output, h_n = session.run(None, {"x": x})
    >>> bool(np.allclose(output, gru(x)[0], atol=1e-6))
    True
    """

    def __init__(
        self,
        model: Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, ModelProto],
        sess_options: Optional[Any] = None,
        providers: Optional[Sequence[Any]] = None,
        *,
        quantize: Optional[str] = None,
        gru_nodes: Optional[Iterable[str]] = None,
    ) -> None:
        _check_quantize(quantize)
        if isinstance(gru_nodes, str):
            raise TypeError(
                f"{_WHO}: expected gru_nodes as a list of node names, got the str {gru_nodes!r}"
            )
        if sess_options is not None and not isinstance(sess_options, _ort.SessionOptions):
            raise TypeError(
                f"{_WHO}: expected sess_options as an onnxruntime.SessionOptions or None, got "
                f"{type(sess_options).__name__}"
            )
        if providers is not None and (
            isinstance(providers, (str, bytes)) or not isinstance(providers, (list, tuple))
        ):
            raise TypeError(
                f"{_WHO}: expected providers as a list of provider names (or of (name, "
                f"options) tuples), e.g. ['CPUExecutionProvider'], got {providers!r}"
            )
        original = _load_model(model, who=_WHO)
        _check_no_external_data(original)
        model = onnx.ModelProto()
        model.CopyFrom(original)
        graph = model.graph
        _check_sorted(graph, {t.name for t in graph.initializer})
        self.quantize = quantize
        self._providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        self._sess_options = sess_options

        # name every GRU node, and give cygru the nodes' run-time inputs (initial_h,
        # sequence_lens) at run time even where the model stores them: the copy's nodes read
        # them through "" so that from_onnx builds a module of the weights alone
        names = {n.name for n in graph.node if n.name}
        grus = []
        for index, node in enumerate(graph.node):
            if _is_gru(node):
                if not node.name:
                    label, k = f"GRU_{index}", 0
                    while label in names:
                        k += 1
                        label = f"GRU_{index}_{k}"
                    node.name = label
                    names.add(label)
                grus.append(node)
        wanted = None if gru_nodes is None else list(gru_nodes)
        if wanted is not None:
            unknown = [n for n in wanted if n not in {g.name for g in grus}]
            if unknown:
                raise ValueError(
                    f"{_WHO}: gru_nodes names {unknown}, which are not GRU nodes of the model "
                    f"(its GRU nodes: {[g.name for g in grus]})"
                )
        types = _value_types(model)
        stripped = onnx.ModelProto()
        stripped.CopyFrom(model)
        folded, fixed = _fold_weights(stripped, types, self._providers)
        for node in stripped.graph.node:
            if _is_gru(node):
                del node.input[6:]
                for i in (4, 5):
                    if i < len(node.input):
                        node.input[i] = ""
                for i in (1, 2, 3):
                    if i < len(node.input) and node.input[i] in folded:
                        node.input[i] = folded[node.input[i]]

        self.gru_modules: Dict[str, Any] = {}
        self.onnxruntime_gru_nodes: Dict[str, str] = {}
        cygru_parts = {}
        for node in grus:
            if wanted is not None and node.name not in wanted:
                self.onnxruntime_gru_nodes[node.name] = "not in gru_nodes"
                continue
            reason, part = self._gru_part(stripped, node, types)
            if part is None:
                self.onnxruntime_gru_nodes[node.name] = reason
            else:
                cygru_parts[node.name] = part
                self.gru_modules[node.name] = part.module
                fixed.update(n for n in node.input[1:4] if n)
        self._plan(model, types, cygru_parts)
        for part in cygru_parts.values():
            fixed.update(part.fixed_reads)
        # stored tensors that are graph inputs too (ONNX IR >= 4): ONNX Runtime lets run()
        # override them; those the session has built into cygru's modules, or whose layout
        # nodes it skips, cannot be
        self._fixed = {name for name in self._overridable if name in fixed}

    # -- construction ------------------------------------------------------------------------

    def _gru_part(self, stripped, node, types):
        """(reason, None) if cygru cannot run the node, else (None, its _GruPart)."""
        x_type = types.get(node.input[0]) if node.input else None
        elem = x_type.tensor_type.elem_type if x_type is not None else None
        if elem not in _GRU_FLOATS:
            name = onnx.TensorProto.DataType.Name(elem) if elem else "unknown"
            return f"its input X is {name}, not float32 or float64", None
        try:
            module = from_onnx(stripped, node.name)
        except (ValueError, TypeError) as exc:
            return str(exc), None
        dtype = np.dtype(_GRU_FLOATS[elem])
        if module.dtype != dtype:
            return f"its weights are {module.dtype}, its input X {dtype}", None
        if self.quantize is not None:
            module = _quantize(module, self.quantize)
        layout = 1 if module.batch_first else 0
        return None, _GruPart(node, module, layout, dtype)

    def _plan(self, model, types, cygru_parts):
        graph = model.graph
        initializers = {t.name: t for t in graph.initializer}
        graph_inputs = [vi.name for vi in graph.input]
        self._inputs = [_arg(vi.type, vi.name) for vi in graph.input if vi.name not in initializers]
        self._input_types = {vi.name: vi.type for vi in graph.input if vi.name not in initializers}
        self._overridable = {
            vi.name: vi.type
            for vi in graph.input
            if vi.name in initializers and model.ir_version >= 4
        }
        self._outputs = [
            _arg(types[vo.name], vo.name) if vo.name in types else NodeArg(vo.name, None, None)
            for vo in graph.output
        ]
        outputs = {vo.name for vo in graph.output}
        merged = _merged_outputs(model, cygru_parts)
        for part in cygru_parts.values():
            part.merged = [t for t, owner in merged.items() if owner is part]

        # the nodes the outputs need: a tensor cygru's output stands for needs none of the
        # layout nodes that compute it from Y (nor Y itself)
        def reads_of(node):
            part = cygru_parts.get(node.name)
            if part is not None:
                return [n for n in (part.x, part.lengths, part.h0) if n]
            return _node_reads(node)

        needed_names = set(outputs)
        live = [False] * len(graph.node)
        for i in range(len(graph.node) - 1, -1, -1):
            node = graph.node[i]
            part = cygru_parts.get(node.name)
            made = [o for o in node.output if o and o in needed_names and o not in merged]
            if part is not None:
                made += [t for t in part.merged if t in needed_names]
            if made:
                live[i] = True
                needed_names.update(reads_of(node))
        for part in cygru_parts.values():
            part.needed = tuple(n for n in (part.y, part.y_h) if n in needed_names)

        # levels: a node runs after every cygru node it depends on
        producer_level: Dict[str, int] = {}
        levels = [0] * len(graph.node)
        for i, node in enumerate(graph.node):
            if not live[i]:
                continue
            level = max((producer_level.get(r, 0) for r in reads_of(node)), default=0)
            levels[i] = level
            part = cygru_parts.get(node.name)
            if part is not None:
                for out in (part.y, part.y_h, *part.merged):
                    if out:
                        producer_level[out] = level + 1
            else:
                for out in node.output:
                    if out and out not in merged:
                        producer_level[out] = level
        consumers: Dict[str, set] = {}
        for i, node in enumerate(graph.node):
            if live[i]:
                for r in reads_of(node):
                    consumers.setdefault(r, set()).add(i)
        top = max((lv for lv, alive in zip(levels, live) if alive), default=0)
        self._order: List[Any] = []
        self.parts: List[tuple] = []
        by_level: List[List[int]] = [[] for _ in range(top + 1)]  # one pass, not one a level
        for i, alive in enumerate(live):
            if alive:
                by_level[levels[i]].append(i)
        for level in range(top + 1):
            idx = [i for i in by_level[level] if graph.node[i].name not in cygru_parts]
            if idx:
                part = self._ort_part(
                    model,
                    [graph.node[i] for i in idx],
                    set(idx),
                    consumers,
                    outputs,
                    merged,
                    initializers,
                    graph_inputs,
                    types,
                )
                if part is not None:
                    self._order.append(part)
                    self.parts.append(("onnxruntime", len(part.nodes)))
            for i in by_level[level]:
                name = graph.node[i].name
                if name in cygru_parts:
                    self._order.append(cygru_parts[name])
                    self.parts.append(("cygru", name))
        # stored values that a cygru node or a graph output reads directly
        direct = set(outputs)
        for part in self._order:
            if isinstance(part, _GruPart):
                direct.update(n for n in (part.x, part.lengths, part.h0) if n)
        self._constants = {
            name: numpy_helper.to_array(initializers[name])
            for name in direct
            if name in initializers
        }

    def _ort_part(
        self, model, nodes, idx, consumers, outputs, merged, initializers, graph_inputs, types
    ):
        graph = model.graph
        produced = {o for n in nodes for o in n.output if o}
        reads = []
        for n in nodes:
            for r in _node_reads(n):
                if r not in produced and r not in reads:
                    reads.append(r)
        part_outputs = [
            o
            for n in nodes
            for o in n.output
            if o and o not in merged and (o in outputs or consumers.get(o, set()) - idx)
        ]
        if not part_outputs:
            return None
        part = _OrtPart(nodes)
        inits, inputs = [], []
        for r in reads:
            if r in initializers:
                inits.append(initializers[r])
                if r not in graph_inputs:
                    continue  # stored: part of the part's model
                part.optional.add(r)  # an input with a stored default, as in the model
            if r not in types:
                raise ValueError(
                    f"{_WHO}: cannot cut the graph before {r!r}: neither the model nor ONNX's "
                    "shape inference gives its element type"
                )
            declared = self._input_types.get(r) if r not in initializers else None
            # a graph input keeps its declared sizes, which run() and the whole model enforce
            # anyway: with them ONNX Runtime optimises the part as it would the model (a
            # MatMul + Add on the input becomes one Gemm, the Shape nodes of the initial
            # state fold to constants); a value computed elsewhere gets its type alone
            inputs.append(
                helper.make_value_info(
                    r, declared if declared is not None else _type_only(types[r])
                )
            )
            part.inputs.append(r)
        outs = []
        for o in part_outputs:
            if o not in types:
                raise ValueError(
                    f"{_WHO}: cannot cut the graph after {o!r}: neither the model nor ONNX's "
                    "shape inference gives its element type"
                )
            outs.append(helper.make_value_info(o, _type_only(types[o])))
        part.outputs = part_outputs
        sub = helper.make_graph(list(nodes), f"{graph.name}_part", inputs, outs, inits)
        piece = helper.make_model(
            sub,
            opset_imports=list(model.opset_import),
            ir_version=model.ir_version,
            functions=list(model.functions),
        )
        with _quiet_threads(self._sess_options) as options:
            part.session = _ort.InferenceSession(
                piece.SerializeToString(), options, providers=self._providers
            )
        return part

    # -- the session as an object -----------------------------------------------------------

    def __repr__(self) -> str:
        shown = [
            f"cygru {what!r}" if kind == "cygru" else f"onnxruntime {what} node(s)"
            for kind, what in self.parts[:8]
        ]
        if len(self.parts) > 8:
            shown.append(f"... {len(self.parts)} parts in all")
        extra = f", quantize={self.quantize!r}" if self.quantize else ""
        if self.onnxruntime_gru_nodes:
            extra += f", GRU nodes left to onnxruntime: {sorted(self.onnxruntime_gru_nodes)}"
        return f"<{_WHO} parts=[{', '.join(shown)}]{extra}>"

    def __reduce_ex__(self, protocol):
        raise TypeError(
            f"{_WHO} cannot be pickled or deep-copied: its ONNX Runtime parts "
            "(onnxruntime.InferenceSession objects) cannot be; build a session from the model "
            "where it is needed (a copy.copy shares the parts)"
        )

    def __copy__(self):
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    # -- running -----------------------------------------------------------------------------

    def get_inputs(self) -> List[NodeArg]:
        """The model's inputs (stored initializers excluded), as :class:`NodeArg`.

        Examples
        --------
        >>> import io, cygru
        >>> from cygru.onnxruntime import InferenceSession
        >>> model = cygru.GRU(4, 8).to_onnx(io.BytesIO(), h0="none", lengths="none")
        >>> [(a.name, a.type) for a in InferenceSession(model).get_inputs()]
        [('x', 'tensor(float)')]
        """
        return _fresh(self._inputs)

    def get_outputs(self) -> List[NodeArg]:
        """The model's outputs, as :class:`NodeArg`.

        Examples
        --------
        >>> import io, cygru
        >>> from cygru.onnxruntime import InferenceSession
        >>> model = cygru.GRU(4, 8).to_onnx(io.BytesIO(), h0="none", lengths="none")
        >>> [a.name for a in InferenceSession(model).get_outputs()]
        ['output', 'h_n']
        """
        return _fresh(self._outputs)

    def get_overridable_initializers(self) -> List[NodeArg]:
        """The stored tensors that are graph inputs too (ONNX IR version 4 and later), which
        ``run`` may be fed to override, as :class:`NodeArg` (as ONNX Runtime lists them).
        Those the session has built into a GRU node run in cygru cannot be overridden
        (``run`` says so).

        Examples
        --------
        >>> import io, cygru
        >>> from cygru.onnxruntime import InferenceSession
        >>> model = cygru.GRU(4, 8).to_onnx(io.BytesIO(), h0="none", lengths="none")
        >>> InferenceSession(model).get_overridable_initializers()
        []
        """
        return [_arg(t, name) for name, t in self._overridable.items()]

    def run(
        self,
        output_names: Optional[Sequence[str]],
        input_feed: Mapping[str, Any],
        run_options: Optional[Any] = None,
    ) -> List[np.ndarray]:
        """Run the model: the arrays of ``output_names`` (all outputs for None or an empty
        list, as in ONNX Runtime), in order.

        ``input_feed`` maps each input's name to a NumPy array of its declared element
        type (as ``onnxruntime.InferenceSession.run`` takes it). ``run_options``
        (``onnxruntime.RunOptions``) is passed to the ONNX Runtime parts.

        Raises
        ------
        ValueError
            For an unknown output name, a missing or unknown input, or an input of the
            wrong number of dimensions.
        TypeError
            For an input that is not an array of its declared element type, or
            ``run_options`` that is not an ``onnxruntime.RunOptions``.

        Examples
        --------
        >>> import io, numpy as np, cygru
        >>> from cygru.onnxruntime import InferenceSession
        >>> gru = cygru.GRU(4, 8)
        >>> session = InferenceSession(gru.to_onnx(io.BytesIO(), h0="none", lengths="none"))
        >>> x = np.ones((3, 1, 4), np.float32)
        >>> (h_n,) = session.run(["h_n"], {"x": x})
        >>> h_n.shape
        (1, 1, 8)
        """
        who = f"{_WHO}.run"
        known = [o.name for o in self._outputs]
        if output_names is None:
            output_names = known
        elif isinstance(output_names, str):
            raise TypeError(f"{who}: expected output_names as a list of names or None, got a str")
        else:
            output_names = list(output_names) or known  # [] is all, as in ONNX Runtime
            unknown = [n for n in output_names if n not in known]
            if unknown:
                raise ValueError(f"{who}: unknown output names {unknown}; the outputs are {known}")
        if run_options is not None and not isinstance(run_options, _ort.RunOptions):
            raise TypeError(
                f"{who}: expected run_options as an onnxruntime.RunOptions or None, got "
                f"{type(run_options).__name__}"
            )
        if not isinstance(input_feed, Mapping):
            raise TypeError(
                f"{who}: expected input_feed as a dict of input name to array, got "
                f"{type(input_feed).__name__}"
            )
        env: Dict[str, Any] = dict(self._constants)
        for name, value in input_feed.items():
            if name in self._fixed:
                raise ValueError(
                    f"{who}: {name!r} is a stored tensor that the model lets run() override, "
                    "but the session has built it into a GRU node run in cygru (or skips the "
                    "nodes that read it); build the session with that node left out of "
                    "gru_nodes to override it"
                )
            if name not in self._input_types and name not in self._overridable:
                raise ValueError(
                    f"{who}: {name!r} is not an input of the model; its inputs are "
                    f"{list(self._input_types)}"
                )
            env[name] = self._checked(who, name, value)
        missing = [n for n in self._input_types if n not in env]
        if missing:
            raise ValueError(
                f"{who}: missing inputs {missing} (the model's inputs: {list(self._input_types)})"
            )
        for part in self._order:
            part.run(env, run_options)
        # the caller owns every array returned: none shares memory with one of the session's
        # stored arrays, one of the caller's inputs, or another output (a GRU node's Y in
        # layout 1 is a view of the output that a merged tensor is bound to)
        shared = {_owner(v) for v in self._constants.values()}
        shared.update(_owner(v) for v in input_feed.values())
        results = []
        for name in output_names:
            value = env[name]
            if _owner(value) in shared:
                value = value.copy()
            shared.add(_owner(value))
            results.append(value)
        return results

    def _checked(self, who, name, value):
        declared = self._input_types.get(name) or self._overridable[name]
        kind = declared.WhichOneof("value")
        if kind == "optional_type":
            if value is None:  # an absent optional value: ONNX Runtime takes None
                return value
            declared = declared.optional_type.elem_type
            kind = declared.WhichOneof("value")
        if kind == "sequence_type":
            if not isinstance(value, (list, tuple)):
                raise TypeError(
                    f"{who}: expected input {name!r} as a list of arrays (its type is "
                    f"{_type_name(declared)}), got a {type(value).__name__}"
                )
            return value  # its arrays are checked by the ONNX Runtime part that reads it
        if kind != "tensor_type":
            return value  # a map: checked by the ONNX Runtime part that reads it
        tt = declared.tensor_type
        want = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        strings = want == np.dtype(object) and getattr(value, "dtype", None) is not None
        if strings and value.dtype.kind in "OU":  # ONNX Runtime takes str arrays too
            want = value.dtype
        if not isinstance(value, np.ndarray) or value.dtype != want:
            given = (
                f"an array of {value.dtype}"
                if isinstance(value, np.ndarray)
                else f"a {type(value).__name__}"
            )
            raise TypeError(f"{who}: expected input {name!r} as an array of {want}, got {given}")
        if tt.HasField("shape"):
            dims = tt.shape.dim
            if value.ndim != len(dims):
                raise ValueError(
                    f"{who}: expected input {name!r} with {len(dims)} dimensions, got shape "
                    f"{value.shape}"
                )
            for axis, d in enumerate(dims):
                if d.HasField("dim_value") and value.shape[axis] != d.dim_value:
                    raise ValueError(
                        f"{who}: input {name!r} has size {value.shape[axis]} on axis {axis}; "
                        f"the model declares {d.dim_value}"
                    )
        return value

"""Whole ONNX models: from_onnx on the stacks that PyTorch's two exporters and cygru's own
to_onnx write, on ONNX's own GRU node test cases (weights as graph inputs), the chains it
refuses; and to_onnx's sequence_lens input, all against ONNX Runtime (or onnx's reference
evaluator where ONNX Runtime has no kernel)."""

import copy
import io

import numpy as np
import pytest

from onnx_cases import case_names, node_cases, torch_export
from optional_deps import import_optional

import cygru
from cygru.interop import from_onnx, from_torch

onnx = import_optional("onnx")
ort = import_optional("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402  (after the skips)

F32 = 2e-6


def _session(model):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # other exporters' models (and opset 13/14 exports) may warn
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


# --------------------------------------------------------------------------------------------
# PyTorch's exporters
# --------------------------------------------------------------------------------------------


def _torch_export(net, x, dynamo, h0=None):
    torch = import_optional("torch")
    args = (torch.from_numpy(x),) + (() if h0 is None else (torch.from_numpy(h0),))
    names = ["x"] + ([] if h0 is None else ["h0"])
    return torch_export(net, args, names, ["output", "h_n"], dynamo)


# --------------------------------------------------------------------------------------------
# cygru's own to_onnx, with sequence_lens
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_to_onnx_sequence_lens_reproduce_lengths(num_layers, batch_first, mode):
    gru = cygru.GRU(
        3,
        4,
        num_layers=num_layers,
        batch_first=batch_first,
        bidirectional=mode == "bidirectional",
        reverse=mode == "reverse",
        seed=3,
    )
    rng = np.random.default_rng(4)
    T, B = 6, 4
    x = rng.standard_normal((B, T, 3) if batch_first else (T, B, 3)).astype(np.float32)
    lengths = np.array([6, 1, 4, 3], dtype=np.int32)
    model = gru.to_onnx(io.BytesIO())  # lengths="optional" by default
    session = _session(model)
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("x", "tensor(float)"),
        ("h0", "optional(tensor(float))"),
        ("sequence_lens", "optional(tensor(int32))"),
    ]
    ort_out, ort_h_n = session.run(None, {"x": x, "sequence_lens": lengths})
    out, h_n = gru(x, lengths=lengths)
    np.testing.assert_allclose(ort_out, out, rtol=0, atol=F32)
    np.testing.assert_allclose(ort_h_n, h_n, rtol=0, atol=F32)
    # without sequence_lens every sequence runs over all T steps
    ort_out, ort_h_n = session.run(None, {"x": x})
    out, h_n = gru(x)
    np.testing.assert_allclose(ort_out, out, rtol=0, atol=F32)
    np.testing.assert_allclose(ort_h_n, h_n, rtol=0, atol=F32)
    # and the model converts back to the module, whole
    back = from_onnx(model)
    assert back.batch_first is batch_first and back.num_layers == num_layers
    _same_weights(back, gru)


def test_to_onnx_lengths_modes():
    gru = cygru.GRU(2, 3, num_layers=2, bidirectional=True, seed=5)
    x = np.random.default_rng(6).standard_normal((4, 2, 2)).astype(np.float32)
    lengths = np.array([2, 4], dtype=np.int32)
    required = _session(gru.to_onnx(io.BytesIO(), lengths="required", h0="none"))
    assert [(i.name, i.type) for i in required.get_inputs()] == [
        ("x", "tensor(float)"),
        ("sequence_lens", "tensor(int32)"),
    ]
    np.testing.assert_allclose(
        required.run(None, {"x": x, "sequence_lens": lengths})[0],
        gru(x, lengths=lengths)[0],
        rtol=0,
        atol=F32,
    )
    for flag, expected in ((False, []), (True, ["sequence_lens"])):
        model = gru.to_onnx(io.BytesIO(), lengths=flag, h0="none")
        names = [i.name for i in model.graph.input]
        assert ("sequence_lens" in names) is flag
        assert [i.name for i in _session(model).get_inputs()][1:] == expected
    none = gru.to_onnx(io.BytesIO(), lengths="none")
    assert all(n.input[4:5] in ([], [""]) for n in none.graph.node if n.op_type == "GRU")
    for bad in ("yes", None, 1):
        with pytest.raises(ValueError, match="lengths must be"):
            gru.to_onnx(io.BytesIO(), lengths=bad)


# --------------------------------------------------------------------------------------------
# ONNX's own GRU node test cases: weights are graph inputs
# --------------------------------------------------------------------------------------------


_node_cases, _case_names = node_cases, case_names


@pytest.mark.parametrize("name", _case_names())
def test_onnx_node_test_cases(name):
    case = _node_cases()[name]
    graph = case.model.graph
    ((inputs, outputs),) = case.data_sets
    feeds = {vi.name: np.asarray(a) for vi, a in zip(graph.input, inputs)}
    expected = {vi.name: np.asarray(a) for vi, a in zip(graph.output, outputs)}
    node = graph.node[0]
    weights = {k: feeds[k] for k in ("W", "R", "B") if k in feeds}
    with pytest.raises(ValueError, match="is a graph input.*weights="):
        from_onnx(case.model)
    gru = from_onnx(case.model, weights=weights)
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    h0 = feeds.get("initial_h")
    if h0 is not None and layout:
        h0 = h0.transpose(1, 0, 2)
    lengths = feeds.get("sequence_lens")
    out, h_n = gru(feeds["X"], h0, lengths=lengths)
    outputs_named = dict(zip(node.output, ("Y", "Y_h")))
    for onnx_name, value in expected.items():
        if outputs_named.get(onnx_name) == "Y":
            Y = value.transpose(0, 2, 1, 3) if layout == 0 else value
            np.testing.assert_allclose(
                out, Y.reshape(Y.shape[0], Y.shape[1], -1), rtol=1e-5, atol=1e-6
            )
        else:
            np.testing.assert_allclose(
                h_n, value.transpose(1, 0, 2) if layout else value, rtol=1e-5, atol=1e-6
            )


def test_weights_argument_errors():
    case = _node_cases()["test_gru_with_initial_bias"]
    ((inputs, _),) = case.data_sets
    W, R, B = (np.asarray(a) for a in inputs[1:4])
    with pytest.raises(ValueError, match=r"\['Z'\].*no converted GRU node"):
        from_onnx(case.model, weights={"W": W, "R": R, "B": B, "Z": B})
    with pytest.raises(TypeError, match="dict"):
        from_onnx(case.model, weights=[W, R, B])
    with pytest.raises(ValueError, match="'B'.*weights="):
        from_onnx(case.model, weights={"W": W, "R": R})
    frozen = {k: v.copy() for k, v in (("W", W), ("R", R), ("B", B))}
    for v in frozen.values():
        v.flags.writeable = False
    gru = from_onnx(case.model, weights=frozen)
    np.testing.assert_array_equal(frozen["W"], W)  # read, not modified
    assert gru.hidden_size == R.shape[2]
    # a stored weight cannot be replaced through weights=
    stored = cygru.GRU(3, 4, seed=0).to_onnx(io.BytesIO(), h0="none", lengths="none")
    with pytest.raises(ValueError, match="no converted GRU node"):
        from_onnx(stored, weights={"W_l0": np.zeros((1, 12, 3), np.float32)})


# --------------------------------------------------------------------------------------------
# float64 and layout=1 stacks (onnx's reference evaluator: ONNX Runtime has neither)
# --------------------------------------------------------------------------------------------


def test_layout1_float64_stack_matches_reference_evaluator():
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(7)
    I, H, D = 3, 4, 2
    arrays, nodes = [], []
    src = "X"
    for k in range(2):
        in_size = I if k == 0 else D * H
        W = rng.standard_normal((D, 3 * H, in_size)) * 0.5
        R = rng.standard_normal((D, 3 * H, H)) * 0.5
        Bv = rng.standard_normal((D, 6 * H)) * 0.5
        arrays += [
            numpy_helper.from_array(W, f"W{k}"),
            numpy_helper.from_array(R, f"R{k}"),
            numpy_helper.from_array(Bv, f"B{k}"),
        ]
        nodes.append(
            helper.make_node(
                "GRU",
                [src, f"W{k}", f"R{k}", f"B{k}"],
                [f"Y{k}", f"Y_h{k}"],
                name=f"gru{k}",
                hidden_size=H,
                direction="bidirectional",
                layout=1,
                linear_before_reset=1,
            )
        )
        if k == 0:  # (B, T, D, H) -> (B, T, D*H)
            arrays.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "merge"))
            nodes.append(helper.make_node("Reshape", ["Y0", "merge"], ["X1"], name="merge0"))
            src = "X1"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["B", "T", I])],
        [
            helper.make_tensor_value_info("Y1", TensorProto.DOUBLE, None),
            helper.make_tensor_value_info("Y_h1", TensorProto.DOUBLE, None),
        ],
        initializer=arrays,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    gru = from_onnx(model)
    assert gru.batch_first and gru.num_layers == 2 and gru.dtype == np.float64
    x = rng.standard_normal((2, 5, I))
    Y, Y_h = ReferenceEvaluator(model).run(None, {"X": x})
    out, h_n = gru(x)
    np.testing.assert_allclose(out, Y.reshape(2, 5, -1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_n[2:], Y_h.transpose(1, 0, 2), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# graphs that are not a plain stack
# --------------------------------------------------------------------------------------------


def _two_layer(**kwargs):
    return cygru.GRU(3, 4, num_layers=2, seed=8, **kwargs).to_onnx(io.BytesIO(), h0="none")


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def test_refuses_a_node_between_layers():
    model = _two_layer()
    _node(model, "gru_l1").input[0] = "relu_out"
    model.graph.node.append(helper.make_node("Relu", ["out_l0"], ["relu_out"], name="relu"))
    with pytest.raises(
        ValueError,
        match=r"between GRU node 'gru_l0' and GRU node 'gru_l1', "
        r"node 'relu' \(Relu\)",
    ):
        from_onnx(model)
    assert from_onnx(model, node_name="gru_l1").input_size == 4  # one node still converts


def test_refuses_a_wrong_merge():
    model = _two_layer(bidirectional=True)
    perm = next(a for a in _node(model, "y_transpose_l0").attribute if a.name == "perm")
    perm.ints[:] = [0, 1, 2, 3]  # directions not moved next to the features
    with pytest.raises(ValueError, match=r"node 'y_merge_l0' \(Reshape\) does not pass on"):
        from_onnx(model)


def test_refuses_mismatched_layers_and_batch_first():
    model = _two_layer()
    for attr in _node(model, "gru_l1").attribute:
        if attr.name == "linear_before_reset":
            attr.i = 0
    with pytest.raises(ValueError, match="'gru_l1' has linear_before_reset 0 but"):
        from_onnx(model)
    model = cygru.GRU(3, 4, batch_first=True, seed=9).to_onnx(io.BytesIO())
    changed = copy.deepcopy(model)
    out = _node(changed, "output_to_batch_first")
    changed.graph.node.remove(out)
    _node(changed, "y_merge_l0").output[0] = "output"
    with pytest.raises(ValueError, match="batch first but its output 'output'.* time first"):
        from_onnx(changed)
    # the model as written converts, batch first
    assert from_onnx(model).batch_first is True


def test_refuses_parallel_gru_nodes():
    model = _two_layer()
    _node(model, "gru_l1").input[0] = "x"
    _node(model, "gru_l1").input[1] = "W_l0"
    _node(model, "gru_l1").input[2] = "R_l0"
    _node(model, "gru_l1").input[3] = "B_l0"
    with pytest.raises(
        ValueError,
        match=r"not one stack: node 'gru_l1' \(GRU\) does not read "
        r"the output of another GRU node",
    ):
        from_onnx(model)


@pytest.mark.parametrize("dynamo", [False, True])
def test_stack_after_other_layers_converts_alone(dynamo):
    """A Linear before the GRU stack is not part of the module: the stack converts (its sizes
    taken from the graph's shapes where the exporter wrote static ones) and, fed the Linear's
    output, matches the model."""
    torch = import_optional("torch")
    torch.manual_seed(2)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 5)
            self.gru = torch.nn.GRU(5, 4, num_layers=2, bidirectional=True)

        def forward(self, x):
            return self.gru(self.proj(x))

    net = Net()
    x = np.random.default_rng(3).standard_normal((6, 2, 3)).astype(np.float32)
    data = _torch_export(net, x, dynamo)
    gru = from_onnx(data)
    _same_weights(gru, from_torch(net.gru))
    projected = net.proj(torch.from_numpy(x)).detach().numpy()
    out, h_n = gru(projected)
    ort_out, ort_h_n = _session(data).run(None, {"x": x})
    np.testing.assert_allclose(out, ort_out, rtol=0, atol=F32)
    np.testing.assert_allclose(h_n, ort_h_n, rtol=0, atol=F32)


def test_huge_declared_sizes_are_not_allocated():
    """A graph may declare any static input size; the layout probe does not use sizes beyond
    its limit (it would allocate them), and still converts the stack."""
    model = cygru.GRU(3, 4, num_layers=2, batch_first=True, seed=10).to_onnx(io.BytesIO())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = 10**9
    dims[1].dim_value = 10**9
    gru = from_onnx(model)
    assert gru.num_layers == 2 and gru.batch_first is True


# --------------------------------------------------------------------------------------------
# layout nodes that pass on the merged Y at some sizes only
# --------------------------------------------------------------------------------------------
# from_onnx checks the nodes between two layers (and around the stack) on probe values of
# several sizes: the old check ran them at one size (T=3, B=2, or the sizes shape inference
# gave) and accepted each of these graphs, whose model differs from the module at others.


def _between(model, nodes, inits=()):
    """The to_onnx 2-layer model (time first, one direction, I=3, H=4) with ``nodes`` between
    its layers in place of Transpose + Reshape: they read 'Y_l0' and write 'out_l0'."""
    at = list(model.graph.node).index(_node(model, "y_transpose_l0"))
    for name in ("y_transpose_l0", "y_merge_l0"):
        model.graph.node.remove(_node(model, name))
    for node in reversed(nodes):  # in their place: the graph stays sorted
        model.graph.node.insert(at, node)
    model.graph.initializer.extend(inits)
    return model


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _refused(model, node):
    with pytest.raises(
        ValueError,
        match=r"^cygru\.from_onnx: the graph's GRU nodes are not a plain stack: between GRU node "
        rf"'gru_l0' and GRU node 'gru_l1', node '{node}' \([A-Za-z]+\) does not pass on the "
        r"output Y with its directions merged into the features",
    ):
        from_onnx(model)


@pytest.mark.parametrize("T, B", [(2, 3), (3, 2)])
def test_refuses_a_reshape_to_a_fixed_shape_between_layers(T, B):
    """Reshape to (T, B, 4): Y merged at one size only (the old probe's: T=2, B=3 from the
    graph input's (2, 3), T=3, B=2 where the input is not the stack's)."""
    model = _between(
        _two_layer(),
        [
            helper.make_node("Transpose", ["Y_l0"], ["tbdh"], perm=[0, 2, 1, 3], name="swap"),
            helper.make_node("Reshape", ["tbdh", "fixed"], ["out_l0"], name="fixed_reshape"),
        ],
        [_ints("fixed", [T, B, 4])],
    )
    _refused(model, "fixed_reshape")
    x = np.zeros((T, B, 3), np.float32)  # ONNX Runtime runs it at that size, and at no other
    _session(model).run(None, {"x": x})
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail, match="fixed_reshape"):
        _session(model).run(None, {"x": np.zeros((5, 2, 3), np.float32)})


def test_refuses_a_squeeze_without_axes_between_layers():
    """Squeeze without axes drops D (= 1) and also T or B where they are 1 (a streaming call
    has T = 1)."""
    model = _between(_two_layer(), [helper.make_node("Squeeze", ["Y_l0"], ["out_l0"], name="sq")])
    _refused(model, "sq")
    # the same Squeeze with its axis given is the merge: converted
    model = _between(
        _two_layer(),
        [helper.make_node("Squeeze", ["Y_l0", "axis1"], ["out_l0"], name="sq")],
        [_ints("axis1", [1])],
    )
    assert from_onnx(model).num_layers == 2


@pytest.mark.parametrize("k", [3, 5, 100])
def test_refuses_a_slice_of_the_first_steps_between_layers(k):
    """Slice the first k steps of the merged Y: all of Y while T <= k."""
    model = _between(
        _two_layer(),
        [
            helper.make_node("Transpose", ["Y_l0"], ["tbdh"], perm=[0, 2, 1, 3], name="swap"),
            helper.make_node("Reshape", ["tbdh", "feature_shape"], ["merged"], name="merge"),
            helper.make_node("Slice", ["merged", "zero", "k", "zero"], ["out_l0"], name="first"),
        ],
        [_ints("zero", [0]), _ints("k", [k])],
    )
    _refused(model, "first")
    # a Slice to the end ("to INT64_MAX", as exporters write) is the merge: converted
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "k"))
    model.graph.initializer.append(_ints("k", [np.iinfo(np.int64).max]))
    assert from_onnx(model).num_layers == 2


def _declared_static(where, static_input):
    """x -> Relu (not layout: sizes from shape inference) -> GRU -> Reshape to the fixed
    (7, 3, 4) -> GRU; Y_l0 declared (7, 1, 3, 4) as a graph output or a value_info."""
    model = _between(
        _two_layer(),
        [
            helper.make_node("Transpose", ["Y_l0"], ["tbdh"], perm=[0, 2, 1, 3], name="swap"),
            helper.make_node("Reshape", ["tbdh", "fixed"], ["out_l0"], name="fixed_reshape"),
        ],
        [_ints("fixed", [7, 3, 4])],
    )
    model.graph.node.insert(0, helper.make_node("Relu", ["x"], ["x_relu"], name="relu"))
    _node(model, "gru_l0").input[0] = "x_relu"
    declared = helper.make_tensor_value_info("Y_l0", TensorProto.FLOAT, [7, 1, 3, 4])
    (model.graph.output if where == "output" else model.graph.value_info).append(declared)
    if static_input:
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[0].dim_value, dims[1].dim_value = 7, 3
    return model


@pytest.mark.parametrize("where", ["output", "value_info"])
def test_a_declared_static_size_the_input_does_not_enforce_is_not_trusted(where):
    """Nothing checks the sizes a model declares for its outputs or intermediate tensors: with
    a dynamic graph input the Reshape to the declared sizes is refused; where the graph input
    fixes them (the model runs at no other size), it converts."""
    _refused(_declared_static(where, static_input=False), "fixed_reshape")
    gru = from_onnx(_declared_static(where, static_input=True))
    assert gru.num_layers == 2 and gru.batch_first is False


def test_an_input_side_that_swaps_at_some_sizes_only_is_not_the_modules():
    """Before the stack, x's axes swapped and then its first 3 steps sliced: the swap of x
    at T <= 3 only, so not the stack's layout: the module reads the GRU node's input (time
    first, as the node says), where the old check made it batch first."""
    model = cygru.GRU(3, 4, num_layers=2, batch_first=True, seed=11).to_onnx(io.BytesIO())
    assert from_onnx(model).batch_first is True
    _node(model, "x_to_time_major").output[0] = "x_swapped"
    model.graph.node.insert(
        1, helper.make_node("Slice", ["x_swapped", "zero", "k", "zero"], ["x_tm"], name="first")
    )
    model.graph.initializer.extend([_ints("zero", [0]), _ints("k", [3])])
    gru = from_onnx(model)
    assert gru.batch_first is False and gru.num_layers == 2


def test_an_output_that_is_batch_first_at_some_sizes_only_is_not_checked():
    """A graph output that is the sequence batch first at T <= 2 only (its first 2 steps) is
    another use of the sequence, not the module's output: a time-first stack converts (the
    old check, at T=2, took it for a batch-first output and refused the model)."""
    model = _two_layer()
    model.graph.node.extend(
        [
            helper.make_node("Transpose", ["output"], ["bt"], perm=[1, 0, 2], name="to_bt"),
            helper.make_node("Slice", ["bt", "zero", "k", "one"], ["head"], name="first"),
        ]
    )
    model.graph.initializer.extend([_ints("zero", [0]), _ints("k", [2]), _ints("one", [1])])
    model.graph.output.append(helper.make_tensor_value_info("head", TensorProto.FLOAT, None))
    gru = from_onnx(model)
    assert gru.batch_first is False and gru.num_layers == 2


@pytest.mark.parametrize(
    "dynamo, batch_first, bidirectional",
    [(False, False, True), (False, True, True), (False, True, False), (True, True, True)],
)
def test_pytorch_exports_with_dynamic_sizes_match_at_other_sizes(
    dynamo, batch_first, bidirectional
):
    """Exports with dynamic sizes pass the probe at all its sizes, and the module matches
    ONNX Runtime at sizes other than the exported ones (T = 1 among them)."""
    torch = import_optional("torch")
    torch.manual_seed(4)
    net = torch.nn.GRU(3, 4, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    x = torch.zeros((2, 5, 3) if batch_first else (5, 2, 3))
    if dynamo:  # T is specialized by the dynamo exporter: the batch axis is dynamic
        options = {"dynamic_shapes": ({0 if batch_first else 1: torch.export.Dim("b")},)}
    else:
        options = {"dynamic_axes": {"x": {0: "a", 1: "b"}, "output": {0: "a", 1: "b"}}}
    data = torch_export(net, (x,), ["x"], ["output", "h_n"], dynamo, **options)
    gru = from_onnx(data)
    _same_weights(gru, from_torch(net))
    assert gru.batch_first is batch_first
    rng = np.random.default_rng(5)
    for T, B in [(5, 1), (5, 3)] if dynamo else [(1, 2), (7, 3), (4, 1)]:
        shape = (B, T, 3) if batch_first else (T, B, 3)
        xv = rng.standard_normal(shape).astype(np.float32)
        out, h_n = gru(xv)
        ort_out, ort_h_n = _session(data).run(None, {"x": xv})
        np.testing.assert_allclose(out, ort_out, rtol=0, atol=F32)
        np.testing.assert_allclose(h_n, ort_h_n, rtol=0, atol=F32)


def test_a_large_constant_between_layers_is_refused_before_its_probe_value_is_made():
    """A Slice that ends at 10**7 steps would need a probe Y of T > 10**7 (320 MB here): the
    probe's budget refuses it before the value is made, in from_onnx; cygru's ONNX Runtime
    session leaves those nodes to ONNX Runtime."""
    import tracemalloc

    from cygru.onnxruntime import InferenceSession

    plain = cygru.GRU(3, 4, num_layers=2, seed=8).to_onnx(io.BytesIO(), h0="none", lengths="none")
    model = _between(
        plain,
        [
            helper.make_node("Transpose", ["Y_l0"], ["tbdh"], perm=[0, 2, 1, 3], name="swap"),
            helper.make_node("Reshape", ["tbdh", "feature_shape"], ["merged"], name="merge"),
            helper.make_node("Slice", ["merged", "zero", "k", "zero"], ["out_l0"], name="first"),
        ],
        [_ints("zero", [0]), _ints("k", [10**7])],
    )
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"^cygru\.from_onnx: .* more than 64 MiB"):
            from_onnx(model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
    x = np.random.default_rng(6).standard_normal((6, 2, 3)).astype(np.float32)
    got = InferenceSession(model.SerializeToString()).run(None, {"x": x})
    want = _session(model).run(None, {"x": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=F32)

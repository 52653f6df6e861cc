"""cygru.onnxruntime.InferenceSession: whole ONNX models run by ONNX Runtime with their GRU
nodes in cygru, against ONNX Runtime alone on the same model (and onnx's reference evaluator
where ONNX Runtime has no kernel): both PyTorch exporters, cygru's to_onnx, ONNX's own GRU
node test cases, a real trained model (g2p_en), the nodes cygru leaves to ONNX Runtime,
reduced precision, bad input, threads."""

import copy
import io
import threading

import numpy as np
import pytest

from onnx_cases import case_names, node_cases, torch_export
from optional_deps import import_optional

import cygru

onnx = import_optional("onnx")
ort = import_optional("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402  (after the skips)

from cygru.onnxruntime import InferenceSession, NodeArg  # noqa: E402

F32 = 2e-6


def _ort(model, threads=None):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _close(got, expected, atol=F32, rtol=1e-5):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def _torch_net(torch, num_layers, bidirectional, batch_first, h0_input, I=6, H=5):
    class Net(torch.nn.Module):
        """A Linear and tanh before the GRU stack, a head after it: the stack's input and
        its initial state are computed by the graph around it."""

        def __init__(self):
            super().__init__()
            self.pre = torch.nn.Linear(I, I)
            self.gru = torch.nn.GRU(
                I, H, num_layers, bidirectional=bidirectional, batch_first=batch_first
            )
            self.head = torch.nn.Linear(H * (2 if bidirectional else 1), 3)

        def forward(self, x, h0=None):
            y, h = self.gru(torch.tanh(self.pre(x)), h0)
            return self.head(y), 2 * h

    torch.manual_seed(num_layers + 2 * bidirectional + 4 * batch_first)
    return Net().eval()


def _export(torch, net, args, names, dynamo):
    return torch_export(net, args, names, ["y", "h"], dynamo)


# --------------------------------------------------------------------------------------------
# PyTorch's two exporters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize(
    "num_layers, bidirectional, batch_first, h0_input",
    [
        (1, False, False, False),
        (2, True, False, True),
        (3, False, True, False),
        (2, True, True, False),
    ],
)
def test_pytorch_exports_match_onnxruntime(
    dynamo, num_layers, bidirectional, batch_first, h0_input
):
    torch = import_optional("torch")
    net = _torch_net(torch, num_layers, bidirectional, batch_first, h0_input)
    T, B = 7, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, 6) if batch_first else (T, B, 6)).astype(np.float32)
    args, names, feed = (torch.from_numpy(x),), ["x"], {"x": x}
    if h0_input:
        h0 = rng.standard_normal((num_layers * (1 + bidirectional), B, 5)).astype(np.float32)
        args, names, feed = args + (torch.from_numpy(h0),), names + ["h0"], {"x": x, "h0": h0}
    data = _export(torch, net, args, names, dynamo)
    session = InferenceSession(data)
    # every GRU node runs in cygru, the layers back to back: the layout nodes between them
    # are skipped (cygru's output is what they compute)
    assert session.onnxruntime_gru_nodes == {}
    assert len(session.gru_modules) == num_layers
    kinds = [k for k, _ in session.parts]
    assert kinds.count("cygru") == num_layers
    expected = _ort(data).run(None, feed)
    _close(session.run(None, feed), expected)
    with torch.no_grad():
        y, h = net(*args)
    np.testing.assert_allclose(session.run(["y"], feed)[0], y.numpy(), rtol=1e-5, atol=1e-5)
    # one output alone, and the outputs in another order
    (h_only,) = session.run(["h"], feed)
    np.testing.assert_array_equal(h_only, session.run(None, feed)[1])
    got = session.run(["h", "y"], feed)
    _close(got, expected[::-1])


def test_layers_of_a_stack_run_back_to_back_without_copies():
    """PyTorch's Transpose + Reshape after a bidirectional layer compute cygru's own output:
    the next layer reads it directly, and Y in ONNX's (T, D, B, H) is never built."""
    torch = import_optional("torch")
    net = _torch_net(torch, 2, True, False, True)
    x = np.random.default_rng(1).standard_normal((4, 2, 6)).astype(np.float32)
    h0 = np.zeros((4, 2, 5), np.float32)
    data = _export(torch, net, (torch.from_numpy(x), torch.from_numpy(h0)), ["x", "h0"], False)
    session = InferenceSession(data)
    assert [k for k, _ in session.parts] == ["onnxruntime", "cygru", "cygru", "onnxruntime"]
    first = session._order[1]
    assert first.merged and first.y not in first.needed
    _close(session.run(None, {"x": x, "h0": h0}), _ort(data).run(None, {"x": x, "h0": h0}))


def test_y_needed_elsewhere_is_built_in_onnx_layout():
    """A model that also returns a GRU node's raw Y (T, D, B, H) gets it in ONNX's layout."""
    gru = cygru.GRU(3, 4, bidirectional=True, seed=2)
    model = gru.to_onnx(io.BytesIO(), h0="none", lengths="none")
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    model.graph.output.append(
        helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)
    )
    session = InferenceSession(model)
    x = np.random.default_rng(3).standard_normal((5, 2, 3)).astype(np.float32)
    got = session.run(None, {"x": x})
    expected = _ort(model).run(None, {"x": x})
    _close(got, expected)
    assert got[-1].shape == (5, 2, 2, 4)


# --------------------------------------------------------------------------------------------
# cygru's to_onnx: sequence_lens, initial states, layouts, float64
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_to_onnx_lengths_and_h0(mode, batch_first):
    gru = cygru.GRU(
        3,
        4,
        num_layers=2,
        batch_first=batch_first,
        bidirectional=mode == "bidirectional",
        reverse=mode == "reverse",
        seed=5,
    )
    model = gru.to_onnx(io.BytesIO(), h0="required", lengths="required")
    session = InferenceSession(model)
    assert session.onnxruntime_gru_nodes == {}
    rng = np.random.default_rng(4)
    T, B, D = 6, 4, 1 + (mode == "bidirectional")
    x = rng.standard_normal((B, T, 3) if batch_first else (T, B, 3)).astype(np.float32)
    h0 = rng.standard_normal((2 * D, B, 4)).astype(np.float32)
    lengths = np.array([6, 2, 5, 1], np.int32)
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, (x, h0, lengths)))
    got = session.run(None, feed)
    out, h_n = gru(x, h0, lengths=lengths)
    np.testing.assert_array_equal(got[0], out)  # the same engine on the same arrays
    np.testing.assert_array_equal(got[1], h_n)
    if not batch_first or mode == "forward":  # what ONNX Runtime's kernel runs
        _close(got, _ort(model).run(None, feed))


def test_float64_model_against_the_reference_evaluator():
    """A float64 bidirectional node with sequence_lens (ONNX Runtime's CPU GRU has no float64
    kernel: onnx's reference evaluator is the oracle), and the same node in cygru float64."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(5)
    I, H = 3, 4
    W = rng.standard_normal((2, 3 * H, I)) * 0.5
    R = rng.standard_normal((2, 3 * H, H)) * 0.5
    B = rng.standard_normal((2, 6 * H)) * 0.1
    node = helper.make_node(
        "GRU",
        ["X", "W", "R", "B", "lens", "h0"],
        ["Y", "Y_h"],
        hidden_size=H,
        direction="bidirectional",
        linear_before_reset=1,
        name="g",
    )
    graph = helper.make_graph(
        [node],
        "m",
        [
            helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["T", "B", I]),
            helper.make_tensor_value_info("lens", TensorProto.INT32, ["B"]),
            helper.make_tensor_value_info("h0", TensorProto.DOUBLE, [2, "B", H]),
        ],
        [
            helper.make_tensor_value_info("Y", TensorProto.DOUBLE, None),
            helper.make_tensor_value_info("Y_h", TensorProto.DOUBLE, None),
        ],
        [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = InferenceSession(model)
    assert session.gru_modules["g"].dtype == np.float64
    feed = {
        "X": rng.standard_normal((5, 3, I)),
        "lens": np.array([5, 5, 5], np.int32),  # the reference evaluator ignores sequence_lens
        "h0": rng.standard_normal((2, 3, H)),
    }
    got = session.run(None, feed)
    expected = ReferenceEvaluator(model).run(None, feed)
    for g, e in zip(got, expected):
        assert g.dtype == np.float64 and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    # with lengths: cygru's float64 module on the same arrays, in ONNX's layouts
    feed["lens"] = np.array([5, 3, 1], np.int32)
    Y, Y_h = session.run(None, feed)
    out, h_n = session.gru_modules["g"](feed["X"], feed["h0"], lengths=feed["lens"])
    np.testing.assert_array_equal(Y, out.reshape(5, 3, 2, H).transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(Y_h, h_n)


def test_stored_initial_state_and_lengths_are_used():
    """initial_h and sequence_lens stored in the model (which from_onnx refuses to fold into
    a module) are fed to cygru at run time."""
    gru = cygru.GRU(3, 4, seed=7)
    model = gru.to_onnx(io.BytesIO(), h0="required", lengths="required")
    rng = np.random.default_rng(6)
    h0 = rng.standard_normal((1, 2, 4)).astype(np.float32)
    lengths = np.array([4, 2], np.int32)
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    stored = copy.deepcopy(model)
    names = [i.name for i in stored.graph.input]
    h0_name, len_name = names[1], names[2]
    stored.graph.initializer.extend(
        [numpy_helper.from_array(h0, h0_name), numpy_helper.from_array(lengths, len_name)]
    )
    del stored.graph.input[1:]
    session = InferenceSession(stored)
    assert list(session.gru_modules) == [node.name]
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    got = session.run(None, {names[0]: x})
    out, h_n = gru(x, h0, lengths=lengths)
    np.testing.assert_array_equal(got[0], out)
    np.testing.assert_array_equal(got[1], h_n)
    _close(got, _ort(stored).run(None, {names[0]: x}))


# --------------------------------------------------------------------------------------------
# ONNX's own GRU node test cases, their weights stored in the model
# --------------------------------------------------------------------------------------------


_node_cases, _case_names = node_cases, case_names


@pytest.mark.parametrize("name", _case_names())
def test_onnx_node_test_cases(name):
    case = _node_cases()[name]
    model = copy.deepcopy(case.model)
    graph = model.graph
    ((inputs, outputs),) = case.data_sets
    feeds = {vi.name: np.asarray(a) for vi, a in zip(graph.input, inputs)}
    node = graph.node[0]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    if layout == 0:  # ONNX Runtime has no kernel for layout 1
        # as given (weights are graph inputs): the node stays in ONNX Runtime, with the reason
        left = InferenceSession(model)
        assert left.gru_modules == {}
        (reason,) = left.onnxruntime_gru_nodes.values()
        assert "graph input" in reason
        for g, e in zip(left.run(None, feeds), outputs):
            np.testing.assert_allclose(g, np.asarray(e), rtol=1e-5, atol=1e-6)
    # weights stored: the node runs in cygru (layout 1 too, which ONNX Runtime cannot run)
    for k in ("W", "R", "B"):
        if k in feeds:
            graph.initializer.append(numpy_helper.from_array(feeds.pop(k), k))
    keep = [vi for vi in graph.input if vi.name in feeds]
    del graph.input[:]
    graph.input.extend(keep)
    session = InferenceSession(model)
    assert list(session.gru_modules) == [node.name or "GRU_0"]
    got = session.run(None, feeds)
    for g, e in zip(got, outputs):
        np.testing.assert_allclose(g, np.asarray(e), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# A real trained model: g2p_en (its weights in its wheel), exported by both exporters
# --------------------------------------------------------------------------------------------


_G2P = {}


def _g2p(dynamo):
    import importlib.util
    import sys

    import_optional("torch")
    if importlib.util.find_spec("g2p_en") is None:
        pytest.skip("g2p-en is not installed (it is in the test extra)")
    if dynamo:
        import_optional("onnxscript")
    if dynamo not in _G2P:
        from pathlib import Path

        bench = str(Path(__file__).resolve().parent.parent / "benchmarks")
        if bench not in sys.path:
            sys.path.insert(0, bench)
        import real_models

        model = _G2P.get("model") or real_models.load_g2p_en()
        _G2P["model"] = model
        _G2P[dynamo] = real_models.g2p_en_onnx(dynamo, model)
    return _G2P[dynamo]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_real_model_g2p_en(dynamo):
    """g2p_en's encoder-decoder: the encoder's final state is the decoder's initial state
    (computed upstream of the decoder's GRU node); the dynamo exporter leaves the gate
    reordering of the weights as nodes, which the session computes once."""
    real = _g2p(dynamo)
    session = InferenceSession(real["model"])
    assert session.onnxruntime_gru_nodes == {}
    assert len(session.gru_modules) == 2
    (logits,) = session.run(None, real["feeds"])
    (expected,) = _ort(real["model"]).run(None, real["feeds"])
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=5e-5)
    decided = [
        tuple(int(p) for p in logits[b, : len(e)].argmax(-1))
        for b, e in enumerate(real["expected"])
    ]
    assert decided == real["expected"]  # the package's own phonemes, word for word
    # int8 and bf16: the same model in reduced precision
    for precision in ("int8", "bf16"):
        small = InferenceSession(real["model"], quantize=precision)
        assert all(isinstance(m, cygru.QuantizedGRU) for m in small.gru_modules.values())
        (approx,) = small.run(None, real["feeds"])
        agree = np.mean(approx.argmax(-1) == expected.argmax(-1))
        assert agree > 0.97, (precision, agree)


# --------------------------------------------------------------------------------------------
# Nodes left to ONNX Runtime, gru_nodes, quantize
# --------------------------------------------------------------------------------------------


def _gru_model(attrs=None, I=3, H=4, seed=0, name="g"):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((1, 3 * H, I)).astype(np.float32) * 0.5
    R = rng.standard_normal((1, 3 * H, H)).astype(np.float32) * 0.5
    B = rng.standard_normal((1, 6 * H)).astype(np.float32) * 0.1
    node = helper.make_node(
        "GRU", ["x", "W", "R", "B"], ["Y", "Y_h"], hidden_size=H, name=name, **(attrs or {})
    )
    graph = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["x"]), node, helper.make_node("Neg", ["Y_h"], ["out"])],
        "m",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize(
    "attrs, why",
    [
        ({"clip": 1.0}, "clip"),
        ({"activations": ["Relu", "Tanh"]}, "activation"),
    ],
)
def test_nodes_cygru_cannot_run_stay_in_onnxruntime(attrs, why):
    model = _gru_model(attrs)
    session = InferenceSession(model)
    assert session.gru_modules == {}
    assert why in session.onnxruntime_gru_nodes["g"]
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        session.run(None, {"X": x})[0], _ort(model).run(None, {"X": x})[0]
    )


def test_gru_nodes_selects_and_empty_runs_onnxruntime_alone():
    model = _gru_model()
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(np.float32)
    alone = InferenceSession(model, gru_nodes=[])
    assert alone.gru_modules == {} and alone.onnxruntime_gru_nodes == {"g": "not in gru_nodes"}
    assert alone.parts == [("onnxruntime", 3)]
    np.testing.assert_array_equal(alone.run(None, {"X": x})[0], _ort(model).run(None, {"X": x})[0])
    chosen = InferenceSession(model, gru_nodes=["g"])
    assert list(chosen.gru_modules) == ["g"]
    np.testing.assert_allclose(
        chosen.run(None, {"X": x})[0], _ort(model).run(None, {"X": x})[0], atol=F32
    )
    with pytest.raises(ValueError, match=r"gru_nodes names \['nope'\].*its GRU nodes: \['g'\]"):
        InferenceSession(model, gru_nodes=["nope"])
    with pytest.raises(TypeError, match="list of node names"):
        InferenceSession(model, gru_nodes="g")


def test_unnamed_gru_node_is_named_by_position():
    model = _gru_model(name="")
    session = InferenceSession(model)
    assert list(session.gru_modules) == ["GRU_1"]
    x = np.random.default_rng(3).standard_normal((4, 1, 3)).astype(np.float32)
    np.testing.assert_allclose(
        session.run(None, {"X": x})[0], _ort(model).run(None, {"X": x})[0], atol=F32
    )
    assert model.graph.node[1].name == ""  # the caller's model is not modified


@pytest.mark.parametrize("precision, tol", [("int8", 0.05), ("bf16", 0.02)])
def test_quantize(precision, tol):
    gru = cygru.GRU(16, 32, num_layers=2, seed=8)
    model = gru.to_onnx(io.BytesIO(), h0="none", lengths="none")
    session = InferenceSession(model, quantize=precision)
    assert all(m.precision == precision for m in session.gru_modules.values())
    x = np.random.default_rng(7).standard_normal((6, 3, 16)).astype(np.float32)
    out, h_n = session.run(None, {"x": x})
    ref = cygru.quantize(gru, precision)(x)
    np.testing.assert_array_equal(out, ref[0])  # the quantized module, layer by layer
    np.testing.assert_allclose(out, gru(x)[0], atol=tol)
    with pytest.raises(ValueError, match="quantize=None, 'int8' or 'bf16', got 'fp8'"):
        InferenceSession(model, quantize="fp8")


# --------------------------------------------------------------------------------------------
# Bad input, caller's arrays, threads
# --------------------------------------------------------------------------------------------


def _small():
    gru = cygru.GRU(3, 4, seed=9)
    return gru, gru.to_onnx(io.BytesIO(), h0="none", lengths="none")


def test_bad_models():
    with pytest.raises(ValueError, match="InferenceSession: .*not a readable ONNX model"):
        InferenceSession(b"not a model")
    with pytest.raises(TypeError, match="InferenceSession: expected a path"):
        InferenceSession(42)
    with pytest.raises(FileNotFoundError):
        InferenceSession("/nonexistent/model.onnx")


def test_bad_feeds_and_outputs():
    _, model = _small()
    session = InferenceSession(model)
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(
        TypeError, match=r"expected input 'x' as an array of float32, got an array of float64"
    ):
        session.run(None, {"x": x.astype(np.float64)})
    with pytest.raises(TypeError, match="got a list"):
        session.run(None, {"x": x.tolist()})
    with pytest.raises(ValueError, match="expected input 'x' with 3 dimensions, got shape"):
        session.run(None, {"x": x[0]})
    with pytest.raises(ValueError, match="size 5 on axis 2; the model declares 3"):
        session.run(None, {"x": np.zeros((2, 1, 5), np.float32)})
    with pytest.raises(ValueError, match=r"missing inputs \['x'\]"):
        session.run(None, {})
    with pytest.raises(ValueError, match="'y' is not an input of the model"):
        session.run(None, {"x": x, "y": x})
    with pytest.raises(ValueError, match=r"unknown output names \['nope'\]"):
        session.run(["nope"], {"x": x})
    with pytest.raises(TypeError, match="output_names as a list"):
        session.run("output", {"x": x})
    with pytest.raises(TypeError, match="input_feed as a dict"):
        session.run(None, [x])


def test_inputs_outputs_and_callers_arrays():
    gru, model = _small()
    session = InferenceSession(model)
    assert session.get_inputs() == [NodeArg("x", "tensor(float)", ["seq_len", "batch", 3])]
    assert [o.name for o in session.get_outputs()] == ["output", "h_n"]
    x = np.random.default_rng(8).standard_normal((3, 2, 3)).astype(np.float32)
    x.flags.writeable = False  # read-only input accepted, never written
    before = x.copy()
    out, h_n = session.run(None, {"x": x})
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(out, gru(before)[0])
    out[:] = 0  # the caller owns what run returns: the next run is unaffected
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], gru(before)[0])


def test_concurrent_runs_from_threads():
    torch = import_optional("torch")
    net = _torch_net(torch, 2, True, False, False)
    x0 = np.zeros((6, 2, 6), np.float32)
    data = _export(torch, net, (torch.from_numpy(x0),), ["x"], False)
    session = InferenceSession(data)
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((6, 2, 6)).astype(np.float32) for _ in range(4)]
    expected = [session.run(None, {"x": x}) for x in xs]
    errors, results = [], {}

    def work(k):
        try:
            for _ in range(10):
                results[k] = session.run(None, {"x": xs[k]})
                for g, e in zip(results[k], expected[k]):
                    np.testing.assert_array_equal(g, e)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_outputs_never_alias_inputs_constants_or_each_other():
    """A graph output that is a graph input, a stored tensor, or the same cygru output twice
    comes back as an array of its own (as ONNX Runtime returns them)."""
    gru = cygru.GRU(3, 4, seed=10)
    model = gru.to_onnx(io.BytesIO(), h0="none", lengths="none")
    graph = model.graph
    stored = graph.initializer[-1].name
    graph.output.extend(
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
            helper.make_tensor_value_info(stored, graph.initializer[-1].data_type, None),
        ]
    )
    session = InferenceSession(model)
    x = np.ones((2, 1, 3), np.float32)
    out, h_n, x_out, constant = session.run(None, {"x": x})
    assert not np.shares_memory(x_out, x)
    kept = constant.copy()
    constant[...] = 0
    np.testing.assert_array_equal(session.run([stored], {"x": x})[0], kept)
    out2, again = session.run(["output", "output"], {"x": x})
    assert not np.shares_memory(out2, again)
    np.testing.assert_array_equal(out2, again)


def test_quantized_float64_node_keeps_its_dtype():
    rng = np.random.default_rng(11)
    W, R = rng.standard_normal((1, 12, 3)) * 0.5, rng.standard_normal((1, 12, 4)) * 0.5
    graph = helper.make_graph(
        [
            helper.make_node("GRU", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=4, name="g"),
            helper.make_node("Neg", ["Y_h"], ["out"]),
        ],
        "m",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, ["T", "B", 3])],
        [helper.make_tensor_value_info("out", TensorProto.DOUBLE, None)],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    x = rng.standard_normal((4, 2, 3))
    exact = InferenceSession(model).run(None, {"X": x})[0]
    (approx,) = InferenceSession(model, quantize="bf16").run(None, {"X": x})
    assert approx.dtype == np.float64
    np.testing.assert_allclose(approx, exact, atol=0.02)


def test_subgraph_reading_a_gru_output_from_the_outer_scope():
    """An If node whose branches read the GRU's Y_h from the graph around them: the part
    that holds it is fed Y_h."""
    model = _gru_model()
    graph = model.graph
    then_g = helper.make_graph(
        [helper.make_node("Neg", ["Y_h"], ["r1"])],
        "then",
        [],
        [helper.make_tensor_value_info("r1", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Abs", ["Y_h"], ["r2"])],
        "else",
        [],
        [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)],
    )
    graph.node.extend(
        [
            helper.make_node("ReduceSum", ["X"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["cond"]),
            helper.make_node("If", ["cond"], ["picked"], then_branch=then_g, else_branch=else_g),
        ]
    )
    graph.initializer.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
    graph.output.append(helper.make_tensor_value_info("picked", TensorProto.FLOAT, None))
    session = InferenceSession(model)
    assert list(session.gru_modules) == ["g"]
    for sign in (1, -1):
        x = sign * np.abs(np.random.default_rng(12).standard_normal((3, 2, 3))).astype(np.float32)
        _close(session.run(None, {"X": x}), _ort(model).run(None, {"X": x}))


def test_unsorted_graph_is_refused():
    model = _gru_model()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[::-1])
    with pytest.raises(ValueError, match="not in topological order: node '' \\(Neg\\) reads 'Y_h'"):
        InferenceSession(model)


def _spinning(session):
    return [
        p.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        for p in session._order
        if hasattr(p, "session")
    ]


def test_parts_threads_do_not_spin_unless_asked():
    """ONNX Runtime's workers spin after each run by default, taking cores from the cygru
    call that follows: the parts turn spinning off, unless the caller's options set it, and
    the caller's options object is left as ONNX Runtime's default."""
    torch = import_optional("torch")
    net = _torch_net(torch, 1, False, False, False)
    data = _export(torch, net, (torch.zeros(3, 2, 6),), ["x"], False)
    assert set(_spinning(InferenceSession(data))) == {"0"}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    assert set(_spinning(InferenceSession(data, opts))) == {"0"}
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"  # default
    assert set(_spinning(InferenceSession(data, opts))) == {"0"}  # the same object again
    asked = ort.SessionOptions()
    asked.add_session_config_entry("session.intra_op.allow_spinning", "1")
    assert set(_spinning(InferenceSession(data, asked))) == {"1"}
    parts = [p.session for p in InferenceSession(data, opts)._order if hasattr(p, "session")]
    assert all(p.get_session_options().intra_op_num_threads == 2 for p in parts)


def test_frameworks_benchmark_runs(tmp_path):
    """benchmarks/frameworks.py --quick (which runs onnx_model.py's and torch_module.py's
    cases) writes every row and marks every target PASS or MISS; no timing is asserted."""
    import json
    import os
    import pathlib
    import subprocess
    import sys

    import_optional("torch")
    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "frameworks.py"
    where = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [where, env.get("PYTHONPATH")]))
    out = tmp_path / "rows.json"
    res = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    rows = json.loads(out.read_text())["rows"]
    cases = {r["case"] for r in rows}
    assert {"onnx medium", "onnx deep-bi", "onnx step", "medium torch"} <= cases
    for case in ("onnx medium", "onnx deep-bi"):
        for threads in (1, 2):
            got = {r["what"] for r in rows if r["case"] == case and r["threads"] == threads}
            assert {"onnxruntime", "cygru float32", "cygru int8", "cygru bf16"} <= got
    targets = [r for r in rows if r["target"]]
    assert len(targets) >= 10 and all(r["result"] in ("PASS", "MISS") for r in targets)
    assert all(r["value"] > 0 for r in rows if r["unit"] != "us" or "cost" not in r["what"])
    assert "| case | threads | what | value | target | result |" in res.stdout


# --------------------------------------------------------------------------------------------
# Adversarial cases: what ONNX Runtime does with edge inputs, invalid graphs, options, objects
# --------------------------------------------------------------------------------------------


def _node_model(direction="forward", layout=0, I=3, H=4, seed=0, extra=(), outputs=None):
    """One GRU node ("g") reading X, sequence_lens and initial_h from the graph inputs, its
    weights stored, plus ``extra`` nodes; the graph returns ``outputs`` (Y, Y_h by default)."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    W = (rng.standard_normal((D, 3 * H, I)) * 0.5).astype(np.float32)
    R = (rng.standard_normal((D, 3 * H, H)) * 0.5).astype(np.float32)
    B = (rng.standard_normal((D, 6 * H)) * 0.1).astype(np.float32)
    node = helper.make_node(
        "GRU",
        ["X", "W", "R", "B", "lens", "h0"],
        ["Y", "Y_h"],
        hidden_size=H,
        direction=direction,
        layout=layout,
        name="g",
    )
    graph = helper.make_graph(
        [node, *extra],
        "m",
        [
            helper.make_tensor_value_info(
                "X", TensorProto.FLOAT, ["T", "B", I] if layout == 0 else ["B", "T", I]
            ),
            helper.make_tensor_value_info("lens", TensorProto.INT32, ["B"]),
            helper.make_tensor_value_info(
                "h0", TensorProto.FLOAT, [D, "B", H] if layout == 0 else ["B", D, H]
            ),
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in (outputs or ["Y", "Y_h"])
        ],
        [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lens", [[3, 0, 2], [0, 0, 0], [5, 0, 5]])
def test_adv_zero_lengths_give_onnxruntimes_zeros(direction, lens):
    """A row of length 0 (which cygru's modules refuse) gets ONNX Runtime's answer: Y and
    Y_h zeros (not initial_h); the other rows run in cygru."""
    model = _node_model(direction)
    session = InferenceSession(model)
    assert list(session.gru_modules) == ["g"]
    rng = np.random.default_rng(20)
    D = 2 if direction == "bidirectional" else 1
    feed = {
        "X": rng.standard_normal((5, 3, 3)).astype(np.float32),
        "lens": np.array(lens, np.int32),
        "h0": rng.standard_normal((D, 3, 4)).astype(np.float32),
    }
    got = session.run(None, feed)
    _close(got, _ort(model).run(None, feed))
    assert not got[1][:, np.array(lens) == 0].any()


def test_adv_zero_time_steps_with_lengths_match_onnxruntime():
    model = _node_model("bidirectional")
    feed = {
        "X": np.zeros((0, 3, 3), np.float32),
        "lens": np.zeros(3, np.int32),
        "h0": np.ones((2, 3, 4), np.float32),
    }
    got = InferenceSession(model).run(None, feed)
    _close(got, _ort(model).run(None, feed))
    assert got[0].shape == (0, 2, 3, 4) and not got[1].any()


def test_adv_zero_lengths_in_layout_1_and_through_a_stack():
    """Layout 1 (which ONNX Runtime cannot run) equals layout 0 on the same rows; a
    2-layer stack whose layers are bound back to back equals ONNX Runtime with zero rows."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    lens = np.array([4, 0, 5], np.int32)
    Y0, Yh0 = InferenceSession(_node_model("bidirectional")).run(
        None, {"X": x, "lens": lens, "h0": h0}
    )
    Y1, Yh1 = InferenceSession(_node_model("bidirectional", layout=1)).run(
        None, {"X": x.transpose(1, 0, 2).copy(), "lens": lens, "h0": h0.transpose(1, 0, 2).copy()}
    )
    np.testing.assert_array_equal(Y1, Y0.transpose(2, 0, 1, 3))
    np.testing.assert_array_equal(Yh1, Yh0.transpose(1, 0, 2))
    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, seed=22)
    model = gru.to_onnx(io.BytesIO(), h0="none", lengths="required")
    session = InferenceSession(model)
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, (x, lens)))
    got = session.run(None, feed)
    _close(got, _ort(model).run(None, feed))
    # quantized modules too: the zero rows stay exact zeros
    (q_out, q_h) = InferenceSession(model, quantize="bf16").run(None, feed)
    assert not q_out[:, 1].any() and not q_h[:, 1].any()
    np.testing.assert_allclose(q_out, got[0], atol=0.02)


def test_adv_zero_time_steps_without_lengths_and_empty_batches():
    """T = 0 without sequence_lens (ONNX Runtime's kernel aborts the process on it) is a
    clear error; an empty batch gives empty outputs."""
    _, model = _small()
    session = InferenceSession(model)
    with pytest.raises(ValueError, match=r"GRU node .*has no time steps \(shape \(0, 2, 3\)\)"):
        session.run(None, {"x": np.zeros((0, 2, 3), np.float32)})
    out, h_n = session.run(None, {"x": np.zeros((4, 0, 3), np.float32)})
    assert out.shape == (4, 0, 4) and h_n.shape == (1, 0, 4)


def test_adv_bad_initial_state_and_lengths_name_the_node():
    """Shapes the graph declares with named sizes only are checked by the GRU part, in
    ONNX's terms (initial_h (B, D, H) in layout 1), naming the node, as ONNX Runtime does."""
    model = _node_model("bidirectional")
    session = InferenceSession(model)
    x = np.zeros((5, 3, 3), np.float32)
    good = {"X": x, "lens": np.array([5, 1, 0], np.int32), "h0": np.zeros((2, 3, 4), np.float32)}
    session.run(None, good)
    with pytest.raises(ValueError, match=r"GRU node 'g' expected its initial_h 'h0' of shape"):
        session.run(None, {**good, "h0": np.zeros((2, 2, 4), np.float32)})
    with pytest.raises(ValueError, match=r"node 'g' expected its sequence_lens of shape \(3,\)"):
        session.run(None, {**good, "lens": np.array([5, 5], np.int32)})
    for bad in (6, -1):
        with pytest.raises(ValueError, match=rf"must be in \[0, 5\] .*got {bad}"):
            session.run(None, {**good, "lens": np.array([5, bad, 1], np.int32)})
    layout1 = InferenceSession(_node_model("bidirectional", layout=1))
    with pytest.raises(ValueError, match=r"of shape \(3, 2, 4\) \(\(B, D, H\)"):
        layout1.run(
            None,
            {
                "X": np.zeros((3, 5, 3), np.float32),
                "lens": good["lens"],
                "h0": np.zeros((4, 2, 4), np.float32),
            },
        )
    # an input size that only the module checks: named after the node, not the module
    wide = _node_model()
    wide.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "I"
    with pytest.raises(ValueError, match=r"InferenceSession.run: the GRU node 'g': cygru"):
        InferenceSession(wide).run(
            None,
            {
                "X": np.zeros((5, 3, 7), np.float32),
                "lens": np.array([5, 5, 5], np.int32),
                "h0": np.zeros((1, 3, 4), np.float32),
            },
        )


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_adv_returned_outputs_never_share_memory(layout, direction):
    """Y (a view of cygru's output in layout 1, or for one direction) and the tensor a
    layout node computes from it (bound to cygru's output) come back as arrays of their own."""
    if direction == "forward":
        extra = [helper.make_node("Squeeze", ["Y", "axis"], ["merged"])]
        stored = numpy_helper.from_array(np.array([1 if layout == 0 else 2], np.int64), "axis")
    else:
        first = (
            helper.make_node("Transpose", ["Y"], ["t"], perm=[0, 2, 1, 3])
            if layout == 0
            else helper.make_node("Identity", ["Y"], ["t"])
        )
        extra = [first, helper.make_node("Reshape", ["t", "shape"], ["merged"])]
        stored = numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape")
    extra.append(helper.make_node("Identity", ["Y_h"], ["h_copy"]))
    model = _node_model(direction, layout, extra=extra, outputs=["Y", "Y_h", "merged", "h_copy"])
    model.graph.initializer.append(stored)
    session = InferenceSession(model)
    assert session._order[0].merged == ["merged"]
    D = 2 if direction == "bidirectional" else 1
    x = np.random.default_rng(23).standard_normal((5, 3, 3) if layout == 0 else (3, 5, 3))
    h0 = np.zeros((D, 3, 4) if layout == 0 else (3, D, 4), np.float32)
    feed = {"X": x.astype(np.float32), "lens": np.array([5, 2, 4], np.int32), "h0": h0}
    got = session.run(None, feed)
    for i in range(len(got)):
        for j in range(i + 1, len(got)):
            assert not np.shares_memory(got[i], got[j]), (i, j)
    if layout == 0:
        _close(got, _ort(model).run(None, feed))


def test_adv_declared_intermediate_sizes_do_not_bind_layout_nodes():
    """A Reshape to hard-coded sizes equals cygru's output only at those sizes. Sizes the
    model declares for Y (as a graph output, or in value_info) are not checked by anyone, so
    they do not make the session skip it: at other sizes it fails as in ONNX Runtime."""
    for where in ("output", "value_info"):
        model = _node_model(
            extra=[helper.make_node("Reshape", ["Y", "shape"], ["r"])], outputs=["r"]
        )
        model.graph.initializer.append(
            numpy_helper.from_array(np.array([5, 3, 4], np.int64), "shape")
        )
        declared = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [5, 1, 3, 4])
        (model.graph.output if where == "output" else model.graph.value_info).append(declared)
        session = InferenceSession(model)
        assert session._order[0].merged == []
        rng = np.random.default_rng(24)
        for T in (5, 7):
            feed = {
                "X": rng.standard_normal((T, 3, 3)).astype(np.float32),
                "lens": np.full(3, T, np.int32),
                "h0": np.zeros((1, 3, 4), np.float32),
            }
            if T == 5:
                _close(session.run(None, feed), _ort(model).run(None, feed))
            else:
                with pytest.raises(Exception, match="cannot be reshaped"):
                    _ort(model).run(None, feed)
                with pytest.raises(Exception, match="cannot be reshaped"):
                    session.run(None, feed)
    # sizes the graph inputs fix (checked by run) do
    model = _node_model(extra=[helper.make_node("Reshape", ["Y", "shape"], ["r"])], outputs=["r"])
    model.graph.initializer.append(numpy_helper.from_array(np.array([5, 3, 4], np.int64), "shape"))
    for vi, dims in zip(model.graph.input, ([5, 3, 3], [3], [1, 3, 4])):
        vi.CopyFrom(helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, dims))
    session = InferenceSession(model)
    assert session._order[0].merged == ["r"]
    feed = {
        "X": np.ones((5, 3, 3), np.float32),
        "lens": np.array([5, 2, 0], np.int32),
        "h0": np.ones((1, 3, 4), np.float32),
    }
    _close(session.run(None, feed), _ort(model).run(None, feed))


def test_adv_invalid_graphs_are_refused_as_onnxruntime_refuses_them():
    """Two nodes of one name (the session told its parts apart by name: a KeyError at run
    time), a name defined twice: ValueErrors when the session is built."""
    model = _gru_model()
    model.graph.node[2].name = "g"  # the Neg after the GRU node "g"
    with pytest.raises(ValueError, match="two nodes of the graph are named 'g' \\(GRU and Neg\\)"):
        InferenceSession(model)
    model = _gru_model()
    model.graph.input.append(helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None))
    with pytest.raises(
        ValueError, match="node 'g' \\(GRU\\) computes 'Y_h', which is also a graph"
    ):
        InferenceSession(model)
    model = _gru_model()
    model.graph.node[2].output[0] = "x"  # the Relu's output
    with pytest.raises(ValueError, match="computes 'x', which is also the output of a Relu node"):
        InferenceSession(model)


def test_adv_options_are_checked_and_passed():
    model = _gru_model()
    x = np.random.default_rng(25).standard_normal((4, 2, 3)).astype(np.float32)
    expected = _ort(model).run(None, {"X": x})
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for providers in (None, ["CPUExecutionProvider"], [("CPUExecutionProvider", {})]):
        session = InferenceSession(model, opts, providers=providers)
        _close(session.run(None, {"X": x}, ort.RunOptions()), expected)
    with pytest.raises(TypeError, match="sess_options as an onnxruntime.SessionOptions or None"):
        InferenceSession(model, "fast")
    with pytest.raises(TypeError, match="providers as a list of provider names"):
        InferenceSession(model, providers="CPUExecutionProvider")
    with pytest.raises(TypeError, match="run_options as an onnxruntime.RunOptions or None"):
        session.run(None, {"X": x}, {"tag": 1})


def test_adv_repr_pickle_and_copy():
    import pickle

    session = InferenceSession(_gru_model())
    text = repr(session)
    assert text.startswith("<cygru.onnxruntime.InferenceSession parts=[")
    assert "cygru 'g'" in text and "onnxruntime 1 node(s)" in text
    left = repr(InferenceSession(_gru_model(), gru_nodes=[]))
    assert "left to onnxruntime: ['g']" in left
    for refuse in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError, match="cannot be pickled or deep-copied"):
            refuse(session)
    session.get_inputs()[0].shape.append(99)  # the caller's copy: the session is unchanged
    assert session.get_inputs()[0].shape == ["T", "B", 3]
    shallow = copy.copy(session)
    x = np.ones((3, 1, 3), np.float32)
    np.testing.assert_array_equal(shallow.run(None, {"X": x})[0], session.run(None, {"X": x})[0])


def test_adv_empty_output_names_is_every_output_as_in_onnxruntime():
    model = _gru_model()
    session = InferenceSession(model)
    x = np.random.default_rng(26).standard_normal((3, 2, 3)).astype(np.float32)
    expected = _ort(model).run([], {"X": x})
    assert len(expected) == 1
    _close(session.run([], {"X": x}), expected)
    _close(session.run((), {"X": x}), expected)


def test_adv_weights_computed_by_huge_nodes_are_not_folded():
    """Weights computed by nodes over stored tensors are computed once when the session is
    built, but only within 1 GiB that shape inference can vouch for: a ConstantOfShape of a
    huge stored shape (sliced down to the weight) stays in ONNX Runtime, unallocated."""

    def model(columns):
        m = _gru_model()
        graph = m.graph
        graph.node[1].input[1] = "W_made"
        value = numpy_helper.from_array(np.array([0.1], np.float32), "v")
        graph.node.insert(0, helper.make_node("ConstantOfShape", ["shape"], ["big"], value=value))
        graph.node.insert(1, helper.make_node("Slice", ["big", "s0", "s1", "s2"], ["W_made"]))
        graph.initializer.extend(
            numpy_helper.from_array(np.array(v, np.int64), n)
            for n, v in (("shape", [1, 12, columns]), ("s0", [0]), ("s1", [3]), ("s2", [2]))
        )
        return m

    small = InferenceSession(model(5))
    assert list(small.gru_modules) == ["g"]  # folded: W is a (1, 12, 3) slice of 0.1
    np.testing.assert_array_equal(
        small.gru_modules["g"].weight_ih_l0, np.full((12, 3), np.float32(0.1))
    )
    huge = InferenceSession(model(23_000_000))  # 1.1 GB of float32 before the Slice
    assert huge.gru_modules == {} and "computed by another node" in huge.onnxruntime_gru_nodes["g"]


def test_adv_sequence_and_optional_values_cross_parts():
    """Values that are not tensors (a sequence made before the GRU node and read after it, a
    sequence input and output, an optional input) were refused when the graph was cut ("no
    element type"): they are typed as the model types them, as ONNX Runtime lists them."""
    seq_type = helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    )
    opt_type = helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [4])
    )
    model = _gru_model()
    graph = model.graph
    graph.node.extend(
        [
            helper.make_node("SplitToSequence", ["X"], ["pieces"], axis=0),
            helper.make_node("Slice", ["Y_h", "zero", "three", "two"], ["cut"]),
            helper.make_node("SequenceInsert", ["pieces", "cut"], ["more"]),
            helper.make_node("ConcatFromSequence", ["more"], ["joined"], axis=0),
            helper.make_node("SequenceInsert", ["seq_in", "Y_h"], ["seq_out"]),
            helper.make_node("OptionalHasElement", ["maybe"], ["has"]),
        ]
    )
    graph.initializer.extend(
        numpy_helper.from_array(np.array([v], np.int64), n)
        for n, v in (("zero", 0), ("three", 3), ("two", 2))
    )
    graph.input.extend(
        [helper.make_value_info("seq_in", seq_type), helper.make_value_info("maybe", opt_type)]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info("joined", TensorProto.FLOAT, None),
            helper.make_value_info("seq_out", seq_type),
            helper.make_tensor_value_info("has", TensorProto.BOOL, None),
        ]
    )
    model.opset_import[0].version = 18
    session = InferenceSession(model)
    assert list(session.gru_modules) == ["g"]
    reference = _ort(model)
    assert [(a.name, a.type, a.shape) for a in session.get_inputs()] == [
        (a.name, a.type, a.shape) for a in reference.get_inputs()
    ]
    assert [a.type for a in session.get_outputs()] == [a.type for a in reference.get_outputs()]
    rng = np.random.default_rng(27)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    for maybe in (None, np.ones(4, np.float32)):
        feed = {"X": x, "seq_in": [np.zeros((1, 2, 4), np.float32)], "maybe": maybe}
        out, joined, seq_out, has = session.run(None, feed)
        e_out, e_joined, e_seq, e_has = reference.run(None, feed)
        _close([out, joined, *seq_out], [e_out, e_joined, *e_seq])
        assert joined.shape == (5, 2, 3) and len(seq_out) == 2 and bool(has) == bool(e_has)
    with pytest.raises(TypeError, match="expected input 'seq_in' as a list of arrays"):
        session.run(None, {**feed, "seq_in": np.zeros((1, 2, 4), np.float32)})


@pytest.mark.parametrize("ir_version", [3, 8])
def test_adv_initializers_listed_as_graph_inputs(ir_version):
    """Stored tensors that are also graph inputs (old exporters list every initializer as
    one; keep_initializers_as_inputs=True) made run() fail with a KeyError where an ONNX
    Runtime part read them. Since IR 4 ONNX Runtime lets run() override them: so does the
    session, except the weights it built into cygru's module (refused clearly)."""
    model = _gru_model()
    graph = model.graph
    graph.node.append(helper.make_node("Add", ["out", "shift"], ["shifted"]))
    graph.output.append(helper.make_tensor_value_info("shifted", TensorProto.FLOAT, None))
    graph.initializer.append(numpy_helper.from_array(np.ones((1, 1, 4), np.float32), "shift"))
    for t in graph.initializer:
        graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    model.ir_version = ir_version
    model.opset_import[0].version = 7 if ir_version == 3 else 14
    session = InferenceSession(model)
    reference = _ort(model)
    assert list(session.gru_modules) == ["g"]
    assert [i.name for i in session.get_inputs()] == [i.name for i in reference.get_inputs()]
    overridable = [i.name for i in reference.get_overridable_initializers()]
    assert [i.name for i in session.get_overridable_initializers()] == overridable
    x = np.random.default_rng(28).standard_normal((4, 2, 3)).astype(np.float32)
    _close(session.run(None, {"X": x}), reference.run(None, {"X": x}))
    shift = np.full((1, 1, 4), 5.0, np.float32)
    if ir_version >= 4:
        got = session.run(None, {"X": x, "shift": shift})
        _close(got, reference.run(None, {"X": x, "shift": shift}))
        np.testing.assert_allclose(got[1], got[0] + 5, atol=1e-6)
        with pytest.raises(ValueError, match="'W' is a stored tensor that the model lets run"):
            session.run(None, {"X": x, "W": np.zeros((1, 12, 3), np.float32)})
        alone = InferenceSession(model, gru_nodes=[])  # in ONNX Runtime: overridable
        W = np.zeros((1, 12, 3), np.float32)
        _close(alone.run(None, {"X": x, "W": W}), reference.run(None, {"X": x, "W": W}))
    else:
        assert overridable == []
        with pytest.raises(ValueError, match="'shift' is not an input of the model"):
            session.run(None, {"X": x, "shift": shift})


@pytest.mark.parametrize("shape", [(5, 3, 3), (5, 1, 3), (1, 3, 3), (1, 1, 3)])
def test_adv_squeeze_without_axes_is_not_bound(shape):
    """A Squeeze without axes after a one-direction node drops D, and also T or B where they
    are 1 (a streaming call has T = 1): it was bound to cygru's (T, B, H) output, checked at
    sizes without a 1, and returned (1, B, H) where ONNX Runtime returns (B, H)."""
    model = _gru_model()
    graph = model.graph
    graph.node.append(helper.make_node("Squeeze", ["Y"], ["squeezed"]))
    graph.output.append(helper.make_tensor_value_info("squeezed", TensorProto.FLOAT, None))
    session = InferenceSession(model)
    assert all(not getattr(p, "merged", []) for p in session._order)
    x = np.random.default_rng(29).standard_normal(shape).astype(np.float32)
    _close(session.run(None, {"X": x}), _ort(model).run(None, {"X": x}))


@pytest.mark.parametrize("end_attr", [False, True])
def test_adv_slice_to_a_fixed_end_is_not_bound(end_attr):
    """A Slice of Y's first 5 steps (then a Squeeze of D) equals cygru's output at every
    T <= 5: it was bound at the probe's small sizes and returned all 7 steps where ONNX
    Runtime returns 5. The probe now also runs at sizes beyond the nodes' numbers."""
    model = _gru_model()
    graph = model.graph
    if end_attr:  # opset 9: starts, ends and axes as attributes
        model.opset_import[0].version = 9
        graph.node.append(
            helper.make_node("Slice", ["Y"], ["first"], starts=[0], ends=[5], axes=[0])
        )
        graph.node.append(helper.make_node("Squeeze", ["first"], ["steps"], axes=[1]))
    else:
        graph.node.append(helper.make_node("Slice", ["Y", "zero", "five", "zero"], ["first"]))
        graph.node.append(helper.make_node("Squeeze", ["first", "one"], ["steps"]))
        graph.initializer.extend(
            numpy_helper.from_array(np.array([v], np.int64), n)
            for n, v in (("zero", 0), ("five", 5), ("one", 1))
        )
    graph.output.append(helper.make_tensor_value_info("steps", TensorProto.FLOAT, None))
    session = InferenceSession(model)
    assert all(not getattr(p, "merged", []) for p in session._order)
    for T in (4, 7):
        x = np.random.default_rng(30).standard_normal((T, 2, 3)).astype(np.float32)
        got = session.run(None, {"X": x})
        _close(got, _ort(model).run(None, {"X": x}))
        assert got[1].shape == (min(T, 5), 2, 4)
    # the exporters' own layout nodes are still bound (ends of INT64_MAX stand for the end)
    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, seed=31)
    stack = InferenceSession(gru.to_onnx(io.BytesIO(), h0="none", lengths="none"))
    assert [k for k, _ in stack.parts] == ["cygru", "cygru", "onnxruntime"]


@pytest.mark.parametrize("opset", [7, 14, 17, 21])
def test_adv_gru_opsets_and_float16(opset):
    """GRU nodes of every opset run in cygru; a float16 node stays in ONNX Runtime, with the
    reason, and the model still gives ONNX Runtime's outputs."""
    model = _gru_model()
    model.opset_import[0].version = opset
    x = np.random.default_rng(32).standard_normal((4, 2, 3)).astype(np.float32)
    session = InferenceSession(model)
    assert list(session.gru_modules) == ["g"]
    _close(session.run(None, {"X": x}), _ort(model).run(None, {"X": x}))
    half = copy.deepcopy(model)
    half.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    half.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    for t in half.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    left = InferenceSession(half)
    assert left.gru_modules == {} and "FLOAT16" in left.onnxruntime_gru_nodes["g"]
    feed = {"X": x.astype(np.float16)}
    (got,) = left.run(None, feed)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, _ort(half).run(None, feed)[0])


def test_adv_graph_shapes_that_must_not_be_bound_and_independence():
    """Two GRU nodes reading one X; a Relu between two layers (not a layout: the next layer
    reads ONNX Runtime's result); the session unaffected by later changes to the caller's
    ModelProto."""
    rng = np.random.default_rng(33)
    W = [(rng.standard_normal((1, 12, k)) * 0.5).astype(np.float32) for k in (3, 4, 3)]
    R = [(rng.standard_normal((1, 12, 4)) * 0.5).astype(np.float32) for _ in range(3)]
    nodes = [
        helper.make_node("GRU", ["X", "W0", "R0"], ["Y0", ""], hidden_size=4, name="a"),
        helper.make_node("Squeeze", ["Y0", "one"], ["s0"]),
        helper.make_node("Relu", ["s0"], ["r0"]),
        helper.make_node("GRU", ["r0", "W1", "R1"], ["", "H1"], hidden_size=4, name="b"),
        helper.make_node("GRU", ["X", "W2", "R2"], ["", "H2"], hidden_size=4, name="c"),
        helper.make_node("Add", ["H1", "H2"], ["out"]),
    ]
    stored = [numpy_helper.from_array(np.array([1], np.int64), "one")]
    for k in range(3):
        stored += [numpy_helper.from_array(W[k], f"W{k}"), numpy_helper.from_array(R[k], f"R{k}")]
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        stored,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = InferenceSession(model)
    assert sorted(session.gru_modules) == ["a", "b", "c"]
    assert session._order[0].merged == ["s0"]  # the Squeeze is bound, the Relu runs
    assert ("onnxruntime", 1) in session.parts
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    expected = _ort(model).run(None, {"X": x})
    _close(session.run(None, {"X": x}), expected)
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros_like(W[0]), "W0"))
    del model.graph.node[:]
    _close(session.run(None, {"X": x}), expected)


def test_adv_external_data(tmp_path):
    """A model file with its weights in an external file runs from its path; the same model
    as a ModelProto or bytes whose tensors still name that file is refused clearly (ONNX
    Runtime failed deep inside a part)."""
    model = _gru_model(I=8, H=16)
    x = np.random.default_rng(34).standard_normal((3, 2, 8)).astype(np.float32)
    expected = _ort(model).run(None, {"X": x})
    path = tmp_path / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    for given in (str(path), path):
        session = InferenceSession(given)
        assert list(session.gru_modules) == ["g"]
        _close(session.run(None, {"X": x}), expected)
    unloaded = onnx.load(str(path), load_external_data=False)
    for given in (unloaded, unloaded.SerializeToString()):
        with pytest.raises(ValueError, match="external file 'weights.bin', which was not loaded"):
            InferenceSession(given)
    with pytest.raises(OSError):
        InferenceSession(tmp_path)  # a directory


def test_adv_overriding_what_skipped_layout_nodes_read_is_refused():
    """A Reshape's shape that the model lets run() override, read by layout nodes the
    session skips (their result bound to cygru's output): overriding it is refused, not
    silently ignored."""
    extra = [
        helper.make_node("Transpose", ["Y"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["t", "shape"], ["merged"]),
    ]
    model = _node_model("bidirectional", extra=extra, outputs=["merged"])
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape"))
    model.graph.input.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [3]))
    session = InferenceSession(model)
    assert session._order[0].merged == ["merged"]
    feed = {
        "X": np.ones((4, 2, 3), np.float32),
        "lens": np.array([4, 1], np.int32),
        "h0": np.zeros((2, 2, 4), np.float32),
    }
    _close(session.run(None, feed), _ort(model).run(None, feed))
    with pytest.raises(ValueError, match="'shape' is a stored tensor that the model lets run"):
        session.run(None, {**feed, "shape": np.array([0, -1, 8], np.int64)})


def test_parts_keep_the_graph_inputs_declared_sizes():
    """A part fed by a graph input declares its sizes (so ONNX Runtime optimises it as it
    would the whole model: MatMul + Add become a Gemm); a value computed elsewhere (a GRU
    node's output) is declared by its type alone."""
    torch = import_optional("torch")
    net = _torch_net(torch, 1, False, False, False)
    data = _export(torch, net, (torch.zeros(4, 3, 6),), ["x"], False)
    session = InferenceSession(data)
    first, *rest = [p for p in session._order if hasattr(p, "session")]
    (arg,) = [a for a in first.session.get_inputs() if a.name == "x"]
    assert arg.shape == [4, 3, 6]  # as the exported model declares it
    later = [a for p in rest for a in p.session.get_inputs()]
    assert later and all(not a.shape for a in later), [(a.name, a.shape) for a in later]

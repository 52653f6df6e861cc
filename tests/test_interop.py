"""Tests of cygru.interop: PyTorch, Keras and ONNX conversion.

Every conversion is checked numerically against an independent implementation: PyTorch
itself, a Keras-math forward written here (gate order z, r, h, right-multiplied weights),
ONNX Runtime, and ONNX's own reference evaluator.
"""

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
from cygru.interop import from_keras, from_onnx, from_torch, to_onnx


def _rng(seed=0):
    return np.random.default_rng(seed)


# ============================================================================================
# PyTorch
# ============================================================================================

TORCH_TOL = {np.float64: 1e-10, np.float32: 1e-5}


def _torch_dtype(torch, dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_from_torch_gru_matches_torch(num_layers, bidirectional, batch_first, bias, dtype):
    torch = import_optional("torch")
    torch.manual_seed(num_layers * 16 + bidirectional * 8 + batch_first * 4 + bias * 2)
    I, H, T, B = 5, 7, 6, 3
    D = 2 if bidirectional else 1
    tgru = torch.nn.GRU(
        I,
        H,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
    ).to(_torch_dtype(torch, dtype))
    gru = from_torch(tgru)

    assert isinstance(gru, cygru.GRU)
    assert (gru.input_size, gru.hidden_size, gru.num_layers) == (I, H, num_layers)
    assert gru.bias is bias and gru.batch_first is batch_first
    assert gru.bidirectional is bidirectional and gru.num_directions == D
    assert gru.reset_after is True and gru.reverse is False
    assert np.dtype(gru.dtype) == dtype
    state = gru.state_dict()
    tstate = tgru.state_dict()
    assert list(state) == list(tstate)
    for name, value in tstate.items():
        assert state[name].dtype == dtype
        np.testing.assert_array_equal(state[name], value.numpy())

    rng = _rng(1)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(dtype)
    h0 = rng.standard_normal((num_layers * D, B, H)).astype(dtype)
    tol = TORCH_TOL[dtype]
    with torch.no_grad():
        t_out, t_hn = tgru(torch.from_numpy(x))
        t_out0, t_hn0 = tgru(torch.from_numpy(x), torch.from_numpy(h0))
    out, hn = gru(x)
    np.testing.assert_allclose(out, t_out.numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(hn, t_hn.numpy(), rtol=0, atol=tol)
    out, hn = gru(x, h0)
    np.testing.assert_allclose(out, t_out0.numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(hn, t_hn0.numpy(), rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_grucell_matches_torch(bias, dtype):
    torch = import_optional("torch")
    torch.manual_seed(3)
    tcell = torch.nn.GRUCell(4, 6, bias=bias).to(_torch_dtype(torch, dtype))
    cell = from_torch(tcell)
    assert isinstance(cell, cygru.GRUCell)
    assert (cell.input_size, cell.hidden_size, cell.bias) == (4, 6, bias)
    assert np.dtype(cell.dtype) == dtype
    assert list(cell.state_dict()) == list(tcell.state_dict())

    rng = _rng(2)
    x = rng.standard_normal((3, 4)).astype(dtype)
    h = rng.standard_normal((3, 6)).astype(dtype)
    with torch.no_grad():
        expected = tcell(torch.from_numpy(x), torch.from_numpy(h)).numpy()
        expected0 = tcell(torch.from_numpy(x)).numpy()
    tol = TORCH_TOL[dtype]
    np.testing.assert_allclose(cell(x, h), expected, rtol=0, atol=tol)
    np.testing.assert_allclose(cell(x), expected0, rtol=0, atol=tol)


def test_from_torch_copies_dropout_and_weights():
    torch = import_optional("torch")
    tgru = torch.nn.GRU(3, 4, num_layers=2, dropout=0.25)
    gru = from_torch(tgru)
    assert gru.dropout == 0.25
    # the result owns its memory: later changes to the torch module do not reach it
    before = gru.weight_ih_l0.copy()
    with torch.no_grad():
        tgru.weight_ih_l0.add_(1.0)
    np.testing.assert_array_equal(gru.weight_ih_l0, before)


def test_from_torch_rejects_proj_size_and_other_modules():
    torch = import_optional("torch")
    tgru = torch.nn.GRU(3, 4)
    tgru.proj_size = 2  # torch refuses proj_size for a GRU at construction; fake it
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(tgru)
    with pytest.raises(TypeError, match="GRU"):
        from_torch(torch.nn.LSTM(3, 4))
    with pytest.raises(TypeError, match="GRU"):
        from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(TypeError, match="float16"):
        from_torch(torch.nn.GRU(3, 4).half())
    with pytest.raises(TypeError, match="bfloat16|float32"):
        from_torch(torch.nn.GRUCell(3, 4).bfloat16())


def test_interop_does_not_import_optional_frameworks():
    code = (
        "import sys, cygru, cygru.interop\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'keras', 'tensorflow') "
        "if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ============================================================================================
# Keras
# ============================================================================================


def _keras_gru(x, kernel, recurrent_kernel, bias, reset_after):
    """Keras' GRU forward (batch-major x (B, T, I), gates z, r, h), written independently."""
    B, T, _ = x.shape
    H = recurrent_kernel.shape[0]
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    k_z, k_r, k_h = kernel[:, :H], kernel[:, H : 2 * H], kernel[:, 2 * H :]
    u = recurrent_kernel
    u_z, u_r, u_h = u[:, :H], u[:, H : 2 * H], u[:, 2 * H :]
    if bias is None:
        in_b = rec_b = np.zeros(3 * H)
    elif reset_after:
        in_b, rec_b = bias[0], bias[1]
    else:
        in_b, rec_b = bias, np.zeros(3 * H)
    b_z, b_r, b_h = in_b[:H], in_b[H : 2 * H], in_b[2 * H :]
    rb_z, rb_r, rb_h = rec_b[:H], rec_b[H : 2 * H], rec_b[2 * H :]
    h = np.zeros((B, H), dtype=x.dtype)
    outs = []
    for t in range(T):
        xt = x[:, t]
        z = sig(xt @ k_z + b_z + h @ u_z + rb_z)
        r = sig(xt @ k_r + b_r + h @ u_r + rb_r)
        if reset_after:
            hh = np.tanh(xt @ k_h + b_h + r * (h @ u_h + rb_h))
        else:
            hh = np.tanh(xt @ k_h + b_h + (r * h) @ u_h)
        h = z * h + (1 - z) * hh
        outs.append(h)
    return np.stack(outs, axis=1), h


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("reset_after", [True, False])
def test_from_keras_matches_keras_math(reset_after, use_bias):
    rng = _rng(5)
    I, H, B, T = 4, 6, 3, 7
    kernel = rng.standard_normal((I, 3 * H)) * 0.6
    recurrent = rng.standard_normal((H, 3 * H)) * 0.6
    if not use_bias:
        bias = None
    elif reset_after:
        bias = rng.standard_normal((2, 3 * H))
    else:
        bias = rng.standard_normal(3 * H)
    gru = from_keras(kernel, recurrent, bias, reset_after=reset_after)
    assert isinstance(gru, cygru.GRU)
    assert gru.batch_first is True and gru.num_layers == 1 and gru.bidirectional is False
    assert gru.reset_after is reset_after and gru.bias is use_bias
    assert np.dtype(gru.dtype) == np.float64
    if use_bias and not reset_after:
        np.testing.assert_array_equal(gru.bias_hh_l0, 0.0)

    x = rng.standard_normal((B, T, I))
    expected_seq, expected_h = _keras_gru(x, kernel, recurrent, bias, reset_after)
    out, hn = gru(x)
    np.testing.assert_allclose(out, expected_seq, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hn[0], expected_h, rtol=0, atol=1e-12)


def test_from_keras_dtype():
    rng = _rng(6)
    k = rng.standard_normal((2, 9)).astype(np.float32)
    u = rng.standard_normal((3, 9)).astype(np.float32)
    b = rng.standard_normal((2, 9)).astype(np.float32)
    assert np.dtype(from_keras(k, u, b).dtype) == np.float32
    g64 = from_keras(k, u, b, dtype=np.float64)
    assert np.dtype(g64.dtype) == np.float64 and g64.weight_ih_l0.dtype == np.float64
    half = [a.astype(np.float16) for a in (k, u, b)]
    g16 = from_keras(*half, dtype=np.float32)
    assert g16.weight_hh_l0.dtype == np.float32
    with pytest.raises(TypeError, match="float16"):
        from_keras(k.astype(np.float16), u, b)
    # reordering check on a float32 layer against the Keras math
    x = rng.standard_normal((2, 5, 2)).astype(np.float32)
    seq, _ = _keras_gru(
        x.astype(np.float64), k.astype(np.float64), u.astype(np.float64), b.astype(np.float64), True
    )
    np.testing.assert_allclose(from_keras(k, u, b)(x)[0], seq, rtol=0, atol=1e-5)


def test_from_keras_shape_errors():
    rng = _rng(7)
    k = rng.standard_normal((4, 9))
    u = rng.standard_normal((3, 9))
    with pytest.raises(ValueError, match=r"kernel must have shape"):
        from_keras(rng.standard_normal((4, 8)), u, None)
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape .*\(3, 9\)"):
        from_keras(k, rng.standard_normal((4, 9)), None)
    with pytest.raises(ValueError, match=r"\(2, 9\).*got \(9,\)"):
        from_keras(k, u, rng.standard_normal(9), reset_after=True)
    with pytest.raises(ValueError, match=r"\(9,\).*got \(2, 9\)"):
        from_keras(k, u, rng.standard_normal((2, 9)), reset_after=False)


# ============================================================================================
# ONNX import
# ============================================================================================

GRU_OPSET = 14  # GRU-14 introduced `layout`


def _onnx_gru_model(
    W,
    R,
    B=None,
    *,
    direction="forward",
    lbr=0,
    layout=0,
    weights_as_inputs=False,
    extra_attrs=None,
    name="gru",
    opset=GRU_OPSET,
    with_lengths=False,
):
    """A one-node ONNX model: inputs X, initial_h (and sequence_lens), outputs Y, Y_h."""
    onnx = import_optional("onnx")
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.DOUBLE if W.dtype == np.float64 else TensorProto.FLOAT
    D, H3, I = W.shape
    H = H3 // 3
    x_dims = ["B", "T", I] if layout else ["T", "B", I]
    h_dims = ["B", D, H] if layout else [D, "B", H]
    attrs = dict(hidden_size=H, direction=direction, linear_before_reset=lbr)
    if layout:
        attrs["layout"] = 1
    attrs.update(extra_attrs or {})
    node = helper.make_node(
        "GRU",
        [
            "X",
            "W",
            "R",
            "B" if B is not None else "",
            "seq_lens" if with_lengths else "",
            "initial_h",
        ],
        ["Y", "Y_h"],
        name=name,
        **attrs,
    )
    weights = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")]
    if B is not None:
        weights.append(numpy_helper.from_array(B, "B"))
    inputs = [
        helper.make_tensor_value_info("X", elem, x_dims),
        helper.make_tensor_value_info("initial_h", elem, h_dims),
    ]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("seq_lens", TensorProto.INT32, ["B"]))
    if weights_as_inputs:
        inputs += [helper.make_tensor_value_info(w.name, elem, list(w.dims)) for w in weights]
        weights = []
    graph = helper.make_graph(
        [node],
        "g",
        inputs,
        [
            helper.make_tensor_value_info(
                "Y", elem, ["B", "T", D, H] if layout else ["T", D, "B", H]
            ),
            helper.make_tensor_value_info("Y_h", elem, h_dims),
        ],
        initializer=weights,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model)
    return model


def _onnx_weights(rng, D, I, H, with_bias, dtype=np.float32):
    W = (rng.standard_normal((D, 3 * H, I)) * 0.5).astype(dtype)
    R = (rng.standard_normal((D, 3 * H, H)) * 0.5).astype(dtype)
    B = (rng.standard_normal((D, 6 * H)) * 0.5).astype(dtype) if with_bias else None
    return W, R, B


def _ort_run(model, feeds):
    ort = import_optional("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _merge_y(Y, layout):
    """ONNX Y -> cygru output: (T, D, B, H) -> (T, B, D*H); (B, T, D, H) -> (B, T, D*H)."""
    if layout == 0:
        Y = Y.transpose(0, 2, 1, 3)
    return Y.reshape(Y.shape[0], Y.shape[1], -1)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_matches_onnxruntime(direction, lbr, with_bias):
    import_optional("onnx")
    import_optional("onnxruntime")
    rng = _rng(11)
    D = 2 if direction == "bidirectional" else 1
    I, H, T, B = 5, 4, 6, 3
    W, R, Bias = _onnx_weights(rng, D, I, H, with_bias)
    model = _onnx_gru_model(W, R, Bias, direction=direction, lbr=lbr)
    gru = from_onnx(model)

    assert isinstance(gru, cygru.GRU)
    assert (gru.input_size, gru.hidden_size, gru.num_layers) == (I, H, 1)
    assert gru.bidirectional is (D == 2) and gru.reverse is (direction == "reverse")
    assert gru.reset_after is bool(lbr) and gru.batch_first is False and gru.bias is with_bias
    assert np.dtype(gru.dtype) == np.float32

    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    Y, Y_h = _ort_run(model, {"X": x, "initial_h": h0})
    out, hn = gru(x, h0)
    np.testing.assert_allclose(out, _merge_y(Y, 0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, Y_h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_sequence_lens_are_cygru_lengths(direction, lbr):
    """The node's sequence_lens input corresponds to the module's `lengths` argument."""
    import_optional("onnx")
    import_optional("onnxruntime")
    rng = _rng(19)
    D = 2 if direction == "bidirectional" else 1
    I, H, T = 3, 4, 6
    W, R, Bias = _onnx_weights(rng, D, I, H, True)
    model = _onnx_gru_model(W, R, Bias, direction=direction, lbr=lbr, with_lengths=True)
    gru = from_onnx(model)
    lengths = np.array([6, 2, 4, 1], dtype=np.int64)
    B = len(lengths)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    Y, Y_h = _ort_run(model, {"X": x, "initial_h": h0, "seq_lens": lengths.astype(np.int32)})
    out, hn = gru(x, h0, lengths=lengths)
    np.testing.assert_allclose(out, _merge_y(Y, 0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, Y_h, rtol=0, atol=1e-5)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_layout1(direction, lbr, with_bias):
    """ORT rejects layout=1: compare with the same weights' layout=0 ORT run, transposed,
    and with ONNX's reference evaluator run on the layout=1 model itself."""
    import_optional("onnx")
    import_optional("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    rng = _rng(12)
    D = 2 if direction == "bidirectional" else 1
    I, H, T, B = 3, 5, 4, 2
    W, R, Bias = _onnx_weights(rng, D, I, H, with_bias)
    model1 = _onnx_gru_model(W, R, Bias, direction=direction, lbr=lbr, layout=1)
    model0 = _onnx_gru_model(W, R, Bias, direction=direction, lbr=lbr, layout=0)
    gru = from_onnx(model1)
    assert gru.batch_first is True

    x_bf = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    Y0, Y_h0 = _ort_run(model0, {"X": x_bf.transpose(1, 0, 2).copy(), "initial_h": h0})
    out, hn = gru(x_bf, h0)
    np.testing.assert_allclose(out, _merge_y(Y0, 0).transpose(1, 0, 2), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, Y_h0, rtol=0, atol=1e-5)

    Y1, Y_h1 = ReferenceEvaluator(model1).run(None, {"X": x_bf, "initial_h": h0.transpose(1, 0, 2)})
    np.testing.assert_allclose(out, _merge_y(Y1, 1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, Y_h1.transpose(1, 0, 2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_float64_matches_reference_evaluator(direction):
    import_optional("onnx")
    from onnx.reference import ReferenceEvaluator

    rng = _rng(13)
    D = 2 if direction == "bidirectional" else 1
    W, R, Bias = _onnx_weights(rng, D, 4, 3, True, dtype=np.float64)
    for lbr in (0, 1):
        model = _onnx_gru_model(W, R, Bias, direction=direction, lbr=lbr)
        gru = from_onnx(model)
        assert np.dtype(gru.dtype) == np.float64
        x = rng.standard_normal((5, 2, 4))
        h0 = rng.standard_normal((D, 2, 3))
        Y, Y_h = ReferenceEvaluator(model).run(None, {"X": x, "initial_h": h0})
        out, hn = gru(x, h0)
        np.testing.assert_allclose(out, _merge_y(Y, 0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(hn, Y_h, rtol=0, atol=1e-12)


def test_from_onnx_matches_cygru_parameters():
    """from_onnx(to_onnx(gru)) recovers a one-layer module's parameters exactly."""
    import_optional("onnx")
    for kwargs in (
        {},
        {"bidirectional": True},
        {"reverse": True},
        {"reset_after": False},
        {"bias": False},
        {"batch_first": True},
    ):
        gru = cygru.GRU(3, 4, seed=1, **kwargs)
        buf = io.BytesIO()
        model = to_onnx(gru, buf)
        back = from_onnx(model, node_name="gru_l0")
        assert back.bidirectional == gru.bidirectional and back.reverse == gru.reverse
        assert back.reset_after == gru.reset_after and back.bias == gru.bias
        assert back.batch_first is False  # the exported node is time-major (layout=0)
        state, back_state = gru.state_dict(), back.state_dict()
        assert list(state) == list(back_state)
        for name in state:
            np.testing.assert_array_equal(back_state[name], state[name])


def test_from_onnx_path_and_modelproto(tmp_path):
    onnx = import_optional("onnx")
    rng = _rng(14)
    W, R, Bias = _onnx_weights(rng, 1, 3, 2, True)
    model = _onnx_gru_model(W, R, Bias, lbr=1)
    path = tmp_path / "gru.onnx"
    onnx.save(model, str(path))
    data = model.SerializeToString()
    a = from_onnx(model)
    for src in (path, str(path), data, bytearray(data), memoryview(data)):
        b = from_onnx(src)
        for name, value in a.state_dict().items():
            np.testing.assert_array_equal(b.state_dict()[name], value)
    # the caller's ModelProto is only read
    assert model.SerializeToString() == data
    # numpy_helper.to_array gives read-only views of the initializers; converting them is fine
    assert not onnx.numpy_helper.to_array(model.graph.initializer[0]).flags.writeable
    assert a.weight_ih_l0.flags.writeable


@pytest.mark.parametrize("bad", [12, {"W": 1}, None, 2.5, ["gru.onnx"]])
def test_from_onnx_rejects_other_types(bad):
    import_optional("onnx")
    with pytest.raises(TypeError) as info:
        from_onnx(bad)
    message = str(info.value)
    assert message.startswith(
        "cygru.from_onnx: expected a path (str or os.PathLike), a serialized model (bytes"
    )
    assert "onnx.ModelProto" in message
    assert message.endswith(f"got {type(bad).__qualname__}")


def test_from_onnx_unreadable_files(tmp_path):
    """Garbage, truncated and empty files: a ValueError naming the file, not protobuf's
    DecodeError or 'the graph has no GRU node'. A missing file stays FileNotFoundError."""
    import_optional("onnx")
    import re

    W, R, Bias = _onnx_weights(_rng(30), 1, 3, 2, True)
    data = _onnx_gru_model(W, R, Bias).SerializeToString()
    files = {
        "garbage.onnx": b"this is not an ONNX model\n\xff\xfe\x00\x01" * 8,
        "empty.onnx": b"",
        "header_only.onnx": data[:2],  # decodes (ir_version only), but holds no graph
    }
    for k, cut in enumerate((len(data) // 4, len(data) // 2, 3 * len(data) // 4)):
        files[f"truncated{k}.onnx"] = data[:cut]
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        for src in (path, str(path)):
            with pytest.raises(ValueError, match="is not a readable ONNX model") as info:
                from_onnx(src)
            assert f"cygru.from_onnx: the file {str(path)!r} is not" in str(info.value), name
    with pytest.raises(ValueError, match="it is empty"):
        from_onnx(tmp_path / "empty.onnx")
    with pytest.raises(ValueError, match="it holds no graph"):
        from_onnx(tmp_path / "header_only.onnx")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        from_onnx(tmp_path / "truncated1.onnx")

    # the same contents as bytes: named as bytes, with a hint for those who meant a path
    with pytest.raises(
        ValueError,
        match=r"the bytes object given \(\d+ bytes\) is not a "
        r"readable ONNX model.*pass a file's path",
    ):
        from_onnx(files["garbage.onnx"])
    with pytest.raises(ValueError, match=r"bytearray object given \(0 bytes\).*it is empty"):
        from_onnx(bytearray())
    with pytest.raises(ValueError, match=r"memoryview object given .*not a readable"):
        from_onnx(memoryview(files["truncated1.onnx"]))

    missing = tmp_path / "missing.onnx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        from_onnx(missing)


def test_from_onnx_external_data(tmp_path):
    """A path loads the model's external data from its directory; bytes cannot, and say so
    rather than reading a file relative to the working directory."""
    onnx = import_optional("onnx")
    W, R, Bias = _onnx_weights(_rng(31), 1, 3, 2, True)
    model = _onnx_gru_model(W, R, Bias, lbr=1)
    expected = from_onnx(model)
    path = tmp_path / "gru.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="gru.weights",
        size_threshold=0,
    )
    assert (tmp_path / "gru.weights").exists()
    got = from_onnx(path)
    for name, value in expected.state_dict().items():
        np.testing.assert_array_equal(got.state_dict()[name], value)
    with pytest.raises(ValueError, match="external file that was not loaded"):
        from_onnx(path.read_bytes())


def test_from_onnx_weights_in_constant_nodes():
    onnx = import_optional("onnx")
    from onnx import helper, numpy_helper

    rng = _rng(15)
    W, R, Bias = _onnx_weights(rng, 1, 3, 2, True)
    model = _onnx_gru_model(W, R, Bias, lbr=1)
    graph = model.graph
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in graph.initializer]
    del graph.initializer[:]
    graph.node.insert(0, consts[2])
    graph.node.insert(0, consts[1])
    graph.node.insert(0, consts[0])
    onnx.checker.check_model(model)
    gru = from_onnx(model)
    W_const = numpy_helper.to_array(consts[0].attribute[0].t)
    np.testing.assert_array_equal(gru.weight_ih_l0[:2], W_const[0, 2:4])  # r gate = ONNX block 1
    np.testing.assert_array_equal(W_const, W)


# --- initial_h / sequence_lens stored in the model (run-time inputs a module cannot hold) ----


def _store_inputs(model, arrays, how):
    """Turn the graph inputs named in ``arrays`` into tensors stored in the model: "initializer"
    (the graph input removed), "overridable" (an initializer that stays a graph input, i.e. a
    default) or "constant" (a Constant node)."""
    onnx = import_optional("onnx")
    from onnx import helper, numpy_helper

    graph = model.graph
    for name, array in arrays.items():
        tensor = numpy_helper.from_array(array, name)
        if how != "overridable":
            kept = [i for i in graph.input if i.name != name]
            del graph.input[:]
            graph.input.extend(kept)
        if how == "constant":
            graph.node.insert(
                0, helper.make_node("Constant", [], [name], value=tensor, name=f"const_{name}")
            )
        else:
            graph.initializer.append(tensor)
    onnx.checker.check_model(model)
    return model


def _without_stored_inputs(model, node_name="gru"):
    """The documented way to proceed: read the stored arrays, then convert a copy of the model
    whose GRU node omits them (''). Returns (module, h0 or None, lengths or None)."""
    import copy

    from onnx import numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            stored[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    node = next(n for n in graph.node if n.name == node_name)
    found = {}
    for index, what in ((4, "lengths"), (5, "h0")):
        if len(node.input) > index and node.input[index] in stored:
            found[what] = stored[node.input[index]]
            node.input[index] = ""
    return from_onnx(model), found.get("h0"), found.get("lengths")


@pytest.mark.parametrize("how", ["initializer", "overridable", "constant"])
@pytest.mark.parametrize("which", ["initial_h", "seq_lens", "both"])
def test_from_onnx_refuses_stored_initial_h_and_sequence_lens(which, how):
    import_optional("onnx")
    rng = _rng(32)
    W, R, Bias = _onnx_weights(rng, 1, 3, 4, True)
    model = _onnx_gru_model(W, R, Bias, with_lengths=True)
    arrays = {}
    if which in ("initial_h", "both"):
        arrays["initial_h"] = rng.standard_normal((1, 2, 4)).astype(np.float32)
    if which in ("seq_lens", "both"):
        arrays["seq_lens"] = np.array([3, 1], dtype=np.int32)
    _store_inputs(model, arrays, how)
    before = model.SerializeToString()
    with pytest.raises(ValueError) as info:
        from_onnx(model)
    message = str(info.value)
    assert message.startswith("cygru.from_onnx: GRU node 'gru' takes its input ")
    origin = {
        "initializer": "the initializer '{}'",
        "overridable": "the initializer '{}' (also a graph input: the stored array is its default)",
        "constant": "the Constant node 'const_{}' (output '{}')",
    }[how]
    if "initial_h" in arrays:
        assert (
            f"its input initial_h from {origin.format('initial_h', 'initial_h')} "
            "(float32, shape (1, 2, 4))"
        ) in message
        assert "input[5]" in message and "h0=" in message
    if "seq_lens" in arrays:
        assert (
            f"its input sequence_lens from {origin.format('seq_lens', 'seq_lens')} "
            "(int32, shape (2,))" in message
        )
        assert "input[4]" in message and "lengths=" in message
    assert "a cygru.GRU holds weights only, not run-time inputs" in message
    assert "read the array" in message and "onnx.numpy_helper.to_array" in message
    assert "to '' (ONNX's name for an omitted input) in a copy of the model" in message
    assert "transpose" not in message  # layout=0: ONNX's initial_h is cygru's h0
    assert model.SerializeToString() == before  # refused without touching the model


def test_from_onnx_stored_initial_h_layout1_message():
    import_optional("onnx")
    rng = _rng(33)
    W, R, Bias = _onnx_weights(rng, 2, 3, 4, True)
    model = _onnx_gru_model(W, R, Bias, direction="bidirectional", layout=1)
    _store_inputs(
        model, {"initial_h": rng.standard_normal((5, 2, 4)).astype(np.float32)}, "initializer"
    )
    with pytest.raises(
        ValueError,
        match=r"layout=1, so first transpose initial_h from ONNX's "
        r"\(batch, num_directions, hidden_size\) to cygru's "
        r"\(num_directions, batch, hidden_size\): "
        r"h0 = array.transpose\(1, 0, 2\)",
    ):
        from_onnx(model)


def test_from_onnx_sequence_lens_in_value_ints_constant():
    """A Constant node may hold its tensor in value_ints rather than value."""
    onnx = import_optional("onnx")
    from onnx import helper

    W, R, Bias = _onnx_weights(_rng(34), 1, 3, 4, True)
    model = _onnx_gru_model(W, R, Bias, with_lengths=True)
    kept = [i for i in model.graph.input if i.name != "seq_lens"]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.node.insert(0, helper.make_node("Constant", [], ["seq_lens"], value_ints=[3, 1]))
    onnx.checker.check_model(model)
    with pytest.raises(
        ValueError,
        match=r"sequence_lens from a Constant node \(output "
        r"'seq_lens'\) \(int64, shape \(2,\)\)",
    ):
        from_onnx(model)


@pytest.mark.parametrize("how", ["initializer", "constant"])
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_from_onnx_stored_inputs_workaround_matches_onnxruntime(direction, lbr, how):
    """The way the message describes reproduces ONNX Runtime on the model as it is."""
    import_optional("onnx")
    import_optional("onnxruntime")
    rng = _rng(35)
    D = 2 if direction == "bidirectional" else 1
    I, H, T = 3, 4, 6
    W, R, Bias = _onnx_weights(rng, D, I, H, True)
    lengths = np.array([6, 2, 4, 1], dtype=np.int32)
    B = len(lengths)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    model = _onnx_gru_model(W, R, Bias, direction=direction, lbr=lbr, with_lengths=True)
    _store_inputs(model, {"initial_h": h0, "seq_lens": lengths}, how)
    before = model.SerializeToString()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    Y, Y_h = _ort_run(model, {"X": x})  # ORT uses the stored initial_h and sequence_lens

    gru, h0_read, lengths_read = _without_stored_inputs(model)
    assert model.SerializeToString() == before
    np.testing.assert_array_equal(h0_read, h0)
    np.testing.assert_array_equal(lengths_read, lengths)
    h0_read.flags.writeable = False  # as numpy_helper.to_array may give them
    lengths_read.flags.writeable = False
    out, hn = gru(x, h0_read, lengths=lengths_read)
    np.testing.assert_allclose(out, _merge_y(Y, 0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, Y_h, rtol=0, atol=1e-5)
    # without them the module would be ~1 off: what from_onnx used to return silently
    assert np.abs(gru(x)[0] - _merge_y(Y, 0)).max() > 0.1


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_from_onnx_stored_initial_h_workaround_layout1(direction):
    """layout=1 stores initial_h as (B, D, H); cygru's h0 is its transpose. ORT rejects
    layout=1, so the reference is ORT on the layout=0 model with the same stored state."""
    import_optional("onnx")
    import_optional("onnxruntime")
    rng = _rng(36)
    D = 2 if direction == "bidirectional" else 1
    I, H, T, B = 3, 4, 5, 2
    W, R, Bias = _onnx_weights(rng, D, I, H, True)
    h0 = rng.standard_normal((D, B, H)).astype(np.float32)
    model1 = _store_inputs(
        _onnx_gru_model(W, R, Bias, direction=direction, layout=1),
        {"initial_h": np.ascontiguousarray(h0.transpose(1, 0, 2))},
        "initializer",
    )
    model0 = _store_inputs(
        _onnx_gru_model(W, R, Bias, direction=direction), {"initial_h": h0}, "initializer"
    )
    x_bf = rng.standard_normal((B, T, I)).astype(np.float32)
    Y0, Y_h0 = _ort_run(model0, {"X": x_bf.transpose(1, 0, 2).copy()})

    gru, initial_h, _ = _without_stored_inputs(model1)
    assert gru.batch_first is True and initial_h.shape == (B, D, H)
    out, hn = gru(x_bf, initial_h.transpose(1, 0, 2))
    np.testing.assert_allclose(out, _merge_y(Y0, 0).transpose(1, 0, 2), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, Y_h0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("how", ["initializer", "constant"])
def test_from_onnx_stored_zero_initial_h_is_the_default(how):
    """A stored all-zero initial_h is what the module starts from anyway: accepted."""
    import_optional("onnx")
    import_optional("onnxruntime")
    rng = _rng(37)
    W, R, Bias = _onnx_weights(rng, 2, 3, 4, True)
    model = _store_inputs(
        _onnx_gru_model(W, R, Bias, direction="bidirectional", lbr=1),
        {"initial_h": np.zeros((2, 3, 4), np.float32)},
        how,
    )
    gru = from_onnx(model)
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    Y, Y_h = _ort_run(model, {"X": x})
    out, hn = gru(x)
    np.testing.assert_allclose(out, _merge_y(Y, 0), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, Y_h, rtol=0, atol=1e-5)


def test_from_onnx_omitted_and_runtime_inputs_accepted():
    """'' omits an input (also in the middle or at the end); graph inputs and values computed
    by other nodes are run-time inputs, supplied when calling the module."""
    onnx = import_optional("onnx")
    from onnx import helper

    W, R, Bias = _onnx_weights(_rng(38), 1, 3, 4, True)
    for names in (
        ["X", "W", "R", "B", "", ""],
        ["X", "W", "R", "B", ""],
        ["X", "W", "R", "B"],
        ["X", "W", "R", "", "", "initial_h"],
    ):
        model = _onnx_gru_model(W, R, Bias)
        model.graph.node[0].input[:] = names
        assert from_onnx(model).bias is (names[3] == "B")
    # initial_h computed by another node (an Identity of the graph input)
    model = _onnx_gru_model(W, R, Bias, with_lengths=True)
    model.graph.node.insert(0, helper.make_node("Identity", ["initial_h"], ["h_copy"]))
    model.graph.node[1].input[5] = "h_copy"
    onnx.checker.check_model(model)
    assert from_onnx(model).hidden_size == 4


@pytest.mark.parametrize(
    "attrs, name",
    [
        ({"clip": 5.0}, "clip"),
        ({"activations": ["Relu", "Tanh"]}, "activations"),
        ({"activations": ["Sigmoid", "Tanh"], "activation_alpha": [1.0]}, "activation_alpha"),
        ({"activations": ["Sigmoid", "Tanh"], "activation_beta": [1.0]}, "activation_beta"),
    ],
)
def test_from_onnx_unsupported_attributes(attrs, name):
    import_optional("onnx")
    W, R, Bias = _onnx_weights(_rng(16), 1, 3, 2, True)
    model = _onnx_gru_model(W, R, Bias, extra_attrs=attrs)
    with pytest.raises(ValueError, match=name):
        from_onnx(model)


def test_from_onnx_default_activations_accepted():
    import_optional("onnx")
    W, R, Bias = _onnx_weights(_rng(17), 2, 3, 2, True)
    model = _onnx_gru_model(
        W,
        R,
        Bias,
        direction="bidirectional",
        extra_attrs={"activations": ["Sigmoid", "Tanh", "Sigmoid", "Tanh"]},
    )
    assert from_onnx(model).bidirectional is True


def test_from_onnx_errors():
    onnx = import_optional("onnx")
    from onnx import helper

    rng = _rng(18)
    W, R, Bias = _onnx_weights(rng, 1, 3, 2, True)
    with pytest.raises(ValueError, match="graph input, not an initializer"):
        from_onnx(_onnx_gru_model(W, R, Bias, weights_as_inputs=True))
    with pytest.raises(ValueError, match="hidden_size=3"):
        from_onnx(_onnx_gru_model(W, R, Bias, extra_attrs={"hidden_size": 3}))
    with pytest.raises(ValueError, match="R must have shape"):
        bad = _onnx_gru_model(W, R, Bias)
        for node in bad.graph.node:
            for attr in node.attribute:
                if attr.name == "direction":
                    attr.s = b"bidirectional"
        from_onnx(bad)

    empty = helper.make_model(helper.make_graph([], "empty", [], []))
    with pytest.raises(ValueError, match="no GRU node"):
        from_onnx(empty)

    # two GRU nodes: node_name is required and picks one
    W2, R2, B2 = _onnx_weights(rng, 1, 3, 2, True)
    model = _onnx_gru_model(W, R, Bias, lbr=1, name="first")
    second = _onnx_gru_model(W2, R2, B2, lbr=0, name="second")
    graph = model.graph
    for init in second.graph.initializer:
        init.name += "2"
        graph.initializer.append(init)
    node = second.graph.node[0]
    node.input[:] = ["X", "W2", "R2", "B2", "", "initial_h"]
    node.output[:] = ["Y2", "Y_h2"]
    graph.node.append(node)
    with pytest.raises(ValueError, match=r"first.*second"):
        from_onnx(model)
    with pytest.raises(ValueError, match="no GRU node named 'third'"):
        from_onnx(model, node_name="third")
    g1 = from_onnx(model, node_name="first")
    g2 = from_onnx(model, node_name="second")
    assert g1.reset_after is True and g2.reset_after is False
    np.testing.assert_array_equal(g2.weight_hh_l0[2 * 2 :], R2[0, 4:])


# ============================================================================================
# ONNX export
# ============================================================================================


def _session(model):
    ort = import_optional("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # opset 13/14 exports warn of their overridable initializers
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "h0_mode, give_h0",
    [("optional", False), ("optional", True), ("required", True), ("none", False)],
)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_to_onnx_runs_in_onnxruntime(
    num_layers, mode, batch_first, bias, reset_after, h0_mode, give_h0
):
    import_optional("onnx")
    import_optional("onnxruntime")
    I, H = 4, 5
    gru = cygru.GRU(
        I,
        H,
        num_layers=num_layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=mode == "bidirectional",
        reset_after=reset_after,
        reverse=mode == "reverse",
        seed=num_layers,
    )
    D = gru.num_directions
    buf = io.BytesIO()
    model = to_onnx(gru, buf, h0=h0_mode)
    sess = _session(model)
    assert buf.getvalue() == model.SerializeToString()
    expected_inputs = ["x"] + ([] if h0_mode == "none" else ["h0"]) + ["sequence_lens"]
    assert [i.name for i in sess.get_inputs()] == expected_inputs
    assert [i.name for i in model.graph.input] == (
        ["x"] + ([] if h0_mode == "none" else ["h0"]) + ["sequence_lens"]
    )  # optional lengths
    assert [o.name for o in sess.get_outputs()] == ["output", "h_n"]
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(grus) == num_layers
    assert all(
        a.i == int(reset_after)
        for n in grus
        for a in n.attribute
        if a.name == "linear_before_reset"
    )

    rng = _rng(21)
    for T, B in ((6, 3), (2, 1)):  # dynamic time and batch dims
        x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
        feeds = {"x": x}
        h0 = None
        if give_h0:
            h0 = rng.standard_normal((num_layers * D, B, H)).astype(np.float32)
            feeds["h0"] = h0
        lengths = None
        if T == 6:  # a padded batch too, with the initial state or without
            lengths = np.array([6, 2, 5], dtype=np.int32)
            feeds["sequence_lens"] = lengths
        out, hn = sess.run(["output", "h_n"], feeds)
        ref_out, ref_hn = gru(x, h0, lengths=lengths)
        assert out.shape == ref_out.shape and hn.shape == ref_hn.shape
        np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)
        np.testing.assert_allclose(hn, ref_hn, rtol=0, atol=1e-5)


def test_to_onnx_h0_broadcast_over_batch():
    import_optional("onnxruntime")
    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, seed=3)
    sess = _session(to_onnx(gru, io.BytesIO()))
    rng = _rng(22)
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    h0 = rng.standard_normal((4, 1, 4)).astype(np.float32)
    out, hn = sess.run(None, {"x": x, "h0": h0})
    ref_out, ref_hn = gru(x, np.ascontiguousarray(np.broadcast_to(h0, (4, 3, 4))))
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, ref_hn, rtol=0, atol=1e-5)


def test_to_onnx_float64_exports_float32():
    onnx = import_optional("onnx")
    import_optional("onnxruntime")
    gru = cygru.GRU(3, 4, num_layers=2, batch_first=True, dtype=np.float64, seed=4)
    model = to_onnx(gru, io.BytesIO())
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = _rng(23).standard_normal((2, 5, 3))
    (out, hn) = _session(model).run(None, {"x": x.astype(np.float32)})
    ref_out, ref_hn = gru(x)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, ref_hn, rtol=0, atol=1e-5)


def test_to_onnx_paths_and_errors(tmp_path):
    onnx = import_optional("onnx")
    gru = cygru.GRU(2, 3, seed=5)
    for target in (tmp_path / "a.onnx", str(tmp_path / "b.onnx")):
        model = to_onnx(gru, target)
        loaded = onnx.load(str(target))
        assert loaded == model
        onnx.checker.check_model(loaded)
    with open(tmp_path / "c.onnx", "wb") as fh:
        to_onnx(gru, fh)
    assert onnx.load(str(tmp_path / "c.onnx")) == model
    model = to_onnx(gru, io.BytesIO(), opset=13)
    assert model.opset_import[0].version == 13
    with pytest.raises(ValueError, match="opset"):
        to_onnx(gru, io.BytesIO(), opset=7)
    with pytest.raises(ValueError, match="h0"):
        to_onnx(gru, io.BytesIO(), h0="maybe")
    with pytest.raises(TypeError, match="GRU"):
        to_onnx(cygru.GRUCell(2, 3), io.BytesIO())
    with pytest.raises(TypeError, match="path or a binary file"):
        to_onnx(gru, 3.5)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_to_cygru_to_onnxruntime_round_trip(batch_first, bidirectional):
    torch = import_optional("torch")
    import_optional("onnx")
    import_optional("onnxruntime")
    torch.manual_seed(7)
    tgru = torch.nn.GRU(6, 5, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    gru = from_torch(tgru)
    sess = _session(to_onnx(gru, io.BytesIO()))
    D = 2 if bidirectional else 1
    rng = _rng(24)
    x = rng.standard_normal((3, 7, 6) if batch_first else (7, 3, 6)).astype(np.float32)
    h0 = rng.standard_normal((2 * D, 3, 5)).astype(np.float32)
    with torch.no_grad():
        t_out, t_hn = tgru(torch.from_numpy(x), torch.from_numpy(h0))
    out, hn = sess.run(None, {"x": x, "h0": h0})
    np.testing.assert_allclose(out, t_out.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, t_hn.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_to_onnx_opsets_and_method(opset):
    import_optional("onnxruntime")
    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=8)
    buf = io.BytesIO()
    model = gru.to_onnx(buf, opset=opset)  # the method form forwards to cygru.interop.to_onnx
    assert model.opset_import[0].version == opset
    assert buf.getvalue() == to_onnx(gru, io.BytesIO(), opset=opset).SerializeToString()
    x = _rng(25).standard_normal((2, 5, 3)).astype(np.float32)
    out, hn = _session(model).run(None, {"x": x})
    ref_out, ref_hn = gru(x)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(hn, ref_hn, rtol=0, atol=1e-5)


# ONNX Runtime logs from C++ to the process's stderr, which pytest's capsys does not see: the
# sessions are made in a child process at the default log level (warnings included), and its
# stderr is read. The script prints the opsets it loaded so the test knows it ran.
_ORT_WARNINGS_SCRIPT = r"""
import io, sys
import onnxruntime as ort
import cygru

opsets = [int(a) for a in sys.argv[1:]]
modules = [
    cygru.GRU(3, 4, seed=0),
    cygru.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=1),
    cygru.GRU(3, 4, num_layers=3, reverse=True, bias=False, reset_after=False, seed=2),
]
for opset in opsets:
    for gru in modules:
        models = [gru.to_onnx(io.BytesIO(), opset=opset)]  # the default export
        models += [
            gru.to_onnx(io.BytesIO(), opset=opset, h0=h0, lengths=lengths)
            for h0 in ("optional", "required", "none")
            for lengths in ("optional", "required", "none")
        ]
        for model in models:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
print("loaded", *opsets)
"""


def _ort_session_stderr(*opsets):
    import_optional("onnx")
    import_optional("onnxruntime")
    result = subprocess.run(
        [sys.executable, "-c", _ORT_WARNINGS_SCRIPT, *map(str, opsets)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["loaded", *map(str, opsets)]
    return result.stderr


def test_to_onnx_sessions_log_no_warnings():
    """Issue 22.5: a session of a default export (and of every h0/lengths option, at every
    opset with ONNX's optional type) logs nothing at ONNX Runtime's default level."""
    stderr = _ort_session_stderr(15, 17, 21)
    assert stderr.strip() == "", stderr[-3000:]


def test_to_onnx_opset_13_warns_as_documented():
    """Before opset 15 an optional input is an overridable initializer, of which ONNX Runtime
    warns as to_onnx's docstring says (this also shows the capture above sees warnings)."""
    stderr = _ort_session_stderr(13)
    warnings = [line for line in stderr.splitlines() if "[W:onnxruntime" in line]
    assert warnings and all("appears in graph inputs" in line for line in warnings)
    assert {line.split("Initializer ")[1].split()[0] for line in warnings} == {
        "h0",
        "sequence_lens",
    }


@pytest.mark.parametrize("opset", [13, 15, 17, 21])
@pytest.mark.parametrize("lengths_mode", ["optional", "required", "none"])
@pytest.mark.parametrize("h0_mode", ["optional", "required", "none"])
def test_to_onnx_every_option_equals_cygru(h0_mode, lengths_mode, opset):
    """Every combination of h0= and lengths=, fed every way the graph allows (an optional
    input fed, fed None, or left out; an optional sequence_lens also fed empty), computes
    what the module does."""
    import_optional("onnxruntime")
    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, seed=9)
    model = to_onnx(gru, io.BytesIO(), opset=opset, h0=h0_mode, lengths=lengths_mode)
    sess = _session(model)
    optional_type = opset >= 15
    listed = [i.name for i in sess.get_inputs()]
    overridable = [i.name for i in sess.get_overridable_initializers()]
    for name, mode in (("h0", h0_mode), ("sequence_lens", lengths_mode)):
        assert (name in listed) is (mode == "required" or (mode == "optional" and optional_type))
        assert (name in overridable) is (mode == "optional" and not optional_type)
    rng = _rng(26)
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    h0 = rng.standard_normal((4, 3, 4)).astype(np.float32)
    lengths = np.array([6, 2, 4], dtype=np.int32)
    h0_ways = {"optional": ["fed", "left out"], "required": ["fed"], "none": ["left out"]}
    if h0_mode == "optional" and optional_type:
        h0_ways["optional"].append("None")
    lens_ways = {"optional": ["fed", "left out", "empty"], "required": ["fed"]}
    lens_ways["none"] = ["left out"]
    if lengths_mode == "optional" and optional_type:
        lens_ways["optional"].append("None")
    for h0_way in h0_ways[h0_mode]:
        for lens_way in lens_ways[lengths_mode]:
            feeds = {"x": x}
            if h0_way != "left out":
                feeds["h0"] = h0 if h0_way == "fed" else None
            if lens_way != "left out":
                feeds["sequence_lens"] = {
                    "fed": lengths,
                    "None": None,
                    "empty": np.zeros(0, np.int32),
                }[lens_way]
            out, hn = sess.run(["output", "h_n"], feeds)
            ref_out, ref_hn = gru(
                x,
                h0 if h0_way == "fed" else None,
                lengths=lengths if lens_way == "fed" else None,
            )
            np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5, err_msg=str(feeds))
            np.testing.assert_allclose(hn, ref_hn, rtol=0, atol=1e-5, err_msg=str(feeds))
    # and the model converts back to the same module
    back = from_onnx(model)
    assert back.batch_first and back.bidirectional and back.num_layers == 2
    for name, value in gru.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value)


def test_missing_onnx_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(ImportError, match=r"pip install \"cygru\[onnx\]\""):
        to_onnx(cygru.GRU(2, 3), io.BytesIO())
    with pytest.raises(ImportError, match=r"pip install \"cygru\[onnx\]\""):
        from_onnx("model.onnx")

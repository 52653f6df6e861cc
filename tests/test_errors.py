"""Errors that name their function, and inputs every entry point takes alike (issue 23,
items 9 and 10): ExportedWeights.forward validates as cygru.GRU does, gradcheck validates
every argument, arrays of either byte order are accepted everywhere, and the bad arguments
a sweep of the functional, gradcheck, capi and interop entry points found."""

import io
import warnings

import numpy as np
import pytest
from optional_deps import import_optional

import cygru
import cygru.capi as capi
from cygru import functional as F

BIG = {np.float32: ">f4", np.float64: ">f8"}  # big-endian twins (non-native here)


def _rng(seed=0):
    return np.random.default_rng(seed)


# ============================================================================================
# 23.9: ExportedWeights.forward refuses what cygru.GRU refuses
# ============================================================================================


@pytest.mark.parametrize("which", ["x", "h0"])
@pytest.mark.parametrize("bad", ["complex", "str", "object"])
def test_exported_forward_refuses_what_gru_refuses(which, bad):
    gru = cygru.GRU(3, 4, num_layers=2, seed=0)
    w = capi.export_weights(gru)
    x = np.ones((5, 2, 3))
    h0 = np.zeros((2, 2, 4))
    make = {
        "complex": lambda a: a + 1j,
        "str": lambda a: a.astype(str),
        "object": lambda a: a.astype(object),
    }[bad]
    args = {"x": x, "h0": h0}
    args[which] = make(args[which])
    with pytest.raises(TypeError) as from_gru:
        gru(args["x"], args["h0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it warned (ComplexWarning) and ran on the real part
        with pytest.raises(TypeError) as from_capi:
            w.forward(args["x"], args["h0"])
    message = str(from_capi.value)
    assert message.startswith(f"cygru.capi.ExportedWeights.forward: {which} must hold real ")
    # the same check (cygru._arrays) says the same thing after the caller's name
    assert message.split(": ", 1)[1] == str(from_gru.value).split(": ", 1)[1]


def test_exported_forward_still_names_wrong_shapes():
    w = capi.export_weights(cygru.GRU(3, 4, seed=0))
    with pytest.raises(ValueError, match=r"^cygru\.capi\.ExportedWeights\.forward: expected x "):
        w.forward(np.ones((5, 2, 4)))
    with pytest.raises(ValueError, match=r"^cygru\.capi\.ExportedWeights\.forward: expected h0 "):
        w.forward(np.ones((5, 2, 3)), np.zeros((1, 3, 4)))


# ============================================================================================
# 23.10: gradcheck validates every argument
# ============================================================================================

GRADCHECK_BAD = [
    (dict(n_projections=0), ValueError, "n_projections must be >= 1, got 0"),
    (dict(n_projections=-2), ValueError, "n_projections must be >= 1, got -2"),
    (dict(n_projections=True), TypeError, "n_projections must be an integer, got bool True"),
    (dict(n_projections=2.0), TypeError, "n_projections must be an integer, got float 2.0"),
    (dict(max_elements="a"), TypeError, "max_elements must be an integer, got str 'a'"),
    (dict(max_elements=-1), ValueError, "max_elements must be >= 0, got -1"),
    (dict(max_elements=False), TypeError, "max_elements must be an integer, got bool False"),
    (dict(eps=0), ValueError, "eps must be a finite number > 0, got 0.0"),
    (dict(eps=-1e-6), ValueError, "eps must be a finite number > 0, got -1e-06"),
    (dict(eps=float("nan")), ValueError, "eps must be a finite number > 0, got nan"),
    (dict(eps=float("inf")), ValueError, "eps must be a finite number > 0, got inf"),
    (dict(eps=True), TypeError, "eps must be a finite number > 0, got bool True"),
    (dict(eps="1e-6"), TypeError, "eps must be a finite number > 0, got str '1e-6'"),
    (dict(eps=1e-6j), TypeError, "eps must be a finite number > 0, got complex 1e-06j"),
    (dict(atol=-1), ValueError, "atol must be a finite number >= 0, got -1.0"),
    (dict(atol=float("nan")), ValueError, "atol must be a finite number >= 0, got nan"),
    (dict(atol=None), TypeError, "atol must be a finite number >= 0, got NoneType None"),
    (dict(rtol=float("inf")), ValueError, "rtol must be a finite number >= 0, got inf"),
    (dict(rtol=np.array([1e-3, 1e-3])), TypeError, "rtol must be a finite number >= 0"),
    (dict(seed=-1), ValueError, "seed must be None or a non-negative integer, got -1"),
    (dict(seed=1.5), TypeError, "seed must be None or a non-negative integer, got float 1.5"),
    (dict(seed=True), TypeError, "seed must be None or a non-negative integer, got bool True"),
]


@pytest.mark.parametrize("kwargs, kind, expected", GRADCHECK_BAD, ids=lambda v: repr(v)[:40])
def test_gradcheck_validates_every_argument(kwargs, kind, expected):
    gru = cygru.GRU(3, 4, seed=0)
    x = _rng().standard_normal((4, 2, 3))
    with pytest.raises(kind) as info:
        cygru.gradcheck(gru, x, **kwargs)
    assert type(info.value) is kind
    assert str(info.value).startswith(f"cygru.gradcheck: {expected}"), str(info.value)


def test_gradcheck_accepts_the_edges_of_its_ranges():
    gru = cygru.GRU(3, 4, seed=0)
    x = _rng().standard_normal((4, 2, 3))
    # every tensor by random directions (one each), numpy integers, atol 0, a seed of None
    assert cygru.gradcheck(gru, x, max_elements=0, n_projections=np.int64(1), atol=0, seed=None)
    assert cygru.gradcheck(cygru.GRUCell(3, 2, seed=0), x[0], eps=np.float32(1e-4), rtol=0.01)


def test_gradcheck_names_itself_for_bad_module_and_arrays():
    x = _rng().standard_normal((4, 2, 3))
    with pytest.raises(TypeError, match=r"^cygru\.gradcheck: expected a cygru\.GRU"):
        cygru.gradcheck("gru", x)
    with pytest.raises(TypeError, match=r"^cygru\.gradcheck: x must hold real numbers"):
        cygru.gradcheck(cygru.GRU(3, 4, seed=0), x + 1j)


# ============================================================================================
# 23.10: either byte order, everywhere weights or inputs are taken
# ============================================================================================


def _big(a):
    a = np.asarray(a)
    out = a.astype(BIG[a.dtype.type])
    assert not out.dtype.isnative and np.array_equal(out, a)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_big_endian_arrays_through_functional_gru(dtype):
    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    x = _rng().standard_normal((5, 2, 3)).astype(dtype)
    h0 = _rng(1).standard_normal((4, 2, 4)).astype(dtype)
    params = gru.state_dict()
    ref = F.gru(x, params, h0, num_layers=2, bidirectional=True)
    big_params = {k: _big(v) for k, v in params.items()}  # was TypeError: "got >f4"
    out = F.gru(_big(x), big_params, _big(h0), num_layers=2, bidirectional=True)
    for got, want in zip(out, ref):
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_big_endian_arrays_through_functional_gru_cell(dtype):
    cell = cygru.GRUCell(3, 4, dtype=dtype, seed=0)
    x = _rng().standard_normal((2, 3)).astype(dtype)
    h = _rng(1).standard_normal((2, 4)).astype(dtype)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    ref = F.gru_cell(x, h, *weights)
    got = F.gru_cell(_big(x), _big(h), *(_big(w) for w in weights))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_big_endian_arrays_through_modules_and_load_state_dict(dtype):
    gru = cygru.GRU(3, 4, dtype=dtype, seed=0)
    cell = cygru.GRUCell(3, 4, dtype=dtype, seed=0)
    x = _rng().standard_normal((5, 2, 3)).astype(dtype)
    h0 = _rng(1).standard_normal((1, 2, 4)).astype(dtype)
    ref_gru, ref_cell = gru(x, h0), cell(x[0], h0[0])
    for got, want in zip(gru(_big(x), _big(h0)), ref_gru):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(cell(_big(x[0]), _big(h0[0])), ref_cell)
    twin = cygru.GRU(3, 4, dtype=dtype, seed=5)
    twin.load_state_dict({k: _big(v) for k, v in gru.state_dict().items()})
    assert all(p.dtype.isnative for _, p in twin.named_parameters())
    np.testing.assert_array_equal(twin(x, h0)[0], ref_gru[0])
    cell_twin = cygru.GRUCell(3, 4, dtype=dtype, seed=5)
    cell_twin.load_state_dict({k: _big(v) for k, v in cell.state_dict().items()})
    np.testing.assert_array_equal(cell_twin(x[0], h0[0]), ref_cell)
    # a dtype given in the other byte order names the same (native) dtype
    assert cygru.GRU(3, 4, dtype=BIG[dtype]).dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_big_endian_arrays_through_the_c_api_wrapper(dtype):
    gru = cygru.GRU(3, 4, num_layers=2, dtype=dtype, seed=0)
    w = capi.export_weights(gru)
    x = _rng().standard_normal((5, 2, 3)).astype(dtype)
    h0 = _rng(1).standard_normal((2, 2, 4)).astype(dtype)
    ref = w.forward(x, h0)
    got = w.forward(_big(x), _big(h0))
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    np.testing.assert_array_equal(ref[0], gru(x, h0)[0])


def test_big_endian_weights_given_to_from_onnx():
    onnx = import_optional("onnx")
    from onnx import TensorProto, helper

    H, I = 4, 3
    rng = _rng(3)
    W = rng.standard_normal((1, 3 * H, I)).astype(np.float32)
    R = rng.standard_normal((1, 3 * H, H)).astype(np.float32)
    node = helper.make_node("GRU", ["X", "W", "R"], ["Y"], hidden_size=H)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
            for n, s in (("X", ["T", "B", I]), ("W", W.shape), ("R", R.shape))
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph)
    assert isinstance(model, onnx.ModelProto)
    ref = cygru.from_onnx(model, weights={"W": W, "R": R})
    got = cygru.from_onnx(model, weights={"W": _big(W), "R": _big(R)})
    assert got.dtype == np.float32
    for name, value in ref.state_dict().items():
        np.testing.assert_array_equal(got.state_dict()[name], value)


# ============================================================================================
# 23.10: what a sweep of the public entry points' bad arguments found
# ============================================================================================


@pytest.mark.parametrize("method", ["workspace_size", "cell_workspace_size"])
@pytest.mark.parametrize("bad", ["a", 1.5, None, True, -1, np.ones(2)])
def test_exported_workspace_queries_name_themselves(method, bad):
    w = capi.export_weights(cygru.GRU(3, 4, seed=0))
    args = (bad, 2) if method == "workspace_size" else (bad,)
    with pytest.raises((TypeError, ValueError)) as info:  # was "an integer is required"
        getattr(w, method)(*args)
    assert str(info.value).startswith(f"cygru.capi.ExportedWeights.{method}: "), info.value
    assert w.workspace_size(np.int64(5), 2) == w.workspace_size(5, 2)


@pytest.mark.parametrize("params", [np.ones(3), [1, 2], "weights", None, 3])
def test_functional_gru_names_itself_for_params_that_are_not_a_mapping(params):
    x = np.ones((2, 1, 3), np.float32)
    with pytest.raises(TypeError) as info:  # an ndarray gave IndexError
        F.gru(x, params)
    assert str(info.value).startswith("cygru.functional.gru: params must map PyTorch parameter")


@pytest.mark.parametrize("bad", ["no", np.ones(3), 2, None])
def test_functional_gru_cell_validates_reset_after(bad):
    cell = cygru.GRUCell(3, 4, seed=0)
    with pytest.raises(TypeError, match=r"^cygru\.functional\.gru_cell: reset_after must be True"):
        # "no" was read as True, an array gave NumPy's ambiguous truth value error
        F.gru_cell(np.ones(3), None, cell.weight_ih, cell.weight_hh, reset_after=bad)


@pytest.mark.parametrize("bad", [np.ones(3), 1, b"gru_l0"])
def test_from_onnx_validates_node_name(bad):
    import_optional("onnx")
    model = cygru.GRU(3, 4, seed=0).to_onnx(io.BytesIO())
    with pytest.raises(TypeError, match=r"^cygru\.from_onnx: node_name must be None or a GRU"):
        cygru.from_onnx(model, bad)


@pytest.mark.parametrize("bad", ["17", 17.0, None, True])
def test_to_onnx_validates_opset(bad):
    import_optional("onnx")
    with pytest.raises(TypeError, match=r"^to_onnx: opset must be an integer"):
        cygru.to_onnx(cygru.GRU(3, 4, seed=0), io.BytesIO(), opset=bad)
    assert cygru.to_onnx(cygru.GRU(3, 4, seed=0), io.BytesIO(), opset=np.int64(17)) is not None


def test_to_onnx_validates_h0_that_is_an_array():
    import_optional("onnx")
    with pytest.raises(ValueError, match=r"^to_onnx: h0 must be 'optional', 'required'"):
        cygru.to_onnx(cygru.GRU(3, 4, seed=0), io.BytesIO(), h0=np.zeros((1, 1, 4)))

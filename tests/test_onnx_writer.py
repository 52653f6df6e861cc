"""The ONNX writer below the modules (cygru/_onnx.py): ``GRU.to_onnx`` and the converter
``cygru.to_onnx`` are the same export through it (the modules no longer import the
converters: tests/test_import_graph.py), with the same models and the same errors."""

import io

import numpy as np
import pytest
from optional_deps import import_optional

import cygru
from cygru import _onnx

import_optional("onnx")

MODULES = [
    dict(input_size=3, hidden_size=4),
    dict(input_size=2, hidden_size=3, num_layers=2, bidirectional=True, batch_first=True),
    dict(input_size=2, hidden_size=3, num_layers=3, reverse=True, bias=False),
    dict(input_size=3, hidden_size=2, reset_after=False, dtype=np.float64),
]
EXPORTS = [{}, {"opset": 13, "h0": "required", "lengths": "none"}, {"lengths": True, "opset": 15}]


@pytest.mark.parametrize("options", MODULES)
@pytest.mark.parametrize("kwargs", EXPORTS)
def test_method_function_and_writer_write_the_same_model(options, kwargs):
    gru = cygru.GRU(**options, seed=3)
    a, b, c = io.BytesIO(), io.BytesIO(), io.BytesIO()
    model = gru.to_onnx(a, **kwargs)
    cygru.to_onnx(gru, b, **kwargs)
    # the writer needs only the options and the weights, not the module
    plain = {name: getattr(gru, name) for name in _onnx.GRU_OPTIONS}
    weights = {k: np.array(v) for k, v in gru.state_dict().items()}
    _onnx.write_gru(plain, weights, c, **kwargs)
    assert a.getvalue() == b.getvalue() == c.getvalue() == model.SerializeToString()
    assert (
        model.opset_import[0].version
        == kwargs.get("opset", _onnx.DEFAULT_OPSET)
        == (kwargs.get("opset", 17))
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"h0": "maybe"}, ValueError, "^to_onnx: h0 must be 'optional', 'required' or 'none'"),
        ({"lengths": "some"}, ValueError, "^to_onnx: lengths must be 'optional', 'required'"),
        ({"opset": 12}, ValueError, "^to_onnx: opset must be between 13 and"),
        ({"opset": 17.0}, TypeError, "^to_onnx: opset must be an integer, got float"),
        ({"opset": True}, TypeError, "^to_onnx: opset must be an integer, got bool"),
    ],
)
def test_method_and_function_refuse_alike(kwargs, error, match):
    gru = cygru.GRU(2, 3, seed=0)
    buf = io.BytesIO()
    with pytest.raises(error, match=match) as by_method:
        gru.to_onnx(buf, **kwargs)
    with pytest.raises(error, match=match) as by_function:
        cygru.to_onnx(gru, buf, **kwargs)
    assert str(by_method.value) == str(by_function.value)
    assert buf.getvalue() == b""  # nothing written


def test_bad_target_and_bad_module():
    gru = cygru.GRU(2, 3, seed=0)
    for call in (lambda: gru.to_onnx(42), lambda: cygru.to_onnx(gru, 42)):
        with pytest.raises(TypeError, match="^to_onnx: path_or_file must be a path or a binary"):
            call()
    with pytest.raises(TypeError, match="^to_onnx exports a cygru.GRU, got GRUCell"):
        cygru.to_onnx(cygru.GRUCell(2, 3), io.BytesIO())


def test_a_subclass_may_override_to_onnx_with_the_function(tmp_path):
    """cygru.to_onnx does not dispatch to the module's method (it calls the writer), so
    a subclass whose to_onnx calls cygru.to_onnx(self, ...) does not recurse."""

    class Mine(cygru.GRU):
        def to_onnx(self, path_or_file, **kwargs):
            return cygru.to_onnx(self, path_or_file, opset=15, **kwargs)

    gru = Mine(2, 3, seed=1)
    path = tmp_path / "m.onnx"
    model = gru.to_onnx(path)
    assert model.opset_import[0].version == 15
    assert path.read_bytes() == model.SerializeToString()
    back = cygru.from_onnx(str(path))
    x = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(back(x)[0], gru(x)[0], rtol=1e-6, atol=1e-6)


def test_the_writer_takes_any_host_convertible_weights():
    """Weights go through cygru._device.to_host (a GPU module's CuPy arrays are copied to
    the host): nested lists give the same model as the module's arrays."""
    gru = cygru.GRU(2, 3, num_layers=2, seed=0)
    weights = {k: np.asarray(v).tolist() for k, v in gru.state_dict().items()}
    plain = {name: getattr(gru, name) for name in _onnx.GRU_OPTIONS}
    a, b = io.BytesIO(), io.BytesIO()
    _onnx.write_gru(plain, weights, a)
    gru.to_onnx(b)
    assert a.getvalue() == b.getvalue()

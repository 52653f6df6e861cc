"""cygru._device: device conversion below the argument checks and the GPU backend.

Without a GPU, a stand-in ``cupy`` module (arrays that carry a device id, a current-device
stack) checks the wiring: the checks' GPU branch (``_arrays.as_float_array`` on
``"cuda:N"``) converts through ``_device``, and ``_cupy`` serves the same functions. The
GPU itself is exercised by tests/test_gpu.py.
"""

import sys
import types

import numpy as np
import pytest

from cygru import _arrays, _cupy, _device, _errors


class _Device:
    stack = [0]

    def __init__(self, i=None):
        self.id = _Device.stack[-1] if i is None else int(i)

    def __enter__(self):
        _Device.stack.append(self.id)
        return self

    def __exit__(self, *exc):
        _Device.stack.pop()


def _fake_cupy():
    cupy = types.ModuleType("cupy")

    class ndarray:
        def __init__(self, data, device_id):
            self.data_ = np.asarray(data)
            self.device = _Device(device_id)
            self.dtype, self.shape, self.ndim = self.data_.dtype, self.data_.shape, self.data_.ndim

        def get(self):
            return self.data_.copy()

    ndarray.__module__ = "cupy"  # what cygru reads to recognise a CuPy array
    cupy.ndarray = ndarray

    def asarray(a, dtype=None):
        if isinstance(a, ndarray):
            return a
        if hasattr(a, "__cuda_array_interface__"):
            return ndarray(a.values, a.device_id)
        return ndarray(np.asarray(a, dtype), _Device.stack[-1])

    def ascontiguousarray(a, dtype=None):
        out = np.ascontiguousarray(a.data_, dtype)
        if out is a.data_:
            return a
        return ndarray(out, _Device.stack[-1])

    cupy.asarray = asarray
    cupy.ascontiguousarray = ascontiguousarray
    cupy.asnumpy = lambda a: a.get()
    cupy.zeros = lambda shape, dtype: ndarray(np.zeros(shape, dtype), _Device.stack[-1])
    cupy.cuda = types.SimpleNamespace(Device=_Device)
    return cupy


class _ForeignCuda:
    """A CUDA array of another library (PyTorch's, say): __cuda_array_interface__ only."""

    def __init__(self, values, device_id):
        self.values, self.device_id = np.asarray(values), device_id
        self.__cuda_array_interface__ = {"shape": self.values.shape}


@pytest.fixture
def cupy(monkeypatch):
    fake = _fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


def test_the_backend_and_the_checks_share_the_device_functions():
    assert _cupy.as_cupy is _device.as_cupy and _arrays.as_cupy is _device.as_cupy
    assert _cupy.ascontiguous is _device.ascontiguous
    assert _cupy.to_device is _device.to_cuda  # _cupy's takes a device id
    assert _arrays.to_device is _device.to_device  # the checks' takes "cpu" / "cuda:N"
    for name in ("to_host", "device_of", "is_cupy_array", "is_cuda_object", "zeros_on"):
        assert getattr(_arrays, name) is getattr(_device, name), name
    assert _arrays.BadType is _errors.BadType and _arrays.BadValue is _errors.BadValue
    assert issubclass(_errors.BadType, TypeError) and issubclass(_errors.BadValue, ValueError)


def test_host_arrays_never_touch_cupy():
    sys_cupy = sys.modules.get("cupy")
    a = np.arange(6.0).reshape(2, 3)
    assert _device.to_host(a) is a and _device.to_device(a, "cpu") is a
    assert _device.device_of(a) == "cpu" and not _device.is_cuda_object(a)
    assert _device.zeros_on("cpu", (2,), np.float32).dtype == np.float32
    assert sys.modules.get("cupy") is sys_cupy  # nothing imported it


def test_as_float_array_on_a_gpu_converts_through_device(cupy):
    a = cupy.ndarray(np.arange(6).reshape(2, 3), 1)  # int64 on cuda:1
    out = _arrays.as_float_array(a, np.float32, "x", device="cuda:1")
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32 and out.device.id == 1
    np.testing.assert_array_equal(out.get(), np.arange(6).reshape(2, 3))
    assert a.dtype == np.int64  # the caller's array is not changed
    # a foreign CUDA array is taken without a copy to the host
    f = _ForeignCuda(np.ones((2, 2), np.float32), 1)
    got = _arrays.as_float_array(f, np.float32, "x", device="cuda:1")
    assert isinstance(got, cupy.ndarray) and got.device.id == 1


def test_gpu_errors_say_what_was_expected(cupy):
    a = cupy.ndarray(np.ones(3), 0)
    with pytest.raises(_errors.BadType, match=r"array is on cuda:0 but the module is on cuda:1"):
        _arrays.as_float_array(a, np.float32, "x", device="cuda:1")
    with pytest.raises(_errors.BadType, match=r"x is a host \(NumPy\) array but the module"):
        _arrays.as_float_array(np.ones(3), np.float32, "x", device="cuda:0")
    with pytest.raises(_errors.BadType, match=r"x is a GPU array but the module is on the CPU"):
        _arrays.as_float_array(a, np.float32, "x")
    with pytest.raises(_errors.BadType, match=r"expected a CUDA array .* got list"):
        _device.as_cupy([1.0, 2.0])


def test_copies_between_host_and_devices(cupy):
    h = np.arange(4.0)
    d = _device.to_device(h, "cuda:1")
    assert isinstance(d, cupy.ndarray) and d.device.id == 1
    assert _device.to_cuda(d, 1) is d  # already there
    assert _device.device_of(d) == "cuda:1" and _device.is_cuda_object(d)
    np.testing.assert_array_equal(_device.to_host(d), h)
    z = _device.zeros_on("cuda:1", (2, 3), np.float64)
    assert z.device.id == 1 and not z.get().any()
    f = _ForeignCuda(np.ones(2), 0)
    assert _device.device_of(f) == "cuda"
    np.testing.assert_array_equal(_device.to_host(f), np.ones(2))

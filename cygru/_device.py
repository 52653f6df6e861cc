"""Devices: which device an array lives on, and copies between host and GPU memory.

The one place that converts arrays between NumPy and CuPy. It sits below both the
argument checks (:mod:`cygru._arrays`, which re-exports these names) and the GPU backend
(:mod:`cygru._cupy`), so that neither imports the other's layer: it imports nothing of
cygru but the argument errors (:mod:`cygru._errors`).

Pure Python (NumPy only): CuPy is imported only inside the functions that handle arrays
already on a GPU (or asked to go there), so this module imports on any machine.
"""

import numpy as np

from ._errors import BadType

__all__ = [
    "is_cupy_array",
    "dlpack_on_cuda",
    "is_cuda_object",
    "device_of",
    "device_index",
    "to_host",
    "zeros_on",
    "to_device",
    "to_cuda",
    "as_cupy",
    "ascontiguous",
]


def is_cupy_array(a):
    """True for a CuPy array (read from its type's module: never imports CuPy)."""
    return type(a).__module__.split(".")[0] == "cupy"


def dlpack_on_cuda(obj):
    """True if a DLPack exporter says its data lives on a CUDA device (kDLCUDA = 2,
    kDLCUDAManaged = 13)."""
    try:
        dev_type, _ = obj.__dlpack_device__()
    except Exception:
        return False
    return int(dev_type) in (2, 13)


def is_cuda_object(a):
    """True for CuPy arrays and foreign CUDA arrays (a PyTorch CUDA tensor, ...)."""
    if is_cupy_array(a) or hasattr(a, "__cuda_array_interface__"):
        return True
    return hasattr(a, "__dlpack_device__") and not isinstance(a, np.ndarray) and dlpack_on_cuda(a)


def device_of(a):
    """'cpu', 'cuda:N' for a CuPy array, or 'cuda' for another CUDA array-like."""
    if is_cupy_array(a):
        return f"cuda:{a.device.id}"
    if is_cuda_object(a):
        return "cuda"
    return "cpu"


def device_index(device):
    """N of a normalised device string 'cuda:N'."""
    return int(device.split(":")[1])


def to_host(a):
    """`a` as a NumPy array: NumPy arrays as they are (no copy), CuPy arrays and other
    CUDA arrays copied to host memory, PyTorch tensors detached (and copied from their
    device when needed), anything else through :func:`numpy.asarray`."""
    if isinstance(a, np.ndarray):
        return a
    if is_cupy_array(a):
        return a.get()
    if type(a).__module__.split(".")[0] == "torch" and hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if hasattr(a, "__cuda_array_interface__"):
        import cupy

        return cupy.asnumpy(cupy.asarray(a))
    return np.asarray(a)


def zeros_on(device, shape, dtype):
    """Zeros on `device` ('cpu' or 'cuda:N'; on that GPU, not the current one)."""
    if device == "cpu":
        return np.zeros(shape, dtype)
    import cupy

    with cupy.cuda.Device(device_index(device)):
        return cupy.zeros(shape, dtype)


def to_device(a, device):
    """`a` (a NumPy or CuPy array) on `device` ('cpu' or 'cuda:N')."""
    if device == "cpu":
        return to_host(a)
    return to_cuda(a, device_index(device))


def to_cuda(array, device_id=0):
    """`array` as a CuPy array on CUDA device `device_id`.

    Accepts NumPy arrays (and anything ``numpy.asarray`` takes), CuPy arrays, and objects that
    speak ``__cuda_array_interface__`` or DLPack (a PyTorch CUDA tensor: zero-copy when it is
    already on that device).  A CuPy array already on `device_id` is returned as is; one on
    another device is copied there.
    """
    import cupy

    device_id = int(device_id)
    if not isinstance(array, cupy.ndarray):
        if hasattr(array, "__cuda_array_interface__"):
            array = cupy.asarray(array)
        elif (
            hasattr(array, "__dlpack__")
            and not isinstance(array, np.ndarray)
            and dlpack_on_cuda(array)
        ):
            array = cupy.from_dlpack(array)
        else:
            with cupy.cuda.Device(device_id):
                return cupy.asarray(np.asarray(array))
    if array.device.id == device_id:
        return array
    with array.device:
        src = cupy.ascontiguousarray(array)
    with cupy.cuda.Device(device_id):
        out = cupy.empty(src.shape, dtype=src.dtype)
        if src.nbytes:
            out.data.copy_from_device(src.data, src.nbytes)
    return out


def as_cupy(a, device="cuda"):
    """A CUDA array-like as a ``cupy.ndarray`` without copying.

    `a`: a CuPy array, or an object with ``__cuda_array_interface__`` or CUDA DLPack (a
    PyTorch CUDA tensor).  `device`: ``"cuda"`` (any device) or ``"cuda:N"``; an array on
    another device raises TypeError (devices are never mixed silently).
    """
    import cupy

    if not isinstance(a, cupy.ndarray):
        if hasattr(a, "__cuda_array_interface__"):
            a = cupy.asarray(a)
        elif hasattr(a, "__dlpack__") and dlpack_on_cuda(a):
            a = cupy.from_dlpack(a)
        else:
            raise BadType(
                f"expected a CUDA array (CuPy, __cuda_array_interface__ or CUDA "
                f"DLPack), got {type(a).__name__}"
            )
    if device != "cuda":
        want = int(str(device).split(":")[1])
        if a.device.id != want:
            raise BadType(
                f"array is on cuda:{a.device.id} but the module is on {device}; move it "
                f"with cupy (with cupy.cuda.Device({want}): cupy.asarray(a)) or call "
                f"module.to('cuda:{a.device.id}')"
            )
    return a


def ascontiguous(a, dtype):
    """`a` (a CuPy array) as a C-contiguous array of `dtype` on its own device (no copy if
    it already is one)."""
    import cupy

    with a.device:
        return cupy.ascontiguousarray(a, dtype=dtype)

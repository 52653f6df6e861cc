# cython: language_level=3
"""Python-visible checks of the BLAS wrapper (the wrapper itself is inline in _blas.pxd)."""
import numpy as np
cimport numpy as cnp
from cython cimport floating
from cygru._blas cimport gemm, gemm_or_gemv

cnp.import_array()


def blas_name():
    """Return a short description of the BLAS that SciPy (and so cygru) links to."""
    try:
        import scipy
        cfg = scipy.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        extra = blas.get("openblas configuration", "")
        return f"{blas.get('name', '?')} {blas.get('version', '')} {extra}".strip()
    except Exception:  # show_config's format is not a stable API
        return "scipy.linalg.cython_blas"


def _check_gemm(floating[:, ::1] a, floating[:, ::1] b, bint trans_a, bint trans_b):
    """op(A) @ op(B) through the wrapper (for tests of the operand swap)."""
    cdef int m = a.shape[1] if trans_a else a.shape[0]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef int n = b.shape[0] if trans_b else b.shape[1]
    dtype = np.float32 if floating is float else np.float64
    c = np.empty((m, n), dtype=dtype)
    cdef floating[:, ::1] cv = c
    with nogil:
        gemm(trans_a, trans_b, m, n, k, <floating>1, &a[0, 0], a.shape[1],
             &b[0, 0], b.shape[1], <floating>0, &cv[0, 0], n)
    return c


def _check_gemm_or_gemv(floating[:, ::1] a, floating[:, ::1] w):
    """A @ W.T through the per-step path (gemv for one row of a small product, else gemm)."""
    cdef int m = a.shape[0], k = a.shape[1], n = w.shape[0]
    dtype = np.float32 if floating is float else np.float64
    c = np.empty((m, n), dtype=dtype)
    cdef floating[:, ::1] cv = c
    with nogil:
        gemm_or_gemv(m, n, k, &a[0, 0], k, &w[0, 0], k, <floating>0, &cv[0, 0], n)
    return c

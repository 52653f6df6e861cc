"""The BLAS wrapper (cygru/_blas.pxd), the only place cygru calls BLAS: the
row-major to column-major operand swap for every transpose combination, and the
per-step product's choice between gemv and gemm, against NumPy."""
import numpy as np
import pytest

from cygru import _blas

TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_operand_swap(dtype, trans_a, trans_b):
    rng = np.random.default_rng(0)
    m, k, n = 5, 7, 3                      # all different, so a swapped size cannot pass
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    got = _blas._check_gemm(a, b, trans_a, trans_b)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    assert got.shape == (m, n) and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(1, 24, 8),        # one row, small: gemv
                                     (1, 384, 128),     # one row above gemv's serial size: gemm
                                     (5, 24, 8)])       # several rows: gemm
def test_gemm_or_gemv(dtype, m, n, k):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    got = _blas._check_gemm_or_gemv(a, w)
    np.testing.assert_allclose(got, a @ w.T, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


def test_blas_name():
    name = _blas.blas_name()
    assert isinstance(name, str) and name

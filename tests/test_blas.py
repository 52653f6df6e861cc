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
    m, k, n = 5, 7, 3  # all different, so a swapped size cannot pass
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    got = _blas._check_gemm(a, b, trans_a, trans_b)
    want = (a.T if trans_a else a) @ (b.T if trans_b else b)
    assert got.shape == (m, n) and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "m, n, k",
    [
        (1, 24, 8),  # one row, small: gemv
        (1, 384, 128),  # one row above gemv's serial size: gemm
        (5, 24, 8),
    ],
)  # several rows: gemm
def test_gemm_or_gemv(dtype, m, n, k):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    got = _blas._check_gemm_or_gemv(a, w)
    np.testing.assert_allclose(got, a @ w.T, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


def test_blas_name():
    name = _blas.blas_name()
    assert isinstance(name, str) and name


# ---------------------------------------------------------------------------------------
# cygru's packed float32 and float64 kernels (cygru_gemm.h), every compiled variant this
# CPU runs
# ---------------------------------------------------------------------------------------

from cygru._kernels import VARIANT_NAMES, _packed_gemm, cpu_variant_level  # noqa: E402

DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64])


@pytest.mark.parametrize("level", range(len(VARIANT_NAMES)), ids=VARIANT_NAMES)
@pytest.mark.parametrize(
    "M,K,N",
    [
        (1, 1, 1),
        (1, 5, 7),
        (3, 4, 16),
        (7, 13, 33),
        (8, 36, 50),
        (9, 64, 384),
        (17, 130, 48),
        (100, 12, 20),
    ],
)
@pytest.mark.parametrize("columns", [False, True], ids=["rows", "columns"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@DTYPES
def test_packed_kernel_variants_match_float64(level, M, K, N, columns, accumulate, dtype):
    """Row and column packing (full 16-column panels, the 4x4-transposing fast path when
    K % 4 == 0, and tail panels), the 8-row (AVX-512) and 4-row blocks with leftover rows,
    storing and accumulating: against a float64 product."""
    if level > cpu_variant_level():
        pytest.skip(f"this CPU cannot run the {VARIANT_NAMES[level]} variant")
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    c = c0.copy()
    _packed_gemm(
        a,
        np.ascontiguousarray(w.T) if columns else w,
        c,
        accumulate=accumulate,
        level=level,
        columns=columns,
    )
    want = a.astype(np.float64) @ w.T.astype(np.float64)
    if accumulate:
        want += c0
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol * np.sqrt(K))


def test_packed_kernel_rejects_a_variant_this_cpu_cannot_run():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _packed_gemm(a, a, np.zeros((2, 2), np.float32), level=cpu_variant_level() + 1)


@pytest.mark.parametrize("level", range(len(VARIANT_NAMES)), ids=VARIANT_NAMES)
@pytest.mark.parametrize("K,N", [(1, 7), (13, 33), (64, 384), (130, 100)])
@DTYPES
def test_packed_kernel_rows_do_not_depend_on_the_row_count(level, K, N, dtype):
    """Each output element is one FMA chain over k in order, in the row blocks and in
    the leftover rows alike: any row computed alone, or in a product of any row count,
    or with a subset of the panels, gives the same bits. This is what makes a sequence
    cut into calls of any length (chaining h0) reproduce one call bit for bit. (Before,
    leftover rows summed four partial chains: a stream cut into chunks of 1 or 7 steps
    differed from one call by about 1e-7.)"""
    if level > cpu_variant_level():
        pytest.skip(f"this CPU cannot run the {VARIANT_NAMES[level]} variant")
    rng = np.random.default_rng(K * 7 + N)
    M = 203  # row blocks of 96, then 11 leftover rows
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    whole = np.zeros((M, N), dtype)
    _packed_gemm(a, w, whole, level=level)
    for rows in (
        slice(0, 1),
        slice(5, 6),
        slice(0, 7),
        slice(3, 100),
        slice(190, 203),
        slice(96, 203),
    ):
        part = np.zeros((rows.stop - rows.start, N), dtype)
        _packed_gemm(np.ascontiguousarray(a[rows]), w, part, level=level)
        assert np.array_equal(part, whole[rows]), rows

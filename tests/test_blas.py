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


# ---------------------------------------------------------------------------------------
# the unpacked dot kernel (cygru_dot.h): small batches' products straight from row-major W
# ---------------------------------------------------------------------------------------

from cygru._kernels import _dot_gemm  # noqa: E402


def _dot_reference(a, w):
    """cygru_dot.h's documented arithmetic, element by element in NumPy: 16 lanes, lane j
    summing k = j, j+16, ... in order from +0 (one rounding per multiply and per add, as
    the baseline variant without FMA does), then the fixed tree over the lanes."""
    dt = a.dtype.type
    M, K = a.shape
    N = w.shape[0]
    Kp = -(-K // 16) * 16
    ap = np.zeros((M, Kp), a.dtype)
    wp = np.zeros((N, Kp), a.dtype)
    ap[:, :K], wp[:, :K] = a, w
    lanes = np.zeros((M, N, 16), a.dtype)
    for k0 in range(0, Kp, 16):
        prod = ap[:, None, k0 : k0 + 16] * wp[None, :, k0 : k0 + 16]
        lanes = (lanes + prod).astype(dt)
    s1 = lanes[..., :8] + lanes[..., 8:]
    s2 = s1[..., :4] + s1[..., 4:]
    s3 = s2[..., :2] + s2[..., 2:]
    return s3[..., 0] + s3[..., 1]


DOT_SHAPES = [
    (1, 1, 1),
    (1, 5, 7),
    (1, 16, 16),
    (1, 64, 384),
    (1, 130, 33),
    (2, 17, 31),
    (3, 15, 16),
    (4, 128, 384),
    (5, 31, 9),
    (7, 13, 33),
    (8, 36, 50),
    (9, 64, 385),
    (17, 130, 48),
    (33, 3, 19),
    (40, 80, 47),
    (203, 64, 20),
]


@pytest.mark.parametrize("level", range(len(VARIANT_NAMES)), ids=VARIANT_NAMES)
@pytest.mark.parametrize("M,K,N", DOT_SHAPES)
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@DTYPES
def test_dot_kernel_variants_match_float64(level, M, K, N, accumulate, dtype):
    """K below 16 and not a multiple of 16, odd N, M from 1 (the matrix-vector product)
    to row blocks with leftover rows, storing and accumulating: within rounding of a
    float64 product, for every variant this CPU runs."""
    if level > cpu_variant_level():
        pytest.skip(f"this CPU cannot run the {VARIANT_NAMES[level]} variant")
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    c = c0.copy()
    a_before, w_before = a.copy(), w.copy()
    _dot_gemm(a, w, c, accumulate=accumulate, level=level)
    want = a.astype(np.float64) @ w.T.astype(np.float64)
    if accumulate:
        want += c0
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol * np.sqrt(K))
    assert np.array_equal(a, a_before) and np.array_equal(w, w_before)


@pytest.mark.parametrize("M,K,N", [(1, 5, 7), (3, 16, 20), (4, 37, 9), (9, 130, 33)])
@DTYPES
def test_dot_kernel_baseline_is_the_documented_arithmetic(M, K, N, dtype):
    """The baseline variant (a multiply and an add per term, no FMA) gives exactly the
    bits of the documented lanes and tree, computed element by element in NumPy; the
    FMA variants differ from it only by the rounding FMA skips (checked above)."""
    rng = np.random.default_rng(K * 31 + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    c = np.zeros((M, N), dtype)
    _dot_gemm(a, w, c, level=0)
    assert np.array_equal(c, _dot_reference(a, w))
    c2 = np.full((M, N), 0.25, dtype)
    _dot_gemm(a, w, c2, accumulate=True, level=0)
    assert np.array_equal(c2, (dtype(0.25) + _dot_reference(a, w)).astype(dtype))


@pytest.mark.parametrize("level", range(len(VARIANT_NAMES)), ids=VARIANT_NAMES)
@pytest.mark.parametrize("K,N", [(1, 7), (13, 33), (16, 17), (64, 384), (130, 100)])
@DTYPES
def test_dot_kernel_elements_do_not_depend_on_the_call(level, K, N, dtype):
    """Every element gets the same operations whatever rows and columns a call covers
    and wherever the rows lie in memory: any block of rows and columns computed alone
    (from views that start at other offsets within a cache line) gives the bits of the
    whole product. This is what makes a one-step call, a cell step and a long call, on
    any number of threads, agree bit for bit."""
    if level > cpu_variant_level():
        pytest.skip(f"this CPU cannot run the {VARIANT_NAMES[level]} variant")
    rng = np.random.default_rng(K * 7 + N)
    M = 150  # row blocks of 64 and leftover rows
    a = rng.standard_normal((M, K)).astype(dtype)
    w = rng.standard_normal((N, K)).astype(dtype)
    whole = np.zeros((M, N), dtype)
    _dot_gemm(a, w, whole, level=level)
    for rows, cols in [
        (slice(0, 1), slice(0, N)),
        (slice(5, 6), slice(1, N)),
        (slice(0, 7), slice(3, min(N, 20))),
        (slice(3, 100), slice(N // 2, N)),
        (slice(140, 150), slice(N - 1, N)),
        (slice(64, 150), slice(0, N)),
    ]:
        m, n = rows.stop - rows.start, cols.stop - cols.start
        part = np.zeros((m, n), dtype)
        _dot_gemm(np.ascontiguousarray(a[rows]), np.ascontiguousarray(w[cols]), part, level=level)
        assert np.array_equal(part, whole[rows, cols]), (rows, cols)
        # the same operands at every offset within a 64-byte line, as views whose rows
        # are contiguous (the engine's pieces read the caller's weights in place)
        for shift in range(1, 64 // np.dtype(dtype).itemsize, 3):
            buf_a = np.zeros(m * K + shift, dtype)
            buf_w = np.zeros(n * K + shift, dtype)
            av = buf_a[shift:].reshape(m, K)
            wv = buf_w[shift:].reshape(n, K)
            av[...] = a[rows]
            wv[...] = w[cols]
            part = np.zeros((m, n), dtype)
            _dot_gemm(av, wv, part, level=level)
            assert np.array_equal(part, whole[rows, cols]), (rows, cols, shift)


def test_dot_kernel_strided_rows_and_errors():
    """Row-strided operands (a block of a bigger matrix) and the hook's checks."""
    rng = np.random.default_rng(3)
    big_a = rng.standard_normal((6, 40)).astype(np.float32)
    big_w = rng.standard_normal((50, 40)).astype(np.float32)
    big_c = np.zeros((6, 60), np.float32)
    _dot_gemm(big_a[1:4, 2:35], big_w[10:30, 2:35], big_c[1:4, 5:25])
    want = np.zeros((3, 20), np.float32)
    _dot_gemm(
        np.ascontiguousarray(big_a[1:4, 2:35]), np.ascontiguousarray(big_w[10:30, 2:35]), want
    )
    assert np.array_equal(big_c[1:4, 5:25], want)
    assert not big_c[:, :5].any() and not big_c[:, 25:].any() and not big_c[0].any()
    with pytest.raises(ValueError, match="_dot_gemm: shapes do not match"):
        _dot_gemm(big_a, big_w[:, :39], np.zeros((6, 50), np.float32))
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _dot_gemm(big_a, big_w, np.zeros((6, 50), np.float32), level=cpu_variant_level() + 1)
    with pytest.raises(ValueError, match="rows of a, w and c must be contiguous"):
        _dot_gemm(big_a[:, ::2], big_w[:, ::2], np.zeros((6, 50), np.float32))


# ---------------------------------------------------------------------------------------
# The AVX2+FMA variants' bits, pinned: tests/data/avx2_kernel_bits.npz holds the level-1
# outputs of the packed and dot kernels as built before their AVX2 code was reshaped for
# register allocation (which must change no bit), for operands made by integer arithmetic
# alone (the same values on every platform and NumPy version).
# ---------------------------------------------------------------------------------------

import pathlib  # noqa: E402

BITS_FILE = pathlib.Path(__file__).parent / "data" / "avx2_kernel_bits.npz"
BITS_PACKED = [
    (1, 1, 1),
    (1, 5, 7),
    (1, 64, 100),
    (3, 4, 16),
    (4, 36, 64),
    (5, 17, 40),
    (7, 13, 33),
    (8, 36, 50),
    (9, 64, 84),
    (17, 130, 48),
    (100, 12, 20),
]
BITS_DOT = [
    (1, 1, 1),
    (1, 5, 7),
    (1, 16, 16),
    (1, 37, 23),
    (1, 130, 65),
    (2, 33, 17),
    (3, 16, 20),
    (4, 37, 9),
    (5, 48, 31),
    (9, 130, 33),
    (70, 20, 11),
]


def _bits_hash(n, seed):
    """n 32-bit words from a multiplicative hash of (seed, index): integer arithmetic."""
    i = np.arange(n, dtype=np.uint64) + np.uint64(seed * 7919)
    u = (i * np.uint64(2654435761) + np.uint64(12345)) % np.uint64(2**32)
    return (u * np.uint64(2246822519)) % np.uint64(2**32)


def _bits_values(n, seed, dtype):
    """n values in [-1, 1) with full mantissas (24 bits for float32, 53 for float64, so
    that a product is not exact and a chain without FMA rounds differently), from integer
    hashes and IEEE operations alone: the same bits on every platform and NumPy version."""
    if dtype == np.float32:
        m = (_bits_hash(n, seed) >> np.uint64(8)).astype(np.float64)
        return (m / 2.0**23 - 1.0).astype(np.float32)
    hi = _bits_hash(n, seed) >> np.uint64(6)  # 26 bits
    lo = _bits_hash(n, seed + 104729) >> np.uint64(5)  # 27 bits
    m = (hi * np.uint64(2**27) + lo).astype(np.float64)  # < 2**53: exact
    return m / 2.0**52 - 1.0


def _bits_operands(M, K, N, dtype):
    seed = M * 1000 + K * 10 + N
    a = _bits_values(M * K, seed, dtype).reshape(M, K)
    w = _bits_values(N * K, seed + 1, dtype).reshape(N, K)
    c0 = _bits_values(M * N, seed + 2, dtype).reshape(M, N)
    return a, w, c0


@pytest.mark.parametrize("kind", ["packed", "dot"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@DTYPES
def test_avx2_variants_keep_their_recorded_bits(kind, accumulate, dtype):
    """Every element of the AVX2+FMA packed and dot kernels (row blocks and leftover rows,
    tail panels, K not a multiple of 16, one row of A, storing and accumulating) equals,
    bit for bit, the output recorded before the AVX2 code was rewritten; where the CPU
    also runs AVX-512, that variant (the same FMA chains and tree) gives the same bits."""
    if cpu_variant_level() < 1:
        pytest.skip("this CPU cannot run the avx2 variant")
    recorded = np.load(BITS_FILE)
    tag = "f" if dtype == np.float32 else "d"
    fn = _packed_gemm if kind == "packed" else _dot_gemm
    for M, K, N in BITS_PACKED if kind == "packed" else BITS_DOT:
        a, w, c0 = _bits_operands(M, K, N, dtype)
        want = recorded[f"{kind}_{tag}_{M}_{K}_{N}_{int(accumulate)}"]
        for level in range(1, cpu_variant_level() + 1):
            c = c0.copy()
            fn(a, w, c, accumulate=accumulate, level=level)
            assert c.dtype == want.dtype and c.shape == want.shape
            assert np.array_equal(c.view(np.uint8), want.view(np.uint8)), (
                f"{VARIANT_NAMES[level]} {kind} {dtype.__name__} M={M} K={K} N={N}: "
                f"{np.count_nonzero(c != want)} elements differ from the recorded bits"
            )


# ---------------------------------------------------------------------------------------
# Every FMA variant gives the AVX2 variant's bits: the float64 AVX-512 kernels are written
# on zmm intrinsics (8-row blocks of 2 zmm per row, then a 4-row block, then single rows
# with up to 4 panels; the dot kernel's tiles and tree on zmm), float32's on GCC vector
# extensions, and each must do exactly the AVX2 variant's operations per element.
# ---------------------------------------------------------------------------------------

FMA_PACKED = [
    (1, 1, 1),
    (1, 7, 16),
    (1, 64, 100),  # B = 1: four, two, one panel in flight, a tail panel
    (2, 9, 33),
    (3, 16, 64),
    (4, 5, 17),  # one 4-row block, no 8-row block
    (5, 31, 48),
    (7, 13, 33),
    (8, 36, 50),  # one 8-row block, a tail panel of 2 columns
    (11, 3, 47),  # an 8-row block and 3 single rows
    (12, 40, 31),  # an 8-row and a 4-row block
    (15, 17, 80),  # 8, 4, then 3 single rows
    (20, 64, 96),
    (32, 128, 384),  # medium's recurrent product
    (100, 12, 20),  # a row block of 96 and a 4-row block
    (108, 33, 65),  # 96, then an 8-row and a 4-row block
    (203, 20, 49),  # two row blocks of 96, then 8 and 3 single rows
]
FMA_DOT = [
    (1, 1, 1),
    (1, 5, 7),
    (1, 8, 9),  # K a whole zmm: the masked load of a full part
    (1, 12, 15),
    (1, 16, 16),
    (1, 37, 23),
    (1, 130, 65),
    (2, 9, 3),
    (2, 33, 17),
    (3, 16, 20),
    (4, 37, 9),
    (4, 128, 384),
    (5, 48, 31),
    (9, 130, 33),
    (70, 20, 11),
]


def _run_variant(kind, a, w, c, accumulate, level):
    """c (=|+=) a @ w^T by the dot kernel, or the packed kernel with w packed by rows or
    (given transposed) by columns, of variant `level`."""
    if kind == "dot":
        _dot_gemm(a, w, c, accumulate=accumulate, level=level)
    else:
        columns = kind == "packed-columns"
        wt = np.ascontiguousarray(w.T) if columns else w
        _packed_gemm(a, wt, c, accumulate=accumulate, level=level, columns=columns)


@pytest.mark.parametrize("kind", ["packed", "packed-columns", "dot"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["store", "accumulate"])
@DTYPES
def test_fma_variants_give_the_avx2_bits(kind, accumulate, dtype):
    """The AVX-512 variants (float64's on zmm registers) against the AVX2 variant, bit for
    bit, over leftover rows after the 8- and 4-row blocks, tail panels, row blocks of 96,
    one row of A, K below and not a multiple of 16, storing and accumulating, and operands
    with exact zeros of both signs (a product -0 added to a chain that starts at +0)."""
    if cpu_variant_level() < 2:
        pytest.skip("this CPU runs no variant above avx2")
    rng = np.random.default_rng(26)
    for M, K, N in FMA_DOT if kind == "dot" else FMA_PACKED:
        a = rng.standard_normal((M, K)).astype(dtype)
        w = rng.standard_normal((N, K)).astype(dtype)
        c0 = rng.standard_normal((M, N)).astype(dtype)
        a[:, ::5] = 0.0
        a[M // 2 :, ::7] = -0.0
        c0[:, ::3] = -0.0
        a_before, w_before = a.copy(), w.copy()
        want = c0.copy()
        _run_variant(kind, a, w, want, accumulate, 1)
        for level in range(2, cpu_variant_level() + 1):
            c = c0.copy()
            _run_variant(kind, a, w, c, accumulate, level)
            assert np.array_equal(c.view(np.uint8), want.view(np.uint8)), (
                f"{VARIANT_NAMES[level]} {kind} {dtype.__name__} M={M} K={K} N={N}: "
                f"{np.count_nonzero(c.view(np.uint8) != want.view(np.uint8))} bytes differ "
                "from the avx2 variant's"
            )
        assert np.array_equal(a, a_before) and np.array_equal(w, w_before)


@pytest.mark.parametrize("K, ldw", [(96, 96), (100, 104), (128, 128), (131, 144), (256, 264)])
@DTYPES
def test_dot_kernel_aligned_blocks_give_the_avx2_bits(K, ldw, dtype):
    """Rows of W that all start at the same offset within a 64-byte line (a row stride
    that is a multiple of 64 bytes' elements) are read by the AVX-512 dot kernels in
    aligned blocks, k rotated across the 16 lanes (float64 from K = 96 on): at every
    offset, with K not a multiple of 16 and rows strided past K, the bits are the AVX2
    variant's, which reads each row from its start."""
    if cpu_variant_level() < 2:
        pytest.skip("this CPU runs no variant above avx2")
    rng = np.random.default_rng(K + ldw)
    per_line = 64 // np.dtype(dtype).itemsize
    N = 13  # tiles of 8 (float64) or 16 rows of W, halved for the leftovers
    for M in (1, 2, 3, 4):
        a = rng.standard_normal((M, K)).astype(dtype)
        w = rng.standard_normal((N, K)).astype(dtype)
        for shift in range(per_line):
            buf = np.zeros(N * ldw + per_line + shift, dtype)
            base = (-buf.ctypes.data // buf.itemsize) % per_line  # the first line start
            wv = buf[base + shift : base + shift + N * ldw].reshape(N, ldw)[:, :K]
            wv[...] = w
            assert (wv.ctypes.data // wv.itemsize) % per_line == shift
            for accumulate in (False, True):
                c0 = rng.standard_normal((M, N)).astype(dtype)
                want, got = c0.copy(), c0.copy()
                _dot_gemm(a, w, want, accumulate=accumulate, level=1)
                _dot_gemm(a, wv, got, accumulate=accumulate, level=2)
                assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (M, shift)

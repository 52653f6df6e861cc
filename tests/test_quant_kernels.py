"""The reduced-precision products (cygru/include/cygru_quant.h), every compiled variant:
each gives exactly the bits of the portable definition (level 0) on every input, and the
definition equals an independent NumPy computation (int8: exact int64 sums of the row
quantized values; bf16: the ordered chain of fused pair steps, each rounded once).

Variants: 0 portable C, 1 AVX2, 2 AVX-512 (int8: AVX512BW; bf16: AVX-512F emulation),
3 the instructions made for it (AVX512-VNNI; AVX512-BF16 where its once-per-process
self-check passed). A level this CPU cannot run is skipped with the reason."""

import numpy as np
import pytest

from cygru import _kernels as K

NAMES = K.QUANT_VARIANT_NAMES
LEVELS = pytest.mark.parametrize("level", range(len(NAMES)), ids=NAMES)
FMTS = pytest.mark.parametrize("fmt", ["int8", "bf16"])
F32_MAX = np.finfo(np.float32).max


@pytest.fixture(autouse=True)
def _restore_level():
    yield
    K._force_quant_level(-1)


def _need(fmt, level):
    top = K.quant_max_levels()[0 if fmt == "int8" else 1]
    if level > top:
        why = {
            "int8": "AVX512-VNNI" if level == 3 else ("AVX512BW" if level == 2 else "AVX2"),
            "bf16": (
                "AVX512-BF16 that passes the self-check"
                if level == 3
                else ("AVX512F/BW" if level == 2 else "AVX2+FMA")
            ),
        }[fmt]
        pytest.skip(
            f"this CPU (or compiler) has no {why}: it runs {fmt} levels 0..{top}, "
            f"not {NAMES[level]}"
        )


def _f32(bits):
    return np.asarray(bits, np.uint32).view(np.float32)


def assert_same_bits(got, want, msg=""):
    """Equal bit patterns (so +0 and -0 differ), NaN wherever the other is NaN (their
    payloads are the hardware's)."""
    got = np.asarray(got, np.float32)
    want = np.asarray(want, np.float32)
    assert got.shape == want.shape, msg
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=msg)
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[ok], want.view(np.uint32)[ok], err_msg=msg)


# ---- NumPy references ---------------------------------------------------------------


def ref_q8_rows(a):
    """The int8 row rule: (q int64 (M, K), scale float32 (M,), bad (M,))."""
    a = np.asarray(a, np.float32)
    with np.errstate(all="ignore"):
        amax = np.max(np.abs(a), axis=1).astype(np.float32)
        bad = ~np.isfinite(amax) | np.isnan(a).any(axis=1)
        zero = ~bad & (amax < np.float32(2.0**-120))
        safe = np.where(bad | zero, np.float32(1), amax).astype(np.float32)
        inv = (np.float32(127) / safe).astype(np.float32)
        q = np.rint((a * inv[:, None]).astype(np.float32))
        q = np.clip(q, -127, 127)
        q = np.where((bad | zero)[:, None], 0, q).astype(np.int64)
        scale = np.where(bad | zero, np.float32(0), safe / np.float32(127)).astype(np.float32)
    return q, scale, bad


def ref_q8(a, q, sw):
    """C = (float32)(exact sum qa * q) * (sa * sw); a non-finite row of a gives NaN."""
    qa, sa, bad = ref_q8_rows(a)
    acc = qa @ np.asarray(q, np.int64).T
    assert np.abs(acc).max(initial=0) < 2**31
    with np.errstate(all="ignore"):
        c = acc.astype(np.float32) * (sa[:, None] * np.asarray(sw, np.float32)[None, :])
    c = c.astype(np.float32)
    c[bad] = np.nan
    return c


def ref_bf16_bits(a):
    """cygru_bf16_from_f32 in NumPy: round half to even, |v| < 2^-50 to a signed zero,
    inf kept, NaN made quiet."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    mag = u & np.uint32(0x7FFFFFFF)
    hi = u >> np.uint32(16)
    with np.errstate(over="ignore"):
        r = (u + np.uint32(0x7FFF) + (hi & np.uint32(1))) >> np.uint32(16)
    r = np.where(mag < 0x26800000, hi & np.uint32(0x8000), r)
    special = hi | np.where(mag > 0x7F800000, np.uint32(0x40), np.uint32(0))
    r = np.where(mag >= 0x7F800000, special, r)
    return r.astype(np.uint16)


def ref_bf16_values(bits):
    return (np.asarray(bits, np.uint32) << np.uint32(16)).view(np.float32)


def ref_canonical(bits):
    """b() of bf16 bits (what cygru_bf16_pack stores)."""
    return ref_bf16_bits(ref_bf16_values(bits))


def _fused_add(acc, p):
    """float32(acc + p) rounded once, for float32 acc and exact float64 products p: the
    double sum made round-to-odd (TwoSum) then rounded to float32."""
    a = acc.astype(np.float64)
    with np.errstate(all="ignore"):
        s = a + p
        bb = s - a
        err = (a - (s - bb)) + (p - bb)
        even = (s.view(np.int64) & 1) == 0
        fix = np.isfinite(s) & (err != 0) & even
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
        return s.astype(np.float32)


def ref_bf16(a, wbits):
    """The bf16 product's definition: acc = +0; per pair, odd element then even, each a
    fused step acc + b(a) * b(w) rounded to float32."""
    x = ref_bf16_values(ref_bf16_bits(a)).astype(np.float64)
    w = ref_bf16_values(ref_canonical(wbits)).astype(np.float64)
    M, Kk = x.shape
    if Kk % 2:
        x = np.concatenate([x, np.zeros((M, 1))], axis=1)
        w = np.concatenate([w, np.zeros((w.shape[0], 1))], axis=1)
    acc = np.zeros((M, w.shape[0]), np.float32)
    with np.errstate(all="ignore"):
        for p in range(x.shape[1] // 2):
            for e in (2 * p + 1, 2 * p):
                acc = _fused_add(acc, x[:, e, None] * w[None, :, e])
    return acc


# ---- building blocks and running variants -------------------------------------------


def q8_block(w, q=None, scale=None):
    """(q, scale, block) of a float32 weight (Nb, K), or of given q / scale."""
    if q is None:
        q, scale = K.q8_quantize_rows(np.ascontiguousarray(w, np.float32))
    q = np.ascontiguousarray(q, np.int8)
    scale = np.ascontiguousarray(scale, np.float32)
    return q, scale, K.q8_pack_gates(q, scale, q.shape[0])


def bf16_block(w=None, bits=None):
    if bits is None:
        w = np.ascontiguousarray(w, np.float32)
        bits = K.bf16_from_f32(w.ravel()).reshape(w.shape)
    bits = np.ascontiguousarray(bits, np.uint16)
    return bits, K.bf16_pack_gates(bits, bits.shape[0])


def run(fmt, a, block, Nb, n0, N, level):
    return K._quant_gemm(fmt, a, block, Nb, n0, N, level)


def check_all(fmt, level, a, block, Nb, want, n0=0, N=None):
    """The variant gives the reference's bits for columns [n0, n0+N), and so does the
    portable definition."""
    N = Nb - n0 if N is None else N
    base = run(fmt, a, block, Nb, n0, N, 0)
    assert_same_bits(base, want[:, n0 : n0 + N], "definition vs NumPy")
    got = run(fmt, a, block, Nb, n0, N, level)
    assert_same_bits(got, base, f"{fmt} {NAMES[level]} vs definition")


# ---- the conversions ------------------------------------------------------------------


def test_q8_quantize_rows_is_the_row_rule(rng):
    a = rng.standard_normal((40, 37)).astype(np.float32) * rng.uniform(0.01, 100, (40, 1)).astype(
        np.float32
    )
    a[3] = 0
    a[4, 5] = np.inf
    a[5, 0] = np.nan
    a[6] = np.float32(2.0**-121)  # below the zero-row threshold
    a[7] = np.float32(2.0**-120)  # at it: quantized (inv = 127 * 2^120 is finite)
    a[8, :8] = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]  # ties, inv = 1
    a[8, 8:] = 0
    q, s = K.q8_quantize_rows(a)
    qr, sr, bad = ref_q8_rows(a)
    assert bad[4] and bad[5] and not bad[3]
    assert np.isnan(s[4]) and np.isnan(s[5])
    np.testing.assert_array_equal(q[~bad], qr[~bad])
    assert_same_bits(s[~bad], sr[~bad])
    np.testing.assert_array_equal(q[bad], 0)
    np.testing.assert_array_equal(q[6], 0)
    assert s[6] == 0 and s[3] == 0
    np.testing.assert_array_equal(q[7], 127)
    np.testing.assert_array_equal(q[8, :8], [127, 0, 2, 2, 0, -2, -2, 126])


def test_bf16_from_f32_is_the_rounding_rule(rng):
    special = [
        0x3F808000,  # a tie: to the even 0x3F80
        0x3F818000,  # a tie: to the even 0x3F82
        0x3F808001,  # above the tie: up
        0x267FFFFF,  # just below 2^-50: flushed
        0x26800000,  # 2^-50: kept
        0xA67FFFFF,  # -(below 2^-50): -0
        0x00000001,  # denormal: +0
        0x80000000,  # -0
        0x7F7FFFFF,  # FLT_MAX: rounds to inf
        0x7F800000,  # inf
        0xFF800000,  # -inf
        0x7F800001,  # signalling NaN: made quiet
        0xFFC00000,  # quiet NaN
    ]
    a = np.concatenate([_f32(special), rng.standard_normal(1000).astype(np.float32) * 1e30]).astype(
        np.float32
    )
    a = np.concatenate([a, _f32(rng.integers(0, 2**32, 5000, dtype=np.uint64))])
    got = K.bf16_from_f32(a)
    np.testing.assert_array_equal(got, ref_bf16_bits(a))
    np.testing.assert_array_equal(
        got[:13],
        [
            0x3F80,
            0x3F82,
            0x3F81,
            0,
            0x2680,
            0x8000,
            0,
            0x8000,
            0x7F80,
            0x7F80,
            0xFF80,
            0x7FC0,
            0xFFC0,
        ],
    )


def test_bf16_pack_canonicalizes_raw_bits():
    """A block holds b() values whatever bits it was given: denormals and values below
    2^-50 become signed zeros, NaN becomes quiet, so no variant meets a denormal (times
    2^100, a bf16 denormal would leave 2^-33 or more)."""
    bits = np.array([[0x0001, 0x8001, 0x2600, 0xA600, 0x007F]], np.uint16)
    _, block = bf16_block(bits=bits)
    a = np.full((1, 5), 2.0**100, np.float32)
    for level in range(K.quant_max_levels()[1] + 1):
        got = run("bf16", a, block, 1, 0, 1, level)
        assert got.view(np.uint32)[0, 0] == 0, (level, got)  # +0
    _, block = bf16_block(bits=np.array([[0x7F81, 0x3F80]], np.uint16))  # a signalling NaN
    for level in range(K.quant_max_levels()[1] + 1):
        assert np.isnan(run("bf16", np.ones((1, 2), np.float32), block, 1, 0, 1, level)).all()


# ---- every variant: shapes --------------------------------------------------------------

SHAPES = [
    # M, K, Nb, n0, N
    (1, 1, 1, 0, 1),
    (1, 3, 17, 16, 1),
    (1, 5, 40, 16, 24),
    (1, 128, 384, 0, 384),
    (1, 130, 100, 32, 51),
    (2, 2, 16, 0, 16),
    (3, 7, 33, 0, 33),
    (5, 63, 48, 16, 17),
    (7, 64, 64, 0, 64),
    (9, 65, 50, 32, 18),
    (13, 17, 129, 0, 129),
    (20, 31, 20, 0, 20),
    (32, 96, 80, 0, 80),
    (33, 33, 31, 0, 31),
    (70, 19, 45, 16, 29),
    (131, 258, 70, 0, 70),
]


@FMTS
@LEVELS
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M%d,K%d,Nb%d,n0=%d,N%d" % s)
def test_variants_equal_the_definition_and_numpy(fmt, level, shape, rng):
    _need(fmt, level)
    M, Kk, Nb, n0, N = shape
    lda = Kk + 3  # strided rows
    big = (rng.standard_normal((M, lda)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
    a = big[:, :Kk]
    w = (rng.standard_normal((Nb, Kk)) * rng.uniform(0.01, 3, (Nb, 1))).astype(np.float32)
    if fmt == "int8":
        q, s, block = q8_block(w)
        want = ref_q8(a, q, s)
    else:
        bits, block = bf16_block(w)
        want = ref_bf16(a, bits)
    check_all(fmt, level, a, block, Nb, want, n0, N)


@FMTS
@LEVELS
def test_rows_do_not_depend_on_the_call(fmt, level, rng):
    """Each element is one definition: a row computed alone, in a block of rows of any
    size, or in the tail of the row blocks, has the same bits; so has a column range."""
    _need(fmt, level)
    M, Kk, Nb = 75, 45, 70
    a = rng.standard_normal((M, Kk)).astype(np.float32)
    w = rng.standard_normal((Nb, Kk)).astype(np.float32)
    block = q8_block(w)[2] if fmt == "int8" else bf16_block(w)[1]
    whole = run(fmt, a, block, Nb, 0, Nb, level)
    for rows in (slice(0, 1), slice(5, 6), slice(3, 40), slice(32, 75), slice(64, 75)):
        part = run(fmt, np.ascontiguousarray(a[rows]), block, Nb, 0, Nb, level)
        assert_same_bits(part, whole[rows])
    for n0, N in ((16, 54), (32, 1), (64, 6)):
        assert_same_bits(run(fmt, a, block, Nb, n0, N, level), whole[:, n0 : n0 + N])


@FMTS
@LEVELS
@pytest.mark.parametrize(
    "M, Kk, H, n0, N", [(1, 70, 48, 16, 32), (11, 33, 40, 0, 37), (70, 129, 20, 0, 20)]
)
def test_gate_batched_products_equal_one_call_per_gate(fmt, level, M, Kk, H, n0, N, rng):
    """cygru_*_gemm_gates (G blocks, the rows prepared once) gives every gate exactly the
    bits of its own call, at every level and through the dispatch (level -1)."""
    _need(fmt, level)
    G = 3
    a = rng.standard_normal((M, Kk + 5)).astype(np.float32)[:, :Kk]
    a[0, 0] = np.nan if M > 1 else a[0, 0]  # a NaN row among them (int8: NaN results)
    w = rng.standard_normal((G * H, Kk)).astype(np.float32)
    if fmt == "int8":
        q, s = K.q8_quantize_rows(w)
        blocks = K.q8_pack_gates(q, s, H)
        per = [K.q8_pack_gates(q[g * H : (g + 1) * H], s[g * H : (g + 1) * H], H) for g in range(G)]
    else:
        bits = K.bf16_from_f32(w.ravel()).reshape(w.shape)
        blocks = K.bf16_pack_gates(bits, H)
        per = [
            K.bf16_pack_gates(np.ascontiguousarray(bits[g * H : (g + 1) * H]), H) for g in range(G)
        ]
    want = np.concatenate([run(fmt, a, per[g], H, n0, N, 0) for g in range(G)], axis=1)
    assert_same_bits(K._quant_gemm_gates(fmt, a, blocks, G, H, n0, N, level), want)
    # the dispatch unforced (bf16: vdpbf16ps under 8 rows where the emulation is in use)
    assert_same_bits(K._quant_gemm_gates(fmt, a, blocks, G, H, n0, N, -1), want)
    K._force_quant_level(level)
    assert_same_bits(K._quant_gemm_gates(fmt, a, blocks, G, H, n0, N, -1), want)


def test_gate_hook_rejects_bad_input():
    a = np.ones((2, 8), np.float32)
    blocks = K.q8_pack_gates(np.ones((32, 8), np.int8), np.ones(32, np.float32), 16)
    with pytest.raises(ValueError, match="_quant_gemm_gates: fmt"):
        K._quant_gemm_gates("int4", a, blocks, 2, 16, 0, 16)
    with pytest.raises(ValueError, match="_quant_gemm_gates: level 9"):
        K._quant_gemm_gates("int8", a, blocks, 2, 16, 0, 16, 9)
    with pytest.raises(ValueError, match="_quant_gemm_gates: bad sizes"):
        K._quant_gemm_gates("int8", a, blocks, 2, 16, 8, 8)  # n0 not a multiple of 16
    with pytest.raises(ValueError, match="_quant_gemm_gates: blocks too small"):
        K._quant_gemm_gates("int8", a, blocks, 3, 16, 0, 16)
    with pytest.raises(ValueError, match="_quant_gemm_gates: the rows of a"):
        K._quant_gemm_gates("int8", np.ones((8, 2), np.float32).T, blocks, 2, 16, 0, 16)


# ---- every variant: hostile values -------------------------------------------------------


def _hostile_int8_rows(Kk, rng):
    rows = []
    rows.append(np.zeros(Kk))  # a zero row
    rows.append(np.full(Kk, -0.0))  # negative zeros
    r = rng.standard_normal(Kk) * 1e38
    r[0] = F32_MAX
    r[-1] = -F32_MAX
    rows.append(r)  # huge
    rows.append(rng.standard_normal(Kk) * 1e-40)  # denormals: a zero row
    r = np.full(Kk, 1e-38)
    r[0] = 2.0**-120
    rows.append(r)  # its largest at the zero-row threshold: quantized
    rows.append(np.where(np.arange(Kk) % 3 == 0, 2.0**-121, 0))  # below it
    r = rng.standard_normal(Kk)
    r[Kk // 2] = np.inf
    rows.append(r)  # an inf row
    r = rng.standard_normal(Kk)
    r[-1] = np.nan
    rows.append(r)  # a NaN row
    r = np.zeros(Kk)
    r[0] = 127
    r[1:] = (np.arange(1, Kk) % 8) - 3.5  # .5 points: ties at inv = 1
    rows.append(r)
    r = np.zeros(Kk)
    r[0] = -254
    r[1:] = (np.arange(1, Kk) % 9) * 2 - 7  # odd values at inv = 0.5: ties
    rows.append(r)
    rows.append(rng.standard_normal(Kk))
    return np.array(rows, np.float32)


@LEVELS
@pytest.mark.parametrize("Kk", [2, 6, 67, 300])
def test_int8_hostile_values(level, Kk, rng):
    _need("int8", level)
    a = _hostile_int8_rows(Kk, rng)
    Nb = 37
    # weights of every int8 value, -128 included (imported weights may hold it), scales
    # of every size, a NaN scale (a non-finite weight row)
    q = rng.integers(-128, 128, (Nb, Kk)).astype(np.int8)
    q[0] = -128
    q[1] = 127
    q[2] = 0
    scale = rng.uniform(1e-3, 10, Nb).astype(np.float32)
    scale[3] = np.nan
    scale[4] = 0
    scale[5] = 1e30
    q, scale, block = q8_block(None, q, scale)
    want = ref_q8(a, q, scale)
    check_all("int8", level, a, block, Nb, want)
    check_all("int8", level, a, block, Nb, want, 16, 21)
    # the rule's outcomes on the named rows
    got = run("int8", a, block, Nb, 0, Nb, level)
    assert np.isnan(got[6]).all() and np.isnan(got[7]).all()
    assert (got[0][~np.isnan(scale)] == 0).all() and (got[3][~np.isnan(scale)] == 0).all()


def _hostile_bf16(Kk, rng):
    """Rows and weights over the whole exponent range, with ties, tiny values, zeros of
    both signs, infinities, NaN, and products that overflow or cancel."""
    e = rng.integers(-60, 70, (12, Kk))
    a = (rng.choice([-1.0, 1.0], (12, Kk)) * rng.uniform(1, 2, (12, Kk)) * 2.0**e).astype(
        np.float32
    )
    u = a.view(np.uint32)
    u[0] = (u[0] & 0xFFFF0000) | 0x8000  # every value a rounding tie
    a[1] = 0
    a[1, ::2] = -0.0
    a[2, ::3] = np.float32(2.0**-50)
    a[2, 1::3] = _f32(0x267FFFFF)  # just below 2^-50
    a[2, 2::3] = _f32(0x00000003)  # denormal
    a[3, Kk // 2] = np.inf
    a[4, -1] = np.nan
    a[5] = np.float32(2.0**64) * rng.choice([-1, 1], Kk)
    a[6, 0] = F32_MAX
    a[7] = rng.standard_normal(Kk).astype(np.float32)
    return a


@LEVELS
@pytest.mark.parametrize("Kk", [1, 2, 5, 64, 131])
def test_bf16_hostile_values(level, Kk, rng):
    _need("bf16", level)
    a = _hostile_bf16(Kk, rng)
    Nb = 35
    e = rng.integers(-60, 70, (Nb, Kk))
    w = (rng.choice([-1.0, 1.0], (Nb, Kk)) * rng.uniform(1, 2, (Nb, Kk)) * 2.0**e).astype(
        np.float32
    )
    w[0] = np.float32(2.0**64)
    w[1] = -np.float32(2.0**64)
    w[2] = 0
    w[3, ::2] = -0.0
    w[4] = np.float32(1.0)
    bits = K.bf16_from_f32(w.ravel()).reshape(w.shape)
    bits[5, ::2] = 0x0001  # raw bits: a denormal (canonicalized to +0 by the pack)
    bits[6, -1] = 0x7F81  # a signalling NaN (made quiet)
    bits[7, 0] = 0x7F80  # inf
    bits, block = bf16_block(bits=bits)
    want = ref_bf16(a, bits)
    check_all("bf16", level, a, block, Nb, want)
    check_all("bf16", level, a, block, Nb, want, 32, 3)


@LEVELS
def test_bf16_fused_steps(level):
    """The steps are fused: a product past float32's range is exact, so -1.98 * 2^127
    then 2^64 * 2^64 gives about 2^121 (not inf), and +inf then a product of -2^144 stays +inf
    (not NaN); the pair's odd element is added first."""
    _need("bf16", level)
    a = np.zeros((3, 4), np.float32)
    wb = np.zeros((16, 4), np.uint16)
    a[0, 1], wb[0, 1] = ref_bf16_values(0x5FFF), 0xDEFF
    a[0, 3], wb[0, 3] = ref_bf16_values(0x5F80), 0x5F80
    a[1, 1], wb[1, 1] = ref_bf16_values(0x71C0), 0x71C0
    a[1, 3], wb[1, 3] = ref_bf16_values(0x63C0), 0xE3C0
    # order: odd first gives 2^24, + 0, + 1 (a tie: 2^24), + 2 = 2^24 + 2; even first
    # would give 0 + 2^24 + 2 + 1 (a tie: 2^24 + 4)
    a[2] = [0.0, 2.0**24, 2.0, 1.0]
    wb[2] = 0x3F80
    _, block = bf16_block(bits=wb)
    got = run("bf16", a, block, 16, 0, 16, level)
    assert np.isfinite(got[0, 0]) and 2.0**120 < got[0, 0] < 2.0**122, got[0, 0]
    assert got[1, 1] == np.inf
    assert got[2, 2] == np.float32(2.0**24 + 2)
    assert_same_bits(got, ref_bf16(a, wb))


# ---- levels, the self-check and forcing ---------------------------------------------------


def test_levels_and_the_self_check():
    best, top = K.quant_levels(), K.quant_max_levels()
    ok, fast = K._bf16_native_check()
    assert ok in (-1, 0, 1) and fast in (-1, 0, 1)
    assert 0 <= best[0] == top[0] <= 3
    assert 0 <= best[1] <= top[1] <= 3
    if ok == 1:
        assert top[1] == 3
        assert best[1] == (3 if fast == 1 else 2)
    else:
        assert top[1] <= 2 and best[1] == top[1] and fast == -1
    assert K._bf16_native_check() == (ok, fast)  # cached: the same answer every time


def test_cpu_flags_give_the_levels():
    """Where /proc/cpuinfo lists the flags, the levels follow them."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None
            )
    except OSError:
        flags = None
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    top = K.quant_max_levels()
    if {"avx512f", "avx512bw", "avx512_vnni"} <= set(flags):
        assert top[0] == 3
    elif {"avx512f", "avx512bw"} <= set(flags):
        assert top[0] == 2
    if "avx512_bf16" not in flags:
        assert top[1] <= 2 and K._bf16_native_check()[0] == -1
    if "avx2" in flags and "fma" in flags:
        assert min(top) >= 1


def test_force_quant_level_round_trip(rng):
    a = rng.standard_normal((3, 20)).astype(np.float32)
    w = rng.standard_normal((16, 20)).astype(np.float32)
    blocks = {"int8": q8_block(w)[2], "bf16": bf16_block(w)[1]}
    base = {f: run(f, a, blocks[f], 16, 0, 16, 0) for f in blocks}
    best, top = K.quant_levels(), K.quant_max_levels()
    assert K._quant_levels_in_use() == best
    for level in range(4):
        K._force_quant_level(level)
        use = K._quant_levels_in_use()
        for i, f in enumerate(("int8", "bf16")):
            assert use[i] == (level if level <= top[i] else best[i])
            assert_same_bits(run(f, a, blocks[f], 16, 0, 16, -1), base[f])
    K._force_quant_level(-1)
    assert K._quant_levels_in_use() == best
    for bad in (-2, 4):
        with pytest.raises(ValueError, match="_force_quant_level"):
            K._force_quant_level(bad)
    with pytest.raises(ValueError, match="not one this CPU runs"):
        run("int8", a, blocks["int8"], 16, 0, 16, top[0] + 1)


# ---- a property test ---------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    fmt=st.sampled_from(["int8", "bf16"]),
    M=st.integers(1, 40),
    Kk=st.integers(1, 70),
    Nb=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
    spread=st.integers(0, 40),
)
def test_property_every_level_gives_the_definitions_bits(fmt, M, Kk, Nb, seed, spread):
    rng = np.random.default_rng(seed)
    scale = 2.0 ** rng.integers(-spread, spread + 1, (M, Kk))
    a = (rng.standard_normal((M, Kk)) * scale).astype(np.float32)
    w = (rng.standard_normal((Nb, Kk)) * 2.0 ** rng.integers(-spread, spread + 1, (Nb, Kk))).astype(
        np.float32
    )
    if fmt == "int8":
        q, s, block = q8_block(w)
        want = ref_q8(a, q, s)
    else:
        bits, block = bf16_block(w)
        want = ref_bf16(a, bits)
    n0 = 16 * int(rng.integers(0, (Nb + 15) // 16))
    N = int(rng.integers(1, Nb - n0 + 1))
    base = run(fmt, a, block, Nb, n0, N, 0)
    assert_same_bits(base, want[:, n0 : n0 + N])
    for level in range(1, K.quant_max_levels()[0 if fmt == "int8" else 1] + 1):
        assert_same_bits(run(fmt, a, block, Nb, n0, N, level), base, f"{fmt} level {level}")

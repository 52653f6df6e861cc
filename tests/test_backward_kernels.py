"""The backward's own products (cygru_wgrad.h, issue 26): dW_ih, dW_hh, the biases and dx
computed by cygru's kernels, not BLAS.

- each compiled variant of the product kernel against float64 NumPy, with row groups,
  strided (transposed) operands, bias sums, partial tiles and every blocking edge;
- its arithmetic contract: one chain per element in k order from C's value, so a split of
  K into two calls, a subset of the rows, or another variant with FMA gives the same bits;
- whole training steps (forward with cache, backward with weight gradients) bit-identical
  for 1, 2, 3 and 5 threads with each variant forced through the engine, float32 and
  float64, both GRU variants, variable lengths, two bidirectional layers; the AVX2 and
  AVX-512 variants identical to each other;
- no BLAS thread pool runs during a training step (CPU time of the process's threads).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cygru
from cygru._kernels import (
    VARIANT_NAMES,
    _force_variant_level,
    _variant_level_in_use,
    _wgrad_gemm,
    cpu_variant_level,
)

LEVELS = [pytest.param(lv, id=name) for lv, name in enumerate(VARIANT_NAMES)]
DTYPES = [np.float32, np.float64]


def _skip_unless_runs(level):
    if level > cpu_variant_level():
        pytest.skip(f"this CPU cannot run the {VARIANT_NAMES[level]} variant")


def _tol(dtype, K):
    return (2e-6 if dtype == np.float32 else 4e-15) * max(1, K) ** 0.5


@pytest.fixture(autouse=True)
def _restore_variant():
    yield
    _force_variant_level(-1)


# -- the kernel --------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "K, M, N",
    [(1, 1, 1), (1, 5, 3), (7, 9, 17), (128, 8, 32), (129, 33, 45), (300, 70, 600), (257, 200, 31)],
)
def test_product_matches_float64(level, dtype, K, M, N):
    _skip_unless_runs(level)
    rng = np.random.default_rng(K * 1000 + M * 10 + N)
    a = rng.standard_normal((K, M)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    c = rng.standard_normal((M, N)).astype(dtype)
    bias = rng.standard_normal(M).astype(dtype)
    c0, bias0, a0, b0 = c.copy(), bias.copy(), a.copy(), b.copy()
    _wgrad_gemm(a, b, c, bias, level=level)
    ref = c0.astype(np.float64) + a.astype(np.float64).T @ b.astype(np.float64)
    scale = np.abs(a).T.astype(np.float64) @ np.abs(b) + np.abs(c0)
    assert np.all(np.abs(c - ref) <= _tol(dtype, K) * scale + 1e-30)
    bref = bias0.astype(np.float64) + a.astype(np.float64).sum(0)
    assert np.all(np.abs(bias - bref) <= _tol(dtype, K) * (np.abs(a).sum(0) + np.abs(bias0)))
    # the operands are not written
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_operand_gives_the_input_gradient(level, dtype):
    """dx's form: A read transposed (a strided view), two calls continuing one chain."""
    _skip_unless_runs(level)
    rng = np.random.default_rng(5)
    TB, G, In = 203, 3 * 24, 37
    dgi = rng.standard_normal((TB, 2 * G)).astype(dtype)  # both directions' columns
    w0 = rng.standard_normal((G, In)).astype(dtype)
    w1 = rng.standard_normal((G, In)).astype(dtype)
    dx = np.zeros((TB, In), dtype)
    _wgrad_gemm(dgi[:, :G].T, w0, dx, level=level)
    _wgrad_gemm(dgi[:, G:].T, w1, dx, level=level)
    ref = dgi.astype(np.float64) @ np.concatenate([w0, w1]).astype(np.float64)
    scale = np.abs(dgi).astype(np.float64) @ np.abs(np.concatenate([w0, w1]))
    assert np.all(np.abs(dx - ref) <= _tol(dtype, 2 * G) * scale)
    # one call over the concatenated operands is the same chain: the same bits
    whole = np.zeros((TB, In), dtype)
    _wgrad_gemm(dgi.T, np.concatenate([w0, w1]), whole, level=level)
    assert np.array_equal(whole, dx)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k1", [1, 100, 128, 129, 255])
def test_split_of_k_continues_the_chain(level, dtype, k1):
    """Two calls over rows [0, k1) and [k1, K) give the bits of one call over [0, K):
    each element is one chain that starts from C's value, whatever the blocking."""
    _skip_unless_runs(level)
    rng = np.random.default_rng(k1)
    K, M, N = 300, 40, 50
    a = rng.standard_normal((K, M)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    one = np.zeros((M, N), dtype)
    bias_one = np.zeros(M, dtype)
    _wgrad_gemm(a, b, one, bias_one, level=level)
    two = np.zeros((M, N), dtype)
    bias_two = np.zeros(M, dtype)
    _wgrad_gemm(
        np.ascontiguousarray(a[:k1]), np.ascontiguousarray(b[:k1]), two, bias_two, level=level
    )
    _wgrad_gemm(
        np.ascontiguousarray(a[k1:]), np.ascontiguousarray(b[k1:]), two, bias_two, level=level
    )
    assert np.array_equal(one, two)
    assert np.array_equal(bias_one, bias_two)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_does_not_depend_on_the_rows_beside_it(level, dtype):
    """A piece computes groups of rows (a gate's rows of its units); each row's bits are
    those of the whole product, whichever groups are computed (the engine's pieces)."""
    _skip_unless_runs(level)
    rng = np.random.default_rng(9)
    H, K, N = 40, 150, 33
    a = rng.standard_normal((K, 3 * H)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    whole = np.zeros((3 * H, N), dtype)
    bias_whole = np.zeros(3 * H, dtype)
    _wgrad_gemm(a, b, whole, bias_whole, level=level)
    for u0, u1 in [(0, 16), (16, 40), (5, 6), (0, 40)]:
        part = np.zeros((3 * H, N), dtype)
        bias_part = np.zeros(3 * H, dtype)
        groups = [(g * H + u0, u1 - u0) for g in range(3)]
        _wgrad_gemm(a, b, part, bias_part, level=level, rows=groups)
        rows = np.concatenate([np.arange(s, s + n) for s, n in groups])
        assert np.array_equal(part[rows], whole[rows])
        assert np.array_equal(bias_part[rows], bias_whole[rows])
        others = np.setdiff1d(np.arange(3 * H), rows)
        assert not part[others].any() and not bias_part[others].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_variants_give_the_same_bits(dtype):
    if cpu_variant_level() < 2:
        pytest.skip("this CPU does not run both FMA variants (AVX2 and AVX-512)")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((517, 131)).astype(dtype)
    b = rng.standard_normal((517, 77)).astype(dtype)
    outs = []
    for level in (1, 2):
        c = np.ones((131, 77), dtype)
        bias = np.ones(131, dtype)
        _wgrad_gemm(a, b, c, bias, level=level)
        outs.append((c, bias))
    assert np.array_equal(outs[0][0], outs[1][0])
    assert np.array_equal(outs[0][1], outs[1][1])


def test_hook_rejects_bad_arguments():
    a = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        _wgrad_gemm(a, np.zeros((2, 5), np.float32), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _wgrad_gemm(a, np.zeros((3, 5), np.float32), np.zeros((4, 5), np.float32), level=9)
    with pytest.raises(ValueError, match="out of range"):
        _wgrad_gemm(a, np.zeros((3, 5), np.float32), np.zeros((4, 5), np.float32), rows=[(3, 2)])
    with pytest.raises(ValueError, match="level must be"):
        _force_variant_level(7)


def test_force_variant_level_caps_at_the_cpu():
    best = cpu_variant_level()
    assert _variant_level_in_use() == best
    assert _force_variant_level(0) == 0
    assert _variant_level_in_use() == 0
    assert _force_variant_level(len(VARIANT_NAMES) - 1) == best
    assert _force_variant_level(-1) == best


# -- whole training steps ----------------------------------------------------------------


def _training_step(dtype, reset_after, threads, level, *, layers=2, bidirectional=True, bias=True):
    _force_variant_level(level)
    cygru.set_num_threads(threads)
    try:
        rng = np.random.default_rng(1)
        T, B, In, H = 13, 37, 20, 35
        D = 2 if bidirectional else 1
        gru = cygru.GRU(
            In,
            H,
            layers,
            bidirectional=bidirectional,
            reset_after=reset_after,
            bias=bias,
            dtype=dtype,
            seed=3,
        )
        x = rng.standard_normal((T, B, In)).astype(dtype)
        d_out = rng.standard_normal((T, B, D * H)).astype(dtype)
        d_hn = rng.standard_normal((layers * D, B, H)).astype(dtype)
        lengths = rng.integers(1, T + 1, B)
        gru.zero_grad()
        (out, h_n), backward = gru.vjp(x, lengths=lengths)
        dx, dh0 = backward(d_out, d_hn)
        return [out, h_n, dx, dh0] + [g.copy() for g in gru.grads.values()]
    finally:
        cygru.set_num_threads(None)
        _force_variant_level(-1)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False])
def test_gradients_bit_identical_for_any_thread_count(level, dtype, reset_after):
    _skip_unless_runs(level)
    one = _training_step(dtype, reset_after, 1, level)
    for threads in (2, 3, 5):
        got = _training_step(dtype, reset_after, threads, level)
        for a, b in zip(one, got):
            assert np.array_equal(a, b), f"{threads} threads differ from 1"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False])
def test_gradients_equal_on_both_fma_variants(dtype, reset_after):
    if cpu_variant_level() < 2:
        pytest.skip("this CPU does not run both FMA variants (AVX2 and AVX-512)")
    avx2 = _training_step(dtype, reset_after, 2, 1)
    avx512 = _training_step(dtype, reset_after, 2, 2)
    for a, b in zip(avx2, avx512):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_each_variant_matches_the_reference_gradients(level, dtype):
    """Every variant's training step is right (not only self-consistent): against the
    NumPy reference through the functional API's reference backend."""
    _skip_unless_runs(level)
    got = _training_step(dtype, True, 2, level, layers=1, bidirectional=True, bias=True)
    _force_variant_level(-1)
    rng = np.random.default_rng(1)
    T, B, In, H = 13, 37, 20, 35
    gru = cygru.GRU(In, H, 1, bidirectional=True, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, B, In))
    d_out = rng.standard_normal((T, B, 2 * H))
    d_hn = rng.standard_normal((2, B, H))
    lengths = rng.integers(1, T + 1, B)
    gru.load_state_dict(
        {
            k: v.astype(np.float64)
            for k, v in cygru.GRU(In, H, 1, bidirectional=True, dtype=dtype, seed=3)
            .state_dict()
            .items()
        }
    )
    gru.zero_grad()
    (out, h_n), backward = gru.vjp(x.astype(dtype).astype(np.float64), lengths=lengths)
    dx, dh0 = backward(
        d_out.astype(dtype).astype(np.float64), d_hn.astype(dtype).astype(np.float64)
    )
    want = [out, h_n, dx, dh0] + list(gru.grads.values())
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for g, w in zip(got, want):
        assert np.allclose(g, w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()))


# -- no BLAS pool ------------------------------------------------------------------------

_NO_BLAS_SCRIPT = textwrap.dedent(
    """
    import os, time
    import numpy as np
    import cygru

    def cpu_ticks():
        # utime + stime of every thread but this one and cygru's pool workers
        total = 0
        me = str(os.getpid())
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if tid == me or name == "cygru-pool":
                continue
            total += int(fields[11]) + int(fields[12])
        return total

    cygru.set_num_threads(2)
    rng = np.random.default_rng(0)
    T, B, I, H = 60, 32, 256, 256
    gru = cygru.GRU(I, H, dtype=np.float32, seed=0)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    d_out = rng.standard_normal((T, B, H), dtype=np.float32)
    (o, h), bw = gru.vjp(x)
    bw(d_out, None)
    time.sleep(0.5)   # any pool that spun at start-up goes to sleep
    before = cpu_ticks()
    t0 = time.process_time()
    for _ in range(15):
        (o, h), bw = gru.vjp(x)
        bw(d_out, None)
    spent = time.process_time() - t0
    print(cpu_ticks() - before, spent, os.sysconf("SC_CLK_TCK"))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_no_blas_thread_pool_runs_during_training():
    """Threads other than the caller and cygru's pool (named cygru-pool) use no CPU time
    during training steps: no BLAS is called, so no BLAS pool wakes and spins (before
    issue 26, the weight-gradient GEMMs woke OpenBLAS's pool on every step)."""
    env = dict(os.environ)
    env.pop("OPENBLAS_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    res = subprocess.run(
        [sys.executable, "-c", _NO_BLAS_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    others, spent, tck = res.stdout.split()
    others, spent, tck = int(others), float(spent), int(tck)
    assert spent > 0.1  # the steps did run
    # a few ticks of slack for interpreter housekeeping threads
    assert others / tck <= 0.03 + 0.02 * spent, (others, spent)


def _nan_filled(shape, dtype):
    a = np.empty(shape, dtype)
    a.view(np.uint8)[...] = 0xFF  # a NaN in float32 and float64 alike
    return a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False])
def test_rows_of_ended_sequences_do_not_read_stale_memory(dtype, reset_after, monkeypatch):
    """The forward's cache and the backward's workspace are not zero-filled in advance (a
    full batch writes every row): the rows of sequences that have ended, and the steps
    where none runs, must be written as zeros. With every such array allocated full of
    NaN, the results equal the clean ones and are finite."""
    import cygru._cpu

    T, B, In, H = 9, 6, 5, 7
    lengths = np.array([7, 3, 2, 1, 7, 4])  # none runs at the last two steps
    rng = np.random.default_rng(2)
    gru = cygru.GRU(In, H, 2, bidirectional=True, reset_after=reset_after, dtype=dtype, seed=1)
    x = rng.standard_normal((T, B, In)).astype(dtype)
    d_out = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    d_hn = rng.standard_normal((4, B, H)).astype(dtype)

    def step():
        gru.zero_grad()
        (out, h_n), backward = gru.vjp(x, lengths=lengths)
        dx, dh0 = backward(d_out, d_hn)
        return [out, h_n, dx, dh0] + [g.copy() for g in gru.grads.values()]

    clean = step()
    monkeypatch.setattr(cygru._cpu, "_uninitialised", _nan_filled)
    poisoned = step()
    for a, b in zip(clean, poisoned):
        assert np.all(np.isfinite(b))
        assert np.array_equal(a, b)
    # padded steps: no output, no input gradient
    assert not poisoned[0][7:].any() and not poisoned[2][7:].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reset_after", [True, False])
def test_vjp_forward_gives_the_bits_of_a_call(dtype, reset_after):
    """The training forward (which also writes the cache, in its own loop) computes the
    state update as a call does: the same output and h_n bits."""
    rng = np.random.default_rng(4)
    gru = cygru.GRU(20, 35, 2, bidirectional=True, reset_after=reset_after, dtype=dtype, seed=1)
    x = rng.standard_normal((9, 7, 20)).astype(dtype)
    lengths = np.array([9, 3, 5, 1, 9, 2, 4])
    out, h_n = gru(x, lengths=lengths)
    (out_v, h_n_v), _ = gru.vjp(x, lengths=lengths)
    assert np.array_equal(out, out_v) and np.array_equal(h_n, h_n_v)

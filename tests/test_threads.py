"""The threaded engine (a direction's hidden units claimed in pieces by any number of
threads; directions on separate thread groups): every thread count, 1 included, gives
bit-identical float32 and float64 results for every option and every size of the
input-projection chunks; the thread-count API validates its input."""

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
from cygru import _cpu


@pytest.fixture(params=["one-chunk", "chunks-of-2-steps", "chunks-of-1-step"])
def force_threads(monkeypatch, request):
    """Split even tiny problems over threads, and restore the thread count after.

    Parametrised over the input projection's chunks: all steps at once (the default
    for short sequences), or chunks of 2 or 1 steps inside the time loop (as long
    sequences run)."""
    monkeypatch.setattr(_cpu, "MIN_WORK_PER_THREAD", 0)
    steps = {"one-chunk": 0, "chunks-of-2-steps": 2, "chunks-of-1-step": 1}[request.param]
    monkeypatch.setattr(_cpu, "_CHUNK_STEPS", steps)
    before = cygru.get_num_threads()
    yield
    cygru.set_num_threads(before)


CONFIGS = [
    dict(num_layers=1, bidirectional=False),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=1, bidirectional=False, reset_after=False),
    dict(num_layers=2, bidirectional=True, reset_after=False, batch_first=True),
    dict(num_layers=1, bidirectional=False, reverse=True, bias=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("H", [5, 40, 70])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 4, 6])
def test_thread_counts_agree(force_threads, cfg, H, with_lengths, dtype, B):
    """B = 1 and 4: the dot kernel's batches (at most DOT_MAX_B rows); B = 6 the packed
    kernel's."""
    rng = np.random.default_rng(H)
    T, I = 9, 6
    m = cygru.GRU(I, H, seed=1, dtype=dtype, **cfg)
    shape = (B, T, I) if m.batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(dtype)
    h0 = rng.standard_normal((m.num_layers * m.num_directions, B, H)).astype(dtype)
    lengths = np.array([9, 3, 1, 6, 2, 9][:B]) if with_lengths else None
    d_out = None
    results = {}
    for n in (1, 2, 3, 4):
        cygru.set_num_threads(n)
        (out, h_n), backward = m.vjp(x, h0, lengths)
        if d_out is None:
            d_out = rng.standard_normal(out.shape).astype(dtype)
            d_hn = rng.standard_normal(h_n.shape).astype(dtype)
        m.zero_grad()
        dx, dh0 = backward(d_out, d_hn)
        plain = m(x, h0, lengths)
        results[n] = (out, h_n, dx, dh0, plain[0], plain[1], *[g.copy() for g in m.grads.values()])
    # every element is computed by the same chain of operations whichever thread or
    # piece computes it: all counts agree bit for bit, one thread included
    for n in (2, 3, 4):
        for a, b in zip(results[1], results[n]):
            assert np.array_equal(a, b), f"{n} threads differ from 1 thread"


def test_threads_match_float64_reference(force_threads):
    """Threaded float32 (both projection modes) against the float64 reference."""
    from cygru import _reference

    rng = np.random.default_rng(0)
    cygru.set_num_threads(2)
    m = cygru.GRU(7, 48, num_layers=2, bidirectional=True, seed=0)
    x = rng.standard_normal((11, 3, 7)).astype(np.float32)
    out, h_n = m(x, lengths=[11, 4, 8])
    ref = _reference.gru_forward(
        x.astype(np.float64),
        None,
        [
            [tuple(None if a is None else a.astype(np.float64) for a in t) for t in layer]
            for layer in m._layers()
        ],
        hidden_size=48,
        num_directions=2,
        lengths=np.array([11, 4, 8]),
    )
    np.testing.assert_allclose(out, ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, ref[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="positive integer"):
        cygru.set_num_threads(bad)


def test_env_var_sets_default(monkeypatch):
    import subprocess
    import sys

    code = "import cygru; print(cygru.get_num_threads())"
    env = dict(__import__("os").environ, CYGRU_NUM_THREADS="3")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=__import__("os").path.dirname(__import__("os").path.dirname(__file__)),
    )
    assert out.stdout.strip() == "3", out.stderr
    env["CYGRU_NUM_THREADS"] = "many"
    bad = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=__import__("os").path.dirname(__import__("os").path.dirname(__file__)),
    )
    assert bad.returncode != 0 and "CYGRU_NUM_THREADS" in bad.stderr


def _pool_settings_after_import(env_extra):
    """Run ``import cygru`` in a fresh interpreter; report what the environment holds
    afterwards and the idle-spin setting SciPy's OpenBLAS read when it loaded (None
    when SciPy's BLAS is not an OpenBLAS that reports it)."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import ctypes, json, os, cygru\n"
        "maps = open('/proc/self/maps').read().split()\n"
        "libs = sorted({p for p in maps if 'libscipy_openblas' in p and '64_' not in p})\n"
        "timeout = None\n"
        "if libs:\n"
        "    lib = ctypes.CDLL(libs[0])\n"
        "    if hasattr(lib, 'openblas_thread_timeout'):\n"
        "        timeout = lib.openblas_thread_timeout()\n"
        "print(json.dumps({'timeout': timeout,\n"
        "                  'env': {k: os.environ.get(k) for k in\n"
        "                          ('GOMP_SPINCOUNT', 'OPENBLAS_THREAD_TIMEOUT')}}))\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")
    }
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(
    not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/maps"
)
def test_pool_environment_applies_while_loading_and_is_restored():
    got = _pool_settings_after_import({})
    # set only while the extension loads: the caller's environment is unchanged after
    assert got["env"] == {"GOMP_SPINCOUNT": None, "OPENBLAS_THREAD_TIMEOUT": None}
    if got["timeout"] is None:
        pytest.skip("SciPy's BLAS is not an OpenBLAS that reports its thread timeout")
    assert got["timeout"] == int(cygru._POOL_ENVIRONMENT["OPENBLAS_THREAD_TIMEOUT"])
    # a value the user set wins, and stays set
    mine = _pool_settings_after_import({"OPENBLAS_THREAD_TIMEOUT": "7"})
    assert mine["timeout"] == 7
    assert mine["env"]["OPENBLAS_THREAD_TIMEOUT"] == "7"


# ---------------------------------------------------------------------------------------------
# any thread count: more threads than the old fixed tables (8) and than cores
# ---------------------------------------------------------------------------------------------

MANY = (2, 9, 16, 64, 256)  # 256: cygru._cpu.MAX_THREADS


@pytest.mark.parametrize(
    "cfg",
    [CONFIGS[1], CONFIGS[3]],
    ids=["2-layer-bidirectional", "bidirectional-reset_before-batch_first"],
)
@pytest.mark.parametrize("H", [5, 70])
@pytest.mark.parametrize("B", [3, 6])
def test_many_threads_bit_identical(force_threads, cfg, H, B):
    """9 to 256 threads (a direction gets up to H of them, one unit each at least) give
    the same bits as 2 threads, forward and backward, with lengths. (Regression: the
    pointer tables of a layer call had 8 slots per kind and were indexed by thread: 9+
    threads corrupted the heap, crashed or deadlocked.)"""
    rng = np.random.default_rng(H)
    T, I = 6, 4
    m = cygru.GRU(I, H, seed=1, **cfg)
    shape = (B, T, I) if m.batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(np.float32)
    lengths = np.array([6, 2, 5, 1, 6, 3][:B])
    d_out = rng.standard_normal(shape[:2] + (2 * H,)).astype(np.float32)
    results = {}
    for n in MANY:
        cygru.set_num_threads(n)
        (out, h_n), backward = m.vjp(x, None, lengths)
        m.zero_grad()
        dx, dh0 = backward(d_out, None)
        results[n] = (out, h_n, dx, dh0, *[g.copy() for g in m.grads.values()])
    for n in MANY[1:]:
        for a, b in zip(results[2], results[n]):
            assert np.array_equal(a, b), f"{n} threads differ from 2 threads"


@pytest.mark.parametrize("n", [9, 16, 64])
def test_default_thread_count_above_eight_runs(n):
    """The issue's reproduction, as a user runs it (the default thread plan, a fresh
    process with CYGRU_NUM_THREADS=n): it used to abort with 'double free or
    corruption', segfault or hang; now it matches one thread exactly."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, cygru\n"
        "x = np.random.default_rng(0).standard_normal((5, 4, 8)).astype(np.float32)\n"
        "m = cygru.GRU(8, 256, bidirectional=True, seed=0)\n"
        "(out, h), bw = m.vjp(x)\n"
        "dx, _ = bw(np.ones_like(out), None)\n"
        "assert cygru.get_num_threads() == %d\n"
        "cygru.set_num_threads(1)\n"
        "(out1, h1), bw1 = m.vjp(x)\n"
        "dx1, _ = bw1(np.ones_like(out), None)\n"
        "print(float(abs(out - out1).max()), float(abs(dx - dx1).max()))\n" % n
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CYGRU_NUM_THREADS=str(n))
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"rc={r.returncode}: {r.stderr[-800:]}"
    diff_out, diff_dx = map(float, r.stdout.split())
    assert diff_out == 0 and diff_dx == 0  # the same bits as one thread


def test_thread_plan_never_exceeds_hidden_units():
    """A direction gets at most one thread per piece and one piece per panel of 16 units;
    pieces are non-empty unit slices cut at multiples of 16 (whole panels of the packed
    weights, whose layout is therefore the same for every plan)."""
    from cygru import _engine

    for H in (1, 3, 15, 16, 17, 31, 33, 100, 1000):
        panels = (H + 15) // 16
        for n in (1, 2, 3, 9, 64, 256):
            for D in (1, 2):
                per_dir, started, pieces = _engine._plan(n, D, H)
                assert 1 <= per_dir <= min(panels, max(1, n // D))
                assert started == (per_dir * D if n >= D else n)
                assert pieces[0] == 0 and pieces[-1] == H
                assert all(pieces[k] < pieces[k + 1] for k in range(len(pieces) - 1))
                expected = 1 if n == 1 else min(_cpu.PIECES_PER_THREAD * per_dir, panels)
                assert len(pieces) - 1 == expected
                assert per_dir <= expected or n == 1
                assert all(p % 16 == 0 for p in pieces[:-1])


@pytest.mark.parametrize("good", [1, 2, 9, 256, np.int64(3), np.int32(4), np.uint8(5)])
def test_set_num_threads_accepts_integers_up_to_the_bound(good):
    before = cygru.get_num_threads()
    try:
        cygru.set_num_threads(good)
        assert cygru.get_num_threads() == int(good)
        assert type(cygru.get_num_threads()) is int
    finally:
        cygru.set_num_threads(before)


@pytest.mark.parametrize(
    "bad",
    [
        257,
        2**40,
        -(2**40),
        np.int64(0),
        np.bool_(True),
        b"2",
        2.0,
        np.float64(2.0),
        np.array([3]),
    ],
)
def test_set_num_threads_bounded_with_a_clear_error(bad):
    before = cygru.get_num_threads()
    with pytest.raises(ValueError, match=r"cygru.set_num_threads: expected a positive integer"):
        cygru.set_num_threads(bad)
    assert cygru.get_num_threads() == before


@pytest.mark.parametrize("value", ["0", "-3", "257", "2.5", " "])
def test_env_var_out_of_range_raises_naming_it(value):
    """CYGRU_NUM_THREADS=0 or -3 used to mean 1 silently; now every value outside
    [1, 256] raises a ValueError naming the variable (a blank value means unset)."""
    import os
    import subprocess
    import sys

    code = "import numpy as np, cygru; print(cygru.get_num_threads())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CYGRU_NUM_THREADS=value)
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    if value.strip() == "":
        assert r.returncode == 0 and int(r.stdout) >= 1, r.stderr
    else:
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("ValueError") and "CYGRU_NUM_THREADS" in last, last
        assert value.strip() in last, last


@pytest.mark.parametrize(
    "omp_env",
    [
        {"OMP_THREAD_LIMIT": "1"},
        {"OMP_THREAD_LIMIT": "3"},
        {"OMP_DYNAMIC": "true"},
        {"OMP_MAX_ACTIVE_LEVELS": "0"},
    ],
    ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()),
)
def test_fewer_openmp_threads_than_asked_falls_back_correctly(omp_env):
    """When OpenMP grants a parallel region fewer threads than cygru asks for (a thread
    limit, dynamic adjustment, nesting disabled), the layer reruns on one thread. (Found
    by a hostile review: the flag that triggers the rerun was assigned inside the
    parallel block, where Cython makes it private to each thread, so the rerun never
    happened: the output was uninitialised memory, h_n equalled h0, dx and every
    gradient were 0, silently.)"""
    import os
    import subprocess
    import sys

    code = """
import numpy as np, cygru
from cygru import _reference as ref
cygru.set_num_threads(4)
rng = np.random.default_rng(0)
for bidir in (False, True):
    m = cygru.GRU(8, 96, num_layers=2, bidirectional=bidir, dtype=np.float32, seed=0)
    x = rng.standard_normal((5, 3, 8)).astype(np.float32)
    D = 2 if bidir else 1
    h0 = rng.standard_normal((2 * D, 3, 96)).astype(np.float32)
    (out, hn), bw = m.vjp(x, h0, [5, 2, 4])
    d_out = rng.standard_normal(out.shape).astype(np.float32)
    dx, dh0 = bw(d_out, None)
    w64 = [[tuple(a.astype(np.float64) for a in t) for t in layer] for layer in m._layers()]
    kw = dict(hidden_size=96, num_directions=D, lengths=np.array([5, 2, 4]))
    r_out, r_hn = ref.gru_forward(x.astype(np.float64), h0.astype(np.float64), w64, **kw)
    r_dx, r_dh0, _ = ref.gru_backward(x.astype(np.float64), h0.astype(np.float64), w64,
                                      d_out.astype(np.float64), None, **kw)
    for got, want in ((out, r_out), (hn, r_hn), (dx, r_dx), (dh0, r_dh0)):
        assert np.allclose(got, want, rtol=1e-4, atol=1e-5), float(np.abs(got - want).max())
    assert any(np.abs(g).sum() > 0 for g in m.grads.values())
print("ok")
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, **omp_env)
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-1500:]


# ---------------------------------------------------------------------------------------------
# the default thread count: OpenMP's settings, and concurrent calls sharing it
# ---------------------------------------------------------------------------------------------


def _threads_in_child(env):
    import os
    import subprocess
    import sys

    code = "import cygru; print(cygru.get_num_threads())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in dict(os.environ, **env).items() if v is not None}
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def test_default_honours_omp_num_threads():
    """Dask's workers (and many job schedulers) set OMP_NUM_THREADS=1: cygru's default
    follows it, as scikit-learn's does; CYGRU_NUM_THREADS still overrides."""
    import os

    cores = len(os.sched_getaffinity(0))
    base = {"CYGRU_NUM_THREADS": None, "OMP_NUM_THREADS": None}
    assert _threads_in_child(base) == min(cores, 256)
    assert _threads_in_child(dict(base, OMP_NUM_THREADS="1")) == 1
    assert _threads_in_child(dict(base, OMP_NUM_THREADS="64")) == min(cores, 64)
    assert _threads_in_child(dict(base, OMP_NUM_THREADS="1", CYGRU_NUM_THREADS="3")) == 3


def test_default_honours_threadpoolctl_openmp_limit(monkeypatch):
    threadpoolctl = import_optional("threadpoolctl")
    if not any(i["internal_api"] == "openmp" for i in threadpoolctl.threadpool_info()):
        pytest.skip("threadpoolctl does not see cygru's OpenMP runtime")
    monkeypatch.setattr(_cpu, "_num_threads", 0)  # the default, not a setting
    outside = cygru.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cygru.get_num_threads() == 1
        m = cygru.GRU(8, 256, bidirectional=True, seed=0)
        x = np.ones((3, 4, 8), np.float32)
        assert _cpu._threads_for(4, 256, 2, np.float32) == 1
        inside = m(x)[0]
    assert cygru.get_num_threads() == outside
    assert np.array_equal(inside, m(x)[0])  # any thread count: the same bits


def test_concurrent_calls_share_the_default(monkeypatch):
    """Two calls running at once on two Python threads each get half the default (which
    changes how fast, never the bits: see the next test)."""
    monkeypatch.setattr(_cpu, "_num_threads", 0)
    monkeypatch.setattr(_cpu, "_default_threads", lambda: 4)
    for big in ((64, 512, 1, np.float32), (64, 512, 1, np.float64)):
        assert _cpu._threads_for(*big) == 4
        monkeypatch.setattr(_cpu, "_active_calls", 2)
        assert _cpu._threads_for(*big) == 2
        monkeypatch.setattr(_cpu, "_active_calls", 8)
        assert _cpu._threads_for(*big) == 1
        # an explicit setting is the user's choice: not shared
        monkeypatch.setattr(_cpu, "_num_threads", 4)
        assert _cpu._threads_for(*big) == 4
        monkeypatch.setattr(_cpu, "_num_threads", 0)
        monkeypatch.setattr(_cpu, "_active_calls", 0)
    # too small to split: one thread
    assert _cpu._threads_for(1, 8, 1, np.float32) == 1


def test_sharing_the_default_never_changes_the_bits(monkeypatch):
    """A call that shares the default with another running call (so gets 1 thread here)
    gives the same bits as the same call alone. (Found by a hostile review: with 1
    thread the large input projection went to BLAS, which rounds differently.)"""
    monkeypatch.setattr(_cpu, "_num_threads", 0)
    monkeypatch.setattr(_cpu, "_default_threads", lambda: 2)
    rng = np.random.default_rng(0)
    m = cygru.GRU(513, 64, num_layers=2, bidirectional=True, seed=0)
    x = rng.standard_normal((50, 32, 513)).astype(np.float32)
    (alone, h_alone), bw = m.vjp(x)
    m.zero_grad()
    dx_alone = bw(np.ones_like(alone), None)[0]
    g_alone = {k: v.copy() for k, v in m.grads.items()}
    monkeypatch.setattr(_cpu, "_active_calls", 2)
    (shared, h_shared), bw = m.vjp(x)
    m.zero_grad()
    dx_shared = bw(np.ones_like(alone), None)[0]
    assert np.array_equal(alone, shared) and np.array_equal(h_alone, h_shared)
    assert np.array_equal(dx_alone, dx_shared)
    assert all(np.array_equal(g_alone[k], m.grads[k]) for k in g_alone)


def test_active_call_count_returns_to_zero():
    m = cygru.GRU(4, 8, seed=0)
    (out, _), bw = m.vjp(np.ones((3, 2, 4), np.float32))
    bw(np.ones_like(out), None)
    with pytest.raises(ValueError):
        m(np.ones((3, 2, 5), np.float32))
    assert _cpu._active_calls == 0


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@st.composite
def _stream_cases(draw):
    """A model, a sequence, a thread count and a random way to cut the sequence."""
    T = draw(st.integers(1, 40))
    cuts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=6))) if T > 1 else []
    return dict(
        T=T,
        cuts=cuts,
        B=draw(st.integers(1, 5)),
        I=draw(st.integers(1, 40)),
        H=draw(st.integers(1, 70)),
        layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        reset_after=draw(st.booleans()),
        bias=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        threads=draw(st.integers(1, 8)),
        chunk=draw(st.sampled_from([0, 1, 3])),
        seed=draw(st.integers(0, 2**16)),
    )


def _run_in_pieces(m, x, h0, cuts):
    """m over x as calls on the pieces between `cuts`, chaining h_n into h0."""
    outs, h = [], h0
    for a, b in zip([0] + cuts, cuts + [x.shape[0]]):
        o, h = m(x[a:b], h)
        outs.append(o)
    return np.concatenate(outs), h


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_stream_cases())
def test_property_bitwise_for_any_threads_and_any_cut(case):
    """The guarantee (docs: Reproducibility): float32 and float64 results are identical
    for every thread count (1 to 8 here) and every way of cutting a sequence into calls
    that chain h0, and the C API's model_forward (the same engine, one thread) gives
    the same bits, whole or cut. Unidirectional models only for the cuts (a backward
    direction reads the sequence from its end: cutting it is a different model);
    bidirectional ones check the thread counts."""
    import cygru.capi

    c = case
    rng = np.random.default_rng(c["seed"])
    m = cygru.GRU(
        c["I"],
        c["H"],
        num_layers=c["layers"],
        bidirectional=c["bidirectional"],
        reset_after=c["reset_after"],
        bias=c["bias"],
        dtype=c["dtype"],
        seed=c["seed"],
    )
    D = m.num_directions
    x = rng.standard_normal((c["T"], c["B"], c["I"])).astype(c["dtype"])
    h0 = rng.standard_normal((c["layers"] * D, c["B"], c["H"])).astype(c["dtype"])
    before = cygru.get_num_threads()
    saved = _cpu.MIN_WORK_PER_THREAD, _cpu._CHUNK_STEPS
    try:
        _cpu.MIN_WORK_PER_THREAD, _cpu._CHUNK_STEPS = 0, c["chunk"]
        cygru.set_num_threads(1)
        whole, h_whole = m(x, h0)
        cygru.set_num_threads(c["threads"])
        out, h = m(x, h0)
        assert np.array_equal(out, whole) and np.array_equal(h, h_whole)
        exported = cygru.capi.export_weights(m)
        out_c, h_c = exported.forward(x, h0)
        assert np.array_equal(out_c, whole) and np.array_equal(h_c, h_whole)
        if D == 1:
            out, h = _run_in_pieces(m, x, h0, c["cuts"])
            assert np.array_equal(out, whole) and np.array_equal(h, h_whole)
            out, h = _run_in_pieces(_Forward(exported), x, h0, c["cuts"])
            assert np.array_equal(out, whole) and np.array_equal(h, h_whole)
    finally:
        cygru.set_num_threads(before)
        _cpu.MIN_WORK_PER_THREAD, _cpu._CHUNK_STEPS = saved


class _Forward:
    """An exported model called like a module: (x, h0) -> (output, h_n)."""

    def __init__(self, exported):
        self.exported = exported

    def __call__(self, x, h0):
        return self.exported.forward(x, h0)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_long_stream_with_large_input_cut_into_calls(threads):
    """A stream whose input projection is large (above the 4e6 multiply-adds where one
    thread used to hand it to BLAS) and long enough to be projected in chunks: any cut
    reproduces one call bit for bit, on any thread count, in float32 and float64."""
    before = cygru.get_num_threads()
    try:
        for dtype in (np.float32, np.float64):
            cygru.set_num_threads(threads)
            rng = np.random.default_rng(threads)
            m = cygru.GRU(200, 96, seed=0, dtype=dtype)
            x = rng.standard_normal((300, 16, 200)).astype(dtype)
            whole, h_whole = m(x)
            cygru.set_num_threads(1)
            assert np.array_equal(m(x)[0], whole)
            cygru.set_num_threads(threads)
            for cuts in ([1, 2, 3], [7, 100, 299], [150]):
                out, h = _run_in_pieces(m, x, None, cuts)
                assert np.array_equal(out, whole), cuts
                assert np.array_equal(h, h_whole), cuts
    finally:
        cygru.set_num_threads(before)


# -- fork ------------------------------------------------------------------------------------
# A process's threads do not survive fork(): with GNU OpenMP's pool, a child forked after a
# threaded call hung forever in libgomp at its first threaded call; cygru's own pool is
# cleared in the child, which starts fresh workers at its first threaded call. Each scenario runs
# in a fresh interpreter under a timeout; children report (their results, their thread count)
# through files, and the parent compares them bit for bit with its own.

_FORK_SCRIPT = r"""
import multiprocessing as mp, os, sys, threading, time
import numpy as np
import cygru
from cygru import _engine

N, SCENARIO, OUT = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cygru.set_num_threads(N)
g = cygru.GRU(32, 128, num_layers=2, bidirectional=True, seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((20, 16, 32)).astype(np.float32)
lengths = np.array([20, 3, 17, 9] * 4)
d_out = rng.standard_normal((20, 16, 256)).astype(np.float32)


def compute(tag):
    (out, h_n), backward = g.vjp(x, None, lengths)
    g.zero_grad()
    dx, dh0 = backward(d_out, None)
    grads = [v.copy() for v in g.grads.values()]
    return dict(out=out, h_n=h_n, dx=dx, dh0=dh0, threads=cygru.get_num_threads(),
                forked=_engine.forked_child(), workers=_engine.pool_workers(),
                pid=os.getpid(), tag=tag, grads=grads)


def save(tag):
    r = compute(tag)
    np.save(os.path.join(OUT, f"{tag}-{os.getpid()}.npy"), np.array(r, dtype=object),
            allow_pickle=True)


def wait(pid, what):
    for _ in range(1200):                      # 60 s: a hang, not a slow child
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, (what, status)
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    raise SystemExit(f"HANG: {what} did not finish in 60 s")


def fork_and_save(tag):
    pid = os.fork()
    if pid == 0:
        try:
            save(tag)
        finally:
            os._exit(0)
    wait(pid, tag)


if SCENARIO == "fork-first":
    fork_and_save("child")                     # before any threaded call: keeps threads
save("parent")                                 # a threaded call: the pool has workers
if SCENARIO == "os.fork":
    fork_and_save("child")
elif SCENARIO == "mp-fork":
    p = mp.get_context("fork").Process(target=save, args=("child",))
    p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
        raise SystemExit("HANG: the multiprocessing child did not finish in 60 s")
    assert p.exitcode == 0, p.exitcode
elif SCENARIO == "pool":
    with mp.get_context("fork").Pool(2) as pool:
        res = pool.map_async(save, [f"child{i}" for i in range(4)])
        res.get(timeout=60)
elif SCENARIO == "fork-again":
    def child_then_grandchild():
        save("child")
        fork_and_save("grandchild")
    pid = os.fork()
    if pid == 0:
        try:
            child_then_grandchild()
        finally:
            os._exit(0)
    wait(pid, "child")
elif SCENARIO == "busy-thread":
    # fork while another thread is inside cygru calls (its threads, its lock and its
    # count of running calls belong to that thread, which the child does not have)
    stop = threading.Event()
    def busy():
        while not stop.is_set():
            g(x)
    t = threading.Thread(target=busy)
    t.start()
    try:
        for i in range(6):
            time.sleep(0.01 * i)
            fork_and_save(f"child{i}")
    finally:
        stop.set()
        t.join()
print("DONE")
"""


def _fork_results(tmp_path, threads, scenario):
    import subprocess
    import sys

    script = tmp_path / "fork_scenario.py"
    script.write_text(_FORK_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    os = __import__("os")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # this checkout's cygru (a script's own directory comes first on sys.path, not cwd)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    try:
        r = subprocess.run(
            [sys.executable, str(script), str(threads), scenario, str(out)],
            capture_output=True,
            text=True,
            cwd=root,
            env=env,
            timeout=240,
        )
    except subprocess.TimeoutExpired as e:  # pragma: no cover - the regression itself
        pytest.fail(f"fork scenario {scenario} hung: {e}")
    assert r.returncode == 0 and "DONE" in r.stdout, r.stdout + r.stderr
    return [np.load(f, allow_pickle=True).item() for f in sorted(out.iterdir())]


def _assert_same_bits(a, b):
    for key in ("out", "h_n", "dx", "dh0"):
        assert np.array_equal(a[key], b[key]), key
    assert all(np.array_equal(p, q) for p, q in zip(a["grads"], b["grads"]))
    assert len(a["grads"]) == len(b["grads"]) == 16


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize(
    "scenario", ["os.fork", "mp-fork", "pool", "fork-again", "busy-thread", "fork-first"]
)
def test_forked_child_runs_and_gives_the_parents_bits(tmp_path, threads, scenario):
    """A child forked after a threaded call (os.fork, multiprocessing's "fork" Process and
    Pool, a child that forks again, a fork while another thread is inside cygru) finishes
    its forward and backward on its own fresh workers (the parent's do not exist there),
    with the parent's results bit for bit; so does a child forked before any threaded
    call."""
    results = _fork_results(tmp_path, threads, scenario)
    parents = [r for r in results if r["tag"] == "parent"]
    children = [r for r in results if r["tag"] != "parent"]
    expected = {"os.fork": 1, "mp-fork": 1, "pool": 4, "fork-again": 2, "busy-thread": 6}
    expected["fork-first"] = 1
    assert len(parents) == 1 and len(children) == expected[scenario], [r["tag"] for r in results]
    parent = parents[0]
    assert parent["threads"] == threads and not parent["forked"]
    assert parent["workers"] >= threads - 1
    for child in children:
        assert child["pid"] != parent["pid"]
        # forked after the parent's pool started (not before: fork-first), and the child
        # started its own workers for its threaded calls
        assert child["forked"] == (scenario != "fork-first"), child["tag"]
        assert child["threads"] == threads and child["workers"] >= threads - 1, child["tag"]
        _assert_same_bits(child, parent)
    if scenario == "fork-again":
        assert {c["tag"] for c in children} == {"child", "grandchild"}


# -- the worker pool (cygru/include/cygru_pool.h) --------------------------------------------

_ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_engine_runs_no_openmp_region():
    """The engine's threads are its own pool: no OpenMP parallel region (whose closing
    barrier made the caller wait for every team thread, descheduled ones included)."""
    src = (_ROOT / "cygru" / "_engine.pyx").read_text()
    code = "\n".join(line.split("#")[0] for line in src.splitlines())
    assert "parallel(" not in code and "prange" not in code and "openmp" not in code
    assert "cygru_pool_run(" in code


_POOL_STRESS = r"""
import sys, threading
import numpy as np
import cygru
from cygru import _cpu, _engine

_cpu.MIN_WORK_PER_THREAD = 0          # split even tiny problems over threads
rng = np.random.default_rng(1)
cases = []
for bidir, reset_after, T, B, H in [(False, True, 3, 1, 40), (True, True, 5, 2, 33),
                                    (True, False, 4, 3, 64), (False, False, 1, 1, 16)]:
    g = cygru.GRU(8, H, bidirectional=bidir, reset_after=reset_after, seed=T)
    x = rng.standard_normal((T, B, 8)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B) if B > 1 else None
    d_out = rng.standard_normal((T, B, H * (2 if bidir else 1))).astype(np.float32)
    cases.append((g, x, lengths, d_out))


def run(case):
    g, x, lengths, d_out = case
    (out, h_n), bw = g.vjp(x, None, lengths)
    g.zero_grad()
    dx, dh0 = bw(d_out, None)
    return [out, h_n, dx, dh0] + [v.copy() for v in g.grads.values()]


cygru.set_num_threads(1)
want = [run(c) for c in cases]
cygru.set_num_threads(8)              # 8 threads: more than the machine's cores
_engine._set_chaos(int(sys.argv[1]))  # random yields and sleeps in the protocol's windows
_engine._set_spin_policy(int(sys.argv[2]), sys.argv[3] == "1")
bad = []


def loop(seed, n):
    r = np.random.default_rng(seed)
    for _ in range(n):
        i = int(r.integers(len(cases)))
        got = run(cases[i]) if threading.current_thread() is threading.main_thread() else None
        if got is None:               # another Python thread: forward only (grads shared)
            g, x, lengths, _ = cases[i]
            out, h_n = g(x, None, lengths)
            got = [out, h_n]
        if not all(np.array_equal(a, b) for a, b in zip(got, want[i])):
            bad.append(i)


threads = [threading.Thread(target=loop, args=(s, 300)) for s in range(3)]
for t in threads:
    t.start()
loop(99, int(sys.argv[4]))
for t in threads:
    t.join()
assert _engine.pool_workers() >= 7, _engine.pool_workers()
print("BAD" if bad else "OK", len(bad))
"""


@pytest.mark.parametrize(
    "chaos, spin_ns, use_yield",
    [(0, 50000, 0), (7, 50000, 0), (3, 0, 0), (5, 5000, 1)],
    ids=["no-stalls", "stalls-spin-50us", "many-stalls-no-spin", "stalls-yield-5us"],
)
def test_pool_stress_bit_identical_and_never_hangs(tmp_path, chaos, spin_ns, use_yield):
    """Thousands of tiny forward+backward calls on 8 threads (more than the cores),
    beside three Python threads making forward calls at once (they find the pool busy and
    run alone), with the pool's threads yielding or sleeping at random between snapshot,
    claim and piece (so workers join late, mid-sequence, or after their job ended and
    the next began): every result bit-identical to one thread, and no hang (a fresh
    interpreter under a timeout)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "pool_stress.py"
    script.write_text(_POOL_STRESS)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    try:
        r = subprocess.run(
            [sys.executable, str(script), str(chaos), str(spin_ns), str(use_yield), "1500"],
            capture_output=True,
            text=True,
            cwd=str(_ROOT),
            env=env,
            timeout=400,
        )
    except subprocess.TimeoutExpired as e:  # pragma: no cover - the regression itself
        pytest.fail(f"pool stress hung: {e}")
    assert r.returncode == 0 and r.stdout.strip() == "OK 0", r.stdout + r.stderr[-2000:]


_EXIT_SCRIPT = r"""
import os, sys, threading, time
import numpy as np
import cygru
from cygru import _cpu, _engine

_cpu.MIN_WORK_PER_THREAD = 0
cygru.set_num_threads(4)
g = cygru.GRU(16, 64, bidirectional=True, seed=0)
x = np.ones((30, 2, 16), np.float32)
g(x)
assert _engine.pool_workers() >= 3
how = sys.argv[1]


def busy():
    while True:
        g(x)


if how in ("daemon-exit", "daemon-os-exit"):
    threading.Thread(target=busy, daemon=True).start()
    time.sleep(0.05)
print("EXITING", flush=True)
if how == "daemon-os-exit":
    os._exit(0)
if how == "sys-exit-code":
    sys.exit(3)
"""


@pytest.mark.parametrize("how", ["return", "daemon-exit", "daemon-os-exit", "sys-exit-code"])
def test_process_exit_with_workers_alive(tmp_path, how):
    """A process ends (interpreter shutdown, with a daemon Python thread inside cygru
    calls or not; os._exit; sys.exit(3)) while the pool's workers wait or work: no hang,
    no crash, the exit status given."""
    import os
    import subprocess
    import sys

    script = tmp_path / "exit.py"
    script.write_text(_EXIT_SCRIPT)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    for _ in range(3):
        r = subprocess.run(
            [sys.executable, str(script), how],
            capture_output=True,
            text=True,
            cwd=str(_ROOT),
            env=env,
            timeout=120,
        )
        assert "EXITING" in r.stdout, r.stderr[-2000:]
        assert r.returncode == (3 if how == "sys-exit-code" else 0), r.stderr[-2000:]


def test_spin_policy_knob():
    """CYGRU_SPIN_US / CYGRU_SPIN_YIELD (a private tuning aid read at import): parsed
    into (ns, yield), bad values refused naming the variable; the policy in force can be
    changed and gives the same bits."""
    from cygru import _engine

    parse = _engine._spin_policy_from_env
    assert parse({}) == (50000, False)
    assert parse({"CYGRU_SPIN_US": "0"}) == (0, False)
    assert parse({"CYGRU_SPIN_US": "5", "CYGRU_SPIN_YIELD": "1"}) == (5000, True)
    assert parse({"CYGRU_SPIN_US": " 2.5 "}) == (2500, False)
    for bad in ("-1", "abc", "1e7", "nan"):
        with pytest.raises(ValueError, match="CYGRU_SPIN_US"):
            parse({"CYGRU_SPIN_US": bad})
    with pytest.raises(ValueError, match="CYGRU_SPIN_YIELD"):
        parse({"CYGRU_SPIN_YIELD": "yes"})
    before = _engine.spin_policy()
    g = cygru.GRU(8, 64, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 2, 8)).astype(np.float32)
    n_before = cygru.get_num_threads()
    try:
        cygru.set_num_threads(1)
        want = g(x)[0]
        cygru.set_num_threads(4)
        for ns, y in ((0, False), (5000, True), (50000, False)):
            assert _engine._set_spin_policy(ns, y) == (ns, y)
            for _ in range(20):
                assert np.array_equal(g(x)[0], want)
    finally:
        _engine._set_spin_policy(*before)
        cygru.set_num_threads(n_before)


def test_thread_local_count_is_taken_as_given(monkeypatch):
    """_cpu._thread_count(k) (cygru.dask's threads=k): this Python thread's calls use k
    threads, as set_num_threads(k) gives, even above the cores and while other calls run
    (not shared); nested blocks and exceptions restore the previous count; a count set
    process-wide wins."""
    import os

    monkeypatch.setattr(_cpu, "_num_threads", 0)
    monkeypatch.setattr(_cpu, "_active_calls", 0)
    default = cygru.get_num_threads()
    k = len(os.sched_getaffinity(0)) + 2
    big = (64, 2048, 1, np.float32)
    with _cpu._thread_count(k):
        assert cygru.get_num_threads() == k and _cpu._threads_for(*big) == k
        monkeypatch.setattr(_cpu, "_active_calls", 2)  # another call running: not halved
        assert _cpu._threads_for(*big) == k
        monkeypatch.setattr(_cpu, "_active_calls", 0)
        with _cpu._thread_count(1):
            assert cygru.get_num_threads() == 1
        assert cygru.get_num_threads() == k
        with pytest.raises(RuntimeError):
            with _cpu._thread_count(3):
                raise RuntimeError
        assert cygru.get_num_threads() == k
        monkeypatch.setattr(_cpu, "_num_threads", 2)  # set_num_threads(2) wins
        assert cygru.get_num_threads() == 2
        monkeypatch.setattr(_cpu, "_num_threads", 0)
    assert cygru.get_num_threads() == default
    for bad in (0, 257, 1.5, True):
        with pytest.raises(ValueError, match="cygru threads"):
            with _cpu._thread_count(bad):
                pass


def test_set_num_threads_none_goes_back_to_the_default(monkeypatch):
    """set_num_threads(None) lifts a count set before: the default returns (the
    environment variable read again, else the cores), and a task's own count
    (cygru.dask's threads=k) is taken again, which a count set back to the value
    get_num_threads() returned would hold over for good."""
    from cygru import _cpu

    monkeypatch.delenv("CYGRU_NUM_THREADS", raising=False)
    default = _cpu._default_threads()
    cygru.set_num_threads(5)
    assert cygru.get_num_threads() == 5
    cygru.set_num_threads(None)
    assert cygru.get_num_threads() == default
    with _cpu._thread_count(7):
        assert cygru.get_num_threads() == 7
    cygru.set_num_threads(default)  # the pitfall: the value is now fixed
    with _cpu._thread_count(7):
        assert cygru.get_num_threads() == default
    monkeypatch.setenv("CYGRU_NUM_THREADS", "3")
    cygru.set_num_threads(None)
    assert cygru.get_num_threads() == 3

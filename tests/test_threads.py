"""The threaded float32 forward and backward (hidden units split over threads, one
barrier per step; directions on separate thread groups): every multi-thread count
gives bit-identical results, and so does one thread unless it projects a large input
with BLAS (then equal up to the last bits), for every option; the thread-count API validates its
input."""
import numpy as np
import pytest

import cygru
from cygru import _cpu


@pytest.fixture(params=["projected-up-front", "chunks-of-2-steps", "chunks-of-1-step"])
def force_threads(monkeypatch, request):
    """Split even tiny problems over threads, and restore the thread count after.

    Parametrised over the two ways the input projection runs: all steps before the
    time loop, or chunks of steps inside it (long sequences; forced here by shrinking
    the byte limits so that a chunk holds 2 steps, or 1)."""
    monkeypatch.setattr(_cpu, "MIN_WORK_PER_THREAD", 0)
    if request.param != "projected-up-front":
        monkeypatch.setattr(_cpu, "PROJECTION_FULL_BYTES", 0)
        steps = 2 if request.param == "chunks-of-2-steps" else 1
        monkeypatch.setattr(_cpu, "PROJECTION_CHUNK_BYTES", 1)   # -> at least one step
        if steps == 2:
            monkeypatch.setattr(_cpu, "_chunk_steps", lambda T, B, H, itemsize: min(T, 2))
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
@pytest.mark.parametrize("one_thread_projects_with", ["cygru-kernel", "blas"])
def test_thread_counts_agree(force_threads, monkeypatch, cfg, H, with_lengths,
                             one_thread_projects_with):
    if one_thread_projects_with == "blas":
        # one thread hands inputs above OWN_PROJECTION_WORK multiply-adds to BLAS
        monkeypatch.setattr(_cpu, "OWN_PROJECTION_WORK", 0)
    rng = np.random.default_rng(H)
    T, B, I = 9, 4, 6
    m = cygru.GRU(I, H, seed=1, **cfg)
    shape = (B, T, I) if m.batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(np.float32)
    h0 = rng.standard_normal((m.num_layers * m.num_directions, B, H)).astype(np.float32)
    lengths = np.array([9, 3, 1, 6]) if with_lengths else None
    d_out = None
    results = {}
    for n in (1, 2, 3, 4):
        cygru.set_num_threads(n)
        (out, h_n), backward = m.vjp(x, h0, lengths)
        if d_out is None:
            d_out = rng.standard_normal(out.shape).astype(np.float32)
            d_hn = rng.standard_normal(h_n.shape).astype(np.float32)
        m.zero_grad()
        dx, dh0 = backward(d_out, d_hn)
        plain = m(x, h0, lengths)
        results[n] = (out, h_n, dx, dh0, plain[0], plain[1],
                      *[g.copy() for g in m.grads.values()])
    # Several threads: each projects its own gate columns with cygru's packed kernel,
    # so every multi-thread count agrees bit for bit. One thread does the same for a
    # small input (bit-identical too); when it projects with BLAS, the values agree up
    # to rounding in the last bits.
    for n in (3, 4):
        for a, b in zip(results[2], results[n]):
            assert np.array_equal(a, b), f"{n} threads differ from 2 threads"
    for a, b in zip(results[1], results[2]):
        if one_thread_projects_with == "blas":
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
        else:
            assert np.array_equal(a, b), "1 thread differs from 2 threads"


def test_threads_match_float64_reference(force_threads):
    """Threaded float32 (both projection modes) against the float64 reference."""
    from cygru import _reference
    rng = np.random.default_rng(0)
    cygru.set_num_threads(2)
    m = cygru.GRU(7, 48, num_layers=2, bidirectional=True, seed=0)
    x = rng.standard_normal((11, 3, 7)).astype(np.float32)
    out, h_n = m(x, lengths=[11, 4, 8])
    ref = _reference.gru_forward(x.astype(np.float64), None,
                                 [[tuple(None if a is None else a.astype(np.float64) for a in t)
                                   for t in layer] for layer in m._layers()],
                                 hidden_size=48, num_directions=2, lengths=np.array([11, 4, 8]))
    np.testing.assert_allclose(out, ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, ref[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="positive integer"):
        cygru.set_num_threads(bad)


def test_env_var_sets_default(monkeypatch):
    import subprocess
    import sys
    code = "import cygru; print(cygru.get_num_threads())"
    env = dict(__import__("os").environ, CYGRU_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=__import__("os").path.dirname(__import__("os").path.dirname(__file__)))
    assert out.stdout.strip() == "3", out.stderr
    env["CYGRU_NUM_THREADS"] = "many"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=__import__("os").path.dirname(__import__("os").path.dirname(__file__)))
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
        "                          ('GOMP_SPINCOUNT', 'OPENBLAS_THREAD_TIMEOUT')}}))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"),
                    reason="reads /proc/self/maps")
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

MANY = (2, 9, 16, 64, 256)         # 256: cygru._cpu.MAX_THREADS


@pytest.mark.parametrize("cfg", [CONFIGS[1], CONFIGS[3]],
                         ids=["2-layer-bidirectional", "bidirectional-reset_before-batch_first"])
@pytest.mark.parametrize("H", [5, 70])
def test_many_threads_bit_identical(force_threads, cfg, H):
    """9 to 256 threads (a direction gets up to H of them, one unit each at least) give
    the same bits as 2 threads, forward and backward, with lengths. (Regression: the
    pointer tables of a layer call had 8 slots per kind and were indexed by thread: 9+
    threads corrupted the heap, crashed or deadlocked.)"""
    rng = np.random.default_rng(H)
    T, B, I = 6, 3, 4
    m = cygru.GRU(I, H, seed=1, **cfg)
    shape = (B, T, I) if m.batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(np.float32)
    lengths = np.array([6, 2, 5])
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
    code = ("import numpy as np, cygru\n"
            "x = np.random.default_rng(0).standard_normal((5, 4, 8)).astype(np.float32)\n"
            "m = cygru.GRU(8, 256, bidirectional=True, seed=0)\n"
            "(out, h), bw = m.vjp(x)\n"
            "dx, _ = bw(np.ones_like(out), None)\n"
            "assert cygru.get_num_threads() == %d\n"
            "cygru.set_num_threads(1)\n"
            "(out1, h1), bw1 = m.vjp(x)\n"
            "dx1, _ = bw1(np.ones_like(out), None)\n"
            "print(float(abs(out - out1).max()), float(abs(dx - dx1).max()))\n" % n)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CYGRU_NUM_THREADS=str(n))
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"rc={r.returncode}: {r.stderr[-800:]}"
    diff_out, diff_dx = map(float, r.stdout.split())
    # one thread projects with BLAS above OWN_PROJECTION_WORK: equal up to the last bits
    assert diff_out < 1e-5 and diff_dx < 1e-5


def test_thread_plan_never_exceeds_hidden_units():
    """A direction gets at most H threads and its pieces are non-empty unit slices."""
    for H in (1, 3, 16, 100):
        for n in (1, 2, 9, 64, 256):
            for D in (1, 2):
                per_dir, started = _cpu._thread_groups(n, D, H)
                assert 1 <= per_dir <= H
                assert started == (per_dir * D if n >= D else n)
                pieces = _cpu._piece_bounds(H, per_dir)
                assert pieces[0] == 0 and pieces[-1] == H
                assert all(pieces[k] < pieces[k + 1] for k in range(len(pieces) - 1))
                assert len(pieces) - 1 == min(_cpu.PIECES_PER_THREAD * per_dir, H)


@pytest.mark.parametrize("good", [1, 2, 9, 256, np.int64(3), np.int32(4), np.uint8(5)])
def test_set_num_threads_accepts_integers_up_to_the_bound(good):
    before = cygru.get_num_threads()
    try:
        cygru.set_num_threads(good)
        assert cygru.get_num_threads() == int(good)
        assert type(cygru.get_num_threads()) is int
    finally:
        cygru.set_num_threads(before)


@pytest.mark.parametrize("bad", [257, 2**40, -(2**40), np.int64(0), np.bool_(True), b"2",
                                 2.0, np.float64(2.0), np.array([3]), None])
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
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                       text=True, timeout=120)
    if value.strip() == "":
        assert r.returncode == 0 and int(r.stdout) >= 1, r.stderr
    else:
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("ValueError") and "CYGRU_NUM_THREADS" in last, last
        assert value.strip() in last, last


@pytest.mark.parametrize("omp_env", [{"OMP_THREAD_LIMIT": "1"}, {"OMP_THREAD_LIMIT": "3"},
                                     {"OMP_DYNAMIC": "true"}, {"OMP_MAX_ACTIVE_LEVELS": "0"}],
                         ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
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
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                       text=True, timeout=300)
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
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                       text=True, timeout=120)
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
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not any(i["internal_api"] == "openmp" for i in threadpoolctl.threadpool_info()):
        pytest.skip("threadpoolctl does not see cygru's OpenMP runtime")
    monkeypatch.setattr(_cpu, "_num_threads", 0)          # the default, not a setting
    outside = cygru.get_num_threads()
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cygru.get_num_threads() == 1
        m = cygru.GRU(8, 256, bidirectional=True, seed=0)
        x = np.ones((3, 4, 8), np.float32)
        assert _cpu._threads_for(4, 256, 2, np.float32) == (1, False)
        inside = m(x)[0]
    assert cygru.get_num_threads() == outside
    assert np.allclose(inside, m(x)[0], rtol=1e-5, atol=1e-6)


def test_concurrent_calls_share_the_default(monkeypatch):
    """Two calls running at once on two Python threads each get half the default; the
    kernels stay those of the unshared plan (pieces, cygru's own projection)."""
    monkeypatch.setattr(_cpu, "_num_threads", 0)
    monkeypatch.setattr(_cpu, "_default_threads", lambda: 4)
    big = (64, 512, 1, np.float32)
    assert _cpu._threads_for(*big) == (4, True)
    monkeypatch.setattr(_cpu, "_active_calls", 2)
    assert _cpu._threads_for(*big) == (2, True)
    monkeypatch.setattr(_cpu, "_active_calls", 8)
    assert _cpu._threads_for(*big) == (1, True)
    # an explicit setting is the user's choice: not shared
    monkeypatch.setattr(_cpu, "_num_threads", 4)
    assert _cpu._threads_for(*big) == (4, True)
    # too small to split, or float64: one thread, the serial kernels
    assert _cpu._threads_for(1, 8, 1, np.float32) == (1, False)
    assert _cpu._threads_for(64, 512, 1, np.float64) == (1, False)


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


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], dict(num_layers=2, bias=False)],
                         ids=["plain", "reset_before", "two-layers-no-bias"])
def test_stream_cut_into_calls_reproduces_one_call(threads, cfg):
    """A float32 sequence fed in chunks of any length, chaining h_n into h0, gives the
    outputs of one call bit for bit, whenever the input projection runs in cygru's own
    kernel (with several threads, and with one for inputs up to
    cygru._cpu.OWN_PROJECTION_WORK multiply-adds per direction)."""
    before = cygru.get_num_threads()
    try:
        cygru.set_num_threads(threads)
        rng = np.random.default_rng(threads)
        m = cygru.GRU(24, 48, seed=0, **cfg)
        x = rng.standard_normal((120, 3, 24)).astype(np.float32)
        h0 = rng.standard_normal((m.num_layers, 3, 48)).astype(np.float32)
        whole, h_whole = m(x, h0)
        for cut in (1, 5, 7, 64, 119):
            outs, h = [], h0
            for s in range(0, 120, cut):
                o, h = m(x[s:s + cut], h)
                outs.append(o)
            assert np.array_equal(np.concatenate(outs), whole), cut
            assert np.array_equal(h, h_whole), cut
    finally:
        cygru.set_num_threads(before)

"""The lean path of a module call (issue 24: no work, no waking).

A call's common case (a CPU module, x and h0 exact NumPy arrays of the module's dtype,
C-contiguous, of the right shapes, no lengths) goes straight to the compiled entries
``_cpu.gru_lean`` / ``_cpu.cell_lean``; everything else takes the checked path. These
tests check that the lean path is taken when it should be (a counter, not timing), that
it gives the checked path's bits and errors for a matrix of inputs, that it never
aliases or writes the caller's arrays, that it reads a consistent set of weights while
another thread replaces them, and that a call too small for threads plans one thread and
starts no parallel region.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import cygru
from cygru import _cpu
from cygru import functional as F
from optional_deps import import_optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _counts():
    s = _cpu._lean_stats()
    return s["gru"], s["cell"]


@pytest.fixture
def checked_only(monkeypatch):
    """Within the test, every call takes the checked path (the lean entries decline)."""

    def off():
        monkeypatch.setattr(F, "lean_gru", lambda *a: None)
        monkeypatch.setattr(F, "lean_cell", lambda *a: None)

    return off


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


def _result_bits(res):
    if isinstance(res, tuple):
        return tuple(_bits(r) for r in res)
    return _bits(res)


def _outcome(fn):
    """(True, bits of the results) or (False, (exception type, message))."""
    try:
        res = fn()
    except Exception as exc:  # the type and message are what is compared
        return False, (type(exc), str(exc))
    return True, _result_bits(res)


# -- the lean path is taken for the common case ------------------------------------------

GRU_CASES = [
    dict(),
    dict(num_layers=2),
    dict(num_layers=3, bidirectional=True),
    dict(bias=False),
    dict(batch_first=True),
    dict(reverse=True),
    dict(reset_after=False),
    dict(dtype=np.float64),
    dict(num_layers=2, bidirectional=True, batch_first=True, bias=False, dtype=np.float64),
]


@pytest.mark.parametrize(
    "opts", GRU_CASES, ids=lambda o: ",".join(map(str, o.items())) or "default"
)
@pytest.mark.parametrize("T,B", [(1, 1), (1, 3), (4, 1), (5, 2)])
def test_gru_common_case_takes_the_lean_path_with_the_checked_bits(opts, T, B, checked_only):
    rng = np.random.default_rng(T * 10 + B)
    m = cygru.GRU(6, 5, seed=1, **opts)
    L, D, dt = m.num_layers, m.num_directions, m.dtype
    x = rng.standard_normal((B, T, 6) if m.batch_first else (T, B, 6)).astype(dt)
    h0 = rng.standard_normal((L * D, B, 5)).astype(dt)
    calls = []
    unbatched = np.ascontiguousarray(x[0] if m.batch_first else x[:, 0])
    for args, kw in (((x,), {}), ((x, h0), {}), ((x,), {"hx": h0}), ((unbatched,), {})):
        before = _counts()[0]
        calls.append((args, kw, m(*args, **kw)))
        assert _counts()[0] == before + 1, "the common case must take the lean path"
    checked_only()
    for args, kw, lean in calls:
        before = _counts()[0]
        checked = m(*args, **kw)
        assert _counts()[0] == before
        assert _result_bits(lean) == _result_bits(checked)


def test_unbatched_gru_takes_the_lean_path():
    m = cygru.GRU(3, 4, num_layers=2, seed=0)
    x = np.ones((5, 3), np.float32)
    h0 = np.full((2, 4), 0.5, np.float32)
    before = _counts()[0]
    out, h_n = m(x, h0)
    assert _counts()[0] == before + 1
    assert out.shape == (5, 4) and h_n.shape == (2, 4)
    ref_out, ref_h = m(x[:, None], h0[:, None])
    assert np.array_equal(out, ref_out[:, 0]) and np.array_equal(h_n, ref_h[:, 0])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_common_case_takes_the_lean_path_with_the_checked_bits(bias, dtype, checked_only):
    rng = np.random.default_rng(0)
    c = cygru.GRUCell(6, 5, bias=bias, dtype=dtype, seed=2)
    x2 = rng.standard_normal((3, 6)).astype(dtype)
    h2 = rng.standard_normal((3, 5)).astype(dtype)
    cases = [((x2,), {}), ((x2, h2), {}), ((x2,), {"hx": h2}), ((x2[0],), {}), ((x2[0], h2[0]), {})]
    results = []
    for args, kw in cases:
        before = _counts()[1]
        results.append(c(*args, **kw))
        assert _counts()[1] == before + 1
    # the functional step takes it too
    before = _counts()[1]
    biases = (c.bias_ih, c.bias_hh) if bias else (None, None)
    f = F.gru_cell(x2, h2, c.weight_ih, c.weight_hh, *biases)
    assert _counts()[1] == before + 1
    assert np.array_equal(f, results[1])
    checked_only()
    for (args, kw), lean in zip(cases, results):
        before = _counts()[1]
        checked = c(*args, **kw)
        assert _counts()[1] == before
        assert _result_bits(lean) == _result_bits(checked)


def test_one_step_gru_equals_the_cell_shape_for_shape():
    """A one-step GRU call and a cell step over the same weights (both lean)."""
    g = cygru.GRU(4, 3, seed=0)
    c = cygru.GRUCell(4, 3, seed=0)
    c.load_state_dict({k[:-3]: v for k, v in g.state_dict().items()})
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    out, h_n = g(x[None])
    np.testing.assert_allclose(h_n[0], c(x), rtol=1e-6, atol=1e-7)


# -- the same bits and the same errors as the checked path, input by input ----------------


def _gru_inputs():
    """(name, x, h0, kwargs) for a GRU(4, 3, num_layers=2) float32 module: common cases,
    conversions and errors."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 3)).astype(np.float32)
    ro_x, ro_h = x.copy(), h0.copy()
    ro_x.flags.writeable = False
    ro_h.flags.writeable = False
    swapped = x.astype(">f4")
    unaligned = np.frombuffer(b"\0" + x.tobytes(), np.float32, count=x.size, offset=1)
    unaligned = unaligned.reshape(x.shape) if unaligned.size == x.size else x
    nan_x = x.copy()
    nan_x[0, 0, 0], nan_x[1, 1, 2] = np.nan, np.inf
    return [
        ("plain", x, h0, {}),
        ("no h0", x, None, {}),
        ("hx", x, None, {"hx": h0}),
        ("read-only", ro_x, ro_h, {}),
        ("nan and inf", nan_x, h0, {}),
        ("float64 x", x.astype(np.float64), h0, {}),
        ("float64 h0", x, h0.astype(np.float64), {}),
        ("int x", np.ones((3, 2, 4), np.int64), None, {}),
        ("byte-swapped", swapped, h0, {}),
        ("unaligned", unaligned, h0, {}),
        ("fortran", np.asfortranarray(x), h0, {}),
        ("strided", np.repeat(x, 2, axis=2)[:, :, ::2], h0, {}),
        ("list", x.tolist(), h0.tolist(), {}),
        ("matrix subclass", x.view(np.ndarray).view(type("Sub", (np.ndarray,), {})), h0, {}),
        ("lengths", x, h0, {"lengths": np.array([3, 1])}),
        ("empty batch", np.zeros((3, 0, 4), np.float32), None, {}),
        ("zero steps", np.zeros((0, 2, 4), np.float32), None, {}),
        ("wrong features", np.ones((3, 2, 5), np.float32), None, {}),
        ("wrong ndim", np.ones((4,), np.float32), None, {}),
        ("4 dims", np.ones((1, 3, 2, 4), np.float32), None, {}),
        ("h0 wrong batch", x, np.zeros((2, 3, 3), np.float32), {}),
        ("h0 wrong layers", x, np.zeros((1, 2, 3), np.float32), {}),
        ("h0 unbatched for batched x", x, np.zeros((2, 3), np.float32), {}),
        ("h0 and hx", x, h0, {"hx": h0}),
        ("complex x", x.astype(np.complex64), None, {}),
        ("string x", "abc", None, {}),
        ("none x", None, None, {}),
        ("unbatched", x[:, 0], h0[:, 0], {}),
        ("unbatched with batched h0", x[:, 0], h0, {}),
    ]


@pytest.mark.parametrize("case", _gru_inputs(), ids=lambda c: c[0])
def test_gru_lean_and_checked_agree(case, checked_only):
    name, x, h0, kw = case
    m = cygru.GRU(4, 3, num_layers=2, seed=3)
    snapshot = [
        None if a is None or isinstance(a, str) else np.array(a, copy=True) for a in (x, h0)
    ]
    lean = _outcome(lambda: m(x, h0, **kw))
    for a, before in zip((x, h0), snapshot):  # the caller's arrays are never written
        if before is not None:
            assert np.array_equal(np.asarray(a), before, equal_nan=True)
    checked_only()
    assert lean == _outcome(lambda: m(x, h0, **kw)), name


def _cell_inputs():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    h = rng.standard_normal((2, 3)).astype(np.float32)
    ro = x.copy()
    ro.flags.writeable = False
    return [
        ("plain", x, h, {}),
        ("no h", x, None, {}),
        ("hx", x, None, {"hx": h}),
        ("read-only", ro, h, {}),
        ("unbatched", x[0], h[0], {}),
        ("float64 x", x.astype(np.float64), h, {}),
        ("list", x.tolist(), None, {}),
        ("strided", np.repeat(x, 2, axis=1)[:, ::2], h, {}),
        ("byte-swapped", x.astype(">f4"), h, {}),
        ("empty batch", np.zeros((0, 4), np.float32), None, {}),
        ("wrong features", np.ones((2, 5), np.float32), None, {}),
        ("3 dims", np.ones((1, 2, 4), np.float32), None, {}),
        ("h wrong batch", x, np.zeros((3, 3), np.float32), {}),
        ("h unbatched for batched x", x, np.zeros((3,), np.float32), {}),
        ("h and hx", x, h, {"hx": h}),
        ("none x", None, None, {}),
    ]


@pytest.mark.parametrize("case", _cell_inputs(), ids=lambda c: c[0])
def test_cell_lean_and_checked_agree(case, checked_only):
    name, x, h, kw = case
    c = cygru.GRUCell(4, 3, seed=4)
    lean = _outcome(lambda: c(x, h, **kw))
    checked_only()
    assert lean == _outcome(lambda: c(x, h, **kw)), name


def test_torch_tensors_take_the_checked_path_with_the_same_bits():
    torch = import_optional("torch")
    m = cygru.GRU(4, 3, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 4)).astype(np.float32)
    before = _counts()[0]
    out_t, h_t = m(torch.from_numpy(x))
    assert _counts()[0] == before  # not an ndarray: checked and converted
    out, h_n = m(x)
    assert np.array_equal(out, out_t) and np.array_equal(h_n, h_t)
    c = cygru.GRUCell(4, 3, seed=0)
    assert np.array_equal(c(torch.from_numpy(x[0])), c(x[0]))


# -- fresh outputs, never the caller's memory ----------------------------------------------


def test_outputs_are_fresh_and_inputs_untouched():
    m = cygru.GRU(3, 4, seed=0)
    x = np.ones((1, 2, 3), np.float32)
    h0 = np.full((1, 2, 4), 0.25, np.float32)
    x0, h00 = x.copy(), h0.copy()
    out, h_n = m(x, h0)
    assert h_n is not h0 and not np.shares_memory(h_n, h0) and not np.shares_memory(out, x)
    assert not np.shares_memory(out, h_n)
    assert np.array_equal(x, x0) and np.array_equal(h0, h00)
    out2, h_n2 = m(x, h0)
    assert not np.shares_memory(out, out2) and not np.shares_memory(h_n, h_n2)
    c = cygru.GRUCell(3, 4, seed=0)
    h1 = c(x[0], h0[0])
    assert not np.shares_memory(h1, h0) and np.array_equal(h0, h00)


def test_module_changes_reach_the_lean_path():
    """batch_first assigned, double()/float(), new weights: the next call sees them."""
    rng = np.random.default_rng(1)
    m = cygru.GRU(3, 4, seed=0)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    tm = m(np.ascontiguousarray(x.transpose(1, 0, 2)))[0]
    m.batch_first = True
    assert np.array_equal(m(x)[0], tm.transpose(1, 0, 2))
    m.batch_first = False
    m.double()
    before = _counts()[0]
    out64 = m(x.astype(np.float64))[0]
    assert _counts()[0] == before + 1 and out64.dtype == np.float64
    out_conv = m(x)[0]  # float32 x on a float64 module: converted, same result
    assert out_conv.dtype == np.float64 and np.array_equal(out_conv, out64)
    m.float()
    m.weight_hh_l0 = np.zeros((12, 4), np.float32)
    ref = cygru.GRU(3, 4, seed=0)
    ref.weight_hh_l0 = np.zeros((12, 4), np.float32)
    assert np.array_equal(m(x)[0], ref(x)[0])


def test_a_parameter_reshaped_in_place_is_not_read_by_the_lean_path(checked_only):
    """The lean entry checks each weight's shape; one changed behind the module's back
    (ndarray.shape assigned) goes to the checked path, as it always did."""
    m = cygru.GRU(3, 4, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    w = m.weight_ih_l0
    w.shape = (6, 6)
    before = _counts()[0]
    lean = _outcome(lambda: m(x))
    assert _counts()[0] == before
    checked_only()
    assert lean == _outcome(lambda: m(x))


def test_concurrent_weight_changes_give_one_state_or_the_other():
    """While another thread swaps the weights (load_state_dict) and the dtype (double /
    float), every lean call runs with one consistent state: its result is exactly that
    of one of the states."""
    a = cygru.GRU(8, 16, num_layers=2, seed=1)
    b = cygru.GRU(8, 16, num_layers=2, seed=2)
    sa, sb = a.state_dict(), b.state_dict()
    x = np.random.default_rng(0).standard_normal((1, 2, 8)).astype(np.float32)
    refs = {}
    for name, sd in (("a", sa), ("b", sb)):
        for dt in (np.float32, np.float64):
            m = cygru.GRU(8, 16, num_layers=2, dtype=dt)
            m.load_state_dict(sd)
            refs[(name, np.dtype(dt))] = m(x)
    m = cygru.GRU(8, 16, num_layers=2, seed=1)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            m.load_state_dict(sb if i % 2 else sa)
            if i % 3 == 0:
                m.double()
            elif i % 3 == 1:
                m.float()
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(3000):
            out, h_n = m(x)
            ok = [
                k
                for k, (ro, rh) in refs.items()
                if out.dtype == k[1] and np.array_equal(out, ro) and np.array_equal(h_n, rh)
            ]
            assert ok, "a call ran with a mix of two states"
    finally:
        stop.set()
        t.join()


def test_concurrent_cell_weight_changes_give_one_state_or_the_other():
    a, b = cygru.GRUCell(8, 16, seed=1), cygru.GRUCell(8, 16, seed=2)
    sa, sb = a.state_dict(), b.state_dict()
    x = np.ones((2, 8), np.float32)
    refs = [a(x), b(x)]
    c = cygru.GRUCell(8, 16, seed=1)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            c.load_state_dict(sb if i % 2 else sa)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(3000):
            h1 = c(x)
            assert any(np.array_equal(h1, r) for r in refs)
    finally:
        stop.set()
        t.join()


# -- no work, no waking --------------------------------------------------------------------


def test_a_call_too_small_for_threads_plans_one(monkeypatch):
    """The thread count a call plans (a test hook, not timing): one-step and short
    batch-1 calls plan 1 thread even when 2 are set; a call with work for two threads
    plans two. The rule scales with MIN_WORK_PER_THREAD (tests that lower it still
    split tiny problems)."""
    cygru.set_num_threads(2)
    f32 = np.float32
    assert _cpu._threads_for_call(1, 1, 64, 128, 1, 1, f32) == 1  # one step, (1,1,64,128)
    assert _cpu._threads_for_call(1, 1, 64, 128, 2, 1, f32) == 1
    assert _cpu._threads_for_call(1, 4, 64, 128, 1, 1, f32) == 1
    assert _cpu._threads_for_call(100, 32, 256, 256, 1, 1, f32) == 2  # medium
    # the lean call records its plan, and whether it kept the GIL (KEEP_GIL_WORK)
    g = cygru.GRU(64, 128, seed=0)
    g(np.ones((1, 1, 64), f32), np.zeros((1, 1, 128), f32))
    assert _cpu._lean_stats()["threads"] == 1 and _cpu._lean_stats()["kept_gil"]
    g(np.ones((8, 1, 64), f32))  # 590k multiply-adds: alone, the GIL released
    assert _cpu._lean_stats()["threads"] == 1 and not _cpu._lean_stats()["kept_gil"]
    big = cygru.GRU(64, 256, seed=0)
    big(np.ones((64, 8, 64), f32))
    assert _cpu._lean_stats()["threads"] == 2 and not _cpu._lean_stats()["kept_gil"]
    # the checked path plans with the same rule
    seen = []
    real = _cpu._threads_for_call

    def spy(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(_cpu, "_threads_for_call", spy)
    g(np.ones((1, 1, 64), f32), lengths=[1])
    assert seen == [1]
    monkeypatch.setattr(_cpu, "MIN_WORK_PER_THREAD", 0)
    assert real(1, 1, 64, 128, 1, 1, f32) == 2


def test_small_calls_start_no_thread():
    """In a fresh process with 2 threads set, one-step GRU calls, short batch-1 calls and
    GRUCell steps start no OpenMP thread (no parallel region ran: the process has the
    threads it had after import); a call with work for two threads does start one."""
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc/self/task (Linux)")
    code = """
import os, numpy as np, cygru
cygru.set_num_threads(2)
g = cygru.GRU(64, 128, seed=0)
c = cygru.GRUCell(64, 128, seed=0)
g(np.ones((1, 1, 64), np.float32))  # warm up whatever starts lazily (a BLAS pool)
c(np.ones((1, 64), np.float32))
n0 = len(os.listdir("/proc/self/task"))
h = np.zeros((1, 1, 128), np.float32)
for _ in range(50):
    _, h = g(np.ones((1, 1, 64), np.float32), h)
    c(np.ones((1, 64), np.float32))
g(np.ones((4, 1, 64), np.float32), lengths=None)
n1 = len(os.listdir("/proc/self/task"))
cygru.GRU(64, 256, seed=0)(np.ones((64, 8, 64), np.float32))
n2 = len(os.listdir("/proc/self/task"))
print(n0, n1, n2)
"""
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    n0, n1, n2 = map(int, r.stdout.split())
    assert n1 == n0, f"small calls started {n1 - n0} thread(s)"
    assert n2 > n1, "the control (a big call on 2 threads) started no thread"


def test_bad_env_var_still_raises_at_a_small_call():
    code = "import numpy as np, cygru; cygru.GRU(2, 3)(np.ones((1, 1, 2), np.float32))"
    env = dict(os.environ, CYGRU_NUM_THREADS="many")
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0 and "CYGRU_NUM_THREADS" in r.stderr.strip().splitlines()[-1]


def test_env_var_read_after_a_change(monkeypatch):
    """get_num_threads reads CYGRU_NUM_THREADS through os.environ's own store: a value set
    or removed through os.environ is seen at once."""
    monkeypatch.setattr(_cpu, "_num_threads", 0)
    monkeypatch.setenv("CYGRU_NUM_THREADS", "3")
    assert cygru.get_num_threads() == 3
    monkeypatch.setattr(_cpu, "_num_threads", 0)
    monkeypatch.delenv("CYGRU_NUM_THREADS")
    assert cygru.get_num_threads() == _cpu._default_threads()


@pytest.mark.parametrize("case", _gru_inputs(), ids=lambda c: c[0])
def test_functional_gru_lean_and_checked_agree(case, checked_only):
    name, x, h0, kw = case
    if "hx" in kw:
        return  # functional.gru has no hx
    m = cygru.GRU(4, 3, num_layers=2, seed=3)
    params = m.state_dict()
    before = _counts()[0]
    lean = _outcome(lambda: F.gru(x, params, h0, num_layers=2, **kw))
    if name == "plain":
        assert _counts()[0] == before + 1
        assert lean == _outcome(lambda: m(x, h0))
    checked_only()
    assert lean == _outcome(lambda: F.gru(x, params, h0, num_layers=2, **kw)), name


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    L=st.integers(1, 3),
    bi=st.booleans(),
    rev=st.booleans(),
    bias=st.booleans(),
    bf=st.booleans(),
    ra=st.booleans(),
    f64=st.booleans(),
    T=st.integers(1, 4),
    B=st.integers(1, 3),
    I=st.integers(1, 5),
    H=st.integers(1, 6),
    with_h0=st.booleans(),
    unbatched=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lean_matches_checked_property(
    monkeypatch, L, bi, rev, bias, bf, ra, f64, T, B, I, H, with_h0, unbatched, seed
):
    """Random modules and common-case inputs: the lean call gives the checked path's bits."""
    rev = rev and not bi
    dt = np.float64 if f64 else np.float32
    m = cygru.GRU(
        I,
        H,
        L,
        bias=bias,
        batch_first=bf,
        bidirectional=bi,
        reverse=rev,
        reset_after=ra,
        dtype=dt,
        seed=seed,
    )
    D = 2 if bi else 1
    rng = np.random.default_rng(seed)
    shape = (T, I) if unbatched else ((B, T, I) if bf else (T, B, I))
    x = rng.standard_normal(shape).astype(dt)
    h0 = None
    if with_h0:
        h0 = rng.standard_normal((L * D, H) if unbatched else (L * D, B, H)).astype(dt)
    before = _counts()[0]
    lean = m(x, h0)
    assert _counts()[0] == before + 1
    with monkeypatch.context() as mp:
        mp.setattr(F, "lean_gru", lambda *a: None)
        checked = m(x, h0)
    assert _result_bits(lean) == _result_bits(checked)

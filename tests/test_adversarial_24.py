"""An adversarial pass over issue 24's additions (the lean entries, the small-batch dot
kernel, the C API's prepared weights, the worker pool).

* The lean entries (``_cpu.gru_lean`` / ``_cpu.cell_lean``) against the checked path, for
  hostile but valid-looking ndarrays: zero-size dimensions, negative strides, swapped
  byte order, subclasses (np.matrix, masked arrays, memmap), read-only and unaligned
  views, other dtypes, h0 of the wrong dtype or shape, batched/unbatched mixes, ``hx``
  with ``h0``, and arrays that end at (or start after) an unmapped page: the same bits
  or the same error, inputs unchanged, no crash.
* The dot kernel (batches of at most 4 rows): each row of a batch equals that row alone,
  with lengths too; ``_cpu._kernel_rows`` gives the rows of a larger batch's call; NaN
  and infinities land where they land at 5 rows; H not a multiple of 16, I = H = 1.
* The C API's prepared weights, called through ctypes on the capsules of
  ``cygru.capi.__pyx_capi__``: another dtype's buffer, a corrupted tag, a moved buffer,
  out-of-range lengths (nothing written), h_n on h0, an output on x, NULL pointers,
  two threads preparing one buffer.
* The worker pool under a signal handler that raises during threaded calls, per-thread
  and process-wide thread counts changing between calls, and too little memory for its
  threads (fresh interpreters under a timeout).
"""

import ctypes
import functools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import cygru
import cygru.capi as capi
from cygru import _cpu
from cygru import functional as F
from cygru._backend import param_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# np.matrix is one of the hostile inputs
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def _run_script(code, *args, timeout=240):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:  # pragma: no cover - the regression itself
        pytest.fail(f"hung: {e}")
    return r


# -- the lean entries against the checked path ---------------------------------------------


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # the same error type and message is what is compared
        return ("err", type(exc), str(exc))


def _same(a, b):
    if a[0] != b[0]:
        return False
    if a[0] == "err":
        return a[1:] == b[1:]
    va = a[1] if isinstance(a[1], tuple) else (a[1],)
    vb = b[1] if isinstance(b[1], tuple) else (b[1],)
    return all(
        type(p) is type(q)
        and p.shape == q.shape
        and p.dtype == q.dtype
        and np.array_equal(p, q, equal_nan=True)
        for p, q in zip(va, vb)
    )


def _lean_and_checked(monkeypatch, fn):
    """fn() with the lean entries, then with them declining (the checked path)."""
    lean = _outcome(fn)
    with monkeypatch.context() as m:
        m.setattr(F, "lean_gru", lambda *a: None)
        m.setattr(F, "lean_cell", lambda *a: None)
        checked = _outcome(fn)
    return lean, checked


def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    buf[1:] = np.ascontiguousarray(a).view(np.uint8).ravel()
    out = np.frombuffer(buf.tobytes(), a.dtype, count=a.size, offset=1).reshape(a.shape)
    assert not out.flags.aligned
    return out


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _gru_cases(tmp_path):
    rng = np.random.default_rng(0)
    g = cygru.GRU(3, 5, num_layers=2, bidirectional=True, seed=1)
    gb = cygru.GRU(3, 5, batch_first=True, seed=2)
    g64 = cygru.GRU(3, 5, seed=3).double()
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    h0 = rng.standard_normal((4, 2, 5)).astype(np.float32)
    mm = np.memmap(tmp_path / "x.dat", np.float32, "w+", shape=(4, 2, 3))
    mm[:] = x
    return {
        "plain": lambda: g(x, h0),
        "T=0": lambda: g(x[:0]),
        "B=0": lambda: g(x[:, :0], h0[:, :0]),
        "negative strides": lambda: g(x[::-1]),
        "byte-swapped": lambda: g(x.astype(">f4")),
        "byte-swapped h0": lambda: g(x, h0.astype(">f4")),
        "masked": lambda: g(np.ma.masked_array(x)),
        "matrix (unbatched)": lambda: g(np.asmatrix(x[:, 0])),
        "memmap": lambda: g(mm),
        "memmap unbatched": lambda: g(mm[:, 0]),
        "float16": lambda: g(x.astype(np.float16)),
        "int32": lambda: g(x.astype(np.int32)),
        "bool": lambda: g(np.zeros((4, 3), bool)),
        "complex": lambda: g(x.astype(np.complex64)),
        "object": lambda: g(x.astype(object)),
        "float64 on float32 module": lambda: g(x.astype(np.float64)),
        "float32 on float64 module": lambda: g64(x),
        "float64 module": lambda: g64(x.astype(np.float64)),
        "unaligned": lambda: g(_unaligned(x)),
        "unaligned h0": lambda: g(x, _unaligned(h0)),
        "read-only": lambda: g(_readonly(x), _readonly(h0)),
        "zero strides": lambda: g(np.broadcast_to(np.float32(1), (4, 2, 3))),
        "h0 float64": lambda: g(x, h0.astype(np.float64)),
        "h0 wrong batch": lambda: g(x, h0[:, :1]),
        "h0 unbatched, x batched": lambda: g(x, h0[:, 0]),
        "h0 batched, x unbatched": lambda: g(x[:, 0], h0[:, :1]),
        "h0 0-d": lambda: g(x, np.float32(0)),
        "h0 masked": lambda: g(x, np.ma.masked_array(h0, mask=True)),
        "hx and h0": lambda: g(x, h0, hx=h0),
        "hx": lambda: g(x, hx=h0),
        "x 4-d": lambda: g(x[None]),
        "x 1-d": lambda: g(x[0, 0]),
        "x wrong features": lambda: g(np.ones((4, 2, 4), np.float32)),
        "NaN": lambda: g(np.full_like(x, np.nan)),
        "inf": lambda: g(np.full_like(x, np.inf), h0),
        "batch_first": lambda: gb(x),
        "batch_first unbatched": lambda: gb(x[:, 0]),
        "batch_first T=1": lambda: gb(x[:1]),
        "batch_first B=1": lambda: gb(x[:, :1]),
    }


def _cell_cases():
    rng = np.random.default_rng(1)
    c = cygru.GRUCell(3, 5, seed=4)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    h = rng.standard_normal((2, 5)).astype(np.float32)
    w = (c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
    return {
        "cell": lambda: c(x, h),
        "cell B=0": lambda: c(x[:0]),
        "cell negative strides": lambda: c(x[::-1]),
        "cell byte-swapped": lambda: c(x.astype(">f4")),
        "cell matrix": lambda: c(np.asmatrix(x)),
        "cell matrix h": lambda: c(x, np.asmatrix(h)),
        "cell masked": lambda: c(np.ma.masked_array(x, mask=np.zeros_like(x, bool))),
        "cell unaligned": lambda: c(_unaligned(x), _unaligned(h)),
        "cell read-only": lambda: c(_readonly(x), _readonly(h)),
        "cell float16": lambda: c(x.astype(np.float16)),
        "cell int64": lambda: c(np.ones((2, 3), np.int64)),
        "cell float64 on float32 module": lambda: c(x.astype(np.float64), h.astype(np.float64)),
        "cell zero strides": lambda: c(np.broadcast_to(np.float32(1), (2, 3))),
        "cell h float64": lambda: c(x, h.astype(np.float64)),
        "cell h wrong batch": lambda: c(x, h[:1]),
        "cell h 1-d, x 2-d": lambda: c(x[:1], h[0]),
        "cell h 2-d, x 1-d": lambda: c(x[0], h[:1]),
        "cell hx and h": lambda: c(x, h, hx=h),
        "cell x 3-d": lambda: c(x[None]),
        "cell x 0-d": lambda: c(np.float32(1)),
        "cell NaN": lambda: c(np.full_like(x, np.nan)),
        "gru_cell one bias": lambda: F.gru_cell(x, None, w[0], w[1], w[2], None),
        "gru_cell other bias": lambda: F.gru_cell(x, None, w[0], w[1], None, w[3]),
        "gru_cell w_hh float16": lambda: F.gru_cell(x, None, w[0], w[1].astype(np.float16)),
        "gru_cell w_ih float64": lambda: F.gru_cell(x, None, w[0].astype(np.float64), w[1]),
        "gru_cell w_hh byte-swapped": lambda: F.gru_cell(x, None, w[0], w[1].astype(">f4")),
        "gru_cell w_hh matrix": lambda: F.gru_cell(x, None, w[0], np.asmatrix(w[1])),
        "gru_cell H=0": lambda: F.gru_cell(
            x, None, np.zeros((0, 3), np.float32), np.zeros((0, 0), np.float32)
        ),
        "gru_cell I=0": lambda: F.gru_cell(
            np.ones((2, 0), np.float32), None, np.zeros((15, 0), np.float32), w[1]
        ),
        "gru_cell I=0 unbatched": lambda: F.gru_cell(
            np.ones((0,), np.float32), None, np.zeros((15, 0), np.float32), w[1]
        ),
    }


def test_lean_entries_give_the_checked_paths_result_or_error(monkeypatch, tmp_path):
    cases = {**_gru_cases(tmp_path), **_cell_cases()}
    before = _cpu._lean_stats()
    for name, fn in cases.items():
        lean, checked = _lean_and_checked(monkeypatch, fn)
        assert _same(lean, checked), (name, lean, checked)
    after = _cpu._lean_stats()
    # the common cases among them did take the lean entries
    assert after["gru"] > before["gru"] and after["cell"] > before["cell"]


@pytest.mark.parametrize("I, H", [(0, 4), (3, 0), (0, 0), (1, 1)])
@pytest.mark.parametrize("L, D", [(1, 1), (2, 2)])
def test_functional_gru_zero_sizes_lean_equals_checked(monkeypatch, I, H, L, D):
    """functional.gru takes I and H from the weights, so 0 reaches the lean entry."""
    for bias in (True, False):
        p = {
            k: np.random.default_rng(0).standard_normal(s).astype(np.float32)
            for k, s in param_shapes(I, H, L, D, bias)
        }
        kw = dict(num_layers=L, bidirectional=D == 2)
        h0 = np.ones((L * D, 2, H), np.float32)
        for x, h in (
            (np.ones((3, 2, I), np.float32), None),
            (np.ones((3, I), np.float32), None),
        ):
            fn = functools.partial(F.gru, x, p, h, **kw)
            lean, checked = _lean_and_checked(monkeypatch, fn)
            assert _same(lean, checked), (I, H, L, D, bias, lean, checked)
        fn = functools.partial(F.gru, np.ones((2, 3, I), np.float32), p, h0, batch_first=True, **kw)
        lean, checked = _lean_and_checked(monkeypatch, fn)
        assert _same(lean, checked), (I, H, L, D, bias, lean, checked)


def test_lean_entries_never_write_their_inputs():
    g = cygru.GRU(3, 5, num_layers=2, seed=0)
    c = cygru.GRUCell(3, 5, seed=0)
    x, h0, h = np.ones((4, 2, 3), np.float32), np.ones((2, 2, 5), np.float32), np.ones((2, 5))
    h = h.astype(np.float32)
    before = [a.copy() for a in (x, h0, h)]
    weights = {k: v.copy() for k, v in g.state_dict().items()}
    g(x, h0)
    c(x[0], h)
    assert all(np.array_equal(a, b) for a, b in zip((x, h0, h), before))
    assert all(np.array_equal(v, g.state_dict()[k]) for k, v in weights.items())


_GUARD_PAGES = r"""
import ctypes, mmap, sys
import numpy as np
import cygru.functional as F
from cygru._backend import param_shapes

libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE
keep = []


def beside_a_guard(a, before):
    # a copy of `a` that ends where an unmapped page starts (or starts where one ends)
    n = a.nbytes
    pages = (n + PAGE - 1) // PAGE + 2
    m = mmap.mmap(-1, pages * PAGE)
    keep.append(m)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    if before:
        assert libc.mprotect(base, PAGE, 0) == 0
        off = PAGE
    else:
        assert libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) == 0
        off = (pages - 1) * PAGE - n
    out = np.frombuffer(m, dtype=a.dtype, count=a.size, offset=off).reshape(a.shape)
    out[...] = a
    return out


before = sys.argv[1] == "before"
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    for I, H, B, L, D in [(1, 1, 1, 1, 1), (3, 5, 2, 2, 2), (7, 17, 4, 1, 1), (1, 33, 3, 2, 1),
                          (5, 1, 5, 1, 2), (16, 16, 1, 1, 1), (17, 15, 2, 2, 1)]:
        p = {k: rng.standard_normal(s).astype(dt) for k, s in param_shapes(I, H, L, D, True)}
        x = rng.standard_normal((3, B, I)).astype(dt)
        h0 = rng.standard_normal((L * D, B, H)).astype(dt)
        kw = dict(num_layers=L, bidirectional=D == 2)
        want = F.gru(x, p, h0, **kw)
        pg = {k: beside_a_guard(v, before) for k, v in p.items()}
        got = F.gru(beside_a_guard(x, before), pg, beside_a_guard(h0, before), **kw)
        assert all(np.array_equal(a, b) for a, b in zip(want, got)), (I, H, B, L, D)
        w = [p[k + "_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        wg = [pg[k + "_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        want = F.gru_cell(x[0], h0[0], *w)
        got = F.gru_cell(beside_a_guard(x[0], before), beside_a_guard(h0[0], before), *wg)
        assert np.array_equal(want, got)
        F.gru_cell(beside_a_guard(x[0, 0], before), None, wg[0], wg[1])
print("OK")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through libc (Linux)")
@pytest.mark.parametrize("side", ["after", "before"])
def test_kernels_read_no_byte_outside_the_arrays(side):
    """Weights, x and h0 placed against an unmapped page (the dot kernel's 16-lane loads
    with H and I not multiples of 16, the packed kernel at 5 rows): the same bits, no
    fault."""
    r = _run_script(_GUARD_PAGES, side)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr[-3000:]


def test_module_dtype_switched_while_other_threads_call():
    """.double() / .float() / .to("cpu") in one thread while three others call the GRU and
    the GRUCell: every result is one dtype's, bit for bit, never a mix."""
    g = cygru.GRU(8, 24, num_layers=2, seed=0)
    c = cygru.GRUCell(8, 24, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 2, 8)).astype(np.float32)
    w32, c32 = g(x), c(x[0])
    g.double()
    c.double()
    w64, c64 = g(x), c(x[0])
    g.float()
    c.float()
    bad, stop = [], threading.Event()

    def loop():
        while not stop.is_set():
            o, h = g(x)
            oc = c(x[0])
            if not any(
                o.dtype == w[0].dtype and np.array_equal(o, w[0]) and np.array_equal(h, w[1])
                for w in (w32, w64)
            ) or not any(oc.dtype == w.dtype and np.array_equal(oc, w) for w in (c32, c64)):
                bad.append((o.dtype, oc.dtype))

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(600):
            if i % 2:
                g.float()
                c.float()
            else:
                g.double()
                c.double()
            if i % 3 == 0:
                g.to("cpu")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad, bad[:3]


# -- the dot kernel (batches of at most 4 rows) --------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "I, H, L, bidirectional, reverse, reset_after",
    [
        (1, 1, 1, False, False, True),
        (7, 17, 2, True, False, False),
        (1, 33, 1, False, True, True),
        (7, 1, 2, False, True, False),
        (7, 33, 2, True, False, True),
    ],
)
def test_dot_kernel_rows_are_independent(dtype, I, H, L, bidirectional, reverse, reset_after):
    g = cygru.GRU(
        I,
        H,
        num_layers=L,
        bidirectional=bidirectional,
        reverse=reverse,
        reset_after=reset_after,
        seed=5,
        dtype=dtype,
    )
    rng = np.random.default_rng(2)
    T = 4
    x5 = rng.standard_normal((T, 5, I)).astype(dtype)
    h5 = rng.standard_normal((L * g.num_directions, 5, H)).astype(dtype)
    out5, hn5 = g(x5, h5)
    for B in (1, 2, 3, 4):
        x, h = x5[:, :B].copy(), h5[:, :B].copy()
        out, hn = g(x, h)
        lens = np.array([T, 1, 3, 2][:B])
        out_l, hn_l = g(x, h, lengths=lens)
        for b in range(B):
            o1, h1 = g(x[:, b : b + 1].copy(), h[:, b : b + 1].copy())
            assert np.array_equal(out[:, b : b + 1], o1) and np.array_equal(hn[:, b : b + 1], h1)
            o1, h1 = g(x[: lens[b], b : b + 1].copy(), h[:, b : b + 1].copy())
            assert np.array_equal(out_l[: lens[b], b : b + 1], o1)
            assert np.array_equal(hn_l[:, b : b + 1], h1)
            assert not out_l[lens[b] :, b].any()
        # the kernel of a 5-row call: the rows of that call
        with _cpu._kernel_rows(5):
            out_k, hn_k = g(x, h)
        assert np.array_equal(out_k, out5[:, :B]) and np.array_equal(hn_k, hn5[:, :B])
    # NaN and infinities go where they go at 5 rows (x, h0 and a weight)
    for val in (np.nan, np.inf, -np.inf):
        xn, hn_ = x5.copy(), h5.copy()
        xn[1, 0, 0] = val
        hn_[0, 1, 0] = val
        o5 = g(xn, hn_)[0]
        o2 = g(xn[:, :2].copy(), hn_[:, :2].copy())[0]
        assert np.array_equal(np.isnan(o5[:, :2]), np.isnan(o2))
        assert np.array_equal(np.isinf(o5[:, :2]), np.isinf(o2))
    for val in (np.nan, np.inf):
        g.weight_hh_l0[0, 0] = val
        o5 = g(x5, h5)[0]
        o2 = g(x5[:, :2].copy(), h5[:, :2].copy())[0]
        assert np.array_equal(np.isnan(o5[:, :2]), np.isnan(o2))
        assert np.array_equal(np.isinf(o5[:, :2]), np.isinf(o2))


# -- the C API's prepared weights through ctypes -------------------------------------------

_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype = ctypes.c_char_p
_get_name.argtypes = [ctypes.py_object]
_P, _I, _Z = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t


def _c_function(name, restype, *argtypes):
    cap = capi.__pyx_capi__[name]
    return ctypes.CFUNCTYPE(restype, *argtypes)(_get_pointer(cap, _get_name(cap)))


class _Dir(ctypes.Structure):
    _fields_ = [("w_ih", _P), ("w_hh", _P), ("b_ih", _P), ("b_hh", _P)]


class _Model(ctypes.Structure):
    _fields_ = [
        ("input_size", _I),
        ("hidden_size", _I),
        ("num_layers", _I),
        ("num_directions", _I),
        ("reset_after", _I),
        ("reverse", _I),
        ("dirs", ctypes.POINTER(_Dir)),
    ]


def _api(s):
    return {
        "prepared_size": _c_function("model_prepared_size_" + s, _Z, _P),
        "prepare": _c_function("model_prepare_" + s, _I, _P, _P, _Z),
        "prepared_work": _c_function(
            "model_prepared_workspace_size_" + s, _Z, _I, _I, _I, _I, _I, _I
        ),
        "work": _c_function("model_workspace_size_" + s, _Z, _I, _I, _I, _I, _I, _I),
        "forward_prepared": _c_function(
            "model_forward_prepared_" + s, _I, _P, _P, _I, _I, _P, _P, _P, _P, _P, _P, _Z
        ),
        "forward": _c_function("model_forward_" + s, _I, _P, _I, _I, _P, _P, _P, _P, _P, _P, _Z),
    }


def _ptr(a):
    return None if a is None else a.ctypes.data


def _aligned(nbytes):
    raw = np.zeros(nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off : off + nbytes]


class _CModel:
    """A cygru_model_* over a cygru.GRU's own parameter arrays."""

    def __init__(self, gru):
        self.gru = gru
        self.api = _api("f32" if gru.dtype == np.float32 else "f64")
        L, D = gru.num_layers, gru.num_directions
        self.dirs = (_Dir * (L * D))()
        for k in range(L):
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if gru.bias else ())
                ws = [getattr(gru, n + sfx) for n in names] + [None] * (4 - len(names))
                self.dirs[k * D + d] = _Dir(*[_ptr(w) for w in ws])
        self.model = _Model(
            gru.input_size, gru.hidden_size, L, D, int(gru.reset_after), int(gru.reverse), self.dirs
        )

    def prepare(self, buf=None):
        n = self.api["prepared_size"](ctypes.byref(self.model))
        buf = _aligned(n) if buf is None else buf
        return self.api["prepare"](ctypes.byref(self.model), _ptr(buf), n), buf

    def forward(self, x, h0=None, lengths=None, prepared=None, out=None, h_n=None, work=None):
        g = self.gru
        T, B = x.shape[:2]
        L, D, H = g.num_layers, g.num_directions, g.hidden_size
        out = np.full((T, B, D * H), -7, g.dtype) if out is None else out
        h_n = np.full((L * D, B, H), -7, g.dtype) if h_n is None else h_n
        if prepared is None:
            if work is None:
                work = _aligned(max(1, self.api["work"](T, B, g.input_size, H, L, D)))
            status = self.api["forward"](
                ctypes.byref(self.model), T, B, _ptr(x), _ptr(h0), _ptr(lengths),
                _ptr(out), _ptr(h_n), _ptr(work), work.nbytes,
            )  # fmt: skip
        else:
            if work is None:
                work = _aligned(max(1, self.api["prepared_work"](T, B, g.input_size, H, L, D)))
            status = self.api["forward_prepared"](
                ctypes.byref(self.model), _ptr(prepared), T, B, _ptr(x), _ptr(h0),
                _ptr(lengths), _ptr(out), _ptr(h_n), _ptr(work), work.nbytes,
            )  # fmt: skip
        return status, out, h_n


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "L, D, reverse, bias", [(2, 1, False, True), (3, 2, False, False), (1, 1, True, True)]
)
def test_prepared_calls_hostile_arguments(dtype, L, D, reverse, bias):
    g = cygru.GRU(
        5, 17, num_layers=L, bidirectional=D == 2, reverse=reverse, bias=bias, seed=3, dtype=dtype
    )
    m = _CModel(g)
    status, buf = m.prepare()
    assert status == 0
    rng = np.random.default_rng(1)
    for T, B in [(1, 1), (3, 4), (3, 5), (2, 0)]:
        x = rng.standard_normal((T, B, 5)).astype(dtype)
        h0 = rng.standard_normal((L * D, B, 17)).astype(dtype)
        sp, out_p, hn_p = m.forward(x, h0, prepared=buf)
        s, out, hn = m.forward(x, h0)
        assert sp == s == 0 and np.array_equal(out_p, out) and np.array_equal(hn_p, hn)
        if B:
            want = g(x, h0)
            assert np.array_equal(want[0], out_p) and np.array_equal(want[1], hn_p)
        # h_n written over h0
        h0c = h0.copy()
        assert m.forward(x, h0c, prepared=buf, h_n=h0c)[0] == 0
        assert np.array_equal(h0c, hn_p)
        if not B:
            continue
        lengths = np.full(B, T, np.int32)
        lengths[0] = max(1, T - 1)
        sp, out_p, hn_p = m.forward(x, h0, lengths, prepared=buf)
        s, out, hn = m.forward(x, h0, lengths)
        assert sp == s == 0 and np.array_equal(out_p, out) and np.array_equal(hn_p, hn)
        for bad in (0, -1, T + 1, 2**31 - 1):
            lb = lengths.copy()
            lb[-1] = bad
            sp, out_p, hn_p = m.forward(x, h0, lb, prepared=buf)
            s = m.forward(x, h0, lb)[0]
            assert sp == s != 0
            assert (out_p == -7).all() and (hn_p == -7).all()  # nothing written


def test_prepared_buffer_checks():
    g32 = cygru.GRU(5, 17, seed=3)
    g64 = cygru.GRU(5, 17, seed=3, dtype=np.float64)
    m32, m64 = _CModel(g32), _CModel(g64)
    assert m32.prepare()[0] == 0
    _, buf32 = m32.prepare()
    x32, x64 = np.ones((1, 1, 5), np.float32), np.ones((1, 1, 5))
    not_prepared = m32.forward(x32, prepared=_aligned(buf32.nbytes))[0]
    assert not_prepared != 0
    # a float32 buffer for the float64 model: refused the same way
    assert m64.forward(x64, prepared=buf32)[0] == not_prepared
    # any byte of the tag changed: refused; a verbatim copy elsewhere: accepted
    for i in (0, 8, 16, 24, 32, 40, 48):
        bad = _aligned(buf32.nbytes)
        bad[:] = buf32
        bad[i] ^= 1
        assert m32.forward(x32, prepared=bad)[0] == not_prepared, i
    moved = _aligned(buf32.nbytes)
    moved[:] = buf32
    s, out, hn = m32.forward(x32, prepared=moved)
    assert s == 0 and np.array_equal(out, g32(x32)[0])
    # an output on x is refused, writing nothing
    xo = np.zeros((1, 1, 17), np.float32)
    xo[..., :5] = 1
    assert m32.forward(xo[..., :5], prepared=buf32, out=xo)[0] != 0
    assert (xo[..., :5] == 1).all() and not xo[..., 5:].any()
    # NULL models, no table
    api = m32.api
    assert api["prepared_size"](None) == 0
    assert api["prepare"](None, _ptr(buf32), buf32.nbytes) != 0
    no_table = _Model(5, 17, 1, 1, 1, 0, None)
    assert api["prepare"](ctypes.byref(no_table), _ptr(buf32), buf32.nbytes) != 0
    work = _aligned(1 << 16)
    out, hn = np.zeros((1, 1, 17), np.float32), np.zeros((1, 1, 17), np.float32)
    assert api["forward_prepared"](
        None, _ptr(buf32), 1, 1, _ptr(x32), None, None, _ptr(out), _ptr(hn), _ptr(work), 1 << 16
    ) != 0  # fmt: skip
    # sizes that do not fit: 0, never a wrapped small size
    for H, In, L in [(2**30, 5, 1), (2**29, 1, 2**30), (50000, 50000, 2**20)]:
        huge = _Model(In, H, L, 1, 1, 0, m32.dirs)
        n = api["prepared_size"](ctypes.byref(huge))
        assert n == 0 or n >= 4 * 3 * H * (In + H) * L
    for T, B in [(0, 1), (-1, 1), (1, -1)]:
        assert api["prepared_work"](T, B, 5, 17, 1, 1) == 0


def test_two_threads_preparing_one_buffer():
    """Preparing one buffer from four threads at once: each call prepares it or finds it
    busy, and the buffer ends prepared."""
    g = cygru.GRU(128, 256, num_layers=2, seed=0)
    m = _CModel(g)
    _, buf = m.prepare()
    statuses = []

    def prepare():
        for _ in range(20):
            statuses.append(m.prepare(buf)[0])

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {0, capi.ERR_WORKSPACE_BUSY} and 0 in statuses
    x = np.random.default_rng(0).standard_normal((2, 1, 128)).astype(np.float32)
    s, out, _ = m.forward(x, prepared=buf)
    assert s == 0 and np.array_equal(out, g(x)[0])


# -- the worker pool ------------------------------------------------------------------------

_POOL_SIGNALS = r"""
import signal, sys, threading, time
import numpy as np
import cygru
from cygru import _cpu, _engine

_cpu.MIN_WORK_PER_THREAD = 0          # split even tiny problems over threads
_cpu.WAKE_COST = 0
rng = np.random.default_rng(1)
cases = []
for bid, ra, T, B, H in [(False, True, 1, 1, 16), (True, True, 5, 2, 33),
                         (True, False, 3, 4, 64), (False, False, 2, 6, 17), (False, True, 1, 1, 1)]:
    g = cygru.GRU(8, H, bidirectional=bid, reset_after=ra, num_layers=2, seed=T)
    cases.append((g, rng.standard_normal((T, B, 8)).astype(np.float32)))
cell = cygru.GRUCell(8, 40, seed=3)
xc = rng.standard_normal((3, 8)).astype(np.float32)
cygru.set_num_threads(1)
want = [g(x) for g, x in cases]
want_cell = cell(xc)
bad = []
stop = threading.Event()


def same(i, o, h):
    return np.array_equal(o, want[i][0]) and np.array_equal(h, want[i][1])


def loop(seed):
    # another Python thread: its own count (as cygru.dask's tasks), changed between calls
    r = np.random.default_rng(seed)
    while not stop.is_set():
        with _cpu._thread_count(int(r.integers(1, 9))):
            for _ in range(5):
                i = int(r.integers(len(cases)))
                if not same(i, *cases[i][0](cases[i][1])):
                    bad.append(("thread", i))
                if not np.array_equal(cell(xc), want_cell):
                    bad.append("cell")


class Boom(Exception):
    pass


armed = [False]
hits = [0]


def handler(sig, frame):
    hits[0] += 1
    if armed[0]:
        armed[0] = False
        raise Boom()


threads = [threading.Thread(target=loop, args=(s,)) for s in range(3)]
for t in threads:
    t.start()
signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
r = np.random.default_rng(7)
t0 = time.time()
while time.time() - t0 < float(sys.argv[1]):
    try:
        armed[0] = True
        cygru.set_num_threads(int(r.integers(1, 9)))   # process-wide, between calls
        i = int(r.integers(len(cases)))
        o, h = cases[i][0](cases[i][1])
        armed[0] = False
        if not same(i, o, h):
            bad.append(("main", i))
    except Boom:
        pass
signal.setitimer(signal.ITIMER_REAL, 0, 0)
stop.set()
for t in threads:
    t.join()
cygru.set_num_threads(None)
for i, (g, x) in enumerate(cases):
    if not same(i, *g(x)):
        bad.append(("after", i))
assert hits[0] > 0 and _cpu._active_calls == 0, (hits, _cpu._active_calls)
print("BAD" if bad else "OK", bad[:5])
"""


def test_pool_under_raising_signal_handler_and_changing_thread_counts():
    """Threaded calls while a signal handler raises in the main thread every 0.5 ms
    (interrupting calls anywhere in their Python parts), the process-wide count changing
    between calls and three other threads with their own counts: every completed call
    has the one-thread bits, nothing hangs, the running-call count returns to 0."""
    r = _run_script(_POOL_SIGNALS, "4")
    assert r.returncode == 0 and r.stdout.strip().startswith("OK"), r.stdout + r.stderr[-3000:]


_POOL_NO_MEMORY = r"""
import resource
import numpy as np
import cygru
from cygru import _cpu, _engine

_cpu.MIN_WORK_PER_THREAD = 0
_cpu.WAKE_COST = 0
g = cygru.GRU(8, 64, bidirectional=True, num_layers=2, seed=0)
x = np.random.default_rng(0).standard_normal((6, 3, 8)).astype(np.float32)
cygru.set_num_threads(1)
want = g(x)
vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
# room for a couple of thread stacks, not for seven
resource.setrlimit(resource.RLIMIT_AS, (vm + (24 << 20), resource.RLIM_INFINITY))
cygru.set_num_threads(8)
ok = all(
    all(np.array_equal(a, b) for a, b in zip(g(x), want)) for _ in range(100)
)
print("OK" if ok and _engine.pool_workers() < 7 else "BAD", _engine.pool_workers())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/statm (Linux)")
def test_pool_with_fewer_workers_than_asked():
    """pthread_create fails (no address space for more stacks): the calls finish on the
    threads there are, with the same bits."""
    r = _run_script(_POOL_NO_MEMORY)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr[-3000:]


_FORK_CLAIMS = r"""
import os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import cygru
import test_adversarial_24 as t

g = cygru.GRU(64, 256, num_layers=2, seed=0)
m = t._CModel(g)
status, buf = m.prepare()
assert status == 0
x = np.random.default_rng(0).standard_normal((20, 3, 64)).astype(np.float32)
want = g(x)[0]
work = t._aligned(m.api["prepared_work"](20, 3, 64, 256, 2, 1))
stop, statuses = threading.Event(), []


def busy():
    # a parent thread keeps `work` claimed most of the time
    while not stop.is_set():
        statuses.append(m.forward(x, prepared=buf, work=work)[0])


thread = threading.Thread(target=busy)
thread.start()
time.sleep(0.05)
bad = []
for _ in range(12):
    pid = os.fork()
    if pid == 0:
        s, out, _ = m.forward(x, prepared=buf, work=work)
        s2, _ = m.prepare(t._aligned(buf.nbytes))
        os._exit(0 if s == 0 and s2 == 0 and np.array_equal(out, want) else 10 + s)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code:
        bad.append(code)
stop.set()
thread.join()
print("OK" if not bad and set(statuses) == {0} else "BAD", bad, set(statuses))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_fork_child_uses_a_workspace_a_parent_thread_had_claimed():
    """A child forked while another parent thread's C API call holds a workspace: the
    child's calls on the same workspace and its prepare run (the parent's claims do not
    exist there), with the parent's bits."""
    r = _run_script(_FORK_CLAIMS, os.path.join(ROOT, "tests"))
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stdout + r.stderr[-3000:]

"""Reliability tests: properties of the public API over random inputs, and the things a
compiled library must never do (crash, leak, race, overflow, give different answers for
the same input, or accept garbage silently).

* Hypothesis property tests over cygru.GRU / cygru.GRUCell / vjp / backward / lengths /
  load_state_dict: every call either matches the plain-NumPy oracle (cygru._reference)
  with the right shapes and dtype, or raises ValueError/TypeError with a message naming
  the offending argument. Never a crash, a wrong shape, or a write to a caller's array.
* BLAS-int overflow and impossible allocations (zero-strided views and sparse memory
  maps: nothing huge is ever really allocated here).
* NaN/inf propagation compared with torch.nn.GRU; empty batches like torch.
* Leaks (resident memory over 10,000 forward and 1,000 vjp+backward calls),
  determinism under threadpoolctl (1 and 2 BLAS threads), thread safety (8 threads).
* load_state_dict / pickle / deepcopy round trips.

Hypothesis profiles: ``ci`` (the default; 8,800 examples over eight property tests, the
file in about 1.5 minutes on 2 vCPUs) and ``long`` (50,000 examples per property test),
selected with ``CYGRU_HYPOTHESIS_PROFILE=long python -m pytest -q tests/test_reliability.py``.
See docs/reliability.rst.

Tests named ``test_regression_*`` reproduce library bugs found by this file, all fixed
since (crashes run in a subprocess, so that a regression cannot take pytest down).
"""

import copy
import gc
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

from optional_deps import import_optional
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import cygru
from cygru import _reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INT_MAX = 2**31 - 1
GATES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

# ---------------------------------------------------------------------------------------------
# hypothesis profiles
# ---------------------------------------------------------------------------------------------

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile("ci", max_examples=100, **_COMMON)
settings.register_profile("long", max_examples=50_000, **_COMMON)
settings.register_profile("smoke", max_examples=20, **_COMMON)  # under valgrind
PROFILE = os.environ.get("CYGRU_HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long", "smoke"):
    raise ValueError(f"CYGRU_HYPOTHESIS_PROFILE must be 'ci', 'long' or 'smoke', got {PROFILE!r}")


def profile(ci_examples):
    """Per-test settings: `ci_examples` under the ci profile, the long profile's count
    (50,000) under CYGRU_HYPOTHESIS_PROFILE=long, a twentieth of `ci_examples` under
    "smoke" (tools/sanitize.sh valgrind). Applied per test, so loading this file does not
    change the hypothesis defaults of other test files."""
    parent = settings.get_profile(PROFILE)
    n = {
        "ci": ci_examples,
        "long": parent.max_examples,
        "smoke": max(parent.max_examples, ci_examples // 20),
    }[PROFILE]
    return settings(parent, max_examples=n)


# ---------------------------------------------------------------------------------------------
# array factories: every dtype and memory order a caller may hand in
# ---------------------------------------------------------------------------------------------

GOOD_DTYPES = ("float32", "float64", "float16", "int8", "int32", "int64", "uint8", "bool")
BAD_DTYPES = ("complex64", "complex128", "object", "str")
LAYOUTS = ("C", "F", "strided", "negative")


def values(rng, shape, dtype):
    """Random values of `dtype` (small integers for integer kinds, N(0,1) for floats)."""
    dt = np.dtype(dtype) if dtype != "str" else np.dtype("U8")
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind == "u":
        return rng.integers(0, 4, shape).astype(dt)
    if dt.kind == "i":
        return rng.integers(-3, 4, shape).astype(dt)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind == "O":
        return rng.standard_normal(shape).astype(object)  # Python floats
    return rng.standard_normal(shape).astype(str)  # strings of numbers


def lay_out(a, layout):
    """The same values as `a` in another memory order (a view where that is the point)."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":  # every other element of a bigger, garbage-filled buffer
        big = np.empty(tuple(2 * s + 1 for s in a.shape), a.dtype)
        if a.dtype.kind in "fc":
            big[...] = np.nan
        view = big[tuple(slice(1, 2 * s + 1, 2) for s in a.shape)]
        view[...] = a
        assert not view.flags.c_contiguous or a.size <= 1
        return view
    # negative strides in every dimension
    flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
    return flipped[tuple(slice(None, None, -1) for _ in a.shape)]


def snapshot(a):
    """A copy to check later that the caller's array was not written."""
    return None if a is None else np.array(a, copy=True)


def same(a, b):
    """Bitwise equality of two arrays (NaN == NaN), dtype and shape included."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return a.tobytes() == b.tobytes()
    return bool(np.array_equal(a, b))


def unchanged(original, saved):
    return original is None or same(original, saved)


TOL = {
    np.dtype(np.float32): dict(rtol=2e-4, atol=2e-5),
    np.dtype(np.float64): dict(rtol=1e-9, atol=1e-10),
}
GRAD_TOL = {
    np.dtype(np.float32): dict(rtol=1e-3, atol=2e-4),
    np.dtype(np.float64): dict(rtol=1e-8, atol=1e-9),
}


def close(got, want, tol, what):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, err_msg=what, **tol)


def ref_layers(m):
    """The module's weights in the reference's nested [layer][direction] form, float64."""
    sd = m.state_dict()
    layers = []
    for k in range(m.num_layers):
        per_dir = []
        for d in range(m.num_directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            per_dir.append(
                tuple(sd[n + sfx].astype(np.float64) if n + sfx in sd else None for n in GATES)
            )
        layers.append(per_dir)
    return layers


def check_error(excinfo, word):
    msg = str(excinfo.value)
    assert msg.strip(), f"{excinfo.type.__name__} with an empty message"
    assert word in msg, f"the message does not name {word!r}: {msg}"


# ---------------------------------------------------------------------------------------------
# 1. GRU forward and vjp/backward against the reference
# ---------------------------------------------------------------------------------------------

# one fault per example (or none); (exception, word the message must contain)
GRU_FAULTS = {
    "x_dtype": (TypeError, "x"),
    "x_ndim": (ValueError, "x"),
    "x_features": (ValueError, "features"),
    "x_T0": (ValueError, "sequence length"),
    "h0_shape": (ValueError, "h0"),
    "h0_dtype": (TypeError, "h0"),
    "lengths_shape": (ValueError, "lengths"),
    "lengths_float": (TypeError, "lengths"),
    "lengths_zero": (ValueError, "length"),
    "lengths_negative": (ValueError, "length"),
    "lengths_too_long": (ValueError, "length"),
    "lengths_unbatched": (ValueError, "lengths"),
}
BACKWARD_FAULTS = {
    "d_output_shape": (ValueError, "d_output"),
    "d_output_dtype": (TypeError, "d_output"),
    "d_h_n_shape": (ValueError, "d_h_n"),
    "d_h_n_dtype": (TypeError, "d_h_n"),
}


@st.composite
def gru_cases(draw, vjp=False):
    medium = draw(st.integers(0, 9)) == 0  # sometimes big enough for SIMD tails
    c = dict(
        I=draw(st.integers(1, 9 if medium else 4)),
        H=draw(st.integers(1, 21 if medium else 5)),
        L=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        reset_after=draw(st.booleans()),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        T=draw(st.integers(1, 3 if medium else 5)),
        B=draw(st.integers(0, 12 if medium else 4)),
        unbatched=draw(st.integers(0, 4)) == 0,
        x_dtype=draw(st.sampled_from(GOOD_DTYPES)),
        x_layout=draw(st.sampled_from(LAYOUTS)),
        h0=draw(st.sampled_from(["none", "given"])),
        h0_dtype=draw(st.sampled_from(GOOD_DTYPES)),
        h0_layout=draw(st.sampled_from(LAYOUTS)),
        lengths=draw(st.sampled_from(["none", "array", "list"])),
        lengths_dtype=draw(st.sampled_from(["int8", "int32", "int64", "uint16"])),
        fault=draw(st.sampled_from(["none"] * 12 + sorted(GRU_FAULTS))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    # reverse=True with bidirectional=True is invalid: draw it rarely
    c["reverse"] = draw(st.booleans()) if not c["bidirectional"] else draw(st.integers(0, 14)) == 0
    if vjp:
        c["dropout"] = draw(st.sampled_from([0.0, 0.0, 0.4])) if c["L"] > 1 else 0.0
        c["d_output"] = draw(st.sampled_from(["none", "given", "given"]))
        c["d_h_n"] = draw(st.sampled_from(["none", "given"]))
        c["d_dtype"] = draw(st.sampled_from(GOOD_DTYPES))
        c["d_layout"] = draw(st.sampled_from(LAYOUTS))
        c["bwd_fault"] = draw(st.sampled_from(["none"] * 8 + sorted(BACKWARD_FAULTS)))
    return c


def build_gru_call(c, rng, m):
    """x, h0, lengths for a case (with its fault, if any), and the expected outcome."""
    I, H, T, B = c["I"], c["H"], c["T"], c["B"]
    LD = c["L"] * (2 if c["bidirectional"] else 1)
    fault = c["fault"]
    unbatched = c["unbatched"]
    if fault in (
        "lengths_shape",
        "lengths_float",
        "lengths_zero",
        "lengths_negative",
        "lengths_too_long",
    ):
        unbatched = False
        if fault in ("lengths_zero", "lengths_negative", "lengths_too_long") and B == 0:
            B = 1  # an empty lengths array has no bad value
    if fault == "lengths_unbatched":
        unbatched = True
    if fault == "x_T0":
        T = 0
    if unbatched:
        xshape = (T, I)
    else:
        xshape = (B, T, I) if c["batch_first"] else (T, B, I)
    x_dtype = c["x_dtype"]
    if fault == "x_dtype":
        x_dtype = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
    if fault == "x_ndim":
        xshape = [(I,), (1, 1, 1, I), (2, T, B, I)][rng.integers(3)]
    if fault == "x_features":
        xshape = xshape[:-1] + (I + 1 + int(rng.integers(3)),)
    x = lay_out(values(rng, xshape, x_dtype), c["x_layout"])

    h0 = None
    hshape = (LD, H) if unbatched else (LD, B, H)
    if c["h0"] == "given" or fault in ("h0_shape", "h0_dtype"):
        h_dtype = c["h0_dtype"]
        if fault == "h0_shape":
            bad = list(hshape)
            i = int(rng.integers(len(bad)))
            bad[i] += 1
            hshape = [tuple(bad), hshape[1:], (1,) + hshape][rng.integers(3)]
        if fault == "h0_dtype":
            h_dtype = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
        h0 = lay_out(values(rng, hshape, h_dtype), c["h0_layout"])

    lengths = None
    if (c["lengths"] != "none" and not unbatched) or fault.startswith("lengths"):
        lengths = rng.integers(1, T + 1, size=B) if T > 0 else np.ones(B, np.int64)
        if fault == "lengths_unbatched":
            lengths = np.array([T])
        if fault == "lengths_shape":
            lengths = [np.ones(B + 1, np.int64), np.ones((1, B), np.int64), np.int64(T)][
                rng.integers(3)
            ]
        if fault == "lengths_zero":
            lengths[rng.integers(B)] = 0
        if fault == "lengths_negative":
            lengths[rng.integers(B)] = -int(rng.integers(1, 5))
        if fault == "lengths_too_long":
            lengths[rng.integers(B)] = T + int(rng.integers(1, 5))
        if fault == "lengths_float":
            lengths = np.asarray(lengths, np.float64)
        elif fault not in ("lengths_shape",):
            if c["lengths"] == "list" and B > 0:
                lengths = [int(v) for v in lengths]
            elif fault != "lengths_negative" or c["lengths_dtype"] != "uint16":
                lengths = np.asarray(lengths).astype(c["lengths_dtype"])
    return x, h0, lengths, unbatched, T, B


def reference_gru(c, m, x, h0, lengths, unbatched, masks=None):
    """Reference output and h_n (float64) for what the module should compute."""
    dt = m.dtype
    xr = np.asarray(x).astype(dt).astype(np.float64)
    hr = None if h0 is None else np.asarray(h0).astype(dt).astype(np.float64)
    bf = c["batch_first"] and not unbatched
    if unbatched:
        xr = xr[:, None, :]
        hr = None if hr is None else hr[:, None, :]
    lr = None if lengths is None else np.asarray(lengths, np.int64)
    mk = None if masks is None else [np.asarray(k, np.float64) for k in masks]
    out, h_n = ref.gru_forward(
        xr,
        hr,
        ref_layers(m),
        hidden_size=m.hidden_size,
        num_directions=m.num_directions,
        reverse=m.reverse,
        reset_after=m.reset_after,
        lengths=lr,
        batch_first=bf,
        dropout_masks=mk,
    )
    if unbatched:
        out, h_n = out[:, 0, :], h_n[:, 0, :]
    return out, h_n


def expected_shapes(c, m, T, B, unbatched):
    DH, LD = m.num_directions * m.hidden_size, m.num_layers * m.num_directions
    if unbatched:
        return (T, DH), (LD, m.hidden_size)
    return ((B, T, DH) if c["batch_first"] else (T, B, DH)), (LD, B, m.hidden_size)


def check_identities(m, out, h_n, unbatched, batch_first, lengths):
    """output/h_n identities (bit for bit) when every sequence runs to the end."""
    if (
        lengths is not None
        and np.asarray(lengths).size
        and np.min(lengths) < (out.shape[0] if (unbatched or not batch_first) else out.shape[1])
    ):
        return
    o = out[:, None, :] if unbatched else (np.swapaxes(out, 0, 1) if batch_first else out)
    hn = h_n[:, None, :] if unbatched else h_n
    H = m.hidden_size
    if m.num_directions == 1:
        last = o[0] if m.reverse else o[-1]
        assert same(last, hn[-1]), "output at the last processed step != h_n[-1]"
    else:
        assert same(o[-1, :, :H], hn[-2]) and same(o[0, :, H:], hn[-1])


def make_gru(c, **extra):
    kw = dict(
        num_layers=c["L"],
        bias=c["bias"],
        batch_first=c["batch_first"],
        bidirectional=c["bidirectional"],
        reset_after=c["reset_after"],
        reverse=c["reverse"],
        dtype=c["dtype"],
        seed=c["seed"] % 1000,
        **extra,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return cygru.GRU(c["I"], c["H"], **kw), kw


@profile(3000)
@given(gru_cases())
def test_gru_forward_property(c):
    note(repr(c))
    rng = np.random.default_rng(c["seed"])
    if c["bidirectional"] and c["reverse"]:
        with pytest.raises(ValueError) as ei:
            make_gru(c)
        check_error(ei, "reverse")
        return
    m, _ = make_gru(c)
    params_before = m.state_dict()
    x, h0, lengths, unbatched, T, B = build_gru_call(c, rng, m)
    saved = [snapshot(x), snapshot(h0), snapshot(lengths)]
    if c["fault"] != "none":
        exc, word = GRU_FAULTS[c["fault"]]
        with pytest.raises(exc) as ei:
            m(x, h0, lengths)
        check_error(ei, word)
    else:
        out, h_n = m(x, h0, lengths)
        want_out, want_hn = expected_shapes(c, m, T, B, unbatched)
        assert out.shape == want_out and h_n.shape == want_hn
        assert out.dtype == m.dtype and h_n.dtype == m.dtype
        assert out.flags.c_contiguous and h_n.flags.c_contiguous
        for a in (x, h0):
            if isinstance(a, np.ndarray):
                assert not np.shares_memory(out, a) and not np.shares_memory(h_n, a)
        if B > 0 or unbatched:
            r_out, r_hn = reference_gru(c, m, x, h0, lengths, unbatched)
            close(out, r_out, TOL[m.dtype], "output")
            close(h_n, r_hn, TOL[m.dtype], "h_n")
            check_identities(m, out, h_n, unbatched, c["batch_first"], lengths)
        else:
            assert out.size == 0 and h_n.size == 0
    for a, s in zip((x, h0, lengths), saved):
        assert unchanged(a, s), "a caller's array was modified"
    after = m.state_dict()
    assert all(same(params_before[k], after[k]) for k in after), "parameters changed"


@profile(2000)
@given(gru_cases(vjp=True))
def test_gru_vjp_property(c):
    note(repr(c))
    rng = np.random.default_rng(c["seed"])
    if c["bidirectional"] and c["reverse"]:
        with pytest.raises(ValueError):
            make_gru(c, dropout=c["dropout"])
        return
    m, _ = make_gru(c, dropout=c["dropout"])
    x, h0, lengths, unbatched, T, B = build_gru_call(c, rng, m)
    saved = [snapshot(x), snapshot(h0), snapshot(lengths)]
    if c["fault"] != "none":
        exc, word = GRU_FAULTS[c["fault"]]
        with pytest.raises(exc) as ei:
            m.vjp(x, h0, lengths)
        check_error(ei, word)
        return
    (out, h_n), backward = m.vjp(x, h0, lengths)
    want_out, want_hn = expected_shapes(c, m, T, B, unbatched)
    assert out.shape == want_out and h_n.shape == want_hn
    masks = backward.dropout_masks
    if m.dropout == 0 or m.num_layers == 1:
        assert masks is None
        p_out, p_hn = m(x, h0, lengths)  # vjp's forward is the plain forward, bit for bit
        assert same(p_out, out) and same(p_hn, h_n)
    elif masks is not None or B > 0:  # (an empty batch may report no masks)
        assert len(masks) == m.num_layers - 1
        for k in masks:
            assert k.shape == (T, 1 if unbatched else B, m.num_directions * m.hidden_size)
            assert set(np.unique(k)).issubset({0.0, np.float64(m.dtype.type(1 / (1 - m.dropout)))})

    # upstream gradients (maybe faulty)
    bf = c["bwd_fault"]
    d_out = d_hn = None
    if c["d_output"] == "given" or bf.startswith("d_output"):
        shape, dtype = want_out, c["d_dtype"]
        if bf == "d_output_shape":
            shape = shape[:-1] + (shape[-1] + 1,)
        if bf == "d_output_dtype":
            dtype = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
        d_out = lay_out(values(rng, shape, dtype), c["d_layout"])
    if c["d_h_n"] == "given" or bf.startswith("d_h_n"):
        shape, dtype = want_hn, c["d_dtype"]
        if bf == "d_h_n_shape":
            shape = (shape[0] + 1,) + shape[1:]
        if bf == "d_h_n_dtype":
            dtype = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
        d_hn = lay_out(values(rng, shape, dtype), c["d_layout"])
    saved += [snapshot(d_out), snapshot(d_hn)]
    m.zero_grad()
    if bf != "none":
        exc, word = BACKWARD_FAULTS[bf]
        with pytest.raises(exc) as ei:
            backward(d_out, d_hn)
        check_error(ei, word)
        assert all(not g.any() for g in m.grads.values()), "a failed backward changed grads"
        return
    dx, dh0 = backward(d_out, d_hn)
    x_shape = np.shape(x)
    assert dx.shape == x_shape and dh0.shape == want_hn
    assert dx.dtype == m.dtype and dh0.dtype == m.dtype
    with pytest.raises(RuntimeError):
        backward(d_out, d_hn)
    for a, s in zip((x, h0, lengths, d_out, d_hn), saved):
        assert unchanged(a, s), "a caller's array was modified"
    if B == 0 and not unbatched:
        assert not dx.any() and not dh0.any()
        assert all(not g.any() for g in m.grads.values())
        return
    r_out, r_hn = reference_gru(c, m, x, h0, lengths, unbatched, masks)
    close(out, r_out, TOL[m.dtype], "vjp output")
    close(h_n, r_hn, TOL[m.dtype], "vjp h_n")
    # reference gradients
    dt = m.dtype
    xr = np.asarray(x).astype(dt).astype(np.float64)
    hr = None if h0 is None else np.asarray(h0).astype(dt).astype(np.float64)
    dor = None if d_out is None else np.asarray(d_out).astype(dt).astype(np.float64)
    dhr = None if d_hn is None else np.asarray(d_hn).astype(dt).astype(np.float64)
    if unbatched:
        xr = xr[:, None, :]
        hr, dor, dhr = (None if a is None else a[:, None, :] for a in (hr, dor, dhr))
    lr = None if lengths is None else np.asarray(lengths, np.int64)
    mk = None if masks is None else [np.asarray(k, np.float64) for k in masks]
    r_dx, r_dh0, r_grads = ref.gru_backward(
        xr,
        hr,
        ref_layers(m),
        dor,
        dhr,
        hidden_size=m.hidden_size,
        num_directions=m.num_directions,
        reverse=m.reverse,
        reset_after=m.reset_after,
        lengths=lr,
        batch_first=c["batch_first"] and not unbatched,
        dropout_masks=mk,
    )
    if unbatched:
        r_dx, r_dh0 = r_dx[:, 0, :], r_dh0[:, 0, :]
    close(dx, r_dx, GRAD_TOL[dt], "dx")
    close(dh0, r_dh0, GRAD_TOL[dt], "dh0")
    for k in range(m.num_layers):
        for d in range(m.num_directions):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            for name, g in zip(GATES, r_grads[k][d]):
                if g is None:
                    assert name + sfx not in m.grads
                    continue
                assert m.grads[name + sfx].dtype == dt
                close(m.grads[name + sfx], g, GRAD_TOL[dt], name + sfx)


# ---------------------------------------------------------------------------------------------
# 2. GRUCell forward and vjp against the reference
# ---------------------------------------------------------------------------------------------

CELL_FAULTS = {
    "x_dtype": (TypeError, "x"),
    "x_ndim": (ValueError, "x"),
    "x_features": (ValueError, "x"),
    "h_shape": (ValueError, "h"),
    "h_dtype": (TypeError, "h"),
}


@st.composite
def cell_cases(draw):
    medium = draw(st.integers(0, 9)) == 0
    return dict(
        I=draw(st.integers(1, 9 if medium else 4)),
        H=draw(st.integers(1, 21 if medium else 5)),
        B=draw(st.integers(0, 12 if medium else 4)),
        unbatched=draw(st.integers(0, 3)) == 0,
        bias=draw(st.booleans()),
        reset_after=draw(st.booleans()),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        x_dtype=draw(st.sampled_from(GOOD_DTYPES)),
        x_layout=draw(st.sampled_from(LAYOUTS)),
        h=draw(st.sampled_from(["none", "given"])),
        h_dtype=draw(st.sampled_from(GOOD_DTYPES)),
        h_layout=draw(st.sampled_from(LAYOUTS)),
        fault=draw(st.sampled_from(["none"] * 8 + sorted(CELL_FAULTS))),
        d=draw(st.sampled_from(["none", "given", "given"])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@profile(1500)
@given(cell_cases())
def test_gru_cell_property(c):
    note(repr(c))
    rng = np.random.default_rng(c["seed"])
    I, H, B = c["I"], c["H"], c["B"]
    m = cygru.GRUCell(
        I, H, bias=c["bias"], reset_after=c["reset_after"], dtype=c["dtype"], seed=c["seed"] % 1000
    )
    fault = c["fault"]
    xshape = (I,) if c["unbatched"] else (B, I)
    x_dtype = c["x_dtype"]
    if fault == "x_dtype":
        x_dtype = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
    if fault == "x_ndim":
        xshape = [(1, B, I), (1, 1, 1, I)][rng.integers(2)]
    if fault == "x_features":
        xshape = xshape[:-1] + (I + 1,)
    x = lay_out(values(rng, xshape, x_dtype), c["x_layout"])
    h = None
    if c["h"] == "given" or fault.startswith("h_"):
        hshape = (H,) if c["unbatched"] else (B, H)
        h_dtype = c["h_dtype"]
        if fault == "h_shape":
            hshape = [hshape[:-1] + (H + 1,), (1,) + hshape, (B + 1, H)][rng.integers(3)]
        if fault == "h_dtype":
            h_dtype = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
        h = lay_out(values(rng, hshape, h_dtype), c["h_layout"])
    saved = [snapshot(x), snapshot(h)]
    if fault != "none":
        exc, word = CELL_FAULTS[fault]
        for call in (lambda: m(x, h), lambda: m.vjp(x, h)):
            with pytest.raises(exc) as ei:
                call()
            check_error(ei, word)
        return
    h1 = m(x, h)
    want = (H,) if c["unbatched"] else (B, H)
    assert h1.shape == want and h1.dtype == m.dtype
    for a in (x, h):
        if isinstance(a, np.ndarray):
            assert not np.shares_memory(h1, a)
    dt = m.dtype
    xr = np.atleast_2d(np.asarray(x).astype(dt).astype(np.float64))
    hr = None if h is None else np.atleast_2d(np.asarray(h).astype(dt).astype(np.float64))
    ((w_ih, w_hh, b_ih, b_hh),) = ref_layers(_CellAsGRU(m))[0]
    if xr.shape[0]:
        r = ref.cell_forward(xr, hr, w_ih, w_hh, b_ih, b_hh, reset_after=m.reset_after)
        close(h1, r[0] if c["unbatched"] else r, TOL[dt], "cell h1")
    # vjp
    h1v, backward = m.vjp(x, h)
    # GRUCell() runs the cell kernel, GRUCell.vjp() the one-step sequence kernel: they may
    # differ by a few ulps (BLAS gemv versus gemm, or the packed float32 recurrent kernel,
    # which sums in another order with FMA); not bit for bit
    close(
        h1v,
        h1.astype(np.float64),
        dict(rtol=0, atol=4e-6 if dt == np.float32 else 1e-14),
        "GRUCell.vjp vs GRUCell()",
    )
    d = None if c["d"] == "none" else lay_out(values(rng, want, "float64"), c["x_layout"])
    saved.append(snapshot(d))
    m.zero_grad()
    dx, dh = backward(d)
    assert dx.shape == np.shape(x) and dh.shape == want
    assert dx.dtype == dt and dh.dtype == dt
    for a, s in zip((x, h, d), saved):
        assert unchanged(a, s), "a caller's array was modified"
    if xr.shape[0] == 0:
        return
    dr = None if d is None else np.atleast_2d(np.asarray(d).astype(dt).astype(np.float64))
    r_dx, r_dh, r_g = ref.gru_backward(
        xr[None],
        None if hr is None else hr[None],
        [[(w_ih, w_hh, b_ih, b_hh)]],
        None if dr is None else dr[None],
        None,
        hidden_size=H,
        num_directions=1,
        reset_after=m.reset_after,
    )
    close(dx, r_dx[0][0] if c["unbatched"] else r_dx[0], GRAD_TOL[dt], "cell dx")
    close(dh, r_dh[0][0] if c["unbatched"] else r_dh[0], GRAD_TOL[dt], "cell dh")
    for name, g in zip(GATES, r_g[0][0]):
        if g is not None:
            close(m.grads[name], g, GRAD_TOL[dt], name)


class _CellAsGRU:
    """Lets ref_layers read a GRUCell's parameters (names without the _l0 suffix)."""

    def __init__(self, cell):
        self.num_layers, self.num_directions = 1, 1
        self._sd = {n + "_l0": v for n, v in cell.state_dict().items()}

    def state_dict(self):
        return self._sd


# ---------------------------------------------------------------------------------------------
# 3. constructors: valid and invalid options
# ---------------------------------------------------------------------------------------------

_SIZE_VALUES = st.one_of(
    st.integers(1, 6),
    st.sampled_from(
        [
            0,
            -1,
            -(2**40),
            2**31,
            2**63,
            2.0,
            3.5,
            float("nan"),
            "3",
            None,
            True,
            False,
            np.int64(3),
            np.uint8(2),
            np.float32(2),
            [3],
            1j,
        ]
    ),
)
_DTYPE_VALUES = st.sampled_from(
    [
        np.float32,
        np.float64,
        "float32",
        "float64",
        "f4",
        np.dtype("f8"),
        np.float16,
        np.int32,
        int,
        float,
        complex,
        "complex64",
        "abc",
        object,
        str,
        1.5,
        np.bool_,
    ]
)
_DROPOUT_VALUES = st.one_of(
    st.floats(-1, 2),
    st.sampled_from(
        [0, 0.5, float("nan"), float("inf"), "0.1", "x", None, [0.1], 1j, np.float32(0.25)]
    ),
)


def _size_ok(v):
    """What GRU/GRUCell must do with a size argument: None (accepted) or the exception."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        return TypeError
    if v < 1 or v > INT_MAX:
        return ValueError
    return None


def _dtype_ok(v):
    try:
        dt = np.dtype(v)
    except TypeError:
        return TypeError
    return None if dt in (np.dtype(np.float32), np.dtype(np.float64)) else TypeError


def _dropout_ok(v):
    if isinstance(v, (str, bytes, bool)):  # refused, as torch refuses them
        return TypeError
    try:
        p = float(v)
    except (TypeError, ValueError):
        return TypeError
    return None if 0 <= p < 1 else ValueError


@profile(800)
@given(
    I=_SIZE_VALUES,
    H=_SIZE_VALUES,
    L=_SIZE_VALUES,
    dropout=_DROPOUT_VALUES,
    dtype=_DTYPE_VALUES,
    bidirectional=st.booleans(),
    reverse=st.booleans(),
    cell=st.booleans(),
)
def test_constructor_property(I, H, L, dropout, dtype, bidirectional, reverse, cell):
    if cell:
        errors = [e for e in (_size_ok(I), _size_ok(H), _dtype_ok(dtype)) if e]
        make = lambda: cygru.GRUCell(I, H, dtype=dtype)  # noqa: E731
    else:
        errors = [
            e
            for e in (_size_ok(I), _size_ok(H), _size_ok(L), _dropout_ok(dropout), _dtype_ok(dtype))
            if e
        ]
        if bidirectional and reverse:
            errors.append(ValueError)
        make = lambda: cygru.GRU(  # noqa: E731
            I,
            H,
            L,
            dropout=dropout,
            dtype=dtype,
            bidirectional=bidirectional,
            reverse=reverse,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if errors:
            with pytest.raises(tuple(set(errors))) as ei:
                make()
            assert str(ei.value).strip()
        else:
            m = make()
            assert m.hidden_size == int(H) and m.input_size == int(I)
            x = np.ones((2, 1, int(I)))
            out = m(x[0]) if cell else m(x)[0]
            assert out.dtype == np.dtype(dtype)


def test_zero_sizes_raise_at_construction():
    for cls in (cygru.GRU, cygru.GRUCell):
        for args in ((0, 3), (3, 0), (0, 0)):
            with pytest.raises(ValueError, match="must be >= 1"):
                cls(*args)


# ---------------------------------------------------------------------------------------------
# 4. functional API
# ---------------------------------------------------------------------------------------------


@profile(300)
@given(gru_cases())
def test_functional_gru_property(c):
    assume(c["fault"] == "none" and not (c["bidirectional"] and c["reverse"]))
    rng = np.random.default_rng(c["seed"])
    m, _ = make_gru(c)
    x, h0, lengths, unbatched, T, B = build_gru_call(c, rng, m)
    out, h_n = m(x, h0, lengths)
    f_out, f_hn = cygru.functional.gru(
        x,
        m.state_dict(),
        h0,
        num_layers=m.num_layers,
        bidirectional=m.bidirectional,
        batch_first=m.batch_first,
        reset_after=m.reset_after,
        reverse=m.reverse,
        lengths=lengths,
    )
    assert same(out, f_out) and same(h_n, f_hn)


def test_regression_functional_gru_malformed_weights_raise_clear_errors():
    """functional.gru must reject malformed weights with ValueError/TypeError. (Found by
    this file: a 1-D weight_hh_l0 raised IndexError and a list AttributeError, H being
    read from ``w_hh.shape[1]`` before w_hh was validated or converted.)"""
    x = np.zeros((5, 2, 3), np.float32)
    w_ih = np.zeros((12, 3), np.float32)
    bad = {
        "1-D weight_hh": np.zeros(12, np.float32),
        "list weight_hh": np.zeros((12, 4)).tolist(),
        "0-d weight_hh": np.float32(1.0),
        "None weight_hh": None,
    }
    problems = []
    for name, w_hh in bad.items():
        try:
            cygru.functional.gru(x, {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh})
        except (ValueError, TypeError) as e:
            assert str(e).strip()
        except Exception as e:  # noqa: BLE001 - anything else is the bug
            problems.append(f"{name}: {type(e).__name__}: {e}")
        else:
            problems.append(f"{name}: accepted")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# 5. load_state_dict, parameters by attribute
# ---------------------------------------------------------------------------------------------

LOAD_KINDS = {
    "float16": None,
    "int64": None,
    "int8": None,
    "bool": None,
    "float64": None,
    "float32": None,
    "list": None,
    "nan": None,
    "inf": None,
    "fortran": None,
    "strided": None,
    "complex": TypeError,
    "str": TypeError,
    "object": TypeError,
    "None": TypeError,
    "abc": TypeError,
    "dict": TypeError,
    "bytes": TypeError,
    "wrong_shape": ValueError,
    "transposed": ValueError,
    "missing": ValueError,
    "unexpected": ValueError,
}


@profile(500)
@given(
    kind=st.sampled_from(sorted(LOAD_KINDS)),
    cell=st.booleans(),
    bidirectional=st.booleans(),
    L=st.integers(1, 2),
    bias=st.booleans(),
    dtype=st.sampled_from(["float32", "float64"]),
    which=st.integers(0, 100),
    seed=st.integers(0, 10**6),
)
def test_load_state_dict_property(kind, cell, bidirectional, L, bias, dtype, which, seed):
    rng = np.random.default_rng(seed)
    if cell:
        m = cygru.GRUCell(3, 4, bias=bias, dtype=dtype, seed=1)
        src = cygru.GRUCell(3, 4, bias=bias, dtype=dtype, seed=2)
    else:
        m = cygru.GRU(3, 4, L, bias=bias, bidirectional=bidirectional, dtype=dtype, seed=1)
        src = cygru.GRU(3, 4, L, bias=bias, bidirectional=bidirectional, dtype=dtype, seed=2)
    before = m.state_dict()
    live_before = {n: p for n, p in m.named_parameters()}
    sd = src.state_dict()
    key = sorted(sd)[which % len(sd)]
    v = sd[key]
    new = {
        "float16": lambda: v.astype(np.float16),
        "int64": lambda: np.round(v * 4).astype(np.int64),
        "int8": lambda: np.round(v * 4).astype(np.int8),
        "bool": lambda: v > 0,
        "float64": lambda: v.astype(np.float64),
        "float32": lambda: v.astype(np.float32),
        "list": lambda: v.tolist(),
        "fortran": lambda: np.asfortranarray(v),
        "strided": lambda: lay_out(v, "strided"),
        "nan": lambda: np.where(rng.random(v.shape) < 0.3, np.nan, v),
        "inf": lambda: np.where(rng.random(v.shape) < 0.3, -np.inf, v),
        "complex": lambda: v.astype(np.complex128),
        "str": lambda: v.astype(str),
        "object": lambda: v.astype(object),
        "None": lambda: None,
        "abc": lambda: "abc",
        "dict": lambda: {"a": 1},
        "bytes": lambda: b"\x00" * 16,
        "wrong_shape": lambda: np.zeros(v.shape[:-1] + (v.shape[-1] + 1,)),
        "transposed": lambda: (
            v.T if v.ndim == 2 and v.shape[0] != v.shape[1] else np.zeros((1,) + v.shape)
        ),
        "missing": lambda: None,
        "unexpected": lambda: v,
    }[kind]()
    if kind == "missing":
        del sd[key]
    elif kind == "unexpected":
        sd[key + "_extra"] = v
    else:
        sd[key] = new
    saved = {k: snapshot(a) if isinstance(a, np.ndarray) else a for k, a in sd.items()}
    exc = LOAD_KINDS[kind]
    if exc is not None:
        with pytest.raises(exc) as ei:
            m.load_state_dict(sd)
        assert str(ei.value).strip()
        if kind not in ("missing", "unexpected"):
            assert key in str(ei.value), f"the message does not name the key: {ei.value}"
        after = m.state_dict()
        assert all(same(before[k], after[k]) for k in before), "a failed load changed the module"
        assert all(p is live_before[n] for n, p in m.named_parameters())
        return
    m.load_state_dict(sd)
    for k, a in sd.items():
        want = np.asarray(a).astype(m.dtype)
        assert same(getattr(m, k), want), k
        assert getattr(m, k).flags.c_contiguous
        if isinstance(a, np.ndarray):
            assert not np.shares_memory(getattr(m, k), a), f"{k} aliases the caller's array"
            assert unchanged(a, saved[k])
    # NaN / inf weights are accepted and propagate like the reference
    x = values(rng, (3, 2, 3) if not cell else (2, 3), "float64")
    with np.errstate(invalid="ignore", over="ignore"):
        got, want = _load_outputs(m, x, cell)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), fin)
    close(got[fin], want[fin], TOL[m.dtype], "output after load")


def _load_outputs(m, x, cell):
    if cell:
        got = m(x)
        ((w_ih, w_hh, b_ih, b_hh),) = ref_layers(_CellAsGRU(m))[0]
        want = ref.cell_forward(
            x.astype(m.dtype).astype(np.float64), None, w_ih, w_hh, b_ih, b_hh, reset_after=True
        )
    else:
        got = m(x)[0]
        want = ref.gru_forward(
            x.astype(m.dtype).astype(np.float64),
            None,
            ref_layers(m),
            hidden_size=4,
            num_directions=m.num_directions,
        )[0]
    return got, want


def test_parameter_assignment_checked_and_copied():
    m = cygru.GRU(3, 4, seed=0)
    before = m.weight_hh_l0.copy()
    for bad, exc in (
        (None, TypeError),
        ("abc", TypeError),
        ({"a": 1}, TypeError),
        (np.zeros((12, 4), complex), TypeError),
        (np.zeros((4, 12)), ValueError),
        (np.zeros((12, 4), object), TypeError),
    ):
        with pytest.raises(exc):
            m.weight_hh_l0 = bad
        assert same(m.weight_hh_l0, before)
    a = np.ones((12, 4), np.float32)
    m.weight_hh_l0 = a
    a[...] = 2
    assert (m.weight_hh_l0 == 1).all(), "the module aliases the array it was given"
    m.weight_hh_l0 = np.full((12, 4), 3, np.int16)
    assert m.weight_hh_l0.dtype == np.float32 and (m.weight_hh_l0 == 3).all()


def test_load_state_dict_never_aliases_foreign_arrays():
    """Values are "copied in": also those that are not ndarrays but expose their memory
    (a torch tensor, a memoryview, a masked array or another ndarray subclass), which
    np.asarray turns into a *view*. (Found by this file: `_checked_param` used to copy only
    when ``arr is value``, so mutating a loaded torch tensor changed the module.)"""
    torch = import_optional("torch")
    problems = []
    m0 = cygru.GRU(3, 4, seed=0)
    sources = {
        "torch.Tensor": lambda a: torch.from_numpy(a.copy()),
        "memoryview": lambda a: memoryview(a.copy()),
        "np.ma.MaskedArray": lambda a: np.ma.masked_array(a.copy()),
        "an ndarray subclass": lambda a: a.copy().view(_Sub),
    }
    for name, make in sources.items():
        m = cygru.GRU(3, 4, seed=1)
        sd = {k: make(v) for k, v in m0.state_dict().items()}
        m.load_state_dict(sd)
        before = m.state_dict()
        for v in sd.values():
            np.asarray(v)[...] = 7  # the caller reuses its buffers
        if not all(same(before[k], getattr(m, k)) for k in before):
            problems.append(f"load_state_dict from {name}: the module aliases the source")
        m = cygru.GRU(3, 4, seed=1)
        src = make(m0.weight_hh_l0)
        m.weight_hh_l0 = src
        keep = m.weight_hh_l0.copy()
        np.asarray(src)[...] = 7
        if not same(keep, m.weight_hh_l0):
            problems.append(f"attribute assignment from {name}: the module aliases the source")
    assert not problems, "\n".join(problems)


class _Sub(np.ndarray):
    pass


# ---------------------------------------------------------------------------------------------
# 6. pickle / deepcopy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pickle", "pickle-highest", "deepcopy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pickle_deepcopy_round_trip_exact(how, dtype):
    rng = np.random.default_rng(0)
    m = cygru.GRU(
        3,
        5,
        2,
        bidirectional=True,
        batch_first=True,
        dropout=0.3,
        reset_after=False,
        dtype=dtype,
        seed=7,
    )
    x = rng.standard_normal((2, 4, 3))
    (out, h_n), bw = m.vjp(x)  # advance the dropout stream, make grads
    bw(np.ones_like(out), None)
    m.weight_ih_l0[0, 0] = np.nan  # NaN weights survive too
    cell = cygru.GRUCell(3, 5, bias=False, dtype=dtype, seed=3)
    h, cbw = cell.vjp(rng.standard_normal((2, 3)))
    cbw(np.ones_like(h))
    clone = {
        "pickle": lambda o: pickle.loads(pickle.dumps(o)),
        "pickle-highest": lambda o: pickle.loads(pickle.dumps(o, pickle.HIGHEST_PROTOCOL)),
        "deepcopy": copy.deepcopy,
    }[how]
    for orig in (m, cell):
        c = clone(orig)
        assert type(c) is type(orig) and repr(c) == repr(orig)
        for opt in ("input_size", "hidden_size", "bias", "dtype", "reset_after", "device"):
            assert getattr(c, opt) == getattr(orig, opt)
        if isinstance(orig, cygru.GRU):
            for opt in ("num_layers", "batch_first", "dropout", "bidirectional", "reverse"):
                assert getattr(c, opt) == getattr(orig, opt)
        sd0, sd1 = orig.state_dict(), c.state_dict()
        assert list(sd0) == list(sd1) and all(same(sd0[k], sd1[k]) for k in sd0)
        assert list(orig.grads) == list(c.grads)
        assert all(same(orig.grads[k], c.grads[k]) for k in orig.grads)
        assert any(orig.grads[k].any() for k in orig.grads)
        for n, p in c.named_parameters():
            assert not np.shares_memory(p, getattr(orig, n))
        for k in c.grads:
            assert not np.shares_memory(c.grads[k], orig.grads[k])
    # calls give identical outputs, dropout stream included (both continue the same stream)
    c = clone(m)
    x2 = rng.standard_normal((2, 4, 3))
    (o1, hn1), b1 = m.vjp(x2)
    (o2, hn2), b2 = c.vjp(x2)
    assert same(o1, o2) and same(hn1, hn2)
    assert all(same(a, b) for a, b in zip(b1.dropout_masks, b2.dropout_masks))
    g = np.arange(o1.size, dtype=np.float64).reshape(o1.shape) / o1.size
    r1, r2 = b1(g, None), b2(g, None)
    assert all(same(a, b) for a, b in zip(r1, r2))
    assert all(same(m.grads[k], c.grads[k]) for k in m.grads)
    assert same(m(x2)[0], c(x2)[0])
    # the clone is independent, and its lock works
    c.zero_grad()
    assert any(m.grads[k].any() for k in m.grads)
    c2 = clone(cell)
    xc = rng.standard_normal((2, 3))
    assert same(cell(xc), c2(xc))


# ---------------------------------------------------------------------------------------------
# 7. BLAS-int overflow, impossible allocations
# ---------------------------------------------------------------------------------------------


def _sparse_memmap(tmp_path, shape, dtype=np.float32):
    """A C-contiguous array of `shape` backed by a sparse file: no memory, no disk."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    path = tmp_path / "huge.bin"
    with open(path, "wb") as f:
        f.truncate(nbytes)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def test_blas_int_overflow_raises_value_error(tmp_path):
    """T*B > INT_MAX on a genuinely C-contiguous float32 input (a sparse memory map, so
    nothing is copied and nothing is allocated): ValueError naming BLAS's int, at once."""
    x = _sparse_memmap(tmp_path, (2**16, 2**15, 1))  # T*B = 2**31
    m = cygru.GRU(1, 2)
    t0 = time.perf_counter()
    for call in (
        lambda: m(x),
        lambda: m.vjp(x),
        lambda: cygru.GRU(1, 2, batch_first=True)(x),
        lambda: cygru.GRU(1, 2, bidirectional=True, num_layers=2)(x),
        lambda: m(x.reshape(2**31, 1)),  # unbatched, T = 2**31
        lambda: cygru.functional.gru(x, m.state_dict()),
    ):
        with pytest.raises(ValueError, match="BLAS"):
            call()
    xc = x.reshape(2**31, 1)
    for call in (lambda: cygru.GRUCell(1, 2)(xc), lambda: cygru.GRUCell(1, 2).vjp(xc)):
        with pytest.raises(ValueError, match="BLAS"):
            call()
    # the same sizes as zero-strided views of another dtype: the size check must come
    # before the conversion (which would copy 8-16 GiB)
    zs = np.lib.stride_tricks.as_strided
    xz = zs(np.zeros(1, np.float64), shape=(2**16, 2**15, 1), strides=(0, 0, 0))
    with pytest.raises(ValueError, match="BLAS"):
        m(xz)
    with pytest.raises(ValueError, match="BLAS"):
        cygru.GRU(1, 2, batch_first=True).vjp(np.swapaxes(xz, 0, 1))
    with pytest.raises(ValueError, match="BLAS"):
        cygru.GRUCell(1, 2)(zs(np.zeros(1, np.int8), shape=(2**31, 1), strides=(0, 0)))
    assert time.perf_counter() - t0 < 10


def test_impossible_sizes_raise_before_any_kernel():
    """Zero-strided views of astronomically large inputs: nothing may be computed; the call
    raises ValueError (size check) or MemoryError (the copy), quickly."""
    base = np.zeros(1, np.float32)
    zs = np.lib.stride_tricks.as_strided
    m = cygru.GRU(4, 3)
    huge_x = zs(base, shape=(2**20, 2**20, 4), strides=(0, 0, 0))
    cases = {
        "x": lambda: m(huge_x),
        "x vjp": lambda: m.vjp(huge_x),
        "x f64": lambda: m(zs(np.zeros(1), shape=(2**40, 1, 4), strides=(0, 0, 0))),
        "h0": lambda: m(np.zeros((2, 2, 4)), zs(base, shape=(1, 2**45, 3), strides=(0, 0, 0))),
        "lengths": lambda: m(
            np.zeros((2, 2, 4)), lengths=zs(np.ones(1, np.int64), shape=(2**45,), strides=(0,))
        ),
        "cell x": lambda: cygru.GRUCell(4, 3)(zs(base, shape=(2**45, 4), strides=(0, 0))),
        "cell h": lambda: cygru.GRUCell(4, 3)(
            np.zeros((2, 4)), zs(base, shape=(2**45, 3), strides=(0, 0))
        ),
        "GRU(huge sizes)": lambda: cygru.GRU(INT_MAX, 2**30),
        "GRUCell(huge sizes)": lambda: cygru.GRUCell(2**30, INT_MAX),
    }
    (out, _), bw = m.vjp(np.zeros((2, 2, 4)))
    cases["d_output"] = lambda: bw(zs(base, shape=(2**40, 2, 3), strides=(0, 0, 0)), None)
    for name, call in cases.items():
        t0 = time.perf_counter()
        with pytest.raises((ValueError, MemoryError)) as ei:
            call()
        assert str(ei.value).strip(), name
        assert time.perf_counter() - t0 < 5, f"{name}: took too long (computed or copied?)"


# ---------------------------------------------------------------------------------------------
# 8. NaN / inf like torch; empty batches like torch
# ---------------------------------------------------------------------------------------------


def _torch_twin(m, torch):
    net = torch.nn.GRU(
        m.input_size,
        m.hidden_size,
        m.num_layers,
        bias=m.bias,
        batch_first=m.batch_first,
        bidirectional=m.bidirectional,
        dtype=torch.float64 if m.dtype == np.float64 else torch.float32,
    )
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.state_dict().items()})
    return net


@profile(400)
@given(
    L=st.integers(1, 2),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    dtype=st.sampled_from(["float32", "float64"]),
    T=st.integers(1, 4),
    B=st.integers(1, 9),
    H=st.integers(1, 18),
    I=st.integers(1, 5),
    n_bad=st.integers(1, 4),
    where=st.lists(st.sampled_from(["x", "h0", "w"]), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_nan_inf_like_torch_property(
    L, bidirectional, batch_first, bias, dtype, T, B, H, I, n_bad, where, seed
):
    torch = import_optional("torch")
    rng = np.random.default_rng(seed)
    m = cygru.GRU(
        I,
        H,
        L,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=dtype,
        seed=seed % 1000,
    )
    D = m.num_directions
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype)
    specials = np.array([np.nan, np.inf, -np.inf], dtype)

    def poison(a):
        flat = a.reshape(-1)
        idx = rng.integers(flat.size, size=n_bad)
        flat[idx] = specials[rng.integers(3, size=n_bad)]

    if "x" in where:
        poison(x)
    if "h0" in where:
        poison(h0)
    if "w" in where:
        names = [n for n, _ in m.named_parameters()]
        poison(getattr(m, names[rng.integers(len(names))]))  # live parameter, in place
    out, h_n = m(x, h0)
    net = _torch_twin(m, torch)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's note about oneDNN TF32
        with torch.backends.mkldnn.flags(enabled=False):
            t_out, t_hn = net(torch.from_numpy(x), torch.from_numpy(h0))
    t_out, t_hn = t_out.numpy(), t_hn.numpy()
    for got, want, what in ((out, t_out, "output"), (h_n, t_hn, "h_n")):
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"NaN positions differ in {what}"
        assert np.array_equal(np.isposinf(got), np.isposinf(want)), f"+inf differ in {what}"
        assert np.array_equal(np.isneginf(got), np.isneginf(want)), f"-inf differ in {what}"
        fin = np.isfinite(want)
        close(got[fin], want[fin].astype(np.float64), TOL[m.dtype], what)
    # the backward pass does not crash on non-finite values either
    (o, hn), bw = m.vjp(x, h0)
    dx, dh0 = bw(np.ones_like(o), np.ones_like(hn))
    assert dx.shape == x.shape and dh0.shape == h0.shape


def test_nan_inf_cell_like_torch():
    torch = import_optional("torch")
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for bias in (True, False):
            cell = cygru.GRUCell(4, 6, bias=bias, dtype=dtype, seed=1)
            x = rng.standard_normal((5, 4)).astype(dtype)
            h = rng.standard_normal((5, 6)).astype(dtype)
            x[0, 0], x[1, 1], x[2, 2] = np.nan, np.inf, -np.inf
            h[3, 0], h[4, 5] = np.inf, np.nan
            cell.weight_hh[1, 1] = np.nan
            tc = torch.nn.GRUCell(
                4, 6, bias=bias, dtype=torch.float64 if dtype == np.float64 else torch.float32
            )
            tc.load_state_dict(
                {k: torch.from_numpy(v.copy()) for k, v in cell.state_dict().items()}
            )
            with torch.no_grad():
                want = tc(torch.from_numpy(x), torch.from_numpy(h)).numpy()
            got = cell(x, h)
            assert np.array_equal(np.isnan(got), np.isnan(want))
            assert np.array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_empty_batch_like_torch(batch_first, bidirectional):
    """B = 0 works like torch: empty outputs of the right shapes (cygru also accepts an
    empty lengths array and runs vjp/backward). T = 0 is an error in both (torch:
    RuntimeError, cygru: ValueError)."""
    torch = import_optional("torch")
    I, H, L, T = 3, 4, 2, 5
    m = cygru.GRU(I, H, L, batch_first=batch_first, bidirectional=bidirectional)
    D = m.num_directions
    x = np.zeros((0, T, I) if batch_first else (T, 0, I), np.float32)
    out, h_n = m(x)
    net = _torch_twin(m, torch)
    with torch.no_grad():
        t_out, t_hn = net(torch.from_numpy(x))
    assert out.shape == tuple(t_out.shape) and h_n.shape == tuple(t_hn.shape)
    assert out.dtype == np.float32
    out2, h_n2 = m(x, np.zeros((L * D, 0, H)), lengths=np.zeros(0, np.int64))
    assert out2.shape == out.shape and h_n2.shape == h_n.shape
    (o, hn), bw = m.vjp(x, lengths=np.zeros(0, np.int32))
    dx, dh0 = bw(np.zeros(o.shape), np.zeros(hn.shape))
    assert dx.shape == x.shape and dh0.shape == (L * D, 0, H)
    with pytest.raises(ValueError, match="sequence length is 0"):
        m(np.zeros((2, 0, I) if batch_first else (0, 2, I)))
    with pytest.raises(RuntimeError):
        net(torch.zeros((2, 0, I) if batch_first else (0, 2, I)))
    cell = cygru.GRUCell(I, H)
    assert cell(np.zeros((0, I))).shape == (0, H)
    h1, cbw = cell.vjp(np.zeros((0, I)), np.zeros((0, H)))
    dx, dh = cbw(np.zeros((0, H)))
    assert h1.shape == (0, H) and dx.shape == (0, I) and dh.shape == (0, H)
    tcell = torch.nn.GRUCell(I, H)
    assert tuple(tcell(torch.zeros(0, I)).shape) == (0, H)


# ---------------------------------------------------------------------------------------------
# 9. leaks
# ---------------------------------------------------------------------------------------------


def _rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    pytest.skip("no /proc/self/status (not Linux)")


LEAK_TOLERANCE_MIB = 20
_no_sanitizer = pytest.mark.skipif(
    os.environ.get("CYGRU_SANITIZER", "") in ("asan", "tsan", "valgrind"),
    reason="RSS is no leak measure under a sanitizer (ASan's quarantine keeps freed memory, "
    "TSan's shadow memory grows with use)",
)


@_no_sanitizer
def test_no_leaks_forward_and_vjp():
    rng = np.random.default_rng(0)
    gru = cygru.GRU(8, 16, 2, bidirectional=True, seed=0)
    gru64 = cygru.GRU(8, 16, reset_after=False, dtype=np.float64, batch_first=True, seed=0)
    cell = cygru.GRUCell(8, 16, seed=0)
    x = rng.standard_normal((6, 4, 8)).astype(np.float32)
    xf = np.asfortranarray(rng.standard_normal((4, 6, 8)))
    lengths = np.array([6, 1, 3, 5])
    xc = rng.standard_normal((4, 8))

    def forward_round(i):
        k = i % 5
        if k == 0:
            gru(x)
        elif k == 1:
            gru(x, lengths=lengths)
        elif k == 2:
            gru64(xf)
        elif k == 3:
            cell(xc)
        else:
            try:  # error paths must not leak either
                gru(x, lengths=[0, 1, 2, 3])
            except ValueError:
                pass

    def vjp_round(i):
        if i % 2:
            (o, hn), bw = gru.vjp(x, lengths=lengths)
            bw(o, hn)
        else:
            h, bw = cell.vjp(xc)
            bw(h)

    for i in range(500):  # warm-up: allocator pools, caches
        forward_round(i)
        vjp_round(i)
    gc.collect()
    r0 = _rss_mib()
    t0 = time.perf_counter()
    for i in range(10_000):
        forward_round(i)
    gc.collect()
    r1 = _rss_mib()
    for i in range(1_000):
        vjp_round(i)
    gc.collect()
    r2 = _rss_mib()
    print(
        f"\nRSS MiB: after warm-up {r0:.1f}, after 10,000 forward {r1:.1f} "
        f"(+{r1 - r0:.2f}), after 1,000 vjp+backward {r2:.1f} (+{r2 - r1:.2f}); "
        f"{time.perf_counter() - t0:.1f} s"
    )
    assert r1 - r0 < LEAK_TOLERANCE_MIB, f"forward: RSS grew {r1 - r0:.1f} MiB"
    assert r2 - r1 < LEAK_TOLERANCE_MIB, f"vjp+backward: RSS grew {r2 - r1:.1f} MiB"


@_no_sanitizer
def test_no_leak_of_unused_backward_closures():
    """vjp closures that are never called are freed with their saved activations."""
    gru = cygru.GRU(16, 64, seed=0)
    x = np.ones((50, 8, 16), np.float32)
    for _ in range(20):
        gru.vjp(x)
    gc.collect()
    r0 = _rss_mib()
    for _ in range(300):  # each holds ~0.8 MiB of activations
        gru.vjp(x)
    gc.collect()
    assert _rss_mib() - r0 < LEAK_TOLERANCE_MIB


# ---------------------------------------------------------------------------------------------
# 10. determinism at a fixed BLAS thread count
# ---------------------------------------------------------------------------------------------


def _det_problem(dtype):
    rng = np.random.default_rng(1)
    m = cygru.GRU(32, 48, 2, bidirectional=True, dtype=dtype, seed=2)
    x = rng.standard_normal((12, 24, 32)).astype(dtype)
    h0 = rng.standard_normal((4, 24, 48)).astype(dtype)
    lengths = rng.integers(1, 13, 24)
    d_out = rng.standard_normal((12, 24, 96))
    return m, x, h0, lengths, d_out


def _det_run(m, x, h0, lengths, d_out):
    out, h_n = m(x, h0, lengths)
    m.zero_grad()
    (o2, hn2), bw = m.vjp(x, h0, lengths)
    dx, dh0 = bw(d_out, np.ones_like(hn2))
    return [out, h_n, o2, hn2, dx, dh0] + [m.grads[k].copy() for k in sorted(m.grads)]


class _cygru_threads:
    """Context manager: cygru's own thread count (cygru.set_num_threads), restored after."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = cygru.get_num_threads()
        cygru.set_num_threads(self.n)

    def __exit__(self, *exc):
        cygru.set_num_threads(self.before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deterministic_at_fixed_thread_count(threads, dtype):
    """20 identical calls give bit-identical outputs and gradients, with `threads` BLAS
    threads (threadpoolctl) and `threads` threads of cygru's own."""
    threadpoolctl = import_optional("threadpoolctl")
    problem = _det_problem(dtype)
    with threadpoolctl.threadpool_limits(threads), _cygru_threads(threads):
        first = _det_run(*problem)
        for _ in range(19):
            again = _det_run(*problem)
            assert all(same(a, b) for a, b in zip(first, again)), (
                f"results differ between identical calls at {threads} BLAS thread(s)"
            )
        cell = cygru.GRUCell(32, 48, dtype=dtype, seed=0)
        xc = problem[1][0]
        c0 = cell(xc)
        assert all(same(c0, cell(xc)) for _ in range(19))


def test_blas_thread_counts_agree_closely():
    """Across BLAS thread counts results may differ in the last bits (a BLAS that splits
    a reduction over threads changes the order of the sums); they must stay within
    rounding. (OpenBLAS splits GEMMs over output blocks, and no difference was seen.)"""
    threadpoolctl = import_optional("threadpoolctl")
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        problem = _det_problem(dtype)
        with _cygru_threads(1):
            with threadpoolctl.threadpool_limits(1):
                one = _det_run(*problem)
            with threadpoolctl.threadpool_limits(2):
                two = _det_run(*problem)
        for a, b in zip(one, two):
            scale = max(1.0, float(np.abs(a).max()))
            assert float(np.abs(a.astype(np.float64) - b).max()) <= tol * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cygru_thread_counts_bit_identical(dtype):
    """cygru's own threads split hidden units and directions, never a sum. As its docs
    say: every thread count above one gives bit-identical results; one thread projects
    the input with BLAS instead, which changes only the last bits (float32; float64
    never uses cygru's threads, so every count is bit-identical)."""
    threadpoolctl = import_optional("threadpoolctl")
    problem = _det_problem(dtype)
    with threadpoolctl.threadpool_limits(1):
        with _cygru_threads(1):
            one = _det_run(*problem)
        with _cygru_threads(2):
            two = _det_run(*problem)
        for n in (3, 4, 7):
            with _cygru_threads(n):
                other = _det_run(*problem)
            assert all(same(a, b) for a, b in zip(two, other)), f"{n} threads differ from 2"
    if np.dtype(dtype) == np.float64:
        assert all(same(a, b) for a, b in zip(one, two)), "2 threads differ from 1"
    else:
        for a, b in zip(one, two):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@profile(300)
@given(gru_cases(vjp=True), st.integers(2, 6))
def test_threaded_kernels_property(c, n_threads):
    """Random small problems with cygru's threads forced on (minimum work per thread
    lowered to 1, so even H=1 is split, uneven tails included): outputs and gradients
    bit-identical across thread counts above one, and equal to one thread's up to the
    last bits."""
    if not hasattr(cygru._cpu, "MIN_WORK_PER_THREAD"):
        pytest.skip("no cygru._cpu.MIN_WORK_PER_THREAD")
    assume(c["fault"] == "none" and not (c["bidirectional"] and c["reverse"]))
    c = dict(c, dtype="float32")
    rng = np.random.default_rng(c["seed"])
    m, _ = make_gru(c)
    x, h0, lengths, unbatched, T, B = build_gru_call(c, rng, m)
    d_out = rng.standard_normal(expected_shapes(c, m, T, B, unbatched)[0])

    def run():
        m.zero_grad()
        out, h_n = m(x, h0, lengths)
        (o2, hn2), bw = m.vjp(x, h0, lengths)
        dx, dh0 = bw(d_out, None)
        return [out, h_n, o2, hn2, dx, dh0] + [m.grads[k].copy() for k in sorted(m.grads)]

    saved = cygru._cpu.MIN_WORK_PER_THREAD, getattr(cygru._cpu, "WAKE_COST", None)
    try:
        with _cygru_threads(1):
            one = run()
        cygru._cpu.MIN_WORK_PER_THREAD = 1
        if saved[1] is not None:
            cygru._cpu.WAKE_COST = 0  # even a call of a few multiply-adds starts threads
        with _cygru_threads(2):
            two = run()
        with _cygru_threads(n_threads):
            many = run()
    finally:
        cygru._cpu.MIN_WORK_PER_THREAD = saved[0]
        if saved[1] is not None:
            cygru._cpu.WAKE_COST = saved[1]
    # every count above one: bit-identical; one thread (BLAS projection): last bits
    assert all(same(a, b) for a, b in zip(two, many)), f"{n_threads} threads differ from 2"
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# 11. threads
# ---------------------------------------------------------------------------------------------

N_THREADS = 8


def _in_threads(fn, n=N_THREADS):
    barrier = threading.Barrier(n)
    errors = []

    def run(i):
        try:
            barrier.wait()
            fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]


def test_threads_forward_bitwise_equal_to_serial():
    rng = np.random.default_rng(5)
    gru = cygru.GRU(5, 12, 2, bidirectional=True, seed=0)
    gru64 = cygru.GRU(5, 12, reset_after=False, dtype=np.float64, seed=0)
    cell = cygru.GRUCell(5, 12, seed=0)
    xs = [rng.standard_normal((4, 1 + i % 10, 5)).astype(np.float32) for i in range(16)]
    lens = [rng.integers(1, 5, x.shape[1]) for x in xs]
    serial = [(gru(x, lengths=l), gru64(x), cell(x[0])) for x, l in zip(xs, lens)]
    bad = []

    def work(tid):
        for i in range(1000):
            k = (i + tid) % len(xs)
            (o, h), o64, c = gru(xs[k], lengths=lens[k]), gru64(xs[k]), cell(xs[k][0])
            (so, sh), so64, sc = serial[k]
            if not (same(o, so) and same(h, sh) and same(o64[0], so64[0]) and same(c, sc)):
                bad.append((tid, i))

    _in_threads(work)
    assert not bad, f"{len(bad)} of {N_THREADS * 1000} threaded calls differ from serial"


def test_threads_backward_accumulate_like_serial():
    rng = np.random.default_rng(6)
    kw = dict(num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    xs = [rng.standard_normal((5, 3, 4)) for _ in range(N_THREADS)]
    ds = [rng.standard_normal((5, 3, 10)) for _ in range(N_THREADS)]
    per_thread = 100
    serial = cygru.GRU(4, 5, **kw)
    want_dx = []
    for tid in range(N_THREADS):
        for _ in range(per_thread):
            (o, hn), bw = serial.vjp(xs[tid], lengths=[5, 2, 4])
            dx, dh0 = bw(ds[tid], None)
        want_dx.append((dx, dh0))
    shared = cygru.GRU(4, 5, **kw)
    got_dx = [None] * N_THREADS

    def work(tid):
        for _ in range(per_thread):
            (o, hn), bw = shared.vjp(xs[tid], lengths=[5, 2, 4])
            got_dx[tid] = bw(ds[tid], None)

    _in_threads(work)
    for tid in range(N_THREADS):
        assert same(got_dx[tid][0], want_dx[tid][0]) and same(got_dx[tid][1], want_dx[tid][1])
    for k in serial.grads:
        a, b = serial.grads[k], shared.grads[k]
        assert np.abs(a - b).max() <= 1e-12 * max(1.0, np.abs(a).max()), k
    # a GRUCell too
    cs, cp = (
        cygru.GRUCell(4, 5, dtype=np.float64, seed=0),
        cygru.GRUCell(4, 5, dtype=np.float64, seed=0),
    )
    for tid in range(N_THREADS):
        for _ in range(per_thread):
            h, bw = cs.vjp(xs[tid][0])
            bw(ds[tid][0, :, :5])

    def cwork(tid):
        for _ in range(per_thread):
            h, bw = cp.vjp(xs[tid][0])
            bw(ds[tid][0, :, :5])

    _in_threads(cwork)
    for k in cs.grads:
        assert np.abs(cs.grads[k] - cp.grads[k]).max() <= 1e-12 * max(
            1.0, np.abs(cs.grads[k]).max()
        )


def test_threads_dropout_streams_are_safe():
    """vjp with dropout from 8 threads: every mask is well formed (the shared Generator is
    used under the module's lock)."""
    gru = cygru.GRU(4, 6, 3, dropout=0.5, seed=0)
    x = np.ones((5, 3, 4), np.float32)
    bad = []

    def work(tid):
        for _ in range(100):
            (o, hn), bw = gru.vjp(x)
            for k in bw.dropout_masks:
                if k.shape != (5, 3, 6) or not set(np.unique(k)) <= {0.0, 2.0}:
                    bad.append(tid)
            bw(o, None)

    _in_threads(work)
    assert not bad


# ---------------------------------------------------------------------------------------------
# 12. crashes found by this file (subprocesses), and clarity of error messages
# ---------------------------------------------------------------------------------------------


def _rss_of(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(code, timeout, watchdog=None, rss_growth=1536 << 20):
    """Run `code` in a fresh interpreter with cygru importable; return (returncode, output).
    With `watchdog`, a child still alive `watchdog` seconds after printing 'CALLING', or
    whose resident memory grew by `rss_growth` since, is killed and reported as "running":
    it did not crash, and a correct library would now be busy with a huge, legal problem.
    (Under AddressSanitizer a crash is an exit status of 1 with a report, not a signal,
    and a huge allocation costs ~2 GiB of shadow memory first: more room there.)"""
    if os.environ.get("CYGRU_SANITIZER") == "asan":
        rss_growth += 4 << 30
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if watchdog is None:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    lines = []
    while True:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("CALLING"):
            t_end = time.time() + watchdog
            rss_cap = _rss_of(p.pid) + rss_growth
            while p.poll() is None:
                if time.time() > t_end or _rss_of(p.pid) > rss_cap:
                    p.kill()
                    p.wait()
                    return "running", "".join(lines)
                time.sleep(0.05)
            break
    rest, _ = p.communicate(timeout=timeout)
    return p.returncode, "".join(lines) + rest


def _died(rc):
    return isinstance(rc, int) and rc < 0 or rc in (134, 136, 139)


def test_regression_changing_options_after_construction_cannot_corrupt_memory():
    """Changing an option on a built module must not make the kernels read out of bounds.
    (Found by this file: options were plain attributes that the compiled path trusted, so
    `gru.input_size = 2_000_000` then a matching x read W_ih far out of bounds, SIGSEGV;
    `gru.hidden_size = 1000` and `GRUCell.hidden_size` likewise.)"""
    code = """
        import sys, numpy as np, cygru
        case = sys.argv[1]
        try:
            if case == "gru.input_size":
                m = cygru.GRU(3, 4)
                m.input_size = 2_000_000
                m(np.ones((2, 1, 2_000_000), np.float32))
            elif case == "gru.hidden_size":
                m = cygru.GRU(3, 4)
                m.hidden_size = 1000
                m(np.ones((2, 1, 3), np.float32))
            elif case == "cell.hidden_size":
                m = cygru.GRUCell(3, 4)
                m.hidden_size = 1000
                m.vjp(np.ones((2, 3), np.float32))
        except (ValueError, TypeError, RuntimeError, AttributeError, KeyError) as e:
            print("raised", type(e).__name__, e); sys.exit(0)
        print("accepted: returned results from inconsistent weights"); sys.exit(3)
    """
    problems = []
    for case in ("gru.input_size", "gru.hidden_size", "cell.hidden_size"):
        env_code = "import sys; sys.argv = ['x', %r]\n" % case + textwrap.dedent(code)
        rc, out = _child(env_code, timeout=120)
        if rc != 0:
            problems.append(f"{case}: rc={rc} ({'crashed' if _died(rc) else 'wrong'}) {out[-200:]}")
    assert not problems, "\n".join(problems)


def test_regression_batch_first_time_stride_int_overflow():
    """A batch_first output whose batch stride T*D*H passes 2**31 (B=2, T=2**25, H=64:
    T*B and every BLAS argument fit in int; the output is 16 GiB) must not crash. (Found
    by this file: _cpu.gru_forward computed the stride in C int, it wrapped negative and
    row b=1 was written 8 GiB before the output: SIGSEGV at the first step.) Runs in a
    subprocess, killed after a few seconds of (legal) work."""
    code = """
        import numpy as np, cygru, sys
        T, B, H = 2**25, 2, 64
        m = cygru.GRU(1, H, batch_first=True, seed=0)
        x = np.ones((B, T, 1), np.float32)
        print("CALLING", flush=True)
        try:
            m(x)
        except (ValueError, MemoryError) as e:
            print("raised", type(e).__name__, e)
    """
    rc, out = _child(code, timeout=120, watchdog=30)
    assert rc in (0, "running"), (
        f"the process {'crashed' if _died(rc) else 'failed'} (rc={rc}): {out[-600:]}"
    )


@pytest.mark.skipif(
    os.environ.get("CYGRU_BIG_MEMORY_TESTS") != "1",
    reason="needs ~6 GiB of RAM and ~1 min; set CYGRU_BIG_MEMORY_TESTS=1",
)
def test_regression_backward_dgi_size_int_overflow():
    """The backward of a problem with T*B*D*3H = 2**32 + 2048 (T=1,398,102, B=1, H=512,
    bidirectional; every BLAS argument fits in int) must work. (Found by this file:
    _cpu.gru_backward allocated ``np.zeros(T * B * D * 3 * H)`` with C-int operands; the
    product wrapped to 2048, an 8 KiB buffer the kernel overflowed: SIGSEGV. In
    [2**31, 2**32) it wrapped negative: 'ValueError: negative dimensions are not
    allowed'.)"""
    code = """
        import numpy as np, cygru
        T, B, H = 1_398_102, 1, 512
        m = cygru.GRU(1, H, bidirectional=True, seed=0)
        (out, h), bw = m.vjp(np.ones((T, B, 1), np.float32), lengths=np.array([1]))
        try:
            dx, dh0 = bw(None, np.ones((2, B, H), np.float32))
            print("ok", dx.shape, float(np.abs(dx).max()))
        except (ValueError, MemoryError) as e:
            print("raised", type(e).__name__, e)
            raise SystemExit(5 if "negative dimensions" in str(e) else 0)
    """
    rc, out = _child(code, timeout=600)
    assert rc == 0, f"rc={rc}: {out[-400:]}"


def test_regression_failed_backward_does_not_consume_the_closure():
    """A backward call rejected by validation (wrong d_output shape) must leave the closure
    usable: nothing was computed. (Found by this file: the saved activations were dropped
    before the arguments were checked, so the corrected call raised 'already called'.)"""
    m = cygru.GRU(3, 4, seed=0)
    (o, h), bw = m.vjp(np.ones((5, 2, 3)))
    with pytest.raises(ValueError):
        bw(np.ones((5, 2, 7)), None)
    dx, dh0 = bw(np.ones((5, 2, 4)), None)
    assert dx.shape == (5, 2, 3)
    c = cygru.GRUCell(3, 4, seed=0)
    h1, cbw = c.vjp(np.ones(3))
    with pytest.raises(ValueError):
        cbw(np.ones(5))
    assert cbw(np.ones(4))[0].shape == (3,)


def test_regression_error_messages_describe_the_callers_arguments():
    """Error messages must describe what the caller passed, not internal reshapes. (Found
    by this file: GRUCell.vjp's backward with a d_h1 of shape (5,) where (4,) was expected
    reported "expected d_output of the output's shape (1, 4), got (1, 5)"; a 0-d x was
    reported as "got 1 dimensions, shape (1)".)"""
    problems = []
    c = cygru.GRUCell(3, 4, seed=0)
    for x, d in ((np.ones(3), np.ones(5)), (np.ones((2, 3)), np.ones((2, 5)))):
        _, bw = c.vjp(x)
        try:
            bw(d)
        except ValueError as e:
            msg = str(e)
            if "(1, " in msg or "d_output" in msg:
                problems.append(f"GRUCell backward d_h1 {d.shape}: {msg}")
    g = cygru.GRU(3, 4)
    try:
        g(np.float32(1.0))
    except ValueError as e:
        if not ("0 dimensions" in str(e) or "shape ()" in str(e)):
            problems.append(f"GRU with 0-d x: {e}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# 9. hostile use (issue 13): crafted pickles, buffers reused before backward, weights loaded
#    during calls, read-only inputs, arguments at and past their bounds
# ---------------------------------------------------------------------------------------------


class _Crafted:
    """Pickles as a cygru module of class `cls` with an arbitrary state, naming only the
    globals a genuine pickle does (what protocols 0 and 1 write: copyreg._reconstructor,
    the class, numpy's)."""

    def __init__(self, cls, state):
        self.cls, self.state = cls, state

    def __reduce__(self):
        import copyreg

        return copyreg._reconstructor, (self.cls, object, None), self.state


def _crafted(module, **changes):
    state = module.__getstate__()
    for path, value in changes.items():
        where = state
        keys = path.split("__")
        for k in keys[:-1]:
            where = where[k]
        where[keys[-1]] = value
    return pickle.dumps(_Crafted(type(module), state))


def test_regression_unpickling_validates_its_state():
    """A pickle cannot pair weights with sizes they do not have. (Regression:
    __setstate__ was __dict__.update(state): hidden_size=4000 beside 21x7 weights
    segfaulted, float16 or too-small weights read out of bounds.)"""
    g = cygru.GRU(7, 7, seed=0)
    c = cygru.GRUCell(3, 4, seed=0)
    small = np.zeros((6, 7), np.float32)
    cases = [
        (
            _crafted(g, options__hidden_size=4000),
            ValueError,
            r"weight_ih_l0 \(unpickling\) must have shape",
        ),
        (
            _crafted(g, options__input_size=70000),
            ValueError,
            r"weight_ih_l0 \(unpickling\) must have shape",
        ),
        (
            _crafted(g, params__weight_hh_l0=small),
            ValueError,
            r"weight_hh_l0 \(unpickling\) must have shape",
        ),
        (_crafted(g, params__weight_hh_l0="x"), TypeError, "weight_hh_l0"),
        (
            _crafted(g, options__num_layers=2),
            ValueError,
            "the options define 8 parameters, the state holds 4",
        ),
        # a huge layer count fails from the counts alone, before building anything
        (_crafted(g, options__num_layers=10**7), ValueError, "the options define"),
        (_crafted(g, params=[1, 2]), TypeError, "params must be a dict"),
        (_crafted(g, options__num_layers=-1), ValueError, "num_layers must be >= 1"),
        (_crafted(g, options__dtype="float16"), TypeError, "float32 or float64"),
        (_crafted(g, options__dropout=7.0), ValueError, "dropout"),
        (
            _crafted(g, options__reverse=True, options__bidirectional=True),
            ValueError,
            "single direction",
        ),
        (_crafted(g, grads={"weight_ih_l0": small}), ValueError, "missing key"),
        (
            _crafted(g, grads={k: np.zeros((1, 1)) for k in g.state_dict()}),
            ValueError,
            r"the gradient of weight_ih_l0 \(unpickling\)",
        ),
        (_crafted(g, dropout_rng={"bit_generator": "MT19937"}), ValueError, "dropout stream"),
        (_crafted(g, dropout_rng__state__state=2**300), ValueError, "dropout stream"),
        (_crafted(g, dropout_rng__state__state=-1), ValueError, "dropout stream"),
        (_crafted(g, extra={"_shapes": {}}), ValueError, "extra attributes"),
        # attributes that would replace validated state or behaviour (found by a
        # hostile review: "__dict__" swapped the whole validated instance dict)
        (_crafted(g, extra={"__dict__": {"hidden_size": 4000}}), ValueError, "extra attributes"),
        (_crafted(g, extra={"__class__": cygru.GRUCell}), ValueError, "extra attributes"),
        (_crafted(g, extra={"_params": dict}), ValueError, "extra attributes"),
        (_crafted(g, extra={"vjp": 1}), ValueError, "extra attributes"),
        (_crafted(g, extra={"grads": 1}), ValueError, "extra attributes"),
        (_crafted(g, extra={1: 2}), ValueError, "extra attributes"),
        (_crafted(g, extra=[("tag", 1)]), TypeError, "extra must be a dict"),
        (_crafted(g, options__bias="no"), TypeError, "bias must be True or False"),
        (
            _crafted(g, options__bidirectional=np.array([1, 0])),
            TypeError,
            "bidirectional must be True or False",
        ),
        (_crafted(g, format=99), ValueError, "unknown state format"),
        (
            _crafted(c, options__hidden_size=400),
            ValueError,
            r"weight_ih \(unpickling\) must have shape",
        ),
        (_crafted(c, params__weight_hh=np.zeros(3, np.float32)), ValueError, "weight_hh"),
    ]
    for blob, exc, words in cases:
        with pytest.raises(exc, match=words):
            pickle.loads(blob)
    # the legacy format (the instance dict of cygru before format 1) is validated alike
    legacy = dict(g.__dict__)
    legacy.pop("_lock"), legacy.pop("_param_lock")
    legacy["hidden_size"] = 4000
    with pytest.raises(ValueError, match=r"weight_ih_l0 \(unpickling\) must have shape"):
        pickle.loads(pickle.dumps(_Crafted(cygru.GRU, legacy)))
    legacy["hidden_size"] = 7
    with pytest.raises(ValueError, match="extra attributes"):
        pickle.loads(pickle.dumps(_Crafted(cygru.GRU, dict(legacy, __dict__={}))))
    ok = pickle.loads(pickle.dumps(_Crafted(cygru.GRU, legacy)))
    x = np.ones((3, 2, 7), np.float32)
    assert same(ok(x)[0], g(x)[0])


def test_unpickled_float16_weights_are_converted_like_load_state_dict():
    g = cygru.GRU(3, 4, seed=0)
    half = {k: v.astype(np.float16) for k, v in g.state_dict().items()}
    u = pickle.loads(_crafted(g, params=half))
    ref_ = cygru.GRU(3, 4, seed=1)
    ref_.load_state_dict(half)
    assert all(a.dtype == np.float32 for _, a in u.named_parameters())
    x = np.ones((2, 1, 3), np.float32)
    assert same(u(x)[0], ref_(x)[0])


def test_pickle_holds_options_and_weights_only():
    """No locks, caches or thread state in a pickle; untouched gradients are not stored,
    so a pickle is the weights' bytes plus a small constant."""
    g = cygru.GRU(64, 128, num_layers=2, bidirectional=True, seed=0)
    weights = sum(a.nbytes for _, a in g.named_parameters())
    blob = pickle.dumps(g, pickle.HIGHEST_PROTOCOL)
    assert len(blob) < weights + 8192, (len(blob), weights)
    state = g.__getstate__()
    assert set(state) == {"format", "options", "params", "grads", "dropout_rng", "device", "extra"}
    assert state["grads"] is None and state["extra"] == {}


class Tagged(cygru.GRU):
    """A user's subclass with attributes of its own."""


def test_subclass_attributes_survive_pickling():
    t = Tagged(3, 4, seed=0)
    t.tag = "hello"
    u = pickle.loads(pickle.dumps(t))
    assert type(u) is Tagged and u.tag == "hello"


_MODES = [
    ("GRU", np.float32),
    ("GRU", np.float64),
    ("GRUCell", np.float32),
    ("GRUCell", np.float64),
]


@pytest.mark.parametrize("kind,dtype", _MODES)
def test_regression_backward_ignores_buffers_refilled_after_vjp(kind, dtype):
    """Refilling the x buffer handed to vjp (as a data loader does), or updating the
    weights in place, before calling backward leaves the gradients those of the forward
    that ran. (Regression: vjp kept the caller's x and the live weights: the weight
    gradients were off by up to 8.9 and dx by 0.9, silently.)"""
    rng = np.random.default_rng(0)
    if kind == "GRU":
        m = cygru.GRU(5, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
        x = rng.standard_normal((4, 3, 5)).astype(dtype)
    else:
        m = cygru.GRUCell(5, 6, dtype=dtype, seed=0)
        x = rng.standard_normal((3, 5)).astype(dtype)

    def run(mutate):
        m2 = copy.deepcopy(m)
        buf = x.copy()
        out, bw = m2.vjp(buf)
        out = out[0] if kind == "GRU" else out
        if mutate:
            buf[...] = rng.standard_normal(buf.shape)  # the loader's next batch
            for _, p in m2.named_parameters():
                p -= 0.5 * np.sign(p)  # an optimiser step, in place
        g = np.linspace(-1, 1, out.size).reshape(out.shape)
        res = bw(g, None) if kind == "GRU" else bw(g)
        return res, {k: v.copy() for k, v in m2.grads.items()}

    (dx0, dh0), grads0 = run(False)
    (dx1, dh1), grads1 = run(True)
    assert same(dx0, dx1) and same(dh0, dh1)
    for k in grads0:
        assert same(grads0[k], grads1[k]), k


@pytest.mark.parametrize("kind", ["GRU", "GRUCell"])
def test_regression_load_state_dict_is_atomic_for_concurrent_calls(kind):
    """Calls on 8 threads while the main thread swaps between two weight sets: every
    output is exactly that of one set or the other. (Regression: 8 of 2400 outputs
    matched neither: a call read some weights before a load and some after.)"""
    if kind == "GRU":
        make = lambda s: cygru.GRU(6, 16, num_layers=2, bidirectional=True, seed=s)  # noqa: E731
        x = np.random.default_rng(0).standard_normal((3, 2, 6)).astype(np.float32)
        call = lambda m: m(x)[0]  # noqa: E731
    else:
        make = lambda s: cygru.GRUCell(6, 16, seed=s)  # noqa: E731
        x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
        call = lambda m: m(x)  # noqa: E731
    a, b = make(1), make(2)
    sd = [a.state_dict(), b.state_dict()]
    expected = [call(a), call(b)]
    m = make(1)
    stop = threading.Event()
    bad, counts = [], []

    def worker():
        n = 0
        while not stop.is_set() and n < 3000:
            out = call(m)
            if not (same(out, expected[0]) or same(out, expected[1])):
                bad.append(out)
            sd_now = m.state_dict()
            if not (
                all(same(sd_now[k], sd[0][k]) for k in sd_now)
                or all(same(sd_now[k], sd[1][k]) for k in sd_now)
            ):
                bad.append("state_dict mixed two loads")
            n += 1
        counts.append(n)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    t_end = time.time() + 3.0
    i = 0
    while time.time() < t_end:
        m.load_state_dict(sd[i % 2])
        i += 1
    stop.set()
    for t in threads:
        t.join()
    assert not bad, f"{len(bad)} calls saw a mix of two weight sets"
    assert sum(counts) > 100 and i > 100


def test_regression_functional_gru_refuses_reverse_with_two_directions():
    g = cygru.GRU(3, 4, bidirectional=True, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match="reverse=True needs a single direction"):
        cygru.functional.gru(x, g.state_dict(), bidirectional=True, reverse=True)


@pytest.mark.parametrize(
    "bad,exc",
    [(0, ValueError), (-1, ValueError), ("2", TypeError), (1.0, TypeError), (True, TypeError)],
)
def test_regression_functional_gru_num_layers_checked(bad, exc):
    """(Regression: num_layers=0 raised UnboundLocalError.)"""
    g = cygru.GRU(3, 4, seed=0)
    with pytest.raises(exc, match="cygru.functional.gru: num_layers"):
        cygru.functional.gru(np.ones((2, 1, 3), np.float32), g.state_dict(), num_layers=bad)


@pytest.mark.parametrize(
    "bad,exc",
    [
        (-1, ValueError),
        (1.5, TypeError),
        ("7", TypeError),
        (True, TypeError),
        (np.int64(-2), ValueError),
    ],
)
@pytest.mark.parametrize("cls", [cygru.GRU, cygru.GRUCell])
def test_regression_seed_errors_name_cygru_and_seed(cls, bad, exc):
    with pytest.raises(exc, match=rf"{cls.__name__}: seed must be None or a non-negative integer"):
        cls(5, 7, seed=bad)
    # NumPy integers are seeds like Python's
    a, b = cls(5, 7, seed=np.int64(3)), cls(5, 7, seed=3)
    assert all(same(p, q) for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()))


def test_regression_huge_hidden_size_refused_at_construction():
    """GRU(1, 2**29) ran 40 s and took 18 GB before MemoryError; now it is refused at
    once (forward would refuse its 4*H > BLAS's int anyway), and sizes whose weights
    cannot fit this machine's memory raise MemoryError before allocating anything."""
    t0 = time.perf_counter()
    for cls in (cygru.GRU, cygru.GRUCell):
        with pytest.raises(ValueError, match=r"4\*hidden_size.*does not fit BLAS's 32-bit int"):
            cls(1, 2**29)
    with pytest.raises(ValueError, match=r"4\*hidden_size\*directions"):
        cygru.GRU(1, 2**28, bidirectional=True)
    with pytest.raises(MemoryError, match="more than this machine's"):
        cygru.GRU(1, 2**27)
    with pytest.raises(MemoryError, match="more than this machine's"):
        cygru.GRUCell(2**31 - 1, 2**20)
    assert time.perf_counter() - t0 < 30  # generous: it is instant, not tens of seconds


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_read_only_inputs_everywhere(tmp_path, dtype):
    """Read-only arrays (np.frombuffer, np.load(mmap_mode='r'), views of JAX or ONNX
    arrays) work at every entry point, with the same results as writable ones.
    (Regression: GRU(), GRU.vjp, GRUCell.vjp and float64 functional.gru with read-only
    weights raised Cython's 'buffer source array is read-only'.)"""
    rng = np.random.default_rng(0)
    T, B, I, H = 4, 3, 5, 6
    g = cygru.GRU(I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((4, B, H)).astype(dtype)
    lengths = np.array([4, 1, 3])
    x_ro = np.frombuffer(x.tobytes(), dtype).reshape(x.shape)
    assert not x_ro.flags.writeable
    np.save(tmp_path / "x.npy", x)
    x_map = np.load(tmp_path / "x.npy", mmap_mode="r")
    h0_ro, len_ro = _read_only(h0), _read_only(lengths)
    want = g(x, h0, lengths)
    for xr in (x_ro, x_map):
        got = g(xr, h0_ro, len_ro)
        assert same(got[0], want[0]) and same(got[1], want[1])
    # vjp and backward with read-only output gradients
    (o, hn), bw = g.vjp(x_ro, h0_ro, len_ro)
    d_o, d_hn = _read_only(np.ones_like(o)), _read_only(np.ones_like(hn))
    g.zero_grad()
    r_ro = bw(d_o, d_hn)
    grads_ro = {k: v.copy() for k, v in g.grads.items()}
    (o2, hn2), bw2 = g.vjp(x, h0, lengths)
    g.zero_grad()
    r = bw2(np.ones_like(o), np.ones_like(hn))
    assert same(o, o2) and same(r_ro[0], r[0]) and same(r_ro[1], r[1])
    assert all(same(grads_ro[k], g.grads[k]) for k in grads_ro)
    # batch_first, unbatched
    gb = copy.deepcopy(g)
    gb.batch_first = True
    xb = _read_only(x.transpose(1, 0, 2))
    assert same(gb(xb, h0_ro)[0], gb(np.ascontiguousarray(x.transpose(1, 0, 2)), h0)[0])
    assert same(g(_read_only(x[:, 0]))[0], g(x[:, 0])[0])
    # functional.gru with read-only weights (float64 ran on BLAS through a memoryview)
    sd_ro = {k: _read_only(v) for k, v in g.state_dict().items()}
    got = cygru.functional.gru(x_ro, sd_ro, h0_ro, num_layers=2, bidirectional=True, lengths=len_ro)
    assert same(got[0], want[0]) and same(got[1], want[1])
    # load_state_dict and parameter assignment from read-only arrays (copied in, writable)
    g2 = cygru.GRU(I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=5)
    g2.load_state_dict(sd_ro)
    assert all(p.flags.writeable for _, p in g2.named_parameters())
    g2.weight_hh_l0 = sd_ro["weight_hh_l0"]
    assert g2.weight_hh_l0.flags.writeable
    # GRUCell: call, vjp, backward, functional.gru_cell
    c = cygru.GRUCell(I, H, dtype=dtype, seed=0)
    xc, hc = x[0], h0[0]
    xc_ro, hc_ro = _read_only(xc), _read_only(hc)
    assert same(c(xc_ro, hc_ro), c(xc, hc))
    assert same(c(xc_ro[0], hc_ro[0]), c(xc[0], hc[0]))
    h1, cbw = c.vjp(xc_ro, hc_ro)
    c.zero_grad()
    dxc_ro = cbw(_read_only(np.ones_like(h1)))
    h1b, cbw2 = c.vjp(xc, hc)
    assert same(h1, h1b) and same(dxc_ro[0], cbw2(np.ones_like(h1))[0])
    w = {k: _read_only(v) for k, v in c.state_dict().items()}
    got = cygru.functional.gru_cell(
        xc_ro, hc_ro, w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"]
    )
    assert same(got, c(xc, hc))
    # gradcheck on read-only input (float64 only: a finite-difference check)
    if dtype == np.float64:
        small = cygru.GRU(2, 3, dtype=dtype, seed=0)
        assert cygru.gradcheck(small, _read_only(rng.standard_normal((3, 2, 2))))
    # the caller's read-only arrays are still what they were
    assert same(x_ro, x) and same(h0_ro, h0)


def test_module_without_state_says_so():
    """A crafted pickle without a state (no BUILD) gives an uninitialised object: using it
    says so instead of failing on some internal name."""
    u = cygru.GRU.__new__(cygru.GRU)
    with pytest.raises(AttributeError, match="never initialised"):
        u(np.ones((2, 1, 3), np.float32))
    assert not hasattr(u, "__deepcopy__")


@pytest.mark.parametrize("name", ["bias", "batch_first", "bidirectional", "reset_after", "reverse"])
@pytest.mark.parametrize("bad", ["no", "", np.array([1, 0]), 2, None, 0.5])
def test_boolean_options_refuse_non_booleans(name, bad):
    """``bias="no"`` used to mean True, an array raised NumPy's ambiguous-truth error."""
    with pytest.raises(TypeError, match=f"cygru.GRU: {name} must be True or False"):
        cygru.GRU(3, 4, **{name: bad})
    if name != "bias":
        g = cygru.GRU(3, 4, seed=0)
        with pytest.raises(TypeError, match=f"cygru.functional.gru: {name} must be True or False"):
            cygru.functional.gru(np.ones((2, 1, 3), np.float32), g.state_dict(), **{name: bad})


@pytest.mark.parametrize("good", [True, False, 1, 0, np.bool_(True), np.int64(1)])
def test_boolean_options_accept_booleans_and_0_1(good):
    g = cygru.GRU(3, 4, bias=good, batch_first=good, seed=0)
    assert g.bias is bool(good) and g.batch_first is bool(good)


def test_huge_layer_count_refused_at_once():
    """GRU(1, 1, num_layers=2**31-1) ran for minutes and ended in an empty MemoryError;
    the memory check now counts from the sizes, before any list of shapes is built."""
    t0 = time.perf_counter()
    with pytest.raises(MemoryError, match="fewer layers"):
        cygru.GRU(1, 1, num_layers=2**31 - 1)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "made,call",
    [
        (dict(num_layers=2), dict()),
        (dict(bidirectional=True), dict()),
        (dict(num_layers=2, bidirectional=True), dict(num_layers=2)),
    ],
)
def test_regression_functional_gru_refuses_weights_it_would_not_use(made, call):
    """functional.gru with a forgotten num_layers or bidirectional ran a smaller model
    silently (outputs off by 0.6): unused keys are now an error naming them."""
    g = cygru.GRU(4, 5, seed=0, **made)
    x = np.ones((3, 2, 4), np.float32)
    with pytest.raises(ValueError, match="do not use; pass the options the weights were made"):
        cygru.functional.gru(x, g.state_dict(), **call)
    out, _ = cygru.functional.gru(x, g.state_dict(), **made)
    assert same(out, g(x)[0])

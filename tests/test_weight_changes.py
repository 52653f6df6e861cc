"""A weight that changes is never used stale (issue 24, item 3).

cygru's modules keep no copy of their weights between calls (no packed panels, no
prepared buffers): every call reads the live parameter arrays. So every way a weight can
change is seen by the very next call, one-step streaming calls and GRUCell steps
included. Each test here changes a module's weights one way, and checks that the next
call gives, bit for bit, what a fresh module built with the new weights gives (and
that it differs from the call before the change).
"""

import threading

import numpy as np
import pytest

import cygru
from cygru.optim import SGD


def _fresh_like(m):
    """A new module of m's kind and options, loaded with copies of m's weights."""
    if isinstance(m, cygru.GRUCell):
        f = cygru.GRUCell(
            m.input_size, m.hidden_size, m.bias, dtype=m.dtype, reset_after=m.reset_after
        )
    else:
        f = cygru.GRU(
            m.input_size,
            m.hidden_size,
            m.num_layers,
            m.bias,
            bidirectional=m.num_directions == 2,
            dtype=m.dtype,
            reset_after=m.reset_after,
        )
    f.load_state_dict(m.state_dict())
    return f


def _inputs(m, T, B, seed=0):
    rng = np.random.default_rng(seed)
    if isinstance(m, cygru.GRUCell):
        x = rng.standard_normal((B, m.input_size)).astype(m.dtype)
        h = rng.standard_normal((B, m.hidden_size)).astype(m.dtype)
    else:
        x = rng.standard_normal((T, B, m.input_size)).astype(m.dtype)
        h = rng.standard_normal((m.num_layers * m.num_directions, B, m.hidden_size))
        h = h.astype(m.dtype)
    return x, h


def _run(m, x, h):
    out = m(x, h)
    return out if isinstance(m, cygru.GRUCell) else out[0]


def _check_seen(m, x, h, before):
    """m's next call uses its current weights: equal to a fresh module's, not to the
    result from before the change."""
    got = _run(m, x, h)
    want = _run(_fresh_like(m), x, h)
    assert np.array_equal(got, want)
    assert not np.array_equal(got, before)


# T=1 is a streaming call; B=1 and B=5 take the small- and the large-batch products
SHAPES = [(1, 1), (6, 1), (1, 5), (6, 5)]
CASES = [(k, T, B) for k in ("gru", "gru-2-layer-bi") for T, B in SHAPES]
CASES += [("cell", 1, B) for B in (1, 5)]


def _w(m, name):
    """The live array of parameter `name` of layer 0 (a cell's names have no suffix)."""
    return getattr(m, name if isinstance(m, cygru.GRUCell) else name + "_l0")


def _set_w(m, name, value):
    setattr(m, name if isinstance(m, cygru.GRUCell) else name + "_l0", value)


def _module(kind, dtype, reset_after):
    if kind == "cell":
        return cygru.GRUCell(7, 20, dtype=dtype, reset_after=reset_after, seed=1)
    if kind == "gru":
        return cygru.GRU(7, 20, dtype=dtype, reset_after=reset_after, seed=1)
    return cygru.GRU(7, 20, 2, bidirectional=True, dtype=dtype, reset_after=reset_after, seed=1)


def _changes():
    """(name, fn(m)) for every way a weight changes."""

    def in_place(m):
        _w(m, "weight_hh")[...] *= 0.5

    def in_place_one_element(m):
        _w(m, "weight_ih")[3, 2] += 0.25

    def copyto_through_parameters(m):
        p = next(iter(m.parameters()))  # weight_ih_l0, live
        np.copyto(p, p[::-1].copy())

    def through_named_parameters(m):
        for name, p in m.named_parameters():
            if name.startswith("bias_hh"):
                p += 0.125

    def assigned(m):
        _set_w(m, "weight_hh", _w(m, "weight_hh") * 0.75)

    def loaded(m):
        sd = m.state_dict()
        key = "weight_ih" if isinstance(m, cygru.GRUCell) else "weight_ih_l0"
        sd[key] = sd[key][:, ::-1].copy()
        m.load_state_dict(sd)

    def reset(m):
        m.reset_parameters(seed=123)

    def optimizer_step(m):
        x, h = _inputs(m, 3, 2, seed=9)
        if isinstance(m, cygru.GRUCell):
            h1, backward = m.vjp(x, h)
            m.zero_grad()
            backward(np.ones_like(h1))
        else:
            (out, _), backward = m.vjp(x, h)
            m.zero_grad()
            backward(np.ones_like(out), None)
        SGD(m, lr=0.5).step()

    def dtype_round_trip(m):
        # double() then float() (or the reverse) replaces every array; the values only
        # change by rounding, so change one weight as well
        m.double() if m.dtype == np.float32 else m.float()
        _w(m, "weight_hh")[0, 0] += 1.0

    def changed_on_another_thread(m):
        def work():
            _w(m, "weight_hh")[...] = _w(m, "weight_hh")[::-1].copy()

        t = threading.Thread(target=work)
        t.start()
        t.join()

    return [
        (f.__name__, f)
        for f in (
            in_place,
            in_place_one_element,
            copyto_through_parameters,
            through_named_parameters,
            assigned,
            loaded,
            reset,
            optimizer_step,
            dtype_round_trip,
            changed_on_another_thread,
        )
    ]


@pytest.mark.parametrize("change", _changes(), ids=lambda c: c[0])
@pytest.mark.parametrize("kind,T,B", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_changed_weight_is_seen_by_the_next_call(change, kind, T, B, dtype):
    m = _module(kind, dtype, reset_after=True)
    x, h = _inputs(m, T, B)
    for _ in range(3):  # warm: any per-module state would exist now
        before = _run(m, x, h)
    change[1](m)
    x, h = _inputs(m, T, B)  # (the module's dtype may have changed)
    _check_seen(m, x, h, before.astype(m.dtype))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("B", [1, 4])
def test_a_stream_sees_a_change_between_frames(reset_after, B):
    """A one-step stream: frames after an in-place change use the new weights; the
    frames before it stay as they were."""
    m = cygru.GRU(5, 24, 2, reset_after=reset_after, seed=3)
    rng = np.random.default_rng(4)
    frames = rng.standard_normal((8, 1, B, 5)).astype(np.float32)
    h = np.zeros((2, B, 24), np.float32)
    outs = []
    for k, xf in enumerate(frames):
        if k == 4:
            m.weight_hh_l1[...] = m.weight_hh_l1 * -1.0
        o, h = m(xf, h)
        outs.append(o)
    # the same stream computed as two long calls around the change
    m2 = cygru.GRU(5, 24, 2, reset_after=reset_after, seed=3)
    o1, h1 = m2(frames[:4, 0], np.zeros((2, B, 24), np.float32))
    m2.weight_hh_l1[...] = m2.weight_hh_l1 * -1.0
    o2, _ = m2(frames[4:, 0], h1)
    assert np.array_equal(np.concatenate(outs), np.concatenate([o1, o2]))


def test_weights_swapped_by_another_thread_during_calls_are_each_a_consistent_set():
    """Another thread assigns whole new weights (as load_state_dict does) while this one
    streams one-step calls: every call's result is that of the old weights or of the
    new ones, never of a mix or of weights kept from an earlier call."""
    m = cygru.GRU(6, 32, seed=5)
    sd_a = m.state_dict()
    sd_b = {k: (v * -0.5).astype(v.dtype) for k, v in sd_a.items()}
    x = np.random.default_rng(6).standard_normal((1, 1, 6)).astype(np.float32)
    h = np.random.default_rng(7).standard_normal((1, 1, 32)).astype(np.float32)
    want = []
    for sd in (sd_a, sd_b):
        f = cygru.GRU(6, 32)
        f.load_state_dict(sd)
        want.append(f(x, h)[0])
    stop = threading.Event()

    def flip():
        k = 0
        while not stop.is_set():
            m.load_state_dict(sd_b if k % 2 == 0 else sd_a)
            k += 1

    t = threading.Thread(target=flip)
    t.start()
    seen = set()
    try:
        for _ in range(2000):
            out = m(x, h)[0]
            match = [i for i, w in enumerate(want) if np.array_equal(out, w)]
            assert match, "a call used weights that are neither set"
            seen.add(match[0])
    finally:
        stop.set()
        t.join()
    assert seen  # at least one result checked (both, nearly always)

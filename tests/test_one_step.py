"""One step, one kernel, the same bits (issue 24, items 3-4).

A GRUCell step, a one-step GRU call and a long GRU call over the same steps run the
same engine (a GRUCell step is the engine's one-layer forward with T = 1 on the calling
thread), so chained steps reproduce one call bit for bit, float32 and float64, both
gate forms, with and without bias, at every batch size. Batches of at most
DOT_MAX_B rows run every product with the dot kernel straight on the caller's weights:
no packing, no pack buffers in the workspace.
"""

import numpy as np
import pytest

import cygru
from cygru import _cpu, _engine

DOT_MAX_B = _engine.DOT_MAX_BATCH
BATCHES = [1, 2, DOT_MAX_B, DOT_MAX_B + 1, 9]
FORMS = [(True, True), (False, True), (True, False), (False, False)]


def _pair(I, H, dtype, reset_after, bias, seed=0):
    gru = cygru.GRU(I, H, bias=bias, reset_after=reset_after, dtype=dtype, seed=seed)
    cell = cygru.GRUCell(I, H, bias=bias, reset_after=reset_after, dtype=dtype)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in gru.state_dict().items()})
    return gru, cell


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reset_after, bias", FORMS)
@pytest.mark.parametrize("B", BATCHES)
def test_cell_steps_one_step_calls_and_one_call_agree_bitwise(dtype, reset_after, bias, B):
    rng = np.random.default_rng(B)
    I, H, T = 37, 45, 7  # K % 16 != 0 for both products, H not a multiple of 16
    gru, cell = _pair(I, H, dtype, reset_after, bias, seed=B)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((1, B, H)).astype(dtype)
    whole, h_n = gru(x, h0)
    h = h0[0]
    for t in range(T):
        h = cell(x[t], h)
        assert np.array_equal(h, whole[t]), t
    h1 = h0
    for t in range(T):
        out, h1 = gru(x[t : t + 1], h1)
        assert np.array_equal(out[0], whole[t]), t
    assert np.array_equal(h1, h_n)
    # a step with no state is a step from zeros
    assert np.array_equal(cell(x[0]), gru(x[:1])[0][0])


@pytest.mark.parametrize("B", [1, DOT_MAX_B, DOT_MAX_B + 2])
def test_any_thread_count_gives_the_cell_step_bits(monkeypatch, B):
    """The sequence call on 1-4 threads (forced split) gives the cells' bits."""
    monkeypatch.setattr(_cpu, "MIN_WORK_PER_THREAD", 0)
    rng = np.random.default_rng(7)
    gru, cell = _pair(20, 70, np.float32, True, True, seed=3)
    x = rng.standard_normal((6, B, 20)).astype(np.float32)
    h = np.zeros((B, 70), np.float32)
    steps = []
    for t in range(6):
        h = cell(x[t], h)
        steps.append(h)
    before = cygru.get_num_threads()
    try:
        for n in (1, 2, 3, 4):
            cygru.set_num_threads(n)
            assert np.array_equal(gru(x)[0], np.stack(steps)), n
    finally:
        cygru.set_num_threads(before)


def test_lengths_do_not_change_the_kernel():
    """The kernel is chosen by the batch size alone, never by the rows still running: a
    sequence with lengths gives, for each row, the bits of that row's cell steps."""
    rng = np.random.default_rng(11)
    B = DOT_MAX_B
    gru, cell = _pair(9, 33, np.float64, False, True, seed=5)
    x = rng.standard_normal((8, B, 9))
    lengths = np.array([8, 3, 1, 5, 8, 2, 7, 4][:B])
    out, h_n = gru(x, None, lengths)
    h = np.zeros((B, 33))
    for t in range(8):
        h_new = cell(x[t], h)
        running = t < lengths
        h = np.where(running[:, None], h_new, h)
        assert np.array_equal(out[t][running], h[running]), t
    assert np.array_equal(h_n[0], h)


def test_small_batches_need_no_packed_weights():
    """At most DOT_MAX_B rows: the workspace has no pack buffers, so it does not grow
    with the input size, and it is smaller than a packed call's by about the weights."""
    size = _engine._forward_work_size
    for B in (1, DOT_MAX_B):
        assert size(1, B, 8, 128, 1, 4, 1) == size(1, B, 4096, 128, 1, 4, 1)
        assert size(50, B, 64, 128, 2, 8, 2) == size(50, B, 1000, 128, 2, 8, 2)
    B = DOT_MAX_B + 1
    small = size(1, DOT_MAX_B, 64, 128, 1, 4, 1)
    big = size(1, B, 64, 128, 1, 4, 1)
    weights = 3 * 128 * (64 + 128) * 4
    assert big - small >= weights
    assert size(1, B, 4096, 128, 1, 4, 1) > big


def test_dot_threshold_hook_switches_kernels(monkeypatch):
    """Forcing the packed kernel on a small batch (a test hook) changes the last bits
    at most by rounding: both kernels compute the same product."""
    rng = np.random.default_rng(2)
    gru, cell = _pair(64, 128, np.float32, True, True)
    x = rng.standard_normal((5, 1, 64)).astype(np.float32)
    dot, _ = gru(x)
    old = _engine._set_dot_max_b(0)
    try:
        packed, _ = gru(x)
    finally:
        _engine._set_dot_max_b(old)
    np.testing.assert_allclose(dot, packed, rtol=1e-5, atol=1e-6)
    assert np.array_equal(gru(x)[0], dot)


def test_cell_step_large_batch_and_large_hidden():
    """Batches above DOT_MAX_B and workspaces larger than the stack buffer (allocated)."""
    rng = np.random.default_rng(4)
    for B, H in [(DOT_MAX_B + 1, 300), (1, 600), (40, 20)]:
        gru, cell = _pair(10, H, np.float32, True, True)
        x = rng.standard_normal((2, B, 10)).astype(np.float32)
        out, _ = gru(x)
        h = cell(x[0])
        assert np.array_equal(h, out[0])
        assert np.array_equal(cell(x[1], h), out[1])


def test_cell_step_leaves_its_inputs_alone():
    rng = np.random.default_rng(5)
    gru, cell = _pair(6, 10, np.float64, True, True)
    x = rng.standard_normal((3, 6))
    h = rng.standard_normal((3, 10))
    x.flags.writeable = False
    h_before = h.copy()
    out = cell(x, h)
    assert np.array_equal(h, h_before) and out is not h

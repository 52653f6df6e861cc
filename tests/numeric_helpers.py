"""Numeric helpers shared by the test files."""

import numpy as np

# The small problem size that test_core.py and test_training.py share.
T, B, I, H = 7, 3, 5, 6


def rng(seed=0):
    return np.random.default_rng(seed)


def rel_err(a, b):
    """max |a - b| / max |b| (b is the oracle); 0 when both are exactly zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    den = float(np.max(np.abs(b))) if b.size else 0.0
    num = float(np.max(np.abs(a - b))) if b.size else 0.0
    if den == 0.0:
        return num
    return num / den


def make_x(m, rng, batched=True, T_=T, B_=B):
    """Random input for module `m` (GRU or GRUCell-like) in its layout and dtype."""
    if not batched:
        shape = (T_, m.input_size)
    elif getattr(m, "batch_first", False):
        shape = (B_, T_, m.input_size)
    else:
        shape = (T_, B_, m.input_size)
    return rng.standard_normal(shape).astype(m.dtype)


def make_h0(m, rng, batched=True, B_=B):
    """Random initial state (L*D, B, H) (unbatched: (L*D, H)) for GRU `m`."""
    LD = m.num_layers * m.num_directions
    shape = (LD, B_, m.hidden_size) if batched else (LD, m.hidden_size)
    return rng.standard_normal(shape).astype(m.dtype)

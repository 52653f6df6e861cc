"""Numeric helpers shared by the test files."""
import numpy as np


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

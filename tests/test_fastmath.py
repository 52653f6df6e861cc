"""Accuracy of the float32 sigmoid and tanh of the gate loops (cygru_fastmath.h):
relative error at most 1e-6 against float64 math wherever the result is a normal
float, exact saturation at +-inf, NaN propagation. Every compiled variant (AVX-512,
AVX2+FMA, baseline) is checked, as far as this CPU can run it; the others skip."""

import numpy as np
import pytest

from cygru._kernels import VARIANT_NAMES, _activations_f32, cpu_variant_level

TINY = np.finfo(np.float32).tiny


@pytest.fixture(params=range(len(VARIANT_NAMES)), ids=VARIANT_NAMES, autouse=True)
def level(request):
    """Run each test with every variant of the activations this CPU runs."""
    if request.param > cpu_variant_level():
        pytest.skip(f"this CPU cannot run the {VARIANT_NAMES[request.param]} variant")
    return request.param


_level = {"value": -1}


@pytest.fixture(autouse=True)
def _use_level(level):
    _level["value"] = level
    yield
    _level["value"] = -1


def _apply(x, tanh_):
    a = np.array(x, dtype=np.float32)
    _activations_f32(a, tanh_, _level["value"])
    return a


def _grid():
    # every float32 in a dense band around 0, plus a log-spaced sweep of magnitudes
    dense = np.linspace(-12, 12, 2_000_001, dtype=np.float32)
    mags = np.logspace(-38, np.log10(88), 200_000).astype(np.float32)
    return np.concatenate([dense, mags, -mags, np.float32([0.0, -0.0, 0.625, -0.625])])


def _ref_sigmoid(x):
    x = x.astype(np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_relative_error_below_1e6(name):
    x = _grid()
    got = _apply(x, name == "tanh").astype(np.float64)
    want = np.tanh(x.astype(np.float64)) if name == "tanh" else _ref_sigmoid(x)
    normal = np.abs(want) >= TINY
    rel = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    worst = int(np.argmax(rel))
    assert rel.max() <= 1e-6, f"{name}: rel. error {rel.max():.3g} at x={x[normal][worst]!r}"
    # below the normal range the result is 0 or subnormal, like libm's
    assert np.all(np.abs(got[~normal]) < TINY)


def test_special_values():
    x = np.float32([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, -1e-30])
    s = _apply(x, False)
    t = _apply(x, True)
    assert s[0] == 1 and s[1] == 0 and np.isnan(s[2]) and s[3] == 0.5 and s[4] == 0.5
    assert t[0] == 1 and t[1] == -1 and np.isnan(t[2]) and t[3] == 0 and t[5] == np.float32(1e-30)
    assert np.signbit(t[4]) and t[6] == np.float32(-1e-30)


def test_odd_and_bounded():
    x = _grid()
    t = _apply(x, True)
    assert np.array_equal(t, -_apply(-x, True))
    assert np.all(np.abs(t) <= 1)
    s = _apply(x, False)
    assert np.all((s >= 0) & (s <= 1))
    # σ(-x) = 1 - σ(x) within rounding
    np.testing.assert_allclose(_apply(-x, False), 1 - s.astype(np.float64), atol=2e-7)


def test_empty():
    _apply(np.zeros(0, np.float32), True)


def test_default_is_the_best_variant():
    x = _grid()[::97].copy()
    best = x.copy()
    _activations_f32(best, True, cpu_variant_level())
    default = x.copy()
    _activations_f32(default, True)
    assert np.array_equal(best, default)


def test_rejects_a_variant_this_cpu_cannot_run():
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _activations_f32(np.zeros(4, np.float32), True, cpu_variant_level() + 1)
    with pytest.raises(ValueError, match="not one this CPU runs"):
        _activations_f32(np.zeros(4, np.float32), True, -2)

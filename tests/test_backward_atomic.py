"""A backward closure adds its gradients into ``module.grads`` all or nothing (issue 23.6).

Every destination is checked before anything is added; when one is unusable (read-only,
wrong shape, wrong dtype, not an array, removed, or sharing memory with another) backward
raises, ``grads`` are bitwise unchanged, the closure stays usable, and a retry once the
cause is fixed gives exactly the result of one clean backward (never a double count).
"""

import numpy as np
import pytest

import cygru

F64 = np.float64


def _gru():
    # input_size == hidden_size: weight_ih_l0 and weight_hh_l0 have the same shape,
    # so one can be aliased to the other
    return cygru.GRU(3, 3, num_layers=2, bidirectional=True, dtype=F64, seed=4)


def _cell():
    return cygru.GRUCell(3, 3, dtype=F64, seed=4)


def _run_gru(module, x, rng_seed):
    """vjp + the loss gradients: (backward, args) with args fixed by rng_seed."""
    (out, h_n), backward = module.vjp(x)
    rng = np.random.default_rng(rng_seed)
    return backward, (rng.standard_normal(out.shape), rng.standard_normal(h_n.shape))


def _run_cell(module, x, rng_seed):
    h1, backward = module.vjp(x[0], x[1, :, :3])
    rng = np.random.default_rng(rng_seed)
    return backward, (rng.standard_normal(h1.shape),)


MODULES = {"GRU": (_gru, _run_gru), "GRUCell": (_cell, _run_cell)}


def _copies(grads):
    return {k: (None if g is None else g.copy()) for k, g in grads.items()}


def _assert_bitwise(grads, expected):
    assert list(sorted(grads)) == list(sorted(expected))
    for k, e in expected.items():
        g = grads[k]
        if e is None:
            assert g is None, k
        else:
            assert g.dtype == e.dtype and g.shape == e.shape, k
            assert np.array_equal(g.view(np.uint8), e.view(np.uint8)), k  # bit for bit


def _read_only(m, name):
    m.grads[name].flags.writeable = False

    def fix():
        m.grads[name].flags.writeable = True

    return fix


def _replace(value_of):
    def corrupt(m, name):
        saved = m.grads[name]
        m.grads[name] = value_of(saved, m, name)

        def fix():
            m.grads[name] = saved

        return fix

    return corrupt


def _remove(m, name):
    saved = m.grads.pop(name)

    def fix():
        m.grads[name] = saved

    return fix


def _alias(m, name):
    # another entry of the same shape made the same array as `name`'s
    other = next(k for k, g in m.grads.items() if k != name and g.shape == m.grads[name].shape)
    saved = m.grads[other]
    m.grads[other] = m.grads[name]

    def fix():
        m.grads[other] = saved

    return fix


CORRUPTIONS = {
    "read-only": (_read_only, ValueError, "is read-only"),
    "wrong shape": (_replace(lambda g, m, n: np.zeros(g.shape[:-1] + (7,))), ValueError, "shape"),
    "wrong dtype": (_replace(lambda g, m, n: g.astype(np.float32)), TypeError, "dtype float32"),
    "not an array": (_replace(lambda g, m, n: g.tolist()), TypeError, "not an array"),
    "removed": (_remove, ValueError, "no entry"),
    "a view of another": (_alias, ValueError, "share memory"),
    "the parameter itself": (
        _replace(lambda g, m, name: getattr(m, name)),  # the live parameter array
        ValueError,
        "and the parameter .* share memory",
    ),
}


@pytest.mark.parametrize("kind", sorted(MODULES))
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("which", ["first", "last"])
def test_failed_accumulation_adds_nothing_and_a_retry_counts_once(kind, corruption, which):
    make, run = MODULES[kind]
    corrupt, exc, match = CORRUPTIONS[corruption]
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    m, twin = make(), make()
    # earlier, non-zero gradients in both (so an extra addition would show)
    for module in (m, twin):
        backward, args = run(module, x[::-1].copy(), 1)
        backward(*args)
    backward, args = run(m, x, 2)
    twin_backward, twin_args = run(twin, x, 2)
    clean = twin_backward(*twin_args)  # the reference: exactly one more backward
    expected = _copies(twin.grads)

    names = list(m.grads)
    name = names[0] if which == "first" else names[-1]
    before = _copies(m.grads)
    weights = m.state_dict()
    fix = corrupt(m, name)
    with pytest.raises(exc, match=match) as info:
        backward(*args)
    for k, v in m.state_dict().items():  # no parameter received a gradient either
        assert np.array_equal(v, weights[k])
    message = str(info.value)
    assert message.startswith(f"cygru.{kind}: ") and "nothing was added" in message
    fix()
    _assert_bitwise(m.grads, before)  # nothing was added anywhere

    result = backward(*args)  # the same closure, retried
    _assert_bitwise(m.grads, expected)
    for r, c in zip(result, clean):
        assert np.array_equal(r, c)
    with pytest.raises(RuntimeError, match="already called"):
        backward(*args)


@pytest.mark.parametrize("kind", sorted(MODULES))
def test_none_gradients_stay_none_when_accumulation_fails(kind):
    """After zero_grad(set_to_none=True) a failed backward creates no arrays either."""
    make, run = MODULES[kind]
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    m, twin = make(), make()
    m.zero_grad(set_to_none=True)
    twin.zero_grad(set_to_none=True)
    last = list(m.grads)[-1]
    m.grads[last] = np.zeros_like(twin.weight_hh if kind == "GRUCell" else twin.weight_hh_l0)
    m.grads[last].flags.writeable = False  # wrong shape for a bias: refused either way
    backward, args = run(m, x, 3)
    with pytest.raises(ValueError, match="nothing was added"):
        backward(*args)
    assert all(m.grads[k] is None for k in list(m.grads)[:-1])
    m.grads[last] = None
    backward(*args)
    twin_backward, twin_args = run(twin, x, 3)
    twin_backward(*twin_args)
    _assert_bitwise(m.grads, _copies(twin.grads))


def test_errors_before_the_backward_pass_leave_the_closure_usable():
    m, twin = _gru(), _gru()
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    backward, (d_out, d_hn) = _run_gru(m, x, 5)
    with pytest.raises(ValueError, match="d_output"):
        backward(d_out[:, :1], d_hn)
    backward(d_out, d_hn)
    twin_backward, twin_args = _run_gru(twin, x, 5)
    twin_backward(*twin_args)
    _assert_bitwise(m.grads, _copies(twin.grads))


def test_an_interrupt_during_the_additions_spends_the_closure(monkeypatch):
    """The additions themselves are the one step that writes; an asynchronous exception
    (KeyboardInterrupt) landing there leaves the closure spent, so a retry raises
    instead of adding a second time."""
    m = _gru()
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    backward, args = _run_gru(m, x, 6)
    real = type(m)._accumulate

    def interrupted(self, local, who=None, on_commit=None):
        def commit_then_interrupt():
            on_commit()
            raise KeyboardInterrupt

        return real(self, local, who, commit_then_interrupt)

    monkeypatch.setattr(type(m), "_accumulate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        backward(*args)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="already called"):
        backward(*args)


def test_gradients_land_on_the_module_dtype_after_double():
    """A module converted between vjp and backward: the gradients are converted too
    (checks against the module's current dtype, not the forward's)."""
    m = cygru.GRUCell(3, 2, seed=0)  # float32
    h1, backward = m.vjp(np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))
    m.double()
    backward(np.ones_like(h1))
    assert all(g.dtype == np.float64 and g.any() for g in m.grads.values())


def test_dask_grad_step_is_all_or_nothing():
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    import cygru.dask as cd

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 3))
    y = rng.standard_normal((4, 6, 3))
    m, twin = cygru.GRU(3, 3, dtype=F64, seed=1), cygru.GRU(3, 3, dtype=F64, seed=1)
    with dask.config.set(scheduler="synchronous"):
        for module in (m, twin):
            cd.grad_step(module, da.from_array(x[::-1].copy(), chunks=(4, 3, 3)), y)
        cd.grad_step(twin, da.from_array(x, chunks=(4, 3, 3)), y)
        expected = _copies(twin.grads)
        before = _copies(m.grads)
        m.grads["bias_hh_l0"].flags.writeable = False
        with pytest.raises(ValueError, match=r"cygru.dask.grad_step: .*'bias_hh_l0'.* read-only"):
            cd.grad_step(m, da.from_array(x, chunks=(4, 3, 3)), y)
        _assert_bitwise(m.grads, before)
        m.grads["bias_hh_l0"].flags.writeable = True
        cd.grad_step(m, da.from_array(x, chunks=(4, 3, 3)), y)
    _assert_bitwise(m.grads, expected)

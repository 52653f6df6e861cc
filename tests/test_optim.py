"""cygru.optim against torch.optim: the same gradients, step after step, give the same
parameters; clip_grad_norm_ against torch.nn.utils.clip_grad_norm_; errors and threads."""

import threading

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
from cygru import optim

torch = import_optional("torch")

STEPS = 60
TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _loss_grads(gru, rng, dtype):
    """Fill gru.grads with the gradient of a random quadratic loss at the current weights."""
    x = rng.standard_normal((5, 3, gru.input_size)).astype(dtype)
    (output, h_n), backward = gru.vjp(x)
    gru.zero_grad()
    backward(output - 0.5, h_n)  # d/d(output) of 0.5*||output - 0.5||^2, and of h_n


def _torch_twin(named_arrays):
    return {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in named_arrays}


CASES = [
    (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (optim.SGD, torch.optim.SGD, dict(lr=0.02, momentum=0.5, maximize=True)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True, weight_decay=0.01)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01, betas=(0.3, 0.9), maximize=True)),
    (optim.Adam, torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=0.01)),
    (optim.AdamW, torch.optim.AdamW, dict(lr=0.02, weight_decay=0.3, amsgrad=True)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "ours, theirs, kwargs", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)]
)
def test_matches_torch_over_many_steps(ours, theirs, kwargs, dtype):
    rng = np.random.default_rng(0)
    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    w_out = rng.standard_normal((8, 2)).astype(dtype)  # a plain array beside the module
    params = _torch_twin(list(gru.named_parameters()) + [("w_out", w_out)])
    opt = ours([gru, {"w_out": w_out}], **kwargs)
    t_opt = theirs(list(params.values()), **kwargs)
    for _ in range(STEPS):
        _loss_grads(gru, rng, dtype)
        g_out = rng.standard_normal(w_out.shape).astype(dtype)
        before = {n: g.copy() for n, g in gru.grads.items()}
        for n, p in params.items():
            p.grad = torch.from_numpy((g_out if n == "w_out" else gru.grads[n]).copy())
        opt.step({"w_out": g_out})
        t_opt.step()
        for n, g in gru.grads.items():  # the gradients are read, never modified
            np.testing.assert_array_equal(g, before[n])
    assert opt.state["0.weight_ih_l0"].get("step", STEPS) == STEPS
    for n, p in params.items():
        ours_p = w_out if n == "w_out" else getattr(gru, n)
        assert ours_p.dtype == dtype
        np.testing.assert_allclose(ours_p, p.detach().numpy(), **TOL[dtype], err_msg=n)
    # and the parameters did move
    assert not np.allclose(
        gru.weight_hh_l0,
        cygru.GRU(3, 4, num_layers=2, bidirectional=True, dtype=dtype, seed=1).weight_hh_l0,
    )


def test_learning_rate_schedule_matches_torch():
    rng = np.random.default_rng(1)
    cell = cygru.GRUCell(3, 5, dtype=np.float64, seed=0)
    params = _torch_twin(cell.named_parameters())
    opt = optim.Adam(cell, lr=0.05)
    t_opt = torch.optim.Adam(list(params.values()), lr=0.05)
    for step in range(50):
        h, backward = cell.vjp(rng.standard_normal((2, 3)))
        cell.zero_grad()
        backward(h)
        for n, p in params.items():
            p.grad = torch.from_numpy(cell.grads[n].copy())
        opt.lr = t_opt.param_groups[0]["lr"] = 0.05 * 0.9**step
        opt.step()
        t_opt.step()
    for n, p in params.items():
        np.testing.assert_allclose(getattr(cell, n), p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_state_dict_round_trip_continues_the_same_run():
    def run(split):
        rng = np.random.default_rng(2)
        gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)
        opt = optim.Adam(gru, lr=0.01, amsgrad=True)
        for step in range(20):
            if step == split:
                saved, weights = opt.state_dict(), gru.state_dict()
                gru = cygru.GRU(2, 3, dtype=np.float64, seed=5)
                gru.load_state_dict(weights)
                opt = optim.Adam(gru, lr=0.5)
                opt.load_state_dict(saved)
                assert opt.lr == 0.01 and opt.amsgrad
            _loss_grads(gru, rng, np.float64)
            opt.step()
        return gru.state_dict()

    whole, resumed = run(None), run(8)
    for n in whole:
        np.testing.assert_array_equal(whole[n], resumed[n])


def test_state_dict_is_a_copy_and_load_checks_it():
    gru = cygru.GRU(2, 3, seed=0)
    opt = optim.SGD(gru, lr=0.1, momentum=0.9)
    _loss_grads(gru, np.random.default_rng(0), np.float32)
    opt.step()
    sd = opt.state_dict()
    sd["state"]["0.weight_hh_l0"]["momentum_buffer"][...] = 7
    assert not (opt.state["0.weight_hh_l0"]["momentum_buffer"] == 7).any()
    with pytest.raises(ValueError, match="hyperparameters"):
        opt.load_state_dict(optim.Adam(gru).state_dict())
    bad = opt.state_dict()
    bad["state"]["0.bias_hh_l0"]["momentum_buffer"] = np.zeros(5)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(bad)
    other = opt.state_dict()
    other["state"]["3.w"] = {}
    with pytest.raises(ValueError, match="not a parameter"):
        opt.load_state_dict(other)
    with pytest.raises(ValueError, match="expected a dict"):
        opt.load_state_dict([1, 2])


def test_step_updates_the_live_weights_after_load_state_dict():
    """The optimizer reads the module's parameters at every step: weights replaced by
    load_state_dict (new arrays) are the ones updated."""
    gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)
    opt = optim.SGD(gru, lr=1.0)
    gru.load_state_dict(cygru.GRU(2, 3, dtype=np.float64, seed=1).state_dict())
    new = gru.weight_ih_l0.copy()
    _loss_grads(gru, np.random.default_rng(0), np.float64)
    opt.step()
    np.testing.assert_array_equal(gru.weight_ih_l0, new - gru.grads["weight_ih_l0"])


def test_zero_grad_clears_every_module():
    a, b = cygru.GRU(2, 3, seed=0), cygru.GRUCell(2, 3, seed=0)
    rng = np.random.default_rng(0)
    _loss_grads(a, rng, np.float32)
    h, backward = b.vjp(np.ones(2))
    backward(np.ones(3))
    opt = optim.Adam([a, b])
    opt.zero_grad()
    assert all(not g.any() for m in (a, b) for g in m.grads.values())


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.05, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(3)
    gru = cygru.GRU(3, 4, num_layers=2, dtype=np.float64, seed=0)
    cell = cygru.GRUCell(3, 4, dtype=np.float64, seed=0)
    _loss_grads(gru, rng, np.float64)
    h, backward = cell.vjp(rng.standard_normal((2, 3)))
    backward(h)
    extra = {"w_out": rng.standard_normal((4, 2))}
    ours = [g for m in (gru, cell) for g in m.grads.values()] + [extra["w_out"]]
    t_params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in ours]
    for p, g in zip(t_params, ours):
        p.grad = torch.from_numpy(g.copy())
    total = optim.clip_grad_norm_([gru, cell, extra], max_norm, norm_type=norm_type)
    t_total = torch.nn.utils.clip_grad_norm_(t_params, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(float(t_total), rel=1e-12)
    for p, g in zip(t_params, ours):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12, atol=1e-15)
    if max_norm < total:  # clipped: the new global norm is max_norm
        assert optim.clip_grad_norm_([gru, cell, extra], 1e9, norm_type) == pytest.approx(
            max_norm, rel=1e-5
        )


def test_clip_grad_norm_float32_and_nonfinite():
    gru = cygru.GRU(3, 4, seed=0)
    _loss_grads(gru, np.random.default_rng(0), np.float32)
    t = [torch.nn.Parameter(torch.zeros(g.shape)) for g in gru.grads.values()]
    for p, g in zip(t, gru.grads.values()):
        p.grad = torch.from_numpy(g.copy())
    total = optim.clip_grad_norm_(gru, 0.01)
    assert total == pytest.approx(float(torch.nn.utils.clip_grad_norm_(t, 0.01)), rel=1e-5)
    for p, g in zip(t, gru.grads.values()):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-8)
    g = {"g": np.array([1.0, np.inf])}
    with pytest.raises(RuntimeError, match="inf"):
        optim.clip_grad_norm_(g, 1.0, error_if_nonfinite=True)
    assert g["g"][0] == 1.0  # nothing scaled when it raises
    assert optim.clip_grad_norm_(g, 1.0) == float("inf")
    np.testing.assert_array_equal(g["g"][0], 0.0)


def test_plain_arrays_and_their_errors():
    w = np.ones(3)
    opt = optim.SGD({"w": w}, lr=0.5)
    opt.step({"w": [1, 2, 3]})  # integers and lists are gradients too
    np.testing.assert_array_equal(w, [0.5, 0.0, -0.5])
    with pytest.raises(ValueError, match=r"no gradient for the plain array\(s\) \['w'\]"):
        opt.step()
    with pytest.raises(ValueError, match="not plain arrays"):
        opt.step({"w": np.ones(3), "v": np.ones(3)})
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(2,\)"):
        opt.step({"w": np.ones(2)})
    with pytest.raises(TypeError, match="real numbers"):
        opt.step({"w": np.ones(3, complex)})
    np.testing.assert_array_equal(w, [0.5, 0.0, -0.5])  # failed steps changed nothing
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        optim.Adam({"w": ro})
    with pytest.raises(TypeError, match="floating-point"):
        optim.Adam({"w": np.ones(3, int)})
    with pytest.raises(ValueError, match="appears in two dicts"):
        optim.Adam([{"w": np.ones(1)}, {"w": np.ones(1)}])
    with pytest.raises(TypeError, match="cygru module, a dict of arrays"):
        optim.Adam(np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])


def test_read_only_module_parameter_is_refused_before_any_update():
    gru = cygru.GRU(2, 3, seed=0)
    opt = optim.SGD(gru, lr=1.0)
    _loss_grads(gru, np.random.default_rng(0), np.float32)
    before = gru.state_dict()
    gru.bias_hh_l0.flags.writeable = False
    with pytest.raises(ValueError, match="'bias_hh_l0' is read-only"):
        opt.step()
    for n, a in gru.state_dict().items():
        np.testing.assert_array_equal(a, before[n])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: optim.SGD(p, lr=-1), "lr must be >= 0"),
        (lambda p: optim.SGD(p, lr=True), "lr must be a real number"),
        (lambda p: optim.SGD(p, lr=float("nan")), "lr must be"),
        (lambda p: optim.SGD(p, nesterov=True), "Nesterov momentum needs momentum > 0"),
        (lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True), "dampening 0"),
        (lambda p: optim.SGD(p, nesterov=1), "nesterov must be True or False"),
        (lambda p: optim.Adam(p, betas=(0.9, 1.0)), r"betas\[1\] must be >= 0.0 and < 1.0"),
        (lambda p: optim.Adam(p, betas=0.9), "betas must be a pair"),
        (lambda p: optim.Adam(p, eps=-1e-8), "eps must be >= 0"),
        (lambda p: optim.AdamW(p, weight_decay=-0.1), "weight_decay must be >= 0"),
    ],
)
def test_hyperparameter_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make(cygru.GRUCell(2, 2))


def test_lr_assignment_is_checked():
    opt = optim.Adam(cygru.GRUCell(2, 2))
    opt.lr = 0.5
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match="lr must be >= 0"):
        opt.lr = -0.1
    assert "Adam(lr=0.5" in repr(opt)


def test_concurrent_steps_are_serialised():
    """Steps from several threads at once: none lost or torn (SGD with a constant
    gradient adds up exactly, whatever the order)."""
    w = np.zeros(10000)
    opt = optim.SGD({"w": w}, lr=1.0)
    g = {"w": np.full(10000, -1.0)}
    threads = [threading.Thread(target=lambda: [opt.step(g) for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(w, 200.0)


def test_step_beside_concurrent_backward_calls():
    """backward closures on other threads add into grads under the module's lock and the
    step reads them under it: the gradient each step sees is a whole number of backward
    contributions (here each adds exactly 1 to every bias gradient entry)."""
    cell = cygru.GRUCell(2, 3, bias=True, dtype=np.float64, seed=0)
    opt = optim.SGD(cell, lr=0.0)  # lr 0: the weights stay, only grads are read
    seen = []
    orig_update = opt._update

    def spy(p, g, state):
        if p is cell.bias_hh:
            seen.append(g.copy())
        orig_update(p, g, state)

    opt._update = spy
    stop = threading.Event()

    def backward_loop():
        while not stop.is_set():
            # what a backward closure does at its end (modules.py), with a known amount
            local = {n: np.zeros_like(a) for n, a in cell.named_parameters()}
            local["bias_hh"][...] = 1.0
            cell._accumulate(local)

    threads = [threading.Thread(target=backward_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(200):
        opt.step()
    stop.set()
    for t in threads:
        t.join()
    assert seen and all((s == s.flat[0]).all() and float(s.flat[0]).is_integer() for s in seen)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(optim, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_parameters_with_none_gradients_are_skipped_as_torch_does():
    """After zero_grad(set_to_none=True) and no backward, a step changes nothing (torch.optim
    skips a parameter whose .grad is None); after a backward it updates again."""
    import torch

    m = cygru.GRU(3, 4, seed=0, dtype=np.float64)
    net = torch.nn.GRU(3, 4).double()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.as_tensor(m.state_dict()[name]))
    opt = cygru.optim.Adam(m, lr=0.1)
    t_opt = torch.optim.Adam(net.parameters(), lr=0.1)
    m.zero_grad(set_to_none=True)
    t_opt.zero_grad(set_to_none=True)
    before = {k: v.copy() for k, v in m.state_dict().items()}
    opt.step()
    t_opt.step()
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k])
        np.testing.assert_array_equal(v, dict(net.named_parameters())[k].detach().numpy())
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    (out, _), backward = m.vjp(x)
    backward(np.ones_like(out), None)
    opt.step()
    assert not np.array_equal(m.weight_ih_l0, before["weight_ih_l0"])

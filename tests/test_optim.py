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
        (lambda p: optim.SGD(p, nesterov=2), "nesterov must be True or False"),
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


# -- issue 23.5: None gradients in clip_grad_norm_, integer gradients, aliasing,
#    load_state_dict validated as a whole ---------------------------------------------

OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, maximize=True)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    (optim.Adam, dict(lr=0.1)),
    (optim.Adam, dict(lr=0.1, amsgrad=True, maximize=True, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.1, maximize=True)),
]
OPT_IDS = [f"{c.__name__}-{i}" for i, (c, _) in enumerate(OPTIMIZERS)]


def test_clip_grad_norm_skips_none_gradients_as_torch():
    gru = cygru.GRU(3, 4, dtype=np.float64, seed=0)
    gru.zero_grad(set_to_none=True)
    assert optim.clip_grad_norm_(gru, 1.0) == 0.0  # all None: torch returns 0 too
    t = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    assert float(torch.nn.utils.clip_grad_norm_(t, 1.0)) == 0.0
    assert all(g is None for g in gru.grads.values())

    _loss_grads(gru, np.random.default_rng(0), np.float64)  # zero_grad + backward
    gru.grads["weight_hh_l0"] = None  # some None, some arrays, and a plain dict
    extra = {"w": np.random.default_rng(1).standard_normal((4, 2))}
    ours = [g for g in gru.grads.values() if g is not None] + [extra["w"]]
    t_params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in ours]
    for p, g in zip(t_params, ours):
        p.grad = torch.from_numpy(g.copy())
    t_params.append(torch.nn.Parameter(torch.zeros(3, dtype=torch.float64)))  # grad None
    total = optim.clip_grad_norm_([gru, extra], 0.1)
    t_total = torch.nn.utils.clip_grad_norm_(t_params, 0.1)
    assert total == pytest.approx(float(t_total), rel=1e-12)
    for p, g in zip(t_params, ours):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert gru.grads["weight_hh_l0"] is None


def test_clip_grad_norm_checks_every_gradient_before_scaling_any():
    a = np.array([3.0, 4.0])
    with pytest.raises(TypeError, match=r"clip_grad_norm_: gradient 'i' must be a floating"):
        optim.clip_grad_norm_({"a": a, "i": np.array([5, 6])}, 1.0)
    ro = np.ones(2)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="gradient 'r' is read-only"):
        optim.clip_grad_norm_({"a": a, "r": ro}, 1.0)
    with pytest.raises(ValueError, match=r"'a' and 'b' share memory"):
        optim.clip_grad_norm_({"a": a, "b": a[::-1]}, 1.0)
    # a module's gradient passed again as a plain array would be scaled twice
    gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)
    _loss_grads(gru, np.random.default_rng(0), np.float64)
    before = {k: g.copy() for k, g in gru.grads.items()}
    with pytest.raises(ValueError, match=r"grads_of\[0\]\['bias_hh_l0'\] and grads_of\[1\]"):
        optim.clip_grad_norm_([gru, {"b": gru.grads["bias_hh_l0"]}], 1e-3)
    # a module's grads entry made unusable is refused too, before anything is scaled
    gru.grads["bias_ih_l0"] = gru.grads["bias_ih_l0"].astype(np.int64)
    with pytest.raises(TypeError, match="'bias_ih_l0' must be a floating-point array"):
        optim.clip_grad_norm_([gru, {"a": a}], 1e-3)
    np.testing.assert_array_equal(a, [3.0, 4.0])
    for k in ("weight_ih_l0", "weight_hh_l0", "bias_hh_l0"):
        np.testing.assert_array_equal(gru.grads[k], before[k])
    with pytest.raises(TypeError, match="error_if_nonfinite must be True or False"):
        optim.clip_grad_norm_({"a": a}, 1.0, error_if_nonfinite="yes")


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=OPT_IDS)
@pytest.mark.parametrize("gdtype", [np.uint8, np.int64, np.int8, np.float32, np.float64])
@pytest.mark.parametrize("pdtype", [np.float32, np.float64])
def test_integer_gradients_are_converted_before_any_arithmetic(cls, kwargs, gdtype, pdtype):
    """A gradient of another dtype acts as the same values in the parameter's dtype: a
    uint8 gradient with maximize=True moves the parameter up, not by -(-g mod 256)."""
    values = np.array([[1, 2, 0], [3, 1, 5]])
    w, ref = np.zeros((2, 3), pdtype), np.zeros((2, 3), pdtype)
    ours, twin = cls({"w": w}, **kwargs), cls({"w": ref}, **kwargs)
    for _ in range(3):
        ours.step({"w": values.astype(gdtype)})
        twin.step({"w": values.astype(pdtype)})
    assert w.dtype == pdtype
    np.testing.assert_array_equal(w, ref)
    if cls is optim.SGD and not kwargs.get("momentum"):
        sign = 1 if kwargs.get("maximize") else -1
        np.testing.assert_allclose(w, sign * 3 * 0.1 * values, rtol=1e-6)


def test_sgd_maximize_with_uint8_gradient_matches_torch():
    w = np.zeros(3)
    optim.SGD({"w": w}, lr=0.1, maximize=True).step({"w": np.ones(3, np.uint8)})
    t = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    t.grad = torch.ones(3, dtype=torch.float64)
    torch.optim.SGD([t], lr=0.1, maximize=True).step()
    np.testing.assert_array_equal(w, t.detach().numpy())
    np.testing.assert_array_equal(w, [0.1, 0.1, 0.1])


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS, ids=OPT_IDS)
def test_non_real_gradients_and_parameters_are_refused_before_any_update(cls, kwargs):
    a, b = np.ones(3), np.ones(3)
    opt = cls({"a": a, "b": b}, **kwargs)
    for bad, match in [
        (np.ones(3, complex), "gradient of 'b' must hold real numbers.*complex128"),
        (np.ones(3, bool), "gradient of 'b' must hold real numbers.*bool"),
        (np.array(["1", "2", "3"]), "gradient of 'b' must hold real numbers"),
        (np.array([1, 2, None]), "gradient of 'b' must hold real numbers.*object"),
        ([[1], [2, 3]], "gradient of 'b' must be an array of real numbers"),
        (None, "gradient of 'b' is None"),
    ]:
        with pytest.raises(TypeError, match=f"{cls.__name__}.step: the {match}"):
            opt.step({"a": np.ones(3), "b": bad})
    np.testing.assert_array_equal(a, 1.0)  # 'a' (checked fine, first) was not updated
    assert opt.state == {}
    for param, exc, match in [
        (np.ones(3, np.int64), TypeError, "parameter 'p' must be a floating-point array"),
        (np.ones(3, np.complex64), TypeError, "parameter 'p' must be a floating-point array"),
        (np.ones(3, bool), TypeError, "parameter 'p' must be a floating-point array"),
        (np.float64(1.0), TypeError, "parameter 'p' must be an array"),
        ([1.0, 2.0], TypeError, "parameter 'p' must be an array"),
    ]:
        with pytest.raises(exc, match=f"{cls.__name__}: {match}"):
            cls({"p": param}, **kwargs)
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=f"{cls.__name__}: parameter 'p' is read-only"):
        cls({"p": ro}, **kwargs)
    # a plain array made read-only after construction: refused when stepping
    opt = cls({"a": a, "b": b}, **kwargs)
    b.flags.writeable = False
    with pytest.raises(ValueError, match="parameter 'b' is read-only"):
        opt.step({"a": np.ones(3), "b": np.ones(3)})
    np.testing.assert_array_equal(a, 1.0)


def test_a_gradient_that_is_its_parameter_is_read_before_the_update():
    """step({"w": w}): the gradient is the parameter's own memory; decoupled weight decay
    scales w before Adam reads g, so the gradient is copied first."""
    w, ref = np.linspace(-1, 1, 5), np.linspace(-1, 1, 5)
    ours = optim.AdamW({"w": w}, lr=0.1, weight_decay=0.5)
    twin = optim.AdamW({"w": ref}, lr=0.1, weight_decay=0.5)
    for _ in range(3):
        ours.step({"w": w})
        twin.step({"w": ref.copy()})
    np.testing.assert_array_equal(w, ref)


def test_a_gradient_in_another_parameters_memory_is_read_before_any_update():
    """step({"a": ..., "b": a}): b's gradient is a's memory, and a is updated first."""
    a, b = np.ones(3), np.zeros(3)
    ra, rb = np.ones(3), np.zeros(3)
    optim.SGD({"a": a, "b": b}, lr=0.5).step({"a": np.ones(3), "b": a})
    optim.SGD({"a": ra, "b": rb}, lr=0.5).step({"a": np.ones(3), "b": ra.copy()})
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)
    np.testing.assert_array_equal(b, -0.5)


ALIASES = {
    "same array, two names": lambda w: [{"a": w, "b": w}],
    "same array, two dicts": lambda w: [{"a": w}, {"b": w}],
    "a view": lambda w: [{"a": w, "b": w[0]}],
    "the transpose": lambda w: [{"a": w, "b": w.T}],
    "a reshaped view": lambda w: [{"a": w.reshape(-1)}, {"b": w}],
    "overlapping slices": lambda w: [{"a": w[:2], "b": w[1:]}],
    "np.asarray of it": lambda w: [{"a": w, "b": np.asarray(w)}],
}


@pytest.mark.parametrize(
    "cls, kwargs", OPTIMIZERS[:1] + OPTIMIZERS[3:4], ids=OPT_IDS[:1] + OPT_IDS[3:4]
)
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_parameters_sharing_memory_are_refused(cls, kwargs, alias):
    w = np.ones((3, 3))
    with pytest.raises(ValueError, match=f"{cls.__name__}: the parameters .* share memory"):
        cls(ALIASES[alias](w), **kwargs)


def test_a_module_parameter_also_given_as_a_plain_array_is_refused():
    gru = cygru.GRU(2, 3, seed=0)
    with pytest.raises(ValueError, match=r"params\[0\]\['weight_hh_l0'\] and params\[1\]\['w'\]"):
        optim.SGD([gru, {"w": gru.weight_hh_l0}])
    with pytest.raises(ValueError, match="share memory"):
        optim.Adam([gru, {"w": gru.bias_ih_l0[1:4]}])
    with pytest.raises(ValueError, match="the same module appears twice"):
        optim.Adam([gru, gru])


def test_disjoint_views_of_one_buffer_are_accepted():
    """Interleaved or separate pieces of one array share no element: both are updated,
    each once (torch.optim accepts distinct views too)."""
    buf = np.zeros(8)
    parts = {"even": buf[::2], "odd": buf[1::2]}
    opt = optim.SGD(parts, lr=1.0)
    opt.step({"even": np.full(4, -1.0), "odd": np.full(4, -2.0)})
    np.testing.assert_array_equal(buf, [1, 2] * 4)
    halves = np.zeros(6)
    optim.SGD({"a": halves[:3], "b": halves[3:]}, lr=1.0).step({"a": -np.ones(3), "b": -np.ones(3)})
    np.testing.assert_array_equal(halves, 1.0)


def test_aliasing_introduced_after_construction_is_refused_at_step():
    a, b = np.zeros(3), np.zeros(3)
    params = {"a": a, "b": b}
    opt = optim.SGD(params, lr=1.0)
    params["b"] = a  # the dict is read at every step
    with pytest.raises(ValueError, match="'a' and 'b' share memory"):
        opt.step({"a": np.ones(3), "b": np.ones(3)})
    np.testing.assert_array_equal(a, 0.0)


def test_optimizer_zero_grad_set_to_none():
    gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)
    _loss_grads(gru, np.random.default_rng(0), np.float64)
    opt = optim.SGD(gru, lr=1.0)
    opt.zero_grad(set_to_none=True)
    assert all(g is None for g in gru.grads.values())
    before = gru.state_dict()
    opt.step()  # every gradient None: nothing moves
    assert optim.clip_grad_norm_(gru, 1.0) == 0.0
    for k, v in gru.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(TypeError, match="zero_grad: set_to_none must be True or False"):
        opt.zero_grad(set_to_none=2)


def test_step_after_module_conversion_converts_the_state():
    gru = cygru.GRU(2, 3, seed=0)  # float32
    opt = optim.Adam(gru, lr=0.01, amsgrad=True)
    _loss_grads(gru, np.random.default_rng(0), np.float32)
    opt.step()
    gru.double()
    _loss_grads(gru, np.random.default_rng(1), np.float64)
    opt.step()
    assert all(
        b.dtype == np.float64 for s in opt.state.values() for n, b in s.items() if n != "step"
    )


def _stepped(cls, kwargs, dtype=np.float64, steps=2):
    """An optimizer over a GRUCell and a plain array, after `steps` steps."""
    cell = cygru.GRUCell(2, 2, dtype=dtype, seed=0)
    w = np.linspace(-1, 1, 6).astype(dtype).reshape(2, 3)
    opt = cls([cell, {"w": w}], **kwargs)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        h, backward = cell.vjp(rng.standard_normal((3, 2)).astype(dtype))
        cell.zero_grad()
        backward(h)
        opt.step({"w": rng.standard_normal((2, 3)).astype(dtype)})
    return opt, cell, w


def _snapshot(opt, cell, w):
    sd = opt.state_dict()
    return sd, cell.state_dict(), w.copy()


def _assert_same_snapshot(a, b):
    (sd_a, cell_a, w_a), (sd_b, cell_b, w_b) = a, b
    assert sd_a["hyperparameters"] == sd_b["hyperparameters"]
    assert sd_a["state"].keys() == sd_b["state"].keys()
    for k, s in sd_a["state"].items():
        assert s.keys() == sd_b["state"][k].keys()
        for n, v in s.items():
            if isinstance(v, np.ndarray):
                assert v.dtype == sd_b["state"][k][n].dtype
                np.testing.assert_array_equal(v, sd_b["state"][k][n])
            else:
                assert v == sd_b["state"][k][n] and type(v) is type(sd_b["state"][k][n])
    for k in cell_a:
        np.testing.assert_array_equal(cell_a[k], cell_b[k])
    np.testing.assert_array_equal(w_a, w_b)


def _state_corruptions(cls, kwargs):
    """(description, corrupt(sd), exception) of states load_state_dict must refuse."""
    adam = cls is not optim.SGD
    buf = "exp_avg" if adam else "momentum_buffer"
    key = "0.weight_hh"
    out = [
        ("unknown buffer", lambda s: s["state"][key].update(junk=np.zeros((6, 2))), ValueError),
        (
            "buffer wrong shape",
            lambda s: s["state"][key].update({buf: np.zeros((2, 6))}),
            ValueError,
        ),
        ("buffer nan", lambda s: s["state"]["1.w"][buf].__setitem__((0, 0), np.nan), ValueError),
        ("buffer inf", lambda s: s["state"]["1.w"][buf].__setitem__((1, 2), -np.inf), ValueError),
        (
            "buffer complex",
            lambda s: s["state"][key].update({buf: np.zeros((6, 2), complex)}),
            TypeError,
        ),
        ("buffer bool", lambda s: s["state"][key].update({buf: np.zeros((6, 2), bool)}), TypeError),
        ("buffer string", lambda s: s["state"][key].update({buf: "zeros"}), TypeError),
        ("buffer object", lambda s: s["state"][key].update({buf: object()}), TypeError),
        ("state not a dict", lambda s: s["state"].update({key: [1, 2]}), TypeError),
        ("state of no parameter", lambda s: s["state"].update({"7.w": {}}), ValueError),
        ("state key not a string", lambda s: s["state"].update({3: {}}), ValueError),
        ("state not a mapping", lambda s: s.update(state=[1]), TypeError),
        ("hyperparameters not a mapping", lambda s: s.update(hyperparameters=None), TypeError),
        ("lr negative", lambda s: s["hyperparameters"].update(lr=-1.0), ValueError),
        ("lr a string", lambda s: s["hyperparameters"].update(lr="0.1"), TypeError),
        ("hyperparameter missing", lambda s: s["hyperparameters"].pop("lr"), ValueError),
        ("hyperparameter unknown", lambda s: s["hyperparameters"].update(foo=1), ValueError),
        ("maximize not a flag", lambda s: s["hyperparameters"].update(maximize=2), TypeError),
    ]
    if adam:
        out += [
            ("step -1", lambda s: s["state"][key].update(step=-1), ValueError),
            ("step 1.5", lambda s: s["state"][key].update(step=1.5), ValueError),
            ("step nan", lambda s: s["state"][key].update(step=float("nan")), ValueError),
            ("step inf", lambda s: s["state"][key].update(step=float("inf")), ValueError),
            ("step 10**400", lambda s: s["state"][key].update(step=10**400), ValueError),
            ("step a string", lambda s: s["state"][key].update(step="3"), TypeError),
            ("step None", lambda s: s["state"][key].update(step=None), TypeError),
            ("step True", lambda s: s["state"][key].update(step=True), TypeError),
            ("no step", lambda s: s["state"][key].pop("step"), ValueError),
            ("no exp_avg", lambda s: s["state"][key].pop("exp_avg"), ValueError),
            ("no exp_avg_sq", lambda s: s["state"]["1.w"].pop("exp_avg_sq"), ValueError),
            ("exp_avg_sq None", lambda s: s["state"][key].update(exp_avg_sq=None), TypeError),
            (
                "exp_avg_sq negative",
                lambda s: s["state"][key]["exp_avg_sq"].__setitem__((0, 0), -1e-3),
                ValueError,
            ),
            ("only a step", lambda s: s["state"].update({key: {"step": 3}}), ValueError),
            (
                "betas out of range",
                lambda s: s["hyperparameters"].update(betas=(1.0, 0.9)),
                ValueError,
            ),
            ("eps negative", lambda s: s["hyperparameters"].update(eps=-1.0), ValueError),
            (
                "max_exp_avg_sq negative",
                lambda s: s["state"][key].update(max_exp_avg_sq=-np.ones((6, 2))),
                ValueError,
            ),
        ]
    else:
        out += [
            ("a step in SGD", lambda s: s["state"][key].update(step=1), ValueError),
            ("momentum negative", lambda s: s["hyperparameters"].update(momentum=-0.5), ValueError),
            (
                "nesterov without momentum",
                lambda s: s["hyperparameters"].update(momentum=0.0, nesterov=True),
                ValueError,
            ),
        ]
    return out


MOMENTUM_OPTIMIZERS = [
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, dict(lr=0.1, momentum=0.5, nesterov=True, maximize=True)),
    (optim.Adam, dict(lr=0.1)),
    (optim.Adam, dict(lr=0.1, amsgrad=True, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.1, amsgrad=True)),
]
MOMENTUM_IDS = [f"{c.__name__}-{i}" for i, (c, _) in enumerate(MOMENTUM_OPTIMIZERS)]


@pytest.mark.parametrize("cls, kwargs", MOMENTUM_OPTIMIZERS, ids=MOMENTUM_IDS)
def test_load_state_dict_refuses_every_corruption_and_changes_nothing(cls, kwargs):
    import copy

    for what, corrupt, exc in _state_corruptions(cls, kwargs):
        opt, cell, w = _stepped(cls, kwargs)
        twin, twin_cell, twin_w = _stepped(cls, kwargs)
        before = _snapshot(opt, cell, w)
        bad = copy.deepcopy(opt.state_dict())
        corrupt(bad)
        with pytest.raises(exc, match=rf"{cls.__name__}.load_state_dict: ") as info:
            opt.load_state_dict(bad)
        assert "Traceback" not in str(info.value), what
        _assert_same_snapshot(_snapshot(opt, cell, w), before)
        # and the optimizer goes on exactly as its untouched twin
        for o, c in ((opt, cell), (twin, twin_cell)):
            rng = np.random.default_rng(9)
            h, backward = c.vjp(rng.standard_normal((3, 2)))
            c.zero_grad()
            backward(h)
            o.step({"w": rng.standard_normal((2, 3))})
        _assert_same_snapshot(_snapshot(opt, cell, w), _snapshot(twin, twin_cell, twin_w))


@pytest.mark.parametrize("cls, kwargs", MOMENTUM_OPTIMIZERS, ids=MOMENTUM_IDS)
def test_load_state_dict_accepts_equivalent_forms(cls, kwargs):
    """Lists, integer arrays, other float dtypes, NumPy integer or integral float step
    counts (PyTorch stores 3.0), and states for a subset of the parameters load; the
    next steps match those of the original optimizer."""
    opt, cell, w = _stepped(cls, kwargs)
    sd = opt.state_dict()
    loose = {"hyperparameters": dict(sd["hyperparameters"]), "state": {}}
    for i, (k, s) in enumerate(sd["state"].items()):
        entry = {}
        for n, v in s.items():
            if n == "step":
                entry[n] = np.int64(v) if i % 2 else float(v)
            else:
                entry[n] = v.tolist() if i % 2 else v.astype(np.float32).astype(np.float64)
        loose["state"][k] = entry
    other, other_cell, other_w = _stepped(cls, kwargs, steps=0)
    other_cell.load_state_dict(cell.state_dict())
    other_w[...] = w
    other.load_state_dict(loose)
    for k, s in other.state.items():
        for n, v in s.items():
            if n == "step":
                assert type(v) is int and v == sd["state"][k][n]
            else:
                assert v.dtype == np.float64 and v.flags.writeable and v.flags.c_contiguous
                np.testing.assert_array_equal(v, np.asarray(loose["state"][k][n]))
    # a partial state loads too (the other parameters start fresh)
    partial = {"hyperparameters": sd["hyperparameters"], "state": {"1.w": sd["state"]["1.w"]}}
    fresh, _, _ = _stepped(cls, kwargs, steps=0)
    fresh.load_state_dict(partial)
    assert list(fresh.state) == ["1.w"]
    # the loaded copies are not the caller's arrays
    buf = next(v for v in sd["state"]["1.w"].values() if isinstance(v, np.ndarray))
    assert not any(
        np.shares_memory(buf, v) for v in fresh.state["1.w"].values() if isinstance(v, np.ndarray)
    )


@pytest.mark.parametrize("cls, kwargs", MOMENTUM_OPTIMIZERS, ids=MOMENTUM_IDS)
def test_state_changed_directly_is_checked_before_a_step(cls, kwargs):
    """opt.state is a public dict: a step checks the structure of each entry before it
    updates anything (no KeyError or ZeroDivisionError half way through)."""
    adam = cls is not optim.SGD
    buf = "exp_avg" if adam else "momentum_buffer"
    corruptions = [
        (lambda st: st["1.w"].update({buf: np.zeros(4)}), ValueError, "shape"),
        (lambda st: st["1.w"].update(junk=1), ValueError, "unknown entries"),
    ]
    if adam:
        corruptions += [
            (lambda st: st["1.w"].update(step=-1), ValueError, r"integer in \[0, 2\*\*62\]"),
            (lambda st: st["1.w"].update(step=10**400), ValueError, "integer in"),
            (lambda st: st["1.w"].pop("exp_avg_sq"), ValueError, r"lacks \['exp_avg_sq'\]"),
        ]
    for corrupt, exc, match in corruptions:
        opt, cell, w = _stepped(cls, kwargs)
        before = _snapshot(opt, cell, w)
        corrupt(opt.state)
        with pytest.raises(exc, match=f"{cls.__name__}.step: the state of '1.w'.*{match}"):
            opt.step({"w": np.ones((2, 3))})
        for k, a in cell.state_dict().items():  # the module (stepped first) is unchanged
            np.testing.assert_array_equal(a, before[1][k])
        np.testing.assert_array_equal(w, before[2])


hypothesis = import_optional("hypothesis")
st = hypothesis.strategies

_VALUES = {
    "good": lambda shape: np.full(shape, 0.25),
    "good list": lambda shape: np.full(shape, 0.5).tolist(),
    "ints": lambda shape: np.ones(shape, np.int32),
    "float32": lambda shape: np.full(shape, 0.125, np.float32),
    "zeros": lambda shape: np.zeros(shape),
    "negative": lambda shape: np.full(shape, -0.5),
    "nan": lambda shape: np.full(shape, np.nan),
    "inf": lambda shape: np.full(shape, np.inf),
    "huge": lambda shape: np.full(shape, 1e300),
    "wrong shape": lambda shape: np.zeros(tuple(shape) + (1,)),
    "scalar": lambda shape: 1.0,
    "complex": lambda shape: np.zeros(shape, complex),
    "None": lambda shape: None,
    "string": lambda shape: "x",
    "step 0": lambda shape: 0,
    "step 3": lambda shape: 3,
    "step -1": lambda shape: -1,
    "step 2.0": lambda shape: 2.0,
    "step 2.5": lambda shape: 2.5,
    "step big": lambda shape: 10**18,
    "step huge": lambda shape: 10**400,
    "(removed)": None,
}
_KEYS = ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "junk"]


@pytest.mark.parametrize("cls, kwargs", MOMENTUM_OPTIMIZERS, ids=MOMENTUM_IDS)
@hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
@hypothesis.given(
    entries=st.dictionaries(
        st.sampled_from(["0.weight_ih", "1.w"]),
        st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(sorted(_VALUES)), max_size=5),
        max_size=2,
    ),
    float32=st.booleans(),
    from_valid=st.booleans(),
)
def test_load_state_dict_either_refuses_or_the_next_step_works(
    cls, kwargs, entries, float32, from_valid
):
    """Any state (built from nothing, or a valid one with some entries replaced or
    removed): load_state_dict raises ValueError/TypeError and leaves the optimizer as it
    was, or it loads and the next step runs and keeps the parameters finite."""
    dtype = np.float32 if float32 else np.float64
    opt, cell, w = _stepped(cls, kwargs, dtype=dtype, steps=1)
    shapes = {"0.weight_ih": (6, 2), "1.w": (2, 3)}
    state = opt.state_dict()["state"] if from_valid else {}
    for k, e in entries.items():
        entry = state.setdefault(k, {})
        for n, v in e.items():
            if v == "(removed)":
                entry.pop(n, None)
            else:
                entry[n] = _VALUES[v](shapes[k])
    before = _snapshot(opt, cell, w)
    try:
        opt.load_state_dict(
            {"hyperparameters": opt.state_dict()["hyperparameters"], "state": state}
        )
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith(f"cygru.optim.{cls.__name__}.load_state_dict: ")
        _assert_same_snapshot(_snapshot(opt, cell, w), before)
        return
    h, backward = cell.vjp(np.ones((3, 2), dtype))
    cell.zero_grad()
    backward(h)
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        opt.step({"w": np.ones((2, 3), dtype)})
    assert np.isfinite(w).all() and all(np.isfinite(p).all() for p in cell.parameters())


def test_hyperparameters_assigned_after_construction_are_checked():
    """Every hyperparameter attribute passes the constructor's checks when assigned (a
    failed assignment keeps the old value), as lr always did."""
    cell = cygru.GRUCell(2, 2)
    sgd = optim.SGD(cell, lr=0.1, momentum=0.9, nesterov=True)
    for name, value, exc, match in [
        ("momentum", -1.0, ValueError, "momentum must be >= 0"),
        ("momentum", 0.0, ValueError, "Nesterov momentum needs momentum > 0"),
        ("dampening", 0.5, ValueError, "Nesterov .* dampening 0"),
        ("weight_decay", float("inf"), ValueError, "weight_decay must be"),
        ("nesterov", "yes", TypeError, "nesterov must be True or False"),
        ("maximize", 2, TypeError, "maximize must be True or False"),
    ]:
        before = getattr(sgd, name)
        with pytest.raises(exc, match=f"cygru.optim.SGD: {match}"):
            setattr(sgd, name, value)
        assert getattr(sgd, name) == before
    sgd.nesterov = False
    sgd.momentum = 0
    assert sgd.momentum == 0.0 and type(sgd.momentum) is float
    adam = optim.Adam(cell)
    for name, value, exc, match in [
        ("betas", (0.9, 1.0), ValueError, r"betas\[1\] must be"),
        ("betas", 0.9, TypeError, "betas must be a pair"),
        ("betas", "ab", TypeError, "betas must be a pair"),
        ("eps", -1e-8, ValueError, "eps must be >= 0"),
        ("amsgrad", None, TypeError, "amsgrad must be True or False"),
        ("decoupled_weight_decay", -1, TypeError, "decoupled_weight_decay must be"),
    ]:
        with pytest.raises(exc, match=f"cygru.optim.Adam: {match}"):
            setattr(adam, name, value)
    adam.betas = [0.5, 0.6]
    assert adam.betas == (0.5, 0.6)
    adamw = optim.AdamW(cell)
    with pytest.raises(AttributeError, match="always True for AdamW"):
        adamw.decoupled_weight_decay = False
    adamw.weight_decay = 0.2
    assert adamw.state_dict()["hyperparameters"]["weight_decay"] == 0.2
    bad = adamw.state_dict()
    bad["hyperparameters"]["lr"] = -1
    with pytest.raises(ValueError, match="AdamW.load_state_dict: hyperparameters: lr must be"):
        adamw.load_state_dict(bad)


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(
    slices=st.lists(
        st.tuples(st.integers(-30, 30), st.integers(-30, 30), st.integers(-4, 4).filter(bool)),
        min_size=2,
        max_size=4,
    ),
    owner=st.booleans(),
    transpose=st.booleans(),
)
def test_memory_overlap_rule_agrees_with_numpy(slices, owner, transpose):
    """The rule behind the aliasing errors (cygru._arrays.shared_memory) says two arrays
    share memory exactly when numpy.shares_memory does, for views of one buffer (strided,
    reversed, 2-D, transposed) and the buffer itself."""
    from cygru import _arrays as A

    buf = np.arange(48.0)
    arrays = [buf[slice(*s)] for s in slices]
    if transpose:
        arrays.append(buf.reshape(6, 8)[::2, 1::3].T)
    if owner:
        arrays.append(buf)
    named = list(enumerate(arrays))
    expected = any(np.shares_memory(a, b) for i, a in named for j, b in named if i < j)
    pair = A.shared_memory(named)
    assert (pair is not None) == expected
    if pair is not None:
        assert np.shares_memory(arrays[pair[0]], arrays[pair[1]])


# -- one rule for boolean and real-valued options across cygru ----------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda v: optim.SGD(cygru.GRUCell(2, 2), momentum=0.9, nesterov=v).nesterov,
        lambda v: optim.SGD(cygru.GRUCell(2, 2), maximize=v).maximize,
        lambda v: optim.Adam(cygru.GRUCell(2, 2), amsgrad=v).amsgrad,
        lambda v: optim.Adam(cygru.GRUCell(2, 2), decoupled_weight_decay=v).decoupled_weight_decay,
        lambda v: cygru.GRU(2, 2, batch_first=v).batch_first,
        lambda v: cygru.GRUCell(2, 2, bias=v).bias,
    ],
    ids=["nesterov", "maximize", "amsgrad", "decoupled_weight_decay", "batch_first", "bias"],
)
def test_boolean_options_follow_one_rule(call):
    """Every boolean option of cygru, the optimizers' included, takes True/False, NumPy's
    bools and the integers 0 and 1 (as torch.optim.SGD takes nesterov=1), stored as a
    bool; anything else is a TypeError, never read by its truth value."""
    for value, want in [(True, True), (False, False), (1, True), (0, False)]:
        for v in (value, np.bool_(value), np.int64(value)):
            got = call(v)
            assert got is want, (v, got)
    for bad in (2, -1, "yes", "", None, 1.0, np.array([1]), np.array(True)):
        with pytest.raises(TypeError, match="must be True or False"):
            call(bad)


def test_boolean_methods_and_functions_follow_one_rule():
    cell = cygru.GRUCell(2, 2, seed=0)
    opt = optim.SGD(cell, lr=0.1)
    for g in cell.grads.values():
        g[...] = 1.0
    opt.zero_grad(set_to_none=0)
    assert all(g is not None and not g.any() for g in cell.grads.values())
    opt.zero_grad(set_to_none=1)
    assert all(g is None for g in cell.grads.values())
    g = {"a": np.array([3.0, 4.0])}
    assert optim.clip_grad_norm_(g, 1.0, error_if_nonfinite=1) == 5.0
    with pytest.raises(RuntimeError, match="total norm .* is inf"):
        optim.clip_grad_norm_({"a": np.array([np.inf])}, 1.0, error_if_nonfinite=np.int8(1))
    assert cygru.get_include(c_headers=1) == cygru.get_include(c_headers=True)
    assert cygru.get_include(c_headers=0) == cygru.get_include()
    for call, who in [
        (lambda: opt.zero_grad(set_to_none=2), "cygru.optim.SGD.zero_grad"),
        (lambda: optim.clip_grad_norm_(g, 1.0, error_if_nonfinite=2), "clip_grad_norm_"),
        (lambda: cygru.get_include(c_headers=2), "cygru.get_include"),
        (lambda: cell.zero_grad(set_to_none=2), "cygru.GRUCell"),
    ]:
        with pytest.raises(TypeError, match=f"{who}: .* must be True or False, got int 2"):
            call()


def test_real_hyperparameters_follow_one_rule():
    """The optimizers' numbers take what cygru's other real-valued options take (any
    numbers.Real but a bool: fractions.Fraction too), and refuse complex numbers."""
    import decimal
    import fractions

    cell = cygru.GRUCell(2, 2, seed=0)
    opt = optim.SGD(cell, lr=fractions.Fraction(1, 10), momentum=np.float16(0.5))
    assert opt.lr == 0.1 and type(opt.lr) is float and opt.momentum == 0.5
    adam = optim.Adam(cell, betas=(fractions.Fraction(9, 10), 0.999))
    assert adam.betas == (0.9, 0.999)
    x = np.ones((3, 1, 2))
    assert cygru.gradcheck(cygru.GRU(2, 2, seed=0), x, eps=fractions.Fraction(1, 10**6))
    with pytest.raises(TypeError, match=r"cygru.optim.SGD: lr must be a real number, got complex"):
        optim.SGD(cell, lr=np.complex128(0.1))
    with pytest.raises(TypeError, match=r"cygru.optim.SGD: lr must be a real number, got Decimal"):
        optim.SGD(cell, lr=decimal.Decimal("0.1"))
    with pytest.raises(TypeError, match="cygru.gradcheck: eps must be a finite number > 0"):
        cygru.gradcheck(cygru.GRU(2, 2, seed=0), x, eps=decimal.Decimal("0.1"))
    with pytest.raises(ValueError, match="cygru.optim.SGD: lr must be a real number, got a number"):
        optim.SGD(cell, lr=10**400)
    with pytest.raises(ValueError, match="cygru.optim.Adam: betas.1. must be >= 0.0 and < 1.0"):
        optim.Adam(cell, betas=(0.9, fractions.Fraction(1)))
    g = {"a": np.array([3.0, 4.0])}
    assert optim.clip_grad_norm_(g, fractions.Fraction(1), norm_type=fractions.Fraction(2)) == 5.0
    for bad in (10**400, True, 1j, "2", 0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="norm_type must be a positive number or inf"):
            optim.clip_grad_norm_(g, 1.0, norm_type=bad)

"""cygru.jax: a GRU function with a custom VJP, against a pure-JAX GRU (``jax.lax.scan`` over
PyTorch's equations) for outputs and for gradients of x, h0 and every parameter, under
``jit``, ``grad`` and ``vmap``; its refusals; that it never writes its inputs; and that
``import cygru`` never imports JAX."""

import doctest
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from optional_deps import import_optional

jax = import_optional("jax")
jnp = import_optional("jax.numpy")
cjax = import_optional("cygru.jax")

import cygru  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# the oracle: a GRU in plain JAX
# ---------------------------------------------------------------------------------------------


def _ref_layer(x, h, w_ih, w_hh, b_ih, b_hh, reset_after, reverse, lengths=None):
    """One direction of one layer over x (T, B, I) from h (B, H): (outputs (T, B, H), h_T).
    With lengths, sequence b skips its steps t >= L_b (its state stays, its output is 0):
    PyTorch's packed semantics, in either direction."""
    H = h.shape[-1]
    T = x.shape[0]

    def step(h, xt):
        x_t, t = xt
        h_new, _ = cell(h, x_t)
        if lengths is None:
            return h_new, h_new
        live = (t < lengths)[:, None]
        return jnp.where(live, h_new, h), jnp.where(live, h_new, 0)

    def cell(h, x_t):
        gi = x_t @ w_ih.T + b_ih
        r = jax.nn.sigmoid(gi[:, :H] + h @ w_hh[:H].T + b_hh[:H])
        z = jax.nn.sigmoid(gi[:, H : 2 * H] + h @ w_hh[H : 2 * H].T + b_hh[H : 2 * H])
        if reset_after:
            n = jnp.tanh(gi[:, 2 * H :] + r * (h @ w_hh[2 * H :].T + b_hh[2 * H :]))
        else:
            n = jnp.tanh(gi[:, 2 * H :] + (r * h) @ w_hh[2 * H :].T + b_hh[2 * H :])
        h = (1 - z) * n + z * h
        return h, h

    h_T, out = jax.lax.scan(step, h, (x, jnp.arange(T)), reverse=reverse)
    return out, h_T


def ref_gru(
    x,
    params,
    h0=None,
    *,
    num_layers=1,
    bidirectional=False,
    batch_first=False,
    reset_after=True,
    reverse=False,
    lengths=None,
):
    D = 2 if bidirectional else 1
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None]
        h0 = None if h0 is None else h0[:, None]
    elif batch_first:
        x = jnp.swapaxes(x, 0, 1)
    H = params["weight_hh_l0"].shape[1]
    if h0 is None:
        h0 = jnp.zeros((num_layers * D, x.shape[1], H), x.dtype)
    layer_in, h_n = x, []
    for k in range(num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            zeros = jnp.zeros(3 * H, x.dtype)
            out, h_T = _ref_layer(
                layer_in,
                h0[k * D + d],
                params["weight_ih" + sfx],
                params["weight_hh" + sfx],
                params.get("bias_ih" + sfx, zeros),
                params.get("bias_hh" + sfx, zeros),
                reset_after,
                reverse=(d == 1) or reverse,
                lengths=None if lengths is None else jnp.asarray(lengths),
            )
            outs.append(out)
            h_n.append(h_T)
        layer_in = jnp.concatenate(outs, axis=-1)
    h_n = jnp.stack(h_n)
    if unbatched:
        return layer_in[:, 0], h_n[:, 0]
    if batch_first:
        layer_in = jnp.swapaxes(layer_in, 0, 1)
    return layer_in, h_n


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def make(I=3, H=4, num_layers=1, bidirectional=False, bias=True, dtype=np.float32, seed=0):
    m = cygru.GRU(I, H, num_layers, bias=bias, bidirectional=bidirectional, dtype=dtype, seed=seed)
    return {k: jnp.asarray(v) for k, v in m.state_dict().items()}


def loss_of(fn, **opts):
    """A scalar loss that reaches every output (weighted so each element's gradient differs)."""

    def loss(x, h0, params):
        out, h_n = fn(x, params, h0, **opts)
        w_out = jnp.cos(jnp.arange(out.size, dtype=out.dtype)).reshape(out.shape)
        return jnp.sum(w_out * out**2) + jnp.sum(jnp.sin(h_n))

    return loss


def close(a, b, tol):
    """Relative agreement, scaled by the larger array's magnitude."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    scale = max(np.max(np.abs(b)), 1e-30) if b.size else 1.0
    err = np.max(np.abs(a - b)) / scale if b.size else 0.0
    assert err <= tol, f"relative error {err:.3g} > {tol}"


def compare(dtype, T=6, B=3, I=3, H=4, num_layers=1, bidirectional=False, bias=True, **opts):
    tol = 1e-5 if dtype == np.float32 else 1e-10
    D = 2 if bidirectional else 1
    params = make(I, H, num_layers, bidirectional, bias, dtype)
    rng = np.random.default_rng(1)
    xs = (B, T, I) if opts.get("batch_first") else (T, B, I)
    x = jnp.asarray(rng.standard_normal(xs), dtype)
    h0 = jnp.asarray(rng.standard_normal((num_layers * D, B, H)) * 0.5, dtype)
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, **opts)
    # the oracle jitted: op by op, JAX's eager scan is slow to run
    got = cjax.gru(x, params, h0, **kw)
    want = jax.jit(lambda x, p, h0: ref_gru(x, p, h0, **kw))(x, params, h0)
    for g, w in zip(got, want):
        close(g, w, tol)
    g_got = jax.grad(loss_of(cjax.gru, **kw), argnums=(0, 1, 2))(x, h0, params)
    g_want = jax.jit(jax.grad(loss_of(ref_gru, **kw), argnums=(0, 1, 2)))(x, h0, params)
    close(g_got[0], g_want[0], tol)
    close(g_got[1], g_want[1], tol)
    assert sorted(g_got[2]) == sorted(params)
    for k in params:
        close(g_got[2][k], g_want[2][k], tol)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------
# outputs and gradients against the oracle
# ---------------------------------------------------------------------------------------------

SHAPES = [
    dict(num_layers=1, bidirectional=False),
    dict(num_layers=2, bidirectional=False),
    dict(num_layers=1, bidirectional=True),
    dict(num_layers=2, bidirectional=True),
]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(
    "shape", SHAPES, ids=lambda s: f"L{s['num_layers']}D{1 + s['bidirectional']}"
)
def test_float32_matches_pure_jax(shape, reset_after):
    compare(np.float32, reset_after=reset_after, **shape)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize(
    "shape", SHAPES, ids=lambda s: f"L{s['num_layers']}D{1 + s['bidirectional']}"
)
def test_float64_matches_pure_jax(x64, shape, reset_after):
    compare(np.float64, reset_after=reset_after, **shape)


def test_options_match_pure_jax(x64):
    compare(np.float64, batch_first=True, num_layers=2, bidirectional=True)
    compare(np.float64, bias=False, num_layers=2)
    compare(np.float64, reverse=True, num_layers=2)
    compare(np.float64, B=1, T=1, I=1, H=1, reset_after=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lengths_match_pure_jax(x64, dtype):
    lengths = np.array([6, 2, 4, 1])
    for opts in (
        dict(num_layers=2, bidirectional=True),
        dict(reverse=True, reset_after=False),
        dict(batch_first=True, num_layers=2),
    ):
        compare(dtype, B=4, lengths=lengths, **opts)


def test_lengths_same_bits_as_cygru_and_traced():
    m = cygru.GRU(3, 4, bidirectional=True, seed=9)
    p = {k: jnp.asarray(v) for k, v in m.state_dict().items()}
    x = np.random.default_rng(9).standard_normal((6, 3, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    want = m(x, lengths=lengths)
    f = jax.jit(lambda x, L: cjax.gru(x, p, bidirectional=True, lengths=L))
    for got in (cjax.gru(x, p, bidirectional=True, lengths=lengths), f(x, lengths)):
        assert np.array_equal(np.asarray(got[0]), want[0])
        assert np.array_equal(np.asarray(got[1]), want[1])
    # a traced length out of range fails when the computation runs, with cygru's message
    with pytest.raises(Exception, match=r"every length must be in \[1, 6\]"):
        jax.block_until_ready(f(x, np.array([7, 2, 4])))


def test_unbatched_and_default_h0(x64):
    params = make(num_layers=2, dtype=np.float64)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((5, 3)))
    out, h_n = cjax.gru(x, params, num_layers=2)
    assert out.shape == (5, 4) and h_n.shape == (2, 4)
    want = ref_gru(x, params, num_layers=2)
    close(out, want[0], 1e-10)
    close(h_n, want[1], 1e-10)
    g = jax.grad(lambda x: jnp.sum(cjax.gru(x, params, num_layers=2)[0] ** 3))(x)
    g_ref = jax.grad(lambda x: jnp.sum(ref_gru(x, params, num_layers=2)[0] ** 3))(x)
    close(g, g_ref, 1e-10)


def test_same_bits_as_cygru():
    m = cygru.GRU(3, 5, 2, bidirectional=True, seed=3)
    x = np.random.default_rng(3).standard_normal((7, 2, 3)).astype(np.float32)
    params = {k: jnp.asarray(v) for k, v in m.state_dict().items()}
    out, h_n = cjax.gru(jnp.asarray(x), params, num_layers=2, bidirectional=True)
    want = m(x)
    assert np.array_equal(np.asarray(out), want[0])
    assert np.array_equal(np.asarray(h_n), want[1])


def test_gradients_equal_cygru_vjp(x64):
    """The parameter gradients are those GRU.vjp adds into GRU.grads."""
    m = cygru.GRU(3, 4, 2, dtype=np.float64, seed=4)
    x = np.random.default_rng(4).standard_normal((6, 2, 3))
    (out, h_n), backward = m.vjp(x)
    dx, dh0 = backward(out, np.ones_like(h_n))  # loss = sum(out**2)/2 + sum(h_n)
    params = {k: jnp.asarray(v) for k, v in m.state_dict().items()}

    def loss(x, h0, params):
        out, h_n = cjax.gru(x, params, h0, num_layers=2)
        return 0.5 * jnp.sum(out**2) + jnp.sum(h_n)

    gx, gh0, gp = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(x), jnp.zeros((2, 2, 4)), params)
    np.testing.assert_allclose(gx, dx, rtol=0, atol=1e-13)
    np.testing.assert_allclose(gh0, dh0, rtol=0, atol=1e-13)
    for k in params:
        np.testing.assert_allclose(gp[k], m.grads[k], rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# jit, vmap, forward mode
# ---------------------------------------------------------------------------------------------


def test_under_jit():
    params = make(num_layers=2, bidirectional=True)
    x = jnp.asarray(np.random.default_rng(5).standard_normal((6, 3, 3)), jnp.float32)
    kw = dict(num_layers=2, bidirectional=True)
    eager = cjax.gru(x, params, **kw)
    jitted = jax.jit(lambda x, p: cjax.gru(x, p, **kw))(x, params)
    for a, b in zip(eager, jitted):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    loss = loss_of(cjax.gru, **kw)
    h0 = jnp.zeros((4, 3, 4), jnp.float32)
    g_eager = jax.grad(loss, argnums=(0, 1, 2))(x, h0, params)
    value, g_jit = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(x, h0, params)
    assert np.isclose(float(value), float(loss(x, h0, params)), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_eager), jax.tree.leaves(g_jit)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # the gradients against the oracle, jitted
    g_ref = jax.jit(jax.grad(loss_of(ref_gru, **kw), argnums=(0, 1, 2)))(x, h0, params)
    for a, b in zip(jax.tree.leaves(g_jit), jax.tree.leaves(g_ref)):
        close(a, b, 1e-5)


def _check_vmap(f, *args, in_axes):
    """vmap(f) equals f on every mapped element (the copies of a forward with shared
    weights run as one batch, so equal within float32 rounding, not bit for bit)."""
    got = jax.vmap(f, in_axes=in_axes)(*args)
    n = [jax.tree.leaves(a)[0].shape[ax] for a, ax in zip(args, in_axes) if ax is not None][0]
    for i in range(n):
        one = [
            a if ax is None else jax.tree.map(lambda t, ax=ax, i=i: jnp.take(t, i, axis=ax), a)
            for a, ax in zip(args, in_axes)
        ]
        for g, w in zip(got, f(*one)):
            close(g[i], w, 1e-6)
    return got


def test_vmap_forward():
    rng = np.random.default_rng(6)
    p = make(num_layers=2, bidirectional=True)
    kw = dict(num_layers=2, bidirectional=True)
    xs = jnp.asarray(rng.standard_normal((3, 5, 2, 3)), jnp.float32)
    h0s = jnp.asarray(rng.standard_normal((3, 4, 2, 4)), jnp.float32)
    _check_vmap(lambda x: cjax.gru(x, p, **kw), xs, in_axes=(0,))
    _check_vmap(lambda x, h: cjax.gru(x, p, h, **kw), xs, h0s, in_axes=(0, 0))
    _check_vmap(lambda x, h: cjax.gru(x, p, h, **kw), xs[0], h0s, in_axes=(None, 0))
    _check_vmap(lambda x: cjax.gru(x, p, **kw), jnp.swapaxes(xs, 0, 1), in_axes=(1,))
    bf = dict(kw, batch_first=True)
    _check_vmap(lambda x: cjax.gru(x, p, **bf), jnp.swapaxes(xs, 1, 2), in_axes=(0,))
    _check_vmap(lambda x: cjax.gru(x, p, **kw), xs[:, :, 0], in_axes=(0,))  # unbatched x
    lengths = np.array([5, 2])
    _check_vmap(lambda x: cjax.gru(x, p, lengths=lengths, **kw), xs, in_axes=(0,))
    mapped_lengths = jnp.array([[5, 2], [1, 3], [4, 4]])
    _check_vmap(lambda x, n: cjax.gru(x, p, lengths=n, **kw), xs, mapped_lengths, in_axes=(0, 0))
    # per-element weights (an ensemble): one call per element
    ps = jax.tree.map(lambda *a: jnp.stack(a), *(make(3, 4, 2, True, seed=s) for s in (1, 2, 3)))
    _check_vmap(lambda x, q: cjax.gru(x, q, **kw), xs, ps, in_axes=(0, 0))
    _check_vmap(lambda q: cjax.gru(xs[0], q, **kw), ps, in_axes=(0,))
    # nested, jitted, empty
    xx = jnp.asarray(rng.standard_normal((2, 3, 5, 2, 3)), jnp.float32)
    out, _ = jax.jit(jax.vmap(jax.vmap(lambda x: cjax.gru(x, p, **kw))))(xx)
    assert out.shape == (2, 3, 5, 2, 8)
    close(out[1, 2], cjax.gru(xx[1, 2], p, **kw)[0], 1e-6)
    out, _ = jax.vmap(lambda x: cjax.gru(x, p, **kw))(jnp.zeros((0, 5, 2, 3)))
    assert out.shape == (0, 5, 2, 8)


def test_vmap_gradients():
    """Per-example gradients (vmap of grad), and the gradient of a vmapped loss, each as
    the oracle's."""
    p1 = make(seed=1)
    xs = jnp.asarray(np.random.default_rng(6).standard_normal((3, 5, 2, 3)), jnp.float32)
    loss = loss_of(cjax.gru)
    h0 = jnp.zeros((1, 2, 4), jnp.float32)
    per_ex = jax.jit(jax.vmap(jax.grad(loss, argnums=2), in_axes=(0, None, None)))(xs, h0, p1)
    for i in range(3):
        want = jax.grad(loss_of(ref_gru), argnums=2)(xs[i], h0, p1)
        for k in p1:
            close(per_ex[k][i], want[k], 1e-5)

    def total(p, fn):
        return jnp.sum(jax.vmap(lambda x: loss_of(fn)(x, h0, p))(xs))

    got = jax.grad(total)(p1, cjax.gru)
    want = jax.grad(total)(p1, ref_gru)
    for k in p1:
        close(got[k], want[k], 1e-5)


def test_forward_mode_is_refused_by_jax():
    params = make()
    x = jnp.ones((2, 1, 3), jnp.float32)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: cjax.gru(x, params)[0], (x,), (x,))


def test_second_order_is_refused_by_name():
    params = make()
    x = jnp.ones((2, 1, 3), jnp.float32)

    def grad_norm(x):
        g = jax.grad(lambda x: jnp.sum(cjax.gru(x, params)[0] ** 2))(x)
        return jnp.sum(g**2)

    with pytest.raises(TypeError, match="cygru.jax.gru: second-order derivatives"):
        jax.grad(grad_norm)(x)
    with pytest.raises(TypeError, match="cygru.jax.gru: second-order derivatives"):
        jax.hessian(lambda x: jnp.sum(cjax.gru(x, params)[0]))(x)


def test_jacrev_remat_and_empty_batch(x64):
    params = make(dtype=np.float64)
    x = jnp.asarray(np.random.default_rng(10).standard_normal((3, 2, 3)))
    jac = jax.jacrev(lambda x: cjax.gru(x, params)[1])(x)
    jac_ref = jax.jacrev(lambda x: ref_gru(x, params)[1])(x)
    assert jac.shape == (1, 2, 4, 3, 2, 3)
    close(jac, jac_ref, 1e-10)
    f = jax.checkpoint(lambda x: jnp.sum(cjax.gru(x, params)[0] ** 2))
    close(jax.grad(f)(x), jax.grad(lambda x: jnp.sum(ref_gru(x, params)[0] ** 2))(x), 1e-10)
    x0 = jnp.ones((5, 0, 3))
    out, h_n = cjax.gru(x0, params)
    assert out.shape == (5, 0, 4) and h_n.shape == (1, 0, 4)
    gx, gp = jax.grad(lambda x, p: jnp.sum(cjax.gru(x, p)[0]), argnums=(0, 1))(x0, params)
    assert gx.shape == (5, 0, 3) and all(not np.asarray(g).any() for g in gp.values())


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------


def bad(exc, match, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        cjax.gru(*args, **kwargs)
    assert str(info.value).startswith("cygru.jax.gru: "), str(info.value)


def test_bad_inputs():
    p = make()
    x = jnp.ones((4, 2, 3), jnp.float32)
    bad(ValueError, "3 dimensions", jnp.ones((4, 2, 3, 1)), p)
    bad(ValueError, "3 features", jnp.ones((4, 2, 5)), p)
    bad(ValueError, r"sequence length is 0", jnp.ones((0, 2, 3)), p)
    bad(ValueError, r"h0 of shape \(1, 2, 4\)", x, p, jnp.zeros((1, 3, 4)))
    bad(TypeError, "must map PyTorch parameter names", x, [1, 2])
    bad(ValueError, "no 'weight_ih_l0'", x, {"weight_hh_l0": p["weight_hh_l0"]})
    bad(ValueError, r"\['weight_hh_l1'", x, dict(p, weight_hh_l1=p["weight_hh_l0"]))
    bad(ValueError, "no 'weight_ih_l1'", x, p, num_layers=2)
    bad(ValueError, "bias_hh_l0 must have shape", x, dict(p, bias_hh_l0=jnp.ones(5)))
    bad(TypeError, "float32 or float64", x, {k: v.astype(jnp.float16) for k, v in p.items()})
    bad(TypeError, "same dtype", x, dict(p, bias_ih_l0=p["bias_ih_l0"].astype(jnp.bfloat16)))
    bad(TypeError, "real numbers", x.astype(jnp.complex64), p)
    bad(TypeError, "real numbers", "abc", p)
    bad(TypeError, "num_layers must be an integer", x, p, num_layers=1.5)
    bad(ValueError, "num_layers must be >= 1", x, p, num_layers=0)
    bad(TypeError, "bidirectional", x, p, bidirectional="yes")
    bad(ValueError, "reverse", x, p, reverse=True, bidirectional=True)
    bad(ValueError, r"every length must be in \[1, 4\]", x, p, lengths=np.array([5, 1]))
    bad(ValueError, r"lengths must have shape \(2,\)", x, p, lengths=np.array([1, 1, 1]))
    bad(TypeError, "lengths must hold integers", x, p, lengths=np.array([1.0, 2.0]))
    bad(ValueError, "lengths needs batched input", jnp.ones((4, 3)), p, lengths=np.array([1]))
    with pytest.raises(TypeError, match="cygru.jax.gru: lengths must hold integers"):
        jax.jit(lambda L: cjax.gru(x, p, lengths=L))(jnp.array([1.0, 2.0]))


def test_errors_are_raised_at_trace_time_under_jit():
    p = make()
    f = jax.jit(lambda x: cjax.gru(x, p)[0])
    with pytest.raises(ValueError, match="cygru.jax.gru: expected x with 3 features"):
        f(jnp.ones((4, 2, 5), jnp.float32))


def test_non_cpu_default_device_is_refused(monkeypatch):
    """Under a trace the arrays' device is unknown: a default device that is not the
    CPU's is refused (checked here by pretending; this machine has only a CPU)."""
    monkeypatch.setattr(cjax, "_default_platform", lambda: "gpu")
    p = make()
    with pytest.raises(ValueError, match="cygru.jax.gru: JAX's default device is a gpu"):
        jax.jit(lambda x: cjax.gru(x, p)[0])(jnp.ones((2, 1, 3), jnp.float32))
    # concrete arrays on the CPU carry their own device: accepted
    out, _ = cjax.gru(jnp.ones((2, 1, 3), jnp.float32), p)
    assert out.shape == (2, 1, 4)


def test_non_cpu_array_is_refused(monkeypatch):
    monkeypatch.setattr(cjax, "_platform_of", lambda a: "gpu" if a.ndim == 3 else None)
    with pytest.raises(ValueError, match=r"cygru.jax.gru: x is on a gpu device.*device_put"):
        cjax.gru(jnp.ones((2, 1, 3), jnp.float32), make())


def test_inputs_not_mutated_and_read_only_accepted():
    m = cygru.GRU(3, 4, 2, bidirectional=True, seed=7)
    params = m.state_dict()  # NumPy arrays, made read-only
    for a in params.values():
        a.flags.writeable = False
    x = np.random.default_rng(7).standard_normal((5, 2, 3)).astype(np.float32)
    h0 = np.random.default_rng(8).standard_normal((4, 2, 4)).astype(np.float32)
    x.flags.writeable = h0.flags.writeable = False
    before = [x.copy(), h0.copy()] + [a.copy() for a in params.values()]
    kw = dict(num_layers=2, bidirectional=True)
    out, _ = cjax.gru(x, params, h0, **kw)
    g = jax.jit(jax.grad(loss_of(cjax.gru, **kw), argnums=(0, 1, 2)))(x, h0, params)
    after = [x, h0] + list(params.values())
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert np.array_equal(np.asarray(out), m(x, h0)[0])
    assert sorted(g[2]) == sorted(params)


def test_float64_weights_give_float64_results(x64):
    params = make(dtype=np.float64)
    out, h_n = cjax.gru(jnp.ones((2, 1, 3), jnp.float32), params)  # x converted to float64
    assert out.dtype == h_n.dtype == jnp.float64
    g = jax.grad(lambda x: jnp.sum(cjax.gru(x, params)[0]))(jnp.ones((2, 1, 3), jnp.float32))
    assert g.dtype == jnp.float32  # the gradient in x's own dtype


# ---------------------------------------------------------------------------------------------
# packaging: import cygru never imports JAX; the docstring example runs
# ---------------------------------------------------------------------------------------------


def test_import_cygru_does_not_import_jax():
    code = (
        "import sys, cygru, cygru.functional, cygru.interop; "
        "assert 'jax' not in sys.modules, 'jax imported'; "
        "import cygru.jax; assert 'jax' in sys.modules"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(cjax) if t.examples]
    assert {t.name for t in tests} >= {"cygru.jax.gru"}
    for t in tests:
        t.globs = {"__name__": "__main__"}
        runner.run(t)
    assert runner.failures == 0


def test_import_without_jax_says_how_to_install():
    code = (
        "import sys; sys.modules['jax'] = None\n"
        "try:\n"
        "    import cygru.jax\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "import cygru; print(cygru.GRU(2, 3)(__import__('numpy').ones((1, 1, 2)))[0].shape)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "cygru.jax needs JAX" in res.stdout and "pip install jax" in res.stdout
    assert "(1, 1, 3)" in res.stdout  # cygru itself works on

"""cygru inside JAX: a GRU function with a custom VJP whose forward and backward run in
cygru's compiled CPU kernels through :func:`jax.pure_callback`.

Importing this module imports JAX (``import cygru`` never does). It sits above
:mod:`cygru.functional` and beside :mod:`cygru.interop`: it imports cygru, cygru never
imports it.

How it works: :func:`gru` is a :func:`jax.custom_vjp` function. Its forward is one host
callback that runs :func:`cygru.functional.gru`; its backward is one host callback that
runs the forward again *with* the activation cache and then cygru's backward pass. The
backward recomputes rather than keeping the forward's cache because the cache is the
CPU backend's private state (its layout is no contract), the residuals JAX would have to
carry are about five times the size of ``output`` per layer and direction, and a
recomputation stays stateless, so it is correct under ``jit``, ``remat``, ``vmap`` and
repeated or reordered backward passes; it costs one extra forward pass (the "Use with
JAX" page gives the measured cost).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Tuple

import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError as _exc:  # pragma: no cover - the message is the point
    raise ImportError(
        f"cygru.jax needs JAX, which cannot be imported ({_exc}); install it with `pip install jax`"
    ) from _exc

from . import _arrays as A
from . import functional as F
from ._arrays import BadType, BadValue, shape_str
from ._backend import layer_weights, param_shapes

__all__ = ["gru"]

WHO = "cygru.jax.gru"


class _Config(NamedTuple):
    """The static (hashable) description of one call: what the callbacks need besides
    the arrays."""

    names: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    input_size: int
    hidden_size: int
    num_layers: int
    num_directions: int
    bias: bool
    batch_first: bool
    reverse: bool
    reset_after: bool
    dtype: str
    out_shape: Tuple[int, ...]
    hn_shape: Tuple[int, ...]
    x_shape: Tuple[int, ...]


# ---------------------------------------------------------------------------
# the host side: NumPy arrays in, NumPy arrays out
# ---------------------------------------------------------------------------


def _host_lengths(lengths):
    return None if lengths is None else np.asarray(lengths, np.int64)


def _host_forward(cfg, x, h0, lengths, *weights):
    out, h_n = F.gru(
        np.asarray(x),
        dict(zip(cfg.names, (np.asarray(w) for w in weights))),
        np.asarray(h0),
        num_layers=cfg.num_layers,
        bidirectional=cfg.num_directions == 2,
        batch_first=cfg.batch_first,
        reset_after=cfg.reset_after,
        reverse=cfg.reverse,
        lengths=_host_lengths(lengths),
    )
    return np.asarray(out, cfg.dtype), np.asarray(h_n, cfg.dtype)


def _host_forward_mapped(cfg, x, h0, lengths, *weights):
    """The forward callback under ``vmap`` (``vmap_method="expand_dims"``): every argument
    has k leading mapped axes (size 1 where it is not mapped). When only x and h0 are
    mapped, the mapped copies become one larger batch of one call into cygru; when the
    weights or lengths are mapped too, one call per mapped element."""
    k = np.ndim(x) - len(cfg.x_shape)
    if k == 0:
        return _host_forward(cfg, x, h0, lengths, *weights)
    args = [np.asarray(x), np.asarray(h0)] + [np.asarray(w) for w in weights]
    if lengths is not None:
        args.append(np.asarray(lengths))
    lead = np.broadcast_shapes(*(a.shape[:k] for a in args))
    N = int(np.prod(lead))
    x = np.broadcast_to(args[0], lead + args[0].shape[k:]).reshape((N,) + cfg.x_shape)
    h0 = np.broadcast_to(args[1], lead + args[1].shape[k:]).reshape((N,) + cfg.hn_shape)
    shared = args[2:]
    if all(a.shape[:k] == (1,) * k for a in shared):  # one call, a batch N times larger
        weights = [a.reshape(a.shape[k:]) for a in args[2 : 2 + len(cfg.names)]]
        lens = None if lengths is None else shared[-1].reshape(-1)
        out, h_n = _forward_folded(cfg, x, h0, lens, weights, N)
    else:  # mapped weights or lengths: one call per element
        flat = [np.broadcast_to(a, lead + a.shape[k:]).reshape((N,) + a.shape[k:]) for a in shared]
        outs = []
        for i in range(N):
            ws = [a[i] for a in flat[: len(cfg.names)]]
            lens = None if lengths is None else flat[-1][i]
            outs.append(_host_forward(cfg, x[i], h0[i], lens, *ws))
        out = np.stack([o for o, _ in outs]) if N else np.zeros((0,) + cfg.out_shape, cfg.dtype)
        h_n = np.stack([h for _, h in outs]) if N else np.zeros((0,) + cfg.hn_shape, cfg.dtype)
    return out.reshape(lead + cfg.out_shape), h_n.reshape(lead + cfg.hn_shape)


def _forward_folded(cfg, x, h0, lengths, weights, N):
    """N inputs of one configuration as one call: (N, *x_shape) -> (N, *out_shape)."""
    unbatched = len(cfg.x_shape) == 2
    LD, H = cfg.hn_shape[0], cfg.hidden_size
    if unbatched:  # (N, T, I): N sequences of one batch
        xf, h0f, B, batch_first = x.transpose(1, 0, 2), h0.transpose(1, 0, 2), 1, False
    elif cfg.batch_first:  # (N, B, T, I) -> (N*B, T, I): no copy
        B, batch_first = cfg.x_shape[0], True
        xf = x.reshape((N * B,) + cfg.x_shape[1:])
    else:  # (N, T, B, I) -> (T, N*B, I)
        B, batch_first = cfg.x_shape[1], False
        xf = x.transpose(1, 0, 2, 3).reshape(cfg.x_shape[0], N * B, cfg.input_size)
    if not unbatched:
        h0f = h0.transpose(1, 0, 2, 3).reshape(LD, N * B, H)
    lens = None if lengths is None else np.tile(np.asarray(lengths, np.int64), N)
    out, h_n = F.gru(
        np.ascontiguousarray(xf),
        dict(zip(cfg.names, weights)),
        np.ascontiguousarray(h0f),
        num_layers=cfg.num_layers,
        bidirectional=cfg.num_directions == 2,
        batch_first=batch_first,
        reset_after=cfg.reset_after,
        reverse=cfg.reverse,
        lengths=lens,
    )
    DH = out.shape[-1]
    if unbatched:  # (T, N, DH), (LD, N, H)
        return out.transpose(1, 0, 2), h_n.transpose(1, 0, 2)
    h_n = h_n.reshape(LD, N, B, H).transpose(1, 0, 2, 3)
    if batch_first:  # (N*B, T, DH)
        return out.reshape((N, B) + out.shape[1:]), h_n
    return out.reshape(out.shape[0], N, B, DH).transpose(1, 0, 2, 3), h_n


@A.boundary(WHO)
def _host_backward(cfg, x, h0, lengths, d_output, d_h_n, *weights):
    """The forward again, keeping its cache, then cygru's backward: (dx, dh0, *dweights)."""
    dtype = np.dtype(cfg.dtype)
    params = {n: np.ascontiguousarray(w, dtype) for n, w in zip(cfg.names, weights)}
    # cfg carries a GRU module's options under their names
    call = F.SequenceCall.of_module(
        cfg, np.asarray(x), np.asarray(h0), _host_lengths(lengths), dtype, "cpu"
    )
    L, D = cfg.num_layers, cfg.num_directions
    _, _, cache = call.run(layer_weights(params, L, D, cfg.bias), need_cache=True)
    local = {n: np.zeros(s, dtype) for n, s in zip(cfg.names, cfg.shapes)}
    dx, dh0 = call.backward(
        cache, np.asarray(d_output), np.asarray(d_h_n), layer_weights(local, L, D, cfg.bias)
    )
    return (np.asarray(dx, dtype), np.asarray(dh0, dtype)) + tuple(local[n] for n in cfg.names)


# ---------------------------------------------------------------------------
# the JAX side
# ---------------------------------------------------------------------------


def _struct(shape, dtype):
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))


def _forward(cfg, x, h0, lengths, weights):
    result = (_struct(cfg.out_shape, cfg.dtype), _struct(cfg.hn_shape, cfg.dtype))
    return jax.pure_callback(
        lambda *a: _host_forward_mapped(cfg, *a),
        result,
        x,
        h0,
        lengths,
        *weights,
        vmap_method="expand_dims",
    )


def _gru_core(cfg, x, h0, lengths, weights):
    return _forward(cfg, x, h0, lengths, weights)


_gru_core = jax.custom_vjp(_gru_core, nondiff_argnums=(0,))


def _gru_fwd(cfg, x, h0, lengths, weights):
    # residuals: the inputs themselves (JAX holds them anyway); see the module docstring
    return _forward(cfg, x, h0, lengths, weights), (x, h0, lengths, weights)


def _backward(cfg, x, h0, lengths, d_output, d_h_n, weights):
    result = (_struct(cfg.x_shape, cfg.dtype), _struct(cfg.hn_shape, cfg.dtype)) + tuple(
        _struct(s, cfg.dtype) for s in cfg.shapes
    )
    grads = jax.pure_callback(
        lambda *a: _host_backward(cfg, *a),
        result,
        x,
        h0,
        lengths,
        d_output,
        d_h_n,
        *weights,
        vmap_method="sequential",
    )
    return grads[0], grads[1], tuple(grads[2:])


# Neither callback is differentiable in forward mode, which a second-order derivative (the
# gradient of a gradient, a Hessian) asks of them: say so by name rather than with JAX's
# generic "Pure callbacks do not support JVP". (Forward mode on gru itself is refused by
# jax.custom_vjp before it reaches them.)
def _no_second_order(cfg, primals, tangents):
    raise TypeError(
        f"{WHO}: second-order derivatives (the gradient of a gradient, a Hessian) are not "
        "supported: cygru's backward pass is not itself differentiable"
    )


_forward = jax.custom_jvp(_forward, nondiff_argnums=(0,))
_forward.defjvp(_no_second_order)
_backward = jax.custom_jvp(_backward, nondiff_argnums=(0,))
_backward.defjvp(_no_second_order)


def _gru_bwd(cfg, residuals, cotangents):
    x, h0, lengths, weights = residuals
    d_output, d_h_n = cotangents
    dx, dh0, dweights = _backward(cfg, x, h0, lengths, d_output, d_h_n, weights)
    # lengths (integers) have no gradient: None is JAX's zero cotangent
    return dx, dh0, None, dweights


_gru_core.defvjp(_gru_fwd, _gru_bwd)


# ---------------------------------------------------------------------------
# validation (at trace time: shapes and dtypes are static in JAX)
# ---------------------------------------------------------------------------


def _platform_of(a):
    """The platform ("cpu", "gpu", "tpu"...) a concrete array lives on, or None for a
    tracer or a host (NumPy) array."""
    if isinstance(a, jax.core.Tracer) or not isinstance(a, jax.Array):
        return None
    try:
        return next(iter(a.devices())).platform
    except Exception:  # an array without committed devices: nothing to object to
        return None


def _default_platform():
    dev = jax.config.jax_default_device
    if dev is not None:
        return dev if isinstance(dev, str) else dev.platform
    return jax.default_backend()


def _check_cpu(named):
    for name, a in named:
        platform = _platform_of(a)
        if platform not in (None, "cpu"):
            raise BadValue(
                f"{name} is on a {platform} device; cygru runs on the CPU only: move it "
                "with jax.device_put(a, jax.devices('cpu')[0])"
            )
    if any(isinstance(a, jax.core.Tracer) for _, a in named) and _default_platform() != "cpu":
        raise BadValue(
            f"JAX's default device is a {_default_platform()} device; cygru runs on the CPU "
            "only: trace the computation under "
            "jax.default_device(jax.devices('cpu')[0])"
        )


def _as_jax(a, name):
    if a is None or isinstance(a, (str, bytes, dict)):
        raise BadType(f"{name} must be an array of real numbers, got {type(a).__name__}")
    try:
        arr = jnp.asarray(a)
    except Exception as exc:
        raise BadType(f"{name} must be array-like, got {type(a).__name__}: {exc}") from None
    real = (jnp.floating, jnp.integer, jnp.bool_)
    if not any(jnp.issubdtype(arr.dtype, kind) for kind in real):
        raise BadType(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _weights(params, num_layers, num_directions):
    """``(names, shapes, arrays, I, H, bias, dtype)`` from PyTorch-named params."""
    if not isinstance(params, Mapping):
        raise BadType(
            "params must map PyTorch parameter names ('weight_ih_l0', 'weight_hh_l0', ...) "
            f"to arrays (a dict, e.g. module.state_dict()), got {type(params).__name__}"
        )
    for key in ("weight_ih_l0", "weight_hh_l0"):
        if key not in params:
            raise BadValue(
                f"params has no {key!r}; expected PyTorch's parameter names "
                "('weight_ih_l0', 'weight_hh_l0', optionally 'bias_ih_l0', 'bias_hh_l0', ...)"
            )
    w_ih = _as_jax(params["weight_ih_l0"], "weight_ih_l0")
    w_hh = _as_jax(params["weight_hh_l0"], "weight_hh_l0")
    if w_hh.dtype not in (jnp.float32, jnp.float64):
        raise BadType(
            f"weight_hh_l0 must be float32 or float64 (its dtype is the computation's), "
            f"got {w_hh.dtype}"
        )
    dtype = np.dtype(w_hh.dtype)
    for name, w in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh)):
        if w.ndim != 2:
            raise BadValue(
                f"expected {name} with 2 dimensions (3*hidden_size, features), "
                f"got shape {shape_str(w.shape)}"
            )
    if w_hh.shape[0] != 3 * w_hh.shape[1] or w_hh.shape[1] == 0:
        raise BadValue(f"expected weight_hh_l0 of shape (3*H, H), got {shape_str(w_hh.shape)}")
    H, I = int(w_hh.shape[1]), int(w_ih.shape[1])
    bias = "bias_ih_l0" in params
    shapes = param_shapes(I, H, num_layers, num_directions, bias)
    used = {n for n, _ in shapes}
    unexpected = sorted(str(k) for k in params if k not in used)
    if unexpected:
        raise BadValue(
            f"params has key(s) {unexpected} that num_layers={num_layers}, "
            f"bidirectional={num_directions == 2} and bias={bias} (from 'bias_ih_l0') do "
            "not use; pass the options the weights were made with"
        )
    arrays = []
    for name, shape in shapes:
        if name not in params:
            raise BadValue(f"params has no {name!r}")
        w = _as_jax(params[name], name)
        if w.dtype != dtype:
            raise BadType(
                f"{name} has dtype {w.dtype} but weight_hh_l0 has {dtype}; give every "
                "parameter the same dtype (float32 or float64)"
            )
        if tuple(w.shape) != tuple(shape):
            raise BadValue(f"{name} must have shape {shape_str(shape)}, got {shape_str(w.shape)}")
        arrays.append(w)
    return (
        tuple(n for n, _ in shapes),
        tuple(tuple(s) for _, s in shapes),
        arrays,
        I,
        H,
        bias,
        dtype,
    )


def _checked_lengths(lengths, T, B, unbatched):
    if unbatched:
        raise BadValue(
            "lengths needs batched input; x is unbatched (T, I), so there is one sequence "
            "and its length is x.shape[0]"
        )
    if isinstance(lengths, jax.core.Tracer):
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise BadType(f"lengths must hold integers, got dtype {lengths.dtype}")
        if tuple(lengths.shape) != (B,):
            raise BadValue(
                f"lengths must have shape ({B},) (one per batch row), "
                f"got {shape_str(lengths.shape)}"
            )
        return lengths.astype(jnp.int32)
    # known values: every check now, at trace time
    checked = A.check_lengths(np.asarray(lengths), T, B)
    return jnp.asarray(checked.astype(np.int32))


@A.boundary(WHO)
def gru(
    x: Any,
    params: Mapping[str, Any],
    h0: Optional[Any] = None,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    reset_after: bool = True,
    reverse: bool = False,
    lengths: Optional[Any] = None,
) -> Tuple[Any, Any]:
    """A multi-layer GRU for JAX, differentiable, run by cygru's compiled CPU kernels.

    The arguments and results are those of :func:`cygru.functional.gru`, as JAX arrays.
    It works under :func:`jax.jit`, :func:`jax.grad` / :func:`jax.vjp` (reverse mode:
    gradients for ``x``, ``h0`` and every parameter, computed by cygru's backward pass)
    and :func:`jax.vmap` (a forward mapped over x and h0 alone runs as one call over a
    larger batch; otherwise, and in the backward pass, one call per mapped element). Forward-mode
    differentiation (:func:`jax.jvp`, :func:`jax.jacfwd`) is not supported (JAX refuses
    it for a custom VJP), nor are second-order derivatives (a ``TypeError`` says so).

    Parameters
    ----------
    x : array_like
        (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I). Converted to
        the parameters' dtype (its gradient comes back in x's own dtype).
    params : mapping
        PyTorch-named parameters, a dict pytree: ``weight_ih_l{k}`` (3H, I or D*H),
        ``weight_hh_l{k}`` (3H, H), optionally ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (3H,)
        (all biases or none), with the suffix ``_reverse`` for the backward direction, as
        ``cygru.GRU(...).state_dict()`` or ``torch.nn.GRU(...).state_dict()`` name them.
        Every value has the dtype of ``weight_hh_l0``, float32 or float64 (float64 needs
        ``jax.config.update("jax_enable_x64", True)``), which is the computation's dtype.
    h0 : array_like, optional
        (L*D, B, H), or (L*D, H) for unbatched x; zeros when omitted.
    num_layers : int, default 1
    bidirectional : bool, default False
    batch_first : bool, default False
    reset_after : bool, default True
        PyTorch's gate equations (True) or the original ones (False), as for
        :class:`cygru.GRU`.
    reverse : bool, default False
        Run a one-direction GRU from the last step to the first.
    lengths : array_like of int, optional
        (B,) per-sequence lengths, 1 <= L_b <= T (batched x only): sequence b runs steps
        0..L_b-1, its outputs at t >= L_b are 0 and its h_n is its state at its own last
        step, as for :class:`cygru.GRU`. Not differentiated. Checked when the call is
        traced if its values are known then (concrete); a traced ``lengths`` out of range
        fails when the computation runs, with cygru's message inside JAX's error.

    Returns
    -------
    output : jax.Array
        (T, B, D*H) (batch_first: (B, T, D*H); unbatched: (T, D*H)).
    h_n : jax.Array
        (L*D, B, H) (unbatched: (L*D, H)).

    Raises
    ------
    ValueError, TypeError
        At trace time, for inconsistent shapes, missing or unexpected parameters, dtypes
        other than float32/float64, and arrays (or a default device) that are not on the
        CPU.

    Notes
    -----
    The forward is one :func:`jax.pure_callback` into :func:`cygru.functional.gru`. The
    backward is one callback that reruns the forward with its activation cache and then
    runs cygru's backward pass: one extra forward pass, in exchange for keeping no state
    between the two callbacks.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, cygru, cygru.jax
    >>> params = {k: jnp.asarray(v) for k, v in cygru.GRU(4, 3, seed=0).state_dict().items()}
    >>> x = jnp.ones((5, 2, 4), jnp.float32)
    >>> output, h_n = cygru.jax.gru(x, params)
    >>> output.shape, h_n.shape
    ((5, 2, 3), (1, 2, 3))
    >>> def loss(params, x):
    ...     output, h_n = cygru.jax.gru(x, params)
    ...     return jnp.sum(output**2) + jnp.sum(h_n)
    >>> grads = jax.jit(jax.grad(loss))(params, x)
    >>> grads["weight_hh_l0"].shape
    (9, 3)
    """
    num_layers = A.check_positive_int(num_layers, "num_layers")
    bidirectional = A.check_flag(bidirectional, "bidirectional")
    batch_first = A.check_flag(batch_first, "batch_first")
    reset_after = A.check_flag(reset_after, "reset_after")
    reverse = A.check_flag(reverse, "reverse")
    A.check_direction_flags(reverse, bidirectional)
    D = 2 if bidirectional else 1
    names, shapes, weights, I, H, bias, dtype = _weights(params, num_layers, D)
    x = _as_jax(x, "x")
    if h0 is not None:
        h0 = _as_jax(h0, "h0")
    named = [("x", x)] + ([] if h0 is None else [("h0", h0)])
    _check_cpu(named + list(zip(names, weights)))
    if x.ndim not in (2, 3):
        layout = "(B, T, I)" if batch_first else "(T, B, I)"
        raise BadValue(
            f"expected x with 3 dimensions {layout} or 2 (unbatched (T, I)), "
            f"got {x.ndim} dimensions, shape {shape_str(x.shape)}"
        )
    if x.shape[-1] != I:
        raise BadValue(
            f"expected x with {I} features (input_size, from weight_ih_l0) in its last "
            f"dimension, got shape {shape_str(x.shape)}"
        )
    unbatched = x.ndim == 2
    if unbatched:
        T, B = x.shape[0], 1
    else:
        T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    if T == 0:
        raise BadValue(
            f"the sequence length is 0; expected at least one time step "
            f"(x has shape {shape_str(x.shape)})"
        )
    A.check_blas_sizes(
        **{
            "T*B (sequence length x batch)": T * B,
            "4*hidden_size*directions": 4 * H * D,
            "input_size": I,
        }
    )
    LD = num_layers * D
    if unbatched:
        out_shape, hn_shape = (T, D * H), (LD, H)
    else:
        out_shape = (B, T, D * H) if batch_first else (T, B, D * H)
        hn_shape = (LD, B, H)
    if lengths is not None:
        lengths = _checked_lengths(lengths, T, B, unbatched)
    if h0 is None:
        h0 = jnp.zeros(hn_shape, dtype)
    elif tuple(h0.shape) != hn_shape:
        raise BadValue(
            f"expected h0 of shape {shape_str(hn_shape)} (num_layers*num_directions, "
            f"{'' if unbatched else 'batch, '}hidden_size), got {shape_str(h0.shape)}"
        )
    cfg = _Config(
        names=names,
        shapes=shapes,
        input_size=I,
        hidden_size=H,
        num_layers=num_layers,
        num_directions=D,
        bias=bias,
        batch_first=batch_first,
        reverse=reverse,
        reset_after=reset_after,
        dtype=dtype.name,
        out_shape=out_shape,
        hn_shape=hn_shape,
        x_shape=tuple(int(s) for s in x.shape),
    )
    return _gru_core(cfg, x.astype(dtype), h0.astype(dtype), lengths, tuple(weights))

"""Optimizers that update cygru modules' parameters in place from their gradients.

:class:`SGD`, :class:`Adam` and :class:`AdamW` follow ``torch.optim``'s algorithms, defaults
and update order, so the same gradients give the same parameters step after step (float64
to about 1e-12 after many steps; float32 to rounding). :func:`clip_grad_norm_` rescales
gradients by their global norm, as ``torch.nn.utils.clip_grad_norm_``.

What an optimizer updates (its ``params``):

- a cygru module (:class:`cygru.GRU`, :class:`cygru.GRUCell`): its live parameters
  (``named_parameters()``), from its accumulated gradients (``grads``, filled by the
  ``backward`` closures of ``vjp``);
- a dict of plain arrays (``{"w_out": w_out}``, a read-out layer's weights): updated in
  place from the gradients given to :meth:`Optimizer.step` as ``step({"w_out": g})``;
- a list or tuple of those.

The differences from ``torch.optim``: parameters and gradients are arrays (NumPy, or CuPy
for modules moved to a GPU), not tensors; a module's gradients always exist (zeros until a
``backward`` adds into them), so no parameter is skipped; there are no parameter groups
(change the learning rate through the ``lr`` attribute).
"""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._typing import Array
from .modules import GRU, GRUCell

#: what an optimizer updates (and :func:`clip_grad_norm_` scales): a cygru module, a dict
#: of plain arrays, or a list or tuple of those (defined here, beside its users, so that
#: typing.get_type_hints resolves it: cygru._typing imports no cygru module)
ParamSource = Union[GRU, GRUCell, MutableMapping[str, Array]]
Params = Union[ParamSource, Sequence[ParamSource]]

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_"]


def _is_module(obj):
    return hasattr(obj, "named_parameters") and hasattr(obj, "grads") and hasattr(obj, "zero_grad")


def _sources(params, who, what="params"):
    """params -> a list of modules and dicts of arrays (each checked)."""
    items = list(params) if isinstance(params, (list, tuple)) else [params]
    if not items:
        raise ValueError(
            f"{who}: {what} is empty; give a cygru module, a dict of arrays, or a list of those"
        )
    names = set()
    for i, item in enumerate(items):
        if _is_module(item):
            if any(item is other for other in items[:i]):
                raise ValueError(f"{who}: the same module appears twice in {what}")
            continue
        if not isinstance(item, dict):
            raise TypeError(
                f"{who}: {what} must be a cygru module, a dict of arrays, or a "
                f"list of those; got {type(item).__name__}"
            )
        if not item:
            raise ValueError(f"{who}: a dict in {what} is empty")
        for name, arr in item.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"{who}: the names of plain arrays must be strings, got "
                    f"{type(name).__name__} {name!r}"
                )
            if name in names:
                raise ValueError(f"{who}: the name {name!r} appears in two dicts of {what}")
            names.add(name)
            _check_param_array(arr, name, who)
    return items


def _module_locks(items):
    """Acquire the gradient locks of the modules among `items`, in one global order (so
    two optimizers sharing modules cannot deadlock); returns them, for release."""
    locks = sorted((m._lock for m in items if _is_module(m) and hasattr(m, "_lock")), key=id)
    for lock in locks:
        lock.acquire()
    return locks


def _check_param_array(arr, name, who):
    if not hasattr(arr, "dtype") or not hasattr(arr, "shape") or isinstance(arr, np.generic):
        raise TypeError(
            f"{who}: parameter {name!r} must be an array (updated in place), "
            f"got {type(arr).__name__}"
        )
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{who}: parameter {name!r} must be a floating-point array, got dtype {arr.dtype}"
        )
    flags = getattr(arr, "flags", None)
    if flags is not None and not flags.writeable:
        raise ValueError(
            f"{who}: parameter {name!r} is read-only; an optimizer updates "
            "its parameters in place, so they must be writeable arrays"
        )


def _check_grad(grad, param, name, who):
    if grad is None:
        raise TypeError(f"{who}: the gradient of {name!r} is None")
    if not hasattr(grad, "dtype"):
        grad = np.asarray(grad)
    if grad.dtype.kind not in "fiu":
        raise TypeError(
            f"{who}: the gradient of {name!r} must hold real numbers, got dtype {grad.dtype}"
        )
    if tuple(grad.shape) != tuple(param.shape):
        raise ValueError(
            f"{who}: the gradient of {name!r} must have the parameter's shape "
            f"{tuple(param.shape)}, got {tuple(grad.shape)}"
        )
    if type(grad) is not type(param):
        raise TypeError(
            f"{who}: the gradient of {name!r} is a {type(grad).__name__}, its "
            f"parameter a {type(param).__name__}; put both on the same device"
        )
    return grad


def _number(value, name, who, low=0.0, high=None, high_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(
            f"{who}: {name} must be a real number, got {type(value).__name__} {value!r}"
        )
    value = float(value)
    if (
        not math.isfinite(value)
        or value < low
        or (high is not None and (value >= high if high_open else value > high))
    ):
        bound = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise ValueError(f"{who}: {name} must be >= {low}{bound}, got {value!r}")
    return value


class Optimizer:
    """Base class of cygru's optimizers: the parameters, their state, locking.

    Not used directly: see :class:`SGD`, :class:`Adam` and :class:`AdamW`.

    Thread safety: :meth:`step`, :meth:`zero_grad`, :meth:`state_dict` and
    :meth:`load_state_dict` of one optimizer take its lock, so calls from several
    threads run one at a time; :meth:`step` also holds each module's gradient lock
    while it reads that module's gradients, so a ``backward`` running on another thread
    adds its gradients before or after the step, never during it. The parameters are
    updated in place: a forward call of the same module running on another thread at
    that moment may read partly updated weights (``vjp`` copies the weights it uses,
    so its ``backward`` is unaffected). Step between calls, as in any training loop.
    """

    _who = "cygru.optim.Optimizer"
    lr: float
    state: Dict[str, Dict[str, Any]]

    def __init__(self, params: Params, lr: float) -> None:
        object.__setattr__(self, "_lock", threading.Lock())
        self._params = _sources(params, self._who)
        self.lr = lr
        self.state = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "lr":  # may change between steps (a learning-rate schedule)
            value = _number(value, "lr", self._who)
        object.__setattr__(self, name, value)

    def _entries(self, grads):
        """[(state key, parameter, gradient, module or None)], everything validated."""
        plain = {k: a for item in self._params if not _is_module(item) for k, a in item.items()}
        if grads is None:
            grads = {}
        elif not hasattr(grads, "keys"):
            raise TypeError(
                f"{self._who}.step: grads must be a dict of the plain arrays' "
                f"gradients, got {type(grads).__name__}"
            )
        missing = [k for k in plain if k not in grads]
        unexpected = [k for k in grads if k not in plain]
        if missing:
            raise ValueError(
                f"{self._who}.step: no gradient for the plain array(s) {missing}: "
                "pass step({name: gradient, ...})"
            )
        if unexpected:
            raise ValueError(
                f"{self._who}.step: gradients given for {unexpected}, which are "
                f"not plain arrays of this optimizer (those are {list(plain)}); "
                "a module's gradients are read from its grads"
            )
        entries = []
        for i, item in enumerate(self._params):
            if _is_module(item):
                module_grads = item.grads
                for name, p in item.named_parameters():
                    _check_param_array(p, name, self._who)
                    if module_grads[name] is None:
                        # zero_grad(set_to_none=True) and no backward since: skipped, as
                        # torch.optim skips a parameter whose .grad is None
                        continue
                    g = _check_grad(module_grads[name], p, name, self._who)
                    entries.append((f"{i}.{name}", p, g, item))
            else:
                for name, p in item.items():
                    _check_param_array(p, name, self._who)
                    g = _check_grad(grads[name], p, name, self._who)
                    entries.append((f"{i}.{name}", p, g, None))
        return entries

    def step(self, grads: Optional[Mapping[str, Array]] = None) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : dict of str to array, optional
            The gradients of the plain arrays given in ``params`` (by their names);
            modules' gradients are read from their ``grads`` (a parameter whose gradient
            is None, after ``zero_grad(set_to_none=True)`` with no backward since, is
            skipped, as ``torch.optim`` skips one whose ``.grad`` is None). Not modified.

        Raises
        ------
        ValueError
            A gradient missing, unexpected or of the wrong shape, or a read-only
            parameter (nothing is updated then).
        TypeError
            A gradient that is not an array of real numbers.
        """
        with self._lock:
            locks = _module_locks(self._params)
            try:
                for key, p, g, _ in self._entries(grads):
                    self._update(p, g, self.state.setdefault(key, {}))
            finally:
                for lock in reversed(locks):
                    lock.release()

    def zero_grad(self) -> None:
        """Set the accumulated gradients of every module in ``params`` to zero.

        Plain arrays' gradients are passed to :meth:`step` and not kept, so there is
        nothing to reset for them. (``torch.optim``'s ``set_to_none`` has no equivalent:
        a cygru module's gradients always exist.)
        """
        with self._lock:
            for item in self._params:
                if _is_module(item):
                    item.zero_grad()

    def state_dict(self) -> Dict[str, Any]:
        """The optimizer's state (copies): hyperparameters and per-parameter buffers.

        Keys of ``"state"`` are ``"<index in params>.<parameter name>"``.
        """
        with self._lock:
            return {
                "hyperparameters": self._hyperparameters(),
                "state": {
                    k: {n: (v.copy() if hasattr(v, "copy") else v) for n, v in s.items()}
                    for k, s in self.state.items()
                },
            }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (copied in; validated first).

        Raises ``ValueError`` for a state of another optimizer kind or of other
        parameters (keys or shapes that differ).
        """
        with self._lock:
            try:
                hyper, state = state_dict["hyperparameters"], state_dict["state"]
            except (TypeError, KeyError):
                raise ValueError(
                    f"{self._who}.load_state_dict: expected a dict with keys "
                    "'hyperparameters' and 'state' (from state_dict())"
                ) from None
            if set(hyper) != set(self._hyperparameters()):
                raise ValueError(
                    f"{self._who}.load_state_dict: the hyperparameters "
                    f"{sorted(hyper)} are not this optimizer's "
                    f"{sorted(self._hyperparameters())}"
                )
            shapes = {}
            for i, item in enumerate(self._params):
                pairs = item.named_parameters() if _is_module(item) else item.items()
                for name, p in pairs:
                    shapes[f"{i}.{name}"] = (tuple(p.shape), p)
            new_state = {}
            for key, buffers in state.items():
                if key not in shapes:
                    raise ValueError(
                        f"{self._who}.load_state_dict: state for {key!r}, which "
                        f"is not a parameter of this optimizer ({list(shapes)})"
                    )
                shape, p = shapes[key]
                new = {}
                for n, v in buffers.items():
                    if n == "step":
                        new[n] = int(v)
                        continue
                    if v is None:
                        new[n] = None
                        continue
                    if tuple(np.shape(v)) != shape:
                        raise ValueError(
                            f"{self._who}.load_state_dict: {key!r} {n} has shape "
                            f"{tuple(np.shape(v))}, the parameter {shape}"
                        )
                    buf = np.zeros_like(p)
                    buf[...] = v
                    new[n] = buf
                new_state[key] = new
            # the hyperparameters pass the constructor's checks (on a throwaway optimizer)
            fresh = type(self)(self._params, **hyper)
            for k in hyper:
                object.__setattr__(self, k, getattr(fresh, k))
            self.state = new_state

    def _hyperparameters(self):
        raise NotImplementedError

    def _update(self, p, g, state):
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum, Nesterov momentum and weight decay.

    ``torch.optim.SGD``'s algorithm: with ``g`` the gradient (negated if ``maximize``),
    ``g += weight_decay * p``; with momentum, ``b = g`` at the first step and
    ``b = momentum * b + (1 - dampening) * g`` after, then ``g = g + momentum * b``
    (Nesterov) or ``g = b``; finally ``p -= lr * g``.

    Parameters
    ----------
    params : cygru module, dict of str to array, or list of those
        What to update: modules' live parameters (from their ``grads``) and plain
        arrays (from the gradients passed to :meth:`step`).
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False
        Ascend the objective instead of descending.

    Examples
    --------
    >>> import numpy as np, cygru
    >>> gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)
    >>> opt = cygru.optim.SGD(gru, lr=0.1, momentum=0.9)
    >>> (output, h_n), backward = gru.vjp(np.ones((4, 1, 2)))
    >>> opt.zero_grad()
    >>> _ = backward(output, None)         # the gradient of 0.5 * sum(output ** 2)
    >>> before = gru.weight_hh_l0.copy()
    >>> opt.step()
    >>> bool(np.allclose(gru.weight_hh_l0, before - 0.1 * gru.grads["weight_hh_l0"]))
    True
    """

    _who = "cygru.optim.SGD"

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        who = self._who
        self.momentum = _number(momentum, "momentum", who)
        self.dampening = _number(dampening, "dampening", who)
        self.weight_decay = _number(weight_decay, "weight_decay", who)
        self.nesterov = _flag(nesterov, "nesterov", who)
        self.maximize = _flag(maximize, "maximize", who)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                f"{who}: Nesterov momentum needs momentum > 0 and dampening 0, "
                f"got momentum={momentum!r}, dampening={dampening!r}"
            )
        super().__init__(params, lr)

    def _hyperparameters(self):
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "dampening": self.dampening,
            "weight_decay": self.weight_decay,
            "nesterov": self.nesterov,
            "maximize": self.maximize,
        }

    def _update(self, p, g, state):
        if self.maximize:
            g = -g
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.astype(p.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p += -self.lr * g


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015), optionally with AMSGrad and decoupled weight decay.

    ``torch.optim.Adam``'s algorithm and order of operations: at step ``t``, with ``g``
    the gradient, ``g += weight_decay * p`` (or, decoupled, ``p *= 1 - lr *
    weight_decay``); ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2)
    * g * g``; with AMSGrad ``v_max = max(v_max, v)`` replaces ``v`` below;
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``.

    Parameters
    ----------
    params : cygru module, dict of str to array, or list of those
        As for :class:`SGD`.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the moving averages of the gradient and its square, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0
        L2 penalty added to the gradient (``decoupled_weight_decay=False``) or applied
        to the parameters directly (``True``, AdamW).
    amsgrad : bool, default False
        Normalise by the largest second moment seen so far.
    maximize : bool, default False
    decoupled_weight_decay : bool, default False

    Examples
    --------
    >>> import numpy as np, cygru
    >>> gru = cygru.GRU(2, 3, seed=0)
    >>> w_out = np.zeros((3, 1), np.float32)
    >>> opt = cygru.optim.Adam([gru, {"w_out": w_out}], lr=0.01)
    >>> (output, h_n), backward = gru.vjp(np.ones((4, 1, 2), np.float32))
    >>> opt.zero_grad()
    >>> _ = backward(np.ones_like(output), None)
    >>> opt.step({"w_out": np.ones((3, 1))})   # plain arrays' gradients go to step
    >>> w_out.ravel()                          # Adam's first step moves by lr
    array([-0.01, -0.01, -0.01], dtype=float32)
    """

    _who = "cygru.optim.Adam"

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        who = self._who
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"{who}: betas must be a pair of numbers, got {betas!r}") from None
        self.betas = (
            _number(beta1, "betas[0]", who, high=1.0, high_open=True),
            _number(beta2, "betas[1]", who, high=1.0, high_open=True),
        )
        self.eps = _number(eps, "eps", who)
        self.weight_decay = _number(weight_decay, "weight_decay", who)
        self.amsgrad = _flag(amsgrad, "amsgrad", who)
        self.maximize = _flag(maximize, "maximize", who)
        self.decoupled_weight_decay = _flag(decoupled_weight_decay, "decoupled_weight_decay", who)
        super().__init__(params, lr)

    def _hyperparameters(self):
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "amsgrad": self.amsgrad,
            "maximize": self.maximize,
            "decoupled_weight_decay": self.decoupled_weight_decay,
        }

    def _update(self, p, g, state):
        beta1, beta2 = self.betas
        lr = self.lr
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(p)
        if self.maximize:
            g = -g
        state["step"] += 1
        step = state["step"]
        if self.weight_decay != 0:
            if self.decoupled_weight_decay:
                p *= 1 - lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m, v = state["exp_avg"], state["exp_avg_sq"]
        # m = lerp(m, g, 1 - beta1), in torch's form for the weight's side of 0.5
        w = 1 - beta1
        if w < 0.5:
            m += w * (g - m)
        else:
            m[...] = g - (g - m) * (1 - w)
        v *= beta2
        v += (1 - beta2) * g * g
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        if self.amsgrad:
            v_max = state.setdefault("max_exp_avg_sq", np.zeros_like(p))
            np.maximum(v_max, v, out=v_max)
            v = v_max
        denom = np.sqrt(v) / bias_correction2_sqrt
        denom += self.eps
        p += -(lr / bias_correction1) * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019): ``torch.optim.AdamW``.

    :class:`Adam` with ``decoupled_weight_decay=True`` and, as in PyTorch, a default
    ``weight_decay`` of 0.01: each step first scales the parameters by
    ``1 - lr * weight_decay``, then takes Adam's step.

    Parameters
    ----------
    params : cygru module, dict of str to array, or list of those
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.01
    amsgrad : bool, default False
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np, cygru
    >>> w = {"w": np.ones(2)}
    >>> opt = cygru.optim.AdamW(w, lr=0.1, weight_decay=0.5)
    >>> opt.step({"w": np.zeros(2)})          # zero gradient: only the decay acts
    >>> w["w"]
    array([0.95, 0.95])
    """

    _who = "cygru.optim.AdamW"

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )

    def _hyperparameters(self):
        h = super()._hyperparameters()
        del h["decoupled_weight_decay"]
        return h


def _flag(value, name, who):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{who}: {name} must be True or False, got {type(value).__name__} {value!r}"
        )
    return bool(value)


def clip_grad_norm_(
    grads_of: Params, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> float:
    """Scale gradients in place so that their global norm is at most ``max_norm``.

    ``torch.nn.utils.clip_grad_norm_``: the total norm is the ``norm_type``-norm of
    all the gradients taken together; if it exceeds ``max_norm``, every gradient is
    multiplied by ``max_norm / (total_norm + 1e-6)``. (The norms are summed in float64.)

    Parameters
    ----------
    grads_of : cygru module, dict of str to array, or list of those
        A module's accumulated ``grads`` are scaled; a dict's arrays are gradients
        themselves (of plain arrays, as passed to an optimizer's ``step``), scaled in
        place.
    max_norm : float
    norm_type : float, default 2.0
        ``p`` of the p-norm; ``float("inf")`` for the largest absolute value.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` if the total norm is nan or infinite (otherwise the
        gradients are scaled by a nan or zero factor, as PyTorch does).

    Returns
    -------
    float
        The total norm of the gradients before clipping.

    Examples
    --------
    >>> import numpy as np, cygru
    >>> g = {"a": np.array([3.0, 0.0]), "b": np.array([4.0])}
    >>> cygru.optim.clip_grad_norm_(g, max_norm=1.0)
    5.0
    >>> bool(np.isclose(np.sqrt(sum((x ** 2).sum() for x in g.values())), 1.0))
    True
    """
    who = "cygru.optim.clip_grad_norm_"
    max_norm = _number(max_norm, "max_norm", who)
    if (
        isinstance(norm_type, (bool, np.bool_))
        or not isinstance(norm_type, (int, float, np.number))
        or not (float(norm_type) > 0)
    ):
        raise ValueError(f"{who}: norm_type must be a positive number or inf, got {norm_type!r}")
    norm_type = float(norm_type)
    items = _sources(grads_of, who, "grads_of")
    arrays = [
        g for item in items for g in (item.grads.values() if _is_module(item) else item.values())
    ]
    locks = _module_locks(items)
    try:
        if not arrays:
            return 0.0
        if math.isinf(norm_type):
            total = max(float(abs(g).max()) if g.size else 0.0 for g in arrays)
        else:
            norms = [
                float(np.linalg.norm(g.ravel().astype(np.float64), norm_type)) if g.size else 0.0
                for g in arrays
            ]
            total = float(np.linalg.norm(np.array(norms), norm_type))
        if error_if_nonfinite and not math.isfinite(total):
            raise RuntimeError(
                f"{who}: the total norm of order {norm_type} of the gradients "
                f"is {total}; they cannot be clipped. Set "
                "error_if_nonfinite=False to scale them anyway"
            )
        coef = min(max_norm / (total + 1e-6), 1.0) if total == total else float("nan")
        if coef != 1.0:
            with np.errstate(invalid="ignore"):  # inf * 0 is nan, as in PyTorch
                for g in arrays:
                    g *= coef
        return total
    finally:
        for lock in reversed(locks):
            lock.release()

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
for modules moved to a GPU), not tensors; a module's gradients are zeros until a
``backward`` adds into them (None after ``zero_grad(set_to_none=True)``: such a parameter
is skipped, as in PyTorch); there are no parameter groups (change the learning rate
through the ``lr`` attribute).

Checked before anything changes (a call that raises has changed nothing): parameters are
writeable floating-point arrays, no two sharing memory (the same array under two names, a
view of another, or a module's parameter also given as a plain array would be updated
twice: ValueError, as ``torch.optim`` refuses a parameter in two groups); gradients hold
real numbers and are converted to their parameter's dtype before any arithmetic (an
integer gradient acts as the same numbers in floating point; bool and complex ones are
refused); a loaded state fits the parameters and the algorithm.
"""

from __future__ import annotations

import math
import weakref
from collections import abc
from typing import Any, Dict, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _arrays as A
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


def _sources(params, who, what="params", kind="parameter", check=True):
    """params -> a list of modules and dicts of arrays; with `check`, every array
    checked (:func:`_named_arrays`: no two may share memory)."""
    items = list(params) if isinstance(params, (list, tuple)) else [params]
    if not items:
        raise ValueError(
            f"{who}: {what} is empty; give a cygru module, a dict of arrays, or a list of those"
        )
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
    if check:
        _named_arrays(items, who, what, kind)
    return items


def _named_arrays(items, who, what="params", kind="parameter", seen=None):
    """[(index in items, name, array, module or None)] of every parameter of `items`
    (``kind="gradient"``: every gradient; a module's None gradients are left out), each
    checked to be a writeable floating-point array, the plain arrays' names unique, and
    no two arrays sharing memory (the same array under two names, a view of another, or
    a module's parameter also given as a plain array: it would be updated twice).

    `seen`, a list kept by the caller, remembers (by weak reference) the arrays last
    found disjoint: when the same array objects come again, the memory check is skipped
    (an array's memory does not move; a new array, or a freed one, is checked again)."""
    out = []
    names = set()
    for i, item in enumerate(items):
        if _is_module(item):
            if kind == "parameter":
                pairs = item.named_parameters()
            else:
                pairs = [(n, g) for n, g in item.grads.items() if g is not None]
            for name, arr in pairs:
                _check_array(arr, name, who, kind)
                out.append((i, name, arr, item))
            continue
        for name, arr in item.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"{who}: the names of plain arrays must be strings, got "
                    f"{type(name).__name__} {name!r}"
                )
            if name in names:
                raise ValueError(f"{who}: the name {name!r} appears in two dicts of {what}")
            names.add(name)
            _check_array(arr, name, who, kind)
            out.append((i, name, arr, None))
    if seen is not None and len(seen) == len(out):
        if all(ref() is arr for ref, (_, _, arr, _) in zip(seen, out)):
            return out
    pair = A.shared_memory([((i, name), arr) for i, name, arr, _ in out])
    if pair is not None:
        a, b = (f"{what}[{i}][{n!r}]" if len(items) > 1 else repr(n) for i, n in pair)
        twice = "updated twice per step" if kind == "parameter" else "scaled twice"
        raise ValueError(
            f"{who}: the {kind}s {a} and {b} share memory (the same array, or views of "
            f"one): it would be {twice}, as torch.optim refuses a parameter given in "
            "more than one group. Give every array once"
        )
    if seen is not None:
        try:
            seen[:] = [weakref.ref(arr) for _, _, arr, _ in out]
        except TypeError:  # an array type without weak references: checked every time
            seen[:] = []
    return out


def _module_locks(items):
    """Acquire the gradient locks of the modules among `items`, in one global order (so
    two optimizers sharing modules cannot deadlock); returns them, for release."""
    locks = sorted((m._lock for m in items if _is_module(m) and hasattr(m, "_lock")), key=id)
    for lock in locks:
        lock.acquire()
    return locks


def _check_array(arr, name, who, kind="parameter"):
    """A parameter (or, for clip_grad_norm_, a gradient) updated in place: a writeable
    array of floating-point numbers."""
    if (
        type(arr) is np.ndarray
        and arr.dtype.kind == "f"
        and arr.flags.writeable
        and (arr.flags.c_contiguous or arr.flags.f_contiguous)
    ):
        return  # the common case, quickly
    if not hasattr(arr, "dtype") or not hasattr(arr, "shape") or isinstance(arr, np.generic):
        raise TypeError(
            f"{who}: {kind} {name!r} must be an array (updated in place), got {type(arr).__name__}"
        )
    if getattr(arr.dtype, "kind", None) != "f":
        raise TypeError(
            f"{who}: {kind} {name!r} must be a floating-point array, got dtype {arr.dtype}"
        )
    flags = getattr(arr, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        raise ValueError(
            f"{who}: {kind} {name!r} is read-only; it is updated in place, so it must "
            "be a writeable array"
        )
    if A.overlaps_itself(arr):
        raise ValueError(
            f"{who}: {kind} {name!r} has elements that share memory (a broadcast or "
            "as_strided view): an in-place update would write one element several "
            "times; give an array whose elements are distinct (e.g. a copy)"
        )


def _check_grad(grad, param, name, who):
    """The gradient of `param` as an array of `param`'s dtype, type and shape: integer
    gradients converted (to the parameter's floating-point dtype, before any arithmetic),
    other floating-point dtypes too; bool, complex and non-numeric ones refused."""
    if (
        type(grad) is np.ndarray
        and type(param) is np.ndarray
        and grad.dtype == param.dtype
        and grad.shape == param.shape
    ):  # the common case, quickly
        return grad.copy() if np.may_share_memory(grad, param) else grad
    if grad is None:
        raise TypeError(f"{who}: the gradient of {name!r} is None")
    if isinstance(param, np.ndarray) and not isinstance(grad, np.ndarray):
        if A.is_cuda_object(grad):
            raise TypeError(
                f"{who}: the gradient of {name!r} is on a GPU, its parameter in host "
                "memory; put both on the same device"
            )
        try:
            grad = np.asarray(grad)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{who}: the gradient of {name!r} must be an array of real numbers, "
                f"got {type(grad).__name__} ({exc})"
            ) from None
    elif type(grad) is not type(param):
        raise TypeError(
            f"{who}: the gradient of {name!r} is a {type(grad).__name__}, its "
            f"parameter a {type(param).__name__}; put both on the same device"
        )
    if getattr(grad.dtype, "kind", None) not in ("f", "i", "u"):
        raise TypeError(
            f"{who}: the gradient of {name!r} must hold real numbers (floating-point or "
            f"integer), got dtype {grad.dtype}"
        )
    if tuple(grad.shape) != tuple(param.shape):
        raise ValueError(
            f"{who}: the gradient of {name!r} must have the parameter's shape "
            f"{tuple(param.shape)}, got {tuple(grad.shape)}"
        )
    if grad.dtype != param.dtype:
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf
            grad = grad.astype(param.dtype)
    elif isinstance(grad, np.ndarray) and np.may_share_memory(grad, param):
        grad = grad.copy()  # the gradient is read after the parameter starts changing
    return grad


def _number(value, name, who, low=0.0, high=None, high_open=False):
    """A finite real number in [low, high] ([low, high) with `high_open`; no upper bound
    with `high` None), as a float. The type rule is cygru's one rule for real-valued
    options (:func:`cygru._arrays.real_float`: any real number but a bool); errors name
    `who`."""
    try:
        value = A.real_float(value, name)
    except A.ArgumentError as exc:
        raise exc.named(who) from None
    if (
        not math.isfinite(value)
        or value < low
        or (high is not None and (value >= high if high_open else value > high))
    ):
        bound = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise ValueError(f"{who}: {name} must be >= {low}{bound}, got {value!r}")
    return value


_MAX_STEP = 2**62  # beta ** step needs a step that converts to a float


def _step_count(value, where):
    """A step count: an integer in [0, 2**62] (Python or NumPy, or a 0-d array or tensor
    of one; an integral float such as PyTorch's ``tensor(3.)`` is read as 3); raises
    ValueError/TypeError naming `where`."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    elif (
        not isinstance(value, (int, float, np.generic))
        and getattr(value, "ndim", None) == 0
        and hasattr(value, "__array__")
    ):
        try:  # a 0-d tensor, as torch.optim keeps its step count
            value = np.asarray(value)[()]
        except Exception:
            pass  # refused below, by type
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be an integer in [0, 2**62], got {value!r}")
    if isinstance(value, (int, np.integer)):
        count = int(value)
    elif isinstance(value, (float, np.floating)):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{where} must be an integer in [0, 2**62], got {value!r}")
        count = int(value)
    else:
        raise TypeError(
            f"{where} must be an integer in [0, 2**62], got {type(value).__name__} {value!r}"
        )
    if not 0 <= count <= _MAX_STEP:
        shown = count if count < _MAX_STEP**2 else f"an integer of {len(str(count))} digits"
        raise ValueError(f"{where} must be an integer in [0, 2**62], got {shown}")
    return count


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
    # the per-parameter state: {buffer name: (required once the state is non-empty,
    # values must be >= 0, may be None)}, and whether the state holds a step count
    _buffers: Dict[str, Tuple[bool, bool, bool]] = {}
    _counts_steps = False
    _hyper_names: Tuple[str, ...] = ("lr",)

    def __init__(self, params: Params, lr: Union[float, Dict[str, Any]]) -> None:
        # lr: the learning rate, or a subclass's hyperparameters (a dict, with "lr")
        hyper = dict(lr) if isinstance(lr, dict) else {"lr": lr}
        A.new_locks(self, "_lock")  # a new one in a forked child
        object.__setattr__(self, "_disjoint", [])  # arrays last found not to share memory
        for k, v in self._checked(self._who, hyper).items():
            object.__setattr__(self, k, v)
        self._params = _sources(params, self._who)
        self.state = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._hyper_names:
            # a hyperparameter assigned between steps (a learning-rate schedule, say)
            # passes the constructor's checks, with the others as they are
            hyper = self._hyperparameters()
            hyper[name] = value
            value = self._checked(self._who, hyper)[name]
        elif name == "state" and "_params" in self.__dict__:
            self._check_state_mapping(value)
        object.__setattr__(self, name, value)

    def _check_state_mapping(self, value):
        """A ``state`` assigned after construction: a dict of this optimizer's parameter
        keys to dicts (their buffers are checked at the next step). A step would
        otherwise fail with an unnamed error, or state_dict() hold keys that
        load_state_dict refuses."""
        who = self._who
        if type(value) is not dict:
            raise TypeError(
                f"{who}: state must be a dict of parameter keys to dicts of buffers, got "
                f"{type(value).__name__}"
            )
        keys = {f"{i}.{name}" for i, name, _, _ in _named_arrays(self._params, who)}
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise ValueError(
                f"{who}: state has the keys {unknown[:5]}, which are not parameters of "
                f"this optimizer (those are '<index in params>.<name>', e.g. {min(keys)!r})"
            )
        for k, v in value.items():
            if not isinstance(v, dict):
                raise TypeError(f"{who}: the state of {k!r} must be a dict, got {type(v).__name__}")

    @classmethod
    def _checked(cls, who, hyper):
        """The hyperparameters `hyper` (a complete dict) checked and normalised."""
        return {"lr": _number(hyper["lr"], "lr", who)}

    def _entries(self, grads):
        """[(state key, parameter, gradient, state updates)], everything validated
        before anything changes: the parameters (writeable floating-point arrays, no two
        sharing memory), the gradients (converted to their parameter's dtype) and the
        state of each parameter (buffers converted to the parameter's dtype and device,
        when the module was converted since)."""
        who = f"{self._who}.step"
        named = _named_arrays(self._params, who, seen=self._disjoint)
        plain = {name for _, name, _, module in named if module is None}
        if grads is None:
            grads = {}
        elif not hasattr(grads, "keys"):
            raise TypeError(
                f"{who}: grads must be a dict of the plain arrays' "
                f"gradients, got {type(grads).__name__}"
            )
        missing = [k for k in plain if k not in grads]
        unexpected = [k for k in grads if k not in plain]
        if missing:
            raise ValueError(
                f"{who}: no gradient for the plain array(s) {missing}: "
                "pass step({name: gradient, ...})"
            )
        if unexpected:
            raise ValueError(
                f"{who}: gradients given for {unexpected}, which are "
                f"not plain arrays of this optimizer (those are {sorted(plain)}); "
                "a module's gradients are read from its grads"
            )
        entries = []
        module_grads = {}
        layout = self._state_layout()
        for i, name, p, module in named:
            if module is not None:
                if i not in module_grads:
                    module_grads[i] = module.grads
                if name not in module_grads[i]:
                    raise ValueError(
                        f"{who}: the module's grads has no entry {name!r} (it was "
                        f"removed); restore it, e.g. grads[{name!r}] = None"
                    )
                g = module_grads[i][name]
                if g is None:
                    # zero_grad(set_to_none=True) and no backward since: skipped, as
                    # torch.optim skips a parameter whose .grad is None
                    continue
            else:
                g = grads[name]
                if isinstance(g, np.ndarray) and any(
                    q is not p and np.may_share_memory(g, q) for _, _, q, _ in named
                ):
                    g = g.copy()  # another parameter's memory: read it before any update
            g = _check_grad(g, p, name, who)
            key = f"{i}.{name}"
            buffers = self.state.get(key, {})
            if _state_fits(buffers, p, layout):
                fixes = {}
            else:  # raises, or converts buffers to p's dtype or device
                fixes = self._checked_state(key, buffers, p, who, False)
            entries.append((key, p, g, fixes))
        return entries

    def _checked_state(self, key, buffers, p, who, deep):
        """The state of parameter `key` checked against the parameter `p` and this kind
        of optimizer: known buffer names only, each required one present once the state
        is non-empty, buffers of p's shape holding real numbers, a step count an integer
        >= 0. ``deep`` (load_state_dict): also finite values (and >= 0 where the
        algorithm takes a square root), and returns the whole state, converted to new
        arrays of p's dtype and device. Otherwise returns the buffers that need a
        conversion to p's dtype or device (after module.double() or to()), converted."""
        if not isinstance(buffers, abc.Mapping):
            raise TypeError(
                f"{who}: the state of {key!r} must be a dict, got {type(buffers).__name__}"
            )
        specs, known, required = self._state_layout()
        unknown = sorted(str(n) for n in buffers if n not in known)
        if unknown:
            raise ValueError(
                f"{who}: the state of {key!r} has the unknown entries {unknown}; "
                f"{type(self).__name__} keeps {sorted(known)}"
            )
        if buffers:
            absent = [n for n in required if n not in buffers]
            if absent:
                raise ValueError(
                    f"{who}: the state of {key!r} lacks {absent} (a started "
                    f"{type(self).__name__} state holds {sorted(required)})"
                )
        out = {}
        for n, v in buffers.items():
            where = f"{who}: the state of {key!r}: {n}"
            if n == "step":
                count = _step_count(v, where)
                if deep:
                    out[n] = count
                elif type(v) is not int:
                    out[n] = count
                continue
            if v is None:
                if specs[n][2]:  # a buffer that may be None (not yet created)
                    if deep:
                        out[n] = None
                    continue
                raise TypeError(f"{where} is None; it must be an array")
            out_v = _checked_buffer(v, p, where, deep, nonnegative=specs[n][1])
            if out_v is not v:
                out[n] = out_v
        return out

    def step(self, grads: Optional[Mapping[str, Array]] = None) -> None:
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : dict of str to array, optional
            The gradients of the plain arrays given in ``params`` (by their names);
            modules' gradients are read from their ``grads`` (a parameter whose gradient
            is None, after ``zero_grad(set_to_none=True)`` with no backward since, is
            skipped, as ``torch.optim`` skips one whose ``.grad`` is None). Not modified.
            Integer gradients are converted to the parameter's floating-point dtype
            before any arithmetic (so is a floating-point gradient of another dtype).

        Raises
        ------
        ValueError
            A gradient missing, unexpected or of the wrong shape, a read-only
            parameter, two parameters sharing memory, or a per-parameter state that
            does not fit its parameter (nothing is updated then).
        TypeError
            A gradient that is not an array of real numbers (bool and complex
            gradients are refused), or a parameter that is not a floating-point array.

        Examples
        --------
        A module's gradients come from its ``grads``; a plain array's from ``grads``:

        >>> import numpy as np, cygru
        >>> cell = cygru.GRUCell(2, 3, dtype=np.float64, seed=0)
        >>> w = np.ones(3)
        >>> opt = cygru.optim.SGD([cell, {"w": w}], lr=0.5)
        >>> before = cell.weight_hh.copy()
        >>> cell.grads["weight_hh"][...] = 1.0       # as a backward would add
        >>> opt.step({"w": np.array([1.0, 2.0, 0.0])})
        >>> w                                       # w - lr * grad
        array([0.5, 0. , 1. ])
        >>> bool(np.allclose(cell.weight_hh, before - 0.5))
        True
        """
        with self._lock:
            locks = _module_locks(self._params)
            try:
                entries = self._entries(grads)
                for key, p, g, fixes in entries:
                    state = self.state.setdefault(key, {})
                    state.update(fixes)
                    self._update(p, g, state)
            finally:
                for lock in reversed(locks):
                    lock.release()

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Reset the accumulated gradients of every module in ``params``.

        Calls each module's :meth:`~cygru.GRU.zero_grad`: zeros written in place
        (``set_to_none=False``, cygru's default), or every gradient set to None
        (``set_to_none=True``, PyTorch's default; a step then skips those parameters until
        a backward stores gradients again). Plain arrays' gradients are passed to
        :meth:`step` and not kept, so there is nothing to reset for them.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> gru = cygru.GRU(2, 3, seed=0)
        >>> opt = cygru.optim.Adam(gru)
        >>> gru.grads["bias_ih_l0"][...] = 1.0
        >>> opt.zero_grad()                              # zeros, in place
        >>> float(np.abs(gru.grads["bias_ih_l0"]).sum())
        0.0
        >>> opt.zero_grad(set_to_none=True)              # PyTorch's default
        >>> gru.grads["bias_ih_l0"] is None
        True
        """
        set_to_none = _flag(set_to_none, "set_to_none", f"{self._who}.zero_grad")
        with self._lock:
            for item in self._params:
                if _is_module(item):
                    item.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict[str, Any]:
        """The optimizer's state (copies): hyperparameters and per-parameter buffers.

        Keys of ``"state"`` are ``"<index in params>.<parameter name>"``.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> cell = cygru.GRUCell(2, 3, seed=0)
        >>> opt = cygru.optim.SGD(cell, lr=0.1, momentum=0.9)
        >>> cell.grads["bias_hh"][...] = 1.0
        >>> opt.step()
        >>> sd = opt.state_dict()
        >>> sd["hyperparameters"]["momentum"], sorted(sd["state"])[:2]
        (0.9, ['0.bias_hh', '0.bias_ih'])
        >>> sd["state"]["0.bias_hh"]["momentum_buffer"]
        array([1., 1., 1., 1., 1., 1., 1., 1., 1.], dtype=float32)
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

        The whole state is checked before anything changes; on an error the optimizer
        is left as it was. Checked: the hyperparameters (this optimizer's names, each
        passing the constructor's checks); every state key a parameter of this
        optimizer; every buffer this kind keeps (SGD: ``momentum_buffer``; Adam and
        AdamW: ``step``, ``exp_avg`` and ``exp_avg_sq``) present in a started state and no
        unknown one (Adam's ``max_exp_avg_sq``, AMSGrad's running maximum, may be absent:
        it starts from zeros, as at the first AMSGrad step); each buffer an array of
        real, finite numbers of the parameter's shape (``exp_avg_sq`` and
        ``max_exp_avg_sq`` also >= 0), converted to the parameter's dtype; ``step`` an
        integer in [0, 2**62].

        Raises
        ------
        ValueError
            A state of another optimizer kind or of other parameters (keys or shapes
            that differ), a missing or unknown buffer, a non-finite or negative value.
        TypeError
            A state that is not made of dicts, arrays of real numbers and integers.

        Examples
        --------
        Resume training: a new optimizer over the restored module continues where the
        saved one stopped (Adam's moving averages and step count included):

        >>> import numpy as np, cygru
        >>> gru = cygru.GRU(2, 3, dtype=np.float64, seed=0)
        >>> opt = cygru.optim.Adam(gru, lr=0.01)
        >>> gru.grads["bias_hh_l0"][...] = 1.0
        >>> opt.step()
        >>> saved_weights, saved_opt = gru.state_dict(), opt.state_dict()
        >>> resumed = cygru.GRU(2, 3, dtype=np.float64)
        >>> resumed.load_state_dict(saved_weights)
        <All keys matched successfully>
        >>> opt2 = cygru.optim.Adam(resumed, lr=0.01)
        >>> opt2.load_state_dict(saved_opt)
        >>> opt2.state["0.bias_hh_l0"]["step"], opt2.lr
        (1, 0.01)
        >>> resumed.grads["bias_hh_l0"][...] = 1.0
        >>> gru.grads["bias_hh_l0"][...] = 1.0
        >>> opt.step(); opt2.step()                  # the same second step
        >>> bool(np.array_equal(gru.bias_hh_l0, resumed.bias_hh_l0))
        True
        """
        who = f"{self._who}.load_state_dict"
        with self._lock:
            try:
                hyper, state = state_dict["hyperparameters"], state_dict["state"]
            except (TypeError, KeyError, IndexError):
                raise ValueError(
                    f"{who}: expected a dict with keys "
                    "'hyperparameters' and 'state' (from state_dict())"
                ) from None
            if not isinstance(hyper, abc.Mapping) or not isinstance(state, abc.Mapping):
                raise TypeError(
                    f"{who}: 'hyperparameters' and 'state' must be dicts, got "
                    f"{type(hyper).__name__} and {type(state).__name__}"
                )
            if set(hyper) != set(self._hyperparameters()):
                raise ValueError(
                    f"{who}: the hyperparameters "
                    f"{sorted(map(str, hyper))} are not this optimizer's "
                    f"{sorted(self._hyperparameters())}"
                )
            # the hyperparameters pass the constructor's checks
            checked = self._checked(f"{who}: hyperparameters", dict(hyper))
            params = {f"{i}.{name}": p for i, name, p, _ in _named_arrays(self._params, who)}
            new_state = {}
            for key, buffers in state.items():
                if key not in params:
                    raise ValueError(
                        f"{who}: state for {key!r}, which "
                        f"is not a parameter of this optimizer ({list(params)})"
                    )
                new_state[key] = self._checked_state(key, buffers, params[key], who, deep=True)
            for k, v in checked.items():
                object.__setattr__(self, k, v)
            object.__setattr__(self, "state", new_state)  # checked above

    def _hyperparameters(self):
        raise NotImplementedError

    @classmethod
    def _state_layout(cls):
        """(buffer specs, every known name, the names a started state must hold)."""
        known = set(cls._buffers) | ({"step"} if cls._counts_steps else set())
        required = [n for n, spec in cls._buffers.items() if spec[0]]
        return cls._buffers, known, required + (["step"] if cls._counts_steps else [])

    def _update(self, p, g, state):
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({args})"


def _state_fits(buffers, p, layout):
    """The quick check made at every step: True when the state `buffers` of `p` is as
    the optimizer itself leaves it (known names, every required one, a step count an
    int >= 0, buffers of p's type, dtype and shape); False sends it to the full check."""
    if type(buffers) is not dict:
        return False
    specs, known, required = layout
    if buffers:
        for n in required:
            if n not in buffers:
                return False
    for n, v in buffers.items():
        if n == "step":
            if n in known and type(v) is int and 0 <= v <= _MAX_STEP:
                continue
            return False
        spec = specs.get(n)
        if spec is None:
            return False
        if v is None:
            if spec[2]:
                continue
            return False
        if type(v) is not type(p) or v.dtype != p.dtype or v.shape != p.shape:
            return False
    return True


def _checked_buffer(v, p, where, deep, nonnegative):
    """A state buffer `v` of parameter `p`. ``deep``: checked on the host (real numbers,
    p's shape, finite, >= 0 if `nonnegative`) and returned as a new array of p's dtype
    on p's device. Otherwise (at every step, cheap): an array of p's shape is required,
    and returned as it is, or converted when its dtype or device is not p's."""
    if not deep:
        if not hasattr(v, "dtype") or tuple(getattr(v, "shape", ())) != tuple(p.shape):
            raise ValueError(
                f"{where} must be an array of the parameter's shape {tuple(p.shape)}, got "
                f"{tuple(np.shape(v)) if hasattr(v, 'shape') else type(v).__name__}"
            )
        if type(v) is type(p) and v.dtype == p.dtype:
            return v
        if getattr(v.dtype, "kind", None) not in ("f", "i", "u"):
            raise TypeError(f"{where} must hold real numbers, got dtype {v.dtype}")
        return A.to_device(A.to_host(v).astype(p.dtype), A.device_of(p))
    try:
        host = A.to_host(v)
    except Exception as exc:
        raise TypeError(
            f"{where} must be an array of real numbers, got {type(v).__name__} ({exc})"
        ) from None
    if host.dtype.kind not in ("f", "i", "u"):
        raise TypeError(f"{where} must hold real numbers, got dtype {host.dtype}")
    if tuple(host.shape) != tuple(p.shape):
        raise ValueError(f"{where} has shape {tuple(host.shape)}, the parameter {tuple(p.shape)}")
    with np.errstate(over="ignore"):
        buf = np.array(host, dtype=p.dtype, copy=True, order="C")
    if not np.isfinite(buf).all():
        raise ValueError(f"{where} holds non-finite values (nan or inf) in the parameter's dtype")
    if nonnegative and (buf < 0).any():
        raise ValueError(f"{where} holds negative values; it is a mean of squares, >= 0")
    return buf if isinstance(p, np.ndarray) else A.to_device(buf, A.device_of(p))


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
    _hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _buffers = {"momentum_buffer": (False, False, True)}

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
        hyper = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, hyper)

    @classmethod
    def _checked(cls, who, hyper):
        out = {
            "lr": _number(hyper["lr"], "lr", who),
            "momentum": _number(hyper["momentum"], "momentum", who),
            "dampening": _number(hyper["dampening"], "dampening", who),
            "weight_decay": _number(hyper["weight_decay"], "weight_decay", who),
            "nesterov": _flag(hyper["nesterov"], "nesterov", who),
            "maximize": _flag(hyper["maximize"], "maximize", who),
        }
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(
                f"{who}: Nesterov momentum needs momentum > 0 and dampening 0, "
                f"got momentum={hyper['momentum']!r}, dampening={hyper['dampening']!r}"
            )
        return out

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
    _hyper_names = (
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "amsgrad",
        "maximize",
        "decoupled_weight_decay",
    )
    _buffers = {
        "exp_avg": (True, False, False),
        "exp_avg_sq": (True, True, False),
        "max_exp_avg_sq": (False, True, False),  # created at the first AMSGrad step
    }
    _counts_steps = True

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
        hyper = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, hyper)

    @classmethod
    def _checked(cls, who, hyper):
        betas = hyper["betas"]
        if isinstance(betas, (str, bytes)):
            betas = None
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"{who}: betas must be a pair of numbers, got {betas!r}") from None
        return {
            "lr": _number(hyper["lr"], "lr", who),
            "betas": (
                _number(beta1, "betas[0]", who, high=1.0, high_open=True),
                _number(beta2, "betas[1]", who, high=1.0, high_open=True),
            ),
            "eps": _number(hyper["eps"], "eps", who),
            "weight_decay": _number(hyper["weight_decay"], "weight_decay", who),
            "amsgrad": _flag(hyper["amsgrad"], "amsgrad", who),
            "maximize": _flag(hyper["maximize"], "maximize", who),
            "decoupled_weight_decay": _flag(
                hyper.get("decoupled_weight_decay", False), "decoupled_weight_decay", who
            ),
        }

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
    _hyper_names = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")

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

    @classmethod
    def _checked(cls, who, hyper):
        out = super()._checked(who, {**hyper, "decoupled_weight_decay": True})
        out["decoupled_weight_decay"] = True  # always: AdamW is Adam with it
        return out

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "decoupled_weight_decay":
            raise AttributeError(
                f"{self._who}: decoupled_weight_decay is always True for AdamW; use "
                "cygru.optim.Adam(decoupled_weight_decay=...) for the other form"
            )
        super().__setattr__(name, value)


def _flag(value, name, who):
    """A boolean option by cygru's one rule (:func:`cygru._arrays.check_flag`: True,
    False, NumPy's bools and the integers 0 and 1); errors name `who`."""
    try:
        return A.check_flag(value, name)
    except A.ArgumentError as exc:
        raise exc.named(who) from None


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
        A module's accumulated ``grads`` are scaled (a None gradient, after
        ``zero_grad(set_to_none=True)``, is skipped, as PyTorch skips a parameter whose
        ``.grad`` is None); a dict's arrays are gradients themselves (of plain arrays, as
        passed to an optimizer's ``step``), scaled in place. Every gradient must be a
        writeable floating-point array, and no two may share memory (one would be scaled
        twice): all are checked before any is scaled.
    max_norm : float
    norm_type : float, default 2.0
        ``p`` of the p-norm; ``float("inf")`` for the largest absolute value.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` if the total norm is nan or infinite (otherwise the
        gradients are scaled by a nan or zero factor, as PyTorch does).

    Returns
    -------
    float
        The total norm of the gradients before clipping (0.0 when every gradient is
        None, as PyTorch's).

    Raises
    ------
    TypeError
        A gradient that is not a floating-point array (an integer one cannot be scaled
        in place).
    ValueError
        A read-only gradient, or two sharing memory (nothing is scaled then).

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
    try:
        norm = A.real_float(norm_type, "norm_type", "a positive number or inf")
    except A.ArgumentError:
        norm = math.nan
    if not norm > 0:
        raise ValueError(f"{who}: norm_type must be a positive number or inf, got {norm_type!r}")
    norm_type = norm
    error_if_nonfinite = _flag(error_if_nonfinite, "error_if_nonfinite", who)
    items = _sources(grads_of, who, "grads_of", check=False)  # checked under the locks
    locks = _module_locks(items)
    try:
        # every gradient checked (writeable floating-point arrays, none twice) before
        # any is scaled; a module's None gradients (zero_grad(set_to_none=True)) are
        # skipped, as torch skips parameters whose .grad is None
        arrays = [g for _, _, g, _ in _named_arrays(items, who, "grads_of", kind="gradient")]
        if not arrays:
            return 0.0
        if math.isinf(norm_type):
            # np.max, not Python's max: a nan anywhere gives nan (Python's max keeps
            # the first value a later nan does not compare above), as torch's inf-norm
            total = float(np.max([float(abs(g).max()) if g.size else 0.0 for g in arrays]))
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

"""GRUCell and GRU: parameters, state_dict, validation and vjp. No math here.

Both modules hold their parameters as arrays reachable as attributes with
PyTorch's names, so weights trained in PyTorch load unchanged and give the same
numbers. The math lives in the backends (see :mod:`cygru.functional`).
"""

from __future__ import annotations

import builtins
import math
import os
import threading
import warnings
from collections import namedtuple
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional, Tuple, TypeVar, Union

import numpy as np

from . import _arrays as A
from . import _onnx
from . import functional as F
from ._arrays import BadType, BadValue
from ._backend import GATE_NAMES, layer_weights, param_shapes

# imported at run time, not only for type checkers: typing.get_type_hints resolves the
# annotations from this module's names
from ._typing import (
    Array,
    ArrayLike,
    DTypeLike,
    GRUBackward,
    GRUCellBackward,
    ModelProto,
    OnnxTarget,
)

_M = TypeVar("_M", bound="_Module")

__all__ = ["GRU", "GRUCell", "IncompatibleKeys"]


_PICKLE_FORMAT = 1  # version of the state written by _Module.__getstate__

# a public method of a module: argument errors found inside name the module ("cygru.GRU: ...")
_boundary = A.boundary()


# nn.Module methods a PyTorch user may reach for that cygru does not have, and why
_NO_MODE = (
    "cygru has no training mode: dropout applies only inside vjp (training), "
    "never in a plain call (inference); see 'Coming from PyTorch' in the docs"
)
_TORCH_HINTS = {
    "train": _NO_MODE,
    "eval": _NO_MODE,
    "training": _NO_MODE,
    "half": "cygru computes in float32 or float64 only (module.float(), module.double())",
    "bfloat16": "cygru computes in float32 or float64 only (module.float(), module.double())",
    "requires_grad_": "every parameter gets a gradient in vjp's backward; to freeze one, "
    "leave it out of your update",
}


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What :meth:`GRU.load_state_dict` returns, as PyTorch's ``load_state_dict``:
    ``(missing_keys, unexpected_keys)``, two lists of names (both empty with
    ``strict=True``, which raises instead).

    Examples
    --------
    >>> import cygru
    >>> gru = cygru.GRU(3, 2)
    >>> sd = gru.state_dict()
    >>> sd["extra"] = sd.pop("bias_hh_l0")
    >>> gru.load_state_dict(sd, strict=False)
    IncompatibleKeys(missing_keys=['bias_hh_l0'], unexpected_keys=['extra'])
    >>> gru.load_state_dict(gru.state_dict())
    <All keys matched successfully>
    """

    __slots__ = ()
    missing_keys: List[str]
    unexpected_keys: List[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


def _prefix_hint(names, unexpected):
    """A hint for keys that are this module's parameter `names` behind a parent module's
    prefix ("gru.weight_ih_l0", as ``model.state_dict()`` names a submodule's parameters),
    or "" when no unexpected key looks so. The keys are never stripped silently: the
    hint shows the user how."""
    prefixes: Dict[str, int] = {}
    for k in unexpected:
        if isinstance(k, str):
            head, dot, tail = k.rpartition(".")
            if dot and tail in names:
                prefixes[head + dot] = prefixes.get(head + dot, 0) + 1
    if not prefixes:
        return ""
    prefix = max(prefixes, key=prefixes.get)  # the first of the most common
    others = [p for p in prefixes if p != prefix]
    also = f" (and {', '.join(map(repr, others))})" if others else ""
    return (
        f"the keys look prefixed with {prefix!r}{also}, as a parent model's state_dict() "
        "names its submodules' parameters: pass the module's own keys, e.g. "
        f"load_state_dict({{k.removeprefix({prefix!r}): v for k, v in sd.items() "
        f"if k.startswith({prefix!r})}})"
    )


def _physical_memory():
    """Bytes of memory of this machine, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


class _Module:
    """Shared machinery: named parameters, gradients, devices, pickling, locks.

    Two locks: ``_param_lock`` guards which arrays are the parameters (every call takes
    its weights under it, and load_state_dict / attribute assignment / ``to`` replace
    them under it, so a call sees the old or the new weights, whole); ``_lock`` guards
    the gradients and the dropout stream.
    """

    _who = "cygru module"
    # the constructor's options, in its order (pickles hold exactly these)
    _options = ()

    def _init_params(self, shapes, seed, values=None):
        """Create the parameters: U(-1/sqrt(H), 1/sqrt(H)) as PyTorch, or ``values``
        (name -> array, already validated) when rebuilding an unpickled module."""
        seed = A.check_seed(seed)
        object.__setattr__(self, "_shapes", dict(shapes))
        A.new_locks(self, "_lock", "_param_lock")  # new ones in a forked child
        object.__setattr__(self, "device", "cpu")
        if values is None:
            values = self._initial_values(seed)
        for name, _ in shapes:
            object.__setattr__(self, name, values[name])
        object.__setattr__(self, "_grads", {n: np.zeros(s, self.dtype) for n, s in shapes})
        # dropout masks draw from their own stream of the same seed
        object.__setattr__(
            self, "_dropout_rng", np.random.default_rng(None if seed is None else [seed, 1])
        )

    def _initial_values(self, seed):
        """name -> a fresh host array drawn from U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's
        initialisation): one float64 draw per parameter, in PyTorch's order, from
        ``numpy.random.default_rng(seed)``, cast to the module's dtype."""
        rng = np.random.default_rng(seed)
        k = 1.0 / math.sqrt(self.hidden_size)
        return {
            name: rng.uniform(-k, k, shape).astype(self.dtype)
            for name, shape in self._shapes.items()
        }

    def _check_param_count(self, n, given):
        """An unpickled state must hold exactly the parameters its options define;
        checked from the counts alone, before the options build anything."""
        if given is not None and given != n:
            raise ValueError(
                f"{self._who} (unpickling): the options define {n} parameters, "
                f"the state holds {given}"
            )

    # For type checkers: the options every module has; the parameters (weight_ih_l0, ...,
    # set per instance) are the attributes __getattr__ stands for.
    input_size: int
    hidden_size: int
    bias: bool
    reset_after: bool
    dtype: np.dtype[Any]
    device: str

    def __getattr__(self, name: str) -> Array:
        # only reached when normal lookup fails
        if name in _TORCH_HINTS and "_shapes" in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}: {_TORCH_HINTS[name]}"
            )
        if name.startswith("__") or "_shapes" in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise AttributeError(
            f"{self._who}: this module was never initialised (no {name!r}): "
            "build it with its constructor or unpickle a complete state"
        )

    def _check_memory(self, n_arrays, total, largest):
        """Refuse at once parameters that cannot fit this machine's memory (numpy would
        otherwise fill most of it, for many seconds, before failing). Counted from the
        sizes alone, before anything is built: `n_arrays` parameter arrays of `total`
        numbers in all, the largest of `largest`."""
        # the parameters and their gradients, the float64 draw of the largest one, and
        # about 1 KiB of Python objects per array (array, gradient, names, dict entries)
        need = 2 * total * self.dtype.itemsize + 8 * largest + 1024 * n_arrays
        have = _physical_memory()
        if have is not None and need > have:
            raise MemoryError(
                f"{self._who}: building the parameters and their gradients needs about "
                f"{need / 2**30:.1f} GiB "
                f"({total} {self.dtype.name} numbers in {n_arrays} arrays), more than this "
                f"machine's {have / 2**30:.1f} GiB of memory; use a smaller size or fewer layers"
            )

    # -- parameters ---------------------------------------------------------
    # Options assigned after construction. batch_first and dropout (GRU) may change, as
    # in PyTorch, validated exactly as the constructor validates them. The others are
    # read-only (AttributeError saying what to do instead): the parameters' shapes depend
    # on the sizes, bias and directions; the trained weights mean something else under
    # another reset_after or reverse; dtype and device change through double()/float()/
    # to(), which convert the parameters with them.
    _how_to_change = {
        "input_size": "the parameters' shapes depend on it; build a new module",
        "hidden_size": "the parameters' shapes depend on it; build a new module",
        "num_layers": "the parameters depend on it; build a new module",
        "bias": "the parameters depend on it; build a new module",
        "bidirectional": "the parameters depend on it; build a new module",
        "num_directions": "it follows from bidirectional; build a new module",
        "reset_after": (
            "the weights mean something else under the other variant; build a new module "
            "with reset_after=... and load the weights (new.load_state_dict(old.state_dict()))"
        ),
        "reverse": (
            "build a new module with reverse=... and load the weights "
            "(new.load_state_dict(old.state_dict()))"
        ),
        "dtype": "use module.double(), module.float() or module.to(dtype)",
        "device": "use module.to(device), module.cpu() or module.cuda()",
    }
    # GRU options a GRUCell does not have: assigning one would silently do nothing
    _gru_only = ("num_layers", "batch_first", "dropout", "bidirectional", "reverse")

    @_boundary
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        shapes = d.get("_shapes", {})
        if name in shapes:
            # converted under the lock: double()/to() on another thread cannot slip a
            # parameter of the old dtype or device into the module
            with self._param_lock:
                object.__setattr__(self, name, self._checked_param(name, value))
            return
        if name in self._gru_only and name not in self._options:
            if type(self).__module__ != __name__:
                # a user's subclass may use the name for an attribute of its own
                object.__setattr__(self, name, value)
                return
            raise AttributeError(
                f"{self._who}: a {type(self).__name__} has no option {name!r} (it is an "
                "option of cygru.GRU; a cell runs one step)"
            )
        if name in self._how_to_change and "_shapes" in d:
            raise AttributeError(
                f"{self._who}: {name} is read-only once the module is built "
                f"({self._how_to_change[name]})"
            )
        if name == "training":  # would be stored and mean nothing
            raise AttributeError(f"{self._who}: cannot set 'training': {_NO_MODE}")
        if name == "batch_first":
            value = A.check_flag(value, "batch_first")
        elif name == "dropout":
            value = A.check_dropout(value)
            layers = d.get("num_layers")
            if value > 0 and layers == 1:
                warnings.warn(
                    f"{self._who}: dropout={value} has no effect with num_layers=1 "
                    "(it acts between layers)",
                    UserWarning,
                    stacklevel=3,
                )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        # an option, a parameter or the module's own state deleted would leave a module
        # that fails on its next call; a user's own attributes may go
        if (
            name in self._options
            or name in self._internal
            or name in self.__dict__.get("_shapes", {})
        ):
            raise AttributeError(
                f"{self._who}: {name} cannot be deleted (the module needs it; build a new "
                "module for other options, or load other weights with load_state_dict)"
            )
        object.__delattr__(self, name)

    def _checked_param(self, name, value, label=None):
        """`value` validated and converted for parameter `name` (a copy, never the
        caller's memory); messages call it `label` (default: the name)."""
        if value is not None and value is self.__dict__.get(name):
            return value  # `module.w -= step` hands back the module's own array
        device = self.device
        value = A.detached(value)
        if device != "cpu" and not A.is_cuda_object(value):
            # host values for a GPU module are checked on the host, then copied to its
            # device (as PyTorch's load_state_dict copies CPU tensors into CUDA ones)
            arr = A.as_param(value, self._shapes[name], self.dtype, label or name)
            return A.to_device(arr, device)
        arr = A.as_param(value, self._shapes[name], self.dtype, label or name, device)
        if arr is value or arr.base is not None:
            # the conversion did not copy (the caller's array, or a view of a torch
            # tensor's memory): copy, so the module never aliases caller memory
            arr = arr.copy()
        return arr

    def _params(self):
        """name -> the live parameter arrays, taken together under the parameter lock:
        a consistent set even while another thread loads new weights."""
        return self._snapshot()[0]

    def _snapshot(self):
        """(params, dtype, device), taken together under the parameter lock: a call
        converts its inputs to the dtype and device of the very weights it runs with,
        even while another thread runs double(), float() or to()."""
        d = self.__dict__
        with self._param_lock:
            return {n: d[n] for n in self._shapes}, d["dtype"], d["device"]

    @_boundary
    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[Tuple[str, Array]]:
        """An iterator over ``(name, array)`` in PyTorch's order; the arrays are the live
        parameters (a consistent set, taken when it is called).

        As PyTorch's, but the values are NumPy (or CuPy) arrays, not tensors. A module
        replaces its arrays (rather than writing into them) in :meth:`load_state_dict`,
        :meth:`reset_parameters`, :meth:`to`, :meth:`double` and :meth:`float`: ask
        again after those. In-place updates (``p -= lr * g``) act on the module.

        Parameters
        ----------
        prefix : str
            Prepended to every name, with a dot (``prefix + "." + name``).
        recurse : bool
            Accepted for PyTorch's signature (a cygru module has no submodules).

        Examples
        --------
        >>> import cygru
        >>> [n for n, _ in cygru.GRUCell(3, 2).named_parameters()]
        ['weight_ih', 'weight_hh', 'bias_ih', 'bias_hh']
        """
        if not isinstance(prefix, str):
            raise BadType(f"named_parameters: prefix must be a str, got {type(prefix).__name__}")
        A.check_flag(recurse, "recurse")
        head = prefix + "." if prefix else ""
        return iter([(head + n, a) for n, a in self._params().items()])

    def parameters(self, recurse: bool = True) -> Iterator[Array]:
        """An iterator over the live parameter arrays, in PyTorch's order (see
        :meth:`named_parameters`).

        Examples
        --------
        >>> import cygru
        >>> sum(p.size for p in cygru.GRU(3, 2).parameters())   # 3H*(I+H) + 6H, as torch's numel()
        42
        """
        return (a for _, a in self.named_parameters(recurse=recurse))

    def state_dict(self) -> Dict[str, Array]:
        """A dict of copies of the parameters, with exactly PyTorch's keys, order and shapes.

        Examples
        --------
        >>> import cygru
        >>> list(cygru.GRU(3, 2, bidirectional=True).state_dict())[:5]
        ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', 'weight_ih_l0_reverse']
        """
        return {n: a.copy() for n, a in self._params().items()}

    @_boundary
    def load_state_dict(
        self, state_dict: Mapping[str, ArrayLike], strict: bool = True
    ) -> IncompatibleKeys:
        """Load parameters from a mapping of PyTorch-named arrays (copied in).

        Values may be anything :func:`numpy.asarray` accepts (a PyTorch CPU tensor
        after ``.detach()``), or CUDA arrays for a module on a GPU (host values are copied
        to its device); real numbers are converted to the module's dtype.
        With ``strict=True`` (the default) the keys must be exactly those of
        :meth:`state_dict`: a missing or unexpected key raises ``ValueError`` naming
        it. With ``strict=False`` the parameters the mapping holds are loaded, the
        others keep their values, and other keys are ignored. Either way a wrong
        shape raises ``ValueError`` and a non-numeric value ``TypeError`` (PyTorch
        also refuses a size mismatch with ``strict=False``), and nothing is changed
        unless every value loaded is valid. The new weights replace the old ones at
        once: a call running on another thread uses either the old or the new
        weights, never a mix.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, as PyTorch's (both empty unless
            ``strict=False``).

        Examples
        --------
        >>> import cygru
        >>> a, b = cygru.GRU(3, 2, seed=0), cygru.GRU(3, 2, seed=1)
        >>> b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> bool((a.weight_hh_l0 == b.weight_hh_l0).all())
        True
        >>> b.load_state_dict({"weight_hh_l0": a.weight_hh_l0}, strict=False).missing_keys
        ['weight_ih_l0', 'bias_ih_l0', 'bias_hh_l0']
        """
        strict = A.check_flag(strict, "strict")
        with self._param_lock:
            new, missing, unexpected = self._checked_params(
                state_dict, "load_state_dict", strict=strict
            )
            for k, v in new.items():
                object.__setattr__(self, k, v)
        hint = _prefix_hint(self._shapes, unexpected) if missing else ""
        if hint:
            # strict=False: a parent model's keys load nothing; say so rather than
            # leave it to a glance at the returned unexpected keys
            warnings.warn(
                f"{self._who}: load_state_dict(strict=False) left {len(missing)} of "
                f"{len(self._shapes)} parameters unloaded: {hint}",
                UserWarning,
                stacklevel=3,
            )
        return IncompatibleKeys(missing, unexpected)

    def _checked_params(self, state_dict, what, label="{}", strict=True):
        """The parameters of a mapping, validated and converted (_checked_param), with
        the missing and the unexpected keys (refused when `strict`); `label` formats a
        name for messages."""
        try:
            keys = list(state_dict.keys())
        except AttributeError:
            raise BadType(
                f"{what} expects a mapping of names to arrays, got {type(state_dict).__name__}"
            ) from None
        missing = [k for k in self._shapes if k not in state_dict]
        unexpected = [k for k in keys if k not in self._shapes]
        if strict and (missing or unexpected):
            hint = _prefix_hint(self._shapes, unexpected)
            hint = f"; {hint}" if hint else ""
            if missing:
                raise BadValue(f"{what}: missing key(s) {missing}{hint}")
            raise BadValue(
                f"{what}: unexpected key(s) {unexpected}; expected {list(self._shapes)}{hint}"
            )
        new = {
            k: self._checked_param(k, state_dict[k], label.format(k))
            for k in self._shapes
            if k in state_dict
        }
        return new, missing, unexpected

    @_boundary
    def reset_parameters(self, seed: Optional[int] = None) -> None:
        """Draw every parameter again from U(-1/sqrt(H), 1/sqrt(H)), PyTorch's
        initialisation; returns None.

        With a seed the values are exactly those of a module built with that seed
        (``GRU(..., seed=seed)``); with None, fresh entropy. The gradients and the
        dropout stream are left as they are. The new arrays replace the old ones at
        once, as :meth:`load_state_dict` does.

        Examples
        --------
        >>> import cygru
        >>> gru = cygru.GRU(3, 2, seed=0)
        >>> gru.weight_hh_l0 *= 0
        >>> gru.reset_parameters(seed=0)
        >>> bool((gru.weight_hh_l0 == cygru.GRU(3, 2, seed=0).weight_hh_l0).all())
        True
        """
        seed = A.check_seed(seed)
        with self._param_lock:
            values = {n: A.to_device(v, self.device) for n, v in self._initial_values(seed).items()}
            for k, v in values.items():
                object.__setattr__(self, k, v)

    @property
    def grads(self) -> Dict[str, Array]:
        """Accumulated gradients: same keys, shapes and dtype as :meth:`state_dict`.

        Every ``backward`` closure returned by ``vjp`` ADDS into these arrays (under the
        module's lock, so concurrent backward calls from several threads sum correctly).
        They are zeros until then; after ``zero_grad(set_to_none=True)`` a value is None
        until the next backward writes it (PyTorch's ``param.grad is None``).

        A backward adds all or nothing: it checks every entry first (an array of the
        module's dtype and the parameter's shape, writeable, sharing memory with no
        other entry and no parameter) and, if one cannot take the addition, raises with
        the gradients
        unchanged; the closure may then be called again once the entry is fixed, and
        counts its gradients once.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> c = cygru.GRUCell(3, 2, seed=0)
        >>> h, backward = c.vjp(np.ones(3))
        >>> _ = backward(np.ones(2))
        >>> sorted(c.grads) == sorted(c.state_dict())
        True
        """
        return self._grads

    @_boundary
    def zero_grad(self: _M, set_to_none: bool = False) -> _M:
        """Reset the accumulated gradients.

        ``set_to_none=False`` (cygru's default) writes zeros into the gradient arrays,
        in place (an entry that cannot take them in place, e.g. one replaced by a
        read-only array or a list, becomes a new array of zeros). ``set_to_none=True`` drops them (PyTorch's default since 2.0): every
        value of :attr:`grads` is None, and the memory is freed, until the next
        backward stores its gradients there.

        Examples
        --------
        >>> import cygru
        >>> c = cygru.GRUCell(3, 2)
        >>> c.zero_grad()
        >>> float(c.grads["weight_ih"].sum())
        0.0
        >>> c.zero_grad(set_to_none=True)
        >>> c.grads["weight_ih"] is None
        True
        """
        set_to_none = A.check_flag(set_to_none, "set_to_none")
        with self._lock:
            if set_to_none:
                for name in self._grads:
                    self._grads[name] = None
            else:
                self._zero_grads_in_place()

    def _zero_grads_in_place(self):
        """zero_grad(set_to_none=False), under the gradient lock."""
        dtype, device = self.dtype, self.device
        keep = {}
        for name, g in self._grads.items():
            if g is None:
                continue
            if _grad_destination_problem(g, self._shapes[name], dtype, device):
                # an entry replaced by something that cannot take zeros in place (a
                # list, a read-only or broadcast array, another dtype): reset to a
                # new array, as a backward would need
                self._grads[name] = A.zeros_on(device, self._shapes[name], dtype)
            else:
                keep[name] = g
        # an entry sharing memory with a parameter (or another entry) gets its own
        # array: zeros written there would wipe the weights
        params = [(("parameter", n), self.__dict__[n]) for n in self._shapes]
        while True:
            pair = A.shared_memory([(("grads", n), g) for n, g in keep.items()] + params)
            if pair is None:
                break
            name = min(pair)[1]  # a grads entry ("grads" < "parameter")
            self._grads[name] = A.zeros_on(device, self._shapes[name], dtype)
            del keep[name]
        for g in keep.values():
            g[...] = 0

    def _accumulate(self, local, who=None, on_commit=None):
        """Add gradient arrays into :attr:`grads`, all or nothing.

        Every destination is checked first, under the lock: an entry for each name, an
        array of the module's kind (NumPy, or CuPy on a GPU) with the parameter's shape
        and the module's dtype, writeable, sharing memory with no other entry and no
        parameter. Only then is anything
        added (``on_commit()``, if given, is called just before the first write): a
        failed check raises with ``grads`` untouched, so a retry after the cause is
        fixed counts the gradients exactly once. A None gradient (after
        ``zero_grad(set_to_none=True)``) becomes a copy in the module's dtype: callers
        may keep their arrays, and double()/float() or to() may have run since the
        forward. `who` names the caller in errors (default: the module's name)."""
        who = self._who if who is None else who
        with self._lock:
            device = self.device
            plan = []
            for name, g in local.items():
                dest = self._grads.get(name, _MISSING)
                if dest is _MISSING:
                    raise ValueError(
                        f"{who}: cannot add the gradients into grads: it has no entry "
                        f"{name!r} (it was removed); nothing was added. Restore it "
                        f"(grads[{name!r}] = None), then backward again"
                    )
                if (type(g) is not np.ndarray or device != "cpu") and A.device_of(g) != device:
                    g = A.to_device(g, device)  # the module moved since the forward
                if dest is None:
                    plan.append((name, None, g.astype(self.dtype)))  # a new array
                    continue
                problem = _grad_destination_problem(dest, self._shapes[name], self.dtype, device)
                if problem:
                    raise (TypeError if problem[0] else ValueError)(
                        f"{who}: cannot add the gradients into grads: grads[{name!r}] "
                        f"{problem[1]}; nothing was added. Fix it (or call "
                        "zero_grad(set_to_none=True)), then backward again"
                    )
                if g.dtype != dest.dtype:
                    g = g.astype(dest.dtype)
                plan.append((name, dest, g))
            # no entry may share memory with another, or with a parameter
            arrays = [(("grads", n), d) for n, d, _ in plan if d is not None]
            arrays += [(("parameter", n), self.__dict__[n]) for n in self._shapes]
            pair = A.shared_memory(arrays)
            if pair is not None:
                (_, a), (kind_b, b) = sorted(pair)  # the grads entry first
                other = f"grads[{b!r}]" if kind_b == "grads" else f"the parameter {b!r}"
                raise ValueError(
                    f"{who}: cannot add the gradients into grads: grads[{a!r}] and "
                    f"{other} share memory (it would receive another array's "
                    "gradient); nothing was added. Give each its own array (or call "
                    "zero_grad(set_to_none=True)), then backward again"
                )
            # the commit: in-place additions of checked arrays of one shape and dtype
            if on_commit is not None:
                on_commit()
            for name, dest, g in plan:
                if dest is None:
                    self._grads[name] = g
                else:
                    dest += g

    def _convert_all(self, convert, **attrs):
        """Replace every parameter and gradient by ``convert(array)`` and set `attrs`,
        under both locks (a call sees the old or the new module, whole)."""
        with self._lock, self._param_lock:
            for n in self._shapes:
                object.__setattr__(self, n, convert(getattr(self, n)))
            object.__setattr__(
                self,
                "_grads",
                {n: None if g is None else convert(g) for n, g in self._grads.items()},
            )
            for k, v in attrs.items():
                object.__setattr__(self, k, v)
        return self

    # -- devices and dtypes -------------------------------------------------
    @_boundary
    def to(self: _M, device: Optional[str] = None, dtype: DTypeLike = None) -> _M:
        """Move parameters and gradients to a device and/or convert them to a dtype, in
        place; returns self (as PyTorch's ``module.to``).

        ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a ``torch.device``);
        CUDA devices need CuPy and a GPU (``pip install "cygru[gpu]"``). ``dtype``:
        float32 or float64, as the constructor takes it (``np.float64``,
        ``"float64"``, ``torch.float64``); also accepted in the first position, as
        ``module.to(torch.float64)``.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> cygru.GRU(3, 2).to("cpu").device
        'cpu'
        >>> cygru.GRU(3, 2).to(np.float64).dtype
        dtype('float64')
        """
        if device is not None and not isinstance(device, str) and _is_dtype_like(device):
            if dtype is not None:
                raise BadType(f"to: got two dtypes, {device!r} and {dtype!r}")
            device, dtype = None, device
        if dtype is not None:
            self._set_dtype(A.check_dtype(dtype))
        if device is None:
            return self
        if not isinstance(device, str):
            device = str(device)
        if device == "cpu":
            convert = A.to_host
        elif device == "cuda" or device.startswith("cuda:"):
            from . import _cupy

            if not _cupy.is_available():
                raise RuntimeError(
                    f"{self._who}.to({device!r}): the GPU backend needs CuPy and an NVIDIA "
                    'GPU; install it with `pip install "cygru[gpu]"` on a machine with a GPU'
                )
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            device = f"cuda:{dev_id}"
            convert = lambda a: _cupy.to_device(a, dev_id)  # noqa: E731
        else:
            raise ValueError(
                f"{self._who}.to: device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}"
            )
        return self._convert_all(convert, device=device)

    def cpu(self: _M) -> _M:
        """``module.to("cpu")``, as PyTorch's ``module.cpu()``; returns self.

        Examples
        --------
        >>> import cygru
        >>> cygru.GRU(3, 2).cpu().device
        'cpu'
        """
        return self.to("cpu")

    @_boundary
    def cuda(self: _M, device: Optional[Union[int, str]] = None) -> _M:
        """``module.to("cuda")`` (``"cuda:N"`` for ``device=N``; a device string or
        ``torch.device`` goes to :meth:`to` as is), as PyTorch's ``module.cuda()``;
        returns self. Needs CuPy and a GPU.

        Examples
        --------
        >>> import cygru
        >>> gru = cygru.GRU(3, 2)
        >>> try:
        ...     gru = gru.cuda()
        ... except RuntimeError:       # no CuPy or no GPU here
        ...     pass
        >>> gru.device in ("cpu", "cuda:0")
        True
        """
        if device is None:
            return self.to("cuda")
        if isinstance(device, (str, bool)) or type(device).__module__ == "torch":
            return self.to(device)
        return self.to(f"cuda:{A.check_positive_int(device, 'device', minimum=0)}")

    def _set_dtype(self, dtype):
        if dtype != self.dtype:
            self._convert_all(lambda a: a.astype(dtype), dtype=dtype)
        return self

    def double(self: _M) -> _M:
        """Convert the parameters and gradients to float64, in place; returns self (as
        PyTorch's ``module.double()``). Later calls compute in float64.

        Examples
        --------
        >>> import cygru
        >>> cygru.GRU(3, 2).double().weight_hh_l0.dtype
        dtype('float64')
        """
        return self._set_dtype(A.FLOAT_DTYPES[1])

    def float(self: _M) -> _M:
        """Convert the parameters and gradients to float32, in place; returns self (as
        PyTorch's ``module.float()``).

        Examples
        --------
        >>> import numpy as np, cygru
        >>> cygru.GRU(3, 2, dtype=np.float64).float().dtype
        dtype('float32')
        """
        return self._set_dtype(A.FLOAT_DTYPES[0])

    # -- pickling / copying ------------------------------------------------
    # A pickle holds the constructor's options, the parameters and gradients (as NumPy
    # arrays), the dropout stream's state and the device; never locks, caches or raw
    # attributes. Unpickling rebuilds the module through the constructor's checks and
    # validates every array as load_state_dict does, so a crafted pickle cannot pair
    # weights with sizes they do not have.
    _internal = (
        "_shapes",
        "_lock",
        "_param_lock",
        "_grads",
        "_dropout_rng",
        "device",
        "num_directions",
    )

    def __getstate__(self) -> Dict[str, Any]:
        params = {n: A.to_host(a) for n, a in self._params().items()}
        with self._lock:
            # a dropped gradient (zero_grad(set_to_none=True)) is stored as zeros
            grads = {
                n: np.zeros(self._shapes[n], self.dtype)
                if g is None
                else _picklable_grad(self, n, g)
                for n, g in self._grads.items()
            }
            rng_state = self._dropout_rng.bit_generator.state
        reserved = set(self._options) | set(self._shapes) | set(self._internal)
        attrs = dict(self.__dict__)  # one snapshot: other threads may add attributes
        extra = {k: v for k, v in attrs.items() if k not in reserved}
        return {
            "format": _PICKLE_FORMAT,
            "options": {o: getattr(self, o) for o in self._options},
            "params": params,
            # all-zero gradients (the usual case) are not stored
            "grads": grads if any(g.any() for g in grads.values()) else None,
            "dropout_rng": rng_state,
            "device": self.device,
            "extra": extra,
        }

    @_boundary
    def __setstate__(self, state: Dict[str, Any]) -> None:
        who = f"{self._who} (unpickling)"
        if not isinstance(state, dict):
            raise TypeError(
                f"{who}: expected the state dict that pickling a cygru module "
                f"writes, got {type(state).__name__}"
            )
        if "format" not in state and "_shapes" in state:
            state = self._state_from_legacy(state)
        if state.get("format") != _PICKLE_FORMAT:
            raise ValueError(
                f"{who}: unknown state format {state.get('format')!r} "
                f"(this cygru reads format {_PICKLE_FORMAT})"
            )
        expected = {"format", "options", "params", "grads", "dropout_rng", "device", "extra"}
        if set(state) != expected:
            raise ValueError(f"{who}: state keys {sorted(state)}, expected {sorted(expected)}")
        options = state["options"]
        if not isinstance(options, dict) or set(options) != set(self._options):
            got = sorted(options) if isinstance(options, dict) else type(options).__name__
            raise ValueError(f"{who}: options {got}, expected {sorted(self._options)}")
        params = state["params"]
        if not isinstance(params, dict):
            raise TypeError(f"{who}: params must be a dict of arrays, got {type(params).__name__}")
        # the constructor's own checks (and the parameter count, before any list of
        # shapes is built), then its parameter shapes
        shapes = self._configure(**options, warn=False, expect_params=len(params))
        object.__setattr__(self, "device", "cpu")
        object.__setattr__(self, "_shapes", dict(shapes))
        params, _, _ = self._checked_params(params, "unpickling: params", "{} (unpickling)")
        grads = state["grads"]
        if grads is not None:
            grads, _, _ = self._checked_params(
                grads, "unpickling: grads", "the gradient of {} (unpickling)"
            )
        self._init_params(shapes, None, values=params)
        if grads is not None:
            for n, g in grads.items():
                self._grads[n][...] = g
        try:
            self._dropout_rng.bit_generator.state = state["dropout_rng"]
        except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
            raise ValueError(f"{who}: invalid dropout stream state: {exc!r}") from None
        extra = state["extra"]
        if not isinstance(extra, dict):
            raise TypeError(
                f"{who}: extra must be a dict of attributes, got {type(extra).__name__}"
            )
        reserved = set(self._options) | set(self._shapes) | set(self._internal)
        for k in extra:
            # a subclass's own plain attributes only: never a name the class defines
            # (methods, properties, __dict__, __class__) nor the module's own state
            if (
                not isinstance(k, str)
                or k.startswith("__")
                or k in reserved
                or hasattr(type(self), k)
            ):
                raise ValueError(
                    f"{who}: extra attributes may not name options, parameters, "
                    f"internal state or class attributes, got {k!r}"
                )
        for k, v in extra.items():
            object.__setattr__(self, k, v)
        device = state["device"]
        if device != "cpu":
            self.to(device)

    def _state_from_legacy(self, state):
        """The state of a pickle written by cygru before format 1 (the instance dict),
        in format 1: only the options and arrays are taken, all then validated."""
        rng = state.get("_dropout_rng")
        reserved = set(self._options) | set(self._internal) | {"_lock"}
        names = (
            [n for n in state.get("_shapes", {})] if isinstance(state.get("_shapes"), dict) else []
        )
        return {
            "format": _PICKLE_FORMAT,
            "options": {o: state[o] for o in self._options if o in state},
            "params": {n: state[n] for n in names if n in state},
            "grads": state.get("_grads"),
            "dropout_rng": rng.bit_generator.state if isinstance(rng, np.random.Generator) else rng,
            "device": state.get("device", "cpu"),
            "extra": {k: v for k, v in state.items() if k not in reserved and k not in names},
        }

    def _new_grads(self, dtype, device):
        return {n: A.zeros_on(device, s, dtype) for n, s in self._shapes.items()}


def _module_dtype(dtype):
    """A module's dtype option: None is the default, float32 (as PyTorch's ``dtype=None``;
    NumPy would read None as float64)."""
    return A.check_dtype(np.float32 if dtype is None else dtype)


def _is_dtype_like(obj):
    """True for what names a dtype rather than a device: a NumPy dtype, a scalar type
    (np.float64, float) or a torch.dtype."""
    return isinstance(obj, (np.dtype, type)) or (
        type(obj).__module__ == "torch" and type(obj).__name__ == "dtype"
    )


class GRU(_Module):
    """A multi-layer, optionally bidirectional GRU with PyTorch's semantics.

    For each layer, direction and time step (gate order r, z, n)::

        r = σ(W_ir x + b_ir + W_hr h + b_hr)
        z = σ(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))      # reset_after=True
        n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)      # reset_after=False
        h' = (1 - z) * n + z * h

    Parameters
    ----------
    input_size, hidden_size : int
        Features of x and of the hidden state (I and H).
    num_layers : int
        Stacked layers (L); layer k > 0 reads the previous layer's output.
    bias : bool
        Whether the layers have ``bias_ih``/``bias_hh``.
    batch_first : bool
        x and output are (B, T, ·) instead of (T, B, ·). h0/h_n are unaffected.
    dropout : float
        Dropout probability on the outputs of every layer but the last, applied only
        inside :meth:`vjp` (training); plain calls never drop.
    bidirectional : bool
        Adds a second direction per layer that runs backwards in time (D = 2).
    reset_after : bool, keyword-only
        The GRU variant: True is PyTorch/cuDNN/Keras' default, False the original
        (Cho et al. 2014) formula.
    reverse : bool, keyword-only
        With one direction, run it backwards in time (ONNX ``direction="reverse"``).
    dtype : float32 or float64, keyword-only
        Parameter and computation dtype, spelt as NumPy does (``np.float32``,
        ``"float64"``, ...) or as PyTorch does (``torch.float32``; read by name, torch
        is not imported); None is float32, the default. :meth:`double`, :meth:`float`
        and :meth:`to` convert later.
    seed : int, optional, keyword-only
        Seeds the initialisation and the dropout masks.

    Notes
    -----
    The methods of PyTorch's ``nn.Module`` that fit are here (``state_dict``,
    ``load_state_dict(strict=...)``, ``parameters``, ``named_parameters``,
    ``reset_parameters``, ``zero_grad``, ``to``, ``cpu``, ``cuda``, ``double``,
    ``float``). The differences:
    gradients come from :meth:`vjp`'s closure and are read from :attr:`grads`; dropout
    applies only inside :meth:`vjp`, so there is no ``train()``/``eval()`` switch;
    ``zero_grad`` writes zeros by default (``set_to_none=False``); loading and
    converting replace the parameter arrays rather than writing into them. See "Coming
    from PyTorch" in the documentation's Concepts page.

    Examples
    --------
    >>> import numpy as np, cygru
    >>> gru = cygru.GRU(8, 16, num_layers=2, bidirectional=True, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((10, 4, 8))
    >>> output, h_n = gru(x)
    >>> output.shape, h_n.shape
    ((10, 4, 32), (4, 4, 16))
    >>> bool((output[-1, :, :16] == h_n[-2]).all() and (output[0, :, 16:] == h_n[-1]).all())
    True
    """

    _who = "cygru.GRU"
    _options = (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "reset_after",
        "reverse",
        "dtype",
    )
    num_layers: int
    batch_first: bool
    dropout: float
    bidirectional: bool
    num_directions: int
    reverse: bool

    @_boundary
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: builtins.float = 0.0,
        bidirectional: bool = False,
        *,
        reset_after: bool = True,
        reverse: bool = False,
        dtype: DTypeLike = np.float32,
        seed: Optional[int] = None,
    ) -> None:
        shapes = self._configure(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            reset_after=reset_after,
            reverse=reverse,
            dtype=dtype,
        )
        self._init_params(shapes, seed)

    def _configure(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        *,
        reset_after=True,
        reverse=False,
        dtype=np.float32,
        warn=True,
        expect_params=None,
    ):
        """Validate and set the options; returns the parameters' (name, shape) list."""
        set_ = object.__setattr__
        set_(self, "input_size", A.check_positive_int(input_size, "input_size"))
        set_(self, "hidden_size", A.check_positive_int(hidden_size, "hidden_size"))
        set_(self, "num_layers", A.check_positive_int(num_layers, "num_layers"))
        dropout = A.check_dropout(dropout)
        if warn and dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{self._who}: dropout={dropout} has no effect with num_layers=1 "
                "(it acts between layers)",
                UserWarning,
                stacklevel=4,
            )
        set_(self, "bias", A.check_flag(bias, "bias"))
        set_(self, "batch_first", A.check_flag(batch_first, "batch_first"))
        set_(self, "dropout", dropout)
        set_(self, "bidirectional", A.check_flag(bidirectional, "bidirectional"))
        set_(self, "reset_after", A.check_flag(reset_after, "reset_after"))
        set_(self, "reverse", A.check_flag(reverse, "reverse"))
        A.check_direction_flags(self.reverse, self.bidirectional)
        set_(self, "dtype", _module_dtype(dtype))
        set_(self, "num_directions", 2 if bidirectional else 1)
        H, D = self.hidden_size, self.num_directions
        # what every call would check (functional.SequenceCall), refused here at once
        A.check_blas_sizes(
            hint="use a smaller hidden_size", **{"4*hidden_size*directions": 4 * H * D}
        )
        L, I, nb = self.num_layers, self.input_size, (6 * H if self.bias else 0)
        self._check_param_count(L * D * (4 if self.bias else 2), expect_params)
        self._check_memory(
            L * D * (4 if self.bias else 2),
            D * (3 * H * (I + H) + nb) + (L - 1) * D * (3 * H * (D * H + H) + nb),
            max(3 * H * I, 3 * H * H, 3 * H * D * H if L > 1 else 0),
        )
        return param_shapes(I, H, L, D, self.bias)

    def __repr__(self) -> str:
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        for name, default in (
            ("num_layers", 1),
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("reset_after", True),
            ("reverse", False),
        ):
            if getattr(self, name) != default:
                opts.append(f"{name}={getattr(self, name)!r}")
        opts.append(f"dtype={self.dtype.name}")
        if self.device != "cpu":
            opts.append(f"device={self.device!r}")
        return f"GRU({', '.join(opts)})"

    def _layers(self, params=None):
        p = params if params is not None else self._params()
        return layer_weights(p, self.num_layers, self.num_directions, self.bias)

    def _call(self, x, h0, lengths, dtype=None, device=None):
        return F.SequenceCall.of_module(
            self,
            x,
            h0,
            lengths,
            self.dtype if dtype is None else dtype,
            self.device if device is None else device,
        )

    def __call__(
        self,
        x: ArrayLike,
        h0: Optional[ArrayLike] = None,
        lengths: Optional[ArrayLike] = None,
        *,
        hx: Optional[ArrayLike] = None,
    ) -> Tuple[Array, Array]:
        """Run the GRU: ``output, h_n = gru(x, h0=None, lengths=None)``.

        Parameters
        ----------
        x : array_like
            (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I).
        h0 : array_like, optional
            (L*D, B, H), or (L*D, H) for unbatched x; zeros when omitted.
        lengths : array_like of int, optional
            (B,) per-sequence lengths, 1 <= L_b <= T, any order. Sequence b runs steps
            0..L_b-1 only: its outputs at t >= L_b are 0 and its h_n is its state at
            its own last step (PyTorch's packed-sequence semantics).
        hx : array_like, optional, keyword-only
            PyTorch's name for ``h0`` (``gru(x, hx=h)``, as ``nn.GRU.forward(input,
            hx)``); give one of the two, not both.

        Returns
        -------
        output : ndarray
            The last layer's h_t for every t: (T, B, D*H) (batch_first (B, T, D*H),
            unbatched (T, D*H)); a fresh array.
        h_n : ndarray
            The last time step of every layer and direction: (L*D, B, H) (unbatched
            (L*D, H)), index ``layer*D + direction``.

        Notes
        -----
        The common case goes straight to the compiled engine: a CPU module, ``x`` and
        ``h0`` NumPy arrays of the module's dtype, C-contiguous, of the right shapes, no
        ``lengths``. Anything else (lists, other dtypes, strided views, torch tensors,
        ``lengths``, a GPU module) is converted and checked first; both give the same
        bits. See "Small calls" in the Performance page.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> gru = cygru.GRU(3, 4, seed=0)
        >>> x, h = np.ones((5, 2, 3)), np.zeros((1, 2, 4))
        >>> out, h_n = gru(x, hx=h)   # PyTorch's keyword; the same as gru(x, h)
        >>> bool((out == gru(x, h)[0]).all())
        True
        """
        if lengths is None and (h0 is None or hx is None):
            d = self.__dict__
            with self._param_lock:  # the weights, dtype and device of one state
                weights = [d[n] for n in d["_shapes"]]
                dtype, device = d["dtype"], d["device"]
            if device == "cpu":
                res = F.lean_gru(
                    x,
                    h0 if hx is None else hx,
                    weights,
                    dtype,
                    d["num_layers"],
                    d["num_directions"],
                    d["hidden_size"],
                    d["input_size"],
                    d["bias"],
                    d["reverse"],
                    d["reset_after"],
                    d["batch_first"],
                )
                if res is not None:
                    return res
        return self._checked_call(x, h0, lengths, hx)

    @_boundary
    def _checked_call(self, x, h0, lengths, hx):
        """A call through the full checks and conversions (everything but the common
        case that __call__ runs directly)."""
        h0 = _initial_state(h0, hx, "h0")
        params, dtype, device = self._snapshot()
        out, h_n, _ = self._call(x, h0, lengths, dtype, device).run(self._layers(params))
        return out, h_n

    forward = __call__

    def _dropout_masks(self, call):
        """L-1 fresh masks for a vjp call, in its dtype and on its device (or None)."""
        if self.dropout == 0.0 or self.num_layers == 1:
            return None
        T, B, DH = call.T, call.B, self.num_directions * self.hidden_size
        p = self.dropout
        with self._lock:  # numpy Generators are not thread-safe
            keep = [self._dropout_rng.random((T, B, DH)) >= p for _ in range(self.num_layers - 1)]
        return [A.to_device((k / (1.0 - p)).astype(call.dtype), call.device) for k in keep]

    @_boundary
    def vjp(
        self,
        x: ArrayLike,
        h0: Optional[ArrayLike] = None,
        lengths: Optional[ArrayLike] = None,
        *,
        hx: Optional[ArrayLike] = None,
    ) -> Tuple[Tuple[Array, Array], GRUBackward]:
        """Forward pass that keeps what backpropagation needs, and its backward closure.

        ``(output, h_n), backward = gru.vjp(x, h0=None, lengths=None)``, then
        ``dx, dh0 = backward(d_output, d_h_n)`` (either may be None, meaning zeros).
        ``backward`` returns the gradients with respect to x and h0 (dh0 is returned
        even when h0 was omitted) and ADDS the parameter gradients into
        :attr:`grads`. Each closure may be called once (a second call raises
        ``RuntimeError``: call ``vjp`` again). With ``dropout > 0`` a fresh mask is
        drawn per call from the module's seeded stream and ``backward`` reuses it; it
        is available as ``backward.dropout_masks``. ``hx`` is PyTorch's name for ``h0``,
        as in a call.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> gru = cygru.GRU(3, 4, dtype=np.float64, seed=0)
        >>> x = np.ones((5, 2, 3))
        >>> (out, h_n), backward = gru.vjp(x)
        >>> dx, dh0 = backward(np.ones_like(out), None)
        >>> dx.shape, dh0.shape
        ((5, 2, 3), (1, 2, 4))
        """
        h0 = _initial_state(h0, hx, "h0")
        params, dtype, device = self._snapshot()
        call = self._call(x, h0, lengths, dtype, device)
        _keep_for_backward(call)
        masks = self._dropout_masks(call)
        layers = self._layers(_copies(params))
        out, h_n, cache = call.run(layers, dropout_masks=masks, need_cache=True)
        return (out, h_n), _make_backward(self, call, cache, layers)

    def to_onnx(
        self,
        path_or_file: OnnxTarget,
        *,
        opset: Optional[int] = None,
        h0: Literal["optional", "required", "none"] = "optional",
        lengths: Union[Literal["optional", "required", "none"], bool] = "optional",
    ) -> ModelProto:
        """Write this GRU as an ONNX model: ``cygru.to_onnx(self, path_or_file, ...)``.

        The keyword arguments are :func:`cygru.to_onnx`'s (see there); ``opset=None`` is
        its default opset.

        Examples
        --------
        >>> import io, cygru
        >>> model = cygru.GRU(3, 4).to_onnx(io.BytesIO(), h0="none", lengths="none")
        >>> [i.name for i in model.graph.input]
        ['x']
        """
        return _onnx.write_gru(
            self._onnx_options(),
            self.state_dict(),
            path_or_file,
            opset=_onnx.DEFAULT_OPSET if opset is None else opset,
            h0=h0,
            lengths=lengths,
        )

    def _onnx_options(self) -> Dict[str, Any]:
        """The options ``cygru._onnx.write_gru`` reads (its ``GRU_OPTIONS``)."""
        return {name: getattr(self, name) for name in _onnx.GRU_OPTIONS}


class GRUCell(_Module):
    """One GRU step, PyTorch's ``nn.GRUCell`` semantics: ``h1 = cell(x, h=None)``.

    Parameters
    ----------
    input_size, hidden_size : int
        Features of x and of h.
    bias : bool
        Whether the cell has ``bias_ih``/``bias_hh``.
    reset_after : bool, keyword-only
        The GRU variant (see :class:`GRU`).
    dtype : float32 or float64, keyword-only
        Parameter and computation dtype, spelt as NumPy does (``np.float32``,
        ``"float64"``, ...) or as PyTorch does (``torch.float32``; read by name, torch
        is not imported); None is float32, the default. :meth:`double`, :meth:`float`
        and :meth:`to` convert later.
    seed : int, optional, keyword-only
        Seeds the initialisation.

    Notes
    -----
    As :class:`GRU` (PyTorch's module methods, and the differences) for one step;
    ``GRUCell`` has no dropout.

    Examples
    --------
    >>> import numpy as np, cygru
    >>> cell = cygru.GRUCell(3, 2, seed=0)
    >>> h = None
    >>> for x_t in np.ones((4, 5, 3)):     # 4 steps, batch of 5
    ...     h = cell(x_t, h)
    >>> h.shape
    (5, 2)
    """

    _who = "cygru.GRUCell"
    _options = ("input_size", "hidden_size", "bias", "reset_after", "dtype")

    @_boundary
    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        reset_after: bool = True,
        dtype: DTypeLike = np.float32,
        seed: Optional[int] = None,
    ) -> None:
        shapes = self._configure(
            input_size, hidden_size, bias, reset_after=reset_after, dtype=dtype
        )
        self._init_params(shapes, seed)

    def _configure(
        self,
        input_size,
        hidden_size,
        bias=True,
        *,
        reset_after=True,
        dtype=np.float32,
        warn=True,
        expect_params=None,
    ):
        """Validate and set the options; returns the parameters' (name, shape) list."""
        set_ = object.__setattr__
        set_(self, "input_size", A.check_positive_int(input_size, "input_size"))
        set_(self, "hidden_size", A.check_positive_int(hidden_size, "hidden_size"))
        set_(self, "bias", A.check_flag(bias, "bias"))
        set_(self, "reset_after", A.check_flag(reset_after, "reset_after"))
        set_(self, "dtype", _module_dtype(dtype))
        H = self.hidden_size
        A.check_blas_sizes(hint="use a smaller hidden_size", **{"4*hidden_size": 4 * H})
        I = self.input_size
        self._check_param_count(4 if self.bias else 2, expect_params)
        self._check_memory(
            4 if self.bias else 2, 3 * H * (I + H) + (6 * H if self.bias else 0), 3 * H * max(I, H)
        )
        shapes = [("weight_ih", (3 * H, self.input_size)), ("weight_hh", (3 * H, H))]
        if self.bias:
            shapes += [("bias_ih", (3 * H,)), ("bias_hh", (3 * H,))]
        return shapes

    def __repr__(self) -> str:
        opts = [f"{self.input_size}", f"{self.hidden_size}"]
        if not self.bias:
            opts.append("bias=False")
        if not self.reset_after:
            opts.append("reset_after=False")
        opts.append(f"dtype={self.dtype.name}")
        return f"GRUCell({', '.join(opts)})"

    def __call__(
        self, x: ArrayLike, h: Optional[ArrayLike] = None, *, hx: Optional[ArrayLike] = None
    ) -> Array:
        """One step: x (B, I) or (I,), h (B, H) or (H,) or None (zeros) -> h1, a fresh array.

        ``hx`` (keyword-only) is PyTorch's name for ``h`` (``nn.GRUCell.forward(input,
        hx)``): ``cell(x, hx=h)``; give one of the two, not both.

        The common case, NumPy arrays of the module's dtype, C-contiguous, of the right
        shapes, on a CPU module, goes straight to the compiled step (about a microsecond
        of overhead); anything else is converted and checked first, with the same bits.
        See "Small calls" in the Performance page.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> cell = cygru.GRUCell(3, 2, seed=0)
        >>> h = cell(np.ones(3))
        >>> bool((cell(np.ones(3), hx=h) == cell(np.ones(3), h)).all())
        True
        """
        if hx is not None:
            h = _initial_state(h, hx, "h", self._who)
        d = self.__dict__
        with self._param_lock:  # the four weights of one state, never a mix
            w_ih, w_hh, b_ih, b_hh = (
                d["weight_ih"],
                d["weight_hh"],
                d.get("bias_ih"),
                d.get("bias_hh"),
            )
            dtype, device = d["dtype"], d["device"]
        if device == "cpu":
            # the common case (NumPy arrays of the module's dtype and shapes) straight to
            # the compiled step; None: anything else, checked and converted below
            h1 = F.lean_cell(x, h, w_ih, w_hh, b_ih, b_hh, d["reset_after"], dtype)
            if h1 is not None:
                return h1
        try:  # the boundary, written out: the per-step path pays for no wrapper
            return F.cell_call(x, h, w_ih, w_hh, b_ih, b_hh, self.reset_after, dtype, device)
        except A.ArgumentError as exc:
            raise exc.named(self._who) from None

    forward = __call__

    @_boundary
    def vjp(
        self, x: ArrayLike, h: Optional[ArrayLike] = None, *, hx: Optional[ArrayLike] = None
    ) -> Tuple[Array, GRUCellBackward]:
        """One step keeping what backpropagation needs: ``h1, backward = cell.vjp(x, h)``.

        ``dx, dh = backward(d_h1)`` returns the gradients with respect to x and h
        (dh even when h was None) and ADDS the parameter gradients into
        :attr:`grads`. Each closure may be called once. ``hx`` is PyTorch's name for
        ``h``, as in a call.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> cell = cygru.GRUCell(3, 2, dtype=np.float64, seed=0)
        >>> h1, backward = cell.vjp(np.ones(3))
        >>> dx, dh = backward(np.ones(2))
        >>> dx.shape, dh.shape
        ((3,), (2,))
        """
        h = _initial_state(h, hx, "h")
        params, dtype, device = self._snapshot()
        x, h = F.cell_inputs(x, h, self.input_size, self.hidden_size, dtype, device)
        # a cell step is a one-layer GRU over one time step
        call = F.SequenceCall.of_cell(
            x,
            h,
            hidden_size=self.hidden_size,
            reset_after=self.reset_after,
            dtype=dtype,
            device=device,
        )
        _keep_for_backward(call)
        p = _copies(params)
        layers = [[tuple(p.get(n) for n in GATE_NAMES)]]
        out, _, cache = call.run(layers, need_cache=True)
        inner = _make_backward(self, call, cache, layers, cell=True)

        h1 = out[0]

        @A.boundary(self._who)
        def backward(d_h1=None):
            if d_h1 is not None:
                d_h1 = A.as_shaped(
                    d_h1,
                    h1.shape,
                    dtype,
                    "d_h1",
                    device,
                    what=f"d_h1 of h1's shape {tuple(h1.shape)}",
                )
                d_h1 = d_h1[None]
            return inner(d_h1, None)

        backward.__doc__ = "dx, dh = backward(d_h1): see GRUCell.vjp."
        return h1, backward


_MISSING = object()


def _grad_destination_problem(dest, shape, dtype, device):
    """Why a gradient cannot be added in place into `dest` (an entry of a module's
    grads): ``(is_type_error, text)``, or None when it can."""
    if (
        type(dest) is np.ndarray
        and device == "cpu"
        and dest.shape == tuple(shape)
        and dest.dtype == dtype
        and dest.flags.writeable
        and (dest.flags.c_contiguous or dest.flags.f_contiguous)
    ):
        return None  # the common case, quickly
    if not (isinstance(dest, np.ndarray) or A.is_cupy_array(dest)):
        return True, f"is a {type(dest).__name__}, not an array"
    if A.device_of(dest) != device:
        return True, f"is on {A.device_of(dest)}, the module on {device}"
    if tuple(dest.shape) != tuple(shape):
        return False, f"has shape {tuple(dest.shape)}, the parameter {tuple(shape)}"
    if dest.dtype != dtype:
        return True, f"has dtype {dest.dtype}, the module {np.dtype(dtype)}"
    flags = getattr(dest, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        return False, "is read-only"
    if A.overlaps_itself(dest):
        return False, "has elements that share memory (a broadcast or as_strided view)"
    return None


def _picklable_grad(module, name, g):
    """A host copy of the grads entry `name` for a pickle, refused now (a named
    ValueError) if unpickling would refuse it: a pickle that cannot be loaded back
    would be found only when a checkpoint is read."""
    shape = tuple(module._shapes[name])
    arr = np.asarray(A.to_host(g)) if not isinstance(g, np.ndarray) else g
    if tuple(arr.shape) != shape or arr.dtype.kind not in "fiu":
        raise ValueError(
            f"{module._who}: cannot pickle: grads[{name!r}] is {type(g).__name__} of shape "
            f"{tuple(arr.shape)} and dtype {arr.dtype}, not an array of real numbers of the "
            f"parameter's shape {shape} (it was replaced); zero_grad() resets it"
        )
    return arr.copy()


def _initial_state(h, hx, name, who=None):
    """The initial state given as `name` (cygru's h0 / h) or as ``hx`` (PyTorch's
    keyword), at most one of them; TypeError if both are given (named `who`, or by the
    boundary)."""
    if hx is None:
        return h
    if h is not None:
        message = (
            f"the initial state was given twice, as {name} and as hx (PyTorch's name for "
            f"{name}); give one of them"
        )
        if who is not None:
            raise TypeError(f"{who}: {message}")
        raise BadType(message)
    return hx


def _keep_for_backward(call):
    """Give a vjp call its own copy of x: backward reads x again, and the caller's array
    (a data loader's reused buffer, say) may be refilled before backward runs. The
    copy is T*B*I numbers, small beside the forward's T*B*3H*(I+H) multiply-adds."""
    call.x = call.x.copy()


def _copies(params):
    """Private copies of the weights for a vjp: an in-place update of the module's
    parameters (``gru.weight_hh_l0 -= lr * g``) between vjp and backward must not
    change the gradient of the forward that ran. One copy of each weight, small beside
    the forward's work over T*B rows."""
    return {n: a.copy() for n, a in params.items()}


def _make_backward(module, call, cache, layers, cell=False):
    """The closure returned by vjp: runs once, adds into module.grads under its lock."""
    state = {"cache": cache}
    names = list(module._shapes)
    once = threading.Lock()

    @A.boundary(module._who)
    def backward(d_output=None, d_h_n=None):
        with once:
            cache_ = state.pop("cache", None)
        if cache_ is None:
            raise RuntimeError(
                f"{module._who}: this backward closure was already called "
                "(its saved activations are freed); call vjp again"
            )
        committed = []
        try:
            return _run(cache_, d_output, d_h_n, committed)
        except BaseException:
            # Nothing was added into module.grads unless the additions had begun (all
            # of them are checked first, see _accumulate): the closure stays usable, e.g.
            # after a d_output of the wrong shape or a read-only grads entry was
            # rejected, and a retry counts the gradients once. An interrupt landing
            # during the additions themselves leaves the closure spent, so a retry
            # raises instead of adding a second time.
            if not committed:
                with once:
                    state["cache"] = cache_
            raise

    def _run(cache_, d_output, d_h_n, committed):
        # backward adds into fresh arrays; they are summed into module.grads under the
        # lock, all or nothing
        local = module._new_grads(call.dtype, call.device)
        if cell:
            grads = [[tuple(local.get(n) for n in GATE_NAMES)]]
        else:
            grads = layer_weights(local, module.num_layers, module.num_directions, module.bias)
        dx, dh0 = call.backward(cache_, d_output, d_h_n, grads)
        module._accumulate({n: local[n] for n in names}, on_commit=lambda: committed.append(True))
        if cell:
            return dx[0], dh0[0]
        return dx, dh0

    backward.dropout_masks = cache.dropout_masks  # the backend contract's ForwardCache
    return backward

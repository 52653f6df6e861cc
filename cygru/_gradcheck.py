"""Finite-difference check of a module's vjp."""

from __future__ import annotations

import warnings
from typing import Optional, Union

import numpy as np

from . import _arrays as A

# at run time too, for typing.get_type_hints
from ._typing import ArrayLike
from .modules import GRU, GRUCell

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` when an analytic gradient disagrees with finite differences."""


def _float64_twin(module):
    """A float64 copy of `module` on the same device (gradients in float32 are too noisy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(module, GRU):
            twin = GRU(
                module.input_size,
                module.hidden_size,
                module.num_layers,
                module.bias,
                module.batch_first,
                module.dropout,
                module.bidirectional,
                reset_after=module.reset_after,
                reverse=module.reverse,
                dtype=np.float64,
            )
        elif isinstance(module, GRUCell):
            twin = GRUCell(
                module.input_size,
                module.hidden_size,
                module.bias,
                reset_after=module.reset_after,
                dtype=np.float64,
            )
        else:
            raise TypeError(
                f"cygru.gradcheck: expected a cygru.GRU or cygru.GRUCell, "
                f"got {type(module).__name__}"
            )
    twin.load_state_dict({n: A.to_host(a) for n, a in module.named_parameters()})
    if module.device != "cpu":
        twin.to(module.device)
    # a subclass (e.g. one with its own vjp) keeps its behaviour
    twin.__class__ = type(module)
    return twin


@A.boundary("cygru.gradcheck")
def gradcheck(
    module: Union[GRU, GRUCell],
    x: ArrayLike,
    h0: Optional[ArrayLike] = None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    lengths: Optional[ArrayLike] = None,
    max_elements: int = 64,
    n_projections: int = 4,
    seed: int = 0,
) -> bool:
    """Compare ``module.vjp`` against central finite differences of ``module(...)``.

    The check runs on a float64 copy of the module (a float32 module is copied and
    cast; the module itself, and its ``grads``, are left untouched). The scalar
    probed is ``sum(R_out * output) + sum(R_h * h_n)`` with fixed random R. For the
    input, h0 (zeros when omitted) and every parameter, every element is checked
    when the tensor has at most ``max_elements`` elements, otherwise
    ``n_projections`` random directions. With dropout, the mask drawn by ``vjp``
    is held fixed for the finite differences.

    Parameters
    ----------
    module : cygru.GRU or cygru.GRUCell
    x, h0 : array_like
        As for the module's call (``h0`` is ``h`` for a GRUCell).
    eps : float
        Finite-difference step.
    atol, rtol : float
        Pass when ``|analytic - numeric| <= atol + rtol * |numeric|``.
    lengths : array_like, optional
        Per-sequence lengths (GRU only).
    max_elements : int
        Tensors with at most this many elements (>= 0) are checked element by element.
    n_projections : int
        The number (>= 1) of random directions checked in a larger tensor.
    seed : int or None
        Seeds the random R and directions (a non-negative integer; None: fresh entropy).

    Returns
    -------
    True

    Raises
    ------
    GradcheckError
        Naming the tensor, the worst element (or direction) and both values.
    TypeError
        ``module`` is not a cygru.GRU or GRUCell; ``eps``, ``atol`` or ``rtol`` is not a
        real number (a bool is not one); ``max_elements``, ``n_projections`` or ``seed``
        is not an integer (nor is a bool); ``x`` or ``h0`` does not hold real numbers.
    ValueError
        ``eps`` is not finite and > 0; ``atol`` or ``rtol`` not finite and >= 0;
        ``max_elements`` < 0, ``n_projections`` < 1, ``seed`` < 0; shapes the module
        refuses. Every message starts with ``cygru.gradcheck:``.

    Examples
    --------
    >>> import numpy as np, cygru
    >>> gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    >>> cygru.gradcheck(gru, np.random.default_rng(0).standard_normal((5, 2, 3)))
    True
    """
    eps = A.check_real(eps, "eps", positive=True)
    atol = A.check_real(atol, "atol")
    rtol = A.check_real(rtol, "rtol")
    max_elements = A.check_positive_int(max_elements, "max_elements", minimum=0)
    n_projections = A.check_positive_int(n_projections, "n_projections")
    seed = A.check_seed(seed)
    m = _float64_twin(module)
    if m.device == "cpu":
        return _check(m, np, x, h0, eps, atol, rtol, lengths, max_elements, n_projections, seed)
    import cupy

    # every array of the check lives on the module's GPU, not on the current one
    with cupy.cuda.Device(int(m.device.split(":")[1])):
        return _check(m, cupy, x, h0, eps, atol, rtol, lengths, max_elements, n_projections, seed)


def _check(m, xp, x, h0, eps, atol, rtol, lengths, max_elements, n_projections, seed):
    cell = isinstance(m, GRUCell)
    x = A.as_float_array(x, np.float64, "x", m.device)
    if cell:
        (out, backward) = m.vjp(x, h0)
        outs = (out,)
    else:
        (out, h_n), backward = m.vjp(x, h0, lengths)
        outs = (out, h_n)
    # held fixed: the finite differences use the masks vjp drew (a cell has none)
    masks = getattr(backward, "dropout_masks", None)
    rng = np.random.default_rng(seed)
    R = [xp.asarray(rng.standard_normal(o.shape)) for o in outs]
    if h0 is None:
        h_shape = outs[0].shape if cell else outs[1].shape
        h0 = A.zeros_on(m.device, h_shape, np.float64)
    h0 = A.as_float_array(h0, np.float64, "h0", m.device).copy()
    x = x.copy()
    m.zero_grad()
    dx, dh0 = backward(*R)
    analytic = {"x": dx, "h0": dh0}
    analytic.update({n: g.copy() for n, g in m.grads.items()})

    def loss():
        if cell:
            res = (m(x, h0),)
        else:
            call = m._call(x, h0, lengths)
            res = call.run(m._layers(), dropout_masks=masks)[:2]
        return float(sum((r * o).sum() for r, o in zip(R, res)))

    tensors = {"x": x, "h0": h0}
    tensors.update(dict(m.named_parameters()))
    for name, t in tensors.items():
        flat = t.reshape(-1)  # a view: t is C-contiguous
        a = analytic[name].reshape(-1)
        if flat.size == 0:
            continue
        if flat.size <= max_elements:
            directions = [("element", i) for i in range(flat.size)]
        else:
            directions = [("direction", j) for j in range(n_projections)]
        worst = None
        for kind, i in directions:
            if kind == "element":
                old = float(flat[i])
                flat[i] = old + eps
                fp = loss()
                flat[i] = old - eps
                fm = loss()
                flat[i] = old
                num, ana = (fp - fm) / (2 * eps), float(a[i])
            else:
                v = xp.asarray(rng.standard_normal(flat.size))
                v /= float(xp.linalg.norm(v))
                saved = flat.copy()
                flat += eps * v
                fp = loss()
                flat[...] = saved - eps * v
                fm = loss()
                flat[...] = saved
                num, ana = (fp - fm) / (2 * eps), float((a * v).sum())
            err = abs(num - ana) - (atol + rtol * abs(num))
            if not np.isfinite(num) or not np.isfinite(ana):
                err = np.inf if not (np.isnan(num) and np.isnan(ana)) else -1
            if worst is None or err > worst[0]:
                worst = (err, kind, i, ana, num)
        if worst[0] > 0:
            _, kind, i, ana, num = worst
            where = (
                f"element {tuple(int(k) for k in np.unravel_index(i, t.shape))}"
                if kind == "element"
                else f"random direction #{i}"
            )
            raise GradcheckError(
                f"cygru.gradcheck: gradient of {name} (shape {tuple(t.shape)}) disagrees at "
                f"{where}: analytic {ana!r}, numeric {num!r} "
                f"(|diff| {abs(ana - num):.3g} > atol {atol} + rtol {rtol} * |numeric|)"
            )
    return True

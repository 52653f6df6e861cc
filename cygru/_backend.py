"""The backend contract: what the Python layer hands a backend and what it gets back.

Two backends implement it: :mod:`cygru._cpu` (NumPy arrays, compiled kernels) and
:mod:`cygru._cupy` (CuPy arrays, cuBLAS and fused CUDA kernels). :mod:`cygru.functional`
picks one by device and is the only caller; :mod:`cygru.modules` reads the
:class:`ForwardCache` a training forward returns. Pure Python: imports on any machine.

What the caller guarantees (validated in :mod:`cygru._arrays` / :mod:`cygru.functional`):
every array is C-contiguous, of one dtype (float32 or float64) and on the backend's
device; shapes agree with each other; the batch is not empty (B >= 1, an empty batch is
answered by the caller with a :class:`ForwardCache` whose ``B`` is 0, see
:meth:`ForwardCache.empty`, and readers of a cache test ``cache.B == 0``); every size fits a 32-bit int. A backend never writes into
its inputs.

``layers`` (and ``grads``) is the nested list ``[layer][direction] -> (w_ih, w_hh, b_ih,
b_hh)`` built by :func:`layer_weights`, gate order r, z, n; ``b_ih``/``b_hh`` are None
for a module without biases.

The three functions each backend defines:

``gru_forward(x, h0, layers, *, hidden_size, num_directions, reverse, reset_after,
lengths, batch_first, dropout_masks, need_cache) -> (output, h_n, cache)``
    ``x`` (T, B, I), or (B, T, I) with ``batch_first``; ``h0`` (L*D, B, H) or None
    (zeros); ``lengths`` a host int64 (B,) array with 1 <= L_b <= T, or None;
    ``dropout_masks`` None or L-1 arrays (T, B, D*H), already scaled by 1/(1-p), that
    multiply layer k's output before layer k+1 reads it. Returns ``output`` (T, B, D*H)
    (batch_first (B, T, D*H)), ``h_n`` (L*D, B, H), and a :class:`ForwardCache` when
    ``need_cache`` (else None).

``gru_backward(cache, d_output, d_h_n, grads) -> (dx, dh0)``
    ``cache`` from ``gru_forward(..., need_cache=True)``; ``d_output`` of the output's
    shape and ``d_h_n`` of h_n's, either None for zeros. ADDS the parameter gradients
    into ``grads`` (the structure of ``layers``, None where a bias is None) and returns
    ``dx`` of x's shape and ``dh0`` (L*D, B, H). The dropout masks it applies are
    ``cache.dropout_masks``.

``cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after) -> h1``
    One step: ``x`` (B, I), ``h`` (B, H) or None (zeros); returns a fresh (B, H).
"""

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["ForwardCache", "GATE_NAMES", "param_suffix", "param_shapes", "layer_weights"]

#: The names of a layer's four parameters, in ``layers``' tuple order.
GATE_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def param_suffix(layer, direction):
    """PyTorch's suffix of a GRU parameter: ``_l{layer}``, plus ``_reverse`` for
    direction 1."""
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


def param_shapes(input_size, hidden_size, num_layers, num_directions, bias):
    """``[(name, shape), ...]`` of a GRU's parameters, in PyTorch's order."""
    H, D = hidden_size, num_directions
    shapes = []
    for k in range(num_layers):
        in_size = input_size if k == 0 else D * H
        for d in range(D):
            sfx = param_suffix(k, d)
            shapes += [("weight_ih" + sfx, (3 * H, in_size)), ("weight_hh" + sfx, (3 * H, H))]
            if bias:
                shapes += [("bias_ih" + sfx, (3 * H,)), ("bias_hh" + sfx, (3 * H,))]
    return shapes


def layer_weights(params, num_layers, num_directions, bias):
    """Nested ``[layer][direction] -> (w_ih, w_hh, b_ih, b_hh)`` from PyTorch-named
    ``params`` (the biases None when ``bias`` is false)."""
    return [
        [
            tuple(
                params[n + param_suffix(k, d)] if (bias or n.startswith("weight")) else None
                for n in GATE_NAMES
            )
            for d in range(num_directions)
        ]
        for k in range(num_layers)
    ]


@dataclass(eq=False)
class ForwardCache:
    """What ``gru_backward`` needs from ``gru_forward``: the one cache type of both backends.

    The Python layer reads the fields marked *shared*; the others belong to the backend
    that made the cache (their contents differ between backends). Every field defaults
    to None so a backend may build one empty and fill it in.

    Attributes
    ----------
    T, B, H, D : int
        Sequence length, batch, hidden size, directions (*shared*).
    batch_first, reverse, reset_after : bool
        The forward's options (*shared*).
    perm
        The backend's batch order (sorted by length; None or the identity without
        lengths).
    active
        The backend's per-step counts of sequences still running.
    layers : list
        The weights the forward ran with (``[layer][direction] -> (w_ih, w_hh, b_ih,
        b_hh)``).
    inputs : list
        Each layer's input as the backend saved it.
    saved : list
        Per layer and direction, the backend's saved activations.
    dropout_masks : list or None
        The L-1 masks the forward applied between layers, or None (*shared*: backward
        applies the same ones, and ``vjp``'s closure exposes them).
    used : bool
        Set by a backend that frees the cache after one backward.
    """

    T: Optional[int] = None
    B: Optional[int] = None
    H: Optional[int] = None
    D: Optional[int] = None
    batch_first: Optional[bool] = None
    reverse: Optional[bool] = None
    reset_after: Optional[bool] = None
    perm: Any = None
    active: Any = None
    layers: Optional[list] = None
    inputs: Optional[list] = None
    saved: Optional[list] = None
    dropout_masks: Optional[list] = None
    used: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        # only the contract's fields (what slots=True gives, which needs Python 3.10; cygru
        # supports 3.9): a misspelt field raises instead of creating a new attribute
        if name not in self.__dataclass_fields__:
            raise AttributeError(f"ForwardCache has no field {name!r}")
        object.__setattr__(self, name, value)

    @classmethod
    def empty(cls, T, H, D, *, batch_first, reverse, reset_after, layers, dropout_masks):
        """The cache of a forward over an empty batch (B = 0): no backend ran, and the
        backward of it is zeros of the input's and h0's shapes."""
        return cls(
            T=T,
            B=0,
            H=H,
            D=D,
            batch_first=batch_first,
            reverse=reverse,
            reset_after=reset_after,
            layers=layers,
            dropout_masks=dropout_masks,
        )

    @property
    def dtype(self):
        """The computation's dtype (that of the first layer's input-hidden weight)."""
        return self.layers[0][0][0].dtype

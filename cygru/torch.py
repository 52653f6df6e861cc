"""cygru inside PyTorch: :class:`GRU` and :class:`GRUCell`, drop-in ``torch.nn`` modules.

``cygru.torch.GRU`` and ``cygru.torch.GRUCell`` are ``torch.nn.GRU`` and
``torch.nn.GRUCell`` (subclasses: the same constructor, parameters, names, initialisation,
``state_dict``, ``repr``) whose ``forward`` runs cygru's compiled engine on the CPU. The
backward is cygru's backpropagation through time behind a ``torch.autograd.Function``, so
``loss.backward()``, ``torch.optim``, ``model.double()`` and ``torch.save`` work unchanged.

Tensors and arrays share memory (``tensor.numpy()`` / ``torch.from_numpy``): no copies on
the way in or out for contiguous CPU tensors. Importing this module imports torch; ``import
cygru`` never does.

What differs from ``torch.nn.GRU``: CUDA tensors are refused (use ``torch.nn.GRU`` there, or
move the model and data with ``.cpu()``); double backward (a gradient of a gradient) is
refused; parameter dtypes are float32 or float64; dropout masks come from torch's random
stream but are not torch's bits.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from . import _arrays as A
from . import functional as F
from ._backend import layer_weights

__all__ = ["GRU", "GRUCell"]

_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _np(t):
    """A NumPy view of a CPU tensor (a contiguous copy first if it is strided)."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def _shape(t):
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def _check_tensor(t, name, who, dtype):
    """A TypeError/ValueError naming `who` unless `t` is a CPU tensor of `dtype`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{who}: expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"{who}: {name} is on {t.device}; cygru.torch runs on the CPU only: use "
            "torch.nn.GRU/GRUCell for tensors on a GPU, or move the model and the data "
            "with .cpu()"
        )
    if t.dtype != dtype:
        raise TypeError(
            f"{who}: expected {name} of dtype {dtype} (the module's parameters), got "
            f"{t.dtype}; convert it with .to({dtype}) or the module with .to({t.dtype})"
        )


def _weights_dtype(weights, names, who):
    """The parameters' common dtype (float32 or float64), all on the CPU, or an error."""
    dtype = weights[0].dtype
    for name, w in zip(names, weights):
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"{who}: parameter {name} is a {type(w).__name__}, not a tensor")
        if w.device.type != "cpu":
            raise ValueError(
                f"{who}: parameter {name} is on {w.device}; cygru.torch runs on the CPU "
                "only: use torch.nn.GRU/GRUCell on a GPU, or move the model with .cpu()"
            )
        if w.dtype != dtype or dtype not in _DTYPES:
            got = sorted({str(v.dtype) for v in weights})
            raise TypeError(
                f"{who}: the parameters must all be float32 or all float64, got {got}; "
                "convert the module with .float() or .double()"
            )
    return dtype


def _cached_views(module, weights):
    """The module's cached ``(torch dtype, views)`` if `weights` are still the tensors
    they view (the same objects at the same data pointers), else None. A new storage,
    dtype, device or parameter (``.double()``, ``.to()``, ``p.data = ...``, ``setattr``)
    changes one of the two; an optimizer's in-place update changes neither and is seen
    through the views."""
    cached = module.__dict__.get("_cygru_views")
    if cached is None or len(cached[1]) != len(weights):
        return None
    for a, b in zip(cached[1], weights):
        if a is not b:
            return None
    if cached[0] != [None if w is None else w.data_ptr() for w in weights]:
        return None
    return cached[2], cached[3]


def _weight_views(module, weights, names, who):
    """``(torch dtype, NumPy views of weights)``, checked (all CPU tensors of one dtype,
    float32 or float64). The views are kept on the module and reused while each weight
    is the same tensor at the same data pointer (an optimizer's in-place
    update keeps them; ``.double()``, ``load_state_dict`` into a new storage or a
    replaced parameter does not): a small call pays for no conversion."""
    views = _cached_views(module, weights)
    if views is not None:
        return views
    key = [None if w is None else w.data_ptr() for w in weights]
    present = [w for w in weights if w is not None]
    dtype = _weights_dtype(present, names, who)
    views = [None if w is None else _np(w) for w in weights]
    module.__dict__["_cygru_views"] = (key, tuple(weights), dtype, views)
    return dtype, views


class _ViewsCache:
    """Leaves the cached weight views out of pickles and deep copies."""

    def __getstate__(self):
        state = getattr(super(), "__getstate__", lambda: self.__dict__)()
        state = dict(state)
        state.pop("_cygru_views", None)
        return state


def _needs_grad(tensors):
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in tensors)


class _NoDoubleBackward(torch.autograd.Function):
    """Passes the first-order gradients through unchanged; differentiating them again
    (create_graph=True, then a second backward) raises a clear error."""

    @staticmethod
    def forward(ctx, who, n, *tensors):
        ctx.who = who
        return tuple(t.clone() for t in tensors[:n])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            f"{ctx.who}: double backward (the gradient of a gradient, create_graph=True) is "
            "not supported: cygru's backward is not itself differentiable; use "
            "torch.nn.GRU/GRUCell where higher-order gradients are needed"
        )


def _refuse_double_backward(who, grads, inputs):
    """`grads` (tensors or None) connected to `inputs` through _NoDoubleBackward when a
    graph of the backward is being built, so that differentiating them raises."""
    if not torch.is_grad_enabled():
        return grads
    present = [g for g in grads if g is not None]
    links = [t for t in inputs if t is not None and t.requires_grad]
    if not present or not links:
        return grads
    out = iter(_NoDoubleBackward.apply(who, len(present), *present, *links))
    return tuple(None if g is None else next(out) for g in grads)


class _GRUFunction(torch.autograd.Function):
    """forward: cygru's engine keeping its cache; backward: cygru's BPTT, the gradients
    of x, hx and every weight returned (never accumulated anywhere else)."""

    @staticmethod
    def forward(ctx, spec, x, hx, masks, *weights):
        ctx.set_materialize_grads(False)
        call = spec.sequence_call(_np(x), None if hx is None else _np(hx))
        arrays = dict(zip(spec.names, spec.views))
        layers = layer_weights(arrays, spec.num_layers, spec.num_directions, spec.bias)
        mask_arrays = None if masks is None else [_np(m) for m in masks]
        out, h_n, cache = call.run(layers, dropout_masks=mask_arrays, need_cache=True)
        ctx.spec, ctx.call, ctx.cache, ctx.hx_given = spec, call, cache, hx is not None
        ctx.shapes = [tuple(w.shape) for w in weights]
        # the version counters of what the cache reads: an in-place change of x, hx or a
        # weight before backward makes torch raise instead of a wrong gradient
        ctx.save_for_backward(x, hx, *weights)
        return torch.from_numpy(out), torch.from_numpy(h_n)

    @staticmethod
    def backward(ctx, d_out, d_h_n):
        spec = ctx.spec
        saved = ctx.saved_tensors
        if d_out is None and d_h_n is None:
            return (None,) * (4 + len(ctx.shapes))
        local = {n: np.zeros(s, spec.dtype) for n, s in zip(spec.names, ctx.shapes)}
        grads = layer_weights(local, spec.num_layers, spec.num_directions, spec.bias)
        try:
            dx, dh0 = ctx.call.backward(
                ctx.cache,
                None if d_out is None else _np(d_out),
                None if d_h_n is None else _np(d_h_n),
                grads,
            )
        except A.ArgumentError as exc:
            raise exc.named(spec.who) from None
        result = (
            torch.from_numpy(dx),
            torch.from_numpy(dh0) if ctx.hx_given else None,
            *(torch.from_numpy(local[n]) for n in spec.names),
        )
        result = _refuse_double_backward(spec.who, result, (*saved, d_out, d_h_n))
        return (None, result[0], result[1], None, *result[2:])


class _CellFunction(torch.autograd.Function):
    """One GRUCell step through cygru's engine and its backward."""

    @staticmethod
    def forward(ctx, who, views, x, hx, *weights):
        w = views
        dtype = w[1].dtype
        I, H = w[0].shape[1], w[1].shape[1]
        xa, ha = F.cell_inputs(_np(x), None if hx is None else _np(hx), I, H, dtype, "cpu")
        call = F.SequenceCall.of_cell(
            xa, ha, hidden_size=H, reset_after=True, dtype=dtype, device="cpu"
        )
        out, _, cache = call.run([[tuple(w)]], need_cache=True)
        ctx.who, ctx.call, ctx.cache, ctx.hx_given = who, call, cache, hx is not None
        ctx.save_for_backward(x, hx, *weights)
        return torch.from_numpy(out[0])

    @staticmethod
    def backward(ctx, d_h1):
        saved = ctx.saved_tensors
        weights = saved[2:]
        local = [None if t is None else np.zeros(tuple(t.shape), _DTYPES[t.dtype]) for t in weights]
        try:
            dx, dh = ctx.call.backward(ctx.cache, _np(d_h1)[None], None, [[tuple(local)]])
        except A.ArgumentError as exc:
            raise exc.named(ctx.who) from None
        result = (
            torch.from_numpy(dx[0]),
            torch.from_numpy(dh[0]) if ctx.hx_given else None,
            *(None if g is None else torch.from_numpy(g) for g in local),
        )
        result = _refuse_double_backward(ctx.who, result, (*saved, d_h1))
        return (None, None, *result)


class _Spec:
    """The options of one GRU call (what the autograd Function needs besides tensors)."""

    __slots__ = (
        "who",
        "input_size",
        "hidden_size",
        "num_layers",
        "num_directions",
        "bias",
        "batch_first",
        "lengths",
        "names",
        "dtype",
        "views",
    )

    def __init__(self, module, batch_first, lengths, dtype, views):
        self.who = "cygru.torch.GRU"
        self.input_size = module.input_size
        self.hidden_size = module.hidden_size
        self.num_layers = module.num_layers
        self.num_directions = 2 if module.bidirectional else 1
        self.bias = module.bias
        self.batch_first = batch_first
        self.lengths = lengths
        self.names = module._flat_weights_names
        self.dtype = dtype
        self.views = views  # NumPy views of the weights the Function is given

    # PyTorch's GRU: the reset_after=True formula, never run backwards in time
    reverse = False
    reset_after = True

    def sequence_call(self, x, hx):
        """The checked call of NumPy x and hx (or None) with these options."""
        return F.SequenceCall.of_module(self, x, hx, self.lengths, self.dtype, "cpu")


def _unpack(packed):
    """A PackedSequence as (padded (T, B, *) in its sorted batch order, lengths (B,) int64
    NumPy, index tensors to pack a (T, B, *) result back the same way)."""
    data, batch_sizes = packed.data, packed.batch_sizes
    T, B = int(batch_sizes.numel()), int(batch_sizes[0])
    bs = batch_sizes.to(torch.int64)
    t_idx = torch.repeat_interleave(torch.arange(T), bs)
    offsets = torch.cumsum(bs, 0) - bs
    b_idx = torch.arange(int(bs.sum())) - torch.repeat_interleave(offsets, bs)
    padded = data.new_zeros((T, B) + tuple(data.shape[1:])).index_put((t_idx, b_idx), data)
    lengths = (bs[None, :] > torch.arange(B)[:, None]).sum(1).numpy()
    return padded, lengths, (t_idx, b_idx)


class GRU(_ViewsCache, torch.nn.GRU):
    """``torch.nn.GRU`` run by cygru's compiled engine on the CPU, with autograd.

    A subclass of ``torch.nn.GRU``: the same constructor, parameters
    (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``_reverse`` for
    the second direction), initialisation (uniform in ±1/sqrt(hidden_size)),
    ``state_dict`` and ``forward`` signature: ``output, h_n = gru(input, hx=None)`` with
    input (T, B, I), (B, T, I) with ``batch_first``, unbatched (T, I), or a
    ``PackedSequence`` (the output is then packed the same way). Gradients of the input,
    ``hx`` and every parameter come from cygru's backward.

    Parameters
    ----------
    input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype
        As for ``torch.nn.GRU``. ``dropout`` acts between layers in training mode
        (``model.train()``), with masks drawn from torch's random stream.
    proj_size : int
        Only 0: ``torch.nn.GRU`` has no projection either.

    Notes
    -----
    CPU only (a CUDA input or parameter raises a ValueError: use ``torch.nn.GRU`` there);
    float32 or float64 parameters; no double backward (a gradient of a gradient raises a
    RuntimeError). Without gradients (``torch.no_grad()``, ``torch.inference_mode()`` or
    tensors that do not require them) a call goes straight to the engine.

    Examples
    --------
    >>> import torch, cygru.torch
    >>> _ = torch.manual_seed(0)
    >>> gru = cygru.torch.GRU(8, 16, num_layers=2, batch_first=True)
    >>> ref = torch.nn.GRU(8, 16, num_layers=2, batch_first=True)
    >>> _ = ref.load_state_dict(gru.state_dict())
    >>> x = torch.randn(4, 10, 8)
    >>> out, h_n = gru(x)
    >>> out.shape, h_n.shape
    (torch.Size([4, 10, 16]), torch.Size([2, 4, 16]))
    >>> torch.allclose(out, ref(x)[0], atol=1e-5)
    True
    >>> out.sum().backward()
    >>> gru.weight_hh_l0.grad.shape
    torch.Size([48, 16])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Optional[Union[str, int, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        proj_size: int = 0,
    ) -> None:
        if proj_size != 0:
            raise ValueError(
                f"cygru.torch.GRU: proj_size={proj_size!r} is not supported; a projection "
                "exists only for torch.nn.LSTM (give proj_size=0)"
            )
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            device=device,
            dtype=dtype,
        )

    def forward(  # type: ignore[override]
        self, input: Union[torch.Tensor, PackedSequence], hx: Optional[torch.Tensor] = None
    ) -> Tuple[Union[torch.Tensor, PackedSequence], torch.Tensor]:
        """``output, h_n = gru(input, hx=None)``, as ``torch.nn.GRU.forward``.

        Parameters
        ----------
        input : Tensor or PackedSequence
            (T, B, I), (B, T, I) with ``batch_first``, unbatched (T, I), or packed.
        hx : Tensor, optional
            (num_layers * num_directions, B, H), or (num_layers * num_directions, H) for
            unbatched input; zeros when omitted. For a PackedSequence, in the batch order
            of the original (unsorted) sequences, as in torch.

        Returns
        -------
        output : Tensor or PackedSequence
            The last layer's states, (T, B, D*H) (batch_first (B, T, D*H), unbatched
            (T, D*H)), or a PackedSequence with the input's batch sizes and indices.
        h_n : Tensor
            (num_layers * num_directions, B, H) (unbatched (num_layers * num_directions, H)).

        Examples
        --------
        >>> import torch, cygru.torch
        >>> from torch.nn.utils.rnn import pack_sequence
        >>> gru = cygru.torch.GRU(3, 4)
        >>> packed = pack_sequence([torch.ones(5, 3), torch.ones(2, 3)])
        >>> out, h_n = gru(packed)
        >>> out.batch_sizes.tolist(), h_n.shape
        ([2, 2, 1, 1, 1], torch.Size([1, 2, 4]))
        """
        if type(input) is torch.Tensor and (hx is None or type(hx) is torch.Tensor):
            res = self._lean(input, hx)
            if res is not None:
                return res
        who = "cygru.torch.GRU"
        weights = self._flat_weights
        names = self._flat_weights_names
        dtype, views = _weight_views(self, weights, names, who)
        L, D, H = self.num_layers, 2 if self.bidirectional else 1, self.hidden_size
        packed = isinstance(input, PackedSequence)
        if packed:
            _check_tensor(input.data, "input.data", who, dtype)
            if input.data.dim() != 2 or input.data.shape[1] != self.input_size:
                raise ValueError(
                    f"{who}: expected a PackedSequence whose data is (N, {self.input_size}) "
                    f"(input_size {self.input_size}), got data of shape {_shape(input.data)}"
                )
            x, lengths, pack_idx = _unpack(input)
            batch_first, unbatched = False, False
            if hx is not None and input.sorted_indices is not None:
                _check_tensor(hx, "hx", who, dtype)
                if hx.dim() == 3:
                    hx = hx.index_select(1, input.sorted_indices)
        else:
            _check_tensor(input, "input", who, dtype)
            if input.dim() not in (2, 3):
                layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
                raise ValueError(
                    f"{who}: expected input with 3 dimensions {layout} or 2 (unbatched "
                    f"(T, I)), got {input.dim()} dimensions, shape {_shape(input)}"
                )
            if input.shape[-1] != self.input_size:
                raise ValueError(
                    f"{who}: expected input with {self.input_size} features (input_size) in "
                    f"its last dimension, got shape {_shape(input)}"
                )
            x, lengths, batch_first = input, None, self.batch_first
            unbatched = input.dim() == 2
        T, B = (
            (x.shape[0], 1)
            if unbatched
            else ((x.shape[1], x.shape[0]) if batch_first else x.shape[:2])
        )
        if hx is not None:
            _check_tensor(hx, "hx", who, dtype)
            want = (L * D, H) if unbatched else (L * D, int(B), H)
            if tuple(hx.shape) != want:
                raise ValueError(
                    f"{who}: expected hx of shape {want} (num_layers*num_directions, "
                    f"{'' if unbatched else 'batch, '}hidden_size), got {_shape(hx)}"
                )
        masks = None
        if self.training and self.dropout > 0 and L > 1 and T > 0 and B > 0:
            p = float(self.dropout)
            masks = [
                torch.empty((int(T), int(B), D * H), dtype=dtype).bernoulli_(1 - p).div_(1 - p)
                for _ in range(L - 1)
            ]
        np_dtype = _DTYPES[dtype]
        try:
            if _needs_grad((x, hx, *weights)):
                spec = _Spec(self, batch_first, lengths, np_dtype, views)
                output, h_n = _GRUFunction.apply(spec, x, hx, masks, *weights)
            else:
                output, h_n = self._no_grad(x, hx, views, lengths, masks, batch_first, np_dtype)
        except A.ArgumentError as exc:
            raise exc.named(who) from None
        if packed:
            output = PackedSequence(
                output[pack_idx], input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
            if input.unsorted_indices is not None:
                h_n = h_n.index_select(1, input.unsorted_indices)
        return output, h_n

    def _lean(self, x, hx):
        """The common inference call straight to the engine: tensors that need no
        gradient (or gradients off), no dropout to apply, the weights' views cached by
        an earlier call; None for anything else (then nothing was done)."""
        views = _cached_views(self, self._flat_weights)
        if views is None or (self.training and self.dropout > 0 and self.num_layers > 1):
            return None
        dtype, arrays = views
        if not x.is_cpu or x.dtype is not dtype:
            return None
        if torch.is_grad_enabled() and (
            x.requires_grad
            or (hx is not None and hx.requires_grad)
            or any(w.requires_grad for w in self._flat_weights)
        ):
            return None
        if hx is not None and (not hx.is_cpu or hx.dtype is not dtype):
            return None
        res = F.lean_gru(
            x.numpy() if not x.requires_grad else _np(x),
            None if hx is None else _np(hx),
            arrays,
            _DTYPES[dtype],
            self.num_layers,
            2 if self.bidirectional else 1,
            self.hidden_size,
            self.input_size,
            self.bias,
            False,
            True,
            self.batch_first,
        )
        if res is None:
            return None
        return torch.from_numpy(res[0]), torch.from_numpy(res[1])

    def _no_grad(self, x, hx, w_np, lengths, masks, batch_first, dtype):
        """The forward without autograd: straight to the engine."""
        x_np, h_np = _np(x), None if hx is None else _np(hx)
        D = 2 if self.bidirectional else 1
        if lengths is None and masks is None:
            res = F.lean_gru(
                x_np,
                h_np,
                w_np,
                dtype,
                self.num_layers,
                D,
                self.hidden_size,
                self.input_size,
                self.bias,
                False,
                True,
                batch_first,
            )
            if res is not None:
                return torch.from_numpy(res[0]), torch.from_numpy(res[1])
        call = _Spec(self, batch_first, lengths, dtype, w_np).sequence_call(x_np, h_np)
        layers = layer_weights(
            dict(zip(self._flat_weights_names, w_np)), self.num_layers, D, self.bias
        )
        out, h_n, _ = call.run(
            layers, dropout_masks=None if masks is None else [_np(m) for m in masks]
        )
        return torch.from_numpy(out), torch.from_numpy(h_n)


class GRUCell(_ViewsCache, torch.nn.GRUCell):
    """``torch.nn.GRUCell`` run by cygru's compiled step on the CPU, with autograd.

    A subclass of ``torch.nn.GRUCell``: the same constructor, parameters (``weight_ih``,
    ``weight_hh``, ``bias_ih``, ``bias_hh``), initialisation and ``forward``:
    ``h1 = cell(input, hx=None)`` with input (B, I) or unbatched (I,).

    Parameters
    ----------
    input_size, hidden_size, bias, device, dtype
        As for ``torch.nn.GRUCell``.

    Notes
    -----
    CPU only, float32 or float64, no double backward (see :class:`GRU`).

    Examples
    --------
    >>> import torch, cygru.torch
    >>> cell = cygru.torch.GRUCell(3, 5)
    >>> h = None
    >>> for x_t in torch.ones(4, 2, 3):   # 4 steps, batch of 2
    ...     h = cell(x_t, h)
    >>> h.shape
    torch.Size([2, 5])
    """

    def forward(self, input: torch.Tensor, hx: Optional[torch.Tensor] = None) -> torch.Tensor:  # type: ignore[override]
        """``h1 = cell(input, hx=None)``, as ``torch.nn.GRUCell.forward``.

        Parameters
        ----------
        input : Tensor
            (B, input_size) or unbatched (input_size,).
        hx : Tensor, optional
            (B, hidden_size) or (hidden_size,); zeros when omitted.

        Returns
        -------
        Tensor
            The next state, of hx's shape.

        Examples
        --------
        >>> import torch, cygru.torch
        >>> cell = cygru.torch.GRUCell(3, 2)
        >>> x = torch.ones(3, requires_grad=True)
        >>> h1 = cell(x)
        >>> h1.sum().backward()
        >>> x.grad.shape, cell.weight_ih.grad.shape
        (torch.Size([3]), torch.Size([6, 3]))
        """
        p = self._parameters
        weights = [p.get("weight_ih"), p.get("weight_hh"), p.get("bias_ih"), p.get("bias_hh")]
        if type(input) is torch.Tensor and (hx is None or type(hx) is torch.Tensor):
            h1 = self._lean(input, hx, weights)
            if h1 is not None:
                return h1
        who = "cygru.torch.GRUCell"
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        weights = [getattr(self, n) for n in names]
        if not self.bias:
            weights += [None, None]
        dtype, views = _weight_views(self, weights, names, who)
        _check_tensor(input, "input", who, dtype)
        I, H = self.input_size, self.hidden_size
        if input.dim() not in (1, 2) or input.shape[-1] != I:
            raise ValueError(
                f"{who}: expected input of shape (B, {I}) or ({I},) (input_size {I}), got "
                f"{_shape(input)}"
            )
        if hx is not None:
            _check_tensor(hx, "hx", who, dtype)
            want = (H,) if input.dim() == 1 else (int(input.shape[0]), H)
            if tuple(hx.shape) != want:
                raise ValueError(
                    f"{who}: expected hx of shape {want} (matching input of shape "
                    f"{_shape(input)}; hidden_size {H}), got {_shape(hx)}"
                )
        try:
            if _needs_grad((input, hx, *weights)):
                return _CellFunction.apply(who, views, input, hx, *weights)
            h1 = F.cell_call(
                _np(input), None if hx is None else _np(hx), *views, True, _DTYPES[dtype], "cpu"
            )
        except A.ArgumentError as exc:
            raise exc.named(who) from None
        return torch.from_numpy(h1)

    def _lean(self, x, hx, weights):
        """The common inference step straight to the compiled step (see GRU._lean);
        None for anything else."""
        views = _cached_views(self, weights)
        if views is None:
            return None
        dtype, arrays = views
        if not x.is_cpu or x.dtype is not dtype:
            return None
        if hx is not None and (not hx.is_cpu or hx.dtype is not dtype):
            return None
        if torch.is_grad_enabled() and (
            x.requires_grad
            or (hx is not None and hx.requires_grad)
            or any(w is not None and w.requires_grad for w in weights)
        ):
            return None
        h1 = F.lean_cell(
            x.numpy() if not x.requires_grad else _np(x),
            None if hx is None else _np(hx),
            *arrays,
            True,
            _DTYPES[dtype],
        )
        return None if h1 is None else torch.from_numpy(h1)

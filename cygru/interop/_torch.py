"""PyTorch -> cygru: :func:`from_torch`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union, overload

import numpy as np

# at run time too, for typing.get_type_hints
from ..modules import GRU, GRUCell
from ..quantized import QuantizedGRU, QuantizedGRUCell
from ._common import _float_dtype, _layer_suffix, _modules
from ._torch_quantized import _from_torch_quantized, _is_dynamic_quantized

if TYPE_CHECKING:
    # for type checkers only (the overloads): cygru never imports torch
    import torch

__all__ = ["from_torch"]


@overload
def from_torch(module: torch.nn.GRU) -> GRU: ...
@overload
def from_torch(module: torch.nn.GRUCell) -> GRUCell: ...
@overload
def from_torch(
    module: torch.nn.Module,
) -> Union[GRU, GRUCell, QuantizedGRU, QuantizedGRUCell]: ...


def from_torch(module: Any) -> Union[GRU, GRUCell, QuantizedGRU, QuantizedGRUCell]:
    """Build the cygru module equal to a ``torch.nn.GRU`` or ``torch.nn.GRUCell``.

    The conversion does not import torch: it reads the module's options and converts each
    tensor of ``module.state_dict()`` with ``.detach().cpu().numpy()`` (so a CUDA module works
    too). Gate order, parameter names and shapes are PyTorch's in cygru as well, so the
    weights are copied as they are.

    PyTorch's dynamically quantized GRU (``torch.ao.quantization.quantize_dynamic(model,
    {torch.nn.GRU}, dtype=torch.qint8)``, per-tensor or ``per_channel_dynamic_qconfig``
    weights; ``GRUCell`` likewise) converts to a :class:`cygru.QuantizedGRU`
    (:class:`cygru.QuantizedGRUCell`) with precision ``"int8"`` that holds PyTorch's int8
    weights, their scales (one per output row; a per-tensor scale is repeated) and its float32
    biases as they are. The activations are rounded differently (PyTorch: per tensor, 7-bit
    quint8; cygru: per row, int8), so the outputs agree within a tolerance, not bit for bit:
    on N(0, 1) inputs of 100 steps, the largest ``abs(cygru - PyTorch)`` was 0.02-0.04 and the mean
    0.003-0.005, with cygru's result the nearer one to the float32 GRU. A nonzero weight zero
    point or a ``dtype=torch.float16`` dynamic module is refused with a ``ValueError``.

    Parameters
    ----------
    module : torch.nn.GRU or torch.nn.GRUCell
        The module to convert (or its ``torch.ao.nn.quantized.dynamic`` int8 counterpart). Its parameters must all be float32 or all float64.

    Returns
    -------
    cygru.GRU or cygru.GRUCell
        A module with the same options (``num_layers``, ``bias``, ``batch_first``,
        ``dropout``, ``bidirectional``) and a copy of the weights, in the same dtype
        (``torch.float32`` -> ``np.float32``, ``torch.float64`` -> ``np.float64``). The
        result does not share memory with ``module``. ``dropout`` is copied as an option;
        cygru applies it only inside ``vjp`` (training), never in a plain call, whatever
        the torch module's ``training`` flag was.

    Raises
    ------
    TypeError
        If ``module`` is neither a GRU nor a GRUCell, or its dtype is not float32/float64
        (``module.half()`` and ``module.bfloat16()`` are refused).
    ValueError
        If ``module`` uses a feature cygru does not have (``proj_size != 0``, a mode other than
        ``"GRU"``) or its ``state_dict()`` lacks an expected parameter (a quantized GRU, say).

    Examples
    --------
    >>> import numpy as np, torch
    >>> import cygru
    >>> tgru = torch.nn.GRU(4, 8, num_layers=2, batch_first=True).double()
    >>> gru = cygru.from_torch(tgru)
    >>> gru.num_layers, gru.batch_first, gru.dtype == np.float64
    (2, True, True)
    >>> x = np.random.default_rng(0).standard_normal((3, 5, 4))
    >>> out, h_n = gru(x)
    >>> t_out, t_h_n = tgru(torch.from_numpy(x))
    >>> bool(np.allclose(out, t_out.detach().numpy(), atol=1e-12))
    True
    """
    if _is_dynamic_quantized(module):
        return _from_torch_quantized(module)  # type: ignore[no-any-return]
    kind = type(module).__name__
    if kind not in ("GRU", "GRUCell"):
        raise TypeError(
            "from_torch expects a torch.nn.GRU or torch.nn.GRUCell, "
            f"got {type(module).__qualname__}"
        )
    for attr in ("input_size", "hidden_size", "bias", "state_dict"):
        if not hasattr(module, attr):
            raise TypeError(
                f"{type(module).__qualname__} has no attribute {attr!r}; "
                "from_torch expects a torch.nn.GRU or torch.nn.GRUCell"
            )
    modules = _modules()
    input_size = int(module.input_size)
    hidden_size = int(module.hidden_size)
    bias = bool(module.bias)

    if kind == "GRU":
        mode = getattr(module, "mode", "GRU")
        if mode != "GRU":
            raise ValueError(f"from_torch: unsupported RNN mode {mode!r} (only 'GRU')")
        proj_size = int(getattr(module, "proj_size", 0) or 0)
        if proj_size != 0:
            raise ValueError(f"from_torch: proj_size={proj_size} is not supported (cygru needs 0)")
        num_layers = int(module.num_layers)
        bidirectional = bool(module.bidirectional)
        num_directions = 2 if bidirectional else 1
        names = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                sfx = _layer_suffix(layer, direction)
                names += [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                if bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
    else:
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])

    state = module.state_dict()
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(
            f"from_torch: the {kind}'s state_dict() lacks {missing} "
            "(quantized or otherwise modified modules are not supported)"
        )
    arrays = {}
    dtype = None
    for name in names:
        tensor = state[name]
        # Check the dtype before converting: .numpy() itself fails on bfloat16.
        tdtype = str(getattr(tensor, "dtype", ""))
        if tdtype.startswith("torch.") and tdtype not in ("torch.float32", "torch.float64"):
            raise TypeError(
                f"torch parameter {name!r} has dtype {tdtype}; cygru supports float32 and "
                "float64 only (convert with module.float() or module.double())"
            )
        array = np.array(tensor.detach().cpu().numpy(), copy=True)
        this = _float_dtype(array.dtype, f"torch parameter {name!r}")
        if dtype is None:
            dtype = this
        elif this != dtype:
            raise TypeError(
                f"from_torch: parameters have mixed dtypes ({dtype} and {this} for {name!r})"
            )
        arrays[name] = array

    if kind == "GRU":
        out = modules.GRU(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bias=bias,
            batch_first=bool(module.batch_first),
            dropout=float(module.dropout),
            bidirectional=bidirectional,
            dtype=dtype,
        )
    else:
        out = modules.GRUCell(input_size, hidden_size, bias=bias, dtype=dtype)
    out.load_state_dict(arrays)
    return out

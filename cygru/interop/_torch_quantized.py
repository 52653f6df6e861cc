"""PyTorch's dynamically quantized GRU -> int8 weights, per-row scales and float32 biases.

``torch.ao.quantization.quantize_dynamic(model, {torch.nn.GRU}, dtype=torch.qint8)`` swaps a
``torch.nn.GRU`` (``GRUCell``) for ``torch.ao.nn.quantized.dynamic.GRU`` (``GRUCell``). Such a
module has no float parameters in its ``state_dict()``: every layer and direction keeps one
packed object (``_all_weight_values[k].param``, a TorchScript ``CellParamsBase``; a cell keeps
``_packed_weight_ih`` and ``_packed_weight_hh``) that holds the two prepacked linear weights
(FBGEMM's or QNNPACK's layout) with their float biases. The module's ``get_weight()`` and
``get_bias()`` unpack them into dicts keyed by PyTorch's parameter names:

* the weights are quantized ``qint8`` tensors, quantized either per tensor
  (``default_dynamic_qconfig``, the default of ``quantize_dynamic``: one scale, the
  ``q_scale()``, for the whole (3H, in) matrix) or per output channel
  (``per_channel_dynamic_qconfig``: ``q_per_channel_scales()``, float64, one per row, with
  ``q_per_channel_axis() == 0``). ``int_repr()`` gives the int8 values, which may hold -128
  (PyTorch's observers use the full [-128, 127] range); the real weight is
  ``(q - zero_point) * scale``;
* the biases stay float32 tensors (PyTorch adds them in float after the int8 product).

:func:`_torch_quantized_gru_weights` reads exactly that, without importing torch, and returns
numpy arrays in cygru's layout: gate order r, z, n as PyTorch's (no permutation), one float32
scale per output row (a per-tensor scale repeated over the rows), so that
``weight.astype(np.float32) * scale[:, None]`` is, bit for bit, the float32 matrix
``tensor.dequantize()`` gives. A nonzero zero point is refused (cygru's int8 weights are
symmetric), as are ``dtype=torch.float16`` dynamic modules (their weights are not int8).

PyTorch also quantizes the activations at run time, per tensor and asymmetrically (quint8,
with the 7-bit ``reduce_range`` on FBGEMM); cygru quantizes them symmetrically per row. The
weights are the same, the activation rounding differs, so a converted module gives PyTorch's
numbers within a tolerance, not bit for bit.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

_FUNC = "_torch_quantized_gru_weights"
_DYNAMIC_MODULE = "torch.ao.nn.quantized.dynamic"


def _is_dynamic_quantized(module: Any) -> bool:
    """Whether ``module`` is one of ``torch.ao.nn.quantized.dynamic``'s GRU classes."""
    for klass in type(module).__mro__:
        if klass.__module__.startswith(_DYNAMIC_MODULE) and klass.__name__ in ("GRU", "GRUCell"):
            return True
    return False


def _qscheme(tensor: Any) -> str:
    return str(tensor.qscheme()).rpartition(".")[2]


def _int8_rows(tensor: Any, name: str, who: str) -> Tuple[np.ndarray, np.ndarray]:
    """The int8 values (rows, cols) and the float32 scale of each row of a qint8 tensor."""
    if not getattr(tensor, "is_quantized", False) or str(tensor.dtype) != "torch.qint8":
        raise ValueError(
            f"{who}: {name} is a {tensor.dtype} tensor, expected a quantized torch.qint8 "
            "tensor (quantize_dynamic(..., dtype=torch.qint8))"
        )
    scheme = _qscheme(tensor)
    rows = int(tensor.shape[0])
    if scheme == "per_tensor_affine" or scheme == "per_tensor_symmetric":
        zero_points = np.array([int(tensor.q_zero_point())])
        scale = np.full(rows, tensor.q_scale(), dtype=np.float32)
    elif scheme in ("per_channel_affine", "per_channel_symmetric"):
        axis = int(tensor.q_per_channel_axis())
        if axis != 0:
            raise ValueError(
                f"{who}: {name} is quantized per channel along axis {axis}, expected axis 0 "
                "(one scale per output row)"
            )
        zero_points = tensor.q_per_channel_zero_points().detach().cpu().numpy()
        scale = tensor.q_per_channel_scales().detach().cpu().numpy().astype(np.float32)
    else:
        raise ValueError(
            f"{who}: {name} uses the quantization scheme {scheme!r}, expected per-tensor "
            "or per-channel (axis 0) affine/symmetric"
        )
    if np.any(zero_points != 0):
        bad = int(zero_points[np.flatnonzero(zero_points)[0]])
        raise ValueError(
            f"{who}: {name} has a nonzero zero point ({bad}); cygru's int8 weights are "
            "symmetric, expected zero_point 0 (PyTorch's default qint8 weight observers give 0)"
        )
    values = tensor.int_repr().detach().cpu().numpy().astype(np.int8, copy=True)
    return values, np.ascontiguousarray(scale)


def _float_bias(tensor: Any, name: str) -> Optional[np.ndarray]:
    if tensor is None:
        return None
    return np.array(tensor.detach().cpu().numpy(), dtype=np.float32, copy=True)


def _torch_quantized_gru_weights(module: Any, who: str = _FUNC) -> Dict[str, Any]:
    """Read the int8 weights, per-row scales and biases of PyTorch's dynamic int8 GRU.

    Parameters
    ----------
    module : torch.ao.nn.quantized.dynamic.GRU or torch.ao.nn.quantized.dynamic.GRUCell
        The module ``torch.ao.quantization.quantize_dynamic(..., {nn.GRU}, dtype=torch.qint8)``
        put in place of a ``torch.nn.GRU`` (``nn.GRUCell``), with per-tensor
        (the default) or per-channel (``per_channel_dynamic_qconfig``) weights.
    who : str, optional
        The name the error messages start with (``from_torch`` when it calls this).

    Returns
    -------
    dict
        ``"options"``: a dict with ``"cell"`` (True for a GRUCell), ``input_size``,
        ``hidden_size``, ``num_layers``, ``bias``, ``batch_first``, ``dropout``,
        ``bidirectional`` (a cell: 1 layer, one direction, ``batch_first=False``,
        ``dropout=0.0``) and ``"per_channel"`` (whether PyTorch quantized the weights per
        row: False means one scale per matrix, repeated here over its rows).

        ``"layers"``: a list, one entry per layer, of lists, one entry per direction (forward
        first), of dicts with ``"weight_ih"`` (int8, (3H, in)), ``"scale_ih"`` (float32,
        (3H,)), ``"weight_hh"`` (int8, (3H, H)), ``"scale_hh"`` (float32, (3H,)),
        ``"bias_ih"`` and ``"bias_hh"`` (float32, (3H,), or None for a module without bias),
        and ``"names"``: the PyTorch (= cygru) parameter names of the float weights and
        biases, e.g. ``("weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse",
        "bias_hh_l1_reverse")``. Gate order r, z, n, as PyTorch and cygru keep it.
        ``weight.astype(np.float32) * scale[:, None]`` equals PyTorch's
        ``tensor.dequantize()`` exactly. All arrays are fresh copies.

    Raises
    ------
    TypeError
        If ``module`` is not one of ``torch.ao.nn.quantized.dynamic``'s ``GRU`` or
        ``GRUCell`` (a float ``torch.nn.GRU`` converts with :func:`cygru.from_torch`).
    ValueError
        If its weights are not qint8 (a ``dtype=torch.float16`` dynamic module), a zero point
        is nonzero, the scheme is not per tensor or per row, or its mode is not ``"GRU"``.

    Examples
    --------
    >>> import torch
    >>> from cygru.interop._torch_quantized import _torch_quantized_gru_weights
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.gru = torch.nn.GRU(4, 3)
    >>> q = torch.ao.quantization.quantize_dynamic(Net(), {torch.nn.GRU}, dtype=torch.qint8)
    >>> w = _torch_quantized_gru_weights(q.gru)
    >>> w["options"]["hidden_size"], w["layers"][0][0]["weight_ih"].dtype
    (3, dtype('int8'))
    >>> w["layers"][0][0]["scale_ih"].shape
    (9,)
    """
    if not _is_dynamic_quantized(module):
        raise TypeError(
            f"{who}: expected a {_DYNAMIC_MODULE}.GRU or GRUCell (from "
            "torch.ao.quantization.quantize_dynamic(..., {torch.nn.GRU}, dtype=torch.qint8)), "
            f"got {type(module).__module__}.{type(module).__qualname__}"
        )
    cell = not hasattr(module, "num_layers")
    weight_dtype = str(getattr(module, "weight_dtype" if cell else "dtype", "torch.qint8"))
    if weight_dtype != "torch.qint8":
        raise ValueError(
            f"{who}: the module's weights are {weight_dtype}, expected torch.qint8 "
            "(quantize_dynamic(..., dtype=torch.qint8)); a float16 dynamic GRU is not int8"
        )
    if not cell and getattr(module, "mode", "GRU") != "GRU":
        raise ValueError(f"{who}: the module's mode is {module.mode!r}, expected 'GRU'")
    weights = module.get_weight()
    biases = module.get_bias()
    if cell:
        num_layers, num_directions = 1, 1
        options = {
            "cell": True,
            "input_size": int(module.input_size),
            "hidden_size": int(module.hidden_size),
            "num_layers": 1,
            "bias": bool(module.bias),
            "batch_first": False,
            "dropout": 0.0,
            "bidirectional": False,
        }
    else:
        num_layers = int(module.num_layers)
        num_directions = 2 if module.bidirectional else 1
        options = {
            "cell": False,
            "input_size": int(module.input_size),
            "hidden_size": int(module.hidden_size),
            "num_layers": num_layers,
            "bias": bool(module.bias),
            "batch_first": bool(module.batch_first),
            "dropout": float(module.dropout),
            "bidirectional": num_directions == 2,
        }
    H = options["hidden_size"]
    per_channel = None
    layers = []
    for k in range(num_layers):
        directions = []
        in_k = options["input_size"] if k == 0 else num_directions * H
        for d in range(num_directions):
            suffix = "" if cell else f"_l{k}" + ("_reverse" if d == 1 else "")
            names = tuple(f"{p}{suffix}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            entry: Dict[str, Any] = {"names": names}
            for part, name, cols in (("ih", names[0], in_k), ("hh", names[1], H)):
                tensor = weights[name]
                values, scale = _int8_rows(tensor, name, who)
                if values.shape != (3 * H, cols):
                    raise ValueError(
                        f"{who}: {name} has shape {values.shape}, expected {(3 * H, cols)}"
                    )
                scheme_per_channel = _qscheme(tensor).startswith("per_channel")
                per_channel = scheme_per_channel if per_channel is None else per_channel
                entry[f"weight_{part}"] = values
                entry[f"scale_{part}"] = scale
            for part, name in (("ih", names[2]), ("hh", names[3])):
                entry[f"bias_{part}"] = _float_bias(biases.get(name), name)
                bias = entry[f"bias_{part}"]
                if bias is not None and bias.shape != (3 * H,):
                    raise ValueError(f"{who}: {name} has shape {bias.shape}, expected {(3 * H,)}")
            directions.append(entry)
        layers.append(directions)
    options["per_channel"] = bool(per_channel)
    return {"options": options, "layers": layers}


def _from_torch_quantized(module: Any) -> Any:
    """``cygru.from_torch`` of PyTorch's dynamic int8 GRU (GRUCell): the
    :class:`cygru.QuantizedGRU` (``QuantizedGRUCell``), precision ``"int8"``, holding
    PyTorch's int8 weights and per-row scales as they are (a per-tensor scale repeated per
    row; values of -128 kept) and its float32 biases. ``dropout`` is not carried over (a
    quantized module runs inference only)."""
    from ..quantized import QuantizedGRU, QuantizedGRUCell

    read = _torch_quantized_gru_weights(module, "from_torch")
    o = read["options"]
    if o["cell"]:
        q: Any = QuantizedGRUCell(o["input_size"], o["hidden_size"], o["bias"], precision="int8")
    else:
        q = QuantizedGRU(
            o["input_size"],
            o["hidden_size"],
            o["num_layers"],
            o["bias"],
            o["batch_first"],
            o["bidirectional"],
            precision="int8",
        )
    state = {}
    for directions in read["layers"]:
        for entry in directions:
            w_ih, w_hh, b_ih, b_hh = entry["names"]
            state[w_ih], state[w_ih + "_scale"] = entry["weight_ih"], entry["scale_ih"]
            state[w_hh], state[w_hh + "_scale"] = entry["weight_hh"], entry["scale_hh"]
            if o["bias"]:
                state[b_ih], state[b_hh] = entry["bias_ih"], entry["bias_hh"]
    q.load_state_dict(state)
    return q

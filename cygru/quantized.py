"""Reduced-precision inference: :func:`quantize` and the modules it returns.

A quantized module holds its weights as int8 (with a float32 scale per output row) or as
bfloat16, packed once into the blocks the engine's reduced-precision products read
(``cygru/include/cygru_quant.h``); biases, states, gate math and outputs stay float32.
The engine runs them through the same driver as float32 (a weight format in its
structs), so everything a float32 call has (threads, lengths, bidirectional, layers,
bit-identical results for any thread count and any cut of a stream) holds here too.

Inference only: there is no ``vjp``; train in float32 and quantize the result.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _arrays as A
from . import _cpu, _kernels
from . import functional as F
from ._arrays import BadType, BadValue
from ._backend import GATE_NAMES, layer_weights
from ._typing import Array, ArrayLike
from .modules import GRU, GRUCell, _initial_state

__all__ = ["quantize", "QuantizedGRU", "QuantizedGRUCell", "PRECISIONS"]

#: The reduced precisions :func:`quantize` offers.
PRECISIONS = ("int8", "bf16")

_WFORMAT = {"int8": 1, "bf16": 2}  # the engine's WFORMAT_INT8 / WFORMAT_BF16

# int8 sums are exact in int32 while 127 * 128 * K < 2**31
MAX_INNER_SIZE = 131072

_PICKLE_FORMAT = 1


def _check_precision(precision):
    if not isinstance(precision, str):
        raise BadType(f"precision must be a str, one of {PRECISIONS}, got {precision!r}")
    if precision not in PRECISIONS:
        raise BadValue(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _weight_dtype(precision):
    return np.dtype(np.int8) if precision == "int8" else np.dtype(np.uint16)


def _quantize_weight(w, precision):
    """(values, scale or None) of one float weight matrix: int8 rows and their scales
    (cygru_quant.h's row rule), or bfloat16 bits (uint16)."""
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    if precision == "int8":
        q, scale = _kernels.q8_quantize_rows(w32)
        if not np.isfinite(scale).all():
            raise BadValue("cannot quantize weights that are not finite (inf or NaN)")
        return q, scale
    return _kernels.bf16_from_f32(w32.ravel()).reshape(w32.shape), None


def _dequantize_weight(values, scale, precision):
    if precision == "int8":
        return values.astype(np.float32) * scale[:, None]
    return (values.astype(np.uint32) << 16).view(np.float32)


class _Quantized:
    """What QuantizedGRU and QuantizedGRUCell share: the quantized state, its packing,
    state_dict, pickling, dequantize."""

    _who = "cygru.quantized"
    _float_class: Any = None

    def _setup(self, precision, shapes):
        self.precision = _check_precision(precision)
        self.dtype = np.dtype(np.float32)
        self.device = "cpu"
        # name -> (shape, kind): kind "w" a weight (values + scale for int8), "b" a bias
        self._shapes = dict(shapes)
        self._lock = threading.Lock()
        self._state: Dict[str, np.ndarray] = {}
        self._packed = None

    # -- state ---------------------------------------------------------------------
    def _state_keys(self):
        keys = []
        for n in self._shapes:
            keys.append(n)
            if self.precision == "int8" and n.startswith("weight"):
                keys.append(n + "_scale")
        return keys

    def _expected(self, key):
        """(shape, dtype) the state entry `key` must have."""
        if key.endswith("_scale"):
            return (self._shapes[key[: -len("_scale")]][0],), np.dtype(np.float32)
        if key.startswith("weight"):
            return self._shapes[key], _weight_dtype(self.precision)
        return self._shapes[key], np.dtype(np.float32)

    def _checked_state(self, state_dict, what):
        try:
            keys = list(state_dict.keys())
        except AttributeError:
            raise BadType(
                f"{what} expects a mapping of names to arrays, got {type(state_dict).__name__}"
            ) from None
        want = self._state_keys()
        missing = [k for k in want if k not in keys]
        unexpected = [k for k in keys if k not in want]
        if missing:
            raise BadValue(f"{what}: missing key(s) {missing}")
        if unexpected:
            raise BadValue(f"{what}: unexpected key(s) {unexpected}; expected {want}")
        new = {}
        for k in want:
            shape, dtype = self._expected(k)
            v = state_dict[k]
            if hasattr(v, "detach"):  # a torch tensor
                v = v.detach().cpu().numpy()
            v = np.asarray(v)
            if v.shape != tuple(shape):
                raise BadValue(f"{what}: {k} has shape {A.shape_str(v.shape)}, expected {shape}")
            if v.dtype != dtype:
                raise BadType(f"{what}: {k} has dtype {v.dtype}, expected {dtype}")
            if dtype.kind == "f" and not np.isfinite(v).all():
                raise BadValue(f"{what}: {k} holds values that are not finite")
            if k.endswith("_scale") and (v < 0).any():
                raise BadValue(f"{what}: {k} holds negative scales")
            new[k] = np.array(v, copy=True, order="C")
            new[k].setflags(write=False)
        return new

    def _install(self, state):
        """Pack a checked state and make it the module's (one assignment: a call on
        another thread sees the old or the new weights, never a mix)."""
        H = self.hidden_size
        layers = self._layers(
            {n: self._pack(state, n) if n.startswith("weight") else state[n] for n in self._shapes}
        )
        zero = np.zeros(3 * H, np.float32)
        packed = [
            [
                (w_ih, w_hh, zero if b_ih is None else b_ih, zero if b_hh is None else b_hh)
                for (w_ih, w_hh, b_ih, b_hh) in layer
            ]
            for layer in layers
        ]
        flat = [a for layer in packed for weights in layer for a in weights]
        with self._lock:
            self._state = state
            self._packed, self._flat = packed, flat

    def _pack(self, state, name):
        H = self.hidden_size
        if self.precision == "int8":
            return _kernels.q8_pack_gates(state[name], state[name + "_scale"], H)
        return _kernels.bf16_pack_gates(state[name], H)

    def _quantize_from(self, params):
        state = {}
        for n in self._shapes:
            if n.startswith("weight"):
                values, scale = _quantize_weight(params[n], self.precision)
                state[n] = values
                if scale is not None:
                    state[n + "_scale"] = scale
            else:
                b = np.asarray(params[n], dtype=np.float32)
                if not np.isfinite(b).all():
                    raise BadValue(f"cannot quantize {n}: it holds values that are not finite")
                state[n] = b
        self._install(self._checked_state(state, "quantize"))

    def state_dict(self) -> Dict[str, Array]:
        """Copies of the quantized state: PyTorch's parameter names, the weights as int8
        (with a float32 ``<name>_scale`` per output row) or as bfloat16 bits (uint16),
        the biases float32.

        Examples
        --------
        >>> import cygru
        >>> q = cygru.quantize(cygru.GRU(3, 2, seed=0), "int8")
        >>> {k: str(v.dtype) for k, v in q.state_dict().items()}["weight_ih_l0"]
        'int8'
        >>> sorted(q.state_dict())[:3]
        ['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0']
        """
        with self._lock:
            state = self._state
        return {k: v.copy() for k, v in state.items()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Load a quantized state (the keys, shapes and dtypes of :meth:`state_dict`),
        copied in; nothing changes unless every entry is valid.

        Examples
        --------
        >>> import cygru
        >>> a = cygru.quantize(cygru.GRU(3, 2, seed=0), "bf16")
        >>> b = cygru.quantize(cygru.GRU(3, 2, seed=1), "bf16")
        >>> b.load_state_dict(a.state_dict())
        >>> bool((b.state_dict()["weight_hh_l0"] == a.state_dict()["weight_hh_l0"]).all())
        True
        """
        try:
            self._install(self._checked_state(state_dict, "load_state_dict"))
        except A.ArgumentError as exc:
            raise exc.named(self._who) from None

    def dequantize(self) -> Union[GRU, GRUCell]:
        """The float32 module whose weights are exactly the quantized values (int8 times
        its row scale, or the bfloat16 values): the float reference of this module.

        Examples
        --------
        >>> import numpy as np, cygru
        >>> q = cygru.quantize(cygru.GRU(3, 4, seed=0), "int8")
        >>> f = q.dequantize()
        >>> x = np.ones((5, 1, 3), np.float32)
        >>> float(np.abs(q(x)[0] - f(x)[0]).max()) < 0.05
        True
        """
        with self._lock:
            state = self._state
        m = self._float_module()
        params = {}
        for n in self._shapes:
            if n.startswith("weight"):
                params[n] = _dequantize_weight(state[n], state.get(n + "_scale"), self.precision)
            else:
                params[n] = state[n]
        m.load_state_dict(params)
        return m

    def to_onnx(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: ONNX's GRU operator has no quantized form, and a graph of
        DynamicQuantizeLinear / MatMulInteger nodes around a loop would not be the
        module's arithmetic. Export :meth:`dequantize` (float32) instead.

        Raises
        ------
        TypeError
            Always.

        Examples
        --------
        >>> import cygru
        >>> q = cygru.quantize(cygru.GRU(3, 2), "int8")
        >>> try:
        ...     q.to_onnx()
        ... except TypeError as e:
        ...     print(str(e)[:48])
        cygru.QuantizedGRU: to_onnx cannot export a quan
        """
        raise TypeError(
            f"{self._who}: to_onnx cannot export a quantized module ({self.precision}): "
            "ONNX's GRU operator has no int8 or bfloat16 weights. Export the float32 "
            "module (module.dequantize().to_onnx(...)) and quantize it in your runtime, "
            "or run this module with cygru"
        )

    def vjp(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: quantized modules are for inference; train the float32 module and
        quantize it again.

        Raises
        ------
        TypeError
            Always.

        Examples
        --------
        >>> import cygru
        >>> try:
        ...     cygru.quantize(cygru.GRUCell(3, 2), "bf16").vjp(None)
        ... except TypeError as e:
        ...     print("inference only" in str(e))
        True
        """
        raise TypeError(
            f"{self._who}: quantized modules are inference only (no vjp); train the "
            "float32 module and call cygru.quantize on it again"
        )

    def to(self, device: Optional[str] = None, dtype: Any = None) -> "_Quantized":
        """Only the CPU and float32 are supported: returns the module itself for
        ``to("cpu")``/``to(dtype=np.float32)``, else raises ``ValueError``.

        Examples
        --------
        >>> import cygru
        >>> q = cygru.quantize(cygru.GRU(3, 2), "int8")
        >>> q.to("cpu") is q
        True
        """
        if device not in (None, "cpu"):
            raise ValueError(
                f"{self._who}: quantized modules run on the CPU only, got device {device!r} "
                "(run the float32 module on a GPU instead)"
            )
        if dtype is not None and np.dtype(dtype) != np.float32:
            raise ValueError(
                f"{self._who}: quantized modules compute in float32, got dtype {dtype!r}"
            )
        return self

    def __getstate__(self) -> Dict[str, Any]:
        with self._lock:
            state = self._state
        return {
            "format": _PICKLE_FORMAT,
            "options": self._option_values(),
            "state": {k: np.array(v) for k, v in state.items()},
        }

    def __setstate__(self, st: Dict[str, Any]) -> None:
        who = f"{self._who} (unpickling)"
        if not isinstance(st, dict) or st.get("format") != _PICKLE_FORMAT:
            raise ValueError(f"{who}: unknown state (format {_PICKLE_FORMAT} expected)")
        try:
            self._configure(**st["options"])
            self._install(self._checked_state(st["state"], "unpickling"))
        except A.ArgumentError as exc:
            raise exc.named(who) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._shapes if "_shapes" in self.__dict__ else False:
            raise AttributeError(
                f"{self._who}: {name} is quantized; use load_state_dict to change it"
            )
        object.__setattr__(self, name, value)


class QuantizedGRU(_Quantized):
    """A :class:`cygru.GRU` with int8 or bfloat16 weights, for inference; made by
    :func:`quantize` (or :func:`cygru.from_torch` of PyTorch's dynamically quantized
    GRU).

    Called as a GRU: ``output, h_n = q(x, h0=None, lengths=None)`` with the same shapes,
    options (layers, bidirectional, ``batch_first``, ``reset_after``, ``reverse``) and
    checks; ``x`` and ``h0`` are converted to float32 and the results are float32.

    Parameters
    ----------
    input_size, hidden_size, num_layers, bias, batch_first, bidirectional
        As :class:`cygru.GRU`.
    reset_after, reverse : bool, keyword-only
        As :class:`cygru.GRU`.
    precision : {"int8", "bf16"}, keyword-only
        The weights' format. The weights start at zero: load them with
        :meth:`load_state_dict`, or use :func:`quantize`.

    Examples
    --------
    >>> import numpy as np, cygru
    >>> gru = cygru.GRU(8, 16, num_layers=2, bidirectional=True, seed=0)
    >>> q = cygru.quantize(gru, "int8")
    >>> x = np.random.default_rng(0).standard_normal((20, 3, 8)).astype(np.float32)
    >>> out, h_n = q(x)
    >>> out.shape, h_n.shape, out.dtype
    ((20, 3, 32), (4, 3, 16), dtype('float32'))
    >>> float(np.abs(out - gru(x)[0]).max()) < 0.05
    True
    """

    _who = "cygru.QuantizedGRU"
    _float_class = GRU

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        *,
        reset_after: bool = True,
        reverse: bool = False,
        precision: str = "int8",
    ) -> None:
        try:
            self._configure(
                input_size,
                hidden_size,
                num_layers,
                bias,
                batch_first,
                bidirectional,
                reset_after=reset_after,
                reverse=reverse,
                precision=precision,
            )
            self._quantize_from({n: np.zeros(s, np.float32) for n, s in self._shapes.items()})
        except A.ArgumentError as exc:
            raise exc.named(self._who) from None

    def _configure(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        bidirectional=False,
        *,
        reset_after=True,
        reverse=False,
        precision="int8",
    ):
        # the float GRU's own checks of the options, on an instance that never allocates
        # or initialises weights
        f = GRU.__new__(GRU)
        shapes = f._configure(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            0.0,
            bidirectional,
            reset_after=reset_after,
            reverse=reverse,
        )
        for o in (
            "input_size",
            "hidden_size",
            "num_layers",
            "bias",
            "batch_first",
            "bidirectional",
            "reset_after",
            "reverse",
            "num_directions",
        ):
            object.__setattr__(self, o, getattr(f, o))
        _check_inner_sizes(f.input_size, f.hidden_size, f.num_directions, f.num_layers)
        self._setup(precision, shapes)

    def _layers(self, params):
        return layer_weights(params, self.num_layers, self.num_directions, self.bias)

    def _option_values(self):
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "bidirectional": self.bidirectional,
            "reset_after": self.reset_after,
            "reverse": self.reverse,
            "precision": self.precision,
        }

    def _float_module(self):
        return GRU(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            0.0,
            self.bidirectional,
            reset_after=self.reset_after,
            reverse=self.reverse,
        )

    def __repr__(self) -> str:
        extra = ", bidirectional=True" if self.bidirectional else ""
        extra += f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        extra += ", batch_first=True" if self.batch_first else ""
        extra += ", bias=False" if not self.bias else ""
        extra += ", reset_after=False" if not self.reset_after else ""
        return (
            f"QuantizedGRU({self.input_size}, {self.hidden_size}{extra}, "
            f"precision={self.precision!r})"
        )

    def __call__(
        self,
        x: ArrayLike,
        h0: Optional[ArrayLike] = None,
        lengths: Optional[ArrayLike] = None,
        *,
        hx: Optional[ArrayLike] = None,
    ) -> Tuple[Array, Array]:
        """Run the GRU: ``output, h_n = q(x, h0=None, lengths=None)``, as
        :meth:`cygru.GRU.__call__` (float32 results).

        Examples
        --------
        >>> import numpy as np, cygru
        >>> q = cygru.quantize(cygru.GRU(3, 4, seed=0), "bf16")
        >>> out, h_n = q(np.ones((5, 2, 3)), lengths=[5, 2])
        >>> float(abs(out[2:, 1]).max())
        0.0
        """
        with self._lock:
            packed, flat = self._packed, self._flat
        if lengths is None and (h0 is None or hx is None):
            # the common case (float32 ndarrays of the right shapes) straight to the engine
            res = _cpu.gru_lean(
                x,
                h0 if hx is None else hx,
                flat,
                self.dtype,
                self.num_layers,
                self.num_directions,
                self.hidden_size,
                self.input_size,
                True,
                self.reverse,
                self.reset_after,
                self.batch_first,
                _WFORMAT[self.precision],
            )
            if res is not None:
                return res
        try:
            h0 = _initial_state(h0, hx, "h0")
            call = F.SequenceCall.of_module(self, x, h0, lengths, np.float32, "cpu")
            out, h_n, _ = call.run(packed, wformat=_WFORMAT[self.precision])
        except A.ArgumentError as exc:
            raise exc.named(self._who) from None
        return out, h_n

    forward = __call__


class QuantizedGRUCell(_Quantized):
    """A :class:`cygru.GRUCell` with int8 or bfloat16 weights, for inference; made by
    :func:`quantize`. ``h1 = cell(x, h=None)`` as the float32 cell (float32 results); a
    step gives the bits of a one-step :class:`QuantizedGRU` call on the same weights.

    Parameters
    ----------
    input_size, hidden_size, bias
        As :class:`cygru.GRUCell`.
    reset_after : bool, keyword-only
        As :class:`cygru.GRUCell`.
    precision : {"int8", "bf16"}, keyword-only
        The weights' format (zeros until :meth:`load_state_dict`).

    Examples
    --------
    >>> import numpy as np, cygru
    >>> cell = cygru.quantize(cygru.GRUCell(3, 4, seed=0), "int8")
    >>> h = cell(np.ones((2, 3), np.float32))
    >>> h.shape, h.dtype
    ((2, 4), dtype('float32'))
    """

    _who = "cygru.QuantizedGRUCell"
    _float_class = GRUCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        reset_after: bool = True,
        precision: str = "int8",
    ) -> None:
        try:
            self._configure(
                input_size, hidden_size, bias, reset_after=reset_after, precision=precision
            )
            self._quantize_from({n: np.zeros(s, np.float32) for n, s in self._shapes.items()})
        except A.ArgumentError as exc:
            raise exc.named(self._who) from None

    def _configure(self, input_size, hidden_size, bias=True, *, reset_after=True, precision="int8"):
        f = GRUCell.__new__(GRUCell)  # its checks only, as QuantizedGRU._configure
        shapes = f._configure(input_size, hidden_size, bias, reset_after=reset_after)
        for o in ("input_size", "hidden_size", "bias", "reset_after"):
            object.__setattr__(self, o, getattr(f, o))
        _check_inner_sizes(f.input_size, f.hidden_size, 1, 1)
        self._setup(precision, shapes)

    def _layers(self, params):
        # one layer of one direction, the cell's names (no layer suffix)
        return [[tuple(params.get(n) for n in GATE_NAMES)]]

    def _option_values(self):
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "bias": self.bias,
            "reset_after": self.reset_after,
            "precision": self.precision,
        }

    def _float_module(self):
        return GRUCell(self.input_size, self.hidden_size, self.bias, reset_after=self.reset_after)

    def __repr__(self) -> str:
        extra = ", bias=False" if not self.bias else ""
        extra += ", reset_after=False" if not self.reset_after else ""
        return (
            f"QuantizedGRUCell({self.input_size}, {self.hidden_size}{extra}, "
            f"precision={self.precision!r})"
        )

    def __call__(
        self, x: ArrayLike, h: Optional[ArrayLike] = None, *, hx: Optional[ArrayLike] = None
    ) -> Array:
        """One step: x (B, I) or (I,), h (B, H) or (H,) or None (zeros) -> h1 (float32).

        Examples
        --------
        >>> import numpy as np, cygru
        >>> cell = cygru.quantize(cygru.GRUCell(3, 2, seed=0), "bf16")
        >>> cell(np.ones(3)).shape
        (2,)
        """
        with self._lock:
            packed, flat = self._packed, self._flat
        if hx is None and type(x) is np.ndarray and (h is None or type(h) is np.ndarray):
            # the common case: a one-step call of the lean compiled entry
            res = _cpu.gru_lean(
                x[None],
                None if h is None else h[None],
                flat,
                self.dtype,
                1,
                1,
                self.hidden_size,
                self.input_size,
                True,
                False,
                self.reset_after,
                False,
                _WFORMAT[self.precision],
            )
            if res is not None:
                return res[1][0]
        try:
            h = _initial_state(h, hx, "h")
            x = A.as_float_array(x, np.float32, "x", "cpu", check=self._check_x)
            if h is not None:
                want = (self.hidden_size,) if x.ndim == 1 else (x.shape[0], self.hidden_size)
                h = A.as_shaped(
                    h, want, np.float32, "h", "cpu", what=f"h of shape {A.shape_str(want)}"
                )
            call = F.SequenceCall.of_cell(
                x,
                h,
                hidden_size=self.hidden_size,
                reset_after=self.reset_after,
                dtype=np.float32,
                device="cpu",
            )
            out, _, _ = call.run(packed, wformat=_WFORMAT[self.precision])
        except A.ArgumentError as exc:
            raise exc.named(self._who) from None
        return out.reshape(x.shape[:-1] + (self.hidden_size,))

    def _check_x(self, x):
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise BadValue(
                f"expected x of shape (batch, {self.input_size}) or ({self.input_size},), "
                f"got shape {A.shape_str(x.shape)}"
            )

    forward = __call__


def _check_inner_sizes(input_size, hidden_size, D, L):
    inner = max(input_size, hidden_size, D * hidden_size if L > 1 else 0)
    if inner > MAX_INNER_SIZE:
        raise BadValue(
            f"reduced precision supports input and hidden sizes up to {MAX_INNER_SIZE} "
            f"(int8 sums must stay exact in int32), got {inner}"
        )


@A.boundary("cygru.quantize")
def quantize(module: Union[GRU, GRUCell], precision: str) -> Union[QuantizedGRU, QuantizedGRUCell]:
    """A reduced-precision copy of a GRU or GRUCell, for inference.

    ``"int8"``: dynamic quantization. Each weight matrix is quantized symmetrically per
    output row (``scale = max(abs(row)) / 127``, values rounded half to even); at run time each
    row of the input and of the state is quantized the same way, the products are summed
    exactly in int32 (AVX512-VNNI where the CPU has it) and scaled back to float32.
    ``"bf16"``: weights and activations rounded to bfloat16, products summed in float32
    (AVX512-BF16 where the CPU has it). Biases, states and the gate math stay float32
    either way. Every CPU runs the same arithmetic (fallbacks give the same bits as the
    fast paths), so a result does not depend on the machine, the thread count or how a
    stream is cut into calls. See "Reduced precision" in the docs for the speed and the
    measured accuracy.

    Parameters
    ----------
    module : cygru.GRU or cygru.GRUCell
        The float module (float32 or float64, on any device); it is not changed. Its
        weights are taken in float32.
    precision : {"int8", "bf16"}

    Returns
    -------
    QuantizedGRU or QuantizedGRUCell

    Raises
    ------
    TypeError
        If ``module`` is not a cygru GRU or GRUCell (convert a PyTorch module with
        :func:`cygru.from_torch` first).
    ValueError
        If ``precision`` is not one of :data:`PRECISIONS`, or a weight is not finite.

    Examples
    --------
    >>> import numpy as np, cygru
    >>> gru = cygru.GRU(16, 32, seed=0)
    >>> x = np.random.default_rng(1).standard_normal((10, 4, 16)).astype(np.float32)
    >>> for p in ("int8", "bf16"):
    ...     out, _ = cygru.quantize(gru, p)(x)
    ...     print(p, float(np.abs(out - gru(x)[0]).max()) < 0.05)
    int8 True
    bf16 True
    """
    if isinstance(module, _Quantized):
        raise BadType(f"the module is already quantized ({module.precision})")
    if not isinstance(module, (GRU, GRUCell)):
        hint = ""
        if type(module).__module__.startswith("torch"):
            hint = " (convert a PyTorch module with cygru.from_torch first)"
        raise BadType(f"expected a cygru.GRU or cygru.GRUCell, got {type(module).__name__}{hint}")
    _check_precision(precision)
    params = {n: A.to_host(a) for n, a in module.state_dict().items()}
    if isinstance(module, GRU):
        q: _Quantized = QuantizedGRU.__new__(QuantizedGRU)
        q._configure(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            module.batch_first,
            module.bidirectional,
            reset_after=module.reset_after,
            reverse=module.reverse,
            precision=precision,
        )
    else:
        q = QuantizedGRUCell.__new__(QuantizedGRUCell)
        q._configure(
            module.input_size,
            module.hidden_size,
            module.bias,
            reset_after=module.reset_after,
            precision=precision,
        )
    q._quantize_from(params)
    return q  # type: ignore[return-value]

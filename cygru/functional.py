"""Stateless GRU functions over explicit weights, and the validation boundary.

Everything that reaches a compiled kernel passes through here first: dtypes are
checked and converted, shapes and lengths are checked against each other, sizes are
checked against BLAS's 32-bit int, and arrays are made C-contiguous (copies only
when needed; the caller's arrays are never written). The kernels assume all of it.

The backend is picked by array type: NumPy arrays run on :mod:`cygru._cpu`, CuPy
arrays (and objects exposing ``__cuda_array_interface__`` or CUDA DLPack) on
:mod:`cygru._cupy`.
"""
import numbers
import operator

import numpy as np

from . import _cpu

__all__ = ["gru", "gru_cell"]

_INT_MAX = 2**31 - 1
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
GATE_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


# ---------------------------------------------------------------------------
# devices
# ---------------------------------------------------------------------------

def _is_cupy_array(a):
    return type(a).__module__.split(".")[0] == "cupy"


def _is_cuda_object(a):
    """True for CuPy arrays and foreign CUDA arrays (a PyTorch CUDA tensor, ...)."""
    if _is_cupy_array(a) or hasattr(a, "__cuda_array_interface__"):
        return True
    dev = getattr(a, "__dlpack_device__", None)
    if dev is not None and not isinstance(a, np.ndarray):
        try:
            return int(dev()[0]) in (2, 13)  # kDLCUDA, kDLCUDAManaged
        except Exception:
            return False
    return False


def device_of(a):
    """'cpu' or 'cuda:N' for an array-like."""
    if _is_cupy_array(a):
        return f"cuda:{a.device.id}"
    if _is_cuda_object(a):
        return "cuda"
    return "cpu"


def _backend(device):
    if device == "cpu":
        return _cpu
    from . import _cupy
    return _cupy


# ---------------------------------------------------------------------------
# conversion and checks
# ---------------------------------------------------------------------------

def check_dtype(dtype, who):
    """Normalise a module dtype: float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"{who}: dtype must be float32 or float64, got {dt}")
    return dt


def check_positive_int(value, name, who, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{who}: {name} must be an integer, got {type(value).__name__} {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{who}: {name} must be >= {minimum}, got {value}")
    if value > _INT_MAX:
        raise ValueError(f"{who}: {name} = {value} does not fit BLAS's 32-bit int")
    return value


def as_float_array(a, dtype, name, who, device="cpu", check=None):
    """`a` as a C-contiguous array of `dtype` on `device` (copying only if needed).

    Real numeric input (bool, integer, float of any width) is converted; complex,
    object, string and other kinds raise TypeError. Arrays on the wrong device raise
    TypeError saying how to move them. `check(array)` runs on the unconverted array
    first, so shape and size errors are raised before any copy is made (a huge
    zero-strided view must not be materialised to be rejected).
    """
    if type(a) is np.ndarray and device == "cpu" and a.dtype == dtype and a.flags.c_contiguous:
        # already what the kernels take: the common case, kept cheap for per-step calls
        if check is not None:
            check(a)
        return a
    on_gpu = _is_cuda_object(a)
    if device == "cpu":
        if on_gpu:
            raise TypeError(
                f"{who}: {name} is a GPU array but the module is on the CPU; call "
                f"module.to('cuda') or pass a NumPy array (e.g. cupy.asnumpy({name}))")
        try:
            arr = np.asarray(a)
        except Exception as exc:
            raise TypeError(f"{who}: {name} must be array-like, got {type(a).__name__}: {exc}") from None
    else:
        if not on_gpu:
            raise TypeError(
                f"{who}: {name} is a host (NumPy) array but the module is on {device}; "
                f"pass cupy.asarray({name}) or call module.to('cpu')")
        from . import _cupy
        arr = _cupy.as_cupy(a, device)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{who}: {name} must hold real numbers (it is converted to {np.dtype(dtype)}), "
            f"got dtype {arr.dtype}")
    if check is not None:
        check(arr)
    if device == "cpu":
        return np.ascontiguousarray(arr, dtype=dtype)
    from . import _cupy
    return _cupy.ascontiguous(arr, dtype)


def check_flag(value, name, who):
    """A boolean option: True/False (NumPy's bools, and the integers 0 and 1, too).

    Anything else is refused rather than read by its truth value, so that
    ``bias="no"`` is not silently True and an array is not an ambiguous truth value."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, np.ndarray) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{who}: {name} must be True or False, got {type(value).__name__} {value!r}")


def check_direction_flags(reverse, bidirectional, who):
    """reverse (one direction run backwards in time) excludes bidirectional."""
    if reverse and bidirectional:
        raise ValueError(f"{who}: reverse=True needs a single direction; "
                         "bidirectional=True already runs both")


def _shape_str(shape):
    return str(tuple(int(s) for s in shape))


def check_lengths(lengths, T, B, who):
    """Validate per-sequence lengths: integer array of shape (B,), 1 <= L_b <= T."""
    try:
        arr = np.asarray(lengths.get() if _is_cupy_array(lengths) else lengths)
    except Exception as exc:
        raise TypeError(f"{who}: lengths must be an integer array-like, got {type(lengths).__name__}: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{who}: lengths must hold integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"{who}: lengths must have shape ({B},) (one per batch row), got {_shape_str(arr.shape)}")
    if B and (arr.min() < 1 or arr.max() > T):
        bad = int(arr.min()) if arr.min() < 1 else int(arr.max())
        raise ValueError(f"{who}: every length must be in [1, {T}] (the sequence length), got {bad}")
    return arr.astype(np.int64)


def check_blas_sizes(who, hint="split the batch or the sequence", **sizes):
    for name, value in sizes.items():
        if value > _INT_MAX:
            raise ValueError(
                f"{who}: {name} = {value} does not fit BLAS's 32-bit int (max {_INT_MAX}); "
                f"{hint}")


# ---------------------------------------------------------------------------
# the sequence call
# ---------------------------------------------------------------------------

def layer_weights(params, num_layers, num_directions, bias, suffix_reverse=True):
    """Nested [layer][direction] -> (w_ih, w_hh, b_ih, b_hh) from PyTorch-named params."""
    layers = []
    for k in range(num_layers):
        per_dir = []
        for d in range(num_directions):
            sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
            w = tuple(params[n + sfx] if (bias or n.startswith("weight")) else None
                      for n in GATE_NAMES)
            per_dir.append(w)
        layers.append(per_dir)
    return layers


class SequenceCall:
    """A validated call of a multi-layer GRU: what the backend needs, plus how to
    shape the results for the caller (unbatched input gives unbatched outputs)."""

    __slots__ = ("x", "h0", "lengths", "unbatched", "T", "B", "device", "dtype", "kwargs",
                 "out_shape", "hn_shape")

    def __init__(self, x, h0, lengths, *, input_size, hidden_size, num_layers, num_directions,
                 batch_first, reverse, reset_after, dtype, device, who):
        H, D, L = hidden_size, num_directions, num_layers

        def check_x(x):
            if x.ndim not in (2, 3):
                layout = "(B, T, I)" if batch_first else "(T, B, I)"
                raise ValueError(
                    f"{who}: expected x with 3 dimensions {layout} or 2 (unbatched (T, I)), "
                    f"got {x.ndim} dimensions, shape {_shape_str(x.shape)}")
            if x.shape[-1] != input_size:
                raise ValueError(
                    f"{who}: expected x with {input_size} features (input_size) in its last "
                    f"dimension, got shape {_shape_str(x.shape)}")
            T = x.shape[0] if (x.ndim == 2 or not batch_first) else x.shape[1]
            B = 1 if x.ndim == 2 else (x.shape[0] if batch_first else x.shape[1])
            if T == 0:
                raise ValueError(f"{who}: the sequence length is 0; expected at least one time "
                                 f"step (x has shape {_shape_str(x.shape)})")
            check_blas_sizes(who, **{"T*B (sequence length x batch)": T * B,
                                     "4*hidden_size*directions": 4 * H * D,
                                     "input_size": input_size})

        x = as_float_array(x, dtype, "x", who, device, check=check_x)
        self.unbatched = x.ndim == 2
        if self.unbatched:
            x = x[:, None, :]      # unbatched (T, I) is (T, 1, I), whatever batch_first
            batch_first = False
        T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
        want_h = (L * D, H) if self.unbatched else (L * D, B, H)
        if h0 is not None:
            h0 = as_float_array(h0, dtype, "h0", who, device)
            if h0.shape != want_h:
                raise ValueError(
                    f"{who}: expected h0 of shape {_shape_str(want_h)} "
                    f"(num_layers*num_directions, {'' if self.unbatched else 'batch, '}hidden_size), "
                    f"got {_shape_str(h0.shape)}")
            if self.unbatched:
                h0 = h0[:, None, :]
        if lengths is not None:
            if self.unbatched:
                raise ValueError(f"{who}: lengths needs batched input; x is unbatched "
                                 f"(shape {_shape_str(x.shape[::2])}), so there is one sequence "
                                 "and its length is x.shape[0]")
            lengths = check_lengths(lengths, T, B, who)
        self.x, self.h0, self.lengths = x, h0, lengths
        self.T, self.B, self.device, self.dtype = T, B, device, np.dtype(dtype)
        self.kwargs = dict(hidden_size=H, num_directions=D, reverse=reverse,
                           reset_after=reset_after, lengths=lengths, batch_first=batch_first)
        if self.unbatched:
            self.out_shape, self.hn_shape = (T, D * H), (L * D, H)
        else:
            self.out_shape = (B, T, D * H) if batch_first else (T, B, D * H)
            self.hn_shape = (L * D, B, H)

    def run(self, layers, dropout_masks=None, need_cache=False):
        if self.B == 0:                      # empty batch: nothing to compute
            xp = np if self.device == "cpu" else _backend(self.device).xp()
            out = xp.zeros(self.out_shape, self.dtype)
            h_n = xp.zeros(self.hn_shape, self.dtype)
            return out, h_n, ("empty", self)
        out, h_n, cache = _backend(self.device).gru_forward(
            self.x, self.h0, layers, dropout_masks=dropout_masks, need_cache=need_cache,
            **self.kwargs)
        return out.reshape(self.out_shape), h_n.reshape(self.hn_shape), cache

    def backward(self, cache, d_output, d_h_n, grads, who):
        out_shape, hn_shape = self.out_shape, self.hn_shape
        if d_output is not None:
            d_output = as_float_array(d_output, self.dtype, "d_output", who, self.device)
            if d_output.shape != out_shape:
                raise ValueError(f"{who}: expected d_output of the output's shape "
                                 f"{_shape_str(out_shape)}, got {_shape_str(d_output.shape)}")
        if d_h_n is not None:
            d_h_n = as_float_array(d_h_n, self.dtype, "d_h_n", who, self.device)
            if d_h_n.shape != hn_shape:
                raise ValueError(f"{who}: expected d_h_n of h_n's shape "
                                 f"{_shape_str(hn_shape)}, got {_shape_str(d_h_n.shape)}")
        x_shape = self.x.shape[::2] if self.unbatched else self.x.shape
        h_shape = hn_shape
        if isinstance(cache, tuple) and cache and cache[0] == "empty":
            xp = np if self.device == "cpu" else _backend(self.device).xp()
            return xp.zeros(x_shape, self.dtype), xp.zeros(h_shape, self.dtype)
        if self.unbatched:
            if d_output is not None:
                d_output = d_output[:, None, :]
            if d_h_n is not None:
                d_h_n = d_h_n[:, None, :]
        dx, dh0 = _backend(self.device).gru_backward(cache, d_output, d_h_n, grads)
        return dx.reshape(x_shape), dh0.reshape(h_shape)


def _params_info(params, who):
    try:
        w_hh = params["weight_hh_l0"]
        w_ih = params["weight_ih_l0"]
    except (KeyError, TypeError):
        raise ValueError(f"{who}: params must map PyTorch parameter names "
                         "('weight_ih_l0', 'weight_hh_l0', ...) to arrays") from None
    return w_ih, w_hh


def gru(x, params, h0=None, *, num_layers=1, bidirectional=False, batch_first=False,
        reset_after=True, reverse=False, lengths=None):
    """Run a multi-layer GRU over a sequence with explicit weights (no module).

    Parameters
    ----------
    x : array_like
        (T, B, I), or (B, T, I) with ``batch_first``, or unbatched (T, I).
    params : mapping
        PyTorch-named weights: ``weight_ih_l{k}``, ``weight_hh_l{k}``, optionally
        ``bias_ih_l{k}``, ``bias_hh_l{k}`` (all four biases or none), with the suffix
        ``_reverse`` for the backward direction. The dtype of ``weight_hh_l0``
        (float32 or float64) is the computation's dtype.
    h0 : array_like, optional
        (L*D, B, H) or (L*D, H) unbatched; zeros when omitted.
    num_layers, bidirectional, batch_first, reset_after, reverse, lengths
        As for :class:`cygru.GRU`.

    Returns
    -------
    output : ndarray
        (T, B, D*H) (batch_first: (B, T, D*H); unbatched: (T, D*H)).
    h_n : ndarray
        (L*D, B, H) (unbatched: (L*D, H)).

    Examples
    --------
    >>> import numpy as np, cygru
    >>> m = cygru.GRU(4, 3, seed=0)
    >>> x = np.ones((5, 2, 4), np.float32)
    >>> out, h_n = cygru.functional.gru(x, m.state_dict())
    >>> np.array_equal(out, m(x)[0])
    True
    """
    who = "cygru.functional.gru"
    num_layers = check_positive_int(num_layers, "num_layers", who)
    bidirectional = check_flag(bidirectional, "bidirectional", who)
    batch_first = check_flag(batch_first, "batch_first", who)
    reset_after = check_flag(reset_after, "reset_after", who)
    reverse = check_flag(reverse, "reverse", who)
    check_direction_flags(reverse, bidirectional, who)
    w_ih, w_hh = _params_info(params, who)
    device = device_of(w_hh)
    dtype = getattr(w_hh, "dtype", None)
    if dtype is None:
        raise TypeError(f"{who}: weight_hh_l0 must be an array (its dtype, float32 or "
                        f"float64, is the computation's dtype), got {type(w_hh).__name__}")
    dtype = check_dtype(dtype, who)
    for name, w in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh)):
        if getattr(w, "ndim", None) != 2:
            raise ValueError(f"{who}: expected {name} with 2 dimensions (3*hidden_size, "
                             f"features), got shape {_shape_str(getattr(w, 'shape', ()))}")
    if w_hh.shape[0] != 3 * w_hh.shape[1]:
        raise ValueError(f"{who}: expected weight_hh_l0 of shape (3*H, H), got "
                         f"{_shape_str(w_hh.shape)}")
    H = int(w_hh.shape[1])
    D = 2 if bidirectional else 1
    bias = "bias_ih_l0" in params
    # every key must be used: a forgotten num_layers=2 or bidirectional=True would
    # otherwise drop the `_l1` or `_reverse` weights and run a different model silently
    used = {n + f"_l{k}" + ("_reverse" if d == 1 else "")
            for k in range(num_layers) for d in range(D) for n in GATE_NAMES
            if bias or n.startswith("weight")}
    keys = params.keys() if hasattr(params, "keys") else ()
    unexpected = sorted(str(k) for k in keys if k not in used)
    if unexpected:
        raise ValueError(
            f"{who}: params has key(s) {unexpected} that num_layers={num_layers}, "
            f"bidirectional={bidirectional} and bias={bias} (from 'bias_ih_l0') do not use; "
            "pass the options the weights were made with")
    layers = []
    for k in range(num_layers):
        per_dir = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d == 1 else "")
            in_size = int(w_ih.shape[1]) if k == 0 else D * H
            shapes = {"weight_ih": (3 * H, in_size), "weight_hh": (3 * H, H),
                      "bias_ih": (3 * H,), "bias_hh": (3 * H,)}
            ws = []
            for n in GATE_NAMES:
                if n.startswith("bias") and not bias:
                    ws.append(None)
                    continue
                if n + sfx not in params:
                    raise ValueError(f"{who}: params has no '{n + sfx}'")
                a = as_float_array(params[n + sfx], dtype, n + sfx, who, device)
                if a.shape != shapes[n]:
                    raise ValueError(f"{who}: expected {n + sfx} of shape "
                                     f"{_shape_str(shapes[n])}, got {_shape_str(a.shape)}")
                ws.append(a)
            per_dir.append(tuple(ws))
        layers.append(per_dir)
    call = SequenceCall(x, h0, lengths, input_size=int(w_ih.shape[1]), hidden_size=H,
                        num_layers=num_layers, num_directions=D, batch_first=batch_first,
                        reverse=reverse, reset_after=reset_after, dtype=dtype, device=device,
                        who=who)
    out, h_n, _ = call.run(layers)
    return out, h_n


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, reset_after=True):
    """One GRU step with explicit weights (no module).

    Parameters
    ----------
    x : array_like
        (B, I) or unbatched (I,).
    h : array_like or None
        (B, H) or (H,); zeros when None.
    w_ih, w_hh : array_like
        (3H, I) and (3H, H), gate order r, z, n. The dtype of ``w_hh`` (float32 or
        float64) is the computation's dtype.
    b_ih, b_hh : array_like, optional
        (3H,) each; zeros when omitted.
    reset_after : bool
        True: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) (PyTorch). False:
        n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).

    Returns
    -------
    ndarray
        The next state, (B, H) or (H,).

    Examples
    --------
    >>> import numpy as np, cygru
    >>> c = cygru.GRUCell(3, 2, seed=0)
    >>> h1 = cygru.functional.gru_cell(np.ones(3), None, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
    >>> np.array_equal(h1, c(np.ones(3)))
    True
    """
    who = "cygru.functional.gru_cell"
    device = device_of(w_hh)
    dtype = check_dtype(getattr(w_hh, "dtype", None), who)
    w_hh = as_float_array(w_hh, dtype, "w_hh", who, device)
    if w_hh.ndim != 2 or w_hh.shape[0] != 3 * w_hh.shape[1]:
        raise ValueError(f"{who}: expected w_hh of shape (3H, H), got {_shape_str(w_hh.shape)}")
    H = w_hh.shape[1]
    w_ih = as_float_array(w_ih, dtype, "w_ih", who, device)
    if w_ih.ndim != 2 or w_ih.shape[0] != 3 * H:
        raise ValueError(f"{who}: expected w_ih of shape ({3 * H}, I), got {_shape_str(w_ih.shape)}")
    biases = []
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            b = as_float_array(b, dtype, name, who, device)
            if b.shape != (3 * H,):
                raise ValueError(f"{who}: expected {name} of shape ({3 * H},), got {_shape_str(b.shape)}")
        biases.append(b)
    return cell_call(x, h, w_ih, w_hh, biases[0], biases[1], reset_after, dtype, device, who)


def cell_inputs(x, h, I, H, dtype, device, who):
    """A cell step's x ((B, I) or (I,)) and h (matching (B, H) or (H,), or None),
    validated and converted; shapes are kept as the caller gave them."""
    def check_x(x):
        if x.ndim not in (1, 2) or x.shape[-1] != I:
            raise ValueError(f"{who}: expected x of shape (B, {I}) or ({I},) (input_size {I}), "
                             f"got {_shape_str(x.shape)}")
        check_blas_sizes(who, batch=x.shape[0] if x.ndim == 2 else 1)

    x = as_float_array(x, dtype, "x", who, device, check=check_x)
    if h is not None:
        h = as_float_array(h, dtype, "h", who, device)
        want = (H,) if x.ndim == 1 else (x.shape[0], H)
        if h.shape != want:
            raise ValueError(f"{who}: expected h of shape {_shape_str(want)}, got {_shape_str(h.shape)}")
    return x, h


def cell_call(x, h, w_ih, w_hh, b_ih, b_hh, reset_after, dtype, device, who):
    """Validate a cell's x and h against already-validated weights and run one step."""
    I, H = w_ih.shape[1], w_hh.shape[1]
    if (device == "cpu" and type(x) is np.ndarray and x.ndim == 2 and x.dtype == dtype
            and x.shape[1] == I and 0 < x.shape[0] <= _INT_MAX and x.flags.c_contiguous
            and (h is None or (type(h) is np.ndarray and h.dtype == dtype
                               and h.shape == (x.shape[0], H) and h.flags.c_contiguous))):
        # the streaming case (a batch of C-contiguous rows of the right dtype) goes
        # straight to the kernel: per-step calls are dominated by this overhead
        return _cpu.cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after)

    x, h = cell_inputs(x, h, I, H, dtype, device, who)
    unbatched = x.ndim == 1
    if unbatched:
        x = x[None, :]
    B = x.shape[0]
    if h is not None:
        h = h.reshape(B, H)
    if B == 0:
        xp = np if device == "cpu" else _backend(device).xp()
        return xp.zeros((0, H), dtype)
    out = _backend(device).cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, reset_after)
    return out[0] if unbatched else out

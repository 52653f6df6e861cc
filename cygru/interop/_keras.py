"""Keras -> cygru: :func:`from_keras`, and the two helpers for Keras' masks."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

# at run time too, for typing.get_type_hints
from .._typing import ArrayLike, DTypeLike
from ..modules import GRU
from ._common import GATE_NAMES, _float_dtype, _layer_suffix, _modules, _swap_rz

__all__ = ["from_keras", "lengths_from_mask", "repeat_last_state"]

_WHO = "cygru.from_keras"

# Keras GRU config fields that only matter for training (initial values, penalties, weight
# projections after each update, the dropout seed) or for how Keras schedules the same
# computation (``unroll`` unrolls the time loop into the graph, ``use_cudnn`` picks cuDNN's
# kernel: both give the same numbers), or for what the call returns (``return_state``: cygru
# always returns both the sequence and the state). None changes a forward pass's values.
_GRU_IGNORED = frozenset(
    [
        "name",
        "trainable",
        "return_state",
        "unroll",
        "use_cudnn",
        "seed",
        "kernel_initializer",
        "recurrent_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "recurrent_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "recurrent_constraint",
        "bias_constraint",
    ]
)
# Fields that from_keras reads and maps (or checks).
_GRU_READ = frozenset(
    [
        "dtype",
        "units",
        "activation",
        "recurrent_activation",
        "use_bias",
        "reset_after",
        "return_sequences",
        "go_backwards",
        "stateful",
        "dropout",
        "recurrent_dropout",
        "zero_output_for_mask",
    ]
)
_BIDIRECTIONAL_FIELDS = frozenset(
    ["name", "trainable", "dtype", "merge_mode", "layer", "backward_layer"]
)


def _is_keras_object(obj):
    """A Keras layer or model (a Keras Variable is an array here: it has no get_weights)."""
    return hasattr(obj, "get_weights") and any(
        c.__module__.split(".")[0] in ("keras", "tf_keras") for c in type(obj).__mro__
    )


def _kind(obj):
    """'GRU', 'Bidirectional', 'Dropout', 'model' or None. Keras' own classes only: a subclass
    (a custom layer, a subclassed Model) may override ``call`` and compute something else."""
    if not type(obj).__module__.startswith(("keras.", "tf_keras.")):
        return None
    name = type(obj).__name__
    if name in ("GRU", "Bidirectional", "Dropout"):
        return name
    if name in ("Sequential", "Functional") and hasattr(obj, "layers"):
        return "model"
    return None


def _label(layer):
    return f"{type(layer).__name__} layer {getattr(layer, 'name', '?')!r}"


def _policy_dtype(layer, dtype):
    """The float dtype of the module: ``dtype`` if given, else the layer's compute dtype."""
    if dtype is not None:
        return _float_dtype(dtype, "dtype")
    policy = getattr(layer, "dtype_policy", None)
    compute = str(getattr(policy, "compute_dtype", None) or getattr(layer, "dtype", "float32"))
    if compute not in ("float32", "float64"):
        raise ValueError(
            f"{_WHO}: {_label(layer)} has the dtype policy {getattr(policy, 'name', compute)!r}, "
            f"which computes in {compute}; cygru computes in float32 or float64. Pass "
            "dtype=np.float32 to convert it anyway (the outputs then differ from Keras' by "
            f"{compute} rounding)"
        )
    return np.dtype(compute)


def _variable_array(variable):
    """A copy of a Keras variable's value as a NumPy array.

    Not ``layer.get_weights()``: it calls ``np.array(variable)``, and Keras 3's ``Variable``
    (and, on the torch backend, the ``torch.Tensor`` it holds) implements ``__array__``
    without NumPy 2's ``copy`` keyword, for which NumPy issues a DeprecationWarning per
    array. The backend's own array is converted instead: a torch tensor through
    ``detach().cpu().numpy()``, a TensorFlow one through ``numpy()``, a JAX or NumPy array
    directly."""
    value = variable.value
    if hasattr(value, "detach"):  # torch (which has no NumPy bfloat16: widened, exactly)
        value = value.detach().cpu()
        value = (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
    elif callable(getattr(value, "numpy", None)):  # tensorflow
        value = value.numpy()
    return np.array(value, copy=True)


def _layer_weights(layer):
    """``layer.get_weights()``, read without NumPy's DeprecationWarnings (see above)."""
    variables = list(layer.weights)
    if any(callable(getattr(v, "value", None)) or not hasattr(v, "value") for v in variables):
        return layer.get_weights()  # tf_keras (Keras 2): tf.Variable's ``value`` is a method
    return [_variable_array(v) for v in variables]


def _read_gru(layer, dtype, ignore_dropout):
    """Check every config field of a Keras GRU; return what the conversion needs."""
    label = _label(layer)
    config = layer.get_config()
    unknown = sorted(set(config) - _GRU_IGNORED - _GRU_READ)
    if unknown:
        raise ValueError(
            f"{_WHO}: {label} has the config field(s) {unknown}, which this version of cygru "
            "does not know; it cannot tell whether they change the computation"
        )
    for field, expected in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        value = config.get(field, expected)
        if value != expected:
            raise ValueError(
                f"{_WHO}: {label} has {field}={value!r}; cygru's GRU computes with "
                f"{field}={expected!r} only"
            )
    if config.get("stateful", False):
        raise ValueError(
            f"{_WHO}: {label} has stateful=True (it carries its state from one batch to the "
            "next); a cygru.GRU keeps no state between calls: convert a copy built with "
            "stateful=False and pass the previous call's h_n as h0"
        )
    for field in ("dropout", "recurrent_dropout"):
        rate = float(config.get(field, 0.0) or 0.0)
        if rate > 0 and not ignore_dropout:
            raise ValueError(
                f"{_WHO}: {label} has {field}={rate}. Keras applies it in training only (at "
                "inference it does nothing), and cygru has no input or recurrent dropout: "
                "pass ignore_dropout=True to convert the layer for inference"
            )
    weights = _layer_weights(layer)
    use_bias = bool(config.get("use_bias", True))
    if not weights:
        raise ValueError(
            f"{_WHO}: {label} has no weights yet (it is not built); call it on an input or "
            "build() it first"
        )
    if len(weights) != (3 if use_bias else 2):
        raise ValueError(
            f"{_WHO}: {label} has {len(weights)} weight arrays, expected "
            f"{3 if use_bias else 2} for use_bias={use_bias}"
        )
    return {
        "layer": layer,
        "units": int(config["units"]),
        "use_bias": use_bias,
        "reset_after": bool(config.get("reset_after", True)),
        "return_sequences": bool(config.get("return_sequences", False)),
        "go_backwards": bool(config.get("go_backwards", False)),
        "dtype": _policy_dtype(layer, dtype),
        "weights": weights,
    }


def _read_bidirectional(layer, dtype, ignore_dropout):
    label = _label(layer)
    config = layer.get_config()
    unknown = sorted(set(config) - _BIDIRECTIONAL_FIELDS)
    if unknown:
        raise ValueError(
            f"{_WHO}: {label} has the config field(s) {unknown}, which this version of cygru "
            "does not know; it cannot tell whether they change the computation"
        )
    merge_mode = config.get("merge_mode", "concat")
    if merge_mode != "concat":
        raise ValueError(
            f"{_WHO}: {label} has merge_mode={merge_mode!r}; a bidirectional cygru.GRU "
            "concatenates the two directions, which is merge_mode='concat' only"
        )
    halves = []
    for attr, backwards in (("forward_layer", False), ("backward_layer", True)):
        inner = getattr(layer, attr)
        if _kind(inner) != "GRU":
            raise ValueError(
                f"{_WHO}: {label} wraps a {type(inner).__name__} as its {attr}; cygru converts "
                "Bidirectional(GRU) only"
            )
        half = _read_gru(inner, dtype, ignore_dropout)
        if half["go_backwards"] != backwards:
            raise ValueError(
                f"{_WHO}: {label}'s {attr} has go_backwards={half['go_backwards']}; cygru's "
                "bidirectional GRU runs the first direction forwards and the second backwards"
            )
        halves.append(half)
    fwd, bwd = halves
    for field in ("units", "use_bias", "reset_after", "dtype"):
        if fwd[field] != bwd[field]:
            raise ValueError(
                f"{_WHO}: {label}'s two directions differ in {field} ({fwd[field]} and "
                f"{bwd[field]}); a cygru.GRU has one {field} for both"
            )
    return dict(fwd, go_backwards=False, directions=halves, layer=layer)


def _producer(layer):
    """The layer whose output[0] feeds ``layer`` (in a Sequential or functional model), or None
    where Keras recorded no graph; raises if ``layer`` is called more than once."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if not nodes:
        return None
    if len(nodes) > 1:
        raise ValueError(
            f"{_WHO}: {_label(layer)} is called {len(nodes)} times in the model; cygru converts "
            "a plain stack, each layer used once"
        )
    arguments = getattr(nodes[0], "arguments", None)
    if arguments is None:
        return None
    extra = sorted(
        k for k, v in arguments.kwargs.items() if v is not None and k not in ("mask", "training")
    )
    if len(arguments.args) != 1 or extra:
        raise ValueError(
            f"{_WHO}: {_label(layer)} is called in the model with "
            f"{len(arguments.args)} positional input(s){' and ' + str(extra) if extra else ''}; "
            "cygru converts a stack whose layers take the previous layer's sequence only (an "
            "initial_state is a run-time input: pass it as h0 to the converted module)"
        )
    tensors = list(arguments.args)
    history = getattr(tensors[0], "_keras_history", None)
    if history is None:
        return None
    return history[0], history[2]


def _recurrent_run(model, ignore_dropout):
    """The consecutive GRU / Bidirectional(GRU) layers of a model, with Dropout layers between
    them dropped (only where ``ignore_dropout``); refuses every other shape."""
    layers = list(model.layers)
    run, ended_by = [], None
    for layer in layers:
        kind = _kind(layer)
        if kind in ("GRU", "Bidirectional"):
            if ended_by is not None:
                raise ValueError(
                    f"{_WHO}: the model's recurrent layers are not one stack: "
                    f"{_label(ended_by)} stands between {_label(run[-1])} and {_label(layer)}"
                )
            run.append(layer)
        elif kind == "Dropout" and run and ended_by is None:
            run.append(layer)
        elif run and ended_by is None:
            ended_by = layer
        elif kind == "model" and any(_kind(x) in ("GRU", "Bidirectional") for x in layer.layers):
            raise ValueError(
                f"{_WHO}: the model nests the model {layer.name!r}, which holds recurrent layers; "
                "convert that inner model"
            )
    while run and _kind(run[-1]) == "Dropout":  # a Dropout after the stack is not part of it
        run.pop()
    if not run:
        raise ValueError(
            f"{_WHO}: the model has no GRU or Bidirectional(GRU) layer (its layers: "
            f"{[type(x).__name__ for x in layers]})"
        )
    stack = []
    for previous, layer in zip([None] + run[:-1], run):
        producer = _producer(layer)  # also refuses a layer called more than once
        if (
            previous is not None
            and producer is not None
            and (producer[0] is not previous or producer[1] != 0)
        ):
            what = _label(producer[0])
            if producer[0] is previous:
                what += f"'s output {producer[1]} (a state, not the sequence)"
            raise ValueError(
                f"{_WHO}: {_label(layer)} reads {what}, not the sequence of "
                f"{_label(previous)}; cygru converts a plain stack"
            )
        if _kind(layer) == "Dropout":
            rate = float(layer.get_config().get("rate", 0.0) or 0.0)
            if rate > 0 and not ignore_dropout:
                raise ValueError(
                    f"{_WHO}: {_label(layer)} (rate={rate}) stands between recurrent layers. Keras "
                    "applies it in training only (at inference it does nothing), and cygru has "
                    "no such dropout: pass ignore_dropout=True to convert the model for inference"
                )
            continue
        stack.append(layer)
    return stack


def _keras_to_cygru(kernel, recurrent_kernel, bias, reset_after, dtype):
    """One Keras direction's (kernel, recurrent_kernel, bias) as cygru's four arrays (the
    biases None without bias), gates permuted z, r, h -> r, z, n and matrices transposed."""
    hidden_size = recurrent_kernel.shape[0]
    w_ih = _swap_rz(kernel.T, hidden_size).astype(dtype)
    w_hh = _swap_rz(recurrent_kernel.T, hidden_size).astype(dtype)
    if bias is None:
        return w_ih, w_hh, None, None
    if reset_after:
        b_ih, b_hh = bias[0], bias[1]
    else:  # Keras' single bias is the input bias; cygru adds b_hn outside r * (...) here
        b_ih, b_hh = bias, np.zeros(3 * hidden_size, dtype=dtype)
    return (
        w_ih,
        w_hh,
        _swap_rz(b_ih, hidden_size).astype(dtype),
        _swap_rz(b_hh, hidden_size).astype(dtype),
    )


def _load(gru, layer_arrays, reset_after, dtype):
    """Load ``[[(kernel, recurrent_kernel, bias), ...per direction], ...per layer]``."""
    state = {}
    for k, directions in enumerate(layer_arrays):
        for d, (kernel, recurrent_kernel, bias) in enumerate(directions):
            arrays = _keras_to_cygru(kernel, recurrent_kernel, bias, reset_after, dtype)
            for name, array in zip(GATE_NAMES, arrays):
                if array is not None:
                    state[name + _layer_suffix(k, d)] = array
    gru.load_state_dict(state)
    return gru


def _from_keras_object(obj, dtype, ignore_dropout):
    kind = _kind(obj)
    if kind == "model":
        layers = _recurrent_run(obj, ignore_dropout)
    elif kind in ("GRU", "Bidirectional"):
        layers = [obj]
    else:
        raise TypeError(
            f"{_WHO} converts Keras' own GRU, Bidirectional(GRU), Sequential or functional "
            f"Model (or takes kernel, recurrent_kernel, bias arrays), got "
            f"{type(obj).__module__}.{type(obj).__qualname__} (a subclass may compute "
            "something else)"
        )
    items = [
        _read_bidirectional(x, dtype, ignore_dropout)
        if _kind(x) == "Bidirectional"
        else _read_gru(x, dtype, ignore_dropout)
        for x in layers
    ]
    first = items[0]
    bidirectional = "directions" in first
    for k, item in enumerate(items):
        label = _label(item["layer"])
        if ("directions" in item) != bidirectional:
            raise ValueError(
                f"{_WHO}: {label} is {'' if 'directions' in item else 'not '}Bidirectional but "
                f"{_label(first['layer'])} is{'' if bidirectional else ' not'}; a cygru.GRU's "
                "layers are all bidirectional or all one-directional"
            )
        for field in ("units", "use_bias", "reset_after", "dtype"):
            if item[field] != first[field]:
                raise ValueError(
                    f"{_WHO}: {label} has {field}={item[field]} but {_label(first['layer'])} "
                    f"has {field}={first[field]}; a cygru.GRU has one {field} for all layers"
                )
        if k < len(items) - 1 and not item["return_sequences"]:
            raise ValueError(
                f"{_WHO}: {label} has return_sequences=False but feeds "
                f"{_label(items[k + 1]['layer'])}; in a stack every layer but the last returns "
                "its sequence"
            )
        if k > 0 and item["go_backwards"]:
            # Layer k reads layer k-1's output in the order it was produced; go_backwards here
            # would run it the other way in time from the layers before it.
            raise ValueError(
                f"{_WHO}: {label} has go_backwards=True after {_label(first['layer'])}; it "
                "then runs the other way in time from the layer before it, and a cygru.GRU runs "
                "all its layers in one direction (only the first layer of a stack may have "
                "go_backwards=True, which makes the whole stack run backwards)"
            )
    H = first["units"]
    D = 2 if bidirectional else 1
    dtype = first["dtype"]
    arrays = []
    for k, item in enumerate(items):
        directions = item.get("directions", [item])
        per_layer = []
        for half in directions:
            w = [np.asarray(a) for a in half["weights"]]
            kernel, recurrent_kernel = w[0], w[1]
            bias = w[2] if half["use_bias"] else None
            if k > 0 and kernel.shape[0] != D * H:
                raise ValueError(
                    f"{_WHO}: {_label(half['layer'])}'s kernel has {kernel.shape[0]} input rows, "
                    f"expected {D * H} (the previous layer's output features)"
                )
            per_layer.append((kernel, recurrent_kernel, bias))
        arrays.append(per_layer)
    gru = _modules().GRU(
        arrays[0][0][0].shape[0],
        H,
        num_layers=len(items),
        bias=first["use_bias"],
        batch_first=True,
        bidirectional=bidirectional,
        reset_after=first["reset_after"],
        reverse=first["go_backwards"],
        dtype=dtype,
    )
    return _load(gru, arrays, first["reset_after"], dtype)


def from_keras(
    layer_or_kernel: Any,
    recurrent_kernel: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
    *,
    reset_after: Optional[bool] = None,
    dtype: DTypeLike = None,
    ignore_dropout: bool = False,
) -> GRU:
    """Build the cygru ``GRU`` equal to a Keras GRU, a stack of them, or a GRU's weights.

    **A Keras object** (Keras 3; any backend): a ``keras.layers.GRU``, a
    ``keras.layers.Bidirectional(GRU)`` (``merge_mode="concat"``), or a ``Sequential`` or
    functional ``Model`` whose recurrent layers form one plain stack. Stacked layers become
    ``num_layers``, ``Bidirectional`` becomes ``bidirectional=True``, and ``go_backwards=True``
    on the first layer becomes ``reverse=True``. Of a model, only the recurrent layers are
    converted (``Masking``, ``Embedding``, a ``Dense`` head and the like, before or after the
    stack, are not part of the result); ``Dropout`` layers between them are allowed with
    ``ignore_dropout=True``. Every config field is read:

    * mapped: ``units``, ``use_bias``, ``reset_after``, ``go_backwards``, ``dtype`` (the
      policy's compute dtype, float32 or float64), ``return_sequences`` (every layer of a stack
      but the last must return its sequence);
    * refused with a ``ValueError`` naming the field: ``activation`` other than ``"tanh"``,
      ``recurrent_activation`` other than ``"sigmoid"``, ``stateful=True``, ``dropout`` or
      ``recurrent_dropout`` > 0 (unless ``ignore_dropout=True``, see below), ``merge_mode``
      other than ``"concat"``, a backward layer configured unlike the forward one, layers
      that differ in ``units``/``use_bias``/``reset_after``/dtype, a mix of bidirectional and
      one-directional layers, ``go_backwards=True`` on a later layer of a stack (that layer
      would run the other way in time from the one before), a mixed-precision policy
      (unless ``dtype`` is given), and any field this version of cygru does not know;
    * ignored, because they do not change a forward pass: initializers, regularizers,
      constraints, ``seed``, ``trainable``, ``name``, ``return_state`` (cygru returns the
      state always), ``unroll`` and ``use_cudnn`` (the same computation scheduled another
      way), and ``zero_output_for_mask`` (see masks below).

    Reading the outputs: Keras' sequence (``return_sequences=True``) is ``output``, and its
    final state is ``h_n[-1]`` (``h_n[-2:]`` for the two directions of a bidirectional
    layer). A ``go_backwards`` stack returns its sequence in the order it ran, last time step
    first: that is ``output[:, ::-1]``.

    Masks: Keras' mask (a ``Masking`` layer, ``Embedding(mask_zero=True)``) that pads each
    sequence on the right is cygru's ``lengths``: ``gru(x, lengths=lengths_from_mask(mask))``
    gives Keras' final states and its outputs at every unpadded step. Past each length cygru
    writes zeros, as Keras does for ``Bidirectional``, ``go_backwards`` and
    ``zero_output_for_mask=True`` layers; a forward layer with ``zero_output_for_mask=False``
    (Keras' default for a lone layer) repeats its last state there instead:
    :func:`repeat_last_state` gives that. A mask that is not right padding has no cygru
    equivalent (:func:`lengths_from_mask` refuses it).

    Dropout: Keras applies ``dropout`` and ``recurrent_dropout`` (and ``Dropout`` layers) in
    training only, so at inference they do nothing; cygru has no input or recurrent dropout.
    They are refused by default so that a conversion never silently drops part of a
    training setup; with ``ignore_dropout=True`` they are accepted and the module computes
    Keras' inference (its ``dropout`` option stays 0).

    **Three arrays** (Keras itself not needed): ``from_keras(kernel, recurrent_kernel, bias)``
    as ``layer.get_weights()`` returns them, for one one-directional layer (``bias`` None or
    left out for a ``use_bias=False`` layer, so ``from_keras(*layer.get_weights())`` works for
    both). Keras stores the gates in the order z, r, h and multiplies from the right
    (``x @ kernel``); cygru stores r, z, n and multiplies by the transpose, so each matrix is
    transposed and its gate blocks permuted. Bias mapping:

    * ``reset_after=True`` (Keras' default): ``bias`` is (2, 3H), the input bias (->
      ``bias_ih_l0``) and the recurrent bias (-> ``bias_hh_l0``); Keras computes
      ``h~ = tanh(x W_h + b_h + r * (h U_h + b'_h))``, cygru's ``reset_after=True``.
    * ``reset_after=False``: ``bias`` is (3H,) and Keras computes
      ``h~ = tanh(x W_h + b_h + (r * h) U_h)``. The bias goes to ``bias_ih_l0`` and
      ``bias_hh_l0`` is zero -- exact, since cygru then adds ``b_hn`` outside the reset
      product.

    Parameters
    ----------
    layer_or_kernel : keras.layers.GRU, keras.layers.Bidirectional, keras.Model or array_like
        The Keras object, or the kernel (I, 3H), gate columns ordered z, r, h.
    recurrent_kernel : array_like, shape (H, 3H), optional
        With a kernel: the recurrent weights, gate columns ordered z, r, h.
    bias : array_like, optional
        With a kernel: shape (2, 3H) with ``reset_after=True``, (3H,) with
        ``reset_after=False``; None (the default) for a layer without bias.
    reset_after : bool, optional
        With a kernel: the Keras layer's ``reset_after`` (default True). A Keras object
        carries its own, so it is an error to pass one with it.
    dtype : {None, np.float32, np.float64}, optional
        The module's dtype. None takes the layer's compute dtype, or the kernel's dtype (a
        mixed-precision or float16 layer needs ``dtype=np.float32``).
    ignore_dropout : bool, default False
        Accept ``dropout``/``recurrent_dropout`` > 0 and ``Dropout`` layers between the GRUs
        (no-ops at inference, see above).

    Returns
    -------
    cygru.GRU
        With ``batch_first=True`` (Keras' layout, (B, T, I)).

    Raises
    ------
    ValueError
        If the Keras object uses what cygru cannot represent (the message names the field or
        layer), is not built, or the arrays' shapes disagree (the message says what was
        expected).
    TypeError
        If the object is neither a Keras GRU, Bidirectional or model nor an array; if
        ``recurrent_kernel``, ``bias`` or ``reset_after`` is given with a Keras object; or if
        ``dtype`` is None and the kernel is neither float32 nor float64.

    Examples
    --------
    >>> import numpy as np
    >>> import cygru
    >>> rng = np.random.default_rng(0)
    >>> I, H = 3, 4
    >>> kernel = rng.standard_normal((I, 3 * H)).astype(np.float32)
    >>> recurrent = rng.standard_normal((H, 3 * H)).astype(np.float32)
    >>> bias = rng.standard_normal((2, 3 * H)).astype(np.float32)
    >>> gru = cygru.from_keras(kernel, recurrent, bias)
    >>> gru.weight_ih_l0.shape, gru.batch_first, gru.reset_after
    ((12, 3), True, True)
    >>> bool(np.array_equal(gru.weight_ih_l0[:H], kernel[:, H:2 * H].T))  # r gate
    True
    >>> cygru.from_keras(kernel, recurrent)     # a use_bias=False layer's two arrays
    GRU(3, 4, bias=False, batch_first=True, dtype=float32)
    >>> out, h_n = gru(rng.standard_normal((2, 5, I)).astype(np.float32))
    >>> out.shape, h_n.shape
    ((2, 5, 4), (1, 2, 4))
    """
    if _is_keras_object(layer_or_kernel):
        given = [
            name
            for name, value in (
                ("recurrent_kernel", recurrent_kernel),
                ("bias", bias),
                ("reset_after", reset_after),
            )
            if value is not None
        ]
        if given:
            raise TypeError(
                f"{_WHO}: {given} cannot be given with a Keras {type(layer_or_kernel).__name__}; "
                "the layer carries its own weights and options"
            )
        return _from_keras_object(layer_or_kernel, dtype, bool(ignore_dropout))
    if recurrent_kernel is None:
        raise TypeError(
            f"{_WHO} takes a Keras GRU, Bidirectional(GRU) or model, or the arrays kernel, "
            f"recurrent_kernel[, bias]; got a {type(layer_or_kernel).__qualname__} and no "
            "recurrent_kernel"
        )
    return _from_arrays(
        layer_or_kernel,
        recurrent_kernel,
        bias,
        True if reset_after is None else bool(reset_after),
        dtype,
    )


def _from_arrays(kernel, recurrent_kernel, bias, reset_after, dtype):
    kernel = np.asarray(kernel)
    recurrent_kernel = np.asarray(recurrent_kernel)
    if dtype is None:
        dtype = _float_dtype(kernel.dtype, "the Keras kernel")
    else:
        dtype = _float_dtype(dtype, "dtype")

    if kernel.ndim != 2 or kernel.shape[1] % 3 != 0 or kernel.shape[1] == 0:
        raise ValueError(
            f"from_keras: kernel must have shape (input_size, 3*units), got {kernel.shape}"
        )
    input_size, h3 = kernel.shape
    hidden_size = h3 // 3
    if input_size == 0:
        raise ValueError("from_keras: kernel has input_size 0")
    if recurrent_kernel.shape != (hidden_size, h3):
        raise ValueError(
            f"from_keras: recurrent_kernel must have shape (units, 3*units) = "
            f"{(hidden_size, h3)} to match kernel {kernel.shape}, got {recurrent_kernel.shape}"
        )
    if bias is not None:
        bias = np.asarray(bias)
        expected = (2, h3) if reset_after else (h3,)
        if bias.shape != expected:
            hint = ""
            if reset_after and bias.shape == (h3,):
                hint = " (a (3*units,) bias comes from a reset_after=False layer)"
            elif not reset_after and bias.shape == (2, h3):
                hint = " (a (2, 3*units) bias comes from a reset_after=True layer)"
            raise ValueError(
                f"from_keras: with reset_after={reset_after} bias must have shape {expected} "
                f"for units={hidden_size}, got {bias.shape}{hint}"
            )
    gru = _modules().GRU(
        input_size,
        hidden_size,
        bias=bias is not None,
        batch_first=True,
        reset_after=reset_after,
        dtype=dtype,
    )
    return _load(gru, [[(kernel, recurrent_kernel, bias)]], reset_after, dtype)


def lengths_from_mask(mask: ArrayLike) -> NDArray[np.int64]:
    """cygru's ``lengths`` for a Keras mask that pads each sequence on the right.

    Keras' mask (``masking_layer.compute_mask(x)``, ``embedding.compute_mask(ids)``, or
    ``x != pad`` by hand) is True at a sequence's steps and False at its padding. cygru runs
    sequence ``b`` over its first ``lengths[b]`` steps, which is the same thing when every
    row is some True values followed only by False ones.

    Parameters
    ----------
    mask : array_like of bool, shape (B, T)
        Keras' mask, batch first; integers 0/1 are accepted too.

    Returns
    -------
    numpy.ndarray of int64, shape (B,)
        The number of True values of each row, for ``gru(x, lengths=...)``.

    Raises
    ------
    ValueError
        If the mask is not 2-D, holds values other than True/False (0/1), has a row that is
        all False (cygru runs every sequence for at least one step), or is not right padding
        (a True after a False: the message names the row and the step).

    Examples
    --------
    >>> import numpy as np
    >>> from cygru.interop import lengths_from_mask
    >>> lengths_from_mask([[True, True, False], [True, True, True]])
    array([2, 3])
    >>> lengths_from_mask([[True, False, True]])
    Traceback (most recent call last):
        ...
    ValueError: lengths_from_mask: row 0 of the mask is not right padding: step 2 is unmasked after a masked step 1; cygru's lengths describe sequences padded at the end only
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"lengths_from_mask: the mask must be (batch, time), got shape {m.shape}")
    if m.dtype != np.bool_:
        if not (np.issubdtype(m.dtype, np.integer) and np.isin(m, (0, 1)).all()):
            raise ValueError(
                f"lengths_from_mask: the mask must hold booleans (or 0/1), got dtype {m.dtype}"
            )
        m = m.astype(bool)
    lengths = m.sum(axis=1).astype(np.int64)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(
            f"lengths_from_mask: row {int(empty[0])} of the mask is all False; cygru runs every "
            "sequence for at least one step"
        )
    right = np.arange(m.shape[1]) < lengths[:, None]
    bad = np.flatnonzero((m != right).any(axis=1))
    if bad.size:
        b = int(bad[0])
        first_false = int(np.flatnonzero(~m[b])[0])
        later_true = int(first_false + np.flatnonzero(m[b, first_false:])[0])
        raise ValueError(
            f"lengths_from_mask: row {b} of the mask is not right padding: step {later_true} is "
            f"unmasked after a masked step {first_false}; cygru's lengths describe sequences "
            "padded at the end only"
        )
    return lengths


def repeat_last_state(
    output: ArrayLike, lengths: ArrayLike, *, batch_first: bool = True
) -> NDArray[Any]:
    """Keras' outputs past each length: a copy of ``output`` whose padded steps repeat the
    sequence's last state.

    cygru writes zeros to ``output`` at the steps ``t >= lengths[b]``; a one-directional Keras
    GRU that runs forwards with ``zero_output_for_mask=False`` (a lone layer's default)
    writes its last state there instead. This turns the first into the second.

    Parameters
    ----------
    output : array_like, shape (B, T, F), or (T, B, F) with ``batch_first=False``
        A cygru GRU's output.
    lengths : array_like of int, shape (B,)
        The lengths the output was computed with, each in 1..T.
    batch_first : bool, default True
        The layout of ``output`` (Keras' is batch first).

    Returns
    -------
    numpy.ndarray
        A new array; ``output`` is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> import cygru
    >>> from cygru.interop import repeat_last_state
    >>> gru = cygru.GRU(2, 3, batch_first=True, seed=0)
    >>> x = np.ones((2, 4, 2), np.float32)
    >>> output, h_n = gru(x, lengths=[2, 4])
    >>> filled = repeat_last_state(output, [2, 4])
    >>> bool((filled[0, 2:] == output[0, 1]).all()), bool((output[0, 2:] == 0).all())
    (True, True)
    """
    out = np.array(output, copy=True)
    if out.ndim != 3:
        raise ValueError(f"repeat_last_state: output must be 3-D, got shape {out.shape}")
    view = out if batch_first else out.swapaxes(0, 1)
    B, T = view.shape[:2]
    lengths = np.asarray(lengths)
    if lengths.shape != (B,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"repeat_last_state: lengths must be {B} integers (one per sequence), got "
            f"{lengths.dtype} of shape {lengths.shape}"
        )
    if B and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"repeat_last_state: lengths must lie in 1..{T}, got {lengths.tolist()}")
    for b, n in enumerate(lengths.tolist()):
        view[b, n:] = view[b, n - 1]
    return out

"""cygru.from_keras against Keras 3 itself (JAX backend): layers, Bidirectional, stacks, models,
masks, and every config field it refuses."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from optional_deps import import_optional
from test_interop import _keras_gru

import cygru
from cygru.interop import from_keras, lengths_from_mask, repeat_last_state

if "keras" not in sys.modules:  # before keras is imported; jax is in the test extra
    os.environ["KERAS_BACKEND"] = "jax"
keras = import_optional("keras")


@pytest.fixture(autouse=True)
def x64(request):
    """float64 Keras layers compute in float64 on JAX only with jax_enable_x64, which Keras'
    float32 layers do not survive (a use_bias=False GRU fails in lax.scan): on for the tests
    whose name says float64, off otherwise."""
    if keras.backend.backend() != "jax" or "float64" not in request.node.name:
        yield
        return
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


# Keras' float64 on JAX is not float64 throughout: XLA's CPU tanh is an approximation good to
# ~3e-8, so float64 is compared with Keras to 1e-6 and with the NumPy reference (Keras' math
# written out, test_interop._keras_gru) to 1e-10.
TOL = {"float32": 2e-6, "float64": 1e-6}
B, T, I, H = 3, 7, 4, 5


def _x(dtype="float32", seed=0, shape=(B, T, I)):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _built(layer, dtype="float32"):
    layer(_x(dtype))
    return layer


def _keras_out(obj, x, mask=None):
    out = obj(x, mask=mask) if mask is not None else obj(x)
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return np.asarray(out)


def _check(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_layer(reset_after, use_bias, go_backwards, dtype):
    layer = keras.layers.GRU(
        H,
        return_sequences=True,
        return_state=True,
        reset_after=reset_after,
        use_bias=use_bias,
        go_backwards=go_backwards,
        dtype=dtype,
    )
    x = _x(dtype)
    seq, state = _keras_out(layer, x)
    gru = from_keras(layer)
    assert (gru.input_size, gru.hidden_size, gru.num_layers) == (I, H, 1)
    assert gru.batch_first and gru.reverse is go_backwards and gru.bias is use_bias
    assert gru.reset_after is reset_after and gru.dtype == np.dtype(dtype)
    out, h_n = gru(x)
    _check(out[:, ::-1] if go_backwards else out, seq, dtype)
    _check(h_n[0], state, dtype)
    if dtype == "float64":
        weights = [np.asarray(v) for v in layer.weights]
        ref_seq, ref_h = _keras_gru(
            x[:, ::-1] if go_backwards else x,
            weights[0],
            weights[1],
            weights[2] if use_bias else None,
            reset_after,
        )
        np.testing.assert_allclose(
            out[:, ::-1] if go_backwards else out, ref_seq, rtol=0, atol=1e-10
        )
        np.testing.assert_allclose(h_n[0], ref_h, rtol=0, atol=1e-10)
    # the three-array form gives the same module, also for use_bias=False, and so do the
    # layer's variables
    cell = layer.cell
    with warnings.catch_warnings():  # NumPy 2 warns in Keras' get_weights (np.array(Variable))
        warnings.simplefilter("ignore", DeprecationWarning)
        weights = layer.get_weights()
    for same in (
        from_keras(*weights, reset_after=reset_after),
        from_keras(
            cell.kernel,
            cell.recurrent_kernel,
            cell.bias if use_bias else None,
            reset_after=reset_after,
        ),
    ):
        for name, value in gru.state_dict().items():
            np.testing.assert_array_equal(same.state_dict()[name], value)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("use_bias, reset_after", [(True, True), (False, False)])
def test_bidirectional_float64(use_bias, reset_after, return_sequences):
    layer = keras.layers.Bidirectional(
        keras.layers.GRU(
            H,
            return_sequences=return_sequences,
            use_bias=use_bias,
            reset_after=reset_after,
            dtype="float64",
        )
    )
    x = _x("float64", 1)
    expected = _keras_out(layer, x)
    gru = from_keras(layer)
    assert gru.bidirectional and gru.num_layers == 1 and not gru.reverse
    out, h_n = gru(x)
    if return_sequences:
        _check(out, expected, "float64")
    else:  # Keras concatenates the two final states
        _check(np.concatenate([h_n[0], h_n[1]], axis=-1), expected, "float64")


def _sequential(*layers, features=I):
    return keras.Sequential([keras.Input((None, features)), *layers])


def test_sequential_stack_with_head_and_masking():
    model = _sequential(
        keras.layers.Masking(0.0),
        keras.layers.GRU(H, return_sequences=True),
        keras.layers.GRU(H, return_sequences=True),
        keras.layers.GRU(H),
        keras.layers.Dense(2),
    )
    gru = from_keras(model)
    assert gru.num_layers == 3 and not gru.bidirectional
    x = _x()
    x[0, 4:] = 0.0  # sequence 0 is padded: 4 steps
    mask = np.asarray(model.layers[0].compute_mask(x))
    lengths = lengths_from_mask(mask)
    np.testing.assert_array_equal(lengths, [4, T, T])
    _out, h_n = gru(x, lengths=lengths)
    recurrent = keras.Sequential([keras.Input((None, I))] + model.layers[:4])
    _check(h_n[-1], _keras_out(recurrent, x), "float32")
    head = _keras_out(model, x)  # the head is the user's: it runs on h_n[-1]
    _check(
        h_n[-1] @ np.asarray(model.layers[-1].kernel) + np.asarray(model.layers[-1].bias),
        head,
        "float32",
    )


def test_bidirectional_stack_functional_model_with_dropout_float64():
    inp = keras.Input((None, I), dtype="float64")
    y = keras.layers.Bidirectional(
        keras.layers.GRU(
            H, return_sequences=True, dtype="float64", dropout=0.1, recurrent_dropout=0.2
        )
    )(inp)
    y = keras.layers.Dropout(0.5)(y)
    y = keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True, dtype="float64"))(y)
    model = keras.Model(inp, y)
    with pytest.raises(ValueError, match="Dropout layer .*rate=0.5.*ignore_dropout=True"):
        from_keras(model)
    gru = from_keras(model, ignore_dropout=True)
    assert gru.num_layers == 2 and gru.bidirectional and gru.dtype == np.float64
    assert gru.dropout == 0.0
    x = _x("float64", 2)
    _check(gru(x)[0], _keras_out(model, x), "float64")


def test_go_backwards_stack_runs_backwards():
    model = _sequential(
        keras.layers.GRU(H, return_sequences=True, go_backwards=True),
        keras.layers.GRU(H, return_sequences=True),
    )
    gru = from_keras(model)
    assert gru.reverse and gru.num_layers == 2
    x = _x(seed=3)
    _check(gru(x)[0][:, ::-1], _keras_out(model, x), "float32")
    bad = _sequential(
        keras.layers.GRU(H, return_sequences=True),
        keras.layers.GRU(H, return_sequences=True, go_backwards=True),
    )
    with pytest.raises(ValueError, match="go_backwards=True after"):
        from_keras(bad)


def test_unroll_and_return_state_are_accepted():
    layer = _built(keras.layers.GRU(H, unroll=True, return_state=True))
    x = _x(seed=4)
    _, state = _keras_out(layer, x)
    _check(from_keras(layer)(x)[1][0], state, "float32")


def test_mask_outputs_past_each_length():
    x = _x(seed=5)
    x[0, 3:] = 0.0
    x[2, 6:] = 0.0
    mask = x.any(axis=-1)
    lengths = lengths_from_mask(mask)
    np.testing.assert_array_equal(lengths, [3, T, 6])
    padded = ~mask

    # a lone forward layer repeats its last state past each length: repeat_last_state
    layer = _built(keras.layers.GRU(H, return_sequences=True))
    out, _ = from_keras(layer)(x, lengths=lengths)
    expected = _keras_out(layer, x, mask=mask)
    assert (out[padded] == 0).all()
    _check(repeat_last_state(out, lengths), expected, "float32")

    # zero_output_for_mask=True, Bidirectional and go_backwards write zeros, as cygru does
    zeroed = _built(keras.layers.GRU(H, return_sequences=True, zero_output_for_mask=True))
    _check(from_keras(zeroed)(x, lengths=lengths)[0], _keras_out(zeroed, x, mask=mask), "float32")
    bi = _built(keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True)))
    _check(from_keras(bi)(x, lengths=lengths)[0], _keras_out(bi, x, mask=mask), "float32")
    back = _built(keras.layers.GRU(H, return_sequences=True, go_backwards=True))
    _check(
        from_keras(back)(x, lengths=lengths)[0][:, ::-1], _keras_out(back, x, mask=mask), "float32"
    )


def test_lengths_from_mask_and_repeat_last_state_errors():
    np.testing.assert_array_equal(lengths_from_mask(np.array([[1, 1, 0], [1, 0, 0]])), [2, 1])
    with pytest.raises(ValueError, match="row 1 .*step 2 is unmasked after a masked step 1"):
        lengths_from_mask([[True, True, True], [True, False, True]])
    with pytest.raises(ValueError, match="row 0 .*all False"):
        lengths_from_mask([[False, False]])
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        lengths_from_mask([True, False])
    with pytest.raises(ValueError, match="booleans"):
        lengths_from_mask([[0.5, 1.0]])
    out = np.arange(24.0).reshape(2, 4, 3)
    frozen = out.copy()
    frozen.flags.writeable = False
    filled = repeat_last_state(frozen, np.array([1, 4]))
    np.testing.assert_array_equal(filled[0], np.repeat(out[0, :1], 4, axis=0))
    np.testing.assert_array_equal(filled[1], out[1])
    time_major = repeat_last_state(out.transpose(1, 0, 2), [1, 4], batch_first=False)
    np.testing.assert_array_equal(time_major, filled.transpose(1, 0, 2))
    with pytest.raises(ValueError, match="1..4"):
        repeat_last_state(out, [0, 4])
    with pytest.raises(ValueError, match="2 integers"):
        repeat_last_state(out, [1.0, 2.0])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"activation": "relu"}, "activation='relu'"),
        ({"recurrent_activation": "hard_sigmoid"}, "recurrent_activation='hard_sigmoid'"),
        ({"dropout": 0.2}, "dropout=0.2"),
        ({"recurrent_dropout": 0.3}, "recurrent_dropout=0.3"),
        ({"stateful": True}, "stateful=True"),
    ],
)
def test_refused_gru_fields(kwargs, field):
    layer = keras.layers.GRU(H, **kwargs)
    layer.build((B, T, I))
    with pytest.raises(ValueError, match=f"GRU layer .*{field}".replace("(", r"\(")):
        from_keras(layer)
    if "dropout" in field:
        assert isinstance(from_keras(layer, ignore_dropout=True), cygru.GRU)


@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave", None])
def test_refused_merge_modes(merge_mode):
    layer = _built(keras.layers.Bidirectional(keras.layers.GRU(H), merge_mode=merge_mode))
    with pytest.raises(ValueError, match=f"merge_mode={merge_mode!r}"):
        from_keras(layer)


def test_refused_stacks_and_objects():
    gru = keras.layers.GRU
    last_only = _built(gru(H))
    second = gru(H)
    second.build((B, T, H))
    with pytest.raises(ValueError, match="return_sequences=False but feeds"):
        from_keras(keras.Sequential([last_only, second]))  # layers built, the model not
    with pytest.raises(ValueError, match="Dense layer .* stands between"):
        from_keras(_sequential(gru(H, return_sequences=True), keras.layers.Dense(H), gru(H)))
    with pytest.raises(ValueError, match="units=3 but .* units=5"):
        from_keras(_sequential(gru(H, return_sequences=True), gru(3)))
    with pytest.raises(ValueError, match="not Bidirectional"):
        from_keras(_sequential(keras.layers.Bidirectional(gru(H, return_sequences=True)), gru(H)))
    with pytest.raises(ValueError, match="reset_after=False"):
        from_keras(_sequential(gru(H, return_sequences=True), gru(H, reset_after=False)))
    with pytest.raises(ValueError, match="no GRU"):
        from_keras(_sequential(keras.layers.Dense(2)))
    with pytest.raises(ValueError, match="not built"):
        from_keras(gru(H))
    with pytest.raises(ValueError, match="forward_layer has go_backwards=True"):
        from_keras(
            _built(
                keras.layers.Bidirectional(
                    gru(H, return_sequences=True, go_backwards=True),
                    backward_layer=gru(H, return_sequences=True),
                )
            )
        )
    with pytest.raises(ValueError, match="differ in units"):
        from_keras(
            _built(
                keras.layers.Bidirectional(
                    gru(H, return_sequences=True),
                    backward_layer=gru(3, return_sequences=True, go_backwards=True),
                )
            )
        )
    with pytest.raises(ValueError, match="mixed_float16.*dtype=np.float32"):
        from_keras(_built(gru(H, dtype="mixed_float16")))
    mixed = from_keras(_built(gru(H, dtype="mixed_float16")), dtype=np.float32)
    assert mixed.dtype == np.float32
    # functional graphs that are not a plain stack
    inp = keras.Input((None, I))
    first = gru(H, return_sequences=True, return_state=True)
    seq, state = first(inp)
    second = gru(H)
    model = keras.Model(inp, second(seq, initial_state=state))
    with pytest.raises(ValueError, match="initial_state"):
        from_keras(model)
    inp = keras.Input((None, I))
    shared = gru(I, return_sequences=True)
    model = keras.Model(inp, shared(shared(inp)))
    with pytest.raises(ValueError, match="called 2 times"):
        from_keras(model)

    class MyGRU(keras.layers.GRU):
        pass

    with pytest.raises(TypeError, match="MyGRU.*subclass"):
        from_keras(_built(MyGRU(H)))
    layer = _built(gru(H))
    with pytest.raises(TypeError, match="reset_after"):
        from_keras(layer, reset_after=False)
    with pytest.raises(TypeError, match="no recurrent_kernel"):
        from_keras(np.zeros((I, 3 * H)))


def test_keras_weights_are_copied_not_shared_float64():
    layer = _built(keras.layers.GRU(H, dtype="float64"))
    gru = from_keras(layer)
    before = {k: v.copy() for k, v in gru.state_dict().items()}
    layer.cell.kernel.assign(np.zeros((I, 3 * H)))
    for name, value in gru.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def _warning_free_models(reset_after):
    """A GRU, a Bidirectional(GRU), a stacked Sequential and a stacked functional
    Bidirectional model, all built."""
    gru = _built(keras.layers.GRU(H, reset_after=reset_after))
    bi = _built(keras.layers.Bidirectional(keras.layers.GRU(H, reset_after=reset_after)))
    stack = keras.Sequential(
        [
            keras.Input((T, I)),
            keras.layers.GRU(H, return_sequences=True, reset_after=reset_after),
            keras.layers.GRU(H, return_sequences=True, reset_after=reset_after),
            keras.layers.GRU(H, reset_after=reset_after),
        ]
    )
    inputs = keras.Input((T, I))
    y = keras.layers.Bidirectional(
        keras.layers.GRU(H, return_sequences=True, reset_after=reset_after)
    )(inputs)
    y = keras.layers.Bidirectional(keras.layers.GRU(H, reset_after=reset_after))(y)
    return [gru, bi, stack, keras.Model(inputs, y)]


@pytest.mark.parametrize("reset_after", [True, False])
def test_from_keras_issues_no_warnings(reset_after):
    """Reading the weights warns nothing (Keras' get_weights() makes NumPy issue a
    DeprecationWarning per array: Variable.__array__ has no `copy` keyword)."""
    x = _x()
    for obj in _warning_free_models(reset_after):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gru = from_keras(obj)
        out, h_n = gru(x)
        expected = _keras_out(obj, x)
        D = 2 if gru.bidirectional else 1
        _check(np.concatenate(list(h_n[-D:]), axis=-1), expected, "float32")
        # the same arrays as Keras' own reader gives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = from_keras(obj)
        for name, value in reference.state_dict().items():
            np.testing.assert_array_equal(gru.state_dict()[name], value)


_TORCH_BACKEND_SCRIPT = """
import os, warnings
os.environ["KERAS_BACKEND"] = "torch"
import keras, numpy as np
from cygru.interop import from_keras
x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
for reset_after in (True, False):
    for layer in (keras.layers.GRU(4, reset_after=reset_after),
                  keras.layers.Bidirectional(keras.layers.GRU(4, reset_after=reset_after))):
        expected = keras.ops.convert_to_numpy(layer(x).detach())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gru = from_keras(layer)
        D = 2 if gru.bidirectional else 1
        out, h_n = gru(x)
        np.testing.assert_allclose(np.concatenate(list(h_n[-D:]), -1), expected, atol=2e-6)
print("ok")
"""


def test_from_keras_issues_no_warnings_on_torch_backend():
    """The torch backend's variables hold torch tensors, whose __array__ lacks `copy` too."""
    import_optional("torch")
    result = subprocess.run(
        [sys.executable, "-c", _TORCH_BACKEND_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]

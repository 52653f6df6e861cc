"""The backend contract (cygru/_backend.py): both backends take the same arguments and return a
cache with the contract's fields, which the Python layer reads by those names only; the
parameter layout (names, shapes, nesting) is the one PyTorch uses."""

import dataclasses
import inspect

import numpy as np
import pytest

from optional_deps import import_optional

import cygru
from cygru import _backend, _cpu, _cupy
from cygru import _reference as ref
from cygru._backend import ForwardCache

FIELDS = [f.name for f in dataclasses.fields(ForwardCache)]
OPTIONS = {
    "hidden_size",
    "num_directions",
    "reverse",
    "reset_after",
    "lengths",
    "batch_first",
    "dropout_masks",
    "need_cache",
}


def test_cache_fields_are_the_cpu_engine_s():
    """The CPU engine fills these very names (so it can build a ForwardCache unchanged)."""
    assert FIELDS == [
        "T",
        "B",
        "H",
        "D",
        "batch_first",
        "reverse",
        "reset_after",
        "perm",
        "active",
        "layers",
        "inputs",
        "saved",
        "dropout_masks",
        "used",
    ]
    c = ForwardCache()  # empty, then filled in, as a backend may
    c.T, c.B = 3, 2
    assert (c.T, c.B, c.dropout_masks, c.used) == (3, 2, None, False)
    with pytest.raises(AttributeError):
        c.masks = []  # slots: a misspelt field cannot be set


def test_gpu_backend_signature_is_the_contract():
    sig = inspect.signature(_cupy.gru_forward)
    assert list(sig.parameters)[:3] == ["x", "h0", "layers"]
    assert {n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY} == OPTIONS
    assert list(inspect.signature(_cupy.gru_backward).parameters) == [
        "cache",
        "d_output",
        "d_h_n",
        "grads",
    ]
    assert list(inspect.signature(_cupy.cell_forward).parameters) == [
        "x",
        "h",
        "w_ih",
        "w_hh",
        "b_ih",
        "b_hh",
        "reset_after",
    ]


@pytest.mark.parametrize("batch_first,reverse", [(False, False), (True, True)])
def test_cpu_cache_has_the_contract_fields(batch_first, reverse):
    rng = np.random.default_rng(0)
    T, B, I, H, L = 4, 3, 2, 3, 3
    m = cygru.GRU(I, H, num_layers=L, reverse=reverse, dtype=np.float64, seed=0)
    layers = _backend.layer_weights(m.state_dict(), L, 1, True)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    masks = [((rng.random((T, B, H)) > 0.5) * 2.0) for _ in range(L - 1)]
    kw = dict(
        hidden_size=H,
        num_directions=1,
        reverse=reverse,
        reset_after=True,
        lengths=None,
        batch_first=batch_first,
        dropout_masks=masks,
    )
    out, h_n, cache = _cpu.gru_forward(x, None, layers, need_cache=True, **kw)
    for name in FIELDS:
        assert hasattr(cache, name), name
    assert (cache.T, cache.B, cache.H, cache.D) == (T, B, H, 1)
    assert (cache.batch_first, cache.reverse, cache.reset_after) == (batch_first, reverse, True)
    assert cache.dropout_masks is masks
    d_out = rng.standard_normal(out.shape)
    grads = [[tuple(np.zeros_like(w) for w in t) for t in layer] for layer in layers]
    dx, dh0 = _cpu.gru_backward(cache, d_out, None, grads)
    r_dx, r_dh0, _ = ref.gru_backward(x, None, layers, d_out, None, **kw)
    np.testing.assert_allclose(dx, r_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0, r_dh0, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("L,D,bias", [(1, 1, True), (2, 2, True), (3, 2, False)])
def test_parameter_layout_is_torch_s(L, D, bias):
    torch = import_optional("torch")
    I, H = 5, 3
    net = torch.nn.GRU(I, H, L, bias=bias, bidirectional=D == 2)
    assert _backend.param_shapes(I, H, L, D, bias) == [
        (n, tuple(p.shape)) for n, p in net.named_parameters()
    ]
    params = {n: object() for n, _ in _backend.param_shapes(I, H, L, D, bias)}
    layers = _backend.layer_weights(params, L, D, bias)
    for k in range(L):
        for d in range(D):
            sfx = _backend.param_suffix(k, d)
            assert sfx == f"_l{k}" + ("_reverse" if d else "")
            assert layers[k][d] == tuple(params.get(n + sfx) for n in _backend.GATE_NAMES)

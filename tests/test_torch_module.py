"""cygru.torch.GRU / GRUCell against torch.nn.GRU / GRUCell: outputs, gradients, packed
sequences, gradcheck, training with torch.optim, state_dict both ways, errors."""

import io
import subprocess
import sys

import numpy as np
import pytest

from optional_deps import import_optional

torch = import_optional("torch")

import cygru.torch as ct  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence  # noqa: E402

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def pair(dtype=torch.float32, cell=False, **kw):
    """A cygru.torch module and a torch.nn twin with the same weights."""
    if cell:
        ours, ref = ct.GRUCell(kw.pop("I", 5), kw.pop("H", 7), dtype=dtype, **kw), None
        ref = torch.nn.GRUCell(ours.input_size, ours.hidden_size, bias=ours.bias, dtype=dtype)
    else:
        ours = ct.GRU(kw.pop("I", 5), kw.pop("H", 7), dtype=dtype, **kw)
        ref = torch.nn.GRU(
            ours.input_size,
            ours.hidden_size,
            num_layers=ours.num_layers,
            bias=ours.bias,
            batch_first=ours.batch_first,
            bidirectional=ours.bidirectional,
            dtype=dtype,
        )
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def assert_close(a, b, dtype):
    torch.testing.assert_close(a, b, **TOL[dtype])


def grads_of(module, inputs, outputs, seed=0):
    """Gradients of a random projection of `outputs` w.r.t. the inputs and parameters."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, [*inputs, *module.parameters()])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_is_a_torch_module_with_torchs_parameters():
    m = ct.GRU(4, 3, num_layers=2, bidirectional=True)
    assert isinstance(m, torch.nn.GRU) and isinstance(m, torch.nn.Module)
    names = [n for n, _ in m.named_parameters()]
    assert names == [n for n, _ in torch.nn.GRU(4, 3, 2, bidirectional=True).named_parameters()]
    assert "weight_hh_l1_reverse" in names
    assert all(isinstance(p, torch.nn.Parameter) for p in m.parameters())
    bound = 1 / np.sqrt(3)
    with torch.no_grad():
        assert all(float(p.abs().max()) <= bound for p in m.parameters())
        assert all(float(p.std()) > 0.1 * bound for p in m.parameters())  # not zeros
    cell = ct.GRUCell(4, 3, bias=False)
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_outputs_and_gradients_match_torch(dtype, num_layers, bidirectional, batch_first, with_hx):
    ours, ref = pair(
        dtype, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first
    )
    T, B, D = 6, 3, 2 if bidirectional else 1
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), dtype=dtype, requires_grad=True)
    hx = torch.randn(num_layers * D, B, 7, dtype=dtype, requires_grad=True) if with_hx else None
    out, h_n = ours(x, hx)
    out_r, h_n_r = ref(x, hx)
    assert out.shape == out_r.shape and h_n.shape == h_n_r.shape
    assert_close(out, out_r, dtype)
    assert_close(h_n, h_n_r, dtype)
    with torch.no_grad():  # the inference path (no autograd Function)
        out2, h_n2 = ours(x, hx)
    assert torch.equal(out2, out) and torch.equal(h_n2, h_n)
    inputs = [x] + ([hx] if with_hx else [])
    for a, b in zip(grads_of(ours, inputs, (out, h_n)), grads_of(ref, inputs, (out_r, h_n_r))):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_unbatched_and_no_bias(dtype, bias):
    ours, ref = pair(dtype, num_layers=2, bidirectional=True, bias=bias)
    x = torch.randn(5, 5, dtype=dtype, requires_grad=True)
    hx = torch.randn(4, 7, dtype=dtype, requires_grad=True)
    out, h_n = ours(x, hx)
    out_r, h_n_r = ref(x, hx)
    assert out.shape == (5, 14) and h_n.shape == (4, 7)
    assert_close(out, out_r, dtype)
    assert_close(h_n, h_n_r, dtype)
    for a, b in zip(grads_of(ours, [x, hx], (out, h_n)), grads_of(ref, [x, hx], (out_r, h_n_r))):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequences(dtype, enforce_sorted, bidirectional):
    ours, ref = pair(dtype, num_layers=2, bidirectional=bidirectional)
    lengths = [6, 4, 4, 1] if enforce_sorted else [2, 6, 1, 4]
    seqs = [torch.randn(n, 5, dtype=dtype, requires_grad=True) for n in lengths]
    D = 2 if bidirectional else 1
    hx = torch.randn(2 * D, 4, 7, dtype=dtype, requires_grad=True)
    out, h_n = ours(pack_sequence(seqs, enforce_sorted=enforce_sorted), hx)
    out_r, h_n_r = ref(pack_sequence(seqs, enforce_sorted=enforce_sorted), hx)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(out.batch_sizes, out_r.batch_sizes)
    for a, b in (
        (out.sorted_indices, out_r.sorted_indices),
        (out.unsorted_indices, out_r.unsorted_indices),
    ):
        assert (a is None and b is None) or torch.equal(a, b)
    assert_close(out.data, out_r.data, dtype)
    assert_close(h_n, h_n_r, dtype)
    for a, b in zip(
        grads_of(ours, [*seqs, hx], (out.data, h_n)),
        grads_of(ref, [*seqs, hx], (out_r.data, h_n_r)),
    ):
        assert_close(a, b, dtype)
    # without hx, and through pack_padded_sequence with batch_first
    padded = torch.randn(4, 6, 5, dtype=dtype)
    p2 = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    (o, h), (o_r, h_r) = ours(p2), ref(p2)
    assert_close(o.data, o_r.data, dtype)
    assert_close(h, h_r, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_torch(dtype, batched, with_hx, bias):
    ours, ref = pair(dtype, cell=True, bias=bias)
    x = torch.randn((3, 5) if batched else (5,), dtype=dtype, requires_grad=True)
    hx = torch.randn((3, 7) if batched else (7,), dtype=dtype, requires_grad=True)
    hx = hx if with_hx else None
    h1, h1_r = ours(x, hx), ref(x, hx)
    assert h1.shape == h1_r.shape
    assert_close(h1, h1_r, dtype)
    with torch.no_grad():  # the inference path (no autograd Function)
        assert torch.equal(ours(x, hx), h1)
    inputs = [x] + ([hx] if with_hx else [])
    for a, b in zip(grads_of(ours, inputs, (h1,)), grads_of(ref, inputs, (h1_r,))):
        assert_close(a, b, dtype)


def test_no_grad_and_inference_mode_give_the_same_numbers():
    ours, _ = pair(torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 5)
    out, h_n = ours(x)
    with torch.no_grad():
        out2, h_n2 = ours(x)
    with torch.inference_mode():
        out3, h_n3 = ours(x)
    assert torch.equal(out, out2) and torch.equal(out, out3)
    assert torch.equal(h_n, h_n2) and torch.equal(h_n, h_n3)
    assert out.requires_grad and not out2.requires_grad
    cell, _ = pair(torch.float32, cell=True)
    xc = torch.randn(3, 5)
    with torch.no_grad():
        assert torch.equal(cell(xc), cell(xc.requires_grad_()))


def test_gradcheck_gru():
    m = ct.GRU(3, 2, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    params = list(m.parameters())

    def f(x, hx, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            m, dict(zip([n for n, _ in m.named_parameters()], ps))
        ):
            return m(x, hx)

    assert torch.autograd.gradcheck(f, (x, hx, *params))


def test_gradcheck_cell_and_packed():
    cell = ct.GRUCell(3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h: cell(x, h), (x, h))
    assert torch.autograd.gradcheck(lambda *p: cell(x, h), tuple(cell.parameters()))
    gru = ct.GRU(3, 2, dtype=torch.float64)
    seqs = [torch.randn(n, 3, dtype=torch.float64, requires_grad=True) for n in (2, 4, 1)]

    def f(*seqs):
        out, h_n = gru(pack_sequence(list(seqs), enforce_sorted=False))
        return out.data, h_n

    assert torch.autograd.gradcheck(f, tuple(seqs))


def test_double_backward_is_refused():
    m = ct.GRU(3, 4, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = m(x)
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"cygru.torch.GRU: double backward"):
        gx.sum().backward()
    cell = ct.GRUCell(3, 4, dtype=torch.float64)
    (gx,) = torch.autograd.grad(cell(x[0]).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"cygru.torch.GRUCell: double backward"):
        gx.sum().backward()


def test_retain_graph_second_backward_gives_the_same_gradients():
    m = ct.GRU(3, 4, num_layers=2, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, h_n = m(x)
    loss = out.square().sum() + h_n.sum()
    g1 = torch.autograd.grad(loss, [x, *m.parameters()], retain_graph=True)
    g2 = torch.autograd.grad(loss, [x, *m.parameters()])
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_in_place_change_before_backward_is_caught():
    m = ct.GRU(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, _ = m(x)
    with torch.no_grad():
        m.weight_hh_l0.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def train_losses(cls, state, data, target, opt_cls, steps=20, dtype=torch.float64):
    torch.manual_seed(1)
    gru = cls(4, 8, num_layers=2, batch_first=True, bidirectional=True, dtype=dtype)
    head = torch.nn.Linear(16, 3, dtype=dtype)
    gru.load_state_dict(state[0])
    head.load_state_dict(state[1])
    params = list(gru.parameters()) + list(head.parameters())
    opt = opt_cls(params, lr=0.05)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out, _ = gru(data)
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, gru.state_dict()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_training_with_torch_optim_matches_torch(dtype, opt_cls):
    ref = torch.nn.GRU(4, 8, num_layers=2, batch_first=True, bidirectional=True, dtype=dtype)
    head = torch.nn.Linear(16, 3, dtype=dtype)
    state = ({k: v.clone() for k, v in ref.state_dict().items()}, head.state_dict())
    data = torch.randn(6, 7, 4, dtype=dtype)
    target = torch.randint(0, 3, (6,))
    ours, w_ours = train_losses(ct.GRU, state, data, target, opt_cls, dtype=dtype)
    theirs, w_ref = train_losses(torch.nn.GRU, state, data, target, opt_cls, dtype=dtype)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
    assert ours[-1] < ours[0]  # it learns
    for k in w_ours:
        torch.testing.assert_close(w_ours[k], w_ref[k], rtol=tol, atol=tol)


def test_state_dict_round_trip_and_conversions():
    ref = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    ours = ct.GRU(3, 4, num_layers=2, bidirectional=True)
    assert ours.load_state_dict(ref.state_dict()) is not None
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v)
    ref2 = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    ref2.load_state_dict(ours.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref2(x)[0], rtol=1e-5, atol=1e-5)
    # torch.save / torch.load of the state_dict and of the whole module
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    again = ct.GRU(3, 4, num_layers=2, bidirectional=True)
    again.load_state_dict(torch.load(buf))
    assert torch.equal(again(x)[0], ours(x)[0])
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    assert type(whole) is ct.GRU and torch.equal(whole(x)[0], ours(x)[0])
    # .double() / .float()
    ours.double()
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    out64, _ = ours(x.double())
    assert out64.dtype == torch.float64
    ref2.double()
    torch.testing.assert_close(out64, ref2(x.double())[0], rtol=1e-10, atol=1e-12)
    ours.float()
    assert ours(x)[0].dtype == torch.float32
    cell, cref = pair(torch.float32, cell=True)
    cell2 = ct.GRUCell(5, 7)
    cell2.load_state_dict(cref.state_dict())
    xc = torch.randn(2, 5)
    assert torch.equal(cell2(xc), cell(xc))


def test_dropout_between_layers_in_training_only():
    m = ct.GRU(3, 4, num_layers=3, dropout=0.5, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.GRU(3, 4, num_layers=3, dtype=torch.float64)
    ref.load_state_dict(m.state_dict())
    m.eval()
    torch.testing.assert_close(m(x)[0], ref(x)[0], rtol=1e-10, atol=1e-12)
    m.train()
    torch.manual_seed(3)
    a = m(x)[0]
    torch.manual_seed(3)
    b = m(x)[0]
    assert torch.equal(a, b)  # masks from torch's seeded stream
    assert not torch.allclose(a, ref(x)[0])
    with pytest.warns(UserWarning, match="dropout"):  # as torch.nn.GRU: one layer, no dropout
        one = ct.GRU(3, 4, dropout=0.5, dtype=torch.float64)
    one.train()
    ref1 = torch.nn.GRU(3, 4, dtype=torch.float64)
    ref1.load_state_dict(one.state_dict())
    torch.testing.assert_close(one(x)[0], ref1(x)[0], rtol=1e-10, atol=1e-12)
    # the gradient of a dropout forward is that forward's (gradcheck with fixed masks)
    m2 = ct.GRU(2, 3, num_layers=2, dropout=0.5, dtype=torch.float64)
    xs = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)

    def f(x):
        torch.manual_seed(7)
        return m2(x)

    assert torch.autograd.gradcheck(f, (xs,))


def test_bad_inputs_raise_clear_errors():
    m = ct.GRU(3, 4)
    with pytest.raises(ValueError, match=r"cygru.torch.GRU: expected input with 3 features"):
        m(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match=r"cygru.torch.GRU: expected input with 3 dimensions"):
        m(torch.randn(5, 2, 3, 1))
    with pytest.raises(TypeError, match=r"cygru.torch.GRU: expected input of dtype torch.float32"):
        m(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"cygru.torch.GRU: expected input to be a torch.Tensor"):
        m(np.zeros((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"cygru.torch.GRU: expected hx of shape \(1, 2, 4\)"):
        m(torch.randn(5, 2, 3), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match=r"cygru.torch.GRU: expected hx of shape \(1, 4\)"):
        m(torch.randn(5, 3), torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match=r"cygru.torch.GRU: .*sequence length is 0"):
        m(torch.randn(0, 2, 3, requires_grad=True))
    with pytest.raises(ValueError, match="proj_size"):
        ct.GRU(3, 4, proj_size=2)
    m.half()
    with pytest.raises(TypeError, match="float32 or all float64"):
        m(torch.randn(5, 2, 3).half())
    cell = ct.GRUCell(3, 4)
    with pytest.raises(ValueError, match=r"cygru.torch.GRUCell: expected input of shape \(B, 3\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"cygru.torch.GRUCell: expected hx of shape \(2, 4\)"):
        cell(torch.randn(2, 3), torch.randn(3, 4))
    with pytest.raises(TypeError, match=r"cygru.torch.GRUCell: expected hx of dtype"):
        cell(torch.randn(2, 3), torch.randn(2, 4, dtype=torch.float64))


def test_cuda_tensors_are_refused_clearly():
    m = ct.GRU(3, 4)
    meta = torch.empty(5, 2, 3, device="meta")  # a non-CPU device without a GPU
    with pytest.raises(ValueError, match=r"runs on the CPU only: use torch.nn.GRU"):
        m(meta)
    m.to("meta")
    with pytest.raises(ValueError, match=r"parameter weight_ih_l0 is on meta"):
        m(torch.randn(5, 2, 3))


def test_callers_tensors_are_not_mutated():
    m = ct.GRU(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3, requires_grad=True)
    hx = torch.randn(4, 2, 4, requires_grad=True)
    before = [t.detach().clone() for t in (x, hx, *m.parameters())]
    out, h_n = m(x, hx)
    (out.sum() + h_n.sum()).backward()
    with torch.no_grad():
        m(x, hx)
        m(x.transpose(0, 1).contiguous().transpose(0, 1), hx)  # strided input
    for b, a in zip(before, (x, hx, *m.parameters())):
        assert torch.equal(b, a.detach())
    # strided (non-contiguous) input gives the contiguous input's results
    xs = torch.randn(2, 5, 3).transpose(0, 1)
    assert not xs.is_contiguous()
    assert torch.equal(m(xs)[0], m(xs.contiguous())[0])


def test_outputs_share_no_memory_with_inputs():
    m = ct.GRU(3, 4)
    x = torch.randn(1, 1, 3)
    out, h_n = m(x)
    out.add_(1)  # writing the output changes nothing the caller or the module holds
    assert torch.equal(m(x)[0] + 1, out)


def test_import_cygru_does_not_import_torch():
    code = "import sys, cygru, cygru.functional; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_weight_changes_after_a_call_are_seen():
    """The NumPy views of the weights kept between calls follow every way of changing them."""
    import copy
    import pickle

    ours, ref = pair(torch.float32, num_layers=2)
    x = torch.randn(4, 2, 5)
    with torch.no_grad():
        ours(x)
        other = torch.nn.GRU(5, 7, num_layers=2)
        ours.load_state_dict(other.state_dict())  # copied in place
        torch.testing.assert_close(ours(x)[0], other(x)[0], rtol=1e-5, atol=1e-5)
        ours.weight_hh_l1 = torch.nn.Parameter(torch.zeros(21, 7))  # a new parameter
        other.weight_hh_l1 = torch.nn.Parameter(torch.zeros(21, 7))
        torch.testing.assert_close(ours(x)[0], other(x)[0], rtol=1e-5, atol=1e-5)
        ours.weight_ih_l0.data = torch.ones(21, 5)  # a new storage under the same parameter
        other.weight_ih_l0.data = torch.ones(21, 5)
        torch.testing.assert_close(ours(x)[0], other(x)[0], rtol=1e-5, atol=1e-5)
        twin = copy.deepcopy(ours)
        assert "_cygru_views" not in twin.__dict__
        assert "_cygru_views" not in pickle.loads(pickle.dumps(ours)).__dict__
        twin.weight_ih_l0.zero_()
        assert not torch.equal(twin(x)[0], ours(x)[0])  # the copy has its own weights
        torch.testing.assert_close(ours(x)[0], other(x)[0], rtol=1e-5, atol=1e-5)
        cell, cref = pair(torch.float32, cell=True)
        xc = torch.randn(2, 5)
        cell(xc)
        cell.weight_hh.mul_(0.5)
        cref.weight_hh.mul_(0.5)
        torch.testing.assert_close(cell(xc), cref(xc), rtol=1e-5, atol=1e-5)


def test_gallery_example_trains_both_with_equal_losses(tmp_path):
    """docs/examples/plot_torch_module.py (executed by the docs build) runs on its own; it
    asserts that the two loss curves agree, and prints both reports."""
    import os
    import pathlib
    import re

    import cygru

    example = pathlib.Path(__file__).resolve().parents[1] / "docs/examples/plot_torch_module.py"
    where = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env = dict(os.environ, MPLBACKEND="agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [where, env.get("PYTHONPATH")]))
    code = f"import runpy; runpy.run_path({str(example)!r}, run_name='__main__')"
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    gap = re.search(r"largest difference between the loss curves \(float32\): (\S+)", res.stdout)
    assert gap and float(gap.group(1)) < 1e-2
    reports = re.findall(
        r"^(cygru.torch.GRU|torch.nn.GRU)\s+loss ([\d.]+) -> ([\d.]+) .* per epoch (\d+) ms",
        res.stdout,
        re.M,
    )
    assert [r[0] for r in reports] == ["cygru.torch.GRU", "torch.nn.GRU"]
    assert all(float(last) < float(first) for _, first, last, _ in reports)


def test_benchmark_script_runs(tmp_path):
    """benchmarks/torch_module.py --quick prints its rows (no timing is asserted)."""
    import os
    import pathlib

    import cygru

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "torch_module.py"
    # the cygru this test process imported (a checkout built in place, or an installation)
    where = os.path.dirname(os.path.dirname(os.path.abspath(cygru.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [where, env.get("PYTHONPATH")]))
    res = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    for row in (
        "cygru.torch.GRU, no_grad",
        "inference cygru.torch.GRU",
        "training step cygru.torch.GRU",
        "training step torch.nn.GRU",
    ):
        assert res.stdout.count(row) == (1 if "no_grad" in row else 2), res.stdout


def test_packed_input_ignores_batch_first_and_empty_batch_matches_torch():
    ours, ref = pair(torch.float64, batch_first=True, bidirectional=True)
    seqs = [torch.randn(n, 5, dtype=torch.float64) for n in (3, 5, 1)]
    (o, h), (o_r, h_r) = ours(pack_sequence(seqs, False)), ref(pack_sequence(seqs, False))
    assert_close(o.data, o_r.data, torch.float64)
    assert_close(h, h_r, torch.float64)
    x = torch.randn(0, 4, 5, dtype=torch.float64, requires_grad=True)  # batch_first: B = 0
    (o, h), (o_r, h_r) = ours(x), ref(x)
    assert o.shape == o_r.shape == (0, 4, 14) and h.shape == h_r.shape == (2, 0, 7)
    (o.sum() + h.sum()).backward()
    assert x.grad.shape == x.shape


def test_concurrent_calls_from_threads_give_the_serial_results():
    from concurrent.futures import ThreadPoolExecutor

    ours, _ = pair(torch.float32, num_layers=2, bidirectional=True)
    xs = [torch.randn(6, 3, 5) for _ in range(8)]
    with torch.no_grad():
        serial = [ours(x)[0] for x in xs]

    def train_and_infer(x):
        out, _ = ours(x.requires_grad_(False))
        g = torch.autograd.grad(out.sum(), list(ours.parameters()))
        with torch.no_grad():
            return out, ours(x)[0], g

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(train_and_infer, xs))
    for s, (a, b, g) in zip(serial, results):
        assert torch.equal(s, a) and torch.equal(s, b)
        assert all(torch.isfinite(t).all() for t in g)

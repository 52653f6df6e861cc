"""Adversarial regressions for the behaviour issues 22 and 23 added: defects an
adversarial pass found in the new code, each fixed (see the test names)."""

import pickle

import numpy as np
import pytest
from optional_deps import import_optional

import cygru
from cygru import optim

F64 = np.float64


def _zero_stride(n, fill=0.0):
    """A writeable array of n elements that are all one memory location."""
    base = np.full(1, fill)
    return base, np.lib.stride_tricks.as_strided(base, (n,), (0,))


# -- clip_grad_norm_ with norm_type=inf: a nan anywhere gives a nan norm --------------


@pytest.mark.parametrize("nan_first", [False, True])
def test_clip_inf_norm_nan_in_any_gradient_is_nan(nan_first):
    # Python's max() kept the first value when a later one was nan: the total was 2.0,
    # and error_if_nonfinite=True did not raise (torch's inf-norm is nan)

    def fresh():
        items = [("a", np.array([1.0, 2.0])), ("b", np.array([np.nan]))]
        return dict(items[::-1] if nan_first else items)

    grads = fresh()
    total = optim.clip_grad_norm_(grads, 1.0, norm_type=float("inf"))
    assert np.isnan(total)
    assert np.isnan(grads["a"]).all()  # scaled by a nan factor, as torch does
    grads = fresh()
    with pytest.raises(RuntimeError, match=r"^cygru\.optim\.clip_grad_norm_: .* is nan"):
        optim.clip_grad_norm_(grads, 1.0, norm_type=float("inf"), error_if_nonfinite=True)
    assert grads["a"].tolist() == [1.0, 2.0]


def test_clip_inf_norm_nan_in_a_later_module_gradient():
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    gru.grads["weight_ih_l0"][...] = 1.0
    gru.grads["bias_hh_l0"][0] = np.nan  # after the first entry
    with pytest.raises(RuntimeError, match="is nan"):
        optim.clip_grad_norm_(gru, 1.0, norm_type=float("inf"), error_if_nonfinite=True)


# -- arrays whose elements share memory (broadcast / as_strided views) -----------------


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW])
def test_optimizer_refuses_a_parameter_whose_elements_overlap(cls):
    # five elements on one location: a step wrote it five times (SGD gave -0.1, not
    # five updates, nor an error as torch's in-place update on an expanded tensor)
    base, view = _zero_stride(5)
    with pytest.raises(ValueError, match=r"^cygru\.optim\.\w+: parameter 'a' has elements"):
        cls({"a": view}, lr=0.1)
    assert base.tolist() == [0.0]


def test_optimizer_accepts_non_overlapping_views():
    p = np.zeros((4, 6))
    opt = optim.SGD({"a": p[:, ::2], "b": p[:, 1::2], "c": p.T[:0]}, lr=1.0)
    opt.step({"a": np.ones((4, 3)), "b": 2 * np.ones((4, 3)), "c": np.ones((0, 4))})
    assert (p[:, ::2] == -1).all() and (p[:, 1::2] == -2).all()


def test_clip_refuses_a_gradient_whose_elements_overlap():
    base, view = _zero_stride(4, 1.0)
    with pytest.raises(ValueError, match=r"^cygru\.optim\.clip_grad_norm_: gradient 'a' has"):
        optim.clip_grad_norm_({"a": view}, 1.0)
    assert base.tolist() == [1.0]


def test_backward_refuses_a_grads_entry_whose_elements_overlap():
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    x = np.ones((3, 1, 2))
    (out, _), backward = gru.vjp(x)
    base, view = _zero_stride(9)
    gru.grads["bias_ih_l0"] = view
    before = {k: v.copy() for k, v in gru.grads.items() if k != "bias_ih_l0"}
    with pytest.raises(ValueError, match=r"grads\['bias_ih_l0'\] has elements that share"):
        backward(out, None)
    assert base.tolist() == [0.0]
    assert all(np.array_equal(before[k], gru.grads[k]) for k in before)
    # all or nothing: fixed, the retry counts the gradients once
    gru.grads["bias_ih_l0"] = np.zeros(9)
    backward(out, None)
    ref = cygru.GRU(2, 3, dtype=F64, seed=0)
    (out2, _), backward2 = ref.vjp(x)
    backward2(out2, None)
    for k in ref.grads:
        np.testing.assert_array_equal(gru.grads[k], ref.grads[k])


# -- zero_grad with entries replaced by the user ---------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        lambda: [0.0] * 9,
        lambda: np.zeros(9, np.float32),
        lambda: np.ones(4),
        lambda: _zero_stride(9, 1.0)[1],
    ],
    ids=["list", "other dtype", "other shape", "overlapping"],
)
def test_zero_grad_resets_an_entry_that_cannot_take_zeros(entry):
    # it raised "list indices must be integers or slices, not ellipsis" (no name),
    # or left the entry unusable for the next backward
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    gru.grads["weight_hh_l0"][...] = 5.0
    gru.grads["bias_ih_l0"] = entry()
    gru.zero_grad()
    for name, g in gru.grads.items():
        assert type(g) is np.ndarray and g.dtype == F64, name
        assert g.shape == gru.state_dict()[name].shape and not g.any(), name
    (out, _), backward = gru.vjp(np.ones((3, 1, 2)))
    backward(out, None)  # every entry takes the gradients


def test_zero_grad_read_only_entry_is_replaced_not_written():
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    ro = np.ones(9)
    ro.flags.writeable = False
    gru.grads["bias_ih_l0"] = ro
    gru.zero_grad()
    assert ro.tolist() == [1.0] * 9  # the caller's array untouched
    assert gru.grads["bias_ih_l0"] is not ro and not gru.grads["bias_ih_l0"].any()


def test_zero_grad_never_zeroes_a_parameter():
    # an entry set to a parameter (or a view of one): zeros written in place wiped the
    # weights
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    weights = gru.state_dict()
    gru.grads["bias_ih_l0"] = gru.bias_hh_l0
    gru.grads["weight_hh_l0"] = gru.weight_ih_l0[:9, :2].T.T  # not the same shape: replaced
    gru.grads["weight_ih_l0"] = gru.weight_ih_l0
    gru.zero_grad()
    for name, w in weights.items():
        np.testing.assert_array_equal(getattr(gru, name), w)
    for name, g in gru.grads.items():
        assert not g.any(), name
    assert not np.shares_memory(gru.grads["weight_ih_l0"], gru.weight_ih_l0)


def test_zero_grad_keeps_a_good_entry_in_place():
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    mine = np.ones(9)
    gru.grads["bias_ih_l0"] = mine
    gru.zero_grad()
    assert gru.grads["bias_ih_l0"] is mine and not mine.any()


# -- a user's subclass of GRUCell may name its own attributes freely ------------------


class _CellWithDropout(cygru.GRUCell):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropout = 0.5  # the subclass's own output dropout
        self.reverse = True
        self.batch_first = "yes"


def test_cell_subclass_may_use_gru_option_names():
    # refused with "a _CellWithDropout has no option 'dropout'" (the guard meant for
    # cygru.GRUCell itself, where the assignment would do nothing)
    cell = _CellWithDropout(3, 4, seed=0)
    assert (cell.dropout, cell.reverse, cell.batch_first) == (0.5, True, "yes")
    again = pickle.loads(pickle.dumps(cell))
    assert (again.dropout, again.reverse) == (0.5, True)
    np.testing.assert_array_equal(again(np.ones(3)), cell(np.ones(3)))


def test_plain_cell_still_refuses_gru_options():
    with pytest.raises(AttributeError, match=r"^cygru\.GRUCell: a GRUCell has no option"):
        cygru.GRUCell(3, 4).dropout = 0.5


# -- from_onnx: external data and attribute values of message types -------------------


def _exported(tmp_path, name="m.onnx", **save):
    onnx = import_optional("onnx")
    import io

    model = cygru.GRU(2, 3, seed=0).to_onnx(io.BytesIO(), h0="none", lengths="none")
    path = tmp_path / name
    onnx.save_model(model, str(path), **save)
    return model, path


def _add_external(model, location, count, elements):
    import_optional("onnx")
    from onnx import TensorProto

    for i in range(count):
        t = model.graph.initializer.add()
        t.name, t.data_type = f"junk{i}", TensorProto.FLOAT
        t.dims[:] = [elements]
        t.data_location = TensorProto.EXTERNAL
        entry = t.external_data.add()
        entry.key, entry.value = "location", location


def test_from_onnx_refuses_one_data_file_read_again_for_many_tensors(tmp_path):
    # a 4 KB model naming a 4 MiB file in 40 tensors grew memory by 160 MiB (4,000
    # tensors: 16 GiB), though nothing it read was a GRU's weight
    (tmp_path / "w.bin").write_bytes(b"\0" * (1 << 20))
    model, path = _exported(tmp_path)
    _add_external(model, "w.bin", 8, 1 << 18)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match=r"^cygru\.from_onnx: the file .* read more than once"):
        cygru.from_onnx(str(path))


def test_from_onnx_reads_external_data_that_onnx_saved(tmp_path):
    onnx = import_optional("onnx")
    gru = cygru.GRU(4, 5, num_layers=2, bidirectional=True, seed=1)
    import io

    model = gru.to_onnx(io.BytesIO())
    for one_file in (True, False):
        path = tmp_path / f"m{one_file}.onnx"
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=one_file,
            location=f"w{one_file}.bin",
            size_threshold=0,
        )
        back = cygru.from_onnx(str(path))
        for k, v in gru.state_dict().items():
            np.testing.assert_array_equal(back.state_dict()[k], v)


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../../etc/passwd", "none.bin"])
def test_from_onnx_external_data_errors_are_named(tmp_path, location):
    # onnx's ValidationError / FileNotFoundError came out without the function's name
    model, path = _exported(tmp_path)
    _add_external(model, location, 1, 4)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match=r"^cygru\.from_onnx: the file .*external data"):
        cygru.from_onnx(str(path))


def test_from_onnx_external_data_in_a_non_regular_file_is_refused(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.bin")  # reading it would block forever
    model, path = _exported(tmp_path)
    _add_external(model, "pipe.bin", 1, 4)
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ValueError, match=r"^cygru\.from_onnx: .* not a regular file"):
        cygru.from_onnx(str(path))


def test_from_onnx_attribute_holding_a_tensor_is_named():
    import_optional("onnx")
    # "TypeError: 'TensorProto' object is not iterable" while writing the message
    import io

    from onnx import helper, numpy_helper

    model = cygru.GRU(2, 3, seed=0).to_onnx(io.BytesIO())
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    keep = [a for a in node.attribute if a.name != "hidden_size"]
    del node.attribute[:]
    bad = helper.make_attribute("hidden_size", numpy_helper.from_array(np.array(3)))
    node.attribute.extend([*keep, bad])
    with pytest.raises(ValueError, match=r"'hidden_size' must be of ONNX type INT .* TENSOR"):
        cygru.from_onnx(model)


# -- DataParallelTrainer: options assigned after construction --------------------------


def _trainer_data():
    da = import_optional("dask.array")
    rng = np.random.default_rng(0)
    x = da.from_array(rng.standard_normal((5, 6, 2)), chunks=(5, 3, 2))
    return x, np.zeros((5, 6, 4))


def test_trainer_optimizer_assigned_later_is_used_and_checked():
    # an optimizer assigned after construction was ignored: the old one kept stepping
    dask = import_optional("dask")
    cygru_dask = import_optional("cygru.dask")
    x, y = _trainer_data()
    gru = cygru.GRU(2, 4, dtype=F64, seed=0)
    trainer = cygru_dask.DataParallelTrainer(gru, optim.SGD(gru, lr=0.0))
    before = gru.weight_hh_l0.copy()
    trainer.optimizer = optim.Adam(gru, lr=0.05)
    with dask.config.set(scheduler="sync"):
        trainer.step(x, y)
    assert not np.array_equal(before, gru.weight_hh_l0)
    other = cygru.GRU(2, 4, dtype=F64, seed=1)
    with pytest.raises(ValueError, match="does not update the trainer's module"):
        trainer.optimizer = optim.SGD(other, lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be"):
        trainer.optimizer = 3
    assert isinstance(trainer.optimizer, optim.Adam)  # unchanged by the refusals


def test_trainer_module_is_read_only():
    # a module assigned later got the gradients while the optimizer stepped the old one
    cygru_dask = import_optional("cygru.dask")
    gru = cygru.GRU(2, 4, dtype=F64, seed=0)
    trainer = cygru_dask.DataParallelTrainer(gru, optim.SGD(gru, lr=0.1))
    with pytest.raises(AttributeError, match=r"^cygru\.dask\.DataParallelTrainer: module is"):
        trainer.module = cygru.GRU(2, 4, dtype=F64, seed=1)
    assert trainer.module is gru


# -- fork while another thread holds a module's or an optimizer's lock ----------------


def _child_after_fork_with_held_locks():
    """Runs in a fresh process: fork while another thread holds the locks, and report
    whether the child's calls finished (exit 0) or hung (killed by SIGALRM)."""
    import os
    import signal
    import threading

    gru = cygru.GRU(3, 4, seed=0)
    opt = optim.SGD(gru, lr=0.1)
    held, release = threading.Event(), threading.Event()

    def hold():
        with gru._lock, gru._param_lock, opt._lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)
        gru.zero_grad()
        gru.load_state_dict(gru.state_dict())
        (out, _), backward = gru.vjp(np.ones((2, 1, 3), np.float32))
        backward(out, None)
        opt.step()
        os._exit(0)
    release.set()
    thread.join()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_forked_child_does_not_hang_on_locks_another_thread_held():
    # 23 of 30 children forked while another thread ran zero_grad/load_state_dict hung
    # forever: the module's threading locks stayed held in the child
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_adversarial_22_23 as t; "
        "sys.exit(t._child_after_fork_with_held_locks())"
    )
    here = str(__import__("pathlib").Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", code, here], timeout=120)
    assert done.returncode == 0  # -14 (SIGALRM) when the child hung


# -- Optimizer.load_state_dict: a step count kept as torch.optim keeps it ---------------


def test_adam_load_state_dict_reads_a_0d_tensor_step():
    # the buffers as torch tensors were accepted, the step as torch's tensor(1.) refused
    torch = import_optional("torch")
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    opt = optim.Adam(gru, lr=0.01)
    (out, _), backward = gru.vjp(np.ones((3, 1, 2)))
    backward(out, None)
    opt.step()
    sd = opt.state_dict()
    as_torch = {
        "hyperparameters": sd["hyperparameters"],
        "state": {
            key: {
                n: torch.tensor(float(v)) if n == "step" else torch.from_numpy(v)
                for n, v in buffers.items()
            }
            for key, buffers in sd["state"].items()
        },
    }
    opt.load_state_dict(as_torch)
    assert all(type(s["step"]) is int and s["step"] == 1 for s in opt.state.values())
    bad = {"hyperparameters": sd["hyperparameters"], "state": {"0.bias_ih_l0": {}}}
    bad["state"]["0.bias_ih_l0"] = dict(as_torch["state"]["0.bias_ih_l0"])
    bad["state"]["0.bias_ih_l0"]["step"] = torch.tensor(1.5)
    with pytest.raises(ValueError, match=r"step must be an integer"):
        opt.load_state_dict(bad)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW])
def test_optimizer_state_assigned_later_is_checked(cls):
    # state = None made the next step raise "'NoneType' object has no attribute 'get'";
    # a key of no parameter was kept, and state_dict() then held what load refused
    gru = cygru.GRU(2, 3, dtype=F64, seed=0)
    opt = cls(gru, lr=0.01)
    for bad, err in ((None, TypeError), ([], TypeError), ({"0.nope": {}}, ValueError)):
        with pytest.raises(err, match=rf"^cygru\.optim\.{cls.__name__}: (the )?state"):
            opt.state = bad
    with pytest.raises(TypeError, match="must be a dict"):
        opt.state = {"0.bias_ih_l0": None}
    opt.state = {}  # a reset is fine
    opt.state = {"0.bias_ih_l0": {}}
    (out, _), backward = gru.vjp(np.ones((3, 1, 2)))
    backward(out, None)
    opt.step()
    opt.load_state_dict(opt.state_dict())


def test_pickling_refuses_a_grads_entry_that_unpickling_would_refuse():
    # pickle.dumps succeeded and pickle.loads then raised: a checkpoint that cannot be read
    gru = cygru.GRU(3, 4, seed=0)
    gru.grads["bias_ih_l0"] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"^cygru\.GRU: cannot pickle: grads\['bias_ih_l0'\]"):
        pickle.dumps(gru)
    gru.zero_grad()
    again = pickle.loads(pickle.dumps(gru))
    assert again.grads["bias_ih_l0"].shape == (12,)
    # an entry of another real dtype, or read-only, loads (converted), as before
    ro = np.ones(12, np.float64)
    ro.flags.writeable = False
    gru.grads["bias_ih_l0"] = ro
    again = pickle.loads(pickle.dumps(gru))
    assert again.grads["bias_ih_l0"].dtype == np.float32 and again.grads["bias_ih_l0"].all()


@pytest.mark.parametrize("bad", ["x", None, 1.0, True])
def test_capi_status_name_names_a_bad_argument(bad):
    # Cython's bare "an integer is required"
    capi = import_optional("cygru.capi")
    with pytest.raises(TypeError, match=r"^cygru\.capi\.status_name: status must be an integer"):
        capi.status_name(bad)


def test_capi_status_name_of_any_integer():
    # 2**40 raised "OverflowError: value too large to convert to int"
    capi = import_optional("cygru.capi")
    assert capi.status_name(2**40) == capi.status_name(-(2**40)) == "unknown cygru status"
    assert capi.status_name(np.int64(capi.ERR_WORKSPACE_BUSY)).startswith("the workspace is in use")

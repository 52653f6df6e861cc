"""cygru.dask on a real distributed.LocalCluster (2 worker processes, 1 thread each):
inference and gradients against single-process cygru, a worker killed mid-computation,
the thread policy, the local scheduler, and bad inputs."""

import doctest
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from optional_deps import import_optional

dask = import_optional("dask")
da = import_optional("dask.array")
distributed = import_optional("distributed")

import cygru  # noqa: E402  (after the skips: dask and distributed are optional)
import cygru.dask as cdask  # noqa: E402
import cygru.dask._common as dcommon  # noqa: E402
import cygru.dask._training as dtraining  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def client():
    """A real cluster of worker processes, closed when the module's tests end (whether
    they pass or fail: the context managers close it)."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        c.wait_for_workers(2, timeout=60)
        yield c


def _data(dtype, batch_first, B=23, T=9, I=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    lengths = rng.integers(1, T + 1, B)
    return x, lengths


def _dask_x(x, batch_first, chunk):
    return da.from_array(x, chunks=(chunk, -1, -1) if batch_first else (-1, chunk, -1))


def _split(a, axis, chunks):
    edges = np.cumsum((0,) + tuple(chunks))
    return [np.take(a, np.arange(s, e), axis=axis) for s, e in zip(edges[:-1], edges[1:])]


# -- inference ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_forward_equals_single_process(client, dtype, bidirectional, batch_first, with_lengths):
    gru = cygru.GRU(
        5,
        7,
        num_layers=2,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dtype=dtype,
        seed=1,
    )
    x, lengths = _data(dtype, batch_first)
    lengths = lengths if with_lengths else None
    chunks = (8, 8, 7)
    xd = _dask_x(x, batch_first, 8)
    ld = None if lengths is None else da.from_array(lengths, chunks=8)
    h0 = np.random.default_rng(3).standard_normal((2 * gru.num_directions, 23, 7)).astype(dtype)
    h0d = da.from_array(h0, chunks=(-1, 8, -1))
    out, h_n = cdask.forward(gru, xd, lengths=ld, h0=h0d)
    b_ax = 0 if batch_first else 1
    assert out.chunks[b_ax] == chunks and h_n.chunks[1] == chunks
    assert out.dtype == dtype and h_n.dtype == dtype
    got_out, got_hn = client.compute([out, h_n], sync=True)
    # one call over the whole batch, here at this process's default thread count (the
    # workers ran one thread per task): cygru's engine computes a sequence's bits
    # whatever the rows around it and the thread count, in float32 and float64 alike
    ref_out, ref_hn = gru(x, h0=h0, lengths=lengths)
    assert got_out.shape == ref_out.shape and got_hn.shape == ref_hn.shape
    assert np.array_equal(got_out, ref_out) and np.array_equal(got_hn, ref_hn)


def test_forward_numpy_lengths_and_h0_read_only(client):
    gru = cygru.GRU(5, 6, bidirectional=True, seed=2)
    x, lengths = _data(np.float32, False, B=20)
    h0 = np.random.default_rng(1).standard_normal((2, 20, 6)).astype(np.float32)
    for a in (x, lengths, h0):
        a.setflags(write=False)
    keep = [a.copy() for a in (x, lengths, h0)]
    out, h_n = cdask.forward(gru, _dask_x(x, False, 6), lengths=lengths, h0=h0)
    got = client.compute([out, h_n], sync=True)
    ref = gru(x, h0=h0, lengths=lengths)
    assert all(np.array_equal(g, r) for g, r in zip(got, ref))
    assert all(np.array_equal(a, k) for a, k in zip((x, lengths, h0), keep))


def test_forward_snapshots_the_weights(client):
    gru = cygru.GRU(5, 6, seed=3)
    x, _ = _data(np.float32, False, B=8)
    ref = gru(x)[0]
    out, _ = cdask.forward(gru, _dask_x(x, False, 4))
    gru.weight_hh_l0 += 1.0  # after the graph was built: not seen by it
    assert np.array_equal(out.compute(), ref)


def test_module_is_sent_once_per_worker(client):
    """16 chunks: the module is unpickled about once on each worker (a key of the graph
    that one worker computes and the other fetches), never once per chunk. (Twice on a
    worker when Dask's work stealing moved the key's task away from a worker that had
    already received it, and that worker then fetched the result: seen once in ~10 runs
    on a loaded machine.)"""

    def install():
        import cygru.modules as m

        m._unpickled = 0
        original = m.GRU.__setstate__

        def counting(self, state):
            m._unpickled += 1
            return original(self, state)

        m._original_setstate = original
        m.GRU.__setstate__ = counting

    def count_and_remove():
        import cygru.modules as m

        m.GRU.__setstate__ = m._original_setstate
        return m._unpickled

    gru = cygru.GRU(5, 6, seed=4)
    x, _ = _data(np.float32, False, B=32)
    out, h_n = cdask.forward(gru, _dask_x(x, False, 2))
    assert out.numblocks[1] == 16
    client.run(install)
    try:
        got = client.compute([out, h_n], sync=True)
    finally:
        counts = client.run(count_and_remove)
    assert all(c <= 2 for c in counts.values()), counts
    assert 1 <= sum(counts.values()) <= 3, counts
    assert np.array_equal(got[0], gru(x)[0])


def _threads_in_task(threads):
    """In a task run with `threads`: cygru's count, and the threads a big layer call
    would get (a layer with work for 256 threads: the planned count is the count)."""
    from cygru import _cpu

    with dcommon._task_thread_count(threads):
        return cygru.get_num_threads(), _cpu._threads_for(64, 2048, 1, np.float32)


def test_thread_policy_on_workers(client):
    """Under Dask's nanny a task runs cygru on one thread (OMP_NUM_THREADS=1, which
    cygru's default honours); threads=k gives a task exactly k threads, on any machine
    (this one may have fewer cores: 2), on its own thread only, and changes no bits
    (float32)."""
    info = client.run(lambda: (cygru.get_num_threads(), os.environ.get("OMP_NUM_THREADS")))
    assert all(v == (1, "1") for v in info.values()), info
    assert client.submit(dcommon._task_threads, None, pure=False).result() == 1
    for k in (2, 4, 2 * len(os.sched_getaffinity(0)) + 1):
        assert client.submit(dcommon._task_threads, k, pure=False).result() == k
        assert client.submit(_threads_in_task, k, pure=False).result() == (k, k)
    # the count was the task's own: the worker's default is unchanged afterwards
    assert all(v == 1 for v in client.run(cygru.get_num_threads).values())
    gru = cygru.GRU(5, 64, bidirectional=True, seed=5)
    x, lengths = _data(np.float32, False, B=16)
    for k in (2, 4):
        out, _ = cdask.forward(gru, _dask_x(x, False, 8), lengths=lengths, threads=k)
        assert np.array_equal(out.compute(), gru(x, lengths=lengths)[0])


def test_threads_k_reaches_the_engine_on_the_local_scheduler(monkeypatch):
    """forward(threads=4) and grad_step(threads=4): every layer call of every task plans
    4 threads (not capped at this machine's cores, not shared with the tasks running
    beside it), unless a count is fixed process-wide, which wins (as documented)."""
    from cygru import _cpu

    real = _cpu._threads_for
    seen = []

    def spy(B, H, D, dtype):
        n = real(B, H, D, dtype)
        seen.append((cygru.get_num_threads(), n))
        return n

    monkeypatch.setattr(_cpu, "_threads_for", spy)
    monkeypatch.setattr(_cpu, "_num_threads", 0)  # cygru's default, not a setting
    gru = cygru.GRU(5, 512, seed=3)  # work for 4 threads per step at B=4
    x, _ = _data(np.float32, False, B=16, T=3)
    y = np.zeros((3, 16, 512), np.float32)
    with dask.config.set(scheduler="threads", num_workers=4):
        cdask.forward(gru, _dask_x(x, False, 4), threads=4)[0].compute()
        assert len(seen) == 4 and set(seen) == {(4, 4)}, seen
        seen.clear()
        cdask.grad_step(gru, _dask_x(x, False, 4), y, threads=4)
        assert len(seen) == 8 and set(seen) == {(4, 4)}, seen  # forward and backward
        seen.clear()
        monkeypatch.setattr(_cpu, "_num_threads", 3)  # set_num_threads(3) wins
        cdask.forward(gru, _dask_x(x, False, 4), threads=4)[0].compute()
        assert set(seen) == {(3, 3)}, seen


def test_threads_limit_is_the_tasks_own():
    """threads=k on the local threaded scheduler sets the task's thread's count only (k,
    more than the cores here): this thread's (the process's) default is untouched, during
    and after."""
    import threading

    default = cygru.get_num_threads()
    k = len(os.sched_getaffinity(0)) + 3
    seen, gate = {}, threading.Event()

    def task():
        with dcommon._task_thread_count(k):
            seen["inside"] = cygru.get_num_threads()
            gate.wait(10)

    t = threading.Thread(target=task)
    t.start()
    while "inside" not in seen and t.is_alive():
        time.sleep(0.001)
    seen["main during"] = cygru.get_num_threads()
    gate.set()
    t.join()
    assert seen == {"inside": k, "main during": default}
    assert cygru.get_num_threads() == default
    gru = cygru.GRU(5, 64, seed=21)
    x, _ = _data(np.float32, False, B=12)
    with dask.config.set(scheduler="threads"):
        got = cdask.forward(gru, _dask_x(x, False, 4), threads=1)[0].compute()
    assert np.array_equal(got, gru(x)[0])
    assert cygru.get_num_threads() == default


def test_local_scheduler_without_client(client):
    gru = cygru.GRU(5, 6, bidirectional=True, batch_first=True, seed=6)
    x, lengths = _data(np.float32, True)
    ref = gru(x, lengths=lengths)
    for scheduler in ("threads", "sync"):
        with dask.config.set(scheduler=scheduler):
            got = dask.compute(*cdask.forward(gru, _dask_x(x, True, 5), lengths=lengths))
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_worker_killed_mid_inference_loses_no_rows(client):
    """Kill one worker process while the chunks are being computed: Dask recomputes what
    was lost, and the result holds every row exactly once, equal to the reference."""
    gru = cygru.GRU(32, 128, bidirectional=True, seed=7)
    x = np.random.default_rng(8).standard_normal((200, 96, 32)).astype(np.float32)
    x[:, :, 0] = np.arange(96)[None, :]  # every row distinguishable
    out, h_n = cdask.forward(gru, da.from_array(x, chunks=(-1, 4, -1)))
    persisted = client.persist([out, h_n])
    futures = distributed.futures_of(persisted)
    deadline = time.monotonic() + 60
    killed = None
    while time.monotonic() < deadline:
        done = [f for f in futures if f.status == "finished"]
        if done:
            holders = client.who_has(done)
            for workers in holders.values():
                if workers:
                    killed = workers[0]
                    break
            if killed:
                break
        time.sleep(0.005)
    assert killed is not None, "no chunk finished within 60 s"
    unfinished = sum(f.status != "finished" for f in futures)
    pid = client.run(os.getpid, workers=[killed])[killed]
    os.kill(pid, signal.SIGKILL)
    got_out, got_hn = client.compute(persisted, sync=True)
    assert unfinished > 0, "the computation ended before the worker was killed"
    ref_out, ref_hn = gru(x)
    assert got_out.shape == ref_out.shape and got_hn.shape == ref_hn.shape
    assert np.array_equal(got_out, ref_out) and np.array_equal(got_hn, ref_hn)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


# -- gradients ------------------------------------------------------------------------------


def _mse_grads(gru, x, y, lengths, on):
    """Single process, the whole batch at once: grads of the mean squared error."""
    gru.zero_grad()
    (out, h_n), backward = gru.vjp(x, lengths=lengths)
    if on == "output":
        diff = out - y
        if lengths is not None:
            diff = diff * dtraining._valid_mask(
                lengths, out.shape[1 - (0 if gru.batch_first else 1)], 0 if gru.batch_first else 1
            )
            count = int(lengths.sum()) * out.shape[2]
        else:
            count = diff.size
        backward(2 * diff / count, None)
    else:
        diff = h_n - y
        count = diff.size
        backward(None, 2 * diff / count)
    loss = float(np.sum(diff.astype(np.float64) ** 2) / count)
    return loss, {k: g.copy() for k, g in gru.grads.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("on", ["output", "h_n"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_gradients_equal_single_process(client, dtype, on, batch_first):
    gru = cygru.GRU(
        5, 6, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=dtype, seed=9
    )
    x, lengths = _data(dtype, batch_first, B=19)
    rng = np.random.default_rng(10)
    if on == "output":
        y = rng.standard_normal(gru(x)[0].shape).astype(dtype)
        yd = da.from_array(y, chunks=(5, -1, -1) if batch_first else (-1, 5, -1))
    else:
        y = rng.standard_normal((4, 19, 6)).astype(dtype)
        yd = da.from_array(y, chunks=(-1, 5, -1))
    gru.zero_grad()
    loss = cdask.grad_step(gru, _dask_x(x, batch_first, 5), yd, lengths=lengths, on=on)
    got = {k: g.copy() for k, g in gru.grads.items()}
    ref_loss, ref = _mse_grads(gru, x, y, lengths, on)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 2e-6)
    assert loss == pytest.approx(ref_loss, rel=rtol)
    for k in ref:
        assert got[k].dtype == dtype
        np.testing.assert_allclose(got[k], ref[k], rtol=rtol, atol=atol, err_msg=k)


def test_gradients_bitwise_reproducible_in_tree_order(client):
    """The reduction order is fixed: the distributed sum equals, bit for bit, the shards'
    vjp gradients summed in the same tree in one process, and a second run."""
    gru = cygru.GRU(5, 6, bidirectional=True, seed=11)
    x, lengths = _data(np.float32, False, B=22)
    chunks = (4, 4, 4, 4, 4, 2)
    d_out = np.random.default_rng(12).standard_normal((9, 22, 12)).astype(np.float32)
    runs = []
    for _ in range(2):
        gru.zero_grad()
        assert (
            cdask.grad_step(
                gru,
                _dask_x(x, False, 4),
                lengths=lengths,
                d_output=da.from_array(d_out, chunks=(-1, 4, -1)),
            )
            is None
        )
        runs.append({k: g.copy() for k, g in gru.grads.items()})
    shards = []
    for xc, lc, dc in zip(
        _split(x, 1, chunks), _split(lengths, 0, chunks), _split(d_out, 1, chunks)
    ):
        gru.zero_grad()
        (_, _), backward = gru.vjp(xc, lengths=lc)
        backward(dc, None)
        shards.append({k: g.copy() for k, g in gru.grads.items()})
    level = shards
    while len(level) > 1:  # split_every=2, left to right
        nxt = []
        for i in range(0, len(level), 2):
            group = level[i : i + 2]
            total = {k: g.copy() for k, g in group[0].items()}
            for other in group[1:]:
                for k in total:
                    total[k] += other[k]
            nxt.append(total)
        level = nxt
    for k in level[0]:
        assert np.array_equal(runs[0][k], runs[1][k]), k
        assert np.array_equal(runs[0][k], level[0][k]), k


def test_loss_callable_and_d_output_agree_with_mse(client):
    gru = cygru.GRU(5, 6, dtype=np.float64, seed=13)
    x, _ = _data(np.float64, False, B=12)
    y = np.random.default_rng(14).standard_normal((9, 12, 6))
    xd = _dask_x(x, False, 5)
    gru.zero_grad()
    mse = cdask.grad_step(gru, xd, y)
    want = {k: g.copy() for k, g in gru.grads.items()}
    count = y.size

    def loss(out, h_n, target):
        diff = out - target
        return np.sum(diff**2) / count, 2 * diff / count, None

    gru.zero_grad()
    value = cdask.grad_step(gru, xd, y, loss=loss, split_every=3)
    assert value == pytest.approx(mse, rel=1e-12)
    for k in want:
        np.testing.assert_allclose(gru.grads[k], want[k], rtol=1e-12, atol=1e-14)
    out = gru(x)[0]
    gru.zero_grad()
    assert cdask.grad_step(gru, xd, d_output=2 * (out - y) / count) is None
    for k in want:
        np.testing.assert_allclose(gru.grads[k], want[k], rtol=1e-12, atol=1e-14)
    # grad_step adds, like a backward closure
    cdask.grad_step(gru, xd, d_output=2 * (out - y) / count)
    for k in want:
        np.testing.assert_allclose(gru.grads[k], 2 * want[k], rtol=1e-12, atol=1e-14)


# every cygru.optim optimizer, with the options that change its update
OPTIMIZERS = {
    "SGD": lambda m: cygru.optim.SGD(m, lr=0.3),
    "SGD-momentum": lambda m: cygru.optim.SGD(m, lr=0.3, momentum=0.5),
    "SGD-nesterov-decay": lambda m: cygru.optim.SGD(
        m, lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.01
    ),
    "Adam": lambda m: cygru.optim.Adam(m, lr=0.05),
    "Adam-amsgrad-decay": lambda m: cygru.optim.Adam(m, lr=0.05, amsgrad=True, weight_decay=0.01),
    "AdamW": lambda m: cygru.optim.AdamW(m, lr=0.05, weight_decay=0.1),
}


def test_every_optimizer_is_tested():
    assert {type(make(cygru.GRU(1, 1))) for make in OPTIMIZERS.values()} == {
        getattr(cygru.optim, name)
        for name in cygru.optim.__all__
        if isinstance(getattr(cygru.optim, name), type)
        and issubclass(getattr(cygru.optim, name), cygru.optim.Optimizer)
        and name != "Optimizer"
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_trainer_with_each_optimizer_matches_single_process_training(client, name, dtype):
    """Five steps of DataParallelTrainer with each cygru.optim optimizer on the cluster,
    and five of the same optimizer in one process (whole-batch vjp): the same losses and
    parameters to float tolerance; the loss falls. (The trainer once passed the module to
    cygru.optim's step(grads), which refused it.)"""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((10, 16, 3)).astype(dtype)
    y = (np.cumsum(x[..., :1], axis=0).repeat(4, axis=2) * 0.1).astype(dtype)
    a = cygru.GRU(3, 4, dtype=dtype, seed=16)
    b = cygru.GRU(3, 4, dtype=dtype, seed=16)
    trainer = cdask.DataParallelTrainer(a, OPTIMIZERS[name](a))
    single = OPTIMIZERS[name](b)
    xd = da.from_array(x, chunks=(-1, 4, -1))
    losses = []
    for _ in range(5):
        trainer.step(xd, y)
        loss, _ = _mse_grads(b, x, y, None, "output")
        single.step()
        losses.append(loss)
    rtol, atol = (1e-9, 1e-11) if dtype == np.float64 else (2e-4, 2e-5)
    np.testing.assert_allclose(trainer.history, losses, rtol=rtol)
    assert losses[-1] < losses[0]
    assert not np.allclose(a.weight_hh_l0, cygru.GRU(3, 4, dtype=dtype, seed=16).weight_hh_l0)
    for k, w in a.state_dict().items():
        assert w.dtype == dtype
        np.testing.assert_allclose(w, b.state_dict()[k], rtol=rtol, atol=atol, err_msg=k)
    # the optimizer's state lives on the driver and carries over: Adam's step count is 5
    if name.startswith("Adam"):
        assert {s["step"] for s in trainer.optimizer.state_dict()["state"].values()} == {5}


def test_trainer_refuses_an_optimizer_of_other_parameters():
    gru = cygru.GRU(2, 3, seed=0)
    with pytest.raises(ValueError, match="does not update the trainer's module"):
        cdask.DataParallelTrainer(gru, cygru.optim.Adam(cygru.GRU(2, 3, seed=0)))
    w = {"w_out": np.zeros((3, 1), np.float32)}
    with pytest.raises(ValueError, match=r"also updates plain arrays \['w_out'\]"):
        cdask.DataParallelTrainer(gru, cygru.optim.SGD([gru, w], lr=0.1))
    with pytest.raises(ValueError, match="also updates GRUCell"):
        cdask.DataParallelTrainer(gru, cygru.optim.AdamW([gru, cygru.GRUCell(2, 3)]))


def test_dask_sgd_is_gone_and_points_to_cygru_optim():
    assert "SGD" not in cdask.__all__
    with pytest.raises(AttributeError, match=r"cygru.optim.SGD\(module"):
        cdask.SGD  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        cdask.nope  # noqa: B018


def test_trainer_accepts_pluggable_optimizers(client):
    x = da.from_array(np.random.default_rng(17).standard_normal((4, 6, 2)), chunks=(-1, 3, -1))
    y = np.zeros((4, 6, 3))
    calls = []

    class NoArgStep:  # PyTorch style: step() reads the grads it was given
        def __init__(self, module):
            self.module = module

        def step(self):
            calls.append("step()")
            for name, p in self.module.named_parameters():
                p -= 0.1 * self.module.grads[name]

    class ModuleStep:  # step(module): the module is passed
        def step(self, module):
            calls.append(f"step({type(module).__name__})")

    class ClosureStep:  # torch.optim's signature, step(closure=None): called as step()
        def __init__(self, module):
            self.module = module

        def step(self, closure=None):
            calls.append(f"step(closure={closure})")

    gru = cygru.GRU(2, 3, dtype=np.float64, seed=18)
    before = gru.state_dict()
    cdask.DataParallelTrainer(gru, NoArgStep(gru)).step(x, y)
    cdask.DataParallelTrainer(gru, lambda m: calls.append("callable")).step(x, y)
    cdask.DataParallelTrainer(gru, ModuleStep()).step(x, y)
    cdask.DataParallelTrainer(gru, ClosureStep(gru)).step(x, y)
    assert calls == ["step()", "callable", "step(GRU)", "step(closure=None)"]
    assert not np.array_equal(before["weight_hh_l0"], gru.weight_hh_l0)
    with pytest.raises(TypeError, match="optimizer"):
        cdask.DataParallelTrainer(gru, 0.1)


# -- errors ---------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    gru = cygru.GRU(5, 6, seed=19)
    x, lengths = _data(np.float32, False, B=12)
    xd = _dask_x(x, False, 4)
    with pytest.raises(TypeError, match="dask.array.Array"):
        cdask.forward(gru, x)
    with pytest.raises(TypeError, match="cygru.GRU"):
        cdask.forward(cygru.GRUCell(5, 6), xd)
    with pytest.raises(ValueError, match="3 dimensions|batch of sequences"):
        cdask.forward(gru, da.from_array(x[:, 0], chunks=3))
    with pytest.raises(ValueError, match="input_size"):
        cdask.forward(gru, da.from_array(x[..., :4], chunks=(-1, 4, -1)))
    cut_in_time = da.from_array(x, chunks=(3, 4, -1))
    with pytest.raises(ValueError, match=r"cut along axis 0 in 3 chunks"):
        cdask.forward(gru, cut_in_time, rechunk=False)
    with pytest.warns(da.PerformanceWarning, match="rechunking"):
        out, _ = cdask.forward(gru, cut_in_time)
    assert np.array_equal(out.compute(scheduler="sync"), gru(x)[0])
    with pytest.raises(ValueError, match="must match x's batch chunks"):
        cdask.forward(gru, xd, lengths=da.from_array(lengths, chunks=5))
    with pytest.raises(ValueError, match="must match x's batch chunks"):
        cdask.forward(gru, xd, h0=da.zeros((1, 12, 6), chunks=(1, 6, 6)))
    with pytest.raises(ValueError, match="shape"):
        cdask.forward(gru, xd, lengths=lengths[:5])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 9\]"):
        cdask.forward(gru, xd, lengths=lengths + 9)
    with pytest.raises(TypeError, match="integers"):
        cdask.forward(gru, xd, lengths=lengths.astype(float))
    with pytest.raises(TypeError, match="lengths must be integers"):
        cdask.forward(gru, xd, lengths=da.from_array(lengths.astype(float), chunks=4))
    with pytest.raises(TypeError, match="real numbers"):
        cdask.forward(gru, xd, h0=da.zeros((1, 12, 6), chunks=(1, 4, 6), dtype=complex))
    with pytest.raises(TypeError, match="real numbers"):
        cdask.forward(gru, xd.astype(complex))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        cdask.forward(gru, xd[:, xd[0, :, 0] > 0])
    with pytest.raises(ValueError, match="threads"):
        cdask.forward(gru, xd, threads=0)
    with pytest.raises(ValueError, match="cuda|cpu"):
        fake = cygru.GRU(5, 6)
        object.__setattr__(fake, "device", "cuda:0")
        cdask.forward(fake, xd)
    # an invalid length inside a Dask array is cygru's own error, when computed
    bad = lengths.copy()
    bad[0] = 0
    out, _ = cdask.forward(gru, xd, lengths=da.from_array(bad, chunks=4))
    with pytest.raises(ValueError, match=r"every length must be in \[1, 9\]"):
        out.compute(scheduler="sync")


def test_grad_step_bad_arguments():
    gru = cygru.GRU(5, 6, seed=20)
    x, _ = _data(np.float32, False, B=8)
    xd = _dask_x(x, False, 4)
    y = np.zeros((9, 8, 6), np.float32)
    with pytest.raises(ValueError, match="nothing to differentiate"):
        cdask.grad_step(gru, xd)
    with pytest.raises(ValueError, match="not both"):
        cdask.grad_step(gru, xd, y, d_output=y)
    with pytest.raises(ValueError, match="loss must be"):
        cdask.grad_step(gru, xd, y, loss="mae")
    with pytest.raises(ValueError, match="on must be"):
        cdask.grad_step(gru, xd, y, on="h")
    with pytest.raises(ValueError, match="no sequences"):
        cdask.grad_step(gru, xd[:, :0], y[:, :0])
    with pytest.raises(ValueError, match="split_every"):
        cdask.grad_step(gru, xd, y, split_every=1)
    with pytest.raises(ValueError, match="shape"):
        cdask.grad_step(gru, xd, y[:, :4])
    with pytest.raises(ValueError, match="must match x's batch chunks"):
        cdask.grad_step(gru, xd, da.from_array(y, chunks=(-1, 3, -1)))
    with pytest.raises(ValueError, match="dropout"):
        cdask.grad_step(cygru.GRU(5, 6, num_layers=2, dropout=0.5), xd, y)


def test_import_error_names_the_extra():
    code = (
        "import sys; sys.modules['dask'] = None\n"
        "try:\n    import cygru.dask\nexcept ImportError as e:\n    print(e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert 'pip install "cygru[dask]"' in res.stdout


def test_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(cdask) if t.examples]
    assert {t.name.split(".", 2)[-1] for t in tests} >= {
        "forward",
        "grad_step",
        "DataParallelTrainer",
        "DataParallelTrainer.step",
    }
    for t in tests:
        t.globs = {"__name__": "__main__"}  # as copied by a reader: imports its own names
        runner.run(t)
    assert runner.failures == 0


def test_pickle_is_compact():
    """Shipping a module costs its weights plus about 100 bytes per array and a few
    hundred for the options."""
    for gru in (cygru.GRU(16, 64, seed=0), cygru.GRU(64, 256, 2, bidirectional=True, seed=0)):
        weights = sum(a.nbytes for a in gru.state_dict().values())
        arrays = len(gru.state_dict())
        assert weights < len(pickle.dumps(gru)) < weights + 100 * arrays + 1024
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clone = pickle.loads(pickle.dumps(cygru.GRU(3, 4, seed=1)))
    assert repr(clone) == "GRU(3, 4, dtype=float32)"


def test_scaling_benchmark_quick_runs(tmp_path):
    """benchmarks/dask_scaling.py --quick runs, checks its distributed result against the
    direct call, prints its table and closes its clusters (no timing is asserted)."""
    out_json = tmp_path / "r.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "dask_scaling.py"),
            "--quick",
            "--json",
            str(out_json),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "| run | median ms | min-max ms | sequences/s | CPU s | sequences/CPU s |" in res.stdout
    for name in (
        "direct, 1 thread(s)",
        "direct, per chunk of 4, 1 thread",
        "1 worker(s) x 1 thread, chunks of 16, on workers",
        "2 worker(s) x 1 thread, chunks of 4, round trip",
        "1 worker(s) x 1 thread, chunks of 4, no-op tasks",
        "2 worker(s) x 1 thread, chunks of 16, on workers, tuned workers",
    ):
        assert f"| {name} |" in res.stdout
    result = json.loads(out_json.read_text())
    assert result["config"]["B"] == 64 and result["config"]["chunks"] == [16, 4]
    assert len(result["rows"]) == 5 + 2 * 2 * 2 + 2 * 2 * 2 + 2 * 2  # (round trips: defaults)
    assert all(r["seq_per_s"] > 0 and r["cpu_s"] >= 0 for r in result["rows"])
    # the graph's structure (not a timing): one task per chunk and one getter per output,
    # the output alone fused to one task per chunk
    assert result["graph"]["16"]["chunks"] == 4 and result["graph"]["4"]["chunks"] == 16
    for g in result["graph"].values():
        assert g["tasks_per_chunk"] == 3 and g["module_keys"] == 1
        assert g["tasks_per_chunk_output_only_optimized"] == 1
    assert set(result["summary"]) == {"16", "4"}
    assert "tasks per chunk <= 1 + 2: met" in res.stdout


@pytest.mark.parametrize("bad", [0, 257, -1, True, np.bool_(True), 2.0, "2", b"2", np.array([3])])
def test_threads_read_by_the_one_parser(bad):
    """threads= is read as cygru.set_num_threads reads its count (one parser), the error
    naming the cygru.dask function; 0-d integer arrays and NumPy integers pass alike."""
    gru = cygru.GRU(5, 6, seed=20)
    x, _ = _data(np.float32, False, B=8)
    xd = _dask_x(x, False, 4)
    y = np.zeros((9, 8, 6), np.float32)
    with pytest.raises(ValueError) as direct:
        cygru.set_num_threads(bad)
    want = str(direct.value).replace("cygru.set_num_threads:", "threads:")
    for who, call in [
        ("cygru.dask.forward", lambda: cdask.forward(gru, xd, threads=bad)),
        ("cygru.dask.grad_step", lambda: cdask.grad_step(gru, xd, y, threads=bad)),
    ]:
        with pytest.raises(ValueError) as got:
            call()
        assert str(got.value) == f"{who}: {want} (or None: cygru's default)"
    for good in (np.int64(2), np.array(2), 2):
        out, _ = cdask.forward(gru, xd, threads=good)
        assert out.shape == (9, 8, 6)


@pytest.mark.parametrize("B,chunk", [(3, 1), (4, 3), (9, 2), (9, 4), (9, 5), (6, 4)])
def test_chunks_across_the_small_batch_kernel_keep_the_whole_batchs_bits(client, B, chunk):
    """Batches of at most 4 rows run the dot kernel, larger ones the packed kernel, which
    round differently: a chunk on the other side of that line than the whole batch still
    gives its rows the whole batch's bits (the chunk's call picks the kernel of B rows)."""
    for dtype in (np.float32, np.float64):
        gru = cygru.GRU(5, 20, 2, seed=4, dtype=dtype)
        x, lengths = _data(dtype, False, B=B)
        out, h_n = cdask.forward(gru, _dask_x(x, False, chunk))
        got_out, got_hn = client.compute([out, h_n], sync=True)
        ref_out, ref_hn = gru(x)
        assert np.array_equal(got_out, ref_out) and np.array_equal(got_hn, ref_hn)
        out, h_n = cdask.forward(gru, _dask_x(x, False, chunk), lengths=lengths)
        got_out, got_hn = client.compute([out, h_n], sync=True)
        ref_out, ref_hn = gru(x, lengths=lengths)
        assert np.array_equal(got_out, ref_out) and np.array_equal(got_hn, ref_hn)


def test_kernel_rows_override_gives_the_bigger_batchs_bits():
    """_cpu._kernel_rows(n): a call of B rows computes as a call of n rows would."""
    from cygru import _cpu

    gru = cygru.GRU(6, 24, seed=5)
    x = np.random.default_rng(0).standard_normal((5, 12, 6)).astype(np.float32)
    whole = gru(x)[0]
    alone = gru(x[:, :2])[0]  # 2 rows: the small-batch kernel
    with _cpu._kernel_rows(12):
        as_part = gru(x[:, :2])[0]
    assert np.array_equal(as_part, whole[:, :2])
    assert np.allclose(alone, whole[:, :2], rtol=1e-5, atol=1e-6)
    assert _cpu._kernel_rows_now() == 0  # restored


# -- quantized modules (cygru.quantize): inference only -------------------------------------


@pytest.mark.parametrize("precision", ["int8", "bf16"])
@pytest.mark.parametrize(
    "bidirectional,batch_first,reset_after", [(False, False, True), (True, True, False)]
)
def test_quantized_forward_equals_the_quantized_module(
    client, precision, bidirectional, batch_first, reset_after
):
    """A QuantizedGRU over Dask chunks gives the bits of one call of it over the whole
    batch (h0, lengths, layers, both directions, both gate forms)."""
    gru = cygru.GRU(
        5,
        20,
        num_layers=2,
        bidirectional=bidirectional,
        batch_first=batch_first,
        reset_after=reset_after,
        seed=6,
    )
    q = cygru.quantize(gru, precision)
    x, lengths = _data(np.float32, batch_first)
    D = gru.num_directions
    h0 = np.random.default_rng(4).standard_normal((2 * D, 23, 20)).astype(np.float32)
    out, h_n = cdask.forward(
        q,
        _dask_x(x, batch_first, 8),
        lengths=da.from_array(lengths, chunks=8),
        h0=da.from_array(h0, chunks=(-1, 8, -1)),
    )
    assert out.dtype == np.float32 and out.chunks[0 if batch_first else 1] == (8, 8, 7)
    got_out, got_hn = client.compute([out, h_n], sync=True)
    ref_out, ref_hn = q(x, h0=h0, lengths=lengths)
    assert np.array_equal(got_out, ref_out) and np.array_equal(got_hn, ref_hn)
    # quantized: not the float module's numbers
    assert not np.array_equal(got_out, gru(x, h0=h0, lengths=lengths)[0])


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_quantized_chunks_of_any_size_keep_the_whole_batchs_bits(client, precision):
    """The quantized products give a row the same bits at any batch size, so chunks below
    and above the small-batch line (and _cpu._kernel_rows, which the tasks set) change
    nothing."""
    from cygru import _cpu

    q = cygru.quantize(cygru.GRU(5, 20, 2, seed=4), precision)
    x, lengths = _data(np.float32, False, B=9)
    ref_out, ref_hn = q(x, lengths=lengths)
    for chunk in (1, 2, 4, 5):
        out, h_n = cdask.forward(q, _dask_x(x, False, chunk), lengths=lengths)
        got_out, got_hn = client.compute([out, h_n], sync=True)
        assert np.array_equal(got_out, ref_out) and np.array_equal(got_hn, ref_hn)
    alone = q(x[:, :2], lengths=lengths[:2])[0]
    with _cpu._kernel_rows(9):
        as_part = q(x[:, :2], lengths=lengths[:2])[0]
    assert np.array_equal(alone, ref_out[:, :2]) and np.array_equal(as_part, alone)


def test_quantized_on_the_local_scheduler_and_snapshot():
    q = cygru.quantize(cygru.GRU(4, 12, bidirectional=True, seed=2), "bf16")
    x, _ = _data(np.float32, False, B=7, I=4)
    out, h_n = cdask.forward(q, _dask_x(x, False, 3), threads=1)
    q.load_state_dict(
        cygru.quantize(cygru.GRU(4, 12, bidirectional=True, seed=3), "bf16").state_dict()
    )
    with dask.config.set(scheduler="threads"):
        got_out, got_hn = dask.compute(out, h_n)
    # the weights when the graph was built (a snapshot), not the ones loaded after
    ref = cygru.quantize(cygru.GRU(4, 12, bidirectional=True, seed=2), "bf16")(x)
    assert np.array_equal(got_out, ref[0]) and np.array_equal(got_hn, ref[1])


def test_training_a_quantized_module_is_refused():
    q = cygru.quantize(cygru.GRU(5, 6, seed=0), "int8")
    x = _dask_x(_data(np.float32, False, B=4)[0], False, 2)
    y = np.zeros((9, 4, 6), np.float32)
    for call in (
        lambda: cdask.grad_step(q, x, y),
        lambda: cdask.DataParallelTrainer(q, lambda m: None),
    ):
        with pytest.raises(TypeError, match=r"QuantizedGRU \(int8\) is for inference only"):
            call()
    with pytest.raises(TypeError, match="train the float32 cygru.GRU"):
        cdask.grad_step(cygru.quantize(cygru.GRU(5, 6, seed=0), "bf16"), x, y)
    cell = cygru.quantize(cygru.GRUCell(5, 6, seed=0), "int8")
    with pytest.raises(TypeError, match=r"a cygru.GRU or cygru.QuantizedGRU, got QuantizedGRUCell"):
        cdask.forward(cell, x)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_quantized_pickle_round_trip(precision):
    """What Dask ships: a QuantizedGRU's pickle rebuilds it (options, quantized state,
    the same bits), at the cost of its quantized weights and a little more."""
    q = cygru.quantize(
        cygru.GRU(16, 64, 2, bidirectional=True, batch_first=True, seed=0), precision
    )
    data = pickle.dumps(q)
    clone = pickle.loads(data)
    assert type(clone) is cygru.QuantizedGRU and repr(clone) == repr(q)
    assert clone.precision == precision and clone.batch_first
    state, clone_state = q.state_dict(), clone.state_dict()
    assert state.keys() == clone_state.keys()
    for k in state:
        assert state[k].dtype == clone_state[k].dtype and np.array_equal(state[k], clone_state[k])
    x = np.random.default_rng(0).standard_normal((3, 5, 16)).astype(np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(q(x), clone(x)))
    weights = sum(a.nbytes for a in state.values())
    assert weights < len(data) < weights + 200 * len(state) + 2048
    snap = dcommon._snapshot(q)
    assert snap is not q and all(np.array_equal(a, b) for a, b in zip(q(x), snap(x)))


# -- graph structure: one task per chunk ----------------------------------------------------


def _own_keys(collections, inputs):
    """The keys the collections' graphs add to their inputs' graphs."""
    base = set()
    for a in inputs:
        base |= set(dict(a.__dask_graph__()))
    keys = {}
    for c in collections:
        keys.update(dict(c.__dask_graph__()))
    return {k: v for k, v in keys.items() if k not in base}


def _name(key):
    return key[0] if isinstance(key, tuple) else key


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("inputs", ["none", "numpy", "dask"])
def test_forward_is_one_task_per_chunk_and_a_getter_per_output(batch_first, inputs):
    """forward adds, per batch chunk, one task that runs the GRU and one getter per
    output (3 = 1 + 2 outputs), plus the module's one key for the whole graph: lengths and
    h0 are inputs of that one task (NumPy pieces written into it, no task of their own),
    and each getter reads one chunk's task only. Dask's graph optimisation fuses the
    getter into the task when only one output is asked for."""
    gru = cygru.GRU(5, 6, bidirectional=True, batch_first=batch_first, seed=1)
    x, lengths = _data(np.float32, batch_first, B=23)
    xd = _dask_x(x, batch_first, 4)
    n = xd.numblocks[0 if batch_first else 1]
    h0 = np.zeros((2, 23, 6), np.float32)
    args, extra = {}, []
    if inputs == "numpy":
        args = {"lengths": lengths, "h0": h0}
    elif inputs == "dask":
        args = {
            "lengths": da.from_array(lengths, chunks=4),
            "h0": da.from_array(h0, chunks=(-1, 4, -1)),
        }
        extra = list(args.values())
    out, h_n = cdask.forward(gru, xd, **args)
    own = _own_keys([out, h_n], [xd, *extra])
    names = {}
    for k in own:
        names.setdefault(_name(k), []).append(k)
    modules = [k for k in names if k.startswith("cygru-module-")]
    assert len(modules) == 1 and len(names[modules[0]]) == 1
    assert len(own) == 3 * n + 1, sorted(names)
    assert len(own) - 1 <= n * (1 + 2)  # the target: one task + at most one per output
    (record,) = [
        k for k in names if k.startswith("cygru-forward-") and "output" not in k and "h_n" not in k
    ]
    assert len(names[record]) == n
    graph = {**dict(out.__dask_graph__()), **dict(h_n.__dask_graph__())}
    for getter in (out, h_n):
        for key in (k for k in own if _name(k) == getter.name):
            deps = {_name(d) for d in graph[key].dependencies}
            assert deps == {record}, deps
    (only_out,) = dask.optimize(out)
    fused = _own_keys([only_out], [])
    computing = [k for k in fused if not isinstance(fused[k], dask._task_spec.DataNode)]
    assert len(computing) == n  # one task per chunk
    with dask.config.set(scheduler="sync"):
        got = dask.compute(out, h_n)
    ref = gru(x, **{k: np.asarray(v) for k, v in args.items()})
    assert all(np.array_equal(g, r) for g, r in zip(got, ref))


def test_grad_step_is_one_task_per_shard_and_a_fixed_tree():
    """grad_step's graph: one task per shard (vjp and backward), the module's one key, and
    the fixed reduction tree (split_every shards per node): ceil-divisions down to one."""
    from dask.callbacks import Callback

    gru = cygru.GRU(5, 6, seed=2)
    x, lengths = _data(np.float32, False, B=22)
    y = np.zeros((9, 22, 6), np.float32)
    graphs = []
    for chunk, split_every in ((2, 2), (2, 3), (4, 2), (22, 2)):
        xd = _dask_x(x, False, chunk)
        n = xd.numblocks[1]
        graphs.clear()
        with Callback(start=lambda dsk: graphs.append(dict(dsk))):
            with dask.config.set(scheduler="sync"):
                gru.zero_grad()
                cdask.grad_step(gru, xd, y, lengths=lengths, split_every=split_every)
        (graph,) = graphs
        by_name = {}
        for k in graph:
            by_name.setdefault(_name(k), []).append(k)
        shards = [k for k in by_name if str(k).startswith("cygru-grad-shards-")]
        assert len(shards) == 1 and len(by_name[shards[0]]) == n
        tree, level = 0, n  # nodes: groups of more than one (a lone last item passes up)
        while level > 1:
            tree += level // split_every + (level % split_every > 1)
            level = -(-level // split_every)
        sums = [k for k in graph if str(_name(k)).startswith("_sum_parts")]
        assert len(sums) == tree, (chunk, split_every, len(sums))
        modules = [k for k in graph if str(_name(k)).startswith("cygru-module-")]
        assert len(modules) == 1
        x_keys = {k for k in dict(xd.__dask_graph__())}
        assert len(graph) - len(x_keys & set(graph)) == n + tree + 1


def test_package_imports_point_down():
    """cygru/dask/ imports cygru's submodules (never ``cygru`` itself or a name of
    cygru/__init__.py), and its own modules without a circle: __init__ imports
    _inference and _training, which import _common, which imports none of them. Every
    import statement counts, those inside functions too."""
    import ast
    import pathlib

    package = pathlib.Path(ROOT) / "cygru" / "dask"
    names_of_cygru = set(dir(cygru))
    edges = {}
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        mine = edges.setdefault(path.stem, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name == "cygru" for a in node.names), path
            elif isinstance(node, ast.ImportFrom):
                assert node.module != "cygru" and not (node.module or "").startswith("cygru."), (
                    path,
                    node.module,
                )  # relative imports only
                if node.level == 2 and node.module is None:  # from .. import X
                    bad = [a.name for a in node.names if a.name in names_of_cygru]
                    assert not bad, (path, bad)
                if node.level == 1:
                    targets = [node.module] if node.module else [a.name for a in node.names]
                    mine.update(t.split(".")[0] for t in targets)
    assert edges["_common"] == set(), edges
    assert edges["_inference"] == {"_common"} and edges["_training"] == {"_common"}, edges
    assert edges["__init__"] == {"_common", "_inference", "_training"}, edges


def test_rechunk_warnings_point_at_the_callers_line():
    """The PerformanceWarning of a rechunked input names the user's file (this one), not
    cygru's, whichever input and whichever entry point (forward, grad_step, a trainer)."""
    gru = cygru.GRU(5, 6, num_layers=2, seed=22)
    x, lengths = _data(np.float32, False, B=8)
    xd = _dask_x(x, False, 4)
    cut = {
        "x": da.from_array(x, chunks=(3, 4, -1)),
        "h0": da.zeros((2, 8, 6), chunks=(1, 4, 3), dtype=np.float32),
        "targets": da.zeros((9, 8, 6), chunks=(3, 4, 6), dtype=np.float32),
    }
    y = np.zeros((9, 8, 6), np.float32)
    trainer = cdask.DataParallelTrainer(gru, cygru.optim.SGD(gru, lr=0.0))
    calls = [
        ("x", lambda: cdask.forward(gru, cut["x"])),
        ("h0", lambda: cdask.forward(gru, xd, h0=cut["h0"])),
        ("targets", lambda: cdask.grad_step(gru, xd, cut["targets"])),
        ("targets", lambda: trainer.step(xd, cut["targets"])),
        ("x", lambda: cdask.grad_step(gru, cut["x"], y)),
    ]
    for name, call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with dask.config.set(scheduler="sync"):
                call()
        found = [w for w in caught if issubclass(w.category, da.PerformanceWarning)]
        assert found and all(f"{name} must be chunked" in str(w.message) for w in found)
        assert {os.path.abspath(w.filename) for w in found} == {os.path.abspath(__file__)}


def test_the_wheel_ships_the_subpackage():
    """pyproject.toml lists every package directory of cygru/ (cygru/dask/ among them),
    so a wheel ships it; setuptools' build_py copies its modules."""
    import pathlib
    import tomllib

    root = pathlib.Path(ROOT)
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "cygru").rglob("__init__.py")
    }
    assert "cygru.dask" in found and found <= listed, (found, listed)

"""
Data-parallel training on two Dask workers
==========================================

A dataset of sequences is split along the batch across the two worker processes of a
``distributed.LocalCluster``; each training step runs ``vjp`` and the backward pass on
each worker's shard, sums the gradients by a tree reduction and updates the weights on
this process (:class:`cygru.dask.DataParallelTrainer`). The same model is trained in one
process, with one ``vjp`` over the whole batch per step, and the two loss curves are
plotted side by side: they are the same curve, to float64 precision.

The task: from a stream of numbers, output at every step the previous number and a
running average — a GRU with two hidden units is trained so that its ``output`` itself is
the prediction (``loss="mse"`` on ``output``).
"""

import matplotlib.pyplot as plt
import numpy as np

import dask.array as da
import distributed

import cygru
import cygru.dask

SEQ_LEN, BATCH, STEPS = 30, 512, 60
rng = np.random.default_rng(0)
x = rng.uniform(-0.8, 0.8, (SEQ_LEN, BATCH, 1))
y = np.zeros((SEQ_LEN, BATCH, 2))
y[1:, :, 0] = x[:-1, :, 0]  # the previous input
for t in range(SEQ_LEN):  # a running average
    y[t, :, 1] = 0.7 * (y[t - 1, :, 1] if t else 0.0) + 0.3 * x[t, :, 0]

# %%
# Distributed: two worker processes, one thread each
# --------------------------------------------------
# The dataset is cut into two batch chunks and persisted on the workers, one chunk each;
# the targets follow the same cut. ``trainer.step`` sends the current weights (one key of
# the task graph), gets back the summed gradient and applies the optimiser here.


def train_on_two_workers():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        xd = client.persist(da.from_array(x, chunks=(-1, BATCH // 2, -1)))
        yd = client.persist(da.from_array(y, chunks=(-1, BATCH // 2, -1)))
        distributed.wait([xd, yd])
        print(
            "chunks of x and y held by each worker:",
            sorted(len(keys) for keys in client.has_what().values()),
        )
        gru = cygru.GRU(1, 2, dtype=np.float64, seed=0)
        opt = cygru.optim.SGD(gru, lr=2.0, momentum=0.9)  # any cygru.optim optimizer
        trainer = cygru.dask.DataParallelTrainer(gru, opt)
        for _step in range(STEPS):
            trainer.step(xd, yd)
    return np.array(trainer.history)


# The worker processes import this file (Python's "spawn"): the guard keeps them from
# running the example themselves.
if __name__ == "__main__":
    distributed_loss = train_on_two_workers()

# %%
# The same in one process
# -----------------------
# The gradient of the mean squared error over the whole batch, from one ``vjp``.


def train_in_one_process():
    single = cygru.GRU(1, 2, dtype=np.float64, seed=0)
    opt = cygru.optim.SGD(single, lr=2.0, momentum=0.9)
    losses = []
    for _step in range(STEPS):
        single.zero_grad()
        (out, _), backward = single.vjp(x)
        err = out - y
        losses.append(float(np.mean(err**2)))
        backward(2 * err / err.size, None)
        opt.step()
    return np.array(losses)


if __name__ == "__main__":
    single_loss = train_in_one_process()
    gap = np.max(np.abs(distributed_loss - single_loss) / single_loss)
    print(f"loss: {single_loss[0]:.4f} -> {single_loss[-1]:.4f} in {STEPS} steps")
    print(f"largest relative difference between the curves: {gap:.1e}")
    assert gap < 1e-9 and single_loss[-1] < 0.5 * single_loss[0]

# %%
# Loss curves
# -----------

if __name__ == "__main__":
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(single_loss, lw=4, alpha=0.4, color="C0", label="one process, whole batch")
    ax.plot(distributed_loss, "--", color="C1", label="2 Dask workers, 256 sequences each")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean squared error")
    ax.set_title("Data-parallel training gives the single-process curve")
    ax.legend()
    fig.tight_layout()

"""
Training a classifier: cygru beside PyTorch
===========================================

A GRU reads a noisy waveform of between 16 and 48 steps and says which of four shapes it
is: sine, square, sawtooth or pulse train, each with its own random period, phase and
amplitude. The model is a one-layer :class:`cygru.GRU` with 128 hidden units, the mean of
its outputs over each sequence's steps, a linear head and a softmax cross-entropy, trained
with :class:`cygru.optim.Adam` on mini-batches of sequences of different lengths
(``lengths=``). The pooling, the head and the loss are a few lines of NumPy; the GRU's
gradients come from ``vjp``.

The same model is trained in PyTorch (``torch.nn.GRU`` on packed sequences,
``torch.nn.Linear``, ``F.cross_entropy``, ``torch.optim.Adam``) from the same initial
weights, on the same batches in the same order, with the same number of threads. Both run
in float64, so the two runs are the same computation up to rounding: their loss curves
are drawn side by side, and the time each engine takes per epoch is measured and printed.

PyTorch is needed only for its half (``pip install torch``); where it is missing, the
cygru half runs and the example says PyTorch was absent.
"""

import os
import time

import matplotlib.pyplot as plt
import numpy as np

import cygru

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None
    print("PyTorch is not installed: only the cygru half of this example runs.")

HIDDEN, CLASSES = 128, 4
MIN_LEN, MAX_LEN = 16, 48
N_TRAIN, N_TEST, BATCH, EPOCHS, LR = 1024, 512, 32, 4, 0.01
STEPS_PER_EPOCH = N_TRAIN // BATCH
THREADS = min(2, os.cpu_count() or 1)
NAMES = ("sine", "square", "sawtooth", "pulse")

# %%
# The data
# --------
# Every sequence is a wave of one of the four shapes, sampled at integer steps with a
# period of 4 to 12 steps, plus Gaussian noise. Sequences are stored zero-padded to
# ``MAX_LEN`` steps, time first, with their lengths beside them.


def make_dataset(n, rng):
    labels = rng.integers(0, CLASSES, n)
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, n)
    period = rng.uniform(4, 12, n)
    phase = rng.uniform(0, 1, n)
    amplitude = rng.uniform(0.5, 1.5, n)
    t = np.arange(MAX_LEN)[:, None]
    u = (t / period + phase) % 1.0  # position within the period, in [0, 1)
    waves = np.stack(
        [
            np.sin(2 * np.pi * u),  # sine
            np.where(u < 0.5, 1.0, -1.0),  # square
            2 * u - 1,  # sawtooth
            np.where(u < 0.2, 1.0, -0.25),  # pulse train
        ]
    )
    x = amplitude * waves[labels, :, np.arange(n)].T + 0.3 * rng.standard_normal((MAX_LEN, n))
    x[t >= lengths] = 0.0  # padding: never read by either engine
    return x[:, :, None], lengths, labels


rng = np.random.default_rng(0)
x_train, len_train, y_train = make_dataset(N_TRAIN, rng)
x_test, len_test, y_test = make_dataset(N_TEST, rng)
# one shuffled order of mini-batches per epoch, the same for both engines
orders = [rng.permutation(N_TRAIN) for _ in range(EPOCHS)]


def batches(epoch):
    """(x, lengths, labels) of each mini-batch, x cut to the batch's longest sequence."""
    order = orders[epoch]
    for start in range(0, N_TRAIN, BATCH):
        idx = order[start : start + BATCH]
        lengths = len_train[idx]
        yield x_train[: lengths.max(), idx], lengths, y_train[idx]


fig, axes = plt.subplots(1, CLASSES, figsize=(10, 2.2), sharey=True)
for c, ax in enumerate(axes):
    i = int(np.flatnonzero(y_train == c)[0])
    ax.plot(x_train[: len_train[i], i, 0], lw=1)
    ax.set_title(f"{NAMES[c]} ({len_train[i]} steps)", fontsize=9)
fig.tight_layout()

# %%
# The model, in cygru
# -------------------
# ``gru.vjp(x, lengths=...)`` runs each sequence for its own number of steps (its
# ``output`` is zero beyond them) and returns the closure that backpropagates gradients
# with respect to ``output``. The features of a sequence are the mean of its outputs over
# its own steps: a weighted sum over time, with weight ``1 / length`` on the valid steps
# and 0 on the padding, so its gradient reaches ``output`` through the same weights. The
# head ``logits = features @ weight.T + bias`` (``torch.nn.Linear``'s layout) and the mean
# cross-entropy of the softmax are written out in NumPy, with their gradients. Adam updates
# the GRU's parameters (from ``gru.grads``) and the head's arrays (from the dict given to
# ``step``).

gru = cygru.GRU(1, HIDDEN, dtype=np.float64, seed=0)
bound = 1 / np.sqrt(HIDDEN)  # torch.nn.Linear's initialisation range
init_rng = np.random.default_rng(1)
head = {
    "weight": init_rng.uniform(-bound, bound, (CLASSES, HIDDEN)),
    "bias": init_rng.uniform(-bound, bound, CLASSES),
}
# the starting point, kept for PyTorch's copy of the model
initial = {name: p.copy() for name, p in gru.named_parameters()}
initial_head = {name: p.copy() for name, p in head.items()}


def mean_weights(lengths, steps):
    """(steps, batch, 1) weights of the mean over each sequence's own steps."""
    valid = np.arange(steps)[:, None] < lengths
    return (valid / lengths)[:, :, None]


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) and its gradient with respect to logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    d_logits = np.exp(log_p)
    d_logits[rows, labels] -= 1.0
    return -log_p[rows, labels].mean(), d_logits / len(labels)


def predict_cygru(x, lengths):
    output, _ = gru(x, lengths=lengths)  # a plain call: inference
    features = (output * mean_weights(lengths, len(x))).sum(axis=0)
    return (features @ head["weight"].T + head["bias"]).argmax(axis=1)


def cygru_model():
    """The training epoch and the prediction of the cygru model."""
    opt = cygru.optim.Adam([gru, head], lr=LR)

    def train_epoch(epoch):
        losses = []
        for x, lengths, labels in batches(epoch):
            (output, _), backward = gru.vjp(x, lengths=lengths)
            weights = mean_weights(lengths, len(x))
            features = (output * weights).sum(axis=0)  # (batch, HIDDEN)
            logits = features @ head["weight"].T + head["bias"]
            loss, d_logits = softmax_cross_entropy(logits, labels)
            opt.zero_grad()
            backward(weights * (d_logits @ head["weight"]), None)
            opt.step({"weight": d_logits.T @ features, "bias": d_logits.sum(axis=0)})
            losses.append(float(loss))
        return losses

    return train_epoch, predict_cygru


# %%
# The same model, in PyTorch
# --------------------------
# ``torch.nn.GRU`` and cygru's GRU name and lay out their parameters alike, so cygru's
# initial weights load into it with ``load_state_dict``. Variable lengths go through
# ``pack_padded_sequence``; ``pad_packed_sequence`` gives the outputs back zero-padded,
# in the batch's order, as cygru's, and the same weights make the mean.


def torch_model():
    """The training epoch and the prediction of the PyTorch model."""
    rnn = torch.nn.utils.rnn
    net = torch.nn.GRU(1, HIDDEN, dtype=torch.float64)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in initial.items()})
    linear = torch.nn.Linear(HIDDEN, CLASSES, dtype=torch.float64)
    linear.load_state_dict({k: torch.from_numpy(v) for k, v in initial_head.items()})
    opt = torch.optim.Adam([*net.parameters(), *linear.parameters()], lr=LR)

    def logits(x, lengths):
        packed = rnn.pack_padded_sequence(
            torch.from_numpy(x), torch.from_numpy(lengths), enforce_sorted=False
        )
        output, _ = rnn.pad_packed_sequence(net(packed)[0], total_length=len(x))
        weights = torch.from_numpy(mean_weights(lengths, len(x)))
        return linear((output * weights).sum(dim=0))

    def train_epoch(epoch):
        losses = []
        for x, lengths, labels in batches(epoch):
            loss = F.cross_entropy(logits(x, lengths), torch.from_numpy(labels))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    def predict(x, lengths):
        with torch.no_grad():
            return logits(x, lengths).argmax(dim=1).numpy()

    return train_epoch, predict


# %%
# Training both
# -------------
# Both engines get the same number of threads (restored afterwards), and their epochs
# alternate (cygru's first, PyTorch's first, cygru's second, ...), so that a change in
# the machine's load while the example runs falls on both alike. An epoch's time covers
# everything its steps do: slicing the batch, the forward and backward passes, the
# pooling, the loss and the optimiser. The first epoch also pays for starting threads, so
# the medians over the epochs are printed.

models = {"cygru": cygru_model()}
if torch is not None:
    models["PyTorch"] = torch_model()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
cygru.set_num_threads(THREADS)
losses = {name: [] for name in models}
times = {name: [] for name in models}
try:
    for epoch in range(EPOCHS):
        for name, (train_epoch, _) in models.items():
            start = time.perf_counter()
            losses[name] += train_epoch(epoch)
            times[name].append(time.perf_counter() - start)
    accuracy = {
        name: float(np.mean(predict(x_test, len_test) == y_test))
        for name, (_, predict) in models.items()
    }
finally:  # back to the defaults
    cygru.set_num_threads(None)
    if torch is not None:
        torch.set_num_threads(torch_threads)
losses = {name: np.array(values) for name, values in losses.items()}
times = {name: np.array(values) for name, values in times.items()}

print(f"{EPOCHS} epochs of {STEPS_PER_EPOCH} steps, {THREADS} thread(s) per engine, float64")
for name in models:
    per_epoch = np.median(times[name])
    print(
        f"{name:8} loss {losses[name][0]:.3f} (first batch) -> "
        f"{losses[name][-STEPS_PER_EPOCH:].mean():.3f} (mean of the last epoch), "
        f"test accuracy {accuracy[name]:.3f}; per epoch {1e3 * per_epoch:.0f} ms, "
        f"per step {1e3 * per_epoch / STEPS_PER_EPOCH:.1f} ms (medians)"
    )
loss_cy = losses["cygru"]
# the GRU has learned the task (chance is 1 in 4)
assert loss_cy[-STEPS_PER_EPOCH:].mean() < 0.4 * loss_cy[0] and accuracy["cygru"] > 0.8

if torch is not None:
    loss_pt = losses["PyTorch"]
    worst = float(np.max(np.abs(loss_cy - loss_pt) / loss_pt))
    ratio = np.median(times["PyTorch"]) / np.median(times["cygru"])
    print(f"largest relative difference of the two loss curves: {worst:.1e}")
    print(f"time per epoch, PyTorch / cygru: {ratio:.2f}")
    # the same computation: the curves coincide, and so do the test predictions
    assert worst < 1e-6, worst
    assert accuracy["cygru"] == accuracy["PyTorch"], accuracy
else:
    print("PyTorch: not installed, not run")

# %%
# Loss curves and time per epoch
# ------------------------------
# Left: the training loss of every mini-batch, for both engines. In float64 the two curves
# lie on each other. Right: the time of each epoch, for each engine, as measured on the
# machine that built this page (the printed output above gives the medians). The ratio
# depends on the machine, the dtype and the shapes; the :doc:`../performance` page has
# the benchmarks, float32 included.

fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
steps = np.arange(1, len(loss_cy) + 1)
ax.plot(steps, loss_cy, color="C0", lw=2.5, label="cygru")
if torch is not None:
    ax.plot(steps, loss_pt, color="C1", lw=1, ls="--", label="PyTorch")
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("cross-entropy (training batch)")
ax.set_title("Training loss, float64")
ax.legend()

epochs = np.arange(1, EPOCHS + 1)
for k, (name, color) in enumerate(zip(models, ("C0", "C1"))):
    offset = (k - 0.5 * (len(models) - 1)) * 0.38
    ax_t.bar(epochs + offset, times[name], 0.38, color=color, label=name)
ax_t.set_xticks(epochs)
ax_t.set_xlabel("epoch")
ax_t.set_ylabel("seconds")
ax_t.set_title(f"Time per epoch, {THREADS} thread(s)")
ax_t.legend()
fig.tight_layout()

# %%
# How far apart the curves are
# ----------------------------
# The relative difference of the two losses at every step. The two engines add the same
# numbers in different orders, so they differ by rounding from the first step on; the
# training carries these differences along and its nonlinear updates make them grow,
# steadily, step after step, yet over this run they stay many orders of magnitude below
# anything visible in the curves. The example asserts that they stay below 1e-6, so a change that made cygru's
# gradients (or its optimiser) differ from PyTorch's would fail the documentation build.

if torch is not None:
    rel = np.abs(loss_cy - loss_pt) / loss_pt
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.semilogy(steps, np.maximum(rel, np.finfo(np.float64).eps / 10), color="C2")
    ax.axhline(np.finfo(np.float64).eps, color="k", ls=":", lw=1, label="float64 epsilon")
    ax.axhline(1e-6, color="C3", ls="--", lw=1, label="the example's bound")
    ax.set_xlabel("training step")
    ax.set_ylabel("|cygru - PyTorch| / PyTorch")
    ax.set_title("Relative difference of the training losses")
    ax.legend(fontsize=8)
    fig.tight_layout()

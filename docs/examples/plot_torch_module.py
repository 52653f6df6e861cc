"""
Training with PyTorch: ``cygru.torch.GRU`` beside ``torch.nn.GRU``
==================================================================

A bidirectional GRU reads sequences of 8 to 40 noisy steps and says whether the hidden
signal in them rises, falls or stays flat. The model is ordinary PyTorch: packed
sequences (``pack_sequence``), the GRU, a ``Linear`` head on the final states of the two
directions, ``F.cross_entropy`` and ``torch.optim.Adam``. It is built twice, once with
``torch.nn.GRU`` and once with :class:`cygru.torch.GRU` (the only line that differs), from
the same initial weights, and trained on the same batches in the same order with the same
number of threads. The loss curves are drawn side by side, and the time per epoch of each
is measured and printed.

This example needs PyTorch (``pip install torch``); without it, it says so and stops.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch.nn.utils.rnn import pack_sequence

    import cygru
    import cygru.torch
except ImportError:
    torch = None
    print("PyTorch is not installed: this example needs it.")

HIDDEN, CLASSES, FEATURES = 64, 3, 4
BATCH, STEPS_PER_EPOCH, EPOCHS, THREADS = 32, 16, 3, 1

# %%
# The data and the model
# ----------------------
# Each sequence carries a trend (rising, falling or flat) in its first feature, under
# noise in all four; lengths vary from 8 to 40 steps.


def make_batch(rng):
    labels = rng.integers(0, CLASSES, BATCH)
    seqs = []
    for label in labels:
        n = int(rng.integers(8, 41))
        x = rng.standard_normal((n, FEATURES)).astype(np.float32)
        x[:, 0] += (label - 1) * np.linspace(-1.0, 1.0, n, dtype=np.float32) * 1.5
        seqs.append(torch.from_numpy(x))
    return seqs, torch.from_numpy(labels)


class Classifier(torch.nn.Module if torch is not None else object):
    def __init__(self, gru_class):
        super().__init__()
        self.gru = gru_class(FEATURES, HIDDEN, bidirectional=True)
        self.head = torch.nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, seqs):
        _, h_n = self.gru(pack_sequence(seqs, enforce_sorted=False))
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1))


# %%
# Training both
# -------------
# The same seed gives both models the same batches; their weights start equal.


def train(model, seed=0):
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses, epoch_seconds = [], []
    for _ in range(EPOCHS):
        batches = [make_batch(rng) for _ in range(STEPS_PER_EPOCH)]
        t0 = time.perf_counter()
        for seqs, labels in batches:
            opt.zero_grad()
            loss = F.cross_entropy(model(seqs), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        epoch_seconds.append(time.perf_counter() - t0)
    return np.array(losses), np.array(epoch_seconds)


if torch is not None:
    torch.set_num_threads(THREADS)
    cygru.set_num_threads(THREADS)
    torch.manual_seed(0)
    ours = Classifier(cygru.torch.GRU)
    theirs = Classifier(torch.nn.GRU)
    theirs.load_state_dict(ours.state_dict())
    loss_ours, sec_ours = train(ours)
    loss_theirs, sec_theirs = train(theirs)
    gap = float(np.max(np.abs(loss_ours - loss_theirs)))
    print(f"largest difference between the loss curves (float32): {gap:.2e}")
    for name, losses, sec in (
        ("cygru.torch.GRU", loss_ours, sec_ours),
        ("torch.nn.GRU", loss_theirs, sec_theirs),
    ):
        print(
            f"{name:16s} loss {losses[0]:.3f} -> {losses[-STEPS_PER_EPOCH:].mean():.3f} "
            f"(first batch -> mean of the last epoch); per epoch {1e3 * np.median(sec):.0f} ms "
            f"(median of {EPOCHS})"
        )
    assert gap < 1e-2, gap  # float32 rounding only: the same computation
    assert loss_ours[-STEPS_PER_EPOCH:].mean() < loss_ours[0]

    # %%
    # The loss curves and the time per epoch
    # --------------------------------------
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(loss_theirs, label="torch.nn.GRU", lw=3, alpha=0.5)
    ax1.plot(loss_ours, label="cygru.torch.GRU", lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ms = [1e3 * np.median(sec_theirs), 1e3 * np.median(sec_ours)]
    ax2.bar(["torch.nn.GRU", "cygru.torch.GRU"], ms)
    ax2.set_ylabel(f"ms per epoch ({THREADS} thread)")
    fig.tight_layout()
    plt.show()

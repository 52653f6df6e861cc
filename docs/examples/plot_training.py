"""
Training a GRU on a toy task
============================

A GRU learns to output, at every step, the number it read two steps earlier — a task that
needs memory, so a feed-forward network cannot solve it. The model is a :class:`cygru.GRU`
with a linear read-out; the gradients come from ``vjp`` and the optimiser is
:class:`cygru.optim.Adam`, which updates the GRU's parameters and the read-out's plain arrays
in place. Both GRU variants (``reset_after=True`` and ``False``) are trained with the
same data and the same initial weights, and their loss curves are plotted.
"""

import matplotlib.pyplot as plt
import numpy as np

import cygru

HIDDEN, SEQ_LEN, BATCH, STEPS, DELAY = 16, 20, 32, 600, 2


def make_batch(rng, batch=BATCH):
    """Inputs (seq_len, batch, 1) and targets: the input DELAY steps earlier (0 before)."""
    x = rng.standard_normal((SEQ_LEN, batch, 1))
    y = np.zeros_like(x)
    y[DELAY:] = x[:-DELAY]
    return x, y


# %%
# One training run
# ----------------
# ``backward(d_output, None)`` gets the gradient of the mean squared error with respect to
# the GRU's ``output`` (through the read-out) and adds the parameter gradients into
# ``gru.grads``; ``opt.zero_grad()`` resets them before every step.
#
# The optimiser, :class:`cygru.optim.Adam`, takes the module (its live parameters,
# updated from ``gru.grads``) and a dict of the read-out's plain arrays, whose gradients
# are passed to ``step``. It computes what ``torch.optim.Adam`` computes, step for step.


def train(reset_after):
    rng = np.random.default_rng(0)  # same data for both variants
    gru = cygru.GRU(1, HIDDEN, reset_after=reset_after, dtype=np.float64, seed=0)
    params = {"w_out": rng.uniform(-0.25, 0.25, (HIDDEN, 1)), "b_out": np.zeros(1)}
    opt = cygru.optim.Adam([gru, params], lr=0.01)
    x_test, y_test = make_batch(np.random.default_rng(1), batch=256)

    train_loss, test_loss = [], []
    for step in range(STEPS):
        x, y = make_batch(rng)
        (output, _), backward = gru.vjp(x)
        err = output @ params["w_out"] + params["b_out"] - y
        train_loss.append(float(np.mean(err**2)))
        d_pred = 2 * err / err.size
        opt.zero_grad()  # the GRU's accumulated grads
        backward(d_pred @ params["w_out"].T, None)
        opt.step(
            {
                "w_out": output.reshape(-1, HIDDEN).T @ d_pred.reshape(-1, 1),
                "b_out": d_pred.sum(axis=(0, 1)),
            }
        )
        if step % 20 == 0 or step == STEPS - 1:
            out_test, _ = gru(x_test)  # a plain call: inference
            pred = out_test @ params["w_out"] + params["b_out"]
            test_loss.append((step, float(np.mean((pred - y_test) ** 2))))
    return gru, params, np.array(train_loss), np.array(test_loss)


runs = {ra: train(ra) for ra in (True, False)}
for ra, (_, _, _, test_loss) in runs.items():
    print(f"reset_after={ra!s:5}: test loss {test_loss[0, 1]:.3f} -> {test_loss[-1, 1]:.4f}")
    assert test_loss[-1, 1] < 0.05 * test_loss[0, 1]

# %%
# Loss curves
# -----------

fig, ax = plt.subplots(figsize=(7, 4))
for (ra, (_, _, train_loss, test_loss)), color in zip(runs.items(), ("C0", "C1")):
    ax.plot(train_loss, color=color, alpha=0.3, lw=0.8)
    ax.plot(test_loss[:, 0], test_loss[:, 1], color=color, lw=2, label=f"reset_after={ra} (test)")
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("mean squared error")
ax.set_title(f"Recall the input {DELAY} steps back (faint: training batches)")
ax.legend()
fig.tight_layout()

# %%
# What the trained model does
# ---------------------------
# One test sequence: the target is the input shifted by two steps, and the prediction
# follows it.

gru, params, *_ = runs[True]
x, y = make_batch(np.random.default_rng(2), batch=1)
output, _ = gru(x)
pred = output @ params["w_out"] + params["b_out"]

fig, ax = plt.subplots(figsize=(7, 3))
t = np.arange(SEQ_LEN)
ax.plot(t, x[:, 0, 0], "o-", color="0.6", label="input")
ax.plot(t, y[:, 0, 0], "s", mfc="none", ms=9, color="k", label="target (input 2 steps back)")
ax.plot(t, pred[:, 0, 0], "x-", color="C3", label="prediction")
ax.set_xlabel("time step")
ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 1.25))
fig.tight_layout()

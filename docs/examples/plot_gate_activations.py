"""
Gate activations over time
==========================

A GRU decides at every step how much of its state to keep: the **update gate** ``z``
(1 = keep the old state, 0 = take the new candidate) and the **reset gate** ``r`` (how much
of the old state enters the candidate). This example trains a small GRU on a
*sample-and-hold* task and then plots both gates along a test sequence.

cygru does not return its gates, but they follow from the module's weights and the states
in ``output``: the state before step ``t`` is ``output[t-1]`` (zeros before the first step),
so the gates can be recomputed with NumPy. Recomputing the next state from them reproduces
cygru's ``output`` — which the example asserts — so the plotted gates are the ones cygru
used.
"""

import matplotlib.pyplot as plt
import numpy as np

import cygru

HIDDEN, SEQ_LEN = 8, 60
rng = np.random.default_rng(0)


def make_batch(batch=32, seq_len=SEQ_LEN):
    """Spikes at random times; the target holds the amplitude of the latest spike.

    Two input features: a spike indicator and the spike's amplitude.
    """
    spikes = rng.random((seq_len, batch)) < 0.1
    amplitude = rng.uniform(-1, 1, (seq_len, batch)) * spikes
    x = np.stack([spikes.astype(float), amplitude], axis=-1)
    y = np.zeros((seq_len, batch, 1))
    held = np.zeros(batch)
    for t in range(seq_len):
        held = np.where(spikes[t], amplitude[t], held)
        y[t, :, 0] = held
    return x, y


# %%
# Training
# --------
# A one-layer GRU with a linear read-out, trained with Adam on gradients from ``vjp``
# (see :doc:`plot_training` for the same loop explained).

gru = cygru.GRU(2, HIDDEN, dtype=np.float64, seed=0)
params = dict(gru.named_parameters())  # live arrays: updated in place
params["w_out"] = rng.uniform(-0.3, 0.3, (HIDDEN, 1))
params["b_out"] = np.zeros(1)
m = {k: np.zeros_like(p) for k, p in params.items()}
v = {k: np.zeros_like(p) for k, p in params.items()}

for step in range(1, 1001):
    x, y = make_batch()
    (output, _), backward = gru.vjp(x)
    err = output @ params["w_out"] + params["b_out"] - y
    d_pred = 2 * err / err.size
    gru.zero_grad()
    backward(d_pred @ params["w_out"].T, None)
    grads = dict(gru.grads)
    grads["w_out"] = output.reshape(-1, HIDDEN).T @ d_pred.reshape(-1, 1)
    grads["b_out"] = d_pred.sum(axis=(0, 1))
    for k, p in params.items():  # Adam
        m[k] = 0.9 * m[k] + 0.1 * grads[k]
        v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
        p -= 0.01 * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)

x_test, y_test = make_batch(batch=256)
out_test, _ = gru(x_test)
test_mse = float(np.mean((out_test @ params["w_out"] + params["b_out"] - y_test) ** 2))
print(f"test mean squared error: {test_mse:.5f}")

# %%
# Recomputing the gates
# ---------------------
# Gate order r, z, n (PyTorch's): rows ``0:H``, ``H:2H`` and ``2H:3H`` of ``weight_ih_l0``
# and ``weight_hh_l0``. This is the default variant, ``reset_after=True``.

x, y = make_batch(batch=1)
output, h_n = gru(x)

H = HIDDEN
W_ih, W_hh = gru.weight_ih_l0, gru.weight_hh_l0
b_ih, b_hh = gru.bias_ih_l0, gru.bias_hh_l0
h_prev = np.concatenate([np.zeros((1, 1, H)), output[:-1]])  # state before each step


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


gi = x @ W_ih.T + b_ih  # (T, 1, 3H): the input's contribution, all steps
gh = h_prev @ W_hh.T + b_hh  # (T, 1, 3H): the previous state's contribution
r = sigmoid(gi[..., :H] + gh[..., :H])
z = sigmoid(gi[..., H : 2 * H] + gh[..., H : 2 * H])
n = np.tanh(gi[..., 2 * H :] + r * gh[..., 2 * H :])
h = (1 - z) * n + z * h_prev

err = np.abs(h - output).max()
print(f"recomputed states vs cygru's output: max |difference| = {err:.1e}")
assert err < 1e-12, err
assert np.array_equal(output[-1], h_n[0])

# %%
# The gates along a test sequence
# -------------------------------
# At a spike the update gate of most units drops (the state takes in the new amplitude);
# between spikes it returns to its resting level, which here is high for the units that
# carry the held value. The read-out tracks the target.

pred = output @ params["w_out"] + params["b_out"]
spike_times = np.flatnonzero(x[:, 0, 0])
t = np.arange(SEQ_LEN)

fig, axes = plt.subplots(
    3,
    1,
    figsize=(8, 7.5),
    sharex=True,
    layout="constrained",
    gridspec_kw={"height_ratios": [1.2, 1, 1]},
)
ax = axes[0]
ax.vlines(spike_times, 0, x[spike_times, 0, 1], color="0.6", lw=1.5)
ax.plot(spike_times, x[spike_times, 0, 1], "o", color="0.4", ms=5, label="input spikes")
ax.step(t, y[:, 0, 0], where="post", color="k", lw=1, label="target (held amplitude)")
ax.plot(t, pred[:, 0, 0], ".", color="C3", ms=4, label="prediction")
ax.axhline(0, color="0.85", lw=0.8, zorder=0)
ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
ax.set_ylabel("value")

for ax, gate, name in ((axes[1], z, "update gate z"), (axes[2], r, "reset gate r")):
    im = ax.imshow(
        gate[:, 0].T,
        aspect="auto",
        cmap="viridis",
        vmin=0,
        vmax=1,
        extent=(-0.5, SEQ_LEN - 0.5, H - 0.5, -0.5),
        interpolation="nearest",
    )
    for s in spike_times:
        ax.axvline(s, color="w", lw=0.6, ls=":")
    ax.set_ylabel(f"{name}\nunit")
fig.colorbar(im, ax=axes.tolist(), pad=0.01, shrink=0.6, label="gate value")
axes[-1].set_xlabel("time step")

# %%
# Averaged over units, the update gate dips at every spike:

fig, ax = plt.subplots(figsize=(8, 2.5), layout="constrained")
ax.plot(t, z[:, 0].mean(axis=-1), color="C0", label="mean z")
ax.plot(t, r[:, 0].mean(axis=-1), color="C2", label="mean r")
for s in spike_times:
    ax.axvline(s, color="0.6", lw=0.8, ls=":")
ax.set_ylim(0, 1)
ax.set_xlabel("time step")
ax.legend(fontsize=8)

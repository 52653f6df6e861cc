"""Train a cygru GRU on a toy task with nothing but NumPy.

The task: read a noisy sine wave (random frequency and phase per sequence) one value
at a time and predict the next clean value. The model is a one-layer ``cygru.GRU``
followed by a linear readout; the optimiser is ``cygru.optim.Adam`` (PyTorch's Adam).
Gradients come from ``GRU.vjp``: the readout's gradient is computed by hand and its
gradient with respect to the GRU's output is passed to ``backward``, which adds the
GRU's parameter gradients into ``gru.grads``.

Run it::

    python examples/train_toy.py

It prints the loss every 50 steps and the ratio of the first loss to the final one.
"""

import time

import numpy as np

import cygru


def make_batch(rng, batch, steps, noise=0.05):
    """x: noisy sine (T, B, 1); y: the next clean value at every step (T, B, 1)."""
    freq = rng.uniform(0.15, 0.45, size=batch)
    phase = rng.uniform(0.0, 2 * np.pi, size=batch)
    t = np.arange(steps + 1)[:, None]
    clean = np.sin(freq * t + phase)  # (T+1, B)
    x = clean[:-1] + noise * rng.standard_normal((steps, batch))
    y = clean[1:]
    return x[..., None].astype(np.float32), y[..., None].astype(np.float32)


def main(
    steps=300, seed=0, hidden_size=24, batch=32, seq_len=40, lr=1e-2, print_every=50, verbose=False
):
    """Train and return the list of training losses (one per step)."""
    rng = np.random.default_rng(seed)
    gru = cygru.GRU(1, hidden_size, seed=seed)  # float32
    k = 1.0 / np.sqrt(hidden_size)
    readout = {
        "W": rng.uniform(-k, k, (1, hidden_size)).astype(np.float32),
        "b": np.zeros(1, np.float32),
    }
    # the GRU's parameters (from gru.grads) and the readout's arrays (from the gradients
    # given to step), all updated in place
    opt = cygru.optim.Adam([gru, readout], lr=lr)

    history = []
    for step in range(steps):
        x, y = make_batch(rng, batch, seq_len)
        gru.zero_grad()
        (out, _), backward = gru.vjp(x)  # out: (T, B, H)
        pred = out @ readout["W"].T + readout["b"]  # (T, B, 1)
        err = pred - y
        loss = float(np.mean(err**2))
        history.append(loss)
        # backpropagate the mean squared error through the readout ...
        d_pred = (2.0 / err.size) * err  # (T, B, 1)
        grads = {"W": np.einsum("tbo,tbh->oh", d_pred, out), "b": d_pred.sum(axis=(0, 1))}
        d_out = d_pred @ readout["W"]  # (T, B, H)
        # ... and through the GRU (adds into gru.grads)
        backward(d_out, None)
        opt.step(grads)
        if verbose and (step % print_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {loss:.5f}")
    return history


if __name__ == "__main__":
    t0 = time.perf_counter()
    losses = main(verbose=True)
    final = float(np.mean(losses[-10:]))
    print(
        f"first loss {losses[0]:.4f}, final loss (mean of the last 10) {final:.5f}: "
        f"fell {losses[0] / final:.1f}x in {time.perf_counter() - t0:.1f} s"
    )

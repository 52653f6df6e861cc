"""
PyTorch weights in, the same numbers out
========================================

A ``torch.nn.GRU`` is converted with :func:`cygru.from_torch` and both are run on the same
input, for several configurations: layers, directions, ``batch_first``, ``lengths``
(``pack_padded_sequence`` in PyTorch), float32 and float64. The largest differences of the
outputs, final states and input gradients are plotted; they are at the level of the
floating-point rounding of each dtype.

PyTorch is needed only to *run* this example (``pip install torch``); where it is missing,
the example says so and stops.
"""

import numpy as np

import cygru

try:
    import torch
except ImportError:
    torch = None
    print("PyTorch is not installed: this example needs it (pip install torch).")

# %%
# One comparison
# --------------
# The same input goes through both modules; for the gradients, the loss is
# ``sum(output * R)`` with a fixed random ``R``, so ``d_output = R``.


def compare(num_layers, bidirectional, batch_first, dtype, with_lengths, seed=0):
    torch.manual_seed(seed)
    T, B, I, H = 12, 4, 5, 8
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    net = torch.nn.GRU(
        I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first
    ).to(tdtype)
    gru = cygru.from_torch(net)
    rng = np.random.default_rng(seed)
    shape = (B, T, I) if batch_first else (T, B, I)
    x = rng.standard_normal(shape).astype(dtype)
    lengths = np.array([12, 7, 3, 10]) if with_lengths else None

    (output, h_n), backward = gru.vjp(x, lengths=lengths)
    R = rng.standard_normal(output.shape).astype(dtype)
    dx, _ = backward(R, None)

    x_t = torch.from_numpy(x).requires_grad_()
    if with_lengths:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False
        )
        out_p, t_h_n = net(packed)
        t_output, _ = torch.nn.utils.rnn.pad_packed_sequence(
            out_p, batch_first=batch_first, total_length=T
        )
    else:
        t_output, t_h_n = net(x_t)
    (t_output * torch.from_numpy(R)).sum().backward()

    def err(a, b):
        return float(np.abs(a - b.detach().numpy()).max())

    return err(output, t_output), err(h_n, t_h_n), err(dx, x_t.grad)


# %%
# All configurations
# ------------------

configs = [
    dict(num_layers=1, bidirectional=False, batch_first=False, with_lengths=False),
    dict(num_layers=2, bidirectional=False, batch_first=True, with_lengths=False),
    dict(num_layers=1, bidirectional=True, batch_first=False, with_lengths=False),
    dict(num_layers=3, bidirectional=True, batch_first=True, with_lengths=False),
    dict(num_layers=2, bidirectional=True, batch_first=False, with_lengths=True),
]


def label(c):
    parts = [f"L={c['num_layers']}", "bi" if c["bidirectional"] else "uni"]
    if c["batch_first"]:
        parts.append("batch_first")
    if c["with_lengths"]:
        parts.append("lengths")
    return " ".join(parts)


if torch is not None:
    results = {}
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for c in configs:
            errs = compare(dtype=dtype, **c)
            results[(np.dtype(dtype).name, label(c))] = errs
            assert max(errs) < tol, (dtype, c, errs)
    print(f"{'dtype':8} {'configuration':22} {'output':>9} {'h_n':>9} {'dx':>9}")
    for (dt, name), (e_out, e_h, e_dx) in results.items():
        print(f"{dt:8} {name:22} {e_out:9.1e} {e_h:9.1e} {e_dx:9.1e}")

# %%
# The differences, per configuration
# ----------------------------------
# The axes span four orders of magnitude around each dtype's machine epsilon; differences
# of exactly zero are drawn at the bottom.

if torch is not None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=False)
    names = [label(c) for c in configs]
    pos = np.arange(len(names))
    for ax, dt, eps in (
        (axes[0], "float32", np.finfo(np.float32).eps),
        (axes[1], "float64", np.finfo(np.float64).eps),
    ):
        for k, (what, color) in enumerate((("output", "C0"), ("h_n", "C1"), ("dx", "C2"))):
            vals = np.array([results[(dt, n)][k] for n in names])
            ax.bar(
                pos + (k - 1) * 0.27,
                np.maximum(vals, eps / 100),
                width=0.27,
                color=color,
                label=what,
            )
        ax.axhline(eps, color="k", ls=":", lw=1, label="machine epsilon")
        ax.set_yscale("log")
        ax.set_ylim(eps / 100, eps * 100)
        ax.set_ylabel("max |difference|")
        ax.set_xticks(pos, names, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{dt}: max |cygru - PyTorch|", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()

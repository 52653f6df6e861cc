"""
The layout of a bidirectional GRU's outputs
===========================================

For ``GRU(..., bidirectional=True)``, ``output[t]`` is the forward state at ``t``
concatenated with the backward state at ``t``, and ``h_n`` holds each direction's *final*
state. The forward direction finishes at the last step, the backward direction at the
*first* step, so

* ``output[-1, :, :H] == h_n[-2]`` (forward, last row of ``output``),
* ``output[0, :, H:] == h_n[-1]`` (backward, first row of ``output``),

bit for bit. This example checks both identities, then draws where each piece of ``h_n``
sits in ``output`` — without and with per-sequence ``lengths``.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, Rectangle

import cygru

T, B, I, H = 8, 3, 2, 4
gru = cygru.GRU(I, H, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
x = np.random.default_rng(0).standard_normal((T, B, I))
output, h_n = gru(x)
print("output", output.shape, " h_n", h_n.shape)

assert np.array_equal(output[-1, :, :H], h_n[-2])  # last layer, forward
assert np.array_equal(output[0, :, H:], h_n[-1])  # last layer, backward
assert not np.array_equal(output[-1, :, H:], h_n[-1])
by_layer = h_n.reshape(gru.num_layers, 2, B, H)  # (layer, direction, batch, H)
assert np.array_equal(by_layer[-1, 0], h_n[-2]) and np.array_equal(by_layer[-1, 1], h_n[-1])
print("output[-1, :, :H] == h_n[-2] and output[0, :, H:] == h_n[-1]: bit for bit")

# %%
# The figure
# ----------
# Left: ``output[:, 0, :]`` for sequence 0, time running downwards, forward features on the
# left of the dashed line and backward features on its right. Right: the last layer's rows
# of ``h_n``. The outlined cells are equal; the arrows show each direction's sense of time.


def draw(ax_out, ax_h, output, h_n, lengths=None, b=0, title=""):
    T = output.shape[0]
    vmax = np.abs(output[:, b]).max()
    ax_out.imshow(
        output[:, b], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest"
    )
    ax_out.axvline(H - 0.5, color="k", ls="--", lw=1)
    ax_out.set_xticks(
        [(H - 1) / 2, H + (H - 1) / 2], ["forward\noutput[..., :H]", "backward\noutput[..., H:]"]
    )
    ax_out.set_yticks(range(T))
    ax_out.set_ylabel("time step t")
    ax_out.set_title(title, fontsize=10)
    last = T - 1 if lengths is None else lengths[b] - 1
    ax_out.add_patch(Rectangle((-0.5, last - 0.5), H, 1, fill=False, ec="C2", lw=3))
    ax_out.add_patch(Rectangle((H - 0.5, -0.5), H, 1, fill=False, ec="C1", lw=3))
    if lengths is not None and lengths[b] < T:
        ax_out.axhspan(lengths[b] - 0.5, T - 0.5, color="0.9", alpha=0.6)
        ax_out.text(
            H - 0.5,
            (lengths[b] + T - 1) / 2,
            "zeros (t >= length)",
            ha="center",
            va="center",
            fontsize=9,
            bbox=dict(fc="w", ec="none"),
        )
    for x0, (y0, y1), color in (
        ((H - 1) / 2, (0.2, last - 0.2), "C2"),
        (H + (H - 1) / 2, (last - 0.2, 0.2), "C1"),
    ):
        ax_out.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x0, y1),
                arrowstyle="-|>",
                mutation_scale=15,
                color=color,
                lw=2,
                alpha=0.8,
            )
        )
    rows = np.stack([h_n[-2, b], h_n[-1, b]])
    ax_h.imshow(rows, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax_h.set_yticks([0, 1], ["h_n[-2]\n(forward)", "h_n[-1]\n(backward)"])
    ax_h.yaxis.tick_right()
    ax_h.set_xticks([])
    ax_h.add_patch(Rectangle((-0.5, -0.5), H, 1, fill=False, ec="C2", lw=3))
    ax_h.add_patch(Rectangle((-0.5, 0.5), H, 1, fill=False, ec="C1", lw=3))


fig, (ax_out, ax_h) = plt.subplots(1, 2, figsize=(7, 4.5), gridspec_kw={"width_ratios": [2, 1]})
draw(ax_out, ax_h, output, h_n, title="output[:, 0, :]  (last layer)")
fig.tight_layout()

# %%
# With ``lengths``
# ----------------
# A sequence of length 5 in a batch padded to 8 steps: its outputs from ``t = 5`` on are
# zero, its forward direction ends at ``t = 4``, and its backward direction *starts* at
# ``t = 4`` and still ends at ``t = 0``.

lengths = np.array([5, 8, 3])
output_l, h_n_l = gru(x, lengths=lengths)
b = 0
assert np.array_equal(output_l[lengths[b] - 1, b, :H], h_n_l[-2, b])
assert np.array_equal(output_l[0, b, H:], h_n_l[-1, b])
assert (output_l[lengths[b] :, b] == 0).all()
alone, alone_h_n = gru(x[: lengths[b], b])  # the same sequence, unpadded
assert np.allclose(output_l[: lengths[b], b], alone, rtol=0, atol=1e-12)
print("lengths", lengths, "-> sequence 0 equals the unpadded sequence run alone")

fig, (ax_out, ax_h) = plt.subplots(1, 2, figsize=(7, 4.5), gridspec_kw={"width_ratios": [2, 1]})
draw(
    ax_out,
    ax_h,
    output_l,
    h_n_l,
    lengths=lengths,
    b=b,
    title=f"output[:, 0, :] with lengths={lengths.tolist()}",
)
fig.tight_layout()

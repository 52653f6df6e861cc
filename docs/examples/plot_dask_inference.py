"""
Inference over more data than a worker's memory
===============================================

A GRU runs over a Dask array of sequences that is larger than the memory limit of each of
the two workers that process it. The sequences are generated on the workers, chunk by
chunk (in a real job they would be read from files), so neither this process nor any
worker ever holds the whole array: each task holds one chunk of sequences, its output and
the model, and only a small per-sequence summary (the final state) comes back.
"""

import matplotlib.pyplot as plt
import numpy as np

import dask.array as da
import distributed

import cygru
import cygru.dask

SEQ_LEN, BATCH, FEATURES, HIDDEN, CHUNK = 100, 36_000, 32, 16, 2_000
MEMORY_LIMIT = 400 * 2**20  # bytes, per worker process

gru = cygru.GRU(FEATURES, HIDDEN, seed=0)  # float32
x = da.random.default_rng(0).standard_normal(
    (SEQ_LEN, BATCH, FEATURES), dtype=np.float32, chunks=(SEQ_LEN, CHUNK, FEATURES)
)
if __name__ == "__main__":  # (the workers import this file: see below)
    print(
        f"x: {x.nbytes / 2**20:.0f} MiB in {x.numblocks[1]} chunks of "
        f"{x.blocks[0, 0, 0].nbytes / 2**20:.1f} MiB; each worker's memory limit: "
        f"{MEMORY_LIMIT / 2**20:.0f} MiB"
    )

# %%
# Two workers with a small memory limit
# -------------------------------------
# ``cygru.dask.forward`` returns lazy Dask arrays; reducing ``h_n`` to a per-sequence norm
# keeps what comes back small (``BATCH`` numbers), and Dask frees every chunk of ``x`` and
# ``output`` as soon as its summary is computed.


def peak_memory():
    """The peak resident memory of the process it runs in, in bytes (Linux).

    VmHWM, the high-water mark of the process's own memory image: not ``ru_maxrss``,
    which Linux carries across ``exec`` and so also counts the parent process that a
    worker was forked from before it started Python afresh ("spawn")."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# The worker processes import this file (Python's "spawn"): the guards keep them from
# running the example themselves.
if __name__ == "__main__":
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=MEMORY_LIMIT,
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        output, h_n = cygru.dask.forward(gru, x)
        final_norm = da.linalg.norm(h_n[0], axis=1)  # (BATCH,): one number a sequence
        norms = final_norm.compute()
        peak = client.run(peak_memory)
        # a check: the first chunk, computed again here directly, gives the same numbers
        x0 = x[:, :CHUNK].compute()
    print(
        f"{norms.size} sequences; peak memory of the workers: "
        + ", ".join(f"{m / 2**20:.0f} MiB" for m in peak.values())
    )
    assert norms.shape == (BATCH,)
    assert all(m < MEMORY_LIMIT for m in peak.values())
    direct = np.linalg.norm(gru(x0)[1][0], axis=1)
    same = bool(np.array_equal(norms[:CHUNK], direct))
    print("first chunk bitwise equal to a direct call:", same)
    assert same


# %%
# The final states
# ----------------
# The distribution of the final state's norm over all sequences.

if __name__ == "__main__":
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(norms, bins=80, color="C0")
    ax.set_xlabel("norm of the final hidden state")
    ax.set_ylabel("sequences")
    ax.set_title(
        f"{BATCH} sequences, {x.nbytes / 2**20:.0f} MiB of input, "
        f"workers limited to {MEMORY_LIMIT / 2**20:.0f} MiB"
    )
    fig.tight_layout()

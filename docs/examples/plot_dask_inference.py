"""
Inference over a store larger than the workers' memory
======================================================

A GRU runs over a NumPy memmap store of sequences (a ``.npy`` file on disk) that is larger
than the memory limit of each of the two workers that process it, and its outputs are
written to a second store with ``dask.array.store``. Neither this process nor any worker
ever holds the whole input or the whole output: each task reads one chunk of sequences
from the file, runs the GRU on it (one task per chunk, see :func:`cygru.dask.forward`),
and writes its output back to disk. The peak memory of each worker is reported at the
end, below its limit.
"""

import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import dask.array as da
import distributed

import cygru
import cygru.dask

SEQ_LEN, BATCH, FEATURES, HIDDEN, CHUNK = 100, 40_000, 32, 16, 1_000
MEMORY_LIMIT = 256 * 2**20  # bytes, per worker process

gru = cygru.GRU(FEATURES, HIDDEN, batch_first=True, seed=0)  # float32, (B, T, I)

# %%
# The stores
# ----------
# ``x`` is written to disk block by block, so that this process never holds it whole
# either (in a real job the file would already be there). It is stored batch first, so
# that a chunk of sequences is one contiguous range of the file.


class MemmapStore:
    """A ``.npy`` file opened as a NumPy memmap at each read or write and closed after it.

    What Dask pickles into a task is this small object (the file's path, shape and dtype),
    never the data; a worker maps the file only while it copies a chunk in or out, so the
    mapped pages do not stay in its memory."""

    def __init__(self, path, shape=None, dtype=np.float32):
        if shape is not None:  # create the file (its pages are allocated on first write)
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
        mm = np.load(path, mmap_mode="r")
        self.path, self.shape, self.dtype, self.ndim = path, mm.shape, mm.dtype, mm.ndim
        del mm

    def __getitem__(self, index):
        mm = np.load(self.path, mmap_mode="r")
        try:
            return np.array(mm[index])  # a copy in memory; the mapping is closed
        finally:
            del mm

    def __setitem__(self, index, value):
        mm = np.load(self.path, mmap_mode="r+")
        try:
            mm[index] = value
            mm.flush()
        finally:
            del mm


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
    tmp = tempfile.TemporaryDirectory()
    x_store = MemmapStore(os.path.join(tmp.name, "x.npy"), (BATCH, SEQ_LEN, FEATURES))
    rng = np.random.default_rng(0)
    for start in range(0, BATCH, 5_000):
        rows = slice(start, min(start + 5_000, BATCH))
        x_store[rows] = rng.standard_normal(
            (rows.stop - rows.start, SEQ_LEN, FEATURES), dtype=np.float32
        )
    out_store = MemmapStore(os.path.join(tmp.name, "output.npy"), (BATCH, SEQ_LEN, HIDDEN))
    hn_store = MemmapStore(os.path.join(tmp.name, "h_n.npy"), (1, BATCH, HIDDEN))
    x = da.from_array(x_store, chunks=(CHUNK, SEQ_LEN, FEATURES))
    x_bytes = BATCH * SEQ_LEN * FEATURES * 4
    print(
        f"x: {x_bytes / 2**20:.0f} MiB on disk in {x.numblocks[0]} chunks of "
        f"{x_bytes / x.numblocks[0] / 2**20:.1f} MiB; output: "
        f"{BATCH * SEQ_LEN * HIDDEN * 4 / 2**20:.0f} MiB; each worker's memory limit: "
        f"{MEMORY_LIMIT / 2**20:.0f} MiB"
    )
    assert x_bytes > MEMORY_LIMIT

# %%
# Two workers with a small memory limit
# -------------------------------------
# ``cygru.dask.forward`` returns lazy Dask arrays; ``dask.array.store`` writes each
# chunk's output and final state to the stores as soon as the chunk is computed, and Dask
# frees the chunk's input and output then.

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
        t0 = time.perf_counter()
        da.store([output, h_n], [out_store, hn_store], lock=False)
        seconds = time.perf_counter() - t0
        peak = client.run(peak_memory)
    print(
        f"{BATCH} sequences in {seconds:.1f} s; peak memory of the workers: "
        + ", ".join(f"{m / 2**20:.0f} MiB" for m in peak.values())
        + f" (limit {MEMORY_LIMIT / 2**20:.0f} MiB)"
    )
    assert len(peak) == 2 and all(m < MEMORY_LIMIT for m in peak.values())
    # a check: two chunks, computed again here directly, give the same bits
    for rows in (slice(0, CHUNK), slice(BATCH - CHUNK, BATCH)):
        ref_out, ref_hn = gru(x_store[rows])
        same = np.array_equal(out_store[rows], ref_out) and np.array_equal(
            hn_store[:, rows], ref_hn
        )
        print(f"sequences {rows.start}-{rows.stop}: bitwise equal to a direct call: {same}")
        assert same


# %%
# The final states
# ----------------
# The distribution of the final state's norm over all sequences, read back from the
# store (``BATCH`` x ``HIDDEN`` numbers: small).

if __name__ == "__main__":
    norms = np.linalg.norm(hn_store[0], axis=1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(norms, bins=80, color="C0")
    ax.set_xlabel("norm of the final hidden state")
    ax.set_ylabel("sequences")
    ax.set_title(
        f"{BATCH} sequences, {x_bytes / 2**20:.0f} MiB on disk, "
        f"workers limited to {MEMORY_LIMIT / 2**20:.0f} MiB"
    )
    fig.tight_layout()
    tmp.cleanup()

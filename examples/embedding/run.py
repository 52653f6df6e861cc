"""Run the example extension (build it first: ``python setup.py build_ext --inplace``).

A model is made (or loaded: ``cygru.from_torch``, ``load_state_dict``, ...) in
Python, its weights exported with ``cygru.capi.export_weights``, and then run from
C, without the GIL, by the ``stream`` extension:

1. a GRU cell over a stream of frames, block by block, in 4 threads at once (four
   independent streams, each with its own state and workspace);
2. a 2-layer bidirectional GRU over a batch of sequences of different lengths.

Each result is compared with the Python API.
"""

import threading
import time

import numpy as np

import cygru
import cygru.capi
import stream

rng = np.random.default_rng(0)

# -- 1. streaming: four streams of 16 kHz "audio features", 64 per frame ---------------------
cell = cygru.GRUCell(64, 128, seed=0)
weights = cygru.capi.export_weights(cell)  # a snapshot; keep it alive while used
print(weights)

n_streams, n_blocks, block = 4, 50, 160  # 50 blocks of 160 frames per stream
frames = rng.standard_normal((n_streams, n_blocks * block, 1, 64)).astype(np.float32)
final = [None] * n_streams


def consume(i):
    s = stream.CellStream(weights, batch=1)  # its own state and workspace
    for k in range(n_blocks):  # blocks arrive; each runs without the GIL
        final[i] = s.push_block(frames[i, k * block : (k + 1) * block])


t0 = time.perf_counter()
threads = [threading.Thread(target=consume, args=(i,)) for i in range(n_streams)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - t0
steps = n_streams * n_blocks * block
print(
    f"streamed {steps} frames in {elapsed * 1e3:.0f} ms "
    f"({elapsed / steps * 1e6:.2f} us per frame, {n_streams} threads)"
)

h = None  # the same with the Python API, stream 0
for x_t in frames[0]:
    h = cell(x_t, h)
print("stream 0, max |C - Python|:", float(np.abs(final[0] - h).max()))

# -- 2. a whole sequence model -----------------------------------------------------------------
gru = cygru.GRU(16, 32, num_layers=2, bidirectional=True, seed=1)
w = cygru.capi.export_weights(gru)
x = rng.standard_normal((25, 4, 16)).astype(np.float32)  # (T, B, I), time-major
lengths = np.array([25, 10, 17, 3])
output, h_n = stream.run_sequence(w, x, lengths=lengths)
ref_output, ref_h_n = gru(x, lengths=lengths)
print(
    "sequence: output",
    output.shape,
    "h_n",
    h_n.shape,
    "max |C - Python|:",
    float(max(np.abs(output - ref_output).max(), np.abs(h_n - ref_h_n).max())),
)

try:
    stream.run_sequence(w, x, lengths=np.array([25, 10, 17, 30]))
except ValueError as exc:  # the C API's status, as an exception
    print("a length of 30 > T:", exc)

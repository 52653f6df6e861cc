"""Run the plain-C example extension (build it first: ``python setup.py build_ext --inplace``).

A model is made in Python (or loaded: ``cygru.from_torch``, ``load_state_dict``, ...),
its weights exported with ``cygru.capi.export_weights``, and run by ``gru_c``, a C
extension that calls ``cygru_model_forward_f32`` with the GIL released. The result is
compared with the Python API.
"""

import numpy as np

import cygru
import cygru.capi
import gru_c

T, B, I, H = 9, 3, 5, 8
gru = cygru.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
weights = cygru.capi.export_weights(gru)  # a snapshot; keep it alive while used
model = weights.capsule()  # a const cygru_model_f32* for C

x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
lengths = np.array([9, 4, 6], dtype=np.intc)
output = np.empty((T, B, 2 * H), np.float32)
h_n = np.empty((4, B, H), np.float32)
gru_c.forward(model, x, output, h_n, lengths)  # cygru_model_forward_f32

ref_output, ref_h_n = gru(x, lengths=lengths)
print("output", output.shape, "max |C - Python|:", float(np.abs(output - ref_output).max()))
print("h_n", h_n.shape, "max |C - Python|:", float(np.abs(h_n - ref_h_n).max()))

try:  # a status becomes an exception
    gru_c.forward(model, x, output, h_n, np.array([10, 4, 6], dtype=np.intc))
except ValueError as e:
    print("a length of 10 > T:", e)

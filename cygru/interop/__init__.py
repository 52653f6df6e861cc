"""Conversion between cygru modules and other frameworks' GRUs.

Four entry points, one module per framework:

* :func:`from_torch` (``_torch.py``) -- a ``torch.nn.GRU`` / ``torch.nn.GRUCell`` to the equal
  cygru module;
* :func:`from_keras` (``_keras.py``) -- a Keras ``GRU``, ``Bidirectional(GRU)`` or a model's
  stack of them (or one layer's three weight arrays) to a cygru ``GRU``; with it
  :func:`lengths_from_mask` and :func:`repeat_last_state` for Keras' right-padding masks;
* :func:`from_onnx` (``_onnx_import.py``) -- an ONNX graph's stack of ``GRU`` nodes (or one
  node) to a cygru ``GRU``;
* :func:`to_onnx` (``_onnx_export.py``) -- a cygru ``GRU`` to an ONNX model that ONNX Runtime
  runs, padded batches included.

``_common.py`` holds what they share: the gate permutation and the parameter-name suffix.
The ONNX graph writer itself is ``cygru/_onnx.py``, below :mod:`cygru.modules`, so that
:meth:`cygru.GRU.to_onnx` calls it without importing this package (which imports the modules:
imports point only down).

cygru keeps PyTorch's gate order **r, z, n** everywhere. Keras and ONNX store their gates in the
order **z, r, h** (h is the candidate state, PyTorch's n), so every conversion permutes the three
row (or column) blocks of each weight and bias. The gate math is otherwise the same in all four
frameworks, ``h' = (1 - z) * n + z * h``, and the two candidate-state variants map as follows:

* cygru/PyTorch ``reset_after=True`` = Keras ``reset_after=True`` (its default) = ONNX
  ``linear_before_reset=1``: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``;
* cygru ``reset_after=False`` = Keras ``reset_after=False`` = ONNX ``linear_before_reset=0``:
  ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``.

None of these functions imports torch or keras (Keras objects are recognised by their classes'
modules), and ``onnx`` is imported only inside the ONNX functions, so ``import cygru`` never
needs any of them.
"""

from ._keras import from_keras, lengths_from_mask, repeat_last_state
from ._onnx_export import to_onnx
from ._onnx_import import from_onnx
from ._torch import from_torch

__all__ = [
    "from_keras",
    "from_onnx",
    "from_torch",
    "lengths_from_mask",
    "repeat_last_state",
    "to_onnx",
]

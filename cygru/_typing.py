"""Types of cygru's public API, for type checkers (PEP 484); nothing here runs cygru.

``Array`` is what cygru returns: a NumPy array for a module on the CPU (a CuPy array,
which type checkers see as the same, for one on a GPU). Inputs are ``ArrayLike``.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Any, MutableMapping, Protocol, Sequence, Union

from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from .modules import GRU, GRUCell

Array = NDArray[Any]

#: where :func:`cygru.to_onnx` writes: a path or a binary file object
OnnxTarget = Union[str, "os.PathLike[str]", IO[bytes]]

#: what an optimizer updates (and :func:`cygru.optim.clip_grad_norm_` scales): a cygru
#: module, a dict of plain arrays, or a list or tuple of those
ParamSource = Union["GRU", "GRUCell", MutableMapping[str, Array]]
Params = Union[ParamSource, Sequence[ParamSource]]


class GRUBackward(Protocol):
    """The closure :meth:`cygru.GRU.vjp` returns: ``dx, dh0 = backward(d_output, d_h_n)``."""

    #: the dropout masks of the forward it belongs to (None without dropout)
    dropout_masks: list[Array] | None

    def __call__(
        self, d_output: ArrayLike | None = None, d_h_n: ArrayLike | None = None
    ) -> tuple[Array, Array]: ...


class GRUCellBackward(Protocol):
    """The closure :meth:`cygru.GRUCell.vjp` returns: ``dx, dh = backward(d_h1)``."""

    def __call__(self, d_h1: ArrayLike | None = None) -> tuple[Array, Array]: ...

"""Types of cygru's public API (PEP 484); nothing here runs cygru.

``Array`` is what cygru returns: a NumPy array for a module on the CPU (a CuPy array,
which type checkers see as the same, for one on a GPU). Inputs are ``ArrayLike``.

Every name the public annotations use is defined at run time as well (in this module or
in the module that annotates with it), so ``typing.get_type_hints`` resolves the hints
of every public function, method and class (what Sphinx extensions, beartype, pydantic
and typer read). This module imports no other module of cygru: the types that name
cygru's classes live beside those classes' users (``cygru.optim.Params``).
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Any, Optional, Protocol, Union

from numpy.typing import ArrayLike, DTypeLike, NDArray

if TYPE_CHECKING:
    from onnx import ModelProto
else:
    # onnx is optional, and slow to import: at run time (typing.get_type_hints) the model
    # that to_onnx returns and from_onnx accepts is typed Any; type checkers see onnx's
    # class
    ModelProto = Any

__all__ = ["Array", "ArrayLike", "DTypeLike", "ModelProto", "OnnxTarget"]

Array = NDArray[Any]

#: where :func:`cygru.to_onnx` writes: a path or a binary file object
OnnxTarget = Union[str, os.PathLike[str], IO[bytes]]


class GRUBackward(Protocol):
    """The closure :meth:`cygru.GRU.vjp` returns: ``dx, dh0 = backward(d_output, d_h_n)``."""

    #: the dropout masks of the forward it belongs to (None without dropout)
    dropout_masks: Optional[list[Array]]

    def __call__(
        self, d_output: Optional[ArrayLike] = None, d_h_n: Optional[ArrayLike] = None
    ) -> tuple[Array, Array]: ...


class GRUCellBackward(Protocol):
    """The closure :meth:`cygru.GRUCell.vjp` returns: ``dx, dh = backward(d_h1)``."""

    def __call__(self, d_h1: Optional[ArrayLike] = None) -> tuple[Array, Array]: ...

"""``cygru.from_torch``'s overloads, checked by mypy (tests/test_typing.py): the cygru type
of the result follows the torch module given. mypy's notes for the three ``reveal_type``
calls are asserted by the test; at run time the script only converts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

import cygru

gru = cygru.from_torch(torch.nn.GRU(3, 4, num_layers=2))
cell = cygru.from_torch(torch.nn.GRUCell(3, 4))
module: torch.nn.Module = torch.nn.GRU(3, 4)
either = cygru.from_torch(module)

# what a type checker needs the overloads for: no isinstance check, no cast
x = torch.zeros(5, 2, 3).numpy()
print(gru.num_layers, gru(x)[1].shape, cell(x[0]).shape, either)

if TYPE_CHECKING:
    from typing_extensions import reveal_type

    reveal_type(gru)
    reveal_type(cell)
    reveal_type(either)

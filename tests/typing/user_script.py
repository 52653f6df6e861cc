"""A user's script over cygru's public API, checked by ``mypy --strict`` (tests/test_typing.py).

It is also a plain script that runs: ``python tests/typing/user_script.py``.
"""

from __future__ import annotations

import io
from typing import Dict, List, Tuple

import numpy as np
from numpy.typing import NDArray

import cygru
import cygru.functional
import cygru.optim
from cygru.interop import lengths_from_mask, repeat_last_state


def train_step(
    gru: cygru.GRU, opt: cygru.optim.Optimizer, x: NDArray[np.float64], lengths: List[int]
) -> float:
    gru.zero_grad()
    (output, h_n), backward = gru.vjp(x, lengths=lengths)
    loss = float((output**2).sum())
    dx, dh0 = backward(2 * output, None)
    assert dx.shape == x.shape and dh0.shape == h_n.shape
    opt.step()
    return loss


def main() -> None:
    cygru.set_num_threads(1)
    threads: int = cygru.get_num_threads()
    include: str = cygru.get_include()
    print(cygru.__version__, threads, include)

    gru = cygru.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    output, h_n = gru(x, lengths=[5, 3])
    out2, _ = gru.forward(x, np.zeros((4, 2, 4)))
    print(output.shape, h_n.shape, out2.dtype, gru.hidden_size, gru.num_layers, gru.dtype)

    opt = cygru.optim.Adam(gru, lr=1e-2)
    losses = [train_step(gru, opt, x, [5, 3]) for _ in range(3)]
    norm: float = cygru.optim.clip_grad_norm_(gru, 1.0)
    print(losses, norm)

    named: Dict[str, NDArray[np.float64]] = dict(gru.named_parameters())
    total = sum(p.size for p in gru.parameters())
    state = gru.state_dict()
    keys = gru.load_state_dict(state, strict=False)
    missing: List[str] = keys.missing_keys
    print(len(named), total, missing, keys.unexpected_keys)
    grads = gru.grads
    weight = gru.weight_ih_l0  # a parameter by its PyTorch name
    print(sorted(grads), weight.shape)
    same: cygru.GRU = gru.to(dtype=np.float64).cpu().double()
    print(same is gru)

    ok: bool = cygru.gradcheck(gru, x, lengths=[5, 3])
    cell = cygru.GRUCell(3, 4, dtype=np.float64, seed=1)
    h1 = cell(x[0])
    h2, cell_backward = cell.vjp(x[1], h1)
    dx1, dh1 = cell_backward(np.ones_like(h2))
    sgd = cygru.optim.SGD([cell, {"w": np.zeros(3)}], lr=0.1, momentum=0.9)
    sgd.step({"w": np.ones(3)})
    print(
        ok, dx1.shape, dh1.shape, sgd.state_dict()["hyperparameters"], cygru.gradcheck(cell, x[0])
    )

    y = cygru.functional.gru(x, gru.state_dict(), num_layers=2, bidirectional=True)[0]
    y1 = cygru.functional.gru_cell(x[0], None, cell.weight_ih, cell.weight_hh)
    mask = np.array([[True, True, False], [True, False, False]])
    lengths = lengths_from_mask(mask)
    padded: Tuple[int, ...] = repeat_last_state(np.ones((2, 3, 4)), lengths).shape
    print(y.shape, y1.shape, lengths.tolist(), padded)

    try:
        import onnx  # noqa: F401
    except ImportError:
        return
    buffer = io.BytesIO()
    model = cygru.to_onnx(gru.float(), buffer, lengths="required")
    back: cygru.GRU = cygru.from_onnx(buffer.getvalue())
    print(len(model.graph.node), back)


if __name__ == "__main__":
    main()

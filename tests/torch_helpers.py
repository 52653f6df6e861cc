"""Shared by the tests that use PyTorch as an oracle (import only after
import_optional("torch"))."""

import numpy as np
import torch

import cygru


def torch_dtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def to_numpy(t):
    return t.detach().numpy().copy()


def torch_twin(m):
    """An nn.GRU / nn.GRUCell with the options and parameters of a cygru module."""
    if isinstance(m, cygru.GRU):
        net = torch.nn.GRU(
            m.input_size,
            m.hidden_size,
            num_layers=m.num_layers,
            bias=m.bias,
            batch_first=m.batch_first,
            bidirectional=m.bidirectional,
            dtype=torch_dtype(m.dtype),
        )
    else:
        net = torch.nn.GRUCell(m.input_size, m.hidden_size, bias=m.bias, dtype=torch_dtype(m.dtype))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    return net

"""A NumPy stand-in for ``cygru.quantize`` (used by accuracy.py only while cygru has none).

It follows the numerics of the issue-25 API: int8 weights symmetric per output row,
activations (x rows and h_{t-1} rows) quantized per row at run time, exact integer sums
(float64 products of integers below 2**53), ``float(acc) * (sa[m] * sw[n])``, bias and gate
math in float32; bf16 weights and activations rounded half-even, sums in float64 then float32
(the summation order differs from the kernels': a stand-in for the error level only).
"""

import numpy as np


def _q_rows(a):
    a = np.asarray(a, dtype=np.float32)
    m = np.abs(a).max(axis=-1, keepdims=True)
    scale = (m / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(m > 0, np.float32(127) / m, 0).astype(np.float32)
    q = np.clip(np.rint(a * inv), -127, 127)
    return q, scale[..., 0]


def _bf16(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    out = u.astype(np.uint32).view(np.float32)
    return np.where(np.abs(a) < 2.0**-50, np.float32(0), out)


class _Linear:
    def __init__(self, w, precision):
        self.precision = precision
        if precision == "int8":
            self.q, self.s = _q_rows(w)
            self.qT = self.q.T.astype(np.float64)
        else:
            self.wT = _bf16(w).T.astype(np.float64)

    def __call__(self, a):
        if self.precision == "int8":
            qa, sa = _q_rows(a)
            acc = (qa.astype(np.float64) @ self.qT).astype(np.float32)
            return acc * (sa[:, None] * self.s[None, :])
        return (_bf16(a).astype(np.float64) @ self.wT).astype(np.float32)


def _cell(lin_ih, lin_hh, b_ih, b_hh, x, h, reset_after, w_hn=None):
    H = h.shape[1]
    gi = lin_ih(x) + b_ih
    if reset_after:
        gh = lin_hh(h) + b_hh
        r = 1 / (1 + np.exp(-(gi[:, :H] + gh[:, :H])))
        z = 1 / (1 + np.exp(-(gi[:, H : 2 * H] + gh[:, H : 2 * H])))
        n = np.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    else:
        gh = lin_hh(h)[:, : 2 * H] + b_hh[: 2 * H]
        r = 1 / (1 + np.exp(-(gi[:, :H] + gh[:, :H])))
        z = 1 / (1 + np.exp(-(gi[:, H : 2 * H] + gh[:, H : 2 * H])))
        n = np.tanh(gi[:, 2 * H :] + w_hn(r * h) + b_hh[2 * H :])
    return ((1 - z) * n + z * h).astype(np.float32)


class StandInQuantized:
    """``cygru.quantize(module, precision)``'s call API, computed in NumPy."""

    def __init__(self, module, precision):
        self.precision = precision
        self.cell = not hasattr(module, "num_layers")
        self.reset_after = getattr(module, "reset_after", True)
        self.H = module.hidden_size
        sd = {k: np.asarray(v, dtype=np.float32) for k, v in module.state_dict().items()}
        self.L = 1 if self.cell else module.num_layers
        self.D = 2 if (not self.cell and module.bidirectional) else 1
        self.params = {}
        for k in range(self.L):
            for d in range(self.D):
                sfx = "" if self.cell else f"_l{k}" + ("_reverse" if d else "")
                w_hh = sd[f"weight_hh{sfx}"]
                self.params[k, d] = (
                    _Linear(sd[f"weight_ih{sfx}"], precision),
                    _Linear(w_hh, precision),
                    sd.get(f"bias_ih{sfx}", np.zeros(3 * self.H, np.float32)),
                    sd.get(f"bias_hh{sfx}", np.zeros(3 * self.H, np.float32)),
                    None if self.reset_after else _Linear(w_hh[2 * self.H :], precision),
                )

    def _step(self, k, d, x, h):
        lin_ih, lin_hh, b_ih, b_hh, w_hn = self.params[k, d]
        return _cell(lin_ih, lin_hh, b_ih, b_hh, x, h, self.reset_after, w_hn)

    def __call__(self, x, h0=None, lengths=None, h=None):
        x = np.asarray(x, dtype=np.float32)
        if self.cell:
            hh = h0 if h0 is not None else h
            if hh is None:
                hh = np.zeros((x.shape[0], self.H), np.float32)
            return self._step(0, 0, x, np.asarray(hh, np.float32))
        T, B = x.shape[:2]
        lens = np.full(B, T) if lengths is None else np.asarray(lengths)
        h_n = np.zeros((self.L * self.D, B, self.H), np.float32)
        inp = x
        for k in range(self.L):
            out = np.zeros((T, B, self.D * self.H), np.float32)
            for d in range(self.D):
                h = (
                    np.zeros((B, self.H), np.float32)
                    if h0 is None
                    else np.array(h0[k * self.D + d], np.float32)
                )
                ts = range(T) if d == 0 else range(T - 1, -1, -1)
                for t in ts:
                    live = t < lens
                    if not live.any():
                        continue
                    new = self._step(k, d, inp[t], h)
                    h = np.where(live[:, None], new, h)
                    out[t, :, d * self.H : (d + 1) * self.H] = np.where(live[:, None], new, 0)
                h_n[k * self.D + d] = h
            inp = out
        return out, h_n


def quantize(module, precision):
    return StandInQuantized(module, precision)

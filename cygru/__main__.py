"""``python -m cygru``: version, BLAS, GPU availability, a self-check against the
NumPy reference, a short demo and a small timing table. Exits 1 if the self-check fails."""
import sys
import time

import numpy as np

from . import GRU, GRUCell, __version__, _reference
from . import _blas


def _gpu_status():
    from . import _cupy
    try:
        return "available" if _cupy.is_available() else "not available (needs CuPy and an NVIDIA GPU)"
    except Exception as exc:  # pragma: no cover - defensive: never fail the banner
        return f"not available ({exc})"


def _layers_of(m):
    return m._layers()


def self_check():
    """Compare forward, backward and lengths against the NumPy reference; return failures."""
    rng = np.random.default_rng(0)
    failures = []
    configs = [
        dict(num_layers=1, bidirectional=False, reset_after=True),
        dict(num_layers=2, bidirectional=True, reset_after=True, batch_first=True),
        dict(num_layers=2, bidirectional=True, reset_after=False),
        dict(num_layers=3, bidirectional=False, reset_after=False, bias=False),
    ]
    for dtype, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        for cfg in configs:
            m = GRU(5, 7, dtype=dtype, seed=1, **cfg)
            T, B = 6, 3
            shape = (B, T, 5) if m.batch_first else (T, B, 5)
            x = rng.standard_normal(shape).astype(dtype)
            h0 = rng.standard_normal((m.num_layers * m.num_directions, B, 7)).astype(dtype)
            lengths = np.array([6, 2, 4])
            kw = dict(hidden_size=7, num_directions=m.num_directions, reset_after=m.reset_after,
                      batch_first=m.batch_first, lengths=lengths)
            (out, h_n), backward = m.vjp(x, h0, lengths)
            ref_out, ref_hn = _reference.gru_forward(x, h0, _layers_of(m), **kw)
            d_out = rng.standard_normal(out.shape).astype(dtype)
            d_hn = rng.standard_normal(h_n.shape).astype(dtype)
            dx, dh0 = backward(d_out, d_hn)
            rdx, rdh0, _ = _reference.gru_backward(x, h0, _layers_of(m), d_out, d_hn, **kw)
            for name, a, b in (("output", out, ref_out), ("h_n", h_n, ref_hn),
                               ("dx", dx, rdx), ("dh0", dh0, rdh0)):
                err = float(np.max(np.abs(a - b)) / (1 + np.max(np.abs(b))))
                if not err <= tol:
                    failures.append(f"{np.dtype(dtype).name} {cfg}: {name} differs by {err:.2e}")
    return failures


def _median_ms(fn, repeat=7):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def timing_table():
    rng = np.random.default_rng(0)
    rows = []
    for name, (T, B, I, H) in (("small-latency", (50, 1, 64, 128)),
                               ("medium", (100, 32, 256, 256))):
        m = GRU(I, H, seed=0)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        kw = dict(hidden_size=H, num_directions=1)
        t_c = _median_ms(lambda: m(x))
        t_r = _median_ms(lambda: _reference.gru_forward(x, None, m._layers(), **kw), repeat=3)
        rows.append((name, f"T={T} B={B} I={I} H={H}", t_c, t_r))
    cell = GRUCell(64, 128, seed=0)
    x1 = rng.standard_normal((1, 64)).astype(np.float32)
    h1 = np.zeros((1, 128), np.float32)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        cell(x1, h1)
    t_cell = (time.perf_counter() - t0) / n * 1e3
    t_ref = _median_ms(lambda: _reference.cell_forward(
        x1, h1, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    rows.append(("GRUCell step", "B=1 I=64 H=128", t_cell, t_ref))
    return rows


def main(argv=None):
    print(f"cygru {__version__}")
    print(f"BLAS: {_blas.blas_name()}")
    print(f"GPU backend: {_gpu_status()}")
    print("self-check against the NumPy reference (forward, backward, lengths, both variants,"
          " float32/float64) ...", end=" ", flush=True)
    failures = self_check()
    if failures:
        print("FAILED")
        for f in failures:
            print("  " + f)
        return 1
    print("ok")
    gru = GRU(3, 4, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    out, h_n = gru(x)
    print(f"demo: {gru}: x {x.shape} -> output {out.shape}, h_n {h_n.shape}; "
          f"output[-1,:,:4] == h_n[-2]: {bool((out[-1, :, :4] == h_n[-2]).all())}")
    print("\nfloat32 forward, median ms (this machine, now):")
    print("| case | sizes | cygru | NumPy reference | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, sizes, t_c, t_r in timing_table():
        print(f"| {name} | {sizes} | {t_c:.4f} | {t_r:.4f} | {t_r / t_c:.1f}x |")
    print("\nFull benchmark against PyTorch and ONNX Runtime: python benchmarks/run.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())

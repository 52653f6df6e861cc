"""cygru.jax.gru beside a pure-JAX GRU (jax.lax.scan over PyTorch's equations), both jitted:
the forward and value_and_grad, at one thread (cygru.set_num_threads and XLA's CPU flags).

    python benchmarks/jax_gru.py                 # medium: T=100, B=32, I=H=256, float32
    python benchmarks/jax_gru.py --T 20 --B 4 --H 64 --repeats 20

Prints the median of ``--repeats`` timed calls (after two warm-up calls) for each case, and
the share of cygru's backward callback that its recomputed forward takes (a cygru forward
alone, and GRU.vjp's forward with cache plus backward, timed the same way).
"""

import argparse
import os
import statistics
import sys
import time

# this checkout's cygru (built in place), which has cygru.jax
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import cygru  # noqa: E402
import cygru.jax  # noqa: E402


def scan_gru(x, p, h0):
    """One layer, one direction, PyTorch's equations (reset_after=True), in plain JAX."""
    H = h0.shape[-1]
    gi_all = x @ p["weight_ih_l0"].T + p["bias_ih_l0"]  # one product for every step

    def step(h, gi):
        gh = h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        r = jax.nn.sigmoid(gi[:, :H] + gh[:, :H])
        z = jax.nn.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        n = jnp.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = (1 - z) * n + z * h
        return h, h

    h_n, out = jax.lax.scan(step, h0[0], gi_all)
    return out, h_n[None]


def cygru_gru(x, p, h0):
    return cygru.jax.gru(x, p, h0)


def median_times(fns, repeats):
    """{name: median seconds}, the calls interleaved (one of each per round), so that load
    from other processes falls on every case alike."""
    for fn in fns.values():
        for _ in range(2):
            jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--I", type=int, default=None, help="input size (default: H)")
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    T, B, H = args.T, args.B, args.H
    I = args.I or H
    cygru.set_num_threads(1)
    m = cygru.GRU(I, H, seed=0)
    p = {k: jnp.asarray(v) for k, v in m.state_dict().items()}
    x_np = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    x, h0 = jnp.asarray(x_np), jnp.zeros((1, B, H), jnp.float32)

    def loss(fn):
        return lambda x, p, h0: jnp.sum(fn(x, p, h0)[0] ** 2)

    fns = {}
    names = ("cygru.jax.gru", "lax.scan GRU")
    for name, fn in zip(names, (cygru_gru, scan_gru)):
        fwd = jax.jit(fn)
        vag = jax.jit(jax.value_and_grad(loss(fn), argnums=(0, 1, 2)))
        fns[name, "forward"] = lambda f=fwd: f(x, p, h0)
        fns[name, "grad"] = lambda f=vag: f(x, p, h0)

    # what the backward callback's recomputed forward costs, in cygru itself
    def vjp_step():
        (out, _), backward = m.vjp(x_np)
        return backward(out, None)

    fns["cygru", "forward"] = lambda: m(x_np)[0]
    fns["cygru", "vjp"] = vjp_step
    t = median_times(fns, args.repeats)
    print(f"T={T} B={B} I={I} H={H} float32, 1 thread, median of {args.repeats} (ms)")
    print(f"{'':16} {'forward':>9} {'value_and_grad':>15}")
    for name in names:
        print(f"{name:16} {t[name, 'forward'] * 1e3:9.2f} {t[name, 'grad'] * 1e3:15.2f}")
    t_fwd, t_vjp = t["cygru", "forward"], t["cygru", "vjp"]
    print(
        f"cygru alone: forward {t_fwd * 1e3:.2f} ms, vjp forward+backward {t_vjp * 1e3:.2f} ms; "
        f"the recomputed forward is {t_fwd / (t_fwd + t_vjp):.0%} of forward + vjp"
    )


if __name__ == "__main__":
    main()

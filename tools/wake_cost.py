"""Measure where a parallel region starts to pay: 1 vs 2 threads for batch-1 calls.

Times ``cygru.GRU(I, H)(x, h0)`` over T steps at B=1, with the call-size rule off
(``cygru._cpu.WAKE_COST = 0``) so that the thread count is the one set, for T in
--steps and H in --hidden, in interleaved blocks of 1-thread and 2-thread calls.
Two ways of calling: back to back (the team's threads are still awake), and with a
pause before each call (--gap-ms, as a stream of frames calls: the threads have gone
to sleep). Prints the lowest of the blocks' medians (other processes only ever add
time) and the ratio 2 threads / 1 thread; the work column is
the call's multiply-adds, T*3H*(I+H), which cygru._cpu.WAKE_COST compares with
2 * WAKE_COST * MIN_WORK_PER_THREAD. Used to choose WAKE_COST (see
docs/performance_internals.rst); run it on an otherwise idle machine:

    python tools/wake_cost.py --hidden 64,128,256,512 --steps 1,2,4,8,16,32,50
"""

import argparse
import time

import numpy as np

import cygru
from cygru import _cpu


def _times(g, x, h0, n_threads, block, gap_s):
    cygru.set_num_threads(n_threads)
    for _ in range(3):
        g(x, h0)
    out = []
    pc = time.perf_counter_ns
    for _ in range(block):
        if gap_s:
            time.sleep(gap_s)
        t0 = pc()
        g(x, h0)
        out.append(pc() - t0)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="64,128,256,512")
    p.add_argument("--steps", default="1,2,4,8,16,32,50")
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--block", type=int, default=40)
    p.add_argument("--gap-ms", type=float, default=2.0)
    a = p.parse_args()
    before = cygru.get_num_threads()
    _cpu.WAKE_COST = 0
    print(
        f"{'H':>5} {'T':>4} {'work':>10}  back-to-back 1t / 2t (us)   ratio | "
        f"after a {a.gap_ms:g} ms pause 1t / 2t (us)   ratio"
    )
    try:
        for H in (int(h) for h in a.hidden.split(",")):
            g = cygru.GRU(a.input, H, seed=0)
            h0 = np.zeros((1, 1, H), np.float32)
            for T in (int(t) for t in a.steps.split(",")):
                x = np.ones((T, 1, a.input), np.float32)
                row = []
                for gap, block in ((0.0, a.block), (a.gap_ms / 1e3, max(4, a.block // 4))):
                    t = {1: [], 2: []}
                    for r in range(a.rounds):
                        for n in (1, 2) if r % 2 else (2, 1):
                            t[n].append(np.median(_times(g, x, h0, n, block, gap)))
                    # the quietest block of each: other processes only ever add time
                    m1, m2 = min(t[1]) / 1e3, min(t[2]) / 1e3
                    row.append(f"{m1:9.1f} {m2:9.1f} {m2 / m1:9.2f}")
                work = T * 3 * H * (a.input + H)
                print(f"{H:5d} {T:4d} {work:10d}  {row[0]}        | {row[1]}", flush=True)
    finally:
        cygru.set_num_threads(before)


if __name__ == "__main__":
    main()

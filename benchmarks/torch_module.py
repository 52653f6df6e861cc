"""cygru.torch.GRU beside cygru.GRU and torch.nn.GRU: the wrapper's own cost, inference,
and a training step (GRU + Linear head, cross-entropy, Adam), at 1 and 2 threads.

    python benchmarks/torch_module.py [--quick]

Best of several repeats (min), in one process, the cases taking turns within each repeat; a
shared machine is noisy, so read the ratios, and rerun on an idle machine before quoting
absolute numbers.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

try:  # an installed cygru (pip install -e .) wins; otherwise this checkout's in-place build
    import cygru
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import cygru
import cygru.torch  # noqa: E402


def interleaved(cases, repeat, number):
    """Best time per call of each case, {name: (fn, grad_enabled)}: the cases take turns
    within every repeat, so a change of the machine's load hits them alike."""
    times = {name: [] for name in cases}
    for fn, grad in cases.values():  # warm up
        with torch.set_grad_enabled(grad):
            fn()
    for _ in range(repeat):
        for name, (fn, grad) in cases.items():
            with torch.set_grad_enabled(grad):
                t0 = time.perf_counter()
                for _ in range(number):
                    fn()
                times[name].append((time.perf_counter() - t0) / number)
    return {name: min(t) for name, t in times.items()}


def small_call(repeat, number=2000):
    """T=1, B=1, I=64, H=128, float32, 1 thread: per-call cost, microseconds."""
    torch.set_num_threads(1)
    cygru.set_num_threads(1)
    torch.manual_seed(0)
    mod = cygru.torch.GRU(64, 128)
    ref = cygru.GRU(64, 128)
    ref.load_state_dict({k: v.detach().numpy() for k, v in mod.state_dict().items()})
    tnn = torch.nn.GRU(64, 128)
    x_t = torch.randn(1, 1, 64)
    x_n = x_t.numpy().copy()
    cases = {
        "cygru.GRU (NumPy)": (lambda: ref(x_n), False),
        "cygru.torch.GRU, no_grad": (lambda: mod(x_t), False),
        "cygru.torch.GRU, autograd forward": (lambda: mod(x_t), True),
        "torch.nn.GRU, no_grad": (lambda: tnn(x_t), False),
    }
    return {k: v * 1e6 for k, v in interleaved(cases, repeat, number).items()}


def medium(threads, repeat, T=100, B=32, I=256, H=256, classes=10):
    """Inference and a training step at T=100, B=32, I=H=256, float32: milliseconds."""
    torch.set_num_threads(threads)
    cygru.set_num_threads(threads)
    torch.manual_seed(0)
    mod = cygru.torch.GRU(I, H)
    tnn = torch.nn.GRU(I, H)
    tnn.load_state_dict(mod.state_dict())
    ref = cygru.GRU(I, H)
    ref.load_state_dict({k: v.detach().numpy() for k, v in mod.state_dict().items()})
    x_t = torch.randn(T, B, I)
    x_n = x_t.numpy().copy()
    target = torch.randint(0, classes, (B,))

    def trainer(gru):
        head = torch.nn.Linear(H, classes)
        opt = torch.optim.Adam(list(gru.parameters()) + list(head.parameters()), lr=1e-3)

        def step():
            opt.zero_grad()
            out, _ = gru(x_t)
            loss = torch.nn.functional.cross_entropy(head(out[-1]), target)
            loss.backward()
            opt.step()

        return step

    cases = {
        "inference cygru.GRU (NumPy)": (lambda: ref(x_n), False),
        "inference cygru.torch.GRU": (lambda: mod(x_t), False),
        "inference torch.nn.GRU": (lambda: tnn(x_t), False),
        "training step cygru.torch.GRU": (trainer(mod), True),
        "training step torch.nn.GRU": (trainer(tnn), True),
    }
    return {k: v * 1e3 for k, v in interleaved(cases, repeat, 2).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    repeat = 2 if args.quick else 7
    T = 10 if args.quick else 100  # --quick: a smoke run, not a measurement
    print(f"torch {torch.__version__}, cygru {cygru.__version__}, numpy {np.__version__}")
    print("T=1, B=1, I=64, H=128, float32, 1 thread (microseconds per call, best of repeats):")
    for name, us in small_call(repeat, 200 if args.quick else 2000).items():
        print(f"  {name:40s} {us:8.2f}")
    for threads in (1, 2):
        print(f"T={T}, B=32, I=H=256, float32, {threads} thread(s) (milliseconds):")
        for name, ms in medium(threads, repeat, T=T).items():
            print(f"  {name:40s} {ms:8.2f}")


if __name__ == "__main__":
    main()

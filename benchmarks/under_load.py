#!/usr/bin/env python
"""cygru and ONNX Runtime on a busy machine: idle, and with other processes running.

    python benchmarks/under_load.py [--quick] [--cases CASE ...] [--repeat N]
                                    [--load-procs N] [--loads KIND ...]
                                    [--omp-backend auto|torch|numpy] [--sample-s S]
                                    [--json PATH] [--markdown PATH]

Both libraries run the same float32 GRU (cygru's weights, exported with ``cygru.to_onnx``
for ONNX Runtime; outputs compared before timing) at their DEFAULT thread settings: no
thread count is set for either, and the report says what each used. Each library is timed
in its own long-lived worker process (this script with ``--_role measure``), so neither
library's thread pool lives in the other's process.

Load conditions (every load process is this script with ``--_role load`` or ``twin``,
started in its own process group, held stopped with SIGSTOP between samples and resumed
with SIGCONT for the samples of its condition; all of them are killed at the end, also on
Ctrl-C, SIGTERM or an exception; they also die with this process through PR_SET_PDEATHSIG):

``idle``    no load;
``spin``    ``--load-procs`` processes in a tight user-space Python loop;
``kernel``  ``--load-procs`` processes that mmap 4 MiB, touch every page and munmap it, in a
            loop, so most of their time is in the kernel (page faults, zeroing, unmapping):
            the report prints their user/system CPU split from /proc/<pid>/stat;
``omp``     ``--load-procs`` processes each running short parallel regions on every core
            with short gaps between them, as PyTorch or OpenVINO do between calls: a region
            is one float32 256x256 @ 256x256 product, ``torch.mm`` with
            ``torch.set_num_threads(<cores>)`` (OpenMP/MKL threads) when PyTorch is
            installed, else NumPy's ``@`` with its BLAS at <cores> threads
            (``--omp-backend`` chooses); the gap is ``time.sleep(0.0002)``; the report
            prints the backend and the measured region and gap lengths;
``twin``    ``--load-procs`` processes running the same library's same case in a loop at its
            defaults (a cygru twin while cygru is timed, an ONNX Runtime twin while ONNX
            Runtime is timed).

Repetitions are interleaved: every repetition visits every condition (in a rotated order)
and, within it, both libraries (in alternating order), so slow drift of the machine affects
all alike. A sample is the mean time per call of a loop of calls lasting about
``--sample-s`` on an idle machine (stopped early past 4x that, after at least one call);
the tables show the median sample and the interquartile range.

See benchmarks/README.md ("Busy machines") for how to read the output.
"""

import argparse
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run as _run  # noqa: E402  (benchmarks/run.py: shapes, CPU model, JSON helpers)

# (T, B, I, H, layers, directions)
CASES = {
    "small-latency": _run.FORWARD_CASES["small-latency"],
    "single-step": (1, 32, 256, 256, 1, 1),
    "medium": _run.FORWARD_CASES["medium"],
    "long-seq": _run.FORWARD_CASES["long-seq"],
    "large": _run.FORWARD_CASES["large"],
    "deep-bi": _run.FORWARD_CASES["deep-bi"],
}
DEFAULT_CASES = ["small-latency", "single-step", "medium", "long-seq"]
QUICK_CASES = ["small-latency", "single-step"]
CONDITIONS = ["idle", "spin", "kernel", "omp", "twin"]
LOADS = CONDITIONS[1:]
PROC_LOADS = ["spin", "kernel", "omp"]  # started once per run (twins: once per case)
COND_LABEL = {
    "idle": "idle",
    "spin": "user spin",
    "kernel": "kernel loop",
    "omp": "omp regions",
    "twin": "twin",
}
PEERS = ["cygru", "ort"]
PEER_LABEL = {"cygru": "cygru", "ort": "ONNX Runtime"}
PEER_SHORT = {"cygru": "cygru", "ort": "ORT"}
ATOL = _run.ATOL
MAX_SLOWDOWN = 2.0  # target: under load within 2x of the idle time
MAX_RATIO = 1.0  # target: cygru / ORT under the same load <= 1
KERNEL_MAP_BYTES = 4 << 20  # the kernel loop maps, touches and unmaps this much per round
# the omp load: one parallel region = one float32 (N x N) @ (N x N) product on every core
# (torch.mm with torch.set_num_threads(cores), or NumPy's BLAS with cores threads), then
# a pause of OMP_GAP_S (time.sleep: ~0.25-0.3 ms in practice), in a loop
OMP_MATMUL_N = 256
OMP_GAP_S = 0.0002
OMP_BACKENDS = ("auto", "torch", "numpy")
SAMPLE_CAP = 4.0  # a sample stops after SAMPLE_CAP * sample_s (>= 1 call)
READY_TIMEOUT_S = 120.0  # for a child to start (imports, model load, first call)
REPLY_TIMEOUT_S = 600.0  # for one request to a measurement worker
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
THREAD_ENV = (
    "CYGRU_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_THREAD_LIMIT",
    "GOMP_SPINCOUNT",
    "OMP_WAIT_POLICY",
)


def _now():
    return time.perf_counter()


# ============================================================================================
# children: measurement workers, load processes, twins
# ============================================================================================


def _die_with_parent(parent_pid):
    """Ask Linux to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(0)


def _case_files(workdir, case):
    return {
        "npz": os.path.join(workdir, f"{case}.npz"),
        "onnx": os.path.join(workdir, f"{case}.onnx"),
        "x": os.path.join(workdir, f"{case}-x.npy"),
    }


class _Model:
    """One library's model for one case, built from the files the parent wrote."""

    def __init__(self, lib, case, workdir):
        import numpy as np

        T, B, I, H, L, D = CASES[case]
        files = _case_files(workdir, case)
        self.x = np.load(files["x"])
        self.info = {}
        if lib == "cygru":
            import cygru

            gru = cygru.GRU(I, H, L, bidirectional=(D == 2))
            with np.load(files["npz"]) as z:
                gru.load_state_dict({k: z[k] for k in z.files})
            x = self.x
            self.call = lambda: gru(x)
            self.arrays = lambda o: {"output": o[0], "h_n": o[1]}
            self.info["cygru_num_threads"] = cygru.get_num_threads()
        else:
            import onnxruntime as ort

            ort.set_default_logger_severity(3)
            before = _task_count()
            so = ort.SessionOptions()  # defaults: no thread counts set
            self.info["ort_intra_op_num_threads_setting"] = so.intra_op_num_threads
            self.info["ort_inter_op_num_threads_setting"] = so.inter_op_num_threads
            sess = ort.InferenceSession(
                files["onnx"], sess_options=so, providers=["CPUExecutionProvider"]
            )
            after = _task_count()
            if before is not None and after is not None:
                # ORT's intra-op pool has (intra-op threads - 1) threads; the caller is the last
                self.info["ort_pool_threads_started"] = after - before
            names = [o.name for o in sess.get_outputs()]
            feed = {sess.get_inputs()[0].name: self.x}
            self.call = lambda: sess.run(names, feed)
            self.arrays = lambda o: {"output": o[0], "h_n": o[1]}


def _task_count():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _sample(fn, inner, warm_s, cap_s):
    """Untimed calls for warm_s (>= 1), then up to `inner` timed calls (stop past cap_s)."""
    import resource

    end = _now() + warm_s
    fn()
    while _now() < end:
        fn()
    times = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = _now()
    for _ in range(inner):
        a = _now()
        fn()
        b = _now()
        times.append(b - a)
        if b - t0 > cap_s:
            break
    wall = _now() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "mean_ms": 1e3 * sum(times) / len(times),
        "calls": len(times),
        "median_call_ms": 1e3 * statistics.median(times),
        "max_call_ms": 1e3 * max(times),
        "cpu_cores": cpu / wall if wall > 0 else None,
        "wall_s": wall,
    }


def measure_main(args):
    """A measurement worker: JSON requests on stdin, JSON replies on the saved stdout."""
    models = {}

    def handle(req):
        cmd = req["cmd"]
        if cmd == "setup":
            import numpy as np

            m = _Model(args._lib, req["case"], req["workdir"])
            models[req["case"]] = m
            t0 = _now()
            out = m.arrays(m.call())
            first = _now() - t0
            path = os.path.join(req["workdir"], f"{req['case']}-{args._lib}-out.npz")
            np.savez(path, **out)
            times = []
            end = _now() + req["estimate_s"]
            while len(times) < 3 or _now() < end:
                a = _now()
                m.call()
                times.append(_now() - a)
            return {
                "ok": True,
                "out": path,
                "first_call_ms": 1e3 * first,
                "estimate_ms": 1e3 * statistics.median(times[1:]),
                "info": m.info,
            }
        if cmd == "sample":
            m = models[req["case"]]
            return {"ok": True, **_sample(m.call, req["inner"], req["warm_s"], req["cap_s"])}
        if cmd == "drop":
            models.pop(req["case"], None)
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    return serve_requests(args._parent, handle)


def load_main(args):
    """A load process: print 'ready' once started, then run its loop until killed."""
    _die_with_parent(args._parent)
    if args._role == "twin":
        m = _Model(args._lib, args._case, args._workdir)
        m.call()
        print("ready", flush=True)
        call = m.call
        while True:
            call()
    elif args._kind == "spin":
        print("ready", flush=True)
        n = 0
        while True:  # user space only: no system calls, no allocation
            n += 1
    elif args._kind == "omp":
        region, info = _omp_region(args._omp_backend or "auto")
        for _ in range(20):  # warm-up: the threads exist, the BLAS buffers are allocated
            region()
        reg_t, gap_t = [], []
        for _ in range(200):  # measure what one region and one gap take on this machine
            a = _now()
            region()
            b = _now()
            time.sleep(OMP_GAP_S)
            reg_t.append(b - a)
            gap_t.append(_now() - b)
        info["region_us"] = 1e6 * statistics.median(reg_t)
        info["gap_us"] = 1e6 * statistics.median(gap_t)
        info["gap_setting_us"] = 1e6 * OMP_GAP_S
        info["matmul_n"] = OMP_MATMUL_N
        print("ready " + json.dumps(info), flush=True)
        sleep, gap = time.sleep, OMP_GAP_S
        while True:  # a short parallel region on every core, a short pause, again
            region()
            sleep(gap)
    elif args._kind == "kernel":
        import mmap

        size, page = KERNEL_MAP_BYTES, mmap.PAGESIZE
        first = True
        while True:  # mmap, one write per page (a page fault each), munmap
            m = mmap.mmap(-1, size)
            for off in range(0, size, page):
                m[off] = 1
            m.close()
            if first:
                print("ready", flush=True)
                first = False
    return 0


def _omp_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _omp_region(backend):
    """(region callable, info) for the omp load: one N x N float32 product on every core.

    ``backend`` "torch": ``torch.mm`` after ``torch.set_num_threads(cores)`` (PyTorch's
    OpenMP threads; its BLAS runs on them); "numpy": NumPy's ``@`` with OpenBLAS/MKL/OpenMP
    threads = cores (set through the environment before NumPy is imported, and through
    threadpoolctl when it is installed); "auto": torch when it imports, else numpy.
    Must run before anything in this process imports NumPy (the thread variables are read
    when the BLAS loads).
    """
    cores = _omp_cores()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cores)
    for var in ("OMP_THREAD_LIMIT", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        os.environ.pop(var, None)  # the libraries' own waiting policy, as in a user's process
    n = OMP_MATMUL_N
    if backend in ("auto", "torch"):
        try:
            import torch
        except ImportError:
            if backend == "torch":
                raise
        else:
            torch.set_num_threads(cores)
            g = torch.Generator().manual_seed(0)
            a = torch.randn(n, n, generator=g)
            b = torch.randn(n, n, generator=g)
            c = torch.empty(n, n)
            mm = torch.mm

            def region():
                mm(a, b, out=c)

            info = {
                "backend": "torch",
                "version": torch.__version__,
                "threads": torch.get_num_threads(),
                "parallel": torch.__config__.parallel_info().splitlines()[-1].strip(),
            }
            return region, info
    import numpy as np

    info = {"backend": "numpy", "version": np.__version__, "threads": cores}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(cores)
        pools = threadpool_info()
        info["pools"] = [f"{p.get('internal_api')} x{p.get('num_threads')}" for p in pools]
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)

    def region():
        np.matmul(a, b, out=c)

    return region, info


# ============================================================================================
# parent: the child processes
# ============================================================================================


class ChildDied(RuntimeError):
    pass


def _clock_ticks():
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


CLK_TCK = _clock_ticks()


def proc_cpu(pid):
    """(user seconds, system seconds) of a process from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may have spaces
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


class Child:
    """One child process of this script, in its own process group."""

    def __init__(self, registry, role, argv, label, stdin=False, script=None):
        """``script``: the Python file to run (default this one, under_load.py)."""
        self.role, self.label = role, label
        self.buf = b""
        self.ready_info = None
        cmd = [
            sys.executable,
            os.path.abspath(script or __file__),
            "--_role",
            role,
            "--_parent",
            str(os.getpid()),
            "--_run-id",
            registry.run_id,
        ] + argv
        # no Ctrl-C / SIGTERM between starting the process and registering it (the child
        # unblocks them again in _die_with_parent)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=None,
                env=registry.env,
                cwd=ROOT,
                start_new_session=True,
                bufsize=0,
            )
            self.pid = self.proc.pid
            registry.add(self)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.cpu_at_ready = None
        self.cpu_at_kill = None

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{self.label} (pid {self.pid}) did not answer in {timeout:.0f} s"
                )
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise ChildDied(
                        f"{self.label} (pid {self.pid}) exited (status {self.proc.wait()})"
                    )
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def request(self, obj, timeout=REPLY_TIMEOUT_S):
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()
        reply = json.loads(self.readline(timeout))
        if not reply.get("ok"):
            raise RuntimeError(f"{self.label}: {reply.get('error')}")
        return reply

    def wait_ready(self):
        """Wait for the child's "ready" line (optionally "ready {json}": kept in .ready_info)."""
        line = self.readline(READY_TIMEOUT_S).strip()
        word, _, rest = line.partition(" ")
        if word != "ready":
            raise RuntimeError(f"{self.label}: unexpected first line {line!r}")
        self.ready_info = json.loads(rest) if rest else None

    def pause(self):
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.pid, signal.SIGCONT)

    def cpu(self):
        return proc_cpu(self.pid)

    def loop_cpu(self):
        """(user s, system s) since it was ready, read when it was killed; or None."""
        a, b = self.cpu_at_ready, self.cpu_at_kill
        return None if a is None or b is None else (b[0] - a[0], b[1] - a[1])

    def kill(self):
        if self.proc.poll() is None and self.cpu_at_kill is None:
            self.cpu_at_kill = self.cpu()
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own group: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


class Registry:
    """Every process this run started; kill_all() ends them (called from finally)."""

    def __init__(self, run_id):
        self.run_id = run_id
        self.children = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = ROOT + (
            os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else ""
        )

    def add(self, child):
        self.children.append(child)

    def kill(self, children):
        for c in children:
            c.kill()

    def kill_all(self):
        self.kill(self.children)

    def pids(self):
        return [c.pid for c in self.children]


def serve_requests(parent_pid, handle):
    """A measurement worker's loop (under_load.py's and latency.py's): JSON requests on
    stdin, `handle(request)`'s JSON replies on the saved stdout, until "quit" or end of
    input; an exception in `handle` is reported to the parent, which decides."""
    _die_with_parent(parent_pid)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not the protocol
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            reply = handle(req)
        except Exception as exc:  # report it to the parent, which decides
            import traceback

            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(reply) + "\n")
    return 0


def exit_on_term_signals():
    """SIGTERM and SIGHUP end the parent through SystemExit, so its clean-up runs."""

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)


def machine_header(env, load0, noisy):
    """The report's lines on the machine (CPU, load average, a warning when it is not
    quiet: `noisy` says what suffers, thread variables), and whether it is busy."""
    header = [
        f"CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs"
        + (f", {env['cpu_affinity']} usable" if env["cpu_affinity"] != env["cpu_count"] else "")
        + ")",
        "load average at start (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in load0),
    ]
    busy = load0[0] > 0.5
    if busy:
        header.append(
            f"WARNING: the machine is not quiet (1-min load average {load0[0]:.2f} "
            f"> 0.5): other work shares these cores; {noisy} are noisy"
        )
    if env["thread_env"]:
        header.append(
            "thread variables set in the environment (children inherit them): "
            + ", ".join(f"{k}={v}" for k, v in env["thread_env"].items())
        )
    return header, busy


def write_outputs(args, result, text, log):
    """--json (the result) and --markdown (the report), when asked for."""
    for path, content in (
        (args.json, lambda f: json.dump(result, f, indent=1, default=_run._json_default)),
        (args.markdown, lambda f: f.write(text + "\n")),
    ):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                content(f)
            log(f"wrote {path}")


def stop_loads_and_workers(loads, workers, load_info):
    """End of a run: kill the load processes (their CPU use appended to `load_info`) and
    ask the measurement workers to quit."""
    for k, cs in loads.items():
        for c in cs:
            c.kill()
            load_info.append({"kind": k, "pid": c.pid, "cpu": c.loop_cpu(), "info": c.ready_info})
    for w in workers.values():
        try:
            w.proc.stdin.write(b'{"cmd": "quit"}\n')
            w.proc.stdin.flush()
        except OSError:
            pass


def clean_up(reg, workdir, interrupted):
    """Whatever happened: every child killed, the work directory removed, and a line
    saying why the run stopped early (`interrupted`, or None)."""
    reg.kill_all()
    left = [c.pid for c in reg.children if c.proc.poll() is None]
    if left:
        print(f"WARNING: processes still running after SIGKILL: {left}", file=sys.stderr)
    for f in os.listdir(workdir):
        os.unlink(os.path.join(workdir, f))
    os.rmdir(workdir)
    if interrupted:
        print(
            f"\n{interrupted}: all {len(reg.children)} child processes stopped",
            file=sys.stderr,
            flush=True,
        )


def start_load(reg, kind, index, lib=None, case=None, workdir=None, omp_backend="auto"):
    """Start one load process of ``kind`` (spin, kernel, omp or twin); call ready_and_pause."""
    if kind == "twin":
        argv = ["--_lib", lib, "--_case", case, "--_workdir", workdir]
        c = Child(reg, "twin", argv, f"{PEER_SHORT[lib]} twin {index} ({case})")
        c.kind, c.lib = "twin", lib
    else:
        argv = ["--_kind", kind]
        if kind == "omp":
            argv += ["--_omp-backend", omp_backend]
        c = Child(reg, "load", argv, f"{kind} load {index}")
        c.kind, c.lib = kind, None
    return c


def omp_load_line(infos):
    """One line describing the omp load processes from their "ready" info (or None)."""
    infos = [i for i in infos if i]
    if not infos:
        return None
    i = infos[0]
    what = (
        f"torch {i['version']} `torch.mm` at `torch.set_num_threads({i['threads']})` "
        f"({i.get('parallel', '')})"
        if i["backend"] == "torch"
        else f"NumPy {i['version']} `matmul` on its BLAS at {i['threads']} threads"
        + (f" ({', '.join(i['pools'])})" if i.get("pools") else "")
    )
    regions = ", ".join(f"{x['region_us']:.0f}" for x in infos)
    gaps = ", ".join(f"{x['gap_us']:.0f}" for x in infos)
    return (
        f"omp load: {len(infos)} process(es), each a loop of one float32 "
        f"{i['matmul_n']}x{i['matmul_n']} @ {i['matmul_n']}x{i['matmul_n']} product on "
        f"{what}, then `time.sleep({i['gap_setting_us'] / 1e6:g})`; measured at start: "
        f"region {regions} µs, gap {gaps} µs (median of 200)"
    )


def ready_and_pause(children):
    for c in children:
        c.wait_ready()
        c.pause()
        c.cpu_at_ready = c.cpu()  # the loop's CPU time is counted from here


# ============================================================================================
# parent: one case
# ============================================================================================


def _quantiles(v):
    """(p25, median, p75) by linear interpolation (statistics.quantiles, 'inclusive')."""
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], q[1], q[2]


def _maxdiff(a, b):
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def write_case_files(case, workdir, have_onnx):
    """The weights (npz), the ONNX model and the input, shared by workers and twins."""
    import numpy as np

    import cygru

    T, B, I, H, L, D = CASES[case]
    files = _case_files(workdir, case)
    gru = cygru.GRU(I, H, L, bidirectional=(D == 2), seed=0)
    np.savez(files["npz"], **gru.state_dict())
    np.save(files["x"], np.random.default_rng(0).standard_normal((T, B, I), dtype=np.float32))
    if have_onnx:
        cygru.to_onnx(gru, files["onnx"], h0="none")


def run_case(case, args, reg, workers, loads, workdir, peers, log):
    """Check, estimate, then the interleaved repetitions. Returns the case's result dict."""
    import numpy as np

    T, B, I, H, L, D = CASES[case]
    res = {"shape": dict(T=T, B=B, I=I, H=H, layers=L, dirs=D), "peers": {}, "check": {}}
    write_case_files(case, workdir, "ort" in peers)
    setups = {}
    for p in peers:
        setups[p] = workers[p].request(
            {"cmd": "setup", "case": case, "workdir": workdir, "estimate_s": args.estimate_s}
        )
        res["peers"][p] = {
            "status": "ok",
            "first_call_ms": setups[p]["first_call_ms"],
            "idle_estimate_ms": setups[p]["estimate_ms"],
            "info": setups[p]["info"],
        }
    timed = ["cygru"]
    if "ort" in peers:
        with np.load(setups["cygru"]["out"]) as a, np.load(setups["ort"]["out"]) as b:
            diffs = {k: _maxdiff(a[k], b[k]) for k in ("output", "h_n")}
        worst = max(diffs.values())
        res["check"] = {"max_abs_diff": diffs, "tolerance": ATOL}
        if worst <= ATOL:
            timed.append("ort")
            log(f"{case}: outputs agree (max abs diff {worst:.2g} <= {ATOL:g})")
        else:
            bar = "!" * 78
            log(
                f"\n{bar}\n!!! MISMATCH {case}: ONNX Runtime differs from cygru by {worst:.3g} "
                f"(> {ATOL:g}); ORT NOT timed\n{bar}\n"
            )
            res["peers"]["ort"]["status"] = "mismatch"
            res["check"]["status"] = "mismatch"
    inner = {
        p: max(1, int(round(args.sample_s / max(setups[p]["estimate_ms"] * 1e-3, 1e-9))))
        for p in timed
    }
    for p in timed:
        res["peers"][p]["inner"] = inner[p]

    twins = {
        p: [
            start_load(reg, "twin", i, lib=p, case=case, workdir=workdir)
            for i in range(args.load_procs)
        ]
        if "twin" in args.conditions
        else []
        for p in timed
    }
    conditions = args.conditions
    samples = {c: {p: [] for p in timed} for c in conditions}
    t_case = _now()
    try:
        for p in timed:
            ready_and_pause(twins[p])
        log(
            f"{case}: {args.repeat} repetitions x {len(conditions)} conditions x "
            f"{len(timed)} libraries; calls per sample "
            + ", ".join(
                f"{PEER_SHORT[p]} {inner[p]} (idle ~{setups[p]['estimate_ms']:.3g} ms per call)"
                for p in timed
            )
        )
        cap_s = SAMPLE_CAP * args.sample_s
        for rep in range(args.repeat):
            k = rep % len(conditions)
            order = conditions[k:] + conditions[:k]
            for cond in order:
                for p in timed if rep % 2 == 0 else timed[::-1]:
                    active = twins[p] if cond == "twin" else loads.get(cond, [])
                    for c in active:
                        c.resume()
                    try:
                        time.sleep(args.settle_s)
                        cpu0 = [c.cpu() for c in active]
                        w0 = _now()
                        s = workers[p].request(
                            {
                                "cmd": "sample",
                                "case": case,
                                "inner": inner[p],
                                "warm_s": args.warm_s,
                                "cap_s": cap_s,
                            }
                        )
                        wall = _now() - w0
                        cpu1 = [c.cpu() for c in active]
                    finally:
                        for c in active:
                            c.pause()
                    used = [sum(b) - sum(a) for a, b in zip(cpu0, cpu1) if a and b]
                    s["load_cores"] = sum(used) / wall if active and wall > 0 else 0.0
                    s["rep"] = rep
                    samples[cond][p].append(s)
            if args.progress:
                log(f"{case}: repetition {rep + 1}/{args.repeat} done ({_now() - t_case:.0f} s)")
    finally:
        for p in timed:
            reg.kill(twins[p])
    res["twin_cpu"] = [
        {"lib": c.lib, "pid": c.pid, "cpu": c.loop_cpu()} for p in timed for c in twins[p]
    ]
    for p in timed:
        workers[p].request({"cmd": "drop", "case": case})
    res["wall_s"] = _now() - t_case
    res["conditions"] = summarize(samples, timed)
    return res


def summarize(samples, timed):
    """Per condition (in the order of ``samples``) and library: quantiles and slowdowns."""
    out = {}
    for cond in samples:
        row = {}
        for p in timed:
            ss = samples[cond][p]
            v = [s["mean_ms"] for s in ss]
            q1, med, q3 = _quantiles(v)
            row[p] = {
                "median_ms": med,
                "p25_ms": q1,
                "p75_ms": q3,
                "min_ms": min(v),
                "max_ms": max(v),
                "samples_ms": v,
                "calls": [s["calls"] for s in ss],
                "max_call_ms": [s["max_call_ms"] for s in ss],
                "cpu_cores": [s["cpu_cores"] for s in ss],
                "load_cores": [s["load_cores"] for s in ss],
                "mean_load_cores": statistics.mean(s["load_cores"] for s in ss),
            }
        out[cond] = row
    for cond in samples:
        for p in timed:
            idle = out["idle"][p]["median_ms"]
            out[cond][p]["slowdown"] = out[cond][p]["median_ms"] / idle
        if "cygru" in timed and "ort" in timed:
            out[cond]["cygru_over_ort"] = (
                out[cond]["cygru"]["median_ms"] / out[cond]["ort"]["median_ms"]
            )
    return out


# ============================================================================================
# report
# ============================================================================================

_fmt_ms = _run._fmt_ms


def _case_label(case):
    T, B, I, H, L, D = CASES[case]
    return f"{case} ({T},{B},{I},{H}{'' if (L, D) == (1, 1) else f',{L},{D}'})"


def results_table(cases_res):
    head = [
        "case",
        "load",
        "cygru ms",
        "ORT ms",
        "cygru slowdown",
        "ORT slowdown",
        "cygru/ORT",
        "cygru IQR ms",
        "ORT IQR ms",
        "load cores",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    for case, res in cases_res.items():
        conds = res.get("conditions")
        if not conds:
            continue
        for cond, row in conds.items():
            cells = [_case_label(case), COND_LABEL[cond]]
            for p in PEERS:
                cells.append(_fmt_ms(row[p]["median_ms"]) if p in row else _status_cell(res, p))
            for p in PEERS:
                cells.append(f"{row[p]['slowdown']:.2f}x" if p in row else "—")
            r = row.get("cygru_over_ort")
            cells.append(f"{r:.2f}" if r is not None else "—")
            for p in PEERS:
                cells.append(
                    f"{_fmt_ms(row[p]['p25_ms'])}–{_fmt_ms(row[p]['p75_ms'])}" if p in row else "—"
                )
            if cond == "idle":
                cells.append("—")
            else:
                cells.append(
                    "/".join(f"{row[p]['mean_load_cores']:.2f}" for p in PEERS if p in row)
                )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _status_cell(res, p):
    st = res["peers"].get(p, {}).get("status", "n/a")
    return {"mismatch": "MISMATCH", "unavailable": "n/a"}.get(st, st)


def evaluate_targets(cases_res):
    rows = []
    for case, res in cases_res.items():
        conds = res.get("conditions")
        if not conds:
            continue
        for cond, row in conds.items():
            if cond == "idle":
                continue
            s = row["cygru"]["slowdown"]
            t = {
                "case": case,
                "load": cond,
                "cygru_slowdown": s,
                "slowdown_result": "PASS" if s <= MAX_SLOWDOWN else "MISS",
            }
            r = row.get("cygru_over_ort")
            t["cygru_over_ort"] = r
            t["ratio_result"] = "n/a" if r is None else "PASS" if r <= MAX_RATIO else "MISS"
            rows.append(t)
    return rows


def targets_table(rows):
    lines = [
        f"| case | load | cygru slowdown (<= {MAX_SLOWDOWN:g}x idle) | result "
        f"| cygru/ORT (<= {MAX_RATIO:g}) | result |",
        "|---|---|---:|---|---:|---|",
    ]

    def b(res):
        return f"**{res}**" if res == "MISS" else res

    for t in rows:
        r = t["cygru_over_ort"]
        lines.append(
            f"| {_case_label(t['case'])} | {COND_LABEL[t['load']]} "
            f"| {t['cygru_slowdown']:.2f}x | {b(t['slowdown_result'])} "
            f"| {'—' if r is None else f'{r:.2f}'} | {b(t['ratio_result'])} |"
        )
    return "\n".join(lines)


def load_cpu_lines(load_info, cases_res):
    """The user/system split of every load process (cumulative, read before it was killed)."""
    out = []
    by_kind = {}
    for li in load_info:
        if li.get("cpu"):
            by_kind.setdefault(li["kind"], []).append(li["cpu"])
    for res in cases_res.values():
        for t in res.get("twin_cpu", []):
            if t.get("cpu"):
                by_kind.setdefault(f"{PEER_SHORT[t['lib']]} twin", []).append(t["cpu"])
    for kind, cpus in by_kind.items():
        u = sum(c[0] for c in cpus)
        s = sum(c[1] for c in cpus)
        tot = u + s
        if tot <= 0:
            out.append(f"- {kind}: no CPU time recorded")
            continue
        ratio = f"{s / u:.1f}" if u > 0 else "inf"
        out.append(
            f"- {kind}: user {u:.1f} s, system {s:.1f} s ({100 * s / tot:.0f}% in the "
            f"kernel; stime/utime = {ratio})"
        )
    return out


# ============================================================================================
# main
# ============================================================================================


def _git_head():
    """The checkout's commit, read from .git, also in a `git worktree` (.git is a file)."""
    dotgit = os.path.join(ROOT, ".git")
    if not os.path.isfile(dotgit):
        return _run._git_head()
    try:
        with open(dotgit) as f:
            gitdir = f.read().split("gitdir:", 1)[1].strip()
        gitdir = os.path.join(ROOT, gitdir)
        common = gitdir
        if os.path.exists(os.path.join(gitdir, "commondir")):
            with open(os.path.join(gitdir, "commondir")) as f:
                common = os.path.join(gitdir, f.read().strip())
        with open(os.path.join(gitdir, "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        for d in (gitdir, common):
            if os.path.exists(os.path.join(d, ref)):
                with open(os.path.join(d, ref)) as f:
                    return f.read().strip()
        with open(os.path.join(common, "packed-refs")) as f:
            for line in f:
                if line.strip().endswith(ref):
                    return line.split()[0]
    except (OSError, IndexError):
        pass
    return None


def machine_info():
    import numpy
    import scipy

    info = {
        "cpu_model": _run._cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {"numpy": numpy.__version__, "scipy": scipy.__version__},
        "git_head": _git_head(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }
    try:
        import cygru

        info["versions"]["cygru"] = cygru.__version__
    except ImportError:
        pass
    for mod in ("onnxruntime", "onnx"):
        try:
            info["versions"][mod] = __import__(mod).__version__
        except ImportError:
            info["versions"][mod] = None
    return info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="cygru and ONNX Runtime at their default threads, idle and with busy "
        "processes (user-space spin, kernel-heavy page faults, short OpenMP "
        "parallel regions, a twin of the same library), interleaved in one run."
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small-latency and single-step only, 5 repetitions of 0.1 s samples",
    )
    ap.add_argument(
        "--cases",
        nargs="+",
        choices=list(CASES),
        metavar="CASE",
        default=None,
        help="cases (default: "
        + " ".join(DEFAULT_CASES)
        + "; --quick: "
        + " ".join(QUICK_CASES)
        + "); also: large deep-bi",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions (samples per library and condition; default 12, --quick 5)",
    )
    ap.add_argument(
        "--sample-s",
        type=float,
        default=None,
        help="length of one sample on an idle machine in seconds (default 0.25, --quick 0.1)",
    )
    ap.add_argument(
        "--load-procs", type=int, default=1, help="busy processes per load kind (default 1)"
    )
    ap.add_argument(
        "--loads",
        nargs="+",
        choices=LOADS,
        metavar="KIND",
        default=None,
        help="load conditions besides idle (default: all of " + " ".join(LOADS) + ")",
    )
    ap.add_argument(
        "--omp-backend",
        choices=OMP_BACKENDS,
        default="auto",
        help="what the omp load runs: torch (torch.mm on OpenMP threads), numpy (NumPy's "
        "BLAS threads), auto (torch if installed, else numpy; default)",
    )
    ap.add_argument(
        "--json",
        default=os.path.join(HERE, "results", "under-load.json"),
        help="results file (default benchmarks/results/under-load.json; '' none)",
    )
    ap.add_argument(
        "--markdown",
        default=os.path.join(HERE, "results", "under-load.md"),
        help="markdown report (default benchmarks/results/under-load.md; '' none)",
    )
    ap.add_argument("--no-ort", action="store_true", help="time cygru alone")
    ap.add_argument("--_role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_lib", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_kind", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_omp-backend", dest="_omp_backend", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_workdir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_parent", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_run-id", dest="_run_id", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cases is None:
        args.cases = QUICK_CASES if args.quick else DEFAULT_CASES
    if args.repeat is None:
        args.repeat = 5 if args.quick else 12
    if args.sample_s is None:
        args.sample_s = 0.1 if args.quick else 0.25
    if args.repeat < 1 or args.load_procs < 1 or args.sample_s <= 0:
        ap.error("--repeat and --load-procs must be >= 1, --sample-s > 0")
    chosen = set(LOADS if args.loads is None else args.loads)
    args.conditions = ["idle"] + [k for k in LOADS if k in chosen]
    args.settle_s = min(0.05, args.sample_s)  # loads ramp up, the last library goes quiet
    args.warm_s = min(0.02, args.sample_s / 4)  # untimed calls before each sample
    args.estimate_s = min(0.2, 2 * args.sample_s)
    args.progress = not args.quick
    return args


def main(argv=None):
    args = parse_args(argv)
    if args._role == "measure":
        return measure_main(args)
    if args._role in ("load", "twin"):
        return load_main(args)

    t_start = _now()
    run_id = args._run_id or f"cygru-under-load-{os.getpid()}-{int(time.time())}"

    def log(msg):
        print(msg, flush=True)

    exit_on_term_signals()

    load0 = os.getloadavg()
    env = machine_info()
    peers = ["cygru"]
    notes = []
    if args.no_ort:
        notes.append("ONNX Runtime not run (--no-ort)")
    elif env["versions"].get("onnxruntime") and env["versions"].get("onnx"):
        peers.append("ort")
    else:
        notes.append("onnxruntime or onnx not installed: ONNX Runtime skipped")
    header, busy = machine_header(env, load0, "timings")
    log(
        f"cygru under load: cases {', '.join(args.cases)}; {args.repeat} repetitions; "
        f"{args.load_procs} process(es) per load kind; run id {run_id}"
    )
    for h in header:
        log(h)

    reg = Registry(run_id)
    cases_res, load_info, threads = {}, [], {}
    interrupted = None
    workdir = tempfile.mkdtemp(prefix="cygru-under-load-")
    try:
        workers = {
            p: Child(reg, "measure", ["--_lib", p], f"{PEER_SHORT[p]} worker", stdin=True)
            for p in peers
        }
        loads = {
            k: [start_load(reg, k, i, omp_backend=args.omp_backend) for i in range(args.load_procs)]
            for k in PROC_LOADS
            if k in args.conditions
        }
        for k in loads:
            ready_and_pause(loads[k])
        for case in args.cases:
            try:
                cases_res[case] = run_case(case, args, reg, workers, loads, workdir, peers, log)
            except (ChildDied, TimeoutError, RuntimeError) as exc:
                notes.append(f"{case}: failed: {exc}")
                log(f"{case}: FAILED: {exc}")
                cases_res[case] = {"error": str(exc)}
                if isinstance(exc, ChildDied) and any(
                    w.proc.poll() is not None for w in workers.values()
                ):
                    break
                continue
            for p in peers:
                info = cases_res[case]["peers"].get(p, {}).get("info", {})
                threads.setdefault(p, info)
        stop_loads_and_workers(loads, workers, load_info)
    except KeyboardInterrupt:
        interrupted = "interrupted (Ctrl-C)"
    except SystemExit as exc:
        interrupted = f"terminated (exit {exc.code})"
        raise
    finally:
        clean_up(reg, workdir, interrupted)
    if interrupted:
        return 130

    # ---- report ------------------------------------------------------------------------------
    cy = threads.get("cygru", {})
    ot = threads.get("ort", {})
    how = ", ".join(
        f"{k}={val}"
        for k, val in env["thread_env"].items()
        if k in ("CYGRU_NUM_THREADS", "OMP_NUM_THREADS", "OMP_THREAD_LIMIT")
    )
    thread_lines = [
        f"- cygru: `cygru.get_num_threads()` = {cy.get('cygru_num_threads', '?')} "
        + (
            f"(its default under {how} from the environment)"
            if how
            else "(its default; nothing set)"
        )
    ]
    if "ort" in peers:
        pool = ot.get("ort_pool_threads_started")
        intra = (
            f"{pool + 1} (the session started {pool} pool thread"
            f"{'' if pool == 1 else 's'}; the calling thread is the last)"
            if pool is not None
            else "unknown"
        )
        thread_lines.append(
            f"- ONNX Runtime: `intra_op_num_threads` = "
            f"{ot.get('ort_intra_op_num_threads_setting', '?')} (default) -> "
            f"intra-op threads {intra}"
        )
    targets = evaluate_targets(cases_res)
    n_pass = sum((t["slowdown_result"] == "PASS") + (t["ratio_result"] == "PASS") for t in targets)
    n_judged = sum(1 + (t["ratio_result"] != "n/a") for t in targets)
    v = env["versions"]
    report = [
        "",
        "## cygru and ONNX Runtime under load (float32 forward, default threads)",
        "",
        *[h if not h.startswith("WARNING") else f"**{h}**" for h in header],
        "Versions: Python "
        + env["python"]
        + ", "
        + ", ".join(f"{k} {val}" for k, val in v.items() if val)
        + (f"; commit {env['git_head'][:10]}" if env.get("git_head") else ""),
        "",
        "Threads each library used:",
        "",
        *thread_lines,
        "",
        f"Median ms per call over {args.repeat} interleaved repetitions; slowdown = "
        "median under the load / median idle (same library); cygru/ORT < 1 means cygru "
        "is faster under that load; IQR = 25th-75th percentile of the samples; load "
        f"cores = CPU the load processes used while cygru/ORT were timed "
        f"({args.load_procs} process(es) per kind).",
        "",
        results_table(cases_res),
        "",
    ]
    if targets:
        report += [f"### Targets: {n_pass} of {n_judged} PASS", "", targets_table(targets), ""]
    omp_line = omp_load_line([li.get("info") for li in load_info if li["kind"] == "omp"])
    if omp_line:
        report += [omp_line, ""]
    lc = load_cpu_lines(load_info, cases_res)
    if lc:
        report += [
            "CPU time of the load processes in their loops (user vs kernel, from "
            "/proc/<pid>/stat):",
            "",
            *lc,
            "",
        ]
    mism = [c for c, r in cases_res.items() if r.get("check", {}).get("status") == "mismatch"]
    if mism:
        report += [
            "### !!! MISMATCH: ONNX Runtime's output differed from cygru's (not timed): "
            + ", ".join(mism),
            "",
        ]
    elif "ort" in peers:
        report += [
            f"ONNX Runtime's output and h_n matched cygru's before timing (max abs diff "
            f"<= {ATOL:g}) in every case.",
            "",
        ]
    if notes:
        report += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    total = _now() - t_start
    report.append(f"Total wall time: {total:.0f} s")
    text = "\n".join(report)
    log(text)
    result = {
        "machine": env,
        "loadavg_start": list(load0),
        "busy_at_start": busy,
        "args": {k: val for k, val in vars(args).items() if not k.startswith("_")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_id": run_id,
        "threads": threads,
        "cases": cases_res,
        "load_processes": load_info,
        "child_pids": reg.pids(),
        "targets": targets,
        "notes": notes,
        "total_wall_s": total,
        "report_markdown": text,
    }
    write_outputs(args, result, text, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())

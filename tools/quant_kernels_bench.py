"""GMAC/s of the reduced-precision products (cygru/include/cygru_quant.h), every variant
this CPU runs, beside cygru's float32 packed and dot kernels on the same shapes.

Not a test: a measuring tool (docs/performance_internals.rst, "Reduced-precision
products"). It compiles a small C driver against the headers with the flags setup.py
uses (a C compiler is needed), so that a batch-1 product is timed without Python's call
overhead, and runs it on one thread:

    python tools/quant_kernels_bench.py [--shapes 1x128x384,32x256x768] [--seconds 0.2]

Each number is the best of 5 timed batches (each about --seconds long) of
C = A (M x K) @ W^T (N x K); float32 packed excludes packing (W is packed once, as the
engine does per call of a sequence), the quantized products include the per-row
quantization / bf16 conversion of A (they do it on every call).
"""

import argparse
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
INCLUDE = ROOT / "cygru" / "include"

C_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "cygru_gemm.h"
#include "cygru_dot.h"
#include "cygru_quant.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

typedef void (*runner)(void *ctx);
typedef struct {
    int M, K, N, lv;
    float *A, *W, *P, *C;
    void *qblock, *bblock, *scratch;
} prob;

static void run_packed(void *c) {
    prob *p = c;
    cygru_kernel_at_level_f(p->lv)(p->M, p->K, p->A, p->K, p->P, 0, (p->N + 15) / 16, p->N,
                                   p->C, p->N, 0);
}
static void run_dot(void *c) {
    prob *p = c;
    cygru_dot_at_level_f(p->lv)(p->M, p->N, p->K, p->A, p->K, p->W, p->K, p->C, p->N, 0);
}
static void run_q8(void *c) {
    prob *p = c;
    cygru_q8_at_level(p->lv)(p->M, p->K, p->A, p->K, p->qblock, p->N, 0, p->N, p->C, p->N,
                             p->scratch);
}
static void run_bf16(void *c) {
    prob *p = c;
    cygru_bf16_at_level(p->lv)(p->M, p->K, p->A, p->K, p->bblock, p->N, 0, p->N, p->C, p->N,
                               p->scratch);
}

static double gmacs(runner f, prob *p, double seconds) {
    double macs = (double)p->M * p->K * p->N, best = 1e300;
    f(p);
    long reps = 1;
    double t0 = now();
    f(p);
    double one = now() - t0;
    reps = one > 0 ? (long)(seconds / one) : 1000000;
    if (reps < 1)
        reps = 1;
    for (int b = 0; b < 5; b++) {
        t0 = now();
        for (long r = 0; r < reps; r++)
            f(p);
        double t = (now() - t0) / reps;
        if (t < best)
            best = t;
    }
    return macs / best * 1e-9;
}

int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    printf("levels in use: float32 %d, int8 %d, bf16 %d (highest run: %d, %d; bf16 native "
           "check %d, native faster %d)\n",
           cygru_cpu_level(), cygru_q8_best_level(), cygru_bf16_best_level(),
           cygru_q8_max_level(), cygru_bf16_max_level(), cygru_bf16_native_ok(),
           cygru_bf16_native_fast());
    printf("%-16s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n", "M x K x N", "f32pk", "f32dot",
           "f32pk/1", "f32dot/1", "q8/0", "q8/1", "q8/2", "q8/3", "bf16/0", "bf16/1",
           "bf16/2", "bf16/3");
    for (int s = 2; s < argc; s++) {
        prob p;
        if (sscanf(argv[s], "%dx%dx%d", &p.M, &p.K, &p.N) != 3)
            return 2;
        int M = p.M, K = p.K, N = p.N;
        p.A = malloc(sizeof(float) * (size_t)M * K);
        p.W = malloc(sizeof(float) * (size_t)N * K);
        p.C = malloc(sizeof(float) * (size_t)M * N);
        p.P = aligned_alloc(64, sizeof(float) * ((size_t)cygru_packed_size(N, K) + 16));
        srand(1);
        for (long i = 0; i < (long)M * K; i++)
            p.A[i] = (float)rand() / RAND_MAX - 0.5f;
        for (long i = 0; i < (long)N * K; i++)
            p.W[i] = (float)rand() / RAND_MAX - 0.5f;
        cygru_pack_f(N, K, p.W, K, 1, p.P);
        int8_t *q = malloc((size_t)N * cygru_q8_k4(K));
        float *sc = malloc(sizeof(float) * N);
        cygru_q8_quantize_rows(N, K, p.W, K, q, cygru_q8_k4(K), sc);
        p.qblock = aligned_alloc(64, cygru_q8_block_size(N, K));
        cygru_q8_pack(N, K, q, cygru_q8_k4(K), sc, p.qblock);
        uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)N * K);
        cygru_bf16_from_f32_n((ptrdiff_t)N * K, p.W, wb);
        p.bblock = aligned_alloc(64, cygru_bf16_block_size(N, K));
        cygru_bf16_pack(N, K, wb, K, p.bblock);
        size_t ss = cygru_q8_scratch_size(K) > cygru_bf16_scratch_size(K)
                        ? cygru_q8_scratch_size(K) : cygru_bf16_scratch_size(K);
        p.scratch = malloc(ss);
        double base_s = (double)M * K * N > 5e7 ? seconds / 4 : seconds;
        printf("%-16s", argv[s]);
        p.lv = cygru_cpu_level();
        printf(" %9.1f", gmacs(run_packed, &p, seconds));
        printf(" %9.1f", gmacs(run_dot, &p, seconds));
        p.lv = 1;
        printf(" %9.1f", cygru_cpu_level() >= 1 ? gmacs(run_packed, &p, seconds) : 0.0);
        printf(" %9.1f", cygru_cpu_level() >= 1 ? gmacs(run_dot, &p, seconds) : 0.0);
        for (int lv = 0; lv < 4; lv++) {
            p.lv = lv;
            if (lv <= cygru_q8_max_level())
                printf(" %9.1f", gmacs(run_q8, &p, lv ? seconds : base_s));
            else
                printf(" %9s", "-");
        }
        for (int lv = 0; lv < 4; lv++) {
            p.lv = lv;
            if (lv <= cygru_bf16_max_level())
                printf(" %9.1f", gmacs(run_bf16, &p, lv ? seconds : base_s));
            else
                printf(" %9s", "-");
        }
        printf("\n");
        fflush(stdout);
        free(p.A), free(p.W), free(p.C), free(p.P), free(q), free(sc), free(p.qblock);
        free(wb), free(p.bblock), free(p.scratch);
    }
    return 0;
}
"""

SHAPES = "1x128x384,1x256x768,32x256x768,64x512x1536,3200x256x768"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="comma-separated MxKxN")
    ap.add_argument("--seconds", type=float, default=0.2, help="length of one timed batch")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"), help="C compiler")
    args = ap.parse_args(argv)
    if shutil.which(args.cc) is None:
        sys.exit(f"quant_kernels_bench: no C compiler {args.cc!r}")
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "bench.c"
        exe = pathlib.Path(tmp) / "bench"
        src.write_text(C_SOURCE)
        flags = ["-O3", "-fno-trapping-math", "-Wno-psabi", f"-I{INCLUDE}"]
        subprocess.run([args.cc, *flags, str(src), "-o", str(exe), "-lm"], check=True)
        print(f"machine: {platform.processor() or platform.machine()}; one thread; GMAC/s")
        print("columns: float32 packed and dot kernels (best level, then AVX2), then each")
        print("quantized variant as fmt/level (0 base, 1 AVX2, 2 AVX-512, 3 VNNI / AVX512-BF16)")
        sys.stdout.flush()
        subprocess.run([str(exe), str(args.seconds), *args.shapes.split(",")], check=True)


if __name__ == "__main__":
    main()

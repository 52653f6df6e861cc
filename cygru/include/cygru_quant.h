/* cygru_quant.h: the products of reduced-precision weights (cygru.quantize).
 *
 * C (M x N) = A (M x K, float32) @ W^T for a weight matrix W (N x K) held as
 *   int8: symmetric per output row, W[n, k] ~ q[n, k] * sw[n];
 *   bf16: W[n, k] rounded to bfloat16.
 * Everything around the products (biases, gate math, states) stays float32.
 *
 * Fixed arithmetic: every element C[i, n] is the result of one definition below,
 * whatever M, N, the row or column blocking, the thread split or the SIMD variant, so
 * results are bit-identical for any thread count, any cut of a stream into calls, any
 * batch size and on any CPU.
 *
 * int8 (dynamic quantization of the activations, per row):
 *   amax  = max_k |A[i, k]|
 *   sa    = amax / 127,  inv = 127 / amax                   (float32; amax < 2^-120:
 *   qa[k] = clamp(rint(A[i, k] * inv), -127, 127)              sa = 0, every qa = 0, so
 *                                                             that inv is finite)
 *   acc   = sum_k qa[k] * q[n, k]                             (int32: exact; |acc| <
 *                                                               127*128*K, K < 2^17)
 *   C     = (float)acc * (sa * sw[n])
 *   A row that is not finite (amax is inf or NaN) gives NaN for the whole row. Weights are
 *   quantized by the same row rule (cygru_q8_quantize_rows), from any source that gives
 *   q in [-128, 127] and sw (PyTorch's int8 weights may hold -128).
 *   Integer sums do not depend on their order, so each variant may block them freely:
 *   VNNI (vpdpbusd: unsigned x signed bytes) adds 128 to qa and subtracts 128 * sum_k q[n, k].
 *
 * bf16:
 *   b(v)  = v rounded to bfloat16, half to even; |v| < 2^-50 gives a zero of v's sign;
 *           inf stays inf, NaN becomes a quiet NaN (cygru_bf16_from_f32)
 *   acc   = +0; for each pair p = 0, 1, ... of k (k = 2p, 2p + 1; an odd K padded by a
 *           zero pair element):
 *             acc = acc + b(A[i, 2p+1]) * b(W[n, 2p+1])
 *             acc = acc + b(A[i, 2p])   * b(W[n, 2p])
 *           each a float32 addition of an exact product, rounded to nearest even: a
 *           fused multiply-add (two bf16 values multiply exactly in float32 unless the
 *           product passes float32's range; the product is exact there too, so
 *           2^64 * 2^64 added to -FLT_MAX gives 2^104 and +inf + (-2^144) gives +inf)
 *   C     = acc
 *   This is the arithmetic of AVX512-BF16's vdpbf16ps (odd element first, each step
 *   rounded once; its flushing of denormals never acts because operands below 2^-50
 *   are zero, so products and partial sums are 0 or at least 2^-114 in magnitude).
 *   Where that instruction gives other bits (checked once per process, on a fixed set
 *   of hard cases, by cygru_bf16_native_ok), the exact emulation runs instead.
 *   A packed block holds b() values: cygru_bf16_pack makes any bf16 bits one (it
 *   flushes below 2^-50 and makes NaN quiet), so raw bits cannot reach a denormal.
 *
 * Packed blocks (one per weight matrix; an (3H x K) weight is three blocks, one per gate,
 * so that a piece of units [u0, u1) with u0 a multiple of 16 reads whole panels):
 *   int8: NP = ceil(N / 16) panels; panel p holds, per group g of 4 k's (K4 = K rounded
 *         up to 4), 64 bytes: byte c*4 + j = q[16p + c][4g + j] (0 past N or K); then
 *         NP*16 float32 scales sw, then NP*16 int32 row sums sum_k q[n, k].
 *   bf16: panel p holds, per pair g (K2 = K rounded up to 2), 64 bytes: element
 *         c*2 + j = b(W[16p + c][2g + j]) (0 past N or K).
 *   Block sizes are multiples of 64 bytes; blocks are position independent.
 *
 * Variants (levels): 0 portable C (the definition), 1 AVX2, 2 AVX-512 (int8: AVX512BW,
 * bf16: AVX512F emulation), 3 the instructions made for it (AVX512-VNNI, AVX512-BF16);
 * the x86 ones are in cygru_quant_x86.h. Every level gives the same bits; tests force
 * each (cygru_q8_at_level, cygru_bf16_at_level, cygru_quant_forced).
 *   cygru_*_max_level: the highest level this CPU runs with the definition's bits (bf16
 *     level 3 only where cygru_bf16_native_ok's self-check passed);
 *   cygru_*_best_level: the level cygru_*_gemm uses, the highest except bf16 level 2
 *     where a once-per-process timing finds the emulation faster than vdpbf16ps (Intel's
 *     Sapphire Rapids: vdpbf16ps takes four FMAs' issue slots) -- and even there
 *     vdpbf16ps under CYGRU_BF16_NATIVE_ROWS rows, where the emulation's register tile
 *     does not fill.
 * cygru_*_gemm_gates computes G blocks (a weight's gate blocks) with the rows of A
 * prepared once: the same bits as G calls of cygru_*_gemm.
 *
 * Scratch: size it with cygru_q8_scratch_size / cygru_bf16_scratch_size (CYGRU_QROWS
 * prepared rows, widened to 16 or 32 bits where a variant needs it); one per thread.
 */
#ifndef CYGRU_QUANT_H
#define CYGRU_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cygru_cpu.h"

#define CYGRU_QPANEL 16
/* rows quantized (int8) or converted (bf16) at a time into the scratch */
#define CYGRU_QROWS 32

static inline int cygru_q_panels(int N) { return (N + CYGRU_QPANEL - 1) / CYGRU_QPANEL; }
static inline ptrdiff_t cygru_q8_k4(int K) { return ((ptrdiff_t)K + 3) & ~(ptrdiff_t)3; }
static inline ptrdiff_t cygru_bf16_k2(int K) { return ((ptrdiff_t)K + 1) & ~(ptrdiff_t)1; }

/* ---- int8 ------------------------------------------------------------------------ */

static inline size_t cygru_q8_panel_bytes(int K) { return (size_t)cygru_q8_k4(K) * CYGRU_QPANEL; }

static inline size_t cygru_q8_block_size(int N, int K) {
    size_t np = (size_t)cygru_q_panels(N);
    return np * cygru_q8_panel_bytes(K) + np * CYGRU_QPANEL * (sizeof(float) + sizeof(int32_t));
}
static inline const int8_t *cygru_q8_panels(const void *block) { return (const int8_t *)block; }
static inline const float *cygru_q8_scales(const void *block, int N, int K) {
    return (const float *)((const char *)block +
                           (size_t)cygru_q_panels(N) * cygru_q8_panel_bytes(K));
}
static inline const int32_t *cygru_q8_sums(const void *block, int N, int K) {
    return (const int32_t *)(cygru_q8_scales(block, N, K) + (size_t)cygru_q_panels(N) * CYGRU_QPANEL);
}

/* Bytes per prepared activation row in the scratch: room for K4 int16 values (the
 * AVX2 and AVX512BW variants widen them) and the variants' last 16-element store. */
static inline ptrdiff_t cygru_q8_row_stride(int K) {
    return ((2 * cygru_q8_k4(K) + 63) & ~(ptrdiff_t)63) + 64;
}

/* Bytes of scratch a product with inner size K needs (any alignment): CYGRU_QROWS
 * prepared rows, then their scales and flags. */
static inline size_t cygru_q8_scratch_size(int K) {
    return 64 + CYGRU_QROWS * (size_t)cygru_q8_row_stride(K) +
           CYGRU_QROWS * (sizeof(float) + sizeof(int));
}

/* Rows whose largest magnitude is below 2^-120 (float32 bits 0x03800000) quantize to
 * zeros with scale 0: 127 / amax is finite above it (a smaller amax would give an
 * infinite inv and NaN = 0 * inv products to convert). */
#define CYGRU_Q8_TINY 7.52316384526264005e-37f

/* The row rule: one row's scale and quantized values (qa[K..K4) = 0). Returns 0, or 1
 * when the row is not finite (nothing is written to q then). */
static inline int cygru_q8_quantize_row(int K, const float *a, int8_t *q, float *scale) {
    float amax = 0.0f;
    for (int k = 0; k < K; k++) {
        float v = fabsf(a[k]);
        amax = v > amax ? v : amax;
        if (v != v)
            amax = v;
    }
    if (!(amax <= 3.402823466e+38f))
        return 1; /* inf or NaN */
    if (amax < CYGRU_Q8_TINY) {
        *scale = 0.0f;
        memset(q, 0, (size_t)cygru_q8_k4(K));
        return 0;
    }
    float inv = 127.0f / amax;
    *scale = amax / 127.0f;
    for (int k = 0; k < K; k++) {
        float r = rintf(a[k] * inv);
        r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
        q[k] = (int8_t)r;
    }
    for (ptrdiff_t k = K; k < cygru_q8_k4(K); k++)
        q[k] = 0;
    return 0;
}

/* Weights: M rows of A (row stride lda) -> q (row stride ldq >= K4) and scale; a row
 * that is not finite gets scale NaN and q = 0. */
static inline void cygru_q8_quantize_rows(int M, int K, const float *A, ptrdiff_t lda,
                                          int8_t *q, ptrdiff_t ldq, float *scale) {
    for (int i = 0; i < M; i++) {
        if (cygru_q8_quantize_row(K, A + i * lda, q + i * ldq, scale + i)) {
            memset(q + i * ldq, 0, (size_t)cygru_q8_k4(K));
            scale[i] = NAN;
        }
    }
}

/* Pack q (N x K, row stride ldq) and its row scales into a block. */
static inline void cygru_q8_pack(int N, int K, const int8_t *q, ptrdiff_t ldq,
                                 const float *scale, void *block) {
    ptrdiff_t K4 = cygru_q8_k4(K);
    int8_t *P = (int8_t *)block;
    float *sw = (float *)cygru_q8_scales(block, N, K);
    int32_t *sums = (int32_t *)cygru_q8_sums(block, N, K);
    memset(block, 0, cygru_q8_block_size(N, K));
    for (int n = 0; n < N; n++) {
        int p = n / CYGRU_QPANEL, c = n % CYGRU_QPANEL;
        int32_t s = 0;
        for (int k = 0; k < K; k++) {
            int8_t v = q[n * ldq + k];
            P[(ptrdiff_t)p * K4 * CYGRU_QPANEL + (k / 4) * 64 + c * 4 + k % 4] = v;
            s += v;
        }
        sw[n] = scale[n];
        sums[n] = s;
    }
}

/* The variants' signature: C[i, j] = (A @ W^T)[i, n0 + j] for i < M, j < N, with W's
 * block `block` (Nb x K, rows n0 .. n0 + N - 1 of it; n0 a multiple of 16). */
typedef void (*cygru_q_fn)(int M, int K, const float *A, ptrdiff_t lda, const void *block,
                           int Nb, int n0, int N, float *C, ptrdiff_t ldc, void *scratch);

/* The same for G blocks of the same (Nb x K) shape, block g at (char *)block + g * bstride,
 * its results at C + g * cstride: exactly G calls of the cygru_q_fn, with the rows of A
 * prepared (quantized, converted) once instead of G times (the three gates of a GRU). */
typedef void (*cygru_qg_fn)(int G, size_t bstride, ptrdiff_t cstride, int M, int K,
                            const float *A, ptrdiff_t lda, const void *block, int Nb, int n0,
                            int N, float *C, ptrdiff_t ldc, void *scratch);

static inline void *cygru_q_align64(void *p) {
    return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

static void cygru_q8_gemm_base(int M, int K, const float *A, ptrdiff_t lda, const void *block,
                               int Nb, int n0, int N, float *C, ptrdiff_t ldc, void *scratch) {
    ptrdiff_t K4 = cygru_q8_k4(K);
    const int8_t *P = cygru_q8_panels(block);
    const float *sw = cygru_q8_scales(block, Nb, K);
    int8_t *qa = (int8_t *)cygru_q_align64(scratch);
    float sa;
    for (int i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (cygru_q8_quantize_row(K, A + i * lda, qa, &sa)) {
            for (int j = 0; j < N; j++)
                c[j] = NAN;
            continue;
        }
        for (int j = 0; j < N; j++) {
            int n = n0 + j;
            const int8_t *w = P + (ptrdiff_t)(n / CYGRU_QPANEL) * K4 * CYGRU_QPANEL +
                              (n % CYGRU_QPANEL) * 4;
            int32_t acc = 0;
            for (ptrdiff_t g = 0; g < K4 / 4; g++)
                for (int e = 0; e < 4; e++)
                    acc += (int32_t)qa[g * 4 + e] * (int32_t)w[g * 64 + e];
            c[j] = (float)acc * (sa * sw[n]);
        }
    }
}

/* ---- bf16 ------------------------------------------------------------------------ */

/* 2^-50 as float32 bits: magnitudes below it become zero */
#define CYGRU_BF16_FLUSH_BITS 0x26800000u

static inline uint16_t cygru_bf16_from_f32(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    uint32_t mag = u & 0x7FFFFFFFu;
    if (mag >= 0x7F800000u) /* inf, or NaN made quiet */
        return (uint16_t)((u >> 16) | (mag > 0x7F800000u ? 0x0040u : 0u));
    if (mag < CYGRU_BF16_FLUSH_BITS)
        return (uint16_t)((u >> 16) & 0x8000u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float cygru_f32_from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static inline void cygru_bf16_from_f32_n(ptrdiff_t n, const float *a, uint16_t *out) {
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = cygru_bf16_from_f32(a[i]);
}

static inline size_t cygru_bf16_panel_bytes(int K) {
    return (size_t)cygru_bf16_k2(K) * CYGRU_QPANEL * sizeof(uint16_t);
}
static inline size_t cygru_bf16_block_size(int N, int K) {
    return (size_t)cygru_q_panels(N) * cygru_bf16_panel_bytes(K);
}
/* Bytes per prepared activation row in the scratch: room for K2 float32 values (the
 * emulations widen them) and the variants' last 16-element store. */
static inline ptrdiff_t cygru_bf16_row_stride(int K) {
    return ((4 * cygru_bf16_k2(K) + 63) & ~(ptrdiff_t)63) + 64;
}
/* Bytes of scratch a product with inner size K needs (any alignment). */
static inline size_t cygru_bf16_scratch_size(int K) {
    return 64 + CYGRU_QROWS * (size_t)cygru_bf16_row_stride(K);
}

/* b() of a bf16 value: flushed below 2^-50, NaN made quiet (else unchanged). */
static inline uint16_t cygru_bf16_canonical(uint16_t v) {
    uint16_t mag = v & 0x7FFFu;
    if (mag > 0x7F80u)
        return (uint16_t)(v | 0x0040u);
    if (mag < (CYGRU_BF16_FLUSH_BITS >> 16))
        return (uint16_t)(v & 0x8000u);
    return v;
}

/* Pack wb (N x K bf16 values, row stride ldw) into a block (each value made a b() value
 * by cygru_bf16_canonical: the identity on cygru_bf16_from_f32's results). */
static inline void cygru_bf16_pack(int N, int K, const uint16_t *wb, ptrdiff_t ldw, void *block) {
    ptrdiff_t K2 = cygru_bf16_k2(K);
    uint16_t *P = (uint16_t *)block;
    memset(block, 0, cygru_bf16_block_size(N, K));
    for (int n = 0; n < N; n++) {
        int p = n / CYGRU_QPANEL, c = n % CYGRU_QPANEL;
        for (int k = 0; k < K; k++)
            P[(ptrdiff_t)p * K2 * CYGRU_QPANEL + (k / 2) * 32 + c * 2 + k % 2] =
                cygru_bf16_canonical(wb[n * ldw + k]);
    }
}

/* acc + x * y rounded once (x, y bf16 values): the product is exact in float32 unless
 * it passes float32's range; there it is exact in double, and so is the sum wherever
 * it can come back into range (|product| < 2^130, |acc| < 2^128, both multiples of
 * 2^103: 27 bits), so rounding that double to float32 rounds once. */
static inline float cygru_bf16_fma(float acc, float x, float y) {
    float p = x * y;
    if (fabsf(p) <= 3.402823466e+38f)
        return acc + p;
    return (float)((double)acc + (double)x * (double)y);
}

static void cygru_bf16_gemm_base(int M, int K, const float *A, ptrdiff_t lda, const void *block,
                                 int Nb, int n0, int N, float *C, ptrdiff_t ldc, void *scratch) {
    ptrdiff_t K2 = cygru_bf16_k2(K);
    const uint16_t *P = (const uint16_t *)block;
    uint16_t *ab = (uint16_t *)cygru_q_align64(scratch);
    (void)Nb;
    for (int i = 0; i < M; i++) {
        float *c = C + i * ldc;
        cygru_bf16_from_f32_n(K, A + i * lda, ab);
        if (K2 > K)
            ab[K] = 0;
        for (int j = 0; j < N; j++) {
            int n = n0 + j;
            const uint16_t *w = P + (ptrdiff_t)(n / CYGRU_QPANEL) * K2 * CYGRU_QPANEL +
                                (n % CYGRU_QPANEL) * 2;
            float acc = 0.0f;
            /* k = 1, 0, 3, 2, ...: each pair's odd element first. One statement per
             * term: GCC 12 at -O3 mis-vectorized the two-statement form of this ordered
             * sum. A finite product is exact, so a contracted fma gives the same bits. */
            for (ptrdiff_t k = 0; k < K2; k++) {
                ptrdiff_t e = k ^ 1;
                acc = cygru_bf16_fma(acc, cygru_f32_from_bf16(ab[e]),
                                     cygru_f32_from_bf16(w[(e >> 1) * 32 + (e & 1)]));
            }
            c[j] = acc;
        }
    }
}

static void cygru_q8_base_gemm_gates(int G, size_t bstride, ptrdiff_t cstride, int M, int K,
                                     const float *A, ptrdiff_t lda, const void *block, int Nb,
                                     int n0, int N, float *C, ptrdiff_t ldc, void *scratch) {
    for (int g = 0; g < G; g++)
        cygru_q8_gemm_base(M, K, A, lda, (const char *)block + g * bstride, Nb, n0, N,
                           C + g * cstride, ldc, scratch);
}
static void cygru_bf16_base_gemm_gates(int G, size_t bstride, ptrdiff_t cstride, int M, int K,
                                       const float *A, ptrdiff_t lda, const void *block,
                                       int Nb, int n0, int N, float *C, ptrdiff_t ldc,
                                       void *scratch) {
    for (int g = 0; g < G; g++)
        cygru_bf16_gemm_base(M, K, A, lda, (const char *)block + g * bstride, Nb, n0, N,
                             C + g * cstride, ldc, scratch);
}

/* ---- variants and dispatch -------------------------------------------------------- */

#define CYGRU_QLEVEL_BASE 0
#define CYGRU_QLEVEL_AVX2 1
#define CYGRU_QLEVEL_AVX512 2
#define CYGRU_QLEVEL_NATIVE 3

#if CYGRU_HAVE_X86_VARIANTS
#include <cpuid.h>

#include "cygru_quant_x86.h"
#endif

/* -1: the best level; else the level every quantized product uses where this CPU runs
 * it (tests and benchmarks force each variant; a level above the highest this CPU runs
 * leaves the best). One per translation unit: the engine's products are in _kernels. */
static int cygru_quant_forced = -1;

#if CYGRU_HAVE_X86_VARIANTS
#if CYGRU_Q8_HAVE_VNNI
#define CYGRU_Q8_NATIVE_FN cygru_q8_vnni_gemm
#define CYGRU_Q8_NATIVE_GATES_FN cygru_q8_vnni_gemm_gates
#else
#define CYGRU_Q8_NATIVE_FN cygru_q8_avx512_gemm
#define CYGRU_Q8_NATIVE_GATES_FN cygru_q8_avx512_gemm_gates
#endif
#if CYGRU_BF16_HAVE_NATIVE
#define CYGRU_BF16_NATIVE_FN cygru_bf16_native_gemm
#define CYGRU_BF16_NATIVE_GATES_FN cygru_bf16_native_gemm_gates
#else
#define CYGRU_BF16_NATIVE_FN cygru_bf16_avx512_gemm
#define CYGRU_BF16_NATIVE_GATES_FN cygru_bf16_avx512_gemm_gates
#endif
static const cygru_q_fn cygru_q8_kernels[] = {cygru_q8_gemm_base, cygru_q8_avx2_gemm,
                                               cygru_q8_avx512_gemm, CYGRU_Q8_NATIVE_FN};
static const cygru_q_fn cygru_bf16_kernels[] = {cygru_bf16_gemm_base, cygru_bf16_avx2_gemm,
                                                   cygru_bf16_avx512_gemm, CYGRU_BF16_NATIVE_FN};
static const cygru_qg_fn cygru_q8_gates_kernels[] = {
    cygru_q8_base_gemm_gates, cygru_q8_avx2_gemm_gates, cygru_q8_avx512_gemm_gates,
    CYGRU_Q8_NATIVE_GATES_FN};
static const cygru_qg_fn cygru_bf16_gates_kernels[] = {
    cygru_bf16_base_gemm_gates, cygru_bf16_avx2_gemm_gates, cygru_bf16_avx512_gemm_gates,
    CYGRU_BF16_NATIVE_GATES_FN};

/* CPUID bits the compilers' __builtin_cpu_supports may not know by name (AVX-512 state
 * being enabled by the OS is what __builtin_cpu_supports("avx512f") reports) */
static inline int cygru_q_cpuid_vnni(void) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (c >> 11) & 1; /* AVX512_VNNI */
}
static inline int cygru_q_cpuid_bf16(void) {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (a < 1) /* no subleaf 1 */
        return 0;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1; /* AVX512_BF16 */
}

/* the x86 level without the native instructions */
static inline int cygru_q_simd_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("fma"))
        return CYGRU_QLEVEL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return CYGRU_QLEVEL_AVX2;
    return CYGRU_QLEVEL_BASE;
}
#else
static const cygru_q_fn cygru_q8_kernels[] = {cygru_q8_gemm_base, cygru_q8_gemm_base,
                                               cygru_q8_gemm_base, cygru_q8_gemm_base};
static const cygru_q_fn cygru_bf16_kernels[] = {cygru_bf16_gemm_base, cygru_bf16_gemm_base,
                                                   cygru_bf16_gemm_base, cygru_bf16_gemm_base};
static const cygru_qg_fn cygru_q8_gates_kernels[] = {
    cygru_q8_base_gemm_gates, cygru_q8_base_gemm_gates, cygru_q8_base_gemm_gates,
    cygru_q8_base_gemm_gates};
static const cygru_qg_fn cygru_bf16_gates_kernels[] = {
    cygru_bf16_base_gemm_gates, cygru_bf16_base_gemm_gates, cygru_bf16_base_gemm_gates,
    cygru_bf16_base_gemm_gates};
#define CYGRU_Q8_HAVE_VNNI 0
#define CYGRU_BF16_HAVE_NATIVE 0
static inline int cygru_q_simd_level(void) { return CYGRU_QLEVEL_BASE; }
#endif

/* A small xorshift generator for the self-check's fixed inputs. */
static inline uint32_t cygru_q_rand(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* A bf16 value for the self-check: sign, exponent in [e0, e0 + span), random mantissa;
 * about one in sixteen a zero of either sign. */
static inline uint16_t cygru_q_rand_bf16(uint32_t *s, int e0, int span) {
    uint32_t r = cygru_q_rand(s);
    uint16_t sign = (uint16_t)((r >> 31) << 15);
    if ((r & 15) == 0)
        return sign;
    int e = e0 + (int)((r >> 8) % (uint32_t)span);
    return (uint16_t)(sign | (uint16_t)(e << 7) | (uint16_t)((r >> 4) & 0x7F));
}

/* 1 when the CPU's AVX512-BF16 variant gives the definition's bits on a fixed set of
 * hard cases: random exponents over the whole range that b() leaves (products that
 * round, overflow or cancel), narrow exponents (long chains of roundings and ties),
 * signed zeros, infinities, and the cases where a fused step and a rounded product
 * differ (an overflowing product added to a large opposite partial sum; inf + -huge);
 * 0 when it gives other bits; -1 when this CPU or compiler has no such variant. Run once
 * per process (threads that race there all compute and store the same value). */
static inline int cygru_bf16_native_ok(void) {
    static int ok = -2;
    int v = __atomic_load_n(&ok, __ATOMIC_RELAXED);
    if (v != -2)
        return v;
    v = -1;
#if CYGRU_BF16_HAVE_NATIVE
    if (cygru_q_simd_level() == CYGRU_QLEVEL_AVX512 && cygru_q_cpuid_bf16()) {
        enum { QM = 5, QK = 39, QN = 32, QSETS = 6 };
        static const int e0[QSETS] = {77, 124, 1, 170, 120, 110};
        static const int span[QSETS] = {100, 7, 254, 25, 16, 40};
        uint16_t wb[QN * QK];
        float a[QM * QK], c0[QM * QN], c1[QM * QN];
        /* the block (2 panels of 20 pairs) and the scratch the QM rows use (QM < CYGRU_QROWS,
         * so a variant prepares QM rows of cygru_bf16_row_stride(QK) = 256 bytes) */
        unsigned char block[2 * 20 * 64], scr[64 + QM * 256];
        uint32_t seed = 0x9E3779B9u;
        v = 1;
        for (int set = 0; set < QSETS + 1 && v == 1; set++) {
            for (int i = 0; i < QN * QK; i++)
                wb[i] = set < QSETS ? cygru_q_rand_bf16(&seed, e0[set], span[set]) : 0;
            for (int i = 0; i < QM * QK; i++) {
                uint16_t h = set < QSETS ? cygru_q_rand_bf16(&seed, e0[set], span[set]) : 0;
                a[i] = cygru_f32_from_bf16(cygru_bf16_canonical(h));
            }
            if (set == QSETS) {
                /* row 0, column 0: -1.98 * 2^127 (pair 0, odd), then 2^64 * 2^64
                 * (pair 1, odd): fused about 2^121, not inf; row 1, column 1: 2^100 * 2^100
                 * then -2^72 * 2^72: +inf stays +inf (not NaN); row 2: inf and -0 */
                a[1] = cygru_f32_from_bf16(0x5FFF), wb[1] = 0xDEFF;
                a[3] = cygru_f32_from_bf16(0x5F80), wb[3] = 0x5F80;
                a[QK + 1] = cygru_f32_from_bf16(0x71C0), wb[QK + 1] = 0x71C0;
                a[QK + 3] = cygru_f32_from_bf16(0x63C0), wb[QK + 3] = 0xE3C0;
                a[2 * QK + 5] = INFINITY, a[2 * QK + 6] = -0.0f;
                wb[2 * QK + 5] = 0x3F80, wb[2 * QK + 6] = 0x8000;
                wb[3 * QK + 5] = 0x0000;
            }
            cygru_bf16_pack(QN, QK, wb, QK, block);
            cygru_bf16_gemm_base(QM, QK, a, QK, block, QN, 0, QN, c0, QN, scr);
            cygru_bf16_native_gemm(QM, QK, a, QK, block, QN, 0, QN, c1, QN, scr);
            for (int i = 0; i < QM * QN; i++) {
                uint32_t x, y;
                memcpy(&x, &c0[i], sizeof x);
                memcpy(&y, &c1[i], sizeof y);
                if (x != y && !(c0[i] != c0[i] && c1[i] != c1[i]))
                    v = 0;
            }
        }
    }
#endif
    __atomic_store_n(&ok, v, __ATOMIC_RELAXED);
    return v;
}

static inline int cygru_q_detect_q8(void) {
    int lv = cygru_q_simd_level();
#if CYGRU_HAVE_X86_VARIANTS && CYGRU_Q8_HAVE_VNNI
    if (lv == CYGRU_QLEVEL_AVX512 && cygru_q_cpuid_vnni())
        lv = CYGRU_QLEVEL_NATIVE;
#endif
    return lv;
}

/* The best int8 level this CPU runs (detected once), the one cygru_q8_gemm uses. */
static inline int cygru_q8_best_level(void) {
    static int level = -1;
    int v = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (v < 0) {
        v = cygru_q_detect_q8();
        __atomic_store_n(&level, v, __ATOMIC_RELAXED);
    }
    return v;
}
/* int8: every level this CPU runs is at most as fast as the highest */
static inline int cygru_q8_max_level(void) { return cygru_q8_best_level(); }

/* The highest bf16 level this CPU runs with the definition's bits: 3 only where
 * cygru_bf16_native_ok passed, so that results never depend on the CPU. */
static inline int cygru_bf16_max_level(void) {
    static int level = -1;
    int v = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (v < 0) {
        v = cygru_bf16_native_ok() == 1 ? CYGRU_QLEVEL_NATIVE : cygru_q_simd_level();
        __atomic_store_n(&level, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* Whether vdpbf16ps is faster than the AVX-512 emulation here (measured once): 1 yes,
 * 0 no, -1 no level 3 to run. */
static inline int cygru_bf16_native_fast(void) {
    static int fast = -2;
    int v = __atomic_load_n(&fast, __ATOMIC_RELAXED);
    if (v == -2) {
        v = -1;
#if CYGRU_HAVE_X86_VARIANTS && CYGRU_BF16_HAVE_NATIVE
        if (cygru_bf16_max_level() == CYGRU_QLEVEL_NATIVE)
            v = cygru_bf16_probe_native_faster();
#endif
        __atomic_store_n(&fast, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* The bf16 level cygru_bf16_gemm uses: the highest, except 2 where the exact emulation
 * outruns vdpbf16ps (the same bits either way). */
static inline int cygru_bf16_best_level(void) {
    int max = cygru_bf16_max_level();
    return max == CYGRU_QLEVEL_NATIVE && cygru_bf16_native_fast() != 1 ? CYGRU_QLEVEL_AVX512
                                                                       : max;
}

static inline cygru_q_fn cygru_q8_at_level(int level) { return cygru_q8_kernels[level]; }
static inline cygru_q_fn cygru_bf16_at_level(int level) { return cygru_bf16_kernels[level]; }
static inline cygru_qg_fn cygru_q8_gates_at_level(int level) {
    return cygru_q8_gates_kernels[level];
}
static inline cygru_qg_fn cygru_bf16_gates_at_level(int level) {
    return cygru_bf16_gates_kernels[level];
}

/* the level in use: a forced one this CPU runs, else the best */
static inline int cygru_q8_level(void) {
    int f = cygru_quant_forced;
    return f >= 0 && f <= cygru_q8_max_level() ? f : cygru_q8_best_level();
}
static inline int cygru_bf16_level(void) {
    int f = cygru_quant_forced;
    return f >= 0 && f <= cygru_bf16_max_level() ? f : cygru_bf16_best_level();
}

static inline void cygru_q8_gemm(int M, int K, const float *A, ptrdiff_t lda, const void *block,
                                 int Nb, int n0, int N, float *C, ptrdiff_t ldc, void *scratch) {
    cygru_q8_kernels[cygru_q8_level()](M, K, A, lda, block, Nb, n0, N, C, ldc, scratch);
}
/* Rows below which vdpbf16ps runs even where the emulation has the higher throughput:
 * under the emulation's register tile of 8 rows its weight splits are not shared (on
 * Sapphire Rapids, 45 against 35 GMAC/s for one row; the same bits either way). */
#define CYGRU_BF16_NATIVE_ROWS 8

/* the bf16 level for M rows */
static inline int cygru_bf16_level_rows(int M) {
    int lv = cygru_bf16_level();
    if (lv == CYGRU_QLEVEL_AVX512 && M < CYGRU_BF16_NATIVE_ROWS && cygru_quant_forced < 0 &&
        cygru_bf16_max_level() == CYGRU_QLEVEL_NATIVE)
        lv = CYGRU_QLEVEL_NATIVE;
    return lv;
}

static inline void cygru_bf16_gemm(int M, int K, const float *A, ptrdiff_t lda,
                                   const void *block, int Nb, int n0, int N, float *C,
                                   ptrdiff_t ldc, void *scratch) {
    cygru_bf16_kernels[cygru_bf16_level_rows(M)](M, K, A, lda, block, Nb, n0, N, C, ldc,
                                                 scratch);
}

/* G products on G blocks bstride bytes apart (a weight's gate blocks, back to back), the
 * results cstride floats apart; the rows of A are prepared once. The same bits as G
 * calls of cygru_q8_gemm / cygru_bf16_gemm. */
static inline void cygru_q8_gemm_gates(int G, size_t bstride, ptrdiff_t cstride, int M, int K,
                                       const float *A, ptrdiff_t lda, const void *block,
                                       int Nb, int n0, int N, float *C, ptrdiff_t ldc,
                                       void *scratch) {
    cygru_q8_gates_kernels[cygru_q8_level()](G, bstride, cstride, M, K, A, lda, block, Nb, n0,
                                             N, C, ldc, scratch);
}
static inline void cygru_bf16_gemm_gates(int G, size_t bstride, ptrdiff_t cstride, int M,
                                         int K, const float *A, ptrdiff_t lda,
                                         const void *block, int Nb, int n0, int N, float *C,
                                         ptrdiff_t ldc, void *scratch) {
    cygru_bf16_gates_kernels[cygru_bf16_level_rows(M)](G, bstride, cstride, M, K, A, lda,
                                                       block, Nb, n0, N, C, ldc, scratch);
}

#endif

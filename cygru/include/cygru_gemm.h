/* cygru_gemm.h: the float32 recurrent product with W packed once per sequence.
 *
 * Every time step multiplies the running state S (M x K, M = active batch rows,
 * K = hidden size) by the same W^T (W: N x K, N = 3H). BLAS repacks W on every
 * call (a profile of the medium config showed sgemm_incopy at 15% of the forward).
 * Here W is packed once per call into panels of 16 output columns,
 *     P[(p*K + k)*16 + c] = W[p*16 + c][k]   (zero past N),
 * and a register-blocked kernel streams each panel from L1 while it sweeps
 * blocks of rows. The same packed layout serves every step of the sequence.
 *
 * The kernel is written with GCC vector extensions (16 floats per vector) and
 * compiled three times, for AVX-512, AVX2+FMA and the portable baseline; the best
 * one the CPU supports is picked at run time. Row blocks are 8 rows with
 * AVX-512 (8 independent accumulators hide the FMA latency) and 4 rows otherwise
 * (4 x 2 ymm = 8 accumulators on AVX2).
 *
 * Rounding: products are summed over k in increasing order with FMA where the
 * CPU has it, one chain per element whatever the row count, so results can differ
 * from BLAS in the last bits (not across runs, calls, chunks or thread counts).
 */
#ifndef CYGRU_GEMM_H
#define CYGRU_GEMM_H

#include <stddef.h>
#include <string.h>

#include "cygru_cpu.h"

#define CYGRU_PANEL 16

typedef float cygru_v16 __attribute__((vector_size(64)));

/* Elements of the packed buffer for an N x K matrix. */
static inline ptrdiff_t cygru_packed_size(ptrdiff_t N, ptrdiff_t K) {
    return ((N + CYGRU_PANEL - 1) / CYGRU_PANEL) * CYGRU_PANEL * K;
}

typedef float cygru_v4 __attribute__((vector_size(16)));
#if defined(__clang__)
#define CYGRU_SHUF4(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
typedef int cygru_iv4 __attribute__((vector_size(16)));
#define CYGRU_SHUF4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (cygru_iv4){i0, i1, i2, i3})
#endif

/* One full panel of contiguous rows (sk == 1, K % 4 == 0): 4x4 blocks transposed in
 * registers, so reads and writes are both 16-byte vectors (twice as fast as the
 * element loop below, which reads a column of 16 rows per k). */
static inline void cygru_pack_rows_panel(int K, const float *W, ptrdiff_t sn, float *dst) {
    for (int c0 = 0; c0 < CYGRU_PANEL; c0 += 4) {
        const float *r0 = W + (ptrdiff_t)c0 * sn;
        for (int k = 0; k < K; k += 4) {
            cygru_v4 a, b, c, d;
            memcpy(&a, r0 + k, sizeof a);
            memcpy(&b, r0 + sn + k, sizeof b);
            memcpy(&c, r0 + 2 * sn + k, sizeof c);
            memcpy(&d, r0 + 3 * sn + k, sizeof d);
            cygru_v4 ab_lo = CYGRU_SHUF4(a, b, 0, 4, 1, 5);
            cygru_v4 ab_hi = CYGRU_SHUF4(a, b, 2, 6, 3, 7);
            cygru_v4 cd_lo = CYGRU_SHUF4(c, d, 0, 4, 1, 5);
            cygru_v4 cd_hi = CYGRU_SHUF4(c, d, 2, 6, 3, 7);
            cygru_v4 o0 = CYGRU_SHUF4(ab_lo, cd_lo, 0, 1, 4, 5);
            cygru_v4 o1 = CYGRU_SHUF4(ab_lo, cd_lo, 2, 3, 6, 7);
            cygru_v4 o2 = CYGRU_SHUF4(ab_hi, cd_hi, 0, 1, 4, 5);
            cygru_v4 o3 = CYGRU_SHUF4(ab_hi, cd_hi, 2, 3, 6, 7);
            float *o = dst + (ptrdiff_t)k * CYGRU_PANEL + c0;
            memcpy(o, &o0, sizeof o0);
            memcpy(o + CYGRU_PANEL, &o1, sizeof o1);
            memcpy(o + 2 * CYGRU_PANEL, &o2, sizeof o2);
            memcpy(o + 3 * CYGRU_PANEL, &o3, sizeof o3);
        }
    }
}

/* Pack an N x K operand into panels (layout above): element (n, k) is W[n*sn + k*sk].
 * (sn, sk) = (ldw, 1) packs the rows of W, for x @ W^T; (1, ldw) packs its columns,
 * for the backward's dh_{t-1} = dgh @ W_hh, whose right operand is W_hh itself. */
static inline void cygru_pack_f(int N, int K, const float *W, ptrdiff_t sn, ptrdiff_t sk,
                                float *P) {
    int panels = (N + CYGRU_PANEL - 1) / CYGRU_PANEL;
    for (int p = 0; p < panels; p++) {
        float *panel = P + (ptrdiff_t)p * K * CYGRU_PANEL;
        const float *w = W + (ptrdiff_t)p * CYGRU_PANEL * sn;
        int full = N - p * CYGRU_PANEL >= CYGRU_PANEL;
        if (full && sk == 1 && K % 4 == 0) {
            cygru_pack_rows_panel(K, w, sn, panel);
        } else if (full && sn == 1) {
            /* a panel's 16 columns at each k are contiguous: plain copies */
            for (int k = 0; k < K; k++)
                memcpy(panel + (ptrdiff_t)k * CYGRU_PANEL, w + (ptrdiff_t)k * sk,
                       CYGRU_PANEL * sizeof(float));
        } else {
            for (int k = 0; k < K; k++) {
                float *dst = panel + (ptrdiff_t)k * CYGRU_PANEL;
                for (int c = 0; c < CYGRU_PANEL; c++) {
                    int n = p * CYGRU_PANEL + c;
                    dst[c] = n < N ? W[(ptrdiff_t)n * sn + (ptrdiff_t)k * sk] : 0.0f;
                }
            }
        }
    }
}

/* dst[0:ncols] = v (accumulate == 0) or dst[0:ncols] += v (accumulate != 0) */
static inline void cygru_store_cols(float *dst, const cygru_v16 *v, int ncols, int accumulate) {
    if (accumulate) {
        cygru_v16 old = {0};
        memcpy(&old, dst, (size_t)ncols * sizeof(float));
        old += *v;
        memcpy(dst, &old, (size_t)ncols * sizeof(float));
    } else if (ncols == CYGRU_PANEL) {
        memcpy(dst, v, sizeof(cygru_v16));
    } else {
        memcpy(dst, v, (size_t)ncols * sizeof(float));
    }
}

/* C[i, n] = sum_k A[i, k] * W[n, k] for rows i < M and panels [p0, p1).
 * A: row stride lda; C: row stride ldc; N: total columns (for the tail panel).
 * Rows are taken in blocks of CYGRU_ROW_BLOCK so that the block of A stays in
 * cache while every panel sweeps it (the input projection has thousands of rows;
 * the recurrent product has one block). */
#define CYGRU_ROW_BLOCK 96
/* Every element C[i, n] is one FMA chain over k = 0, 1, ..., K-1 in that order, in the
 * row blocks and in the leftover rows alike, so its value does not depend on M, on the
 * row's place in a block, or on which panels a call covers: a sequence projected in
 * chunks of any size, or split over any number of threads, gives the same bits. The
 * leftover rows (and B = 1) hide the FMA latency with up to four panels in flight
 * instead of splitting the sum over k (which would round differently). */
#define CYGRU_LEFTOVER_PANELS(NP)                                                   \
    for (; p + NP <= p1; p += NP)                                                   \
    for (int i = full_end; i < i1; i++) {   /* the panels stay in L1 across rows */ \
        const float *a = A + (ptrdiff_t)i * lda;                                    \
        cygru_v16 acc[NP];                                                          \
        const float *pp[NP];                                                        \
        for (int q = 0; q < NP; q++) {                                              \
            acc[q] = (cygru_v16){0};                                                \
            pp[q] = P + (ptrdiff_t)(p + q) * K * CYGRU_PANEL;                       \
        }                                                                           \
        for (int k = 0; k < K; k++) {                                               \
            for (int q = 0; q < NP; q++) {                                          \
                cygru_v16 w;                                                        \
                memcpy(&w, pp[q] + (ptrdiff_t)k * CYGRU_PANEL, sizeof w);           \
                acc[q] += a[k] * w;                                                 \
            }                                                                       \
        }                                                                           \
        for (int q = 0; q < NP; q++) {                                              \
            int n0 = (p + q) * CYGRU_PANEL;                                         \
            int ncols = N - n0 < CYGRU_PANEL ? N - n0 : CYGRU_PANEL;                \
            cygru_store_cols(C + (ptrdiff_t)i * ldc + n0, &acc[q], ncols, accumulate); \
        }                                                                           \
    }
#define CYGRU_DEFINE_KERNEL(NAME, ATTR, MR)                                        \
ATTR static void NAME(int M, int K, const float *A, int lda, const float *P,      \
                      int p0, int p1, int N, float *C, int ldc, int accumulate) {  \
  for (int i0 = 0; i0 < M; i0 += CYGRU_ROW_BLOCK) {                                \
    int i1 = M - i0 < CYGRU_ROW_BLOCK ? M : i0 + CYGRU_ROW_BLOCK;                  \
    int full_end = i0 + (i1 - i0) / MR * MR;                                       \
    for (int p = p0; p < p1; p++) {                                                \
        const float *pp = P + (ptrdiff_t)p * K * CYGRU_PANEL;                      \
        int n0 = p * CYGRU_PANEL;                                                  \
        int ncols = N - n0 < CYGRU_PANEL ? N - n0 : CYGRU_PANEL;                   \
        for (int i = i0; i < full_end; i += MR) {                                  \
            cygru_v16 acc[MR];                                                     \
            for (int r = 0; r < MR; r++) acc[r] = (cygru_v16){0};                  \
            const float *a = A + (ptrdiff_t)i * lda;                               \
            for (int k = 0; k < K; k++) {                                          \
                cygru_v16 w;                                                       \
                memcpy(&w, pp + (ptrdiff_t)k * CYGRU_PANEL, sizeof w);             \
                for (int r = 0; r < MR; r++)                                       \
                    acc[r] += a[(ptrdiff_t)r * lda + k] * w;                       \
            }                                                                      \
            for (int r = 0; r < MR; r++)                                           \
                cygru_store_cols(C + (ptrdiff_t)(i + r) * ldc + n0, &acc[r], ncols, accumulate); \
        }                                                                          \
    }                                                                              \
    if (full_end < i1) {                                                           \
        /* leftover rows (and B = 1): panels four, two, one at a time */          \
        int p = p0;                                                                \
        CYGRU_LEFTOVER_PANELS(4)                                                   \
        CYGRU_LEFTOVER_PANELS(2)                                                   \
        CYGRU_LEFTOVER_PANELS(1)                                                   \
    }                                                                              \
  }                                                                                \
}

typedef void (*cygru_kernel_fn)(int, int, const float *, int, const float *, int, int,
                                int, float *, int, int);


#if CYGRU_HAVE_X86_VARIANTS
CYGRU_DEFINE_KERNEL(cygru_kernel_avx512, CYGRU_TARGET_AVX512, 8)
CYGRU_DEFINE_KERNEL(cygru_kernel_avx2, CYGRU_TARGET_AVX2, 4)
CYGRU_DEFINE_KERNEL(cygru_kernel_base, , 4)
static const cygru_kernel_fn cygru_kernels[] = {
    cygru_kernel_base, cygru_kernel_avx2, cygru_kernel_avx512};
#else
CYGRU_DEFINE_KERNEL(cygru_kernel_base, , 4)
static const cygru_kernel_fn cygru_kernels[] = {
    cygru_kernel_base, cygru_kernel_base, cygru_kernel_base};
#endif

/* The kernel variant of `level` (CYGRU_LEVEL_*), which the caller checked this CPU
 * runs (level <= cygru_cpu_level()). */
static inline cygru_kernel_fn cygru_kernel_at_level(int level) {
    return cygru_kernels[level];
}

/* C (M x N) (=|+=) A (M x K) @ W^T with W (N x K) packed by cygru_pack_f;
 * panels [p0, p1); accumulate: add into C instead of storing. */
static inline void cygru_gemm_packed_f(int M, int K, const float *A, int lda,
                                       const float *P, int p0, int p1, int N,
                                       float *C, int ldc, int accumulate) {
    cygru_kernel_at_level(cygru_cpu_level())(M, K, A, lda, P, p0, p1, N, C, ldc, accumulate);
}

#endif

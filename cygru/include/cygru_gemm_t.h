/* cygru_gemm_t.h: the packed product for one element type, included by cygru_gemm.h
 * once per type with these macros set (and undefined again at the end):
 *   CG_T          the element type (float, double)
 *   CG_V          a vector value of one panel (CYGRU_PANEL elements of CG_T)
 *   CG_SUFFIX(n)  n's name for this type (n##_f, n##_d)
 *   CG_IS_FLOAT   1 for float (the 4x4 register transpose of the row packer)
 *   CG_MR_AVX512, CG_MR_OTHER  rows per register block (AVX-512; the baseline)
 *   CG_Y, CG_Y_LOADU, ..., CG_MR_AVX2, CG_NP_AVX2  the AVX2 variant on 256-bit
 *                 intrinsics (cygru_gemm_v.h's CGV_* macros)
 *   CG_Z, CG_Z_LOADU, ..., CG_MR2_AVX512, CG_NP_AVX512  (double only) the AVX-512
 *                 variant on 512-bit intrinsics instead of CG_DEFINE_KERNEL's vectors
 * No include guard: it is meant to be included more than once.
 */

/* Pack an N x K operand into panels (layout above): element (n, k) is W[n*sn + k*sk].
 * (sn, sk) = (ldw, 1) packs the rows of W, for x @ W^T; (1, ldw) packs its columns,
 * for the backward's dh_{t-1} = dgh @ W_hh, whose right operand is W_hh itself. */
static inline void CG_SUFFIX(cygru_pack)(int N, int K, const CG_T *W, ptrdiff_t sn,
                                         ptrdiff_t sk, CG_T *P) {
    int panels = (N + CYGRU_PANEL - 1) / CYGRU_PANEL;
    for (int p = 0; p < panels; p++) {
        CG_T *panel = P + (ptrdiff_t)p * K * CYGRU_PANEL;
        const CG_T *w = W + (ptrdiff_t)p * CYGRU_PANEL * sn;
        int full = N - p * CYGRU_PANEL >= CYGRU_PANEL;
#if CG_IS_FLOAT
        if (full && sk == 1 && K % 4 == 0) {
            cygru_pack_rows_panel(K, w, sn, panel);
            continue;
        }
#endif
        if (full && sn == 1) {
            /* a panel's 16 columns at each k are contiguous: plain copies */
            for (int k = 0; k < K; k++)
                memcpy(panel + (ptrdiff_t)k * CYGRU_PANEL, w + (ptrdiff_t)k * sk,
                       CYGRU_PANEL * sizeof(CG_T));
        } else if (full) {
            /* rows of W: each row n is read once, its K elements scattered to the
             * panel's column c (reading W row by row keeps the reads sequential) */
            for (int c = 0; c < CYGRU_PANEL; c++) {
                const CG_T *row = w + (ptrdiff_t)c * sn;
                for (int k = 0; k < K; k++)
                    panel[(ptrdiff_t)k * CYGRU_PANEL + c] = row[(ptrdiff_t)k * sk];
            }
        } else {
            for (int k = 0; k < K; k++) {
                CG_T *dst = panel + (ptrdiff_t)k * CYGRU_PANEL;
                for (int c = 0; c < CYGRU_PANEL; c++) {
                    int n = p * CYGRU_PANEL + c;
                    dst[c] = n < N ? W[(ptrdiff_t)n * sn + (ptrdiff_t)k * sk] : (CG_T)0;
                }
            }
        }
    }
}

/* dst[0:ncols] = v (accumulate == 0) or dst[0:ncols] += v (accumulate != 0) */
static inline void CG_SUFFIX(cygru_store_cols)(CG_T *dst, const CG_V *v, int ncols,
                                               int accumulate) {
    if (accumulate) {
        CG_V old = {0};
        memcpy(&old, dst, (size_t)ncols * sizeof(CG_T));
        old += *v;
        memcpy(dst, &old, (size_t)ncols * sizeof(CG_T));
    } else if (ncols == CYGRU_PANEL) {
        memcpy(dst, v, sizeof(CG_V));
    } else {
        memcpy(dst, v, (size_t)ncols * sizeof(CG_T));
    }
}

/* C[i, n] = sum_k A[i, k] * W[n, k] for rows i < M and panels [p0, p1).
 * A: row stride lda; C: row stride ldc; N: total columns (for the tail panel).
 * Rows are taken in blocks of CYGRU_ROW_BLOCK so that the block of A stays in
 * cache while every panel sweeps it (the input projection has thousands of rows;
 * the recurrent product has one block).
 * Every element C[i, n] is one FMA chain over k = 0, 1, ..., K-1 in that order, in the
 * row blocks and in the leftover rows alike, so its value does not depend on M, on the
 * row's place in a block, or on which panels a call covers: a sequence projected in
 * chunks of any size, or split over any number of threads, gives the same bits. The
 * leftover rows (and B = 1) hide the FMA latency with up to four panels in flight
 * instead of splitting the sum over k (which would round differently). */
#define CG_LEFTOVER_PANELS(NP)                                                      \
    for (; p + NP <= p1; p += NP)                                                   \
    for (int i = full_end; i < i1; i++) {   /* the panels stay in L1 across rows */ \
        const CG_T *a = A + (ptrdiff_t)i * lda;                                     \
        CG_V acc[NP];                                                               \
        const CG_T *pp[NP];                                                         \
        for (int q = 0; q < NP; q++) {                                              \
            acc[q] = (CG_V){0};                                                     \
            pp[q] = P + (ptrdiff_t)(p + q) * K * CYGRU_PANEL;                       \
        }                                                                           \
        for (int k = 0; k < K; k++) {                                               \
            for (int q = 0; q < NP; q++) {                                          \
                CG_V w;                                                             \
                memcpy(&w, pp[q] + (ptrdiff_t)k * CYGRU_PANEL, sizeof w);           \
                acc[q] += a[k] * w;                                                 \
            }                                                                       \
        }                                                                           \
        for (int q = 0; q < NP; q++) {                                              \
            int n0 = (p + q) * CYGRU_PANEL;                                         \
            int ncols = N - n0 < CYGRU_PANEL ? N - n0 : CYGRU_PANEL;                \
            CG_SUFFIX(cygru_store_cols)(C + (ptrdiff_t)i * ldc + n0, &acc[q], ncols, \
                                        accumulate);                                \
        }                                                                           \
    }
#define CG_DEFINE_KERNEL(NAME, ATTR, MR)                                           \
ATTR static void NAME(int M, int K, const CG_T *A, int lda, const CG_T *P,        \
                      int p0, int p1, int N, CG_T *C, int ldc, int accumulate) {   \
  for (int i0 = 0; i0 < M; i0 += CYGRU_ROW_BLOCK) {                                \
    int i1 = M - i0 < CYGRU_ROW_BLOCK ? M : i0 + CYGRU_ROW_BLOCK;                  \
    int full_end = i0 + (i1 - i0) / MR * MR;                                       \
    for (int p = p0; p < p1; p++) {                                                \
        const CG_T *pp = P + (ptrdiff_t)p * K * CYGRU_PANEL;                       \
        int n0 = p * CYGRU_PANEL;                                                  \
        int ncols = N - n0 < CYGRU_PANEL ? N - n0 : CYGRU_PANEL;                   \
        for (int i = i0; i < full_end; i += MR) {                                  \
            CG_V acc[MR];                                                          \
            for (int r = 0; r < MR; r++) acc[r] = (CG_V){0};                       \
            const CG_T *a = A + (ptrdiff_t)i * lda;                                \
            for (int k = 0; k < K; k++) {                                          \
                CG_V w;                                                            \
                memcpy(&w, pp + (ptrdiff_t)k * CYGRU_PANEL, sizeof w);             \
                for (int r = 0; r < MR; r++)                                       \
                    acc[r] += a[(ptrdiff_t)r * lda + k] * w;                       \
            }                                                                      \
            for (int r = 0; r < MR; r++)                                           \
                CG_SUFFIX(cygru_store_cols)(C + (ptrdiff_t)(i + r) * ldc + n0, &acc[r], \
                                            ncols, accumulate);                    \
        }                                                                          \
    }                                                                              \
    if (full_end < i1) {                                                           \
        /* leftover rows (and B = 1): panels four, two, one at a time */          \
        int p = p0;                                                                \
        CG_LEFTOVER_PANELS(4)                                                      \
        CG_LEFTOVER_PANELS(2)                                                      \
        CG_LEFTOVER_PANELS(1)                                                      \
    }                                                                              \
  }                                                                                \
}

#if CYGRU_HAVE_X86_VARIANTS
/* The AVX2+FMA variant, written on 256-bit intrinsics (cygru_gemm_v.h): a panel's
 * CYGRU_PANEL lanes are two ymm for float, four for double, each accumulator one ymm
 * register. (Written as CG_DEFINE_KERNEL above, with one 64- or 128-byte vector per
 * panel, GCC keeps the accumulators in memory on AVX2, at half the baseline's speed.) */
#define CGV_NAME(n) CG_SUFFIX(n##_avx2)
#define CGV_ATTR CYGRU_TARGET_AVX2
#define CGV_VEC CG_Y
#define CGV_LOADU CG_Y_LOADU
#define CGV_STOREU CG_Y_STOREU
#define CGV_SET1 CG_Y_SET1
#define CGV_ZERO CG_Y_ZERO
#define CGV_FMA CG_Y_FMA
#define CGV_ADD CG_Y_ADD
#define CGV_MR CG_MR_AVX2
#define CGV_MR2 0
#define CGV_NP CG_NP_AVX2
#include "cygru_gemm_v.h"
#ifdef CG_Z
/* The AVX-512 variant of double, on 512-bit intrinsics (cygru_gemm_v.h): a panel is two
 * zmm, each accumulator one zmm register, blocks of 8 rows (16 accumulators of the 32
 * registers) then one of 4, then single rows with up to 4 panels in flight. From
 * CG_DEFINE_KERNEL (one 128-byte vector per panel) GCC 12 kept the accumulators in
 * memory: it ran at 0.6x the AVX2 variant, so float64 was capped at AVX2 until this was
 * written. Same FMA chains, so the same bits as AVX2 (tests/test_blas.py). float's
 * AVX-512 variant stays CG_DEFINE_KERNEL's: its panel is one zmm, held in a register. */
#define CGV_NAME(n) CG_SUFFIX(n##_avx512)
#define CGV_ATTR CYGRU_TARGET_AVX512
#define CGV_VEC CG_Z
#define CGV_LOADU CG_Z_LOADU
#define CGV_STOREU CG_Z_STOREU
#define CGV_SET1 CG_Z_SET1
#define CGV_ZERO CG_Z_ZERO
#define CGV_FMA CG_Z_FMA
#define CGV_ADD CG_Z_ADD
#define CGV_MR CG_MR_AVX512
#define CGV_MR2 CG_MR2_AVX512
#define CGV_NP CG_NP_AVX512
#include "cygru_gemm_v.h"
#endif
#endif

typedef void (*CG_SUFFIX(cygru_kernel_fn))(int, int, const CG_T *, int, const CG_T *, int,
                                           int, int, CG_T *, int, int);

#if CYGRU_HAVE_X86_VARIANTS
#ifndef CG_Z
CG_DEFINE_KERNEL(CG_SUFFIX(cygru_kernel_avx512), CYGRU_TARGET_AVX512, CG_MR_AVX512)
#endif
CG_DEFINE_KERNEL(CG_SUFFIX(cygru_kernel_base), , CG_MR_OTHER)
static const CG_SUFFIX(cygru_kernel_fn) CG_SUFFIX(cygru_kernels)[] = {
    CG_SUFFIX(cygru_kernel_base), CG_SUFFIX(cygru_kernel_avx2),
    CG_SUFFIX(cygru_kernel_avx512)};
#else
CG_DEFINE_KERNEL(CG_SUFFIX(cygru_kernel_base), , CG_MR_OTHER)
static const CG_SUFFIX(cygru_kernel_fn) CG_SUFFIX(cygru_kernels)[] = {
    CG_SUFFIX(cygru_kernel_base), CG_SUFFIX(cygru_kernel_base),
    CG_SUFFIX(cygru_kernel_base)};
#endif

/* The kernel variant of `level` (CYGRU_LEVEL_*), which the caller checked this CPU
 * runs (level <= cygru_cpu_level()). */
static inline CG_SUFFIX(cygru_kernel_fn) CG_SUFFIX(cygru_kernel_at_level)(int level) {
    return CG_SUFFIX(cygru_kernels)[level];
}

/* C (M x N) (=|+=) A (M x K) @ W^T with W (N x K) packed by cygru_pack_*;
 * panels [p0, p1); accumulate: add into C instead of storing. */
static inline void CG_SUFFIX(cygru_gemm_packed)(int M, int K, const CG_T *A, int lda,
                                                const CG_T *P, int p0, int p1, int N,
                                                CG_T *C, int ldc, int accumulate) {
    CG_SUFFIX(cygru_kernel_at_level)(cygru_cpu_level())(M, K, A, lda, P, p0, p1, N, C, ldc,
                                                        accumulate);
}

#undef CG_LEFTOVER_PANELS
#undef CG_DEFINE_KERNEL
#undef CG_T
#undef CG_V
#undef CG_SUFFIX
#undef CG_IS_FLOAT
#undef CG_MR_AVX512
#undef CG_MR_OTHER
#undef CG_MR_AVX2
#undef CG_NP_AVX2
#undef CG_Y
#undef CG_Y_LOADU
#undef CG_Y_STOREU
#undef CG_Y_SET1
#undef CG_Y_ZERO
#undef CG_Y_FMA
#undef CG_Y_ADD
#undef CG_Z
#undef CG_Z_LOADU
#undef CG_Z_STOREU
#undef CG_Z_SET1
#undef CG_Z_ZERO
#undef CG_Z_FMA
#undef CG_Z_ADD
#undef CG_MR2_AVX512
#undef CG_NP_AVX512

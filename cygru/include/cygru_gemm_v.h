/* cygru_gemm_v.h: one variant of the packed kernel (cygru_gemm.h) written on intrinsics,
 * included by cygru_gemm_t.h once per element type and register width that is written
 * this way, with these macros set (and undefined again at the end; CG_T is the
 * element type's, from cygru_gemm.h):
 *   CGV_NAME(n)   n's name for this variant (cygru_kernel_avx2_d, ...)
 *   CGV_ATTR      its target attribute (CYGRU_TARGET_AVX2, CYGRU_TARGET_AVX512)
 *   CGV_VEC       the vector type of one register (__m256, __m256d, __m512d)
 *   CGV_LOADU, CGV_STOREU, CGV_SET1, CGV_ZERO, CGV_FMA, CGV_ADD  its intrinsics
 *   CGV_MR        rows per register block
 *   CGV_MR2       rows per block of the rows left over from the CGV_MR blocks (0: none)
 *   CGV_NP        panels in flight per single leftover row: 4, 2 or 1
 * A panel's CYGRU_PANEL lanes are CGV_PARTS vectors (two ymm for float, four ymm or two
 * zmm for double), each accumulator one register: a block of CGV_MR rows holds
 * CGV_MR * CGV_PARTS accumulators. (Written with one 64- or 128-byte vector per panel,
 * as cygru_gemm_t.h's CG_DEFINE_KERNEL, GCC keeps accumulators wider than a register in
 * memory: the float kernels on AVX2 and the double ones on AVX2 and AVX-512 ran at half
 * the speed or less.)
 * The arithmetic is the other variants': element C[i, n] is the FMA chain over
 * k = 0, 1, ..., K-1 in that order from +0, then stored or added to C (C + sum, as
 * cygru_store_cols), whatever the register width, the rows per block and the panels per
 * leftover row in flight, so every variant with FMA gives the same bits.
 * No include guard: it is meant to be included more than once.
 */

#define CGV_LANES ((int)(sizeof(CGV_VEC) / sizeof(CG_T)))
#define CGV_PARTS (CYGRU_PANEL / CGV_LANES)

/* dst[0:ncols] = v or dst[0:ncols] += v (dst + v), v a panel in CGV_PARTS vectors */
CGV_ATTR static inline __attribute__((always_inline)) void CGV_NAME(cygru_store_cols)(
    CG_T *dst, const CGV_VEC *v, int ncols, int accumulate) {
    if (ncols == CYGRU_PANEL) {
        for (int h = 0; h < CGV_PARTS; h++)
            CGV_STOREU(dst + h * CGV_LANES,
                       accumulate ? CGV_ADD(CGV_LOADU(dst + h * CGV_LANES), v[h]) : v[h]);
    } else {
        CG_T tmp[CYGRU_PANEL];
        for (int h = 0; h < CGV_PARTS; h++)
            CGV_STOREU(tmp + h * CGV_LANES, v[h]);
        for (int c = 0; c < ncols; c++)
            dst[c] = accumulate ? dst[c] + tmp[c] : tmp[c];
    }
}

/* Rows [i, i + mr) (mr a constant once inlined: CGV_MR or CGV_MR2) against the panel pp,
 * whose columns start at n0 (ncols of them). */
CGV_ATTR static inline __attribute__((always_inline)) void CGV_NAME(cygru_row_block)(
    int mr, int K, const CG_T *a, int lda, const CG_T *pp, CG_T *C, int ldc, int ncols,
    int accumulate) {
    CGV_VEC acc[CGV_MR][CGV_PARTS];
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < CGV_PARTS; h++)
            acc[r][h] = CGV_ZERO();
    for (int k = 0; k < K; k++) {
        CGV_VEC w[CGV_PARTS];
        for (int h = 0; h < CGV_PARTS; h++)
            w[h] = CGV_LOADU(pp + (ptrdiff_t)k * CYGRU_PANEL + h * CGV_LANES);
        for (int r = 0; r < mr; r++) {
            CGV_VEC ar = CGV_SET1(a[(ptrdiff_t)r * lda + k]);
            for (int h = 0; h < CGV_PARTS; h++)
                acc[r][h] = CGV_FMA(ar, w[h], acc[r][h]);
        }
    }
    for (int r = 0; r < mr; r++)
        CGV_NAME(cygru_store_cols)(C + (ptrdiff_t)r * ldc, acc[r], ncols, accumulate);
}

#define CGV_LEFTOVER_PANELS(NP)                                                     \
    for (; p + NP <= p1; p += NP)                                                   \
    for (int i = rows_end; i < i1; i++) {   /* the panels stay in L1 across rows */ \
        const CG_T *a = A + (ptrdiff_t)i * lda;                                     \
        CGV_VEC acc[NP][CGV_PARTS];                                                 \
        const CG_T *pp[NP];                                                         \
        for (int q = 0; q < NP; q++) {                                              \
            for (int h = 0; h < CGV_PARTS; h++)                                     \
                acc[q][h] = CGV_ZERO();                                             \
            pp[q] = P + (ptrdiff_t)(p + q) * K * CYGRU_PANEL;                       \
        }                                                                           \
        for (int k = 0; k < K; k++) {                                               \
            CGV_VEC ak = CGV_SET1(a[k]);                                            \
            for (int q = 0; q < NP; q++)                                            \
                for (int h = 0; h < CGV_PARTS; h++)                                 \
                    acc[q][h] = CGV_FMA(                                            \
                        ak, CGV_LOADU(pp[q] + (ptrdiff_t)k * CYGRU_PANEL + h * CGV_LANES), \
                        acc[q][h]);                                                 \
        }                                                                           \
        for (int q = 0; q < NP; q++) {                                              \
            int n0 = (p + q) * CYGRU_PANEL;                                         \
            int ncols = N - n0 < CYGRU_PANEL ? N - n0 : CYGRU_PANEL;                \
            CGV_NAME(cygru_store_cols)(C + (ptrdiff_t)i * ldc + n0, acc[q], ncols,  \
                                       accumulate);                                 \
        }                                                                           \
    }

/* C[i, n] (=|+=) sum_k A[i, k] * W[n, k] for rows i < M and panels [p0, p1), as
 * cygru_gemm_t.h's CG_DEFINE_KERNEL: rows in blocks of CYGRU_ROW_BLOCK, each swept by
 * every panel in register blocks of CGV_MR rows, then of CGV_MR2, then the rows left
 * (and B = 1) one at a time with up to CGV_NP panels in flight. */
CGV_ATTR static void CGV_NAME(cygru_kernel)(int M, int K, const CG_T *A, int lda,
                                            const CG_T *P, int p0, int p1, int N, CG_T *C,
                                            int ldc, int accumulate) {
    for (int i0 = 0; i0 < M; i0 += CYGRU_ROW_BLOCK) {
        int i1 = M - i0 < CYGRU_ROW_BLOCK ? M : i0 + CYGRU_ROW_BLOCK;
        int full_end = i0 + (i1 - i0) / CGV_MR * CGV_MR;
        int rows_end = full_end;
#if CGV_MR2 > 0
        rows_end += (i1 - full_end) / CGV_MR2 * CGV_MR2;
#endif
        for (int p = p0; p < p1; p++) {
            const CG_T *pp = P + (ptrdiff_t)p * K * CYGRU_PANEL;
            int n0 = p * CYGRU_PANEL;
            int ncols = N - n0 < CYGRU_PANEL ? N - n0 : CYGRU_PANEL;
            for (int i = i0; i < full_end; i += CGV_MR)
                CGV_NAME(cygru_row_block)(CGV_MR, K, A + (ptrdiff_t)i * lda, lda, pp,
                                          C + (ptrdiff_t)i * ldc + n0, ldc, ncols, accumulate);
#if CGV_MR2 > 0
            for (int i = full_end; i < rows_end; i += CGV_MR2)
                CGV_NAME(cygru_row_block)(CGV_MR2, K, A + (ptrdiff_t)i * lda, lda, pp,
                                          C + (ptrdiff_t)i * ldc + n0, ldc, ncols, accumulate);
#endif
        }
        if (rows_end < i1) {
            /* leftover rows (and B = 1): panels CGV_NP, ..., two, one at a time */
            int p = p0;
#if CGV_NP >= 4
            CGV_LEFTOVER_PANELS(4)
#endif
#if CGV_NP >= 2
            CGV_LEFTOVER_PANELS(2)
#endif
            CGV_LEFTOVER_PANELS(1)
        }
    }
}

#undef CGV_LEFTOVER_PANELS
#undef CGV_LANES
#undef CGV_PARTS
#undef CGV_NAME
#undef CGV_ATTR
#undef CGV_VEC
#undef CGV_LOADU
#undef CGV_STOREU
#undef CGV_SET1
#undef CGV_ZERO
#undef CGV_FMA
#undef CGV_ADD
#undef CGV_MR
#undef CGV_MR2
#undef CGV_NP

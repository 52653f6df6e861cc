/* cygru_dot.h: C (M x N) (=|+=) A (M x K) @ W^T straight from row-major W (N x K),
 * with no packing: the products of small batches (a one-step call, a batch-1 sequence).
 *
 * At batch 1 the recurrent product is a matrix-vector product: every weight is used
 * once per step, so packing W into panels (cygru_gemm.h) costs as much as the step
 * itself, every call. Here each output element is a dot product of a row of A with a
 * row of W, read where the caller keeps them.
 *
 * Fixed arithmetic. Every element C[i, n] is computed by the same operations, whatever
 * M and N are, which rows and columns a call covers, how the rows are blocked into
 * registers and how a problem is split over threads or calls:
 *   1. 16 lanes: lane j (0..15) accumulates A[i, k] * W[n, k] for k = j, j+16, j+32, ...
 *      in increasing order, one fused multiply-add per term (a multiply and an add on
 *      the baseline variant, which has no FMA), starting from +0. The last block of a
 *      K that is not a multiple of 16 is padded with zeros (a product 0 * 0 added).
 *   2. a fixed tree over the 16 lanes l[0..15]:
 *        s1[j] = l[j]  + l[j+8]   (j < 8)
 *        s2[j] = s1[j] + s1[j+4]  (j < 4)
 *        s3[j] = s2[j] + s2[j+2]  (j < 2)
 *        sum   = s3[0] + s3[1]
 *   3. C[i, n] = sum, or C[i, n] = C[i, n] + sum (accumulate).
 * The tree is done for up to 16 accumulators at once by a transpose-add (each stage adds
 * the two halves of every accumulator's remaining lanes, two accumulators' halves per
 * vector), which gives every element exactly the additions above.
 *
 * Register blocking: a tile of MR rows of A by NR rows of W (MR*NR accumulators, one
 * 16-lane vector each) keeps several independent FMA chains in flight; a single row of
 * A (M = 1, the matrix-vector product) takes NR1 rows of W at a time. Rows of A are
 * swept in blocks of CYGRU_DOT_ROW_BLOCK so that a block stays in cache while the
 * rows of W pass over it (the input projection of a long batch-1 sequence).
 *
 * Compiled for AVX-512, AVX2+FMA and the portable baseline like cygru_gemm.h (GCC
 * vector extensions, target attributes, cygru_cpu.h's level chosen at run time);
 * cygru_dot_at_level_f/_d give each variant to tests. The AVX2 variants' tiles and
 * tree are written on 256-bit intrinsics (cygru_dot_tile's CD_Y version and
 * cygru_dot_tree_*_avx2), each accumulator's 16 lanes in 2 (float) or 4 (double) ymm
 * registers, and float64's AVX-512 variant on 512-bit ones (the same CD_Y tile and
 * cygru_dot_tree_d_avx512, 2 zmm per accumulator), with the same operations per element
 * as above: with one 128-byte vector per accumulator GCC kept them in memory, and the
 * float64 AVX-512 variant ran at 0.6-0.7x the AVX2 one. Both AVX-512 variants read W in
 * aligned blocks, k rotated across the lanes, where its rows share an offset within a
 * 64-byte line (cygru_dot_tile_rot, the same operations per element again).
 */
#ifndef CYGRU_DOT_H
#define CYGRU_DOT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cygru_cpu.h"
#include "cygru_gemm.h" /* cygru_v16, cygru_v16d */
#if CYGRU_HAVE_X86_VARIANTS
#include <immintrin.h> /* the AVX-512 variants' aligned and masked loads and zmm, AVX2's ymm */
#endif

#define CYGRU_DOT_ROW_BLOCK 64

typedef int cygru_dot_iv16 __attribute__((vector_size(64)));
typedef long long cygru_dot_lv16 __attribute__((vector_size(128)));
typedef float cygru_dot_v8 __attribute__((vector_size(32)));
typedef double cygru_dot_v8d __attribute__((vector_size(64)));
typedef int cygru_dot_iv8 __attribute__((vector_size(32)));
typedef long long cygru_dot_lv8 __attribute__((vector_size(64)));

#if defined(__clang__)
#define CYGRU_DOT_SHUF(IV, p, q, ...) __builtin_shufflevector(p, q, __VA_ARGS__)
#else
#define CYGRU_DOT_SHUF(IV, p, q, ...) __builtin_shuffle(p, q, (IV){__VA_ARGS__})
#endif

/* the helpers pass 16-lane vectors by value; they are always inlined, so the ABI note
 * GCC gives for the variants without AVX/AVX-512 is moot (GCC reports it at the end of
 * the translation unit, so it is silenced for the rest of the file) */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if CYGRU_HAVE_X86_VARIANTS
/* The tree (step 2 above) on the AVX2 variants' ymm accumulators, for n = 1, 2 or 4
 * accumulators of 16 lanes (acc[q][h]: lanes 8h..8h+7 of float accumulator q, 4h..4h+3
 * of a double one): out[q] = the sum of accumulator q, by exactly the additions of the
 * tree (each stage adds the lower lane to the upper one, two or four accumulators' lanes
 * per vector). Fewer than four accumulators are repeated to four (the copies' sums are
 * not used). */
CYGRU_TARGET_AVX2 static inline __attribute__((always_inline)) void
cygru_dot_tree_f_avx2(const __m256 (*acc)[2], int n, float *out) {
    __m256 s1[4], s2[2];
    for (int q = 0; q < 4; q++) /* s1[j] = l[j] + l[j+8] */
        s1[q] = _mm256_add_ps(acc[q % n][0], acc[q % n][1]);
    for (int q = 0; q < 2; q++) /* s2[j] = s1[j] + s1[j+4]: accumulator 2q, then 2q+1 */
        s2[q] = _mm256_add_ps(_mm256_permute2f128_ps(s1[2 * q], s1[2 * q + 1], 0x20),
                              _mm256_permute2f128_ps(s1[2 * q], s1[2 * q + 1], 0x31));
    /* s3[j] = s2[j] + s2[j+2]: lanes (0, 1, 2, 3 | 4, 5, 6, 7) hold accumulators'
     * (0, 0, 2, 2 | 1, 1, 3, 3) s3[0], s3[1] */
    __m256 s3 = _mm256_add_ps(_mm256_shuffle_ps(s2[0], s2[1], 0x44),
                              _mm256_shuffle_ps(s2[0], s2[1], 0xEE));
    /* sum = s3[0] + s3[1]: lanes (0, 1 | 4, 5) hold accumulators (0, 2 | 1, 3) */
    __m256 sum = _mm256_add_ps(_mm256_shuffle_ps(s3, s3, 0x88), _mm256_shuffle_ps(s3, s3, 0xDD));
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    static const int lane_of[4] = {0, 4, 1, 5};
    for (int q = 0; q < n; q++)
        out[q] = lanes[lane_of[q]];
}

CYGRU_TARGET_AVX2 static inline __attribute__((always_inline)) void
cygru_dot_tree_d_avx2(const __m256d (*acc)[4], int n, double *out) {
    __m256d s2[4], s3[2];
    for (int q = 0; q < 4; q++) {
        /* s1[j] = l[j] + l[j+8] (lanes 0-3, then 4-7), s2[j] = s1[j] + s1[j+4] */
        const __m256d *a = acc[q % n];
        s2[q] = _mm256_add_pd(_mm256_add_pd(a[0], a[2]), _mm256_add_pd(a[1], a[3]));
    }
    for (int q = 0; q < 2; q++) /* s3[j] = s2[j] + s2[j+2]: accumulator 2q, then 2q+1 */
        s3[q] = _mm256_add_pd(_mm256_permute2f128_pd(s2[2 * q], s2[2 * q + 1], 0x20),
                              _mm256_permute2f128_pd(s2[2 * q], s2[2 * q + 1], 0x31));
    /* sum = s3[0] + s3[1]: lanes 0, 1, 2, 3 hold accumulators 0, 2, 1, 3 */
    __m256d sum = _mm256_add_pd(_mm256_unpacklo_pd(s3[0], s3[1]),
                                _mm256_unpackhi_pd(s3[0], s3[1]));
    double lanes[4];
    _mm256_storeu_pd(lanes, sum);
    static const int lane_of[4] = {0, 2, 1, 3};
    for (int q = 0; q < n; q++)
        out[q] = lanes[lane_of[q]];
}

/* The tree on the float64 AVX-512 variant's zmm accumulators, for n = 1, 2, 4 or 8
 * accumulators of 16 lanes (acc[q][h]: lanes 8h..8h+7 of accumulator q): out[q] = the
 * sum of accumulator q by exactly the additions of the tree, as the AVX2 trees above
 * (fewer than eight accumulators are repeated to eight; the copies' sums are not used). */
CYGRU_TARGET_AVX512 static inline __attribute__((always_inline)) void
cygru_dot_tree_d_avx512(const __m512d (*acc)[2], int n, double *out) {
    __m512d s1[8], s2[4], s3[2];
    for (int q = 0; q < 8; q++) /* s1[j] = l[j] + l[j+8] */
        s1[q] = _mm512_add_pd(acc[q % n][0], acc[q % n][1]);
    /* s2[j] = s1[j] + s1[j+4]: lanes 0-3 accumulator 2q's, 4-7 accumulator 2q+1's */
    for (int q = 0; q < 4; q++)
        s2[q] = _mm512_add_pd(_mm512_shuffle_f64x2(s1[2 * q], s1[2 * q + 1], 0x44),
                              _mm512_shuffle_f64x2(s1[2 * q], s1[2 * q + 1], 0xEE));
    /* s3[j] = s2[j] + s2[j+2]: lane pairs (0, 1), (2, 3), (4, 5), (6, 7) hold s3[0], s3[1]
     * of accumulators 4q, 4q+1, 4q+2, 4q+3 */
    for (int q = 0; q < 2; q++)
        s3[q] = _mm512_add_pd(_mm512_shuffle_f64x2(s2[2 * q], s2[2 * q + 1], 0x88),
                              _mm512_shuffle_f64x2(s2[2 * q], s2[2 * q + 1], 0xDD));
    /* sum = s3[0] + s3[1]: lanes 0, ..., 7 hold accumulators 0, 4, 1, 5, 2, 6, 3, 7 */
    __m512d sum = _mm512_add_pd(_mm512_unpacklo_pd(s3[0], s3[1]),
                                _mm512_unpackhi_pd(s3[0], s3[1]));
    double lanes[8];
    _mm512_storeu_pd(lanes, sum);
    static const int lane_of[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int q = 0; q < n; q++)
        out[q] = lanes[lane_of[q]];
}
#endif

/* float32 variants: 16 floats are one zmm, two ymm, four xmm */
#define CD_T float
#define CD_V cygru_v16
#define CD_IV cygru_dot_iv16
#define CD_V8 cygru_dot_v8
#define CD_IV8 cygru_dot_iv8
#if CYGRU_HAVE_X86_VARIANTS
#define CD_NAME(n) n##_f_avx512
#define CD_ROTATE 1
#define CD_HALVES 0
#define CD_ATTR CYGRU_TARGET_AVX512
#define CD_MR 4
#define CD_NR 4
#define CD_NR1 16
#include "cygru_dot_t.h"
#define CD_NAME(n) n##_f_avx2
#define CD_ROTATE 0
#define CD_HALVES 1
#define CD_ATTR CYGRU_TARGET_AVX2
#define CD_MR 2
#define CD_NR 2
#define CD_NR1 4
#define CD_Y __m256
#define CD_Y_REG "x"
#define CD_Y_LOADU _mm256_loadu_ps
#define CD_Y_ZERO _mm256_setzero_ps
#define CD_Y_FMA _mm256_fmadd_ps
#define CD_Y_TREE cygru_dot_tree_f_avx2
#define CD_Y_MASKLOAD(p, n)                                                               \
    _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n),                       \
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)))
#include "cygru_dot_t.h"
#endif
#define CD_NAME(n) n##_f_base
#define CD_ROTATE 0
#define CD_HALVES 1
#define CD_ATTR
#define CD_MR 1
#define CD_NR 2
#define CD_NR1 2
#include "cygru_dot_t.h"
#undef CD_T
#undef CD_V
#undef CD_IV
#undef CD_V8
#undef CD_IV8

/* float64 variants: 16 doubles are two zmm, four ymm, eight xmm */
#define CD_T double
#define CD_V cygru_v16d
#define CD_IV cygru_dot_lv16
#define CD_V8 cygru_dot_v8d
#define CD_IV8 cygru_dot_lv8
#if CYGRU_HAVE_X86_VARIANTS
#define CD_NAME(n) n##_d_avx512
#define CD_ROTATE 1
#define CD_HALVES 1
#define CD_ATTR CYGRU_TARGET_AVX512
#define CD_MR 2
#define CD_NR 4
#define CD_NR1 8
/* on zmm: tiles of up to 8 accumulators x 2 zmm, 16 of the 32 registers */
#define CD_Y __m512d
#define CD_Y_REG "v"
#define CD_Y_LOADU _mm512_loadu_pd
#define CD_Y_ZERO _mm512_setzero_pd
#define CD_Y_FMA _mm512_fmadd_pd
#define CD_Y_TREE cygru_dot_tree_d_avx512
#define CD_Y_MASKLOAD(p, n)                                                               \
    _mm512_maskz_loadu_pd((__mmask8)((n) >= 8 ? 0xFFu : (1u << (n)) - 1u), p)
#define CD_Y_LOADA _mm512_load_pd
#define CD_Y_MASKRANGE(p, lo, hi)                                                         \
    _mm512_maskz_loadu_pd((__mmask8)(((1u << (hi)) - 1u) & ~((1u << (lo)) - 1u)), p)
#include "cygru_dot_t.h"
#define CD_NAME(n) n##_d_avx2
#define CD_ROTATE 0
#define CD_HALVES 1
#define CD_ATTR CYGRU_TARGET_AVX2
#define CD_MR 1
#define CD_NR 2
#define CD_NR1 2
#define CD_Y __m256d
#define CD_Y_REG "x"
#define CD_Y_LOADU _mm256_loadu_pd
#define CD_Y_ZERO _mm256_setzero_pd
#define CD_Y_FMA _mm256_fmadd_pd
#define CD_Y_TREE cygru_dot_tree_d_avx2
#define CD_Y_MASKLOAD(p, n)                                                               \
    _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n),                      \
                                             _mm256_setr_epi64x(0, 1, 2, 3)))
#include "cygru_dot_t.h"
#endif
#define CD_NAME(n) n##_d_base
#define CD_ROTATE 0
#define CD_HALVES 1
#define CD_ATTR
#define CD_MR 1
#define CD_NR 1
#define CD_NR1 1
#include "cygru_dot_t.h"
#undef CD_T
#undef CD_V
#undef CD_IV
#undef CD_V8
#undef CD_IV8

typedef void (*cygru_dot_fn_f)(int, int, int, const float *, int, const float *, int,
                               float *, int, int);
typedef void (*cygru_dot_fn_d)(int, int, int, const double *, int, const double *, int,
                               double *, int, int);

#if CYGRU_HAVE_X86_VARIANTS
static const cygru_dot_fn_f cygru_dot_kernels_f[] = {
    cygru_dot_kernel_f_base, cygru_dot_kernel_f_avx2, cygru_dot_kernel_f_avx512};
static const cygru_dot_fn_d cygru_dot_kernels_d[] = {
    cygru_dot_kernel_d_base, cygru_dot_kernel_d_avx2, cygru_dot_kernel_d_avx512};
#else
static const cygru_dot_fn_f cygru_dot_kernels_f[] = {
    cygru_dot_kernel_f_base, cygru_dot_kernel_f_base, cygru_dot_kernel_f_base};
static const cygru_dot_fn_d cygru_dot_kernels_d[] = {
    cygru_dot_kernel_d_base, cygru_dot_kernel_d_base, cygru_dot_kernel_d_base};
#endif

/* The variant of `level` (CYGRU_LEVEL_*), which the caller checked this CPU runs. */
static inline cygru_dot_fn_f cygru_dot_at_level_f(int level) { return cygru_dot_kernels_f[level]; }
static inline cygru_dot_fn_d cygru_dot_at_level_d(int level) { return cygru_dot_kernels_d[level]; }

/* C[i, n] (=|+=) sum_k A[i, k] * W[n, k] for i < M, n < N, k < K; A row stride lda,
 * W row stride ldw, C row stride ldc; the variant this CPU runs best. */
static inline void cygru_dot_f(int M, int N, int K, const float *A, int lda, const float *W,
                               int ldw, float *C, int ldc, int accumulate) {
    cygru_dot_kernels_f[cygru_cpu_level()](M, N, K, A, lda, W, ldw, C, ldc, accumulate);
}
static inline void cygru_dot_d(int M, int N, int K, const double *A, int lda,
                               const double *W, int ldw, double *C, int ldc, int accumulate) {
    cygru_dot_kernels_d[cygru_cpu_level()](M, N, K, A, lda, W, ldw, C, ldc, accumulate);
}

#endif

/* cygru_quant_x86.h: the x86 variants of cygru_quant.h's products (included by it).
 *
 * Each gives exactly the bits of the portable definition (cygru_q8_gemm_base,
 * cygru_bf16_gemm_base) on every input:
 *   int8  level 3  AVX512-VNNI: vpdpbusd (unsigned x signed bytes) on qa + 128 (the byte
 *                  qa ^ 0x80), less 128 * sum_k q[n, k] (the block's row sums); the
 *                  int32 sums wrap, and the true sum fits, so the difference is exact
 *         level 2  AVX512BW: bytes sign-extended to 16 bits, vpmaddwd (exact; not
 *                  vpmaddubsw, which saturates), int32 sums
 *         level 1  AVX2: the same on 256-bit vectors
 *   bf16  level 3  AVX512-BF16: vdpbf16ps
 *         level 2  AVX-512F: each 32-bit word of a pair split into its odd (w & 0xFFFF0000)
 *                  and even (w << 16) elements as float32, two fused multiply-adds per
 *                  pair, odd first: exactly the definition's steps
 *         level 1  AVX2 + FMA: the same on 256-bit vectors
 * The integer sums do not depend on their order; the bf16 sums are the definition's
 * chain per output element in every variant (one vector lane per output column).
 *
 * The activations of up to CYGRU_QROWS rows are prepared into the scratch first, with
 * the definition's float32 operations (int8: the largest magnitude by an integer max of
 * the bits with the sign cleared, which orders finite magnitudes as floats and puts inf
 * and NaN above them; inv = 127 / amax; cvtps2dq rounds half to even under the default
 * rounding mode, as rintf does; clamp. bf16: cygru_bf16_from_f32's integer rule), then
 * multiplied in register tiles of MR rows by NR panels (a single row: NR1 panels, so
 * that a batch-1 step keeps NR1 independent chains in flight).
 */
#ifndef CYGRU_QUANT_X86_H
#define CYGRU_QUANT_X86_H

#include <immintrin.h>
#include <x86intrin.h> /* __rdtsc */

/* which instruction sets this compiler can target (older compilers lack the newest) */
#if defined(__clang__)
#define CYGRU_Q_CC_VNNI (__clang_major__ >= 6)
#define CYGRU_Q_CC_BF16 (__clang_major__ >= 9)
#elif defined(__GNUC__)
#define CYGRU_Q_CC_VNNI (__GNUC__ >= 8)
#define CYGRU_Q_CC_BF16 (__GNUC__ >= 10)
#else
#define CYGRU_Q_CC_VNNI 0
#define CYGRU_Q_CC_BF16 0
#endif

#define CYGRU_Q_ATTR_L1 __attribute__((target("avx2,fma")))
#define CYGRU_Q_ATTR_L2 __attribute__((target("avx512f,avx512bw,fma")))
#define CYGRU_Q_ATTR_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,fma")))
#define CYGRU_Q_ATTR_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16,fma")))
#define CYGRU_Q_INL static inline __attribute__((always_inline))

/* acc += the dot products of a's and the 64 bytes at p (vpdpbusd / vdpbf16ps). GCC's
 * register allocator copies the accumulator of these one-form instructions in and out
 * of a loop twice per use (they have no form that writes another register, as FMA
 * has); a tied asm operand keeps it in place. Clang's allocator does not need that. */
#if defined(__GNUC__) && !defined(__clang__)
#define CYGRU_Q_DPBUSD(acc, a, p)                                                        \
    do {                                                                                 \
        __m512i t_ = (acc);                                                              \
        __m512i w_ = _mm512_loadu_si512(p);                                              \
        __asm__("vpdpbusd %2, %1, %0" : "+v"(t_) : "v"(a), "v"(w_));                      \
        (acc) = t_;                                                                      \
    } while (0)
#define CYGRU_Q_DPBF16(acc, a, p)                                                        \
    do {                                                                                 \
        __m512 t_ = (acc);                                                               \
        __m512i w_ = _mm512_loadu_si512(p);                                              \
        __asm__("vdpbf16ps %2, %1, %0" : "+v"(t_) : "v"(a), "v"(w_));                     \
        (acc) = t_;                                                                      \
    } while (0)
#else
#define CYGRU_Q_DPBUSD(acc, a, p) ((acc) = _mm512_dpbusd_epi32((acc), (a), _mm512_loadu_si512(p)))
#define CYGRU_Q_DPBF16(acc, a, p)                                                        \
    ((acc) = _mm512_dpbf16_ps((acc), (__m512bh)(a), (__m512bh)_mm512_loadu_si512(p)))
#endif

/* ---- scratch: prepared rows, then per-row scales and flags -------------------------- */

typedef struct {
    const char *rows; /* row r at rows + r * rstride (64-byte aligned) */
    ptrdiff_t rstride;
    const float *sa; /* int8: row scales */
    const int *bad;  /* int8: 1 for a row that is not finite (its results are NaN) */
} cygru_qrows;

/* ---- int8: row preparation ----------------------------------------------------------- */

/* The row rule's scale (int8): 0 normal (*inv, *sa set), 1 zero row, 2 not finite. */
static inline int cygru_q8_row_scale(uint32_t mbits, float *inv, float *sa) {
    float amax;
    if (mbits >= 0x7F800000u)
        return 2;
    memcpy(&amax, &mbits, sizeof amax);
    if (amax < CYGRU_Q8_TINY)
        return 1;
    *inv = 127.0f / amax;
    *sa = amax / 127.0f;
    return 0;
}

/* AVX-512: the largest |a| as bits (masked loads past K read nothing) */
#define CYGRU_Q8_AMAX512(ATTR, NAME)                                                     \
    ATTR CYGRU_Q_INL uint32_t NAME(int K, const float *a) {                              \
        const __m512i absm = _mm512_set1_epi32(0x7FFFFFFF);                              \
        __m512i m0 = _mm512_setzero_si512(), m1 = _mm512_setzero_si512();                \
        int k = 0;                                                                       \
        for (; k + 32 <= K; k += 32) {                                                   \
            m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_loadu_si512(a + k), absm)); \
            m1 = _mm512_max_epu32(m1,                                                    \
                                  _mm512_and_si512(_mm512_loadu_si512(a + k + 16), absm)); \
        }                                                                                \
        for (; k < K; k += 16) {                                                         \
            __mmask16 mk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u); \
            m0 = _mm512_max_epu32(m0, _mm512_and_si512(_mm512_maskz_loadu_epi32(mk, a + k), \
                                                       absm));                           \
        }                                                                                \
        return (uint32_t)_mm512_reduce_max_epu32(_mm512_max_epu32(m0, m1));              \
    }

/* AVX-512: 16 quantized values of a[k..k+16) (masked past K: zeros) as int32 */
#define CYGRU_Q8_QUANT16(ATTR, NAME)                                                     \
    ATTR CYGRU_Q_INL __m512i NAME(int K, int k, const float *a, __m512 vinv) {          \
        __mmask16 mk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u); \
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, a + k), vinv);                \
        __m512i q = _mm512_cvtps_epi32(x);                                               \
        q = _mm512_max_epi32(q, _mm512_set1_epi32(-127));                                \
        return _mm512_min_epi32(q, _mm512_set1_epi32(127));                              \
    }

/* ---- bf16: row conversion ------------------------------------------------------------ */

/* AVX-512: 16 values of a[k..k+16) (masked past K: zeros) to bf16 bits, one per int32 */
#define CYGRU_BF16_CONV16(ATTR, NAME)                                                    \
    ATTR CYGRU_Q_INL __m512i NAME(int K, int k, const float *a) {                       \
        __mmask16 mk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1u); \
        __m512i u = _mm512_maskz_loadu_epi32(mk, a + k);                                 \
        __m512i mag = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));                \
        __m512i hi = _mm512_srli_epi32(u, 16);                                           \
        __m512i r = _mm512_srli_epi32(                                                   \
            _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)),             \
                             _mm512_and_si512(hi, _mm512_set1_epi32(1))),                \
            16);                                                                         \
        __mmask16 tiny =                                                                 \
            _mm512_cmplt_epu32_mask(mag, _mm512_set1_epi32((int)CYGRU_BF16_FLUSH_BITS)); \
        __mmask16 special = _mm512_cmpge_epu32_mask(mag, _mm512_set1_epi32(0x7F800000)); \
        __mmask16 nan = _mm512_cmpgt_epu32_mask(mag, _mm512_set1_epi32(0x7F800000));     \
        r = _mm512_mask_and_epi32(r, tiny, hi, _mm512_set1_epi32(0x8000));              \
        r = _mm512_mask_mov_epi32(r, special, hi);                                       \
        return _mm512_mask_or_epi32(r, nan, r, _mm512_set1_epi32(0x40));                 \
    }

/* ---- the driver: row blocks, panel groups, register tiles ------------------------- */

/* A tile: rows r0 .. r0 + MR - 1 of the prepared block by panels p .. p + NR - 1, stored
 * at C (row stride ldc); nc: the columns of the last panel that are stored (1..16). */
typedef void (*cygru_q_tile_fn)(int K, const cygru_qrows *R, int r0, const void *block, int Nb,
                                int p, float *C, ptrdiff_t ldc, int nc);

/* Each tile shape of a variant is a function of its own, made from the variant's
 * always-inlined TILE(MR, NR, ...) with constant sizes: its loop gets the registers to
 * itself (inlined into the driver, the driver's values crowded the panel addresses out
 * of the general registers), and the driver reaches the shapes through small tables. */
#define CYGRU_Q_TILE_DEF(V, ATTR, TILE, MR, NR)                                          \
    ATTR __attribute__((noinline)) static void V##_t##MR##x##NR(                         \
        int K, const cygru_qrows *R, int r0, const void *block, int Nb, int p, float *C,  \
        ptrdiff_t ldc, int nc) {                                                         \
        TILE(MR, NR, K, R, r0, block, Nb, p, C, ldc, nc);                                \
    }
#define CYGRU_Q_TILES_1(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 1)
#define CYGRU_Q_TILES_2(V, A, T, MR) CYGRU_Q_TILES_1(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 2)
#define CYGRU_Q_TILES_3(V, A, T, MR) CYGRU_Q_TILES_2(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 3)
#define CYGRU_Q_TILES_4(V, A, T, MR) CYGRU_Q_TILES_3(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 4)
#define CYGRU_Q_TILES_5(V, A, T, MR) CYGRU_Q_TILES_4(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 5)
#define CYGRU_Q_TILES_6(V, A, T, MR) CYGRU_Q_TILES_5(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 6)
#define CYGRU_Q_TILES_7(V, A, T, MR) CYGRU_Q_TILES_6(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 7)
#define CYGRU_Q_TILES_8(V, A, T, MR) CYGRU_Q_TILES_7(V, A, T, MR) CYGRU_Q_TILE_DEF(V, A, T, MR, 8)
#define CYGRU_Q_LIST_1(V, MR) V##_t##MR##x1
#define CYGRU_Q_LIST_2(V, MR) CYGRU_Q_LIST_1(V, MR), V##_t##MR##x2
#define CYGRU_Q_LIST_3(V, MR) CYGRU_Q_LIST_2(V, MR), V##_t##MR##x3
#define CYGRU_Q_LIST_4(V, MR) CYGRU_Q_LIST_3(V, MR), V##_t##MR##x4
#define CYGRU_Q_LIST_5(V, MR) CYGRU_Q_LIST_4(V, MR), V##_t##MR##x5
#define CYGRU_Q_LIST_6(V, MR) CYGRU_Q_LIST_5(V, MR), V##_t##MR##x6
#define CYGRU_Q_LIST_7(V, MR) CYGRU_Q_LIST_6(V, MR), V##_t##MR##x7
#define CYGRU_Q_LIST_8(V, MR) CYGRU_Q_LIST_7(V, MR), V##_t##MR##x8

/* One variant's product from its row preparation PREP(mb, K, A, lda, scratch, &rows) and
 * its tile TILE: V##_gemm_gates (G blocks, one row preparation) and V##_gemm (one). Blocks
 * of MRMAX rows take MRMAX x NRMAX tiles, the rows left (a batch-1 step: its one row)
 * 1 x NR1 tiles (NR1 independent chains in flight). */
#define CYGRU_Q_VARIANT(V, ATTR, PREP, TILE, MRMAX, NRMAX, NR1)                          \
    CYGRU_Q_TILES_##NR1(V, ATTR, TILE, 1) CYGRU_Q_TILES_##NRMAX(V, ATTR, TILE, MRMAX)      \
    static const cygru_q_tile_fn V##_row_tiles[] = {NULL, CYGRU_Q_LIST_##NR1(V, 1)};     \
    static const cygru_q_tile_fn V##_block_tiles[] = {NULL, CYGRU_Q_LIST_##NRMAX(V, MRMAX)}; \
    ATTR static void V##_gemm_gates(int G, size_t bstride, ptrdiff_t cstride, int M, int K,  \
                                    const float *A, ptrdiff_t lda, const void *block0,    \
                                    int Nb, int n0, int N, float *C, ptrdiff_t ldc,        \
                                    void *scratch) {                                      \
        int pfirst = n0 / CYGRU_QPANEL, pend = (n0 + N + CYGRU_QPANEL - 1) / CYGRU_QPANEL; \
        cygru_qrows rows;                                                                \
        for (int i0 = 0; i0 < M; i0 += CYGRU_QROWS) {                                    \
            int mb = M - i0 < CYGRU_QROWS ? M - i0 : CYGRU_QROWS;                        \
            int full = MRMAX > 1 ? mb / MRMAX * MRMAX : 0;                               \
            PREP(mb, K, A + (ptrdiff_t)i0 * lda, lda, scratch, &rows);                   \
            for (int gt = 0; gt < G; gt++) {                                             \
                const void *block = (const char *)block0 + gt * bstride;                 \
                float *Ci = C + gt * cstride + (ptrdiff_t)i0 * ldc;                      \
                /* blocks of MRMAX rows: the panel group's weights stay in L1 */         \
                for (int p = pfirst; p < pend && full; p += NRMAX) {                     \
                    int nr = pend - p < NRMAX ? pend - p : NRMAX;                        \
                    int last = n0 + N - (p + nr - 1) * CYGRU_QPANEL;                     \
                    int nc = last < CYGRU_QPANEL ? last : CYGRU_QPANEL;                  \
                    float *Cp = Ci + (ptrdiff_t)(p * CYGRU_QPANEL - n0);                 \
                    for (int r = 0; r < full; r += MRMAX)                                \
                        V##_block_tiles[nr](K, &rows, r, block, Nb, p, Cp + r * ldc, ldc, \
                                            nc);                                         \
                }                                                                        \
                /* the rows left, one at a time, NR1 panels (chains) in flight */        \
                for (int r = full; r < mb; r++)                                          \
                    for (int p = pfirst; p < pend; p += NR1) {                           \
                        int nr = pend - p < NR1 ? pend - p : NR1;                        \
                        int last = n0 + N - (p + nr - 1) * CYGRU_QPANEL;                 \
                        int nc = last < CYGRU_QPANEL ? last : CYGRU_QPANEL;              \
                        float *Cp = Ci + (ptrdiff_t)r * ldc + (p * CYGRU_QPANEL - n0);   \
                        V##_row_tiles[nr](K, &rows, r, block, Nb, p, Cp, ldc, nc);       \
                    }                                                                    \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
    ATTR static void V##_gemm(int M, int K, const float *A, ptrdiff_t lda, const void *block, \
                              int Nb, int n0, int N, float *C, ptrdiff_t ldc, void *scratch) { \
        V##_gemm_gates(1, 0, 0, M, K, A, lda, block, Nb, n0, N, C, ldc, scratch);         \
    }

/* the scratch's rows and the per-row arrays after them */
static inline void cygru_q8_scratch_rows(int K, void *scratch, char **rows, ptrdiff_t *rs,
                                         float **sa, int **bad) {
    *rows = (char *)cygru_q_align64(scratch);
    *rs = cygru_q8_row_stride(K);
    *sa = (float *)(*rows + CYGRU_QROWS * *rs);
    *bad = (int *)(*sa + CYGRU_QROWS);
}

/* ===================================== AVX-512 ===================================== */

CYGRU_Q8_AMAX512(CYGRU_Q_ATTR_L2, cygru_q8_amax_l2)
CYGRU_Q8_QUANT16(CYGRU_Q_ATTR_L2, cygru_q8_quant16_l2)
CYGRU_BF16_CONV16(CYGRU_Q_ATTR_L2, cygru_bf16_conv16_l2)

/* int8 level 2 rows: int16 values (4 per k group: one 64-bit broadcast) */
CYGRU_Q_ATTR_L2 static void cygru_q8_prep_l2(int mb, int K, const float *A, ptrdiff_t lda,
                                             void *scratch, cygru_qrows *R) {
    char *rows;
    ptrdiff_t rs;
    float *sa;
    int *bad;
    cygru_q8_scratch_rows(K, scratch, &rows, &rs, &sa, &bad);
    R->rows = rows, R->rstride = rs, R->sa = sa, R->bad = bad;
    for (int r = 0; r < mb; r++) {
        const float *a = A + r * lda;
        int16_t *q = (int16_t *)(rows + r * rs);
        float inv = 0.0f;
        int st = cygru_q8_row_scale(cygru_q8_amax_l2(K, a), &inv, &sa[r]);
        bad[r] = st == 2;
        if (st) {
            sa[r] = 0.0f;
            memset(q, 0, (size_t)cygru_q8_k4(K) * sizeof(int16_t));
            continue;
        }
        __m512 vinv = _mm512_set1_ps(inv);
        for (int k = 0; k < K; k += 16)
            _mm256_storeu_si256((__m256i *)(q + k),
                                _mm512_cvtepi32_epi16(cygru_q8_quant16_l2(K, k, a, vinv)));
    }
}

/* int8 level 2 tile: per panel two accumulators (rows 0-7, 8-15), each int32 lane the
 * sum of one k pair position of one row (vpmaddwd on the sign-extended panel); the
 * halves are added at the end. */
CYGRU_Q_ATTR_L2 CYGRU_Q_INL void cygru_q8_tile_l2(const int MR, const int NR, int K,
                                                  const cygru_qrows *R, int r0,
                                                  const void *block, int Nb, int p, float *C,
                                                  ptrdiff_t ldc, int nc) {
    ptrdiff_t K4 = cygru_q8_k4(K), G = K4 / 4;
    const int8_t *W = cygru_q8_panels(block) + (ptrdiff_t)p * K4 * CYGRU_QPANEL;
    const float *sw = cygru_q8_scales(block, Nb, K) + p * CYGRU_QPANEL;
    const char *qa = R->rows + r0 * R->rstride;
    const int8_t *wp[8];
    for (int j = 0; j < NR; j++)
        wp[j] = W + (ptrdiff_t)j * K4 * CYGRU_QPANEL;
    __m512i acc[4][8][2];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            acc[r][j][0] = acc[r][j][1] = _mm512_setzero_si512();
    for (ptrdiff_t g = 0; g < G; g++) {
        __m512i a[4];
        for (int r = 0; r < MR; r++) {
            long long v;
            memcpy(&v, qa + r * R->rstride + g * 8, sizeof v);
            a[r] = _mm512_set1_epi64(v);
        }
        for (int j = 0; j < NR; j++) {
            const int8_t *w = wp[j] + g * 64;
            __m512i wl = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)w));
            __m512i wh = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32)));
            for (int r = 0; r < MR; r++) {
                acc[r][j][0] = _mm512_add_epi32(acc[r][j][0], _mm512_madd_epi16(wl, a[r]));
                acc[r][j][1] = _mm512_add_epi32(acc[r][j][1], _mm512_madd_epi16(wh, a[r]));
            }
        }
    }
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int j = 0; j < NR; j++) {
        __m512 s = _mm512_loadu_ps(sw + j * CYGRU_QPANEL);
        __mmask16 mk = j == NR - 1 ? (__mmask16)((1u << nc) - 1u) : (__mmask16)0xFFFF;
        for (int r = 0; r < MR; r++) {
            float *c = C + r * ldc + j * CYGRU_QPANEL;
            __m512 v;
            if (R->bad[r0 + r]) {
                v = _mm512_set1_ps(NAN);
            } else {
                __m512i t = _mm512_add_epi32(
                    _mm512_permutex2var_epi32(acc[r][j][0], ie, acc[r][j][1]),
                    _mm512_permutex2var_epi32(acc[r][j][0], io, acc[r][j][1]));
                v = _mm512_mul_ps(_mm512_cvtepi32_ps(t),
                                  _mm512_mul_ps(_mm512_set1_ps(R->sa[r0 + r]), s));
            }
            _mm512_mask_storeu_ps(c, mk, v);
        }
    }
}
CYGRU_Q_VARIANT(cygru_q8_avx512, CYGRU_Q_ATTR_L2, cygru_q8_prep_l2, cygru_q8_tile_l2, 4, 2, 6)

/* bf16 level 2 rows: the bf16 values as float32 (two broadcasts per pair) */
CYGRU_Q_ATTR_L2 static void cygru_bf16_prep_l2(int mb, int K, const float *A, ptrdiff_t lda,
                                               void *scratch, cygru_qrows *R) {
    char *rows = (char *)cygru_q_align64(scratch);
    ptrdiff_t rs = cygru_bf16_row_stride(K);
    R->rows = rows, R->rstride = rs, R->sa = NULL, R->bad = NULL;
    for (int r = 0; r < mb; r++) {
        const float *a = A + r * lda;
        float *o = (float *)(rows + r * rs);
        for (int k = 0; k < K; k += 16)
            _mm512_storeu_si512(o + k, _mm512_slli_epi32(cygru_bf16_conv16_l2(K, k, a), 16));
    }
}

/* bf16 level 2 tile: per (row, panel) one float32 accumulator of 16 columns; each pair
 * is two fused multiply-adds, the odd element's first */
CYGRU_Q_ATTR_L2 CYGRU_Q_INL void cygru_bf16_tile_l2(const int MR, const int NR, int K,
                                                    const cygru_qrows *R, int r0,
                                                    const void *block, int Nb, int p,
                                                    float *C, ptrdiff_t ldc, int nc) {
    ptrdiff_t K2 = cygru_bf16_k2(K), G = K2 / 2;
    const char *W = (const char *)block + (ptrdiff_t)p * cygru_bf16_panel_bytes(K);
    ptrdiff_t pb = (ptrdiff_t)cygru_bf16_panel_bytes(K);
    const float *af = (const float *)(R->rows + r0 * R->rstride);
    ptrdiff_t ls = R->rstride / (ptrdiff_t)sizeof(float);
    const __m512i hm = _mm512_set1_epi32((int)0xFFFF0000u);
    const char *wp[8];
    for (int j = 0; j < NR; j++)
        wp[j] = W + j * pb;
    __m512 acc[8][8];
    (void)Nb;
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            acc[r][j] = _mm512_setzero_ps();
    for (ptrdiff_t g = 0; g < G; g++) {
        __m512 wo[8], we[8];
        for (int j = 0; j < NR; j++) {
            __m512i x = _mm512_loadu_si512(wp[j] + g * 64);
            wo[j] = _mm512_castsi512_ps(_mm512_and_si512(x, hm));
            we[j] = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
        }
        /* row by row: two broadcasts live at a time */
        for (int r = 0; r < MR; r++) {
            __m512 bo = _mm512_set1_ps(af[r * ls + 2 * g + 1]);
            __m512 be = _mm512_set1_ps(af[r * ls + 2 * g]);
            for (int j = 0; j < NR; j++) {
                acc[r][j] = _mm512_fmadd_ps(wo[j], bo, acc[r][j]);
                acc[r][j] = _mm512_fmadd_ps(we[j], be, acc[r][j]);
            }
        }
    }
    for (int j = 0; j < NR; j++) {
        __mmask16 mk = j == NR - 1 ? (__mmask16)((1u << nc) - 1u) : (__mmask16)0xFFFF;
        for (int r = 0; r < MR; r++)
            _mm512_mask_storeu_ps(C + r * ldc + j * CYGRU_QPANEL, mk, acc[r][j]);
    }
}
CYGRU_Q_VARIANT(cygru_bf16_avx512, CYGRU_Q_ATTR_L2, cygru_bf16_prep_l2, cygru_bf16_tile_l2, 8, 2,
                8)

/* ================================== AVX512-VNNI ==================================== */
#if CYGRU_Q_CC_VNNI
#define CYGRU_Q8_HAVE_VNNI 1
CYGRU_Q8_AMAX512(CYGRU_Q_ATTR_VNNI, cygru_q8_amax_l3)
CYGRU_Q8_QUANT16(CYGRU_Q_ATTR_VNNI, cygru_q8_quant16_l3)

/* int8 level 3 rows: bytes qa ^ 0x80 = qa + 128 (unsigned for vpdpbusd) */
CYGRU_Q_ATTR_VNNI static void cygru_q8_prep_l3(int mb, int K, const float *A, ptrdiff_t lda,
                                               void *scratch, cygru_qrows *R) {
    char *rows;
    ptrdiff_t rs;
    float *sa;
    int *bad;
    cygru_q8_scratch_rows(K, scratch, &rows, &rs, &sa, &bad);
    R->rows = rows, R->rstride = rs, R->sa = sa, R->bad = bad;
    const __m128i flip = _mm_set1_epi8((char)0x80);
    for (int r = 0; r < mb; r++) {
        const float *a = A + r * lda;
        char *q = rows + r * rs;
        float inv = 0.0f;
        int st = cygru_q8_row_scale(cygru_q8_amax_l3(K, a), &inv, &sa[r]);
        bad[r] = st == 2;
        if (st) {
            sa[r] = 0.0f;
            memset(q, 0x80, (size_t)cygru_q8_k4(K));
            continue;
        }
        __m512 vinv = _mm512_set1_ps(inv);
        for (int k = 0; k < K; k += 16)
            _mm_storeu_si128((__m128i *)(q + k),
                             _mm_xor_si128(_mm512_cvtepi32_epi8(cygru_q8_quant16_l3(K, k, a, vinv)),
                                           flip));
    }
}

CYGRU_Q_ATTR_VNNI CYGRU_Q_INL void cygru_q8_tile_l3(const int MR, const int NR, int K,
                                                   const cygru_qrows *R, int r0,
                                                   const void *block, int Nb, int p, float *C,
                                                   ptrdiff_t ldc, int nc) {
    ptrdiff_t K4 = cygru_q8_k4(K), G = K4 / 4;
    const int8_t *W = cygru_q8_panels(block) + (ptrdiff_t)p * K4 * CYGRU_QPANEL;
    const float *sw = cygru_q8_scales(block, Nb, K) + p * CYGRU_QPANEL;
    const int32_t *sums = cygru_q8_sums(block, Nb, K) + p * CYGRU_QPANEL;
    const char *qa = R->rows + r0 * R->rstride;
    const int8_t *wp[8];
    for (int j = 0; j < NR; j++)
        wp[j] = W + (ptrdiff_t)j * K4 * CYGRU_QPANEL;
    /* a small tile (a batch-1 step) splits each sum over two accumulators, even and odd
     * k groups (integer sums: any order), for twice the independent chains */
    const int split = MR * NR <= 8;
    __m512i acc[4][8], acc2[4][8];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            acc[r][j] = acc2[r][j] = _mm512_setzero_si512();
    ptrdiff_t g = 0;
    if (split) {
        for (; g + 2 <= G; g += 2) {
            for (int r = 0; r < MR; r++) {
                int v0, v1;
                memcpy(&v0, qa + r * R->rstride + g * 4, sizeof v0);
                memcpy(&v1, qa + r * R->rstride + g * 4 + 4, sizeof v1);
                __m512i a0 = _mm512_set1_epi32(v0), a1 = _mm512_set1_epi32(v1);
                for (int j = 0; j < NR; j++) {
                    CYGRU_Q_DPBUSD(acc[r][j], a0, wp[j] + g * 64);
                    CYGRU_Q_DPBUSD(acc2[r][j], a1, wp[j] + g * 64 + 64);
                }
            }
        }
    }
    for (; g < G; g++) {
        __m512i a[4];
        for (int r = 0; r < MR; r++) {
            int v;
            memcpy(&v, qa + r * R->rstride + g * 4, sizeof v);
            a[r] = _mm512_set1_epi32(v);
        }
        for (int j = 0; j < NR; j++)
            for (int r = 0; r < MR; r++)
                CYGRU_Q_DPBUSD(acc[r][j], a[r], wp[j] + g * 64);
    }
    if (split)
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < NR; j++)
                acc[r][j] = _mm512_add_epi32(acc[r][j], acc2[r][j]);
    for (int j = 0; j < NR; j++) {
        __m512 s = _mm512_loadu_ps(sw + j * CYGRU_QPANEL);
        __m512i off = _mm512_slli_epi32(_mm512_loadu_si512(sums + j * CYGRU_QPANEL), 7);
        __mmask16 mk = j == NR - 1 ? (__mmask16)((1u << nc) - 1u) : (__mmask16)0xFFFF;
        for (int r = 0; r < MR; r++) {
            __m512 v;
            if (R->bad[r0 + r])
                v = _mm512_set1_ps(NAN);
            else
                v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][j], off)),
                                  _mm512_mul_ps(_mm512_set1_ps(R->sa[r0 + r]), s));
            _mm512_mask_storeu_ps(C + r * ldc + j * CYGRU_QPANEL, mk, v);
        }
    }
}
CYGRU_Q_VARIANT(cygru_q8_vnni, CYGRU_Q_ATTR_VNNI, cygru_q8_prep_l3, cygru_q8_tile_l3, 4, 4, 8)
#else
#define CYGRU_Q8_HAVE_VNNI 0
#endif

/* ================================== AVX512-BF16 ==================================== */
#if CYGRU_Q_CC_BF16
#define CYGRU_BF16_HAVE_NATIVE 1
CYGRU_BF16_CONV16(CYGRU_Q_ATTR_BF16, cygru_bf16_conv16_l3)

/* bf16 level 3 rows: the bf16 values (one 32-bit broadcast per pair) */
CYGRU_Q_ATTR_BF16 static void cygru_bf16_prep_l3(int mb, int K, const float *A, ptrdiff_t lda,
                                                 void *scratch, cygru_qrows *R) {
    char *rows = (char *)cygru_q_align64(scratch);
    ptrdiff_t rs = cygru_bf16_row_stride(K);
    R->rows = rows, R->rstride = rs, R->sa = NULL, R->bad = NULL;
    for (int r = 0; r < mb; r++) {
        const float *a = A + r * lda;
        uint16_t *o = (uint16_t *)(rows + r * rs);
        for (int k = 0; k < K; k += 16)
            _mm256_storeu_si256((__m256i *)(o + k),
                                _mm512_cvtepi32_epi16(cygru_bf16_conv16_l3(K, k, a)));
    }
}

CYGRU_Q_ATTR_BF16 CYGRU_Q_INL void cygru_bf16_tile_l3(const int MR, const int NR, int K,
                                                     const cygru_qrows *R, int r0,
                                                     const void *block, int Nb, int p,
                                                     float *C, ptrdiff_t ldc, int nc) {
    ptrdiff_t K2 = cygru_bf16_k2(K), G = K2 / 2;
    ptrdiff_t pb = (ptrdiff_t)cygru_bf16_panel_bytes(K);
    const char *W = (const char *)block + (ptrdiff_t)p * pb;
    const char *ab = R->rows + r0 * R->rstride;
    const char *wp[8];
    for (int j = 0; j < NR; j++)
        wp[j] = W + j * pb;
    __m512 acc[4][8];
    (void)Nb;
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            acc[r][j] = _mm512_setzero_ps();
    for (ptrdiff_t g = 0; g < G; g++) {
        __m512i a[4];
        for (int r = 0; r < MR; r++) {
            int v;
            memcpy(&v, ab + r * R->rstride + g * 4, sizeof v);
            a[r] = _mm512_set1_epi32(v);
        }
        for (int j = 0; j < NR; j++)
            for (int r = 0; r < MR; r++)
                CYGRU_Q_DPBF16(acc[r][j], a[r], wp[j] + g * 64);
    }
    for (int j = 0; j < NR; j++) {
        __mmask16 mk = j == NR - 1 ? (__mmask16)((1u << nc) - 1u) : (__mmask16)0xFFFF;
        for (int r = 0; r < MR; r++)
            _mm512_mask_storeu_ps(C + r * ldc + j * CYGRU_QPANEL, mk, acc[r][j]);
    }
}
CYGRU_Q_VARIANT(cygru_bf16_native, CYGRU_Q_ATTR_BF16, cygru_bf16_prep_l3, cygru_bf16_tile_l3, 4,
                4, 8)

/* Time stamp counts of `iters` rounds of 12 independent accumulators each taking one
 * pair step (32 multiply-adds): by vdpbf16ps (native) or by the emulation's two fused
 * multiply-adds. Both give the same bits; which is faster differs between CPUs (on
 * Intel's Sapphire Rapids a vdpbf16ps costs four FMAs' issue slots, on AMD's Zen 4 one). */
CYGRU_Q_ATTR_BF16 static uint64_t cygru_bf16_probe(int native, int iters) {
    static volatile float one = 1.0f;
    __m512 acc[12];
    __m512 x = _mm512_set1_ps(one * 0x1p-60f);
    __m512i xi = _mm512_set1_epi32(0x21802180); /* bf16 pairs of 2^-60 */
    for (int i = 0; i < 12; i++)
        acc[i] = _mm512_set1_ps((float)i);
    __asm__ volatile("" : "+v"(x), "+v"(xi));
    uint64_t t0 = __rdtsc();
    if (native) {
        for (int r = 0; r < iters; r++)
            for (int i = 0; i < 12; i++)
                acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)xi, (__m512bh)xi);
    } else {
        for (int r = 0; r < iters; r++)
            for (int i = 0; i < 12; i++) {
                acc[i] = _mm512_fmadd_ps(x, x, acc[i]);
                acc[i] = _mm512_fmadd_ps(x, x, acc[i]);
            }
    }
    for (int i = 0; i < 12; i++)
        __asm__ volatile("" : : "v"(acc[i]));
    return __rdtsc() - t0;
}

/* 1 when vdpbf16ps is the faster way to the same bits on this CPU (best of five short
 * interleaved timings of each; the two differ about twofold either way) */
static inline int cygru_bf16_probe_native_faster(void) {
    uint64_t tn = UINT64_MAX, te = UINT64_MAX;
    for (int t = 0; t < 5; t++) {
        uint64_t a = cygru_bf16_probe(1, 2000), b = cygru_bf16_probe(0, 2000);
        tn = a < tn ? a : tn;
        te = b < te ? b : te;
    }
    return tn < te;
}
#else
#define CYGRU_BF16_HAVE_NATIVE 0
#endif

/* ====================================== AVX2 ======================================= */

/* 8 quantized values of a[k..k+8) (zeros past K) as int32 */
CYGRU_Q_ATTR_L1 CYGRU_Q_INL __m256 cygru_q_load8_l1(int K, int k, const float *a) {
    if (K - k >= 8)
        return _mm256_loadu_ps(a + k);
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int e = 0; e < K - k; e++)
        t[e] = a[k + e];
    return _mm256_loadu_ps(t);
}

CYGRU_Q_ATTR_L1 static void cygru_q8_prep_l1(int mb, int K, const float *A, ptrdiff_t lda,
                                             void *scratch, cygru_qrows *R) {
    char *rows;
    ptrdiff_t rs;
    float *sa;
    int *bad;
    cygru_q8_scratch_rows(K, scratch, &rows, &rs, &sa, &bad);
    R->rows = rows, R->rstride = rs, R->sa = sa, R->bad = bad;
    const __m256i absm = _mm256_set1_epi32(0x7FFFFFFF);
    for (int r = 0; r < mb; r++) {
        const float *a = A + r * lda;
        int16_t *q = (int16_t *)(rows + r * rs);
        __m256i m = _mm256_setzero_si256();
        for (int k = 0; k < K; k += 8)
            m = _mm256_max_epu32(m, _mm256_and_si256(_mm256_castps_si256(cygru_q_load8_l1(K, k, a)),
                                                     absm));
        __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
        m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0x4E));
        m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0xB1));
        float inv = 0.0f;
        int st = cygru_q8_row_scale((uint32_t)_mm_cvtsi128_si32(m4), &inv, &sa[r]);
        bad[r] = st == 2;
        if (st) {
            sa[r] = 0.0f;
            memset(q, 0, (size_t)cygru_q8_k4(K) * sizeof(int16_t));
            continue;
        }
        __m256 vinv = _mm256_set1_ps(inv);
        for (int k = 0; k < K; k += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(cygru_q_load8_l1(K, k, a), vinv));
            v = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(-127)),
                                 _mm256_set1_epi32(127));
            _mm_storeu_si128((__m128i *)(q + k),
                             _mm_packs_epi32(_mm256_castsi256_si128(v),
                                             _mm256_extracti128_si256(v, 1)));
        }
    }
}

/* int8 level 1 tile: per panel four accumulators (rows 0-3, 4-7, 8-11, 12-15), each
 * int32 lane the sum of one k pair position of one row */
CYGRU_Q_ATTR_L1 CYGRU_Q_INL void cygru_q8_tile_l1(const int MR, const int NR, int K,
                                                  const cygru_qrows *R, int r0,
                                                  const void *block, int Nb, int p, float *C,
                                                  ptrdiff_t ldc, int nc) {
    ptrdiff_t K4 = cygru_q8_k4(K), G = K4 / 4;
    const int8_t *W = cygru_q8_panels(block) + (ptrdiff_t)p * K4 * CYGRU_QPANEL;
    const float *sw = cygru_q8_scales(block, Nb, K) + p * CYGRU_QPANEL;
    const char *qa = R->rows + r0 * R->rstride;
    const int8_t *wp[4];
    for (int j = 0; j < NR; j++)
        wp[j] = W + (ptrdiff_t)j * K4 * CYGRU_QPANEL;
    __m256i acc[2][4][4];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            for (int h = 0; h < 4; h++)
                acc[r][j][h] = _mm256_setzero_si256();
    for (ptrdiff_t g = 0; g < G; g++) {
        __m256i a[2];
        for (int r = 0; r < MR; r++) {
            long long v;
            memcpy(&v, qa + r * R->rstride + g * 8, sizeof v);
            a[r] = _mm256_set1_epi64x(v);
        }
        for (int j = 0; j < NR; j++)
            for (int h = 0; h < 4; h++) {
                __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(
                    (const __m128i *)(wp[j] + g * 64 + h * 16)));
                for (int r = 0; r < MR; r++)
                    acc[r][j][h] = _mm256_add_epi32(acc[r][j][h], _mm256_madd_epi16(w, a[r]));
            }
    }
    for (int j = 0; j < NR; j++) {
        int ncj = j == NR - 1 ? nc : CYGRU_QPANEL;
        for (int r = 0; r < MR; r++) {
            float *c = C + r * ldc + j * CYGRU_QPANEL;
            float out[16];
            for (int h = 0; h < 2; h++) {
                __m256i t = _mm256_hadd_epi32(acc[r][j][2 * h], acc[r][j][2 * h + 1]);
                t = _mm256_permute4x64_epi64(t, 0xD8);
                __m256 s = _mm256_loadu_ps(sw + j * CYGRU_QPANEL + 8 * h);
                __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(t),
                                         _mm256_mul_ps(_mm256_set1_ps(R->sa[r0 + r]), s));
                if (R->bad[r0 + r])
                    v = _mm256_set1_ps(NAN);
                if (ncj == CYGRU_QPANEL)
                    _mm256_storeu_ps(c + 8 * h, v);
                else
                    _mm256_storeu_ps(out + 8 * h, v);
            }
            if (ncj < CYGRU_QPANEL)
                for (int e = 0; e < ncj; e++)
                    c[e] = out[e];
        }
    }
}
CYGRU_Q_VARIANT(cygru_q8_avx2, CYGRU_Q_ATTR_L1, cygru_q8_prep_l1, cygru_q8_tile_l1, 2, 1, 2)

CYGRU_Q_ATTR_L1 static void cygru_bf16_prep_l1(int mb, int K, const float *A, ptrdiff_t lda,
                                               void *scratch, cygru_qrows *R) {
    char *rows = (char *)cygru_q_align64(scratch);
    ptrdiff_t rs = cygru_bf16_row_stride(K);
    R->rows = rows, R->rstride = rs, R->sa = NULL, R->bad = NULL;
    for (int r = 0; r < mb; r++) {
        const float *a = A + r * lda;
        float *o = (float *)(rows + r * rs);
        for (int k = 0; k < K; k += 8) {
            __m256i u = _mm256_castps_si256(cygru_q_load8_l1(K, k, a));
            __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
            __m256i hi = _mm256_srli_epi32(u, 16);
            __m256i rn = _mm256_srli_epi32(
                _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)),
                                 _mm256_and_si256(hi, _mm256_set1_epi32(1))),
                16);
            /* mag is non-negative: signed compares order it */
            __m256i tiny = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)CYGRU_BF16_FLUSH_BITS), mag);
            __m256i special = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7F7FFFFF));
            __m256i nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7F800000));
            rn = _mm256_blendv_epi8(rn, _mm256_and_si256(hi, _mm256_set1_epi32(0x8000)), tiny);
            rn = _mm256_blendv_epi8(rn, hi, special);
            rn = _mm256_or_si256(rn, _mm256_and_si256(nan, _mm256_set1_epi32(0x40)));
            _mm256_storeu_si256((__m256i *)(o + k), _mm256_slli_epi32(rn, 16));
        }
    }
}

/* bf16 level 1 tile: per (row, panel) two accumulators of 8 columns */
CYGRU_Q_ATTR_L1 CYGRU_Q_INL void cygru_bf16_tile_l1(const int MR, const int NR, int K,
                                                    const cygru_qrows *R, int r0,
                                                    const void *block, int Nb, int p,
                                                    float *C, ptrdiff_t ldc, int nc) {
    ptrdiff_t K2 = cygru_bf16_k2(K), G = K2 / 2;
    ptrdiff_t pb = (ptrdiff_t)cygru_bf16_panel_bytes(K);
    const char *W = (const char *)block + (ptrdiff_t)p * pb;
    const float *af = (const float *)(R->rows + r0 * R->rstride);
    ptrdiff_t ls = R->rstride / (ptrdiff_t)sizeof(float);
    const __m256i hm = _mm256_set1_epi32((int)0xFFFF0000u);
    const char *wp[4];
    for (int j = 0; j < NR; j++)
        wp[j] = W + j * pb;
    __m256 acc[4][4][2];
    (void)Nb;
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            acc[r][j][0] = acc[r][j][1] = _mm256_setzero_ps();
    for (ptrdiff_t g = 0; g < G && MR == 1; g++) {
        /* one row: each panel half split and used at once (16 registers in all) */
        __m256 bo = _mm256_set1_ps(af[2 * g + 1]), be = _mm256_set1_ps(af[2 * g]);
        for (int j = 0; j < NR; j++)
            for (int h = 0; h < 2; h++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(wp[j] + g * 64 + h * 32));
                acc[0][j][h] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(x, hm)), bo,
                                               acc[0][j][h]);
                acc[0][j][h] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(x, 16)), be,
                                               acc[0][j][h]);
            }
    }
    for (ptrdiff_t g = 0; g < G && MR > 1; g++) {
        __m256 wo[4][2], we[4][2];
        for (int j = 0; j < NR; j++)
            for (int h = 0; h < 2; h++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(wp[j] + g * 64 + h * 32));
                wo[j][h] = _mm256_castsi256_ps(_mm256_and_si256(x, hm));
                we[j][h] = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
            }
        /* row by row: two broadcasts live at a time */
        for (int r = 0; r < MR; r++) {
            __m256 bo = _mm256_set1_ps(af[r * ls + 2 * g + 1]);
            __m256 be = _mm256_set1_ps(af[r * ls + 2 * g]);
            for (int j = 0; j < NR; j++)
                for (int h = 0; h < 2; h++) {
                    acc[r][j][h] = _mm256_fmadd_ps(wo[j][h], bo, acc[r][j][h]);
                    acc[r][j][h] = _mm256_fmadd_ps(we[j][h], be, acc[r][j][h]);
                }
        }
    }
    for (int j = 0; j < NR; j++) {
        int ncj = j == NR - 1 ? nc : CYGRU_QPANEL;
        for (int r = 0; r < MR; r++) {
            float *c = C + r * ldc + j * CYGRU_QPANEL;
            if (ncj == CYGRU_QPANEL) {
                _mm256_storeu_ps(c, acc[r][j][0]);
                _mm256_storeu_ps(c + 8, acc[r][j][1]);
            } else {
                float out[16];
                _mm256_storeu_ps(out, acc[r][j][0]);
                _mm256_storeu_ps(out + 8, acc[r][j][1]);
                for (int e = 0; e < ncj; e++)
                    c[e] = out[e];
            }
        }
    }
}
CYGRU_Q_VARIANT(cygru_bf16_avx2, CYGRU_Q_ATTR_L1, cygru_bf16_prep_l1, cygru_bf16_tile_l1, 4, 1, 4)

#endif

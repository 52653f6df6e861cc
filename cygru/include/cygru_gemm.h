/* cygru_gemm.h: the recurrent and input products with W packed once per call.
 *
 * Every time step multiplies the running state S (M x K, M = active batch rows,
 * K = hidden size) by the same W^T (W: N x K, N = 3H). BLAS repacks W on every
 * call (a profile of the medium config showed sgemm_incopy at 15% of the forward).
 * Here W is packed once per call into panels of 16 output columns,
 *     P[(p*K + k)*16 + c] = W[p*16 + c][k]   (zero past N),
 * and a register-blocked kernel streams each panel from L1 while it sweeps
 * blocks of rows. The same packed layout serves every step of the sequence.
 *
 * The kernel is written with GCC vector extensions (a panel of 16 floats or 16
 * doubles is one vector value) for float32 and float64 alike (cygru_gemm_t.h,
 * included once per type: cygru_pack_f / cygru_gemm_packed_f and the _d pair), and
 * compiled three times, for AVX-512, AVX2+FMA and the portable baseline; the best
 * one the CPU supports is picked at run time (cygru_cpu_level). The variants whose
 * panel is wider than one register are written apart, on intrinsics (cygru_gemm_v.h,
 * each accumulator one register): from the vector-extension code, GCC 12 kept
 * accumulators wider than a register in memory, at half the baseline's speed on AVX2
 * and 0.6x the AVX2 variant's for float64 on AVX-512. So AVX2 runs 256-bit intrinsics
 * (a panel is 2 ymm of floats, 4 of doubles) and float64's AVX-512 variant 512-bit ones
 * (a panel is 2 zmm). Rows per block: float32 8 with AVX-512 (8 independent
 * accumulators hide the FMA latency) and 4 otherwise (4 x 2 ymm = 8 accumulators on
 * AVX2); float64 8 rows x 2 zmm = 16 of the 32 zmm registers (then a block of 4; 4, 6,
 * 10, 12 and 14 rows measured no faster), 2 rows x 4 ymm on AVX2, 2 on the baseline.
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
#if CYGRU_HAVE_X86_VARIANTS
#include <immintrin.h> /* the AVX2 and float64 AVX-512 variants' intrinsics */
#endif

#define CYGRU_PANEL 16

typedef float cygru_v16 __attribute__((vector_size(64)));
typedef double cygru_v16d __attribute__((vector_size(128)));

/* Elements of the packed buffer for an N x K matrix (either type). */
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

#define CYGRU_ROW_BLOCK 96

/* the float32 functions: cygru_pack_f, cygru_gemm_packed_f, ... */
#define CG_T float
#define CG_V cygru_v16
#define CG_SUFFIX(name) name##_f
#define CG_IS_FLOAT 1
#define CG_MR_AVX512 8
#define CG_MR_OTHER 4
#define CG_MR_AVX2 4
#define CG_NP_AVX2 4
#define CG_Y __m256
#define CG_Y_LOADU _mm256_loadu_ps
#define CG_Y_STOREU _mm256_storeu_ps
#define CG_Y_SET1 _mm256_set1_ps
#define CG_Y_ZERO _mm256_setzero_ps
#define CG_Y_FMA _mm256_fmadd_ps
#define CG_Y_ADD _mm256_add_ps
#include "cygru_gemm_t.h"

/* the float64 functions: cygru_pack_d, cygru_gemm_packed_d, ... */
#define CG_T double
#define CG_V cygru_v16d
#define CG_SUFFIX(name) name##_d
#define CG_IS_FLOAT 0
#define CG_MR_AVX512 8
#define CG_MR_OTHER 2
#define CG_MR_AVX2 2
#define CG_NP_AVX2 2
#define CG_Y __m256d
#define CG_Y_LOADU _mm256_loadu_pd
#define CG_Y_STOREU _mm256_storeu_pd
#define CG_Y_SET1 _mm256_set1_pd
#define CG_Y_ZERO _mm256_setzero_pd
#define CG_Y_FMA _mm256_fmadd_pd
#define CG_Y_ADD _mm256_add_pd
#define CG_Z __m512d
#define CG_Z_LOADU _mm512_loadu_pd
#define CG_Z_STOREU _mm512_storeu_pd
#define CG_Z_SET1 _mm512_set1_pd
#define CG_Z_ZERO _mm512_setzero_pd
#define CG_Z_FMA _mm512_fmadd_pd
#define CG_Z_ADD _mm512_add_pd
#define CG_MR2_AVX512 4 /* the rows left by the 8-row blocks: a 4-row block first */
#define CG_NP_AVX512 4  /* then single rows, 4 panels (8 zmm) in flight */
#include "cygru_gemm_t.h"

#endif

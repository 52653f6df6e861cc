/* cygru_wgrad.h: the backward's big products in cygru's own kernels (no BLAS):
 *
 *     C (+)= A^T B      A: K x M, element (k, m) at A[k*sak + m*sam]
 *                       B: K x N, row stride ldb (its rows contiguous)
 *                       C: rows r of C, row stride ldc
 *
 * summed over the K = T*B rows of a sequence. The weight gradients are
 * dW_ih = dG_i^T x and dW_hh = dG_h^T h_prev (A is a gate-gradient matrix read by
 * columns: sak = its row stride, sam = 1); the input gradient dx = dG_i W_ih is the
 * same form with A = dG_i^T (sak = 1, sam = dG_i's row stride), B = W_ih, K = 3H per
 * direction.
 *
 * The rows of C a call computes are given as `ng` groups of U consecutive rows starting
 * at rows0[g] (the r, z and n rows of a piece's hidden units [u0, u1) are three such
 * groups); the same index selects A's column and the bias entry. A piece of the
 * engine owns its rows of C outright: no thread waits on, or adds into, another's sums.
 *
 * Arithmetic (what makes the gradients reproducible): every element C[r, n] is ONE
 * chain that starts from C's value and adds A[k, r] * B[k, n] for k = 0, 1, ..., K-1 in
 * that order, with a fused multiply-add where the CPU has one. Blocking (K in blocks of
 * CYGRU_WG_KC, rows and columns in chunks) only decides when the chain's partial value
 * sits in a register and when in C, never its order. So an element's bits do not
 * depend on the number of threads, on which piece computes it, on the register tile
 * of the variant, or on the rows beside it; the AVX-512 and AVX2+FMA variants give
 * the same bits, and the baseline (no FMA: a rounded product, then the sum) its own.
 * A second call that continues C (the other direction's K rows of dx) continues the
 * chain. The optional bias accumulator gets bias[r] += A[k, r] in the same k order
 * (plain additions, as column sums).
 *
 * Blocking: a block of K rows of B is packed into panels of NR columns (NV vectors,
 * zero past N) and stays in L1 while strips of MR columns of A (packed likewise) sweep
 * it; the register tile is MR x NR accumulators (AVX-512: 8 x 2 zmm, AVX2: 4 x 2 ymm,
 * baseline: 4 x 2 xmm). Each variant is written with GCC vector extensions at its
 * native width and compiled with its target attribute; the best one the CPU runs is
 * picked at run time (cygru_cpu_level).
 */
#ifndef CYGRU_WGRAD_H
#define CYGRU_WGRAD_H

#include <stddef.h>
#include <string.h>

#include "cygru_cpu.h"

#define CYGRU_WG_KC 128 /* rows of K per block (a panel of B: 128 x NR, in L1) */
#define CYGRU_WG_MC 192 /* rows of C per packed chunk of A (a multiple of every MR) */
#define CYGRU_WG_NC 512 /* columns of C per packed chunk of B (a multiple of every NR) */

/* Elements of a call's scratch (either type): one chunk of A and one of B, packed. */
static inline ptrdiff_t cygru_wgrad_scratch_size(void) {
    return (ptrdiff_t)CYGRU_WG_KC * (CYGRU_WG_MC + CYGRU_WG_NC);
}

#define WG_T float
#define WG_SUFFIX(name) name##_f
#include "cygru_wgrad_t.h"

#define WG_T double
#define WG_SUFFIX(name) name##_d
#include "cygru_wgrad_t.h"

#endif

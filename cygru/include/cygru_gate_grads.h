/* cygru_gate_grads.h: the backward's gate gradients of one row of one step, for a
 * contiguous range of U units (the element-wise first phase of a backward step).
 *
 * From the forward's cache (r, z, n and, for reset_after, ghn = W_hn h + b_hn; the
 * caller passes pointers already offset to the units) and h_{t-1}, with dh = ds + dout
 * (dout may be NULL: no output gradient at this step):
 *     dz = dh (h - n)        dn = dh (1 - z)        ds := dh z  (direct path to h_{t-1})
 *     dan = dn (1 - n^2)     daz = dz z (1 - z)
 *     reset_after:  dar = dan ghn r (1 - r);  dgi = (dar, daz, dan), dgh = (dar, daz, dan r)
 *     otherwise:    dgi = (-, daz, dan), dgh = (-, daz, dan) (r's part follows d(r*h))
 *
 * Written apart from the Cython loop with `restrict` pointers and no branch inside the
 * loop so that the compiler vectorises it (the Cython loop, with seven pointers of one
 * type and two tests per element, stayed scalar). Compiled for the baseline only, without
 * contraction into FMA, so every CPU computes the same bits (each operation rounded as
 * written, in the element type).
 */
#ifndef CYGRU_GATE_GRADS_H
#define CYGRU_GATE_GRADS_H

#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__)
#define CYGRU_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define CYGRU_NO_CONTRACT /* clang: contraction stays off unless -ffp-contract says */
#endif

#define CYGRU_GATE_GRAD_ROW(SUFFIX, T)                                                      \
CYGRU_NO_CONTRACT static void cygru_gate_grad_row_##SUFFIX(                                 \
    int U, int reset_after, const T *restrict r, const T *restrict z, const T *restrict n,  \
    const T *restrict ghn, const T *restrict hp, const T *restrict dout, T *restrict ds,     \
    T *restrict gi_r, T *restrict gi_z, T *restrict gi_n, T *restrict gh_r,                 \
    T *restrict gh_z, T *restrict gh_n) {                                                   \
    if (dout != NULL)                                                                       \
        for (int j = 0; j < U; j++)                                                         \
            ds[j] = ds[j] + dout[j];                                                        \
    if (reset_after) {                                                                      \
        for (int j = 0; j < U; j++) {                                                       \
            T dh = ds[j], zj = z[j], nj = n[j], rj = r[j];                                  \
            T dz = dh * (hp[j] - nj);                                                       \
            T dn = dh * ((T)1 - zj);                                                        \
            T dan = dn * ((T)1 - nj * nj);                                                  \
            T daz = dz * zj * ((T)1 - zj);                                                  \
            T dar = dan * ghn[j] * rj * ((T)1 - rj);                                        \
            ds[j] = dh * zj;                                                                \
            gi_r[j] = dar;                                                                  \
            gh_r[j] = dar;                                                                  \
            gi_z[j] = daz;                                                                  \
            gh_z[j] = daz;                                                                  \
            gi_n[j] = dan;                                                                  \
            gh_n[j] = dan * rj;                                                             \
        }                                                                                   \
    } else {                                                                                \
        for (int j = 0; j < U; j++) {                                                       \
            T dh = ds[j], zj = z[j], nj = n[j];                                             \
            T dz = dh * (hp[j] - nj);                                                       \
            T dn = dh * ((T)1 - zj);                                                        \
            T dan = dn * ((T)1 - nj * nj);                                                  \
            T daz = dz * zj * ((T)1 - zj);                                                  \
            ds[j] = dh * zj;                                                                \
            gi_z[j] = daz;                                                                  \
            gh_z[j] = daz;                                                                  \
            gi_n[j] = dan;                                                                  \
            gh_n[j] = dan;                                                                  \
        }                                                                                   \
    }                                                                                       \
}

CYGRU_GATE_GRAD_ROW(f, float)
CYGRU_GATE_GRAD_ROW(d, double)

#undef CYGRU_GATE_GRAD_ROW

#endif

/* cygru_gate_grads.h: element-wise loops of training, one row at a time. First the
 * backward's gate gradients of one row of one step, for a
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

/* The forward's state update of one row for U units when training: h' = (1 - z) n + z h
 * into s_out and o, and the cache the backward reads (r, z, n, h). gh holds the activated
 * (r, z, n) with gate stride U. The engine's buffers never overlap here (state and
 * next state are two buffers, o is the output, the cache its own), hence `restrict`,
 * which lets the compiler vectorise the six streams; the arithmetic is the inference
 * loop's (_blend in _kernels.pyx: no contraction), so a call and a vjp give the same
 * output bits. */
#define CYGRU_BLEND_CACHE_ROW(SUFFIX, T)                                                    \
CYGRU_NO_CONTRACT static void cygru_blend_cache_row_##SUFFIX(                               \
    int U, const T *restrict gh, const T *restrict s_in, T *restrict s_out, T *restrict o,  \
    T *restrict c_r, T *restrict c_z, T *restrict c_n, T *restrict hprev) {                 \
    for (int j = 0; j < U; j++) {                                                           \
        T z = gh[U + j], n = gh[2 * U + j], h = s_in[j];                                    \
        T hn = ((T)1 - z) * n + z * h;                                                      \
        s_out[j] = hn;                                                                      \
        o[j] = hn;                                                                          \
        c_r[j] = gh[j];                                                                     \
        c_z[j] = z;                                                                         \
        c_n[j] = n;                                                                         \
        hprev[j] = h;                                                                       \
    }                                                                                       \
}

CYGRU_BLEND_CACHE_ROW(f, float)
CYGRU_BLEND_CACHE_ROW(d, double)

#undef CYGRU_BLEND_CACHE_ROW

#endif

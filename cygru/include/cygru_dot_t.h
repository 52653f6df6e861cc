/* cygru_dot_t.h: one variant of the unpacked product (cygru_dot.h), included once per
 * element type and instruction set with these macros set (CD_NAME, CD_ATTR, CD_MR,
 * CD_NR, CD_NR1 are undefined again at the end; CD_T, CD_V, CD_IV by cygru_dot.h):
 *   CD_T      the element type (float, double)
 *   CD_V      a vector of 16 lanes of CD_T
 *   CD_IV     an integer vector of 16 lanes of CD_T's width (shuffle masks)
 *   CD_NAME   n -> n's name for this variant
 *   CD_ATTR   the target attribute (empty: the baseline)
 *   CD_MR, CD_NR  rows of A and of W of a register tile (CD_MR * CD_NR <= 16)
 *   CD_NR1    rows of W per tile of a single row of A (<= 16)
 *   CD_ROTATE 1: aligned loads of W in rotated blocks (AVX-512 only; with CD_Y, also
 *             CD_Y_LOADA (aligned) and CD_Y_MASKRANGE(p, lo, hi) (lanes lo..hi-1))
 *   CD_HALVES 1: the tree's shuffles on halves of 8 lanes (CD_V8, CD_IV8)
 *   CD_Y      (AVX2, and float64 on AVX-512) a 256- or 512-bit vector type, with
 *             CD_Y_LOADU, CD_Y_ZERO, CD_Y_FMA, CD_Y_MASKLOAD(p, n) (lanes from n on
 *             zero), CD_Y_TREE and CD_Y_REG (the asm constraint of its registers): the
 *             tile on ymm or zmm registers
 * No include guard: it is meant to be included more than once.
 */

#define CD_INLINE CD_ATTR static inline __attribute__((always_inline))

/* n (< 16) elements from p, the lanes past n zero (element by element: no call to
 * memcpy, which would make the compiler keep the accumulators in memory) */
CD_INLINE CD_V CD_NAME(cygru_dot_load)(const CD_T *p, int n) {
    CD_T tmp[16];
    CD_V v;
    for (int l = 0; l < 16; l++)
        tmp[l] = l < n ? p[l] : (CD_T)0;
    memcpy(&v, tmp, sizeof v);
    return v;
}

/* One stage of the tree for two vectors p, q that each hold R accumulators of W lanes
 * (W = 16, 8, 4, 2: stage 1, 2, 3, 4): the result holds p's R then q's R accumulators,
 * each of W/2 lanes, lane j of an accumulator being its lanes j + j+W/2 before. */
#if CD_HALVES
#define CD_LANE(q) (q)
/* in halves of 8 lanes (AVX2, the baseline, float64: one 16-lane shuffle would be split
 * into element moves): the result's first half comes from p alone, its second from q */
CD_INLINE CD_V8 CD_NAME(cygru_dot_half)(CD_V v, int stage) {
    CD_V8 l, h, lo, hi;
    memcpy(&l, &v, sizeof l);
    memcpy(&h, (char *)&v + sizeof l, sizeof h);
    switch (stage) {
    case 1:
        return l + h;
    case 2:
        lo = CYGRU_DOT_SHUF(CD_IV8, l, h, 0, 1, 2, 3, 8, 9, 10, 11);
        hi = CYGRU_DOT_SHUF(CD_IV8, l, h, 4, 5, 6, 7, 12, 13, 14, 15);
        break;
    case 3:
        lo = CYGRU_DOT_SHUF(CD_IV8, l, h, 0, 1, 4, 5, 8, 9, 12, 13);
        hi = CYGRU_DOT_SHUF(CD_IV8, l, h, 2, 3, 6, 7, 10, 11, 14, 15);
        break;
    default:
        lo = CYGRU_DOT_SHUF(CD_IV8, l, h, 0, 2, 4, 6, 8, 10, 12, 14);
        hi = CYGRU_DOT_SHUF(CD_IV8, l, h, 1, 3, 5, 7, 9, 11, 13, 15);
        break;
    }
    return lo + hi;
}

CD_INLINE CD_V CD_NAME(cygru_dot_stage)(CD_V p, CD_V q, int stage) {
    CD_V r;
    CD_V8 a = CD_NAME(cygru_dot_half)(p, stage), b = CD_NAME(cygru_dot_half)(q, stage);
    memcpy(&r, &a, sizeof a);
    memcpy((char *)&r + sizeof a, &b, sizeof b);
    return r;
}
#else
/* full 16-lane vectors (float32 on AVX-512): a blend and one two-source permute per
 * stage instead of two permutes. Within each block of W lanes the result holds p's
 * sums in the first half and q's in the second, so after the four stages the sum of
 * accumulator q is in lane CD_LANE(q) = q with its 4 bits reversed. */
#define CD_LANE(q) ((((q) & 1) << 3) | (((q) & 2) << 1) | (((q) & 4) >> 1) | (((q) & 8) >> 3))
CD_INLINE CD_V CD_NAME(cygru_dot_stage)(CD_V p, CD_V q, int stage) {
    CD_V u, v;
    switch (stage) {
    case 1:
        u = CYGRU_DOT_SHUF(CD_IV, p, q, 0, 1, 2, 3, 4, 5, 6, 7, 24, 25, 26, 27, 28, 29, 30, 31);
        v = CYGRU_DOT_SHUF(CD_IV, p, q, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                           23);
        break;
    case 2:
        u = CYGRU_DOT_SHUF(CD_IV, p, q, 0, 1, 2, 3, 20, 21, 22, 23, 8, 9, 10, 11, 28, 29, 30, 31);
        v = CYGRU_DOT_SHUF(CD_IV, p, q, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 24, 25, 26,
                           27);
        break;
    case 3:
        u = CYGRU_DOT_SHUF(CD_IV, p, q, 0, 1, 18, 19, 4, 5, 22, 23, 8, 9, 26, 27, 12, 13, 30, 31);
        v = CYGRU_DOT_SHUF(CD_IV, p, q, 2, 3, 16, 17, 6, 7, 20, 21, 10, 11, 24, 25, 14, 15, 28,
                           29);
        break;
    default:
        u = CYGRU_DOT_SHUF(CD_IV, p, q, 0, 17, 2, 19, 4, 21, 6, 23, 8, 25, 10, 27, 12, 29, 14, 31);
        v = CYGRU_DOT_SHUF(CD_IV, p, q, 1, 16, 3, 18, 5, 20, 7, 22, 9, 24, 11, 26, 13, 28, 15,
                           30);
        break;
    }
    return u + v;
}
#endif

/* The tree of cygru_dot.h for n accumulators (n = 1, 2, 4, 8 or 16, a constant once
 * inlined): lane q of the result is the sum of acc[q]'s 16 lanes. A stage with a single
 * vector left pairs it with itself (its lanes then repeat; the first ones are kept). */
CD_INLINE CD_V CD_NAME(cygru_dot_reduce)(const CD_V *acc, int n) {
    CD_V s1[8], s2[4], s3[2];
    if (n == 1)
        s1[0] = CD_NAME(cygru_dot_stage)(acc[0], acc[0], 1);
    for (int q = 0; q < n / 2; q++)
        s1[q] = CD_NAME(cygru_dot_stage)(acc[2 * q], acc[2 * q + 1], 1);
    n = n > 1 ? n / 2 : 1;
    if (n == 1)
        s2[0] = CD_NAME(cygru_dot_stage)(s1[0], s1[0], 2);
    for (int q = 0; q < n / 2; q++)
        s2[q] = CD_NAME(cygru_dot_stage)(s1[2 * q], s1[2 * q + 1], 2);
    n = n > 1 ? n / 2 : 1;
    if (n == 1)
        s3[0] = CD_NAME(cygru_dot_stage)(s2[0], s2[0], 3);
    for (int q = 0; q < n / 2; q++)
        s3[q] = CD_NAME(cygru_dot_stage)(s2[2 * q], s2[2 * q + 1], 3);
    n = n > 1 ? n / 2 : 1;
    if (n == 1)
        return CD_NAME(cygru_dot_stage)(s3[0], s3[0], 4);
    return CD_NAME(cygru_dot_stage)(s3[0], s3[1], 4);
}

/* Reduce a tile's MR * NR accumulators (acc[r * NR + c]: row r of A, row c of W) and
 * store (or add) them into C. A full tile of 16 feeds the tree its accumulators in the
 * order that leaves element e of the tile in lane e (CD_LANE is its own inverse), so a
 * row's results are contiguous; smaller tiles pick their lanes one by one. */
CD_INLINE void CD_NAME(cygru_dot_store)(int MR, int NR, CD_V *acc, CD_T *C, int ldc,
                                        int accumulate) {
    CD_T out[16];
    CD_V s;
    int ordered = MR * NR == 16 || CD_LANE(1) == 1;
    if (MR * NR == 16 && CD_LANE(1) != 1) {
        CD_V in[16];
        for (int q = 0; q < 16; q++)
            in[q] = acc[CD_LANE(q)];
        s = CD_NAME(cygru_dot_reduce)(in, 16);
    } else {
        s = CD_NAME(cygru_dot_reduce)(acc, MR * NR);
    }
    memcpy(out, &s, sizeof s);
    for (int r = 0; r < MR; r++) {
        CD_T *cr = C + (ptrdiff_t)r * ldc;
        if (ordered && accumulate)
            for (int c = 0; c < NR; c++)
                cr[c] = cr[c] + out[r * NR + c];
        else if (ordered)
            memcpy(cr, out + r * NR, (size_t)NR * sizeof(CD_T));
        else if (accumulate)
            for (int c = 0; c < NR; c++)
                cr[c] = cr[c] + out[CD_LANE(r * NR + c)];
        else
            for (int c = 0; c < NR; c++)
                cr[c] = out[CD_LANE(r * NR + c)];
    }
}

#ifdef CD_Y
/* The same tile on 256-bit registers (the AVX2 variants) or 512-bit ones (float64 on
 * AVX-512): each accumulator's 16 lanes are CD_Y_PARTS vectors of CD_Y (two ymm for
 * float, four ymm or two zmm for double), so that each is held in registers (with one
 * 64- or 128-byte vector per accumulator, GCC keeps them in memory on AVX2, at half the
 * baseline's speed, and float64's on AVX-512, at 0.6-0.7x the AVX2 variant's). Lane j
 * still accumulates its k = j, j+16, ... with one FMA each, the last partial block
 * zero-padded (masked loads, which touch no memory past K); CD_Y_TREE then adds each
 * accumulator's lanes by the same tree, on ymm or zmm registers, and the sums are stored
 * or added to C (C + sum) as cygru_dot_store does. MR * NR <= CD_Y_TILE <= 4 on ymm, 8
 * on zmm (what the trees take). */
#define CD_Y_LANES ((int)(sizeof(CD_Y) / sizeof(CD_T)))
#define CD_Y_PARTS (16 / CD_Y_LANES)
#define CD_Y_TILE (CD_MR * CD_NR > CD_NR1 ? CD_MR * CD_NR : CD_NR1)
CD_INLINE void CD_NAME(cygru_dot_tile)(int MR, int NR, int K, const CD_T *A, int lda,
                                       const CD_T *W, int ldw, CD_T *C, int ldc,
                                       int accumulate) {
    CD_Y acc[CD_Y_TILE][CD_Y_PARTS];
    int k = 0;
    for (int q = 0; q < MR * NR; q++)
        for (int h = 0; h < CD_Y_PARTS; h++)
            acc[q][h] = CD_Y_ZERO();
    for (; k + 16 <= K; k += 16) {
        /* each block of A and of W loaded once (MR * NR FMAs per pair of loads) */
        CD_Y a[CD_Y_TILE][CD_Y_PARTS];
        for (int r = 0; r < MR; r++)
            for (int h = 0; h < CD_Y_PARTS; h++) {
                a[r][h] = CD_Y_LOADU(A + (ptrdiff_t)r * lda + k + h * CD_Y_LANES);
                __asm__("" : "+" CD_Y_REG(a[r][h])); /* see w below */
            }
        for (int c = 0; c < NR; c++)
            for (int h = 0; h < CD_Y_PARTS; h++) {
                CD_Y w = CD_Y_LOADU(W + (ptrdiff_t)c * ldw + k + h * CD_Y_LANES);
                /* in a register: GCC would otherwise fold the load into each FMA, MR
                 * loads instead of one (the loop is bound by its loads) */
                __asm__("" : "+" CD_Y_REG(w));
                for (int r = 0; r < MR; r++)
                    acc[r * NR + c][h] = CD_Y_FMA(a[r][h], w, acc[r * NR + c][h]);
            }
    }
    if (k < K) {
        /* the last, partial block: lanes past K are zeros in both operands */
        for (int r = 0; r < MR; r++) {
            CD_Y a[CD_Y_PARTS];
            for (int h = 0; h < CD_Y_PARTS; h++) {
                int n = K - k - h * CD_Y_LANES;
                a[h] = n > 0 ? CD_Y_MASKLOAD(A + (ptrdiff_t)r * lda + k + h * CD_Y_LANES, n)
                             : CD_Y_ZERO();
            }
            for (int c = 0; c < NR; c++)
                for (int h = 0; h < CD_Y_PARTS; h++) {
                    int n = K - k - h * CD_Y_LANES;
                    CD_Y w = n > 0 ? CD_Y_MASKLOAD(W + (ptrdiff_t)c * ldw + k + h * CD_Y_LANES, n)
                                   : CD_Y_ZERO();
                    acc[r * NR + c][h] = CD_Y_FMA(a[h], w, acc[r * NR + c][h]);
                }
        }
    }
    CD_T out[CD_Y_TILE];
    CD_Y_TREE((const CD_Y(*)[CD_Y_PARTS])acc, MR * NR, out);
    for (int r = 0; r < MR; r++) {
        CD_T *cr = C + (ptrdiff_t)r * ldc;
        for (int c = 0; c < NR; c++)
            cr[c] = accumulate ? cr[c] + out[r * NR + c] : out[r * NR + c];
    }
}

#if CD_ROTATE
/* The same tile when W's rows start at the same offset within a 64-byte line (ldw a
 * multiple of CD_Y_LANES, float64 on AVX-512): W is read in aligned blocks, so that no
 * load straddles two cache lines, as cygru_dot_tile_rot below does for float32 (which
 * gives the reasoning in full). A row starting o elements past a line puts k in physical
 * lane (k + o) mod 16 of the 16-lane accumulator: each lane still accumulates its
 * k = j, j+16, ... in order, the tree adds the same pairs of logical lanes, and the
 * lanes before k = 0 and from k = K on are zeros in both operands (masked loads, which
 * touch no memory there), products 0 * 0 added to an accumulator that is never -0. */
#define CD_Y_EDGE_PART(P, h)                                                              \
    (K - (kb + (h) * CD_Y_LANES) > (kb + (h) * CD_Y_LANES < 0 ? -(kb + (h) * CD_Y_LANES) : 0) \
         ? CD_Y_MASKRANGE((P) + kb + (h) * CD_Y_LANES,                                    \
                          kb + (h) * CD_Y_LANES < 0 ? -(kb + (h) * CD_Y_LANES) : 0,        \
                          K - (kb + (h) * CD_Y_LANES) < CD_Y_LANES                        \
                              ? K - (kb + (h) * CD_Y_LANES)                               \
                              : CD_Y_LANES)                                               \
         : CD_Y_ZERO())
#define CD_Y_EDGE_BLOCK()                                                                 \
    for (int r = 0; r < MR; r++) {                                                        \
        CD_Y a[CD_Y_PARTS];                                                               \
        for (int h = 0; h < CD_Y_PARTS; h++)                                              \
            a[h] = CD_Y_EDGE_PART(A + (ptrdiff_t)r * lda, h);                             \
        for (int c = 0; c < NR; c++)                                                      \
            for (int h = 0; h < CD_Y_PARTS; h++)                                          \
                acc[r * NR + c][h] =                                                      \
                    CD_Y_FMA(a[h], CD_Y_EDGE_PART(W + (ptrdiff_t)c * ldw, h),             \
                             acc[r * NR + c][h]);                                         \
    }
CD_INLINE void CD_NAME(cygru_dot_tile_rot)(int MR, int NR, int K, const CD_T *A, int lda,
                                           const CD_T *W, int ldw, CD_T *C, int ldc,
                                           int accumulate) {
    CD_Y acc[CD_Y_TILE][CD_Y_PARTS];
    int kb = -(int)(((uintptr_t)W / sizeof(CD_T)) & (CD_Y_LANES - 1));
    for (int q = 0; q < MR * NR; q++)
        for (int h = 0; h < CD_Y_PARTS; h++)
            acc[q][h] = CD_Y_ZERO();
    if (kb < 0) {
        /* the first block: lanes before k = 0 (and from K on) are zeros */
        CD_Y_EDGE_BLOCK()
        kb += 16;
    }
    for (; kb + 16 <= K; kb += 16) {
        CD_Y a[CD_Y_TILE][CD_Y_PARTS];
        for (int r = 0; r < MR; r++)
            for (int h = 0; h < CD_Y_PARTS; h++) {
                a[r][h] = CD_Y_LOADU(A + (ptrdiff_t)r * lda + kb + h * CD_Y_LANES);
                __asm__("" : "+" CD_Y_REG(a[r][h]));
            }
        for (int c = 0; c < NR; c++)
            for (int h = 0; h < CD_Y_PARTS; h++) {
                CD_Y w = CD_Y_LOADA(W + (ptrdiff_t)c * ldw + kb + h * CD_Y_LANES);
                __asm__("" : "+" CD_Y_REG(w));
                for (int r = 0; r < MR; r++)
                    acc[r * NR + c][h] = CD_Y_FMA(a[r][h], w, acc[r * NR + c][h]);
            }
    }
    if (kb < K) {
        /* the last block: lanes from k = K on are zeros */
        CD_Y_EDGE_BLOCK()
    }
    CD_T out[CD_Y_TILE];
    CD_Y_TREE((const CD_Y(*)[CD_Y_PARTS])acc, MR * NR, out);
    for (int r = 0; r < MR; r++) {
        CD_T *cr = C + (ptrdiff_t)r * ldc;
        for (int c = 0; c < NR; c++)
            cr[c] = accumulate ? cr[c] + out[r * NR + c] : out[r * NR + c];
    }
}
#undef CD_Y_EDGE_PART
#undef CD_Y_EDGE_BLOCK
#endif
#undef CD_Y_LANES
#undef CD_Y_PARTS
#undef CD_Y_TILE
#else
/* The MR x NR tile of C at (A's rows, W's rows) given by the pointers; MR and NR are
 * constants once inlined (MR * NR = 1, 2, 4, 8 or 16). */
CD_INLINE void CD_NAME(cygru_dot_tile)(int MR, int NR, int K, const CD_T *A, int lda,
                                       const CD_T *W, int ldw, CD_T *C, int ldc,
                                       int accumulate) {
    CD_V acc[16];
    int k = 0;
    for (int q = 0; q < MR * NR; q++)
        acc[q] = (CD_V){0};
    for (; k + 16 <= K; k += 16) {
        for (int r = 0; r < MR; r++) {
            CD_V a;
            memcpy(&a, A + (ptrdiff_t)r * lda + k, sizeof a);
            for (int c = 0; c < NR; c++) {
                CD_V w;
                memcpy(&w, W + (ptrdiff_t)c * ldw + k, sizeof w);
                acc[r * NR + c] += a * w;
            }
        }
    }
    if (k < K) {
        /* the last, partial block: lanes past K are zeros in both operands */
        for (int r = 0; r < MR; r++) {
            CD_V a = CD_NAME(cygru_dot_load)(A + (ptrdiff_t)r * lda + k, K - k);
            for (int c = 0; c < NR; c++)
                acc[r * NR + c] += a * CD_NAME(cygru_dot_load)(W + (ptrdiff_t)c * ldw + k, K - k);
        }
    }
    CD_NAME(cygru_dot_store)(MR, NR, acc, C, ldc, accumulate);
}
#endif

#if CD_ROTATE && !defined(CD_Y)
/* The same tile when W's rows start at the same offset within a 64-byte line (ldw a
 * multiple of 16 elements): W is read in aligned 16-lane blocks, so that no load
 * straddles two cache lines (which halves the speed of a product read from L2). A row
 * starting o elements past a line puts k in physical lane (k + o) mod 16 instead of
 * k mod 16: each lane still accumulates its k = j, j+16, ... in order, and the tree's
 * stages add physical lanes p and p + 8 (then + 4, + 2, + 1) within the rotated blocks,
 * which are the same pairs of logical lanes, so every element gets exactly the
 * operations of the plain tile. The lanes before k = 0 and from k = K on are zeros in
 * both operands (masked loads, which touch no memory there): adding a product 0 * 0 to
 * an accumulator that starts at +0 changes nothing (it is never -0 in round-to-nearest),
 * as for the plain tile's zero padding. A is read unaligned at the same k. */
CD_INLINE void CD_NAME(cygru_dot_tile_rot)(int MR, int NR, int K, const CD_T *A, int lda,
                                           const CD_T *W, int ldw, CD_T *C, int ldc,
                                           int accumulate) {
    CD_V acc[16];
    int kb = -(int)(((uintptr_t)W / sizeof(CD_T)) & 15);
    for (int q = 0; q < MR * NR; q++)
        acc[q] = (CD_V){0};
#define CD_ROT_BLOCK(M_)                                                                  \
    for (int r = 0; r < MR; r++) {                                                        \
        CD_V a = (CD_V)_mm512_maskz_loadu_ps(M_, A + (ptrdiff_t)r * lda + kb);            \
        for (int c = 0; c < NR; c++)                                                      \
            acc[r * NR + c] +=                                                            \
                a * (CD_V)_mm512_maskz_loadu_ps(M_, W + (ptrdiff_t)c * ldw + kb);         \
    }
    if (kb < 0) {
        /* the first block: lanes before k = 0 (and from K on) are zeros */
        int hi = K - kb < 16 ? K - kb : 16;
        __mmask16 m = (__mmask16)(((1u << hi) - 1u) & ~((1u << -kb) - 1u));
        CD_ROT_BLOCK(m)
        kb += 16;
    }
    for (; kb + 16 <= K; kb += 16) {
        for (int r = 0; r < MR; r++) {
            CD_V a;
            memcpy(&a, A + (ptrdiff_t)r * lda + kb, sizeof a);
            for (int c = 0; c < NR; c++)
                acc[r * NR + c] += a * (CD_V)_mm512_load_ps(W + (ptrdiff_t)c * ldw + kb);
        }
    }
    if (kb < K) {
        /* the last block: lanes from k = K on are zeros */
        __mmask16 m = (__mmask16)((1u << (K - kb)) - 1u);
        CD_ROT_BLOCK(m)
    }
#undef CD_ROT_BLOCK
    CD_NAME(cygru_dot_store)(MR, NR, acc, C, ldc, accumulate);
}
#endif

#if CD_ROTATE
#define CD_TILE(MR, NR, ...)                                                              \
    do {                                                                                  \
        if (rot)                                                                          \
            CD_NAME(cygru_dot_tile_rot)(MR, NR, __VA_ARGS__);                             \
        else                                                                              \
            CD_NAME(cygru_dot_tile)(MR, NR, __VA_ARGS__);                                 \
    } while (0)
#else
#define CD_TILE(MR, NR, ...) CD_NAME(cygru_dot_tile)(MR, NR, __VA_ARGS__)
#endif

/* Rows [i, i_end) in steps of MR, columns from n on in tiles of NR, NR/2, ..., 1 (the
 * leftover columns by halving tiles). */
#define CD_COLUMNS(MR, NR, i_beg, i_end)                                                   \
    do {                                                                                  \
        int n_ = 0;                                                                       \
        for (; n_ + (NR) <= N; n_ += (NR))                                                \
            for (int i_ = (i_beg); i_ < (i_end); i_ += (MR))                              \
                CD_TILE((MR), (NR), K, A + (ptrdiff_t)i_ * lda, lda,                      \
                        W + (ptrdiff_t)n_ * ldw, ldw, C + (ptrdiff_t)i_ * ldc + n_, ldc,  \
                        accumulate);                                                      \
        CD_HALF(MR, NR, 8, i_beg, i_end)                                                  \
        CD_HALF(MR, NR, 4, i_beg, i_end)                                                  \
        CD_HALF(MR, NR, 2, i_beg, i_end)                                                  \
        CD_HALF(MR, NR, 1, i_beg, i_end)                                                  \
    } while (0)
#define CD_HALF(MR, NR, H, i_beg, i_end)                                                   \
    if ((NR) > (H) && n_ + (H) <= N) {                                                    \
        for (int i_ = (i_beg); i_ < (i_end); i_ += (MR))                                  \
            CD_TILE((MR), (H), K, A + (ptrdiff_t)i_ * lda, lda, W + (ptrdiff_t)n_ * ldw,  \
                    ldw, C + (ptrdiff_t)i_ * ldc + n_, ldc, accumulate);                  \
        n_ += (H);                                                                        \
    }

CD_ATTR static void CD_NAME(cygru_dot_kernel)(int M, int N, int K, const CD_T *A, int lda,
                                              const CD_T *W, int ldw, CD_T *C, int ldc,
                                              int accumulate) {
#if CD_ROTATE
    /* every row of W at the same offset in its line: aligned, rotated blocks */
#ifdef CD_Y
    /* (float64 on zmm: from K = 96 on; at K = 64 the two masked edge blocks a row then
     * has cost more than the loads that straddle lines, 10% at B = 4) */
    int rot = ldw % (int)(sizeof(CD_Y) / sizeof(CD_T)) == 0 && K >= 96;
#else
    int rot = ldw % 16 == 0;
#endif
#endif
    for (int i0 = 0; i0 < M; i0 += CYGRU_DOT_ROW_BLOCK) {
        int i1 = M - i0 < CYGRU_DOT_ROW_BLOCK ? M : i0 + CYGRU_DOT_ROW_BLOCK;
        int full_end = i0 + (i1 - i0) / CD_MR * CD_MR;
        if (full_end > i0)
            CD_COLUMNS(CD_MR, CD_NR, i0, full_end);
        /* leftover rows (and M = 1): one row of A against NR1 rows of W */
        if (full_end < i1)
            CD_COLUMNS(1, CD_NR1, full_end, i1);
    }
}

#undef CD_COLUMNS
#undef CD_HALF
#undef CD_INLINE
#undef CD_NAME
#undef CD_ATTR
#undef CD_MR
#undef CD_NR
#undef CD_NR1
#undef CD_HALVES
#undef CD_ROTATE
#undef CD_TILE
#undef CD_LANE
#undef CD_Y
#undef CD_Y_REG
#undef CD_Y_LOADU
#undef CD_Y_ZERO
#undef CD_Y_FMA
#undef CD_Y_MASKLOAD
#undef CD_Y_MASKRANGE
#undef CD_Y_LOADA
#undef CD_Y_TREE

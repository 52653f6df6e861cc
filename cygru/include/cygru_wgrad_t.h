/* cygru_wgrad_t.h: cygru_wgrad.h's products for one element type, included by it once
 * per type with WG_T (float, double) and WG_SUFFIX(n) (n##_f, n##_d) set; they are
 * undefined again at the end. No include guard: it is meant to be included twice. */

#define WG_NAME(a, b) WG_SUFFIX(a##_##b)
#define WG_MIN(a, b) ((a) < (b) ? (a) : (b))

/* One variant: VAR names it, ATTR is its target attribute, VB its vector's bytes, MR the
 * rows and NV the vectors (of VB bytes) of its register tile. */
#define WG_DEFINE(VAR, ATTR, VB, MR, NV)                                                  \
typedef WG_T WG_NAME(cygru_wg_vec, VAR) __attribute__((vector_size(VB)));                \
                                                                                          \
/* c[0:mrows, 0:ncols] (row stride ldc) += ap^T bp over kc rows: ap is a strip of MR      \
 * columns of A (kc x MR), bp a panel of NR columns of B (kc x NR), both zero-padded.      \
 * The tile's partial sums live in registers between loading and storing C. */           \
ATTR static inline __attribute__((always_inline)) void WG_NAME(cygru_wg_tile, VAR)(       \
    int kc, const WG_T *ap, const WG_T *bp, WG_T *c, ptrdiff_t ldc, int mrows, int ncols) { \
    typedef WG_NAME(cygru_wg_vec, VAR) V;                                                 \
    enum { VL = VB / (int)sizeof(WG_T), NR = VL * NV };                                   \
    V acc[MR][NV];                                                                        \
    WG_T tmp[MR][NR];                                                                     \
    int full = mrows == MR && ncols == NR;                                                \
    if (full) {                                                                           \
        for (int r = 0; r < MR; r++)                                                      \
            for (int v = 0; v < NV; v++)                                                  \
                memcpy(&acc[r][v], c + (ptrdiff_t)r * ldc + v * VL, sizeof(V));           \
    } else {                                                                              \
        memset(tmp, 0, sizeof tmp);                                                       \
        for (int r = 0; r < mrows; r++)                                                   \
            memcpy(tmp[r], c + (ptrdiff_t)r * ldc, (size_t)ncols * sizeof(WG_T));         \
        for (int r = 0; r < MR; r++)                                                      \
            for (int v = 0; v < NV; v++)                                                  \
                memcpy(&acc[r][v], &tmp[r][v * VL], sizeof(V));                           \
    }                                                                                     \
    for (int k = 0; k < kc; k++) {                                                        \
        V b[NV];                                                                          \
        for (int v = 0; v < NV; v++)                                                      \
            memcpy(&b[v], bp + (ptrdiff_t)k * NR + v * VL, sizeof(V));                    \
        for (int r = 0; r < MR; r++) {                                                    \
            WG_T a = ap[(ptrdiff_t)k * MR + r];                                           \
            for (int v = 0; v < NV; v++)                                                  \
                acc[r][v] += a * b[v];                                                    \
        }                                                                                 \
    }                                                                                     \
    if (full) {                                                                           \
        for (int r = 0; r < MR; r++)                                                      \
            for (int v = 0; v < NV; v++)                                                  \
                memcpy(c + (ptrdiff_t)r * ldc + v * VL, &acc[r][v], sizeof(V));           \
    } else {                                                                              \
        for (int r = 0; r < MR; r++)                                                      \
            for (int v = 0; v < NV; v++)                                                  \
                memcpy(&tmp[r][v * VL], &acc[r][v], sizeof(V));                           \
        for (int r = 0; r < mrows; r++)                                                   \
            memcpy(c + (ptrdiff_t)r * ldc, tmp[r], (size_t)ncols * sizeof(WG_T));         \
    }                                                                                     \
}                                                                                         \
                                                                                          \
ATTR static void WG_NAME(cygru_wgrad, VAR)(                                               \
    int ng, const int *rows0, int U, int N, int K, const WG_T *A, ptrdiff_t sak,          \
    ptrdiff_t sam, const WG_T *B, ptrdiff_t ldb, WG_T *C, ptrdiff_t ldc, WG_T *bias,      \
    WG_T *scratch) {                                                                      \
    enum { NR = VB / (int)sizeof(WG_T) * NV };                                            \
    WG_T *bpk = scratch;                                   /* KC x NC: B's panels */      \
    WG_T *apk = scratch + (ptrdiff_t)CYGRU_WG_KC * CYGRU_WG_NC; /* KC x MC: A's strips */ \
    for (int n0 = 0; n0 < N; n0 += CYGRU_WG_NC) {                                         \
        int nc = WG_MIN(CYGRU_WG_NC, N - n0), npan = (nc + NR - 1) / NR;                  \
        for (int k0 = 0; k0 < K; k0 += CYGRU_WG_KC) {                                     \
            int kc = WG_MIN(CYGRU_WG_KC, K - k0);                                         \
            /* B[k0:k0+kc, n0:n0+nc] as npan panels of kc x NR, zero past nc */           \
            for (int p = 0; p < npan; p++) {                                              \
                WG_T *dst = bpk + (ptrdiff_t)p * kc * NR;                                 \
                int cols = WG_MIN(NR, nc - p * NR);                                       \
                const WG_T *src = B + (ptrdiff_t)k0 * ldb + n0 + p * NR;                  \
                if (cols == NR) /* a constant size: the copies are inlined moves */       \
                    for (int k = 0; k < kc; k++)                                          \
                        memcpy(dst + (ptrdiff_t)k * NR, src + (ptrdiff_t)k * ldb,         \
                               NR * sizeof(WG_T));                                        \
                else                                                                      \
                    for (int k = 0; k < kc; k++) {                                        \
                        memcpy(dst + (ptrdiff_t)k * NR, src + (ptrdiff_t)k * ldb,         \
                               (size_t)cols * sizeof(WG_T));                              \
                        memset(dst + (ptrdiff_t)k * NR + cols, 0,                         \
                               (size_t)(NR - cols) * sizeof(WG_T));                       \
                    }                                                                     \
            }                                                                             \
            for (int g = 0; g < ng; g++)                                                  \
            for (int m0 = 0; m0 < U; m0 += CYGRU_WG_MC) {                                 \
                int mc = WG_MIN(CYGRU_WG_MC, U - m0), ns = (mc + MR - 1) / MR;            \
                int row = rows0[g] + m0;                                                  \
                /* A[k0:k0+kc, row:row+mc] as ns strips of kc x MR, zero past mc; on the  \
                 * first column chunk each value also goes into its bias sum (in k order). \
                 * Read along A's contiguous direction: the rows of a gradient matrix are  \
                 * thousands of bytes apart, too far for the hardware's stride prefetch.  */ \
                int with_bias = bias != NULL && n0 == 0;                                  \
                if (ns * MR > mc)                                                         \
                    memset(apk, 0, (size_t)ns * kc * MR * sizeof(WG_T));                  \
                if (sam == 1) {                                                           \
                    for (int k = 0; k < kc; k++) {                                        \
                        const WG_T *a = A + (ptrdiff_t)(k0 + k) * sak + row;              \
                        /* the same row of the next block, while this one computes */   \
                        if (k0 + k + CYGRU_WG_KC < K)                                     \
                            for (int j = 0; j < mc; j += 64 / (int)sizeof(WG_T))          \
                                __builtin_prefetch(a + (ptrdiff_t)CYGRU_WG_KC * sak + j); \
                        for (int s = 0; s < ns; s++) {                                    \
                            WG_T *d = apk + ((ptrdiff_t)s * kc + k) * MR;                 \
                            if (s * MR + MR <= mc)                                        \
                                memcpy(d, a + s * MR, MR * sizeof(WG_T));                 \
                            else                                                          \
                                memcpy(d, a + s * MR, (size_t)(mc - s * MR) * sizeof(WG_T)); \
                        }                                                                 \
                        if (with_bias)                                                    \
                            for (int j = 0; j < mc; j++)                                  \
                                bias[row + j] += a[j];                                    \
                    }                                                                     \
                } else {                                                                  \
                    for (int j = 0; j < mc; j++) {                                        \
                        const WG_T *a = A + (ptrdiff_t)k0 * sak + (ptrdiff_t)(row + j) * sam; \
                        WG_T *d = apk + (ptrdiff_t)(j / MR) * kc * MR + j % MR;           \
                        WG_T acc = with_bias ? bias[row + j] : (WG_T)0;                   \
                        /* this block of the row one chunk of rows ahead */               \
                        if (m0 + j + CYGRU_WG_MC < U)                                     \
                            for (int k = 0; k < kc; k += 64 / (int)sizeof(WG_T))          \
                                __builtin_prefetch(a + (ptrdiff_t)CYGRU_WG_MC * sam +     \
                                                   (ptrdiff_t)k * sak);                   \
                        for (int k = 0; k < kc; k++) {                                    \
                            d[(ptrdiff_t)k * MR] = a[(ptrdiff_t)k * sak];                 \
                            acc += a[(ptrdiff_t)k * sak];                                 \
                        }                                                                 \
                        if (with_bias)                                                    \
                            bias[row + j] = acc;                                          \
                    }                                                                     \
                }                                                                         \
                /* each panel of B stays in L1 while the strips sweep it */               \
                for (int p = 0; p < npan; p++)                                            \
                    for (int s = 0; s < ns; s++)                                          \
                        WG_NAME(cygru_wg_tile, VAR)(                                      \
                            kc, apk + (ptrdiff_t)s * kc * MR, bpk + (ptrdiff_t)p * kc * NR, \
                            C + (ptrdiff_t)(row + s * MR) * ldc + n0 + p * NR, ldc,        \
                            WG_MIN(MR, mc - s * MR), WG_MIN(NR, nc - p * NR));             \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
}

typedef void (*WG_SUFFIX(cygru_wgrad_fn))(int, const int *, int, int, int, const WG_T *,
                                          ptrdiff_t, ptrdiff_t, const WG_T *, ptrdiff_t,
                                          WG_T *, ptrdiff_t, WG_T *, WG_T *);

WG_DEFINE(base, , 16, 4, 2)
#if CYGRU_HAVE_X86_VARIANTS
WG_DEFINE(avx2, CYGRU_TARGET_AVX2, 32, 4, 2)
WG_DEFINE(avx512, CYGRU_TARGET_AVX512, 64, 8, 2)
static const WG_SUFFIX(cygru_wgrad_fn) WG_SUFFIX(cygru_wgrad_kernels)[] = {
    WG_NAME(cygru_wgrad, base), WG_NAME(cygru_wgrad, avx2), WG_NAME(cygru_wgrad, avx512)};
#else
static const WG_SUFFIX(cygru_wgrad_fn) WG_SUFFIX(cygru_wgrad_kernels)[] = {
    WG_NAME(cygru_wgrad, base), WG_NAME(cygru_wgrad, base), WG_NAME(cygru_wgrad, base)};
#endif

/* The variant of `level` (CYGRU_LEVEL_*), which the caller checked this CPU runs. */
static inline WG_SUFFIX(cygru_wgrad_fn) WG_SUFFIX(cygru_wgrad_at_level)(int level) {
    return WG_SUFFIX(cygru_wgrad_kernels)[level];
}

/* C[r, :] (+)= sum_k A[k, r] B[k, :] for the rows r of the groups (layout and arithmetic
 * above); scratch: cygru_wgrad_scratch_size() elements; bias: NULL or += column sums. */
static inline void WG_SUFFIX(cygru_wgrad)(int ng, const int *rows0, int U, int N, int K,
                                          const WG_T *A, ptrdiff_t sak, ptrdiff_t sam,
                                          const WG_T *B, ptrdiff_t ldb, WG_T *C,
                                          ptrdiff_t ldc, WG_T *bias, WG_T *scratch) {
    if (U <= 0 || K <= 0 || ng <= 0)
        return;
    WG_SUFFIX(cygru_wgrad_kernels)[cygru_cpu_level()](ng, rows0, U, N, K, A, sak, sam, B, ldb,
                                                      C, ldc, bias, scratch);
}

#undef WG_DEFINE
#undef WG_NAME
#undef WG_MIN
#undef WG_T
#undef WG_SUFFIX

/* cygru_fastmath.h: vectorisable float32 sigmoid and tanh for the gate loops.
 *
 * libm's expf/tanhf are scalar calls that stop the compiler from vectorising the
 * gate loop; in a profile of the medium config they took ~40% of the forward
 * time. These versions are straight-line code (no calls, no branches: selects
 * only), so a loop over an array compiles to SIMD at any -O2/-O3 target.
 *
 * Accuracy (tested in tests/test_fastmath.py against float64 math over the float
 * range): relative error below 1e-6 for sigmoid and tanh wherever the result is a
 * normal float. NaN propagates; +-inf saturate exactly like libm (sigmoid -> 0 or
 * 1, tanh -> -1 or 1), and tanh keeps the sign of -0.0.
 *
 * exp(x) = 2^n * p(r), n = round(x / ln2), r = x - n*ln2 in [-ln2/2, ln2/2], with
 * ln2 split in two parts so r is exact; p is a degree-6 polynomial fitted for
 * relative error on that interval (fit error 3.6e-9). tanh uses an odd
 * polynomial x + x^3 q(x^2) for |x| < 0.625 (fit error 4.7e-9), where
 * 1 - 2/(exp(2|x|)+1) would cancel, and that formula elsewhere.
 * The coefficients were fitted for cygru (least squares in relative error on
 * Chebyshev nodes, float64).
 */
#ifndef CYGRU_FASTMATH_H
#define CYGRU_FASTMATH_H

#include <stdint.h>
#include <string.h>
#include <stddef.h>

#include "cygru_cpu.h"

static inline float cygru_exp2i_f(int32_t n) {
    /* 2^n for n in [-126, 127], built from the exponent bits */
    int32_t bits = (n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* exp(x) for x in [-87.3, 88.7] (callers clamp); NaN in, NaN out. */
static inline float cygru_exp_core_f(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f;        /* exact in 12 bits */
    const float ln2_lo = 1.428606765330187045e-06f;
    const float round_magic = 12582912.0f;          /* 1.5 * 2^23: adds round to nearest */
    float nf = (x * log2e + round_magic) - round_magic;
    float r = (x - nf * ln2_hi) - nf * ln2_lo;
    float p = 0.00137514f;
    p = p * r + 0.00836892f;
    p = p * r + 0.04166953f;
    p = p * r + 0.16666518f;
    p = p * r + 0.49999989f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* NaN: p is NaN already; converting a NaN to int is undefined behaviour (it gave
     * INT_MIN, then a shift of a negative value), so its exponent is taken as 0 */
    nf = nf == nf ? nf : 0.0f;
    return p * cygru_exp2i_f((int32_t)nf);
}

/* sigmoid(x) = 1 / (1 + exp(-x)) */
static inline float cygru_sigmoid_f(float x) {
    float m = -x;
    float mc = m > 88.0f ? 88.0f : (m < -88.0f ? -88.0f : m);
    float s = 1.0f / (1.0f + cygru_exp_core_f(mc));
    /* below -88 the true value is under 7e-39 (subnormal): return 0 as libm rounds to */
    s = m > 88.0f ? 0.0f : s;
    return x != x ? x : s;
}

/* tanh(x) */
static inline float cygru_tanh_f(float x) {
    float a = x < 0.0f ? -x : x;
    /* large |x|: 1 - 2 / (exp(2|x|) + 1); from |x| = 10 on this rounds to exactly 1.0f,
     * as tanhf does from about 9.01 (a clamp at 9 would saturate at 0.99999994) */
    float ac = a > 10.0f ? 10.0f : a;
    float big = 1.0f - 2.0f / (cygru_exp_core_f(2.0f * ac) + 1.0f);
    big = x < 0.0f ? -big : big;
    /* small |x|: x + x^3 q(x^2) */
    float z = x * x;
    float q = -0.00569199f;
    q = q * z + 0.02062629f;
    q = q * z - 0.05373532f;
    q = q * z + 0.13331381f;
    q = q * z - 0.33333279f;
    float small = x * (1.0f + z * q);     /* a product keeps the sign of -0.0 */
    float t = a < 0.625f ? small : big;
    return x != x ? x : t;
}

/* In-place array versions: these are the loops that vectorise. They are compiled
 * for AVX-512, AVX2+FMA and the portable baseline, and the best one the CPU runs
 * is picked on first use (as for the packed GEMM kernel): the baseline alone is
 * 4-wide SSE, which in a batch-1 profile spent ~0.7 us per step on 384 gates.
 * The variants may differ in the last bit (FMA contraction); every one meets the
 * accuracy above (tests/test_fastmath.py checks the one this CPU runs). */
#define CYGRU_DEFINE_ACTIVATIONS(SUFFIX, ATTR)                                    \
ATTR static void cygru_sigmoid_array_##SUFFIX(float *a, ptrdiff_t n) {           \
    for (ptrdiff_t i = 0; i < n; i++) a[i] = cygru_sigmoid_f(a[i]);               \
}                                                                                 \
ATTR static void cygru_tanh_array_##SUFFIX(float *a, ptrdiff_t n) {              \
    for (ptrdiff_t i = 0; i < n; i++) a[i] = cygru_tanh_f(a[i]);                  \
}

typedef void (*cygru_activation_fn)(float *, ptrdiff_t);

#if CYGRU_HAVE_X86_VARIANTS
CYGRU_DEFINE_ACTIVATIONS(avx512, CYGRU_TARGET_AVX512)
CYGRU_DEFINE_ACTIVATIONS(avx2, CYGRU_TARGET_AVX2)
CYGRU_DEFINE_ACTIVATIONS(base, )
#define CYGRU_ACTIVATION_TABLE(NAME) \
    {cygru_##NAME##_array_base, cygru_##NAME##_array_avx2, cygru_##NAME##_array_avx512}
#else
CYGRU_DEFINE_ACTIVATIONS(base, )
#define CYGRU_ACTIVATION_TABLE(NAME) \
    {cygru_##NAME##_array_base, cygru_##NAME##_array_base, cygru_##NAME##_array_base}
#endif

/* a[i] = sigmoid(a[i]) (tanh: tanh(a[i])) with the variant of `level`, which the
 * caller checked this CPU runs (level <= cygru_cpu_level()). */
static inline void cygru_activation_at_level(int level, int tanh_, float *a, ptrdiff_t n) {
    static const cygru_activation_fn sigmoid_fns[] = CYGRU_ACTIVATION_TABLE(sigmoid);
    static const cygru_activation_fn tanh_fns[] = CYGRU_ACTIVATION_TABLE(tanh);
    (tanh_ ? tanh_fns : sigmoid_fns)[level](a, n);
}

static inline void cygru_sigmoid_inplace_f(float *a, ptrdiff_t n) {
    cygru_activation_at_level(cygru_cpu_level(), 0, a, n);
}

static inline void cygru_tanh_inplace_f(float *a, ptrdiff_t n) {
    cygru_activation_at_level(cygru_cpu_level(), 1, a, n);
}

#endif

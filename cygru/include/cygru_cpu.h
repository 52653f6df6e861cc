/* cygru_cpu.h: which of cygru's compiled kernel variants this CPU can run.
 *
 * The packed GEMM kernel (cygru_gemm.h) and the float32 activations
 * (cygru_fastmath.h) are each compiled three times, for AVX-512, AVX2+FMA and the
 * portable baseline; they index their variant tables with this level.
 */
#ifndef CYGRU_CPU_H
#define CYGRU_CPU_H

#define CYGRU_LEVEL_BASE 0
#define CYGRU_LEVEL_AVX2 1
#define CYGRU_LEVEL_AVX512 2

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define CYGRU_HAVE_X86_VARIANTS 1
#define CYGRU_TARGET_AVX512 __attribute__((target("avx512f,fma")))
#define CYGRU_TARGET_AVX2 __attribute__((target("avx2,fma")))
static int cygru_cpu_detect(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return CYGRU_LEVEL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return CYGRU_LEVEL_AVX2;
    return CYGRU_LEVEL_BASE;
}
#else
#define CYGRU_HAVE_X86_VARIANTS 0
static int cygru_cpu_detect(void) { return CYGRU_LEVEL_BASE; }
#endif

/* The highest variant level this CPU runs, detected on first use (threads that race
 * there all compute and store the same value). */
static inline int cygru_cpu_level(void) {
    static int level = -1;
    int v = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (v < 0) {
        v = cygru_cpu_detect();
        __atomic_store_n(&level, v, __ATOMIC_RELAXED);
    }
    return v;
}

#endif

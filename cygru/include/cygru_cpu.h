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

/* A test hook (cygru._kernels._force_variant_level): while >= 0, the float kernels run
 * the variant of this level (or the CPU's best, if that is lower) instead of the best,
 * so every variant's path through the engine can be tested on one machine. */
static int cygru_forced_level = -1;

/* The highest variant level this CPU runs, detected on first use (threads that race
 * there all compute and store the same value); a forced level caps it. */
static inline int cygru_cpu_best_level(void) {
    static int level = -1;
    int v = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (v < 0) {
        v = cygru_cpu_detect();
        __atomic_store_n(&level, v, __ATOMIC_RELAXED);
    }
    return v;
}

static inline int cygru_cpu_level(void) {
    int v = cygru_cpu_best_level();
    int f = __atomic_load_n(&cygru_forced_level, __ATOMIC_RELAXED);
    return f >= 0 && f < v ? f : v;
}

#endif

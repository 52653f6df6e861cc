/* cygru_work.h: the waiting primitives of cygru's worker pool (cygru_pool.h): the CPU's
 * pause hint for spinning, and a futex to sleep on and wake (without futexes, not Linux,
 * waiting yields instead). The pool's threads finish a phase (part of a time step) before
 * any of them starts the next (h_t must be complete before anyone multiplies it by W_hh);
 * a phase takes microseconds, so a waiter spins first, then sleeps instead of burning
 * the core another thread needs.
 */
#ifndef CYGRU_WORK_H
#define CYGRU_WORK_H

#include <limits.h>
#include <sched.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static inline void cygru_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void cygru_futex_wait(int *word, int value) {
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, (void *)0, (void *)0, 0);
#else
    (void)word; (void)value;
    sched_yield();
#endif
}

static inline void cygru_futex_wake_all(int *word) {
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, (void *)0, (void *)0, 0);
#else
    (void)word;
#endif
}

#endif

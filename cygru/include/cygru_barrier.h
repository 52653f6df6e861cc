/* cygru_barrier.h: a sense-reversing barrier for the threads of one time loop.
 *
 * The threads that share a direction meet once per time step (h_t must be complete
 * before anyone multiplies it by W_hh). A step takes microseconds, so waiting
 * starts by spinning (with the CPU's pause hint) for up to 50 us. If the partner
 * does not arrive by then (an oversubscribed machine has descheduled it), the waiter
 * sleeps on a futex instead of burning the core the partner needs; the last thread
 * to arrive wakes the sleepers. Without futexes (not Linux) it yields instead.
 *
 * Lost wake-ups cannot happen: a waiter registers in `sleepers` (seq_cst) before
 * it re-reads `sense`, the releaser publishes `sense` (seq_cst) before it reads
 * `sleepers`, and FUTEX_WAIT itself refuses to sleep once `sense` has changed.
 */
#ifndef CYGRU_BARRIER_H
#define CYGRU_BARRIER_H

#include <limits.h>
#include <sched.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

typedef struct {
    int count;      /* threads arrived in the current phase */
    int n;          /* threads in the group */
    int sense;      /* flips when a phase completes (the futex word) */
    int sleepers;   /* threads asleep (or about to sleep) on `sense` */
} cygru_barrier;

/* A partner that is running arrives within a few microseconds of a balanced step;
 * sleeping costs a context switch each side (~5-20 us), so spin this long first. */
#define CYGRU_BARRIER_SPIN_NS 50000L

static inline void cygru_barrier_init(cygru_barrier *b, int n) {
    b->count = 0;
    b->n = n;
    b->sense = 0;
    b->sleepers = 0;
}

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

/* Every thread of the group calls this with its own `local_sense` (initially 0). */
static inline void cygru_barrier_wait(cygru_barrier *b, int *local_sense) {
    int s = 1 - *local_sense;
    *local_sense = s;
    if (b->n <= 1)
        return;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0)
            cygru_futex_wake_all(&b->sense);
        return;
    }
    /* spin for up to CYGRU_BARRIER_SPIN_NS (the clock is read every 32 pauses; a pause
     * costs 10-140 cycles depending on the CPU, so counting pauses alone would not do) */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned spins = 1;; spins++) {
        if (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) == s)
            return;
        cygru_cpu_relax();
        if ((spins & 31u) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec)
                    > CYGRU_BARRIER_SPIN_NS)
                break;
        }
    }
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->sense, __ATOMIC_SEQ_CST) != s)
        cygru_futex_wait(&b->sense, 1 - s);
    __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
}

#endif

/* cygru_work.h: the pieces of a time loop's phases, claimed by whichever thread runs.
 *
 * The threads that share a direction finish a phase (part of a time step) before any
 * of them starts the next (h_t must be complete before anyone multiplies it by W_hh).
 * A phase takes microseconds, so waiting starts by spinning (with the CPU's pause
 * hint) for up to 50 us; then the waiter sleeps on a futex instead of burning the core
 * another thread needs, and the thread that completes a phase wakes the sleepers.
 * Without futexes (not Linux) it yields instead.
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

/* A running thread finishes its piece within a few microseconds of a balanced step;
 * sleeping costs a context switch each side (~5-20 us), so spin this long first. */
#define CYGRU_SPIN_NS 50000L

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

/* ------------------------------------------------------------------------------------
 * cygru_work: pieces of work claimed dynamically, phase after phase.
 *
 * A direction's time loop is a fixed sequence of phases (one or two per time step),
 * each split into the same number P of pieces (slices of hidden units; a couple per
 * thread). A thread first tries to claim its own pieces (those of its rank: their
 * weights stay in its core's cache from step to step), then any other still unclaimed,
 * does what it claimed, and counts it done; a phase is over when all its pieces are
 * done, whoever did them. So a thread the OS has descheduled holds the others up only
 * while it holds a claimed piece, never because it has not arrived: the running threads
 * take the pieces it has not claimed. A piece is claimed for phase k by moving its
 * `last` phase from k-1 to k (cygru_piece_claim); phase k ends when `done`, which only
 * grows, reaches (k+1)*P, so nothing is reset between phases. Waiting spins for
 * CYGRU_SPIN_NS, then sleeps on the `seq` futex (the count of completed
 * phases); the thread that completes a phase bumps it and wakes the sleepers (the
 * lost-wake-up argument: a waiter registers in `sleepers` (seq_cst) before it re-reads
 * `done`, the completer publishes `seq` (seq_cst) before it reads `sleepers`, and
 * FUTEX_WAIT itself refuses to sleep once `seq` has changed).
 * ---------------------------------------------------------------------------------- */
typedef struct {
    long done;      /* pieces finished so far, all phases */
    int seq;        /* phases completed, modulo 2^32: the futex word */
    int sleepers;
} cygru_work;

static inline void cygru_work_init(cygru_work *w) {
    w->done = 0;
    w->seq = 0;
    w->sleepers = 0;
}

/* Claim piece p for phase k: each piece records the last phase it was claimed in
 * (`last`, initially -1), so a thread can ask for a particular piece (its own of the
 * previous step, whose weights are in its core's cache) before taking any other. */
static inline int cygru_piece_claim(int *last, int p, long k) {
    int expected = (int)(k - 1);       /* wraps with k: only equality matters */
    if (__atomic_load_n(&last[p], __ATOMIC_RELAXED) != expected)
        return 0;
    return __atomic_compare_exchange_n(&last[p], &expected, (int)k, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_RELAXED);
}

/* A claimed piece is finished; the one that ends the phase [., end) wakes the sleepers. */
static inline void cygru_work_finish(cygru_work *w, long end) {
    if (__atomic_add_fetch(&w->done, 1, __ATOMIC_SEQ_CST) == end) {
        __atomic_add_fetch(&w->seq, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&w->sleepers, __ATOMIC_SEQ_CST) > 0)
            cygru_futex_wake_all(&w->seq);
    }
}

/* Return once every piece before `end` is done (their writes are then visible). */
static inline void cygru_work_wait(cygru_work *w, long end) {
    if (__atomic_load_n(&w->done, __ATOMIC_ACQUIRE) >= end)
        return;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned spins = 1;; spins++) {
        cygru_cpu_relax();
        if (__atomic_load_n(&w->done, __ATOMIC_ACQUIRE) >= end)
            return;
        if ((spins & 31u) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec)
                    > CYGRU_SPIN_NS)
                break;
        }
    }
    /* register, then read seq, then re-check done: a completion after the re-check
     * changes seq, so FUTEX_WAIT refuses to sleep, or wakes us (we are registered) */
    __atomic_add_fetch(&w->sleepers, 1, __ATOMIC_SEQ_CST);
    for (;;) {
        int seq = __atomic_load_n(&w->seq, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&w->done, __ATOMIC_SEQ_CST) >= end)
            break;
        cygru_futex_wait(&w->seq, seq);
    }
    __atomic_sub_fetch(&w->sleepers, 1, __ATOMIC_SEQ_CST);
}

#endif

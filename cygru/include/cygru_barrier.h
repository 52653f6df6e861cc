/* cygru_barrier.h: a sense-reversing spin barrier for the threads of one time loop.
 *
 * The threads that share a direction meet once per time step (h_t must be complete
 * before anyone multiplies it by W_hh). A step takes microseconds, so a sleeping
 * barrier would cost more than the step; this one spins, with the CPU's pause
 * hint, and yields the core after a while so that an oversubscribed machine
 * still makes progress.
 */
#ifndef CYGRU_BARRIER_H
#define CYGRU_BARRIER_H

#include <sched.h>

typedef struct {
    int count;      /* threads arrived in the current phase */
    int n;          /* threads in the group */
    int sense;      /* flips when a phase completes */
} cygru_barrier;

static inline void cygru_barrier_init(cygru_barrier *b, int n) {
    b->count = 0;
    b->n = n;
    b->sense = 0;
}

static inline void cygru_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
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
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
    } else {
        unsigned spins = 0;
        while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s) {
            if (++spins < 20000u)
                cygru_cpu_relax();
            else
                sched_yield();
        }
    }
}

#endif

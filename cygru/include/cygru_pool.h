/* cygru_pool.h: cygru's own worker threads for a layer's directions (no OpenMP region).
 *
 * A threaded layer call used to be an OpenMP parallel region, whose end is a barrier:
 * the calling thread waited for every team thread to arrive, so a worker that another
 * process had pushed off its core cost the call a scheduler tick (4-8 ms tails) even
 * when the running threads had already done its share. Here the calling thread
 * publishes a job, does work itself, and returns as soon as all the work is done: it
 * never waits for a worker that has not claimed anything.
 *
 * A job is D directions (a layer's forward or backward), each a fixed sequence of
 * n_phases phases of n_pieces pieces: a piece of phase k is claimed by moving its claim
 * word from k-1 to k, phase k is over when `done`, which only grows, reaches
 * (k+1)*n_pieces, so nothing is reset between phases. A waiter for a phase's end spins,
 * then sleeps on the direction's `seq` futex (phases completed); the thread that completes
 * a phase bumps it and wakes the sleepers (the lost-wake-up argument: a waiter registers
 * in `sleepers` (seq_cst) before it re-reads `done`, the completer publishes `seq`
 * (seq_cst) before it reads `sleepers`, and FUTEX_WAIT refuses to sleep once `seq` has
 * changed). The calling thread and every worker that joins run the same loop over
 * a direction's phases, then help the other directions; whoever claims a piece does it.
 *
 * Memory. Everything a thread reads or writes before it holds a claimed piece -- the job
 * descriptor, the claim words, the done counters, the futex words -- is pool memory
 * (static, alive as long as the process). The call's memory (the run structs, weights,
 * workspace, outputs) is touched only by `piece(run, k, p)` after a successful claim.
 *
 * Invariants (why a late worker can never touch a finished call's memory):
 *  I1. `gen` is odd while a job is open (its id) and even between jobs. The descriptor
 *      and the claim words are written only while `gen` is even, by the one caller that
 *      holds `busy`; a worker snapshots the descriptor seqlock-style (reads `gen`, the
 *      fields, `gen` again: equal and odd, or it leaves).
 *  I2. Claim words are 64-bit: the job id in the high half, the phase in the low half.
 *      A claim is a CAS from (g, k-1) to (g, k), so it succeeds only for the job g the
 *      thread snapshotted, and only while piece p of phase k is unclaimed in job g.
 *  I3. The caller returns only after `done` of every direction reached
 *      n_phases*n_pieces: every claimed piece has finished. At that point every claim word
 *      of job g holds (g, n_phases-1), so no claim for job g can succeed any more (it
 *      expects (g, k-1) with k < n_phases), and the next job re-tags the words first.
 *      Hence a successful claim proves the job is open and its caller is waiting for the
 *      piece: the call's memory is alive while the piece runs.
 *  I4. A late thread may still read counters (`done`, `seq`) of a later job: it then
 *      mis-judges a phase as over or not, but its next claim fails by I2 and it leaves;
 *      every wait also leaves when `gen` changes, and a sleeper on a direction's `seq` is
 *      woken by the phase completion it waits for (its job cannot end without it).
 *  I5. A caller that finds the pool busy (another Python thread's or C caller's call)
 *      runs its job alone on its own claim words (the call's workspace): it never blocks
 *      on another call. A job is at most CYGRU_POOL_MAX_DIRS directions of at most
 *      CYGRU_POOL_MAX_PIECES pieces and fewer than 2^31 phases (else: alone too).
 *  I6. Job ids are 32-bit: a thread would have to sleep through 2^31 jobs between its
 *      snapshot and its claim for an id to repeat.
 *
 * Waiting (for a job, for a phase's end) spins with the CPU's pause hint for
 * cygru_pool_spin_ns (or calls sched_yield in that time, with cygru_pool_spin_yield),
 * then sleeps on a futex, so a waiting thread never holds a core another process needs
 * for longer than the spin. Without futexes (not Linux) it yields in a loop.
 *
 * fork(): the child has no workers; pthread_atfork's child handler (cygru_pool_reset,
 * registered by the engine) clears the pool, and the child's first threaded call starts
 * fresh ones. Workers are detached and never touch Python: process exit and interpreter
 * shutdown end them wherever they wait.
 */
#ifndef CYGRU_POOL_H
#define CYGRU_POOL_H

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif
#include "cygru_work.h"

#define CYGRU_POOL_MAX_DIRS 2
#define CYGRU_POOL_MAX_PIECES 512
#define CYGRU_POOL_MAX_WORKERS 255

typedef void (*cygru_piece_fn)(void *run, long phase, int piece);

/* one direction of the open job, in pool memory */
typedef struct {
    uint64_t last[CYGRU_POOL_MAX_PIECES];  /* claim words: (job id << 32) | phase */
    long done __attribute__((aligned(64)));  /* pieces finished in this job */
    int seq;                   /* futex: phases completed (any job), modulo 2^32 */
    int sleepers;              /* threads asleep on seq */
    void *run __attribute__((aligned(64)));  /* descriptor (written while gen is even) */
    long n_phases;
    int n_pieces;
} cygru_pool_dir;

typedef struct {
    unsigned gen __attribute__((aligned(64)));  /* futex: odd = id of the open job */
    int idle_sleepers;         /* workers asleep on gen */
    uint64_t tickets __attribute__((aligned(64)));  /* (job id << 32) | next ticket */
    int busy __attribute__((aligned(64)));  /* a caller owns the pool */
    int n_workers;             /* started in this process (only the owner changes it) */
    cygru_piece_fn fn;         /* descriptor */
    int D, n_sets;
    cygru_pool_dir dir[CYGRU_POOL_MAX_DIRS] __attribute__((aligned(64)));
} cygru_pool_t;

static cygru_pool_t cygru_pool;

/* the waiting policy (set once at import from CYGRU_SPIN_US / CYGRU_SPIN_YIELD) */
static long cygru_pool_spin_ns = 50000;
static int cygru_pool_spin_yield = 0;
/* test hook: > 0 makes every thread yield or sleep at random at the protocol's
 * windows (after a snapshot, before and after a claim) about once in `chaos` times */
static int cygru_pool_chaos = 0;
/* diagnostics (cygru._engine._pool_stats): the calling threads' phase waits that went
 * past the spin to the futex, and their time in all (ns) and at most */
static long cygru_pool_stat_sleeps = 0, cygru_pool_stat_sleep_ns = 0, cygru_pool_stat_max_ns = 0;
static __thread int cygru_pool_in_caller = 0;

static inline void cygru_pool_maybe_stall(void) {
    static __thread unsigned rng = 0;
    int chaos = __atomic_load_n(&cygru_pool_chaos, __ATOMIC_RELAXED);
    if (chaos <= 0)
        return;
    if (rng == 0)
        rng = (unsigned)(uintptr_t)&rng | 1u;
    rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5;
    if (rng % (unsigned)chaos == 0) {
        if ((rng >> 8) & 1)
            sched_yield();
        else
            usleep(1 + (rng >> 9) % 200);
    }
}

/* the knobs and diagnostics are read by running workers: set and read them atomically */
static inline void cygru_pool_set_policy(long spin_ns, int use_yield, int chaos) {
    __atomic_store_n(&cygru_pool_spin_ns, spin_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&cygru_pool_spin_yield, use_yield, __ATOMIC_RELAXED);
    __atomic_store_n(&cygru_pool_chaos, chaos, __ATOMIC_RELAXED);
}

static inline void cygru_pool_get_stats(long *out, int reset) {
    out[0] = __atomic_load_n(&cygru_pool_stat_sleeps, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&cygru_pool_stat_sleep_ns, __ATOMIC_RELAXED);
    out[2] = __atomic_load_n(&cygru_pool_stat_max_ns, __ATOMIC_RELAXED);
    if (reset) {
        __atomic_store_n(&cygru_pool_stat_sleeps, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&cygru_pool_stat_sleep_ns, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&cygru_pool_stat_max_ns, 0, __ATOMIC_RELAXED);
    }
}

static inline long cygru_pool_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Spin (or yield) until ready(arg) or the budget is spent; returns ready's last value. */
static inline int cygru_pool_spin(int (*ready)(const void *), const void *arg) {
    long budget = __atomic_load_n(&cygru_pool_spin_ns, __ATOMIC_RELAXED), t0;
    int yield = __atomic_load_n(&cygru_pool_spin_yield, __ATOMIC_RELAXED);
    if (ready(arg))
        return 1;
    if (budget <= 0)
        return 0;
    t0 = cygru_pool_now_ns();
    for (unsigned spins = 1;; spins++) {
        if (yield)
            sched_yield();
        else
            cygru_cpu_relax();
        if (ready(arg))
            return 1;
        if ((yield || (spins & 31u) == 0) && cygru_pool_now_ns() - t0 > budget)
            return 0;
    }
}

/* -- a phase's end ------------------------------------------------------------------- */

typedef struct { cygru_pool_dir *w; unsigned g; long end; } cygru_phase_wait;

/* 1: the phase is over (done >= end); 2: the job is no longer g (leave) */
static inline int cygru_pool_phase_state(const cygru_phase_wait *pw) {
    if (__atomic_load_n(&pw->w->done, __ATOMIC_SEQ_CST) >= pw->end)
        return 1;
    if (__atomic_load_n(&cygru_pool.gen, __ATOMIC_SEQ_CST) != pw->g)
        return 2;
    return 0;
}

static int cygru_pool_phase_ready(const void *arg) {
    return cygru_pool_phase_state((const cygru_phase_wait *)arg) != 0;
}

/* Wait until phase [., end) of job g is over (1), or job g is over (0). */
static inline int cygru_pool_wait_phase(cygru_pool_dir *w, unsigned g, long end) {
    cygru_phase_wait pw = {w, g, end};
    int r;
    if (!cygru_pool_spin(cygru_pool_phase_ready, &pw)) {
        long t0 = cygru_pool_in_caller ? cygru_pool_now_ns() : 0;
        /* register, read seq, re-check: a completion after the re-check changes seq,
         * so FUTEX_WAIT refuses to sleep or wakes us (the argument at the top) */
        __atomic_add_fetch(&w->sleepers, 1, __ATOMIC_SEQ_CST);
        for (;;) {
            int seq = __atomic_load_n(&w->seq, __ATOMIC_SEQ_CST);
            if (cygru_pool_phase_state(&pw))
                break;
            cygru_futex_wait(&w->seq, seq);
        }
        __atomic_sub_fetch(&w->sleepers, 1, __ATOMIC_SEQ_CST);
        if (cygru_pool_in_caller) {
            long dt = cygru_pool_now_ns() - t0;
            __atomic_add_fetch(&cygru_pool_stat_sleeps, 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&cygru_pool_stat_sleep_ns, dt, __ATOMIC_RELAXED);
            if (dt > __atomic_load_n(&cygru_pool_stat_max_ns, __ATOMIC_RELAXED))
                __atomic_store_n(&cygru_pool_stat_max_ns, dt, __ATOMIC_RELAXED);
        }
    }
    r = cygru_pool_phase_state(&pw);
    return r == 1;
}

static inline void cygru_pool_finish(cygru_pool_dir *w, long end) {
    if (__atomic_add_fetch(&w->done, 1, __ATOMIC_SEQ_CST) == end) {
        __atomic_add_fetch(&w->seq, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&w->sleepers, __ATOMIC_SEQ_CST) > 0)
            cygru_futex_wake_all(&w->seq);
    }
}

/* Run direction w's phases from the first one not yet over, claiming pieces from
 * `first` round; returns 0 as soon as job g turns out to be over (a late thread). */
static int cygru_pool_run_dir(cygru_pool_dir *w, unsigned g, cygru_piece_fn fn, void *run,
                              long K, int P, int first) {
    const uint64_t tag = (uint64_t)g << 32;
    long k = __atomic_load_n(&w->done, __ATOMIC_SEQ_CST) / P;  /* phases < k are over */
    if (k > K)
        k = K;  /* (a later job's count: the claims below fail) */
    for (; k < K; k++) {
        uint64_t want = tag | (uint32_t)k;
        long end = (k + 1) * P;
        for (int j = 0; j < P; j++) {
            int p = first + j < P ? first + j : first + j - P;
            uint64_t expect = tag | (uint32_t)(k - 1);
            uint64_t cur = __atomic_load_n(&w->last[p], __ATOMIC_RELAXED);
            if (cur != expect) {
                if ((cur >> 32) != g)
                    return 0;               /* re-tagged: job g is over */
                continue;                   /* claimed by another thread */
            }
            cygru_pool_maybe_stall();
            if (__atomic_compare_exchange_n(&w->last[p], &expect, want, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED)) {
                cygru_pool_maybe_stall();
                fn(run, k, p);              /* the call's memory: alive (I3) */
                cygru_pool_finish(w, end);
            }
        }
        if (!cygru_pool_wait_phase(w, g, end))
            return 0;
    }
    return 1;
}

/* The direction of ticket t when n threads run D directions in contiguous groups, and
 * the piece it claims first (its rank's share). */
static inline void cygru_pool_ticket(int t, int n, int D, int P, int *d, int *first) {
    int dd = (int)((long)t * D / n);
    int lo = (int)(((long)dd * n + D - 1) / D);
    int hi = (int)(((long)(dd + 1) * n + D - 1) / D);
    *d = dd;
    *first = (int)((long)(t - lo) * P / (hi - lo));
}

/* Run every direction of job g, starting with ticket t's own (caller: t = 0); another
 * direction is joined mid-sequence at its current phase, starting from its middle piece
 * (its own threads start from theirs). Returns 0 if job g turned out to be over. */
static int cygru_pool_run_job(unsigned g, int t, cygru_piece_fn fn, int D, int n,
                              void *const *runs, const long *K, const int *P) {
    int d0, first;
    cygru_pool_ticket(t, n, D, P[0], &d0, &first);
    for (int i = 0; i < D; i++) {
        int d = (d0 + i) % D;
        if (!cygru_pool_run_dir(&cygru_pool.dir[d], g, fn, runs[d], K[d], P[d],
                                i == 0 ? first : P[d] / 2))
            return 0;
    }
    return 1;
}

/* -- workers ------------------------------------------------------------------------- */

typedef struct { unsigned seen; } cygru_job_wait;

static int cygru_pool_job_ready(const void *arg) {
    unsigned g = __atomic_load_n(&cygru_pool.gen, __ATOMIC_SEQ_CST);
    return (g & 1u) && g != ((const cygru_job_wait *)arg)->seen;
}

static void *cygru_pool_worker(void *arg) {
    cygru_job_wait jw = {0};
    (void)arg;
#if defined(__linux__)
    /* a name users see in top -H and /proc (and tests tell cygru's threads by) */
    prctl(PR_SET_NAME, "cygru-pool", 0, 0, 0);
#endif
    for (;;) {
        unsigned g;
        if (!cygru_pool_spin(cygru_pool_job_ready, &jw)) {
            __atomic_add_fetch(&cygru_pool.idle_sleepers, 1, __ATOMIC_SEQ_CST);
            for (;;) {
                g = __atomic_load_n(&cygru_pool.gen, __ATOMIC_SEQ_CST);
                if ((g & 1u) && g != jw.seen)
                    break;
                cygru_futex_wait((int *)&cygru_pool.gen, (int)g);
            }
            __atomic_sub_fetch(&cygru_pool.idle_sleepers, 1, __ATOMIC_SEQ_CST);
        }
        g = __atomic_load_n(&cygru_pool.gen, __ATOMIC_SEQ_CST);
        if (!(g & 1u) || g == jw.seen)
            continue;
        jw.seen = g;
        /* snapshot the descriptor (I1) */
        cygru_piece_fn fn = __atomic_load_n(&cygru_pool.fn, __ATOMIC_RELAXED);
        int D = __atomic_load_n(&cygru_pool.D, __ATOMIC_RELAXED);
        int n = __atomic_load_n(&cygru_pool.n_sets, __ATOMIC_RELAXED);
        void *runs[CYGRU_POOL_MAX_DIRS];
        long K[CYGRU_POOL_MAX_DIRS];
        int P[CYGRU_POOL_MAX_DIRS];
        if (D < 1 || D > CYGRU_POOL_MAX_DIRS)
            continue;
        for (int d = 0; d < D; d++) {
            runs[d] = __atomic_load_n(&cygru_pool.dir[d].run, __ATOMIC_RELAXED);
            K[d] = __atomic_load_n(&cygru_pool.dir[d].n_phases, __ATOMIC_RELAXED);
            P[d] = __atomic_load_n(&cygru_pool.dir[d].n_pieces, __ATOMIC_RELAXED);
        }
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&cygru_pool.gen, __ATOMIC_RELAXED) != g)
            continue;
        cygru_pool_maybe_stall();
        /* a ticket of job g (a tagged counter: none is taken from a later job) */
        uint64_t tk = __atomic_load_n(&cygru_pool.tickets, __ATOMIC_RELAXED);
        int t = -1;
        while ((unsigned)(tk >> 32) == g && (int)(uint32_t)tk < n) {
            if (__atomic_compare_exchange_n(&cygru_pool.tickets, &tk, tk + 1, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                t = (int)(uint32_t)tk;
                break;
            }
        }
        if (t < 1)
            continue;                       /* the job has all its threads, or is over */
        cygru_pool_maybe_stall();
        cygru_pool_run_job(g, t, fn, D, n, runs, K, P);
    }
    return (void *)0;
}

/* Start workers up to n (the owner only). Signals stay with the process's other threads. */
static void cygru_pool_grow(int n) {
    sigset_t all, saved;
    pthread_attr_t attr;
    if (n > CYGRU_POOL_MAX_WORKERS)
        n = CYGRU_POOL_MAX_WORKERS;
    if (__atomic_load_n(&cygru_pool.n_workers, __ATOMIC_RELAXED) >= n)
        return;
    if (pthread_attr_init(&attr) != 0)
        return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    while (__atomic_load_n(&cygru_pool.n_workers, __ATOMIC_RELAXED) < n) {
        pthread_t th;
        if (pthread_create(&th, &attr, cygru_pool_worker, (void *)0) != 0)
            break;                          /* fewer workers: the caller does the rest */
        __atomic_add_fetch(&cygru_pool.n_workers, 1, __ATOMIC_RELAXED);
    }
    pthread_sigmask(SIG_SETMASK, &saved, (sigset_t *)0);
    pthread_attr_destroy(&attr);
}

/* -- the caller ---------------------------------------------------------------------- */

/* Run a job of D directions on n threads (the caller and n-1 workers at most): runs[d]
 * is direction d's struct, K[d] its phase count and P[d] its piece count. Returns 0 when
 * the pool is busy with another call or the job is too large for it: the caller then
 * runs the job alone (I5). */
static int cygru_pool_run(cygru_piece_fn fn, int D, int n, void *const *runs,
                          const long *K, const int *P) {
    int expected = 0, d, p;
    unsigned g;
    if (D < 1 || D > CYGRU_POOL_MAX_DIRS || n < 2)
        return 0;
    for (d = 0; d < D; d++)
        if (P[d] < 1 || P[d] > CYGRU_POOL_MAX_PIECES || K[d] < 0 || K[d] >= (1L << 31))
            return 0;
    if (!__atomic_compare_exchange_n(&cygru_pool.busy, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return 0;
    /* orders the previous owner's close of its job (seen through `busy`) before this
     * owner's descriptor writes, for the workers' snapshot (I1) */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    cygru_pool_grow(n - 1);
    g = __atomic_load_n(&cygru_pool.gen, __ATOMIC_RELAXED) + 1;   /* odd: the new id */
    /* the descriptor and the claim words, while gen is even (I1) */
    __atomic_store_n(&cygru_pool.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&cygru_pool.D, D, __ATOMIC_RELAXED);
    __atomic_store_n(&cygru_pool.n_sets, n, __ATOMIC_RELAXED);
    for (d = 0; d < D; d++) {
        cygru_pool_dir *w = &cygru_pool.dir[d];
        for (p = 0; p < P[d]; p++)
            __atomic_store_n(&w->last[p], ((uint64_t)g << 32) | 0xffffffffu, __ATOMIC_RELAXED);
        __atomic_store_n(&w->done, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&w->run, runs[d], __ATOMIC_RELAXED);
        __atomic_store_n(&w->n_phases, K[d], __ATOMIC_RELAXED);
        __atomic_store_n(&w->n_pieces, P[d], __ATOMIC_RELAXED);
    }
    __atomic_store_n(&cygru_pool.tickets, ((uint64_t)g << 32) | 1u, __ATOMIC_RELAXED);
    /* publish (seq_cst store: before the read of idle_sleepers, the lost-wake-up argument) */
    __atomic_store_n(&cygru_pool.gen, g, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&cygru_pool.idle_sleepers, __ATOMIC_SEQ_CST) > 0) {
#ifdef __linux__
        syscall(SYS_futex, (int *)&cygru_pool.gen, FUTEX_WAKE_PRIVATE, n - 1, (void *)0,
                (void *)0, 0);
#endif
    }
    cygru_pool_in_caller = 1;
    cygru_pool_run_job(g, 0, fn, D, n, runs, K, P);   /* returns with every phase over */
    cygru_pool_in_caller = 0;
    /* close job g (I3: no claim of it can succeed any more), then free the pool; the
     * fence orders the close before the next owner's descriptor writes (I1) */
    __atomic_store_n(&cygru_pool.gen, g + 1, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&cygru_pool.busy, 0, __ATOMIC_RELEASE);
    return 1;
}

/* pthread_atfork's child handler: the child has none of the workers */
static void cygru_pool_reset(void) {
    memset(&cygru_pool, 0, sizeof cygru_pool);
}

static inline int cygru_pool_workers(void) {
    return __atomic_load_n(&cygru_pool.n_workers, __ATOMIC_RELAXED);
}

#endif

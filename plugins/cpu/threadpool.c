/* A small fork-join pool: the caller and the workers claim the pieces of a job
 * from one counter (tagged with the job's number, so a late worker never takes a
 * piece of the next job), and the caller waits only for pieces a worker took: a
 * worker still waking up costs nothing, the caller runs its pieces too. The pieces
 * are the same ranges whoever runs them. A worker that finished spins for a
 * short while (NNR_CPU_SPIN_US,
 * 50 us by default; 0: never) watching for the next job, then sleeps on a
 * condition variable; the caller waits for the pieces the same way. Waking a
 * sleeping thread costs some 40-50 us on a 2-vCPU VM (the hypervisor's IPI),
 * more than a batch-1 layer's whole product: with the spin, consecutive ops
 * (a decoding step, an inference at batch 1) hand pieces to a thread that is
 * still awake. The spin is bounded, so between steps the workers go to sleep and
 * do not compete with OpenBLAS's threads or the data loader's.
 *
 * One pool per cpu device (NNR_CPU_DEVICES): the threads are shared out among
 * the devices, and an op runs on the pool of its device (cpu_pool_select, at
 * each call), so DataParallel's replicas on cpu and cpu:1 each use their own
 * share instead of competing for one pool. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>
#include "kernels.h"

enum { MAX_THREADS = 64, MAX_POOLS = 16 };

typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t work_cv, done_cv;
    pthread_mutex_t run_lock;      /* one parallel region at a time */
    pthread_t workers[MAX_THREADS];
    int n_workers, want_threads, stopping;
    uint64_t generation;           /* the job's number */
    uint64_t claim;                /* (number & 0xffffffff) << 32 | the next piece to take */
    uint64_t done;                 /* pieces finished */
    cpu_range_fn job_fn;
    void *job_ctx;
    int64_t job_n, job_pieces;
    int caller_sleeps;             /* the caller waits on done_cv: the last piece signals it */
} pool;

static pool pools[MAX_POOLS];
static int n_pools = 1, total_threads = 1;
static pthread_once_t pools_once = PTHREAD_ONCE_INIT;
static _Thread_local int current;      /* the pool of the op this thread runs */
static int64_t spin_ns = 50000;        /* NNR_CPU_SPIN_US */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* spins until *v differs from old (1) or spin_ns passed (0). Past the first few microseconds it yields
 * between looks: on a core of its own sched_yield returns at once, and where threads outnumber the cores
 * (two training processes with two threads each on two cores) the spinning thread steps aside */
static int spin_while_equal(const uint64_t *v, uint64_t old)
{
    if (spin_ns <= 0) return 0;
    int64_t start = 0, yield_after = spin_ns < 5000 ? spin_ns : 5000;
    for (unsigned i = 0;; i++) {
        if (__atomic_load_n(v, __ATOMIC_ACQUIRE) != old) return 1;
        _mm_pause();
        if ((i & 63) == 0) {
            int64_t t = now_ns();
            if (!start) start = t;
            else if (t - start > spin_ns) return 0;
            else if (t - start > yield_after) sched_yield();
        }
    }
}

static void pools_init(void)
{
    for (int i = 0; i < MAX_POOLS; i++) {
        pthread_mutex_init(&pools[i].lock, NULL);
        pthread_cond_init(&pools[i].work_cv, NULL);
        pthread_cond_init(&pools[i].done_cv, NULL);
        pthread_mutex_init(&pools[i].run_lock, NULL);
        pools[i].want_threads = 1;
    }
    const char *env = getenv("NNR_CPU_SPIN_US");
    if (env) {
        char *end;
        double us = strtod(env, &end);
        if (end != env && *end == '\0' && us >= 0 && us <= 1e6) spin_ns = (int64_t)(us * 1000);     /* NaN fails the range */
        else fprintf(stderr, "nnrun: NNR_CPU_SPIN_US=%.60s is not a number of microseconds in 0..1000000; using %d\n", env,
                     (int)(spin_ns / 1000));
    }
}

/* takes and runs pieces of job gen until none is left (or the job is no longer gen) */
static void run_pieces(pool *p, uint32_t gen, cpu_range_fn fn, void *ctx, int64_t n, int64_t pieces)
{
    for (;;) {
        uint64_t v = __atomic_load_n(&p->claim, __ATOMIC_ACQUIRE);
        do {
            if ((uint32_t)(v >> 32) != gen || (int64_t)(v & 0xffffffffu) >= pieces) return;
        } while (!__atomic_compare_exchange_n(&p->claim, &v, v + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
        int64_t k = (int64_t)(v & 0xffffffffu);
        fn(ctx, n * k / pieces, n * (k + 1) / pieces);
        if (__atomic_add_fetch(&p->done, 1, __ATOMIC_ACQ_REL) == (uint64_t)pieces) {
            pthread_mutex_lock(&p->lock);
            if (p->caller_sleeps) pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static void *worker_main(void *arg)
{
    pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        spin_while_equal(&p->generation, seen);     /* awake for a while after each job */
        pthread_mutex_lock(&p->lock);
        while (!p->stopping && p->generation == seen) pthread_cond_wait(&p->work_cv, &p->lock);
        if (p->stopping) { pthread_mutex_unlock(&p->lock); break; }
        seen = p->generation;          /* the job's fields, read under the lock they were written under */
        cpu_range_fn fn = p->job_fn;
        void *ctx = p->job_ctx;
        int64_t n = p->job_n, pieces = p->job_pieces;
        pthread_mutex_unlock(&p->lock);
        run_pieces(p, (uint32_t)seen, fn, ctx, n, pieces);
    }
    cpu_thread_exit();             /* the thread's scratch buffers */
    return NULL;
}

static void grow(pool *p, int n)
{
    pthread_mutex_lock(&p->lock);
    while (p->n_workers < n - 1 && p->n_workers < MAX_THREADS) {
        if (pthread_create(&p->workers[p->n_workers], NULL, worker_main, p) != 0) break;
        p->n_workers++;
    }
    pthread_mutex_unlock(&p->lock);
}

/* the threads shared out among the devices' pools: device k gets total / devices (at least 1) */
static void share_out(void)
{
    for (int i = 0; i < n_pools; i++) {
        int n = total_threads / n_pools + (i < total_threads % n_pools ? 1 : 0);
        pools[i].want_threads = n < 1 ? 1 : n;
    }
}

void cpu_pool_set_devices(int n)
{
    pthread_once(&pools_once, pools_init);
    n_pools = n < 1 ? 1 : n > MAX_POOLS ? MAX_POOLS : n;
    share_out();
}

void cpu_pool_set_threads(int n)
{
    pthread_once(&pools_once, pools_init);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    total_threads = n;
    share_out();
}

void cpu_pool_select(int device) { current = device >= 0 && device < n_pools ? device : 0; }

int cpu_pool_threads(void)
{
    pthread_once(&pools_once, pools_init);
    return pools[current].want_threads;
}

int cpu_parallel_for(int64_t n, int64_t grain, cpu_range_fn fn, void *ctx)
{
    if (n <= 0) return NNR_OK;
    pthread_once(&pools_once, pools_init);
    pool *p = &pools[current];
    if (grain < 1) grain = 1;
    int64_t pieces = n / grain;
    if (pieces > p->want_threads) pieces = p->want_threads;
    if (pieces <= 1 || pthread_mutex_trylock(&p->run_lock) != 0) {   /* nested or small: inline */
        fn(ctx, 0, n);
        return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
    }
    if (p->n_workers < pieces - 1) grow(p, (int)pieces);
    if (pieces > p->n_workers + 1) pieces = p->n_workers + 1;
    pthread_mutex_lock(&p->lock);
    p->job_fn = fn; p->job_ctx = ctx; p->job_n = n; p->job_pieces = pieces;
    uint64_t gen = p->generation + 1;
    __atomic_store_n(&p->done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&p->claim, (uint64_t)(uint32_t)gen << 32, __ATOMIC_RELEASE);
    __atomic_store_n(&p->generation, gen, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    run_pieces(p, (uint32_t)gen, fn, ctx, n, pieces);
    for (;;) {              /* pieces the workers took: spin while they finish, sleep if they take long */
        uint64_t finished = __atomic_load_n(&p->done, __ATOMIC_ACQUIRE);
        if (finished == (uint64_t)pieces) break;
        if (spin_while_equal(&p->done, finished)) continue;
        pthread_mutex_lock(&p->lock);
        p->caller_sleeps = 1;
        while (__atomic_load_n(&p->done, __ATOMIC_ACQUIRE) != (uint64_t)pieces) pthread_cond_wait(&p->done_cv, &p->lock);
        p->caller_sleeps = 0;
        pthread_mutex_unlock(&p->lock);
        break;
    }
    pthread_mutex_unlock(&p->run_lock);
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

void cpu_pool_shutdown(void)
{
    pthread_once(&pools_once, pools_init);
    for (int i = 0; i < MAX_POOLS; i++) {
        pool *p = &pools[i];
        pthread_mutex_lock(&p->lock);
        p->stopping = 1;
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->lock);
        for (int k = 0; k < p->n_workers; k++) pthread_join(p->workers[k], NULL);
        p->n_workers = 0;
        p->stopping = 0;
    }
}

/* every per-thread scratch buffer of the backend, freed */
void cpu_thread_exit(void)
{
    cpu_conv_thread_exit();
    cpu_bf16_thread_exit();
    cpu_onednn_thread_exit();
}

/* any thread that took scratch gives it back when it exits: the pool's threads, and threads of the
 * core such as DataParallel's replicas (a key destructor runs before the thread's TLS goes) */
static pthread_key_t scratch_key;
static pthread_once_t scratch_key_once = PTHREAD_ONCE_INIT;
static void scratch_thread_gone(void *unused) { (void)unused; cpu_thread_exit(); }
static void scratch_key_init(void) { pthread_key_create(&scratch_key, scratch_thread_gone); }

void cpu_thread_scratch_taken(void)
{
    pthread_once(&scratch_key_once, scratch_key_init);
    if (!pthread_getspecific(scratch_key)) pthread_setspecific(scratch_key, (void *)1);
}

/* A small fork-join pool: the caller runs the first piece, parked workers the
 * rest. Workers sleep on a condition variable (no spinning), so they do not
 * compete with OpenBLAS's threads between ops.
 *
 * One pool per cpu device (NNR_CPU_DEVICES): the threads are shared out among
 * the devices, and an op runs on the pool of its device (cpu_pool_select, at
 * each call), so DataParallel's replicas on cpu and cpu:1 each use their own
 * share instead of competing for one pool. */
#include <pthread.h>
#include <stdlib.h>
#include "kernels.h"

enum { MAX_THREADS = 64, MAX_POOLS = 16 };

typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t work_cv, done_cv;
    pthread_mutex_t run_lock;      /* one parallel region at a time */
    pthread_t workers[MAX_THREADS];
    int n_workers, want_threads, stopping;
    uint64_t generation;
    int pending;
    cpu_range_fn job_fn;
    void *job_ctx;
    int64_t job_n, job_pieces;
} pool;

static pool pools[MAX_POOLS];
static int n_pools = 1, total_threads = 1;
static pthread_once_t pools_once = PTHREAD_ONCE_INIT;
static _Thread_local int current;      /* the pool of the op this thread runs */

static void pools_init(void)
{
    for (int i = 0; i < MAX_POOLS; i++) {
        pthread_mutex_init(&pools[i].lock, NULL);
        pthread_cond_init(&pools[i].work_cv, NULL);
        pthread_cond_init(&pools[i].done_cv, NULL);
        pthread_mutex_init(&pools[i].run_lock, NULL);
        pools[i].want_threads = 1;
    }
}

typedef struct worker_arg { pool *p; int64_t id; } worker_arg;

static void piece(const pool *p, int64_t k, int64_t *b, int64_t *e)
{
    *b = p->job_n * k / p->job_pieces;
    *e = p->job_n * (k + 1) / p->job_pieces;
}

static void *worker_main(void *arg)
{
    pool *p = ((worker_arg *)arg)->p;
    int64_t id = ((worker_arg *)arg)->id;
    free(arg);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stopping && p->generation == seen) pthread_cond_wait(&p->work_cv, &p->lock);
        if (p->stopping) break;
        seen = p->generation;
        if (id + 1 < p->job_pieces) {
            int64_t b, e;
            piece(p, id + 1, &b, &e);
            cpu_range_fn fn = p->job_fn;
            void *ctx = p->job_ctx;
            pthread_mutex_unlock(&p->lock);
            fn(ctx, b, e);
            pthread_mutex_lock(&p->lock);
            if (--p->pending == 0) pthread_cond_signal(&p->done_cv);
        }
    }
    pthread_mutex_unlock(&p->lock);
    cpu_thread_exit();             /* the thread's scratch buffers */
    return NULL;
}

static void grow(pool *p, int n)
{
    pthread_mutex_lock(&p->lock);
    while (p->n_workers < n - 1 && p->n_workers < MAX_THREADS) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) break;
        a->p = p;
        a->id = p->n_workers;
        if (pthread_create(&p->workers[p->n_workers], NULL, worker_main, a) != 0) { free(a); break; }
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
    p->pending = (int)pieces - 1;
    p->generation++;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    int64_t b, e;
    piece(p, 0, &b, &e);
    fn(ctx, b, e);
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0) pthread_cond_wait(&p->done_cv, &p->lock);
    pthread_mutex_unlock(&p->lock);
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
    cpu_amx_thread_exit();
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

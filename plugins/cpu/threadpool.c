/* A small fork-join pool: the caller runs the first piece, parked workers the
 * rest. Workers sleep on a condition variable (no spinning), so they do not
 * compete with OpenBLAS's threads between ops. */
#include <pthread.h>
#include <stdlib.h>
#include "kernels.h"

enum { MAX_THREADS = 64 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER, done_cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;   /* one parallel region at a time */
static pthread_t workers[MAX_THREADS];
static int n_workers, want_threads = 1, stopping;
static uint64_t generation;
static int pending;
static cpu_range_fn job_fn;
static void *job_ctx;
static int64_t job_n, job_pieces;

static void piece(int64_t k, int64_t *b, int64_t *e)
{
    *b = job_n * k / job_pieces;
    *e = job_n * (k + 1) / job_pieces;
}

static void *worker_main(void *arg)
{
    int64_t id = (int64_t)(intptr_t)arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!stopping && generation == seen) pthread_cond_wait(&work_cv, &lock);
        if (stopping) break;
        seen = generation;
        if (id + 1 < job_pieces) {
            int64_t b, e;
            piece(id + 1, &b, &e);
            cpu_range_fn fn = job_fn;
            void *ctx = job_ctx;
            pthread_mutex_unlock(&lock);
            fn(ctx, b, e);
            pthread_mutex_lock(&lock);
            if (--pending == 0) pthread_cond_signal(&done_cv);
        }
    }
    pthread_mutex_unlock(&lock);
    cpu_conv_thread_exit();        /* the thread's scratch buffers */
    return NULL;
}

static void grow(int n)
{
    pthread_mutex_lock(&lock);
    while (n_workers < n - 1 && n_workers < MAX_THREADS) {
        if (pthread_create(&workers[n_workers], NULL, worker_main, (void *)(intptr_t)n_workers) != 0) break;
        n_workers++;
    }
    pthread_mutex_unlock(&lock);
}

void cpu_pool_set_threads(int n)
{
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    want_threads = n;
}

int cpu_pool_threads(void) { return want_threads; }

int cpu_parallel_for(int64_t n, int64_t grain, cpu_range_fn fn, void *ctx)
{
    if (n <= 0) return NNR_OK;
    if (grain < 1) grain = 1;
    int64_t pieces = n / grain;
    if (pieces > want_threads) pieces = want_threads;
    if (pieces <= 1 || pthread_mutex_trylock(&run_lock) != 0) {   /* nested or small: inline */
        fn(ctx, 0, n);
        return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
    }
    if (n_workers < pieces - 1) grow((int)pieces);
    if (pieces > n_workers + 1) pieces = n_workers + 1;
    pthread_mutex_lock(&lock);
    job_fn = fn; job_ctx = ctx; job_n = n; job_pieces = pieces;
    pending = (int)pieces - 1;
    generation++;
    pthread_cond_broadcast(&work_cv);
    pthread_mutex_unlock(&lock);
    int64_t b, e;
    piece(0, &b, &e);
    fn(ctx, b, e);
    pthread_mutex_lock(&lock);
    while (pending > 0) pthread_cond_wait(&done_cv, &lock);
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&run_lock);
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

void cpu_pool_shutdown(void)
{
    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_broadcast(&work_cv);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n_workers; i++) pthread_join(workers[i], NULL);
    n_workers = 0;
    stopping = 0;
}

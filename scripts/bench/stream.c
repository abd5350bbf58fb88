/* STREAM-style reference for the benchmarks: the machine's memory bandwidth
 * for c[i] = a[i] + b[i] over f32 arrays far larger than the caches, with
 * pthreads, counting 12 bytes per element as STREAM's "add" does; and the
 * rate of a direct cblas_sgemm call, the reference for nnrun's matmul.
 *   nnr_stream add N THREADS REPEATS   -> best and median GB/s
 *   nnr_stream sgemm N REPEATS         -> median GFLOP/s */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct job { float *a, *b, *c; long begin, end; int reps; double *secs; pthread_barrier_t *bar; int id; } job;

/* compiled for the widest vectors the CPU has, as STREAM built for the host would be */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void add_loop(float *c, const float *a, const float *b, long begin, long end)
{
    for (long i = begin; i < end; i++) c[i] = a[i] + b[i];
}

/* each thread first-touches its own part, then runs the timed repeats between barriers */
static void *add_worker(void *arg)
{
    job *j = arg;
    for (long i = j->begin; i < j->end; i++) { j->a[i] = 1.0f; j->b[i] = 2.0f; j->c[i] = 0; }
    for (int r = 0; r < j->reps; r++) {
        pthread_barrier_wait(j->bar);
        double t0 = now();
        add_loop(j->c, j->a, j->b, j->begin, j->end);
        pthread_barrier_wait(j->bar);
        if (j->id == 0) j->secs[r] = now() - t0;
    }
    return NULL;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "add") == 0) {
        long n = atol(argv[2]);
        int threads = atoi(argv[3]), reps = atoi(argv[4]);
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float));
        double *secs = malloc(sizeof(double) * reps), *gbs = malloc(sizeof(double) * reps);
        if (!a || !b || !c || !secs || !gbs || threads < 1 || threads > 64) return 1;
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)threads);
        pthread_t tid[64];
        job jobs[64];
        for (int t = 0; t < threads; t++) {
            jobs[t] = (job){a, b, c, n * t / threads, n * (t + 1) / threads, reps, secs, &bar, t};
            pthread_create(&tid[t], NULL, add_worker, &jobs[t]);
        }
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
        for (int r = 0; r < reps; r++) gbs[r] = 12.0 * n / secs[r] / 1e9;
        qsort(gbs, reps, sizeof(double), cmp);
        printf("{\"best_gbs\": %.3f, \"median_gbs\": %.3f}\n", gbs[reps - 1], gbs[reps / 2]);
        return c[n / 2] == 3.0f ? 0 : 1;
    }
    if (argc >= 4 && strcmp(argv[1], "sgemm") == 0) {
        int n = atoi(argv[2]), reps = atoi(argv[3]);
        float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
        for (long i = 0; i < (long)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.2f; }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double *g = malloc(sizeof(double) * reps);
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
            g[r] = 2.0 * n * n * n / (now() - t0) / 1e9;
        }
        qsort(g, reps, sizeof(double), cmp);
        printf("{\"median_gflops\": %.3f, \"best_gflops\": %.3f}\n", g[reps / 2], g[reps - 1]);
        return 0;
    }
    fprintf(stderr, "usage: nnr_stream add N THREADS REPEATS | sgemm N REPEATS\n");
    return 2;
}

/* The data loader (DESIGN.md decision 8): batches are assembled ahead of
 * use on libuv's worker pool and handed to the caller in order. The caller
 * pulls (nnr_loader_next); C never calls back into Lua.
 *
 * Samples are rows of in-memory tensors (TensorDataset, IDXDataset). Batch k
 * of an epoch depends only on (seed, epoch, k): the epoch's permutation and
 * each sample's transform randomness are derived from them, so any number of
 * workers gives the same batches, and a position can be saved and resumed.
 * At most num_workers jobs run at once and at most `prefetch` batches are
 * assembled or waiting; the libuv loop tracks their completion. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <uv.h>
#include "data/internal.h"

enum { MAX_TRANSFORMS = 16, MAX_WORKERS = 64, MAX_PREFETCH = 4096 };


typedef struct job {
    uv_work_t req;
    struct nnr_loader *loader;
    int64_t batch;          /* index within the epoch */
    int state;              /* 0 free, 1 running, 2 done */
    int status;
    char error[256];
    nnr_tensor *x, *y;
    double busy;
} job;

struct nnr_loader {
    uv_loop_t loop;
    nnr_dataset *ds;
    int64_t batch_size, nbatches;
    int shuffle, drop_last, workers, prefetch;
    uint64_t seed;
    int64_t epoch, position, submitted;
    int64_t *order, count, order_cap; /* this epoch's samples (dataset indices) */
    int64_t *custom, custom_n;        /* a sampler's order for the next epoch (set_order) */
    int has_custom;
    int pin;                          /* batches in page-locked memory */
    nnr_transform transforms[MAX_TRANSFORMS];
    int ntransforms;
    nnr_batch_fn batch_fn;            /* batches built by the caller's function (Lua workers) */
    void *batch_ctx;
    void (*batch_free)(void *);
    pthread_mutex_t slot_lock;
    uint64_t slot_busy;
    job *jobs;              /* prefetch slots; batch k uses slot k % prefetch */
    int in_flight;
    double wait_s, busy_s;
    int64_t produced;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* this epoch's order: the sampler's, or the samples in order, or a permutation that depends on
 * (seed, epoch) only */
static void make_order(nnr_loader *l)
{
    if (l->has_custom) { memcpy(l->order, l->custom, sizeof(int64_t) * (size_t)l->custom_n); return; }
    if (l->shuffle) { nnr_random_permutation(l->seed, NNR_STREAM_SHUFFLE, (uint64_t)l->epoch, l->count, l->order); return; }
    for (int64_t i = 0; i < l->count; i++) l->order[i] = i;
}

/* ---------------- assembling one batch (runs on a worker) ---------------- */

/* where batch k starts in the epoch's order (k < nbatches, so k * batch_size < count: no overflow) */
static int64_t batch_start(const nnr_loader *l, int64_t k)
{
    int64_t start;
    return nnr_size_mul(k, l->batch_size, &start) ? start : l->count;
}

static int64_t batch_len(const nnr_loader *l, int64_t k)
{
    int64_t len = l->count - batch_start(l, k);
    return len < l->batch_size ? len : l->batch_size;
}

/* the bytes of one sample of ndim sizes of elem bytes, or -1 when they overflow */
static int64_t sample_bytes(int ndim, const int64_t *sizes, size_t elem)
{
    int64_t b;
    return nnr_size_product(ndim, sizes, (int64_t)elem, &b) ? b : -1;
}

/* the address of sample i's bytes in a batch tensor, or NULL (with msg) when the offset overflows */
static char *sample_at(nnr_tensor *t, int64_t i, int64_t bytes, char *msg, size_t msgn)
{
    int64_t off;
    if (bytes < 0 || !nnr_size_mul(i, bytes, &off)) { snprintf(msg, msgn, "the batch's size overflows"); return NULL; }
    return (char *)nnr_tensor_data(t) + off;
}

/* a batch tensor [count, sizes...], page-locked when pin */
static nnr_tensor *batch_of(int pin, int dtype, int64_t count, int ndim, const int64_t *sizes)
{
    int64_t full[NNR_MAX_DIMS];
    full[0] = count;
    for (int i = 0; i < ndim; i++) full[i + 1] = sizes[i];
    return pin ? nnr_tensor_alloc_pinned(dtype, ndim + 1, full) : nnr_tensor_alloc(dtype, ndim + 1, full, nnr_host_device());
}

static int same_sizes(int ndim, const int64_t *a, const int64_t *b) { return memcmp(a, b, sizeof(int64_t) * (size_t)ndim) == 0; }

static int assemble(nnr_loader *l, int64_t k, int64_t epoch, nnr_tensor **xo, nnr_tensor **yo, char *err, size_t errn)
{
    int64_t count = batch_len(l, k);
    const int64_t *rows = l->order + batch_start(l, k);
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF], msg[384] = "";
    int st = NNR_OK;
    nnr_tensor *x = NULL, *y = NULL;
    nnr_scratch sc = {0};
    int64_t xsizes[NNR_MAX_DIMS];
    int xndim = 0;
    *xo = *yo = NULL;
    for (int64_t i = 0; i < count && st == NNR_OK; i++) {
        nnr_sample s;
        if ((st = nnr_sample_fetch(l->ds, rows[i], epoch, &s, msg, sizeof msg))) {
            snprintf(err, errn, "sample %lld: %s", (long long)rows[i] + 1, msg);
            break;
        }
        /* the target */
        if (s.y.present) {
            int dt = s.y.classes ? NNR_I64 : s.y.dtype;
            int64_t bytes = sample_bytes(s.y.ndim, s.y.sizes, nnr_dtype_nbytes(dt));
            char *at;
            if (!y && !(y = batch_of(l->pin, dt, count, s.y.ndim, s.y.sizes))) { snprintf(msg, sizeof msg, "%s", nnr_last_error()); st = nnr_last_status(); }
            else if (s.y.classes) ((int64_t *)nnr_tensor_data(y))[i] = (int64_t)nnr_load_f64_unaligned(s.y.dtype, s.y.base) + 1;
            else if (!(at = sample_at(y, i, bytes, msg, sizeof msg))) st = NNR_ERR_INVALID;
            else memcpy(at, s.y.base, (size_t)bytes);
        }
        /* the input, transformed or as stored */
        if (st == NNR_OK && l->ntransforms == 0) {
            if (!x) {
                xndim = s.x.ndim;
                memcpy(xsizes, s.x.sizes, sizeof xsizes);
                if (!(x = batch_of(l->pin, s.x.dtype, count, xndim, xsizes))) { snprintf(msg, sizeof msg, "%s", nnr_last_error()); st = nnr_last_status(); }
            } else if (s.x.ndim != xndim || !same_sizes(xndim, s.x.sizes, xsizes)) {
                snprintf(msg, sizeof msg, "%s%sshape %s differs from the batch's %s (add Resize or CenterCrop)", s.path ? s.path : "", s.path ? ": " : "",
                         nnr_shape_str(a, sizeof a, s.x.ndim, s.x.sizes), nnr_shape_str(b, sizeof b, xndim, xsizes));
                st = NNR_ERR_INVALID;
            }
            if (st == NNR_OK) {
                int64_t bytes = sample_bytes(xndim, xsizes, nnr_dtype_nbytes(s.x.dtype));
                char *at = sample_at(x, i, bytes, msg, sizeof msg);
                if (at) memcpy(at, s.x.base, (size_t)bytes);
                else st = NNR_ERR_INVALID;
            }
        } else if (st == NNR_OK) {
            nnr_rng_stream rng;
            nnr_rng_stream_init(&rng, l->seed, NNR_STREAM_TRANSFORM, (uint64_t)epoch, (uint64_t)rows[i]);
            int64_t out[3];
            st = nnr_transform_sample(l->transforms, l->ntransforms, &s.x, &rng, &sc, out, msg, sizeof msg);
            if (st == NNR_OK && !x) {
                xndim = 3;
                memcpy(xsizes, out, sizeof out);
                if (!(x = batch_of(l->pin, NNR_F32, count, 3, out))) { snprintf(msg, sizeof msg, "%s", nnr_last_error()); st = nnr_last_status(); }
            } else if (st == NNR_OK && !same_sizes(3, out, xsizes)) {
                snprintf(msg, sizeof msg, "%s%stransformed to %s, the batch has %s (add Resize or CenterCrop)", s.path ? s.path : "", s.path ? ": " : "",
                         nnr_shape_str(a, sizeof a, 3, out), nnr_shape_str(b, sizeof b, 3, xsizes));
                st = NNR_ERR_INVALID;
            }
            if (st == NNR_OK) {
                int64_t bytes = sample_bytes(3, out, sizeof(float));
                char *at = sample_at(x, i, bytes, msg, sizeof msg);
                if (at) memcpy(at, sc.img, (size_t)bytes);
                else st = NNR_ERR_INVALID;
            }
        }
        free(s.owned);
        if (st) snprintf(err, errn, "sample %lld: %s", (long long)rows[i] + 1, msg);
    }
    if (st && !err[0]) snprintf(err, errn, "%s", msg);
    free(sc.img);
    free(sc.tmp);
    if (st) { nnr_tensor_release(x); nnr_tensor_release(y); return st; }
    *xo = x;
    *yo = y;
    return NNR_OK;
}

/* a worker slot (0..workers-1) for the batch function's per-worker state */
static int take_slot(nnr_loader *l)
{
    pthread_mutex_lock(&l->slot_lock);
    int slot = 0;
    while (l->slot_busy & (1ull << slot)) slot++;
    l->slot_busy |= 1ull << slot;
    pthread_mutex_unlock(&l->slot_lock);
    return slot;
}

static void give_slot(nnr_loader *l, int slot)
{
    pthread_mutex_lock(&l->slot_lock);
    l->slot_busy &= ~(1ull << slot);
    pthread_mutex_unlock(&l->slot_lock);
}

static int make_batch(nnr_loader *l, int64_t k, int64_t epoch, nnr_tensor **x, nnr_tensor **y, char *err, size_t errn)
{
    if (!l->batch_fn) return assemble(l, k, epoch, x, y, err, errn);
    int slot = take_slot(l);
    *x = *y = NULL;
    err[0] = 0;
    int st = l->batch_fn(l->batch_ctx, slot, epoch, k, l->order + batch_start(l, k), batch_len(l, k), x, y, err, errn);
    give_slot(l, slot);
    if (st && !err[0]) snprintf(err, errn, "the batch function failed");
    for (int i = 0; i < 2 && st == NNR_OK && l->pin; i++) {     /* a Lua collate's batch: copy it into pinned memory */
        nnr_tensor **t = i == 0 ? x : y;
        if (!*t || nnr_tensor_is_pinned(*t) || !nnr_device_is_host_memory((*t)->device)) continue;
        nnr_tensor *p = nnr_pin_memory(*t);
        if (!p) { snprintf(err, errn, "%s", nnr_last_error()); st = NNR_ERR_OOM; break; }
        nnr_tensor_release(*t);
        *t = p;
    }
    if (st) { nnr_tensor_release(*x); nnr_tensor_release(*y); *x = *y = NULL; }
    return st;
}

/* batch k on whichever thread builds it (a worker, or the caller with no workers); the profiler sees it there */
static int build(nnr_loader *l, int64_t k, int64_t epoch, nnr_tensor **x, nnr_tensor **y, char *err, size_t errn)
{
    int64_t p0 = nnr_profiling ? nnr_prof_now() : 0, b0 = nnr_tl_alloc_bytes;
    int st = make_batch(l, k, epoch, x, y, err, errn);
    if (nnr_profiling) nnr_prof_record(NNR_PROF_LOADER, "DataLoader batch", p0, nnr_prof_now() - p0, nnr_tl_alloc_bytes - b0);
    return st;
}

static void work_cb(uv_work_t *req)
{
    job *j = req->data;
    double t0 = now_s();
    nnr_thread_pooling(0);      /* the batch is freed by the consumer: keep it off both threads' free lists */
    nnr_ignore_interrupts(1);   /* Ctrl-C is for the waiting caller */
    j->error[0] = 0;
    j->status = build(j->loader, j->batch, j->loader->epoch, &j->x, &j->y, j->error, sizeof j->error);
    j->busy = now_s() - t0;
    if (nnr_profiling) {
        static _Thread_local int labelled;
        if (!labelled) { nnr_profiler_thread_label("DataLoader worker"); labelled = 1; }
    }
}
static void after_cb(uv_work_t *req, int status)
{
    job *j = req->data;
    j->loader->in_flight--;
    if (status == UV_ECANCELED) { j->state = 0; return; }
    j->state = 2;
    j->loader->busy_s += j->busy;
}

/* queue work until prefetch batches are running or ready, with at most `workers` running */
static void fill(nnr_loader *l)
{
    while (l->submitted < l->nbatches && l->submitted < l->position + l->prefetch && l->in_flight < l->workers) {
        job *j = &l->jobs[l->submitted % l->prefetch];
        if (j->state != 0) break;
        j->loader = l;
        j->batch = l->submitted;
        j->state = 1;
        j->x = j->y = NULL;
        j->req.data = j;
        if (uv_queue_work(&l->loop, &j->req, work_cb, after_cb) != 0) { j->state = 0; break; }
        l->in_flight++;
        l->submitted++;
    }
}

/* ---------------- the public API ---------------- */

/* batches of an epoch of count samples (a ceiling that cannot overflow) */
static int64_t batches_for(const nnr_loader *l, int64_t count)
{
    return count / l->batch_size + (!l->drop_last && count % l->batch_size != 0);
}

/* n int64s, or NULL with the error set (overflow or out of memory) */
static int64_t *index_array(int64_t *old, int64_t n, const char *what)
{
    int64_t bytes;
    if (!nnr_size_mul(n > 0 ? n : 1, (int64_t)sizeof(int64_t), &bytes) || (uint64_t)bytes > SIZE_MAX) {
        nnr_errorf(NNR_ERR_INVALID, "DataLoader: %s of %lld samples is too large", what, (long long)n);
        return NULL;
    }
    int64_t *p = realloc(old, (size_t)bytes);
    if (!p) nnr_errorf(NNR_ERR_OOM, "DataLoader: out of memory for %s of %lld samples", what, (long long)n);
    return p;
}

nnr_loader *nnr_loader_new(nnr_dataset *ds, int64_t batch_size, int shuffle, uint64_t seed, int drop_last, int num_workers, int prefetch)
{
    if (!ds) { nnr_errorf(NNR_ERR_INVALID, "DataLoader: no dataset"); return NULL; }
    if (batch_size < 1) { nnr_errorf(NNR_ERR_INVALID, "DataLoader: batch_size must be >= 1 (got %lld)", (long long)batch_size); return NULL; }
    if (num_workers < 0 || num_workers > MAX_WORKERS) {
        nnr_errorf(NNR_ERR_INVALID, "DataLoader: num_workers must be in 0..%d (got %d)", MAX_WORKERS, num_workers);
        return NULL;
    }
    if (prefetch < 0 || prefetch > MAX_PREFETCH) {
        nnr_errorf(NNR_ERR_INVALID, "DataLoader: prefetch must be in 1..%d, or 0 for the default (got %d)", MAX_PREFETCH, prefetch);
        return NULL;
    }
    if (ds->n < 0) { nnr_errorf(NNR_ERR_INVALID, "DataLoader: the dataset has %lld samples", (long long)ds->n); return NULL; }
    if (!getenv("UV_THREADPOOL_SIZE")) {      /* read by libuv once, at its first use */
        char n[32];
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(n, sizeof n, "%ld", cpus > 4 ? cpus : 4);
        setenv("UV_THREADPOOL_SIZE", n, 0);
    }
    nnr_loader *l = calloc(1, sizeof *l);
    if (!l) { nnr_errorf(NNR_ERR_OOM, "DataLoader: out of memory"); return NULL; }
    l->count = ds->n;
    l->batch_size = batch_size;
    l->shuffle = shuffle;
    l->seed = seed;
    l->drop_last = drop_last;
    l->workers = num_workers;
    l->prefetch = prefetch > 0 ? prefetch : (num_workers > 0 ? 2 * num_workers : 1);
    if (l->prefetch < num_workers) l->prefetch = num_workers;
    l->nbatches = batches_for(l, l->count);
    l->order_cap = l->count ? l->count : 1;
    l->order = index_array(NULL, l->order_cap, "the sample order");
    if (!l->order) { free(l); return NULL; }
    l->jobs = calloc((size_t)l->prefetch, sizeof *l->jobs);
    if (!l->jobs || uv_loop_init(&l->loop) != 0) {
        free(l->order); free(l->jobs); free(l);
        nnr_errorf(NNR_ERR_OOM, "DataLoader: out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->slot_lock, NULL);
    nnr_dataset_retain(ds);          /* shared, not copied, with the workers */
    l->ds = ds;
    l->epoch = -1;
    return l;
}

int nnr_loader_set_order(nnr_loader *l, int64_t n, const int64_t *indices)
{
    if (!indices) {
        free(l->custom);
        l->custom = NULL;
        l->custom_n = 0;
        l->has_custom = 0;
        l->nbatches = batches_for(l, l->ds->n);
        return NNR_OK;
    }
    for (int64_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= l->ds->n)
            return nnr_errorf(NNR_ERR_INVALID, "DataLoader: the sampler gave index %lld, outside 1..%lld", (long long)indices[i] + 1, (long long)l->ds->n);
    if (n < 0) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: the sampler gave %lld indices", (long long)n);
    int64_t *c = index_array(l->custom, n, "the sampler's order");
    if (!c) return nnr_last_status();
    if (n) memcpy(c, indices, sizeof(int64_t) * (size_t)n);
    l->custom = c;
    l->custom_n = n;
    l->has_custom = 1;
    l->nbatches = batches_for(l, n);
    return NNR_OK;
}

int nnr_loader_set_batch_fn(nnr_loader *l, nnr_batch_fn fn, void *ctx, void (*free_ctx)(void *))
{
    if (l->epoch >= 0) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: the batch function must be set before the first epoch");
    if (l->batch_free) l->batch_free(l->batch_ctx);
    l->batch_fn = fn;
    l->batch_ctx = ctx;
    l->batch_free = free_ctx;
    return NNR_OK;
}

int nnr_loader_add_transform(nnr_loader *l, int kind, const double *params, int nparams)
{
    if (l->ntransforms >= MAX_TRANSFORMS) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: at most %d transforms", MAX_TRANSFORMS);
    if (kind < NNR_TRANSFORM_TO_FLOAT || kind > NNR_TRANSFORM_RESIZE) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: unknown transform %d", kind);
    if (l->epoch >= 0) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: transforms must be set before the first epoch");
    nnr_transform *t = &l->transforms[l->ntransforms++];
    t->kind = kind;
    memset(t->p, 0, sizeof t->p);
    for (int i = 0; i < nparams && i < 8; i++) t->p[i] = params[i];
    return NNR_OK;
}

int nnr_loader_set_pin_memory(nnr_loader *l, int on)
{
    if (l->epoch >= 0) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: pin_memory must be set before the first epoch");
    l->pin = on != 0;
    return NNR_OK;
}

int64_t nnr_loader_length(const nnr_loader *l) { return l->nbatches; }
int64_t nnr_loader_position(const nnr_loader *l) { return l->position; }

/* waits for every queued job, dropping their results */
static void drain(nnr_loader *l)
{
    for (int i = 0; i < l->prefetch; i++)
        if (l->jobs[i].state == 1) uv_cancel((uv_req_t *)&l->jobs[i].req);
    while (l->in_flight > 0) uv_run(&l->loop, UV_RUN_ONCE);
    for (int i = 0; i < l->prefetch; i++) {
        nnr_tensor_release(l->jobs[i].x);
        nnr_tensor_release(l->jobs[i].y);
        l->jobs[i].x = l->jobs[i].y = NULL;
        l->jobs[i].state = 0;
    }
}

int nnr_loader_start_epoch(nnr_loader *l, int64_t epoch, int64_t first_batch)
{
    drain(l);
    int64_t count = l->has_custom ? l->custom_n : l->ds->n;
    if (batches_for(l, count) < first_batch || first_batch < 0)
        return nnr_errorf(NNR_ERR_INVALID, "DataLoader: position %lld is outside 0..%lld", (long long)first_batch, (long long)batches_for(l, count));
    if (count > l->order_cap) {
        int64_t *o = index_array(l->order, count, "an epoch");
        if (!o) return nnr_last_status();
        l->order = o;
        l->order_cap = count;
    }
    l->count = count;
    l->nbatches = batches_for(l, count);
    l->epoch = epoch;
    l->position = l->submitted = first_batch;
    make_order(l);
    fill(l);
    return NNR_OK;
}

int nnr_loader_next(nnr_loader *l, nnr_tensor **x, nnr_tensor **y)
{
    *x = *y = NULL;
    if (l->epoch < 0) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: no epoch started");
    if (l->position >= l->nbatches) return NNR_LOADER_END;
    double t0 = now_s();
    int64_t k = l->position;
    int st;
    char error[256] = "";
    if (l->workers == 0) {
        st = build(l, k, l->epoch, x, y, error, sizeof error);
        l->busy_s += now_s() - t0;
    } else {
        fill(l);
        job *j = &l->jobs[k % l->prefetch];
        while (j->state != 2 && nnr_interrupted_flag() == 0) {
            if (j->state == 0) { fill(l); if (j->state == 0) break; }
            uv_run(&l->loop, UV_RUN_ONCE);
        }
        if (j->state != 2) {
            l->wait_s += now_s() - t0;
            if (nnr_interrupted_flag()) { nnr_clear_interrupt(); return nnr_errorf(NNR_ERR_INTERRUPTED, "DataLoader: interrupted"); }
            return nnr_errorf(NNR_ERR_INTERNAL, "DataLoader: batch %lld was never queued", (long long)k + 1);
        }
        st = j->status;
        snprintf(error, sizeof error, "%s", j->error);
        *x = j->x;
        *y = j->y;
        j->x = j->y = NULL;
        j->state = 0;
    }
    double waited = now_s() - t0;
    l->wait_s += waited;
    if (nnr_profiling && l->workers > 0)
        nnr_prof_record(NNR_PROF_WAIT, "DataLoader wait", nnr_prof_now() - (int64_t)(waited * 1e9), (int64_t)(waited * 1e9), 0);
    l->position++;
    if (l->workers > 0) fill(l);
    if (st != NNR_OK) {
        nnr_tensor_release(*x); nnr_tensor_release(*y);
        *x = *y = NULL;
        return nnr_errorf(st, "DataLoader: batch %lld of epoch %lld: %s", (long long)k + 1, (long long)l->epoch, error);
    }
    l->produced++;
    return NNR_OK;
}

int nnr_loader_stats(const nnr_loader *l, double *wait_s, double *busy_s, int64_t *batches)
{
    *wait_s = l->wait_s;
    *busy_s = l->busy_s;
    *batches = l->produced;
    return NNR_OK;
}

void nnr_loader_free(nnr_loader *l)
{
    if (!l) return;
    drain(l);
    uv_loop_close(&l->loop);
    if (l->batch_free) l->batch_free(l->batch_ctx);
    nnr_dataset_release(l->ds);
    pthread_mutex_destroy(&l->slot_lock);
    free(l->custom);
    free(l->order);
    free(l->jobs);
    free(l);
}

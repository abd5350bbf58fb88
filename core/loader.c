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
#include <uv.h>
#include "half.h"
#include "internal.h"

enum { MAX_TRANSFORMS = 16 };

typedef struct transform { int kind; double p[8]; } transform;

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
    nnr_tensor *x, *y;
    int64_t n, batch_size, nbatches;
    int shuffle, drop_last, workers, prefetch;
    uint64_t seed;
    int64_t epoch, position, submitted;
    int64_t *order;
    transform transforms[MAX_TRANSFORMS];
    int ntransforms;
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

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) { return (double)(splitmix(s) >> 11) * 0x1p-53; }

static void make_order(nnr_loader *l)
{
    for (int64_t i = 0; i < l->n; i++) l->order[i] = i;
    if (!l->shuffle) return;
    uint64_t s = l->seed * 0x2545F4914F6CDD1Dull + (uint64_t)l->epoch * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = l->n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix(&s) % (uint64_t)(i + 1));
        int64_t t = l->order[i]; l->order[i] = l->order[j]; l->order[j] = t;
    }
}

/* ---------------- transforms on one float image [C, H, W] ---------------- */

typedef struct image { float *data; int64_t c, h, w; } image;

/* makes *buf hold at least need floats */
static int grow(float **buf, size_t *n, size_t need)
{
    if (*n >= need) return NNR_OK;
    float *grown = realloc(*buf, need * sizeof(float));
    if (!grown) return NNR_ERR_OOM;
    *buf = grown;
    *n = need;
    return NNR_OK;
}

static int apply_transforms(const nnr_loader *l, image *img, float **scratch, size_t *scratch_n, uint64_t rng, char *err, size_t errn)
{
    for (int t = 0; t < l->ntransforms; t++) {
        const transform *tr = &l->transforms[t];
        int64_t n = img->c * img->h * img->w;
        switch (tr->kind) {
        case NNR_TRANSFORM_TO_FLOAT:
            for (int64_t i = 0; i < n; i++) img->data[i] *= (float)tr->p[0];
            break;
        case NNR_TRANSFORM_NORMALIZE: {
            int per_channel = tr->p[2] > 0;
            for (int64_t c = 0; c < img->c; c++) {
                double mean = per_channel ? tr->p[(c % 3) * 2] : tr->p[0], std = per_channel ? tr->p[(c % 3) * 2 + 1] : tr->p[1];
                float *p = img->data + c * img->h * img->w;
                float m = (float)mean, inv = (float)(1.0 / std);
                for (int64_t i = 0; i < img->h * img->w; i++) p[i] = (p[i] - m) * inv;
            }
            break;
        }
        case NNR_TRANSFORM_RANDOM_HFLIP:
            if (uniform(&rng) < tr->p[0])
                for (int64_t c = 0; c < img->c; c++)
                    for (int64_t y = 0; y < img->h; y++) {
                        float *row = img->data + (c * img->h + y) * img->w;
                        for (int64_t a = 0, b = img->w - 1; a < b; a++, b--) { float v = row[a]; row[a] = row[b]; row[b] = v; }
                    }
            break;
        case NNR_TRANSFORM_RANDOM_CROP: case NNR_TRANSFORM_CENTER_CROP: {
            int64_t oh = (int64_t)tr->p[0], ow = (int64_t)tr->p[1], pad = tr->kind == NNR_TRANSFORM_RANDOM_CROP ? (int64_t)tr->p[2] : 0;
            int64_t ph = img->h + 2 * pad, pw = img->w + 2 * pad;
            if (oh > ph || ow > pw || oh < 1 || ow < 1) {
                snprintf(err, errn, "crop of %lldx%lld from an image of %lldx%lld (padding %lld)", (long long)oh, (long long)ow,
                         (long long)img->h, (long long)img->w, (long long)pad);
                return NNR_ERR_INVALID;
            }
            int64_t top, left;
            if (tr->kind == NNR_TRANSFORM_RANDOM_CROP) {
                top = (int64_t)(splitmix(&rng) % (uint64_t)(ph - oh + 1));
                left = (int64_t)(splitmix(&rng) % (uint64_t)(pw - ow + 1));
            } else {
                top = (ph - oh) / 2;
                left = (pw - ow) / 2;
            }
            size_t need = (size_t)(img->c * oh * ow);
            if (grow(scratch, scratch_n, need)) { snprintf(err, errn, "out of memory"); return NNR_ERR_OOM; }
            for (int64_t c = 0; c < img->c; c++)
                for (int64_t y = 0; y < oh; y++)
                    for (int64_t x = 0; x < ow; x++) {
                        int64_t sy = top + y - pad, sx = left + x - pad;
                        (*scratch)[(c * oh + y) * ow + x] =
                            (sy >= 0 && sy < img->h && sx >= 0 && sx < img->w) ? img->data[(c * img->h + sy) * img->w + sx] : 0.0f;
                    }
            memcpy(img->data, *scratch, need * sizeof(float));
            img->h = oh;
            img->w = ow;
            break;
        }
        case NNR_TRANSFORM_RESIZE: {                 /* bilinear, half-pixel centres (align_corners false) */
            int64_t oh = (int64_t)tr->p[0], ow = (int64_t)tr->p[1];
            size_t need = (size_t)(img->c * oh * ow);
            if (oh < 1 || ow < 1) { snprintf(err, errn, "resize to %lldx%lld", (long long)oh, (long long)ow); return NNR_ERR_INVALID; }
            if (grow(scratch, scratch_n, need)) { snprintf(err, errn, "out of memory"); return NNR_ERR_OOM; }
            double sy = (double)img->h / (double)oh, sx = (double)img->w / (double)ow;
            for (int64_t c = 0; c < img->c; c++)
                for (int64_t y = 0; y < oh; y++) {
                    double fy = (y + 0.5) * sy - 0.5;
                    if (fy < 0) fy = 0;
                    int64_t y0 = (int64_t)fy, y1 = y0 + 1 < img->h ? y0 + 1 : y0;
                    double wy = fy - (double)y0;
                    for (int64_t x = 0; x < ow; x++) {
                        double fx = (x + 0.5) * sx - 0.5;
                        if (fx < 0) fx = 0;
                        int64_t x0 = (int64_t)fx, x1 = x0 + 1 < img->w ? x0 + 1 : x0;
                        double wx = fx - (double)x0;
                        const float *p = img->data + c * img->h * img->w;
                        double v = (1 - wy) * ((1 - wx) * p[y0 * img->w + x0] + wx * p[y0 * img->w + x1]) +
                                   wy * ((1 - wx) * p[y1 * img->w + x0] + wx * p[y1 * img->w + x1]);
                        (*scratch)[(c * oh + y) * ow + x] = (float)v;
                    }
                }
            /* the image buffer is sized for the largest shape the pipeline reaches (see out_shape) */
            memcpy(img->data, *scratch, need * sizeof(float));
            img->h = oh;
            img->w = ow;
            break;
        }
        }
    }
    return NNR_OK;
}

/* the x sample shape after the transforms: [C, H, W] (C = 1 for [H, W] samples) */
static void out_shape(const nnr_loader *l, int64_t *c, int64_t *h, int64_t *w, int64_t *largest)
{
    const nnr_tensor *x = l->x;
    *c = x->ndim >= 4 ? x->sizes[1] : 1;
    *h = x->ndim >= 3 ? x->sizes[x->ndim - 2] : 1;
    *w = x->sizes[x->ndim - 1];
    *largest = *c * *h * *w;
    for (int t = 0; t < l->ntransforms; t++) {
        const transform *tr = &l->transforms[t];
        if (tr->kind == NNR_TRANSFORM_RANDOM_CROP || tr->kind == NNR_TRANSFORM_CENTER_CROP || tr->kind == NNR_TRANSFORM_RESIZE) {
            *h = (int64_t)tr->p[0];
            *w = (int64_t)tr->p[1];
            if (*c * *h * *w > *largest) *largest = *c * *h * *w;
        }
    }
}

/* ---------------- assembling one batch (runs on a worker) ---------------- */

static int64_t batch_len(const nnr_loader *l, int64_t k)
{
    int64_t start = k * l->batch_size, len = l->n - start;
    return len < l->batch_size ? len : l->batch_size;
}

static int copy_rows(const nnr_tensor *src, const int64_t *rows, int64_t count, nnr_tensor **out, char *err, size_t errn)
{
    int64_t sizes[NNR_MAX_DIMS];
    memcpy(sizes, src->sizes, sizeof sizes);
    sizes[0] = count;
    nnr_tensor *t = nnr_tensor_alloc(src->dtype, src->ndim, sizes, 0);
    if (!t) { snprintf(err, errn, "%s", nnr_last_error()); return NNR_ERR_OOM; }
    int64_t row = nnr_tensor_numel(src) / (src->sizes[0] ? src->sizes[0] : 1), es = (int64_t)nnr_dtype_bytes(src->dtype);
    const char *base = nnr_tensor_data(src);
    char *dst = nnr_tensor_data(t);
    for (int64_t i = 0; i < count; i++) memcpy(dst + i * row * es, base + rows[i] * src->strides[0] * es, (size_t)(row * es));
    *out = t;
    return NNR_OK;
}

static int assemble(nnr_loader *l, int64_t k, int64_t epoch, nnr_tensor **xo, nnr_tensor **yo, char *err, size_t errn)
{
    int64_t count = batch_len(l, k);
    const int64_t *rows = l->order + k * l->batch_size;
    int st = NNR_OK;
    *xo = *yo = NULL;
    if (l->y && (st = copy_rows(l->y, rows, count, yo, err, errn))) return st;
    if (l->ntransforms == 0) {
        st = copy_rows(l->x, rows, count, xo, err, errn);
    } else {
        int64_t c, h, w, largest;
        out_shape(l, &c, &h, &w, &largest);
        int64_t sizes[4] = {count, c, h, w};
        nnr_tensor *x = nnr_tensor_alloc(NNR_F32, 4, sizes, 0);
        float *img = malloc(sizeof(float) * (size_t)largest), *scratch = NULL;
        size_t scratch_n = 0;
        if (!x || !img) { snprintf(err, errn, "out of memory for a batch"); st = NNR_ERR_OOM; }
        int64_t in_c = l->x->ndim >= 4 ? l->x->sizes[1] : 1, in_h = l->x->ndim >= 3 ? l->x->sizes[l->x->ndim - 2] : 1;
        int64_t in_w = l->x->sizes[l->x->ndim - 1], in_n = in_c * in_h * in_w, es = (int64_t)nnr_dtype_bytes(l->x->dtype);
        const char *base = nnr_tensor_data(l->x);
        for (int64_t i = 0; i < count && st == NNR_OK; i++) {
            const char *src = base + rows[i] * l->x->strides[0] * es;
            if (l->x->dtype == NNR_U8) for (int64_t j = 0; j < in_n; j++) img[j] = ((const uint8_t *)src)[j];
            else if (l->x->dtype == NNR_F32) memcpy(img, src, sizeof(float) * (size_t)in_n);
            else for (int64_t j = 0; j < in_n; j++) img[j] = (float)nnr_load_f64(l->x->dtype, src + j * es);
            image im = {img, in_c, in_h, in_w};
            uint64_t rng = l->seed ^ ((uint64_t)epoch * 0xD1B54A32D192ED03ull) ^ ((uint64_t)rows[i] * 0x8CB92BA72F3D8DD7ull);
            splitmix(&rng);
            st = apply_transforms(l, &im, &scratch, &scratch_n, rng, err, errn);
            if (st == NNR_OK) memcpy((float *)nnr_tensor_data(x) + i * c * h * w, im.data, sizeof(float) * (size_t)(c * h * w));
            else { char tmp[256]; snprintf(tmp, sizeof tmp, "%s", err); snprintf(err, errn, "sample %lld: %.200s", (long long)rows[i] + 1, tmp); }
        }
        free(img);
        free(scratch);
        if (st) nnr_tensor_release(x);
        else *xo = x;
    }
    if (st) { nnr_tensor_release(*yo); *yo = NULL; }
    return st;
}

static void work_cb(uv_work_t *req)
{
    job *j = req->data;
    double t0 = now_s();
    j->status = assemble(j->loader, j->batch, j->loader->epoch, &j->x, &j->y, j->error, sizeof j->error);
    j->busy = now_s() - t0;
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

nnr_loader *nnr_loader_new(const nnr_tensor *x, const nnr_tensor *y, int64_t batch_size, int shuffle, uint64_t seed, int drop_last,
                           int num_workers, int prefetch)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (x->device != 0 || (y && y->device != 0)) { nnr_errorf(NNR_ERR_INVALID, "DataLoader: datasets live in host memory (cpu tensors)"); return NULL; }
    if (x->ndim < 1 || (y && (y->ndim < 1 || y->sizes[0] != x->sizes[0]))) {
        nnr_errorf(NNR_ERR_INVALID, "DataLoader: samples %s and targets %s differ in their first dimension",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), y ? nnr_shape_str(b, sizeof b, y->ndim, y->sizes) : "[]");
        return NULL;
    }
    if (batch_size < 1 || num_workers < 0 || num_workers > 64) {
        nnr_errorf(NNR_ERR_INVALID, "DataLoader: batch_size must be >= 1 (got %lld) and num_workers in 0..64 (got %d)", (long long)batch_size, num_workers);
        return NULL;
    }
    if (!getenv("UV_THREADPOOL_SIZE")) {      /* read by libuv once, at its first use */
        char n[32];
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(n, sizeof n, "%ld", cpus > 4 ? cpus : 4);
        setenv("UV_THREADPOOL_SIZE", n, 0);
    }
    nnr_loader *l = calloc(1, sizeof *l);
    if (!l) { nnr_errorf(NNR_ERR_OOM, "DataLoader: out of memory"); return NULL; }
    l->n = x->sizes[0];
    l->batch_size = batch_size;
    l->shuffle = shuffle;
    l->seed = seed;
    l->drop_last = drop_last;
    l->workers = num_workers;
    l->prefetch = prefetch > 0 ? prefetch : (num_workers > 0 ? 2 * num_workers : 1);
    if (l->prefetch < num_workers) l->prefetch = num_workers;
    l->nbatches = drop_last ? l->n / batch_size : (l->n + batch_size - 1) / batch_size;
    l->order = malloc(sizeof(int64_t) * (size_t)(l->n ? l->n : 1));
    l->jobs = calloc((size_t)l->prefetch, sizeof *l->jobs);
    if (!l->order || !l->jobs || uv_loop_init(&l->loop) != 0) {
        free(l->order); free(l->jobs); free(l);
        nnr_errorf(NNR_ERR_OOM, "DataLoader: out of memory");
        return NULL;
    }
    /* contiguous copies, shared (not copied) with the workers */
    l->x = nnr_contiguous(x);
    l->y = y ? nnr_contiguous(y) : NULL;
    l->epoch = -1;
    return l;
}

int nnr_loader_add_transform(nnr_loader *l, int kind, const double *params, int nparams)
{
    if (l->ntransforms >= MAX_TRANSFORMS) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: at most %d transforms", MAX_TRANSFORMS);
    if (kind < NNR_TRANSFORM_TO_FLOAT || kind > NNR_TRANSFORM_RESIZE) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: unknown transform %d", kind);
    if (l->epoch >= 0) return nnr_errorf(NNR_ERR_INVALID, "DataLoader: transforms must be set before the first epoch");
    transform *t = &l->transforms[l->ntransforms++];
    t->kind = kind;
    memset(t->p, 0, sizeof t->p);
    for (int i = 0; i < nparams && i < 8; i++) t->p[i] = params[i];
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
    if (first_batch < 0 || first_batch > l->nbatches)
        return nnr_errorf(NNR_ERR_INVALID, "DataLoader: position %lld is outside 0..%lld", (long long)first_batch, (long long)l->nbatches);
    drain(l);
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
        st = assemble(l, k, l->epoch, x, y, error, sizeof error);
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
    l->wait_s += now_s() - t0;
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
    nnr_tensor_release(l->x);
    nnr_tensor_release(l->y);
    free(l->order);
    free(l->jobs);
    free(l);
}

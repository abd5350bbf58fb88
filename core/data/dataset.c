/* Datasets the loader reads (DESIGN.md decision 8). A dataset is a small
 * refcounted description of where sample i lives; the loader's workers share
 * it read-only, so nothing is copied per worker:
 *   - rows:    sample i is row i of in-memory tensors (TensorDataset, IDX, CSV)
 *   - records: fixed-size records of a memory-mapped file (x field, y field)
 *   - images:  one PNG/JPEG file per sample with a class label (ImageFolder),
 *              decoded by the worker that needs it
 *   - concat:  several datasets one after the other
 *   - subset:  a list of indices into another dataset
 *   - text:    windows of a corpus's bytes or of token ids (text.c)
 * Lua-written datasets do not come here: they run in per-worker LuaJIT states
 * (luapool.c) behind the loader's batch function. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "data/internal.h"
#include "nnr/dtype.h"

nnr_dataset *nnr_dataset_new(int kind, const char *what)
{
    nnr_dataset *d = calloc(1, sizeof *d);
    if (!d) { nnr_errorf(NNR_ERR_OOM, "%s: out of memory", what); return NULL; }
    atomic_init(&d->refcount, 1);
    d->kind = kind;
    d->map = MAP_FAILED;
    return d;
}

void nnr_dataset_retain(nnr_dataset *d) { if (d) atomic_fetch_add(&d->refcount, 1); }

void nnr_dataset_release(nnr_dataset *d)
{
    if (!d || atomic_fetch_sub_explicit(&d->refcount, 1, memory_order_acq_rel) != 1) return;
    nnr_tensor_release(d->x);
    nnr_tensor_release(d->y);
    if (d->map != MAP_FAILED) munmap(d->map, d->map_bytes);
    if (d->paths) for (int64_t i = 0; i < d->n; i++) free(d->paths[i]);
    free(d->paths);
    free(d->labels);
    for (int i = 0; i < d->nparts; i++) nnr_dataset_release(d->parts[i]);
    free(d->parts);
    free(d->offsets);
    free(d->indices);
    free(d->path);
    nnr_corpus_release(d->corpus);
    for (int i = 0; i < d->nclasses; i++) free(d->class_names[i]);
    free(d->class_names);
    free(d);
}

int64_t nnr_dataset_length(const nnr_dataset *d) { return d->n; }

/* the per-sample layout of a field stored as rows: dtype and the sizes after the first dimension */
static void row_field(nnr_field *f, const nnr_tensor *t)
{
    f->present = 1;
    f->dtype = t->dtype;
    f->ndim = t->ndim - 1;
    for (int i = 1; i < t->ndim; i++) f->sizes[i - 1] = t->sizes[i];
    f->stride = t->strides[0] * (int64_t)nnr_dtype_nbytes(t->dtype);
    f->base = nnr_tensor_data(t);
}

nnr_dataset *nnr_dataset_tensors(const nnr_tensor *x, const nnr_tensor *y)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (!nnr_device_is_host_memory(x->device) || (y && !nnr_device_is_host_memory(y->device))) {
        nnr_errorf(NNR_ERR_INVALID, "TensorDataset: datasets live in host memory (cpu tensors)");
        return NULL;
    }
    if (x->ndim < 1 || (y && y->ndim < 1)) {
        nnr_errorf(NNR_ERR_INVALID, "TensorDataset: %s of shape %s is 0-dimensional; samples are the rows of dimension 1",
                   x->ndim < 1 ? "the samples tensor" : "the targets tensor", x->ndim < 1 ? "[]" : nnr_shape_str(b, sizeof b, y->ndim, y->sizes));
        return NULL;
    }
    if (y && y->sizes[0] != x->sizes[0]) {
        nnr_errorf(NNR_ERR_INVALID, "TensorDataset: samples %s and targets %s differ in their first dimension",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), y ? nnr_shape_str(b, sizeof b, y->ndim, y->sizes) : "[]");
        return NULL;
    }
    nnr_dataset *d = nnr_dataset_new(NNR_DS_ROWS, "TensorDataset");
    if (!d) return NULL;
    d->x = nnr_contiguous(x);                   /* shared (not copied) when already contiguous */
    d->y = y ? nnr_contiguous(y) : NULL;
    if (!d->x || (y && !d->y)) { nnr_dataset_release(d); return NULL; }
    d->n = x->sizes[0];
    row_field(&d->xf, d->x);
    if (d->y) row_field(&d->yf, d->y);
    return d;
}

nnr_dataset *nnr_dataset_indices(int64_t n)
{
    if (n < 0) { nnr_errorf(NNR_ERR_INVALID, "dataset: %lld samples", (long long)n); return NULL; }
    nnr_dataset *d = nnr_dataset_new(NNR_DS_INDICES, "dataset");
    if (d) d->n = n;
    return d;
}

nnr_dataset *nnr_dataset_records(const char *path, int64_t header_bytes, int64_t record_bytes, int64_t x_offset, int x_dtype,
                                 int x_ndim, const int64_t *x_sizes, int64_t y_offset, int y_dtype, int y_classes)
{
    if (x_dtype < 0 || x_dtype > NNR_BOOL || (y_offset >= 0 && (y_dtype < 0 || y_dtype > NNR_BOOL))) {
        nnr_errorf(NNR_ERR_INVALID, "BinaryRecordDataset: %s: unknown dtype", path);
        return NULL;
    }
    int64_t x_bytes = (int64_t)nnr_dtype_nbytes(x_dtype);
    if (x_ndim < 0 || x_ndim > NNR_MAX_DIMS - 1) { nnr_errorf(NNR_ERR_INVALID, "BinaryRecordDataset: %s: a sample has at most %d dimensions", path, NNR_MAX_DIMS - 1); return NULL; }
    for (int i = 0; i < x_ndim; i++) {
        if (x_sizes[i] < 1 || x_bytes > ((int64_t)1 << 40) / x_sizes[i]) { nnr_errorf(NNR_ERR_INVALID, "BinaryRecordDataset: %s: bad sample shape", path); return NULL; }
        x_bytes *= x_sizes[i];
    }
    int64_t x_end, y_end = 0;
    if (header_bytes < 0 || record_bytes < 1 || !nnr_size_add(x_offset, x_bytes, &x_end) || x_end > record_bytes ||
        (y_offset >= 0 && (!nnr_size_add(y_offset, (int64_t)nnr_dtype_nbytes(y_dtype), &y_end) || y_end > record_bytes))) {
        nnr_errorf(NNR_ERR_INVALID, "BinaryRecordDataset: %s: the fields (x: %lld bytes at %lld%s) do not fit a %lld-byte record", path,
                   (long long)x_bytes, (long long)x_offset, y_offset >= 0 ? ", y" : "", (long long)record_bytes);
        return NULL;
    }
    int fd = nnr_open_regular(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        nnr_errorf(NNR_ERR_IO, "BinaryRecordDataset: cannot open %s: %s", path, nnr_open_strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    int64_t body = (int64_t)st.st_size - header_bytes;
    if (!S_ISREG(st.st_mode) || body < 0 || body % record_bytes != 0) {
        nnr_errorf(NNR_ERR_INVALID, "BinaryRecordDataset: %s: %lld bytes are not a %lld-byte header and whole %lld-byte records",
                   path, (long long)st.st_size, (long long)header_bytes, (long long)record_bytes);
        close(fd);
        return NULL;
    }
    nnr_dataset *d = nnr_dataset_new(NNR_DS_RECORDS, "BinaryRecordDataset");
    if (!d) { close(fd); return NULL; }
    d->path = strdup(path);
    d->n = body / record_bytes;
    if (st.st_size > 0) {
        d->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        d->map_bytes = (size_t)st.st_size;
    }
    close(fd);
    if (st.st_size > 0 && d->map == MAP_FAILED) {
        nnr_errorf(NNR_ERR_IO, "BinaryRecordDataset: cannot map %s: %s", path, strerror(errno));
        nnr_dataset_release(d);
        return NULL;
    }
    const char *base = d->map == MAP_FAILED ? NULL : (const char *)d->map + header_bytes;
    d->xf = (nnr_field){1, x_dtype, x_ndim, {0}, record_bytes, base ? base + x_offset : NULL, 0};
    memcpy(d->xf.sizes, x_sizes, sizeof(int64_t) * (size_t)x_ndim);
    if (y_offset >= 0) d->yf = (nnr_field){1, y_dtype, 0, {0}, record_bytes, base ? base + y_offset : NULL, y_classes};
    return d;
}

nnr_dataset *nnr_dataset_images(int64_t n, const char *const *paths, const int64_t *labels, int channels)
{
    if (n < 0 || (channels != 0 && channels != 1 && channels != 3 && channels != 4)) {
        nnr_errorf(NNR_ERR_INVALID, "ImageFolder: channels must be 0 (as stored), 1, 3 or 4 (got %d)", channels);
        return NULL;
    }
    nnr_dataset *d = nnr_dataset_new(NNR_DS_IMAGES, "ImageFolder");
    if (!d) return NULL;
    d->paths = calloc((size_t)(n ? n : 1), sizeof(char *));
    d->labels = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    d->channels = channels;
    if (!d->paths || !d->labels) { nnr_dataset_release(d); nnr_errorf(NNR_ERR_OOM, "ImageFolder: out of memory"); return NULL; }
    for (int64_t i = 0; i < n; i++) {
        d->n = i + 1;               /* so a failure frees what was copied */
        if (!(d->paths[i] = strdup(paths[i]))) { nnr_dataset_release(d); nnr_errorf(NNR_ERR_OOM, "ImageFolder: out of memory"); return NULL; }
        d->labels[i] = labels ? labels[i] : 0;
    }
    d->n = n;
    d->xf = (nnr_field){1, NNR_U8, 3, {0}, 0, NULL, 0};
    if (labels) d->yf = (nnr_field){1, NNR_I64, 0, {0}, 0, NULL, 0};
    return d;
}

/* two fields that batch together: same presence, dtype and (for x, unless images) shape */
static int fields_match(const nnr_field *a, const nnr_field *b, int shape)
{
    if (a->present != b->present) return 0;
    if (!a->present) return 1;
    int adt = a->classes ? NNR_I64 : a->dtype, bdt = b->classes ? NNR_I64 : b->dtype;
    if (adt != bdt || a->ndim != b->ndim) return 0;
    return !shape || memcmp(a->sizes, b->sizes, sizeof(int64_t) * (size_t)a->ndim) == 0;
}

nnr_dataset *nnr_dataset_concat(int n, nnr_dataset *const *parts)
{
    if (n < 1) { nnr_errorf(NNR_ERR_INVALID, "ConcatDataset: needs at least one dataset"); return NULL; }
    for (int i = 1; i < n; i++) {
        int images = parts[0]->kind == NNR_DS_IMAGES || parts[i]->kind == NNR_DS_IMAGES;
        if (!fields_match(&parts[0]->xf, &parts[i]->xf, !images) || !fields_match(&parts[0]->yf, &parts[i]->yf, 1)) {
            char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "ConcatDataset: dataset %d has samples %s %s%s, dataset 1 has %s %s%s", i + 1,
                       nnr_dtype_name(parts[i]->xf.dtype), nnr_shape_str(a, sizeof a, parts[i]->xf.ndim, parts[i]->xf.sizes),
                       parts[i]->yf.present ? " with targets" : "", nnr_dtype_name(parts[0]->xf.dtype),
                       nnr_shape_str(b, sizeof b, parts[0]->xf.ndim, parts[0]->xf.sizes), parts[0]->yf.present ? " with targets" : "");
            return NULL;
        }
    }
    nnr_dataset *d = nnr_dataset_new(NNR_DS_CONCAT, "ConcatDataset");
    if (!d) return NULL;
    d->parts = calloc((size_t)n, sizeof *d->parts);
    d->offsets = calloc((size_t)n + 1, sizeof *d->offsets);
    if (!d->parts || !d->offsets) { nnr_dataset_release(d); nnr_errorf(NNR_ERR_OOM, "ConcatDataset: out of memory"); return NULL; }
    for (int i = 0; i < n; i++) {
        nnr_dataset_retain(parts[i]);
        d->parts[i] = parts[i];
        d->offsets[i + 1] = d->offsets[i] + parts[i]->n;
    }
    d->nparts = n;
    d->n = d->offsets[n];
    d->xf = parts[0]->xf;
    d->yf = parts[0]->yf;
    return d;
}

nnr_dataset *nnr_dataset_subset(nnr_dataset *base, int64_t n, const int64_t *indices)
{
    for (int64_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= base->n) {
            nnr_errorf(NNR_ERR_INVALID, "Subset: index %lld is outside 1..%lld", (long long)indices[i] + 1, (long long)base->n);
            return NULL;
        }
    nnr_dataset *d = nnr_dataset_new(NNR_DS_SUBSET, "Subset");
    if (!d) return NULL;
    d->indices = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!d->indices) { nnr_dataset_release(d); nnr_errorf(NNR_ERR_OOM, "Subset: out of memory"); return NULL; }
    if (n) memcpy(d->indices, indices, sizeof(int64_t) * (size_t)n);
    nnr_dataset_retain(base);
    d->parts = malloc(sizeof *d->parts);
    if (!d->parts) { nnr_dataset_release(base); nnr_dataset_release(d); nnr_errorf(NNR_ERR_OOM, "Subset: out of memory"); return NULL; }
    d->parts[0] = base;
    d->nparts = 1;
    d->n = n;
    d->xf = base->xf;
    d->yf = base->yf;
    return d;
}

/* ---------------- reading one sample (any thread) ---------------- */

int nnr_sample_fetch(const nnr_dataset *d, int64_t i, int64_t epoch, nnr_sample *s, char *err, size_t errn)
{
    if (d->kind == NNR_DS_INDICES) { snprintf(err, errn, "this dataset has no data of its own (it numbers a Lua dataset's samples)"); return NNR_ERR_INVALID; }
    while (d->kind == NNR_DS_CONCAT || d->kind == NNR_DS_SUBSET) {
        if (d->kind == NNR_DS_SUBSET) { i = d->indices[i]; d = d->parts[0]; continue; }
        int lo = 0, hi = d->nparts - 1;          /* the part holding i: offsets[lo] <= i < offsets[lo + 1] */
        while (lo < hi) { int mid = (lo + hi + 1) / 2; if (d->offsets[mid] <= i) lo = mid; else hi = mid - 1; }
        i -= d->offsets[lo];
        d = d->parts[lo];
    }
    s->x = d->xf;
    s->y = d->yf;
    s->owned = NULL;
    if (d->kind == NNR_DS_TEXT) return nnr_text_fetch(d, i, epoch, s, err, errn);
    if (d->kind == NNR_DS_IMAGES) {
        int64_t sizes[3];
        uint8_t *pixels = NULL;
        int st = nnr_decode_image_file(d->paths[i], d->channels, &pixels, sizes, err, errn);
        if (st) return st;
        s->owned = pixels;
        s->x.base = (const char *)pixels;
        memcpy(s->x.sizes, sizes, sizeof sizes);
        s->y.base = (const char *)&d->labels[i];
        s->path = d->paths[i];
        return NNR_OK;
    }
    s->path = NULL;
    s->x.base += i * d->xf.stride;
    if (s->y.present) s->y.base += i * d->yf.stride;
    if (s->y.present && s->y.classes) {
        /* a class number read from the file: a whole number >= 0 (NaN, 2.5 or -1 in a float field is
         * not one), as CSV's labels are checked */
        double v = nnr_load_f64_unaligned(s->y.dtype, s->y.base);
        if (!(v >= 0 && v < 9007199254740992.0) || v != floor(v)) {
            snprintf(err, errn, "label %g is not a class number (0, 1, ...; raw_labels = true keeps the values as they are)", isnan(v) ? NAN : v);
            return NNR_ERR_INVALID;
        }
    }
    return NNR_OK;
}

/* one field of a sample as a new tensor of its own (Lua's ds:get(i), and the Lua workers) */
static nnr_tensor *field_tensor(const nnr_field *f)
{
    int dtype = f->classes ? NNR_I64 : f->dtype;
    nnr_tensor *t = nnr_tensor_alloc(dtype, f->ndim, f->sizes, nnr_host_device());
    if (!t) return NULL;
    if (f->classes) {
        double v = nnr_load_f64_unaligned(f->dtype, f->base);
        *(int64_t *)nnr_tensor_data(t) = (int64_t)v + 1;
    } else {
        memcpy(nnr_tensor_data(t), f->base, nnr_tensor_numel(t) * nnr_dtype_nbytes(dtype));
    }
    return t;
}

int nnr_dataset_get(const nnr_dataset *d, int64_t i, nnr_tensor **x, nnr_tensor **y) { return nnr_dataset_get_epoch(d, i, 1, x, y); }

int nnr_dataset_get_epoch(const nnr_dataset *d, int64_t i, int64_t epoch, nnr_tensor **x, nnr_tensor **y)
{
    *x = *y = NULL;
    if (i < 0 || i >= d->n) return nnr_errorf(NNR_ERR_INVALID, "dataset: index %lld is outside 1..%lld", (long long)i + 1, (long long)d->n);
    nnr_sample s;
    char err[512];
    int st = nnr_sample_fetch(d, i, epoch, &s, err, sizeof err);
    if (st) return nnr_errorf(st, "dataset: sample %lld: %s", (long long)i + 1, err);
    *x = field_tensor(&s.x);
    if (s.y.present) *y = field_tensor(&s.y);
    free(s.owned);
    if (!*x || (s.y.present && !*y)) {
        nnr_tensor_release(*x); nnr_tensor_release(*y);
        *x = *y = NULL;
        return nnr_errorf(NNR_ERR_OOM, "dataset: out of memory for sample %lld", (long long)i + 1);
    }
    return NNR_OK;
}

/* ---------------- ImageFolder: root/<class>/<file>.{png,jpg,jpeg} ---------------- */

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int is_dir(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISDIR(st.st_mode); }

static int image_name(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.') return 0;
    return (n > 4 && (strcasecmp(name + n - 4, ".png") == 0 || strcasecmp(name + n - 4, ".jpg") == 0)) ||
           (n > 5 && strcasecmp(name + n - 5, ".jpeg") == 0);
}

static int push_path(char ***paths, int64_t **labels, int64_t *n, int64_t *cap, char *path, int64_t label)
{
    if (*n == *cap) {
        int64_t grown = *cap ? *cap * 2 : 256;
        char **p = realloc(*paths, sizeof(char *) * (size_t)grown);
        if (!p) return -1;
        *paths = p;
        int64_t *l = realloc(*labels, sizeof(int64_t) * (size_t)grown);
        if (!l) return -1;
        *labels = l;
        *cap = grown;
    }
    (*paths)[*n] = path;
    (*labels)[(*n)++] = label;
    return 0;
}

nnr_dataset *nnr_dataset_image_folder(const char *root, int channels)
{
    struct dirent **classes = NULL;
    int nclasses = scandir(root, &classes, NULL, by_name);
    if (nclasses < 0) { nnr_errorf(NNR_ERR_IO, "ImageFolder: cannot read the folder %s: %s", root, strerror(errno)); return NULL; }
    char **paths = NULL, **names = calloc((size_t)nclasses + 1, sizeof(char *));
    int64_t *labels = NULL, n = 0, cap = 0;
    int ncls = 0, st = NNR_OK;
    for (int c = 0; c < nclasses && st == NNR_OK; c++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", root, classes[c]->d_name);
        if (classes[c]->d_name[0] == '.' || !is_dir(dir)) continue;
        struct dirent **files = NULL;
        int nfiles = scandir(dir, &files, NULL, by_name);
        if (nfiles < 0) { st = nnr_errorf(NNR_ERR_IO, "ImageFolder: cannot read the folder %s: %s", dir, strerror(errno)); break; }
        if (names) names[ncls] = strdup(classes[c]->d_name);
        for (int f = 0; f < nfiles; f++) {
            if (st == NNR_OK && image_name(files[f]->d_name)) {
                size_t len = strlen(dir) + strlen(files[f]->d_name) + 2;
                char *path = malloc(len);
                if (!path || push_path(&paths, &labels, &n, &cap, path, ncls + 1)) { free(path); st = nnr_errorf(NNR_ERR_OOM, "ImageFolder: out of memory"); }
                else snprintf(path, len, "%s/%s", dir, files[f]->d_name);
            }
            free(files[f]);
        }
        free(files);
        ncls++;
    }
    for (int c = 0; c < nclasses; c++) free(classes[c]);
    free(classes);
    nnr_dataset *d = NULL;
    if (st == NNR_OK && !names) st = nnr_errorf(NNR_ERR_OOM, "ImageFolder: out of memory");
    if (st == NNR_OK && n == 0) st = nnr_errorf(NNR_ERR_INVALID, "ImageFolder: no .png, .jpg or .jpeg files in class folders under %s", root);
    if (st == NNR_OK && (d = nnr_dataset_images(n, (const char *const *)paths, labels, channels))) {
        d->class_names = names;
        d->nclasses = ncls;
        names = NULL;
    }
    for (int64_t i = 0; i < n; i++) free(paths[i]);
    free(paths);
    free(labels);
    if (names) { for (int c = 0; c < ncls; c++) free(names[c]); free(names); }
    return d;
}

int nnr_dataset_class_count(const nnr_dataset *d) { return d->nclasses; }
const char *nnr_dataset_class_name(const nnr_dataset *d, int i) { return i >= 0 && i < d->nclasses ? d->class_names[i] : NULL; }

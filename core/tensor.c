/* Tensors: size/stride/offset over a refcounted storage (DESIGN.md decision
 * 3), creation, and every view. Views never copy; they share the storage. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "derivatives.h"
#include "nnr/dtype.h"
#include "internal.h"

static const char *dtype_names[NNR_DTYPE_COUNT] = {"f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool"};

bool nnr_dtype_valid(int dtype) { return dtype >= 0 && dtype < NNR_DTYPE_COUNT; }
size_t nnr_dtype_bytes(int dtype) { return nnr_dtype_nbytes(dtype); }
int nnr_dtype_size(int dtype) { return (int)nnr_dtype_nbytes(dtype); }
bool nnr_dtype_is_float(int dtype) { return dtype == NNR_F32 || dtype == NNR_F64 || dtype == NNR_F16 || dtype == NNR_BF16; }
const char *nnr_dtype_name(int dtype) { return nnr_dtype_valid(dtype) ? dtype_names[dtype] : "?"; }

/* PyTorch's promotion lattice: bool < u8/i8 < i32 < i64 < f16/bf16 < f32 < f64 */
int nnr_promote_types(int a, int b)
{
    if (a == b) return a;
    static const int rank[NNR_DTYPE_COUNT] = {[NNR_BOOL] = 0, [NNR_U8] = 1, [NNR_I8] = 1, [NNR_I32] = 2,
                                              [NNR_I64] = 3, [NNR_F16] = 4, [NNR_BF16] = 4, [NNR_F32] = 5, [NNR_F64] = 6};
    if ((a == NNR_U8 && b == NNR_I8) || (a == NNR_I8 && b == NNR_U8)) return NNR_I32;   /* no i16 here */
    if ((a == NNR_F16 && b == NNR_BF16) || (a == NNR_BF16 && b == NNR_F16)) return NNR_F32;
    return rank[a] >= rank[b] ? a : b;
}

void nnr_contiguous_strides(int ndim, const int64_t *sizes, int64_t *strides)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= sizes[i] > 0 ? sizes[i] : 1;
    }
}

bool nnr_check_sizes(const char *op, int ndim, const int64_t *sizes)
{
    if (ndim < 0 || ndim > NNR_MAX_DIMS) {
        nnr_errorf(NNR_ERR_INVALID, "%s: %d dimensions requested, at most %d supported", op, ndim, NNR_MAX_DIMS);
        return false;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (sizes[i] < 0) {
            char b[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "%s: negative size in shape %s", op, nnr_shape_str(b, sizeof b, ndim, sizes));
            return false;
        }
        if (sizes[i] && n > INT64_MAX / 16 / sizes[i]) {
            char b[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_OOM, "%s: shape %s is too large", op, nnr_shape_str(b, sizeof b, ndim, sizes));
            return false;
        }
        n *= sizes[i];
    }
    return true;
}

static int64_t numel_of(int ndim, const int64_t *sizes)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= sizes[i];
    return n;
}

/* Small cpu tensors (what a Lua loop of tiny ops allocates) come as one
 * block holding the tensor struct, its storage and the data, recycled through
 * per-thread free lists: no malloc, no lock, one cache-friendly object. The
 * block is freed when its storage's last reference goes; the owning tensor's
 * struct simply stays inside it until then. View structs have their own list. */
enum { SMALL_DATA = 128, FREELIST_MAX = 16384 };
typedef struct small_block {
    nnr_tensor t;
    nnr_storage s;
    _Alignas(64) unsigned char data[SMALL_DATA];
} small_block;

typedef struct freelists {
    nnr_tensor *tensors;       /* linked through ->storage */
    small_block *blocks;       /* linked through ->s.data */
    int n_tensors, n_blocks;
} freelists;

static _Thread_local freelists tl_free __attribute__((tls_model("initial-exec")));
/* Threads that make tensors for another thread to free (the loader's workers) opt out of the
 * free lists: otherwise the consumer's lists would fill with blocks it never asked for. */
static _Thread_local int tl_unpooled __attribute__((tls_model("initial-exec")));
void nnr_thread_pooling(int on) { tl_unpooled = !on; }
static pthread_key_t freelist_key;
static pthread_once_t freelist_once = PTHREAD_ONCE_INIT;

static void drain(freelists *f)
{
    while (f->tensors) { nnr_tensor *t = f->tensors; f->tensors = (nnr_tensor *)t->storage; free(t); }
    while (f->blocks) { small_block *b = f->blocks; f->blocks = (small_block *)b->s.data; free(b); }
    f->n_tensors = f->n_blocks = 0;
}

static void thread_exit(void *arg) { drain(arg); }
static void make_key(void) { pthread_key_create(&freelist_key, thread_exit); }
__attribute__((destructor)) static void process_exit(void) { drain(&tl_free); }

static void register_thread(void)
{
    pthread_once(&freelist_once, make_key);
    if (!pthread_getspecific(freelist_key)) pthread_setspecific(freelist_key, &tl_free);
}

static nnr_tensor *tensor_struct(void)
{
    nnr_tensor *t = tl_unpooled ? NULL : tl_free.tensors;
    if (t) { tl_free.tensors = (nnr_tensor *)t->storage; tl_free.n_tensors--; }
    else if (!(t = malloc(sizeof *t))) return NULL;
    t->embedded = tl_unpooled ? 2 : 0;     /* 2: freed with free(), never pooled */
    return t;
}

static void tensor_struct_free(nnr_tensor *t)
{
    if (tl_free.n_tensors >= FREELIST_MAX) { free(t); return; }
    if (!tl_free.tensors && !tl_free.blocks) register_thread();
    t->storage = (nnr_storage *)tl_free.tensors;
    tl_free.tensors = t;
    tl_free.n_tensors++;
}

static small_block *small_block_get(size_t nbytes)
{
    small_block *b = tl_unpooled ? NULL : tl_free.blocks;
    if (b) { tl_free.blocks = (small_block *)b->s.data; tl_free.n_blocks--; }
    else if (posix_memalign((void **)&b, 64, sizeof *b) != 0) return NULL;
    b->s.small = tl_unpooled ? 2 : 1;      /* 2: freed with free(), never pooled */
    b->s.pinned = NULL;
    b->s.data = b->data;
    b->t.embedded = 1;
    b->t.storage = &b->s;
    nnr_account((int64_t)nbytes);
    nnr_account_device(0, (int64_t)nbytes);
    return b;
}

static void storage_free(nnr_storage *s)
{
    if (s->pinned) {
        nnr_free_pinned(s->pinned, s->data, s->nbytes);
        free(s);
        return;
    }
    if (!s->small) {
        nnr_free_device(s->device, s->data, s->nbytes);
        free(s);
        return;
    }
    nnr_account(-(int64_t)s->nbytes);
    nnr_account_device(0, -(int64_t)s->nbytes);
    small_block *b = (small_block *)((char *)s - offsetof(small_block, s));
    if (s->small == 2 || tl_free.n_blocks >= FREELIST_MAX) { free(b); return; }
    if (!tl_free.tensors && !tl_free.blocks) register_thread();
    b->s.data = tl_free.blocks;
    tl_free.blocks = b;
    tl_free.n_blocks++;
}

/* a new contiguous tensor over a new storage s (its data, small and pinned fields already set) */
static nnr_tensor *init_tensor(nnr_tensor *t, nnr_storage *s, int dtype, int ndim, const int64_t *sizes, int device, size_t nbytes)
{
    atomic_init(&s->refcount, 1);
    atomic_init(&s->version, 0);
    s->device = device;
    s->nbytes = nbytes;
    atomic_init(&t->refcount, 1);
    t->dtype = dtype;
    t->ndim = ndim;
    t->device = device;
    t->offset = 0;
    t->storage = s;
    t->requires_grad = t->retains_grad = t->is_view = 0;
    t->grad_fn = t->grad_acc = NULL;
    t->grad = NULL;
    if (ndim > 0) memcpy(t->sizes, sizes, sizeof(int64_t) * (size_t)ndim);
    nnr_contiguous_strides(ndim, sizes, t->strides);
    return t;
}

nnr_tensor *nnr_tensor_alloc(int dtype, int ndim, const int64_t *sizes, int device)
{
    if (!nnr_dtype_valid(dtype)) { nnr_errorf(NNR_ERR_INVALID, "empty: unknown dtype %d", dtype); return NULL; }
    if (!nnr_check_sizes("empty", ndim, sizes)) return NULL;
    if (!nnr_device_get(device)) {
        nnr_init();
        if (!nnr_device_get(device)) { nnr_errorf(NNR_ERR_DEVICE, "empty: no device %d (%s)", device, nnr_last_error()); return NULL; }
    }
    size_t nbytes = (size_t)numel_of(ndim, sizes) * nnr_dtype_bytes(dtype);
    nnr_tensor *t = NULL;
    nnr_storage *s = NULL;
    if (device == 0 && nbytes <= SMALL_DATA) {
        small_block *b = small_block_get(nbytes);
        if (b) { t = &b->t; s = &b->s; }
    } else if ((t = tensor_struct()) && (s = malloc(sizeof *s))) {
        s->small = 0;
        s->pinned = NULL;
        s->data = nnr_alloc_device(device, nbytes);
        if (!s->data) { free(s); s = NULL; }
    }
    if (!s) {
        if (t) tensor_struct_free(t);
        if (nnr_last_status() != NNR_ERR_OOM) nnr_errorf(NNR_ERR_OOM, "out of memory allocating %zu bytes", nbytes);
        return NULL;
    }
    return init_tensor(t, s, dtype, ndim, sizes, device, nbytes);
}

nnr_tensor *nnr_tensor_alloc_pinned(int dtype, int ndim, const int64_t *sizes)
{
    if (!nnr_dtype_valid(dtype) || !nnr_check_sizes("pin_memory", ndim, sizes)) return nnr_tensor_alloc(dtype, ndim, sizes, 0);
    size_t nbytes = (size_t)numel_of(ndim, sizes) * nnr_dtype_bytes(dtype);
    nnr_plugin *plugin = NULL;
    void *data = nnr_alloc_pinned(nbytes, &plugin);
    if (!data) return nnr_tensor_alloc(dtype, ndim, sizes, 0);
    nnr_tensor *t = tensor_struct();
    nnr_storage *s = t ? malloc(sizeof *s) : NULL;
    if (!s) {
        if (t) tensor_struct_free(t);
        nnr_free_pinned(plugin, data, nbytes);
        nnr_errorf(NNR_ERR_OOM, "pin_memory: out of memory");
        return NULL;
    }
    s->small = 0;
    s->data = data;
    s->pinned = plugin;
    return init_tensor(t, s, dtype, ndim, sizes, 0, nbytes);
}

int nnr_tensor_is_pinned(const nnr_tensor *t) { return t->storage->pinned != NULL; }

const char *nnr_pinned_provider(void)
{
    nnr_plugin *p = nnr_pinned_plugin();
    return p ? p->name : NULL;
}

nnr_tensor *nnr_pin_memory(const nnr_tensor *t)
{
    if (t->device != 0) { nnr_errorf(NNR_ERR_INVALID, "pin_memory: the tensor is on %s; only host (cpu) tensors can be pinned", nnr_device_name(t->device)); return NULL; }
    if (t->storage->pinned) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    nnr_tensor *src = nnr_contiguous(t);
    if (!src) return NULL;
    nnr_tensor *r = nnr_tensor_alloc_pinned(t->dtype, t->ndim, t->sizes);
    if (r) memcpy(nnr_tensor_data(r), nnr_tensor_data(src), (size_t)numel_of(t->ndim, t->sizes) * nnr_dtype_bytes(t->dtype));
    nnr_tensor_release(src);
    return r;
}

nnr_tensor *nnr_tensor_new_view(const nnr_tensor *base, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset)
{
    nnr_tensor *t = tensor_struct();
    if (!t) { nnr_errorf(NNR_ERR_OOM, "view: out of memory"); return NULL; }
    atomic_init(&t->refcount, 1);
    t->dtype = base->dtype;
    t->ndim = ndim;
    t->device = base->device;
    t->offset = offset;
    t->storage = base->storage;
    t->requires_grad = t->retains_grad = t->is_view = 0;
    t->grad_fn = t->grad_acc = NULL;
    t->grad = NULL;
    atomic_fetch_add(&base->storage->refcount, 1);
    if (ndim > 0) memcpy(t->sizes, sizes, sizeof(int64_t) * (size_t)ndim);
    if (ndim > 0) memcpy(t->strides, strides, sizeof(int64_t) * (size_t)ndim);
    return t;
}

void nnr_tensor_retain(nnr_tensor *t) { if (t) atomic_fetch_add_explicit(&t->refcount, 1, memory_order_relaxed); }

void nnr_tensor_release(nnr_tensor *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refcount, 1, memory_order_acq_rel) != 1) return;
    if (t->grad_fn || t->grad_acc || t->grad) nnr_autograd_release_tensor(t);
    nnr_storage *s = t->storage;
    int embedded = t->embedded;
    if (atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_acq_rel) == 1) storage_free(s);   /* frees an embedding block too */
    if (embedded == 2) free(t);
    else if (!embedded) tensor_struct_free(t);
}

int nnr_tensor_dtype(const nnr_tensor *t) { return t->dtype; }
int nnr_tensor_ndim(const nnr_tensor *t) { return t->ndim; }
int64_t nnr_tensor_size(const nnr_tensor *t, int dim) { return (dim >= 0 && dim < t->ndim) ? t->sizes[dim] : -1; }
int64_t nnr_tensor_stride(const nnr_tensor *t, int dim) { return (dim >= 0 && dim < t->ndim) ? t->strides[dim] : -1; }
int64_t nnr_tensor_offset(const nnr_tensor *t) { return t->offset; }
int64_t nnr_tensor_numel(const nnr_tensor *t) { return numel_of(t->ndim, t->sizes); }
int nnr_tensor_device(const nnr_tensor *t) { return t->device; }
int nnr_tensor_same_storage(const nnr_tensor *a, const nnr_tensor *b) { return a->storage == b->storage; }

int nnr_tensor_is_contiguous(const nnr_tensor *t)
{
    int64_t expected = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->sizes[i] == 1) continue;
        if (t->strides[i] != expected) return 0;
        expected *= t->sizes[i];
    }
    return 1;
}

void *nnr_tensor_data(const nnr_tensor *t)
{
    if (t->device != 0) return NULL;
    return (char *)t->storage->data + t->offset * (int64_t)nnr_dtype_bytes(t->dtype);
}

void nnr_tensor_desc_of(const nnr_tensor *t, nnr_tensor_desc *d)
{
    d->struct_size = sizeof *d;
    d->dtype = t->dtype;
    d->ndim = t->ndim;
    d->device = nnr_device_get(t->device)->local_index;
    for (int i = 0; i < t->ndim; i++) { d->sizes[i] = t->sizes[i]; d->strides[i] = t->strides[i]; }
    d->data = (char *)t->storage->data + t->offset * (int64_t)nnr_dtype_bytes(t->dtype);
}

/* ---------- creation ---------- */

nnr_tensor *nnr_empty(int dtype, int ndim, const int64_t *sizes, int device)
{
    return nnr_tensor_alloc(dtype, ndim, sizes, device);
}

nnr_tensor *nnr_full(int dtype, int ndim, const int64_t *sizes, double value, int device)
{
    nnr_tensor *t = nnr_tensor_alloc(dtype, ndim, sizes, device);
    if (t && nnr_fill_(t, value) != NNR_OK) { nnr_tensor_release(t); return NULL; }
    return t;
}

nnr_tensor *nnr_from_doubles(const double *values, int64_t n, int dtype, int ndim, const int64_t *sizes, int device)
{
    if (!nnr_check_sizes("tensor", ndim, sizes)) return NULL;
    if (numel_of(ndim, sizes) != n) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "tensor: %lld values given for shape %s", (long long)n, nnr_shape_str(b, sizeof b, ndim, sizes));
        return NULL;
    }
    nnr_tensor *host = nnr_tensor_alloc(NNR_F64, ndim, sizes, 0);
    if (!host) return NULL;
    if (n) memcpy(host->storage->data, values, (size_t)n * sizeof(double));
    nnr_tensor *t = nnr_to(host, dtype, device);
    nnr_tensor_release(host);
    return t;
}

int nnr_to_doubles(const nnr_tensor *t, double *out, int64_t n)
{
    if (n != nnr_tensor_numel(t)) return nnr_errorf(NNR_ERR_INVALID, "totable: buffer of %lld for %lld elements", (long long)n, (long long)nnr_tensor_numel(t));
    nnr_tensor *h = nnr_to(t, NNR_F64, 0);
    if (!h) return nnr_last_status();
    nnr_tensor *c = nnr_contiguous(h);
    nnr_tensor_release(h);
    if (!c) return nnr_last_status();
    if (n) memcpy(out, nnr_tensor_data(c), (size_t)n * sizeof(double));
    nnr_tensor_release(c);
    return NNR_OK;
}

static int element_offset(const char *op, const nnr_tensor *t, const int64_t *index, int64_t *off)
{
    int64_t o = t->offset;
    for (int i = 0; i < t->ndim; i++) {
        if (index[i] < 0 || index[i] >= t->sizes[i]) {
            char b[NNR_SHAPE_BUF];
            return nnr_errorf(NNR_ERR_INVALID, "%s: index %lld is out of range for dimension %d of size %lld (shape %s)", op,
                              (long long)index[i] + 1, i + 1, (long long)t->sizes[i], nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        }
        o += index[i] * t->strides[i];
    }
    *off = o;
    return NNR_OK;
}

int nnr_get(const nnr_tensor *t, const int64_t *index, double *out)
{
    int64_t off;
    int st = element_offset("get", t, index, &off);
    if (st) return st;
    size_t es = nnr_dtype_bytes(t->dtype);
    const nnr_device_entry *d = nnr_device_get(t->device);
    if (t->device == 0) { *out = nnr_load_f64(t->dtype, (char *)t->storage->data + off * (int64_t)es); return NNR_OK; }
    unsigned char buf[8];
    st = d->plugin->copy(d->plugin, d->local_index, NNR_COPY_DEVICE_TO_HOST, buf, (char *)t->storage->data + off * (int64_t)es, es);
    if (st) return st;
    *out = nnr_load_f64(t->dtype, buf);
    return NNR_OK;
}

int nnr_set(nnr_tensor *t, const int64_t *index, double value)
{
    int64_t off;
    int st = element_offset("set", t, index, &off);
    if (st) return st;
    if ((st = nnr_autograd_check_inplace("set", t))) return st;
    if (t->requires_grad && nnr_grad_mode())
        return nnr_errorf(NNR_ERR_INVALID, "set: writing one element of a tensor that requires grad is not supported; "
                          "clone() it, or write inside nnr.no_grad");
    size_t es = nnr_dtype_bytes(t->dtype);
    const nnr_device_entry *d = nnr_device_get(t->device);
    if (t->device == 0) { nnr_store_f64(t->dtype, (char *)t->storage->data + off * (int64_t)es, value); return NNR_OK; }
    unsigned char buf[8];
    nnr_store_f64(t->dtype, buf, value);
    return d->plugin->copy(d->plugin, d->local_index, NNR_COPY_HOST_TO_DEVICE, (char *)t->storage->data + off * (int64_t)es, buf, es);
}

int nnr_item(const nnr_tensor *t, double *out)
{
    if (nnr_tensor_numel(t) != 1) {
        char b[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_INVALID, "item: tensor of shape %s has %lld elements, expected exactly 1",
                          nnr_shape_str(b, sizeof b, t->ndim, t->sizes), (long long)nnr_tensor_numel(t));
    }
    int64_t zeros[NNR_MAX_DIMS] = {0};
    return nnr_get(t, zeros, out);
}

static nnr_tensor *fill_arange(const char *op, int64_t n, double start, double step, int dtype, int device)
{
    if (!nnr_dtype_valid(dtype)) { nnr_errorf(NNR_ERR_INVALID, "%s: unknown dtype %d", op, dtype); return NULL; }
    nnr_tensor *t = nnr_tensor_alloc(dtype, 1, &n, device);
    if (!t) return NULL;
    nnr_op_params p = {.struct_size = sizeof p, .f = {start, step}};
    nnr_tensor_desc d;
    nnr_tensor_desc_of(t, &d);
    nnr_op_call call = {.struct_size = sizeof call, .op = NNR_OP_ARANGE, .n_outputs = 1, .outputs = {&d}, .params = &p};
    if (nnr_dispatch(op, t->device, &call)) { nnr_tensor_release(t); return NULL; }
    return t;
}

nnr_tensor *nnr_arange(double start, double end, double step, int dtype, int device)
{
    if (step == 0 || step != step || start != start || end != end) {
        nnr_errorf(NNR_ERR_INVALID, "arange: step must be a non-zero number (got start %g, end %g, step %g)", start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (count < 0) count = 0;
    if (count > 1e15) { nnr_errorf(NNR_ERR_INVALID, "arange: %g elements is too many", count); return NULL; }
    return fill_arange("arange", (int64_t)count, start, step, dtype, device);
}

nnr_tensor *nnr_linspace(double start, double end, int64_t steps, int dtype, int device)
{
    if (steps < 0) { nnr_errorf(NNR_ERR_INVALID, "linspace: steps must be >= 0, got %lld", (long long)steps); return NULL; }
    double step = steps > 1 ? (end - start) / (double)(steps - 1) : 0;
    return fill_arange("linspace", steps, start, step, dtype, device);
}

nnr_tensor *nnr_eye(int64_t n, int64_t m, int dtype, int device)
{
    if (m < 0) m = n;
    int64_t sizes[2] = {n, m};
    nnr_tensor *t = nnr_full(dtype, 2, sizes, 0.0, device);
    if (!t) return NULL;
    int64_t k = n < m ? n : m, stride = m + 1;
    nnr_tensor *diag = nnr_tensor_new_view(t, 1, &k, &stride, 0);
    int st = diag ? nnr_fill_(diag, 1.0) : nnr_last_status();
    nnr_tensor_release(diag);
    if (st) { nnr_tensor_release(t); return NULL; }
    return t;
}

/* ---------- views ---------- */

/* a new view records how to send its gradient back to the base */
static nnr_tensor *finish_view(nnr_tensor *v, int kind, const nnr_tensor *base, const int64_t *params, int nparams)
{
    if (v && nnr_should_record(1, &base) && nnr_record_view(kind, base, v, params, nparams)) {
        nnr_tensor_release(v);
        return NULL;
    }
    return v;
}

static int wrap_dim(const char *op, const nnr_tensor *t, int dim, int extra)
{
    int n = t->ndim + extra;
    if (dim < 0) dim += n;
    if (dim < 0 || dim >= (n > 0 ? n : 1)) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", op, dim + 1,
                   nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return -1;
    }
    return dim;
}

/* fills in a -1 entry; checks the element count */
static int infer_sizes(const char *op, const nnr_tensor *t, int ndim, const int64_t *in, int64_t *out)
{
    if (ndim < 0 || ndim > NNR_MAX_DIMS) return nnr_errorf(NNR_ERR_INVALID, "%s: %d dimensions, at most %d supported", op, ndim, NNR_MAX_DIMS);
    int infer = -1;
    int64_t known = 1, total = nnr_tensor_numel(t);
    for (int i = 0; i < ndim; i++) {
        out[i] = in[i];
        if (in[i] == -1) {
            if (infer >= 0) return nnr_errorf(NNR_ERR_INVALID, "%s: only one dimension can be -1", op);
            infer = i;
        } else if (in[i] < 0) {
            return nnr_errorf(NNR_ERR_INVALID, "%s: invalid size %lld", op, (long long)in[i]);
        } else known *= in[i];
    }
    if (infer >= 0) {
        if (known == 0 || total % known) goto bad;
        out[infer] = total / known;
    } else if (known != total) goto bad;
    return NNR_OK;
bad:;
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    return nnr_errorf(NNR_ERR_INVALID, "%s: shape %s is invalid for a tensor of shape %s (%lld elements)", op,
                      nnr_shape_str(a, sizeof a, ndim, in), nnr_shape_str(b, sizeof b, t->ndim, t->sizes), (long long)total);
}

/* strides for viewing t as new sizes without copying, or false (PyTorch's computeStride) */
static bool view_strides(const nnr_tensor *t, int ndim, const int64_t *sizes, int64_t *strides)
{
    if (nnr_tensor_numel(t) == 0 || t->ndim == 0) { nnr_contiguous_strides(ndim, sizes, strides); return true; }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->strides[t->ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_numel *= t->sizes[d];
        if (d == 0 || (t->sizes[d - 1] != 1 && t->strides[d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || sizes[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= sizes[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (d > 0) {
                chunk_base_stride = t->strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

nnr_tensor *nnr_view(const nnr_tensor *t, int ndim, const int64_t *sizes)
{
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    if (infer_sizes("view", t, ndim, sizes, s)) return NULL;
    if (!view_strides(t, ndim, s, st)) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF], c[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "view: shape %s is incompatible with the strides %s of a tensor of shape %s; use reshape (it copies) or contiguous() first",
                   nnr_shape_str(a, sizeof a, ndim, s), nnr_shape_str(c, sizeof c, t->ndim, t->strides), nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), NNR_VIEW_RESHAPE, t, NULL, 0);
}

nnr_tensor *nnr_reshape(const nnr_tensor *t, int ndim, const int64_t *sizes)
{
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    if (infer_sizes("reshape", t, ndim, sizes, s)) return NULL;
    if (view_strides(t, ndim, s, st)) return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), NNR_VIEW_RESHAPE, t, NULL, 0);
    nnr_tensor *c = nnr_contiguous(t);
    if (!c) return NULL;
    nnr_contiguous_strides(ndim, s, st);
    nnr_tensor *v = finish_view(nnr_tensor_new_view(c, ndim, s, st, c->offset), NNR_VIEW_RESHAPE, c, NULL, 0);
    nnr_tensor_release(c);
    return v;
}

nnr_tensor *nnr_permute(const nnr_tensor *t, int ndim, const int *dims)
{
    if (ndim != t->ndim) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "permute: %d dimensions given for a tensor of shape %s", ndim, nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS], perm[NNR_MAX_DIMS];
    int seen[NNR_MAX_DIMS] = {0};
    for (int i = 0; i < ndim; i++) {
        int d = wrap_dim("permute", t, dims[i], 0);
        if (d < 0) return NULL;
        if (seen[d]++) { nnr_errorf(NNR_ERR_INVALID, "permute: dimension %d repeated", d + 1); return NULL; }
        s[i] = t->sizes[d];
        st[i] = t->strides[d];
        perm[i] = d;
    }
    return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), NNR_VIEW_PERMUTE, t, perm, ndim);
}

nnr_tensor *nnr_transpose(const nnr_tensor *t, int dim0, int dim1)
{
    int a = wrap_dim("transpose", t, dim0, 0), b = a < 0 ? -1 : wrap_dim("transpose", t, dim1, 0);
    if (a < 0 || b < 0) return NULL;
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    memcpy(s, t->sizes, sizeof s);
    memcpy(st, t->strides, sizeof st);
    s[a] = t->sizes[b]; s[b] = t->sizes[a];
    st[a] = t->strides[b]; st[b] = t->strides[a];
    int64_t params[2] = {a, b};
    return finish_view(nnr_tensor_new_view(t, t->ndim, s, st, t->offset), NNR_VIEW_TRANSPOSE, t, params, 2);
}

nnr_tensor *nnr_narrow(const nnr_tensor *t, int dim, int64_t start, int64_t length)
{
    int d = wrap_dim("narrow", t, dim, 0);
    if (d < 0) return NULL;
    if (start < 0 || length < 0 || start + length > t->sizes[d]) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "narrow: elements %lld to %lld are out of range for dimension %d of size %lld (shape %s)",
                   (long long)start + 1, (long long)(start + length), d + 1, (long long)t->sizes[d], nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    int64_t s[NNR_MAX_DIMS];
    memcpy(s, t->sizes, sizeof s);
    s[d] = length;
    int64_t params[3] = {d, start, length};
    return finish_view(nnr_tensor_new_view(t, t->ndim, s, t->strides, t->offset + start * t->strides[d]), NNR_VIEW_NARROW, t, params, 3);
}

nnr_tensor *nnr_select(const nnr_tensor *t, int dim, int64_t index)
{
    if (t->ndim == 0) { nnr_errorf(NNR_ERR_INVALID, "select: cannot index a 0-dimensional tensor"); return NULL; }
    int d = wrap_dim("select", t, dim, 0);
    if (d < 0) return NULL;
    if (index < 0 || index >= t->sizes[d]) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "index %lld is out of range for dimension %d of size %lld (shape %s)", (long long)index + 1, d + 1,
                   (long long)t->sizes[d], nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) { s[k] = t->sizes[i]; st[k] = t->strides[i]; k++; }
    int64_t params[2] = {d, index};
    return finish_view(nnr_tensor_new_view(t, t->ndim - 1, s, st, t->offset + index * t->strides[d]), NNR_VIEW_SELECT, t, params, 2);
}

nnr_tensor *nnr_expand(const nnr_tensor *t, int ndim, const int64_t *sizes)
{
    if (ndim < t->ndim || ndim > NNR_MAX_DIMS) goto bad;
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    for (int i = ndim - 1, j = t->ndim - 1; i >= 0; i--, j--) {
        int64_t want = sizes[i];
        if (j >= 0) {
            if (want == -1) want = t->sizes[j];
            if (t->sizes[j] == want) { s[i] = want; st[i] = t->strides[j]; }
            else if (t->sizes[j] == 1 && want >= 0) { s[i] = want; st[i] = 0; }
            else goto bad;
        } else {
            if (want < 0) goto bad;
            s[i] = want; st[i] = 0;
        }
    }
    return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), NNR_VIEW_EXPAND, t, NULL, 0);
bad:;
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    nnr_errorf(NNR_ERR_INVALID, "expand: cannot expand shape %s to %s (only size-1 dimensions can grow)",
               nnr_shape_str(a, sizeof a, t->ndim, t->sizes), nnr_shape_str(b, sizeof b, ndim, sizes));
    return NULL;
}

nnr_tensor *nnr_squeeze(const nnr_tensor *t, int dim)
{
    int d = -1;
    if (dim != -1 || t->ndim == 0) {
        if (t->ndim == 0) return finish_view(nnr_tensor_new_view(t, 0, t->sizes, t->strides, t->offset), NNR_VIEW_RESHAPE, t, NULL, 0);
        d = wrap_dim("squeeze", t, dim, 0);
        if (d < 0) return NULL;
    }
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->sizes[i] == 1 && (d < 0 || d == i)) continue;
        s[k] = t->sizes[i]; st[k] = t->strides[i]; k++;
    }
    return finish_view(nnr_tensor_new_view(t, k, s, st, t->offset), NNR_VIEW_RESHAPE, t, NULL, 0);
}

nnr_tensor *nnr_unsqueeze(const nnr_tensor *t, int dim)
{
    if (t->ndim >= NNR_MAX_DIMS) { nnr_errorf(NNR_ERR_INVALID, "unsqueeze: a tensor has at most %d dimensions", NNR_MAX_DIMS); return NULL; }
    int d = wrap_dim("unsqueeze", t, dim, 1);
    if (d < 0) return NULL;
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    for (int i = 0, k = 0; i <= t->ndim; i++) {
        if (i == d) {
            s[i] = 1;
            st[i] = k < t->ndim ? t->strides[k] * t->sizes[k] : 1;
            continue;
        }
        s[i] = t->sizes[k]; st[i] = t->strides[k]; k++;
    }
    return finish_view(nnr_tensor_new_view(t, t->ndim + 1, s, st, t->offset), NNR_VIEW_RESHAPE, t, NULL, 0);
}

nnr_tensor *nnr_flatten(const nnr_tensor *t, int start_dim, int end_dim)
{
    if (t->ndim == 0) { int64_t one = 1; return nnr_reshape(t, 1, &one); }
    int a = wrap_dim("flatten", t, start_dim, 0), b = a < 0 ? -1 : wrap_dim("flatten", t, end_dim, 0);
    if (a < 0 || b < 0) return NULL;
    if (a > b) { nnr_errorf(NNR_ERR_INVALID, "flatten: start dimension %d comes after end dimension %d", a + 1, b + 1); return NULL; }
    int64_t s[NNR_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < a; i++) s[k++] = t->sizes[i];
    int64_t m = 1;
    for (int i = a; i <= b; i++) m *= t->sizes[i];
    s[k++] = m;
    for (int i = b + 1; i < t->ndim; i++) s[k++] = t->sizes[i];
    return nnr_reshape(t, k, s);
}

nnr_tensor *nnr_as_strided(const nnr_tensor *t, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset)
{
    if (nnr_should_record(1, &t)) {
        nnr_errorf(NNR_ERR_UNSUPPORTED, "as_strided: not differentiable; use it inside nnr.no_grad or on a detach()ed tensor");
        return NULL;
    }
    if (!nnr_check_sizes("as_strided", ndim, sizes)) return NULL;
    int64_t max_off = offset;
    for (int i = 0; i < ndim; i++) {
        if (strides[i] < 0) { nnr_errorf(NNR_ERR_INVALID, "as_strided: negative stride"); return NULL; }
        if (sizes[i] == 0) { max_off = -1; break; }
        max_off += (sizes[i] - 1) * strides[i];
    }
    int64_t cap = (int64_t)(t->storage->nbytes / nnr_dtype_bytes(t->dtype));
    if (offset < 0 || max_off >= cap) {
        nnr_errorf(NNR_ERR_INVALID, "as_strided: the view reaches element %lld of a storage of %lld elements", (long long)max_off + 1, (long long)cap);
        return NULL;
    }
    return nnr_tensor_new_view(t, ndim, sizes, strides, offset);
}

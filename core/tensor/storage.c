/* Storage and tensor structs: allocation (through the device's caching allocator), page-locked
 * host memory, views' structs, and reference counting. Views never copy; they share the storage.
 *
 * Small host tensors (what a Lua loop of tiny ops allocates) come as one
 * block holding the tensor struct, its storage and the data, recycled through
 * per-thread free lists: no malloc, no lock, one cache-friendly object. The
 * block is freed when its storage's last reference goes; the owning tensor's
 * struct simply stays inside it until then. View structs have their own list. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "tensor/internal.h"

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
    nnr_account_device(nnr_host_device(), (int64_t)nbytes);
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
    nnr_account_device(s->device, -(int64_t)s->nbytes);
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
    static atomic_uint_fast64_t next_uid = 1;
    atomic_init(&s->refcount, 1);
    atomic_init(&s->version, 0);
    s->uid = atomic_fetch_add(&next_uid, 1);
    atomic_init(&s->history, 0);
    s->device = device;
    s->nbytes = nbytes;
    atomic_init(&t->refcount, 1);
    t->dtype = dtype;
    t->ndim = ndim;
    t->device = device;
    t->offset = 0;
    t->storage = s;
    t->requires_grad = t->retains_grad = t->is_view = t->output_nr = 0;
    t->grad_fn = t->grad_acc = NULL;
    t->grad = NULL;
    t->autograd_release = NULL;
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
    size_t nbytes = (size_t)nnr_numel_of(ndim, sizes) * nnr_dtype_nbytes(dtype);
    nnr_tensor *t = NULL;
    nnr_storage *s = NULL;
    if (device == nnr_host_device() && nbytes <= SMALL_DATA) {
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
    if (!nnr_dtype_valid(dtype) || !nnr_check_sizes("pin_memory", ndim, sizes)) return nnr_tensor_alloc(dtype, ndim, sizes, nnr_host_device());
    size_t nbytes = (size_t)nnr_numel_of(ndim, sizes) * nnr_dtype_nbytes(dtype);
    nnr_plugin *plugin = NULL;
    void *data = nnr_alloc_pinned(nbytes, &plugin);
    if (!data) return nnr_tensor_alloc(dtype, ndim, sizes, nnr_host_device());
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
    return init_tensor(t, s, dtype, ndim, sizes, nnr_host_device(), nbytes);
}

int nnr_tensor_is_pinned(const nnr_tensor *t) { return t->storage->pinned != NULL; }

const char *nnr_pinned_provider(void)
{
    nnr_plugin *p = nnr_pinned_plugin();
    return p ? p->name : NULL;
}

nnr_tensor *nnr_pin_memory(const nnr_tensor *t)
{
    if (!nnr_device_is_host_memory(t->device)) {
        nnr_errorf(NNR_ERR_INVALID, "pin_memory: the tensor is on %s; only tensors in host memory can be pinned", nnr_device_name(t->device));
        return NULL;
    }
    if (t->storage->pinned) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    nnr_tensor *r = nnr_tensor_alloc_pinned(t->dtype, t->ndim, t->sizes);
    if (r && nnr_tensor_copy_into(r, t)) { nnr_tensor_release(r); r = NULL; }
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
    t->requires_grad = t->retains_grad = t->is_view = t->output_nr = 0;
    t->grad_fn = t->grad_acc = NULL;
    t->grad = NULL;
    t->autograd_release = NULL;
    atomic_fetch_add(&base->storage->refcount, 1);
    if (ndim > 0) memcpy(t->sizes, sizes, sizeof(int64_t) * (size_t)ndim);
    if (ndim > 0) memcpy(t->strides, strides, sizeof(int64_t) * (size_t)ndim);
    return t;
}

void nnr_tensor_retain(nnr_tensor *t) { if (t) atomic_fetch_add_explicit(&t->refcount, 1, memory_order_relaxed); }

void nnr_tensor_release(nnr_tensor *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refcount, 1, memory_order_acq_rel) != 1) return;
    if (t->autograd_release) t->autograd_release(t);
    nnr_storage *s = t->storage;
    int embedded = t->embedded;
    if (atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_acq_rel) == 1) storage_free(s);   /* frees an embedding block too */
    if (embedded == 2) free(t);
    else if (!embedded) tensor_struct_free(t);
}


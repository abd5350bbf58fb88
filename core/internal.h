/* Private to libnnr: the tensor layout, the device table and helpers shared
 * by the core's files. Nothing here crosses the plugin boundary. */
#ifndef NNR_INTERNAL_H
#define NNR_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "nnr/nnr.h"

/* everything below is private to libnnr: direct calls, no PLT */
#pragma GCC visibility push(hidden)

typedef struct nnr_device_entry {
    nnr_plugin *plugin;
    int local_index;
    char name[96];       /* "cpu", "cuda:0" */
    char label[128];     /* the plugin's description of the device */
} nnr_device_entry;

/* Refcounted memory on one device. */
typedef struct nnr_storage {
    atomic_int refcount;
    atomic_uint version;     /* bumped by every in-place write: saved tensors check it */
    int device;
    int small;           /* data lives inline in this block (small cpu tensors) */
    void *data;
    size_t nbytes;
    nnr_plugin *pinned;  /* host memory page-locked by this plugin (pin_memory) */
} nnr_storage;

struct nnr_tensor {
    atomic_int refcount;
    int32_t embedded;                /* this struct lives inside its storage's block */
    int32_t dtype;
    int32_t ndim;
    int32_t device;
    int64_t offset;                  /* in elements, into storage */
    int64_t sizes[NNR_MAX_DIMS];
    int64_t strides[NNR_MAX_DIMS];
    nnr_storage *storage;
    /* autograd (autograd.c) */
    int8_t requires_grad;            /* leaf: set by the user; non-leaf: has a grad_fn */
    int8_t retains_grad;             /* non-leaf whose .grad is kept (retain_grad) */
    int8_t is_view;                  /* made by a view op from a tensor that requires grad */
    struct nnr_node *grad_fn;        /* the node that made it (NULL for leaves) */
    struct nnr_node *grad_acc;       /* leaves: their AccumulateGrad node, created on demand */
    struct nnr_tensor *grad;
};

/* ---- autograd (autograd.c; the derivatives live in derivatives.c) ---- */
enum { NNR_NODE_MAX_SAVED = 4 };
typedef struct nnr_node nnr_node;
/* computes the gradients of the node's inputs from the gradient of its
 * output; grads[k] may stay NULL for an input that gets none */
typedef int (*nnr_backward_fn)(nnr_node *node, const nnr_tensor *grad, nnr_tensor **grads);

struct nnr_node {
    atomic_int refcount;
    const char *name;                /* "MulBackward" */
    nnr_backward_fn backward;        /* NULL for AccumulateGrad */
    unsigned visit;                  /* pass marker of the current backward */
    int n_saved;
    nnr_tensor *saved[NNR_NODE_MAX_SAVED];
    unsigned saved_version[NNR_NODE_MAX_SAVED];
    double f[4];
    int64_t i[NNR_MAX_DIMS];
    int released;                    /* saved tensors were freed after a backward */
    nnr_tensor *leaf;                /* AccumulateGrad: the leaf (weak; cleared when it dies) */
    nnr_tensor *retained;            /* retain_grad: the non-leaf output (weak) */
    /* scratch of one backward pass */
    int deps;
    nnr_tensor *pending;
    int n_inputs;
    struct nnr_node_input {
        nnr_node *node;              /* where this input's gradient goes; NULL: it needs none */
        int ndim, dtype, device;
        int64_t sizes[NNR_MAX_DIMS];
    } in[];
};

bool nnr_grad_mode(void);
/* true when recording is on and any input requires grad */
bool nnr_should_record(int n, const nnr_tensor *const *inputs);
/* a node for an op over inputs (edges and input shapes filled in) */
nnr_node *nnr_node_new(const char *name, nnr_backward_fn backward, int n, const nnr_tensor *const *inputs);
int nnr_node_save(nnr_node *node, const nnr_tensor *t);
/* t gets node as grad_fn (takes the caller's reference to node) */
void nnr_node_attach(nnr_tensor *t, nnr_node *node);
void nnr_node_release(nnr_node *node);
/* the saved tensor k, or NULL with an error if it was freed or modified in place */
const nnr_tensor *nnr_node_saved(nnr_node *node, int k);
/* in-place op on t: check it may be modified, bump its version */
int nnr_autograd_check_inplace(const char *op, nnr_tensor *t);
void nnr_autograd_release_tensor(nnr_tensor *t);

/* error.c */
int nnr_errorf(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "[2, 3]" into buf */
const char *nnr_shape_str(char *buf, size_t n, int ndim, const int64_t *sizes);
#define NNR_SHAPE_BUF 160

/* registry.c */
extern const nnr_host_api nnr_host;
int nnr_device_total(void);
const nnr_device_entry *nnr_device_get(int device);
nnr_plugin *nnr_extension_for(const nnr_op_call *call);
int nnr_interrupted_flag(void);
/* this thread ignores Ctrl-C (the loader's workers) */
void nnr_ignore_interrupts(int on);

/* allocator.c: caching allocator per device */
void *nnr_alloc_device(int device, size_t nbytes);
/* page-locked host memory from the first plugin that offers it (cached by size); NULL with *plugin
 * NULL when none does */
void *nnr_alloc_pinned(size_t nbytes, nnr_plugin **plugin);
nnr_plugin *nnr_pinned_plugin(void);    /* the first plugin offering page-locked memory, or NULL */
void nnr_free_pinned(nnr_plugin *plugin, void *ptr, size_t nbytes);
void nnr_drop_pinned_cache(void);
/* a host tensor in page-locked memory when a plugin offers it, else in ordinary memory */
nnr_tensor *nnr_tensor_alloc_pinned(int dtype, int ndim, const int64_t *sizes);
void nnr_free_device(int device, void *ptr, size_t nbytes);
void nnr_account(int64_t delta);

/* tensor.c */
size_t nnr_dtype_bytes(int dtype);
bool nnr_dtype_valid(int dtype);
bool nnr_dtype_is_float(int dtype);
nnr_tensor *nnr_tensor_alloc(int dtype, int ndim, const int64_t *sizes, int device);
void nnr_account_device(int device, int64_t delta);
extern _Thread_local int64_t nnr_tl_alloc_bytes;

/* ---- the profiler (profiler.c): off, it costs one predictable branch per op ---- */
enum { NNR_PROF_OP = 0, NNR_PROF_SCOPE = 1, NNR_PROF_AUTOGRAD = 2, NNR_PROF_LOADER = 3, NNR_PROF_WAIT = 4, NNR_PROF_ALLOC = 5 };
extern volatile int nnr_profiling;
unsigned nnr_prof_generation(void);     /* changes at each nnr_profiler_start */
void nnr_prof_charge_from_now(void);    /* this thread's next op is charged from here (ops.c) */
int64_t nnr_prof_now(void);
/* one finished event of this thread; name must outlive the profile (static strings, interned names) */
void nnr_prof_record(int kind, const char *name, int64_t start_ns, int64_t dur_ns, int64_t bytes);

/* off: this thread's tensors bypass the per-thread free lists (threads producing for others) */
void nnr_thread_pooling(int on);
nnr_tensor *nnr_tensor_new_view(const nnr_tensor *base, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset);
void nnr_contiguous_strides(int ndim, const int64_t *sizes, int64_t *strides);
bool nnr_check_sizes(const char *op, int ndim, const int64_t *sizes);
void nnr_tensor_desc_of(const nnr_tensor *t, nnr_tensor_desc *d);

/* ops.c: run one call on the backend owning device */
int nnr_dispatch(const char *opname, int device, nnr_op_call *call);

/* random.c */
void nnr_rng_take(uint64_t count, uint64_t *seed, uint64_t *offset);

#pragma GCC visibility pop
#endif

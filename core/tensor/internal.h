/* Private to libnnr: the tensor and storage layout, and what the tensor part (storage, views'
 * bookkeeping, dispatch with the cpu fallback, transfers without autograd) offers the parts above. */
#ifndef NNR_TENSOR_INTERNAL_H
#define NNR_TENSOR_INTERNAL_H

#include "nnr/tensor.h"
#include "base/internal.h"

#pragma GCC visibility push(hidden)

/* Refcounted memory on one device. */
typedef struct nnr_storage {
    atomic_int refcount;
    atomic_uint version;     /* bumped by every in-place write: saved tensors check it */
    atomic_uint history;     /* bumped when an in-place op gives a tensor of this storage a new history:
                              * a view made before then would read the new values with the old history */
    uint64_t uid;            /* unique in the process (never reused): with version, names the values */
    int device;
    int small;               /* data lives inline in this block (small host tensors) */
    void *data;
    size_t nbytes;
    nnr_plugin *pinned;      /* host memory page-locked by this plugin (pin_memory) */
} nnr_storage;

struct nnr_node;

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
    /* autograd's slots: the tensor part zeroes them and, when the tensor dies, calls autograd_release
     * if autograd set it; it never calls into autograd by name */
    int8_t requires_grad;            /* leaf: set by the user; non-leaf: has a grad_fn */
    int8_t retains_grad;             /* non-leaf whose .grad is kept (retain_grad) */
    int8_t is_view;                  /* made by a view op from a tensor that requires grad */
    int8_t output_nr;                /* which output of grad_fn it is (nodes with several outputs) */
    unsigned view_history;           /* is_view: the storage's history when the view was made */
    struct nnr_node *grad_fn;        /* the node that made it (NULL for leaves) */
    struct nnr_node *grad_acc;       /* leaves: their AccumulateGrad node, created on demand */
    struct nnr_tensor *grad;
    void (*autograd_release)(struct nnr_tensor *t);
};

/* ---- dtypes (tensor.c) ---- */
bool nnr_dtype_valid(int dtype);
bool nnr_dtype_is_float(int dtype);

/* ---- storage and tensor structs (storage.c) ---- */
nnr_tensor *nnr_tensor_alloc(int dtype, int ndim, const int64_t *sizes, int device);
/* a host tensor in page-locked memory when a plugin offers it, else in ordinary memory */
nnr_tensor *nnr_tensor_alloc_pinned(int dtype, int ndim, const int64_t *sizes);
/* a view of base's storage, recording nothing */
nnr_tensor *nnr_tensor_new_view(const nnr_tensor *base, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset);
/* off: this thread's tensors bypass the per-thread free lists (threads producing for others) */
void nnr_thread_pooling(int on);

/* ---- shapes (tensor.c) ---- */
void nnr_contiguous_strides(int ndim, const int64_t *sizes, int64_t *strides);
int64_t nnr_numel_of(int ndim, const int64_t *sizes);
bool nnr_check_sizes(const char *op, int ndim, const int64_t *sizes);
/* a number stored into a tensor of dtype (creation, fill_, one element) must fit it: an error, as
 * PyTorch's "cannot be converted without overflow", for an out-of-range or non-finite integer and a
 * finite number beyond a float type's range (casting a tensor may still wrap, as documented) */
int nnr_check_value_fits(const char *op, int dtype, double v);
/* the kernel's view of t: sizes, strides, the plugin's device number, the data address (inline: every
 * op call makes two or three) */
static inline void nnr_tensor_desc_of(const nnr_tensor *t, nnr_tensor_desc *d)
{
    d->struct_size = sizeof *d;
    d->dtype = t->dtype;
    d->ndim = t->ndim;
    d->device = nnr_device_get(t->device)->local_index;
    for (int i = 0; i < t->ndim; i++) { d->sizes[i] = t->sizes[i]; d->strides[i] = t->strides[i]; }
    d->data = (char *)t->storage->data + t->offset * (int64_t)nnr_dtype_nbytes(t->dtype);
}
/* t viewed with a broadcast shape (zero strides where it is expanded) */
void nnr_desc_broadcast(const nnr_tensor *t, int ndim, const int64_t *sizes, nnr_tensor_desc *d);

/* ---- dispatch (dispatch.c) ---- */
/* runs one call on the backend owning device: its own kernel, an extension's, or the host backend's */
int nnr_dispatch(const char *opname, int device, nnr_op_call *call);
/* the call of op on tensors (descriptors in din/dout), run; and whether the device's backend takes
 * it itself (no fallback) */
int nnr_run_tensors(const char *opname, int op, int device, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out,
                    const nnr_op_params *params);
int nnr_backend_takes(int device, int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out,
                      const nnr_op_params *params);

/* ---- elements (creation.c) ---- */
/* the element offset of a 0-based index, or an error naming op */
int nnr_tensor_element_offset(const char *op, const nnr_tensor *t, const int64_t *index, int64_t *off);
/* writes value at element offset off (no autograd checks: the op nnr_set makes them) */
int nnr_tensor_write_element(nnr_tensor *t, int64_t off, double value);

/* ---- transfers without autograd (transfer.c): what the autograd engine and the creation
 * functions use; the ops of the same names record and check in-place writes ---- */
/* src (broadcast to dst's shape, any dtype, any device) into dst */
int nnr_tensor_copy_into(nnr_tensor *dst, const nnr_tensor *src);
/* t in dtype on device: t itself (new reference) when nothing changes */
nnr_tensor *nnr_tensor_converted(const nnr_tensor *t, int dtype, int device);
int nnr_tensor_fill_raw(nnr_tensor *t, double value);
/* out = a + b, all of one shape, dtype and device */
int nnr_tensor_add_into(nnr_tensor *out, const nnr_tensor *a, const nnr_tensor *b);
/* each NaN of v[0..n) as the quiet NaN LuaJIT reads as a number (creation.c: why) */
void nnr_canonical_nans(double *v, int64_t n);

#pragma GCC visibility pop
#endif

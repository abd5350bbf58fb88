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
    int device;
    int small;           /* data lives inline in this block (small cpu tensors) */
    void *data;
    size_t nbytes;
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
};

/* error.c */
int nnr_errorf(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "[2, 3]" into buf */
const char *nnr_shape_str(char *buf, size_t n, int ndim, const int64_t *sizes);
#define NNR_SHAPE_BUF 160

/* registry.c */
extern const nnr_host_api nnr_host;
int nnr_device_total(void);
const nnr_device_entry *nnr_device_get(int device);
int nnr_interrupted_flag(void);

/* allocator.c: caching allocator per device */
void *nnr_alloc_device(int device, size_t nbytes);
void nnr_free_device(int device, void *ptr, size_t nbytes);
void nnr_account(int64_t delta);

/* tensor.c */
size_t nnr_dtype_bytes(int dtype);
bool nnr_dtype_valid(int dtype);
bool nnr_dtype_is_float(int dtype);
nnr_tensor *nnr_tensor_alloc(int dtype, int ndim, const int64_t *sizes, int device);
nnr_tensor *nnr_tensor_new_view(const nnr_tensor *base, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset);
void nnr_contiguous_strides(int ndim, const int64_t *sizes, int64_t *strides);
bool nnr_check_sizes(const char *op, int ndim, const int64_t *sizes);
void nnr_tensor_desc_of(const nnr_tensor *t, nnr_tensor_desc *d);

/* ops.c: run one call on the backend owning device */
int nnr_dispatch(const char *opname, int device, nnr_op_call *call);
const char *nnr_op_name(int op);

/* random.c */
void nnr_rng_take(uint64_t count, uint64_t *seed, uint64_t *offset);

#pragma GCC visibility pop
#endif

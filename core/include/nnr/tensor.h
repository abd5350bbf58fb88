/* Tensors (core/tensor/): sizes, strides and an offset over a refcounted storage on one device;
 * creation, element access, and the dispatcher's counters. */
#ifndef NNR_TENSOR_H
#define NNR_TENSOR_H

#include "nnr/base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
typedef struct nnr_tensor nnr_tensor;

/* --- lifetime and metadata --- */
void nnr_tensor_retain(nnr_tensor *t);
void nnr_tensor_release(nnr_tensor *t);
int nnr_tensor_dtype(const nnr_tensor *t);
int nnr_tensor_ndim(const nnr_tensor *t);
int64_t nnr_tensor_size(const nnr_tensor *t, int dim);
int64_t nnr_tensor_stride(const nnr_tensor *t, int dim);
int64_t nnr_tensor_offset(const nnr_tensor *t);
int64_t nnr_tensor_numel(const nnr_tensor *t);
int nnr_tensor_device(const nnr_tensor *t);
int nnr_tensor_is_contiguous(const nnr_tensor *t);
/* host address of element (0,...,0) when the device's memory is host memory, NULL otherwise */
void *nnr_tensor_data(const nnr_tensor *t);
/* 1 if both views share one storage */
int nnr_tensor_same_storage(const nnr_tensor *a, const nnr_tensor *b);
const char *nnr_dtype_name(int dtype);
int nnr_dtype_size(int dtype);
/* the dtype a binary op on a and b computes in (PyTorch's promotion) */
int nnr_promote_types(int a, int b);

/* --- creation and element access --- */
nnr_tensor *nnr_empty(int dtype, int ndim, const int64_t *sizes, int device);
nnr_tensor *nnr_full(int dtype, int ndim, const int64_t *sizes, double value, int device);
nnr_tensor *nnr_from_doubles(const double *values, int64_t n, int dtype, int ndim, const int64_t *sizes, int device);
/* contiguous copy of all elements as doubles (n must equal numel) */
int nnr_to_doubles(const nnr_tensor *t, double *out, int64_t n);
/* element at a 0-based index of t's ndim entries */
int nnr_get(const nnr_tensor *t, const int64_t *index, double *out);
int nnr_set(nnr_tensor *t, const int64_t *index, double value);
int nnr_item(const nnr_tensor *t, double *out);
nnr_tensor *nnr_arange(double start, double end, double step, int dtype, int device);
nnr_tensor *nnr_linspace(double start, double end, int64_t steps, int dtype, int device);
nnr_tensor *nnr_eye(int64_t n, int64_t m, int dtype, int device);

/* --- page-locked host memory (from the first plugin offering it, e.g. cuda), for asynchronous copies --- */
const char *nnr_pinned_provider(void);            /* the plugin's name, NULL when none offers it */
int nnr_tensor_is_pinned(const nnr_tensor *t);
/* t itself when pinned, else a pinned contiguous copy (ordinary memory when no plugin pins) */
nnr_tensor *nnr_pin_memory(const nnr_tensor *t);

/* --- the dispatcher: the op table (nnr/plugin.h) and what ran where --- */
/* an op's name ("op" for an unknown number), its category (0 unknown), and the next op number after
 * op in the table (0 to start; 0 after the last) */
const char *nnr_op_name(int op);
int nnr_op_category(int op);
int nnr_op_next(int op);
/* how many calls of op ran on the cpu fallback because a backend lacked it */
int64_t nnr_fallback_count(int op);
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_TENSOR_H */

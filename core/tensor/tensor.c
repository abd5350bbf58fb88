/* Tensor metadata: dtypes and PyTorch's promotion, shapes and strides, contiguity, the kernel's
 * descriptor of a tensor. */
#include <string.h>
#include "tensor/internal.h"

static const char *dtype_names[NNR_DTYPE_COUNT] = {"f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool"};

bool nnr_dtype_valid(int dtype) { return dtype >= 0 && dtype < NNR_DTYPE_COUNT; }
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
    for (int i = 0; i < ndim; i++) {
        if (sizes[i] < 0) {
            char b[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "%s: negative size in shape %s", op, nnr_shape_str(b, sizeof b, ndim, sizes));
            return false;
        }
    }
    int64_t bytes;   /* in the widest dtype (16 bytes), so that any dtype's byte count fits too */
    if (!nnr_size_product(ndim, sizes, 16, &bytes)) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: shape %s is too large (integer multiplication overflow in its byte count)", op,
                   nnr_shape_str(b, sizeof b, ndim, sizes));
        return false;
    }
    return true;
}

int64_t nnr_numel_of(int ndim, const int64_t *sizes)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= sizes[i];
    return n;
}

int nnr_tensor_dtype(const nnr_tensor *t) { return t->dtype; }
int nnr_tensor_ndim(const nnr_tensor *t) { return t->ndim; }
int64_t nnr_tensor_size(const nnr_tensor *t, int dim) { return (dim >= 0 && dim < t->ndim) ? t->sizes[dim] : -1; }
int64_t nnr_tensor_stride(const nnr_tensor *t, int dim) { return (dim >= 0 && dim < t->ndim) ? t->strides[dim] : -1; }
int64_t nnr_tensor_offset(const nnr_tensor *t) { return t->offset; }
int64_t nnr_tensor_numel(const nnr_tensor *t) { return nnr_numel_of(t->ndim, t->sizes); }
int nnr_tensor_device(const nnr_tensor *t) { return t->device; }
int nnr_tensor_same_storage(const nnr_tensor *a, const nnr_tensor *b) { return a->storage == b->storage; }

int nnr_tensor_is_contiguous(const nnr_tensor *t)
{
    for (int i = 0; i < t->ndim; i++)
        if (t->sizes[i] == 0) return 1;          /* no elements: any strides will do (as PyTorch) */
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
    if (!nnr_device_is_host_memory(t->device)) return NULL;
    return (char *)t->storage->data + t->offset * (int64_t)nnr_dtype_nbytes(t->dtype);
}

void nnr_desc_broadcast(const nnr_tensor *t, int ndim, const int64_t *sizes, nnr_tensor_desc *d)
{
    nnr_tensor_desc_of(t, d);
    d->ndim = ndim;
    for (int i = ndim - 1, j = t->ndim - 1; i >= 0; i--, j--) {
        d->sizes[i] = sizes[i];
        d->strides[i] = (j >= 0 && t->sizes[j] == sizes[i]) ? t->strides[j] : 0;
    }
}

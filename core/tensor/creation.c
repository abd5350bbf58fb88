/* New tensors: empty, filled, from Lua's numbers, ranges and the identity; and reading or writing
 * one element. Nothing here records for autograd: a new tensor is a leaf. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "tensor/internal.h"

int nnr_check_value_fits(const char *op, int dtype, double v)
{
    double lo, hi;
    switch (dtype) {
    case NNR_I8: lo = -128; hi = 127; break;
    case NNR_U8: lo = 0; hi = 255; break;
    case NNR_I32: lo = -2147483648.0; hi = 2147483647.0; break;
    case NNR_I64: lo = -9223372036854775808.0; hi = 9223372036854775807.0; break;
    case NNR_F16: lo = -65504; hi = 65504; break;
    case NNR_BF16: lo = -3.3895313892515355e38; hi = 3.3895313892515355e38; break;
    case NNR_F32: lo = -3.4028234663852886e38; hi = 3.4028234663852886e38; break;
    default: return NNR_OK;   /* f64 holds any number; bool takes any as true or false */
    }
    bool is_int = dtype == NNR_I8 || dtype == NNR_U8 || dtype == NNR_I32 || dtype == NNR_I64;
    if (!is_int && !isfinite(v)) return NNR_OK;          /* nan and inf are float values */
    double w = is_int ? trunc(v) : v;
    /* the float types round to their largest value up to half an ulp beyond it; i64's top is 2^63 exclusive */
    bool fits = dtype == NNR_I64 ? (w >= lo && w < 9223372036854775808.0)
              : dtype == NNR_F16 ? fabs(w) < 65520.0
              : dtype == NNR_BF16 || dtype == NNR_F32 ? fabs(w) <= hi * (1 + 0x1p-25)
              : (w >= lo && w <= hi);
    if (fits) return NNR_OK;
    char value[40];
    if (isnan(v)) snprintf(value, sizeof value, "nan");
    else snprintf(value, sizeof value, "%.17g", v);
    if (dtype == NNR_I64)
        return nnr_errorf(NNR_ERR_INVALID, "%s: value %s cannot be converted to i64 without overflow (i64 holds whole numbers -2^63 to 2^63 - 1)", op, value);
    return nnr_errorf(NNR_ERR_INVALID, "%s: value %s cannot be converted to %s without overflow (%s holds %s%.17g to %.17g)", op, value,
                      nnr_dtype_name(dtype), nnr_dtype_name(dtype), is_int ? "whole numbers " : "", lo, hi);
}

nnr_tensor *nnr_empty(int dtype, int ndim, const int64_t *sizes, int device)
{
    return nnr_tensor_alloc(dtype, ndim, sizes, device);
}

nnr_tensor *nnr_full(int dtype, int ndim, const int64_t *sizes, double value, int device)
{
    if (nnr_dtype_valid(dtype) && nnr_check_value_fits("full", dtype, value)) return NULL;
    nnr_tensor *t = nnr_tensor_alloc(dtype, ndim, sizes, device);
    if (t && nnr_tensor_fill_raw(t, value) != NNR_OK) { nnr_tensor_release(t); return NULL; }
    return t;
}

nnr_tensor *nnr_from_doubles(const double *values, int64_t n, int dtype, int ndim, const int64_t *sizes, int device)
{
    if (!nnr_check_sizes("tensor", ndim, sizes)) return NULL;
    if (nnr_numel_of(ndim, sizes) != n) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "tensor: %lld values given for shape %s", (long long)n, nnr_shape_str(b, sizeof b, ndim, sizes));
        return NULL;
    }
    if (!nnr_dtype_valid(dtype)) { nnr_errorf(NNR_ERR_INVALID, "tensor: unknown dtype %d", dtype); return NULL; }
    /* integers out of range are refused; floats round as IEEE does (to inf beyond the range), as torch.tensor */
    for (int64_t i = 0; i < n && !nnr_dtype_is_float(dtype); i++) {
        if (nnr_check_value_fits("tensor", dtype, values[i])) {
            char msg[600];
            snprintf(msg, sizeof msg, "%s", nnr_last_error());
            if (n > 1) nnr_errorf(NNR_ERR_INVALID, "%s (element %lld)", msg, (long long)i + 1);
            return NULL;
        }
    }
    nnr_tensor *host = nnr_tensor_alloc(NNR_F64, ndim, sizes, nnr_host_device());
    if (!host) return NULL;
    if (n) memcpy(host->storage->data, values, (size_t)n * sizeof(double));
    nnr_tensor *t = nnr_tensor_converted(host, dtype, device);
    nnr_tensor_release(host);
    return t;
}

/* Every NaN among the doubles handed to Lua as the one quiet NaN. LuaJIT keeps its other values (nil,
 * booleans, pointers to strings and tables) in the payloads of negative NaNs, and reads a double from
 * FFI memory without looking at it: a tensor's NaN with such a payload (a file's, or a library's all-ones
 * NaN, widened from f32) would reach the script as nil, or as a pointer it dereferences. */
void nnr_canonical_nans(double *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (v[i] != v[i]) v[i] = NAN;
}

int nnr_to_doubles(const nnr_tensor *t, double *out, int64_t n)
{
    if (n != nnr_tensor_numel(t))
        return nnr_errorf(NNR_ERR_INVALID, "totable: buffer of %lld for %lld elements", (long long)n, (long long)nnr_tensor_numel(t));
    nnr_tensor *h = nnr_tensor_alloc(NNR_F64, t->ndim, t->sizes, nnr_host_device());
    int st = h ? nnr_tensor_copy_into(h, t) : nnr_last_status();
    if (st == NNR_OK && n) memcpy(out, nnr_tensor_data(h), (size_t)n * sizeof(double));
    if (st == NNR_OK) nnr_canonical_nans(out, n);
    nnr_tensor_release(h);
    return st;
}

int nnr_tensor_element_offset(const char *op, const nnr_tensor *t, const int64_t *index, int64_t *off)
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
    int st = nnr_tensor_element_offset("get", t, index, &off);
    if (st) return st;
    size_t es = nnr_dtype_nbytes(t->dtype);
    const nnr_device_entry *d = nnr_device_get(t->device);
    char *at = (char *)t->storage->data + off * (int64_t)es;
    if (d->host_memory) { *out = nnr_load_f64(t->dtype, at); nnr_canonical_nans(out, 1); return NNR_OK; }
    unsigned char buf[8];
    st = d->plugin->copy(d->plugin, d->local_index, NNR_COPY_DEVICE_TO_HOST, buf, at, es);
    if (st) return st;
    *out = nnr_load_f64(t->dtype, buf);
    nnr_canonical_nans(out, 1);
    return NNR_OK;
}

int nnr_tensor_write_element(nnr_tensor *t, int64_t off, double value)
{
    size_t es = nnr_dtype_nbytes(t->dtype);
    const nnr_device_entry *d = nnr_device_get(t->device);
    char *at = (char *)t->storage->data + off * (int64_t)es;
    if (d->host_memory) { nnr_store_f64(t->dtype, at, value); return NNR_OK; }
    unsigned char buf[8];
    nnr_store_f64(t->dtype, buf, value);
    return d->plugin->copy(d->plugin, d->local_index, NNR_COPY_HOST_TO_DEVICE, at, buf, es);
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
    if (n > 0 && (nnr_check_value_fits(op, dtype, start) || nnr_check_value_fits(op, dtype, start + step * (double)(n - 1)))) return NULL;
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
    if (!isfinite(start) || !isfinite(end) || !isfinite(step)) {
        nnr_errorf(NNR_ERR_INVALID, "arange: start, end and step must be finite (got %g, %g, %g)", start, end, step);
        return NULL;
    }
    if ((end - start) / step < 0) {
        nnr_errorf(NNR_ERR_INVALID, "arange: the step %g goes away from the end (start %g, end %g): the bounds are inconsistent with "
                   "the step's sign", step, start, end);
        return NULL;
    }
    double count = ceil((end - start) / step);
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
    int st = diag ? nnr_tensor_fill_raw(diag, 1.0) : nnr_last_status();
    nnr_tensor_release(diag);
    if (st) { nnr_tensor_release(t); return NULL; }
    return t;
}


/* gather and index_select. Indices are int64 and 0-based here; an index out
 * of range stops the kernel with an error that names it (1-based, as the Lua
 * user wrote it). */
#include <string.h>
#include "kernels.h"

/* gather over contiguous operands whose sizes agree off dim, as [outer, N, inner] -> [outer, count,
 * inner]: out[o, j, i] = in[o, index[o, j, i], i], the indices checked first, the outer rows over the
 * pool (the general walk below costs tens of ns an element: a loss's pick of [256, 10] paid it) */
typedef struct gather_job { const char *in; char *out; const int64_t *ix; int64_t count, N, inner, es; } gather_job;

static void gather_rows(void *arg, int64_t begin, int64_t end)
{
    const gather_job *g = arg;
    int64_t m = g->count * g->inner;
    for (int64_t o = begin; o < end; o++) {
        const int64_t *ix = g->ix + o * m;
        const char *src = g->in + o * g->N * g->inner * g->es;
        char *dst = g->out + o * m * g->es;
        if (g->inner == 1 && g->es == 4) for (int64_t t = 0; t < m; t++) ((uint32_t *)dst)[t] = ((const uint32_t *)src)[ix[t]];
        else if (g->inner == 1 && g->es == 8) for (int64_t t = 0; t < m; t++) ((uint64_t *)dst)[t] = ((const uint64_t *)src)[ix[t]];
        else
            for (int64_t t = 0; t < m; t++) {
                int64_t i = g->inner == 1 ? 0 : t % g->inner;
                memcpy(dst + t * g->es, src + (ix[t] * g->inner + i) * g->es, (size_t)g->es);
            }
    }
}

static int gather_fast(const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *ix = call->inputs[1], *out = call->outputs[0];
    int dim = (int)call->params->i[0], nd = out->ndim;
    if (nd == 0 || in->ndim != nd || ix->ndim != nd || !nnr_desc_is_contiguous(in) || !nnr_desc_is_contiguous(ix) || !nnr_desc_is_contiguous(out))
        return -1;
    for (int d = 0; d < nd; d++) if (ix->sizes[d] != out->sizes[d] || (d != dim && in->sizes[d] != out->sizes[d])) return -1;
    int64_t n = nnr_desc_numel(out), N = in->sizes[dim];
    const int64_t *v = ix->data;
    for (int64_t k = 0; k < n; k++)
        if (v[k] < 0 || v[k] >= N)
            return cpu_error(NNR_ERR_INVALID, "gather: index %lld is out of range [1, %lld] for dimension %d", (long long)v[k] + 1, (long long)N, dim + 1);
    if (n == 0) return NNR_OK;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < dim; d++) outer *= out->sizes[d];
    for (int d = dim + 1; d < nd; d++) inner *= out->sizes[d];
    gather_job g = {in->data, out->data, v, out->sizes[dim], N, inner, (int64_t)nnr_dtype_nbytes(in->dtype)};
    int64_t per = g.count * inner;
    return cpu_parallel_for(outer, per >= 16384 ? 1 : (16384 + per - 1) / per, gather_rows, &g);
}

int cpu_gather(const nnr_op_call *call)
{
    /* out[i...] = in[i... with dim replaced by index[i...]]; out and index share a shape */
    int fast = gather_fast(call);
    if (fast >= 0) return fast;
    const nnr_tensor_desc *in = call->inputs[0], *ix = call->inputs[1], *out = call->outputs[0];
    int dim = (int)call->params->i[0], nd = out->ndim;
    int64_t es = (int64_t)nnr_dtype_nbytes(in->dtype);
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= out->sizes[d];
    int64_t idx[NNR_MAX_DIMS] = {0};
    for (int64_t k = 0; k < n; k++) {
        int64_t io = 0, xo = 0, oo = 0;
        for (int d = 0; d < nd; d++) { xo += idx[d] * ix->strides[d]; oo += idx[d] * out->strides[d]; }
        int64_t j = ((const int64_t *)ix->data)[xo];
        int64_t limit = in->ndim ? in->sizes[dim] : 1;
        if (j < 0 || j >= limit)
            return cpu_error(NNR_ERR_INVALID, "gather: index %lld is out of range [1, %lld] for dimension %d", (long long)j + 1,
                             (long long)limit, dim + 1);
        for (int d = 0; d < nd; d++) io += (d == dim ? j : idx[d]) * in->strides[d];
        memcpy((char *)out->data + oo * es, (const char *)in->data + io * es, (size_t)es);
        for (int d = nd - 1; d >= 0; d--) { if (++idx[d] < out->sizes[d]) break; idx[d] = 0; }
    }
    return NNR_OK;
}

/* whole rows of contiguous tensors (batching a dataset: x:index_select(1, idx)): one
 * memcpy per row, rows spread over the pool */
typedef struct rows_job { const char *in; char *out; const int64_t *ix; int64_t ixs, row; } rows_job;

static void copy_rows(void *arg, int64_t begin, int64_t end)
{
    const rows_job *j = arg;
    for (int64_t r = begin; r < end; r++) memcpy(j->out + r * j->row, j->in + j->ix[r * j->ixs] * j->row, (size_t)j->row);
}

/* any dim of contiguous tensors, as [outer, N, inner] -> [outer, count, inner]: out[o, j, :] =
 * in[o, index[j], :], an element loop when a slice is a few bytes (a column pick: inner 1), a memcpy
 * otherwise; the outer rows spread over the pool. (A strided copy per index took 88 ms to pick
 * 2048 columns of [2048, 2048].) */
typedef struct slices_job { const char *in; char *out; const int64_t *ix; int64_t ixs, count, N, inner, es; } slices_job;

static void copy_slices(void *arg, int64_t begin, int64_t end)
{
    const slices_job *j = arg;
    int64_t slice = j->inner * j->es;
    for (int64_t o = begin; o < end; o++) {
        const char *src = j->in + o * j->N * slice;
        char *dst = j->out + o * j->count * slice;
        if (slice == 4)
            for (int64_t k = 0; k < j->count; k++) ((uint32_t *)dst)[k] = ((const uint32_t *)src)[j->ix[k * j->ixs]];
        else if (slice == 8)
            for (int64_t k = 0; k < j->count; k++) ((uint64_t *)dst)[k] = ((const uint64_t *)src)[j->ix[k * j->ixs]];
        else
            for (int64_t k = 0; k < j->count; k++) memcpy(dst + k * slice, src + j->ix[k * j->ixs] * slice, (size_t)slice);
    }
}

int cpu_index_select(const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *ix = call->inputs[1], *out = call->outputs[0];
    int dim = (int)call->params->i[0];
    int64_t count = ix->sizes[0];
    int64_t es = (int64_t)nnr_dtype_nbytes(in->dtype);
    for (int64_t j = 0; j < count; j++) {
        int64_t v = ((const int64_t *)ix->data)[j * ix->strides[0]];
        if (v < 0 || v >= in->sizes[dim])
            return cpu_error(NNR_ERR_INVALID, "index_select: index %lld is out of range [1, %lld] for dimension %d", (long long)v + 1,
                             (long long)in->sizes[dim], dim + 1);
    }
    if (dim == 0 && nnr_desc_is_contiguous(in) && nnr_desc_is_contiguous(out)) {
        int64_t row = es;
        for (int d = 1; d < in->ndim; d++) row *= in->sizes[d];
        if (row == 0) return NNR_OK;       /* rows of no elements: nothing to copy (and no division by 0) */
        rows_job j = {in->data, out->data, ix->data, ix->strides[0], row};
        return cpu_parallel_for(count, row >= 65536 ? 1 : (65536 + row - 1) / row, copy_rows, &j);
    }
    if (dim > 0 && nnr_desc_is_contiguous(in) && nnr_desc_is_contiguous(out)) {
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; d++) outer *= in->sizes[d];
        for (int d = dim + 1; d < in->ndim; d++) inner *= in->sizes[d];
        if (outer == 0 || inner == 0 || count == 0) return NNR_OK;
        slices_job j = {in->data, out->data, ix->data, ix->strides[0], count, in->sizes[dim], inner, es};
        int64_t per = count * inner * es;
        return cpu_parallel_for(outer, per >= 65536 ? 1 : (65536 + per - 1) / per, copy_slices, &j);
    }
    for (int64_t j = 0; j < count; j++) {
        int64_t v = ((const int64_t *)ix->data)[j * ix->strides[0]];
        if (v < 0 || v >= in->sizes[dim])
            return cpu_error(NNR_ERR_INVALID, "index_select: index %lld is out of range [1, %lld] for dimension %d", (long long)v + 1,
                             (long long)in->sizes[dim], dim + 1);
        /* copy the slice in.select(dim, v) to out.select(dim, j) */
        nnr_tensor_desc src = *in, dst = *out;
        src.data = (char *)in->data + v * in->strides[dim] * es;
        dst.data = (char *)out->data + j * out->strides[dim] * es;
        src.sizes[dim] = dst.sizes[dim] = 1;
        const nnr_tensor_desc *ins[1] = {&src};
        const nnr_tensor_desc *outs[1] = {&dst};
        nnr_op_call c = {.struct_size = sizeof c, .op = NNR_OP_COPY, .n_inputs = 1, .n_outputs = 1, .inputs = {ins[0]}, .outputs = {outs[0]}};
        int st = cpu_copy(&c);
        if (st) return st;
    }
    return NNR_OK;
}

/* out[.. index[j..] ..] += src[j..] along dim; index and src share a shape */
int cpu_scatter_add(const nnr_op_call *call)
{
    const nnr_tensor_desc *ix = call->inputs[0], *src = call->inputs[1], *out = call->outputs[0];
    int dim = (int)call->params->i[0], nd = src->ndim;
    int64_t es = (int64_t)nnr_dtype_nbytes(out->dtype);
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n *= src->sizes[d];
    int64_t idx[NNR_MAX_DIMS] = {0};
    for (int64_t k = 0; k < n; k++) {
        int64_t xo = 0, so = 0, oo = 0;
        for (int d = 0; d < nd; d++) { xo += idx[d] * ix->strides[d]; so += idx[d] * src->strides[d]; }
        int64_t j = ((const int64_t *)ix->data)[xo];
        if (j < 0 || j >= out->sizes[dim])
            return cpu_error(NNR_ERR_INVALID, "scatter_add: index %lld is out of range [1, %lld] for dimension %d", (long long)j + 1,
                             (long long)out->sizes[dim], dim + 1);
        for (int d = 0; d < nd; d++) oo += (d == dim ? j : idx[d]) * out->strides[d];
        char *op = (char *)out->data + oo * es;
        double v = nnr_load_f64(out->dtype, op) + nnr_load_f64(src->dtype, (const char *)src->data + so * es);
        nnr_store_f64(out->dtype, op, v);
        for (int d = nd - 1; d >= 0; d--) { if (++idx[d] < src->sizes[d]) break; idx[d] = 0; }
    }
    return NNR_OK;
}

/* index_add along dim 0 of contiguous operands of one float dtype (an embedding's backward): each row
 * of src added to its row of out, the columns over the threads; every element still gets its rows in
 * index order, so the sums do not depend on the thread count */
typedef struct rows_add_job {
    const int64_t *ix;
    int64_t count, ixs, inner;
    char *out;
    const char *src;
    int f32;
} rows_add_job;

CPU_MULTI(void, add_f32, (float *restrict o, const float *restrict a, int64_t n), (o, a, n)) { for (int64_t i = 0; i < n; i++) o[i] += a[i]; }
CPU_MULTI(void, add_f64, (double *restrict o, const double *restrict a, int64_t n), (o, a, n)) { for (int64_t i = 0; i < n; i++) o[i] += a[i]; }

enum { ROWS_ADD_COLS = 256 };

static void rows_add(void *arg, int64_t b, int64_t e)
{
    const rows_add_job *r = arg;
    int64_t c0 = b * ROWS_ADD_COLS, c1 = e * ROWS_ADD_COLS < r->inner ? e * ROWS_ADD_COLS : r->inner;
    size_t es = r->f32 ? 4 : 8;
    for (int64_t j = 0; j < r->count; j++) {
        int64_t v = r->ix[j * r->ixs];
        char *o = r->out + ((size_t)(v * r->inner + c0)) * es;
        const char *a = r->src + ((size_t)(j * r->inner + c0)) * es;
        if (r->f32) add_f32((float *)o, (const float *)a, c1 - c0);
        else add_f64((double *)o, (const double *)a, c1 - c0);
    }
}

/* out.select(dim, index[j]) += src.select(dim, j) */
int cpu_index_add(const nnr_op_call *call)
{
    const nnr_tensor_desc *ix = call->inputs[0], *src = call->inputs[1], *out = call->outputs[0];
    int dim = (int)call->params->i[0], nd = out->ndim;
    int64_t es = (int64_t)nnr_dtype_nbytes(out->dtype);
    int64_t inner = 1;
    for (int d = 0; d < nd; d++) if (d != dim) inner *= out->sizes[d];
    for (int64_t j = 0; j < ix->sizes[0]; j++) {       /* every index checked before anything is added */
        int64_t v = ((const int64_t *)ix->data)[j * ix->strides[0]];
        if (v < 0 || v >= out->sizes[dim])
            return cpu_error(NNR_ERR_INVALID, "index_add: index %lld is out of range [1, %lld] for dimension %d", (long long)v + 1,
                             (long long)out->sizes[dim], dim + 1);
    }
    if (dim == 0 && src->dtype == out->dtype && (out->dtype == NNR_F32 || out->dtype == NNR_F64) && nnr_desc_is_contiguous(out) &&
        nnr_desc_is_contiguous(src) && inner > 0) {
        rows_add_job r = {ix->data, ix->sizes[0], ix->strides[0], inner, out->data, src->data, out->dtype == NNR_F32};
        int64_t blocks = (inner + ROWS_ADD_COLS - 1) / ROWS_ADD_COLS;
        if ((double)r.count * (double)inner < 65536.0) { rows_add(&r, 0, blocks); return NNR_OK; }
        return cpu_parallel_for(blocks, 1, rows_add, &r);
    }
    for (int64_t j = 0; j < ix->sizes[0]; j++) {
        int64_t v = ((const int64_t *)ix->data)[j * ix->strides[0]];
        int64_t idx[NNR_MAX_DIMS] = {0};
        for (int64_t k = 0; k < inner; k++) {
            int64_t so = j * src->strides[dim], oo = v * out->strides[dim];
            for (int d = 0; d < nd; d++) if (d != dim) { so += idx[d] * src->strides[d]; oo += idx[d] * out->strides[d]; }
            char *op = (char *)out->data + oo * es;
            nnr_store_f64(out->dtype, op, nnr_load_f64(out->dtype, op) + nnr_load_f64(src->dtype, (const char *)src->data + so * es));
            for (int d = nd - 1; d >= 0; d--) { if (d == dim) continue; if (++idx[d] < out->sizes[d]) break; idx[d] = 0; }
        }
    }
    return NNR_OK;
}

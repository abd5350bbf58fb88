/* Sorting: sort (stable, either direction) and topk along a dim, values and 0-based I64 indices;
 * what they record and their derivative: the gradient of the values scattered back through the
 * indices (scatter_add, itself recorded when a backward records, so that it can be differentiated
 * again). The indices carry no gradient. */
#include <string.h>
#include "ops/internal.h"

static int sort_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *index = nnr_node_saved(node, 0);
    if (!index) return nnr_last_status();
    if (node->in[0].ndim == 0) {               /* one element: its gradient as it is */
        grads[0] = nnr_clone(g);
        return grads[0] ? NNR_OK : nnr_last_status();
    }
    nnr_tensor *z = nnr_full(g->dtype, node->in[0].ndim, node->in[0].sizes, 0.0, g->device);
    if (!z) return nnr_last_status();
    grads[0] = nnr_scatter_add(z, (int)node->i[0], index, g);
    nnr_tensor_release(z);
    return grads[0] ? NNR_OK : nnr_last_status();
}

static int record_sort(const char *name, const nnr_tensor *x, int dim, const nnr_tensor *indices, nnr_tensor *values)
{
    nnr_node *node = nnr_node_new(name, sort_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->double_diff = 1;                     /* scatter_add and clone: recorded ops */
    node->i[0] = dim;
    int st = nnr_save(node, indices, 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(values, node, NNR_OK);
}

/* ---------------- front ends ---------------- */

/* the descriptor of t with dim d moved last (a 0-d tensor as one element of one row) */
static void desc_dim_last(const nnr_tensor *t, int d, nnr_tensor_desc *out)
{
    nnr_tensor_desc_of(t, out);
    if (t->ndim == 0) { out->ndim = 1; out->sizes[0] = 1; out->strides[0] = 1; return; }
    int last = t->ndim - 1;
    int64_t size = out->sizes[d], stride = out->strides[d];
    for (int k = d; k < last; k++) { out->sizes[k] = out->sizes[k + 1]; out->strides[k] = out->strides[k + 1]; }
    out->sizes[last] = size;
    out->strides[last] = stride;
}

static int sort_dim(const char *op, const nnr_tensor *a, int dim, int *d)
{
    int n = a->ndim ? a->ndim : 1;
    *d = dim < 0 ? dim + n : dim;
    if (*d < 0 || *d >= n) {
        char b[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", op, dim + 1,
                          nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
    }
    if (a->ndim == 0) *d = 0;
    return NNR_OK;
}

/* sort (k < 0) or topk (k >= 0 along dim d) into values and indices of the given sizes */
static nnr_tensor *run_sort(const char *op, const nnr_tensor *a, int d, int64_t k, int flag, nnr_tensor **indices)
{
    *indices = NULL;
    int64_t sizes[NNR_MAX_DIMS];
    memcpy(sizes, a->sizes, sizeof(int64_t) * (size_t)a->ndim);
    if (k >= 0 && a->ndim > 0) sizes[d] = k;
    nnr_tensor *v = nnr_tensor_alloc(a->dtype, a->ndim, sizes, a->device);
    nnr_tensor *ix = v ? nnr_tensor_alloc(NNR_I64, a->ndim, sizes, a->device) : NULL;
    if (!ix) { nnr_tensor_release(v); return NULL; }
    nnr_tensor_desc din, dv, dx;
    desc_dim_last(a, d, &din);
    desc_dim_last(v, d, &dv);
    desc_dim_last(ix, d, &dx);
    nnr_op_params p = {.struct_size = sizeof p};
    if (k >= 0) { p.i[0] = k; p.i[1] = flag; } else p.i[0] = flag;
    nnr_op_call call = {.struct_size = sizeof call, .op = k >= 0 ? NNR_OP_TOPK : NNR_OP_SORT, .n_inputs = 1, .n_outputs = 2,
                        .inputs = {&din}, .outputs = {&dv, &dx}, .params = &p};
    if (nnr_dispatch(op, a->device, &call)) { nnr_tensor_release(v); nnr_tensor_release(ix); return NULL; }
    if (nnr_should_record(1, &a)) {
        NNR_RECORD(v, record_sort(k >= 0 ? "TopkBackward" : "SortBackward", a, d, ix, v));
        if (!v) { nnr_tensor_release(ix); return NULL; }
    }
    *indices = ix;
    return v;
}

nnr_tensor *nnr_sort(const nnr_tensor *a, int dim, int descending, nnr_tensor **indices)
{
    int d;
    *indices = NULL;
    if (sort_dim("sort", a, dim, &d)) return NULL;
    return run_sort("sort", a, d, -1, descending != 0, indices);
}

nnr_tensor *nnr_topk(const nnr_tensor *a, int64_t k, int dim, int largest, nnr_tensor **indices)
{
    int d;
    *indices = NULL;
    if (sort_dim("topk", a, dim, &d)) return NULL;
    int64_t n = a->ndim ? a->sizes[d] : 1;
    if (k < 0 || k > n || (a->ndim == 0 && k != 1)) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "topk: k = %lld is out of range for dimension %d of a tensor of shape %s (expected 0..%lld)", (long long)k,
                   d + 1, nnr_shape_str(b, sizeof b, a->ndim, a->sizes), (long long)n);
        return NULL;
    }
    return run_sort("topk", a, d, k, largest != 0, indices);
}

/* Joining and indexing: cat, gather, index_select, scatter_add, index_add (indices 0-based here,
 * checked by the kernels); what they record and their derivatives, each the other's adjoint. */
#include <string.h>
#include "ops/internal.h"

static int cat_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int dim = (int)node->i[0];
    int64_t at = 0;
    for (int k = 0; k < node->n_inputs; k++) {
        int64_t len = node->in[k].sizes[dim];
        if (node->in[k].node) {
            nnr_tensor *part = nnr_narrow(g, dim, at, len);
            if (!part) return nnr_last_status();
            grads[k] = nnr_contiguous(part);
            nnr_tensor_release(part);
            if (!grads[k]) return nnr_last_status();
        }
        at += len;
    }
    return NNR_OK;
}

static int record_cat(int n, nnr_tensor *const *ts, int dim, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new("CatBackward", cat_backward, n, (const nnr_tensor *const *)ts);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = dim;
    return nnr_node_finish(out, node, NNR_OK);
}



static int index_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *index = nnr_node_saved(node, 0);
    if (!index) return nnr_last_status();
    int dim = (int)node->i[1];
    int kind = (int)node->i[0];
    if (kind == 0 || kind == 1) {              /* gather / index_select: scatter the gradient back */
        nnr_tensor *z = nnr_full(g->dtype, node->in[0].ndim, node->in[0].sizes, 0.0, g->device);
        if (!z) return nnr_last_status();
        grads[0] = kind == 0 ? nnr_scatter_add(z, dim, index, g) : nnr_index_add(z, dim, index, g);
        nnr_tensor_release(z);
        return grads[0] ? NNR_OK : nnr_last_status();
    }
    /* scatter_add / index_add: identity for the target, gather/index_select for src (input 2) */
    if (node->in[0].node && !(grads[0] = nnr_clone(g))) return nnr_last_status();
    if (node->in[2].node) {
        grads[2] = kind == 2 ? nnr_gather(g, dim, index) : nnr_index_select(g, dim, index);
        if (!grads[2]) return nnr_last_status();
    }
    return NNR_OK;
}

static int record_index(int kind, const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src, nnr_tensor *out)
{
    static const char *names[] = {"GatherBackward", "IndexSelectBackward", "ScatterAddBackward", "IndexAddBackward"};
    const nnr_tensor *in[3] = {a, index, src};
    nnr_node *node = nnr_node_new(names[kind], index_backward, src ? 3 : 2, in);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = kind;
    node->i[1] = dim;
    int st = nnr_save(node, index, 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

/* ---------------- front ends ---------------- */

nnr_tensor *nnr_cat(int n, nnr_tensor *const *ts, int dim)
{
    if (n <= 0) { nnr_errorf(NNR_ERR_INVALID, "cat: expected a non-empty list of tensors"); return NULL; }
    const nnr_tensor *first = ts[0];
    int d = dim < 0 ? dim + first->ndim : dim;
    if (first->ndim == 0 || d < 0 || d >= first->ndim) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "cat: dimension %d is out of range for tensors of shape %s", dim + 1, nnr_shape_str(b, sizeof b, first->ndim, first->sizes));
        return NULL;
    }
    int dt = first->dtype;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const nnr_tensor *t = ts[i];
        if (nnr_same_device("cat", first, t)) return NULL;
        int ok = t->ndim == first->ndim;
        for (int k = 0; ok && k < t->ndim; k++) ok = k == d || t->sizes[k] == first->sizes[k];
        if (!ok) {
            char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "cat: tensor %d has shape %s, expected %s except in dimension %d", i + 1,
                       nnr_shape_str(y, sizeof y, t->ndim, t->sizes), nnr_shape_str(x, sizeof x, first->ndim, first->sizes), d + 1);
            return NULL;
        }
        total += t->sizes[d];
        dt = nnr_promote_types(dt, t->dtype);
    }
    int64_t sizes[NNR_MAX_DIMS];
    memcpy(sizes, first->sizes, sizeof sizes);
    sizes[d] = total;
    nnr_tensor *r = nnr_tensor_alloc(dt, first->ndim, sizes, first->device);
    int64_t at = 0;
    for (int i = 0; r && i < n; i++) {
        nnr_tensor *slot = nnr_narrow(r, d, at, ts[i]->sizes[d]);
        int st = slot ? nnr_tensor_copy_into(slot, ts[i]) : nnr_last_status();
        nnr_tensor_release(slot);
        if (st) { nnr_tensor_release(r); return NULL; }
        at += ts[i]->sizes[d];
    }
    if (r && nnr_should_record(n, (const nnr_tensor *const *)ts)) NNR_RECORD(r, record_cat(n, ts, d, r));
    return r;
}

static nnr_tensor *index_as_i64(const char *op, const nnr_tensor *a, const nnr_tensor *index)
{
    if (!nnr_dtype_is_integral(index->dtype) || index->dtype == NNR_BOOL) {
        nnr_errorf(NNR_ERR_INVALID, "%s: index must be an integer tensor, got %s", op, nnr_dtype_name(index->dtype));
        return NULL;
    }
    if (nnr_same_device(op, a, index)) return NULL;
    return nnr_as_dtype(index, NNR_I64);
}

nnr_tensor *nnr_gather(const nnr_tensor *a, int dim, const nnr_tensor *index)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    int d = dim < 0 ? dim + a->ndim : dim;
    if (d < 0 || d >= (a->ndim ? a->ndim : 1)) {
        nnr_errorf(NNR_ERR_INVALID, "gather: dimension %d is out of range for a tensor of shape %s", dim + 1, nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
        return NULL;
    }
    int ok = index->ndim == a->ndim;
    for (int k = 0; ok && k < a->ndim; k++) ok = k == d || index->sizes[k] <= a->sizes[k];
    if (!ok) {
        nnr_errorf(NNR_ERR_INVALID, "gather: index of shape %s does not fit input of shape %s (same number of dims, no larger except in dimension %d)",
                   nnr_shape_str(y, sizeof y, index->ndim, index->sizes), nnr_shape_str(x, sizeof x, a->ndim, a->sizes), d + 1);
        return NULL;
    }
    nnr_tensor *idx = index_as_i64("gather", a, index);
    nnr_tensor *r = idx ? nnr_tensor_alloc(a->dtype, index->ndim, index->sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc da, di, dout;
        nnr_tensor_desc_of(a, &da);
        nnr_tensor_desc_of(idx, &di);
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .i = {d}};
        const nnr_tensor_desc *in[2] = {&da, &di};
        if (nnr_run_descs("gather", NNR_OP_GATHER, a->device, 2, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (r && nnr_should_record(1, &a)) NNR_RECORD(r, record_index(0, a, d, idx, NULL, r));
    nnr_tensor_release(idx);
    return r;
}

nnr_tensor *nnr_index_select(const nnr_tensor *a, int dim, const nnr_tensor *index)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    int d = dim < 0 ? dim + a->ndim : dim;
    if (a->ndim == 0 || d < 0 || d >= a->ndim) {
        nnr_errorf(NNR_ERR_INVALID, "index_select: dimension %d is out of range for a tensor of shape %s", dim + 1, nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
        return NULL;
    }
    if (index->ndim > 1) {
        nnr_errorf(NNR_ERR_INVALID, "index_select: index must be 1-d, got shape %s", nnr_shape_str(y, sizeof y, index->ndim, index->sizes));
        return NULL;
    }
    nnr_tensor *idx = index_as_i64("index_select", a, index);
    int64_t sizes[NNR_MAX_DIMS];
    memcpy(sizes, a->sizes, sizeof sizes);
    sizes[d] = nnr_tensor_numel(index);
    nnr_tensor *r = idx ? nnr_tensor_alloc(a->dtype, a->ndim, sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc da, di, dout;
        nnr_tensor_desc_of(a, &da);
        nnr_tensor_desc_of(idx, &di);
        if (di.ndim == 0) { di.ndim = 1; di.sizes[0] = 1; di.strides[0] = 1; }
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .i = {d}};
        const nnr_tensor_desc *in[2] = {&da, &di};
        if (nnr_run_descs("index_select", NNR_OP_INDEX_SELECT, a->device, 2, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (r && nnr_should_record(1, &a)) NNR_RECORD(r, record_index(1, a, d, idx, NULL, r));
    nnr_tensor_release(idx);
    return r;
}

/* out = a with src added at index along dim (SCATTER_ADD) or at index[j] slices (INDEX_ADD) */
static nnr_tensor *accumulate_at(int kind, const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src)
{
    const char *name = kind == NNR_OP_SCATTER_ADD ? "scatter_add" : "index_add";
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    int d = dim < 0 ? dim + a->ndim : dim;
    if (a->ndim == 0 || d < 0 || d >= a->ndim) {
        nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", name, dim + 1, nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
        return NULL;
    }
    if (nnr_same_device(name, a, src)) return NULL;
    if (src->dtype != a->dtype) {       /* as PyTorch: no silent cast of what is added */
        nnr_errorf(NNR_ERR_INVALID, "%s: the source is %s and the tensor %s; they must have the same dtype", name, nnr_dtype_name(src->dtype),
                   nnr_dtype_name(a->dtype));
        return NULL;
    }
    int ok;
    if (kind == NNR_OP_SCATTER_ADD) {
        ok = index->ndim == a->ndim && src->ndim == a->ndim;
        for (int k = 0; ok && k < a->ndim; k++) ok = index->sizes[k] == src->sizes[k] && (k == d || index->sizes[k] <= a->sizes[k]);
    } else {
        ok = index->ndim <= 1 && src->ndim == a->ndim && src->sizes[d] == nnr_tensor_numel(index);
        for (int k = 0; ok && k < a->ndim; k++) ok = k == d || src->sizes[k] == a->sizes[k];
    }
    if (!ok) {
        char z[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: index %s and source %s do not fit a tensor of shape %s along dimension %d", name,
                   nnr_shape_str(y, sizeof y, index->ndim, index->sizes), nnr_shape_str(z, sizeof z, src->ndim, src->sizes),
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), d + 1);
        return NULL;
    }
    nnr_tensor *idx = index_as_i64(name, a, index);
    nnr_tensor *s = idx ? nnr_as_dtype(src, a->dtype) : NULL;
    nnr_tensor *r = s ? nnr_tensor_alloc(a->dtype, a->ndim, a->sizes, a->device) : NULL;
    if (r && nnr_tensor_copy_into(r, a)) { nnr_tensor_release(r); r = NULL; }
    if (r) {
        nnr_tensor_desc di, ds, dout;
        nnr_tensor_desc_of(idx, &di);
        if (di.ndim == 0) { di.ndim = 1; di.sizes[0] = 1; di.strides[0] = 1; }
        nnr_tensor_desc_of(s, &ds);
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .i = {d}};
        const nnr_tensor_desc *in[2] = {&di, &ds};
        if (nnr_run_descs(name, kind, a->device, 2, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    const nnr_tensor *used[2] = {a, s};
    if (r && nnr_should_record(2, used))
        NNR_RECORD(r, record_index(kind == NNR_OP_SCATTER_ADD ? 2 : 3, a, d, idx, s, r));
    nnr_tensor_release(idx);
    nnr_tensor_release(s);
    return r;
}

nnr_tensor *nnr_scatter_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src)
{
    return accumulate_at(NNR_OP_SCATTER_ADD, a, dim, index, src);
}

nnr_tensor *nnr_index_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src)
{
    return accumulate_at(NNR_OP_INDEX_ADD, a, dim, index, src);
}

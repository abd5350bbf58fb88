/* Reductions (sum, prod, max, min, argmax, argmin, mean, var/std, any, all over any dims) and softmax:
 * the front ends, what they record, and their derivatives. */
#include <string.h>
#include "ops/internal.h"

/* g (reduced over the dims in mask, keepdim or not) expanded back to the input's shape */
static nnr_tensor *expand_back(nnr_node *node, const nnr_tensor *g)
{
    int nd = node->in[0].ndim;
    int64_t kept[NNR_MAX_DIMS];
    for (int d = 0; d < nd; d++) kept[d] = (node->i[1] >> d) & 1 ? 1 : node->in[0].sizes[d];
    nnr_tensor *v = nnr_reshape(g, nd, kept);
    if (!v) return NULL;
    nnr_tensor *e = nnr_expand(v, nd, node->in[0].sizes);
    nnr_tensor_release(v);
    return e;
}

/* d prod / d x_i = the product of the others in x_i's group: prod / x_i when the group has no zero,
 * the product of the non-zeros for its one zero (0 for the rest), 0 everywhere with two or more */
static nnr_tensor *prod_grad(nnr_node *node, const nnr_tensor *x)
{
    int dims[NNR_MAX_DIMS], n = 0;
    for (int d = 0; d < node->in[0].ndim; d++) if ((node->i[1] >> d) & 1) dims[n++] = d;
    nnr_tensor *zero = nnr_binary_scalar(NNR_OP_EQ, x, 0, 0);
    nnr_tensor *xnz = zero ? nnr_where_scalar(zero, NULL, 1, x, 0) : NULL;          /* zeros replaced by 1 */
    nnr_tensor *pnz = xnz ? nnr_reduce(NNR_OP_PROD, xnz, n, dims, 1, 0) : NULL;      /* product of the non-zeros */
    nnr_tensor *zf = zero ? nnr_to(zero, x->dtype, x->device) : NULL;
    nnr_tensor *nz = zf ? nnr_reduce(NNR_OP_SUM, zf, n, dims, 1, 0) : NULL;          /* zeros per group */
    nnr_tensor *none = nz ? nnr_binary_scalar(NNR_OP_EQ, nz, 0, 0) : NULL;
    nnr_tensor *one = nz ? nnr_binary_scalar(NNR_OP_EQ, nz, 1, 0) : NULL;
    nnr_tensor *lone = one && zero ? nnr_binary(NNR_OP_LOGICAL_AND, one, zero) : NULL;
    nnr_tensor *others = pnz && xnz ? nnr_binary(NNR_OP_DIV, pnz, xnz) : NULL;
    nnr_tensor *t1 = lone && pnz ? nnr_where_scalar(lone, pnz, 0, NULL, 0) : NULL;
    nnr_tensor *r = none && others && t1 ? nnr_where(none, others, t1) : NULL;
    nnr_tensor *all[] = {zero, xnz, pnz, zf, nz, none, one, lone, others, t1};
    nnr_release_all(10, all);
    return r;
}

static int reduce_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int op = (int)node->i[0];
    int64_t count = node->i[3];
    nnr_tensor *ge = expand_back(node, g), *r = NULL;
    if (!ge) return nnr_last_status();
    switch (op) {
    case NNR_OP_SUM: r = ge; nnr_tensor_retain(ge); break;   /* the expanded view: no copy */
    case NNR_OP_MEAN: r = nnr_mul_scalar(ge, count ? 1.0 / (double)count : 0.0); break;
    case NNR_OP_PROD: case NNR_OP_MAX: case NNR_OP_MIN: case NNR_OP_VAR: {
        const nnr_tensor *x = nnr_node_saved(node, 0), *y = op == NNR_OP_VAR ? x : nnr_node_saved(node, 1);
        if (!x || !y) { nnr_tensor_release(ge); return nnr_last_status(); }
        nnr_tensor *ye = op == NNR_OP_VAR ? NULL : expand_back(node, y);
        if (!ye && op != NNR_OP_VAR) break;
        if (op == NNR_OP_PROD) {
            nnr_tensor *q = prod_grad(node, x);
            r = q ? nnr_mul(q, ge) : NULL;
            nnr_tensor_release(q);
        } else if (op == NNR_OP_VAR) {        /* 2 (x - mean) / (n - correction) */
            int dims[NNR_MAX_DIMS], n = 0;
            for (int d = 0; d < node->in[0].ndim; d++) if ((node->i[1] >> d) & 1) dims[n++] = d;
            nnr_tensor *mean = nnr_reduce(NNR_OP_MEAN, x, n, dims, 1, 0);
            nnr_tensor *diff = mean ? nnr_binary(NNR_OP_SUB, x, mean) : NULL;
            double scale = 2.0 / (double)(count - node->i[2]);
            nnr_tensor *s = diff ? nnr_mul_scalar(diff, scale) : NULL;
            r = s ? nnr_mul(s, ge) : NULL;
            nnr_tensor_release(mean); nnr_tensor_release(diff); nnr_tensor_release(s);
        } else {                              /* max/min: shared evenly among the elements that attain it */
            nnr_tensor *hit = nnr_binary(NNR_OP_EQ, x, ye);
            nnr_tensor *hitf = hit ? nnr_to(hit, x->dtype, x->device) : NULL;
            int dims[NNR_MAX_DIMS], n = 0;
            for (int d = 0; d < node->in[0].ndim; d++) if ((node->i[1] >> d) & 1) dims[n++] = d;
            nnr_tensor *cnt = hitf ? nnr_reduce(NNR_OP_SUM, hitf, n, dims, 1, 0) : NULL;
            nnr_tensor *share = cnt ? nnr_binary(NNR_OP_DIV, hitf, cnt) : NULL;
            r = share ? nnr_mul(share, ge) : NULL;
            nnr_tensor_release(hit); nnr_tensor_release(hitf); nnr_tensor_release(cnt); nnr_tensor_release(share);
        }
        nnr_tensor_release(ye);
        break;
    }
    default:
        nnr_tensor_release(ge);
        return nnr_errorf(NNR_ERR_INTERNAL, "backward: reduction %d has no derivative", op);
    }
    nnr_tensor_release(ge);
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

static int record_reduce(int op, const nnr_tensor *x, unsigned dim_mask, int64_t count, int64_t correction, nnr_tensor *out)
{
    const char *name = op == NNR_OP_SUM ? "SumBackward" : op == NNR_OP_PROD ? "ProdBackward" : op == NNR_OP_MAX ? "MaxBackward"
                     : op == NNR_OP_MIN ? "MinBackward" : op == NNR_OP_MEAN ? "MeanBackward" : op == NNR_OP_VAR ? "VarBackward" : NULL;
    if (!name) return NNR_OK;        /* argmax, argmin, any, all */
    nnr_node *node = nnr_node_new(name, reduce_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = op;
    node->i[1] = dim_mask;
    node->i[2] = correction;
    node->i[3] = count;
    int st = NNR_OK;
    if (op != NNR_OP_SUM && op != NNR_OP_MEAN) st = nnr_save(node, x, 0);
    if (!st && op != NNR_OP_SUM && op != NNR_OP_MEAN && op != NNR_OP_VAR) st = nnr_save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

static int softmax_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *y = nnr_node_saved(node, 0);
    if (!y) return nnr_last_status();
    int dim = (int)node->i[0];
    nnr_tensor *r = NULL;
    if (node->i[1]) {                          /* log_softmax: g - softmax * sum(g) */
        nnr_tensor *s = nnr_reduce(NNR_OP_SUM, g, 1, &dim, 1, 0);
        nnr_tensor *p = s ? nnr_unary(NNR_OP_EXP, y) : NULL;
        nnr_tensor *ps = p ? nnr_mul(p, s) : NULL;
        r = ps ? nnr_binary(NNR_OP_SUB, g, ps) : NULL;
        nnr_tensor_release(s); nnr_tensor_release(p); nnr_tensor_release(ps);
    } else {                                   /* softmax: y (g - sum(g y)) */
        nnr_tensor *gy = nnr_mul(g, y);
        nnr_tensor *s = gy ? nnr_reduce(NNR_OP_SUM, gy, 1, &dim, 1, 0) : NULL;
        nnr_tensor *d = s ? nnr_binary(NNR_OP_SUB, g, s) : NULL;
        r = d ? nnr_mul(d, y) : NULL;
        nnr_tensor_release(gy); nnr_tensor_release(s); nnr_tensor_release(d);
    }
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

static int record_softmax(const nnr_tensor *x, int dim, int log, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new(log ? "LogSoftmaxBackward" : "SoftmaxBackward", softmax_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = dim;
    node->i[1] = log;
    int st = nnr_save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

/* ---------------- front ends ---------------- */

nnr_tensor *nnr_reduce(int op, const nnr_tensor *a, int ndims, const int *dims, int keepdim, int64_t correction)
{
    const char *name = nnr_op_name(op);
    if (nnr_op_category(op) != NNR_OPCAT_REDUCE) { nnr_errorf(NNR_ERR_INVALID, "reduce: %d is not a reduction", op); return NULL; }
    int reduced[NNR_MAX_DIMS] = {0};
    if (ndims <= 0) for (int i = 0; i < a->ndim; i++) reduced[i] = 1;
    for (int k = 0; k < ndims; k++) {
        int d = dims[k] < 0 ? dims[k] + a->ndim : dims[k];
        if (d < 0 || d >= a->ndim) {
            char b[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", name, dims[k] + 1,
                       nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
            return NULL;
        }
        if (reduced[d]++) { nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d given twice", name, d + 1); return NULL; }
    }
    int in_dt = a->dtype, out_dt = a->dtype;
    if (op == NNR_OP_SUM || op == NNR_OP_PROD) { if (nnr_dtype_is_integral(a->dtype)) in_dt = out_dt = NNR_I64; }
    else if (op == NNR_OP_ARGMAX || op == NNR_OP_ARGMIN) out_dt = NNR_I64;
    else if (op == NNR_OP_ANY || op == NNR_OP_ALL) out_dt = NNR_BOOL;       /* any dtype in */
    else if (op == NNR_OP_MEAN || op == NNR_OP_VAR) {
        if (!nnr_dtype_is_float(a->dtype)) {
            nnr_errorf(NNR_ERR_INVALID, "%s: input dtype must be floating point, got %s (convert with :float())", name, nnr_dtype_name(a->dtype));
            return NULL;
        }
    }
    int64_t rcount = 1;
    int64_t out_sizes[NNR_MAX_DIMS], kept_sizes[NNR_MAX_DIMS];
    int nout = 0, nkept = 0;
    nnr_tensor_desc din;
    nnr_tensor *x = nnr_as_dtype(a, in_dt);
    if (!x) return NULL;
    nnr_tensor_desc_of(x, &din);
    int k = 0;
    for (int i = 0; i < a->ndim; i++)            /* kept dims first */
        if (!reduced[i]) {
            din.sizes[k] = a->sizes[i]; din.strides[k] = x->strides[i]; k++;
            kept_sizes[nkept++] = a->sizes[i];
        }
    for (int i = 0; i < a->ndim; i++)
        if (reduced[i]) { din.sizes[k] = a->sizes[i]; din.strides[k] = x->strides[i]; k++; rcount *= a->sizes[i]; }
    for (int i = 0; i < a->ndim; i++) {
        if (!reduced[i]) out_sizes[nout++] = a->sizes[i];
        else if (keepdim) out_sizes[nout++] = 1;
    }
    if (rcount == 0 && (op == NNR_OP_MAX || op == NNR_OP_MIN || op == NNR_OP_ARGMAX || op == NNR_OP_ARGMIN)) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: cannot reduce over an empty dimension (shape %s)", name, nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
        nnr_tensor_release(x);
        return NULL;
    }
    nnr_tensor *r = nnr_tensor_alloc(out_dt, nout, out_sizes, a->device);
    if (r) {
        nnr_tensor_desc dout;
        nnr_tensor_desc_of(r, &dout);
        dout.ndim = nkept;
        memcpy(dout.sizes, kept_sizes, sizeof(int64_t) * (size_t)nkept);
        nnr_contiguous_strides(nkept, kept_sizes, dout.strides);
        nnr_op_params p = {.struct_size = sizeof p, .i = {a->ndim - nkept, correction, 0}};
        const nnr_tensor_desc *in[1] = {&din};
        if (nnr_run_descs(name, op, a->device, 1, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (nnr_should_record(1, (const nnr_tensor **)&x)) {
        unsigned mask = 0;
        for (int d = 0; d < a->ndim; d++) if (reduced[d]) mask |= 1u << d;
        NNR_RECORD(r, record_reduce(op, x, mask, rcount, correction, r));
    }
    nnr_tensor_release(x);
    return r;
}

nnr_tensor *nnr_softmax(const nnr_tensor *a, int dim, int log)
{
    const char *name = log ? "log_softmax" : "softmax";
    int d = dim < 0 ? dim + a->ndim : dim;
    if (a->ndim == 0) d = 0;
    else if (d < 0 || d >= a->ndim) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", name, dim + 1, nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
        return NULL;
    }
    /* under autocast, half inputs are normalised in f32 (as PyTorch's autocast does) */
    int low = a->dtype == NNR_F16 || a->dtype == NNR_BF16;
    nnr_tensor *x = nnr_as_dtype(a, !nnr_dtype_is_float(a->dtype) || (low && nnr_get_autocast() >= 0) ? NNR_F32 : a->dtype);
    nnr_tensor *r = x ? nnr_tensor_alloc(x->dtype, a->ndim, a->sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc di, dout;
        nnr_tensor_desc_of(x, &di);
        nnr_tensor_desc_of(r, &dout);
        if (a->ndim == 0) { di.ndim = dout.ndim = 1; di.sizes[0] = dout.sizes[0] = 1; di.strides[0] = dout.strides[0] = 1; }
        else {   /* move dim last in both */
            int last = a->ndim - 1;
            int64_t t;
            t = di.sizes[d]; di.sizes[d] = di.sizes[last]; di.sizes[last] = t;
            t = di.strides[d]; di.strides[d] = di.strides[last]; di.strides[last] = t;
            t = dout.sizes[d]; dout.sizes[d] = dout.sizes[last]; dout.sizes[last] = t;
            t = dout.strides[d]; dout.strides[d] = dout.strides[last]; dout.strides[last] = t;
        }
        const nnr_tensor_desc *in[1] = {&di};
        int op = log ? NNR_OP_LOG_SOFTMAX : NNR_OP_SOFTMAX;
        if (nnr_run_descs(name, op, a->device, 1, in, &dout, NULL)) { nnr_tensor_release(r); r = NULL; }
    }
    if (a->ndim > 0 && x && nnr_should_record(1, (const nnr_tensor **)&x)) NNR_RECORD(r, record_softmax(x, d, log, r));
    nnr_tensor_release(x);
    return r;
}


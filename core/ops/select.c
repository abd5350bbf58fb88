/* Selection: where (a condition picks between two tensors or numbers), masked_fill, clamp; what
 * they record and their derivatives. */
#include <string.h>
#include "ops/internal.h"

static int where_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *cond = nnr_node_saved(node, 0);
    if (!cond) return nnr_last_status();
    /* inputs: 0 cond (no grad), 1 a, 2 b */
    if (node->in[1].node) {
        nnr_tensor *ga = nnr_where_scalar(cond, g, 0, NULL, 0);
        if (!(grads[1] = nnr_grad_for_input(node, 1, ga))) return nnr_last_status();
    }
    if (node->in[2].node) {
        nnr_tensor *gb = nnr_where_scalar(cond, NULL, 0, g, 0);
        if (!(grads[2] = nnr_grad_for_input(node, 2, gb))) return nnr_last_status();
    }
    return NNR_OK;
}

static int record_where(const nnr_tensor *cond, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const nnr_tensor *in[3] = {cond, a, b};
    nnr_node *node = nnr_node_new("WhereBackward", where_backward, 3, in);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    int st = nnr_save(node, cond, 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

static int clamp_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0);
    if (!x) return nnr_last_status();
    int flags = (int)node->i[0];
    nnr_tensor *keep = NULL;
    if (flags & 1) keep = nnr_binary_scalar(NNR_OP_GE, x, node->f[0], 0);
    if (flags & 2) {
        nnr_tensor *le = nnr_binary_scalar(NNR_OP_LE, x, node->f[1], 0);
        if (keep && le) { nnr_tensor *both = nnr_binary(NNR_OP_LOGICAL_AND, keep, le); nnr_tensor_release(keep); keep = both; }
        else if (le) keep = le, le = NULL;
        nnr_tensor_release(le);
    }
    if (!keep) {
        if (flags) return nnr_last_status();
        grads[0] = nnr_clone(g);
        return grads[0] ? NNR_OK : nnr_last_status();
    }
    grads[0] = nnr_where_scalar(keep, g, 0, NULL, 0);
    nnr_tensor_release(keep);
    return grads[0] ? NNR_OK : nnr_last_status();
}

static int record_clamp(const nnr_tensor *x, double lo, double hi, int flags, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new("ClampBackward", clamp_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->f[0] = lo; node->f[1] = hi; node->i[0] = flags;
    int st = nnr_save(node, x, 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

/* ---------------- front ends ---------------- */

nnr_tensor *nnr_where_scalar(const nnr_tensor *cond, const nnr_tensor *a, double sa, const nnr_tensor *b, double sb)
{
    if (cond->dtype != NNR_BOOL) {
        nnr_errorf(NNR_ERR_INVALID, "where: condition must be a bool tensor, got %s", nnr_dtype_name(cond->dtype));
        return NULL;
    }
    if ((a && nnr_same_device("where", cond, a)) || (b && nnr_same_device("where", cond, b))) return NULL;
    int n = cond->ndim;
    int64_t shape[NNR_MAX_DIMS];
    memcpy(shape, cond->sizes, sizeof shape);
    if (a && nnr_broadcast_shapes("where", n, shape, a->ndim, a->sizes, &n, shape)) return NULL;
    if (b && nnr_broadcast_shapes("where", n, shape, b->ndim, b->sizes, &n, shape)) return NULL;
    int dt;
    if (a && b) dt = nnr_promote_operands(a, b);
    else if (a) dt = nnr_promote_with_scalar(a->dtype, sb);
    else if (b) dt = nnr_promote_with_scalar(b->dtype, sa);
    else dt = (nnr_scalar_is_integral(sa) && nnr_scalar_is_integral(sb)) ? NNR_I64 : NNR_F32;
    nnr_tensor *x = a ? nnr_as_dtype(a, dt) : NULL, *y = b ? nnr_as_dtype(b, dt) : NULL;
    nnr_tensor *r = ((a && !x) || (b && !y)) ? NULL : nnr_tensor_alloc(dt, n, shape, cond->device);
    if (r) {
        nnr_tensor_desc dc, dx, dy, dout;
        const nnr_tensor_desc *in[3];
        int nin = 0;
        nnr_desc_broadcast(cond, n, shape, &dc);
        in[nin++] = &dc;
        if (x) { nnr_desc_broadcast(x, n, shape, &dx); in[nin++] = &dx; }
        if (y) { nnr_desc_broadcast(y, n, shape, &dy); in[nin++] = &dy; }
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .f = {sa, sb}, .i = {(x ? 0 : 1) | (y ? 0 : 2)}};
        if (nnr_run_descs("where", NNR_OP_WHERE, cond->device, nin, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    const nnr_tensor *used[2] = {x, y};
    if (nnr_should_record(2, used)) NNR_RECORD(r, record_where(cond, x, y, r));
    nnr_tensor_release(x);
    nnr_tensor_release(y);
    return r;
}

nnr_tensor *nnr_where(const nnr_tensor *cond, const nnr_tensor *a, const nnr_tensor *b)
{
    return nnr_where_scalar(cond, a, 0, b, 0);
}

static int check_mask(const char *op, const nnr_tensor *a, const nnr_tensor *mask)
{
    if (mask->dtype != NNR_BOOL) return nnr_errorf(NNR_ERR_INVALID, "%s: mask must be a bool tensor, got %s", op, nnr_dtype_name(mask->dtype));
    return nnr_same_device(op, a, mask);
}

nnr_tensor *nnr_masked_fill(const nnr_tensor *a, const nnr_tensor *mask, double value)
{
    /* out of place, the result has the shape tensor and mask broadcast to, either way, as PyTorch's */
    if (check_mask("masked_fill", a, mask) || nnr_check_value_fits("masked_fill", a->dtype, value)) return NULL;
    nnr_tensor *r = nnr_where_scalar(mask, NULL, value, a, 0);
    if (r && r->dtype != a->dtype) {                 /* keep a's dtype, as PyTorch does */
        nnr_tensor *c = nnr_to(r, a->dtype, a->device);
        nnr_tensor_release(r);
        r = c;
    }
    return r;
}

int nnr_masked_fill_(nnr_tensor *a, const nnr_tensor *mask, double value)
{
    if (check_mask("masked_fill_", a, mask)) return nnr_last_status();
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (nnr_broadcast_shapes("masked_fill_", a->ndim, a->sizes, mask->ndim, mask->sizes, &n, shape)) return nnr_last_status();
    if (n != a->ndim || memcmp(shape, a->sizes, sizeof(int64_t) * (size_t)n)) {
        char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_INVALID, "masked_fill_: mask of shape %s does not broadcast to the tensor's shape %s "
                          "(in place, the tensor cannot grow; use masked_fill)",
                          nnr_shape_str(y, sizeof y, mask->ndim, mask->sizes), nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
    }
    if (nnr_autograd_check_inplace("masked_fill_", a) || nnr_check_written("masked_fill_", "", a)) return nnr_last_status();
    if (mask->storage == a->storage) {          /* as PyTorch: no partial overlap of the mask and the target */
        nnr_tensor *m = nnr_written_operand("masked_fill", "_", a, mask);
        if (!m) return nnr_last_status();
        nnr_tensor_release(m);
    }
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = nnr_clone(a), *r = old ? nnr_masked_fill(old, mask, value) : NULL;
        nnr_tensor_release(old);
        return nnr_inplace_recorded(a, r);
    }
    nnr_tensor *r = nnr_masked_fill(a, mask, value);
    if (!r) return nnr_last_status();
    int st = nnr_tensor_copy_into(a, r);
    nnr_tensor_release(r);
    return st;
}

nnr_tensor *nnr_clamp(const nnr_tensor *a, double lo, double hi, int flags)
{
    int dt = a->dtype;
    if (flags & 1) dt = nnr_promote_with_scalar(dt, lo);
    if (flags & 2) dt = nnr_promote_with_scalar(dt, hi);
    if (dt == NNR_BOOL) { nnr_errorf(NNR_ERR_INVALID, "clamp: not defined for bool tensors"); return NULL; }
    nnr_tensor *x = nnr_as_dtype(a, dt);
    nnr_op_params p = {.struct_size = sizeof p, .f = {lo, hi}, .i = {flags}};
    nnr_tensor *r = x ? nnr_run_new("clamp", NNR_OP_CLAMP, dt, 1, (const nnr_tensor *const *)&x, &p) : NULL;
    if (x && nnr_should_record(1, (const nnr_tensor **)&x)) NNR_RECORD(r, record_clamp(x, lo, hi, flags, r));
    nnr_tensor_release(x);
    return r;
}

int nnr_clamp_(nnr_tensor *a, double lo, double hi, int flags)
{
    if (a->dtype == NNR_BOOL) return nnr_errorf(NNR_ERR_INVALID, "clamp_: not defined for bool tensors");
    /* as every in-place op: the result type (a float bound makes clamp's result float) must be a's */
    if (!nnr_dtype_is_float(a->dtype) && (((flags & 1) && !nnr_scalar_is_integral(lo)) || ((flags & 2) && !nnr_scalar_is_integral(hi))))
        return nnr_errorf(NNR_ERR_INVALID, "clamp_: result type float cannot be stored in place in a %s tensor (bounds %g, %g)",
                          nnr_dtype_name(a->dtype), lo, hi);
    if (nnr_autograd_check_inplace("clamp_", a) || nnr_check_written("clamp_", "", a)) return nnr_last_status();
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = nnr_clone(a), *r = old ? nnr_clamp(old, lo, hi, flags) : NULL;
        nnr_tensor_release(old);
        return nnr_inplace_recorded(a, r);
    }
    nnr_tensor_desc d;
    nnr_tensor_desc_of(a, &d);
    nnr_op_params p = {.struct_size = sizeof p, .f = {lo, hi}, .i = {flags}};
    const nnr_tensor_desc *in[1] = {&d};
    return nnr_run_descs("clamp_", NNR_OP_CLAMP, a->device, 1, in, &d, &p);
}


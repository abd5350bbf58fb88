/* Cross-entropy of scores against class indices, fused (ABI 1.10): one CROSS_ENTROPY call gives the
 * loss (per row, or summed or averaged over the rows that count) and each row's log-sum-exp, one
 * CROSS_ENTROPY_GRAD the scores' gradient. The composition it replaces (log_softmax, gather, neg, sum
 * and div, their five backwards, and the checks of the labels) was about fourteen small ops a step,
 * and inside a training step each small op costs several times what it costs alone: its code and data
 * are cold after the layers' gemms. Under create_graph the backward is made of recorded ops instead,
 * so that it can be differentiated again:
 *   dx = (softmax(x) - onehot(t)) s, s = g (none, per row), g (sum) or g / counted rows (mean),
 *   0 in the rows whose target is the ignored index. */
#include "ops/internal.h"
#include "tensor/internal.h"

enum { CE_NONE = 0, CE_SUM = 1, CE_MEAN = 2 };

/* ---------------- the backward as recorded ops (create_graph) ---------------- */
static int grads_recorded(nnr_node *node, const nnr_tensor *x, const nnr_tensor *t, const nnr_tensor *g, nnr_tensor **grads)
{
    int64_t ignore = node->i[0], reduction = node->i[1], base = node->i[2], N = x->sizes[0], C = x->sizes[1];
    int64_t n1[2] = {N, 1};
    nnr_tensor *keep = nnr_binary_scalar(NNR_OP_NE, t, (double)ignore, 0);          /* bool [N] */
    nnr_tensor *cls = keep ? nnr_binary_scalar(NNR_OP_SUB, t, (double)base, 0) : NULL;
    nnr_tensor *safe = cls ? nnr_where_scalar(keep, cls, 0, NULL, 0) : NULL;         /* ignored rows: class 0 */
    nnr_tensor *classes = safe ? nnr_arange(0, (double)C, 1, NNR_I64, x->device) : NULL;
    nnr_tensor *col = classes ? nnr_reshape(safe, 2, n1) : NULL;
    nnr_tensor *hot = col ? nnr_binary(NNR_OP_EQ, classes, col) : NULL;              /* bool [N, C] */
    nnr_tensor *onehot = hot ? nnr_to(hot, x->dtype, x->device) : NULL;
    nnr_tensor *w = onehot ? nnr_to(keep, x->dtype, x->device) : NULL;              /* 1 for the rows that count */
    nnr_tensor *p = w ? nnr_softmax(x, 1, 0) : NULL, *d = p ? nnr_binary(NNR_OP_SUB, p, onehot) : NULL;
    nnr_tensor *s = d ? nnr_mul(g, w) : NULL, *sum = NULL, *count = NULL, *sc = NULL, *s2 = NULL, *dx = NULL, *k2 = NULL;
    if (s && reduction == CE_MEAN) {
        /* no row counted: s is 0 already, and the count taken as 1 keeps it 0 (0 / 0 would be NaN) */
        sum = nnr_reduce(NNR_OP_SUM, w, 0, NULL, 0, 0);
        count = sum ? nnr_clamp(sum, 1, 0, 1) : NULL;
        sc = count ? nnr_binary(NNR_OP_DIV, s, count) : NULL;
    } else if (s) {
        sc = s;
        nnr_tensor_retain(sc);
    }
    s2 = sc ? nnr_reshape(sc, 2, n1) : NULL;
    dx = s2 ? nnr_mul(d, s2) : NULL;
    /* ignored rows 0 as the fused kernels give them, also where their scores are NaN or infinite */
    k2 = dx ? nnr_reshape(keep, 2, n1) : NULL;
    int st = k2 && (grads[0] = nnr_where_scalar(k2, dx, 0, NULL, 0)) ? NNR_OK : nnr_last_status();
    nnr_tensor *all[17] = {keep, cls, safe, classes, col, hot, onehot, w, p, d, s, sum, count, sc, s2, dx, k2};
    nnr_release_all(17, all);
    return st;
}

/* ---------------- the fused backward ---------------- */
static int cross_entropy_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0), *t = nnr_node_saved(node, 1), *lse = nnr_node_saved(node, 2);
    if (!x || !t || !lse) return nnr_last_status();
    if (nnr_creating_graph()) return grads_recorded(node, x, t, g, grads);
    nnr_tensor *xc = nnr_contiguous(x), *gd = xc ? nnr_as_dtype(g, x->dtype) : NULL, *gc = gd ? nnr_contiguous(gd) : NULL;
    nnr_tensor *dx = gc ? nnr_tensor_alloc(x->dtype, 2, x->sizes, x->device) : NULL;
    int st = dx ? NNR_OK : nnr_last_status();
    if (st == NNR_OK) {
        nnr_op_params p = {.struct_size = sizeof p};
        p.i[0] = node->i[0];
        p.i[1] = node->i[1];
        p.i[2] = node->i[2];
        nnr_tensor *in[4] = {xc, (nnr_tensor *)t, (nnr_tensor *)lse, gc};
        st = nnr_run_tensors("cross_entropy backward", NNR_OP_CROSS_ENTROPY_GRAD, x->device, 4, in, 1, &dx, &p);
    }
    if (st == NNR_OK) { grads[0] = dx; dx = NULL; }
    nnr_tensor *all[4] = {xc, gd, gc, dx};
    nnr_release_all(4, all);
    return st;
}

static int check(const nnr_tensor *x, const nnr_tensor *t, int64_t base, int64_t ignore_index, int reduction)
{
    if (base != 0 && base != 1) return nnr_errorf(NNR_ERR_INVALID, "cross_entropy: the labels' base must be 0 or 1, got %lld", (long long)base);
    /* the recorded backward compares labels with ignore_index as doubles: exact up to 2^53 */
    if (ignore_index > ((int64_t)1 << 53) || ignore_index < -((int64_t)1 << 53))
        return nnr_errorf(NNR_ERR_INVALID, "cross_entropy: ignore_index %lld is outside +-2^53", (long long)ignore_index);
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (x->ndim != 2)
        return nnr_errorf(NNR_ERR_INVALID, "cross_entropy: the fused loss takes scores of shape [N, C], got %s",
                          nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
    if (x->dtype != NNR_F32 && x->dtype != NNR_F64)
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "cross_entropy: dtype %s is not supported by the fused loss (f32 or f64)",
                          nnr_dtype_name(x->dtype));
    if (t->ndim != 1 || t->sizes[0] != x->sizes[0] || (t->dtype != NNR_I64 && t->dtype != NNR_I32))
        return nnr_errorf(NNR_ERR_INVALID, "cross_entropy: target of shape %s (%s) does not fit scores of shape %s (expected [N] class indices, i64)",
                          nnr_shape_str(a, sizeof a, t->ndim, t->sizes), nnr_dtype_name(t->dtype),
                          nnr_shape_str(b, sizeof b, x->ndim, x->sizes));
    if (reduction < CE_NONE || reduction > CE_MEAN)
        return nnr_errorf(NNR_ERR_INVALID, "cross_entropy: reduction %d is not one of 0 (none), 1 (sum), 2 (mean)", reduction);
    return nnr_same_device("cross_entropy", x, t);
}

nnr_tensor *nnr_cross_entropy(const nnr_tensor *x, const nnr_tensor *target, int64_t base, int64_t ignore_index, int reduction)
{
    if (check(x, target, base, ignore_index, reduction)) return NULL;
    int64_t N = x->sizes[0];
    nnr_tensor *xc = nnr_contiguous(x), *td = nnr_as_dtype(target, NNR_I64), *tc = td ? nnr_contiguous(td) : NULL;
    nnr_tensor *loss = nnr_tensor_alloc(x->dtype, reduction == CE_NONE ? 1 : 0, &N, x->device);
    nnr_tensor *lse = nnr_tensor_alloc(x->dtype, 1, &N, x->device);
    int st = xc && tc && loss && lse ? NNR_OK : nnr_last_status();
    if (st == NNR_OK) {
        nnr_op_params p = {.struct_size = sizeof p};
        p.i[0] = ignore_index;
        p.i[1] = reduction;
        p.i[2] = base;
        nnr_tensor *in[2] = {xc, tc}, *out[2] = {loss, lse};
        st = nnr_run_tensors("cross_entropy", NNR_OP_CROSS_ENTROPY, x->device, 2, in, 2, out, &p);
    }
    const nnr_tensor *rec[1] = {x};
    if (st == NNR_OK && nnr_should_record(1, rec)) {
        nnr_node *node = nnr_node_new("CrossEntropyBackward", cross_entropy_backward, 1, rec);
        if (!node) st = nnr_last_status();
        if (node) {
            node->i[0] = ignore_index;
            node->i[1] = reduction;
            node->i[2] = base;
            node->double_diff = 1;
            st = nnr_save(node, x, 0);
            if (!st) st = nnr_save(node, tc, 0);
            if (!st) st = nnr_save(node, lse, 0);
            st = nnr_node_finish(loss, node, st);
        }
    }
    nnr_tensor *all[4] = {xc, td, tc, lse};
    nnr_release_all(4, all);
    if (st) { nnr_tensor_release(loss); return NULL; }
    return loss;
}

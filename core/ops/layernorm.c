/* Layer norm over the trailing dims, fused: one LAYER_NORM call for y and the rows' statistics, one
 * LAYER_NORM_BACKWARD for dx (and the weight's and bias's gradients), where a composition took eight
 * ops and eight nodes each way. Under create_graph the backward is made of recorded ops instead, with
 * the statistics recomputed from x (they depend on it), so that it can be differentiated again:
 *   xhat = (x - mean) rstd, g = dy w, dx = rstd (g - mean(g) - xhat mean(g xhat)),
 *   dw = sum(dy xhat), db = sum(dy) over the leading dims. */
#include <string.h>
#include "ops/internal.h"

typedef struct ln_shape {
    int lead, norm;                 /* the leading dims and the normalized (trailing) ones */
    int dims[NNR_MAX_DIMS];         /* the normalized dims (for the recorded form) */
    int64_t M, N;
} ln_shape;

static void shape_of(const nnr_tensor *x, int norm, ln_shape *s)
{
    s->norm = norm;
    s->lead = x->ndim - norm;
    s->M = 1;
    s->N = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (d < s->lead) s->M *= x->sizes[d];
        else { s->N *= x->sizes[d]; s->dims[d - s->lead] = d; }
    }
}

/* ---------------- the backward as recorded ops (create_graph) ---------------- */
static nnr_tensor *mean_last(const ln_shape *s, const nnr_tensor *t) { return nnr_reduce(NNR_OP_MEAN, t, s->norm, s->dims, 1, 0); }

static nnr_tensor *xhat_of(const ln_shape *s, const nnr_tensor *x, double eps, nnr_tensor **rstd)
{
    nnr_tensor *m = mean_last(s, x), *xm = m ? nnr_binary(NNR_OP_SUB, x, m) : NULL;
    nnr_tensor *sq = xm ? nnr_mul(xm, xm) : NULL, *var = sq ? mean_last(s, sq) : NULL;
    nnr_tensor *ve = var ? nnr_binary_scalar(NNR_OP_ADD, var, eps, 0) : NULL;
    *rstd = ve ? nnr_binary_scalar(NNR_OP_POW, ve, -0.5, 0) : NULL;
    nnr_tensor *xhat = *rstd ? nnr_mul(xm, *rstd) : NULL;
    nnr_tensor *t[5] = {m, xm, sq, var, ve};
    nnr_release_all(5, t);
    return xhat;
}

static int grads_recorded(nnr_node *node, const ln_shape *s, const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *dy,
                          nnr_tensor **grads)
{
    nnr_tensor *rstd = NULL, *xhat = xhat_of(s, x, node->f[0], &rstd);
    int lead[NNR_MAX_DIMS];
    for (int d = 0; d < s->lead; d++) lead[d] = d;
    int st = xhat ? NNR_OK : nnr_last_status();
    if (!st && w && node->in[2].node) st = (grads[2] = nnr_reduce(NNR_OP_SUM, dy, s->lead, lead, 0, 0)) ? NNR_OK : nnr_last_status();
    if (!st && w && node->in[1].node) {
        nnr_tensor *p = nnr_mul(dy, xhat);
        st = p && (grads[1] = nnr_reduce(NNR_OP_SUM, p, s->lead, lead, 0, 0)) ? NNR_OK : nnr_last_status();
        nnr_tensor_release(p);
    }
    if (!st && node->in[0].node) {
        nnr_tensor *g = w ? nnr_mul(dy, w) : nnr_clone(dy), *m1 = g ? mean_last(s, g) : NULL, *gx = g ? nnr_mul(g, xhat) : NULL;
        nnr_tensor *m2 = gx ? mean_last(s, gx) : NULL, *t1 = m2 ? nnr_mul(xhat, m2) : NULL;
        nnr_tensor *t2 = m1 ? nnr_binary(NNR_OP_SUB, g, m1) : NULL, *t3 = t1 && t2 ? nnr_binary(NNR_OP_SUB, t2, t1) : NULL;
        st = t3 && (grads[0] = nnr_mul(t3, rstd)) ? NNR_OK : nnr_last_status();
        nnr_tensor *t[7] = {g, m1, gx, m2, t1, t2, t3};
        nnr_release_all(7, t);
    }
    nnr_tensor_release(xhat);
    nnr_tensor_release(rstd);
    return st;
}

/* ---------------- the fused backward ---------------- */
static int layer_norm_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int has_w = (int)node->i[1];
    const nnr_tensor *x = nnr_node_saved(node, 0), *stats = nnr_node_saved(node, 1), *w = has_w ? nnr_node_saved(node, 2) : NULL;
    if (!x || !stats || (has_w && !w)) return nnr_last_status();
    ln_shape s;
    shape_of(x, (int)node->i[0], &s);
    if (nnr_creating_graph()) return grads_recorded(node, &s, x, w, g, grads);
    int64_t mn[2] = {s.M, s.N}, n1[1] = {s.N};
    nnr_tensor *xc = nnr_contiguous(x), *gc = nnr_contiguous(g), *x2 = xc ? nnr_view(xc, 2, mn) : NULL, *g2 = gc ? nnr_view(gc, 2, mn) : NULL;
    nnr_tensor *wc = w ? nnr_contiguous(w) : NULL, *w1 = wc ? nnr_view(wc, 1, n1) : NULL;
    nnr_tensor *dx = nnr_tensor_alloc(x->dtype, 2, mn, x->device);
    nnr_tensor *dw = w ? nnr_tensor_alloc(x->dtype, 1, n1, x->device) : NULL, *db = w ? nnr_tensor_alloc(x->dtype, 1, n1, x->device) : NULL;
    int st = x2 && g2 && dx && (!w || (w1 && dw && db)) ? NNR_OK : nnr_last_status();
    if (st == NNR_OK) {
        nnr_tensor *in[4] = {g2, x2, (nnr_tensor *)stats, w1}, *out[3] = {dx, dw, db};
        st = nnr_run_tensors("layer_norm backward", NNR_OP_LAYER_NORM_BACKWARD, x->device, w ? 4 : 3, in, w ? 3 : 1, out, NULL);
    }
    if (st == NNR_OK && node->in[0].node && !(grads[0] = nnr_view(dx, x->ndim, x->sizes))) st = nnr_last_status();
    if (st == NNR_OK && w && node->in[1].node && !(grads[1] = nnr_view(dw, w->ndim, w->sizes))) st = nnr_last_status();
    if (st == NNR_OK && w && node->in[2].node && !(grads[2] = nnr_view(db, w->ndim, w->sizes))) st = nnr_last_status();
    nnr_tensor *t[9] = {xc, gc, x2, g2, wc, w1, dx, dw, db};
    nnr_release_all(9, t);
    return st;
}

static int check(const nnr_tensor *x, int norm, const nnr_tensor *w, const nnr_tensor *b, double eps)
{
    char a[NNR_SHAPE_BUF], c[NNR_SHAPE_BUF];
    if (norm < 1 || norm > x->ndim)
        return nnr_errorf(NNR_ERR_INVALID, "layer_norm: %d normalized dims for an input of %d dims", norm, x->ndim);
    if (!(eps > 0)) return nnr_errorf(NNR_ERR_INVALID, "layer_norm: eps must be > 0, got %g", eps);
    if ((w == NULL) != (b == NULL)) return nnr_errorf(NNR_ERR_INVALID, "layer_norm: give weight and bias, or neither");
    if (x->dtype != NNR_F32 && x->dtype != NNR_F64)
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "layer_norm: dtype %s is not supported (f32 or f64)", nnr_dtype_name(x->dtype));
    for (int k = 0; k < 2; k++) {
        const nnr_tensor *t = k ? b : w;
        if (!t) continue;
        int ok = t->ndim == norm && t->dtype == x->dtype && t->device == x->device;
        for (int d = 0; ok && d < norm; d++) ok = t->sizes[d] == x->sizes[x->ndim - norm + d];
        if (!ok)
            return nnr_errorf(NNR_ERR_INVALID, "layer_norm: %s of shape %s (%s) does not fit the last %d dims of an input of shape %s (%s)",
                              k ? "bias" : "weight", nnr_shape_str(a, sizeof a, t->ndim, t->sizes), nnr_dtype_name(t->dtype), norm,
                              nnr_shape_str(c, sizeof c, x->ndim, x->sizes), nnr_dtype_name(x->dtype));
    }
    return NNR_OK;
}

nnr_tensor *nnr_layer_norm(const nnr_tensor *x, int norm, const nnr_tensor *w, const nnr_tensor *b, double eps)
{
    if (check(x, norm, w, b, eps)) return NULL;
    ln_shape s;
    shape_of(x, norm, &s);
    int64_t mn[2] = {s.M, s.N}, m2[2] = {s.M, 2}, n1[1] = {s.N};
    nnr_tensor *xc = nnr_contiguous(x), *x2 = xc ? nnr_view(xc, 2, mn) : NULL;
    nnr_tensor *wc = w ? nnr_contiguous(w) : NULL, *bc = b ? nnr_contiguous(b) : NULL;
    nnr_tensor *w1 = wc ? nnr_view(wc, 1, n1) : NULL, *b1 = bc ? nnr_view(bc, 1, n1) : NULL;
    nnr_tensor *y = nnr_tensor_alloc(x->dtype, 2, mn, x->device), *stats = nnr_tensor_alloc(x->dtype, 2, m2, x->device);
    int st = x2 && y && stats && (!w || (w1 && b1)) ? NNR_OK : nnr_last_status();
    if (st == NNR_OK) {
        nnr_op_params p = {.struct_size = sizeof p};
        p.f[0] = eps;
        nnr_tensor *in[3] = {x2, w1, b1}, *out[2] = {y, stats};
        st = nnr_run_tensors("layer_norm", NNR_OP_LAYER_NORM, x->device, w ? 3 : 1, in, 2, out, &p);
    }
    nnr_tensor *r = st == NNR_OK ? nnr_view(y, x->ndim, x->sizes) : NULL;
    if (st == NNR_OK && !r) st = nnr_last_status();
    const nnr_tensor *in[3] = {x, w, b};
    if (st == NNR_OK && nnr_should_record(3, in)) {
        nnr_node *node = nnr_node_new("LayerNormBackward", layer_norm_backward, w ? 3 : 1, in);
        if (!node) st = nnr_last_status();
        if (node) {
            node->i[0] = norm;
            node->i[1] = w != NULL;
            node->f[0] = eps;
            node->double_diff = 1;
            st = nnr_save(node, x, 0);
            if (!st) st = nnr_save(node, stats, 0);
            if (!st && w) st = nnr_save(node, w, 0);
            st = nnr_node_finish(r, node, st);
        }
    }
    nnr_tensor *t[8] = {xc, x2, wc, bc, w1, b1, y, stats};
    nnr_release_all(8, t);
    if (st) { nnr_tensor_release(r); return NULL; }
    return r;
}

/* Batch norm over dim 1 of [N, C, ...], composed from the backend's four BN ops and elementwise
 * ones: the front end, its gradients, what it records and its backward. */
#include <string.h>
#include <math.h>
#include "ops/internal.h"

static nnr_tensor *row_stack(nnr_tensor *const *rows, int n)
{
    nnr_tensor *u[3];
    for (int k = 0; k < n; k++) u[k] = nnr_unsqueeze(rows[k], 0);
    nnr_tensor *r = nnr_cat(n, u, 0);
    for (int k = 0; k < n; k++) nnr_tensor_release(u[k]);
    return r;
}
static nnr_tensor *bn_run(int op, int nin, nnr_tensor *const *in, int nout_dims, const int64_t *out_sizes, int dtype, int device,
                          double eps)
{
    nnr_tensor *out = nnr_tensor_alloc(dtype, nout_dims, out_sizes, device);
    nnr_op_params p = {.struct_size = sizeof p, .f = {eps}};
    if (out && nnr_run_tensors("batch_norm", op, device, nin, in, 1, &out, &p)) { nnr_tensor_release(out); return NULL; }
    return out;
}

/* ---------------- backward ---------------- */

static int batch_norm_grads(const nnr_tensor *xc, const nnr_tensor *w, const nnr_tensor *mean, const nnr_tensor *invstd, int training,
                         const nnr_tensor *gy, nnr_tensor **gx, nnr_tensor **gw, nnr_tensor **gb)
{
    int dt = xc->dtype, dev = xc->device;
    int64_t C = xc->sizes[1], M = nnr_tensor_numel(xc) / (C ? C : 1);
    nnr_tensor *g = nnr_contiguous(gy), *mi = NULL, *sums = NULL, *sdy = NULL, *sdyx = NULL, *k = NULL, *coef = NULL;
    nnr_tensor *a = NULL, *bcoef = NULL, *ccoef = NULL;
    int st = g ? NNR_OK : nnr_last_status();
    nnr_tensor *rows[3] = {(nnr_tensor *)mean, (nnr_tensor *)invstd, NULL};
    if (!st) st = (mi = row_stack(rows, 2)) ? NNR_OK : nnr_last_status();
    if (!st) {
        nnr_tensor *in[3] = {g, (nnr_tensor *)xc, mi};
        int64_t s2[2] = {2, C};
        st = (sums = bn_run(NNR_OP_BN_BACKWARD_REDUCE, 3, in, 2, s2, dt, dev, 0)) ? NNR_OK : nnr_last_status();
    }
    if (!st) { sdy = nnr_select(sums, 0, 0); sdyx = nnr_select(sums, 0, 1); if (!sdy || !sdyx) st = nnr_last_status(); }
    if (!st && gb) st = (*gb = nnr_contiguous(sdy)) ? NNR_OK : nnr_last_status();
    if (!st && gw) st = (*gw = nnr_contiguous(sdyx)) ? NNR_OK : nnr_last_status();
    if (!st && gx) {
        k = w ? nnr_binary(NNR_OP_MUL, w, invstd) : nnr_clone(invstd);
        if (!k) st = nnr_last_status();
        else if (training) {       /* dx = k dy + b x + c, b = -k invstd sum(dy xhat)/M, c = -k sum(dy)/M - b mean */
            nnr_tensor *t1 = nnr_binary(NNR_OP_MUL, k, invstd);
            nnr_tensor *t2 = t1 ? nnr_binary(NNR_OP_MUL, t1, sdyx) : NULL;
            bcoef = t2 ? nnr_binary_scalar(NNR_OP_MUL, t2, -1.0 / (double)M, 0) : NULL;
            nnr_tensor *t3 = bcoef ? nnr_binary(NNR_OP_MUL, k, sdy) : NULL;
            nnr_tensor *t4 = t3 ? nnr_binary_scalar(NNR_OP_MUL, t3, -1.0 / (double)M, 0) : NULL;
            nnr_tensor *t5 = t4 ? nnr_binary(NNR_OP_MUL, bcoef, mean) : NULL;
            ccoef = t5 ? nnr_binary(NNR_OP_SUB, t4, t5) : NULL;
            nnr_tensor_release(t1); nnr_tensor_release(t2); nnr_tensor_release(t3); nnr_tensor_release(t4); nnr_tensor_release(t5);
            if (!ccoef) st = nnr_last_status();
        } else {
            bcoef = nnr_full(dt, 1, &C, 0.0, dev);
            ccoef = nnr_full(dt, 1, &C, 0.0, dev);
            if (!bcoef || !ccoef) st = nnr_last_status();
        }
        if (!st) {
            nnr_tensor *r3[3] = {k, bcoef, ccoef};
            coef = row_stack(r3, 3);
            nnr_tensor *in[3] = {g, (nnr_tensor *)xc, coef};
            st = (coef && (*gx = bn_run(NNR_OP_BN_BACKWARD_APPLY, 3, in, xc->ndim, xc->sizes, dt, dev, 0))) ? NNR_OK : nnr_last_status();
        }
    }
    nnr_tensor *all[] = {g, mi, sums, sdy, sdyx, k, coef, a, bcoef, ccoef};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nnr_tensor_release(all[i]);
    return st;
}

/* ---------------- the backward as recorded ops (create_graph) ----------------
 * The same gradients from composed ops that record themselves, so that they can be differentiated
 * again; in training the batch statistics are recomputed from x (they depend on it):
 *   xhat = (x - mean) invstd, dxhat = dy w,
 *   dx = invstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))   (training; dxhat invstd in eval),
 *   dw = sum(dy xhat), db = sum(dy) over every dim but 1 */
typedef struct bn_shape { int nd, dims[NNR_MAX_DIMS]; int64_t per_channel[NNR_MAX_DIMS]; } bn_shape;

/* t [C] as [1, C, 1, ...], recorded */
static nnr_tensor *per_channel(const bn_shape *b, const nnr_tensor *t) { return nnr_reshape(t, b->nd + 1, b->per_channel); }
static nnr_tensor *mean_over(const bn_shape *b, const nnr_tensor *t) { return nnr_reduce(NNR_OP_MEAN, t, b->nd, b->dims, 1, 0); }

static nnr_tensor *normalized(const bn_shape *b, const nnr_tensor *x, const nnr_tensor *mean, const nnr_tensor *invstd, int training,
                              double eps, nnr_tensor **inv_out)
{
    nnr_tensor *m = training ? mean_over(b, x) : per_channel(b, mean);
    nnr_tensor *xm = m ? nnr_binary(NNR_OP_SUB, x, m) : NULL, *inv = NULL;
    if (xm && training) {
        nnr_tensor *sq = nnr_mul(xm, xm), *var = sq ? mean_over(b, sq) : NULL;
        nnr_tensor *ve = var ? nnr_binary_scalar(NNR_OP_ADD, var, eps, 0) : NULL;
        inv = ve ? nnr_binary_scalar(NNR_OP_POW, ve, -0.5, 0) : NULL;
        nnr_tensor *t[3] = {sq, var, ve};
        nnr_release_all(3, t);
    } else if (xm) {
        inv = per_channel(b, invstd);
    }
    nnr_tensor *xhat = inv ? nnr_mul(xm, inv) : NULL;
    nnr_tensor_release(m);
    nnr_tensor_release(xm);
    if (xhat) *inv_out = inv; else nnr_tensor_release(inv);
    return xhat;
}

static int batch_norm_grads_recorded(nnr_node *node, const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *mean,
                                     const nnr_tensor *invstd, const nnr_tensor *gy, nnr_tensor **grads)
{
    bn_shape b = {0};
    for (int d = 0; d < x->ndim; d++) {
        b.per_channel[d] = d == 1 ? x->sizes[1] : 1;
        if (d != 1) b.dims[b.nd++] = d;
    }
    int training = (int)node->i[0];
    nnr_tensor *inv = NULL, *xhat = normalized(&b, x, mean, invstd, training, node->f[0], &inv);
    if (!xhat) return nnr_last_status();
    int st = NNR_OK;
    if (node->in[2].node) st = (grads[2] = nnr_reduce(NNR_OP_SUM, gy, b.nd, b.dims, 0, 0)) ? NNR_OK : nnr_last_status();
    if (!st && node->in[1].node) {
        nnr_tensor *gx = nnr_mul(gy, xhat);
        st = gx && (grads[1] = nnr_reduce(NNR_OP_SUM, gx, b.nd, b.dims, 0, 0)) ? NNR_OK : nnr_last_status();
        nnr_tensor_release(gx);
    }
    if (!st && node->in[0].node) {
        nnr_tensor *wc = w ? per_channel(&b, w) : NULL;
        nnr_tensor *dxhat = w ? (wc ? nnr_mul(gy, wc) : NULL) : nnr_clone(gy), *r = NULL;
        if (dxhat && training) {
            nnr_tensor *m1 = mean_over(&b, dxhat), *p = nnr_mul(dxhat, xhat), *m2 = p ? mean_over(&b, p) : NULL;
            nnr_tensor *t1 = m2 ? nnr_mul(xhat, m2) : NULL, *t2 = m1 ? nnr_binary(NNR_OP_SUB, dxhat, m1) : NULL;
            nnr_tensor *t3 = t1 && t2 ? nnr_binary(NNR_OP_SUB, t2, t1) : NULL;
            r = t3 ? nnr_mul(t3, inv) : NULL;
            nnr_tensor *t[6] = {m1, p, m2, t1, t2, t3};
            nnr_release_all(6, t);
        } else if (dxhat) {
            r = nnr_mul(dxhat, inv);
        }
        st = (grads[0] = r) ? NNR_OK : nnr_last_status();
        nnr_tensor_release(wc);
        nnr_tensor_release(dxhat);
    }
    nnr_tensor_release(xhat);
    nnr_tensor_release(inv);
    return st;
}

static int batch_norm_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0), *mean = nnr_node_saved(node, 1), *invstd = nnr_node_saved(node, 2);
    const nnr_tensor *w = node->i[1] ? nnr_node_saved(node, 3) : NULL;
    if (!x || !mean || !invstd || (node->i[1] && !w)) return nnr_last_status();
    if (nnr_creating_graph()) return batch_norm_grads_recorded(node, x, w, mean, invstd, g, grads);
    int has_w = node->n_inputs > 1 && node->in[1].node, has_b = node->n_inputs > 2 && node->in[2].node;
    nnr_tensor *xc = nnr_contiguous(x), *wc = w ? nnr_to(w, x->dtype, x->device) : NULL;
    int st = xc && (!w || wc) ? batch_norm_grads(xc, wc, mean, invstd, (int)node->i[0], g, node->in[0].node ? &grads[0] : NULL,
                                                 has_w ? &grads[1] : NULL, has_b ? &grads[2] : NULL)
                              : nnr_last_status();
    nnr_tensor_release(xc);
    nnr_tensor_release(wc);
    return st;
}

/* saves x and the weight as given (a backward that creates a graph needs their history; the
 * contiguous x the kernels read is made again, free when x is contiguous already) */
static int record_batch_norm(const nnr_tensor *const *inputs, const nnr_tensor *mean, const nnr_tensor *invstd, int training, double eps,
                             nnr_tensor *out)
{
    const nnr_tensor *xc = inputs[0], *w = inputs[1];
    nnr_node *node = nnr_node_new("BatchNormBackward", batch_norm_backward, 3, inputs);
    if (!node) return nnr_last_status();
    node->i[0] = training;
    node->i[1] = w != NULL;
    node->f[0] = eps;
    node->double_diff = 1;
    int st = nnr_save(node, xc, 0);
    if (!st) st = nnr_save(node, mean, 0);
    if (!st) st = nnr_save(node, invstd, 0);
    if (!st && w) st = nnr_save(node, w, 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

/* ---------------- front end ---------------- */

static int check_batch_norm(const nnr_tensor *x, const nnr_tensor *const *per_channel, int training, double momentum, double eps)
{
    char a[NNR_SHAPE_BUF];
    if (x->ndim < 2)
        return nnr_errorf(NNR_ERR_INVALID, "batch_norm: input of shape %s, expected [N, C, ...]", nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
    if (x->dtype != NNR_F32 && x->dtype != NNR_F64)
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "batch_norm: dtype %s is not supported (expected f32 or f64; under autocast half inputs "
                          "are normalised in f32)", nnr_dtype_name(x->dtype));
    int64_t C = x->sizes[1];
    for (int k = 0; k < 4; k++)
        if (per_channel[k] && (per_channel[k]->ndim != 1 || per_channel[k]->sizes[0] != C))
            return nnr_errorf(NNR_ERR_INVALID, "batch_norm: per-channel tensor of shape %s for %lld channels",
                              nnr_shape_str(a, sizeof a, per_channel[k]->ndim, per_channel[k]->sizes), (long long)C);
    if (!training && (!per_channel[2] || !per_channel[3]))
        return nnr_errorf(NNR_ERR_INVALID, "batch_norm: evaluation needs running statistics");
    /* one value per channel has no variance: the output would be all zeros (PyTorch refuses too) */
    int64_t numel = nnr_tensor_numel(x);
    if (training && C > 0 && numel / C == 1)
        return nnr_errorf(NNR_ERR_INVALID, "batch_norm: expected more than 1 value per channel when training, got input of shape %s",
                          nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
    if (!(eps > 0) || !isfinite(eps) || !(momentum >= 0 && momentum <= 1))
        return nnr_errorf(NNR_ERR_INVALID, "batch_norm: eps must be a finite number > 0 and momentum in [0, 1] (got %g, %g)", eps, momentum);
    return NNR_OK;
}

/* the batch's mean and invstd [C] (BN_STATS); the running statistics move towards them, with the
 * unbiased variance, as PyTorch's do */
static int batch_statistics(nnr_tensor *xc, nnr_tensor *running_mean, nnr_tensor *running_var, double momentum, double eps,
                            nnr_tensor **mean, nnr_tensor **invstd)
{
    int dt = xc->dtype, dev = xc->device;
    int64_t C = xc->sizes[1], M = nnr_tensor_numel(xc) / (C ? C : 1);
    nnr_tensor *outs[2] = {nnr_tensor_alloc(dt, 1, &C, dev), nnr_tensor_alloc(dt, 1, &C, dev)};
    nnr_op_params p = {.struct_size = sizeof p, .f = {eps}};
    if (!outs[0] || !outs[1] || nnr_run_tensors("batch_norm", NNR_OP_BN_STATS, dev, 1, &xc, 2, outs, &p)) {
        nnr_release_all(2, outs);
        return nnr_last_status();
    }
    *mean = outs[0];
    *invstd = outs[1];
    if (!running_mean || !running_var) return NNR_OK;
    nnr_tensor *is2 = nnr_binary(NNR_OP_MUL, *invstd, *invstd);
    nnr_tensor *var = is2 ? nnr_unary(NNR_OP_RECIPROCAL, is2) : NULL;
    nnr_tensor *var_b = var ? nnr_binary_scalar(NNR_OP_SUB, var, eps, 0) : NULL;
    nnr_tensor *var_u = var_b ? nnr_binary_scalar(NNR_OP_MUL, var_b, M > 1 ? (double)M / (double)(M - 1) : 1.0, 0) : NULL;
    int st = var_u ? NNR_OK : nnr_last_status();
    if (!st) st = nnr_binary_scalar_(NNR_OP_MUL, running_mean, 1 - momentum);
    nnr_tensor *dm = st ? NULL : nnr_binary_scalar(NNR_OP_MUL, *mean, momentum, 0);
    if (!st) st = dm ? nnr_binary_(NNR_OP_ADD, running_mean, dm) : nnr_last_status();
    if (!st) st = nnr_binary_scalar_(NNR_OP_MUL, running_var, 1 - momentum);
    nnr_tensor *dv = st ? NULL : nnr_binary_scalar(NNR_OP_MUL, var_u, momentum, 0);
    if (!st) st = dv ? nnr_binary_(NNR_OP_ADD, running_var, dv) : nnr_last_status();
    nnr_tensor *tmp[] = {is2, var, var_b, var_u, dm, dv};
    nnr_release_all((int)(sizeof tmp / sizeof tmp[0]), tmp);
    return st;
}

/* the running statistics as mean and invstd = 1 / sqrt(var + eps) in x's dtype */
static int running_statistics(const nnr_tensor *running_mean, const nnr_tensor *running_var, double eps, int dt, int dev,
                              nnr_tensor **mean, nnr_tensor **invstd)
{
    *mean = nnr_to(running_mean, dt, dev);
    nnr_tensor *ve = *mean ? nnr_binary_scalar(NNR_OP_ADD, running_var, eps, 0) : NULL;
    nnr_tensor *sd = ve ? nnr_unary(NNR_OP_SQRT, ve) : NULL;
    nnr_tensor *sdc = sd ? nnr_to(sd, dt, dev) : NULL;
    *invstd = sdc ? nnr_unary(NNR_OP_RECIPROCAL, sdc) : NULL;
    nnr_tensor_release(ve); nnr_tensor_release(sd); nnr_tensor_release(sdc);
    return *invstd ? NNR_OK : nnr_last_status();
}

/* y = x * scale + shift per channel (BN_AFFINE), scale = w invstd, shift = b - mean scale */
static nnr_tensor *normalize(nnr_tensor *xc, const nnr_tensor *w, const nnr_tensor *b, const nnr_tensor *mean, const nnr_tensor *invstd)
{
    nnr_tensor *scale = w ? nnr_binary(NNR_OP_MUL, w, invstd) : nnr_clone(invstd);
    nnr_tensor *ms = scale ? nnr_binary(NNR_OP_MUL, mean, scale) : NULL;
    nnr_tensor *shift = ms ? (b ? nnr_binary(NNR_OP_SUB, b, ms) : nnr_unary(NNR_OP_NEG, ms)) : NULL;
    nnr_tensor *rows[2] = {scale, shift};
    nnr_tensor *coef = shift ? row_stack(rows, 2) : NULL, *y = NULL;
    if (coef) {
        nnr_tensor *in[2] = {xc, coef};
        y = bn_run(NNR_OP_BN_AFFINE, 2, in, xc->ndim, xc->sizes, xc->dtype, xc->device, 0);
    }
    nnr_tensor *tmp[] = {scale, ms, shift, coef};
    nnr_release_all(4, tmp);
    return y;
}

nnr_tensor *nnr_batch_norm(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, nnr_tensor *running_mean,
                           nnr_tensor *running_var, int training, double momentum, double eps)
{
    if (nnr_get_autocast() >= 0 && (x->dtype == NNR_F16 || x->dtype == NNR_BF16)) {
        /* autocast normalises in f32, as PyTorch's does: half statistics lose too much */
        nnr_tensor *x32 = nnr_to(x, NNR_F32, x->device);
        nnr_tensor *y = x32 ? nnr_batch_norm(x32, weight, bias, running_mean, running_var, training, momentum, eps) : NULL;
        nnr_tensor_release(x32);
        return y;
    }
    const nnr_tensor *per_channel[4] = {weight, bias, running_mean, running_var};
    if (check_batch_norm(x, per_channel, training, momentum, eps)) return NULL;
    const nnr_tensor *in3[3] = {x, weight, bias};
    int record = nnr_should_record(3, in3);
    int prev = nnr_set_grad_enabled(0);
    int dt = x->dtype, dev = x->device;
    nnr_tensor *xc = nnr_contiguous(x), *mean = NULL, *invstd = NULL, *y = NULL;
    nnr_tensor *w = weight ? nnr_to(weight, dt, dev) : NULL, *b = bias ? nnr_to(bias, dt, dev) : NULL;
    int st = xc && (!weight || w) && (!bias || b) ? NNR_OK : nnr_last_status();
    if (!st) st = training ? batch_statistics(xc, running_mean, running_var, momentum, eps, &mean, &invstd)
                           : running_statistics(running_mean, running_var, eps, dt, dev, &mean, &invstd);
    if (!st) y = normalize(xc, w, b, mean, invstd);
    nnr_set_grad_enabled(prev);
    if (y && record && record_batch_norm(in3, mean, invstd, training, eps, y)) { nnr_tensor_release(y); y = NULL; }
    nnr_tensor *all[] = {xc, mean, invstd, w, b};
    nnr_release_all(5, all);
    return y;
}

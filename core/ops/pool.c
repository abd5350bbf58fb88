/* Pooling (NCHW): max (with the argmax for its backward), average, adaptive average; what they
 * record and their backwards. */
#include <string.h>
#include "ops/internal.h"

/* gradient of a pooling op for its backward */
static nnr_tensor *pool_grad(int op, const nnr_tensor *x, const nnr_tensor *indices, const nnr_tensor *gy, const int64_t *params)
{
    nnr_tensor *g = nnr_contiguous(gy);
    if (!g) return NULL;
    nnr_tensor *gx = nnr_tensor_alloc(x->dtype, 4, x->sizes, x->device);
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, params, sizeof p.i);
    int bop = op == NNR_OP_MAXPOOL2D ? NNR_OP_MAXPOOL2D_BACKWARD : op == NNR_OP_AVGPOOL2D ? NNR_OP_AVGPOOL2D_BACKWARD : NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD;
    nnr_tensor *in[2] = {g, (nnr_tensor *)indices};
    if (gx && nnr_run_tensors("pool backward", bop, x->device, indices ? 2 : 1, in, 1, &gx, &p)) { nnr_tensor_release(gx); gx = NULL; }
    nnr_tensor_release(g);
    return gx;
}

/* ---------------- the backward as recorded ops (create_graph) ----------------
 * Pooling's backward is linear in the gradient. Max pooling's is a scatter-add of the gradient
 * to the argmax positions, composed here from recorded ops (gather is its own adjoint's pair). The
 * average poolings' backward and forward are each other's adjoints: a pair of nodes, each
 * recording the other as its backward, so gradients of any order go through. */

/* max pooling's input gradient: g [N, C, HO, WO] added at the argmax (flat h*W+w, -1: none) of x's planes */
static nnr_tensor *max_grad_recorded(const nnr_tensor *x, const nnr_tensor *idx, const nnr_tensor *g)
{
    int64_t N = x->sizes[0], C = x->sizes[1], plane = x->sizes[2] * x->sizes[3], outs = g->sizes[2] * g->sizes[3];
    int64_t flat_x[3] = {N, C, plane}, flat_y[3] = {N, C, outs};
    nnr_tensor *i3 = nnr_reshape(idx, 3, flat_y), *none = i3 ? nnr_binary_scalar(NNR_OP_LT, i3, 0, 0) : NULL;
    nnr_tensor *ic = none ? nnr_where_scalar(none, NULL, 0, i3, 0) : NULL;        /* -1 -> 0, its gradient masked below */
    nnr_tensor *g3 = ic ? nnr_reshape(g, 3, flat_y) : NULL, *gm = g3 ? nnr_where_scalar(none, NULL, 0, g3, 0) : NULL;
    nnr_tensor *z = gm ? nnr_full(g->dtype, 3, flat_x, 0.0, g->device) : NULL;
    nnr_tensor *s = z ? nnr_scatter_add(z, 2, ic, gm) : NULL, *r = s ? nnr_reshape(s, 4, x->sizes) : NULL;
    nnr_tensor *t[7] = {i3, none, ic, g3, gm, z, s};
    nnr_release_all(7, t);
    return r;
}

static int avg_pair_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads);

/* direction 0: the average pooling's input gradient from g; 1: the pooling itself of g (its
 * adjoint). Runs the kernel, and records the other direction as its backward when g requires grad. */
static nnr_tensor *avg_pair(int op, int direction, const int64_t *params, const int64_t *x_sizes, const int64_t *y_sizes, const nnr_tensor *g)
{
    nnr_tensor *c = nnr_contiguous(g);
    if (!c) return NULL;
    nnr_tensor *r = nnr_tensor_alloc(g->dtype, 4, direction == 0 ? x_sizes : y_sizes, g->device);
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, params, sizeof p.i);
    int kernel = direction == 1 ? op : op == NNR_OP_AVGPOOL2D ? NNR_OP_AVGPOOL2D_BACKWARD : NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD;
    if (r && nnr_run_tensors("pool backward", kernel, g->device, 1, &c, 1, &r, &p)) { nnr_tensor_release(r); r = NULL; }
    nnr_tensor_release(c);
    if (r && nnr_should_record(1, &g)) {
        nnr_node *node = nnr_node_new(direction == 0 ? "AvgPool2DBackwardBackward" : "AvgPool2DBackward", avg_pair_backward, 1, &g);
        if (node) {
            memcpy(node->i, params, sizeof node->i);
            node->f[0] = op;
            node->f[1] = 1 - direction;          /* the direction its backward computes */
            node->double_diff = 1;
        }
        NNR_RECORD(r, nnr_node_finish(r, node, NNR_OK));
    }
    return r;
}

/* the other direction of the pair: the node's input (g's shape in the forward) is the shape it
 * computes, and the gradient that arrives has the other */
static int avg_pair_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int direction = (int)node->f[1];
    const int64_t *mine = node->in[0].sizes;
    grads[0] = avg_pair((int)node->f[0], direction, node->i, direction == 0 ? mine : g->sizes, direction == 1 ? mine : g->sizes, g);
    return grads[0] ? NNR_OK : nnr_last_status();
}

static int pool_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0);
    const nnr_tensor *idx = node->n_saved > 1 ? nnr_node_saved(node, 1) : NULL;
    if (!x || (node->n_saved > 1 && !idx)) return nnr_last_status();
    int64_t params[NNR_MAX_DIMS];
    memcpy(params, node->i, sizeof params);
    int op = (int)node->f[0];
    if (nnr_creating_graph())
        grads[0] = op == NNR_OP_MAXPOOL2D ? max_grad_recorded(x, idx, g) : avg_pair(op, 0, params, x->sizes, g->sizes, g);
    else
        grads[0] = pool_grad(op, x, idx, g, params);
    return grads[0] ? NNR_OK : nnr_last_status();
}

static int record_pool(int op, const nnr_tensor *x, const nnr_tensor *xc, const nnr_tensor *indices, const int64_t *params, nnr_tensor *out)
{
    const char *name = op == NNR_OP_MAXPOOL2D ? "MaxPool2DBackward" : op == NNR_OP_AVGPOOL2D ? "AvgPool2DBackward" : "AdaptiveAvgPool2DBackward";
    nnr_node *node = nnr_node_new(name, pool_backward, 1, &x);
    if (!node) return nnr_last_status();
    memcpy(node->i, params, sizeof node->i);
    node->f[0] = op;
    node->double_diff = 1;
    int st = nnr_save(node, xc, 0);
    if (!st && indices) st = nnr_save(node, indices, 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

/* ---------------- front ends ---------------- */

/* f32 and f64 everywhere; f16 and bf16 where the backend pools them (a probe of the call's kind) */
static int check_pool_input(const char *op, int opid, const nnr_tensor *x)
{
    char a[NNR_SHAPE_BUF];
    if (x->ndim != 4) return nnr_errorf(NNR_ERR_INVALID, "%s: expected a 4-d input [N, C, H, W], got %s", op, nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
    if (x->dtype == NNR_F32 || x->dtype == NNR_F64) return NNR_OK;
    if (x->dtype == NNR_F16 || x->dtype == NNR_BF16) {
        nnr_tensor *xv = nnr_tensor_new_view(x, x->ndim, x->sizes, x->strides, x->offset);
        nnr_op_params p = {.struct_size = sizeof p, .i = {1, 1, 1, 1, 0, 0, 1, 1}};
        int takes = xv && nnr_backend_takes(x->device, opid, 1, &xv, 1, &xv, &p);
        nnr_tensor_release(xv);
        if (takes) return NNR_OK;
    }
    return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported (expected f32 or f64; f16 and bf16 on backends that have them)",
                      op, nnr_dtype_name(x->dtype));
}

nnr_tensor *nnr_max_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int ceil_mode)
{
    char a[NNR_SHAPE_BUF];
    if (check_pool_input("max_pool2d", NNR_OP_MAXPOOL2D, x)) return NULL;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) {
        nnr_errorf(NNR_ERR_INVALID, "max_pool2d: kernel %dx%d, stride %dx%d, padding %dx%d: padding must be at most half the kernel", kh, kw, sh, sw, ph, pw);
        return NULL;
    }
    int64_t HO = nnr_window_out_size(x->sizes[2], kh, sh, ph, dh, ceil_mode), WO = nnr_window_out_size(x->sizes[3], kw, sw, pw, dw, ceil_mode);
    if (HO < 1 || WO < 1) {
        nnr_errorf(NNR_ERR_INVALID, "max_pool2d: input of shape %s is too small for a %dx%d window", nnr_shape_str(a, sizeof a, x->ndim, x->sizes), kh, kw);
        return NULL;
    }
    nnr_tensor *c;
    if (nnr_prepare_operands(1, &x, x->dtype, &c)) return NULL;
    int64_t sizes[4] = {x->sizes[0], x->sizes[1], HO, WO};
    /* the argmax is for the backward: without recording, left out where the backend takes the call without it */
    nnr_tensor *out[2] = {nnr_tensor_alloc(x->dtype, 4, sizes, x->device), NULL};
    nnr_op_params p = {.struct_size = sizeof p, .i = {kh, kw, sh, sw, ph, pw, dh, dw}};
    int record = nnr_should_record(1, &x);
    int with_idx = record || !out[0] || !nnr_backend_knows(x->device, 4) || !nnr_backend_takes(x->device, NNR_OP_MAXPOOL2D, 1, &c, 1, out, &p);
    if (with_idx) out[1] = nnr_tensor_alloc(NNR_I64, 4, sizes, x->device);
    int st = (out[0] && (out[1] || !with_idx)) ? nnr_run_tensors("max_pool2d", NNR_OP_MAXPOOL2D, x->device, 1, &c, with_idx ? 2 : 1, out, &p)
                                               : nnr_last_status();
    if (st == NNR_OK && record) st = record_pool(NNR_OP_MAXPOOL2D, x, c, out[1], p.i, out[0]);
    nnr_tensor_release(c);
    nnr_tensor_release(out[1]);
    if (st) { nnr_tensor_release(out[0]); return NULL; }
    return out[0];
}

static nnr_tensor *avg_pool_impl(int op, const nnr_tensor *x, const int64_t *params, int64_t HO, int64_t WO)
{
    const char *name = op == NNR_OP_AVGPOOL2D ? "avg_pool2d" : "adaptive_avg_pool2d";
    nnr_tensor *c;
    if (nnr_prepare_operands(1, &x, x->dtype, &c)) return NULL;
    int64_t sizes[4] = {x->sizes[0], x->sizes[1], HO, WO};
    nnr_tensor *y = nnr_tensor_alloc(x->dtype, 4, sizes, x->device);
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, params, sizeof p.i);
    int st = y ? nnr_run_tensors(name, op, x->device, 1, &c, 1, &y, &p) : nnr_last_status();
    if (st == NNR_OK && nnr_should_record(1, &x)) st = record_pool(op, x, c, NULL, p.i, y);
    nnr_tensor_release(c);
    if (st) { nnr_tensor_release(y); return NULL; }
    return y;
}

nnr_tensor *nnr_avg_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int ceil_mode, int count_include_pad)
{
    if (check_pool_input("avg_pool2d", NNR_OP_AVGPOOL2D, x)) return NULL;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) {
        nnr_errorf(NNR_ERR_INVALID, "avg_pool2d: kernel %dx%d, stride %dx%d, padding %dx%d: padding must be at most half the kernel", kh, kw, sh, sw, ph, pw);
        return NULL;
    }
    int64_t HO = nnr_window_out_size(x->sizes[2], kh, sh, ph, 1, ceil_mode), WO = nnr_window_out_size(x->sizes[3], kw, sw, pw, 1, ceil_mode);
    if (HO < 1 || WO < 1) {
        char a[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "avg_pool2d: input of shape %s is too small for a %dx%d window", nnr_shape_str(a, sizeof a, x->ndim, x->sizes), kh, kw);
        return NULL;
    }
    int64_t params[8] = {kh, kw, sh, sw, ph, pw, count_include_pad, 0};
    return avg_pool_impl(NNR_OP_AVGPOOL2D, x, params, HO, WO);
}

nnr_tensor *nnr_adaptive_avg_pool2d(const nnr_tensor *x, int oh, int ow)
{
    if (check_pool_input("adaptive_avg_pool2d", NNR_OP_ADAPTIVE_AVGPOOL2D, x)) return NULL;
    if (oh < 1 || ow < 1) { nnr_errorf(NNR_ERR_INVALID, "adaptive_avg_pool2d: output size %dx%d must be positive", oh, ow); return NULL; }
    int64_t params[8] = {0};
    return avg_pool_impl(NNR_OP_ADAPTIVE_AVGPOOL2D, x, params, oh, ow);
}


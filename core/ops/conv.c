/* 2-d convolution (NCHW, groups, stride, padding, dilation), optionally fused with a relu: the
 * front end, its gradients, what it records and its backward. The fused forms (relu in the
 * forward, the relu's mask and the bias gradient in the backward) go to a backend only when its
 * supports() takes them; otherwise the core composes them from separate ops.
 *
 *   x [N, C, H, W], weight [O, C/groups, KH, KW], bias [O] -> y [N, O, HO, WO]
 *   geom (params.i): stride h, w; padding h, w; dilation h, w; groups; relu */
#include <string.h>
#include "ops/internal.h"

/* whether x's backend has a convolution in dtype (autocast keeps f32 where it has none) */
static int backend_convolves(const nnr_tensor *x, const nnr_tensor *w, int dtype)
{
    const nnr_device_entry *dev = nnr_device_get(x->device);
    if (!dev) return 0;
    nnr_tensor_desc dx, dw, dy;
    nnr_tensor_desc_of(x, &dx);
    nnr_tensor_desc_of(w, &dw);
    dx.dtype = dw.dtype = dtype;
    dy = dx;
    dy.sizes[1] = w->sizes[0];
    nnr_op_params p = {.struct_size = sizeof p, .i = {1, 1, 0, 0, 1, 1, 1, 0}};
    nnr_op_call call = {.struct_size = sizeof call, .op = NNR_OP_CONV2D, .n_inputs = 2, .n_outputs = 1,
                        .inputs = {&dx, &dw}, .outputs = {&dy}, .params = &p};
    return dev->plugin->supports(dev->plugin, &call);
}

static int check_conv(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, const int64_t *g)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (x->ndim != 4 || w->ndim != 4)
        return nnr_errorf(NNR_ERR_INVALID, "conv2d: expected a 4-d input [N, C, H, W] and a 4-d weight [O, C/groups, KH, KW], got %s and %s",
                          nnr_shape_str(a, sizeof a, x->ndim, x->sizes), nnr_shape_str(b, sizeof b, w->ndim, w->sizes));
    if (g[0] < 1 || g[1] < 1 || g[4] < 1 || g[5] < 1 || g[2] < 0 || g[3] < 0 || g[6] < 1)
        return nnr_errorf(NNR_ERR_INVALID, "conv2d: stride and dilation must be >= 1, padding >= 0, groups >= 1");
    int64_t C = x->sizes[1], O = w->sizes[0], groups = g[6];
    if (C % groups || O % groups || w->sizes[1] != C / groups)
        return nnr_errorf(NNR_ERR_INVALID, "conv2d: input of shape %s has %lld channels, weight of shape %s expects %lld (groups %lld)",
                          nnr_shape_str(a, sizeof a, x->ndim, x->sizes), (long long)C, nnr_shape_str(b, sizeof b, w->ndim, w->sizes),
                          (long long)(w->sizes[1] * groups), (long long)groups);
    if (bias && (bias->ndim != 1 || bias->sizes[0] != O))
        return nnr_errorf(NNR_ERR_INVALID, "conv2d: bias of shape %s, expected [%lld]", nnr_shape_str(a, sizeof a, bias->ndim, bias->sizes), (long long)O);
    if (x->device != w->device || (bias && bias->device != x->device))
        return nnr_errorf(NNR_ERR_DEVICE, "conv2d: input, weight and bias must be on one device");
    int dt = nnr_promote_types(x->dtype, w->dtype);
    if (dt != NNR_F32 && dt != NNR_F64 && !((dt == NNR_F16 || dt == NNR_BF16) && backend_convolves(x, w, dt)))
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "conv2d: dtype %s is not supported (expected f32 or f64; f16 and bf16 on backends that have them)",
                          nnr_dtype_name(dt));
    return NNR_OK;
}

/* ---------------- backward ---------------- */

/* the bias gradient: grad_out summed over N, H, W */
static int bias_grad(const nnr_tensor *g, nnr_tensor **gb)
{
    int dims[3] = {0, 2, 3};
    *gb = nnr_reduce(NNR_OP_SUM, g, 3, dims, 0, 0);
    return *gb ? NNR_OK : nnr_last_status();
}

/* the gradients, with m (the relu output, or NULL) as the kernels' mask; fused_bias: the weight
 * kernel also writes the bias gradient */
static int run_grads(const nnr_tensor *x, const nnr_tensor *w, nnr_tensor *g, nnr_tensor *m, const nnr_op_params *p, int fused_bias,
                     nnr_tensor **gx, nnr_tensor **gw, nnr_tensor **gb)
{
    int st = NNR_OK;
    if (gx) {
        *gx = nnr_tensor_alloc(x->dtype, 4, x->sizes, x->device);
        nnr_tensor *in[3] = {g, (nnr_tensor *)w, m};
        if (!*gx || nnr_run_tensors("conv2d backward", NNR_OP_CONV2D_GRAD_INPUT, x->device, m ? 3 : 2, in, 1, gx, p)) st = nnr_last_status();
    }
    if (gw && st == NNR_OK) {
        nnr_tensor *outs[2] = {nnr_tensor_alloc(w->dtype, 4, w->sizes, w->device), NULL};
        if (fused_bias) outs[1] = nnr_tensor_alloc(w->dtype, 1, w->sizes, w->device);
        nnr_tensor *in[3] = {(nnr_tensor *)x, g, m};
        *gw = outs[0];
        if (fused_bias) *gb = outs[1];
        if (!outs[0] || (fused_bias && !outs[1]) ||
            nnr_run_tensors("conv2d backward", NNR_OP_CONV2D_GRAD_WEIGHT, x->device, m ? 3 : 2, in, fused_bias ? 2 : 1, outs, p))
            st = nnr_last_status();
    }
    if (gb && !fused_bias && st == NNR_OK) st = bias_grad(g, gb);
    return st;
}

/* whether the backend takes the gradient kernels with the relu mask as their third input (and, for
 * *fused_bias, the weight kernel with the bias gradient as a second output) */
static int backend_fuses_grads(const nnr_tensor *x, const nnr_tensor *w, nnr_tensor *g, nnr_tensor *m, nnr_op_params *p,
                               int want_gx, int want_gw, int want_gb, int *fused_bias)
{
    *fused_bias = 0;
    p->i[7] = 0;
    if (!nnr_backend_knows(x->device, 4)) return 0;       /* these forms are ABI 1.4's contract */
    nnr_tensor *gx_probe = nnr_tensor_new_view(x, x->ndim, x->sizes, x->strides, x->offset);
    nnr_tensor *gw_probe = nnr_tensor_new_view(w, w->ndim, w->sizes, w->strides, w->offset);
    int64_t one = 1;
    nnr_tensor *gb_probe = nnr_tensor_new_view(w, 1, w->sizes, &one, w->offset);
    int ok = gx_probe && gw_probe && gb_probe;
    p->i[7] = m != NULL;
    if (ok && m && want_gx) {
        nnr_tensor *in[3] = {g, (nnr_tensor *)w, m};
        ok = nnr_backend_takes(x->device, NNR_OP_CONV2D_GRAD_INPUT, 3, in, 1, &gx_probe, p);
    }
    nnr_tensor *in[3] = {(nnr_tensor *)x, g, m}, *outs[2] = {gw_probe, gb_probe};
    if (ok && m && want_gw) ok = nnr_backend_takes(x->device, NNR_OP_CONV2D_GRAD_WEIGHT, 3, in, 1, outs, p);
    if (ok && m && want_gb && !want_gw) ok = 0;        /* the bias alone needs the masked gradient */
    *fused_bias = ok && want_gb && want_gw && nnr_backend_takes(x->device, NNR_OP_CONV2D_GRAD_WEIGHT, m ? 3 : 2, in, 2, outs, p);
    nnr_tensor_release(gx_probe);
    nnr_tensor_release(gw_probe);
    nnr_tensor_release(gb_probe);
    return ok;
}

/* the gradients of a convolution (recording is off). relu_out: the output of a fused conv+relu,
 * whose mask (> 0) applies to gy: in the kernels where the backend takes it (per image, in cache),
 * else as a separate op first. */
static int conv_grads(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *gy, const int64_t *geom, const nnr_tensor *relu_out,
                      nnr_tensor **gx, nnr_tensor **gw, nnr_tensor **gb)
{
    nnr_tensor *g = nnr_contiguous(gy), *m = relu_out ? nnr_contiguous(relu_out) : NULL;
    if (!g || (relu_out && !m)) { nnr_tensor_release(g); return nnr_last_status(); }
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, geom, sizeof(int64_t) * 7);
    int fused_bias = 0, st;
    /* without a mask, a failed probe (out of memory) just means the plain kernels */
    if (!backend_fuses_grads(x, w, g, m, &p, gx != NULL, gw != NULL, gb != NULL, &fused_bias) && m) {
        nnr_tensor *gm = nnr_binary(NNR_OP_RELU_GRAD, g, m);   /* mask first, as a separate op */
        nnr_tensor_release(m);
        m = NULL;
        p.i[7] = 0;
        st = gm ? NNR_OK : nnr_last_status();
        if (gm) backend_fuses_grads(x, w, gm, NULL, &p, gx != NULL, gw != NULL, gb != NULL, &fused_bias);
        if (gm) st = run_grads(x, w, gm, NULL, &p, fused_bias, gx, gw, gb);
        nnr_tensor_release(gm);
    } else {
        st = run_grads(x, w, g, m, &p, fused_bias, gx, gw, gb);
    }
    nnr_tensor_release(g);
    nnr_tensor_release(m);
    return st;
}

/* ---------------- the backward as recorded ops (create_graph) ----------------
 * When a backward pass creates a graph, the gradients are computed by ops that record themselves:
 * grad_x by the transposed convolution, grad_w by the weight-gradient op below (bilinear in x and
 * grad_y, so its own derivatives are a transposed convolution and a convolution), the relu's mask
 * by RELU_GRAD. */

/* the output_padding that makes a transposed convolution of gy give size `want` along dim d (2, 3) */
static int out_pad_for(const nnr_tensor *gy, int64_t k, const int64_t *geom, int d, int64_t want)
{
    int64_t s = geom[d - 2], pad = geom[d], dil = geom[d + 2];
    return (int)(want - ((gy->sizes[d] - 1) * s - 2 * pad + dil * (k - 1) + 1));
}

static nnr_tensor *conv_weight_grad(const nnr_tensor *x, const nnr_tensor *gy, const int64_t *geom, int ndim, const int64_t *wsizes);

static int conv_weight_grad_backward(nnr_node *node, const nnr_tensor *gg, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0), *gy = nnr_node_saved(node, 1);
    if (!x || !gy) return nnr_last_status();
    const int64_t *g = node->i;
    if (node->in[0].node &&       /* d/dx: the transposed convolution of grad_y by gg, at x's size */
        !(grads[0] = nnr_conv_transpose2d(gy, gg, NULL, (int)g[0], (int)g[1], (int)g[2], (int)g[3], out_pad_for(gy, gg->sizes[2], g, 2, x->sizes[2]),
                                          out_pad_for(gy, gg->sizes[3], g, 3, x->sizes[3]), (int)g[4], (int)g[5], (int)g[6])))
        return nnr_last_status();
    if (node->in[1].node &&       /* d/dgrad_y: the convolution of x by gg */
        !(grads[1] = nnr_conv2d(x, gg, NULL, (int)g[0], (int)g[1], (int)g[2], (int)g[3], (int)g[4], (int)g[5], (int)g[6])))
        return nnr_last_status();
    return NNR_OK;
}

/* grad_w = conv2d_grad_weight(x, grad_y) [wsizes], recorded when an operand requires grad */
static nnr_tensor *conv_weight_grad(const nnr_tensor *x, const nnr_tensor *gy, const int64_t *geom, int ndim, const int64_t *wsizes)
{
    const nnr_tensor *in[2] = {x, gy};
    nnr_tensor *c[2];
    if (nnr_prepare_operands(2, in, nnr_promote_types(x->dtype, gy->dtype), c)) return NULL;
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, geom, sizeof(int64_t) * 7);
    nnr_tensor *gw = nnr_tensor_alloc(c[0]->dtype, ndim, wsizes, x->device);
    if (gw && nnr_run_tensors("conv2d backward", NNR_OP_CONV2D_GRAD_WEIGHT, x->device, 2, c, 1, &gw, &p)) { nnr_tensor_release(gw); gw = NULL; }
    nnr_release_all(2, c);
    if (gw && nnr_should_record(2, in)) {
        nnr_node *node = nnr_node_new("ConvolutionWeightGradBackward", conv_weight_grad_backward, 2, in);
        int st = node ? NNR_OK : nnr_last_status();
        if (node) {
            memcpy(node->i, geom, sizeof(int64_t) * 7);
            node->double_diff = 1;
            st = nnr_save(node, x, 0);
            if (!st) st = nnr_save(node, gy, 0);
        }
        NNR_RECORD(gw, nnr_node_finish(gw, node, st));
    }
    return gw;
}

static int conv_grads_recorded(nnr_node *node, const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *y, const nnr_tensor *gy,
                               nnr_tensor **grads)
{
    const int64_t *g = node->i;
    nnr_tensor *gm = y ? nnr_binary(NNR_OP_RELU_GRAD, gy, y) : nnr_contiguous(gy);
    if (!gm) return nnr_last_status();
    int st = NNR_OK;
    if (node->in[0].node &&
        !(grads[0] = nnr_conv_transpose2d(gm, w, NULL, (int)g[0], (int)g[1], (int)g[2], (int)g[3], out_pad_for(gm, w->sizes[2], g, 2, x->sizes[2]),
                                          out_pad_for(gm, w->sizes[3], g, 3, x->sizes[3]), (int)g[4], (int)g[5], (int)g[6])))
        st = nnr_last_status();
    if (st == NNR_OK && node->in[1].node && !(grads[1] = conv_weight_grad(x, gm, g, w->ndim, w->sizes))) st = nnr_last_status();
    if (st == NNR_OK && node->n_inputs > 2 && node->in[2].node) st = bias_grad(gm, &grads[2]);
    nnr_tensor_release(gm);
    return st;
}

static int conv_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0), *w = nnr_node_saved(node, 1);
    const nnr_tensor *y = node->n_saved > 2 ? nnr_node_saved(node, 2) : NULL;
    if (!x || !w || (node->n_saved > 2 && !y)) return nnr_last_status();
    if (nnr_creating_graph()) return conv_grads_recorded(node, x, w, y, g, grads);
    const nnr_tensor *in[2] = {x, w};
    nnr_tensor *c[2];
    if (nnr_prepare_operands(2, in, nnr_promote_types(x->dtype, w->dtype), c)) return nnr_last_status();
    int has_bias = node->n_inputs > 2 && node->in[2].node;
    int st = conv_grads(c[0], c[1], g, node->i, y, node->in[0].node ? &grads[0] : NULL, node->in[1].node ? &grads[1] : NULL,
                        has_bias ? &grads[2] : NULL);
    nnr_release_all(2, c);
    return st;
}

/* inputs: x, weight, bias (NULL when absent) as the user gave them: the graph's edges, and saved
 * as given (a backward that creates a graph needs their history; the contiguous operands the
 * kernels read are made again from them, which is free when they are contiguous already); a fused
 * relu also saves the output, its mask */
static int record_conv2d(const nnr_tensor *const *inputs, const int64_t *geom, int relu, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new(relu ? "ConvolutionReluBackward" : "ConvolutionBackward", conv_backward, inputs[2] ? 3 : 2, inputs);
    if (!node) return nnr_last_status();
    memcpy(node->i, geom, sizeof(int64_t) * 7);
    node->double_diff = 1;
    int st = nnr_save(node, inputs[0], 0);
    if (!st) st = nnr_save(node, inputs[1], 0);
    if (!st && relu) st = nnr_save(node, out, 1);
    return nnr_node_finish(out, node, st);
}

/* ---------------- front end ---------------- */

/* the forward on contiguous operands c (x, w, bias), relu fused where the backend takes it. key_w: the
 * user's weight when nothing is recorded (inference), else NULL */
static nnr_tensor *conv_forward(nnr_tensor *const *c, const int64_t *geom, int relu, const nnr_tensor *key_w)
{
    const nnr_tensor *x = c[0], *w = c[1];
    int64_t HO = nnr_window_out_size(x->sizes[2], w->sizes[2], geom[0], geom[2], geom[4], 0);
    int64_t WO = nnr_window_out_size(x->sizes[3], w->sizes[3], geom[1], geom[3], geom[5], 0);
    int64_t sizes[4] = {x->sizes[0], w->sizes[0], HO, WO};
    nnr_tensor *y = nnr_tensor_alloc(x->dtype, 4, sizes, x->device);
    if (!y) return NULL;
    int nin = c[2] ? 3 : 2;
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, geom, sizeof(int64_t) * 7);
    p.i[7] = relu && nnr_backend_knows(x->device, 1);
    /* ABI 1.8: the weight's storage and version as a key (f[0], f[1]) when it is the user's tensor and
     * nothing is recorded, so that a backend may keep it packed across calls (the cpu's oneDNN path
     * does); a weight being trained changes every step: no key, as for LINEAR */
    if (key_w && c[1] == key_w && nnr_backend_knows(x->device, 8)) {
        p.f[0] = (double)key_w->storage->uid;
        p.f[1] = (double)atomic_load(&key_w->storage->version);
    }
    if (p.i[7] && !nnr_backend_takes(x->device, NNR_OP_CONV2D, nin, c, 1, &y, &p)) p.i[7] = 0;
    if (nnr_run_tensors("conv2d", NNR_OP_CONV2D, x->device, nin, c, 1, &y, &p)) { nnr_tensor_release(y); return NULL; }
    if (relu && !p.i[7]) {
        int prev = nnr_set_grad_enabled(0);
        nnr_tensor *r = nnr_unary(NNR_OP_RELU, y);
        nnr_set_grad_enabled(prev);
        nnr_tensor_release(y);
        y = r;
    }
    return y;
}

static nnr_tensor *conv_impl(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, const int64_t *geom, int relu)
{
    if (nnr_get_autocast() >= 0 && x->ndim == 4 && w->ndim == 4 && x->device == w->device && backend_convolves(x, w, nnr_get_autocast())) {
        const nnr_tensor *ops[3] = {x, w, bias};
        nnr_tensor *low[3];
        int ac = nnr_autocast_operands(3, ops, low);
        if (ac < 0) return NULL;
        if (ac) {
            int prev = nnr_set_autocast(-1);
            nnr_tensor *y = conv_impl(low[0], low[1], low[2], geom, relu);
            nnr_set_autocast(prev);
            nnr_release_all(3, low);
            return y;
        }
    }
    if (check_conv(x, w, bias, geom)) return NULL;
    if (nnr_window_out_size(x->sizes[2], w->sizes[2], geom[0], geom[2], geom[4], 0) < 1 ||
        nnr_window_out_size(x->sizes[3], w->sizes[3], geom[1], geom[3], geom[5], 0) < 1) {
        char a[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "conv2d: input of shape %s is too small for a %lldx%lld kernel (padding %lld, dilation %lld)",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), (long long)w->sizes[2], (long long)w->sizes[3], (long long)geom[2],
                   (long long)geom[4]);
        return NULL;
    }
    const nnr_tensor *in[3] = {x, w, bias};
    nnr_tensor *c[3];
    if (nnr_prepare_operands(3, in, nnr_promote_types(x->dtype, w->dtype), c)) return NULL;
    int record = nnr_should_record(3, in);
    nnr_tensor *y = conv_forward(c, geom, relu, record ? NULL : w);
    if (y && record && record_conv2d(in, geom, relu, y)) { nnr_tensor_release(y); y = NULL; }
    nnr_release_all(3, c);
    return y;
}

nnr_tensor *nnr_conv2d(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int stride_h, int stride_w, int pad_h,
                       int pad_w, int dil_h, int dil_w, int groups)
{
    int64_t geom[7] = {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
    return conv_impl(x, w, bias, geom, 0);
}

/* relu(conv2d(...)) as one op where the backend has it (nn.Sequential fuses Conv2d then ReLU into it) */
nnr_tensor *nnr_conv2d_relu(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int stride_h, int stride_w, int pad_h,
                            int pad_w, int dil_h, int dil_w, int groups)
{
    int64_t geom[7] = {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
    return conv_impl(x, w, bias, geom, 1);
}

/* ---------------- transposed convolution ----------------
 * The input-gradient of a convolution run forwards: y = conv2d_grad_input(x, w), the output size
 * chosen by stride, padding, dilation and output_padding. Its gradients are the convolution's other
 * two directions: grad_x = conv2d(grad_y, w), grad_w = conv2d_grad_weight(grad_y, x).
 *
 *   x [N, C, H, W], weight [C, O/groups, KH, KW], bias [O] -> y [N, O, HO, WO],
 *   HO = (H - 1) * stride - 2 * padding + dilation * (KH - 1) + output_padding + 1
 *   geom: stride h, w; padding h, w; dilation h, w; groups (as the convolution's) */

static int check_conv_transpose(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, const int64_t *g, const int64_t *out_pad)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (x->ndim != 4 || w->ndim != 4)
        return nnr_errorf(NNR_ERR_INVALID,
                          "conv_transpose2d: expected a 4-d input [N, C, H, W] and a 4-d weight [C, O/groups, KH, KW], got %s and %s",
                          nnr_shape_str(a, sizeof a, x->ndim, x->sizes), nnr_shape_str(b, sizeof b, w->ndim, w->sizes));
    if (g[0] < 1 || g[1] < 1 || g[4] < 1 || g[5] < 1 || g[2] < 0 || g[3] < 0 || g[6] < 1 || out_pad[0] < 0 || out_pad[1] < 0)
        return nnr_errorf(NNR_ERR_INVALID, "conv_transpose2d: stride and dilation must be >= 1, padding and output_padding >= 0, groups >= 1");
    for (int d = 0; d < 2; d++)
        if (out_pad[d] >= g[d] && out_pad[d] >= g[4 + d])
            return nnr_errorf(NNR_ERR_INVALID, "conv_transpose2d: output_padding (%lld) must be smaller than either stride (%lld) or dilation (%lld)",
                              (long long)out_pad[d], (long long)g[d], (long long)g[4 + d]);
    int64_t C = x->sizes[1], groups = g[6];
    if (w->sizes[0] != C || C % groups)
        return nnr_errorf(NNR_ERR_INVALID, "conv_transpose2d: input of shape %s has %lld channels, weight of shape %s expects %lld (groups %lld)",
                          nnr_shape_str(a, sizeof a, x->ndim, x->sizes), (long long)C, nnr_shape_str(b, sizeof b, w->ndim, w->sizes),
                          (long long)w->sizes[0], (long long)groups);
    int64_t O = w->sizes[1] * groups;
    if (bias && (bias->ndim != 1 || bias->sizes[0] != O))
        return nnr_errorf(NNR_ERR_INVALID, "conv_transpose2d: bias of shape %s, expected [%lld]", nnr_shape_str(a, sizeof a, bias->ndim, bias->sizes),
                          (long long)O);
    if (x->device != w->device || (bias && bias->device != x->device))
        return nnr_errorf(NNR_ERR_DEVICE, "conv_transpose2d: input, weight and bias must be on one device");
    int dt = nnr_promote_types(x->dtype, w->dtype);
    if (dt != NNR_F32 && dt != NNR_F64)
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "conv_transpose2d: dtype %s is not supported (expected f32 or f64)", nnr_dtype_name(dt));
    return NNR_OK;
}

/* recorded, when the pass creates a graph: grad_x = conv2d(grad_y, w), grad_w by the recorded
 * weight-gradient op with grad_y as its input and x as its output's gradient */
static int conv_transpose_grads_recorded(nnr_node *node, const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *gy, nnr_tensor **grads)
{
    const int64_t *g = node->i;
    if (node->in[0].node &&
        !(grads[0] = nnr_conv2d(gy, w, NULL, (int)g[0], (int)g[1], (int)g[2], (int)g[3], (int)g[4], (int)g[5], (int)g[6])))
        return nnr_last_status();
    if (node->in[1].node && !(grads[1] = conv_weight_grad(gy, x, g, w->ndim, w->sizes))) return nnr_last_status();
    if (node->n_inputs > 2 && node->in[2].node) return bias_grad(gy, &grads[2]);
    return NNR_OK;
}

static int conv_transpose_backward(nnr_node *node, const nnr_tensor *gy, nnr_tensor **grads)
{
    const nnr_tensor *xs = nnr_node_saved(node, 0), *ws = nnr_node_saved(node, 1);
    if (!xs || !ws) return nnr_last_status();
    if (nnr_creating_graph()) return conv_transpose_grads_recorded(node, xs, ws, gy, grads);
    const nnr_tensor *ops[2] = {xs, ws};
    nnr_tensor *c[2];
    if (nnr_prepare_operands(2, ops, nnr_promote_types(xs->dtype, ws->dtype), c)) return nnr_last_status();
    const nnr_tensor *x = c[0], *w = c[1];
    nnr_tensor *g = nnr_contiguous(gy);
    if (!g) { nnr_release_all(2, c); return nnr_last_status(); }
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, node->i, sizeof(int64_t) * 7);
    int st = NNR_OK;
    if (node->in[0].node) {        /* grad_x [N, C, H, W] = conv2d(grad_y, w), its size given by x's */
        grads[0] = nnr_tensor_alloc(x->dtype, 4, x->sizes, x->device);
        nnr_tensor *in[2] = {g, (nnr_tensor *)w};
        if (!grads[0] || nnr_run_tensors("conv_transpose2d backward", NNR_OP_CONV2D, x->device, 2, in, 1, &grads[0], &p)) st = nnr_last_status();
    }
    if (st == NNR_OK && node->in[1].node) {      /* grad_w = conv2d_grad_weight with grad_y as the input and x as the output's gradient */
        grads[1] = nnr_tensor_alloc(w->dtype, 4, w->sizes, w->device);
        nnr_tensor *in[2] = {g, (nnr_tensor *)x};
        if (!grads[1] || nnr_run_tensors("conv_transpose2d backward", NNR_OP_CONV2D_GRAD_WEIGHT, x->device, 2, in, 1, &grads[1], &p))
            st = nnr_last_status();
    }
    if (st == NNR_OK && node->n_inputs > 2 && node->in[2].node) st = bias_grad(g, &grads[2]);
    nnr_tensor_release(g);
    nnr_release_all(2, c);
    return st;
}

/* inputs: x, weight, bias (NULL when absent) as given, saved as given (as the convolution's) */
static int record_conv_transpose2d(const nnr_tensor *const *inputs, const int64_t *geom, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new("ConvolutionTransposeBackward", conv_transpose_backward, inputs[2] ? 3 : 2, inputs);
    if (!node) return nnr_last_status();
    memcpy(node->i, geom, sizeof(int64_t) * 7);
    node->double_diff = 1;
    int st = nnr_save(node, inputs[0], 0);
    if (!st) st = nnr_save(node, inputs[1], 0);
    return nnr_node_finish(out, node, st);
}

nnr_tensor *nnr_conv_transpose2d(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int stride_h, int stride_w, int pad_h,
                                 int pad_w, int out_pad_h, int out_pad_w, int dil_h, int dil_w, int groups)
{
    int64_t geom[7] = {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups}, out_pad[2] = {out_pad_h, out_pad_w};
    if (check_conv_transpose(x, w, bias, geom, out_pad)) return NULL;
    int64_t HO = (x->sizes[2] - 1) * stride_h - 2 * (int64_t)pad_h + (int64_t)dil_h * (w->sizes[2] - 1) + out_pad_h + 1;
    int64_t WO = (x->sizes[3] - 1) * stride_w - 2 * (int64_t)pad_w + (int64_t)dil_w * (w->sizes[3] - 1) + out_pad_w + 1;
    if (HO < 1 || WO < 1) {
        char a[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "conv_transpose2d: input of shape %s with a %lldx%lld kernel and padding %dx%d gives an empty output (%lldx%lld)",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), (long long)w->sizes[2], (long long)w->sizes[3], pad_h, pad_w,
                   (long long)HO, (long long)WO);
        return NULL;
    }
    const nnr_tensor *in[3] = {x, w, bias};
    nnr_tensor *c[3];
    if (nnr_prepare_operands(3, in, nnr_promote_types(x->dtype, w->dtype), c)) return NULL;
    int64_t sizes[4] = {x->sizes[0], w->sizes[1] * groups, HO, WO};
    nnr_tensor *y = nnr_tensor_alloc(c[0]->dtype, 4, sizes, x->device);
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, geom, sizeof geom);
    if (y && nnr_run_tensors("conv_transpose2d", NNR_OP_CONV2D_GRAD_INPUT, x->device, 2, c, 1, &y, &p)) { nnr_tensor_release(y); y = NULL; }
    if (y && c[2]) {               /* + bias [O] as [O, 1, 1], not recorded: the node below takes its gradient */
        int64_t bs[3] = {sizes[1], 1, 1}, bst[3] = {1, 0, 0};
        nnr_tensor *bv = nnr_tensor_new_view(c[2], 3, bs, bst, c[2]->offset);
        int prev = nnr_set_grad_enabled(0);
        nnr_tensor *yb = bv ? nnr_binary(NNR_OP_ADD, y, bv) : NULL;
        nnr_set_grad_enabled(prev);
        nnr_tensor_release(bv);
        nnr_tensor_release(y);
        y = yb;
    }
    if (y && nnr_should_record(3, in) && record_conv_transpose2d(in, geom, y)) { nnr_tensor_release(y); y = NULL; }
    nnr_release_all(3, c);
    return y;
}

/* Neural-network ops of the core: convolution, pooling and the fused
 * optimizer steps. Shapes are checked here with errors that name the op and
 * both shapes; kernels get contiguous f32/f64 operands. */
#include <math.h>
#include <string.h>
#include "derivatives.h"
#include "internal.h"

/* a device of the cpu backend ("cpu", or "cpu:1"... with NNR_CPU_DEVICES): its fused kernels apply */
static int on_cpu_backend(int device)
{
    const nnr_device_entry *dev = nnr_device_get(device), *cpu = nnr_device_get(0);
    return dev && cpu && dev->plugin == cpu->plugin;
}

/* f32 and f64 everywhere; f16 and bf16 off the cpu, for the backends that have them (cuda, under autocast) */
static int float_dtype(const char *op, const nnr_tensor *t)
{
    if (t->dtype == NNR_F32 || t->dtype == NNR_F64) return NNR_OK;
    if ((t->dtype == NNR_F16 || t->dtype == NNR_BF16) && !on_cpu_backend(t->device)) return NNR_OK;
    return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported (expected f32 or f64; f16 and bf16 on backends that have them)",
                      op, nnr_dtype_name(t->dtype));
}

/* the call of op on tensors: their descriptors go in din/dout */
static nnr_op_call describe(int opid, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *p,
                            nnr_tensor_desc *din, nnr_tensor_desc *dout)
{
    nnr_op_call call = {.struct_size = sizeof call, .op = (uint32_t)opid, .n_inputs = nin, .n_outputs = nout, .params = p};
    for (int k = 0; k < nin; k++) { nnr_tensor_desc_of(in[k], &din[k]); call.inputs[k] = &din[k]; }
    for (int k = 0; k < nout; k++) { nnr_tensor_desc_of(out[k], &dout[k]); call.outputs[k] = &dout[k]; }
    return call;
}

static int run_call(const char *op, int opid, int device, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out,
                    const nnr_op_params *p)
{
    nnr_tensor_desc din[NNR_MAX_INPUTS], dout[NNR_MAX_OUTPUTS];
    nnr_op_call call = describe(opid, nin, in, nout, out, p, din, dout);
    return nnr_dispatch(op, device, &call);
}

/* 1 when the device's backend takes this call itself (no cpu fallback) */
static int device_takes(int device, int opid, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *p)
{
    const nnr_device_entry *dev = nnr_device_get(device);
    if (!dev) return 0;
    nnr_tensor_desc din[NNR_MAX_INPUTS], dout[NNR_MAX_OUTPUTS];
    nnr_op_call call = describe(opid, nin, in, nout, out, p, din, dout);
    return dev->plugin->supports(dev->plugin, &call);
}

/* Runs op on preallocated tensors (the ops that extension plugins add, called from their Lua side):
 * inputs and outputs on one device, any layout the plugin's supports() takes. */
int nnr_run_op(const char *name, int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *params)
{
    if (nin < 0 || nin > NNR_MAX_INPUTS || nout < 1 || nout > NNR_MAX_OUTPUTS)
        return nnr_errorf(NNR_ERR_INVALID, "%s: %d inputs and %d outputs (at most %d and 1..%d)", name, nin, nout, NNR_MAX_INPUTS, NNR_MAX_OUTPUTS);
    nnr_op_params p = {.struct_size = sizeof p};
    if (params) { p = *params; p.struct_size = sizeof p; }
    int device = out[0] ? out[0]->device : -1;
    for (int k = 0; k < nin; k++)
        if (!in[k] || in[k]->device != device) return nnr_errorf(NNR_ERR_DEVICE, "%s: input %d is missing or on another device", name, k + 1);
    for (int k = 0; k < nout; k++) {
        if (!out[k] || out[k]->device != device) return nnr_errorf(NNR_ERR_DEVICE, "%s: output %d is missing or on another device", name, k + 1);
        if (nnr_autograd_check_inplace(name, out[k])) return nnr_last_status();   /* also bumps its version */
    }
    return run_call(name, op, device, nin, in, nout, out, &p);
}

/* the fused forms of ABI 1.1 (LINEAR, CONV2D's i[7] relu) go to the cpu backend and to plugins built
 * against 1.1 or later, which know them; older plugins get the unfused ops */
static int backend_fuses(int device)
{
    const nnr_device_entry *dev = nnr_device_get(device);
    return dev && (on_cpu_backend(device) || (dev->plugin->abi_version & 0xffff) >= 1);
}

/* contiguous copies in the given dtype (new references) */
static int prepare(int n, const nnr_tensor *const *in, int dtype, nnr_tensor **out)
{
    for (int k = 0; k < n; k++) {
        out[k] = NULL;
        if (!in[k]) continue;
        int prev = nnr_set_grad_enabled(0);
        nnr_tensor *c = nnr_to(in[k], dtype, in[k]->device);
        nnr_tensor *cc = c ? nnr_contiguous(c) : NULL;
        nnr_set_grad_enabled(prev);
        nnr_tensor_release(c);
        if (!cc) { for (int j = 0; j < k; j++) nnr_tensor_release(out[j]); return nnr_last_status(); }
        out[k] = cc;
    }
    return NNR_OK;
}

static void release_all(int n, nnr_tensor **ts) { for (int k = 0; k < n; k++) nnr_tensor_release(ts[k]); }

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode)
{
    int64_t span = in + 2 * p - d * (k - 1) - 1;
    if (span < 0) return 0;
    int64_t o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;   /* the last window must start inside the input */
    return o;
}

/* ---------------- convolution ---------------- */

/* autocast: the operands of a matmul-like op (f32, or already in the autocast dtype) as recorded casts to
 * the autocast dtype: 1, or 0 when autocast is off or an operand has another dtype, -1 on error */
static int autocast_operands(int n, const nnr_tensor *const *in, nnr_tensor **out)
{
    int ac = nnr_get_autocast();
    if (ac < 0) return 0;
    int any = 0;
    for (int k = 0; k < n; k++) {
        if (in[k] && in[k]->dtype != NNR_F32 && in[k]->dtype != ac) return 0;    /* f64 and others stay as they are */
        any |= in[k] && in[k]->dtype == NNR_F32;
    }
    if (!any) return 0;
    for (int k = 0; k < n; k++) {
        out[k] = in[k] ? nnr_to(in[k], ac, in[k]->device) : NULL;
        if (in[k] && !out[k]) { for (int j = 0; j < k; j++) nnr_tensor_release(out[j]); return -1; }
    }
    return 1;
}

/* whether x's backend has a convolution in dtype (autocast keeps f32 where it has none, e.g. the cpu) */
static int conv_takes_half(const nnr_tensor *x, const nnr_tensor *w, int dtype)
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

static nnr_tensor *conv_impl(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int stride_h, int stride_w, int pad_h,
                       int pad_w, int dil_h, int dil_w, int groups, int relu)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (nnr_get_autocast() >= 0 && x->ndim == 4 && w->ndim == 4 && x->device == w->device && conv_takes_half(x, w, nnr_get_autocast())) {
        const nnr_tensor *ops[3] = {x, w, bias};
        nnr_tensor *low[3];
        int ac = autocast_operands(3, ops, low);
        if (ac < 0) return NULL;
        if (ac) {
            int prev = nnr_set_autocast(-1);
            nnr_tensor *y = conv_impl(low[0], low[1], low[2], stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, relu);
            nnr_set_autocast(prev);
            for (int k = 0; k < 3; k++) nnr_tensor_release(low[k]);
            return y;
        }
    }
    if (x->ndim != 4 || w->ndim != 4) {
        nnr_errorf(NNR_ERR_INVALID, "conv2d: expected a 4-d input [N, C, H, W] and a 4-d weight [O, C/groups, KH, KW], got %s and %s",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), nnr_shape_str(b, sizeof b, w->ndim, w->sizes));
        return NULL;
    }
    if (stride_h < 1 || stride_w < 1 || dil_h < 1 || dil_w < 1 || pad_h < 0 || pad_w < 0 || groups < 1) {
        nnr_errorf(NNR_ERR_INVALID, "conv2d: stride and dilation must be >= 1, padding >= 0, groups >= 1");
        return NULL;
    }
    int64_t C = x->sizes[1], O = w->sizes[0];
    if (C % groups || O % groups || w->sizes[1] != C / groups) {
        nnr_errorf(NNR_ERR_INVALID, "conv2d: input of shape %s has %lld channels, weight of shape %s expects %lld (groups %d)",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), (long long)C, nnr_shape_str(b, sizeof b, w->ndim, w->sizes),
                   (long long)(w->sizes[1] * groups), groups);
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->sizes[0] != O)) {
        nnr_errorf(NNR_ERR_INVALID, "conv2d: bias of shape %s, expected [%lld]", nnr_shape_str(a, sizeof a, bias->ndim, bias->sizes), (long long)O);
        return NULL;
    }
    if (x->device != w->device || (bias && bias->device != x->device)) {
        nnr_errorf(NNR_ERR_DEVICE, "conv2d: input, weight and bias must be on one device");
        return NULL;
    }
    int64_t HO = out_size(x->sizes[2], w->sizes[2], stride_h, pad_h, dil_h, 0);
    int64_t WO = out_size(x->sizes[3], w->sizes[3], stride_w, pad_w, dil_w, 0);
    if (HO < 1 || WO < 1) {
        nnr_errorf(NNR_ERR_INVALID, "conv2d: input of shape %s is too small for a %lldx%lld kernel (padding %d, dilation %d)",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), (long long)w->sizes[2], (long long)w->sizes[3], pad_h, dil_h);
        return NULL;
    }
    int dt = nnr_promote_types(x->dtype, w->dtype);
    if (float_dtype("conv2d", x) || float_dtype("conv2d", w)) return NULL;
    const nnr_tensor *in[3] = {x, w, bias};
    nnr_tensor *c[3];
    if (prepare(3, in, dt, c)) return NULL;
    int64_t sizes[4] = {x->sizes[0], O, HO, WO};
    nnr_tensor *y = nnr_tensor_alloc(dt, 4, sizes, x->device);
    /* i[7] = 1: relu fused (the cpu backend applies it per image while the output is in cache) */
    int fused = relu && backend_fuses(x->device);
    nnr_op_params p = {.struct_size = sizeof p, .i = {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, fused}};
    if (y && run_call("conv2d", NNR_OP_CONV2D, x->device, bias ? 3 : 2, c, 1, &y, &p)) { nnr_tensor_release(y); y = NULL; }
    if (y && relu && !fused) {
        int prev = nnr_set_grad_enabled(0);
        nnr_tensor *r = nnr_unary(NNR_OP_RELU, y);
        nnr_set_grad_enabled(prev);
        nnr_tensor_release(y);
        y = r;
    }
    if (y && nnr_should_record(3, in) && nnr_record_conv2d(in, c[0], c[1], p.i, relu, y)) { nnr_tensor_release(y); y = NULL; }
    release_all(3, c);
    return y;
}

nnr_tensor *nnr_conv2d(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int stride_h, int stride_w, int pad_h,
                       int pad_w, int dil_h, int dil_w, int groups)
{
    return conv_impl(x, w, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, 0);
}

/* relu(conv2d(...)) as one op on the cpu backend (nn.Sequential fuses Conv2d then ReLU into it) */
nnr_tensor *nnr_conv2d_relu(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int stride_h, int stride_w, int pad_h,
                            int pad_w, int dil_h, int dil_w, int groups)
{
    return conv_impl(x, w, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, 1);
}

/* the gradients of a convolution, for its backward (recording is off). relu_out: the output of a
 * fused conv+relu, whose mask (> 0) applies to gy; the cpu kernels apply it per image, in cache. */
int nnr_conv2d_grads(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *gy, const int64_t *geom, const nnr_tensor *relu_out,
                     nnr_tensor **gx, nnr_tensor **gw, nnr_tensor **gb)
{
    if (relu_out && (!on_cpu_backend(x->device) || (gb && !gw))) {      /* elsewhere: mask first, as a separate op */
        nnr_tensor *gm = nnr_binary(NNR_OP_RELU_GRAD, gy, relu_out);
        if (!gm) return nnr_last_status();
        int st = nnr_conv2d_grads(x, w, gm, geom, NULL, gx, gw, gb);
        nnr_tensor_release(gm);
        return st;
    }
    nnr_tensor *g = nnr_contiguous(gy), *m = relu_out ? nnr_contiguous(relu_out) : NULL;
    if (!g || (relu_out && !m)) { nnr_tensor_release(g); return nnr_last_status(); }
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, geom, sizeof(int64_t) * 7);
    p.i[7] = m != NULL;
    int st = NNR_OK;
    if (gx) {
        *gx = nnr_tensor_alloc(x->dtype, 4, x->sizes, x->device);
        nnr_tensor *in[3] = {g, (nnr_tensor *)w, m};
        if (!*gx || run_call("conv2d backward", NNR_OP_CONV2D_GRAD_INPUT, x->device, m ? 3 : 2, in, 1, gx, &p)) st = nnr_last_status();
    }
    int fused_bias = gb && gw && on_cpu_backend(x->device);      /* the cpu kernel sums the bias gradient from its gathered rows */
    if (gw && st == NNR_OK) {
        nnr_tensor *outs[2] = {nnr_tensor_alloc(w->dtype, 4, w->sizes, w->device), NULL};
        if (fused_bias) outs[1] = nnr_tensor_alloc(w->dtype, 1, w->sizes, w->device);
        nnr_tensor *in[3] = {(nnr_tensor *)x, g, m};
        *gw = outs[0];
        if (fused_bias) *gb = outs[1];
        if (!outs[0] || (fused_bias && !outs[1]) ||
            run_call("conv2d backward", NNR_OP_CONV2D_GRAD_WEIGHT, x->device, m ? 3 : 2, in, fused_bias ? 2 : 1, outs, &p))
            st = nnr_last_status();
    }
    if (gb && !fused_bias && st == NNR_OK) {
        int dims[3] = {0, 2, 3};
        *gb = nnr_reduce(NNR_OP_SUM, g, 3, dims, 0, 0);
        if (!*gb) st = nnr_last_status();
    }
    nnr_tensor_release(g);
    nnr_tensor_release(m);
    return st;
}

/* ---------------- pooling ---------------- */

static int check_pool_input(const char *op, const nnr_tensor *x)
{
    char a[NNR_SHAPE_BUF];
    if (x->ndim != 4) return nnr_errorf(NNR_ERR_INVALID, "%s: expected a 4-d input [N, C, H, W], got %s", op, nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
    return float_dtype(op, x);
}

nnr_tensor *nnr_max_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int ceil_mode)
{
    char a[NNR_SHAPE_BUF];
    if (check_pool_input("max_pool2d", x)) return NULL;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) {
        nnr_errorf(NNR_ERR_INVALID, "max_pool2d: kernel %dx%d, stride %dx%d, padding %dx%d: padding must be at most half the kernel", kh, kw, sh, sw, ph, pw);
        return NULL;
    }
    int64_t HO = out_size(x->sizes[2], kh, sh, ph, dh, ceil_mode), WO = out_size(x->sizes[3], kw, sw, pw, dw, ceil_mode);
    if (HO < 1 || WO < 1) {
        nnr_errorf(NNR_ERR_INVALID, "max_pool2d: input of shape %s is too small for a %dx%d window", nnr_shape_str(a, sizeof a, x->ndim, x->sizes), kh, kw);
        return NULL;
    }
    nnr_tensor *c;
    if (prepare(1, &x, x->dtype, &c)) return NULL;
    int64_t sizes[4] = {x->sizes[0], x->sizes[1], HO, WO};
    /* the argmax is for the backward: without recording, the cpu backend skips it (ABI 1.1) */
    int record = nnr_should_record(1, &x), with_idx = record || !on_cpu_backend(x->device);
    nnr_tensor *out[2] = {nnr_tensor_alloc(x->dtype, 4, sizes, x->device), with_idx ? nnr_tensor_alloc(NNR_I64, 4, sizes, x->device) : NULL};
    nnr_op_params p = {.struct_size = sizeof p, .i = {kh, kw, sh, sw, ph, pw, dh, dw}};
    int st = (out[0] && (out[1] || !with_idx)) ? run_call("max_pool2d", NNR_OP_MAXPOOL2D, x->device, 1, &c, with_idx ? 2 : 1, out, &p)
                                               : nnr_last_status();
    if (st == NNR_OK && record) st = nnr_record_pool(NNR_OP_MAXPOOL2D, x, c, out[1], p.i, out[0]);
    nnr_tensor_release(c);
    nnr_tensor_release(out[1]);
    if (st) { nnr_tensor_release(out[0]); return NULL; }
    return out[0];
}

static nnr_tensor *avg_pool_impl(int op, const nnr_tensor *x, const int64_t *params, int64_t HO, int64_t WO)
{
    const char *name = op == NNR_OP_AVGPOOL2D ? "avg_pool2d" : "adaptive_avg_pool2d";
    nnr_tensor *c;
    if (prepare(1, &x, x->dtype, &c)) return NULL;
    int64_t sizes[4] = {x->sizes[0], x->sizes[1], HO, WO};
    nnr_tensor *y = nnr_tensor_alloc(x->dtype, 4, sizes, x->device);
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, params, sizeof p.i);
    int st = y ? run_call(name, op, x->device, 1, &c, 1, &y, &p) : nnr_last_status();
    if (st == NNR_OK && nnr_should_record(1, &x)) st = nnr_record_pool(op, x, c, NULL, p.i, y);
    nnr_tensor_release(c);
    if (st) { nnr_tensor_release(y); return NULL; }
    return y;
}

nnr_tensor *nnr_avg_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int ceil_mode, int count_include_pad)
{
    if (check_pool_input("avg_pool2d", x)) return NULL;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw) {
        nnr_errorf(NNR_ERR_INVALID, "avg_pool2d: kernel %dx%d, stride %dx%d, padding %dx%d: padding must be at most half the kernel", kh, kw, sh, sw, ph, pw);
        return NULL;
    }
    int64_t HO = out_size(x->sizes[2], kh, sh, ph, 1, ceil_mode), WO = out_size(x->sizes[3], kw, sw, pw, 1, ceil_mode);
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
    if (check_pool_input("adaptive_avg_pool2d", x)) return NULL;
    if (oh < 1 || ow < 1) { nnr_errorf(NNR_ERR_INVALID, "adaptive_avg_pool2d: output size %dx%d must be positive", oh, ow); return NULL; }
    int64_t params[8] = {0};
    return avg_pool_impl(NNR_OP_ADAPTIVE_AVGPOOL2D, x, params, oh, ow);
}

/* gradient of a pooling op for its backward */
nnr_tensor *nnr_pool_grad(int op, const nnr_tensor *x, const nnr_tensor *indices, const nnr_tensor *gy, const int64_t *params)
{
    nnr_tensor *g = nnr_contiguous(gy);
    if (!g) return NULL;
    nnr_tensor *gx = nnr_tensor_alloc(x->dtype, 4, x->sizes, x->device);
    nnr_op_params p = {.struct_size = sizeof p};
    memcpy(p.i, params, sizeof p.i);
    int bop = op == NNR_OP_MAXPOOL2D ? NNR_OP_MAXPOOL2D_BACKWARD : op == NNR_OP_AVGPOOL2D ? NNR_OP_AVGPOOL2D_BACKWARD : NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD;
    nnr_tensor *in[2] = {g, (nnr_tensor *)indices};
    if (gx && run_call("pool backward", bop, x->device, indices ? 2 : 1, in, 1, &gx, &p)) { nnr_tensor_release(gx); gx = NULL; }
    nnr_tensor_release(g);
    return gx;
}

/* ---------------- optimizer steps ---------------- */

static int check_state(const char *op, const nnr_tensor *param, const nnr_tensor *t, const char *what)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (!t) return NNR_OK;
    if (t->ndim != param->ndim || memcmp(t->sizes, param->sizes, sizeof(int64_t) * (size_t)t->ndim) || t->dtype != param->dtype ||
        t->device != param->device || !nnr_tensor_is_contiguous(t))
        return nnr_errorf(NNR_ERR_INVALID, "%s: %s is %s %s on %s, expected a contiguous %s %s on %s like the parameter", op, what,
                          nnr_dtype_name(t->dtype), nnr_shape_str(a, sizeof a, t->ndim, t->sizes), nnr_device_name(t->device),
                          nnr_dtype_name(param->dtype), nnr_shape_str(b, sizeof b, param->ndim, param->sizes), nnr_device_name(param->device));
    return NNR_OK;
}

static int step(const char *op, int opid, nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *s1, nnr_tensor *s2, const nnr_op_params *p)
{
    if (float_dtype(op, param)) return nnr_last_status();
    if (!nnr_tensor_is_contiguous(param)) return nnr_errorf(NNR_ERR_INVALID, "%s: the parameter must be contiguous", op);
    if (check_state(op, param, s1, "optimizer state") || check_state(op, param, s2, "optimizer state")) return nnr_last_status();
    nnr_tensor *g = nnr_to(grad, param->dtype, param->device);
    nnr_tensor *gc = g ? nnr_contiguous(g) : NULL;
    nnr_tensor_release(g);
    if (!gc) return nnr_last_status();
    if (gc->ndim != param->ndim || memcmp(gc->sizes, param->sizes, sizeof(int64_t) * (size_t)param->ndim)) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
        nnr_tensor_release(gc);
        return nnr_errorf(NNR_ERR_INVALID, "%s: gradient of shape %s for a parameter of shape %s", op,
                          nnr_shape_str(a, sizeof a, grad->ndim, grad->sizes), nnr_shape_str(b, sizeof b, param->ndim, param->sizes));
    }
    nnr_tensor *outs[3] = {param, s1, s2};
    int nout = 1 + (s1 != NULL) + (s2 != NULL);
    if (!s1 && s2) { outs[1] = s2; }
    for (int k = 0; k < nout; k++) atomic_fetch_add(&outs[k]->storage->version, 1);
    int st = run_call(op, opid, param->device, 1, &gc, nout, outs, p);
    nnr_tensor_release(gc);
    return st;
}

int nnr_sgd_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *momentum_buffer, double lr, double momentum,
                 double dampening, double weight_decay, int nesterov, int buffer_is_new)
{
    nnr_op_params p = {.struct_size = sizeof p, .f = {lr, momentum, dampening, weight_decay}, .i = {nesterov, buffer_is_new}};
    return step("sgd", NNR_OP_SGD_STEP, param, grad, momentum != 0 ? momentum_buffer : NULL, NULL, &p);
}

int nnr_adam_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *exp_avg, nnr_tensor *exp_avg_sq, double lr, double beta1,
                  double beta2, double eps, double weight_decay, int64_t step_count, int decoupled)
{
    if (!exp_avg || !exp_avg_sq) return nnr_errorf(NNR_ERR_INVALID, "adam: both moment buffers are needed");
    if (step_count < 1) return nnr_errorf(NNR_ERR_INVALID, "adam: step count must be >= 1");
    double bc1 = 1 - pow(beta1, (double)step_count), bc2 = 1 - pow(beta2, (double)step_count);
    nnr_op_params p = {.struct_size = sizeof p, .f = {lr, beta1, beta2, eps, weight_decay, bc1, bc2}, .i = {decoupled}};
    return step(decoupled ? "adamw" : "adam", NNR_OP_ADAM_STEP, param, grad, exp_avg, exp_avg_sq, &p);
}

int nnr_rmsprop_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *square_avg, nnr_tensor *momentum_buffer, double lr,
                     double alpha, double eps, double weight_decay, double momentum)
{
    if (!square_avg) return nnr_errorf(NNR_ERR_INVALID, "rmsprop: the square average buffer is needed");
    nnr_op_params p = {.struct_size = sizeof p, .f = {lr, alpha, eps, weight_decay, momentum}};
    return step("rmsprop", NNR_OP_RMSPROP_STEP, param, grad, square_avg, momentum != 0 ? momentum_buffer : NULL, &p);
}

/* ---------------- linear ---------------- */

/* y = x W^T + b, x [..., in], W [out, in], b [out]. Its own derivative gives
 * dW = G^T x directly in W's layout (through matmul and a transpose view it
 * would come out transposed and need a strided copy). */
static nnr_tensor *linear_impl(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int relu);

nnr_tensor *nnr_linear(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias) { return linear_impl(x, w, bias, 0); }
/* relu(x W^T + b) in one op on the cpu backend (nn.Sequential fuses Linear then ReLU into it) */
nnr_tensor *nnr_linear_relu(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias) { return linear_impl(x, w, bias, 1); }

static nnr_tensor *linear_impl(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int relu)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    const nnr_tensor *ops[3] = {x, w, bias};
    nnr_tensor *low[3];
    int ac = x->device == w->device ? autocast_operands(3, ops, low) : 0;
    if (ac < 0) return NULL;
    if (ac) {
        nnr_tensor *y = linear_impl(low[0], low[1], low[2], relu);
        for (int k = 0; k < 3; k++) nnr_tensor_release(low[k]);
        return y;
    }
    if (w->ndim != 2 || x->ndim < 1 || x->sizes[x->ndim - 1] != w->sizes[1]) {
        nnr_errorf(NNR_ERR_INVALID, "linear: input of shape %s does not fit weight of shape %s (expected [..., %lld])",
                   nnr_shape_str(a, sizeof a, x->ndim, x->sizes), nnr_shape_str(b, sizeof b, w->ndim, w->sizes),
                   (long long)(w->ndim == 2 ? w->sizes[1] : -1));
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->sizes[0] != w->sizes[0])) {
        nnr_errorf(NNR_ERR_INVALID, "linear: bias of shape %s, expected [%lld]", nnr_shape_str(a, sizeof a, bias->ndim, bias->sizes),
                   (long long)w->sizes[0]);
        return NULL;
    }
    const nnr_tensor *in[3] = {x, w, bias};
    int record = nnr_should_record(3, in);
    int prev = nnr_set_grad_enabled(0);
    nnr_tensor *y = NULL;
    const nnr_device_entry *dev = nnr_device_get(x->device);
    int same = x->device == w->device && (!bias || bias->device == x->device) && x->dtype == w->dtype && (!bias || bias->dtype == x->dtype) &&
               (x->dtype == NNR_F32 || x->dtype == NNR_F64 || (!on_cpu_backend(x->device) && (x->dtype == NNR_F16 || x->dtype == NNR_BF16)));
    int fused = 0;
    if (same && dev && backend_fuses(x->device)) {
        /* one fused op: the gemm starts from the bias (beta 1) or adds it in its epilogue, relu included */
        nnr_tensor *c[3] = {NULL, NULL, NULL};
        const nnr_tensor *src[3] = {x, w, bias};
        int ok = 1;
        for (int k = 0; k < (bias ? 3 : 2) && ok; k++) ok = (c[k] = nnr_contiguous(src[k])) != NULL;
        int64_t K = w->sizes[1], M = K ? nnr_tensor_numel(x) / K : 0, sizes[NNR_MAX_DIMS];
        memcpy(sizes, x->sizes, sizeof sizes);
        sizes[x->ndim - 1] = w->sizes[0];
        if (ok && (y = nnr_tensor_alloc(x->dtype, x->ndim, sizes, x->device))) {
            int64_t xs[2] = {M, K}, ys[2] = {M, w->sizes[0]};
            nnr_tensor *x2 = nnr_reshape(c[0], 2, xs), *y2 = nnr_reshape(y, 2, ys);
            nnr_tensor *ins[3] = {x2, c[1], c[2]};
            nnr_op_params p = {.struct_size = sizeof p, .i = {relu}};
            if (x2 && y2 && !device_takes(x->device, NNR_OP_LINEAR, bias ? 3 : 2, ins, 1, &y2, &p)) {
                nnr_tensor_release(y);      /* this backend has no LINEAR for these operands: matmul and add below */
                y = NULL;
            } else {
                fused = 1;
                if (!x2 || !y2 || run_call("linear", NNR_OP_LINEAR, x->device, bias ? 3 : 2, ins, 1, &y2, &p)) { nnr_tensor_release(y); y = NULL; }
            }
            nnr_tensor_release(x2);
            nnr_tensor_release(y2);
        } else fused = 1;      /* the failure is the error */
        for (int k = 0; k < 3; k++) nnr_tensor_release(c[k]);
    }
    if (!fused) {
        nnr_tensor *wt = nnr_transpose(w, 0, 1);
        y = wt ? nnr_matmul(x, wt) : NULL;
        nnr_tensor_release(wt);
        if (y && bias && nnr_binary_(NNR_OP_ADD, y, bias)) { nnr_tensor_release(y); y = NULL; }
        if (y && relu) { nnr_tensor *r = nnr_unary(NNR_OP_RELU, y); nnr_tensor_release(y); y = r; }
    }
    nnr_set_grad_enabled(prev);
    if (y && record && (relu ? nnr_record_linear_relu(in, y) : nnr_record_linear(in, y))) { nnr_tensor_release(y); y = NULL; }
    return y;
}

/* ---------------- batch norm ---------------- */

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
    if (out && run_call("batch_norm", op, device, nin, in, 1, &out, &p)) { nnr_tensor_release(out); return NULL; }
    return out;
}

nnr_tensor *nnr_batch_norm(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, nnr_tensor *running_mean,
                           nnr_tensor *running_var, int training, double momentum, double eps)
{
    char a[NNR_SHAPE_BUF];
    if (x->ndim < 2) {
        nnr_errorf(NNR_ERR_INVALID, "batch_norm: input of shape %s, expected [N, C, ...]", nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
        return NULL;
    }
    if (nnr_get_autocast() >= 0 && (x->dtype == NNR_F16 || x->dtype == NNR_BF16)) {
        /* autocast normalises in f32, as PyTorch's does: half statistics lose too much */
        nnr_tensor *x32 = nnr_to(x, NNR_F32, x->device);
        nnr_tensor *y = x32 ? nnr_batch_norm(x32, weight, bias, running_mean, running_var, training, momentum, eps) : NULL;
        nnr_tensor_release(x32);
        return y;
    }
    if (float_dtype("batch_norm", x)) return NULL;
    int64_t C = x->sizes[1];
    const nnr_tensor *per_channel[4] = {weight, bias, running_mean, running_var};
    for (int k = 0; k < 4; k++)
        if (per_channel[k] && (per_channel[k]->ndim != 1 || per_channel[k]->sizes[0] != C)) {
            nnr_errorf(NNR_ERR_INVALID, "batch_norm: per-channel tensor of shape %s for %lld channels",
                       nnr_shape_str(a, sizeof a, per_channel[k]->ndim, per_channel[k]->sizes), (long long)C);
            return NULL;
        }
    if (!training && (!running_mean || !running_var)) {
        nnr_errorf(NNR_ERR_INVALID, "batch_norm: evaluation needs running statistics");
        return NULL;
    }
    const nnr_tensor *in3[3] = {x, weight, bias};
    int record = nnr_should_record(3, in3);
    int prev = nnr_set_grad_enabled(0);
    int dt = x->dtype, dev = x->device;
    nnr_tensor *xc = nnr_contiguous(x), *mean = NULL, *invstd = NULL, *scale = NULL, *shift = NULL, *coef = NULL, *y = NULL;
    nnr_tensor *w = weight ? nnr_to(weight, dt, dev) : NULL, *b = bias ? nnr_to(bias, dt, dev) : NULL;
    int64_t M = nnr_tensor_numel(x) / (C ? C : 1);
    if (!xc) goto done;
    if (training) {
        nnr_tensor *outs[2] = {nnr_tensor_alloc(dt, 1, &C, dev), nnr_tensor_alloc(dt, 1, &C, dev)};
        nnr_op_params p = {.struct_size = sizeof p, .f = {eps}};
        if (!outs[0] || !outs[1] || run_call("batch_norm", NNR_OP_BN_STATS, dev, 1, &xc, 2, outs, &p)) {
            nnr_tensor_release(outs[0]); nnr_tensor_release(outs[1]);
            goto done;
        }
        mean = outs[0];
        invstd = outs[1];
        if (running_mean && running_var) {           /* running stats, with the unbiased variance */
            nnr_tensor *is2 = nnr_binary(NNR_OP_MUL, invstd, invstd);
            nnr_tensor *var = is2 ? nnr_unary(NNR_OP_RECIPROCAL, is2) : NULL;
            nnr_tensor *var_b = var ? nnr_binary_scalar(NNR_OP_SUB, var, eps, 0) : NULL;
            nnr_tensor *var_u = var_b ? nnr_binary_scalar(NNR_OP_MUL, var_b, M > 1 ? (double)M / (double)(M - 1) : 1.0, 0) : NULL;
            int st = var_u ? NNR_OK : nnr_last_status();
            if (!st) st = nnr_binary_scalar_(NNR_OP_MUL, running_mean, 1 - momentum);
            nnr_tensor *dm = st ? NULL : nnr_binary_scalar(NNR_OP_MUL, mean, momentum, 0);
            if (!st) st = dm ? nnr_binary_(NNR_OP_ADD, running_mean, dm) : nnr_last_status();
            if (!st) st = nnr_binary_scalar_(NNR_OP_MUL, running_var, 1 - momentum);
            nnr_tensor *dv = st ? NULL : nnr_binary_scalar(NNR_OP_MUL, var_u, momentum, 0);
            if (!st) st = dv ? nnr_binary_(NNR_OP_ADD, running_var, dv) : nnr_last_status();
            nnr_tensor *tmp[] = {is2, var, var_b, var_u, dm, dv};
            for (size_t k = 0; k < sizeof tmp / sizeof tmp[0]; k++) nnr_tensor_release(tmp[k]);
            if (st) goto done;
        }
    } else {
        mean = nnr_to(running_mean, dt, dev);
        nnr_tensor *ve = mean ? nnr_binary_scalar(NNR_OP_ADD, running_var, eps, 0) : NULL;
        nnr_tensor *sd = ve ? nnr_unary(NNR_OP_SQRT, ve) : NULL;
        nnr_tensor *sdc = sd ? nnr_to(sd, dt, dev) : NULL;
        invstd = sdc ? nnr_unary(NNR_OP_RECIPROCAL, sdc) : NULL;
        nnr_tensor_release(ve); nnr_tensor_release(sd); nnr_tensor_release(sdc);
        if (!invstd) goto done;
    }
    scale = w ? nnr_binary(NNR_OP_MUL, w, invstd) : nnr_clone(invstd);
    nnr_tensor *ms = scale ? nnr_binary(NNR_OP_MUL, mean, scale) : NULL;
    shift = ms ? (b ? nnr_binary(NNR_OP_SUB, b, ms) : nnr_unary(NNR_OP_NEG, ms)) : NULL;
    nnr_tensor_release(ms);
    if (!shift) goto done;
    nnr_tensor *rows[2] = {scale, shift};
    coef = row_stack(rows, 2);
    if (!coef) goto done;
    nnr_tensor *in[2] = {xc, coef};
    y = bn_run(NNR_OP_BN_AFFINE, 2, in, x->ndim, x->sizes, dt, dev, 0);
done:
    nnr_set_grad_enabled(prev);
    if (y && record && nnr_record_batch_norm(in3, xc, w, mean, invstd, training, y)) { nnr_tensor_release(y); y = NULL; }
    nnr_tensor *all[] = {xc, mean, invstd, scale, shift, coef, w, b};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) nnr_tensor_release(all[k]);
    return y;
}

/* the gradients of batch norm, for its backward (recording is off) */
int nnr_batch_norm_grads(const nnr_tensor *xc, const nnr_tensor *w, const nnr_tensor *mean, const nnr_tensor *invstd, int training,
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

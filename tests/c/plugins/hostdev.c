/* hostdev: a second backend of the cpu's kind, as a vendor of a host-memory accelerator library would
 * write it against the installed headers alone. Its device's memory is host memory (it declares
 * NNR_DEVICE_HOST_MEMORY), and it implements the fused paths the core offers any backend through
 * supports(): LINEAR with and without its relu, CONV2D with and without its relu, and the SGD, Adam
 * and RMSprop steps, for contiguous f32 and f64. Everything else runs on the host backend, in place.
 * It counts the calls it ran (get_option "calls.<op>", "calls.linear_relu", "calls.conv2d_relu"), so
 * tests/abi/hostdev.lua can show that the core gave it the fused calls. Plain loops: a test, not a
 * fast backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "nnr/plugin.h"
#include "host_memory.h"

static long calls_linear, calls_linear_relu, calls_conv, calls_conv_relu, calls_sgd, calls_adam, calls_rmsprop;

static double ld(int dt, const void *p, int64_t i) { return dt == NNR_F32 ? ((const float *)p)[i] : ((const double *)p)[i]; }
static void st(int dt, void *p, int64_t i, double v) { if (dt == NNR_F32) ((float *)p)[i] = (float)v; else ((double *)p)[i] = v; }

static nnr_status device_count(nnr_plugin *self, int *count) { (void)self; *count = 1; return NNR_OK; }

static nnr_status device_props(nnr_plugin *self, int device, nnr_device_props *out)
{
    (void)self; (void)device;
    out->flags = NNR_DEVICE_HOST_MEMORY;
    out->total_memory = (uint64_t)1 << 30;
    out->compute_units = 1;
    snprintf(out->model, sizeof out->model, "hostdev test device");
    return NNR_OK;
}

/* every operand contiguous, f32 or f64 (one dtype) */
static int plain_operands(const nnr_op_call *call)
{
    int dt = call->outputs[0]->dtype;
    if (dt != NNR_F32 && dt != NNR_F64) return 0;
    for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype != dt || !nnr_desc_is_contiguous(call->inputs[i])) return 0;
    for (int i = 0; i < call->n_outputs; i++) if (call->outputs[i]->dtype != dt || !nnr_desc_is_contiguous(call->outputs[i])) return 0;
    return 1;
}

static int supports(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    if (call->struct_size < sizeof(nnr_op_call) || call->n_outputs < 1 || !plain_operands(call)) return 0;
    switch (call->op) {
    case NNR_OP_LINEAR: return call->inputs[0]->ndim == 2 && call->inputs[1]->ndim == 2;
    case NNR_OP_CONV2D: return call->inputs[0]->ndim == 4 && call->inputs[1]->ndim == 4;
    case NNR_OP_SGD_STEP: case NNR_OP_ADAM_STEP: case NNR_OP_RMSPROP_STEP: return 1;
    default: return 0;
    }
}

/* y [M, N] = x [M, K] W^T [K, N] (+ b), relu'd when i[0] */
static nnr_status linear(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *b = call->n_inputs > 2 ? call->inputs[2] : NULL, *y = call->outputs[0];
    int dt = y->dtype, relu = call->params && call->params->i[0] == 1;
    int64_t M = x->sizes[0], K = x->sizes[1], N = w->sizes[0];
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = b ? ld(dt, b->data, j) : 0;
            for (int64_t k = 0; k < K; k++) acc += ld(dt, x->data, i * K + k) * ld(dt, w->data, j * K + k);
            st(dt, y->data, i * N + j, relu && !(acc > 0) && acc == acc ? 0 : acc);
        }
    if (relu) calls_linear_relu++; else calls_linear++;
    return NNR_OK;
}

/* x [N, C, H, W], w [O, C/g, KH, KW] (+ b [O]) -> y [N, O, HO, WO]; i: stride, padding, dilation, groups, relu */
static nnr_status conv2d(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *b = call->n_inputs > 2 ? call->inputs[2] : NULL, *y = call->outputs[0];
    const int64_t *p = call->params->i;
    int dt = y->dtype;
    int64_t N = x->sizes[0], C = x->sizes[1], H = x->sizes[2], W = x->sizes[3], O = w->sizes[0], KH = w->sizes[2], KW = w->sizes[3];
    int64_t HO = y->sizes[2], WO = y->sizes[3], G = p[6], Cg = C / G, Og = O / G;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t ho = 0; ho < HO; ho++)
                for (int64_t wo = 0; wo < WO; wo++) {
                    double acc = b ? ld(dt, b->data, o) : 0;
                    int64_t g = o / Og;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t h = ho * p[0] - p[2] + kh * p[4], ww = wo * p[1] - p[3] + kw * p[5];
                                if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
                                acc += ld(dt, x->data, ((n * C + g * Cg + c) * H + h) * W + ww) * ld(dt, w->data, ((o * Cg + c) * KH + kh) * KW + kw);
                            }
                    st(dt, y->data, ((n * O + o) * HO + ho) * WO + wo, p[7] == 1 && !(acc > 0) && acc == acc ? 0 : acc);
                }
    if (p[7] == 1) calls_conv_relu++; else calls_conv++;
    return NNR_OK;
}

/* PyTorch's rules, as the cpu backend's fused steps (plugin.h: OPTIM) */
static nnr_status optim_step(const nnr_op_call *call)
{
    const double *f = call->params->f;
    const int64_t *ip = call->params->i;
    int dt = call->outputs[0]->dtype;
    int64_t n = nnr_desc_numel(call->outputs[0]);
    void *g = call->inputs[0]->data, *p = call->outputs[0]->data, *s1 = call->n_outputs > 1 ? call->outputs[1]->data : NULL;
    void *s2 = call->n_outputs > 2 ? call->outputs[2]->data : NULL;
    for (int64_t k = 0; k < n; k++) {
        double pk = ld(dt, p, k), d = ld(dt, g, k);
        if (call->op == NNR_OP_SGD_STEP) {
            d += f[3] * pk;
            if (s1) {
                double buf = ip[1] ? d : f[1] * ld(dt, s1, k) + (1 - f[2]) * d;
                st(dt, s1, k, buf);
                d = ip[0] ? d + f[1] * buf : buf;
            }
            st(dt, p, k, pk - f[0] * d);
        } else if (call->op == NNR_OP_ADAM_STEP) {
            if (ip[0]) pk *= 1 - f[0] * f[4]; else d += f[4] * pk;
            double m = f[1] * ld(dt, s1, k) + (1 - f[1]) * d, v = f[2] * ld(dt, s2, k) + (1 - f[2]) * d * d;
            st(dt, s1, k, m);
            st(dt, s2, k, v);
            st(dt, p, k, pk - f[0] / f[5] * m / (sqrt(v) / sqrt(f[6]) + f[3]));
        } else {
            d += f[3] * pk;
            double sq = f[1] * ld(dt, s1, k) + (1 - f[1]) * d * d, a = sqrt(sq) + f[2];
            st(dt, s1, k, sq);
            if (s2) {
                double buf = f[4] * ld(dt, s2, k) + d / a;
                st(dt, s2, k, buf);
                st(dt, p, k, pk - f[0] * buf);
            } else st(dt, p, k, pk - f[0] * d / a);
        }
    }
    if (call->op == NNR_OP_SGD_STEP) calls_sgd++; else if (call->op == NNR_OP_ADAM_STEP) calls_adam++; else calls_rmsprop++;
    return NNR_OK;
}

static nnr_status run(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    switch (call->op) {
    case NNR_OP_LINEAR: return linear(call);
    case NNR_OP_CONV2D: return conv2d(call);
    case NNR_OP_SGD_STEP: case NNR_OP_ADAM_STEP: case NNR_OP_RMSPROP_STEP: return optim_step(call);
    }
    host->set_error("hostdev: op not implemented");
    return NNR_ERR_UNSUPPORTED;
}

static nnr_status get_option(nnr_plugin *self, const char *key, char *buf, size_t n)
{
    (void)self;
    static const struct { const char *key; long *count; } counters[] = {
        {"calls.linear", &calls_linear}, {"calls.linear_relu", &calls_linear_relu}, {"calls.conv2d", &calls_conv},
        {"calls.conv2d_relu", &calls_conv_relu}, {"calls.sgd", &calls_sgd}, {"calls.adam", &calls_adam}, {"calls.rmsprop", &calls_rmsprop}};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        if (strcmp(key, counters[i].key) == 0) { snprintf(buf, n, "%ld", *counters[i].count); return NNR_OK; }
    char msg[160];
    snprintf(msg, sizeof msg, "hostdev: unknown value '%s' (known: calls.linear, calls.linear_relu, calls.conv2d, ...)", key);
    host->set_error(msg);
    return NNR_ERR_INVALID;
}

static nnr_plugin plugin = {
    .struct_size = sizeof(nnr_plugin),
    .abi_version = NNR_ABI_VERSION,
    .name = "hostdev",
    .version = "1.0",
    .description = "test backend of the cpu's kind: host memory, fused linear, conv and optimizer steps",
    .kind = NNR_PLUGIN_BACKEND,
    .device_count = device_count,
    .buffer_alloc = buffer_alloc,
    .buffer_free = buffer_free,
    .copy = copy,
    .supports = supports,
    .run = run,
    .get_option = get_option,
    .device_props = device_props,
};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 10; }

NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t host_abi, nnr_plugin **out)
{
    if (NNR_ABI_MAJOR_OF(host_abi) != NNR_ABI_MAJOR) return NNR_ERR_ABI;
    host = h;
    *out = &plugin;
    return NNR_OK;
}

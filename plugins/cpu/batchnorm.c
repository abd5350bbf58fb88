/* Batch-norm pieces over a contiguous [N, C, P...] tensor, parallel over
 * channels; sums in double. The core composes them (core/nn.c). */
#include <math.h>
#include "kernels.h"

typedef struct bn_job {
    const nnr_tensor_desc *x, *dy, *coef, *out0, *out1;
    int64_t N, C, P;
    double eps;
    int op;
} bn_job;

static double ld(int dt, const void *p, int64_t i) { return dt == NNR_F32 ? ((const float *)p)[i] : ((const double *)p)[i]; }
static void st(int dt, void *p, int64_t i, double v) { if (dt == NNR_F32) ((float *)p)[i] = (float)v; else ((double *)p)[i] = v; }

static void channels(void *arg, int64_t begin, int64_t end)
{
    const bn_job *j = arg;
    int dt = j->x->dtype;
    int64_t N = j->N, C = j->C, P = j->P;
    for (int64_t c = begin; c < end; c++) {
        switch (j->op) {
        case NNR_OP_BN_STATS: {
            double s = 0, sq = 0;
            for (int64_t n = 0; n < N; n++) {
                int64_t base = (n * C + c) * P;
                if (dt == NNR_F32) {
                    const float *x = (const float *)j->x->data + base;
                    for (int64_t p = 0; p < P; p++) { double v = x[p]; s += v; sq += v * v; }
                } else {
                    for (int64_t p = 0; p < P; p++) { double v = ld(dt, j->x->data, base + p); s += v; sq += v * v; }
                }
            }
            double m = (double)(N * P), mean = s / m, var = sq / m - mean * mean;
            if (var < 0) var = 0;
            st(dt, j->out0->data, c, mean);
            st(dt, j->out1->data, c, 1.0 / sqrt(var + j->eps));
            break;
        }
        case NNR_OP_BN_AFFINE: {
            double scale = ld(dt, j->coef->data, c), shift = ld(dt, j->coef->data, C + c);
            for (int64_t n = 0; n < N; n++) {
                int64_t base = (n * C + c) * P;
                if (dt == NNR_F32) {
                    const float *x = (const float *)j->x->data + base;
                    float *y = (float *)j->out0->data + base;
                    float a = (float)scale, b = (float)shift;
                    for (int64_t p = 0; p < P; p++) y[p] = x[p] * a + b;
                } else {
                    for (int64_t p = 0; p < P; p++) st(dt, j->out0->data, base + p, ld(dt, j->x->data, base + p) * scale + shift);
                }
            }
            break;
        }
        case NNR_OP_BN_BACKWARD_REDUCE: {
            double mean = ld(dt, j->coef->data, c), invstd = ld(dt, j->coef->data, C + c), sdy = 0, sdyx = 0;
            for (int64_t n = 0; n < N; n++) {
                int64_t base = (n * C + c) * P;
                for (int64_t p = 0; p < P; p++) {
                    double g = ld(dt, j->dy->data, base + p);
                    sdy += g;
                    sdyx += g * (ld(dt, j->x->data, base + p) - mean) * invstd;
                }
            }
            st(dt, j->out0->data, c, sdy);
            st(dt, j->out0->data, C + c, sdyx);
            break;
        }
        case NNR_OP_BN_BACKWARD_APPLY: {
            double a = ld(dt, j->coef->data, c), b = ld(dt, j->coef->data, C + c), k = ld(dt, j->coef->data, 2 * C + c);
            for (int64_t n = 0; n < N; n++) {
                int64_t base = (n * C + c) * P;
                if (dt == NNR_F32) {
                    const float *g = (const float *)j->dy->data + base, *x = (const float *)j->x->data + base;
                    float *dx = (float *)j->out0->data + base;
                    float fa = (float)a, fb = (float)b, fk = (float)k;
                    for (int64_t p = 0; p < P; p++) dx[p] = fa * g[p] + fb * x[p] + fk;
                } else {
                    for (int64_t p = 0; p < P; p++)
                        st(dt, j->out0->data, base + p, a * ld(dt, j->dy->data, base + p) + b * ld(dt, j->x->data, base + p) + k);
                }
            }
            break;
        }
        }
    }
}

int cpu_batchnorm(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->op == NNR_OP_BN_STATS || call->op == NNR_OP_BN_AFFINE ? call->inputs[0] : call->inputs[1];
    bn_job j = {.x = x, .op = (int)call->op, .eps = call->params ? call->params->f[0] : 0};
    j.N = x->sizes[0];
    j.C = x->ndim > 1 ? x->sizes[1] : 1;
    j.P = 1;
    for (int d = 2; d < x->ndim; d++) j.P *= x->sizes[d];
    switch (call->op) {
    case NNR_OP_BN_STATS: j.out0 = call->outputs[0]; j.out1 = call->outputs[1]; break;
    case NNR_OP_BN_AFFINE: j.coef = call->inputs[1]; j.out0 = call->outputs[0]; break;
    default: j.dy = call->inputs[0]; j.coef = call->inputs[2]; j.out0 = call->outputs[0]; break;
    }
    return cpu_parallel_for(j.C, 1, channels, &j);
}

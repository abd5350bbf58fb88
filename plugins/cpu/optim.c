/* Fused optimizer steps: one pass over each parameter, its gradient and its
 * state, following PyTorch's update rules (torch.optim.SGD, Adam, AdamW,
 * RMSprop) so that training matches it step for step. */
#include <math.h>
#include "kernels.h"

static int64_t numel(const nnr_tensor_desc *d)
{
    int64_t n = 1;
    for (int i = 0; i < d->ndim; i++) n *= d->sizes[i];
    return n;
}

/* the float loops are written once, over doubles or floats by dtype */
#define LOOP(T) \
    T *p = call->outputs[0]->data; const T *g = call->inputs[0]->data; \
    T *s1 = call->n_outputs > 1 ? call->outputs[1]->data : NULL; \
    T *s2 = call->n_outputs > 2 ? call->outputs[2]->data : NULL; \
    (void)s1; (void)s2;

int cpu_sgd_step(const nnr_op_call *call)
{
    const double *f = call->params->f;
    double lr = f[0], mom = f[1], damp = f[2], wd = f[3];
    int nesterov = (int)call->params->i[0], fresh = (int)call->params->i[1];
    int64_t n = numel(call->outputs[0]);
    if (call->outputs[0]->dtype == NNR_F32) {
        LOOP(float)
        for (int64_t k = 0; k < n; k++) {
            float d = g[k] + (float)wd * p[k];
            if (s1) {
                float b = fresh ? d : (float)mom * s1[k] + (float)(1 - damp) * d;
                s1[k] = b;
                d = nesterov ? d + (float)mom * b : b;
            }
            p[k] -= (float)lr * d;
        }
    } else {
        LOOP(double)
        for (int64_t k = 0; k < n; k++) {
            double d = g[k] + wd * p[k];
            if (s1) {
                double b = fresh ? d : mom * s1[k] + (1 - damp) * d;
                s1[k] = b;
                d = nesterov ? d + mom * b : b;
            }
            p[k] -= lr * d;
        }
    }
    return NNR_OK;
}

int cpu_adam_step(const nnr_op_call *call)
{
    const double *f = call->params->f;
    double lr = f[0], b1 = f[1], b2 = f[2], eps = f[3], wd = f[4], bc1 = f[5], bc2 = f[6];
    int decoupled = (int)call->params->i[0];
    double step_size = lr / bc1, bc2_sqrt = sqrt(bc2);
    int64_t n = numel(call->outputs[0]);
    if (call->outputs[0]->dtype == NNR_F32) {
        LOOP(float)
        for (int64_t k = 0; k < n; k++) {
            float gk = g[k];
            if (decoupled) p[k] *= (float)(1 - lr * wd);
            else gk += (float)wd * p[k];
            s1[k] = (float)b1 * s1[k] + (float)(1 - b1) * gk;
            s2[k] = (float)b2 * s2[k] + (float)(1 - b2) * gk * gk;
            float denom = sqrtf(s2[k]) / (float)bc2_sqrt + (float)eps;
            p[k] -= (float)step_size * s1[k] / denom;
        }
    } else {
        LOOP(double)
        for (int64_t k = 0; k < n; k++) {
            double gk = g[k];
            if (decoupled) p[k] *= 1 - lr * wd;
            else gk += wd * p[k];
            s1[k] = b1 * s1[k] + (1 - b1) * gk;
            s2[k] = b2 * s2[k] + (1 - b2) * gk * gk;
            double denom = sqrt(s2[k]) / bc2_sqrt + eps;
            p[k] -= step_size * s1[k] / denom;
        }
    }
    return NNR_OK;
}

int cpu_rmsprop_step(const nnr_op_call *call)
{
    const double *f = call->params->f;
    double lr = f[0], alpha = f[1], eps = f[2], wd = f[3], mom = f[4];
    int64_t n = numel(call->outputs[0]);
    if (call->outputs[0]->dtype == NNR_F32) {
        LOOP(float)
        for (int64_t k = 0; k < n; k++) {
            float gk = g[k] + (float)wd * p[k];
            s1[k] = (float)alpha * s1[k] + (float)(1 - alpha) * gk * gk;
            float avg = sqrtf(s1[k]) + (float)eps;
            if (s2) { s2[k] = (float)mom * s2[k] + gk / avg; p[k] -= (float)lr * s2[k]; }
            else p[k] -= (float)lr * gk / avg;
        }
    } else {
        LOOP(double)
        for (int64_t k = 0; k < n; k++) {
            double gk = g[k] + wd * p[k];
            s1[k] = alpha * s1[k] + (1 - alpha) * gk * gk;
            double avg = sqrt(s1[k]) + eps;
            if (s2) { s2[k] = mom * s2[k] + gk / avg; p[k] -= lr * s2[k]; }
            else p[k] -= lr * gk / avg;
        }
    }
    return NNR_OK;
}

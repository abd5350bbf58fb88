/* Fused optimizer steps: one pass over each parameter, its gradient and its
 * state, following PyTorch's update rules (torch.optim.SGD, Adam, AdamW,
 * RMSprop) so that training matches it step for step. */
#include <math.h>
#include "kernels.h"

/* the float loops are written once, over doubles or floats by dtype */
#define LOOP(T) \
    T *p = call->outputs[0]->data; const T *g = call->inputs[0]->data; \
    T *s1 = call->n_outputs > 1 ? call->outputs[1]->data : NULL; \
    T *s2 = call->n_outputs > 2 ? call->outputs[2]->data : NULL; \
    (void)s1; (void)s2;

/* The f32 steps run on the pool in pieces of GRAIN elements, each a loop the compiler
 * vectorizes for the CPU class (CPU_MULTI, isa.h); the profile showed the step as 15% of an
 * mlp's training time when it ran 4-wide on one thread. The plugin is built with -fno-math-errno
 * (CMakeLists.txt): with errno to set, sqrtf is a call in Adam's loop, which then stays scalar. */
enum { GRAIN = 1 << 14 };

typedef struct sgd_job { float *p, *buf; const float *g; float lr, mom, damp1, wd; int nesterov, fresh; } sgd_job;

CPU_MULTI(void, sgd_f32, (void *arg, int64_t begin, int64_t end), (arg, begin, end))
{
    const sgd_job *j = arg;
    float *restrict p = j->p, *restrict buf = j->buf;
    const float *restrict g = j->g;
    const float lr = j->lr, mom = j->mom, damp1 = j->damp1, wd = j->wd;
    if (!buf) {
        for (int64_t k = begin; k < end; k++) p[k] -= lr * (g[k] + wd * p[k]);
    } else if (j->fresh) {
        for (int64_t k = begin; k < end; k++) {
            float d = g[k] + wd * p[k];
            buf[k] = d;
            p[k] -= lr * (j->nesterov ? d + mom * d : d);
        }
    } else if (j->nesterov) {
        for (int64_t k = begin; k < end; k++) {
            float d = g[k] + wd * p[k], b = mom * buf[k] + damp1 * d;
            buf[k] = b;
            p[k] -= lr * (d + mom * b);
        }
    } else {
        for (int64_t k = begin; k < end; k++) {
            float b = mom * buf[k] + damp1 * (g[k] + wd * p[k]);
            buf[k] = b;
            p[k] -= lr * b;
        }
    }
}

int cpu_sgd_step(const nnr_op_call *call)
{
    const double *f = call->params->f;
    double lr = f[0], mom = f[1], damp = f[2], wd = f[3];
    int nesterov = (int)call->params->i[0], fresh = (int)call->params->i[1];
    int64_t n = nnr_desc_numel(call->outputs[0]);
    if (call->outputs[0]->dtype == NNR_F32) {
        sgd_job j = {call->outputs[0]->data, call->n_outputs > 1 ? call->outputs[1]->data : NULL, call->inputs[0]->data,
                     (float)lr, (float)mom, (float)(1 - damp), (float)wd, nesterov, fresh};
        return cpu_parallel_for(n, GRAIN, sgd_f32, &j);
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

typedef struct adam_job { float *p, *m, *v; const float *g; float b1, b2, eps, wd, decay, step_size, bc2_sqrt; int decoupled; } adam_job;

CPU_MULTI(void, adam_f32, (void *arg, int64_t begin, int64_t end), (arg, begin, end))
{
    const adam_job *j = arg;
    float *restrict p = j->p, *restrict m = j->m, *restrict v = j->v;
    const float *restrict g = j->g;
    const float b1 = j->b1, b2 = j->b2, eps = j->eps, wd = j->wd, decay = j->decay, step = j->step_size, bc = j->bc2_sqrt;
    /* AdamW's decay (decoupled) or Adam's L2 term, then the moments and the step; the test outside the
     * loop, so that each form vectorizes */
#define ADAM_LOOP(DECOUPLED)                                                                 \
    for (int64_t k = begin; k < end; k++) {                                                  \
        float pk = p[k], gk = g[k];                                                          \
        if (DECOUPLED) pk *= decay;                                                          \
        else gk += wd * pk;                                                                  \
        float mk = b1 * m[k] + (1 - b1) * gk, vk = b2 * v[k] + (1 - b2) * gk * gk;           \
        m[k] = mk;                                                                           \
        v[k] = vk;                                                                           \
        p[k] = pk - step * mk / (sqrtf(vk) / bc + eps);                                      \
    }
    if (j->decoupled) ADAM_LOOP(1) else ADAM_LOOP(0)
#undef ADAM_LOOP
}

int cpu_adam_step(const nnr_op_call *call)
{
    const double *f = call->params->f;
    double lr = f[0], b1 = f[1], b2 = f[2], eps = f[3], wd = f[4], bc1 = f[5], bc2 = f[6];
    int decoupled = (int)call->params->i[0];
    double step_size = lr / bc1, bc2_sqrt = sqrt(bc2);
    int64_t n = nnr_desc_numel(call->outputs[0]);
    if (call->outputs[0]->dtype == NNR_F32) {
        adam_job j = {call->outputs[0]->data, call->outputs[1]->data, call->outputs[2]->data, call->inputs[0]->data,
                      (float)b1, (float)b2, (float)eps, (float)wd, (float)(1 - lr * wd), (float)step_size, (float)bc2_sqrt, decoupled};
        return cpu_parallel_for(n, GRAIN, adam_f32, &j);
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
    int64_t n = nnr_desc_numel(call->outputs[0]);
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

/* Layer norm over the rows of a contiguous [M, N] (LAYER_NORM and its backward; plugin.h says what
 * each operand is): a row per piece of the pool for y and dx, then the weight's and bias's gradients
 * as sums over the rows, a block of columns per piece (every element summed in row order, so the
 * result does not depend on the thread count). Sums in double. */
#include <math.h>
#include "kernels.h"

typedef struct ln_job {
    const nnr_op_call *call;
    int64_t M, N;
    int f32;
    double eps;
} ln_job;

#define LN_ROWS(T)                                                                                             \
    static void forward_##T(const ln_job *j, int64_t r)                                                        \
    {                                                                                                          \
        const nnr_op_call *c = j->call;                                                                        \
        int64_t N = j->N;                                                                                      \
        const T *x = (const T *)c->inputs[0]->data + r * N;                                                    \
        const T *w = c->n_inputs > 1 ? c->inputs[1]->data : NULL, *b = c->n_inputs > 2 ? c->inputs[2]->data : NULL; \
        T *y = (T *)c->outputs[0]->data + r * N, *st = (T *)c->outputs[1]->data + 2 * r;                       \
        double s = 0, q = 0;                                                                                   \
        for (int64_t i = 0; i < N; i++) s += x[i];                                                             \
        double mean = N ? s / N : 0;                                                                           \
        for (int64_t i = 0; i < N; i++) { double d = x[i] - mean; q += d * d; }                                \
        double rstd = 1.0 / sqrt((N ? q / N : 0) + j->eps);                                                    \
        T m = (T)mean, rs = (T)rstd;                                                                           \
        if (w) for (int64_t i = 0; i < N; i++) y[i] = (x[i] - m) * rs * w[i] + b[i];                           \
        else for (int64_t i = 0; i < N; i++) y[i] = (x[i] - m) * rs;                                           \
        st[0] = m;                                                                                             \
        st[1] = rs;                                                                                            \
    }                                                                                                          \
    static void backward_##T(const ln_job *j, int64_t r)                                                       \
    {                                                                                                          \
        const nnr_op_call *c = j->call;                                                                        \
        int64_t N = j->N;                                                                                      \
        const T *dy = (const T *)c->inputs[0]->data + r * N, *x = (const T *)c->inputs[1]->data + r * N;        \
        const T *st = (const T *)c->inputs[2]->data + 2 * r, *w = c->n_inputs > 3 ? c->inputs[3]->data : NULL;  \
        T *dx = (T *)c->outputs[0]->data + r * N;                                                              \
        double sg = 0, sgx = 0, mean = st[0], rstd = st[1];                                                    \
        for (int64_t i = 0; i < N; i++) {                                                                      \
            double g = w ? (double)dy[i] * w[i] : dy[i];                                                       \
            sg += g;                                                                                           \
            sgx += g * (x[i] - mean) * rstd;                                                                   \
        }                                                                                                      \
        T mg = (T)(N ? sg / N : 0), mgx = (T)(N ? sgx / N : 0), m = (T)mean, rs = (T)rstd;                     \
        for (int64_t i = 0; i < N; i++) {                                                                      \
            T g = w ? dy[i] * w[i] : dy[i];                                                                    \
            dx[i] = rs * (g - mg - (x[i] - m) * rs * mgx);                                                     \
        }                                                                                                      \
    }                                                                                                          \
    static void param_grads_##T(const ln_job *j, int64_t c0, int64_t c1)                                       \
    {                                                                                                          \
        const nnr_op_call *c = j->call;                                                                        \
        int64_t N = j->N;                                                                                      \
        const T *dy = c->inputs[0]->data, *x = c->inputs[1]->data, *st = c->inputs[2]->data;                   \
        T *dw = c->outputs[1]->data, *db = c->outputs[2]->data;                                                \
        double aw[64], ab[64];                                                                                 \
        for (int64_t k0 = c0; k0 < c1; k0 += 64) {                                                             \
            int64_t n = c1 - k0 < 64 ? c1 - k0 : 64;                                                           \
            for (int64_t i = 0; i < n; i++) aw[i] = ab[i] = 0;                                                 \
            for (int64_t r = 0; r < j->M; r++) {                                                               \
                const T *dyr = dy + r * N + k0, *xr = x + r * N + k0;                                          \
                double m = st[2 * r], rs = st[2 * r + 1];                                                      \
                for (int64_t i = 0; i < n; i++) { aw[i] += dyr[i] * ((xr[i] - m) * rs); ab[i] += dyr[i]; }     \
            }                                                                                                  \
            for (int64_t i = 0; i < n; i++) { dw[k0 + i] = (T)aw[i]; db[k0 + i] = (T)ab[i]; }                  \
        }                                                                                                      \
    }
LN_ROWS(float)
LN_ROWS(double)

static void rows_fwd(void *arg, int64_t b, int64_t e)
{
    const ln_job *j = arg;
    for (int64_t r = b; r < e; r++) { if (j->f32) forward_float(j, r); else forward_double(j, r); }
}

static void rows_bwd(void *arg, int64_t b, int64_t e)
{
    const ln_job *j = arg;
    for (int64_t r = b; r < e; r++) { if (j->f32) backward_float(j, r); else backward_double(j, r); }
}

static void cols_bwd(void *arg, int64_t b, int64_t e)
{
    const ln_job *j = arg;
    if (j->f32) param_grads_float(j, b * 64, e * 64 < j->N ? e * 64 : j->N);
    else param_grads_double(j, b * 64, e * 64 < j->N ? e * 64 : j->N);
}

int cpu_supports_layer_norm(const nnr_op_call *call)
{
    int dt = call->inputs[0]->dtype, back = call->op == NNR_OP_LAYER_NORM_BACKWARD;
    if (dt != NNR_F32 && dt != NNR_F64) return 0;
    if (!back && call->n_inputs == 2) return 0;                      /* weight and bias, or neither */
    if (back && call->n_outputs != (call->n_inputs == 4 ? 3 : 1)) return 0;
    for (int k = 0; k < call->n_inputs; k++)
        if (call->inputs[k]->dtype != dt || !nnr_desc_is_contiguous(call->inputs[k])) return 0;
    for (int k = 0; k < call->n_outputs; k++)
        if (call->outputs[k]->dtype != dt || !nnr_desc_is_contiguous(call->outputs[k])) return 0;
    return call->inputs[0]->ndim == 2;
}

int cpu_layer_norm(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->op == NNR_OP_LAYER_NORM ? call->inputs[0] : call->inputs[1];
    ln_job j = {call, x->sizes[0], x->sizes[1], x->dtype == NNR_F32, call->params ? call->params->f[0] : 1e-5};
    int64_t grain = 16384 / (j.N > 0 ? j.N : 1) + 1;
    if (call->op == NNR_OP_LAYER_NORM) return cpu_parallel_for(j.M, grain, rows_fwd, &j);
    int st = cpu_parallel_for(j.M, grain, rows_bwd, &j);
    if (st == NNR_OK && call->n_outputs == 3) st = cpu_parallel_for((j.N + 63) / 64, 1, cols_bwd, &j);
    return st;
}

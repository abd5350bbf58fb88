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

/* A row's sums in LN_LANES double lanes, each a running sum over every LN_LANES-th element, the lanes then
 * added pairwise: the loops vectorize (a single running double sum was a chain of dependent adds, and
 * the op took 1.35 ms for a GPT's [4096, 256]), and the order is fixed, whatever the thread count. */
enum { LN_LANES = 16 };
static inline double lanes_sum(const double *v)
{
    double h[8];
    for (int l = 0; l < 8; l++) h[l] = v[l] + v[l + 8];
    return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}

#define LN_ROWS(T)                                                                                             \
    /* mean and 1 / sqrt(var + eps) of a row (two passes: the variance from the mean) */                    \
    CPU_MULTI(void, moments_##T, (const T *restrict x, int64_t N, double eps, double *mean, double *rstd), (x, N, eps, mean, rstd)) \
    {                                                                                                          \
        double s[LN_LANES] = {0}, q[LN_LANES] = {0};                                                           \
        int64_t nl = N - N % LN_LANES;                                                                         \
        for (int64_t i = 0; i < nl; i += LN_LANES)                                                             \
            for (int l = 0; l < LN_LANES; l++) s[l] += x[i + l];                                               \
        for (int64_t i = nl; i < N; i++) s[i - nl] += x[i];                                                    \
        double m = N ? lanes_sum(s) / N : 0;                                                                   \
        for (int64_t i = 0; i < nl; i += LN_LANES)                                                             \
            for (int l = 0; l < LN_LANES; l++) { double d = x[i + l] - m; q[l] += d * d; }                     \
        for (int64_t i = nl; i < N; i++) { double d = x[i] - m; q[i - nl] += d * d; }                          \
        *mean = m;                                                                                             \
        *rstd = 1.0 / sqrt((N ? lanes_sum(q) / N : 0) + eps);                                                  \
    }                                                                                                          \
    CPU_MULTI(void, normalize_##T, (const T *restrict x, int64_t N, T m, T rs, const T *restrict w, const T *restrict b, T *restrict y), \
              (x, N, m, rs, w, b, y))                                                                          \
    {                                                                                                          \
        if (w) for (int64_t i = 0; i < N; i++) y[i] = (x[i] - m) * rs * w[i] + b[i];                           \
        else for (int64_t i = 0; i < N; i++) y[i] = (x[i] - m) * rs;                                           \
    }                                                                                                          \
    /* the row's sums of g = dy (* w) and of g (x - mean) rstd */                                           \
    CPU_MULTI(void, grad_sums_##T, (const T *restrict dy, const T *restrict x, const T *restrict w, int64_t N, double mean, double rstd, \
                                    double *sg_out, double *sgx_out), (dy, x, w, N, mean, rstd, sg_out, sgx_out)) \
    {                                                                                                          \
        double sg[LN_LANES] = {0}, sgx[LN_LANES] = {0};                                                        \
        int64_t nl = N - N % LN_LANES;                                                                         \
        for (int64_t i = 0; i < nl; i += LN_LANES)                                                             \
            for (int l = 0; l < LN_LANES; l++) {                                                               \
                double g = w ? (double)dy[i + l] * w[i + l] : dy[i + l];                                       \
                sg[l] += g;                                                                                    \
                sgx[l] += g * (x[i + l] - mean) * rstd;                                                        \
            }                                                                                                  \
        for (int64_t i = nl; i < N; i++) {                                                                     \
            double g = w ? (double)dy[i] * w[i] : dy[i];                                                       \
            sg[i - nl] += g;                                                                                   \
            sgx[i - nl] += g * (x[i] - mean) * rstd;                                                           \
        }                                                                                                      \
        *sg_out = lanes_sum(sg);                                                                               \
        *sgx_out = lanes_sum(sgx);                                                                             \
    }                                                                                                          \
    CPU_MULTI(void, grad_input_##T, (const T *restrict dy, const T *restrict x, const T *restrict w, int64_t N, T m, T rs, T mg, T mgx, \
                                     T *restrict dx), (dy, x, w, N, m, rs, mg, mgx, dx))                        \
    {                                                                                                          \
        for (int64_t i = 0; i < N; i++) {                                                                      \
            T g = w ? dy[i] * w[i] : dy[i];                                                                    \
            dx[i] = rs * (g - mg - (x[i] - m) * rs * mgx);                                                     \
        }                                                                                                      \
    }                                                                                                          \
    static void forward_##T(const ln_job *j, int64_t r)                                                        \
    {                                                                                                          \
        const nnr_op_call *c = j->call;                                                                        \
        int64_t N = j->N;                                                                                      \
        const T *x = (const T *)c->inputs[0]->data + r * N;                                                    \
        const T *w = c->n_inputs > 1 ? c->inputs[1]->data : NULL, *b = c->n_inputs > 2 ? c->inputs[2]->data : NULL; \
        T *y = (T *)c->outputs[0]->data + r * N, *st = (T *)c->outputs[1]->data + 2 * r;                       \
        double mean, rstd;                                                                                     \
        moments_##T(x, N, j->eps, &mean, &rstd);                                                               \
        T m = (T)mean, rs = (T)rstd;                                                                           \
        normalize_##T(x, N, m, rs, w, b, y);                                                                   \
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
        double sg, sgx, mean = st[0], rstd = st[1];                                                            \
        grad_sums_##T(dy, x, w, N, mean, rstd, &sg, &sgx);                                                     \
        grad_input_##T(dy, x, w, N, (T)mean, (T)rstd, (T)(N ? sg / N : 0), (T)(N ? sgx / N : 0), dx);          \
    }                                                                                                          \
    /* the weight's and bias's gradients of columns [c0, c1): sums over the rows, in row order */          \
    CPU_MULTI(void, param_grads_##T, (const ln_job *j, int64_t c0, int64_t c1), (j, c0, c1))                 \
    {                                                                                                          \
        const nnr_op_call *c = j->call;                                                                        \
        int64_t N = j->N;                                                                                      \
        const T *dy = c->inputs[0]->data, *x = c->inputs[1]->data, *st = c->inputs[2]->data;                   \
        T *dw = c->outputs[1]->data, *db = c->outputs[2]->data;                                                \
        double aw[64], ab[64];                                                                                 \
        for (int64_t k0 = c0; k0 < c1; k0 += 64) {                                                             \
            int64_t n = c1 - k0 < 64 ? c1 - k0 : 64;                                                           \
            for (int64_t i = 0; i < 64; i++) aw[i] = ab[i] = 0;                                                \
            for (int64_t r = 0; r < j->M; r++) {                                                               \
                const T *dyr = dy + r * N + k0, *xr = x + r * N + k0;                                          \
                double m = st[2 * r], rs = st[2 * r + 1];                                                      \
                if (n == 64)                                                                                   \
                    for (int64_t i = 0; i < 64; i++) { aw[i] += dyr[i] * ((xr[i] - m) * rs); ab[i] += dyr[i]; } \
                else                                                                                           \
                    for (int64_t i = 0; i < n; i++) { aw[i] += dyr[i] * ((xr[i] - m) * rs); ab[i] += dyr[i]; } \
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

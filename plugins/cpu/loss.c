/* CROSS_ENTROPY and CROSS_ENTROPY_GRAD (ABI 1.10, plugin.h): the classification loss in one pass over
 * the scores each way. The targets are checked first, in one serial pass that also counts the rows
 * that count; the rows then go over the pool: each row's log-sum-exp (its max, then its exps summed in
 * 16 float lanes and those in double, as softmax's rows), its loss lse - x[t] in double. Reduced
 * losses are added in row order afterwards, so the result does not depend on the thread count. The
 * gradient is exp(x - lse) s with s subtracted at the target: one vectorized pass a row. */
#include <math.h>
#include <stdlib.h>
#include "kernels.h"

typedef struct ce_job {
    const void *x;
    const int64_t *t;
    void *lse, *out;            /* forward: lse [N], the per-row losses (none) or NULL; grad: dx [N, C] */
    const void *g;              /* grad: the incoming gradient ([N] for none, one value otherwise) */
    double *rows;               /* forward with a reduction: each row's loss */
    int64_t C, ignore, base;
    int red, f64;
    double scale;               /* grad, sum and mean: g (/ the counted rows) */
} ce_job;

/* log sum exp of one f32 row, in double (NaN for a row with a NaN, -inf for a row of -inf) */
CPU_MULTI(double, lse_row_f32, (const float *restrict x, int64_t C), (x, C))
{
    float mx = C >= 64 ? cpu_extreme_f32(x, C, 1, -INFINITY) : cpu_short_max_f32(x, C);
    if (mx != mx) return NAN;
    if (mx == -INFINITY) return -INFINITY;
    return (double)mx + log(cpu_exp_sum_f32(x, C, mx));
}

/* the log-sum-exps of short rows (C < 16, a classifier's scores) of f32, CE_BLOCK at a time: the
 * block's exps are one vectorized loop (a row of 10 alone is a scalar tail of exps) */
enum { CE_BLOCK = 64 };
CPU_MULTI(void, lse_short_rows_f32, (const float *restrict x, double *restrict lse, int64_t rows, int64_t C), (x, lse, rows, C))
{
    float z[CE_BLOCK * 16], mx[CE_BLOCK];
    for (int64_t r = 0; r < rows; r++) {
        float m = mx[r] = cpu_short_max_f32(x + r * C, C);
        for (int64_t c = 0; c < C; c++) z[r * C + c] = x[r * C + c] - (m == -INFINITY ? 0.0f : m);
    }
    for (int64_t k = 0; k < rows * C; k++) { float e = cpu_exp_f32(z[k]); z[k] = x[k] == -INFINITY ? 0.0f : e; }
    for (int64_t r = 0; r < rows; r++) {
        double sum = 0;
        for (int64_t c = 0; c < C; c++) sum += z[r * C + c];
        lse[r] = mx[r] != mx[r] || mx[r] == INFINITY ? NAN : mx[r] == -INFINITY ? -INFINITY : (double)mx[r] + log(sum);
    }
}

static double lse_row_f64(const double *x, int64_t C)
{
    double mx = -INFINITY;
    for (int64_t c = 0; c < C; c++) {
        if (x[c] != x[c]) return NAN;
        mx = x[c] > mx ? x[c] : mx;
    }
    if (mx == -INFINITY) return -INFINITY;
    double sum = 0;
    for (int64_t c = 0; c < C; c++) sum += exp(x[c] - mx);
    return mx + log(sum);
}

static void ce_forward_range(void *arg, int64_t begin, int64_t end)
{
    const ce_job *j = arg;
    double lses[CE_BLOCK];
    if (!j->f64 && j->C < 16) {
        for (int64_t n0 = begin; n0 < end; n0 += CE_BLOCK) {
            int64_t rows = end - n0 < CE_BLOCK ? end - n0 : CE_BLOCK;
            const float *xb = (const float *)j->x + n0 * j->C;
            lse_short_rows_f32(xb, lses, rows, j->C);
            for (int64_t r = 0; r < rows; r++) {
                int64_t n = n0 + r, t = j->t[n];
                double loss = t == j->ignore ? 0.0 : lses[r] - (double)xb[r * j->C + t - j->base];
                ((float *)j->lse)[n] = (float)lses[r];
                if (j->rows) j->rows[n] = loss;
                else ((float *)j->out)[n] = (float)loss;
            }
        }
        return;
    }
    for (int64_t n = begin; n < end; n++) {
        int64_t t = j->t[n];
        double lse, loss;
        if (j->f64) {
            const double *x = (const double *)j->x + n * j->C;
            lse = lse_row_f64(x, j->C);
            ((double *)j->lse)[n] = lse;
            loss = t == j->ignore ? 0.0 : lse - x[t - j->base];
        } else {
            const float *x = (const float *)j->x + n * j->C;
            lse = lse_row_f32(x, j->C);
            ((float *)j->lse)[n] = (float)lse;
            loss = t == j->ignore ? 0.0 : lse - (double)x[t - j->base];
        }
        if (j->rows) j->rows[n] = loss;
        else if (j->f64) ((double *)j->out)[n] = loss;
        else ((float *)j->out)[n] = (float)loss;
    }
}

/* one f32 row of the gradient: (exp(x - lse) - [c == t]) s */
CPU_MULTI(void, ce_grad_row_f32, (const float *restrict x, float *restrict dx, int64_t C, float lse, float s),
          (x, dx, C, lse, s))
{
    for (int64_t c = 0; c < C; c++) {
        float e = cpu_exp_f32(x[c] - lse);
        dx[c] = (x[c] == -INFINITY ? 0.0f : e) * s;
    }
}

static void ce_grad_range(void *arg, int64_t begin, int64_t end)
{
    const ce_job *j = arg;
    for (int64_t n = begin; n < end; n++) {
        int64_t t = j->t[n];
        int counted = t != j->ignore;
        if (counted) t -= j->base;   /* a counted label was checked: its class */
        if (j->f64) {
            const double *x = (const double *)j->x + n * j->C;
            double *dx = (double *)j->out + n * j->C, lse = ((const double *)j->lse)[n];
            double s = j->red == 0 ? ((const double *)j->g)[n] : j->scale;
            if (!counted) { for (int64_t c = 0; c < j->C; c++) dx[c] = 0; continue; }
            for (int64_t c = 0; c < j->C; c++) dx[c] = exp(x[c] - lse) * s;
            if (t >= 0 && t < j->C) dx[t] -= s;
        } else {
            const float *x = (const float *)j->x + n * j->C;
            float *dx = (float *)j->out + n * j->C, lse = ((const float *)j->lse)[n];
            float s = j->red == 0 ? ((const float *)j->g)[n] : (float)j->scale;
            if (!counted) { for (int64_t c = 0; c < j->C; c++) dx[c] = 0; continue; }
            if (!(lse > -INFINITY)) {       /* a row with a NaN or of -inf: NaN, as log_softmax's backward */
                for (int64_t c = 0; c < j->C; c++) dx[c] = NAN;
                continue;
            }
            ce_grad_row_f32(x, dx, j->C, lse, s);
            if (t >= 0 && t < j->C) dx[t] -= s;
        }
    }
}

int cpu_supports_cross_entropy(const nnr_op_call *call)
{
    int back = call->op == NNR_OP_CROSS_ENTROPY_GRAD;
    if (!call->params || call->n_inputs != (back ? 4 : 2) || call->n_outputs != (back ? 1 : 2)) return 0;
    const nnr_tensor_desc *x = call->inputs[0], *t = call->inputs[1];
    if ((x->dtype != NNR_F32 && x->dtype != NNR_F64) || t->dtype != NNR_I64 || x->ndim != 2 || t->ndim != 1) return 0;
    int64_t N = x->sizes[0], reduced = call->params->i[1] == 0 ? N : 1;
    if (t->sizes[0] != N) return 0;
    if (back && (nnr_desc_numel(call->inputs[2]) != N || nnr_desc_numel(call->inputs[3]) != reduced ||
                 nnr_desc_numel(call->outputs[0]) != nnr_desc_numel(x)))
        return 0;
    if (!back && (nnr_desc_numel(call->outputs[0]) != reduced || nnr_desc_numel(call->outputs[1]) != N)) return 0;
    if (call->params->i[1] < 0 || call->params->i[1] > 2 || (call->params->i[2] != 0 && call->params->i[2] != 1)) return 0;
    for (int i = 0; i < call->n_inputs; i++)
        if (!nnr_desc_is_contiguous(call->inputs[i]) || (i != 1 && call->inputs[i]->dtype != x->dtype)) return 0;
    for (int i = 0; i < call->n_outputs; i++)
        if (!nnr_desc_is_contiguous(call->outputs[i]) || call->outputs[i]->dtype != x->dtype) return 0;
    return 1;
}

int cpu_cross_entropy(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *t = call->inputs[1];
    int64_t N = x->sizes[0], C = x->sizes[1], ignore = call->params->i[0], base = call->params->i[2];
    int red = (int)call->params->i[1];
    const int64_t *tv = t->data;
    int64_t counted = 0;
    for (int64_t n = 0; n < N; n++) {
        if (tv[n] == ignore) continue;
        if (tv[n] < base || tv[n] - base >= C)
            return cpu_error(NNR_ERR_INVALID, "cross_entropy: target label %lld is outside the class range %lld..%lld", (long long)tv[n],
                             (long long)base, (long long)(base + C - 1));
        counted++;
    }
    ce_job j = {.x = x->data, .t = tv, .C = C, .ignore = ignore, .base = base, .red = red, .f64 = x->dtype == NNR_F64};
    int64_t grain = C > 0 ? (1 << 14) / C : N;
    if (grain < 1) grain = 1;
    if (call->op == NNR_OP_CROSS_ENTROPY_GRAD) {
        j.lse = call->inputs[2]->data;
        j.g = call->inputs[3]->data;
        j.out = call->outputs[0]->data;
        if (red != 0) {
            double g = j.f64 ? *(const double *)j.g : *(const float *)j.g;
            j.scale = red == 2 ? g / (double)counted : g;
        }
        return N == 0 || C == 0 ? NNR_OK : cpu_parallel_for(N, grain, ce_grad_range, &j);
    }
    j.lse = call->outputs[1]->data;
    j.out = call->outputs[0]->data;
    if (red != 0 && N > 0 && !(j.rows = malloc(sizeof(double) * (size_t)N))) return cpu_error(NNR_ERR_OOM, "cross_entropy: out of memory");
    int st = N == 0 ? NNR_OK : cpu_parallel_for(N, grain, ce_forward_range, &j);
    if (st == NNR_OK && red != 0) {
        double sum = 0;
        for (int64_t n = 0; n < N; n++) sum += j.rows[n];
        if (red == 2) sum /= (double)counted;          /* 0 / 0: NaN, as PyTorch's mean over no rows */
        if (j.f64) *(double *)j.out = sum;
        else *(float *)j.out = (float)sum;
    }
    free(j.rows);
    return st;
}

/* Reductions (any and all too, writing bool) and softmax.
 *
 * reduce: inputs[0] is [kept..., reduced...] (i[0] reduced dims), outputs[0]
 * is [kept...]. Each output element walks its reduced sub-tensor row by row;
 * outputs are split across threads. Accumulation is in double (int64 for
 * integer sums and products), so f32 sums are accurate to f32 rounding. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "rows.h"

typedef struct red_ctx {
    int op;
    int in_dtype, out_dtype;
    const nnr_tensor_desc *in, *out;
    int nkept, nred;
    int64_t red_sizes[NNR_MAX_DIMS], red_strides[NNR_MAX_DIMS];   /* bytes, coalesced */
    int64_t count;
    int64_t correction;
    int sqrt_result;
} red_ctx;

typedef struct acc {
    double d;            /* sum/prod/max/min/mean */
    int64_t i;           /* integer sum/prod, or arg index */
    double mean, m2;     /* Welford */
    int64_t n;
    int started;
} acc;

static void acc_row_f64(const red_ctx *c, acc *a, const double *x, int64_t m, int64_t base_index)
{
    switch (c->op) {
    case NNR_OP_SUM: case NNR_OP_MEAN: {
        /* 8 running sums, added pairwise: independent adds instead of one chain of dependent ones (a
         * row sum of [4096, 1024] took 2.2 ms); the order is fixed by the data, not the threads */
        double l[8] = {0};
        int64_t m8 = m - m % 8;
        for (int64_t i = 0; i < m8; i += 8)
            for (int k = 0; k < 8; k++) l[k] += x[i + k];
        for (int64_t i = m8; i < m; i++) l[i - m8] += x[i];
        a->d += ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
        break;
    }
    case NNR_OP_PROD: for (int64_t i = 0; i < m; i++) a->d *= x[i]; break;
    case NNR_OP_MAX: case NNR_OP_ARGMAX:
        for (int64_t i = 0; i < m; i++) {
            if (a->d != a->d) break;                                  /* NaN wins and stays */
            if (!a->started || x[i] > a->d || x[i] != x[i]) { a->d = x[i]; a->i = base_index + i; a->started = 1; }
        }
        break;
    case NNR_OP_MIN: case NNR_OP_ARGMIN:
        for (int64_t i = 0; i < m; i++) {
            if (a->d != a->d) break;
            if (!a->started || x[i] < a->d || x[i] != x[i]) { a->d = x[i]; a->i = base_index + i; a->started = 1; }
        }
        break;
    case NNR_OP_ANY: for (int64_t i = 0; i < m; i++) if (x[i] != 0) { a->i = 1; break; } break;   /* NaN != 0 */
    case NNR_OP_ALL: for (int64_t i = 0; i < m; i++) if (x[i] == 0) { a->i = 0; break; } break;
    case NNR_OP_VAR:
        for (int64_t i = 0; i < m; i++) {
            a->n++;
            double delta = x[i] - a->mean;
            a->mean += delta / (double)a->n;
            a->m2 += delta * (x[i] - a->mean);
        }
        break;
    }
}

static void acc_row_i64(const red_ctx *c, acc *a, const int64_t *x, int64_t m, int64_t base_index)
{
    switch (c->op) {
    case NNR_OP_SUM: for (int64_t i = 0; i < m; i++) a->i = (int64_t)((uint64_t)a->i + (uint64_t)x[i]); break;
    case NNR_OP_PROD: for (int64_t i = 0; i < m; i++) a->i = (int64_t)((uint64_t)a->i * (uint64_t)x[i]); break;
    case NNR_OP_MAX: case NNR_OP_ARGMAX:
        for (int64_t i = 0; i < m; i++)
            if (!a->started || x[i] > a->n) { a->d = (double)x[i]; a->n = x[i]; a->i = base_index + i; a->started = 1; }
        break;
    case NNR_OP_MIN: case NNR_OP_ARGMIN:
        for (int64_t i = 0; i < m; i++)
            if (!a->started || x[i] < a->n) { a->d = (double)x[i]; a->n = x[i]; a->i = base_index + i; a->started = 1; }
        break;
    case NNR_OP_ANY: for (int64_t i = 0; i < m; i++) if (x[i] != 0) { a->i = 1; break; } break;
    case NNR_OP_ALL: for (int64_t i = 0; i < m; i++) if (x[i] == 0) { a->i = 0; break; } break;
    }
}

/* ---- contiguous f32 runs: sums in 16 double lanes (added pairwise at the end; the order is the
 * data's, not the threads'), max and min in 16 float lanes, a NaN winning and staying ---- */
CPU_MULTI(double, sum_f32_run, (const float *restrict x, int64_t n), (x, n))
{
    double l[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) l[k] += x[i + k];
    for (int k = 0; i < n; i++, k++) l[k] += x[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) l[k] += l[k + w];
    return l[0];
}

/* the largest or smallest of n floats, NaN if one is (vmath.c: explicit vectors; the loop on float
 * arrays stayed a chain of compares and branches in GCC's AVX2 copy) */
static float maxmin_f32_run(const float *x, int64_t n, int is_max, float init) { return cpu_extreme_f32(x, n, is_max, init); }

/* the ops the f32 runs take: whole rows of a contiguous innermost reduced dim */
static int f32_run_op(const red_ctx *c)
{
    return c->in_dtype == NNR_F32 && (c->op == NNR_OP_SUM || c->op == NNR_OP_MEAN || c->op == NNR_OP_MAX || c->op == NNR_OP_MIN);
}

/* ARGMAX and ARGMIN over a contiguous f32 run: the extreme on vectors, then the first index holding it
 * (or the first NaN), only when it beats what earlier runs of the same output had: the first
 * occurrence wins, as in the element walk */
static void arg_f32_run(const red_ctx *c, acc *a, const float *x, int64_t n, int64_t base)
{
    if (a->started && a->d != a->d) return;                    /* a NaN was found: it stays */
    int is_max = c->op == NNR_OP_ARGMAX;
    float m = cpu_extreme_f32(x, n, is_max, a->started ? (float)a->d : x[0]);
    if (a->started && m == m && !(is_max ? m > a->d : m < a->d)) return;
    int64_t k = 0;
    if (m != m) while (k < n - 1 && x[k] == x[k]) k++;
    else while (k < n - 1 && x[k] != m) k++;
    a->d = m;
    a->i = base + k;
    a->started = 1;
}

static void reduce_range(void *vc, int64_t begin, int64_t end)
{
    const red_ctx *c = vc;
    int integral = nnr_dtype_is_integral(c->in_dtype);
    int64_t in_es = (int64_t)nnr_dtype_nbytes(c->in_dtype), out_es = (int64_t)nnr_dtype_nbytes(c->out_dtype);
    int nr = c->nred;
    int64_t inner = nr ? c->red_sizes[nr - 1] : 1, inner_stride = nr ? c->red_strides[nr - 1] : 0;
    for (int64_t o = begin; o < end; o++) {
        /* base pointers of this output element */
        const char *ip = (const char *)c->in->data;
        char *op = (char *)c->out->data;
        int64_t rem = o;
        for (int d = c->nkept - 1; d >= 0; d--) {
            int64_t k = rem % c->in->sizes[d];
            rem /= c->in->sizes[d];
            ip += k * c->in->strides[d] * in_es;
            op += k * c->out->strides[d] * out_es;
        }
        acc a = {0};
        if (c->op == NNR_OP_PROD) { a.d = 1; a.i = 1; }
        if (c->op == NNR_OP_ALL) a.i = 1;
        int64_t idx[NNR_MAX_DIMS] = {0}, flat = 0;
        int64_t rows = c->count / (inner ? inner : 1);
        for (int64_t r = 0; r < rows && inner > 0; r++) {
            const char *rp = ip;
            for (int d = 0; d < nr - 1; d++) rp += idx[d] * c->red_strides[d];
            if (inner_stride == 4 && c->in_dtype == NNR_F32 && (c->op == NNR_OP_ARGMAX || c->op == NNR_OP_ARGMIN)) {
                arg_f32_run(c, &a, (const float *)rp, inner, flat);
                flat += inner;
                for (int d = nr - 2; d >= 0; d--) { if (++idx[d] < c->red_sizes[d]) break; idx[d] = 0; }
                continue;
            }
            if (inner_stride == 4 && f32_run_op(c)) {
                if (c->op == NNR_OP_SUM || c->op == NNR_OP_MEAN) a.d += sum_f32_run((const float *)rp, inner);
                else if (!(a.started && a.d != a.d)) {
                    float m = maxmin_f32_run((const float *)rp, inner, c->op == NNR_OP_MAX, a.started ? (float)a.d : *(const float *)rp);
                    a.d = m;
                    a.started = 1;
                }
                flat += inner;
                for (int d = nr - 2; d >= 0; d--) { if (++idx[d] < c->red_sizes[d]) break; idx[d] = 0; }
                continue;
            }
            for (int64_t at = 0; at < inner; at += CPU_CHUNK) {
                int64_t m = inner - at < CPU_CHUNK ? inner - at : CPU_CHUNK;
                if (integral) {
                    int64_t x[CPU_CHUNK];
                    load_row_i64(c->in_dtype, rp + at * inner_stride, inner_stride, m, x);
                    acc_row_i64(c, &a, x, m, flat + at);
                } else {
                    double x[CPU_CHUNK];
                    load_row_f64(c->in_dtype, rp + at * inner_stride, inner_stride, m, x);
                    acc_row_f64(c, &a, x, m, flat + at);
                }
            }
            flat += inner;
            for (int d = nr - 2; d >= 0; d--) { if (++idx[d] < c->red_sizes[d]) break; idx[d] = 0; }
        }
        switch (c->op) {
        case NNR_OP_SUM: case NNR_OP_PROD:
            if (integral) nnr_store_i64(c->out_dtype, op, a.i); else nnr_store_f64(c->out_dtype, op, a.d);
            break;
        case NNR_OP_MEAN: nnr_store_f64(c->out_dtype, op, c->count ? a.d / (double)c->count : NAN); break;
        case NNR_OP_MAX: case NNR_OP_MIN:
            if (integral) nnr_store_i64(c->out_dtype, op, a.n); else nnr_store_f64(c->out_dtype, op, a.d);
            break;
        case NNR_OP_ARGMAX: case NNR_OP_ARGMIN: case NNR_OP_ANY: case NNR_OP_ALL: nnr_store_i64(c->out_dtype, op, a.i); break;
        case NNR_OP_VAR: {
            double dof = (double)(a.n - c->correction);
            double v = dof > 0 ? a.m2 / dof : a.m2 > 0 ? INFINITY : NAN;   /* PyTorch: m2 / max(0, n - correction) */
            nnr_store_f64(c->out_dtype, op, c->sqrt_result ? sqrt(v) : v);
            break;
        }
        }
    }
}

/* SUM and MEAN of a contiguous f32 [R, K] over its rows (a bias gradient): add whole
 * rows into double accumulators, a block of columns per thread, instead of
 * walking each column with a stride of K. */
typedef struct colsum_job { const float *x; float *out; int64_t R, K; int mean; } colsum_job;

static void colsum_range(void *arg, int64_t begin, int64_t end)
{
    const colsum_job *j = arg;
    double acc[512];
    for (int64_t c0 = begin; c0 < end; c0 += 512) {
        int64_t n = end - c0 < 512 ? end - c0 : 512;
        for (int64_t k = 0; k < n; k++) acc[k] = 0;
        for (int64_t r = 0; r < j->R; r++) {
            const float *row = j->x + r * j->K + c0;
            for (int64_t k = 0; k < n; k++) acc[k] += row[k];
        }
        for (int64_t k = 0; k < n; k++) j->out[c0 + k] = (float)(j->mean ? acc[k] / (double)j->R : acc[k]);
    }
}

static int column_sum_fast(const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    if ((call->op != NNR_OP_SUM && call->op != NNR_OP_MEAN) || in->dtype != NNR_F32 || out->dtype != NNR_F32 || in->ndim != 2 || call->params->i[0] != 1) return -1;
    int64_t K = in->sizes[0], R = in->sizes[1];   /* kept dim first, reduced last */
    if (in->strides[0] != 1 || in->strides[1] != K || out->strides[0] != 1 || R < 2) return -1;
    colsum_job j = {in->data, out->data, R, K, call->op == NNR_OP_MEAN};
    return cpu_parallel_for(K, 512, colsum_range, &j);
}

/* One output over a long contiguous f32 run (x:sum(), a loss's mean): the run cut into pieces of
 * SPLIT_RUN elements that the threads take, each piece's partial kept, and the partials combined in
 * order: the result does not depend on the thread count. */
enum { SPLIT_RUN = 1 << 15, SPLIT_MAX_PIECES = 4096 };
typedef struct split_job { const red_ctx *c; const float *x; int64_t piece; double part[SPLIT_MAX_PIECES]; } split_job;

static void split_range(void *arg, int64_t begin, int64_t end)
{
    split_job *j = arg;
    for (int64_t p = begin; p < end; p++) {
        int64_t at = p * j->piece, n = j->c->count - at < j->piece ? j->c->count - at : j->piece;
        const float *x = j->x + at;
        j->part[p] = j->c->op == NNR_OP_SUM || j->c->op == NNR_OP_MEAN ? sum_f32_run(x, n) : maxmin_f32_run(x, n, j->c->op == NNR_OP_MAX, x[0]);
    }
}

static int split_reduce(const red_ctx *c)
{
    split_job *j = malloc(sizeof *j);
    if (!j) return cpu_error(NNR_ERR_OOM, "reduce: out of memory");
    j->c = c;
    j->x = c->in->data;
    j->piece = SPLIT_RUN;
    while ((c->count + j->piece - 1) / j->piece > SPLIT_MAX_PIECES) j->piece *= 2;
    int64_t pieces = (c->count + j->piece - 1) / j->piece;
    int st = cpu_parallel_for(pieces, 1, split_range, j);
    if (st == NNR_OK) {
        double r = j->part[0];
        for (int64_t p = 1; p < pieces; p++) {
            double v = j->part[p];
            if (c->op == NNR_OP_SUM || c->op == NNR_OP_MEAN) r += v;
            else if (r == r && (v != v || (c->op == NNR_OP_MAX ? v > r : v < r))) r = v;
        }
        if (c->op == NNR_OP_MEAN) r /= (double)c->count;
        nnr_store_f64(c->out_dtype, c->out->data, r);
    }
    free(j);
    return st;
}

int cpu_reduce(const nnr_op_call *call)
{
    int fast = column_sum_fast(call);
    if (fast >= 0) return fast;
    red_ctx c = {.op = (int)call->op, .in = call->inputs[0], .out = call->outputs[0]};
    c.in_dtype = c.in->dtype;
    c.out_dtype = c.out->dtype;
    c.nred = (int)call->params->i[0];
    c.nkept = c.in->ndim - c.nred;
    c.correction = call->params->i[1];
    c.sqrt_result = call->params->i[2] != 0;
    int64_t es = (int64_t)nnr_dtype_nbytes(c.in_dtype);
    c.count = 1;
    int w = 0;
    for (int d = c.nkept; d < c.in->ndim; d++) {
        int64_t sz = c.in->sizes[d], st = c.in->strides[d] * es;
        c.count *= sz;
        if (sz == 1) continue;
        if (w > 0 && c.red_strides[w - 1] == st * sz) { c.red_sizes[w - 1] *= sz; c.red_strides[w - 1] = st; continue; }
        c.red_sizes[w] = sz; c.red_strides[w] = st; w++;
    }
    if (w == 0) { c.red_sizes[0] = c.count ? 1 : 0; c.red_strides[0] = 0; w = 1; }
    c.nred = w;
    int64_t nout = 1;
    for (int d = 0; d < c.nkept; d++) nout *= c.in->sizes[d];
    if (nout == 1 && w == 1 && c.red_strides[0] == 4 && c.count >= 2 * SPLIT_RUN && f32_run_op(&c)) return split_reduce(&c);
    int64_t grain = c.count > 0 ? (1 << 15) / c.count : 1 << 15;
    return cpu_parallel_for(nout, grain > 0 ? grain : 1, reduce_range, &c);
}

/* ---------------- softmax over the last dim ---------------- */

typedef struct sm_ctx { const nnr_tensor_desc *in, *out; int log; } sm_ctx;

/* rows of n contiguous f32 (row r at x + r n), the exps by cpu_exp_f32 in vectorized loops (libm's exp
 * one double at a time took 23 ms for the 2M scores of a small GPT's attention), -inf giving exactly 0,
 * a row with a NaN all NaN. A long row: its max by cpu_extreme_f32, its exps summed in 16 lanes (a
 * 16-lane flag array for the NaN test had made the max pass scalar: 3 ns an element). Rows shorter than
 * 16 (a classifier's scores) go in blocks of SM_BLOCK rows whose exps are one vectorized loop over the
 * block (a row of 10 alone was a scalar tail: 120 ns a row). */
enum { SM_BLOCK = 64 };
CPU_MULTI(void, softmax_rows_f32, (const float *restrict x, float *restrict y, int64_t rows, int64_t n, int take_log),
          (x, y, rows, n, take_log))
{
    if (n < 16) {
        float mx[SM_BLOCK], f[SM_BLOCK];
        for (int64_t r0 = 0; r0 < rows; r0 += SM_BLOCK) {
            int64_t nr = rows - r0 < SM_BLOCK ? rows - r0 : SM_BLOCK;
            const float *xb = x + r0 * n;
            float *yb = y + r0 * n;
            for (int64_t r = 0; r < nr; r++) {
                float m = cpu_short_max_f32(xb + r * n, n);
                mx[r] = m == -INFINITY ? 0.0f : m;    /* every element -inf: 0 / 0, NaN */
                for (int64_t i = 0; i < n; i++) yb[r * n + i] = xb[r * n + i] - mx[r];
            }
            for (int64_t k = 0; k < nr * n; k++) { float e = cpu_exp_f32(yb[k]); yb[k] = xb[k] == -INFINITY ? 0.0f : e; }
            for (int64_t r = 0; r < nr; r++) {
                double sum = 0;
                for (int64_t i = 0; i < n; i++) sum += yb[r * n + i];
                f[r] = take_log ? (float)log(sum) : (float)(1.0 / sum);
            }
            for (int64_t r = 0; r < nr; r++) {
                float *o = yb + r * n;
                const float *in = xb + r * n;
                if (take_log) for (int64_t i = 0; i < n; i++) o[i] = (in[i] - mx[r]) - f[r];
                else for (int64_t i = 0; i < n; i++) o[i] *= f[r];
                if (mx[r] != mx[r]) for (int64_t i = 0; i < n; i++) o[i] = NAN;
            }
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float mx = cpu_extreme_f32(xr, n, 1, -INFINITY);
        if (mx != mx) { for (int64_t i = 0; i < n; i++) yr[i] = NAN; continue; }
        if (mx == -INFINITY) mx = 0;
        if (take_log) {      /* the exps only summed: (x - max) - log(sum), as max + log(sum) would round at max's scale */
            float l = (float)log(cpu_exp_sum_f32(xr, n, mx));
            for (int64_t i = 0; i < n; i++) yr[i] = (xr[i] - mx) - l;
            continue;
        }
        float lane[16] = {0};
        int64_t j = 0;
        for (; j + 16 <= n; j += 16)
            for (int k = 0; k < 16; k++) {
                float v = xr[j + k], e = cpu_exp_f32(v - mx);
                e = v == -INFINITY ? 0.0f : e;
                yr[j + k] = e;
                lane[k] += e;
            }
        double sum = 0;
        for (; j < n; j++) sum += yr[j] = xr[j] == -INFINITY ? 0.0f : cpu_exp_f32(xr[j] - mx);
        for (int k = 0; k < 16; k++) sum += lane[k];
        float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < n; i++) yr[i] *= inv;
    }
}

static void softmax_range(void *vc, int64_t begin, int64_t end)
{
    const sm_ctx *c = vc;
    if (c->in->dtype == NNR_F32 && c->out->dtype == NNR_F32 && nnr_desc_is_contiguous(c->in) && nnr_desc_is_contiguous(c->out)) {
        int64_t n = c->in->sizes[c->in->ndim - 1];
        softmax_rows_f32((const float *)c->in->data + begin * n, (float *)c->out->data + begin * n, end - begin, n, c->log);
        return;
    }
    int nd = c->in->ndim;
    int64_t n = c->in->sizes[nd - 1];
    int64_t ies = (int64_t)nnr_dtype_nbytes(c->in->dtype), oes = (int64_t)nnr_dtype_nbytes(c->out->dtype);
    int64_t is = c->in->strides[nd - 1] * ies, os = c->out->strides[nd - 1] * oes;
    double stackbuf[256];
    double *x = n <= 256 ? stackbuf : malloc(sizeof(double) * (size_t)n);
    if (!x) return;
    for (int64_t r = begin; r < end; r++) {
        const char *ip = (const char *)c->in->data;
        char *op = (char *)c->out->data;
        int64_t rem = r;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t k = rem % c->in->sizes[d];
            rem /= c->in->sizes[d];
            ip += k * c->in->strides[d] * ies;
            op += k * c->out->strides[d] * oes;
        }
        load_row_f64(c->in->dtype, ip, is, n, x);
        double mx = -INFINITY;
        for (int64_t i = 0; i < n; i++) if (x[i] > mx || x[i] != x[i]) mx = x[i];
        if (mx == -INFINITY) mx = 0;
        double sum = 0;
        if (c->log) {
            for (int64_t i = 0; i < n; i++) sum += exp(x[i] - mx);
            double lse = mx + log(sum);
            for (int64_t i = 0; i < n; i++) x[i] -= lse;
        } else {
            for (int64_t i = 0; i < n; i++) { x[i] = exp(x[i] - mx); sum += x[i]; }
            for (int64_t i = 0; i < n; i++) x[i] /= sum;
        }
        store_row_f64(c->out->dtype, op, os, n, x);
    }
    if (x != stackbuf) free(x);
}

/* Softmax over a dim that is not the last, of a tensor whose dims after it are contiguous: the core
 * hands it over as a strided last dim (stride S) whose neighbour dim has stride 1 and size S. Rows j of
 * the softmax are then whole contiguous rows of S columns, and a block of up to 256 columns goes
 * through the max, exp-sum and scale passes a row at a time, every pass vectorized across the columns
 * (gathering each strided row had cost a TLB miss an element: 45 ms for [2048, 2048] over dim 1). */
enum { SMC_BLOCK = 256 };
CPU_MULTI(void, softmax_cols_f32, (const float *restrict x, float *restrict y, int64_t n, int64_t ld, int64_t bw, int take_log),
          (x, y, n, ld, bw, take_log))
{
    float m[SMC_BLOCK];
    double sum[SMC_BLOCK];         /* in double, as the row path: a long softmax dim adds many terms */
    int nan[SMC_BLOCK];
    for (int64_t k = 0; k < bw; k++) { m[k] = -INFINITY; nan[k] = 0; sum[k] = 0; }
    for (int64_t j = 0; j < n; j++) {
        const float *r = x + j * ld;
        for (int64_t k = 0; k < bw; k++) { float v = r[k]; m[k] = v > m[k] ? v : m[k]; nan[k] |= v != v; }
    }
    for (int64_t k = 0; k < bw; k++) m[k] = m[k] == -INFINITY ? 0.0f : m[k];    /* all -inf: 0 / 0, NaN */
    for (int64_t j = 0; j < n; j++) {
        const float *r = x + j * ld;
        float *o = y + j * ld;
        for (int64_t k = 0; k < bw; k++) { float e = r[k] == -INFINITY ? 0.0f : cpu_exp_f32(r[k] - m[k]); o[k] = e; sum[k] += e; }
    }
    float f[SMC_BLOCK];
    for (int64_t k = 0; k < bw; k++) f[k] = take_log ? (float)log(sum[k]) : (float)(1.0 / sum[k]);
    for (int64_t j = 0; j < n; j++) {
        const float *r = x + j * ld;
        float *o = y + j * ld;
        if (take_log) for (int64_t k = 0; k < bw; k++) o[k] = (r[k] - m[k]) - f[k];
        else for (int64_t k = 0; k < bw; k++) o[k] *= f[k];
    }
    for (int64_t k = 0; k < bw; k++)
        if (nan[k]) for (int64_t j = 0; j < n; j++) y[j * ld + k] = NAN;
}

typedef struct smc_ctx { const nnr_tensor_desc *in, *out; int log; int64_t n, S, bw, blocks; } smc_ctx;

static void softmax_cols_range(void *vc, int64_t begin, int64_t end)
{
    const smc_ctx *c = vc;
    int nd = c->in->ndim;
    for (int64_t t = begin; t < end; t++) {
        int64_t o = t / c->blocks, b = t % c->blocks;
        const float *ip = c->in->data;
        float *op = c->out->data;
        int64_t rem = o;
        for (int d = nd - 3; d >= 0; d--) {
            int64_t k = rem % c->in->sizes[d];
            rem /= c->in->sizes[d];
            ip += k * c->in->strides[d];
            op += k * c->out->strides[d];
        }
        int64_t k0 = b * c->bw, bw = c->S - k0 < c->bw ? c->S - k0 : c->bw;
        softmax_cols_f32(ip + k0, op + k0, c->n, c->S, bw, c->log);
    }
}

static int softmax_cols(const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    int nd = in->ndim;
    if (in->dtype != NNR_F32 || out->dtype != NNR_F32 || nd < 2) return -1;
    int64_t S = in->strides[nd - 1];
    if (S <= 1 || in->strides[nd - 2] != 1 || in->sizes[nd - 2] != S) return -1;
    for (int d = 0; d < nd; d++) if (out->strides[d] != in->strides[d]) return -1;
    /* blocks of SMC_BLOCK columns: narrower ones (to keep a block in L2) touched a new page every row,
     * and the TLB misses cost more (16 columns: 29 ms against 11 for [2048, 2048] on one core) */
    int64_t n = in->sizes[nd - 1];
    smc_ctx c = {in, out, call->op == NNR_OP_LOG_SOFTMAX, n, S, SMC_BLOCK, (S + SMC_BLOCK - 1) / SMC_BLOCK};
    int64_t outer = 1;
    for (int d = 0; d < nd - 2; d++) outer *= in->sizes[d];
    if (outer == 0 || c.n == 0) return NNR_OK;
    return cpu_parallel_for(outer * c.blocks, 1, softmax_cols_range, &c);
}

int cpu_softmax(const nnr_op_call *call)
{
    int cols = softmax_cols(call);
    if (cols >= 0) return cols;
    sm_ctx c = {call->inputs[0], call->outputs[0], call->op == NNR_OP_LOG_SOFTMAX};
    int nd = c.in->ndim;
    int64_t rows = 1;
    for (int d = 0; d < nd - 1; d++) rows *= c.in->sizes[d];
    int64_t n = c.in->sizes[nd - 1];
    if (n == 0 || rows == 0) return NNR_OK;
    int64_t grain = (1 << 14) / n;
    return cpu_parallel_for(rows, grain > 0 ? grain : 1, softmax_range, &c);
}

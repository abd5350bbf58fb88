/* cumsum and cumprod along the last dim (the core moves the dim there), forward or from the end.
 *
 * Floats accumulate in double (as PyTorch's cpu kernels do), integers (I64 in and out) in int64 with
 * wrap-around. Rows are spread over the pool; a long row with few rows beside it is scanned in two
 * passes over chunks: each chunk's total, a serial scan of the totals, then each chunk again from
 * its carry. */
#include "rows.h"

typedef struct scan_acc { double d; int64_t i; } scan_acc;

typedef struct scan_job {
    const nnr_tensor_desc *in, *out;
    int prod, reverse;
    int64_t n, chunk;            /* the chunked pass: elements per chunk */
    scan_acc *carry;             /* the chunked pass: one carry per chunk */
} scan_job;

/* scans n elements from ip (stride is bytes) into op (NULL: only the total), from carry; returns
 * the running value after the last */
static scan_acc scan_span(int dt, int prod, const char *ip, int64_t is, char *op, int64_t os, int64_t n, scan_acc a)
{
    switch (dt) {
    case NNR_F32: {
        double s = a.d;
        if (!op && !prod) {      /* a chunk's total: four running sums, so the adds overlap */
            double s1 = 0, s2 = 0, s3 = 0;
            int64_t i = 0;
            for (; i + 4 <= n; i += 4) {
                s += *(const float *)(ip + i * is); s1 += *(const float *)(ip + (i + 1) * is);
                s2 += *(const float *)(ip + (i + 2) * is); s3 += *(const float *)(ip + (i + 3) * is);
            }
            for (; i < n; i++) s += *(const float *)(ip + i * is);
            s += (s1 + s2) + s3;
        }
        else if (!op) for (int64_t i = 0; i < n; i++) s *= *(const float *)(ip + i * is);
        else if (prod) for (int64_t i = 0; i < n; i++) { s *= *(const float *)(ip + i * is); *(float *)(op + i * os) = (float)s; }
        else for (int64_t i = 0; i < n; i++) { s += *(const float *)(ip + i * is); *(float *)(op + i * os) = (float)s; }
        a.d = s;
        return a;
    }
    case NNR_F64: {
        double s = a.d;
        if (!op) { if (prod) for (int64_t i = 0; i < n; i++) s *= *(const double *)(ip + i * is); else for (int64_t i = 0; i < n; i++) s += *(const double *)(ip + i * is); }
        else if (prod) for (int64_t i = 0; i < n; i++) { s *= *(const double *)(ip + i * is); *(double *)(op + i * os) = s; }
        else for (int64_t i = 0; i < n; i++) { s += *(const double *)(ip + i * is); *(double *)(op + i * os) = s; }
        a.d = s;
        return a;
    }
    case NNR_I64: {
        uint64_t s = (uint64_t)a.i;
        for (int64_t i = 0; i < n; i++) {
            uint64_t x = (uint64_t)*(const int64_t *)(ip + i * is);
            s = prod ? s * x : s + x;
            if (op) *(int64_t *)(op + i * os) = (int64_t)s;
        }
        a.i = (int64_t)s;
        return a;
    }
    default: {                   /* f16, bf16: through double chunks */
        double s = a.d, x[CPU_CHUNK];
        for (int64_t at = 0; at < n; at += CPU_CHUNK) {
            int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
            load_row_f64(dt, ip + at * is, is, m, x);
            for (int64_t i = 0; i < m; i++) { s = prod ? s * x[i] : s + x[i]; x[i] = s; }
            if (op) store_row_f64(dt, op + at * os, os, m, x);
        }
        a.d = s;
        return a;
    }
    }
}

/* the first element of row r of d and the last dim's stride in bytes, walked backwards when reverse */
static const char *row_start(const nnr_tensor_desc *d, int64_t r, int reverse, int64_t *stride)
{
    int nd = d->ndim;
    int64_t es = (int64_t)nnr_dtype_nbytes(d->dtype), off = 0, rem = r;
    for (int k = nd - 2; k >= 0; k--) { off += (rem % d->sizes[k]) * d->strides[k]; rem /= d->sizes[k]; }
    *stride = d->strides[nd - 1] * es;
    const char *p = (const char *)d->data + off * es;
    if (reverse) { p += (d->sizes[nd - 1] - 1) * *stride; *stride = -*stride; }
    return p;
}

static scan_acc start_value(int prod) { scan_acc a = {prod ? 1.0 : 0.0, prod ? 1 : 0}; return a; }

static void rows_range(void *arg, int64_t begin, int64_t end)
{
    const scan_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        int64_t is, os;
        const char *ip = row_start(j->in, r, j->reverse, &is);
        char *op = (char *)row_start(j->out, r, j->reverse, &os);
        scan_span(j->in->dtype, j->prod, ip, is, op, os, j->n, start_value(j->prod));
    }
}

/* one long row: chunk c's total into carry[c] (first pass) or chunk c written from carry[c] */
static void totals_range(void *arg, int64_t begin, int64_t end)
{
    const scan_job *j = arg;
    int64_t is, os;
    const char *ip = row_start(j->in, 0, j->reverse, &is);
    for (int64_t c = begin; c < end; c++) {
        int64_t at = c * j->chunk, m = j->n - at < j->chunk ? j->n - at : j->chunk;
        j->carry[c] = scan_span(j->in->dtype, j->prod, ip + at * is, is, NULL, 0, m, start_value(j->prod));
    }
    (void)os;
}

static void chunks_range(void *arg, int64_t begin, int64_t end)
{
    const scan_job *j = arg;
    int64_t is, os;
    const char *ip = row_start(j->in, 0, j->reverse, &is);
    char *op = (char *)row_start(j->out, 0, j->reverse, &os);
    for (int64_t c = begin; c < end; c++) {
        int64_t at = c * j->chunk, m = j->n - at < j->chunk ? j->n - at : j->chunk;
        scan_span(j->in->dtype, j->prod, ip + at * is, is, op + at * os, os, m, j->carry[c]);
    }
}

int cpu_scan(const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    if (in->ndim < 1) return cpu_error(NNR_ERR_INVALID, "%s: expected at least one dimension", call->op == NNR_OP_CUMPROD ? "cumprod" : "cumsum");
    if (in->dtype != out->dtype || (nnr_dtype_is_integral(in->dtype) && in->dtype != NNR_I64))
        return cpu_error(NNR_ERR_UNSUPPORTED, "cumsum: dtypes %d -> %d (integers come as i64)", in->dtype, out->dtype);
    scan_job j = {.in = in, .out = out, .prod = call->op == NNR_OP_CUMPROD, .reverse = call->params && call->params->i[0] != 0};
    j.n = in->sizes[in->ndim - 1];
    int64_t rows = 1;
    for (int d = 0; d < in->ndim - 1; d++) rows *= in->sizes[d];
    if (j.n == 0 || rows == 0) return NNR_OK;
    int threads = cpu_pool_threads();
    if (rows == 1 && threads > 1 && j.n >= (1 << 16)) {
        int64_t nchunks = (int64_t)threads * 4;
        j.chunk = (j.n + nchunks - 1) / nchunks;
        nchunks = (j.n + j.chunk - 1) / j.chunk;
        scan_acc carry[256];
        if (nchunks > 256) return cpu_error(NNR_ERR_INTERNAL, "cumsum: too many chunks");
        j.carry = carry;
        int st = cpu_parallel_for(nchunks, 1, totals_range, &j);
        if (st) return st;
        scan_acc run = start_value(j.prod);
        for (int64_t c = 0; c < nchunks; c++) {          /* carry[c]: the value before chunk c */
            scan_acc t = carry[c];
            carry[c] = run;
            if (j.prod) { run.d *= t.d; run.i = (int64_t)((uint64_t)run.i * (uint64_t)t.i); }
            else { run.d += t.d; run.i = (int64_t)((uint64_t)run.i + (uint64_t)t.i); }
        }
        return cpu_parallel_for(nchunks, 1, chunks_range, &j);
    }
    int64_t grain = (1 << 14) / j.n;
    return cpu_parallel_for(rows, grain > 0 ? grain : 1, rows_range, &j);
}

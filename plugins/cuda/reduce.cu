/* Reductions (any and all too, writing bool) and softmax. Layout as on the cpu: inputs[0] is [kept...,
 * reduced...] (params i[0] reduced dims, any strides), outputs[0] is [kept...].
 * A block per output element when its reduction is long, a thread per output
 * when it is short; accumulation in double (int64 for integer sums and
 * products); arg-reductions keep the first index on ties and NaN wins, as on
 * the cpu. */
#include <math.h>
#include "dtype.cuh"

typedef struct red_geom {
    int nkept, nred, in_dt, out_dt, op, sqrt_result;
    int64_t kept_sizes[NNR_MAX_DIMS], kept_in[NNR_MAX_DIMS], kept_out[NNR_MAX_DIMS];
    int64_t red_sizes[NNR_MAX_DIMS], red_strides[NNR_MAX_DIMS];
    int64_t count, nout, correction;
    const char *in;
    char *out;
} red_geom;

typedef struct acc {
    double d, mean, m2;
    int64_t i, idx, n;
    int started, integral;
} acc;

__device__ __forceinline__ void acc_init(acc &a, int op, int integral)
{
    a.d = op == NNR_OP_PROD ? 1.0 : 0.0;
    a.i = op == NNR_OP_PROD || op == NNR_OP_ALL ? 1 : 0;
    a.mean = a.m2 = 0;
    a.idx = -1;
    a.n = 0;
    a.started = 0;
    a.integral = integral;
}

__device__ __forceinline__ void acc_add(acc &a, int op, const char *p, int dt, int64_t r)
{
    if (a.integral) {
        int64_t x = ld_i64(dt, p);
        switch (op) {
        case NNR_OP_SUM: case NNR_OP_MEAN: a.i = (int64_t)((uint64_t)a.i + (uint64_t)x); a.d += (double)x; break;
        case NNR_OP_PROD: a.i = (int64_t)((uint64_t)a.i * (uint64_t)x); break;
        case NNR_OP_MAX: case NNR_OP_ARGMAX: if (!a.started || x > a.i) { a.i = x; a.idx = r; a.started = 1; } break;
        case NNR_OP_MIN: case NNR_OP_ARGMIN: if (!a.started || x < a.i) { a.i = x; a.idx = r; a.started = 1; } break;
        case NNR_OP_ANY: if (x != 0) a.i = 1; break;
        case NNR_OP_ALL: if (x == 0) a.i = 0; break;
        case NNR_OP_VAR: {
            double v = (double)x, delta = v - a.mean;
            a.n++; a.mean += delta / (double)a.n; a.m2 += delta * (v - a.mean);
            break;
        }
        }
        return;
    }
    double x = ld_f64(dt, p);
    switch (op) {
    case NNR_OP_SUM: case NNR_OP_MEAN: a.d += x; break;
    case NNR_OP_PROD: a.d *= x; break;
    case NNR_OP_MAX: case NNR_OP_ARGMAX:
        if (a.started && a.d != a.d) break;
        if (!a.started || x > a.d || x != x) { a.d = x; a.idx = r; a.started = 1; }
        break;
    case NNR_OP_MIN: case NNR_OP_ARGMIN:
        if (a.started && a.d != a.d) break;
        if (!a.started || x < a.d || x != x) { a.d = x; a.idx = r; a.started = 1; }
        break;
    case NNR_OP_ANY: if (x != 0) a.i = 1; break;      /* NaN != 0: true */
    case NNR_OP_ALL: if (x == 0) a.i = 0; break;
    case NNR_OP_VAR: {
        double delta = x - a.mean;
        a.n++; a.mean += delta / (double)a.n; a.m2 += delta * (x - a.mean);
        break;
    }
    }
}

/* b holds elements after a's in no particular order: arg ties go to the smaller index */
__device__ __forceinline__ void acc_merge(acc &a, const acc &b, int op)
{
    switch (op) {
    case NNR_OP_SUM: case NNR_OP_MEAN: a.d += b.d; a.i = (int64_t)((uint64_t)a.i + (uint64_t)b.i); break;
    case NNR_OP_PROD: a.d *= b.d; a.i = (int64_t)((uint64_t)a.i * (uint64_t)b.i); break;
    case NNR_OP_ANY: a.i = a.i || b.i; break;
    case NNR_OP_ALL: a.i = a.i && b.i; break;
    case NNR_OP_MAX: case NNR_OP_ARGMAX: case NNR_OP_MIN: case NNR_OP_ARGMIN: {
        if (!b.started) break;
        if (!a.started) { a = b; break; }
        int mx = op == NNR_OP_MAX || op == NNR_OP_ARGMAX, take;
        if (a.integral) take = (mx ? b.i > a.i : b.i < a.i) || (b.i == a.i && b.idx < a.idx);
        else {
            int an = a.d != a.d, bn = b.d != b.d;
            if (an || bn) take = bn && (!an || b.idx < a.idx);
            else take = (mx ? b.d > a.d : b.d < a.d) || (b.d == a.d && b.idx < a.idx);
        }
        if (take) { a.d = b.d; a.i = b.i; a.idx = b.idx; }
        break;
    }
    case NNR_OP_VAR: {
        if (b.n == 0) break;
        if (a.n == 0) { a.n = b.n; a.mean = b.mean; a.m2 = b.m2; break; }
        double n = (double)(a.n + b.n), delta = b.mean - a.mean;
        a.m2 += b.m2 + delta * delta * (double)a.n * (double)b.n / n;
        a.mean += delta * (double)b.n / n;
        a.n += b.n;
        break;
    }
    }
}

__device__ __forceinline__ const char *red_in_base(const red_geom &g, int64_t o, char **out)
{
    const char *ip = g.in;
    char *op = g.out;
    int ies = dt_size(g.in_dt), oes = dt_size(g.out_dt);
    for (int d = g.nkept - 1; d >= 0; d--) {
        int64_t k = o % g.kept_sizes[d];
        o /= g.kept_sizes[d];
        ip += k * g.kept_in[d] * ies;
        op += k * g.kept_out[d] * oes;
    }
    *out = op;
    return ip;
}

__device__ __forceinline__ int64_t red_offset(const red_geom &g, int64_t r)
{
    int64_t off = 0;
    for (int d = g.nred - 1; d >= 0; d--) {
        int64_t n = g.red_sizes[d], q = r / n;
        off += (r - q * n) * g.red_strides[d];
        r = q;
    }
    return off * dt_size(g.in_dt);
}

__device__ void red_store(const red_geom &g, char *op, const acc &a)
{
    switch (g.op) {
    case NNR_OP_SUM: case NNR_OP_PROD:
        if (a.integral) st_i64(g.out_dt, op, a.i); else st_f64(g.out_dt, op, a.d);
        break;
    case NNR_OP_MEAN: st_f64(g.out_dt, op, g.count ? (a.integral ? a.d : a.d) / (double)g.count : NAN); break;
    case NNR_OP_MAX: case NNR_OP_MIN:
        if (a.integral) st_i64(g.out_dt, op, a.i); else st_f64(g.out_dt, op, a.d);
        break;
    case NNR_OP_ARGMAX: case NNR_OP_ARGMIN: st_i64(g.out_dt, op, a.idx < 0 ? 0 : a.idx); break;
    case NNR_OP_ANY: case NNR_OP_ALL: st_i64(g.out_dt, op, a.i); break;
    case NNR_OP_VAR: {
        double dof = (double)(a.n - g.correction), v = dof > 0 ? a.m2 / dof : a.m2 > 0 ? INFINITY : NAN;
        st_f64(g.out_dt, op, g.sqrt_result ? sqrt(v) : v);
        break;
    }
    }
}

__global__ void k_reduce_thread(red_geom g)
{
    int integral = g.in_dt == NNR_I8 || g.in_dt == NNR_U8 || g.in_dt == NNR_I32 || g.in_dt == NNR_I64 || g.in_dt == NNR_BOOL;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < g.nout; o += (int64_t)gridDim.x * blockDim.x) {
        char *op;
        const char *ip = red_in_base(g, o, &op);
        acc a;
        acc_init(a, g.op, integral);
        for (int64_t r = 0; r < g.count; r++) acc_add(a, g.op, ip + red_offset(g, r), g.in_dt, r);
        red_store(g, op, a);
    }
}

enum { RED_THREADS = 256 };

__global__ void k_reduce_block(red_geom g)
{
    __shared__ acc part[RED_THREADS];
    int integral = g.in_dt == NNR_I8 || g.in_dt == NNR_U8 || g.in_dt == NNR_I32 || g.in_dt == NNR_I64 || g.in_dt == NNR_BOOL;
    for (int64_t o = blockIdx.x; o < g.nout; o += gridDim.x) {
        char *op;
        const char *ip = red_in_base(g, o, &op);
        acc a;
        acc_init(a, g.op, integral);
        for (int64_t r = threadIdx.x; r < g.count; r += blockDim.x) acc_add(a, g.op, ip + red_offset(g, r), g.in_dt, r);
        part[threadIdx.x] = a;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if ((int)threadIdx.x < s) acc_merge(part[threadIdx.x], part[threadIdx.x + s], g.op);
            __syncthreads();
        }
        if (threadIdx.x == 0) red_store(g, op, part[0]);
        __syncthreads();
    }
}

int cu_reduce(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    red_geom g;
    memset(&g, 0, sizeof g);
    g.nred = (int)call->params->i[0];
    g.nkept = in->ndim - g.nred;
    g.op = (int)call->op;
    g.in_dt = in->dtype;
    g.out_dt = out->dtype;
    g.correction = call->params->i[1];
    g.sqrt_result = call->params->i[2] != 0;
    g.in = (const char *)in->data;
    g.out = (char *)out->data;
    g.nout = 1;
    g.count = 1;
    for (int k = 0; k < g.nkept; k++) {
        g.kept_sizes[k] = in->sizes[k];
        g.kept_in[k] = in->strides[k];
        g.kept_out[k] = k < out->ndim ? out->strides[k] : 0;
        g.nout *= in->sizes[k];
    }
    for (int k = 0; k < g.nred; k++) {
        g.red_sizes[k] = in->sizes[g.nkept + k];
        g.red_strides[k] = in->strides[g.nkept + k];
        g.count *= in->sizes[g.nkept + k];
    }
    if (g.nout == 0) return NNR_OK;
    if (g.count < 64 && g.nout >= 256) k_reduce_thread<<<cu_blocks(g.nout, 128), 128, 0, d->stream>>>(g);
    else k_reduce_block<<<(unsigned)(g.nout < 65535 ? g.nout : 65535), RED_THREADS, 0, d->stream>>>(g);
    CU_LAUNCHED("reduce");
    return NNR_OK;
}

/* ---------------- softmax over the last dim: a block per row ---------------- */

__device__ __forceinline__ double block_reduce(double v, double *sh, int is_max)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            double a = sh[threadIdx.x], b = sh[threadIdx.x + s];
            sh[threadIdx.x] = is_max ? ((a != a || b != b) ? NAN : (a > b ? a : b)) : a + b;
        }
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

typedef struct sm_geom {
    int nd, in_dt, out_dt, log;
    int64_t sizes[NNR_MAX_DIMS], in_strides[NNR_MAX_DIMS], out_strides[NNR_MAX_DIMS];
    int64_t rows, n;
    const char *in;
    char *out;
} sm_geom;

__global__ void k_softmax(sm_geom g)
{
    __shared__ double sh[256];
    int ies = dt_size(g.in_dt), oes = dt_size(g.out_dt);
    for (int64_t r = blockIdx.x; r < g.rows; r += gridDim.x) {
        const char *ip = g.in;
        char *op = g.out;
        int64_t rem = r;
        for (int d = g.nd - 2; d >= 0; d--) {
            int64_t k = rem % g.sizes[d];
            rem /= g.sizes[d];
            ip += k * g.in_strides[d] * ies;
            op += k * g.out_strides[d] * oes;
        }
        int64_t is = g.in_strides[g.nd - 1] * ies, os = g.out_strides[g.nd - 1] * oes;
        double mx = -INFINITY;
        for (int64_t i = threadIdx.x; i < g.n; i += blockDim.x) {
            double x = ld_f64(g.in_dt, ip + i * is);
            if (x > mx || x != x) mx = (mx != mx) ? mx : x;
        }
        mx = block_reduce(mx, sh, 1);
        if (mx == -INFINITY) mx = 0;
        double sum = 0;
        for (int64_t i = threadIdx.x; i < g.n; i += blockDim.x) sum += exp(ld_f64(g.in_dt, ip + i * is) - mx);
        sum = block_reduce(sum, sh, 0);
        double lse = mx + log(sum);
        for (int64_t i = threadIdx.x; i < g.n; i += blockDim.x) {
            double x = ld_f64(g.in_dt, ip + i * is);
            st_f64(g.out_dt, op + i * os, g.log ? x - lse : exp(x - mx) / sum);
        }
    }
}

int cu_softmax(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    sm_geom g;
    memset(&g, 0, sizeof g);
    g.nd = in->ndim;
    if (g.nd == 0) return cu_errorf(NNR_ERR_INVALID, "softmax: needs at least one dimension");
    g.in_dt = in->dtype;
    g.out_dt = out->dtype;
    g.log = call->op == NNR_OP_LOG_SOFTMAX;
    g.rows = 1;
    for (int k = 0; k < g.nd; k++) {
        g.sizes[k] = in->sizes[k];
        g.in_strides[k] = in->strides[k];
        g.out_strides[k] = out->strides[k];
        if (k < g.nd - 1) g.rows *= in->sizes[k];
    }
    g.n = in->sizes[g.nd - 1];
    g.in = (const char *)in->data;
    g.out = (char *)out->data;
    if (g.rows == 0 || g.n == 0) return NNR_OK;
    int threads = g.n >= 256 ? 256 : g.n > 64 ? 128 : 32;
    k_softmax<<<(unsigned)(g.rows < 65535 ? g.rows : 65535), threads, 0, d->stream>>>(g);
    CU_LAUNCHED("softmax");
    return NNR_OK;
}

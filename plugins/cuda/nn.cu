/* Pooling, batch norm, the fused optimizer steps, the index ops
 * (gather, index_select, scatter_add, index_add) and cross entropy. Layouts and update rules
 * are the cpu backend's (plugins/cpu/pool.c, batchnorm.c, optim.c, index.c).
 * A bad index is caught on the device: the first one is written to a flag
 * word that the op reads back, so it becomes an error naming the index. */
#include <math.h>
#include "dtype.cuh"

/* the first bad value a kernel meets, and where (any value: a bad index of -1 is reported too) */
__device__ __forceinline__ void flag_bad(int64_t *flag, int64_t v, int64_t where)
{
    if (atomicCAS((unsigned long long *)flag, 0ULL, 1ULL) == 0ULL) { flag[1] = v; flag[2] = where; }
}

int cu_flag_clear(cu_device *d, const char *name)
{
    CU_CHECK(cudaMemsetAsync(d->flag, 0, 3 * sizeof(int64_t), d->stream), name);
    return NNR_OK;
}

int cu_flag_read(cu_device *d, const char *name, int *bad, int64_t *value, int64_t *where)
{
    CU_CHECK(cudaMemcpyAsync(d->flag_host, d->flag, 3 * sizeof(int64_t), cudaMemcpyDeviceToHost, d->stream), name);
    CU_CHECK(cudaStreamSynchronize(d->stream), name);
    *bad = d->flag_host[0] != 0;
    *value = d->flag_host[1];
    *where = d->flag_host[2];
    return NNR_OK;
}

#define GRID_LOOP(i, n) for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---------------- pooling ---------------- */

typedef struct pool_geom {
    int64_t planes, H, W, HO, WO, kh, kw, sh, sw, ph, pw, dh, dw;
    int count_include_pad, adaptive;
} pool_geom;

template <typename T>
__global__ void k_maxpool(const T *__restrict__ x, T *__restrict__ y, int64_t *__restrict__ idx, pool_geom g)
{
    GRID_LOOP(i, g.planes * g.HO * g.WO) {
        int64_t wo = i % g.WO, ho = (i / g.WO) % g.HO, p = i / (g.WO * g.HO);
        const T *xp = x + p * g.H * g.W;
        double best = -INFINITY;
        int64_t arg = -1;
        for (int64_t a = 0; a < g.kh; a++) {
            int64_t h = ho * g.sh - g.ph + a * g.dh;
            if (h < 0 || h >= g.H) continue;
            for (int64_t b = 0; b < g.kw; b++) {
                int64_t w = wo * g.sw - g.pw + b * g.dw;
                if (w < 0 || w >= g.W) continue;
                double v = to_d(xp[h * g.W + w]);
                if (v > best || v != v || arg < 0) { best = v; arg = h * g.W + w; if (v != v) goto done; }
            }
        }
    done:
        y[i] = from_d<T>(best);
        if (idx) idx[i] = arg;
    }
}

/* every argmax must name a position of its own plane, or be -1 (a window with no element of the plane);
 * the ABI: an argmax out of its plane is an error */
__global__ void k_argmax_check(const int64_t *__restrict__ idx, int64_t n, int64_t per_plane, int64_t plane_size, int64_t *flag)
{
    GRID_LOOP(o, n) {
        int64_t at = idx[o];
        if (at != -1 && (at < 0 || at >= plane_size)) flag_bad(flag, at, o / per_plane);
    }
}

/* grad_x from the argmax: each input gathers the outputs that chose it (no atomics, deterministic) */
template <typename T>
__global__ void k_maxpool_back(const T *__restrict__ gy, const int64_t *__restrict__ idx, T *__restrict__ gx, pool_geom g)
{
    GRID_LOOP(i, g.planes * g.H * g.W) {
        int64_t w = i % g.W, h = (i / g.W) % g.H, p = i / (g.W * g.H), at = h * g.W + w;
        /* outputs whose window can contain (h, w) */
        int64_t ho0 = (h + g.ph - (g.kh - 1) * g.dh), wo0 = (w + g.pw - (g.kw - 1) * g.dw);
        ho0 = ho0 <= 0 ? 0 : (ho0 + g.sh - 1) / g.sh;
        wo0 = wo0 <= 0 ? 0 : (wo0 + g.sw - 1) / g.sw;
        int64_t ho1 = (h + g.ph) / g.sh, wo1 = (w + g.pw) / g.sw;
        double s = 0;
        for (int64_t ho = ho0; ho <= ho1 && ho < g.HO; ho++)
            for (int64_t wo = wo0; wo <= wo1 && wo < g.WO; wo++) {
                int64_t o = (p * g.HO + ho) * g.WO + wo;
                if (idx[o] == at) s += to_d(gy[o]);
            }
        gx[i] = from_d<T>(s);
    }
}

__device__ __forceinline__ void avg_window(const pool_geom &g, int64_t ho, int64_t wo, int64_t *h0, int64_t *h1, int64_t *w0,
                                           int64_t *w1, int64_t *div)
{
    if (g.adaptive) {
        *h0 = ho * g.H / g.HO; *h1 = ((ho + 1) * g.H + g.HO - 1) / g.HO;
        *w0 = wo * g.W / g.WO; *w1 = ((wo + 1) * g.W + g.WO - 1) / g.WO;
        *div = (*h1 - *h0) * (*w1 - *w0);
        return;
    }
    int64_t hs = ho * g.sh - g.ph, ws = wo * g.sw - g.pw, he = hs + g.kh, we = ws + g.kw;
    int64_t pad_he = he < g.H + g.ph ? he : g.H + g.ph, pad_we = we < g.W + g.pw ? we : g.W + g.pw;
    int64_t padded = (pad_he - hs) * (pad_we - ws);
    *h0 = hs < 0 ? 0 : hs; *w0 = ws < 0 ? 0 : ws;
    *h1 = he > g.H ? g.H : he; *w1 = we > g.W ? g.W : we;
    *div = g.count_include_pad ? padded : (*h1 - *h0) * (*w1 - *w0);
}

template <typename T>
__global__ void k_avgpool(const T *__restrict__ x, T *__restrict__ y, pool_geom g)
{
    GRID_LOOP(i, g.planes * g.HO * g.WO) {
        int64_t wo = i % g.WO, ho = (i / g.WO) % g.HO, p = i / (g.WO * g.HO);
        int64_t h0, h1, w0, w1, div;
        avg_window(g, ho, wo, &h0, &h1, &w0, &w1, &div);
        double s = 0;
        for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++) s += to_d(x[(p * g.H + h) * g.W + w]);
        y[i] = from_d<T>(div > 0 ? s / (double)div : 0);
    }
}

/* grad_x: each input sums g/div over the outputs whose window holds it */
template <typename T>
__global__ void k_avgpool_back(const T *__restrict__ gy, T *__restrict__ gx, pool_geom g)
{
    GRID_LOOP(i, g.planes * g.H * g.W) {
        int64_t w = i % g.W, h = (i / g.W) % g.H, p = i / (g.W * g.H);
        double s = 0;
        int64_t ho0 = 0, ho1 = g.HO - 1, wo0 = 0, wo1 = g.WO - 1;
        if (!g.adaptive) {
            int64_t a = h + g.ph - g.kh + 1, b = w + g.pw - g.kw + 1;
            ho0 = a <= 0 ? 0 : (a + g.sh - 1) / g.sh;
            wo0 = b <= 0 ? 0 : (b + g.sw - 1) / g.sw;
            ho1 = (h + g.ph) / g.sh; wo1 = (w + g.pw) / g.sw;
            if (ho1 > g.HO - 1) ho1 = g.HO - 1;
            if (wo1 > g.WO - 1) wo1 = g.WO - 1;
        }
        for (int64_t ho = ho0; ho <= ho1; ho++)
            for (int64_t wo = wo0; wo <= wo1; wo++) {
                int64_t h0, h1, w0, w1, div;
                avg_window(g, ho, wo, &h0, &h1, &w0, &w1, &div);
                if (div <= 0 || h < h0 || h >= h1 || w < w0 || w >= w1) continue;
                s += to_d(gy[(p * g.HO + ho) * g.WO + wo]) / (double)div;
            }
        gx[i] = from_d<T>(s);
    }
}

int cu_pool(cu_device *d, const nnr_op_call *call)
{
    const int64_t *i = call->params->i;
    int op = (int)call->op;
    int backward = op == NNR_OP_MAXPOOL2D_BACKWARD || op == NNR_OP_AVGPOOL2D_BACKWARD || op == NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD;
    /* x-shaped: the forward's input or the backward's output; y-shaped the other */
    const nnr_tensor_desc *xs = backward ? call->outputs[0] : call->inputs[0], *ys = backward ? call->inputs[0] : call->outputs[0];
    pool_geom g;
    g.planes = xs->sizes[0] * xs->sizes[1];
    g.H = xs->sizes[2]; g.W = xs->sizes[3]; g.HO = ys->sizes[2]; g.WO = ys->sizes[3];
    g.kh = i[0]; g.kw = i[1]; g.sh = i[2] > 0 ? i[2] : 1; g.sw = i[3] > 0 ? i[3] : 1; g.ph = i[4]; g.pw = i[5];
    g.adaptive = op == NNR_OP_ADAPTIVE_AVGPOOL2D || op == NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD;
    int is_max = op == NNR_OP_MAXPOOL2D || op == NNR_OP_MAXPOOL2D_BACKWARD;
    g.dh = is_max ? (i[6] > 0 ? i[6] : 1) : 1;
    g.dw = is_max ? (i[7] > 0 ? i[7] : 1) : 1;
    g.count_include_pad = is_max ? 0 : (int)i[6];
    int dt = xs->dtype;
    int64_t n = backward ? g.planes * g.H * g.W : g.planes * g.HO * g.WO;
    if (n == 0) return NNR_OK;
    unsigned grid = cu_blocks(n, 256);
    void *x = call->inputs[0]->data, *y = call->outputs[0]->data;
    switch (op) {
    case NNR_OP_MAXPOOL2D: {
        int64_t *idx = call->n_outputs > 1 ? (int64_t *)call->outputs[1]->data : NULL;
        LAUNCH(dt, k_maxpool, grid, (const T *)x, (T *)y, idx, g);
        break;
    }
    case NNR_OP_MAXPOOL2D_BACKWARD: {
        const int64_t *idx = (const int64_t *)call->inputs[1]->data;
        /* without the forward's geometry, every output of the plane is a candidate */
        g.kh = g.H; g.kw = g.W; g.sh = 1; g.sw = 1; g.ph = 0; g.pw = 0; g.dh = 1; g.dw = 1;
        if (i[0] > 0 && i[2] > 0) { g.kh = i[0]; g.kw = i[1]; g.sh = i[2]; g.sw = i[3]; g.ph = i[4]; g.pw = i[5]; g.dh = i[6] > 0 ? i[6] : 1; g.dw = i[7] > 0 ? i[7] : 1; }
        int64_t nout = g.planes * g.HO * g.WO;
        int st = cu_flag_clear(d, "max_pool2d backward");
        if (st != NNR_OK) return st;
        if (nout > 0) k_argmax_check<<<cu_blocks(nout, 256), 256, 0, d->stream>>>(idx, nout, g.HO * g.WO, g.H * g.W, d->flag);
        CU_LAUNCHED("max_pool2d backward");
        int bad = 0;
        int64_t value = 0, plane = 0;
        if ((st = cu_flag_read(d, "max_pool2d backward", &bad, &value, &plane)) != NNR_OK) return st;
        if (bad)
            return cu_errorf(NNR_ERR_INVALID, "max_pool2d backward: argmax %lld of plane %lld is outside its %lldx%lld plane", (long long)value,
                             (long long)plane + 1, (long long)g.H, (long long)g.W);
        LAUNCH(dt, k_maxpool_back, grid, (const T *)x, idx, (T *)y, g);
        break;
    }
    case NNR_OP_AVGPOOL2D: case NNR_OP_ADAPTIVE_AVGPOOL2D: LAUNCH(dt, k_avgpool, grid, (const T *)x, (T *)y, g); break;
    default: LAUNCH(dt, k_avgpool_back, grid, (const T *)x, (T *)y, g); break;
    }
    CU_LAUNCHED("pooling");
    return NNR_OK;
}

/* ---------------- batch norm: a block per channel for the sums ---------------- */

__device__ __forceinline__ double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

template <typename T>
__global__ void k_bn_stats(const T *__restrict__ x, T *mean, T *invstd, int64_t N, int64_t C, int64_t P, double eps)
{
    __shared__ double sh[256];
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0, sq = 0;
        for (int64_t k = threadIdx.x; k < N * P; k += blockDim.x) {
            double v = (double)x[((k / P) * C + c) * P + k % P];
            s += v; sq += v * v;
        }
        s = block_sum(s, sh);
        sq = block_sum(sq, sh);
        if (threadIdx.x == 0) {
            double m = (double)(N * P), mu = s / m, var = sq / m - mu * mu;
            if (var < 0) var = 0;
            mean[c] = (T)mu;
            invstd[c] = (T)(1.0 / sqrt(var + eps));
        }
    }
}

template <typename T>
__global__ void k_bn_back_reduce(const T *__restrict__ dy, const T *__restrict__ x, const T *coef, T *out, int64_t N, int64_t C, int64_t P)
{
    __shared__ double sh[256];
    for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
        double mean = (double)coef[c], invstd = (double)coef[C + c], sdy = 0, sdyx = 0;
        for (int64_t k = threadIdx.x; k < N * P; k += blockDim.x) {
            int64_t at = ((k / P) * C + c) * P + k % P;
            double g = (double)dy[at];
            sdy += g;
            sdyx += g * ((double)x[at] - mean) * invstd;
        }
        sdy = block_sum(sdy, sh);
        sdyx = block_sum(sdyx, sh);
        if (threadIdx.x == 0) { out[c] = (T)sdy; out[C + c] = (T)sdyx; }
    }
}

/* y = x * coef[0][c] + coef[1][c] (affine), or dx = a dy + b x + c (apply: dy given) */
template <typename T>
__global__ void k_bn_elementwise(const T *__restrict__ dy, const T *__restrict__ x, const T *coef, T *out, int64_t N, int64_t C, int64_t P)
{
    GRID_LOOP(i, N * C * P) {
        int64_t c = (i / P) % C;
        if (dy) out[i] = coef[c] * dy[i] + coef[C + c] * x[i] + coef[2 * C + c];
        else out[i] = x[i] * coef[c] + coef[C + c];
    }
}

int cu_batchnorm(cu_device *d, const nnr_op_call *call)
{
    int op = (int)call->op;
    const nnr_tensor_desc *x = op == NNR_OP_BN_STATS || op == NNR_OP_BN_AFFINE ? call->inputs[0] : call->inputs[1];
    int64_t N = x->sizes[0], C = x->ndim > 1 ? x->sizes[1] : 1, P = 1;
    for (int k = 2; k < x->ndim; k++) P *= x->sizes[k];
    if (C == 0) return NNR_OK;
    int dbl = x->dtype == NNR_F64;
    unsigned cgrid = (unsigned)(C < 65535 ? C : 65535), grid = cu_blocks(N * C * P, 256);
    double eps = call->params ? call->params->f[0] : 0;
#define BN_T(T)                                                                                                          \
    switch (op) {                                                                                                        \
    case NNR_OP_BN_STATS:                                                                                                \
        k_bn_stats<T><<<cgrid, 256, 0, d->stream>>>((const T *)x->data, (T *)call->outputs[0]->data,                     \
                                                    (T *)call->outputs[1]->data, N, C, P, eps);                          \
        break;                                                                                                           \
    case NNR_OP_BN_AFFINE:                                                                                               \
        if (N * P > 0) k_bn_elementwise<T><<<grid, 256, 0, d->stream>>>(NULL, (const T *)x->data, (const T *)call->inputs[1]->data, \
                                                          (T *)call->outputs[0]->data, N, C, P);                        \
        break;                                                                                                           \
    case NNR_OP_BN_BACKWARD_REDUCE:                                                                                      \
        k_bn_back_reduce<T><<<cgrid, 256, 0, d->stream>>>((const T *)call->inputs[0]->data, (const T *)x->data,          \
                                                          (const T *)call->inputs[2]->data, (T *)call->outputs[0]->data, N, C, P); \
        break;                                                                                                           \
    default:                                                                                                             \
        if (N * P > 0) k_bn_elementwise<T><<<grid, 256, 0, d->stream>>>((const T *)call->inputs[0]->data, (const T *)x->data,  \
                                                          (const T *)call->inputs[2]->data, (T *)call->outputs[0]->data, N, C, P); \
        break;                                                                                                           \
    }
    if (dbl) { BN_T(double) } else { BN_T(float) }
#undef BN_T
    CU_LAUNCHED("batch_norm");
    return NNR_OK;
}

/* ---------------- optimizer steps (PyTorch's rules, as plugins/cpu/optim.c) ---------------- */

template <typename T>
__global__ void k_sgd(T *p, T *buf, const T *g, int64_t n, T lr, T mom, T damp1, T wd, int nesterov, int fresh)
{
    GRID_LOOP(k, n) {
        T dd = g[k] + wd * p[k];
        if (buf) {
            T b = fresh ? dd : mom * buf[k] + damp1 * dd;
            buf[k] = b;
            dd = nesterov ? dd + mom * b : b;
        }
        p[k] -= lr * dd;
    }
}

template <typename T>
__global__ void k_adam(T *p, T *m, T *v, const T *g, int64_t n, T b1, T b2, T eps, T wd, T decay, T step, T bc2_sqrt, int decoupled)
{
    GRID_LOOP(k, n) {
        T gk = g[k];
        if (decoupled) p[k] *= decay;
        else gk += wd * p[k];
        m[k] = b1 * m[k] + (T(1) - b1) * gk;
        v[k] = b2 * v[k] + (T(1) - b2) * gk * gk;
        p[k] -= step * m[k] / (sqrt(v[k]) / bc2_sqrt + eps);
    }
}

template <typename T>
__global__ void k_rmsprop(T *p, T *sq, T *buf, const T *g, int64_t n, T lr, T alpha, T eps, T wd, T mom)
{
    GRID_LOOP(k, n) {
        T gk = g[k] + wd * p[k];
        sq[k] = alpha * sq[k] + (T(1) - alpha) * gk * gk;
        T avg = sqrt(sq[k]) + eps;
        if (buf) { buf[k] = mom * buf[k] + gk / avg; p[k] -= lr * buf[k]; }
        else p[k] -= lr * gk / avg;
    }
}

int cu_optim(cu_device *d, const nnr_op_call *call)
{
    const double *f = call->params->f;
    const int64_t *pi = call->params->i;
    int64_t n = nnr_desc_numel(call->outputs[0]);
    if (n == 0) return NNR_OK;
    unsigned grid = cu_blocks(n, 256);
    void *p = call->outputs[0]->data, *s1 = call->n_outputs > 1 ? call->outputs[1]->data : NULL;
    void *s2 = call->n_outputs > 2 ? call->outputs[2]->data : NULL;
    const void *g = call->inputs[0]->data;
    int dbl = call->outputs[0]->dtype == NNR_F64;
    switch (call->op) {
    case NNR_OP_SGD_STEP:
        if (dbl) k_sgd<double><<<grid, 256, 0, d->stream>>>((double *)p, (double *)s1, (const double *)g, n, f[0], f[1], 1 - f[2], f[3], (int)pi[0], (int)pi[1]);
        else k_sgd<float><<<grid, 256, 0, d->stream>>>((float *)p, (float *)s1, (const float *)g, n, (float)f[0], (float)f[1], (float)(1 - f[2]), (float)f[3], (int)pi[0], (int)pi[1]);
        break;
    case NNR_OP_ADAM_STEP: {
        double lr = f[0], wd = f[4], step = lr / f[5], bc = sqrt(f[6]);
        if (dbl) k_adam<double><<<grid, 256, 0, d->stream>>>((double *)p, (double *)s1, (double *)s2, (const double *)g, n, f[1], f[2], f[3], wd, 1 - lr * wd, step, bc, (int)pi[0]);
        else k_adam<float><<<grid, 256, 0, d->stream>>>((float *)p, (float *)s1, (float *)s2, (const float *)g, n, (float)f[1], (float)f[2], (float)f[3], (float)wd, (float)(1 - lr * wd), (float)step, (float)bc, (int)pi[0]);
        break;
    }
    default:
        if (dbl) k_rmsprop<double><<<grid, 256, 0, d->stream>>>((double *)p, (double *)s1, (double *)s2, (const double *)g, n, f[0], f[1], f[2], f[3], f[4]);
        else k_rmsprop<float><<<grid, 256, 0, d->stream>>>((float *)p, (float *)s1, (float *)s2, (const float *)g, n, (float)f[0], (float)f[1], (float)f[2], (float)f[3], (float)f[4]);
        break;
    }
    CU_LAUNCHED("optimizer step");
    return NNR_OK;
}

/* ---------------- index ops ---------------- */

typedef struct idx_geom {
    int nd, dim, dt;
    int64_t sizes[NNR_MAX_DIMS];                  /* the iteration shape */
    int64_t a[NNR_MAX_DIMS], b[NNR_MAX_DIMS], c[NNR_MAX_DIMS];   /* strides (elements) of the operands */
    int64_t limit, n;
    const char *pa;
    const char *pb;
    char *pc;
} idx_geom;

/* GATHER: a = index, b = in, c = out;  out[i] = in[i with dim := index[i]] */
__global__ void k_gather2(idx_geom g, int64_t *flag)
{
    int es = dt_size(g.dt);
    GRID_LOOP(k, g.n) {
        int64_t rem = k, oa = 0, ob = 0, oc = 0, id[NNR_MAX_DIMS];
        for (int d = g.nd - 1; d >= 0; d--) { id[d] = rem % g.sizes[d]; rem /= g.sizes[d]; }
        for (int d = 0; d < g.nd; d++) { oa += id[d] * g.a[d]; oc += id[d] * g.c[d]; }
        int64_t j = ((const int64_t *)g.pa)[oa];
        if (j < 0 || j >= g.limit) { flag_bad(flag, j, k); continue; }
        for (int d = 0; d < g.nd; d++) ob += (d == g.dim ? j : id[d]) * g.b[d];
        for (int e = 0; e < es; e++) g.pc[oc * es + e] = g.pb[ob * es + e];
    }
}

/* INDEX_SELECT: a = index (1-d, stride a[0]), b = in, c = out; iteration over out */
__global__ void k_index_select(idx_geom g, int64_t *flag)
{
    int es = dt_size(g.dt);
    GRID_LOOP(k, g.n) {
        int64_t rem = k, ob = 0, oc = 0, id[NNR_MAX_DIMS];
        for (int d = g.nd - 1; d >= 0; d--) { id[d] = rem % g.sizes[d]; rem /= g.sizes[d]; }
        int64_t j = ((const int64_t *)g.pa)[id[g.dim] * g.a[0]];
        if (j < 0 || j >= g.limit) { flag_bad(flag, j, k); continue; }
        for (int d = 0; d < g.nd; d++) { ob += (d == g.dim ? j : id[d]) * g.b[d]; oc += id[d] * g.c[d]; }
        for (int e = 0; e < es; e++) g.pc[oc * es + e] = g.pb[ob * es + e];
    }
}

__device__ __forceinline__ void atomic_add_dt(int dt, char *p, double v)
{
    if (dt == NNR_F32) atomicAdd((float *)p, (float)v);
    else atomicAdd((double *)p, v);
}

/* SCATTER_ADD: a = index, b = src (both the iteration shape), c = out; out[i with dim := index[i]] += src[i]
 * INDEX_ADD: a = index (1-d), b = src (iteration shape), c = out; out[i with dim := index[i_dim]] += src[i] */
__global__ void k_scatter(idx_geom g, int64_t *flag, int index_add, int src_dt)
{
    GRID_LOOP(k, g.n) {
        int64_t rem = k, oa = 0, ob = 0, oc = 0, id[NNR_MAX_DIMS];
        for (int d = g.nd - 1; d >= 0; d--) { id[d] = rem % g.sizes[d]; rem /= g.sizes[d]; }
        if (index_add) oa = id[g.dim] * g.a[0];
        else for (int d = 0; d < g.nd; d++) oa += id[d] * g.a[d];
        int64_t j = ((const int64_t *)g.pa)[oa];
        if (j < 0 || j >= g.limit) { flag_bad(flag, j, k); continue; }
        for (int d = 0; d < g.nd; d++) { ob += id[d] * g.b[d]; oc += (d == g.dim ? j : id[d]) * g.c[d]; }
        atomic_add_dt(g.dt, g.pc + oc * dt_size(g.dt), ld_f64(src_dt, g.pb + ob * dt_size(src_dt)));
    }
}

int cu_index(cu_device *d, const nnr_op_call *call)
{
    int op = (int)call->op;
    idx_geom g;
    memset(&g, 0, sizeof g);
    g.dim = (int)call->params->i[0];
    const nnr_tensor_desc *shape, *a, *b, *c;
    const char *name;
    switch (op) {
    case NNR_OP_GATHER: name = "gather"; a = call->inputs[1]; b = call->inputs[0]; c = call->outputs[0]; shape = c; g.dt = c->dtype;
        g.limit = b->ndim ? b->sizes[g.dim] : 1; break;
    case NNR_OP_INDEX_SELECT: name = "index_select"; a = call->inputs[1]; b = call->inputs[0]; c = call->outputs[0]; shape = c; g.dt = c->dtype;
        g.limit = b->sizes[g.dim]; break;
    case NNR_OP_SCATTER_ADD: name = "scatter_add"; a = call->inputs[0]; b = call->inputs[1]; c = call->outputs[0]; shape = b; g.dt = c->dtype;
        g.limit = c->sizes[g.dim]; break;
    default: name = "index_add"; a = call->inputs[0]; b = call->inputs[1]; c = call->outputs[0]; shape = b; g.dt = c->dtype;
        g.limit = c->sizes[g.dim]; break;
    }
    g.nd = shape->ndim;
    g.n = nnr_desc_numel(shape);
    for (int k = 0; k < g.nd; k++) {
        g.sizes[k] = shape->sizes[k];
        g.b[k] = k < b->ndim ? b->strides[k] : 0;
        g.c[k] = k < c->ndim ? c->strides[k] : 0;
        g.a[k] = k < a->ndim ? a->strides[k] : 0;
    }
    g.pa = (const char *)a->data; g.pb = (const char *)b->data; g.pc = (char *)c->data;
    if (g.n == 0) return NNR_OK;
    int st = cu_flag_clear(d, name);
    if (st != NNR_OK) return st;
    unsigned grid = cu_blocks(g.n, 256);
    switch (op) {
    case NNR_OP_GATHER: k_gather2<<<grid, 256, 0, d->stream>>>(g, d->flag); break;
    case NNR_OP_INDEX_SELECT: k_index_select<<<grid, 256, 0, d->stream>>>(g, d->flag); break;
    default: k_scatter<<<grid, 256, 0, d->stream>>>(g, d->flag, op == NNR_OP_INDEX_ADD, b->dtype); break;
    }
    CU_LAUNCHED(name);
    /* the flag is read back: an index op waits for its kernel (a bad index must be an error, not garbage) */
    int bad = 0;
    int64_t value = 0, where = 0;
    if ((st = cu_flag_read(d, name, &bad, &value, &where)) != NNR_OK) return st;
    if (bad)
        return cu_errorf(NNR_ERR_INVALID, "%s: index %lld is out of range [1, %lld] for dimension %d", name, (long long)value + 1,
                         (long long)g.limit, g.dim + 1);
    return NNR_OK;
}

/* ---------------- cross entropy ---------------- */

/* CROSS_ENTROPY and its gradient (plugin.h): one warp per row for the forward (vocabulary-sized rows
 * would leave a lone thread looping over tens of thousands of classes), one thread per element for
 * the gradient. The targets are checked before anything is launched, so that a bad one is an error
 * naming its label and no kernel reads past a row. */
enum { CE_NONE = 0, CE_SUM = 1, CE_MEAN = 2, CE_THREADS = 256 };

typedef struct ce_args {
    int64_t N, C, ignore, base;  /* base: the target value of class 0 (0, or 1 for Lua's labels) */
    int reduction;
    const void *x;
    const int64_t *t;
    int64_t ts;                  /* t's stride; lse's and g's below (the 1-d inputs may be views) */
    void *loss, *lse;            /* forward */
    double *rows;                /* forward, sum and mean: each row's loss, summed by k_ce_total */
    const void *lse_in, *g;      /* gradient */
    int64_t ls, gs;
    const int64_t *count;        /* gradient, mean: the counted rows, from k_ce_count */
    void *dx;
} ce_args;

/* the first bad row (not just any one): N - n kept by atomicMax, so that the message is the same on
 * every run and names the label the cpu backend would */
__global__ void k_ce_check(ce_args a, int64_t *flag)
{
    GRID_LOOP(n, a.N) {
        int64_t v = a.t[n * a.ts];
        if (v != a.ignore && (v < a.base || v - a.base >= a.C)) {
            flag[0] = 1;
            atomicMax((unsigned long long *)&flag[2], (unsigned long long)(a.N - n));
        }
    }
}

template <typename T> __global__ void k_ce_rows(ce_args a)
{
    const unsigned all = 0xffffffffu;
    int lane = threadIdx.x & 31;
    int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    /* the loop bound is the same for the whole warp, so every lane reaches the shuffles */
    for (int64_t n = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; n < a.N; n += warps) {
        const T *x = (const T *)a.x + n * a.C;
        T m = -INFINITY;
        int nan = 0;
        for (int64_t c = lane; c < a.C; c += 32) {
            T v = x[c];
            if (v != v) nan = 1;
            else if (v > m) m = v;
        }
        for (int k = 16; k > 0; k >>= 1) {
            T o = __shfl_xor_sync(all, m, k);
            if (o > m) m = o;
        }
        nan = __any_sync(all, nan);
        /* exps of x - max, at most 1 each, added in double: no overflow, and the small terms are kept */
        double s = 0;
        if (!nan && m != -INFINITY && m != INFINITY)
            for (int64_t c = lane; c < a.C; c += 32) s += (double)exp(x[c] - m);
        /* a butterfly: every lane ends with the same sum, in the same order on every run */
        for (int k = 16; k > 0; k >>= 1) s += __shfl_xor_sync(all, s, k);
        if (lane != 0) continue;
        /* a row with +inf is NaN, as the cpu backend's and PyTorch's (whose log_softmax gives inf - inf
         * there); a row of -inf or no classes at all gives -inf */
        double lse = nan || m == INFINITY ? (double)NAN : m == -INFINITY ? -(double)INFINITY : (double)m + log(s);
        int64_t tn = a.t[n * a.ts];
        double loss = 0;
        /* the loss from the double lse, not the rounded one: a confident row's loss is far smaller than lse */
        if (tn != a.ignore) loss = tn >= a.base && tn - a.base < a.C ? lse - (double)x[tn - a.base] : (double)NAN;
        ((T *)a.lse)[n] = (T)lse;
        if (a.reduction == CE_NONE) ((T *)a.loss)[n] = (T)loss;
        else a.rows[n] = loss;
    }
}

/* one block: each thread adds a run of consecutive rows, then thread 0 adds the runs in row order;
 * a fixed order, so the same inputs give the same bits */
template <typename T> __global__ void k_ce_total(ce_args a)
{
    __shared__ double part[CE_THREADS];
    __shared__ long long counted[CE_THREADS];
    int64_t per = (a.N + CE_THREADS - 1) / CE_THREADS, lo = per * threadIdx.x, hi = lo + per < a.N ? lo + per : a.N;
    double s = 0;
    long long k = 0;
    for (int64_t n = lo; n < hi; n++) {
        s += a.rows[n];
        k += a.t[n * a.ts] != a.ignore;
    }
    part[threadIdx.x] = s;
    counted[threadIdx.x] = k;
    __syncthreads();
    if (threadIdx.x != 0) return;
    double total = 0;
    long long rows = 0;
    for (int i = 0; i < CE_THREADS; i++) { total += part[i]; rows += counted[i]; }
    /* mean over no counted rows: 0 / 0, NaN as plugin.h asks */
    *(T *)a.loss = (T)(a.reduction == CE_MEAN ? total / (double)rows : total);
}

__global__ void k_ce_count(ce_args a, int64_t *out)
{
    __shared__ long long counted[CE_THREADS];
    long long k = 0;
    for (int64_t n = threadIdx.x; n < a.N; n += CE_THREADS) k += a.t[n * a.ts] != a.ignore;
    counted[threadIdx.x] = k;
    __syncthreads();
    if (threadIdx.x != 0) return;
    for (int i = 1; i < CE_THREADS; i++) k += counted[i];
    *out = k;
}

template <typename T> __global__ void k_ce_grad(ce_args a)
{
    T *dx = (T *)a.dx;
    const T *g = (const T *)a.g;
    GRID_LOOP(i, a.N * a.C) {
        int64_t n = i / a.C, c = i - n * a.C, tn = a.t[n * a.ts];
        if (tn == a.ignore) { dx[i] = T(0); continue; }
        tn -= a.base;
        double s = a.reduction == CE_NONE ? (double)g[n * a.gs] : a.reduction == CE_SUM ? (double)g[0] : (double)g[0] / (double)*a.count;
        /* c is a class, so c == tn only for a target in [0, C): a bad one is never a column */
        T v = exp(((const T *)a.x)[i] - ((const T *)a.lse_in)[n * a.ls]) - (c == tn ? T(1) : T(0));
        dx[i] = (T)((double)v * s);
    }
}

static int64_t stride0(const nnr_tensor_desc *t) { return t->ndim ? t->strides[0] : 0; }

int cu_cross_entropy_supports(const nnr_op_call *call)
{
    int back = call->op == NNR_OP_CROSS_ENTROPY_GRAD;
    if (!call->params || call->n_inputs != (back ? 4 : 2) || call->n_outputs != (back ? 1 : 2)) return 0;
    const nnr_tensor_desc *x = call->inputs[0], *t = call->inputs[1];
    int dt = x->dtype;
    int64_t reduction = call->params->i[1];
    if ((dt != NNR_F32 && dt != NNR_F64) || reduction < CE_NONE || reduction > CE_MEAN) return 0;
    if (call->params->i[2] != 0 && call->params->i[2] != 1) return 0;
    if (x->ndim != 2 || !nnr_desc_is_contiguous(x) || t->dtype != NNR_I64 || t->ndim != 1 || t->sizes[0] != x->sizes[0]) return 0;
    int64_t N = x->sizes[0], reduced = reduction == CE_NONE ? N : 1;
    for (int k = 0; k < call->n_outputs; k++)
        if (call->outputs[k]->dtype != dt || !nnr_desc_is_contiguous(call->outputs[k])) return 0;
    if (!back) return nnr_desc_numel(call->outputs[0]) == reduced && nnr_desc_numel(call->outputs[1]) == N;
    const nnr_tensor_desc *lse = call->inputs[2], *g = call->inputs[3];
    return lse->dtype == dt && lse->ndim == 1 && lse->sizes[0] == N && g->dtype == dt && g->ndim <= 1 && nnr_desc_numel(g) == reduced &&
           nnr_desc_numel(call->outputs[0]) == nnr_desc_numel(x);
}

int cu_cross_entropy(cu_device *d, const nnr_op_call *call)
{
    ce_args a;
    memset(&a, 0, sizeof a);
    const nnr_tensor_desc *x = call->inputs[0], *t = call->inputs[1];
    a.N = x->sizes[0];
    a.C = x->sizes[1];
    a.ignore = call->params->i[0];
    a.reduction = (int)call->params->i[1];
    a.base = call->params->i[2];
    a.x = x->data;
    a.t = (const int64_t *)t->data;
    a.ts = stride0(t);
    int f32 = x->dtype == NNR_F32;
    if (call->op == NNR_OP_CROSS_ENTROPY_GRAD) {
        const char *name = "cross_entropy backward";
        a.lse_in = call->inputs[2]->data;
        a.ls = stride0(call->inputs[2]);
        a.g = call->inputs[3]->data;
        a.gs = stride0(call->inputs[3]);
        a.dx = call->outputs[0]->data;
        if (a.N == 0 || a.C == 0) return NNR_OK;
        if (a.reduction == CE_MEAN) {
            int64_t *count = (int64_t *)cu_scratch(d, sizeof(int64_t));
            if (!count) return NNR_ERR_OOM;
            k_ce_count<<<1, CE_THREADS, 0, d->stream>>>(a, count);
            CU_LAUNCHED(name);
            a.count = count;
        }
        if (f32) k_ce_grad<float><<<cu_blocks(a.N * a.C, 256), 256, 0, d->stream>>>(a);
        else k_ce_grad<double><<<cu_blocks(a.N * a.C, 256), 256, 0, d->stream>>>(a);
        CU_LAUNCHED(name);
        return NNR_OK;
    }
    const char *name = "cross_entropy";
    a.loss = call->outputs[0]->data;
    a.lse = call->outputs[1]->data;
    if (a.N > 0) {
        int st = cu_flag_clear(d, name);
        if (st != NNR_OK) return st;
        k_ce_check<<<cu_blocks(a.N, 256), 256, 0, d->stream>>>(a, d->flag);
        CU_LAUNCHED(name);
        int bad = 0;
        int64_t unused = 0, first = 0;
        if ((st = cu_flag_read(d, name, &bad, &unused, &first)) != NNR_OK) return st;
        if (bad) {
            /* only the row came back: its target is fetched now, on the way to the error */
            int64_t label = 0;
            CU_CHECK(cudaMemcpyAsync(&label, a.t + (a.N - first) * a.ts, sizeof label, cudaMemcpyDeviceToHost, d->stream), name);
            CU_CHECK(cudaStreamSynchronize(d->stream), name);
            return cu_errorf(NNR_ERR_INVALID, "cross_entropy: target label %lld is outside the class range %lld..%lld", (long long)label,
                             (long long)a.base, (long long)(a.base + a.C - 1));
        }
        if (a.reduction != CE_NONE) {
            a.rows = (double *)cu_scratch(d, (size_t)a.N * sizeof(double));
            if (!a.rows) return NNR_ERR_OOM;
        }
        /* 8 warps, so 8 rows, a block */
        unsigned grid = cu_blocks(a.N, CE_THREADS / 32);
        if (f32) k_ce_rows<float><<<grid, CE_THREADS, 0, d->stream>>>(a);
        else k_ce_rows<double><<<grid, CE_THREADS, 0, d->stream>>>(a);
        CU_LAUNCHED(name);
    }
    /* with no rows too: the sum is 0, the mean NaN */
    if (a.reduction != CE_NONE) {
        if (f32) k_ce_total<float><<<1, CE_THREADS, 0, d->stream>>>(a);
        else k_ce_total<double><<<1, CE_THREADS, 0, d->stream>>>(a);
        CU_LAUNCHED(name);
    }
    return NNR_OK;
}

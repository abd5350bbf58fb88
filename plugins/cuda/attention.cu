/* ATTN_DECODE on the GPU: one new position of N sequences against their key/value caches (the op of
 * plugin.h; the cpu backend's is plugins/cpu/attention.c). One block per (sequence, head): the new key
 * and value written into the caches, the scores q . K_t * scale for t <= p over the block's threads (in
 * a scratch row of doubles), their maximum and the sum of exp(s - max) reduced in shared memory, then
 * each thread sums its lanes of the weighted values. A NaN score is kept (NaN out), as on the cpu. */
#include <math.h>
#include <string.h>
#include "cuda_internal.h"

enum { DEC_THREADS = 128 };

typedef struct dec_args {
    int64_t NH, H, E, d, cap, p;
    double scale;
    const void *qkv;
    void *o, *k, *v;
    double *s;                      /* [NH, p + 1] scores, then their exponentials */
} dec_args;

/* the block's maximum (a NaN wins) or sum of v; every thread gets it */
__device__ double dec_reduce(double v, double *red, int max)
{
    red[threadIdx.x] = v;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            double a = red[threadIdx.x], b = red[threadIdx.x + w];
            red[threadIdx.x] = max ? (b > a || b != b ? b : a) : a + b;
        }
        __syncthreads();
    }
    double r = red[0];
    __syncthreads();
    return r;
}

template <typename T> __global__ void k_attn_decode(dec_args a)
{
    __shared__ double red[DEC_THREADS];
    for (int64_t nh = blockIdx.x; nh < a.NH; nh += gridDim.x) {
        int64_t n = nh / a.H, h = nh % a.H, d = a.d;
        const T *row = (const T *)a.qkv + n * 3 * a.E;
        T *K = (T *)a.k + nh * a.cap * d, *V = (T *)a.v + nh * a.cap * d;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            K[a.p * d + i] = row[a.E + h * d + i];
            V[a.p * d + i] = row[2 * a.E + h * d + i];
        }
        __syncthreads();
        const T *q = row + h * d;
        double *s = a.s + nh * (a.p + 1), m = -INFINITY, l = 0;
        for (int64_t t = threadIdx.x; t <= a.p; t += blockDim.x) {
            double acc = 0;
            for (int64_t i = 0; i < d; i++) acc += (double)q[i] * (double)K[t * d + i];
            acc *= a.scale;
            s[t] = acc;
            m = acc > m || acc != acc ? acc : m;
        }
        m = dec_reduce(m, red, 1);
        for (int64_t t = threadIdx.x; t <= a.p; t += blockDim.x) {
            double e = exp(s[t] - m);
            s[t] = e;
            l += e;
        }
        l = dec_reduce(l, red, 0);          /* its barriers also make every s[t] visible to the block */
        T *o = (T *)a.o + n * a.E + h * d;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
            double acc = 0;
            for (int64_t t = 0; t <= a.p; t++) acc += s[t] * (double)V[t * d + i];
            o[i] = (T)(acc / l);
        }
        __syncthreads();
    }
}

int cu_attention_decode_supports(const nnr_op_call *call) { return nnr_attn_decode_call_ok(call); }

int cu_attention_decode(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *qkv = call->inputs[0], *o = call->outputs[0], *k = call->outputs[1], *v = call->outputs[2];
    nnr_attn_decode_geom g;
    int bad = nnr_attn_decode_geometry(call, &g);
    if (bad == 1)
        return cu_errorf(NNR_ERR_INVALID, "attention_decode: qkv [N, 3E], caches [N * heads, capacity, head_dim] and o [N, E] expected");
    if (bad)
        return cu_errorf(NNR_ERR_INVALID, "attention_decode: the operands' shapes do not fit (N %lld, heads %lld, head_dim %lld, position %lld)",
                         (long long)g.N, (long long)g.H, (long long)g.d, (long long)g.p);
    dec_args a;
    memset(&a, 0, sizeof a);
    a.H = g.H;
    a.p = g.p;
    a.E = g.E;
    a.d = g.d;
    a.cap = g.cap;
    a.NH = g.N * g.H;
    double scale = call->params->f[0];
    a.scale = scale == scale ? scale : 1.0 / sqrt((double)a.d);
    if (a.NH == 0 || a.d == 0) return NNR_OK;
    if ((double)a.NH * (double)(a.p + 1) * sizeof(double) > 1e15)
        return cu_errorf(NNR_ERR_INVALID, "attention_decode: %lld heads by %lld positions is too large", (long long)a.NH, (long long)(a.p + 1));
    a.s = (double *)cu_scratch(d, (size_t)(a.NH * (a.p + 1)) * sizeof(double));
    if (!a.s) return NNR_ERR_OOM;
    a.qkv = qkv->data;
    a.o = o->data;
    a.k = k->data;
    a.v = v->data;
    unsigned blocks = (unsigned)(a.NH < 65535 * 8 ? a.NH : 65535 * 8);
    if (qkv->dtype == NNR_F32) k_attn_decode<float><<<blocks, DEC_THREADS, 0, d->stream>>>(a);
    else k_attn_decode<double><<<blocks, DEC_THREADS, 0, d->stream>>>(a);
    CU_LAUNCHED("attention_decode");
    return NNR_OK;
}

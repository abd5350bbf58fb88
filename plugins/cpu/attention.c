/* ATTN_DECODE (ABI 1.7): one new position of each sequence against its key/value cache, the whole
 * of a decoding step's attention in one call. For each (sequence, head), on a pool thread: the new key
 * and value go into the caches at position p, then the query's scores against keys 0..p. f32 keeps the
 * p + 1 scores in a scratch row (4 bytes a position) and runs three vectorized passes: the scores, their
 * exp and sum, the weighted values. f64 (the conformance kit's reference) runs an online softmax
 * (running maximum and sum, FlashAttention's recurrence) and keeps nothing of size p. */
#include <math.h>
#include <string.h>
#include "kernels.h"


typedef struct decode_job {
    const nnr_op_call *call;
    nnr_attn_decode_geom g;      /* N sequences, H heads of d, caches of cap positions, position p */
    double scale;
    int oom;                     /* a thread found no memory for its accumulator */
} decode_job;

/* the f32 head in three passes over a scratch row of scores: four keys' dot products at a time (16
 * lanes each, so the horizontal sums overlap), then exp and the sum, then the values weighted */
CPU_MULTI(void, scores_f32, (const float *restrict q, const float *restrict K, int64_t n, int64_t d, float scale, float *restrict s), (q, K, n, d, scale, s))
{
    int64_t t = 0;
    if (d % 16 == 0) {
        for (; t + 4 <= n; t += 4) {
            const float *k0 = K + t * d, *k1 = k0 + d, *k2 = k1 + d, *k3 = k2 + d;
            float a0[16] = {0}, a1[16] = {0}, a2[16] = {0}, a3[16] = {0};
            for (int64_t i = 0; i < d; i += 16)
                for (int l = 0; l < 16; l++) {
                    float x = q[i + l];
                    a0[l] += x * k0[i + l];
                    a1[l] += x * k1[i + l];
                    a2[l] += x * k2[i + l];
                    a3[l] += x * k3[i + l];
                }
            for (int w = 8; w > 0; w >>= 1)        /* pairwise: each level is one vector add, no serial chain */
                for (int l = 0; l < w; l++) { a0[l] += a0[l + w]; a1[l] += a1[l + w]; a2[l] += a2[l + w]; a3[l] += a3[l + w]; }
            s[t] = a0[0] * scale; s[t + 1] = a1[0] * scale; s[t + 2] = a2[0] * scale; s[t + 3] = a3[0] * scale;
        }
    }
    for (; t < n; t++) {
        const float *k = K + t * d;
        float lane[16] = {0}, r = 0;
        int64_t i = 0;
        for (; i + 16 <= d; i += 16)
            for (int l = 0; l < 16; l++) lane[l] += q[i + l] * k[i + l];
        for (; i < d; i++) r += q[i] * k[i];
        for (int l = 0; l < 16; l++) r += lane[l];
        s[t] = r * scale;
    }
}

/* o = sum over t of s[t] V_t, 64 columns at a time in a local block (registers, not a store and a load
 * of o for every key) */
CPU_MULTI(void, weighted_f32, (float *restrict o, const float *restrict s, const float *restrict V, int64_t n, int64_t d), (o, s, V, n, d))
{
    int64_t i0 = 0;
    for (; i0 + 64 <= d; i0 += 64) {
        float a[64] = {0};
        for (int64_t t = 0; t < n; t++) {
            const float *v = V + t * d + i0;
            float w = s[t];
            for (int l = 0; l < 64; l++) a[l] += w * v[l];
        }
        for (int l = 0; l < 64; l++) o[i0 + l] = a[l];
    }
    for (int64_t i = i0; i < d; i++) o[i] = 0;
    for (int64_t t = 0; t < n && i0 < d; t++) {
        const float *v = V + t * d;
        float w = s[t];
        for (int64_t i = i0; i < d; i++) o[i] += w * v[i];
    }
}

/* s[t] = exp(s[t] - m) with the vectorizable exp; returns their sum */
CPU_MULTI(float, exp_sum_f32, (float *restrict s, int64_t n, float m), (s, n, m))
{
    float lane[16] = {0}, l = 0;
    int64_t t = 0;
    for (; t + 16 <= n; t += 16)
        for (int i = 0; i < 16; i++) { s[t + i] = cpu_exp_f32(s[t + i] - m); lane[i] += s[t + i]; }
    for (; t < n; t++) { s[t] = cpu_exp_f32(s[t] - m); l += s[t]; }
    for (int i = 0; i < 16; i++) l += lane[i];
    return l;
}

static void decode_head_float(const decode_job *j, int64_t nh, float *acc, float *s)
{
    const nnr_op_call *c = j->call;
    int64_t n = nh / j->g.H, h = nh % j->g.H, d = j->g.d, keys = j->g.p + 1;
    const float *row = (const float *)c->inputs[0]->data + n * 3 * j->g.E;
    float *K = (float *)c->outputs[1]->data + nh * j->g.cap * d, *V = (float *)c->outputs[2]->data + nh * j->g.cap * d;
    memcpy(K + j->g.p * d, row + j->g.E + h * d, (size_t)d * sizeof(float));
    memcpy(V + j->g.p * d, row + 2 * j->g.E + h * d, (size_t)d * sizeof(float));
    scores_f32(row + h * d, K, keys, d, (float)j->scale, s);
    float m = -INFINITY;
    for (int64_t t = 0; t < keys; t++) m = s[t] > m || s[t] != s[t] ? s[t] : m;     /* a NaN score is kept: NaN out */
    float l = exp_sum_f32(s, keys, m);
    weighted_f32(acc, s, V, keys, d);
    float *o = (float *)c->outputs[0]->data + n * j->g.E + h * d;
    for (int64_t i = 0; i < d; i++) o[i] = acc[i] / l;
}

/* one (sequence, head) in f64: o = softmax over j <= p of (q . K_j) * scale, times V_j, as an online
 * softmax (a new maximum rescales what was summed so far) */
static void decode_head_double(const decode_job *j, int64_t nh, double *acc)
{
    const nnr_op_call *c = j->call;
    int64_t n = nh / j->g.H, h = nh % j->g.H, d = j->g.d;
    const double *row = (const double *)c->inputs[0]->data + n * 3 * j->g.E;
    double *K = (double *)c->outputs[1]->data + nh * j->g.cap * d, *V = (double *)c->outputs[2]->data + nh * j->g.cap * d;
    memcpy(K + j->g.p * d, row + j->g.E + h * d, (size_t)d * sizeof(double));
    memcpy(V + j->g.p * d, row + 2 * j->g.E + h * d, (size_t)d * sizeof(double));
    const double *q = row + h * d;
    double m = -INFINITY, l = 0;
    for (int64_t i = 0; i < d; i++) acc[i] = 0;
    for (int64_t t = 0; t <= j->g.p; t++) {
        const double *k = K + t * d, *v = V + t * d;
        double s = 0;
        for (int64_t i = 0; i < d; i++) s += q[i] * k[i];
        s *= j->scale;
        double keep = 1, w;                 /* acc = acc * keep + w * v */
        if (s > m) { keep = exp(m - s); w = 1; m = s; }
        else w = exp(s - m);
        l = l * keep + w;
        for (int64_t i = 0; i < d; i++) acc[i] = acc[i] * keep + w * v[i];
    }
    double *o = (double *)c->outputs[0]->data + n * j->g.E + h * d;
    for (int64_t i = 0; i < d; i++) o[i] = acc[i] / l;
}

static void decode_range(void *arg, int64_t begin, int64_t end)
{
    decode_job *j = arg;
    int f32 = j->call->inputs[0]->dtype == NNR_F32;
    size_t bytes = (size_t)j->g.d * (f32 ? sizeof(float) : sizeof(double)) + (f32 ? (size_t)(j->g.p + 1) * sizeof(float) : 0);
    double stack[1024];
    void *acc = bytes <= sizeof stack ? (void *)stack : cpu_host->host_alloc(bytes);
    if (!acc) { __atomic_store_n(&j->oom, 1, __ATOMIC_RELAXED); return; }
    for (int64_t nh = begin; nh < end; nh++) {
        if (f32) decode_head_float(j, nh, acc, (float *)acc + j->g.d);
        else decode_head_double(j, nh, acc);
    }
    if (acc != (void *)stack) cpu_host->host_free(acc);
}

int cpu_supports_attention_decode(const nnr_op_call *call) { return nnr_attn_decode_call_ok(call); }

int cpu_attention_decode(const nnr_op_call *call)
{
    decode_job j = {.call = call};
    int bad = nnr_attn_decode_geometry(call, &j.g);
    if (bad == 1)
        return cpu_error(NNR_ERR_INVALID, "attention_decode: qkv [N, 3E], caches [N * heads, capacity, head_dim] and o [N, E] expected");
    if (bad)
        return cpu_error(NNR_ERR_INVALID, "attention_decode: the operands' shapes do not fit (N %lld, heads %lld, head_dim %lld, position %lld)",
                         (long long)j.g.N, (long long)j.g.H, (long long)j.g.d, (long long)j.g.p);
    double scale = call->params->f[0];
    j.scale = scale == scale ? scale : 1.0 / sqrt((double)j.g.d);
    /* a head reads (p + 1) d keys and values: split over the threads once that is some 16k of them (the
     * GPT of the benchmarks past 64 positions; measured in decoding, 8k-64k all within the noise) */
    int64_t units = j.g.N * j.g.H;
    int st = (j.g.p + 1) * j.g.d * units >= 16384 ? cpu_parallel_for(units, 1, decode_range, &j) : (decode_range(&j, 0, units), NNR_OK);
    if (st == NNR_OK && j.oom) return cpu_error(NNR_ERR_OOM, "attention_decode: out of memory for a head's accumulator (head_dim %lld)", (long long)j.g.d);
    return st;
}

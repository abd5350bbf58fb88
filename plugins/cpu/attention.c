/* ATTN_DECODE (ABI 1.7): one new position of each sequence against its key/value cache, the whole
 * of a decoding step's attention in one call. For each (sequence, head), on a pool thread: the new key
 * and value go into the caches at position p, then the query's scores against keys 0..p run through an
 * online softmax (running maximum and sum, FlashAttention's recurrence) into the weighted sum of the
 * values, so nothing of size p is kept. f32 sums in f32 over 16 lanes, f64 in f64. */
#include <math.h>
#include <string.h>
#include "kernels.h"

#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

typedef struct decode_job {
    const nnr_op_call *call;
    int64_t N, H, d, E, cap, p;
    double scale;
    int oom;                     /* a thread found no memory for its accumulator */
} decode_job;

/* q . k over d elements, in lanes so that it vectorizes without reassociating a single sum */
CLONES static float dot_f32(const float *restrict q, const float *restrict k, int64_t d)
{
    float lane[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= d; i += 16)
        for (int l = 0; l < 16; l++) lane[l] += q[i + l] * k[i + l];
    float s = 0;
    for (; i < d; i++) s += q[i] * k[i];
    for (int l = 0; l < 16; l++) s += lane[l];
    return s;
}

CLONES static void axpy_f32(float *restrict o, float a, const float *restrict v, float c, int64_t d)
{
    for (int64_t i = 0; i < d; i++) o[i] = o[i] * c + a * v[i];     /* o = o * c + a * v */
}

/* one (sequence, head): o = softmax over j <= p of (q . K_j) * scale, times V_j */
#define DECODE_HEAD(T, DOT, AXPY, EXP)                                                                              \
    static void decode_head_##T(const decode_job *j, int64_t nh, T *acc)                                         \
    {                                                                                                            \
        const nnr_op_call *c = j->call;                                                                          \
        int64_t n = nh / j->H, h = nh % j->H, d = j->d;                                                          \
        const T *row = (const T *)c->inputs[0]->data + n * 3 * j->E;                                            \
        T *K = (T *)c->outputs[1]->data + nh * j->cap * d, *V = (T *)c->outputs[2]->data + nh * j->cap * d;     \
        memcpy(K + j->p * d, row + j->E + h * d, (size_t)d * sizeof(T));                                        \
        memcpy(V + j->p * d, row + 2 * j->E + h * d, (size_t)d * sizeof(T));                                    \
        const T *q = row + h * d;                                                                                \
        T m = -INFINITY, l = 0;                                                                                  \
        for (int64_t i = 0; i < d; i++) acc[i] = 0;                                                              \
        for (int64_t t = 0; t <= j->p; t++) {                                                                    \
            T s = DOT(q, K + t * d, d) * (T)j->scale;                                                            \
            if (s > m) {              /* a new maximum: rescale what was summed so far */                        \
                T c0 = EXP(m - s);                                                                               \
                l = l * c0 + 1;                                                                                  \
                AXPY(acc, 1, V + t * d, c0, d);                                                                  \
                m = s;                                                                                           \
            } else {                                                                                             \
                T e = EXP(s - m);                                                                                \
                l += e;                                                                                          \
                AXPY(acc, e, V + t * d, 1, d);                                                                   \
            }                                                                                                    \
        }                                                                                                        \
        T *o = (T *)c->outputs[0]->data + n * j->E + h * d;                                                     \
        for (int64_t i = 0; i < d; i++) o[i] = acc[i] / l;                                                       \
    }

static double dot_f64(const double *q, const double *k, int64_t d)
{
    double s = 0;
    for (int64_t i = 0; i < d; i++) s += q[i] * k[i];
    return s;
}
static void axpy_f64(double *o, double a, const double *v, double c, int64_t d)
{
    for (int64_t i = 0; i < d; i++) o[i] = o[i] * c + a * v[i];
}

DECODE_HEAD(float, dot_f32, axpy_f32, expf)
DECODE_HEAD(double, dot_f64, axpy_f64, exp)

static void decode_range(void *arg, int64_t begin, int64_t end)
{
    decode_job *j = arg;
    int f32 = j->call->inputs[0]->dtype == NNR_F32;
    size_t bytes = (size_t)j->d * (f32 ? sizeof(float) : sizeof(double));
    double stack[512];
    void *acc = bytes <= sizeof stack ? (void *)stack : cpu_host->host_alloc(bytes);
    if (!acc) { __atomic_store_n(&j->oom, 1, __ATOMIC_RELAXED); return; }
    for (int64_t nh = begin; nh < end; nh++) {
        if (f32) decode_head_float(j, nh, acc);
        else decode_head_double(j, nh, acc);
    }
    if (acc != (void *)stack) cpu_host->host_free(acc);
}

int cpu_supports_attention_decode(const nnr_op_call *call)
{
    if (call->n_inputs != 1 || call->n_outputs != 3) return 0;
    int dt = call->inputs[0]->dtype;
    if (dt != NNR_F32 && dt != NNR_F64) return 0;
    for (int k = 0; k < 3; k++)
        if (call->outputs[k]->dtype != dt || !nnr_desc_is_contiguous(call->outputs[k])) return 0;
    return nnr_desc_is_contiguous(call->inputs[0]);
}

int cpu_attention_decode(const nnr_op_call *call)
{
    const nnr_tensor_desc *qkv = call->inputs[0], *o = call->outputs[0], *k = call->outputs[1], *v = call->outputs[2];
    decode_job j = {.call = call, .H = call->params->i[1], .p = call->params->i[0]};
    if (qkv->ndim != 2 || j.H < 1 || qkv->sizes[1] % (3 * j.H) != 0 || k->ndim != 3 || v->ndim != 3 || o->ndim != 2)
        return cpu_error(NNR_ERR_INVALID, "attention_decode: qkv [N, 3E], caches [N * heads, capacity, head_dim] and o [N, E] expected");
    j.N = qkv->sizes[0];
    j.E = qkv->sizes[1] / 3;
    j.d = j.E / j.H;
    j.cap = k->sizes[1];
    if (o->sizes[0] != j.N || o->sizes[1] != j.E || k->sizes[0] != j.N * j.H || k->sizes[2] != j.d || v->sizes[0] != k->sizes[0] ||
        v->sizes[1] != j.cap || v->sizes[2] != j.d || j.p < 0 || j.p >= j.cap)
        return cpu_error(NNR_ERR_INVALID, "attention_decode: the operands' shapes do not fit (N %lld, heads %lld, head_dim %lld, position %lld)",
                         (long long)j.N, (long long)j.H, (long long)j.d, (long long)j.p);
    double scale = call->params->f[0];
    j.scale = scale == scale ? scale : 1.0 / sqrt((double)j.d);
    /* a head reads (p + 1) d keys and values: split over the threads once that is some 64k of them */
    int64_t units = j.N * j.H;
    int st = (j.p + 1) * j.d * units >= 65536 ? cpu_parallel_for(units, 1, decode_range, &j) : (decode_range(&j, 0, units), NNR_OK);
    if (st == NNR_OK && j.oom) return cpu_error(NNR_ERR_OOM, "attention_decode: out of memory for a head's accumulator (head_dim %lld)", (long long)j.d);
    return st;
}

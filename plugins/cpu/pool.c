/* Pooling over NCHW planes, parallel over (n, c) planes. Max pooling keeps
 * the argmax (flat h*W+w in the input plane) for its backward. Inputs are
 * contiguous; f32 and f64 through double accumulation. */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kernels.h"

typedef struct pool_job {
    const nnr_tensor_desc *x, *y, *idx;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int count_include_pad, adaptive;
    int64_t bad;                     /* max backward: the first argmax outside its plane, -1 none */
} pool_job;

static double ld(int dt, const void *p, int64_t i) { return dt == NNR_F32 ? ((const float *)p)[i] : ((const double *)p)[i]; }
static void st(int dt, void *p, int64_t i, double v) { if (dt == NNR_F32) ((float *)p)[i] = (float)v; else ((double *)p)[i] = v; }

/* the commonest pooling, 2x2 with stride 2: four loads, branch-light; NaN wins as in the generic path */
/* selects, not branches: on real data the comparisons are unpredictable */
static inline void max4(float a, float b, float c, float d, int64_t ia, int64_t ib, int64_t ic, int64_t id, float *best, int64_t *arg)
{
    if (__builtin_expect(a != a || b != b || c != c || d != d, 0)) {   /* the first NaN wins */
        *best = NAN;
        *arg = a != a ? ia : b != b ? ib : c != c ? ic : id;
        return;
    }
    int tb = b > a;
    float m = tb ? b : a;
    int64_t k = tb ? ib : ia;
    int tc = c > m;
    m = tc ? c : m;
    k = tc ? ic : k;
    int td = d > m;
    m = td ? d : m;
    k = td ? id : k;
    *best = m;
    *arg = k;
}

#if defined(__x86_64__)
/* One output row of 2x2/2 max pooling, 16 outputs at a time with AVX-512: even and odd
 * columns split by permutes, the max by compare-and-blend (so the first of equal values
 * wins, as in max4), the argmax by blends of the four offsets. Returns 1, having written
 * nothing useful, when the row holds a NaN: the caller redoes it with max4. */
__attribute__((target("avx512f")))
static int max_row_2x2_avx512(const float *r0, const float *r1, int64_t base, int64_t W, int64_t WO, float *y, int64_t *idx)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t wo = 0; wo < WO; wo += 16) {
        int64_t n = WO - wo < 16 ? WO - wo : 16;            /* outputs in this step */
        int64_t in = 2 * n;                                  /* input floats per row */
        __mmask16 m0 = in >= 16 ? 0xFFFF : (__mmask16)((1u << in) - 1);
        __mmask16 m1 = in > 16 ? (__mmask16)((1u << (in - 16)) - 1) : 0;
        if (in >= 32) m1 = 0xFFFF;
        __mmask16 out = n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1);
        const float *p0 = r0 + 2 * wo, *p1 = r1 + 2 * wo;
        __m512 a0 = _mm512_maskz_loadu_ps(m0, p0), a1 = _mm512_maskz_loadu_ps(m1, p0 + 16);
        __m512 b0 = _mm512_maskz_loadu_ps(m0, p1), b1 = _mm512_maskz_loadu_ps(m1, p1 + 16);
        __m512 a = _mm512_permutex2var_ps(a0, even, a1), b = _mm512_permutex2var_ps(a0, odd, a1);
        __m512 c = _mm512_permutex2var_ps(b0, even, b1), d = _mm512_permutex2var_ps(b0, odd, b1);
        __mmask16 nan = _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, d, _CMP_UNORD_Q);
        if (nan & out) return 1;
        __m512 mab = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(b, a, _CMP_GT_OQ), a, b);
        __m512 mcd = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(d, c, _CMP_GT_OQ), c, d);
        __m512 m = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mcd, mab, _CMP_GT_OQ), mab, mcd);
        _mm512_mask_storeu_ps(y + wo, out, m);
        if (!idx) continue;
        __m512i o = _mm512_set1_epi32((int)W + 1);
        o = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(c, m, _CMP_EQ_OQ), o, _mm512_set1_epi32((int)W));
        o = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(b, m, _CMP_EQ_OQ), o, _mm512_set1_epi32(1));
        o = _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(a, m, _CMP_EQ_OQ), o, _mm512_setzero_si512());
        o = _mm512_add_epi32(o, _mm512_slli_epi32(lane, 1));                 /* + 2 * lane */
        __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(o));
        __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(o, 1));
        __m512i start = _mm512_set1_epi64(base + 2 * wo);
        _mm512_mask_storeu_epi64(idx + wo, (__mmask8)(out & 0xFF), _mm512_add_epi64(lo, start));
        _mm512_mask_storeu_epi64(idx + wo + 8, (__mmask8)(out >> 8), _mm512_add_epi64(hi, start));
    }
    return 0;
}
#endif

static int have_avx512(void)
{
#if defined(__x86_64__)
    return cpu_isa_level >= CPU_ISA_AVX512;
#else
    return 0;
#endif
}

static void max_planes_f32_2x2(const pool_job *j, int64_t begin, int64_t end)
{
    int fast = have_avx512();
    int64_t H = j->x->sizes[2], W = j->x->sizes[3], HO = j->y->sizes[2], WO = j->y->sizes[3];
    for (int64_t p = begin; p < end; p++) {
        const float *x = (const float *)j->x->data + p * H * W;
        float *y = (float *)j->y->data + p * HO * WO;
        int64_t *idx = j->idx ? (int64_t *)j->idx->data + p * HO * WO : NULL;
        for (int64_t ho = 0; ho < HO; ho++) {
            const float *r0 = x + 2 * ho * W, *r1 = r0 + W;
            int64_t base = 2 * ho * W;
#if defined(__x86_64__)
            if (fast && !max_row_2x2_avx512(r0, r1, base, W, WO, y + ho * WO, idx ? idx + ho * WO : NULL)) continue;
#endif
            int64_t scratch_idx;
            for (int64_t wo = 0; wo < WO; wo++) {
                int64_t c = 2 * wo;
                max4(r0[c], r0[c + 1], r1[c], r1[c + 1], base + c, base + c + 1, base + W + c, base + W + c + 1, &y[ho * WO + wo],
                     idx ? &idx[ho * WO + wo] : &scratch_idx);
            }
        }
    }
}

/* f32, no padding or dilation: every window lies inside the plane */
static void max_planes_f32_plain(const pool_job *j, int64_t begin, int64_t end)
{
    int64_t H = j->x->sizes[2], W = j->x->sizes[3], HO = j->y->sizes[2], WO = j->y->sizes[3];
    if (j->kh == 2 && j->kw == 2 && j->sh == 2 && j->sw == 2) { max_planes_f32_2x2(j, begin, end); return; }
    for (int64_t p = begin; p < end; p++) {
        const float *x = (const float *)j->x->data + p * H * W;
        float *y = (float *)j->y->data + p * HO * WO;
        int64_t *idx = j->idx ? (int64_t *)j->idx->data + p * HO * WO : NULL;
        for (int64_t ho = 0; ho < HO; ho++)
            for (int64_t wo = 0; wo < WO; wo++) {
                int64_t h0 = ho * j->sh, w0 = wo * j->sw, arg = h0 * W + w0;
                float best = x[arg];
                for (int64_t a = 0; a < j->kh && best == best; a++)
                    for (int64_t b = 0; b < j->kw; b++) {
                        int64_t at = (h0 + a) * W + w0 + b;
                        float v = x[at];
                        if (v > best || v != v) { best = v; arg = at; if (v != v) break; }
                    }
                y[ho * WO + wo] = best;
                if (idx) idx[ho * WO + wo] = arg;
            }
    }
}

/* f32 without argmax (inference) and without dilation, any window, stride and padding: each output row the
 * maximum of its window's rows, each of those taken over the window's columns as whole rows (loops over wo
 * the compiler keeps branch-free); padding never wins, a NaN does (as in the generic path) */
CPU_MULTI(void, max_planes_f32_values, (const pool_job *j, int64_t begin, int64_t end), (j, begin, end))
{
    int64_t H = j->x->sizes[2], W = j->x->sizes[3], HO = j->y->sizes[2], WO = j->y->sizes[3];
    for (int64_t p = begin; p < end; p++) {
        const float *x = (const float *)j->x->data + p * H * W;
        float *y = (float *)j->y->data + p * HO * WO;
        for (int64_t ho = 0; ho < HO; ho++) {
            float *out = y + ho * WO;
            for (int64_t wo = 0; wo < WO; wo++) out[wo] = -INFINITY;
            int64_t h0 = ho * j->sh - j->ph;
            for (int64_t a = h0 < 0 ? -h0 : 0; a < j->kh && h0 + a < H; a++) {
                const float *row = x + (h0 + a) * W;
                for (int64_t b = 0; b < j->kw; b++) {
                    /* the outputs whose column wo * sw - pw + b lies inside the row */
                    int64_t off = b - j->pw, lo = off < 0 ? (-off + j->sw - 1) / j->sw : 0, hi = WO;
                    if ((WO - 1) * j->sw + off >= W) hi = off >= W ? 0 : (W - 1 - off) / j->sw + 1;
                    const float *restrict in = row + off;
                    float *restrict o = out;
                    int64_t sw = j->sw;
                    if (sw == 2)        /* a constant stride: the loads vectorize as even lanes */
                        for (int64_t wo = lo; wo < hi; wo++) {
                            float v = in[wo * 2], m = o[wo];
                            o[wo] = ((v > m) | (v != v)) ? v : m;
                        }
                    else
                        for (int64_t wo = lo; wo < hi; wo++) {    /* (no short circuit: a select, not a branch) */
                            float v = in[wo * sw], m = o[wo];
                            o[wo] = ((v > m) | (v != v)) ? v : m;
                        }
                }
            }
            /* a NaN met in an earlier row stays: (v > NaN) is false and v != v only for a NaN */
        }
    }
}

static void max_planes(void *arg, int64_t begin, int64_t end)
{
    const pool_job *j = arg;
    int64_t H = j->x->sizes[2], W = j->x->sizes[3], HO = j->y->sizes[2], WO = j->y->sizes[3];
    int dt = j->x->dtype;
    int inside = j->ph == 0 && j->pw == 0 && j->dh == 1 && j->dw == 1 && (HO - 1) * j->sh + j->kh <= H && (WO - 1) * j->sw + j->kw <= W;
    if (dt == NNR_F32 && !j->idx && j->dh == 1 && j->dw == 1 && !(inside && j->kh == 2 && j->kw == 2 && j->sh == 2 && j->sw == 2)) {
        max_planes_f32_values(j, begin, end);
        return;
    }
    if (dt == NNR_F32 && inside) { max_planes_f32_plain(j, begin, end); return; }
    for (int64_t p = begin; p < end; p++) {
        const char *x = (const char *)j->x->data + p * H * W * (dt == NNR_F32 ? 4 : 8);
        for (int64_t ho = 0; ho < HO; ho++)
            for (int64_t wo = 0; wo < WO; wo++) {
                double best = -INFINITY;
                int64_t arg = -1;
                for (int64_t a = 0; a < j->kh; a++) {
                    int64_t h = ho * j->sh - j->ph + a * j->dh;
                    if (h < 0 || h >= H) continue;
                    for (int64_t b = 0; b < j->kw; b++) {
                        int64_t w = wo * j->sw - j->pw + b * j->dw;
                        if (w < 0 || w >= W) continue;
                        double v = ld(dt, x, h * W + w);
                        if (v > best || v != v || arg < 0) { best = v; arg = h * W + w; if (v != v) goto done; }
                    }
                }
            done:
                st(dt, j->y->data, (p * HO + ho) * WO + wo, best);
                if (j->idx) ((int64_t *)j->idx->data)[(p * HO + ho) * WO + wo] = arg;
            }
    }
}

int cpu_maxpool2d(const nnr_op_call *call)
{
    const int64_t *i = call->params->i;
    pool_job j = {call->inputs[0], call->outputs[0], call->n_outputs > 1 ? call->outputs[1] : NULL, i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], 0, 0, -1};
    int64_t planes = j.x->sizes[0] * j.x->sizes[1], plane = j.x->sizes[2] * j.x->sizes[3];
    /* pieces of at least ~16K input elements: below that, waking a thread costs more than it saves */
    return cpu_parallel_for(planes, plane > 0 ? (16384 + plane - 1) / plane : 1, max_planes, &j);
}

/* grad_x: zero, then each output's gradient added at its argmax (windows may overlap) */
/* the argmax comes from a forward, maybe another backend's: an index outside its plane is refused
 * (reported through bad, the first one found), never written through */
static void max_back_planes(void *arg, int64_t begin, int64_t end)
{
    pool_job *j = arg;   /* x: grad_out, y: grad_x, idx: argmax */
    int64_t HO = j->x->sizes[2], WO = j->x->sizes[3], H = j->y->sizes[2], W = j->y->sizes[3];
    uint64_t plane = (uint64_t)(H * W);
    int dt = j->y->dtype;
    for (int64_t p = begin; p < end; p++) {
        const int64_t *idx = (const int64_t *)j->idx->data + p * HO * WO;
        if (dt == NNR_F32) memset((float *)j->y->data + p * H * W, 0, sizeof(float) * (size_t)(H * W));
        else for (int64_t k = 0; k < H * W; k++) st(dt, j->y->data, p * H * W + k, 0);
        for (int64_t k = 0; k < HO * WO; k++) {
            int64_t a = idx[k];
            if ((uint64_t)a >= plane) {
                if (a != -1) __atomic_compare_exchange_n(&j->bad, &(int64_t){-1}, p * HO * WO + k, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
                continue;
            }
            if (dt == NNR_F32) ((float *)j->y->data)[p * H * W + a] += ((const float *)j->x->data)[p * HO * WO + k];
            else st(dt, j->y->data, p * H * W + a, ld(dt, j->y->data, p * H * W + a) + ld(dt, j->x->data, p * HO * WO + k));
        }
    }
}

int cpu_maxpool2d_backward(const nnr_op_call *call)
{
    pool_job j = {call->inputs[0], call->outputs[0], call->inputs[1], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1};
    int64_t planes = j.y->sizes[0] * j.y->sizes[1];
    int st = cpu_parallel_for(planes, 1, max_back_planes, &j);
    if (st == NNR_OK && j.bad >= 0) {
        int64_t at = j.bad, per = j.x->sizes[2] * j.x->sizes[3];
        return cpu_error(NNR_ERR_INVALID, "max_pool2d backward: argmax %lld of plane %lld is outside its %lldx%lld plane (corrupt indices "
                         "from the forward)", (long long)((const int64_t *)call->inputs[1]->data)[at], (long long)(at / per + 1),
                         (long long)j.y->sizes[2], (long long)j.y->sizes[3]);
    }
    return st;
}

/* the input window of output (ho, wo): [h0, h1) x [w0, w1), and the divisor */
static void avg_window(const pool_job *j, int64_t H, int64_t W, int64_t HO, int64_t WO, int64_t ho, int64_t wo,
                       int64_t *h0, int64_t *h1, int64_t *w0, int64_t *w1, int64_t *div)
{
    if (j->adaptive) {
        *h0 = ho * H / HO; *h1 = ((ho + 1) * H + HO - 1) / HO;
        *w0 = wo * W / WO; *w1 = ((wo + 1) * W + WO - 1) / WO;
        *div = (*h1 - *h0) * (*w1 - *w0);
        return;
    }
    int64_t hs = ho * j->sh - j->ph, ws = wo * j->sw - j->pw;
    int64_t he = hs + j->kh, we = ws + j->kw;
    int64_t pad_he = he < H + j->ph ? he : H + j->ph, pad_we = we < W + j->pw ? we : W + j->pw;
    int64_t padded = (pad_he - hs) * (pad_we - ws);
    *h0 = hs < 0 ? 0 : hs; *w0 = ws < 0 ? 0 : ws;
    *h1 = he > H ? H : he; *w1 = we > W ? W : we;
    *div = j->count_include_pad ? padded : (*h1 - *h0) * (*w1 - *w0);
}

static void avg_planes(void *arg, int64_t begin, int64_t end)
{
    const pool_job *j = arg;
    int64_t H = j->x->sizes[2], W = j->x->sizes[3], HO = j->y->sizes[2], WO = j->y->sizes[3];
    int dt = j->x->dtype;
    for (int64_t p = begin; p < end; p++)
        for (int64_t ho = 0; ho < HO; ho++)
            for (int64_t wo = 0; wo < WO; wo++) {
                int64_t h0, h1, w0, w1, div;
                avg_window(j, H, W, HO, WO, ho, wo, &h0, &h1, &w0, &w1, &div);
                double s = 0;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) s += ld(dt, j->x->data, p * H * W + h * W + w);
                st(dt, j->y->data, (p * HO + ho) * WO + wo, div > 0 ? s / (double)div : 0);
            }
}

static void avg_back_planes(void *arg, int64_t begin, int64_t end)
{
    const pool_job *j = arg;   /* x: grad_out [.., HO, WO], y: grad_x [.., H, W] */
    int64_t HO = j->x->sizes[2], WO = j->x->sizes[3], H = j->y->sizes[2], W = j->y->sizes[3];
    int dt = j->y->dtype;
    for (int64_t p = begin; p < end; p++) {
        for (int64_t k = 0; k < H * W; k++) st(dt, j->y->data, p * H * W + k, 0);
        for (int64_t ho = 0; ho < HO; ho++)
            for (int64_t wo = 0; wo < WO; wo++) {
                int64_t h0, h1, w0, w1, div;
                avg_window(j, H, W, HO, WO, ho, wo, &h0, &h1, &w0, &w1, &div);
                if (div <= 0) continue;
                double g = ld(dt, j->x->data, (p * HO + ho) * WO + wo) / (double)div;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) {
                        int64_t at = p * H * W + h * W + w;
                        st(dt, j->y->data, at, ld(dt, j->y->data, at) + g);
                    }
            }
    }
}

int cpu_avgpool2d(const nnr_op_call *call)
{
    const int64_t *i = call->params->i;
    int adaptive = call->op == NNR_OP_ADAPTIVE_AVGPOOL2D || call->op == NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD;
    int backward = call->op == NNR_OP_AVGPOOL2D_BACKWARD || call->op == NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD;
    pool_job j = {call->inputs[0], call->outputs[0], NULL, i[0], i[1], i[2], i[3], i[4], i[5], 1, 1, (int)i[6], adaptive, -1};
    int64_t planes = j.x->sizes[0] * j.x->sizes[1];
    return cpu_parallel_for(planes, 1, backward ? avg_back_planes : avg_planes, &j);
}

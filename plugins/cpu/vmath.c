/* f32 transcendental functions over arrays, for the unary ops EXP, LOG, TANH, SIGMOID, SIN, COS and ERF.
 *
 * libm computes them one float at a time: 6-30 ns an element on an AVX2 EPYC, 4-10x what PyTorch takes,
 * whose vectorized CPU ops call SLEEF. So do these: SLEEF's 1.0-ulp functions (the "u10" family, the
 * variants PyTorch uses) on whole vectors, the one for the running class (isa.h): 16 lanes on AVX-512,
 * 8 on AVX2 (with FMA), 4 on the baseline's SSE2. A tail shorter than a vector goes through a padded
 * buffer (the masked lanes of AVX-512). SLEEF keeps C99's special values: exp(-inf) = 0, log(0) = -inf,
 * log(x < 0) = NaN, tanh(+-inf) = +-1, erf(+-inf) = +-1, sin(inf) = NaN; NaN in, NaN out.
 *
 * SIGMOID is 1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|): no overflow either way, and
 * its lower tail keeps its relative accuracy (within 3 ulp of the rounded exact value in the tests).
 *
 * Why a library and not a polynomial of our own (as cpu_exp_f32 in kernels.h, which the recurrent gates
 * and softmax inline into their own loops): a standalone op has no loop to fuse into, SLEEF is a Debian
 * package (libsleef-dev) with a 1-ulp bound over the whole range of each function (sin and cos with
 * Payne-Hanek reduction for large arguments), and it is what PyTorch's results are compared with. */
#include <math.h>
#include <string.h>
#include "kernels.h"
#if defined(__x86_64__)
#include <immintrin.h>
#include <sleef.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

/* sleef.h declares its AVX2 and AVX-512 functions only in a file compiled for those ISAs (__AVX__,
 * __AVX512F__); this one is compiled for the baseline, the wide loops by target attributes, so it declares
 * them itself, as sleef.h would */
#define SLEEF_DECL(T, W, ISA)                                                                              \
    extern T Sleef_expf##W##_u10##ISA(T) __attribute__((const));                                           \
    extern T Sleef_logf##W##_u10##ISA(T) __attribute__((const));                                           \
    extern T Sleef_tanhf##W##_u10##ISA(T) __attribute__((const));                                          \
    extern T Sleef_sinf##W##_u10##ISA(T) __attribute__((const));                                           \
    extern T Sleef_cosf##W##_u10##ISA(T) __attribute__((const));                                           \
    extern T Sleef_erff##W##_u10##ISA(T) __attribute__((const));                                           \
    extern T Sleef_expm1f##W##_u10##ISA(T) __attribute__((const));                                         \
    extern T Sleef_log1pf##W##_u10##ISA(T) __attribute__((const));                                         \
    extern T Sleef_powf##W##_u10##ISA(T, T) __attribute__((const));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
SLEEF_DECL(__m256, 8, avx2)
SLEEF_DECL(__m512, 16, avx512f)
#pragma GCC diagnostic pop
#undef SLEEF_DECL

/* one vector of each width, by op; sigmoid built on exp */
#define DEFINE_VOP(W, T, SUF, ISA, SIG)                                                                     \
    static inline __attribute__((always_inline)) T vraw##W(int op, T x)                                    \
    {                                                                                                      \
        switch (op) {                                                                                      \
        case NNR_OP_EXP: return Sleef_expf##W##_u10##ISA(x);                                               \
        case NNR_OP_LOG: return Sleef_logf##W##_u10##ISA(x);                                               \
        case NNR_OP_TANH: return Sleef_tanhf##W##_u10##ISA(x);                                             \
        case NNR_OP_SIN: return Sleef_sinf##W##_u10##ISA(x);                                               \
        case NNR_OP_COS: return Sleef_cosf##W##_u10##ISA(x);                                               \
        case NNR_OP_ERF: return Sleef_erff##W##_u10##ISA(x);                                               \
        default: return SIG(x);                                                                            \
        }                                                                                                  \
    }

__attribute__((target(CPU_TARGET_AVX512))) static inline __m512 sig16(__m512 x)
{
    __m512 ax = _mm512_abs_ps(x), one = _mm512_set1_ps(1.0f);
    __m512 e = Sleef_expf16_u10avx512f(_mm512_sub_ps(_mm512_setzero_ps(), ax));
    __m512 r = _mm512_div_ps(one, _mm512_add_ps(one, e));
    /* x >= 0 (false for NaN): r; else e r (NaN for NaN) */
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), _mm512_mul_ps(e, r), r);
}
__attribute__((target(CPU_TARGET_AVX2))) static inline __m256 sig8(__m256 x)
{
    __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), one = _mm256_set1_ps(1.0f);
    __m256 e = Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_setzero_ps(), ax));
    __m256 r = _mm256_div_ps(one, _mm256_add_ps(one, e));
    return _mm256_blendv_ps(_mm256_mul_ps(e, r), r, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
}
static inline __m128 sig4(__m128 x)
{
    __m128 ax = _mm_andnot_ps(_mm_set1_ps(-0.0f), x), one = _mm_set1_ps(1.0f);
    __m128 e = Sleef_expf4_u10sse2(_mm_sub_ps(_mm_setzero_ps(), ax));
    __m128 r = _mm_div_ps(one, _mm_add_ps(one, e));
    __m128 ge = _mm_cmpge_ps(x, _mm_setzero_ps());
    return _mm_or_ps(_mm_and_ps(ge, r), _mm_andnot_ps(ge, _mm_mul_ps(e, r)));
}

__attribute__((target(CPU_TARGET_AVX512))) DEFINE_VOP(16, __m512, , avx512f, sig16)
__attribute__((target(CPU_TARGET_AVX2))) DEFINE_VOP(8, __m256, , avx2, sig8)
DEFINE_VOP(4, __m128, , sse2, sig4)

/* NaN results as the one quiet NaN (0x7fc00000): SLEEF returns all-ones NaNs (sin(inf)), and a float
 * NaN whose payload fills its upper bits becomes, widened to a double, one of the tagged values LuaJIT
 * keeps in NaN space (nil, or an object pointer) when a script reads it */
__attribute__((target(CPU_TARGET_AVX512))) static inline __m512 vop16(int op, __m512 x)
{
    __m512 r = vraw16(op, x);
    return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(r, r, _CMP_UNORD_Q), _mm512_set1_ps(NAN));
}
__attribute__((target(CPU_TARGET_AVX2))) static inline __m256 vop8(int op, __m256 x)
{
    __m256 r = vraw8(op, x);
    return _mm256_blendv_ps(r, _mm256_set1_ps(NAN), _mm256_cmp_ps(r, r, _CMP_UNORD_Q));
}
static inline __m128 vop4(int op, __m128 x)
{
    __m128 r = vraw4(op, x), bad = _mm_cmpunord_ps(r, r);
    return _mm_or_ps(_mm_and_ps(bad, _mm_set1_ps(NAN)), _mm_andnot_ps(bad, r));
}

/* the loops: the op's switch hoisted out of them (one copy of the loop per op, the call inlined) */
#define CASES(LOOP) \
    switch (op) { \
    case NNR_OP_EXP: LOOP(NNR_OP_EXP); break; case NNR_OP_LOG: LOOP(NNR_OP_LOG); break; \
    case NNR_OP_TANH: LOOP(NNR_OP_TANH); break; case NNR_OP_SIN: LOOP(NNR_OP_SIN); break; \
    case NNR_OP_COS: LOOP(NNR_OP_COS); break; case NNR_OP_ERF: LOOP(NNR_OP_ERF); break; \
    default: LOOP(NNR_OP_SIGMOID); break; }

__attribute__((target(CPU_TARGET_AVX512), noinline)) static void map16(int op, int64_t n, float *o, const float *a)
{
#define LOOP16(OP)                                                                                         \
    {                                                                                                      \
        int64_t i = 0;                                                                                     \
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, vop16(OP, _mm512_loadu_ps(a + i)));          \
        if (i < n) {                                                                                       \
            __mmask16 k = (__mmask16)((1u << (n - i)) - 1);                                                \
            _mm512_mask_storeu_ps(o + i, k, vop16(OP, _mm512_maskz_loadu_ps(k, a + i)));                   \
        }                                                                                                  \
    }
    CASES(LOOP16)
#undef LOOP16
}

/* AVX2 and SSE2: whole vectors, then the tail through a zero-padded buffer; the op a constant in each
 * case of CASES, so that its switch folds away */
#define PADDED_MAP(W, TGT, LOAD, STORE)                                                                    \
    TGT static inline __attribute__((always_inline)) void padded##W(int op, int64_t n, float *o, const float *a) \
    {                                                                                                      \
        int64_t i = 0;                                                                                     \
        for (; i + W <= n; i += W) STORE(o + i, vop##W(op, LOAD(a + i)));                                  \
        if (i < n) {                                                                                       \
            float t[W] = {0};                                                                              \
            memcpy(t, a + i, (size_t)(n - i) * sizeof(float));                                             \
            STORE(t, vop##W(op, LOAD(t)));                                                                 \
            memcpy(o + i, t, (size_t)(n - i) * sizeof(float));                                             \
        }                                                                                                  \
    }
PADDED_MAP(8, __attribute__((target(CPU_TARGET_AVX2))), _mm256_loadu_ps, _mm256_storeu_ps)
PADDED_MAP(4, , _mm_loadu_ps, _mm_storeu_ps)
#define CALL8(OP) padded8(OP, n, o, a)
#define CALL4(OP) padded4(OP, n, o, a)
__attribute__((target(CPU_TARGET_AVX2), noinline)) static void map8(int op, int64_t n, float *o, const float *a) { CASES(CALL8) }
__attribute__((noinline)) static void map4(int op, int64_t n, float *o, const float *a) { CASES(CALL4) }
#undef CALL8
#undef CALL4
#undef PADDED_MAP
#undef CASES

/* ---------------- the activations (ACTIVATION, ACTIVATION_GRAD; plugin.h) ----------------
 * Written once on GCC's vector types, instantiated for 16, 8 and 4 lanes with that width's SLEEF
 * functions: a comparison gives a lane mask (-1 or 0) and SEL picks by it. Each formula keeps NaN:
 * a comparison with NaN is false, and the branch it falls to computes with x. */
#define ACT_WIDTH(W, ISA, TGT)                                                                             \
    typedef float vf##W __attribute__((vector_size(W * 4)));                                               \
    typedef int32_t vi##W __attribute__((vector_size(W * 4)));                                             \
    TGT static inline vf##W sel##W(vi##W m, vf##W a, vf##W b) { return (vf##W)((m & (vi##W)a) | (~m & (vi##W)b)); } \
    TGT static inline vf##W sigm##W(vf##W x)                                                               \
    {                                                                                                      \
        vf##W ax = sel##W(x < 0, -x, x), e = Sleef_expf##W##_u10##ISA(-ax), r = 1.0f / (1.0f + e);         \
        return sel##W(x >= 0, r, e * r);                                                                   \
    }                                                                                                      \
    /* log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)) */                                                   \
    TGT static inline vf##W splus##W(vf##W z)                                                              \
    {                                                                                                      \
        vf##W az = sel##W(z < 0, -z, z);                                                                   \
        return sel##W(z > 0, z, (vf##W){0}) + Sleef_log1pf##W##_u10##ISA(Sleef_expf##W##_u10##ISA(-az));     \
    }                                                                                                      \
    /* tanh(softplus(x)) = n (n + 2) / (n (n + 2) + 2), n = exp(x): one exp, not exp, log1p and tanh;    \
     * x is capped at 20 first, where the quotient is 1 in f32 (and n^2 stays finite) */                   \
    TGT static inline vf##W tsp##W(vf##W x)                                                                \
    {                                                                                                      \
        vf##W n = Sleef_expf##W##_u10##ISA(sel##W(x < 20.0f, x, (vf##W){0} + 20.0f)), m = n * (n + 2.0f);    \
        return m / (m + 2.0f);                                                                             \
    }                                                                                                      \
    TGT static inline vf##W act##W(int kind, vf##W x, float a, float b)                                    \
    {                                                                                                      \
        switch (kind) {                                                                                    \
        case NNR_ACT_SILU: return x * sigm##W(x);                                                          \
        case NNR_ACT_SOFTPLUS: { vf##W z = a * x; return sel##W(z > b, x, splus##W(z) / a); }              \
        case NNR_ACT_ELU: return sel##W(x > 0, b * x, (b * a) * Sleef_expm1f##W##_u10##ISA(x));           \
        case NNR_ACT_LEAKY_RELU: return sel##W(x > 0, x, a * x);                                           \
        case NNR_ACT_MISH: return x * tsp##W(x);                                                           \
        default: { vf##W t = x + 3.0f; t = sel##W(t > 0, t, (vf##W){0}); t = sel##W(t < 6.0f, t, (vf##W){0} + 6.0f); \
                   return x * t / 6.0f; }                                                                   \
        }                                                                                                  \
    }                                                                                                      \
    TGT static inline vf##W dact##W(int kind, vf##W g, vf##W x, float a, float b)                         \
    {                                                                                                      \
        switch (kind) {                                                                                    \
        case NNR_ACT_SILU: { vf##W s = sigm##W(x); return g * s * (1.0f + x * (1.0f - s)); }               \
        case NNR_ACT_SOFTPLUS: { vf##W z = a * x; return sel##W(z > b, g, g * sigm##W(z)); }               \
        case NNR_ACT_ELU: return sel##W(x > 0, g * b, g * ((b * a) * Sleef_expf##W##_u10##ISA(x)));        \
        case NNR_ACT_LEAKY_RELU: return sel##W(x > 0, g, g * a);                                           \
        case NNR_ACT_MISH: { vf##W t = tsp##W(x); return g * (t + x * sigm##W(x) * (1.0f - t * t)); }      \
        default: return sel##W(x < -3.0f, (vf##W){0}, sel##W(x <= 3.0f, g * (x / 3.0f + 0.5f), g));          \
        }                                                                                                  \
    }

#define TGT512 __attribute__((target(CPU_TARGET_AVX512)))
#define TGT256 __attribute__((target(CPU_TARGET_AVX2)))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
ACT_WIDTH(16, avx512f, TGT512)
ACT_WIDTH(8, avx2, TGT256)
ACT_WIDTH(4, sse2, )
#pragma GCC diagnostic pop

/* o = act(x) or, with g, o = g act'(x), n contiguous floats: whole vectors, then the tail through a
 * zero-padded buffer */
#define ACT_LOOP(W, TGT)                                                                                   \
    TGT __attribute__((noinline)) static void act_map##W(int kind, int64_t n, float *o, const float *g, const float *x, float a, float b) \
    {                                                                                                      \
        int64_t i = 0;                                                                                     \
        vf##W v, w;                                                                                        \
        for (; i + W <= n; i += W) {                                                                       \
            memcpy(&v, x + i, sizeof v);                                                                   \
            if (g) { memcpy(&w, g + i, sizeof w); v = dact##W(kind, w, v, a, b); }                         \
            else v = act##W(kind, v, a, b);                                                                \
            memcpy(o + i, &v, sizeof v);                                                                   \
        }                                                                                                  \
        if (i < n) {                                                                                       \
            float tx[W] = {0}, tg[W] = {0};                                                                \
            memcpy(tx, x + i, (size_t)(n - i) * sizeof(float));                                            \
            if (g) memcpy(tg, g + i, (size_t)(n - i) * sizeof(float));                                     \
            memcpy(&v, tx, sizeof v);                                                                      \
            memcpy(&w, tg, sizeof w);                                                                      \
            v = g ? dact##W(kind, w, v, a, b) : act##W(kind, v, a, b);                                     \
            memcpy(tx, &v, sizeof v);                                                                      \
            memcpy(o + i, tx, (size_t)(n - i) * sizeof(float));                                            \
        }                                                                                                  \
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
ACT_LOOP(16, TGT512)
ACT_LOOP(8, TGT256)
ACT_LOOP(4, )
#pragma GCC diagnostic pop

/* ---------------- the extreme of a run of floats (MAX and MIN reductions) ----------------
 * per lane the running extreme and a NaN flag; a NaN anywhere gives NaN, as the reductions' other paths */
#define EXTREME_LOOP(W, TGT)                                                                               \
    TGT __attribute__((noinline)) static float extreme##W(const float *x, int64_t n, int is_max, float init) \
    {                                                                                                      \
        vf##W m = {0}, v;                                                                                  \
        vi##W bad = {0};                                                                                   \
        m += init;                                                                                         \
        int64_t i = 0;                                                                                     \
        if (is_max)                                                                                        \
            for (; i + W <= n; i += W) { memcpy(&v, x + i, sizeof v); m = sel##W(v > m, v, m); bad |= v != v; } \
        else                                                                                               \
            for (; i + W <= n; i += W) { memcpy(&v, x + i, sizeof v); m = sel##W(v < m, v, m); bad |= v != v; } \
        float r = init;                                                                                    \
        for (int k = 0; k < W; k++) {                                                                      \
            if (bad[k]) return NAN;                                                                        \
            if (is_max ? m[k] > r : m[k] < r) r = m[k];                                                    \
        }                                                                                                  \
        for (; i < n; i++) {                                                                               \
            if (x[i] != x[i]) return NAN;                                                                  \
            if (is_max ? x[i] > r : x[i] < r) r = x[i];                                                    \
        }                                                                                                  \
        return r;                                                                                          \
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
EXTREME_LOOP(16, TGT512)
EXTREME_LOOP(8, TGT256)
EXTREME_LOOP(4, )
#pragma GCC diagnostic pop

float cpu_extreme_f32(const float *x, int64_t n, int is_max, float init)
{
    if (cpu_isa_level >= CPU_ISA_AVX512) return extreme16(x, n, is_max, init);
    if (cpu_isa_level >= CPU_ISA_AVX2) return extreme8(x, n, is_max, init);
    return extreme4(x, n, is_max, init);
}

/* ---------------- POW: a ^ b, a or b a scalar (stride 0) or both contiguous ----------------
 * SLEEF's powf (1 ulp) when every operand is a float; a scalar that is not one (x ^ 0.3: 0.3 has no
 * float) is kept in double, as PyTorch keeps it, and the power computed in double (SLEEF's powd),
 * D floats at a time widened to D doubles: rounding 0.3 to a float moved 1e30 ^ 0.3 by 7 ulp */
extern __m512d Sleef_powd8_u10avx512f(__m512d, __m512d) __attribute__((const));
extern __m256d Sleef_powd4_u10avx2(__m256d, __m256d) __attribute__((const));
#define POWF_LOOP(W, ISA, TGT)                                                                             \
    TGT __attribute__((noinline)) static void powf_map##W(int64_t n, float *o, const float *a, int64_t sa, const float *b, int64_t sb) \
    {                                                                                                      \
        vf##W va = {0}, vb = {0};                                                                          \
        va += a[0]; vb += b[0];                                                                            \
        for (int64_t i = 0; i < n; i += W) {                                                               \
            int64_t m = n - i < W ? n - i : W;                                                             \
            if (m == W) {                                                                                  \
                if (sa) memcpy(&va, a + i, sizeof va);                                                     \
                if (sb) memcpy(&vb, b + i, sizeof vb);                                                     \
            } else {                                                                                       \
                float ta[W], tb[W];                                                                        \
                for (int k = 0; k < W; k++) { ta[k] = a[sa && k < m ? i + k : 0]; tb[k] = b[sb && k < m ? i + k : 0]; } \
                memcpy(&va, ta, sizeof va);                                                                \
                memcpy(&vb, tb, sizeof vb);                                                                \
            }                                                                                              \
            vf##W r = Sleef_powf##W##_u10##ISA(va, vb);                                                    \
            memcpy(o + i, &r, (size_t)m * sizeof(float));                                                  \
        }                                                                                                  \
    }
/* one operand a tensor of floats (x, stride sx), the other a double scalar s (first: s ^ x) */
#define POWD_LOOP(D, SLEEF, TGT)                                                                           \
    typedef float pf##D __attribute__((vector_size(D * 4)));                                               \
    typedef double pd##D __attribute__((vector_size(D * 8)));                                              \
    TGT __attribute__((noinline)) static void powd_map##D(int64_t n, float *o, const float *x, double s, int first) \
    {                                                                                                      \
        pd##D vs = {0};                                                                                    \
        vs += s;                                                                                           \
        for (int64_t i = 0; i < n; i += D) {                                                               \
            int64_t m = n - i < D ? n - i : D;                                                             \
            float t[D] = {0};                                                                              \
            memcpy(t, x + i, (size_t)m * sizeof(float));                                                   \
            pf##D f;                                                                                       \
            memcpy(&f, t, sizeof f);                                                                       \
            pd##D d = __builtin_convertvector(f, pd##D);                                                   \
            pf##D r = __builtin_convertvector(first ? SLEEF(vs, d) : SLEEF(d, vs), pf##D);                 \
            memcpy(o + i, &r, (size_t)m * sizeof(float));                                                  \
        }                                                                                                  \
    }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
POWF_LOOP(16, avx512f, TGT512)
POWF_LOOP(8, avx2, TGT256)
POWF_LOOP(4, sse2, )
POWD_LOOP(8, Sleef_powd8_u10avx512f, TGT512)
POWD_LOOP(4, Sleef_powd4_u10avx2, TGT256)
POWD_LOOP(2, Sleef_powd2_u10sse2, )
#pragma GCC diagnostic pop

/* the exponents a program writes most, exactly as PyTorch computes them: x * x, x * x * x, sqrt, 1 / x */
CPU_MULTI(int, pow_scalar_exp, (int64_t n, float *o, const float *a, float e), (n, o, a, e))
{
    if (e == 2.0f) { for (int64_t i = 0; i < n; i++) o[i] = a[i] * a[i]; return 1; }
    if (e == 3.0f) { for (int64_t i = 0; i < n; i++) o[i] = a[i] * a[i] * a[i]; return 1; }
    if (e == 0.5f) { for (int64_t i = 0; i < n; i++) o[i] = sqrtf(a[i]); return 1; }
    if (e == -1.0f) { for (int64_t i = 0; i < n; i++) o[i] = 1.0f / a[i]; return 1; }
    if (e == 1.0f) { for (int64_t i = 0; i < n; i++) o[i] = a[i]; return 1; }
    return 0;
}

void cpu_pow_f32(int64_t n, float *o, const float *a, int64_t sa, const float *b, int64_t sb, double scalar)
{
    /* the stride says which side is the scalar (at most one is: the caller sends two of stride 0
     * elsewhere); only then is its exact value compared */
    if (sa && !sb && (double)b[0] == scalar && pow_scalar_exp(n, o, a, b[0])) return;
    if ((!sa && sb && (double)a[0] != scalar) || (sa && !sb && (double)b[0] != scalar)) {      /* a scalar that is no float */
        const float *x = sa ? a : b;
        int first = !sa;
        if (cpu_isa_level >= CPU_ISA_AVX512) powd_map8(n, o, x, scalar, first);
        else if (cpu_isa_level >= CPU_ISA_AVX2) powd_map4(n, o, x, scalar, first);
        else powd_map2(n, o, x, scalar, first);
        return;
    }
    if (cpu_isa_level >= CPU_ISA_AVX512) powf_map16(n, o, a, sa, b, sb);
    else if (cpu_isa_level >= CPU_ISA_AVX2) powf_map8(n, o, a, sa, b, sb);
    else powf_map4(n, o, a, sa, b, sb);
}

void cpu_activation_f32(int kind, int64_t n, float *o, const float *g, const float *x, float a, float b)
{
    if (cpu_isa_level >= CPU_ISA_AVX512) act_map16(kind, n, o, g, x, a, b);
    else if (cpu_isa_level >= CPU_ISA_AVX2) act_map8(kind, n, o, g, x, a, b);
    else act_map4(kind, n, o, g, x, a, b);
}

int cpu_vmath_op(int op)
{
    switch (op) {
    case NNR_OP_EXP: case NNR_OP_LOG: case NNR_OP_TANH: case NNR_OP_SIGMOID: case NNR_OP_SIN: case NNR_OP_COS: case NNR_OP_ERF: return 1;
    default: return 0;
    }
}

int cpu_vmath_f32(int op, int64_t n, float *o, const float *a)
{
    if (!cpu_vmath_op(op)) return 0;
    if (cpu_isa_level >= CPU_ISA_AVX512) map16(op, n, o, a);
    else if (cpu_isa_level >= CPU_ISA_AVX2) map8(op, n, o, a);
    else map4(op, n, o, a);
    return 1;
}

#else
int cpu_vmath_op(int op)
{
    (void)op;
    return 0;
}

int cpu_vmath_f32(int op, int64_t n, float *o, const float *a)
{
    (void)op; (void)n; (void)o; (void)a;
    return 0;
}

float cpu_extreme_f32(const float *x, int64_t n, int is_max, float init)
{
    float r = init;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] != x[i]) return NAN;
        if (is_max ? x[i] > r : x[i] < r) r = x[i];
    }
    return r;
}

void cpu_pow_f32(int64_t n, float *o, const float *a, int64_t sa, const float *b, int64_t sb, double scalar)
{
    for (int64_t i = 0; i < n; i++) o[i] = (float)pow(sa ? a[i] : sb ? scalar : a[0], sb ? b[i] : sa ? scalar : b[0]);
}

void cpu_activation_f32(int kind, int64_t n, float *o, const float *g, const float *x, float a, float b)
{
    for (int64_t i = 0; i < n; i++) o[i] = (float)(g ? cpu_activation_grad_d(kind, g[i], x[i], a, b) : cpu_activation_d(kind, x[i], a, b));
}
#endif

/* the same in double, one element at a time (f64 tensors, and the gradient checks) */
static double sigmoid_d(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
static double softplus_d(double z) { return (z > 0 ? z : 0.0) + log1p(exp(-fabs(z))); }

double cpu_activation_d(int kind, double x, double a, double b)
{
    switch (kind) {
    case NNR_ACT_SILU: return x * sigmoid_d(x);
    case NNR_ACT_SOFTPLUS: return a * x > b ? x : softplus_d(a * x) / a;
    case NNR_ACT_ELU: return x > 0 ? b * x : b * a * expm1(x);
    case NNR_ACT_LEAKY_RELU: return x > 0 ? x : a * x;
    case NNR_ACT_MISH: return x * tanh(softplus_d(x));
    default: { double t = x + 3 > 0 ? x + 3 : 0.0; t = t < 6 ? t : 6.0; return x * t / 6; }
    }
}

double cpu_activation_grad_d(int kind, double g, double x, double a, double b)
{
    switch (kind) {
    case NNR_ACT_SILU: { double s = sigmoid_d(x); return g * s * (1 + x * (1 - s)); }
    case NNR_ACT_SOFTPLUS: return a * x > b ? g : g * sigmoid_d(a * x);
    case NNR_ACT_ELU: return x > 0 ? g * b : g * (b * a * exp(x));
    case NNR_ACT_LEAKY_RELU: return x > 0 ? g : g * a;
    case NNR_ACT_MISH: { double t = tanh(softplus_d(x)); return g * (t + x * sigmoid_d(x) * (1 - t * t)); }
    default: return x < -3 ? 0.0 : x <= 3 ? g * (x / 3 + 0.5) : g;
    }
}

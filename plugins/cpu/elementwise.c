/* Elementwise kernels: unary, binary (tensor-tensor and tensor-scalar),
 * where, clamp, copy (casts), fill and arange.
 *
 * f32 has dedicated loops (contiguous, scalar-broadcast and strided cases
 * compiled separately so the contiguous ones vectorize; CPU_MULTI (isa.h) runs
 * the AVX-512, AVX2 or baseline copy for the CPU class). Every other dtype runs through
 * double or int64 chunk buffers (rows.h). Operand 0 of the iterator is the
 * output, then the inputs. */
#include <math.h>
#include <string.h>
#include "rows.h"

#define INLINE static inline __attribute__((always_inline))

typedef struct ew_ctx {
    int op;
    int in_dtype, out_dtype, cond_dtype;
    int nin;             /* tensor inputs after the output */
    int scalar_first;
    double s0, s1;       /* scalar operands / clamp bounds */
    int flags;
} ew_ctx;

static int is_compare(int op) { return nnr_op_category_of((uint32_t)op) == NNR_OPCAT_COMPARE; }

/* ---------------- scalar math shared by every path ---------------- */

INLINE float sigmoid_f(float x) { return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x)); }
/* GELU, x Phi(x), and its derivative Phi(x) + x phi(x) (PyTorch's exact form) */
INLINE double gelu_d(double x) { return 0.5 * x * (1.0 + erf(x * 0.7071067811865476)); }
INLINE double gelu_grad_d(double g, double x)
{
    return g * (0.5 * (1.0 + erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x));
}
/* In f32 without libm, so that the loops vectorize (erff one float at a time made GELU and its gradient a
 * fifth of a GPT's training step): Phi(x) = 1 - erfc(z) / 2 or erfc(z) / 2 for z = |x| / sqrt 2, with
 * erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), P of degree 9 (Numerical Recipes' erfcc, a relative
 * error below 1.2e-7 for every z >= 0), so that Phi keeps its relative accuracy in the lower tail.
 * e = exp(-x^2 / 2) serves both Phi and phi. */
INLINE float phi_cdf_f(float x, float e)
{
    float z = fabsf(x) * 0.70710678f, t = 1.0f / (1.0f + 0.5f * z);
    float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f
              + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
    float q = 0.5f * t * e * cpu_exp_f32(p);
    return x >= 0 ? 1.0f - q : q;
}
/* exp(-x^2 / 2), 0 where it underflows (cpu_exp_f32 clamps at exp(-87.5) instead) */
INLINE float gauss_f(float x) { float a = -0.5f * x * x; return a > -87.0f ? cpu_exp_f32(a) : (a != a ? a : 0.0f); }
/* the forward needs no phi: exp(-z^2) exp(P(t)) as one exp(-z^2 + P(t)) (what Numerical Recipes' erfcc
 * computes), half the exps; the argument is as accurate as -x^2 / 2 was. Below the point where that
 * exp underflows, 0 (a NaN x stays NaN through x * ...) */
INLINE float gelu_f(float x)
{
    float z = fabsf(x) * 0.70710678f, t = 1.0f / (1.0f + 0.5f * z);
    float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f
              + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
    float a = p - z * z;
    float q = a > -87.0f ? 0.5f * t * cpu_exp_f32(a) : 0.0f;
    return x * (x >= 0 ? 1.0f - q : q);
}
INLINE float gelu_grad_f(float g, float x)
{
    float e = gauss_f(x);
    return g * (phi_cdf_f(x, e) + x * 0.39894228f * e);
}

static double unary_d(int op, double x)
{
    switch (op) {
    case NNR_OP_NEG: return -x;
    case NNR_OP_ABS: return fabs(x);
    case NNR_OP_EXP: return exp(x);
    case NNR_OP_LOG: return log(x);
    case NNR_OP_SQRT: return sqrt(x);
    case NNR_OP_TANH: return tanh(x);
    case NNR_OP_SIGMOID: return cpu_sigmoid_d(x);
    case NNR_OP_RELU: return x > 0 ? x : (x != x ? x : 0.0);
    case NNR_OP_SIN: return sin(x);
    case NNR_OP_COS: return cos(x);
    case NNR_OP_SIGN: return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;     /* sign(nan) = 0, as PyTorch */
    case NNR_OP_RECIPROCAL: return 1.0 / x;
    case NNR_OP_LOGICAL_NOT: return x == 0;
    case NNR_OP_ERF: return erf(x);
    case NNR_OP_GELU: return gelu_d(x);
    case NNR_OP_FLOOR: return floor(x);
    case NNR_OP_CEIL: return ceil(x);
    case NNR_OP_ROUND: return rint(x);      /* the default rounding mode: half to even, as PyTorch */
    case NNR_OP_TRUNC: return trunc(x);
    case NNR_OP_ISNAN: return x != x;
    case NNR_OP_ISINF: return isinf(x) != 0;
    case NNR_OP_ISFINITE: return isfinite(x) != 0;
    }
    return 0;
}

static int64_t unary_i(int op, int64_t x)
{
    switch (op) {
    case NNR_OP_NEG: return (int64_t)(0 - (uint64_t)x);
    case NNR_OP_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    case NNR_OP_RELU: return x > 0 ? x : 0;
    case NNR_OP_SIGN: return (x > 0) - (x < 0);
    case NNR_OP_LOGICAL_NOT: return x == 0;
    case NNR_OP_FLOOR: case NNR_OP_CEIL: case NNR_OP_ROUND: case NNR_OP_TRUNC: return x;   /* integers are whole */
    case NNR_OP_ISNAN: case NNR_OP_ISINF: return 0;
    case NNR_OP_ISFINITE: return 1;
    }
    return 0;
}

INLINE double maximum_d(double a, double b) { return (a != a || b != b) ? NAN : (a > b ? a : b); }
INLINE double minimum_d(double a, double b) { return (a != a || b != b) ? NAN : (a < b ? a : b); }

static double binary_d(int op, double a, double b)
{
    switch (op) {
    case NNR_OP_GELU_GRAD: return gelu_grad_d(a, b);
    case NNR_OP_ADD: return a + b;
    case NNR_OP_SUB: return a - b;
    case NNR_OP_MUL: return a * b;
    case NNR_OP_DIV: return a / b;
    case NNR_OP_POW: return pow(a, b);
    case NNR_OP_MAXIMUM: return maximum_d(a, b);
    case NNR_OP_MINIMUM: return minimum_d(a, b);
    case NNR_OP_EQ: return a == b;
    case NNR_OP_NE: return a != b;
    case NNR_OP_LT: return a < b;
    case NNR_OP_LE: return a <= b;
    case NNR_OP_GT: return a > b;
    case NNR_OP_GE: return a >= b;
    case NNR_OP_LOGICAL_AND: return a != 0 && b != 0;
    case NNR_OP_LOGICAL_OR: return a != 0 || b != 0;
    case NNR_OP_RELU_GRAD: return b > 0 ? a : 0;
    }
    return 0;
}

static int64_t ipow(int64_t base, int64_t e)
{
    if (e < 0) return base == 1 ? 1 : base == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)base;
    while (e) { if (e & 1) r *= b; b *= b; e >>= 1; }
    return (int64_t)r;
}

static int64_t binary_i(int op, int64_t a, int64_t b)
{
    switch (op) {
    case NNR_OP_ADD: return (int64_t)((uint64_t)a + (uint64_t)b);
    case NNR_OP_SUB: return (int64_t)((uint64_t)a - (uint64_t)b);
    case NNR_OP_MUL: return (int64_t)((uint64_t)a * (uint64_t)b);
    case NNR_OP_DIV: return b == 0 ? 0 : (a == INT64_MIN && b == -1) ? a : a / b;
    case NNR_OP_POW: return ipow(a, b);
    case NNR_OP_MAXIMUM: return a > b ? a : b;
    case NNR_OP_MINIMUM: return a < b ? a : b;
    case NNR_OP_EQ: return a == b;
    case NNR_OP_NE: return a != b;
    case NNR_OP_LT: return a < b;
    case NNR_OP_LE: return a <= b;
    case NNR_OP_GT: return a > b;
    case NNR_OP_GE: return a >= b;
    case NNR_OP_LOGICAL_AND: return a != 0 && b != 0;
    case NNR_OP_LOGICAL_OR: return a != 0 || b != 0;
    case NNR_OP_RELU_GRAD: return b > 0 ? a : 0;
    }
    return 0;
}

/* ---------------- f32 fast loops ---------------- */

INLINE void bin_f32_loop(int op, int64_t n, float *o, int64_t so, const float *a, int64_t sa, const float *b, int64_t sb)
{
    switch (op) {
    case NNR_OP_ADD: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] + b[i * sb]; return;
    case NNR_OP_SUB: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] - b[i * sb]; return;
    case NNR_OP_MUL: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] * b[i * sb]; return;
    case NNR_OP_DIV: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] / b[i * sb]; return;
    case NNR_OP_MAXIMUM:
        for (int64_t i = 0; i < n; i++) { float x = a[i * sa], y = b[i * sb]; o[i * so] = (x != x || y != y) ? NAN : (x > y ? x : y); }
        return;
    case NNR_OP_MINIMUM:
        for (int64_t i = 0; i < n; i++) { float x = a[i * sa], y = b[i * sb]; o[i * so] = (x != x || y != y) ? NAN : (x < y ? x : y); }
        return;
    case NNR_OP_RELU_GRAD: for (int64_t i = 0; i < n; i++) o[i * so] = b[i * sb] > 0 ? a[i * sa] : 0.0f; return;
    case NNR_OP_GELU_GRAD: for (int64_t i = 0; i < n; i++) o[i * so] = gelu_grad_f(a[i * sa], b[i * sb]); return;
    default: for (int64_t i = 0; i < n; i++) o[i * so] = (float)binary_d(op, a[i * sa], b[i * sb]); return;
    }
}

INLINE void cmp_f32_loop(int op, int64_t n, uint8_t *o, int64_t so, const float *a, int64_t sa, const float *b, int64_t sb)
{
    switch (op) {
    case NNR_OP_EQ: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] == b[i * sb]; return;
    case NNR_OP_NE: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] != b[i * sb]; return;
    case NNR_OP_LT: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] < b[i * sb]; return;
    case NNR_OP_LE: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] <= b[i * sb]; return;
    case NNR_OP_GT: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] > b[i * sb]; return;
    case NNR_OP_GE: for (int64_t i = 0; i < n; i++) o[i * so] = a[i * sa] >= b[i * sb]; return;
    default: for (int64_t i = 0; i < n; i++) o[i * so] = binary_d(op, a[i * sa], b[i * sb]) != 0; return;
    }
}

CPU_MULTI(void, bin_f32_contig, (int op, int64_t n, float *o, const float *a, const float *b), (op, n, o, a, b)) { bin_f32_loop(op, n, o, 1, a, 1, b, 1); }
CPU_MULTI(void, bin_f32_scalar_b, (int op, int64_t n, float *o, const float *a, const float *b), (op, n, o, a, b)) { bin_f32_loop(op, n, o, 1, a, 1, b, 0); }
CPU_MULTI(void, bin_f32_scalar_a, (int op, int64_t n, float *o, const float *a, const float *b), (op, n, o, a, b)) { bin_f32_loop(op, n, o, 1, a, 0, b, 1); }

static void binary_f32_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    float *o = (float *)p[0];
    float scalar = (float)c->s0;
    const float *a, *b;
    int64_t sa, sb, so = s[0] / 4;
    if (c->nin == 2) { a = (const float *)p[1]; b = (const float *)p[2]; sa = s[1] / 4; sb = s[2] / 4; }
    else if (c->scalar_first) { a = &scalar; sa = 0; b = (const float *)p[1]; sb = s[1] / 4; }
    else { a = (const float *)p[1]; sa = s[1] / 4; b = &scalar; sb = 0; }
    if (is_compare(c->op)) {
        uint8_t *ob = (uint8_t *)p[0];
        if (s[0] == 1 && sa == 1 && sb == 1) cmp_f32_loop(c->op, n, ob, 1, a, 1, b, 1);
        else if (s[0] == 1 && sa == 1 && sb == 0) cmp_f32_loop(c->op, n, ob, 1, a, 1, b, 0);
        else cmp_f32_loop(c->op, n, ob, s[0], a, sa, b, sb);
        return;
    }
    if (c->op == NNR_OP_POW && so == 1 && ((sa == 1 && (sb == 1 || sb == 0)) || (sa == 0 && sb == 1))) {
        /* a scalar operand's exact value: the op's double; a broadcast tensor's element is a float. (Both
         * of stride 0, an expanded tensor and a scalar, take the loop below.) */
        cpu_pow_f32(n, o, a, sa, b, sb, c->nin == 1 ? c->s0 : sa == 0 ? (double)a[0] : (double)b[0]);
        return;
    }
    if (so == 1 && sa == 1 && sb == 1) bin_f32_contig(c->op, n, o, a, b);
    else if (so == 1 && sa == 1 && sb == 0) bin_f32_scalar_b(c->op, n, o, a, b);
    else if (so == 1 && sa == 0 && sb == 1) bin_f32_scalar_a(c->op, n, o, a, b);
    else bin_f32_loop(c->op, n, o, so, a, sa, b, sb);
}

INLINE void un_f32_loop(int op, int64_t n, float *o, int64_t so, const float *a, int64_t sa)
{
    switch (op) {
    case NNR_OP_NEG: for (int64_t i = 0; i < n; i++) o[i * so] = -a[i * sa]; return;
    case NNR_OP_ABS: for (int64_t i = 0; i < n; i++) o[i * so] = fabsf(a[i * sa]); return;
    case NNR_OP_RELU: for (int64_t i = 0; i < n; i++) { float x = a[i * sa]; o[i * so] = x > 0 ? x : (x != x ? x : 0.0f); } return;
    case NNR_OP_EXP: for (int64_t i = 0; i < n; i++) o[i * so] = expf(a[i * sa]); return;
    case NNR_OP_LOG: for (int64_t i = 0; i < n; i++) o[i * so] = logf(a[i * sa]); return;
    case NNR_OP_SQRT: for (int64_t i = 0; i < n; i++) o[i * so] = sqrtf(a[i * sa]); return;
    case NNR_OP_TANH: for (int64_t i = 0; i < n; i++) o[i * so] = tanhf(a[i * sa]); return;
    case NNR_OP_SIGMOID: for (int64_t i = 0; i < n; i++) o[i * so] = sigmoid_f(a[i * sa]); return;
    case NNR_OP_SIN: for (int64_t i = 0; i < n; i++) o[i * so] = sinf(a[i * sa]); return;
    case NNR_OP_COS: for (int64_t i = 0; i < n; i++) o[i * so] = cosf(a[i * sa]); return;
    case NNR_OP_RECIPROCAL: for (int64_t i = 0; i < n; i++) o[i * so] = 1.0f / a[i * sa]; return;
    case NNR_OP_ERF: for (int64_t i = 0; i < n; i++) o[i * so] = erff(a[i * sa]); return;
    case NNR_OP_GELU: for (int64_t i = 0; i < n; i++) o[i * so] = gelu_f(a[i * sa]); return;
    case NNR_OP_FLOOR: for (int64_t i = 0; i < n; i++) o[i * so] = floorf(a[i * sa]); return;
    case NNR_OP_CEIL: for (int64_t i = 0; i < n; i++) o[i * so] = ceilf(a[i * sa]); return;
    case NNR_OP_ROUND: for (int64_t i = 0; i < n; i++) o[i * so] = rintf(a[i * sa]); return;
    case NNR_OP_TRUNC: for (int64_t i = 0; i < n; i++) o[i * so] = truncf(a[i * sa]); return;
    default: for (int64_t i = 0; i < n; i++) o[i * so] = (float)unary_d(op, a[i * sa]); return;
    }
}

CPU_MULTI(void, un_f32_contig, (int op, int64_t n, float *o, const float *a), (op, n, o, a)) { un_f32_loop(op, n, o, 1, a, 1); }

static void unary_f32_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    if (s[0] == 4 && s[1] == 4) {
        if (!cpu_vmath_f32(c->op, n, (float *)p[0], (const float *)p[1])) un_f32_contig(c->op, n, (float *)p[0], (const float *)p[1]);
        return;
    }
    if (cpu_vmath_op(c->op)) {       /* strided: through a buffer, a chunk at a time */
        float buf[CPU_CHUNK];
        for (int64_t at = 0; at < n; at += CPU_CHUNK) {
            int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
            const float *a = (const float *)(p[1] + at * s[1]);
            for (int64_t i = 0; i < m; i++) buf[i] = *(const float *)((const char *)a + i * s[1]);
            cpu_vmath_f32(c->op, m, buf, buf);
            float *o = (float *)(p[0] + at * s[0]);
            for (int64_t i = 0; i < m; i++) *(float *)((char *)o + i * s[0]) = buf[i];
        }
        return;
    }
    un_f32_loop(c->op, n, (float *)p[0], s[0] / 4, (const float *)p[1], s[1] / 4);
}

/* ---------------- generic chunked paths ---------------- */

static int integral_path(int dtype) { return nnr_dtype_is_integral(dtype); }

static void unary_generic_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    for (int64_t at = 0; at < n; at += CPU_CHUNK) {
        int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
        if (integral_path(c->in_dtype)) {
            int64_t x[CPU_CHUNK];
            load_row_i64(c->in_dtype, p[1] + at * s[1], s[1], m, x);
            for (int64_t i = 0; i < m; i++) x[i] = unary_i(c->op, x[i]);
            store_row_i64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        } else {
            double x[CPU_CHUNK];
            load_row_f64(c->in_dtype, p[1] + at * s[1], s[1], m, x);
            for (int64_t i = 0; i < m; i++) x[i] = unary_d(c->op, x[i]);
            store_row_f64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        }
    }
}

/* i64 add, sub and mul of a contiguous tensor and a scalar, as wrapping 64-bit integers (binary_i):
 * the 1-based indices a script hands to gather and index_select are shifted this way on every call,
 * and the chunked int64 path cost more than the gather itself */
CPU_MULTI(void, i64_scalar_op, (int op, int64_t n, int64_t *o, const int64_t *a, int64_t b, int first), (op, n, o, a, b, first))
{
    const uint64_t *ua = (const uint64_t *)a;
    uint64_t *uo = (uint64_t *)o, ub = (uint64_t)b;
    if (op == NNR_OP_ADD) for (int64_t i = 0; i < n; i++) uo[i] = ua[i] + ub;
    else if (op == NNR_OP_SUB && !first) for (int64_t i = 0; i < n; i++) uo[i] = ua[i] - ub;
    else if (op == NNR_OP_SUB) for (int64_t i = 0; i < n; i++) uo[i] = ub - ua[i];
    else for (int64_t i = 0; i < n; i++) uo[i] = ua[i] * ub;
}

static void binary_generic_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    int one_scalar = c->nin == 1;
    if (one_scalar && c->in_dtype == NNR_I64 && c->out_dtype == NNR_I64 && s[0] == 8 && s[1] == 8 &&
        (c->op == NNR_OP_ADD || c->op == NNR_OP_SUB || c->op == NNR_OP_MUL) && c->s0 == (double)nnr_double_to_i64(c->s0) &&
        fabs(c->s0) < 9007199254740992.0) {
        i64_scalar_op(c->op, n, (int64_t *)p[0], (const int64_t *)p[1], nnr_double_to_i64(c->s0), c->scalar_first);
        return;
    }
    for (int64_t at = 0; at < n; at += CPU_CHUNK) {
        int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
        if (integral_path(c->in_dtype)) {
            int64_t x[CPU_CHUNK], y[CPU_CHUNK], sc = nnr_double_to_i64(c->s0);
            load_row_i64(c->in_dtype, p[1] + at * s[1], s[1], m, x);
            if (!one_scalar) load_row_i64(c->in_dtype, p[2] + at * s[2], s[2], m, y);
            for (int64_t i = 0; i < m; i++) {
                int64_t l = x[i], r = one_scalar ? sc : y[i];
                if (one_scalar && c->scalar_first) { r = l; l = sc; }
                x[i] = binary_i(c->op, l, r);
            }
            store_row_i64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        } else {
            double x[CPU_CHUNK], y[CPU_CHUNK];
            load_row_f64(c->in_dtype, p[1] + at * s[1], s[1], m, x);
            if (!one_scalar) load_row_f64(c->in_dtype, p[2] + at * s[2], s[2], m, y);
            for (int64_t i = 0; i < m; i++) {
                double l = x[i], r = one_scalar ? c->s0 : y[i];
                if (one_scalar && c->scalar_first) { r = l; l = c->s0; }
                x[i] = binary_d(c->op, l, r);
            }
            store_row_f64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        }
    }
}

/* bf16 (or f16) operands and result of an op that f32 rounds exactly as the double path does
 * (relu, neg, abs; add, sub, mul, maximum, minimum, relu_grad of two tensors): computed in f32
 * chunks with the f32 loops, a chunk converted at a time (autocast's activations and gradients) */
static int half_in_f32(int op, int nin)
{
    if (nin == 1) return op == NNR_OP_RELU || op == NNR_OP_NEG || op == NNR_OP_ABS;
    return op == NNR_OP_ADD || op == NNR_OP_SUB || op == NNR_OP_MUL || op == NNR_OP_MAXIMUM || op == NNR_OP_MINIMUM ||
           op == NNR_OP_RELU_GRAD;
}

static void half_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    int dt = c->out_dtype;
    for (int64_t at = 0; at < n; at += CPU_CHUNK) {
        int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
        float x[CPU_CHUNK], y[CPU_CHUNK];
        load_row_half_f32(dt, p[1] + at * s[1], s[1], m, x);
        if (c->nin == 2) {
            load_row_half_f32(dt, p[2] + at * s[2], s[2], m, y);
            bin_f32_contig(c->op, m, x, x, y);
        } else if (!cpu_vmath_f32(c->op, m, x, x)) {
            un_f32_contig(c->op, m, x, x);
        }
        store_row_half_f32(dt, p[0] + at * s[0], s[0], m, x);
    }
}

static int run_elementwise(const nnr_op_call *call, cpu_row_fn fn, ew_ctx *c)
{
    const nnr_tensor_desc *descs[CPU_ITER_MAX_OPS];
    descs[0] = call->outputs[0];
    for (int i = 0; i < call->n_inputs; i++) descs[1 + i] = call->inputs[i];
    cpu_iter it;
    cpu_iter_init(&it, 1 + call->n_inputs, descs);
    return cpu_iter_run(&it, fn, c);
}

int cpu_unary(const nnr_op_call *call)
{
    ew_ctx c = {.op = (int)call->op, .in_dtype = call->inputs[0]->dtype, .out_dtype = call->outputs[0]->dtype, .nin = 1};
    int fast = c.in_dtype == NNR_F32 && c.out_dtype == NNR_F32;
    int half = (c.in_dtype == NNR_BF16 || c.in_dtype == NNR_F16) && c.out_dtype == c.in_dtype && half_in_f32(c.op, 1);
    return run_elementwise(call, fast ? unary_f32_row : half ? half_row : unary_generic_row, &c);
}

int cpu_binary(const nnr_op_call *call)
{
    ew_ctx c = {.op = (int)call->op, .in_dtype = call->inputs[0]->dtype, .out_dtype = call->outputs[0]->dtype, .nin = call->n_inputs};
    if (call->n_inputs == 1) {
        c.s0 = call->params->f[0];
        c.scalar_first = call->params->i[0] != 0;
    }
    int fast = c.in_dtype == NNR_F32 && (c.out_dtype == NNR_F32 || (is_compare(c.op) && c.out_dtype == NNR_BOOL));
    int half = (c.in_dtype == NNR_BF16 || c.in_dtype == NNR_F16) && c.out_dtype == c.in_dtype && c.nin == 2 &&
               call->inputs[1]->dtype == c.in_dtype && half_in_f32(c.op, 2);
    return run_elementwise(call, fast ? binary_f32_row : half ? half_row : binary_generic_row, &c);
}

/* where(cond, a, b): operands out, cond, then a and b unless they are scalars */
/* contiguous f32 where: a and b tensors (sa, sb 1) or scalars (stride 0), a select per lane */
CPU_MULTI(void, where_f32_contig, (int64_t n, float *o, const uint8_t *cond, const float *a, int64_t sa, const float *b, int64_t sb),
          (n, o, cond, a, sa, b, sb))
{
    if (sa && sb) for (int64_t i = 0; i < n; i++) o[i] = cond[i] ? a[i] : b[i];
    else if (sa) { float y = b[0]; for (int64_t i = 0; i < n; i++) o[i] = cond[i] ? a[i] : y; }
    else if (sb) { float x = a[0]; for (int64_t i = 0; i < n; i++) o[i] = cond[i] ? x : b[i]; }
    else { float x = a[0], y = b[0]; for (int64_t i = 0; i < n; i++) o[i] = cond[i] ? x : y; }
}

/* contiguous f32 clamp; NaN stays NaN (both comparisons false) */
CPU_MULTI(void, clamp_f32_contig, (int64_t n, float *o, const float *x, int lo_on, float lo, int hi_on, float hi),
          (n, o, x, lo_on, lo, hi_on, hi))
{
    if (lo_on && hi_on) for (int64_t i = 0; i < n; i++) { float v = x[i] < lo ? lo : x[i]; o[i] = v > hi ? hi : v; }
    else if (lo_on) for (int64_t i = 0; i < n; i++) o[i] = x[i] < lo ? lo : x[i];
    else if (hi_on) for (int64_t i = 0; i < n; i++) o[i] = x[i] > hi ? hi : x[i];
    else for (int64_t i = 0; i < n; i++) o[i] = x[i];
}

static void where_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    int has_a = !(c->flags & 1), has_b = !(c->flags & 2);
    int ia = 2, ib = has_a ? 3 : 2;
    if (c->out_dtype == NNR_F32 && c->cond_dtype == NNR_BOOL && s[0] == 4 && s[1] == 1 && (!has_a || s[ia] == 4) && (!has_b || s[ib] == 4)) {
        float sa = (float)c->s0, sb = (float)c->s1;
        where_f32_contig(n, (float *)p[0], (const uint8_t *)p[1], has_a ? (const float *)p[ia] : &sa, has_a, has_b ? (const float *)p[ib] : &sb, has_b);
        return;
    }
    if (c->out_dtype == NNR_F32 && c->cond_dtype == NNR_BOOL) {
        float sa = (float)c->s0, sb = (float)c->s1;
        for (int64_t i = 0; i < n; i++) {
            float a = has_a ? *(const float *)(p[ia] + i * s[ia]) : sa;
            float b = has_b ? *(const float *)(p[ib] + i * s[ib]) : sb;
            *(float *)(p[0] + i * s[0]) = *(const uint8_t *)(p[1] + i * s[1]) ? a : b;
        }
        return;
    }
    for (int64_t at = 0; at < n; at += CPU_CHUNK) {
        int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
        int64_t cond[CPU_CHUNK];
        load_row_i64(c->cond_dtype, p[1] + at * s[1], s[1], m, cond);
        if (integral_path(c->out_dtype)) {
            int64_t x[CPU_CHUNK], y[CPU_CHUNK];
            if (has_a) load_row_i64(c->out_dtype, p[ia] + at * s[ia], s[ia], m, x);
            if (has_b) load_row_i64(c->out_dtype, p[ib] + at * s[ib], s[ib], m, y);
            for (int64_t i = 0; i < m; i++)
                x[i] = cond[i] ? (has_a ? x[i] : nnr_double_to_i64(c->s0)) : (has_b ? y[i] : nnr_double_to_i64(c->s1));
            store_row_i64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        } else {
            double x[CPU_CHUNK], y[CPU_CHUNK];
            if (has_a) load_row_f64(c->out_dtype, p[ia] + at * s[ia], s[ia], m, x);
            if (has_b) load_row_f64(c->out_dtype, p[ib] + at * s[ib], s[ib], m, y);
            for (int64_t i = 0; i < m; i++) x[i] = cond[i] ? (has_a ? x[i] : c->s0) : (has_b ? y[i] : c->s1);
            store_row_f64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        }
    }
}

int cpu_where(const nnr_op_call *call)
{
    ew_ctx c = {.op = NNR_OP_WHERE, .out_dtype = call->outputs[0]->dtype, .cond_dtype = call->inputs[0]->dtype,
                .s0 = call->params->f[0], .s1 = call->params->f[1], .flags = (int)call->params->i[0]};
    return run_elementwise(call, where_row, &c);
}

static void clamp_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    int lo_on = c->flags & 1, hi_on = c->flags & 2;
    if (c->out_dtype == NNR_F32 && s[0] == 4 && s[1] == 4) {
        clamp_f32_contig(n, (float *)p[0], (const float *)p[1], lo_on, (float)c->s0, hi_on != 0, (float)c->s1);
        return;
    }
    if (c->out_dtype == NNR_F32) {
        float lo = (float)c->s0, hi = (float)c->s1;
        for (int64_t i = 0; i < n; i++) {
            float x = *(const float *)(p[1] + i * s[1]);
            if (lo_on && x < lo) x = lo;
            if (hi_on && x > hi) x = hi;
            *(float *)(p[0] + i * s[0]) = x;
        }
        return;
    }
    for (int64_t at = 0; at < n; at += CPU_CHUNK) {
        int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
        if (integral_path(c->out_dtype)) {
            int64_t x[CPU_CHUNK], lo = nnr_double_to_i64(ceil(c->s0)), hi = nnr_double_to_i64(floor(c->s1));
            load_row_i64(c->out_dtype, p[1] + at * s[1], s[1], m, x);
            for (int64_t i = 0; i < m; i++) {
                if (lo_on && x[i] < lo) x[i] = lo;
                if (hi_on && x[i] > hi) x[i] = hi;
            }
            store_row_i64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        } else {
            double x[CPU_CHUNK];
            load_row_f64(c->out_dtype, p[1] + at * s[1], s[1], m, x);
            for (int64_t i = 0; i < m; i++) {
                if (lo_on && x[i] < c->s0) x[i] = c->s0;
                if (hi_on && x[i] > c->s1) x[i] = c->s1;
            }
            store_row_f64(c->out_dtype, p[0] + at * s[0], s[0], m, x);
        }
    }
}

int cpu_clamp(const nnr_op_call *call)
{
    ew_ctx c = {.out_dtype = call->outputs[0]->dtype, .s0 = call->params->f[0], .s1 = call->params->f[1], .flags = (int)call->params->i[0]};
    return run_elementwise(call, clamp_row, &c);
}

/* ---------------- copy and casts ---------------- */

CPU_MULTI(void, f32_from_u8, (int64_t n, float *o, const uint8_t *a), (n, o, a)) { for (int64_t i = 0; i < n; i++) o[i] = a[i]; }
CPU_MULTI(void, f64_from_f32, (int64_t n, double *o, const float *a), (n, o, a)) { for (int64_t i = 0; i < n; i++) o[i] = a[i]; }
CPU_MULTI(void, f32_from_f64, (int64_t n, float *o, const double *a), (n, o, a)) { for (int64_t i = 0; i < n; i++) o[i] = (float)a[i]; }
/* autocast's casts */
CPU_MULTI(void, bf16_from_f32, (int64_t n, uint16_t *o, const float *a), (n, o, a)) { for (int64_t i = 0; i < n; i++) o[i] = nnr_f32_to_bf16(a[i]); }
CPU_MULTI(void, f32_from_bf16, (int64_t n, float *o, const uint16_t *a), (n, o, a)) { for (int64_t i = 0; i < n; i++) o[i] = nnr_bf16_to_f32(a[i]); }

static void copy_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    int to = c->out_dtype, from = c->in_dtype;
    size_t es = nnr_dtype_nbytes(to);
    if (to == from) {
        if (s[0] == (int64_t)es && s[1] == (int64_t)es) { memmove(p[0], p[1], (size_t)n * es); return; }
        switch (es) {
        case 1: for (int64_t i = 0; i < n; i++) *(uint8_t *)(p[0] + i * s[0]) = *(const uint8_t *)(p[1] + i * s[1]); return;
        case 2: for (int64_t i = 0; i < n; i++) *(uint16_t *)(p[0] + i * s[0]) = *(const uint16_t *)(p[1] + i * s[1]); return;
        case 4: for (int64_t i = 0; i < n; i++) *(uint32_t *)(p[0] + i * s[0]) = *(const uint32_t *)(p[1] + i * s[1]); return;
        default: for (int64_t i = 0; i < n; i++) *(uint64_t *)(p[0] + i * s[0]) = *(const uint64_t *)(p[1] + i * s[1]); return;
        }
    }
    int contiguous = s[0] == (int64_t)es && s[1] == (int64_t)nnr_dtype_nbytes(from);
    if (contiguous && to == NNR_F32 && from == NNR_U8) { f32_from_u8(n, (float *)p[0], (const uint8_t *)p[1]); return; }
    if (contiguous && to == NNR_F64 && from == NNR_F32) { f64_from_f32(n, (double *)p[0], (const float *)p[1]); return; }
    if (contiguous && to == NNR_F32 && from == NNR_F64) { f32_from_f64(n, (float *)p[0], (const double *)p[1]); return; }
    if (contiguous && to == NNR_BF16 && from == NNR_F32) { bf16_from_f32(n, (uint16_t *)p[0], (const float *)p[1]); return; }
    if (contiguous && to == NNR_F32 && from == NNR_BF16) { f32_from_bf16(n, (float *)p[0], (const uint16_t *)p[1]); return; }
    for (int64_t at = 0; at < n; at += CPU_CHUNK) {
        int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
        if (nnr_dtype_is_integral(from) && nnr_dtype_is_integral(to)) {
            int64_t x[CPU_CHUNK];
            load_row_i64(from, p[1] + at * s[1], s[1], m, x);
            store_row_i64(to, p[0] + at * s[0], s[0], m, x);
        } else {
            double x[CPU_CHUNK];
            load_row_f64(from, p[1] + at * s[1], s[1], m, x);
            store_row_f64(to, p[0] + at * s[0], s[0], m, x);
        }
    }
}

/* A transposed matrix made contiguous (x:t():contiguous(), the last two dims of a batch of them): the
 * row-by-row copy read the source a column at a time, one cache line an element (12 ms for [4096,
 * 1024]); tiles of 32 x 32 read and write whole lines. Batch dims may have any strides. */
enum { TILE = 32 };
typedef struct tcopy_job {
    const nnr_tensor_desc *in, *out;
    int64_t R, C, tiles_r, tiles_c;      /* the output's rows and columns; the source is [C, R] contiguous, read transposed */
    size_t es;
} tcopy_job;

static void tcopy_range(void *arg, int64_t begin, int64_t end)
{
    const tcopy_job *j = arg;
    int nd = j->out->ndim;
    for (int64_t t = begin; t < end; t++) {
        int64_t per = j->tiles_r * j->tiles_c, b = t / per, tr = (t % per) / j->tiles_c, tc = t % j->tiles_c;
        const char *src = j->in->data;
        char *dst = (char *)j->out->data + (size_t)(b * j->R * j->C) * j->es;
        for (int d = nd - 3; d >= 0; d--) {           /* the batch element b of the source */
            int64_t k = b % j->in->sizes[d];
            b /= j->in->sizes[d];
            src += k * j->in->strides[d] * (int64_t)j->es;
        }
        int64_t r0 = tr * TILE, c0 = tc * TILE, r1 = r0 + TILE < j->R ? r0 + TILE : j->R, c1 = c0 + TILE < j->C ? c0 + TILE : j->C;
        if (j->es == 4)
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) ((uint32_t *)dst)[r * j->C + c] = ((const uint32_t *)src)[c * j->R + r];
        else
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++) ((uint64_t *)dst)[r * j->C + c] = ((const uint64_t *)src)[c * j->R + r];
    }
}

/* 1 (and the copy's status in *st) when the call is such a transpose */
static int transposed_copy(const nnr_op_call *call, int *st)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    int nd = out->ndim;
    size_t es = nnr_dtype_nbytes(out->dtype);
    if (in->dtype != out->dtype || (es != 4 && es != 8) || nd < 2 || in->ndim != nd || !nnr_desc_is_contiguous(out)) return 0;
    int64_t R = out->sizes[nd - 2], C = out->sizes[nd - 1];
    if (R < TILE || C < TILE || in->strides[nd - 2] != 1 || in->strides[nd - 1] != R) return 0;
    for (int d = 0; d < nd; d++) if (in->sizes[d] != out->sizes[d]) return 0;
    int64_t batch = 1;
    for (int d = 0; d < nd - 2; d++) batch *= out->sizes[d];
    tcopy_job j = {in, out, R, C, (R + TILE - 1) / TILE, (C + TILE - 1) / TILE, es};
    int64_t tiles = batch * j.tiles_r * j.tiles_c;
    if ((double)batch * (double)R * (double)C < 65536.0) { tcopy_range(&j, 0, tiles); *st = NNR_OK; }
    else *st = cpu_parallel_for(tiles, 1, tcopy_range, &j);
    return 1;
}

int cpu_copy(const nnr_op_call *call)
{
    int st;
    if (transposed_copy(call, &st)) return st;
    ew_ctx c = {.in_dtype = call->inputs[0]->dtype, .out_dtype = call->outputs[0]->dtype};
    return run_elementwise(call, copy_row, &c);
}

static void fill_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    unsigned char v[8];
    nnr_store_f64(c->out_dtype, v, c->s0);
    size_t es = nnr_dtype_nbytes(c->out_dtype);
    if (es == 4) { uint32_t x; memcpy(&x, v, 4); for (int64_t i = 0; i < n; i++) *(uint32_t *)(p[0] + i * s[0]) = x; }
    else if (es == 8) { uint64_t x; memcpy(&x, v, 8); for (int64_t i = 0; i < n; i++) *(uint64_t *)(p[0] + i * s[0]) = x; }
    else if (es == 2) { uint16_t x; memcpy(&x, v, 2); for (int64_t i = 0; i < n; i++) *(uint16_t *)(p[0] + i * s[0]) = x; }
    else if (s[0] == 1) memset(p[0], v[0], (size_t)n);
    else for (int64_t i = 0; i < n; i++) *(uint8_t *)(p[0] + i * s[0]) = v[0];
}

int cpu_fill(const nnr_op_call *call)
{
    ew_ctx c = {.out_dtype = call->outputs[0]->dtype, .s0 = call->params->f[0]};
    return run_elementwise(call, fill_row, &c);
}

int cpu_arange(const nnr_op_call *call)
{
    const nnr_tensor_desc *o = call->outputs[0];
    double start = call->params->f[0], step = call->params->f[1];
    int64_t es = (int64_t)nnr_dtype_nbytes(o->dtype);
    for (int64_t k = 0; k < o->sizes[0]; k++)
        nnr_store_f64(o->dtype, (char *)o->data + k * o->strides[0] * es, start + (double)k * step);
    return NNR_OK;
}

/* ---------------- ACTIVATION and ACTIVATION_GRAD (plugin.h) ----------------
 * f32 and the half types (through f32 chunks) on vmath.c's vector code, contiguous in place and
 * strided through chunk buffers; f64 one element at a time. Operand 0 is the output, then x (or g, x). */
static void activation_row(void *vc, int64_t n, char **p, const int64_t *s)
{
    const ew_ctx *c = vc;
    int kind = c->flags, grad = c->nin == 2, dt = c->out_dtype;
    if (dt == NNR_F64) {
        for (int64_t i = 0; i < n; i++) {
            double x = *(const double *)(p[grad ? 2 : 1] + i * s[grad ? 2 : 1]);
            double g = grad ? *(const double *)(p[1] + i * s[1]) : 0;
            *(double *)(p[0] + i * s[0]) = grad ? cpu_activation_grad_d(kind, g, x, c->s0, c->s1) : cpu_activation_d(kind, x, c->s0, c->s1);
        }
        return;
    }
    float a = (float)c->s0, b = (float)c->s1;
    if (dt == NNR_F32 && s[0] == 4 && s[1] == 4 && (!grad || s[2] == 4)) {
        cpu_activation_f32(kind, n, (float *)p[0], grad ? (const float *)p[1] : NULL, (const float *)p[grad ? 2 : 1], a, b);
        return;
    }
    for (int64_t at = 0; at < n; at += CPU_CHUNK) {
        int64_t m = n - at < CPU_CHUNK ? n - at : CPU_CHUNK;
        float x[CPU_CHUNK], g[CPU_CHUNK];
        int ix = grad ? 2 : 1;
        if (dt == NNR_F32) {
            for (int64_t i = 0; i < m; i++) x[i] = *(const float *)(p[ix] + (at + i) * s[ix]);
            if (grad) for (int64_t i = 0; i < m; i++) g[i] = *(const float *)(p[1] + (at + i) * s[1]);
        } else {
            load_row_half_f32(dt, p[ix] + at * s[ix], s[ix], m, x);
            if (grad) load_row_half_f32(dt, p[1] + at * s[1], s[1], m, g);
        }
        cpu_activation_f32(kind, m, x, grad ? g : NULL, x, a, b);
        if (dt == NNR_F32) for (int64_t i = 0; i < m; i++) *(float *)(p[0] + (at + i) * s[0]) = x[i];
        else store_row_half_f32(dt, p[0] + at * s[0], s[0], m, x);
    }
}

int cpu_activation(const nnr_op_call *call)
{
    int kind = (int)call->params->i[0];
    if (kind < 1 || kind >= NNR_ACT_COUNT) return cpu_error(NNR_ERR_INVALID, "activation: kind %d is not one (1..%d)", kind, NNR_ACT_COUNT - 1);
    ew_ctx c = {.op = (int)call->op, .in_dtype = call->inputs[0]->dtype, .out_dtype = call->outputs[0]->dtype, .nin = call->n_inputs,
                .s0 = call->params->f[0], .s1 = call->params->f[1], .flags = kind};
    return run_elementwise(call, activation_row, &c);
}

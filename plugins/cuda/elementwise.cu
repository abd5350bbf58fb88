/* Elementwise kernels: unary, binary (tensor-tensor and tensor-scalar), where,
 * clamp, copy (casts), fill, arange, the Philox random fills, and the bias +
 * relu epilogue of linear. One generic strided kernel per family (any dtype,
 * any strides, broadcasting by zero strides) plus a float4 path for the
 * contiguous f32 case that training spends its time in. Math is in float for
 * f32/f16/bf16, double for f64 and int64 for integer dtypes, as on the cpu. */
#include <math.h>
#include "dtype.cuh"
#include "nnr/philox.h"

void cu_strided_init(cu_strided *s, int nops, const nnr_tensor_desc *const *d)
{
    s->nops = nops;
    int n = 0;
    for (int i = 0; i < d[0]->ndim; i++) {
        if (d[0]->sizes[i] == 1) continue;          /* size-1 dims carry no offset */
        s->sizes[n] = d[0]->sizes[i];
        for (int k = 0; k < nops; k++) s->strides[k][n] = d[k]->strides[i];
        n++;
    }
    /* merge dim j into j-1 when, for every operand, stride[j-1] == stride[j] * size[j] */
    int m = 0;
    for (int j = 0; j < n; j++) {
        int merge = m > 0;
        for (int k = 0; k < nops && merge; k++) merge = s->strides[k][m - 1] == s->strides[k][j] * s->sizes[j];
        if (merge) {
            s->sizes[m - 1] *= s->sizes[j];
            for (int k = 0; k < nops; k++) s->strides[k][m - 1] = s->strides[k][j];
        } else {
            s->sizes[m] = s->sizes[j];
            for (int k = 0; k < nops; k++) s->strides[k][m] = s->strides[k][j];
            m++;
        }
    }
    s->ndim = m;
    for (int k = 0; k < nops; k++) { s->base[k] = (char *)d[k]->data; s->dtype[k] = d[k]->dtype; }
}

static int is_integral(int dt) { return dt == NNR_I8 || dt == NNR_U8 || dt == NNR_I32 || dt == NNR_I64 || dt == NNR_BOOL; }

/* ---------------- scalar math ---------------- */

template <typename T> __device__ __forceinline__ T cu_sigmoid(T x) { return x >= 0 ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x)); }

template <typename T> __device__ __forceinline__ T unary_f(int op, T x)
{
    switch (op) {
    case NNR_OP_NEG: return -x;
    case NNR_OP_ABS: return fabs(x);
    case NNR_OP_EXP: return exp(x);
    case NNR_OP_LOG: return log(x);
    case NNR_OP_SQRT: return sqrt(x);
    case NNR_OP_TANH: return tanh(x);
    case NNR_OP_SIGMOID: return cu_sigmoid(x);
    case NNR_OP_RELU: return x > 0 ? x : (x != x ? x : T(0));
    case NNR_OP_SIN: return sin(x);
    case NNR_OP_COS: return cos(x);
    case NNR_OP_SIGN: return x > 0 ? T(1) : x < 0 ? T(-1) : T(0);     /* sign(nan) = 0, as PyTorch */
    case NNR_OP_RECIPROCAL: return T(1) / x;
    case NNR_OP_LOGICAL_NOT: return x == 0;
    case NNR_OP_ERF: return erf(x);
    case NNR_OP_GELU: return T(0.5) * x * (T(1) + erf(x * T(0.7071067811865476)));
    case NNR_OP_FLOOR: return floor(x);
    case NNR_OP_CEIL: return ceil(x);
    case NNR_OP_ROUND: return rint(x);      /* half to even, as the cpu */
    case NNR_OP_TRUNC: return trunc(x);
    case NNR_OP_ISNAN: return x != x;
    case NNR_OP_ISINF: return isinf(x) ? T(1) : T(0);
    case NNR_OP_ISFINITE: return isfinite(x) ? T(1) : T(0);
    }
    return 0;
}

__device__ __forceinline__ int64_t unary_i(int op, int64_t x)
{
    switch (op) {
    case NNR_OP_NEG: return (int64_t)(0 - (uint64_t)x);
    case NNR_OP_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    case NNR_OP_RELU: return x > 0 ? x : 0;
    case NNR_OP_SIGN: return (x > 0) - (x < 0);
    case NNR_OP_LOGICAL_NOT: return x == 0;
    case NNR_OP_FLOOR: case NNR_OP_CEIL: case NNR_OP_ROUND: case NNR_OP_TRUNC: return x;
    case NNR_OP_ISNAN: case NNR_OP_ISINF: return 0;
    case NNR_OP_ISFINITE: return 1;
    }
    return 0;
}

template <typename T> __device__ __forceinline__ T binary_f(int op, T a, T b)
{
    switch (op) {
    case NNR_OP_ADD: return a + b;
    case NNR_OP_SUB: return a - b;
    case NNR_OP_MUL: return a * b;
    case NNR_OP_DIV: return a / b;
    case NNR_OP_POW: return pow(a, b);
    case NNR_OP_MAXIMUM: return (a != a || b != b) ? (T)NAN : (a > b ? a : b);
    case NNR_OP_MINIMUM: return (a != a || b != b) ? (T)NAN : (a < b ? a : b);
    case NNR_OP_EQ: return a == b;
    case NNR_OP_NE: return a != b;
    case NNR_OP_LT: return a < b;
    case NNR_OP_LE: return a <= b;
    case NNR_OP_GT: return a > b;
    case NNR_OP_GE: return a >= b;
    case NNR_OP_LOGICAL_AND: return a != 0 && b != 0;
    case NNR_OP_LOGICAL_OR: return a != 0 || b != 0;
    case NNR_OP_RELU_GRAD: return b > 0 ? a : T(0);
    case NNR_OP_GELU_GRAD: return a * (T(0.5) * (T(1) + erf(b * T(0.7071067811865476))) + b * T(0.3989422804014327) * exp(T(-0.5) * b * b));
    }
    return 0;
}

__device__ __forceinline__ int64_t ipow(int64_t base, int64_t e)
{
    if (e < 0) return base == 1 ? 1 : base == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)base;
    while (e) { if (e & 1) r *= b; b *= b; e >>= 1; }
    return (int64_t)r;
}

__device__ __forceinline__ int64_t binary_i(int op, int64_t a, int64_t b)
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

/* ---------------- generic strided kernels ---------------- */

#define GRID_LOOP(i, n) for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

template <typename T> __device__ __forceinline__ T ld_t(int dt, const char *p);
template <> __device__ __forceinline__ float ld_t<float>(int dt, const char *p)
{
    return dt == NNR_F32 ? *(const float *)p : (float)ld_f64(dt, p);
}
template <> __device__ __forceinline__ double ld_t<double>(int dt, const char *p) { return ld_f64(dt, p); }

/* mode: 0 float math in T, 1 integer math */
template <typename T>
__global__ void k_unary(cu_strided s, int64_t n, int op, int integral)
{
    GRID_LOOP(i, n) {
        char *o = s.base[0] + st_offset(s, 0, i);
        const char *x = s.base[1] + st_offset(s, 1, i);
        if (integral) st_i64(s.dtype[0], o, unary_i(op, ld_i64(s.dtype[1], x)));
        else st_f64(s.dtype[0], o, (double)unary_f<T>(op, ld_t<T>(s.dtype[1], x)));
    }
}

/* nin 2: a (op 1) and b (op 2); nin 1: the other operand is the scalar sc, on the left when first */
template <typename T>
__global__ void k_binary(cu_strided s, int64_t n, int op, int integral, int nin, double sc, int first)
{
    GRID_LOOP(i, n) {
        char *o = s.base[0] + st_offset(s, 0, i);
        const char *a = s.base[1] + st_offset(s, 1, i);
        if (integral) {
            int64_t x = ld_i64(s.dtype[1], a), y = nin == 2 ? ld_i64(s.dtype[2], s.base[2] + st_offset(s, 2, i)) : cu_d2i(sc);
            if (nin == 1 && first) { int64_t t = x; x = y; y = t; }
            st_i64(s.dtype[0], o, binary_i(op, x, y));
        } else {
            T x = ld_t<T>(s.dtype[1], a), y = nin == 2 ? ld_t<T>(s.dtype[2], s.base[2] + st_offset(s, 2, i)) : (T)sc;
            if (nin == 1 && first) { T t = x; x = y; y = t; }
            st_f64(s.dtype[0], o, (double)binary_f<T>(op, x, y));
        }
    }
}

__global__ void k_unary_f32(const float *__restrict__ x, float *__restrict__ y, int64_t n, int op)
{
    int64_t n4 = n / 4;
    const float4 *x4 = (const float4 *)x;
    float4 *y4 = (float4 *)y;
    GRID_LOOP(i, n4) {
        float4 v = x4[i];
        v.x = unary_f<float>(op, v.x); v.y = unary_f<float>(op, v.y); v.z = unary_f<float>(op, v.z); v.w = unary_f<float>(op, v.w);
        y4[i] = v;
    }
    GRID_LOOP(i, n - n4 * 4) y[n4 * 4 + i] = unary_f<float>(op, x[n4 * 4 + i]);
}

/* contiguous f32: b null means the scalar sc (left when first) */
__global__ void k_binary_f32(const float *__restrict__ a, const float *__restrict__ b, float *__restrict__ y, int64_t n, int op,
                             float sc, int first)
{
    int64_t n4 = n / 4;
    GRID_LOOP(i, n4) {
        float4 u = ((const float4 *)a)[i], v = b ? ((const float4 *)b)[i] : make_float4(sc, sc, sc, sc), r;
        if (!b && first) { float4 t = u; u = v; v = t; }
        r.x = binary_f<float>(op, u.x, v.x); r.y = binary_f<float>(op, u.y, v.y);
        r.z = binary_f<float>(op, u.z, v.z); r.w = binary_f<float>(op, u.w, v.w);
        ((float4 *)y)[i] = r;
    }
    GRID_LOOP(i, n - n4 * 4) {
        int64_t k = n4 * 4 + i;
        float u = a[k], v = b ? b[k] : sc;
        if (!b && first) { float t = u; u = v; v = t; }
        y[k] = binary_f<float>(op, u, v);
    }
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static int launch_unary_binary(cu_device *d, const nnr_op_call *call, int binary)
{
    const nnr_tensor_desc *o = call->outputs[0];
    int64_t n = nnr_desc_numel(o);
    if (n == 0) return NNR_OK;
    int op = (int)call->op, in_dt = call->inputs[0]->dtype;
    int nin = call->n_inputs;
    double sc = binary && nin == 1 ? call->params->f[0] : 0;
    int first = binary && nin == 1 ? call->params->i[0] != 0 : 0;
    int all_f32 = o->dtype == NNR_F32 && in_dt == NNR_F32 && (nin < 2 || call->inputs[1]->dtype == NNR_F32);
    int contig = nnr_desc_is_contiguous(o) && aligned16(o->data);
    for (int k = 0; k < nin && contig; k++)
        contig = nnr_desc_is_contiguous(call->inputs[k]) && nnr_desc_numel(call->inputs[k]) == n && aligned16(call->inputs[k]->data);
    unsigned blocks = cu_blocks(n / 4 + 1, 256);
    if (all_f32 && contig) {
        if (binary)
            k_binary_f32<<<blocks, 256, 0, d->stream>>>((const float *)call->inputs[0]->data,
                                                        nin == 2 ? (const float *)call->inputs[1]->data : NULL, (float *)o->data, n, op,
                                                        (float)sc, first);
        else k_unary_f32<<<blocks, 256, 0, d->stream>>>((const float *)call->inputs[0]->data, (float *)o->data, n, op);
        CU_LAUNCHED(binary ? "binary" : "unary");
        return NNR_OK;
    }
    cu_strided s;
    const nnr_tensor_desc *ops[3] = {o, call->inputs[0], nin > 1 ? call->inputs[1] : NULL};
    cu_strided_init(&s, 1 + nin, ops);
    int integral = is_integral(in_dt);
    int dbl = in_dt == NNR_F64;
    blocks = cu_blocks(n, 256);
    if (binary) {
        if (dbl || integral) k_binary<double><<<blocks, 256, 0, d->stream>>>(s, n, op, integral, nin, sc, first);
        else k_binary<float><<<blocks, 256, 0, d->stream>>>(s, n, op, 0, nin, sc, first);
    } else {
        if (dbl || integral) k_unary<double><<<blocks, 256, 0, d->stream>>>(s, n, op, integral);
        else k_unary<float><<<blocks, 256, 0, d->stream>>>(s, n, op, 0);
    }
    CU_LAUNCHED(binary ? "binary" : "unary");
    return NNR_OK;
}

int cu_unary(cu_device *d, const nnr_op_call *call) { return launch_unary_binary(d, call, 0); }
int cu_binary(cu_device *d, const nnr_op_call *call) { return launch_unary_binary(d, call, 1); }

/* where(cond, a, b): operands out, cond, then a and b unless flags say they are the scalars s0/s1 */
__global__ void k_where(cu_strided s, int64_t n, int flags, double s0, double s1)
{
    int has_a = !(flags & 1), has_b = !(flags & 2), ia = 2, ib = has_a ? 3 : 2;
    int integral = s.dtype[0] == NNR_I8 || s.dtype[0] == NNR_U8 || s.dtype[0] == NNR_I32 || s.dtype[0] == NNR_I64 || s.dtype[0] == NNR_BOOL;
    GRID_LOOP(i, n) {
        char *o = s.base[0] + st_offset(s, 0, i);
        int c = ld_i64(s.dtype[1], s.base[1] + st_offset(s, 1, i)) != 0;
        if (integral) {
            int64_t v = c ? (has_a ? ld_i64(s.dtype[ia], s.base[ia] + st_offset(s, ia, i)) : cu_d2i(s0))
                          : (has_b ? ld_i64(s.dtype[ib], s.base[ib] + st_offset(s, ib, i)) : cu_d2i(s1));
            st_i64(s.dtype[0], o, v);
        } else {
            double v = c ? (has_a ? ld_f64(s.dtype[ia], s.base[ia] + st_offset(s, ia, i)) : s0)
                         : (has_b ? ld_f64(s.dtype[ib], s.base[ib] + st_offset(s, ib, i)) : s1);
            st_f64(s.dtype[0], o, v);
        }
    }
}

int cu_where(cu_device *d, const nnr_op_call *call)
{
    int64_t n = nnr_desc_numel(call->outputs[0]);
    if (n == 0) return NNR_OK;
    const nnr_tensor_desc *ops[4] = {call->outputs[0]};
    for (int k = 0; k < call->n_inputs; k++) ops[1 + k] = call->inputs[k];
    cu_strided s;
    cu_strided_init(&s, 1 + call->n_inputs, ops);
    k_where<<<cu_blocks(n, 256), 256, 0, d->stream>>>(s, n, (int)call->params->i[0], call->params->f[0], call->params->f[1]);
    CU_LAUNCHED("where");
    return NNR_OK;
}

__global__ void k_clamp(cu_strided s, int64_t n, int flags, double lo, double hi, int integral)
{
    GRID_LOOP(i, n) {
        char *o = s.base[0] + st_offset(s, 0, i);
        const char *x = s.base[1] + st_offset(s, 1, i);
        if (integral) {
            int64_t v = ld_i64(s.dtype[1], x);
            if ((flags & 1) && v < cu_d2i(ceil(lo))) v = cu_d2i(ceil(lo));
            if ((flags & 2) && v > cu_d2i(floor(hi))) v = cu_d2i(floor(hi));
            st_i64(s.dtype[0], o, v);
        } else {
            double v = ld_f64(s.dtype[1], x);
            if (v == v) {
                if ((flags & 1) && v < lo) v = lo;
                if ((flags & 2) && v > hi) v = hi;
            }
            st_f64(s.dtype[0], o, v);
        }
    }
}

int cu_clamp(cu_device *d, const nnr_op_call *call)
{
    int64_t n = nnr_desc_numel(call->outputs[0]);
    if (n == 0) return NNR_OK;
    const nnr_tensor_desc *ops[2] = {call->outputs[0], call->inputs[0]};
    cu_strided s;
    cu_strided_init(&s, 2, ops);
    k_clamp<<<cu_blocks(n, 256), 256, 0, d->stream>>>(s, n, (int)call->params->i[0], call->params->f[0], call->params->f[1],
                                                      is_integral(call->outputs[0]->dtype));
    CU_LAUNCHED("clamp");
    return NNR_OK;
}

/* ACTIVATION and ACTIVATION_GRAD (ABI 1.9; plugin.h has the formulas), in T (float for f32 and the half
 * types, double for f64), any strides */
template <typename T> __device__ __forceinline__ T cu_softplus(T z) { return (z > 0 ? z : T(0)) + log1p(exp(-fabs(z))); }
template <typename T> __device__ __forceinline__ T act_f(int kind, T x, T a, T b)
{
    switch (kind) {
    case NNR_ACT_SILU: return x * cu_sigmoid(x);
    case NNR_ACT_SOFTPLUS: return a * x > b ? x : cu_softplus(a * x) / a;
    case NNR_ACT_ELU: return x > 0 ? b * x : b * a * expm1(x);
    case NNR_ACT_LEAKY_RELU: return x > 0 ? x : a * x;
    case NNR_ACT_MISH: return x * tanh(cu_softplus(x));
    default: { T t = x + T(3) > 0 ? x + T(3) : T(0); t = t < T(6) ? t : T(6); return x * t / T(6); }
    }
}
template <typename T> __device__ __forceinline__ T act_grad_f(int kind, T g, T x, T a, T b)
{
    switch (kind) {
    case NNR_ACT_SILU: { T sg = cu_sigmoid(x); return g * sg * (T(1) + x * (T(1) - sg)); }
    case NNR_ACT_SOFTPLUS: return a * x > b ? g : g * cu_sigmoid(a * x);
    case NNR_ACT_ELU: return x > 0 ? g * b : g * (b * a * exp(x));
    case NNR_ACT_LEAKY_RELU: return x > 0 ? g : g * a;
    case NNR_ACT_MISH: { T t = tanh(cu_softplus(x)); return g * (t + x * cu_sigmoid(x) * (T(1) - t * t)); }
    default: return x < T(-3) ? T(0) : x <= T(3) ? g * (x / T(3) + T(0.5)) : g;
    }
}

template <typename T>
__global__ void k_activation(cu_strided s, int64_t n, int kind, int grad, double a, double b)
{
    GRID_LOOP(i, n) {
        char *o = s.base[0] + st_offset(s, 0, i);
        T x = ld_t<T>(s.dtype[grad ? 2 : 1], s.base[grad ? 2 : 1] + st_offset(s, grad ? 2 : 1, i));
        T v = grad ? act_grad_f<T>(kind, ld_t<T>(s.dtype[1], s.base[1] + st_offset(s, 1, i)), x, (T)a, (T)b) : act_f<T>(kind, x, (T)a, (T)b);
        if (s.dtype[0] == NNR_F32) *(float *)o = (float)v;
        else st_f64(s.dtype[0], o, (double)v);
    }
}

int cu_activation(cu_device *d, const nnr_op_call *call)
{
    int kind = (int)call->params->i[0], grad = call->op == NNR_OP_ACTIVATION_GRAD;
    if (kind < 1 || kind >= NNR_ACT_COUNT) return cu_errorf(NNR_ERR_INVALID, "activation: kind %d is not one (1..%d)", kind, NNR_ACT_COUNT - 1);
    int64_t n = nnr_desc_numel(call->outputs[0]);
    if (n == 0) return NNR_OK;
    const nnr_tensor_desc *ops[3] = {call->outputs[0], call->inputs[0], grad ? call->inputs[1] : NULL};
    cu_strided s;
    cu_strided_init(&s, grad ? 3 : 2, ops);
    if (call->outputs[0]->dtype == NNR_F64)
        k_activation<double><<<cu_blocks(n, 256), 256, 0, d->stream>>>(s, n, kind, grad, call->params->f[0], call->params->f[1]);
    else
        k_activation<float><<<cu_blocks(n, 256), 256, 0, d->stream>>>(s, n, kind, grad, call->params->f[0], call->params->f[1]);
    CU_LAUNCHED("activation");
    return NNR_OK;
}

/* a cast: through int64 between integer dtypes, through double otherwise (as the cpu does) */
__global__ void k_copy(cu_strided s, int64_t n, int integral)
{
    GRID_LOOP(i, n) {
        char *o = s.base[0] + st_offset(s, 0, i);
        const char *x = s.base[1] + st_offset(s, 1, i);
        if (integral) st_i64(s.dtype[0], o, ld_i64(s.dtype[1], x));
        else st_f64(s.dtype[0], o, ld_f64(s.dtype[1], x));
    }
}

int cu_copy_op(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *o = call->outputs[0], *x = call->inputs[0];
    int64_t n = nnr_desc_numel(o);
    if (n == 0) return NNR_OK;
    if (o->dtype == x->dtype && nnr_desc_is_contiguous(o) && nnr_desc_is_contiguous(x)) {
        CU_CHECK(cudaMemcpyAsync(o->data, x->data, (size_t)n * nnr_dtype_nbytes(o->dtype), cudaMemcpyDeviceToDevice, d->stream), "copy");
        return NNR_OK;
    }
    const nnr_tensor_desc *ops[2] = {o, x};
    cu_strided s;
    cu_strided_init(&s, 2, ops);
    k_copy<<<cu_blocks(n, 256), 256, 0, d->stream>>>(s, n, is_integral(o->dtype) && is_integral(x->dtype));
    CU_LAUNCHED("copy");
    return NNR_OK;
}

__global__ void k_fill(cu_strided s, int64_t n, double v)
{
    GRID_LOOP(i, n) st_f64(s.dtype[0], s.base[0] + st_offset(s, 0, i), v);
}

__global__ void k_fill_f32(float *y, int64_t n, float v) { GRID_LOOP(i, n) y[i] = v; }

int cu_fill(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *o = call->outputs[0];
    int64_t n = nnr_desc_numel(o);
    if (n == 0) return NNR_OK;
    double v = call->params->f[0];
    if (v == 0 && nnr_desc_is_contiguous(o) && !(o->dtype == NNR_F32 && signbit(v))) {
        CU_CHECK(cudaMemsetAsync(o->data, 0, (size_t)n * nnr_dtype_nbytes(o->dtype), d->stream), "fill");
        return NNR_OK;
    }
    if (o->dtype == NNR_F32 && nnr_desc_is_contiguous(o)) k_fill_f32<<<cu_blocks(n, 256), 256, 0, d->stream>>>((float *)o->data, n, (float)v);
    else {
        const nnr_tensor_desc *ops[1] = {o};
        cu_strided s;
        cu_strided_init(&s, 1, ops);
        k_fill<<<cu_blocks(n, 256), 256, 0, d->stream>>>(s, n, v);
    }
    CU_LAUNCHED("fill");
    return NNR_OK;
}

__global__ void k_arange(char *base, int dt, int64_t stride, int64_t n, double start, double step)
{
    GRID_LOOP(k, n) st_f64(dt, base + k * stride * dt_size(dt), start + (double)k * step);
}

int cu_arange(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *o = call->outputs[0];
    int64_t n = o->ndim ? o->sizes[0] : 1;
    if (n == 0) return NNR_OK;
    k_arange<<<cu_blocks(n, 256), 256, 0, d->stream>>>((char *)o->data, o->dtype, o->ndim ? o->strides[0] : 1, n, call->params->f[0],
                                                       call->params->f[1]);
    CU_LAUNCHED("arange");
    return NNR_OK;
}

/* ---------------- random fills: Philox4x32-10 (nnr/philox.h), the cpu backend's numbers exactly ---------------- */

__global__ void k_random(char *base, int dt, int64_t n, int kind, uint64_t seed, uint64_t offset, double a, double b)
{
    int es = dt_size(dt);
    GRID_LOOP(blk, (n + 3) / 4) {
        uint32_t w[4];
        nnr_philox(offset / 4 + (uint64_t)blk, seed, w);
        double v[4];
        if (kind == NNR_OP_RAND_NORMAL) {
            for (int j = 0; j < 4; j += 2) {
                double u1 = ((double)w[j] + 1.0) * 0x1p-32, u2 = (double)w[j + 1] * 0x1p-32;
                double r = sqrt(-2.0 * log(u1));
                v[j] = a + b * r * cos(2 * M_PI * u2);
                v[j + 1] = a + b * r * sin(2 * M_PI * u2);
            }
        } else if (kind == NNR_OP_RAND_UNIFORM) {
            for (int j = 0; j < 4; j++) {
                double u = dt == NNR_F64 ? (double)w[j] * 0x1p-32 : (double)(w[j] >> 8) * 0x1p-24;
                v[j] = a + (b - a) * u;
                if (v[j] >= b) v[j] = nextafter(b, a);
            }
        } else {
            double range = floor(b) - ceil(a);
            uint64_t span = range >= 1 ? (uint64_t)range : 1;
            for (int j = 0; j < 4; j++) {
                uint64_t r = span <= 0xffffffffu ? (((uint64_t)w[j] * span) >> 32) : (((uint64_t)w[j] << 32) | w[(j + 1) & 3]) % span;
                v[j] = ceil(a) + (double)r;
            }
        }
        for (int j = 0; j < 4; j++) {
            int64_t k = blk * 4 + j;
            if (k >= n) break;
            st_f64(dt, base + k * es, v[j]);
        }
    }
}

int cu_random(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *o = call->outputs[0];
    int64_t n = nnr_desc_numel(o);
    if (n == 0) return NNR_OK;
    k_random<<<cu_blocks((n + 3) / 4, 256), 256, 0, d->stream>>>((char *)o->data, o->dtype, n, (int)call->op,
                                                                 (uint64_t)call->params->i[0], (uint64_t)call->params->i[1],
                                                                 call->params->f[0], call->params->f[1]);
    CU_LAUNCHED("random");
    return NNR_OK;
}

/* ---------------- linear's epilogue ---------------- */

template <typename T>
__global__ void k_bias_relu(T *y, const T *bias, int64_t M, int64_t N, int relu)
{
    GRID_LOOP(i, M * N) {
        float v = (float)y[i];
        if (bias) v += (float)bias[i % N];
        if (relu) v = v > 0 ? v : (v != v ? v : 0.0f);
        y[i] = (T)v;
    }
}

__global__ void k_bias_relu_f64(double *y, const double *bias, int64_t M, int64_t N, int relu)
{
    GRID_LOOP(i, M * N) {
        double v = y[i];
        if (bias) v += bias[i % N];
        if (relu) v = v > 0 ? v : (v != v ? v : 0.0);
        y[i] = v;
    }
}

int cu_bias_relu(cu_device *d, int dt, void *y, const void *bias, int64_t M, int64_t N, int relu)
{
    if (M * N == 0 || (!bias && !relu)) return NNR_OK;
    unsigned blocks = cu_blocks(M * N, 256);
    switch (dt) {
    case NNR_F32: k_bias_relu<float><<<blocks, 256, 0, d->stream>>>((float *)y, (const float *)bias, M, N, relu); break;
    case NNR_F64: k_bias_relu_f64<<<blocks, 256, 0, d->stream>>>((double *)y, (const double *)bias, M, N, relu); break;
    case NNR_F16: k_bias_relu<__half><<<blocks, 256, 0, d->stream>>>((__half *)y, (const __half *)bias, M, N, relu); break;
    case NNR_BF16:
        k_bias_relu<__nv_bfloat16><<<blocks, 256, 0, d->stream>>>((__nv_bfloat16 *)y, (const __nv_bfloat16 *)bias, M, N, relu);
        break;
    default: return cu_errorf(NNR_ERR_UNSUPPORTED, "linear: dtype %d", dt);
    }
    CU_LAUNCHED("linear");
    return NNR_OK;
}

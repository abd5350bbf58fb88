/* Unary elementwise ops (neg, abs, exp, log, sqrt, tanh, sigmoid, relu, sin, cos, sign, reciprocal,
 * logical_not, erf, gelu; floor, ceil, round, trunc; isnan, isinf, isfinite): the front ends, what they
 * record, and their derivatives. */
#include <math.h>
#include <stdio.h>
#include "ops/internal.h"

static int is_unary(int op) { return nnr_op_category(op) == NNR_OPCAT_UNARY; }

/* which of input (1) and output (2) an op's derivative reads */
static int unary_needs(int op)
{
    switch (op) {
    case NNR_OP_ABS: case NNR_OP_LOG: case NNR_OP_RELU: case NNR_OP_SIN: case NNR_OP_COS: case NNR_OP_ERF: case NNR_OP_GELU: return 1;
    case NNR_OP_EXP: case NNR_OP_SQRT: case NNR_OP_TANH: case NNR_OP_SIGMOID: case NNR_OP_RECIPROCAL: return 2;
    }
    return 0;
}

/* g (Phi(x) + x phi(x)) as recorded ops, so that a backward with create_graph can be differentiated
 * again (the fused GELU_GRAD has no derivative of its own) */
static nnr_tensor *gelu_grad_recorded(const nnr_tensor *g, const nnr_tensor *x)
{
    nnr_tensor *xs = nnr_mul_scalar(x, 0.7071067811865476), *e = xs ? nnr_unary(NNR_OP_ERF, xs) : NULL;
    nnr_tensor *phi2 = e ? nnr_binary_scalar(NNR_OP_ADD, e, 1, 0) : NULL, *cdf = phi2 ? nnr_mul_scalar(phi2, 0.5) : NULL;
    nnr_tensor *sq = nnr_mul(x, x), *nsq = sq ? nnr_mul_scalar(sq, -0.5) : NULL, *ex = nsq ? nnr_unary(NNR_OP_EXP, nsq) : NULL;
    nnr_tensor *pdf = ex ? nnr_mul_scalar(ex, 0.3989422804014327) : NULL, *xpdf = pdf ? nnr_mul(x, pdf) : NULL;
    nnr_tensor *d = cdf && xpdf ? nnr_binary(NNR_OP_ADD, cdf, xpdf) : NULL, *r = d ? nnr_mul(g, d) : NULL;
    nnr_tensor *all[10] = {xs, e, phi2, cdf, sq, nsq, ex, pdf, xpdf, d};
    nnr_release_all(10, all);
    return r;
}

static int unary_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int needs = unary_needs((int)node->i[0]);
    const nnr_tensor *x = NULL, *y = NULL;
    if (needs == 1 && !(x = nnr_node_saved(node, 0))) return nnr_last_status();
    if (needs == 2 && !(y = nnr_node_saved(node, 0))) return nnr_last_status();
    nnr_tensor *r = NULL, *t = NULL;
    switch ((int)node->i[0]) {
    case NNR_OP_NEG: r = nnr_unary(NNR_OP_NEG, g); break;
    case NNR_OP_ABS: t = nnr_unary(NNR_OP_SIGN, x); r = nnr_mul_into(t, g); break;
    case NNR_OP_EXP: r = nnr_mul(g, y); break;
    case NNR_OP_LOG: r = nnr_binary(NNR_OP_DIV, g, x); break;
    case NNR_OP_SQRT: t = nnr_mul_scalar(y, 2); r = t ? nnr_binary(NNR_OP_DIV, g, t) : NULL; nnr_tensor_release(t); break;
    case NNR_OP_TANH:      /* 1 - y^2 */
        t = nnr_mul(y, y);
        if (t) { nnr_tensor *u = nnr_binary_scalar(NNR_OP_SUB, t, 1, 1); nnr_tensor_release(t); t = u; }
        r = nnr_mul_into(t, g);
        break;
    case NNR_OP_SIGMOID:   /* y (1 - y) */
        t = nnr_binary_scalar(NNR_OP_SUB, y, 1, 1);
        t = nnr_mul_into(t, y);
        r = nnr_mul_into(t, g);
        break;
    case NNR_OP_RELU: r = nnr_binary(NNR_OP_RELU_GRAD, g, x); break;
    case NNR_OP_SIN: t = nnr_unary(NNR_OP_COS, x); r = nnr_mul_into(t, g); break;
    case NNR_OP_COS: t = nnr_unary(NNR_OP_SIN, x); r = nnr_mul_into(t, g); if (r) { t = nnr_unary(NNR_OP_NEG, r); nnr_tensor_release(r); r = t; } break;
    case NNR_OP_SIGN: case NNR_OP_FLOOR: case NNR_OP_CEIL: case NNR_OP_ROUND: case NNR_OP_TRUNC:   /* steps: 0, as PyTorch */
        r = nnr_full(g->dtype, g->ndim, g->sizes, 0.0, g->device);
        break;
    case NNR_OP_ERF: {                         /* 2/sqrt(pi) exp(-x^2) */
        nnr_tensor *sq = nnr_mul(x, x);
        nnr_tensor *e = sq ? nnr_binary_scalar(NNR_OP_MUL, sq, -1, 0) : NULL;
        nnr_tensor *ex = e ? nnr_unary(NNR_OP_EXP, e) : NULL;
        nnr_tensor *sc = ex ? nnr_mul_scalar(ex, 1.1283791670955126) : NULL;
        r = sc ? nnr_mul(sc, g) : NULL;
        nnr_tensor_release(sq); nnr_tensor_release(e); nnr_tensor_release(ex); nnr_tensor_release(sc);
        break;
    }
    case NNR_OP_GELU:         /* Phi(x) + x phi(x): one fused op, or recorded ops under create_graph */
        r = nnr_creating_graph() ? gelu_grad_recorded(g, x) : nnr_binary(NNR_OP_GELU_GRAD, g, x);
        break;
    case NNR_OP_RECIPROCAL:   /* -y^2 */
        t = nnr_mul(y, y);
        t = nnr_mul_into(t, g);
        if (t) { r = nnr_unary(NNR_OP_NEG, t); nnr_tensor_release(t); }
        break;
    default: return nnr_errorf(NNR_ERR_INTERNAL, "backward: op %lld has no derivative", (long long)node->i[0]);
    }
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

static const char *unary_name(int op)
{
    switch (op) {
    case NNR_OP_NEG: return "NegBackward"; case NNR_OP_ABS: return "AbsBackward"; case NNR_OP_EXP: return "ExpBackward";
    case NNR_OP_LOG: return "LogBackward"; case NNR_OP_SQRT: return "SqrtBackward"; case NNR_OP_TANH: return "TanhBackward";
    case NNR_OP_SIGMOID: return "SigmoidBackward"; case NNR_OP_RELU: return "ReluBackward"; case NNR_OP_SIN: return "SinBackward";
    case NNR_OP_COS: return "CosBackward"; case NNR_OP_SIGN: return "SignBackward"; case NNR_OP_RECIPROCAL: return "ReciprocalBackward";
    case NNR_OP_ERF: return "ErfBackward"; case NNR_OP_GELU: return "GeluBackward";
    case NNR_OP_FLOOR: return "FloorBackward"; case NNR_OP_CEIL: return "CeilBackward"; case NNR_OP_ROUND: return "RoundBackward";
    case NNR_OP_TRUNC: return "TruncBackward";
    }
    return NULL;
}

static int record_unary(int op, const nnr_tensor *x, nnr_tensor *out)
{
    const char *name = unary_name(op);
    if (!name) return NNR_OK;                  /* logical_not, isnan, isinf, isfinite: not differentiable */
    nnr_node *node = nnr_node_new(name, unary_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = op;
    int needs = unary_needs(op), st = NNR_OK;
    if (needs == 1) st = nnr_save(node, x, 0);
    if (needs == 2) st = nnr_save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}


/* ---------------- front ends ---------------- */

static int unary_dtype(int op, int dtype, int *out)
{
    switch (op) {
    case NNR_OP_EXP: case NNR_OP_LOG: case NNR_OP_SQRT: case NNR_OP_TANH: case NNR_OP_SIGMOID:
    case NNR_OP_SIN: case NNR_OP_COS: case NNR_OP_RECIPROCAL: case NNR_OP_ERF: case NNR_OP_GELU:
        *out = nnr_dtype_is_float(dtype) ? dtype : NNR_F32;
        return NNR_OK;
    case NNR_OP_LOGICAL_NOT: case NNR_OP_ISNAN: case NNR_OP_ISINF: case NNR_OP_ISFINITE: *out = NNR_BOOL; return NNR_OK;
    case NNR_OP_FLOOR: case NNR_OP_CEIL: case NNR_OP_ROUND: case NNR_OP_TRUNC:   /* integers come out unchanged */
        if (dtype == NNR_BOOL) return nnr_errorf(NNR_ERR_INVALID, "%s: not defined for bool tensors", nnr_op_name(op));
        *out = dtype;
        return NNR_OK;
    case NNR_OP_NEG: case NNR_OP_ABS: case NNR_OP_RELU: case NNR_OP_SIGN:
        if (dtype == NNR_BOOL && op != NNR_OP_SIGN)
            return nnr_errorf(NNR_ERR_INVALID, "%s: not defined for bool tensors", nnr_op_name(op));
        *out = dtype;
        return NNR_OK;
    }
    return nnr_errorf(NNR_ERR_INVALID, "unary: %d is not a unary op", op);
}

nnr_tensor *nnr_unary(int op, const nnr_tensor *a)
{
    int odt = 0;
    if (!is_unary(op)) { nnr_errorf(NNR_ERR_INVALID, "unary: %d is not a unary op", op); return NULL; }
    if (unary_dtype(op, a->dtype, &odt)) return NULL;
    /* math ops compute in the output's float type; the others read the input as is */
    int in_dt = (odt == NNR_BOOL || !nnr_dtype_is_float(odt)) ? a->dtype : odt;
    nnr_tensor *x = nnr_as_dtype(a, in_dt);
    if (!x) return NULL;
    nnr_tensor *r = nnr_run_new(nnr_op_name(op), op, odt, 1, (const nnr_tensor *const *)&x, NULL);
    if (nnr_should_record(1, (const nnr_tensor **)&x)) NNR_RECORD(r, record_unary(op, x, r));
    nnr_tensor_release(x);
    return r;
}

int nnr_unary_(int op, nnr_tensor *a)
{
    int odt = 0;
    if (!is_unary(op)) return nnr_errorf(NNR_ERR_INVALID, "unary_: %d is not a unary op", op);
    if (unary_dtype(op, a->dtype, &odt)) return nnr_last_status();
    if (odt != a->dtype)
        return nnr_errorf(NNR_ERR_INVALID, "%s_: result type %s cannot be stored in place in a %s tensor", nnr_op_name(op),
                          nnr_dtype_name(odt), nnr_dtype_name(a->dtype));
    if (nnr_autograd_check_inplace(nnr_op_name(op), a)) return nnr_last_status();
    if (nnr_check_written(nnr_op_name(op), "_", a)) return nnr_last_status();
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = nnr_clone(a), *r = old ? nnr_unary(op, old) : NULL;
        nnr_tensor_release(old);
        return nnr_inplace_recorded(a, r);
    }
    nnr_tensor_desc d;
    nnr_tensor_desc_of(a, &d);
    const nnr_tensor_desc *in[1] = {&d};
    return nnr_run_descs(nnr_op_name(op), op, a->device, 1, in, &d, NULL);
}


/* ---------------- activations (ACTIVATION, ABI 1.9; plugin.h says each one's formula) ---------------- */

static const char *const act_names[NNR_ACT_COUNT] = {NULL, "silu", "softplus", "elu", "leaky_relu", "mish", "hardswish"};
static const char *const act_nodes[NNR_ACT_COUNT] = {NULL, "SiluBackward", "SoftplusBackward", "EluBackward", "LeakyReluBackward",
                                                     "MishBackward", "HardswishBackward"};

/* g act'(x) as recorded ops, so that a backward with create_graph can be differentiated again (the
 * fused ACTIVATION_GRAD has no derivative of its own); the branches as where()s, each side with g */
static nnr_tensor *activation_grad_recorded(int kind, const nnr_tensor *g, const nnr_tensor *x, double a, double b)
{
    nnr_tensor *t[12] = {0}, *r = NULL;
    switch (kind) {
    case NNR_ACT_SILU:          /* s (1 + x (1 - s)) */
        if ((t[0] = nnr_unary(NNR_OP_SIGMOID, x)) && (t[1] = nnr_binary_scalar(NNR_OP_SUB, t[0], 1, 1)) && (t[2] = nnr_mul(x, t[1])) &&
            (t[3] = nnr_binary_scalar(NNR_OP_ADD, t[2], 1, 0)) && (t[4] = nnr_mul(t[0], t[3])))
            r = nnr_mul(g, t[4]);
        break;
    case NNR_ACT_SOFTPLUS:      /* g where a x > b, else g sigmoid(a x) */
        if ((t[0] = nnr_mul_scalar(x, a)) && (t[1] = nnr_unary(NNR_OP_SIGMOID, t[0])) && (t[2] = nnr_mul(g, t[1])) &&
            (t[3] = nnr_binary_scalar(NNR_OP_GT, t[0], b, 0)))
            r = nnr_where(t[3], g, t[2]);
        break;
    case NNR_ACT_ELU:           /* g b where x > 0, else g a b exp(x) */
        if ((t[0] = nnr_unary(NNR_OP_EXP, x)) && (t[1] = nnr_mul_scalar(t[0], a * b)) && (t[2] = nnr_mul(g, t[1])) &&
            (t[3] = nnr_mul_scalar(g, b)) && (t[4] = nnr_binary_scalar(NNR_OP_GT, x, 0, 0)))
            r = nnr_where(t[4], t[3], t[2]);
        break;
    case NNR_ACT_LEAKY_RELU:    /* g where x > 0, else a g */
        if ((t[0] = nnr_mul_scalar(g, a)) && (t[1] = nnr_binary_scalar(NNR_OP_GT, x, 0, 0))) r = nnr_where(t[1], g, t[0]);
        break;
    case NNR_ACT_MISH: {        /* t + x sigmoid(x) (1 - t^2), t = tanh(softplus(x)) */
        if ((t[0] = nnr_activation(NNR_ACT_SOFTPLUS, x, 1, 20)) && (t[1] = nnr_unary(NNR_OP_TANH, t[0])) && (t[2] = nnr_mul(t[1], t[1])) &&
            (t[3] = nnr_binary_scalar(NNR_OP_SUB, t[2], 1, 1)) && (t[4] = nnr_unary(NNR_OP_SIGMOID, x)) && (t[5] = nnr_mul(x, t[4])) &&
            (t[6] = nnr_mul(t[5], t[3])) && (t[7] = nnr_binary(NNR_OP_ADD, t[1], t[6])))
            r = nnr_mul(g, t[7]);
        break;
    }
    default:                    /* 0 where x < -3; g (x / 3 + 1/2) where x <= 3; g above */
        if ((t[0] = nnr_mul_scalar(x, 1.0 / 3)) && (t[1] = nnr_binary_scalar(NNR_OP_ADD, t[0], 0.5, 0)) && (t[2] = nnr_mul(g, t[1])) &&
            (t[3] = nnr_binary_scalar(NNR_OP_LE, x, 3, 0)) && (t[4] = nnr_where(t[3], t[2], g)) && (t[5] = nnr_binary_scalar(NNR_OP_LT, x, -3, 0)))
            r = nnr_where_scalar(t[5], NULL, 0, t[4], 0);
        break;
    }
    nnr_release_all(12, t);
    return r;
}

static int activation_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0);
    if (!x) return nnr_last_status();
    int kind = (int)node->i[0];
    double a = node->f[0], b = node->f[1];
    nnr_tensor *r = NULL;
    if (nnr_creating_graph()) {
        r = activation_grad_recorded(kind, g, x, a, b);
    } else {
        nnr_tensor *gx = nnr_as_dtype(g, x->dtype);     /* the fused op takes one dtype throughout */
        nnr_op_params p = {.struct_size = sizeof p, .f = {a, b}, .i = {kind}};
        const nnr_tensor *ins[2] = {gx, x};
        r = gx ? nnr_run_new("activation_grad", NNR_OP_ACTIVATION_GRAD, x->dtype, 2, ins, &p) : NULL;
        nnr_tensor_release(gx);
    }
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

nnr_tensor *nnr_activation(int kind, const nnr_tensor *a, double p0, double p1)
{
    if (kind < 1 || kind >= NNR_ACT_COUNT) {
        nnr_errorf(NNR_ERR_INVALID, "activation: kind %d is not one of 1..%d (nnr_activation_kind)", kind, NNR_ACT_COUNT - 1);
        return NULL;
    }
    const char *name = act_names[kind];
    if (p0 != p0 || p1 != p1 || isinf(p0) || isinf(p1)) {
        nnr_errorf(NNR_ERR_INVALID, "%s: its parameters must be finite numbers, got %g and %g", name, p0, p1);
        return NULL;
    }
    if (kind == NNR_ACT_SOFTPLUS && p0 == 0) { nnr_errorf(NNR_ERR_INVALID, "softplus: beta must not be 0 (it divides)"); return NULL; }
    if (a->dtype == NNR_BOOL) { nnr_errorf(NNR_ERR_INVALID, "%s: not defined for bool tensors", name); return NULL; }
    int odt = nnr_dtype_is_float(a->dtype) ? a->dtype : NNR_F32;      /* integers compute in f32, as exp */
    /* below f64 the kernels compute with the parameters as floats: each must stay finite, and a
     * softplus beta must not round to 0 */
    if (odt != NNR_F64 && (fabs(p0) > 3.4028234663852886e38 || fabs(p1) > 3.4028234663852886e38 ||
                           (kind == NNR_ACT_SOFTPLUS && (float)p0 == 0.0f))) {
        nnr_errorf(NNR_ERR_INVALID, "%s: parameters %g and %g do not fit a float, which a %s tensor computes with", name, p0, p1,
                   nnr_dtype_name(odt));
        return NULL;
    }
    nnr_tensor *x = nnr_as_dtype(a, odt);
    if (!x) return NULL;
    nnr_op_params p = {.struct_size = sizeof p, .f = {p0, p1}, .i = {kind}};
    nnr_tensor *r = nnr_run_new(name, NNR_OP_ACTIVATION, odt, 1, (const nnr_tensor *const *)&x, &p);
    if (r && nnr_should_record(1, (const nnr_tensor **)&x)) {
        nnr_node *node = nnr_node_new(act_nodes[kind], activation_backward, 1, (const nnr_tensor **)&x);
        int st = node ? NNR_OK : nnr_last_status();
        if (node) {
            node->double_diff = 1;
            node->i[0] = kind;
            node->f[0] = p0;
            node->f[1] = p1;
            if ((st = nnr_save(node, x, 0))) nnr_node_release(node);
        }
        NNR_RECORD(r, st ? st : nnr_node_finish(r, node, NNR_OK));
    }
    nnr_tensor_release(x);
    return r;
}

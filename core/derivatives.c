/* The derivatives: for every differentiable op, a record_* function that the
 * op calls after computing its result (it makes the node and saves what the
 * backward needs) and a *_backward function that turns the output's gradient
 * into the inputs' gradients with ordinary core ops (recording is off while
 * backward runs). Gradients of broadcast inputs are summed back to the
 * input's shape (sum_to). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "derivatives.h"

/* ---------------- helpers ---------------- */

#define OK_OR_FAIL(x) do { if (!(x)) goto fail; } while (0)

/* g summed over the dims it was broadcast along, then shaped as sizes */
static nnr_tensor *sum_to(const nnr_tensor *g, int ndim, const int64_t *sizes)
{
    int dims[NNR_MAX_DIMS], n = 0, lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (sizes[d - lead] == 1 && g->sizes[d] != 1)) dims[n++] = d;
    if (n == 0) return nnr_reshape(g, ndim, sizes);
    nnr_tensor *s = nnr_reduce(NNR_OP_SUM, g, n, dims, 1, 0);
    if (!s) return NULL;
    nnr_tensor *r = nnr_reshape(s, ndim, sizes);
    nnr_tensor_release(s);
    return r;
}

static nnr_tensor *grad_for_input(nnr_node *node, int k, nnr_tensor *g)
{
    if (!g) return NULL;
    nnr_tensor *r = sum_to(g, node->in[k].ndim, node->in[k].sizes);
    nnr_tensor_release(g);
    return r;
}

static nnr_tensor *mul(const nnr_tensor *a, const nnr_tensor *b) { return nnr_binary(NNR_OP_MUL, a, b); }
static nnr_tensor *mul_s(const nnr_tensor *a, double s) { return nnr_binary_scalar(NNR_OP_MUL, a, s, 0); }

/* a * b, releasing a */
static nnr_tensor *mul_into(nnr_tensor *a, const nnr_tensor *b)
{
    if (!a) return NULL;
    nnr_tensor *r = mul(a, b);
    nnr_tensor_release(a);
    return r;
}

static nnr_node *make(const char *name, nnr_backward_fn fn, int n, const nnr_tensor *const *inputs)
{
    return nnr_node_new(name, fn, n, inputs);
}

static int attach(nnr_tensor *out, nnr_node *node)
{
    if (!node) return nnr_last_status();
    nnr_node_attach(out, node);
    return NNR_OK;
}

/* saves t, or a detached alias of it when t is the node's own output (no cycle) */
static int save(nnr_node *node, const nnr_tensor *t, int is_output)
{
    if (!is_output) return nnr_node_save(node, t);
    nnr_tensor *alias = nnr_detach(t);
    if (!alias) return nnr_last_status();
    int st = nnr_node_save(node, alias);
    nnr_tensor_release(alias);
    return st;
}

/* ---------------- unary ---------------- */

/* which of input (1) and output (2) an op's derivative reads */
static int unary_needs(int op)
{
    switch (op) {
    case NNR_OP_ABS: case NNR_OP_LOG: case NNR_OP_RELU: case NNR_OP_SIN: case NNR_OP_COS: case NNR_OP_ERF: return 1;
    case NNR_OP_EXP: case NNR_OP_SQRT: case NNR_OP_TANH: case NNR_OP_SIGMOID: case NNR_OP_RECIPROCAL: return 2;
    }
    return 0;
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
    case NNR_OP_ABS: t = nnr_unary(NNR_OP_SIGN, x); r = mul_into(t, g); break;
    case NNR_OP_EXP: r = mul(g, y); break;
    case NNR_OP_LOG: r = nnr_binary(NNR_OP_DIV, g, x); break;
    case NNR_OP_SQRT: t = mul_s(y, 2); r = t ? nnr_binary(NNR_OP_DIV, g, t) : NULL; nnr_tensor_release(t); break;
    case NNR_OP_TANH:      /* 1 - y^2 */
        t = mul(y, y);
        if (t) { nnr_tensor *u = nnr_binary_scalar(NNR_OP_SUB, t, 1, 1); nnr_tensor_release(t); t = u; }
        r = mul_into(t, g);
        break;
    case NNR_OP_SIGMOID:   /* y (1 - y) */
        t = nnr_binary_scalar(NNR_OP_SUB, y, 1, 1);
        t = mul_into(t, y);
        r = mul_into(t, g);
        break;
    case NNR_OP_RELU: r = nnr_binary(NNR_OP_RELU_GRAD, g, x); break;
    case NNR_OP_SIN: t = nnr_unary(NNR_OP_COS, x); r = mul_into(t, g); break;
    case NNR_OP_COS: t = nnr_unary(NNR_OP_SIN, x); r = mul_into(t, g); if (r) { t = nnr_unary(NNR_OP_NEG, r); nnr_tensor_release(r); r = t; } break;
    case NNR_OP_SIGN: r = nnr_full(g->dtype, g->ndim, g->sizes, 0.0, g->device); break;
    case NNR_OP_ERF: {                         /* 2/sqrt(pi) exp(-x^2) */
        nnr_tensor *sq = mul(x, x);
        nnr_tensor *e = sq ? nnr_binary_scalar(NNR_OP_MUL, sq, -1, 0) : NULL;
        nnr_tensor *ex = e ? nnr_unary(NNR_OP_EXP, e) : NULL;
        nnr_tensor *sc = ex ? mul_s(ex, 1.1283791670955126) : NULL;
        r = sc ? mul(sc, g) : NULL;
        nnr_tensor_release(sq); nnr_tensor_release(e); nnr_tensor_release(ex); nnr_tensor_release(sc);
        break;
    }
    case NNR_OP_RECIPROCAL:   /* -y^2 */
        t = mul(y, y);
        t = mul_into(t, g);
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
    case NNR_OP_ERF: return "ErfBackward";
    }
    return NULL;
}

int nnr_record_unary(int op, const nnr_tensor *x, nnr_tensor *out)
{
    const char *name = unary_name(op);
    if (!name) return NNR_OK;                  /* logical_not: not differentiable */
    nnr_node *node = make(name, unary_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->i[0] = op;
    int needs = unary_needs(op), st = NNR_OK;
    if (needs == 1) st = save(node, x, 0);
    if (needs == 2) st = save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- binary ---------------- */

/* saved slot of a (0), b (1) or the output (2), or -1 when not saved (node->i[1 + which]) */
static const nnr_tensor *saved_slot(nnr_node *node, int which, int *ok)
{
    int64_t slot = node->i[1 + which];
    if (slot < 0) return NULL;
    const nnr_tensor *t = nnr_node_saved(node, (int)slot);
    if (!t) *ok = 0;
    return t;
}

/* bit 0: a, bit 1: b, bit 2: the output */
static int binary_needs(int op)
{
    switch (op) {
    case NNR_OP_MUL: case NNR_OP_MAXIMUM: case NNR_OP_MINIMUM: return 3;
    case NNR_OP_DIV: return 2 | 4;
    case NNR_OP_POW: return 7;
    }
    return 0;
}

static int binary_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int ok = 1;
    const nnr_tensor *a = saved_slot(node, 0, &ok), *b = saved_slot(node, 1, &ok), *y = saved_slot(node, 2, &ok);
    if (!ok) return nnr_last_status();
    int need_a = node->in[0].node != NULL, need_b = node->in[1].node != NULL;
    nnr_tensor *ga = NULL, *gb = NULL, *t = NULL;
    switch ((int)node->i[0]) {
    case NNR_OP_ADD:
        if (need_a) { nnr_tensor_retain((nnr_tensor *)g); ga = (nnr_tensor *)g; }
        if (need_b) { nnr_tensor_retain((nnr_tensor *)g); gb = (nnr_tensor *)g; }
        break;
    case NNR_OP_SUB:
        if (need_a) { nnr_tensor_retain((nnr_tensor *)g); ga = (nnr_tensor *)g; }
        if (need_b) OK_OR_FAIL(gb = nnr_unary(NNR_OP_NEG, g));
        break;
    case NNR_OP_MUL:
        if (need_a) OK_OR_FAIL(ga = mul(g, b));
        if (need_b) OK_OR_FAIL(gb = mul(g, a));
        break;
    case NNR_OP_DIV:                           /* d/da = 1/b, d/db = -y/b */
        if (need_a) OK_OR_FAIL(ga = nnr_binary(NNR_OP_DIV, g, b));
        if (need_b) {
            OK_OR_FAIL(t = nnr_binary(NNR_OP_DIV, y, b));
            OK_OR_FAIL(t = mul_into(t, g));
            OK_OR_FAIL(gb = nnr_unary(NNR_OP_NEG, t));
        }
        break;
    case NNR_OP_POW:                           /* d/da = b a^(b-1), d/db = y log a */
        if (need_a) {
            nnr_tensor *bm1 = nnr_binary_scalar(NNR_OP_SUB, b, 1, 0);
            OK_OR_FAIL(bm1);
            t = nnr_binary(NNR_OP_POW, a, bm1);
            nnr_tensor_release(bm1);
            OK_OR_FAIL(t = mul_into(t, b));
            OK_OR_FAIL(ga = mul(t, g));
            nnr_tensor_release(t);
            t = NULL;
        }
        if (need_b) {
            OK_OR_FAIL(t = nnr_unary(NNR_OP_LOG, a));
            OK_OR_FAIL(t = mul_into(t, y));
            OK_OR_FAIL(gb = mul(t, g));
        }
        break;
    case NNR_OP_MAXIMUM: case NNR_OP_MINIMUM: {  /* to the larger (smaller); ties share */
        int cmp = node->i[0] == NNR_OP_MAXIMUM ? NNR_OP_GT : NNR_OP_LT;
        nnr_tensor *wins = nnr_binary(cmp, a, b), *ties = nnr_binary(NNR_OP_EQ, a, b);
        nnr_tensor *half = ties ? mul_s(g, 0.5) : NULL;
        if (wins && half) {
            nnr_tensor *tie_part = nnr_where_scalar(ties, half, 0, NULL, 0);
            if (need_a && tie_part) {
                nnr_tensor *w = nnr_where_scalar(wins, g, 0, NULL, 0);
                ga = w ? nnr_binary(NNR_OP_ADD, w, tie_part) : NULL;
                nnr_tensor_release(w);
            }
            if (need_b && tie_part) {
                nnr_tensor *loses = nnr_binary(cmp == NNR_OP_GT ? NNR_OP_LT : NNR_OP_GT, a, b);
                nnr_tensor *w = loses ? nnr_where_scalar(loses, g, 0, NULL, 0) : NULL;
                gb = w ? nnr_binary(NNR_OP_ADD, w, tie_part) : NULL;
                nnr_tensor_release(w);
                nnr_tensor_release(loses);
            }
            nnr_tensor_release(tie_part);
        }
        nnr_tensor_release(wins); nnr_tensor_release(ties); nnr_tensor_release(half);
        if ((need_a && !ga) || (need_b && !gb)) goto fail;
        break;
    }
    default: return nnr_errorf(NNR_ERR_INTERNAL, "backward: binary op %lld has no derivative", (long long)node->i[0]);
    }
    nnr_tensor_release(t);
    grads[0] = need_a ? grad_for_input(node, 0, ga) : NULL;
    grads[1] = need_b ? grad_for_input(node, 1, gb) : NULL;
    if ((need_a && !grads[0]) || (need_b && !grads[1])) return nnr_last_status();
    return NNR_OK;
fail:
    nnr_tensor_release(t); nnr_tensor_release(ga); nnr_tensor_release(gb);
    return nnr_last_status();
}

static const char *binary_name(int op)
{
    switch (op) {
    case NNR_OP_ADD: return "AddBackward"; case NNR_OP_SUB: return "SubBackward"; case NNR_OP_MUL: return "MulBackward";
    case NNR_OP_DIV: return "DivBackward"; case NNR_OP_POW: return "PowBackward";
    case NNR_OP_MAXIMUM: return "MaximumBackward"; case NNR_OP_MINIMUM: return "MinimumBackward";
    }
    return NULL;
}

int nnr_record_binary(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const char *name = binary_name(op);
    if (!name) return NNR_OK;                  /* comparisons and logical ops */
    const nnr_tensor *in[2] = {a, b};
    nnr_node *node = make(name, binary_backward, 2, in);
    if (!node) return nnr_last_status();
    node->i[0] = op;
    int needs = binary_needs(op), st = NNR_OK;
    const nnr_tensor *what[3] = {a, b, out};
    for (int w = 0; w < 3 && st == NNR_OK; w++) {
        node->i[1 + w] = -1;
        if (needs & (1 << w)) { node->i[1 + w] = node->n_saved; st = save(node, what[w], w == 2); }
    }
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* tensor op scalar (or scalar op tensor when i[1]) */
static int scalar_needs(int op, int first)
{
    switch (op) {
    case NNR_OP_DIV: return first ? 3 : 0;
    case NNR_OP_POW: return first ? 2 : 1;
    case NNR_OP_MAXIMUM: case NNR_OP_MINIMUM: return 1;
    }
    return 0;
}

static int scalar_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    double s = node->f[0];
    int first = (int)node->i[1];
    int ok = 1;
    const nnr_tensor *x = node->i[2] >= 0 ? nnr_node_saved(node, (int)node->i[2]) : NULL;
    const nnr_tensor *y = node->i[3] >= 0 ? nnr_node_saved(node, (int)node->i[3]) : NULL;
    if ((node->i[2] >= 0 && !x) || (node->i[3] >= 0 && !y)) ok = 0;
    if (!ok) return nnr_last_status();
    nnr_tensor *r = NULL, *t = NULL;
    switch ((int)node->i[0]) {
    case NNR_OP_ADD: r = nnr_clone(g); break;
    case NNR_OP_SUB: r = first ? nnr_unary(NNR_OP_NEG, g) : nnr_clone(g); break;
    case NNR_OP_MUL: r = mul_s(g, s); break;
    case NNR_OP_DIV:
        if (!first) r = nnr_binary_scalar(NNR_OP_DIV, g, s, 0);
        else {                                 /* s / x: -y / x */
            t = nnr_binary(NNR_OP_DIV, y, x);
            t = mul_into(t, g);
            if (t) r = nnr_unary(NNR_OP_NEG, t);
        }
        break;
    case NNR_OP_POW:
        if (!first) {                          /* x^s: s x^(s-1) */
            t = nnr_binary_scalar(NNR_OP_POW, x, s - 1, 0);
            if (t) { nnr_tensor *u = mul_s(t, s); nnr_tensor_release(t); t = u; }
            r = mul_into(t, g), t = NULL;
        } else {                               /* s^x: y log s */
            t = mul_s(y, log(s));
            r = mul_into(t, g), t = NULL;
        }
        break;
    case NNR_OP_MAXIMUM: case NNR_OP_MINIMUM: {
        int cmp = node->i[0] == NNR_OP_MAXIMUM ? NNR_OP_GT : NNR_OP_LT;
        nnr_tensor *wins = nnr_binary_scalar(cmp, x, s, 0), *ties = nnr_binary_scalar(NNR_OP_EQ, x, s, 0);
        nnr_tensor *half = mul_s(g, 0.5);
        nnr_tensor *w = wins ? nnr_where_scalar(wins, g, 0, NULL, 0) : NULL;
        nnr_tensor *h = (ties && half) ? nnr_where_scalar(ties, half, 0, NULL, 0) : NULL;
        r = (w && h) ? nnr_binary(NNR_OP_ADD, w, h) : NULL;
        nnr_tensor_release(wins); nnr_tensor_release(ties); nnr_tensor_release(half);
        nnr_tensor_release(w); nnr_tensor_release(h);
        break;
    }
    default: return nnr_errorf(NNR_ERR_INTERNAL, "backward: scalar op %lld has no derivative", (long long)node->i[0]);
    }
    nnr_tensor_release(t);
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

int nnr_record_binary_scalar(int op, const nnr_tensor *x, double s, int scalar_first, nnr_tensor *out)
{
    const char *name = binary_name(op);
    if (!name) return NNR_OK;
    nnr_node *node = make(name, scalar_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->i[0] = op;
    node->i[1] = scalar_first;
    node->f[0] = s;
    node->i[2] = node->i[3] = -1;
    int needs = scalar_needs(op, scalar_first), st = NNR_OK;
    if (needs & 1) { node->i[2] = node->n_saved; st = save(node, x, 0); }
    if (!st && (needs & 2)) { node->i[3] = node->n_saved; st = save(node, out, 1); }
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- where, clamp ---------------- */

static int where_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *cond = nnr_node_saved(node, 0);
    if (!cond) return nnr_last_status();
    /* inputs: 0 cond (no grad), 1 a, 2 b */
    if (node->in[1].node) {
        nnr_tensor *ga = nnr_where_scalar(cond, g, 0, NULL, 0);
        if (!(grads[1] = grad_for_input(node, 1, ga))) return nnr_last_status();
    }
    if (node->in[2].node) {
        nnr_tensor *gb = nnr_where_scalar(cond, NULL, 0, g, 0);
        if (!(grads[2] = grad_for_input(node, 2, gb))) return nnr_last_status();
    }
    return NNR_OK;
}

int nnr_record_where(const nnr_tensor *cond, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const nnr_tensor *in[3] = {cond, a, b};
    nnr_node *node = make("WhereBackward", where_backward, 3, in);
    if (!node) return nnr_last_status();
    int st = save(node, cond, 0);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

static int clamp_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0);
    if (!x) return nnr_last_status();
    int flags = (int)node->i[0];
    nnr_tensor *keep = NULL;
    if (flags & 1) keep = nnr_binary_scalar(NNR_OP_GE, x, node->f[0], 0);
    if (flags & 2) {
        nnr_tensor *le = nnr_binary_scalar(NNR_OP_LE, x, node->f[1], 0);
        if (keep && le) { nnr_tensor *both = nnr_binary(NNR_OP_LOGICAL_AND, keep, le); nnr_tensor_release(keep); keep = both; }
        else if (le) keep = le, le = NULL;
        nnr_tensor_release(le);
    }
    if (!keep) {
        if (flags) return nnr_last_status();
        grads[0] = nnr_clone(g);
        return grads[0] ? NNR_OK : nnr_last_status();
    }
    grads[0] = nnr_where_scalar(keep, g, 0, NULL, 0);
    nnr_tensor_release(keep);
    return grads[0] ? NNR_OK : nnr_last_status();
}

int nnr_record_clamp(const nnr_tensor *x, double lo, double hi, int flags, nnr_tensor *out)
{
    nnr_node *node = make("ClampBackward", clamp_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->f[0] = lo; node->f[1] = hi; node->i[0] = flags;
    int st = save(node, x, 0);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- reductions, softmax ---------------- */

/* g (reduced over the dims in mask, keepdim or not) expanded back to the input's shape */
static nnr_tensor *expand_back(nnr_node *node, const nnr_tensor *g)
{
    int nd = node->in[0].ndim;
    int64_t kept[NNR_MAX_DIMS];
    for (int d = 0; d < nd; d++) kept[d] = (node->i[1] >> d) & 1 ? 1 : node->in[0].sizes[d];
    nnr_tensor *v = nnr_reshape(g, nd, kept);
    if (!v) return NULL;
    nnr_tensor *e = nnr_expand(v, nd, node->in[0].sizes);
    nnr_tensor_release(v);
    return e;
}

static int reduce_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int op = (int)node->i[0];
    int64_t count = node->i[3];
    nnr_tensor *ge = expand_back(node, g), *r = NULL;
    if (!ge) return nnr_last_status();
    switch (op) {
    case NNR_OP_SUM: r = ge; nnr_tensor_retain(ge); break;   /* the expanded view: no copy */
    case NNR_OP_MEAN: r = mul_s(ge, count ? 1.0 / (double)count : 0.0); break;
    case NNR_OP_PROD: case NNR_OP_MAX: case NNR_OP_MIN: case NNR_OP_VAR: {
        const nnr_tensor *x = nnr_node_saved(node, 0), *y = op == NNR_OP_VAR ? x : nnr_node_saved(node, 1);
        if (!x || !y) { nnr_tensor_release(ge); return nnr_last_status(); }
        nnr_tensor *ye = op == NNR_OP_VAR ? NULL : expand_back(node, y);
        if (!ye && op != NNR_OP_VAR) break;
        if (op == NNR_OP_PROD) {              /* y / x (inputs with zeros give inf/nan, as in the naive formula) */
            nnr_tensor *q = nnr_binary(NNR_OP_DIV, ye, x);
            r = q ? mul(q, ge) : NULL;
            nnr_tensor_release(q);
        } else if (op == NNR_OP_VAR) {        /* 2 (x - mean) / (n - correction) */
            int dims[NNR_MAX_DIMS], n = 0;
            for (int d = 0; d < node->in[0].ndim; d++) if ((node->i[1] >> d) & 1) dims[n++] = d;
            nnr_tensor *mean = nnr_reduce(NNR_OP_MEAN, x, n, dims, 1, 0);
            nnr_tensor *diff = mean ? nnr_binary(NNR_OP_SUB, x, mean) : NULL;
            double scale = 2.0 / (double)(count - node->i[2]);
            nnr_tensor *s = diff ? mul_s(diff, scale) : NULL;
            r = s ? mul(s, ge) : NULL;
            nnr_tensor_release(mean); nnr_tensor_release(diff); nnr_tensor_release(s);
        } else {                              /* max/min: shared evenly among the elements that attain it */
            nnr_tensor *hit = nnr_binary(NNR_OP_EQ, x, ye);
            nnr_tensor *hitf = hit ? nnr_to(hit, x->dtype, x->device) : NULL;
            int dims[NNR_MAX_DIMS], n = 0;
            for (int d = 0; d < node->in[0].ndim; d++) if ((node->i[1] >> d) & 1) dims[n++] = d;
            nnr_tensor *cnt = hitf ? nnr_reduce(NNR_OP_SUM, hitf, n, dims, 1, 0) : NULL;
            nnr_tensor *share = cnt ? nnr_binary(NNR_OP_DIV, hitf, cnt) : NULL;
            r = share ? mul(share, ge) : NULL;
            nnr_tensor_release(hit); nnr_tensor_release(hitf); nnr_tensor_release(cnt); nnr_tensor_release(share);
        }
        nnr_tensor_release(ye);
        break;
    }
    default:
        nnr_tensor_release(ge);
        return nnr_errorf(NNR_ERR_INTERNAL, "backward: reduction %d has no derivative", op);
    }
    nnr_tensor_release(ge);
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

int nnr_record_reduce(int op, const nnr_tensor *x, unsigned dim_mask, int64_t count, int64_t correction, nnr_tensor *out)
{
    const char *name = op == NNR_OP_SUM ? "SumBackward" : op == NNR_OP_PROD ? "ProdBackward" : op == NNR_OP_MAX ? "MaxBackward"
                     : op == NNR_OP_MIN ? "MinBackward" : op == NNR_OP_MEAN ? "MeanBackward" : op == NNR_OP_VAR ? "VarBackward" : NULL;
    if (!name) return NNR_OK;        /* argmax/argmin */
    nnr_node *node = make(name, reduce_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->i[0] = op;
    node->i[1] = dim_mask;
    node->i[2] = correction;
    node->i[3] = count;
    int st = NNR_OK;
    if (op != NNR_OP_SUM && op != NNR_OP_MEAN) st = save(node, x, 0);
    if (!st && op != NNR_OP_SUM && op != NNR_OP_MEAN && op != NNR_OP_VAR) st = save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

static int softmax_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *y = nnr_node_saved(node, 0);
    if (!y) return nnr_last_status();
    int dim = (int)node->i[0];
    nnr_tensor *r = NULL;
    if (node->i[1]) {                          /* log_softmax: g - softmax * sum(g) */
        nnr_tensor *s = nnr_reduce(NNR_OP_SUM, g, 1, &dim, 1, 0);
        nnr_tensor *p = s ? nnr_unary(NNR_OP_EXP, y) : NULL;
        nnr_tensor *ps = p ? mul(p, s) : NULL;
        r = ps ? nnr_binary(NNR_OP_SUB, g, ps) : NULL;
        nnr_tensor_release(s); nnr_tensor_release(p); nnr_tensor_release(ps);
    } else {                                   /* softmax: y (g - sum(g y)) */
        nnr_tensor *gy = mul(g, y);
        nnr_tensor *s = gy ? nnr_reduce(NNR_OP_SUM, gy, 1, &dim, 1, 0) : NULL;
        nnr_tensor *d = s ? nnr_binary(NNR_OP_SUB, g, s) : NULL;
        r = d ? mul(d, y) : NULL;
        nnr_tensor_release(gy); nnr_tensor_release(s); nnr_tensor_release(d);
    }
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

int nnr_record_softmax(const nnr_tensor *x, int dim, int log, nnr_tensor *out)
{
    nnr_node *node = make(log ? "LogSoftmaxBackward" : "SoftmaxBackward", softmax_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->i[0] = dim;
    node->i[1] = log;
    int st = save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- matmul ---------------- */

/* t as a matrix operand: 1-d vectors become [1, K] (row) or [K, 1] (column) */
static nnr_tensor *as_matrix(const nnr_tensor *t, int row)
{
    if (t->ndim != 1) return nnr_tensor_new_view(t, t->ndim, t->sizes, t->strides, t->offset);
    int64_t s[2] = {row ? 1 : t->sizes[0], row ? t->sizes[0] : 1};
    return nnr_reshape(t, 2, s);
}

/* gm summed to the matrix form M of an operand, then shaped as the operand */
static nnr_tensor *matrix_grad(nnr_tensor *gm, const nnr_tensor *M, const struct nnr_node_input *in)
{
    if (!gm) return NULL;
    nnr_tensor *s = sum_to(gm, M->ndim, M->sizes);
    nnr_tensor_release(gm);
    if (!s) return NULL;
    nnr_tensor *r = nnr_reshape(s, in->ndim, in->sizes);
    nnr_tensor_release(s);
    return r;
}

static int matmul_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *a = nnr_node_saved(node, 0), *b = nnr_node_saved(node, 1);
    if (!a || !b) return nnr_last_status();
    nnr_tensor *A = as_matrix(a, 1), *B = as_matrix(b, 0), *G = NULL;
    int st = NNR_OK;
    if (!A || !B) { st = nnr_last_status(); goto done; }
    /* g is the gradient of the product before matmul dropped the dims of 1-d operands: [batch..., M, N] */
    if (!(G = nnr_tensor_new_view(g, g->ndim, g->sizes, g->strides, g->offset))) { st = nnr_last_status(); goto done; }
    if (node->in[0].node) {                    /* dA = G @ B^T, summed to A's shape */
        nnr_tensor *bt = nnr_transpose(B, -1, -2);
        nnr_tensor *ga = bt ? nnr_matmul(G, bt) : NULL;
        nnr_tensor_release(bt);
        if (!ga || !(grads[0] = matrix_grad(ga, A, &node->in[0]))) { st = nnr_last_status(); goto done; }
    }
    if (node->in[1].node) {                    /* dB = A^T @ G */
        nnr_tensor *at = nnr_transpose(A, -1, -2);
        nnr_tensor *gb = at ? nnr_matmul(at, G) : NULL;
        nnr_tensor_release(at);
        if (!gb || !(grads[1] = matrix_grad(gb, B, &node->in[1]))) { st = nnr_last_status(); goto done; }
    }
done:
    nnr_tensor_release(A); nnr_tensor_release(B); nnr_tensor_release(G);
    return st;
}

int nnr_record_matmul(const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const nnr_tensor *in[2] = {a, b};
    nnr_node *node = make("MatmulBackward", matmul_backward, 2, in);
    if (!node) return nnr_last_status();
    int st = save(node, a, 0);
    if (!st) st = save(node, b, 0);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- views, copies, casts ---------------- */

static int view_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const struct nnr_node_input *in = &node->in[0];
    nnr_tensor *r = NULL;
    switch ((int)node->i[0]) {
    case NNR_VIEW_RESHAPE:
        r = nnr_reshape(g, in->ndim, in->sizes);
        break;
    case NNR_VIEW_PERMUTE: {
        int inverse[NNR_MAX_DIMS];
        for (int d = 0; d < in->ndim; d++) inverse[node->i[1 + d]] = d;
        r = nnr_permute(g, in->ndim, inverse);
        break;
    }
    case NNR_VIEW_TRANSPOSE: r = nnr_transpose(g, (int)node->i[1], (int)node->i[2]); break;
    case NNR_VIEW_NARROW: case NNR_VIEW_SELECT: {
        r = nnr_full(g->dtype, in->ndim, in->sizes, 0.0, g->device);
        nnr_tensor *slot = !r ? NULL : node->i[0] == NNR_VIEW_NARROW ? nnr_narrow(r, (int)node->i[1], node->i[2], node->i[3])
                                                                    : nnr_select(r, (int)node->i[1], node->i[2]);
        if (!slot || nnr_copy_(slot, g)) { nnr_tensor_release(r); r = NULL; }
        nnr_tensor_release(slot);
        break;
    }
    case NNR_VIEW_EXPAND: r = sum_to(g, in->ndim, in->sizes); break;
    case NNR_VIEW_IDENTITY: r = nnr_clone(g); break;
    case NNR_VIEW_CAST: r = nnr_to(g, in->dtype, in->device); break;
    default: return nnr_errorf(NNR_ERR_INTERNAL, "backward: unknown view kind %lld", (long long)node->i[0]);
    }
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

int nnr_record_view(int kind, const nnr_tensor *base, nnr_tensor *out, const int64_t *params, int nparams)
{
    static const char *names[] = {"ViewBackward", "PermuteBackward", "TransposeBackward", "NarrowBackward",
                                  "SelectBackward", "ExpandBackward", "CloneBackward", "ToCopyBackward"};
    nnr_node *node = make(names[kind], view_backward, 1, &base);
    if (!node) return nnr_last_status();
    node->i[0] = kind;
    for (int k = 0; k < nparams && k < NNR_MAX_DIMS - 1; k++) node->i[1 + k] = params[k];
    if (kind != NNR_VIEW_IDENTITY && kind != NNR_VIEW_CAST) out->is_view = 1;
    return attach(out, node);
}

static int cat_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int dim = (int)node->i[0];
    int64_t at = 0;
    for (int k = 0; k < node->n_inputs; k++) {
        int64_t len = node->in[k].sizes[dim];
        if (node->in[k].node) {
            nnr_tensor *part = nnr_narrow(g, dim, at, len);
            if (!part) return nnr_last_status();
            grads[k] = nnr_contiguous(part);
            nnr_tensor_release(part);
            if (!grads[k]) return nnr_last_status();
        }
        at += len;
    }
    return NNR_OK;
}

int nnr_record_cat(int n, nnr_tensor *const *ts, int dim, nnr_tensor *out)
{
    nnr_node *node = make("CatBackward", cat_backward, n, (const nnr_tensor *const *)ts);
    if (!node) return nnr_last_status();
    node->i[0] = dim;
    return attach(out, node);
}

/* ---------------- indexing ---------------- */

static int index_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *index = nnr_node_saved(node, 0);
    if (!index) return nnr_last_status();
    int dim = (int)node->i[1];
    int kind = (int)node->i[0];
    if (kind == 0 || kind == 1) {              /* gather / index_select: scatter the gradient back */
        nnr_tensor *z = nnr_full(g->dtype, node->in[0].ndim, node->in[0].sizes, 0.0, g->device);
        if (!z) return nnr_last_status();
        grads[0] = kind == 0 ? nnr_scatter_add(z, dim, index, g) : nnr_index_add(z, dim, index, g);
        nnr_tensor_release(z);
        return grads[0] ? NNR_OK : nnr_last_status();
    }
    /* scatter_add / index_add: identity for the target, gather/index_select for src (input 2) */
    if (node->in[0].node && !(grads[0] = nnr_clone(g))) return nnr_last_status();
    if (node->in[2].node) {
        grads[2] = kind == 2 ? nnr_gather(g, dim, index) : nnr_index_select(g, dim, index);
        if (!grads[2]) return nnr_last_status();
    }
    return NNR_OK;
}

int nnr_record_index(int kind, const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src, nnr_tensor *out)
{
    static const char *names[] = {"GatherBackward", "IndexSelectBackward", "ScatterAddBackward", "IndexAddBackward"};
    const nnr_tensor *in[3] = {a, index, src};
    nnr_node *node = make(names[kind], index_backward, src ? 3 : 2, in);
    if (!node) return nnr_last_status();
    node->i[0] = kind;
    node->i[1] = dim;
    int st = save(node, index, 0);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- in-place writes that cut history ---------------- */

static int copy_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    if (node->n_inputs > 0 && node->in[0].node) {
        nnr_tensor *s = sum_to(g, node->in[0].ndim, node->in[0].sizes);
        if (!s) return nnr_last_status();
        grads[0] = s;
    }
    return NNR_OK;
}

int nnr_record_overwrite(const char *name, nnr_tensor *dst, const nnr_tensor *src)
{
    nnr_node *node = make(name, copy_backward, src ? 1 : 0, &src);
    return attach(dst, node);
}

/* ---------------- convolution and pooling ---------------- */

static int conv_grads(nnr_node *node, const nnr_tensor *g, const nnr_tensor *relu_out, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0), *w = nnr_node_saved(node, 1);
    if (!x || !w) return nnr_last_status();
    int has_bias = node->n_inputs > 2 && node->in[2].node;
    return nnr_conv2d_grads(x, w, g, node->i, relu_out, node->in[0].node ? &grads[0] : NULL, node->in[1].node ? &grads[1] : NULL,
                            has_bias ? &grads[2] : NULL);
}

static int conv_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads) { return conv_grads(node, g, NULL, grads); }

/* convolution followed by relu, fused: the mask comes from the output */
static int conv_relu_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *y = nnr_node_saved(node, 2);
    if (!y) return nnr_last_status();
    return conv_grads(node, g, y, grads);
}

int nnr_record_conv2d(const nnr_tensor *const *inputs, const nnr_tensor *xc, const nnr_tensor *wc, const int64_t *geom, int relu,
                      nnr_tensor *out)
{
    nnr_node *node = relu ? make("ConvolutionReluBackward", conv_relu_backward, inputs[2] ? 3 : 2, inputs)
                          : make("ConvolutionBackward", conv_backward, inputs[2] ? 3 : 2, inputs);
    if (!node) return nnr_last_status();
    memcpy(node->i, geom, sizeof(int64_t) * 7);
    int st = save(node, xc, 0);
    if (!st) st = save(node, wc, 0);
    if (!st && relu) st = save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

static int pool_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0);
    const nnr_tensor *idx = node->n_saved > 1 ? nnr_node_saved(node, 1) : NULL;
    if (!x || (node->n_saved > 1 && !idx)) return nnr_last_status();
    int64_t params[NNR_MAX_DIMS];
    memcpy(params, node->i, sizeof params);
    int op = (int)node->f[0];
    grads[0] = nnr_pool_grad(op, x, idx, g, params);
    return grads[0] ? NNR_OK : nnr_last_status();
}

int nnr_record_pool(int op, const nnr_tensor *x, const nnr_tensor *xc, const nnr_tensor *indices, const int64_t *params, nnr_tensor *out)
{
    const char *name = op == NNR_OP_MAXPOOL2D ? "MaxPool2DBackward" : op == NNR_OP_AVGPOOL2D ? "AvgPool2DBackward" : "AdaptiveAvgPool2DBackward";
    nnr_node *node = make(name, pool_backward, 1, &x);
    if (!node) return nnr_last_status();
    memcpy(node->i, params, sizeof node->i);
    node->f[0] = op;
    int st = save(node, xc, 0);
    if (!st && indices) st = save(node, indices, 0);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- linear ---------------- */

static int linear_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0), *w = nnr_node_saved(node, 1);
    if (!x || !w) return nnr_last_status();
    int64_t in_f = w->sizes[1], out_f = w->sizes[0];
    int64_t g2s[2] = {-1, out_f}, x2s[2] = {-1, in_f};
    nnr_tensor *g2 = nnr_reshape(g, 2, g2s), *x2 = NULL, *gt = NULL;
    int st = g2 ? NNR_OK : nnr_last_status();
    if (st == NNR_OK && node->in[0].node) {        /* dx = G W */
        nnr_tensor *dx = nnr_matmul(g2, w);
        grads[0] = dx ? nnr_reshape(dx, node->in[0].ndim, node->in[0].sizes) : NULL;
        nnr_tensor_release(dx);
        if (!grads[0]) st = nnr_last_status();
    }
    if (st == NNR_OK && node->in[1].node) {        /* dW = G^T x */
        x2 = nnr_reshape(x, 2, x2s);
        gt = x2 ? nnr_transpose(g2, 0, 1) : NULL;
        grads[1] = gt ? nnr_matmul(gt, x2) : NULL;
        if (!grads[1]) st = nnr_last_status();
    }
    if (st == NNR_OK && node->n_inputs > 2 && node->in[2].node) {   /* db = sum over rows */
        int dim0 = 0;
        grads[2] = nnr_reduce(NNR_OP_SUM, g2, 1, &dim0, 0, 0);
        if (!grads[2]) st = nnr_last_status();
    }
    nnr_tensor_release(g2); nnr_tensor_release(x2); nnr_tensor_release(gt);
    return st;
}

/* linear followed by relu, fused: the relu's mask is read from the output (y > 0 exactly
 * where x W^T + b > 0), then the linear's own backward */
static int linear_relu_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *y = nnr_node_saved(node, 2);
    if (!y) return nnr_last_status();
    nnr_tensor *gm = nnr_binary(NNR_OP_RELU_GRAD, g, y);
    if (!gm) return nnr_last_status();
    int st = linear_backward(node, gm, grads);
    nnr_tensor_release(gm);
    return st;
}

int nnr_record_linear_relu(const nnr_tensor *const *inputs, nnr_tensor *out)
{
    nnr_node *node = make("LinearReluBackward", linear_relu_backward, inputs[2] ? 3 : 2, inputs);
    if (!node) return nnr_last_status();
    int st = save(node, inputs[0], 0);
    if (!st) st = save(node, inputs[1], 0);
    if (!st) st = save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

int nnr_record_linear(const nnr_tensor *const *inputs, nnr_tensor *out)
{
    nnr_node *node = make("LinearBackward", linear_backward, inputs[2] ? 3 : 2, inputs);
    if (!node) return nnr_last_status();
    int st = save(node, inputs[0], 0);
    if (!st) st = save(node, inputs[1], 0);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* ---------------- batch norm ---------------- */

static int batch_norm_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *xc = nnr_node_saved(node, 0), *mean = nnr_node_saved(node, 1), *invstd = nnr_node_saved(node, 2);
    const nnr_tensor *w = node->i[1] ? nnr_node_saved(node, 3) : NULL;
    if (!xc || !mean || !invstd || (node->i[1] && !w)) return nnr_last_status();
    int has_w = node->n_inputs > 1 && node->in[1].node, has_b = node->n_inputs > 2 && node->in[2].node;
    return nnr_batch_norm_grads(xc, w, mean, invstd, (int)node->i[0], g, node->in[0].node ? &grads[0] : NULL,
                                has_w ? &grads[1] : NULL, has_b ? &grads[2] : NULL);
}

int nnr_record_batch_norm(const nnr_tensor *const *inputs, const nnr_tensor *xc, const nnr_tensor *w, const nnr_tensor *mean,
                          const nnr_tensor *invstd, int training, nnr_tensor *out)
{
    nnr_node *node = make("BatchNormBackward", batch_norm_backward, 3, inputs);
    if (!node) return nnr_last_status();
    node->i[0] = training;
    node->i[1] = w != NULL;
    int st = save(node, xc, 0);
    if (!st) st = save(node, mean, 0);
    if (!st) st = save(node, invstd, 0);
    if (!st && w) st = save(node, w, 0);
    if (st) { nnr_node_release(node); return st; }
    return attach(out, node);
}

/* Binary elementwise ops (add, sub, mul, div, pow, maximum, minimum, the comparisons and logical ops,
 * relu_grad) of two tensors or of a tensor and a Lua number: PyTorch's type promotion, broadcasting,
 * in-place and out= forms; what they record, and their derivatives. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "ops/internal.h"

static int is_compare(int op) { return nnr_op_category(op) == NNR_OPCAT_COMPARE; }
static int is_binary(int op) { return nnr_op_category(op) == NNR_OPCAT_BINARY || is_compare(op); }

#define OK_OR_FAIL(x) do { if (!(x)) goto fail; } while (0)

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
    case NNR_OP_RELU_GRAD: return 2;
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
    case NNR_OP_RELU_GRAD:    /* linear in the gradient it masks; 0 almost everywhere in the mask's source */
        need_b = 0; if (need_a) OK_OR_FAIL(ga = nnr_binary(NNR_OP_RELU_GRAD, g, b)); break;
    case NNR_OP_SUB:
        if (need_a) { nnr_tensor_retain((nnr_tensor *)g); ga = (nnr_tensor *)g; }
        if (need_b) OK_OR_FAIL(gb = nnr_unary(NNR_OP_NEG, g));
        break;
    case NNR_OP_MUL:
        if (need_a) OK_OR_FAIL(ga = nnr_mul(g, b));
        if (need_b) OK_OR_FAIL(gb = nnr_mul(g, a));
        break;
    case NNR_OP_DIV:                           /* d/da = 1/b, d/db = -y/b */
        if (need_a) OK_OR_FAIL(ga = nnr_binary(NNR_OP_DIV, g, b));
        if (need_b) {
            OK_OR_FAIL(t = nnr_binary(NNR_OP_DIV, y, b));
            OK_OR_FAIL(t = nnr_mul_into(t, g));
            OK_OR_FAIL(gb = nnr_unary(NNR_OP_NEG, t));
        }
        break;
    case NNR_OP_POW:                           /* d/da = b a^(b-1), d/db = y log a */
        if (need_a) {
            nnr_tensor *bm1 = nnr_binary_scalar(NNR_OP_SUB, b, 1, 0);
            OK_OR_FAIL(bm1);
            t = nnr_binary(NNR_OP_POW, a, bm1);
            nnr_tensor_release(bm1);
            OK_OR_FAIL(t = nnr_mul_into(t, b));
            OK_OR_FAIL(ga = nnr_mul(t, g));
            nnr_tensor_release(t);
            t = NULL;
        }
        if (need_b) {
            OK_OR_FAIL(t = nnr_unary(NNR_OP_LOG, a));
            OK_OR_FAIL(t = nnr_mul_into(t, y));
            OK_OR_FAIL(gb = nnr_mul(t, g));
        }
        break;
    case NNR_OP_MAXIMUM: case NNR_OP_MINIMUM: {  /* to the larger (smaller); ties share */
        int cmp = node->i[0] == NNR_OP_MAXIMUM ? NNR_OP_GT : NNR_OP_LT;
        nnr_tensor *wins = nnr_binary(cmp, a, b), *ties = nnr_binary(NNR_OP_EQ, a, b);
        nnr_tensor *half = ties ? nnr_mul_scalar(g, 0.5) : NULL;
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
    grads[0] = need_a ? nnr_grad_for_input(node, 0, ga) : NULL;
    grads[1] = need_b ? nnr_grad_for_input(node, 1, gb) : NULL;
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
    case NNR_OP_RELU_GRAD: return "ReluGradBackward";
    }
    return NULL;
}

static int record_binary(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const char *name = binary_name(op);
    if (!name) return NNR_OK;                  /* comparisons and logical ops */
    const nnr_tensor *in[2] = {a, b};
    nnr_node *node = nnr_node_new(name, binary_backward, 2, in);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = op;
    int needs = binary_needs(op), st = NNR_OK;
    const nnr_tensor *what[3] = {a, b, out};
    for (int w = 0; w < 3 && st == NNR_OK; w++) {
        node->i[1 + w] = -1;
        if (needs & (1 << w)) { node->i[1 + w] = node->n_saved; st = nnr_save(node, what[w], w == 2); }
    }
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
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
    case NNR_OP_MUL: r = nnr_mul_scalar(g, s); break;
    case NNR_OP_DIV:
        if (!first) r = nnr_binary_scalar(NNR_OP_DIV, g, s, 0);
        else {                                 /* s / x: -y / x */
            t = nnr_binary(NNR_OP_DIV, y, x);
            t = nnr_mul_into(t, g);
            if (t) r = nnr_unary(NNR_OP_NEG, t);
        }
        break;
    case NNR_OP_POW:
        if (!first) {                          /* x^s: s x^(s-1) */
            t = nnr_binary_scalar(NNR_OP_POW, x, s - 1, 0);
            if (t) { nnr_tensor *u = nnr_mul_scalar(t, s); nnr_tensor_release(t); t = u; }
            r = nnr_mul_into(t, g), t = NULL;
        } else {                               /* s^x: y log s */
            t = nnr_mul_scalar(y, log(s));
            r = nnr_mul_into(t, g), t = NULL;
        }
        break;
    case NNR_OP_MAXIMUM: case NNR_OP_MINIMUM: {
        int cmp = node->i[0] == NNR_OP_MAXIMUM ? NNR_OP_GT : NNR_OP_LT;
        nnr_tensor *wins = nnr_binary_scalar(cmp, x, s, 0), *ties = nnr_binary_scalar(NNR_OP_EQ, x, s, 0);
        nnr_tensor *half = nnr_mul_scalar(g, 0.5);
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

static int record_binary_scalar(int op, const nnr_tensor *x, double s, int scalar_first, nnr_tensor *out)
{
    const char *name = binary_name(op);
    if (!name) return NNR_OK;
    nnr_node *node = nnr_node_new(name, scalar_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = op;
    node->i[1] = scalar_first;
    node->f[0] = s;
    node->i[2] = node->i[3] = -1;
    int needs = scalar_needs(op, scalar_first), st = NNR_OK;
    if (needs & 1) { node->i[2] = node->n_saved; st = nnr_save(node, x, 0); }
    if (!st && (needs & 2)) { node->i[3] = node->n_saved; st = nnr_save(node, out, 1); }
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}


/* ---------------- front ends ---------------- */

/* compute dtype and result dtype of a binary op */
static void binary_dtypes(int op, int promoted, int *compute, int *result)
{
    *compute = promoted;
    if ((op == NNR_OP_DIV) && !nnr_dtype_is_float(promoted)) *compute = NNR_F32;
    *result = is_compare(op) ? NNR_BOOL : *compute;
}

static int check_binary_op(int op)
{
    if (!is_binary(op)) return nnr_errorf(NNR_ERR_INVALID, "binary: %d is not a binary op", op);
    return NNR_OK;
}

/* PyTorch refuses '-' with a bool tensor: true - true has no bool value (logical_xor or logical_not is meant) */
static int check_bool_sub(int op, int da, int db)
{
    if (op == NNR_OP_SUB && (da == NNR_BOOL || db == NNR_BOOL))
        return nnr_errorf(NNR_ERR_INVALID, "sub: subtraction with a bool tensor is not supported; use logical_xor() for two masks, "
                          "logical_not() to invert one");
    return NNR_OK;
}

static nnr_tensor *binary_into(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const char *name = nnr_op_name(op);
    if (check_binary_op(op) || check_bool_sub(op, a->dtype, b->dtype) || nnr_same_device(name, a, b)) return NULL;
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (nnr_broadcast_shapes(name, a->ndim, a->sizes, b->ndim, b->sizes, &n, shape)) return NULL;
    int compute, result;
    binary_dtypes(op, nnr_promote_operands(a, b), &compute, &result);
    if (out) {
        const nnr_tensor *in2[2] = {a, b};
        if (nnr_should_record(2, in2) || (out->requires_grad && nnr_grad_mode())) {
            nnr_errorf(NNR_ERR_INVALID, "%s: the out= variant does not record gradients; use it inside nnr.no_grad", name);
            return NULL;
        }
        if (out->ndim != n || memcmp(out->sizes, shape, sizeof(int64_t) * (size_t)n) != 0 || out->dtype != result || out->device != a->device) {
            char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "%s: out tensor is %s %s, expected %s %s", name, nnr_shape_str(x, sizeof x, out->ndim, out->sizes),
                       nnr_dtype_name(out->dtype), nnr_shape_str(y, sizeof y, n, shape), nnr_dtype_name(result));
            return NULL;
        }
        if (nnr_check_written(name, "", out)) return NULL;
        /* operands that share the out tensor's memory: read in place, from a copy, or refused */
        nnr_tensor *oa = nnr_written_operand(name, "", out, a), *ob = oa ? nnr_written_operand(name, "", out, b) : NULL;
        nnr_tensor *r = NULL;
        if (ob && (oa != a || ob != b)) r = binary_into(op, oa, ob, out);
        nnr_tensor_release(oa);
        nnr_tensor_release(ob);
        if (!ob || oa != a || ob != b) return r;
        nnr_tensor_retain(out);
    } else if (!(out = nnr_tensor_alloc(result, n, shape, a->device))) return NULL;
    nnr_tensor *x = a->dtype == compute ? NULL : nnr_to(a, compute, a->device);
    nnr_tensor *y = b->dtype == compute ? NULL : nnr_to(b, compute, b->device);
    if ((a->dtype != compute && !x) || (b->dtype != compute && !y)) goto fail;
    nnr_tensor_desc dx, dy, dout;
    nnr_desc_broadcast(x ? x : a, n, shape, &dx);
    nnr_desc_broadcast(y ? y : b, n, shape, &dy);
    nnr_tensor_desc_of(out, &dout);
    const nnr_tensor_desc *in[2] = {&dx, &dy};
    if (nnr_run_descs(name, op, a->device, 2, in, &dout, NULL)) goto fail;
    const nnr_tensor *used[2] = {x ? x : a, y ? y : b};
    if (nnr_should_record(2, used) && record_binary(op, used[0], used[1], out)) goto fail;
    nnr_tensor_release(x);
    nnr_tensor_release(y);
    return out;
fail:
    nnr_tensor_release(x);
    nnr_tensor_release(y);
    nnr_tensor_release(out);
    return NULL;
}

nnr_tensor *nnr_binary(int op, const nnr_tensor *a, const nnr_tensor *b) { return binary_into(op, a, b, NULL); }

int nnr_binary_out(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    nnr_tensor *r = binary_into(op, a, b, out);
    if (!r) return nnr_last_status();
    nnr_tensor_release(r);
    return NNR_OK;
}

static int run_scalar(int op, const nnr_tensor *x, double s, int scalar_first, nnr_tensor *out)
{
    nnr_tensor_desc dx, dout;
    nnr_tensor_desc_of(x, &dx);
    nnr_tensor_desc_of(out, &dout);
    nnr_op_params p = {.struct_size = sizeof p, .f = {s}, .i = {scalar_first ? 1 : 0}};
    const nnr_tensor_desc *in[1] = {&dx};
    return nnr_run_descs(nnr_op_name(op), op, x->device, 1, in, &dout, &p);
}

/* PyTorch refuses an integer tensor to a negative integer power (its value is not an integer) */
static int check_int_pow(int op, int result, double s, int scalar_first)
{
    if (op == NNR_OP_POW && !scalar_first && !nnr_dtype_is_float(result) && result != NNR_BOOL && s < 0)
        return nnr_errorf(NNR_ERR_INVALID, "pow: integers to negative integer powers are not allowed (%s tensor, exponent %g); "
                          "convert to a float dtype first", nnr_dtype_name(result), s);
    return NNR_OK;
}

nnr_tensor *nnr_binary_scalar(int op, const nnr_tensor *a, double s, int scalar_first)
{
    if (check_binary_op(op) || check_bool_sub(op, a->dtype, -1)) return NULL;
    int compute, result;
    binary_dtypes(op, nnr_promote_with_scalar(a->dtype, s), &compute, &result);
    if (check_int_pow(op, result, s, scalar_first)) return NULL;
    nnr_tensor *x = a->dtype == compute ? NULL : nnr_to(a, compute, a->device);
    if (a->dtype != compute && !x) return NULL;
    nnr_tensor *r = nnr_tensor_alloc(result, a->ndim, a->sizes, a->device);
    const nnr_tensor *used = x ? x : a;
    if (r && run_scalar(op, used, s, scalar_first, r)) { nnr_tensor_release(r); r = NULL; }
    if (nnr_should_record(1, &used)) NNR_RECORD(r, record_binary_scalar(op, used, s, scalar_first, r));
    nnr_tensor_release(x);
    return r;
}

static int inplace_check(int op, const nnr_tensor *a, int result)
{
    if (result != a->dtype)
        return nnr_errorf(NNR_ERR_INVALID, "%s_: result type %s cannot be stored in place in a %s tensor", nnr_op_name(op),
                          nnr_dtype_name(result), nnr_dtype_name(a->dtype));
    return NNR_OK;
}

int nnr_binary_(int op, nnr_tensor *a, const nnr_tensor *b)
{
    const char *name = nnr_op_name(op);
    if (check_binary_op(op) || check_bool_sub(op, a->dtype, b->dtype) || nnr_same_device(name, a, b)) return nnr_last_status();
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (nnr_broadcast_shapes(name, a->ndim, a->sizes, b->ndim, b->sizes, &n, shape)) return nnr_last_status();
    if (n != a->ndim || memcmp(shape, a->sizes, sizeof(int64_t) * (size_t)n) != 0) {
        char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_INVALID, "%s_: shape %s cannot be broadcast to the in-place target's shape %s", name,
                          nnr_shape_str(y, sizeof y, b->ndim, b->sizes), nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
    }
    int compute, result;
    binary_dtypes(op, nnr_promote_operands(a, b), &compute, &result);
    if (is_compare(op)) return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s_: comparisons are not available in place", name);
    if (inplace_check(op, a, result)) return nnr_last_status();
    if (nnr_autograd_check_inplace(name, a)) return nnr_last_status();
    if (nnr_check_written(name, "_", a)) return nnr_last_status();
    /* an operand sharing a's memory: read in place, from a copy, or refused (a partial overlap) */
    nnr_tensor *bb = NULL;
    if (b->storage == a->storage && !(bb = nnr_written_operand(name, "_", a, b))) return nnr_last_status();
    const nnr_tensor *in2[2] = {a, b};
    if (nnr_should_record(2, in2)) {
        nnr_tensor_release(bb);
        /* computed out of place from a's old values; an operand sharing a's memory (y:mul_(y)) must be
         * read, and differentiated, as it was before the write: the old copy itself, or a recorded clone */
        nnr_tensor *old = nnr_clone(a), *b2 = NULL;
        if (old && b == a) { nnr_tensor_retain(old); b2 = old; }
        else if (old && b->storage == a->storage) b2 = nnr_clone(b);
        else if (old) { nnr_tensor_retain((nnr_tensor *)b); b2 = (nnr_tensor *)b; }
        nnr_tensor *r = old && b2 ? nnr_binary(op, old, b2) : NULL;
        nnr_tensor_release(old);
        nnr_tensor_release(b2);
        return nnr_inplace_recorded(a, r);
    }
    nnr_tensor *y = nnr_as_dtype(bb ? bb : b, compute);
    nnr_tensor_release(bb);
    if (!y) return nnr_last_status();
    nnr_tensor_desc da, dy;
    nnr_tensor_desc_of(a, &da);
    nnr_desc_broadcast(y, n, shape, &dy);
    const nnr_tensor_desc *in[2] = {&da, &dy};
    int st = nnr_run_descs(name, op, a->device, 2, in, &da, NULL);
    nnr_tensor_release(y);
    return st;
}

int nnr_binary_scalar_(int op, nnr_tensor *a, double s)
{
    if (check_binary_op(op) || check_bool_sub(op, a->dtype, -1)) return nnr_last_status();
    if (is_compare(op)) return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s_: comparisons are not available in place", nnr_op_name(op));
    int compute, result;
    binary_dtypes(op, nnr_promote_with_scalar(a->dtype, s), &compute, &result);
    if (check_int_pow(op, result, s, 0) || inplace_check(op, a, result)) return nnr_last_status();
    if (nnr_autograd_check_inplace(nnr_op_name(op), a)) return nnr_last_status();
    if (nnr_check_written(nnr_op_name(op), "_", a)) return nnr_last_status();
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = nnr_clone(a), *r = old ? nnr_binary_scalar(op, old, s, 0) : NULL;
        nnr_tensor_release(old);
        return nnr_inplace_recorded(a, r);
    }
    return run_scalar(op, a, s, 0, a);
}


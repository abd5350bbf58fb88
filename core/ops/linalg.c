/* Linear algebra: matmul (batched, broadcasting, 1-d operands), mm, bmm, and linear (x W^T + b,
 * fused with relu where the backend has it); what they record and their derivatives. */
#include <string.h>
#include "ops/internal.h"

/* t as a matrix operand: 1-d vectors become [1, K] (row) or [K, 1] (column) */
static nnr_tensor *as_matrix(const nnr_tensor *t, int row)
{
    if (t->ndim != 1) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }   /* itself: its history stays */
    int64_t s[2] = {row ? 1 : t->sizes[0], row ? t->sizes[0] : 1};
    return nnr_reshape(t, 2, s);
}

/* gm summed to the matrix form M of an operand, then shaped as the operand */
static nnr_tensor *matrix_grad(nnr_tensor *gm, const nnr_tensor *M, const struct nnr_node_input *in)
{
    if (!gm) return NULL;
    nnr_tensor *s = nnr_sum_to(gm, M->ndim, M->sizes);
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
    nnr_tensor_retain((nnr_tensor *)g);
    G = (nnr_tensor *)g;
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

static int record_matmul(const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const nnr_tensor *in[2] = {a, b};
    nnr_node *node = nnr_node_new("MatmulBackward", matmul_backward, 2, in);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    int st = nnr_save(node, a, 0);
    if (!st) st = nnr_save(node, b, 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

static nnr_tensor *matmul_impl(const char *name, const nnr_tensor *a, const nnr_tensor *b)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    if (nnr_same_device(name, a, b)) return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        nnr_errorf(NNR_ERR_INVALID, "%s: both arguments need at least 1 dimension, got shapes %s and %s", name,
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    int dt = nnr_promote_types(a->dtype, b->dtype);
    if (dt != NNR_F32 && dt != NNR_F64 && dt != NNR_F16 && dt != NNR_BF16) {
        nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported (expected f32, f64, f16 or bf16)", name, nnr_dtype_name(dt));
        return NULL;
    }
    if (dt == NNR_F32 && nnr_get_autocast() >= 0) dt = nnr_get_autocast();   /* the casts are recorded: gradients reach f32 */
    /* promote 1-d operands to matrices, remember which dims to drop */
    int64_t as[NNR_MAX_DIMS], ast[NNR_MAX_DIMS], bs[NNR_MAX_DIMS], bst[NNR_MAX_DIMS];
    int na = a->ndim, nb = b->ndim;
    memcpy(as, a->sizes, sizeof as); memcpy(ast, a->strides, sizeof ast);
    memcpy(bs, b->sizes, sizeof bs); memcpy(bst, b->strides, sizeof bst);
    int drop_m = 0, drop_n = 0;
    if (na == 1) { as[1] = as[0]; ast[1] = ast[0]; as[0] = 1; ast[0] = 0; na = 2; drop_m = 1; }
    if (nb == 1) { bs[1] = 1; bst[1] = 0; nb = 2; drop_n = 1; }
    int64_t M = as[na - 2], K = as[na - 1], K2 = bs[nb - 2], N = bs[nb - 1];
    if (K != K2) {
        nnr_errorf(NNR_ERR_INVALID, "%s: inner dimensions differ: %s @ %s (%lld vs %lld)", name,
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes), (long long)K, (long long)K2);
        return NULL;
    }
    int nbatch;
    int64_t batch[NNR_MAX_DIMS];
    if (nnr_broadcast_shapes(name, na - 2, as, nb - 2, bs, &nbatch, batch)) {
        nnr_errorf(NNR_ERR_INVALID, "%s: batch dimensions of %s and %s cannot broadcast", name,
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    if (nbatch + 2 > NNR_MAX_DIMS) { nnr_errorf(NNR_ERR_INVALID, "%s: too many dimensions", name); return NULL; }
    int64_t osz[NNR_MAX_DIMS];
    memcpy(osz, batch, sizeof(int64_t) * (size_t)nbatch);
    osz[nbatch] = M; osz[nbatch + 1] = N;
    nnr_tensor *xa = nnr_as_dtype(a, dt), *xb = xa ? nnr_as_dtype(b, dt) : NULL;
    nnr_tensor *r = xb ? nnr_tensor_alloc(dt, nbatch + 2, osz, a->device) : NULL;
    if (r) {
        nnr_tensor_desc da, db, dout;
        nnr_tensor_desc_of(xa, &da);
        nnr_tensor_desc_of(xb, &db);
        nnr_tensor_desc_of(r, &dout);
        da.ndim = db.ndim = nbatch + 2;
        for (int i = 0; i < nbatch; i++) {
            int ia = na - 2 - nbatch + i, ib = nb - 2 - nbatch + i;
            da.sizes[i] = db.sizes[i] = batch[i];
            da.strides[i] = (ia >= 0 && as[ia] == batch[i]) ? ast[ia] : 0;
            db.strides[i] = (ib >= 0 && bs[ib] == batch[i]) ? bst[ib] : 0;
        }
        da.sizes[nbatch] = M; da.sizes[nbatch + 1] = K; da.strides[nbatch] = ast[na - 2]; da.strides[nbatch + 1] = ast[na - 1];
        db.sizes[nbatch] = K; db.sizes[nbatch + 1] = N; db.strides[nbatch] = bst[nb - 2]; db.strides[nbatch + 1] = bst[nb - 1];
        const nnr_tensor_desc *in[2] = {&da, &db};
        if (nnr_run_descs(name, NNR_OP_MATMUL, a->device, 2, in, &dout, NULL)) { nnr_tensor_release(r); r = NULL; }
    }
    const nnr_tensor *used[2] = {xa, xb};
    if (r && nnr_should_record(2, used)) NNR_RECORD(r, record_matmul(xa, xb, r));
    nnr_tensor_release(xa);
    nnr_tensor_release(xb);
    if (r && (drop_m || drop_n)) {
        int64_t fs[NNR_MAX_DIMS];
        int k = 0;
        for (int i = 0; i < nbatch; i++) fs[k++] = batch[i];
        if (!drop_m) fs[k++] = M;
        if (!drop_n) fs[k++] = N;
        nnr_tensor *v = nnr_view(r, k, fs);
        nnr_tensor_release(r);
        /* its base is private (released here): an in-place write to the result changes nothing anyone
         * else sees, so it is not a view as autograd's in-place rule means one (PyTorch's result is not) */
        if (v) v->is_view = 0;
        r = v;
    }
    return r;
}

nnr_tensor *nnr_matmul(const nnr_tensor *a, const nnr_tensor *b) { return matmul_impl("matmul", a, b); }

nnr_tensor *nnr_mm(const nnr_tensor *a, const nnr_tensor *b)
{
    if (a->ndim != 2 || b->ndim != 2) {
        char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "mm: expected two 2-d tensors, got shapes %s and %s", nnr_shape_str(x, sizeof x, a->ndim, a->sizes),
                   nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    return matmul_impl("mm", a, b);
}

nnr_tensor *nnr_bmm(const nnr_tensor *a, const nnr_tensor *b)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    if (a->ndim != 3 || b->ndim != 3 || a->sizes[0] != b->sizes[0]) {
        nnr_errorf(NNR_ERR_INVALID, "bmm: expected two 3-d tensors with equal batch sizes, got shapes %s and %s",
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    return matmul_impl("bmm", a, b);
}


/* ---------------- the derivative of linear ---------------- */

static int linear_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const nnr_tensor *x = nnr_node_saved(node, 0), *w = nnr_node_saved(node, 1);
    if (!x || !w) return nnr_last_status();
    int64_t in_f = w->sizes[1], out_f = w->sizes[0], rows = 1;
    for (int d = 0; d < x->ndim - 1; d++) rows *= x->sizes[d];      /* not -1: in_f or out_f may be 0 */
    int64_t g2s[2] = {rows, out_f}, x2s[2] = {rows, in_f};
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

static int record_linear_relu(const nnr_tensor *const *inputs, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new("LinearReluBackward", linear_relu_backward, inputs[2] ? 3 : 2, inputs);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    int st = nnr_save(node, inputs[0], 0);
    if (!st) st = nnr_save(node, inputs[1], 0);
    if (!st) st = nnr_save(node, out, 1);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

static int record_linear(const nnr_tensor *const *inputs, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new("LinearBackward", linear_backward, inputs[2] ? 3 : 2, inputs);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    int st = nnr_save(node, inputs[0], 0);
    if (!st) st = nnr_save(node, inputs[1], 0);
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}


/* ---------------- linear ---------------- */

/* y = x W^T (+ b), relu'd when asked, as the backend's one LINEAR call: the gemm starts from the
 * bias or adds it in its epilogue. *done is 0 when the backend has no LINEAR for these operands. */
static nnr_tensor *linear_fused(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int relu, int record, int *done)
{
    *done = 0;
    if (!nnr_backend_knows(x->device, 1)) return NULL;       /* LINEAR is ABI 1.1 */
    nnr_tensor *c[3] = {NULL, NULL, NULL}, *x2 = NULL, *y2 = NULL, *y = NULL;
    const nnr_tensor *src[3] = {x, w, bias};
    int n = bias ? 3 : 2;
    for (int k = 0; k < n; k++)
        if (!(c[k] = nnr_contiguous(src[k]))) { *done = 1; goto out; }
    int64_t K = w->sizes[1], M = 1, sizes[NNR_MAX_DIMS];
    for (int d = 0; d < x->ndim - 1; d++) M *= x->sizes[d];     /* the leading dims (K may be 0) */
    memcpy(sizes, x->sizes, sizeof sizes);
    sizes[x->ndim - 1] = w->sizes[0];
    int64_t xs[2] = {M, K}, ys[2] = {M, w->sizes[0]};
    *done = 1;                                                 /* from here a failure is the error */
    if (!(y = nnr_tensor_alloc(x->dtype, x->ndim, sizes, x->device))) goto out;
    if (!(x2 = nnr_reshape(c[0], 2, xs)) || !(y2 = nnr_reshape(y, 2, ys))) { nnr_tensor_release(y); y = NULL; goto out; }
    nnr_tensor *ins[3] = {x2, c[1], c[2]};
    nnr_op_params p = {.struct_size = sizeof p, .i = {relu}};
    /* inference (nothing to record; the caller has turned recording off by now, so it says): the weight's
     * storage and version as a key (ABI 1.6), so that a backend may keep it packed from one call to the
     * next (the cpu's oneDNN path does). A weight being trained changes every step: no key */
    if (c[1] == w && !record && nnr_backend_knows(x->device, 6)) {
        p.i[1] = (int64_t)w->storage->uid;
        p.i[2] = atomic_load(&w->storage->version);
    }
    if (!nnr_backend_takes(x->device, NNR_OP_LINEAR, n, ins, 1, &y2, &p)) {
        *done = 0;                                             /* matmul and add instead */
        nnr_tensor_release(y);
        y = NULL;
    } else if (nnr_run_tensors("linear", NNR_OP_LINEAR, x->device, n, ins, 1, &y2, &p)) {
        nnr_tensor_release(y);
        y = NULL;
    }
out:
    nnr_release_all(3, c);
    nnr_tensor_release(x2);
    nnr_tensor_release(y2);
    return y;
}

/* the same from matmul, add and relu */
static nnr_tensor *linear_composed(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int relu)
{
    nnr_tensor *wt = nnr_transpose(w, 0, 1);
    nnr_tensor *y = wt ? nnr_matmul(x, wt) : NULL;
    nnr_tensor_release(wt);
    if (y && bias && nnr_binary_(NNR_OP_ADD, y, bias)) { nnr_tensor_release(y); y = NULL; }
    if (y && relu) { nnr_tensor *r = nnr_unary(NNR_OP_RELU, y); nnr_tensor_release(y); y = r; }
    return y;
}

static int check_linear(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (w->ndim != 2 || x->ndim < 1 || x->sizes[x->ndim - 1] != w->sizes[1])
        return nnr_errorf(NNR_ERR_INVALID, "linear: input of shape %s does not fit weight of shape %s (expected [..., %lld])",
                          nnr_shape_str(a, sizeof a, x->ndim, x->sizes), nnr_shape_str(b, sizeof b, w->ndim, w->sizes),
                          (long long)(w->ndim == 2 ? w->sizes[1] : -1));
    if (bias && (bias->ndim != 1 || bias->sizes[0] != w->sizes[0]))
        return nnr_errorf(NNR_ERR_INVALID, "linear: bias of shape %s, expected [%lld]", nnr_shape_str(a, sizeof a, bias->ndim, bias->sizes),
                          (long long)w->sizes[0]);
    return NNR_OK;
}

/* y = x W^T + b, x [..., in], W [out, in], b [out]. Its own derivative gives dW = G^T x directly in
 * W's layout (through matmul and a transpose view it would come out transposed and need a copy). */
static nnr_tensor *linear_impl(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias, int relu)
{
    const nnr_tensor *in[3] = {x, w, bias};
    nnr_tensor *low[3];
    int ac = x->device == w->device ? nnr_autocast_operands(3, in, low) : 0;
    if (ac < 0) return NULL;
    if (ac) {
        nnr_tensor *y = linear_impl(low[0], low[1], low[2], relu);
        nnr_release_all(3, low);
        return y;
    }
    if (check_linear(x, w, bias)) return NULL;
    int record = nnr_should_record(3, in);
    int prev = nnr_set_grad_enabled(0);
    int same = x->device == w->device && (!bias || bias->device == x->device) && x->dtype == w->dtype && (!bias || bias->dtype == x->dtype);
    int done = 0;
    nnr_tensor *y = same ? linear_fused(x, w, bias, relu, record, &done) : NULL;
    if (!done) y = linear_composed(x, w, bias, relu);
    nnr_set_grad_enabled(prev);
    if (y && record && (relu ? record_linear_relu(in, y) : record_linear(in, y))) { nnr_tensor_release(y); y = NULL; }
    return y;
}

nnr_tensor *nnr_linear(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias) { return linear_impl(x, w, bias, 0); }
/* relu(x W^T + b) in one op where the backend has it (nn.Sequential fuses Linear then ReLU into it) */
nnr_tensor *nnr_linear_relu(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *bias) { return linear_impl(x, w, bias, 1); }

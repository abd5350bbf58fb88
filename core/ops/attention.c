/* Scaled dot-product attention, softmax(Q K^T * scale + mask) V, over blocks of query rows: a block's
 * scores [.., rows, S] are made, used and dropped before the next, so the extra memory is a few
 * blocks' worth, not the [L, S] score matrix (the backward recomputes each block's probabilities
 * from Q and K, as FlashAttention does, and keeps nothing of size L x S). A causal block reads only
 * the keys its last row may see. Small problems (at most 2^22 scores in all) are one block. The
 * backward is one node: per block, dV += P^T dO, dS = P * (dO V^T - rowsum(dO * O)) * scale, dQ = dS K,
 * dK += dS^T Q; it is not itself differentiable (create_graph through it is an error naming
 * it). Dropout of the probabilities is the composed path's (lua/nnr/nn/attention.lua). */
#include <math.h>
#include <stdlib.h>
#include "ops/internal.h"

enum { ALL_AT_ONCE = 1 << 22, BLOCK_SCORES = 1 << 17, MIN_ROWS = 16, CAUSAL_BLOCKS = 4 };

typedef struct attn_geom {
    int nd, causal;
    int64_t L, S, E, Ev, heads;     /* heads: the product of the batch dims (q's) */
    double scale;
} attn_geom;

static int64_t block_rows(const attn_geom *g)
{
    int64_t r = (double)g->heads * g->L * g->S <= ALL_AT_ONCE ? g->L : BLOCK_SCORES / (g->heads * g->S);
    /* causal: at least CAUSAL_BLOCKS blocks, so that the keys no row of a block may see are skipped
     * (with 4 blocks, 5/8 of the products of one) */
    if (g->causal && g->L >= 2 * MIN_ROWS) {
        int64_t c = (g->L + CAUSAL_BLOCKS - 1) / CAUSAL_BLOCKS;
        if (c < r) r = c;
    }
    return r < MIN_ROWS ? MIN_ROWS : r > g->L ? g->L : r;
}

/* rows [l0, l0 + n) of t along its second-to-last dim; the first kend rows when n < 0 */
static nnr_tensor *rows(const nnr_tensor *t, int64_t l0, int64_t n) { return nnr_narrow(t, t->ndim - 2, l0, n); }

/* the probabilities of query rows [l0, l1) over keys [0, kend): softmax(q_b k_b^T * scale + mask) */
static nnr_tensor *block_probs(const attn_geom *g, const nnr_tensor *qb, const nnr_tensor *kb, const nnr_tensor *mask, int64_t l0,
                               int64_t l1, int64_t kend)
{
    /* the scale goes on the block of queries [rows, E], not on the scores [rows, kend] */
    nnr_tensor *kt = nnr_transpose(kb, kb->ndim - 2, kb->ndim - 1), *qs = nnr_mul_scalar(qb, g->scale);
    nnr_tensor *s = kt && qs ? nnr_matmul(qs, kt) : NULL;
    nnr_tensor_release(kt);
    nnr_tensor_release(qs);
    if (s && mask) {                /* the mask's block: [.., l0:l1, 0:kend] */
        nnr_tensor *mr = nnr_narrow(mask, mask->ndim - 2, mask->sizes[mask->ndim - 2] == 1 ? 0 : l0,
                                    mask->sizes[mask->ndim - 2] == 1 ? 1 : l1 - l0);
        nnr_tensor *mb = mr ? nnr_narrow(mr, mr->ndim - 1, 0, mask->sizes[mask->ndim - 1] == 1 ? 1 : kend) : NULL;
        nnr_tensor *m = !mb ? NULL : mask->dtype == NNR_BOOL ? nnr_where_scalar(mb, s, 0, NULL, -INFINITY) : nnr_binary(NNR_OP_ADD, s, mb);
        nnr_tensor_release(mr);
        nnr_tensor_release(mb);
        nnr_tensor_release(s);
        s = m;
    }
    if (s && g->causal && kend > l0 + 1) {  /* key j <= query i (top-left aligned, as PyTorch's is_causal): the others -inf, in place */
        nnr_tensor *qi = nnr_arange((double)l0, (double)l1, 1, NNR_I64, s->device), *kj = nnr_arange(0, (double)kend, 1, NNR_I64, s->device);
        nnr_tensor *qc = qi ? nnr_unsqueeze(qi, 1) : NULL, *hide = qc && kj ? nnr_binary(NNR_OP_GT, kj, qc) : NULL;
        int st = hide ? nnr_masked_fill_(s, hide, -INFINITY) : nnr_last_status();
        nnr_tensor *all[4] = {qi, kj, qc, hide};
        nnr_release_all(4, all);
        if (st) { nnr_tensor_release(s); s = NULL; }
    }
    nnr_tensor *p = s ? nnr_softmax(s, s->ndim - 1, 0) : NULL;
    nnr_tensor_release(s);
    return p;
}

/* the keys a block of rows [l0, l1) reads: all, or for causal attention the first l1 */
static int64_t keys_for(const attn_geom *g, int64_t l1) { return g->causal && l1 < g->S ? l1 : g->S; }

static int attn_forward(const attn_geom *g, const nnr_tensor *q, const nnr_tensor *k, const nnr_tensor *v, const nnr_tensor *mask,
                        nnr_tensor *out)
{
    int64_t step = block_rows(g);
    int st = NNR_OK;
    for (int64_t l0 = 0; l0 < g->L && st == NNR_OK; l0 += step) {
        int64_t l1 = l0 + step < g->L ? l0 + step : g->L, kend = keys_for(g, l1);
        nnr_tensor *qb = rows(q, l0, l1 - l0), *kb = rows(k, 0, kend), *vb = rows(v, 0, kend);
        nnr_tensor *p = qb && kb && vb ? block_probs(g, qb, kb, mask, l0, l1, kend) : NULL;
        nnr_tensor *o = p ? nnr_matmul(p, vb) : NULL, *ob = o ? rows(out, l0, l1 - l0) : NULL;
        st = ob ? nnr_copy_(ob, o) : nnr_last_status();
        nnr_tensor *all[6] = {qb, kb, vb, p, o, ob};
        nnr_release_all(6, all);
    }
    return st;
}

/* acc[.., 0:n, :] += part */
static int add_rows(nnr_tensor *acc, const nnr_tensor *part)
{
    nnr_tensor *a = rows(acc, 0, part->sizes[part->ndim - 2]);
    int st = a ? nnr_binary_(NNR_OP_ADD, a, part) : nnr_last_status();
    nnr_tensor_release(a);
    return st;
}

static nnr_tensor *t_last(const nnr_tensor *t) { return nnr_transpose(t, t->ndim - 2, t->ndim - 1); }

/* one block's share of the gradients: dq rows [l0, l1), and dk, dv rows [0, kend) added to. Each
 * temporary goes as soon as it is used, and the block-sized ones are reused in place, so a block
 * costs about two [rows, kend] buffers at once. */
static int back_block(const attn_geom *g, const nnr_tensor *const *sv, const nnr_tensor *dout, int64_t l0, int64_t l1, nnr_tensor *dq,
                      nnr_tensor *dk, nnr_tensor *dv)
{
    const nnr_tensor *q = sv[0], *k = sv[1], *v = sv[2], *mask = sv[3], *out = sv[4];
    int64_t kend = keys_for(g, l1);
    nnr_tensor *qb = rows(q, l0, l1 - l0), *kb = rows(k, 0, kend), *vb = rows(v, 0, kend), *dob = rows(dout, l0, l1 - l0);
    nnr_tensor *p = qb && kb && vb && dob ? block_probs(g, qb, kb, mask, l0, l1, kend) : NULL;
    int st = p ? NNR_OK : nnr_last_status();
    if (st == NNR_OK) {                                     /* dV += P^T dO */
        nnr_tensor *pt = t_last(p), *dvp = pt ? nnr_matmul(pt, dob) : NULL;
        st = dvp ? add_rows(dv, dvp) : nnr_last_status();
        nnr_tensor_release(pt);
        nnr_tensor_release(dvp);
    }
    nnr_tensor *dp = NULL;
    if (st == NNR_OK) st = nnr_binary_scalar_(NNR_OP_MUL, p, g->scale);   /* P * scale: dS below comes out scaled */
    if (st == NNR_OK) {                                     /* dS = P * (dO V^T - rowsum(dO * O)) * scale, in dp's buffer */
        nnr_tensor *vt = t_last(vb), *ob = rows(out, l0, l1 - l0), *od = ob ? nnr_mul(dob, ob) : NULL;
        nnr_tensor *dsum = od ? nnr_reduce(NNR_OP_SUM, od, 1, (int[]){od->ndim - 1}, 1, 0) : NULL;
        dp = vt && dsum ? nnr_matmul(dob, vt) : NULL;
        st = dp ? nnr_binary_out(NNR_OP_SUB, dp, dsum, dp) : nnr_last_status();
        if (st == NNR_OK) st = nnr_binary_out(NNR_OP_MUL, dp, p, dp);
        nnr_tensor *all[4] = {vt, ob, od, dsum};
        nnr_release_all(4, all);
    }
    nnr_tensor_release(p);
    if (st == NNR_OK) {                                     /* dQ = dS K (dS scaled already) */
        nnr_tensor *r = nnr_matmul(dp, kb), *dqb = r ? rows(dq, l0, l1 - l0) : NULL;
        st = dqb ? nnr_copy_(dqb, r) : nnr_last_status();
        nnr_tensor_release(r); nnr_tensor_release(dqb);
    }
    if (st == NNR_OK) {                                     /* dK += dS^T Q */
        nnr_tensor *dst = t_last(dp), *r = dst ? nnr_matmul(dst, qb) : NULL;
        st = r ? add_rows(dk, r) : nnr_last_status();
        nnr_tensor_release(dst); nnr_tensor_release(r);
    }
    nnr_tensor *all[5] = {qb, kb, vb, dob, dp};
    nnr_release_all(5, all);
    return st;
}

static int attn_backward(nnr_node *node, const nnr_tensor *dout, nnr_tensor **grads)
{
    const nnr_tensor *sv[5];
    for (int i = 0; i < 5; i++)
        if (!(sv[i] = nnr_node_saved(node, i))) return nnr_last_status();
    attn_geom g = {.nd = (int)node->i[0], .causal = (int)node->i[1], .L = node->i[2], .S = node->i[3], .E = node->i[4],
                   .Ev = node->i[5], .heads = node->i[6], .scale = node->f[0]};
    if (!node->i[7]) sv[3] = NULL;            /* no mask: the slot held q */
    const nnr_tensor *q = sv[0], *k = sv[1], *v = sv[2];
    int64_t ks[NNR_MAX_DIMS], vs[NNR_MAX_DIMS];
    for (int d = 0; d < g.nd; d++) { ks[d] = d < g.nd - 2 ? q->sizes[d] : k->sizes[d]; vs[d] = d < g.nd - 2 ? q->sizes[d] : v->sizes[d]; }
    nnr_tensor *dq = nnr_tensor_alloc(q->dtype, g.nd, q->sizes, q->device);
    nnr_tensor *dk = nnr_full(q->dtype, g.nd, ks, 0.0, q->device), *dv = nnr_full(q->dtype, g.nd, vs, 0.0, q->device);
    int st = dq && dk && dv ? NNR_OK : nnr_last_status();
    int64_t step = block_rows(&g);
    for (int64_t l0 = 0; l0 < g.L && st == NNR_OK; l0 += step)
        st = back_block(&g, sv, dout, l0, l0 + step < g.L ? l0 + step : g.L, dq, dk, dv);
    if (st == NNR_OK) {
        nnr_tensor *gs[3] = {dq, dk, dv};
        for (int i = 0; i < 3 && st == NNR_OK; i++) {
            if (!node->in[i].node) { nnr_tensor_release(gs[i]); continue; }
            grads[i] = nnr_grad_for_input(node, i, gs[i]);      /* summed over broadcast batch dims; takes gs[i] */
            if (!grads[i]) st = nnr_last_status();
        }
        return st;
    }
    nnr_tensor_release(dq); nnr_tensor_release(dk); nnr_tensor_release(dv);
    return st;
}

static int check(const nnr_tensor *q, const nnr_tensor *k, const nnr_tensor *v, const nnr_tensor *mask, int causal)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF], c[NNR_SHAPE_BUF];
    if (q->ndim < 2 || k->ndim != q->ndim || v->ndim != q->ndim || k->sizes[k->ndim - 1] != q->sizes[q->ndim - 1] ||
        v->sizes[v->ndim - 2] != k->sizes[k->ndim - 2])
        return nnr_errorf(NNR_ERR_INVALID, "scaled_dot_product_attention: query %s, key %s and value %s do not fit "
                          "([..., L, E], [..., S, E], [..., S, Ev], the same number of dims)", nnr_shape_str(a, sizeof a, q->ndim, q->sizes),
                          nnr_shape_str(b, sizeof b, k->ndim, k->sizes), nnr_shape_str(c, sizeof c, v->ndim, v->sizes));
    for (int d = 0; d < q->ndim - 2; d++)
        if ((k->sizes[d] != q->sizes[d] && k->sizes[d] != 1) || (v->sizes[d] != q->sizes[d] && v->sizes[d] != 1))
            return nnr_errorf(NNR_ERR_INVALID, "scaled_dot_product_attention: the batch dims of key %s and value %s must be the query's %s or 1",
                              nnr_shape_str(b, sizeof b, k->ndim, k->sizes), nnr_shape_str(c, sizeof c, v->ndim, v->sizes),
                              nnr_shape_str(a, sizeof a, q->ndim, q->sizes));
    if (q->dtype != k->dtype || q->dtype != v->dtype || (q->dtype != NNR_F32 && q->dtype != NNR_F64))
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "scaled_dot_product_attention: query, key and value must be one dtype, f32 or f64 (got %s, %s, %s)",
                          nnr_dtype_name(q->dtype), nnr_dtype_name(k->dtype), nnr_dtype_name(v->dtype));
    if (mask && causal) return nnr_errorf(NNR_ERR_INVALID, "scaled_dot_product_attention: give attn_mask or is_causal, not both");
    if (mask && mask->dtype != NNR_BOOL && mask->dtype != q->dtype)
        return nnr_errorf(NNR_ERR_INVALID, "scaled_dot_product_attention: attn_mask must be bool or the query's dtype %s, got %s",
                          nnr_dtype_name(q->dtype), nnr_dtype_name(mask->dtype));
    if (mask && mask->requires_grad)
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "scaled_dot_product_attention: an attn_mask that requires grad is not supported (detach it)");
    int64_t shape[NNR_MAX_DIMS];
    int n;
    int64_t want[NNR_MAX_DIMS];
    for (int d = 0; d < q->ndim; d++) want[d] = d < q->ndim - 2 ? q->sizes[d] : d == q->ndim - 2 ? q->sizes[d] : k->sizes[k->ndim - 2];
    if (mask && (mask->ndim > q->ndim || nnr_broadcast_shapes("scaled_dot_product_attention: attn_mask", mask->ndim, mask->sizes, q->ndim,
                                                              want, &n, shape) != NNR_OK))
        return nnr_last_status();
    for (int d = 0; mask && d < q->ndim; d++)
        if (shape[d] != want[d])
            return nnr_errorf(NNR_ERR_INVALID, "scaled_dot_product_attention: attn_mask of shape %s does not broadcast to the scores' %s",
                              nnr_shape_str(a, sizeof a, mask->ndim, mask->sizes), nnr_shape_str(b, sizeof b, q->ndim, want));
    for (int i = 0; i < 3; i++) {
        const nnr_tensor *t = i == 0 ? k : i == 1 ? v : mask;
        if (t && t->device != q->device) return nnr_errorf(NNR_ERR_DEVICE, "scaled_dot_product_attention: every operand must be on the query's device");
    }
    return NNR_OK;
}

nnr_tensor *nnr_scaled_dot_product_attention(const nnr_tensor *q, const nnr_tensor *k, const nnr_tensor *v, const nnr_tensor *mask,
                                             int causal, double scale)
{
    if (check(q, k, v, mask, causal)) return NULL;
    attn_geom g = {.nd = q->ndim, .causal = causal != 0, .L = q->sizes[q->ndim - 2], .S = k->sizes[k->ndim - 2], .E = q->sizes[q->ndim - 1],
                   .Ev = v->sizes[v->ndim - 1], .heads = 1, .scale = scale};
    if (isinf(scale)) return nnr_errorf(NNR_ERR_INVALID, "scaled_dot_product_attention: scale must be finite, got %g", scale), NULL;
    if (scale != scale) g.scale = 1.0 / sqrt((double)(g.E > 0 ? g.E : 1));     /* NaN: the default */
    for (int d = 0; d < q->ndim - 2; d++) g.heads *= q->sizes[d];
    nnr_tensor *m = NULL;
    if (mask && mask->ndim < q->ndim) {       /* the mask's dims aligned to the scores' from the right */
        int64_t s[NNR_MAX_DIMS];
        for (int d = 0; d < q->ndim; d++) s[d] = d < q->ndim - mask->ndim ? 1 : mask->sizes[d - (q->ndim - mask->ndim)];
        if (!(m = nnr_reshape(mask, q->ndim, s))) return NULL;
        mask = m;
    }
    int64_t os[NNR_MAX_DIMS];
    for (int d = 0; d < q->ndim; d++) os[d] = d == q->ndim - 1 ? g.Ev : q->sizes[d];
    int prev = nnr_set_grad_enabled(0);
    nnr_tensor *out = nnr_tensor_alloc(q->dtype, q->ndim, os, q->device);
    int st = out ? attn_forward(&g, q, k, v, mask, out) : nnr_last_status();
    nnr_set_grad_enabled(prev);
    const nnr_tensor *in[3] = {q, k, v};
    if (st == NNR_OK && nnr_should_record(3, in)) {
        nnr_node *node = nnr_node_new("ScaledDotProductAttentionBackward", attn_backward, 3, in);
        if (!node) st = nnr_last_status();
        int64_t is[8] = {g.nd, g.causal, g.L, g.S, g.E, g.Ev, g.heads, mask != NULL};
        const nnr_tensor *keep[5] = {q, k, v, mask ? mask : q, out};
        for (int i = 0; node && i < 8; i++) node->i[i] = is[i];
        if (node) node->f[0] = g.scale;
        for (int i = 0; node && st == NNR_OK && i < 5; i++) st = nnr_save(node, keep[i], i == 4);
        if (node) st = nnr_node_finish(out, node, st);
    }
    nnr_tensor_release(m);
    if (st) { nnr_tensor_release(out); return NULL; }
    return out;
}

/* Decoding: one new position of N sequences against their key/value caches, one backend op
 * (ATTN_DECODE, ABI 1.7): the new keys and values are written into the caches at position past and
 * the one query of each head attends to positions 0..past. Inference only: it records no gradient
 * (a cache is not a graph), and refuses operands that require one while gradients are on. */
static int decode_check(const nnr_tensor *qkv, const nnr_tensor *k, const nnr_tensor *v, int64_t past, int64_t heads, double scale)
{
    const char *op = "attention_decode";
    if (!qkv || !k || !v) return nnr_errorf(NNR_ERR_INVALID, "%s: qkv, the key cache and the value cache are required", op);
    if (qkv->dtype != NNR_F32 && qkv->dtype != NNR_F64) return nnr_errorf(NNR_ERR_INVALID, "%s: qkv must be f32 or f64, got %s", op, nnr_dtype_name(qkv->dtype));
    if (k->dtype != qkv->dtype || v->dtype != qkv->dtype) return nnr_errorf(NNR_ERR_INVALID, "%s: the caches must be %s like qkv", op, nnr_dtype_name(qkv->dtype));
    if (k->device != qkv->device || v->device != qkv->device) return nnr_errorf(NNR_ERR_DEVICE, "%s: every operand must be on qkv's device", op);
    if (qkv->ndim != 2 || qkv->sizes[1] % 3 != 0 || heads < 1 || (qkv->sizes[1] / 3) % heads != 0) {
        char a[96];
        return nnr_errorf(NNR_ERR_INVALID, "%s: qkv must be [N, 3E] with E divisible by the %lld heads, got %s", op, (long long)heads,
                          nnr_shape_str(a, sizeof a, qkv->ndim, qkv->sizes));
    }
    int64_t N = qkv->sizes[0], d = qkv->sizes[1] / 3 / heads;
    if (k->ndim != 3 || v->ndim != 3 || k->sizes[0] != N * heads || k->sizes[2] != d || v->sizes[0] != N * heads || v->sizes[1] != k->sizes[1] ||
        v->sizes[2] != d) {
        char a[96], b[96];
        return nnr_errorf(NNR_ERR_INVALID, "%s: the caches must both be [N * heads, capacity, head_dim] = [%lld, *, %lld], got %s and %s", op,
                          (long long)(N * heads), (long long)d, nnr_shape_str(a, sizeof a, k->ndim, k->sizes), nnr_shape_str(b, sizeof b, v->ndim, v->sizes));
    }
    if (past < 0 || past >= k->sizes[1])
        return nnr_errorf(NNR_ERR_INVALID, "%s: position %lld is outside the caches' capacity of %lld", op, (long long)past, (long long)k->sizes[1]);
    if (!nnr_tensor_is_contiguous(qkv) || !nnr_tensor_is_contiguous(k) || !nnr_tensor_is_contiguous(v))
        return nnr_errorf(NNR_ERR_INVALID, "%s: qkv and the caches must be contiguous", op);
    if (isinf(scale)) return nnr_errorf(NNR_ERR_INVALID, "%s: scale must be finite, got %g", op, scale);
    if (nnr_is_grad_enabled() && (nnr_requires_grad(qkv) || nnr_requires_grad(k) || nnr_requires_grad(v)))
        return nnr_errorf(NNR_ERR_INVALID, "%s: records no gradient; run it without gradients (nnr.no_grad) or use scaled_dot_product_attention", op);
    return NNR_OK;
}

nnr_tensor *nnr_attention_decode(const nnr_tensor *qkv, nnr_tensor *k, nnr_tensor *v, int64_t past, int64_t heads, double scale)
{
    if (decode_check(qkv, k, v, past, heads, scale)) return NULL;
    int64_t os[2] = {qkv->sizes[0], qkv->sizes[1] / 3};
    nnr_tensor *out = nnr_tensor_alloc(qkv->dtype, 2, os, qkv->device);
    if (!out) return NULL;
    nnr_op_params p = {.struct_size = sizeof p};
    p.i[0] = past;
    p.i[1] = heads;
    p.f[0] = scale;
    nnr_tensor *in[1] = {(nnr_tensor *)qkv}, *o[3] = {out, k, v};
    int st = NNR_OK;
    for (int i = 1; i < 3 && st == NNR_OK; i++) st = nnr_autograd_check_inplace("attention_decode", o[i]);    /* bumps the versions */
    if (st == NNR_OK) st = nnr_run_tensors("attention_decode", NNR_OP_ATTN_DECODE, qkv->device, 1, in, 3, o, &p);
    if (st) { nnr_tensor_release(out); return NULL; }
    return out;
}

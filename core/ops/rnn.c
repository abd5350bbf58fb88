/* Recurrent layers: one layer and one direction of RNN (tanh, relu), LSTM (with an optional
 * projection) or GRU over a whole time-major sequence, in C: the input projection of every time step
 * in one linear, then per step the recurrent linear and one RNN_CELL call (the gate nonlinearities);
 * no host code runs per step. What it records is one node for the sequence, whose backward runs the
 * steps in reverse with RNN_CELL_BACKWARD and then computes the weights' gradients in a few large
 * gemms over all steps at once (dW_ih = dG^T X, dW_hh = dG_h^T H_prev), as cuDNN does. The backward is
 * not itself recorded: create_graph through it is an error naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ops/internal.h"

enum { IN_X, IN_H0, IN_C0, IN_WIH, IN_WHH, IN_BIH, IN_BHH, IN_WHR, IN_COUNT };
/* what the node keeps: the operands its backward reads, then the forward's own tensors */
enum { SV_X, SV_H0, SV_C0, SV_WIH, SV_WHH, SV_WHR, SV_Y, SV_ACT, SV_C, SV_HPRE };

typedef struct rnn_geom {
    int mode, reverse, gates;
    int64_t T, B, I, H, P;
    int has_c0, has_bias, has_proj;
} rnn_geom;

static const char *const NAMES[4] = {"rnn_tanh", "rnn_relu", "lstm", "gru"};
static const char *const NODE_NAMES[4] = {"RNNTanhBackward", "RNNReluBackward", "LSTMBackward", "GRUBackward"};

static int shape_is(const nnr_tensor *t, int ndim, int64_t a, int64_t b, int64_t c)
{
    int64_t want[3] = {a, b, c};
    if (!t || t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++) if (t->sizes[i] != want[i]) return 0;
    return 1;
}

static int bad_shape(const char *op, const char *what, const nnr_tensor *t, const char *want)
{
    char a[NNR_SHAPE_BUF];
    if (!t) return nnr_errorf(NNR_ERR_INVALID, "%s: %s is missing (expected %s)", op, what, want);
    return nnr_errorf(NNR_ERR_INVALID, "%s: %s has shape %s, expected %s", op, what, nnr_shape_str(a, sizeof a, t->ndim, t->sizes), want);
}

/* checks every operand against x's and the weights' sizes; fills g */
static int check(const nnr_tensor *const *in, rnn_geom *g)
{
    const char *op = NAMES[g->mode];
    char want[96];
    const nnr_tensor *x = in[IN_X], *wih = in[IN_WIH], *whh = in[IN_WHH];
    if (!x || x->ndim != 3) return bad_shape(op, "input", x, "[T, B, input_size]");
    if (!wih || wih->ndim != 2 || wih->sizes[0] % g->gates || wih->sizes[0] == 0)
        return bad_shape(op, "weight_ih", wih, g->gates == 1 ? "[hidden_size, input_size]" : "[gates * hidden_size, input_size]");
    g->T = x->sizes[0]; g->B = x->sizes[1]; g->I = x->sizes[2]; g->H = wih->sizes[0] / g->gates;
    g->has_proj = in[IN_WHR] != NULL;
    if (g->has_proj && g->mode != NNR_RNN_LSTM) return nnr_errorf(NNR_ERR_INVALID, "%s: a projection (weight_hr) is for LSTM only", op);
    g->P = g->has_proj ? in[IN_WHR]->sizes[0] : g->H;
    if (g->T < 1 || g->B < 1) return bad_shape(op, "input", x, "at least one time step and one sequence");
    snprintf(want, sizeof want, "[%lld, %lld]", (long long)(g->gates * g->H), (long long)g->I);
    if (wih->sizes[1] != g->I) return bad_shape(op, "weight_ih", wih, want);
    snprintf(want, sizeof want, "[%lld, %lld]", (long long)(g->gates * g->H), (long long)g->P);
    if (!shape_is(whh, 2, g->gates * g->H, g->P, 0)) return bad_shape(op, "weight_hh", whh, want);
    if (g->has_proj && !shape_is(in[IN_WHR], 2, g->P, g->H, 0)) {
        snprintf(want, sizeof want, "[proj_size, %lld]", (long long)g->H);
        return bad_shape(op, "weight_hr", in[IN_WHR], want);
    }
    g->has_bias = in[IN_BIH] != NULL;
    if ((in[IN_BHH] != NULL) != g->has_bias) return nnr_errorf(NNR_ERR_INVALID, "%s: give both biases or neither", op);
    snprintf(want, sizeof want, "[%lld]", (long long)(g->gates * g->H));
    if (g->has_bias && !shape_is(in[IN_BIH], 1, g->gates * g->H, 0, 0)) return bad_shape(op, "bias_ih", in[IN_BIH], want);
    if (g->has_bias && !shape_is(in[IN_BHH], 1, g->gates * g->H, 0, 0)) return bad_shape(op, "bias_hh", in[IN_BHH], want);
    snprintf(want, sizeof want, "[%lld, %lld]", (long long)g->B, (long long)g->P);
    if (!shape_is(in[IN_H0], 2, g->B, g->P, 0)) return bad_shape(op, "the initial hidden state", in[IN_H0], want);
    g->has_c0 = g->mode == NNR_RNN_LSTM;
    snprintf(want, sizeof want, "[%lld, %lld]", (long long)g->B, (long long)g->H);
    if (g->has_c0 && !shape_is(in[IN_C0], 2, g->B, g->H, 0)) return bad_shape(op, "the initial cell state", in[IN_C0], want);
    if (!g->has_c0 && in[IN_C0]) return nnr_errorf(NNR_ERR_INVALID, "%s: a cell state is for LSTM only", op);
    for (int k = 0; k < IN_COUNT; k++) {
        if (!in[k]) continue;
        if (in[k]->dtype != x->dtype || (x->dtype != NNR_F32 && x->dtype != NNR_F64))
            return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: every operand must be f32 or f64, all one dtype (input %s, an operand %s)", op,
                              nnr_dtype_name(x->dtype), nnr_dtype_name(in[k]->dtype));
        if (in[k]->device != x->device) return nnr_errorf(NNR_ERR_DEVICE, "%s: every operand must be on the input's device", op);
    }
    return NNR_OK;
}

/* ---------------- the forward ---------------- */

/* x W^T (+ b) for a weight every time step reuses: one LINEAR call keyed by the weight's storage and
 * version, so the backend may keep it packed across the steps (plugin.h); nnr_linear where the
 * backend does not take LINEAR for these operands */
static nnr_tensor *step_linear(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *b)
{
    if (!nnr_backend_knows(x->device, 6) || !nnr_tensor_is_contiguous(x) || !nnr_tensor_is_contiguous(w) ||
        (b && !nnr_tensor_is_contiguous(b)) || x->ndim != 2)
        return nnr_linear(x, w, b);
    int64_t ys[2] = {x->sizes[0], w->sizes[0]};
    nnr_tensor *y = nnr_tensor_alloc(x->dtype, 2, ys, x->device);
    if (!y) return NULL;
    nnr_tensor *ins[3] = {(nnr_tensor *)x, (nnr_tensor *)w, (nnr_tensor *)b};
    nnr_op_params p = {.struct_size = sizeof p};
    p.i[1] = (int64_t)w->storage->uid;
    p.i[2] = atomic_load(&w->storage->version);
    int n = b ? 3 : 2;
    if (!nnr_backend_takes(x->device, NNR_OP_LINEAR, n, ins, 1, &y, &p)) {
        nnr_tensor_release(y);
        return nnr_linear(x, w, b);
    }
    if (nnr_run_tensors("linear", NNR_OP_LINEAR, x->device, n, ins, 1, &y, &p)) { nnr_tensor_release(y); return NULL; }
    return y;
}

typedef struct rnn_fwd {
    nnr_tensor *xw;                 /* [T * B, G * H] */
    nnr_tensor *y, *act, *c, *hpre; /* [T, B, P], [T, B, 4H], [T, B, H] (LSTM), [T, B, H] (projection) */
} rnn_fwd;

static nnr_tensor *step_of(const nnr_tensor *t, int64_t i) { return t ? nnr_select(t, 0, i) : NULL; }

/* one time step t, from the state (h, c) of the step before */
static int run_step(const rnn_geom *g, const nnr_tensor *const *in, rnn_fwd *f, int64_t t, const nnr_tensor *h, const nnr_tensor *c)
{
    nnr_op_params p = {.struct_size = sizeof p};
    p.i[0] = g->mode;
    nnr_tensor *xw_rows = nnr_narrow(f->xw, 0, t * g->B, g->B);
    nnr_tensor *hw = step_linear(h, in[IN_WHH], in[IN_BHH]);
    nnr_tensor *yt = step_of(f->y, t), *at = step_of(f->act, t), *ct = step_of(f->c, t), *pt = step_of(f->hpre, t);
    int st = xw_rows && hw && yt && (!f->act || at) && (!f->c || ct) && (!f->hpre || pt) ? NNR_OK : nnr_last_status();
    if (st == NNR_OK) {
        nnr_tensor *ins[3] = {xw_rows, hw, (nnr_tensor *)(g->mode == NNR_RNN_LSTM ? c : h)};
        nnr_tensor *outs[3] = {pt ? pt : yt, at, ct};
        int nin = g->mode <= NNR_RNN_RELU ? 2 : 3, nout = g->mode <= NNR_RNN_RELU ? 1 : g->mode == NNR_RNN_LSTM ? 3 : 2;
        st = nnr_run_tensors(NAMES[g->mode], NNR_OP_RNN_CELL, h->device, nin, ins, nout, outs, &p);
    }
    if (st == NNR_OK && pt) {                       /* the projection: y_t = hpre_t W_hr^T */
        nnr_tensor *r = nnr_linear(pt, in[IN_WHR], NULL);
        st = r ? nnr_copy_(yt, r) : nnr_last_status();
        nnr_tensor_release(r);
    }
    nnr_tensor *all[6] = {xw_rows, hw, yt, at, ct, pt};
    nnr_release_all(6, all);
    return st;
}

static int forward(const rnn_geom *g, const nnr_tensor *const *in, rnn_fwd *f)
{
    int dt = in[IN_X]->dtype, dev = in[IN_X]->device;
    int64_t xs[2] = {g->T * g->B, g->I}, ys[3] = {g->T, g->B, g->P}, as[3] = {g->T, g->B, 4 * g->H}, cs[3] = {g->T, g->B, g->H};
    nnr_tensor *xc = nnr_contiguous(in[IN_X]);
    nnr_tensor *x2 = xc ? nnr_view(xc, 2, xs) : NULL;
    f->xw = x2 ? nnr_linear(x2, in[IN_WIH], in[IN_BIH]) : NULL;
    nnr_tensor_release(x2);
    nnr_tensor_release(xc);
    f->y = nnr_tensor_alloc(dt, 3, ys, dev);
    if (g->mode >= NNR_RNN_LSTM) f->act = nnr_tensor_alloc(dt, 3, as, dev);
    if (g->mode == NNR_RNN_LSTM) f->c = nnr_tensor_alloc(dt, 3, cs, dev);
    if (g->has_proj) f->hpre = nnr_tensor_alloc(dt, 3, cs, dev);
    if (!f->xw || !f->y || (g->mode >= NNR_RNN_LSTM && !f->act) || (g->mode == NNR_RNN_LSTM && !f->c) || (g->has_proj && !f->hpre))
        return nnr_last_status();
    const nnr_tensor *h = in[IN_H0], *c = in[IN_C0];
    nnr_tensor *hv = NULL, *cv = NULL;
    int st = NNR_OK;
    for (int64_t s = 0; s < g->T && st == NNR_OK; s++) {
        int64_t t = g->reverse ? g->T - 1 - s : s;
        st = run_step(g, in, f, t, h, c);
        nnr_tensor_release(hv);
        nnr_tensor_release(cv);
        hv = step_of(f->y, t);
        cv = step_of(f->c, t);
        h = hv;
        c = cv;
        if (st == NNR_OK && (!hv || (f->c && !cv))) st = nnr_last_status();
    }
    nnr_tensor_release(hv);
    nnr_tensor_release(cv);
    return st;
}

/* ---------------- the backward ---------------- */

typedef struct rnn_bwd {
    rnn_geom g;
    const nnr_tensor *x, *h0, *c0, *wih, *whh, *whr, *y, *act, *c, *hpre;
    nnr_tensor *whh_t;              /* W_hh^T, contiguous [P, G*H]: dh_prev = dhw W_hh as a keyed linear */
    nnr_tensor *dxw, *dhw, *dht;    /* [T, B, G*H] (dhw: GRU's own, else dxw), [T, B, P] (projection) */
} rnn_bwd;

/* the state before step t in processing order: h0 (c0) at the first step */
static nnr_tensor *before(const rnn_bwd *b, const nnr_tensor *all, const nnr_tensor *first, int64_t s, int64_t t)
{
    if (s == 0) { nnr_tensor_retain((nnr_tensor *)first); return (nnr_tensor *)first; }
    return nnr_select(all, 0, b->g.reverse ? t + 1 : t - 1);
}

/* one step back: from dh (the gradient reaching h_t besides gy_t) and dc, the gates' gradients into
 * dxw[t] (and dhw[t]), and the state's gradients before the step into *dh_prev, *dc_prev */
static int back_step(rnn_bwd *b, const nnr_tensor *gy, int64_t s, nnr_tensor *dh, nnr_tensor *dc, nnr_tensor **dh_prev,
                     nnr_tensor **dc_prev)
{
    const rnn_geom *g = &b->g;
    int64_t t = g->reverse ? g->T - 1 - s : s, bh[2] = {g->B, g->H};
    nnr_tensor *gyt = gy ? nnr_select(gy, 0, t) : NULL;
    nnr_tensor *dht = gyt ? nnr_binary(NNR_OP_ADD, dh, gyt) : (nnr_tensor_retain(dh), dh);
    nnr_tensor *dcell = NULL, *hprev = before(b, b->y, b->h0, s, t), *cprev = g->mode == NNR_RNN_LSTM ? before(b, b->c, b->c0, s, t) : NULL;
    nnr_tensor *dxt = nnr_select(b->dxw, 0, t), *dhwt = b->dhw != b->dxw ? nnr_select(b->dhw, 0, t) : NULL;
    nnr_tensor *act = b->act ? nnr_select(b->act, 0, t) : nnr_select(b->y, 0, t), *direct = NULL;
    int st = dht && hprev && dxt && act && (g->mode != NNR_RNN_LSTM || cprev) && (!dhwt == (b->dhw == b->dxw)) ? NNR_OK : nnr_last_status();
    if (st == NNR_OK && g->has_proj) {              /* through y_t = hpre_t W_hr^T */
        nnr_tensor *keep = nnr_select(b->dht, 0, t);
        st = keep ? nnr_copy_(keep, dht) : nnr_last_status();
        nnr_tensor_release(keep);
        if (st == NNR_OK && !(dcell = nnr_matmul(dht, b->whr))) st = nnr_last_status();
    } else if (st == NNR_OK) {
        dcell = dht;
        nnr_tensor_retain(dht);
    }
    if (st == NNR_OK && g->mode == NNR_RNN_LSTM && !(*dc_prev = nnr_tensor_alloc(dh->dtype, 2, bh, dh->device))) st = nnr_last_status();
    if (st == NNR_OK && g->mode == NNR_RNN_GRU && !(direct = nnr_tensor_alloc(dh->dtype, 2, bh, dh->device))) st = nnr_last_status();
    if (st == NNR_OK) {
        nnr_op_params p = {.struct_size = sizeof p};
        p.i[0] = g->mode;
        nnr_tensor *lstm_in[4] = {dcell, dc, act, cprev}, *gru_in[3] = {dcell, act, hprev}, *rnn_in[2] = {dcell, act};
        nnr_tensor *lstm_out[2] = {dxt, *dc_prev}, *gru_out[3] = {dxt, dhwt, direct}, *rnn_out[1] = {dxt};
        nnr_tensor **ins = g->mode == NNR_RNN_LSTM ? lstm_in : g->mode == NNR_RNN_GRU ? gru_in : rnn_in;
        nnr_tensor **outs = g->mode == NNR_RNN_LSTM ? lstm_out : g->mode == NNR_RNN_GRU ? gru_out : rnn_out;
        int nin = g->mode == NNR_RNN_LSTM ? 4 : g->mode == NNR_RNN_GRU ? 3 : 2, nout = g->mode == NNR_RNN_LSTM ? 2 : g->mode == NNR_RNN_GRU ? 3 : 1;
        st = nnr_run_tensors(NAMES[g->mode], NNR_OP_RNN_CELL_BACKWARD, dh->device, nin, ins, nout, outs, &p);
    }
    if (st == NNR_OK) {                             /* dh_prev = dhw_t W_hh (+ GRU's z dh) */
        nnr_tensor *m = step_linear(dhwt ? dhwt : dxt, b->whh_t, NULL);
        *dh_prev = m && direct ? nnr_binary(NNR_OP_ADD, m, direct) : m;
        if (direct && m) nnr_tensor_release(m);
        if (!*dh_prev) st = nnr_last_status();
    }
    nnr_tensor *all[9] = {gyt, dht, dcell, hprev, cprev, dxt, dhwt, act, direct};
    nnr_release_all(9, all);
    return st;
}

/* [T * B, n] of a [T, B, n] tensor */
static nnr_tensor *rows_of(const nnr_tensor *t)
{
    int64_t s[2] = {t->sizes[0] * t->sizes[1], t->sizes[2]};
    nnr_tensor *c = nnr_contiguous(t), *v = c ? nnr_view(c, 2, s) : NULL;
    nnr_tensor_release(c);
    return v;
}

/* a^T b over rows: [T*B, m]^T @ [T*B, n] -> [m, n] */
static nnr_tensor *outer_sum(const nnr_tensor *a, const nnr_tensor *b)
{
    nnr_tensor *ar = rows_of(a), *br = rows_of(b), *at = ar ? nnr_transpose(ar, 0, 1) : NULL;
    nnr_tensor *r = at && br ? nnr_matmul(at, br) : NULL;
    nnr_tensor_release(ar); nnr_tensor_release(br); nnr_tensor_release(at);
    return r;
}

/* the column sums of a [T, B, n] tensor as one gemv, ones [1, T*B] @ a: a reduction over the leading
 * dims walks the columns with a stride (it took 15% of an LSTM's step) */
static nnr_tensor *row_sum(const nnr_tensor *a)
{
    int64_t os[2] = {1, a->sizes[0] * a->sizes[1]}, n = a->sizes[2];
    nnr_tensor *ones = nnr_full(a->dtype, 2, os, 1.0, a->device), *ar = rows_of(a);
    nnr_tensor *r = ones && ar ? nnr_matmul(ones, ar) : NULL, *v = r ? nnr_view(r, 1, &n) : NULL;
    nnr_tensor_release(ones); nnr_tensor_release(ar); nnr_tensor_release(r);
    return v;
}

/* every step's h_prev, in the time order of y: [h0, y_1 .. y_T-1], or reversed */
static nnr_tensor *h_prev_all(const rnn_bwd *b)
{
    const rnn_geom *g = &b->g;
    nnr_tensor *h0 = nnr_unsqueeze(b->h0, 0);
    if (g->T == 1 || !h0) return h0;
    nnr_tensor *rest = nnr_narrow(b->y, 0, g->reverse ? 1 : 0, g->T - 1);
    nnr_tensor *parts[2] = {g->reverse ? rest : h0, g->reverse ? h0 : rest};
    nnr_tensor *r = rest ? nnr_cat(2, parts, 0) : NULL;
    nnr_tensor_release(h0);
    nnr_tensor_release(rest);
    return r;
}

/* the weights' and the input's gradients from every step's gates at once; grads by node input */
static int weight_grads(nnr_node *node, rnn_bwd *b, nnr_tensor **grads)
{
    const rnn_geom *g = &b->g;
    int k = 0, slot[IN_COUNT];
    for (int i = 0; i < IN_COUNT; i++) {
        int present = i == IN_C0 ? g->has_c0 : i == IN_BIH || i == IN_BHH ? g->has_bias : i == IN_WHR ? g->has_proj : 1;
        slot[i] = present ? k++ : -1;
    }
    int64_t xs[3] = {g->T, g->B, g->I};
    nnr_tensor *dxr = node->in[slot[IN_X]].node ? rows_of(b->dxw) : NULL;
    if (dxr) {
        nnr_tensor *m = nnr_matmul(dxr, b->wih);
        grads[slot[IN_X]] = m ? nnr_view(m, 3, xs) : NULL;
        nnr_tensor_release(m);
        nnr_tensor_release(dxr);
        if (!grads[slot[IN_X]]) return nnr_last_status();
    }
    if (node->in[slot[IN_WIH]].node && !(grads[slot[IN_WIH]] = outer_sum(b->dxw, b->x))) return nnr_last_status();
    if (node->in[slot[IN_WHH]].node) {
        nnr_tensor *hp = h_prev_all(b);
        grads[slot[IN_WHH]] = hp ? outer_sum(b->dhw, hp) : NULL;
        nnr_tensor_release(hp);
        if (!grads[slot[IN_WHH]]) return nnr_last_status();
    }
    if (g->has_bias && node->in[slot[IN_BIH]].node && !(grads[slot[IN_BIH]] = row_sum(b->dxw))) return nnr_last_status();
    if (g->has_bias && node->in[slot[IN_BHH]].node && !(grads[slot[IN_BHH]] = row_sum(b->dhw))) return nnr_last_status();
    if (g->has_proj && node->in[slot[IN_WHR]].node && !(grads[slot[IN_WHR]] = outer_sum(b->dht, b->hpre))) return nnr_last_status();
    return NNR_OK;
}

static int rnn_backward(nnr_node *node, const nnr_tensor *gy, nnr_tensor **grads)
{
    rnn_bwd b = {.g = {.mode = (int)node->i[0], .reverse = (int)node->i[1], .has_bias = (int)node->i[2], .has_proj = (int)node->i[3]}};
    rnn_geom *g = &b.g;
    const nnr_tensor **sv[10] = {&b.x, &b.h0, &b.c0, &b.wih, &b.whh, &b.whr, &b.y, &b.act, &b.c, &b.hpre};
    for (int k = 0; k < 10; k++)
        if (!(*sv[k] = nnr_node_saved(node, k))) return nnr_last_status();
    g->has_c0 = g->mode == NNR_RNN_LSTM;
    g->gates = g->mode == NNR_RNN_LSTM ? 4 : g->mode == NNR_RNN_GRU ? 3 : 1;
    if (!g->has_c0) b.c0 = b.c = NULL;
    if (g->mode < NNR_RNN_LSTM) b.act = NULL;
    if (!g->has_proj) b.whr = b.hpre = NULL;
    g->T = b.x->sizes[0]; g->B = b.x->sizes[1]; g->I = b.x->sizes[2]; g->H = b.wih->sizes[0] / g->gates; g->P = b.whh->sizes[1];
    int dt = b.x->dtype, dev = b.x->device;
    int64_t gs[3] = {g->T, g->B, g->gates * g->H}, ps[3] = {g->T, g->B, g->P}, bp[2] = {g->B, g->P}, bh[2] = {g->B, g->H};
    nnr_tensor *wt = nnr_transpose(b.whh, 0, 1);
    b.whh_t = wt ? nnr_contiguous(wt) : NULL;
    nnr_tensor_release(wt);
    b.dxw = nnr_tensor_alloc(dt, 3, gs, dev);
    b.dhw = g->mode == NNR_RNN_GRU ? nnr_tensor_alloc(dt, 3, gs, dev) : b.dxw;
    if (g->has_proj) b.dht = nnr_tensor_alloc(dt, 3, ps, dev);
    const nnr_tensor *ghn = node->pending_more[0], *gcn = node->n_outputs > 2 ? node->pending_more[1] : NULL;
    nnr_tensor *dh = ghn ? nnr_clone(ghn) : nnr_full(dt, 2, bp, 0.0, dev);
    nnr_tensor *dc = g->has_c0 ? (gcn ? nnr_clone(gcn) : nnr_full(dt, 2, bh, 0.0, dev)) : NULL;
    int st = b.whh_t && b.dxw && b.dhw && (!g->has_proj || b.dht) && dh && (!g->has_c0 || dc) ? NNR_OK : nnr_last_status();
    for (int64_t s = g->T - 1; s >= 0 && st == NNR_OK; s--) {
        nnr_tensor *dh_prev = NULL, *dc_prev = NULL;
        st = back_step(&b, gy, s, dh, dc, &dh_prev, &dc_prev);
        nnr_tensor_release(dh);
        nnr_tensor_release(dc);
        dh = dh_prev;
        dc = dc_prev;
    }
    if (st == NNR_OK) st = weight_grads(node, &b, grads);
    if (st == NNR_OK && node->in[1].node) { grads[1] = dh; dh = NULL; }
    if (st == NNR_OK && g->has_c0 && node->in[2].node) { grads[2] = dc; dc = NULL; }
    nnr_tensor *all[6] = {dh, dc, b.dxw, b.dhw != b.dxw ? b.dhw : NULL, b.dht, b.whh_t};
    nnr_release_all(6, all);
    return st;
}

/* ---------------- front end ---------------- */

static int record(const rnn_geom *g, const nnr_tensor *const *in, rnn_fwd *f, nnr_tensor **outs, int nout)
{
    const nnr_tensor *list[IN_COUNT];
    int n = 0;
    for (int k = 0; k < IN_COUNT; k++) if (in[k]) list[n++] = in[k];
    nnr_node *node = nnr_node_new(NODE_NAMES[g->mode], rnn_backward, n, list);
    if (!node) return nnr_last_status();
    node->i[0] = g->mode; node->i[1] = g->reverse; node->i[2] = g->has_bias; node->i[3] = g->has_proj;
    node->n_outputs = nout;
    node->pending_more = calloc((size_t)nout - 1, sizeof *node->pending_more);
    const nnr_tensor *keep[10] = {in[IN_X], in[IN_H0], in[IN_C0], in[IN_WIH], in[IN_WHH], in[IN_WHR], f->y, f->act, f->c, f->hpre};
    int st = node->pending_more ? NNR_OK : nnr_errorf(NNR_ERR_OOM, "%s: out of memory", NAMES[g->mode]);
    for (int k = 0; k < 10 && st == NNR_OK; k++) st = nnr_save(node, keep[k] ? keep[k] : in[IN_X], k == SV_Y);
    if (st) {
        if (!node->pending_more) node->n_outputs = 1;
        nnr_node_release(node);
        return st;
    }
    for (int k = 0; k < nout; k++) {
        atomic_fetch_add(&node->refcount, 1);
        nnr_node_attach(outs[k], node);
        outs[k]->output_nr = (int8_t)k;
    }
    nnr_node_release(node);
    return NNR_OK;
}

int nnr_rnn_layer(int mode, int reverse, const nnr_tensor *x, const nnr_tensor *h0, const nnr_tensor *c0, const nnr_tensor *w_ih,
                  const nnr_tensor *w_hh, const nnr_tensor *b_ih, const nnr_tensor *b_hh, const nnr_tensor *w_hr, nnr_tensor **y,
                  nnr_tensor **h_n, nnr_tensor **c_n)
{
    *y = *h_n = NULL;
    if (c_n) *c_n = NULL;
    if (mode < NNR_RNN_TANH || mode > NNR_RNN_GRU) return nnr_errorf(NNR_ERR_INVALID, "rnn: unknown mode %d", mode);
    const nnr_tensor *in[IN_COUNT] = {x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr};
    rnn_geom g = {.mode = mode, .reverse = reverse != 0, .gates = mode == NNR_RNN_LSTM ? 4 : mode == NNR_RNN_GRU ? 3 : 1};
    int st = check(in, &g);
    if (st) return st;
    if (mode == NNR_RNN_LSTM && !c_n) return nnr_errorf(NNR_ERR_INVALID, "lstm: no place for the final cell state");
    rnn_fwd f = {0};
    int prev = nnr_set_grad_enabled(0);
    st = forward(&g, in, &f);
    nnr_tensor *last_y = st == NNR_OK ? nnr_select(f.y, 0, g.reverse ? 0 : g.T - 1) : NULL;
    nnr_tensor *last_c = st == NNR_OK && f.c ? nnr_select(f.c, 0, g.reverse ? 0 : g.T - 1) : NULL;
    nnr_tensor *hn = last_y ? nnr_clone(last_y) : NULL, *cn = last_c ? nnr_clone(last_c) : NULL;
    nnr_set_grad_enabled(prev);
    nnr_tensor_release(last_y);
    nnr_tensor_release(last_c);
    if (st == NNR_OK && (!hn || (f.c && !cn))) st = nnr_last_status();
    nnr_tensor *outs[3] = {f.y, hn, cn};
    int nout = mode == NNR_RNN_LSTM ? 3 : 2;
    if (st == NNR_OK && nnr_should_record(IN_COUNT, in)) st = record(&g, in, &f, outs, nout);
    nnr_tensor_release(f.xw);
    nnr_tensor_release(f.act);
    nnr_tensor_release(f.c);
    nnr_tensor_release(f.hpre);
    if (st) { nnr_release_all(3, outs); return st; }
    *y = f.y;
    *h_n = hn;
    if (c_n) *c_n = cn;
    return NNR_OK;
}

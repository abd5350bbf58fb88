/* Operand checks of ops whose layout the op table's counts do not say, shared by the backends that
 * run them (each its supports() and its run), so that a layout is accepted alike everywhere. Included
 * by plugin.h; part of the installed headers, no ABI of its own (inline functions over plugin.h's
 * structs). */
#ifndef NNR_PLUGIN_CALLS_H
#define NNR_PLUGIN_CALLS_H

#include "plugin.h"

/* an ATTN_DECODE call laid out as the op table says: one input and three outputs of one dtype, f32 or
 * f64, all contiguous */
static inline int nnr_attn_decode_call_ok(const nnr_op_call *call)
{
    if (call->n_inputs != 1 || call->n_outputs != 3) return 0;
    int dt = call->inputs[0]->dtype;
    if (dt != NNR_F32 && dt != NNR_F64) return 0;
    for (int k = 0; k < 3; k++)
        if (call->outputs[k]->dtype != dt || !nnr_desc_is_contiguous(call->outputs[k])) return 0;
    return nnr_desc_is_contiguous(call->inputs[0]);
}

/* ATTN_DECODE's sizes: N sequences, H heads of d (E = H d), caches of cap positions, position p.
 * nnr_attn_decode_geometry fills them: 0, or 1 when the operands are not qkv [N, 3E], caches
 * [N * heads, capacity, head_dim] and o [N, E] (ranks, H, 3E divisible), 2 when their sizes do not fit */
typedef struct nnr_attn_decode_geom { int64_t N, H, E, d, cap, p; } nnr_attn_decode_geom;
static inline int nnr_attn_decode_geometry(const nnr_op_call *call, nnr_attn_decode_geom *g)
{
    const nnr_tensor_desc *qkv = call->inputs[0], *o = call->outputs[0], *k = call->outputs[1], *v = call->outputs[2];
    g->H = call->params->i[1];
    g->p = call->params->i[0];
    if (qkv->ndim != 2 || g->H < 1 || qkv->sizes[1] % (3 * g->H) != 0 || k->ndim != 3 || v->ndim != 3 || o->ndim != 2) return 1;
    g->N = qkv->sizes[0];
    g->E = qkv->sizes[1] / 3;
    g->d = g->E / g->H;
    g->cap = k->sizes[1];
    if (o->sizes[0] != g->N || o->sizes[1] != g->E || k->sizes[0] != g->N * g->H || k->sizes[2] != g->d || v->sizes[0] != k->sizes[0] ||
        v->sizes[1] != g->cap || v->sizes[2] != g->d || g->p < 0 || g->p >= g->cap)
        return 2;
    return 0;
}

/* an RNN_CELL or RNN_CELL_BACKWARD call laid out as the op table says: a known mode (params i[0])
 * with its operand counts, f32 or f64 throughout, every operand 2-d with unit column stride */
static inline int nnr_rnn_cell_call_ok(const nnr_op_call *call)
{
    /* inputs and outputs of each mode: forward, then backward (tanh, relu, LSTM, GRU) */
    static const int counts[4][4] = {{2, 1, 2, 1}, {2, 1, 2, 1}, {3, 3, 4, 2}, {3, 2, 3, 3}};
    int mode = call->params ? (int)call->params->i[0] : -1, back = call->op == NNR_OP_RNN_CELL_BACKWARD;
    if (mode < 0 || mode > 3 || call->n_inputs != counts[mode][back * 2] || call->n_outputs != counts[mode][back * 2 + 1]) return 0;
    int dt = call->inputs[0]->dtype;
    if (dt != NNR_F32 && dt != NNR_F64) return 0;
    for (int k = 0; k < call->n_inputs; k++)
        if (call->inputs[k]->dtype != dt || call->inputs[k]->ndim != 2 || call->inputs[k]->strides[1] != 1) return 0;
    for (int k = 0; k < call->n_outputs; k++)
        if (call->outputs[k]->dtype != dt || call->outputs[k]->ndim != 2 || call->outputs[k]->strides[1] != 1) return 0;
    return 1;
}

#endif /* NNR_PLUGIN_CALLS_H */

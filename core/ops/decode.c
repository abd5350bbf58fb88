/* One decoding step of a transformer encoder layer (nn.TransformerEncoderLayer in eval mode: one new
 * position per sequence against its key/value caches), its ops called one after another from C. The
 * arithmetic is the layer's own ops (layer_norm, linear or the quant plugin's int8 linear,
 * attention_decode, gelu, add) on whatever backend owns the tensors; what goes is the Lua between
 * them (the module calls, checks and tensor objects of ~10 ops a layer), which cost a batch-1 token
 * more than its products (issue 17's generation). lua/nnr/nn/transformer.lua fills the layer table
 * once per cache and falls back to the composed step wherever this does not apply. */
#include <math.h>
#include "ops/internal.h"

/* y = x W^T + b (relu'd): f32 (nnr_linear), or the quant plugin's QUANT_LINEAR on its packed weight */
static nnr_tensor *decode_linear(const char *name, const nnr_decode_linear *l, const nnr_tensor *x, int relu)
{
    if (l->weight) return relu ? nnr_linear_relu(x, l->weight, l->bias) : nnr_linear(x, l->weight, l->bias);
    if (!l->packed || !l->meta || l->meta->ndim != 2) {
        nnr_errorf(NNR_ERR_INVALID, "decode layer: %s has neither a weight nor an int8 packed weight and meta [3, out]", name);
        return NULL;
    }
    int64_t ys[2] = {x->sizes[0], l->meta->sizes[1]};
    nnr_tensor *y = nnr_tensor_alloc(NNR_F32, 2, ys, x->device);
    if (!y) return NULL;
    nnr_op_params p = {.struct_size = sizeof p};
    p.i[0] = relu;
    p.i[1] = x->sizes[1];
    p.i[2] = l->kernel;
    nnr_tensor *in[3] = {(nnr_tensor *)x, l->packed, l->meta}, *out[1] = {y};
    if (nnr_run_op(name, NNR_OP_QUANT_LINEAR, 3, in, 1, out, &p)) { nnr_tensor_release(y); return NULL; }
    return y;
}

/* layer_norm(t) in place of t (post-norm), t released; NULL stays NULL */
static nnr_tensor *norm_after(nnr_tensor *t, const nnr_tensor *weight, const nnr_tensor *bias, double eps)
{
    if (!t) return NULL;
    nnr_tensor *n = nnr_layer_norm(t, 1, weight, bias, eps);
    nnr_tensor_release(t);
    return n;
}

/* the attention half: x + out_proj(attention(in_proj(ln1(x)))) (pre-norm), or ln1(x + ...) (post-norm) */
static nnr_tensor *decode_attention(const nnr_decode_layer *L, const nnr_tensor *x, nnr_tensor *k, nnr_tensor *v, int64_t past)
{
    nnr_tensor *n1 = NULL, *qkv = NULL, *att = NULL, *proj = NULL, *h = NULL;
    if (L->norm_first && !(n1 = nnr_layer_norm(x, 1, L->norm1_weight, L->norm1_bias, L->eps1))) return NULL;
    if ((qkv = decode_linear("decode layer: in_proj", &L->in_proj, n1 ? n1 : x, 0)) &&
        (att = nnr_attention_decode(qkv, k, v, past, L->heads, NAN)) &&
        (proj = decode_linear("decode layer: out_proj", &L->out_proj, att, 0)) &&
        !nnr_binary_(NNR_OP_ADD, proj, x))
        h = proj, proj = NULL;
    nnr_tensor_release(n1);
    nnr_tensor_release(qkv);
    nnr_tensor_release(att);
    nnr_tensor_release(proj);
    return L->norm_first ? h : norm_after(h, L->norm1_weight, L->norm1_bias, L->eps1);
}

/* the feed-forward half on h: h + linear2(act(linear1(ln2(h)))) (pre-norm), or ln2(h + ...) */
static nnr_tensor *decode_feed_forward(const nnr_decode_layer *L, const nnr_tensor *h)
{
    nnr_tensor *n2 = NULL, *f1 = NULL, *y = NULL;
    if (L->norm_first && !(n2 = nnr_layer_norm(h, 1, L->norm2_weight, L->norm2_bias, L->eps2))) return NULL;
    if ((f1 = decode_linear("decode layer: linear1", &L->linear1, n2 ? n2 : h, !L->gelu)) && (!L->gelu || !nnr_unary_(NNR_OP_GELU, f1)) &&
        (y = decode_linear("decode layer: linear2", &L->linear2, f1, 0)) && nnr_binary_(NNR_OP_ADD, y, h)) {
        nnr_tensor_release(y);
        y = NULL;
    }
    nnr_tensor_release(n2);
    nnr_tensor_release(f1);
    return L->norm_first ? y : norm_after(y, L->norm2_weight, L->norm2_bias, L->eps2);
}

nnr_tensor *nnr_decode_layer_step(const nnr_decode_layer *layer, const nnr_tensor *x, nnr_tensor *k_cache, nnr_tensor *v_cache, int64_t past)
{
    if (!layer || layer->struct_size < sizeof(nnr_decode_layer)) {
        nnr_errorf(NNR_ERR_INVALID, "decode layer: the layer table is missing or of an older size");
        return NULL;
    }
    if (!x || x->ndim != 2 || layer->heads < 1 || x->sizes[1] % layer->heads) {
        nnr_errorf(NNR_ERR_INVALID, "decode layer: x must be [N, E] with E divisible by the %lld heads", (long long)layer->heads);
        return NULL;
    }
    nnr_tensor *h = decode_attention(layer, x, k_cache, v_cache, past);
    if (!h) return NULL;
    nnr_tensor *y = decode_feed_forward(layer, h);
    nnr_tensor_release(h);
    return y;
}

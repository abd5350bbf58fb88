/* The ops (core/ops/, one file per family): each checks shapes, dtypes and devices, dispatches to
 * the backend that owns the device, and records what its backward needs. */
#ifndef NNR_OPS_H
#define NNR_OPS_H

#include "nnr/autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
/* --- random fills (the generator of nnr/base.h); kind: NNR_OP_RAND_UNIFORM, _NORMAL or _INT --- */
nnr_tensor *nnr_random(int kind, int dtype, int ndim, const int64_t *sizes, double a, double b, int device);
/* fills t in place from the generator */
int nnr_random_(nnr_tensor *t, int kind, double a, double b);
/* t (any dtype) filled with 1 where a uniform draw falls below p (a float tensor broadcast to t's
 * shape), else 0; p NULL: the number scalar. Probabilities outside [0, 1] are an error. */
int nnr_bernoulli_(nnr_tensor *t, const nnr_tensor *p, double scalar);
/* a new tensor of p's shape and dtype, drawn as nnr_bernoulli_ does */
nnr_tensor *nnr_bernoulli(const nnr_tensor *p);
/* n category indices (I64, 0-based) per row of probs (1-d [C] or 2-d [R, C], weights that need not
 * sum to 1), with or without replacement */
nnr_tensor *nnr_multinomial(const nnr_tensor *probs, int64_t n, int replacement);
/* a random permutation of 0..n-1 (I64) */
nnr_tensor *nnr_randperm(int64_t n, int device);

/* --- views (share storage) --- */
nnr_tensor *nnr_view(const nnr_tensor *t, int ndim, const int64_t *sizes);
nnr_tensor *nnr_reshape(const nnr_tensor *t, int ndim, const int64_t *sizes);
nnr_tensor *nnr_permute(const nnr_tensor *t, int ndim, const int *dims);
nnr_tensor *nnr_transpose(const nnr_tensor *t, int dim0, int dim1);
nnr_tensor *nnr_narrow(const nnr_tensor *t, int dim, int64_t start, int64_t length);
nnr_tensor *nnr_select(const nnr_tensor *t, int dim, int64_t index);
nnr_tensor *nnr_expand(const nnr_tensor *t, int ndim, const int64_t *sizes);
nnr_tensor *nnr_squeeze(const nnr_tensor *t, int dim);      /* dim -1: every size-1 dim */
nnr_tensor *nnr_unsqueeze(const nnr_tensor *t, int dim);
nnr_tensor *nnr_flatten(const nnr_tensor *t, int start_dim, int end_dim);
nnr_tensor *nnr_as_strided(const nnr_tensor *t, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset);

/* --- copies and casts --- */
nnr_tensor *nnr_contiguous(const nnr_tensor *t);            /* t itself (new ref) when already contiguous */
nnr_tensor *nnr_clone(const nnr_tensor *t);
nnr_tensor *nnr_to(const nnr_tensor *t, int dtype, int device); /* t itself when nothing changes */
int nnr_copy_(nnr_tensor *dst, const nnr_tensor *src);      /* broadcasts and casts src */
int nnr_fill_(nnr_tensor *t, double value);

/* --- elementwise --- */
nnr_tensor *nnr_unary(int op, const nnr_tensor *a);
int nnr_unary_(int op, nnr_tensor *a);
nnr_tensor *nnr_binary(int op, const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_binary_scalar(int op, const nnr_tensor *a, double s, int scalar_first);
int nnr_binary_(int op, nnr_tensor *a, const nnr_tensor *b);
int nnr_binary_scalar_(int op, nnr_tensor *a, double s);
/* out-variant: writes op(a, b) into out (shape and dtype must fit) */
int nnr_binary_out(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out);
nnr_tensor *nnr_where(const nnr_tensor *cond, const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_where_scalar(const nnr_tensor *cond, const nnr_tensor *a, double sa, const nnr_tensor *b, double sb);
nnr_tensor *nnr_clamp(const nnr_tensor *a, double lo, double hi, int flags);
int nnr_clamp_(nnr_tensor *a, double lo, double hi, int flags);
/* an activation (nnr_activation_kind: SiLU, softplus, ELU, leaky ReLU, Mish, hardswish) with its two
 * parameters (plugin.h's ACTIVATION); integers compute in f32 */
nnr_tensor *nnr_activation(int kind, const nnr_tensor *a, double p0, double p1);
nnr_tensor *nnr_masked_fill(const nnr_tensor *a, const nnr_tensor *mask, double value);
int nnr_masked_fill_(nnr_tensor *a, const nnr_tensor *mask, double value);

/* --- reductions: ndims = 0 reduces every dim --- */
nnr_tensor *nnr_reduce(int op, const nnr_tensor *a, int ndims, const int *dims, int keepdim, int64_t correction);
nnr_tensor *nnr_softmax(const nnr_tensor *a, int dim, int log);

/* --- sorting and scans along dim (0-based); indices come out as I64, 0-based --- */
/* the values sorted along dim (stable; NaN above +inf) and, in *indices, where each came from */
nnr_tensor *nnr_sort(const nnr_tensor *a, int dim, int descending, nnr_tensor **indices);
/* the k largest (or smallest) along dim in sorted order (ties: the lower index first), and their indices */
nnr_tensor *nnr_topk(const nnr_tensor *a, int64_t k, int dim, int largest, nnr_tensor **indices);
/* running sums and products along dim; integer and bool inputs give I64 */
nnr_tensor *nnr_cumsum(const nnr_tensor *a, int dim);
nnr_tensor *nnr_cumprod(const nnr_tensor *a, int dim);

/* --- linear algebra and indexing --- */
nnr_tensor *nnr_matmul(const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_mm(const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_bmm(const nnr_tensor *a, const nnr_tensor *b);
/* y = x W^T + b (bias may be NULL) */
nnr_tensor *nnr_linear(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias);
/* relu(x W^T + b), one fused op where the backend has it (LINEAR with i[0] = 1) */
nnr_tensor *nnr_linear_relu(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias);
nnr_tensor *nnr_cat(int n, nnr_tensor *const *tensors, int dim);
nnr_tensor *nnr_gather(const nnr_tensor *a, int dim, const nnr_tensor *index);
nnr_tensor *nnr_index_select(const nnr_tensor *a, int dim, const nnr_tensor *index);
/* out-of-place scatter-add and index-add (the backward of gather and index_select):
 * a copy of a with src added at index along dim */
nnr_tensor *nnr_scatter_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src);
nnr_tensor *nnr_index_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src);

/* layer norm over the last `norm` dims of x (weight and bias of those dims' shape, both or neither), one fused op */
nnr_tensor *nnr_layer_norm(const nnr_tensor *x, int norm, const nnr_tensor *weight, const nnr_tensor *bias, double eps);

/* the cross-entropy of scores x [N, C] (f32 or f64) against class labels target [N] (label base is
 * class 0; base 0 or 1), one fused op (plugin.h's CROSS_ENTROPY): rows whose target is ignore_index
 * count for nothing; reduction 0 gives the [N] losses, 1 their sum, 2 their mean over the counted rows */
nnr_tensor *nnr_cross_entropy(const nnr_tensor *x, const nnr_tensor *target, int64_t base, int64_t ignore_index, int reduction);

/* --- recurrent layers --- */
enum { NNR_RNN_TANH = 0, NNR_RNN_RELU = 1, NNR_RNN_LSTM = 2, NNR_RNN_GRU = 3 };
/* one layer, one direction, over a time-major sequence x [T, B, I] (reverse: from the last step),
 * with PyTorch's gate order and weights: w_ih [G*H, I], w_hh [G*H, P], optional biases b_ih, b_hh
 * [G*H] (both or neither), LSTM's optional projection w_hr [P, H] (P = H without it); h0 [B, P],
 * LSTM's c0 [B, H] (NULL for the others). Gives y [T, B, P], h_n [B, P] and LSTM's c_n [B, H]
 * (c_n may be NULL for the others); 0 or an error status. */
int nnr_rnn_layer(int mode, int reverse, const nnr_tensor *x, const nnr_tensor *h0, const nnr_tensor *c0, const nnr_tensor *w_ih,
                  const nnr_tensor *w_hh, const nnr_tensor *b_ih, const nnr_tensor *b_hh, const nnr_tensor *w_hr, nnr_tensor **y,
                  nnr_tensor **h_n, nnr_tensor **c_n);

/* softmax(q k^T * scale + mask) v over the last two dims ([..., L, E], [..., S, E], [..., S, Ev]; k
 * and v may have size-1 batch dims), in blocks of query rows (no [L, S] score matrix is kept); mask
 * bool (true takes part) or additive in q's dtype, broadcast to [..., L, S], or causal (not both);
 * scale NaN for 1/sqrt(E) */
nnr_tensor *nnr_scaled_dot_product_attention(const nnr_tensor *q, const nnr_tensor *k, const nnr_tensor *v, const nnr_tensor *mask,
                                             int causal, double scale);
/* decoding: qkv [N, 3E] (each row a sequence's new query, key and value; heads of E / heads) against
 * the caches k, v [N * heads, capacity, E / heads], contiguous: position past of the caches gets the
 * new keys and values, and each head's query attends to positions 0..past -> [N, E]. scale NaN for
 * 1/sqrt(head_dim). Inference only (no gradient). */
nnr_tensor *nnr_attention_decode(const nnr_tensor *qkv, nnr_tensor *k, nnr_tensor *v, int64_t past, int64_t heads, double scale);

/* one decoding step of a transformer encoder layer (PyTorch's nn.TransformerEncoderLayer in eval mode,
 * self-attention only) for x [N, E]: the new position of N sequences against the caches k, v
 * [N * heads, capacity, E / heads] (position past gets the new keys and values, as attention_decode).
 * Pre-norm: h = x + out_proj(attn(in_proj(norm1(x)))), y = h + linear2(act(linear1(norm2(h))));
 * post-norm: h = norm1(x + out_proj(attn(in_proj(x)))), y = norm2(h + linear2(act(linear1(h)))).
 * The layer's own ops run in turn (a linear without weight is the quant plugin's int8 one); -> y [N, E]. */
typedef struct nnr_decode_linear {
    const nnr_tensor *weight, *bias;      /* weight [out, in], bias [out] or NULL */
    nnr_tensor *packed, *meta;            /* weight NULL: int8, the quant plugin's packed weight and meta [3, out] */
    int kernel;                           /* int8: the kernel (0 the best; QUANT_LINEAR's i[2]) */
} nnr_decode_linear;
typedef struct nnr_decode_layer {
    size_t struct_size;
    int norm_first, gelu;                 /* pre-norm (else post-norm); GELU (else ReLU) in the feed-forward */
    int64_t heads;
    const nnr_tensor *norm1_weight, *norm1_bias, *norm2_weight, *norm2_bias;   /* NULL: no affine */
    double eps1, eps2;
    nnr_decode_linear in_proj, out_proj, linear1, linear2;
} nnr_decode_layer;
nnr_tensor *nnr_decode_layer_step(const nnr_decode_layer *layer, const nnr_tensor *x, nnr_tensor *k_cache, nnr_tensor *v_cache, int64_t past);

/* --- neural-network ops (NCHW) --- */
/* batch norm over dim 1 of [N, C, ...]; weight, bias, running stats may be NULL; in
 * training the batch statistics are used and the running ones updated in place */
nnr_tensor *nnr_batch_norm(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, nnr_tensor *running_mean,
                           nnr_tensor *running_var, int training, double momentum, double eps);
nnr_tensor *nnr_conv2d(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, int stride_h, int stride_w,
                       int pad_h, int pad_w, int dilation_h, int dilation_w, int groups);
/* relu(conv2d(...)), one fused op where the backend has it (CONV2D with i[7] = 1) */
nnr_tensor *nnr_conv2d_relu(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, int stride_h, int stride_w,
                       int pad_h, int pad_w, int dilation_h, int dilation_w, int groups);
/* the transposed convolution (the input-gradient of conv2d): x [N, C, H, W], weight [C, O/groups, KH, KW],
 * bias [O] or NULL -> [N, O, (H-1)*stride - 2*pad + dilation*(KH-1) + output_pad + 1, ...] */
nnr_tensor *nnr_conv_transpose2d(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, int stride_h, int stride_w,
                                 int pad_h, int pad_w, int output_pad_h, int output_pad_w, int dilation_h, int dilation_w, int groups);
nnr_tensor *nnr_max_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int ceil_mode);
nnr_tensor *nnr_avg_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int ceil_mode, int count_include_pad);
nnr_tensor *nnr_adaptive_avg_pool2d(const nnr_tensor *x, int out_h, int out_w);

/* --- fused optimizer steps: update param and its state in place from grad (PyTorch's rules); a
 * buffer may be NULL when its feature is off --- */
int nnr_sgd_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *momentum_buffer, double lr, double momentum,
                 double dampening, double weight_decay, int nesterov, int buffer_is_new);
int nnr_adam_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *exp_avg, nnr_tensor *exp_avg_sq, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step, int decoupled_weight_decay);
int nnr_rmsprop_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *square_avg, nnr_tensor *momentum_buffer,
                     double lr, double alpha, double eps, double weight_decay, double momentum);

/* --- mixed precision for this thread: f32 matmul, linear and (where the backend has it) convolution
 * run in dtype (f16 or bf16; -1 off), softmax, log_softmax and batch norm of half inputs in f32.
 * Returns the previous setting, or -2 with an error for another dtype. --- */
int nnr_set_autocast(int dtype);
int nnr_get_autocast(void);

/* runs op on preallocated outputs (ops that extension plugins add, e.g. plugins/quant, and the
 * conformance kit's calls); the op's name is for errors; params may be NULL */
int nnr_run_op(const char *name, int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *params);
/* 1 when the backend owning out[0]'s device claims this exact call itself (its supports()), 0 otherwise */
int nnr_op_supported(int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *params);
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_OPS_H */

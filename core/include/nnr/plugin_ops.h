/* The plugin ABI's op table and what each op takes (part of nnr/plugin.h, which includes it; split out
 * as its own idea: the ABI's structures and entry points there, the ops and their parameters here).
 * A backend reads a call's operands and params (nnr_op_call, nnr_op_params in plugin.h) as stated
 * below for its op. */
#ifndef NNR_PLUGIN_OPS_H
#define NNR_PLUGIN_OPS_H

/* NNR_CDEF_BEGIN */
/* The op table, the one place that names an op: X(ID, number, "name", category, inputs min, max,
 * outputs min, max). NNR_OP_<ID> = number. Append only; never renumber or reuse a number. What each
 * op's operands and params mean:
 *  - UNARY, same shape in and out. LOGICAL_NOT writes NNR_BOOL.
 *  - BINARY and COMPARE: inputs[0], inputs[1] (same dtype, broadcast to the output's shape with zero
 *    strides) -> outputs[0]. With one input the other operand is the scalar params.f[0]; params.i[0] = 1
 *    when the scalar is the left operand. RELU_GRAD: inputs[0] where inputs[1] > 0, else 0 (the
 *    gradient of relu: grad, x).
 *  - WHERE(cond bool, a, b): a and b may be replaced by scalars: i[0] bit 0: a is f[0]; bit 1: b is
 *    f[1] (then inputs hold only those given). CLAMP(x): f[0] = min, f[1] = max; i[0] bit 0 has min,
 *    bit 1 has max.
 *  - COPY: inputs[0] into outputs[0], same shape, any dtypes (a cast). FILL: outputs[0] = f[0].
 *    ARANGE: outputs[0] (1-d) [k] = f[0] + k * f[1].
 *  - RANDOM (Philox4x32-10, nnr/philox.h): i[0] = seed, i[1] = counter offset. Element k of a
 *    contiguous output uses counter offset + k, so every backend yields the same numbers.
 *    RAND_UNIFORM in [f[0], f[1]); RAND_NORMAL mean f[0], std f[1]; RAND_INT integers in [f[0], f[1]).
 *  - REDUCE: inputs[0] has the output's dims first, then i[0] reduced dims last; outputs[0] has the
 *    leading dims only. SUM and PROD of integer inputs come as NNR_I64 in and out; MAX, MIN keep the
 *    dtype; ARGMAX, ARGMIN write NNR_I64 flat indices over the reduced dims; MEAN and VAR are given
 *    floating-point inputs only. VAR: i[1] = correction, i[2] = 1 for the square root (std).
 *  - SOFTMAX, LOG_SOFTMAX over the last dim of inputs[0] into outputs[0] (same shape).
 *  - MATMUL: inputs [...,M,K] and [...,K,N] -> outputs[0] [...,M,N]; the leading batch dims are equal
 *    in all three (inputs broadcast with stride 0); any strides.
 *    LINEAR (ABI 1.1): y = x W^T (+ b): x [M, K], weight [N, K], optional bias [N], all contiguous ->
 *    out [M, N] contiguous; params i[0] = 1: relu(y) (params may be NULL: 0). ABI 1.6: i[1] != 0 is a
 *    key for the weight's values (i[1] its storage's id in the process, i[2] that storage's version):
 *    a call with the same key, data pointer and shape has the same weight values, so a backend may
 *    keep a packed copy of the weight for it. The core gives a key where it will reuse the weight
 *    (the recurrent gemm of every time step); 0 means no such promise.
 *  - INDEX: GATHER along dim i[0]: out[..j..] = in[..index[..j..]..]; index I64 0-based.
 *    INDEX_SELECT along dim i[0] with 1-d I64 index inputs[1]. SCATTER_ADD and INDEX_ADD accumulate
 *    into outputs[0] (read and written) along dim i[0]; inputs: index (I64, 0-based), src.
 *    SCATTER_ADD: out[..index[j..]..] += src[j..] (index and src share a shape); INDEX_ADD:
 *    out.select(dim, index[j]) += src.select(dim, j) (index 1-d). An index out of range is an error.
 *  - CONV (2-d, NCHW). i: stride h, w; padding h, w; dilation h, w; groups; and i[7] = 1: relu applied
 *    to the output (CONV2D) or its mask given as inputs[2] (CONV2D_GRAD_INPUT, _GRAD_WEIGHT).
 *    CONV2D: x [N,C,H,W], weight [O,C/groups,KH,KW], optional bias [O] -> out [N,O,HO,WO].
 *    ABI 1.8: CONV2D's f[0] != 0 is a key for the weight's values, as LINEAR's i[1], i[2] (f[0] its
 *    storage's id, f[1] that storage's version, both exact integers): the core gives it in inference.
 *    CONV2D_GRAD_INPUT: grad_out, weight (, relu output) -> grad_x (its shape given by the output).
 *    CONV2D_GRAD_WEIGHT: x, grad_out (, relu output) -> grad_weight and, optionally, grad_bias [O] as
 *    outputs[1]. The core offers the fused forms (relu, mask, grad_bias) first and asks supports().
 *  - POOL (NCHW). i: kernel h, w; stride h, w; padding h, w; dilation h, w (max) or count_include_pad
 *    (avg, i[6]). MAX_POOL2D: x -> values, and I64 argmax (flat h*W+w within the plane) as outputs[1]
 *    unless the core leaves it out (no gradient recorded) and supports() accepts that.
 *    MAX_POOL2D_BACKWARD: grad_out, argmax -> grad_x (fully written; an argmax of -1, a window with no
 *    element of the plane, adds nothing; any other argmax out of its plane is an error). AVG_POOL2D and ADAPTIVE_AVG_POOL2D (output size from the output's shape) and backwards.
 *  - NORM: batch norm over dim 1 of a contiguous [N, C, ...] x, in pieces the core composes:
 *    BN_STATS: x -> mean [C], invstd [C] (biased variance; f[0] = eps); BN_AFFINE: x, coef [2, C]
 *    (scale, shift) -> y = x * scale + shift; BN_BACKWARD_REDUCE: dy, x, coef [2, C] (mean, invstd) ->
 *    [2, C] (sum dy, sum dy * xhat); BN_BACKWARD_APPLY: dy, x, coef [3, C] (a, b, c) -> dx = a dy + b x + c.
 *  - OPTIM: outputs are read and updated in place, inputs[0] is the gradient; all contiguous, one dtype.
 *    SGD: outputs param, momentum buffer (absent when momentum is 0); f: lr, momentum, dampening,
 *    weight_decay; i[0]: nesterov, i[1]: buffer is new. ADAM: outputs param, exp_avg, exp_avg_sq; f: lr,
 *    beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2; i[0]: decoupled weight decay
 *    (AdamW). RMSPROP: outputs param, square_avg, momentum buffer (absent when momentum is 0); f: lr,
 *    alpha, eps, weight_decay, momentum.
 *  - QUANT (ABI 1.2, the quant extension plugin, on host memory). QUANT_WEIGHT: W f32 [N, K] -> q i8
 *    [N, K], scale f32 [N]: symmetric per output channel, scale = max|W_n| / 127 (1 for a zero row),
 *    q = round-to-nearest-even(W / scale) in [-127, 127]. QUANT_PACK: q i8 [N, K] -> packed i8
 *    [ceil(N/16), ceil(K/4), 16, 4] (the layout of vpdpbusd), wsum i32 [N] (row sums of q).
 *    QUANT_LINEAR: x f32 [M, K], packed, meta f32 [3, N] (scale, wsum, bias) -> y f32 [M, N]: each row of
 *    x quantized symmetrically (max|x_m| / 127, nearest even), int32 dot products, then
 *    y = fma(acc, sx * sw, bias); i[0] = 1: relu; i[1] = K; i[2] kernel: 0 the best this CPU has,
 *    1 portable C, 2 AVX2, 3 AVX-VNNI, 4 AVX-512 VNNI (all give identical results).
 *  - COLLECTIVE (ABI 1.3) on a backend's own devices (cuda: NCCL), once the core has set up the
 *    communicator with set_option("nccl_comm", ...); outputs[0] is reduced or overwritten in place,
 *    contiguous. ALL_REDUCE: i[0] = 0 sum, 1 max, 2 min, 3 product. BROADCAST: i[0] = the root rank.
 *  - Rounding and tests (UNARY, numbered from 260): FLOOR, CEIL, ROUND (half to even), TRUNC keep the
 *    dtype (integers unchanged); ISNAN, ISINF, ISFINITE write NNR_BOOL (integers: false, false, true).
 *  - ANY, ALL (REDUCE, as the others: kept dims first): any dtype in (NaN counts as true), NNR_BOOL out.
 *  - SORT: inputs[0] with the sorted dim last -> outputs[0] values (its dtype), outputs[1] I64 0-based
 *    indices, same shape; i[0] = 1: descending. Always stable (equal elements keep their order, in both
 *    directions); NaN sorts above +inf; -0.0 and 0.0 are equal. TOPK: as SORT, outputs [..., k] with
 *    k = i[0], i[1] = 1: the largest (else the smallest), in sorted order, ties to the lower index.
 *  - SCAN: inputs[0] -> outputs[0], same shape, along the last dim; i[0] = 1: from the end (reverse).
 *    CUMSUM, CUMPROD of integer inputs come as NNR_I64 in and out.
 *  - Sampling (RANDOM, Philox as above, i[0] = seed, i[1] = counter offset): BERNOULLI: outputs[0]
 *    (any dtype) = 1 where u_k < p, else 0; p is inputs[0] (f32 or f64, the output's shape) or, with no
 *    input, f[0]; u_k = word k * 2^-32. MULTINOMIAL: inputs[0] probs [R, C] (f32/f64, each row finite,
 *    >= 0, positive sum) -> outputs[0] I64 [R, n] 0-based category indices; i[2] = 1: with replacement.
 *    Row r uses words r * W + j, W = n (replacement) or C rounded up to a multiple of 4. With
 *    replacement draw j is the first category whose running sum exceeds u_j * sum; without, the n
 *    smallest of -log(u_c) / p_c in ascending order (exponential races: sequential sampling). RANDPERM:
 *    outputs[0] I64 [n] a permutation of 0..n-1: Fisher-Yates from the end, step i (n-1 down to 1)
 *    swapping i with (words 2i, 2i+1 as a 64-bit number) mod (i + 1).
 *  - RNN (ABI 1.6): the pointwise part of one time step; i[0] = mode: 0 RNN tanh, 1 RNN relu, 2 LSTM,
 *    3 GRU; f32 or f64; every operand [B, n] with unit column stride and any row stride. G = 1, 4, 3
 *    gates (PyTorch's order: LSTM i, f, g, o; GRU r, z, n), H the hidden size.
 *    RNN_CELL: xw [B, G*H] (x W_ih^T + b_ih), hw [B, G*H] (h W_hh^T + b_hh), and LSTM c_prev / GRU
 *    h_prev [B, H] -> h [B, H]; LSTM and GRU also the activations kept for the backward, act [B, 4*H]
 *    (LSTM: i, f, g, o after their nonlinearities; GRU: r, z, n, and hw's n part), and LSTM c [B, H].
 *    RNN: h = act(xw + hw). LSTM: c = f c_prev + i g, h = o tanh(c). GRU: n = tanh(xw_n + r hw_n),
 *    h = (1 - z) n + z h_prev.
 *    RNN_CELL_BACKWARD: RNN: dh, h -> d(xw + hw) [B, H]. LSTM: dh, dc, act, c_prev -> d(xw + hw)
 *    [B, 4H], dc_prev [B, H]. GRU: dh, act, h_prev -> d xw [B, 3H], d hw [B, 3H], and the part of
 *    dh_prev that does not go through W_hh, z dh [B, H].
 *  - LAYER_NORM (NORM, ABI 1.6): each row of a contiguous x [M, N] normalized, f[0] = eps: mean and
 *    rstd = 1 / sqrt(biased variance + eps), y = (x - mean) rstd (* weight [N] + bias [N], both or
 *    neither) -> y [M, N] and stats [M, 2] (mean, rstd), sums in double. LAYER_NORM_BACKWARD: dy, x,
 *    stats (, weight) -> dx (, dweight, dbias, sums over the rows when the weight is given).
 *    xhat = (x - mean) rstd, g = dy weight: dx = rstd (g - mean(g) - xhat mean(g xhat)).
 *  - GELU (UNARY, ABI 1.6, floating-point dtypes): x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, PyTorch's
 *    exact form. GELU_GRAD (BINARY, two inputs: grad, x): grad (Phi(x) + x phi(x)), phi the normal
 *    density exp(-x^2 / 2) / sqrt(2 pi).
 *  - ATTN_DECODE (ATTENTION, ABI 1.7): one new position of N sequences against their key/value caches,
 *    f32 or f64, every operand contiguous. inputs[0] qkv [N, 3E]: row n is the new query, key and value
 *    of sequence n, each E = H * d wide (head h at columns h*d..); outputs[1] K and outputs[2] V
 *    [N * H, cap, d] are read and updated in place: position p = i[0] (0-based, p < cap) of row n*H + h
 *    gets the new key and value of head h, positions 0..p-1 are read. outputs[0] o [N, E]: for each
 *    (n, h), softmax over j = 0..p of (q . K[n*H+h, j]) * scale, times V[n*H+h, j]. i[1] = H; f[0] =
 *    scale (NaN: 1 / sqrt(d)). No mask: the one query sees every cached position.
 *  - ACTIVATION (UNARY, ABI 1.9, floating-point dtypes): one of the activations below, i[0] naming
 *    it (nnr_activation_kind), with f[0] and f[1] its parameters; NaN in gives NaN out.
 *      SILU        x sigmoid(x)
 *      SOFTPLUS    log(1 + exp(f[0] x)) / f[0] (beta), and x where f[0] x > f[1] (threshold)
 *      ELU         f[1] x where x > 0, else f[1] f[0] (exp(x) - 1) (scale f[1], alpha f[0]; SELU is
 *                  alpha 1.6732632423543772, scale 1.0507009873554805)
 *      LEAKY_RELU  x where x > 0, else f[0] x (f[0] the negative slope)
 *      MISH        x tanh(softplus(x))
 *      HARDSWISH   x min(max(x + 3, 0), 6) / 6
 *    ACTIVATION_GRAD (BINARY, inputs grad and x, the same params): grad times the derivative at x, as
 *    PyTorch's: at x = 0 ELU and LEAKY_RELU take their x <= 0 side, HARDSWISH is 0 below -3, 1 above
 *    3 and (2x + 3) / 6 between, SOFTPLUS 1 where f[0] x > f[1].
 *  - CROSS_ENTROPY (SOFTMAX, ABI 1.10, f32 or f64): the whole loss of scores x [N, C] (contiguous)
 *    against class labels t [N] (I64, contiguous): label L is class L - i[2], i[2] (the base) 0 or 1
 *    (Lua's labels start at 1: no pass to shift them). i[0]: the ignored label (compared before the
 *    base is taken off; a row whose target is i[0] adds nothing and is not counted); i[1]: the
 *    reduction, 0 none, 1 sum, 2 mean.
 *    outputs[0]: the loss, [N] for none (loss[n] = lse[n] - x[n, t[n]], 0 in ignored rows), 0-d for sum
 *    and mean (the rows' losses added in double in a fixed order, so that the same inputs give the
 *    same bits; mean divides by the counted rows, 0 / 0 = NaN when none counts); outputs[1]: lse [N],
 *    lse[n] = log sum_c exp(x[n, c]) (kept for the backward). A row with a NaN or +inf gives NaN (as
 *    PyTorch's log_softmax), a row of -inf lse -inf and loss NaN. A label other than i[0] outside [i[2], i[2] + C) is
 *    NNR_ERR_INVALID with the message "cross_entropy: target label L is outside the class range B..E"
 *    (B = i[2], E = i[2] + C - 1).
 *    CROSS_ENTROPY_GRAD (inputs x, t, lse and g, the gradient of outputs[0]: [N] for none, 0-d for sum
 *    and mean; the same params): dx [N, C] = (exp(x[n, c] - lse[n]) - [c == t[n]]) s[n], s[n] = g[n]
 *    (none), g (sum) or g / counted rows (mean), t[n] taken as its class (less the base); 0 in ignored
 *    rows, NaN in a counted row whose lse is NaN or -inf (as log_softmax's backward). Its labels are
 *    the ones the forward checked; a backend may check them again (the cpu's does, with the forward's
 *    error). */
typedef enum nnr_activation_kind {
    NNR_ACT_SILU = 1, NNR_ACT_SOFTPLUS = 2, NNR_ACT_ELU = 3, NNR_ACT_LEAKY_RELU = 4, NNR_ACT_MISH = 5, NNR_ACT_HARDSWISH = 6,
    NNR_ACT_COUNT = 7
} nnr_activation_kind;
#define NNR_OP_TABLE(X) \
    X(NEG, 1, "neg", UNARY, 1, 1, 1, 1) \
    X(ABS, 2, "abs", UNARY, 1, 1, 1, 1) \
    X(EXP, 3, "exp", UNARY, 1, 1, 1, 1) \
    X(LOG, 4, "log", UNARY, 1, 1, 1, 1) \
    X(SQRT, 5, "sqrt", UNARY, 1, 1, 1, 1) \
    X(TANH, 6, "tanh", UNARY, 1, 1, 1, 1) \
    X(SIGMOID, 7, "sigmoid", UNARY, 1, 1, 1, 1) \
    X(RELU, 8, "relu", UNARY, 1, 1, 1, 1) \
    X(SIN, 9, "sin", UNARY, 1, 1, 1, 1) \
    X(COS, 10, "cos", UNARY, 1, 1, 1, 1) \
    X(SIGN, 11, "sign", UNARY, 1, 1, 1, 1) \
    X(RECIPROCAL, 12, "reciprocal", UNARY, 1, 1, 1, 1) \
    X(LOGICAL_NOT, 13, "logical_not", UNARY, 1, 1, 1, 1) \
    X(ERF, 14, "erf", UNARY, 1, 1, 1, 1) \
    X(ADD, 32, "add", BINARY, 1, 2, 1, 1) \
    X(SUB, 33, "sub", BINARY, 1, 2, 1, 1) \
    X(MUL, 34, "mul", BINARY, 1, 2, 1, 1) \
    X(DIV, 35, "div", BINARY, 1, 2, 1, 1) \
    X(POW, 36, "pow", BINARY, 1, 2, 1, 1) \
    X(MAXIMUM, 37, "maximum", BINARY, 1, 2, 1, 1) \
    X(MINIMUM, 38, "minimum", BINARY, 1, 2, 1, 1) \
    X(EQ, 39, "eq", COMPARE, 1, 2, 1, 1) \
    X(NE, 40, "ne", COMPARE, 1, 2, 1, 1) \
    X(LT, 41, "lt", COMPARE, 1, 2, 1, 1) \
    X(LE, 42, "le", COMPARE, 1, 2, 1, 1) \
    X(GT, 43, "gt", COMPARE, 1, 2, 1, 1) \
    X(GE, 44, "ge", COMPARE, 1, 2, 1, 1) \
    X(LOGICAL_AND, 45, "logical_and", COMPARE, 1, 2, 1, 1) \
    X(LOGICAL_OR, 46, "logical_or", COMPARE, 1, 2, 1, 1) \
    X(RELU_GRAD, 47, "relu_grad", BINARY, 2, 2, 1, 1) \
    X(WHERE, 64, "where", SELECT, 1, 3, 1, 1) \
    X(CLAMP, 65, "clamp", SELECT, 1, 1, 1, 1) \
    X(COPY, 66, "copy", COPY, 1, 1, 1, 1) \
    X(FILL, 67, "fill", FILL, 0, 0, 1, 1) \
    X(ARANGE, 68, "arange", FILL, 0, 0, 1, 1) \
    X(RAND_UNIFORM, 80, "rand", RANDOM, 0, 0, 1, 1) \
    X(RAND_NORMAL, 81, "randn", RANDOM, 0, 0, 1, 1) \
    X(RAND_INT, 82, "randint", RANDOM, 0, 0, 1, 1) \
    X(SUM, 96, "sum", REDUCE, 1, 1, 1, 1) \
    X(PROD, 97, "prod", REDUCE, 1, 1, 1, 1) \
    X(MAX, 98, "max", REDUCE, 1, 1, 1, 1) \
    X(MIN, 99, "min", REDUCE, 1, 1, 1, 1) \
    X(ARGMAX, 100, "argmax", REDUCE, 1, 1, 1, 1) \
    X(ARGMIN, 101, "argmin", REDUCE, 1, 1, 1, 1) \
    X(MEAN, 102, "mean", REDUCE, 1, 1, 1, 1) \
    X(VAR, 103, "var", REDUCE, 1, 1, 1, 1) \
    X(SOFTMAX, 112, "softmax", SOFTMAX, 1, 1, 1, 1) \
    X(LOG_SOFTMAX, 113, "log_softmax", SOFTMAX, 1, 1, 1, 1) \
    X(MATMUL, 128, "matmul", MATMUL, 2, 2, 1, 1) \
    X(LINEAR, 129, "linear", MATMUL, 2, 3, 1, 1) \
    X(GATHER, 144, "gather", INDEX, 2, 2, 1, 1) \
    X(INDEX_SELECT, 145, "index_select", INDEX, 2, 2, 1, 1) \
    X(SCATTER_ADD, 146, "scatter_add", INDEX, 2, 2, 1, 1) \
    X(INDEX_ADD, 147, "index_add", INDEX, 2, 2, 1, 1) \
    X(CONV2D, 160, "conv2d", CONV, 2, 3, 1, 1) \
    X(CONV2D_GRAD_INPUT, 161, "conv2d_grad_input", CONV, 2, 3, 1, 1) \
    X(CONV2D_GRAD_WEIGHT, 162, "conv2d_grad_weight", CONV, 2, 3, 1, 2) \
    X(MAXPOOL2D, 163, "max_pool2d", POOL, 1, 1, 1, 2) \
    X(MAXPOOL2D_BACKWARD, 164, "max_pool2d_backward", POOL, 2, 2, 1, 1) \
    X(AVGPOOL2D, 165, "avg_pool2d", POOL, 1, 1, 1, 1) \
    X(AVGPOOL2D_BACKWARD, 166, "avg_pool2d_backward", POOL, 1, 1, 1, 1) \
    X(ADAPTIVE_AVGPOOL2D, 167, "adaptive_avg_pool2d", POOL, 1, 1, 1, 1) \
    X(ADAPTIVE_AVGPOOL2D_BACKWARD, 168, "adaptive_avg_pool2d_backward", POOL, 1, 1, 1, 1) \
    X(BN_STATS, 169, "batch_norm_stats", NORM, 1, 1, 2, 2) \
    X(BN_AFFINE, 170, "batch_norm_affine", NORM, 2, 2, 1, 1) \
    X(BN_BACKWARD_REDUCE, 171, "batch_norm_backward_reduce", NORM, 3, 3, 1, 1) \
    X(BN_BACKWARD_APPLY, 172, "batch_norm_backward_apply", NORM, 3, 3, 1, 1) \
    X(SGD_STEP, 192, "sgd", OPTIM, 1, 1, 1, 2) \
    X(ADAM_STEP, 193, "adam", OPTIM, 1, 1, 3, 3) \
    X(RMSPROP_STEP, 194, "rmsprop", OPTIM, 1, 1, 2, 3) \
    X(QUANT_WEIGHT, 208, "quant_weight", QUANT, 1, 1, 2, 2) \
    X(QUANT_PACK, 209, "quant_pack", QUANT, 1, 1, 2, 2) \
    X(QUANT_LINEAR, 210, "quant_linear", QUANT, 3, 3, 1, 1) \
    X(ALL_REDUCE, 224, "all_reduce", COLLECTIVE, 0, 0, 1, 1) \
    X(BROADCAST, 225, "broadcast", COLLECTIVE, 0, 0, 1, 1) \
    X(SORT, 256, "sort", SORT, 1, 1, 2, 2) \
    X(TOPK, 257, "topk", SORT, 1, 1, 2, 2) \
    X(CUMSUM, 258, "cumsum", SCAN, 1, 1, 1, 1) \
    X(CUMPROD, 259, "cumprod", SCAN, 1, 1, 1, 1) \
    X(FLOOR, 260, "floor", UNARY, 1, 1, 1, 1) \
    X(CEIL, 261, "ceil", UNARY, 1, 1, 1, 1) \
    X(ROUND, 262, "round", UNARY, 1, 1, 1, 1) \
    X(TRUNC, 263, "trunc", UNARY, 1, 1, 1, 1) \
    X(ISNAN, 264, "isnan", UNARY, 1, 1, 1, 1) \
    X(ISINF, 265, "isinf", UNARY, 1, 1, 1, 1) \
    X(ISFINITE, 266, "isfinite", UNARY, 1, 1, 1, 1) \
    X(ANY, 267, "any", REDUCE, 1, 1, 1, 1) \
    X(ALL, 268, "all", REDUCE, 1, 1, 1, 1) \
    X(BERNOULLI, 269, "bernoulli", RANDOM, 0, 1, 1, 1) \
    X(MULTINOMIAL, 270, "multinomial", RANDOM, 1, 1, 1, 1) \
    X(RANDPERM, 271, "randperm", RANDOM, 0, 0, 1, 1) \
    X(RNN_CELL, 272, "rnn_cell", RNN, 2, 3, 1, 3) \
    X(RNN_CELL_BACKWARD, 273, "rnn_cell_backward", RNN, 2, 4, 1, 3) \
    X(LAYER_NORM, 274, "layer_norm", NORM, 1, 3, 2, 2) \
    X(LAYER_NORM_BACKWARD, 275, "layer_norm_backward", NORM, 3, 4, 1, 3) \
    X(GELU, 276, "gelu", UNARY, 1, 1, 1, 1) \
    X(GELU_GRAD, 277, "gelu_grad", BINARY, 2, 2, 1, 1) \
    X(ATTN_DECODE, 278, "attention_decode", ATTENTION, 1, 1, 3, 3) \
    X(ACTIVATION, 279, "activation", UNARY, 1, 1, 1, 1) \
    X(ACTIVATION_GRAD, 280, "activation_grad", BINARY, 2, 2, 1, 1) \
    X(CROSS_ENTROPY, 281, "cross_entropy", SOFTMAX, 2, 2, 2, 2) \
    X(CROSS_ENTROPY_GRAD, 282, "cross_entropy_grad", SOFTMAX, 4, 4, 1, 1)

/* the ids: NNR_OP_NEG = 1, ... (ffi.cdef reads this enum from the preprocessed text) */
#define NNR_OP_ENUM_ENTRY_(ID, num, name, cat, in_min, in_max, out_min, out_max) NNR_OP_##ID = num,
typedef enum nnr_op {
    NNR_OP_TABLE(NNR_OP_ENUM_ENTRY_)
    NNR_OP_NONE = 0
} nnr_op;
#undef NNR_OP_ENUM_ENTRY_
/* NNR_CDEF_END */

#endif

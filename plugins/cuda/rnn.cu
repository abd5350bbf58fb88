/* The pointwise part of a recurrent time step on the GPU (RNN_CELL, RNN_CELL_BACKWARD; plugin.h says
 * what each operand is), and layer norm (at the end): one thread per (row, hidden unit), the same formulas as the cpu backend's
 * plugins/cpu/rnn.c, in the operands' own type (f32 or f64), every operand [B, n] with unit column
 * stride and any row stride. */
#include "dtype.cuh"

enum { MODE_TANH = 0, MODE_RELU = 1, MODE_LSTM = 2, MODE_GRU = 3 };

typedef struct rnn_args {
    int mode, backward, nin, nout;
    int64_t B, H;
    const void *in[4];
    void *out[3];
    int64_t in_rs[4], out_rs[3];
} rnn_args;

template <typename T> __device__ T sig(T x) { return T(1) / (T(1) + exp(-x)); }

template <typename T> __device__ void cell_forward(const rnn_args &a, int64_t b, int64_t j)
{
    const T *xw = (const T *)a.in[0] + b * a.in_rs[0], *hw = (const T *)a.in[1] + b * a.in_rs[1];
    T *h = (T *)a.out[0] + b * a.out_rs[0];
    int64_t H = a.H;
    if (a.mode <= MODE_RELU) {
        T v = xw[j] + hw[j];
        h[j] = a.mode == MODE_TANH ? tanh(v) : (v > T(0) ? v : (v != v ? v : T(0)));
        return;
    }
    const T *prev = (const T *)a.in[2] + b * a.in_rs[2];
    T *act = (T *)a.out[1] + b * a.out_rs[1];
    if (a.mode == MODE_LSTM) {
        T i = sig(xw[j] + hw[j]), f = sig(xw[H + j] + hw[H + j]), g = tanh(xw[2 * H + j] + hw[2 * H + j]);
        T o = sig(xw[3 * H + j] + hw[3 * H + j]), c = f * prev[j] + i * g;
        act[j] = i; act[H + j] = f; act[2 * H + j] = g; act[3 * H + j] = o;
        ((T *)a.out[2] + b * a.out_rs[2])[j] = c;
        h[j] = o * tanh(c);
        return;
    }
    T r = sig(xw[j] + hw[j]), z = sig(xw[H + j] + hw[H + j]), hn = hw[2 * H + j], n = tanh(xw[2 * H + j] + r * hn);
    act[j] = r; act[H + j] = z; act[2 * H + j] = n; act[3 * H + j] = hn;
    h[j] = (T(1) - z) * n + z * prev[j];
}

template <typename T> __device__ void cell_backward(const rnn_args &a, int64_t b, int64_t j)
{
    int64_t H = a.H;
    const T *dh = (const T *)a.in[0] + b * a.in_rs[0];
    T *dx = (T *)a.out[0] + b * a.out_rs[0];
    if (a.mode <= MODE_RELU) {
        const T *h = (const T *)a.in[1] + b * a.in_rs[1];
        dx[j] = a.mode == MODE_TANH ? dh[j] * (T(1) - h[j] * h[j]) : (h[j] > T(0) ? dh[j] : T(0));
        return;
    }
    if (a.mode == MODE_LSTM) {
        const T *dc = (const T *)a.in[1] + b * a.in_rs[1], *act = (const T *)a.in[2] + b * a.in_rs[2];
        const T *prev = (const T *)a.in[3] + b * a.in_rs[3];
        T i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j], tc = tanh(f * prev[j] + i * g);
        T dct = dc[j] + dh[j] * o * (T(1) - tc * tc);
        dx[j] = dct * g * i * (T(1) - i);
        dx[H + j] = dct * prev[j] * f * (T(1) - f);
        dx[2 * H + j] = dct * i * (T(1) - g * g);
        dx[3 * H + j] = dh[j] * tc * o * (T(1) - o);
        ((T *)a.out[1] + b * a.out_rs[1])[j] = dct * f;
        return;
    }
    const T *act = (const T *)a.in[1] + b * a.in_rs[1], *prev = (const T *)a.in[2] + b * a.in_rs[2];
    T *dhw = (T *)a.out[1] + b * a.out_rs[1];
    T r = act[j], z = act[H + j], n = act[2 * H + j], hn = act[3 * H + j];
    T dn = dh[j] * (T(1) - z) * (T(1) - n * n), dz = dh[j] * (prev[j] - n) * z * (T(1) - z), dr = dn * hn * r * (T(1) - r);
    dx[j] = dr; dx[H + j] = dz; dx[2 * H + j] = dn;
    dhw[j] = dr; dhw[H + j] = dz; dhw[2 * H + j] = dn * r;
    ((T *)a.out[2] + b * a.out_rs[2])[j] = dh[j] * z;
}

template <typename T> __global__ void k_rnn(rnn_args a)
{
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < a.B * a.H; k += (int64_t)gridDim.x * blockDim.x) {
        if (a.backward) cell_backward<T>(a, k / a.H, k % a.H);
        else cell_forward<T>(a, k / a.H, k % a.H);
    }
}

int cu_rnn_supports(const nnr_op_call *call) { return nnr_rnn_cell_call_ok(call); }

int cu_rnn(cu_device *d, const nnr_op_call *call)
{
    rnn_args a;
    memset(&a, 0, sizeof a);
    a.mode = (int)call->params->i[0];
    a.backward = call->op == NNR_OP_RNN_CELL_BACKWARD;
    a.nin = call->n_inputs;
    a.nout = call->n_outputs;
    const nnr_tensor_desc *hd = a.backward ? call->inputs[0] : call->outputs[0];
    a.B = hd->sizes[0];
    a.H = hd->sizes[1];
    for (int k = 0; k < a.nin; k++) { a.in[k] = call->inputs[k]->data; a.in_rs[k] = call->inputs[k]->strides[0]; }
    for (int k = 0; k < a.nout; k++) { a.out[k] = call->outputs[k]->data; a.out_rs[k] = call->outputs[k]->strides[0]; }
    if (a.B * a.H == 0) return NNR_OK;
    if (call->inputs[0]->dtype == NNR_F32) k_rnn<float><<<cu_blocks(a.B * a.H, 256), 256, 0, d->stream>>>(a);
    else k_rnn<double><<<cu_blocks(a.B * a.H, 256), 256, 0, d->stream>>>(a);
    CU_LAUNCHED("rnn_cell");
    return NNR_OK;
}

/* ---- LAYER_NORM and its backward: one thread per row (dx), one per column (the weight's sums) ---- */
typedef struct ln_args {
    int64_t M, N;
    int has_w, back;
    double eps;
    const void *x, *w, *b, *dy, *st;
    void *y, *stats, *dx, *dw, *db;
} ln_args;

template <typename T> __global__ void k_ln_rows(ln_args a)
{
    for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < a.M; r += (int64_t)gridDim.x * blockDim.x) {
        const T *x = (const T *)a.x + r * a.N, *w = (const T *)a.w, *b = (const T *)a.b;
        if (!a.back) {
            double s = 0, q = 0;
            for (int64_t i = 0; i < a.N; i++) s += x[i];
            double mean = a.N ? s / a.N : 0;
            for (int64_t i = 0; i < a.N; i++) { double d = x[i] - mean; q += d * d; }
            double rstd = 1.0 / sqrt((a.N ? q / a.N : 0) + a.eps);
            T *y = (T *)a.y + r * a.N, *st = (T *)a.stats + 2 * r;
            for (int64_t i = 0; i < a.N; i++) y[i] = a.has_w ? (T)((x[i] - mean) * rstd) * w[i] + b[i] : (T)((x[i] - mean) * rstd);
            st[0] = (T)mean;
            st[1] = (T)rstd;
            continue;
        }
        const T *dy = (const T *)a.dy + r * a.N, *st = (const T *)a.st + 2 * r;
        double mean = st[0], rstd = st[1], sg = 0, sgx = 0;
        for (int64_t i = 0; i < a.N; i++) {
            double g = a.has_w ? (double)dy[i] * w[i] : dy[i];
            sg += g;
            sgx += g * (x[i] - mean) * rstd;
        }
        double mg = a.N ? sg / a.N : 0, mgx = a.N ? sgx / a.N : 0;
        T *dx = (T *)a.dx + r * a.N;
        for (int64_t i = 0; i < a.N; i++) {
            double g = a.has_w ? (double)dy[i] * w[i] : dy[i];
            dx[i] = (T)(rstd * (g - mg - (x[i] - mean) * rstd * mgx));
        }
    }
}

template <typename T> __global__ void k_ln_cols(ln_args a)
{
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < a.N; c += (int64_t)gridDim.x * blockDim.x) {
        const T *x = (const T *)a.x, *dy = (const T *)a.dy, *st = (const T *)a.st;
        double sw = 0, sb = 0;
        for (int64_t r = 0; r < a.M; r++) {
            double g = dy[r * a.N + c];
            sw += g * ((x[r * a.N + c] - (double)st[2 * r]) * (double)st[2 * r + 1]);
            sb += g;
        }
        ((T *)a.dw)[c] = (T)sw;
        ((T *)a.db)[c] = (T)sb;
    }
}

int cu_layer_norm_supports(const nnr_op_call *call)
{
    int dt = call->inputs[0]->dtype, back = call->op == NNR_OP_LAYER_NORM_BACKWARD;
    if ((dt != NNR_F32 && dt != NNR_F64) || (!back && call->n_inputs == 2) || (back && call->n_outputs != (call->n_inputs == 4 ? 3 : 1)))
        return 0;
    for (int k = 0; k < call->n_inputs; k++) if (call->inputs[k]->dtype != dt || !nnr_desc_is_contiguous(call->inputs[k])) return 0;
    for (int k = 0; k < call->n_outputs; k++) if (call->outputs[k]->dtype != dt || !nnr_desc_is_contiguous(call->outputs[k])) return 0;
    return call->inputs[0]->ndim == 2;
}

int cu_layer_norm(cu_device *d, const nnr_op_call *call)
{
    ln_args a;
    memset(&a, 0, sizeof a);
    a.back = call->op == NNR_OP_LAYER_NORM_BACKWARD;
    const nnr_tensor_desc *x = a.back ? call->inputs[1] : call->inputs[0];
    a.M = x->sizes[0];
    a.N = x->sizes[1];
    a.x = x->data;
    a.eps = call->params ? call->params->f[0] : 1e-5;
    if (!a.back) {
        a.has_w = call->n_inputs == 3;
        if (a.has_w) { a.w = call->inputs[1]->data; a.b = call->inputs[2]->data; }
        a.y = call->outputs[0]->data;
        a.stats = call->outputs[1]->data;
    } else {
        a.dy = call->inputs[0]->data;
        a.st = call->inputs[2]->data;
        a.has_w = call->n_inputs == 4;
        if (a.has_w) { a.w = call->inputs[3]->data; a.dw = call->outputs[1]->data; a.db = call->outputs[2]->data; }
        a.dx = call->outputs[0]->data;
    }
    if (a.M == 0) return NNR_OK;
    int f32 = x->dtype == NNR_F32;
    if (f32) k_ln_rows<float><<<cu_blocks(a.M, 128), 128, 0, d->stream>>>(a);
    else k_ln_rows<double><<<cu_blocks(a.M, 128), 128, 0, d->stream>>>(a);
    CU_LAUNCHED("layer_norm");
    if (a.back && a.has_w && a.N > 0) {
        if (f32) k_ln_cols<float><<<cu_blocks(a.N, 128), 128, 0, d->stream>>>(a);
        else k_ln_cols<double><<<cu_blocks(a.N, 128), 128, 0, d->stream>>>(a);
        CU_LAUNCHED("layer_norm backward");
    }
    return NNR_OK;
}

/* The pointwise part of a recurrent time step (RNN_CELL, RNN_CELL_BACKWARD; plugin.h says what each
 * operand is): the gates of RNN, LSTM and GRU, forward and backward, a row of the batch per piece of
 * the pool. f32 uses an exp written so that the compiler vectorizes it (a degree-6 polynomial after
 * range reduction by powers of 2: within 2 ulp of expf), since libm's expf and tanhf, one element at
 * a time, took longer than the step's gemm at hidden size 512; f64 uses libm, for the gradient checks. */
#include <math.h>
#include <string.h>
#include "kernels.h"

enum { MODE_TANH = 0, MODE_RELU = 1, MODE_LSTM = 2, MODE_GRU = 3 };

static inline float sigmoid_v(float x) { return 1.0f / (1.0f + cpu_exp_f32(-x)); }
static inline float tanh_v(float x)
{
    float e = cpu_exp_f32(-2.0f * fabsf(x)), t = (1.0f - e) / (1.0f + e);
    return x != x ? x : x < 0 ? -t : t;
}

/* ---- forward: one row of each operand ---- */
#define FORWARD_ROW(T, SIG, TANH)                                                                          \
    static inline __attribute__((always_inline)) void forward_##T(int mode, int64_t H, const T *restrict xw, const T *restrict hw, const T *restrict prev, T *restrict h, T *restrict act, T *restrict c) \
    {                                                                                                      \
        if (mode == MODE_TANH) { for (int64_t j = 0; j < H; j++) h[j] = TANH(xw[j] + hw[j]); return; }      \
        if (mode == MODE_RELU) {                                                                           \
            for (int64_t j = 0; j < H; j++) { T v = xw[j] + hw[j]; h[j] = v > 0 ? v : (v != v ? v : 0); }  \
            return;                                                                                        \
        }                                                                                                  \
        if (mode == MODE_LSTM) {                                                                           \
            for (int64_t j = 0; j < H; j++) {                                                              \
                T i = SIG(xw[j] + hw[j]), f = SIG(xw[H + j] + hw[H + j]);                                  \
                T g = TANH(xw[2 * H + j] + hw[2 * H + j]), o = SIG(xw[3 * H + j] + hw[3 * H + j]);         \
                T cn = f * prev[j] + i * g;                                                                \
                act[j] = i; act[H + j] = f; act[2 * H + j] = g; act[3 * H + j] = o;                        \
                c[j] = cn;                                                                                 \
                h[j] = o * TANH(cn);                                                                       \
            }                                                                                              \
            return;                                                                                        \
        }                                                                                                  \
        for (int64_t j = 0; j < H; j++) {                                                                  \
            T r = SIG(xw[j] + hw[j]), z = SIG(xw[H + j] + hw[H + j]), hn = hw[2 * H + j];                  \
            T n = TANH(xw[2 * H + j] + r * hn);                                                            \
            act[j] = r; act[H + j] = z; act[2 * H + j] = n; act[3 * H + j] = hn;                           \
            h[j] = (1 - z) * n + z * prev[j];                                                              \
        }                                                                                                  \
    }
FORWARD_ROW(float, sigmoid_v, tanh_v)
FORWARD_ROW(double, cpu_sigmoid_d, tanh)

/* ---- backward: one row ---- */
#define BACKWARD_ROW(T, TANH)                                                                              \
    static inline __attribute__((always_inline)) void backward_##T(int mode, int64_t H, const T *restrict dh, const T *restrict dc, const T *restrict act, \
                             const T *restrict prev, T *restrict dx, T *restrict dhw, T *restrict dprev)                                                      \
    {                                                                                                      \
        if (mode == MODE_TANH) { for (int64_t j = 0; j < H; j++) dx[j] = dh[j] * (1 - act[j] * act[j]); return; } \
        if (mode == MODE_RELU) { for (int64_t j = 0; j < H; j++) dx[j] = act[j] > 0 ? dh[j] : 0; return; }    \
        if (mode == MODE_LSTM) {                                                                           \
            for (int64_t j = 0; j < H; j++) {                                                              \
                T i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];                      \
                T tc = TANH(f * prev[j] + i * g);                                                          \
                T dct = dc[j] + dh[j] * o * (1 - tc * tc);                                                 \
                dx[j] = dct * g * i * (1 - i);                                                             \
                dx[H + j] = dct * prev[j] * f * (1 - f);                                                   \
                dx[2 * H + j] = dct * i * (1 - g * g);                                                     \
                dx[3 * H + j] = dh[j] * tc * o * (1 - o);                                                  \
                dprev[j] = dct * f;                                                                        \
            }                                                                                              \
            return;                                                                                        \
        }                                                                                                  \
        for (int64_t j = 0; j < H; j++) {                                                                  \
            T r = act[j], z = act[H + j], n = act[2 * H + j], hn = act[3 * H + j];                         \
            T dn = dh[j] * (1 - z) * (1 - n * n);                                                          \
            T dz = dh[j] * (prev[j] - n) * z * (1 - z);                                                    \
            T dr = dn * hn * r * (1 - r);                                                                  \
            dx[j] = dr; dx[H + j] = dz; dx[2 * H + j] = dn;                                                \
            dhw[j] = dr; dhw[H + j] = dz; dhw[2 * H + j] = dn * r;                                         \
            dprev[j] = dh[j] * z;                                                                          \
        }                                                                                                  \
    }
BACKWARD_ROW(float, tanh_v)
BACKWARD_ROW(double, tanh)

typedef struct rnn_job {
    const nnr_op_call *call;
    int mode, backward;
    int64_t H;
} rnn_job;

/* row b of operand d (NULL when absent) */
static void *row(const nnr_tensor_desc *d, int64_t b, int64_t es)
{
    return d ? (char *)d->data + b * d->strides[0] * es : NULL;
}

CPU_MULTI(void, rnn_rows, (void *arg, int64_t begin, int64_t end), (arg, begin, end))
{
    const rnn_job *j = arg;
    const nnr_op_call *c = j->call;
    int f32 = c->inputs[0]->dtype == NNR_F32;
    int64_t es = f32 ? 4 : 8;
    const nnr_tensor_desc *in[4] = {0}, *out[3] = {0};
    for (int k = 0; k < c->n_inputs; k++) in[k] = c->inputs[k];
    for (int k = 0; k < c->n_outputs; k++) out[k] = c->outputs[k];
    for (int64_t b = begin; b < end; b++) {
        if (!j->backward) {
            void *a[6] = {row(in[0], b, es), row(in[1], b, es), row(in[2], b, es), row(out[0], b, es), row(out[1], b, es), row(out[2], b, es)};
            if (f32) forward_float(j->mode, j->H, a[0], a[1], a[2], a[3], a[4], a[5]);
            else forward_double(j->mode, j->H, a[0], a[1], a[2], a[3], a[4], a[5]);
            continue;
        }
        /* inputs as the kernel takes them: dh, dc, act, prev (absent ones NULL) */
        int lstm = j->mode == MODE_LSTM, gru = j->mode == MODE_GRU;
        void *dh = row(in[0], b, es), *dc = lstm ? row(in[1], b, es) : NULL;
        void *act = lstm ? row(in[2], b, es) : row(in[1], b, es), *prev = lstm ? row(in[3], b, es) : gru ? row(in[2], b, es) : NULL;
        void *dx = row(out[0], b, es), *dhw = gru ? row(out[1], b, es) : NULL, *dprev = lstm ? row(out[1], b, es) : gru ? row(out[2], b, es) : NULL;
        if (f32) backward_float(j->mode, j->H, dh, dc, act, prev, dx, dhw, dprev);
        else backward_double(j->mode, j->H, dh, dc, act, prev, dx, dhw, dprev);
    }
}

int cpu_supports_rnn(const nnr_op_call *call) { return nnr_rnn_cell_call_ok(call); }

int cpu_rnn_cell(const nnr_op_call *call)
{
    rnn_job j = {call, (int)call->params->i[0], call->op == NNR_OP_RNN_CELL_BACKWARD, 0};
    /* H: the forward's h, the backward's dh */
    const nnr_tensor_desc *hd = j.backward ? call->inputs[0] : call->outputs[0];
    j.H = hd->sizes[1];
    int64_t B = hd->sizes[0];
    return cpu_parallel_for(B, 8192 / (j.H > 0 ? j.H : 1) + 1, rnn_rows, &j);
}

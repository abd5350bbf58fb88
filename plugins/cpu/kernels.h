/* Shared by the cpu backend's files: the thread pool, the strided iterator
 * and the kernel entry points. One kernel, one job; shapes at the top. */
#ifndef NNR_CPU_KERNELS_H
#define NNR_CPU_KERNELS_H

#include <math.h>
#include <stdint.h>
#include "nnr/plugin.h"
#include "nnr/dtype.h"
#include "isa.h"

extern const nnr_host_api *cpu_host;

/* 1 when d's elements are laid out row-major without gaps (size-1 dims ignored) */

/* reports an error through the host and returns status */
int cpu_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- thread pool (pool.c) ---- */
typedef void (*cpu_range_fn)(void *ctx, int64_t begin, int64_t end);
void cpu_pool_set_threads(int n);
/* one pool per cpu device, the threads shared out among them; an op runs on its device's pool */
void cpu_pool_set_devices(int n);
void cpu_pool_select(int device);
int cpu_pool_threads(void);
/* runs fn over [0, n) in up to num_threads contiguous pieces; pieces smaller
 * than grain are not split further. Returns NNR_ERR_INTERRUPTED on Ctrl-C. */
int cpu_parallel_for(int64_t n, int64_t grain, cpu_range_fn fn, void *ctx);
/* products of fewer multiply-adds than this run on the calling thread (gemm, batched matmul) */
#define CPU_SERIAL_MACS 2097152.0
/* ... unless they have few rows (M <= CPU_STREAM_ROWS) and a B of at least this many bytes: such a product
 * (a batch-1 layer) reads its weight once, and the weight's stream from L3 or memory, not the arithmetic,
 * is its time; two threads read it about twice as fast. gemm.c runs them in fixed column blocks of half
 * this size */
#define CPU_STREAM_ROWS 16
#define CPU_STREAM_BYTES 262144.0
/* small-batch linear (gemv.c): f32 products of up to this many rows read the weight once, in place */
#define CPU_GEMV_ROWS 16
int cpu_gemv_applies(int dt, int64_t M, int64_t N, int64_t K);
extern int cpu_gemv_enabled;
extern _Atomic long cpu_gemv_calls;
int cpu_gemv_linear(const float *x, const float *W, const float *b, float *y, int64_t M, int64_t N, int64_t K, int relu);
void cpu_pool_shutdown(void);
/* frees the calling thread's scratch buffers (pool threads call it as they exit) */
void cpu_thread_exit(void);
void cpu_conv_thread_exit(void);
void cpu_bf16_thread_exit(void);
/* a thread that keeps scratch calls this: cpu_thread_exit then runs when the thread ends */
void cpu_thread_scratch_taken(void);

/* ---- strided iteration over operands of one shape (iter.c) ---- */
enum { CPU_ITER_MAX_OPS = 5 };
typedef struct cpu_iter {
    int ndim, nops;
    int64_t sizes[NNR_MAX_DIMS];
    int64_t strides[CPU_ITER_MAX_OPS][NNR_MAX_DIMS];   /* bytes */
    char *base[CPU_ITER_MAX_OPS];
} cpu_iter;
/* a row: n elements, ptrs[k] the first element of operand k, strides in bytes */
typedef void (*cpu_row_fn)(void *ctx, int64_t n, char **ptrs, const int64_t *strides);
/* operand 0 gives the shape; dims are coalesced where every operand allows */
void cpu_iter_init(cpu_iter *it, int nops, const nnr_tensor_desc *const *descs);
int cpu_iter_run(const cpu_iter *it, cpu_row_fn fn, void *ctx);
int64_t cpu_iter_numel(const cpu_iter *it);

/* ---- OpenBLAS (blas.c), opened on the first op that needs a gemm ---- */
#include <cblas.h>
typedef void (*cpu_sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE, const blasint,
                             const blasint, const blasint, const float, const float *, const blasint, const float *, const blasint,
                             const float, float *, const blasint);
typedef void (*cpu_dgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE, const blasint,
                             const blasint, const blasint, const double, const double *, const blasint, const double *, const blasint,
                             const double, double *, const blasint);
typedef struct cpu_blas_api {
    cpu_sgemm_fn sgemm;
    cpu_dgemm_fn dgemm;
    void (*set_num_threads)(int n);
} cpu_blas_api;
extern cpu_blas_api cpu_blas;
/* sets OpenBLAS's environment for this CPU, then opens it, once (the first op that needs a gemm calls it;
 * thread-safe); an error status with the reason */
int cpu_blas_open(void);
/* sets OpenBLAS's environment (its kernel family for the CPU class); at init, before any thread */
void cpu_blas_configure(void);
/* caps oneDNN's dispatch at a forced class (ONEDNN_MAX_CPU_ISA); at init, before any thread */
void cpu_onednn_configure(void);
/* OpenBLAS's own thread count (1 unless NNR_GEMM_THREADS=openblas), applied now or when it opens */
void cpu_blas_set_threads(int n);

/* ---- gemm (gemm.c): OpenBLAS single-threaded, split over the pool ---- */
void cpu_gemm(int dt, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha,
              const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc);
/* 1: NNR_GEMM_THREADS=openblas, OpenBLAS threads its own gemms (read at set_num_threads; -1 unset) */
extern int cpu_gemm_openblas_threads;
/* for use inside a parallel region (one pool thread) */
void cpu_gemm_serial(int dt, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha,
                     const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc);

/* ---- 1-d convolution a tile at a time (conv1d.c; the input gradient where oneDNN does not take it):
 * conv2d's ops when H = KH = 1 and at least 64
 * outputs (applies() says so); the gradient forms without a relu mask ---- */
int cpu_conv1d_applies(const nnr_tensor_desc *x, const nnr_tensor_desc *w, const nnr_tensor_desc *y, const int64_t *i);
int cpu_conv1d_forward(const nnr_op_call *call);
int cpu_conv1d_grad_input(const nnr_op_call *call);
int cpu_conv1d_grad_weight(const nnr_op_call *call);
void cpu_conv1d_thread_exit(void);

/* ---- bf16 products on AMX tiles or AVX512-BF16 (bf16.c) ---- */
/* 1 when the cpu has AMX-BF16, the OS grants it and it is not turned off (NNR_CPU_AMX=0, option "amx") */
int cpu_amx_available(void);
extern int cpu_amx_enabled;
/* 1 when bf16 products of this kind (f32: allow_bf16's f32 gemms, else bf16 matmuls) run on VDPBF16PS:
 * class avx512_bf16 or above, AMX not running, and the setting (NNR_CPU_BF16_DOT, option "bf16_dot":
 * 0 off, 1 on, -1 auto: bf16 matmuls always, f32 gemms where VDPBF16PS measured 1.25x FMA's rate) */
int cpu_bf16_dot_available(int f32);
int cpu_bf16_dot_mode(void);
extern int cpu_bf16_dot_setting;
/* VDPBF16PS's multiply-adds a second over FMA's on this cpu (0 without AVX512-BF16), measured once */
double cpu_bf16_dot_ratio(void);
/* for one kind of product: 2 AMX, 1 AVX512-BF16, 0 neither (bf16 matmuls on f32 copies and sgemm,
 * allow_bf16 does nothing) */
int cpu_bf16_engine(int f32);
/* a bf16 matmul on the engine cpu_bf16_engine(0) gave (1 or 2), decided once by the caller */
int cpu_bf16_matmul(const nnr_op_call *call, int engine);
/* nnr.backends.cpu.allow_bf16 (off by default): f32 gemms of at least 32^3 multiply-adds on either engine,
 * operands rounded to bf16, sums in f32 */
extern int cpu_allow_bf16;
int cpu_bf16_sgemm_applies(int64_t M, int64_t N, int64_t K);
int cpu_bf16_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* ---- oneDNN (onednn.c), opened on first use; every entry point returns 0 for "not taken" ---- */
/* 1 when oneDNN is built in, found, and not turned off (NNR_ONEDNN=0, option "onednn") */
int cpu_onednn_available(void);
extern int cpu_onednn_enabled;
extern _Atomic long cpu_onednn_calls;     /* the ops (or pieces of a batch) it ran */
const char *cpu_onednn_version(void);
/* f32 products C[b] = op(A[b]) op(B[b]) for b in a range; strides in elements, s* between products */
typedef struct cpu_onednn_mm {
    int64_t M, N, K, lda, ldb, ldc, sa, sb, sc;
    int ta, tb;                 /* 1: the operand is read transposed */
    const float *A, *B;
    float *C;
    int accumulate;             /* 1: C += A B (beta 1), else C = A B */
} cpu_onednn_mm;
/* runs products [begin, end) in the calling thread; 1 when done */
int cpu_onednn_matmul(const cpu_onednn_mm *m, int64_t begin, int64_t end);
/* 1 when cpu_gemm_serial gives this f32 product to oneDNN rather than OpenBLAS (gemm.c says why) */
int cpu_onednn_gemm_applies(int64_t M, int64_t N, int64_t K);
extern int cpu_onednn_gemm;
/* one such product (batch strides of a whole matrix); 1 when done. Counted apart from the ops above */
int cpu_onednn_gemm_piece(const cpu_onednn_mm *m);
extern _Atomic long cpu_onednn_gemm_calls;
/* CONV2D_GRAD_INPUT (so conv_transpose2d) as a deconvolution over the pool; 1 when done */
int cpu_onednn_conv_transpose(const nnr_op_call *call);
/* CONV2D with a weight key (f[0] != 0, ABI 1.8: inference), f32, one group */
int cpu_onednn_conv(const nnr_op_call *call);
extern int cpu_onednn_conv_enabled;      /* option onednn_conv */
/* LINEAR with a key for its weight (params i[1], ABI 1.6), f32, at most 256 rows and no relu: the
 * weight packed once per key and pool thread's column slice; 1 when done */
int cpu_onednn_linear(const nnr_op_call *call);
void cpu_onednn_thread_exit(void);

/* exp(x) within 2 ulp for x in [-87.5, 88] (clamped outside it: 0 below, exp(88) above), NaN kept;
 * vectorizable (no calls, no branches): a degree-6 polynomial after range reduction by powers of 2 */
static inline float cpu_exp_f32(float x)
{
    float c = x < -87.5f ? -87.5f : x > 88.0f ? 88.0f : x;      /* exp(88) < FLT_MAX */
    c = c != c ? 0.0f : c;
    float k = (c * 1.44269504f + 12582912.0f) - 12582912.0f;     /* round(c / ln 2) */
    float r = c - k * 0.693145752f - k * 1.42860677e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666418f + r * (0.00833345205f + r * 0.00138775783f)))));
    union { int32_t i; float f; } scale = {.i = ((int32_t)k + 127) << 23};
    return x != x ? x : p * scale.f;
}
/* the max of a short f32 row (a classifier's scores), NaN when an element is; -inf for none (long rows:
 * cpu_extreme_f32). Softmax's rows and the cross-entropy's (reduce.c, loss.c) */
static inline float cpu_short_max_f32(const float *x, int64_t n)
{
    float m = -INFINITY;
    int nan = 0;
    for (int64_t i = 0; i < n; i++) { m = x[i] > m ? x[i] : m; nan |= x[i] != x[i]; }
    return nan ? NAN : m;
}
/* the sum of exp(x[i] - mx) over n contiguous f32, -inf elements exactly 0: 16 float lanes (so that the
 * caller's CPU_MULTI copy vectorizes it), the lanes and the tail added in double. log_softmax's rows and
 * the cross-entropy's log-sum-exps */
static inline double cpu_exp_sum_f32(const float *restrict x, int64_t n, float mx)
{
    float lane[16] = {0};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int k = 0; k < 16; k++) { float v = x[j + k], e = cpu_exp_f32(v - mx); lane[k] += v == -INFINITY ? 0.0f : e; }
    double sum = 0;
    for (; j < n; j++) sum += x[j] == -INFINITY ? 0.0 : (double)cpu_exp_f32(x[j] - mx);
    for (int k = 0; k < 16; k++) sum += lane[k];
    return sum;
}
/* o[i] = op(a[i]) for n contiguous f32 (o may be a) by SLEEF's vector functions for the running class
 * (vmath.c): EXP, LOG, TANH, SIGMOID, SIN, COS, ERF; 0 for any other op (nothing written) */
int cpu_vmath_f32(int op, int64_t n, float *o, const float *a);
int cpu_vmath_op(int op);                 /* 1 for the ops cpu_vmath_f32 takes */
/* ACTIVATION (g NULL: o = act(x)) and ACTIVATION_GRAD (o = g act'(x)) of kind with params a, b over n
 * contiguous f32 (vmath.c); the same one element at a time in double */
void cpu_activation_f32(int kind, int64_t n, float *o, const float *g, const float *x, float a, float b);
double cpu_activation_d(int kind, double x, double a, double b);
double cpu_activation_grad_d(int kind, double g, double x, double a, double b);
int cpu_activation(const nnr_op_call *call);
/* o[i] = a[i] ^ b[i] over n f32, a and b contiguous (stride 1) or one of them a scalar (stride 0), whose
 * exact value (a double) is scalar (vmath.c) */
void cpu_pow_f32(int64_t n, float *o, const float *a, int64_t sa, const float *b, int64_t sb, double scalar);
/* the largest (is_max) or smallest of init and x[0..n), NaN when one of them is (vmath.c) */
float cpu_extreme_f32(const float *x, int64_t n, int is_max, float init);
/* the logistic function without overflow either way (the SIGMOID op's, and the recurrent gates' in f64) */
static inline double cpu_sigmoid_d(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

/* ---- kernels ---- */
int cpu_supports_elementwise(const nnr_op_call *call);
int cpu_unary(const nnr_op_call *call);
int cpu_binary(const nnr_op_call *call);
int cpu_where(const nnr_op_call *call);
int cpu_clamp(const nnr_op_call *call);
int cpu_copy(const nnr_op_call *call);
int cpu_fill(const nnr_op_call *call);
int cpu_arange(const nnr_op_call *call);
int cpu_random(const nnr_op_call *call);
int cpu_reduce(const nnr_op_call *call);
int cpu_softmax(const nnr_op_call *call);
int cpu_matmul(const nnr_op_call *call);
int cpu_linear(const nnr_op_call *call);
/* relu in place over n elements of dt (f32/f64), NaN kept */
void cpu_relu_inplace(int dt, void *p, int64_t n);
int cpu_gather(const nnr_op_call *call);
int cpu_index_select(const nnr_op_call *call);
int cpu_scatter_add(const nnr_op_call *call);
int cpu_conv2d(const nnr_op_call *call);
int cpu_conv2d_grad_input(const nnr_op_call *call);
int cpu_conv2d_grad_weight(const nnr_op_call *call);
int cpu_maxpool2d(const nnr_op_call *call);
int cpu_maxpool2d_backward(const nnr_op_call *call);
int cpu_avgpool2d(const nnr_op_call *call);   /* avg, adaptive, and their backwards */
int cpu_batchnorm(const nnr_op_call *call);   /* the four BN_ ops */
int cpu_sgd_step(const nnr_op_call *call);
int cpu_adam_step(const nnr_op_call *call);
int cpu_rmsprop_step(const nnr_op_call *call);
int cpu_index_add(const nnr_op_call *call);
int cpu_sort(const nnr_op_call *call);       /* sort and topk (sort.c) */
int cpu_scan(const nnr_op_call *call);       /* cumsum and cumprod (scan.c) */
int cpu_sample(const nnr_op_call *call);     /* bernoulli, multinomial, randperm (random.c) */
int cpu_supports_rnn(const nnr_op_call *call);
int cpu_rnn_cell(const nnr_op_call *call);   /* RNN_CELL and its backward (rnn.c) */
int cpu_supports_layer_norm(const nnr_op_call *call);
int cpu_layer_norm(const nnr_op_call *call); /* LAYER_NORM and its backward (layernorm.c) */
/* CROSS_ENTROPY and CROSS_ENTROPY_GRAD (loss.c) */
int cpu_supports_cross_entropy(const nnr_op_call *call);
int cpu_cross_entropy(const nnr_op_call *call);
int cpu_attention_decode(const nnr_op_call *call);           /* ATTN_DECODE (attention.c) */
int cpu_supports_attention_decode(const nnr_op_call *call);

#endif

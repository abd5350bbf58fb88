/* Small-batch linear: y = x W^T (+ b) (relu'd) for up to CPU_GEMV_ROWS rows of x, f32, all contiguous.
 *
 * At batch 1 to 16 a layer's time is reading its weight (from L3 or memory), not the arithmetic, and a
 * gemm pays for what this shape does not need: OpenBLAS's sgemm packs the weight (a second pass over
 * it) and adds the bias in a pass of its own. Here each block of 4 weight rows is read once, from its
 * place, for every row of x: up to 4 rows of x at a time against the 4 weight rows, 16 accumulators
 * of 16 lanes on AVX-512 (2 rows of x and 8 lanes on AVX2 and the baseline, below), the lanes summed
 * pairwise, then the bias and the relu, written once. Two threads read the weight about
 * twice as fast (it streams from L3 at some 27 GB/s a core on the 2-vCPU Xeon): a weight of
 * CPU_STREAM_BYTES or more is split over the pool in blocks of 4 rows, fixed whatever the thread
 * count, and every output is computed by the same code on any split, so results do not depend on the
 * number of threads. A 17-layer decoding step (12.7 MB of weights): 332 us through sgemm, see
 * docs/perf.md for this path. */
#include <string.h>
#include "kernels.h"

/* The lanes are the class's vector: 16 floats (a zmm) on AVX-512, 8 (a ymm) on AVX2 and the baseline
 * (two xmm there). The register blocking follows: up to 4 rows of x against 4 weight rows takes 16
 * accumulators, which fit AVX-512's 32 registers; AVX2 has 16, so it takes 2 rows of x at a time (8
 * accumulators, the 4 weight vectors and one of x). A kernel compiled for a narrower class with the
 * wider blocking spilled: the mlp's batch-1 inference took 99 us on the avx2 class against 28. */
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
/* the helpers below pass vectors by value, but only inline: no calling convention is involved */
#pragma GCC diagnostic ignored "-Wpsabi"

static inline __attribute__((always_inline)) v16 load16(const float *p) { return *(const v16u *)p; }
static inline __attribute__((always_inline)) v8 load8(const float *p) { return *(const v8u *)p; }

/* the lanes' sum, pairwise (each level one vector add) */
static inline __attribute__((always_inline)) float hsum16(v16 v)
{
    v += __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return v[0];
}
static inline __attribute__((always_inline)) float hsum8(v8 v)
{
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
    return v[0];
}

/* MR rows of x against the 4 weight rows w[0..3]: out[r][c] = x_r . w_c, K's multiple of L in the
 * lanes, the rest one product at a time after them */
#define DOT_BLOCK(MR, VT, L)                                                                                      \
    static inline __attribute__((always_inline)) void dot_block_##L##_##MR(const float *restrict x, int64_t K,    \
                                                                            const float *const w[4], float out[4][4]) \
    {                                                                                                             \
        VT a[MR][4];                                                                                              \
        for (int r = 0; r < MR; r++)                                                                              \
            for (int c = 0; c < 4; c++) a[r][c] = (VT){0};                                                        \
        int64_t kl = K - K % L;                                                                                   \
        for (int64_t k = 0; k < kl; k += L) {                                                                     \
            VT wv[4] = {load##L(w[0] + k), load##L(w[1] + k), load##L(w[2] + k), load##L(w[3] + k)};              \
            for (int r = 0; r < MR; r++) {                                                                        \
                VT xv = load##L(x + r * K + k);                                                                   \
                for (int c = 0; c < 4; c++) a[r][c] += xv * wv[c];                                                \
            }                                                                                                     \
        }                                                                                                         \
        for (int r = 0; r < MR; r++)                                                                              \
            for (int c = 0; c < 4; c++) {                                                                         \
                float s = hsum##L(a[r][c]);                                                                       \
                for (int64_t k = kl; k < K; k++) s += x[r * K + k] * w[c][k];                                     \
                out[r][c] = s;                                                                                    \
            }                                                                                                     \
    }
DOT_BLOCK(1, v16, 16)
DOT_BLOCK(2, v16, 16)
DOT_BLOCK(3, v16, 16)
DOT_BLOCK(4, v16, 16)
DOT_BLOCK(1, v8, 8)
DOT_BLOCK(2, v8, 8)

static inline __attribute__((always_inline)) float epilogue(float s, const float *b, int64_t n, int relu)
{
    if (b) s += b[n];
    return relu && !(s > 0) && s == s ? 0.0f : s;     /* NaN stays NaN, as the RELU op does */
}

/* weight rows [n0, n1) (n0 a multiple of 4; n1 too, or N) for all M rows of x, MAXR rows of x at a
 * time with lanes of L. A last block of fewer than 4 weight rows repeats its last row, and a row of x
 * is computed the same way whatever rows share its block: the same code for every output */
#define GEMV_ROWS(L, MAXR, BLOCKS)                                                                                \
    static inline __attribute__((always_inline, unused)) void gemv_rows_##L(const float *restrict x, int64_t M, int64_t K, \
        const float *restrict W, const float *restrict b, float *restrict y, int64_t N, int64_t n0, int64_t n1, int relu) \
    {                                                                                                             \
        float out[4][4];                                                                                          \
        for (int64_t n = n0; n < n1; n += 4) {                                                                    \
            int nc = n1 - n < 4 ? (int)(n1 - n) : 4;                                                              \
            const float *w[4];                                                                                    \
            for (int c = 0; c < 4; c++) w[c] = W + (n + (c < nc ? c : nc - 1)) * K;                              \
            for (int64_t m = 0; m < M; m += MAXR) {                                                               \
                int mr = M - m < MAXR ? (int)(M - m) : MAXR;                                                      \
                const float *xm = x + m * K;                                                                      \
                BLOCKS                                                                                            \
                for (int r = 0; r < mr; r++)                                                                      \
                    for (int c = 0; c < nc; c++) y[(m + r) * N + n + c] = epilogue(out[r][c], b, n + c, relu);   \
            }                                                                                                     \
        }                                                                                                         \
    }
GEMV_ROWS(16, 4, switch (mr) {
    case 1: dot_block_16_1(xm, K, w, out); break;
    case 2: dot_block_16_2(xm, K, w, out); break;
    case 3: dot_block_16_3(xm, K, w, out); break;
    default: dot_block_16_4(xm, K, w, out); break;
})
GEMV_ROWS(8, 2, if (mr == 1) dot_block_8_1(xm, K, w, out); else dot_block_8_2(xm, K, w, out);)

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target(CPU_TARGET_AVX512), flatten, noinline))
static void gemv_rows_avx512(const float *x, int64_t M, int64_t K, const float *W, const float *b, float *y, int64_t N, int64_t n0,
                             int64_t n1, int relu)
{
    gemv_rows_16(x, M, K, W, b, y, N, n0, n1, relu);
}
__attribute__((target(CPU_TARGET_AVX2), flatten, noinline))
static void gemv_rows_avx2(const float *x, int64_t M, int64_t K, const float *W, const float *b, float *y, int64_t N, int64_t n0,
                           int64_t n1, int relu)
{
    gemv_rows_8(x, M, K, W, b, y, N, n0, n1, relu);
}
#endif
__attribute__((flatten, noinline))
static void gemv_rows_base(const float *x, int64_t M, int64_t K, const float *W, const float *b, float *y, int64_t N, int64_t n0,
                           int64_t n1, int relu)
{
    gemv_rows_8(x, M, K, W, b, y, N, n0, n1, relu);
}

static void gemv_rows(const float *x, int64_t M, int64_t K, const float *W, const float *b, float *y, int64_t N, int64_t n0, int64_t n1,
                      int relu)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (cpu_isa_level >= CPU_ISA_AVX512) { gemv_rows_avx512(x, M, K, W, b, y, N, n0, n1, relu); return; }
    if (cpu_isa_level >= CPU_ISA_AVX2) { gemv_rows_avx2(x, M, K, W, b, y, N, n0, n1, relu); return; }
#endif
    gemv_rows_base(x, M, K, W, b, y, N, n0, n1, relu);
}

typedef struct gemv_job {
    const float *x, *W, *b;
    float *y;
    int64_t M, K, N, unit;
    int relu;
} gemv_job;

static void gemv_piece(void *arg, int64_t begin, int64_t end)
{
    const gemv_job *j = arg;
    int64_t n0 = begin * j->unit, n1 = end * j->unit < j->N ? end * j->unit : j->N;
    if (n0 < n1) gemv_rows(j->x, j->M, j->K, j->W, j->b, j->y, j->N, n0, n1, j->relu);
}

int cpu_gemv_enabled = 1;        /* nnr.backends.cpu.gemv = false: these products go to the gemm paths */
_Atomic long cpu_gemv_calls;      /* nnr.backends.cpu.gemv_calls, for tests and benchmarks */

int cpu_gemv_applies(int dt, int64_t M, int64_t N, int64_t K)
{
    return cpu_gemv_enabled && dt == NNR_F32 && M >= 1 && M <= CPU_GEMV_ROWS && N >= 1 && K >= 1;
}

int cpu_gemv_linear(const float *x, const float *W, const float *b, float *y, int64_t M, int64_t N, int64_t K, int relu)
{
    /* blocks of about 32 KiB of weight, whole 4-row blocks: fixed, so that the split does not depend on
     * the thread count (it would not change a result anyway: each output's code is the same) */
    int64_t unit = ((int64_t)32768 / (K * 4) + 3) & ~(int64_t)3;
    gemv_job j = {x, W, b, y, M, K, N, unit < 4 ? 4 : unit, relu};
    cpu_gemv_calls++;
    int64_t units = (N + j.unit - 1) / j.unit;
    if (cpu_pool_threads() <= 1 || (double)N * (double)K * 4.0 < CPU_STREAM_BYTES) {
        gemv_piece(&j, 0, units);
        return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
    }
    return cpu_parallel_for(units, 1, gemv_piece, &j);
}

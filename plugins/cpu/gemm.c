/* gemm on our pool: OpenBLAS runs single-threaded (cpu.c), and a large gemm is
 * split into column (or row) blocks, one single-threaded OpenBLAS call per
 * pool thread. One set of threads for the whole backend, so our kernels and
 * OpenBLAS never compete for the cores (OpenBLAS's own idle threads spin in
 * sched_yield between calls). Measured on the 2-core machine for the mlp's and
 * cnn's shapes: 8-37% faster than OpenBLAS's own threading, and it lets a
 * convolution run its images in parallel. Each element is computed by one
 * single-threaded call whatever the split, its library (oneDNN for 17-512
 * rows, OpenBLAS otherwise) chosen on the whole product; the libraries pick
 * kernels by a piece's size, so the last bit may follow the thread count
 * (docs/architecture.md), never the run. */
#include <cblas.h>
#include "kernels.h"

typedef struct gemm_job {
    int dt, split_n, per_unit;      /* per_unit: one call per unit of columns (fixed blocks) */
    int onednn;                     /* the whole product's library, decided once: not a piece's */
    CBLAS_TRANSPOSE ta, tb;
    int64_t M, N, K, lda, ldb, ldc, unit;
    double alpha, beta;
    const char *A, *B;
    char *C;
} gemm_job;

/* 1 when the product ran with bf16 products (allow_bf16, bf16.c); out of memory for the tiles leaves it to OpenBLAS */
static int took_bf16(int dt, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha, const void *A,
                    int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc)
{
    return dt == NNR_F32 && cpu_bf16_sgemm_applies(M, N, K) &&
           cpu_bf16_sgemm(ta, tb, M, N, K, (float)alpha, A, lda, B, ldb, (float)beta, C, ldc) != NNR_ERR_OOM;
}

/* onednn: the product's library (oneDNN's gemm rule, onednn.c), decided on the whole product, so that a
 * piece's own size (which follows the thread count) does not choose it */
static void serial_with(int onednn, int dt, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha,
                        const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (took_bf16(dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
    if (onednn && dt == NNR_F32 && alpha == 1.0 && (beta == 0.0 || beta == 1.0)) {
        /* one product: the batch strides only need to be those of a whole matrix (oneDNN refuses 0) */
        int64_t sa = (ta == CblasTrans ? K : M) * lda, sb = (tb == CblasTrans ? N : K) * ldb;
        cpu_onednn_mm m = {M, N, K, lda, ldb, ldc, sa, sb, M * ldc, ta == CblasTrans, tb == CblasTrans, A, B, C, beta == 1.0};
        if (cpu_onednn_gemm_piece(&m)) return;
    }
    if (dt == NNR_F32)
        cpu_blas.sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, (float)alpha, A, (int)lda, B, (int)ldb, (float)beta, C, (int)ldc);
    else
        cpu_blas.dgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void cpu_gemm_serial(int dt, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha,
                     const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc)
{
    serial_with(dt == NNR_F32 && cpu_onednn_gemm_applies(M, N, K), dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void gemm_piece(void *arg, int64_t begin, int64_t end)
{
    const gemm_job *j = arg;
    int64_t es = j->dt == NNR_F32 ? 4 : 8;
    int64_t total = j->split_n ? j->N : j->M;
    int64_t lo = begin * j->unit, hi = end * j->unit < total ? end * j->unit : total;
    if (lo >= hi) return;
    if (j->per_unit && end - begin > 1) {
        for (int64_t u = begin; u < end; u++) gemm_piece(arg, u, u + 1);
        return;
    }
    if (j->split_n) {      /* columns [lo, hi) of B and C */
        const char *b = j->B + (j->tb == CblasNoTrans ? lo : lo * j->ldb) * es;
        serial_with(j->onednn, j->dt, j->ta, j->tb, j->M, hi - lo, j->K, j->alpha, j->A, j->lda, b, j->ldb, j->beta, j->C + lo * es, j->ldc);
    } else {               /* rows [lo, hi) of A and C */
        const char *a = j->A + (j->ta == CblasNoTrans ? lo * j->lda : lo) * es;
        serial_with(j->onednn, j->dt, j->ta, j->tb, hi - lo, j->N, j->K, j->alpha, a, j->lda, j->B, j->ldb, j->beta, j->C + lo * j->ldc * es,
                    j->ldc);
    }
}

/* NNR_GEMM_THREADS=openblas leaves threading to OpenBLAS (for comparison) */
int cpu_gemm_openblas_threads = -1;

void cpu_gemm(int dt, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, double alpha,
              const void *A, int64_t lda, const void *B, int64_t ldb, double beta, void *C, int64_t ldc)
{
    if (took_bf16(dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
    int threads = cpu_pool_threads();
    int64_t es = dt == NNR_F32 ? 4 : 8;
    if (cpu_gemm_openblas_threads <= 0 && M <= CPU_STREAM_ROWS && (double)N * (double)K * (double)es >= CPU_STREAM_BYTES) {
        /* a few rows against a large weight (a batch-1 layer): the weight's stream is the time, and two
         * threads read it about twice as fast. The columns go in fixed blocks of some 128 KiB of weight
         * whatever the thread count, one OpenBLAS call each, so that the results do not depend on it
         * (OpenBLAS picks its kernel by the product's size) */
        int64_t unit = (int64_t)(CPU_STREAM_BYTES / 2) / (K * es) / 16 * 16;
        gemm_job j = {dt, 1, 1, 0, ta, tb, M, N, K, lda, ldb, ldc, unit < 16 ? 16 : unit, alpha, beta, A, B, C};
        int64_t units = (N + j.unit - 1) / j.unit;
        if (threads <= 1) gemm_piece(&j, 0, units);
        else cpu_parallel_for(units, 1, gemm_piece, &j);
        return;
    }
    /* below about 2M multiply-adds (some 15 us on one core: a batch-1 layer's arithmetic) handing half to a
     * pool thread costs more than it saves */
    if (threads <= 1 || cpu_gemm_openblas_threads > 0 || (double)M * (double)N * (double)K < CPU_SERIAL_MACS) {
        cpu_gemm_serial(dt, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    gemm_job j = {dt, N >= M, 0, dt == NNR_F32 && cpu_onednn_gemm_applies(M, N, K), ta, tb, M, N, K, lda, ldb, ldc, 0, alpha, beta, A, B, C};
    j.unit = j.split_n ? 16 : 4;        /* whole vector widths of columns; rows in fours */
    int64_t units = ((j.split_n ? N : M) + j.unit - 1) / j.unit;
    cpu_parallel_for(units, 1, gemm_piece, &j);
}

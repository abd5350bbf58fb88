// cuBLAS called directly, and cudaMemcpy device to device: the references that
// scripts/bench/run_gpu.py holds nnrun's matmul and elementwise ops against.
// Prints one JSON line: f32 and bf16 gemm of n^3 (TF32 off, as nnrun's default)
// in TFLOP/s, and device-to-device copy bandwidth in GB/s (read + write).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <vector>

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e)); return 1; } } while (0)
#define BCHECK(x) do { cublasStatus_t s = (x); if (s != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "%s: cuBLAS %d\n", #x, (int)s); return 1; } } while (0)

static double median(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 8192, reps = 10;
    cublasHandle_t h;
    BCHECK(cublasCreate(&h));
    BCHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    double tflops[2];
    for (int k = 0; k < 2; k++) {
        cudaDataType_t t = k == 0 ? CUDA_R_32F : CUDA_R_16BF;
        size_t es = k == 0 ? 4 : 2, bytes = (size_t)n * n * es;
        void *A, *B, *C;
        CHECK(cudaMalloc(&A, bytes)); CHECK(cudaMalloc(&B, bytes)); CHECK(cudaMalloc(&C, bytes));
        CHECK(cudaMemset(A, 0x3c, bytes)); CHECK(cudaMemset(B, 0x3c, bytes));
        float one = 1, zero = 0;
        std::vector<double> ms;
        for (int r = 0; r < reps + 2; r++) {
            CHECK(cudaEventRecord(a));
            BCHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, t, n, B, t, n, &zero, C, t, n, CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
            CHECK(cudaEventRecord(b));
            CHECK(cudaEventSynchronize(b));
            float m;
            CHECK(cudaEventElapsedTime(&m, a, b));
            if (r >= 2) ms.push_back(m);
        }
        tflops[k] = 2.0 * n * (double)n * n / (median(ms) * 1e-3) / 1e12;
        cudaFree(A); cudaFree(B); cudaFree(C);
    }
    size_t bytes = (size_t)1 << 30;
    void *src, *dst;
    CHECK(cudaMalloc(&src, bytes)); CHECK(cudaMalloc(&dst, bytes));
    CHECK(cudaMemset(src, 1, bytes));
    std::vector<double> ms;
    for (int r = 0; r < reps + 2; r++) {
        CHECK(cudaEventRecord(a));
        CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        float m;
        CHECK(cudaEventElapsedTime(&m, a, b));
        if (r >= 2) ms.push_back(m);
    }
    double gbs = 2.0 * bytes / (median(ms) * 1e-3) / 1e9;
    printf("{\"n\": %d, \"f32_tflops\": %.2f, \"bf16_tflops\": %.2f, \"d2d_copy_gbs\": %.1f}\n", n, tflops[0], tflops[1], gbs);
    return 0;
}

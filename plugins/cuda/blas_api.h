/* cuBLAS, opened with dlopen on first use rather than linked: every nnrun
 * loads the plugins at start, and cuBLAS is hundreds of megabytes that a
 * machine without a GPU never needs. */
#ifndef NNR_CUDA_BLAS_API_H
#define NNR_CUDA_BLAS_API_H
#include <cublas_v2.h>

typedef struct cu_blas_api {
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t);
    cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                                              const void *, cudaDataType, int, long long, const void *, cudaDataType, int, long long,
                                              const void *, void *, cudaDataType, int, long long, int, cublasComputeType_t,
                                              cublasGemmAlgo_t);
    const char *(*status_string)(cublasStatus_t);
} cu_blas_api;

/* the loaded API, or NULL with an error set naming the libraries tried */
const cu_blas_api *cu_blas(void);
#endif

/* Shared by the cuda backend's files: per-device state, error helpers and the
 * strided-operand description that every generic kernel takes by value. */
#ifndef NNR_CUDA_INTERNAL_H
#define NNR_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include "nnr/plugin.h"

extern const nnr_host_api *cu_host;

/* one stream, one cuBLAS handle and a scratch buffer per device; every op of a
 * device runs in order on its stream, so freed blocks can be reused at once */
typedef struct cu_device {
    int ready;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *scratch;            /* grows on demand (im2col columns, temporaries) */
    size_t scratch_bytes;
    int64_t *flag;            /* 3 device words: [0] nonzero once a kernel met a bad value, [1] that value,
                                 [2] where (the kernel's choice); cu_flag_clear, cu_flag_read */
    int64_t *flag_host;       /* pinned mirror */
} cu_device;

/* the device of a call (cudaSetDevice'd, its state created on first use) or NULL with an error set */
cu_device *cu_dev(int device);
void *cu_scratch(cu_device *d, size_t nbytes);
/* before kernels that validate their operands; after them, cu_flag_read waits for the stream and
 * says whether one met a bad value (*bad), and which (value, where) */
int cu_flag_clear(cu_device *d, const char *name);
int cu_flag_read(cu_device *d, const char *name, int *bad, int64_t *value, int64_t *where);
int cu_allow_tf32(void);

/* status from a CUDA or cuBLAS error, with the op and the error's text */
int cu_fail(cudaError_t e, const char *what);
int cu_blas_fail(cublasStatus_t s, const char *what);
int cu_errorf(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define CU_CHECK(expr, what) do { cudaError_t e_ = (expr); if (e_ != cudaSuccess) return cu_fail(e_, what); } while (0)
#define CU_LAUNCHED(what) do { cudaError_t e_ = cudaGetLastError(); if (e_ != cudaSuccess) return cu_fail(e_, what); } while (0)

/* ---- strided operands (elementwise.cu) ---- */
enum { CU_MAX_OPS = 4 };
typedef struct cu_strided {
    int ndim, nops;
    int64_t sizes[NNR_MAX_DIMS];
    int64_t strides[CU_MAX_OPS][NNR_MAX_DIMS];   /* elements */
    char *base[CU_MAX_OPS];
    int dtype[CU_MAX_OPS];
} cu_strided;
/* operand 0 gives the shape; adjacent dims merged where every operand allows */
void cu_strided_init(cu_strided *s, int nops, const nnr_tensor_desc *const *d);
static inline unsigned cu_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

/* ---- kernels by family: each returns a status ---- */
int cu_supports_dtype_op(const nnr_op_call *call);
int cu_unary(cu_device *d, const nnr_op_call *call);
int cu_binary(cu_device *d, const nnr_op_call *call);
int cu_where(cu_device *d, const nnr_op_call *call);
int cu_clamp(cu_device *d, const nnr_op_call *call);
int cu_activation(cu_device *d, const nnr_op_call *call);
int cu_copy_op(cu_device *d, const nnr_op_call *call);
int cu_fill(cu_device *d, const nnr_op_call *call);
int cu_arange(cu_device *d, const nnr_op_call *call);
int cu_random(cu_device *d, const nnr_op_call *call);
int cu_reduce(cu_device *d, const nnr_op_call *call);
/* cumsum, cumprod (scan.cu): f32, f64, i64 with many rows */
int cu_scan_supports(const nnr_op_call *call);
int cu_scan(cu_device *d, const nnr_op_call *call);
/* RNN_CELL and its backward (rnn.cu) */
int cu_rnn_supports(const nnr_op_call *call);
int cu_rnn(cu_device *d, const nnr_op_call *call);
/* LAYER_NORM and its backward (rnn.cu) */
int cu_layer_norm_supports(const nnr_op_call *call);
int cu_layer_norm(cu_device *d, const nnr_op_call *call);
/* CROSS_ENTROPY and its gradient (nn.cu): f32, f64 scores [N, C] against I64 targets */
int cu_cross_entropy_supports(const nnr_op_call *call);
int cu_cross_entropy(cu_device *d, const nnr_op_call *call);
/* ATTN_DECODE (attention.cu): f32, f64, contiguous */
int cu_attention_decode_supports(const nnr_op_call *call);
int cu_attention_decode(cu_device *d, const nnr_op_call *call);
/* sort, topk (sort.cu): CUB's radix sort over (key, position) pairs */
int cu_sort_supports(const nnr_op_call *call);
int cu_sort(cu_device *d, const nnr_op_call *call);
int cu_softmax(cu_device *d, const nnr_op_call *call);
int cu_matmul(cu_device *d, const nnr_op_call *call);
int cu_linear(cu_device *d, const nnr_op_call *call);
int cu_conv2d(cu_device *d, const nnr_op_call *call);
int cu_conv2d_grad_input(cu_device *d, const nnr_op_call *call);
int cu_conv2d_grad_weight(cu_device *d, const nnr_op_call *call);
int cu_pool(cu_device *d, const nnr_op_call *call);
int cu_batchnorm(cu_device *d, const nnr_op_call *call);
int cu_optim(cu_device *d, const nnr_op_call *call);
int cu_index(cu_device *d, const nnr_op_call *call);
/* relu (i[0] & 1) and a bias over the last dim of a contiguous [M, N] y, in place */
int cu_bias_relu(cu_device *d, int dtype, void *y, const void *bias, int64_t M, int64_t N, int relu);
/* NCCL (nccl.cu) */
int cu_nccl_unique_id(char *buf, size_t n);
int cu_nccl_comm(const char *spec);
int cu_nccl_supports(const nnr_op_call *call);
int cu_nccl_run(cu_device *d, const nnr_op_call *call);
/* cuBLAS data type of an nnr float dtype */
cudaDataType_t cu_blas_type(int dt);

#endif

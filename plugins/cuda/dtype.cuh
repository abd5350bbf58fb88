/* Loads and stores of any nnr dtype as double or int64 on the device, with the
 * cpu backend's conversion rules (nnr/dtype.h): float -> integer saturates,
 * integer -> integer wraps, bool is "not zero". */
#ifndef NNR_CUDA_DTYPE_CUH
#define NNR_CUDA_DTYPE_CUH
#include "cuda_internal.h"
#include "nnr/dtype.h"

/* the scalar conversions are nnr/dtype.h's, compiled for the device too: the same rounding, NaN
 * and saturation rules as the cpu backend, from one definition */
__device__ __forceinline__ int64_t cu_d2i(double v) { return nnr_double_to_i64(v); }
__device__ __forceinline__ double ld_f64(int dt, const char *p) { return nnr_load_f64(dt, p); }
__device__ __forceinline__ int64_t ld_i64(int dt, const char *p) { return nnr_load_i64(dt, p); }
__device__ __forceinline__ void st_i64(int dt, char *p, int64_t v) { nnr_store_i64(dt, p, v); }
__device__ __forceinline__ void st_f64(int dt, char *p, double v) { nnr_store_f64(dt, p, v); }

__device__ __forceinline__ int dt_size(int dt)
{
    return dt == NNR_F64 || dt == NNR_I64 ? 8 : dt == NNR_F32 || dt == NNR_I32 ? 4 : dt == NNR_F16 || dt == NNR_BF16 ? 2 : 1;
}

/* byte offset of operand k's element at flat index i of s */
__device__ __forceinline__ int64_t st_offset(const cu_strided &s, int k, int64_t i)
{
    int64_t off = 0;
    for (int d = s.ndim - 1; d >= 0; d--) {
        int64_t n = s.sizes[d], q = i / n;
        off += (i - q * n) * s.strides[k][d];
        i = q;
    }
    return off * dt_size(s.dtype[k]);
}

/* element conversions for the four float dtypes the templated kernels take (convolution, pooling) */
__device__ __forceinline__ double to_d(float v) { return v; }
__device__ __forceinline__ double to_d(double v) { return v; }
__device__ __forceinline__ double to_d(__half v) { return __half2float(v); }
__device__ __forceinline__ double to_d(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_d(double v) { return (T)v; }
template <> __device__ __forceinline__ __half from_d<__half>(double v) { return __float2half_rn((float)v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_d<__nv_bfloat16>(double v) { return __float2bfloat16_rn((float)v); }

/* kernel<T> for the call's float dtype */
#define LAUNCH(dt, kernel, grid, ...)                                                                               \
    do {                                                                                                            \
        switch (dt) {                                                                                               \
        case NNR_F64: { typedef double T; kernel<T><<<grid, 256, 0, d->stream>>>(__VA_ARGS__); break; }            \
        case NNR_F16: { typedef __half T; kernel<T><<<grid, 256, 0, d->stream>>>(__VA_ARGS__); break; }            \
        case NNR_BF16: { typedef __nv_bfloat16 T; kernel<T><<<grid, 256, 0, d->stream>>>(__VA_ARGS__); break; }    \
        default: { typedef float T; kernel<T><<<grid, 256, 0, d->stream>>>(__VA_ARGS__); break; }                  \
        }                                                                                                           \
    } while (0)

#endif

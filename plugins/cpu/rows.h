/* Row conversions: a strided row of any dtype to and from a buffer of
 * doubles or int64s. The generic (non-f32) kernels compute on such buffers,
 * a chunk at a time, with the dtype switch outside the loop. */
#ifndef NNR_CPU_ROWS_H
#define NNR_CPU_ROWS_H

#include "kernels.h"

enum { CPU_CHUNK = 256 };

static inline void load_row_f64(int dtype, const char *p, int64_t stride, int64_t n, double *out)
{
    switch (dtype) {
    case NNR_F32: for (int64_t i = 0; i < n; i++) out[i] = *(const float *)(p + i * stride); break;
    case NNR_F64: for (int64_t i = 0; i < n; i++) out[i] = *(const double *)(p + i * stride); break;
    case NNR_I64: for (int64_t i = 0; i < n; i++) out[i] = (double)*(const int64_t *)(p + i * stride); break;
    case NNR_I32: for (int64_t i = 0; i < n; i++) out[i] = *(const int32_t *)(p + i * stride); break;
    case NNR_U8: for (int64_t i = 0; i < n; i++) out[i] = *(const uint8_t *)(p + i * stride); break;
    case NNR_BF16: for (int64_t i = 0; i < n; i++) out[i] = nnr_bf16_to_f32(*(const uint16_t *)(p + i * stride)); break;
    case NNR_F16: for (int64_t i = 0; i < n; i++) out[i] = nnr_f16_to_f32(*(const uint16_t *)(p + i * stride)); break;
    default: for (int64_t i = 0; i < n; i++) out[i] = nnr_load_f64(dtype, p + i * stride); break;
    }
}

static inline void store_row_f64(int dtype, char *p, int64_t stride, int64_t n, const double *in)
{
    switch (dtype) {
    case NNR_F32: for (int64_t i = 0; i < n; i++) *(float *)(p + i * stride) = (float)in[i]; break;
    case NNR_F64: for (int64_t i = 0; i < n; i++) *(double *)(p + i * stride) = in[i]; break;
    /* as nnr_store_f64: through f32, then rounded to nearest even */
    case NNR_BF16: for (int64_t i = 0; i < n; i++) *(uint16_t *)(p + i * stride) = nnr_f32_to_bf16((float)in[i]); break;
    case NNR_F16: for (int64_t i = 0; i < n; i++) *(uint16_t *)(p + i * stride) = nnr_f32_to_f16((float)in[i]); break;
    default: for (int64_t i = 0; i < n; i++) nnr_store_f64(dtype, p + i * stride, in[i]); break;
    }
}

static inline void load_row_i64(int dtype, const char *p, int64_t stride, int64_t n, int64_t *out)
{
    switch (dtype) {
    case NNR_I64: for (int64_t i = 0; i < n; i++) out[i] = *(const int64_t *)(p + i * stride); break;
    case NNR_I32: for (int64_t i = 0; i < n; i++) out[i] = *(const int32_t *)(p + i * stride); break;
    case NNR_U8: case NNR_BOOL: for (int64_t i = 0; i < n; i++) out[i] = *(const uint8_t *)(p + i * stride); break;
    case NNR_I8: for (int64_t i = 0; i < n; i++) out[i] = *(const int8_t *)(p + i * stride); break;
    default: for (int64_t i = 0; i < n; i++) out[i] = nnr_load_i64(dtype, p + i * stride); break;
    }
}

static inline void store_row_i64(int dtype, char *p, int64_t stride, int64_t n, const int64_t *in)
{
    switch (dtype) {
    case NNR_I64: for (int64_t i = 0; i < n; i++) *(int64_t *)(p + i * stride) = in[i]; break;
    case NNR_BOOL: for (int64_t i = 0; i < n; i++) *(uint8_t *)(p + i * stride) = in[i] != 0; break;
    default: for (int64_t i = 0; i < n; i++) nnr_store_i64(dtype, p + i * stride, in[i]); break;
    }
}

/* bf16 or f16 rows to and from f32 (the half-precision elementwise path) */
static inline void load_row_half_f32(int dtype, const char *p, int64_t stride, int64_t n, float *out)
{
    if (dtype == NNR_BF16) for (int64_t i = 0; i < n; i++) out[i] = nnr_bf16_to_f32(*(const uint16_t *)(p + i * stride));
    else for (int64_t i = 0; i < n; i++) out[i] = nnr_f16_to_f32(*(const uint16_t *)(p + i * stride));
}

static inline void store_row_half_f32(int dtype, char *p, int64_t stride, int64_t n, const float *in)
{
    if (dtype == NNR_BF16) for (int64_t i = 0; i < n; i++) *(uint16_t *)(p + i * stride) = nnr_f32_to_bf16(in[i]);
    else for (int64_t i = 0; i < n; i++) *(uint16_t *)(p + i * stride) = nnr_f32_to_f16(in[i]);
}

#endif

/* Scalar conversions between every dtype and double/int64, shared by the core
 * and the in-tree cpu plugin (header-only, no state). */
#ifndef NNR_HALF_H
#define NNR_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "nnr/plugin.h"

static inline float nnr_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t nnr_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                             /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static inline float nnr_f16_to_f32(uint16_t h)
{
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}

static inline uint16_t nnr_f32_to_f16(float f)
{
    _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}

/* saturating float -> integer conversion that never invokes UB */
static inline int64_t nnr_double_to_i64(double v)
{
    if (v != v) return 0;
    if (v >= 9.2233720368547758e18) return INT64_MAX;
    if (v <= -9.2233720368547758e18) return INT64_MIN;
    return (int64_t)v;
}

static inline double nnr_load_f64(int dtype, const void *p)
{
    switch (dtype) {
    case NNR_F32: return *(const float *)p;
    case NNR_F64: return *(const double *)p;
    case NNR_F16: return nnr_f16_to_f32(*(const uint16_t *)p);
    case NNR_BF16: return nnr_bf16_to_f32(*(const uint16_t *)p);
    case NNR_I8: return *(const int8_t *)p;
    case NNR_U8: return *(const uint8_t *)p;
    case NNR_I32: return *(const int32_t *)p;
    case NNR_I64: return (double)*(const int64_t *)p;
    case NNR_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
    }
    return 0;
}

static inline int64_t nnr_load_i64(int dtype, const void *p)
{
    switch (dtype) {
    case NNR_I8: return *(const int8_t *)p;
    case NNR_U8: return *(const uint8_t *)p;
    case NNR_I32: return *(const int32_t *)p;
    case NNR_I64: return *(const int64_t *)p;
    case NNR_BOOL: return *(const uint8_t *)p ? 1 : 0;
    default: return nnr_double_to_i64(nnr_load_f64(dtype, p));
    }
}

/* integer stores wrap modulo 2^bits like C casts of int64 (PyTorch does the same) */
static inline void nnr_store_i64(int dtype, void *p, int64_t v)
{
    switch (dtype) {
    case NNR_F32: *(float *)p = (float)v; break;
    case NNR_F64: *(double *)p = (double)v; break;
    case NNR_F16: *(uint16_t *)p = nnr_f32_to_f16((float)v); break;
    case NNR_BF16: *(uint16_t *)p = nnr_f32_to_bf16((float)v); break;
    case NNR_I8: *(int8_t *)p = (int8_t)(uint8_t)(uint64_t)v; break;
    case NNR_U8: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    case NNR_I32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case NNR_I64: *(int64_t *)p = v; break;
    case NNR_BOOL: *(uint8_t *)p = v != 0; break;
    }
}

static inline void nnr_store_f64(int dtype, void *p, double v)
{
    switch (dtype) {
    case NNR_F32: *(float *)p = (float)v; break;
    case NNR_F64: *(double *)p = v; break;
    case NNR_F16: *(uint16_t *)p = nnr_f32_to_f16((float)v); break;
    case NNR_BF16: *(uint16_t *)p = nnr_f32_to_bf16((float)v); break;
    case NNR_BOOL: *(uint8_t *)p = v != 0; break;
    default: nnr_store_i64(dtype, p, nnr_double_to_i64(v)); break;
    }
}

static inline int nnr_dtype_is_integral(int dtype)
{
    return dtype == NNR_I8 || dtype == NNR_U8 || dtype == NNR_I32 || dtype == NNR_I64 || dtype == NNR_BOOL;
}

static inline size_t nnr_dtype_nbytes(int dtype)
{
    static const unsigned char sz[NNR_DTYPE_COUNT] = {4, 8, 2, 2, 1, 1, 4, 8, 1};
    return (dtype >= 0 && dtype < NNR_DTYPE_COUNT) ? sz[dtype] : 0;
}

#endif

/* Scalar conversions between every dtype and double/int64 (installed, header-only, no state): the
 * core and every backend convert with these, so a cast gives the same bits on each. f16 and bf16
 * round to nearest even; float -> integer saturates and NaN becomes 0; integer stores wrap. */
#ifndef NNR_DTYPE_H
#define NNR_DTYPE_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "nnr/plugin.h"

/* host and device (the cuda plugin includes this header too) */
#ifndef NNR_HD
#ifdef __CUDACC__
#define NNR_HD __host__ __device__
#else
#define NNR_HD
#endif
#endif

static inline NNR_HD float nnr_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline NNR_HD uint16_t nnr_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                             /* round to nearest even */
    return (uint16_t)(u >> 16);
}

/* IEEE half precision by bit manipulation (portable: no _Float16 needed) */
static inline NNR_HD float nnr_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) u = sign | 0x7f800000u | (man << 13);                 /* inf, nan */
    else if (exp) u = sign | ((exp + 112) << 23) | (man << 13);            /* normal */
    else if (man) {                                                        /* subnormal: normalise */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    } else u = sign;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline NNR_HD uint16_t nnr_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);                   /* nan */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);                  /* overflow (after rounding) -> inf */
    if (a < 0x38800000u) {                                                   /* subnormal or zero: round to nearest even */
        if (a < 0x33000000u) return (uint16_t)sign;
        uint32_t man = (a & 0x7fffff) | 0x800000, shift = 126 - (a >> 23);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);                               /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

/* saturating float -> integer conversion that never invokes UB */
static inline NNR_HD int64_t nnr_double_to_i64(double v)
{
    if (v != v) return 0;
    if (v >= 9.2233720368547758e18) return INT64_MAX;
    if (v <= -9.2233720368547758e18) return INT64_MIN;
    return (int64_t)v;
}

static inline NNR_HD double nnr_load_f64(int dtype, const void *p)
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

static inline NNR_HD int64_t nnr_load_i64(int dtype, const void *p)
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
static inline NNR_HD void nnr_store_i64(int dtype, void *p, int64_t v)
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

static inline NNR_HD void nnr_store_f64(int dtype, void *p, double v)
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

static inline NNR_HD int nnr_dtype_is_integral(int dtype)
{
    return dtype == NNR_I8 || dtype == NNR_U8 || dtype == NNR_I32 || dtype == NNR_I64 || dtype == NNR_BOOL;
}

static inline NNR_HD size_t nnr_dtype_nbytes(int dtype)
{
    static const unsigned char sz[NNR_DTYPE_COUNT] = {4, 8, 2, 2, 1, 1, 4, 8, 1};
    return (dtype >= 0 && dtype < NNR_DTYPE_COUNT) ? sz[dtype] : 0;
}

#endif

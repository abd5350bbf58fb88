/* The quant extension plugin: int8 dynamic quantization kernels on the cpu
 * device (DESIGN.md decision 10; the Lua side is lua/nnr/quant.lua).
 *
 * Weights are symmetric int8 per output channel in [-127, 127], packed in
 * blocks of 16 channels by 4 k (64 bytes: one zmm, the operand layout of
 * vpdpbusd) with their row sums. Activations are quantized per row at run
 * time, symmetric, and the dot products summed in int32.
 *
 * Kernels, chosen from CPUID and XCR0 (__builtin_cpu_supports checks both):
 *   AVX-512 VNNI  vpdpbusd on zmm: u8 x s8 in groups of 4 into int32. The
 *                 activations enter as u8 = q + 128; acc - 128 * wsum undoes it.
 *   AVX-VNNI      the same on ymm (VEX encoding).
 *   AVX2          vpmaddubsw + vpmaddwd, FBGEMM's AVX2 scheme. vpmaddubsw saturates
 *                 its int16 pair sums, which broke PyTorch's u8 x s8 path
 *                 (pytorch#44939); here it gets |q| and w * sign(q), so a pair is
 *                 at most 2 * 127 * 127 = 32258 < 32767 and never saturates. A row
 *                 of q without negatives (the input of a layer after a ReLU) skips
 *                 the vpsignb: 3 instructions for 32 products instead of 4.
 *   portable C    plain int32 loops.
 * All give the same int32 sums, and the same floats: every epilogue is one
 * fused multiply-add, fma(acc, sx * sw, bias). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <nnr/plugin.h>
#include "../cpu/isa.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static const nnr_host_api *host;

enum { KERNEL_BEST = 0, KERNEL_C = 1, KERNEL_AVX2 = 2, KERNEL_AVXVNNI = 3, KERNEL_AVX512VNNI = 4 };
static const char *kernel_names[] = {"best", "portable C", "AVX2", "AVX-VNNI", "AVX-512 VNNI"};

static int quant_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int quant_error(int status, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    host->set_error(msg);
    return status;
}

/* the CPU class the cpu backend runs at (isa.h): CPUID and XCR0, or a lower class from NNR_CPU_ISA (the
 * cpu plugin says when it was capped; this one stays quiet) */
int cpu_isa_level = -1, cpu_isa_cpu = -1;

static int isa_level(void)
{
    if (cpu_isa_level < 0) {
        char note[200];
        cpu_isa_cpu = cpu_isa_detect();
        cpu_isa_level = cpu_isa_choose(getenv("NNR_CPU_ISA"), cpu_isa_cpu, note, sizeof note);
    }
    return cpu_isa_level;
}

/* 1 when the hardware has the kernel's instructions (CPUID and XCR0) */
static int hw_has(int kernel)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    switch (kernel) {
    case KERNEL_C: return 1;
    case KERNEL_AVX2: return __builtin_cpu_supports("avx2");
    case KERNEL_AVXVNNI: return __builtin_cpu_supports("avxvnni") && __builtin_cpu_supports("avx2");
    case KERNEL_AVX512VNNI:
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    return 0;
#else
    return kernel == KERNEL_C;
#endif
}

/* the class a kernel belongs to: AVX-VNNI is an AVX2-class extension (Alder Lake, Zen 5 without AVX-512) */
static const int kernel_class[] = {CPU_ISA_C, CPU_ISA_C, CPU_ISA_AVX2, CPU_ISA_AVX2, CPU_ISA_AVX512_VNNI};

static int cpu_has(int kernel) { return hw_has(kernel) && isa_level() >= kernel_class[kernel]; }

static int best_kernel(void)
{
    static int best = -1;
    if (best < 0) {
        const char *force = getenv("NNR_QUANT_KERNEL");      /* c, avx2, avxvnni, avx512vnni: for comparisons */
        int want = !force ? 0 : !strcmp(force, "c") ? KERNEL_C : !strcmp(force, "avx2") ? KERNEL_AVX2
                 : !strcmp(force, "avxvnni") ? KERNEL_AVXVNNI : !strcmp(force, "avx512vnni") ? KERNEL_AVX512VNNI : 0;
        /* a class forced below the CPU's runs that class's plain kernel: NNR_CPU_ISA=avx2 on this machine
         * is the AVX2 kernel of an AVX2-only CPU, not AVX-VNNI */
        int vnni256 = cpu_has(KERNEL_AVXVNNI) && isa_level() == cpu_isa_cpu;
        if (want && cpu_has(want)) best = want;
        else best = cpu_has(KERNEL_AVX512VNNI) ? KERNEL_AVX512VNNI : vnni256 ? KERNEL_AVXVNNI
                  : cpu_has(KERNEL_AVX2) ? KERNEL_AVX2 : KERNEL_C;
    }
    return best;
}

/* ---------------- quantization of rows ---------------- */

/* q[k] = round(x[k] / s) for one row, s = max|x| / 127 (1 when the row is 0); pads q to kp with 0.
 * Returns s, or NaN when the row holds a NaN or an infinity (the output row is then NaN). */
static float quantize_row(const float *x, int64_t k, int8_t *q, int64_t kp)
{
    float amax = 0;
    int bad = 0;
    for (int64_t i = 0; i < k; i++) {
        float a = fabsf(x[i]);
        bad |= !(a <= 3.4e38f);
        amax = a > amax ? a : amax;
    }
    if (bad) { memset(q, 0, (size_t)kp); return NAN; }
    float s = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / s;
    /* |x| below ~4e-37: 1 / s overflows, and the row quantizes to 0 (each quantizer alike) */
    if (!(inv <= 3.4e38f)) { memset(q, 0, (size_t)kp); return s; }
    for (int64_t i = 0; i < k; i++) {
        float v = nearbyintf(x[i] * inv);
        q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
    }
    memset(q + k, 0, (size_t)(kp - k));
    return s;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* quantize_row with AVX-512, the same arithmetic (x * inv rounded to nearest even, clamped), also
 * writing the u8 form (q + 128) for the vpdpbusd kernels */
/* VZEROUPPER after a kernel. GCC leaves it out of a function that passes vectors to another
 * (gemm_avx512vnni -> store16_avx512, the AVX2 kernels -> store8_avx2), and while the upper halves of
 * ymm0-15 / zmm0-15 are dirty every legacy-SSE instruction of the thread afterwards pays a merge:
 * glibc's scalar erff (the GELU after an int8 linear) ran 30x slower after one call of a kernel.
 * tests/simd/upper_state.lua checks the state (XINUSE) after every kernel family. */
__attribute__((target("avx")))
static void clean_upper(void)
{
    __asm__ volatile("vzeroupper" ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                     "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
static float quantize_row_avx512(const float *x, int64_t k, int8_t *q, uint8_t *u, int64_t kp)
{
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
        bad |= _mm512_cmp_ps_mask(a, _mm512_set1_ps(3.4e38f), _CMP_NLE_UQ);
        vmax = _mm512_max_ps(vmax, a);
    }
    if (i < k) {
        __mmask16 m = (__mmask16)((1u << (k - i)) - 1);
        __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i));
        bad |= _mm512_mask_cmp_ps_mask(m, a, _mm512_set1_ps(3.4e38f), _CMP_NLE_UQ);
        vmax = _mm512_max_ps(vmax, a);
    }
    if (bad) { memset(q, 0, (size_t)kp); memset(u, 0x80, (size_t)kp); return NAN; }
    float amax = _mm512_reduce_max_ps(vmax);
    float s = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / s;
    if (!(inv <= 3.4e38f)) { memset(q, 0, (size_t)kp); if (u) memset(u, 0x80, (size_t)kp); return s; }   /* as quantize_row */
    __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    for (i = 0; i < kp; i += 16) {
        __mmask16 m = i + 16 <= k ? (__mmask16)0xffff : i < k ? (__mmask16)((1u << (k - i)) - 1) : 0;
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), lo), hi);
        __m128i b = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v));
        __mmask16 st = i + 16 <= kp ? (__mmask16)0xffff : (__mmask16)((1u << (kp - i)) - 1);
        _mm_mask_storeu_epi8(q + i, st, b);
        if (u) _mm_mask_storeu_epi8(u + i, st, _mm_xor_si128(b, _mm_set1_epi8((char)0x80)));
    }
    return s;
}

/* quantize_row with AVX2, the same arithmetic, also writing u: |q| for the AVX2 kernel (vnni 0) or
 * q + 128 for AVX-VNNI (vnni 1); *neg is 1 when some q < 0 */
__attribute__((target("avx2,fma")))
static float quantize_row_avx2(const float *x, int64_t k, int8_t *q, uint8_t *u, int64_t kp, int vnni, uint8_t *neg)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), big = _mm256_set1_ps(3.4e38f);
    __m256 vmax = _mm256_setzero_ps();
    int bad = 0;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), absmask);
        bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_NLE_UQ));
        vmax = _mm256_max_ps(vmax, a);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float amax = _mm_cvtss_f32(m4);
    for (; i < k; i++) {
        float a = fabsf(x[i]);
        bad |= !(a <= 3.4e38f);
        amax = a > amax ? a : amax;
    }
    const uint8_t upad = vnni ? 0x80 : 0;
    *neg = 0;
    if (bad) { memset(q, 0, (size_t)kp); memset(u, upad, (size_t)kp); return NAN; }
    float s = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / s;
    if (!(inv <= 3.4e38f)) { memset(q, 0, (size_t)kp); memset(u, upad, (size_t)kp); return s; }        /* as quantize_row */
    const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), flip = _mm256_set1_epi8((char)0x80);
    __m256i sign = _mm256_setzero_si256();
#define QCVT(j) _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + (j)), vinv), \
                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), lo), hi))
    for (i = 0; i + 32 <= k; i += 32) {
        /* 4 x 8 int32 -> 32 int8: the packs interleave the 128-bit lanes, the permute puts them back */
        __m256i ab = _mm256_packs_epi32(QCVT(0), QCVT(8)), cd = _mm256_packs_epi32(QCVT(16), QCVT(24));
        __m256i r = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
        _mm256_storeu_si256((__m256i *)(q + i), r);
        sign = _mm256_or_si256(sign, r);
        _mm256_storeu_si256((__m256i *)(u + i), vnni ? _mm256_xor_si256(r, flip) : _mm256_abs_epi8(r));
    }
#undef QCVT
    int tailneg = 0;
    for (; i < k; i++) {
        float v = nearbyintf(x[i] * inv);
        int8_t t = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        q[i] = t;
        tailneg |= t < 0;
        u[i] = vnni ? (uint8_t)(t ^ 0x80) : (uint8_t)(t < 0 ? -t : t);
    }
    memset(q + k, 0, (size_t)(kp - k));
    memset(u + k, upad, (size_t)(kp - k));
    *neg = (uint8_t)(tailneg || _mm256_movemask_epi8(sign) != 0);
    return s;
}
#endif

/* ---------------- the int8 gemm: y [M, N] from xq [M, kp] and packed w ---------------- */

typedef struct qgemm {
    int64_t M, N, K, kp, kg, nb;       /* kg = kp / 4 groups, nb = 16-channel blocks */
    const float *x;                    /* [M, K], the input */
    int8_t *xq;                        /* [M, kp] q */
    uint8_t *xu;                       /* [M, kp] q + 128 (the vpdpbusd kernels) or |q| (AVX2) */
    uint8_t *neg;                      /* [M] the row has a q < 0 (AVX2) */
    float *sx;                         /* [M] */
    const int8_t *w;                   /* [nb, kg, 16, 4] */
    const float *sw, *wsum, *bias;     /* [N] each (wsum as float: exact below 2^24) */
    float *y;
    int64_t mchunk, nm;                /* the work's tiles: pairs of channel blocks by chunks of mchunk rows */
    int relu, kernel;
} qgemm;

static inline float epilogue(int32_t acc, float sx, float sw, float b, int relu)
{
    float v = fmaf((float)acc, sx * sw, b);
    return relu ? (v > 0 ? v : (v != v ? v : 0.0f)) : v;
}

/* channel blocks [b0, b1) for rows [m0, m1) */
static void gemm_c(const qgemm *g, int64_t b0, int64_t b1, int64_t m0, int64_t m1)
{
    for (int64_t m = m0; m < m1; m++) {
        const int8_t *x = g->xq + m * g->kp;
        for (int64_t b = b0; b < b1; b++) {
            int32_t acc[16] = {0};
            const int8_t *w = g->w + b * g->kg * 64;
            for (int64_t grp = 0; grp < g->kg; grp++, w += 64)
                for (int j = 0; j < 16; j++)
                    for (int t = 0; t < 4; t++) acc[j] += (int32_t)x[grp * 4 + t] * (int32_t)w[j * 4 + t];
            for (int j = 0; j < 16 && b * 16 + j < g->N; j++) {
                int64_t n = b * 16 + j;
                g->y[m * g->N + n] = epilogue(acc[j], g->sx[m], g->sw[n], g->bias ? g->bias[n] : 0.0f, g->relu);
            }
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void store16_avx512(const qgemm *g, int64_t m, int64_t b, __m512i acc)
{
    int64_t n0 = b * 16, left = g->N - n0;
    __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    __m512 sw = _mm512_maskz_loadu_ps(mask, g->sw + n0);
    __m512 ws = _mm512_maskz_loadu_ps(mask, g->wsum + n0);
    __m512 bias = g->bias ? _mm512_maskz_loadu_ps(mask, g->bias + n0) : _mm512_setzero_ps();
    /* undo the +128 of the activations: acc - 128 * wsum, exact in int32 */
    __m512i corr = _mm512_slli_epi32(_mm512_cvtps_epi32(ws), 7);
    __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, corr)), _mm512_mul_ps(_mm512_set1_ps(g->sx[m]), sw), bias);
    if (g->relu) v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v, _mm512_setzero_ps());
    _mm512_mask_storeu_ps(g->y + m * g->N + n0, mask, v);
}

/* 8 rows by 2 blocks (32 channels) at a time: 16 accumulators, named so that they stay in
 * registers; the rows left over go one at a time, with the groups split over two chains */
#define QX(r) int32_t xv##r; memcpy(&xv##r, x + (r) * g->kp + grp * 4, 4); __m512i xb##r = _mm512_set1_epi32(xv##r);
#define QSTEP(r) { QX(r) a##r = _mm512_dpbusd_epi32(a##r, xb##r, wa); c##r = _mm512_dpbusd_epi32(c##r, xb##r, wb); }
#define QSTORE(r) { store16_avx512(g, m + (r), b, a##r); if (two) store16_avx512(g, m + (r), b + 1, c##r); }
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_avx512vnni(const qgemm *g, int64_t b0, int64_t b1, int64_t m0, int64_t m1)
{
    const __m512i z = _mm512_setzero_si512();
    for (int64_t b = b0; b < b1; b += 2) {
        int two = b + 1 < b1;
        const int8_t *w0 = g->w + b * g->kg * 64, *w1 = two ? w0 + g->kg * 64 : w0;
        int64_t m = m0;
        for (; m + 8 <= m1; m += 8) {
            __m512i a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z;
            __m512i c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
            const uint8_t *x = g->xu + m * g->kp;
            for (int64_t grp = 0; grp < g->kg; grp++) {
                __m512i wa = _mm512_loadu_si512(w0 + grp * 64), wb = _mm512_loadu_si512(w1 + grp * 64);
                QSTEP(0) QSTEP(1) QSTEP(2) QSTEP(3) QSTEP(4) QSTEP(5) QSTEP(6) QSTEP(7)
            }
            QSTORE(0) QSTORE(1) QSTORE(2) QSTORE(3) QSTORE(4) QSTORE(5) QSTORE(6) QSTORE(7)
        }
        for (; m < m1; m++) {
            __m512i a0 = z, c0 = z, a1 = z, c1 = z;      /* even groups in a0/c0, odd in a1/c1 */
            const uint8_t *x = g->xu + m * g->kp;
            int64_t grp = 0;
            for (; grp + 2 <= g->kg; grp += 2) {
                __m512i wa = _mm512_loadu_si512(w0 + grp * 64), wb = _mm512_loadu_si512(w1 + grp * 64);
                __m512i wa1 = _mm512_loadu_si512(w0 + grp * 64 + 64), wb1 = _mm512_loadu_si512(w1 + grp * 64 + 64);
                int32_t v0, v1;
                memcpy(&v0, x + grp * 4, 4);
                memcpy(&v1, x + grp * 4 + 4, 4);
                __m512i x0 = _mm512_set1_epi32(v0), x1 = _mm512_set1_epi32(v1);
                a0 = _mm512_dpbusd_epi32(a0, x0, wa); c0 = _mm512_dpbusd_epi32(c0, x0, wb);
                a1 = _mm512_dpbusd_epi32(a1, x1, wa1); c1 = _mm512_dpbusd_epi32(c1, x1, wb1);
            }
            if (grp < g->kg) {
                __m512i wa = _mm512_loadu_si512(w0 + grp * 64), wb = _mm512_loadu_si512(w1 + grp * 64);
                int32_t v0;
                memcpy(&v0, x + grp * 4, 4);
                __m512i x0 = _mm512_set1_epi32(v0);
                a0 = _mm512_dpbusd_epi32(a0, x0, wa); c0 = _mm512_dpbusd_epi32(c0, x0, wb);
            }
            store16_avx512(g, m, b, _mm512_add_epi32(a0, a1));
            if (two) store16_avx512(g, m, b + 1, _mm512_add_epi32(c0, c1));
        }
    }
}
#undef QX
#undef QSTEP
#undef QSTORE

/* AVX2 and AVX-VNNI: a 16-channel block as two 8-lane halves; the epilogue per half */
__attribute__((target("avx2,fma")))
static void store8_avx2(const qgemm *g, int64_t m, int64_t n0, __m256i acc, int u8)
{
    int64_t left = g->N - n0;
    if (left <= 0) return;
    if (left >= 8) {
        __m256 sw = _mm256_loadu_ps(g->sw + n0), ws = _mm256_loadu_ps(g->wsum + n0);
        __m256 bias = g->bias ? _mm256_loadu_ps(g->bias + n0) : _mm256_setzero_ps();
        __m256i corr = u8 ? _mm256_slli_epi32(_mm256_cvtps_epi32(ws), 7) : _mm256_setzero_si256();
        __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc, corr)), _mm256_mul_ps(_mm256_set1_ps(g->sx[m]), sw), bias);
        if (g->relu) v = _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
        _mm256_storeu_ps(g->y + m * g->N + n0, v);
        return;
    }
    int32_t a[8];
    _mm256_storeu_si256((__m256i *)a, acc);
    for (int j = 0; j < left; j++) {
        int32_t s = a[j] - (u8 ? (int32_t)g->wsum[n0 + j] * 128 : 0);
        g->y[m * g->N + n0 + j] = epilogue(s, g->sx[m], g->sw[n0 + j], g->bias ? g->bias[n0 + j] : 0.0f, g->relu);
    }
}

__attribute__((target("avx2"))) static inline __m256i bcast4(const void *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* AVX2: 4 rows by one block (two halves, lo and hi): 8 accumulators, named so that they stay in
 * registers, with the weights' halves, the broadcast |q| and sign(q) and the ones: 15 of 16 ymm.
 * neg 0 (no row of the four has a q < 0) leaves out the vpsignb. */
#define A2_STEP(r) {                                                                                 \
    __m256i xa = bcast4(g->xu + (m + (r)) * kp + grp * 4), pa, pb;                                    \
    if (neg) {                                                                                       \
        __m256i xs = bcast4(g->xq + (m + (r)) * kp + grp * 4);                                        \
        pa = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(wa, xs));                                     \
        pb = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(wb, xs));                                     \
    } else {                                                                                         \
        pa = _mm256_maddubs_epi16(xa, wa);                                                           \
        pb = _mm256_maddubs_epi16(xa, wb);                                                           \
    }                                                                                                \
    lo##r = _mm256_add_epi32(lo##r, _mm256_madd_epi16(pa, ones));                                    \
    hi##r = _mm256_add_epi32(hi##r, _mm256_madd_epi16(pb, ones)); }
#define A2_STORE(r) { store8_avx2(g, m + (r), b * 16, lo##r, 0); store8_avx2(g, m + (r), b * 16 + 8, hi##r, 0); }

__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline))
void avx2_rows4(const qgemm *g, const int8_t *w, int64_t b, int64_t m, const int neg)
{
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t kp = g->kp;
    __m256i lo0 = _mm256_setzero_si256(), lo1 = lo0, lo2 = lo0, lo3 = lo0, hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0;
    for (int64_t grp = 0; grp < g->kg; grp++) {
        __m256i wa = _mm256_loadu_si256((const __m256i *)(w + grp * 64)), wb = _mm256_loadu_si256((const __m256i *)(w + grp * 64 + 32));
        A2_STEP(0) A2_STEP(1) A2_STEP(2) A2_STEP(3)
    }
    A2_STORE(0) A2_STORE(1) A2_STORE(2) A2_STORE(3)
}

/* one row by the tile's two blocks: the broadcast row serves four weight vectors, four accumulators */
#define A2_ROW(acc, wv) {                                                                            \
    __m256i p = neg ? _mm256_maddubs_epi16(xa, _mm256_sign_epi8(wv, xs)) : _mm256_maddubs_epi16(xa, wv); \
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones)); }
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline))
void avx2_row1(const qgemm *g, const int8_t *w0, const int8_t *w1, int64_t b, int two, int64_t m, const int neg)
{
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t kp = g->kp;
    __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    for (int64_t grp = 0; grp < g->kg; grp++) {
        __m256i xa = bcast4(g->xu + m * kp + grp * 4), xs = neg ? bcast4(g->xq + m * kp + grp * 4) : xa;
        A2_ROW(lo0, _mm256_loadu_si256((const __m256i *)(w0 + grp * 64)))
        A2_ROW(hi0, _mm256_loadu_si256((const __m256i *)(w0 + grp * 64 + 32)))
        A2_ROW(lo1, _mm256_loadu_si256((const __m256i *)(w1 + grp * 64)))
        A2_ROW(hi1, _mm256_loadu_si256((const __m256i *)(w1 + grp * 64 + 32)))
    }
    store8_avx2(g, m, b * 16, lo0, 0);
    store8_avx2(g, m, b * 16 + 8, hi0, 0);
    if (two) { store8_avx2(g, m, b * 16 + 16, lo1, 0); store8_avx2(g, m, b * 16 + 24, hi1, 0); }
}
#undef A2_ROW
#undef A2_STEP
#undef A2_STORE

__attribute__((target("avx2,fma")))
static void gemm_avx2(const qgemm *g, int64_t b0, int64_t b1, int64_t m0, int64_t m1)
{
    int64_t m = m0;
    for (; m + 4 <= m1; m += 4)
        for (int64_t b = b0; b < b1; b++) {
            const int8_t *w = g->w + b * g->kg * 64;
            if (g->neg[m] | g->neg[m + 1] | g->neg[m + 2] | g->neg[m + 3]) avx2_rows4(g, w, b, m, 1);
            else avx2_rows4(g, w, b, m, 0);
        }
    /* the rows left over (all of a batch-1 layer) one at a time, by both blocks at once */
    const int8_t *w0 = g->w + b0 * g->kg * 64;
    int two = b1 - b0 == 2;
    for (; m < m1; m++) {
        if (g->neg[m]) avx2_row1(g, w0, two ? w0 + g->kg * 64 : w0, b0, two, m, 1);
        else avx2_row1(g, w0, two ? w0 + g->kg * 64 : w0, b0, two, m, 0);
    }
}

/* AVX-VNNI: 6 rows by one block: 12 accumulators, the weights' halves and the broadcast row, 15 ymm */
#define V2_STEP(r) { __m256i xb = bcast4(g->xu + (m + (r)) * kp + grp * 4);                          \
    lo##r = _mm256_dpbusd_avx_epi32(lo##r, xb, wa); hi##r = _mm256_dpbusd_avx_epi32(hi##r, xb, wb); }
#define V2_STORE(r) { store8_avx2(g, m + (r), b * 16, lo##r, 1); store8_avx2(g, m + (r), b * 16 + 8, hi##r, 1); }
__attribute__((target("avx2,fma,avxvnni")))
static void gemm_avxvnni(const qgemm *g, int64_t b0, int64_t b1, int64_t m0, int64_t m1)
{
    const int64_t kp = g->kp;
    for (int64_t b = b0; b < b1; b++) {
        const int8_t *w = g->w + b * g->kg * 64;
        for (int64_t m = m0; m + 6 <= m1; m += 6) {
            __m256i lo0 = _mm256_setzero_si256(), lo1 = lo0, lo2 = lo0, lo3 = lo0, lo4 = lo0, lo5 = lo0;
            __m256i hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0, hi4 = lo0, hi5 = lo0;
            for (int64_t grp = 0; grp < g->kg; grp++) {
                __m256i wa = _mm256_loadu_si256((const __m256i *)(w + grp * 64)), wb = _mm256_loadu_si256((const __m256i *)(w + grp * 64 + 32));
                V2_STEP(0) V2_STEP(1) V2_STEP(2) V2_STEP(3) V2_STEP(4) V2_STEP(5)
            }
            V2_STORE(0) V2_STORE(1) V2_STORE(2) V2_STORE(3) V2_STORE(4) V2_STORE(5)
        }
    }
    /* the rows left over (all of a batch-1 layer) one at a time, by both blocks and with even and odd
     * groups in separate accumulators: 8 chains, so that vpdpbusd's latency is hidden */
    const int8_t *w0 = g->w + b0 * g->kg * 64;
    int two = b1 - b0 == 2;
    const int8_t *w1 = two ? w0 + g->kg * 64 : w0;
    for (int64_t m = m0 + (m1 - m0) / 6 * 6; m < m1; m++) {
        __m256i e0 = _mm256_setzero_si256(), e1 = e0, e2 = e0, e3 = e0, o0 = e0, o1 = e0, o2 = e0, o3 = e0;
        const uint8_t *x = g->xu + m * kp;
        int64_t grp = 0;
#define V2_ROW(a0, a1, a2, a3, gi) { __m256i xb = bcast4(x + (gi) * 4);                                       \
            a0 = _mm256_dpbusd_avx_epi32(a0, xb, _mm256_loadu_si256((const __m256i *)(w0 + (gi) * 64)));      \
            a1 = _mm256_dpbusd_avx_epi32(a1, xb, _mm256_loadu_si256((const __m256i *)(w0 + (gi) * 64 + 32))); \
            a2 = _mm256_dpbusd_avx_epi32(a2, xb, _mm256_loadu_si256((const __m256i *)(w1 + (gi) * 64)));      \
            a3 = _mm256_dpbusd_avx_epi32(a3, xb, _mm256_loadu_si256((const __m256i *)(w1 + (gi) * 64 + 32))); }
        for (; grp + 2 <= g->kg; grp += 2) {
            V2_ROW(e0, e1, e2, e3, grp)
            V2_ROW(o0, o1, o2, o3, grp + 1)
        }
        if (grp < g->kg) V2_ROW(e0, e1, e2, e3, grp)
#undef V2_ROW
        store8_avx2(g, m, b0 * 16, _mm256_add_epi32(e0, o0), 1);
        store8_avx2(g, m, b0 * 16 + 8, _mm256_add_epi32(e1, o1), 1);
        if (two) { store8_avx2(g, m, b0 * 16 + 16, _mm256_add_epi32(e2, o2), 1); store8_avx2(g, m, b0 * 16 + 24, _mm256_add_epi32(e3, o3), 1); }
    }
}
#undef V2_STEP
#undef V2_STORE
#endif

/* the products a tile of work must hold for the threads to pay: handing a layer to the pool's workers
 * costs about a microsecond while they spin between ops (threadpool.c; waking a sleeping one, 40-50 us,
 * is avoided by the caller taking its pieces), so a layer goes over the threads when one thread would
 * take ~2.5 us or more: 200k products at AVX-512 VNNI's rate, fewer for the slower kernels (their cost
 * per product relative to it, measured at batch 1 and 256). At 400k the int8 MLP's second layer (131k
 * products, AVX2) ran on one thread: its batch-1 forward 23-30 us against 22-27 split, on an AVX2 EPYC */
#define QUANT_SPLIT_PRODUCTS 2e5
static const double kernel_cost[] = {1, 8, 2, 1.6, 1};
/* rows a tile of work takes when the batch is large: a multiple of every kernel's row block (8, 6, 4) */
#define QUANT_ROW_CHUNK 48

/* tiles [t0, t1): tile t is the pair of channel blocks t / nm (two blocks, as the AVX-512 kernel takes
 * them) by the rows of chunk t % nm. Integer sums are exact, so a row's outputs are the same bits
 * whatever the tiling and the thread count. */
static void run_tiles(void *arg, int64_t t0, int64_t t1)
{
    const qgemm *g = arg;
    for (int64_t t = t0; t < t1; t++) {
        int64_t p = t / g->nm, c = t % g->nm;
        int64_t b0 = 2 * p, b1 = b0 + 2 < g->nb ? b0 + 2 : g->nb;
        int64_t m0 = c * g->mchunk, m1 = m0 + g->mchunk < g->M ? m0 + g->mchunk : g->M;
        switch (g->kernel) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
        case KERNEL_AVX512VNNI: gemm_avx512vnni(g, b0, b1, m0, m1); break;
        case KERNEL_AVXVNNI: gemm_avxvnni(g, b0, b1, m0, m1); break;
        case KERNEL_AVX2: gemm_avx2(g, b0, b1, m0, m1); break;
#endif
        default: gemm_c(g, b0, b1, m0, m1); break;
        }
    }
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (g->kernel != KERNEL_C) clean_upper();
#endif
}

/* rows [r0, r1) quantized and packed for the kernel in one pass: q, the kernel's u8 form, the scale */
static void quantize_rows(void *arg, int64_t r0, int64_t r1)
{
    const qgemm *g = arg;
    for (int64_t m = r0; m < r1; m++) {
        const float *x = g->x + m * g->K;
        int8_t *q = g->xq + m * g->kp;
        uint8_t *u = g->xu + m * g->kp;
        (void)u;                   /* the C kernel (the only one in a clang build) reads q alone */
        switch (g->kernel) {       /* each kernel its own quantizer: forcing kernels tests all three */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
        case KERNEL_AVX512VNNI: g->sx[m] = quantize_row_avx512(x, g->K, q, u, g->kp); break;
        case KERNEL_AVXVNNI: g->sx[m] = quantize_row_avx2(x, g->K, q, u, g->kp, 1, g->neg + m); break;
        case KERNEL_AVX2: g->sx[m] = quantize_row_avx2(x, g->K, q, u, g->kp, 0, g->neg + m); break;
#endif
        default: g->sx[m] = quantize_row(x, g->K, q, g->kp); break;
        }
    }
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (g->kernel != KERNEL_C) clean_upper();
#endif
}

static void quantize_chunks(void *arg, int64_t c0, int64_t c1)
{
    const qgemm *g = arg;
    quantize_rows(arg, c0 * 16, c1 * 16 < g->M ? c1 * 16 : g->M);
}

/* the host's threads (ABI 1.7: the cpu backend's pool, shared with its own kernels), or this one */
static int parallel(int64_t n, int64_t grain, void (*fn)(void *, int64_t, int64_t), void *ctx)
{
    if (NNR_HAS_FIELD(host, nnr_host_api, parallel_for) && host->parallel_for) return host->parallel_for(n, grain, fn, ctx);
    fn(ctx, 0, n);
    return NNR_OK;
}

static int quant_linear(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *pw = call->inputs[1], *meta = call->inputs[2], *y = call->outputs[0];
    qgemm g;
    memset(&g, 0, sizeof g);
    g.M = x->sizes[0];
    g.K = x->sizes[1];
    g.N = y->sizes[1];
    g.kg = (g.K + 3) / 4;
    g.kp = g.kg * 4;
    g.nb = (g.N + 15) / 16;
    int want = (int)call->params->i[2];
    if (want < 0 || want > KERNEL_AVX512VNNI) return quant_error(NNR_ERR_INVALID, "quantized linear: kernel %d (0..4)", want);
    if (want && !hw_has(want))
        return quant_error(NNR_ERR_UNSUPPORTED, "quantized linear: this CPU has no %s (CPUID and XCR0)", kernel_names[want]);
    if (want && !cpu_has(want))
        return quant_error(NNR_ERR_UNSUPPORTED, "quantized linear: the %s kernel is above the CPU class running, %s (NNR_CPU_ISA)",
                           kernel_names[want], cpu_isa_names[isa_level()]);
    g.kernel = want ? want : best_kernel();
    if (nnr_desc_numel(pw) != g.nb * g.kg * 64 || meta->sizes[1] != g.N)
        return quant_error(NNR_ERR_INVALID, "quantized linear: packed weight of %lld bytes and meta [3, %lld] do not fit x [%lld, %lld] -> y [%lld, %lld]",
                           (long long)nnr_desc_numel(pw), (long long)meta->sizes[1], (long long)g.M, (long long)g.K, (long long)g.M, (long long)g.N);
    if (g.M == 0 || g.N == 0) return NNR_OK;
    /* q and u [M, kp] each, the scales [M] (64-byte aligned), the sign flags [M]; the sizes are those of
     * tensors that exist, so the sum stays far below SIZE_MAX */
    size_t qbytes = (size_t)(g.M * g.kp), qalign = (qbytes * 2 + 63) / 64 * 64, need = qalign + (size_t)g.M * (sizeof(float) + 1);
    /* a batch-1..few call on the stack: a heap block of this size is a large-bin request, and glibc then
     * consolidates the fast bins the call's tensors left (about 1 us a layer at batch 1) */
    _Alignas(64) uint8_t small[16384];
    uint8_t *buf = need <= sizeof small ? small : host->host_alloc(need);
    if (!buf) return quant_error(NNR_ERR_OOM, "quantized linear: out of memory for the quantized activations");
    g.xq = (int8_t *)buf;
    g.xu = buf + qbytes;
    g.sx = (float *)(buf + qalign);
    g.neg = buf + qalign + (size_t)g.M * sizeof(float);
    g.x = x->data;
    const float *mf = meta->data;
    g.w = pw->data; g.sw = mf; g.wsum = mf + g.N; g.bias = mf + 2 * g.N;
    g.y = y->data;
    g.relu = call->params->i[0] == 1;
    int st = NNR_OK;
    /* the activations over the threads in chunks of 16 rows when there are many */
    if ((double)g.M * (double)g.K >= 65536.0 && g.M >= 32) {
        int64_t chunks = (g.M + 15) / 16;
        st = parallel(chunks, 1, quantize_chunks, &g);
    } else {
        quantize_rows(&g, 0, g.M);
    }
    /* the tiles over the threads when the work is worth it (a batch-1 layer of 784 x 512 is, at AVX2) */
    int64_t pairs = (g.nb + 1) / 2;
    g.mchunk = g.M > 2 * QUANT_ROW_CHUNK ? QUANT_ROW_CHUNK : g.M;
    g.nm = (g.M + g.mchunk - 1) / g.mchunk;
    int split = (double)g.M * (double)g.N * (double)g.K * kernel_cost[g.kernel] >= QUANT_SPLIT_PRODUCTS;
    if (st == NNR_OK) {
        if (split) st = parallel(pairs * g.nm, 1, run_tiles, &g);
        else run_tiles(&g, 0, pairs * g.nm);
    }
    if (st != NNR_OK) { if (buf != small) host->host_free(buf); return quant_error(st, "quantized linear: interrupted"); }
    /* rows with a NaN or infinity in x: NaN out, as a float linear would give */
    for (int64_t m = 0; m < g.M; m++)
        if (g.sx[m] != g.sx[m]) for (int64_t n = 0; n < g.N; n++) g.y[m * g.N + n] = NAN;
    if (buf != small) host->host_free(buf);
    return NNR_OK;
}

static int quant_weight(const nnr_op_call *call)
{
    const nnr_tensor_desc *w = call->inputs[0], *q = call->outputs[0], *s = call->outputs[1];
    int64_t N = w->sizes[0], K = w->sizes[1];
    const float *wf = w->data;
    for (int64_t n = 0; n < N; n++) {
        const float *row = wf + n * K;
        for (int64_t k = 0; k < K; k++)
            if (!(fabsf(row[k]) <= 3.4e38f))
                return quant_error(NNR_ERR_INVALID, "quantize: weight row %lld holds %s at column %lld", (long long)n + 1,
                                   row[k] != row[k] ? "NaN" : "an infinity", (long long)k + 1);
        ((float *)s->data)[n] = quantize_row(row, K, (int8_t *)q->data + n * K, K);
    }
    return NNR_OK;
}

static int quant_pack(const nnr_op_call *call)
{
    const nnr_tensor_desc *q = call->inputs[0], *packed = call->outputs[0], *wsum = call->outputs[1];
    int64_t N = q->sizes[0], K = q->sizes[1], kg = (K + 3) / 4, nb = (N + 15) / 16;
    if (nnr_desc_numel(packed) != nb * kg * 64) return quant_error(NNR_ERR_INVALID, "quantize: packed buffer of %lld bytes, expected %lld",
                                                          (long long)nnr_desc_numel(packed), (long long)(nb * kg * 64));
    const int8_t *qs = q->data;
    int8_t *p = packed->data;
    memset(p, 0, (size_t)(nb * kg * 64));
    for (int64_t n = 0; n < N; n++)       /* -128 has no |q| in int8: the AVX2 kernel's sign trick needs [-127, 127] */
        for (int64_t k = 0; k < K; k++)
            if (qs[n * K + k] == -128)
                return quant_error(NNR_ERR_INVALID, "quantize: the int8 weight holds -128 at row %lld, column %lld; the kernels take -127..127 "
                                   "(symmetric quantization)", (long long)n + 1, (long long)k + 1);
    for (int64_t n = 0; n < N; n++) {
        int32_t sum = 0;
        for (int64_t k = 0; k < K; k++) {
            int8_t v = qs[n * K + k];
            sum += v;
            p[((n / 16) * kg + k / 4) * 64 + (n % 16) * 4 + k % 4] = v;
        }
        ((int32_t *)wsum->data)[n] = sum;
    }
    return NNR_OK;
}

static int supports(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    if (call->struct_size < sizeof(nnr_op_call) || !call->params) return 0;
    for (int i = 0; i < call->n_inputs; i++) if (!nnr_desc_is_contiguous(call->inputs[i]) || call->inputs[i]->device != 0) return 0;
    for (int i = 0; i < call->n_outputs; i++) if (!nnr_desc_is_contiguous(call->outputs[i]) || call->outputs[i]->device != 0) return 0;
    switch (call->op) {
    case NNR_OP_QUANT_WEIGHT:
        return call->n_inputs == 1 && call->n_outputs == 2 && call->inputs[0]->dtype == NNR_F32 && call->inputs[0]->ndim == 2 &&
               call->outputs[0]->dtype == NNR_I8 && call->outputs[1]->dtype == NNR_F32 &&
               nnr_desc_numel(call->outputs[0]) == nnr_desc_numel(call->inputs[0]) && nnr_desc_numel(call->outputs[1]) == call->inputs[0]->sizes[0];
    case NNR_OP_QUANT_PACK:
        return call->n_inputs == 1 && call->n_outputs == 2 && call->inputs[0]->dtype == NNR_I8 && call->inputs[0]->ndim == 2 &&
               call->outputs[0]->dtype == NNR_I8 && call->outputs[1]->dtype == NNR_I32 && nnr_desc_numel(call->outputs[1]) == call->inputs[0]->sizes[0];
    case NNR_OP_QUANT_LINEAR:
        return call->n_inputs == 3 && call->n_outputs == 1 && call->inputs[0]->dtype == NNR_F32 && call->inputs[0]->ndim == 2 &&
               call->inputs[1]->dtype == NNR_I8 && call->inputs[2]->dtype == NNR_F32 && call->inputs[2]->ndim == 2 &&
               call->inputs[2]->sizes[0] == 3 && call->outputs[0]->dtype == NNR_F32 && call->outputs[0]->ndim == 2 &&
               call->outputs[0]->sizes[0] == call->inputs[0]->sizes[0];
    }
    return 0;
}

static nnr_status run(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    switch (call->op) {
    case NNR_OP_QUANT_WEIGHT: return (nnr_status)quant_weight(call);
    case NNR_OP_QUANT_PACK: return (nnr_status)quant_pack(call);
    case NNR_OP_QUANT_LINEAR: return (nnr_status)quant_linear(call);
    }
    return (nnr_status)quant_error(NNR_ERR_UNSUPPORTED, "quant: op %u", call->op);
}

static char description[160];

static nnr_plugin plugin = {
    .struct_size = sizeof(nnr_plugin),
    .abi_version = NNR_ABI_VERSION,
    .name = "quant",
    .version = "1.0",
    .description = description,
    .kind = NNR_PLUGIN_EXTENSION,
    .supports = supports,
    .run = run,
};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 10; }

NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t host_abi, nnr_plugin **out)
{
    if (NNR_ABI_MAJOR_OF(host_abi) != NNR_ABI_MAJOR) return NNR_ERR_ABI;
    host = h;
    snprintf(description, sizeof description, "int8 dynamic quantization: %s kernels (portable C, AVX2, AVX-VNNI, AVX-512 VNNI as the CPU allows)",
             kernel_names[best_kernel()]);
    *out = &plugin;
    return NNR_OK;
}

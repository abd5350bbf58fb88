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
 *   AVX2          vpmaddubsw + vpmaddwd. vpmaddubsw saturates its int16 pair
 *                 sums, which broke PyTorch's u8 x s8 path (pytorch#44939); here
 *                 it gets |q| and w * sign(q), so a pair is at most 2 * 127 * 127
 *                 = 32258 < 32767 and never saturates.
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
#endif

/* ---------------- the int8 gemm: y [M, N] from xq [M, kp] and packed w ---------------- */

typedef struct qgemm {
    int64_t M, N, K, kp, kg, nb;       /* kg = kp / 4 groups, nb = 16-channel blocks */
    const int8_t *xq;                  /* [M, kp] */
    const float *sx;                   /* [M] */
    const int8_t *w;                   /* [nb, kg, 16, 4] */
    const float *sw, *wsum, *bias;     /* [N] each (wsum as float: exact below 2^24) */
    float *y;
    int relu, kernel;
} qgemm;

static inline float epilogue(int32_t acc, float sx, float sw, float b, int relu)
{
    float v = fmaf((float)acc, sx * sw, b);
    return relu ? (v > 0 ? v : (v != v ? v : 0.0f)) : v;
}

/* channel blocks [b0, b1) for all rows */
static void gemm_c(const qgemm *g, int64_t b0, int64_t b1)
{
    for (int64_t m = 0; m < g->M; m++) {
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

/* activations as u8 (q + 128) for the vpdpbusd kernels */
static void to_u8(const int8_t *q, uint8_t *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) u[i] = (uint8_t)(q[i] ^ 0x80);
}

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
#define QSTORE(r) { store16_avx512(g, m0 + (r), b, a##r); if (two) store16_avx512(g, m0 + (r), b + 1, c##r); }
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_avx512vnni(const qgemm *g, const uint8_t *xu, int64_t b0, int64_t b1)
{
    const __m512i z = _mm512_setzero_si512();
    for (int64_t b = b0; b < b1; b += 2) {
        int two = b + 1 < b1;
        const int8_t *w0 = g->w + b * g->kg * 64, *w1 = two ? w0 + g->kg * 64 : w0;
        int64_t m0 = 0;
        for (; m0 + 8 <= g->M; m0 += 8) {
            __m512i a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z;
            __m512i c0 = z, c1 = z, c2 = z, c3 = z, c4 = z, c5 = z, c6 = z, c7 = z;
            const uint8_t *x = xu + m0 * g->kp;
            for (int64_t grp = 0; grp < g->kg; grp++) {
                __m512i wa = _mm512_loadu_si512(w0 + grp * 64), wb = _mm512_loadu_si512(w1 + grp * 64);
                QSTEP(0) QSTEP(1) QSTEP(2) QSTEP(3) QSTEP(4) QSTEP(5) QSTEP(6) QSTEP(7)
            }
            QSTORE(0) QSTORE(1) QSTORE(2) QSTORE(3) QSTORE(4) QSTORE(5) QSTORE(6) QSTORE(7)
        }
        for (; m0 < g->M; m0++) {
            __m512i a0 = z, c0 = z, a1 = z, c1 = z;      /* even groups in a0/c0, odd in a1/c1 */
            const uint8_t *x = xu + m0 * g->kp;
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
            store16_avx512(g, m0, b, _mm512_add_epi32(a0, a1));
            if (two) store16_avx512(g, m0, b + 1, _mm512_add_epi32(c0, c1));
        }
    }
}
#undef QX
#undef QSTEP
#undef QSTORE

/* AVX2 and AVX-VNNI: 16 channels as two 8-lane halves; the epilogue per half */
__attribute__((target("avx2,fma")))
static void store8_avx2(const qgemm *g, int64_t m, int64_t n0, __m256i acc, int u8)
{
    int64_t left = g->N - n0;
    if (left <= 0) return;
    float tmp[8];
    int32_t a[8];
    _mm256_storeu_si256((__m256i *)a, acc);
    int cnt = left < 8 ? (int)left : 8;
    if (cnt == 8) {
        __m256 sw = _mm256_loadu_ps(g->sw + n0), ws = _mm256_loadu_ps(g->wsum + n0);
        __m256 bias = g->bias ? _mm256_loadu_ps(g->bias + n0) : _mm256_setzero_ps();
        __m256i corr = u8 ? _mm256_slli_epi32(_mm256_cvtps_epi32(ws), 7) : _mm256_setzero_si256();
        __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc, corr)), _mm256_mul_ps(_mm256_set1_ps(g->sx[m]), sw), bias);
        if (g->relu) v = _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
        _mm256_storeu_ps(g->y + m * g->N + n0, v);
        return;
    }
    for (int j = 0; j < cnt; j++) {
        int32_t s = a[j] - (u8 ? (int32_t)g->wsum[n0 + j] * 128 : 0);
        tmp[j] = epilogue(s, g->sx[m], g->sw[n0 + j], g->bias ? g->bias[n0 + j] : 0.0f, g->relu);
    }
    memcpy(g->y + m * g->N + n0, tmp, sizeof(float) * (size_t)cnt);
}

/* 4 rows by one block: 8 accumulators */
__attribute__((target("avx2,fma")))
static void gemm_avx2(const qgemm *g, int64_t b0, int64_t b1)
{
    enum { R = 4 };
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = b0; b < b1; b++) {
        const int8_t *w = g->w + b * g->kg * 64;
        for (int64_t m0 = 0; m0 < g->M; m0 += R) {
            int rows = g->M - m0 < R ? (int)(g->M - m0) : R;
            __m256i lo[R], hi[R];
            for (int r = 0; r < R; r++) { lo[r] = _mm256_setzero_si256(); hi[r] = _mm256_setzero_si256(); }
            const int8_t *x = g->xq + m0 * g->kp;
            for (int64_t grp = 0; grp < g->kg; grp++) {
                __m256i wa = _mm256_loadu_si256((const __m256i *)(w + grp * 64)), wb = _mm256_loadu_si256((const __m256i *)(w + grp * 64 + 32));
                for (int r = 0; r < rows; r++) {
                    int32_t xv;
                    memcpy(&xv, x + r * g->kp + grp * 4, 4);
                    __m256i xb = _mm256_set1_epi32(xv), ax = _mm256_sign_epi8(xb, xb);
                    /* |x| (u8) times w * sign(x) (s8): pairs at most 2 * 127 * 127, no saturation */
                    __m256i pa = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wa, xb));
                    __m256i pb = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(wb, xb));
                    lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(pa, ones));
                    hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(pb, ones));
                }
            }
            for (int r = 0; r < rows; r++) {
                store8_avx2(g, m0 + r, b * 16, lo[r], 0);
                store8_avx2(g, m0 + r, b * 16 + 8, hi[r], 0);
            }
        }
    }
}

__attribute__((target("avx2,fma,avxvnni")))
static void gemm_avxvnni(const qgemm *g, const uint8_t *xu, int64_t b0, int64_t b1)
{
    enum { R = 4 };
    for (int64_t b = b0; b < b1; b++) {
        const int8_t *w = g->w + b * g->kg * 64;
        for (int64_t m0 = 0; m0 < g->M; m0 += R) {
            int rows = g->M - m0 < R ? (int)(g->M - m0) : R;
            __m256i lo[R], hi[R];
            for (int r = 0; r < R; r++) { lo[r] = _mm256_setzero_si256(); hi[r] = _mm256_setzero_si256(); }
            const uint8_t *x = xu + m0 * g->kp;
            for (int64_t grp = 0; grp < g->kg; grp++) {
                __m256i wa = _mm256_loadu_si256((const __m256i *)(w + grp * 64)), wb = _mm256_loadu_si256((const __m256i *)(w + grp * 64 + 32));
                for (int r = 0; r < rows; r++) {
                    int32_t xv;
                    memcpy(&xv, x + r * g->kp + grp * 4, 4);
                    __m256i xb = _mm256_set1_epi32(xv);
                    lo[r] = _mm256_dpbusd_avx_epi32(lo[r], xb, wa);
                    hi[r] = _mm256_dpbusd_avx_epi32(hi[r], xb, wb);
                }
            }
            for (int r = 0; r < rows; r++) {
                store8_avx2(g, m0 + r, b * 16, lo[r], 1);
                store8_avx2(g, m0 + r, b * 16 + 8, hi[r], 1);
            }
        }
    }
}
#endif

typedef struct piece { const qgemm *g; const uint8_t *xu; } piece;

/* a weight of this many bytes (int8) read by a few rows is split over the threads */
#define QUANT_STREAM_BYTES 65536.0

/* channel blocks [2 * p0, 2 * p1): in pairs, since the AVX-512 kernel takes two blocks at once */
static void run_pairs(void *arg, int64_t p0, int64_t p1)
{
    const piece *p = arg;
    const qgemm *g = p->g;
    int64_t b0 = 2 * p0, b1 = 2 * p1 < g->nb ? 2 * p1 : g->nb;
    switch (g->kernel) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    case KERNEL_AVX512VNNI: gemm_avx512vnni(g, p->xu, b0, b1); clean_upper(); break;
    case KERNEL_AVXVNNI: gemm_avxvnni(g, p->xu, b0, b1); clean_upper(); break;
    case KERNEL_AVX2: gemm_avx2(g, b0, b1); clean_upper(); break;
#endif
    default: gemm_c(g, b0, b1); break;
    }
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
    int8_t *xq = host->host_alloc((size_t)(g.M * g.kp) * 2 + (size_t)g.M * sizeof(float) + 64);
    if (!xq) return quant_error(NNR_ERR_OOM, "quantized linear: out of memory for the quantized activations");
    uint8_t *xu = (uint8_t *)xq + g.M * g.kp;
    float *sx = (float *)(xu + g.M * g.kp + (64 - (uintptr_t)(xu + g.M * g.kp) % 64) % 64);
    const float *xs = x->data;
    int vnni = g.kernel == KERNEL_AVX512VNNI || g.kernel == KERNEL_AVXVNNI;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (g.kernel == KERNEL_AVX512VNNI) {     /* the others quantize in C: forcing a kernel tests both paths */
        for (int64_t m = 0; m < g.M; m++)
            sx[m] = quantize_row_avx512(xs + m * g.K, g.K, xq + m * g.kp, vnni ? xu + m * g.kp : NULL, g.kp);
        clean_upper();
    } else {
        for (int64_t m = 0; m < g.M; m++) sx[m] = quantize_row(xs + m * g.K, g.K, xq + m * g.kp, g.kp);
        if (vnni) to_u8(xq, xu, g.M * g.kp);
    }
#else
    (void)vnni;
    for (int64_t m = 0; m < g.M; m++) sx[m] = quantize_row(xs + m * g.K, g.K, xq + m * g.kp, g.kp);
#endif
    const float *mf = meta->data;
    g.xq = xq; g.sx = sx; g.w = pw->data; g.sw = mf; g.wsum = mf + g.N; g.bias = mf + 2 * g.N;
    g.y = y->data;
    g.relu = call->params->i[0] == 1;
    /* the channel blocks over the threads when the work is large, or when a few rows stream a weight
     * large enough that reading it, not the arithmetic, is the time (a batch-1 layer); the pieces are
     * whole blocks, each computed alike on any thread count */
    int64_t pairs = (g.nb + 1) / 2;
    int split = (double)g.M * (double)g.N * (double)g.K >= 4e6 || (g.M <= 16 && (double)g.N * (double)g.K >= QUANT_STREAM_BYTES);
    piece pc = {&g, xu};
    int st = NNR_OK;
    if (split) st = parallel(pairs, 1, run_pairs, &pc);
    else run_pairs(&pc, 0, pairs);
    if (st != NNR_OK) { host->host_free(xq); return quant_error(st, "quantized linear: interrupted"); }
    /* rows with a NaN or infinity in x: NaN out, as a float linear would give */
    for (int64_t m = 0; m < g.M; m++)
        if (sx[m] != sx[m]) for (int64_t n = 0; n < g.N; n++) g.y[m * g.N + n] = NAN;
    host->host_free(xq);
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

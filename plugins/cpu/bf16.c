/* Matrix products with bf16 products summed in f32, on one of two engines:
 *  - AMX tiles (Intel Sapphire Rapids and later): TDPBF16PS on 16 x 32 tiles;
 *  - AVX512-BF16 (AMD Zen 4, Intel Cooper Lake; CPUs with AMX too when it is off): VDPBF16PS, 16
 *    columns x one k-pair an instruction, on the same packed operands.
 * What runs on them:
 *  - bf16 matmul (what nnr.autocast("bf16") runs): rounded to bf16 once at the end,
 *    the same contract as the portable bf16 path (matmul.c: f32 copies and sgemm);
 *  - f32 gemm when the user allows it (nnr.backends.cpu.allow_bf16 = true, like
 *    PyTorch's float32_matmul_precision "medium" or cuda's TF32): the operands are
 *    rounded to bf16 while they are packed, the sums stay f32, C = alpha AB + beta C.
 *
 * Layout: A is packed into tiles of 16 rows x 32 k (row-major, 64 bytes a row), B
 * into tiles of 16 k-pairs x 16 columns in the "VNNI" order TDPBF16PS reads
 * (element (k, j) at row k/2, position 2j + k%2), both zero-padded to whole
 * tiles and to an even number of panels. Each task computes a 32x32 block of C over all of K.
 * On AMX: four accumulator tiles (tmm0-3), two A tiles (tmm4-5) and two B tiles (tmm6-7) per
 * 32-wide step. On AVX512-BF16: four passes of 8 rows x 32 columns in 16 zmm accumulators, a word
 * row of each B tile against an A pair broadcast from memory. Tasks that share A's rows run one
 * after another so A's panel stays in cache. Packing and the blocks run on the pool.
 *
 * AMX is available when CPUID says AMX-TILE and AMX-BF16, XCR0 has the tile state, and
 * Linux grants it (arch_prctl ARCH_REQ_XCOMP_PERM). NNR_CPU_AMX=0 or
 * nnr.backends.cpu.amx = false turns it off.
 *
 * The AVX512-BF16 engine runs where the class is avx512_bf16 or above and AMX is not running. bf16
 * matmuls take it there: it beats the f32 copies and sgemm even where VDPBF16PS is slow. It does
 * twice FMA's multiply-adds an instruction, but its rate differs between CPUs (on the Sapphire
 * Rapids-class Xeon of docs/perf.md one every two cycles, half FMA's), so allow_bf16's f32 gemms
 * take it only where it is faster than sgemm could be: the first such gemm times both instructions
 * (about 0.1 ms) and takes the engine when VDPBF16PS does at least 1.25x FMA's multiply-adds a
 * second. NNR_CPU_BF16_DOT=0|1|auto, or nnr.backends.cpu.bf16_dot = false|true|"auto", decides
 * instead: 0 never, 1 for both kinds, auto (the default) as above. */
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "kernels.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_ok;              /* hardware and kernel allow it */
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
int cpu_amx_enabled = -1;       /* -1: from NNR_CPU_AMX (default on); set_option("amx") sets 0/1 */

static void amx_probe(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return;     /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return;                      /* AMX-TILE, AMX-BF16 */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return;  /* AVX512-BF16 (packing) */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return;                             /* XTILECFG, XTILEDATA */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    amx_ok = 1;
}

int cpu_amx_available(void)
{
    pthread_once(&amx_once, amx_probe);
    if (cpu_amx_enabled < 0) {
        const char *env = getenv("NNR_CPU_AMX");
        cpu_amx_enabled = !(env && strcmp(env, "0") == 0);
    }
    return amx_ok && cpu_amx_enabled && cpu_isa_level >= CPU_ISA_AMX;
}

/* ---- the AVX512-BF16 engine: whether it runs, and how fast VDPBF16PS is here ---- */
int cpu_bf16_dot_setting = -2;  /* -2: not yet read from NNR_CPU_BF16_DOT; -1 auto, 0 off, 1 on (set_option("bf16_dot")) */
static double dot_ratio;        /* VDPBF16PS's multiply-adds a second over FMA's, measured once */
static pthread_once_t dot_once = PTHREAD_ONCE_INIT;

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 12 independent chains of each instruction, n rounds: the time of 12 n instructions at full rate */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define ACC_DECL(i) __m512 a##i = _mm512_set1_ps((float)(i) * 1e-3f);
#define ACC_SUM(i) s = _mm512_add_ps(s, a##i);
#define DOT_STEP(i) a##i = _mm512_dpbf16_ps(a##i, x, y);
#define FMA_STEP(i) a##i = _mm512_fmadd_ps(u, v, a##i);
__attribute__((target("avx512f,avx512bf16"), noinline)) static float time_dot(int n, double *t)
{
    CHAINS(ACC_DECL)
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = (__m512bh)_mm512_set1_epi32(0x3f803f81);
    double t0 = seconds();
    for (int i = 0; i < n; i++) { CHAINS(DOT_STEP) __asm__ volatile("" : "+v"(x), "+v"(y)); }
    *t = seconds() - t0;
    __m512 s = _mm512_setzero_ps();
    CHAINS(ACC_SUM)
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f"), noinline)) static float time_fma(int n, double *t)
{
    CHAINS(ACC_DECL)
    __m512 u = _mm512_set1_ps(1.0f), v = _mm512_set1_ps(1.0001f);
    double t0 = seconds();
    for (int i = 0; i < n; i++) { CHAINS(FMA_STEP) __asm__ volatile("" : "+v"(u), "+v"(v)); }
    *t = seconds() - t0;
    __m512 s = _mm512_setzero_ps();
    CHAINS(ACC_SUM)
    return _mm512_reduce_add_ps(s);
}

/* the best of 5 interleaved timings of each: 2 x (FMA's time) / (VDPBF16PS's time) for as many instructions */
static void dot_probe(void)
{
    if (cpu_isa_cpu < CPU_ISA_AVX512_BF16) return;
    double best_dot = 1e30, best_fma = 1e30, t;
    volatile float sink = 0;
    for (int r = 0; r < 5; r++) {
        sink += time_dot(2000, &t);
        if (t < best_dot) best_dot = t;
        sink += time_fma(2000, &t);
        if (t < best_fma) best_fma = t;
    }
    (void)sink;
    dot_ratio = best_dot > 0 ? 2.0 * best_fma / best_dot : 0;
}

double cpu_bf16_dot_ratio(void)
{
    pthread_once(&dot_once, dot_probe);
    return dot_ratio;
}

/* NNR_CPU_BF16_DOT, read once (pthread_once: another thread never sees a half-made setting) */
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static void read_env(void)
{
    const char *env = getenv("NNR_CPU_BF16_DOT");
    int v = -1;
    if (env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)) v = env[0] == '1';
    else if (env && env[0] && strcmp(env, "auto")) fprintf(stderr, "nnrun: NNR_CPU_BF16_DOT=%.40s is not 0, 1 or auto; running auto\n", env);
    if (v == 1 && cpu_isa_level < CPU_ISA_AVX512_BF16) {
        fprintf(stderr, "nnrun: NNR_CPU_BF16_DOT=1: the cpu class is %s, without AVX512-BF16; bf16 products run in f32\n",
                cpu_isa_names[cpu_isa_level]);
        v = 0;
    }
    if (cpu_bf16_dot_setting == -2) cpu_bf16_dot_setting = v;     /* unless set_option came first */
}

/* the setting: NNR_CPU_BF16_DOT (0, 1 or auto) until set_option says otherwise; a bad value is named */
int cpu_bf16_dot_mode(void)
{
    pthread_once(&env_once, read_env);
    return cpu_bf16_dot_setting;
}

int cpu_bf16_dot_available(int f32)
{
    int mode = cpu_bf16_dot_mode();
    if (cpu_isa_level < CPU_ISA_AVX512_BF16 || cpu_amx_available() || mode == 0) return 0;
    return mode == 1 || !f32 || cpu_bf16_dot_ratio() >= 1.25;
}

int cpu_bf16_engine(int f32) { return cpu_amx_available() ? 2 : cpu_bf16_dot_available(f32) ? 1 : 0; }

typedef struct tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

enum { TILE = 512 };    /* bf16 elements in one 16 x 32 tile */

typedef struct amx_job {
    const void *a, *b;                          /* bf16 or f32 (f32 set) */
    int64_t ars, acs, brs, bcs, crs, ccs;       /* element strides */
    void *c;                                    /* bf16, or f32 when f32 is set */
    int64_t M, N, K, KT, MP, NP;                /* KT: 32-wide k steps; MP, NP: 16-wide panels (even) */
    int f32, dot;                               /* dot: the AVX512-BF16 engine, not AMX */
    float alpha, beta;
    uint16_t *pa, *pb;
} amx_job;

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* bf16 mask of the first n (<= 32) elements */
static inline __mmask32 first(int64_t n) { return n >= 32 ? 0xffffffffu : (__mmask32)((1u << n) - 1); }

/* a 16 x 16 transpose of 32-bit words: rows r[0..15] -> columns, in place */
AVX512 static inline void transpose16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) { t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]); t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]); }
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* u[4g + c] holds words c, c+4, c+8, c+12 of rows 4g..4g+3, one 128-bit lane each */
    for (int c = 0; c < 4; c++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88), v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[c + 8] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
        r[c + 4] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[c + 12] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
    }
}

/* 16 floats -> bf16, rounded to nearest even, NaN kept quiet (nnr_f32_to_bf16's rule) */
AVX512 static inline __m256i to_bf16(__m512 x)
{
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/* n (<= 32) consecutive elements at element index at of p (bf16 or f32) as bf16, zeros after. f32 is
 * rounded by VCVTNE2PS2BF16: to nearest even as nnr_f32_to_bf16, but denormals become zeros, which
 * TDPBF16PS makes of denormal inputs anyway */
AVX512 static inline __m512i load32(const void *p, int f32, int64_t at, int64_t n)
{
    if (n <= 0) return _mm512_setzero_si512();
    if (!f32) return _mm512_maskz_loadu_epi16(first(n), (const uint16_t *)p + at);
    const float *f = (const float *)p + at;
    __m512 lo = _mm512_maskz_loadu_ps((__mmask16)first(n), f);
    __m512 hi = n > 16 ? _mm512_maskz_loadu_ps((__mmask16)first(n - 16), f + 16) : _mm512_setzero_ps();
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* n (<= 16) consecutive elements as bf16 in the low halves of 32-bit words, zeros after */
AVX512 static inline __m512i load16(const void *p, int f32, int64_t at, int64_t n)
{
    if (n <= 0) return _mm512_setzero_si512();
    __mmask16 m = (__mmask16)first(n);
    if (!f32) return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + at));
    return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, (const float *)p + at)));
}

static inline uint16_t elem(const void *p, int f32, int64_t at)
{
    return f32 ? nnr_f32_to_bf16(((const float *)p)[at]) : ((const uint16_t *)p)[at];
}

/* One tile of a matrix X read as rows x k: word (r, w) = (X(r0 + r, k0 + 2w), X(r0 + r, k0 + 2w + 1)), stored
 * row r after row r (A's tiles, X = A) or, with vnni, word row w after word row w (B's tiles in the
 * order TDPBF16PS reads them, X = B^T). Rows past nr and k past nk are zeros. */
AVX512 static void pack_tile(const void *x, int f32, int64_t rs, int64_t ks, int64_t r0, int64_t nr, int64_t k0, int64_t nk,
                             int vnni, uint16_t *dst)
{
    __m512i r[16];
    if (ks == 1) {                  /* k along memory: one load per row */
        for (int i = 0; i < 16; i++) r[i] = i < nr ? load32(x, f32, (r0 + i) * rs + k0, nk) : _mm512_setzero_si512();
        if (vnni) transpose16(r);
    } else if (rs == 1) {           /* rows along memory: pairs of k interleave into word rows */
        for (int w = 0; w < 16; w++) {
            __m512i lo = 2 * w < nk ? load16(x, f32, (k0 + 2 * w) * ks + r0, nr) : _mm512_setzero_si512();
            __m512i hi = 2 * w + 1 < nk ? load16(x, f32, (k0 + 2 * w + 1) * ks + r0, nr) : _mm512_setzero_si512();
            r[w] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
        }
        if (!vnni) transpose16(r);
    } else {
        memset(dst, 0, TILE * 2);
        for (int64_t i = 0; i < nr; i++)
            for (int64_t k = 0; k < nk; k++)
                dst[vnni ? (k >> 1) * 32 + i * 2 + (k & 1) : i * 32 + k] = elem(x, f32, (r0 + i) * rs + (k0 + k) * ks);
        return;
    }
    for (int i = 0; i < 16; i++) _mm512_store_si512((void *)(dst + i * 32), r[i]);
}

/* panels [p0, p1) of a matrix with `rows` rows: panel p, k step t at (p * KT + t) * TILE */
static void pack_panels(const amx_job *j, const void *x, int64_t rs, int64_t ks, int64_t rows, int vnni, uint16_t *out, int64_t p0,
                        int64_t p1)
{
    for (int64_t p = p0; p < p1; p++)
        for (int64_t t = 0; t < j->KT; t++) {
            int64_t nr = rows - p * 16 < 16 ? rows - p * 16 : 16, nk = j->K - t * 32 < 32 ? j->K - t * 32 : 32;
            uint16_t *dst = out + (p * j->KT + t) * TILE;
            if (nr <= 0) memset(dst, 0, TILE * 2);
            else pack_tile(x, j->f32, rs, ks, p * 16, nr, t * 32, nk, vnni, dst);
        }
}

/* A's panels are its rows i; B's are its columns j, with B(k, j) read as row j of B^T */
static void pack_a(void *arg, int64_t p0, int64_t p1)
{
    const amx_job *j = arg;
    pack_panels(j, j->a, j->ars, j->acs, j->M, 0, j->pa, p0, p1);
}

static void pack_b(void *arg, int64_t q0, int64_t q1)
{
    const amx_job *j = arg;
    pack_panels(j, j->b, j->bcs, j->brs, j->N, 1, j->pb, q0, q1);
}

#define AMX_FN __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl")))

/* the 32x32 block (bm, bn) of C from its f32 sums in out[32][32] */
AVX512 static void write_block(const amx_job *j, int64_t bm, int64_t bn, const float *out)
{
    int64_t rows = j->M - bm * 32 < 32 ? j->M - bm * 32 : 32, cols = j->N - bn * 32 < 32 ? j->N - bn * 32 : 32;
    if (j->f32) {       /* C = alpha AB + beta C (C not read when beta is 0) */
        __m512 al = _mm512_set1_ps(j->alpha), be = _mm512_set1_ps(j->beta);
        __mmask16 m0 = (__mmask16)first(cols), m1 = (__mmask16)first(cols - 16 > 0 ? cols - 16 : 0);
        for (int64_t r = 0; r < rows; r++) {
            float *dst = (float *)j->c + (bm * 32 + r) * j->crs + bn * 32;
            __m512 v0 = _mm512_mul_ps(al, _mm512_load_ps(out + r * 32)), v1 = _mm512_mul_ps(al, _mm512_load_ps(out + r * 32 + 16));
            if (j->beta != 0.0f) {
                v0 = _mm512_fmadd_ps(be, _mm512_maskz_loadu_ps(m0, dst), v0);
                v1 = _mm512_fmadd_ps(be, _mm512_maskz_loadu_ps(m1, dst + 16), v1);
            }
            _mm512_mask_storeu_ps(dst, m0, v0);
            _mm512_mask_storeu_ps(dst + 16, m1, v1);
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *dst = (uint16_t *)j->c + (bm * 32 + r) * j->crs + bn * 32 * j->ccs;
        if (j->ccs == 1) {
            __m256i lo = to_bf16(_mm512_load_ps(out + r * 32)), hi = to_bf16(_mm512_load_ps(out + r * 32 + 16));
            _mm512_mask_storeu_epi16(dst, first(cols), _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
        } else {
            for (int64_t cc = 0; cc < cols; cc++) dst[cc * j->ccs] = nnr_f32_to_bf16(out[r * 32 + cc]);
        }
    }
}

/* blocks [b0, b1) of C, row-major over (bm, bn): consecutive blocks share A's panels. (Passing K in
 * chunks so that A's tiles of a chunk stay in L1 measured 5-8% slower on the mlp's shapes.) */
AMX_FN static void blocks(void *arg, int64_t b0, int64_t b1)
{
    const amx_job *j = arg;
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
    float out[32 * 32] __attribute__((aligned(64)));
    int64_t nb = j->NP / 2, stride = j->KT * TILE;
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t bm = blk / nb, bn = blk % nb;
        const uint16_t *a0 = j->pa + (2 * bm) * stride, *a1 = a0 + stride;
        const uint16_t *p0 = j->pb + (2 * bn) * stride, *p1 = p0 + stride;
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
        for (int64_t t = 0; t < j->KT; t++) {
            _tile_loadd(4, a0 + t * TILE, 64);
            _tile_loadd(5, a1 + t * TILE, 64);
            _tile_loadd(6, p0 + t * TILE, 64);
            _tile_loadd(7, p1 + t * TILE, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, out, 128);
        _tile_stored(1, out + 16, 128);
        _tile_stored(2, out + 512, 128);
        _tile_stored(3, out + 528, 128);
        write_block(j, bm, bn, out);
    }
    _tile_release();
}

/* the AVX512-BF16 engine's blocks [b0, b1): 8 rows x 32 columns at a time in 16 accumulators; each step
 * loads a word row (one k-pair of 16 columns) of the two B tiles and broadcasts an A pair per row */
#define DOT_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
DOT_FN static void dot_rows(const uint16_t *a, const uint16_t *p0, const uint16_t *p1, int64_t KT, float *out)
{
    __m512 c[8][2];
    for (int r = 0; r < 8; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    for (int64_t t = 0; t < KT; t++) {
        const int32_t *at = (const int32_t *)(a + t * TILE);
        const uint16_t *b0 = p0 + t * TILE, *b1 = p1 + t * TILE;
        for (int w = 0; w < 16; w++) {
            __m512bh x0 = (__m512bh)_mm512_load_si512((const void *)(b0 + w * 32));
            __m512bh x1 = (__m512bh)_mm512_load_si512((const void *)(b1 + w * 32));
            for (int r = 0; r < 8; r++) {
                __m512bh y = (__m512bh)_mm512_set1_epi32(at[r * 16 + w]);
                c[r][0] = _mm512_dpbf16_ps(c[r][0], y, x0);
                c[r][1] = _mm512_dpbf16_ps(c[r][1], y, x1);
            }
        }
    }
    for (int r = 0; r < 8; r++) {
        _mm512_store_ps(out + r * 32, c[r][0]);
        _mm512_store_ps(out + r * 32 + 16, c[r][1]);
    }
}

static void dot_blocks(void *arg, int64_t b0, int64_t b1)
{
    const amx_job *j = arg;
    float out[32 * 32] __attribute__((aligned(64)));
    int64_t nb = j->NP / 2, stride = j->KT * TILE;
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t bm = blk / nb, bn = blk % nb, rows = j->M - bm * 32 < 32 ? j->M - bm * 32 : 32;
        const uint16_t *p0 = j->pb + (2 * bn) * stride, *p1 = p0 + stride;
        for (int g = 0; g < 4 && g * 8 < rows; g++)         /* rows past M are padding: skipped */
            dot_rows(j->pa + (2 * bm + g / 2) * stride + (g % 2) * 8 * 32, p0, p1, j->KT, out + g * 8 * 32);
        write_block(j, bm, bn, out);
    }
}

/* grow-only packing space of the calling thread (pool threads fill it in parallel) */
static _Thread_local void *tl_pack;
static _Thread_local size_t tl_pack_n;

void cpu_bf16_thread_exit(void)
{
    free(tl_pack);
    tl_pack = NULL;
    tl_pack_n = 0;
}

/* 16-row (or column) panels of n, rounded up to an even count: blocks are two panels wide */
static int64_t panels(int64_t n) { return ((n + 15) / 16 + 1) & ~(int64_t)1; }

/* the packed tiles of A and B for an [M, K] x [K, N] product */
static size_t pack_bytes(int64_t M, int64_t N, int64_t K) { return (size_t)((panels(M) + panels(N)) * ((K + 31) / 32) * TILE) * 2 + 128; }

/* one [M, K] x [K, N] product: element strides of each operand (f32 ones: C's columns contiguous); 0, or
 * NNR_ERR_OOM (no message) or NNR_ERR_INTERRUPTED */
static int bf16_gemm(int engine, int f32, int64_t M, int64_t N, int64_t K, const void *a, int64_t ars, int64_t acs, const void *b, int64_t brs,
                    int64_t bcs, void *c, int64_t crs, int64_t ccs, float alpha, float beta)
{
    amx_job j = {a, b, ars, acs, brs, bcs, crs, ccs, c, M, N, K, (K + 31) / 32, 0, 0, f32, engine == 1, alpha, beta, NULL, NULL};
    j.MP = panels(M);
    j.NP = panels(N);
    size_t need = pack_bytes(M, N, K);
    if (tl_pack_n < need) {
        cpu_thread_scratch_taken();
        free(tl_pack);
        tl_pack = aligned_alloc(64, (need + 63) & ~(size_t)63);
        tl_pack_n = tl_pack ? need : 0;
        if (!tl_pack) return NNR_ERR_OOM;      /* the caller words it (or falls back) */
    }
    j.pa = tl_pack;
    j.pb = j.pa + j.MP * j.KT * TILE;
    int status = cpu_parallel_for(j.MP, 2, pack_a, &j);
    if (!status) status = cpu_parallel_for(j.NP, 2, pack_b, &j);
    if (!status) status = cpu_parallel_for((j.MP / 2) * (j.NP / 2), 1, j.dot ? dot_blocks : blocks, &j);
    if (tl_pack_n > (64u << 20)) cpu_bf16_thread_exit();     /* do not keep a huge buffer */
    return status;
}

/* bf16 [..., M, K] x [..., K, N] -> [..., M, N] (batch dims equal or broadcast with stride 0) */
int cpu_bf16_matmul(const nnr_op_call *call, int engine)
{
    const nnr_tensor_desc *A = call->inputs[0], *B = call->inputs[1], *C = call->outputs[0];
    int nd = C->ndim;
    int64_t M = C->sizes[nd - 2], N = C->sizes[nd - 1], K = A->sizes[nd - 1], batch = 1;
    for (int d = 0; d < nd - 2; d++) batch *= C->sizes[d];
    if (batch == 0 || M == 0 || N == 0) return NNR_OK;
    int64_t idx[NNR_MAX_DIMS] = {0};
    for (int64_t bi = 0; bi < batch; bi++) {
        const uint16_t *pa = A->data, *pb = B->data;
        uint16_t *pc = C->data;
        for (int d = 0; d < nd - 2; d++) { pa += idx[d] * A->strides[d]; pb += idx[d] * B->strides[d]; pc += idx[d] * C->strides[d]; }
        int status;
        if (K == 0) {
            for (int64_t r = 0; r < M; r++)
                for (int64_t cc = 0; cc < N; cc++) pc[r * C->strides[nd - 2] + cc * C->strides[nd - 1]] = 0;
            status = NNR_OK;
        } else {
            status = bf16_gemm(engine, 0, M, N, K, pa, A->strides[nd - 2], A->strides[nd - 1], pb, B->strides[nd - 2], B->strides[nd - 1], pc,
                              C->strides[nd - 2], C->strides[nd - 1], 1.0f, 0.0f);
        }
        if (status == NNR_ERR_OOM) {
            return cpu_error(NNR_ERR_OOM, "matmul: out of memory for %zu bytes of bf16 tiles ([%lld, %lld] x [%lld, %lld])", pack_bytes(M, N, K),
                             (long long)M, (long long)K, (long long)K, (long long)N);
        }
        if (status) return status;
        for (int d = nd - 3; d >= 0; d--) { if (++idx[d] < C->sizes[d]) break; idx[d] = 0; }
    }
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

/* nnr.backends.cpu.allow_bf16: f32 gemms with bf16 products where AMX or the AVX512-BF16 engine runs them */
int cpu_allow_bf16;

int cpu_bf16_sgemm_applies(int64_t M, int64_t N, int64_t K)
{
    return cpu_allow_bf16 && M > 0 && N > 0 && K > 0 && (double)M * (double)N * (double)K >= 32768.0 && cpu_bf16_engine(1) > 0;
}

/* row-major f32 C = alpha op(A) op(B) + beta C with bf16 products (cblas_sgemm's arguments);
 * NNR_ERR_OOM (nothing written, no message) when the tiles do not fit in memory */
int cpu_bf16_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    int engine = cpu_bf16_engine(1);        /* decided once: an option set meanwhile by another thread changes the next one */
    if (!engine) return NNR_ERR_OOM;        /* (the caller's "not taken": sgemm runs it) */
    return bf16_gemm(engine, 1, M, N, K, A, ta == CblasNoTrans ? lda : 1, ta == CblasNoTrans ? 1 : lda, B, tb == CblasNoTrans ? ldb : 1,
                    tb == CblasNoTrans ? 1 : ldb, C, ldc, 1, alpha, beta);
}

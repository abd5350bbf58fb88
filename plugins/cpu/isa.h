/* CPU classes, and the one the cpu plugin and the quant plugin run at (NNR_CPU_ISA).
 *
 * The classes are cumulative, each the one before it plus:
 *   c            nothing beyond the baseline (x86-64's SSE2; any aarch64)
 *   avx2         AVX2, FMA and F16C (Haswell, Zen 1-3, today's cloud VMs without AVX-512)
 *   avx512       AVX-512 F, BW, DQ and VL (Skylake-X)
 *   avx512_vnni  + AVX-512 VNNI (Cascade Lake, Ice Lake)
 *   avx512_bf16  + AVX512-BF16 (Cooper Lake, Zen 4)
 *   amx          + AMX-TILE and AMX-BF16, granted by the OS (Sapphire Rapids)
 * The CPU's class is the highest one whose every feature CPUID reports and the OS enables (XCR0; for AMX
 * the permission is asked for in amx.c). NNR_CPU_ISA=<class> runs a lower one, so that the AVX2 paths
 * are tested on an AVX-512 machine (tests/cpu_classes.sh runs the suites under each class the machine
 * has); a class above the CPU's is capped at it, with a note. Header-only: both plugins include it. */
#ifndef NNR_CPU_ISA_H
#define NNR_CPU_ISA_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

enum { CPU_ISA_C, CPU_ISA_AVX2, CPU_ISA_AVX512, CPU_ISA_AVX512_VNNI, CPU_ISA_AVX512_BF16, CPU_ISA_AMX, CPU_ISA_COUNT };

static const char *const cpu_isa_names[CPU_ISA_COUNT] = {"c", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"};

/* the CPU's own class, from CPUID and XCR0 */
static inline int cpu_isa_detect(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return CPU_ISA_C;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx || !fma || !f16c) return CPU_ISA_C;          /* the AVX2 copies are built with F16C */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6u) != 6u) return CPU_ISA_C;                                   /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return CPU_ISA_C;
    unsigned b7 = b, c7 = c, d7 = d;
    if (!((b7 >> 5) & 1)) return CPU_ISA_C;                                  /* AVX2 */
    /* AVX-512 F (b16), DQ (b17), BW (b30), VL (b31); opmask, ZMM_Hi256, Hi16_ZMM state */
    if (!((b7 >> 16) & 1) || !((b7 >> 17) & 1) || !((b7 >> 30) & 1) || !((b7 >> 31) & 1) || (lo & 0xe0u) != 0xe0u)
        return CPU_ISA_AVX2;
    if (!((c7 >> 11) & 1)) return CPU_ISA_AVX512;                            /* AVX512-VNNI */
    unsigned a71 = 0;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) a71 = a;
    if (!((a71 >> 5) & 1)) return CPU_ISA_AVX512_VNNI;                       /* AVX512-BF16 */
    if (!((d7 >> 24) & 1) || !((d7 >> 22) & 1) || (lo & (3u << 17)) != (3u << 17)) return CPU_ISA_AVX512_BF16;
    return CPU_ISA_AMX;                                                      /* AMX-TILE, AMX-BF16, XTILECFG/DATA */
#else
    return CPU_ISA_C;
#endif
}

/* the class NNR_CPU_ISA asks for, capped at the CPU's; what to say about it in note (empty when nothing) */
static inline int cpu_isa_choose(const char *env, int detected, char *note, size_t n)
{
    note[0] = 0;
    if (!env || !*env) return detected;
    for (int k = 0; k < CPU_ISA_COUNT; k++)
        if (strcmp(env, cpu_isa_names[k]) == 0) {
            if (k <= detected) return k;
            snprintf(note, n, "nnrun: NNR_CPU_ISA=%s: this CPU's class is %s; running %s", env, cpu_isa_names[detected],
                     cpu_isa_names[detected]);
            return detected;
        }
    snprintf(note, n, "nnrun: NNR_CPU_ISA=%.40s is not a class (c, avx2, avx512, avx512_vnni, avx512_bf16, amx); running this CPU's, %s",
             env, cpu_isa_names[detected]);
    return detected;
}

/* Multi-versioned functions that follow the class chosen at run time, where GCC's target_clones would
 * follow CPUID alone (it resolves at load): the body is compiled three times, for AVX-512, AVX2+FMA and
 * the baseline, and a call goes to the copy of the running class.
 *   CPU_MULTI(void, add_f32, (float *o, const float *a, int64_t n), (o, a, n)) { ...body... }
 * The body is an always-inline function of the baseline target, inlined (with what it calls: flatten)
 * into each copy and vectorized for that copy's target. cpu_isa_level is the running class. */
extern int cpu_isa_level, cpu_isa_cpu;   /* the running class; the CPU's own */
#define CPU_TARGET_AVX512 "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"
#define CPU_TARGET_AVX2 "avx2,fma,f16c"
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CPU_MULTI_ATTR(attr, ret, name, params, args)                                                                     \
    static inline __attribute__((always_inline)) ret name##_body params;                                                   \
    __attribute__((target(CPU_TARGET_AVX512), flatten, noinline)) attr static ret name##_avx512 params { return name##_body args; } \
    __attribute__((target(CPU_TARGET_AVX2), flatten, noinline)) attr static ret name##_avx2 params { return name##_body args; }     \
    __attribute__((flatten, noinline)) attr static ret name##_base params { return name##_body args; }                      \
    static ret name params                                                                                                 \
    {                                                                                                                      \
        return cpu_isa_level >= CPU_ISA_AVX512 ? name##_avx512 args : cpu_isa_level >= CPU_ISA_AVX2 ? name##_avx2 args     \
                                                                                                     : name##_base args;   \
    }                                                                                                                      \
    static inline __attribute__((always_inline)) ret name##_body params
#else
#define CPU_MULTI_ATTR(attr, ret, name, params, args) static inline ret name params
#endif
#define CPU_MULTI(ret, name, params, args) CPU_MULTI_ATTR(, ret, name, params, args)

#endif

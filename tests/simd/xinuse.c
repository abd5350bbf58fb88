/* Which parts of the SIMD register state are in use: XGETBV with ECX = 1 (XINUSE). Loaded by
 * tests/simd/upper_state.lua through the FFI after each kernel family has run. Returns -1 where the
 * CPU cannot say (no XSAVE, or no XGETBV ECX = 1), else the bitmap: bit 2 the upper halves of
 * ymm0-15, bit 6 the upper halves of zmm0-15, bit 7 zmm16-31. */
#include <stdint.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

int64_t nnr_test_xinuse(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return -1;      /* OSXSAVE */
    if (__get_cpuid_max(0, 0) < 0xd) return -1;
    __cpuid_count(0xd, 1, a, b, c, d);
    if (!(a & (1u << 2))) return -1;                                            /* XGETBV with ECX = 1 */
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
    return (int64_t)lo | ((int64_t)hi << 32);
#else
    return -1;
#endif
}

/* XINUSE right after VZEROUPPER (where the CPU has AVX): the manual lets a CPU report a component in
 * its initial state as in use, so upper_state.lua first checks that a clean state reads clean */
#if defined(__x86_64__)
__attribute__((target("avx"))) static void zero_upper(void) { __asm__ volatile("vzeroupper" ::: "memory"); }
#endif
int64_t nnr_test_xinuse_after_vzeroupper(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 28))) return nnr_test_xinuse();      /* no AVX: nothing to clear */
    zero_upper();
#endif
    return nnr_test_xinuse();
}


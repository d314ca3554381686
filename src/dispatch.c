/*
 * dispatch.c - which kernel tables this build has and this CPU can run.
 *
 * x86-64: cpuid for the instruction-set bits, plus XGETBV to check that the
 * operating system saves the wider registers on a context switch (YMM state
 * for AVX2, ZMM and opmask state for AVX-512).  A CPU bit alone is not
 * enough: an OS or hypervisor that does not enable the state would make the
 * first wide instruction fault.
 *
 * AArch64: the NEON table, when the OS reports Advanced SIMD: getauxval's
 * AT_HWCAP on Linux (HWCAP_FP and HWCAP_ASIMD), sysctlbyname's
 * hw.optional.AdvSIMD on macOS.  ASIMD is baseline on AArch64 (every
 * compiler uses it for ordinary code), so the answer is yes on any CPU
 * that runs the build; the check is there so that a later set needing an
 * optional feature (SVE, FEAT_BF16: AT_HWCAP2) slots in the same way.
 * Other architectures have only the portable table.
 *
 * The AVX2 table also needs F16C (every AVX2 CPU has it, but it is its own
 * cpuid bit).  AVX512_BF16 adds a table that differs from the AVX-512 one
 * only in its bfloat16 kernels.
 *
 * This file is compiled for the architecture's baseline, like everything
 * but the x86-64 kernels_<isa>.c files: it runs before anything is known
 * about the CPU, so it must not contain one AVX instruction (CI
 * disassembles it to check).
 * The tables it can pick are the ones this build linked in (FN_HAVE_*,
 * fastnorm_kernels.h).
 */
#include <string.h>
#include "fastnorm_kernels.h"

/* FN_HAVE_AVX* are 0 off x86-64 (fastnorm_kernels.h) */
#if FN_HAVE_AVX2 || FN_HAVE_AVX512
#include <cpuid.h>
#define FN_X86 1
#if FN_HAVE_AVX2
extern const fn_kernel_table fn_kernels_avx2;
#endif
#if FN_HAVE_AVX512
extern const fn_kernel_table fn_kernels_avx512;
#endif
#if FN_HAVE_AVX512BF16
extern const fn_kernel_table fn_kernels_avx512_bf16;
#endif

static unsigned long long fn_xgetbv0(void)
{
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static int fn_cpu_has_avx2(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    const int f16c = (c >> 29) & 1; /* the float16 kernels convert with it */
    if (!(osxsave && avx && fma && f16c)) return 0;
    if ((fn_xgetbv0() & 0x6) != 0x6) return 0; /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 5) & 1;
}

#if FN_HAVE_AVX512
static int fn_cpu_has_avx512(void)
{
    unsigned int a, b, c, d;
    if (!fn_cpu_has_avx2()) return 0;
    if ((fn_xgetbv0() & 0xE6) != 0xE6) return 0; /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const unsigned int need = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31); /* F DQ BW VL */
    return (b & need) == need;
}
#endif

#if FN_HAVE_AVX512BF16
static int fn_cpu_has_avx512_bf16(void)
{
    unsigned int a, b, c, d;
    if (!fn_cpu_has_avx512()) return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1; /* AVX512_BF16 */
}
#endif
#endif

#if FN_HAVE_NEON
extern const fn_kernel_table fn_kernels_neon;

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_FP
#define HWCAP_FP (1ul << 0)
#endif
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1ul << 1)
#endif
static int fn_cpu_has_neon(void)
{
    const unsigned long need = HWCAP_FP | HWCAP_ASIMD;
    return (getauxval(AT_HWCAP) & need) == need;
}
#elif defined(__APPLE__)
#include <sys/sysctl.h>
static int fn_cpu_has_neon(void)
{
    int on = 0;
    size_t len = sizeof on;
    /* a macOS without the key still requires ASIMD of every arm64 CPU */
    if (sysctlbyname("hw.optional.AdvSIMD", &on, &len, NULL, 0) != 0) return 1;
    return on != 0;
}
#else
static int fn_cpu_has_neon(void)
{
    return 1; /* baseline on AArch64; no OS query known here */
}
#endif
#endif

int fn_usable_tables(const fn_kernel_table **tables, int max)
{
    int n = 0;
#ifdef FN_X86
#if FN_HAVE_AVX512BF16
    if (n < max && fn_cpu_has_avx512_bf16()) tables[n++] = &fn_kernels_avx512_bf16;
#endif
#if FN_HAVE_AVX512
    if (n < max && fn_cpu_has_avx512()) tables[n++] = &fn_kernels_avx512;
#endif
#if FN_HAVE_AVX2
    if (n < max && fn_cpu_has_avx2()) tables[n++] = &fn_kernels_avx2;
#endif
#endif
#if FN_HAVE_NEON
    if (n < max && fn_cpu_has_neon()) tables[n++] = &fn_kernels_neon;
#endif
    if (n < max) tables[n++] = &fn_kernels_scalar;
    return n;
}

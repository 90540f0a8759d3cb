#include "cpu_features.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "matvec_bf16.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CPU_X86 1
#else
#define CPU_X86 0
#endif

static cpu_features features;
static char isa_name[64];
static pthread_once_t once = PTHREAD_ONCE_INIT;

#if CPU_X86
/* XCR0: the register states the OS saves and restores (xgetbv needs OSXSAVE, checked first). */
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect_x86(cpu_features *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    const unsigned max_leaf = a;
    memcpy(f->vendor, &b, 4);
    memcpy(f->vendor + 4, &d, 4);
    memcpy(f->vendor + 8, &c, 4);
    f->vendor[12] = '\0';
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1;
    const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const int ymm_os = (xcr0 & 0x6) == 0x6;                 /* SSE, AVX */
    const int zmm_os = ymm_os && (xcr0 & 0xe0) == 0xe0;     /* opmask, ZMM_Hi256, Hi16_ZMM */
    const int tile_os = (xcr0 & (3ull << 17)) == (3ull << 17); /* XTILECFG, XTILEDATA */
    if (max_leaf < 7) return;
    unsigned b7, c7, d7;
    __cpuid_count(7, 0, a, b7, c7, d7);
    const unsigned max_sub7 = a;
    const int avx2 = (b7 >> 5) & 1, avx512f = (b7 >> 16) & 1, avx512bw = (b7 >> 30) & 1;
    const int amx_bf16 = (d7 >> 22) & 1, amx_tile = (d7 >> 24) & 1;
    f->avx2_fma = ymm_os && avx2 && fma;
    f->avx512 = zmm_os && avx512f && avx512bw;
    f->amx_bf16 = tile_os && amx_bf16 && amx_tile;
    if (max_sub7 >= 1) {
        unsigned a71, b71, c71, d71;
        __cpuid_count(7, 1, a71, b71, c71, d71);
        f->avx512_bf16 = zmm_os && avx512f && ((a71 >> 5) & 1);
    }
}
#endif

static void detect(void) {
#if CPU_X86
    detect_x86(&features);
#endif
    snprintf(isa_name, sizeof isa_name, "%s%s%s", matvec_isa_name(matvec_isa_best()),
             features.avx512_bf16 ? "+avx512bf16" : "", features.amx_bf16 ? "+amxbf16" : "");
}

const cpu_features *cpu_features_get(void) {
    pthread_once(&once, detect);
    return &features;
}

int cpu_native_bf16(void) {
    const cpu_features *f = cpu_features_get();
    return f->avx512_bf16 || f->amx_bf16;
}

const char *cpu_isa_name(void) {
    pthread_once(&once, detect);
    return isa_name;
}

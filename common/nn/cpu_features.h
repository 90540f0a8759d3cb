/* cpu_features.h - what this CPU (and OS) can execute, read once at start: the vector ISA the
 * matvec kernels run (matvec_bf16.h) and whether bf16 arithmetic is native.
 *
 * "Native bf16" means the CPU multiplies bf16 itself: AVX512_BF16 (VDPBF16PS: Intel Cooper
 * Lake and later Xeons, AMD Zen 4 and later) or AMX-BF16 (TDPBF16PS on tiles: Intel Sapphire
 * Rapids and later). Without either (this project's 2-core AMD EPYC Zen 3 VM: AVX2+FMA only)
 * bf16 is still a storage format here: matvec_bf16 widens it to f32 in registers and
 * multiplies in f32, which halves the bytes a decode step reads on any CPU.
 *
 * Read from cpuid, not from the build machine's flags:
 *   AVX512_BF16  leaf 7 subleaf 1, EAX bit 5 (needs AVX-512F and the OS saving ZMM state:
 *                XCR0 bits 1, 2, 5, 6, 7);
 *   AMX-BF16     leaf 7 subleaf 0, EDX bit 22, with AMX-TILE (EDX bit 24) and the OS saving
 *                tile state (XCR0 bits 17 XTILECFG and 18 XTILEDATA). Linux also wants each
 *                process to ask for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM) before
 *                its first tile instruction: whoever runs AMX code does that, not this file.
 * An OS that does not enable a state in XCR0 makes the instructions fault, so a CPU bit
 * without its XCR0 bits counts as absent. */
#ifndef LION_CPU_FEATURES_H
#define LION_CPU_FEATURES_H

typedef struct cpu_features {
    int avx2_fma;    /* AVX2 and FMA, with the OS saving YMM state */
    int avx512;      /* AVX-512F and BW, with the OS saving ZMM state (the avx512 matvec kernel) */
    int avx512_bf16; /* AVX512_BF16 (VDPBF16PS), usable */
    int amx_bf16;    /* AMX-BF16 with AMX-TILE, tile state enabled by the OS */
    char vendor[13]; /* "GenuineIntel", "AuthenticAMD", "" elsewhere */
} cpu_features;

/* The features of this CPU, detected on the first call (thread-safe; the result never
 * changes in a process). Every field is 0 on non-x86 builds. */
const cpu_features *cpu_features_get(void);

/* 1 when bf16 products are native here: avx512_bf16 or amx_bf16. */
int cpu_native_bf16(void);

/* The ISA as one short word list for logs and metrics labels: the matvec kernel's name
 * ("avx2", "avx512", "scalar"), then "+avx512bf16" and "+amxbf16" when present, e.g.
 * "avx2" here, "avx512+avx512bf16+amxbf16" on a Sapphire Rapids Xeon. */
const char *cpu_isa_name(void);

#endif

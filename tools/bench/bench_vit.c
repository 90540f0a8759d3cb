/* bench_vit: EVA ViT-g forward at true LION sizes (224/14, 1408, 16 heads, MLP 6144,
 * 39 blocks) on random weights, and the GEMM rate it reaches against OpenBLAS's own peak.
 *
 *   bench_vit [--threads N] [--batch B] [--depth D] [--iters K] [--precision f32|bf16]
 *             [--dim C] [--heads H] [--mlp M]
 *
 * Prints seconds per image, achieved GFLOP/s, and the ratio to a large square sgemm
 * measured in the same process (the ceiling for a GEMM-bound forward). --precision bf16
 * holds the blocks' matrices in bf16 as lion-vision --precision bf16 does (vit.h); the header
 * names the form they took (linear_form) and oneDNN's ISA, the weights line their bytes.
 * --dim, --heads and --mlp shrink the widths (the image stays 224/14, 257 tokens): only for
 * quick runs of the tools that drive this bench (tools/bench/compare_torch.py --tiny), not a
 * LION figure. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "args.h"
#include "cpu_features.h"
#include "onednn_matmul.h"
#include "threads.h"
#include "vit.h"

/* OpenBLAS exports these; declared here as threads.c does, whatever cblas.h is installed. */
char *openblas_get_corename(void);


static float *random_floats(size_t n, float scale, unsigned *seed) {
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_vit: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = scale * ((float)rand_r(seed) / RAND_MAX - 0.5f);
    return p;
}

typedef struct bench_options {
    int threads, batch, depth, iters, dim, heads, mlp;
    lion_precision precision;
} bench_options;

/* A block matrix of random weights in precision p. In bf16 the f32 array is dropped once
 * converted, as lion-vision releases the file's f32 pages: the process holds what it would. */
static void random_linear(linear *l, size_t out, size_t in, lion_precision p, unsigned *seed) {
    lion_status st;
    float *w = random_floats(out * in, 0.04f, seed);
    if (linear_from_f32(l, w, (int)out, (int)in, p, 0, &st)) {
        fprintf(stderr, "bench_vit: %s\n", st.msg);
        exit(1);
    }
    if (p != PRECISION_F32) free(w);
}

static const args_option bench_options_table[] = {
    {.name = "--threads", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, threads), .min = 1, .max = 1024,
     .help = "compute threads", .deflt = "OpenMP's"},
    {.name = "--batch", .metavar = "B", .kind = ARG_INT, ARGS_AT(bench_options, batch), .min = 1, .max = 1024,
     .help = "images per forward"},
    /* layers 18 and 28 are returned when the depth reaches them, the last block always */
    {.name = "--depth", .metavar = "D", .kind = ARG_INT, ARGS_AT(bench_options, depth), .min = 1, .max = 64,
     .help = "ViT blocks (LION: 39)"},
    {.name = "--iters", .metavar = "K", .kind = ARG_INT, ARGS_AT(bench_options, iters), .min = 1, .max = 1000000,
     .help = "timed forwards after the warm-up"},
    {.name = "--precision", .metavar = "f32|bf16", .kind = ARG_CUSTOM, .set = bench_set_precision,
     ARGS_AT(bench_options, precision), .deflt = "f32",
     .help = "bf16: the blocks' matrices held in bf16 (vit.h)"},
    {.name = "--dim", .metavar = "C", .kind = ARG_INT, ARGS_AT(bench_options, dim), .min = 16, .max = 8192,
     .help = "width (ViT-g: 1408; a multiple of --heads)"},
    {.name = "--heads", .metavar = "H", .kind = ARG_INT, ARGS_AT(bench_options, heads), .min = 1, .max = 256,
     .help = "attention heads (ViT-g: 16)"},
    {.name = "--mlp", .metavar = "M", .kind = ARG_INT, ARGS_AT(bench_options, mlp), .min = 16, .max = 65536,
     .help = "MLP hidden width (ViT-g: 6144)"},
};

static const bench_options defaults = {.batch = 1, .depth = 39, .iters = 2, .dim = 1408, .heads = 16, .mlp = 6144,
                                       .precision = PRECISION_F32};

int main(int argc, char **argv) {
    bench_options o = defaults, defaults_copy = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &o), dflt = ARGS_TABLE(bench_options_table, &defaults_copy);
    const int exit_code = bench_args("bench_vit", &table, &dflt, argc, argv);
    if (exit_code >= 0) return exit_code;
    lion_status st;
    int threads = o.threads, batch = o.batch, depth = o.depth, iters = o.iters;
    if (o.dim % o.heads) {
        fprintf(stderr, "bench_vit: --dim %d is not a multiple of --heads %d\n", o.dim, o.heads);
        return 2;
    }
    threads_init(threads);
    vit_config c = {224, 14, o.dim, depth, o.heads, o.mlp, 1e-6f};
    const size_t d = (size_t)o.dim, h = (size_t)o.mlp, tokens = 257;
    unsigned seed = 7;
    vit_model m = {.cfg = c, .tokens = (int)tokens};
    m.patch_w = random_floats(d * 3 * 14 * 14, 0.02f, &seed);
    m.patch_b = random_floats(d, 0.02f, &seed);
    m.cls_token = random_floats(d, 0.02f, &seed);
    m.pos_embed = random_floats(tokens * d, 0.02f, &seed);
    m.blocks = calloc((size_t)depth, sizeof *m.blocks);
    float *ones = malloc(d * sizeof(float));
    for (size_t i = 0; i < d; i++) ones[i] = 1.0f;
    for (int i = 0; i < depth; i++) {
        vit_block *b = &m.blocks[i];
        b->norm1_w = b->norm2_w = ones;
        b->norm1_b = b->norm2_b = random_floats(d, 0.02f, &seed);
        random_linear(&b->qkv, 3 * d, d, o.precision, &seed);
        b->qkv_b = random_floats(3 * d, 0.02f, &seed);
        random_linear(&b->proj, d, d, o.precision, &seed);
        b->proj_b = random_floats(d, 0.02f, &seed);
        random_linear(&b->fc1, h, d, o.precision, &seed);
        b->fc1_b = random_floats(h, 0.02f, &seed);
        random_linear(&b->fc2, d, h, o.precision, &seed);
        b->fc2_b = random_floats(d, 0.02f, &seed);
    }
    float *pixels = random_floats((size_t)batch * 3 * 224 * 224, 2.0f, &seed);
    int layers[3] = {depth > 18 ? 18 : 0, depth > 28 ? 28 : 0, depth - 1};
    float *outs[3];
    for (int k = 0; k < 3; k++) outs[k] = malloc((size_t)batch * tokens * d * sizeof(float));
    arena a;
    arena_init(&a, 0);

    /* FLOPs of one image: GEMMs (qkv, proj, fc1, fc2, patch) plus attention's two products */
    double per_block = 2.0 * tokens * d * (3 * d + d + 2 * h) + 2.0 * 2 * tokens * tokens * d;
    double flops = batch * (depth * per_block + 2.0 * 256 * d * 588);

    if (vit_forward(&m, pixels, batch, layers, 3, outs, &a, &st)) { /* warm-up: page in, grow arena */
        fprintf(stderr, "bench_vit: %s\n", st.msg);
        return 1;
    }
    double t = bench_now();
    for (int r = 0; r < iters; r++) vit_forward(&m, pixels, batch, layers, 3, outs, &a, &st);
    t = (bench_now() - t) / iters;
    double peak = bench_sgemm_gflops(2048);
    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    printf("bench_vit: EVA ViT-g depth %d, batch %d, threads %d; precision %s, matrices %s; oneDNN isa %s\n", depth,
           batch, threads_count(), precision_name(o.precision), linear_form(&m.blocks[0].fc1), onednn_isa_name());
    if (d != 1408 || h != 6144 || o.heads != 16)
        printf("  widths         dim %zu, heads %d, mlp %zu (not ViT-g's)\n", d, o.heads, h);
    printf("  CPU            %s; isa %s, native bf16 %s; OpenBLAS core %s\n", cpu, cpu_isa_name(),
           cpu_native_bf16() ? "yes" : "no", openblas_get_corename());
    printf("  weights        %.1f MB of block matrices (%s)\n", vit_matrix_bytes(&m) / 1e6,
           precision_name(o.precision));
    printf("  forward        %.3f s  (%.3f s per image)\n", t, t / batch);
    printf("  compute        %.1f GFLOP/s over %.1f GFLOP\n", flops / t / 1e9, flops / 1e9);
    printf("  sgemm 2048^3   %.1f GFLOP/s (this process, same threads)\n", peak);
    printf("  ratio          %.2f of sgemm peak\n", flops / t / 1e9 / peak);
    /* oneDNN's own rate at the ViT's shapes, in the precision the products ran (bf16 where
     * oneDNN runs it natively; f32 otherwise, for the record) */
    const int bf16 = o.precision == PRECISION_BF16 && onednn_bf16_native();
    const int shapes[4][2] = {{(int)d, 3 * (int)d}, {(int)d, (int)d}, {(int)d, (int)h}, {(int)h, (int)d}};
    double onednn_s = 0;
    const char *impl = "";
    for (int k = 0; k < 4; k++) {
        const double g = bench_onednn_gflops((int)tokens * batch, shapes[k][0], shapes[k][1], bf16, &impl);
        onednn_s += g > 0 ? 2.0 * tokens * batch * shapes[k][0] * (double)shapes[k][1] / (g * 1e9) : 0;
    }
    const double block_gemm = 2.0 * tokens * batch * d * (3 * d + d + 2 * h);
    if (onednn_s > 0)
        printf("  onednn %s     %.1f GFLOP/s over the block's 4 matmul shapes (%s); forward at %.2f of it\n",
               bf16 ? "bf16" : "f32 ", block_gemm / onednn_s / 1e9, impl, flops / t / 1e9 / (block_gemm / onednn_s / 1e9));
    printf("  arena peak     %.1f MB\n", a.peak / 1e6);
    return 0;
}

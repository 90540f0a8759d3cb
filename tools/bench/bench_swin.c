/* bench_swin: RAM's Swin-L forward at its true widths (384/4, embed 192, window 12, heads
 * 6/12/24/48, depths 2-2-18-2) on random weights, in f32 or bf16 (services/tagger/swin.h).
 *
 *   bench_swin [--precision f32|bf16] [--threads N] [--iters K] [--depths 2,2,18,2]
 *
 * The weights go through a safetensors file in /tmp (swin_load binds what a stage file holds;
 * 0.8 GB of f32 at the full depths, removed once mapped), so the bf16 run converts and
 * releases them exactly as lion-tagger --precision bf16 does. Prints the CPU and the ISA
 * OpenBLAS's kernels and oneDNN dispatch to, the form of the matrices (linear_form) and their
 * bytes, seconds per image and GFLOP/s. --depths truncates the stages for quick runs (the
 * widths stay Swin-L's). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "bench_util.h"
#include "cpu_features.h"
#include "onednn_matmul.h"
#include "swin.h"
#include "threads.h"
#include "weight_builder.h"

typedef struct bench_options {
    int threads, iters, image, embed;
    lion_precision precision;
    const char *depths;
} bench_options;

static const args_option bench_options_table[] = {
    {.name = "--precision", .metavar = "P", .kind = ARG_CUSTOM, .set = bench_set_precision, .deflt = "f32",
     ARGS_AT(bench_options, precision),
     .help = "f32 or bf16 (the matrices' form; the rest stays f32)"},
    {.name = "--threads", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, threads), .min = 1, .max = 1024,
     .help = "compute threads", .deflt = "OpenMP's"},
    {.name = "--iters", .metavar = "K", .kind = ARG_INT, ARGS_AT(bench_options, iters), .min = 1, .max = 1000000,
     .help = "timed forwards after the warm-up"},
    {.name = "--depths", .metavar = "D,D,D,D", .kind = ARG_STRING, ARGS_AT(bench_options, depths),
     .help = "blocks per stage (RAM's Swin-L: 2,2,18,2)"},
    /* smaller widths only for quick runs of the tools that drive this bench (compare_torch.py
     * --tiny): not a RAM figure */
    {.name = "--image", .metavar = "PX", .kind = ARG_INT, ARGS_AT(bench_options, image), .min = 96, .max = 1536,
     .help = "image side, a multiple of 96 (RAM: 384)"},
    {.name = "--embed-dim", .metavar = "C", .kind = ARG_INT, ARGS_AT(bench_options, embed), .min = 8, .max = 1024,
     .help = "stage 1 width, heads scaled to keep 32 per head (RAM: 192)"},
};

static const bench_options defaults = {.iters = 2, .image = 384, .embed = 192, .precision = PRECISION_F32,
                                       .depths = "2,2,18,2"};

#define V(...) ((const int64_t[]){__VA_ARGS__})
/* std 0.02, Swin's init */
#define W_SCALE 0.0346f

/* Swin's keys for c, written to path. */
static int write_swin(const char *path, const swin_config *c, lion_status *st) {
    weight_builder *l = weight_builder_new(42);
    if (!l) return lion_fail(st, LION_ENOMEM, "out of memory");
    const int e = c->embed_dim;
    weight_builder_add(l, 0, W_SCALE, 4, V(e, 3, c->patch_size, c->patch_size), "patch_embed.proj.weight");
    weight_builder_add(l, 0, W_SCALE, 1, V(e), "patch_embed.proj.bias");
    weight_builder_norm(l, e, "patch_embed.norm");
    int grid = c->image_size / c->patch_size;
    for (int s = 0; s < c->n_stages; s++) {
        const int d = e << s, win = grid <= c->window ? grid : c->window, hidden = (int)(d * c->mlp_ratio);
        char p[96];
        for (int k = 0; k < c->depths[s]; k++) {
            snprintf(p, sizeof p, "layers.%d.blocks.%d.", s, k);
            weight_builder_norm(l, d, "%snorm1", p);
            weight_builder_add(l, 0, W_SCALE, 2, V((2 * win - 1) * (2 * win - 1), c->heads[s]),
                               "%sattn.relative_position_bias_table", p);
            weight_builder_linear(l, 3 * d, d, 1, W_SCALE, "%sattn.qkv", p);
            weight_builder_linear(l, d, d, 1, W_SCALE, "%sattn.proj", p);
            weight_builder_norm(l, d, "%snorm2", p);
            weight_builder_linear(l, hidden, d, 1, W_SCALE, "%smlp.fc1", p);
            weight_builder_linear(l, d, hidden, 1, W_SCALE, "%smlp.fc2", p);
        }
        if (s < c->n_stages - 1) {
            snprintf(p, sizeof p, "layers.%d.downsample.", s);
            weight_builder_norm(l, 4 * d, "%snorm", p);
            weight_builder_linear(l, 2 * d, 4 * d, 0, W_SCALE, "%sreduction", p);
            grid /= 2;
        }
    }
    weight_builder_norm(l, e << (c->n_stages - 1), "norm");
    int rc = weight_builder_write(l, path, st);
    weight_builder_free(l);
    return rc;
}

/* FLOPs of one image: the linears (qkv, proj, fc1, fc2, merges, patch embedding) and the
 * window attention's two products. */
static double swin_flops(const swin_config *c) {
    double f = 2.0 * (c->image_size / c->patch_size) * (c->image_size / c->patch_size) * c->embed_dim * 3 *
               c->patch_size * c->patch_size;
    int grid = c->image_size / c->patch_size;
    for (int s = 0; s < c->n_stages; s++) {
        const double d = (double)(c->embed_dim << s), rows = (double)grid * grid, h = d * c->mlp_ratio;
        const double n = grid <= c->window ? rows : (double)c->window * c->window;
        f += c->depths[s] * (2.0 * rows * (4 * d * d + 2 * d * h) + 2.0 * 2 * rows * n * d);
        if (s < c->n_stages - 1) {
            f += 2.0 * (rows / 4) * (4 * d) * (2 * d);
            grid /= 2;
        }
    }
    return f;
}

int main(int argc, char **argv) {
    bench_options o = defaults, defaults_copy = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &o), dflt = ARGS_TABLE(bench_options_table, &defaults_copy);
    const int exit_code = bench_args("bench_swin", &table, &dflt, argc, argv);
    if (exit_code >= 0) return exit_code;
    lion_status st;
    const lion_precision p = o.precision;
    if (o.image % 96 || o.embed % 8) {
        fprintf(stderr, "bench_swin: --image must be a multiple of 96 and --embed-dim of 8\n");
        return 2;
    }
    const int h0 = o.embed / 32 > 0 ? o.embed / 32 : 1; /* 192 / 32 = RAM's 6 heads in stage 1 */
    swin_config c = {.image_size = o.image, .patch_size = 4, .embed_dim = o.embed, .n_stages = 4,
                     .heads = {h0, 2 * h0, 4 * h0, 8 * h0}, .window = 12, .mlp_ratio = 4.0f, .ln_eps = 1e-5f};
    const char *d = o.depths;
    for (int s = 0; s < 4; s++) {
        char *end;
        long v = strtol(d, &end, 10);
        if (end == d || v < 1 || v > 64 || (s < 3 && *end != ',') || (s == 3 && *end)) {
            fprintf(stderr, "bench_swin: --depths %s: expected four block counts 1..64, e.g. 2,2,18,2\n", o.depths);
            return 2;
        }
        c.depths[s] = (int)v;
        d = end + (s < 3);
    }
    threads_init(o.threads);

    char path[256];
    snprintf(path, sizeof path, "/tmp/bench_swin_%d.safetensors", (int)getpid());
    weights w;
    swin_model m;
    double t_load = bench_now();
    if (write_swin(path, &c, &st) || weights_open(&w, path, "", &st)) {
        fprintf(stderr, "bench_swin: %s\n", st.msg);
        unlink(path);
        return 1;
    }
    unlink(path); /* the mapping stays */
    if (swin_load(&m, &c, &w, "", p, &st)) {
        fprintf(stderr, "bench_swin: %s\n", st.msg);
        return 1;
    }
    t_load = bench_now() - t_load;

    const size_t npx = (size_t)3 * c.image_size * c.image_size;
    float *pixels = bench_alloc("bench_swin", npx * sizeof(float));
    for (size_t i = 0; i < npx; i++) pixels[i] = (float)((i * 2654435761u) % 4001) / 1000.0f - 2.0f;
    float *out = bench_alloc("bench_swin", (size_t)m.tokens * m.width * sizeof(float));
    arena a;
    arena_init(&a, 0);
    if (swin_forward(&m, pixels, 1, out, &a, &st)) { /* warm-up: page in, grow the arena */
        fprintf(stderr, "bench_swin: %s\n", st.msg);
        return 1;
    }
    double t = bench_now();
    for (int r = 0; r < o.iters; r++)
        if (swin_forward(&m, pixels, 1, out, &a, &st)) {
            fprintf(stderr, "bench_swin: %s\n", st.msg);
            return 1;
        }
    t = (bench_now() - t) / o.iters;
    const double flops = swin_flops(&c);
    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    printf("bench_swin: Swin-L %d/4 embed %d window 12, depths %d-%d-%d-%d, threads %d%s\n", c.image_size,
           c.embed_dim, c.depths[0], c.depths[1], c.depths[2], c.depths[3], threads_count(),
           c.image_size == 384 && c.embed_dim == 192 ? "" : " (NOT RAM's widths)");
    printf("  CPU            %s; isa %s, native bf16 %s; oneDNN isa %s\n", cpu, cpu_isa_name(),
           cpu_native_bf16() ? "yes" : "no", onednn_isa_name());
    printf("  precision      %s; matrices %s\n", precision_name(p), linear_form(swin_first_matrix(&m)));
    printf("  weights        %.1f MB matrices, %.1f MB other f32 (write + load %.1f s)\n",
           swin_matrix_bytes(&m) / 1e6,
           (double)(w.bytes_f32 - (p == PRECISION_F32 ? swin_matrix_bytes(&m) : 0)) / 1e6, t_load);
    printf("  forward        %.3f s per image (%d iters)\n", t, o.iters);
    printf("  compute        %.1f GFLOP/s over %.1f GFLOP\n", flops / t / 1e9, flops / 1e9);
    printf("  arena peak     %.1f MB\n", a.peak / 1e6);
    arena_free(&a);
    swin_free(&m);
    weights_close(&w);
    free(pixels);
    free(out);
    return 0;
}

/* bench_matvec: the matrix-vector products of a FlanT5-XL decode step, f32 weights on OpenBLAS
 * against our kernels (common/nn/matvec_bf16.h) with f32 and bf16 weights.
 *
 *   bench_matvec [--threads N] [--rows LIST] [--reps R] [--min-ms MS] [--pool MB] [--floor-mb MB] [--isa NAME]
 *
 * Shapes (out x in, as nn.Linear holds W): 2048 x 2048 (self-attention q, k, v, o and
 * cross-attention q, o: 6 a layer), 5120 x 2048 (wi_0, wi_1), 2048 x 5120 (wo), 32128 x 2048
 * (lm_head); rows R = 1 (greedy) and 5 (5 beams) by default. For each:
 *   openblas  f32 W, cblas_sgemv for one row and cblas_sgemm for more, as linear_forward
 *             (common/nn/ops.c) does for the T5 decoder today;
 *   ours f32  matvec_f32, f32 W;
 *   ours bf16 matvec_bf16, bf16 W (half the bytes).
 * A decode step reads its weights from memory (24 layers are far beyond any cache), so each
 * product here cycles through copies of W that together exceed the caches (--pool MB of f32
 * copies, as many bf16 copies). The floor of a product is the bytes it reads (W, x, y) over
 * the memory bandwidth, measured in the same process with the same threads: a streaming read
 * of a --floor-mb MB buffer, 16 MiB at a time, each thread reading 4 streams at once. A ratio
 * to the floor of 1.0 is streaming-bound.
 *
 * Each figure is timed --reps times (each time: products until --min-ms have passed, the
 * mean kept), the floor and the three methods interleaved so that a busy neighbour slows them
 * alike; best and median are printed, the floor's best is the one used (the highest
 * bandwidth seen: the ratios are upper bounds). The end sums the products of one decode step
 * (24 layers + lm_head) for each method. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <omp.h>


#include "args.h"
#include "bench_util.h"
#include "matvec_bf16.h"
#include "tensor.h"
#include "threads.h"

/* OpenBLAS exports these; declared here as threads.c does, whatever cblas.h is installed. */
char *openblas_get_config(void);
char *openblas_get_corename(void);

#define MAX_ROWS 16
#define MAX_ROW_COUNTS 8
#define MAX_REPS 64



static void fill_random(float *p, size_t n, float scale, uint64_t *state) {
    uint64_t x = *state;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = scale * ((float)(x >> 40) / (float)(1 << 24) - 0.5f);
    }
    *state = x;
}


/* ------------------------------------------------------------------ the floor */


/* ------------------------------------------------------------------ products */

typedef struct shape {
    const char *name;
    int out, in;
    int per_step; /* how many such products one decode step runs: per layer, or once (lm_head) */
    int per_layer;
} shape;

static const shape shapes[] = {
    {"attn q k v o, cross q o", 2048, 2048, 6, 1},
    {"ff wi_0, wi_1", 5120, 2048, 2, 1},
    {"ff wo", 2048, 5120, 1, 1},
    {"lm_head", 32128, 2048, 1, 0},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))
#define DECODER_LAYERS 24

enum { M_BLAS, M_F32, M_BF16, N_METHODS };

typedef struct weights_pool {
    int copies;
    float **f32;
    uint16_t **bf16;
} weights_pool;

static matvec_isa chosen_isa = MATVEC_AUTO;

static void product(int method, float *y, const float *x, const weights_pool *p, int copy, int rows, int in,
                    int out) {
    switch (method) {
    case M_BLAS: /* what linear_forward does without a bias */
        if (rows == 1) cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, p->f32[copy], in, x, 1, 0.0f, y, 1);
        else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, p->f32[copy], in, 0.0f, y,
                         out);
        break;
    case M_F32:
        matvec_f32_isa(chosen_isa, y, x, p->f32[copy], NULL, rows, in, out);
        break;
    default:
        matvec_bf16_isa(chosen_isa, y, x, p->bf16[copy], NULL, rows, in, out);
        break;
    }
}

/* Seconds per product: products over successive copies of W until min_s have passed. */
static double time_products(int method, float *y, const float *x, const weights_pool *p, int rows, int in, int out,
                            double min_s, int *next_copy) {
    int count = 0;
    double t0 = bench_now(), t;
    do {
        product(method, y, x, p, *next_copy, rows, in, out);
        *next_copy = (*next_copy + 1) % p->copies;
        count++;
    } while ((t = bench_now() - t0) < min_s || count < 2);
    return t / count;
}


/* max |a - b| / max |b| */
static double rel_diff(const float *a, const float *b, size_t n) {
    double e = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > e) e = d;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? e / m : e;
}

/* ------------------------------------------------------------------ options */

typedef struct bench_options {
    int threads, reps;
    double min_ms;
    size_t pool_mb, floor_mb;
    const char *rows;
    matvec_isa isa;
} bench_options;

static int set_isa(const args_option *opt, void *base, const char *name, const char *text, lion_status *st) {
    matvec_isa *isa = args_field(opt, base);
    if (matvec_isa_from_name(text, isa) != 0)
        return lion_fail(st, LION_EINVAL, "%s: '%s' is not one of auto, scalar, avx2, avx512", name, text);
    return 0;
}

static const args_option bench_options_table[] = {
    {.name = "--threads", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, threads), .min = 1, .max = 1024,
     .help = "compute threads (OpenBLAS and OpenMP)", .deflt = "OpenMP's"},
    {.name = "--rows", .metavar = "LIST", .kind = ARG_STRING, ARGS_AT(bench_options, rows), .min = 1, .max = 64,
     .help = "rows of x (beams), comma-separated, each 1..16"},
    {.name = "--reps", .metavar = "R", .kind = ARG_INT, ARGS_AT(bench_options, reps), .min = 1, .max = MAX_REPS,
     .help = "timings of each figure (best and median printed)"},
    {.name = "--min-ms", .metavar = "MS", .kind = ARG_DOUBLE, ARGS_AT(bench_options, min_ms), .fmin = 1,
     .fmax = 60000, .help = "products per timing: at least this long"},
    {.name = "--pool", .metavar = "MB", .kind = ARG_SIZE, ARGS_AT(bench_options, pool_mb), .min = 1, .max = 65536,
     .help = "f32 copies of W cycled through, at least this many MB (beyond the caches)"},
    {.name = "--floor-mb", .metavar = "MB", .kind = ARG_SIZE, ARGS_AT(bench_options, floor_mb), .min = 64,
     .max = 65536, .help = "size of the streaming read that measures the bandwidth"},
    {.name = "--isa", .metavar = "NAME", .kind = ARG_CUSTOM, ARGS_AT(bench_options, isa), .set = set_isa,
     .help = "our kernels: auto, scalar, avx2, avx512", .deflt = "auto"},
};

static const bench_options defaults = {
    .reps = 9, .min_ms = 100, .pool_mb = 512, .floor_mb = 1024, .rows = "1,5", .isa = MATVEC_AUTO};

static void usage(FILE *out) {
    bench_options d = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &d);
    fprintf(out, "usage: bench_matvec [options]\n");
    args_usage(out, &table, 1);
}

static int parse_rows(const char *text, int *rows) {
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > MAX_ROWS || n == MAX_ROW_COUNTS || (*end && *end != ',')) return -1;
        rows[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return n;
}

/* ------------------------------------------------------------------ main */

typedef struct figure {
    double best, median; /* seconds per product */
} figure;

int main(int argc, char **argv) {
    bench_options o = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &o);
    args_parsed parsed;
    lion_status st;
    int rc = args_parse(&table, 1, 0, argc, argv, &parsed, &st);
    if (rc != 0) fprintf(stderr, "bench_matvec: %s\n", st.msg);
    int row_counts[MAX_ROW_COUNTS], n_rows = rc == 0 ? parse_rows(o.rows, row_counts) : 0;
    if (rc == 0 && n_rows <= 0) {
        fprintf(stderr, "bench_matvec: --rows: '%s' is not a comma-separated list of up to %d counts in [1, %d]\n",
                o.rows, MAX_ROW_COUNTS, MAX_ROWS);
        rc = -1;
    }
    if (rc != 0 || parsed.help) {
        usage(rc != 0 ? stderr : stdout);
        return rc != 0 ? 2 : 0;
    }
    if (!matvec_isa_supported(o.isa)) {
        fprintf(stderr, "bench_matvec: this CPU cannot run the %s kernel\n", matvec_isa_name(o.isa));
        return 1;
    }
    chosen_isa = o.isa == MATVEC_AUTO ? matvec_isa_best() : o.isa;

    /* the floor's buffer and the largest pool (f32 + bf16 copies) must fit in free memory */
    double pool_max = 0;
    for (int s = 0; s < N_SHAPES; s++) {
        double w = 4.0 * shapes[s].out * shapes[s].in, copies = ceil(o.pool_mb * 1048576.0 / w);
        if (copies * w * 1.5 > pool_max) pool_max = copies * w * 1.5;
    }
    double need = pool_max + o.floor_mb * 1048576.0;
    double avail = (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (need > 0.85 * avail) {
        fprintf(stderr, "bench_matvec: needs %.1f GB, %.1f GB is free; use a smaller --pool / --floor-mb\n",
                need / 1e9, avail / 1e9);
        return 1;
    }

    threads_init(o.threads);
    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    printf("bench_matvec: %s, %d threads\n", cpu, threads_count());
    if (chosen_isa == matvec_isa_best()) printf("  our kernel      %s\n", matvec_kernel_name());
    else printf("  our kernel      %s (forced; auto runs %s)\n", matvec_isa_name(chosen_isa), matvec_kernel_name());
    printf("  CPU has         avx2 %s, fma %s, avx512f %s, avx512bw %s, avx512_bf16 %s\n",
           __builtin_cpu_supports("avx2") ? "yes" : "no", __builtin_cpu_supports("fma") ? "yes" : "no",
           __builtin_cpu_supports("avx512f") ? "yes" : "no", __builtin_cpu_supports("avx512bw") ? "yes" : "no",
           __builtin_cpu_supports("avx512bf16") ? "yes" : "no");
    printf("  OpenBLAS        %s (core %s)\n", openblas_get_config(), openblas_get_corename());
    printf("  timing          best and median of %d, each >= %.0f ms of products; W cycled over >= %zu MB\n", o.reps,
           o.min_ms, o.pool_mb);
    fflush(stdout);

    stream_buffer sb;
    stream_init(&sb, o.floor_mb);
    double floors[N_SHAPES * MAX_ROW_COUNTS * MAX_REPS];
    int n_floors = 0;

    static const char *const method_names[N_METHODS] = {"openblas f32", "ours f32", "ours bf16"};
    figure fig[N_SHAPES][MAX_ROW_COUNTS][N_METHODS];
    double diff_f32[N_SHAPES][MAX_ROW_COUNTS], diff_bf16[N_SHAPES][MAX_ROW_COUNTS];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    float *x = bench_alloc("bench_matvec", (size_t)MAX_ROWS * 5120 * sizeof(float));
    fill_random(x, (size_t)MAX_ROWS * 5120, 2.0f, &seed);

    for (int s = 0; s < N_SHAPES; s++) {
        const int out = shapes[s].out, in = shapes[s].in;
        const size_t nw = (size_t)out * in;
        weights_pool p;
        p.copies = (int)ceil(o.pool_mb * 1048576.0 / (4.0 * nw));
        if (p.copies < 1) p.copies = 1;
        p.f32 = malloc(p.copies * sizeof *p.f32);
        p.bf16 = malloc(p.copies * sizeof *p.bf16);
        if (!p.f32 || !p.bf16) return 1;
        for (int c = 0; c < p.copies; c++) {
            p.f32[c] = bench_alloc("bench_matvec", nw * sizeof(float));
            p.bf16[c] = bench_alloc("bench_matvec", nw * sizeof(uint16_t));
            if (c == 0) {
                fill_random(p.f32[0], nw, 0.05f, &seed);
                convert_from_f32(p.bf16[0], DTYPE_BF16, p.f32[0], nw, &st);
            } else {
                memcpy(p.f32[c], p.f32[0], nw * sizeof(float));
                memcpy(p.bf16[c], p.bf16[0], nw * sizeof(uint16_t));
            }
        }
        float *y[N_METHODS];
        for (int m = 0; m < N_METHODS; m++) y[m] = bench_alloc("bench_matvec", (size_t)MAX_ROWS * out * sizeof(float));
        for (int ri = 0; ri < n_rows; ri++) {
            const int rows = row_counts[ri];
            for (int m = 0; m < N_METHODS; m++) product(m, y[m], x, &p, 0, rows, in, out); /* warm up, check */
            diff_f32[s][ri] = rel_diff(y[M_F32], y[M_BLAS], (size_t)rows * out);
            diff_bf16[s][ri] = rel_diff(y[M_BF16], y[M_BLAS], (size_t)rows * out);
            double t[N_METHODS][MAX_REPS];
            int next_copy = 0;
            for (int r = 0; r < o.reps; r++) { /* interleaved: the floor and the three methods */
                floors[n_floors++] = time_stream(&sb, o.min_ms / 1e3);
                for (int m = 0; m < N_METHODS; m++)
                    t[m][r] = time_products(m, y[m], x, &p, rows, in, out, o.min_ms / 1e3, &next_copy);
            }
            for (int m = 0; m < N_METHODS; m++) {
                bench_sort(t[m], o.reps);
                fig[s][ri][m] = (figure){t[m][0], t[m][o.reps / 2]};
            }
        }
        for (int m = 0; m < N_METHODS; m++) free(y[m]);
        for (int c = 0; c < p.copies; c++) {
            free(p.f32[c]);
            free(p.bf16[c]);
        }
        free(p.f32);
        free(p.bf16);
        printf("  measured        %s (%d copies of W)\n", shapes[s].name, p.copies);
        fflush(stdout);
    }
    free(x);
    stream_free(&sb);
    bench_sort(floors, n_floors);
    const double bw = floors[n_floors - 1] * 1e9;
    printf("  memory floor    streaming read of a %zu MB buffer, %d threads, timed with the products: %.1f GB/s best, "
           "%.1f median, %.1f worst (the best is used)\n\n",
           o.floor_mb, threads_count(), bw / 1e9, floors[n_floors / 2], floors[0]);

    printf("| shape (out x in) | R | method | best ms | median ms | GB/s | floor ms | ratio to floor | speedup over "
           "openblas |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int s = 0; s < N_SHAPES; s++)
        for (int ri = 0; ri < n_rows; ri++) {
            const int rows = row_counts[ri];
            for (int m = 0; m < N_METHODS; m++) {
                const double wbytes = (double)shapes[s].out * shapes[s].in * (m == M_BF16 ? 2 : 4);
                const double bytes = wbytes + 4.0 * rows * (shapes[s].in + shapes[s].out);
                const figure *f = &fig[s][ri][m], *blas = &fig[s][ri][M_BLAS];
                char speed[64] = "";
                if (m != M_BLAS)
                    snprintf(speed, sizeof speed, "%.2fx (median %.2fx)", blas->best / f->best,
                             blas->median / f->median);
                char label[96];
                snprintf(label, sizeof label, "%s%s", method_names[m],
                         m == M_BLAS ? (rows == 1 ? " (sgemv)" : " (sgemm)") : "");
                printf("| %s %d x %d | %d | %s | %.3f | %.3f | %.1f | %.3f | %.2f | %s |\n", shapes[s].name,
                       shapes[s].out, shapes[s].in, rows, label, f->best * 1e3, f->median * 1e3, bytes / f->best / 1e9,
                       bytes / bw * 1e3, f->best / (bytes / bw), speed);
            }
        }
    printf("\n  results vs openblas (max |diff| / max |y|; bf16 differs by its weights' rounding):\n");
    for (int s = 0; s < N_SHAPES; s++)
        for (int ri = 0; ri < n_rows; ri++)
            printf("    %-24s R=%-2d ours f32 %.1e, ours bf16 %.1e\n", shapes[s].name, row_counts[ri], diff_f32[s][ri],
                   diff_bf16[s][ri]);
    printf("\n  one decode step's products (%d layers x (6 attn + 2 wi + wo) + lm_head), sums of best (median):\n",
           DECODER_LAYERS);
    for (int ri = 0; ri < n_rows; ri++) {
        double best[N_METHODS] = {0}, median[N_METHODS] = {0}, bytes[N_METHODS] = {0};
        for (int m = 0; m < N_METHODS; m++)
            for (int s = 0; s < N_SHAPES; s++) {
                double n = shapes[s].per_step * (shapes[s].per_layer ? DECODER_LAYERS : 1);
                best[m] += n * fig[s][ri][m].best;
                median[m] += n * fig[s][ri][m].median;
                bytes[m] += n * (double)shapes[s].out * shapes[s].in * (m == M_BF16 ? 2 : 4);
            }
        printf("    R=%-2d openblas %.0f (%.0f) ms, ours f32 %.0f (%.0f) ms, ours bf16 %.0f (%.0f) ms; floor f32 %.0f ms, "
               "bf16 %.0f ms; bf16 saves %.0f ms a step, %.2fx (median %.2fx)\n",
               row_counts[ri], best[M_BLAS] * 1e3, median[M_BLAS] * 1e3, best[M_F32] * 1e3, median[M_F32] * 1e3,
               best[M_BF16] * 1e3, median[M_BF16] * 1e3, bytes[M_F32] / bw * 1e3, bytes[M_BF16] / bw * 1e3,
               (best[M_BLAS] - best[M_BF16]) * 1e3, best[M_BLAS] / best[M_BF16], median[M_BLAS] / median[M_BF16]);
    }
    return 0;
}

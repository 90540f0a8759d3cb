/* bench_t5: FlanT5-XL with LION's adapters at true size (d_model 2048, d_ff 5120, 32 heads
 * of 64, 24 + 24 layers, vocab 32128, 2 adapters of 64) on random f32 weights in memory:
 * the encoder over LION's 289 visual + 40 text tokens, and one decoder step, greedy
 * (batch 1) and beam search (5 beams, cache reordered every step).
 *
 *   bench_t5 [--threads N] [--layers L] [--steps S] [--tokens T] [--beams LIST] [--reps R]
 *            [--precision f32|bf16] [--bandwidth GBS] [--floor-mb MB] [--encoder-iters K]
 *            [--d-model D] [--d-ff F] [--heads H] [--vocab V]
 *
 * The encoder is timed on one cold pass, or with --encoder-iters K as the median of K passes
 * after a warm-up pass (what a comparison with another library's warmed-up forward needs).
 * --d-model, --d-ff, --heads (of 64) and --vocab shrink the widths: only for quick runs of the
 * tools that drive this bench (tools/bench/compare_torch.py --tiny), not a LION figure.
 *
 * All 24 + 24 layers need about 11.4 GB; --layers L builds L + L (the figures per step then
 * cover that many layers). A decoder step at batch 1 is a chain of matrix-vector products:
 * it must read every decoder weight it uses plus the lm_head once, so its floor is those
 * bytes over the memory bandwidth. The bandwidth is measured in the same process with the
 * same threads, as bench_matvec does (a streaming read of a --floor-mb MB buffer, 4 streams
 * per thread, interleaved with the steps; the best seen is used, so ratios are upper
 * bounds), unless --bandwidth gives it. The ratio printed is the step time over that floor
 * (1.0 = streaming-bound).
 *
 * Each beam count (--beams, default 1,5) is timed as
 *   f32 openblas   f32 weights, products on OpenBLAS (sgemv for 1 row, sgemm for more);
 *   f32 matvec     f32 weights, 2..16-row products on matvec_f32 (1 row: as above);
 *   bf16           with --precision bf16: every matrix in bf16 only (t5_to_bf16, as
 *                  lion-llm --precision bf16 holds them; services/llm/t5.h), the step's
 *                  products on matvec_bf16;
 * --reps times each, all interleaved (a busy neighbour slows them alike); best and median
 * printed. With --precision bf16 the encoder is timed in both precisions (its bf16 products
 * on widened panels + sgemm, or oneDNN where bf16 is native), and the end gives the RSS of
 * the weights in both modes: after filling (all f32) and after the f32 matrices are freed
 * (bf16).
 *
 *   bench_t5 --model DIR [--precision f32|bf16] [--threads N] [--beams LIST] ...
 *
 * instead loads a model directory's llm as lion-llm does (llm_stage_open_with: the file
 * mapped, f32 tensors used in place, in bf16 every matrix converted or used in place and
 * the f32 pages released) and times that model in that one precision (the f32 openblas
 * mode is skipped with bf16), with the process's RSS after loading and after the first steps
 * (every weight page touched): the RSS of an llm worker's weights. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "bench_util.h"
#include "cpu_features.h"
#include "linear.h"
#include "llm_stage.h"
#include "matvec_bf16.h"
#include "onednn_matmul.h"
#include "t5.h"
#include "threads.h"

#define MAX_BEAM_COUNTS 8
#define MAX_BEAMS 16 /* rows of a timed step: matvec's design range */
#define MAX_REPS 32

/* An f32 linear over a new random array (the bench owns the array: free_matrices). */
static void random_linear(linear *l, int out, int in, int flags, uint64_t *s) {
    lion_status st;
    if (linear_from_f32(l, bench_random_floats((size_t)out * in, 0.05f, s), out, in, PRECISION_F32, flags, &st)) {
        fprintf(stderr, "bench_t5: %s\n", st.msg);
        exit(1);
    }
}

/* qo: the flags of q and o, kv: of k and v (LINEAR_STEP for the decoder step's). */
static void random_attention(t5_attention *at, int d, int inner, int qo, int kv, uint64_t *s) {
    at->norm = bench_constant_floats((size_t)d, 1.0f);
    random_linear(&at->q, inner, d, qo, s);
    random_linear(&at->k, inner, d, kv, s);
    random_linear(&at->v, inner, d, kv, s);
    random_linear(&at->o, d, inner, qo, s);
}

static void random_ff(t5_ff *ff, const t5_config *c, int flags, uint64_t *s) {
    size_t d = c->d_model, bn = c->adapter_bottleneck;
    ff->norm = bench_constant_floats(d, 1.0f);
    random_linear(&ff->wi_0, c->d_ff, c->d_model, flags, s);
    random_linear(&ff->wi_1, c->d_ff, c->d_model, flags, s);
    random_linear(&ff->wo, c->d_model, c->d_ff, flags, s);
    for (int k = 0; k < c->adapters; k++) {
        t5_adapter *ad = &ff->adapters[k];
        ad->scale = bench_constant_floats(1, 0.1f);
        ad->down_w = bench_random_floats(bn * d, 0.05f, s);
        ad->down_b = bench_constant_floats(bn, 0.0f);
        ad->up_w = bench_random_floats(d * bn, 0.05f, s);
        ad->up_b = bench_constant_floats(d, 0.0f);
    }
    ff->router_ratio1 = bench_constant_floats(2 * d, 0.5f);
    ff->router_ratio2 = bench_constant_floats(2 * d, 0.5f);
}

static void random_stack(t5_stack *st, const t5_config *c, int layers, int decoder, uint64_t *s) {
    const int inner = c->heads * c->d_kv, step = decoder ? LINEAR_STEP : 0;
    st->n_layers = layers;
    st->layers = calloc((size_t)layers, sizeof *st->layers);
    if (!st->layers) exit(1);
    for (int i = 0; i < layers; i++) {
        random_attention(&st->layers[i].self, c->d_model, inner, step, step, s);
        if (decoder) random_attention(&st->layers[i].cross, c->d_model, inner, LINEAR_STEP, 0, s);
        random_ff(&st->layers[i].ff, c, step, s);
    }
    st->rel_bias = bench_random_floats((size_t)c->rel_buckets * c->heads, 1.0f, s);
    st->final_norm = bench_constant_floats(c->d_model, 1.0f);
}

/* Weights one decoder step reads, in elements: the matrices that go bf16 with --precision
 * bf16 (per layer the self-attention q, k, v, o, the cross-attention q and o (its keys and
 * values were projected once from the encoder output), the FF; then the lm_head), and the
 * rest, f32 in both modes (adapters, norms). */
static double step_matrix_elems(const t5_config *c) {
    double d = c->d_model, inner = (double)c->heads * c->d_kv, f = c->d_ff;
    return c->decoder_layers * (6 * d * inner + 3 * d * f) + (double)c->vocab_size * d;
}

static double step_other_elems(const t5_config *c) {
    double d = c->d_model, bn = c->adapter_bottleneck;
    double adapters = c->adapters * (2 * d * bn + bn + d + 1) + (c->adapters > 1 ? 4 * d : 0);
    return c->decoder_layers * (adapters + 3 * d) + d;
}

/* Elements of every matrix of the model (what bf16 holds in half the bytes). */
static double matrix_elems(const t5_config *c) {
    double d = c->d_model, inner = (double)c->heads * c->d_kv, f = c->d_ff;
    return c->encoder_layers * (4 * d * inner + 3 * d * f) + c->decoder_layers * (8 * d * inner + 3 * d * f) +
           (double)c->vocab_size * d;
}

/* Frees the bench's f32 arrays under the matrices of a model made by random_stack (the models
 * converted from it keep their own bf16 copies). */
static void free_matrices(t5_model *m) {
    for (int s = 0; s < 2; s++) {
        t5_stack *st = s ? &m->decoder : &m->encoder;
        for (int i = 0; i < st->n_layers; i++) {
            t5_layer *l = &st->layers[i];
            linear *all[] = {&l->self.q, &l->self.k, &l->self.v, &l->self.o, &l->cross.q, &l->cross.k,
                             &l->cross.v, &l->cross.o, &l->ff.wi_0, &l->ff.wi_1, &l->ff.wo};
            for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) free((void *)all[k]->w), all[k]->w = NULL;
        }
    }
    free((void *)m->lm_head.w), m->lm_head.w = NULL;
}

/* Elements of every weight of the model (what "the llm's weights" are). */
static double model_elems(const t5_config *c) {
    double d = c->d_model, inner = (double)c->heads * c->d_kv, f = c->d_ff, bn = c->adapter_bottleneck;
    double ff = 3 * d * f + d + c->adapters * (2 * d * bn + bn + d + 1) + (c->adapters > 1 ? 4 * d : 0);
    double enc = c->encoder_layers * (4 * d * inner + d + ff), dec = c->decoder_layers * (8 * d * inner + 2 * d + ff);
    return enc + dec + 2.0 * c->rel_buckets * c->heads + 2 * d + 2.0 * c->vocab_size * d;
}

/* ------------------------------------------------------------------ the floor (as bench_matvec) */

/* ------------------------------------------------------------------ steps */

/* Seconds per step of `steps` decoder steps for one request with `beams` rows (after one
 * warm-up step), with the cache reordered every step as beam search does. */
static double time_steps(const t5_model *m, const float *enc, int enc_len, int beams, int steps, arena *a) {
    lion_status st;
    t5_decoder dec;
    if (t5_decoder_init(&dec, m, enc, NULL, 1, enc_len, beams, steps + 1, 1, &st)) {
        fprintf(stderr, "bench_t5: %s\n", st.msg);
        exit(1);
    }
    int32_t tokens[MAX_BEAMS];
    int src[MAX_BEAMS];
    for (int r = 0; r < beams; r++) tokens[r] = 0;
    float *logits = bench_alloc("bench_t5", (size_t)beams * m->cfg.vocab_size * sizeof(float));
    double t = 0;
    for (int s = 0; s <= steps; s++) {
        double t0 = bench_now();
        if (t5_decoder_step(m, &dec, tokens, logits, a, &st)) {
            fprintf(stderr, "bench_t5: %s\n", st.msg);
            exit(1);
        }
        if (beams > 1) {
            for (int r = 0; r < beams; r++) src[r] = (r + s) % beams; /* a real permutation: rows move */
            if (t5_decoder_reorder(&dec, src, a, &st)) {
                fprintf(stderr, "bench_t5: %s\n", st.msg);
                exit(1);
            }
        }
        if (s > 0) t += bench_now() - t0;
        arena_reset(a);
        for (int r = 0; r < beams; r++) tokens[r] = 3 + (s * 7 + r * 13) % 1000;
    }
    free(logits);
    t5_decoder_free(&dec);
    return t / steps;
}

/* Max |a - b| / max |b|. */
static double rel_diff(const float *a, const float *b, size_t n) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]), v = fabs((double)b[i]);
        if (e > diff) diff = e;
        if (v > scale) scale = v;
    }
    return scale > 0 ? diff / scale : diff;
}

/* Max |a - b| / max |b| of one step's logits: how far a mode's step is from f32 OpenBLAS. */
static double step_diff(const t5_model *ma, const t5_model *mb, const float *enc, int enc_len, int beams, arena *a) {
    lion_status st;
    t5_decoder da, db;
    const size_t n = (size_t)beams * ma->cfg.vocab_size;
    float *la = bench_alloc("bench_t5", n * sizeof(float)), *lb = bench_alloc("bench_t5", n * sizeof(float));
    int32_t tokens[MAX_BEAMS];
    for (int r = 0; r < beams; r++) tokens[r] = 3 + r * 13;
    if (t5_decoder_init(&da, ma, enc, NULL, 1, enc_len, beams, 1, 1, &st) ||
        t5_decoder_init(&db, mb, enc, NULL, 1, enc_len, beams, 1, 1, &st) ||
        t5_decoder_step(ma, &da, tokens, la, a, &st) || t5_decoder_step(mb, &db, tokens, lb, a, &st)) {
        fprintf(stderr, "bench_t5: %s\n", st.msg);
        exit(1);
    }
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double e = la[i] - lb[i];
        if (e < 0) e = -e;
        if (e > diff) diff = e;
        double v = lb[i] < 0 ? -lb[i] : lb[i];
        if (v > scale) scale = v;
    }
    free(la), free(lb);
    t5_decoder_free(&da), t5_decoder_free(&db);
    arena_reset(a);
    return scale > 0 ? diff / scale : diff;
}

/* ------------------------------------------------------------------ process */

static double rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atof(line + 6);
    fclose(f);
    return kb * 1024;
}

/* ------------------------------------------------------------------ options */

typedef struct bench_options {
    int threads, layers, steps, tokens, reps, encoder_iters;
    int d_model, d_ff, heads, vocab;
    double bandwidth;
    size_t floor_mb;
    const char *beams;
    const char *model;
    const char *modes;
    lion_precision precision;
} bench_options;

static const args_option bench_options_table[] = {
    {.name = "--threads", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, threads), .min = 1, .max = 1024,
     .help = "compute threads", .deflt = "OpenMP's"},
    {.name = "--layers", .metavar = "L", .kind = ARG_INT, ARGS_AT(bench_options, layers), .min = 1, .max = 24,
     .help = "encoder and decoder layers each (FlanT5-XL: 24)"},
    {.name = "--steps", .metavar = "S", .kind = ARG_INT, ARGS_AT(bench_options, steps), .min = 1, .max = 100000,
     .help = "timed decoder steps per timing"},
    {.name = "--tokens", .metavar = "T", .kind = ARG_INT, ARGS_AT(bench_options, tokens), .min = 1, .max = 4096,
     .help = "text tokens after LION's 289 visual ones"},
    {.name = "--beams", .metavar = "LIST", .kind = ARG_STRING, ARGS_AT(bench_options, beams), .min = 1, .max = 64,
     .help = "rows of the decoder steps timed, comma-separated, each 1..16"},
    {.name = "--reps", .metavar = "R", .kind = ARG_INT, ARGS_AT(bench_options, reps), .min = 1, .max = MAX_REPS,
     .help = "timings of each figure (interleaved); best and median printed"},
    {.name = "--precision", .metavar = "f32|bf16", .kind = ARG_CUSTOM, .set = bench_set_precision,
     ARGS_AT(bench_options, precision), .deflt = "f32",
     .help = "bf16: also time the encoder and the decoder step with every matrix in bf16, and give the RSS of both"},
    {.name = "--bandwidth", .metavar = "GBS", .kind = ARG_DOUBLE, ARGS_AT(bench_options, bandwidth), .fmin = 0.1,
     .fmax = 100000, .help = "memory bandwidth in GB/s for the floor", .deflt = "measured"},
    {.name = "--modes", .metavar = "LIST", .kind = ARG_STRING, ARGS_AT(bench_options, modes), .min = 1, .max = 64,
     .help = "the modes timed, of openblas,matvec,bf16 (bf16 needs --precision bf16): e.g. bf16 alone under perf",
     .deflt = "all"},
    {.name = "--model", .metavar = "DIR", .kind = ARG_STRING, ARGS_AT(bench_options, model),
     .help = "time this model directory's llm, loaded as lion-llm loads it, instead of random XL weights"},
    {.name = "--floor-mb", .metavar = "MB", .kind = ARG_SIZE, ARGS_AT(bench_options, floor_mb), .min = 64,
     .max = 65536, .help = "size of the streaming read that measures the bandwidth"},
    {.name = "--encoder-iters", .metavar = "K", .kind = ARG_INT, ARGS_AT(bench_options, encoder_iters), .min = 1,
     .max = 100, .help = "encoder passes timed after a warm-up pass, median printed", .deflt = "one cold pass"},
    {.name = "--d-model", .metavar = "D", .kind = ARG_INT, ARGS_AT(bench_options, d_model), .min = 16, .max = 16384,
     .help = "model width (FlanT5-XL: 2048)"},
    {.name = "--d-ff", .metavar = "F", .kind = ARG_INT, ARGS_AT(bench_options, d_ff), .min = 16, .max = 65536,
     .help = "gated FF width (FlanT5-XL: 5120)"},
    {.name = "--heads", .metavar = "H", .kind = ARG_INT, ARGS_AT(bench_options, heads), .min = 1, .max = 256,
     .help = "attention heads of 64 (FlanT5-XL: 32)"},
    {.name = "--vocab", .metavar = "V", .kind = ARG_INT, ARGS_AT(bench_options, vocab), .min = 16, .max = 1 << 20,
     .help = "vocabulary (FlanT5-XL: 32128)"},
};

static const bench_options defaults = {.layers = 24, .steps = 8, .tokens = 40, .reps = 3, .floor_mb = 1024,
                                       .beams = "1,5", .precision = PRECISION_F32,
                                       .d_model = 2048, .d_ff = 5120, .heads = 32, .vocab = 32128};

static int parse_beams(const char *text, int *out) {
    int n = 0;
    for (const char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > MAX_BEAMS || n == MAX_BEAM_COUNTS) return -1;
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

enum { MODE_BLAS, MODE_MATVEC, MODE_BF16, N_MODES };
static const char *const mode_names[N_MODES] = {"f32 openblas", "f32 matvec_f32", "bf16 matvec_bf16"};

/* --model DIR: the llm of a model directory, loaded as lion-llm loads it, in one precision. */
static int bench_model(const bench_options *o, const int *beam_counts, int n_beams) {
    lion_status st;
    threads_init(o->threads);
    const double rss0 = rss_bytes();
    llm_stage s;
    double t0 = bench_now();
    if (llm_stage_open_with(&s, o->model, o->precision, &st)) {
        fprintf(stderr, "bench_t5: %s\n", st.msg);
        return 1;
    }
    const double t_load = bench_now() - t0, rss_load = rss_bytes() - rss0;
    t5_model *m = &s.t5;
    const t5_config c = m->cfg;
    const int bf16 = m->precision == PRECISION_BF16, enc_len = 289 + o->tokens;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    float *x = bench_random_floats((size_t)enc_len * c.d_model, 1.0f, &seed);
    float *enc = bench_alloc("bench_t5", (size_t)enc_len * c.d_model * sizeof(float));
    arena a;
    arena_init(&a, 0);
    t0 = bench_now();
    if (t5_encode(m, x, NULL, 1, enc_len, 1, enc, &a, &st)) {
        fprintf(stderr, "bench_t5: %s\n", st.msg);
        return 1;
    }
    const double t_enc = bench_now() - t0;
    arena_reset(&a);
    (void)time_steps(m, enc, enc_len, 1, 1, &a); /* every weight page touched once */
    const double rss_serving = rss_bytes() - rss0;
    const int mode = bf16 ? MODE_BF16 : MODE_MATVEC;
    stream_buffer sb = {0};
    if (o->bandwidth <= 0) stream_init(&sb, o->floor_mb);
    double floors[MAX_REPS * MAX_BEAM_COUNTS], t[N_MODES][MAX_BEAM_COUNTS][MAX_REPS];
    int n_floors = 0;
    for (int r = 0; r < o->reps; r++)
        for (int bi = 0; bi < n_beams; bi++) {
            if (o->bandwidth <= 0) floors[n_floors++] = time_stream(&sb, 0.1);
            t[mode][bi][r] = time_steps(m, enc, enc_len, beam_counts[bi], o->steps, &a);
            if (!bf16) { /* f32: OpenBLAS for every row count too */
                m->step_matvec_f32 = 0;
                t[MODE_BLAS][bi][r] = time_steps(m, enc, enc_len, beam_counts[bi], o->steps, &a);
                m->step_matvec_f32 = 1;
            }
        }
    double bw = o->bandwidth * 1e9;
    if (o->bandwidth <= 0) {
        bench_sort(floors, n_floors);
        bw = floors[n_floors - 1] * 1e9;
        stream_free(&sb);
    }
    const double matrices = step_matrix_elems(&c), others = step_other_elems(&c);
    const double step_bytes = bf16 ? 2.0 * matrices + 4.0 * others : 4.0 * (matrices + others);
    const double all_bf16 = 2.0 * (model_elems(&c) + (s.embedder.soft_prompt_hint ? c.d_model : 0));
    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    printf("bench_t5 --model %s: d_model %d, d_ff %d, %d + %d layers, vocab %d; precision %s; threads %d\n", o->model,
           c.d_model, c.d_ff, c.encoder_layers, c.decoder_layers, c.vocab_size, precision_name(o->precision),
           threads_count());
    t5_weight_bytes wb;
    t5_weight_bytes_of(m, &wb);
    printf("  CPU             %s; isa %s, native bf16 %s; oneDNN isa %s\n", cpu, cpu_isa_name(),
           cpu_native_bf16() ? "yes" : "no", onednn_isa_name());
    printf("  matrices        encoder %s, decoder step %s\n", linear_form(&m->encoder.layers[0].ff.wi_0),
           linear_form(&m->decoder.layers[0].ff.wi_0));
    printf("  loaded in %.2f s: f32 tensors %.3f GB (mapped or converted); matrices in their forms: encoder %.3f GB, "
           "cross k/v %.3f GB, decoder step %.3f GB (%.3f GB converted or packed, the rest used in place); %.3f GB "
           "of file pages released after conversion\n",
           t_load, s.w.bytes_f32 / 1e9, wb.encoder / 1e9, wb.cross_kv / 1e9, wb.step / 1e9, wb.owned / 1e9,
           wb.released / 1e9);
    printf("  encoder %d tokens %.3f s\n", enc_len, t_enc);
    printf("  RSS             after load %.3f GB; serving (every page touched) %.3f GB\n", rss_load / 1e9,
           rss_serving / 1e9);
    printf("  weights         f32 %.3f GB, all in bf16 %.3f GB: serving RSS / all-bf16 bytes = %.2f\n",
           2 * all_bf16 / 1e9, all_bf16 / 1e9, rss_serving / all_bf16);
    printf("  step reads      %.3f GB of weights; floor %.1f ms at %.1f GB/s (%s)\n\n", step_bytes / 1e9,
           step_bytes / bw * 1e3, bw / 1e9, o->bandwidth > 0 ? "given" : "best streaming read, interleaved");
    printf("| rows | mode | step best ms | median ms | GB/s of weights | ratio to floor |\n| --- | --- | --- | --- | --- | --- |\n");
    for (int bi = 0; bi < n_beams; bi++)
        for (int mo = 0; mo < N_MODES; mo++) {
            if (mo != mode && !(mo == MODE_BLAS && !bf16)) continue;
            bench_sort(t[mo][bi], o->reps);
            const double best = t[mo][bi][0], median = t[mo][bi][o->reps / 2];
            printf("| %d | %s | %.1f | %.1f | %.1f | %.2f |\n", beam_counts[bi],
                   mo == MODE_MATVEC && beam_counts[bi] == 1 ? "f32 (sgemv)" : mode_names[mo], best * 1e3,
                   median * 1e3, step_bytes / best / 1e9, best / (step_bytes / bw));
        }
    free(x), free(enc);
    arena_free(&a);
    llm_stage_close(&s);
    return 0;
}

int main(int argc, char **argv) {
    bench_options o = defaults, defaults_copy = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &o), dflt = ARGS_TABLE(bench_options_table, &defaults_copy);
    const int exit_code = bench_args("bench_t5", &table, &dflt, argc, argv);
    if (exit_code >= 0) return exit_code;
    lion_status st;
    int beam_counts[MAX_BEAM_COUNTS];
    const int n_beams = parse_beams(o.beams, beam_counts);
    if (n_beams <= 0) {
        fprintf(stderr, "bench_t5: --beams: '%s' is not a list of 1..%d\n", o.beams, MAX_BEAMS);
        return 2;
    }
    if (o.model) return bench_model(&o, beam_counts, n_beams);
    const int layers = o.layers, steps = o.steps, text_tokens = o.tokens, bf16 = o.precision == PRECISION_BF16;
    t5_config c = {o.d_model, o.d_ff, 64, o.heads, layers, layers, o.vocab, 32, 128, 1e-6f, ACT_GELU, 2, 64, 0};
    /* refuse rather than push a shared machine into swap or the OOM killer */
    const double weights_f32 = 4.0 * model_elems(&c), matrices = step_matrix_elems(&c), others = step_other_elems(&c);
    const double need = weights_f32 + (bf16 ? 2.0 * matrix_elems(&c) : 0) + (o.bandwidth > 0 ? 0 : o.floor_mb * 1048576.0);
    const double avail = (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (need > 0.85 * avail) {
        fprintf(stderr, "bench_t5: %d + %d layers need %.1f GB, %.1f GB is free; use fewer --layers\n", layers, layers,
                need / 1e9, avail / 1e9);
        return 1;
    }
    threads_init(o.threads);
    const double rss0 = rss_bytes();
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    t5_model m = {.cfg = c, .precision = PRECISION_F32};
    double t0 = bench_now();
    m.shared = bench_random_floats((size_t)c.vocab_size * c.d_model, 1.0f, &seed);
    random_linear(&m.lm_head, c.vocab_size, c.d_model, LINEAR_STEP, &seed);
    random_stack(&m.encoder, &c, layers, 0, &seed);
    random_stack(&m.decoder, &c, layers, 1, &seed);
    const double t_fill = bench_now() - t0, rss_f32 = rss_bytes() - rss0;

    /* the three models share every f32 array; the bf16 one has its own layer tables and bf16
     * copies of every matrix (t5_to_bf16) */
    t5_model mv = m, mb = m;
    mv.step_matvec_f32 = 1;
    if (bf16) {
        const size_t ne = (size_t)layers * sizeof(t5_layer);
        mb.encoder.layers = bench_alloc("bench_t5", ne);
        mb.decoder.layers = bench_alloc("bench_t5", ne);
        memcpy(mb.encoder.layers, m.encoder.layers, ne);
        memcpy(mb.decoder.layers, m.decoder.layers, ne);
        t0 = bench_now();
        if (t5_to_bf16(&mb, &st)) {
            fprintf(stderr, "bench_t5: %s\n", st.msg);
            return 1;
        }
        printf("bench_t5: every matrix converted to bf16 in %.1f s\n", bench_now() - t0);
    }

    const int enc_len = 289 + text_tokens;
    float *x = bench_random_floats((size_t)enc_len * c.d_model, 1.0f, &seed);
    float *enc = bench_alloc("bench_t5", (size_t)enc_len * c.d_model * sizeof(float));
    float *enc_b = bf16 ? bench_alloc("bench_t5", (size_t)enc_len * c.d_model * sizeof(float)) : NULL;
    arena a;
    arena_init(&a, 0);
    /* one cold pass, or a warm-up pass and the median of --encoder-iters passes; with bf16 the
     * two precisions alternate (a busy neighbour slows them alike) */
    double t_encs[2][101];
    const int enc_passes = o.encoder_iters > 0 ? 1 + o.encoder_iters : 1;
    for (int i = 0; i < enc_passes; i++)
        for (int p = 0; p < 1 + bf16; p++) {
            t0 = bench_now();
            if (t5_encode(p ? &mb : &m, x, NULL, 1, enc_len, 1, p ? enc_b : enc, &a, &st)) {
                fprintf(stderr, "bench_t5: %s\n", st.msg);
                return 1;
            }
            t_encs[p][i] = bench_now() - t0;
            arena_reset(&a);
        }
    const int timed = enc_passes > 1 ? enc_passes - 1 : 1;
    double t_enc[2] = {0, 0};
    for (int p = 0; p < 1 + bf16; p++) {
        bench_sort(t_encs[p] + enc_passes - timed, timed);
        t_enc[p] = t_encs[p][enc_passes - timed + timed / 2];
    }
    const double enc_diff = bf16 ? rel_diff(enc_b, enc, (size_t)enc_len * c.d_model) : 0;
    const double inner = (double)c.heads * c.d_kv;
    const double enc_flops = layers * (2.0 * enc_len * (4 * c.d_model * inner + 3.0 * c.d_model * c.d_ff) +
                                       4.0 * enc_len * (double)enc_len * inner);

    const t5_model *models[N_MODES] = {&m, &mv, bf16 ? &mb : NULL};
    static const char *const mode_words[N_MODES] = {"openblas", "matvec", "bf16"};
    for (int mo = 0; o.modes && mo < N_MODES; mo++)
        if (!strstr(o.modes, mode_words[mo])) models[mo] = NULL;
    double diffs[N_MODES][MAX_BEAM_COUNTS] = {{0}};
    for (int mo = MODE_MATVEC; mo < N_MODES; mo++)
        for (int bi = 0; models[mo] && bi < n_beams; bi++)
            diffs[mo][bi] = step_diff(models[mo], &m, enc, enc_len, beam_counts[bi], &a);

    stream_buffer sb = {0};
    if (o.bandwidth <= 0) stream_init(&sb, o.floor_mb);
    double floors[MAX_REPS * MAX_BEAM_COUNTS];
    int n_floors = 0;
    double t[N_MODES][MAX_BEAM_COUNTS][MAX_REPS];
    for (int r = 0; r < o.reps; r++)
        for (int bi = 0; bi < n_beams; bi++) {
            if (o.bandwidth <= 0) floors[n_floors++] = time_stream(&sb, 0.1);
            for (int mo = 0; mo < N_MODES; mo++) {
                if (!models[mo] || (mo == MODE_MATVEC && beam_counts[bi] == 1)) continue; /* 1 row: sgemv */
                t[mo][bi][r] = time_steps(models[mo], enc, enc_len, beam_counts[bi], steps, &a);
            }
        }
    double bw = o.bandwidth * 1e9, bw_median = bw, bw_worst = bw;
    if (o.bandwidth <= 0) {
        bench_sort(floors, n_floors);
        bw = floors[n_floors - 1] * 1e9, bw_median = floors[n_floors / 2] * 1e9, bw_worst = floors[0] * 1e9;
        stream_free(&sb);
    }

    /* the bf16 mode's RSS: the f32 matrices freed, as a bf16 llm worker never has them */
    double rss_bf16 = 0;
    if (bf16) {
        free_matrices(&m);
        rss_bf16 = rss_bytes() - rss0;
    }

    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    const double bytes_f32 = 4.0 * (matrices + others), bytes_bf16 = 2.0 * matrices + 4.0 * others;
    const double kv_bytes = 2.0 * layers * enc_len * inner * 4.0;
    printf("bench_t5: FlanT5-XL dims + 2 adapters, %d + %d layers, f32 weights %.2f GB (filled in %.1f s), threads %d\n",
           layers, layers, weights_f32 / 1e9, t_fill, threads_count());
    if (c.d_model != 2048 || c.d_ff != 5120 || c.heads != 32 || c.vocab_size != 32128)
        printf("  widths          d_model %d, d_ff %d, heads %d of 64, vocab %d (not FlanT5-XL's)\n", c.d_model, c.d_ff,
               c.heads, c.vocab_size);
    printf("  CPU             %s; isa %s, native bf16 %s; matvec kernel %s; oneDNN isa %s\n", cpu, cpu_isa_name(),
           cpu_native_bf16() ? "yes" : "no", matvec_kernel_name(), onednn_isa_name());
    if (bf16)
        printf("  bf16 matrices   encoder %s, decoder step %s\n", linear_form(&mb.encoder.layers[0].ff.wi_0),
               linear_form(&mb.decoder.layers[0].ff.wi_0));
    printf("  encoder %d tokens      f32 %.3f s  (%.1f GFLOP/s)%s\n", enc_len, t_enc[0], enc_flops / t_enc[0] / 1e9,
           o.encoder_iters > 0 ? "  median after a warm-up" : "");
    if (bf16)
        printf("  encoder %d tokens      bf16 %.3f s  (%.1f GFLOP/s, %.2fx f32's time); output vs f32 max rel diff "
               "%.1e\n",
               enc_len, t_enc[1], enc_flops / t_enc[1] / 1e9, t_enc[1] / t_enc[0], enc_diff);
    printf("  weights read per step   f32 %.3f GB; bf16 %.3f GB (%.3f GB bf16 matrices + %.4f GB f32 adapters, norms)\n",
           bytes_f32 / 1e9, bytes_bf16 / 1e9, 2.0 * matrices / 1e9, 4.0 * others / 1e9);
    printf("  also read per step      %.1f MB of cross-attention keys/values per request (f32, not in the floors)\n",
           kv_bytes / 1e6);
    if (o.bandwidth > 0) printf("  bandwidth               %.1f GB/s (given)\n", bw / 1e9);
    else
        printf("  bandwidth               %.1f GB/s best (median %.1f, worst %.1f) of %d streaming reads of %zu MB, "
               "interleaved; the best is used\n",
               bw / 1e9, bw_median / 1e9, bw_worst / 1e9, n_floors, o.floor_mb);
    printf("  floors                  f32 %.1f ms, bf16 %.1f ms\n", bytes_f32 / bw * 1e3, bytes_bf16 / bw * 1e3);
    printf("  timings                 %d steps each, best (median) of %d, interleaved\n\n", steps, o.reps);
    printf("| rows | mode | step best ms | median ms | GB/s of weights | floor ms | ratio to floor | vs f32 openblas | "
           "max rel diff of logits |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int bi = 0; bi < n_beams; bi++) {
        double blas_best = 0, blas_median = 0;
        for (int mo = 0; mo < N_MODES; mo++) {
            if (!models[mo] || (mo == MODE_MATVEC && beam_counts[bi] == 1)) continue;
            bench_sort(t[mo][bi], o.reps);
            const double best = t[mo][bi][0], median = t[mo][bi][o.reps / 2];
            const double bytes = mo == MODE_BF16 ? bytes_bf16 : bytes_f32;
            if (mo == MODE_BLAS) blas_best = best, blas_median = median;
            char vs[64] = "-", diff[32] = "-";
            if (mo != MODE_BLAS && blas_best > 0) {
                snprintf(vs, sizeof vs, "%.2fx (median %.2fx)", blas_best / best, blas_median / median);
            }
            if (mo != MODE_BLAS) snprintf(diff, sizeof diff, "%.1e", diffs[mo][bi]);
            printf("| %d | %s | %.1f | %.1f | %.1f | %.1f | %.2f | %s | %s |\n", beam_counts[bi], mode_names[mo],
                   best * 1e3, median * 1e3, bytes / best / 1e9, bytes / bw * 1e3, best / (bytes / bw), vs, diff);
        }
    }
    if (bf16) {
        const double all_bf16 = 2.0 * model_elems(&c);
        const double worker_bf16 = weights_f32 - 2.0 * matrix_elems(&c); /* what a bf16 llm worker holds */
        t5_weight_bytes wf, wb;
        t5_weight_bytes_of(&m, &wf);
        t5_weight_bytes_of(&mb, &wb);
        printf("\n  matrices (linear_bytes) f32 %.2f GB (encoder %.2f, cross k/v %.2f, step %.2f); bf16 %.2f GB "
               "(encoder %.2f, cross k/v %.2f, step %.2f)\n",
               (wf.encoder + wf.cross_kv + wf.step) / 1e9, wf.encoder / 1e9, wf.cross_kv / 1e9, wf.step / 1e9,
               (wb.encoder + wb.cross_kv + wb.step) / 1e9, wb.encoder / 1e9, wb.cross_kv / 1e9, wb.step / 1e9);
        printf("  weights RSS             f32 mode %.2f GB; bf16 mode %.2f GB (expected %.2f: every matrix bf16, "
               "the rest f32)\n",
               rss_f32 / 1e9, rss_bf16 / 1e9, worker_bf16 / 1e9);
        printf("  every weight in bf16    %.2f GB: bf16-mode RSS / that = %.2f (adapters, norms and embeddings are "
               "still f32)\n",
               all_bf16 / 1e9, rss_bf16 / all_bf16);
    }
    printf("  arena peak              %.1f MB\n", a.peak / 1e6);
    arena_free(&a);
    return 0;
}

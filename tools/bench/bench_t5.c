/* bench_t5: FlanT5-XL with LION's adapters at true size (d_model 2048, d_ff 5120, 32 heads
 * of 64, 24 + 24 layers, vocab 32128, 2 adapters of 64) on random f32 weights in memory:
 * the encoder over LION's 289 visual + 40 text tokens, and one decoder step, greedy
 * (batch 1) and beam search (5 beams, cache reordered every step).
 *
 *   bench_t5 [--threads N] [--layers L] [--steps S] [--tokens T] [--bandwidth GBS]
 *
 * All 24 + 24 layers need about 11.4 GB; --layers L builds L + L (the figures per step then
 * cover that many layers). A decoder step at batch 1 is a chain of matrix-vector products:
 * it must read every decoder weight it uses plus the lm_head once, so its floor is those
 * bytes over the memory bandwidth (24 GB/s unless --bandwidth says otherwise). The ratio
 * printed is the measured step time over that floor (1.0 = streaming-bound). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "t5.h"
#include "threads.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t total_bytes;

/* Uniform in [-scale/2, scale/2), from a xorshift: filling 11 GB with rand_r is too slow. */
static float *random_floats(size_t n, float scale, uint64_t *state) {
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_t5: out of memory after %.1f GB\n", total_bytes / 1e9);
        exit(1);
    }
    total_bytes += n * sizeof(float);
    uint64_t x = *state;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = scale * ((float)(x >> 40) / (float)(1 << 24) - 0.5f);
    }
    *state = x;
    return p;
}

static float *constant_floats(size_t n, float v) {
    float *p = malloc(n * sizeof(float));
    if (!p) exit(1);
    total_bytes += n * sizeof(float);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static void random_attention(t5_attention *at, size_t d, size_t inner, uint64_t *s) {
    at->norm = constant_floats(d, 1.0f);
    at->q = random_floats(inner * d, 0.05f, s);
    at->k = random_floats(inner * d, 0.05f, s);
    at->v = random_floats(inner * d, 0.05f, s);
    at->o = random_floats(d * inner, 0.05f, s);
}

static void random_ff(t5_ff *ff, const t5_config *c, uint64_t *s) {
    size_t d = c->d_model, f = c->d_ff, bn = c->adapter_bottleneck;
    ff->norm = constant_floats(d, 1.0f);
    ff->wi_0 = random_floats(f * d, 0.05f, s);
    ff->wi_1 = random_floats(f * d, 0.05f, s);
    ff->wo = random_floats(d * f, 0.05f, s);
    for (int k = 0; k < c->adapters; k++) {
        t5_adapter *ad = &ff->adapters[k];
        ad->scale = constant_floats(1, 0.1f);
        ad->down_w = random_floats(bn * d, 0.05f, s);
        ad->down_b = constant_floats(bn, 0.0f);
        ad->up_w = random_floats(d * bn, 0.05f, s);
        ad->up_b = constant_floats(d, 0.0f);
    }
    ff->router_ratio1 = constant_floats(2 * d, 0.5f);
    ff->router_ratio2 = constant_floats(2 * d, 0.5f);
}

static void random_stack(t5_stack *st, const t5_config *c, int layers, int decoder, uint64_t *s) {
    size_t inner = (size_t)c->heads * c->d_kv;
    st->n_layers = layers;
    st->layers = calloc((size_t)layers, sizeof *st->layers);
    for (int i = 0; i < layers; i++) {
        random_attention(&st->layers[i].self, c->d_model, inner, s);
        if (decoder) random_attention(&st->layers[i].cross, c->d_model, inner, s);
        random_ff(&st->layers[i].ff, c, s);
    }
    st->rel_bias = random_floats((size_t)c->rel_buckets * c->heads, 1.0f, s);
    st->final_norm = constant_floats(c->d_model, 1.0f);
}

/* f32 bytes one decoder step reads: per layer the self-attention q, k, v, o, the
 * cross-attention q and o (its keys and values were projected once from the encoder
 * output), the FF and adapters, the norms; then the lm_head. */
static double step_weight_bytes(const t5_config *c) {
    double d = c->d_model, inner = (double)c->heads * c->d_kv, f = c->d_ff, bn = c->adapter_bottleneck;
    double adapters = c->adapters * (2 * d * bn + bn + d + 1) + (c->adapters > 1 ? 4 * d : 0);
    double layer = 6 * d * inner + 3 * d * f + adapters + 3 * d;
    return 4.0 * (c->decoder_layers * layer + d + (double)c->vocab_size * d);
}

/* Seconds per step of `steps` decoder steps for one request with `beams` rows (after one
 * warm-up step), with the cache reordered every step as beam search does. */
static double time_steps(const t5_model *m, const float *enc, int enc_len, int beams, int steps, arena *a) {
    lion_status st;
    t5_decoder dec;
    if (t5_decoder_init(&dec, m, enc, NULL, 1, enc_len, beams, steps + 1, 1, &st)) {
        fprintf(stderr, "bench_t5: %s\n", st.msg);
        exit(1);
    }
    int32_t tokens[16] = {0};
    int src[16];
    float *logits = malloc((size_t)beams * m->cfg.vocab_size * sizeof(float));
    double t = 0;
    for (int s = 0; s <= steps; s++) {
        double t0 = now();
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
        if (s > 0) t += now() - t0;
        arena_reset(a);
        for (int r = 0; r < beams; r++) tokens[r] = 3 + (s * 7 + r * 13) % 1000;
    }
    free(logits);
    t5_decoder_free(&dec);
    return t / steps;
}

typedef struct bench_options {
    int threads, layers, steps, tokens;
    double bandwidth;
} bench_options;

static const args_option bench_options_table[] = {
    {.name = "--threads", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, threads), .min = 1, .max = 1024,
     .help = "compute threads", .deflt = "OpenMP's"},
    {.name = "--layers", .metavar = "L", .kind = ARG_INT, ARGS_AT(bench_options, layers), .min = 1, .max = 24,
     .help = "encoder and decoder layers each (FlanT5-XL: 24)"},
    {.name = "--steps", .metavar = "S", .kind = ARG_INT, ARGS_AT(bench_options, steps), .min = 1, .max = 100000,
     .help = "timed decoder steps"},
    {.name = "--tokens", .metavar = "T", .kind = ARG_INT, ARGS_AT(bench_options, tokens), .min = 1, .max = 4096,
     .help = "text tokens after LION's 289 visual ones"},
    {.name = "--bandwidth", .metavar = "GBS", .kind = ARG_DOUBLE, ARGS_AT(bench_options, bandwidth), .fmin = 0.1,
     .fmax = 100000, .help = "memory bandwidth in GB/s, for the streaming floor"},
};

static const bench_options defaults = {.layers = 24, .steps = 8, .tokens = 40, .bandwidth = 24.0};

static void usage(FILE *out) {
    bench_options d = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &d);
    fprintf(out, "usage: bench_t5 [options]\n");
    args_usage(out, &table, 1);
}

int main(int argc, char **argv) {
    bench_options o = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &o);
    args_parsed parsed;
    lion_status st;
    int rc = args_parse(&table, 1, 0, argc, argv, &parsed, &st);
    if (rc != 0) fprintf(stderr, "bench_t5: %s\n", st.msg);
    if (rc != 0 || parsed.help) {
        usage(rc != 0 ? stderr : stdout);
        return rc != 0 ? 2 : 0;
    }
    int threads = o.threads, layers = o.layers, steps = o.steps, text_tokens = o.tokens;
    double bandwidth = o.bandwidth;
    t5_config c = {2048, 5120, 64, 32, layers, layers, 32128, 32, 128, 1e-6f, ACT_GELU, 2, 64, 0};
    /* refuse rather than push a shared machine into swap or the OOM killer */
    double need = 4.0 * ((double)c.vocab_size * c.d_model * 2 +
                         layers * (10.0 * c.d_model * c.d_model + 6.0 * c.d_model * c.d_ff));
    double avail = (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (need > 0.85 * avail) {
        fprintf(stderr, "bench_t5: %d + %d layers need %.1f GB, %.1f GB is free; use fewer --layers\n", layers, layers,
                need / 1e9, avail / 1e9);
        return 1;
    }
    threads_init(threads);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    t5_model m = {.cfg = c};
    double t0 = now();
    m.shared = random_floats((size_t)c.vocab_size * c.d_model, 1.0f, &seed);
    m.lm_head = random_floats((size_t)c.vocab_size * c.d_model, 0.05f, &seed);
    random_stack(&m.encoder, &c, layers, 0, &seed);
    random_stack(&m.decoder, &c, layers, 1, &seed);
    double t_fill = now() - t0;

    const int enc_len = 289 + text_tokens;
    float *x = random_floats((size_t)enc_len * c.d_model, 1.0f, &seed);
    float *enc = malloc((size_t)enc_len * c.d_model * sizeof(float));
    arena a;
    arena_init(&a, 0);
    t0 = now();
    if (t5_encode(&m, x, NULL, 1, enc_len, 1, enc, &a, &st)) {
        fprintf(stderr, "bench_t5: %s\n", st.msg);
        return 1;
    }
    double t_enc = now() - t0;
    arena_reset(&a);
    double inner = (double)c.heads * c.d_kv;
    double enc_flops = layers * (2.0 * enc_len * (4 * c.d_model * inner + 3.0 * c.d_model * c.d_ff) +
                                 4.0 * enc_len * (double)enc_len * inner);

    double t_greedy = time_steps(&m, enc, enc_len, 1, steps, &a);
    double t_beam = time_steps(&m, enc, enc_len, 5, steps, &a);
    double bytes = step_weight_bytes(&c), floor_s = bytes / (bandwidth * 1e9);

    printf("bench_t5: FlanT5-XL dims + 2 adapters, %d + %d layers, f32 weights %.2f GB (filled in %.1f s), threads %d\n",
           layers, layers, total_bytes / 1e9, t_fill, threads_count());
    printf("  encoder %d tokens      %.3f s  (%.1f GFLOP/s)\n", enc_len, t_enc, enc_flops / t_enc / 1e9);
    printf("  decoder step, greedy    %.1f ms  (%.1f GB/s of weights)\n", t_greedy * 1e3, bytes / t_greedy / 1e9);
    printf("  decoder step, 5 beams   %.1f ms  (%.1f ms per beam)\n", t_beam * 1e3, t_beam * 1e3 / 5);
    printf("  weights read per step   %.2f GB (decoder %d layers + lm_head)\n", bytes / 1e9, layers);
    printf("  streaming floor         %.1f ms at %.0f GB/s\n", floor_s * 1e3, bandwidth);
    printf("  ratio to floor          greedy %.2f, 5 beams %.2f\n", t_greedy / floor_s, t_beam / floor_s);
    printf("  arena peak              %.1f MB\n", a.peak / 1e6);
    arena_free(&a);
    return 0;
}

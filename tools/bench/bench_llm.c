/* bench_llm: the llm worker's continuous batching, measured on a real lion-llm process.
 *
 * Starts lion-llm on a model directory behind a stand-in gateway (tests/fake_gateway.h) and
 * sends it caption jobs with random visual tokens, every job forced to generate exactly
 * --tokens tokens (min_length past max_new_tokens: eos is never allowed), then prints:
 *   - one job alone: its time, tokens/s and time to first token (median of --repeat runs);
 *   - --requests jobs sent at once: tokens/s of all of them together, and the ratio to one
 *     job's (what continuous batching buys: every step reads each weight once for all rows);
 *   - a newcomer: --requests - 1 streamed greedy jobs decode (each has streamed a token),
 *     then one more job arrives; its time to first token against its time alone (what a
 *     running batch costs a new request: at most one step plus its own encoder pass).
 * for greedy and for --beams beams. Time to first token is the worker's first_token_us
 * (Result) less the moment the job was sent, both on this machine's clock.
 *
 * Then the ceilings of this machine: the least time the --requests jobs' work can take here,
 * from their multiply-adds (counted from the model's widths and each job's prompt_tokens) at
 * the f32 rate of a large sgemm in this process on the worker's thread count (no kernel here
 * multiplies faster), and per decoder step at least the time to read its weights once at the
 * streaming bandwidth measured here (when they do not fit the last-level cache); and the
 * ratios to one job's measured tokens/s that these floors allow. A ratio the machine cannot
 * reach is then told apart from one the code misses.
 *
 *   bench_llm --model models/tiny-lion [--threads 2] [--requests 16] [--tokens 64] [--beams 5]
 *             [--visual-tokens 73] [--repeat 3] [--precision f32|bf16] [--llm build/services/lion-llm]
 *
 * docs/benchmarks.md, "Continuous batching (bench_llm)". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "bench_util.h"
#include "clock.h"
#include "cpu_features.h"
#include "envelope.h"
#include "fake_gateway.h"
#include "model_config.h"
#include "onednn_matmul.h"
#include "protocol.h"
#include "threads.h"

#include <unistd.h>

typedef struct bench_options {
    const char *model, *llm, *precision;
    int threads, requests, tokens, beams, visual_tokens, repeat;
} bench_options;

static bench_options opt = {.model = "models/tiny-lion", .llm = "build/services/lion-llm", .precision = "f32",
                            .threads = 2, .requests = 16, .tokens = 64, .beams = 5, .visual_tokens = 73, .repeat = 3};

static const args_option bench_llm_options[] = {
    {.name = "--model", .metavar = "DIR", .kind = ARG_STRING, ARGS_AT(bench_options, model), .help = "model directory"},
    {.name = "--llm", .metavar = "PATH", .kind = ARG_STRING, ARGS_AT(bench_options, llm), .help = "lion-llm binary"},
    {.name = "--precision", .metavar = "f32|bf16", .kind = ARG_STRING, ARGS_AT(bench_options, precision),
     .help = "the worker's --precision"},
    {.name = "--threads", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, threads), .min = 1, .max = 256,
     .help = "the worker's threads"},
    {.name = "--requests", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, requests), .min = 2, .max = 64,
     .help = "jobs sent at once"},
    {.name = "--tokens", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, tokens), .min = 2,
     .max = LION_MAX_NEW_TOKENS, .help = "tokens each job generates"},
    {.name = "--beams", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, beams), .min = 2, .max = LION_MAX_BEAMS,
     .help = "beams of the beam-search runs"},
    {.name = "--visual-tokens", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, visual_tokens), .min = 1,
     .max = LION_MAX_VISUAL_TOKENS, .help = "visual tokens per job"},
    {.name = "--repeat", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, repeat), .min = 1, .max = 100,
     .help = "runs of the single job (median)"},
};

static int d_model;
static const llm_config *llm;
static double peak_gflops, stream_gbs; /* stream_gbs 0: the step's weights stay in the cache */
static float *visual; /* [visual_tokens, d_model], the same for every job: the work does not depend on it */

/* A caption job generating exactly tokens tokens with beams beams. */
static int send_job(fake_gateway *g, const char *id, int beams, int tokens, int stream, int64_t *sent_us) {
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__LLM, id, &st);
    if (!job) return -1;
    Lion__Task task = LION__TASK__INIT;
    Lion__GenerationParams gen = LION__GENERATION_PARAMS__INIT;
    task.instruction = "A short image caption:";
    task.has_task_type = 1, task.task_type = LION__TASK_TYPE__IMAGE_LEVEL;
    gen.has_num_beams = 1, gen.num_beams = (uint32_t)beams;
    gen.has_max_new_tokens = 1, gen.max_new_tokens = (uint32_t)tokens;
    gen.has_min_length = 1, gen.min_length = (uint32_t)tokens + 1; /* eos never: every job the same length */
    gen.has_repetition_penalty = 1, gen.repetition_penalty = 1.0f;
    task.generation = &gen;
    if (stream) task.has_stream = task.stream = 1;
    job->task = &task;
    int64_t shape[] = {opt.visual_tokens, d_model};
    tensor t = tensor_view(DTYPE_F32, visual, 2, shape);
    envelope_tensor et = {LION_TENSOR_VISUAL_TOKENS, &t, NULL};
    *sent_us = clock_unix_us();
    int rc = envelope_send(g->router, &g->worker, job, &et, 1, 0, &st);
    job->task = NULL; /* on the stack */
    envelope_free(job);
    if (rc) fprintf(stderr, "bench_llm: send %s: %s\n", id, st.msg);
    return rc;
}

typedef struct answer {
    int64_t sent_us, first_token_us, done_us;
    uint32_t tokens, prompt_tokens;
    int answered, streamed;
} answer;

/* Waits for the RESULTs of answers[0..n) (request ids "j<i>"); PARTIALs mark them streamed. */
static int wait_answers(fake_gateway *g, answer *answers, int n, int until_streamed) {
    for (;;) {
        int open = 0;
        for (int i = 0; i < n; i++) open += until_streamed ? !answers[i].streamed : !answers[i].answered;
        if (!open) return 0;
        envelope_msg m;
        if (fake_gateway_recv(g, &m, 600000)) {
            fprintf(stderr, "bench_llm: no answer within 600 s\n");
            return -1;
        }
        const char *id = m.env->request_id ? m.env->request_id : "";
        int i = id[0] == 'j' ? atoi(id + 1) : -1;
        if (i < 0 || i >= n) {
            envelope_msg_close(&m);
            continue;
        }
        if (m.env->kind == LION__KIND__PARTIAL) {
            answers[i].streamed = 1;
        } else if (m.env->kind == LION__KIND__RESULT && m.env->result && m.env->result->n_sequences) {
            answers[i].answered = 1;
            answers[i].done_us = clock_unix_us();
            answers[i].first_token_us = m.env->result->first_token_us;
            answers[i].tokens = m.env->result->sequences[0]->generated_tokens;
            answers[i].prompt_tokens = m.env->result->prompt_tokens;
        } else {
            fprintf(stderr, "bench_llm: %s: %s\n", id,
                    m.env->error && m.env->error->message ? m.env->error->message : "not a result");
            envelope_msg_close(&m);
            return -1;
        }
        envelope_msg_close(&m);
    }
}

/* Seconds per token after the first one (the decode phase, prefill excluded). */
static double tpot_of(const answer *a) {
    return a->tokens > 1 ? (double)(a->done_us - a->first_token_us) / 1e6 / (a->tokens - 1) : 0.0;
}

/* One job alone, --repeat times: median seconds, time to first token, time per token after it. */
static int run_alone(fake_gateway *g, int beams, double *seconds, double *ttft, double *tpot) {
    double t[100], f[100], p[100];
    for (int r = 0; r < opt.repeat; r++) {
        answer a = {0};
        if (send_job(g, "j0", beams, opt.tokens, 0, &a.sent_us) || wait_answers(g, &a, 1, 0)) return -1;
        t[r] = (double)(a.done_us - a.sent_us) / 1e6;
        f[r] = (double)(a.first_token_us - a.sent_us) / 1e6;
        p[r] = tpot_of(&a);
    }
    bench_sort(t, opt.repeat);
    bench_sort(f, opt.repeat);
    bench_sort(p, opt.repeat);
    *seconds = t[opt.repeat / 2];
    *ttft = f[opt.repeat / 2];
    *tpot = p[opt.repeat / 2];
    return 0;
}

/* --requests jobs at once: wall seconds until the last answer; the time per token after its
 * first of the job that joined the running batch last (no other job's encoder pass falls
 * after its first token, so its steps are decoding only, with the others beside it). */
static int run_together(fake_gateway *g, int beams, double *seconds, double *tpot, int *prompt_tokens) {
    answer *a = calloc((size_t)opt.requests, sizeof *a);
    if (!a) return -1;
    char id[16];
    int rc = 0;
    for (int i = 0; i < opt.requests && !rc; i++) {
        snprintf(id, sizeof id, "j%d", i);
        rc = send_job(g, id, beams, opt.tokens, 0, &a[i].sent_us);
    }
    if (!rc) rc = wait_answers(g, a, opt.requests, 0);
    int64_t last = 0;
    for (int i = 0; i < opt.requests; i++)
        if (a[i].done_us > last) last = a[i].done_us;
    *seconds = (double)(last - a[0].sent_us) / 1e6;
    int last_in = 0;
    for (int i = 1; i < opt.requests; i++)
        if (a[i].first_token_us > a[last_in].first_token_us) last_in = i;
    *tpot = tpot_of(&a[last_in]);
    *prompt_tokens = (int)a[0].prompt_tokens;
    for (int i = 1; i < opt.requests; i++) /* the prompts are alike; the floor counts the longest */
        if ((int)a[i].prompt_tokens > *prompt_tokens) *prompt_tokens = (int)a[i].prompt_tokens;
    free(a);
    return rc;
}

/* --requests - 1 streamed greedy jobs of 4x the tokens decode; then the newcomer (beams). */
static int run_newcomer(fake_gateway *g, int beams, double *ttft) {
    const int n = opt.requests;
    answer *a = calloc((size_t)n, sizeof *a);
    if (!a) return -1;
    char id[16];
    int rc = 0;
    for (int i = 1; i < n && !rc; i++) {
        snprintf(id, sizeof id, "j%d", i);
        rc = send_job(g, id, 1, 4 * opt.tokens < LION_MAX_NEW_TOKENS ? 4 * opt.tokens : LION_MAX_NEW_TOKENS, 1,
                      &a[i].sent_us);
    }
    a[0].streamed = 1; /* not sent yet */
    if (!rc) rc = wait_answers(g, a, n, 1); /* every background job decodes */
    if (!rc) rc = send_job(g, "j0", beams, opt.tokens, 0, &a[0].sent_us);
    if (!rc) rc = wait_answers(g, a, n, 0);
    *ttft = (double)(a[0].first_token_us - a[0].sent_us) / 1e6;
    int background_left = 0; /* the newcomer must have joined a running batch, not an empty one */
    for (int i = 1; i < n; i++) background_left += a[i].done_us > a[0].first_token_us;
    if (!rc && background_left < n - 1)
        fprintf(stderr, "bench_llm: only %d of %d background jobs were still decoding at the newcomer's first token\n",
                background_left, n - 1);
    free(a);
    return rc;
}

/* ------------------------------------------------------------------ floors */

/* Multiply-adds of the T5 layers per token: the projections of one attention (q, k, v, o),
 * the gated FF, the adapters. */
static double attention_macs(void) { return 4.0 * llm->d_model * llm->heads * llm->d_kv; }
static double ff_macs(void) {
    return 3.0 * llm->d_model * llm->d_ff + 2.0 * llm->adapters_num * llm->d_model * llm->adapters_bottleneck;
}

/* A job's encoder pass over enc tokens: the encoder layers (attention over all enc keys) and
 * every decoder layer's cross-attention keys and values of them. */
static double prefill_macs(int enc) {
    const double inner = (double)llm->heads * llm->d_kv;
    return (double)enc * (llm->encoder_layers * (attention_macs() + ff_macs() + 2.0 * enc * inner) +
                          llm->decoder_layers * 2.0 * llm->d_model * inner);
}

/* The weights a decoder step multiplies each row by (and reads once for all rows): every
 * decoder layer's self-attention, cross q and o, FF and adapters, and the lm_head. */
static double step_weights(void) {
    return llm->decoder_layers * (attention_macs() + 2.0 * llm->d_model * llm->heads * llm->d_kv + ff_macs()) +
           (double)llm->d_model * llm->vocab_size;
}

/* One decoder step of one row at position pos: its weights, and attention over its pos + 1
 * keys and the enc encoder keys in every layer. */
static double step_macs(int enc, int pos) {
    return step_weights() + llm->decoder_layers * 2.0 * (pos + 1 + enc) * llm->heads * llm->d_kv;
}

static double step_weight_bytes(void) { return step_weights() * (strcmp(opt.precision, "bf16") == 0 ? 2.0 : 4.0); }

/* Seconds a step of rows rows at position pos takes at least here. */
static double step_floor(int rows, int enc, int pos) {
    const double compute = rows * step_macs(enc, pos) * 2.0 / (peak_gflops * 1e9);
    const double memory = stream_gbs > 0 ? step_weight_bytes() / (stream_gbs * 1e9) : 0.0;
    return compute > memory ? compute : memory;
}

/* The ceilings of one mode: what the floors allow against one job's measured figures. */
static void print_ceilings(const char *what, int beams, int enc, double one_tokens_per_s, double alone_tpot) {
    const int rows = opt.requests * beams;
    double decode = 0, floor_steps = 0;
    for (int t = 0; t < opt.tokens; t++) {
        decode += rows * step_macs(enc, t) * 2.0;
        floor_steps += step_floor(rows, enc, t);
    }
    const double prefill = opt.requests * prefill_macs(enc) * 2.0;
    const double floor_s = prefill / (peak_gflops * 1e9) + floor_steps;
    const double floor_step = floor_steps / opt.tokens; /* the decode phase's mean step */
    printf("%s, this machine's ceilings (%d encoder tokens per job): %d at once >= %.3f s (prefills %.1f GFLOP, "
           "steps %.1f GFLOP) = at most %.2fx one job's tokens/s; decoding, a step of %d rows >= %.2f ms = at most "
           "%.2fx\n",
           what, enc, opt.requests, floor_s, prefill / 1e9, decode / 1e9,
           (double)opt.requests * opt.tokens / floor_s / one_tokens_per_s, rows, floor_step * 1e3,
           opt.requests * alone_tpot / floor_step);
}

/* The rates the floors divide by, measured before the worker starts (nothing else running):
 * a large sgemm on the worker's thread count (oneDNN's bf16 matmul for a bf16 worker on a
 * CPU with native bf16), and a streaming read when a step's weights exceed the last-level
 * cache. */
static void measure_rates(void) {
    threads_init(opt.threads);
    const char *impl = NULL;
    peak_gflops = strcmp(opt.precision, "bf16") == 0 && onednn_bf16_native()
                      ? bench_onednn_gflops(2048, 2048, 2048, 1, &impl)
                      : bench_sgemm_gflops(2048);
    if (!impl) impl = "OpenBLAS sgemm";
    const long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    stream_gbs = 0;
    if (llc <= 0 || step_weight_bytes() > (double)llc) {
        stream_buffer sb;
        stream_init(&sb, 1024);
        for (int r = 0; r < 4; r++) {
            const double gbs = time_stream(&sb, 0.1);
            if (gbs > stream_gbs) stream_gbs = gbs;
        }
        stream_free(&sb);
    }
    printf("bench_llm: rates for the ceilings: %s %.1f GFLOP/s at 2048^3 on %d threads; ", impl, peak_gflops,
           opt.threads);
    if (stream_gbs > 0) printf("streaming read %.1f GB/s (best of 4 of 1 GB)", stream_gbs);
    else printf("a step's %.1f MB of weights fit the %.0f MB last-level cache (no bandwidth floor)",
                step_weight_bytes() / 1e6, llc / 1e6);
    printf("; a step reads %.1f MB of weights\n", step_weight_bytes() / 1e6);
}

static int bench_mode(fake_gateway *g, int beams) {
    double alone_s, alone_ttft, alone_tpot, together_s, together_tpot, newcomer_ttft;
    int enc = 0;
    if (run_alone(g, beams, &alone_s, &alone_ttft, &alone_tpot) ||
        run_together(g, beams, &together_s, &together_tpot, &enc) || run_newcomer(g, beams, &newcomer_ttft))
        return -1;
    const double one = opt.tokens / alone_s, all = (double)opt.requests * opt.tokens / together_s;
    char what[32];
    snprintf(what, sizeof what, beams == 1 ? "greedy" : "%d beams", beams);
    printf("%s, 1 job: %.3f s = %.1f tokens/s (first token %.1f ms, then %.2f ms per token)\n", what, alone_s, one,
           alone_ttft * 1e3, alone_tpot * 1e3);
    printf("%s, %d at once: %.3f s = %.1f tokens/s = %.2fx one job's, prefills included; decoding (the last to "
           "join): %.2f ms per token per job = %.2fx one job's tokens/s\n",
           what, opt.requests, together_s, all, all / one, together_tpot * 1e3,
           opt.requests * alone_tpot / together_tpot);
    printf("%s, newcomer beside %d decoding: first token %.1f ms = %.2fx alone\n", what, opt.requests - 1,
           newcomer_ttft * 1e3, newcomer_ttft / alone_ttft);
    print_ceilings(what, beams, enc, one, alone_tpot);
    return 0;
}

int main(int argc, char **argv) {
    args_table table = ARGS_TABLE(bench_llm_options, &opt);
    args_parsed parsed;
    lion_status st;
    if (args_parse(&table, 1, 0, argc, argv, &parsed, &st)) {
        fprintf(stderr, "bench_llm: %s\n", st.msg);
        return 2;
    }
    if (parsed.help) {
        printf("usage: bench_llm [options]\n");
        args_usage(stdout, &table, 1);
        return 0;
    }
    model_config cfg;
    if (model_config_load(&cfg, opt.model, &st)) {
        fprintf(stderr, "bench_llm: %s\n", st.msg);
        return 1;
    }
    if (cfg.family != MODEL_FAMILY_LION) {
        fprintf(stderr, "bench_llm: %s is a %s model; bench_llm times LION's T5 (Pink: bench_pink)\n", opt.model,
                model_family_name(cfg.family));
        model_config_free(&cfg);
        return 2;
    }
    d_model = cfg.llm.d_model;
    llm = &cfg.llm;
    measure_rates();
    visual = malloc((size_t)opt.visual_tokens * d_model * sizeof *visual);
    uint64_t seed = 42;
    for (size_t i = 0; visual && i < (size_t)opt.visual_tokens * d_model; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        visual[i] = (float)((int)(seed >> 40) % 2001 - 1000) / 1000.0f;
    }
    char threads[16];
    snprintf(threads, sizeof threads, "%d", opt.threads);
    const char *child[] = {opt.llm, "--model", opt.model, "--threads", threads, "--precision", opt.precision,
                           "--capacity", "64", "--max-batch", "64", "--replica", "bench", NULL};
    fake_gateway g;
    if (!visual || fake_gateway_start(&g, child, 600000)) return 1;
    g.want_partials = 1;
    char cpu[128];
    bench_cpu_model(cpu, sizeof cpu);
    printf("bench_llm: CPU %s, isa %s; llm %s: T5 d_model %d, %d+%d layers, vocab %d; worker --threads %d "
           "--precision %s; %d visual tokens, %d tokens per job\n",
           cpu, cpu_isa_name(), cfg.name, d_model, cfg.llm.encoder_layers,
           cfg.llm.decoder_layers, cfg.llm.vocab_size, opt.threads, opt.precision, opt.visual_tokens, opt.tokens);
    /* the first job touches every weight page (first-touch faults): not a figure */
    answer warm = {0};
    int rc = send_job(&g, "j0", opt.beams, opt.tokens, 0, &warm.sent_us) || wait_answers(&g, &warm, 1, 0);
    rc = rc || bench_mode(&g, 1) || bench_mode(&g, opt.beams);
    fake_gateway_stop(&g);
    model_config_free(&cfg);
    free(visual);
    return rc ? 1 : 0;
}

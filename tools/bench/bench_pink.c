/* bench_pink: Pink's two models at true widths with truncated depth (CLIP in f32, the LLaMA in
 * --precision f32 or bf16):
 *   - the image encoder (services/vision/clip.h): CLIP ViT-L/14 (224 px, width 1024, 16 heads,
 *     MLP 4096, quick_gelu, features of layer -2) with Pink's adapters (dim 8, attention) and
 *     mm_projector to the LLM width, one image forward;
 *   - the LLM (services/llm/llama.h): LLaMA-2-7B (dim 4096, 32 heads, hidden 11008, vocab 32000,
 *     rotary) with Pink's adapters (dim 8, attention): the prefill of a Pink prompt (text
 *     positions around the image's 256 rows, the CLIP output spliced in as the service does) and
 *     one decode step at 1 row (greedy) and 5 rows (5 beams) on the slotted KV cache.
 *
 *   bench_pink [--threads N] [--clip-layers L] [--llama-layers L] [--prompt P] [--steps S]
 *              [--beams LIST] [--reps R] [--bandwidth GBS] [--floor-mb MB] [--precision f32|bf16]
 *              [--weights FILE [--check FILE]]
 *              [--clip-dim C --clip-heads H --clip-mlp M --dim D --hidden F --heads H --vocab V]
 *
 * Weights are random and in memory, unless --weights names a safetensors file with Pink's keys
 * (vision_model.vision_model.*, mm_projector.*, model.*, lm_head.*): it is then mapped and bound
 * by clip_load / llama_load, as lion-vision and lion-llm do. --check names a second file with
 * the inputs and a reference's outputs on those weights (tools/bench/compare_torch.py writes
 * both from pink_ref in torch): the pixels, the prompt ids and where the image rows go, the
 * CLIP tokens, the prefill's logits, and the logits of one step per row count from the given
 * first tokens. The bench then runs on those inputs and prints the max relative difference
 * (max |ours - ref| / max |ref|) of each.
 *
 * --clip-layers is the layers that run (the config gets one more, as Pink reads layer -2; ViT-L
 * has 24, so 23 run), --llama-layers the decoder's (LLaMA-2-7B: 32). The other width options
 * shrink the models: only for quick runs of the tools that drive this bench (compare_torch.py
 * --tiny), not a Pink figure.
 *
 * Each repetition (--reps, all interleaved) times one CLIP forward, the prefill of the prompt
 * into an empty slot, and per row count --steps decode steps after one untimed step; the
 * median and best are printed. A decode step is what decode_batch runs: llama_step over the
 * rows (sgemv for 1 row, matvec_f32 for 2..16), and for more than one row the beam reorder as a
 * permutation of the slots, which moves slot indices and copies nothing (decode_batch's
 * reorder_slots copies a cache only where two beams continue the same one). Between timings
 * the slots are rewound to the prompt's length, so every timing starts from the same cache.
 * The step must read every weight of the decoder layers and lm_head once: its floor is those
 * bytes over the memory bandwidth, measured in this process with the same threads (streaming
 * reads of --floor-mb MB interleaved with the steps, the best seen used, so ratios are upper
 * bounds), unless --bandwidth gives it.
 *
 * --precision bf16 holds the LLaMA's matrices in bf16 only (llama_to_bf16, as lion-llm
 * --precision bf16 holds them; services/llm/llama.h): the prefill's products on panels widened
 * to f32 + sgemm, the steps' on matvec_bf16; a step then reads half the matrices' bytes. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "bench_util.h"
#include "clip.h"
#include "cpu_features.h"
#include "linear.h"
#include "llama.h"
#include "matvec_bf16.h"
#include "onednn_matmul.h"
#include "safetensors.h"
#include "threads.h"
#include "weights.h"

/* OpenBLAS exports it; declared here as bench_vit does, whatever cblas.h is installed. */
char *openblas_get_corename(void);

#define MAX_BEAM_COUNTS 8
#define MAX_BEAMS 16 /* rows of a timed step: matvec_f32's design range */
#define MAX_REPS 32
#define IMAGE_AT 13  /* prompt position of the first image row without --check: Pink's llamav2
                        prompt puts the image after "<s>[INST] <<SYS>>\nImage:" (about 13 ids) */

static void die(const char *what) {
    fprintf(stderr, "bench_pink: %s\n", what);
    exit(1);
}

/* ------------------------------------------------------------------ random weights */

/* A Linear of random weights in precision p (clip.h holds its matrices as linear.h Linears);
 * a bf16 one keeps only its bf16 copy. */
static void random_linear(linear *l, size_t out, size_t in, lion_precision p, uint64_t *s) {
    lion_status st;
    float *w = bench_random_floats(out * in, 0.05f, s);
    if (linear_from_f32(l, w, (int)out, (int)in, p, 0, &st)) die(st.msg);
    if (p != PRECISION_F32) free(w);
}

/* Scales keep the activations O(1) over a few layers (no overflow, no denormals): a product
 * over K inputs of O(1) with weights of std 0.05/sqrt(12) grows by ~0.014 sqrt(K). */
static void random_clip(clip_model *m, const clip_config *c, lion_precision prec, uint64_t *s) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->run = clip_layers_run(c->layers, c->select_layer);
    const size_t d = c->dim, f = c->mlp_hidden, p = c->patch_size, g = c->image_size / c->patch_size;
    const size_t bn = c->adapter_dim;
    m->tokens = (int)(1 + g * g);
    m->patches = m->tokens - 1;
    m->class_emb = bench_random_floats(d, 0.2f, s);
    m->patch_w = bench_random_floats(d * 3 * p * p, 0.05f, s);
    m->pos_emb = bench_random_floats((size_t)m->tokens * d, 0.2f, s);
    m->pre_ln_w = bench_constant_floats(d, 1.0f);
    m->pre_ln_b = bench_random_floats(d, 0.1f, s);
    random_linear(&m->proj, (size_t)c->proj_dim, d, prec, s);
    m->proj_b = bench_random_floats((size_t)c->proj_dim, 0.1f, s);
    clip_layer *layers = calloc((size_t)m->run, sizeof *layers);
    if (!layers) die("out of memory");
    for (int i = 0; i < m->run; i++) {
        clip_layer *l = &layers[i];
        l->ln1_w = l->ln2_w = bench_constant_floats(d, 1.0f);
        l->ln1_b = bench_random_floats(d, 0.1f, s);
        l->ln2_b = bench_random_floats(d, 0.1f, s);
        random_linear(&l->q, d, d, prec, s), l->q_b = bench_random_floats(d, 0.1f, s);
        random_linear(&l->k, d, d, prec, s), l->k_b = bench_random_floats(d, 0.1f, s);
        random_linear(&l->v, d, d, prec, s), l->v_b = bench_random_floats(d, 0.1f, s);
        random_linear(&l->o, d, d, prec, s), l->o_b = bench_random_floats(d, 0.1f, s);
        random_linear(&l->fc1, f, d, prec, s), l->fc1_b = bench_random_floats(f, 0.1f, s);
        random_linear(&l->fc2, d, f, prec, s), l->fc2_b = bench_random_floats(d, 0.1f, s);
        if (bn && c->adapter_attn) {
            clip_adapter *ad = &l->adapter_attn;
            random_linear(&ad->down, bn, d, prec, s), ad->down_b = bench_random_floats(bn, 0.1f, s);
            random_linear(&ad->up, d, bn, prec, s), ad->up_b = bench_random_floats(d, 0.1f, s);
        }
    }
    m->layer = layers;
}

/* An f32 LINEAR_STEP linear (llama.h) over a new random array. */
static void random_step_linear(linear *l, int out, int in, uint64_t *s) {
    lion_status st;
    if (linear_from_f32(l, bench_random_floats((size_t)out * in, 0.05f, s), out, in, PRECISION_F32, LINEAR_STEP, &st))
        die(st.msg);
}

static void random_llama(llama_model *m, const llama_config *c, uint64_t *s) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->head_dim = c->dim / c->heads;
    m->q_dim = c->heads * m->head_dim;
    m->kv_dim = c->kv_heads * m->head_dim;
    const size_t d = c->dim, f = c->hidden, qd = m->q_dim, kvd = m->kv_dim, bn = c->adapter_dim;
    m->embed = bench_random_floats((size_t)c->vocab_size * d, 1.0f, s);
    m->norm = bench_constant_floats(d, 1.0f);
    m->precision = PRECISION_F32;
    random_step_linear(&m->lm_head, c->vocab_size, c->dim, s);
    llama_layer *layers = calloc((size_t)c->layers, sizeof *layers);
    if (!layers) die("out of memory");
    for (int i = 0; i < c->layers; i++) {
        llama_layer *l = &layers[i];
        l->attn_norm = bench_constant_floats(d, 1.0f);
        l->ffn_norm = bench_constant_floats(d, 1.0f);
        random_step_linear(&l->wq, (int)qd, (int)d, s);
        random_step_linear(&l->wk, (int)kvd, (int)d, s);
        random_step_linear(&l->wv, (int)kvd, (int)d, s);
        random_step_linear(&l->wo, (int)d, (int)qd, s);
        random_step_linear(&l->w_gate, (int)f, (int)d, s);
        random_step_linear(&l->w_up, (int)f, (int)d, s);
        random_step_linear(&l->w_down, (int)d, (int)f, s);
        if (bn && c->adapter_attn) {
            llama_adapter *ad = &l->adapter_attn;
            ad->down_w = bench_random_floats(bn * d, 0.05f, s), ad->down_b = bench_random_floats(bn, 0.1f, s);
            ad->up_w = bench_random_floats(d * bn, 0.05f, s), ad->up_b = bench_random_floats(d, 0.1f, s);
        }
    }
    m->layer = layers;
}

/* ------------------------------------------------------------------ sizes */

/* Elements of the CLIP weights a forward reads: the layers that run, embeddings, projector. */
static double clip_elems(const clip_config *c, int run) {
    const double d = c->dim, f = c->mlp_hidden, p = c->patch_size, g = c->image_size / c->patch_size;
    const double bn = c->adapter_dim * (c->adapter_attn + c->adapter_mlp);
    const double layer = 4 * d * d + 2 * d * f + 9 * d + f + bn * (2 * d + 1) + (c->adapter_attn + c->adapter_mlp) * d;
    return run * layer + d * (3 * p * p + 1 + (g * g + 1) + 2) + (double)c->proj_dim * (d + 1);
}

/* FLOPs of one image: the products (adapters included), attention's two, patches, projector. */
static double clip_flops(const clip_config *c, int run) {
    const double d = c->dim, f = c->mlp_hidden, p = c->patch_size, g = c->image_size / c->patch_size, n = g * g + 1;
    const double ad = c->adapter_dim * (c->adapter_attn + c->adapter_mlp);
    return run * (2 * n * d * (4 * d + 2 * f) + 4 * n * n * d + 4 * n * d * ad) + 2 * g * g * d * 3 * p * p +
           2 * g * g * d * c->proj_dim;
}

/* Elements of one decoder layer's matrices (what a step reads of each layer but the norms and
 * adapters). */
static double llama_layer_matrix_elems(const llama_model *m) {
    const double d = m->cfg.dim, f = m->cfg.hidden;
    return d * (2.0 * m->q_dim + 2.0 * m->kv_dim) + 3 * d * f;
}

/* Bytes of weights a decode step reads whatever its rows: every layer's matrices, norms and
 * adapters, the final norm and lm_head (the embedding's few rows aside), with the matrices'
 * elements of matrix_bytes each (4 in f32, 2 in bf16) and the rest f32. */
static double llama_step_bytes(const llama_model *m, double matrix_bytes) {
    const llama_config *c = &m->cfg;
    const double d = c->dim, ad = (double)c->adapter_dim * (c->adapter_attn + c->adapter_mlp);
    const double others = 2 * d + ad * (2 * d + 1) + (c->adapter_attn + c->adapter_mlp) * d;
    return matrix_bytes * (c->layers * llama_layer_matrix_elems(m) + (double)c->vocab_size * d) +
           4.0 * (c->layers * others + d);
}

static double llama_elems(const llama_model *m) {
    return llama_step_bytes(m, 4) / 4 + (double)m->cfg.vocab_size * m->cfg.dim; /* + the embedding */
}

/* Elements of the matrices: what bf16 holds in half the bytes. */
static double llama_matrix_elems(const llama_model *m) {
    return m->cfg.layers * llama_layer_matrix_elems(m) + (double)m->cfg.vocab_size * m->cfg.dim;
}

/* FLOPs of appending n positions after `past` cached ones to one sequence, lm_head on the last. */
static double llama_flops(const llama_model *m, double past, double n) {
    const double d = m->cfg.dim, qd = m->q_dim;
    const double attention = 4 * qd * (n * past + n * (n + 1) / 2); /* q.k and att.v per key */
    return m->cfg.layers * (2 * n * llama_layer_matrix_elems(m) + attention) + 2.0 * m->cfg.vocab_size * d;
}

/* ------------------------------------------------------------------ the check against a reference */

static double rel_diff(const float *a, const float *ref, size_t n) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - ref[i]));
        scale = fmax(scale, fabs((double)ref[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

/* A tensor of the --check file with this dtype and shape, or exit naming what is wrong. */
static const void *io_get(safetensors_file *io, const char *name, int dt, int ndim, const int64_t *shape) {
    lion_status st;
    tensor t;
    if (safetensors_get_checked(io, name, dt, ndim, shape, &t, &st)) die(st.msg);
    return t.data;
}

/* ------------------------------------------------------------------ timing */

/* Every slot of the first `rows` back to the prompt's length: the positions after it are then
 * overwritten by the next steps, and each timing starts from the same cache. Only a bench
 * rewinds a cache; the service resets or copies slots (llama_cache_reset, llama_cache_copy). */
static void rewind_slots(llama_cache *c, int rows, int prompt) {
    for (int r = 0; r < rows; r++) c->len[r] = prompt;
}

/* Seconds per step of `steps` decode steps of `rows` rows after one untimed step, on slots
 * 0..rows-1 (each holding the prompt); with rows > 1 each step is followed by beam search's
 * reorder as a permutation of the slots (row j continues former row (j + s) % rows). */
static double time_steps(const llama_model *m, llama_cache *c, int prompt, int rows, int steps, float *logits,
                         arena *a) {
    lion_status st;
    int slots[MAX_BEAMS], moved[MAX_BEAMS];
    int32_t tokens[MAX_BEAMS];
    rewind_slots(c, rows, prompt);
    for (int r = 0; r < rows; r++) slots[r] = r, tokens[r] = 3 % m->cfg.vocab_size;
    double t = 0;
    for (int s = 0; s <= steps; s++) {
        const double t0 = bench_now();
        if (llama_step(m, c, rows, slots, tokens, logits, a, &st)) die(st.msg);
        if (rows > 1) {
            for (int r = 0; r < rows; r++) moved[r] = slots[(r + s) % rows];
            memcpy(slots, moved, (size_t)rows * sizeof *slots);
        }
        if (s > 0) t += bench_now() - t0;
        arena_reset(a);
        for (int r = 0; r < rows; r++) tokens[r] = (3 + (s * 7 + r * 13) % 1000) % m->cfg.vocab_size;
    }
    rewind_slots(c, rows, prompt);
    return t / steps;
}

/* ------------------------------------------------------------------ options */

typedef struct bench_options {
    int threads, clip_layers, llama_layers, prompt, steps, reps;
    int clip_dim, clip_heads, clip_mlp, dim, hidden, heads, vocab;
    double bandwidth;
    size_t floor_mb;
    const char *beams, *weights, *check;
    lion_precision precision; /* the LLaMA's */
} bench_options;

static const args_option bench_options_table[] = {
    {.name = "--threads", .metavar = "N", .kind = ARG_INT, ARGS_AT(bench_options, threads), .min = 1, .max = 1024,
     .help = "compute threads", .deflt = "OpenMP's"},
    {.name = "--clip-layers", .metavar = "L", .kind = ARG_INT, ARGS_AT(bench_options, clip_layers), .min = 1,
     .max = 64, .help = "CLIP layers that run (Pink on ViT-L: 23 of 24, features of layer -2)"},
    {.name = "--llama-layers", .metavar = "L", .kind = ARG_INT, ARGS_AT(bench_options, llama_layers), .min = 1,
     .max = 80, .help = "decoder layers (LLaMA-2-7B: 32)"},
    {.name = "--prompt", .metavar = "P", .kind = ARG_INT, ARGS_AT(bench_options, prompt), .min = 1, .max = 16384,
     .help = "prompt positions, the image's rows included (--check's prompt wins)"},
    {.name = "--steps", .metavar = "S", .kind = ARG_INT, ARGS_AT(bench_options, steps), .min = 1, .max = 4096,
     .help = "timed decode steps per timing"},
    {.name = "--beams", .metavar = "LIST", .kind = ARG_STRING, ARGS_AT(bench_options, beams), .min = 1, .max = 64,
     .help = "rows of the decode steps timed, comma-separated, each 1..16"},
    {.name = "--reps", .metavar = "R", .kind = ARG_INT, ARGS_AT(bench_options, reps), .min = 1, .max = MAX_REPS,
     .help = "timings of each figure (interleaved); median and best printed"},
    {.name = "--bandwidth", .metavar = "GBS", .kind = ARG_DOUBLE, ARGS_AT(bench_options, bandwidth), .fmin = 0.1,
     .fmax = 100000, .help = "memory bandwidth in GB/s for the floor", .deflt = "measured"},
    {.name = "--floor-mb", .metavar = "MB", .kind = ARG_SIZE, ARGS_AT(bench_options, floor_mb), .min = 64,
     .max = 65536, .help = "size of the streaming read that measures the bandwidth"},
    {.name = "--weights", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(bench_options, weights),
     .help = "Pink's weights (safetensors, Pink's key names), mapped, instead of random ones"},
    {.name = "--precision", .metavar = "f32|bf16", .kind = ARG_CUSTOM, .set = bench_set_precision,
     ARGS_AT(bench_options, precision), .deflt = "f32",
     .help = "CLIP and LLaMA matrices: bf16 holds them in bf16 only"},
    {.name = "--check", .metavar = "FILE", .kind = ARG_STRING, ARGS_AT(bench_options, check),
     .help = "inputs and a reference's outputs on --weights: print our max relative difference"},
    {.name = "--clip-dim", .metavar = "C", .kind = ARG_INT, ARGS_AT(bench_options, clip_dim), .min = 8, .max = 8192,
     .help = "CLIP width (ViT-L: 1024)"},
    {.name = "--clip-heads", .metavar = "H", .kind = ARG_INT, ARGS_AT(bench_options, clip_heads), .min = 1,
     .max = 256, .help = "CLIP heads (ViT-L: 16)"},
    {.name = "--clip-mlp", .metavar = "M", .kind = ARG_INT, ARGS_AT(bench_options, clip_mlp), .min = 8,
     .max = 65536, .help = "CLIP MLP width (ViT-L: 4096)"},
    {.name = "--dim", .metavar = "D", .kind = ARG_INT, ARGS_AT(bench_options, dim), .min = 8, .max = 16384,
     .help = "LLaMA width, also mm_projector's output (7B: 4096)"},
    {.name = "--hidden", .metavar = "F", .kind = ARG_INT, ARGS_AT(bench_options, hidden), .min = 8, .max = 65536,
     .help = "LLaMA MLP width (7B: 11008)"},
    {.name = "--heads", .metavar = "H", .kind = ARG_INT, ARGS_AT(bench_options, heads), .min = 1, .max = 256,
     .help = "LLaMA heads, as many key/value heads (7B: 32)"},
    {.name = "--vocab", .metavar = "V", .kind = ARG_INT, ARGS_AT(bench_options, vocab), .min = 16, .max = 1 << 20,
     .help = "LLaMA vocabulary (Llama-2: 32000; Pink adds 13 tokens, left out)"},
};

static const bench_options defaults = {.clip_layers = 4, .llama_layers = 2, .prompt = 300, .steps = 8, .reps = 3,
                                       .floor_mb = 1024, .beams = "1,5", .clip_dim = 1024, .clip_heads = 16,
                                       .clip_mlp = 4096, .dim = 4096, .hidden = 11008, .heads = 32, .vocab = 32000,
                                       .precision = PRECISION_F32};

static int parse_beams(const char *text, int *out) {
    int n = 0;
    for (const char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > MAX_BEAMS || n == MAX_BEAM_COUNTS || (*end && *end != ',')) return -1;
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

static double median_of(double *v, int n) {
    bench_sort(v, n);
    return v[n / 2];
}

int main(int argc, char **argv) {
    bench_options o = defaults, defaults_copy = defaults;
    args_table table = ARGS_TABLE(bench_options_table, &o), dflt = ARGS_TABLE(bench_options_table, &defaults_copy);
    const int exit_code = bench_args("bench_pink", &table, &dflt, argc, argv);
    if (exit_code >= 0) return exit_code;
    lion_status st;
    int beam_counts[MAX_BEAM_COUNTS];
    const int n_beams = parse_beams(o.beams, beam_counts);
    if (n_beams <= 0) {
        fprintf(stderr, "bench_pink: --beams: '%s' is not a list of 1..%d\n", o.beams, MAX_BEAMS);
        return 2;
    }
    if (o.check && !o.weights) {
        fprintf(stderr, "bench_pink: --check compares with a reference on the same weights: it needs --weights\n");
        return 2;
    }
    int max_rows = 1;
    for (int i = 0; i < n_beams; i++) max_rows = beam_counts[i] > max_rows ? beam_counts[i] : max_rows;

    /* Pink's released configuration: clip_select_layer -2 (so one layer more than runs),
     * adapters of 8 in attention only, linear (adapter_non_linear false), eps of the HF configs */
    const clip_config cc = {224, 14, o.clip_dim, o.clip_layers + 1, o.clip_heads, o.clip_mlp, 1e-5f, 1, -2,
                            8, 1, 0, o.dim};
    const llama_config lc = {o.dim, o.hidden, o.llama_layers, o.heads, o.heads, o.vocab, 1e-5f, 10000.0f,
                             8, 1, 0, 0};
    if (o.clip_dim % o.clip_heads || o.dim % o.heads || (o.dim / o.heads) % 2) {
        fprintf(stderr, "bench_pink: the heads must divide the widths (into even head widths for LLaMA)\n");
        return 2;
    }
    threads_init(o.threads);

    /* ---- inputs: the image and the prompt (ids; the image rows replace ids image_at..) */
    safetensors_file *io = NULL;
    if (o.check && safetensors_open(&io, o.check, &st)) die(st.msg);
    const int patches = (224 / 14) * (224 / 14);
    int prompt = o.prompt, image_at = IMAGE_AT;
    const float *pixels;
    int32_t *ids;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    if (io) {
        tensor t;
        if (safetensors_get_checked(io, "prompt_ids", DTYPE_I32, 1, (int64_t[]){-1}, &t, &st)) die(st.msg);
        prompt = (int)t.shape[0];
        ids = t.data;
        image_at = *(const int32_t *)io_get(io, "image_at", DTYPE_I32, 1, (int64_t[]){1});
        pixels = io_get(io, "pixels", DTYPE_F32, 4, (int64_t[]){1, 3, 224, 224});
    } else {
        /* ids of no meaning (bos, then a spread over the vocabulary): only their count matters */
        ids = bench_alloc("bench_pink", (size_t)prompt * sizeof *ids);
        for (int i = 0; i < prompt; i++) ids[i] = i == 0 ? 1 : (int32_t)(3 + (int64_t)i * 7919 % (o.vocab - 3));
        if (prompt < IMAGE_AT + patches + 1) image_at = prompt > patches ? prompt - patches - 1 : 0;
        pixels = bench_random_floats((size_t)3 * 224 * 224, 2.0f, &seed);
    }
    if (image_at < 0 || image_at + patches >= prompt) {
        fprintf(stderr, "bench_pink: a prompt of %d positions cannot hold %d image rows at %d and a text position "
                "after them\n", prompt, patches, image_at);
        return 2;
    }

    /* ---- the models */
    clip_model cm;
    llama_model lm;
    weights w = {0};
    const int run = clip_layers_run(cc.layers, cc.select_layer);
    const size_t capacity = (size_t)prompt + o.steps + 2; /* + the untimed step and the check's */
    double t0 = bench_now(), t_fill;
    if (o.weights) {
        if (weights_open(&w, o.weights, "", &st) || clip_load_with(&cm, &cc, &w, o.precision, &st) ||
            llama_load_with(&lm, &lc, &w, o.precision, &st))
            die(st.msg);
        t_fill = bench_now() - t0;
    } else {
        /* refuse rather than push a shared machine into swap or the OOM killer */
        llama_model shape = {.cfg = lc, .q_dim = o.dim, .kv_dim = o.dim};
        const double need = 4.0 * (clip_elems(&cc, run) + llama_elems(&shape)) +
                            (o.precision == PRECISION_BF16 ? 2.0 * llama_matrix_elems(&shape) : 0) +
                            2.0 * 4 * lc.layers * max_rows * capacity * o.dim + o.floor_mb * 1048576.0;
        const double avail = (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
        if (need > 0.85 * avail) {
            fprintf(stderr, "bench_pink: these depths need %.1f GB, %.1f GB is free; use fewer layers\n", need / 1e9,
                    avail / 1e9);
            return 1;
        }
        random_clip(&cm, &cc, o.precision, &seed);
        random_llama(&lm, &lc, &seed);
        t_fill = bench_now() - t0;
    }
    /* bf16, random weights: the f32 matrices filled above, converted as lion-llm --precision
     * bf16 holds them (a file is bound in bf16 directly, as lion-vision and lion-llm bind it) */
    double t_convert = 0;
    if (o.precision == PRECISION_BF16 && !o.weights) {
        t0 = bench_now();
        if (llama_to_bf16(&lm, &st)) die(st.msg);
        t_convert = bench_now() - t0;
    }
    llama_cache cache;
    if (llama_cache_init(&cache, &lm, max_rows, (int)capacity, &st)) die(st.msg);
    const size_t d = (size_t)o.dim, V = (size_t)o.vocab;
    float *tokens = bench_alloc("bench_pink", (size_t)patches * d * sizeof(float));
    float *x = bench_alloc("bench_pink", (size_t)prompt * d * sizeof(float));
    float *logits = bench_alloc("bench_pink", (size_t)max_rows * V * sizeof(float));
    arena a;
    arena_init(&a, 0);

    /* ---- warm-up: a CLIP forward (its tokens are the prompt's image rows) and a short prefill
     * that reads every LLaMA weight once (pages in a mapped file, grows the arena) */
    if (clip_forward(&cm, pixels, 1, NULL, tokens, &a, &st)) die(st.msg);
    if (llama_embed(&lm, ids, prompt, x, &st)) die(st.msg);
    memcpy(x + (size_t)image_at * d, tokens, (size_t)patches * d * sizeof(float));
    const int warm = prompt < 16 ? prompt : 16, slot0 = 0;
    if (llama_forward(&lm, &cache, 1, &slot0, &warm, x, logits, &a, &st)) die(st.msg);
    llama_cache_reset(&cache, 0);
    arena_reset(&a);

    /* ---- the check: CLIP's tokens now, the prefill's and the steps' logits in the first repetition */
    double diff_clip = -1, diff_prefill = -1, diff_step[MAX_BEAM_COUNTS];
    const int32_t *check_tokens = NULL;
    if (io) {
        diff_clip = rel_diff(tokens, io_get(io, "clip_tokens", DTYPE_F32, 2, (int64_t[]){patches, (int64_t)d}),
                             (size_t)patches * d);
        check_tokens = io_get(io, "step_tokens", DTYPE_I32, 1, (int64_t[]){max_rows});
    }

    stream_buffer sb = {0};
    if (o.bandwidth <= 0) stream_init(&sb, o.floor_mb);
    double t_clip[MAX_REPS], t_prefill[MAX_REPS], t_step[MAX_BEAM_COUNTS][MAX_REPS];
    double floors[MAX_REPS * MAX_BEAM_COUNTS];
    int n_floors = 0;
    for (int r = 0; r < o.reps; r++) {
        t0 = bench_now();
        if (clip_forward(&cm, pixels, 1, NULL, tokens, &a, &st)) die(st.msg);
        t_clip[r] = bench_now() - t0;
        arena_reset(&a);

        llama_cache_reset(&cache, 0);
        t0 = bench_now();
        if (llama_forward(&lm, &cache, 1, &slot0, &prompt, x, logits, &a, &st)) die(st.msg);
        t_prefill[r] = bench_now() - t0;
        arena_reset(&a);
        if (io && r == 0) diff_prefill = rel_diff(logits, io_get(io, "prefill_logits", DTYPE_F32, 1, (int64_t[]){o.vocab}), V);
        /* the other beams fork from the prompt, as decode_batch_add_llama's llama_cache_copy */
        for (int s = 1; s < max_rows; s++)
            if (llama_cache_copy(&cache, s, 0, &st)) die(st.msg);

        for (int bi = 0; bi < n_beams; bi++) {
            const int rows = beam_counts[bi];
            if (io && r == 0) { /* one step of `rows` rows from the reference's tokens */
                char name[32];
                snprintf(name, sizeof name, "step_logits_%d", rows);
                const int slots[MAX_BEAMS] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
                if (llama_step(&lm, &cache, rows, slots, check_tokens, logits, &a, &st)) die(st.msg);
                arena_reset(&a);
                rewind_slots(&cache, rows, prompt);
                diff_step[bi] = rel_diff(logits, io_get(io, name, DTYPE_F32, 2, (int64_t[]){rows, o.vocab}),
                                         (size_t)rows * V);
            }
            if (o.bandwidth <= 0) floors[n_floors++] = time_stream(&sb, 0.1);
            t_step[bi][r] = time_steps(&lm, &cache, prompt, rows, o.steps, logits, &a);
        }
    }
    double bw = o.bandwidth * 1e9, bw_median = bw, bw_worst = bw;
    if (o.bandwidth <= 0) {
        bench_sort(floors, n_floors);
        bw = floors[n_floors - 1] * 1e9, bw_median = floors[n_floors / 2] * 1e9, bw_worst = floors[0] * 1e9;
        stream_free(&sb);
    }
    const double peak = bench_sgemm_gflops(2048);

    /* ---- report */
    char cpu[256];
    bench_cpu_model(cpu, sizeof cpu);
    const double step_bytes = llama_step_bytes(&lm, lm.precision == PRECISION_BF16 ? 2 : 4);
    const double kv_row = 2.0 * 4 * lc.layers * (prompt + o.steps / 2.0) * lm.kv_dim;
    const double f_clip = clip_flops(&cc, run), f_prefill = llama_flops(&lm, 0, prompt);
    const double clip_med = median_of(t_clip, o.reps), clip_best = t_clip[0];
    const double pre_med = median_of(t_prefill, o.reps), pre_best = t_prefill[0];
    printf("bench_pink: Pink, CLIP ViT-L/14 %d of %d layers run + mm_projector, LLaMA-2-7B %d layers, adapters 8 in "
           "attention; CLIP and LLaMA %s; threads %d\n", run, cc.layers, lc.layers, precision_name(lm.precision),
           threads_count());
    if (o.clip_dim != 1024 || o.clip_heads != 16 || o.clip_mlp != 4096 || o.dim != 4096 || o.hidden != 11008 ||
        o.heads != 32 || o.vocab != 32000)
        printf("  widths          CLIP dim %d, heads %d, mlp %d; LLaMA dim %d, hidden %d, heads %d, vocab %d "
               "(not Pink's)\n", o.clip_dim, o.clip_heads, o.clip_mlp, o.dim, o.hidden, o.heads, o.vocab);
    printf("  CPU             %s; isa %s, native bf16 %s; matvec kernel %s; OpenBLAS core %s\n", cpu, cpu_isa_name(),
           cpu_native_bf16() ? "yes" : "no", matvec_kernel_name(), openblas_get_corename());
    if (o.weights)
        printf("  weights         %s, mapped: f32 %.2f GB bound (CLIP %.3f GB, LLaMA %.3f GB) in %.1f s\n", o.weights,
               w.bytes_f32 / 1e9, 4 * clip_elems(&cc, run) / 1e9, 4 * llama_elems(&lm) / 1e9, t_fill);
    else
        printf("  weights         random in memory: f32 %.2f GB (CLIP %.3f GB, LLaMA %.3f GB), filled in %.1f s\n",
               bench_floats_bytes() / 1e9, 4 * clip_elems(&cc, run) / 1e9, 4 * llama_elems(&lm) / 1e9, t_fill);
    printf("  llama matrices  %s, %.3f GB (converted in %.1f s); oneDNN isa %s\n", linear_form(&lm.layer[0].w_up),
           llama_matrix_bytes(&lm, NULL) / 1e9, t_convert, onednn_isa_name());
    printf("  timings         median (best) of %d, interleaved\n", o.reps);
    printf("  clip forward    %.3f s  (best %.3f s; %.1f GFLOP/s over %.1f GFLOP; 1 image, %d tokens)\n", clip_med,
           clip_best, f_clip / clip_med / 1e9, f_clip / 1e9, cm.tokens);
    printf("  sgemm 2048^3    %.1f GFLOP/s (this process, same threads): clip forward at %.2f of it\n", peak,
           f_clip / clip_med / 1e9 / peak);
    printf("  prefill %d positions  %.3f s  (best %.3f s; %.1f GFLOP/s over %.1f GFLOP; image rows at %d..%d)\n",
           prompt, pre_med, pre_best, f_prefill / pre_med / 1e9, f_prefill / 1e9, image_at, image_at + patches - 1);
    printf("  step reads      %s %.3f GB of weights; also %.1f MB of KV cache per row (f32, not in the floor)\n",
           precision_name(lm.precision), step_bytes / 1e9, kv_row / 1e6);
    if (o.bandwidth > 0) printf("  bandwidth       %.1f GB/s (given)\n", bw / 1e9);
    else
        printf("  bandwidth       %.1f GB/s best (median %.1f, worst %.1f) of %d streaming reads of %zu MB, "
               "interleaved; the best is used\n", bw / 1e9, bw_median / 1e9, bw_worst / 1e9, n_floors, o.floor_mb);
    printf("  floor           %s %.1f ms per step\n\n", precision_name(lm.precision), step_bytes / bw * 1e3);
    printf("| rows | step median ms | best ms | GB/s of weights | GFLOP/s | floor ms | median / floor |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- |\n");
    for (int bi = 0; bi < n_beams; bi++) {
        const int rows = beam_counts[bi];
        const double med = median_of(t_step[bi], o.reps), best = t_step[bi][0];
        const double flops = rows * llama_flops(&lm, prompt + o.steps / 2.0, 1);
        printf("| %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", rows, med * 1e3, best * 1e3, step_bytes / med / 1e9,
               flops / med / 1e9, step_bytes / bw * 1e3, med / (step_bytes / bw));
    }
    if (io) {
        printf("\n  check           vs %s (max |ours - ref| / max |ref|): clip tokens %.1e, prefill logits %.1e", o.check,
               diff_clip, diff_prefill);
        for (int bi = 0; bi < n_beams; bi++) printf(", step logits %d row(s) %.1e", beam_counts[bi], diff_step[bi]);
        printf("\n");
    }
    printf("  arena peak      %.1f MB\n", a.peak / 1e6);
    arena_free(&a);
    llama_cache_free(&cache);
    if (io) safetensors_close(io);
    if (o.weights) {
        clip_free(&cm);
        llama_free(&lm);
        weights_close(&w);
    }
    return 0;
}

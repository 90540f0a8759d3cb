/* test_tiny_pink.c - the embedded models/tiny-pink, loaded as the stages load a Pink model
 * directory (model_config_load, pink_clip_config + clip_load, pink_llama_config + llama_load,
 * pink_tokenizer_load, pink_prompt_build), answers its whole held-out set as the reference does
 * (tests/fixtures/gen_tiny_pink.py, from models/tiny-pink/eval.json of
 * tools/train/evaluate_pink.py):
 *   - the scene PNGs through the vision preprocessing (image_preprocess: decode, bicubic resize to
 *     64 - an identity here - and CLIP's normalisation): pixels equal to pink_ref's; CLIP features
 *     and mm_projector tokens within 1e-4 relative of pink_ref's for the first scenes;
 *   - every request's prompt ids equal to pink_ref's (the LLaMA tokenizer with Pink's added
 *     tokens, the 17 coordinate pieces of the tiny tokenizer, the llamav2 template);
 *   - every request's greedy answer (prefill with the image tokens spliced in, then argmax steps
 *     with the KV cache until eos or max_new_tokens) equal to the reference's ids, and its text
 *     (llama_tok_decode) equal to the reference's; the logits of every step within 1e-4 relative
 *     for one request per Pink task. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "clip.h"
#include "image.h"
#include "llama.h"
#include "model_config.h"
#include "pink_clip_config.h"
#include "pink_config.h"
#include "pink_prompt.h"
#include "safetensors.h"
#include "testing.h"
#include "weights.h"

#define TOL 1e-4
#define MODEL_DIR "models/tiny-pink"
#define MAX_IDS 1024

typedef struct request {
    int scene;
    pink_task task;
    char *arg;      /* question / expression, or the box's four numbers, NULL for caption */
    int32_t *prompt, *answer;
    size_t n_prompt, n_answer;
    char *text;     /* the reference's answer text */
} request;

static int32_t *parse_ids(const char *s, size_t *n) {
    int32_t *v = malloc(MAX_IDS * sizeof *v);
    size_t k = 0;
    char *end;
    while (v && *s && k < MAX_IDS) {
        long x = strtol(s, &end, 10);
        if (end == s) break;
        v[k++] = (int32_t)x;
        s = end;
    }
    *n = k;
    return v;
}

static char *unhex(const char *s) {
    size_t n = strlen(s) / 2;
    char *t = malloc(n + 1);
    for (size_t i = 0; t && i < n; i++) {
        unsigned b;
        sscanf(s + 2 * i, "%2x", &b);
        t[i] = (char)b;
    }
    if (t) t[n] = 0;
    return t;
}

/* requests.tsv: scene, task, arg, prompt ids, answer ids, answer text (hex) */
static request *read_requests(const char *path, size_t *count) {
    size_t len;
    char *data = (char *)testing_read_file(path, &len);
    if (!data) return NULL;
    size_t cap = 0, n = 0;
    request *rs = NULL;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        char *f[6];
        int nf = 0;
        for (char *p = line; nf < 6; nf++) {
            f[nf] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                nf++;
                break;
            }
            *tab = 0;
            p = tab + 1;
        }
        if (nf != 6) {
            testing_fail(__FILE__, __LINE__, "%s: a line with %d fields", path, nf);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            rs = realloc(rs, cap * sizeof *rs);
        }
        request *r = &rs[n++];
        memset(r, 0, sizeof *r);
        lion_status st;
        r->scene = atoi(f[0]);
        CHECK_MSG(pink_task_parse(f[1], &r->task, &st) == 0, "task %s: %s", f[1], st.msg);
        r->arg = strcmp(f[2], "-") ? strdup(f[2]) : NULL;
        r->prompt = parse_ids(f[3], &r->n_prompt);
        r->answer = parse_ids(f[4], &r->n_answer);
        r->text = unhex(f[5]);
    }
    free(data);
    *count = n;
    return rs;
}

int main(void) {
    lion_status st = {0};
    model_config cfg;
    if (model_config_load(&cfg, MODEL_DIR, &st)) {
        CHECK_MSG(0, "model_config_load: %s", st.msg);
        return testing_finish();
    }
    CHECK_EQ_INT(cfg.family, MODEL_FAMILY_PINK);
    CHECK(strcmp(cfg.name, "tiny-pink") == 0);
    const pink_config *pk = &cfg.pink;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s", testing_fixture("tiny_pink"));
    safetensors_file *io = NULL;
    weights vw = {0}, lw = {0};
    clip_model cm = {0};
    llama_model lm = {0};
    llama_tok *tok = NULL;
    llama_cache cache = {0};
    arena a;
    arena_init(&a, 0);
    request *rs = NULL;
    size_t n_req = 0;
    float *pixels = NULL, *features = NULL, *vtokens = NULL, *x = NULL, *logits = NULL;
    int32_t *checked = NULL;
    size_t n_checked = 0;
    clip_config cc;
    llama_config lc;
    pink_clip_config(&pk->vision, &cc);
    pink_llama_config(&pk->llm, &lc);
    snprintf(path, sizeof path, "%s/io.safetensors", dir);
    if (safetensors_open(&io, path, &st)) {
        CHECK_MSG(0, "open: %s", st.msg);
        goto out;
    }
    if (weights_open(&vw, model_config_stage_file(&cfg, "vision"), "", &st) || clip_load(&cm, &cc, &vw, &st) ||
        weights_open(&lw, model_config_stage_file(&cfg, "llm"), "", &st) || llama_load(&lm, &lc, &lw, &st) ||
        pink_tokenizer_load(&pk->tokenizer, pk->llm.vocab_size, &tok, &st)) {
        CHECK_MSG(0, "load: %s", st.msg);
        goto out;
    }
    snprintf(path, sizeof path, "%s/requests.tsv", dir);
    rs = read_requests(path, &n_req);
    if (!rs || !n_req) {
        CHECK_MSG(0, "no requests in %s", path);
        goto out;
    }
    const int P = cm.patches, D = cc.dim, E = lc.dim, V = lc.vocab_size, S = cc.image_size;
    const size_t img = (size_t)3 * S * S;
    CHECK_EQ_INT(P, pk->prompt.image_tokens);
    tensor ct;
    if (safetensors_get(io, "checked_requests", &ct, &st)) goto out;
    n_checked = (size_t)tensor_numel(&ct);
    checked = malloc(n_checked * sizeof *checked);
    memcpy(checked, ct.data, n_checked * sizeof *checked);
    tensor pt;
    if (safetensors_get(io, "pixels", &pt, &st)) goto out;
    const int ref_scenes = (int)(tensor_numel(&pt) / img);
    const float *want_pix = pt.data;
    const float *want_f = testing_tensor(io, "features", DTYPE_F32, (size_t)ref_scenes * P * D);
    const float *want_t = testing_tensor(io, "vision_tokens", DTYPE_F32, (size_t)ref_scenes * P * E);
    if (!want_f || !want_t) goto out;

    const int capacity = pk->llm.max_positions;
    pixels = malloc(img * sizeof *pixels);
    features = malloc((size_t)P * D * sizeof *features);
    vtokens = malloc((size_t)P * E * sizeof *vtokens);
    x = malloc((size_t)capacity * E * sizeof *x);
    logits = malloc((size_t)V * sizeof *logits);
    if (llama_cache_init(&cache, &lm, 1, capacity, &st)) {
        CHECK_MSG(0, "cache: %s", st.msg);
        goto out;
    }
    const image_filter filter = pk->vision.resize == RESIZE_BILINEAR ? IMAGE_FILTER_BILINEAR : IMAGE_FILTER_BICUBIC;
    size_t same_prompt = 0, same_answer = 0, same_text = 0, logit_steps = 0;
    double worst_vision = 0, worst_logits = 0;
    int scene = -1;
    for (size_t j = 0; j < n_req; j++) {
        request *r = &rs[j];
        if (r->scene != scene) { /* the vision stage once per scene */
            scene = r->scene;
            char png[640];
            snprintf(png, sizeof png, "%s/scene_%d.png", dir, scene);
            size_t len;
            unsigned char *bytes = testing_read_file(png, &len);
            if (!bytes || image_preprocess(bytes, len, S, filter, pk->vision.mean, pk->vision.std, pixels, NULL,
                                           &st) ||
                clip_forward(&cm, pixels, 1, features, vtokens, &a, &st)) {
                free(bytes);
                CHECK_MSG(0, "%s: %s", png, st.msg);
                goto out;
            }
            free(bytes);
            arena_reset(&a);
            if (scene < ref_scenes) {
                CHECK_CLOSE(pixels, want_pix + (size_t)scene * img, img, 1e-6, "pixels (PNG, resize, normalise)");
                CHECK_CLOSE(features, want_f + (size_t)scene * P * D, (size_t)P * D, TOL, "CLIP features");
                CHECK_CLOSE(vtokens, want_t + (size_t)scene * P * E, (size_t)P * E, TOL, "vision tokens");
                worst_vision = fmax(worst_vision, testing_rel_err(vtokens, want_t + (size_t)scene * P * E,
                                                                  (size_t)P * E));
            }
        }
        double box[4];
        const char *text = r->arg;
        if (r->task == PINK_TASK_REGION_CAPTION) {
            CHECK(sscanf(r->arg, "%lf %lf %lf %lf", &box[0], &box[1], &box[2], &box[3]) == 4);
            text = NULL;
        }
        pink_prompt pp = {0};
        if (pink_prompt_build(&pk->prompt, tok, r->task, text, r->task == PINK_TASK_REGION_CAPTION ? box : NULL,
                              (size_t)capacity, &pp, &st)) {
            CHECK_MSG(0, "request %zu: pink_prompt_build: %s", j, st.msg);
            continue;
        }
        int ok = pp.n_ids == r->n_prompt && !memcmp(pp.ids, r->prompt, r->n_prompt * sizeof(int32_t));
        same_prompt += ok;
        CHECK_MSG(ok, "request %zu: prompt ids differ from pink_ref's (%zu ids, reference %zu)", j, pp.n_ids,
                  r->n_prompt);
        /* which checked request this is (its logits are in the fixture), -1 if none */
        int k = -1;
        for (size_t c = 0; c < n_checked; c++)
            if ((size_t)checked[c] == j) k = (int)c;
        const float *want_logits = NULL;
        if (k >= 0) {
            char key[32];
            snprintf(key, sizeof key, "logits_%d", k);
            want_logits = testing_tensor(io, key, DTYPE_F32, (r->n_answer + 1) * (size_t)V);
        }
        /* prefill with the image spliced in, then greedy steps */
        llama_cache_reset(&cache, 0);
        const int slot = 0, n = (int)pp.n_ids;
        int32_t got[MAX_IDS];
        size_t n_got = 0;
        if (llama_embed(&lm, pp.ids, n, x, &st)) {
            CHECK_MSG(0, "embed: %s", st.msg);
            pink_prompt_free(&pp);
            continue;
        }
        memcpy(x + pp.image_offset * E, vtokens, (size_t)P * E * sizeof *x);
        int limit = pk->llm.generation.max_new_tokens;
        if (limit > capacity - n) limit = capacity - n;
        int rc = llama_forward(&lm, &cache, 1, &slot, &n, x, logits, &a, &st);
        for (int s = 0; rc == 0 && s < limit; s++) {
            if (want_logits && (size_t)s <= r->n_answer) {
                char what[64];
                snprintf(what, sizeof what, "request %zu: logits of step %d", j, s);
                CHECK_CLOSE(logits, want_logits + (size_t)s * V, V, TOL, what);
                worst_logits = fmax(worst_logits, testing_rel_err(logits, want_logits + (size_t)s * V, V));
                logit_steps++;
            }
            int32_t next = testing_argmax(logits, V);
            if (next == pk->tokenizer.eos_id) break;
            got[n_got++] = next;
            rc = llama_step(&lm, &cache, 1, &slot, &next, logits, &a, &st);
        }
        arena_reset(&a);
        CHECK_MSG(rc == 0, "request %zu: decode: %s", j, st.msg);
        ok = n_got == r->n_answer && !memcmp(got, r->answer, n_got * sizeof(int32_t));
        same_answer += ok;
        CHECK_MSG(ok, "request %zu: greedy answer differs from the reference's (%zu ids, reference %zu)", j, n_got,
                  r->n_answer);
        char *answer = NULL;
        if (llama_tok_decode(tok, got, n_got, &answer, &st) == 0) {
            same_text += !strcmp(answer, r->text);
            CHECK_MSG(!strcmp(answer, r->text), "request %zu: answer \"%s\", reference \"%s\"", j, answer, r->text);
        } else {
            CHECK_MSG(0, "request %zu: decode: %s", j, st.msg);
        }
        free(answer);
        pink_prompt_free(&pp);
    }
    CHECK(logit_steps > 0);
    printf("tiny-pink held-out set in C: %zu requests over %d scenes; prompt ids %zu, greedy answers %zu, texts %zu "
           "identical to pink_ref's; vision tokens max rel err %.2e, logits (%zu steps) %.2e\n",
           n_req, scene + 1, same_prompt, same_answer, same_text, worst_vision, logit_steps, worst_logits);
out:
    for (size_t j = 0; j < n_req; j++) {
        free(rs[j].arg);
        free(rs[j].prompt);
        free(rs[j].answer);
        free(rs[j].text);
    }
    free(rs);
    free(checked);
    llama_cache_free(&cache);
    free(pixels);
    free(features);
    free(vtokens);
    free(x);
    free(logits);
    llama_tok_free(tok);
    llama_free(&lm);
    clip_free(&cm);
    weights_close(&lw);
    weights_close(&vw);
    safetensors_close(io);
    arena_free(&a);
    model_config_free(&cfg);
    return testing_finish();
}

/* test_pink_service.c - the vision and llm services serving a Pink model directory
 * (tests/fixtures/gen_pink_model.py: a tiny Pink converted from the released layouts, with
 * pink_ref's answer to one REC request), each as a real process behind a stand-in gateway.
 *
 * llm: the REC job with the reference's vision tokens answers the reference's greedy tokens
 * (its RESULT's ids: the prompt's last id, then the generated ones), prompt_tokens the prompt's
 * length; the same job among a dozen others decoding at once (greedy, 3 beams, streamed)
 * answers the same, and a streamed job's PARTIAL ids add up to its RESULT's; the LION forms
 * of the other tasks are read as Pink's tasks (they answer, with the prompt length of that
 * task); a job with visual tokens of the wrong shape or a region out of [0, 1] fails alone,
 * naming what was wrong. With --precision bf16 (the LLaMA's matrices in bf16) it answers the REC
 * job too.
 * vision: a PNG answered with `visual_tokens` [image tokens, llm dim] equal to image_preprocess
 * + clip_forward run here on the same bytes, and from its cache the second time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "clip.h"
#include "envelope.h"
#include "fake_gateway.h"
#include "image.h"
#include "model_config.h"
#include "pink_clip_config.h"
#include "protocol.h"
#include "safetensors.h"
#include "testing.h"
#include "weights.h"

#define REC "Please provide the bounding box coordinate of the region this sentence describes: the red dog."

static char model_dir[4096];
static const float *vision_tokens; /* [P, E] from the fixture */
static int P, E;

static Lion__Envelope *job_new(const char *id, const char *instruction, int beams, int max_new, int stream,
                               const float *visual, int rows, int cols, tensor *t) {
    lion_status st;
    Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__LLM, id, &st);
    job->task = malloc(sizeof *job->task);
    lion__task__init(job->task);
    job->task->instruction = strdup(instruction);
    job->task->generation = malloc(sizeof *job->task->generation);
    lion__generation_params__init(job->task->generation);
    Lion__GenerationParams *g = job->task->generation;
    g->has_num_beams = 1, g->num_beams = (uint32_t)beams;
    g->has_max_new_tokens = 1, g->max_new_tokens = (uint32_t)max_new;
    if (stream) job->task->has_stream = job->task->stream = 1;
    int64_t shape[] = {rows, cols};
    *t = tensor_view(DTYPE_F32, (void *)visual, 2, shape);
    return job;
}

static void send_job(fake_gateway *g, const char *id, const char *instruction, int beams, int max_new, int stream) {
    tensor t;
    lion_status st;
    Lion__Envelope *job = job_new(id, instruction, beams, max_new, stream, vision_tokens, P, E, &t);
    envelope_tensor et = {LION_TENSOR_VISUAL_TOKENS, &t, NULL};
    CHECK_MSG(envelope_send(g->router, &g->worker, job, &et, 1, 0, &st) == 0, "%s", st.msg);
    envelope_free(job);
}

/* The RESULT's first sequence equals start + want (cut at eos when the reference ran past it). */
static void check_ids(const envelope_msg *m, int32_t start, const int32_t *want, int steps, int eos, const char *what) {
    CHECK_MSG(m->env->kind == LION__KIND__RESULT, "%s: %s", what,
              m->env->error && m->env->error->message ? m->env->error->message : "not a result");
    if (m->env->kind != LION__KIND__RESULT || !m->env->result || !m->env->result->n_sequences) return;
    const Lion__Sequence *s = m->env->result->sequences[0];
    int n = 0;
    while (n < steps && (n == 0 || want[n - 1] != eos)) n++;
    int same = (int)s->n_token_ids == n + 1 && s->token_ids[0] == start &&
               memcmp(s->token_ids + 1, want, (size_t)n * sizeof *want) == 0;
    CHECK_MSG(same, "%s: %zu ids, want the prompt's last id and the reference's %d tokens", what, s->n_token_ids, n);
}

static void test_llm(const int32_t *prompt, int n_prompt, const int32_t *want, int steps, int eos) {
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/lion-llm", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {bin, "--model", model_dir, "--threads", "1", "--replica", "pink-llm-test", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "the llm service did not start on the Pink model");
        fake_gateway_stop(&g);
        return;
    }
    const int32_t start = prompt[n_prompt - 1];
    /* alone */
    tensor t;
    envelope_msg m;
    Lion__Envelope *job = job_new("alone", REC, 1, steps, 0, vision_tokens, P, E, &t);
    envelope_tensor et = {LION_TENSOR_VISUAL_TOKENS, &t, NULL};
    if (fake_gateway_call(&g, job, &et, 1, &m, 30000) == 0) {
        check_ids(&m, start, want, steps, eos, "alone");
        CHECK(m.env->result && m.env->result->prompt_tokens == (uint32_t)n_prompt);
        CHECK(m.env->result && m.env->result->has_first_token_us && m.env->result->first_token_us > 0);
        envelope_msg_close(&m);
    } else {
        CHECK_MSG(0, "alone: no answer");
    }
    envelope_free(job);

    /* a dozen at once: greedy, 3 beams, streamed greedy, the other tasks' LION forms */
    enum { N = 12 };
    const char *other[] = {"A short image caption:", "Question: What color is the dog? Short answer:",
                           "Please provide a short description for this region: [0.125,0.250,0.500,0.625].",
                           "What is in the image?"};
    g.want_partials = 1;
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "j%d", i);
        const int kind = i % 4; /* 0 greedy REC, 1 3-beam REC, 2 streamed REC, 3 another task */
        send_job(&g, id, kind == 3 ? other[(i / 4) % 4] : REC, kind == 1 ? 3 : 1, steps, kind == 2);
    }
    int answered = 0, partial_ids[N] = {0};
    int32_t streamed[N][64];
    while (answered < N) {
        if (fake_gateway_recv(&g, &m, 30000)) {
            CHECK_MSG(0, "batch: %d of %d answers", answered, N);
            break;
        }
        const int i = m.env->request_id && m.env->request_id[0] == 'j' ? atoi(m.env->request_id + 1) : -1;
        if (i < 0 || i >= N) {
            CHECK_MSG(0, "batch: unexpected %s", m.env->request_id ? m.env->request_id : "?");
        } else if (m.env->kind == LION__KIND__PARTIAL) {
            const Lion__Sequence *s = m.env->result->sequences[0];
            for (size_t k = 0; k < s->n_token_ids && partial_ids[i] < 64; k++) streamed[i][partial_ids[i]++] = s->token_ids[k];
        } else {
            answered++;
            const int kind = i % 4;
            if (kind == 0 || kind == 2) check_ids(&m, start, want, steps, eos, m.env->request_id);
            else
                CHECK_MSG(m.env->kind == LION__KIND__RESULT, "%s: %s", m.env->request_id,
                          m.env->error && m.env->error->message ? m.env->error->message : "not a result");
            if (kind == 2 && m.env->kind == LION__KIND__RESULT) {
                const Lion__Sequence *s = m.env->result->sequences[0];
                CHECK_MSG(partial_ids[i] == (int)s->n_token_ids - 1 &&
                              !memcmp(streamed[i], s->token_ids + 1, (size_t)partial_ids[i] * sizeof(int32_t)),
                          "%s: the PARTIALs' %d ids are not the RESULT's", m.env->request_id, partial_ids[i]);
            }
        }
        envelope_msg_close(&m);
    }
    g.want_partials = 0;

    /* bad jobs fail alone, naming what was wrong */
    job = job_new("bad-shape", REC, 1, steps, 0, vision_tokens, P - 1, E, &t);
    et.t = &t;
    if (fake_gateway_call(&g, job, &et, 1, &m, 30000) == 0) {
        CHECK(m.env->kind == LION__KIND__ERROR && m.env->error && m.env->error->code == LION_EINVAL);
        if (m.env->error) CHECK_CONTAINS(m.env->error->message, "visual_tokens: shape must be");
        envelope_msg_close(&m);
    }
    envelope_free(job);
    job = job_new("bad-box", "Please provide a short description for this region: [0.1,0.2,1.5,0.6].", 1, steps, 0,
                  vision_tokens, P, E, &t);
    et.t = &t;
    if (fake_gateway_call(&g, job, &et, 1, &m, 30000) == 0) {
        CHECK(m.env->kind == LION__KIND__ERROR && m.env->error && m.env->error->code == LION_EINVAL);
        if (m.env->error) CHECK_CONTAINS(m.env->error->message, "outside [0, 1]");
        envelope_msg_close(&m);
    }
    envelope_free(job);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
}

/* The llm service on the Pink model with --precision bf16 (every LLaMA matrix bf16, llama.h):
 * it starts and answers the REC job with a RESULT of the prompt's length. Its tokens need not
 * be f32's (bf16 rounds every weight); how many of the reference's it matches is printed. */
static void test_llm_bf16(int n_prompt, const int32_t *want, int steps) {
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/lion-llm", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {bin, "--model", model_dir, "--threads", "1", "--precision", "bf16", "--replica",
                          "pink-llm-bf16-test", NULL};
    fake_gateway g;
    if (fake_gateway_start(&g, argv, 30000) != 0) {
        CHECK_MSG(0, "the llm service did not start on the Pink model in bf16");
        fake_gateway_stop(&g);
        return;
    }
    tensor t;
    envelope_msg m;
    Lion__Envelope *job = job_new("bf16", REC, 1, steps, 0, vision_tokens, P, E, &t);
    envelope_tensor et = {LION_TENSOR_VISUAL_TOKENS, &t, NULL};
    if (fake_gateway_call(&g, job, &et, 1, &m, 30000) == 0) {
        CHECK_MSG(m.env->kind == LION__KIND__RESULT, "bf16: %s",
                  m.env->error && m.env->error->message ? m.env->error->message : "not a result");
        const Lion__Result *r = m.env->result;
        CHECK(r && r->prompt_tokens == (uint32_t)n_prompt && r->n_sequences >= 1 &&
              r->sequences[0]->n_token_ids >= 2);
        if (r && r->n_sequences >= 1) {
            const Lion__Sequence *s = r->sequences[0];
            int same = 0;
            while (same + 1 < (int)s->n_token_ids && same < steps && s->token_ids[same + 1] == want[same]) same++;
            printf("pink llm in bf16: %zu ids, the first %d of them the f32 reference's\n", s->n_token_ids - 1, same);
        }
        envelope_msg_close(&m);
    } else {
        CHECK_MSG(0, "bf16: no answer");
    }
    envelope_free(job);
    CHECK_EQ_INT(fake_gateway_stop(&g), 0);
}

/* The vision service's tokens for a PNG against clip_forward on the same preprocessing. */
static void test_vision(void) {
    lion_status st;
    model_config cfg;
    if (model_config_load(&cfg, model_dir, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return;
    }
    const pink_vision_config *v = &cfg.pink.vision;
    image img;
    CHECK(image_alloc(&img, 40, 30, &st) == 0); /* not the model's size: the resize runs */
    for (size_t i = 0; i < (size_t)40 * 30 * 3; i++) img.data[i] = (uint8_t)((i * 37 + i / 7) & 255);
    uint8_t *png = NULL;
    size_t png_len = 0;
    CHECK(image_encode_png(&img, &png, &png_len, &st) == 0);
    image_free(&img);
    /* here */
    clip_config cc;
    pink_clip_config(v, &cc);
    weights w = {0};
    clip_model cm = {0};
    arena a;
    arena_init(&a, 0);
    const size_t S = (size_t)v->image_size, n = (size_t)P * E;
    float *pixels = malloc(3 * S * S * sizeof *pixels), *want = malloc(n * sizeof *want);
    image_limits limits = image_limits_default();
    int ok = pixels && want && weights_open(&w, model_config_stage_file(&cfg, "vision"), "", &st) == 0 &&
             clip_load(&cm, &cc, &w, &st) == 0 &&
             image_preprocess(png, png_len, v->image_size, IMAGE_FILTER_BICUBIC, v->mean, v->std, pixels, &limits, &st) == 0 &&
             clip_forward(&cm, pixels, 1, NULL, want, &a, &st) == 0;
    CHECK_MSG(ok, "clip here: %s", st.msg);
    /* the service */
    const char *bin_dir = getenv("LION_BIN_DIR");
    char bin[4096];
    snprintf(bin, sizeof bin, "%s/lion-vision", bin_dir ? bin_dir : "build/services");
    const char *argv[] = {bin, "--model", model_dir, "--threads", "1", "--replica", "pink-vision-test", NULL};
    fake_gateway g;
    if (ok && fake_gateway_start(&g, argv, 30000) == 0) {
        for (int round = 0; round < 2; round++) {
            Lion__Envelope *job = envelope_new(LION__KIND__JOB, LION__STAGE__VISION, round ? "v2" : "v1", &st);
            int64_t shape[] = {(int64_t)png_len};
            tensor t = tensor_view(DTYPE_U8, png, 1, shape);
            envelope_tensor et = {LION_TENSOR_IMAGE, &t, NULL};
            envelope_msg m;
            if (fake_gateway_call(&g, job, &et, 1, &m, 30000) == 0) {
                CHECK_MSG(m.env->kind == LION__KIND__RESULT, "vision: %s",
                          m.env->error && m.env->error->message ? m.env->error->message : "not a result");
                const tensor *got = m.n_tensors == 1 ? &m.tensors[0] : NULL;
                CHECK(got && !strcmp(m.env->tensors[0]->name, LION_TENSOR_VISUAL_TOKENS));
                CHECK(got && got->ndim == 2 && got->shape[0] == P && got->shape[1] == E && got->dtype == DTYPE_F32);
                if (got && tensor_numel(got) == (int64_t)n)
                    CHECK_MSG(testing_max_abs_err(got->data, want, n) == 0.0, "vision tokens differ from clip_forward");
                CHECK(m.env->result && m.env->result->has_cache_hit && m.env->result->cache_hit == (round == 1));
                envelope_msg_close(&m);
            } else {
                CHECK_MSG(0, "vision: no answer");
            }
            envelope_free(job);
        }
        CHECK_EQ_INT(fake_gateway_stop(&g), 0);
    } else if (ok) {
        CHECK_MSG(0, "the vision service did not start on the Pink model");
        fake_gateway_stop(&g);
    }
    clip_free(&cm);
    weights_close(&w);
    arena_free(&a);
    free(pixels), free(want), free(png);
    model_config_free(&cfg);
}

int main(void) {
    snprintf(model_dir, sizeof model_dir, "%s", testing_fixture("pink_model/model"));
    lion_status st;
    safetensors_file *io;
    if (safetensors_open(&io, testing_fixture("pink_model/io.safetensors"), &st)) {
        CHECK_MSG(0, "%s", st.msg);
        return testing_finish();
    }
    tensor vt, ids, tk;
    model_config cfg;
    if (safetensors_get(io, "vision_tokens", &vt, &st) || safetensors_get(io, "ids", &ids, &st) ||
        safetensors_get(io, "tokens", &tk, &st) || model_config_load(&cfg, model_dir, &st)) {
        CHECK_MSG(0, "%s", st.msg);
        safetensors_close(io);
        return testing_finish();
    }
    vision_tokens = vt.data;
    P = (int)vt.shape[vt.ndim - 2], E = (int)vt.shape[vt.ndim - 1];
    const int eos = cfg.pink.tokenizer.eos_id;
    model_config_free(&cfg);
    test_llm(ids.data, (int)tensor_numel(&ids), tk.data, (int)tensor_numel(&tk), eos);
    test_llm_bf16((int)tensor_numel(&ids), tk.data, (int)tensor_numel(&tk));
    test_vision();
    safetensors_close(io);
    return testing_finish();
}

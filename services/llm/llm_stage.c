#include "llm_stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boxes.h"
#include "log.h"

/* Boxes read from one answer; more than this in a single answer are dropped. */
#define LLM_MAX_BOXES 64

/* The id of a single-token piece such as "<extra_id_0>", as the tokenizer reads it. */
static int piece_id(const spm_tokenizer *tok, const char *piece, int32_t *id, lion_status *st) {
    int32_t ids[4];
    size_t n;
    if (t5_tokenize(tok, piece, ids, 4, &n, st) || n != 2)
        return lion_fail(st, LION_EFORMAT, "llm: soft_prompt_token \"%s\" is not a single token", piece);
    *id = ids[0];
    return 0;
}

int llm_stage_open(llm_stage *s, const char *model_dir, lion_status *st) {
    return llm_stage_open_with(s, model_dir, PRECISION_F32, st);
}

int llm_stage_open_with(llm_stage *s, const char *model_dir, lion_precision precision, lion_status *st) {
    memset(s, 0, sizeof *s);
    arena_init(&s->scratch, 0);
    if (model_config_load(&s->cfg, model_dir, st)) return -1;
    const llm_config *l = &s->cfg.llm;
    /* LION_MAX_PROMPT_TOKENS leaves room for this much tag prompt and no more */
    if (strlen(l->tag_prompt) > LION_MAX_TAG_PROMPT_BYTES) {
        lion_fail(st, LION_EFORMAT, "llm: llm.tag_prompt is %zu bytes, over the limit of %d", strlen(l->tag_prompt),
                  LION_MAX_TAG_PROMPT_BYTES);
        goto fail;
    }
    s->prompt_ids = malloc(sizeof *s->prompt_ids * LION_MAX_PROMPT_TOKENS);
    if (!s->prompt_ids) {
        lion_fail(st, LION_ENOMEM, "llm: out of memory");
        goto fail;
    }
    t5_config tc;
    t5_config_from_llm(&tc, l);
    if (weights_open(&s->w, l->file, "t5_model.", st) || t5_load_with(&s->t5, &tc, &s->w, precision, st) ||
        spm_load(l->spiece, &s->tok, st))
        goto fail;
    if (t5_vocab_size(s->tok) > (size_t)l->vocab_size) {
        lion_fail(st, LION_EFORMAT, "llm: the tokenizer's %zu ids do not fit the vocabulary of %d",
                  t5_vocab_size(s->tok), l->vocab_size);
        goto fail;
    }
    s->embedder = (prompt_embedder){s->t5.shared, l->vocab_size, l->d_model, NULL, -1, l->pad_id};
    if (l->soft_prompt_token) {
        int64_t shape[] = {l->d_model};
        if (weights_open(&s->root, l->file, "", st) || piece_id(s->tok, l->soft_prompt_token, &s->embedder.soft_prompt_id, st))
            goto fail;
        s->embedder.soft_prompt_hint = weights_get(&s->root, st, 1, shape, "soft_prompt_hint");
        if (!s->embedder.soft_prompt_hint) goto fail;
    }
    generate_params *p = &s->defaults;
    const generation_config *g = &l->generation;
    generate_params_default(p);
    p->num_beams = g->num_beams;
    p->max_new_tokens = g->max_new_tokens;
    p->min_length = g->min_length;
    p->repetition_penalty = g->repetition_penalty;
    p->length_penalty = g->length_penalty;
    p->top_p = g->top_p;
    p->temperature = g->temperature;
    p->do_sample = g->do_sample;
    p->decoder_start_id = l->decoder_start_id;
    p->eos_id = l->eos_id;
    p->pad_id = l->pad_id;
    log_info("llm: %s, T5 d_model %d d_ff %d, %d+%d layers, vocab %d, %d adapters, %.1f MB f32 weights; "
             "defaults %d beams, %d new tokens",
             s->cfg.name, l->d_model, l->d_ff, l->encoder_layers, l->decoder_layers, l->vocab_size, l->adapters_num,
             s->w.bytes_f32 / 1e6, p->num_beams, p->max_new_tokens);
    if (s->t5.step_bf16)
        log_info("llm: decoder step in bf16: %.1f MB of bf16 matrices (%.1f MB converted at load, the rest used in "
                 "place), %.1f MB of file pages released after conversion; encoder, cross-attention keys/values, adapters and "
                 "embeddings f32",
                 s->t5.step_bf16_bytes / 1e6, s->t5.bf16_owned_bytes / 1e6, s->t5.released_bytes / 1e6);
    return 0;
fail:
    llm_stage_close(s);
    return -1;
}

void llm_stage_close(llm_stage *s) {
    t5_free(&s->t5);
    weights_close(&s->w);
    weights_close(&s->root);
    spm_free(s->tok);
    arena_free(&s->scratch);
    free(s->prompt_ids);
    model_config_free(&s->cfg);
    memset(s, 0, sizeof *s);
}

char *llm_prompt_text(const llm_config *l, const char *const *tags, size_t n_tags, const char *instruction) {
    const char *slot = l->soft_prompt_token && l->tag_prompt ? strstr(l->tag_prompt, "{}") : NULL;
    size_t len = strlen(instruction) + 1;
    if (slot) {
        len += strlen(l->tag_prompt);
        for (size_t i = 0; i < n_tags; i++) len += strlen(tags[i]) + 2;
    }
    char *out = malloc(len), *p = out;
    if (!out) return NULL;
    if (slot) {
        memcpy(p, l->tag_prompt, (size_t)(slot - l->tag_prompt));
        p += slot - l->tag_prompt;
        for (size_t i = 0; i < n_tags; i++) {
            p += sprintf(p, "%s%s", i ? ", " : "", tags[i]);
        }
        p += sprintf(p, "%s", slot + 2);
    }
    strcpy(p, instruction);
    return out;
}

int llm_task_params(const llm_stage *s, const Lion__Task *task, generate_params *p, int *router_idx,
                    lion_status *st) {
    *p = s->defaults;
    *router_idx = task->has_task_type && task->task_type == LION__TASK_TYPE__REGION_LEVEL ? 0 : 1;
    const Lion__GenerationParams *g = task->generation;
    const char *f = "task.generation";
    /* the unsigned fields are checked before they become ints */
    if (g && g->has_num_beams && (g->num_beams < 1 || g->num_beams > LION_MAX_BEAMS))
        return lion_fail(st, LION_EINVAL, "%s.num_beams: %u is not in [1, %d]", f, g->num_beams, LION_MAX_BEAMS);
    if (g && g->has_max_new_tokens && (g->max_new_tokens < 1 || g->max_new_tokens > LION_MAX_NEW_TOKENS))
        return lion_fail(st, LION_EINVAL, "%s.max_new_tokens: %u is not in [1, %d]", f, g->max_new_tokens,
                         LION_MAX_NEW_TOKENS);
    if (g && g->has_num_return_sequences && g->num_return_sequences > LION_MAX_RETURN_SEQUENCES)
        return lion_fail(st, LION_EINVAL, "%s.num_return_sequences: %u is over the limit of %d", f,
                         g->num_return_sequences, LION_MAX_RETURN_SEQUENCES);
    if (g && g->has_min_length && g->min_length > LION_MAX_MIN_LENGTH)
        return lion_fail(st, LION_EINVAL, "%s.min_length: %u is over the limit of %d", f, g->min_length,
                         LION_MAX_MIN_LENGTH);
    if (g) {
        if (g->has_num_beams) p->num_beams = (int)g->num_beams;
        if (g->has_max_new_tokens) p->max_new_tokens = (int)g->max_new_tokens;
        if (g->has_min_length) p->min_length = (int)g->min_length;
        if (g->has_repetition_penalty) p->repetition_penalty = g->repetition_penalty;
        if (g->has_length_penalty) p->length_penalty = g->length_penalty;
        if (g->has_top_p) p->top_p = g->top_p;
        if (g->has_temperature) p->temperature = g->temperature;
        if (g->has_do_sample) p->do_sample = g->do_sample;
        if (g->has_seed) p->seed = g->seed;
        if (g->has_num_return_sequences) p->num_return_sequences = (int)g->num_return_sequences;
    }
    /* model.json's num_beams is for beam search: sampling without a num_beams of its own
     * samples one sequence */
    if (p->do_sample && !(g && g->has_num_beams)) p->num_beams = 1;
    /* model.json's defaults are checked too: a model directory may hold any numbers. The float
     * limits are compared as floats: the gateway checks the JSON number, then stores a float,
     * and (float)0.01 is below the double 0.01. NaN fails every range. */
    if (p->num_beams < 1 || p->num_beams > LION_MAX_BEAMS)
        return lion_fail(st, LION_EINVAL, "%s.num_beams: %d is not in [1, %d]", f, p->num_beams, LION_MAX_BEAMS);
    if (p->max_new_tokens < 1 || p->max_new_tokens > LION_MAX_NEW_TOKENS)
        return lion_fail(st, LION_EINVAL, "%s.max_new_tokens: %d is not in [1, %d]", f, p->max_new_tokens,
                         LION_MAX_NEW_TOKENS);
    if (p->min_length > LION_MAX_MIN_LENGTH)
        return lion_fail(st, LION_EINVAL, "%s.min_length: %d is over the limit of %d", f, p->min_length,
                         LION_MAX_MIN_LENGTH);
    if (!(p->repetition_penalty >= (float)LION_MIN_REPETITION_PENALTY &&
          p->repetition_penalty <= (float)LION_MAX_REPETITION_PENALTY))
        return lion_fail(st, LION_EINVAL, "%s.repetition_penalty: %g is not in [%g, %g]", f, p->repetition_penalty,
                         LION_MIN_REPETITION_PENALTY, LION_MAX_REPETITION_PENALTY);
    if (!(fabsf(p->length_penalty) <= (float)LION_MAX_ABS_LENGTH_PENALTY))
        return lion_fail(st, LION_EINVAL, "%s.length_penalty: %g is not in [%g, %g]", f, p->length_penalty,
                         -LION_MAX_ABS_LENGTH_PENALTY, LION_MAX_ABS_LENGTH_PENALTY);
    if (!(p->top_p > 0 && p->top_p <= 1)) return lion_fail(st, LION_EINVAL, "%s.top_p: %g is not in (0, 1]", f, p->top_p);
    /* 0 means "no sampling" to many clients: refused only where it would be divided by */
    if (!(p->temperature >= 0 && p->temperature <= (float)LION_MAX_TEMPERATURE) ||
        (p->do_sample && p->temperature == 0))
        return lion_fail(st, LION_EINVAL, "%s.temperature: %g is not in %s0, %g]%s", f, p->temperature,
                         p->do_sample ? "(" : "[", LION_MAX_TEMPERATURE, p->do_sample ? " when sampling" : "");
    if (p->do_sample && p->num_beams > 1)
        return lion_fail(st, LION_EINVAL, "%s.do_sample: sampling with num_beams %d is not supported", f, p->num_beams);
    int max_return = p->num_beams > 1 ? p->num_beams : 1;
    if (p->num_return_sequences < 1 || p->num_return_sequences > max_return)
        return lion_fail(st, LION_EINVAL, "%s.num_return_sequences: %d is not in [1, num_beams %d]", f,
                         p->num_return_sequences, max_return);
    if (p->num_beams > 1 && 2 * p->num_beams > s->cfg.llm.vocab_size)
        return lion_fail(st, LION_EINVAL, "%s.num_beams: %d beams need a vocabulary of at least %d", f, p->num_beams,
                         2 * p->num_beams);
    return 0;
}

uint64_t llm_request_seed(const char *request_id) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, 64 bits */
    for (const unsigned char *c = (const unsigned char *)(request_id ? request_id : ""); *c; c++)
        h = (h ^ *c) * 0x100000001b3ULL;
    return h;
}

/* One job as the stage prepared it. */
typedef struct llm_job {
    int ready; /* passed validation and waits for its group */
    generate_params params;
    int router_idx;
    uint64_t seed; /* sampling: the task's seed, or llm_request_seed */
    float *visual; /* [n_visual, d_model] f32 copy */
    int n_visual;
    int32_t *ids;  /* [n_ids]: the prompt's token ids */
    int n_ids;
    /* streaming (task.stream, greedy or sampling) */
    int stream;
    char *sent;       /* the text sent in PARTIALs so far (malloc'ed, NULL: none) */
    size_t sent_len;
    int ids_sent;     /* generated ids that went out in PARTIALs */
    int failed;       /* a PARTIAL could not be sent: the job has failed, its rows stop */
} llm_job;

/* Validates a job and fills j; on failure st names the tensor or field. */
static int job_prepare(const llm_stage *s, const worker_job *job, llm_job *j, lion_status *st) {
    const llm_config *l = &s->cfg.llm;
    const Lion__Task *task = job->task;
    if (llm_task_params(s, task, &j->params, &j->router_idx, st)) return -1;
    const Lion__GenerationParams *g = task->generation;
    j->seed = g && g->has_seed ? g->seed : llm_request_seed(job->env->request_id);
    j->stream = task->has_stream && task->stream && j->params.num_beams == 1;
    const tensor *v = worker_job_input(job, LION_TENSOR_VISUAL_TOKENS, st);
    if (!v) return -1;
    if (v->dtype != DTYPE_F32 && v->dtype != DTYPE_F16 && v->dtype != DTYPE_BF16)
        return lion_fail(st, LION_EINVAL, "%s: dtype %s, expected F32, F16 or BF16", LION_TENSOR_VISUAL_TOKENS,
                         dtype_name(v->dtype));
    if (v->ndim != 2 || v->shape[1] != l->d_model || v->shape[0] < 1 || v->shape[0] > LION_MAX_VISUAL_TOKENS)
        return lion_fail(st, LION_EINVAL, "%s: shape must be [n, %d] with n in [1, %d]", LION_TENSOR_VISUAL_TOKENS,
                         l->d_model, LION_MAX_VISUAL_TOKENS);
    j->n_visual = (int)v->shape[0];
    size_t n = (size_t)j->n_visual * l->d_model;
    j->visual = malloc(n * sizeof(float));
    if (!j->visual) return lion_fail(st, LION_ENOMEM, "llm: out of memory for %s", LION_TENSOR_VISUAL_TOKENS);
    if (convert_to_f32(j->visual, v->data, v->dtype, n, st)) return -1;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(j->visual[i]))
            return lion_fail(st, LION_EINVAL, "%s: value %zu is not finite", LION_TENSOR_VISUAL_TOKENS, i);

    if (!task->instruction) return lion_fail(st, LION_EINVAL, "task.instruction: missing");
    size_t len = strlen(task->instruction);
    if (len > LION_MAX_INSTRUCTION_BYTES)
        return lion_fail(st, LION_EINVAL, "task.instruction: %zu bytes, over the limit of %d", len,
                         LION_MAX_INSTRUCTION_BYTES);
    char *text = llm_prompt_text(l, (const char *const *)task->tags, task->n_tags, task->instruction);
    if (!text) return lion_fail(st, LION_ENOMEM, "llm: out of memory for the prompt");
    /* tokenized into the stage's buffer of the largest prompt, kept in one of its own size */
    size_t n_ids;
    lion_status ts;
    int rc = t5_tokenize(s->tok, text, s->prompt_ids, LION_MAX_PROMPT_TOKENS, &n_ids, &ts);
    free(text);
    if (rc && ts.code == LION_ETOOBIG)
        return lion_fail(st, LION_EINVAL, "task.instruction: the prompt is %zu tokens, over the limit of %d", n_ids,
                         LION_MAX_PROMPT_TOKENS);
    if (rc) return lion_fail(st, LION_EINVAL, "task.instruction: %s", ts.msg);
    j->ids = malloc(n_ids * sizeof *j->ids);
    if (!j->ids) return lion_fail(st, LION_ENOMEM, "llm: out of memory for the prompt");
    memcpy(j->ids, s->prompt_ids, n_ids * sizeof *j->ids);
    j->n_ids = (int)n_ids;
    return 0;
}

/* Same parameters and route: the jobs can share one generate_run (each samples with its own
 * seed, so seeds may differ). */
static int same_group(const llm_job *a, const llm_job *b) {
    const generate_params *p = &a->params, *q = &b->params;
    return a->router_idx == b->router_idx && p->num_beams == q->num_beams && p->max_new_tokens == q->max_new_tokens &&
           p->min_length == q->min_length && p->repetition_penalty == q->repetition_penalty &&
           p->length_penalty == q->length_penalty && p->num_return_sequences == q->num_return_sequences &&
           p->do_sample == q->do_sample && p->temperature == q->temperature && p->top_p == q->top_p &&
           p->top_k == q->top_k;
}

/* Adds request r of res (prepared as j) to the job's RESULT. */
static int add_sequences(const llm_stage *s, worker_job *job, const llm_job *j, const generate_result *res, int r,
                         lion_status *st) {
    if (envelope_set_prompt_tokens(job->reply, (uint32_t)(j->n_visual + j->n_ids), st)) return -1;
    for (int k = 0; k < res->per_request; k++) {
        size_t row = (size_t)r * res->per_request + k;
        const int32_t *ids = res->ids + row * res->stride;
        const int len = res->lengths[row];
        char *text;
        if (spm_decode(s->tok, ids, (size_t)len, &text, st)) return -1;
        Lion__Sequence *seq = envelope_add_sequence(job->reply, text, ids, (size_t)len, (float)res->scores[row], st);
        text_box boxes[LLM_MAX_BOXES];
        size_t nb = seq ? boxes_parse(text, boxes, LLM_MAX_BOXES) : 0;
        free(text);
        if (!seq) return -1;
        /* an answer ends with eos unless max_new_tokens stopped it first */
        int stop = len > 1 && ids[len - 1] == j->params.eos_id;
        envelope_sequence_set_finish(seq, stop ? LION__FINISH_REASON__STOP : LION__FINISH_REASON__LENGTH,
                                     (uint32_t)(len > 0 ? len - 1 : 0));
        for (size_t b = 0; b < nb && b < LLM_MAX_BOXES; b++)
            if (envelope_add_box(seq, boxes[b].x0, boxes[b].y0, boxes[b].x1, boxes[b].y1, st)) return -1;
    }
    return 0;
}

#define LLM_CANCELLED_MSG "cancelled by the gateway"

/* One group's generation, as generate's hooks see it: request r is jobs[members[r]]. */
typedef struct group_run {
    const llm_stage *s;
    worker_job *jobs;
    llm_job *js;
    const int *members;
} group_run;

/* generate_options.stop: the gateway cancelled the job, or its stream broke. */
static int group_stop(void *ctx, int r) {
    group_run *g = ctx;
    return worker_job_cancelled(&g->jobs[g->members[r]]) || g->js[g->members[r]].failed;
}

/* The length of text without its trailing U+FFFD: a byte-fallback character whose bytes have
 * not all been generated decodes to replacement characters until they have. */
static size_t settled_length(const char *text, size_t len) {
    while (len >= 3 && memcmp(text + len - 3, "\xEF\xBF\xBD", 3) == 0) len -= 3;
    return len;
}

/* generate_options.step: a streamed job's new text goes out as a PARTIAL with the ids
 * generated since the last one. The text so far is decoded whole each step and only what
 * extends the text already sent (minus a character still being spelled in bytes) is sent,
 * so that the PARTIALs add up to the RESULT's text exactly. */
static void group_step(void *ctx, int r, const int32_t *ids, int n_ids, int finished) {
    group_run *g = ctx;
    worker_job *job = &g->jobs[g->members[r]];
    llm_job *j = &g->js[g->members[r]];
    if (!j->stream || j->failed) return;
    char *text;
    lion_status st;
    if (spm_decode(g->s->tok, ids, (size_t)n_ids, &text, &st)) goto fail;
    size_t len = strlen(text), ready = finished ? len : settled_length(text, len);
    int extends = len >= j->sent_len && (!j->sent_len || memcmp(text, j->sent, j->sent_len) == 0);
    if (finished && !extends)
        log_warn("request %s: the answer \"%.64s\" does not extend the %zu bytes streamed", job->env->request_id, text,
                 j->sent_len);
    if (ready <= j->sent_len || !extends) {
        free(text); /* nothing new, or not an extension of what was sent yet: held back */
        return;
    }
    const int generated = n_ids - 1; /* the decoder start id is no part of the answer */
    char saved = text[ready];
    text[ready] = '\0';
    int rc = worker_job_send_partial(job, text + j->sent_len, ids + 1 + j->ids_sent, (size_t)(generated - j->ids_sent),
                                     &st);
    text[ready] = saved;
    if (rc) {
        free(text);
        goto fail;
    }
    free(j->sent);
    j->sent = text;
    j->sent_len = ready;
    j->ids_sent = generated;
    return;
fail:
    j->failed = 1;
    worker_job_fail(job, st.code, "llm: streaming: %s", st.msg);
}

/* Runs the ready jobs in members[0..m) (one group) as one batch; jobs the gateway has
 * cancelled meanwhile are failed without running, and stop when cancelled while they run. */
static int run_group(llm_stage *s, worker_job *jobs, llm_job *js, const int *members_in, int m_in, lion_status *st) {
    int *members = malloc((size_t)m_in * sizeof *members);
    prompt_request *reqs = malloc((size_t)m_in * sizeof *reqs);
    uint64_t *seeds = malloc((size_t)m_in * sizeof *seeds);
    if (!members || !reqs || !seeds) {
        free(members), free(reqs), free(seeds);
        return lion_fail(st, LION_ENOMEM, "llm: out of memory");
    }
    int m = 0;
    for (int k = 0; k < m_in; k++) {
        if (worker_job_cancelled(&jobs[members_in[k]])) {
            worker_job_fail(&jobs[members_in[k]], LION_ECANCELED, LLM_CANCELLED_MSG);
            continue;
        }
        const llm_job *j = &js[members_in[k]];
        reqs[m] = (prompt_request){j->visual, j->n_visual, j->ids, j->n_ids};
        seeds[m] = j->seed;
        members[m++] = members_in[k];
    }
    int rc = 0;
    if (m > 0) {
        prompt_batch b;
        generate_result res = {0};
        const llm_job *first = &js[members[0]];
        group_run gr = {s, jobs, js, members};
        generate_options opts = {.seeds = seeds, .ctx = &gr, .stop = group_stop, .step = group_step};
        rc = prompt_batch_build(&b, &s->embedder, reqs, m, 0, st);
        if (!rc) {
            rc = generate_run_with(&s->t5, b.embeds, b.mask, b.batch, b.len, first->router_idx, &first->params, &opts,
                                   &res, &s->scratch, st);
            prompt_batch_free(&b);
        }
        arena_reset(&s->scratch);
        for (int k = 0; k < m && !rc; k++) {
            worker_job *job = &jobs[members[k]];
            lion_status js_st;
            if (js[members[k]].failed) continue; /* failed with the stream's error */
            if (res.stopped[k]) worker_job_fail(job, LION_ECANCELED, LLM_CANCELLED_MSG);
            else if (add_sequences(s, job, &js[members[k]], &res, k, &js_st))
                worker_job_fail(job, js_st.code, "%s", js_st.msg);
        }
        if (!rc) generate_result_free(&res);
    }
    free(members), free(reqs), free(seeds);
    return rc ? -1 : 0;
}

int llm_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    llm_stage *s = ctx;
    llm_job *js = calloc((size_t)n, sizeof *js);
    int *members = malloc((size_t)n * sizeof *members);
    if (!js || !members) {
        free(js), free(members);
        return lion_fail(st, LION_ENOMEM, "llm: out of memory for a batch of %d", n);
    }
    for (int i = 0; i < n; i++) {
        lion_status jst;
        if (job_prepare(s, &jobs[i], &js[i], &jst)) worker_job_fail(&jobs[i], jst.code, "%s", jst.msg);
        else js[i].ready = 1;
    }
    /* groups in order of their first job; a group's failure fails only its jobs */
    for (int i = 0; i < n; i++) {
        if (!js[i].ready) continue;
        int m = 0;
        for (int k = i; k < n; k++)
            if (js[k].ready && same_group(&js[i], &js[k])) members[m++] = k;
        lion_status gst;
        if (run_group(s, jobs, js, members, m, &gst))
            for (int k = 0; k < m; k++) /* a job that failed on its own keeps its own reason */
                if (!js[members[k]].failed) worker_job_fail(&jobs[members[k]], gst.code, "%s", gst.msg);
        for (int k = 0; k < m; k++) js[members[k]].ready = 0;
    }
    for (int i = 0; i < n; i++) free(js[i].visual), free(js[i].ids), free(js[i].sent);
    free(js), free(members);
    return 0;
}

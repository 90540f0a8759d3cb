#include "llm_job.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "boxes.h"
#include "log.h"
#include "pink_instruction.h"
#include "protocol.h"

/* Boxes read from one answer; more than this in a single answer are dropped. */
#define LLM_MAX_BOXES 64

/* A Pink job: the visual tokens of its image ([image_tokens, dim], from the vision stage),
 * its instruction as one of Pink's tasks (pink_instruction.h), the llamav2 prompt with the
 * image tokens' embeddings replaced by the visual tokens; its search starts from the prompt's
 * last id. */
static int prepare_pink(llm_stage *s, worker_job *job, llm_job *j, lion_status *st) {
    const pink_config *pc = &s->cfg.pink;
    const Lion__Task *task = job->task;
    const int dim = pc->llm.dim, n_image = pc->prompt.image_tokens;
    const tensor *v = worker_job_input(job, LION_TENSOR_VISUAL_TOKENS, st);
    if (!v) return -1;
    if (v->dtype != DTYPE_F32 && v->dtype != DTYPE_F16 && v->dtype != DTYPE_BF16)
        return lion_fail(st, LION_EINVAL, "%s: dtype %s, expected F32, F16 or BF16", LION_TENSOR_VISUAL_TOKENS,
                         dtype_name(v->dtype));
    if (v->ndim != 2 || v->shape[0] != n_image || v->shape[1] != dim)
        return lion_fail(st, LION_EINVAL, "%s: shape must be [%d, %d] (the model's image tokens)",
                         LION_TENSOR_VISUAL_TOKENS, n_image, dim);
    if (!task->instruction) return lion_fail(st, LION_EINVAL, "task.instruction: missing");
    if (strlen(task->instruction) > LION_MAX_INSTRUCTION_BYTES)
        return lion_fail(st, LION_EINVAL, "task.instruction: %zu bytes, over the limit of %d",
                         strlen(task->instruction), LION_MAX_INSTRUCTION_BYTES);
    pink_task kind;
    char *text = NULL;
    double box[4];
    if (pink_instruction_parse(task->instruction, &kind, &text, box, st)) return -1;
    pink_prompt pp;
    /* the prompt and the answer share the model's positions (and the cache's) */
    int rc = pink_prompt_build(&pc->prompt, s->ltok, kind, text, kind == PINK_TASK_REGION_CAPTION ? box : NULL,
                               (size_t)pc->llm.max_positions - 1, &pp, st);
    free(text);
    if (rc) return lion_fail_prefix(st, "task.instruction: ");
    const int room = pc->llm.max_positions - (int)pp.n_ids;
    const Lion__GenerationParams *g = task->generation;
    if (j->params.max_new_tokens > room) {
        if (g && g->has_max_new_tokens) {
            const size_t n = pp.n_ids;
            pink_prompt_free(&pp);
            return lion_fail(st, LION_EINVAL,
                             "task.generation.max_new_tokens: %d after a prompt of %zu tokens exceeds the model's %d "
                             "positions", j->params.max_new_tokens, n, pc->llm.max_positions);
        }
        j->params.max_new_tokens = room; /* the model's default: as long as the positions allow */
    }
    j->ids = pp.ids, j->n_ids = (int)pp.n_ids;
    const size_t image_at = pp.image_offset;
    pp.ids = NULL;
    pink_prompt_free(&pp);
    j->embeds = malloc((size_t)j->n_ids * dim * sizeof *j->embeds);
    if (!j->embeds) return lion_fail(st, LION_ENOMEM, "llm: out of memory for the prompt");
    if (llama_embed(&s->llama, j->ids, j->n_ids, j->embeds, st)) return -1;
    float *img = j->embeds + image_at * dim;
    if (convert_to_f32(img, v->data, v->dtype, (size_t)n_image * dim, st)) return -1;
    for (size_t i = 0; i < (size_t)n_image * dim; i++)
        if (!isfinite(img[i])) return lion_fail(st, LION_EINVAL, "%s: value %zu is not finite", LION_TENSOR_VISUAL_TOKENS, i);
    j->n_visual = 0; /* the image tokens are positions of the prompt */
    j->params.decoder_start_id = j->ids[j->n_ids - 1];
    return 0;
}

int llm_job_prepare(llm_stage *s, worker_job *job, llm_job *j, lion_status *st) {
    memset(j, 0, sizeof *j);
    j->job = job;
    const Lion__Task *task = job->task;
    if (llm_task_params(s, task, &j->params, &j->router_idx, st)) return -1;
    const Lion__GenerationParams *g = task->generation;
    j->seed = g && g->has_seed ? g->seed : llm_request_seed(job->env->request_id);
    j->stream = task->has_stream && task->stream && j->params.num_beams == 1;
    if (s->cfg.family == MODEL_FAMILY_PINK) return prepare_pink(s, job, j, st);
    const llm_config *l = &s->cfg.llm;
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

void llm_job_release(llm_job *j) {
    free(j->visual);
    free(j->ids);
    free(j->embeds);
    free(j->sent);
    j->visual = NULL, j->ids = NULL, j->embeds = NULL, j->sent = NULL;
}

/* The text of a generated sequence (its first id is the start id: no part of the answer for
 * Pink, whose start is the prompt's last id; T5's decoder start id is a special token the
 * decode skips), special tokens skipped. */
static int decode_answer(const llm_stage *s, const int32_t *ids, int n, char **text, lion_status *st) {
    if (s->cfg.family == MODEL_FAMILY_PINK) return llama_tok_decode(s->ltok, ids + 1, (size_t)(n > 0 ? n - 1 : 0), text, st);
    return spm_decode(s->tok, ids, (size_t)n, text, st);
}

/* The length of text without its trailing U+FFFD: a byte-fallback character whose bytes have
 * not all been generated decodes to replacement characters until they have. */
static size_t settled_length(const char *text, size_t len) {
    while (len >= 3 && memcmp(text + len - 3, "\xEF\xBF\xBD", 3) == 0) len -= 3;
    return len;
}

/* The text so far is decoded whole each step and only what extends the text already sent
 * (minus a character still being spelled in bytes) is sent, so that the PARTIALs add up to
 * the RESULT's text exactly. */
void llm_job_stream(const llm_stage *s, llm_job *j, const int32_t *ids, int n_ids, int finished) {
    worker_job *job = j->job;
    if (!j->stream || j->failed) return;
    char *text;
    lion_status st;
    if (decode_answer(s, ids, n_ids, &text, &st)) goto fail;
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

int llm_job_answer(const llm_stage *s, llm_job *j, search *sr, lion_status *st) {
    worker_job *job = j->job;
    const int per = j->params.num_return_sequences, stride = j->params.max_new_tokens + 1;
    int32_t *all = malloc((size_t)per * stride * sizeof *all);
    int *lengths = malloc((size_t)per * sizeof *lengths);
    double *scores = malloc((size_t)per * sizeof *scores);
    int rc = -1;
    if (!all || !lengths || !scores) {
        lion_fail(st, LION_ENOMEM, "llm: out of memory for the answer");
        goto done;
    }
    search_output(sr, all, stride, lengths, scores);
    if (envelope_set_prompt_tokens(job->reply, (uint32_t)(j->n_visual + j->n_ids), st)) goto done;
    if (j->first_token_us && envelope_set_first_token(job->reply, j->first_token_us, st)) goto done;
    for (int k = 0; k < per; k++) {
        const int32_t *ids = all + (size_t)k * stride;
        const int len = lengths[k];
        char *text;
        if (decode_answer(s, ids, len, &text, st)) goto done;
        Lion__Sequence *seq = envelope_add_sequence(job->reply, text, ids, (size_t)len, (float)scores[k], st);
        text_box boxes[LLM_MAX_BOXES];
        size_t nb = seq ? boxes_parse(text, boxes, LLM_MAX_BOXES) : 0;
        free(text);
        if (!seq) goto done;
        /* an answer ends with eos unless max_new_tokens stopped it first */
        int stop = len > 1 && ids[len - 1] == j->params.eos_id;
        envelope_sequence_set_finish(seq, stop ? LION__FINISH_REASON__STOP : LION__FINISH_REASON__LENGTH,
                                     (uint32_t)(len > 0 ? len - 1 : 0));
        for (size_t b = 0; b < nb && b < LLM_MAX_BOXES; b++)
            if (envelope_add_box(seq, boxes[b].x0, boxes[b].y0, boxes[b].x1, boxes[b].y1, st)) goto done;
    }
    rc = 0;
done:
    free(all), free(lengths), free(scores);
    return rc;
}

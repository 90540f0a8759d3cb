#include "llm_stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_job.h"
#include "log.h"
#include "pink_config.h"

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
    return llm_stage_open_budget(s, model_dir, precision, (size_t)LLM_DEFAULT_KV_BUDGET_MB << 20, st);
}

/* model.json's generation defaults over generate_params_default. */
static void params_from_model(generate_params *p, const generation_config *g) {
    generate_params_default(p);
    p->num_beams = g->num_beams;
    p->max_new_tokens = g->max_new_tokens;
    p->min_length = g->min_length;
    p->repetition_penalty = g->repetition_penalty;
    p->length_penalty = g->length_penalty;
    p->top_p = g->top_p;
    p->temperature = g->temperature;
    p->do_sample = g->do_sample;
}

/* The shared KV cache of a Pink model: as many sequences of max_positions as the budget
 * holds (none given: LLM_PINK_SLOTS). */
static int pink_cache_slots(const llm_stage *s) {
    const size_t per = decode_llama_slot_bytes(&s->llama, s->cfg.pink.llm.max_positions);
    size_t slots = s->kv_budget ? s->kv_budget / per : LLM_PINK_SLOTS;
    if (slots > LLM_PINK_SLOTS) slots = LLM_PINK_SLOTS;
    return slots > 0 ? (int)slots : 1;
}

/* A Pink model: its LLaMA, the LLaMA tokenizer with Pink's added tokens, generation defaults. */
static int open_pink(llm_stage *s, lion_precision precision, lion_status *st) {
    const pink_llm_config *l = &s->cfg.pink.llm;
    llama_config lc;
    pink_llama_config(l, &lc);
    if (weights_open(&s->w, model_config_stage_file(&s->cfg, "llm"), "", st) ||
        llama_load_with(&s->llama, &lc, &s->w, precision, st) ||
        pink_tokenizer_load(&s->cfg.pink.tokenizer, l->vocab_size, &s->ltok, st))
        return -1;
    const int slots = pink_cache_slots(s);
    if (decode_batch_init_llama(&s->running, &s->llama, slots, l->max_positions, st)) return -1;
    generate_params *p = &s->defaults;
    params_from_model(p, &l->generation);
    /* upstream's 1024 is over what a request may ask (protocol.h); each job is also bounded
     * by the positions its prompt leaves */
    if (p->max_new_tokens > LION_MAX_NEW_TOKENS) p->max_new_tokens = LION_MAX_NEW_TOKENS;
    p->eos_id = s->cfg.pink.tokenizer.eos_id;
    p->pad_id = s->cfg.pink.tokenizer.pad_id >= 0 ? s->cfg.pink.tokenizer.pad_id : p->eos_id;
    size_t released;
    const size_t matrices = llama_matrix_bytes(&s->llama, &released);
    log_info("llm: %s (Pink), LLaMA dim %d hidden %d, %d layers, %d heads (%d kv), vocab %d, %d positions, adapters %d; "
             "matrices %.1f MB in %s (%s), %.1f MB of file pages released, %.1f MB of tensors held f32; KV cache of "
             "%d sequences (%.1f MB); defaults %d beams, %d new tokens",
             s->cfg.name, l->dim, l->hidden, l->layers, l->heads, l->kv_heads, l->vocab_size, l->max_positions,
             l->adapter_dim, matrices / 1e6, precision_name(s->llama.precision), linear_form(&s->llama.lm_head),
             released / 1e6, s->w.bytes_f32 / 1e6, slots,
             slots * decode_llama_slot_bytes(&s->llama, l->max_positions) / 1e6, p->num_beams, p->max_new_tokens);
    return 0;
}

int llm_stage_open_budget(llm_stage *s, const char *model_dir, lion_precision precision, size_t kv_budget,
                          lion_status *st) {
    memset(s, 0, sizeof *s);
    arena_init(&s->scratch, 0);
    s->kv_budget = kv_budget;
    s->prefill_tokens = LLM_DEFAULT_PREFILL_TOKENS;
    decode_batch_init(&s->running, &s->t5);
    if (model_config_load(&s->cfg, model_dir, st)) return -1;
    if (s->cfg.family == MODEL_FAMILY_PINK) {
        if (open_pink(s, precision, st)) goto fail;
        return 0;
    }
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
    params_from_model(p, &l->generation);
    p->decoder_start_id = l->decoder_start_id;
    p->eos_id = l->eos_id;
    p->pad_id = l->pad_id;
    log_info("llm: %s, T5 d_model %d d_ff %d, %d+%d layers, vocab %d, %d adapters, %.1f MB f32 weights; "
             "defaults %d beams, %d new tokens",
             s->cfg.name, l->d_model, l->d_ff, l->encoder_layers, l->decoder_layers, l->vocab_size, l->adapters_num,
             s->w.bytes_f32 / 1e6, p->num_beams, p->max_new_tokens);
    if (s->t5.precision == PRECISION_BF16) {
        t5_weight_bytes b;
        t5_weight_bytes_of(&s->t5, &b);
        log_info("llm: matrices in bf16: encoder %.1f MB (%s), cross-attention keys/values %.1f MB, decoder step "
                 "%.1f MB (%s); %.1f MB converted or packed at load, the rest used in place; %.1f MB of file pages "
                 "released; adapters, norms and embeddings f32",
                 b.encoder / 1e6, linear_form(&s->t5.encoder.layers[0].ff.wi_0), b.cross_kv / 1e6, b.step / 1e6,
                 linear_form(&s->t5.decoder.layers[0].ff.wi_0), b.owned / 1e6, b.released / 1e6);
    }
    return 0;
fail:
    llm_stage_close(s);
    return -1;
}

void llm_stage_close(llm_stage *s) {
    /* the worker answers every job before it closes the stage: nothing is held here */
    decode_batch_free(&s->running);
    while (s->waiting) {
        llm_job *j = s->waiting;
        s->waiting = j->next;
        llm_job_release(j);
        free(j);
    }
    t5_free(&s->t5);
    llama_free(&s->llama);
    llama_tok_free(s->ltok);
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
    const int vocab = s->cfg.family == MODEL_FAMILY_PINK ? s->cfg.pink.llm.vocab_size : s->cfg.llm.vocab_size;
    if (p->num_beams > 1 && 2 * p->num_beams > vocab)
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

/* llm_stage.h - the llm service's stage: visual tokens and a task in, generated text out.
 *
 * A job carries "visual_tokens" [n, d_model] (F32/F16/BF16) from the aggregator and the
 * task: instruction, tags, task_type and generation parameters (docs/wire-protocol.md,
 * "Stage contracts"). The stage builds the prompt as upstream LION does
 *     tag_prompt.format(", ".join(tags)) + instruction
 * tokenizes it (T5 SentencePiece, eos appended), puts the visual tokens first and the
 * soft_prompt_hint at the soft prompt token, and generates. generate_run takes one
 * parameter set and one adapter route per call, so a batch is split into groups of jobs
 * with equal parameters and route; each group runs as one batched generation. Each job's
 * RESULT holds its sequences, best first: text (special tokens skipped), the token ids as
 * HF returns them (decoder start id first), the beam score, and the boxes in the text.
 *
 * A job that breaks the contract fails alone with LION_EINVAL naming the tensor or field
 * ("task.generation.num_beams: 0 is not in [1, 16]"); the others of its batch go on. */
#ifndef LION_LLM_STAGE_H
#define LION_LLM_STAGE_H

#include <stddef.h>

#include "arena.h"
#include "generate.h"
#include "model_config.h"
#include "prompt.h"
#include "sentencepiece.h"
#include "t5.h"
#include "worker.h"

/* The JOB's input tensor. */
#define LLM_INPUT_VISUAL_TOKENS "visual_tokens"

/* Per-job limits: what one request may ask of the worker. */
#define LLM_MAX_BEAMS 16
#define LLM_MAX_NEW_TOKENS 512
#define LLM_MAX_PROMPT_TOKENS 512 /* tag prompt + instruction + eos */
#define LLM_MAX_VISUAL_TOKENS 4096

typedef struct llm_stage {
    model_config cfg;
    weights w;    /* "t5_model." */
    weights root; /* soft_prompt_hint sits outside the t5_model. prefix */
    t5_model t5;
    spm_tokenizer *tok;
    prompt_embedder embedder;
    generate_params defaults; /* model.json's llm.generation over generate_params_default */
    arena scratch;
} llm_stage;

/* The T5 dimensions of model.json's llm section. */
void t5_config_from_llm(t5_config *out, const llm_config *l);

int llm_stage_open(llm_stage *s, const char *model_dir, lion_status *st);
void llm_stage_close(llm_stage *s);

/* worker_process_fn: ctx is the llm_stage. */
int llm_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st);

/* The prompt text of a task (malloc'ed): the tag prompt with the tags joined by ", " in
 * its "{}", then the instruction; just the instruction when the model has no soft prompt
 * token (tags disabled). */
char *llm_prompt_text(const llm_config *l, const char *const *tags, size_t n_tags, const char *instruction);

/* The job's generation parameters (the stage's defaults where the task leaves a field
 * out) and adapter route (REGION_LEVEL 0, otherwise 1), checked against the limits above;
 * LION_EINVAL naming the field otherwise. */
int llm_task_params(const llm_stage *s, const Lion__Task *task, generate_params *p, int *router_idx,
                    lion_status *st);

#endif

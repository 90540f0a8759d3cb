/* llm_stage.h - the llm service's stage: visual tokens and a task in, generated text out.
 *
 * A job carries LION_TENSOR_VISUAL_TOKENS [n, d_model] (F32/F16/BF16) from the aggregator
 * and the task: instruction, tags, task_type and generation parameters (docs/wire-protocol.md,
 * "Stage contracts"). The stage builds the prompt as upstream LION does
 *     tag_prompt.format(", ".join(tags)) + instruction
 * tokenizes it (T5 SentencePiece, eos appended), puts the visual tokens first and the
 * soft_prompt_hint at the soft prompt token, and generates. Jobs are batched continuously
 * (llm_batching.c): a job joins the running decode batch between two decoder steps, whatever
 * its parameters and adapter route, and leaves it, answered, the step it finishes. Each job's
 * RESULT holds its sequences, best first: text (special tokens skipped; ids past the
 * tokenizer, which a wider lm_head can emit, decode to nothing), the token ids as HF
 * returns them (decoder start id first), the beam score, the boxes in the text, why it
 * ended (finish_reason STOP when it ends with eos, LENGTH when max_new_tokens ended it) and
 * the tokens generated (generated_tokens: the start id not counted, eos counted).
 *
 * Sampling (do_sample) without a num_beams of the task's own samples with one beam (the
 * model's num_beams is beam search's); each job samples with its own generator, seeded with
 * task.generation.seed or, without one, llm_request_seed(request id), so that a job sent
 * again (a re-dispatched attempt) generates the same text.
 *
 * Streaming: a greedy or sampling job whose task has `stream` set sends its new text after
 * each decoding step as a PARTIAL (worker_job_send_partial): the text decoded so far minus
 * what was sent (held back while it does not extend what was sent, or ends in a character
 * whose bytes are not all generated), with the ids generated since the previous PARTIAL; the
 * PARTIALs' texts add up to the RESULT's text. Beam search streams nothing: its answer is
 * only known at its end, in the RESULT.
 * Cancellation: between steps, a job the gateway cancelled (worker_job_cancelled) stops:
 * its rows leave the batch (the whole group stops once all of its jobs have) and it fails
 * with LION_ECANCELED; the others go on unchanged. A cancelled job whose group has not
 * started is not run.
 *
 * A job that breaks the contract or protocol.h's request limits fails alone with LION_EINVAL
 * naming the tensor or field ("task.generation.num_beams: 0 is not in [1, 16]"); the others
 * of its batch go on. */
#ifndef LION_LLM_STAGE_H
#define LION_LLM_STAGE_H

#include <stdatomic.h>
#include <stddef.h>

#include "arena.h"
#include "decode_batch.h"
#include "generate.h"
#include "llama.h"
#include "llama_tokenizer.h"
#include "model_config.h"
#include "prompt.h"
#include "protocol.h"
#include "sentencepiece.h"
#include "t5.h"
#include "worker.h"

typedef struct llm_stage {
    model_config cfg;
    weights w;    /* "t5_model." (LION); the LLaMA's file (Pink) */
    weights root; /* soft_prompt_hint sits outside the t5_model. prefix */
    t5_model t5;
    spm_tokenizer *tok;
    prompt_embedder embedder;
    /* a Pink model (cfg.family MODEL_FAMILY_PINK) instead: its LLaMA and tokenizer */
    llama_model llama;
    llama_tok *ltok;
    generate_params defaults; /* model.json's llm.generation over generate_params_default */
    arena scratch;
    int32_t *prompt_ids; /* [LION_MAX_PROMPT_TOKENS]: a job's prompt as it is tokenized */
    /* continuous batching (llm_batching.c) */
    size_t kv_budget;     /* bytes of decoding state (caches) the running jobs may hold; 0: no limit */
    int prefill_tokens;   /* encoder tokens encoded between two decoder steps (at least one job) */
    decode_batch running; /* the jobs decoding */
    struct llm_job *waiting, *waiting_tail; /* arrived, not yet encoded, in arrival order */
    int n_waiting;
    atomic_uint stat_rows;      /* for llm_stage_decode_stats, read on the socket thread */
    atomic_ullong stat_kv_bytes;
} llm_stage;

/* Defaults of --kv-budget-mb and --prefill-tokens (services/llm/main.c). */
#define LLM_DEFAULT_KV_BUDGET_MB 4096
#define LLM_DEFAULT_PREFILL_TOKENS 1024
/* The most sequences in a Pink model's shared KV cache (beams of all its jobs). */
#define LLM_PINK_SLOTS 256
/* The most jobs encoded between two steps. */
#define LLM_MAX_ADMIT 64

/* Loads the llm section of the model (refusing a tag_prompt over LION_MAX_TAG_PROMPT_BYTES,
 * which the prompt token limit is sized for), or a Pink model's LLaMA, tokenizer and prompt
 * (family "pink": the stage then answers Pink's jobs, llm_job.h). */
int llm_stage_open(llm_stage *s, const char *model_dir, lion_status *st);
/* The same with a precision (PRECISION_F32 or PRECISION_BF16: every matrix of the T5, t5.h, or
 * of the LLaMA, llama.h, held and multiplied in bf16) and the decoding-state budget in bytes (0: none; a
 * Pink model's shared KV cache is sized from it); llm_stage_open is f32 with the default. */
int llm_stage_open_with(llm_stage *s, const char *model_dir, lion_precision precision, lion_status *st);
int llm_stage_open_budget(llm_stage *s, const char *model_dir, lion_precision precision, size_t kv_budget,
                          lion_status *st);
void llm_stage_close(llm_stage *s);

/* The continuous stage's functions (worker_stage.admit, .step, .decode_stats); ctx is the
 * llm_stage. A job that breaks the contract, or that could never fit kv_budget, is
 * answered at once. */
void llm_stage_admit(void *ctx, worker_job *jobs, int n);
int llm_stage_step(void *ctx);
void llm_stage_decode_stats(void *ctx, uint32_t *running_rows, uint64_t *kv_bytes, uint64_t *kv_budget_bytes);

/* The prompt text of a task (malloc'ed): the tag prompt with the tags joined by ", " in
 * its "{}", then the instruction; just the instruction when the model has no soft prompt
 * token (tags disabled). */
char *llm_prompt_text(const llm_config *l, const char *const *tags, size_t n_tags, const char *instruction);

/* The job's generation parameters (the stage's defaults where the task leaves a field
 * out) and adapter route (REGION_LEVEL 0, otherwise 1), checked against protocol.h's limits
 * (the ranges the gateway accepts); LION_EINVAL naming the field otherwise. */
int llm_task_params(const llm_stage *s, const Lion__Task *task, generate_params *p, int *router_idx,
                    lion_status *st);

/* The sampling seed of a request that gives none: FNV-1a (64 bits) of its id, the same for
 * every attempt and every worker. */
uint64_t llm_request_seed(const char *request_id);

#endif

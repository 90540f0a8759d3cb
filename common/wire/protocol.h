/* protocol.h - what every side of the wire agrees on, defined once (the zguide's mdp.h):
 * the stages, the names of the tensors each stage takes and gives, and every limit a
 * request is held to. The gateway refuses with a 400 what a worker would refuse, before any
 * stage works on it, because both read these numbers; lion-tap and lion-batch read the same
 * names. docs/wire-protocol.md describes the messages, docs/api.md the limits as users see them. */
#ifndef LION_PROTOCOL_H
#define LION_PROTOCOL_H

#include "lion.pb-c.h"

/* --- stages ------------------------------------------------------------------------------ */

/* Stages are Lion__Stage values 1..LION_STAGE_LAST; arrays indexed by stage have
 * LION_STAGE_SLOTS entries ([0] unused). */
#define LION_STAGE_FIRST LION__STAGE__VISION
#define LION_STAGE_LAST LION__STAGE__LLM
#define LION_STAGE_SLOTS (LION_STAGE_LAST + 1)

const char *lion_kind_name(int kind);   /* "JOB", ..., "?" */
const char *lion_stage_name(int stage); /* "vision", "tagger", "aggregator", "llm", "?" */
/* The Lion__Stage for "vision" ... "llm", 0 for anything else. */
int lion_stage_from_name(const char *name);

/* --- tensor names (docs/wire-protocol.md, "Stage contracts") ------------------------------ */

/* vision and tagger jobs: the encoded image file, U8 [bytes] */
#define LION_TENSOR_IMAGE "image"
/* vision results, aggregator jobs: block <index>'s output, [tokens, width] */
#define LION_TENSOR_VIT_LAYER_PREFIX "vit_layer_"
/* aggregator results, llm jobs: [n_visual, d_model] */
#define LION_TENSOR_VISUAL_TOKENS "visual_tokens"
/* tensors one JOB may carry */
#define LION_MAX_JOB_TENSORS 16

/* --- request limits ------------------------------------------------------------------------ */

/* Generation (Task.generation; the HTTP fields of the same names). */
#define LION_MAX_BEAMS 16
#define LION_MAX_NEW_TOKENS 512
#define LION_MAX_MIN_LENGTH (LION_MAX_NEW_TOKENS + 1) /* HF counts the decoder start token */
#define LION_MAX_RETURN_SEQUENCES LION_MAX_BEAMS
#define LION_MIN_REPETITION_PENALTY 0.01
#define LION_MAX_REPETITION_PENALTY 100.0
#define LION_MAX_ABS_LENGTH_PENALTY 100.0
#define LION_MAX_TEMPERATURE 100.0

/* The instruction, in bytes (the gateway's --max-prompt-bytes may lower it, not raise it). */
#define LION_MAX_INSTRUCTION_BYTES 4096
/* Tags a user may give (the gateway's --max-tags may lower it), and the bytes of one tag. */
#define LION_MAX_TAGS 64
#define LION_MAX_TAG_BYTES 128
/* The prompt the llm encodes: tag prompt + tags + instruction + eos, in tokens. T5's
 * SentencePiece gives at most one token per character of the normalised text, so any
 * instruction and user tags within the byte limits above fit, with the model's tag prompt
 * (at most LION_MAX_TAG_PROMPT_BYTES, checked at load). Text whose NFKC form is longer than
 * itself (rare compatibility characters) can still exceed it; the llm then refuses it. */
#define LION_MAX_TAG_PROMPT_BYTES 512
#define LION_MAX_PROMPT_TOKENS \
    (LION_MAX_INSTRUCTION_BYTES + LION_MAX_TAGS * (LION_MAX_TAG_BYTES + 2) + LION_MAX_TAG_PROMPT_BYTES + 1)
/* Visual tokens one llm job may carry. */
#define LION_MAX_VISUAL_TOKENS 4096
/* /v1/tags' top_k: more than the model has classes gives them all. */
#define LION_MAX_TOP_TAGS 10000

/* Workers: jobs held at once (credit) and jobs in one forward (--capacity, --max-batch). */
#define LION_MAX_CAPACITY 4096
#define LION_MAX_BATCH 4096

#endif

/* model_config.h - a model directory's model.json as plain C structs.
 *
 * The schema is docs/model-format.md. model_config_load checks every field (presence, type,
 * range, and the relations between them: heads divide widths, layer indices lie inside the
 * ViT, one threshold per tag, ...) so that the services can use the numbers without checking
 * them again. Errors name the file and the field path:
 * "models/tiny/model.json: llm.d_model: expected a positive integer". A model.json says its
 * family ("lion", the default, or "pink"); each family has its own sections. */
#ifndef LION_MODEL_CONFIG_H
#define LION_MODEL_CONFIG_H

#include "safetensors.h"
#include "status.h"

#define MODEL_FORMAT_VERSION 1
/* Upper bounds of the small fixed arrays below (upstream uses 3 ViT outputs, 4 Swin stages,
 * 2 fusion blocks). */
#define MODEL_MAX_INTERMEDIATE 8
#define MODEL_MAX_STAGES 8

typedef enum visual_input {
    VISUAL_INPUT_ALL = 0,    /* Q-Former tokens then aggregator tokens (LION) */
    VISUAL_INPUT_QFORMER,    /* Q-Former tokens only */
    VISUAL_INPUT_AGGREGATOR, /* aggregator tokens only */
} visual_input;

typedef enum resize_filter { RESIZE_BICUBIC = 0, RESIZE_BILINEAR } resize_filter;

/* An activation function, as model.json names it: "gelu" (exact erf, what LION sets), "relu",
 * "gelu_new" (tanh approximation). The one enum of activation kinds: the config reader, the
 * models' configs (t5_config) and ops.h's activation_forward all use it. */
typedef enum activation { ACT_GELU = 0, ACT_RELU, ACT_GELU_TANH } activation;

typedef struct vision_config {
    char *file; /* path of vision.safetensors, resolved against the model directory */
    int image_size, patch_size, dim, depth, heads, mlp_hidden;
    float ln_eps;
    int n_intermediate;
    int intermediate_layers[MODEL_MAX_INTERMEDIATE]; /* block outputs the stage returns */
    resize_filter resize;
    float mean[3], std[3];
} vision_config;

typedef struct tagger_head_config {
    int hidden, heads, layers, intermediate;
    float ln_eps;
} tagger_head_config;

typedef struct tagger_config {
    char *file;
    int image_size, patch_size, embed_dim;
    int n_stages;
    int depths[MODEL_MAX_STAGES], heads[MODEL_MAX_STAGES];
    int window;
    float mlp_ratio, ln_eps;
    int embed_out;
    tagger_head_config head;
    resize_filter resize;
    float mean[3], std[3];
    int num_tags;
    char **tags;       /* num_tags names, RAM's order */
    float *thresholds; /* num_tags values in [0, 1] */
    int n_delete_tags;
    int *delete_tags; /* indices into tags */
} tagger_config;

typedef struct qformer_config {
    int hidden, layers, heads, intermediate;
    float ln_eps;
    int cross_attention_freq, num_query_tokens, vocab_size, max_position, max_text_len;
    char *vocab; /* path of the WordPiece vocab.txt, resolved */
} qformer_config;

typedef struct fusion_config {
    int blocks, heads, intermediate;
    float ln_eps;
    int hidden_layer;                            /* ViT output the blocks run on */
    int cross_layers[MODEL_MAX_INTERMEDIATE];    /* one ViT output per block, cross-attended */
} fusion_config;

/* visual_input decides which parts exist (upstream builds only what it uses): the Q-Former
 * unless AGGREGATOR; the fusion blocks and proj_hidden unless QFORMER (then fusion holds only
 * hidden_layer, blocks is 0). Absent parts are zero. */
typedef struct aggregator_config {
    char *file;
    int vision_width;
    qformer_config qformer;
    fusion_config fusion;
    int proj_hidden;
} aggregator_config;

typedef struct generation_config {
    int num_beams, max_new_tokens, min_length;
    float repetition_penalty, length_penalty, top_p, temperature;
    int do_sample;
} generation_config;

typedef struct llm_config {
    char *file;
    int d_model, d_ff, d_kv, heads, encoder_layers, decoder_layers, vocab_size;
    int rel_buckets, rel_max_distance;
    float ln_eps;
    activation ff_act;
    /* optional, default 0: lm_head is shared.weight, and the decoder output is scaled by
     * d_model^-0.5 before it (HF T5 with tied embeddings; FlanT5 is untied) */
    int tie_word_embeddings;
    int adapters_num, adapters_bottleneck;
    char *spiece; /* path of the SentencePiece model, resolved */
    int pad_id, eos_id, decoder_start_id;
    char *tag_prompt;        /* holds one "{}" where the tags go */
    char *soft_prompt_token; /* piece whose embedding is replaced by soft_prompt_hint */
    int max_text_len;
    generation_config generation;
} llm_config;

/* ------------------------------------------------------------------ Pink (family "pink") */

/* Pink's image encoder: CLIP ViT (HF CLIPVisionModel) with Pink's adapters and mm_projector;
 * the fields of services/vision/clip.h's clip_config (pink_clip_config fills one). */
typedef struct pink_vision_config {
    char *file;
    int image_size, patch_size, dim, layers, heads, mlp_hidden; /* layers: num_hidden_layers */
    float ln_eps;
    int quick_gelu;   /* "act": "quick_gelu" (1, OpenAI CLIP) or "gelu" (0) */
    int select_layer; /* clip_select_layer, HF hidden_states index (negative from the end) */
    int adapter_dim;  /* 0: no adapters */
    int adapter_attn, adapter_mlp;
    int proj_dim;     /* mm_projector's output: llm.dim */
    resize_filter resize;
    float mean[3], std[3];
} pink_vision_config;

/* Pink's LLaMA decoder with adapters; the fields of services/llm/llama.h's llama_config. */
typedef struct pink_llm_config {
    char *file;
    int dim, hidden, layers, heads, kv_heads, vocab_size;
    int max_positions; /* max_position_embeddings: the longest prompt + answer */
    float rms_eps, rope_theta;
    int adapter_dim;   /* 0: no adapters */
    int adapter_attn, adapter_mlp, adapter_silu;
    generation_config generation;
} pink_llm_config;

typedef struct pink_added_token {
    char *content;
    int id;
} pink_added_token;

/* HF LlamaTokenizer settings (common/text/llama_tokenizer.h's llama_tok_options). */
typedef struct pink_tokenizer_config {
    char *file; /* tokenizer.model, resolved */
    int legacy, add_bos, add_eos, clean_up_spaces;
    int bos_id, eos_id, pad_id;
    int n_added;
    pink_added_token *added; /* Pink's <im_patch> and mark tokens, with their ids */
} pink_tokenizer_config;

/* The llamav2 conversation Pink's inference builds (services/llm/pink_prompt.h). */
typedef struct pink_prompt_config {
    char *system;      /* system message, one "{}" where the image tokens go ("Image: {}") */
    char *image_token; /* "<im_patch>", one of tokenizer.added */
    int image_tokens;  /* how many: (vision.image_size / vision.patch_size)^2 */
    int box_decimals;  /* digits of the [0,1] box coordinates in prompts (Pink: 3) */
    /* task instructions: caption has no "{}", the others exactly one (the question, the
     * expression to find, the box) */
    char *caption, *vqa, *rec, *region_caption;
} pink_prompt_config;

typedef struct pink_config {
    pink_vision_config vision;
    pink_llm_config llm;
    pink_tokenizer_config tokenizer;
    pink_prompt_config prompt;
} pink_config;

/* Which model a directory holds: model.json's "family" ("lion" when absent). A LION model has
 * the vision, tagger, aggregator and llm sections below; a Pink model only `pink`. */
typedef enum model_family { MODEL_FAMILY_LION = 0, MODEL_FAMILY_PINK } model_family;

typedef struct model_config {
    char *dir;  /* the model directory as given */
    char *name;
    model_family family;
    /* family "lion" */
    visual_input visual_input;
    vision_config vision;
    tagger_config tagger;
    aggregator_config aggregator;
    llm_config llm;
    /* family "pink" */
    pink_config pink;
} model_config;

/* Reads and validates dir/model.json. On failure cfg holds nothing to free. */
int model_config_load(model_config *cfg, const char *dir, lion_status *st);
void model_config_free(model_config *cfg);

/* The safetensors path of a stage: "vision", "tagger", "aggregator" or "llm" (a Pink model has
 * only vision and llm); NULL otherwise. */
const char *model_config_stage_file(const model_config *cfg, const char *stage);
/* Opens that file (safetensors_open's validation and errors). */
int model_config_open_stage(const model_config *cfg, const char *stage, safetensors_file **out,
                            lion_status *st);

const char *visual_input_name(visual_input v);
const char *model_family_name(model_family f);

#endif

/* ram.h - RAM (Recognize Anything) image tagging, as LION uses it, forward only.
 *
 * Swin visual encoder -> image_proj; label queries ReLU(wordvec_proj(label_embed)) (computed
 * once at load: they do not depend on the image) -> tagging head cross-attending to the
 * image tokens -> fc -> sigmoid. A tag is kept when its score is strictly above its class
 * threshold and it is not in delete_tags; the kept tags, in RAM's class order, become the
 * string LION puts in its prompt: RAM's " | " join with " |" replaced by "," ("dog, man, pet").
 *
 * Precision: every matrix a forward multiplies by (Swin's, image_proj, the head's, fc) is a
 * linear (linear.h) in the precision ram_load is given. label_embed and wordvec_proj are read
 * once at load, in f32, to make the label queries; layer 0's query projection of them is made
 * at load with that layer's own matrix, in the model's precision, as a forward would. */
#ifndef LION_RAM_H
#define LION_RAM_H

#include <stdint.h>

#include "arena.h"
#include "linear.h"
#include "model_config.h"
#include "precision.h"
#include "status.h"
#include "swin.h"
#include "tagging_head.h"
#include "tensor.h"
#include "weights.h"

typedef struct ram_config {
    swin_config swin;
    int embed_out; /* image_proj / label_embed width */
    int head_hidden, head_heads, head_layers, head_intermediate;
    float head_ln_eps;
    int num_tags;
    const char *const *tags;  /* num_tags names in class order; copied by ram_load */
    const float *thresholds;  /* num_tags values; copied by ram_load */
    int n_delete_tags;
    const int *delete_tags;   /* class indices never reported */
} ram_config;

typedef struct ram_model {
    ram_config cfg; /* its tags/thresholds/delete_tags point at the model's own copies */
    swin_model swin;
    tagging_head head;
    linear image_proj, fc; /* [embed_out, swin width], [1, head_hidden] */
    const float *image_proj_b, *fc_b;
    float *labels;      /* owned [num_tags, head_hidden]: the label queries */
    float *first_query; /* owned [num_tags, head_hidden]: layer 0's query projection of labels */
    char **tags;
    float *thresholds;
    int *delete_tags;
    uint8_t *deleted; /* [num_tags] */
} ram_model;

typedef struct ram_tag {
    int index;   /* class index, into the tag list */
    float score; /* sigmoid of the logit */
} ram_tag;

typedef struct ram_result {
    int n_tags;
    ram_tag *tags; /* the kept tags, in class order */
    char *prompt;  /* "dog, man, pet"; "" when nothing is kept */
    int n_top;
    ram_tag *top; /* the top_k scores over all classes, best first (debugging); NULL when 0 */
} ram_result;

/* The tagger section of model.json as a ram_config (pointers into tc, which must outlive
 * the ram_load call). */
void ram_config_from_model(ram_config *rc, const tagger_config *tc);

/* Binds visual_encoder.*, image_proj.*, label_embed, wordvec_proj.* (Identity when absent and
 * head_hidden == embed_out, as RAM builds it), tagging_head.*, fc.*; checks every shape and
 * the tag list, thresholds and delete_tags. The matrices in precision p (f32 or bf16). */
int ram_load(ram_model *m, const ram_config *cfg, weights *w, lion_precision p, lion_status *st);
void ram_free(ram_model *m);
/* The bytes the model's matrices take in their form (linear_bytes): what the precision
 * halves. */
size_t ram_matrix_bytes(const ram_model *m);

/* pixels: F32 [batch, 3, image_size, image_size], normalised (anything else is an error
 * naming the shape). logits: [batch, num_tags]. */
int ram_logits(const ram_model *m, const tensor *pixels, float *logits, arena *a, lion_status *st);

/* One image's logits [num_tags] -> tags, prompt string and the top_k scores (0 = none). */
int ram_select(const ram_model *m, const float *logits, int top_k, ram_result *r, lion_status *st);
void ram_result_free(ram_result *r);

/* logits + select for every image: results[batch]; on failure nothing is left to free. */
int ram_tag_images(const ram_model *m, const tensor *pixels, int top_k, ram_result *results, arena *a,
                   lion_status *st);

#endif

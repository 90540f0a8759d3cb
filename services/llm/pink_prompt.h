/* pink_prompt.h - Pink's prompt at inference: the ids of the llamav2 conversation upstream
 * builds (demo.py, pink/eval/model_*.py; the reference is tools/reference/pink_ref/prompt.py) and
 * where the image features go.
 *
 *     <s>[INST] <<SYS>>\nImage: <im_patch>...<im_patch>\n<</SYS>>\n\n{instruction} [/INST]
 *
 * model.json's pink.prompt gives the system message ("Image: {}", the {} expanded to
 * image_tokens image tokens: one per CLIP patch), the image token and the instruction of each
 * task, which holds the request's text or box in its "{}":
 *   caption          no text, no box
 *   vqa              the question (Pink's <qes>{}</qes>)
 *   rec              the expression to find (<des>{}</des>); the answer is a box
 *   region_caption   the box (<loc>{}</loc>), written "[x0,y0,x1,y1]" with coordinates divided
 *                    by the image's width and height and box_decimals (3) digits, as upstream
 * The ids come from the LLaMA tokenizer with Pink's added tokens (llama_tokenizer.h); the
 * image tokens must come out as image_tokens consecutive ids (upstream raises otherwise), and
 * their embeddings are replaced by the vision stage's tokens, in patch order. */
#ifndef LION_PINK_PROMPT_H
#define LION_PINK_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "llama_tokenizer.h"
#include "model_config.h"
#include "status.h"

typedef enum pink_task {
    PINK_TASK_CAPTION = 0,
    PINK_TASK_VQA,
    PINK_TASK_REC,
    PINK_TASK_REGION_CAPTION,
} pink_task;

typedef struct pink_prompt {
    int32_t *ids;
    size_t n_ids;
    size_t image_offset; /* ids[image_offset .. image_offset + image_tokens) are the image token */
    int image_tokens;
} pink_prompt;

/* "caption", "vqa", "rec", "region_caption". */
const char *pink_task_name(pink_task t);
/* The task of a name above; -1 (LION_EINVAL) for another. */
int pink_task_parse(const char *name, pink_task *out, lion_status *st);

/* The prompt text (malloc'ed). text: the question (vqa) or expression (rec), non-empty; NULL for
 * caption and region_caption. box: x0, y0, x1, y1 in [0, 1] with x0 <= x1, y0 <= y1, for
 * region_caption only (NULL otherwise). Fails (LION_EINVAL) on a missing or extra argument, a
 * box out of range, and a text that holds the image token (it would add image positions). */
int pink_prompt_text(const pink_prompt_config *cfg, pink_task task, const char *text, const double *box, char **out,
                     lion_status *st);

/* The prompt's ids (bos first) and where the image goes. At most max_ids ids (LION_ETOOBIG,
 * e.g. for pink.llm.max_positions minus the answer's room). */
int pink_prompt_build(const pink_prompt_config *cfg, const llama_tok *tok, pink_task task, const char *text,
                      const double *box, size_t max_ids, pink_prompt *out, lion_status *st);
void pink_prompt_free(pink_prompt *p);

#endif

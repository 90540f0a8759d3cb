/* pink_prompt.c - Pink's llamav2 prompt (see pink_prompt.h). */
#include "pink_prompt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pink/conversation.py: Conversation.copy() of the LLAMA2 style sets this system template, and
 * get_prompt() follows it with the user's message, a space, and the assistant role. */
#define LLAMAV2_SYSTEM_BEGIN "[INST] <<SYS>>\n"
#define LLAMAV2_SYSTEM_END "\n<</SYS>>\n\n"
#define LLAMAV2_ASSISTANT " [/INST]"

static const char *const task_names[] = {"caption", "vqa", "rec", "region_caption"};

const char *pink_task_name(pink_task t) { return (unsigned)t < 4 ? task_names[t] : "?"; }

int pink_task_parse(const char *name, pink_task *out, lion_status *st) {
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, task_names[i]) == 0) {
            *out = (pink_task)i;
            return 0;
        }
    return lion_fail(st, LION_EINVAL, "unknown Pink task '%s' (caption, vqa, rec, region_caption)", name ? name : "");
}

/* s with its first "{}" replaced by arg (count times, concatenated: the image tokens). */
static char *fill(const char *s, const char *arg, size_t count) {
    const char *slot = strstr(s, "{}");
    size_t before = slot ? (size_t)(slot - s) : strlen(s), al = strlen(arg);
    const char *after = slot ? slot + 2 : "";
    size_t n = before + (slot ? al * count : 0) + strlen(after);
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    memcpy(o, s, before);
    o += before;
    for (size_t i = 0; slot && i < count; i++, o += al) memcpy(o, arg, al);
    strcpy(o, after);
    return out;
}

static int check_box(const double *box, lion_status *st) {
    for (int i = 0; i < 4; i++)
        if (!isfinite(box[i]) || box[i] < 0 || box[i] > 1)
            return lion_fail(st, LION_EINVAL, "box coordinate %d is %g, outside [0, 1] (divide by the image size)", i,
                             box[i]);
    if (box[0] > box[2] || box[1] > box[3])
        return lion_fail(st, LION_EINVAL, "box [%g, %g, %g, %g] has x0 > x1 or y0 > y1", box[0], box[1], box[2], box[3]);
    return 0;
}

/* The instruction of the task with its argument in place. */
static char *instruction(const pink_prompt_config *cfg, pink_task task, const char *text, const double *box,
                         lion_status *st) {
    int wants_text = task == PINK_TASK_VQA || task == PINK_TASK_REC;
    if ((unsigned)task > PINK_TASK_REGION_CAPTION) {
        lion_fail(st, LION_EINVAL, "unknown Pink task %d", (int)task);
        return NULL;
    }
    if (wants_text && (!text || !text[0])) {
        lion_fail(st, LION_EINVAL, "task %s needs a text", pink_task_name(task));
        return NULL;
    }
    if (!wants_text && text) {
        lion_fail(st, LION_EINVAL, "task %s takes no text", pink_task_name(task));
        return NULL;
    }
    if ((task == PINK_TASK_REGION_CAPTION) != (box != NULL)) {
        lion_fail(st, LION_EINVAL, "task %s %s", pink_task_name(task),
                  box ? "takes no box" : "needs a box");
        return NULL;
    }
    /* upstream checks that the image tokens are exactly the patches: a text holding the token
     * would break that (and is no text a user means) */
    if (text && strstr(text, cfg->image_token)) {
        lion_fail(st, LION_EINVAL, "the text of task %s holds the image token %s", pink_task_name(task),
                  cfg->image_token);
        return NULL;
    }
    char *out = NULL;
    switch (task) {
    case PINK_TASK_CAPTION: out = strdup(cfg->caption); break;
    case PINK_TASK_VQA: out = fill(cfg->vqa, text, 1); break;
    case PINK_TASK_REC: out = fill(cfg->rec, text, 1); break;
    case PINK_TASK_REGION_CAPTION: {
        if (check_box(box, st)) return NULL;
        char b[128];
        int d = cfg->box_decimals;
        snprintf(b, sizeof b, "[%.*f,%.*f,%.*f,%.*f]", d, box[0], d, box[1], d, box[2], d, box[3]);
        out = fill(cfg->region_caption, b, 1);
        break;
    }
    }
    if (!out) lion_fail(st, LION_ENOMEM, "pink prompt: out of memory");
    return out;
}

int pink_prompt_text(const pink_prompt_config *cfg, pink_task task, const char *text, const double *box, char **out,
                     lion_status *st) {
    if (!cfg || !out) return lion_fail(st, LION_EINVAL, "pink_prompt_text: NULL argument");
    *out = NULL;
    char *inst = instruction(cfg, task, text, box, st);
    if (!inst) return -1;
    char *system = fill(cfg->system, cfg->image_token, (size_t)cfg->image_tokens);
    char *prompt = NULL;
    if (system) {
        size_t n = strlen(LLAMAV2_SYSTEM_BEGIN) + strlen(system) + strlen(LLAMAV2_SYSTEM_END) + strlen(inst) +
                   strlen(LLAMAV2_ASSISTANT) + 1;
        prompt = malloc(n);
        if (prompt) snprintf(prompt, n, "%s%s%s%s%s", LLAMAV2_SYSTEM_BEGIN, system, LLAMAV2_SYSTEM_END, inst,
                             LLAMAV2_ASSISTANT);
    }
    free(system);
    free(inst);
    if (!prompt) return lion_fail(st, LION_ENOMEM, "pink prompt: out of memory");
    *out = prompt;
    return 0;
}

int pink_prompt_build(const pink_prompt_config *cfg, const llama_tok *tok, pink_task task, const char *text,
                      const double *box, size_t max_ids, pink_prompt *out, lion_status *st) {
    if (!cfg || !tok || !out) return lion_fail(st, LION_EINVAL, "pink_prompt_build: NULL argument");
    memset(out, 0, sizeof *out);
    int32_t patch = llama_tok_token_id(tok, cfg->image_token);
    if (patch < 0)
        return lion_fail(st, LION_EINVAL, "the tokenizer has no image token %s (pink.tokenizer.added_tokens)",
                         cfg->image_token);
    char *prompt = NULL;
    if (pink_prompt_text(cfg, task, text, box, &prompt, st)) return -1;
    int32_t *ids = malloc((max_ids ? max_ids : 1) * sizeof *ids);
    size_t n = 0;
    int rc = ids ? llama_tok_encode(tok, prompt, ids, max_ids, &n, st)
                 : lion_fail(st, LION_ENOMEM, "pink prompt: out of memory");
    free(prompt);
    if (rc) {
        free(ids);
        if (st && st->code == LION_ETOOBIG)
            return lion_fail(st, LION_ETOOBIG, "the %s prompt needs %zu tokens, more than the %zu allowed",
                             pink_task_name(task), n, max_ids);
        return -1;
    }
    size_t first = n, count = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] == patch) {
            if (first == n) first = i;
            count++;
        }
    if (count != (size_t)cfg->image_tokens) {
        free(ids);
        return lion_fail(st, LION_EINTERNAL, "the prompt holds %zu image tokens, not %d", count, cfg->image_tokens);
    }
    for (size_t i = first; i < first + count; i++)
        if (ids[i] != patch) {
            free(ids);
            return lion_fail(st, LION_EINTERNAL, "the prompt's %d image tokens are not consecutive", cfg->image_tokens);
        }
    *out = (pink_prompt){ids, n, first, cfg->image_tokens};
    return 0;
}

void pink_prompt_free(pink_prompt *p) {
    if (!p) return;
    free(p->ids);
    memset(p, 0, sizeof *p);
}

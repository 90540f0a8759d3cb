#include "model_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* model.json holds the tag list (4585 names upstream, ~100 KB): anything near this is not ours. */
#define MODEL_JSON_MAX_BYTES (64L * 1024 * 1024)

/* Reading state. The first error sticks: every getter does nothing once one failed, so the
 * section readers are flat lists of fields instead of chains of ifs, and the message names
 * the first field that was wrong. */
typedef struct reader {
    const char *file; /* path of model.json, the prefix of every message */
    const char *dir;
    lion_status *st;
    int failed;
} reader;

static void fail_at(reader *r, const char *path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail_at(reader *r, const char *path, const char *key, const char *fmt, ...) {
    if (r->failed) return;
    r->failed = 1;
    char what[LION_STATUS_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    lion_fail(r->st, LION_EFORMAT, "%s: %s%s%s: %s", r->file, path, *path && *key ? "." : "", key, what);
}

static void fail_oom(reader *r) {
    if (!r->failed) lion_fail(r->st, LION_ENOMEM, "%s: out of memory", r->file);
    r->failed = 1;
}

static char *str_dup(reader *r, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (!p) {
        fail_oom(r);
        return NULL;
    }
    return memcpy(p, s, n);
}

static const cJSON *get_item(reader *r, const cJSON *obj, const char *path, const char *key) {
    if (r->failed) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) fail_at(r, path, key, "missing");
    return v;
}

static const cJSON *get_object(reader *r, const cJSON *obj, const char *path, const char *key) {
    const cJSON *v = get_item(r, obj, path, key);
    if (v && !cJSON_IsObject(v)) {
        fail_at(r, path, key, "expected an object");
        return NULL;
    }
    return v;
}

/* An integer in [min, max]; the message says what kind was expected, in words where it can. */
static void expect_int(reader *r, const cJSON *v, const char *path, const char *key, int min, int max, int *out) {
    if (r->failed || !v) return;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (cJSON_IsNumber(v) && d == floor(d) && d >= min && d <= max) {
        *out = (int)d;
        return;
    }
    char found[64] = "";
    if (cJSON_IsNumber(v)) snprintf(found, sizeof found, ", found %.17g", d);
    if (min == 1 && max == INT_MAX) fail_at(r, path, key, "expected a positive integer%s", found);
    else if (min == 0 && max == INT_MAX) fail_at(r, path, key, "expected a non-negative integer%s", found);
    else fail_at(r, path, key, "expected an integer in [%d, %d]%s", min, max, found);
}

static void get_int(reader *r, const cJSON *obj, const char *path, const char *key, int min, int max, int *out) {
    expect_int(r, get_item(r, obj, path, key), path, key, min, max, out);
}

static void get_positive(reader *r, const cJSON *obj, const char *path, const char *key, int *out) {
    get_int(r, obj, path, key, 1, INT_MAX, out);
}

enum float_range { FLOAT_ANY, FLOAT_POSITIVE, FLOAT_UNIT_CLOSED, FLOAT_UNIT_OPEN_LOW };

static void expect_float(reader *r, const cJSON *v, const char *path, const char *key, enum float_range range,
                         float *out) {
    if (r->failed || !v) return;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        fail_at(r, path, key, "expected a number");
        return;
    }
    double d = v->valuedouble;
    /* the value is kept as a float: one past its range would become infinite, and a
     * positive one below its smallest would become 0 */
    if (fabs(d) > FLT_MAX) fail_at(r, path, key, "%g is outside the range of a float", d);
    else if ((range == FLOAT_POSITIVE || range == FLOAT_UNIT_OPEN_LOW) && d > 0 && (float)d == 0)
        fail_at(r, path, key, "%g is too small for a float (it would be 0)", d);
    else if (range == FLOAT_POSITIVE && !(d > 0)) fail_at(r, path, key, "expected a positive number, found %g", d);
    else if (range == FLOAT_UNIT_CLOSED && !(d >= 0 && d <= 1))
        fail_at(r, path, key, "expected a number in [0, 1], found %g", d);
    else if (range == FLOAT_UNIT_OPEN_LOW && !(d > 0 && d <= 1))
        fail_at(r, path, key, "expected a number in (0, 1], found %g", d);
    else *out = (float)d;
}

static void get_float(reader *r, const cJSON *obj, const char *path, const char *key, enum float_range range,
                      float *out) {
    expect_float(r, get_item(r, obj, path, key), path, key, range, out);
}

static void get_bool(reader *r, const cJSON *obj, const char *path, const char *key, int *out) {
    const cJSON *v = get_item(r, obj, path, key);
    if (r->failed || !v) return;
    if (!cJSON_IsBool(v)) fail_at(r, path, key, "expected true or false");
    else *out = cJSON_IsTrue(v);
}

static void get_optional_bool(reader *r, const cJSON *obj, const char *path, const char *key, int *out) {
    if (!r->failed && cJSON_GetObjectItemCaseSensitive(obj, key)) get_bool(r, obj, path, key, out);
}

/* A non-empty string; *out is a copy. */
static void get_string(reader *r, const cJSON *obj, const char *path, const char *key, char **out) {
    const cJSON *v = get_item(r, obj, path, key);
    if (r->failed || !v) return;
    if (!cJSON_IsString(v) || !v->valuestring[0]) fail_at(r, path, key, "expected a non-empty string");
    else *out = str_dup(r, v->valuestring);
}

/* One of names[]; *out is its index. */
static void get_enum(reader *r, const cJSON *obj, const char *path, const char *key, const char *const *names,
                     int n, int *out) {
    const cJSON *v = get_item(r, obj, path, key);
    if (r->failed || !v) return;
    for (int i = 0; cJSON_IsString(v) && i < n; i++)
        if (strcmp(v->valuestring, names[i]) == 0) {
            *out = i;
            return;
        }
    char list[256] = "";
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
    fail_at(r, path, key, "expected one of %s", list);
}

/* A file name inside the model directory (or an absolute path), resolved against it. */
static void get_path(reader *r, const cJSON *obj, const char *path, const char *key, char **out) {
    char *name = NULL;
    get_string(r, obj, path, key, &name);
    if (!name) return;
    if (name[0] == '/') {
        *out = name;
        return;
    }
    size_t n = strlen(r->dir) + 1 + strlen(name) + 1;
    char *full = malloc(n);
    if (!full) {
        free(name);
        fail_oom(r);
        return;
    }
    snprintf(full, n, "%s/%s", r->dir, name);
    free(name);
    *out = full;
}

static const cJSON *get_array(reader *r, const cJSON *obj, const char *path, const char *key, int min_n,
                              int max_n, int *n) {
    const cJSON *v = get_item(r, obj, path, key);
    if (r->failed || !v) return NULL;
    if (!cJSON_IsArray(v)) {
        fail_at(r, path, key, "expected an array");
        return NULL;
    }
    *n = cJSON_GetArraySize(v);
    if (*n < min_n || *n > max_n) {
        if (min_n == max_n) fail_at(r, path, key, "expected %d entries, found %d", min_n, *n);
        else fail_at(r, path, key, "expected %d to %d entries, found %d", min_n, max_n, *n);
        return NULL;
    }
    return v;
}

static void get_int_array(reader *r, const cJSON *obj, const char *path, const char *key, int min_n, int max_n,
                          int min, int max, int *out, int *n) {
    const cJSON *a = get_array(r, obj, path, key, min_n, max_n, n);
    char elem[64];
    for (int i = 0; a && i < *n && !r->failed; i++) {
        snprintf(elem, sizeof elem, "%s[%d]", key, i);
        expect_int(r, cJSON_GetArrayItem(a, i), path, elem, min, max, &out[i]);
    }
}

/* mean and std of an image transform: three numbers each, std positive. */
static void get_normalization(reader *r, const cJSON *obj, const char *path, float mean[3], float std[3]) {
    int n;
    char elem[32];
    const cJSON *a = get_array(r, obj, path, "mean", 3, 3, &n);
    for (int i = 0; a && i < 3; i++) {
        snprintf(elem, sizeof elem, "mean[%d]", i);
        expect_float(r, cJSON_GetArrayItem(a, i), path, elem, FLOAT_ANY, &mean[i]);
    }
    a = get_array(r, obj, path, "std", 3, 3, &n);
    for (int i = 0; a && i < 3; i++) {
        snprintf(elem, sizeof elem, "std[%d]", i);
        expect_float(r, cJSON_GetArrayItem(a, i), path, elem, FLOAT_POSITIVE, &std[i]);
    }
}

static const char *const resize_names[] = {"bicubic", "bilinear"};
static const char *const visual_input_names[] = {"ALL", "QFORMER", "AGGREGATOR"};
static const char *const activation_names[] = {"gelu", "relu", "gelu_new"}; /* enum activation's order */

const char *visual_input_name(visual_input v) {
    return (unsigned)v < 3 ? visual_input_names[v] : "?";
}

static void read_vision(reader *r, const cJSON *root, vision_config *v) {
    const char *p = "vision";
    const cJSON *o = get_object(r, root, "", p);
    get_path(r, o, p, "file", &v->file);
    get_positive(r, o, p, "image_size", &v->image_size);
    get_positive(r, o, p, "patch_size", &v->patch_size);
    get_positive(r, o, p, "dim", &v->dim);
    get_positive(r, o, p, "depth", &v->depth);
    get_positive(r, o, p, "heads", &v->heads);
    get_positive(r, o, p, "mlp_hidden", &v->mlp_hidden);
    get_float(r, o, p, "ln_eps", FLOAT_POSITIVE, &v->ln_eps);
    get_int_array(r, o, p, "intermediate_layers", 1, MODEL_MAX_INTERMEDIATE, 0, v->depth - 1,
                  v->intermediate_layers, &v->n_intermediate);
    int resize = 0;
    get_enum(r, o, p, "resize", resize_names, 2, &resize);
    v->resize = (resize_filter)resize;
    get_normalization(r, o, p, v->mean, v->std);
    if (r->failed) return;
    if (v->image_size % v->patch_size)
        fail_at(r, p, "patch_size", "%d does not divide image_size %d", v->patch_size, v->image_size);
    if (v->dim % v->heads) fail_at(r, p, "heads", "%d does not divide dim %d", v->heads, v->dim);
}

static void read_tagger_head(reader *r, const cJSON *o, tagger_head_config *h) {
    const char *hp = "tagger.head";
    const cJSON *ho = get_object(r, o, "tagger", "head");
    get_positive(r, ho, hp, "hidden", &h->hidden);
    get_positive(r, ho, hp, "heads", &h->heads);
    get_positive(r, ho, hp, "layers", &h->layers);
    get_positive(r, ho, hp, "intermediate", &h->intermediate);
    get_float(r, ho, hp, "ln_eps", FLOAT_POSITIVE, &h->ln_eps);
}

/* tags, one threshold per tag, and delete_tags (indices into tags). */
static void read_tag_list(reader *r, const cJSON *o, tagger_config *t) {
    const char *p = "tagger";
    char elem[64];
    int n = 0;
    const cJSON *tags = get_array(r, o, p, "tags", 1, INT_MAX, &n);
    if (tags) {
        t->tags = calloc((size_t)n, sizeof *t->tags);
        t->thresholds = calloc((size_t)n, sizeof *t->thresholds);
        if (!t->tags || !t->thresholds) fail_oom(r);
        const cJSON *tag;
        int i = 0;
        cJSON_ArrayForEach(tag, tags) {
            if (r->failed) break;
            snprintf(elem, sizeof elem, "tags[%d]", i);
            if (!cJSON_IsString(tag) || !tag->valuestring[0]) fail_at(r, p, elem, "expected a non-empty string");
            else t->tags[i] = str_dup(r, tag->valuestring);
            t->num_tags = ++i; /* counts what model_config_free must release */
        }
    }
    int n_thr = 0;
    const cJSON *thr = get_array(r, o, p, "thresholds", 0, INT_MAX, &n_thr);
    if (thr && n_thr != t->num_tags) fail_at(r, p, "thresholds", "%d values for %d tags", n_thr, t->num_tags);
    for (int i = 0; thr && i < n_thr && !r->failed; i++) {
        snprintf(elem, sizeof elem, "thresholds[%d]", i);
        expect_float(r, cJSON_GetArrayItem(thr, i), p, elem, FLOAT_UNIT_CLOSED, &t->thresholds[i]);
    }
    const cJSON *del = get_array(r, o, p, "delete_tags", 0, INT_MAX, &t->n_delete_tags);
    if (del && !r->failed) {
        t->delete_tags = calloc((size_t)t->n_delete_tags + 1, sizeof *t->delete_tags);
        if (!t->delete_tags) fail_oom(r);
        for (int i = 0; i < t->n_delete_tags && !r->failed; i++) {
            snprintf(elem, sizeof elem, "delete_tags[%d]", i);
            expect_int(r, cJSON_GetArrayItem(del, i), p, elem, 0, t->num_tags - 1, &t->delete_tags[i]);
        }
    }
}

/* The relations between the tagger's numbers, once every field was read. */
static void check_tagger(reader *r, const tagger_config *t, int n_heads) {
    const char *p = "tagger";
    char elem[64];
    if (n_heads != t->n_stages)
        fail_at(r, p, "heads", "%d entries for %d stages (depths)", n_heads, t->n_stages);
    if (t->image_size % t->patch_size)
        fail_at(r, p, "patch_size", "%d does not divide image_size %d", t->patch_size, t->image_size);
    /* Swin: stage i works at width embed_dim * 2^i on a (image/patch) / 2^i grid, cut into
     * windows (a window never exceeds the grid) and merged 2x2 into the next stage. */
    int res = t->image_size / t->patch_size;
    for (int i = 0; i < t->n_stages && !r->failed; i++) {
        long width = (long)t->embed_dim << i;
        int window = t->window < res ? t->window : res;
        snprintf(elem, sizeof elem, "heads[%d]", i);
        if (width % t->heads[i]) fail_at(r, p, elem, "%d does not divide the stage %d width %ld", t->heads[i], i, width);
        else if (res % window)
            fail_at(r, p, "window", "%d does not divide the stage %d grid of %d", t->window, i, res);
        else if (i + 1 < t->n_stages && res % 2)
            fail_at(r, p, "image_size", "the stage %d grid of %d cannot be merged 2x2", i, res);
        res /= 2;
    }
    if (t->head.hidden % t->head.heads)
        fail_at(r, "tagger.head", "heads", "%d does not divide hidden %d", t->head.heads, t->head.hidden);
}

static void read_tagger(reader *r, const cJSON *root, tagger_config *t) {
    const char *p = "tagger";
    const cJSON *o = get_object(r, root, "", p);
    get_path(r, o, p, "file", &t->file);
    get_positive(r, o, p, "image_size", &t->image_size);
    get_positive(r, o, p, "patch_size", &t->patch_size);
    get_positive(r, o, p, "embed_dim", &t->embed_dim);
    get_int_array(r, o, p, "depths", 1, MODEL_MAX_STAGES, 1, INT_MAX, t->depths, &t->n_stages);
    int n_heads = 0;
    get_int_array(r, o, p, "heads", 1, MODEL_MAX_STAGES, 1, INT_MAX, t->heads, &n_heads);
    get_positive(r, o, p, "window", &t->window);
    get_float(r, o, p, "mlp_ratio", FLOAT_POSITIVE, &t->mlp_ratio);
    get_float(r, o, p, "ln_eps", FLOAT_POSITIVE, &t->ln_eps);
    get_positive(r, o, p, "embed_out", &t->embed_out);
    read_tagger_head(r, o, &t->head);
    int resize = 0;
    get_enum(r, o, p, "resize", resize_names, 2, &resize);
    t->resize = (resize_filter)resize;
    get_normalization(r, o, p, t->mean, t->std);
    read_tag_list(r, o, t);
    if (!r->failed) check_tagger(r, t, n_heads);
}

static int is_intermediate(const vision_config *v, int layer) {
    for (int i = 0; i < v->n_intermediate; i++)
        if (v->intermediate_layers[i] == layer) return 1;
    return 0;
}

static void read_qformer(reader *r, const cJSON *o, qformer_config *q) {
    const char *qp = "aggregator.qformer";
    const cJSON *qo = get_object(r, o, "aggregator", "qformer");
    get_positive(r, qo, qp, "hidden", &q->hidden);
    get_positive(r, qo, qp, "layers", &q->layers);
    get_positive(r, qo, qp, "heads", &q->heads);
    get_positive(r, qo, qp, "intermediate", &q->intermediate);
    get_float(r, qo, qp, "ln_eps", FLOAT_POSITIVE, &q->ln_eps);
    get_positive(r, qo, qp, "cross_attention_freq", &q->cross_attention_freq);
    get_positive(r, qo, qp, "num_query_tokens", &q->num_query_tokens);
    get_positive(r, qo, qp, "vocab_size", &q->vocab_size);
    get_positive(r, qo, qp, "max_position", &q->max_position);
    get_positive(r, qo, qp, "max_text_len", &q->max_text_len);
    get_path(r, qo, qp, "vocab", &q->vocab);
    if (r->failed) return;
    if (q->hidden % q->heads) fail_at(r, qp, "heads", "%d does not divide hidden %d", q->heads, q->hidden);
    if (q->max_text_len > q->max_position)
        fail_at(r, qp, "max_text_len", "%d exceeds max_position %d", q->max_text_len, q->max_position);
}

/* The Q-Former is read unless visual_input is AGGREGATOR, the fusion blocks and proj_hidden
 * unless it is QFORMER; fusion.hidden_layer always (ln_vision and the Q-Former use it too). */
static void read_aggregator(reader *r, const cJSON *root, visual_input vi, const vision_config *vision,
                            aggregator_config *a) {
    const char *p = "aggregator";
    const cJSON *o = get_object(r, root, "", p);
    get_path(r, o, p, "file", &a->file);
    get_positive(r, o, p, "vision_width", &a->vision_width);
    if (vi != VISUAL_INPUT_AGGREGATOR) read_qformer(r, o, &a->qformer);

    const char *fp = "aggregator.fusion";
    fusion_config *f = &a->fusion;
    const cJSON *fo = get_object(r, o, p, "fusion");
    get_int(r, fo, fp, "hidden_layer", 0, vision->depth - 1, &f->hidden_layer);
    int n_cross = 0;
    if (vi != VISUAL_INPUT_QFORMER) {
        get_int(r, fo, fp, "blocks", 1, MODEL_MAX_INTERMEDIATE, &f->blocks);
        get_positive(r, fo, fp, "heads", &f->heads);
        get_positive(r, fo, fp, "intermediate", &f->intermediate);
        get_float(r, fo, fp, "ln_eps", FLOAT_POSITIVE, &f->ln_eps);
        get_int_array(r, fo, fp, "cross_layers", 1, MODEL_MAX_INTERMEDIATE, 0, vision->depth - 1,
                      f->cross_layers, &n_cross);
        get_positive(r, o, p, "proj_hidden", &a->proj_hidden);
    }
    if (r->failed) return;

    if (a->vision_width != vision->dim)
        fail_at(r, p, "vision_width", "%d differs from vision.dim %d", a->vision_width, vision->dim);
    /* the vision stage only returns the outputs it lists, so every layer used here must be one */
    if (!is_intermediate(vision, f->hidden_layer))
        fail_at(r, fp, "hidden_layer", "layer %d is not one of vision.intermediate_layers", f->hidden_layer);
    if (vi == VISUAL_INPUT_QFORMER) return;
    if (a->vision_width % f->heads)
        fail_at(r, fp, "heads", "%d does not divide vision_width %d", f->heads, a->vision_width);
    if (n_cross != f->blocks) fail_at(r, fp, "cross_layers", "%d entries for %d blocks", n_cross, f->blocks);
    char elem[64];
    for (int i = 0; i < n_cross; i++)
        if (!is_intermediate(vision, f->cross_layers[i])) {
            snprintf(elem, sizeof elem, "cross_layers[%d]", i);
            fail_at(r, fp, elem, "layer %d is not one of vision.intermediate_layers", f->cross_layers[i]);
        }
}

/* The generation defaults at obj.generation (path gp), LION's and Pink's alike. */
static void read_generation(reader *r, const cJSON *obj, const char *path, const char *gp, generation_config *g) {
    const cJSON *go = get_object(r, obj, path, "generation");
    get_positive(r, go, gp, "num_beams", &g->num_beams);
    get_positive(r, go, gp, "max_new_tokens", &g->max_new_tokens);
    get_int(r, go, gp, "min_length", 0, INT_MAX, &g->min_length);
    get_float(r, go, gp, "repetition_penalty", FLOAT_POSITIVE, &g->repetition_penalty);
    get_float(r, go, gp, "length_penalty", FLOAT_ANY, &g->length_penalty);
    get_float(r, go, gp, "top_p", FLOAT_UNIT_OPEN_LOW, &g->top_p);
    get_float(r, go, gp, "temperature", FLOAT_POSITIVE, &g->temperature);
    get_bool(r, go, gp, "do_sample", &g->do_sample);
}

static void read_llm(reader *r, const cJSON *root, llm_config *l) {
    const char *p = "llm";
    const cJSON *o = get_object(r, root, "", p);
    get_path(r, o, p, "file", &l->file);
    get_positive(r, o, p, "d_model", &l->d_model);
    get_positive(r, o, p, "d_ff", &l->d_ff);
    get_positive(r, o, p, "d_kv", &l->d_kv);
    get_positive(r, o, p, "heads", &l->heads);
    get_positive(r, o, p, "encoder_layers", &l->encoder_layers);
    get_positive(r, o, p, "decoder_layers", &l->decoder_layers);
    get_positive(r, o, p, "vocab_size", &l->vocab_size);
    get_positive(r, o, p, "rel_buckets", &l->rel_buckets);
    get_positive(r, o, p, "rel_max_distance", &l->rel_max_distance);
    get_float(r, o, p, "ln_eps", FLOAT_POSITIVE, &l->ln_eps);
    int act = 0;
    get_enum(r, o, p, "ff_act", activation_names, 3, &act);
    l->ff_act = (activation)act;

    const cJSON *ad = get_object(r, o, p, "adapters");
    get_positive(r, ad, "llm.adapters", "num", &l->adapters_num);
    get_positive(r, ad, "llm.adapters", "bottleneck", &l->adapters_bottleneck);

    get_optional_bool(r, o, p, "tie_word_embeddings", &l->tie_word_embeddings);
    get_path(r, o, p, "spiece", &l->spiece);
    int max_id = l->vocab_size > 0 ? l->vocab_size - 1 : 0;
    get_int(r, o, p, "pad_id", 0, max_id, &l->pad_id);
    get_int(r, o, p, "eos_id", 0, max_id, &l->eos_id);
    get_int(r, o, p, "decoder_start_id", 0, max_id, &l->decoder_start_id);
    get_string(r, o, p, "tag_prompt", &l->tag_prompt);
    get_string(r, o, p, "soft_prompt_token", &l->soft_prompt_token);
    get_positive(r, o, p, "max_text_len", &l->max_text_len);

    read_generation(r, o, p, "llm.generation", &l->generation);
    if (r->failed) return;

    const char *slot = strstr(l->tag_prompt, "{}");
    if (!slot || strstr(slot + 2, "{}"))
        fail_at(r, p, "tag_prompt", "must hold exactly one \"{}\" where the tags go");
    else if (!strstr(l->tag_prompt, l->soft_prompt_token))
        fail_at(r, p, "tag_prompt", "does not contain soft_prompt_token \"%s\"", l->soft_prompt_token);
}

/* ------------------------------------------------------------------ Pink */

/* A string with exactly `slots` occurrences of "{}". */
static void expect_slots(reader *r, const char *path, const char *key, const char *v, int slots) {
    if (r->failed || !v) return;
    int n = 0;
    for (const char *q = strstr(v, "{}"); q; q = strstr(q + 2, "{}")) n++;
    if (n != slots) {
        if (slots == 0) fail_at(r, path, key, "must hold no \"{}\" (found %d)", n);
        else fail_at(r, path, key, "must hold exactly one \"{}\" (found %d)", n);
    }
}

/* Pink's adapters: {"dim": 0} (none) or {"dim": d, "attn": bool, "mlp": bool[, "silu": bool]}. */
static void read_pink_adapter(reader *r, const cJSON *o, const char *path, int *dim, int *attn, int *mlp, int *silu) {
    char ap[64];
    snprintf(ap, sizeof ap, "%s.adapter", path);
    const cJSON *a = get_object(r, o, path, "adapter");
    get_int(r, a, ap, "dim", 0, INT_MAX, dim);
    if (r->failed || *dim == 0) return;
    get_bool(r, a, ap, "attn", attn);
    get_bool(r, a, ap, "mlp", mlp);
    if (silu) get_bool(r, a, ap, "silu", silu);
    if (!r->failed && !*attn && !*mlp) fail_at(r, ap, "dim", "%d but neither attn nor mlp is set", *dim);
}

static const char *const act_names[] = {"gelu", "quick_gelu"}; /* index = quick_gelu */

static void read_pink_vision(reader *r, const cJSON *o, pink_vision_config *v) {
    const char *p = "pink.vision";
    const cJSON *vo = get_object(r, o, "pink", "vision");
    get_path(r, vo, p, "file", &v->file);
    get_positive(r, vo, p, "image_size", &v->image_size);
    get_positive(r, vo, p, "patch_size", &v->patch_size);
    get_positive(r, vo, p, "dim", &v->dim);
    get_positive(r, vo, p, "layers", &v->layers);
    get_positive(r, vo, p, "heads", &v->heads);
    get_positive(r, vo, p, "mlp_hidden", &v->mlp_hidden);
    get_float(r, vo, p, "ln_eps", FLOAT_POSITIVE, &v->ln_eps);
    get_enum(r, vo, p, "act", act_names, 2, &v->quick_gelu);
    /* HF's hidden_states has layers + 1 entries: -(layers + 1) .. layers */
    int max = v->layers > 0 ? v->layers : 0;
    get_int(r, vo, p, "select_layer", -max - 1, max, &v->select_layer);
    read_pink_adapter(r, vo, p, &v->adapter_dim, &v->adapter_attn, &v->adapter_mlp, NULL);
    get_positive(r, vo, p, "proj_dim", &v->proj_dim);
    int resize = 0;
    get_enum(r, vo, p, "resize", resize_names, 2, &resize);
    v->resize = (resize_filter)resize;
    get_normalization(r, vo, p, v->mean, v->std);
    if (r->failed) return;
    if (v->image_size % v->patch_size)
        fail_at(r, p, "patch_size", "%d does not divide image_size %d", v->patch_size, v->image_size);
    else if (v->dim % v->heads)
        fail_at(r, p, "heads", "%d does not divide dim %d", v->heads, v->dim);
}

static void read_pink_llm(reader *r, const cJSON *o, pink_llm_config *l) {
    const char *p = "pink.llm";
    const cJSON *lo = get_object(r, o, "pink", "llm");
    get_path(r, lo, p, "file", &l->file);
    get_positive(r, lo, p, "dim", &l->dim);
    get_positive(r, lo, p, "hidden", &l->hidden);
    get_positive(r, lo, p, "layers", &l->layers);
    get_positive(r, lo, p, "heads", &l->heads);
    get_positive(r, lo, p, "kv_heads", &l->kv_heads);
    get_positive(r, lo, p, "vocab_size", &l->vocab_size);
    get_positive(r, lo, p, "max_positions", &l->max_positions);
    get_float(r, lo, p, "rms_eps", FLOAT_POSITIVE, &l->rms_eps);
    get_float(r, lo, p, "rope_theta", FLOAT_POSITIVE, &l->rope_theta);
    read_pink_adapter(r, lo, p, &l->adapter_dim, &l->adapter_attn, &l->adapter_mlp, &l->adapter_silu);
    read_generation(r, lo, p, "pink.llm.generation", &l->generation);
    if (r->failed) return;
    if (l->dim % l->heads) fail_at(r, p, "heads", "%d does not divide dim %d", l->heads, l->dim);
    else if (l->heads % l->kv_heads) fail_at(r, p, "kv_heads", "%d does not divide heads %d", l->kv_heads, l->heads);
    else if ((l->dim / l->heads) % 2)
        fail_at(r, p, "heads", "head dim %d is odd (rotary positions turn pairs)", l->dim / l->heads);
}

static void read_pink_tokenizer(reader *r, const cJSON *o, int vocab_size, pink_tokenizer_config *t) {
    const char *p = "pink.tokenizer";
    const cJSON *to = get_object(r, o, "pink", "tokenizer");
    get_path(r, to, p, "file", &t->file);
    get_bool(r, to, p, "legacy", &t->legacy);
    get_bool(r, to, p, "add_bos", &t->add_bos);
    get_bool(r, to, p, "add_eos", &t->add_eos);
    get_bool(r, to, p, "clean_up_spaces", &t->clean_up_spaces);
    int max_id = vocab_size > 0 ? vocab_size - 1 : 0;
    get_int(r, to, p, "bos_id", 0, max_id, &t->bos_id);
    get_int(r, to, p, "eos_id", 0, max_id, &t->eos_id);
    get_int(r, to, p, "pad_id", 0, max_id, &t->pad_id);
    int n = 0;
    const cJSON *a = get_array(r, to, p, "added_tokens", 0, INT_MAX, &n);
    if (!a || r->failed) return;
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added) {
        fail_oom(r);
        return;
    }
    char elem[64];
    for (int i = 0; i < n && !r->failed; i++) {
        snprintf(elem, sizeof elem, "added_tokens[%d]", i);
        const cJSON *e = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsObject(e)) {
            fail_at(r, p, elem, "expected an object {\"content\": ..., \"id\": ...}");
            break;
        }
        char ep[96];
        snprintf(ep, sizeof ep, "%s.%s", p, elem);
        get_string(r, e, ep, "content", &t->added[i].content);
        t->n_added = i + 1; /* counts what model_config_free must release */
        get_int(r, e, ep, "id", 0, max_id, &t->added[i].id);
        for (int j = 0; j < i && !r->failed; j++)
            if (strcmp(t->added[j].content, t->added[i].content) == 0 || t->added[j].id == t->added[i].id)
                fail_at(r, p, elem, "repeats added_tokens[%d] (\"%s\", id %d)", j, t->added[j].content, t->added[j].id);
    }
}

static const char *const template_names[] = {"llamav2"};

static void read_pink_prompt(reader *r, const cJSON *o, const pink_config *pk, pink_prompt_config *q) {
    const char *p = "pink.prompt";
    const cJSON *po = get_object(r, o, "pink", "prompt");
    int tmpl = 0;
    get_enum(r, po, p, "template", template_names, 1, &tmpl);
    get_string(r, po, p, "system", &q->system);
    expect_slots(r, p, "system", q->system, 1);
    get_string(r, po, p, "image_token", &q->image_token);
    get_positive(r, po, p, "image_tokens", &q->image_tokens);
    get_int(r, po, p, "box_decimals", 1, 9, &q->box_decimals);
    const cJSON *tasks = get_object(r, po, p, "tasks");
    const char *tp = "pink.prompt.tasks";
    get_string(r, tasks, tp, "caption", &q->caption);
    expect_slots(r, tp, "caption", q->caption, 0);
    get_string(r, tasks, tp, "vqa", &q->vqa);
    expect_slots(r, tp, "vqa", q->vqa, 1);
    get_string(r, tasks, tp, "rec", &q->rec);
    expect_slots(r, tp, "rec", q->rec, 1);
    get_string(r, tasks, tp, "region_caption", &q->region_caption);
    expect_slots(r, tp, "region_caption", q->region_caption, 1);
    if (r->failed) return;
    const pink_vision_config *v = &pk->vision;
    long grid = v->image_size / v->patch_size;
    int found = 0;
    for (int i = 0; i < pk->tokenizer.n_added; i++) found |= strcmp(pk->tokenizer.added[i].content, q->image_token) == 0;
    if (!found)
        fail_at(r, p, "image_token", "\"%s\" is not one of pink.tokenizer.added_tokens", q->image_token);
    else if (q->image_tokens != grid * grid)
        fail_at(r, p, "image_tokens", "%d, but the vision tower gives %ld patches ((%d / %d)^2)", q->image_tokens,
                grid * grid, v->image_size, v->patch_size);
    else if (q->image_tokens >= pk->llm.max_positions)
        fail_at(r, p, "image_tokens", "%d leave no room in pink.llm.max_positions %d", q->image_tokens,
                pk->llm.max_positions);
}

static void read_pink(reader *r, const cJSON *root, pink_config *pk) {
    const cJSON *o = get_object(r, root, "", "pink");
    read_pink_vision(r, o, &pk->vision);
    read_pink_llm(r, o, &pk->llm);
    read_pink_tokenizer(r, o, pk->llm.vocab_size, &pk->tokenizer);
    read_pink_prompt(r, o, pk, &pk->prompt);
    if (r->failed) return;
    if (pk->vision.proj_dim != pk->llm.dim)
        fail_at(r, "pink.vision", "proj_dim", "%d differs from pink.llm.dim %d (mm_projector feeds the LLM)",
                pk->vision.proj_dim, pk->llm.dim);
}

static const char *const family_names[] = {"lion", "pink"}; /* model_family's order */

const char *model_family_name(model_family f) { return (unsigned)f < 2 ? family_names[f] : "?"; }

static void read_model(reader *r, const cJSON *root, model_config *cfg) {
    if (!cJSON_IsObject(root)) {
        r->failed = 1;
        lion_fail(r->st, LION_EFORMAT, "%s: expected a JSON object", r->file);
        return;
    }
    const cJSON *format = get_item(r, root, "", "format");
    if (format && (!cJSON_IsString(format) || strcmp(format->valuestring, "lion-model") != 0))
        fail_at(r, "", "format", "expected \"lion-model\"");
    const cJSON *version = get_item(r, root, "", "format_version");
    if (version && !r->failed && !(cJSON_IsNumber(version) && version->valuedouble == MODEL_FORMAT_VERSION))
        fail_at(r, "", "format_version", "this build reads version %d only", MODEL_FORMAT_VERSION);
    get_string(r, root, "", "name", &cfg->name);
    int family = MODEL_FAMILY_LION;
    if (!r->failed && cJSON_GetObjectItemCaseSensitive(root, "family"))
        get_enum(r, root, "", "family", family_names, 2, &family);
    cfg->family = (model_family)family;
    if (cfg->family == MODEL_FAMILY_PINK) {
        read_pink(r, root, &cfg->pink);
        return;
    }
    int vi = 0;
    get_enum(r, root, "", "visual_input", visual_input_names, 3, &vi);
    cfg->visual_input = (visual_input)vi;
    read_vision(r, root, &cfg->vision);
    read_tagger(r, root, &cfg->tagger);
    read_aggregator(r, root, cfg->visual_input, &cfg->vision, &cfg->aggregator);
    read_llm(r, root, &cfg->llm);
}

static char *read_file(const char *path, size_t *len, lion_status *st) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        lion_fail(st, LION_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) lion_fail(st, LION_EIO, "%s: cannot read: %s", path, strerror(errno));
    else if (n > MODEL_JSON_MAX_BYTES)
        lion_fail(st, LION_ETOOBIG, "%s: %ld bytes, more than the %ld-byte limit", path, n, MODEL_JSON_MAX_BYTES);
    else if (!(buf = malloc((size_t)n + 1))) lion_fail(st, LION_ENOMEM, "%s: out of memory", path);
    else if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        lion_fail(st, LION_EIO, "%s: short read", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

int model_config_load(model_config *cfg, const char *dir, lion_status *st) {
    memset(cfg, 0, sizeof *cfg);
    size_t n = strlen(dir) + sizeof "/model.json";
    char *file = malloc(n);
    if (!file) return lion_fail(st, LION_ENOMEM, "%s: out of memory", dir);
    snprintf(file, n, "%s/model.json", dir);
    size_t len = 0;
    char *text = read_file(file, &len, st);
    if (!text) {
        free(file);
        return -1;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    reader r = {.file = file, .dir = dir, .st = st};
    if (!root) {
        int line = 1;
        for (const char *p = text; end && p < end && p < text + len; p++) line += *p == '\n';
        lion_fail(st, LION_EFORMAT, "%s: not valid JSON (line %d)", file, line);
        r.failed = 1;
    } else {
        cfg->dir = str_dup(&r, dir);
        read_model(&r, root, cfg);
    }
    cJSON_Delete(root);
    free(text);
    free(file);
    if (r.failed) {
        model_config_free(cfg);
        return -1;
    }
    return 0;
}

void model_config_free(model_config *cfg) {
    if (!cfg) return;
    free(cfg->dir);
    free(cfg->name);
    free(cfg->vision.file);
    free(cfg->tagger.file);
    for (int i = 0; cfg->tagger.tags && i < cfg->tagger.num_tags; i++) free(cfg->tagger.tags[i]);
    free(cfg->tagger.tags);
    free(cfg->tagger.thresholds);
    free(cfg->tagger.delete_tags);
    free(cfg->aggregator.file);
    free(cfg->aggregator.qformer.vocab);
    free(cfg->llm.file);
    free(cfg->llm.spiece);
    free(cfg->llm.tag_prompt);
    free(cfg->llm.soft_prompt_token);
    pink_config *pk = &cfg->pink;
    free(pk->vision.file);
    free(pk->llm.file);
    free(pk->tokenizer.file);
    for (int i = 0; pk->tokenizer.added && i < pk->tokenizer.n_added; i++) free(pk->tokenizer.added[i].content);
    free(pk->tokenizer.added);
    free(pk->prompt.system);
    free(pk->prompt.image_token);
    free(pk->prompt.caption);
    free(pk->prompt.vqa);
    free(pk->prompt.rec);
    free(pk->prompt.region_caption);
    memset(cfg, 0, sizeof *cfg);
}

const char *model_config_stage_file(const model_config *cfg, const char *stage) {
    if (cfg->family == MODEL_FAMILY_PINK) {
        if (strcmp(stage, "vision") == 0) return cfg->pink.vision.file;
        if (strcmp(stage, "llm") == 0) return cfg->pink.llm.file;
        return NULL;
    }
    if (strcmp(stage, "vision") == 0) return cfg->vision.file;
    if (strcmp(stage, "tagger") == 0) return cfg->tagger.file;
    if (strcmp(stage, "aggregator") == 0) return cfg->aggregator.file;
    if (strcmp(stage, "llm") == 0) return cfg->llm.file;
    return NULL;
}

int model_config_open_stage(const model_config *cfg, const char *stage, safetensors_file **out,
                            lion_status *st) {
    *out = NULL;
    const char *path = model_config_stage_file(cfg, stage);
    if (!path)
        return lion_fail(st, LION_EINVAL, "model '%s': unknown stage '%s' (%s)", cfg->name ? cfg->name : "?", stage,
                         cfg->family == MODEL_FAMILY_PINK ? "a Pink model has vision, llm"
                                                          : "vision, tagger, aggregator, llm");
    return safetensors_open(out, path, st);
}

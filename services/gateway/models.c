/* models.c - the models one gateway serves (--model-name), the names requests use for them,
 * and each family's pipeline: which stages its requests run, and what each stage's job is
 * built from.
 *
 * A family is what model.json's "family" says and what workers announce in their credit; the
 * gateway is told each model's family (--model-name NAME=FAMILY) rather than learning it from
 * the first worker that connects, so that a request's path never depends on which worker came
 * first, and a worker that disagrees is refused (stage_pool.c) instead of changing it. */
#include <stdio.h>
#include <string.h>

#include "gateway_impl.h"

#define V LION__STAGE__VISION
#define T LION__STAGE__TAGGER
#define A LION__STAGE__AGGREGATOR
#define L LION__STAGE__LLM

static const family_pipeline pipelines[GATEWAY_FAMILIES] = {
    /* vision and tagger at once; the aggregator as soon as vision is done (it does not need
     * the tags); the llm once the aggregator and the tagger are */
    [GATEWAY_FAMILY_LION] = {.name = "lion",
                             .stages = STAGE_BIT(V) | STAGE_BIT(T) | STAGE_BIT(A) | STAGE_BIT(L),
                             .needs = {[A] = STAGE_BIT(V), [L] = STAGE_BIT(A) | STAGE_BIT(T)},
                             .visual_tokens_from = A},
    /* Pink's vision stage (CLIP + mm_projector) returns the visual tokens itself: no tagger,
     * no aggregator */
    [GATEWAY_FAMILY_PINK] = {.name = "pink",
                             .stages = STAGE_BIT(V) | STAGE_BIT(L),
                             .needs = {[L] = STAGE_BIT(V)},
                             .visual_tokens_from = V},
};

const family_pipeline *family_pipeline_of(gateway_family family) {
    return &pipelines[(unsigned)family < GATEWAY_FAMILIES ? family : GATEWAY_FAMILY_LION];
}

int family_from_name(const char *name) {
    for (int f = 0; f < GATEWAY_FAMILIES; f++)
        if (!strcmp(name, pipelines[f].name)) return f;
    return -1;
}

/* Names become Prometheus label values, JSON strings and log words: no quoting needed. */
static int name_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("._:+@/-", c);
}

/* One "NAME[=FAMILY]" of the list (len bytes at text) into m. */
static int parse_one(const char *text, size_t len, gateway_model *m, lion_status *st) {
    const char *eq = memchr(text, '=', len);
    const size_t name_len = eq ? (size_t)(eq - text) : len;
    if (name_len == 0) return lion_fail(st, LION_EINVAL, "--model-name: an empty model name in the list");
    if (name_len > GATEWAY_MODEL_NAME_MAX)
        return lion_fail(st, LION_EINVAL, "--model-name: '%.*s' is longer than %d bytes", (int)name_len, text,
                         GATEWAY_MODEL_NAME_MAX);
    for (size_t i = 0; i < name_len; i++)
        if (!name_char_ok(text[i]))
            return lion_fail(st, LION_EINVAL, "--model-name: '%.*s' has a '%c' (names use A-Z a-z 0-9 . _ : + @ / -)",
                             (int)name_len, text, text[i]);
    memcpy(m->name, text, name_len);
    m->name[name_len] = '\0';
    m->family = GATEWAY_FAMILY_LION;
    if (!eq) return 0;
    char family[16];
    const size_t family_len = len - name_len - 1;
    snprintf(family, sizeof family, "%.*s", (int)(family_len < sizeof family ? family_len : sizeof family - 1), eq + 1);
    const int f = family_len < sizeof family ? family_from_name(family) : -1;
    if (f < 0)
        return lion_fail(st, LION_EINVAL, "--model-name: %s: unknown family '%.*s' (lion, pink)", m->name,
                         (int)family_len, eq + 1);
    m->family = (gateway_family)f;
    return 0;
}

int models_parse(const char *list, gateway_model *models, int *n_models, lion_status *st) {
    *n_models = 0;
    for (const char *at = list;;) {
        const size_t len = strcspn(at, ",");
        if (*n_models == GATEWAY_MAX_MODELS)
            return lion_fail(st, LION_EINVAL, "--model-name: more than %d models", GATEWAY_MAX_MODELS);
        gateway_model *m = &models[*n_models];
        if (parse_one(at, len, m, st) != 0) return -1;
        for (int k = 0; k < *n_models; k++)
            if (!strcmp(models[k].name, m->name))
                return lion_fail(st, LION_EINVAL, "--model-name: '%s' is listed twice", m->name);
        ++*n_models;
        if (!at[len]) return 0;
        at += len + 1;
    }
}

int models_find(const gateway_config *cfg, const char *name, int *region) {
    *region = 0;
    for (int m = 0; m < cfg->n_models; m++)
        if (!strcmp(name, cfg->models[m].name)) return m;
    static const char suffix[] = "-region";
    const size_t n = strlen(name), k = sizeof suffix - 1;
    if (n <= k || strcmp(name + n - k, suffix) != 0) return -1;
    for (int m = 0; m < cfg->n_models; m++)
        if (strlen(cfg->models[m].name) == n - k && !strncmp(name, cfg->models[m].name, n - k)) {
            *region = 1;
            return m;
        }
    return -1;
}

int model_has_stage(const gateway_config *cfg, int m, int stage) {
    return m >= 0 && m < cfg->n_models && (family_pipeline_of(cfg->models[m].family)->stages & STAGE_BIT(stage));
}

void models_list(const gateway_config *cfg, char *out, size_t size) {
    size_t at = 0;
    out[0] = '\0';
    const int names = 2 * cfg->n_models;
    for (int i = 0; i < names && at < size; i++) {
        const char *sep = i == 0 ? "" : i == names - 1 ? " and " : ", ";
        int n = snprintf(out + at, size - at, "%s'%s%s'", sep, cfg->models[i / 2].name, i % 2 ? "-region" : "");
        if (n < 0) break;
        at += (size_t)n;
    }
}

void models_describe(const gateway_config *cfg, char *out, size_t size) {
    size_t at = 0;
    out[0] = '\0';
    for (int m = 0; m < cfg->n_models && at < size; m++) {
        int n = snprintf(out + at, size - at, "%s%s (%s%s)", m ? ", " : "", cfg->models[m].name,
                         family_pipeline_of(cfg->models[m].family)->name, m == 0 ? ", the default" : "");
        if (n < 0) break;
        at += (size_t)n;
    }
}

int gateway_pools(gateway *gw, model_pool **pools) {
    int n = 0;
    for (int m = 0; m < gw->cfg.n_models; m++)
        for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++)
            if (model_has_stage(&gw->cfg, m, s)) pools[n++] = GATEWAY_POOL(gw, m, s);
    return n;
}

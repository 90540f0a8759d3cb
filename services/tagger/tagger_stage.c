#include "tagger_stage.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "protocol.h"
#include "stage_io.h"

int tagger_stage_open(tagger_stage *s, const char *model_dir, int max_batch, lion_status *st) {
    memset(s, 0, sizeof *s);
    if (model_config_load(&s->cfg, model_dir, st)) return -1;
    const tagger_config *t = &s->cfg.tagger;
    ram_config rc;
    ram_config_from_model(&rc, t);
    /* the stage file holds RAM's own key names (visual_encoder., tagging_head., ...) */
    if (weights_open(&s->w, t->file, "", st) || ram_load(&s->ram, &rc, &s->w, st)) {
        tagger_stage_close(s);
        return -1;
    }
    s->max_batch = max_batch > 0 ? max_batch : 1;
    s->limits = image_limits_default();
    size_t img = (size_t)3 * t->image_size * t->image_size;
    s->pixels = malloc(sizeof(float) * img * s->max_batch);
    s->logits = malloc(sizeof(float) * (size_t)t->num_tags * s->max_batch);
    s->rows = malloc(sizeof *s->rows * (size_t)s->max_batch);
    s->top_k = malloc(sizeof *s->top_k * (size_t)s->max_batch);
    arena_init(&s->scratch, 0);
    if (!s->pixels || !s->logits || !s->rows || !s->top_k) {
        tagger_stage_close(s);
        return lion_fail(st, LION_ENOMEM, "tagger: out of memory for batch %d", s->max_batch);
    }
    log_info("tagger: %s, Swin %dx%d/%d embed %d, %d stages, %d tags, %.1f MB f32 weights", s->cfg.name,
             t->image_size, t->image_size, t->patch_size, t->embed_dim, t->n_stages, t->num_tags,
             s->w.bytes_f32 / 1e6);
    return 0;
}

void tagger_stage_close(tagger_stage *s) {
    ram_free(&s->ram);
    weights_close(&s->w);
    arena_free(&s->scratch);
    free(s->pixels);
    free(s->logits);
    free(s->rows);
    free(s->top_k);
    model_config_free(&s->cfg);
    memset(s, 0, sizeof *s);
}

/* The job's top-k request, checked before any work is done for it: over LION_MAX_TOP_TAGS is
 * refused, over the model's tag count gives every tag (the gateway cannot know the count). */
static int job_top_k(const tagger_stage *s, const worker_job *job, int *top_k, lion_status *st) {
    *top_k = 0;
    if (!job->task->has_debug_tags_top_k) return 0;
    uint32_t k = job->task->debug_tags_top_k;
    if (k > LION_MAX_TOP_TAGS)
        return lion_fail(st, LION_EINVAL, "tagger: debug_tags_top_k %u is over the limit of %d", k,
                         LION_MAX_TOP_TAGS);
    *top_k = k < (uint32_t)s->ram.cfg.num_tags ? (int)k : s->ram.cfg.num_tags;
    return 0;
}

static int add_result(const tagger_stage *s, worker_job *job, const ram_result *r, lion_status *st) {
    for (int i = 0; i < r->n_tags; i++)
        if (envelope_add_tag(job->reply, s->ram.tags[r->tags[i].index], r->tags[i].score, st)) return -1;
    for (int i = 0; i < r->n_top; i++)
        if (envelope_add_top_tag(job->reply, s->ram.tags[r->top[i].index], r->top[i].score, st)) return -1;
    if (!envelope_add_sequence(job->reply, r->prompt, NULL, 0, 0.0f, st)) return -1;
    return 0;
}

int tagger_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    tagger_stage *s = ctx;
    const tagger_config *t = &s->cfg.tagger;
    const size_t img = (size_t)3 * t->image_size * t->image_size;
    const image_filter filter = t->resize == RESIZE_BICUBIC ? IMAGE_FILTER_BICUBIC : IMAGE_FILTER_BILINEAR;
    int *rows = s->rows, *top_k = s->top_k;
    /* the worker gives at most the max_batch the stage was opened with */
    if (n > s->max_batch) return lion_fail(st, LION_EINTERNAL, "tagger: batch of %d over %d", n, s->max_batch);

    /* fail the bad jobs now; preprocess the rest into one pixel batch */
    int m = 0;
    for (int i = 0; i < n; i++) {
        lion_status js;
        const uint8_t *bytes;
        size_t len;
        if (job_top_k(s, &jobs[i], &top_k[m], &js) || stage_image_bytes(&jobs[i], &bytes, &len, &js)) {
            worker_job_fail(&jobs[i], js.code, "%s", js.msg);
            continue;
        }
        if (image_preprocess(bytes, len, t->image_size, filter, t->mean, t->std, s->pixels + m * img, &s->limits,
                             &js)) {
            worker_job_fail(&jobs[i], js.code, "image: %s", js.msg);
            continue;
        }
        rows[m++] = i;
    }
    if (m == 0) return 0;

    int64_t shape[] = {m, 3, t->image_size, t->image_size};
    tensor pixels = tensor_view(DTYPE_F32, s->pixels, 4, shape);
    int rc = ram_logits(&s->ram, &pixels, s->logits, &s->scratch, st);
    arena_reset(&s->scratch);
    if (rc) return -1;

    for (int j = 0; j < m; j++) {
        worker_job *job = &jobs[rows[j]];
        ram_result r;
        lion_status js;
        if (ram_select(&s->ram, s->logits + (size_t)j * t->num_tags, top_k[j], &r, &js) ||
            add_result(s, job, &r, &js))
            worker_job_fail(job, js.code, "%s", js.msg);
        ram_result_free(&r);
    }
    return 0;
}

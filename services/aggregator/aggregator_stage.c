#include "aggregator_stage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "protocol.h"
#include "stage_io.h"

int aggregator_stage_open(aggregator_stage *s, const char *model_dir, int max_batch, lion_precision p,
                          lion_status *st) {
    memset(s, 0, sizeof *s);
    arena_init(&s->scratch, 0);
    if (model_config_load(&s->cfg, model_dir, st)) return -1;
    const aggregator_config *a = &s->cfg.aggregator;
    if (weights_open(&s->w, a->file, "", st)) {
        aggregator_stage_close(s);
        return -1;
    }
    if (aggregate_load(&s->model, &s->cfg, &s->w, p, st)) {
        aggregator_stage_close(s);
        return -1;
    }
    /* under visual_input AGGREGATOR the instruction is not read, and no vocabulary ships */
    if (s->model.use_qformer && wordpiece_load(a->qformer.vocab, &s->tok, st)) {
        aggregator_stage_close(s);
        return -1;
    }
    s->max_batch = max_batch > 0 ? max_batch : 1;
    s->max_text = a->qformer.max_text_len >= 2 ? a->qformer.max_text_len : BERT_MAX_LENGTH;
    s->ids = malloc(sizeof *s->ids * (size_t)s->max_text * s->max_batch);
    s->out = malloc(sizeof *s->out * (size_t)s->model.num_visual * s->model.d_model * s->max_batch);
    s->reqs = malloc(sizeof *s->reqs * (size_t)s->max_batch);
    s->good = malloc(sizeof *s->good * (size_t)s->max_batch);
    if (!s->ids || !s->out || !s->reqs || !s->good) {
        aggregator_stage_close(s);
        return lion_fail(st, LION_ENOMEM, "aggregator: out of memory for batch %d", max_batch);
    }
    /* bytes_f32 counts what weights_get handed out in f32: in bf16 the biases, LayerNorms and
     * embedding tables; the matrices are counted apart, in their form */
    const size_t matrices = aggregate_matrix_bytes(&s->model);
    log_info("aggregator: %s, visual_input %s, %d visual tokens of %d, reads ViT layer %d%s, matrices %s %.1f MB "
             "(%s), other weights %.1f MB f32",
             s->cfg.name, visual_input_name(s->model.visual_input), s->model.num_visual, s->model.d_model,
             s->model.hidden_layer, s->model.use_fusion ? " and the fusion cross layers" : "", precision_name(p),
             matrices / 1e6, linear_form(aggregate_first_matrix(&s->model)),
             (double)(s->w.bytes_f32 - (p == PRECISION_F32 ? matrices : 0)) / 1e6);
    return 0;
}

void aggregator_stage_close(aggregator_stage *s) {
    aggregate_free(&s->model);
    weights_close(&s->w);
    wordpiece_free(s->tok);
    arena_free(&s->scratch);
    free(s->ids);
    free(s->out);
    free(s->reqs);
    free(s->good);
    model_config_free(&s->cfg);
    memset(s, 0, sizeof *s);
}

/* The block index of an input named LION_TENSOR_VIT_LAYER_PREFIX "<index>"; 0 when the input is
 * something else (*layer untouched), -1 when the name starts so but no index follows. */
static int vit_layer_index(const char *name, int *layer) {
    const size_t plen = strlen(LION_TENSOR_VIT_LAYER_PREFIX);
    if (strncmp(name, LION_TENSOR_VIT_LAYER_PREFIX, plen) != 0) return 0;
    const char *digits = name + plen;
    char *end;
    errno = 0;
    long v = strtol(digits, &end, 10);
    if (*digits < '0' || *digits > '9' || *end || errno || v > 100000) return -1;
    *layer = (int)v;
    return 1;
}

/* The job as an aggregate_request: its ViT layers (arrays from scratch) and its instruction
 * tokenized into ids. Errors name the input or field. */
static int request_build(aggregator_stage *s, const worker_job *job, int32_t *ids, aggregate_request *r,
                         lion_status *st) {
    memset(r, 0, sizeof *r);
    int *layers = arena_alloc(&s->scratch, sizeof *layers * (size_t)job->n_inputs + 1);
    tensor *outs = arena_alloc(&s->scratch, sizeof *outs * (size_t)job->n_inputs + 1);
    if (!layers || !outs) return lion_fail(st, LION_ENOMEM, "aggregator: out of memory");
    for (int i = 0; i < job->n_inputs; i++) {
        const char *name = job->env->tensors[i]->name;
        int rc = vit_layer_index(name, &layers[r->n_layers]);
        if (rc < 0)
            return lion_fail(st, LION_EINVAL, "input '%s': expected " LION_TENSOR_VIT_LAYER_PREFIX "<block index>",
                             name);
        if (rc == 0) continue; /* not ours to read */
        outs[r->n_layers++] = job->inputs[i];
    }
    r->layers = layers;
    r->vit_outs = outs;
    if (!s->tok) return 0;
    const char *text = job->task->instruction ? job->task->instruction : "";
    size_t n_ids;
    if (bert_encode(s->tok, text, (size_t)s->max_text, ids, NULL, &n_ids, st))
        return lion_fail_prefix(st, "instruction: ");
    r->text_ids = ids;
    r->text_len = (int)n_ids;
    return 0;
}

int aggregator_stage_process(void *ctx, worker_job *jobs, int n, lion_status *st) {
    aggregator_stage *s = ctx;
    const aggregate_model *m = &s->model;
    aggregate_request *reqs = s->reqs;
    int *good = s->good;
    /* the worker gives at most the max_batch the stage was opened with */
    if (n > s->max_batch) return lion_fail(st, LION_EINTERNAL, "aggregator: batch of %d over %d", n, s->max_batch);

    /* each job is built and checked alone, so that a bad one fails without its batch */
    int g = 0;
    for (int i = 0; i < n; i++) {
        lion_status js;
        dtype dt;
        if (stage_output_dtype(&jobs[i], &dt, &js) ||
            request_build(s, &jobs[i], s->ids + (size_t)g * s->max_text, &reqs[g], &js) ||
            aggregate_request_check(m, &reqs[g], &js)) {
            worker_job_fail(&jobs[i], js.code, "aggregator: %s", js.msg);
            continue;
        }
        good[g++] = i;
    }
    int rc = 0;
    if (g > 0 && aggregate_forward(m, reqs, g, s->out, &s->scratch, st)) rc = -1;
    const size_t per = (size_t)m->num_visual * m->d_model;
    const int64_t shape[] = {m->num_visual, m->d_model};
    for (int j = 0; j < g && rc == 0; j++) {
        worker_job *job = &jobs[good[j]];
        lion_status js;
        dtype dt;
        if (stage_output_dtype(job, &dt, &js) ||
            stage_add_output_f32(job, LION_TENSOR_VISUAL_TOKENS, s->out + j * per, 2, shape, dt, &js))
            worker_job_fail(job, js.code, "aggregator: %s", js.msg);
    }
    arena_reset(&s->scratch);
    return rc;
}

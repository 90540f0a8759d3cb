#include "tap_print.h"

#include <math.h>
#include <string.h>
#include <time.h>

/* Converted in blocks, so that a large f16 tensor needs no f32 copy of itself. */
#define STATS_BLOCK 4096

static void stats_add(tensor_stats *s, const float *v, size_t n, double *sum) {
    for (size_t i = 0; i < n; i++) {
        float x = v[i];
        if (isnan(x)) {
            s->nan++;
            continue;
        }
        if (s->count == 0 || x < s->min) s->min = x;
        if (s->count == 0 || x > s->max) s->max = x;
        *sum += x;
        s->count++;
    }
}

static float int_at(const tensor *t, size_t i) {
    switch (t->dtype) {
    case DTYPE_I8: return (float)((const int8_t *)t->data)[i];
    case DTYPE_U8: return (float)((const uint8_t *)t->data)[i];
    case DTYPE_I32: return (float)((const int32_t *)t->data)[i];
    case DTYPE_I64: return (float)((const int64_t *)t->data)[i];
    default: return NAN;
    }
}

int tensor_stats_compute(const tensor *t, tensor_stats *s, lion_status *st) {
    memset(s, 0, sizeof *s);
    size_t n = (size_t)tensor_numel(t);
    float block[STATS_BLOCK];
    double sum = 0;
    int floating = t->dtype == DTYPE_F32 || t->dtype == DTYPE_F16 || t->dtype == DTYPE_BF16;
    for (size_t at = 0; at < n; at += STATS_BLOCK) {
        size_t k = n - at < STATS_BLOCK ? n - at : STATS_BLOCK;
        if (floating) {
            const char *src = (const char *)t->data + at * dtype_size(t->dtype);
            if (convert_to_f32(block, src, t->dtype, k, st) != 0) return -1;
        } else {
            for (size_t i = 0; i < k; i++) block[i] = int_at(t, at + i);
        }
        stats_add(s, block, k, &sum);
    }
    s->mean = s->count ? sum / (double)s->count : 0;
    return 0;
}

static void print_time(FILE *out, int64_t us) {
    if (us <= 0) {
        fputs("-", out);
        return;
    }
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char buf[32];
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(out, "%s.%06lldZ", buf, (long long)(us % 1000000));
}

static int64_t envelope_time(const Lion__Envelope *env) {
    if (env->has_sent_us && env->sent_us > 0) return env->sent_us;
    for (size_t i = env->n_trace; i > 0; i--)
        if (env->trace[i - 1]->has_finish_us) return env->trace[i - 1]->finish_us;
    return 0;
}

static void print_hops(FILE *out, const Lion__Envelope *env) {
    fputs(" hops=[", out);
    for (size_t i = 0; i < env->n_trace; i++) {
        const Lion__Hop *h = env->trace[i];
        fprintf(out, "%s%.32s@%.64s", i ? ", " : "", h->service ? h->service : "?",
                h->replica_id ? h->replica_id : "?");
        if (h->has_receive_us && h->has_finish_us)
            fprintf(out, " %.3f ms", (double)(h->finish_us - h->receive_us) / 1000.0);
    }
    fputs("]", out);
}

/* Text results, shortened: enough to recognize an answer in a flow. */
static void print_result(FILE *out, const Lion__Envelope *env) {
    const Lion__Result *r = env->result;
    if (!r) return;
    if (r->n_sequences > 0 && r->sequences[0]->text)
        fprintf(out, " text=\"%.60s%s\"", r->sequences[0]->text, strlen(r->sequences[0]->text) > 60 ? "..." : "");
    if (r->n_sequences > 1) fprintf(out, " sequences=%zu", r->n_sequences);
    if (r->n_tags > 0) fprintf(out, " tags=%zu", r->n_tags);
}

static void print_tensor(FILE *out, const tap_message *tm, size_t i) {
    const Lion__TensorDesc *d = tm->msg.env->tensors[i];
    char shape[160];
    shape_str((int)d->n_shape, d->shape, shape, sizeof shape);
    const char *dt = d->has_dtype && (int)d->dtype >= 0 && (int)d->dtype < DTYPE_COUNT ? dtype_name((dtype)d->dtype) : "?";
    fprintf(out, "%s%.64s %s %s", i ? "; " : "", d->name, dt, shape);
    if ((int)i >= tm->msg.n_tensors) return; /* meta/: descriptors only */
    tensor_stats s;
    lion_status st;
    if (tensor_stats_compute(&tm->msg.tensors[i], &s, &st) != 0) {
        fprintf(out, " stats: %s", st.msg);
        return;
    }
    if (s.count) fprintf(out, " min=%.6g max=%.6g mean=%.6g nan=%lld", s.min, s.max, s.mean, (long long)s.nan);
    else fprintf(out, " min=- max=- mean=- nan=%lld", (long long)s.nan);
}

void tap_print_line(FILE *out, const tap_message *tm, int64_t time_us) {
    const Lion__Envelope *env = tm->msg.env;
    print_time(out, time_us ? time_us : envelope_time(env));
    fprintf(out, " %s %s %s %s attempt=%u", tm->topic.request_id, tm->topic.stage, tm->topic.direction,
            lion_kind_name(env->kind), env->has_attempt ? env->attempt : 0);
    print_hops(out, env);
    if (env->error)
        fprintf(out, " error=%s: %.200s", lion_code_name(env->error->has_code ? env->error->code : 0),
                env->error->message ? env->error->message : "");
    print_result(out, env);
    fputs(" tensors=[", out);
    for (size_t i = 0; i < env->n_tensors; i++) print_tensor(out, tm, i);
    fputs("]\n", out);
    fflush(out);
}

#include "tap_replay.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "tap_compare.h"
#include "tap_dump.h"

/* The dumped JOB of the request and stage and the answer to it (NULL env when absent).
 * CANCELs and PARTIALs in the dump are neither: a PARTIAL is part of an answer that its
 * RESULT holds whole, and a replayed job is never cancelled. */
typedef struct replay_pair {
    tap_message job, answer;
} replay_pair;

static int is_job(const tap_message *m) {
    return strcmp(m->topic.direction, "out") == 0 && m->msg.env->kind == LION__KIND__JOB;
}

static int is_answer_to(const tap_message *a, const tap_message *job) {
    return strcmp(a->topic.direction, "in") == 0 &&
           (a->msg.env->kind == LION__KIND__RESULT || a->msg.env->kind == LION__KIND__ERROR) &&
           a->msg.env->attempt == job->msg.env->attempt;
}

static int find_pair(const tap_replay_options *o, replay_pair *p, lion_status *st) {
    memset(p, 0, sizeof *p);
    zmq_msg_init(&p->job.topic_frame);
    zmq_msg_init(&p->answer.topic_frame);
    tap_dump_reader r;
    if (tap_dump_open(&r, o->dump_path, st) != 0) return -1;
    tap_filter f = {.request_id = o->request_id, .stage = o->stage};
    tap_message tm;
    int rc;
    while ((rc = tap_dump_next(&r, &tm, st)) == 1) {
        int keep = 0;
        if (tap_filter_match(&f, &tm.topic)) {
            if (!p->job.msg.env && is_job(&tm)) {
                p->job = tm, keep = 1;
            } else if (p->job.msg.env && !p->answer.msg.env && is_answer_to(&tm, &p->job)) {
                p->answer = tm, keep = 1;
            }
        }
        if (!keep) tap_message_close(&tm);
    }
    tap_dump_close(&r);
    if (rc < 0) return -1;
    if (!p->job.msg.env)
        return lion_fail(st, LION_ENOTFOUND, "%s: no JOB of request %s for stage %s", o->dump_path, o->request_id,
                         o->stage);
    if (!p->job.topic.data)
        return lion_fail(st, LION_EINVAL, "%s: the JOB of request %s is a meta/ message (no tensors); dump with data",
                         o->dump_path, o->request_id);
    if (p->answer.msg.env && !p->answer.topic.data)
        return lion_fail(st, LION_EINVAL, "%s: the answer of request %s is a meta/ message (no tensors)",
                         o->dump_path, o->request_id);
    return 0;
}

/* Next RESULT/ERROR for the request, or a worker of the stage announcing itself
 * (want_worker: READY or HEARTBEAT, which a running worker repeats every interval). The
 * PARTIALs of a streamed job are skipped: its RESULT holds the whole answer. */
static int wait_for(void *router, int want_worker, int stage, const char *request_id, int timeout_ms,
                    envelope_msg *m, lion_status *st) {
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t left = (end - clock_mono_us()) / 1000;
        if (left <= 0)
            return lion_fail(st, LION_ETIMEOUT, want_worker ? "no %s worker connected within %d ms"
                                                           : "no answer from the %s worker within %d ms",
                             lion_stage_name(stage), timeout_ms);
        zmq_pollitem_t item = {router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, (long)left) <= 0) continue;
        lion_status rst;
        if (envelope_recv(router, m, ENVELOPE_ROUTED, NULL, &rst) != 0 || !m->env) {
            fprintf(stderr, "lion-tap: ignored a bad message from a worker: %s\n", rst.msg);
            envelope_msg_close(m);
            continue;
        }
        const Lion__Envelope *env = m->env;
        if (want_worker && (env->kind == LION__KIND__READY || env->kind == LION__KIND__HEARTBEAT) &&
            env->has_stage && (int)env->stage == stage)
            return 0;
        if (!want_worker && (env->kind == LION__KIND__RESULT || env->kind == LION__KIND__ERROR) &&
            env->request_id && strcmp(env->request_id, request_id) == 0)
            return 0;
        envelope_msg_close(m);
    }
}

/* The job as it was dumped, with a new attempt and no deadline (the dumped one has
 * passed: the worker would refuse it without running). */
static int send_job(void *router, const envelope_peer *peer, tap_message *job, lion_status *st) {
    Lion__Envelope *env = envelope_dup(job->msg.env, st);
    if (!env) return -1;
    env->has_attempt = 1;
    env->attempt = job->msg.env->attempt + 1;
    env->has_deadline_us = 0;
    env->deadline_us = 0;
    int n = job->msg.n_tensors;
    envelope_tensor *tensors = calloc(n ? (size_t)n : 1, sizeof *tensors);
    if (!tensors) {
        envelope_free(env);
        return lion_fail(st, LION_ENOMEM, "replay: out of memory");
    }
    for (int i = 0; i < n; i++) tensors[i] = envelope_forward(&job->msg, i);
    int rc = envelope_send(router, peer, env, tensors, n, 0, st);
    free(tensors);
    envelope_free(env);
    return rc;
}

static int write_answer(const char *path, const char *stage, envelope_msg *reply, lion_status *st) {
    FILE *f = fopen(path, "wb");
    if (!f) return lion_fail(st, LION_EIO, "%s: cannot create", path);
    char topic[TAP_MAX_TOPIC + 32];
    int len = snprintf(topic, sizeof topic, "data/%s/in/%s", stage, reply->env->request_id);
    zmq_msg_t tf;
    zmq_msg_init_size(&tf, (size_t)len);
    memcpy(zmq_msg_data(&tf), topic, (size_t)len);
    int rc = tap_dump_write(f, &tf, reply->frames, reply->n_frames, st);
    zmq_msg_close(&tf);
    if (fclose(f) != 0 && rc == 0) rc = lion_fail(st, LION_EIO, "%s: write failed", path);
    return rc;
}

static void say_bye(void *router, const envelope_peer *peer) {
    lion_status st;
    Lion__Envelope *bye = envelope_new(LION__KIND__BYE, 0, NULL, &st);
    if (bye) envelope_send(router, peer, bye, NULL, 0, ENVELOPE_DONTWAIT, &st);
    envelope_free(bye);
}

static int replay_with(const tap_replay_options *o, replay_pair *p, void *router, FILE *out, lion_status *st) {
    int stage = lion_stage_from_name(o->stage);
    if (zmq_bind(router, o->bind) != 0)
        return lion_fail(st, LION_EIO, "cannot bind %s: %s", o->bind, zmq_strerror(zmq_errno()));
    fprintf(out, "waiting for a %s worker on %s\n", o->stage, o->bind);
    fflush(out);
    envelope_msg m;
    if (wait_for(router, 1, stage, NULL, o->timeout_ms, &m, st) != 0) return -1;
    envelope_peer peer = m.peer;
    fprintf(out, "worker %.64s connected; sending JOB %s\n", m.env->replica_id ? m.env->replica_id : "?",
            o->request_id);
    envelope_msg_close(&m);
    if (send_job(router, &peer, &p->job, st) != 0) return -1;
    envelope_msg reply;
    if (wait_for(router, 0, stage, o->request_id, o->timeout_ms, &reply, st) != 0) return -1;
    say_bye(router, &peer);
    int rc = 0;
    if (o->out_path && write_answer(o->out_path, o->stage, &reply, st) != 0) rc = -1;
    if (rc == 0 && p->answer.msg.env) {
        char diff[1024];
        if (tap_compare_replies(&reply, &p->answer.msg, diff, sizeof diff) == 0) {
            fprintf(out, "identical\n");
        } else {
            fprintf(out, "differs: %s\n", diff);
            rc = 1;
        }
    } else if (rc == 0) {
        fprintf(out, "no dumped answer to compare: got %s", lion_kind_name(reply.env->kind));
        if (reply.env->error) fprintf(out, " (%s)", reply.env->error->message ? reply.env->error->message : "");
        fputc('\n', out);
        rc = reply.env->kind == LION__KIND__RESULT ? 0 : 1;
    }
    envelope_msg_close(&reply);
    return rc;
}

int tap_replay_run(const tap_replay_options *o, FILE *out, lion_status *st) {
    if (!lion_stage_from_name(o->stage))
        return lion_fail(st, LION_EINVAL, "unknown stage '%s' (vision, tagger, aggregator, llm)", o->stage);
    replay_pair p;
    int rc = find_pair(o, &p, st);
    if (rc == 0) {
        void *ctx = zmq_ctx_new();
        void *router = zmq_socket(ctx, ZMQ_ROUTER);
        int linger = 1000; /* lets BYE go out */
        zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
        rc = replay_with(o, &p, router, out, st);
        zmq_close(router);
        zmq_ctx_term(ctx);
    }
    tap_message_close(&p.job);
    tap_message_close(&p.answer);
    return rc;
}

#include "fake_gateway.h"

#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

/* Next message that is not a heartbeat; READY counts when want_ready. */
static int recv_until(fake_gateway *g, envelope_msg *m, int timeout_ms, int want_ready) {
    int64_t end = clock_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t left = (end - clock_mono_us()) / 1000;
        if (left <= 0) return -1;
        zmq_pollitem_t item = {g->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, left < 200 ? (long)left : 200) <= 0) {
            int status;
            if (g->child > 0 && waitpid(g->child, &status, WNOHANG) == g->child) {
                fprintf(stderr, "fake_gateway: the service exited (status %d)\n", status);
                g->child = 0;
                return -1;
            }
            continue;
        }
        lion_status st;
        memset(m, 0, sizeof *m);
        int rc = envelope_recv(g->router, m, ENVELOPE_ROUTED, NULL, &st);
        if (rc != 0 || !m->env) {
            fprintf(stderr, "fake_gateway: bad message from worker: %s\n", st.msg);
            envelope_msg_close(m);
            return -1;
        }
        int kind = m->env->kind;
        if (kind == LION__KIND__READY && want_ready) {
            g->worker = m->peer;
            g->capacity = m->env->credit ? m->env->credit->capacity : 0;
            return 0;
        }
        if (kind == LION__KIND__PARTIAL) {
            g->partials++;
            if (!want_ready && g->want_partials) return 0;
        }
        if (kind == LION__KIND__RESULT || kind == LION__KIND__ERROR) {
            if (!want_ready) return 0;
        }
        envelope_msg_close(m);
    }
}

int fake_gateway_start(fake_gateway *g, const char *const *argv, int timeout_ms) {
    memset(g, 0, sizeof *g);
    g->ctx = zmq_ctx_new();
    g->router = zmq_socket(g->ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(g->router, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(g->router, "tcp://127.0.0.1:*") != 0) {
        fprintf(stderr, "fake_gateway: bind: %s\n", zmq_strerror(zmq_errno()));
        return -1;
    }
    size_t len = sizeof g->endpoint;
    zmq_getsockopt(g->router, ZMQ_LAST_ENDPOINT, g->endpoint, &len);
    int argc = 0;
    while (argv[argc]) argc++;
    const char **args = calloc((size_t)argc + 3, sizeof *args);
    memcpy(args, argv, (size_t)argc * sizeof *args);
    args[argc] = "--gateway";
    args[argc + 1] = g->endpoint;
    /* fork + exec rather than posix_spawn: the child must die with the test (a test that
     * aborts would otherwise leave a service holding ctest's output pipe open) */
    pid_t parent = getpid();
    g->child = fork();
    if (g->child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        execv(args[0], (char *const *)args);
        fprintf(stderr, "fake_gateway: cannot start %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    free(args);
    if (g->child < 0) {
        fprintf(stderr, "fake_gateway: fork: %s\n", strerror(errno));
        g->child = 0;
        return -1;
    }
    envelope_msg m;
    if (recv_until(g, &m, timeout_ms, 1) != 0) {
        fprintf(stderr, "fake_gateway: no READY from %s within %d ms\n", argv[0], timeout_ms);
        return -1;
    }
    envelope_msg_close(&m);
    return 0;
}

int fake_gateway_call(fake_gateway *g, Lion__Envelope *job, envelope_tensor *tensors, int n, envelope_msg *reply,
                      int timeout_ms) {
    lion_status st;
    if (envelope_send(g->router, &g->worker, job, tensors, n, 0, &st) != 0) {
        fprintf(stderr, "fake_gateway: send: %s\n", st.msg);
        return -1;
    }
    return recv_until(g, reply, timeout_ms, 0);
}

int fake_gateway_send_raw(fake_gateway *g, const void *const *frames, const size_t *lens, int n) {
    if (zmq_send(g->router, g->worker.id, g->worker.len, ZMQ_SNDMORE) < 0) return -1;
    for (int i = 0; i < n; i++)
        if (zmq_send(g->router, frames[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) < 0) return -1;
    return 0;
}

int fake_gateway_recv(fake_gateway *g, envelope_msg *reply, int timeout_ms) {
    return recv_until(g, reply, timeout_ms, 0);
}

int fake_gateway_cancel(fake_gateway *g, const char *request_id, int stage, unsigned attempt) {
    lion_status st;
    Lion__Envelope *env = envelope_cancel(request_id, stage, attempt, &st);
    int rc = env ? envelope_send(g->router, &g->worker, env, NULL, 0, 0, &st) : -1;
    if (rc) fprintf(stderr, "fake_gateway: cancel: %s\n", st.msg);
    envelope_free(env);
    return rc;
}

int fake_gateway_stop(fake_gateway *g) {
    int result = -1;
    if (g->child > 0) {
        kill(g->child, SIGTERM);
        int status = 0;
        for (int i = 0; i < 200; i++) { /* up to 10 s for a clean exit */
            pid_t r = waitpid(g->child, &status, WNOHANG);
            if (r == g->child) {
                result = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                break;
            }
            struct timespec ts = {0, 50 * 1000000};
            nanosleep(&ts, NULL);
        }
        if (result == -1 && waitpid(g->child, &status, WNOHANG) == 0) {
            kill(g->child, SIGKILL);
            waitpid(g->child, &status, 0);
        }
    }
    if (g->router) zmq_close(g->router);
    if (g->ctx) zmq_ctx_term(g->ctx);
    memset(g, 0, sizeof *g);
    return result;
}

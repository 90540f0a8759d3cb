/* gateway.c - the gateway's loop: one libuv loop runs HTTP, the stage routers' file
 * descriptors, the tap, a tick timer (heartbeats, dead workers, deadlines) and signals. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "gateway_impl.h"
#include "log.h"

#define TICK_MS 20

static void drain_all(gateway *gw) {
    zap_drain(gw);
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) stage_pool_drain(&gw->pool[s]);
    tap_drain(&gw->tap);
}

static void shutdown_gateway(gateway *gw) {
    if (gw->stopping) return;
    gw->stopping = 1;
    log_info("shutting down: %d requests in flight", gw->n_requests);
    while (gw->requests) {
        lion_status st;
        lion_fail(&st, LION_EUNAVAILABLE, "the gateway is shutting down");
        request_fail(gw->requests, 503, &st);
    }
    request_free_ended(gw);
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) {
        stage_pool_bye(&gw->pool[s]);
        stage_pool_close(&gw->pool[s]);
    }
    tap_close(&gw->tap);
    zap_close(gw); /* after every socket that asks it */
    http_server_close(gw);
    uv_close((uv_handle_t *)&gw->tick, NULL);
    uv_close((uv_handle_t *)&gw->check, NULL);
    if (!gw->stop) {
        uv_close((uv_handle_t *)&gw->sigterm, NULL);
        uv_close((uv_handle_t *)&gw->sigint, NULL);
        uv_close((uv_handle_t *)&gw->sighup, NULL);
    }
}

static void on_tick(uv_timer_t *t) {
    gateway *gw = t->data;
    if (gw->stop && atomic_load(gw->stop)) {
        shutdown_gateway(gw);
        return;
    }
    int64_t now = clock_mono_us();
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) stage_pool_tick(&gw->pool[s], now);
    if (now - gw->last_heartbeat_us >= (int64_t)gw->cfg.heartbeat_ms * 1000) gw->last_heartbeat_us = now;
    request_sweep_deadlines(gw, now);
    http_server_sweep_idle(gw, now);
    drain_all(gw);
}

/* After every loop iteration: the requests that ended in it are freed, and the sockets are
 * read again (a send may have consumed a socket's readable edge). */
static void on_check(uv_check_t *c) {
    gateway *gw = c->data;
    request_free_ended(gw);
    if (!gw->stopping) drain_all(gw);
}

/* SIGHUP: the CURVE allow-lists are read again (keys added or revoked without a restart). */
static void on_sighup(uv_signal_t *s, int signum) {
    log_info("SIGHUP: reloading the allow-lists");
    zap_reload(s->data);
}

static void on_signal(uv_signal_t *s, int signum) {
    log_info("signal %d", signum);
    shutdown_gateway(s->data);
}

static int is_loopback(const char *host) {
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost");
}

/* API keys are asked for whenever the API is reachable from elsewhere: off loopback the
 * gateway refuses to start without --api-keys unless told --allow-open. */
static int open_api_keys(gateway *gw, lion_status *st) {
    const gateway_config *cfg = &gw->cfg;
    if (cfg->api_keys_file) {
        if (api_keys_load(&gw->keys, cfg->api_keys_file, st) != 0) return -1;
        log_info("API keys: %d from %s%s", gw->keys.n, cfg->api_keys_file,
                 cfg->metrics_auth ? " (also for /metrics)" : "");
        return 0;
    }
    if (is_loopback(cfg->listen_host)) return 0;
    if (!cfg->allow_open)
        return lion_fail(st, LION_EINVAL,
                         "listening on %s without --api-keys: anyone who reaches it could use it; give --api-keys FILE "
                         "(or --allow-open to serve it open on purpose)",
                         cfg->listen_host);
    log_warn("NO API KEYS on %s (--allow-open): anyone who reaches this address may use the API", cfg->listen_host);
    return 0;
}

static const char *own_pointer(const gateway_config *from, gateway_config *to, const char *p) {
    for (int i = 0; i < 5; i++)
        if (p == from->endpoint_storage[i]) return to->endpoint_storage[i];
    return p;
}

int gateway_run(const gateway_config *cfg, atomic_int *stop, lion_status *st) {
    gateway *gw = calloc(1, sizeof *gw);
    uv_loop_t *loop = malloc(sizeof *loop);
    if (!gw || !loop || uv_loop_init(loop) != 0) {
        free(gw);
        free(loop);
        return lion_fail(st, LION_ENOMEM, "gateway: out of memory");
    }
    signal(SIGPIPE, SIG_IGN); /* a client that hung up must not kill the gateway */
    gw->cfg = *cfg;
    for (int s = LION_STAGE_FIRST; s <= LION_STAGE_LAST; s++) gw->cfg.stage_endpoint[s] = own_pointer(cfg, &gw->cfg, cfg->stage_endpoint[s]);
    gw->cfg.listen_host = own_pointer(cfg, &gw->cfg, cfg->listen_host);
    gw->loop = loop;
    gw->stop = stop;
    gw->zctx = zmq_ctx_new();
    /* gateway_config_parse splits --model-name; a config made otherwise gets it done here */
    int rc = gw->cfg.n_models > 0 ? 0 : models_parse(gw->cfg.model_name, gw->cfg.models, &gw->cfg.n_models, st);
    if (rc == 0) rc = open_api_keys(gw, st);
    if (rc == 0) rc = zap_open(gw, st); /* before any endpoint binds: libzmq asks it at every handshake */
    pipeline_start(gw);
    for (int s = LION_STAGE_FIRST; rc == 0 && s <= LION_STAGE_LAST; s++)
        rc = stage_pool_open(&gw->pool[s], gw, s, gw->cfg.stage_endpoint[s], &request_pool_client, st);
    if (rc == 0) rc = tap_open(&gw->tap, gw, gw->cfg.tap_endpoint, st);
    if (rc == 0) rc = http_server_start(gw, st);
    uv_timer_init(loop, &gw->tick);
    gw->tick.data = gw;
    uv_check_init(loop, &gw->check);
    gw->check.data = gw;
    if (!stop) {
        uv_signal_init(loop, &gw->sigterm);
        uv_signal_init(loop, &gw->sigint);
        uv_signal_init(loop, &gw->sighup);
        gw->sigterm.data = gw->sigint.data = gw->sighup.data = gw;
    }
    if (rc == 0) {
        uv_timer_start(&gw->tick, on_tick, TICK_MS, TICK_MS);
        uv_check_start(&gw->check, on_check);
        if (!stop) {
            uv_signal_start(&gw->sigterm, on_signal, SIGTERM);
            uv_signal_start(&gw->sigint, on_signal, SIGINT);
            uv_signal_start(&gw->sighup, on_sighup, SIGHUP);
        }
        char models[512];
        models_describe(&gw->cfg, models, sizeof models);
        log_info("gateway ready (models %s; deadline %d ms, %d requests, queues of %d)", models, gw->cfg.deadline_ms,
                 gw->cfg.max_requests, gw->cfg.max_queue);
        uv_run(loop, UV_RUN_DEFAULT);
    }
    shutdown_gateway(gw); /* no-op after a clean stop; closes what a failed start opened */
    uv_run(loop, UV_RUN_DEFAULT);
    request_free_ended(gw);
    pipeline_free(gw);
    api_keys_free(&gw->keys);
    zmq_ctx_term(gw->zctx);
    uv_loop_close(loop);
    free(loop);
    free(gw);
    return rc;
}

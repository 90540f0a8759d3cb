/* worker_check.c - the link's security rule and the ready file, checked before a worker loads
 * its model (worker_check.h). */
#include "worker_check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "curve.h"
#include "worker_gateways.h"

/* Without CURVE: every gateway on this machine, or --insecure on purpose. */
static int check_plain(const worker_config *cfg, const worker_gateways *gws, char *what, size_t size,
                       lion_status *st) {
    int remote = 0;
    for (int i = 0; i < gws->n; i++) {
        if (curve_endpoint_is_local(gws->endpoint[i])) continue;
        if (!cfg->insecure)
            return lion_fail(st, LION_EINVAL,
                             "gateway %s is on another machine: give --curve-server-key and --curve-key "
                             "(lion-keygen), or --insecure to connect without CURVE on purpose",
                             gws->endpoint[i]);
        remote = 1;
    }
    if (remote) snprintf(what, size, "INSECURE (--insecure: no CURVE to a gateway on another machine)");
    else snprintf(what, size, "plain (local endpoint%s)", gws->n > 1 ? "s" : "");
    return 0;
}

/* With CURVE: both options, every gateway's public key read (each file once), this worker's
 * pair read and private. what: "CURVE (gateway key K)", or "CURVE (gateway keys K1, K2)"
 * when the gateways have keys of their own, in --gateway's order. */
static int check_curve(const worker_config *cfg, const worker_gateways *gws, char *what, size_t size,
                       lion_status *st) {
    if (!cfg->curve_server_key) return lion_fail(st, LION_EINVAL, "--curve-key needs --curve-server-key FILE (CURVE)");
    if (!cfg->curve_key) return lion_fail(st, LION_EINVAL, "--curve-server-key needs --curve-key FILE (CURVE)");
    const int one_for_all = gws->n == 1 || gws->server_key[1] == gws->server_key[0];
    size_t used = (size_t)snprintf(what, size, "CURVE (gateway key%s ", one_for_all ? "" : "s");
    for (int i = 0; i < (one_for_all ? 1 : gws->n); i++) {
        char server[CURVE_KEY_TEXT];
        if (curve_public_load(gws->server_key[i], server, st) != 0) return lion_fail_prefix(st, "--curve-server-key: ");
        if (used < size) used += (size_t)snprintf(what + used, size - used, "%s%s", i ? ", " : "", server);
    }
    if (used < size) snprintf(what + used, size - used, ")");
    curve_keypair own;
    int rc = curve_keypair_load(cfg->curve_key, &own, st);
    memset(&own, 0, sizeof own); /* the secret is read again when the worker connects */
    return rc != 0 ? lion_fail_prefix(st, "--curve-key: ") : 0;
}

/* Every gateway of the list under one rule. worker.c's worker_open runs this same function
 * before it connects, so that a start and a check cannot disagree. */
int worker_check_link(const worker_config *cfg, char *what, size_t size, lion_status *st) {
    worker_gateways gws;
    int rc = worker_gateways_parse(&gws, cfg, st);
    if (rc == 0)
        rc = !cfg->curve_server_key && !cfg->curve_key ? check_plain(cfg, &gws, what, size, st)
                                                       : check_curve(cfg, &gws, what, size, st);
    worker_gateways_free(&gws);
    return rc;
}

/* The folder of path, in buf: "." for a bare file name. */
static const char *folder_of(const char *path, char *buf, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash) return ".";
    if (slash == path) return "/";
    snprintf(buf, size, "%.*s", (int)(slash - path), path);
    return buf;
}

int worker_check_ready_file(const worker_config *cfg, lion_status *st) {
    if (!cfg->ready_file) return 0;
    char buf[4096];
    const char *dir = folder_of(cfg->ready_file, buf, sizeof buf);
    if (access(dir, W_OK | X_OK) != 0)
        return lion_fail(st, LION_EINVAL, "--ready-file %s: folder %s: %s", cfg->ready_file, dir, strerror(errno));
    return 0;
}

int worker_ready_file_write(const worker_config *cfg, lion_status *st) {
    if (!cfg->ready_file) return 0;
    int fd = open(cfg->ready_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return lion_fail(st, LION_EIO, "--ready-file %s: %s", cfg->ready_file, strerror(errno));
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", cfg->replica_id);
    int rc = write(fd, line, (size_t)n) == n ? 0 : -1;
    if (close(fd) != 0) rc = -1;
    if (rc != 0) return lion_fail(st, LION_EIO, "--ready-file %s: cannot write: %s", cfg->ready_file, strerror(errno));
    return 0;
}

void worker_ready_file_remove(const worker_config *cfg) {
    if (cfg->ready_file) unlink(cfg->ready_file);
}

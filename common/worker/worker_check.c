/* worker_check.c - the link's security rule and the ready file, checked before a worker loads
 * its model (worker_check.h). */
#include "worker_check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "curve.h"

/* The rule is the one worker.c's secure_link applies again when it connects: that copy stays
 * until worker.c (being changed for batching elsewhere) can call this function instead. */
int worker_check_link(const worker_config *cfg, char *what, size_t size, lion_status *st) {
    if (!cfg->curve_server_key && !cfg->curve_key) {
        if (curve_endpoint_is_local(cfg->gateway)) {
            snprintf(what, size, "plain (local endpoint)");
            return 0;
        }
        if (!cfg->insecure)
            return lion_fail(st, LION_EINVAL,
                             "gateway %s is on another machine: give --curve-server-key and --curve-key "
                             "(lion-keygen), or --insecure to connect without CURVE on purpose",
                             cfg->gateway);
        snprintf(what, size, "INSECURE (--insecure: no CURVE to a gateway on another machine)");
        return 0;
    }
    if (!cfg->curve_server_key) return lion_fail(st, LION_EINVAL, "--curve-key needs --curve-server-key FILE (CURVE)");
    if (!cfg->curve_key) return lion_fail(st, LION_EINVAL, "--curve-server-key needs --curve-key FILE (CURVE)");
    char server[CURVE_KEY_TEXT];
    curve_keypair own;
    if (curve_public_load(cfg->curve_server_key, server, st) != 0) return lion_fail_prefix(st, "--curve-server-key: ");
    int rc = curve_keypair_load(cfg->curve_key, &own, st);
    memset(&own, 0, sizeof own); /* the secret is read again when the worker connects */
    if (rc != 0) return lion_fail_prefix(st, "--curve-key: ");
    snprintf(what, size, "CURVE (gateway key %s)", server);
    return 0;
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

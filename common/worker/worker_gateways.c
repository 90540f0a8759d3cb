/* worker_gateways.c - the list of gateways a worker serves, their keys, and the credit each
 * is announced (worker_gateways.h). */
#include "worker_gateways.h"

#include <stdlib.h>
#include <string.h>

/* Cuts copy (a writable copy of list, comma-separated) into its items, blanks around each
 * trimmed. An empty item, or more than WORKER_MAX_GATEWAYS, is refused naming option and
 * what an item is. */
static int split_list(const char *option, const char *what, const char *list, char *copy, const char **items,
                      int *n, lion_status *st) {
    *n = 0;
    for (char *at = copy;;) {
        char *comma = strchr(at, ',');
        if (comma) *comma = '\0';
        while (*at == ' ' || *at == '\t') at++;
        char *end = at + strlen(at);
        while (end > at && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
        if (!*at) return lion_fail(st, LION_EINVAL, "%s: an empty %s in '%s'", option, what, list);
        if (*n == WORKER_MAX_GATEWAYS)
            return lion_fail(st, LION_EINVAL, "%s: more than %d %ss", option, WORKER_MAX_GATEWAYS, what);
        items[(*n)++] = at;
        if (!comma) return 0;
        at = comma + 1;
    }
}

/* The endpoints of list, checked, into items (pointing into copy). */
static int split_endpoints(const char *option, const char *list, char *copy, const char **items, int *n,
                           lion_status *st) {
    if (split_list(option, "endpoint", list, copy, items, n, st) != 0) return -1;
    for (int i = 0; i < *n; i++) {
        /* caught here rather than at zmq_connect, after the model has been loaded */
        if (!strstr(items[i], "://"))
            return lion_fail(st, LION_EINVAL, "%s: '%s' is not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH)",
                             option, items[i]);
        /* two DEALERs to one gateway would register the worker there twice */
        for (int k = 0; k < i; k++)
            if (!strcmp(items[k], items[i]))
                return lion_fail(st, LION_EINVAL, "%s: %s is given twice", option, items[i]);
    }
    return 0;
}

int worker_gateways_check(const char *option, const char *list, lion_status *st) {
    char *copy = strdup(list);
    if (!copy) return lion_fail(st, LION_ENOMEM, "%s: out of memory", option);
    const char *items[WORKER_MAX_GATEWAYS];
    int n;
    int rc = split_endpoints(option, list, copy, items, &n, st);
    free(copy);
    return rc;
}

int worker_gateways_parse(worker_gateways *gws, const worker_config *cfg, lion_status *st) {
    memset(gws, 0, sizeof *gws);
    if (!cfg->gateway) return lion_fail(st, LION_EINVAL, "worker: no gateway endpoint");
    gws->endpoints_copy = strdup(cfg->gateway);
    if (!gws->endpoints_copy) return lion_fail(st, LION_ENOMEM, "--gateway: out of memory");
    if (split_endpoints("--gateway", cfg->gateway, gws->endpoints_copy, gws->endpoint, &gws->n, st) != 0)
        return -1;
    if (!cfg->curve_server_key) return 0;
    gws->keys_copy = strdup(cfg->curve_server_key);
    if (!gws->keys_copy) return lion_fail(st, LION_ENOMEM, "--curve-server-key: out of memory");
    const char *keys[WORKER_MAX_GATEWAYS];
    int n_keys;
    if (split_list("--curve-server-key", "key file", cfg->curve_server_key, gws->keys_copy, keys, &n_keys, st) != 0)
        return -1;
    if (n_keys != 1 && n_keys != gws->n)
        return lion_fail(st, LION_EINVAL,
                         "--curve-server-key: %d key files for %d gateways: give one for all of them, or one per "
                         "gateway in --gateway's order",
                         n_keys, gws->n);
    for (int i = 0; i < gws->n; i++) gws->server_key[i] = keys[n_keys == 1 ? 0 : i];
    return 0;
}

void worker_gateways_free(worker_gateways *gws) {
    free(gws->endpoints_copy);
    free(gws->keys_copy);
    memset(gws, 0, sizeof *gws);
}

int worker_gateways_credit(int capacity, int n, const int *up, const int *held, int i) {
    int n_up = 0, rank = 0, others_hold = 0;
    for (int k = 0; k < n; k++) {
        if (k != i) others_hold += held[k];
        if (!up[k] && k != i) continue;
        if (k < i) rank++;
        n_up++;
    }
    int share = capacity / n_up + (rank < capacity % n_up ? 1 : 0);
    int room = capacity - others_hold;
    if (share > room) share = room;
    return share > 0 ? share : 1;
}

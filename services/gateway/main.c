/* lion-gateway: the HTTP front of LION and the router of its stage workers.
 *
 *   lion-gateway [--listen 127.0.0.1:8080] [--bind-base tcp://127.0.0.1:5551]
 *                [--tap tcp://127.0.0.1:5560] [options, see --help]
 *   lion-gateway ... --check-config     checks the options and key files, prints what would
 *                                       run, exits 0 (or 2 naming the problem); binds nothing
 *
 * docs/api.md describes the HTTP API, docs/architecture.md ("Gateway") its operation. */
#include <stdio.h>

#include "gateway.h"
#include "log.h"

int main(int argc, char **argv) {
    gateway_config cfg;
    lion_status st;
    log_init("gateway", LOG_INFO);
    if (gateway_config_parse(&cfg, argc, argv, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    if (cfg.help) {
        gateway_usage(stdout, "lion-gateway");
        return 0;
    }
    /* every start checks first what --check-config checks, so the two cannot disagree */
    char summary[8192];
    if (gateway_config_check(&cfg, summary, sizeof summary, &st)) {
        log_error("%s", st.msg);
        return 2;
    }
    if (cfg.check_config) {
        printf("lion-gateway: configuration OK: %s\n", summary);
        return 0;
    }
    if (gateway_run(&cfg, NULL, &st)) {
        log_error("%s", st.msg);
        return 1;
    }
    return 0;
}

/* --check-config and the checks every start makes before it loads or binds anything:
 *   - the worker's link (worker_check_link): CURVE key files read and private, both given,
 *     or a local gateway, or --insecure; its ready file's folder;
 *   - worker_main with --check-config: the stage opened and closed, one summary line, no
 *     loop run; refused before the model for a link problem (exit 2), after it for a model
 *     that does not open (exit 1, the real vision stage on a missing folder and on a model
 *     without its weight file), a bad flag (exit 2);
 *   - the ready file: written while serving only (worker_ready_file_*);
 *   - the default replica id: SERVICE-HOST-PID (replicas in containers are all PID 1);
 *   - the gateway (gateway_config_check): the --listen address, endpoints, --web-root, API
 *     keys or loopback or --allow-open, CURVE's key pair and allow-lists or local endpoints
 *     or --insecure; every refusal names the option or the file. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "curve.h"
#include "gateway.h"
#include "testing.h"
#include "vision_stage.h"
#include "worker_check.h"
#include "worker_main.h"

static char dir[] = "/tmp/lion-check-config-XXXXXX";
static char gw_key[256], gw_pub[256], w_key[256], w_pub[256], open_key[256], workers[256], api_keys[256],
    short_keys[256];

static void write_file(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    chmod(path, mode); /* whatever the umask */
}

/* Key pairs made as lion-keygen makes them, an allow-list folder, API key files. */
static void make_files(void) {
    CHECK(mkdtemp(dir) != NULL);
    lion_status st;
    curve_keypair pair;
    snprintf(gw_key, sizeof gw_key, "%s/gateway.key", dir);
    snprintf(gw_pub, sizeof gw_pub, "%s/gateway.pub", dir);
    CHECK(curve_keypair_generate(gw_key, gw_pub, &pair, &st) == 0);
    snprintf(workers, sizeof workers, "%s/workers", dir);
    CHECK(mkdir(workers, 0755) == 0);
    snprintf(w_key, sizeof w_key, "%s/workers/vision.key", dir);
    snprintf(w_pub, sizeof w_pub, "%s/workers/vision.pub", dir);
    CHECK(curve_keypair_generate(w_key, w_pub, &pair, &st) == 0);
    /* a key pair others may read: refused, it holds a secret */
    char text[128];
    snprintf(text, sizeof text, "public: %s\nsecret: %s\n", pair.public_key, pair.secret_key);
    snprintf(open_key, sizeof open_key, "%s/readable.key", dir);
    write_file(open_key, text, 0644);
    snprintf(api_keys, sizeof api_keys, "%s/api-keys", dir);
    write_file(api_keys, "# two keys\nsk-test-0123456789abcdef\nsk-test-fedcba9876543210\n", 0600);
    snprintf(short_keys, sizeof short_keys, "%s/short-keys", dir);
    write_file(short_keys, "tooshort\n", 0600);
}

static void remove_files(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* --- the worker's link ---------------------------------------------------------------------- */

/* Parses argv (after the program name) as lion-vision would and checks the link. */
static int worker_link(char **args, int n, char *what, size_t size, lion_status *st) {
    char *argv[16] = {"lion-vision"};
    for (int i = 0; i < n && i < 15; i++) argv[i + 1] = args[i];
    worker_config cfg;
    if (worker_config_parse(&cfg, "vision", n + 1, argv, st) != 0) return -2;
    return worker_check_link(&cfg, what, size, st);
}

static void check_worker_link(void) {
    char what[160];
    lion_status st;
    char *local[] = {"--gateway", "tcp://127.0.0.1:5551"};
    CHECK_EQ_INT(worker_link(local, 2, what, sizeof what, &st), 0);
    CHECK_CONTAINS(what, "plain (local endpoint)");
    char *ipc[] = {"--gateway", "ipc:///tmp/lion-vision"};
    CHECK_EQ_INT(worker_link(ipc, 2, what, sizeof what, &st), 0);

    /* another machine without CURVE: only on purpose */
    char *remote[] = {"--gateway", "tcp://10.1.2.3:5551"};
    CHECK_EQ_INT(worker_link(remote, 2, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "--insecure");
    CHECK_CONTAINS(st.msg, "tcp://10.1.2.3:5551");
    char *insecure[] = {"--gateway", "tcp://10.1.2.3:5551", "--insecure"};
    CHECK_EQ_INT(worker_link(insecure, 3, what, sizeof what, &st), 0);
    CHECK_CONTAINS(what, "INSECURE");

    /* CURVE: both files, both readable, the pair private */
    char *good[] = {"--gateway", "tcp://10.1.2.3:5551", "--curve-server-key", gw_pub, "--curve-key", w_key};
    CHECK_EQ_INT(worker_link(good, 6, what, sizeof what, &st), 0);
    CHECK_CONTAINS(what, "CURVE (gateway key ");
    char *half[] = {"--gateway", "tcp://10.1.2.3:5551", "--curve-key", w_key};
    CHECK_EQ_INT(worker_link(half, 4, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-key needs --curve-server-key");
    char *other_half[] = {"--gateway", "tcp://10.1.2.3:5551", "--curve-server-key", gw_pub};
    CHECK_EQ_INT(worker_link(other_half, 4, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-server-key needs --curve-key");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/no-such.pub", dir);
    char *no_server[] = {"--gateway", "tcp://10.1.2.3:5551", "--curve-server-key", missing, "--curve-key", w_key};
    CHECK_EQ_INT(worker_link(no_server, 6, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-server-key: ");
    CHECK_CONTAINS(st.msg, missing);
    char *no_pair[] = {"--gateway", "tcp://10.1.2.3:5551", "--curve-server-key", gw_pub, "--curve-key", missing};
    CHECK_EQ_INT(worker_link(no_pair, 6, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-key: ");
    char *readable[] = {"--gateway", "tcp://10.1.2.3:5551", "--curve-server-key", gw_pub, "--curve-key", open_key};
    CHECK_EQ_INT(worker_link(readable, 6, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "chmod 600");
    /* a public key where the pair belongs: no secret line */
    char *pub_as_pair[] = {"--gateway", "tcp://10.1.2.3:5551", "--curve-server-key", gw_pub, "--curve-key", gw_pub};
    chmod(gw_pub, 0600);
    CHECK_EQ_INT(worker_link(pub_as_pair, 6, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, "not a key pair file");
    chmod(gw_pub, 0644);

    /* the environment, as a deployment's manifests give it */
    setenv("LION_CURVE_SERVER_KEY", gw_pub, 1);
    setenv("LION_CURVE_KEY", w_key, 1);
    CHECK_EQ_INT(worker_link(remote, 2, what, sizeof what, &st), 0);
    CHECK_CONTAINS(what, "CURVE");
    setenv("LION_CURVE_KEY", missing, 1);
    CHECK_EQ_INT(worker_link(remote, 2, what, sizeof what, &st), -1);
    CHECK_CONTAINS(st.msg, missing);
    unsetenv("LION_CURVE_SERVER_KEY");
    unsetenv("LION_CURVE_KEY");
}

/* --- the ready file --------------------------------------------------------------------------- */

static void check_ready_file(void) {
    worker_config cfg;
    lion_status st;
    char file[300], bad[300];
    snprintf(file, sizeof file, "%s/ready", dir);
    snprintf(bad, sizeof bad, "%s/no-such-folder/ready", dir);
    char *argv[] = {"lion-vision", "--gateway", "tcp://127.0.0.1:1", "--ready-file", bad};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 5, argv, &st), 0);
    CHECK_EQ_INT(worker_check_ready_file(&cfg, &st), -1);
    CHECK_CONTAINS(st.msg, "--ready-file");
    CHECK_CONTAINS(st.msg, "no-such-folder");
    argv[4] = file;
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 5, argv, &st), 0);
    CHECK_EQ_INT(worker_check_ready_file(&cfg, &st), 0);
    CHECK_EQ_INT(worker_ready_file_write(&cfg, &st), 0);
    size_t len = 0;
    unsigned char *text = testing_read_file(file, &len);
    CHECK(text && !strncmp((char *)text, cfg.replica_id, strlen(cfg.replica_id)));
    free(text);
    worker_ready_file_remove(&cfg);
    CHECK(access(file, F_OK) != 0);
    /* a bare file name lives in the working folder */
    char *bare[] = {"lion-vision", "--gateway", "tcp://127.0.0.1:1", "--ready-file", "ready"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 5, bare, &st), 0);
    CHECK_EQ_INT(worker_check_ready_file(&cfg, &st), 0);
    /* no file asked for: nothing to do */
    char *none[] = {"lion-vision", "--gateway", "tcp://127.0.0.1:1"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, none, &st), 0);
    CHECK_EQ_INT(worker_check_ready_file(&cfg, &st), 0);
    CHECK_EQ_INT(worker_ready_file_write(&cfg, &st), 0);
}

/* The default replica id has the host name: in containers every replica is PID 1. */
static void check_default_replica(void) {
    worker_config cfg;
    lion_status st;
    char *argv[] = {"lion-vision", "--gateway", "tcp://127.0.0.1:1"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 3, argv, &st), 0);
    char host[256] = "", want[300];
    gethostname(host, sizeof host);
    host[strcspn(host, ".")] = '\0';
    snprintf(want, sizeof want, "vision-%s-%ld", host, (long)getpid());
    CHECK_MSG(!strcmp(cfg.replica_id, want) || (strlen(want) >= sizeof cfg.replica_id && cfg.replica_id[0]),
              "replica id %s, expected %s", cfg.replica_id, want);
    char *given[] = {"lion-vision", "--gateway", "tcp://127.0.0.1:1", "--replica", "vision-pod-abc"};
    CHECK_EQ_INT(worker_config_parse(&cfg, "vision", 5, given, &st), 0);
    CHECK(!strcmp(cfg.replica_id, "vision-pod-abc"));
}

/* --- worker_main --check-config ------------------------------------------------------------------ */

/* A stand-in stage that counts its opens and closes; open fails when fail_open is set. */
static int opened, closed, fail_open;
static char opened_model[256];

static void *fake_open(const worker_config *cfg, lion_status *st) {
    opened++;
    snprintf(opened_model, sizeof opened_model, "%s", cfg->model_dir);
    if (fail_open) {
        lion_fail(st, LION_EIO, "fake stage: cannot open");
        return NULL;
    }
    return &opened;
}

static void fake_close(void *ctx) { closed++; }

static int fake_process(void *ctx, worker_job *jobs, int n, lion_status *st) { return 0; }

/* The real vision stage, as services/vision/main.c opens it. */
static vision_stage the_vision;
static void *vision_open(const worker_config *cfg, lion_status *st) {
    return vision_stage_open(&the_vision, cfg->model_dir, cfg->max_batch, 0, st) ? NULL : &the_vision;
}
static void vision_close(void *ctx) { vision_stage_close(ctx); }

/* worker_main(svc, argv) with stdout and stderr captured into out (size bytes). */
static int run_main(const worker_service *svc, char **argv, int argc, char *out, size_t size) {
    char path[300];
    snprintf(path, sizeof path, "%s/output", dir);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    int rc = worker_main(svc, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    size_t len = 0;
    unsigned char *text = testing_read_file(path, &len);
    snprintf(out, size, "%s", text ? (char *)text : "");
    free(text);
    return rc;
}

static void check_worker_main(void) {
    static char out[8192];
    const worker_service fake = {.name = "vision", .stage = LION__STAGE__VISION, .open = fake_open,
                                 .close = fake_close, .process = fake_process};
    char ready[300];
    snprintf(ready, sizeof ready, "%s/ready", dir);
    char *ok[] = {"lion-vision", "--check-config", "--gateway", "tcp://10.1.2.3:5551", "--curve-server-key", gw_pub,
                  "--curve-key", w_key, "--model", "some/model", "--replica", "vision-a", "--ready-file", ready};
    /* returning at all shows the loop did not run: worker_run would serve until SIGTERM */
    CHECK_EQ_INT(run_main(&fake, ok, 14, out, sizeof out), 0);
    CHECK_EQ_INT(opened, 1);
    CHECK_EQ_INT(closed, 1);
    CHECK(!strcmp(opened_model, "some/model"));
    CHECK_CONTAINS(out, "lion-vision: configuration OK: stage vision, model some/model, precision f32");
    CHECK_CONTAINS(out, "gateway tcp://10.1.2.3:5551 over CURVE (gateway key ");
    CHECK_CONTAINS(out, "replica vision-a");
    CHECK_CONTAINS(out, "ready file ");
    CHECK_MSG(access(ready, F_OK) != 0, "--check-config wrote the ready file");

    /* a link problem is refused before the model is opened */
    char *remote[] = {"lion-vision", "--check-config", "--gateway", "tcp://10.1.2.3:5551"};
    CHECK_EQ_INT(run_main(&fake, remote, 4, out, sizeof out), 2);
    CHECK_EQ_INT(opened, 1);
    CHECK_CONTAINS(out, "--insecure");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/no-such.key", dir);
    char *no_key[] = {"lion-vision", "--check-config", "--gateway", "tcp://10.1.2.3:5551",
                      "--curve-server-key", gw_pub, "--curve-key", missing};
    CHECK_EQ_INT(run_main(&fake, no_key, 8, out, sizeof out), 2);
    CHECK_EQ_INT(opened, 1);
    CHECK_CONTAINS(out, "--curve-key: ");
    CHECK_CONTAINS(out, missing);
    CHECK(strstr(out, "configuration OK") == NULL);

    /* a flag the workers do not have */
    char *bad_flag[] = {"lion-vision", "--check-config", "--gateway", "tcp://127.0.0.1:1", "--threads-per-core", "2"};
    CHECK_EQ_INT(run_main(&fake, bad_flag, 6, out, sizeof out), 2);
    CHECK_CONTAINS(out, "unknown option '--threads-per-core'");
    char *bad_value[] = {"lion-vision", "--check-config", "--gateway", "tcp://127.0.0.1:1", "--precision", "fp8"};
    CHECK_EQ_INT(run_main(&fake, bad_value, 6, out, sizeof out), 2);
    CHECK_CONTAINS(out, "--precision: 'fp8'");
    CHECK_EQ_INT(opened, 1);

    /* a stage that does not open */
    fail_open = 1;
    char *local[] = {"lion-vision", "--check-config", "--gateway", "tcp://127.0.0.1:1"};
    CHECK_EQ_INT(run_main(&fake, local, 4, out, sizeof out), 1);
    CHECK_EQ_INT(opened, 2);
    CHECK_EQ_INT(closed, 1);
    CHECK_CONTAINS(out, "--model models/tiny-lion: fake stage: cannot open");
    fail_open = 0;

    /* the real vision stage: the embedded model opens; a missing folder and a model without
     * its weight file do not, and the message names the file */
    const worker_service vision = {.name = "vision", .stage = LION__STAGE__VISION, .open = vision_open,
                                   .close = vision_close, .process = fake_process};
    CHECK_EQ_INT(run_main(&vision, local, 4, out, sizeof out), 0);
    CHECK_CONTAINS(out, "lion-vision: configuration OK: stage vision, model models/tiny-lion");
    char no_model[300];
    snprintf(no_model, sizeof no_model, "%s/no-such-model", dir);
    char *missing_model[] = {"lion-vision", "--check-config", "--gateway", "tcp://127.0.0.1:1", "--model", no_model};
    CHECK_EQ_INT(run_main(&vision, missing_model, 6, out, sizeof out), 1);
    CHECK_CONTAINS(out, "model.json");
    CHECK_CONTAINS(out, no_model);
    char half_model[300], cmd[1024];
    snprintf(half_model, sizeof half_model, "%s/half-model", dir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp models/tiny-lion/model.json %s/", half_model, half_model);
    CHECK(system(cmd) == 0);
    char *no_weights[] = {"lion-vision", "--check-config", "--gateway", "tcp://127.0.0.1:1", "--model", half_model};
    CHECK_EQ_INT(run_main(&vision, no_weights, 6, out, sizeof out), 1);
    CHECK_CONTAINS(out, "vision.safetensors");
}

/* --- the gateway ------------------------------------------------------------------------------ */

/* Parses argv (after the program name) as lion-gateway would and checks it: -2 when parsing
 * refused it. */
static int gateway_check(char **args, int n, char *summary, size_t size, lion_status *st) {
    char *argv[24] = {"lion-gateway"};
    for (int i = 0; i < n && i < 23; i++) argv[i + 1] = args[i];
    gateway_config cfg;
    if (gateway_config_parse(&cfg, n + 1, argv, st) != 0) return -2;
    return gateway_config_check(&cfg, summary, size, st);
}

static void check_gateway(void) {
    static char summary[8192];
    lion_status st;
    CHECK_EQ_INT(gateway_check(NULL, 0, summary, sizeof summary, &st), 0);
    CHECK_CONTAINS(summary, "HTTP 127.0.0.1:8080 on loopback without API keys");
    CHECK_CONTAINS(summary, "stages vision tcp://127.0.0.1:5551, tagger tcp://127.0.0.1:5552, "
                            "aggregator tcp://127.0.0.1:5553, llm tcp://127.0.0.1:5554; tap none");
    CHECK_CONTAINS(summary, "plain ZeroMQ (local endpoints only)");

    char *flag[] = {"--check-config"};
    gateway_config cfg;
    char *argv[] = {"lion-gateway", flag[0]};
    CHECK_EQ_INT(gateway_config_parse(&cfg, 2, argv, &st), 0);
    CHECK_EQ_INT(cfg.check_config, 1);
    char *unknown[] = {"--check-config", "--api-key", api_keys};
    CHECK_EQ_INT(gateway_check(unknown, 3, summary, sizeof summary, &st), -2);
    CHECK_CONTAINS(st.msg, "unknown option '--api-key'");

    /* HTTP off loopback: keys, or --allow-open */
    char *open_http[] = {"--listen", "0.0.0.0:8080"};
    CHECK_EQ_INT(gateway_check(open_http, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--api-keys");
    char *allow_open[] = {"--listen", "0.0.0.0:8080", "--allow-open"};
    CHECK_EQ_INT(gateway_check(allow_open, 3, summary, sizeof summary, &st), 0);
    CHECK_CONTAINS(summary, "OPEN without API keys (--allow-open)");
    char *keys[] = {"--listen", "0.0.0.0:8080", "--api-keys", api_keys, "--metrics-auth"};
    CHECK_EQ_INT(gateway_check(keys, 5, summary, sizeof summary, &st), 0);
    CHECK_CONTAINS(summary, "with 2 API keys from ");
    CHECK_CONTAINS(summary, "(/metrics needs a key too)");
    char missing[300];
    snprintf(missing, sizeof missing, "%s/no-such-file", dir);
    char *no_keys[] = {"--listen", "0.0.0.0:8080", "--api-keys", missing};
    CHECK_EQ_INT(gateway_check(no_keys, 4, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--api-keys: ");
    CHECK_CONTAINS(st.msg, missing);
    char *short_key[] = {"--api-keys", short_keys};
    CHECK_EQ_INT(gateway_check(short_key, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "too short");
    char *hostname[] = {"--listen", "localhost:8080"};
    CHECK_EQ_INT(gateway_check(hostname, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--listen: 'localhost' is not an IPv4 address");
    char *web_root[] = {"--web-root", missing};
    CHECK_EQ_INT(gateway_check(web_root, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--web-root ");
    char *web_file[] = {"--web-root", api_keys};
    CHECK_EQ_INT(gateway_check(web_file, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "not a folder");

    /* endpoints: well formed, each bound once */
    char *same[] = {"--tagger", "tcp://127.0.0.1:5551"};
    CHECK_EQ_INT(gateway_check(same, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--tagger (or --bind-base): tcp://127.0.0.1:5551 is already the endpoint of --vision");
    char *tap_same[] = {"--tap", "tcp://127.0.0.1:5554"};
    CHECK_EQ_INT(gateway_check(tap_same, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--tap: ");
    char *no_scheme[] = {"--llm", "127.0.0.1:5560"};
    CHECK_EQ_INT(gateway_check(no_scheme, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--llm (or --bind-base): '127.0.0.1:5560' is not a ZeroMQ endpoint");
    char *bad_port[] = {"--llm", "tcp://127.0.0.1:55x"};
    CHECK_EQ_INT(gateway_check(bad_port, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--llm (or --bind-base): port '55x'");
    char *wildcard[] = {"--tap", "ipc:///tmp/lion-tap", "--llm", "tcp://127.0.0.1:*"};
    CHECK_EQ_INT(gateway_check(wildcard, 4, summary, sizeof summary, &st), 0);
    CHECK_CONTAINS(summary, "tap ipc:///tmp/lion-tap");

    /* ZeroMQ off loopback: CURVE, or --insecure */
    char *plain[] = {"--bind-base", "tcp://0.0.0.0:5551"};
    CHECK_EQ_INT(gateway_check(plain, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "tcp://0.0.0.0:5551 is reachable from other machines");
    CHECK_CONTAINS(st.msg, "--insecure");
    char *plain_tap[] = {"--tap", "tcp://0.0.0.0:5560"};
    CHECK_EQ_INT(gateway_check(plain_tap, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "tcp://0.0.0.0:5560");
    char *insecure[] = {"--bind-base", "tcp://0.0.0.0:5551", "--insecure"};
    CHECK_EQ_INT(gateway_check(insecure, 3, summary, sizeof summary, &st), 0);
    CHECK_CONTAINS(summary, "ZeroMQ INSECURE");
    char *curve[] = {"--bind-base", "tcp://0.0.0.0:5551", "--curve-key", gw_key, "--worker-keys", workers};
    CHECK_EQ_INT(gateway_check(curve, 6, summary, sizeof summary, &st), 0);
    CHECK_CONTAINS(summary, "ZeroMQ over CURVE (gateway key ");
    CHECK_CONTAINS(summary, ", 1 worker keys, 0 tap reader keys)");
    char *curve_file[] = {"--bind-base", "tcp://0.0.0.0:5551", "--curve-key", gw_key, "--worker-keys", w_pub,
                          "--tap", "tcp://0.0.0.0:5560", "--tap-keys", gw_pub};
    CHECK_EQ_INT(gateway_check(curve_file, 10, summary, sizeof summary, &st), 0);
    CHECK_CONTAINS(summary, ", 1 worker keys, 1 tap reader keys)");
    char *no_workers[] = {"--curve-key", gw_key};
    CHECK_EQ_INT(gateway_check(no_workers, 2, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-key needs --worker-keys");
    char *no_taps[] = {"--curve-key", gw_key, "--worker-keys", workers, "--tap", "tcp://0.0.0.0:5560"};
    CHECK_EQ_INT(gateway_check(no_taps, 6, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--tap-keys");
    char *readable[] = {"--curve-key", open_key, "--worker-keys", workers};
    CHECK_EQ_INT(gateway_check(readable, 4, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--curve-key: ");
    CHECK_CONTAINS(st.msg, "chmod 600");
    char *no_pair[] = {"--curve-key", missing, "--worker-keys", workers};
    CHECK_EQ_INT(gateway_check(no_pair, 4, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, missing);
    char *no_list[] = {"--curve-key", gw_key, "--worker-keys", missing};
    CHECK_EQ_INT(gateway_check(no_list, 4, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "--worker-keys: ");
    /* an allow-list line that is not a key */
    char bad_list[300];
    snprintf(bad_list, sizeof bad_list, "%s/bad-list", dir);
    write_file(bad_list, "not-a-key\n", 0644);
    char *bad_keys[] = {"--curve-key", gw_key, "--worker-keys", bad_list};
    CHECK_EQ_INT(gateway_check(bad_keys, 4, summary, sizeof summary, &st), -1);
    CHECK_CONTAINS(st.msg, "not a public key");
}

int main(void) {
    unsetenv("LION_GATEWAY");
    unsetenv("LION_MODEL");
    unsetenv("LION_READY_FILE");
    make_files();
    check_worker_link();
    check_ready_file();
    check_default_replica();
    check_worker_main();
    check_gateway();
    remove_files();
    return testing_finish();
}

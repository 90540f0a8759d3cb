/* curve.c - key files, allow-lists and socket options for CURVE (curve.h). */
#include "curve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "file_read.h"

#define MAX_KEY_FILE (1u << 20)

/* The 40 Z85 characters after "label:" (or the first line's 40 characters when label is
 * NULL and the text has no label). */
static int key_after(const char *text, const char *label, char out[CURVE_KEY_TEXT]) {
    const char *p = text;
    if (label) {
        p = strstr(text, label);
        if (!p) return -1;
        p += strlen(label);
    } else if (strstr(text, "public:")) {
        p = strstr(text, "public:") + 7;
    }
    while (*p == ' ' || *p == '\t') p++;
    size_t n = 0;
    while (p[n] && p[n] != '\n' && p[n] != '\r' && p[n] != ' ') n++;
    if (n != CURVE_KEY_TEXT - 1) return -1;
    memcpy(out, p, n);
    out[n] = 0;
    unsigned char bin[32];
    return zmq_z85_decode(bin, out) ? 0 : -1;
}

int curve_keypair_generate(const char *path, const char *pub_path, curve_keypair *out, lion_status *st) {
    if (zmq_curve_keypair(out->public_key, out->secret_key) != 0)
        return lion_fail(st, LION_EIO, "zmq_curve_keypair: %s (libzmq without CURVE?)", zmq_strerror(errno));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return lion_fail(st, LION_EIO, "%s: cannot create: %s", path, strerror(errno));
    char text[128];
    int n = snprintf(text, sizeof text, "public: %s\nsecret: %s\n", out->public_key, out->secret_key);
    int rc = write(fd, text, (size_t)n) == n ? 0 : -1;
    memset(text, 0, sizeof text);
    if (close(fd) != 0 || rc != 0) {
        lion_fail(st, LION_EIO, "%s: cannot write: %s", path, strerror(errno));
        unlink(path); /* no half-written pair blocks the next try (O_EXCL) */
        return -1;
    }
    fd = open(pub_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    rc = fd < 0 ? -1 : 0;
    if (fd >= 0) {
        n = snprintf(text, sizeof text, "%s\n", out->public_key);
        rc = write(fd, text, (size_t)n) == n ? 0 : -1;
        if (close(fd) != 0) rc = -1;
    }
    if (rc != 0) {
        lion_fail(st, LION_EIO, "%s: cannot write: %s", pub_path, strerror(errno));
        unlink(path);
        unlink(pub_path);
        return -1;
    }
    return 0;
}

int curve_keypair_load(const char *path, curve_keypair *out, lion_status *st) {
    struct stat sb;
    if (stat(path, &sb) != 0) return lion_fail(st, LION_EIO, "%s: %s", path, strerror(errno));
    if (sb.st_mode & 077)
        return lion_fail(st, LION_EINVAL, "%s: holds a secret key but others may read it (mode %03o; chmod 600)", path,
                         (unsigned)(sb.st_mode & 0777));
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, MAX_KEY_FILE, "CURVE key pair", &text, &len, st) != 0) return -1;
    int rc = key_after(text, "public:", out->public_key) || key_after(text, "secret:", out->secret_key) ? -1 : 0;
    memset(text, 0, len);
    free(text);
    if (rc) return lion_fail(st, LION_EFORMAT, "%s: not a key pair file (public: and secret: lines of 40 Z85 characters)", path);
    return 0;
}

int curve_public_load(const char *path, char public_key[CURVE_KEY_TEXT], lion_status *st) {
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, MAX_KEY_FILE, "CURVE public key", &text, &len, st) != 0) return -1;
    int rc = key_after(text, NULL, public_key);
    free(text);
    if (rc) return lion_fail(st, LION_EFORMAT, "%s: no public key (40 Z85 characters)", path);
    return 0;
}

static int allow_add(curve_allowlist *list, const char *z85, const char *where, lion_status *st) {
    unsigned char bin[32];
    char key[CURVE_KEY_TEXT];
    snprintf(key, sizeof key, "%s", z85);
    if (strlen(z85) != CURVE_KEY_TEXT - 1 || !zmq_z85_decode(bin, key))
        return lion_fail(st, LION_EFORMAT, "%s: '%.50s' is not a public key (40 Z85 characters)", where, z85);
    unsigned char (*k)[32] = realloc(list->keys, (size_t)(list->n + 1) * sizeof *k);
    if (!k) return lion_fail(st, LION_ENOMEM, "%s: out of memory", where);
    list->keys = k;
    memcpy(list->keys[list->n++], bin, 32);
    return 0;
}

static int allow_file(curve_allowlist *list, const char *path, lion_status *st) {
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, MAX_KEY_FILE, "CURVE allow-list", &text, &len, st) != 0) return -1;
    int rc = 0, line = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && rc == 0; l = strtok_r(NULL, "\n", &save)) {
        line++;
        while (*l == ' ' || *l == '\t') l++;
        /* a comment is "# ..." or a lone "#": '#' is also a Z85 digit, and a key may start with it */
        if (l[0] == '#' && (l[1] == 0 || l[1] == ' ' || l[1] == '\t' || l[1] == '\r')) continue;
        if (!strncmp(l, "public:", 7)) l += 7;
        while (*l == ' ' || *l == '\t') l++;
        size_t n = strlen(l);
        while (n && (l[n - 1] == ' ' || l[n - 1] == '\t' || l[n - 1] == '\r')) l[--n] = 0;
        if (!n) continue;
        char where[1100];
        snprintf(where, sizeof where, "%s:%d", path, line);
        rc = allow_add(list, l, where, st);
    }
    free(text);
    return rc;
}

int curve_allowlist_load(curve_allowlist *list, const char *path, lion_status *st) {
    memset(list, 0, sizeof *list);
    struct stat sb;
    if (stat(path, &sb) != 0) return lion_fail(st, LION_EIO, "%s: %s", path, strerror(errno));
    int rc = 0;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return lion_fail(st, LION_EIO, "%s: %s", path, strerror(errno));
        for (struct dirent *e; rc == 0 && (e = readdir(d));) {
            size_t n = strlen(e->d_name);
            if (n < 5 || strcmp(e->d_name + n - 4, ".pub") != 0) continue;
            char file[4096];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            rc = allow_file(list, file, st);
        }
        closedir(d);
    } else {
        rc = allow_file(list, path, st);
    }
    if (rc != 0) curve_allowlist_free(list);
    return rc;
}

void curve_allowlist_free(curve_allowlist *list) {
    free(list->keys);
    memset(list, 0, sizeof *list);
}

int curve_allowlist_has(const curve_allowlist *list, const unsigned char key[32]) {
    for (int i = 0; i < list->n; i++)
        if (!memcmp(list->keys[i], key, 32)) return 1;
    return 0;
}

int curve_server_setup(void *sock, const curve_keypair *server, const char *zap_domain, lion_status *st) {
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, server->secret_key, CURVE_KEY_TEXT - 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, zap_domain, strlen(zap_domain)) != 0)
        return lion_fail(st, LION_EIO, "CURVE server setup: %s", zmq_strerror(errno));
    return 0;
}

int curve_client_setup(void *sock, const char server_public[CURVE_KEY_TEXT], const curve_keypair *client,
                       lion_status *st) {
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public, CURVE_KEY_TEXT - 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, client->public_key, CURVE_KEY_TEXT - 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, client->secret_key, CURVE_KEY_TEXT - 1) != 0)
        return lion_fail(st, LION_EIO, "CURVE client setup: %s", zmq_strerror(errno));
    return 0;
}

int curve_endpoint_is_local(const char *ep) {
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9)) return 1;
    if (strncmp(ep, "tcp://", 6) != 0) return 0;
    const char *host = ep + 6;
    return !strncmp(host, "127.", 4) || !strncmp(host, "localhost:", 10) || !strncmp(host, "[::1]:", 6);
}

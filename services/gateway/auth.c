/* auth.c - API keys: who may use the HTTP API.
 *
 * Keys come from a file, one per line (a line starting with '#' is a comment, blank lines
 * and surrounding spaces are ignored), as OpenAI clients send them: "Authorization: Bearer <key>". Only the
 * SHA-256 of each key is kept in memory, and a presented key is hashed and compared with
 * every stored hash in constant time (all of them, always), so neither a memory dump nor
 * the answer's timing gives a key away. */
#include <nettle/sha2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "file_read.h"
#include "gateway_impl.h"

#define MAX_KEY_FILE_BYTES (1u << 20)
#define MIN_KEY_BYTES 16

static void hash_key(const char *key, size_t len, uint8_t out[API_KEY_HASH]) {
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, len, (const uint8_t *)key);
    sha256_digest(&ctx, API_KEY_HASH, out);
}

static int add_key(api_keys *k, const char *key, size_t len, int line, const char *path, lion_status *st) {
    if (len < MIN_KEY_BYTES)
        return lion_fail(st, LION_EINVAL, "%s:%d: a key of %zu bytes is too short (at least %d)", path, line, len,
                         MIN_KEY_BYTES);
    uint8_t (*h)[API_KEY_HASH] = realloc(k->hashes, (size_t)(k->n + 1) * sizeof *h);
    if (!h) return lion_fail(st, LION_ENOMEM, "%s: out of memory", path);
    k->hashes = h;
    hash_key(key, len, k->hashes[k->n++]);
    return 0;
}

int api_keys_load(api_keys *k, const char *path, lion_status *st) {
    memset(k, 0, sizeof *k);
    char *text = NULL;
    size_t size = 0;
    if (file_read_all(path, MAX_KEY_FILE_BYTES, "API key file", &text, &size, st) != 0) return -1;
    int rc = 0, line = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && rc == 0; l = strtok_r(NULL, "\n", &save)) {
        line++;
        while (*l == ' ' || *l == '\t') l++;
        if (*l == '#') continue; /* a comment line; a key may hold '#' itself */
        size_t len = strlen(l);
        while (len && (l[len - 1] == ' ' || l[len - 1] == '\t' || l[len - 1] == '\r')) l[--len] = 0;
        if (len) rc = add_key(k, l, len, line, path, st);
    }
    memset(text, 0, size); /* the plain keys leave memory */
    free(text);
    if (rc == 0 && k->n == 0) rc = lion_fail(st, LION_EINVAL, "%s: no API key in the file", path);
    if (rc != 0) api_keys_free(k);
    return rc;
}

void api_keys_free(api_keys *k) {
    free(k->hashes);
    memset(k, 0, sizeof *k);
}

int api_keys_check(const api_keys *k, const char *authorization) {
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return 0;
    const char *key = authorization + 7;
    while (*key == ' ') key++;
    uint8_t h[API_KEY_HASH];
    hash_key(key, strlen(key), h);
    unsigned found = 0;
    for (int i = 0; i < k->n; i++) {
        unsigned diff = 0;
        for (int b = 0; b < API_KEY_HASH; b++) diff |= (unsigned)(k->hashes[i][b] ^ h[b]);
        found |= (unsigned)(diff == 0);
    }
    return (int)found;
}

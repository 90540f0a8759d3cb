#include "feature_cache.h"

#include <nettle/sha2.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_BUCKETS 1024 /* power of two; chains stay short at the entry counts we hold */

typedef struct entry {
    feature_key key;
    void *value;
    size_t len;
    struct entry *chain;            /* next in the hash bucket */
    struct entry *newer, *older;    /* LRU list */
} entry;

struct feature_cache {
    entry *buckets[CACHE_BUCKETS];
    entry *newest, *oldest;
    feature_cache_stats stats;
};

feature_key feature_key_of(const void *data, size_t len) {
    struct sha256_ctx ctx;
    feature_key k;
    sha256_init(&ctx);
    sha256_update(&ctx, len, data);
    sha256_digest(&ctx, FEATURE_KEY_SIZE, k.bytes);
    return k;
}

feature_cache *feature_cache_new(size_t capacity_bytes) {
    feature_cache *c = calloc(1, sizeof *c);
    if (c) c->stats.capacity_bytes = capacity_bytes;
    return c;
}

static size_t bucket_of(const feature_key *k) {
    size_t h;
    memcpy(&h, k->bytes, sizeof h); /* the key is a cryptographic hash: any bytes are uniform */
    return h & (CACHE_BUCKETS - 1);
}

static void lru_unlink(feature_cache *c, entry *e) {
    if (e->newer) e->newer->older = e->older;
    else c->newest = e->older;
    if (e->older) e->older->newer = e->newer;
    else c->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push_newest(feature_cache *c, entry *e) {
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest) c->newest->newer = e;
    c->newest = e;
    if (!c->oldest) c->oldest = e;
}

static entry **find_slot(feature_cache *c, const feature_key *k) {
    entry **p = &c->buckets[bucket_of(k)];
    while (*p && memcmp((*p)->key.bytes, k->bytes, FEATURE_KEY_SIZE) != 0) p = &(*p)->chain;
    return p;
}

static void remove_entry(feature_cache *c, entry *e) {
    entry **p = find_slot(c, &e->key);
    *p = e->chain;
    lru_unlink(c, e);
    c->stats.bytes -= e->len;
    c->stats.entries--;
    free(e->value);
    free(e);
}

void feature_cache_free(feature_cache *c) {
    if (!c) return;
    while (c->oldest) remove_entry(c, c->oldest);
    free(c);
}

const void *feature_cache_get(feature_cache *c, const feature_key *key, size_t *len) {
    entry *e = *find_slot(c, key);
    if (!e) {
        c->stats.misses++;
        return NULL;
    }
    c->stats.hits++;
    lru_unlink(c, e);
    lru_push_newest(c, e);
    if (len) *len = e->len;
    return e->value;
}

int feature_cache_put(feature_cache *c, const feature_key *key, const void *value, size_t len) {
    if (len > c->stats.capacity_bytes) return 0;
    void *copy = malloc(len ? len : 1);
    entry *e = calloc(1, sizeof *e);
    if (!copy || !e) {
        free(copy);
        free(e);
        return -1;
    }
    memcpy(copy, value, len);
    entry *old = *find_slot(c, key);
    if (old) remove_entry(c, old);
    while (c->oldest && c->stats.bytes + len > c->stats.capacity_bytes) {
        remove_entry(c, c->oldest);
        c->stats.evictions++;
    }
    e->key = *key;
    e->value = copy;
    e->len = len;
    entry **slot = find_slot(c, key);
    *slot = e;
    lru_push_newest(c, e);
    c->stats.bytes += len;
    c->stats.entries++;
    c->stats.insertions++;
    return 0;
}

feature_cache_stats feature_cache_get_stats(const feature_cache *c) { return c->stats; }

/* feature_cache.h - content-addressed cache of a stage's outputs, bounded in bytes, LRU.
 *
 * The vision stage keys it by the SHA-256 of the encoded image bytes: the same image sent
 * again (a second question about one picture, a retry) skips the ViT. Values are opaque
 * byte blobs owned by the cache. Not thread-safe: one stage's compute thread uses it. */
#ifndef LION_FEATURE_CACHE_H
#define LION_FEATURE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define FEATURE_KEY_SIZE 32

typedef struct feature_key {
    uint8_t bytes[FEATURE_KEY_SIZE];
} feature_key;

typedef struct feature_cache feature_cache;

typedef struct feature_cache_stats {
    uint64_t hits, misses, insertions, evictions;
    size_t bytes, entries, capacity_bytes;
} feature_cache_stats;

/* capacity_bytes 0 makes a cache that stores nothing (every lookup misses). */
feature_cache *feature_cache_new(size_t capacity_bytes);
void feature_cache_free(feature_cache *c);

/* SHA-256 of data. */
feature_key feature_key_of(const void *data, size_t len);

/* The cached value, or NULL (a miss). The pointer is valid until the next put or free.
 * A hit makes the entry the most recently used. */
const void *feature_cache_get(feature_cache *c, const feature_key *key, size_t *len);

/* Stores a copy of value under key, evicting least recently used entries to stay within
 * capacity. A value larger than the whole capacity is not stored. Returns 0, or -1 when
 * out of memory (the cache is left as it was). Replaces an existing entry of that key. */
int feature_cache_put(feature_cache *c, const feature_key *key, const void *value, size_t len);

feature_cache_stats feature_cache_get_stats(const feature_cache *c);

#endif

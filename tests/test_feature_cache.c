/* The content-addressed LRU feature cache: hits, misses, byte bound, eviction order. */
#include <string.h>

#include "feature_cache.h"
#include "testing.h"

int main(void) {
    /* SHA-256 of "abc" (FIPS 180-2 test vector) */
    feature_key k = feature_key_of("abc", 3);
    static const uint8_t abc[4] = {0xba, 0x78, 0x16, 0xbf};
    CHECK(memcmp(k.bytes, abc, 4) == 0 && k.bytes[31] == 0xad);

    feature_cache *c = feature_cache_new(300);
    char v[100];
    feature_key keys[4];
    for (int i = 0; i < 4; i++) {
        char name[8] = {'i', 'm', 'g', (char)('0' + i)};
        keys[i] = feature_key_of(name, 4);
    }
    size_t len = 0;
    CHECK(feature_cache_get(c, &keys[0], &len) == NULL);
    for (int i = 0; i < 3; i++) {
        memset(v, 'a' + i, sizeof v);
        CHECK(feature_cache_put(c, &keys[i], v, sizeof v) == 0);
    }
    const char *got = feature_cache_get(c, &keys[0], &len); /* 0 becomes most recent */
    CHECK(got && len == 100 && got[0] == 'a' && got[99] == 'a');
    memset(v, 'd', sizeof v);
    CHECK(feature_cache_put(c, &keys[3], v, sizeof v) == 0); /* evicts 1, the oldest */
    CHECK(feature_cache_get(c, &keys[1], &len) == NULL);
    CHECK(feature_cache_get(c, &keys[2], &len) != NULL);
    got = feature_cache_get(c, &keys[3], &len);
    CHECK(got && got[50] == 'd');
    feature_cache_stats s = feature_cache_get_stats(c);
    CHECK_EQ_INT(s.entries, 3);
    CHECK_EQ_INT(s.bytes, 300);
    CHECK_EQ_INT(s.evictions, 1);
    CHECK_EQ_INT(s.hits, 3);
    CHECK_EQ_INT(s.misses, 2);

    /* replacing a key keeps one entry; a value over the whole capacity is not stored */
    memset(v, 'z', sizeof v);
    CHECK(feature_cache_put(c, &keys[3], v, 50) == 0);
    got = feature_cache_get(c, &keys[3], &len);
    CHECK(got && len == 50 && got[0] == 'z');
    CHECK_EQ_INT(feature_cache_get_stats(c).bytes, 250);
    char big[400] = {0};
    CHECK(feature_cache_put(c, &keys[1], big, sizeof big) == 0);
    CHECK(feature_cache_get(c, &keys[1], &len) == NULL);
    CHECK_EQ_INT(feature_cache_get_stats(c).entries, 3);
    feature_cache_free(c);

    feature_cache *off = feature_cache_new(0); /* capacity 0: caching disabled */
    CHECK(feature_cache_put(off, &keys[0], v, 10) == 0);
    CHECK(feature_cache_get(off, &keys[0], &len) == NULL);
    feature_cache_free(off);
    return testing_finish();
}

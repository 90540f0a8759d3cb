/* unicode.c - UTF-8 coding and lookups in the generated Unicode tables. */
#include "unicode.h"

struct uclass_range { uint32_t first, last; uint8_t cls; };
struct ccc_range { uint32_t first, last; uint8_t ccc; };
struct umap_entry { uint32_t cp; uint16_t offset; uint8_t len; };

#include "unicode_tables.inc"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

size_t utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) return 0;
    if (u[0] < 0x80) { *cp = u[0]; return 1; }
    size_t len;
    uint32_t c, min;
    if ((u[0] & 0xE0) == 0xC0) { len = 2; c = u[0] & 0x1F; min = 0x80; }
    else if ((u[0] & 0xF0) == 0xE0) { len = 3; c = u[0] & 0x0F; min = 0x800; }
    else if ((u[0] & 0xF8) == 0xF0) { len = 4; c = u[0] & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (u[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

size_t utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

enum uclass unicode_class(uint32_t cp) {
    size_t lo = 0, hi = COUNT(uclass_ranges);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uclass_ranges[mid].first) hi = mid;
        else if (cp > uclass_ranges[mid].last) lo = mid + 1;
        else return (enum uclass)uclass_ranges[mid].cls;
    }
    return UCLASS_C; /* beyond U+10FFFF: treat as unassigned */
}

int unicode_ccc(uint32_t cp) {
    size_t lo = 0, hi = COUNT(ccc_ranges);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < ccc_ranges[mid].first) hi = mid;
        else if (cp > ccc_ranges[mid].last) lo = mid + 1;
        else return ccc_ranges[mid].ccc;
    }
    return 0;
}

static const struct umap_entry *umap_find(const struct umap_entry *e, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < e[mid].cp) hi = mid;
        else if (cp > e[mid].cp) lo = mid + 1;
        else return &e[mid];
    }
    return NULL;
}

int unicode_lower(uint32_t cp, uint32_t out[3]) {
    const struct umap_entry *e = umap_find(lower_entries, COUNT(lower_entries), cp);
    if (!e) { out[0] = cp; return 1; }
    for (int i = 0; i < e->len && i < 3; i++) out[i] = lower_cps[e->offset + i];
    return e->len < 3 ? e->len : 3;
}

int unicode_decompose(uint32_t cp, uint32_t out[UNICODE_NFD_MAX]) {
    /* Hangul syllables decompose arithmetically (Unicode ch. 3.12) rather than by table. */
    enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, TCOUNT = 28,
           NCOUNT = 588, SCOUNT = 11172 };
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t s = cp - SBASE;
        out[0] = LBASE + s / NCOUNT;
        out[1] = VBASE + (s % NCOUNT) / TCOUNT;
        if (s % TCOUNT == 0) return 2;
        out[2] = TBASE + s % TCOUNT;
        return 3;
    }
    const struct umap_entry *e = umap_find(nfd_entries, COUNT(nfd_entries), cp);
    if (!e) { out[0] = cp; return 1; }
    int n = e->len < UNICODE_NFD_MAX ? e->len : UNICODE_NFD_MAX;
    for (int i = 0; i < n; i++) out[i] = nfd_cps[e->offset + i];
    return n;
}

void unicode_canonical_order(uint32_t *cps, size_t n) {
    /* Stable insertion sort by combining class within each run of non-starters. */
    for (size_t i = 1; i < n; i++) {
        int c = unicode_ccc(cps[i]);
        if (c == 0) continue;
        size_t j = i;
        while (j > 0) {
            int p = unicode_ccc(cps[j - 1]);
            if (p == 0 || p <= c) break;
            uint32_t t = cps[j]; cps[j] = cps[j - 1]; cps[j - 1] = t;
            j--;
        }
    }
}

/* fuzz_util.h - what the libFuzzer targets share (header only: each target is one .c file).
 *
 * An input is cut into fields with a cursor: fuzz_u8/u16/u32 read little-endian numbers
 * (zero once the input is used up), fuzz_bytes a length-prefixed slice, and the rest is what
 * remains. Files the code under test must read from a path go into one temporary directory
 * per process (fuzz_dir), removed at exit. */
#ifndef LION_FUZZ_UTIL_H
#define LION_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fuzz_cursor {
    const uint8_t *p;
    size_t left;
} fuzz_cursor;

static inline uint8_t fuzz_u8(fuzz_cursor *c) {
    if (!c->left) return 0;
    c->left--;
    return *c->p++;
}

static inline uint16_t fuzz_u16(fuzz_cursor *c) {
    uint16_t lo = fuzz_u8(c);
    return (uint16_t)(lo | (uint16_t)fuzz_u8(c) << 8);
}

static inline uint32_t fuzz_u32(fuzz_cursor *c) {
    uint32_t lo = fuzz_u16(c);
    return lo | (uint32_t)fuzz_u16(c) << 16;
}

/* Up to n bytes (fewer when the input ends first); *len says how many. */
static inline const uint8_t *fuzz_take(fuzz_cursor *c, size_t n, size_t *len) {
    const uint8_t *at = c->p;
    *len = n < c->left ? n : c->left;
    c->p += *len;
    c->left -= *len;
    return at;
}

/* A NUL-terminated copy of bytes (which may hold NULs: C-string APIs then see a prefix). */
static inline char *fuzz_cstr(const uint8_t *data, size_t len) {
    char *s = malloc(len + 1);
    if (!s) abort();
    if (len) memcpy(s, data, len);
    s[len] = 0;
    return s;
}

static char fuzz_dir_path[256];

static inline void fuzz_dir_remove(void) {
    if (!fuzz_dir_path[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir_path);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir_path);
}

/* This process's temporary directory (under $TMPDIR or /tmp), made on first use. */
static inline const char *fuzz_dir(void) {
    if (fuzz_dir_path[0]) return fuzz_dir_path;
    const char *tmp = getenv("TMPDIR");
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/lion-fuzz-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(fuzz_dir_path)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_dir_remove);
    return fuzz_dir_path;
}

/* Writes data to fuzz_dir()/name (replacing it); the path in a static buffer. */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t len) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

/* A file of the repository (models/tiny-lion/...): LION_SOURCE_DIR is set by tests/fuzz. */
static inline const char *fuzz_source_path(const char *rel) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", LION_SOURCE_DIR, rel);
    return path;
}

#define FUZZ_CHECK(cond)                                                                                    \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);                   \
            abort();                                                                                        \
        }                                                                                                   \
    } while (0)

#endif

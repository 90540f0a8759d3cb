#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

#define ARENA_ALIGN 64

struct arena_chunk {
    arena_chunk *next;
    size_t size;
    size_t offset;
    unsigned char *data;
};

void arena_init(arena *a, size_t chunk_size) {
    a->head = a->chunks = NULL;
    a->chunk_size = chunk_size ? chunk_size : (size_t)16 << 20;
    a->used = a->peak = 0;
}

static arena_chunk *chunk_new(size_t size) {
    arena_chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->data = aligned_alloc(ARENA_ALIGN, size);
    if (!c->data) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->offset = 0;
    c->next = NULL;
    return c;
}

void *arena_alloc(arena *a, size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < bytes) return NULL; /* overflow */
    /* walk forward through chunks kept from earlier forwards before asking the system */
    arena_chunk *c = a->head;
    while (c && c->size - c->offset < need) {
        c = c->next;
        if (c) c->offset = 0;
    }
    if (!c) {
        size_t size = need > a->chunk_size ? need : a->chunk_size;
        c = chunk_new(size);
        if (!c) return NULL;
        /* append at the end of the list so that reuse order stays first-to-last */
        arena_chunk **tail = &a->chunks;
        while (*tail) tail = &(*tail)->next;
        *tail = c;
    }
    a->head = c;
    void *p = c->data + c->offset;
    c->offset += need;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

float *arena_floats(arena *a, size_t n) {
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    return arena_alloc(a, n * sizeof(float));
}

arena_mark arena_save(const arena *a) {
    arena_mark m = {a->head, a->head ? a->head->offset : 0, a->used};
    return m;
}

void arena_restore(arena *a, arena_mark m) {
    a->head = m.head;
    if (m.head) m.head->offset = m.offset;
    else if (a->chunks) {
        a->head = a->chunks;
        a->chunks->offset = 0;
    }
    a->used = m.used;
}

void arena_reset(arena *a) {
    a->head = a->chunks;
    if (a->head) a->head->offset = 0;
    a->used = 0;
}

void arena_free(arena *a) {
    arena_chunk *c = a->chunks;
    while (c) {
        arena_chunk *next = c->next;
        free(c->data);
        free(c);
        c = next;
    }
    a->head = a->chunks = NULL;
    a->used = 0;
}

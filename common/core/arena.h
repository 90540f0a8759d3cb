/* arena.h - scratch memory for one forward pass.
 *
 * A forward allocates its activations from an arena and resets it at the end, so a
 * request does not call malloc in its inner loops. The arena grows by chunks the first
 * time a larger request comes and keeps them across resets: in steady state a forward
 * allocates nothing from the system. */
#ifndef LION_ARENA_H
#define LION_ARENA_H

#include <stddef.h>

typedef struct arena_chunk arena_chunk;

typedef struct arena {
    arena_chunk *head;   /* chunk being filled */
    arena_chunk *chunks; /* all chunks, for reuse after reset and for freeing */
    size_t chunk_size;   /* minimum size of a new chunk */
    size_t used;         /* bytes handed out since the last reset */
    size_t peak;         /* high-water mark of used, for sizing and metrics */
} arena;

typedef struct arena_mark {
    arena_chunk *head;
    size_t offset;
    size_t used;
} arena_mark;

void arena_init(arena *a, size_t chunk_size);
/* 64-byte aligned, uninitialised; NULL only when the system is out of memory. */
void *arena_alloc(arena *a, size_t bytes);
float *arena_floats(arena *a, size_t n);
/* Scoped scratch inside a forward: take a mark, allocate, release back to the mark. */
arena_mark arena_save(const arena *a);
void arena_restore(arena *a, arena_mark m);
void arena_reset(arena *a);
void arena_free(arena *a);

#endif

/* file_read.h - a small file (tokenizer model, vocabulary) read whole into memory. */
#ifndef LION_FILE_READ_H
#define LION_FILE_READ_H

#include <stddef.h>

#include "status.h"

/* Reads path into a malloc'ed buffer with a NUL after the last byte (*size excludes it).
 * Refuses files over max_bytes, naming what the file was meant to be ("a vocabulary").
 * Errors name the path: cannot open, size unknown, too large, out of memory, short read. */
int file_read_all(const char *path, size_t max_bytes, const char *what, char **data, size_t *size, lion_status *st);

#endif

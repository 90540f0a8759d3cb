/* tap_compare.h - does a replayed answer reproduce the dumped one? */
#ifndef LION_TAP_COMPARE_H
#define LION_TAP_COMPARE_H

#include <stddef.h>

#include "envelope.h"

/* Compares what a replay got with what was dumped: kind, error, the result fields and
 * every tensor's name, dtype, shape and bytes (trace, attempt and times naturally differ
 * and are not compared). Returns 0 when identical, else 1 with the first difference
 * described in diff. */
int tap_compare_replies(const envelope_msg *got, const envelope_msg *want, char *diff, size_t len);

#endif

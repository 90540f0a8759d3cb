/* tap_print.h - one line per tap message, as watch and show print it. */
#ifndef LION_TAP_PRINT_H
#define LION_TAP_PRINT_H

#include <stdint.h>
#include <stdio.h>

#include "tap_message.h"

typedef struct tensor_stats {
    int64_t count; /* finite or infinite values: what min, max and mean cover */
    int64_t nan;
    float min, max;
    double mean;
} tensor_stats;

/* Min, max, mean over the non-NaN values of t, in f32 (f16/bf16 converted, integers cast). */
int tensor_stats_compute(const tensor *t, tensor_stats *s, lion_status *st);

/* time_us: when the message was seen (unix microseconds), or 0 to take it from the
 * envelope (its sent_us, else its last hop's finish). Stats are printed for the tensors a
 * data/ message carries. */
void tap_print_line(FILE *out, const tap_message *tm, int64_t time_us);

#endif

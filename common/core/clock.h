/* clock.h - time in microseconds: wall clock for what travels on the wire (deadlines,
 * trace hops), monotonic clock for intervals measured inside one process. */
#ifndef LION_CLOCK_H
#define LION_CLOCK_H

#include <stdint.h>

/* Microseconds since the Unix epoch (CLOCK_REALTIME): comparable across machines. */
int64_t clock_unix_us(void);
/* Microseconds of CLOCK_MONOTONIC: for timeouts, never jumps. */
int64_t clock_mono_us(void);

#endif

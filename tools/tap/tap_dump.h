/* tap_dump.h - dump files of tap messages (docs/wire-protocol.md "Message taps").
 *
 * A dump holds records one after another, each the frames of one tap message as they
 * came off the socket: u32 frame count, then per frame u64 length + bytes, little-endian,
 * topic frame first. Reading checks every count and length against the limits and the
 * bytes actually left in the file before allocating, so a damaged file is refused with
 * the record and offset that are wrong. */
#ifndef LION_TAP_DUMP_H
#define LION_TAP_DUMP_H

#include <stdint.h>
#include <stdio.h>

#include "tap_message.h"

/* Appends one record: topic, then frames[0..n) (envelope and tensor frames). */
int tap_dump_write(FILE *f, const zmq_msg_t *topic, const zmq_msg_t *frames, int n, lion_status *st);

typedef struct tap_dump_reader {
    FILE *f;
    char path[1024];
    uint64_t size, offset; /* bytes in the file, bytes read */
    int record;            /* records read so far */
} tap_dump_reader;

int tap_dump_open(tap_dump_reader *r, const char *path, lion_status *st);
/* Reads and decodes the next record into tm. Returns 1 with a message, 0 at the end of
 * the file, -1 with st naming the file, record and what is wrong (tm closed). */
int tap_dump_next(tap_dump_reader *r, tap_message *tm, lion_status *st);
void tap_dump_close(tap_dump_reader *r);

#endif

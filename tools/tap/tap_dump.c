#include "tap_dump.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int write_frame(FILE *f, const zmq_msg_t *frame) {
    /* zmq_msg_data/size take a non-const message but do not change it */
    zmq_msg_t *m = (zmq_msg_t *)frame;
    unsigned char len[8];
    size_t n = zmq_msg_size(m);
    put_le(len, n, 8);
    if (fwrite(len, 1, 8, f) != 8) return -1;
    return n && fwrite(zmq_msg_data(m), 1, n, f) != n ? -1 : 0;
}

int tap_dump_write(FILE *f, const zmq_msg_t *topic, const zmq_msg_t *frames, int n, lion_status *st) {
    unsigned char count[4];
    put_le(count, (uint64_t)n + 1, 4);
    int bad = fwrite(count, 1, 4, f) != 4 || write_frame(f, topic) != 0;
    for (int i = 0; !bad && i < n; i++) bad = write_frame(f, &frames[i]) != 0;
    if (bad) return lion_fail(st, LION_EIO, "dump write: %s", strerror(errno));
    return 0;
}

int tap_dump_open(tap_dump_reader *r, const char *path, lion_status *st) {
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->f = fopen(path, "rb");
    struct stat sb;
    if (!r->f || fstat(fileno(r->f), &sb) != 0) {
        int err = errno;
        if (r->f) fclose(r->f);
        r->f = NULL;
        return lion_fail(st, LION_EIO, "%s: %s", path, strerror(err));
    }
    r->size = (uint64_t)sb.st_size;
    return 0;
}

/* Reads n bytes or says the record is cut short. */
static int read_exact(tap_dump_reader *r, void *buf, uint64_t n, const char *what, lion_status *st) {
    if (n > r->size - r->offset || (n && fread(buf, 1, (size_t)n, r->f) != n))
        return lion_fail(st, LION_EFORMAT, "truncated record: %s needs %llu bytes, %llu left", what,
                         (unsigned long long)n, (unsigned long long)(r->size - r->offset));
    r->offset += n;
    return 0;
}

static int read_record(tap_dump_reader *r, zmq_msg_t *frames, int *n_frames, lion_status *st) {
    unsigned char buf[8];
    if (read_exact(r, buf, 4, "frame count", st) != 0) return -1;
    uint64_t count = get_le(buf, 4);
    if (count > TAP_MAX_FRAMES)
        return lion_fail(st, LION_EFORMAT, "frame count %llu is too large, at most %d", (unsigned long long)count,
                         TAP_MAX_FRAMES);
    if (count < 2)
        return lion_fail(st, LION_EFORMAT, "frame count %llu, a tap message has at least 2 (topic, envelope)",
                         (unsigned long long)count);
    for (int i = 0; i < (int)count; i++) {
        char what[48];
        snprintf(what, sizeof what, "frame %d length", i);
        if (read_exact(r, buf, 8, what, st) != 0) return -1;
        uint64_t len = get_le(buf, 8);
        /* checked against the file before allocating: a damaged length cannot ask for
         * more memory than the file has bytes */
        if (len > r->size - r->offset)
            return lion_fail(st, LION_EFORMAT, "truncated record: frame %d says %llu bytes, %llu left", i,
                             (unsigned long long)len, (unsigned long long)(r->size - r->offset));
        if (zmq_msg_init_size(&frames[i], (size_t)len) != 0)
            return lion_fail(st, LION_ENOMEM, "frame %d: cannot allocate %llu bytes", i, (unsigned long long)len);
        *n_frames = i + 1;
        snprintf(what, sizeof what, "frame %d", i);
        if (read_exact(r, zmq_msg_data(&frames[i]), len, what, st) != 0) return -1;
    }
    return 0;
}

int tap_dump_next(tap_dump_reader *r, tap_message *tm, lion_status *st) {
    memset(tm, 0, sizeof *tm);
    zmq_msg_init(&tm->topic_frame);
    if (r->offset == r->size) return 0;
    uint64_t start = r->offset;
    zmq_msg_t frames[TAP_MAX_FRAMES];
    int n = 0;
    int rc = read_record(r, frames, &n, st);
    if (rc == 0) rc = tap_message_decode(tm, frames, n, st);
    for (int i = 0; i < n; i++) zmq_msg_close(&frames[i]);
    r->record++;
    if (rc != 0) {
        tap_message_close(tm);
        return lion_fail_prefix(st, "%s: record %d (offset %llu): ", r->path, r->record, (unsigned long long)start);
    }
    return 1;
}

void tap_dump_close(tap_dump_reader *r) {
    if (r->f) fclose(r->f);
    r->f = NULL;
}

#include "file_read.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int file_read_all(const char *path, size_t max_bytes, const char *what, char **data, size_t *size, lion_status *st) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lion_fail(st, LION_EIO, "%s: cannot open: %s", path, strerror(errno));
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return lion_fail(st, LION_EIO, "%s: cannot determine the file size", path);
    }
    if ((unsigned long)n > max_bytes) {
        fclose(f);
        return lion_fail(st, LION_ETOOBIG, "%s: %ld bytes is larger than %s can be", path, n, what);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return lion_fail(st, LION_ENOMEM, "%s: out of memory reading %ld bytes", path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(buf);
        return lion_fail(st, LION_EIO, "%s: short read (%zu of %ld bytes)", path, got, n);
    }
    buf[n] = '\0';
    *data = buf;
    *size = (size_t)n;
    return 0;
}

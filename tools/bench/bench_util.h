/* bench_util.h - what every benchmark measures besides its own subject: the clock, the CPU
 * model, the memory-bandwidth floor and the compute ceiling (a streaming read and a large
 * sgemm measured in the same process, so that a figure is a ratio to what this machine does
 * right now). */
#ifndef LION_BENCH_UTIL_H
#define LION_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "args.h"
#include "status.h"

double bench_now(void);                       /* seconds, monotonic */
void *bench_alloc(const char *who, size_t n); /* 64-byte aligned; exits when out of memory */
void bench_cpu_model(char *buf, size_t len);  /* /proc/cpuinfo's model name */
void bench_sort(double *v, int n);            /* ascending */

/* Random-weight arrays for benches of true model widths (gigabytes: weight_builder's generator,
 * not rand_r). bench_random_floats: uniform in [-scale/2, scale/2], continuing *state;
 * bench_constant_floats: n copies of v. Both exit when out of memory (bench_alloc), and both
 * count what they allocate in bench_floats_bytes(). */
float *bench_random_floats(size_t n, float scale, uint64_t *state);
float *bench_constant_floats(size_t n, float v);
size_t bench_floats_bytes(void);

/* A buffer far beyond the caches, read in 16 MiB pieces in order (each piece split over the
 * threads in 1 MiB slices, each read as 4 streams side by side: one stream per core leaves
 * bandwidth unused, ~35% less here), so that every piece comes from memory. */
typedef struct stream_buffer {
    uint64_t *words;
    size_t n_pieces, next;
} stream_buffer;

void stream_init(stream_buffer *sb, size_t mb); /* first touch by the thread that reads it */
double time_stream(stream_buffer *sb, double min_s); /* GB/s over at least min_s */
void stream_free(stream_buffer *sb);

/* OpenBLAS's f32 rate on a square n x n x n product (zeros: the rate does not depend on the
 * data), on the threads OpenBLAS has now: GFLOP/s over 3 runs after one untimed. The machine's
 * f32 compute ceiling as this process sees it: a stage's rate is quoted as a fraction of it,
 * and a FLOP count divided by it is the least time that work can take here. */
double bench_sgemm_gflops(int n);

/* oneDNN's own matmul rate at x [rows, in] times W^T [out, in] on random data, in bf16 when bf16
 * is set, else f32: GFLOP/s, best of a few runs (the ceiling a stage's bf16 products are measured
 * against, in the same process). *impl (may be NULL) gets oneDNN's implementation name, or why it
 * cannot; returns 0 then. */
double bench_onednn_gflops(int rows, int in, int out, int bf16, const char **impl);

/* A bench's command line, parsed into t's struct. Returns -1 when the bench should run, else
 * its exit code: 0 after --help, 2 after a bad option (said on stderr); both print the usage,
 * from dflt (the same table over a struct holding the defaults). */
int bench_args(const char *name, const args_table *t, const args_table *dflt, int argc, char **argv);
/* ARG_CUSTOM setter of a lion_precision field (ARGS_AT): "f32" or "bf16". */
int bench_set_precision(const args_option *opt, void *base, const char *name, const char *text, lion_status *st);

#endif

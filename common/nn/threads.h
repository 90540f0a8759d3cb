/* threads.h - one place that decides how many threads a process computes with.
 *
 * GEMMs run on OpenBLAS's threads; element-wise and attention loops run on OpenMP.
 * Both get the same count. On small 2-core VMs more threads can be slower for small
 * work, so every service takes --threads N (or LION_THREADS) instead of guessing.
 *
 * OMP_WAIT_POLICY=passive matters here: with libgomp's default, OpenMP threads spin after
 * each loop and steal the cores OpenBLAS's threads need next (measured: EVA ViT-g blocks
 * ran 2.2x slower). libgomp reads it before main() runs, so it must come from the
 * environment: the deploy scripts and ctest set it, and threads_init warns when it is not. */
#ifndef LION_THREADS_H
#define LION_THREADS_H

/* n <= 0 means: LION_THREADS from the environment if set, else the number of online CPUs. */
void threads_init(int n);
int threads_count(void);
/* Applies n on the calling thread: OpenMP's count is per thread, so a compute thread that
 * did not run threads_init must set it itself. */
void threads_use_here(int n);

#endif

/* threads.h - one place that decides how many threads a process computes with.
 *
 * GEMMs run on OpenBLAS's threads; element-wise and attention loops run on OpenMP.
 * Both get the same count. On small 2-core VMs more threads can be slower for small
 * work, so every service takes --threads N (or LION_THREADS) instead of guessing. */
#ifndef LION_THREADS_H
#define LION_THREADS_H

/* n <= 0 means: LION_THREADS from the environment if set, else the number of online CPUs. */
void threads_init(int n);
int threads_count(void);

#endif

#include "threads.h"

#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

/* OpenBLAS exports this; declared here to avoid depending on which cblas.h is installed. */
void openblas_set_num_threads(int num_threads);

static int thread_count = 1;

void threads_init(int n) {
    if (n <= 0) {
        const char *env = getenv("LION_THREADS");
        n = env ? atoi(env) : 0;
    }
    if (n <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 0 ? (int)cpus : 1;
    }
    thread_count = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int threads_count(void) { return thread_count; }

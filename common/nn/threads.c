#include "threads.h"

#include <omp.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

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
    const char *policy = getenv("OMP_WAIT_POLICY");
    if (n > 1 && (!policy || (strcasecmp(policy, "passive") != 0)))
        log_warn("OMP_WAIT_POLICY is not passive: OpenMP threads will spin and slow OpenBLAS down");
}

int threads_count(void) { return thread_count; }

void threads_use_here(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

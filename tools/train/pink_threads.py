"""One BLAS thread per process unless --threads says otherwise; import before torch.

Debian's torch does its matrix products in the system OpenBLAS, whose thread pool (one thread
per core unless OPENBLAS_NUM_THREADS says otherwise) torch.set_num_threads does not reach: a
"one thread" run would use both cores of this shared machine, and its results would depend on
the thread count (OpenBLAS splits the work differently, and the last digits change). The pool
is sized when the library loads, so the scripts call limit() before importing torch; it reads
--threads N (default 1) from the command line.
"""
import os
import sys


def threads_from_argv(argv=None, default=1):
    argv = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


def limit(argv=None):
    n = str(threads_from_argv(argv))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    return int(n)

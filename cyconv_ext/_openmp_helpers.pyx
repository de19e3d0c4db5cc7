# Design: the only compiled module that talks to the OpenMP runtime directly.
# It reports whether the build has OpenMP and what the runtime's default thread
# count is; the *semantics* of a requested thread count (None, negative, 0,
# CYCONV_NUM_THREADS, affinity) live in one Python helper, cyconv._threads,
# which calls into here.  Kernels receive an already-resolved positive count.

import numpy as np

from cython.parallel cimport prange
from ._openmp cimport (
    CYCONV_OPENMP_PARALLELISM_ENABLED,
    omp_get_max_threads,
    omp_get_thread_num,
)


def openmp_enabled():
    """Return True if the extension was compiled with OpenMP support."""
    return bool(CYCONV_OPENMP_PARALLELISM_ENABLED)


def openmp_max_threads():
    """Return the OpenMP runtime's default team size (honours OMP_NUM_THREADS)."""
    return int(omp_get_max_threads())


def openmp_team_size(int n_threads):
    """Run an empty parallel region with ``n_threads`` and count the distinct
    thread ids that took part (a check that the build really runs threads).
    """
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    cdef int i
    cdef int[::1] seen = np.zeros(n_threads, dtype=np.intc)
    with nogil:
        for i in prange(n_threads, num_threads=n_threads, schedule="static", chunksize=1):
            seen[omp_get_thread_num()] = 1
    return int(sum(seen))

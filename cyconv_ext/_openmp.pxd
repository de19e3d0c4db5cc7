# OpenMP guards shared by cyconv's kernels and by compiled plugins.
#
# When the extension is built without OpenMP (no working -fopenmp found, see
# setup.py) these fall back to serial stubs, so code that cimports them keeps
# compiling and runs on one thread.  ``prange`` itself degrades to ``range``
# without OpenMP; only the runtime queries need guarding.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CYCONV_OPENMP_PARALLELISM_ENABLED 1
    #else
    #define CYCONV_OPENMP_PARALLELISM_ENABLED 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_num(void) { return 0; }
    static int omp_get_num_threads(void) { return 1; }
    static int omp_get_num_procs(void) { return 1; }
    #endif
    """
    bint CYCONV_OPENMP_PARALLELISM_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
    int omp_get_num_threads() noexcept nogil
    int omp_get_num_procs() noexcept nogil

# Global average pooling kernels for the cyconv-gap plugin.
#
# Written against cyconv's public Cython declarations, which ship in cyconv's
# wheel (cyconv_ext/*.pxd) and are found through ``cyconv.get_include()``:
#   * ``floating_t`` (float | double): one source, compiled once per dtype;
#   * ``index_t`` (Py_ssize_t) for sizes and offsets;
#   * the OpenMP guard, which falls back to serial stubs without OpenMP.
# The thread count is not decided here: the Python layer passes the positive
# count from ``cyconv.get_num_threads()`` (cyconv's one thread-count helper).

from cython.parallel cimport prange

from cyconv_ext._fused cimport floating_t, index_t
from cyconv_ext._openmp cimport CYCONV_OPENMP_PARALLELISM_ENABLED, omp_get_max_threads


def openmp_enabled():
    """True if this plugin's kernels were compiled with OpenMP."""
    return bool(CYCONV_OPENMP_PARALLELISM_ENABLED)


def openmp_max_threads():
    """The OpenMP runtime's default team size (1 without OpenMP)."""
    return int(omp_get_max_threads())


def gap_forward(const floating_t[:, ::1] x, floating_t[::1] out, int n_threads):
    """``out[i] = mean(x[i, :])`` for a (N*C, H*W) view; sums in double."""
    cdef index_t rows = x.shape[0]
    cdef index_t cols = x.shape[1]
    cdef index_t i, j
    cdef double acc
    if out.shape[0] != rows:
        raise ValueError(f"out has {out.shape[0]} rows, x has {rows}")
    if cols == 0:
        raise ValueError("global average pooling needs H*W > 0")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    with nogil:
        for i in prange(rows, num_threads=n_threads, schedule="static"):
            acc = 0.0
            for j in range(cols):
                acc = acc + x[i, j]
            out[i] = <floating_t>(acc / cols)


def gap_backward(const floating_t[::1] dout, floating_t[:, ::1] dx, int n_threads):
    """``dx[i, :] = dout[i] / (H*W)``: each input pixel gets an equal share."""
    cdef index_t rows = dx.shape[0]
    cdef index_t cols = dx.shape[1]
    cdef index_t i, j
    cdef floating_t share
    if dout.shape[0] != rows:
        raise ValueError(f"dout has {dout.shape[0]} rows, dx has {rows}")
    if cols == 0:
        raise ValueError("global average pooling needs H*W > 0")
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    with nogil:
        for i in prange(rows, num_threads=n_threads, schedule="static"):
            share = <floating_t>(<double>dout[i] / cols)
            for j in range(cols):
                dx[i, j] = share

# Design: Python access to cyconv's own GEMM (include/cyconv_gemm.h, declared
# in _cgemm.pxd), for tests and benchmarks; the conv kernels cimport it.
#
# ``gemm`` computes c = op(a) @ op(b) + beta * c in place on column-major
# (Fortran-ordered) float32/float64 arrays, 2-D or batched 3-D (one product
# per leading index, in order), exactly the header's contract; ``blas_gemm``
# does the same through scipy's BLAS (cython_blas, no GIL), the benchmark's
# baseline.  Column-major is the header's layout: a slice big[:m, :n] of a
# Fortran array is a matrix with a larger leading dimension, no copy.  All
# checks live in the Python-level code (dtypes, ndim, shapes, unit row stride,
# leading dimensions, c writable and not overlapping a or b, beta finite); the
# nogil loop only runs products.  ``repeat`` reruns them inside that loop (a
# benchmark of an 8 us product must not time Python); ``workspace_bytes`` runs
# the caller-workspace entry point, how the tests check that blocking never
# changes a bit.

import numbers

import numpy as np

cimport cython
from libc.stdlib cimport malloc, free
from scipy.linalg.cython_blas cimport sgemm, dgemm

from ._cgemm cimport *
from ._fused cimport floating_t


# BLAS takes 32-bit int dimensions.
cdef Py_ssize_t BLAS_INT_MAX = 2147483647


def variant():
    """The compiled micro-kernel: 'avx512', 'avx2', 'generic-vector' or 'generic-scalar'."""
    return cyconv_gemm_variant().decode("ascii")


def blocking(dtype):
    """The block sizes of the kernel for ``dtype``: dict with mr, nr, kc, mc, nc."""
    if np.dtype(dtype) == np.float32:
        return dict(mr=CYCONV_SGEMM_MR, nr=CYCONV_SGEMM_NR, kc=CYCONV_SGEMM_KC,
                    mc=CYCONV_SGEMM_MC, nc=CYCONV_SGEMM_NC)
    if np.dtype(dtype) == np.float64:
        return dict(mr=CYCONV_DGEMM_MR, nr=CYCONV_DGEMM_NR, kc=CYCONV_DGEMM_KC,
                    mc=CYCONV_DGEMM_MC, nc=CYCONV_DGEMM_NC)
    raise TypeError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")


def min_workspace_bytes(dtype):
    """A workspace size that serves every product of ``dtype`` (one A and one
    B micro-panel of the largest k block)."""
    blocking(dtype)
    if np.dtype(dtype) == np.float32:
        return cyconv_sgemm_min_workspace_bytes()
    return cyconv_dgemm_min_workspace_bytes()


def workspace_bytes(dtype, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k):
    """Workspace ``gemm`` allocates for an m x n x k product (full blocking)."""
    blocking(dtype)
    if np.dtype(dtype) == np.float32:
        return cyconv_sgemm_workspace_bytes(m, n, k)
    return cyconv_dgemm_workspace_bytes(m, n, k)


# The checks below are Python code indexing shapes from the end.
@cython.wraparound(True)
@cython.boundscheck(True)
def _leading_dim(x, name):
    """Elements between columns of the column-major matrices in ``x``."""
    rows, cols = x.shape[-2], x.shape[-1]
    item = x.itemsize
    if x.size == 0:      # nothing is read or written through it
        return max(1, rows)
    if rows > 1 and x.strides[-2] != item:
        raise ValueError(f"{name} must be column-major (Fortran order: unit stride along "
                         f"rows), got strides {x.strides}; pass np.asfortranarray({name})")
    if cols <= 1:
        return max(1, rows)
    ld, rest = divmod(x.strides[-1], item)
    if rest or ld < max(1, rows):
        raise ValueError(f"{name}'s column stride {x.strides[-1]} bytes must be a positive "
                         f"multiple of its itemsize, at least rows * itemsize = "
                         f"{rows * item}; pass np.asfortranarray({name})")
    return ld


def _batch_stride(x, name):
    if x.ndim == 2 or x.shape[0] <= 1:
        return 0
    stride, rest = divmod(x.strides[0], x.itemsize)
    if rest:
        raise ValueError(f"{name}'s batch stride must be a multiple of its itemsize")
    return stride


@cython.wraparound(True)
@cython.boundscheck(True)
def _operands(a, b, c, trans_a, trans_b, beta, blas):
    """Checked operands: (dtype, m, n, k, batch, (ld, batch stride) x 3, beta)."""
    for name, x in (("a", a), ("b", b), ("c", c)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype not in (np.float32, np.float64) or not x.dtype.isnative:
            raise TypeError(f"{name} must be float32 or float64 in native byte order, "
                            f"got {x.dtype}")
        if x.ndim not in (2, 3):
            raise ValueError(f"{name} must be 2-D (a matrix) or 3-D (a batch of matrices), "
                             f"got ndim={x.ndim}")
    if not (a.dtype == b.dtype == c.dtype):
        raise TypeError(f"a, b and c must have one dtype, got {a.dtype}, {b.dtype}, {c.dtype}")
    if not (a.ndim == b.ndim == c.ndim):
        raise ValueError(f"a, b and c must have the same ndim, got {a.ndim}, {b.ndim}, {c.ndim}")
    for name, flag in (("trans_a", trans_a), ("trans_b", trans_b)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if not isinstance(beta, numbers.Real) or not np.isfinite(beta):
        raise ValueError(f"beta must be a finite real number, got {beta!r}")
    batch = c.shape[0] if c.ndim == 3 else 1
    if c.ndim == 3 and not (a.shape[0] == b.shape[0] == batch):
        raise ValueError(f"a, b and c must have the same batch size, got "
                         f"{a.shape[0]}, {b.shape[0]}, {batch}")
    m, k = (a.shape[-1], a.shape[-2]) if trans_a else (a.shape[-2], a.shape[-1])
    kb, n = (b.shape[-1], b.shape[-2]) if trans_b else (b.shape[-2], b.shape[-1])
    if kb != k or c.shape[-2:] != (m, n):
        raise ValueError(f"shapes do not match: op(a) is {m}x{k}, op(b) {kb}x{n}, "
                         f"c {c.shape[-2]}x{c.shape[-1]} (want c {m}x{n})")
    if not c.flags.writeable:
        raise ValueError("c must be writable (it receives the product)")
    if np.may_share_memory(c, a) or np.may_share_memory(c, b):
        raise ValueError("c must not overlap a or b; pass a copy")
    if c.ndim == 3 and batch > 1 and c.size and np.may_share_memory(c[0], c[1:]):
        raise ValueError("c's matrices must not overlap each other (batch stride 0?)")
    lds = tuple((_leading_dim(x, name), _batch_stride(x, name))
                for name, x in (("a", a), ("b", b), ("c", c)))
    if blas and max(m, n, k, *(ld for ld, _ in lds)) > BLAS_INT_MAX:
        raise ValueError("dimensions and leading dimensions must fit a 32-bit int for BLAS")
    return a.dtype, m, n, k, batch, lds, float(beta)


cdef int _products(int kernel, char ta, char tb, Py_ssize_t batch,
                   Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                   const floating_t* a, Py_ssize_t lda, Py_ssize_t sa,
                   const floating_t* b, Py_ssize_t ldb, Py_ssize_t sb,
                   floating_t beta, floating_t* c, Py_ssize_t ldc, Py_ssize_t sc,
                   Py_ssize_t repeat, void* ws, size_t ws_bytes) noexcept nogil:
    """``repeat`` rounds of the batch's products; kernel 0: cyconv_?gemm,
    1: cyconv_?gemm_ws on ws, 2: scipy's BLAS.  Returns the OR of the
    statuses, or the first negative one."""
    cdef Py_ssize_t r, t
    cdef int status = 0, s = 0
    cdef int bm = <int>m, bn = <int>n, bk = <int>k, blda = <int>lda, bldb = <int>ldb
    cdef int bldc = <int>ldc
    cdef floating_t one = 1
    for r in range(repeat):
        for t in range(batch):
            if kernel == 2:
                if floating_t is float:
                    sgemm(&ta, &tb, &bm, &bn, &bk, &one, <float*>a + t * sa, &blda,
                          <float*>b + t * sb, &bldb, &beta, c + t * sc, &bldc)
                else:
                    dgemm(&ta, &tb, &bm, &bn, &bk, &one, <double*>a + t * sa, &blda,
                          <double*>b + t * sb, &bldb, &beta, c + t * sc, &bldc)
                continue
            if floating_t is float:
                if kernel == 1:
                    s = cyconv_sgemm_ws(ta, tb, m, n, k, a + t * sa, lda, b + t * sb, ldb,
                                        beta, c + t * sc, ldc, ws, ws_bytes)
                else:
                    s = cyconv_sgemm(ta, tb, m, n, k, a + t * sa, lda, b + t * sb, ldb,
                                     beta, c + t * sc, ldc)
            else:
                if kernel == 1:
                    s = cyconv_dgemm_ws(ta, tb, m, n, k, a + t * sa, lda, b + t * sb, ldb,
                                        beta, c + t * sc, ldc, ws, ws_bytes)
                else:
                    s = cyconv_dgemm(ta, tb, m, n, k, a + t * sa, lda, b + t * sb, ldb,
                                     beta, c + t * sc, ldc)
            if s < 0:
                return s
            status |= s
    return status


def _run(a, b, c, trans_a, trans_b, beta, repeat, ws_size, int kernel):
    dtype, m, n, k, batch, lds, beta = _operands(a, b, c, trans_a, trans_b, beta, kernel == 2)
    if not isinstance(repeat, numbers.Integral) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, got {repeat!r}")
    cdef Py_ssize_t lda = lds[0][0], sa = lds[0][1], ldb = lds[1][0], sb = lds[1][1]
    cdef Py_ssize_t ldc = lds[2][0], sc = lds[2][1], reps = repeat
    cdef Py_ssize_t cm = m, cn = n, ck = k, cbatch = batch
    cdef double cbeta = beta
    cdef bint single = dtype == np.float32
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef size_t pa = a.ctypes.data, pb = b.ctypes.data, pc = c.ctypes.data
    cdef size_t ws_bytes = 0
    cdef void* ws = NULL
    cdef int status
    if ws_size is not None:
        if not isinstance(ws_size, numbers.Integral) or ws_size < 1:
            raise ValueError(f"workspace_bytes must be a positive integer, got {ws_size!r}")
        ws_bytes = ws_size
        ws = malloc(ws_bytes)
        if ws == NULL:
            raise MemoryError(f"cannot allocate a {ws_bytes}-byte GEMM workspace")
    try:
        with nogil:
            if single:
                status = _products(kernel, ta, tb, cbatch, cm, cn, ck, <const float*>pa, lda,
                                   sa, <const float*>pb, ldb, sb, <float>cbeta, <float*>pc, ldc,
                                   sc, reps, ws, ws_bytes)
            else:
                status = _products(kernel, ta, tb, cbatch, cm, cn, ck, <const double*>pa, lda,
                                   sa, <const double*>pb, ldb, sb, cbeta, <double*>pc, ldc, sc,
                                   reps, ws, ws_bytes)
    finally:
        free(ws)
    if status == -14:   # nothing was written
        raise ValueError(f"workspace_bytes={ws_size} is too small for this product: give at "
                         f"least min(min_workspace_bytes(dtype), workspace_bytes(dtype, m, n, "
                         f"k)) = {min(min_workspace_bytes(dtype), workspace_bytes(dtype, m, n, k))}")
    if status < 0:      # unreachable after _operands' checks: a bug if it shows
        raise ValueError(f"cyconv gemm rejected argument {-status}")
    return status


def gemm(a, b, c, trans_a=False, trans_b=False, beta=0.0, *, repeat=1, workspace_bytes=None):
    """c = op(a) @ op(b) + beta * c in place with cyconv's own kernel.

    a, b, c: column-major (Fortran-ordered, or slices of such) float32 or
    float64 arrays of one dtype, 2-D, or 3-D with a leading batch axis;
    op(x) = x.T if trans_x else x (of each matrix).  beta = 0 ignores c's
    content (NaN included).  Returns 0, or 1 if a product ran on the stack
    workspace because malloc failed (same result, slower).  ``repeat``
    repeats the products (for benchmarks); ``workspace_bytes`` runs them on
    a caller-provided workspace of that size (at least ``min_workspace_bytes``
    or ``workspace_bytes(dtype, m, n, k)``, whichever is less)."""
    return _run(a, b, c, trans_a, trans_b, beta, repeat, workspace_bytes, 0 if
                workspace_bytes is None else 1)


def blas_gemm(a, b, c, trans_a=False, trans_b=False, beta=0.0, *, repeat=1):
    """``gemm`` through scipy's BLAS (the benchmark's baseline; it uses as many
    threads as the BLAS library is set to: run it under threadpoolctl's
    ``threadpool_limits(1)`` for a single-threaded comparison)."""
    return _run(a, b, c, trans_a, trans_b, beta, repeat, None, 2)

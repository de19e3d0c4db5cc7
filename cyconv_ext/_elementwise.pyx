# Design: elementwise layer kernels (ReLU) over flat, contiguous arrays.
#
# Forward is one pass writing y and the positive mask, backward one pass
# (NumPy's spelling takes three passes and a cast; docs/performance.md).
# Semantics are the reference's exactly: y = x where x > 0, NaN stays NaN,
# everything else (-0.0 included) becomes +0.0; positive = x > 0;
# dx = dout * positive (so an inf or NaN in dout times 0 gives NaN, as NumPy).
#
# Parallelism: one ``prange`` over fixed blocks of BLOCK elements, schedule
# "static"; a block owns its slice of every output (race free), and each
# element is computed by the same code whatever the thread count: results are
# bitwise identical for any ``n_threads``.  The block loops are written
# against the fused floating_t, branch free (selects), which GCC vectorises
# without C helpers (docs/performance.md, "Type specialisation").  Workspace: none.

cimport cython
from cython.parallel cimport prange
from libc.stdint cimport uint8_t

from ._fused cimport floating_t, index_t

# Elements per parallel block: large enough to amortise the scheduling,
# small enough that two threads split a 1e5-element array evenly.
cdef enum:
    BLOCK = 16384


cdef inline void _relu_fwd_block(const floating_t* x,      # IN  (n)
                                 floating_t* y,            # OUT (n)
                                 uint8_t* positive,        # OUT (n)
                                 index_t n) noexcept nogil:
    # branch free (a select, no if): GCC vectorises it
    cdef index_t i
    cdef floating_t v
    cdef bint p
    for i in range(n):
        v = x[i]
        p = v > <floating_t>0
        positive[i] = p
        y[i] = v if (p | (v != v)) else <floating_t>0


cdef inline void _relu_bwd_block(const floating_t* dout,   # IN  (n)
                                 const uint8_t* positive,  # IN  (n)
                                 floating_t* dx,           # OUT (n)
                                 index_t n) noexcept nogil:
    cdef index_t i
    for i in range(n):
        dx[i] = dout[i] * <floating_t>positive[i]


def relu_forward(const floating_t[::1] x,      # IN  (size,)
                 floating_t[::1] y,            # OUT (size,)
                 uint8_t[::1] positive,        # OUT (size,)
                 int n_threads):
    """``y = max(x, 0)`` and ``positive = x > 0`` into caller-allocated arrays."""
    cdef index_t size = x.shape[0], nblocks = (size + BLOCK - 1) // BLOCK, blk, start
    if size == 0:
        return
    with nogil:
        for blk in prange(nblocks, schedule="static", num_threads=n_threads):
            start = blk * BLOCK
            _relu_fwd_block(&x[start], &y[start], &positive[start], min(BLOCK, size - start))


def relu_backward(const floating_t[::1] dout,  # IN  (size,)
                  const uint8_t[::1] positive, # IN  (size,)
                  floating_t[::1] dx,          # OUT (size,)
                  int n_threads):
    """``dx = dout * positive`` into a caller-allocated array."""
    cdef index_t size = dout.shape[0], nblocks = (size + BLOCK - 1) // BLOCK, blk, start
    if size == 0:
        return
    with nogil:
        for blk in prange(nblocks, schedule="static", num_threads=n_threads):
            start = blk * BLOCK
            _relu_bwd_block(&dout[start], &positive[start], &dx[start], min(BLOCK, size - start))

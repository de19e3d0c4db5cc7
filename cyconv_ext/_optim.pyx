# Design: the Adam update as one fused pass over a parameter array.
#
# The same IEEE operations in the same order and precision as the NumPy code
# of cyconv.optim.Adam (twelve passes there, one here: docs/performance.md),
# so the results are bitwise identical (the build turns off floating-point
# contraction, so no multiply-add is fused behind our back):
#
#   m += (T)(1 - b1) * (g - m)          weak Python-float scalars: in T
#   v += (T)(1 - b2) * (g*g - v)
#   p -= (T)((double)(m / (sqrt(v) + (T)eps)) * lr_t)   lr_t is a float64
#                                        NumPy scalar: product in double
#
# Parallelism: one ``prange`` over fixed blocks of BLOCK elements, schedule
# "static"; a block owns its slice of p, m and v: race free, and the result
# does not depend on the thread count.  Workspace: none.

cimport cython
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

from ._fused cimport floating_t, index_t

cdef enum:
    BLOCK = 16384


cdef inline void _adam_block(floating_t* p,              # IN/OUT (n)
                             const floating_t* g,        # IN     (n)
                             floating_t* m,              # IN/OUT (n)
                             floating_t* v,              # IN/OUT (n)
                             floating_t c1, floating_t c2, floating_t eps,
                             double lr_t, index_t n) noexcept nogil:
    cdef index_t i
    cdef floating_t gi, d, s, r
    for i in range(n):
        gi = g[i]
        d = gi - m[i]
        d = d * c1
        m[i] = m[i] + d
        s = gi * gi
        s = s - v[i]
        s = s * c2
        v[i] = v[i] + s
        if floating_t is float:
            r = sqrtf(v[i])
        else:
            r = sqrt(v[i])
        r = r + eps
        r = m[i] / r
        r = <floating_t>(<double>r * lr_t)
        p[i] = p[i] - r


def adam_update(floating_t[::1] p,                # IN/OUT (size,)
                const floating_t[::1] g,          # IN     (size,)
                floating_t[::1] m,                # IN/OUT (size,)
                floating_t[::1] v,                # IN/OUT (size,)
                double lr_t, double beta1, double beta2, double eps, int n_threads):
    """One Adam step on flat, same-dtype arrays (see the Design comment)."""
    cdef index_t size = p.shape[0], nblocks = (size + BLOCK - 1) // BLOCK, blk, start
    cdef floating_t c1 = <floating_t>(1.0 - beta1), c2 = <floating_t>(1.0 - beta2)
    cdef floating_t e = <floating_t>eps
    if size == 0:
        return
    with nogil:
        for blk in prange(nblocks, schedule="static", num_threads=n_threads):
            start = blk * BLOCK
            _adam_block(&p[start], &g[start], &m[start], &v[start], c1, c2, e, lr_t,
                        min(BLOCK, size - start))

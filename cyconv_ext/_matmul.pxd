# The single-threaded matrix product every convolution kernel calls from
# inside its OpenMP threads (one definition, cimported by each kernel module):
# cyconv's own GEMM, include/cyconv_gemm.h, whose rounding does not depend on
# how the caller blocks the rows or columns.

from ._cgemm cimport cyconv_dgemm, cyconv_sgemm

from ._fused cimport floating_t


cdef inline void gemm(char ta, char tb, int m, int n, int k,
                      const floating_t* a, int lda,           # IN
                      const floating_t* b, int ldb,           # IN
                      floating_t beta,
                      floating_t* c, int ldc) noexcept nogil: # IN/OUT
    """Column-major C = op(A) @ op(B) + beta*C (BLAS semantics, alpha = 1).
    The status needs no check: the arguments are valid by construction, and
    1 (malloc failed, ran on the stack) is the same result."""
    if floating_t is float:
        cyconv_sgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)
    else:
        cyconv_dgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)

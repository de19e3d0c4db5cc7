# The single-threaded matrix product every convolution kernel calls from
# inside its OpenMP threads (one definition, cimported by each kernel module).

from scipy.linalg.cython_blas cimport dgemm, sgemm

from ._fused cimport floating_t


cdef inline void gemm(char ta, char tb, int m, int n, int k,
                      const floating_t* a, int lda,           # IN
                      const floating_t* b, int ldb,           # IN
                      floating_t beta,
                      floating_t* c, int ldc) noexcept nogil: # IN/OUT
    """Column-major C = op(A) @ op(B) + beta*C (BLAS semantics, alpha = 1)."""
    cdef floating_t alpha = 1
    if floating_t is float:
        sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb,
              &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb,
              &beta, c, &ldc)

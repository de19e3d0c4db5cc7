# The single-threaded matrix product every convolution kernel calls from
# inside its OpenMP threads (one definition, cimported by each kernel module):
# cyconv's own GEMM, include/cyconv_gemm.h, whose rounding does not depend on
# how the caller blocks the rows or columns.

from ._cgemm cimport *

from ._fused cimport floating_t, index_t


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


# Packed operands (include/cyconv_gemm.h, "Packed operands"): a conv kernel packs
# a layer's weights once per call, or writes im2col / Winograd's V straight into
# A's panel layout, then multiplies with gemm_packed, bitwise gemm's result.
# The floating_t* argument of the size helpers only selects the dtype.

cdef inline index_t gemm_mc(const floating_t* dtype) noexcept nogil:
    """Rows of A the GEMM packs at a time (its MC: they stay in L2)."""
    if floating_t is float:
        return CYCONV_SGEMM_MC
    else:
        return CYCONV_DGEMM_MC


cdef inline index_t gemm_mr(const floating_t* dtype) noexcept nogil:
    """Rows of one packed A panel (the micro-kernel's MR)."""
    if floating_t is float:
        return CYCONV_SGEMM_MR
    else:
        return CYCONV_DGEMM_MR


cdef inline index_t packed_a_elems(const floating_t* dtype, index_t m, index_t k) noexcept nogil:
    if floating_t is float:
        return <index_t>cyconv_sgemm_packed_a_elems(m, k)
    else:
        return <index_t>cyconv_dgemm_packed_a_elems(m, k)


cdef inline index_t packed_b_elems(const floating_t* dtype, index_t k, index_t n) noexcept nogil:
    if floating_t is float:
        return <index_t>cyconv_sgemm_packed_b_elems(k, n)
    else:
        return <index_t>cyconv_dgemm_packed_b_elems(k, n)


cdef inline void pack_a(char ta, index_t m, index_t k, const floating_t* a, index_t lda,
                        floating_t* ap) noexcept nogil:
    if floating_t is float:
        cyconv_sgemm_pack_a(ta, m, k, a, lda, ap)
    else:
        cyconv_dgemm_pack_a(ta, m, k, a, lda, ap)


cdef inline void pack_b(char tb, index_t k, index_t n, const floating_t* b, index_t ldb,
                        floating_t* bp) noexcept nogil:
    if floating_t is float:
        cyconv_sgemm_pack_b(tb, k, n, b, ldb, bp)
    else:
        cyconv_dgemm_pack_b(tb, k, n, b, ldb, bp)


cdef inline void gemm_packed(index_t m, index_t n, index_t k, const floating_t* ap,
                             const floating_t* bp, floating_t beta, floating_t* c,
                             index_t ldc) noexcept nogil:
    """C = A @ B (beta 0) or C + A @ B (beta 1) from packed A and B."""
    if floating_t is float:
        cyconv_sgemm_packed(m, n, k, ap, bp, beta, c, ldc)
    else:
        cyconv_dgemm_packed(m, n, k, ap, bp, beta, c, ldc)


cdef inline void gemm_gathered(index_t n, index_t k, const floating_t* a, const index_t* off,
                               const floating_t* bp, floating_t beta, floating_t* c,
                               index_t ldc) noexcept nogil:
    """C (MR x n) = A @ B (beta 0) or C + A @ B, A's column p the MR values at
    a + off[p] (no packing), B packed: bitwise gemm_packed's result."""
    if floating_t is float:
        cyconv_sgemm_gathered(n, k, a, off, bp, beta, c, ldc)
    else:
        cyconv_dgemm_gathered(n, k, a, off, bp, beta, c, ldc)


cdef inline void gathered_product(index_t m, index_t n, index_t k, const floating_t* a,
                                  index_t lda, const index_t* off, const floating_t* bp,
                                  floating_t* c, index_t ldc, floating_t* ap) noexcept nogil:
    """C (m x n, ld ldc) = A @ B for column-major A (m x k, ld lda; off[p] = p * lda) and
    a packed B: A's whole MR-row panels read in place (gemm_gathered), a last part
    panel packed into ap (room for one panel); bitwise gemm_packed's result.  lda
    should not be a multiple of 4 KiB: a panel's rows would share L1 sets."""
    cdef floating_t* tp = NULL
    cdef index_t mr = gemm_mr(tp), r0 = 0
    while r0 + mr <= m:
        gemm_gathered(n, k, a + r0, off, bp, 0, c + r0, ldc)
        r0 = r0 + mr
    if r0 < m:
        pack_a(c'N', m - r0, k, a + r0, lda, ap)
        gemm_packed(m - r0, n, k, ap, bp, 0, c + r0, ldc)

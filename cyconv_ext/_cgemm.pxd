# Declarations of cyconv's own GEMM, include/cyconv_gemm.h (its "Design:"
# comment there), for the kernel modules that cimport it.  C = op(A) @ op(B)
# + beta*C, column-major, alpha = 1; returns 0, 1 (ran on the stack
# workspace: malloc failed, same bits) or minus an invalid argument's number.

cdef extern from "include/cyconv_gemm.h" nogil:
    int cyconv_sgemm(char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     const float* a, Py_ssize_t lda, const float* b, Py_ssize_t ldb,
                     float beta, float* c, Py_ssize_t ldc)
    int cyconv_dgemm(char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                     const double* a, Py_ssize_t lda, const double* b, Py_ssize_t ldb,
                     double beta, double* c, Py_ssize_t ldc)
    int cyconv_sgemm_ws(char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                        const float* a, Py_ssize_t lda, const float* b, Py_ssize_t ldb,
                        float beta, float* c, Py_ssize_t ldc, void* workspace, size_t ws_bytes)
    int cyconv_dgemm_ws(char transa, char transb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                        const double* a, Py_ssize_t lda, const double* b, Py_ssize_t ldb,
                        double beta, double* c, Py_ssize_t ldc, void* workspace,
                        size_t ws_bytes)
    size_t cyconv_sgemm_min_workspace_bytes()
    size_t cyconv_dgemm_min_workspace_bytes()
    size_t cyconv_sgemm_workspace_bytes(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k)
    size_t cyconv_dgemm_workspace_bytes(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k)
    const char* cyconv_gemm_variant()
    # packed operands (the header's "Packed operands")
    size_t cyconv_sgemm_packed_a_elems(Py_ssize_t m, Py_ssize_t k)
    size_t cyconv_dgemm_packed_a_elems(Py_ssize_t m, Py_ssize_t k)
    size_t cyconv_sgemm_packed_b_elems(Py_ssize_t k, Py_ssize_t n)
    size_t cyconv_dgemm_packed_b_elems(Py_ssize_t k, Py_ssize_t n)
    void cyconv_sgemm_pack_a(char transa, Py_ssize_t m, Py_ssize_t k, const float* a,
                             Py_ssize_t lda, float* ap)
    void cyconv_dgemm_pack_a(char transa, Py_ssize_t m, Py_ssize_t k, const double* a,
                             Py_ssize_t lda, double* ap)
    void cyconv_sgemm_pack_b(char transb, Py_ssize_t k, Py_ssize_t n, const float* b,
                             Py_ssize_t ldb, float* bp)
    void cyconv_dgemm_pack_b(char transb, Py_ssize_t k, Py_ssize_t n, const double* b,
                             Py_ssize_t ldb, double* bp)
    void cyconv_sgemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* ap,
                             const float* bp, float beta, float* c, Py_ssize_t ldc)
    void cyconv_dgemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* ap,
                             const double* bp, double beta, double* c, Py_ssize_t ldc)
    void cyconv_sgemm_gathered(Py_ssize_t n, Py_ssize_t k, const float* a, const Py_ssize_t* off,
                               const float* bp, float beta, float* c, Py_ssize_t ldc)
    void cyconv_dgemm_gathered(Py_ssize_t n, Py_ssize_t k, const double* a,
                               const Py_ssize_t* off, const double* bp, double beta, double* c,
                               Py_ssize_t ldc)
    enum:
        CYCONV_SGEMM_MR
        CYCONV_SGEMM_NR
        CYCONV_SGEMM_KC
        CYCONV_SGEMM_MC
        CYCONV_SGEMM_NC
        CYCONV_DGEMM_MR
        CYCONV_DGEMM_NR
        CYCONV_DGEMM_KC
        CYCONV_DGEMM_MC
        CYCONV_DGEMM_NC

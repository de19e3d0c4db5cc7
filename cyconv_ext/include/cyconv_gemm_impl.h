/* cyconv_gemm_impl.h -- the GEMM for one dtype, written once.
 *
 * Included by cyconv_gemm.h once per dtype, after it defines CG_T (float or
 * double), CG_SFX (s or d), the vector macros CG_VEC / CG_VLEN / CG_LOAD /
 * CG_STORE / CG_BCAST / CG_MADD / CG_ADD / CG_ZERO and the block sizes
 * CG_MRV / CG_NR / CG_KC / CG_MC / CG_NC, optionally the square transpose
 * CG_TRANSPOSE of CG_TB x CG_TB blocks; it undefines them at the end, so
 * there is deliberately no include guard.  See cyconv_gemm.h for the design
 * and the determinism invariants the code below keeps.
 */

#define CG_CAT_(a, b) a##b
#define CG_CAT(a, b) CG_CAT_(a, b)
#define CG_PUBLIC(name) CG_CAT(CG_CAT(cyconv_, CG_SFX), name)  /* cyconv_sgemm... */
#define CG_LOCAL(name) CG_CAT(CG_CAT(cyconv_gemm_, CG_SFX), name)
#define CG_MR (CG_MRV * CG_VLEN)
#define CG_MIN(x, y) ((x) < (y) ? (x) : (y))
#define CG_ROUND_UP(x, r) (((x) + (r) - 1) / (r) * (r))
#if defined(CG_TB) && (CG_MRV * CG_VLEN) % CG_TB != 0
#error "cyconv_gemm: MR must be a multiple of the transpose block"
#endif

/* The micro-kernel: the MR x NR tile at c (column stride ldc) becomes
 * acc (accumulate == 0) or c + acc (accumulate != 0), where
 * acc = sum_{p < kc} ap[:, p] * bp[p, :], summed in p order from +0.
 * ap: one packed A micro-panel (MR values per p), bp: one packed B
 * micro-panel (NR values per p).  The accumulators are named variables
 * (acc<j><i>: tile column j, vector i), spelled out by the CG_EACH_*
 * macros: GCC keeps a local array of vectors in memory, stored on every
 * iteration, even when all its indices are constants.
 * The half kernel (MR/2 rows, when MR/VLEN is even) serves an edge of at
 * most MR/2 rows at half the cost; every element goes through the same
 * operations in either kernel (one multiply-add per p, in order), so which
 * kernel computes it does not change a bit. */
#if CG_NR == 4
#define CG_EACH_J(X) X(0) X(1) X(2) X(3)
#elif CG_NR == 6
#define CG_EACH_J(X) X(0) X(1) X(2) X(3) X(4) X(5)
#elif CG_NR == 8
#define CG_EACH_J(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#else
#error "cyconv_gemm: CG_NR must be 4, 6 or 8"
#endif
#define CG_EACH_I_1(X, j) X(j, 0)
#define CG_EACH_I_2(X, j) X(j, 0) X(j, 1)
#define CG_EACH_I_3(X, j) X(j, 0) X(j, 1) X(j, 2)
#define CG_EACH_I_4(X, j) X(j, 0) X(j, 1) X(j, 2) X(j, 3)
#if CG_MRV < 1 || CG_MRV > 4
#error "cyconv_gemm: CG_MRV must be 1 to 4"
#endif
#define CG_K_DECLARE(j, i) CG_VEC acc##j##i = CG_ZERO();
#define CG_K_DECLARE_COLUMN(j) CG_EACH_I(CG_K_DECLARE, j)
#define CG_K_LOAD_A(j, i) CG_VEC av##i = CG_LOAD(ap_p + i * CG_VLEN);
#define CG_K_MADD(j, i) acc##j##i = CG_MADD(av##i, bj, acc##j##i);
#define CG_K_MADD_COLUMN(j) bj = CG_BCAST(bp + j); CG_EACH_I(CG_K_MADD, j)
#define CG_K_STORE(j, i) CG_STORE(c + j * ldc + i * CG_VLEN, acc##j##i);
#define CG_K_STORE_COLUMN(j) CG_EACH_I(CG_K_STORE, j)
#define CG_K_ADD(j, i) CG_STORE(c + j * ldc + i * CG_VLEN, \
                                CG_ADD(CG_LOAD(c + j * ldc + i * CG_VLEN), acc##j##i));
#define CG_K_ADD_COLUMN(j) CG_EACH_I(CG_K_ADD, j)
/* The kernel's body, for the CG_EACH_I defined where it is expanded: A's
 * column p at A_AT (a packed panel's ap, or a gathered panel's a + off[p]),
 * then A_NEXT. */
#define CG_KERNEL_BODY_A(A_AT, A_NEXT)          \
    ptrdiff_t p;                                \
    CG_EACH_J(CG_K_DECLARE_COLUMN)              \
    for (p = 0; p < kc; p++) {                  \
        CG_VEC bj;                              \
        const CG_T *ap_p = (A_AT);              \
        CG_EACH_I(CG_K_LOAD_A, _)               \
        CG_EACH_J(CG_K_MADD_COLUMN)             \
        A_NEXT;                                 \
        bp += CG_NR;                            \
    }                                           \
    if (accumulate) {                           \
        CG_EACH_J(CG_K_ADD_COLUMN)              \
    } else {                                    \
        CG_EACH_J(CG_K_STORE_COLUMN)            \
    }
#define CG_KERNEL_BODY CG_KERNEL_BODY_A(ap, ap += CG_MR)

#define CG_EACH_I(X, j) CG_CAT(CG_EACH_I_, CG_MRV)(X, j)
static inline void CG_LOCAL(_kernel)(ptrdiff_t kc, const CG_T *CYCONV_GEMM_RESTRICT ap,
                                     const CG_T *CYCONV_GEMM_RESTRICT bp, CG_T *c,
                                     ptrdiff_t ldc, int accumulate)
{
    CG_KERNEL_BODY
}

/* The same kernel on a gathered A panel: column p is the MR contiguous values at
 * a + off[p] (no packing; every operation as the packed kernel's). */
static inline void CG_LOCAL(_gathered_kernel)(ptrdiff_t kc, const CG_T *a,
                                              const ptrdiff_t *CYCONV_GEMM_RESTRICT off,
                                              const CG_T *CYCONV_GEMM_RESTRICT bp, CG_T *c,
                                              ptrdiff_t ldc, int accumulate)
{
    CG_KERNEL_BODY_A(a + off[p], (void)0)
}
#undef CG_EACH_I

#if CG_MRV % 2 == 0
#define CG_HALF_MR (CG_MR / 2)
#define CG_EACH_I(X, j) CG_CAT(CG_EACH_I_, CG_HALF_MRV)(X, j)
#if CG_MRV == 2
#define CG_HALF_MRV 1
#else
#define CG_HALF_MRV 2
#endif
static inline void CG_LOCAL(_half_kernel)(ptrdiff_t kc, const CG_T *CYCONV_GEMM_RESTRICT ap,
                                          const CG_T *CYCONV_GEMM_RESTRICT bp, CG_T *c,
                                          ptrdiff_t ldc, int accumulate)
{
    CG_KERNEL_BODY
}
#undef CG_EACH_I
#undef CG_HALF_MRV
#else
#define CG_HALF_MR 0  /* no half kernel */
#endif

#undef CG_EACH_J
#undef CG_EACH_I_1
#undef CG_EACH_I_2
#undef CG_EACH_I_3
#undef CG_EACH_I_4
#undef CG_K_DECLARE
#undef CG_K_DECLARE_COLUMN
#undef CG_K_LOAD_A
#undef CG_K_MADD
#undef CG_K_MADD_COLUMN
#undef CG_K_STORE
#undef CG_K_STORE_COLUMN
#undef CG_K_ADD
#undef CG_K_ADD_COLUMN
#undef CG_KERNEL_BODY
#undef CG_KERNEL_BODY_A

/* C's mr x nr corner (column stride ldc) = tile (column stride MR), or
 * C + tile in the same operand order as the kernel's vector add. */
static inline void CG_LOCAL(_store_tile)(const CG_T *tile, CG_T *c, ptrdiff_t ldc,
                                         int accumulate, ptrdiff_t mr, ptrdiff_t nr)
{
    ptrdiff_t i, j;
    for (j = 0; j < nr; j++) {
        CG_T *cj = c + j * ldc;
        const CG_T *tj = tile + j * CG_MR;
        if (accumulate)
            for (i = 0; i < mr; i++)
                cj[i] = cj[i] + tj[i];
        else
            for (i = 0; i < mr; i++)
                cj[i] = tj[i];
    }
}

/* k = 0: C = beta * C, i.e. zeros (beta == 0) or C unchanged. */
static inline void CG_LOCAL(_empty_k)(int accumulate, ptrdiff_t m, ptrdiff_t n, CG_T *c,
                                      ptrdiff_t ldc)
{
    ptrdiff_t i, j;
    if (!accumulate)
        for (j = 0; j < n; j++)
            for (i = 0; i < m; i++)
                c[i + j * ldc] = 0;
}

/* An edge tile (mr < MR or nr < NR valid rows / columns): a kernel into a
 * local tile, then the valid part is stored, or added to C in the same
 * operand order as the kernel's vector add. */
static inline void CG_LOCAL(_edge_kernel)(ptrdiff_t kc, const CG_T *CYCONV_GEMM_RESTRICT ap,
                                          const CG_T *CYCONV_GEMM_RESTRICT bp, CG_T *c,
                                          ptrdiff_t ldc, int accumulate, ptrdiff_t mr,
                                          ptrdiff_t nr)
{
    CG_T tile[CG_MR * CG_NR] CYCONV_GEMM_ALIGNED(CYCONV_GEMM_ALIGN);
#if CG_HALF_MR
    if (mr <= CG_HALF_MR)
        CG_LOCAL(_half_kernel)(kc, ap, bp, tile, CG_MR, 0);
    else
#endif
        CG_LOCAL(_kernel)(kc, ap, bp, tile, CG_MR, 0);
    CG_LOCAL(_store_tile)(tile, c, ldc, accumulate, mr, nr);
}

/* One tile: the full kernel straight into C, else the edge path. */
static inline void CG_LOCAL(_tile)(ptrdiff_t kc, const CG_T *CYCONV_GEMM_RESTRICT ap,
                                   const CG_T *CYCONV_GEMM_RESTRICT bp, CG_T *c,
                                   ptrdiff_t ldc, int accumulate, ptrdiff_t mr, ptrdiff_t nr)
{
    if (mr == CG_MR && nr == CG_NR)
        CG_LOCAL(_kernel)(kc, ap, bp, c, ldc, accumulate);
#if CG_HALF_MR
    else if (mr == CG_HALF_MR && nr == CG_NR)
        CG_LOCAL(_half_kernel)(kc, ap, bp, c, ldc, accumulate);
#endif
    else
        CG_LOCAL(_edge_kernel)(kc, ap, bp, c, ldc, accumulate, mr, nr);
}

/* Pack op(A)'s mc x kc block, whose element (0, 0) is at a, into
 * ceil(mc / MR) micro-panels: panel r holds rows r*MR.. as ap[p * MR + i],
 * rows past mc are zero.  trans: op(A)(i, p) = a[p + i * lda], else
 * a[i + p * lda]. */
static void CG_LOCAL(_pack_a)(int trans, ptrdiff_t mc, ptrdiff_t kc, const CG_T *a,
                              ptrdiff_t lda, CG_T *CYCONV_GEMM_RESTRICT ap)
{
    ptrdiff_t ir, i, p;
    for (ir = 0; ir < mc; ir += CG_MR, ap += CG_MR * kc) {
        ptrdiff_t mr = CG_MIN(CG_MR, mc - ir);
        if (!trans) {
            const CG_T *src = a + ir;
            if (mr == CG_MR) {
                for (p = 0; p < kc; p++)
                    for (i = 0; i < CG_MR; i++)
                        ap[p * CG_MR + i] = src[p * lda + i];
            } else {
                for (p = 0; p < kc; p++) {
                    for (i = 0; i < mr; i++)
                        ap[p * CG_MR + i] = src[p * lda + i];
                    for (; i < CG_MR; i++)
                        ap[p * CG_MR + i] = 0;
                }
            }
        } else {
            const CG_T *src = a + ir * lda;
            if (mr == CG_MR) {
                p = 0;
#ifdef CG_TB
                for (; p + CG_TB <= kc; p += CG_TB)
                    for (i = 0; i < CG_MR; i += CG_TB)
                        CG_TRANSPOSE(src + i * lda + p, lda, ap + p * CG_MR + i, CG_MR);
#endif
                for (; p < kc; p++)
                    for (i = 0; i < CG_MR; i++)
                        ap[p * CG_MR + i] = src[i * lda + p];
                continue;
            }
            for (i = 0; i < mr; i++)
                for (p = 0; p < kc; p++)
                    ap[p * CG_MR + i] = src[i * lda + p];
            for (; i < CG_MR; i++)
                for (p = 0; p < kc; p++)
                    ap[p * CG_MR + i] = 0;
        }
    }
}

/* Pack op(B)'s kc x nc block, whose element (0, 0) is at b, into
 * ceil(nc / NR) micro-panels: panel r holds columns r*NR.. as
 * bp[p * NR + j], columns past nc are zero.  trans: op(B)(p, j) =
 * b[j + p * ldb], else b[p + j * ldb]. */
static void CG_LOCAL(_pack_b)(int trans, ptrdiff_t kc, ptrdiff_t nc, const CG_T *b,
                              ptrdiff_t ldb, CG_T *CYCONV_GEMM_RESTRICT bp)
{
    ptrdiff_t jr, j, p;
    for (jr = 0; jr < nc; jr += CG_NR, bp += CG_NR * kc) {
        ptrdiff_t nr = CG_MIN(CG_NR, nc - jr);
        if (trans) {
            const CG_T *src = b + jr;
            for (p = 0; p < kc; p++) {
                for (j = 0; j < nr; j++)
                    bp[p * CG_NR + j] = src[p * ldb + j];
                for (; j < CG_NR; j++)
                    bp[p * CG_NR + j] = 0;
            }
        } else {
            const CG_T *src = b + jr * ldb;
            if (nr == CG_NR) {
                for (p = 0; p < kc; p++)
                    for (j = 0; j < CG_NR; j++)
                        bp[p * CG_NR + j] = src[j * ldb + p];
                continue;
            }
            for (j = 0; j < nr; j++)
                for (p = 0; p < kc; p++)
                    bp[p * CG_NR + j] = src[j * ldb + p];
            for (; j < CG_NR; j++)
                for (p = 0; p < kc; p++)
                    bp[p * CG_NR + j] = 0;
        }
    }
}

/* The k block: k cut into ceil(k / KC) near-equal blocks (576 = 288 + 288,
 * not 256 + 256 + 64), a function of k alone (and of the constant KC). */
static inline ptrdiff_t CG_LOCAL(_k_block)(ptrdiff_t k)
{
    ptrdiff_t blocks = (k + CG_KC - 1) / CG_KC;
    return blocks > 1 ? (k + blocks - 1) / blocks : k;
}

/* The blocked product on a workspace of (MC' + NC') * min(KC, k) elements
 * (mc_cap = MC', nc_cap = NC': multiples of MR and NR).  accumulate: C is
 * added to (beta = 1), else overwritten (beta = 0).  m, n, k > 0. */
static void CG_LOCAL(_blocked)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                               const CG_T *a, ptrdiff_t lda, const CG_T *b, ptrdiff_t ldb,
                               int accumulate, CG_T *c, ptrdiff_t ldc, CG_T *workspace,
                               ptrdiff_t mc_cap, ptrdiff_t nc_cap)
{
    CG_T *b_packed = workspace;
    ptrdiff_t k_block = CG_LOCAL(_k_block)(k);
    CG_T *a_packed = workspace + nc_cap * k_block;
    ptrdiff_t jc, pc, ic, jr, ir;
    for (jc = 0; jc < n; jc += nc_cap) {
        ptrdiff_t nc = CG_MIN(nc_cap, n - jc);
        for (pc = 0; pc < k; pc += k_block) {
            ptrdiff_t kc = CG_MIN(k_block, k - pc);
            int add = accumulate || pc > 0;
            CG_LOCAL(_pack_b)(trans_b, kc, nc, trans_b ? b + jc + pc * ldb : b + pc + jc * ldb,
                              ldb, b_packed);
            for (ic = 0; ic < m; ic += mc_cap) {
                ptrdiff_t mc = CG_MIN(mc_cap, m - ic);
                CG_LOCAL(_pack_a)(trans_a, mc, kc,
                                  trans_a ? a + pc + ic * lda : a + ic + pc * lda, lda, a_packed);
                for (jr = 0; jr < nc; jr += CG_NR) {
                    ptrdiff_t nr = CG_MIN(CG_NR, nc - jr);
                    const CG_T *bp = b_packed + jr * kc;
                    for (ir = 0; ir < mc; ir += CG_MR) {
                        ptrdiff_t mr = CG_MIN(CG_MR, mc - ir);
                        CG_T *ct = c + (ic + ir) + (jc + jr) * ldc;
                        CG_LOCAL(_tile)(kc, a_packed + ir * kc, bp, ct, ldc, add, mr, nr);
                    }
                }
            }
        }
    }
}

/* ---- packed operands (see "Packed operands" in cyconv_gemm.h) ---------- */

/* Elements of a packed op(A) (m x k) and a packed op(B) (k x n). */
static inline size_t CG_PUBLIC(gemm_packed_a_elems)(ptrdiff_t m, ptrdiff_t k)
{
    return (size_t)CG_ROUND_UP(m > 0 ? m : 0, CG_MR) * (size_t)(k > 0 ? k : 0);
}

static inline size_t CG_PUBLIC(gemm_packed_b_elems)(ptrdiff_t k, ptrdiff_t n)
{
    return (size_t)CG_ROUND_UP(n > 0 ? n : 0, CG_NR) * (size_t)(k > 0 ? k : 0);
}

/* op(A) (m x k, 'N': a[i + p * lda], 'T': a[p + i * lda]) into ap, whole k:
 * panel r at ap + r * MR * k; rows past m are zero.  m, k >= 0. */
static inline void CG_PUBLIC(gemm_pack_a)(char transa, ptrdiff_t m, ptrdiff_t k, const CG_T *a,
                                          ptrdiff_t lda, CG_T *CYCONV_GEMM_RESTRICT ap)
{
    if (m > 0 && k > 0)
        CG_LOCAL(_pack_a)(transa == 'T' || transa == 't', m, k, a, lda, ap);
}

/* op(B) (k x n, 'N': b[p + j * ldb], 'T': b[j + p * ldb]) into bp, whole k:
 * panel r at bp + r * NR * k; columns past n are zero.  k, n >= 0. */
static inline void CG_PUBLIC(gemm_pack_b)(char transb, ptrdiff_t k, ptrdiff_t n, const CG_T *b,
                                          ptrdiff_t ldb, CG_T *CYCONV_GEMM_RESTRICT bp)
{
    if (n > 0 && k > 0)
        CG_LOCAL(_pack_b)(transb == 'T' || transb == 't', k, n, b, ldb, bp);
}

/* C (m x n, column-major, ldc >= m) = A @ B (beta == 0: C is never read) or
 * C + A @ B (beta != 0, meaning 1) from a packed A and a packed B: gemm's
 * k blocks and kernel, so bitwise gemm's result.  Needs no workspace. */
static inline void CG_PUBLIC(gemm_packed)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                   const CG_T *CYCONV_GEMM_RESTRICT ap,
                                   const CG_T *CYCONV_GEMM_RESTRICT bp, CG_T beta, CG_T *c,
                                   ptrdiff_t ldc)
{
    ptrdiff_t k_block, pc, ic, jr, ir;
    int accumulate = beta != 0;
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        CG_LOCAL(_empty_k)(accumulate, m, n, c, ldc);
        return;
    }
    k_block = CG_LOCAL(_k_block)(k);
    for (pc = 0; pc < k; pc += k_block) {
        ptrdiff_t kc = CG_MIN(k_block, k - pc);
        int add = accumulate || pc > 0;
        /* MC rows of A's panels stay in L2 while each B micro-panel (in L1)
           meets all of them. */
        for (ic = 0; ic < m; ic += CG_MC) {
            ptrdiff_t mend = CG_MIN(m, ic + CG_MC);
            for (jr = 0; jr < n; jr += CG_NR) {
                ptrdiff_t nr = CG_MIN(CG_NR, n - jr);
                const CG_T *bj = bp + jr * k + pc * CG_NR;
                for (ir = ic; ir < mend; ir += CG_MR)
                    CG_LOCAL(_tile)(kc, ap + ir * k + pc * CG_MR, bj, c + ir + jr * ldc, ldc,
                                    add, CG_MIN(CG_MR, m - ir), nr);
            }
        }
    }
}

/* C (MR x n, ldc >= MR) = A @ B (beta == 0) or C + A @ B for a gathered A of
 * exactly MR rows, column p the MR contiguous values at a + off[p] (the conv's
 * batch-in-lanes panel, which then needs no packing), and a packed B:
 * gemm_packed's k blocks and operations, so bitwise its result for that A. */
static inline void CG_PUBLIC(gemm_gathered)(ptrdiff_t n, ptrdiff_t k, const CG_T *a,
                                            const ptrdiff_t *CYCONV_GEMM_RESTRICT off,
                                            const CG_T *CYCONV_GEMM_RESTRICT bp, CG_T beta,
                                            CG_T *c, ptrdiff_t ldc)
{
    CG_T tile[CG_MR * CG_NR] CYCONV_GEMM_ALIGNED(CYCONV_GEMM_ALIGN);
    ptrdiff_t k_block, pc, jr;
    int accumulate = beta != 0;
    if (n <= 0)
        return;
    if (k <= 0) {
        CG_LOCAL(_empty_k)(accumulate, CG_MR, n, c, ldc);
        return;
    }
    k_block = CG_LOCAL(_k_block)(k);
    for (pc = 0; pc < k; pc += k_block) {
        ptrdiff_t kc = CG_MIN(k_block, k - pc);
        int add = accumulate || pc > 0;
        for (jr = 0; jr < n; jr += CG_NR) {
            ptrdiff_t nr = CG_MIN(CG_NR, n - jr);
            const CG_T *bj = bp + jr * k + pc * CG_NR;
            CG_T *cj = c + jr * ldc;
            if (nr == CG_NR) {
                CG_LOCAL(_gathered_kernel)(kc, a, off + pc, bj, cj, ldc, add);
                continue;
            }
            /* the edge of n: as _edge_kernel, through a local tile */
            CG_LOCAL(_gathered_kernel)(kc, a, off + pc, bj, tile, CG_MR, 0);
            CG_LOCAL(_store_tile)(tile, cj, ldc, add, CG_MR, nr);
        }
    }
}

/* Bytes of the workspace that needs no repacking beyond the blocking. */
static inline size_t CG_PUBLIC(gemm_workspace_bytes)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    size_t kc = (size_t)CG_LOCAL(_k_block)(k > 0 ? k : 1);
    size_t mc = (size_t)CG_MIN(CG_MC, CG_ROUND_UP(m > 0 ? m : 1, CG_MR));
    size_t nc = (size_t)CG_MIN(CG_NC, CG_ROUND_UP(n > 0 ? n : 1, CG_NR));
    return (mc + nc) * kc * sizeof(CG_T) + CYCONV_GEMM_ALIGN;
}

/* The smallest workspace for a product with this k: one A and one B
 * micro-panel of its k block. */
static inline size_t CG_LOCAL(_least_workspace_bytes)(ptrdiff_t k)
{
    return (size_t)(CG_MR + CG_NR) * (size_t)CG_LOCAL(_k_block)(k > 0 ? k : 1) * sizeof(CG_T)
           + CYCONV_GEMM_ALIGN;
}

/* A workspace that serves every product: one A and one B micro-panel of KC. */
static inline size_t CG_PUBLIC(gemm_min_workspace_bytes)(void)
{
    return (size_t)(CG_MR + CG_NR) * CG_KC * sizeof(CG_T) + CYCONV_GEMM_ALIGN;
}

/* 0 when the arguments are valid, else minus the first invalid one's number;
 * *trans_a / *trans_b receive the decoded transposes. */
static inline int CG_LOCAL(_check)(char transa, char transb, ptrdiff_t m, ptrdiff_t n,
                                   ptrdiff_t k, ptrdiff_t lda, ptrdiff_t ldb, ptrdiff_t ldc,
                                   int *trans_a, int *trans_b)
{
    *trans_a = (transa == 'T' || transa == 't' || transa == 'C' || transa == 'c');
    *trans_b = (transb == 'T' || transb == 't' || transb == 'C' || transb == 'c');
    if (!*trans_a && transa != 'N' && transa != 'n') return -1;
    if (!*trans_b && transb != 'N' && transb != 'n') return -2;
    if (m < 0) return -3;
    if (n < 0) return -4;
    if (k < 0) return -5;
    if (lda < ((*trans_a ? k : m) > 1 ? (*trans_a ? k : m) : 1)) return -7;
    if (ldb < ((*trans_b ? n : k) > 1 ? (*trans_b ? n : k) : 1)) return -9;
    if (ldc < (m > 1 ? m : 1)) return -12;
    return 0;
}

/* beta's part: 0 leaves C to be overwritten (never read), 1 keeps it, any
 * other value scales it once; with k = 0 that is the whole product.
 * Returns whether the product must be added to C.  m, n > 0. */
static int CG_LOCAL(_apply_beta)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, CG_T beta, CG_T *c,
                                 ptrdiff_t ldc)
{
    ptrdiff_t i, j;
    if (beta != 0 && beta != 1)
        for (j = 0; j < n; j++)
            for (i = 0; i < m; i++)
                c[i + j * ldc] = beta * c[i + j * ldc];
    if (k == 0 && beta == 0)
        for (j = 0; j < n; j++)
            for (i = 0; i < m; i++)
                c[i + j * ldc] = 0;
    return beta != 0;
}

/* The blocked product (m, n, k > 0) on ws_bytes >= the minimum at any
 * alignment, with the largest blocking that fits: B's panels first (a
 * smaller NC' repacks A, a smaller MC' repacks nothing). */
static void CG_LOCAL(_run)(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                           const CG_T *a, ptrdiff_t lda, const CG_T *b, ptrdiff_t ldb,
                           int accumulate, CG_T *c, ptrdiff_t ldc, void *workspace,
                           size_t ws_bytes)
{
    CG_T *ws = (CG_T *)(((uintptr_t)workspace + CYCONV_GEMM_ALIGN - 1)
                        & ~(uintptr_t)(CYCONV_GEMM_ALIGN - 1));
    ptrdiff_t kc = CG_LOCAL(_k_block)(k);
    ptrdiff_t per_k = (ptrdiff_t)((ws_bytes - CYCONV_GEMM_ALIGN) / sizeof(CG_T)) / kc;
    ptrdiff_t nc_cap = CG_MIN(CG_MIN(CG_NC, CG_ROUND_UP(n, CG_NR)),
                              (per_k - CG_MR) / CG_NR * CG_NR);
    ptrdiff_t mc_cap = CG_MIN(CG_MIN(CG_MC, CG_ROUND_UP(m, CG_MR)),
                              (per_k - nc_cap) / CG_MR * CG_MR);
    CG_LOCAL(_blocked)(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, ws,
                       mc_cap, nc_cap);
}

/* The product on a caller's workspace (any alignment) of ws_bytes >=
 * gemm_min_workspace_bytes() (or >= gemm_workspace_bytes(m, n, k) when that
 * is less); returns 0, or minus the number of the first invalid argument
 * (13: workspace NULL, 14: ws_bytes too small for this product). */
static inline int CG_PUBLIC(gemm_ws)(char transa, char transb, ptrdiff_t m, ptrdiff_t n,
                                     ptrdiff_t k, const CG_T *a, ptrdiff_t lda, const CG_T *b,
                                     ptrdiff_t ldb, CG_T beta, CG_T *c, ptrdiff_t ldc,
                                     void *workspace, size_t ws_bytes)
{
    int trans_a, trans_b, accumulate;
    int bad = CG_LOCAL(_check)(transa, transb, m, n, k, lda, ldb, ldc, &trans_a, &trans_b);
    if (bad) return bad;
    if (workspace == NULL) return -13;
    if (ws_bytes < CG_LOCAL(_least_workspace_bytes)(k)) return -14;
    if (m == 0 || n == 0) return 0;
    accumulate = CG_LOCAL(_apply_beta)(m, n, k, beta, c, ldc);
    if (k > 0)
        CG_LOCAL(_run)(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc,
                       workspace, ws_bytes);
    return 0;
}

/* The malloc-failure path: the minimum workspace on the stack, in a frame
 * of its own so that normal calls do not reserve it. */
static CYCONV_GEMM_NOINLINE void CG_LOCAL(_run_on_stack)(int trans_a, int trans_b, ptrdiff_t m,
                                                         ptrdiff_t n, ptrdiff_t k,
                                                         const CG_T *a, ptrdiff_t lda,
                                                         const CG_T *b, ptrdiff_t ldb,
                                                         int accumulate, CG_T *c, ptrdiff_t ldc)
{
    unsigned char workspace[(CG_MR + CG_NR) * CG_KC * sizeof(CG_T) + CYCONV_GEMM_ALIGN];
    CG_LOCAL(_run)(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, workspace,
                   sizeof(workspace));
}

/* C = op(A) @ op(B) + beta * C; 0 done, 1 done on the stack workspace
 * (malloc failed), negative: invalid argument (see cyconv_gemm.h). */
static inline int CG_PUBLIC(gemm)(char transa, char transb, ptrdiff_t m, ptrdiff_t n,
                                  ptrdiff_t k, const CG_T *a, ptrdiff_t lda, const CG_T *b,
                                  ptrdiff_t ldb, CG_T beta, CG_T *c, ptrdiff_t ldc)
{
    int trans_a, trans_b, accumulate;
    size_t bytes;
    void *workspace;
    int bad = CG_LOCAL(_check)(transa, transb, m, n, k, lda, ldb, ldc, &trans_a, &trans_b);
    if (bad) return bad;
    if (m == 0 || n == 0) return 0;
    accumulate = CG_LOCAL(_apply_beta)(m, n, k, beta, c, ldc);
    if (k == 0) return 0;
    bytes = CG_PUBLIC(gemm_workspace_bytes)(m, n, k);
    workspace = malloc(bytes);
    if (workspace == NULL) {
        CG_LOCAL(_run_on_stack)(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
        return 1;
    }
    CG_LOCAL(_run)(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, workspace,
                   bytes);
    free(workspace);
    return 0;
}

#undef CG_CAT_
#undef CG_CAT
#undef CG_PUBLIC
#undef CG_LOCAL
#undef CG_MR
#undef CG_HALF_MR
#undef CG_MIN
#undef CG_ROUND_UP
#undef CG_T
#undef CG_SFX
#undef CG_VEC
#undef CG_VLEN
#undef CG_LOAD
#undef CG_STORE
#undef CG_BCAST
#undef CG_MADD
#undef CG_ADD
#undef CG_ZERO
#undef CG_MRV
#undef CG_NR
#undef CG_KC
#undef CG_MC
#undef CG_NC
#undef CG_TB
#undef CG_TRANSPOSE

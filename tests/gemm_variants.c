/* Standalone check of cyconv_ext/include/cyconv_gemm.h for the ISA variant
 * the compiler is told to target, so that every variant can be tested on a
 * machine that runs it (tests/test_gemm.py builds and runs this for
 * -march=x86-64, x86-64-v3 and x86-64-v4, and for the plain C path with
 * -DCYCONV_GEMM_SCALAR, skipping the run where the CPU
 * lacks the instructions):
 *
 *     cc -O2 -ffp-contract=off -march=x86-64-v4 -I cyconv_ext/include \
 *        tests/gemm_variants.c -o gemm_variants && ./gemm_variants
 *
 * For float and double, every transpose pair, beta 0 and 1, and sizes
 * around the block sizes (MR, NR, KC, MC, NC +- 1, zero sizes) with
 * leading dimensions larger than the rows, it checks:
 *   accuracy    |C - C_ref| <= (k + 2) * eps * (|op(A)| |op(B)| + |beta C|)
 *               elementwise, C_ref accumulated in long double (the bound
 *               for recursive summation: each product passes at most
 *               k + 1 roundings, doubled for safety, see test_gemm.py);
 *   beta = 0    C's NaN content is never read;
 *   padding     elements of the arrays outside the matrices are untouched;
 *   determinism the first rows / columns of a product computed alone, or
 *               a block of rows starting in the middle, equal the same
 *               elements of the whole product bitwise; so does the product
 *               on the smallest workspace (cyconv_?gemm_ws), and the product of
 *               the packed operands (cyconv_?gemm_pack_a / _pack_b /
 *               _packed) and a gathered A (cyconv_?gemm_gathered).
 * Prints the variant and "ok" (exit 0), or each failure (exit 1).
 */
#include "cyconv_gemm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

static void fail(const char *what, const char *dtype, char ta, char tb, ptrdiff_t m,
                 ptrdiff_t n, ptrdiff_t k, double beta)
{
    if (failures++ < 20)
        printf("FAIL %s: %s %c%c m=%ld n=%ld k=%ld beta=%g\n", what, dtype, ta, tb, (long)m,
               (long)n, (long)k, beta);
}

/* deterministic values in [-1, 1) with a spread of magnitudes */
static double value(unsigned long *state)
{
    *state = *state * 6364136223846793005UL + 1442695040888963407UL;
    return ((double)(*state >> 11) / 9007199254740992.0) * 2.0 - 1.0;
}

#define DEFINE_CHECK(T, SFX, EPS)                                                            \
static void check_##SFX(char ta, char tb, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, T beta)    \
{                                                                                           \
    const char *dtype = #T;                                                                 \
    int trans_a = ta == 'T', trans_b = tb == 'T';                                           \
    ptrdiff_t ar = trans_a ? k : m, ac = trans_a ? m : k;   /* stored shapes */             \
    ptrdiff_t br = trans_b ? n : k, bc = trans_b ? k : n;                                   \
    ptrdiff_t lda = ar + 3, ldb = br + 2, ldc = m + 5;     /* padded leading dims */        \
    size_t na = (size_t)(lda * (ac > 0 ? ac : 1)), nb = (size_t)(ldb * (bc > 0 ? bc : 1));  \
    size_t nc = (size_t)(ldc * (n > 0 ? n : 1));                                            \
    T *a = malloc(na * sizeof(T)), *b = malloc(nb * sizeof(T));                             \
    T *c0 = malloc(nc * sizeof(T)), *c = malloc(nc * sizeof(T));                            \
    T *part = malloc(nc * sizeof(T)), *ws = NULL;                                           \
    unsigned long state = (unsigned long)(m * 1000003 + n * 1009 + k * 7 + ta + 3 * tb);    \
    ptrdiff_t i, j, p, r, s;                                                                \
    size_t q;                                                                               \
    for (q = 0; q < na; q++) a[q] = (T)value(&state);                                       \
    for (q = 0; q < nb; q++) b[q] = (T)value(&state);                                       \
    for (q = 0; q < nc; q++) c0[q] = beta == 0 ? (T)NAN : (T)value(&state);                 \
    memcpy(c, c0, nc * sizeof(T));                                                          \
    if (CG_CHECK_CALL(SFX, c, 0) != 0) fail("status", dtype, ta, tb, m, n, k, beta);        \
    for (j = 0; j < n; j++) {                                                               \
        for (i = 0; i < ldc; i++) {                                                         \
            T got = c[i + j * ldc];                                                         \
            long double ref = 0, mag = 0;                                                   \
            if (i >= m) {   /* padding rows of C: untouched (NaN == NaN bitwise) */         \
                if (memcmp(&got, &c0[i + j * ldc], sizeof(T)))                              \
                    fail("padding written", dtype, ta, tb, m, n, k, beta);                  \
                continue;                                                                   \
            }                                                                               \
            for (p = 0; p < k; p++) {                                                       \
                long double x = trans_a ? a[p + i * lda] : a[i + p * lda];                  \
                long double y = trans_b ? b[j + p * ldb] : b[p + j * ldb];                  \
                ref += x * y;                                                               \
                mag += fabsl(x * y);                                                        \
            }                                                                               \
            if (beta != 0) {                                                                \
                ref += (long double)beta * c0[i + j * ldc];                                 \
                mag += fabsl((long double)beta * c0[i + j * ldc]);                          \
            }                                                                               \
            if (!(fabsl((long double)got - ref) <= (k + 2) * (long double)EPS * mag))       \
                fail("accuracy", dtype, ta, tb, m, n, k, beta);                             \
        }                                                                                   \
    }                                                                                       \
    /* the smallest workspace: same bits */                                                 \
    ws = malloc(cyconv_##SFX##gemm_min_workspace_bytes());                                  \
    memcpy(part, c0, nc * sizeof(T));                                                       \
    if (CG_CHECK_CALL(SFX, part, ws) != 0 || memcmp(part, c, nc * sizeof(T)))               \
        fail("minimum workspace differs", dtype, ta, tb, m, n, k, beta);                    \
    /* packed operands (pack_a, pack_b, gemm_packed): same bits, padding untouched */       \
    {                                                                                       \
        T *ap = malloc((cyconv_##SFX##gemm_packed_a_elems(m, k) + 1) * sizeof(T));          \
        T *bp = malloc((cyconv_##SFX##gemm_packed_b_elems(k, n) + 1) * sizeof(T));          \
        cyconv_##SFX##gemm_pack_a(ta, m, k, a, lda, ap);                                    \
        cyconv_##SFX##gemm_pack_b(tb, k, n, b, ldb, bp);                                    \
        memcpy(part, c0, nc * sizeof(T));                                                   \
        cyconv_##SFX##gemm_packed(m, n, k, ap, bp, beta, part, ldc);                        \
        if (memcmp(part, c, nc * sizeof(T)))                                                \
            fail("packed operands differ", dtype, ta, tb, m, n, k, beta);                   \
        if (m == CG_MR_OF(SFX) && k > 0) {  /* gathered A: columns scattered by off */      \
            ptrdiff_t *off = malloc((size_t)k * sizeof(ptrdiff_t));                         \
            T *ga = malloc((size_t)(k * (m + 3)) * sizeof(T));                              \
            for (p = 0; p < k; p++) {                                                       \
                off[p] = ((p * 7) % k) * (m + 3);                                           \
                memcpy(ga + off[p], ap + p * m, (size_t)m * sizeof(T));                     \
            }                                                                               \
            if (k % 7 == 0) /* p * 7 % k would repeat: keep the plain order */              \
                for (p = 0; p < k; p++) {                                                   \
                    off[p] = p * (m + 3);                                                   \
                    memcpy(ga + off[p], ap + p * m, (size_t)m * sizeof(T));                 \
                }                                                                           \
            memcpy(part, c0, nc * sizeof(T));                                               \
            cyconv_##SFX##gemm_gathered(n, k, ga, off, bp, beta, part, ldc);                \
            if (memcmp(part, c, nc * sizeof(T)))                                            \
                fail("gathered A differs", dtype, ta, tb, m, n, k, beta);                   \
            free(off); free(ga);                                                            \
        }                                                                                   \
        free(ap); free(bp);                                                                 \
    }                                                                                       \
    /* rows [s, s + r) alone, and columns [0, r) alone: same bits */                        \
    for (s = 0; s < m; s += (m + 2) / 3) {                                                  \
        for (r = 1; s + r <= m; r = r * 2 + 1) {                                            \
            const T *as = trans_a ? a + s * lda : a + s;                                    \
            memcpy(part, c0, nc * sizeof(T));                                               \
            cyconv_##SFX##gemm(ta, tb, r, n, k, as, lda, b, ldb, beta, part + s, ldc);       \
            for (j = 0; j < n; j++)                                                         \
                if (memcmp(part + s + j * ldc, c + s + j * ldc, (size_t)r * sizeof(T)))     \
                    fail("row block differs", dtype, ta, tb, m, n, k, beta);                \
        }                                                                                   \
    }                                                                                       \
    for (r = 1; r <= n; r = r * 2 + 1) {                                                    \
        memcpy(part, c0, nc * sizeof(T));                                                   \
        cyconv_##SFX##gemm(ta, tb, m, r, k, a, lda, b, ldb, beta, part, ldc);               \
        if (memcmp(part, c, (size_t)(ldc * (r - 1) + m) * sizeof(T)))                       \
            fail("column block differs", dtype, ta, tb, m, n, k, beta);                     \
    }                                                                                       \
    free(a); free(b); free(c0); free(c); free(part); free(ws);                              \
}

/* one call on the whole product: heap workspace (ws == 0) or the minimum */
#define CG_CHECK_CALL(SFX, out, ws)                                                         \
    ((ws) ? cyconv_##SFX##gemm_ws(ta, tb, m, n, k, a, lda, b, ldb, beta, out, ldc, (ws),    \
                                  cyconv_##SFX##gemm_min_workspace_bytes())                 \
          : cyconv_##SFX##gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, out, ldc))

#define CG_MR_OF(SFX) CG_MR_OF_##SFX
#define CG_MR_OF_s CYCONV_SGEMM_MR
#define CG_MR_OF_d CYCONV_DGEMM_MR

DEFINE_CHECK(float, s, 1.1920928955078125e-07)
DEFINE_CHECK(double, d, 2.220446049250313e-16)

#define SIZES(MR, NR, KC, MC, NC)                                                           \
    { {1, 1, 1}, {(MR) - 1, (NR) - 1, (KC) - 1}, {(MR) + 1, (NR) + 1, (KC) + 1},              \
      {(MR), (NR), (KC)}, {2 * (MR) + 3, 3 * (NR) - 1, 2 * (KC) + 5}, {(MC) + 1, 7, 19},     \
      {5, (NC) + 1, 3}, {0, 4, 3}, {4, 0, 3}, {4, 3, 0}, {37, 19, 150},                     \
      {(MR), 2 * (NR) + 3, 2 * (KC) + 5}, {(MR), 3, 150} }

int main(void)
{
    static const char trans[2] = {'N', 'T'};
    const ptrdiff_t fs[][3] = SIZES(CYCONV_SGEMM_MR, CYCONV_SGEMM_NR, CYCONV_SGEMM_KC,
                                    CYCONV_SGEMM_MC, CYCONV_SGEMM_NC);
    const ptrdiff_t ds[][3] = SIZES(CYCONV_DGEMM_MR, CYCONV_DGEMM_NR, CYCONV_DGEMM_KC,
                                    CYCONV_DGEMM_MC, CYCONV_DGEMM_NC);
    size_t z;
    int x, y, beta;
    for (z = 0; z < sizeof(fs) / sizeof(fs[0]); z++)
        for (x = 0; x < 2; x++)
            for (y = 0; y < 2; y++)
                for (beta = 0; beta < 2; beta++) {
                    check_s(trans[x], trans[y], fs[z][0], fs[z][1], fs[z][2], (float)beta);
                    check_d(trans[x], trans[y], ds[z][0], ds[z][1], ds[z][2], (double)beta);
                }
    printf("%s %s\n", cyconv_gemm_variant(), failures ? "FAILED" : "ok");
    return failures != 0;
}

/* cyconv_winograd.h -- the 1-D Winograd transforms of _winograd.pyx, in C.
 *
 * Design:
 * - A transform maps the k values of every item of a run to j values (B^T, A^T
 *   and A of F(4x4, 3x3) and F(2x2, 3x3)); loops run over items, one restrict
 *   pointer per input and output row, so that the compiler vectorises across
 *   items without run-time overlap checks (GCC drops those past ten pairs).
 * - Entry points: cols (value i of item t at s[i*ss + t]), row (along one row
 *   of pixels, tiles every m; the last stage of a tile, so it also marks a
 *   non-finite tile in flag) and output row (interleaved stores straight into
 *   y, plus the bias).  With AVX-512 the B^T and A row kernels are written
 *   for 8 tiles at once with GCC vector shuffles, because the loop
 *   vectoriser leaves such rows scalar (overlapping tiles for B^T, runs of 8
 *   for both); B^T reads up to 2 elements past the row (the caller reserves
 *   them).
 * - Every output's arithmetic is the scalar definition's, operand by operand
 *   (-ffp-contract=off): vectorising changes no bit.
 * - One C-macro instantiation per dtype (cyconv_winograd_impl.h: CW_T, CW_SFX),
 *   as cyconv_gemm.h; _winograd.pyx reaches both through fused wrappers.
 */
#ifndef CYCONV_WINOGRAD_H
#define CYCONV_WINOGRAD_H

#include <stddef.h>
#include <string.h>

/* which transform: the input's (B^T), the output gradient's for dW (A), the
   output's (A^T) */
enum { CYCONV_WINO_INPUT = 0, CYCONV_WINO_GRAD = 1, CYCONV_WINO_OUTPUT = 2 };

#if defined(__GNUC__)
#define CW_RESTRICT __restrict__
/* the 8-tile row kernels stay inside the transform loops (GCC's size limit
   would otherwise call them once per row) */
#define CW_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CW_RESTRICT
#define CW_ALWAYS_INLINE inline
#endif

/* Asks the caches for `rows` rows of `bytes` bytes, `stride` bytes apart, a
   while before a transform reads them: the input planes' reads stalled on
   memory, the hardware prefetchers behind (docs/performance.md).  A hint
   only: it cannot fault and changes no value. */
static inline void cyconv_prefetch_rows(const void* p, ptrdiff_t rows, ptrdiff_t bytes,
                                        ptrdiff_t stride)
{
#if defined(__GNUC__)
    const size_t line = 64;
    for (ptrdiff_t r = 0; r < rows; r++) {
        size_t a = (size_t)p + (size_t)(r * stride);
        for (size_t q = a & ~(line - 1); q < a + (size_t)bytes; q += line)
            __builtin_prefetch((const void*)q, 0, 3);
    }
#else
    (void)p, (void)rows, (void)bytes, (void)stride;
#endif
}

/* ---- the arithmetic, once: for scalars and GCC vectors, both dtypes ------
 * (c2, c4, c5, c8: constants of the element type in the calling kernel) */

/* B^T of F(4, 3): 6 -> 6 (interpolation points 0, 1, -1, 2, -2, inf). */
#define CW_BT4(a0, a1, a2, a3, a4, a5, D0, D1, D2, D3, D4, D5) do { \
        (D0) = c4 * (a0) - c5 * (a2) + (a4);                            \
        (D1) = ((a4) + (a3)) - c4 * ((a1) + (a2));                      \
        (D2) = ((a4) - (a3)) + c4 * ((a1) - (a2));                      \
        (D3) = ((a4) - (a2)) + c2 * ((a3) - (a1));                      \
        (D4) = ((a4) - (a2)) - c2 * ((a3) - (a1));                      \
        (D5) = c4 * (a1) - c5 * (a3) + (a5);                            \
    } while (0)

/* B^T of F(2, 3): 4 -> 4 (points 0, 1, -1, inf). */
#define CW_BT2(a0, a1, a2, a3, D0, D1, D2, D3) do { \
        (D0) = (a0) - (a2);                         \
        (D1) = (a1) + (a2);                         \
        (D2) = (a2) - (a1);                         \
        (D3) = (a1) - (a3);                         \
    } while (0)

/* A^T of F(4, 3): 6 -> 4. */
#define CW_AT4(a0, a1, a2, a3, a4, a5, D0, D1, D2, D3) do {          \
        CW_T p12 = (a1) + (a2), m12 = (a1) - (a2);                    \
        CW_T p34 = (a3) + (a4), m34 = (a3) - (a4);                    \
        (D0) = (a0) + p12 + p34;                                      \
        (D1) = m12 + c2 * m34;                                        \
        (D2) = p12 + c4 * p34;                                        \
        (D3) = m12 + c8 * m34 + (a5);                                 \
    } while (0)

/* A^T of F(2, 3): 4 -> 2. */
#define CW_AT2(a0, a1, a2, a3, D0, D1) do { \
        (D0) = (a0) + (a1) + (a2);          \
        (D1) = (a1) - (a2) - (a3);          \
    } while (0)

/* A of F(4, 3) (the adjoint of A^T, for dW): 4 -> 6. */
#define CW_A4(a0, a1, a2, a3, D0, D1, D2, D3, D4, D5) do { \
        (D0) = (a0);                                       \
        (D1) = ((a0) + (a2)) + ((a1) + (a3));              \
        (D2) = ((a0) + (a2)) - ((a1) + (a3));              \
        (D3) = ((a0) + c4 * (a2)) + c2 * ((a1) + c4 * (a3)); \
        (D4) = ((a0) + c4 * (a2)) - c2 * ((a1) + c4 * (a3)); \
        (D5) = (a3);                                       \
    } while (0)

/* A of F(2, 3): 2 -> 4. */
#define CW_A2(a0, a1, D0, D1, D2, D3) do { \
        (D0) = (a0);                       \
        (D1) = (a0) + (a1);                \
        (D2) = (a0) - (a1);                \
        (D3) = -(a1);                      \
    } while (0)

/* G of F(4, 3) on one 3-vector (double): 3 -> 6; and of F(2, 3): 3 -> 4. */
#define CW_G4(a0, a1, a2, D0, D1, D2, D3, D4, D5) do {  \
        (D0) = (a0) / 4;                                 \
        (D1) = -((a0) + (a1) + (a2)) / 6;                \
        (D2) = -((a0) - (a1) + (a2)) / 6;                \
        (D3) = (a0) / 24 + (a1) / 12 + (a2) / 6;         \
        (D4) = (a0) / 24 - (a1) / 12 + (a2) / 6;         \
        (D5) = (a2);                                     \
    } while (0)
#define CW_G2(a0, a1, a2, D0, D1, D2, D3) do {  \
        (D0) = (a0);                             \
        (D1) = ((a0) + (a1) + (a2)) / 2;         \
        (D2) = ((a0) - (a1) + (a2)) / 2;         \
        (D3) = (a2);                             \
    } while (0)

/* The finiteness mark: f + d*0 over a tile's outputs (z = 0 of the type). */
#define CW_MARK4(f, r0, r1, r2, r3) ((f) + (((r0) * z + (r1) * z) + ((r2) * z + (r3) * z)))
#define CW_MARK6(f, r0, r1, r2, r3, r4, r5) \
    (CW_MARK4(f, r0, r1, r2, r3) + ((r4) * z + (r5) * z))

/* 8 lanes (GCC vectors), for the row kernels GCC's loop vectoriser leaves
   scalar, only with AVX-512: there 8 lanes of either dtype fill one register
   and a two-source shuffle is one instruction (vpermt2ps/pd).  Emulated on
   two or four registers (baseline, AVX2 f64) or with AVX2's multi-instruction
   shuffles, the 8-tile input row measured 1.4-3.4 times slower than the
   scalar loop (row-kernel microbenchmark, 9 to 14 tiles); those variants take
   the scalar loops.  Clang's shuffle builtin differs: it takes them too. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
typedef float cw_v8s __attribute__((vector_size(32)));
typedef int cw_i8s __attribute__((vector_size(32)));
typedef double cw_v8d __attribute__((vector_size(64)));
typedef long long cw_i8d __attribute__((vector_size(64)));
#define CW_HAVE_V8 1
#endif

/* The weight transform's lanes: 8 kernels per GCC vector of doubles (every
   variant: GCC splits it over narrower registers where it must, lane by lane,
   so the bits are one kernel's scalar arithmetic), or 1 without vectors. */
#if defined(__GNUC__)
typedef double cw_wv __attribute__((vector_size(64)));
#define CYCONV_WINO_WEIGHT_LANES 8
#define CW_LANE(v, l) ((v)[l])
#else
typedef double cw_wv;
#define CYCONV_WINO_WEIGHT_LANES 1
#define CW_LANE(v, l) (v)
#endif

#define CW_T float
#define CW_SFX(name) name##_s
#ifdef CW_HAVE_V8
#define CW_V8 cw_v8s
#define CW_I8 cw_i8s
#endif
#include "cyconv_winograd_impl.h"
#undef CW_T
#undef CW_SFX
#undef CW_V8
#undef CW_I8

#define CW_T double
#define CW_SFX(name) name##_d
#ifdef CW_HAVE_V8
#define CW_V8 cw_v8d
#define CW_I8 cw_i8d
#endif
#include "cyconv_winograd_impl.h"
#undef CW_T
#undef CW_SFX
#undef CW_V8
#undef CW_I8

#undef CW_BT4
#undef CW_BT2
#undef CW_AT4
#undef CW_AT2
#undef CW_A4
#undef CW_A2
#undef CW_MARK4
#undef CW_MARK6
#undef CW_G4
#undef CW_G2

#endif /* CYCONV_WINOGRAD_H */

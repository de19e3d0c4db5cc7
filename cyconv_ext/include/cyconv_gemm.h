/* cyconv_gemm.h -- cyconv's own single-threaded GEMM (float and double).
 *
 * Design:
 *
 * API.  BLAS column-major semantics, alpha = 1:
 *     C = op(A) @ op(B) + beta * C,   op(X) = X ('N') or X^T ('T'),
 * op(A) m x k, op(B) k x n, C m x n, element (i, j) of a column-major
 * matrix X at X[i + j * ldX].  cyconv_sgemm / cyconv_dgemm are drop-ins for
 * ?gemm with alpha = 1.  beta == 0 never reads C (C may hold NaN or
 * garbage); any other beta first scales C once (C = beta * C, then the
 * beta = 1 path; a scaling by 1 is skipped, it would change nothing).
 * Return value: 0 done; 1 done, but the heap workspace could not be
 * allocated, so the product ran on a stack workspace instead (slower,
 * bitwise the same result); negative: the (-r)-th argument is invalid
 * (1 transa, 2 transb, 3 m, 4 n, 5 k, 7 lda, 9 ldb, 12 ldc; alpha is not an
 * argument), and nothing was written.  cyconv_?gemm_ws runs on a caller's
 * workspace instead (any alignment; cyconv_?gemm_min_workspace_bytes()
 * serves every product, cyconv_?gemm_workspace_bytes(m, n, k) gives that
 * product its full blocking), for a caller that allocates once per thread;
 * it returns 0 or negative (13: no workspace, 14: too small).
 *
 * Structure (BLIS / GotoBLAS).  Loops jc (NC columns of C) > pc (k blocks)
 * > ic (MC rows of C) > jr (NR) > ir (MR).  op(B)'s kc x NC block is
 * packed into NR-column micro-panels (row p of a panel: NR consecutive
 * values), op(A)'s MC x kc block into MR-row micro-panels (column p: MR
 * consecutive values); panels are zero-padded at the m and n edges, never
 * in k.  The micro-kernel keeps an MR x NR tile of C in registers, MR along
 * the contiguous direction of column-major C (a tile column is MR / VLEN
 * vector loads and stores) and NR broadcasts of B per p.  A k-contiguous
 * operand (op(A) with 'T', op(B) with 'N': the conv's dW product) is packed
 * through 8x8 float / 4x4 double register transposes where AVX2 exists.
 * Packing measured better than reading A in place from the conv's im2col
 * buffers while their leading dimensions were like 1024 floats, whose 4 KiB
 * stride thrashes L1 sets; the conv forward now spaces its rows an odd number
 * of cache lines apart and reads whole panels in place (gemm_gathered).
 * Variants, chosen at compile time (the runtime CPU dispatch compiles the
 * extension once per ISA level):
 *   __AVX512F__            zmm, MR = 2 vectors (32 floats / 16 doubles),
 *                          NR = 8 (16 of 32 registers accumulate; 8 divides
 *                          the usual channel counts), FMA intrinsics;
 *   __AVX2__ && __FMA__    ymm, MR = 2 vectors (16 floats / 8 doubles),
 *                          NR = 6 (12 of 16 registers accumulate, 2 hold A,
 *                          1 the broadcast), FMA intrinsics;
 *   otherwise              GCC/Clang vector extensions (16 bytes, SSE2 on
 *                          x86-64: separate multiply and add), MR = 2
 *                          vectors, NR = 4; or plain scalar C for other
 *                          compilers.
 * All share one micro-kernel and one driver, written once in
 * cyconv_gemm_impl.h against a handful of vector macros (load, store,
 * broadcast, multiply-add, add, zero) and included once per dtype: the
 * AVX-512 path differs from the tested AVX2 one only in those macros and
 * two constants.  C macros rather than Cython's fused types, on purpose:
 * the kernel is C that Cython cannot generate (intrinsics, vector types,
 * restrict, register-named accumulators) and C has no generics, so CG_T /
 * CG_SFX instantiate it once per dtype; .pyx code reaches the two
 * instantiations through one fused wrapper (_matmul.pxd's gemm).  The
 * kernel's accumulators are named variables generated
 * by X-macros (GCC stores a local array of vectors to memory every
 * iteration).  A half-height kernel (MR / 2 rows) serves edges of at most
 * MR / 2 rows.  The project builds with -ffp-contract=off, which does not
 * touch explicit FMA intrinsics: the AVX2 / AVX-512 kernels fuse by
 * construction, the generic one never does.  Never -ffast-math.
 *
 * Determinism (the reason this file exists).  For a given variant, every
 * element of C is computed by the same sequence of floating-point
 * operations, whatever m and n, a caller's split of the product into
 * several calls along m or n, the element's position inside a tile, block
 * or panel, and the workspace size:
 *   * k is cut into ceil(k / KC) near-equal blocks (KC a compile-time
 *     constant per dtype and variant: 576 = 288 + 288, not 384 + 192), a
 *     function of k alone, never of m, n or the workspace; within a block
 *     the kernel sums p = first, ..., last in order into an accumulator
 *     that starts at +0 (one multiply-add per p), then writes C = acc
 *     (first block, beta = 0) or C = C + acc (later blocks, or beta != 0);
 *   * MC, NC, the micro-panel position, the workspace size and whether the
 *     full or the half-height kernel runs only choose which independent
 *     elements are computed together, never the operations of one element;
 *   * edge tiles (m or n not a multiple of MR / NR) run a kernel on
 *     zero-padded panels into a local tile, then the valid part is copied
 *     out, or added with the same operand order (C + acc) as the vector add
 *     of full tiles.  The padding only ever meets padding rows / columns of
 *     the tile, whose results are discarded: no element of C is ever summed
 *     with a padded zero, so the padding cannot even flip the sign of a
 *     zero (-0 + +0 = +0 would be the only way an exact zero product could
 *     change a sum), nor spread a 0 * Inf = NaN.  The +0 start of the
 *     accumulator is the same for every element (a sum of exact -0
 *     products gives +0, as in the reference BLAS loop).
 * Hence results are bitwise identical for any row or column blocking of
 * the caller and for any thread count of a caller that gives each thread
 * whole output elements.  (They differ between variants, FMA rounding once
 * and the generic kernel twice, and from OpenBLAS.)
 *
 * Reentrancy and memory.  No global mutable state.  cyconv_?gemm mallocs
 * one workspace per call, sized by the problem (at most (MC + NC) * KC
 * elements; 0.1-0.7 MiB for the conv products): simpler than a caller's workspace for a
 * drop-in, and cheap next to the product (glibc serves repeated blocks of
 * one size from its arena once the first is freed); thread stacks stay
 * small.  If malloc fails, the same driver runs on a stack workspace of
 * one A and one B micro-panel of KC (at most 72 KiB, in a frame of its own
 * so that normal calls do not reserve it): MC = MR and NC = NR repack
 * more, and by the rules above the bits are the same.  So the call never
 * fails for lack of memory; the return value 1 says that it happened.
 *
 * Packed operands.  A caller that reuses an operand over many products
 * (the conv kernels: a layer's weights, once per call) or can write it in
 * the packed layout directly (im2col into panels, Winograd's V) skips the
 * driver's packing: cyconv_?gemm_pack_a / _pack_b pack a whole op(A) / op(B)
 * (all of k), and cyconv_?gemm_packed multiplies two packed operands into C
 * with gemm's k blocks and kernel, so its result is bitwise gemm's.  A
 * packed op(A) (m x k) is ceil(m / MR) panels, panel r at ap + r * MR * k,
 * element (r * MR + i, p) at [p * MR + i]; a packed op(B) (k x n) is
 * ceil(n / NR) panels, element (p, r * NR + j) at bp + r * NR * k + p * NR + j.
 * Rows (columns) past m (n) only meet discarded results: pack_a / pack_b
 * write zeros there, a caller's own packing must write finite values (an
 * uninitialised subnormal would only cost time, never a wrong bit).
 * cyconv_?gemm_gathered takes an A of exactly MR rows whose column p is
 * the MR contiguous values at a + off[p] (the conv's batch-in-lanes panel:
 * no packing at all), with gemm_packed's k blocks and kernel operations.
 *
 * Arguments are validated like BLAS (transposes, m, n, k >= 0, leading
 * dimensions >= max(1, rows)); dimensions are ptrdiff_t, so the caller's
 * index type passes through without truncation.  m or n = 0: nothing to
 * do; k = 0: C = beta * C (beta = 0 writes zeros).
 */
#ifndef CYCONV_GEMM_H
#define CYCONV_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define CYCONV_GEMM_ALIGNED(n) __attribute__((aligned(n)))
#define CYCONV_GEMM_NOINLINE __attribute__((noinline))
#define CYCONV_GEMM_RESTRICT __restrict__
#else
#define CYCONV_GEMM_ALIGNED(n)
#define CYCONV_GEMM_NOINLINE
#define CYCONV_GEMM_RESTRICT
#endif

/* Packed panels are aligned to a cache line. */
#define CYCONV_GEMM_ALIGN 64

/* ---- per-variant vector macros and block sizes -------------------------
 * CG_VLEN_x   elements per vector        CG_MRV_x  vectors per tile column
 * CG_NR_x     tile columns (broadcasts)  CG_MR_x = CG_MRV_x * CG_VLEN_x
 * CG_KC_x     k block (fixes the rounding)
 * CG_MC_x     rows of an A block (multiple of MR)
 * CG_NC_x     columns of a B block (multiple of NR)
 */
/* CYCONV_GEMM_SCALAR (defined by hand) selects the plain C path of non-GNU
   compilers, so that its test runs with GCC too. */
#if defined(__AVX512F__) && !defined(CYCONV_GEMM_SCALAR)
#define CYCONV_GEMM_VARIANT "avx512"
#define CG_VEC_s __m512
#define CG_VLEN_s 16
#define CG_LOAD_s(p) _mm512_loadu_ps(p)
#define CG_STORE_s(p, v) _mm512_storeu_ps((p), (v))
#define CG_BCAST_s(p) _mm512_set1_ps(*(p))
#define CG_MADD_s(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define CG_ADD_s(a, b) _mm512_add_ps((a), (b))
#define CG_ZERO_s() _mm512_setzero_ps()
#define CG_VEC_d __m512d
#define CG_VLEN_d 8
#define CG_LOAD_d(p) _mm512_loadu_pd(p)
#define CG_STORE_d(p, v) _mm512_storeu_pd((p), (v))
#define CG_BCAST_d(p) _mm512_set1_pd(*(p))
#define CG_MADD_d(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#define CG_ADD_d(a, b) _mm512_add_pd((a), (b))
#define CG_ZERO_d() _mm512_setzero_pd()
/* 2 x 8 = 16 of 32 zmm registers accumulate; 8 columns divide the usual
   channel counts (16, 32, 64, 128) exactly. */
#define CG_MRV_s 2
#define CG_NR_s 8
#define CG_MRV_d 2
#define CG_NR_d 8
#elif defined(__AVX2__) && defined(__FMA__) && !defined(CYCONV_GEMM_SCALAR)
#define CYCONV_GEMM_VARIANT "avx2"
#define CG_VEC_s __m256
#define CG_VLEN_s 8
#define CG_LOAD_s(p) _mm256_loadu_ps(p)
#define CG_STORE_s(p, v) _mm256_storeu_ps((p), (v))
#define CG_BCAST_s(p) _mm256_broadcast_ss(p)
#define CG_MADD_s(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define CG_ADD_s(a, b) _mm256_add_ps((a), (b))
#define CG_ZERO_s() _mm256_setzero_ps()
#define CG_VEC_d __m256d
#define CG_VLEN_d 4
#define CG_LOAD_d(p) _mm256_loadu_pd(p)
#define CG_STORE_d(p, v) _mm256_storeu_pd((p), (v))
#define CG_BCAST_d(p) _mm256_broadcast_sd(p)
#define CG_MADD_d(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#define CG_ADD_d(a, b) _mm256_add_pd((a), (b))
#define CG_ZERO_d() _mm256_setzero_pd()
/* 2 x 6 = 12 of 16 ymm registers accumulate, 2 hold A, 1 the broadcast. */
#define CG_MRV_s 2
#define CG_NR_s 6
#define CG_MRV_d 2
#define CG_NR_d 6
#elif defined(__GNUC__) && !defined(CYCONV_GEMM_SCALAR)
#define CYCONV_GEMM_VARIANT "generic-vector"
typedef float cyconv_gemm_v4sf __attribute__((vector_size(16)));
typedef double cyconv_gemm_v2df __attribute__((vector_size(16)));
/* element-aligned twins for unaligned loads and stores */
typedef float cyconv_gemm_v4sf_u __attribute__((vector_size(16), aligned(4), may_alias));
typedef double cyconv_gemm_v2df_u __attribute__((vector_size(16), aligned(8), may_alias));
#define CG_VEC_s cyconv_gemm_v4sf
#define CG_VLEN_s 4
#define CG_LOAD_s(p) (*(const cyconv_gemm_v4sf_u *)(p))
#define CG_STORE_s(p, v) (*(cyconv_gemm_v4sf_u *)(p) = (v))
/* a brace list, not 0 + x: that would turn -0 into +0 */
#define CG_BCAST_s(p) ((cyconv_gemm_v4sf){*(p), *(p), *(p), *(p)})
#define CG_MADD_s(a, b, c) ((c) + (a) * (b))
#define CG_ADD_s(a, b) ((a) + (b))
#define CG_ZERO_s() ((cyconv_gemm_v4sf){0, 0, 0, 0})
#define CG_VEC_d cyconv_gemm_v2df
#define CG_VLEN_d 2
#define CG_LOAD_d(p) (*(const cyconv_gemm_v2df_u *)(p))
#define CG_STORE_d(p, v) (*(cyconv_gemm_v2df_u *)(p) = (v))
#define CG_BCAST_d(p) ((cyconv_gemm_v2df){*(p), *(p)})
#define CG_MADD_d(a, b, c) ((c) + (a) * (b))
#define CG_ADD_d(a, b) ((a) + (b))
#define CG_ZERO_d() ((cyconv_gemm_v2df){0, 0})
/* 2 x 4 = 8 of 16 xmm registers accumulate. */
#define CG_MRV_s 2
#define CG_NR_s 4
#define CG_MRV_d 2
#define CG_NR_d 4
#else
#define CYCONV_GEMM_VARIANT "generic-scalar"
#define CG_VEC_s float
#define CG_VLEN_s 1
#define CG_LOAD_s(p) (*(p))
#define CG_STORE_s(p, v) (*(p) = (v))
#define CG_BCAST_s(p) (*(p))
#define CG_MADD_s(a, b, c) ((c) + (a) * (b))
#define CG_ADD_s(a, b) ((a) + (b))
#define CG_ZERO_s() 0.0f
#define CG_VEC_d double
#define CG_VLEN_d 1
#define CG_LOAD_d(p) (*(p))
#define CG_STORE_d(p, v) (*(p) = (v))
#define CG_BCAST_d(p) (*(p))
#define CG_MADD_d(a, b, c) ((c) + (a) * (b))
#define CG_ADD_d(a, b) ((a) + (b))
#define CG_ZERO_d() 0.0
#define CG_MRV_s 4
#define CG_NR_s 4
#define CG_MRV_d 4
#define CG_NR_d 4
#endif

/* Square transposes for packing a row-major (k-contiguous) operand into
 * panels: dst[q * ldd + r] = src[r * lds + q] for an 8 x 8 float or 4 x 4
 * double block (AVX2 instructions, so the AVX-512 build has them too;
 * exact copies, they do not touch the arithmetic). */
#if defined(__AVX2__) && !defined(CYCONV_GEMM_SCALAR)
#define CG_TB_s 8
#define CG_TB_d 4
static inline void cyconv_gemm_transpose_s(const float *src, ptrdiff_t lds, float *dst,
                                           ptrdiff_t ldd)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    /* t: pairs of rows interleaved; s: quadruples; then 128-bit halves */
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}
static inline void cyconv_gemm_transpose_d(const double *src, ptrdiff_t lds, double *dst,
                                           ptrdiff_t ldd)
{
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds);
    __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}
#endif

#define CG_MR_s (CG_MRV_s * CG_VLEN_s)
#define CG_MR_d (CG_MRV_d * CG_VLEN_d)
/* KC: the largest k block.  k is cut into ceil(k / KC) near-equal blocks,
   a function of k alone (see Determinism): 288 and 384 stay whole (3x3
   kernels over 32 channels, 1x1 over 256), 576 becomes 2 x 288.  A B
   micro-panel (KC x NR) stays in L1 while A's micro-panels stream from L2. */
#define CG_KC_s 384
#define CG_KC_d 384
/* MC: the packed A block (MC x KC) stays in L2 next to the B block. */
#define CG_MC_s (8 * CG_MR_s)
#define CG_MC_d (8 * CG_MR_d)
/* NC: the packed B block (KC x NC). */
#define CG_NC_s (CG_NR_s * 256)
#define CG_NC_d (CG_NR_d * 256)

/* The block sizes, for tests and callers that size their own workspace. */
#define CYCONV_SGEMM_MR CG_MR_s
#define CYCONV_SGEMM_NR CG_NR_s
#define CYCONV_SGEMM_KC CG_KC_s
#define CYCONV_SGEMM_MC CG_MC_s
#define CYCONV_SGEMM_NC CG_NC_s
#define CYCONV_DGEMM_MR CG_MR_d
#define CYCONV_DGEMM_NR CG_NR_d
#define CYCONV_DGEMM_KC CG_KC_d
#define CYCONV_DGEMM_MC CG_MC_d
#define CYCONV_DGEMM_NC CG_NC_d

/* ---- the two instantiations ------------------------------------------ */
#define CG_T float
#define CG_SFX s
#define CG_VEC CG_VEC_s
#define CG_VLEN CG_VLEN_s
#define CG_LOAD CG_LOAD_s
#define CG_STORE CG_STORE_s
#define CG_BCAST CG_BCAST_s
#define CG_MADD CG_MADD_s
#define CG_ADD CG_ADD_s
#define CG_ZERO CG_ZERO_s
#define CG_MRV CG_MRV_s
#define CG_NR CG_NR_s
#define CG_KC CG_KC_s
#define CG_MC CG_MC_s
#define CG_NC CG_NC_s
#ifdef CG_TB_s
#define CG_TB CG_TB_s
#define CG_TRANSPOSE cyconv_gemm_transpose_s
#endif
#include "cyconv_gemm_impl.h"

#define CG_T double
#define CG_SFX d
#define CG_VEC CG_VEC_d
#define CG_VLEN CG_VLEN_d
#define CG_LOAD CG_LOAD_d
#define CG_STORE CG_STORE_d
#define CG_BCAST CG_BCAST_d
#define CG_MADD CG_MADD_d
#define CG_ADD CG_ADD_d
#define CG_ZERO CG_ZERO_d
#define CG_MRV CG_MRV_d
#define CG_NR CG_NR_d
#define CG_KC CG_KC_d
#define CG_MC CG_MC_d
#define CG_NC CG_NC_d
#ifdef CG_TB_d
#define CG_TB CG_TB_d
#define CG_TRANSPOSE cyconv_gemm_transpose_d
#endif
#include "cyconv_gemm_impl.h"

/* Which kernel this translation unit was compiled with. */
static inline const char *cyconv_gemm_variant(void) { return CYCONV_GEMM_VARIANT; }

#endif /* CYCONV_GEMM_H */

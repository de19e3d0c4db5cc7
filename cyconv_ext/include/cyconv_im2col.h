/* cyconv_im2col.h -- the copies of im2col and col2im (float and double).
 *
 * Design:
 * - im2col of a small image copies many short runs: a LeNet conv2 output row
 *   is 10 pixels.  GCC's vector loop needs a whole vector and leaves such runs
 *   to a scalar epilogue, one element at a time.  cyconv_copy_run does a run's
 *   tail as one masked load and one masked store where the ISA has them:
 *   AVX-512 mask registers,
 *   or AVX2 vmaskmov with a mask read from a sliding table.  Masked-out lanes
 *   are neither read nor written, so a run ending at an array's last element
 *   reads nothing past it.  Exact copies, no arithmetic: every variant gives
 *   the same bits.
 * - Stride-2 runs (a stride-2 convolution) are pairs of vector loads compressed
 *   to their even lanes (AVX-512 vpermt2ps / AVX2 shuffles), the last block's
 *   loads masked; other strides and col2im's additions stay plain C loops over
 *   restrict pointers (no alias test, so GCC vectorises what it can).
 * - im2col writes a plain K x pixels matrix that the GEMM's pack_a then copies
 *   into panels: writing the panels directly (runs cut at every MR pixels)
 *   measured slower on LeNet's conv2 (docs/performance.md).
 * - cyconv_stream_run writes a large output around the caches (non-temporal
 *   stores) when the caller asks: only the 64-byte lines wholly inside the run,
 *   head and tail plain, so that a line shared with a neighbouring run (another
 *   thread's) is never streamed.  The values are copies: same bits either way.
 *   Streamed stores are weakly ordered: the writer calls cyconv_stream_fence
 *   before its results are read (the end of each work item).
 * Included by cyconv_ext/_conv.pyx and _winograd.pyx, once per ISA variant.
 */
#ifndef CYCONV_IM2COL_H
#define CYCONV_IM2COL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define CYCONV_IM2COL_RESTRICT __restrict__
#else
#define CYCONV_IM2COL_RESTRICT
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
/* n leading all-ones lanes: load 8 (or 4) lanes starting at [8 - n] ([4 - n]) */
static const int32_t cyconv_run_mask32[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                              0, 0, 0, 0, 0, 0, 0, 0};
static const int64_t cyconv_run_mask64[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
#endif

/* d[0:n] = s[0:n] (distinct buffers) */
static inline void cyconv_copy_run_f(const float *CYCONV_IM2COL_RESTRICT s,
                                     float *CYCONV_IM2COL_RESTRICT d, ptrdiff_t n)
{
#if defined(__AVX512F__)
    for (; n >= 16; n -= 16, s += 16, d += 16)
        _mm512_storeu_ps(d, _mm512_loadu_ps(s));
    if (n > 0) {
        __mmask16 m = (__mmask16)((1u << n) - 1);
        _mm512_mask_storeu_ps(d, m, _mm512_maskz_loadu_ps(m, s));
    }
#elif defined(__AVX2__)
    for (; n >= 8; n -= 8, s += 8, d += 8)
        _mm256_storeu_ps(d, _mm256_loadu_ps(s));
    if (n > 0) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(cyconv_run_mask32 + 8 - n));
        _mm256_maskstore_ps(d, m, _mm256_maskload_ps(s, m));
    }
#else
    for (ptrdiff_t i = 0; i < n; i++)
        d[i] = s[i];
#endif
}

static inline void cyconv_copy_run_d(const double *CYCONV_IM2COL_RESTRICT s,
                                     double *CYCONV_IM2COL_RESTRICT d, ptrdiff_t n)
{
#if defined(__AVX512F__)
    for (; n >= 8; n -= 8, s += 8, d += 8)
        _mm512_storeu_pd(d, _mm512_loadu_pd(s));
    if (n > 0) {
        __mmask8 m = (__mmask8)((1u << n) - 1);
        _mm512_mask_storeu_pd(d, m, _mm512_maskz_loadu_pd(m, s));
    }
#elif defined(__AVX2__)
    for (; n >= 4; n -= 4, s += 4, d += 4)
        _mm256_storeu_pd(d, _mm256_loadu_pd(s));
    if (n > 0) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(cyconv_run_mask64 + 4 - n));
        _mm256_maskstore_pd(d, m, _mm256_maskload_pd(s, m));
    }
#else
    for (ptrdiff_t i = 0; i < n; i++)
        d[i] = s[i];
#endif
}

/* d[0:n] = s[0:2n:2] (a stride-2 convolution's run; distinct buffers): pairs of
   vectors compressed to their even lanes.  Reads only s[0 .. 2n - 2]: the last
   block's loads are masked (an exact copy: every variant gives the same bits). */
static inline void cyconv_copy_run_s2_f(const float *CYCONV_IM2COL_RESTRICT s,
                                        float *CYCONV_IM2COL_RESTRICT d, ptrdiff_t n)
{
#if defined(__AVX512F__)
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                           26, 28, 30);
    for (; n > 16; n -= 16, s += 32, d += 16)   /* s[32] is read next: s[31] exists */
        _mm512_storeu_ps(d, _mm512_permutex2var_ps(_mm512_loadu_ps(s), even,
                                                   _mm512_loadu_ps(s + 16)));
    if (n > 0) {
        ptrdiff_t used = 2 * n - 1;              /* s[0 .. used - 1] */
        __mmask16 m0 = used >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << used) - 1);
        __mmask16 m1 = used > 16 ? (__mmask16)((1u << (used - 16)) - 1) : (__mmask16)0;
        __m512 r = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, s), even,
                                          _mm512_maskz_loadu_ps(m1, s + 16));
        _mm512_mask_storeu_ps(d, (__mmask16)((1u << n) - 1), r);
    }
#elif defined(__AVX2__)
    for (; n > 8; n -= 8, s += 16, d += 8) {
        __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(s), _mm256_loadu_ps(s + 8),
                                     _MM_SHUFFLE(2, 0, 2, 0));   /* a0 a2 b0 b2 a4 a6 b4 b6 */
        _mm256_storeu_ps(d, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t),
                                                                   _MM_SHUFFLE(3, 1, 2, 0))));
    }
    for (ptrdiff_t i = 0; i < n; i++)
        d[i] = s[2 * i];
#else
    for (ptrdiff_t i = 0; i < n; i++)
        d[i] = s[2 * i];
#endif
}

static inline void cyconv_copy_run_s2_d(const double *CYCONV_IM2COL_RESTRICT s,
                                        double *CYCONV_IM2COL_RESTRICT d, ptrdiff_t n)
{
#if defined(__AVX512F__)
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    for (; n > 8; n -= 8, s += 16, d += 8)
        _mm512_storeu_pd(d, _mm512_permutex2var_pd(_mm512_loadu_pd(s), even,
                                                   _mm512_loadu_pd(s + 8)));
    if (n > 0) {
        ptrdiff_t used = 2 * n - 1;
        __mmask8 m0 = used >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << used) - 1);
        __mmask8 m1 = used > 8 ? (__mmask8)((1u << (used - 8)) - 1) : (__mmask8)0;
        __m512d r = _mm512_permutex2var_pd(_mm512_maskz_loadu_pd(m0, s), even,
                                           _mm512_maskz_loadu_pd(m1, s + 8));
        _mm512_mask_storeu_pd(d, (__mmask8)((1u << n) - 1), r);
    }
#elif defined(__AVX2__)
    for (; n > 4; n -= 4, s += 8, d += 4) {
        __m256d t = _mm256_unpacklo_pd(_mm256_loadu_pd(s), _mm256_loadu_pd(s + 4));
        _mm256_storeu_pd(d, _mm256_permute4x64_pd(t, _MM_SHUFFLE(3, 1, 2, 0)));
    }
    for (ptrdiff_t i = 0; i < n; i++)
        d[i] = s[2 * i];
#else
    for (ptrdiff_t i = 0; i < n; i++)
        d[i] = s[2 * i];
#endif
}

/* rows x n block copy: row r of dst (stride n) = src[r * src_rs + i * sw] */
#define CYCONV_COPY_ROWS(T, SFX)                                                      \
static inline void cyconv_copy_rows_##SFX(const T *CYCONV_IM2COL_RESTRICT src,        \
                                          ptrdiff_t src_rs, ptrdiff_t sw,             \
                                          T *CYCONV_IM2COL_RESTRICT dst,              \
                                          ptrdiff_t rows, ptrdiff_t n)                \
{                                                                                     \
    for (ptrdiff_t r = 0; r < rows; r++) {                                            \
        const T *CYCONV_IM2COL_RESTRICT s = src + r * src_rs;                         \
        T *CYCONV_IM2COL_RESTRICT d = dst + r * n;                                    \
        if (sw == 1) {                                                                \
            cyconv_copy_run_##SFX(s, d, n);                                           \
            continue;                                                                 \
        }                                                                             \
        if (sw == 2) {                                                                \
            cyconv_copy_run_s2_##SFX(s, d, n);                                        \
            continue;                                                                 \
        }                                                                             \
        for (ptrdiff_t i = 0; i < n; i++)                                             \
            d[i] = s[i * sw];                                                         \
    }                                                                                 \
}
CYCONV_COPY_ROWS(float, f)
CYCONV_COPY_ROWS(double, d)
#undef CYCONV_COPY_ROWS

/* the reverse for col2im: dst rows (stride dst_rs, step sw) += src rows */
#define CYCONV_ADD_ROWS(T, SFX)                                                       \
static inline void cyconv_add_rows_##SFX(const T *CYCONV_IM2COL_RESTRICT src,         \
                                         T *CYCONV_IM2COL_RESTRICT dst,               \
                                         ptrdiff_t dst_rs, ptrdiff_t sw,              \
                                         ptrdiff_t rows, ptrdiff_t n)                 \
{                                                                                     \
    for (ptrdiff_t r = 0; r < rows; r++) {                                            \
        const T *CYCONV_IM2COL_RESTRICT s = src + r * n;                              \
        T *CYCONV_IM2COL_RESTRICT d = dst + r * dst_rs;                               \
        for (ptrdiff_t i = 0; i < n; i++)                                             \
            d[i * sw] += s[i];                                                        \
    }                                                                                 \
}
CYCONV_ADD_ROWS(float, f)
CYCONV_ADD_ROWS(double, d)
#undef CYCONV_ADD_ROWS

/* one 64-byte line d[0:64/sizeof(T)] = s[...], around the caches (d line-aligned);
   P is the intrinsics' type suffix (ps, pd) */
#define CYCONV_STREAM_LINE(T, SFX, P)                                                 \
static inline void cyconv_stream_line_##SFX(const T *s, T *d)                         \
{                                                                                     \
    CYCONV_STREAM_LINE_BODY(T, P)                                                     \
}
#if defined(__AVX512F__)
#define CYCONV_STREAM_LINE_BODY(T, P) _mm512_stream_##P(d, _mm512_loadu_##P(s));
#elif defined(__AVX__)
#define CYCONV_STREAM_LINE_BODY(T, P)                                                 \
    _mm256_stream_##P(d, _mm256_loadu_##P(s));                                        \
    _mm256_stream_##P(d + 32 / sizeof(T), _mm256_loadu_##P(s + 32 / sizeof(T)));
#elif defined(__SSE2__)
#define CYCONV_STREAM_LINE_BODY(T, P)                                                 \
    for (int k = 0; k < (int)(64 / sizeof(T)); k += (int)(16 / sizeof(T)))          \
        _mm_stream_##P(d + k, _mm_loadu_##P(s + k));
#else
#define CYCONV_STREAM_LINE_BODY(T, P)                                                 \
    for (int k = 0; k < (int)(64 / sizeof(T)); k++)                                   \
        d[k] = s[k];
#endif
CYCONV_STREAM_LINE(float, f, ps)
CYCONV_STREAM_LINE(double, d, pd)
#undef CYCONV_STREAM_LINE_BODY
#undef CYCONV_STREAM_LINE

/* d[0:n] = s[0:n] (distinct buffers), the 64-byte lines wholly inside d streamed,
   head and tail plain (a d not aligned to its element size: all plain) */
#define CYCONV_STREAM_RUN(T, SFX)                                                     \
static inline void cyconv_stream_run_##SFX(const T *CYCONV_IM2COL_RESTRICT s,        \
                                           T *CYCONV_IM2COL_RESTRICT d, ptrdiff_t n)  \
{                                                                                     \
    const ptrdiff_t line = 64 / (ptrdiff_t)sizeof(T);                                 \
    ptrdiff_t head = (ptrdiff_t)(((64 - ((uintptr_t)d & 63)) & 63) / sizeof(T));      \
    if (((uintptr_t)d % sizeof(T)) != 0 || head + line > n)                           \
        head = n;                                                                     \
    for (ptrdiff_t i = 0; i < head; i++)                                              \
        d[i] = s[i];                                                                  \
    for (s += head, d += head, n -= head; n >= line; n -= line, s += line, d += line) \
        cyconv_stream_line_##SFX(s, d);                                               \
    for (ptrdiff_t i = 0; i < n; i++)                                                 \
        d[i] = s[i];                                                                  \
}
CYCONV_STREAM_RUN(float, f)
CYCONV_STREAM_RUN(double, d)
#undef CYCONV_STREAM_RUN

/* orders this thread's streamed stores before what it writes next */
static inline void cyconv_stream_fence(void)
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

#endif /* CYCONV_IM2COL_H */

/* cyconv_winograd_impl.h -- one dtype of cyconv_winograd.h (see its Design).
 * Included with CW_T (the element type), CW_SFX(name) (the suffixed name)
 * and, for GCC, CW_V8 / CW_I8 (8 lanes of CW_T / of a same-sized integer)
 * defined; no include guard on purpose.  Item runs are ptrdiff_t long. */

#define CW_R CW_RESTRICT

/* ---- kernels: one restrict pointer per row ------------------------------ */

static inline void CW_SFX(cw_bt4_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3, const CW_T* CW_R s4, const CW_T* CW_R s5,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R d4, CW_T* CW_R d5, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4, c5 = 5;
    for (ptrdiff_t t = 0; t < n; t++)
        CW_BT4(s0[t], s1[t], s2[t], s3[t], s4[t], s5[t],
               d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]);
}

#ifdef CW_V8
/* The 32 values at s split into the row's 4 phases: a_j[i] = s[4i + j] (8 tiles
   of 4 pixels), by GCC vector shuffles (a pure data movement). */
static CW_ALWAYS_INLINE void CW_SFX(cw_split4)(const CW_T* s, CW_V8* a0, CW_V8* a1, CW_V8* a2,
                                     CW_V8* a3)
{
    const CW_I8 lo = {0, 4, 8, 12, 1, 5, 9, 13}, hi = {2, 6, 10, 14, 3, 7, 11, 15};
    const CW_I8 first = {0, 1, 2, 3, 8, 9, 10, 11}, second = {4, 5, 6, 7, 12, 13, 14, 15};
    CW_V8 x[4], y0, y1, y2, y3;
    for (int i = 0; i < 4; i++)
        memcpy(&x[i], s + 8 * i, sizeof(CW_V8));
    y0 = __builtin_shuffle(x[0], x[1], lo);
    y1 = __builtin_shuffle(x[0], x[1], hi);
    y2 = __builtin_shuffle(x[2], x[3], lo);
    y3 = __builtin_shuffle(x[2], x[3], hi);
    *a0 = __builtin_shuffle(y0, y2, first);
    *a1 = __builtin_shuffle(y0, y2, second);
    *a2 = __builtin_shuffle(y1, y3, first);
    *a3 = __builtin_shuffle(y1, y3, second);
}

/* The last stage of 8 tiles t.. of a row kernel: the finiteness mark into
   flag, the 6 outputs into their rows. */
static CW_ALWAYS_INLINE void CW_SFX(cw_mark_store6)(
    ptrdiff_t t, CW_V8 r0, CW_V8 r1, CW_V8 r2, CW_V8 r3, CW_V8 r4, CW_V8 r5,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, CW_T* CW_R d4,
    CW_T* CW_R d5, CW_T* CW_R flag)
{
    const CW_T z = 0;
    CW_V8 f;
    memcpy(&f, flag + t, sizeof(CW_V8));
    f = CW_MARK6(f, r0, r1, r2, r3, r4, r5);
    memcpy(flag + t, &f, sizeof(CW_V8));
    memcpy(d0 + t, &r0, sizeof(CW_V8));
    memcpy(d1 + t, &r1, sizeof(CW_V8));
    memcpy(d2 + t, &r2, sizeof(CW_V8));
    memcpy(d3 + t, &r3, sizeof(CW_V8));
    memcpy(d4 + t, &r4, sizeof(CW_V8));
    memcpy(d5 + t, &r5, sizeof(CW_V8));
}
#endif

/* B^T along a row, tiles every 4 pixels: tile t reads s[4t .. 4t + 5].
   Overlapping tiles are a pattern the loop vectoriser takes only with a
   scalar last iteration ("peeling for gaps"), which leaves a run of 8 tiles
   (a 32-pixel row) all scalar.  With GCC the body is written for 8 tiles at
   once: four loads split into the 4 phases of the row by shuffles, four more
   from s + 4 give the next tile's first two pixels.  That reads up to 2
   elements past the row's 4n + 2 (the caller's buffer holds them; they
   only reach lanes that are thrown away). */
static CW_ALWAYS_INLINE void CW_SFX(cw_bt4_row_kernel)(
    const CW_T* CW_R s, CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R d4, CW_T* CW_R d5, CW_T* CW_R flag, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4, c5 = 5, z = 0;
    ptrdiff_t t = 0;
#ifdef CW_V8
    for (; t + 8 <= n; t += 8) {
        CW_V8 a0, a1, a2, a3, a4, a5, r0, r1, r2, r3, r4, r5;
        CW_SFX(cw_split4)(s + 4 * t, &a0, &a1, &a2, &a3);
        /* the next tile's first two pixels: phases 0 and 1 from s + 4 (the
           unused two are dead code) */
        CW_SFX(cw_split4)(s + 4 * t + 4, &a4, &a5, &r0, &r1);
        CW_BT4(a0, a1, a2, a3, a4, a5, r0, r1, r2, r3, r4, r5);
        CW_SFX(cw_mark_store6)(t, r0, r1, r2, r3, r4, r5, d0, d1, d2, d3, d4, d5, flag);
    }
#endif
    for (; t < n; t++) {
        CW_T r0, r1, r2, r3, r4, r5;
        CW_BT4(s[4 * t], s[4 * t + 1], s[4 * t + 2], s[4 * t + 3], s[4 * t + 4],
               s[4 * t + 5], r0, r1, r2, r3, r4, r5);
        flag[t] = CW_MARK6(flag[t], r0, r1, r2, r3, r4, r5);
        d0[t] = r0, d1[t] = r1, d2[t] = r2, d3[t] = r3, d4[t] = r4, d5[t] = r5;
    }
}

static inline void CW_SFX(cw_bt2_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2, const CW_T* CW_R s3,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, ptrdiff_t n)
{
    for (ptrdiff_t t = 0; t < n; t++)
        CW_BT2(s0[t], s1[t], s2[t], s3[t], d0[t], d1[t], d2[t], d3[t]);
}

/* B^T along a row, tiles every 2 pixels (small images only: left to the
   loop vectoriser). */
static inline void CW_SFX(cw_bt2_row_kernel)(
    const CW_T* CW_R s, CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R flag, ptrdiff_t n)
{
    const CW_T z = 0;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T r0, r1, r2, r3;
        CW_BT2(s[2 * t], s[2 * t + 1], s[2 * t + 2], s[2 * t + 3], r0, r1, r2, r3);
        flag[t] = CW_MARK4(flag[t], r0, r1, r2, r3);
        d0[t] = r0, d1[t] = r1, d2[t] = r2, d3[t] = r3;
    }
}

static inline void CW_SFX(cw_at4_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3, const CW_T* CW_R s4, const CW_T* CW_R s5,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4, c8 = 8;
    for (ptrdiff_t t = 0; t < n; t++)
        CW_AT4(s0[t], s1[t], s2[t], s3[t], s4[t], s5[t], d0[t], d1[t], d2[t], d3[t]);
}

/* An output row: pixel 4t + j is (A^T M A) + bias, rounded in that order
   (interleaved stores, which the loop vectoriser handles). */
static inline void CW_SFX(cw_at4_row_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3, const CW_T* CW_R s4, const CW_T* CW_R s5,
    CW_T* CW_R y, ptrdiff_t n, CW_T bias)
{
    const CW_T c2 = 2, c4 = 4, c8 = 8;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T e0, e1, e2, e3;
        CW_AT4(s0[t], s1[t], s2[t], s3[t], s4[t], s5[t], e0, e1, e2, e3);
        y[4 * t] = e0 + bias;
        y[4 * t + 1] = e1 + bias;
        y[4 * t + 2] = e2 + bias;
        y[4 * t + 3] = e3 + bias;
    }
}

static inline void CW_SFX(cw_at2_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2, const CW_T* CW_R s3,
    CW_T* CW_R d0, CW_T* CW_R d1, ptrdiff_t n)
{
    for (ptrdiff_t t = 0; t < n; t++)
        CW_AT2(s0[t], s1[t], s2[t], s3[t], d0[t], d1[t]);
}

static inline void CW_SFX(cw_at2_row_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2, const CW_T* CW_R s3,
    CW_T* CW_R y, ptrdiff_t n, CW_T bias)
{
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T e0, e1;
        CW_AT2(s0[t], s1[t], s2[t], s3[t], e0, e1);
        y[2 * t] = e0 + bias;
        y[2 * t + 1] = e1 + bias;
    }
}

static inline void CW_SFX(cw_a4_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R d4, CW_T* CW_R d5, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4;
    for (ptrdiff_t t = 0; t < n; t++)
        CW_A4(s0[t], s1[t], s2[t], s3[t], d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]);
}

static inline void CW_SFX(cw_a2_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, ptrdiff_t n)
{
    for (ptrdiff_t t = 0; t < n; t++)
        CW_A2(s0[t], s1[t], d0[t], d1[t], d2[t], d3[t]);
}

/* A along a gradient row (tiles side by side, 4 or 2 pixels each), with
   the finiteness mark of the input row kernels. */
static CW_ALWAYS_INLINE void CW_SFX(cw_a4_row_kernel)(
    const CW_T* CW_R s, CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R d4, CW_T* CW_R d5, CW_T* CW_R flag, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4, z = 0;
    ptrdiff_t t = 0;
#ifdef CW_V8
    /* 8 tiles at once, split into the row's 4 phases (the loop vectoriser
       leaves a 32-pixel row scalar here too); the tiles do not overlap, so it
       reads only the row's 4n pixels */
    for (; t + 8 <= n; t += 8) {
        CW_V8 a0, a1, a2, a3, r0, r1, r2, r3, r4, r5;
        CW_SFX(cw_split4)(s + 4 * t, &a0, &a1, &a2, &a3);
        CW_A4(a0, a1, a2, a3, r0, r1, r2, r3, r4, r5);
        CW_SFX(cw_mark_store6)(t, r0, r1, r2, r3, r4, r5, d0, d1, d2, d3, d4, d5, flag);
    }
#endif
    for (; t < n; t++) {
        CW_T r0, r1, r2, r3, r4, r5;
        CW_A4(s[4 * t], s[4 * t + 1], s[4 * t + 2], s[4 * t + 3], r0, r1, r2, r3, r4, r5);
        flag[t] = CW_MARK6(flag[t], r0, r1, r2, r3, r4, r5);
        d0[t] = r0, d1[t] = r1, d2[t] = r2, d3[t] = r3, d4[t] = r4, d5[t] = r5;
    }
}

static inline void CW_SFX(cw_a2_row_kernel)(
    const CW_T* CW_R s, CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R flag, ptrdiff_t n)
{
    const CW_T z = 0;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T r0, r1, r2, r3;
        CW_A2(s[2 * t], s[2 * t + 1], r0, r1, r2, r3);
        flag[t] = CW_MARK4(flag[t], r0, r1, r2, r3);
        d0[t] = r0, d1[t] = r1, d2[t] = r2, d3[t] = r3;
    }
}

/* ---- the weight transform ------------------------------------------------ */

/* U = G w G^T for n <= CYCONV_WINO_WEIGHT_LANES kernels w9 + 9l (row-major 3x3),
   kernel l into dst[xi * ds + l], in double, each value rounded once: G down
   the kernels' columns, then along the rows of the result, one kernel per
   lane.  One division instruction serves every lane, and a row xi of U is
   stored contiguously; named locals rather than arrays of temporaries, which
   GCC had partly vectorised and reloaded wider than stored (store-forwarding
   stalls).  Returns whether every output is finite. */
static inline int CW_SFX(cyconv_wino_weights)(int m, const CW_T* w9, CW_T* dst, ptrdiff_t ds,
                                              int n)
{
    cw_wv a[9];
    int fin = 1;
    for (int r = 0; r < 9; r++)
        for (int l = 0; l < CYCONV_WINO_WEIGHT_LANES; l++)
            CW_LANE(a[r], l) = l < n ? (double)w9[9 * l + r] : 0.0;
#define CW_PUT(i, v) do {                                          \
        cw_wv v_ = (v);                                             \
        for (int l = 0; l < n; l++) {                               \
            CW_T r_ = (CW_T)CW_LANE(v_, l);                         \
            dst[(ptrdiff_t)(i) * ds + l] = r_;                      \
            fin &= (r_ - r_ == 0);                                  \
        }                                                           \
    } while (0)
    if (m == 4) {
        cw_wv g[6][3], u0, u1, u2, u3, u4, u5;
        for (int j = 0; j < 3; j++)
            CW_G4(a[j], a[3 + j], a[6 + j], g[0][j], g[1][j], g[2][j], g[3][j], g[4][j],
                  g[5][j]);
        for (int i = 0; i < 6; i++) {
            CW_G4(g[i][0], g[i][1], g[i][2], u0, u1, u2, u3, u4, u5);
            CW_PUT(6 * i, u0); CW_PUT(6 * i + 1, u1); CW_PUT(6 * i + 2, u2);
            CW_PUT(6 * i + 3, u3); CW_PUT(6 * i + 4, u4); CW_PUT(6 * i + 5, u5);
        }
    } else {
        cw_wv g[4][3], u0, u1, u2, u3;
        for (int j = 0; j < 3; j++)
            CW_G2(a[j], a[3 + j], a[6 + j], g[0][j], g[1][j], g[2][j], g[3][j]);
        for (int i = 0; i < 4; i++) {
            CW_G2(g[i][0], g[i][1], g[i][2], u0, u1, u2, u3);
            CW_PUT(4 * i, u0); CW_PUT(4 * i + 1, u1); CW_PUT(4 * i + 2, u2);
            CW_PUT(4 * i + 3, u3);
        }
    }
#undef CW_PUT
    return fin;
}

/* ---- the bias gradient's part of a patch ----------------------------------- */

/* The sum of a rows x width patch (rows `stride` apart) in double: 8 partial
   sums, lane j over columns j, j + 8, ..., then added pairwise.  The order
   depends on the patch's size only, so equal patches give equal sums. */
static inline double CW_SFX(cyconv_patch_sum)(const CW_T* s, ptrdiff_t rows, ptrdiff_t width,
                                              ptrdiff_t stride)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (ptrdiff_t r = 0; r < rows; r++) {
        const CW_T* row = s + r * stride;
        ptrdiff_t p = 0;
        for (; p + 8 <= width; p += 8)
            for (int j = 0; j < 8; j++)
                lane[j] += (double)row[p + j];
        for (int j = 0; p + j < width; j++)
            lane[j] += (double)row[p + j];
    }
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* ---- the entry points of _winograd.pyx (m = 4 or 2) ---------------------- */

/* Down columns: d[j*ds + t] = (X s_t)[j], s_t[i] = s[i*ss + t], X the
   input (B^T), gradient (A) or output (A^T) transform. */
static inline void CW_SFX(cyconv_wino_cols)(
    int kind, int m, const CW_T* s, ptrdiff_t ss, CW_T* d, ptrdiff_t ds, ptrdiff_t n)
{
    if (kind == CYCONV_WINO_INPUT && m == 4)
        CW_SFX(cw_bt4_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss,
                              d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds, d + 5 * ds, n);
    else if (kind == CYCONV_WINO_INPUT)
        CW_SFX(cw_bt2_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss,
                              d, d + ds, d + 2 * ds, d + 3 * ds, n);
    else if (kind == CYCONV_WINO_GRAD && m == 4)
        CW_SFX(cw_a4_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss,
                             d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds, d + 5 * ds, n);
    else if (kind == CYCONV_WINO_GRAD)
        CW_SFX(cw_a2_kernel)(s, s + ss, d, d + ds, d + 2 * ds, d + 3 * ds, n);
    else if (m == 4)
        CW_SFX(cw_at4_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss,
                              d, d + ds, d + 2 * ds, d + 3 * ds, n);
    else
        CW_SFX(cw_at2_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, d, d + ds, n);
}

/* Along one row of pixels into n tiles: d[j*ds + t] = (X s[m*t ...])[j];
   the input transform (B^T) reads n*m + 2 pixels (tiles overlap by 2; see
   cw_bt4_row_kernel for its reads), the gradient transform (A) n*m.  The
   last stage of a tile's transform, so it also marks the tile:
   flag[t] += d * 0 over its outputs stays 0 unless one is inf or NaN (an
   inf would spread over the whole tile in the products). */
static inline void CW_SFX(cyconv_wino_row)(
    int kind, int m, const CW_T* s, CW_T* d, ptrdiff_t ds, CW_T* flag, ptrdiff_t n)
{
    if (kind == CYCONV_WINO_INPUT && m == 4)
        CW_SFX(cw_bt4_row_kernel)(s, d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds,
                                  d + 5 * ds, flag, n);
    else if (kind == CYCONV_WINO_INPUT)
        CW_SFX(cw_bt2_row_kernel)(s, d, d + ds, d + 2 * ds, d + 3 * ds, flag, n);
    else if (m == 4)
        CW_SFX(cw_a4_row_kernel)(s, d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds,
                                 d + 5 * ds, flag, n);
    else
        CW_SFX(cw_a2_row_kernel)(s, d, d + ds, d + 2 * ds, d + 3 * ds, flag, n);
}

/* An output row: y[m*t + j] = (A^T s_t)[j] + bias for n tiles, value i of
   tile t at s[i*ss + t]. */
static inline void CW_SFX(cyconv_wino_output_row)(
    int m, const CW_T* s, ptrdiff_t ss, CW_T* y, ptrdiff_t n, CW_T bias)
{
    if (m == 4)
        CW_SFX(cw_at4_row_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss,
                                  y, n, bias);
    else
        CW_SFX(cw_at2_row_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, y, n, bias);
}

#undef CW_R

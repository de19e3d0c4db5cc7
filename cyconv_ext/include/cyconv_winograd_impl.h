/* cyconv_winograd_impl.h -- one dtype of cyconv_winograd.h (see its Design).
 * Included with CW_T (the element type) and CW_SFX(name) (the suffixed name)
 * defined; no include guard on purpose.  Item runs are ptrdiff_t long. */

#define CW_R CW_RESTRICT

/* ---- kernels: one restrict pointer per row ------------------------------ */

/* B^T of F(4, 3): 6 -> 6 (interpolation points 0, 1, -1, 2, -2, inf). */
static inline void CW_SFX(cw_bt4_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3, const CW_T* CW_R s4, const CW_T* CW_R s5,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R d4, CW_T* CW_R d5, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4, c5 = 5;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T a0 = s0[t], a1 = s1[t], a2 = s2[t], a3 = s3[t], a4 = s4[t], a5 = s5[t];
        d0[t] = c4 * a0 - c5 * a2 + a4;
        d1[t] = (a4 + a3) - c4 * (a1 + a2);
        d2[t] = (a4 - a3) + c4 * (a1 - a2);
        d3[t] = (a4 - a2) + c2 * (a3 - a1);
        d4[t] = (a4 - a2) - c2 * (a3 - a1);
        d5[t] = c4 * a1 - c5 * a3 + a5;
    }
}

/* A^T of F(4, 3): 6 -> 4. */
static inline void CW_SFX(cw_at4_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3, const CW_T* CW_R s4, const CW_T* CW_R s5,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4, c8 = 8;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T p12 = s1[t] + s2[t], m12 = s1[t] - s2[t];
        CW_T p34 = s3[t] + s4[t], m34 = s3[t] - s4[t];
        d0[t] = s0[t] + p12 + p34;
        d1[t] = m12 + c2 * m34;
        d2[t] = p12 + c4 * p34;
        d3[t] = m12 + c8 * m34 + s5[t];
    }
}

/* The output row of A^T, F(4, 3): pixel 4t + j, plus bias (the sum rounds
   after the transform, as y = (A^T M A) + b). */
static inline void CW_SFX(cw_at4_row_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3, const CW_T* CW_R s4, const CW_T* CW_R s5,
    CW_T* CW_R y, ptrdiff_t n, CW_T bias)
{
    const CW_T c2 = 2, c4 = 4, c8 = 8;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T p12 = s1[t] + s2[t], m12 = s1[t] - s2[t];
        CW_T p34 = s3[t] + s4[t], m34 = s3[t] - s4[t];
        y[4 * t] = (s0[t] + p12 + p34) + bias;
        y[4 * t + 1] = (m12 + c2 * m34) + bias;
        y[4 * t + 2] = (p12 + c4 * p34) + bias;
        y[4 * t + 3] = (m12 + c8 * m34 + s5[t]) + bias;
    }
}

/* A of F(4, 3) (the adjoint of A^T, for dW): 4 -> 6; value i of item t at
   s_i[t * st] (st = 4: the pixels of a gradient row). */
static inline void CW_SFX(cw_a4_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2,
    const CW_T* CW_R s3, ptrdiff_t st,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R d4, CW_T* CW_R d5, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T a0 = s0[t * st], a1 = s1[t * st], a2 = s2[t * st], a3 = s3[t * st];
        d0[t] = a0;
        d1[t] = (a0 + a2) + (a1 + a3);
        d2[t] = (a0 + a2) - (a1 + a3);
        d3[t] = (a0 + c4 * a2) + c2 * (a1 + c4 * a3);
        d4[t] = (a0 + c4 * a2) - c2 * (a1 + c4 * a3);
        d5[t] = a3;
    }
}

/* B^T of F(2, 3): 4 -> 4 (points 0, 1, -1, inf). */
static inline void CW_SFX(cw_bt2_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2, const CW_T* CW_R s3,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, ptrdiff_t n)
{
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T a0 = s0[t], a1 = s1[t], a2 = s2[t], a3 = s3[t];
        d0[t] = a0 - a2;
        d1[t] = a1 + a2;
        d2[t] = a2 - a1;
        d3[t] = a1 - a3;
    }
}

/* B^T along a row, tiles every 4 (or 2) pixels: the m pixels a tile starts
   with are a group of strided loads from s, its last two the first two of
   the next tile's, from sn = s + m (a second group: a load shifted by one
   element from what was just written would defeat store forwarding). */
static inline void CW_SFX(cw_bt4_row_kernel)(
    const CW_T* CW_R s, const CW_T* CW_R sn,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3,
    CW_T* CW_R d4, CW_T* CW_R d5, ptrdiff_t n)
{
    const CW_T c2 = 2, c4 = 4, c5 = 5;
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T a0 = s[4 * t], a1 = s[4 * t + 1], a2 = s[4 * t + 2], a3 = s[4 * t + 3];
        CW_T a4 = sn[4 * t], a5 = sn[4 * t + 1];
        d0[t] = c4 * a0 - c5 * a2 + a4;
        d1[t] = (a4 + a3) - c4 * (a1 + a2);
        d2[t] = (a4 - a3) + c4 * (a1 - a2);
        d3[t] = (a4 - a2) + c2 * (a3 - a1);
        d4[t] = (a4 - a2) - c2 * (a3 - a1);
        d5[t] = c4 * a1 - c5 * a3 + a5;
    }
}

static inline void CW_SFX(cw_bt2_row_kernel)(
    const CW_T* CW_R s, const CW_T* CW_R sn,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, ptrdiff_t n)
{
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T a0 = s[2 * t], a1 = s[2 * t + 1], a2 = sn[2 * t], a3 = sn[2 * t + 1];
        d0[t] = a0 - a2;
        d1[t] = a1 + a2;
        d2[t] = a2 - a1;
        d3[t] = a1 - a3;
    }
}

/* A^T of F(2, 3): 4 -> 2. */
static inline void CW_SFX(cw_at2_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2, const CW_T* CW_R s3,
    CW_T* CW_R d0, CW_T* CW_R d1, ptrdiff_t n)
{
    for (ptrdiff_t t = 0; t < n; t++) {
        d0[t] = s0[t] + s1[t] + s2[t];
        d1[t] = s1[t] - s2[t] - s3[t];
    }
}

static inline void CW_SFX(cw_at2_row_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, const CW_T* CW_R s2, const CW_T* CW_R s3,
    CW_T* CW_R y, ptrdiff_t n, CW_T bias)
{
    for (ptrdiff_t t = 0; t < n; t++) {
        y[2 * t] = (s0[t] + s1[t] + s2[t]) + bias;
        y[2 * t + 1] = (s1[t] - s2[t] - s3[t]) + bias;
    }
}

/* A of F(2, 3): 2 -> 4. */
static inline void CW_SFX(cw_a2_kernel)(
    const CW_T* CW_R s0, const CW_T* CW_R s1, ptrdiff_t st,
    CW_T* CW_R d0, CW_T* CW_R d1, CW_T* CW_R d2, CW_T* CW_R d3, ptrdiff_t n)
{
    for (ptrdiff_t t = 0; t < n; t++) {
        CW_T a0 = s0[t * st], a1 = s1[t * st];
        d0[t] = a0;
        d1[t] = a0 + a1;
        d2[t] = a0 - a1;
        d3[t] = -a1;
    }
}

/* ---- the entry points of _winograd.pyx (m = 4 or 2) ---------------------- */

/* Input transform down columns: d[j*ds + t] = (B^T s_t)[j], s_t[i] = s[i*ss + t]. */
static inline void CW_SFX(cyconv_wino_input_cols)(
    int m, const CW_T* s, ptrdiff_t ss, CW_T* d, ptrdiff_t ds, ptrdiff_t n)
{
    if (m == 4)
        CW_SFX(cw_bt4_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss,
                              d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds, d + 5 * ds, n);
    else
        CW_SFX(cw_bt2_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss,
                              d, d + ds, d + 2 * ds, d + 3 * ds, n);
}

/* Input transform along a row of n*m + 2 pixels s, tile t at pixels m*t ..
   m*t + m + 1: d[j*ds + t] = (B^T s[m*t ...])[j]. */
static inline void CW_SFX(cyconv_wino_input_row)(
    int m, const CW_T* s, CW_T* d, ptrdiff_t ds, ptrdiff_t n)
{
    if (m == 4)
        CW_SFX(cw_bt4_row_kernel)(s, s + 4, d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds,
                                  d + 5 * ds, n);
    else
        CW_SFX(cw_bt2_row_kernel)(s, s + 2, d, d + ds, d + 2 * ds, d + 3 * ds, n);
}

/* Gradient transform (A, for dW) down columns: m -> m + 2 values. */
static inline void CW_SFX(cyconv_wino_grad_cols)(
    int m, const CW_T* s, ptrdiff_t ss, CW_T* d, ptrdiff_t ds, ptrdiff_t n)
{
    if (m == 4)
        CW_SFX(cw_a4_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, 1,
                             d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds, d + 5 * ds, n);
    else
        CW_SFX(cw_a2_kernel)(s, s + ss, 1, d, d + ds, d + 2 * ds, d + 3 * ds, n);
}

/* Gradient transform along a row of n*m pixels, tile t at pixels m*t ..
   m*t + m - 1 (tiles do not overlap). */
static inline void CW_SFX(cyconv_wino_grad_row)(
    int m, const CW_T* s, CW_T* d, ptrdiff_t ds, ptrdiff_t n)
{
    if (m == 4)
        CW_SFX(cw_a4_kernel)(s, s + 1, s + 2, s + 3, 4,
                             d, d + ds, d + 2 * ds, d + 3 * ds, d + 4 * ds, d + 5 * ds, n);
    else
        CW_SFX(cw_a2_kernel)(s, s + 1, 2, d, d + ds, d + 2 * ds, d + 3 * ds, n);
}

/* Output transform down columns: m + 2 -> m values. */
static inline void CW_SFX(cyconv_wino_output_cols)(
    int m, const CW_T* s, ptrdiff_t ss, CW_T* d, ptrdiff_t ds, ptrdiff_t n)
{
    if (m == 4)
        CW_SFX(cw_at4_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, s + 4 * ss, s + 5 * ss,
                              d, d + ds, d + 2 * ds, d + 3 * ds, n);
    else
        CW_SFX(cw_at2_kernel)(s, s + ss, s + 2 * ss, s + 3 * ss, d, d + ds, n);
}

/* Output transform along a row: y[m*t + j] = (A^T s_t)[j] + bias for n
   tiles, value i of tile t at s[i*ss + t]. */
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

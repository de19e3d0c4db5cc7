# Design: max- and average-pooling kernels as direct loops over read-only tables.
#
# Invariants.  One ``prange`` over planes (n*C + c), schedule "static"; a plane
# owns its output and its dx (backward zeroes its own plane, then scatters),
# so the loops are race free and results bitwise identical for any
# ``n_threads``.  Window bounds, the interior block, tap offsets and the
# average divisor come from the wrapper (cyconv/backends/_pool_tables.py) and
# are read only; inner loops touch input elements only (no padding tests).
# Tie rule (both paths): strict '>' keeps the first maximum, a NaN replaces a
# number and nothing replaces a NaN, a window without input gives -inf / -1.
# Max pooling: the interior block goes tap by tap through branch-free select
# loops, borders scan their clipped window; 2x2 stride-2 with every window
# inside has a row kernel, and so has the interior of a 3x3 stride-2 pool (a row
# holding NaN is redone by the scan).  Those
# select loops are C (per-type macros): they need ``restrict``, which Cython
# cannot express (fused-type versions measured ~2x slower, docs/performance.md).

cimport cython
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from ._fused cimport floating_t, index_t
from ._geometry cimport make_window_geom, window_geom
from ._openmp cimport omp_get_thread_num


ctypedef struct pool_tables:
    # cyconv.backends._pool_tables.PoolWindows as pointers (read-only): per
    # output row its first input row ys and its inside taps [kylo, kyhi), the
    # same per output column (xs, kxlo, kxhi), the tap offsets, and the
    # interior block [oya, oyb) x [oxa, oxb) of outputs whose window is inside.
    const index_t* ys
    const index_t* kylo
    const index_t* kyhi
    const index_t* xs
    const index_t* kxlo
    const index_t* kxhi
    const index_t* tapoff
    index_t oya, oyb, oxa, oxb


cdef bint _is_plain_2x2_stride2(const window_geom* g) noexcept nogil:
    """The common 2x2/2 unpadded window whose every output lies inside the input:
    each pool kernel has a branch-free path for it."""
    return (g.KH == 2 and g.KW == 2 and g.SH == 2 and g.SW == 2 and g.DH == 1 and g.DW == 1
            and g.PT == 0 and g.PL == 0 and 2 * g.OH <= g.H and 2 * g.OW <= g.W)


cdef pool_tables _tables(const index_t[:, ::1] rows, const index_t[:, ::1] cols,
                         const index_t[::1] tapoff, interior, index_t OH, index_t OW):
    """The struct of ``windows`` tables for an OH x OW output (OH, OW > 0); the
    caller keeps the memoryviews alive while the pointers are used."""
    if rows.shape[0] != 3 or rows.shape[1] != OH or cols.shape[0] != 3 or cols.shape[1] != OW:
        raise ValueError(f"windows tables of shape ({rows.shape[0]}, {rows.shape[1]}) and "
                         f"({cols.shape[0]}, {cols.shape[1]}) do not fit a {OH}x{OW} output; "
                         f"build them with cyconv.backends._pool_tables.pool_windows(geom)")
    cdef pool_tables t
    t.ys, t.kylo, t.kyhi = &rows[0, 0], &rows[1, 0], &rows[2, 0]
    t.xs, t.kxlo, t.kxhi = &cols[0, 0], &cols[1, 0], &cols[2, 0]
    t.tapoff = &tapoff[0]
    t.oya, t.oyb, t.oxa, t.oxb = interior
    return t


cdef inline index_t _window_argmax(const floating_t* plane, index_t row0, index_t col0,
                                   index_t W, index_t dh, index_t dw,
                                   index_t ky0, index_t ky1, index_t kx0, index_t kx1,
                                   floating_t* best_out) noexcept nogil:
    """Scan one window in row-major order (inside taps only): first maximum
    wins, the first NaN wins outright, -1 if the window holds no input."""
    cdef index_t ky, kx, off, best_i = -1
    cdef floating_t v, best = -INFINITY
    for ky in range(ky0, ky1):
        off = (row0 + ky * dh) * W + col0
        for kx in range(kx0, kx1):
            v = plane[off + kx * dw]
            if v != v:
                best_out[0] = v
                return off + kx * dw
            if v > best or best_i < 0:
                best = v
                best_i = off + kx * dw
    best_out[0] = best
    return best_i


cdef extern from *:
    """
    /* One window tap over a rows x n block of outputs: m (running max) and
       t (winning tap number, kept in the value type so that GCC vectorises
       the selects with plain SSE2 masks) are replaced where the tap's value
       v wins: v > m (strict: the first maximum stays), or v is NaN while m
       is not (the first NaN stays). */
    #define CYCONV_MAX_TAP(T, NAME)                                               \
    static inline void NAME(const T *CYTHON_RESTRICT src, Py_ssize_t src_rs,      \
                            T *CYTHON_RESTRICT m, Py_ssize_t m_rs,                \
                            T *CYTHON_RESTRICT t, T tap,                          \
                            Py_ssize_t rows, Py_ssize_t n, Py_ssize_t s) {        \
        for (Py_ssize_t r = 0; r < rows; r++) {                                   \
            const T *CYTHON_RESTRICT sr = src + r * src_rs;                       \
            T *CYTHON_RESTRICT mr = m + r * m_rs;                                 \
            T *CYTHON_RESTRICT tr = t + r * n;                                    \
            for (Py_ssize_t i = 0; i < n; i++) {                                  \
                T v = sr[s * i], mm = mr[i];                                      \
                int k = (v > mm) | ((v != v) & (mm == mm));                       \
                mr[i] = k ? v : mm;                                               \
                tr[i] = k ? tap : tr[i];                                          \
            }                                                                     \
        }                                                                         \
    }
    CYCONV_MAX_TAP(float, cyconv_max_tap_f)
    CYCONV_MAX_TAP(double, cyconv_max_tap_d)
    /* The first two taps (offsets 0 and off) in one pass: starts m and t. */
    #define CYCONV_MAX_PAIR(T, NAME)                                              \
    static inline void NAME(const T *CYTHON_RESTRICT src, Py_ssize_t src_rs,      \
                            T *CYTHON_RESTRICT m, Py_ssize_t m_rs,                \
                            T *CYTHON_RESTRICT t, Py_ssize_t off,                 \
                            Py_ssize_t rows, Py_ssize_t n, Py_ssize_t s) {        \
        for (Py_ssize_t r = 0; r < rows; r++) {                                   \
            const T *CYTHON_RESTRICT sr = src + r * src_rs;                       \
            T *CYTHON_RESTRICT mr = m + r * m_rs;                                 \
            T *CYTHON_RESTRICT tr = t + r * n;                                    \
            for (Py_ssize_t i = 0; i < n; i++) {                                  \
                T a = sr[s * i], b = sr[s * i + off];                             \
                int k = (b > a) | ((b != b) & (a == a));                          \
                mr[i] = k ? b : a;                                                \
                tr[i] = k ? (T)1 : (T)0;                                          \
            }                                                                     \
        }                                                                         \
    }
    CYCONV_MAX_PAIR(float, cyconv_max_pair_f)
    CYCONV_MAX_PAIR(double, cyconv_max_pair_d)
    /* One output row of 2x2 stride-2 windows that lie wholly inside the
       input: input rows r0 and r0 + W.  The four taps are compared in
       row-major order with a strict '>' (the first maximum stays), the
       winning tap kept in the value type (exact: the caller ensures
       W + 1 < 2**24) so that GCC vectorises the selects, then turned into a
       flat offset.  NaN is left out of the selects -- its rule chained
       through the running maximum stops GCC from vectorising -- and reported
       instead: the caller redoes a row that holds one with the exact scan. */
    #define CYCONV_MAX_2X2S2_ROW(T, NAME)                                         \
    static inline int NAME(const T *CYTHON_RESTRICT r0, Py_ssize_t W,             \
                           T *CYTHON_RESTRICT y, int64_t *CYTHON_RESTRICT ind,    \
                           int64_t base, Py_ssize_t n) {                          \
        const T *CYTHON_RESTRICT r1 = r0 + W;                                     \
        const T tap_c = (T)W, tap_d = (T)(W + 1);                                 \
        int has_nan = 0;                                                          \
        for (Py_ssize_t i = 0; i < n; i++) {                                      \
            T a = r0[2 * i], b = r0[2 * i + 1], c = r1[2 * i], d = r1[2 * i + 1];  \
            T m = a, t = 0;                                                       \
            int k;                                                                \
            has_nan |= (a != a) | (b != b) | (c != c) | (d != d);                 \
            k = b > m;  m = k ? b : m;  t = k ? (T)1 : t;                         \
            k = c > m;  m = k ? c : m;  t = k ? tap_c : t;                        \
            k = d > m;  m = k ? d : m;  t = k ? tap_d : t;                        \
            y[i] = m;                                                             \
            ind[i] = base + 2 * i + (int64_t)t;                                   \
        }                                                                         \
        return has_nan;                                                           \
    }
    CYCONV_MAX_2X2S2_ROW(float, cyconv_max_2x2s2_row_f)
    CYCONV_MAX_2X2S2_ROW(double, cyconv_max_2x2s2_row_d)
    /* n outputs of 3x3 stride-2 windows wholly inside the input, the first
       window's top-left tap at r0: the 2x2 row kernel's method (nine taps in
       registers, row-major with a strict '>', NaN reported for the caller's
       exact rescan; tap offsets exact in T: the caller ensures 2W + 2 < 2**24),
       one pass where the tap-by-tap loops make nine over the running maximum. */
    #define CYCONV_MAX_3X3S2_ROW(T, NAME)                                         \
    static inline int NAME(const T *CYTHON_RESTRICT r0, Py_ssize_t W,             \
                           T *CYTHON_RESTRICT y, int64_t *CYTHON_RESTRICT ind,    \
                           int64_t base, Py_ssize_t n) {                          \
        const T *CYTHON_RESTRICT r1 = r0 + W;                                     \
        const T *CYTHON_RESTRICT r2 = r0 + 2 * W;                                 \
        const T w0 = (T)W, w1 = (T)(W + 1), w2 = (T)(W + 2);                      \
        const T v0 = (T)(2 * W), v1 = (T)(2 * W + 1), v2 = (T)(2 * W + 2);        \
        int has_nan = 0;                                                          \
        for (Py_ssize_t i = 0; i < n; i++) {                                      \
            T a = r0[2 * i], b = r0[2 * i + 1], c = r0[2 * i + 2];                \
            T d = r1[2 * i], e = r1[2 * i + 1], f = r1[2 * i + 2];                \
            T g = r2[2 * i], h = r2[2 * i + 1], l = r2[2 * i + 2];                \
            T m = a, t = 0;                                                       \
            int k;                                                                \
            has_nan |= (a != a) | (b != b) | (c != c) | (d != d) | (e != e)       \
                       | (f != f) | (g != g) | (h != h) | (l != l);               \
            k = b > m;  m = k ? b : m;  t = k ? (T)1 : t;                         \
            k = c > m;  m = k ? c : m;  t = k ? (T)2 : t;                         \
            k = d > m;  m = k ? d : m;  t = k ? w0 : t;                           \
            k = e > m;  m = k ? e : m;  t = k ? w1 : t;                           \
            k = f > m;  m = k ? f : m;  t = k ? w2 : t;                           \
            k = g > m;  m = k ? g : m;  t = k ? v0 : t;                           \
            k = h > m;  m = k ? h : m;  t = k ? v1 : t;                           \
            k = l > m;  m = k ? l : m;  t = k ? v2 : t;                           \
            y[i] = m;                                                             \
            ind[i] = base + 2 * i + (int64_t)t;                                   \
        }                                                                         \
        return has_nan;                                                           \
    }
    CYCONV_MAX_3X3S2_ROW(float, cyconv_max_3x3s2_row_f)
    CYCONV_MAX_3X3S2_ROW(double, cyconv_max_3x3s2_row_d)
    """
    void cyconv_max_pair_f(const float* src, Py_ssize_t src_rs, float* m, Py_ssize_t m_rs,
                           float* t, Py_ssize_t off, Py_ssize_t rows, Py_ssize_t n,
                           Py_ssize_t s) noexcept nogil
    void cyconv_max_pair_d(const double* src, Py_ssize_t src_rs, double* m, Py_ssize_t m_rs,
                           double* t, Py_ssize_t off, Py_ssize_t rows, Py_ssize_t n,
                           Py_ssize_t s) noexcept nogil
    void cyconv_max_tap_f(const float* src, Py_ssize_t src_rs, float* m, Py_ssize_t m_rs,
                          float* t, float tap, Py_ssize_t rows, Py_ssize_t n,
                          Py_ssize_t s) noexcept nogil
    void cyconv_max_tap_d(const double* src, Py_ssize_t src_rs, double* m, Py_ssize_t m_rs,
                          double* t, double tap, Py_ssize_t rows, Py_ssize_t n,
                          Py_ssize_t s) noexcept nogil
    int cyconv_max_2x2s2_row_f(const float* r0, Py_ssize_t W, float* y, int64_t* ind,
                               int64_t base, Py_ssize_t n) noexcept nogil
    int cyconv_max_2x2s2_row_d(const double* r0, Py_ssize_t W, double* y, int64_t* ind,
                               int64_t base, Py_ssize_t n) noexcept nogil
    int cyconv_max_3x3s2_row_f(const float* r0, Py_ssize_t W, float* y, int64_t* ind,
                               int64_t base, Py_ssize_t n) noexcept nogil
    int cyconv_max_3x3s2_row_d(const double* r0, Py_ssize_t W, double* y, int64_t* ind,
                               int64_t base, Py_ssize_t n) noexcept nogil


cdef inline void _max_tap(const floating_t* src, index_t src_rs, floating_t* m, index_t m_rs,
                          floating_t* t, index_t tap, index_t rows, index_t n,
                          index_t s) noexcept nogil:
    # literal strides 1 and 2 let the compiler specialise the (inlined) loop
    if floating_t is float:
        if s == 1:
            cyconv_max_tap_f(src, src_rs, m, m_rs, t, <float>tap, rows, n, 1)
        elif s == 2:
            cyconv_max_tap_f(src, src_rs, m, m_rs, t, <float>tap, rows, n, 2)
        else:
            cyconv_max_tap_f(src, src_rs, m, m_rs, t, <float>tap, rows, n, s)
    else:
        if s == 1:
            cyconv_max_tap_d(src, src_rs, m, m_rs, t, <double>tap, rows, n, 1)
        elif s == 2:
            cyconv_max_tap_d(src, src_rs, m, m_rs, t, <double>tap, rows, n, 2)
        else:
            cyconv_max_tap_d(src, src_rs, m, m_rs, t, <double>tap, rows, n, s)


cdef inline void _max_pair(const floating_t* src, index_t src_rs, floating_t* m, index_t m_rs,
                           floating_t* t, index_t off, index_t rows, index_t n,
                           index_t s) noexcept nogil:
    if floating_t is float:
        if s == 2:
            cyconv_max_pair_f(src, src_rs, m, m_rs, t, off, rows, n, 2)
        else:
            cyconv_max_pair_f(src, src_rs, m, m_rs, t, off, rows, n, s)
    else:
        if s == 2:
            cyconv_max_pair_d(src, src_rs, m, m_rs, t, off, rows, n, 2)
        else:
            cyconv_max_pair_d(src, src_rs, m, m_rs, t, off, rows, n, s)


cdef inline void _max_2x2s2_row(const floating_t* plane,     # IN  (H*W)
                                 index_t W, index_t oy,
                                 floating_t* y,               # OUT (n)
                                 int64_t* ind,                # OUT (n)
                                 index_t n) noexcept nogil:
    """Output row ``oy`` of a 2x2 stride-2 pool whose windows are all inside."""
    cdef int has_nan
    cdef index_t ox
    cdef floating_t best
    if floating_t is float:
        has_nan = cyconv_max_2x2s2_row_f(plane + 2 * oy * W, W, y, ind, 2 * oy * W, n)
    else:
        has_nan = cyconv_max_2x2s2_row_d(plane + 2 * oy * W, W, y, ind, 2 * oy * W, n)
    if has_nan:
        for ox in range(n):
            ind[ox] = _window_argmax(plane, 2 * oy, 2 * ox, W, 1, 1, 0, 2, 0, 2, &best)
            y[ox] = best


cdef inline void _max_3x3s2_rows(const floating_t* plane, window_geom g, pool_tables t,
                                 floating_t* y, int64_t* ind) noexcept nogil:
    """The interior block of a 3x3 stride-2 (dilation 1) pool, row by row; a row
    holding NaN is redone by the exact scan."""
    cdef index_t W = g.W, OW = g.OW, n = t.oxb - t.oxa, oy, ox, base, o
    cdef int has_nan
    cdef floating_t best
    for oy in range(t.oya, t.oyb):
        base = t.ys[oy] * W + t.xs[t.oxa]
        o = oy * OW + t.oxa
        if floating_t is float:
            has_nan = cyconv_max_3x3s2_row_f(plane + base, W, y + o, ind + o, base, n)
        else:
            has_nan = cyconv_max_3x3s2_row_d(plane + base, W, y + o, ind + o, base, n)
        if has_nan:
            for ox in range(t.oxa, t.oxb):
                ind[oy * OW + ox] = _window_argmax(plane, t.ys[oy], t.xs[ox], W, 1, 1,
                                                   0, 3, 0, 3, &best)
                y[oy * OW + ox] = best


cdef inline void _max_pool_plane(const floating_t* plane,       # IN  (H*W)
                                 floating_t* y,                 # OUT (OH*OW)
                                 int64_t* ind,                  # OUT (OH*OW)
                                 floating_t* tap,               # scratch (OH*OW)
                                 window_geom g, pool_tables t) noexcept nogil:
    """Interior block (rows [oya, oyb) x cols [oxa, oxb), windows fully
    inside): one vectorisable pass per tap in row-major tap order, then the
    winning tap numbers become input offsets.  Border outputs: per-window
    scan (_window_argmax).  Both implement the same tie/NaN rule."""
    # g and t come by value: local copies that no store through y or ind can
    # alias, so the compiler keeps their fields in registers
    cdef index_t W = g.W, OW = g.OW, SW = g.SW, KT = g.KH * g.KW
    cdef index_t oya = t.oya, oyb = t.oyb, oxa = t.oxa, oxb = t.oxb
    cdef index_t oy, ox, o, k, r, i
    cdef index_t nr = oyb - oya, n = oxb - oxa, rs = g.SH * W, base
    cdef floating_t best
    cdef const floating_t* src
    cdef floating_t* m
    if (nr > 0 and n > 0 and g.KH == 3 and g.KW == 3 and g.SH == 2 and g.SW == 2
            and g.DH == 1 and g.DW == 1 and W < (1 << 22)):
        _max_3x3s2_rows(plane, g, t, y, ind)
    elif nr > 0 and n > 0:
        base = t.ys[oya] * W + t.xs[oxa]
        src = plane + base
        m = y + oya * OW + oxa
        if KT == 1:
            for r in range(nr):
                for i in range(n):
                    m[r * OW + i] = src[r * rs + i * SW]
                    tap[r * n + i] = 0
        else:
            _max_pair(src, rs, m, OW, tap, t.tapoff[1], nr, n, SW)
        for k in range(2, KT):
            _max_tap(src + t.tapoff[k], rs, m, OW, tap, k, nr, n, SW)
        for r in range(nr):
            for i in range(n):
                ind[(oya + r) * OW + oxa + i] = (base + r * rs + i * SW
                                                 + t.tapoff[<index_t>tap[r * n + i]])
    for oy in range(g.OH):
        for ox in range(OW):
            if oya <= oy < oyb and oxa <= ox < oxb:
                continue
            o = oy * OW + ox
            ind[o] = _window_argmax(plane, t.ys[oy], t.xs[ox], W, g.DH, g.DW,
                                    t.kylo[oy], t.kyhi[oy], t.kxlo[ox], t.kxhi[ox], &best)
            y[o] = best


def max_pool2d_forward(const floating_t[:, :, :, ::1] x,      # IN  (N, C, H, W)
                       floating_t[:, :, :, ::1] y,            # OUT (N, C, OH, OW)
                       int64_t[:, :, :, ::1] indices,         # OUT (N, C, OH, OW)
                       geom, windows, int n_threads):
    """Max pooling forward into caller-allocated ``y`` and ``indices``;
    ``windows`` is ``cyconv.backends._pool_tables.pool_windows(geom)``."""
    cdef index_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef index_t OH = y.shape[2], OW = y.shape[3]
    cdef window_geom g = make_window_geom(geom, H, W, OH, OW)
    cdef index_t planes = N * C, p, n, c, r, oy
    if planes == 0 or OH * OW == 0:
        return
    if _is_plain_2x2_stride2(&g) and W < (1 << 23):
        # every window inside, none overlapping: one flat loop over all output
        # rows of all planes, so small planes pay no per-plane set-up
        with nogil:
            for r in prange(planes * OH, schedule="static", num_threads=n_threads):
                p = r // OH
                oy = r % OH
                _max_2x2s2_row(&x[0, 0, 0, 0] + p * H * W, W, oy,
                               &y[0, 0, 0, 0] + r * OW, &indices[0, 0, 0, 0] + r * OW, OW)
        return
    cdef const index_t[:, ::1] rows = windows.rows, cols = windows.cols
    cdef const index_t[::1] tapoff = windows.tap_offsets
    cdef pool_tables t = _tables(rows, cols, tapoff, windows.interior, OH, OW)
    cdef int nt = <int>max(1, min(<index_t>n_threads, planes))
    cdef floating_t* scratch
    cdef index_t tid
    scratch = <floating_t*>malloc(nt * OH * OW * sizeof(floating_t))
    if scratch == NULL:
        raise MemoryError("max_pool2d_forward: cannot allocate scratch")
    try:
        with nogil:
            for p in prange(planes, schedule="static", num_threads=nt):
                n = p // C
                c = p % C
                tid = omp_get_thread_num()
                _max_pool_plane(&x[n, c, 0, 0], &y[n, c, 0, 0], &indices[n, c, 0, 0],
                                scratch + tid * OH * OW, g, t)
    finally:
        free(scratch)


cdef inline void _max_unpool_plane(const floating_t* dy,       # IN  (OH*OW)
                                   const int64_t* ind,         # IN  (OH*OW)
                                   floating_t* dx,             # OUT (H*W)
                                   index_t HW, index_t OHW) noexcept nogil:
    cdef index_t o
    cdef int64_t i
    memset(dx, 0, HW * sizeof(floating_t))
    for o in range(OHW):
        i = ind[o]
        if i >= 0:
            dx[i] += dy[o]


def max_pool2d_backward(const floating_t[:, :, :, ::1] dy,     # IN  (N, C, OH, OW)
                        const int64_t[:, :, :, ::1] indices,   # IN  (N, C, OH, OW)
                        floating_t[:, :, :, ::1] dx,           # OUT (N, C, H, W), any content
                        int n_threads):
    """Scatter ``dy`` through the argmax ``indices`` (each plane zeroes its own dx)."""
    cdef index_t N = dx.shape[0], C = dx.shape[1], HW = dx.shape[2] * dx.shape[3]
    cdef index_t OHW = dy.shape[2] * dy.shape[3]
    cdef index_t planes = N * C, p, n, c
    if planes == 0 or HW == 0:
        return
    with nogil:
        for p in prange(planes, schedule="static", num_threads=n_threads):
            n = p // C
            c = p % C
            if OHW > 0:
                _max_unpool_plane(&dy[n, c, 0, 0], &indices[n, c, 0, 0], &dx[n, c, 0, 0],
                                  HW, OHW)
            else:
                memset(&dx[n, c, 0, 0], 0, HW * sizeof(floating_t))


cdef inline void _avg_pool_plane(const floating_t* plane,      # IN  (H*W)
                                 floating_t* y,                # OUT (OH*OW)
                                 const floating_t* div,        # IN  (OH*OW)
                                 window_geom g, pool_tables t) noexcept nogil:
    cdef index_t W = g.W, OW = g.OW, dh = g.DH, dw = g.DW
    cdef index_t oy, ox, ky, kx, off
    cdef floating_t s
    for oy in range(g.OH):
        for ox in range(OW):
            s = 0
            for ky in range(t.kylo[oy], t.kyhi[oy]):
                off = (t.ys[oy] + ky * dh) * W + t.xs[ox]
                for kx in range(t.kxlo[ox], t.kxhi[ox]):
                    s = s + plane[off + kx * dw]
            y[oy * OW + ox] = s / div[oy * OW + ox]


cdef inline void _avg_pool_plane_2x2s2(const floating_t* plane,  # IN  (H*W)
                                       floating_t* y,            # OUT (OH*OW)
                                       const floating_t* div,    # IN  (OH*OW)
                                       index_t W, index_t OH, index_t OW) noexcept nogil:
    cdef index_t oy, ox, r0, r1
    for oy in range(OH):
        r0 = 2 * oy * W
        r1 = r0 + W
        for ox in range(OW):
            y[oy * OW + ox] = (((plane[r0 + 2 * ox] + plane[r0 + 2 * ox + 1])
                                + plane[r1 + 2 * ox]) + plane[r1 + 2 * ox + 1]) / div[oy * OW + ox]


def avg_pool2d_forward(const floating_t[:, :, :, ::1] x,       # IN  (N, C, H, W)
                       floating_t[:, :, :, ::1] y,             # OUT (N, C, OH, OW)
                       const floating_t[:, ::1] divisor,       # IN  (OH, OW), see avg_divisor
                       geom, windows, int n_threads):
    """Average pooling forward: window sum of input elements / divisor
    (``cyconv.backends._pool_tables``: ``avg_divisor``, ``pool_windows``)."""
    cdef index_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef index_t OH = y.shape[2], OW = y.shape[3]
    cdef window_geom g = make_window_geom(geom, H, W, OH, OW)
    cdef index_t planes = N * C, p, n, c
    if planes == 0 or OH * OW == 0:
        return
    cdef const index_t[:, ::1] rows = windows.rows, cols = windows.cols
    cdef const index_t[::1] tapoff = windows.tap_offsets
    cdef pool_tables t = _tables(rows, cols, tapoff, windows.interior, OH, OW)
    cdef bint fast = _is_plain_2x2_stride2(&g)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=n_threads):
            n = p // C
            c = p % C
            if fast:
                _avg_pool_plane_2x2s2(&x[n, c, 0, 0], &y[n, c, 0, 0], &divisor[0, 0], W, OH, OW)
            else:
                _avg_pool_plane(&x[n, c, 0, 0], &y[n, c, 0, 0], &divisor[0, 0], g, t)


cdef inline void _avg_unpool_plane(const floating_t* dy,       # IN  (OH*OW)
                                   floating_t* dx,             # OUT (H*W)
                                   const floating_t* div,      # IN  (OH*OW)
                                   window_geom g, pool_tables t) noexcept nogil:
    cdef index_t W = g.W, OW = g.OW, dh = g.DH, dw = g.DW
    cdef index_t oy, ox, ky, kx, off
    cdef floating_t share
    memset(dx, 0, g.H * W * sizeof(floating_t))
    for oy in range(g.OH):
        for ox in range(OW):
            share = dy[oy * OW + ox] / div[oy * OW + ox]
            for ky in range(t.kylo[oy], t.kyhi[oy]):
                off = (t.ys[oy] + ky * dh) * W + t.xs[ox]
                for kx in range(t.kxlo[ox], t.kxhi[ox]):
                    dx[off + kx * dw] += share


cdef inline void _avg_unpool_plane_2x2s2(const floating_t* dy,    # IN  (OH*OW)
                                         floating_t* dx,          # OUT (H*W)
                                         const floating_t* div,   # IN  (OH*OW)
                                         index_t H, index_t W, index_t OH, index_t OW,
                                         ) noexcept nogil:
    """Non-overlapping windows: every dx element gets at most one share, so
    plain stores (0 + share == share exactly) and zeros for uncovered rows/cols."""
    cdef index_t oy, ox, r0, r1
    cdef floating_t share
    if 2 * OH < H or 2 * OW < W:
        memset(dx, 0, H * W * sizeof(floating_t))
    for oy in range(OH):
        r0 = 2 * oy * W
        r1 = r0 + W
        for ox in range(OW):
            share = dy[oy * OW + ox] / div[oy * OW + ox]
            dx[r0 + 2 * ox] = share
            dx[r0 + 2 * ox + 1] = share
            dx[r1 + 2 * ox] = share
            dx[r1 + 2 * ox + 1] = share


def avg_pool2d_backward(const floating_t[:, :, :, ::1] dy,     # IN  (N, C, OH, OW)
                        floating_t[:, :, :, ::1] dx,           # OUT (N, C, H, W), any content
                        const floating_t[:, ::1] divisor,      # IN  (OH, OW), see avg_divisor
                        geom, windows, int n_threads):
    """Average pooling backward: each output's share dy/divisor is added to
    every input element of its window (each plane zeroes its own dx)."""
    cdef index_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef index_t OH = dy.shape[2], OW = dy.shape[3]
    cdef window_geom g = make_window_geom(geom, H, W, OH, OW)
    cdef index_t planes = N * C, p, n, c
    if planes == 0 or H * W == 0:
        return
    if OH * OW == 0:
        with nogil:
            for p in prange(planes, schedule="static", num_threads=n_threads):
                memset(&dx[0, 0, 0, 0] + p * H * W, 0, H * W * sizeof(floating_t))
        return
    cdef const index_t[:, ::1] rows = windows.rows, cols = windows.cols
    cdef const index_t[::1] tapoff = windows.tap_offsets
    cdef pool_tables t = _tables(rows, cols, tapoff, windows.interior, OH, OW)
    cdef bint fast = _is_plain_2x2_stride2(&g)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=n_threads):
            n = p // C
            c = p % C
            if fast:
                _avg_unpool_plane_2x2s2(&dy[n, c, 0, 0], &dx[n, c, 0, 0], &divisor[0, 0],
                                        H, W, OH, OW)
            else:
                _avg_unpool_plane(&dy[n, c, 0, 0], &dx[n, c, 0, 0], &divisor[0, 0], g, t)

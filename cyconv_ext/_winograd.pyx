# Design: Winograd F(m x m, 3 x 3), m = 4 (6x6 tiles) or 2 (4x4), for 3x3 kernels
# with stride 1 and dilation 1 (any padding, any groups).
# - The wrapper (cyconv/backends/cython_backend.py) prepares everything: U = G w G^T
#   (``weight_transform``), the flipped kernel for dx, each pass's offsets, the
#   tile block and slot counts; these functions only loop.
# - Output tiles (n, ty, tx) of a group are cut into blocks of TB tiles; an item
#   (group, block) owns its output tiles, and the partition depends on the shape
#   only: race free, bitwise identical for any n_threads.
# - Per item: gather and transform input patches (B^T d B; the 1-D transforms
#   are C, include/cyconv_winograd.h, vectorised across tiles) into V[xi][c][tile],
#   (m+2)^2 GEMMs (cyconv's own, _matmul.pxd) M[xi] = U[xi] @ V[xi], output
#   transform A^T M A into y.
# - The forward packs each U[g, xi] once per call in the GEMM's B layout; the
#   GEMM reads V[xi]'s whole panels in place (``gathered_product``: V's rows are
#   TB tiles apart, 512 bytes in float64, so a panel's rows spread over L1 sets;
#   a block's last part panel is packed), bitwise the GEMM's result.  Packing
#   every panel measured 1.02-1.08x slower (forward and dx; docs/performance.md);
#   writing V straight in the panel layout was slower still on VGG.  V[xi] and
#   M[xi] sit XI_SKEW elements further apart than their size, so that a tile's
#   36 rows spread over L1 sets.
# - A patch wholly inside its plane is transformed in place (``_columns``), others
#   through a zero-padded row copy.  The same patch of the next channel is
#   prefetched meanwhile (``_prefetch_patch``): the planes' reads alone stalled on
#   memory, the hardware prefetchers behind (docs/performance.md).
# - dx is the forward on dy with the flipped kernel; dW = G^T (sum of
#   (A dY A^T)[xi] V[xi]^T) G, items dealt round-robin to S slot copies that are
#   summed in slot order.  Weight transforms run in double and round once.  dW
#   also sums db from the dy patches its gradient transform reads: each item's
#   per-channel sums in double, then the items in order (a separate pass over dy
#   cost a tenth of dW on CIFAR).
# - Large outputs (the wrapper's rule, WINOGRAD_STREAM_MIN_BYTES) are written
#   with non-temporal stores: each output row of a segment goes through the
#   thread's row buffer into y (include/cyconv_im2col.h, cyconv_stream_run), and
#   each item ends with a store fence.  The same values as the plain stores.
# - Every pass reports whether all transformed values were finite (an inf would
#   spread over its tile); the wrapper then recomputes the call by GEMM.

cimport cython
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._fused cimport floating_t, index_t
from ._matmul cimport gathered_product, gemm, pack_b, packed_a_elems, packed_b_elems
from ._openmp cimport omp_get_thread_num


# -- 1-D transforms over a run of items ----------------------------------------
# In C (include/cyconv_winograd.h: restrict pointers, so that the compiler
# vectorises across the items); value i of item t at s[i*ss + t], output j at
# d[j*ds + t]; "row" variants work along one row of pixels, tiles every m.

cdef extern from "include/cyconv_winograd.h" nogil:
    enum:
        CYCONV_WINO_INPUT     # B^T d B
        CYCONV_WINO_GRAD      # A dY A^T (for dW)
        CYCONV_WINO_OUTPUT    # A^T M A
    void cyconv_wino_cols_s(int kind, int m, const float* s, index_t ss, float* d,
                            index_t ds, index_t n)
    void cyconv_wino_cols_d(int kind, int m, const double* s, index_t ss, double* d,
                            index_t ds, index_t n)
    void cyconv_wino_row_s(int kind, int m, const float* s, float* d, index_t ds, float* flag,
                           index_t n)
    void cyconv_wino_row_d(int kind, int m, const double* s, double* d, index_t ds,
                           double* flag, index_t n)
    void cyconv_wino_output_row_s(int m, const float* s, index_t ss, float* y, index_t n,
                                  float bias)
    void cyconv_wino_output_row_d(int m, const double* s, index_t ss, double* y, index_t n,
                                  double bias)
    # U = G w G^T of n <= LANES 3x3 kernels 9 elements apart, kernel l into
    # dst[xi * ds + l] (double inside, rounded once); whether all are finite
    enum:
        CYCONV_WINO_WEIGHT_LANES
    int cyconv_wino_weights_s(int m, const float* w9, float* dst, index_t ds, int n)
    int cyconv_wino_weights_d(int m, const double* w9, double* dst, index_t ds, int n)
    # the sum of a patch in double, in an order fixed by its size
    double cyconv_patch_sum_s(const float* s, index_t rows, index_t width, index_t stride)
    double cyconv_patch_sum_d(const double* s, index_t rows, index_t width, index_t stride)
    # a cache hint for a patch's rows (cannot fault, changes no value)
    void cyconv_prefetch_rows(const void* p, index_t rows, index_t nbytes, index_t stride)


cdef extern from "include/cyconv_im2col.h" nogil:
    # exact copies of a run, its tail one masked load and store (the file's Design)
    void cyconv_copy_run_f(const float* s, float* d, index_t n)
    void cyconv_copy_run_d(const double* s, double* d, index_t n)
    # the same copy, whole 64-byte lines written around the caches
    void cyconv_stream_run_f(const float* s, float* d, index_t n)
    void cyconv_stream_run_d(const double* s, double* d, index_t n)
    void cyconv_stream_fence()


cdef inline void _copy_run(const floating_t* s, floating_t* d, index_t n) noexcept nogil:
    if floating_t is float:
        cyconv_copy_run_f(s, d, n)
    else:
        cyconv_copy_run_d(s, d, n)


cdef inline void _stream_run(const floating_t* s, floating_t* d, index_t n) noexcept nogil:
    if floating_t is float:
        cyconv_stream_run_f(s, d, n)
    else:
        cyconv_stream_run_d(s, d, n)


cdef inline double _patch_sum(const floating_t* s, index_t rows, index_t width,
                              index_t stride) noexcept nogil:
    if floating_t is float:
        return cyconv_patch_sum_s(s, rows, width, stride)
    else:
        return cyconv_patch_sum_d(s, rows, width, stride)


cdef inline void _cols(int kind, int m, const floating_t* s, index_t ss, floating_t* d,
                       index_t ds, index_t n) noexcept nogil:
    if floating_t is float:
        cyconv_wino_cols_s(kind, m, s, ss, d, ds, n)
    else:
        cyconv_wino_cols_d(kind, m, s, ss, d, ds, n)


cdef inline void _row(int kind, int m, const floating_t* s, floating_t* d, index_t ds,
                      floating_t* flag, index_t n) noexcept nogil:
    if floating_t is float:
        cyconv_wino_row_s(kind, m, s, d, ds, flag, n)
    else:
        cyconv_wino_row_d(kind, m, s, d, ds, flag, n)


cdef inline void _output_row(int m, const floating_t* s, index_t ss, floating_t* y, index_t n,
                             floating_t bias) noexcept nogil:
    if floating_t is float:
        cyconv_wino_output_row_s(m, s, ss, y, n, bias)
    else:
        cyconv_wino_output_row_d(m, s, ss, y, n, bias)


# -- the weight transforms (double, once per call) ------------------------------
# G w G^T is C (include/cyconv_winograd_impl.h, cyconv_wino_weights: 8 kernels per
# vector; CW_G4 / CW_G2 hold G); G^T dU G for dW stays here.

cdef inline void _gt_row(int m, const double* u, index_t us, double* w, index_t ws) noexcept nogil:
    """w = G^T u (the adjoint of G, CW_G4 / CW_G2 in include/cyconv_winograd.h, for dW):
    (m+2) -> 3."""
    if m == 4:
        w[0] = u[0] / 4 - (u[us] + u[2 * us]) / 6 + (u[3 * us] + u[4 * us]) / 24
        w[ws] = (u[2 * us] - u[us]) / 6 + (u[3 * us] - u[4 * us]) / 12
        w[2 * ws] = (u[3 * us] + u[4 * us] - u[us] - u[2 * us]) / 6 + u[5 * us]
    else:
        w[0] = u[0] + (u[us] + u[2 * us]) / 2
        w[ws] = (u[us] - u[2 * us]) / 2
        w[2 * ws] = (u[us] + u[2 * us]) / 2 + u[3 * us]


cdef inline void _transform_weight_grad(int m, const floating_t* du, index_t du_stride,
                                        floating_t* dw9) noexcept nogil:
    """dw9 = G^T dU G for one kernel, dU[xi] at du[xi * du_stride]."""
    cdef index_t A = m + 2, i, j
    cdef double ud[36]
    cdef double gtu[18]    # G^T dU: (3, A)
    cdef double wd[9]
    for i in range(A * A):
        ud[i] = du[i * du_stride]
    for j in range(A):
        _gt_row(m, ud + j, A, gtu + j, A)
    for i in range(3):
        _gt_row(m, gtu + A * i, 1, wd + 3 * i, 1)
    for i in range(9):
        dw9[i] = <floating_t>wd[i]


def weight_transform(const floating_t[:, :, :, ::1] w,   # IN  (OC, Cg, 3, 3)
                     floating_t[:, :, :, ::1] u,         # OUT (groups, A*A, OCg, Cg)
                     int m, int n_threads):
    """U[g, xi, o, c] = (G w[g*OCg + o, c] G^T)[xi]; returns whether all are finite."""
    cdef index_t OC = w.shape[0], Cg = w.shape[1], OCg = u.shape[2], o, c
    cdef int nonfinite = 0, n
    cdef bint fin
    with nogil:
        for o in prange(OC, schedule="static", num_threads=n_threads):
            c = 0
            while c < Cg:       # a run of input channels at once, one kernel per lane
                n = <int>min(<index_t>CYCONV_WINO_WEIGHT_LANES, Cg - c)
                if floating_t is float:
                    fin = cyconv_wino_weights_s(m, &w[o, c, 0, 0], &u[o // OCg, 0, o % OCg, c],
                                                OCg * Cg, n) != 0
                else:
                    fin = cyconv_wino_weights_d(m, &w[o, c, 0, 0], &u[o // OCg, 0, o % OCg, c],
                                                OCg * Cg, n) != 0
                if not fin:
                    nonfinite += 1
                c = c + n
    return nonfinite == 0


# -- the tiled passes --------------------------------------------------------------

cdef struct tiling:
    index_t H, W           # input plane of this pass
    index_t OH, OW         # output plane
    index_t PT, PL         # input offset of output (0, 0) is (-PT, -PL)
    index_t m, A           # output tile side, patch side m + 2
    index_t tw, tiles      # tiles per output row, per image
    index_t TB             # tiles per block
    index_t RW             # row buffer width: TB*m + 2 pixels


cdef tiling _make_tiling(index_t H, index_t W, index_t OH, index_t OW, index_t PT,
                         index_t PL, int m, index_t TB):
    cdef tiling g
    g.H = H
    g.W = W
    g.OH = OH
    g.OW = OW
    g.PT = PT
    g.PL = PL
    g.m = m
    g.A = m + 2
    g.tw = (OW + m - 1) // m
    g.tiles = ((OH + m - 1) // m) * g.tw
    g.TB = TB
    g.RW = TB * m + 2
    return g


# A block's tiles split into row segments: runs of tiles of one tile row of one
# image.  Each is described by 5 indices (SEG fields):
cdef enum:
    SEG = 5     # q0 (first tile, offset in the block), n, oy, ox (output origin), L (tiles)


cdef inline index_t _segments(const tiling* g, index_t t0, index_t nt,
                              index_t* seg) noexcept nogil:
    """Fill seg with the row segments of tiles t0 .. t0+nt-1; return their count."""
    cdef index_t q = 0, ns = 0, t, r, txa, L
    while q < nt:
        t = t0 + q
        r = t % g.tiles
        txa = r % g.tw
        L = min(g.tw - txa, nt - q)
        seg[ns * SEG] = q
        seg[ns * SEG + 1] = t // g.tiles
        seg[ns * SEG + 2] = (r // g.tw) * g.m
        seg[ns * SEG + 3] = txa * g.m
        seg[ns * SEG + 4] = L
        ns = ns + 1
        q = q + L
    return ns


# The input transform's row kernel reads up to 2 elements past a row of T
# (include/cyconv_winograd_impl.h, cw_bt4_row_kernel): T has them.
cdef enum:
    ROW_SLACK = 2


cdef inline void _load_rows(const floating_t* plane, index_t H, index_t W, index_t iy0,
                            index_t ix0, index_t rows, index_t width, floating_t* R,
                            index_t RW) noexcept nogil:
    """R[r, p] = plane[iy0 + r, ix0 + p] for r < rows, p < width; 0 outside H x W."""
    cdef index_t r, p, iy, lo, hi
    cdef const floating_t* row
    cdef floating_t* dst
    lo = min(width, max(0, -ix0))
    hi = max(lo, min(width, W - ix0))
    for r in range(rows):
        iy = iy0 + r
        dst = R + r * RW
        if iy < 0 or iy >= H:
            memset(dst, 0, width * sizeof(floating_t))
            continue
        row = plane + iy * W + ix0
        for p in range(lo):
            dst[p] = 0
        _copy_run(row + lo, dst + lo, hi - lo)
        for p in range(hi, width):
            dst[p] = 0


cdef inline void _columns(int kind, int m, const floating_t* plane, index_t H, index_t W,
                          index_t iy0, index_t ix0, index_t rows, index_t width,
                          floating_t* R, floating_t* T, index_t RW) noexcept nogil:
    """T[k, p] = (X d)[k, p] for k < m + 2, p < width: X the transform down the columns
    (``kind``) of the rows x width patch d of the plane at (iy0, ix0), 0 outside H x W.
    A patch wholly inside (the output gradient's tiles, but for a partial last tile)
    is read in place; others are copied into R, zero-padded, first.  (Reading the
    input's rows in place and zeroing its padded columns measured no faster.)"""
    if iy0 >= 0 and iy0 + rows <= H and ix0 >= 0 and ix0 + width <= W:
        _cols(kind, m, plane + iy0 * W + ix0, W, T, RW, width)
    else:
        _load_rows(plane, H, W, iy0, ix0, rows, width, R, RW)
        _cols(kind, m, R, RW, T, RW, width)


cdef inline void _input_transform(const tiling* g, const floating_t* plane,
                                  const index_t* seg, index_t ns, floating_t* R,
                                  floating_t* T, floating_t* v, index_t vs,
                                  floating_t* flag) noexcept nogil:
    """v[xi*vs + q] = (B^T d_q B)[xi] for the input patch d_q of each tile q of the block;
    flag[q] stays 0 unless one of them is not finite."""
    cdef index_t k, i, q0, L, width, A = g.A, m = g.m, RW = g.RW
    for i in range(ns):
        q0 = seg[i * SEG]
        L = seg[i * SEG + 4]
        width = L * m + 2
        # down the columns, all pixels of the segment at once: T[k, p] = (B^T d)[k, p]
        _columns(CYCONV_WINO_INPUT, <int>m, plane, g.H, g.W, seg[i * SEG + 2] - g.PT,
                 seg[i * SEG + 3] - g.PL, A, width, R, T, RW)
        # along each row, one tile per item (tiles start every m pixels)
        for k in range(A):
            _row(CYCONV_WINO_INPUT, <int>m, T + k * RW, v + k * A * vs + q0, vs, flag + q0, L)


cdef inline void _grad_transform(const tiling* g, const floating_t* plane,
                                 const index_t* seg, index_t ns, floating_t* R,
                                 floating_t* T, floating_t* v, index_t vs,
                                 floating_t* flag) noexcept nogil:
    """v[xi*vs + q] = (A dY_q A^T)[xi] for the m x m output-gradient tile dY_q of each tile q
    (flag as for the input)."""
    cdef index_t k, i, q0, L, width, A = g.A, m = g.m, RW = g.RW
    for i in range(ns):
        q0 = seg[i * SEG]
        L = seg[i * SEG + 4]
        width = L * m
        _columns(CYCONV_WINO_GRAD, <int>m, plane, g.OH, g.OW, seg[i * SEG + 2],
                 seg[i * SEG + 3], m, width, R, T, RW)
        for k in range(A):
            _row(CYCONV_WINO_GRAD, <int>m, T + k * RW, v + k * A * vs + q0, vs, flag + q0, L)


cdef inline void _output_transform(const tiling* g, const floating_t* mm, index_t ms,
                                   const index_t* seg, index_t ns, index_t nt,
                                   floating_t* tmp, floating_t* row, floating_t* y_img0,
                                   index_t img_stride, floating_t bias,
                                   bint stream) noexcept nogil:
    """Scatter y = A^T M A (+ bias) of every tile of the block, M[xi] at mm[xi*ms + q];
    ``stream``: each output row through ``row``, stored around the caches."""
    cdef index_t A = g.A, m = g.m, TB = g.TB, i, j, r, p, q0, L, oy, ox, width, full
    cdef floating_t* yr
    cdef const floating_t* tr
    for j in range(A):          # down the columns: tmp[(i*A + j)*TB + q], i < m
        _cols(CYCONV_WINO_OUTPUT, <int>m, mm + j * ms, A * ms, tmp + j * TB, A * TB, nt)
    for i in range(ns):
        q0 = seg[i * SEG]
        oy = seg[i * SEG + 2]
        ox = seg[i * SEG + 3]
        L = seg[i * SEG + 4]
        width = min(L * m, g.OW - ox)
        full = width // m       # tiles wholly inside the output row
        for r in range(m):
            if oy + r >= g.OH:
                break
            # along the row: pixel q*m + l of the segment, straight into y
            tr = tmp + r * A * TB + q0
            yr = y_img0 + seg[i * SEG + 1] * img_stride + (oy + r) * g.OW + ox
            if stream:          # the row's L tiles fit ``row`` (RW >= TB*m)
                _output_row(<int>m, tr, TB, row, L, bias)
                _stream_run(row, yr, width)
                continue
            _output_row(<int>m, tr, TB, yr, full, bias)
            if full * m < width:    # the last tile sticks out of the row
                _output_row(<int>m, tr + full, TB, row, 1, bias)
                for p in range(width - full * m):
                    yr[full * m + p] = row[p]


cdef inline bint _all_zero(const floating_t* flag, index_t n) noexcept nogil:
    cdef index_t t
    for t in range(n):
        if not (flag[t] == 0):
            return False
    return True


cdef inline void _prefetch_patch(const floating_t* plane, index_t H, index_t W, index_t iy0,
                                 index_t ix0, index_t rows, index_t width) noexcept nogil:
    """Ask the caches for the part inside H x W of the rows x width patch at (iy0, ix0)."""
    cdef index_t r0 = max(0, iy0), r1 = min(H, iy0 + rows)
    cdef index_t p0 = max(0, ix0), p1 = min(W, ix0 + width)
    if r0 < r1 and p0 < p1:
        cyconv_prefetch_rows(plane + r0 * W + p0, r1 - r0, (p1 - p0) * sizeof(floating_t),
                             W * sizeof(floating_t))


cdef inline void _input_tiles(const tiling* g, const floating_t* x_g, index_t img_stride,
                              index_t Cg, const index_t* seg, index_t ns,
                              floating_t* R, floating_t* T, floating_t* v, index_t vs,
                              floating_t* flag) noexcept nogil:
    """V[xi][c][q] (xi stride vs) for the input channels of one group, block tiles q.
    The next channel's patch is prefetched while this one is transformed."""
    cdef index_t c, i, TB = g.TB, plane = g.H * g.W
    cdef const floating_t* src
    for c in range(Cg):
        for i in range(ns):
            src = x_g + seg[i * SEG + 1] * img_stride + c * plane
            if c + 1 < Cg:
                _prefetch_patch(src + plane, g.H, g.W, seg[i * SEG + 2] - g.PT,
                                seg[i * SEG + 3] - g.PL, g.A, seg[i * SEG + 4] * g.m + 2)
            _input_transform(g, src, seg + i * SEG, 1, R, T, v + c * TB, vs, flag)


# V[xi] and M[xi] sit XI_SKEW elements apart beyond their size: at a plain
# Cg * TB stride (8 KiB and more, a multiple of 4 KiB) the 36 rows a tile's
# transform reads or writes would all fall in the same L1 sets.
cdef enum:
    XI_SKEW = 16


cdef index_t _per_thread(const tiling* g, index_t Cg, index_t OCg):
    """Workspace elements one thread needs: rows R and T (+ ROW_SLACK), V, M, tmp, a
    row, flags."""
    cdef index_t A2 = g.A * g.A
    return (2 * g.A * g.RW + ROW_SLACK + A2 * ((Cg + OCg) * g.TB + 2 * XI_SKEW)
            + g.m * g.A * g.TB + g.RW + g.TB)


def forward(const floating_t[:, :, :, ::1] x,     # IN  (N, C, H, W)
            const floating_t[:, :, :, ::1] u,     # IN  (groups, A*A, OCg, Cg)
            const floating_t[::1] bias,           # IN  (OC,) (ignored unless has_bias)
            floating_t[:, :, :, ::1] y,           # OUT (N, OC, OH, OW)
            index_t pad_top, index_t pad_left, int m, bint has_bias,
            index_t tile_block, int n_threads, bint stream=False):
    """y = conv(x, w) (+ bias) from U = G w G^T; returns whether V was all finite.
    ``stream``: y written with non-temporal stores (same values; the wrapper decides)."""
    cdef index_t N = x.shape[0], C = x.shape[1], OC = y.shape[1], groups = u.shape[0]
    cdef index_t OCg = u.shape[2], Cg = u.shape[3]
    cdef tiling g = _make_tiling(x.shape[2], x.shape[3], y.shape[2], y.shape[3],
                                 pad_top, pad_left, m, tile_block)
    cdef index_t A2 = g.A * g.A, TB = g.TB
    cdef index_t vs = Cg * TB + XI_SKEW, ms = OCg * TB + XI_SKEW   # V's, M's xi strides
    cdef index_t T = N * g.tiles, nblk = (T + TB - 1) // TB, items = groups * nblk
    cdef floating_t* tp = NULL     # selects the dtype of the size helpers
    cdef index_t bsz = packed_b_elems(tp, Cg, OCg), apsz = packed_a_elems(tp, TB, Cg)
    cdef index_t per_thread = _per_thread(&g, Cg, OCg) + apsz
    cdef index_t it, gi, t0, nt, ns, xi, o, tid, c
    cdef index_t* voff
    cdef int nthr = <int>max(1, min(<index_t>n_threads, items))
    cdef floating_t* ws
    cdef floating_t* up
    cdef floating_t* ap
    cdef floating_t* R
    cdef floating_t* Tr
    cdef floating_t* v
    cdef floating_t* mm
    cdef floating_t* tmp
    cdef floating_t* row
    cdef floating_t* flag
    cdef index_t* segs
    cdef index_t* seg
    cdef int nonfinite = 0
    if items == 0 or OCg == 0:
        return True
    # one allocation for the packed U and the threads' workspace (a second large
    # one per call measured 2x slower on a batch of one under glibc's default
    # malloc thresholds: fresh pages on every call)
    up = <floating_t*>malloc((groups * A2 * bsz + nthr * per_thread) * sizeof(floating_t))
    segs = <index_t*>malloc((nthr * SEG * TB + Cg) * sizeof(index_t))
    if up == NULL or segs == NULL:
        free(up)
        free(segs)
        raise MemoryError("winograd forward: cannot allocate the tile workspace")
    voff = segs + nthr * SEG * TB      # V[xi]'s channel c at c * TB
    for c in range(Cg):
        voff[c] = c * TB
    ws = up + groups * A2 * bsz
    try:
        with nogil:
            # B = U[g, xi]^T (Cg x OCg, column-major with ld Cg), packed once per call
            for it in prange(groups * A2, schedule="static", num_threads=nthr):
                pack_b(c'N', Cg, OCg, &u[it // A2, it % A2, 0, 0], Cg, up + it * bsz)
            for it in prange(items, schedule="static", num_threads=nthr):
                tid = omp_get_thread_num()
                R = ws + tid * per_thread
                Tr = R + g.A * g.RW
                v = Tr + g.A * g.RW + ROW_SLACK
                mm = v + A2 * vs
                tmp = mm + A2 * ms
                row = tmp + g.m * g.A * TB
                flag = row + g.RW
                ap = flag + TB
                seg = segs + tid * SEG * TB
                gi = it // nblk
                t0 = (it % nblk) * TB
                nt = min(TB, T - t0)
                ns = _segments(&g, t0, nt, seg)
                memset(flag, 0, TB * sizeof(floating_t))
                _input_tiles(&g, &x[0, gi * Cg, 0, 0], C * g.H * g.W, Cg, seg, ns,
                             R, Tr, v, vs, flag)
                if not _all_zero(flag, nt):
                    nonfinite += 1
                for xi in range(A2):
                    # row-major M[xi] (OCg x nt) = U[xi] (OCg x Cg) @ V[xi] (Cg x nt)
                    gathered_product(nt, OCg, Cg, v + xi * vs, TB, voff,
                                     up + (gi * A2 + xi) * bsz, mm + xi * ms, TB, ap)
                for o in range(OCg):
                    _output_transform(&g, mm + o * TB, ms, seg, ns, nt, tmp, row,
                                      &y[0, gi * OCg + o, 0, 0], OC * g.OH * g.OW,
                                      bias[gi * OCg + o] if has_bias else 0, stream)
                if stream:
                    cyconv_stream_fence()
    finally:
        free(up)
        free(segs)
    return nonfinite == 0


def weight_grad(const floating_t[:, :, :, ::1] dy,   # IN  (N, OC, OH, OW)
                const floating_t[:, :, :, ::1] x,    # IN  (N, C, H, W)
                floating_t[:, :, :, ::1] dw,         # OUT (OC, Cg, 3, 3)
                floating_t[::1] db,                  # OUT (OC,) (untouched unless need_db)
                index_t pad_top, index_t pad_left, int m, int groups,
                index_t tile_block, index_t n_slots, int n_threads, bint need_db):
    """dW of a 3x3 stride-1 convolution in the Winograd domain, and with ``need_db``
    db, summed from the dy patches the gradient transform reads anyway (each item's
    sums in double, then the items in order); returns finiteness.  Needs OC and Cg
    of at least 1 (the wrapper's ``bias_grad`` serves empty weights)."""
    cdef index_t N = x.shape[0], C = x.shape[1], OC = dy.shape[1]
    cdef index_t Cg = C // groups, OCg = OC // groups
    cdef tiling g = _make_tiling(x.shape[2], x.shape[3], dy.shape[2], dy.shape[3],
                                 pad_top, pad_left, m, tile_block)
    cdef index_t A2 = g.A * g.A, TB = g.TB
    cdef index_t vs = Cg * TB + XI_SKEW, ms = OCg * TB + XI_SKEW   # V's, M's xi strides
    cdef index_t T = N * g.tiles, nblk = (T + TB - 1) // TB, items = groups * nblk
    cdef index_t S = max(1, min(n_slots, items))
    cdef index_t USZ = groups * A2 * OCg * Cg
    cdef index_t per_thread = _per_thread(&g, Cg, OCg)
    cdef index_t s, it, gi, t0, nt, ns, xi, o, c, i, e, ss, tid
    cdef int nthr = <int>max(1, min(<index_t>n_threads, S))
    cdef floating_t* ws
    cdef floating_t* slots
    cdef floating_t* R
    cdef floating_t* Tr
    cdef floating_t* v
    cdef floating_t* dm
    cdef floating_t* flag
    cdef floating_t* us
    cdef index_t* segs
    cdef index_t* seg
    cdef floating_t acc, beta
    cdef double dsum
    cdef double* item_db     # (items, OCg): each item's sums of dy per channel
    cdef index_t oy, ox
    # every slot meets every group (S <= blocks per group): no slot region stays unwritten
    cdef bint every_group = nblk >= S
    cdef int nonfinite = 0
    if USZ == 0:
        return True
    ws = <floating_t*>malloc(nthr * per_thread * sizeof(floating_t))
    segs = <index_t*>malloc(nthr * SEG * TB * sizeof(index_t))
    slots = <floating_t*>malloc(S * USZ * sizeof(floating_t))
    item_db = <double*>malloc(max(1, items * OCg) * sizeof(double))
    if ws == NULL or segs == NULL or slots == NULL or item_db == NULL:
        free(ws)
        free(segs)
        free(slots)
        free(item_db)
        raise MemoryError("winograd weight gradient: cannot allocate the workspace")
    try:
        with nogil:
            for s in prange(S, schedule="dynamic", chunksize=1, num_threads=nthr):
                tid = omp_get_thread_num()
                R = ws + tid * per_thread
                Tr = R + g.A * g.RW
                v = Tr + g.A * g.RW + ROW_SLACK
                dm = v + A2 * vs
                flag = dm + A2 * ms + g.m * g.A * TB + g.RW
                seg = segs + tid * SEG * TB
                us = slots + s * USZ
                if not every_group:
                    memset(us, 0, USZ * sizeof(floating_t))
                it = s
                while it < items:
                    gi = it // nblk
                    t0 = (it % nblk) * TB
                    nt = min(TB, T - t0)
                    ns = _segments(&g, t0, nt, seg)
                    memset(flag, 0, TB * sizeof(floating_t))
                    _input_tiles(&g, &x[0, gi * Cg, 0, 0], C * g.H * g.W, Cg, seg, ns,
                                 R, Tr, v, vs, flag)
                    for o in range(OCg):
                        dsum = 0
                        for i in range(ns):
                            if o + 1 < OCg:     # as in _input_tiles
                                _prefetch_patch(&dy[seg[i * SEG + 1], gi * OCg + o + 1, 0, 0],
                                                g.OH, g.OW, seg[i * SEG + 2], seg[i * SEG + 3],
                                                g.m, seg[i * SEG + 4] * g.m)
                            _grad_transform(&g, &dy[seg[i * SEG + 1], gi * OCg + o, 0, 0],
                                            seg + i * SEG, 1, R, Tr, dm + o * TB, ms,
                                            flag)
                            if need_db:     # the segment's pixels, just read
                                oy = seg[i * SEG + 2]
                                ox = seg[i * SEG + 3]
                                dsum = dsum + _patch_sum(
                                    &dy[seg[i * SEG + 1], gi * OCg + o, oy, ox],
                                    min(g.m, g.OH - oy), min(seg[i * SEG + 4] * g.m, g.OW - ox),
                                    g.OW)
                        item_db[it * OCg + o] = dsum
                    if not _all_zero(flag, nt):
                        nonfinite += 1
                    # the slot's first item of group gi writes its dU (no zeroing pass)
                    beta = 0 if every_group and it - S < gi * nblk else 1
                    for xi in range(A2):
                        # row-major dU[xi] (OCg x Cg) += dM[xi] (OCg x nt) @ V[xi]^T (nt x Cg)
                        gemm(c'T', c'N', <int>Cg, <int>OCg, <int>nt, v + xi * vs, <int>TB,
                             dm + xi * ms, <int>TB, beta,
                             us + (gi * A2 + xi) * OCg * Cg, <int>Cg)
                    it = it + S
            # Sum the slot copies in slot order into slot 0 (each element owned).
            for e in prange(USZ, schedule="static", num_threads=nthr):
                acc = slots[e]
                for ss in range(1, S):
                    acc = acc + slots[ss * USZ + e]
                slots[e] = acc
            for o in prange(OC, schedule="static", num_threads=n_threads):
                for c in range(Cg):
                    _transform_weight_grad(
                        m, slots + (o // OCg) * A2 * OCg * Cg + (o % OCg) * Cg + c,
                        OCg * Cg, &dw[o, c, 0, 0])
                if need_db:     # the group's blocks in order
                    dsum = 0
                    for i in range(nblk):
                        dsum = dsum + item_db[((o // OCg) * nblk + i) * OCg + o % OCg]
                    db[o] = <floating_t>dsum
    finally:
        free(ws)
        free(segs)
        free(slots)
        free(item_db)
    return nonfinite == 0

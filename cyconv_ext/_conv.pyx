# Design: convolution as per-thread im2col + single-threaded GEMM.
#
# Forward.  Work items are (sample n, group g, block of output rows); the
# parallel loop (``prange``, schedule "static": items cost the same) runs over
# them, and an item owns its slice y[n, g*OCg:(g+1)*OCg, rows] outright, so the
# loop is race free.  Each thread unfolds its item's input windows into a
# private column buffer col (K = Cg*KH*KW rows, rows*OW columns) and calls
# cyconv's own single-threaded GEMM (include/cyconv_gemm.h; it measured on
# par with or ahead of single-threaded OpenBLAS on these shapes, and its
# rounding does not depend on the block size) without the GIL.  Row-major y_block = W_g @ col is the
# column-major product y_block^T = col^T @ W_g^T, so every operand is passed
# as stored, no transposes are materialised.  A 1x1, stride-1, unpadded
# kernel skips im2col: the input plane already is the column matrix.
#
# Backward.  The parallel loop runs over a fixed number S of "slots"
# (S = min(N, 16), fewer if the dW copies would exceed DW_SLOT_CAP bytes),
# schedule "dynamic"; slot s processes samples s, s+S, s+2S, ... in order.
# For each sample it (1) re-unfolds x into col and accumulates
# dW_slot[s] += dy_n @ col^T (GEMM with beta=1), (2) computes
# dcol = W^T @ dy_n (GEMM) and folds it back into dx[n] (col2im).  dx[n] is
# owned by the slot that owns n, dW_slot[s] by slot s: race free.  The slots
# are then summed in slot order (parallel over dW elements, each element's
# sum serial), and db is a per-out-channel serial sum (parallel over
# channels).  The partition of samples into slots does not depend on the
# thread count, so dx, dW and db are bitwise identical for any n_threads
# (the backward then uses at most S threads: MAX_SLOTS bounds its
# parallelism, and the float rounding of dW depends on S, not on threads).
#
# im2col / col2im work per kernel tap: where the tap's whole row is inside
# the input horizontally, its rows inside vertically are one
# strided block copy (add, for col2im) through restrict-qualified C helpers
# that GCC vectorises even for the 10-pixel rows of LeNet's conv2 (there
# im2col was 80% of the forward; the block copy made forward+backward 1.3x
# faster, the strided conv's 1.1-1.2x: steps 1 and 2 are specialised);
# padded edges keep the per-row loop.
#
# dx alternatives (measured, 1 thread, thread CPU time): the default GEMM +
# col2im above; or, for stride 1, dx as a transposed convolution (im2col of
# dy + GEMM with flipped weights, no scatter).  The latter was slower in
# float32 (VGG-like 165 vs 148 ms, CIFAR-like 130 vs 108 ms) and only ~8%
# faster in float64 and much slower when C/groups is small (a GEMM with Cg
# columns), so it is off by default (TCONV_MIN_CHANNELS) but kept, tested.
#
# A network's first layer needs no dx: ``need_dx=False`` skips step (2).
#
# Workspace per call: forward n_threads * K * rows*OW elements; backward twice
# that (once without dx) plus S copies of dW.  Output rows are blocked so that one thread's
# column buffer stays under WORKSPACE_CAP bytes of float32 (default 1 MiB, at
# least one output row: the block stays in L2 while BLAS packs it; 0.5-1 MiB
# measured best against 4-16 MiB), i.e. never a batch-wide or image-wide
# im2col.  float64 gets the same number of elements (2 MiB): at 1 MiB its
# GEMMs had half the pixels, and 2 MiB measured 3-4% faster on the float64
# CIFAR, strided and book convs (VGG even).

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from ._cgemm cimport cyconv_sgemm, cyconv_dgemm

from ._fused cimport floating_t, index_t
from ._openmp cimport omp_get_thread_num

# Cap for one thread's column buffer (im2col block), in bytes of float32
# (float64 blocks hold as many elements); tunable for tests.
WORKSPACE_CAP = 1 << 20
# Byte cap for all dW slot copies together in the backward pass.
DW_SLOT_CAP = 64 << 20
MAX_SLOTS = 16
# Stride-1 backward computes dx as a transposed convolution (im2col of dy +
# GEMM) when the group has at least this many input channels, else by
# GEMM + col2im.  Off by default: see "dx alternatives" above.
TCONV_MIN_CHANNELS = 1 << 30


ctypedef struct conv_geom:
    index_t H, W, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW


cdef conv_geom _make_geom(geom, index_t H, index_t W, index_t OH, index_t OW):
    cdef conv_geom g
    g.H = H
    g.W = W
    g.KH = geom.kernel_h
    g.KW = geom.kernel_w
    g.SH = geom.stride_h
    g.SW = geom.stride_w
    g.DH = geom.dilation_h
    g.DW = geom.dilation_w
    g.PT = geom.pad_top
    g.PL = geom.pad_left
    g.OH = OH
    g.OW = OW
    return g


@cython.cdivision(True)
cdef inline index_t _floor_div(index_t a, index_t b) noexcept nogil:
    """floor(a / b) for b > 0 (C division truncates toward zero)."""
    cdef index_t q = a / b
    if a % b != 0 and a < 0:
        q -= 1
    return q


cdef tuple _ox_ranges(conv_geom g):
    """Per kernel column kx: the output columns [lo, hi) whose tap is inside,
    i.e. 0 <= ox*SW - PL + kx*DW < W, solved for ox (O(KW), no per-ox work)."""
    lo_ = np.zeros(g.KW, dtype=np.intp)
    hi_ = np.zeros(g.KW, dtype=np.intp)
    cdef index_t[::1] lo = lo_, hi = hi_
    cdef index_t kx, offset, first, last
    with nogil:
        for kx in range(g.KW):
            offset = kx * g.DW - g.PL  # ix = ox*SW + offset
            first = max(-_floor_div(offset, g.SW), 0)  # ceil(-offset / SW)
            last = min(_floor_div(g.W - 1 - offset, g.SW), g.OW - 1)
            if first <= last:
                lo[kx] = first
                hi[kx] = last + 1
    return lo_, hi_


def ox_ranges(index_t W, index_t OW, index_t KW, index_t SW, index_t PL, index_t DW):
    """``_ox_ranges`` for a row geometry (tests compare it with the direct scan)."""
    if KW < 0 or SW < 1 or DW < 1:
        raise ValueError(f"need KW >= 0, SW >= 1 and DW >= 1, got {KW}, {SW}, {DW}")
    cdef conv_geom g
    g.W, g.OW, g.KW, g.SW, g.PL, g.DW = W, OW, KW, SW, PL, DW
    return _ox_ranges(g)


cdef inline void _gemm(char ta, char tb, int m, int n, int k,
                       const floating_t* a, int lda,           # IN
                       const floating_t* b, int ldb,           # IN
                       floating_t beta,
                       floating_t* c, int ldc) noexcept nogil: # IN/OUT
    """Column-major C = op(A) @ op(B) + beta*C with cyconv's own single-threaded
    GEMM (include/cyconv_gemm.h): every element is computed the same way for
    any row blocking.  Its status needs no check: the arguments are valid by
    construction, and 1 (malloc failed, ran on the stack) is the same result."""
    if floating_t is float:
        cyconv_sgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)
    else:
        cyconv_dgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc)


cdef extern from *:
    """
    /* rows x n block copy between distinct buffers (restrict: no alias test,
       so GCC vectorises even the short rows of small images) */
    #define CYCONV_COPY_ROWS(T, NAME)                                             \
    static inline void NAME(const T *CYTHON_RESTRICT src, Py_ssize_t src_rs,      \
                            Py_ssize_t sw, T *CYTHON_RESTRICT dst, Py_ssize_t rows, \
                            Py_ssize_t n) {                                       \
        for (Py_ssize_t r = 0; r < rows; r++) {                                   \
            const T *CYTHON_RESTRICT s = src + r * src_rs;                        \
            T *CYTHON_RESTRICT d = dst + r * n;                                   \
            for (Py_ssize_t i = 0; i < n; i++)                                    \
                d[i] = s[i * sw];                                                 \
        }                                                                         \
    }
    CYCONV_COPY_ROWS(float, cyconv_copy_rows_f)
    CYCONV_COPY_ROWS(double, cyconv_copy_rows_d)
    /* the reverse for col2im: dst rows (stride dst_rs, step sw) += src rows */
    #define CYCONV_ADD_ROWS(T, NAME)                                              \
    static inline void NAME(const T *CYTHON_RESTRICT src, T *CYTHON_RESTRICT dst, \
                            Py_ssize_t dst_rs, Py_ssize_t sw, Py_ssize_t rows,    \
                            Py_ssize_t n) {                                       \
        for (Py_ssize_t r = 0; r < rows; r++) {                                   \
            const T *CYTHON_RESTRICT s = src + r * n;                             \
            T *CYTHON_RESTRICT d = dst + r * dst_rs;                              \
            for (Py_ssize_t i = 0; i < n; i++)                                    \
                d[i * sw] += s[i];                                                \
        }                                                                         \
    }
    CYCONV_ADD_ROWS(float, cyconv_add_rows_f)
    CYCONV_ADD_ROWS(double, cyconv_add_rows_d)
    """
    void cyconv_copy_rows_f(const float* src, Py_ssize_t src_rs, Py_ssize_t sw, float* dst,
                            Py_ssize_t rows, Py_ssize_t n) noexcept nogil
    void cyconv_copy_rows_d(const double* src, Py_ssize_t src_rs, Py_ssize_t sw, double* dst,
                            Py_ssize_t rows, Py_ssize_t n) noexcept nogil
    void cyconv_add_rows_f(const float* src, float* dst, Py_ssize_t dst_rs, Py_ssize_t sw,
                           Py_ssize_t rows, Py_ssize_t n) noexcept nogil
    void cyconv_add_rows_d(const double* src, double* dst, Py_ssize_t dst_rs, Py_ssize_t sw,
                           Py_ssize_t rows, Py_ssize_t n) noexcept nogil


cdef inline void _copy_rows(const floating_t* src, index_t src_rs, index_t sw, floating_t* dst,
                            index_t rows, index_t n) noexcept nogil:
    # literal steps 1 and 2 let the compiler specialise the (inlined) loop
    if floating_t is float:
        if sw == 1:
            cyconv_copy_rows_f(src, src_rs, 1, dst, rows, n)
        elif sw == 2:
            cyconv_copy_rows_f(src, src_rs, 2, dst, rows, n)
        else:
            cyconv_copy_rows_f(src, src_rs, sw, dst, rows, n)
    else:
        if sw == 1:
            cyconv_copy_rows_d(src, src_rs, 1, dst, rows, n)
        elif sw == 2:
            cyconv_copy_rows_d(src, src_rs, 2, dst, rows, n)
        else:
            cyconv_copy_rows_d(src, src_rs, sw, dst, rows, n)


cdef inline void _add_rows(const floating_t* src, floating_t* dst, index_t dst_rs, index_t sw,
                           index_t rows, index_t n) noexcept nogil:
    if floating_t is float:
        if sw == 1:
            cyconv_add_rows_f(src, dst, dst_rs, 1, rows, n)
        elif sw == 2:
            cyconv_add_rows_f(src, dst, dst_rs, 2, rows, n)
        else:
            cyconv_add_rows_f(src, dst, dst_rs, sw, rows, n)
    else:
        if sw == 1:
            cyconv_add_rows_d(src, dst, dst_rs, 1, rows, n)
        elif sw == 2:
            cyconv_add_rows_d(src, dst, dst_rs, 2, rows, n)
        else:
            cyconv_add_rows_d(src, dst, dst_rs, sw, rows, n)


cdef inline index_t _first_row_inside(const conv_geom* g, index_t ky, index_t oy0,
                                      index_t oy1) noexcept nogil:
    """First output row in [oy0, oy1) whose tap row ky lies inside the input."""
    cdef index_t a = oy0
    while a < oy1 and a * g.SH - g.PT + ky * g.DH < 0:
        a = a + 1
    return a


cdef inline index_t _end_row_inside(const conv_geom* g, index_t ky, index_t a,
                                    index_t oy1) noexcept nogil:
    """One past the last output row in [a, oy1) whose tap row ky is inside."""
    cdef index_t b = oy1
    while b > a and (b - 1) * g.SH - g.PT + ky * g.DH >= g.H:
        b = b - 1
    return b


cdef inline void _im2col_rows(const floating_t* x,     # IN  (Cg, H, W)
                              floating_t* col,         # OUT (Cg*KH*KW, (oy1-oy0)*OW)
                              const conv_geom* g, index_t Cg, index_t oy0, index_t oy1,
                              const index_t* xlo, const index_t* xhi) noexcept nogil:
    cdef index_t c, ky, kx, oy, ox, iy, ix0, lo, hi, a, b, k = 0
    cdef index_t OW = g.OW, SW = g.SW, Pb = (oy1 - oy0) * g.OW
    cdef floating_t* d
    cdef const floating_t* xr
    for c in range(Cg):
        for ky in range(g.KH):
            for kx in range(g.KW):
                lo = xlo[kx]
                hi = xhi[kx]
                ix0 = kx * g.DW - g.PL
                if lo == 0 and hi == OW:
                    # the whole tap row is inside in x: rows [a, b) inside in y
                    # are one strided block copy, the rest (padding) zeros
                    a = _first_row_inside(g, ky, oy0, oy1)
                    b = _end_row_inside(g, ky, a, oy1)
                    d = col + k * Pb
                    if a > oy0:
                        memset(d, 0, (a - oy0) * OW * sizeof(floating_t))
                    if b > a:
                        _copy_rows(x + (c * g.H + a * g.SH - g.PT + ky * g.DH) * g.W + ix0,
                                   g.SH * g.W, SW, d + (a - oy0) * OW, b - a, OW)
                    if b < oy1:
                        memset(d + (b - oy0) * OW, 0, (oy1 - b) * OW * sizeof(floating_t))
                    k = k + 1
                    continue
                for oy in range(oy0, oy1):
                    d = col + k * Pb + (oy - oy0) * OW
                    iy = oy * g.SH - g.PT + ky * g.DH
                    if iy < 0 or iy >= g.H or hi <= lo:
                        memset(d, 0, OW * sizeof(floating_t))
                        continue
                    xr = x + (c * g.H + iy) * g.W
                    for ox in range(lo):
                        d[ox] = 0
                    if SW == 1:     # a plain loop: rows are often too short for memcpy
                        for ox in range(lo, hi):
                            d[ox] = xr[ox + ix0]
                    else:
                        for ox in range(lo, hi):
                            d[ox] = xr[ox * SW + ix0]
                    for ox in range(hi, OW):
                        d[ox] = 0
                k = k + 1


cdef inline void _col2im_rows(const floating_t* col,   # IN  (Cg*KH*KW, (oy1-oy0)*OW)
                              floating_t* x,           # IN/OUT (Cg, H, W), accumulated
                              const conv_geom* g, index_t Cg, index_t oy0, index_t oy1,
                              const index_t* xlo, const index_t* xhi) noexcept nogil:
    cdef index_t c, ky, kx, oy, ox, iy, ix0, lo, hi, a, b, k = 0
    cdef index_t OW = g.OW, SW = g.SW, Pb = (oy1 - oy0) * g.OW
    cdef const floating_t* s
    cdef floating_t* xr
    for c in range(Cg):
        for ky in range(g.KH):
            for kx in range(g.KW):
                lo = xlo[kx]
                hi = xhi[kx]
                ix0 = kx * g.DW - g.PL
                if lo == 0 and hi == OW:
                    # as in _im2col_rows: the rows inside are one strided block
                    a = _first_row_inside(g, ky, oy0, oy1)
                    b = _end_row_inside(g, ky, a, oy1)
                    if b > a:
                        _add_rows(col + k * Pb + (a - oy0) * OW,
                                  x + (c * g.H + a * g.SH - g.PT + ky * g.DH) * g.W + ix0,
                                  g.SH * g.W, SW, b - a, OW)
                    k = k + 1
                    continue
                for oy in range(oy0, oy1):
                    iy = oy * g.SH - g.PT + ky * g.DH
                    if iy < 0 or iy >= g.H:
                        continue
                    s = col + k * Pb + (oy - oy0) * OW
                    xr = x + (c * g.H + iy) * g.W + ix0
                    if SW == 1:
                        for ox in range(lo, hi):
                            xr[ox] += s[ox]
                    else:
                        for ox in range(lo, hi):
                            xr[ox * SW] += s[ox]
                k = k + 1


cdef index_t _rows_per_block(index_t K, index_t OH, index_t OW):
    cdef index_t cap_elements = WORKSPACE_CAP // 4   # the cap counts float32 elements
    cdef index_t rb = cap_elements // max(1, K * OW)
    return max(1, min(OH, rb))


def conv2d_forward(const floating_t[:, :, :, ::1] x,     # IN  (N, C, H, W)
                   const floating_t[:, :, :, ::1] w,     # IN  (OC, C/groups, KH, KW)
                   const floating_t[::1] bias,           # IN  (OC,) (ignored unless has_bias)
                   floating_t[:, :, :, ::1] y,           # OUT (N, OC, OH, OW)
                   geom, int groups, bint has_bias, int n_threads):
    """y = conv(x, w) (+ bias), written into caller-allocated ``y``."""
    cdef index_t N = x.shape[0], C = x.shape[1], OC = w.shape[0]
    cdef conv_geom g = _make_geom(geom, x.shape[2], x.shape[3], y.shape[2], y.shape[3])
    cdef index_t Cg = C // groups, OCg = OC // groups
    cdef index_t K = Cg * g.KH * g.KW, P = g.OH * g.OW, HW = g.H * g.W
    cdef bint direct = (g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1 and g.PT == 0
                        and g.PL == 0 and g.OH == g.H and g.OW == g.W)
    cdef index_t rb = g.OH if direct else _rows_per_block(K, g.OH, g.OW)
    cdef index_t nblk = (g.OH + rb - 1) // rb
    cdef index_t items = N * groups * nblk
    cdef index_t it, n, gi, blk, oy0, oy1, Pb, o, p, tid
    cdef int nt = <int>max(1, min(<index_t>n_threads, items))
    cdef floating_t* ws = NULL
    cdef floating_t* col
    cdef floating_t* yo
    cdef floating_t bo
    if items == 0 or P == 0 or OC == 0:
        return
    lo_, hi_ = _ox_ranges(g)
    cdef const index_t[::1] xlo = lo_, xhi = hi_
    if not direct:
        ws = <floating_t*>malloc(nt * K * rb * g.OW * sizeof(floating_t))
        if ws == NULL:
            raise MemoryError("conv2d_forward: cannot allocate im2col workspace")
    try:
        with nogil:
            for it in prange(items, schedule="static", num_threads=nt):
                n = it // (groups * nblk)
                gi = (it // nblk) % groups
                blk = it % nblk
                oy0 = blk * rb
                oy1 = min(oy0 + rb, g.OH)
                Pb = (oy1 - oy0) * g.OW
                yo = &y[n, gi * OCg, 0, 0] + oy0 * g.OW
                if direct:
                    _gemm(c'N', c'N', <int>Pb, <int>OCg, <int>K,
                          &x[n, gi * Cg, 0, 0] + oy0 * g.OW, <int>HW,
                          &w[gi * OCg, 0, 0, 0], <int>K, 0, yo, <int>P)
                else:
                    tid = omp_get_thread_num()
                    col = ws + tid * K * rb * g.OW
                    _im2col_rows(&x[n, gi * Cg, 0, 0], col, &g, Cg, oy0, oy1, &xlo[0], &xhi[0])
                    _gemm(c'N', c'N', <int>Pb, <int>OCg, <int>K, col, <int>Pb,
                          &w[gi * OCg, 0, 0, 0], <int>K, 0, yo, <int>P)
                if has_bias:
                    for o in range(OCg):
                        bo = bias[gi * OCg + o]
                        for p in range(Pb):
                            yo[o * P + p] = yo[o * P + p] + bo
    finally:
        free(ws)


def conv2d_backward(const floating_t[:, :, :, ::1] dy,   # IN  (N, OC, OH, OW)
                    const floating_t[:, :, :, ::1] x,    # IN  (N, C, H, W)
                    const floating_t[:, :, :, ::1] w,    # IN  (OC, C/groups, KH, KW)
                    floating_t[:, :, :, ::1] dx,         # OUT (N, C, H, W), any content
                    floating_t[:, :, :, ::1] dw,         # OUT (OC, C/groups, KH, KW)
                    floating_t[::1] db,                  # OUT (OC,)
                    geom, int groups, int n_threads, bint need_dx=True):
    """Gradients of conv2d w.r.t. input, weight and bias (caller-allocated).

    With ``need_dx`` false, ``dx`` is never touched (pass an empty array): a
    network's first layer needs only dW and db."""
    cdef index_t N = x.shape[0], C = x.shape[1], OC = w.shape[0]
    cdef conv_geom g = _make_geom(geom, x.shape[2], x.shape[3], dy.shape[2], dy.shape[3])
    cdef conv_geom gt                       # dx = transposed conv (stride-1 path)
    cdef index_t Cg = C // groups, OCg = OC // groups
    cdef index_t K = Cg * g.KH * g.KW, P = g.OH * g.OW, HW = g.H * g.W
    cdef index_t Kt = OCg * g.KH * g.KW
    cdef index_t WSZ = OC * K
    cdef bint direct = (g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1 and g.PT == 0
                        and g.PL == 0 and g.OH == g.H and g.OW == g.W)
    cdef bint tconv = need_dx and (not direct) and g.SH == 1 and g.SW == 1 and Cg >= TCONV_MIN_CHANNELS
    cdef index_t rb = g.OH if direct else _rows_per_block(K, g.OH, g.OW)
    cdef index_t nblk = (g.OH + rb - 1) // rb
    cdef index_t rbt = _rows_per_block(Kt, g.H, g.W)
    cdef index_t nblkt = (g.H + rbt - 1) // rbt
    cdef index_t wbytes = max(1, WSZ * <index_t>sizeof(floating_t))
    cdef index_t S = max(1, min(min(N, <index_t>MAX_SLOTS), <index_t>DW_SLOT_CAP // wbytes))
    cdef index_t s, n, gi, blk, oy0, oy1, Pb, tid, e, ss, o, nn, p, bufsz
    cdef int nt = <int>max(1, min(<index_t>n_threads, S))
    cdef floating_t* ws = NULL
    cdef floating_t* slots = NULL
    cdef floating_t* col
    cdef floating_t* dcol
    cdef const floating_t* a
    cdef const floating_t* dyo
    cdef floating_t acc
    if N == 0 or OC == 0 or C == 0:
        if need_dx:
            dx[...] = 0
        dw[...] = 0
        db[...] = 0
        return
    lo_, hi_ = _ox_ranges(g)
    cdef const index_t[::1] xlo = lo_, xhi = hi_
    # Stride 1: dx[c] = sum_o corr(dy[o], flip(w[o, c])) with top/left padding
    # DH*(KH-1) - PT (possibly negative: im2col bounds-checks every tap).
    gt = g
    gt.H = g.OH
    gt.W = g.OW
    gt.OH = g.H
    gt.OW = g.W
    gt.PT = g.DH * (g.KH - 1) - g.PT
    gt.PL = g.DW * (g.KW - 1) - g.PL
    tlo_, thi_ = _ox_ranges(gt)
    cdef const index_t[::1] tlo = tlo_, thi = thi_
    wt_ = np.ascontiguousarray(
        np.asarray(w).reshape(groups, OCg, Cg, g.KH, g.KW)[:, :, :, ::-1, ::-1]
        .transpose(0, 2, 1, 3, 4).reshape(C, Kt))
    cdef const floating_t[:, ::1] wt = wt_
    if direct:
        bufsz = 0
    elif tconv:
        bufsz = max(K * rb * g.OW, Kt * rbt * g.W)
    elif need_dx:
        bufsz = 2 * K * rb * g.OW
    else:
        bufsz = K * rb * g.OW
    try:
        slots = <floating_t*>malloc(S * WSZ * sizeof(floating_t))
        ws = <floating_t*>malloc(max(1, nt * bufsz) * sizeof(floating_t))
        if slots == NULL or ws == NULL:
            raise MemoryError("conv2d_backward: cannot allocate workspace")
        with nogil:
            for s in prange(S, schedule="dynamic", chunksize=1, num_threads=nt):
                tid = omp_get_thread_num()
                col = ws + tid * bufsz
                dcol = col + K * rb * g.OW
                memset(slots + s * WSZ, 0, WSZ * sizeof(floating_t))
                n = s
                while n < N:
                    for gi in range(groups):
                        if need_dx and not direct and not tconv:
                            memset(&dx[n, gi * Cg, 0, 0], 0, Cg * HW * sizeof(floating_t))
                        for blk in range(nblk):
                            oy0 = blk * rb
                            oy1 = min(oy0 + rb, g.OH)
                            Pb = (oy1 - oy0) * g.OW
                            dyo = &dy[n, gi * OCg, 0, 0] + oy0 * g.OW
                            if direct:
                                a = &x[n, gi * Cg, 0, 0] + oy0 * g.OW
                                # dW_g^T (K x OCg) += x_block (K x Pb) @ dy_block^T
                                _gemm(c'T', c'N', <int>K, <int>OCg, <int>Pb, a, <int>HW,
                                      dyo, <int>P, 1, slots + s * WSZ + gi * OCg * K, <int>K)
                                if not need_dx:
                                    continue
                                # dx_block^T (Pb x Cg) = dy_block^T (Pb x OCg) @ W_g (OCg x K)
                                _gemm(c'N', c'T', <int>Pb, <int>K, <int>OCg, dyo, <int>P,
                                      &w[gi * OCg, 0, 0, 0], <int>K, 0,
                                      &dx[n, gi * Cg, 0, 0] + oy0 * g.OW, <int>HW)
                                continue
                            _im2col_rows(&x[n, gi * Cg, 0, 0], col, &g, Cg, oy0, oy1,
                                         &xlo[0], &xhi[0])
                            _gemm(c'T', c'N', <int>K, <int>OCg, <int>Pb, col, <int>Pb,
                                  dyo, <int>P, 1, slots + s * WSZ + gi * OCg * K, <int>K)
                            if need_dx and not tconv:
                                # dcol^T (Pb x K) = dy_block^T (Pb x OCg) @ W_g (OCg x K)
                                _gemm(c'N', c'T', <int>Pb, <int>K, <int>OCg, dyo, <int>P,
                                      &w[gi * OCg, 0, 0, 0], <int>K, 0, dcol, <int>Pb)
                                _col2im_rows(dcol, &dx[n, gi * Cg, 0, 0], &g, Cg, oy0, oy1,
                                             &xlo[0], &xhi[0])
                        if tconv:
                            # dx_block (Cg x rows*W) = flip(W_g)^T (Cg x Kt) @ im2col(dy)
                            for blk in range(nblkt):
                                oy0 = blk * rbt
                                oy1 = min(oy0 + rbt, g.H)
                                Pb = (oy1 - oy0) * g.W
                                _im2col_rows(&dy[n, gi * OCg, 0, 0], col, &gt, OCg, oy0, oy1,
                                             &tlo[0], &thi[0])
                                _gemm(c'N', c'N', <int>Pb, <int>Cg, <int>Kt, col, <int>Pb,
                                      &wt[gi * Cg, 0], <int>Kt, 0,
                                      &dx[n, gi * Cg, 0, 0] + oy0 * g.W, <int>HW)
                    n = n + S
            # Reduce the slot copies in slot order: deterministic.
            for e in prange(WSZ, schedule="static", num_threads=nt):
                acc = slots[e]
                for ss in range(1, S):
                    acc = acc + slots[ss * WSZ + e]
                (&dw[0, 0, 0, 0])[e] = acc
        bias_grad(dy, db, n_threads)
    finally:
        free(slots)
        free(ws)


def bias_grad(const floating_t[:, :, :, ::1] dy,   # IN  (N, OC, OH, OW)
              floating_t[::1] db,                  # OUT (OC,)
              int n_threads):
    """db[o] = sum of dy[:, o]: a serial double sum per channel (parallel over channels)."""
    cdef index_t N = dy.shape[0], OC = dy.shape[1], P = dy.shape[2] * dy.shape[3]
    cdef index_t o, nn, p
    cdef const floating_t* dyo
    cdef double dacc
    with nogil:
        for o in prange(OC, schedule="static",
                        num_threads=<int>max(1, min(<index_t>n_threads, OC))):
            dacc = 0
            for nn in range(N):
                dyo = &dy[nn, o, 0, 0]
                for p in range(P):
                    dacc = dacc + dyo[p]
            db[o] = <floating_t>dacc

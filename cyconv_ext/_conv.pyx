# Design: convolution as per-thread im2col + cyconv's own single-threaded GEMM.
# - Forward: items (sample, group, block of output rows) each own their slice of
#   y; prange "static" over items.  W_g^T is packed once per call into the GEMM's
#   B panels (include/cyconv_gemm.h, "Packed operands"); a thread unfolds its item
#   into a private column buffer whose rows are an odd number of cache lines
#   apart (``_column_ld``), and the GEMM reads its A panels there in place
#   (gemm_gathered; only a block's last part panel is packed): bitwise the GEMM's
#   result, rounding independent of blocking, without the GIL.  (Packing every
#   panel measured 1.01-1.17x slower; unskewed rows, 4 KiB apart, had made the
#   in-place reads thrash L1.)  Row-major y = W @ col is passed as column-major
#   col^T @ W^T, so no transpose is materialised.  1x1/stride-1/unpadded kernels
#   skip im2col: the input plane already is the column matrix (plain gemm).
# - Forward with the batch in the lanes (conv2d_forward_lanes; the wrapper picks
#   it for small planes, where im2col's short rows cost the most): x copied once,
#   zero-padded, to (C, Hp, Wp, N), so that an A panel (MR images of one output
#   pixel) is MR contiguous values per tap, which the GEMM reads in place
#   (gemm_gathered); same B, tap order and kernel, so bitwise the im2col
#   forward's result.  Its workspace is one padded copy of x.
# - Backward: partitions that depend on the shape only, so results are bitwise
#   identical for any n_threads.  dW: units (sample, row block) in order; S slots
#   each own a dW copy (slot s takes units s, s+S, ...), summed in slot order.
#   dx: items (sample, group, channel block) own dx[n, those channels]: GEMM
#   (W's columns of each block packed once per call), then col2im.  db: one item
#   per channel (bias_grad's sum).  Small batches are cut finer (MIN_WORK_ITEMS)
#   so that one image uses every core.  need_dx / need_dw / need_db = False skip
#   their items.
# - Few parallel regions per call: each start wakes the sleeping threads (cyconv
#   runs OpenMP with the passive wait policy), which costs small calls more than
#   their arithmetic.  The forward packs W on the calling thread and opens one
#   region; the batch-in-lanes forward packs W as the last items of its copy
#   loop; the backward opens two, each a loop over independent items of several
#   kinds: (A) dW slots, dx's packed W columns, db's channels; (B) the slot sum
#   in chunks, dx items.
# - im2col/col2im: a tap whose row lies inside is one strided block copy through
#   the helpers of include/cyconv_im2col.h (a short row's tail is one masked
#   copy); padded edges loop per row.
# - Workspace: a thread's column buffer holds at most WORKSPACE_CAP/4 elements
#   (at least one output row), the dW copies at most DW_SLOT_CAP bytes; never a
#   batch- or image-wide im2col.  The measurements behind these choices are in
#   docs/performance.md ("Design measurements").

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from ._matmul cimport (gathered_product, gemm, gemm_gathered, gemm_mc, gemm_mr, gemm_packed,
                       pack_a, pack_b, packed_a_elems, packed_b_elems)

from ._fused cimport floating_t, index_t
from ._geometry cimport make_window_geom, window_geom
from ._openmp cimport omp_get_thread_num

# Cap for one thread's column buffer (im2col block), in bytes of float32
# (float64 blocks hold as many elements); tunable for tests.
WORKSPACE_CAP = 1 << 20
# Byte cap for all dW slot copies together in the backward pass.
DW_SLOT_CAP = 64 << 20
MAX_SLOTS = 16
# The backward cuts a small batch's work into at least this many pieces.
MIN_WORK_ITEMS = 16

cdef enum:
    BIAS_LANES = 8     # partial sums per channel in bias_grad
    REDUCE_CHUNK = 4096   # dW elements per item of the backward's slot sum


cdef inline void _check_tap_ranges(const index_t[::1] xlo, const index_t[::1] xhi,
                                   const window_geom* g):
    if xlo.shape[0] != g.KW or xhi.shape[0] != g.KW:
        raise ValueError(f"xlo and xhi need one entry per kernel column ({g.KW}), got "
                         f"{xlo.shape[0]} and {xhi.shape[0]}")


cdef extern from "include/cyconv_im2col.h" nogil:
    # include/cyconv_im2col.h (its Design comment): short runs masked, rows restrict
    void cyconv_copy_rows_f(const float* src, Py_ssize_t src_rs, Py_ssize_t sw, float* dst,
                            Py_ssize_t rows, Py_ssize_t n)
    void cyconv_copy_rows_d(const double* src, Py_ssize_t src_rs, Py_ssize_t sw, double* dst,
                            Py_ssize_t rows, Py_ssize_t n)
    void cyconv_copy_run_s2_f(const float* s, float* d, Py_ssize_t n)
    void cyconv_copy_run_s2_d(const double* s, double* d, Py_ssize_t n)
    void cyconv_add_rows_f(const float* src, float* dst, Py_ssize_t dst_rs, Py_ssize_t sw,
                           Py_ssize_t rows, Py_ssize_t n)
    void cyconv_add_rows_d(const double* src, double* dst, Py_ssize_t dst_rs, Py_ssize_t sw,
                           Py_ssize_t rows, Py_ssize_t n)


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


cdef inline void _copy_run_s2(const floating_t* s, floating_t* d, index_t n) noexcept nogil:
    if floating_t is float:
        cyconv_copy_run_s2_f(s, d, n)
    else:
        cyconv_copy_run_s2_d(s, d, n)


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


cdef inline index_t _first_row_inside(const window_geom* g, index_t ky, index_t oy0,
                                      index_t oy1) noexcept nogil:
    """First output row in [oy0, oy1) whose tap row ky lies inside the input."""
    cdef index_t a = oy0
    while a < oy1 and a * g.SH - g.PT + ky * g.DH < 0:
        a = a + 1
    return a


cdef inline index_t _end_row_inside(const window_geom* g, index_t ky, index_t a,
                                    index_t oy1) noexcept nogil:
    """One past the last output row in [a, oy1) whose tap row ky is inside."""
    cdef index_t b = oy1
    while b > a and (b - 1) * g.SH - g.PT + ky * g.DH >= g.H:
        b = b - 1
    return b


cdef inline void _im2col_rows(const floating_t* x,     # IN  (Cg, H, W)
                              floating_t* col,         # OUT (Cg*KH*KW, (oy1-oy0)*OW), ld Pb
                              const window_geom* g, index_t Cg, index_t oy0, index_t oy1,
                              const index_t* xlo, const index_t* xhi,
                              index_t Pb) noexcept nogil:
    """The column matrix of output rows oy0 .. oy1: row k (a tap) at col + k*Pb, Pb at
    least (oy1 - oy0) * OW."""
    cdef index_t c, ky, kx, oy, ox, iy, ix0, lo, hi, a, b, k = 0
    cdef index_t OW = g.OW, SW = g.SW
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
                    elif SW == 2 and hi > lo:
                        _copy_run_s2(xr + lo * 2 + ix0, d + lo, hi - lo)
                    else:
                        for ox in range(lo, hi):
                            d[ox] = xr[ox * SW + ix0]
                    for ox in range(hi, OW):
                        d[ox] = 0
                k = k + 1


cdef inline void _col2im_rows(const floating_t* col,   # IN  (Cg*KH*KW, (oy1-oy0)*OW)
                              floating_t* x,           # IN/OUT (Cg, H, W), accumulated
                              const window_geom* g, index_t Cg, index_t oy0, index_t oy1,
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


cdef inline void _packed_product(index_t m, index_t n, index_t k, const floating_t* a,
                                 index_t lda, const floating_t* bp, floating_t* c, index_t ldc,
                                 floating_t* ap, index_t mc) noexcept nogil:
    """C (m x n, ld ldc) = A @ B for column-major A (m x k, ld lda) and a packed B, with
    A packed MC rows at a time into ap (packed right before use, they are still in L2;
    bitwise the GEMM's result, which does not depend on the row blocks)."""
    cdef index_t r0 = 0
    while r0 < m:
        pack_a(c'N', min(mc, m - r0), k, a + r0, lda, ap)
        gemm_packed(min(mc, m - r0), n, k, ap, bp, 0, c + r0, ldc)
        r0 = r0 + mc


cdef inline index_t _column_ld(index_t pixels, index_t itemsize) noexcept nogil:
    """A column matrix's row stride for ``pixels`` columns: whole 64-byte lines, an odd
    number of them, so that the rows of one A panel, read in place, spread over all
    L1 sets (a stride of 1024 floats, 4 KiB, put them all in one)."""
    cdef index_t per_line = 64 // itemsize
    cdef index_t lines = (pixels + per_line - 1) // per_line
    return (lines + 1 - lines % 2) * per_line


def conv2d_forward(const floating_t[:, :, :, ::1] x,     # IN  (N, C, H, W)
                   const floating_t[:, :, :, ::1] w,     # IN  (OC, C/groups, KH, KW)
                   const floating_t[::1] bias,           # IN  (OC,) (ignored unless has_bias)
                   floating_t[:, :, :, ::1] y,           # OUT (N, OC, OH, OW)
                   geom, int groups, bint has_bias,
                   const index_t[::1] xlo, const index_t[::1] xhi,  # IN (KW,) tap ranges
                   int n_threads):
    """y = conv(x, w) (+ bias), written into caller-allocated ``y``; ``xlo``/``xhi``:
    per kernel column, the output columns whose tap is inside (the wrapper's table)."""
    cdef index_t N = x.shape[0], C = x.shape[1], OC = w.shape[0]
    cdef window_geom g = make_window_geom(geom, x.shape[2], x.shape[3], y.shape[2], y.shape[3])
    cdef index_t Cg = C // groups, OCg = OC // groups
    cdef index_t K = Cg * g.KH * g.KW, P = g.OH * g.OW, HW = g.H * g.W
    cdef bint direct = (g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1 and g.PT == 0
                        and g.PL == 0 and g.OH == g.H and g.OW == g.W)
    # row blocks within the workspace cap, of near-equal size (32 rows: 16 + 16,
    # not 28 + 4, so that one image keeps two cores equally busy; the GEMM's
    # rounding does not depend on the row blocks)
    cdef index_t rb = g.OH if direct else _rows_per_block(K, g.OH, g.OW)
    cdef index_t nblk = (g.OH + rb - 1) // rb
    cdef index_t items, it, n, gi, blk, oy0, oy1, Pb, o, p, tid
    cdef floating_t* tp = NULL     # selects the dtype of the size helpers
    cdef index_t colsz, apsz, bsz = 0 if direct else packed_b_elems(tp, K, OCg)
    cdef floating_t* col
    cdef int nt
    cdef floating_t* ws = NULL
    cdef floating_t* wp = NULL
    cdef floating_t* ap
    cdef floating_t* yo
    cdef floating_t bo
    cdef index_t ld         # the column matrix's row stride
    cdef index_t* off = NULL    # off[k] = k * ld: where A's column k starts
    rb = (g.OH + nblk - 1) // nblk
    nblk = (g.OH + rb - 1) // rb
    items = N * groups * nblk
    nt = <int>max(1, min(<index_t>n_threads, items))
    ld = _column_ld(rb * g.OW, sizeof(floating_t))
    colsz = 0 if direct else K * ld
    apsz = 0 if direct else packed_a_elems(tp, gemm_mr(tp), K)
    if items == 0 or P == 0 or OC == 0:
        return
    _check_tap_ranges(xlo, xhi, &g)
    # per thread: the column matrix and one packed A panel for a block's last rows
    # (pack_a zero-fills the rows past the block's end)
    ws = <floating_t*>malloc(max(1, nt * (colsz + apsz)) * sizeof(floating_t))
    wp = <floating_t*>malloc(max(1, groups * bsz) * sizeof(floating_t))
    off = <index_t*>malloc(max(1, K) * sizeof(index_t))
    if ws == NULL or wp == NULL or off == NULL:
        free(ws)
        free(wp)
        free(off)
        raise MemoryError("conv2d_forward: cannot allocate the im2col workspace")
    for p in range(K):
        off[p] = p * ld
    try:
        with nogil:
            # B = W_g^T (K x OCg, column-major with ld K), packed once per call by
            # this thread: a parallel region for it would wake the threads once
            # more (docs/performance.md, "Parallel regions per call")
            if not direct:
                for gi in range(groups):
                    pack_b(c'N', K, OCg, &w[gi * OCg, 0, 0, 0], K, wp + gi * bsz)
            for it in prange(items, schedule="static", num_threads=nt):
                n = it // (groups * nblk)
                gi = (it // nblk) % groups
                blk = it % nblk
                oy0 = blk * rb
                oy1 = min(oy0 + rb, g.OH)
                Pb = (oy1 - oy0) * g.OW
                yo = &y[n, gi * OCg, 0, 0] + oy0 * g.OW
                col = ws + omp_get_thread_num() * (colsz + apsz)
                ap = col + colsz
                if direct:
                    # the input plane already is the column matrix; the GEMM packs it
                    # in L2-sized blocks as it goes (measured faster than packing the
                    # whole block first, and than multiplying W's panels packed once
                    # per call: docs/performance.md)
                    gemm(c'N', c'N', <int>Pb, <int>OCg, <int>K,
                         &x[n, gi * Cg, 0, 0] + oy0 * g.OW, <int>HW,
                         &w[gi * OCg, 0, 0, 0], <int>K, 0, yo, <int>P)
                else:
                    _im2col_rows(&x[n, gi * Cg, 0, 0], col, &g, Cg, oy0, oy1,
                                 &xlo[0], &xhi[0], ld)
                    # column-major y_block^T (Pb x OCg, ld P) = col^T @ W_g^T
                    gathered_product(Pb, OCg, K, col, ld, off, wp + gi * bsz, yo, P, ap)
                if has_bias:
                    for o in range(OCg):
                        bo = bias[gi * OCg + o]
                        for p in range(Pb):
                            yo[o * P + p] = yo[o * P + p] + bo
    finally:
        free(ws)
        free(wp)
        free(off)


# Images per packed A panel of the batch-in-lanes forward, by itemsize.
cdef float _f32 = 0
cdef double _f64 = 0
LANE_PANEL = {4: gemm_mr(&_f32), 8: gemm_mr(&_f64)}
# Elements of one item's results before they are written to y (a block of rows).
LANES_RESULT_CAP = 1 << 16


cdef inline void _pack_lanes(floating_t* ap, const floating_t* src, const index_t* off,
                             index_t K, index_t mv) noexcept nogil:
    """A part panel of mv < MR images, packed: tap k's images at ap[k*MR ...] from
    src + off[k], zeros past mv (a full panel is read in place)."""
    cdef index_t k, mr = gemm_mr(ap)
    for k in range(K):
        memcpy(ap + k * mr, src + off[k], mv * sizeof(floating_t))
        memset(ap + k * mr + mv, 0, (mr - mv) * sizeof(floating_t))


def conv2d_forward_lanes(const floating_t[:, :, :, ::1] x,     # IN  (N, C, H, W)
                         const floating_t[:, :, :, ::1] w,     # IN  (OC, C/groups, KH, KW)
                         const floating_t[::1] bias,           # IN  (OC,) (if has_bias)
                         floating_t[:, :, :, ::1] y,           # OUT (N, OC, OH, OW)
                         geom, int groups, bint has_bias, int n_threads):
    """``conv2d_forward`` with the batch in the GEMM's rows (bitwise its result).

    x is first copied, zero-padded, to xt (C, Hp, Wp, N): the images of one
    pixel side by side.  An A panel (MR images of one output pixel, all K taps)
    is then MR contiguous values per tap, which the GEMM reads in place
    (gemm_gathered; a part panel is packed); y's MR x OCg block of that pixel is
    W's packed B times it.  Same B, same tap order, same GEMM: each output is
    the same sum as the im2col path's.  Items (group, panel
    of images, block of output rows) own y[those images, group's channels, those
    rows]; a block's results are gathered first, then written a channel's rows at a
    time (contiguous in y)."""
    cdef index_t N = x.shape[0], C = x.shape[1], OC = w.shape[0]
    cdef window_geom g = make_window_geom(geom, x.shape[2], x.shape[3], y.shape[2], y.shape[3])
    cdef index_t Cg = C // groups, OCg = OC // groups, P = g.OH * g.OW
    cdef index_t K = Cg * g.KH * g.KW
    # the padded plane every tap of every output reads: rows -PT .. -PT + Hp - 1
    cdef index_t Hp = (g.OH - 1) * g.SH + (g.KH - 1) * g.DH + 1
    cdef index_t Wp = (g.OW - 1) * g.SW + (g.KW - 1) * g.DW + 1
    cdef index_t plane = Hp * Wp * N
    cdef floating_t* tp = NULL     # selects the dtype of the size helpers
    cdef index_t mr = gemm_mr(tp), npan = (N + mr - 1) // mr
    # output rows per item: the block's results (mr x OCg per pixel) within
    # LANES_RESULT_CAP elements, blocks of near-equal size
    cdef index_t rb = max(1, min(g.OH, LANES_RESULT_CAP // max(1, mr * OCg * g.OW)))
    cdef index_t nrb = (g.OH + rb - 1) // rb
    cdef index_t items, bsz = packed_b_elems(tp, K, OCg), apsz = packed_a_elems(tp, mr, K)
    cdef index_t per_thread
    cdef index_t r, c, ky, kx, k, q, iy, lo, hi, n, it, gi, pan, oy, oy0, oy1, ox, n0, mv, i, o
    cdef index_t tid, pb
    cdef int nt
    cdef floating_t* xt
    cdef floating_t* wp
    cdef floating_t* ws
    cdef index_t* off
    cdef floating_t* ap
    cdef floating_t* ct
    cdef floating_t* d
    cdef floating_t* yo
    cdef const floating_t* src
    cdef floating_t bo
    rb = (g.OH + nrb - 1) // nrb
    nrb = (g.OH + rb - 1) // rb
    items = groups * npan * nrb
    per_thread = apsz + mr * OCg * rb * g.OW
    nt = <int>max(1, min(<index_t>n_threads, items))
    if items == 0 or P == 0 or OCg == 0:
        return
    xt = <floating_t*>malloc(max(1, C * plane) * sizeof(floating_t))
    wp = <floating_t*>malloc(max(1, groups * bsz) * sizeof(floating_t))
    ws = <floating_t*>malloc(max(1, nt * per_thread) * sizeof(floating_t))
    off = <index_t*>malloc(max(1, K) * sizeof(index_t))
    if xt == NULL or wp == NULL or ws == NULL or off == NULL:
        free(xt)
        free(wp)
        free(ws)
        free(off)
        raise MemoryError("conv2d_forward: cannot allocate the batch-in-lanes workspace")
    try:
        k = 0
        for c in range(Cg):             # tap k's offset in xt, in im2col's tap order
            for ky in range(g.KH):
                for kx in range(g.KW):
                    off[k] = (c * Hp + ky * g.DH) * Wp * N + kx * g.DW * N
                    k = k + 1
        with nogil:
            # one parallel region copies x into xt (items r < C*Hp: a padded row)
            # and packs B = W_g^T (K x OCg, column-major with ld K) once per call
            # (the last ``groups`` items): a second region would wake the threads
            # once more (measured, docs/performance.md "Parallel regions per call")
            for r in prange(C * Hp + groups, schedule="static", num_threads=nt):
                if r >= C * Hp:
                    gi = r - C * Hp
                    pack_b(c'N', K, OCg, &w[gi * OCg, 0, 0, 0], K, wp + gi * bsz)
                    continue
                c = r // Hp
                iy = r % Hp - g.PT
                d = xt + r * Wp * N
                if iy < 0 or iy >= g.H:
                    memset(d, 0, Wp * N * sizeof(floating_t))
                    continue
                lo = min(Wp, g.PL)
                hi = max(lo, min(Wp, g.PL + g.W))
                memset(d, 0, lo * N * sizeof(floating_t))
                memset(d + hi * N, 0, (Wp - hi) * N * sizeof(floating_t))
                for n in range(N):      # reads along x's rows; the writes stay in L1
                    src = &x[n, c, iy, 0]
                    for q in range(lo, hi):
                        d[q * N + n] = src[q - g.PL]
            for it in prange(items, schedule="static", num_threads=nt):
                gi = it // (npan * nrb)
                pan = (it // nrb) % npan
                oy0 = (it % nrb) * rb
                oy1 = min(oy0 + rb, g.OH)
                pb = (oy1 - oy0) * g.OW
                n0 = pan * mr
                mv = min(mr, N - n0)
                tid = omp_get_thread_num()
                ap = ws + tid * per_thread
                ct = ap + apsz
                for oy in range(oy0, oy1):
                    for ox in range(g.OW):
                        src = xt + gi * Cg * plane + (oy * g.SH * Wp + ox * g.SW) * N + n0
                        # column-major (mv x OCg, ld pb*mr) = A (mv x K) @ W_g^T: the
                        # block's results at ct[o, pixel, i], so that y's rows are
                        # written whole; a full panel is read in place (tap k's images
                        # at src + off[k])
                        q = ((oy - oy0) * g.OW + ox) * mr
                        if mv == mr:
                            gemm_gathered(OCg, K, src, off, wp + gi * bsz, 0, ct + q, pb * mr)
                        else:
                            _pack_lanes(ap, src, off, K, mv)
                            gemm_packed(mv, OCg, K, ap, wp + gi * bsz, 0, ct + q, pb * mr)
                for o in range(OCg):
                    for i in range(mv):
                        # the block's rows of y[n0 + i, channel] are contiguous
                        yo = &y[n0 + i, gi * OCg + o, oy0, 0]
                        src = ct + o * pb * mr + i
                        if has_bias:
                            bo = bias[gi * OCg + o]
                            for q in range(pb):
                                yo[q] = src[q * mr] + bo
                        else:
                            for q in range(pb):
                                yo[q] = src[q * mr]
    finally:
        free(xt)
        free(wp)
        free(ws)
        free(off)


cdef index_t _blocks_for(index_t units, index_t per_unit, index_t min_units):
    """How many pieces to cut each of ``units`` work units into so that there
    are at least ``min_units`` pieces (at most ``per_unit`` per unit)."""
    cdef index_t want = (min_units + units - 1) // max(1, units)
    return max(1, min(per_unit, want))


cdef inline double _channel_sum(const floating_t* dy_o, index_t N, index_t sample_stride,
                                index_t P) noexcept nogil:
    """Sum of dy[n, o, :] over n, in BIAS_LANES interleaved partial sums (a local
    array: private to the calling thread) added in lane order at the end."""
    cdef double lanes[BIAS_LANES]
    cdef double total = 0
    cdef index_t PL = P - P % BIAS_LANES, n, p, j
    cdef const floating_t* row
    for j in range(BIAS_LANES):
        lanes[j] = 0
    for n in range(N):
        row = dy_o + n * sample_stride
        p = 0
        while p < PL:
            for j in range(BIAS_LANES):
                lanes[j] = lanes[j] + row[p + j]
            p = p + BIAS_LANES
        for p in range(PL, P):
            lanes[p - PL] = lanes[p - PL] + row[p]
    for j in range(BIAS_LANES):
        total = total + lanes[j]
    return total


def conv2d_backward(const floating_t[:, :, :, ::1] dy,   # IN  (N, OC, OH, OW)
                    const floating_t[:, :, :, ::1] x,    # IN  (N, C, H, W)
                    const floating_t[:, :, :, ::1] w,    # IN  (OC, C/groups, KH, KW)
                    floating_t[:, :, :, ::1] dx,         # OUT (N, C, H, W), any content
                    floating_t[:, :, :, ::1] dw,         # OUT (OC, C/groups, KH, KW)
                    floating_t[::1] db,                  # OUT (OC,) (if need_db)
                    geom, int groups,
                    const index_t[::1] xlo, const index_t[::1] xhi,  # IN (KW,) as forward
                    int n_threads, bint need_dx, bint need_dw, bint need_db):
    """Gradients of conv2d w.r.t. input, weight and bias (caller-allocated; db as
    ``bias_grad`` computes it, bitwise).

    With ``need_dx`` false, ``dx`` is never touched (pass an empty array): a
    network's first layer needs only dW.  With ``need_dw`` / ``need_db`` false,
    ``dw`` / ``db`` are never touched (computed elsewhere).

    Two parallel regions, each of independent items (every region start wakes
    the sleeping threads): (A) the dW slots, the packing of W's columns for dx
    and db's channels; (B) the slot sum, in chunks, and the dx items."""
    cdef index_t N = x.shape[0], C = x.shape[1], OC = w.shape[0]
    cdef window_geom g = make_window_geom(geom, x.shape[2], x.shape[3], dy.shape[2], dy.shape[3])
    cdef index_t Cg = C // groups, OCg = OC // groups, KK = g.KH * g.KW
    cdef index_t K = Cg * KK, P = g.OH * g.OW, HW = g.H * g.W
    cdef index_t WSZ = OC * K
    cdef bint direct = (g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1 and g.PT == 0
                        and g.PL == 0 and g.OH == g.H and g.OW == g.W)
    # dW units: (sample, block of output rows); blocks are cut finer for small
    # batches so that there are enough units for every core.
    cdef index_t rbw = g.OH if direct else _rows_per_block(K, g.OH, g.OW)
    cdef index_t cut = _blocks_for(N, g.OH, MIN_WORK_ITEMS)
    cdef index_t nblkw, units
    # dx items: (sample, group, block of input channels), channels cut only
    # when there are too few (sample, group) pairs.
    cdef index_t ncb = _blocks_for(N * groups, Cg, MIN_WORK_ITEMS)
    cdef index_t cb = (Cg + ncb - 1) // ncb
    cdef index_t rbx = g.OH if direct else _rows_per_block(cb * KK, g.OH, g.OW)
    cdef index_t nblkx = (g.OH + rbx - 1) // rbx
    cdef index_t items
    cdef index_t wbytes = max(1, WSZ * <index_t>sizeof(floating_t))
    cdef index_t S
    cdef index_t s, u, n, gi, blk, oy0, oy1, Pb, tid, e, ss, it, c0, nc, o, e0
    cdef index_t npack, nred, di
    cdef int nt
    cdef floating_t* ws = NULL
    cdef floating_t* slots = NULL
    cdef floating_t* col
    cdef const floating_t* dyo
    cdef floating_t acc
    if N == 0 or OC == 0 or C == 0:
        if need_dx:
            dx[...] = 0
        if need_dw:
            dw[...] = 0
        if need_db:
            bias_grad(dy, db, n_threads)
        return
    rbw = min(rbw, (g.OH + cut - 1) // cut)
    nblkw = (g.OH + rbw - 1) // rbw
    units = N * nblkw
    S = max(1, min(min(units, <index_t>MAX_SLOTS), <index_t>DW_SLOT_CAP // wbytes)) if need_dw else 0
    ncb = (Cg + cb - 1) // cb
    items = N * groups * ncb
    npack = groups * ncb if need_dx else 0
    nred = (WSZ + REDUCE_CHUNK - 1) // REDUCE_CHUNK if need_dw else 0
    nt = <int>max(1, min(<index_t>n_threads, max(S + npack + (OC if need_db else 0),
                                                  nred + (items if need_dx else 0))))
    _check_tap_ranges(xlo, xhi, &g)
    cdef index_t bufsz = 0 if direct else max(K * rbw * g.OW, cb * KK * rbx * g.OW)
    # dx's operands: dy's row block packed per item (apsz), the kernel's
    # columns of each (group, channel block) packed once per call (bszx)
    cdef floating_t* tp = NULL     # selects the dtype of the size helpers
    cdef index_t mc = gemm_mc(tp)
    cdef index_t apsz = packed_a_elems(tp, min(mc, rbx * g.OW), OCg) if need_dx else 0
    cdef index_t bszx = packed_b_elems(tp, OCg, cb * KK) if need_dx else 0
    cdef index_t per_thread = bufsz + apsz
    cdef floating_t* wpx = NULL
    cdef floating_t* ap
    try:
        slots = <floating_t*>malloc(max(1, S * WSZ) * sizeof(floating_t))
        ws = <floating_t*>malloc(max(1, nt * per_thread) * sizeof(floating_t))
        wpx = <floating_t*>malloc(max(1, groups * ncb * bszx) * sizeof(floating_t))
        if slots == NULL or ws == NULL or wpx == NULL:
            raise MemoryError("conv2d_backward: cannot allocate workspace")
        with nogil:
            # (A) items s < S: dW slot s owns dW_slot[s] and takes units s, s+S, ...
            # in order; then the dx B panels (W_g[:, a block's columns], OCg x
            # nc*KK, packed once); then db's channels
            for s in prange(S + npack + (OC if need_db else 0), schedule="dynamic",
                            chunksize=1, num_threads=nt):
                if s >= S + npack:
                    o = s - S - npack
                    db[o] = <floating_t>_channel_sum(&dy[0, o, 0, 0], N, OC * P, P)
                    continue
                if s >= S:
                    it = s - S
                    gi = it // ncb
                    c0 = (it % ncb) * cb
                    pack_b(c'T', OCg, min(cb, Cg - c0) * KK, &w[gi * OCg, c0, 0, 0], K,
                           wpx + it * bszx)
                    continue
                col = ws + omp_get_thread_num() * per_thread
                memset(slots + s * WSZ, 0, WSZ * sizeof(floating_t))
                u = s
                while u < units:
                    n = u // nblkw
                    oy0 = (u % nblkw) * rbw
                    oy1 = min(oy0 + rbw, g.OH)
                    Pb = (oy1 - oy0) * g.OW
                    for gi in range(groups):
                        dyo = &dy[n, gi * OCg, 0, 0] + oy0 * g.OW
                        if direct:
                            # dW_g^T (K x OCg) += x_block (K x Pb) @ dy_block^T
                            gemm(c'T', c'N', <int>K, <int>OCg, <int>Pb,
                                  &x[n, gi * Cg, 0, 0] + oy0 * g.OW, <int>HW,
                                  dyo, <int>P, 1, slots + s * WSZ + gi * OCg * K, <int>K)
                        else:
                            _im2col_rows(&x[n, gi * Cg, 0, 0], col, &g, Cg, oy0, oy1,
                                         &xlo[0], &xhi[0], Pb)
                            gemm(c'T', c'N', <int>K, <int>OCg, <int>Pb, col, <int>Pb,
                                  dyo, <int>P, 1, slots + s * WSZ + gi * OCg * K, <int>K)
                    u = u + S
            # (B) items it < nred: a chunk of the slot sum, in slot order
            # (deterministic); then dx: item (n, gi, channel block) owns dx[n, its
            # channels]: dcol^T (Pb x nc*KK) = dy_block^T (Pb x OCg) @ W_g[:, its
            # columns], folded back by col2im, row blocks in order.
            for it in prange(nred + (items if need_dx else 0), schedule="dynamic",
                             chunksize=1, num_threads=nt):
                if it < nred:
                    e0 = it * REDUCE_CHUNK
                    for e in range(e0, min(e0 + REDUCE_CHUNK, WSZ)):
                        acc = slots[e]
                        for ss in range(1, S):
                            acc = acc + slots[ss * WSZ + e]
                        (&dw[0, 0, 0, 0])[e] = acc
                    continue
                di = it - nred
                col = ws + omp_get_thread_num() * per_thread
                ap = col + bufsz
                n = di // (groups * ncb)
                gi = (di // ncb) % groups
                c0 = (di % ncb) * cb
                nc = min(cb, Cg - c0)
                if not direct:
                    memset(&dx[n, gi * Cg + c0, 0, 0], 0, nc * HW * sizeof(floating_t))
                for blk in range(nblkx):
                    oy0 = blk * rbx
                    oy1 = min(oy0 + rbx, g.OH)
                    Pb = (oy1 - oy0) * g.OW
                    # A = dy_block^T (Pb x OCg, column-major with ld P)
                    dyo = &dy[n, gi * OCg, 0, 0] + oy0 * g.OW
                    if direct:
                        _packed_product(Pb, nc, OCg, dyo, P, wpx + (di % (groups * ncb)) * bszx,
                                        &dx[n, gi * Cg + c0, 0, 0] + oy0 * g.OW, HW, ap, mc)
                    else:
                        _packed_product(Pb, nc * KK, OCg, dyo, P,
                                        wpx + (di % (groups * ncb)) * bszx, col, Pb, ap, mc)
                        _col2im_rows(col, &dx[n, gi * Cg + c0, 0, 0], &g, nc, oy0, oy1,
                                     &xlo[0], &xhi[0])
    finally:
        free(slots)
        free(ws)
        free(wpx)


def bias_grad(const floating_t[:, :, :, ::1] dy,   # IN  (N, OC, OH, OW)
              floating_t[::1] db,                  # OUT (OC,)
              int n_threads):
    """db[o] = sum of dy[:, o] in double, parallel over channels.  The partial
    sums of ``_channel_sum`` fix the order of the additions (bitwise the same
    for any thread count) and let the compiler vectorise them, where one
    running sum would be a serial chain of dependent additions."""
    cdef index_t N = dy.shape[0], OC = dy.shape[1], P = dy.shape[2] * dy.shape[3]
    cdef index_t o
    if N == 0 or P == 0:
        db[...] = 0
        return
    with nogil:
        for o in prange(OC, schedule="static",
                        num_threads=<int>max(1, min(<index_t>n_threads, OC))):
            db[o] = <floating_t>_channel_sum(&dy[0, o, 0, 0], N, OC * P, P)

# Design: max- and average-pooling kernels as direct loops.
#
# Loop order: (plane = n*C + c) -> output row -> output column -> window row ->
# window column.  The parallel loop is over planes (``prange``, schedule
# "static": every plane costs the same, and a static partition keeps each
# thread on one contiguous slab of memory).  A plane owns its whole output
# (forward) and its whole input gradient (backward), so no two threads ever
# write the same element: race free by construction, and every element is
# computed by the same sequential code whatever the thread count, so results
# are bitwise identical for any ``n_threads``.
#
# Window bounds are clipped once per output row / column (tables computed
# before the parallel region, shared read-only), so the inner loops touch only
# input elements and contain no padding tests.  Backward kernels zero their
# own plane of ``dx`` inside the parallel loop (the caller may pass
# ``np.empty``), then scatter-add into it; max-pool backward scatters through
# the int64 argmax indices of its own plane.
#
# Workspace per call: four small index tables (OH + OW entries each) and, for
# average pooling, one (OH, OW) divisor table.  No per-thread scratch.

import numpy as np

cimport cython
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t
from libc.string cimport memset

from ._fused cimport floating_t, index_t


def _clip_tables(Py_ssize_t out, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t dil,
                 Py_ssize_t k, Py_ssize_t size):
    """For each output position: first input coordinate (may be < 0) and the
    half-open range [lo, hi) of kernel taps that land inside ``[0, size)``."""
    start = np.arange(out, dtype=np.intp) * stride - pad
    taps = np.arange(k, dtype=np.intp)
    coords = start[:, None] + taps[None, :] * dil
    inside = (coords >= 0) & (coords < size)
    any_in = inside.any(axis=1)
    lo = np.where(any_in, np.argmax(inside, axis=1), 0).astype(np.intp)
    hi = np.where(any_in, k - np.argmax(inside[:, ::-1], axis=1), 0).astype(np.intp)
    return start, lo, hi


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


cdef inline void _max_pool_plane(const floating_t* plane,       # IN  (H*W)
                                 floating_t* y,                 # OUT (OH*OW)
                                 int64_t* ind,                  # OUT (OH*OW)
                                 index_t W, index_t OH, index_t OW,
                                 index_t dh, index_t dw,
                                 const index_t* ys, const index_t* kylo, const index_t* kyhi,
                                 const index_t* xs, const index_t* kxlo, const index_t* kxhi,
                                 ) noexcept nogil:
    cdef index_t oy, ox, o
    cdef floating_t best
    for oy in range(OH):
        for ox in range(OW):
            o = oy * OW + ox
            ind[o] = _window_argmax(plane, ys[oy], xs[ox], W, dh, dw,
                                    kylo[oy], kyhi[oy], kxlo[ox], kxhi[ox], &best)
            y[o] = best


cdef inline void _max_pool_plane_2x2s2(const floating_t* plane,  # IN  (H*W)
                                       floating_t* y,            # OUT (OH*OW)
                                       int64_t* ind,             # OUT (OH*OW)
                                       index_t W, index_t OH, index_t OW) noexcept nogil:
    """Fast path: 2x2 window, stride 2, no padding/dilation, every window
    fully inside (the common CNN case).  Same tie/NaN rule, unrolled."""
    cdef index_t oy, ox, o, r0, r1, bi
    cdef floating_t a, b, c, d, best
    for oy in range(OH):
        r0 = 2 * oy * W
        r1 = r0 + W
        for ox in range(OW):
            o = oy * OW + ox
            a = plane[r0 + 2 * ox]
            b = plane[r0 + 2 * ox + 1]
            c = plane[r1 + 2 * ox]
            d = plane[r1 + 2 * ox + 1]
            best = a
            bi = r0 + 2 * ox
            if a == a:
                if b > best or b != b:
                    best = b
                    bi = r0 + 2 * ox + 1
                if best == best:
                    if c > best or c != c:
                        best = c
                        bi = r1 + 2 * ox
                    if best == best:
                        if d > best or d != d:
                            best = d
                            bi = r1 + 2 * ox + 1
            y[o] = best
            ind[o] = bi


def max_pool2d_forward(const floating_t[:, :, :, ::1] x,      # IN  (N, C, H, W)
                       floating_t[:, :, :, ::1] y,            # OUT (N, C, OH, OW)
                       int64_t[:, :, :, ::1] indices,         # OUT (N, C, OH, OW)
                       geom, int n_threads):
    """Max pooling forward into caller-allocated ``y`` and ``indices``."""
    cdef index_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef index_t OH = y.shape[2], OW = y.shape[3]
    cdef index_t dh = geom.dilation_h, dw = geom.dilation_w
    cdef index_t planes = N * C, p, n, c
    ys_, kylo_, kyhi_ = _clip_tables(OH, geom.stride_h, geom.pad_top, dh, geom.kernel_h, H)
    xs_, kxlo_, kxhi_ = _clip_tables(OW, geom.stride_w, geom.pad_left, dw, geom.kernel_w, W)
    cdef const index_t[::1] ys = ys_, kylo = kylo_, kyhi = kyhi_
    cdef const index_t[::1] xs = xs_, kxlo = kxlo_, kxhi = kxhi_
    cdef bint fast = (geom.kernel_h == 2 and geom.kernel_w == 2 and geom.stride_h == 2
                      and geom.stride_w == 2 and dh == 1 and dw == 1
                      and geom.pad_top == 0 and geom.pad_left == 0
                      and 2 * OH <= H and 2 * OW <= W)
    if planes == 0 or OH * OW == 0:
        return
    with nogil:
        for p in prange(planes, schedule="static", num_threads=n_threads):
            n = p // C
            c = p % C
            if fast:
                _max_pool_plane_2x2s2(&x[n, c, 0, 0], &y[n, c, 0, 0], &indices[n, c, 0, 0],
                                      W, OH, OW)
            else:
                _max_pool_plane(&x[n, c, 0, 0], &y[n, c, 0, 0], &indices[n, c, 0, 0],
                                W, OH, OW, dh, dw,
                                &ys[0], &kylo[0], &kyhi[0], &xs[0], &kxlo[0], &kxhi[0])


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


def avg_divisor(geom, bint count_include_pad, divisor_override, dtype):
    """Per-output divisor (OH, OW) in ``dtype``: PyTorch's rule, exactly as the
    NumPy reference computes it (window clipped to the padded extent, or to
    the input; ``divisor_override`` replaces both)."""
    if divisor_override is not None:
        return np.full((geom.out_h, geom.out_w), divisor_override, dtype=dtype)

    def extent(out, stride, pad_before, pad_after, k, size):
        start = np.arange(out) * stride - pad_before
        end = np.minimum(start + k, size + pad_after)
        return end - start, np.minimum(end, size) - np.maximum(start, 0)

    ph, ih = extent(geom.out_h, geom.stride_h, geom.pad_top, geom.pad_bottom,
                    geom.kernel_h, geom.in_h)
    pw, iw = extent(geom.out_w, geom.stride_w, geom.pad_left, geom.pad_right,
                    geom.kernel_w, geom.in_w)
    counts = np.outer(ph, pw) if count_include_pad else np.outer(ih, iw)
    return np.ascontiguousarray(counts.astype(dtype))


cdef inline void _avg_pool_plane(const floating_t* plane,      # IN  (H*W)
                                 floating_t* y,                # OUT (OH*OW)
                                 const floating_t* div,        # IN  (OH*OW)
                                 index_t W, index_t OH, index_t OW, index_t dh, index_t dw,
                                 const index_t* ys, const index_t* kylo, const index_t* kyhi,
                                 const index_t* xs, const index_t* kxlo, const index_t* kxhi,
                                 ) noexcept nogil:
    cdef index_t oy, ox, ky, kx, off
    cdef floating_t s
    for oy in range(OH):
        for ox in range(OW):
            s = 0
            for ky in range(kylo[oy], kyhi[oy]):
                off = (ys[oy] + ky * dh) * W + xs[ox]
                for kx in range(kxlo[ox], kxhi[ox]):
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
                       geom, int n_threads):
    """Average pooling forward: window sum of input elements / divisor."""
    cdef index_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef index_t OH = y.shape[2], OW = y.shape[3]
    cdef index_t dh = geom.dilation_h, dw = geom.dilation_w
    cdef index_t planes = N * C, p, n, c
    ys_, kylo_, kyhi_ = _clip_tables(OH, geom.stride_h, geom.pad_top, dh, geom.kernel_h, H)
    xs_, kxlo_, kxhi_ = _clip_tables(OW, geom.stride_w, geom.pad_left, dw, geom.kernel_w, W)
    cdef const index_t[::1] ys = ys_, kylo = kylo_, kyhi = kyhi_
    cdef const index_t[::1] xs = xs_, kxlo = kxlo_, kxhi = kxhi_
    cdef bint fast = (geom.kernel_h == 2 and geom.kernel_w == 2 and geom.stride_h == 2
                      and geom.stride_w == 2 and dh == 1 and dw == 1
                      and geom.pad_top == 0 and geom.pad_left == 0
                      and 2 * OH <= H and 2 * OW <= W)
    if planes == 0 or OH * OW == 0:
        return
    with nogil:
        for p in prange(planes, schedule="static", num_threads=n_threads):
            n = p // C
            c = p % C
            if fast:
                _avg_pool_plane_2x2s2(&x[n, c, 0, 0], &y[n, c, 0, 0], &divisor[0, 0], W, OH, OW)
            else:
                _avg_pool_plane(&x[n, c, 0, 0], &y[n, c, 0, 0], &divisor[0, 0],
                                W, OH, OW, dh, dw,
                                &ys[0], &kylo[0], &kyhi[0], &xs[0], &kxlo[0], &kxhi[0])


cdef inline void _avg_unpool_plane(const floating_t* dy,       # IN  (OH*OW)
                                   floating_t* dx,             # OUT (H*W)
                                   const floating_t* div,      # IN  (OH*OW)
                                   index_t H, index_t W, index_t OH, index_t OW,
                                   index_t dh, index_t dw,
                                   const index_t* ys, const index_t* kylo, const index_t* kyhi,
                                   const index_t* xs, const index_t* kxlo, const index_t* kxhi,
                                   ) noexcept nogil:
    cdef index_t oy, ox, ky, kx, off
    cdef floating_t share
    memset(dx, 0, H * W * sizeof(floating_t))
    for oy in range(OH):
        for ox in range(OW):
            share = dy[oy * OW + ox] / div[oy * OW + ox]
            for ky in range(kylo[oy], kyhi[oy]):
                off = (ys[oy] + ky * dh) * W + xs[ox]
                for kx in range(kxlo[ox], kxhi[ox]):
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
                        geom, int n_threads):
    """Average pooling backward: each output's share dy/divisor is added to
    every input element of its window (each plane zeroes its own dx)."""
    cdef index_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef index_t OH = dy.shape[2], OW = dy.shape[3]
    cdef index_t dh = geom.dilation_h, dw = geom.dilation_w
    cdef index_t planes = N * C, p, n, c
    ys_, kylo_, kyhi_ = _clip_tables(OH, geom.stride_h, geom.pad_top, dh, geom.kernel_h, H)
    xs_, kxlo_, kxhi_ = _clip_tables(OW, geom.stride_w, geom.pad_left, dw, geom.kernel_w, W)
    cdef const index_t[::1] ys = ys_, kylo = kylo_, kyhi = kyhi_
    cdef const index_t[::1] xs = xs_, kxlo = kxlo_, kxhi = kxhi_
    cdef bint fast = (geom.kernel_h == 2 and geom.kernel_w == 2 and geom.stride_h == 2
                      and geom.stride_w == 2 and dh == 1 and dw == 1
                      and geom.pad_top == 0 and geom.pad_left == 0
                      and 2 * OH <= H and 2 * OW <= W)
    if planes == 0 or H * W == 0:
        return
    with nogil:
        for p in prange(planes, schedule="static", num_threads=n_threads):
            n = p // C
            c = p % C
            if OH * OW == 0:
                memset(&dx[n, c, 0, 0], 0, H * W * sizeof(floating_t))
            elif fast:
                _avg_unpool_plane_2x2s2(&dy[n, c, 0, 0], &dx[n, c, 0, 0], &divisor[0, 0],
                                        H, W, OH, OW)
            else:
                _avg_unpool_plane(&dy[n, c, 0, 0], &dx[n, c, 0, 0], &divisor[0, 0],
                                  H, W, OH, OW, dh, dw,
                                  &ys[0], &kylo[0], &kyhi[0], &xs[0], &kxlo[0], &kxhi[0])

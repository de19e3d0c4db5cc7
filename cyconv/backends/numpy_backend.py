"""The NumPy reference kernels: the truth every other backend is tested against.

Written for clarity, and exact in float64: convolution is im2col followed by
one matrix product per group (the textbook's algorithm, ch. 7), pooling reads
the same im2col windows.  See :mod:`cyconv.backends` for the kernel contract.
``n_threads`` is accepted for interface compatibility and ignored (NumPy's
BLAS has its own threads).
"""

from __future__ import annotations

import numpy as np

from cyconv._blas import matmul

from ._pool_tables import avg_divisor

__all__ = [
    "im2col",
    "col2im",
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "relu_forward",
    "relu_backward",
]


def _padded_extent(geom):
    """Padded (H, W) that holds every window, and the extra bottom/right padding.

    Ceil rounding can place the last window past ``pad_bottom``/``pad_right``;
    those positions are padding too.
    """
    need_h = (geom.out_h - 1) * geom.stride_h + geom.dilation_h * (geom.kernel_h - 1) + 1
    need_w = (geom.out_w - 1) * geom.stride_w + geom.dilation_w * (geom.kernel_w - 1) + 1
    bottom = max(need_h - geom.pad_top - geom.in_h, 0)
    right = max(need_w - geom.pad_left - geom.in_w, 0)
    return bottom, right


def _pad(x, geom, value):
    bottom, right = _padded_extent(geom)
    return np.pad(x, ((0, 0), (0, 0), (geom.pad_top, bottom), (geom.pad_left, right)),
                  mode="constant", constant_values=value)


def _taps(geom):
    """``(ky, kx, window)`` for every kernel tap: ``window`` indexes, in the padded
    (N, C, H, W) image, the pixels that tap reads for every output position."""
    for ky in range(geom.kernel_h):
        y0 = ky * geom.dilation_h
        rows = slice(y0, y0 + geom.stride_h * geom.out_h, geom.stride_h)
        for kx in range(geom.kernel_w):
            x0 = kx * geom.dilation_w
            cols = slice(x0, x0 + geom.stride_w * geom.out_w, geom.stride_w)
            yield ky, kx, (slice(None), slice(None), rows, cols)


def im2col(x, geom, pad_value=0.0):
    """Gather every window of ``x`` (N, C, H, W) into (N, C, KH, KW, OH, OW)."""
    n, c = x.shape[:2]
    img = _pad(x, geom, pad_value)
    cols = np.empty((n, c, geom.kernel_h, geom.kernel_w, geom.out_h, geom.out_w), dtype=x.dtype)
    for ky, kx, window in _taps(geom):
        cols[:, :, ky, kx] = img[window]
    return cols


def col2im(cols, x_shape, geom):
    """Adjoint of :func:`im2col` (padding contributions are dropped)."""
    n, c, h, w = x_shape
    bottom, right = _padded_extent(geom)
    img = np.zeros((n, c, h + geom.pad_top + bottom, w + geom.pad_left + right), dtype=cols.dtype)
    for ky, kx, window in _taps(geom):
        img[window] += cols[:, :, ky, kx]
    return img[:, :, geom.pad_top:geom.pad_top + h, geom.pad_left:geom.pad_left + w]


def _group_matrices(cols, groups):
    """Split im2col output per group into (N*OH*OW, C/g*KH*KW) matrices."""
    n, c, kh, kw, oh, ow = cols.shape
    cg = c // groups
    per_group = cols.reshape(n, groups, cg * kh * kw, oh * ow)
    return [per_group[:, g].transpose(0, 2, 1).reshape(n * oh * ow, cg * kh * kw)
            for g in range(groups)]


#: The reference computes every convolution by im2col + matrix product.
CONV2D_ALGORITHMS = ("gemm",)


def conv2d_forward(x, w, b, geom, groups=1, n_threads=1, algorithm="gemm"):
    n = x.shape[0]
    oc = w.shape[0]
    ocg = oc // groups
    cols = _group_matrices(im2col(x, geom), groups)
    y = np.empty((n, geom.out_h, geom.out_w, oc), dtype=x.dtype)
    for g in range(groups):
        w_mat = w[g * ocg:(g + 1) * ocg].reshape(ocg, -1)
        y[..., g * ocg:(g + 1) * ocg] = matmul(cols[g], w_mat.T, n_threads).reshape(
            n, geom.out_h, geom.out_w, ocg)
    if b is not None:
        y += b
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def conv2d_backward(dy, x, w, geom, groups=1, n_threads=1, need_dx=True, algorithm="gemm"):
    n, c = x.shape[:2]
    oc = w.shape[0]
    ocg, cg = oc // groups, c // groups
    cols = _group_matrices(im2col(x, geom), groups)
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(-1, oc)
    dw = np.empty_like(w)
    dcols = (np.empty((n, c, geom.kernel_h, geom.kernel_w, geom.out_h, geom.out_w), dtype=x.dtype)
             if need_dx else None)
    for g in range(groups):
        dy_g = dy_mat[:, g * ocg:(g + 1) * ocg]
        w_mat = w[g * ocg:(g + 1) * ocg].reshape(ocg, -1)
        dw[g * ocg:(g + 1) * ocg] = matmul(dy_g.T, cols[g], n_threads).reshape(
            w[g * ocg:(g + 1) * ocg].shape)
        if need_dx:
            dcol = matmul(dy_g, w_mat, n_threads).reshape(n, geom.out_h, geom.out_w, cg, geom.kernel_h,
                                          geom.kernel_w)
            dcols[:, g * cg:(g + 1) * cg] = dcol.transpose(0, 3, 4, 5, 1, 2)
    dx = np.ascontiguousarray(col2im(dcols, x.shape, geom)) if need_dx else None
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


def _window_offsets(geom):
    """Flat input offset ``h * W + w`` of every window position, -1 in padding.

    Shape (KH*KW, OH, OW), in row-major window order.
    """
    ky = np.arange(geom.kernel_h)[:, None, None, None]
    kx = np.arange(geom.kernel_w)[None, :, None, None]
    oy = np.arange(geom.out_h)[None, None, :, None]
    ox = np.arange(geom.out_w)[None, None, None, :]
    rows = oy * geom.stride_h - geom.pad_top + ky * geom.dilation_h
    cols = ox * geom.stride_w - geom.pad_left + kx * geom.dilation_w
    inside = (rows >= 0) & (rows < geom.in_h) & (cols >= 0) & (cols < geom.in_w)
    offsets = np.where(inside, rows * geom.in_w + cols, -1)
    return offsets.reshape(geom.kernel_h * geom.kernel_w, geom.out_h, geom.out_w)


def max_pool2d_forward(x, geom, n_threads=1):
    n, c = x.shape[:2]
    windows = im2col(x, geom, pad_value=-np.inf).reshape(
        n, c, geom.kernel_h * geom.kernel_w, geom.out_h, geom.out_w)
    offsets = _window_offsets(geom)
    inside = offsets >= 0
    # Rank every position so that one argmax implements the tie rule: NaN beats
    # numbers, numbers beat padding, and argmax takes the first of equals.
    is_nan = np.isnan(windows)
    key = np.where(inside, windows, -np.inf)
    best = np.where(is_nan.any(axis=2), np.nan, np.max(np.where(is_nan, -np.inf, key), axis=2))
    hit = np.where(np.isnan(best)[:, :, None], is_nan, (key == best[:, :, None]) & inside)
    first = np.argmax(hit, axis=2)
    indices = np.take_along_axis(np.broadcast_to(offsets, windows.shape), first[:, :, None], 2)[:, :, 0]
    indices = np.where(hit.any(axis=2), indices, -1).astype(np.int64)
    y = np.where(indices >= 0, best, -np.inf).astype(x.dtype)
    return y, indices


def max_pool2d_backward(dy, indices, x_shape, n_threads=1):
    n, c, h, w = x_shape
    planes = n * c
    flat_idx = indices.reshape(planes, -1)
    grads = dy.reshape(planes, -1)
    dx = np.zeros((planes, h * w), dtype=dy.dtype)
    rows = np.broadcast_to(np.arange(planes)[:, None], flat_idx.shape)
    keep = flat_idx >= 0
    np.add.at(dx, (rows[keep], flat_idx[keep]), grads[keep])
    return dx.reshape(x_shape)


def avg_pool2d_forward(x, geom, count_include_pad=True, divisor_override=None, n_threads=1):
    sums = im2col(x, geom).sum(axis=(2, 3))
    return sums / avg_divisor(geom, count_include_pad, divisor_override, x.dtype)


def avg_pool2d_backward(dy, x_shape, geom, count_include_pad=True, divisor_override=None,
                        n_threads=1):
    share = dy / avg_divisor(geom, count_include_pad, divisor_override, dy.dtype)
    cols = np.broadcast_to(share[:, :, None, None], share.shape[:2] + (geom.kernel_h, geom.kernel_w)
                           + share.shape[2:])
    return np.ascontiguousarray(col2im(cols, x_shape, geom))


def relu_forward(x, n_threads=1):
    positive = x > 0
    return np.maximum(x, x.dtype.type(0)), positive


def relu_backward(dout, positive, n_threads=1):
    return dout * positive

"""Reference results: the numpy backend on clean copies, and independent loops for pooling."""

from __future__ import annotations

import numpy as np

import cyconv

from .arrays import clean
from .judge import finite_max
from .oracle import pair


def reference_functional(spec, vals):
    """The numpy backend on clean copies; (result, magnitude for the tolerance)."""
    op = spec["op"]
    kw = dict(spec["kwargs"])
    kw["backend"] = "numpy"
    kw["n_threads"] = None
    x = clean(vals["x"])
    dt = x.dtype
    mx = finite_max(x)
    if op.startswith("conv"):
        w = clean(vals["w"], dt)
        k = w.shape[1] * w.shape[2] * w.shape[3]
        mw = finite_max(w)
        if op == "conv2d":
            b = vals.get("b")
            b = None if b is None else clean(b, dt)
            return cyconv.conv2d(x, w, b, **kw), k * mx * mw + (finite_max(b) if b is not None
                                                                 else 0)
        dy = clean(vals["dy"], dt)
        mdy = finite_max(dy)
        terms_x = w.shape[0] * w.shape[2] * w.shape[3]
        terms_w = dy.shape[0] * dy.shape[2] * dy.shape[3]
        return (cyconv.conv2d_backward(dy, x, w, **kw),
                [terms_x * mdy * mw, terms_w * mdy * mx, terms_w * mdy])
    kernel = kw.pop("kernel_size")
    if op == "max_pool2d":
        return cyconv.max_pool2d(x, kernel, **kw), mx
    if op == "avg_pool2d":
        return cyconv.avg_pool2d(x, kernel, **kw), mx
    dy = clean(vals["dy"], dt)
    kp = pair(kernel)
    terms = kp[0] * kp[1] if kp and kp[0] * kp[1] < 10**6 else 1
    if op == "max_pool2d_backward":
        idx = vals.get("indices")
        kw["indices"] = None if idx is None else np.ascontiguousarray(idx, dtype=np.int64)
        return cyconv.max_pool2d_backward(dy, x, kernel, **kw), terms * finite_max(dy)
    return cyconv.avg_pool2d_backward(dy, x, kernel, **kw), terms * finite_max(dy)


def direct_pool(spec, vals):
    """Independent loop reference for pooling (used when the numpy reference
    cannot allocate, e.g. huge kernels over tiny inputs)."""
    op = spec["op"]
    kw = spec["kwargs"]
    x = clean(vals["x"])
    n, c, h, w = x.shape
    geom = spec["expect"]["geom"]
    (kh, kw_), (sh, sw), (dh, dw) = geom["kernel"], geom["stride"], geom["dilation"]
    (pt, pb), (pl, pr) = geom["pads"]
    oh, ow = geom["out"]

    def taps(o, s, p, d, k, size):
        start = o * s - p
        lo = max(0, -(-(0 - start) // d)) if start < 0 else 0
        hi = min(k, (size - 1 - start) // d + 1) if size - 1 - start >= 0 else 0
        return [start + t * d for t in range(lo, max(lo, hi))]

    if op.startswith("max"):
        y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
        idx = np.full((n, c, oh, ow), -1, dtype=np.int64)
        for oy in range(oh):
            rows = taps(oy, sh, pt, dh, kh, h)
            for ox in range(ow):
                cols = taps(ox, sw, pl, dw, kw_, w)
                for i in range(n):
                    for j in range(c):
                        best, bi = None, -1
                        for r in rows:
                            for q in cols:
                                v = x[i, j, r, q]
                                if v != v:
                                    best, bi = v, r * w + q
                                    break
                                if bi < 0 or v > best:
                                    best, bi = v, r * w + q
                            if best is not None and best != best:
                                break
                        if bi >= 0:
                            y[i, j, oy, ox], idx[i, j, oy, ox] = best, bi
        if op == "max_pool2d":
            return ((y, idx) if kw.get("return_indices") else y), finite_max(x)
        dy = clean(vals["dy"], x.dtype)
        given = vals.get("indices")
        if given is not None:
            idx = np.asarray(given, dtype=np.int64)
        dx = np.zeros_like(x).reshape(n, c, -1)
        for i in range(n):
            for j in range(c):
                for o, t in zip(dy[i, j].ravel(), idx[i, j].ravel()):
                    if t >= 0:
                        dx[i, j, t] += o
        return dx.reshape(x.shape), finite_max(dy)
    # average pooling
    cip = kw.get("count_include_pad", True)
    dov = kw.get("divisor_override")
    div = np.zeros((oh, ow))
    for oy in range(oh):
        rs = oy * sh - pt
        re = min(rs + kh, h + pb)
        for ox in range(ow):
            cs = ox * sw - pl
            ce = min(cs + kw_, w + pr)
            if dov is not None:
                div[oy, ox] = dov
            elif cip:
                div[oy, ox] = (re - rs) * (ce - cs)
            else:
                div[oy, ox] = (min(re, h) - max(rs, 0)) * (min(ce, w) - max(cs, 0))
    if op == "avg_pool2d":
        y = np.zeros((n, c, oh, ow), dtype=x.dtype)
        for oy in range(oh):
            rows = taps(oy, sh, pt, 1, kh, h)
            for ox in range(ow):
                cols = taps(ox, sw, pl, 1, kw_, w)
                s = x[:, :, rows][:, :, :, cols].sum(axis=(2, 3)) if rows and cols else 0
                y[:, :, oy, ox] = s / div[oy, ox]
        return y, finite_max(x)
    dy = clean(vals["dy"], x.dtype)
    dx = np.zeros_like(x)
    for oy in range(oh):
        rows = taps(oy, sh, pt, 1, kh, h)
        for ox in range(ow):
            cols = taps(ox, sw, pl, 1, kw_, w)
            for r in rows:
                for q in cols:
                    dx[:, :, r, q] += dy[:, :, oy, ox] / div[oy, ox]
    return dx, finite_max(dy)

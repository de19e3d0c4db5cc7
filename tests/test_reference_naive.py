"""The numpy reference backend against deliberately naive pure-Python loops.

The loops below are written for obviousness, one output element at a time,
straight from the definitions in :mod:`cyconv.backends` (kernel contract).
They compute their own output sizes by walking windows, so they do not share
code with :mod:`cyconv._shapes` either.  Shapes are tiny; comparisons are in
float64 to ~1e-12.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyconv
from cyconv._shapes import resolve_geometry
from cyconv.backends import numpy_backend

TOL = dict(rtol=1e-12, atol=1e-12)


# -- naive implementations -----------------------------------------------------

def naive_out(size, k, stride, dilation, pad_before, pad_after, rounding):
    """Number of windows: whole windows in the padded extent, plus (ceil) one
    partial window if the previous one did not reach the end and it starts
    inside the input or the leading padding."""
    extent = size + pad_before + pad_after
    eff = dilation * (k - 1) + 1
    count = 0
    while count * stride + eff <= extent:
        count += 1
    if rounding == "ceil" and count and (count - 1) * stride + eff < extent \
            and count * stride < size + pad_before:
        count += 1
    return count


def window(o, k, stride, dilation, pad_before):
    """Input coordinates covered by output position ``o`` (may be outside)."""
    return [o * stride - pad_before + i * dilation for i in range(k)]


def naive_conv2d(x, w, b, stride, dilation, pads, groups, rounding="floor"):
    n_, c_, h_, w_ = x.shape
    oc_, cg, kh, kw = w.shape
    (pt, pb), (pl, pr) = pads
    oh = naive_out(h_, kh, stride[0], dilation[0], pt, pb, rounding)
    ow = naive_out(w_, kw, stride[1], dilation[1], pl, pr, rounding)
    ocg = oc_ // groups
    y = np.zeros((n_, oc_, oh, ow))
    for n in range(n_):
        for oc in range(oc_):
            g = oc // ocg
            for oy in range(oh):
                rows = window(oy, kh, stride[0], dilation[0], pt)
                for ox in range(ow):
                    cols = window(ox, kw, stride[1], dilation[1], pl)
                    total = 0.0 if b is None else float(b[oc])
                    for ci in range(cg):
                        c = g * cg + ci
                        for ky, iy in enumerate(rows):
                            for kx, ix in enumerate(cols):
                                if 0 <= iy < h_ and 0 <= ix < w_:
                                    total += x[n, c, iy, ix] * w[oc, ci, ky, kx]
                    y[n, oc, oy, ox] = total
    return y


def naive_conv2d_backward(dy, x, w, stride, dilation, pads, groups):
    n_, c_, h_, w_ = x.shape
    oc_, cg, kh, kw = w.shape
    (pt, _), (pl, _) = pads
    ocg = oc_ // groups
    dx = np.zeros(x.shape)
    dw = np.zeros(w.shape)
    db = np.zeros(oc_)
    for n in range(n_):
        for oc in range(oc_):
            g = oc // ocg
            for oy in range(dy.shape[2]):
                rows = window(oy, kh, stride[0], dilation[0], pt)
                for ox in range(dy.shape[3]):
                    cols = window(ox, kw, stride[1], dilation[1], pl)
                    d = dy[n, oc, oy, ox]
                    db[oc] += d
                    for ci in range(cg):
                        c = g * cg + ci
                        for ky, iy in enumerate(rows):
                            for kx, ix in enumerate(cols):
                                if 0 <= iy < h_ and 0 <= ix < w_:
                                    dx[n, c, iy, ix] += d * w[oc, ci, ky, kx]
                                    dw[oc, ci, ky, kx] += d * x[n, c, iy, ix]
    return dx, dw, db


def naive_max_pool2d(x, k, stride, dilation, pads, rounding):
    """Returns (y, indices); first maximum in row-major window order wins, NaN
    beats every number, an empty window gives (-inf, -1)."""
    n_, c_, h_, w_ = x.shape
    (pt, pb), (pl, pr) = pads
    oh = naive_out(h_, k[0], stride[0], dilation[0], pt, pb, rounding)
    ow = naive_out(w_, k[1], stride[1], dilation[1], pl, pr, rounding)
    y = np.full((n_, c_, oh, ow), -np.inf)
    idx = np.full((n_, c_, oh, ow), -1, dtype=np.int64)
    for n in range(n_):
        for c in range(c_):
            for oy in range(oh):
                for ox in range(ow):
                    best, where = None, -1
                    for iy in window(oy, k[0], stride[0], dilation[0], pt):
                        for ix in window(ox, k[1], stride[1], dilation[1], pl):
                            if not (0 <= iy < h_ and 0 <= ix < w_):
                                continue
                            v = x[n, c, iy, ix]
                            if best is None:
                                better = True
                            elif math.isnan(best):
                                better = False
                            else:
                                better = math.isnan(v) or v > best
                            if better:
                                best, where = v, iy * w_ + ix
                    if best is not None:
                        y[n, c, oy, ox] = best
                        idx[n, c, oy, ox] = where
    return y, idx


def naive_max_pool2d_backward(dy, idx, x_shape):
    dx = np.zeros(x_shape)
    width = x_shape[3]
    for n in range(dy.shape[0]):
        for c in range(dy.shape[1]):
            for oy in range(dy.shape[2]):
                for ox in range(dy.shape[3]):
                    i = idx[n, c, oy, ox]
                    if i >= 0:
                        dx[n, c, i // width, i % width] += dy[n, c, oy, ox]
    return dx


def naive_avg_divisor(oy, ox, k, stride, pads, in_hw, count_include_pad, divisor_override):
    if divisor_override is not None:
        return divisor_override
    (pt, pb), (pl, pr) = pads
    count = 0
    for iy in window(oy, k[0], stride[0], 1, pt):
        for ix in window(ox, k[1], stride[1], 1, pl):
            if count_include_pad:
                # the window clipped to the padded extent
                count += (-pt <= iy < in_hw[0] + pb) and (-pl <= ix < in_hw[1] + pr)
            else:
                count += (0 <= iy < in_hw[0]) and (0 <= ix < in_hw[1])
    return count


def naive_avg_pool2d(x, k, stride, pads, rounding, count_include_pad, divisor_override):
    n_, c_, h_, w_ = x.shape
    (pt, pb), (pl, pr) = pads
    oh = naive_out(h_, k[0], stride[0], 1, pt, pb, rounding)
    ow = naive_out(w_, k[1], stride[1], 1, pl, pr, rounding)
    y = np.zeros((n_, c_, oh, ow))
    for n in range(n_):
        for c in range(c_):
            for oy in range(oh):
                for ox in range(ow):
                    total = 0.0
                    for iy in window(oy, k[0], stride[0], 1, pt):
                        for ix in window(ox, k[1], stride[1], 1, pl):
                            if 0 <= iy < h_ and 0 <= ix < w_:
                                total += x[n, c, iy, ix]
                    y[n, c, oy, ox] = total / naive_avg_divisor(
                        oy, ox, k, stride, pads, (h_, w_), count_include_pad, divisor_override)
    return y


def naive_avg_pool2d_backward(dy, x_shape, k, stride, pads, count_include_pad, divisor_override):
    _, _, h_, w_ = x_shape
    (pt, _), (pl, _) = pads
    dx = np.zeros(x_shape)
    for n in range(dy.shape[0]):
        for c in range(dy.shape[1]):
            for oy in range(dy.shape[2]):
                for ox in range(dy.shape[3]):
                    share = dy[n, c, oy, ox] / naive_avg_divisor(
                        oy, ox, k, stride, pads, (h_, w_), count_include_pad, divisor_override)
                    for iy in window(oy, k[0], stride[0], 1, pt):
                        for ix in window(ox, k[1], stride[1], 1, pl):
                            if 0 <= iy < h_ and 0 <= ix < w_:
                                dx[n, c, iy, ix] += share
    return dx


# -- geometry strategies (built by construction) ---------------------------------

@st.composite
def dim_geometry(draw, max_k=3, max_stride=3, max_dilation=2, max_pad=2, pool=False):
    """One spatial dimension: kernel, stride, dilation and padding first, then an
    input size that yields 1-3 outputs (with a remainder of 0..stride-1)."""
    k = draw(st.integers(1, max_k))
    s = draw(st.integers(1, max_stride))
    d = draw(st.integers(1, max_dilation))
    limit = k // 2 if pool else max_pad
    pb = draw(st.integers(0, limit))
    pa = draw(st.integers(0, limit))
    out = draw(st.integers(1, 3))
    extra = draw(st.integers(0, s - 1))
    size = (out - 1) * s + d * (k - 1) + 1 - pb - pa + extra
    while size < 1:
        size += s
    return size, k, s, d, (pb, pa)


@st.composite
def conv_case(draw):
    hd = draw(dim_geometry())
    wd = draw(dim_geometry())
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 2))
    ocg = draw(st.integers(1, 2))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, groups * cg, hd[0], wd[0]))
    w = rng.standard_normal((groups * ocg, cg, hd[1], wd[1]))
    b = rng.standard_normal(groups * ocg) if bias else None
    opts = dict(stride=(hd[2], wd[2]), dilation=(hd[3], wd[3]), padding=(hd[4], wd[4]),
                groups=groups)
    return x, w, b, opts, rng


def _naive_conv_args(opts):
    return opts["stride"], opts["dilation"], opts["padding"], opts["groups"]


# -- convolution -------------------------------------------------------------------

@settings(max_examples=40)
@given(case=conv_case())
def test_conv2d_forward_matches_naive(case):
    x, w, b, opts, _ = case
    y = cyconv.conv2d(x, w, b, rounding="floor", backend="numpy", **opts)
    expected = naive_conv2d(x, w, b, *_naive_conv_args(opts))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, **TOL)


@settings(max_examples=40)
@given(case=conv_case())
def test_conv2d_backward_matches_naive(case):
    x, w, _, opts, rng = case
    y = cyconv.conv2d(x, w, rounding="floor", backend="numpy", **opts)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = cyconv.conv2d_backward(dy, x, w, rounding="floor", backend="numpy", **opts)
    ex, ew, eb = naive_conv2d_backward(dy, x, w, *_naive_conv_args(opts))
    np.testing.assert_allclose(dx, ex, **TOL)
    np.testing.assert_allclose(dw, ew, **TOL)
    np.testing.assert_allclose(db, eb, **TOL)


@pytest.mark.parametrize("rounding", ["ceil"])
def test_conv2d_ceil_rounding_matches_naive(rounding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 7))
    w = rng.standard_normal((3, 2, 2, 3))
    opts = dict(stride=(3, 2), dilation=1, padding=((1, 0), (0, 1)), groups=1)
    y = cyconv.conv2d(x, w, rounding=rounding, backend="numpy", **opts)
    expected = naive_conv2d(x, w, None, (3, 2), (1, 1), ((1, 0), (0, 1)), 1, rounding="ceil")
    assert y.shape == expected.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(y, expected, **TOL)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = cyconv.conv2d_backward(dy, x, w, rounding=rounding, backend="numpy", **opts)
    ex, ew, eb = naive_conv2d_backward(dy, x, w, (3, 2), (1, 1), ((1, 0), (0, 1)), 1)
    np.testing.assert_allclose(dx, ex, **TOL)
    np.testing.assert_allclose(dw, ew, **TOL)
    np.testing.assert_allclose(db, eb, **TOL)


def test_conv2d_known_values():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 3, 3))
    y = cyconv.conv2d(x, w, np.array([0.5]), backend="numpy")
    # sums of the four 3x3 windows of 0..15, plus the bias
    np.testing.assert_array_equal(y[0, 0], [[45.5, 54.5], [81.5, 90.5]])
    # cross-correlation, not convolution: w is not flipped
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 0] = 1
    np.testing.assert_array_equal(cyconv.conv2d(x, w, backend="numpy")[0, 0], x[0, 0, :2, :2])


def test_depthwise_conv_is_per_channel():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((3, 1, 3, 3))
    y = cyconv.conv2d(x, w, groups=3, padding=1, backend="numpy")
    for c in range(3):
        single = cyconv.conv2d(x[:, c:c + 1], w[c:c + 1], padding=1, backend="numpy")
        np.testing.assert_allclose(y[:, c:c + 1], single, **TOL)


# -- max pooling -----------------------------------------------------------------

@st.composite
def pool_case(draw, max_dilation=2, ties=False, nans=False):
    hd = draw(dim_geometry(max_dilation=max_dilation, pool=True))
    wd = draw(dim_geometry(max_dilation=max_dilation, pool=True))
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 2))
    rounding = draw(st.sampled_from(["floor", "ceil"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n, c, hd[0], wd[0])
    if ties:
        x = rng.integers(-1, 2, size=shape).astype(np.float64)
    else:
        x = rng.standard_normal(shape)
    if nans:
        x[rng.random(shape) < 0.15] = np.nan
    opts = dict(kernel_size=(hd[1], wd[1]), stride=(hd[2], wd[2]), padding=(hd[4], wd[4]),
                rounding=rounding)
    if max_dilation > 1:
        opts["dilation"] = (hd[3], wd[3])
    return x, opts, rng


def _check_max_pool(x, opts, rng):
    y, idx = cyconv.max_pool2d(x, return_indices=True, backend="numpy", **opts)
    ey, eidx = naive_max_pool2d(x, opts["kernel_size"], opts["stride"], opts.get("dilation", (1, 1)),
                                opts["padding"], opts["rounding"])
    assert y.shape == ey.shape
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, eidx)
    np.testing.assert_array_equal(y, ey)  # exact, NaN positions included
    dy = rng.standard_normal(y.shape)
    dx = cyconv.max_pool2d_backward(dy, x, backend="numpy", **opts)
    np.testing.assert_allclose(dx, naive_max_pool2d_backward(dy, eidx, x.shape), **TOL)
    dx2 = cyconv.max_pool2d_backward(dy, x, indices=idx, backend="numpy", **opts)
    np.testing.assert_array_equal(dx, dx2)


@settings(max_examples=40)
@given(case=pool_case())
def test_max_pool_matches_naive(case):
    _check_max_pool(*case)


@settings(max_examples=40)
@given(case=pool_case(ties=True))
def test_max_pool_ties_match_naive(case):
    _check_max_pool(*case)


@settings(max_examples=30)
@given(case=pool_case(ties=True, nans=True))
def test_max_pool_nan_matches_naive(case):
    _check_max_pool(*case)


def test_max_pool_tie_rule_and_nan_examples():
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    y, idx = cyconv.max_pool2d(x, 2, return_indices=True, backend="numpy")
    assert y[0, 0, 0, 0] == 3.0 and idx[0, 0, 0, 0] == 1  # first 3 in row-major order
    x = np.array([[[[1.0, np.nan], [5.0, np.nan]]]])
    y, idx = cyconv.max_pool2d(x, 2, return_indices=True, backend="numpy")
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1  # the first NaN
    x = np.array([[[[-np.inf, -np.inf], [-np.inf, -np.inf]]]])
    y, idx = cyconv.max_pool2d(x, 2, padding=1, stride=1, return_indices=True, backend="numpy")
    # padding never wins over an input element, even -inf
    assert (idx >= 0).all()
    assert idx[0, 0, 0, 0] == 0 and idx[0, 0, 2, 2] == 3


# -- average pooling -------------------------------------------------------------

@settings(max_examples=50)
@given(case=pool_case(max_dilation=1), count_include_pad=st.booleans(),
       divisor_override=st.one_of(st.none(), st.integers(1, 7)))
def test_avg_pool_matches_naive(case, count_include_pad, divisor_override):
    x, opts, rng = case
    y = cyconv.avg_pool2d(x, backend="numpy", count_include_pad=count_include_pad,
                          divisor_override=divisor_override, **opts)
    args = (opts["kernel_size"], opts["stride"], opts["padding"])
    ey = naive_avg_pool2d(x, *args, opts["rounding"], count_include_pad, divisor_override)
    assert y.shape == ey.shape
    np.testing.assert_allclose(y, ey, **TOL)
    dy = rng.standard_normal(y.shape)
    dx = cyconv.avg_pool2d_backward(dy, x, backend="numpy", count_include_pad=count_include_pad,
                                    divisor_override=divisor_override, **opts)
    np.testing.assert_allclose(
        dx, naive_avg_pool2d_backward(dy, x.shape, *args, count_include_pad, divisor_override),
        **TOL)


def test_avg_pool_divisor_rule_example():
    """PyTorch's divisors on a 4x4 input, k 2, s 2, padding 1."""
    x = np.ones((1, 1, 4, 4))
    # count_include_pad: every window counts 4; corners hold 1 input, edges 2
    y = cyconv.avg_pool2d(x, 2, padding=1, backend="numpy")
    np.testing.assert_allclose(y[0, 0], [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(
        cyconv.avg_pool2d(x, 2, padding=1, count_include_pad=False, backend="numpy"),
        np.ones((1, 1, 3, 3)))
    np.testing.assert_allclose(
        cyconv.avg_pool2d(x, 2, padding=1, divisor_override=2, backend="numpy")[0, 0],
        [[0.5, 1, 0.5], [1, 2, 1], [0.5, 1, 0.5]])
    # ceil mode: a window that reaches past the padded extent is clipped to it
    x = np.ones((1, 1, 5, 5))
    y = cyconv.avg_pool2d(x, 2, ceil_mode=True, backend="numpy")
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(y, np.ones((1, 1, 3, 3)))  # divisor 1 at the last row/column


# -- im2col / col2im adjoint ------------------------------------------------------

@settings(max_examples=50)
@given(hd=dim_geometry(max_pad=3), wd=dim_geometry(max_pad=3),
       rounding=st.sampled_from(["floor", "ceil"]), n=st.integers(1, 2), c=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_im2col_col2im_adjoint(hd, wd, rounding, n, c, seed):
    geom = resolve_geometry((hd[0], wd[0]), (hd[1], wd[1]), stride=(hd[2], wd[2]),
                            dilation=(hd[3], wd[3]), padding=(hd[4], wd[4]), rounding=rounding)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, hd[0], wd[0]))
    cols = numpy_backend.im2col(x, geom)
    assert cols.shape == (n, c, geom.kernel_h, geom.kernel_w, geom.out_h, geom.out_w)
    y = rng.standard_normal(cols.shape)
    back = numpy_backend.col2im(y, x.shape, geom)
    assert back.shape == x.shape
    lhs = float(np.vdot(cols, y))
    rhs = float(np.vdot(x, back))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_im2col_reads_windows():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    geom = resolve_geometry((4, 4), 2, stride=2)
    cols = numpy_backend.im2col(x, geom)
    np.testing.assert_array_equal(cols[0, 0, :, :, 1, 0], [[8, 9], [12, 13]])
    geom = resolve_geometry((4, 4), 3, padding=1)
    cols = numpy_backend.im2col(x, geom, pad_value=-7.0)
    np.testing.assert_array_equal(cols[0, 0, :, :, 0, 0], [[-7, -7, -7], [-7, 0, 1], [-7, 4, 5]])

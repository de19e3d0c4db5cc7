"""Parity of the compiled kernels (cython_backend) with the NumPy reference.

Tolerances.  float64 results must agree with the reference to 1e-12 relative
to the largest magnitude of the result.  In float32 the two implementations
sum the same products in different orders (BLAS blocking vs NumPy's matmul /
pairwise sums), and recursive summation of L terms has error at most about
L * eps * sum|terms| (Higham, gamma_L).  So each float32 element is checked
against ``2 * L * eps32 * B`` where L is the reduction length of that output
(Cg*KH*KW for y, OCg*KH*KW for dx, N*OH*OW for dW and db, KH*KW for average
pooling) and B the same operation applied to absolute values (a rigorous
worst-case bound for both sides together), plus a denormal-size floor.
Max pooling is a selection, so it must match exactly (values and indices),
and its backward adds in the same order as the reference, so exactly too.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyconv._shapes import resolve_geometry
from cyconv.backends import cython_backend as cb
from cyconv.backends import numpy_backend as nb
from cyconv.backends._conv_tables import tap_column_ranges
from cyconv.testing.strategies import conv_geometries, pool_geometries

_conv = cb._conv  # the build this CPU runs (cyconv/_cpu.py): the one whose globals matter

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
DTYPES = (np.float64, np.float32)


# -- helpers -------------------------------------------------------------------

def lift_thread_cap(monkeypatch):
    """cython_backend gives tiny calls fewer threads than asked (WORK_PER_THREAD);
    thread-invariance tests use small arrays and must really run multithreaded."""
    monkeypatch.setattr(cb, "WORK_PER_THREAD", 1, raising=False)


def assert_close(actual, expected, bound_abs, reduction_len, dtype, what):
    """float64: 1e-12 relative to the largest |expected|; float32: 2*L*eps*B."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    err = np.abs(actual - expected)
    if dtype == np.float64:
        scale = max(np.max(np.abs(expected), initial=0.0), 1e-300)
        tol = 1e-12 * max(scale, np.max(bound_abs, initial=0.0))
        assert np.all(err <= tol), f"{what}: max err {err.max()} > {tol}"
    else:
        eps = np.finfo(np.float32).eps
        tol = 2.0 * max(reduction_len, 1) * eps * np.asarray(bound_abs, np.float64) + 1e-30
        bad = err > tol
        assert not bad.any(), f"{what}: {bad.sum()} elements exceed the bound; max err {err.max()}"


def geometries(max_kernel=4, pool=False):
    """Resolved geometries drawn by cyconv.testing.strategies (the one geometry catalogue):
    convolution, max pooling (``pool=True``) or average pooling (``pool="avg"``); every
    padding spelling, rounding and (max/conv) dilation, with a fitting input size."""
    bounds = dict(max_kernel=max_kernel, max_stride=3, max_dilation=2, max_padding=2)
    if pool:
        drawn = pool_geometries("avg" if pool == "avg" else "max", **bounds)
    else:
        drawn = conv_geometries(**bounds)
    return drawn.map(lambda g: g.resolve())


def conv_case(data, geom, dtype):
    groups_kind = data.draw(st.sampled_from(["one", "two", "depthwise"]))
    if groups_kind == "one":
        groups, cg, ocg = 1, data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    elif groups_kind == "two":
        groups, cg, ocg = 2, data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    else:
        groups = data.draw(st.integers(1, 5))
        cg, ocg = 1, data.draw(st.integers(1, 2))
    n = data.draw(st.integers(1, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, cg * groups, geom.in_h, geom.in_w)).astype(dtype)
    w = rng.standard_normal((ocg * groups, cg, geom.kernel_h, geom.kernel_w)).astype(dtype)
    b = rng.standard_normal(ocg * groups).astype(dtype) if data.draw(st.booleans()) else None
    return x, w, b, groups


def check_conv(x, w, b, geom, groups, n_threads=2):
    dtype = x.dtype.type
    y = cb.conv2d_forward(x, w, b, geom, groups, n_threads)
    y_ref = nb.conv2d_forward(x, w, b, geom, groups)
    assert y.dtype == x.dtype and y.flags.c_contiguous
    ax, aw = np.abs(x).astype(np.float64), np.abs(w).astype(np.float64)
    ab = None if b is None else np.abs(b).astype(np.float64)
    k_len = w.shape[1] * w.shape[2] * w.shape[3]
    assert_close(y, y_ref, nb.conv2d_forward(ax, aw, ab, geom, groups), k_len, dtype, "y")

    rng = np.random.default_rng(1)
    dy = rng.standard_normal(y.shape).astype(x.dtype)
    dx, dw, db = cb.conv2d_backward(dy, x, w, geom, groups, n_threads)
    dx_r, dw_r, db_r = nb.conv2d_backward(dy, x, w, geom, groups)
    bx, bw, bb = nb.conv2d_backward(np.abs(dy).astype(np.float64), ax, aw, geom, groups)
    ocg = w.shape[0] // groups
    n_pos = y.shape[0] * y.shape[2] * y.shape[3]
    assert_close(dx, dx_r, bx, ocg * w.shape[2] * w.shape[3], dtype, "dx")
    assert_close(dw, dw_r, bw, n_pos, dtype, "dw")
    assert_close(db, db_r, bb, n_pos, dtype, "db")
    for a in (dx, dw, db):
        assert a.dtype == x.dtype
    # without dx (a network's first layer): dw and db exactly as in the full call
    for kernels, full in ((cb, (dw, db)), (nb, (dw_r, db_r))):
        no_dx = kernels.conv2d_backward(dy, x, w, geom, groups, n_threads, need_dx=False)
        assert no_dx[0] is None
        np.testing.assert_array_equal(no_dx[1], full[0])
        np.testing.assert_array_equal(no_dx[2], full[1])
    return y, dx, dw, db


# -- convolution ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_conv_parity_random_geometry(dtype, data):
    geom = data.draw(geometries())
    x, w, b, groups = conv_case(data, geom, dtype)
    check_conv(x, w, b, geom, groups)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_fixed_cases(dtype):
    rng = np.random.default_rng(0)
    cases = [
        # (x shape, w shape, stride, padding, dilation, groups, rounding)
        ((2, 3, 9, 8), (4, 3, 3, 3), 1, 1, 1, 1, "floor"),
        ((3, 4, 11, 10), (6, 2, 3, 3), 2, ((1, 0), (2, 1)), 2, 2, "ceil"),
        ((2, 4, 7, 7), (8, 1, 3, 3), 1, 0, 1, 4, "exact"),        # depthwise x2
        ((2, 8, 6, 6), (5, 8, 1, 1), 1, 0, 1, 1, "exact"),        # 1x1 fast path
        ((2, 8, 6, 6), (6, 4, 1, 1), 1, 0, 1, 2, "exact"),        # 1x1 grouped
        ((2, 8, 7, 7), (5, 8, 1, 1), 2, 0, 1, 1, "exact"),        # 1x1 strided
        ((1, 2, 5, 5), (3, 2, 5, 5), 1, 0, 1, 1, "exact"),        # kernel == input
        ((1, 2, 3, 4), (3, 2, 5, 6), 1, 1, 1, 1, "exact"),        # kernel == padded input
        ((2, 2, 5, 6), (2, 2, 2, 3), (2, 1), 1, (1, 2), 1, "ceil"),
        ((20, 3, 6, 6), (4, 3, 3, 3), 1, 1, 1, 1, "exact"),       # more samples than slots
    ]
    for xs, ws, s, p, d, groups, rnd in cases:
        geom = resolve_geometry(xs[2:], ws[2:], stride=s, padding=p, dilation=d, rounding=rnd)
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal(ws).astype(dtype)
        for b in (None, rng.standard_normal(ws[0]).astype(dtype)):
            check_conv(x, w, b, geom, groups)


def test_conv_row_blocking_and_single_slot(monkeypatch):
    """Force tiny workspaces: one output row per block and a single dW slot."""
    rng = np.random.default_rng(3)
    geom = resolve_geometry((9, 7), (3, 2), stride=(2, 1), padding=((1, 2), (0, 1)),
                            dilation=(2, 1), rounding="ceil")
    x = rng.standard_normal((5, 4, 9, 7))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    full = check_conv(x, w, b, geom, 2)
    monkeypatch.setattr(_conv, "WORKSPACE_CAP", 1)
    monkeypatch.setattr(_conv, "DW_SLOT_CAP", 1)
    blocked = check_conv(x, w, b, geom, 2)
    np.testing.assert_array_equal(full[0], blocked[0])   # y: same GEMM per element row
    np.testing.assert_allclose(full[2], blocked[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", [
    ((3, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),     # LeNet conv2: 10-pixel rows cross panels
    ((2, 4, 9, 13), (6, 2, 3, 3), 1, 1, 1, 2),       # padding, groups
    ((2, 3, 11, 10), (5, 3, 3, 2), 2, (2, 1), (1, 2), 1),  # stride, dilation
    ((2, 16, 7, 9), (5, 16, 1, 1), 1, 0, 1, 1),      # 1x1: the input plane is packed
    ((1, 2, 40, 37), (3, 2, 3, 3), 1, 1, 1, 1),      # one image, rows cut for the cores
    ((2, 8, 20, 20), (12, 8, 3, 3), 1, 1, 1, 1),     # whole A panels read in place, a tail
    # stride-2 runs (vector pairs compressed to even lanes, the last block masked) of
    # 7, 8, 9, 16, 17 and 32 pixels, padded (per-row path) and unpadded (block copy)
    ((1, 2, 5, 16), (3, 2, 3, 3), 2, 1, 1, 1),
    ((1, 2, 5, 17), (3, 2, 3, 3), 2, 1, 1, 1),
    ((1, 2, 5, 32), (3, 2, 3, 3), 2, 1, 1, 1),
    ((1, 2, 5, 35), (3, 2, 3, 3), 2, 1, 1, 1),
    ((2, 2, 7, 19), (3, 2, 3, 3), 2, 0, 1, 1),
    ((2, 2, 7, 66), (3, 2, 3, 3), 2, 0, 1, 1),
])
@pytest.mark.parametrize("cap", [None, 1])
def test_gemm_convolution_is_bitwise_the_gemm_of_its_im2col(monkeypatch, dtype, xs, ws, stride,
                                                           padding, dilation, groups, cap):
    """The GEMM forward reads its whole A panels in place from the column buffer
    (gemm_gathered on rows an odd number of lines apart), packs a block's last part
    panel and the weights once per call (include/cyconv_gemm.h, "Packed operands"):
    each output is bitwise cyconv's GEMM of the explicit im2col matrix, whatever
    the row blocks (cap=1: one row each, so panels start mid-row) and threads."""
    from cyconv._cpu import import_kernels
    (gemm_module,) = import_kernels("_gemm")
    lift_thread_cap(monkeypatch)
    if cap is not None:
        monkeypatch.setattr(_conv, "WORKSPACE_CAP", cap)
    rng = np.random.default_rng(11)
    geom = resolve_geometry(xs[2:], ws[2:], stride=stride, padding=padding, dilation=dilation,
                            rounding="floor")
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    cols = nb.im2col(x, geom)          # (N, C, KH, KW, OH, OW)
    n, c = xs[:2]
    ocg, cg, p = ws[0] // groups, c // groups, geom.out_h * geom.out_w
    want = np.empty((n, ws[0], p), dtype=dtype)
    for i in range(n):
        for g in range(groups):
            col_t = np.asfortranarray(cols[i, g * cg:(g + 1) * cg].reshape(-1, p).T)  # P x K
            w_t = np.asfortranarray(w[g * ocg:(g + 1) * ocg].reshape(ocg, -1).T)      # K x OCg
            out = np.empty((p, ocg), dtype=dtype, order="F")
            gemm_module.gemm(col_t, w_t, out)
            want[i, g * ocg:(g + 1) * ocg] = out.T
    for threads in (1, 2):
        got = cb.conv2d_forward(x, w, None, geom, groups, threads, algorithm="gemm")
        np.testing.assert_array_equal(got.reshape(n, ws[0], p).view(np.uint8),
                                      want.view(np.uint8), err_msg=f"{threads} threads")


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_thread_invariance(monkeypatch, dtype):
    """Bitwise identical results for 1, 2 and 4 threads (fixed sample->slot partition)."""
    lift_thread_cap(monkeypatch)
    rng = np.random.default_rng(5)
    geom = resolve_geometry((13, 11), (3, 3), stride=1, padding=1)
    x = rng.standard_normal((23, 6, 13, 11)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    dy = rng.standard_normal((23, 8, 13, 11)).astype(dtype)
    ref = None
    for t in (1, 2, 4):
        out = (cb.conv2d_forward(x, w, b, geom, 2, t),) + cb.conv2d_backward(dy, x, w, geom, 2, t)
        if ref is None:
            ref = out
        else:
            for a, r in zip(out, ref):
                np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding, groups", [
    ((1, 6, 13, 11), (8, 3, 3, 3), 1, 1, 2),          # one image: rows and channels cut
    ((1, 5, 12, 12), (4, 5, 5, 5), 1, 0, 1),          # 5x5 (GEMM path)
    ((1, 16, 9, 9), (8, 16, 1, 1), 1, 0, 1),          # 1x1 direct: no im2col
    ((2, 4, 15, 15), (6, 4, 3, 3), 2, 1, 1),          # strided, a small batch
])
def test_conv_small_batch_backward_threads(monkeypatch, dtype, xs, ws, stride, padding, groups):
    """A batch of one or two is cut into pieces for every core (MIN_WORK_ITEMS):
    the gradients match the reference and are bitwise identical for 1, 2, 3
    and 4 threads."""
    lift_thread_cap(monkeypatch)
    rng = np.random.default_rng(7)
    geom = resolve_geometry(xs[2:], ws[2:], stride=stride, padding=padding)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    dy = rng.standard_normal((xs[0], ws[0], geom.out_h, geom.out_w)).astype(dtype)
    ref = nb.conv2d_backward(dy, x, w, geom, groups)
    first = cb.conv2d_backward(dy, x, w, geom, groups, 1)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for got, want in zip(first, ref):
        np.testing.assert_allclose(got, want, **tol)
    for threads in (2, 3, 4):
        for got, want in zip(cb.conv2d_backward(dy, x, w, geom, groups, threads), first):
            np.testing.assert_array_equal(got, want)


def test_conv_read_only_inputs():
    rng = np.random.default_rng(6)
    geom = resolve_geometry((6, 6), (3, 3), padding=1)
    arrays = [rng.standard_normal(s) for s in [(2, 3, 6, 6), (4, 3, 3, 3), (4,), (2, 4, 6, 6)]]
    for a in arrays:
        a.flags.writeable = False
    x, w, b, dy = arrays
    y = cb.conv2d_forward(x, w, b, geom, 1, 2)
    dx, dw, db = cb.conv2d_backward(dy, x, w, geom, 1, 2)
    np.testing.assert_allclose(y, nb.conv2d_forward(x, w, b, geom), rtol=1e-12, atol=1e-12)
    for a, r in zip((dx, dw, db), nb.conv2d_backward(dy, x, w, geom)):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


# -- max pooling ---------------------------------------------------------------

def check_max_pool(x, geom, n_threads=2):
    y, idx = cb.max_pool2d_forward(x, geom, n_threads)
    y_r, idx_r = nb.max_pool2d_forward(x, geom)
    assert idx.dtype == np.int64 and y.dtype == x.dtype
    np.testing.assert_array_equal(idx, idx_r)
    np.testing.assert_array_equal(y, y_r)     # NaNs compare equal here
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(x.dtype)
    dx = cb.max_pool2d_backward(dy, idx, x.shape, n_threads)
    np.testing.assert_array_equal(dx, nb.max_pool2d_backward(dy, idx_r, x.shape))
    return y, idx, dx


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_max_pool_parity_random_geometry(dtype, data):
    geom = data.draw(geometries(pool=True))
    n, c = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # few distinct values: plenty of ties
    x = rng.integers(-3, 4, size=(n, c, geom.in_h, geom.in_w)).astype(dtype)
    if data.draw(st.booleans()):
        x[rng.random(x.shape) < 0.1] = np.nan
    if data.draw(st.booleans()):
        x[rng.random(x.shape) < 0.1] = -np.inf
    check_max_pool(x, geom)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_tie_and_nan_rules(dtype):
    geom = resolve_geometry((4, 4), 2, stride=2)
    x = np.array([[[[1, 1, 5, 2],
                    [0, 1, 5, 5],
                    [np.nan, 2, -np.inf, -np.inf],
                    [3, np.nan, -np.inf, -np.inf]]]], dtype=dtype)
    y, idx, _ = check_max_pool(x, geom)
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])  # first max, first NaN, -inf
    assert np.isnan(y[0, 0, 1, 0]) and y[0, 0, 1, 1] == -np.inf
    # overlapping windows with padding and ceil rounding; -inf everywhere but padding
    geom = resolve_geometry((5, 5), 3, stride=2, padding=1, rounding="ceil",
                            max_pool_padding=True)
    x = np.full((1, 2, 5, 5), -np.inf, dtype=dtype)
    x[0, 1] = np.arange(25).reshape(5, 5)[::-1]
    check_max_pool(x, geom)


def test_max_pool_window_without_input():
    """Dilation can leave a window entirely in the padding: -inf and index -1."""
    geom = resolve_geometry((2, 5), 2, stride=1, padding=1, dilation=3, rounding="floor",
                            max_pool_padding=True)
    x = np.random.default_rng(0).standard_normal((2, 2, 2, 5))
    y, idx, _ = check_max_pool(x, geom)
    assert (idx == -1).any()
    assert np.all(y[idx == -1] == -np.inf)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_fast_path_and_threads(monkeypatch, dtype):
    lift_thread_cap(monkeypatch)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 5, 9, 10)).astype(dtype)
    x[0, 0, 0, 1] = np.nan
    x[1, 1, :2, :2] = 4.0
    geom = resolve_geometry((9, 10), 2, stride=2, rounding="floor", max_pool_padding=True)
    outs = [check_max_pool(x, geom, t) for t in (1, 2, 4)]
    for o in outs[1:]:
        for a, r in zip(o, outs[0]):
            np.testing.assert_array_equal(a, r)
    x.flags.writeable = False
    check_max_pool(x, geom, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [74, 75])
def test_max_pool_2x2_stride2_rows(monkeypatch, dtype, width):
    """The 2x2/2 path works a row at a time in vector lanes (37 outputs: full
    lanes and a tail); rows holding a NaN are redone by the exact scan, the
    others keep the vector result, and both must follow the tie rule."""
    lift_thread_cap(monkeypatch)
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, size=(2, 3, 12, width)).astype(dtype)  # many ties
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[0, 1, 4, 7] = np.nan                 # one NaN row among clean ones
    x[1, 2, 9, :] = np.nan                 # a row of NaN windows
    x[1, 0, 0, :4] = -np.inf               # a window of -inf only
    geom = resolve_geometry((12, width), 2, stride=2, rounding="floor", max_pool_padding=True)
    outs = [check_max_pool(x, geom, t) for t in (1, 2, 3)]
    for o in outs[1:]:
        for a, r in zip(o, outs[0]):
            np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size, padding", [((13, 75), 1), ((12, 74), 0), ((7, 9), 1)])
def test_max_pool_3x3_stride2_rows(monkeypatch, dtype, size, padding):
    """The interior of a 3x3/2 pool works a row at a time (the 2x2/2 method):
    the tie and NaN rules, the rescan of NaN rows and the borders around it."""
    lift_thread_cap(monkeypatch)
    rng = np.random.default_rng(12)
    x = rng.integers(-2, 3, size=(2, 3) + size).astype(dtype)  # many ties
    x[rng.random(x.shape) < 0.05] = -np.inf
    x[0, 1, 4, 7] = np.nan                 # one NaN row among clean ones
    x[1, 2, 5, :] = np.nan                 # rows of NaN windows
    x[1, 0, :3, :5] = -np.inf              # windows of -inf only
    geom = resolve_geometry(size, 3, stride=2, padding=padding, rounding="floor",
                            max_pool_padding=True)
    outs = [check_max_pool(x, geom, t) for t in (1, 2, 3)]
    for o in outs[1:]:
        for a, r in zip(o, outs[0]):
            np.testing.assert_array_equal(a, r)


# -- average pooling -----------------------------------------------------------

def check_avg_pool(x, geom, count_include_pad, divisor_override, n_threads=2):
    dtype = x.dtype.type
    y = cb.avg_pool2d_forward(x, geom, count_include_pad, divisor_override, n_threads)
    y_r = nb.avg_pool2d_forward(x, geom, count_include_pad, divisor_override)
    k_len = geom.kernel_h * geom.kernel_w
    bound = nb.avg_pool2d_forward(np.abs(x).astype(np.float64), geom, count_include_pad,
                                  divisor_override)
    assert y.dtype == x.dtype
    assert_close(y, y_r, bound, k_len, dtype, "avg y")
    dy = np.random.default_rng(4).standard_normal(y.shape).astype(x.dtype)
    dx = cb.avg_pool2d_backward(dy, x.shape, geom, count_include_pad, divisor_override,
                                n_threads)
    dx_r = nb.avg_pool2d_backward(dy, x.shape, geom, count_include_pad, divisor_override)
    bound = nb.avg_pool2d_backward(np.abs(dy).astype(np.float64), x.shape, geom,
                                   count_include_pad, divisor_override)
    assert dx.dtype == x.dtype
    assert_close(dx, dx_r, bound, k_len, dtype, "avg dx")
    return y, dx


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data())
def test_avg_pool_parity_random_geometry(dtype, data):
    geom = data.draw(geometries(pool="avg"))
    n, c = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, c, geom.in_h, geom.in_w)).astype(dtype)
    cip = data.draw(st.booleans())
    override = data.draw(st.sampled_from([None, 1, 3, 7]))
    check_avg_pool(x, geom, cip, override)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_fast_path_threads_read_only(monkeypatch, dtype):
    lift_thread_cap(monkeypatch)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    x.flags.writeable = False
    geom = resolve_geometry((9, 8), 2, stride=2, rounding="floor", max_pool_padding=True)
    outs = [check_avg_pool(x, geom, True, None, t) for t in (1, 2, 4)]
    for o in outs[1:]:
        for a, r in zip(o, outs[0]):
            np.testing.assert_array_equal(a, r)
    geom = resolve_geometry((9, 8), 3, stride=2, padding=1, rounding="ceil",
                            max_pool_padding=True)
    for cip in (True, False):
        for override in (None, 2):
            outs = [check_avg_pool(x, geom, cip, override, t) for t in (1, 2, 4)]
            for o in outs[1:]:
                for a, r in zip(o, outs[0]):
                    np.testing.assert_array_equal(a, r)


# -- PyTorch oracle (optional) -------------------------------------------------

def test_against_torch():
    torch = pytest.importorskip("torch", reason="torch not installed: optional oracle test")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 11, 10))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    geom = resolve_geometry((11, 10), 3, stride=2, padding=1, dilation=(1, 2), rounding="floor")
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = F.conv2d(tx, tw, tb, stride=2, padding=1, dilation=(1, 2), groups=2)
    y = cb.conv2d_forward(x, w, b, geom, 2, 2)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    dx, dw, db = cb.conv2d_backward(dy, x, w, geom, 2, 2)
    for a, t in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-10, atol=1e-10)

    # max pool: ceil mode, padding, dilation
    geom = resolve_geometry((11, 10), 3, stride=2, padding=1, dilation=2, rounding="ceil",
                            max_pool_padding=True)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = F.max_pool2d(tx, 3, stride=2, padding=1, dilation=2, ceil_mode=True,
                            return_indices=True)
    y, idx = cb.max_pool2d_forward(x, geom, 2)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(cb.max_pool2d_backward(dy, idx, x.shape, 2), tx.grad.numpy(),
                               rtol=1e-12, atol=1e-12)

    # avg pool: every divisor option, ceil mode
    geom = resolve_geometry((11, 10), 3, stride=2, padding=1, rounding="ceil",
                            max_pool_padding=True)
    for cip in (True, False):
        for override in (None, 4):
            tx = torch.tensor(x, requires_grad=True)
            ty = F.avg_pool2d(tx, 3, stride=2, padding=1, ceil_mode=True,
                              count_include_pad=cip, divisor_override=override)
            y = cb.avg_pool2d_forward(x, geom, cip, override, 2)
            np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
            dy = rng.standard_normal(y.shape)
            ty.backward(torch.tensor(dy))
            np.testing.assert_allclose(cb.avg_pool2d_backward(dy, x.shape, geom, cip, override, 2),
                                       tx.grad.numpy(), rtol=1e-12, atol=1e-12)


# -- ReLU ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [0, 1, 37, 16384 * 3 + 5])
def test_relu_parity_special_values_and_threads(monkeypatch, dtype, size):
    """Bitwise the reference: NaN stays NaN, -0.0 and -inf become +0.0, the mask is
    x > 0, and dx = dout * mask (inf * 0 is NaN) -- for any thread count, across
    block boundaries, on read-only input."""
    lift_thread_cap(monkeypatch)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(size).astype(dtype)
    dout = rng.standard_normal(size).astype(dtype)
    special = np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-45, -1e-45], dtype=dtype)
    x[:min(size, 7)] = special[:min(size, 7)]
    dout[-min(size, 3):] = np.array([np.inf, np.nan, -np.inf], dtype=dtype)[:min(size, 3)]
    x, dout = x.reshape(-1, 1), dout.reshape(-1, 1)
    x.flags.writeable = False
    y_r, pos_r = nb.relu_forward(x)
    with np.errstate(invalid="ignore"):
        dx_r = nb.relu_backward(dout, pos_r)
    for threads in (1, 2, 3):
        y, pos = cb.relu_forward(x, threads)
        assert y.dtype == x.dtype and pos.dtype == np.bool_
        np.testing.assert_array_equal(y, y_r)
        np.testing.assert_array_equal(np.signbit(y), np.signbit(y_r))
        np.testing.assert_array_equal(pos, pos_r)
        dx = cb.relu_backward(dout, pos, threads)
        np.testing.assert_array_equal(dx, dx_r)
        np.testing.assert_array_equal(np.signbit(dx), np.signbit(dx_r))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding, groups", [
    ((3, 6, 9, 8), (4, 6, 3, 3), 1, 1, 1),
    ((2, 8, 7, 7), (6, 2, 3, 2), 2, 1, 4),     # groups, strided
    ((2, 5, 6, 6), (7, 5, 1, 1), 1, 0, 1),     # 1x1: the im2col-free path
])
@pytest.mark.parametrize("need_dx, need_dw", [(True, True), (True, False), (False, True)])
def test_gemm_backward_bias_gradient_is_bitwise_bias_grad(dtype, xs, ws, stride, padding,
                                                          groups, need_dx, need_dw):
    """The GEMM backward computes db among its other items (one parallel region
    fewer): bitwise ``bias_grad``'s result, for any thread count and whichever of
    dx and dW it computes alongside, which stay bitwise what they are without db."""
    rng = np.random.default_rng(21)
    geom = resolve_geometry(xs[2:], ws[2:], stride=stride, padding=padding, rounding="floor")
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    dy = rng.standard_normal((xs[0], ws[0], geom.out_h, geom.out_w)).astype(dtype)
    kernels = cb._conv
    want_db = np.empty(ws[0], dtype)
    kernels.bias_grad(dy, want_db, 1)

    def backward(need_db, threads):
        dx = np.full(xs, np.nan, dtype) if need_dx else cb._EMPTY4[x.dtype]
        dw, db = np.full(ws, np.nan, dtype), np.full(ws[0], np.nan, dtype)
        kernels.conv2d_backward(dy, x, w, dx, dw, db, geom, groups,
                                *tap_column_ranges(geom, xs[3]), threads, need_dx, need_dw,
                                need_db)
        return dx, dw, db

    plain_dx, plain_dw, untouched = backward(False, 1)
    assert np.isnan(untouched).all()
    assert np.isnan(plain_dw).all() != need_dw
    for threads in (1, 2, 3):
        dx, dw, db = backward(True, threads)
        np.testing.assert_array_equal(db, want_db)
        np.testing.assert_array_equal(dx, plain_dx)
        np.testing.assert_array_equal(dw, plain_dw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", [
    ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),     # LeNet conv2: two full panels
    ((37, 8, 9, 11), (12, 4, 3, 2), (2, 1), (1, 2), (2, 1), 2),  # a part panel, groups
    ((5, 3, 7, 7), (4, 3, 3, 3), 1, 1, 1, 1),         # fewer images than a panel
    ((33, 2, 6, 5), (3, 2, 1, 1), 1, (0, 1), 1, 1),   # 1x1 with padding
])
@pytest.mark.parametrize("result_cap", [None, 1])
def test_batch_in_lanes_forward_is_bitwise_the_im2col_forward(monkeypatch, dtype, xs, ws, stride,
                                                              padding, dilation, groups,
                                                              result_cap):
    """conv2d_forward_lanes (images in the GEMM's rows, no im2col) computes every
    output by the same sum as the im2col forward, which the test above pins to the
    GEMM of the explicit im2col: bitwise equal, with and without bias, any threads,
    whatever the row blocks (result_cap=1: one output row per item)."""
    if result_cap is not None:
        monkeypatch.setattr(_conv, "LANES_RESULT_CAP", result_cap)
    rng = np.random.default_rng(12)
    geom = resolve_geometry(xs[2:], ws[2:], stride=stride, padding=padding, dilation=dilation,
                            rounding="floor")
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    x_before = x.copy()
    out = (xs[0], ws[0], geom.out_h, geom.out_w)
    for bias in (None, b):
        want = np.empty(out, dtype=dtype)
        _conv.conv2d_forward(x, w, cb._EMPTY[x.dtype] if bias is None else bias, want, geom,
                             groups, bias is not None, *tap_column_ranges(geom, xs[3]), 1)
        for threads in (1, 2, 3):
            got = np.full(out, np.nan, dtype=dtype)
            _conv.conv2d_forward_lanes(x, w, cb._EMPTY[x.dtype] if bias is None else bias, got,
                                       geom, groups, bias is not None, threads)
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8),
                                          err_msg=f"bias {bias is not None}, {threads} threads")
    np.testing.assert_array_equal(x, x_before)


def test_public_forward_takes_the_batch_in_lanes_path_where_measured_faster(monkeypatch):
    """The wrapper's rule sends a small float32 plane to the lanes kernel (and its
    result is the im2col forward's), a large plane or float64 to im2col."""
    calls = []
    real = _conv.conv2d_forward_lanes
    monkeypatch.setattr(_conv, "conv2d_forward_lanes",
                        lambda *a: calls.append(a[0].dtype) or real(*a))
    rng = np.random.default_rng(13)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    geom = resolve_geometry((14, 14), (5, 5))
    x = rng.standard_normal((_conv.LANE_PANEL[4], 6, 14, 14)).astype(np.float32)
    y = cb.conv2d_forward(x, w, None, geom, 1, 2, algorithm="gemm")
    assert calls == [np.float32]
    want = np.empty_like(y)
    _conv.conv2d_forward(x, w, cb._EMPTY[x.dtype], want, geom, 1, False,
                         *tap_column_ranges(geom, 14), 2)
    np.testing.assert_array_equal(y, want)
    cb.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, geom, 1, 2,
                      algorithm="gemm")
    big = resolve_geometry((32, 32), (5, 5))
    cb.conv2d_forward(rng.standard_normal((64, 6, 32, 32)).astype(np.float32), w, None, big,
                      1, 2, algorithm="gemm")
    assert calls == [np.float32]

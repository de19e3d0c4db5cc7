"""Winograd convolution (``algorithm="winograd"``): accuracy bounds against a
float64 reference, the three passes, thread-count invariance, special values,
the algorithm choice and its validation.

The bound cyconv states (README, "Accuracy"): for every pass,

    ||y - y_exact||_F <= c * || |x| conv |w| ||_F      (forward; likewise dx, dW)

with c = 2e-5 for float32 and 1e-12 for float64.  The right side is the
convolution of the absolute values: for data without cancellation it is about
||y_exact||_F, so the bound is the relative Frobenius error the issue names;
for data with large cancellation no algorithm's *relative* error can be small,
and this is the form that holds.  The weight gradient sums N*OH*OW products
per weight; its rounding error grows with the square root of that count for
random rounding (at most linearly), and the bound there is 1e-4 (float32).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cyconv
from cyconv._shapes import resolve_geometry

cb = pytest.importorskip("cyconv.backends.cython_backend",
                         reason="the compiled backend is not built")

BOUND = {np.float32: 2e-5, np.float64: 1e-12}
DW_BOUND = {np.float32: 1e-4, np.float64: 1e-12}


def reference(x, w, dy, padding, groups):
    """float64 numpy results, and the same passes on absolute values (the scale)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    kw = dict(padding=padding, groups=groups, backend="numpy")
    y = cyconv.conv2d(x64, w64, **kw)
    dx, dw, _ = cyconv.conv2d_backward(dy.astype(np.float64), x64, w64, **kw)
    ay = cyconv.conv2d(np.abs(x64), np.abs(w64), **kw)
    adx, adw, _ = cyconv.conv2d_backward(np.abs(dy.astype(np.float64)), np.abs(x64),
                                         np.abs(w64), **kw)
    return (y, dx, dw), (ay, adx, adw)


def scaled_error(got, exact, scale):
    return np.linalg.norm(got - exact) / max(np.linalg.norm(scale), np.finfo(np.float64).tiny)


def winograd_passes(x, w, dy, padding, groups, n_threads=2):
    kw = dict(padding=padding, groups=groups, algorithm="winograd", n_threads=n_threads)
    y = cyconv.conv2d(x, w, **kw)
    dx, dw, db = cyconv.conv2d_backward(dy, x, w, **kw)
    return y, dx, dw, db


@st.composite
def winograd_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, ocg = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    pads = draw(st.tuples(*[st.integers(0, 3)] * 4))     # top, bottom, left, right
    if h + pads[0] + pads[1] < 3 or w + pads[2] + pads[3] < 3:
        pads = (2, 2, 2, 2)
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    scale = 10.0 ** draw(st.integers(-3, 3))
    kind = draw(st.sampled_from(["normal", "uniform", "cancellation"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return dtype, groups, cg, ocg, n, h, w, padding, scale, kind, seed


def draw_arrays(dtype, groups, cg, ocg, n, h, w, padding, scale, kind, seed):
    rng = np.random.default_rng(seed)
    xs, ws = (n, cg * groups, h, w), (ocg * groups, cg, 3, 3)
    if kind == "normal":
        x, wt = rng.standard_normal(xs), rng.standard_normal(ws)
    elif kind == "uniform":
        x, wt = rng.uniform(0, 1, xs), rng.uniform(0, 1, ws)
    else:   # a large common offset and zero-sum kernels: outputs cancel to ~1e-3 of it
        x = 1000.0 + rng.standard_normal(xs)
        wt = rng.standard_normal(ws)
        wt -= wt.mean(axis=(2, 3), keepdims=True)
    x, wt = (scale * x).astype(dtype), wt.astype(dtype)
    geom = resolve_geometry((h, w), (3, 3), padding=padding)
    dy = rng.standard_normal((n, ocg * groups, geom.out_h, geom.out_w)).astype(dtype)
    return x, wt, dy


@given(case=winograd_cases())
def test_winograd_error_bound(case):
    dtype, groups = case[0], case[1]
    padding = case[7]
    x, w, dy = draw_arrays(*case)
    y, dx, dw, db = winograd_passes(x, w, dy, padding, groups)
    assert y.dtype == dx.dtype == dw.dtype == dtype
    (ey, edx, edw), (sy, sdx, sdw) = reference(x, w, dy, padding, groups)
    assert scaled_error(y, ey, sy) <= BOUND[dtype]
    assert scaled_error(dx, edx, sdx) <= BOUND[dtype]
    assert scaled_error(dw, edw, sdw) <= DW_BOUND[dtype]
    np.testing.assert_allclose(db, dy.astype(np.float64).sum((0, 2, 3)),
                               rtol=BOUND[dtype], atol=BOUND[dtype] * np.abs(dy).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_relative_error_without_cancellation(dtype):
    """Data at scales 1e-3 .. 1e3: the relative Frobenius error itself is in bound."""
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e3):
        x = (scale * rng.standard_normal((2, 16, 20, 20))).astype(dtype)
        w = rng.standard_normal((24, 16, 3, 3)).astype(dtype)
        dy = rng.standard_normal((2, 24, 20, 20)).astype(dtype)
        y, dx, dw, _ = winograd_passes(x, w, dy, 1, 1)
        (ey, edx, edw), _ = reference(x, w, dy, 1, 1)
        for got, exact, bound in ((y, ey, BOUND), (dx, edx, BOUND), (dw, edw, DW_BOUND)):
            assert np.linalg.norm(got - exact) / np.linalg.norm(exact) <= bound[dtype]


def test_winograd_weight_gradient_at_the_largest_benchmark_shape():
    """dW of the VGG row (16x64x56x56, 50,176 products per weight) in float32."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 64, 56, 56)).astype(np.float32)
    w = (0.05 * rng.standard_normal((64, 64, 3, 3))).astype(np.float32)
    dy = rng.standard_normal((16, 64, 56, 56)).astype(np.float32)
    _, dw, _ = cyconv.conv2d_backward(dy, x, w, padding=1, algorithm="winograd")
    exact = cb.conv2d_backward(dy.astype(np.float64), x.astype(np.float64),
                               w.astype(np.float64), resolve_geometry((56, 56), (3, 3), padding=1),
                               algorithm="gemm")[1]
    assert np.linalg.norm(dw - exact) / np.linalg.norm(exact) <= DW_BOUND[np.float32]


def test_winograd_dw_slot_count_rule():
    """Slots: a power of two, at most the items and MAX_SLOTS, at least
    WINOGRAD_MIN_BLOCKS when there are as many items, more only with
    WINOGRAD_DW_ITEMS_PER_SLOT items each; the byte cap wins over all."""
    for items in range(1, 400):
        s = cb._winograd_dw_slots(items, 1024)
        assert s & (s - 1) == 0 and 1 <= s <= min(items, cb._conv.MAX_SLOTS)
        if items >= cb.WINOGRAD_MIN_BLOCKS:
            assert s >= cb.WINOGRAD_MIN_BLOCKS
        else:           # the largest power of two the items fill
            assert s <= items < 2 * s
        if s > cb.WINOGRAD_MIN_BLOCKS:
            assert items // s >= cb.WINOGRAD_DW_ITEMS_PER_SLOT
    assert cb._winograd_dw_slots(1000, cb._conv.DW_SLOT_CAP // 3) == 2


@pytest.mark.parametrize("n, channels, groups, every_group",
                         [(32, 64, 1, True), (32, 64, 2, True), (32, 64, 4, True),
                          (8, 64, 16, False)])
def test_winograd_weight_gradient_slots_and_groups(n, channels, groups, every_group):
    """With at least as many tile blocks per group as dW slots, a slot's first block of
    a group writes its partial dU (no zeroing pass); with fewer (many groups), slots
    are zeroed first.  Either way within the bound, and the same bits on one
    thread as on two."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, channels, 32, 32))
    w = rng.standard_normal((64, channels // groups, 3, 3))
    dy = rng.standard_normal((n, 64, 32, 32))
    geom = resolve_geometry((32, 32), (3, 3), padding=1)
    tiles = n * 8 * 8
    cg, ocg = channels // groups, 64 // groups
    blocks_per_group = -(-tiles // cb._tile_block(cg, ocg, 4, x.dtype, dy.shape, groups))
    slots = cb._winograd_dw_slots(groups * blocks_per_group, groups * 36 * ocg * cg * 8)
    assert (blocks_per_group >= slots) == every_group   # the case under test
    exact = cb.conv2d_backward(dy, x, w, geom, groups, algorithm="gemm")[1]
    results = [cb.conv2d_backward(dy, x, w, geom, groups, n_threads, algorithm="winograd")[1]
               for n_threads in (1, 2)]
    assert np.array_equal(results[0], results[1])
    assert np.linalg.norm(results[0] - exact) / np.linalg.norm(exact) <= DW_BOUND[np.float64]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, groups", [((32, 64, 32, 32), 1), ((32, 64, 32, 32), 4),
                                           ((8, 32, 30, 29), 2)])
def test_winograd_weight_pass_sums_the_bias_gradient(dtype, shape, groups):
    """Winograd's dW also sums db from the dy patches it reads (partial edge tiles
    included): many blocks and slots, the sum of dy per channel, the same bits on
    one, two and three threads."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((64, shape[1] // groups, 3, 3)).astype(dtype)
    geom = resolve_geometry(shape[2:], (3, 3), padding=1)
    dy = rng.standard_normal((shape[0], 64, geom.out_h, geom.out_w)).astype(dtype)
    want = dy.astype(np.float64).sum((0, 2, 3))
    dbs = [cb.conv2d_backward(dy, x, w, geom, groups, n_threads, algorithm="winograd")[2]
           for n_threads in (1, 2, 3)]
    assert dbs[0].dtype == dtype
    np.testing.assert_array_equal(dbs[0], dbs[1])
    np.testing.assert_array_equal(dbs[0], dbs[2])
    np.testing.assert_allclose(dbs[0], want, rtol=BOUND[dtype],
                               atol=BOUND[dtype] * np.abs(dy).sum((0, 2, 3)).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 12, 17, 15), (1, 16, 32, 32), (1, 8, 6, 7)])
def test_winograd_bitwise_for_any_thread_count(dtype, shape, threads_on_tiny_work):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((12, shape[1], 3, 3)).astype(dtype)
    dy = rng.standard_normal((shape[0], 12) + shape[2:]).astype(dtype)
    one = winograd_passes(x, w, dy, 1, 1, n_threads=1)
    for n_threads in (2, 3):
        for a, b in zip(one, winograd_passes(x, w, dy, 1, 1, n_threads=n_threads)):
            np.testing.assert_array_equal(a, b)


def test_winograd_streams_only_large_outputs_of_whole_cache_lines():
    stream = cb._stream_winograd_output
    assert stream((64, 64, 32, 32), np.float64)        # 32 MiB, 256-byte rows
    assert stream((16, 64, 56, 56), np.float64)        # 25.7 MiB, 448-byte rows
    assert stream((64, 32, 32, 32), np.float64)        # 16 MiB (the CIFAR dx)
    assert not stream((32, 32, 32, 32), np.float64)    # 8 MiB: under the threshold
    assert not stream((64, 64, 56, 56), np.float32)    # 224-byte rows: not whole lines
    assert not stream((1, 64, 32, 32), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, groups", [((3, 12, 17, 15), 1), ((2, 16, 32, 32), 2),
                                           ((1, 8, 6, 7), 1), ((2, 4, 9, 40), 4)])
def test_winograd_streamed_output_is_bitwise_the_plain_one(dtype, shape, groups,
                                                           threads_on_tiny_work, monkeypatch):
    """Forced on small shapes: runs that start and end inside a cache line, rows
    shorter than one, segments split between threads."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((12, shape[1] // groups, 3, 3)).astype(dtype)
    dy = rng.standard_normal((shape[0], 12) + shape[2:]).astype(dtype)
    plain = winograd_passes(x, w, dy, 1, groups)
    monkeypatch.setattr(cb, "_stream_winograd_output", lambda out_shape, dtype: True)
    for n_threads in (1, 2, 3):
        streamed = winograd_passes(x, w, dy, 1, groups, n_threads=n_threads)
        for a, b in zip(plain, streamed):
            np.testing.assert_array_equal(a, b)
        assert streamed[0].ctypes.data % cb.CACHE_LINE == 0
        assert streamed[1].ctypes.data % cb.CACHE_LINE == 0


@pytest.mark.parametrize("where", ["x", "w", "dy"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_winograd_special_values_equal_the_gemm_results(where, value):
    """A non-finite value would spread over a Winograd tile: such calls run by GEMM."""
    rng = np.random.default_rng(3)
    arrays = {"x": rng.standard_normal((2, 8, 12, 12)), "w": rng.standard_normal((8, 8, 3, 3)),
              "dy": rng.standard_normal((2, 8, 12, 12))}
    arrays[where][(0, 1, 2, 2)] = value
    x, w, dy = arrays["x"], arrays["w"], arrays["dy"]
    for alg in ("winograd", "auto"):
        if where != "dy":    # (a forward without the bad value is an ordinary Winograd one)
            np.testing.assert_array_equal(cyconv.conv2d(x, w, padding=1, algorithm=alg),
                                          cyconv.conv2d(x, w, padding=1, algorithm="gemm"))
        for a, b in zip(cyconv.conv2d_backward(dy, x, w, padding=1, algorithm=alg),
                        cyconv.conv2d_backward(dy, x, w, padding=1, algorithm="gemm")):
            np.testing.assert_array_equal(a, b)


def test_winograd_overflow_in_the_transforms_falls_back():
    """Finite inputs whose transformed values overflow float32 are computed by GEMM."""
    x = np.full((1, 8, 8, 8), 3e37, np.float32)
    w = np.full((8, 8, 3, 3), 1e-38, np.float32)
    np.testing.assert_array_equal(cyconv.conv2d(x, w, padding=1, algorithm="winograd"),
                                  cyconv.conv2d(x, w, padding=1, algorithm="gemm"))


def test_winograd_layer_matches_its_functional_op():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    layer = cyconv.Conv2D(8, 3, padding=1, algorithm="winograd")
    layer.build((8, 10, 10), dtype=np.float32, rng=rng)
    y = layer.forward(x)
    np.testing.assert_array_equal(
        y, cyconv.conv2d(x, layer.params["W"], layer.params["b"], padding=1,
                         algorithm="winograd"))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    fdx, fdw, fdb = cyconv.conv2d_backward(dy, x, layer.params["W"], padding=1,
                                           algorithm="winograd")
    np.testing.assert_array_equal(dx, fdx)
    np.testing.assert_array_equal(layer.grads["W"], fdw)
    np.testing.assert_array_equal(layer.grads["b"], fdb)


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(dilation=2), dict(kernel=5),
                                    dict(kernel=(3, 1))])
def test_winograd_refuses_the_shapes_it_cannot_serve(kwargs):
    kernel = kwargs.pop("kernel", 3)
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = np.ones((1, 2, 9, 9))
    w = np.ones((2, 2) + kernel)
    with pytest.raises(ValueError, match="3x3 kernels with stride 1 and dilation 1"):
        cyconv.conv2d(x, w, algorithm="winograd", rounding="floor", **kwargs)
    with pytest.raises(ValueError, match="3x3 kernels with stride 1 and dilation 1"):
        cyconv.conv2d_backward(np.ones_like(cyconv.conv2d(x, w, rounding="floor", **kwargs)),
                               x, w, algorithm="winograd", rounding="floor", **kwargs)


def test_algorithm_validation():
    x, w = np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3))
    for bad in ("fast", "", None, 3, "Winograd"):
        with pytest.raises(ValueError, match="algorithm must be one of"):
            cyconv.conv2d(x, w, algorithm=bad)
        with pytest.raises(ValueError, match="algorithm must be one of"):
            cyconv.Conv2D(2, 3, algorithm=bad)
    with pytest.raises(ValueError, match="not implemented by this backend"):
        cyconv.conv2d(x, w, algorithm="winograd", backend="numpy")
    # "gemm" is what the reference does: accepted there
    np.testing.assert_array_equal(cyconv.conv2d(x, w, algorithm="gemm", backend="numpy"),
                                  cyconv.conv2d(x, w, backend="numpy"))


def test_auto_choice():
    geom3 = resolve_geometry((32, 32), (3, 3), padding=1)
    geom5 = resolve_geometry((28, 28), (5, 5))
    geom_s2 = resolve_geometry((64, 64), (3, 3), stride=2, padding=1, rounding="floor")
    assert cb.conv2d_algorithm((64, 32, 32, 32), (64, 32, 3, 3), geom3) == "winograd"
    assert cb.conv2d_algorithm((64, 32, 32, 32), (64, 32, 3, 3), geom3, algorithm="gemm") == "gemm"
    assert cb.conv2d_algorithm((1, 1, 28, 28), (30, 1, 5, 5), geom5) == "gemm"
    assert cb.conv2d_algorithm((32, 16, 64, 64), (16, 16, 3, 3), geom_s2) == "gemm"
    # depthwise: too few channels per group for the transforms to pay
    assert cb.conv2d_algorithm((8, 32, 32, 32), (32, 1, 3, 3), geom3, groups=32) == "gemm"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_choice_follows_the_measured_crossovers(dtype):
    """Each limit of the "auto" rule, just inside and just outside."""
    def choice(n, c, size, pass_name="forward", groups=1):
        geom = resolve_geometry((size, size), (3, 3), padding=1)
        return cb.conv2d_algorithm((n, c, size, size), (c, c // groups, 3, 3), geom, groups,
                                   pass_name=pass_name, dtype=dtype)

    least = cb.WINOGRAD_MIN_CHANNELS[np.dtype(dtype)]
    size = cb.WINOGRAD_MIN_SIZE
    assert choice(16, least, size) == "winograd"
    assert choice(16, least - 1, size) == "gemm"                   # too few channels
    assert choice(16, 2 * least, size, groups=2) == "winograd"     # per group
    assert choice(16, 4 * least, size, groups=8) == "gemm"
    assert choice(16, least, size - 1) == "gemm"                   # too small an output
    assert choice(1, least, 56) == "winograd"                      # 196 tiles
    assert choice(1, least, size) == "gemm"                        # 49 tiles
    assert choice(1, least, 32) == ("winograd" if dtype == np.float64 else "gemm")  # 64 tiles
    assert choice(1, least, 32, "input_grad") == "gemm"
    assert choice(1, least, 32, "weight_grad") == "gemm"
    assert choice(2, least, 32, "weight_grad") == "winograd"       # 128 tiles
    assert choice(16, least, size, "input_grad") == "winograd"
    big = cb.WINOGRAD_DW_MAX_CHANNELS_F64
    assert choice(16, big, size, "forward") == "winograd"
    assert choice(16, big, size, "weight_grad") == ("gemm" if dtype == np.float64
                                                    else "winograd")
    assert choice(16, big - 1, size, "weight_grad") == "winograd"


def test_auto_weight_grad_by_gemm_matches_the_reference():
    """A float64 call whose dx runs by Winograd and whose dW runs by GEMM (auto)."""
    rng = np.random.default_rng(8)
    c = cb.WINOGRAD_DW_MAX_CHANNELS_F64
    x = rng.standard_normal((1, c, 28, 28)) * 0.1
    w = rng.standard_normal((c, c, 3, 3)) * 0.1
    dy = rng.standard_normal((1, c, 28, 28))
    geom = resolve_geometry((28, 28), (3, 3), padding=1)
    x5 = np.concatenate([x] * 5)          # 5 images: enough tiles for Winograd
    dy5 = np.concatenate([dy] * 5)
    assert cb.conv2d_algorithm(x5.shape, w.shape, geom, pass_name="input_grad",
                               dtype=np.float64) == "winograd"
    auto = cb.conv2d_backward(dy5, x5, w, geom, 1, 2)
    np.testing.assert_array_equal(auto[1], cb.conv2d_backward(dy5, x5, w, geom, 1, 2,
                                                              algorithm="gemm")[1])
    np.testing.assert_array_equal(auto[0], cb.conv2d_backward(dy5, x5, w, geom, 1, 2,
                                                              algorithm="winograd")[0])


def test_show_config_lists_the_algorithms():
    from cyconv._config import config_info
    algorithms = config_info()["conv2d algorithms"]
    assert algorithms["cython"] == ("auto", "gemm", "winograd")
    assert algorithms["numpy"] == ("auto", "gemm")


G_MATRIX = {4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
            2: np.array([[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]])}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [4, 2])
@pytest.mark.parametrize("cg, groups", [(3, 1), (8, 2), (13, 1), (16, 3)])
def test_winograd_weight_transform_is_g_w_gt(dtype, m, cg, groups):
    """U = G w G^T for every kernel (runs of 8 input channels are transformed together,
    the rest one by one), each value rounded once from double; an inf anywhere makes
    the transform report it."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6 * groups, cg, 3, 3)).astype(dtype)
    u, finite = cb._winograd_weights(w, groups, m, 2)
    g = G_MATRIX[m]
    want = np.einsum("ik,ockl,jl->ocij", g, w.astype(np.float64), g)    # (OC, Cg, A, A)
    want = want.reshape(groups, 6, cg, (m + 2) ** 2).transpose(0, 3, 1, 2)
    assert finite
    scale = np.abs(w).max()     # of every value: sums of a few weights over 1 to 24
    np.testing.assert_allclose(u, want, rtol=0, atol=4 * np.finfo(dtype).eps * scale)
    for c in (0, cg - 1, min(cg - 1, 9)):
        bad = w.copy()
        bad[-1, c, 1, 2] = np.inf
        assert not cb._winograd_weights(bad, groups, m, 2)[1]

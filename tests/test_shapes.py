"""The shape rule: output sizes, paddings, rounding modes and their error messages.

Every expected value here is computed independently of :mod:`cyconv._shapes`
(exact fractions for the formula, brute-force window enumeration for the
ceil/floor rules) and compared with cyconv's answer.
"""

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyconv
from cyconv import (
    ShapeError,
    conv_output_size,
    normalize_padding,
    pool_output_size,
    resolve_geometry,
)
from cyconv.testing.strategies import INVALID_VALUES

# -- independent computations --------------------------------------------------

def direct_out(in_size, k, stride, dilation, pad_before, pad_after):
    """The formula, as an exact fraction."""
    return Fraction(in_size + pad_before + pad_after - dilation * (k - 1) - 1, stride) + 1


def brute_force_windows(in_size, k, stride, dilation, pad_before, pad_after, rounding):
    """Count windows by walking them over the padded input.

    floor: every window that lies entirely in the padded extent.
    ceil (PyTorch): those, plus one partial window that sticks out past the
    end of the padded extent, provided it starts inside the input or the
    left padding.
    """
    extent = in_size + pad_before + pad_after
    eff = dilation * (k - 1) + 1
    count = 0
    while count * stride + eff <= extent:
        count += 1
    if rounding == "ceil" and count > 0:
        start = count * stride  # the next window, in padded coordinates
        if (count - 1) * stride + eff < extent and start < in_size + pad_before:
            count += 1
    return count


# -- strategies ----------------------------------------------------------------

dims = st.tuples(
    st.integers(1, 40),  # in
    st.integers(1, 7),   # k
    st.integers(1, 5),   # stride
    st.integers(1, 3),   # dilation
    st.integers(0, 4),   # pad before
    st.integers(0, 4),   # pad after
)


# -- the formula ---------------------------------------------------------------

@settings(max_examples=200)
@given(h=dims, w=dims)
def test_floor_and_exact_match_formula(h, w):
    pads = ((h[4], h[5]), (w[4], w[5]))
    args = dict(kernel_size=(h[1], w[1]), stride=(h[2], w[2]), dilation=(h[3], w[3]), padding=pads)
    expected = [direct_out(*d) for d in (h, w)]
    if min(expected) < 1:
        with pytest.raises(ShapeError):
            conv_output_size((h[0], w[0]), rounding="floor", **args)
        return
    floor = conv_output_size((h[0], w[0]), rounding="floor", **args)
    assert floor == tuple(math.floor(e) for e in expected)
    assert floor == tuple(brute_force_windows(*d, "floor") for d in (h, w))
    if all(e.denominator == 1 for e in expected):
        assert conv_output_size((h[0], w[0]), **args) == tuple(int(e) for e in expected)
    else:
        with pytest.raises(ShapeError):
            conv_output_size((h[0], w[0]), **args)


@settings(max_examples=200)
@given(h=dims, w=dims)
def test_geometry_fields(h, w):
    pads = ((h[4], h[5]), (w[4], w[5]))
    if min(direct_out(*d) for d in (h, w)) < 1:
        return
    g = resolve_geometry((h[0], w[0]), (h[1], w[1]), stride=(h[2], w[2]), padding=pads,
                         dilation=(h[3], w[3]), rounding="floor")
    assert (g.in_h, g.kernel_h, g.stride_h, g.dilation_h, g.pad_top, g.pad_bottom) == h
    assert (g.in_w, g.kernel_w, g.stride_w, g.dilation_w, g.pad_left, g.pad_right) == w
    assert g.out_size == (g.out_h, g.out_w)
    assert g.kernel_size == (h[1], w[1])
    assert all(type(v) is int for v in (g.out_h, g.out_w, g.pad_top, g.pad_right))


@pytest.mark.parametrize("size, kernel, stride, padding, expected", [
    ((4, 4), 3, 1, 1, (4, 4)),
    ((7, 7), 3, 2, 0, (3, 3)),
    ((28, 31), 5, 3, 2, (10, 11)),
    ((28, 28), 5, 1, 0, (24, 24)),
])
def test_worked_examples(size, kernel, stride, padding, expected):
    assert conv_output_size(size, kernel, stride=stride, padding=padding) == expected
    x = np.zeros((1, 1) + size)
    w = np.zeros((2, 1, kernel, kernel))
    assert cyconv.conv2d(x, w, stride=stride, padding=padding, backend="numpy").shape == \
        (1, 2) + expected


def test_worked_example_width_30_error_message():
    with pytest.raises(ShapeError) as info:
        conv_output_size((28, 30), 5, stride=3, padding=2)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "conv2d" in msg
    assert "width" in msg and "height" not in msg
    assert "10.67" in msg
    for number in ("30", "2", "5", "3"):
        assert number in msg
    assert "padding" in msg and "stride" in msg
    assert "rounding='floor'" in msg
    # and the floor answer it announces is right
    assert "(-> 10)" in msg
    assert conv_output_size((28, 30), 5, stride=3, padding=2, rounding="floor") == (10, 10)


def test_error_names_layer_and_dimension():
    x = np.zeros((1, 1, 30, 28))
    with pytest.raises(ShapeError, match="height") as info:
        cyconv.conv2d(x, np.zeros((1, 1, 5, 5)), stride=3, padding=2, backend="numpy")
    assert "conv2d" in str(info.value)
    with pytest.raises(ShapeError, match="max_pool2d"):
        cyconv.max_pool2d(np.zeros((1, 1, 5, 4)), 2, backend="numpy")
    with pytest.raises(ShapeError, match="avg_pool2d"):
        cyconv.avg_pool2d(np.zeros((1, 1, 4, 5)), 2, backend="numpy")
    layer = cyconv.Conv2D(W=np.zeros((1, 1, 5, 5)), stride=3, padding=2, backend="numpy")
    with pytest.raises(ShapeError, match="Conv2D"):
        layer.output_shape((1, 28, 30))
    with pytest.raises(ShapeError, match="width"):
        layer.forward(np.zeros((1, 1, 28, 30)))
    with pytest.raises(ShapeError, match="MaxPool2D"):
        cyconv.MaxPool2D(2, backend="numpy").forward(np.zeros((1, 1, 5, 4)))


def test_window_larger_than_input():
    with pytest.raises(ShapeError, match="larger than the padded input"):
        conv_output_size((3, 3), 5)
    with pytest.raises(ShapeError, match="larger"):
        conv_output_size((5, 5), 3, dilation=3)  # effective size 7
    with pytest.raises(ShapeError):
        conv_output_size((3, 3), 5, rounding="floor")
    with pytest.raises(ShapeError):
        conv_output_size((3, 3), 5, rounding="ceil")
    assert conv_output_size((3, 3), 5, padding=1) == (1, 1)


def test_zero_input_size_is_shape_error():
    with pytest.raises(ShapeError):
        conv_output_size((0, 4), 1)


_PAD_HINT = re.compile(r"padding (\d+) \(-> (\d+)\)(?: or (\d+) \(-> (\d+)\))?")
_STRIDE_HINT = re.compile(r"stride (\d+) \(-> (\d+)\)(?: or (\d+) \(-> (\d+)\))?")
_SIZE_HINT = re.compile(r"input size (-?\d+)(?: or (-?\d+))?")
_FLOOR_HINT = re.compile(r"rounding='floor' \(-> (\d+), PyTorch's behaviour\)")


@settings(max_examples=200)
@given(d=dims, symmetric=st.booleans())
def test_error_suggestions_are_valid(d, symmetric):
    """Every alternative the message suggests really gives an integer size."""
    in_size, k, stride, dil, pb, pa = d
    if symmetric:
        pa = pb
    exact = direct_out(in_size, k, stride, dil, pb, pa)
    if exact < 1 or exact.denominator == 1:
        return
    with pytest.raises(ShapeError) as info:
        resolve_geometry((in_size, 1), (k, 1), stride=(stride, 1), dilation=(dil, 1),
                         padding=((pb, pa), (0, 0)))
    msg = str(info.value)
    assert "height" in msg and f"{float(exact):.2f}" in msg
    assert int(_FLOOR_HINT.search(msg).group(1)) == math.floor(exact)
    pad_hint = _PAD_HINT.search(msg)
    if pad_hint:
        values = [v for v in pad_hint.groups() if v is not None]
        for p, out in zip(values[::2], values[1::2]):
            assert direct_out(in_size, k, stride, dil, int(p), int(p)) == int(out)
    stride_hint = _STRIDE_HINT.search(msg)
    assert stride_hint is not None
    values = [v for v in stride_hint.groups() if v is not None]
    for s, out in zip(values[::2], values[1::2]):
        assert direct_out(in_size, k, int(s), dil, pb, pa) == int(out)
    size_hint = _SIZE_HINT.search(msg)
    if size_hint is not None:
        for n in size_hint.groups():
            if n is not None and int(n) >= 1:
                assert direct_out(int(n), k, stride, dil, pb, pa).denominator == 1


# -- 'same' and 'valid' padding ------------------------------------------------

@settings(max_examples=200)
@given(in_size=st.integers(1, 40), k=st.integers(1, 7), stride=st.integers(1, 4),
       dilation=st.integers(1, 3))
def test_same_padding(in_size, k, stride, dilation):
    (top, bottom), (left, right) = normalize_padding("same", (in_size, in_size), k,
                                                     stride=stride, dilation=dilation)
    assert (top, bottom) == (left, right)
    assert 0 <= bottom - top <= 1  # any odd extra goes bottom/right
    eff = dilation * (k - 1) + 1
    out = -(-in_size // stride)
    assert top + bottom == max((out - 1) * stride + eff - in_size, 0)
    assert conv_output_size((in_size, in_size), k, stride=stride, padding="same",
                            dilation=dilation) == (out, out)
    if stride == 1:
        assert out == in_size
        if eff % 2 == 1:
            assert top == bottom


def test_same_padding_on_arrays():
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 6))
    w = np.ones((3, 2, 4, 4))
    assert cyconv.conv2d(x, w, padding="same", backend="numpy").shape == (1, 3, 7, 6)
    assert cyconv.conv2d(x, w, padding="same", stride=2, backend="numpy").shape == (1, 3, 4, 3)
    # even kernel, stride 1: total padding 3 -> 1 top, 2 bottom
    assert normalize_padding("same", (7, 6), 4) == ((1, 2), (1, 2))
    explicit = cyconv.conv2d(x, w, padding=((1, 2), (1, 2)), backend="numpy")
    np.testing.assert_array_equal(cyconv.conv2d(x, w, padding="same", backend="numpy"), explicit)


def test_valid_padding():
    assert normalize_padding("valid", (9, 9), 3) == ((0, 0), (0, 0))
    assert conv_output_size((9, 8), 3, padding="valid") == (7, 6)
    with pytest.raises(ValueError, match="padding"):
        normalize_padding("full", (9, 9), 3)


@pytest.mark.parametrize("padding, expected", [
    (1, ((1, 1), (1, 1))),
    ((1, 2), ((1, 1), (2, 2))),
    ([0, 3], ((0, 0), (3, 3))),
    (((1, 2), (0, 3)), ((1, 2), (0, 3))),
    ([[2, 0], [1, 1]], ((2, 0), (1, 1))),
])
def test_padding_spellings(padding, expected):
    assert normalize_padding(padding, (8, 8), 3) == expected


@pytest.mark.parametrize("padding, exc", INVALID_VALUES["padding"])
def test_bad_padding(padding, exc):
    with pytest.raises(exc, match="padding"):
        normalize_padding(padding, (8, 8), 3)
    with pytest.raises(exc, match="padding"):
        conv_output_size((8, 8), 3, padding=padding)


def test_per_side_padding_output():
    # height: 6 + 1 + 2 - 3 + 1 = 7; width: 5 + 0 + 3 - 3 + 1 = 6
    assert conv_output_size((6, 5), 3, padding=((1, 2), (0, 3))) == (7, 6)
    x = np.ones((1, 1, 6, 5))
    y = cyconv.conv2d(x, np.ones((1, 1, 3, 3)), padding=((1, 2), (0, 3)), backend="numpy")
    assert y.shape == (1, 1, 7, 6)
    # top-left window covers rows -1..1 and cols 0..2: 2*3 ones
    assert y[0, 0, 0, 0] == 6
    # bottom-right window covers rows 4..6 (two inside) and cols 5..7 (none inside)
    assert y[0, 0, -1, -1] == 0


@pytest.mark.parametrize("name, value", [
    ("stride", 0), ("stride", -1), ("dilation", 0), ("kernel_size", 0), ("stride", (1, 0)),
])
def test_nonpositive_arguments(name, value):
    kwargs = {"kernel_size": 3, name: value}
    with pytest.raises(ValueError, match=name):
        resolve_geometry((8, 8), **kwargs)


@pytest.mark.parametrize("name, value", [
    ("stride", 1.0), ("stride", "2"), ("dilation", True), ("kernel_size", (3,)),
    ("kernel_size", (3, 3, 3)),
])
def test_non_integer_arguments(name, value):
    kwargs = {"kernel_size": 3, name: value}
    with pytest.raises(TypeError, match=name):
        resolve_geometry((8, 8), **kwargs)


@pytest.mark.parametrize("name, plain, lookalike", [
    ("stride", 1, True), ("stride", (1, 1), (True, 1)), ("padding", (1, 0), (True, 0)),
    ("stride", 2, 2.0), ("kernel_size", (3, 3), (3.0, 3)), ("dilation", (1, 1), [1, 1.5]),
])
def test_cached_geometry_does_not_answer_lookalikes(name, plain, lookalike):
    """The geometry cache keys on exact ints and strs: a value that hashes like a
    cached one (True like 1, 2.0 like 2) still meets its check."""
    kwargs = {"kernel_size": 3, name: plain}
    assert resolve_geometry((9, 9), **kwargs) is resolve_geometry((9, 9), **kwargs)
    kwargs[name] = lookalike
    with pytest.raises(TypeError, match=name):
        resolve_geometry((9, 9), **kwargs)


def test_uncached_spellings_resolve_as_the_cached_ones():
    cached = resolve_geometry((10, 8), (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)))
    spelled = resolve_geometry([np.int64(10), 8], [3, np.int32(2)], stride=[2, 1],
                               padding=[[1, 0], [0, 1]])
    assert spelled == cached and spelled is not cached


def test_bad_rounding():
    with pytest.raises(ValueError, match="rounding"):
        conv_output_size((8, 8), 3, rounding="round")
    with pytest.raises(ValueError, match="rounding"):
        pool_output_size((8, 8), 3, rounding="Floor")


# -- ceil rounding ---------------------------------------------------------------

@settings(max_examples=300)
@given(d=dims)
def test_ceil_rounding_matches_pytorch_rule(d):
    """PyTorch's domain: padding at most half the kernel on each side."""
    in_size, k, stride, dil, pb, pa = d
    pb, pa = min(pb, k // 2), min(pa, k // 2)
    d = (in_size, k, stride, dil, pb, pa)
    exact = direct_out(*d)
    if exact < 1:
        return
    got = resolve_geometry((in_size, in_size), k, stride=stride, dilation=dil,
                           padding=((pb, pa), (pb, pa)), rounding="ceil").out_size
    expected = brute_force_windows(*d, "ceil")
    assert got == (expected, expected)
    assert math.floor(exact) <= expected <= math.ceil(exact)
    # the last window starts inside the input or the left padding
    assert (expected - 1) * stride < in_size + pb
    pool = pool_output_size((in_size, in_size), k, stride=stride, dilation=dil,
                            padding=((pb, pa), (pb, pa)), ceil_mode=True)
    assert pool == got


@settings(max_examples=200)
@given(in_size=st.integers(1, 30), k=st.integers(1, 6), stride=st.integers(1, 4),
       pad=st.integers(0, 3))
def test_pool_ceil_mode_alias(in_size, k, stride, pad):
    pad = min(pad, k // 2)
    if direct_out(in_size, k, stride, 1, pad, pad) < 1:
        return
    ceil = pool_output_size((in_size, in_size), k, stride=stride, padding=pad, rounding="ceil")
    alias = pool_output_size((in_size, in_size), k, stride=stride, padding=pad, ceil_mode=True)
    assert ceil == alias == (brute_force_windows(in_size, k, stride, 1, pad, pad, "ceil"),) * 2


def test_ceil_examples():
    assert pool_output_size((5, 5), 2, ceil_mode=True) == (3, 3)
    assert pool_output_size((5, 5), 2, rounding="floor") == (2, 2)
    # PyTorch: 5 + 2*1, k 2, s 2 -> ceil(5/2)+1 = 4 but window 3 would start at 6 >= 5 + 1
    assert pool_output_size((5, 5), 2, stride=2, padding=1, ceil_mode=True) == (3, 3)
    assert pool_output_size((6, 6), 3, stride=2, padding=1, ceil_mode=True) == (4, 4)
    with pytest.raises(ValueError, match="ceil_mode"):
        pool_output_size((5, 5), 2, rounding="floor", ceil_mode=True)
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    y = cyconv.max_pool2d(x, 2, ceil_mode=True, backend="numpy")
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 2, 2] == 24.0
    assert cyconv.MaxPool2D(2, ceil_mode=True, backend="numpy").output_shape((1, 5, 5)) == (1, 3, 3)


def test_pool_stride_defaults_to_kernel():
    assert pool_output_size((12, 9), (4, 3)) == (3, 3)
    assert pool_output_size((12, 9), (4, 3), stride=1) == (9, 7)


@pytest.mark.parametrize("padding", [2, (0, 2), ((0, 2), (0, 0)), ((0, 0), (3, 0))])
def test_pool_padding_over_half_kernel_raises(padding):
    with pytest.raises(ValueError, match="half the kernel"):
        pool_output_size((8, 8), 3, stride=1, padding=padding)
    x = np.zeros((1, 1, 8, 8))
    with pytest.raises(ValueError, match="half the kernel"):
        cyconv.max_pool2d(x, 3, stride=1, padding=padding, backend="numpy")
    with pytest.raises(ValueError, match="half the kernel"):
        cyconv.avg_pool2d(x, 3, stride=1, padding=padding, backend="numpy")
    with pytest.raises(ValueError, match="half the kernel"):
        cyconv.MaxPool2D(3, stride=1, padding=padding, backend="numpy").forward(x)
    # half the kernel is fine
    assert pool_output_size((8, 8), 3, stride=1, padding=1) == (8, 8)


# -- layers: actual output shape == formula == layer.output_shape ----------------

def _backends(name):
    return cyconv.backends_for(name)


@settings(max_examples=30)
@given(n=st.integers(1, 2), c=st.integers(1, 3), oc=st.integers(1, 3), h=dims, w=dims)
@pytest.mark.parametrize("backend", _backends("Conv2D"))
def test_conv_layer_output_shape(backend, n, c, oc, h, w):
    h = (min(h[0], 16),) + h[1:]
    w = (min(w[0], 16),) + w[1:]
    expected = (direct_out(*h), direct_out(*w))
    if min(expected) < 1:
        return
    layer = cyconv.Conv2D(W=np.ones((oc, c, h[1], w[1])), b=np.zeros(oc), stride=(h[2], w[2]),
                          dilation=(h[3], w[3]), padding=((h[4], h[5]), (w[4], w[5])),
                          rounding="floor", backend=backend)
    out = (oc, math.floor(expected[0]), math.floor(expected[1]))
    assert layer.output_shape((c, h[0], w[0])) == out
    y = layer.forward(np.ones((n, c, h[0], w[0])))
    assert y.shape == (n,) + out


pool_dims = st.tuples(st.integers(1, 16), st.integers(1, 4), st.integers(1, 3),
                      st.integers(0, 2), st.integers(0, 2))


@settings(max_examples=30)
@given(c=st.integers(1, 3), h=pool_dims, w=pool_dims, rounding=st.sampled_from(["floor", "ceil"]))
@pytest.mark.parametrize("name", ["MaxPool2D", "AvgPool2D"])
def test_pool_layer_output_shape(name, c, h, w, rounding):
    (ih, kh, sh, pth, pbh), (iw, kw, sw, ptw, pbw) = h, w
    pth, pbh, ptw, pbw = min(pth, kh // 2), min(pbh, kh // 2), min(ptw, kw // 2), min(pbw, kw // 2)
    dh = (ih, kh, sh, 1, pth, pbh)
    dw = (iw, kw, sw, 1, ptw, pbw)
    if min(direct_out(*dh), direct_out(*dw)) < 1:
        return
    out = (c, brute_force_windows(*dh, rounding), brute_force_windows(*dw, rounding))
    for backend in _backends(name):
        layer = getattr(cyconv, name)((kh, kw), stride=(sh, sw), padding=((pth, pbh), (ptw, pbw)),
                                      rounding=rounding, backend=backend)
        assert layer.output_shape((c, ih, iw)) == out
        assert layer.forward(np.ones((2, c, ih, iw))).shape == (2,) + out


def test_other_layers_output_shape():
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 5))
    layers = [cyconv.ReLU(), cyconv.Sigmoid(), cyconv.Dropout(0.3, rng=0), cyconv.BatchNorm(),
              cyconv.Flatten(), cyconv.Affine(W=np.ones((40, 7)), b=np.zeros(7))]
    for layer in layers:
        y = layer.forward(x)
        assert y.shape[1:] == layer.output_shape(x.shape[1:]), type(layer).__name__
    assert cyconv.Flatten().output_shape((2, 4, 5)) == (40,)
    assert cyconv.Affine(7).output_shape((2, 4, 5)) == (7,)

@settings(max_examples=300)
@given(d=dims)
def test_ceil_rounding_never_below_floor_general_padding(d):
    """Convolution accepts any padding; ceil must never give fewer windows than floor."""
    in_size, k, stride, dil, pb, pa = d
    exact = direct_out(*d)
    if exact < 1:
        return
    got = resolve_geometry((in_size, in_size), k, stride=stride, dilation=dil,
                           padding=((pb, pa), (pb, pa)), rounding="ceil").out_size
    assert got[0] >= math.floor(exact)
    if exact.denominator == 1:
        assert got[0] == exact
    assert got == (brute_force_windows(*d, "ceil"),) * 2


@settings(max_examples=200)
@given(d=dims)
def test_error_suggested_input_sizes_are_valid(d):
    in_size, k, stride, dil, pb, pa = d
    exact = direct_out(*d)
    if exact < 1 or exact.denominator == 1:
        return
    with pytest.raises(ShapeError) as info:
        resolve_geometry((in_size, 1), (k, 1), stride=(stride, 1), dilation=(dil, 1),
                         padding=((pb, pa), (0, 0)))
    size_hint = _SIZE_HINT.search(str(info.value))
    assert size_hint is not None
    for n in size_hint.groups():
        if n is not None:
            assert int(n) >= 1
            out = direct_out(int(n), k, stride, dil, pb, pa)
            assert out.denominator == 1 and out >= 1

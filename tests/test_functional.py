"""The functional API's contract: invariances, input handling, dtypes and errors.

Checks run on every available backend (``cyconv.backends_for``); numerical
truth lives in ``test_reference_naive.py``.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyconv
from cyconv.testing.strategies import INVALID_VALUES

BACKENDS = cyconv.backends_for("Conv2D")
TOL = dict(rtol=1e-12, atol=1e-12)


def _rng(seed=0):
    return np.random.default_rng(seed)


# Every public operation as (name, callable(x, backend) -> tuple of outputs).
def _meta(x):
    """Shape and dtype of an array or a nested list."""
    a = np.asarray(x)
    return a.shape, (a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)).newbyteorder("=")


def _conv(x, backend, **kw):
    shape, dtype = _meta(x)
    w = _rng(1).standard_normal((4, shape[1], 3, 3)).astype(dtype)
    b = _rng(2).standard_normal(4).astype(dtype)
    return (cyconv.conv2d(x, w, b, padding=1, stride=(1, 2), rounding="floor", backend=backend,
                          **kw),)


def _conv_backward(x, backend, **kw):
    shape, dtype = _meta(x)
    w = _rng(1).standard_normal((4, shape[1], 3, 3)).astype(dtype)
    dy = _rng(3).standard_normal((shape[0], 4, shape[2], (shape[3] + 1) // 2)).astype(dtype)
    return cyconv.conv2d_backward(dy, x, w, padding=1, stride=(1, 2), rounding="floor",
                                  backend=backend, **kw)


def _max_pool(x, backend, **kw):
    return cyconv.max_pool2d(x, 3, stride=2, padding=1, rounding="ceil", return_indices=True,
                             backend=backend, **kw)


def _max_pool_backward(x, backend, **kw):
    shape, dtype = _meta(x)
    out = cyconv.pool_output_size(shape[2:], 3, stride=2, padding=1, rounding="ceil")
    dy = _rng(3).standard_normal(shape[:2] + out).astype(dtype)
    return (cyconv.max_pool2d_backward(dy, x, 3, stride=2, padding=1, rounding="ceil",
                                       backend=backend, **kw),)


def _avg_pool(x, backend, **kw):
    return (cyconv.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=False,
                              backend=backend, **kw),)


def _avg_pool_backward(x, backend, **kw):
    shape, dtype = _meta(x)
    dy = _rng(3).standard_normal(shape[:2] + (shape[2] + 1, shape[3] + 1)).astype(dtype)
    return (cyconv.avg_pool2d_backward(dy, x, 2, stride=1, padding=1, count_include_pad=False,
                                       backend=backend, **kw),)


OPERATIONS = {
    "conv2d": _conv, "conv2d_backward": _conv_backward, "max_pool2d": _max_pool,
    "max_pool2d_backward": _max_pool_backward, "avg_pool2d": _avg_pool,
    "avg_pool2d_backward": _avg_pool_backward,
}
FORWARD = {"conv2d": _conv, "max_pool2d": _max_pool, "avg_pool2d": _avg_pool}


def _assert_same(got, expected, exact=False):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        if exact or g.dtype.kind == "i":
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, **TOL)


# -- batch invariance ---------------------------------------------------------------

@settings(max_examples=15)
@given(n=st.integers(2, 5), seed=st.integers(0, 2**32 - 1), data=st.data())
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(FORWARD))
def test_batch_subset_and_order_invariance(op, backend, n, seed, data):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, 6, 5))
    full = FORWARD[op](x, backend)
    order = data.draw(st.permutations(range(n)))
    permuted = FORWARD[op](x[order], backend)
    _assert_same(permuted, tuple(a[order] for a in full))
    subset = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    part = FORWARD[op](x[subset], backend)
    _assert_same(part, tuple(a[subset] for a in full))
    single = FORWARD[op](x[subset[0]:subset[0] + 1], backend)
    _assert_same(single, tuple(a[subset[0]:subset[0] + 1] for a in full))


# -- inputs are never mutated ----------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_not_mutated(backend):
    rng = _rng(7)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    dy = rng.standard_normal((2, 4, 6, 6))
    dyp = rng.standard_normal((2, 3, 3, 3))
    arrays = [x, w, b, dy, dyp]
    copies = [a.copy() for a in arrays]
    cyconv.conv2d(x, w, b, padding=1, backend=backend)
    cyconv.conv2d_backward(dy, x, w, padding=1, backend=backend)
    _, idx = cyconv.max_pool2d(x, 2, return_indices=True, backend=backend)
    idx_copy = idx.copy()
    cyconv.max_pool2d_backward(dyp, x, 2, backend=backend)
    cyconv.max_pool2d_backward(dyp, x, 2, indices=idx, backend=backend)
    cyconv.avg_pool2d(x, 2, backend=backend)
    cyconv.avg_pool2d_backward(dyp, x, 2, backend=backend)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(idx, idx_copy)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_do_not_alias_inputs(backend):
    x = _rng(8).standard_normal((1, 2, 4, 4))
    y = cyconv.avg_pool2d(x, 1, backend=backend)
    np.testing.assert_array_equal(y, x)
    y[...] = 0
    assert np.any(x != 0)
    dy = np.ones((1, 2, 4, 4))
    dx = cyconv.max_pool2d_backward(dy, x, 1, backend=backend)
    dx[...] = 5
    np.testing.assert_array_equal(dy, 1)


# -- unusual array layouts ---------------------------------------------------------------

def _layouts(x):
    """Views/copies of ``x`` with the same values: (name, array)."""
    big = np.zeros((x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3]))
    big[:, :, ::2, ::2] = x
    readonly = x.copy()
    readonly.flags.writeable = False
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return [
        ("strided", big[:, :, ::2, ::2]),
        ("transposed", nhwc),
        ("readonly", readonly),
        ("fortran", np.asfortranarray(x)),
        ("big-endian", x.astype(">f8")),
        ("big-endian-fortran", np.asfortranarray(x.astype(">f8"))),
        ("list", x.tolist()),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_unusual_layouts_give_same_result(op, backend):
    x = _rng(9).standard_normal((2, 3, 6, 5))
    expected = OPERATIONS[op](x, backend)
    for name, variant in _layouts(x):
        got = OPERATIONS[op](variant, backend)
        for g in got:
            assert g.dtype in (np.float64, np.int64), name
            assert g.dtype.isnative, name
        _assert_same(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unusual_layouts_for_weights_and_gradients(backend):
    rng = _rng(10)
    x = rng.standard_normal((2, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    dy = rng.standard_normal((2, 3, 3, 3))
    y = cyconv.conv2d(x, w, b, backend=backend)
    grads = cyconv.conv2d_backward(dy, x, w, backend=backend)
    for (_, wv), (_, dyv) in zip(_layouts(w), _layouts(dy)):
        bv = b.astype(">f8")
        _assert_same((cyconv.conv2d(x, wv, bv, backend=backend),), (y,))
        _assert_same(cyconv.conv2d_backward(dyv, x, wv, backend=backend), grads)
    dyp = rng.standard_normal((2, 2, 2, 2))
    expected = cyconv.max_pool2d_backward(dyp, x, 2, rounding="floor", backend=backend)
    for _, dyv in _layouts(dyp):
        got = cyconv.max_pool2d_backward(dyv, x, 2, rounding="floor", backend=backend)
        np.testing.assert_array_equal(got, expected)


# -- dtypes --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_dtype_preserved(op, dtype, backend):
    x = _rng(11).standard_normal((2, 3, 6, 5)).astype(dtype)
    outputs = OPERATIONS[op](x, backend)
    for out in outputs:
        if out.dtype.kind == "i":
            assert out.dtype == np.int64
        else:
            assert out.dtype == dtype
    if dtype == np.float32:
        reference = OPERATIONS[op](x.astype(np.float64), backend)
        for out, ref in zip(outputs, reference):
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


# -- errors ----------------------------------------------------------------------------------

X = np.zeros((2, 4, 6, 6))
W = np.zeros((2, 4, 3, 3))


def _raises(exc, words, func, *args, **kwargs):
    with pytest.raises(exc) as info:
        func(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return info.value


@pytest.mark.parametrize("shape", [(4, 6, 6), (1, 2, 4, 6, 6), (6,)])
def test_wrong_ndim(shape):
    _raises(ValueError, ["x", "4-D"], cyconv.conv2d, np.zeros(shape), W, backend="numpy")
    _raises(ValueError, ["x"], cyconv.max_pool2d, np.zeros(shape), 2, backend="numpy")
    _raises(ValueError, ["x"], cyconv.avg_pool2d, np.zeros(shape), 2, backend="numpy")
    _raises(ValueError, ["w"], cyconv.conv2d, X, np.zeros(shape), backend="numpy")


def test_empty_input():
    _raises(ValueError, ["x", "empty"], cyconv.conv2d, np.zeros((0, 4, 6, 6)), W, backend="numpy")
    _raises(ValueError, ["x"], cyconv.max_pool2d, np.zeros((1, 0, 6, 6)), 2, backend="numpy")


def test_channel_mismatch():
    err = _raises(ValueError, ["C=4", "w.shape[1]"], cyconv.conv2d, X, np.zeros((2, 3, 3, 3)),
                  backend="numpy")
    assert "groups" in str(err)
    _raises(ValueError, ["C=4"], cyconv.conv2d, X, np.zeros((2, 4, 3, 3)), groups=2,
            backend="numpy")
    _raises(ValueError, ["C=4"], cyconv.conv2d_backward, np.zeros((2, 2, 4, 4)), X,
            np.zeros((2, 3, 3, 3)), backend="numpy")


def test_groups_errors():
    _raises(ValueError, ["groups=3", "C=4"], cyconv.conv2d, X, np.zeros((3, 1, 3, 3)), groups=3,
            backend="numpy")
    _raises(ValueError, ["groups=2", "output channels"], cyconv.conv2d, X,
            np.zeros((3, 2, 3, 3)), groups=2, backend="numpy")
    _raises(ValueError, ["groups"], cyconv.conv2d, X, W, groups=0, backend="numpy")
    _raises(TypeError, ["groups"], cyconv.conv2d, X, W, groups=1.0, backend="numpy")
    _raises(TypeError, ["groups"], cyconv.conv2d, X, W, groups=True, backend="numpy")


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.float16,
                                   np.complex128, np.complex64, object])
def test_bad_dtypes(dtype):
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    _raises(TypeError, ["x", "float32 or float64"], cyconv.conv2d, x, np.zeros((1, 1, 3, 3)),
            backend="numpy")
    _raises(TypeError, ["x"], cyconv.max_pool2d, x, 2, backend="numpy")
    _raises(TypeError, ["x"], cyconv.avg_pool2d, x, 2, backend="numpy")
    _raises(TypeError, ["w"], cyconv.conv2d, np.zeros((1, 1, 4, 4)),
            np.zeros((1, 1, 3, 3), dtype=dtype), backend="numpy")
    _raises(TypeError, ["dy"], cyconv.avg_pool2d_backward, np.zeros((1, 1, 2, 2), dtype=dtype),
            np.zeros((1, 1, 4, 4)), 2, backend="numpy")


def test_non_array_inputs():
    _raises(TypeError, ["x"], cyconv.conv2d, None, W, backend="numpy")
    _raises(TypeError, ["x"], cyconv.conv2d, "abc", W, backend="numpy")
    # nested lists of numbers are converted (ints to float64)
    y = cyconv.avg_pool2d([[[[1, 2], [3, 4]]]], 2, backend="numpy")
    assert y.dtype == np.float64 and y[0, 0, 0, 0] == 2.5


def test_mismatched_dtypes():
    x32 = np.zeros((1, 1, 4, 4), np.float32)
    w64 = np.zeros((1, 1, 3, 3))
    _raises(TypeError, ["w", "float64", "float32"], cyconv.conv2d, x32, w64, backend="numpy")
    _raises(TypeError, ["b"], cyconv.conv2d, x32, w64.astype(np.float32), np.zeros(1),
            backend="numpy")
    _raises(TypeError, ["dy"], cyconv.conv2d_backward, np.zeros((1, 1, 2, 2)), x32,
            w64.astype(np.float32), backend="numpy")
    _raises(TypeError, ["dy"], cyconv.max_pool2d_backward, np.zeros((1, 1, 2, 2)), x32, 2,
            backend="numpy")


def test_bias_shape():
    _raises(ValueError, ["b", "(2,)"], cyconv.conv2d, X, W, np.zeros(3), backend="numpy")
    _raises(ValueError, ["b"], cyconv.conv2d, X, W, np.zeros((2, 1)), backend="numpy")


def _catalogued(*names):
    """(argument, value, exception) for every catalogued bad value of these arguments."""
    return [(name, value, exc) for name in names for value, exc in INVALID_VALUES[name]]


@pytest.mark.parametrize("name, value, exc",
                         _catalogued("stride", "dilation", "padding", "rounding"))
def test_bad_conv_arguments(name, value, exc):
    _raises(exc, [name], cyconv.conv2d, X, W, backend="numpy", **{name: value})
    dy = np.zeros((2, 2, 4, 4))
    _raises(exc, [name], cyconv.conv2d_backward, dy, X, W, backend="numpy", **{name: value})


@pytest.mark.parametrize("name, value, exc",
                         _catalogued("stride", "kernel_size", "padding", "rounding"))
def test_bad_pool_arguments(name, value, exc):
    kwargs = {"kernel_size": 2, name: value}
    _raises(exc, [name], cyconv.max_pool2d, X, backend="numpy", **kwargs)
    _raises(exc, [name], cyconv.avg_pool2d, X, backend="numpy", **kwargs)
    dy = np.zeros((2, 4, 3, 3))
    _raises(exc, [name], cyconv.max_pool2d_backward, dy, X, backend="numpy", **kwargs)
    _raises(exc, [name], cyconv.avg_pool2d_backward, dy, X, backend="numpy", **kwargs)


def test_max_pool_dilation_errors():
    _raises(ValueError, ["dilation"], cyconv.max_pool2d, X, 2, dilation=0, backend="numpy")


@pytest.mark.parametrize("shape", [(2, 4, 3, 2), (2, 4, 3), (1, 4, 3, 3), (2, 3, 3, 3)])
def test_wrong_dy_shape(shape):
    dy = np.zeros(shape)
    _raises(ValueError, ["dy"], cyconv.max_pool2d_backward, dy, X, 2, backend="numpy")
    _raises(ValueError, ["dy"], cyconv.avg_pool2d_backward, dy, X, 2, backend="numpy")
    _raises(ValueError, ["dy"], cyconv.conv2d_backward, np.zeros(shape[:1] + (2,) + shape[2:]),
            X, W, backend="numpy")


def test_bad_indices():
    x = _rng(12).standard_normal((2, 4, 6, 6))
    dy = np.ones((2, 4, 3, 3))
    _, idx = cyconv.max_pool2d(x, 2, return_indices=True, backend="numpy")
    good = cyconv.max_pool2d_backward(dy, x, 2, indices=idx, backend="numpy")
    assert good.sum() == dy.sum()
    _raises(TypeError, ["indices"], cyconv.max_pool2d_backward, dy, x, 2,
            indices=idx.astype(np.float64), backend="numpy")
    _raises(TypeError, ["indices"], cyconv.max_pool2d_backward, dy, x, 2,
            indices=idx.tolist(), backend="numpy")
    _raises(ValueError, ["indices"], cyconv.max_pool2d_backward, dy, x, 2,
            indices=idx[:, :, :2], backend="numpy")
    too_big = idx.copy()
    too_big[0, 0, 0, 0] = 36
    _raises(ValueError, ["indices"], cyconv.max_pool2d_backward, dy, x, 2, indices=too_big,
            backend="numpy")
    negative = idx.copy()
    negative[1, 2, 0, 1] = -2
    _raises(ValueError, ["indices"], cyconv.max_pool2d_backward, dy, x, 2, indices=negative,
            backend="numpy")
    # int32 indices in range are accepted
    np.testing.assert_array_equal(
        cyconv.max_pool2d_backward(dy, x, 2, indices=idx.astype(np.int32), backend="numpy"), good)


@pytest.mark.parametrize("value, exc", INVALID_VALUES["divisor_override"])
def test_bad_divisor_override(value, exc):
    _raises(exc, ["divisor_override"], cyconv.avg_pool2d, X, 2, divisor_override=value,
            backend="numpy")
    _raises(exc, ["divisor_override"], cyconv.avg_pool2d_backward, np.zeros((2, 4, 3, 3)), X, 2,
            divisor_override=value, backend="numpy")
    _raises(exc, ["divisor_override"], cyconv.AvgPool2D, 2, divisor_override=value)


def test_bad_count_include_pad():
    _raises(TypeError, ["count_include_pad"], cyconv.avg_pool2d, X, 2, count_include_pad=1,
            backend="numpy")


def test_unknown_backend():
    _raises(cyconv.BackendError, ["nope", "numpy"], cyconv.conv2d, X, W, backend="nope")
    _raises(cyconv.BackendError, ["nope"], cyconv.max_pool2d, X, 2, backend="nope")
    _raises(TypeError, ["backend"], cyconv.conv2d, X, W, backend=3)


# -- misc behaviour --------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_return_indices_and_backward_agree(backend):
    x = _rng(13).standard_normal((2, 3, 7, 7))
    y = cyconv.max_pool2d(x, 3, stride=2, backend=backend)
    y2, idx = cyconv.max_pool2d(x, 3, stride=2, return_indices=True, backend=backend)
    np.testing.assert_array_equal(y, y2)
    planes = x.reshape(6, -1)
    np.testing.assert_array_equal(np.take_along_axis(planes, idx.reshape(6, -1), 1),
                                  y.reshape(6, -1))
    dy = _rng(14).standard_normal(y.shape)
    np.testing.assert_array_equal(
        cyconv.max_pool2d_backward(dy, x, 3, stride=2, backend=backend),
        cyconv.max_pool2d_backward(dy, x, 3, stride=2, indices=idx, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_with_numpy(backend):
    rng = _rng(15)
    x = rng.standard_normal((2, 4, 7, 6))
    for op in OPERATIONS.values():
        _assert_same(op(x, backend), op(x, "numpy"))

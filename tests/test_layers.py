"""Layer classes: analytic gradients against numeric central differences (float64),
plus the behaviour each layer documents (tie rule, train/test modes, dtypes).

The numeric helper is local on purpose (independent of ``cyconv.testing``).
"""

import numpy as np
import pytest

import cyconv

CONV_BACKENDS = cyconv.backends_for("Conv2D")
POOL_BACKENDS = cyconv.backends_for("MaxPool2D")
AVG_BACKENDS = cyconv.backends_for("AvgPool2D")
EPS = 1e-6
RTOL, ATOL = 1e-5, 1e-7


def numeric_grad(loss, a, eps=EPS):
    """Central differences of ``loss()`` with respect to ``a`` (perturbed in place)."""
    grad = np.zeros_like(a, dtype=np.float64)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        plus = loss()
        a[idx] = old - eps
        minus = loss()
        a[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(make_layer, x, *, seed=0, fresh_layer=False, train=True):
    """Compare backward() with numeric gradients of sum(forward(x) * R).

    ``fresh_layer``: build a new layer for every numeric evaluation (Dropout:
    the same seed gives the same mask).  Returns the analytic dx.
    """
    rng = np.random.default_rng(seed)
    layer = make_layer()
    y = layer.forward(x.copy(), train=train)
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r.copy())
    grads = {k: v.copy() for k, v in layer.grads.items()}
    assert dx.shape == x.shape
    assert set(grads) == set(layer.params)

    def loss():
        target = make_layer() if fresh_layer else layer
        return float(np.sum(target.forward(x, train=train) * r))

    x = x.copy()
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=RTOL, atol=ATOL)
    for name, param in layer.params.items():
        assert grads[name].shape == param.shape
        np.testing.assert_allclose(grads[name], numeric_grad(loss, param), rtol=RTOL, atol=ATOL,
                                   err_msg=name)
    return dx


def check_against_numpy(make, x, *, seed=0):
    """For a compiled backend: forward/backward equal the numpy layer's.

    (Numeric differences run on the numpy layer only: hundreds of tiny calls
    would mostly measure thread start-up on the compiled backend.)
    """
    rng = np.random.default_rng(seed)
    layer, reference = make(None), make("numpy")
    y, y_ref = layer.forward(x.copy()), reference.forward(x.copy())
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    r = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(r.copy()), reference.backward(r.copy()),
                               rtol=1e-12, atol=1e-12)
    assert set(layer.grads) == set(reference.grads)
    for name in layer.grads:
        np.testing.assert_allclose(layer.grads[name], reference.grads[name], rtol=1e-12,
                                   atol=1e-12, err_msg=name)


def check_backend(backend, make_for, x):
    """Numeric check on numpy; equality with numpy on any other backend."""
    if backend == "numpy":
        return check_gradients(lambda: make_for("numpy"), x)
    return check_against_numpy(lambda b: make_for(b or backend), x)


# -- Conv2D ----------------------------------------------------------------------------

CONV_CONFIGS = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1, rounding="floor"),
    dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=(2, 1), groups=1, rounding="floor"),
    dict(stride=1, padding=1, dilation=1, groups=2),
    dict(stride=1, padding="same", dilation=2, groups=4),
    dict(stride=3, padding=1, dilation=1, groups=2, rounding="ceil"),
]


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("config", CONV_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_conv2d_gradients(config, bias, backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((4, 4 // config["groups"], 3, 3))
    b = rng.standard_normal(4) if bias else None

    def make(be):
        return cyconv.Conv2D(W=w, b=b, backend=be, **config)

    layer = make(backend)
    assert layer.backend == backend
    assert set(layer.params) == ({"W", "b"} if bias else {"W"})
    check_backend(backend, make, x)


# -- pooling ---------------------------------------------------------------------------

def distinct_values(shape, seed=0):
    """Values one apart (no ties, far beyond the finite-difference step)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float64) - 20.0


POOL_CONFIGS = [
    dict(kernel_size=2, rounding="floor"),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=1, padding=(1, 1)),
    dict(kernel_size=2, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, rounding="ceil"),
]


@pytest.mark.parametrize("backend", POOL_BACKENDS)
@pytest.mark.parametrize("config", POOL_CONFIGS + [dict(kernel_size=2, stride=1, dilation=2)],
                         ids=str)
def test_max_pool_gradients(config, backend):
    x = distinct_values((2, 2, 5, 5))
    check_backend(backend, lambda be: cyconv.MaxPool2D(backend=be, **config), x)
    layer = cyconv.MaxPool2D(backend=backend, **config)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    # every output sends its whole gradient to one input
    assert dx.sum() == y.size
    assert np.count_nonzero(dx) <= y.size


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_max_pool_tie_rule(backend):
    """Ties: the first maximum in row-major window order gets the whole gradient."""
    layer = cyconv.MaxPool2D(2, stride=1, backend=backend)
    x = np.zeros((1, 1, 3, 3))
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])

    layer = cyconv.MaxPool2D(2, backend=backend)
    x = np.array([[[[1.0, 3.0, 7.0, 7.0], [3.0, 2.0, 7.0, 7.0],
                    [5.0, 0.0, 2.0, 2.0], [0.0, 5.0, 2.0, 1.0]]]])
    y = layer.forward(x)
    np.testing.assert_array_equal(y[0, 0], [[3, 7], [5, 2]])
    dx = layer.backward(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]))
    expected = np.zeros((4, 4))
    expected[0, 1], expected[0, 2], expected[2, 0], expected[2, 2] = 10, 20, 30, 40
    np.testing.assert_array_equal(dx[0, 0], expected)
    # the tie rule does not depend on the batch or channel
    big = np.concatenate([x, x * 0 + 1], axis=1)
    big = np.concatenate([big, big], axis=0)
    layer.forward(big)
    dxb = layer.backward(np.ones((2, 2, 2, 2)))
    for n in range(2):
        np.testing.assert_array_equal(dxb[n, 0] != 0, expected != 0)
        np.testing.assert_array_equal(dxb[n, 1], [[1, 0, 1, 0], [0, 0, 0, 0]] * 2)


@pytest.mark.parametrize("backend", POOL_BACKENDS)
def test_max_pool_nan_propagates(backend):
    layer = cyconv.MaxPool2D(2, backend=backend)
    x = np.array([[[[1.0, 2.0], [np.nan, 0.0]]]])
    y = layer.forward(x)
    assert np.isnan(y[0, 0, 0, 0])
    dx = layer.backward(np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(dx[0, 0], [[0, 0], [1, 0]])


@pytest.mark.parametrize("backend", AVG_BACKENDS)
@pytest.mark.parametrize("config", POOL_CONFIGS + [
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=1, padding=1, divisor_override=4),
    dict(kernel_size=2, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
], ids=str)
def test_avg_pool_gradients(config, backend):
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5))
    check_backend(backend, lambda be: cyconv.AvgPool2D(backend=be, **config), x)


# -- dense and elementwise layers --------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_affine_gradients(bias):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 2, 3))
    w = rng.standard_normal((12, 5))
    b = rng.standard_normal(5) if bias else None
    dx = check_gradients(lambda: cyconv.Affine(W=w, b=b), x)
    assert dx.shape == (3, 2, 2, 3)
    check_gradients(lambda: cyconv.Affine(W=w, b=b), rng.standard_normal((4, 12)))


def test_affine_built_lazily():
    layer = cyconv.Affine(6, rng=0)
    assert layer.build((3, 4)) == (6,)
    assert layer.params["W"].shape == (12, 6) and layer.params["b"].shape == (6,)
    np.testing.assert_array_equal(layer.params["b"], 0)
    check_gradients(lambda: layer, np.random.default_rng(4).standard_normal((2, 3, 4)))
    with pytest.raises(ValueError, match="features"):
        layer.forward(np.zeros((2, 5)))


def test_relu_gradients():
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 2.0, size=(3, 2, 3, 3)) * rng.choice([-1.0, 1.0], size=(3, 2, 3, 3))
    dx = check_gradients(cyconv.ReLU, x)
    np.testing.assert_array_equal(dx == 0, x < 0)
    layer = cyconv.ReLU()
    y = layer.forward(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(y, [0, 0, 2])
    np.testing.assert_array_equal(layer.backward(np.ones(3)), [0, 0, 1])  # gradient 0 at 0


def test_sigmoid_gradients_and_stability():
    x = np.random.default_rng(6).standard_normal((4, 7)) * 3
    check_gradients(cyconv.Sigmoid, x)
    layer = cyconv.Sigmoid()
    with np.errstate(over="raise"):
        y = layer.forward(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(layer.backward(np.ones(3)), [0.0, 0.25, 0.0])


@pytest.mark.parametrize("targets", ["labels", "onehot", "soft"])
def test_softmax_with_loss_gradients(targets):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    if targets == "labels":
        t = labels
    elif targets == "onehot":
        t = np.eye(4)[labels]
    else:
        t = rng.dirichlet(np.ones(4), size=5)
    layer = cyconv.SoftmaxWithLoss()
    loss = layer.forward(x, t)
    assert isinstance(loss, float) and loss > 0
    dx = layer.backward()
    x2 = x.copy()
    numeric = numeric_grad(lambda: cyconv.SoftmaxWithLoss().forward(x2, t), x2)
    np.testing.assert_allclose(dx, numeric, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.backward(2.0), 2 * dx)
    # the loss itself: mean cross-entropy of the softmax
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    onehot = np.eye(4)[labels] if targets != "soft" else t
    assert loss == pytest.approx(-(onehot * np.log(p)).sum() / 5, rel=1e-12)


def test_softmax_with_loss_labels_equal_onehot_and_stable():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 3))
    t = rng.integers(0, 3, 6)
    a, b = cyconv.SoftmaxWithLoss(), cyconv.SoftmaxWithLoss()
    assert a.forward(x, t) == pytest.approx(b.forward(x, np.eye(3)[t]), rel=1e-14)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-14)
    big = cyconv.SoftmaxWithLoss()
    assert np.isfinite(big.forward(x * 1e4, t))
    assert np.all(np.isfinite(big.backward()))
    with pytest.raises(ValueError, match="labels"):
        cyconv.SoftmaxWithLoss().forward(x, np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(TypeError, match="integer"):
        cyconv.SoftmaxWithLoss().forward(x, t.astype(float))


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)])
def test_batchnorm_gradients(shape):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape) * 2 + 1
    gamma = rng.uniform(0.5, 1.5, shape[1])
    beta = rng.standard_normal(shape[1])

    def make():
        return cyconv.BatchNorm(gamma=gamma, beta=beta)

    check_gradients(make, x)


@pytest.mark.parametrize("shape", [(50, 3), (8, 3, 4, 5)])
def test_batchnorm_statistics(shape):
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape) * 3 + 2
    layer = cyconv.BatchNorm(momentum=0.9)
    y = layer.forward(x, train=True)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=axes), 1, rtol=1e-4)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(axis=axes), rtol=1e-12)
    # inference uses the running statistics
    expected = (x - layer.running_mean.reshape((1, -1) + (1,) * (len(shape) - 2))) / np.sqrt(
        layer.running_var.reshape((1, -1) + (1,) * (len(shape) - 2)) + layer.eps)
    np.testing.assert_allclose(layer.forward(x, train=False), expected, rtol=1e-12)


def test_dropout_gradients_with_fixed_mask():
    x = np.random.default_rng(11).standard_normal((4, 3, 2, 2))
    dx = check_gradients(lambda: cyconv.Dropout(0.4, rng=123), x, fresh_layer=True)
    layer = cyconv.Dropout(0.4, rng=123)
    y = layer.forward(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-15)
    np.testing.assert_array_equal(dx != 0, kept)
    # the same seed gives the same mask, another seed another one
    np.testing.assert_array_equal(cyconv.Dropout(0.4, rng=123).forward(x), y)
    assert np.any(cyconv.Dropout(0.4, rng=124).forward(x) != y)


def test_dropout_test_mode_and_ratio():
    x = np.ones((200, 50))
    layer = cyconv.Dropout(0.3, rng=0)
    np.testing.assert_array_equal(layer.forward(x, train=False), x)
    np.testing.assert_array_equal(layer.backward(x * 2), x * 2)
    y = layer.forward(x, train=True)
    assert abs((y == 0).mean() - 0.3) < 0.02
    assert y.mean() == pytest.approx(1.0, abs=0.05)  # inverted dropout keeps the mean
    np.testing.assert_array_equal(cyconv.Dropout(0.0).forward(x), x)
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(ValueError, match="ratio"):
            cyconv.Dropout(bad)


def test_flatten_gradients():
    x = np.random.default_rng(12).standard_normal((3, 2, 3, 4))
    check_gradients(cyconv.Flatten, x)
    layer = cyconv.Flatten()
    y = layer.forward(x)
    assert y.shape == (3, 24)
    np.testing.assert_array_equal(y[1], x[1].ravel())
    np.testing.assert_array_equal(layer.backward(y), x)


# -- dtypes, inputs and construction ------------------------------------------------------

def _all_layers(dtype, backend="numpy"):
    rng = np.random.default_rng(13)
    return [
        (cyconv.Conv2D(W=rng.standard_normal((3, 2, 3, 3)).astype(dtype),
                       b=np.zeros(3, dtype), padding=1, backend=backend), (2, 2, 4, 4)),
        (cyconv.MaxPool2D(2, backend=backend), (2, 2, 4, 4)),
        (cyconv.AvgPool2D(2, backend=backend), (2, 2, 4, 4)),
        (cyconv.Affine(W=rng.standard_normal((32, 3)).astype(dtype), b=np.zeros(3, dtype)),
         (2, 2, 4, 4)),
        (cyconv.ReLU(), (2, 2, 4, 4)),
        (cyconv.Sigmoid(), (2, 2, 4, 4)),
        (cyconv.Dropout(0.5, rng=0), (2, 2, 4, 4)),
        (cyconv.BatchNorm(gamma=np.ones(2, dtype), beta=np.zeros(2, dtype)), (2, 2, 4, 4)),
        (cyconv.Flatten(), (2, 2, 4, 4)),
    ]


@pytest.mark.parametrize("backend", CONV_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_preserve_dtype_and_inputs(dtype, backend):
    rng = np.random.default_rng(14)
    for layer, shape in _all_layers(dtype, backend):
        name = type(layer).__name__
        x = rng.standard_normal(shape).astype(dtype)
        x_copy = x.copy()
        y = layer.forward(x)
        assert y.dtype == dtype, name
        dy = rng.standard_normal(y.shape).astype(dtype)
        dy_copy = dy.copy()
        dx = layer.backward(dy)
        assert dx.dtype == dtype and dx.shape == shape, name
        for g in layer.grads.values():
            assert g.dtype == dtype, name
        np.testing.assert_array_equal(x, x_copy, err_msg=name)
        np.testing.assert_array_equal(dy, dy_copy, err_msg=name)


def test_softmax_dtype():
    x = np.random.default_rng(15).standard_normal((3, 4)).astype(np.float32)
    layer = cyconv.SoftmaxWithLoss()
    layer.forward(x, np.array([0, 1, 2]))
    assert layer.backward().dtype == np.float32


@pytest.mark.parametrize("backend", CONV_BACKENDS)
def test_layers_accept_unusual_layouts(backend):
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 2, 5, 5))
    variants = [np.asfortranarray(x), x.astype(">f8"), x.copy()]
    variants[2].flags.writeable = False
    for make in (lambda: cyconv.Conv2D(W=np.ones((2, 2, 3, 3)), backend=backend),
                 lambda: cyconv.MaxPool2D(2, stride=1, backend=backend),
                 lambda: cyconv.AvgPool2D(3, stride=2, backend=backend)):
        expected = make().forward(x)
        for v in variants:
            np.testing.assert_allclose(make().forward(v), expected, rtol=1e-13)


def test_conv_layer_holds_parameters_by_reference():
    w = np.ones((1, 1, 2, 2))
    layer = cyconv.Conv2D(W=w, backend="numpy")
    x = np.ones((1, 1, 3, 3))
    np.testing.assert_array_equal(layer.forward(x), 4)
    w *= 2  # an in-place optimizer step
    np.testing.assert_array_equal(layer.forward(x), 8)


@pytest.mark.parametrize("backend", CONV_BACKENDS)
def test_backward_params_matches_backward(backend):
    """backward_params fills the same grads as backward and returns no dx
    (Conv2D skips the input gradient; other layers run their backward)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 7, 7))
    for make in (lambda: cyconv.Conv2D(4, 3, stride=2, rounding="floor", rng=0, backend=backend),
                 lambda: cyconv.Affine(5, rng=0)):
        full, params_only = make(), make()
        for layer in (full, params_only):
            layer.build(x.shape[1:])
        params_only.params = {k: v.copy() for k, v in full.params.items()}
        dy = rng.standard_normal(full.forward(x).shape)
        params_only.forward(x)
        assert full.backward(dy).shape == x.shape
        assert params_only.backward_params(dy) is None
        assert set(params_only.grads) == set(full.params)
        for name in full.params:
            np.testing.assert_array_equal(params_only.grads[name], full.grads[name])


def test_conv_layer_build():
    layer = cyconv.Conv2D(6, 3, padding=1, groups=2, rng=0, backend="numpy")
    assert layer.build((4, 8, 8)) == (6, 8, 8)
    assert layer.params["W"].shape == (6, 2, 3, 3)
    assert layer.params["b"].shape == (6,)
    std = layer.params["W"].std()
    assert 0.5 * np.sqrt(2 / 18) < std < 1.5 * np.sqrt(2 / 18)  # He init
    with pytest.raises(ValueError, match="groups"):
        cyconv.Conv2D(6, 3, groups=4, backend="numpy").build((4, 8, 8))
    with pytest.raises(RuntimeError, match="build"):
        cyconv.Conv2D(6, 3, backend="numpy").forward(np.ones((1, 4, 8, 8)))
    with pytest.raises(TypeError, match="out_channels"):
        cyconv.Conv2D(backend="numpy")


@pytest.mark.parametrize("name", ["Conv2D", "MaxPool2D", "AvgPool2D"])
def test_layer_front_classes_pick_backend(name):
    args = dict(Conv2D=dict(W=np.ones((1, 1, 1, 1))), MaxPool2D=dict(kernel_size=2),
                AvgPool2D=dict(kernel_size=2))[name]
    front = getattr(cyconv, name)
    for backend in cyconv.backends_for(name):
        layer = front(backend=backend, **args)
        assert isinstance(layer, front)
        assert layer.backend == backend
        assert layer.kernels is not None
    with pytest.raises(cyconv.BackendError, match="nope"):
        front(backend="nope", **args)


def test_backward_checks_dout_shape():
    layer = cyconv.Conv2D(W=np.ones((2, 1, 3, 3)), backend="numpy")
    layer.forward(np.ones((1, 1, 5, 5)))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.ones((1, 2, 2, 2)))
    pool = cyconv.MaxPool2D(2, backend="numpy")
    pool.forward(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="dy"):
        pool.backward(np.ones((1, 1, 3, 3)))
    avg = cyconv.AvgPool2D(2, backend="numpy")
    avg.forward(np.ones((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="dout"):
        avg.backward(np.ones((1, 1, 3, 3)))
    relu = cyconv.ReLU()
    relu.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="dout"):
        relu.backward(np.ones((3, 2)))

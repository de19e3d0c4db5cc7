"""cyconv.compat: the textbook's common/layers.py API on cyconv.

The network below is written in the textbook's idiom (an OrderedDict of
layers, ``params['W1']``..., textbook-style optimizers updating ``params`` in
place) and checked against cyconv's NumPy reference layers.
"""

from collections import OrderedDict

import numpy as np
import pytest

import cyconv
from cyconv import optim
from cyconv.compat import (
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    cross_entropy_error,
    softmax,
)
from cyconv.nn import Sequential


class BookConvNet:
    """conv - relu - pool - affine - relu - affine - softmax, as in the textbook's ch. 7."""

    def __init__(self, input_dim=(1, 10, 10), conv_param=None, hidden_size=20, output_size=5,
                 weight_init_std=0.1, seed=0):
        conv_param = conv_param or {"filter_num": 6, "filter_size": 3, "pad": 1, "stride": 1}
        filter_num = conv_param["filter_num"]
        filter_size = conv_param["filter_size"]
        filter_pad = conv_param["pad"]
        filter_stride = conv_param["stride"]
        input_size = input_dim[1]
        conv_output_size = (input_size - filter_size + 2 * filter_pad) // filter_stride + 1
        pool_output_size = int(filter_num * (conv_output_size / 2) * (conv_output_size / 2))

        rng = np.random.default_rng(seed)
        self.params = {}
        self.params["W1"] = weight_init_std * rng.standard_normal(
            (filter_num, input_dim[0], filter_size, filter_size))
        self.params["b1"] = np.zeros(filter_num)
        self.params["W2"] = weight_init_std * rng.standard_normal((pool_output_size, hidden_size))
        self.params["b2"] = np.zeros(hidden_size)
        self.params["W3"] = weight_init_std * rng.standard_normal((hidden_size, output_size))
        self.params["b3"] = np.zeros(output_size)

        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"],
                                           conv_param["stride"], conv_param["pad"])
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self.last_layer.forward(y, t)

    def accuracy(self, x, t, batch_size=100):
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(int(np.ceil(x.shape[0] / batch_size))):
            tx = x[i * batch_size:(i + 1) * batch_size]
            tt = t[i * batch_size:(i + 1) * batch_size]
            y = np.argmax(self.predict(tx), axis=1)
            acc += np.sum(y == tt)
        return acc / x.shape[0]

    def gradient(self, x, t):
        self.loss(x, t)
        dout = 1
        dout = self.last_layer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)
        grads = {}
        grads["W1"], grads["b1"] = self.layers["Conv1"].dW, self.layers["Conv1"].db
        grads["W2"], grads["b2"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W3"], grads["b3"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads


class BookSGD:
    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params:
            params[key] -= self.lr * grads[key]


class BookAdam:
    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m, self.v = {}, {}
            for key, val in params.items():
                self.m[key] = np.zeros_like(val)
                self.v[key] = np.zeros_like(val)
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


KEYS = {"W1": "0.W", "b1": "0.b", "W2": "3.W", "b2": "3.b", "W3": "5.W", "b3": "5.b"}


def reference_of(book):
    """The same network with cyconv's NumPy reference layers and copies of the weights."""
    p = {k: v.copy() for k, v in book.params.items()}
    return Sequential([cyconv.Conv2D(W=p["W1"], b=p["b1"], padding=1, backend="numpy"),
                       cyconv.ReLU(), cyconv.MaxPool2D(2, backend="numpy"),
                       cyconv.Affine(W=p["W2"], b=p["b2"]), cyconv.ReLU(),
                       cyconv.Affine(W=p["W3"], b=p["b3"])], input_shape=(1, 10, 10))


def data(n=12, seed=3):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 10, 10)), rng.integers(0, 5, n)


def assert_same(book, ref, rtol=1e-9):
    for key, ref_key in KEYS.items():
        np.testing.assert_allclose(book.params[key], ref.params[ref_key], rtol=rtol,
                                   atol=1e-12, err_msg=key)


def test_book_network_matches_numpy_reference():
    book = BookConvNet()
    ref = reference_of(book)
    x, t = data()
    assert book.loss(x, t) == pytest.approx(ref.loss(x, t), rel=1e-12)
    np.testing.assert_allclose(book.predict(x), ref.predict(x), rtol=1e-10)
    grads = book.gradient(x, t)
    ref_grads = ref.gradient(x, t)
    for key, ref_key in KEYS.items():
        np.testing.assert_allclose(grads[key], ref_grads[ref_key], rtol=1e-9, atol=1e-14,
                                   err_msg=key)
    assert book.accuracy(x, t, batch_size=5) == pytest.approx(ref.accuracy(x, t))


@pytest.mark.parametrize("book_opt, ref_opt", [
    (BookSGD(lr=0.1), optim.SGD(lr=0.1)),
    (BookAdam(lr=0.01), optim.Adam(lr=0.01)),
])
def test_optimizer_steps_match(book_opt, ref_opt):
    book = BookConvNet(seed=1)
    ref = reference_of(book)
    arrays = dict(book.params)
    for step in range(4):
        x, t = data(seed=10 + step)
        book_opt.update(book.params, book.gradient(x, t))
        ref_opt.update(ref.params, ref.gradient(x, t))
        assert_same(book, ref, rtol=1e-8)
    # in place: the layers and the params dict still share the very same arrays
    for key, array in arrays.items():
        assert book.params[key] is array
    assert book.layers["Conv1"].W is book.params["W1"]
    assert book.layers["Affine2"].b is book.params["b3"]
    x, t = data(seed=99)
    assert book.loss(x, t) == pytest.approx(ref.loss(x, t), rel=1e-8)


def test_layers_hold_references_and_follow_reassignment():
    W = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    b = np.zeros(2)
    conv = Convolution(W, b, pad=1)
    assert conv.W is W and conv.b is b
    x = np.random.default_rng(1).random((1, 1, 4, 4))
    y0 = conv.forward(x)
    W *= 2  # in-place update is seen
    np.testing.assert_allclose(conv.forward(x), 2 * y0)
    conv.W = np.zeros_like(W)  # rebinding (the book's load_params does this) is seen too
    conv.b = np.ones(2)
    np.testing.assert_allclose(conv.forward(x), np.ones_like(y0))
    affine = Affine(np.ones((16, 3)), np.zeros(3))
    out = affine.forward(np.ones((2, 1, 4, 4)))
    assert out.shape == (2, 3) and affine.original_x_shape == (2, 1, 4, 4)
    assert affine.x.shape == (2, 16)
    dx = affine.backward(np.ones((2, 3)))
    assert dx.shape == (2, 1, 4, 4) and affine.dW.shape == (16, 3) and affine.db.shape == (3,)


def test_convolution_on_compiled_default_backend_and_promotion():
    W = np.random.default_rng(0).standard_normal((3, 2, 3, 3))
    b = np.arange(3.0)
    conv = Convolution(W, b, stride=1, pad=0)
    assert conv._layer.backend == cyconv.backends_for("Conv2D")[0]
    x32 = np.random.default_rng(1).random((2, 2, 5, 5)).astype(np.float32)
    y = conv.forward(x32)
    assert y.dtype == np.float64  # float32 images with float64 weights promote like NumPy
    expected = cyconv.conv2d(x32.astype(np.float64), W, b, backend="numpy")
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    dx = conv.backward(np.ones_like(y))
    assert dx.shape == x32.shape and conv.dW.shape == W.shape and conv.dW.dtype == np.float64
    assert conv.db.shape == (3,)


def test_convolution_and_pooling_floor_sizes():
    W = np.ones((1, 1, 2, 2))
    conv = Convolution(W, np.zeros(1), stride=2)
    assert conv.forward(np.ones((1, 1, 7, 7))).shape == (1, 1, 3, 3)  # 1 + (7-2)//2
    pool = Pooling(2, 2, stride=2)
    x = np.random.default_rng(0).random((2, 3, 5, 5))
    y = pool.forward(x)
    assert y.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(y[..., 0, 0], x[..., :2, :2].max(axis=(2, 3)))
    dx = pool.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.sum() == pytest.approx(y.size)
    assert pool.arg_max is not None and pool.x is x


def test_relu_sigmoid():
    relu = Relu()
    x = np.array([[-1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(relu.forward(x), [[0, 0, 2]])
    np.testing.assert_array_equal(relu.mask, [[True, True, False]])
    np.testing.assert_array_equal(relu.backward(np.ones((1, 3))), [[0, 0, 1]])
    assert x[0, 0] == -1.0  # input not modified
    sig = Sigmoid()
    out = sig.forward(np.array([0.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(out, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(sig.backward(np.ones(3)), out * (1 - out))


def test_softmax_with_loss_attributes():
    layer = SoftmaxWithLoss()
    x = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    t = np.array([2, 0], dtype=np.uint8)
    loss = layer.forward(x, t)
    y = softmax(x)
    np.testing.assert_allclose(layer.y, y)
    assert layer.t is t and layer.loss == loss
    assert loss == pytest.approx(cross_entropy_error(y, t), abs=1e-6)
    dx = layer.backward()
    expected = y.copy()
    expected[[0, 1], [2, 0]] -= 1
    np.testing.assert_allclose(dx, expected / 2)
    onehot = np.eye(3)[[2, 0]]
    assert layer.forward(x, onehot) == pytest.approx(loss)
    np.testing.assert_allclose(layer.backward(dout=1), expected / 2)


def test_dropout_is_the_books_non_inverted_dropout():
    x = np.random.default_rng(0).random((4, 6))
    layer = Dropout(dropout_ratio=0.3)
    np.random.seed(5)
    out = layer.forward(x, train_flg=True)
    np.random.seed(5)
    mask = np.random.rand(*x.shape) > 0.3
    np.testing.assert_array_equal(layer.mask, mask)
    np.testing.assert_allclose(out, x * mask)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), mask.astype(float))
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x * 0.7)
    np.testing.assert_allclose(layer.forward(x, False), x * 0.7)


def book_bn_forward(x, gamma, beta):
    flat = x.reshape(x.shape[0], -1)
    mu = flat.mean(axis=0)
    var = ((flat - mu) ** 2).mean(axis=0)
    return (gamma * (flat - mu) / np.sqrt(var + 10e-7) + beta).reshape(x.shape), mu, var


def test_batch_normalization_flattens_like_the_book():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3, 3))
    gamma = rng.random(18) + 0.5
    beta = rng.standard_normal(18)
    bn = BatchNormalization(gamma, beta, momentum=0.9)
    assert bn.gamma is gamma and bn.beta is beta
    out = bn.forward(x)
    expected, mu, var = book_bn_forward(x, gamma, beta)
    np.testing.assert_allclose(out, expected)
    assert bn.running_mean.shape == (18,)  # per feature of C*H*W, as in the book
    np.testing.assert_allclose(bn.running_mean, 0.1 * mu)
    np.testing.assert_allclose(bn.running_var, 0.1 * var)  # initialised to zeros
    test_out = bn.forward(x, train_flg=False)
    np.testing.assert_allclose(test_out, (gamma * (x.reshape(5, -1) - bn.running_mean)
                                          / np.sqrt(bn.running_var + 10e-7) + beta).reshape(x.shape))
    # backward against finite differences of sum(out * w)
    w = rng.standard_normal(x.shape)
    bn.forward(x)
    dx = bn.backward(w)
    assert dx.shape == x.shape and bn.dgamma.shape == (18,) and bn.dbeta.shape == (18,)
    num = np.zeros_like(x)
    for idx in [(0, 0, 0, 0), (1, 1, 2, 1), (4, 0, 1, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += 1e-6
        xm[idx] -= 1e-6
        fp = (book_bn_forward(xp, gamma, beta)[0] * w).sum()
        fm = (book_bn_forward(xm, gamma, beta)[0] * w).sum()
        num[idx] = (fp - fm) / 2e-6
        assert dx[idx] == pytest.approx(num[idx], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(bn.dbeta, w.reshape(5, -1).sum(axis=0))


def test_trainer_runs_the_book_network():
    from cyconv.training import Trainer

    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, 150)
    x = 0.2 * rng.random((150, 1, 10, 10))
    for i, c in enumerate(t):
        x[i, 0, 2 * c:2 * c + 2, :] += 1.0
    book = BookConvNet(seed=0)
    history = Trainer(book, x[:120], t[:120], x[120:], t[120:], epochs=3, batch_size=20,
                      optimizer="adam", optimizer_params={"lr": 0.01}, seed=0,
                      progress=False).train()
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_acc[-1] >= 0.8


def test_compat_convolution_without_bias():
    conv = Convolution(np.ones((2, 1, 3, 3)), None)
    y = conv.forward(np.ones((1, 1, 4, 4)))
    np.testing.assert_allclose(y, 9.0)
    conv.backward(np.ones_like(y))
    assert conv.db is None and conv.dW.shape == (2, 1, 3, 3)

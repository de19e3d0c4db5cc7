"""Drop-in replacement for the textbook's ``common/layers.py``.

*Deep Learning from Scratch* (ch. 5-8) builds its networks from the classes
below; ``from cyconv.compat import *`` in place of ``from common.layers
import *`` runs the same code, with convolution and pooling on cyconv's
compiled backend (whichever backend the registry prefers: ``cython`` when
built, else the NumPy reference).

What is kept exactly as in the book:

* constructor signatures, ``forward``/``backward`` signatures and the public
  attributes (``W``, ``b``, ``dW``, ``db``, ``x``, ``original_x_shape``,
  ``mask``, ``out``, ``loss``, ``y``, ``t``, ``running_mean``, ...);
* layers hold **references** to the arrays they are given (``conv.W is W``),
  so a network's ``params`` dict and its layers share arrays and an optimizer
  updating ``params`` in place updates the layers; reassigning ``layer.W``
  (as the book's ``load_params`` does) is honoured too;
* ``Convolution``/``Pooling`` floor non-integer output sizes
  (``rounding="floor"``);
* ``Dropout`` is the book's non-inverted dropout (train: ``x * mask``; test:
  ``x * (1 - ratio)``), with masks from ``np.random.rand`` (so
  ``np.random.seed`` reproduces them);
* ``BatchNormalization`` is the book's: 4-D input is flattened to
  ``(N, C*H*W)`` (statistics per feature, not per channel), ``eps = 10e-7``,
  running variance initialised to zeros.

Differences (documented, harmless for the book's code):

* inputs may be float32 with float64 weights: the result is promoted as NumPy
  does;
* ``SoftmaxWithLoss`` computes the loss with a numerically stable
  log-softmax (the book adds ``1e-7`` inside the log): equal to ~1e-7;
* ``Pooling.arg_max`` holds cyconv's indices (flat input offsets), not the
  book's per-window argmax; ``Convolution.col``/``col_W`` are not kept;
* ``Pooling`` with ``pad > 0`` pads with ``-inf`` and counts the padding in
  the output size (the book pads with zeros and ignores the padding in the
  output size; the book never uses ``pad > 0`` for pooling).
"""

from __future__ import annotations

import numpy as np

from ._blas import matmul
from .layers import Conv2D, MaxPool2D
from .layers import SoftmaxWithLoss as _SoftmaxWithLoss

__all__ = [
    "Affine",
    "BatchNormalization",
    "Convolution",
    "Dropout",
    "Pooling",
    "Relu",
    "Sigmoid",
    "SoftmaxWithLoss",
    "cross_entropy_error",
    "softmax",
]


def softmax(x):
    """Row-wise softmax of (N, K) scores (or of a 1-D vector), numerically stable."""
    x = np.asarray(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """The book's cross-entropy of probabilities ``y`` and labels/one-hot ``t``."""
    y = np.asarray(y)
    t = np.asarray(t)
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = (x <= 0)
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout = dout.copy()
        dout[self.mask] = 0
        return dout


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        e = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.result_type(x, 1.0),
                                                                 copy=False)
        self.out = out
        return out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Affine:
    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        return matmul(self.x, self.W) + self.b

    def backward(self, dout):
        dx = matmul(dout, self.W.T)
        self.dW = matmul(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    def __init__(self):
        self.loss = None
        self.y = None  # softmax output
        self.t = None  # labels (int) or one-hot
        self._layer = _SoftmaxWithLoss()

    def forward(self, x, t):
        self.t = t
        t_arr = np.asarray(t)
        if t_arr.ndim == 1 and t_arr.dtype.kind not in "iu":
            t_arr = t_arr.astype(np.int64)
        self.loss = self._layer.forward(x, t_arr)
        self.y = self._layer.probabilities
        return self.loss

    def backward(self, dout=1):
        return self._layer.backward(dout)


class Dropout:
    """The book's (non-inverted) dropout: http://arxiv.org/abs/1207.0580."""

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        return dout * self.mask


class BatchNormalization:
    """The book's batch normalisation (http://arxiv.org/abs/1502.03167)."""

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None  # 4-D for conv layers, 2-D for affine layers
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        if x.ndim != 2:
            x = x.reshape(x.shape[0], -1)
        out = self._forward(x, train_flg)
        return out.reshape(*self.input_shape)

    def _forward(self, x, train_flg):
        if self.running_mean is None:
            _, d = x.shape
            self.running_mean = np.zeros(d)
            self.running_var = np.zeros(d)
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc ** 2, axis=0)
            std = np.sqrt(var + 10e-7)
            xn = xc / std
            self.batch_size = x.shape[0]
            self.xc = xc
            self.xn = xn
            self.std = std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xc = x - self.running_mean
            xn = xc / np.sqrt(self.running_var + 10e-7)
        return self.gamma * xn + self.beta

    def backward(self, dout):
        if dout.ndim != 2:
            dout = dout.reshape(dout.shape[0], -1)
        dx = self._backward(dout)
        return dx.reshape(*self.input_shape)

    def _backward(self, dout):
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        self.dgamma = dgamma
        self.dbeta = dbeta
        return dx


def _as_float(a):
    a = np.asarray(a)
    return a if a.dtype.kind == "f" and a.dtype.itemsize in (4, 8) else a.astype(np.float64)


class Convolution:
    """The book's ``Convolution(W, b, stride=1, pad=0)`` on cyconv's Conv2D.

    ``backend`` (keyword only, an extension) picks the cyconv backend;
    default: the registry's preference (the compiled one when built).
    """

    def __init__(self, W, b, stride=1, pad=0, *, backend=None):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.backend = backend
        self.x = None
        self.col = None
        self.col_W = None
        self.dW = None
        self.db = None
        self._dtype = None
        self._layer = Conv2D(W=_as_float(W), b=None if b is None else _as_float(b),
                             stride=stride, padding=pad, rounding="floor", backend=backend)

    def _sync(self, dtype):
        # The book's code may rebind self.W / self.b (e.g. in load_params): follow them.
        w = np.asarray(self.W)
        if w.dtype != dtype or not w.flags.c_contiguous:
            w = np.ascontiguousarray(w, dtype=dtype)
        self._layer.params["W"] = w
        if self.b is None:
            self._layer.params.pop("b", None)
            return
        b = np.asarray(self.b)
        if b.dtype != dtype or not b.flags.c_contiguous:
            b = np.ascontiguousarray(b, dtype=dtype)
        self._layer.params["b"] = b.reshape(-1)

    def forward(self, x):
        self.x = x
        x = _as_float(x)
        dtype = np.result_type(x.dtype, np.asarray(self.W).dtype,
                               *([] if self.b is None else [np.asarray(self.b).dtype]))
        self._sync(dtype)
        self._dtype = dtype  # the gradient is computed in the forward's dtype
        return self._layer.forward(x.astype(dtype, copy=False))

    def backward(self, dout):
        # before any forward the layer itself raises ForwardNotCalledError
        dx = self._layer.backward(np.asarray(dout).astype(self._dtype, copy=False))
        W = np.asarray(self.W)
        self.dW = self._layer.grads["W"].astype(W.dtype, copy=False).reshape(W.shape)
        if self.b is None:
            self.db = None
        else:
            self.db = self._layer.grads["b"].astype(np.asarray(self.b).dtype,
                                                   copy=False).reshape(np.shape(self.b))
        return dx


class Pooling:
    """The book's max ``Pooling(pool_h, pool_w, stride=2, pad=0)`` on cyconv's MaxPool2D."""

    def __init__(self, pool_h, pool_w, stride=2, pad=0, *, backend=None):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self.arg_max = None
        self._dtype = None
        self._layer = MaxPool2D((pool_h, pool_w), stride, pad, rounding="floor",
                                backend=backend)

    def forward(self, x):
        self.x = x
        out = self._layer.forward(_as_float(x))
        self.arg_max = self._layer.indices
        self._dtype = out.dtype
        return out

    def backward(self, dout):
        # before any forward the layer itself raises ForwardNotCalledError
        return self._layer.backward(np.asarray(dout).astype(self._dtype, copy=False))

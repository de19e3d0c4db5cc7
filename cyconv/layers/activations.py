"""Element-wise activations."""

from __future__ import annotations

import numpy as np

from .._threads import resolve_num_threads
from .._validation import as_float_array
from ._base import Layer

__all__ = ["ReLU", "Sigmoid"]


class ReLU(Layer):
    """``max(x, 0)``; the gradient at 0 is 0."""

    name = "ReLU"
    kernels_needed = ("relu_forward", "relu_backward")
    shape_preserving = True

    def __init__(self, *, backend=None):
        super().__init__(backend=backend)

    def forward(self, x, train=True):
        x = as_float_array(x, "x")
        y, self._positive = self.kernels.relu_forward(x, resolve_num_threads(None))
        return y

    def backward(self, dout):
        positive = self._saved("_positive")
        dout = self._check_dout(dout, positive.shape)
        return self.kernels.relu_backward(dout, positive, resolve_num_threads(None))


class Sigmoid(Layer):
    """Logistic function, computed without overflow for large ``|x|``."""

    name = "Sigmoid"
    shape_preserving = True

    def forward(self, x, train=True):
        x = as_float_array(x, "x")
        e = np.exp(-np.abs(x))
        self._out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return self._out

    def backward(self, dout):
        out = self._saved("_out")
        dout = self._check_dout(dout, out.shape)
        return dout * (1.0 - out) * out

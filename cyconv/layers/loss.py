"""Loss layers: ``forward(x, t)`` returns a scalar, ``backward(dout=1)`` its gradient."""

from __future__ import annotations

import numpy as np

from .._validation import as_float_array, check_shape
from ._base import Layer

__all__ = ["SoftmaxWithLoss"]


class SoftmaxWithLoss(Layer):
    """Softmax followed by the mean cross-entropy loss (numerically stable).

    ``forward(x, t)`` takes scores (N, K) and integer labels (N,) or one-hot
    targets (N, K) and returns the scalar loss; ``backward(dout=1)`` returns
    ``dout * (softmax(x) - onehot(t)) / N``.
    """

    name = "SoftmaxWithLoss"
    is_loss = True

    def output_shape(self, input_shape):
        return ()  # a scalar loss

    def forward(self, x, t, train=True):
        x = as_float_array(x, "x", ndim=2)
        t = np.asarray(t)
        n, k = x.shape
        if t.ndim == 1:
            if t.dtype.kind not in "iu":
                raise TypeError(f"integer labels t must have an integer dtype, got {t.dtype}")
            if t.shape[0] != n or (t.size and (t.min() < 0 or t.max() >= k)):
                raise ValueError(f"labels t must have shape ({n},) with values in [0, {k})")
            onehot = np.zeros_like(x)
            onehot[np.arange(n), t] = 1
        else:
            onehot = as_float_array(t, "t", ndim=2).astype(x.dtype, copy=False)
            check_shape(onehot, x.shape, "t")
        shifted = x - x.max(axis=1, keepdims=True)
        log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self._prob, self._target = np.exp(log_prob), onehot
        return float(-(onehot * log_prob).sum() / n)

    @property
    def probabilities(self):
        """The softmax of the last forward's scores, shape (N, K)."""
        return self._saved("_prob")

    def backward(self, dout=1.0):
        prob, target = self._saved("_prob", "_target")
        return (dout * (prob - target) / prob.shape[0]).astype(prob.dtype, copy=False)

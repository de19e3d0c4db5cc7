"""Fully connected layer and the reshape in front of it."""

from __future__ import annotations

import numpy as np

from .._blas import matmul
from .._param_validation import check
from .._validation import as_float_array
from ._base import Layer, init_weights, promote, seed_only

__all__ = ["Affine", "Flatten"]


class Affine(Layer):
    """Fully connected layer ``y = x @ W + b``; inputs (N, ...) are flattened.

    ``W`` has shape (in_features, out_features), as in the textbook.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.Affine(W=np.ones((12, 5)), b=np.zeros(5)).forward(np.ones((2, 3, 2, 2))).shape
    (2, 5)
    """

    name = "Affine"
    has_params = True

    def __init__(self, out_features=None, *, bias=True, W=None, b=None, weight_init="he",
                 rng=None, backend=None):
        super().__init__(backend=backend)
        if W is not None:
            W = self._adopt_params(W, b, ndim=2, out_axis=1)
            out_features = W.shape[1]
        elif out_features is None:
            raise TypeError("Affine needs out_features or the weights W")
        self.out_features = check("out_features", out_features)
        self.bias = bias if W is None else b is not None
        self.weight_init, self.rng = weight_init, rng

    def _repr_settings(self):
        return ((self.out_features,), {},
                dict(bias=self.bias, weight_init=self.weight_init, rng=seed_only(self.rng)))

    def output_shape(self, input_shape):
        return (self.out_features,)

    def build(self, input_shape, *, dtype=np.float64, rng=None):
        fan_in = int(np.prod(input_shape))
        if "W" not in self.params:
            self.params["W"] = init_weights((fan_in, self.out_features), fan_in, self.weight_init,
                                            self.rng if rng is None else rng, dtype)
            if self.bias:
                self.params["b"] = np.zeros(self.out_features, dtype=dtype)
        elif self.params["W"].shape[0] != fan_in:
            raise ValueError(f"Affine: input has {fan_in} features per sample but W has shape "
                             f"{self.params['W'].shape}")
        return self.output_shape(input_shape)

    def forward(self, x, train=True):
        x, (w, *b) = promote(x, self._weights())
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != w.shape[0]:
            raise ValueError(f"Affine: x of shape {x.shape} has {int(np.prod(x.shape[1:]))} "
                             f"features per sample, W expects {w.shape[0]}")
        self._shape = x.shape
        self._x = x.reshape(x.shape[0], -1)
        self._w = w
        y = matmul(self._x, w)
        return y + b[0] if b else y

    def backward(self, dout):
        shape, x, w = self._saved("_shape", "_x", "_w")
        dout = self._check_dout(dout, (x.shape[0], w.shape[1]))
        self.grads["W"] = matmul(x.T, dout).astype(self.params["W"].dtype, copy=False)
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=0).astype(self.params["b"].dtype, copy=False)
        return matmul(dout, w.T).reshape(shape)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W)."""

    name = "Flatten"

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, train=True):
        x = as_float_array(x, "x")
        if x.ndim < 2:
            raise ValueError(f"Flatten expects x with a batch axis, (N, ...), got shape {x.shape}")
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        shape = self._saved("_shape")
        dout = self._check_dout(dout, (shape[0], int(np.prod(shape[1:]))))
        return dout.reshape(shape)

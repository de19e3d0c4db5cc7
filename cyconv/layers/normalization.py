"""Normalisation and regularisation layers."""

from __future__ import annotations

import numpy as np

from .._param_validation import check
from .._validation import as_float_array, channels_last_hint
from ._base import Layer

__all__ = ["BatchNorm", "Dropout"]


class BatchNorm(Layer):
    """Batch normalisation: per feature on (N, D), per channel on (N, C, H, W).

    Training normalises with the batch statistics and updates the running ones
    (``running = momentum * running + (1 - momentum) * batch``, the textbook's
    convention); ``train=False`` uses the running statistics.
    """

    name = "BatchNorm"
    has_params = True
    shape_preserving = True
    batch_coupled = True

    def __init__(self, num_features=None, *, momentum=0.9, eps=1e-5, gamma=None, beta=None,
                 running_mean=None, running_var=None, backend=None):
        super().__init__(backend=backend)
        self.momentum = check("momentum", momentum)
        self.eps = check("eps", eps, owner="BatchNorm")
        if gamma is not None:
            self.params["gamma"] = as_float_array(gamma, "gamma", ndim=1)
            self.params["beta"] = (as_float_array(beta, "beta", ndim=1) if beta is not None
                                   else np.zeros_like(self.params["gamma"]))
            num_features = self.params["gamma"].shape[0]
        self.num_features = check("num_features", num_features)
        self.running_mean, self.running_var = running_mean, running_var

    def _repr_settings(self):
        return (() if self.num_features is None else (self.num_features,), {},
                dict(momentum=self.momentum, eps=self.eps))

    def build(self, input_shape, *, dtype=np.float64, rng=None):
        features = input_shape[0]
        if "gamma" not in self.params and self.num_features not in (None, features):
            raise ValueError(f"BatchNorm: input has {features} features/channels, "
                             f"num_features is {self.num_features}"
                             + channels_last_hint(input_shape, self.num_features,
                                                  batch_axis=False))
        if "gamma" not in self.params:
            self.num_features = features
            self.params["gamma"] = np.ones(features, dtype=dtype)
            self.params["beta"] = np.zeros(features, dtype=dtype)
        elif features != self.num_features:
            raise ValueError(f"BatchNorm: input has {features} features/channels, "
                             f"gamma has {self.num_features}")
        return tuple(input_shape)

    def _as_2d(self, x):
        """Move features to the last axis and flatten the rest: (M, D)."""
        if x.ndim == 4:
            return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
        if x.ndim == 2:
            return x
        raise ValueError(f"BatchNorm expects x of shape (N, D) or (N, C, H, W), got {x.shape}")

    def _from_2d(self, y, shape):
        if len(shape) == 4:
            n, c, h, w = shape
            return np.ascontiguousarray(y.reshape(n, h, w, c).transpose(0, 3, 1, 2))
        return y

    def forward(self, x, train=True):
        x = as_float_array(x, "x")
        if "gamma" not in self.params:
            self.build(x.shape[1:], dtype=x.dtype)
        flat = self._as_2d(x)
        if flat.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm: x has {flat.shape[1]} features/channels, "
                             f"expected {self.num_features}"
                             + channels_last_hint(x.shape, self.num_features))
        if self.running_mean is None:
            self.running_mean = np.zeros(self.num_features, dtype=x.dtype)
            self.running_var = np.ones(self.num_features, dtype=x.dtype)
        if train:
            mean, var = flat.mean(axis=0), flat.var(axis=0)
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * mean
            self.running_var = m * self.running_var + (1 - m) * var
        else:
            mean, var = self.running_mean, self.running_var
        self._std = np.sqrt(var + self.eps)
        self._xhat = (flat - mean) / self._std
        self._shape, self._train = x.shape, train
        y = self.params["gamma"] * self._xhat + self.params["beta"]
        return self._from_2d(y.astype(x.dtype, copy=False), x.shape)

    def backward(self, dout):
        shape, xhat, std, train = self._saved("_shape", "_xhat", "_std", "_train")
        dout = self._as_2d(self._check_dout(dout, shape))
        gamma = self.params["gamma"]
        self.grads["beta"] = dout.sum(axis=0).astype(gamma.dtype, copy=False)
        self.grads["gamma"] = (dout * xhat).sum(axis=0).astype(gamma.dtype, copy=False)
        dxhat = dout * gamma
        if train:  # the batch statistics depend on x as well
            dxhat = dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0)
        return self._from_2d(dxhat / std, shape)


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``ratio`` and
    scale the rest by ``1/(1-ratio)``; at test time the identity.

    ``rng`` (seed or :class:`numpy.random.Generator`) makes masks reproducible.
    """

    name = "Dropout"
    shape_preserving = True
    stochastic = True

    def __init__(self, ratio=0.5, *, rng=None, backend=None):
        super().__init__(backend=backend)
        self.ratio = check("ratio", ratio)
        self.rng = np.random.default_rng(rng)

    def _repr_settings(self):
        return (self.ratio,), {}, {}

    def forward(self, x, train=True):
        x = as_float_array(x, "x")
        self._shape = x.shape
        if not train:
            self._scale = None
            return x
        keep = self.rng.random(x.shape) >= self.ratio
        self._scale = keep.astype(x.dtype) / x.dtype.type(1.0 - self.ratio)
        return x * self._scale

    def backward(self, dout):
        shape, scale = self._saved("_shape", "_scale")
        dout = self._check_dout(dout, shape)
        return dout if scale is None else dout * scale

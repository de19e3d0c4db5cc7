"""Convolution layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._param_validation import check
from .._shapes import check_rounding, resolve_geometry, validate_window_options
from .._validation import channels_last_hint
from ._base import Layer, init_weights, promote, seed_only

__all__ = ["Conv2D"]


class Conv2D(Layer):
    """2-D convolution layer.  ``W`` has shape (OC, C // groups, KH, KW).

    Parameters
    ----------
    out_channels, kernel_size : int, optional
        Give these and let ``build`` create ``W``/``b``, or pass ``W`` (and ``b``).
    stride, padding, dilation, groups, rounding
        As in :func:`cyconv.conv2d`.
    bias : bool
        Whether the layer has a bias ``b`` (ignored when ``W`` is given: then
        ``b`` decides).
    W, b : ndarray, optional
        Parameter arrays, held by reference (in-place optimizer updates show).
    weight_init : "he", "xavier" or float
    backend : str, optional
        Which backend's kernels to run on (None: the preference order).
    algorithm : {"auto", "gemm", "winograd"}
        As in :func:`cyconv.conv2d`; forward and backward use it.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> conv = cyconv.Conv2D(W=np.ones((2, 1, 3, 3)), b=np.zeros(2), padding=1)
    >>> conv.forward(np.ones((1, 1, 4, 4))).shape
    (1, 2, 4, 4)
    """

    name = "Conv2D"
    kernels_needed = F.CONV2D_KERNELS
    has_params = True

    def __init__(self, out_channels=None, kernel_size=None, *, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, rounding="exact", W=None, b=None, weight_init="he",
                 rng=None, backend=None, algorithm="auto"):
        super().__init__(backend=backend)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.algorithm = F.check_algorithm(algorithm)
        self.groups = check("groups", groups)
        if kernel_size is not None or W is not None:
            validate_window_options(W.shape[2:] if W is not None else kernel_size, stride,
                                    padding, dilation)
        self.rounding = check_rounding(rounding)
        self.weight_init, self.rng = weight_init, rng
        if W is not None:
            W = self._adopt_params(W, b, ndim=4, out_axis=0)
            out_channels, kernel_size = W.shape[0], W.shape[2:]
        elif out_channels is None or kernel_size is None:
            raise TypeError("Conv2D needs out_channels and kernel_size, or the weights W")
        self.out_channels = check("out_channels", out_channels)
        self.kernel_size = check("kernel_size", kernel_size)
        self.bias = bias if W is None else b is not None
        self.in_channels = None if W is None else W.shape[1] * self.groups

    def output_shape(self, input_shape):
        geom = resolve_geometry(input_shape[1:], self.kernel_size, stride=self.stride,
                                padding=self.padding, dilation=self.dilation,
                                rounding=self.rounding, layer=self.name)
        return (self.out_channels, geom.out_h, geom.out_w)

    def build(self, input_shape, *, dtype=np.float64, rng=None):
        channels = input_shape[0]
        if channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels={channels} and "
                             f"out_channels={self.out_channels}")
        if "W" not in self.params:
            kh, kw = self.kernel_size
            shape = (self.out_channels, channels // self.groups, kh, kw)
            fan_in = shape[1] * kh * kw
            self.params["W"] = init_weights(shape, fan_in, self.weight_init,
                                            self.rng if rng is None else rng, dtype)
            if self.bias:
                self.params["b"] = np.zeros(self.out_channels, dtype=dtype)
            self.in_channels = channels
        elif channels != self.in_channels:
            raise ValueError(f"{self.name}: input has {channels} channels but W expects "
                             f"{self.in_channels} (W.shape[1]*groups)"
                             + channels_last_hint(input_shape, self.in_channels,
                                                  batch_axis=False))
        return self.output_shape(input_shape)

    def _repr_settings(self):
        return ((self.out_channels,),
                dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding),
                dict(dilation=self.dilation, groups=self.groups, bias=self.bias,
                     rounding=self.rounding, algorithm=self.algorithm,
                     weight_init=self.weight_init, rng=seed_only(self.rng)))

    def forward(self, x, train=True):
        x, (w, *b) = promote(x, self._weights())
        x, w, b, groups, geom = F.prepare_conv(
            x, w, b[0] if b else None, stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=self.groups, rounding=self.rounding, layer=self.name)
        self._cache = (x, w, geom)
        return F.run_conv2d(self.kernels, x, w, b, geom, groups, algorithm=self.algorithm)

    def backward(self, dout):
        return self._backward(dout, need_dx=True)

    def backward_params(self, dout):
        self._backward(dout, need_dx=False)

    def _backward(self, dout, need_dx):
        x, w, geom = self._saved("_cache")
        dout = F.check_grad_output(dout, x, w.shape[0], geom)
        dx, dw, db = F.run_conv2d_backward(self.kernels, dout, x, w, geom, self.groups,
                                           algorithm=self.algorithm, need_dx=need_dx)
        self.grads["W"] = dw.astype(self.params["W"].dtype, copy=False)
        if "b" in self.params:
            self.grads["b"] = db.astype(self.params["b"].dtype, copy=False)
        return dx

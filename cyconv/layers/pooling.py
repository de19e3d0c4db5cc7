"""Pooling layers."""

from __future__ import annotations

from .. import functional as F
from .._param_validation import check
from .._shapes import check_rounding, resolve_geometry, validate_window_options
from ._base import Layer

__all__ = ["MaxPool2D", "AvgPool2D"]


class MaxPool2D(Layer):
    """Max pooling; the first maximum in row-major window order gets the gradient.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.MaxPool2D(2).forward(np.ones((1, 3, 4, 4))).shape
    (1, 3, 2, 2)
    """

    name = "MaxPool2D"
    kernels_needed = F.MAX_POOL2D_KERNELS

    def __init__(self, kernel_size, stride=None, padding=0, *, dilation=1, rounding="exact",
                 ceil_mode=False, backend=None):
        super().__init__(backend=backend)
        self.kernel_size = check("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.rounding = check_rounding(rounding, ceil_mode)
        validate_window_options(self.kernel_size, self.stride, padding, dilation, pool=True)

    def _repr_settings(self):
        return ((), dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding),
                dict(dilation=self.dilation, rounding=self.rounding))

    def output_shape(self, input_shape):
        geom = resolve_geometry(input_shape[1:], self.kernel_size, stride=self.stride,
                                padding=self.padding, dilation=self.dilation,
                                rounding=self.rounding, layer=self.name, max_pool_padding=True)
        return (input_shape[0], geom.out_h, geom.out_w)

    @property
    def indices(self):
        """The last forward's argmax: flat offsets ``h * W + w`` into each (n, c) plane."""
        return self._saved("_indices")

    def forward(self, x, train=True):
        x, geom = F.prepare_pool(x, self.kernel_size, stride=self.stride, padding=self.padding,
                                 dilation=self.dilation, rounding=self.rounding,
                                 ceil_mode=False, layer=self.name)
        y, self._indices = F.run_max_pool2d(self.kernels, x, geom)
        self._cache = (x, geom)
        return y

    def backward(self, dout):
        (x, geom), indices = self._saved("_cache", "_indices")
        dout = F.check_grad_output(dout, x, x.shape[1], geom)
        return F.run_max_pool2d_backward(self.kernels, dout, indices, x.shape)


class AvgPool2D(Layer):
    """Average pooling (PyTorch's ``count_include_pad``/``divisor_override`` rules).

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.AvgPool2D(2).forward(np.ones((1, 1, 4, 4)))[0, 0]
    array([[1., 1.],
           [1., 1.]])
    """

    name = "AvgPool2D"
    kernels_needed = F.AVG_POOL2D_KERNELS

    def __init__(self, kernel_size, stride=None, padding=0, *, rounding="exact", ceil_mode=False,
                 count_include_pad=True, divisor_override=None, backend=None):
        super().__init__(backend=backend)
        self.kernel_size = check("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else stride
        self.padding = padding
        self.rounding = check_rounding(rounding, ceil_mode)
        validate_window_options(self.kernel_size, self.stride, padding, 1, pool=True)
        self.count_include_pad = check("count_include_pad", count_include_pad)
        self.divisor_override = check("divisor_override", divisor_override)

    def _repr_settings(self):
        return ((), dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding),
                dict(rounding=self.rounding, count_include_pad=self.count_include_pad,
                     divisor_override=self.divisor_override))

    def output_shape(self, input_shape):
        geom = resolve_geometry(input_shape[1:], self.kernel_size, stride=self.stride,
                                padding=self.padding, rounding=self.rounding, layer=self.name,
                                max_pool_padding=True)
        return (input_shape[0], geom.out_h, geom.out_w)

    def forward(self, x, train=True):
        x, geom = F.prepare_pool(x, self.kernel_size, stride=self.stride, padding=self.padding,
                                 dilation=1, rounding=self.rounding, ceil_mode=False,
                                 layer=self.name)
        self._cache = (x.shape, x.dtype, geom)
        return F.run_avg_pool2d(self.kernels, x, geom, self.count_include_pad,
                                self.divisor_override)

    def backward(self, dout):
        shape, dtype, geom = self._saved("_cache")
        dout = self._check_dout(dout, (shape[0], shape[1], geom.out_h, geom.out_w), dtype)
        return F.run_avg_pool2d_backward(self.kernels, dout, shape, geom, self.count_include_pad,
                                         self.divisor_override)

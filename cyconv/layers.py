"""Layer classes: one small class per layer, forward and backward side by side.

Every layer follows the textbook's protocol (*Deep Learning from Scratch*,
ch. 5-7): ``forward(x, train=True)`` caches what ``backward(dout)`` needs;
parameters live in ``params`` and their gradients in ``grads`` (dicts of
arrays, same keys).  Layers with parameters can be built lazily: give the
output size only and call ``build(input_shape)`` (``cyconv.nn.Sequential``
does that), or pass the arrays (``W=..., b=...``) directly.

``Conv2D``, ``MaxPool2D`` and ``AvgPool2D`` have compiled kernels: calling
the class picks the implementation from the registry (``backend=None``
follows the preference order, ``cython`` first), so ``Conv2D(30, 5)`` is the
fast one and ``Conv2D(30, 5, backend="numpy")`` the reference.
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

from . import functional as F
from ._blas import matmul
from ._registry import REGISTRY, get_layer
from ._shapes import as_pair, check_rounding, resolve_geometry, validate_window_options
from ._threads import resolve_num_threads
from ._validation import as_float_array, channels_last_hint, check_positive_int, check_shape
from .backends import numpy_backend

__all__ = [
    "Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "Affine", "ReLU", "Sigmoid",
    "SoftmaxWithLoss", "Dropout", "BatchNorm", "Flatten", "COMPILED_LAYER_NAMES",
    "ForwardNotCalledError",
]

COMPILED_LAYER_NAMES = ("Conv2D", "MaxPool2D", "AvgPool2D")


class ForwardNotCalledError(RuntimeError, AttributeError):
    """``backward()`` was called on a layer before any ``forward()``."""


def _is_default(value, default):
    if value is default:
        return True
    if isinstance(value, np.dtype):
        try:
            return value == np.dtype(default)
        except TypeError:
            return False
    return type(value) is type(default) and value == default


def settings_repr(obj, args=(), essentials=None, options=None, init=None):
    """``Name(arg, key=value, ...)`` in scikit-learn's style.

    ``args`` are shown positionally and ``essentials`` always; ``options``
    only where they differ from the default of ``init``'s signature (the
    class's ``__init__`` unless given).
    """
    init = init or type(obj).__init__
    defaults = {name: param.default for name, param in inspect.signature(init).parameters.items()}
    parts = [repr(a) for a in args]
    parts += [f"{key}={_settings_value(value)}" for key, value in (essentials or {}).items()]
    parts += [f"{key}={_settings_value(value)}" for key, value in (options or {}).items()
              if not _is_default(value, defaults.get(key, inspect.Parameter.empty))]
    return f"{type(obj).__name__}({', '.join(parts)})"


def _settings_value(value):
    return repr(value.name) if isinstance(value, np.dtype) else repr(value)


def _seed_only(rng):
    """An int seed is a setting worth showing; a Generator (no readable repr) is not."""
    return rng if isinstance(rng, numbers.Integral) else None


def init_weights(shape, fan_in, weight_init, rng, dtype):
    """Draw weights: "he" (std sqrt(2/fan_in)), "xavier" (sqrt(1/fan_in)) or a fixed std."""
    if isinstance(weight_init, str):
        scales = {"he": 2.0, "xavier": 1.0}
        if weight_init not in scales:
            raise ValueError(f"weight_init must be 'he', 'xavier' or a positive float std, "
                             f"got {weight_init!r}")
        std = np.sqrt(scales[weight_init] / fan_in)
    elif isinstance(weight_init, numbers.Real) and weight_init > 0:
        std = float(weight_init)
    else:
        raise ValueError(f"weight_init must be 'he', 'xavier' or a positive float std, "
                         f"got {weight_init!r}")
    return (std * np.random.default_rng(rng).standard_normal(shape)).astype(dtype)


class Layer:
    """Base class of every layer (built-in or plugin).

    Class attributes a layer may set (``cyconv.testing.check_layer`` reads them):

    name, backend : str
        Set by :func:`cyconv.register_layer`.
    has_params : bool
        The layer has trainable parameters in ``params``.
    shape_preserving : bool
        ``output_shape(s) == s`` for every input shape.
    is_loss : bool
        ``forward(x, t)`` returns a scalar loss and ``backward(dout=1)`` its
        gradient (``SoftmaxWithLoss``).
    kernels : module or None
        The backend kernel set (conv, pooling and ReLU layers only).
    """

    name = None
    backend = None
    kernels = None
    has_params = False
    shape_preserving = False
    is_loss = False
    _front = False  # class that dispatches to a backend variant on instantiation

    def __new__(cls, *args, backend=None, **kwargs):
        if cls.__dict__.get("_front", False):
            target = get_layer(cls.name, backend)
            if not issubclass(target, cls):
                return target(*args, **kwargs)
            return super().__new__(target)
        if backend is not None and backend != cls.backend:
            raise ValueError(f"{cls.__name__} is the {cls.backend!r} implementation; "
                             f"use cyconv.create_layer({cls.name!r}, backend={backend!r})")
        return super().__new__(cls)

    def __init__(self, *, backend=None):
        self.params = {}
        self.grads = {}

    def __getattr__(self, attr):
        # Only reached for missing attributes: a private one is the state a
        # forward() call leaves for backward().
        if attr.startswith("_") and not attr.startswith("__"):
            raise ForwardNotCalledError(
                f"{type(self).__name__}.backward() needs the state of a forward() call "
                f"(missing {attr}); call forward(x) first")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    def _adopt_params(self, W, b, *, ndim, out_axis):
        """Hold given weights (by reference when already usable) as params W, b."""
        W = as_float_array(W, "W", ndim=ndim)
        self.params["W"] = W
        if b is not None:
            b = as_float_array(b, "b", ndim=1, dtype=W.dtype)
            check_shape(b, (W.shape[out_axis],), "b")
            self.params["b"] = b
        return W

    @staticmethod
    def _check_dout(dout, shape, dtype=None):
        """Validate an upstream gradient against the shape forward() produced."""
        dout = as_float_array(dout, "dout", dtype=dtype)
        check_shape(dout, shape, "dout")
        return dout

    def build(self, input_shape, *, dtype=np.float64, rng=None):
        """Create parameters for per-sample ``input_shape``; return the output shape."""
        return self.output_shape(input_shape)

    def output_shape(self, input_shape):
        """Per-sample output shape (without the batch axis) for ``input_shape``."""
        return tuple(input_shape)

    def forward(self, x, train=True):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def backward_params(self, dout):
        """Fill ``grads`` like :meth:`backward` without returning the input gradient.

        A network's first layer needs no gradient for its input;
        :class:`cyconv.nn.Sequential` calls this there, and a layer that can
        skip that work (``Conv2D``) overrides it.
        """
        self.backward(dout)

    def __call__(self, *args, **kwargs):
        """``layer(x)`` is ``layer.forward(x)`` (``loss_layer(x, t)`` for a loss)."""
        return self.forward(*args, **kwargs)

    def _repr_settings(self):
        """``(positional, always shown, shown when not the default)`` for the repr."""
        return (), {}, {}

    def __repr__(self):
        args, essentials, options = self._repr_settings()
        return settings_repr(self, args, essentials, dict(options, backend=self.backend))

    def __getnewargs_ex__(self):
        # Unpickling calls __new__ on the concrete class: no backend dispatch.
        return (), {}


def _promote(x, params):
    """NumPy-style promotion of a float input with the layer's parameters."""
    x = as_float_array(x, "x")
    dtype = np.result_type(x.dtype, *(p.dtype for p in params))
    return x.astype(dtype, copy=False), [p.astype(dtype, copy=False) for p in params]


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
        Which registered implementation to instantiate.
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
    has_params = True
    _front = True

    def __init__(self, out_channels=None, kernel_size=None, *, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, rounding="exact", W=None, b=None, weight_init="he",
                 rng=None, backend=None, algorithm="auto"):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.algorithm = F.check_algorithm(algorithm)
        self.groups = check_positive_int(groups, "groups")
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
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.bias = bias if W is None else b is not None
        self.in_channels = None if W is None else W.shape[1] * self.groups

    def _geometry(self, input_shape):
        return resolve_geometry(input_shape[1:], self.kernel_size, stride=self.stride,
                                padding=self.padding, dilation=self.dilation,
                                rounding=self.rounding, layer=f"{self.name}")

    def output_shape(self, input_shape):
        geom = self._geometry(input_shape)
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

    def _options(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, rounding=self.rounding)

    def _repr_settings(self):
        return ((self.out_channels,),
                dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding),
                dict(dilation=self.dilation, groups=self.groups, bias=self.bias,
                     rounding=self.rounding, algorithm=self.algorithm,
                     weight_init=self.weight_init, rng=_seed_only(self.rng)))

    def forward(self, x, train=True):
        if "W" not in self.params:
            raise RuntimeError(f"{self.name} has no weights yet: call build(input_shape) first")
        x, (w, *b) = _promote(x, [self.params["W"]] + ([self.params["b"]] if "b" in self.params
                                                        else []))
        x, w, b, groups, geom = F.prepare_conv(x, w, b[0] if b else None, layer=self.name,
                                               **self._options())
        self._cache = (x, w, geom)
        return self.kernels.conv2d_forward(x, w, b, geom, groups, resolve_num_threads(None),
                                           **F.conv_algorithm_options(self.algorithm, geom,
                                                                      self.kernels))

    def backward(self, dout):
        return self._backward(dout, need_dx=True)

    def backward_params(self, dout):
        self._backward(dout, need_dx=False)

    def _backward(self, dout, need_dx):
        x, w, geom = self._cache
        dout = F.check_grad_output(dout, x, w.shape[0], geom)
        # passed only when False, so a kernel set without the option still serves backward()
        extra = {} if need_dx else {"need_dx": False}
        extra.update(F.conv_algorithm_options(self.algorithm, geom, self.kernels))
        dx, dw, db = self.kernels.conv2d_backward(dout, x, w, geom, self.groups,
                                                  resolve_num_threads(None), **extra)
        self.grads["W"] = dw.astype(self.params["W"].dtype, copy=False)
        if "b" in self.params:
            self.grads["b"] = db.astype(self.params["b"].dtype, copy=False)
        return dx


class MaxPool2D(Layer):
    """Max pooling; the first maximum in row-major window order gets the gradient.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.MaxPool2D(2).forward(np.ones((1, 3, 4, 4))).shape
    (1, 3, 2, 2)
    """

    name = "MaxPool2D"
    _front = True

    def __init__(self, kernel_size, stride=None, padding=0, *, dilation=1, rounding="exact",
                 ceil_mode=False, backend=None):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.rounding = check_rounding(rounding, ceil_mode)
        validate_window_options(self.kernel_size, self.stride, padding, dilation, pool=True)

    def _options(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    rounding=self.rounding, ceil_mode=False)

    def _repr_settings(self):
        return ((), dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding),
                dict(dilation=self.dilation, rounding=self.rounding))

    def output_shape(self, input_shape):
        geom = resolve_geometry(input_shape[1:], self.kernel_size, stride=self.stride,
                                padding=self.padding, dilation=self.dilation,
                                rounding=self.rounding, layer=self.name, max_pool_padding=True)
        return (input_shape[0], geom.out_h, geom.out_w)

    def forward(self, x, train=True):
        x, geom = F.prepare_pool(x, self.kernel_size, layer=self.name, **self._options())
        y, self._indices = self.kernels.max_pool2d_forward(x, geom, resolve_num_threads(None))
        self._cache = (x, geom)
        return y

    def backward(self, dout):
        x, geom = self._cache
        dout = F.check_grad_output(dout, x, x.shape[1], geom)
        return self.kernels.max_pool2d_backward(dout, self._indices, x.shape,
                                                resolve_num_threads(None))


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
    _front = True

    def __init__(self, kernel_size, stride=None, padding=0, *, rounding="exact", ceil_mode=False,
                 count_include_pad=True, divisor_override=None, backend=None):
        super().__init__()
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else stride
        self.padding = padding
        self.rounding = check_rounding(rounding, ceil_mode)
        validate_window_options(self.kernel_size, self.stride, padding, 1, pool=True)
        self.count_include_pad, self.divisor_override = F.check_avg_options(
            count_include_pad, divisor_override)

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
        return self.kernels.avg_pool2d_forward(x, geom, self.count_include_pad,
                                               self.divisor_override, resolve_num_threads(None))

    def backward(self, dout):
        shape, dtype, geom = self._cache
        dout = self._check_dout(dout, (shape[0], shape[1], geom.out_h, geom.out_w), dtype)
        return self.kernels.avg_pool2d_backward(dout, shape, geom, self.count_include_pad,
                                                self.divisor_override, resolve_num_threads(None))


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
        super().__init__()
        if W is not None:
            W = self._adopt_params(W, b, ndim=2, out_axis=1)
            out_features = W.shape[1]
        elif out_features is None:
            raise TypeError("Affine needs out_features or the weights W")
        self.out_features = check_positive_int(out_features, "out_features")
        self.bias = bias if W is None else b is not None
        self.weight_init, self.rng = weight_init, rng

    def _repr_settings(self):
        return ((self.out_features,), {},
                dict(bias=self.bias, weight_init=self.weight_init, rng=_seed_only(self.rng)))

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
        if "W" not in self.params:
            raise RuntimeError("Affine has no weights yet: call build(input_shape) first")
        x, (w, *b) = _promote(x, [self.params["W"]] + ([self.params["b"]] if "b" in self.params
                                                        else []))
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != w.shape[0]:
            raise ValueError(f"Affine: x of shape {x.shape} has {int(np.prod(x.shape[1:]))} "
                             f"features per sample, W expects {w.shape[0]}")
        self._shape = x.shape
        self._x = x.reshape(x.shape[0], -1)
        self._w = w
        y = matmul(self._x, w)
        return y + b[0] if b else y

    def backward(self, dout):
        dout = self._check_dout(dout, (self._x.shape[0], self._w.shape[1]))
        self.grads["W"] = matmul(self._x.T, dout).astype(self.params["W"].dtype, copy=False)
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=0).astype(self.params["b"].dtype, copy=False)
        return matmul(dout, self._w.T).reshape(self._shape)


class ReLU(Layer):
    """``max(x, 0)``; the gradient at 0 is 0."""

    name = "ReLU"
    shape_preserving = True
    _front = True

    def forward(self, x, train=True):
        x = as_float_array(x, "x")
        y, self._positive = self.kernels.relu_forward(x, resolve_num_threads(None))
        return y

    def backward(self, dout):
        dout = self._check_dout(dout, self._positive.shape)
        return self.kernels.relu_backward(dout, self._positive, resolve_num_threads(None))


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
        dout = self._check_dout(dout, self._out.shape)
        return dout * (1.0 - self._out) * self._out


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
        dout = self._check_dout(dout, (self._shape[0], int(np.prod(self._shape[1:]))))
        return dout.reshape(self._shape)


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``ratio`` and
    scale the rest by ``1/(1-ratio)``; at test time the identity.

    ``rng`` (seed or :class:`numpy.random.Generator`) makes masks reproducible.
    """

    name = "Dropout"
    shape_preserving = True
    stochastic = True

    def __init__(self, ratio=0.5, *, rng=None, backend=None):
        super().__init__()
        if not isinstance(ratio, numbers.Real) or not 0 <= ratio < 1:
            raise ValueError(f"ratio must be a float in [0, 1), got {ratio!r}")
        self.ratio = float(ratio)
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
        dout = self._check_dout(dout, self._shape)
        return dout if self._scale is None else dout * self._scale


class BatchNorm(Layer):
    """Batch normalisation: per feature on (N, D), per channel on (N, C, H, W).

    Training normalises with the batch statistics and updates the running ones
    (``running = momentum * running + (1 - momentum) * batch``, the textbook's
    convention); ``train=False`` uses the running statistics.
    """

    name = "BatchNorm"
    has_params = True
    shape_preserving = True
    batch_coupled = True  # in training, each output depends on the whole batch

    def __init__(self, num_features=None, *, momentum=0.9, eps=1e-5, gamma=None, beta=None,
                 running_mean=None, running_var=None, backend=None):
        super().__init__()
        if not (isinstance(momentum, numbers.Real) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        if gamma is not None:
            self.params["gamma"] = as_float_array(gamma, "gamma", ndim=1)
            self.params["beta"] = (as_float_array(beta, "beta", ndim=1) if beta is not None
                                   else np.zeros_like(self.params["gamma"]))
            num_features = self.params["gamma"].shape[0]
        self.num_features = None if num_features is None else check_positive_int(
            num_features, "num_features")
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
        dout = self._as_2d(self._check_dout(dout, self._shape))
        gamma = self.params["gamma"]
        self.grads["beta"] = dout.sum(axis=0).astype(gamma.dtype, copy=False)
        self.grads["gamma"] = (dout * self._xhat).sum(axis=0).astype(gamma.dtype, copy=False)
        dxhat = dout * gamma
        if self._train:  # the batch statistics depend on x as well
            dxhat = dxhat - dxhat.mean(axis=0) - self._xhat * (dxhat * self._xhat).mean(axis=0)
        return self._from_2d(dxhat / self._std, self._shape)


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

    def backward(self, dout=1.0):
        return (dout * (self._prob - self._target) / self._prob.shape[0]).astype(
            self._prob.dtype, copy=False)


def _backend_variant(front, backend, kernels):
    """A registered subclass of ``front`` that runs on ``kernels``.

    It is bound to a module-level name so instances pickle and deep-copy.
    """
    qualname = f"_{front.__name__}_{backend}"
    variant = type(front.__name__, (front,), {
        "backend": backend, "kernels": kernels, "_front": False, "__module__": __name__,
        "__qualname__": qualname,
        "__doc__": f"{front.__name__} on the {backend!r} backend.\n\n{front.__doc__}"})
    globals()[qualname] = variant
    return variant


def _register_builtin_layers():
    for cls in (Affine, Sigmoid, SoftmaxWithLoss, Dropout, BatchNorm, Flatten):
        cls.backend = "numpy"
        REGISTRY.register(cls.name, "numpy", cls, builtin=True)
    compiled = [Conv2D, MaxPool2D, AvgPool2D, ReLU]
    for front in compiled:
        REGISTRY.register(front.name, "numpy", _backend_variant(front, "numpy", numpy_backend),
                          builtin=True)
    try:
        from .backends import cython_backend
    except ImportError as exc:
        REGISTRY.unavailable_backends["cython"] = f"the compiled extension failed to import ({exc})"
        for front in compiled:  # still cyconv's: no plugin may take these slots
            REGISTRY.reserve(front.name, "cython")
        return
    for front in compiled:
        REGISTRY.register(front.name, "cython", _backend_variant(front, "cython", cython_backend),
                          builtin=True)


_register_builtin_layers()

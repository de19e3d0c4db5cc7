"""Stateless operations on NCHW batches (float32 or float64, dtype preserved).

Signatures follow PyTorch's ``torch.nn.functional``: the same positional order
and keyword names (``conv2d(input, weight, bias=None, stride=1, padding=0,
dilation=1, groups=1)``), so code written for PyTorch passes its arguments
unchanged.  cyconv's own options (``rounding``, ``backend``, ``n_threads``,
``algorithm``) are keyword-only, and cyconv's short names ``x``, ``w``, ``b``
and ``dy`` are accepted as keyword aliases of ``input``, ``weight``, ``bias``
and ``grad_output`` (giving both is an error).

Every function validates and normalises its inputs once, resolves the window
geometry with :func:`cyconv.resolve_geometry` (the shape rule), and then
runs a kernel set from :mod:`cyconv.backends` (the ``run_*`` functions, which
the layer classes call as well): ``backend=None`` follows the preference order
(``cython`` first when it is built), a named backend is used exactly or
raises.  Inputs are never mutated; non-contiguous,
read-only and big-endian arrays are accepted (copied once when needed).
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from ._param_validation import CONV2D_ALGORITHMS as CONV2D_ALGORITHMS
from ._param_validation import PARAMS
from ._shapes import check_rounding, resolve_geometry, winograd_serves
from ._threads import resolve_num_threads
from ._validation import (
    FLOAT_DTYPES,
    as_float_array,
    channels_last_hint,
    check_nonempty,
    check_shape,
    converted_dtype_message,
)
from .backends import kernels_for

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]


# -- argument names ---------------------------------------------------------------

def _short_names(**aliases):
    """Accept cyconv's short names (``x=``) for PyTorch-named parameters (``input``).

    ``aliases`` maps alias -> parameter.  The signature (``help()``,
    ``inspect.signature``) shows the PyTorch names; giving a parameter both
    ways raises ``TypeError`` naming the two.
    """
    def decorate(func):
        names = list(inspect.signature(func).parameters)
        position = {alias: names.index(name) for alias, name in aliases.items()}

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            if kwargs and not aliases.keys().isdisjoint(kwargs):
                for alias, name in aliases.items():
                    if alias not in kwargs:
                        continue
                    if name in kwargs or len(args) > position[alias]:
                        raise TypeError(f"{func.__name__}() got {name!r} and its alias "
                                        f"{alias!r}: pass one of them")
                    kwargs[name] = kwargs.pop(alias)
            return func(*args, **kwargs)

        return wrapper

    return decorate


# -- shared preparation (also used by the layer classes) ----------------------

# the declared constraints (cyconv._param_validation) of the arguments checked here
_GROUPS, _KERNEL_SIZE = PARAMS["groups"], PARAMS["kernel_size"]
_COUNT_INCLUDE_PAD, _DIVISOR_OVERRIDE = PARAMS["count_include_pad"], PARAMS["divisor_override"]
_ALGORITHM = PARAMS["algorithm"]


def _check_input(x, name="x"):
    x = as_float_array(x, name, ndim=4)
    check_nonempty(x, name)
    return x


def prepare_conv(x, w, b, *, stride, padding, dilation, groups, rounding, layer="conv2d"):
    """Validate a convolution's arrays and resolve its geometry."""
    given = x
    x = _check_input(x)
    if (not isinstance(given, np.ndarray) and isinstance(w, np.ndarray)
            and w.dtype.newbyteorder("=") in FLOAT_DTYPES
            and w.dtype.newbyteorder("=") != x.dtype):
        # the list's float64 is no choice of the caller's: name x, not w
        raise TypeError(converted_dtype_message("x", given, x.dtype, "w", w.dtype))
    w = as_float_array(w, "w", ndim=4, dtype=x.dtype)
    check_nonempty(w, "w")
    groups = _GROUPS.check(groups, "groups")
    n, c, h, width = x.shape
    oc, c_per_group, kh, kw = w.shape
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={c}")
    if oc % groups:
        raise ValueError(f"groups={groups} must divide the output channels w.shape[0]={oc}")
    if c_per_group * groups != c:
        raise ValueError(f"channel mismatch: x has C={c} channels but w.shape[1]*groups = "
                         f"{c_per_group}*{groups} = {c_per_group * groups}; w must have shape "
                         f"(OC, C/groups, KH, KW) = ({oc}, {c // groups}, {kh}, {kw})"
                         + channels_last_hint(x.shape, c_per_group * groups))
    if b is not None:
        b = as_float_array(b, "b", ndim=1, dtype=x.dtype)
        check_shape(b, (oc,), "b")
    geom = resolve_geometry((h, width), (kh, kw), stride=stride, padding=padding,
                            dilation=dilation, rounding=rounding, layer=layer)
    return x, w, b, groups, geom


def prepare_pool(x, kernel_size, *, stride, padding, dilation, rounding, ceil_mode, layer):
    """Validate a pooling input and resolve its geometry (``stride=None`` -> kernel size)."""
    x = _check_input(x)
    kernel = _KERNEL_SIZE.check(kernel_size, "kernel_size")
    rounding = check_rounding(rounding, ceil_mode)
    geom = resolve_geometry(x.shape[2:], kernel, stride=kernel if stride is None else stride,
                            padding=padding, dilation=dilation, rounding=rounding,
                            layer=layer, max_pool_padding=True)
    return x, geom


def check_grad_output(dy, x, channels, geom):
    """Validate an upstream gradient against the forward output's shape and dtype."""
    dy = as_float_array(dy, "dy", ndim=4, dtype=x.dtype)
    check_shape(dy, (x.shape[0], channels, geom.out_h, geom.out_w), "dy")
    return dy


def check_avg_options(count_include_pad, divisor_override):
    """The average pooling's own options, checked (:data:`cyconv._param_validation.PARAMS`)."""
    return (_COUNT_INCLUDE_PAD.check(count_include_pad, "count_include_pad"),
            _DIVISOR_OVERRIDE.check(divisor_override, "divisor_override"))


#: The kernel-set functions each operation needs (a backend serves it when it has them).
CONV2D_KERNELS = ("conv2d_forward", "conv2d_backward")
MAX_POOL2D_KERNELS = ("max_pool2d_forward", "max_pool2d_backward")
AVG_POOL2D_KERNELS = ("avg_pool2d_forward", "avg_pool2d_backward")


#: ``algorithm=`` values of the convolutions (``CONV2D_ALGORITHMS``, declared with the
#: other parameters); a backend lists the ones it implements in its own
#: ``CONV2D_ALGORITHMS`` (a kernel set without it: "gemm").
def check_algorithm(algorithm):
    """Validate ``algorithm`` on its own (layer constructors); returns it."""
    return _ALGORITHM.check(algorithm, "algorithm")


def conv_algorithm_options(algorithm, geom, kernels):
    """Check ``algorithm`` against the geometry and the backend: the kernel's extra kwargs.

    "auto" passes nothing, so a kernel set without the option still serves it.
    """
    check_algorithm(algorithm)
    if algorithm == "auto":
        return {}
    if algorithm == "winograd" and not winograd_serves(geom):
        raise ValueError(
            "algorithm='winograd' serves 3x3 kernels with stride 1 and dilation 1 (any "
            f"padding, groups and dtype); this convolution has kernel "
            f"{(geom.kernel_h, geom.kernel_w)}, stride {(geom.stride_h, geom.stride_w)}, "
            f"dilation {(geom.dilation_h, geom.dilation_w)}: use algorithm='gemm' or 'auto'")
    offered = getattr(kernels, "CONV2D_ALGORITHMS", ("gemm",))
    if algorithm not in offered:
        raise ValueError(f"algorithm={algorithm!r} is not implemented by this backend (it "
                         f"offers {tuple(offered)}); use algorithm='auto' or another backend")
    return {"algorithm": algorithm}


# -- convolution ---------------------------------------------------------------

@_short_names(x="input", w="weight", b="bias")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           rounding="exact", backend=None, n_threads=None, algorithm="auto"):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    The arguments are PyTorch's (``torch.nn.functional.conv2d``), in its
    order; ``x=``, ``w=`` and ``b=`` are accepted for ``input``, ``weight``
    and ``bias``.

    Parameters
    ----------
    input : ndarray, shape (N, C, H, W), float32 or float64 (alias ``x``)
        A list or other array-like is converted, with the dtype of ``weight``
        when that is a float array.
    weight : ndarray, shape (OC, C // groups, KH, KW), same dtype as ``input`` (alias ``w``)
    bias : ndarray, shape (OC,), optional (alias ``b``)
    stride, dilation : int or (int, int)
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
    groups : int
        Split channels into ``groups`` independent convolutions
        (``groups == C`` is a depthwise convolution).
    rounding : {"exact", "floor", "ceil"}
        How a non-integer output size is handled; "exact" raises
        :class:`cyconv.ShapeError` explaining the shape rule; "floor" is
        PyTorch's behaviour.
    backend : str, optional
        ``"cython"``, ``"numpy"`` or a plugin backend; None follows the
        preference order.
    n_threads : int, optional
        Threads for compiled kernels (see :func:`cyconv.set_num_threads`).
    algorithm : {"auto", "gemm", "winograd"}
        "gemm" is im2col + matrix product (every geometry); "winograd" is
        Winograd F(4x4, 3x3) / F(2x2, 3x3) for 3x3 kernels with stride 1 and
        dilation 1 (fewer multiplications, different rounding: see the
        README's accuracy statement); "auto" picks by shape.  The numpy
        backend offers "gemm" only.

    Returns
    -------
    y : ndarray, shape (N, OC, OH, OW), dtype of ``x``

    Raises
    ------
    ShapeError
        Output size not a positive integer under ``rounding``.
    ValueError, TypeError
        Bad arrays or arguments; the message names the argument.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones((1, 1, 4, 4)); w = np.ones((1, 1, 3, 3))
    >>> cyconv.conv2d(x, w, padding=1).shape
    (1, 1, 4, 4)
    """
    x, w, b, groups, geom = prepare_conv(input, weight, bias, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups, rounding=rounding)
    return run_conv2d(kernels_for(CONV2D_KERNELS, backend, layer="Conv2D"), x, w, b, geom,
                      groups, n_threads, algorithm)


def run_conv2d(kernels, x, w, b, geom, groups, n_threads=None, algorithm="auto"):
    """:func:`conv2d` on prepared arrays (:func:`prepare_conv`) and a kernel set."""
    return kernels.conv2d_forward(x, w, b, geom, groups, resolve_num_threads(n_threads),
                                  **conv_algorithm_options(algorithm, geom, kernels))


@_short_names(dy="grad_output", x="input", w="weight")
def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    rounding="exact", backend=None, n_threads=None, algorithm="auto"):
    """Gradients of :func:`conv2d`.

    Parameters
    ----------
    grad_output : ndarray, shape (N, OC, OH, OW) (alias ``dy``)
        Gradient of the loss with respect to the convolution's output.
    input, weight, stride, padding, dilation, groups, rounding, backend, n_threads, algorithm
        As passed to :func:`conv2d` (aliases ``x``, ``w``).

    Returns
    -------
    dx : ndarray, shape of ``x``
    dw : ndarray, shape of ``w``
    db : ndarray, shape (OC,)
        ``dy.sum((0, 2, 3))``: always returned (it is what a bias would get);
        ignore it for a convolution without bias.

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> x = np.ones((1, 1, 4, 4)); w = np.ones((1, 1, 3, 3))
    >>> dx, dw, db = cyconv.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> float(db[0])
    4.0
    """
    x, w, _, groups, geom = prepare_conv(input, weight, None, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups, rounding=rounding)
    dy = check_grad_output(grad_output, x, w.shape[0], geom)
    return run_conv2d_backward(kernels_for(CONV2D_KERNELS, backend, layer="Conv2D"), dy, x, w,
                               geom, groups, n_threads, algorithm)


def run_conv2d_backward(kernels, dy, x, w, geom, groups, n_threads=None, algorithm="auto",
                        need_dx=True):
    """:func:`conv2d_backward` on prepared arrays; ``need_dx=False`` returns dx None."""
    # passed only when False, so a kernel set without the option still serves backward
    extra = {} if need_dx else {"need_dx": False}
    extra.update(conv_algorithm_options(algorithm, geom, kernels))
    return kernels.conv2d_backward(dy, x, w, geom, groups, resolve_num_threads(n_threads),
                                   **extra)


# -- pooling -------------------------------------------------------------------

@_short_names(x="input")
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, rounding="exact", backend=None, n_threads=None):
    """2-D max pooling.

    The arguments are PyTorch's (``torch.nn.functional.max_pool2d``), in its
    order; ``x=`` is accepted for ``input``.

    Parameters
    ----------
    input : ndarray, shape (N, C, H, W), float32 or float64 (alias ``x``)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int, pair, per-side pairs, "valid" or "same"
        Padded positions hold ``-inf``; at most half the kernel per side.
    dilation : int or (int, int)
    ceil_mode : bool
        PyTorch's alias for ``rounding="ceil"``.
    return_indices : bool
        Also return the flat index ``h * W + w`` of each maximum in its
        (n, c) plane (int64), as PyTorch does.
    rounding : {"exact", "floor", "ceil"}
        As in :func:`conv2d` ("floor" is PyTorch's default behaviour).
    backend, n_threads
        As in :func:`conv2d`.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
    indices : ndarray of int64, only if ``return_indices``

    Notes
    -----
    Tie rule: the first maximum in row-major window order gets the gradient.
    NaN propagates: a window containing NaN outputs NaN (as in PyTorch).

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    x, geom = prepare_pool(input, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, rounding=rounding, ceil_mode=ceil_mode,
                           layer="max_pool2d")
    y, indices = run_max_pool2d(kernels_for(MAX_POOL2D_KERNELS, backend, layer="MaxPool2D"),
                                x, geom, n_threads)
    return (y, indices) if return_indices else y


def run_max_pool2d(kernels, x, geom, n_threads=None):
    """:func:`max_pool2d` on a prepared input (:func:`prepare_pool`): ``(y, indices)``."""
    return kernels.max_pool2d_forward(x, geom, resolve_num_threads(n_threads))


def run_max_pool2d_backward(kernels, dy, indices, x_shape, n_threads=None):
    """:func:`max_pool2d_backward` given the forward's ``indices``."""
    return kernels.max_pool2d_backward(dy, indices, x_shape, resolve_num_threads(n_threads))


@_short_names(dy="grad_output", x="input")
def max_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, indices=None, rounding="exact", backend=None,
                        n_threads=None):
    """Gradient of :func:`max_pool2d` with respect to ``input``.

    ``grad_output`` (alias ``dy``) is the gradient with respect to the
    pooling's output; the other arguments are as passed to :func:`max_pool2d`
    (alias ``x`` for ``input``).  ``indices`` (from ``return_indices=True``)
    skips recomputing the argmax; they are checked to lie inside the input
    plane.

    Returns
    -------
    dx : ndarray, shape of ``x``
    """
    x, geom = prepare_pool(input, kernel_size, stride=stride, padding=padding,
                           dilation=dilation, rounding=rounding, ceil_mode=ceil_mode,
                           layer="max_pool2d")
    dy = check_grad_output(grad_output, x, x.shape[1], geom)
    kernels = kernels_for(MAX_POOL2D_KERNELS, backend, layer="MaxPool2D")
    threads = resolve_num_threads(n_threads)
    if indices is None:
        _, indices = run_max_pool2d(kernels, x, geom, threads)
    else:
        indices = _check_indices(indices, dy.shape, x.shape[2] * x.shape[3])
    return run_max_pool2d_backward(kernels, dy, indices, x.shape, threads)


def _check_indices(indices, shape, plane_size):
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        raise TypeError("indices must be the int64 array returned by "
                        "max_pool2d(..., return_indices=True)")
    check_shape(indices, shape, "indices")
    if indices.size and (indices.min() < -1 or indices.max() >= plane_size):
        raise ValueError(f"indices must lie in [-1, {plane_size}) (flat offsets into an input "
                         f"plane); these were not produced by max_pool2d for this x")
    return np.ascontiguousarray(indices, dtype=np.int64)


@_short_names(x="input")
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, rounding="exact", backend=None,
               n_threads=None):
    """2-D average pooling.

    The arguments are PyTorch's (``torch.nn.functional.avg_pool2d``), in its
    order; ``x=`` is accepted for ``input``.

    Parameters
    ----------
    input : ndarray, shape (N, C, H, W), float32 or float64 (alias ``x``)
    kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d` (padding is zero here).
    count_include_pad : bool
        Count padded positions in the divisor (PyTorch's default).
    divisor_override : int, optional
        Divide every window sum by this instead.
    rounding, backend, n_threads
        As in :func:`max_pool2d`.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Examples
    --------
    >>> import numpy as np, cyconv
    >>> cyconv.avg_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    x, geom = prepare_pool(input, kernel_size, stride=stride, padding=padding, dilation=1,
                           rounding=rounding, ceil_mode=ceil_mode, layer="avg_pool2d")
    count_include_pad, divisor_override = check_avg_options(count_include_pad, divisor_override)
    return run_avg_pool2d(kernels_for(AVG_POOL2D_KERNELS, backend, layer="AvgPool2D"), x, geom,
                          count_include_pad, divisor_override, n_threads)


def run_avg_pool2d(kernels, x, geom, count_include_pad, divisor_override, n_threads=None):
    """:func:`avg_pool2d` on a prepared input and checked options (:func:`check_avg_options`)."""
    return kernels.avg_pool2d_forward(x, geom, count_include_pad, divisor_override,
                                      resolve_num_threads(n_threads))


def run_avg_pool2d_backward(kernels, dy, x_shape, geom, count_include_pad, divisor_override,
                            n_threads=None):
    """:func:`avg_pool2d_backward` on a checked gradient."""
    return kernels.avg_pool2d_backward(dy, x_shape, geom, count_include_pad, divisor_override,
                                       resolve_num_threads(n_threads))


@_short_names(dy="grad_output", x="input")
def avg_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None, *,
                        rounding="exact", backend=None, n_threads=None):
    """Gradient of :func:`avg_pool2d` with respect to ``input``.

    ``grad_output`` (alias ``dy``) is the gradient with respect to the
    pooling's output; the other arguments are as passed to :func:`avg_pool2d`
    (alias ``x`` for ``input``).

    Returns
    -------
    dx : ndarray, shape of ``x``
    """
    x, geom = prepare_pool(input, kernel_size, stride=stride, padding=padding, dilation=1,
                           rounding=rounding, ceil_mode=ceil_mode, layer="avg_pool2d")
    count_include_pad, divisor_override = check_avg_options(count_include_pad, divisor_override)
    dy = check_grad_output(grad_output, x, x.shape[1], geom)
    return run_avg_pool2d_backward(kernels_for(AVG_POOL2D_KERNELS, backend, layer="AvgPool2D"),
                                   dy, x.shape, geom, count_include_pad, divisor_override,
                                   n_threads)

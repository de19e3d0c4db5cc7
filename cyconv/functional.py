"""Stateless operations on NCHW batches (float32 or float64, dtype preserved).

Every function validates and normalises its inputs once, resolves the window
geometry with :func:`cyconv.resolve_geometry` (the shape rule), and then
dispatches through the layer registry to a backend's kernels: ``backend=None``
follows the preference order (``cython`` first when it is built), a named
backend is used exactly or raises.  Inputs are never mutated; non-contiguous,
read-only and big-endian arrays are accepted (copied once when needed).
"""

from __future__ import annotations

import numpy as np

from ._registry import get_layer
from ._shapes import as_pair, check_rounding, resolve_geometry, winograd_serves
from ._threads import resolve_num_threads
from ._validation import as_float_array, check_nonempty, check_positive_int, check_shape

__all__ = [
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]


# -- shared preparation (also used by the layer classes) ----------------------

def _check_input(x, name="x"):
    x = as_float_array(x, name, ndim=4)
    check_nonempty(x, name)
    return x


def prepare_conv(x, w, b, *, stride, padding, dilation, groups, rounding, layer="conv2d"):
    """Validate a convolution's arrays and resolve its geometry."""
    x = _check_input(x)
    w = as_float_array(w, "w", ndim=4, dtype=x.dtype)
    check_nonempty(w, "w")
    groups = check_positive_int(groups, "groups")
    n, c, h, width = x.shape
    oc, c_per_group, kh, kw = w.shape
    if c % groups:
        raise ValueError(f"groups={groups} must divide the input channels C={c}")
    if oc % groups:
        raise ValueError(f"groups={groups} must divide the output channels w.shape[0]={oc}")
    if c_per_group * groups != c:
        raise ValueError(f"channel mismatch: x has C={c} channels but w.shape[1]*groups = "
                         f"{c_per_group}*{groups} = {c_per_group * groups}; w must have shape "
                         f"(OC, C/groups, KH, KW) = ({oc}, {c // groups}, {kh}, {kw})")
    if b is not None:
        b = as_float_array(b, "b", ndim=1, dtype=x.dtype)
        check_shape(b, (oc,), "b")
    geom = resolve_geometry((h, width), (kh, kw), stride=stride, padding=padding,
                            dilation=dilation, rounding=rounding, layer=layer)
    return x, w, b, groups, geom


def prepare_pool(x, kernel_size, *, stride, padding, dilation, rounding, ceil_mode, layer):
    """Validate a pooling input and resolve its geometry (``stride=None`` -> kernel size)."""
    x = _check_input(x)
    kernel = as_pair(kernel_size, "kernel_size")
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
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    if divisor_override is not None:
        divisor_override = check_positive_int(divisor_override, "divisor_override")
    return bool(count_include_pad), divisor_override


def _kernels(layer_name, backend):
    return get_layer(layer_name, backend).kernels


#: ``algorithm=`` values of the convolutions; a backend lists the ones it
#: implements in ``CONV2D_ALGORITHMS`` (a kernel set without it: "gemm").
CONV2D_ALGORITHMS = ("auto", "gemm", "winograd")


def check_algorithm(algorithm):
    """Validate ``algorithm`` on its own (layer constructors); returns it."""
    if not isinstance(algorithm, str) or algorithm not in CONV2D_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {CONV2D_ALGORITHMS}, got {algorithm!r}")
    return algorithm


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

def conv2d(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, rounding="exact",
           backend=None, n_threads=None, algorithm="auto"):
    """2-D convolution (cross-correlation, as in every deep-learning library).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    w : ndarray, shape (OC, C // groups, KH, KW), same dtype as ``x``
    b : ndarray, shape (OC,), optional
    stride, dilation : int or (int, int)
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
    groups : int
        Split channels into ``groups`` independent convolutions
        (``groups == C`` is a depthwise convolution).
    rounding : {"exact", "floor", "ceil"}
        How a non-integer output size is handled; "exact" raises
        :class:`cyconv.ShapeError` explaining the shape rule.
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
    x, w, b, groups, geom = prepare_conv(x, w, b, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups, rounding=rounding)
    kernels = _kernels("Conv2D", backend)
    return kernels.conv2d_forward(x, w, b, geom, groups, resolve_num_threads(n_threads),
                                  **conv_algorithm_options(algorithm, geom, kernels))


def conv2d_backward(dy, x, w, *, stride=1, padding=0, dilation=1, groups=1, rounding="exact",
                    backend=None, n_threads=None, algorithm="auto"):
    """Gradients of :func:`conv2d`.

    Parameters
    ----------
    dy : ndarray, shape (N, OC, OH, OW)
        Gradient of the loss with respect to the convolution's output.
    x, w, stride, padding, dilation, groups, rounding, backend, n_threads, algorithm
        As passed to :func:`conv2d`.

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
    x, w, _, groups, geom = prepare_conv(x, w, None, stride=stride, padding=padding,
                                         dilation=dilation, groups=groups, rounding=rounding)
    dy = check_grad_output(dy, x, w.shape[0], geom)
    kernels = _kernels("Conv2D", backend)
    return kernels.conv2d_backward(dy, x, w, geom, groups, resolve_num_threads(n_threads),
                                   **conv_algorithm_options(algorithm, geom, kernels))


# -- pooling -------------------------------------------------------------------

def max_pool2d(x, kernel_size, *, stride=None, padding=0, dilation=1, rounding="exact",
               ceil_mode=False, return_indices=False, backend=None, n_threads=None):
    """2-D max pooling.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int, pair, per-side pairs, "valid" or "same"
        Padded positions hold ``-inf``; at most half the kernel per side.
    dilation : int or (int, int)
    rounding : {"exact", "floor", "ceil"}
    ceil_mode : bool
        PyTorch's alias for ``rounding="ceil"``.
    return_indices : bool
        Also return the flat index ``h * W + w`` of each maximum in its
        (n, c) plane (int64), as PyTorch does.

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
    x, geom = prepare_pool(x, kernel_size, stride=stride, padding=padding, dilation=dilation,
                           rounding=rounding, ceil_mode=ceil_mode, layer="max_pool2d")
    kernels = _kernels("MaxPool2D", backend)
    y, indices = kernels.max_pool2d_forward(x, geom, resolve_num_threads(n_threads))
    return (y, indices) if return_indices else y


def max_pool2d_backward(dy, x, kernel_size, *, stride=None, padding=0, dilation=1,
                        rounding="exact", ceil_mode=False, indices=None, backend=None,
                        n_threads=None):
    """Gradient of :func:`max_pool2d` with respect to ``x``.

    ``indices`` (from ``return_indices=True``) skips recomputing the argmax;
    they are checked to lie inside the input plane.

    Returns
    -------
    dx : ndarray, shape of ``x``
    """
    x, geom = prepare_pool(x, kernel_size, stride=stride, padding=padding, dilation=dilation,
                           rounding=rounding, ceil_mode=ceil_mode, layer="max_pool2d")
    dy = check_grad_output(dy, x, x.shape[1], geom)
    kernels = _kernels("MaxPool2D", backend)
    threads = resolve_num_threads(n_threads)
    if indices is None:
        _, indices = kernels.max_pool2d_forward(x, geom, threads)
    else:
        indices = _check_indices(indices, dy.shape, x.shape[2] * x.shape[3])
    return kernels.max_pool2d_backward(dy, indices, x.shape, threads)


def _check_indices(indices, shape, plane_size):
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        raise TypeError("indices must be the int64 array returned by "
                        "max_pool2d(..., return_indices=True)")
    check_shape(indices, shape, "indices")
    if indices.size and (indices.min() < -1 or indices.max() >= plane_size):
        raise ValueError(f"indices must lie in [-1, {plane_size}) (flat offsets into an input "
                         f"plane); these were not produced by max_pool2d for this x")
    return np.ascontiguousarray(indices, dtype=np.int64)


def avg_pool2d(x, kernel_size, *, stride=None, padding=0, rounding="exact", ceil_mode=False,
               count_include_pad=True, divisor_override=None, backend=None, n_threads=None):
    """2-D average pooling.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
    kernel_size, stride, padding, rounding, ceil_mode
        As in :func:`max_pool2d` (padding is zero here).
    count_include_pad : bool
        Count padded positions in the divisor (PyTorch's default).
    divisor_override : int, optional
        Divide every window sum by this instead.

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
    x, geom = prepare_pool(x, kernel_size, stride=stride, padding=padding, dilation=1,
                           rounding=rounding, ceil_mode=ceil_mode, layer="avg_pool2d")
    count_include_pad, divisor_override = check_avg_options(count_include_pad, divisor_override)
    kernels = _kernels("AvgPool2D", backend)
    return kernels.avg_pool2d_forward(x, geom, count_include_pad, divisor_override,
                                      resolve_num_threads(n_threads))


def avg_pool2d_backward(dy, x, kernel_size, *, stride=None, padding=0, rounding="exact",
                        ceil_mode=False, count_include_pad=True, divisor_override=None,
                        backend=None, n_threads=None):
    """Gradient of :func:`avg_pool2d` with respect to ``x``.

    Returns
    -------
    dx : ndarray, shape of ``x``
    """
    x, geom = prepare_pool(x, kernel_size, stride=stride, padding=padding, dilation=1,
                           rounding=rounding, ceil_mode=ceil_mode, layer="avg_pool2d")
    count_include_pad, divisor_override = check_avg_options(count_include_pad, divisor_override)
    dy = check_grad_output(dy, x, x.shape[1], geom)
    kernels = _kernels("AvgPool2D", backend)
    return kernels.avg_pool2d_backward(dy, x.shape, geom, count_include_pad, divisor_override,
                                       resolve_num_threads(n_threads))

"""Backends: the kernels behind the layers.

A backend is a *kernel set*: an object (usually a module) with some of the
functions below, registered here by name (:data:`KERNEL_SETS`).  A layer
declares the kernels it needs (``Layer.kernels_needed``); a backend serves it
when it has every one of them (``hasattr``, as NetworkX's dispatcher checks).
The functional API and the layers choose a kernel set here, by name or by the
preference order (:func:`preference_order`); the layer registry builds on this
table and never the other way round.

Kernel contract (inputs already validated and normalised by the public
boundary: C-contiguous, native byte order, float32 or float64, one dtype per
call, shapes consistent with ``geom``, a :class:`cyconv._shapes.Geometry`):

``conv2d_forward(x, w, b, geom, groups, n_threads, algorithm=...) -> y``
    x (N, C, H, W), w (OC, C//groups, KH, KW), b (OC,) or None -> y (N, OC, OH, OW).
    ``algorithm`` is passed only when the caller names one (never "auto"), and
    only one the kernel set lists in its ``CONV2D_ALGORITHMS`` tuple (a kernel
    set without that attribute offers "gemm" and never receives the argument).
``conv2d_backward(dy, x, w, geom, groups, n_threads, need_dx=True, algorithm=...) -> (dx, dw, db)``
    db = dy.sum((0, 2, 3)); with ``need_dx=False`` dx is not computed and is
    returned as None (a network's first layer needs only dw and db).
``max_pool2d_forward(x, geom, n_threads) -> (y, indices)``
    indices (N, C, OH, OW) int64: flat offset ``h * W + w`` of the winning
    input element in its (n, c) plane; -1 if the window holds no input
    element.  Tie rule: the first maximum in row-major window order wins,
    a NaN counts as larger than any number (so NaN propagates), padding
    (-inf) never wins over an input element.
``max_pool2d_backward(dy, indices, x_shape, n_threads) -> dx``
``avg_pool2d_forward(x, geom, count_include_pad, divisor_override, n_threads) -> y``
``avg_pool2d_backward(dy, x_shape, geom, count_include_pad, divisor_override, n_threads) -> dx``
``relu_forward(x, n_threads) -> (y, positive)``
    y = max(x, 0) (NaN stays NaN, -0.0 becomes +0.0), positive = x > 0 (bool)
``relu_backward(dout, positive, n_threads) -> dx``
    dx = dout * positive (NumPy's product: inf or NaN times False gives NaN)

Positions outside the input are padding: zero for convolution and average
pooling, ``-inf`` for max pooling.  ``geom.out_h``/``out_w`` may need windows
that reach past ``pad_bottom``/``pad_right`` (ceil rounding); those positions
are padding too.  Average pooling follows PyTorch's divisor rule: with
``count_include_pad`` the divisor counts the window clipped to the padded
extent ``[-pad_top, H + pad_bottom)``, otherwise only input elements;
``divisor_override`` replaces both.
"""

from __future__ import annotations

from . import numpy_backend
from ._kernel_sets import (
    BUILTIN_BACKENDS,
    BackendError,
    BackendFallbackWarning,
    KernelSets,
    SerialBuildWarning,
    environment_backends,
    explicit_backend_error,
    ordered,
    pop_preference,
    preference_order,
    push_preference,
)

try:
    from . import cython_backend
except ImportError as _exc:
    cython_backend = None
    _CYTHON_ERROR = f"the compiled extension failed to import ({_exc})"

__all__ = ["BUILTIN_BACKENDS", "BackendError", "BackendFallbackWarning", "KERNEL_SETS",
           "KernelSets", "SerialBuildWarning", "environment_backends", "explicit_backend_error",
           "kernels_for", "ordered",
           "pop_preference", "preference_order", "push_preference"]

#: The kernel sets: ``numpy`` always, ``cython`` where the extension loads.
KERNEL_SETS = KernelSets()
KERNEL_SETS.add("numpy", numpy_backend)
if cython_backend is None:
    KERNEL_SETS.unavailable["cython"] = _CYTHON_ERROR
else:
    KERNEL_SETS.add("cython", cython_backend)


def kernels_for(needed, backend=None, *, layer):
    """The kernel set that serves ``needed`` (see :meth:`KernelSets.select`)."""
    return KERNEL_SETS.select(needed, backend, layer=layer)[1]



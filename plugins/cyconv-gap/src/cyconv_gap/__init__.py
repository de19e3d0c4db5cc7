"""cyconv-gap: global average pooling for cyconv, compiled (Cython + OpenMP) and in NumPy.

An example *compiled* cyconv plugin.  Installing it adds one layer name,
``GlobalAvgPool2D`` ((N, C, H, W) -> (N, C), the mean over each feature map),
under two backends:

* ``"cython"``: :class:`GlobalAvgPool2DCython`, a kernel that ``cimport``\\ s
  cyconv's public ``.pxd`` declarations (``floating_t``, the OpenMP guard) and
  runs ``prange`` without the GIL on ``cyconv.get_num_threads()`` threads;
* ``"numpy"``: :class:`GlobalAvgPool2DNumpy`, the reference implementation the
  compiled one is tested against.

Like cyconv's own conv/pool layers, a lookup without a backend prefers
``cython``::

    >>> import cyconv                                     # doctest: +SKIP
    >>> gap = cyconv.create_layer("GlobalAvgPool2D")      # the compiled one
    >>> ref = cyconv.create_layer("GlobalAvgPool2D", backend="numpy")

cyconv finds the plugin through the entry point in ``pyproject.toml``::

    [project.entry-points."cyconv.layers"]
    gap = "cyconv_gap:register"
"""

from __future__ import annotations

import warnings

import numpy as np

import cyconv

try:
    from . import _gap
except ImportError as exc:  # pragma: no cover - a broken build; the numpy layer still works
    _gap = None
    _GAP_IMPORT_ERROR = str(exc)
else:
    _GAP_IMPORT_ERROR = None

__version__ = "0.1.0"
__all__ = ["GlobalAvgPool2DNumpy", "GlobalAvgPool2DCython", "register", "openmp_enabled"]


def openmp_enabled():
    """True if the compiled kernel was built with OpenMP (False if it is missing)."""
    return _gap is not None and _gap.openmp_enabled()


def _as_float(value, name):
    """float32/float64 array (ints and bools become float64), like cyconv's layers."""
    value = np.asarray(value)
    if value.dtype.kind in "iub":
        value = value.astype(np.float64)
    if value.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {value.dtype}")
    return value


def _native_contiguous(value):
    """C-contiguous, native byte order: what the compiled kernel reads."""
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))


def _as_nchw(value, name):
    value = _as_float(value, name)
    if value.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {value.shape}")
    if value.shape[2] == 0 or value.shape[3] == 0:
        raise ValueError(f"{name} must have H, W >= 1 to average over, got shape {value.shape}")
    return _native_contiguous(value)


def _cases():
    """``check_cases`` for cyconv.testing: ({}, (C, H, W)) with small random sizes."""
    from hypothesis import strategies as st

    return st.tuples(st.just({}), st.tuples(st.integers(1, 4), st.integers(1, 6),
                                            st.integers(1, 6)))


class _GlobalAvgPool2DBase(cyconv.Layer):
    """(N, C, H, W) -> (N, C): ``y[n, c] = mean(x[n, c, :, :])``.

    No parameters.  ``backward(dout)`` spreads ``dout[n, c] / (H*W)`` evenly
    over the (H, W) window.  float32 stays float32 (sums are accumulated in
    float64 in both backends).
    """

    # How cyconv.testing.check_layer should exercise the layer (spec attributes):
    has_params = False
    shape_preserving = False
    check_input_shape = (3, 4, 5)                    # per-sample (C, H, W)
    check_shape_rule = staticmethod(lambda kwargs, shape: (shape[0],))
    check_cases = staticmethod(_cases)               # drawn (kwargs, (C, H, W)) pairs
    invalid_params = [{"kernel_size": 2}]            # it takes no options

    def __init__(self, *, backend=None):
        super().__init__()

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool2D expects per-sample shape (C, H, W), "
                             f"got {input_shape}")
        return (input_shape[0],)

    def forward(self, x, train=True):
        x = _as_nchw(x, "x")
        self._shape, self._dtype = x.shape, x.dtype
        return self._forward(x)

    def backward(self, dout):
        dout = _as_float(dout, "dout")
        n, c = self._shape[:2]
        if dout.shape != (n, c):
            raise ValueError(f"dout must have shape {(n, c)} (the forward output), "
                             f"got {dout.shape}")
        return self._backward(_native_contiguous(dout))


class GlobalAvgPool2DNumpy(_GlobalAvgPool2DBase):
    """Global average pooling, NumPy reference (see :class:`_GlobalAvgPool2DBase`)."""

    name, backend = "GlobalAvgPool2D", "numpy"  # also set by registration

    def _forward(self, x):
        return x.mean(axis=(2, 3), dtype=np.float64).astype(x.dtype, copy=False)

    def _backward(self, dout):
        n, c, h, w = self._shape
        share = (dout.astype(np.float64) / (h * w)).astype(dout.dtype, copy=False)
        return np.ascontiguousarray(np.broadcast_to(share[:, :, None, None], (n, c, h, w)))


#: Elements per thread below which extra threads cost more than they save.
MIN_WORK_PER_THREAD = 16384


def _threads_for(size):
    """cyconv's thread setting (``cyconv.get_num_threads()``: set_num_threads,
    CYCONV_NUM_THREADS, affinity, OMP_NUM_THREADS), capped so that each thread
    gets at least MIN_WORK_PER_THREAD elements.  Each feature map is summed by
    one thread in a fixed order, so the result does not depend on the count."""
    return max(1, min(cyconv.get_num_threads(), size // MIN_WORK_PER_THREAD))


class GlobalAvgPool2DCython(_GlobalAvgPool2DBase):
    """Global average pooling, compiled: OpenMP over the N*C feature maps."""

    name, backend = "GlobalAvgPool2D", "cython"  # also set by registration

    def _forward(self, x):
        n, c, h, w = x.shape
        out = np.empty(n * c, dtype=x.dtype)
        _gap.gap_forward(x.reshape(n * c, h * w), out, _threads_for(x.size))
        return out.reshape(n, c)

    def _backward(self, dout):
        n, c, h, w = self._shape
        dx = np.empty((n * c, h * w), dtype=dout.dtype)
        _gap.gap_backward(dout.reshape(n * c), dx, _threads_for(dx.size))
        return dx.reshape(n, c, h, w)


def register(registry):
    """Entry point (group ``cyconv.layers``): cyconv calls this with its plugin registry."""
    registry.register("GlobalAvgPool2D", "numpy", GlobalAvgPool2DNumpy)
    if _gap is None:
        warnings.warn(f"cyconv-gap: the compiled kernel failed to import ({_GAP_IMPORT_ERROR}); "
                      f"only the numpy backend of GlobalAvgPool2D is registered. Reinstall with "
                      f"`pip install --no-build-isolation ./plugins/cyconv-gap`.",
                      cyconv.PluginLoadWarning, stacklevel=2)
        return
    registry.register("GlobalAvgPool2D", "cython", GlobalAvgPool2DCython)

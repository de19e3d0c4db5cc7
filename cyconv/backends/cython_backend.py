"""The compiled kernels (Cython + OpenMP), behind the kernel contract of :mod:`cyconv.backends`.

Each function allocates its outputs and hands them to a kernel in
:mod:`cyconv_ext._conv`, :mod:`cyconv_ext._pool` or :mod:`cyconv_ext._elementwise`
(ReLU); ``adam_update`` serves :class:`cyconv.optim.Adam` from
:mod:`cyconv_ext._optim` (see the "Design:" comment
at the top of each for loop order, parallelisation and workspace).  Inputs are
assumed validated by the public boundary (see :mod:`cyconv.backends`);
``np.ascontiguousarray`` is applied defensively (a no-op for conforming
arrays).  The modules come in one build per CPU variant; the import below
takes the one :mod:`cyconv._cpu` selected.  ``n_threads`` is a resolved positive int.

Convolution calls single-threaded BLAS GEMMs from inside its OpenMP threads,
so BLAS must not start threads of its own: every conv call runs under a
one-thread BLAS limit from a cached :class:`threadpoolctl.ThreadpoolController`
(skipped when the BLAS libraries already run one thread), shared by
concurrent callers: the first in sets it, the last out restores it.
"""

from __future__ import annotations

import threading

import numpy as np

from .._cpu import import_kernels

# The build of those modules that this CPU runs best (baseline, avx2 or
# avx512; CYCONV_CPU_FEATURES overrides): see cyconv/_cpu.py.
_conv, _elementwise, _optim, _pool = import_kernels("_conv", "_elementwise", "_optim", "_pool")

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "relu_forward",
    "relu_backward",
]

_controller = None
_EMPTY = {np.dtype(np.float32): np.empty(0, np.float32),
          np.dtype(np.float64): np.empty(0, np.float64)}
# Concurrent conv calls (the kernels release the GIL) share one BLAS limit:
# the first caller in sets it, the last one out restores the original.
_guard_lock = threading.Lock()
_guard_depth = 0
_guard_limit = None


class _BlasSingleThread:
    """Context manager: BLAS libraries limited to one thread (cheap when already so)."""

    __slots__ = ()

    def __enter__(self):
        global _controller, _guard_depth, _guard_limit
        with _guard_lock:
            _guard_depth += 1
            if _guard_depth == 1:
                try:
                    if _controller is None:
                        from threadpoolctl import ThreadpoolController
                        _controller = ThreadpoolController().select(user_api="blas")
                    if any(lib.num_threads != 1 for lib in _controller.lib_controllers):
                        _guard_limit = _controller.limit(limits=1)
                except Exception:  # threadpoolctl missing or failing: run anyway
                    _guard_limit = None
        return self

    def __exit__(self, *exc):
        global _guard_depth, _guard_limit
        with _guard_lock:
            _guard_depth -= 1
            if _guard_depth == 0 and _guard_limit is not None:
                _guard_limit.restore_original_limits()
                _guard_limit = None
        return False


def _blas_guard():
    return _BlasSingleThread()


# Below this much work (multiply-adds or elements visited) per thread, waking
# another OpenMP thread costs more than it saves -- on a loaded machine a
# parallel region can wait milliseconds for a core.  Results do not depend on
# the thread count, so the cap changes speed only.
WORK_PER_THREAD = 1 << 16


def _useful_threads(n_threads, work):
    return int(max(1, min(int(n_threads), work // WORK_PER_THREAD)))


def _conv_work(x, w, geom):
    return x.shape[0] * w.shape[0] * geom.out_h * geom.out_w * w.shape[1] * w[0, 0].size


def _pool_work(shape, geom):
    return shape[0] * shape[1] * geom.out_h * geom.out_w * geom.kernel_h * geom.kernel_w


def conv2d_forward(x, w, b, geom, groups=1, n_threads=1):
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    y = np.empty((x.shape[0], w.shape[0], geom.out_h, geom.out_w), dtype=x.dtype)
    bias = _EMPTY[x.dtype] if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    with _blas_guard():
        _conv.conv2d_forward(x, w, bias, y, geom, int(groups), b is not None,
                             _useful_threads(n_threads, _conv_work(x, w, geom)))
    return y


def conv2d_backward(dy, x, w, geom, groups=1, n_threads=1, need_dx=True):
    x = np.ascontiguousarray(x)
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    w = np.ascontiguousarray(w, dtype=x.dtype)
    dx = np.empty_like(x) if need_dx else np.empty((0, 0, 0, 0), dtype=x.dtype)
    dw = np.empty_like(w)
    db = np.empty(w.shape[0], dtype=x.dtype)
    work = (2 if need_dx else 1) * _conv_work(x, w, geom)
    with _blas_guard():
        _conv.conv2d_backward(dy, x, w, dx, dw, db, geom, int(groups),
                              _useful_threads(n_threads, work), bool(need_dx))
    return (dx if need_dx else None), dw, db


def max_pool2d_forward(x, geom, n_threads=1):
    x = np.ascontiguousarray(x)
    shape = (x.shape[0], x.shape[1], geom.out_h, geom.out_w)
    y = np.empty(shape, dtype=x.dtype)
    indices = np.empty(shape, dtype=np.int64)
    _pool.max_pool2d_forward(x, y, indices, geom,
                             _useful_threads(n_threads, _pool_work(shape, geom)))
    return y, indices


def max_pool2d_backward(dy, indices, x_shape, n_threads=1):
    dy = np.ascontiguousarray(dy)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype)
    _pool.max_pool2d_backward(dy, indices, dx, _useful_threads(n_threads, dx.size))
    return dx


def avg_pool2d_forward(x, geom, count_include_pad=True, divisor_override=None, n_threads=1):
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], x.shape[1], geom.out_h, geom.out_w), dtype=x.dtype)
    div = _pool.avg_divisor(geom, bool(count_include_pad), divisor_override, x.dtype)
    _pool.avg_pool2d_forward(x, y, div, geom,
                             _useful_threads(n_threads, _pool_work(y.shape, geom)))
    return y


def avg_pool2d_backward(dy, x_shape, geom, count_include_pad=True, divisor_override=None,
                        n_threads=1):
    dy = np.ascontiguousarray(dy)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype)
    div = _pool.avg_divisor(geom, bool(count_include_pad), divisor_override, dy.dtype)
    _pool.avg_pool2d_backward(dy, dx, div, geom,
                              _useful_threads(n_threads, _pool_work(dy.shape, geom)))
    return dx


def relu_forward(x, n_threads=1):
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    positive = np.empty(x.shape, dtype=np.bool_)
    _elementwise.relu_forward(x.reshape(-1), y.reshape(-1), positive.reshape(-1).view(np.uint8),
                              _useful_threads(n_threads, x.size))
    return y, positive


def relu_backward(dout, positive, n_threads=1):
    dout = np.ascontiguousarray(dout)
    positive = np.ascontiguousarray(positive, dtype=np.bool_)
    dx = np.empty_like(dout)
    _elementwise.relu_backward(dout.reshape(-1), positive.reshape(-1).view(np.uint8),
                               dx.reshape(-1), _useful_threads(n_threads, dout.size))
    return dx


def adam_update(p, g, m, v, lr_t, beta1, beta2, eps, n_threads=1):
    """One fused Adam step, in place, bitwise NumPy's (see ``cyconv_ext/_optim.pyx``).

    The caller passes C-contiguous, writeable ``p``, ``m``, ``v`` and ``g``
    of one float dtype.
    """
    _optim.adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                       float(lr_t), float(beta1), float(beta2), float(eps),
                       _useful_threads(n_threads, p.size))

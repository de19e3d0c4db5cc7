"""Pooling tables computed from the geometry alone, shared by the backends.

The one owner of the average-pool divisor (PyTorch's rule, the contract in
:mod:`cyconv.backends`): the NumPy reference divides by it, and the compiled
kernels receive it.  :func:`pool_windows` is the compiled kernels' per-call
preparation (clipped window bounds, the interior block, tap offsets): built
here with NumPy so that ``cyconv_ext/_pool.pyx`` only loops over read-only
tables.  Every table is O(OH + OW + KH*KW), never per output element.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from cyconv._shapes import Geometry

__all__ = ["PoolWindows", "avg_divisor", "clip_table", "pool_windows"]


def avg_divisor(geom, count_include_pad, divisor_override, dtype):
    """Per-output divisor (OH, OW) in ``dtype``, C-contiguous: PyTorch's rule.

    With ``count_include_pad`` the window clipped to the padded extent
    ``[-pad_before, size + pad_after)``, otherwise to the input;
    ``divisor_override`` replaces both.
    """
    if divisor_override is not None:
        return np.full((geom.out_h, geom.out_w), divisor_override, dtype=dtype)

    def extent(out, stride, pad_before, pad_after, k, size):
        start = np.arange(out) * stride - pad_before
        end = np.minimum(start + k, size + pad_after)
        padded = end - start
        inside = np.minimum(end, size) - np.maximum(start, 0)
        return padded, inside

    ph, ih = extent(geom.out_h, geom.stride_h, geom.pad_top, geom.pad_bottom, geom.kernel_h,
                    geom.in_h)
    pw, iw = extent(geom.out_w, geom.stride_w, geom.pad_left, geom.pad_right, geom.kernel_w,
                    geom.in_w)
    counts = np.outer(ph, pw) if count_include_pad else np.outer(ih, iw)
    return np.ascontiguousarray(counts.astype(dtype))


def clip_table(out, stride, pad, dilation, kernel, size):
    """Window bounds along one axis, an (3, out) ``intp`` array.

    Row 0: each output's first input coordinate (may be < 0); rows 1 and 2:
    the half-open range ``[lo, hi)`` of kernel taps that land inside
    ``[0, size)`` (``lo = hi = 0`` when none does).
    """
    start = np.arange(out, dtype=np.int64) * stride - pad
    # first tap t with start + t*dilation >= 0, one past the last with < size
    lo = np.where(start >= 0, 0, (-start + dilation - 1) // dilation)
    hi = np.where(start <= size - 1, (size - 1 - start) // dilation + 1, 0)
    lo = np.minimum(lo, kernel)
    hi = np.minimum(hi, kernel)
    empty = lo >= hi
    lo[empty] = 0
    hi[empty] = 0
    return np.ascontiguousarray(np.stack([start, lo, hi]), dtype=np.intp)


def _full_range(table, kernel):
    """[first, last + 1) of the outputs whose every tap is inside (a contiguous
    range, since window starts grow with the output index); (0, 0) if none."""
    full = np.nonzero((table[1] == 0) & (table[2] == kernel))[0]
    return (int(full[0]), int(full[-1]) + 1) if full.size else (0, 0)


class PoolWindows(NamedTuple):
    """What the compiled pooling kernels read besides the arrays (all read-only).

    ``rows`` / ``cols``: :func:`clip_table` of each axis; ``interior``:
    ``(oy_begin, oy_end, ox_begin, ox_end)``, the block of outputs whose
    window lies wholly inside the input; ``tap_offsets``: flat input offset
    of each kernel tap in row-major tap order (KH*KW entries; one 0 when the
    interior is empty, where no offset is read).
    """

    rows: np.ndarray
    cols: np.ndarray
    interior: tuple
    tap_offsets: np.ndarray


def pool_windows(geom):
    """The :class:`PoolWindows` of ``geom`` (read-only arrays).

    Cached per :class:`~cyconv._shapes.Geometry` (hashable, immutable): a
    layer pools one geometry call after call, and building the tables costs
    about as much as pooling a small batch.
    """
    if isinstance(geom, Geometry):
        return _cached_pool_windows(geom)
    return _pool_windows(geom)


def _pool_windows(geom):
    rows = clip_table(geom.out_h, geom.stride_h, geom.pad_top, geom.dilation_h,
                      geom.kernel_h, geom.in_h)
    cols = clip_table(geom.out_w, geom.stride_w, geom.pad_left, geom.dilation_w,
                      geom.kernel_w, geom.in_w)
    interior = _full_range(rows, geom.kernel_h) + _full_range(cols, geom.kernel_w)
    tap_offsets = np.zeros(1, dtype=np.intp)
    if interior[0] < interior[1] and interior[2] < interior[3]:
        # bounded by H*W: an interior window's taps all lie inside the input
        tap_offsets = (np.arange(geom.kernel_h, dtype=np.intp)[:, None]
                       * (geom.dilation_h * geom.in_w)
                       + np.arange(geom.kernel_w, dtype=np.intp)[None, :]
                       * geom.dilation_w).ravel()
    for table in (rows, cols, tap_offsets):
        table.flags.writeable = False
    return PoolWindows(rows, cols, interior, tap_offsets)


_cached_pool_windows = functools.lru_cache(maxsize=256)(_pool_windows)

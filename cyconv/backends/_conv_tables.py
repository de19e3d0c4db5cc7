"""Convolution tables computed from the geometry alone, for the compiled kernels.

:func:`tap_column_ranges` is ``cyconv_ext/_conv.pyx``'s per-call preparation:
for every kernel column, the output columns whose tap lies inside the input.
Built here, by O(KW) NumPy arithmetic (never a scan over output columns: a
1x31623 kernel once spent seconds in one), so that the kernel only loops.
Cached per geometry, as the pooling tables are: a layer convolves one shape
call after call, and building the table cost a batch-1 convolution about a
fifth of its time.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["ox_ranges", "tap_column_ranges"]


def ox_ranges(W, OW, KW, SW, PL, DW):
    """Per kernel column kx: output columns ``[lo, hi)`` with ``0 <= ox*SW - PL +
    kx*DW < W`` (``lo = hi = 0`` where none), as two C-contiguous intp arrays."""
    if KW < 0 or SW < 1 or DW < 1:
        raise ValueError(f"need KW >= 0, SW >= 1 and DW >= 1, got {KW}, {SW}, {DW}")
    offset = np.arange(KW, dtype=np.int64) * DW - PL   # ix = ox*SW + offset
    first = np.maximum(-(offset // SW), 0)              # ceil(-offset / SW), floored at 0
    last = np.minimum((W - 1 - offset) // SW, OW - 1)
    some = first <= last
    lo = np.where(some, first, 0).astype(np.intp)
    hi = np.where(some, last + 1, 0).astype(np.intp)
    return lo, hi


@functools.lru_cache(maxsize=256)
def _read_only_ox_ranges(W, OW, KW, SW, PL, DW):
    lo, hi = ox_ranges(W, OW, KW, SW, PL, DW)
    lo.flags.writeable = hi.flags.writeable = False
    return lo, hi


def tap_column_ranges(geom, in_w):
    """:func:`ox_ranges` of a :class:`~cyconv._shapes.Geometry` on inputs ``in_w`` wide
    (read-only arrays, cached)."""
    return _read_only_ox_ranges(int(in_w), geom.out_w, geom.kernel_w, geom.stride_w,
                                geom.pad_left, geom.dilation_w)

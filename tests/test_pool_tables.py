"""The pooling tables built in Python for the compiled kernels (cyconv/backends/_pool_tables.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cyconv._shapes import resolve_geometry
from cyconv.backends._pool_tables import clip_table, pool_windows


def scanned_table(out, stride, pad, dilation, kernel, size):
    """The definition: each output's first input coordinate and the half-open
    range of taps whose input coordinate lies in [0, size) (0, 0 if none)."""
    table = np.zeros((3, out), dtype=np.intp)
    for o in range(out):
        start = o * stride - pad
        inside = [t for t in range(kernel) if 0 <= start + t * dilation < size]
        table[:, o] = (start, inside[0], inside[-1] + 1) if inside else (start, 0, 0)
    return table


@pytest.mark.parametrize("stride, pad, dilation, kernel, size",
                         list(itertools.product((1, 2, 3), (0, 1, 4), (1, 2), (1, 2, 5), (1, 3, 8))))
def test_clip_table_matches_the_scan(stride, pad, dilation, kernel, size):
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 2  # one past: a window in padding
    out = max(out, 1)
    np.testing.assert_array_equal(clip_table(out, stride, pad, dilation, kernel, size),
                                  scanned_table(out, stride, pad, dilation, kernel, size))


def test_windows_interior_and_tap_offsets():
    geom = resolve_geometry((7, 9), (3, 2), stride=(2, 1), padding=1, dilation=(1, 2),
                            rounding="floor", max_pool_padding=True)
    windows = pool_windows(geom)
    oy0, oy1, ox0, ox1 = windows.interior
    for oy, ox in itertools.product(range(geom.out_h), range(geom.out_w)):
        rows = [oy * 2 - 1 + ky for ky in range(3)]
        cols = [ox - 1 + 2 * kx for kx in range(2)]
        whole = all(0 <= r < 7 for r in rows) and all(0 <= c < 9 for c in cols)
        assert whole == (oy0 <= oy < oy1 and ox0 <= ox < ox1), (oy, ox)
    assert windows.tap_offsets.tolist() == [0, 2, 9, 11, 18, 20]


def test_windows_are_cached_and_read_only():
    geom = resolve_geometry((12, 12), 2, stride=2, rounding="floor", max_pool_padding=True)
    windows = pool_windows(geom)
    assert pool_windows(geom) is windows
    for table in (windows.rows, windows.cols, windows.tap_offsets):
        with pytest.raises(ValueError, match="read-only"):
            table[0] = 1


def test_kernel_rejects_tables_of_another_geometry():
    _pool = pytest.importorskip("cyconv_ext._pool", reason="the compiled backend is not built")
    geom = resolve_geometry((8, 8), 3, stride=1, rounding="floor", max_pool_padding=True)
    other = resolve_geometry((9, 8), 3, stride=1, rounding="floor", max_pool_padding=True)
    x = np.zeros((1, 1, 8, 8))
    y = np.empty((1, 1, geom.out_h, geom.out_w))
    with pytest.raises(ValueError, match="pool_windows"):
        _pool.max_pool2d_forward(x, y, np.empty(y.shape, np.int64), geom, pool_windows(other), 1)
    with pytest.raises(ValueError, match="pool_windows"):
        _pool.avg_pool2d_forward(x, y, np.ones(y.shape[2:]), geom, pool_windows(other), 1)

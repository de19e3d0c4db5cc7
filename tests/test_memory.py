"""Resident memory stays flat over many conv/pool forward+backward calls.

A leak in a compiled kernel (a workspace not freed on some path, a reference
kept to an output) shows up as growth of the resident set size, read from
/proc/self/statm (no extra dependency).  The run is in a child process so the
measurement is not disturbed by whatever else the test session allocated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="needs /proc/self/statm (Linux)")

CHILD = textwrap.dedent("""
    import gc, os, sys
    import numpy as np
    import cyconv

    backend, calls = sys.argv[1], int(sys.argv[2])
    rounds = calls // 8  # step() makes 8 forward/backward calls
    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    x32 = x.astype(np.float32)

    def step(i):
        xx = x if i % 2 else x32
        ww = w.astype(xx.dtype)
        # mostly one thread (fast even on a loaded 2-core CI box), every 32nd
        # round on all cores so the OpenMP path is covered too
        kw = dict(backend=backend, n_threads=None if i % 32 == 0 else 1)
        y = cyconv.conv2d(xx, ww, b.astype(xx.dtype), padding=1, **kw)
        cyconv.conv2d_backward(y, xx, ww, padding=1, **kw)
        m, idx = cyconv.max_pool2d(xx, 2, return_indices=True, **kw)
        cyconv.max_pool2d_backward(m, xx, 2, indices=idx, **kw)
        cyconv.max_pool2d_backward(m, xx, 2, **kw)
        a = cyconv.avg_pool2d(xx, 3, stride=2, padding=1, rounding="ceil", **kw)
        cyconv.avg_pool2d_backward(a, xx, 3, stride=2, padding=1, rounding="ceil", **kw)
        try:  # error paths must not leak either
            cyconv.conv2d(xx, ww[:, :2], **kw)
        except ValueError:
            pass

    for i in range(300):  # warm up: allocator arenas, BLAS buffers, thread pools
        step(i)
    gc.collect()
    before = rss()
    for i in range(rounds):
        step(i)
    gc.collect()
    after = rss()
    print(before, after)
""")


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_rss_flat_over_10000_calls(backend):
    """10,000 forward/backward calls (after 2,400 warm-up calls): < 5 MB growth."""
    if backend == "cython" and "cython" not in __import__("cyconv").list_backends():
        pytest.skip("compiled backend not built")
    calls = 10000 if backend == "cython" else 4000
    proc = subprocess.run([sys.executable, "-c", CHILD, backend, str(calls)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = map(int, proc.stdout.split())
    growth = after - before
    assert growth < 5 * 2**20, (f"RSS grew by {growth / 2**20:.2f} MiB over {calls} "
                                f"forward/backward calls ({backend})")

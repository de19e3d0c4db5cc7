"""The conv kernels' per-kernel-column output ranges (``ox_ranges`` in
``cyconv/backends/_conv_tables.py``, the kernels' table), computed arithmetically
(issue 12, "Also"; moved out of ``_conv.pyx`` by issue 13).

They used to come from a Python loop over kernel columns, each scanning every
output column with NumPy: a 1x31623 kernel spent ~10 s (forward) and ~15 s
(backward) there before its workspace could not be allocated.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyconv.backends._conv_tables import ox_ranges

_conv = pytest.importorskip("cyconv_ext._conv", reason="the compiled backend is not built")


def scanned_ranges(W, OW, KW, SW, PL, DW):
    """The definition: for kernel column kx, the first and one-past-last output
    column ox whose input column ox*SW - PL + kx*DW lies in [0, W)."""
    ox = np.arange(OW, dtype=np.int64)
    lo = np.zeros(KW, dtype=np.intp)
    hi = np.zeros(KW, dtype=np.intp)
    for kx in range(KW):
        ix = ox * SW - PL + kx * DW
        inside = np.nonzero((ix >= 0) & (ix < W))[0]
        if inside.size:
            lo[kx], hi[kx] = inside[0], inside[-1] + 1
    return lo, hi


def _check(W, OW, KW, SW, PL, DW):
    lo, hi = ox_ranges(W, OW, KW, SW, PL, DW)
    want_lo, want_hi = scanned_ranges(W, OW, KW, SW, PL, DW)
    assert lo.dtype == np.intp and hi.dtype == np.intp
    assert np.array_equal(lo, want_lo) and np.array_equal(hi, want_hi), (W, OW, KW, SW, PL, DW)


def test_ranges_match_the_scan_on_every_small_geometry():
    # PL < 0 is the transposed geometry of the stride-1 backward (DW*(KW-1) - PL)
    for geometry in itertools.product(range(1, 6), range(0, 7), range(1, 5), range(1, 4),
                                      range(-3, 5), range(1, 4)):
        _check(*geometry)


@settings(max_examples=settings.default.max_examples * 4, deadline=None)
@given(W=st.integers(1, 5000), OW=st.integers(0, 400), KW=st.integers(1, 40),
       SW=st.integers(1, 300), PL=st.integers(-3000, 3000), DW=st.integers(1, 300))
def test_ranges_match_the_scan(W, OW, KW, SW, PL, DW):
    _check(W, OW, KW, SW, PL, DW)


LONG_KERNEL = '''
import json, resource, time
import numpy as np, cyconv
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30),) * 2)
x = np.ones((1, 1, 1, 31623), np.float32)
w = np.ones((1, 1, 1, 31623), np.float32)
pad = ((0, 0), (15811, 15811))
results = {}
for call in ("forward", "backward"):
    start = time.perf_counter()
    try:
        if call == "forward":
            cyconv.conv2d(x, w, padding=pad, algorithm="gemm", n_threads=1)
        else:
            cyconv.conv2d_backward(np.ones((1, 1, 1, 31623), np.float32), x, w, padding=pad,
                                   algorithm="gemm", n_threads=1)
        outcome = "computed"
    except MemoryError as exc:
        outcome = "MemoryError: " + str(exc)
    results[call] = [outcome, time.perf_counter() - start]
print(json.dumps(results))
'''


def test_finding_a_1x31623_kernel_is_refused_at_once():
    """A 1x31623 kernel over a 31623-wide padded row (31623 output columns):
    its one-row im2col block is 4 GB, more than the 1 GiB of address space
    the child may add, so the call must end in MemoryError (or compute) --
    not after the ~10 s (forward) / ~15 s (backward) the range loop took."""
    out = subprocess.run([sys.executable, "-c", LONG_KERNEL], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for call, (outcome, seconds) in results.items():
        assert outcome == "computed" or outcome.startswith("MemoryError"), (call, outcome)
        # not a speed measurement: a bound far below the old loop's cost, to
        # catch a per-call cost that grows with the kernel width in Python
        assert seconds < 5, (call, outcome, seconds)

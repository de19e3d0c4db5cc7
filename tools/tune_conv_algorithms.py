"""Measure where Winograd beats im2col+GEMM, per pass, to set the "auto" rule.

    python tools/tune_conv_algorithms.py [--threads 2] [--rounds 7] [--quick]

For 3x3, stride-1, padding-1 convolutions over a grid of channel counts
(in = out), output sizes and batch sizes, both dtypes, it times on the compiled
backend, interleaved in rounds (a slow spell lands on both algorithms alike):
the forward pass, the weight gradient alone (``need_dx=False``) and the whole
backward, each by ``gemm`` and by ``winograd``, and prints gemm/winograd
ratios (> 1: Winograd faster) per pass; the input gradient's ratio is that
of (backward - weight gradient).  ``cyconv.backends.cython_backend``'s
``winograd_pays`` rule states the crossovers this table chose; rerun it on a
quiet machine (the benchmark's load warning applies) after a kernel change.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

from cyconv._shapes import resolve_geometry
from cyconv.backends import cython_backend as cb

CHANNELS = (8, 16, 32, 64, 128, 256)
SIZES = (7, 14, 28, 56)
BATCHES = (1, 16)
QUICK = dict(CHANNELS=(16, 64, 256), SIZES=(7, 28), BATCHES=(16,))


def passes(n, c, size, dtype, threads):
    """``{(pass, algorithm): call}`` for one shape."""
    rng = np.random.default_rng(0)
    geom = resolve_geometry((size, size), 3, padding=1)
    x = rng.standard_normal((n, c, size, size)).astype(dtype)
    w = rng.standard_normal((c, c, 3, 3)).astype(dtype)
    dy = rng.standard_normal((n, c, size, size)).astype(dtype)
    calls = {}
    for alg in ("gemm", "winograd"):
        calls["fwd", alg] = lambda a=alg: cb.conv2d_forward(x, w, None, geom, 1, threads, a)
        calls["dw", alg] = lambda a=alg: cb.conv2d_backward(dy, x, w, geom, 1, threads, False, a)
        calls["bwd", alg] = lambda a=alg: cb.conv2d_backward(dy, x, w, geom, 1, threads, True, a)
    return calls


def interleaved_medians(calls, rounds):
    for fn in calls.values():
        fn()
    times = {key: [] for key in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(t) * 1e3 for key, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else dict(CHANNELS=CHANNELS, SIZES=SIZES, BATCHES=BATCHES)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.threads} threads; "
          f"ratio = gemm ms / winograd ms (> 1: Winograd faster)")
    print("| dtype | N | C | size | fwd | dx | dW | gemm fwd ms |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        for n in grid["BATCHES"]:
            for c in grid["CHANNELS"]:
                for size in grid["SIZES"]:
                    ms = interleaved_medians(passes(n, c, size, dtype, args.threads),
                                             args.rounds)
                    dx = {a: max(1e-6, ms["bwd", a] - ms["dw", a]) for a in ("gemm", "winograd")}
                    print(f"| {np.dtype(dtype).name} | {n} | {c} | {size} "
                          f"| {ms['fwd', 'gemm'] / ms['fwd', 'winograd']:.2f} "
                          f"| {dx['gemm'] / dx['winograd']:.2f} "
                          f"| {ms['dw', 'gemm'] / ms['dw', 'winograd']:.2f} "
                          f"| {ms['fwd', 'gemm']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

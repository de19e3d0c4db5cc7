"""cyconv's own GEMM against OpenBLAS, single-threaded, on the conv shapes.

    python tools/bench_gemm.py [--rounds 5] [--target-ms 20] [--dtype float32]

Both kernels run the same products on the same operands from one nogil loop
(``cyconv_ext._gemm.gemm`` and ``blas_gemm``, ``repeat`` calls per timing),
OpenBLAS under ``threadpool_limits(1)``.  Rounds are interleaved (every
shape and both kernels once per round, in alternating order, each timing
after a warm-up call), each timing in thread CPU time; the
best round of each (the least disturbed: on a shared machine the others
measure the neighbours' cache traffic) and the median are printed in
GFLOP/s, with the ratio cyconv / OpenBLAS of the best rounds (> 1: cyconv
faster).  The shapes are the
GEMMs the conv kernels issue (column-major, as cyconv_ext/_conv.pyx calls
them): im2col forward (N/N), backward dW (T/N, beta 1) and dcol (N/T), the
direct 1x1 forward, LeNet's conv2 and the Winograd products (36 in a row).
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are dropped from this process's
environment (only this one's) before OpenBLAS loads, so that it picks its
kernel for the actual CPU.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_var, None)

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from cyconv._cpu import import_kernels, selected_variant  # noqa: E402

# the variant this process runs (CYCONV_CPU_FEATURES=baseline|avx2|avx512 chooses)
(_gemm,) = import_kernels("_gemm")

# (name, trans_a, trans_b, m, n, k, batch, beta)
SHAPES = [
    ("im2col fwd Pb=256 K=288", False, False, 256, 64, 288, 1, 0.0),
    ("im2col fwd Pb=1024 K=288", False, False, 1024, 64, 288, 1, 0.0),
    ("im2col fwd Pb=1024 K=576", False, False, 1024, 64, 576, 1, 0.0),
    ("bwd dW K=288 Pb=1024 (T/N)", True, False, 288, 64, 1024, 1, 1.0),
    ("bwd dW K=576 Pb=512 (T/N)", True, False, 576, 64, 512, 1, 1.0),
    ("bwd dcol Pb=1024 K=288 (N/T)", False, True, 1024, 288, 64, 1, 0.0),
    ("bwd dcol Pb=512 K=576 (N/T)", False, True, 512, 576, 64, 1, 0.0),
    ("1x1 fwd 196x128x256", False, False, 196, 128, 256, 1, 0.0),
    ("LeNet conv2 100x16x150", False, False, 100, 16, 150, 1, 0.0),
    ("Winograd 36x 16x64x32", False, False, 16, 64, 32, 36, 0.0),
    ("Winograd 36x 64x64x64", False, False, 64, 64, 64, 36, 0.0),
    ("Winograd 36x 49x64x64", False, False, 49, 64, 64, 36, 0.0),
]


def operands(trans_a, trans_b, m, n, k, batch, dtype, rng):
    """Column-major (batched) operands with the shapes the kernels expect."""
    def matrix(rows, cols):
        x = rng.standard_normal((batch, cols, rows)).astype(dtype)
        return x.transpose(0, 2, 1)     # each matrix column-major
    a = matrix(k, m) if trans_a else matrix(m, k)
    b = matrix(n, k) if trans_b else matrix(k, n)
    c = matrix(m, n)
    if batch == 1:
        a, b, c = a[0], b[0], c[0]
    return a, b, c


def seconds_per_call(fn, args, repeat):
    """CPU time of this thread per call, after one untimed call that brings
    the operands into cache (else whichever kernel runs first after another
    shape pays the misses).  Both kernels run in the calling thread, and on a
    shared machine its CPU time ignores the time slices other processes take
    (wall time would not)."""
    fn(*args)
    t0 = time.thread_time()
    fn(*args, repeat=repeat)
    return (time.thread_time() - t0) / repeat


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--target-ms", type=float, default=2.0,
                        help="approximate duration of one timing")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    args = parser.parse_args(argv)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_model()}; cyconv variant {selected_variant()}, GEMM kernel "
          f"{_gemm.variant()}; "
          f"numpy {np.__version__}; {args.rounds} interleaved rounds")
    with threadpool_limits(1):
        cases = []
        for dtype in dtypes:
            for name, ta, tb, m, n, k, batch, beta in SHAPES:
                a, b, c = operands(ta, tb, m, n, k, batch, dtype, rng)
                call = (a, b, c, ta, tb, beta)
                flops = 2.0 * m * n * k * batch
                # calibrate: one call of each, then enough repeats for target_ms
                t = max(seconds_per_call(_gemm.gemm, call, 1),
                        seconds_per_call(_gemm.blas_gemm, call, 1), 1e-7)
                repeat = max(1, int(args.target_ms * 1e-3 / t))
                cases.append(dict(name=name, dtype=dtype, call=call, flops=flops,
                                  repeat=repeat, own=[], blas=[]))
        kernels = [("own", _gemm.gemm), ("blas", _gemm.blas_gemm)]
        for round_ in range(args.rounds):
            for case in cases:
                for key, fn in kernels[::-1] if round_ % 2 else kernels:   # alternate order
                    case[key].append(seconds_per_call(fn, case["call"], case["repeat"]))
    print(f"{'shape':32s} {'dtype':8s} {'GFLOP/s: cyconv':>15s} {'OpenBLAS':>9s} {'ratio':>6s}"
          f"   {'median: cyconv':>14s} {'OpenBLAS':>9s}")
    for case in cases:
        own, blas = (case["flops"] / np.array(case[key]) / 1e9 for key in ("own", "blas"))
        print(f"{case['name']:32s} {case['dtype']:8s} {own.max():15.1f} {blas.max():9.1f} "
              f"{own.max() / blas.max():6.2f}   {np.median(own):14.1f} {np.median(blas):9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

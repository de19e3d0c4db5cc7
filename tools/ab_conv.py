"""A/B of two builds of the conv kernels, interleaved in one process.

    python tools/ab_conv.py OTHER_BUILD/cyconv_ext [--rounds 11] [--threads 2]

OTHER_BUILD is another checkout built in place (``python setup.py build_ext
--inplace``), e.g. the commit before a kernel change.  Its ``_conv`` and
``_winograd`` extension modules (of the CPU variant this process runs, when
that build has variants) are loaded under other names next to this
checkout's, and every conv of the benchmark runs, through the public API
(``cyconv.functional.conv2d`` / ``conv2d_backward``, compiled backend), once
with each module per round, in alternating order; the medians and their ratio
other / this (> 1: this build faster) are printed, forward and backward
apart.  Same process, same inputs, same thread pool: the comparison survives
a loaded machine better than two benchmark runs minutes apart.
"""

import argparse
import glob
import importlib.util
import os
import sys
import time

import numpy as np

from cyconv import functional as F
from cyconv._cpu import selected_variant
from cyconv.backends import cython_backend as cb

# (name, x shape, w shape, geometry, algorithm)
CONVS = [
    ("book", (100, 1, 28, 28), (30, 1, 5, 5), dict(stride=1, padding=0), "gemm"),
    ("lenet2", (64, 6, 14, 14), (16, 6, 5, 5), dict(stride=1, padding=0), "gemm"),
    ("cifar", (64, 32, 32, 32), (64, 32, 3, 3), dict(stride=1, padding=1), "gemm"),
    ("vgg", (16, 64, 56, 56), (64, 64, 3, 3), dict(stride=1, padding=1), "gemm"),
    ("strided", (32, 16, 64, 64), (32, 16, 3, 3),
     dict(stride=2, padding=1, rounding="floor"), "gemm"),
    ("1x1", (32, 256, 14, 14), (128, 256, 1, 1), dict(stride=1, padding=0), "gemm"),
    ("cifar", (64, 32, 32, 32), (64, 32, 3, 3), dict(stride=1, padding=1), "winograd"),
    ("vgg", (16, 64, 56, 56), (64, 64, 3, 3), dict(stride=1, padding=1), "winograd"),
    ("vgg_b1", (1, 64, 56, 56), (64, 64, 3, 3), dict(stride=1, padding=1), "winograd"),
    ("cifar_b1", (1, 32, 32, 32), (64, 32, 3, 3), dict(stride=1, padding=1), "winograd"),
]
MODULES = {"gemm": "_conv", "winograd": "_winograd"}


def load_other(directory, kernel):
    """The other build's module for ``kernel``, of the CPU variant this process
    runs (``_conv_avx2``, ...), else its only build (a tree from before the
    runtime dispatch, compiled with -march=native)."""
    variant = selected_variant()
    names = ([kernel] if variant == "baseline" else [f"{kernel}_{variant}"]) + [kernel]
    for name in names:
        paths = glob.glob(os.path.join(directory, name + ".*.so")) + \
            glob.glob(os.path.join(directory, name + ".*.pyd"))
        if paths:
            spec = importlib.util.spec_from_file_location(f"cyconv_ab_other.{name}", paths[0])
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            print(f"other {kernel}: {paths[0]}")
            return module
    raise SystemExit(f"no built {kernel} extension in {directory}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="the other build's cyconv_ext directory")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    other = {alg: load_other(args.other, mod) for alg, mod in MODULES.items()}
    this = {alg: getattr(cb, mod) for alg, mod in MODULES.items()}
    rng = np.random.default_rng(0)
    print(f"median ms over {args.rounds} interleaved rounds, {args.threads} threads; "
          f"other = {args.other}, ratio other / this")
    try:
        for dtype in (np.float32, np.float64):
            for name, xs, ws, geom, alg in CONVS:
                x = rng.standard_normal(xs).astype(dtype)
                w = rng.standard_normal(ws).astype(dtype)
                b = rng.standard_normal(ws[0]).astype(dtype)
                kw = dict(geom, backend="cython", n_threads=args.threads, algorithm=alg)
                dy = rng.standard_normal(F.conv2d(x, w, b, **kw).shape).astype(dtype)
                times = {(who, p): [] for who in ("other", "this") for p in ("fwd", "bwd")}
                builds = [("other", other[alg]), ("this", this[alg])]
                for r in range(args.rounds):
                    for who, module in builds[::-1] if r % 2 else builds:
                        setattr(cb, MODULES[alg], module)
                        t0 = time.perf_counter()
                        F.conv2d(x, w, b, **kw)
                        t1 = time.perf_counter()
                        F.conv2d_backward(dy, x, w, **kw)
                        t2 = time.perf_counter()
                        times[(who, "fwd")].append(t1 - t0)
                        times[(who, "bwd")].append(t2 - t1)
                    setattr(cb, MODULES[alg], this[alg])
                med = {key: 1e3 * np.median(v) for key, v in times.items()}
                print(f"{name:9s} {alg:9s} {np.dtype(dtype).name:8s}" + "".join(
                    f"  {p} {med[('other', p)]:8.2f} -> {med[('this', p)]:8.2f} ms "
                    f"({med[('other', p)] / med[('this', p)]:.2f}x)" for p in ("fwd", "bwd")))
    finally:
        for alg, mod in MODULES.items():
            setattr(cb, mod, this[alg])
    return 0


if __name__ == "__main__":
    sys.exit(main())

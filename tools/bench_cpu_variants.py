"""Time the CPU kernel variants of this build against each other, in one process.

For every variant this CPU runs (cyconv/_cpu.py), the compiled backend's
kernel functions (cyconv.backends.cython_backend, no input validation) are
pointed at that variant's modules and timed on a few benchmark shapes; the
variants take turns in interleaved rounds, so that a slow spell of a shared
machine hits all of them, and the medians are printed with the ratio
baseline/variant (> 1: the variant is faster).

``--also LABEL=DIR`` adds the baseline-named kernel modules of another build
(a ``cyconv_ext`` folder built from the same sources, e.g. with
``-march=native``) as one more contender; modules missing there keep this
build's baseline.

Usage: python tools/bench_cpu_variants.py [--threads 2] [--rounds 7] [--also native=DIR]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import statistics
import time

import numpy as np

from cyconv import _cpu
from cyconv._config import cpu_model
from cyconv._shapes import resolve_geometry
from cyconv.backends import cython_backend as cb
from cyconv_ext import _cpu as ext_cpu

# every module built per variant that the compiled backend holds (_conv, _pool, ...)
KERNELS = tuple(k for k in ext_cpu.build_record()["modules"] if hasattr(cb, k))


def variant_modules():
    """{label: {kernel: module}} for every variant of this build that this CPU runs."""
    record, features = ext_cpu.build_record(), ext_cpu.cpu_features()
    found = {}
    for name, _, needed in reversed(record["variants"]):
        if set(needed) <= features:
            found[name] = {k: importlib.import_module(_cpu.module_name(k, name))
                           for k in KERNELS}
    return found


def modules_from(folder):
    """The kernel modules of another build, loaded from ``folder`` under their own names."""
    loaded = {}
    for kernel in KERNELS:
        path, = glob.glob(os.path.join(folder, kernel + ".*.so")) or [None]
        if path is None:
            print(f"--also {folder}: no {kernel}.*.so there; using this build's baseline one")
            loaded[kernel] = importlib.import_module(_cpu.module_name(kernel, "baseline"))
            continue
        spec = importlib.util.spec_from_file_location(f"cyconv_ext.{kernel}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded[kernel] = module
    return loaded


def cases(threads):
    rng = np.random.default_rng(0)
    out = []
    for label, xs, ws, stride, pad in [
            ("conv cifar f32 fwd+bwd", (64, 32, 32, 32), (64, 32, 3, 3), 1, 1),
            ("conv strided f32 fwd+bwd", (32, 16, 64, 64), (32, 16, 3, 3), 2, 1),
            ("conv lenet2 5x5 f32 fwd+bwd", (64, 6, 14, 14), (16, 6, 5, 5), 1, 0)]:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        b = rng.standard_normal(ws[0]).astype(np.float32)
        geom = resolve_geometry(xs[2:], ws[2:], stride=stride, padding=pad, rounding="floor")
        dy = rng.standard_normal((xs[0], ws[0], geom.out_h, geom.out_w)).astype(np.float32)

        def conv(x=x, w=w, b=b, geom=geom, dy=dy):
            cb.conv2d_forward(x, w, b, geom, 1, threads)
            cb.conv2d_backward(dy, x, w, geom, 1, threads)
        out.append((label, conv))
    for label, xs, k, s, p, dtype in [
            ("max-pool 2x2 s2 64x64x32x32 f32", (64, 64, 32, 32), 2, 2, 0, np.float32),
            ("max-pool 3x3 s2 p1 16x64x112x112 f32", (16, 64, 112, 112), 3, 2, 1, np.float32),
            ("max-pool 2x2 s2 64x64x32x32 f64", (64, 64, 32, 32), 2, 2, 0, np.float64)]:
        x = rng.standard_normal(xs).astype(dtype)
        geom = resolve_geometry(xs[2:], k, stride=s, padding=p, rounding="floor",
                                layer="pool2d", max_pool_padding=True)

        def maxpool(x=x, geom=geom):
            y, idx = cb.max_pool2d_forward(x, geom, threads)
            cb.max_pool2d_backward(y, idx, x.shape, threads)
        out.append((label + " fwd+bwd", maxpool))
    x = rng.standard_normal((16, 64, 112, 112)).astype(np.float32)
    geom = resolve_geometry(x.shape[2:], 2, stride=2, layer="pool2d")

    def avgpool(x=x, geom=geom):
        y = cb.avg_pool2d_forward(x, geom, True, None, threads)
        cb.avg_pool2d_backward(y, x.shape, geom, True, None, threads)
    out.append(("avg-pool 2x2 s2 16x64x112x112 f32 fwd+bwd", avgpool))
    x = rng.standard_normal(1 << 22).astype(np.float32)

    def relu(x=x):
        y, positive = cb.relu_forward(x, threads)
        cb.relu_backward(y, positive, threads)
    out.append(("relu 4M f32 fwd+bwd", relu))
    p, g = (rng.standard_normal(1 << 20).astype(np.float32) for _ in range(2))
    m, v = np.zeros_like(p), np.zeros_like(p)
    out.append(("adam step 1M f32",
                lambda: cb.adam_update(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, threads)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=DIR")
    args = parser.parse_args(argv)
    contenders = variant_modules()
    for item in args.also:
        label, _, folder = item.partition("=")
        contenders[label] = modules_from(folder)
    saved = {k: getattr(cb, k) for k in KERNELS}
    times = {}
    try:
        for label, run in cases(args.threads):
            for _ in range(args.rounds):
                for name, modules in contenders.items():
                    for kernel, module in modules.items():
                        setattr(cb, kernel, module)
                    start = time.perf_counter()
                    run()
                    times.setdefault(label, {}).setdefault(name, []).append(
                        time.perf_counter() - start)
    finally:
        for kernel, module in saved.items():
            setattr(cb, kernel, module)
    names = list(contenders)
    print(f"{cpu_model()}; features: {' '.join(sorted(ext_cpu.cpu_features())) or 'none'}; "
          f"{args.threads} threads, median of {args.rounds} interleaved rounds, ms")
    print(f"{'case':<44}" + "".join(f"{n:>10}" for n in names)
          + "".join(f"{'base/' + n:>14}" for n in names[1:]))
    for label, per in times.items():
        med = {n: statistics.median(per[n]) * 1e3 for n in names}
        print(f"{label:<44}" + "".join(f"{med[n]:>10.2f}" for n in names)
              + "".join(f"{med[names[0]] / med[n]:>13.2f}x" for n in names[1:]))


if __name__ == "__main__":
    main()

"""The timing loop: interleaved rounds per op, dtype and pass, and the ratios."""

from __future__ import annotations

import statistics
import time

from .calls import cyconv_calls, net_calls, torch_calls, torch_net_calls
from .ops import conv_algorithm, out_shape
from .report import format_row

__all__ = ["interleaved_median_ms", "run"]


def interleaved_median_ms(calls, repeats, budget_s, clock=time.perf_counter):
    """Median ms of each ``name: (fn, max_repeats)``, timed in interleaved rounds.

    One call of each function per round, so a slow spell on a shared machine
    (another tenant, a frequency change) lands on every library alike instead
    of on whichever happened to run then: the ratios are what is compared.
    Stops after ``repeats`` rounds, or once ``budget_s`` is spent with at least
    three timings of each.
    """
    for fn, _ in calls.values():
        fn()  # warm-up (allocator, caches, lazy imports)
    times = {name: [] for name in calls}
    start = time.perf_counter()
    for _ in range(repeats):
        for name, (fn, cap) in calls.items():
            if len(times[name]) < cap:
                t0 = clock()
                fn()
                times[name].append((clock() - t0) * 1e3)
        if (min(len(t) for t in times.values()) >= 3
                and time.perf_counter() - start > budget_s):
            break
    return {name: statistics.median(t) for name, t in times.items()}


def run(ops, dtypes, threads, repeats, budget, with_numpy, with_torch, log,
        clock=time.perf_counter):
    """Time every op in every dtype; log each row's table lines and return the rows."""
    import numpy as np
    rows = []
    for op in ops:
        name, kind, xs, wk, _ = op
        for dtype in dtypes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(wk).astype(dtype) if kind == "conv" else None
            b = rng.standard_normal(wk[0]).astype(dtype) if kind == "conv" else None
            dy = rng.standard_normal(out_shape(op)).astype(dtype)
            if kind == "net":
                cy_f, cy_fb, cy_net = net_calls(op, x, "cython", threads)
                path = "layers"
            else:
                cy_f, cy_fb, path = cyconv_calls(op, x, w, b, dy, "cython", threads)
            res = {"op": name, "dtype": np.dtype(dtype).name, "threads": threads, "path": path,
                   "algorithm": conv_algorithm(op, x, w)}
            passes = {"fwd": {"cython": (cy_f, repeats)}, "fwdbwd": {"cython": (cy_fb, repeats)}}
            if with_numpy:  # 10-50x slower: fewer rounds
                np_f, np_fb, _ = (net_calls(op, x, "numpy", threads) if kind == "net" else
                                  cyconv_calls(op, x, w, b, dy, "numpy", threads))
                passes["fwd"]["numpy"] = (np_f, max(3, repeats // 4))
                passes["fwdbwd"]["numpy"] = (np_fb, max(3, repeats // 4))
            if with_torch:
                t_f, t_fb = (torch_net_calls(op, x, cy_net) if kind == "net" else
                             torch_calls(op, x, w, b, dy))
                passes["fwd"]["torch"] = (t_f, repeats)
                passes["fwdbwd"]["torch"] = (t_fb, repeats)
            for p, calls in passes.items():
                for lib, ms in interleaved_median_ms(calls, repeats, budget * len(calls),
                                                        clock).items():
                    res[f"{lib}_{p}_ms"] = ms
            for p in ("fwd", "fwdbwd"):
                cy = res[f"cython_{p}_ms"]
                if with_torch:
                    res[f"torch_over_cython_{p}"] = res[f"torch_{p}_ms"] / cy
                if with_numpy:
                    res[f"numpy_over_cython_{p}"] = res[f"numpy_{p}_ms"] / cy
            rows.append(res)
            log(format_row(res, with_numpy, with_torch))
    return rows

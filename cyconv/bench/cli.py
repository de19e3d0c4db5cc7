"""``python -m cyconv bench`` / ``python -m cyconv.bench``: the options and the run."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .environment import header, prepare_environment, set_mallopt
from .ops import OPS, select_ops
from .report import scaling_table, table_header, write_json
from .timing import run

__all__ = ["main", "DESCRIPTION"]

#: The first paragraph of :mod:`cyconv.bench`'s docstring (``--help`` shows it).
DESCRIPTION = "Benchmark the compiled kernels against the NumPy reference and PyTorch (CPU)."


def _parser():
    parser = argparse.ArgumentParser(prog="cyconv bench", description=DESCRIPTION)
    parser.add_argument("--threads", type=int, default=None,
                        help="thread count for every library (default: min(2, cores))")
    parser.add_argument("--ops", default="", help="comma list of op names or numbers")
    parser.add_argument("--dtypes", default="float32,float64", help="comma list")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and ops")
    parser.add_argument("--scaling", action="store_true",
                        help="run thread counts 1, 2, 4, ... up to all cores")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy backend")
    parser.add_argument("--no-torch", action="store_true", help="skip torch")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="wall clock (default) or the calling thread's CPU time; the "
                             "latter ignores time stolen by other processes on a shared "
                             "machine but only sees work done in the calling thread, so it "
                             "requires --threads 1")
    parser.add_argument("--list", action="store_true", help="list the ops and exit")
    parser.add_argument("--no-reexec", action="store_true",
                        help="measure in the current environment (no BLAS/malloc fix-ups)")
    return parser


def main(argv=None):
    """Entry point of ``python -m cyconv.bench`` (and ``cyconv bench``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for k, op in enumerate(OPS, 1):
            print(f"{k:2d} {op[0]:14s} {op[1]:8s} x{op[2]} {op[3]} {op[4]}")
        return 0
    prepare_environment(argv)
    set_mallopt()
    clock = time.perf_counter
    if args.clock == "thread":
        if args.scaling or (args.threads or 1) != 1:
            parser.error("--clock thread requires --threads 1 (and no --scaling)")
        clock = time.thread_time

    import numpy as np  # noqa: F401  (after the environment is settled)
    if args.clock == "thread":
        # every library must then work in the calling thread only
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(1)
        except ImportError:
            pass
    cores = os.cpu_count() or 1
    if args.scaling:
        threads_list, t = [], 1
        while t < cores:
            threads_list.append(t)
            t *= 2
        threads_list.append(cores)
    else:
        threads_list = [args.threads or (1 if args.clock == "thread" else min(2, cores))]
    ops = select_ops(args.ops, args.quick)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch
        except ImportError:
            with_torch = False
    repeats, budget = (5, 0.3) if args.quick else (21, 1.5)

    def log(text):
        print(text, flush=True)

    for line in header(threads_list, clock):
        log(line)
    if with_torch:
        import torch
        log(f"torch {torch.__version__} (CPU)")
    else:
        log("torch: skipped (--no-torch or not importable)")
    results = []
    for threads in threads_list:
        if with_torch:
            import torch
            torch.set_num_threads(threads)
        log(f"\n## {threads} thread(s)  (median ms; ratio > 1: cython faster)\n")
        log(table_header(not args.no_numpy, with_torch))
        results += run(ops, dtypes, threads, repeats, budget, not args.no_numpy,
                       with_torch, log, clock)
    if args.scaling and len(threads_list) > 1:
        for line in scaling_table(ops, dtypes, threads_list, results):
            log(line)
    if args.json:
        meta = {"header": header(threads_list, clock), "argv": argv, "clock": args.clock}
        write_json(args.json, meta, results)
        log(f"\nwrote {args.json}")
    return 0

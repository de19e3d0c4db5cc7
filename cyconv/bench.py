"""Benchmark the compiled kernels against the NumPy reference and PyTorch (CPU).

Usage::

    python -m cyconv.bench                 # every op, f32 and f64, 2 threads
    python -m cyconv.bench --threads 2 --json bench.json
    python -m cyconv.bench --ops conv_vgg,maxpool_3x3s2 --quick
    python -m cyconv.bench --ops 1,3,7     # by number (see --list)
    python -m cyconv.bench --scaling       # threads 1, 2, 4, ... up to all cores

For every op, dtype and pass (forward, forward+backward) it reports the median
time in ms of the cython backend, the numpy backend and, when ``torch`` is
importable, ``torch.nn.functional`` on CPU with the same thread count
(``torch.set_num_threads``), plus the ratios torch/cython and numpy/cython
(> 1 means cython is faster), all measured in the same run: the libraries
take turns, one call each per round, so that a slow spell on a shared machine
hits every side of a ratio alike.

Environment.  OpenBLAS reads ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` when
it is loaded; on some machines these are set to values that halve GEMM speed.
glibc's default malloc returns large freed blocks to the OS, so every call
page-faults its output buffers afresh (PyTorch suffers most).  So, before
NumPy is imported, the benchmark re-executes itself once with both OpenBLAS
variables removed and ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_``
raised, for every library measured alike (``--no-reexec`` measures the
environment as it is; the header then warns).  Timings go through the public
functional API (``cyconv.conv2d(..., backend=...)``, validation included) when
it is available, else straight to the kernel modules.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

_REEXEC_MARK = "CYCONV_BENCH_REEXEC"
_ORIG_PREFIX = "CYCONV_BENCH_ORIG_"
_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}

# name: (kind, x shape, w shape or kernel, options)
OPS = [
    ("conv_book", "conv", (100, 1, 28, 28), (30, 1, 5, 5), dict(stride=1, padding=0)),
    ("conv_lenet2", "conv", (64, 6, 14, 14), (16, 6, 5, 5), dict(stride=1, padding=0)),
    ("conv_cifar", "conv", (64, 32, 32, 32), (64, 32, 3, 3), dict(stride=1, padding=1)),
    ("conv_vgg", "conv", (16, 64, 56, 56), (64, 64, 3, 3), dict(stride=1, padding=1)),
    ("conv_strided", "conv", (32, 16, 64, 64), (32, 16, 3, 3),
     dict(stride=2, padding=1, rounding="floor")),
    ("conv_1x1", "conv", (32, 256, 14, 14), (128, 256, 1, 1), dict(stride=1, padding=0)),
    ("conv_vgg_b1", "conv", (1, 64, 56, 56), (64, 64, 3, 3), dict(stride=1, padding=1)),
    ("conv_cifar_b1", "conv", (1, 32, 32, 32), (64, 32, 3, 3), dict(stride=1, padding=1)),
    ("maxpool_book", "maxpool", (100, 30, 24, 24), 2, dict(stride=2, padding=0)),
    ("maxpool_cifar", "maxpool", (64, 64, 32, 32), 2, dict(stride=2, padding=0)),
    ("maxpool_vgg", "maxpool", (16, 64, 56, 56), 2, dict(stride=2, padding=0)),
    ("maxpool_3x3s2", "maxpool", (16, 64, 112, 112), 3,
     dict(stride=2, padding=1, rounding="floor")),
    ("avgpool_2x2", "avgpool", (16, 64, 112, 112), 2, dict(stride=2, padding=0)),
    # networks with the same weights on both sides; fwd+bwd is a training step's
    # gradient computation (the optimizer update is not timed)
    ("net_simpleconvnet", "net", (100, 1, 28, 28), "simpleconvnet", {}),
    ("net_vgg_block", "net", (32, 64, 32, 32), "vgg_block", {}),
]
# the convolutions inside each network row: (x shape, w shape, options)
NET_CONVS = {
    "simpleconvnet": [((100, 1, 28, 28), (30, 1, 5, 5), {})],
    "vgg_block": [((32, 64, 32, 32), (64, 64, 3, 3), dict(padding=1))] * 2,
}
QUICK_OPS = ("conv_book", "conv_cifar", "conv_1x1", "maxpool_cifar", "avgpool_2x2")


def _prepare_environment(argv):
    """Re-exec once with the BLAS variables unset and malloc thresholds raised."""
    if "--no-reexec" in argv or os.environ.get(_REEXEC_MARK):
        return
    if "pytest" in sys.modules or not sys.argv or sys.argv[0] in ("", "-c"):
        # called in-process (tests, notebooks): never replace the caller's process
        return
    env = dict(os.environ)
    changed = False
    for var in _BLAS_VARS:
        if var in env:
            env[_ORIG_PREFIX + var] = env.pop(var)
            changed = True
    for var, value in _MALLOC_ENV.items():
        if var not in env:
            env[var] = value
            changed = True
    if not changed:
        return
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "cyconv.bench", *argv], env)
    except OSError as exc:  # pragma: no cover - exotic platforms
        print(f"warning: could not re-exec the benchmark ({exc}); measuring as is",
              file=sys.stderr)


def _set_mallopt():
    """Raise glibc's trim/mmap thresholds in-process too (harmless elsewhere)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD (accepted by glibc >= 2.35)
        return True
    except (OSError, AttributeError):
        return False


def _header(threads_list):
    import numpy as np

    from ._config import cpu_model

    lines = [f"cyconv benchmark  (python {platform.python_version()}, numpy {np.__version__})",
             f"CPU: {cpu_model()}; {os.cpu_count()} logical cores; threads: "
             + ",".join(map(str, threads_list))]
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") == "blas":
                lines.append(f"BLAS: {info.get('internal_api')} {info.get('version')} "
                             f"kernel={info.get('architecture')} "
                             f"({os.path.basename(info.get('filepath', ''))})")
    except Exception as exc:  # threadpoolctl missing
        lines.append(f"BLAS: unknown ({exc})")
    try:
        load = os.getloadavg()
        lines.append(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if load[0] > 0.5 * (os.cpu_count() or 1):
            lines.append("WARNING: the machine is busy (load average above half the cores): "
                         "wall-clock times will be noisy and inflated; compare ratios, or use "
                         "--threads 1 --clock thread.")
    except OSError:
        pass
    if _CLOCK is not time.perf_counter:
        lines.append("clock: thread CPU time of the calling thread (valid with 1 thread only)")
    for var in _BLAS_VARS:
        if var in os.environ:
            lines.append(f"WARNING: {var}={os.environ[var]} is set: OpenBLAS may run at half "
                         f"speed; unset it (or run without --no-reexec).")
        elif _ORIG_PREFIX + var in os.environ:
            lines.append(f"note: {var}={os.environ[_ORIG_PREFIX + var]} was set; unset for "
                         f"this run.")
    return lines


_CLOCK = time.perf_counter


def _interleaved_median_ms(calls, repeats, budget_s):
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
                t0 = _CLOCK()
                fn()
                times[name].append((_CLOCK() - t0) * 1e3)
        if (min(len(t) for t in times.values()) >= 3
                and time.perf_counter() - start > budget_s):
            break
    return {name: statistics.median(t) for name, t in times.items()}


def _cyconv_calls(op, x, w, b, dy, backend, threads):
    """(forward, forward+backward) closures for one cyconv backend."""
    import numpy as np
    _, kind, _, wk, opts = op
    try:
        import cyconv
        api = all(hasattr(cyconv, f) for f in ("conv2d", "conv2d_backward", "max_pool2d",
                                               "max_pool2d_backward", "avg_pool2d",
                                               "avg_pool2d_backward"))
    except Exception:  # the public API is unavailable: use the kernels
        api = False
    if api:
        if kind == "conv":
            def fwd():
                return cyconv.conv2d(x, w, b, backend=backend, n_threads=threads, **opts)

            def fwdbwd():
                fwd()
                return cyconv.conv2d_backward(dy, x, w, backend=backend, n_threads=threads,
                                              **opts)
        elif kind == "maxpool":
            def fwd():
                return cyconv.max_pool2d(x, wk, return_indices=True, backend=backend,
                                         n_threads=threads, **opts)

            def fwdbwd():
                _, idx = fwd()
                return cyconv.max_pool2d_backward(dy, x, wk, indices=idx, backend=backend,
                                                  n_threads=threads, **opts)
        else:
            def fwd():
                return cyconv.avg_pool2d(x, wk, backend=backend, n_threads=threads, **opts)

            def fwdbwd():
                fwd()
                return cyconv.avg_pool2d_backward(dy, x, wk, backend=backend,
                                                  n_threads=threads, **opts)
        return fwd, fwdbwd, "api"

    from cyconv._shapes import resolve_geometry
    if backend == "cython":
        from cyconv.backends import cython_backend as kern
    else:
        from cyconv.backends import numpy_backend as kern
    opts = dict(opts)
    rounding = opts.pop("rounding", "exact")
    if kind == "conv":
        geom = resolve_geometry(x.shape[2:], w.shape[2:], rounding=rounding, **opts)

        def fwd():
            return kern.conv2d_forward(x, w, b, geom, 1, threads)

        def fwdbwd():
            fwd()
            return kern.conv2d_backward(dy, x, w, geom, 1, threads)
    else:
        geom = resolve_geometry(x.shape[2:], wk, rounding=rounding, max_pool_padding=True,
                                layer="pool2d", **opts)
        if kind == "maxpool":
            def fwd():
                return kern.max_pool2d_forward(x, geom, threads)

            def fwdbwd():
                _, idx = fwd()
                return kern.max_pool2d_backward(dy, idx, x.shape, threads)
        else:
            def fwd():
                return kern.avg_pool2d_forward(x, geom, True, None, threads)

            def fwdbwd():
                fwd()
                return kern.avg_pool2d_backward(dy, x.shape, geom, True, None, threads)
    del np
    return fwd, fwdbwd, "kernels"


def _cyconv_net(name, x_shape, dtype, backend):
    """A cyconv network of the benchmark, built with seed 0, and its layers' weights."""
    import numpy as np

    import cyconv
    from cyconv.nn import SimpleConvNet
    if name == "simpleconvnet":
        return SimpleConvNet(x_shape[1:], dtype=dtype, seed=0, backend=backend)
    layers = [cyconv.Conv2D(64, 3, padding=1, backend=backend), cyconv.ReLU(),
              cyconv.Conv2D(64, 3, padding=1, backend=backend), cyconv.ReLU(),
              cyconv.MaxPool2D(2, backend=backend)]
    rng = np.random.default_rng(0)
    shape = tuple(x_shape[1:])
    for layer in layers:
        shape = layer.build(shape, dtype=np.dtype(dtype), rng=rng)
    return layers


def _net_calls(op, x, backend, threads):
    """(forward, forward+backward) of a network row on one cyconv backend."""
    import numpy as np

    import cyconv
    _, _, xs, net_name, _ = op
    net = _cyconv_net(net_name, xs, x.dtype, backend)
    cyconv.set_num_threads(threads)   # layers run on the global thread setting
    if net_name == "simpleconvnet":
        t = np.arange(xs[0]) % 10

        def fwd():
            return net.predict(x)

        def fwdbwd():
            return net.gradient(x, t)
        return fwd, fwdbwd, net
    layers = net

    def fwd():
        out = x
        for layer in layers:
            out = layer.forward(out)
        return out

    def fwdbwd():
        dout = np.ones_like(fwd())
        for layer in reversed(layers):
            dout = layer.backward(dout)
        return dout
    return fwd, fwdbwd, layers


def _torch_net_calls(op, x, cy_net):
    """The same network in torch, with cyconv's weights."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    _, _, xs, net_name, _ = op
    tx = torch.from_numpy(x.copy())

    def param(a):
        return torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a).copy()))
    if net_name == "simpleconvnet":
        c1, _, _, a1, _, a2 = cy_net.layers
        w1, b1 = param(c1.params["W"]), param(c1.params["b"])
        w2, b2 = param(a1.params["W"].T), param(a1.params["b"])
        w3, b3 = param(a2.params["W"].T), param(a2.params["b"])
        tt = torch.from_numpy(np.arange(xs[0]) % 10)

        def scores():
            h = F.max_pool2d(F.relu(F.conv2d(tx, w1, b1)), 2)
            return F.linear(F.relu(F.linear(h.flatten(1), w2, b2)), w3, b3)

        def fwd():
            with torch.no_grad():
                return scores()

        def fwdbwd():
            for p in (w1, b1, w2, b2, w3, b3):
                p.grad = None
            F.cross_entropy(scores(), tt).backward()
        return fwd, fwdbwd
    c1, _, c2, _, _ = cy_net
    w1, b1 = param(c1.params["W"]), param(c1.params["b"])
    w2, b2 = param(c2.params["W"]), param(c2.params["b"])
    tx.requires_grad_(True)

    def block():
        h = F.relu(F.conv2d(F.relu(F.conv2d(tx, w1, b1, padding=1)), w2, b2, padding=1))
        return F.max_pool2d(h, 2)

    def fwd():
        with torch.no_grad():
            return block()

    def fwdbwd():
        for p in (tx, w1, b1, w2, b2):
            p.grad = None
        out = block()
        out.backward(torch.ones_like(out))
    return fwd, fwdbwd


def _torch_calls(op, x, w, b, dy):
    import torch
    import torch.nn.functional as F
    _, kind, _, wk, opts = op
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    tdy = torch.from_numpy(dy.copy())
    ceil = opts.get("rounding") == "ceil"
    if kind == "conv":
        tw = torch.from_numpy(w.copy()).requires_grad_(True)
        tb = torch.from_numpy(b.copy()).requires_grad_(True)

        def conv():
            return F.conv2d(tx, tw, tb, stride=opts["stride"], padding=opts["padding"])

        def fwd():     # inference: no autograd graph, as torch users time it
            with torch.no_grad():
                return conv()

        def fwdbwd():
            tx.grad = tw.grad = tb.grad = None
            conv().backward(tdy)
    elif kind == "maxpool":
        def pool():
            return F.max_pool2d(tx, wk, stride=opts["stride"], padding=opts["padding"],
                                ceil_mode=ceil)
    else:
        def pool():
            return F.avg_pool2d(tx, wk, stride=opts["stride"], padding=opts["padding"],
                                ceil_mode=ceil)
    if kind != "conv":
        def fwd():
            with torch.no_grad():
                return pool()

        def fwdbwd():
            tx.grad = None
            pool().backward(tdy)
    return fwd, fwdbwd


def _out_shape(op):
    from cyconv._shapes import resolve_geometry
    _, kind, xs, wk, opts = op
    if kind == "net":
        return xs
    opts = dict(opts)
    rounding = opts.pop("rounding", "exact")
    if kind == "conv":
        g = resolve_geometry(xs[2:], wk[2:], rounding=rounding, **opts)
        return (xs[0], wk[0], g.out_h, g.out_w)
    g = resolve_geometry(xs[2:], wk, rounding=rounding, max_pool_padding=True, **opts)
    return (xs[0], xs[1], g.out_h, g.out_w)


def _select_ops(spec, quick):
    if not spec:
        return [op for op in OPS if not quick or op[0] in QUICK_OPS]
    chosen = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            k = int(item)
            if not 1 <= k <= len(OPS):
                raise SystemExit(f"--ops: no op number {k} (1..{len(OPS)}; see --list)")
            chosen.append(OPS[k - 1])
        else:
            match = [op for op in OPS if op[0] == item]
            if not match:
                raise SystemExit(f"--ops: unknown op {item!r}; known: "
                                 + ", ".join(op[0] for op in OPS))
            chosen.append(match[0])
    return chosen


def _run(ops, dtypes, threads, repeats, budget, with_numpy, with_torch, log):
    import numpy as np
    rows = []
    for op in ops:
        name, kind, xs, wk, _ = op
        for dtype in dtypes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal(xs).astype(dtype)
            w = rng.standard_normal(wk).astype(dtype) if kind == "conv" else None
            b = rng.standard_normal(wk[0]).astype(dtype) if kind == "conv" else None
            dy = rng.standard_normal(_out_shape(op)).astype(dtype)
            if kind == "net":
                cy_f, cy_fb, cy_net = _net_calls(op, x, "cython", threads)
                path = "layers"
            else:
                cy_f, cy_fb, path = _cyconv_calls(op, x, w, b, dy, "cython", threads)
            res = {"op": name, "dtype": np.dtype(dtype).name, "threads": threads, "path": path,
                   "algorithm": _algorithm(op, x, w)}
            passes = {"fwd": {"cython": (cy_f, repeats)}, "fwdbwd": {"cython": (cy_fb, repeats)}}
            if with_numpy:  # 10-50x slower: fewer rounds
                np_f, np_fb, _ = (_net_calls(op, x, "numpy", threads) if kind == "net" else
                                  _cyconv_calls(op, x, w, b, dy, "numpy", threads))
                passes["fwd"]["numpy"] = (np_f, max(3, repeats // 4))
                passes["fwdbwd"]["numpy"] = (np_fb, max(3, repeats // 4))
            if with_torch:
                t_f, t_fb = (_torch_net_calls(op, x, cy_net) if kind == "net" else
                             _torch_calls(op, x, w, b, dy))
                passes["fwd"]["torch"] = (t_f, repeats)
                passes["fwdbwd"]["torch"] = (t_fb, repeats)
            for p, calls in passes.items():
                for lib, ms in _interleaved_median_ms(calls, repeats, budget * len(calls)).items():
                    res[f"{lib}_{p}_ms"] = ms
            for p in ("fwd", "fwdbwd"):
                cy = res[f"cython_{p}_ms"]
                if with_torch:
                    res[f"torch_over_cython_{p}"] = res[f"torch_{p}_ms"] / cy
                if with_numpy:
                    res[f"numpy_over_cython_{p}"] = res[f"numpy_{p}_ms"] / cy
            rows.append(res)
            log(_format_row(res, with_numpy, with_torch))
    return rows


def _algorithm(op, x, w):
    """The convolution algorithm the compiled backend runs for a conv row ("auto"):
    the forward's, then the input and weight gradients' where they differ."""
    _, kind, xs, wk, opts = op
    if kind == "net":
        convs = NET_CONVS[wk]
    elif kind == "conv":
        convs = [(xs, wk, opts)]
    else:
        return None
    try:
        from cyconv._shapes import resolve_geometry
        from cyconv.backends import cython_backend
    except ImportError:
        return None
    chosen = []
    for conv_xs, conv_ws, conv_opts in convs:
        conv_opts = dict(conv_opts)
        rounding = conv_opts.pop("rounding", "exact")
        geom = resolve_geometry(conv_xs[2:], conv_ws[2:], rounding=rounding, **conv_opts)
        fwd, dx, dw = (cython_backend.conv2d_algorithm(conv_xs, conv_ws, geom, pass_name=p,
                                                       dtype=x.dtype)
                       for p in ("forward", "input_grad", "weight_grad"))
        chosen.append(fwd if fwd == dx == dw else f"{fwd} (dx {dx}, dW {dw})")
    return "+".join(chosen)


def _fmt(v, ratio=False):
    if v is None:
        return "-"
    return f"{v:.2f}x" if ratio else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _table_header(with_numpy, with_torch):
    cols = ["op", "dtype", "pass", "algorithm", "cython ms"]
    if with_numpy:
        cols.append("numpy ms")
    if with_torch:
        cols.append("torch ms")
    if with_torch:
        cols.append("torch/cy")
    if with_numpy:
        cols.append("numpy/cy")
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def _format_row(res, with_numpy, with_torch):
    lines = []
    for p, label in (("fwd", "fwd"), ("fwdbwd", "fwd+bwd")):
        cells = [res["op"], res["dtype"], label, res.get("algorithm") or "-",
                 _fmt(res[f"cython_{p}_ms"])]
        if with_numpy:
            cells.append(_fmt(res.get(f"numpy_{p}_ms")))
        if with_torch:
            cells.append(_fmt(res.get(f"torch_{p}_ms")))
            cells.append(_fmt(res.get(f"torch_over_cython_{p}"), True))
        if with_numpy:
            cells.append(_fmt(res.get(f"numpy_over_cython_{p}"), True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    """Entry point of ``python -m cyconv.bench`` (and ``cyconv bench``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="cyconv bench", description=__doc__.split("\n\n")[0])
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
    args = parser.parse_args(argv)
    if args.list:
        for k, op in enumerate(OPS, 1):
            print(f"{k:2d} {op[0]:14s} {op[1]:8s} x{op[2]} {op[3]} {op[4]}")
        return 0
    _prepare_environment(argv)
    _set_mallopt()
    global _CLOCK
    if args.clock == "thread":
        if args.scaling or (args.threads or 1) != 1:
            parser.error("--clock thread requires --threads 1 (and no --scaling)")
        _CLOCK = time.thread_time

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
    ops = _select_ops(args.ops, args.quick)
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

    for line in _header(threads_list):
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
        log(_table_header(not args.no_numpy, with_torch))
        results += _run(ops, dtypes, threads, repeats, budget, not args.no_numpy,
                        with_torch, log)
    if args.scaling and len(threads_list) > 1:
        log("\n## scaling: cython fwd+bwd ms by thread count\n")
        log("| op | dtype | " + " | ".join(f"{t} thr" for t in threads_list) + " |")
        log("|---|---|" + "---|" * len(threads_list))
        for op in ops:
            for dtype in dtypes:
                cells = []
                for t in threads_list:
                    r = [r for r in results if r["op"] == op[0] and r["dtype"] == dtype
                         and r["threads"] == t]
                    cells.append(_fmt(r[0]["cython_fwdbwd_ms"]) if r else "-")
                log(f"| {op[0]} | {dtype} | " + " | ".join(cells) + " |")
    if args.json:
        meta = {"header": _header(threads_list), "argv": argv, "clock": args.clock}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
        log(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

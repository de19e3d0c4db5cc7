"""Command line: ``cyconv demo|train|layers|info|bench`` (also ``python -m cyconv``).

``main(argv)`` returns the exit status: 0 on success, 2 for bad arguments or a
run that cannot proceed (bad data folder, shape error...); such errors print a
single ``cyconv: error: ...`` line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np

from ._param_validation import PARAMS, POSITIVE_FINITE, POSITIVE_INT, argparse_type
from .training import count_noun as _count

PROG = "cyconv"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (status 2, no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, unless its help already explains it.

    ``None`` defaults ("the model's", "all cores") and flags are explained in
    words; "(default: None)" or "(default: False)" would say nothing.
    """

    def _get_help_string(self, action):
        help_text = action.help or ""
        if action.default is None or isinstance(action.default, bool) or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


class _Fail(Exception):
    """A user-facing error: one line, exit status 2."""


# the declared constraints (cyconv._param_validation), on the command line's text
_positive_int = argparse_type(POSITIVE_INT, int, "a positive integer")
_nonzero_int = argparse_type(PARAMS["n_threads"].inner, int, "an integer",
                             refused="0 is not a thread count (use a positive count, or a "
                                     "negative one to count back from all cores)")
_positive_float = argparse_type(POSITIVE_FINITE, float, "a positive number")


def _weight_init(text):
    if text in ("he", "xavier"):
        return text
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'he', 'xavier' or a positive std, "
                                         f"got {text!r}") from None


# -- helpers -----------------------------------------------------------------------

def _threads(n):
    """Use ``n`` threads for all of cyconv's work, OpenMP kernels and BLAS products alike
    (the one knob, cyconv._threads), in this thread; None: leave the setting as it is."""
    if n is None:
        return contextlib.nullcontext()
    from ._threads import local_num_threads

    return local_num_threads(n)


def _check_backend(backend):
    if backend is None:
        return None
    import cyconv

    cyconv.get_layer("Conv2D", backend)  # raises BackendError naming the alternatives
    return backend


def _default_mnist_dir():
    candidates = [os.environ.get("CYCONV_MNIST_DIR"), "mnist",
                  os.path.join("..", "shared", "data", "mnist")]
    for folder in candidates:
        if folder and os.path.isdir(folder):
            return folder
    raise FileNotFoundError("no MNIST folder given: pass --data-dir DIR (a folder with "
                            "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz) or set "
                            "CYCONV_MNIST_DIR")


def _load_data(args, dtype):
    from . import datasets

    if args.data == "digits":
        x, t = datasets.load_digits(dtype=dtype)
        x_train, t_train, x_test, t_test = datasets.train_test_split(x, t, 0.2, seed=0)
        if args.train_size is not None:
            if args.train_size > len(x_train):
                raise ValueError(f"--train-size {args.train_size} exceeds the {len(x_train)} "
                                 f"training digits (80% of {len(x)})")
            x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]
        if args.test_size is not None:
            if args.test_size > len(x_test):
                raise ValueError(f"--test-size {args.test_size} exceeds the {len(x_test)} "
                                 f"held-out digits (20% of {len(x)})")
            x_test, t_test = x_test[:args.test_size], t_test[:args.test_size]
        return x_train, t_train, x_test, t_test
    folder = args.data_dir or _default_mnist_dir()
    x, t = datasets.load_mnist(folder, kind=args.kind, dtype=dtype)
    n_train = 8000 if args.train_size is None else args.train_size
    n_test = 2000 if args.test_size is None else args.test_size
    if n_train + n_test > len(x):
        raise ValueError(f"--train-size {n_train} + --test-size {n_test} exceeds the {len(x)} "
                         f"images of the {args.kind} set")
    return x[:n_train], t[:n_train], x[n_train:n_train + n_test], t[n_train:n_train + n_test]


def _build_model(name, input_shape, *, dtype, seed, backend, weight_init=None):
    from .nn import DeepConvNet, SimpleConvNet

    if name == "simple":
        if input_shape[1] < 16:  # the 8x8 digits: 3x3 conv with padding, He init
            return SimpleConvNet(input_shape, conv={"filters": 30, "size": 3, "pad": 1}, hidden=100,
                                 weight_init=weight_init or "he", dtype=dtype, seed=seed,
                                 backend=backend)
        return SimpleConvNet(input_shape, weight_init=weight_init or 0.01, dtype=dtype, seed=seed,
                             backend=backend)
    return DeepConvNet(input_shape, weight_init=weight_init or "he", dtype=dtype, seed=seed,
                       backend=backend)


def _first_conv_weights(net):
    for key, array in net.params.items():
        if key.endswith(".W") and array.ndim == 4:
            return array
    return None


def _plots(history, filters_before, filters_after, curves_path, filters_path, title):
    """Save the plots; return the paths written (empty when matplotlib is missing)."""
    try:
        from . import plots
    except ImportError:
        return []
    written = []
    try:
        written.append(plots.plot_history(history, curves_path, title=title))
        if filters_before is not None and filters_path:
            written.append(plots.plot_filters(filters_before, filters_after, filters_path))
    except ImportError:
        return written
    return written


def _n_threads(n):
    return _count(n, "thread")


def _fmt_time(seconds):
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


# -- commands -------------------------------------------------------------------------

def _time_steps(net, x, t, batches, optimizer_params):
    """Seconds for training steps on ``batches`` (index arrays), Adam as in training."""
    from .optim import Adam

    opt = Adam(**optimizer_params)
    start = time.perf_counter()
    for idx in batches:
        grads = net.gradient(x[idx], t[idx])
        opt.update(net.params, grads)
    return time.perf_counter() - start


def cmd_demo(args):
    import cyconv

    from . import datasets
    from .training import Trainer

    dtype = np.float32
    compiled = "cython" if "cython" in cyconv.backends_for("Conv2D") else None
    x, t = datasets.load_digits(dtype=dtype)
    x_train, t_train, x_test, t_test = datasets.train_test_split(x, t, 0.2, seed=args.seed)
    backend = compiled or "numpy"
    with _threads(args.threads):
        print(f"cyconv demo: SimpleConvNet on the 8x8 digits ({len(x_train)} train / "
              f"{len(x_test)} held-out test images), backend {backend!r}, "
              f"{_n_threads(cyconv.get_num_threads())}, float32")
        if compiled is None:
            print("note: the compiled backend is not available (see `cyconv info`); "
                  "running on the numpy backend")
        net = _build_model("simple", x.shape[1:], dtype=dtype, seed=args.seed, backend=backend)
        init_params = {k: v.copy() for k, v in net.params.items()}
        before = _first_conv_weights(net).copy()
        opt_params = {"lr": args.lr}
        trainer = Trainer(net, x_train, t_train, x_test, t_test, epochs=args.epochs,
                          batch_size=args.batch_size, optimizer="adam",
                          optimizer_params=opt_params, seed=args.seed, progress=not args.quiet)
        history = trainer.train()
        acc = history.test_acc[-1] if history.test_acc else float("nan")
        print(f"test accuracy: {acc:.2%} on {len(x_test)} held-out digits after "
              f"{_count(history.epochs, 'epoch')}; training time {_fmt_time(history.train_time)} "
              f"({history.samples_per_second:.0f} samples/s)")
        if history.interrupted:
            print("(interrupted)")
        # The same training steps on both backends: same initial weights, same batches.
        k = min(args.compare_steps, history.steps)
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(x_train))
        batches = [order[(i * args.batch_size) % len(order):][:args.batch_size]
                   for i in range(k)]
        batches = [b for b in batches if len(b)]
        timings = {}
        for name in dict.fromkeys([backend, "numpy"]):
            ref = _build_model("simple", x.shape[1:], dtype=dtype, seed=args.seed, backend=name)
            for key, value in init_params.items():
                ref.params[key][...] = value
            _time_steps(ref, x_train, t_train, batches[:2], opt_params)  # warm up
            timings[name] = _time_steps(ref, x_train, t_train, batches, opt_params) / len(batches)
        numpy_total = timings["numpy"] * history.steps
        print(f"the same {len(batches)} training steps: {backend} "
              f"{timings[backend] * 1000:.2f} ms/step, numpy {timings['numpy'] * 1000:.2f} "
              f"ms/step -> speed-up {timings['numpy'] / timings[backend]:.2f}x "
              f"(numpy backend, extrapolated to all {history.steps} steps: "
              f"{_fmt_time(numpy_total)})")
    out = args.out or "."
    os.makedirs(out, exist_ok=True)
    written = _plots(history, before, _first_conv_weights(net),
                     os.path.join(out, "cyconv-demo-curves.png"),
                     os.path.join(out, "cyconv-demo-filters.png"),
                     title="SimpleConvNet on the 8x8 digits")
    if written:
        print("plots saved: " + ", ".join(written))
    else:
        print('plots skipped: matplotlib is not installed (pip install "cyconv[demo]")')
    return 0


def _mpi_trainer():
    """DistributedTrainer, this rank and the job's size; or a one-line error saying what to install."""
    try:
        from .distributed import MPI, DistributedTrainer
    except ImportError as exc:
        raise _Fail(str(exc)) from None
    return DistributedTrainer, MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def cmd_train(args):
    import cyconv

    from .training import Trainer

    dtype = np.dtype(args.dtype)
    backend = _check_backend(args.backend)
    if args.mpi:  # every rank runs this; DistributedTrainer sets each rank's threads
        from ._threads import resolve_num_threads

        trainer_class, rank, ranks = _mpi_trainer()
        threads = contextlib.nullcontext()
        extra = {"threads_per_rank": None if args.threads is None
                 else resolve_num_threads(args.threads)}
    else:
        trainer_class, rank, ranks = Trainer, 0, 1
        threads, extra = _threads(args.threads), {}
    x_train, t_train, x_test, t_test = _load_data(args, dtype)
    say = print if rank == 0 else (lambda *a, **k: None)
    with threads:
        net = _build_model(args.model, x_train.shape[1:], dtype=dtype, seed=args.seed,
                           backend=backend, weight_init=args.init)
        if args.summary:
            net.summary(say)
        before = _first_conv_weights(net).copy()
        opt_params = {} if args.lr is None else {"lr": args.lr}
        trainer = trainer_class(net, x_train, t_train, x_test, t_test, epochs=args.epochs,
                                batch_size=args.batch_size, optimizer=args.optimizer,
                                optimizer_params=opt_params, seed=args.seed,
                                progress=not args.quiet, **extra)
        count = trainer.threads_per_rank if args.mpi else cyconv.get_num_threads()
        where = f"{ranks} MPI ranks x {_n_threads(count)}" if args.mpi else _n_threads(count)
        say(f"training {type(net).__name__} on {args.data}: {len(x_train)} train / "
            f"{len(x_test)} test images, {_count(args.epochs, 'epoch')}, batch {args.batch_size}, "
            f"{args.optimizer}{'' if args.lr is None else f' lr {args.lr:g}'}, {dtype}, "
            f"conv backend {net.layers[0].backend!r}, {where}")
        history = trainer.train()
    acc = history.test_acc[-1] if history.test_acc else float("nan")
    say(f"test accuracy {acc:.2%} after {_count(history.epochs, 'epoch')}; training time "
        f"{_fmt_time(history.train_time)} ({history.samples_per_second:.0f} samples/s)"
        + (" (interrupted)" if history.interrupted else ""))
    if args.save:
        (trainer if args.mpi else net).save_params(args.save)
        say(f"parameters saved to {args.save}")
    if args.plot and rank == 0:
        root, ext = os.path.splitext(args.plot)
        written = _plots(history, before, _first_conv_weights(net), args.plot,
                         f"{root}-filters{ext or '.png'}",
                         title=f"{type(net).__name__} on {args.data}")
        if written:
            print("plots saved: " + ", ".join(written))
        else:
            raise ImportError('--plot needs matplotlib: pip install "cyconv[demo]"')
    return 0


def cmd_layers(args):
    import cyconv

    names = cyconv.list_layers()
    backends = cyconv.list_backends()
    from ._registry import REGISTRY

    width = max(len(n) for n in names + ["layer"])
    cols = [max(len(b), 3) for b in backends]
    print("  ".join(["layer".ljust(width)] + [b.center(w) for b, w in zip(backends, cols)]))
    print("  ".join(["-" * width] + ["-" * w for w in cols]))
    for name in names:
        have = set(cyconv.backends_for(name))
        print("  ".join([name.ljust(width)] + [("x" if b in have else ".").center(w)
                                               for b, w in zip(backends, cols)]))
    for b, why in REGISTRY.unavailable_backends.items():
        print(f"backend {b!r} unavailable: {why}")
    return 0


def cmd_info(args):
    import cyconv

    cyconv.show_config()
    return 0


def cmd_bench(args):
    try:
        from . import bench
    except ImportError as exc:
        if getattr(exc, "name", None) not in ("cyconv.bench", None):
            raise
        raise _Fail("the benchmark module cyconv.bench is not available in this installation") \
            from None
    return bench.main(list(args.bench_args))


def build_parser():
    from . import __version__

    parser = _Parser(
        prog=PROG, description="cyconv: CNN layers on NumPy arrays with a compiled backend.",
        formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="train a small CNN on the 8x8 digits, compare backends",
                          formatter_class=_HelpFormatter,
                          description="Train SimpleConvNet on scikit-learn's 8x8 digits (80/20 "
                                      "split) with the compiled backend, time the same steps on "
                                      "the numpy backend and save plots.")
    demo.add_argument("--epochs", type=_positive_int, default=20, help="training epochs")
    demo.add_argument("--batch-size", type=_positive_int, default=32, help="mini-batch size")
    demo.add_argument("--lr", type=_positive_float, default=2e-3, help="Adam's learning rate")
    demo.add_argument("--seed", type=int, default=0,
                      help="seeds the split, the weights and the batches")
    demo.add_argument("--threads", type=_nonzero_int, default=1,
                      help="threads for the kernels and BLAS (-1 = all usable cores); the "
                           "8x8 digits are too small to gain from more, and extra threads "
                           "lose badly on a busy machine")
    demo.add_argument("--compare-steps", type=_positive_int, default=30,
                      help="training steps timed on each backend for the speed-up")
    demo.add_argument("--out", metavar="DIR", default=None,
                      help="folder for the plots (default: the current folder)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train a network on the digits or MNIST",
                           formatter_class=_HelpFormatter,
                           description="Train SimpleConvNet or DeepConvNet. For mnist: trained "
                                       "on images 0-7999 and tested on 8000-9999 of the t10k set "
                                       "by default.")
    train.add_argument("--data", choices=["digits", "mnist"], default="digits",
                       help="scikit-learn's 8x8 digits or MNIST IDX files")
    train.add_argument("--data-dir", metavar="DIR", default=None,
                       help="MNIST folder (default: $CYCONV_MNIST_DIR, ./mnist or "
                            "../shared/data/mnist)")
    train.add_argument("--kind", choices=["t10k", "train"], default="t10k",
                       help="which MNIST file set to read")
    train.add_argument("--model", choices=["simple", "deep"], default="simple",
                       help="the textbook's SimpleConvNet (ch. 7) or DeepConvNet (ch. 8)")
    train.add_argument("--epochs", type=_positive_int, default=10, help="training epochs")
    train.add_argument("--batch-size", type=_positive_int, default=100, help="mini-batch size")
    train.add_argument("--optimizer", choices=["sgd", "momentum", "nesterov", "adagrad",
                                               "rmsprop", "adam"], default="adam",
                       help="update rule (cyconv.optim)")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate (default: the optimizer's, 1e-3 for adam)")
    train.add_argument("--init", type=_weight_init, default=None,
                       help="weight init: he, xavier or a std (default: the model's)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="dtype of the data and the parameters")
    train.add_argument("--backend", default=None,
                       help="conv/pool/ReLU backend, e.g. cython or numpy (default: the fastest)")
    train.add_argument("--threads", type=_nonzero_int, default=None,
                       help="kernel and BLAS threads (per rank with --mpi; default: all "
                            "usable cores, shared out among a node's ranks with --mpi)")
    train.add_argument("--mpi", action="store_true",
                       help="data-parallel training over the ranks of an MPI job "
                            "(mpiexec -n 2 cyconv train --mpi ...; needs cyconv[mpi]); "
                            "--batch-size is the global batch, rank 0 prints and saves")
    train.add_argument("--seed", type=int, default=0, help="seeds the weights and the batches")
    train.add_argument("--save", metavar="FILE.npz", default=None,
                       help="save the trained parameters")
    train.add_argument("--plot", metavar="FILE.png", default=None,
                       help="learning curves; the filters go to FILE-filters.png")
    train.add_argument("--train-size", type=_positive_int, default=None,
                       help="training images (default: 80%% of the digits, 8000 of MNIST)")
    train.add_argument("--test-size", type=_positive_int, default=None,
                       help="test images (default: 20%% of the digits, 2000 of MNIST)")
    train.add_argument("--summary", action="store_true", help="print the layer table")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    layers = sub.add_parser("layers", help="registered layers x backends")
    layers.set_defaults(func=cmd_layers)
    info = sub.add_parser("info", help="versions, OpenMP, threads, BLAS, backends")
    info.set_defaults(func=cmd_info)
    bench = sub.add_parser("bench", help="benchmark the kernels (cyconv.bench)", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    """Run the command line; return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after "bench" belongs to cyconv.bench
        args = argparse.Namespace(func=cmd_bench, bench_args=argv[1:])
    else:
        args = parser.parse_args(argv)  # exits 2 with a one-line message on bad arguments
    from ._registry import BackendError, LayerNotFoundError

    try:
        return args.func(args)
    except BrokenPipeError:  # `cyconv layers | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (_Fail, ValueError, OSError, ImportError, BackendError, LayerNotFoundError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The MNIST recipe of issue 5 on cyconv and on PyTorch, seed by seed, in one run.

    python tools/mnist_vs_torch.py --data-dir ../shared/data/mnist --seeds 0 1 2 3 4

Both train the textbook's SimpleConvNet (conv 30x5x5 - ReLU - max-pool 2x2 -
affine 100 - ReLU - affine 10) on MNIST t10k images 0-7999 and test on
8000-9999: Adam lr 1e-3, batch 100, 20 epochs, weights N(0, 0.01), zero biases,
float32, each epoch a fresh permutation of the training set drawn from
``numpy.random.default_rng(seed)`` (the same batches for both libraries).
PyTorch starts from the very weights cyconv's ``SimpleConvNet(seed=seed)``
draws (``--own-init`` lets torch draw its own instead), so each seed is a
paired comparison.  The two Adams differ in where eps goes: cyconv's default
is the textbook's (1e-7 added to ``sqrt(v)``), PyTorch's is 1e-8 added to the
bias-corrected ``sqrt(v_hat)``.  ``--torch-adam`` gives cyconv PyTorch's
(``Adam(eps=1e-8, eps_placement="sqrt_v_hat")``); then the two runs differ
only by floating-point rounding, which over 20 epochs still grows into
different, equally likely end points.
cyconv runs exactly what ``cyconv train --data mnist`` runs (its Trainer);
PyTorch gets the same network in ``torch.nn`` with ``torch.optim.Adam``.
Each reports the final test accuracy and the training time (optimizer steps
only; the per-epoch evaluation is not timed), both with the same thread count.

Like ``cyconv bench``, the script re-executes itself once with
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed (they halve OpenBLAS, which
cyconv's Affine layers use through NumPy, and do not touch PyTorch's oneDNN),
unless ``--no-reexec``.  PyTorch is optional: without it only cyconv runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MARK = "CYCONV_MNIST_COMPARE_REEXEC"


def _reexec(argv):
    if "--no-reexec" in argv or os.environ.get(_MARK):
        return
    if not any(v in os.environ for v in _BLAS_VARS):
        return
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    env[_MARK] = "1"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


def load(data_dir):
    from cyconv.datasets import load_mnist

    x, t = load_mnist(data_dir, kind="t10k")
    return x[:8000], t[:8000], x[8000:10000], t[8000:10000]


def run_cyconv(data, seed, epochs, threads, adam=None):
    import numpy as np

    import cyconv
    from cyconv.nn import SimpleConvNet
    from cyconv.training import Trainer

    x_train, t_train, x_test, t_test = data
    cyconv.set_num_threads(threads)
    net = SimpleConvNet((1, 28, 28), weight_init=0.01, dtype=np.float32, seed=seed)
    trainer = Trainer(net, x_train, t_train, x_test, t_test, epochs=epochs, batch_size=100,
                      optimizer="adam", optimizer_params={"lr": 1e-3, **(adam or {})}, seed=seed,
                      progress=False)
    history = trainer.train()
    return list(history.test_acc), history.train_time


def initial_params(seed):
    """The weights cyconv's SimpleConvNet starts from for ``seed``."""
    import numpy as np

    from cyconv.nn import SimpleConvNet

    net = SimpleConvNet((1, 28, 28), weight_init=0.01, dtype=np.float32, seed=seed)
    return {key: array.copy() for key, array in net.params.items()}


def run_torch(data, seed, epochs, threads, init=None):
    import numpy as np
    import torch
    from torch import nn

    x_train, t_train, x_test, t_test = data
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                        nn.Linear(30 * 12 * 12, 100), nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        if init is None:
            for module in net:
                if hasattr(module, "weight"):
                    module.weight.normal_(0.0, 0.01)
                    module.bias.zero_()
        else:  # torch's Flatten is a module, so its later indices are one higher
            for torch_index, cyconv_index in ((0, 0), (4, 3), (6, 5)):
                weight = init[f"{cyconv_index}.W"]
                if weight.ndim == 2:  # cyconv's Affine W is (in, out); Linear's is (out, in)
                    weight = weight.T.copy()
                net[torch_index].weight.copy_(torch.from_numpy(weight))
                net[torch_index].bias.copy_(torch.from_numpy(init[f"{cyconv_index}.b"]))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    t = torch.from_numpy(np.asarray(t_train, dtype=np.int64))
    x_eval = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
    rng = np.random.default_rng(seed)  # the Trainer's shuffling, batch for batch
    train_time = 0.0
    test_acc = []
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        t0 = time.perf_counter()
        for start in range(0, len(x), 100):
            idx = order[start:start + 100]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[idx]), t[idx])
            loss.backward()
            opt.step()
        train_time += time.perf_counter() - t0
        with torch.no_grad():
            scores = net(x_eval)
        test_acc.append(float((scores.argmax(1).numpy() == np.asarray(t_test)).mean()))
    return test_acc, train_time


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-adam", action="store_true",
                        help="cyconv's Adam adds eps=1e-8 to sqrt(v_hat), as PyTorch's does")
    parser.add_argument("--own-init", action="store_true",
                        help="torch draws its own N(0, 0.01) weights instead of cyconv's")
    parser.add_argument("--no-reexec", action="store_true")
    args = parser.parse_args(argv)
    _reexec(argv)
    data = load(args.data_dir)
    runners = {"cyconv": run_cyconv}
    if not args.no_torch:
        try:
            import torch
            runners["torch " + torch.__version__.split("+")[0]] = run_torch
        except ImportError:
            print("torch is not importable: cyconv only")
    adam_eps = "PyTorch's" if args.torch_adam else "the textbook's"
    weights = "its own" if args.own_init else "cyconv's"
    print(f"MNIST t10k 0-7999 / 8000-9999, SimpleConvNet, Adam 1e-3, batch 100, "
          f"{args.epochs} epochs, std 0.01, float32, {args.threads} threads; "
          f"cyconv's Adam eps: {adam_eps}; torch's initial weights: {weights}")
    results = {name: [] for name in runners}
    for seed in args.seeds:
        init = None if args.own_init else initial_params(seed)
        for name, run in runners.items():  # alternate, so load drifts hit both alike
            if run is run_torch:
                extra = {"init": init}
            else:
                extra = {"adam": {"eps": 1e-8, "eps_placement": "sqrt_v_hat"}
                         if args.torch_adam else None}
            curve, secs = run(data, seed, args.epochs, args.threads, **extra)
            results[name].append((curve, secs))
            print(f"seed {seed}  {name:12s} test accuracy {curve[-1]:.2%}  "
                  f"training {secs:.1f} s", flush=True)
    target = 0.98
    for name, rows in results.items():
        finals = [curve[-1] for curve, _ in rows]
        secs = [s for _, s in rows]
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        print(f"{name:12s} final accuracy median {statistics.median(finals):.2%} "
              f"mean {statistics.mean(finals):.2%} sd {spread:.2%} "
              f"(min {min(finals):.2%}, max {max(finals):.2%}); "
              f"{sum(a >= target for a in finals)}/{len(finals)} seeds >= {target:.1%}; "
              f"training time median {statistics.median(secs):.1f} s")
        means = [statistics.mean(curve[e] for curve, _ in rows) for e in range(args.epochs)]
        print(f"{'':12s} mean accuracy by epoch: "
              + " ".join(f"{a * 100:.2f}" for a in means))
    if len(results) == 2 and len(args.seeds) > 1:
        (_, ours), (_, theirs) = results.items()
        diffs = [a[0][-1] - b[0][-1] for a, b in zip(ours, theirs)]
        error = statistics.stdev(diffs) / len(diffs) ** 0.5
        print(f"paired difference cyconv - torch: mean {statistics.mean(diffs) * 100:+.2f} "
              f"points, standard error {error * 100:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

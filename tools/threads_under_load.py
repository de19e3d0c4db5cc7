"""The README's tutorial training under cyconv's thread knob, machine idle and busy
(docs/performance.md, "One thread knob").

    python tools/threads_under_load.py --epochs 5 --rounds 3 --busy 2

The workload is the README's tutorial: the digits (1437 training images), the
Conv2D(30, 3) - ReLU - MaxPool2D - Affine(100) - ReLU - Affine(10) network,
float32, Adam lr 2e-3, batch 32, seed 0, ``--epochs`` epochs (the README runs
20), timed around ``Trainer.train()`` (no progress bar).  Each configuration runs
in a fresh process:

* ``default``: nothing set (all usable cores for the kernels and, inside
  cyconv's products, for numpy's BLAS, fewer for a small product);
* ``1 thread``: ``CYCONV_NUM_THREADS=1``;
* ``BLAS untouched``: the default, with cyconv's BLAS guard switched off in
  that process, so numpy's BLAS runs its own count (all cores), as before the
  knob governed it.

"busy" runs the same with ``--busy`` extra processes spinning
(``python -c "while 1: pass"``) for the whole of each run.  Rounds interleave the
configurations (every round runs each once, idle then busy), so a slow spell
of a shared machine shows up as spread between rounds; the load average seen
at each run's start is printed with it.  Reported: median and range over
rounds of the training time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r'''
import json, sys, time
import numpy as np
import cyconv
from cyconv import _blas, datasets
from cyconv.nn import Sequential
from cyconv.training import Trainer

if sys.argv[1] == "untouched":
    _blas._BlasThreads = _blas._Untouched
x, t = datasets.load_digits(dtype=np.float32)
x_train, t_train, x_test, t_test = datasets.train_test_split(x, t, test_fraction=0.2, seed=0)
net = Sequential([
    cyconv.Conv2D(30, 3, padding=1), cyconv.ReLU(), cyconv.MaxPool2D(2),
    cyconv.Affine(100), cyconv.ReLU(), cyconv.Affine(10),
], input_shape=(1, 8, 8), dtype=np.float32, weight_init="he", seed=0)
trainer = Trainer(net, x_train, t_train, x_test, t_test, epochs=int(sys.argv[2]),
                  batch_size=32, optimizer="adam", optimizer_params={"lr": 2e-3}, seed=0,
                  progress=False)
start = time.perf_counter()
history = trainer.train()
print(json.dumps(dict(seconds=time.perf_counter() - start, acc=history.test_acc[-1],
                      threads=cyconv.get_num_threads())))
'''

CONFIGS = {"default": ("guarded", {}),
           "1 thread": ("guarded", {"CYCONV_NUM_THREADS": "1"}),
           "BLAS untouched": ("untouched", {})}


def run(name, epochs, busy):
    mode, extra = CONFIGS[name]
    env = {k: v for k, v in os.environ.items()
           if k not in ("CYCONV_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env.update(extra)
    spinners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(busy)]
    try:
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, "-c", CHILD, mode, str(epochs)], env=env,
                             capture_output=True, text=True, check=True, timeout=1800)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="spinning processes when busy")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args(argv)
    times = {(name, state): [] for name in args.configs for state in ("idle", "busy")}
    for r in range(args.rounds):
        for state, busy in (("idle", 0), ("busy", args.busy)):
            for name in args.configs:
                result = run(name, args.epochs, busy)
                times[name, state].append(result["seconds"])
                print(f"round {r + 1} {state:4s} {name:15s} {result['seconds']:7.2f} s  "
                      f"acc {result['acc']:.4f}  threads {result['threads']}  "
                      f"load avg at start {result['load']:.1f}", flush=True)
    print(f"\n{args.epochs} epochs of the README tutorial, median (min-max) over "
          f"{args.rounds} rounds; busy = {args.busy} spinning processes")
    for (name, state), values in times.items():
        print(f"{state:4s} {name:15s} {statistics.median(values):7.2f} s "
              f"({min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()

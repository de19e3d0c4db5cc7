"""The MNIST recipe as 1 process x 2 threads against 2 MPI ranks x 1 thread, and a
step-time model for more ranks (docs/scaling.md).

    python tools/scaling_mnist.py --data-dir ../shared/data/mnist --epochs 3 --rounds 3

The recipe is ``cyconv train --data mnist``'s: the textbook's SimpleConvNet on
MNIST t10k images 0-7999, tested on 8000-9999, Adam lr 1e-3, global batch 100,
init std 0.01, float32, seed 0.  Each round runs both configurations, one after
the other, in fresh processes (the single process through
:class:`cyconv.training.Trainer`, the ranks through
:class:`cyconv.distributed.DistributedTrainer` under ``mpiexec -n 2``), so a
slow spell of a shared machine shows up as spread between rounds.  Reported:
per-epoch training time (optimizer steps only; the evaluation is not timed),
median and range over rounds x epochs, and the final test accuracy.

Then, in one process on one thread, it measures the compute of one training step
at the local batch a rank gets out of the global 100 for 1, 2, 4, ... ranks, and,
under ``mpiexec -n 2``, an ``Allreduce`` of the parameter count between the two
local ranks (shared memory), both as the fastest of repeated runs (the least
disturbed on a shared machine), and prints the model ``step(p) = compute(100 / p) + allreduce(p)``
with a ring allreduce over a network of the given bandwidths:
``2 (p - 1) / p * bytes / bandwidth + 2 (p - 1) * latency``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)


def load(data_dir):
    from cyconv.datasets import load_mnist

    x, t = load_mnist(data_dir, kind="t10k")
    return x[:8000], t[:8000], x[8000:10000], t[8000:10000]


def make_net():
    import numpy as np

    from cyconv.nn import SimpleConvNet

    return SimpleConvNet((1, 28, 28), weight_init=0.01, dtype=np.float32, seed=0)


def worker(args):
    """One configuration: print one JSON line (rank 0)."""
    import cyconv

    data = load(args.data_dir)
    kwargs = dict(epochs=args.epochs, batch_size=100, optimizer="adam",
                  optimizer_params={"lr": 1e-3}, seed=0, progress=False)
    if args.mpi:
        from cyconv.distributed import MPI, DistributedTrainer

        trainer = DistributedTrainer(make_net(), *data, threads_per_rank=args.threads, **kwargs)
        rank, ranks = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    else:
        from cyconv.training import Trainer

        cyconv.set_num_threads(args.threads)
        trainer, rank, ranks = Trainer(make_net(), *data, **kwargs), 0, 1
    history = trainer.train()
    if rank == 0:
        print(json.dumps({"ranks": ranks, "threads": args.threads,
                          "epoch_time": history.epoch_time, "test_acc": history.test_acc}))


def step_costs(args):
    """Compute per step at each local batch, one thread, no MPI (a process of its own)."""
    import numpy as np

    import cyconv
    from cyconv.optim import Adam

    x_train, t_train, _, _ = load(args.data_dir)
    cyconv.set_num_threads(1)
    net, opt = make_net(), Adam(lr=1e-3)
    compute = {}
    for ranks in (1, 2, 4, 8, 16, 32):
        local = 100 // ranks
        times = []
        for rep in range(args.steps):
            idx = np.arange(rep * local, (rep + 1) * local) % len(x_train)
            start = time.perf_counter()
            opt.update(net.params, net.gradient(x_train[idx], t_train[idx]))
            times.append(time.perf_counter() - start)
        compute[ranks] = min(times[2:])  # the least disturbed: the machine is shared
    print(json.dumps({"params": net.num_params(), "bytes": 4 * net.num_params(),
                      "compute": compute}))


def allreduce_cost(args):
    """The Allreduce of the parameter count between the local ranks (rank 0 prints)."""
    import numpy as np

    from cyconv.distributed import MPI

    comm = MPI.COMM_WORLD
    flat = np.zeros(make_net().num_params(), dtype=np.float32)
    times = []
    for _ in range(100):
        comm.Barrier()
        start = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        times.append(time.perf_counter() - start)
    if comm.Get_rank() == 0:
        print(json.dumps({"allreduce_local": min(times)}))


def run(command):
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_table(costs, bandwidths_gbit, latency):
    nbytes = costs["bytes"]
    rows = []
    for ranks_text, compute in sorted(costs["compute"].items(), key=lambda kv: int(kv[0])):
        ranks = int(ranks_text)
        row = [ranks, 100 // ranks, compute * 1e3]
        for gbit in bandwidths_gbit:
            ring = 0.0 if ranks == 1 else (2 * (ranks - 1) / ranks * nbytes / (gbit * 1e9 / 8)
                                           + 2 * (ranks - 1) * latency)
            row += [ring * 1e3, (compute + ring) * 1e3]
        rows.append(row)
    base = rows[0][2]
    print(f"\nmodel: {costs['params']:,} parameters = {nbytes / 1e6:.2f} MB per Allreduce; "
          f"latency {latency * 1e6:.0f} us per message; compute measured on 1 thread "
          f"(fastest of the timed steps)")
    head = "| ranks | local batch | compute ms |"
    for gbit in bandwidths_gbit:
        head += f" allreduce ms @ {gbit:g} Gbit/s | step ms | speed-up |"
    print(head)
    print("|" + "---|" * (3 + 3 * len(bandwidths_gbit)))
    for row in rows:
        cells = [f"{row[0]}", f"{row[1]}", f"{row[2]:.2f}"]
        for k in range(len(bandwidths_gbit)):
            ring, step = row[3 + 2 * k], row[4 + 2 * k]
            cells += [f"{ring:.2f}", f"{step:.2f}", f"{base / step:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    print(f"measured Allreduce between the 2 local ranks (shared memory): "
          f"{costs['allreduce_local'] * 1e3:.2f} ms")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "mnist"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps timed per local batch")
    parser.add_argument("--bandwidth", type=float, nargs="+", default=[10.0, 100.0],
                        help="network bandwidths of the model, Gbit/s")
    parser.add_argument("--latency", type=float, default=20e-6, help="seconds per message")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--costs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allreduce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.costs:
        return step_costs(args)
    if args.allreduce:
        return allreduce_cost(args)
    mpiexec = shutil.which("mpiexec", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                            os.environ.get("PATH", "")]))
    if mpiexec is None:
        sys.exit('no mpiexec: pip install "cyconv[mpi]"')
    common = [HERE, "--worker", "--data-dir", args.data_dir, "--epochs", str(args.epochs)]
    configs = {"1 process x 2 threads": [sys.executable, *common, "--threads", "2"],
               "2 ranks x 1 thread": [mpiexec, "-n", "2", sys.executable, *common, "--mpi",
                                      "--threads", "1"]}
    results = {name: [] for name in configs}
    loads = []
    for r in range(args.rounds):
        order = list(configs.items())
        for name, command in (order if r % 2 == 0 else order[::-1]):  # alternate who goes first
            loads.append(os.getloadavg()[0])
            results[name].append(run(command))
            times = results[name][-1]["epoch_time"]
            print(f"round {r + 1} {name}: epochs {', '.join(f'{t:.2f}' for t in times)} s, "
                  f"test accuracy {results[name][-1]['test_acc'][-1]:.2%} (load average "
                  f"{loads[-1]:.1f} at the start)", flush=True)
    print(f"machine: {os.cpu_count()} cores; 1-minute load average at the starts "
          f"{min(loads):.1f}-{max(loads):.1f} (this run adds up to 2)")
    print(f"\n| configuration | time per epoch, median (min-max) over {args.rounds} rounds x "
          f"{args.epochs} epochs | test accuracy after {args.epochs} epochs |")
    print("|---|---|---|")
    medians = {}
    for name, runs in results.items():
        times = [t for res in runs for t in res["epoch_time"]]
        accs = sorted({res["test_acc"][-1] for res in runs})
        medians[name] = statistics.median(times)
        print(f"| {name} | {medians[name]:.2f} s ({min(times):.2f}-{max(times):.2f}) | "
              f"{', '.join(f'{a:.2%}' for a in accs)} |")
    one, two = medians.values()
    print(f"2 ranks / 1 process, time per epoch: {two / one:.2f}")
    costs = run([sys.executable, HERE, "--costs", "--data-dir", args.data_dir,
                 "--steps", str(args.steps)])
    costs.update(run([mpiexec, "-n", "2", sys.executable, HERE, "--allreduce"]))
    model_table(costs, args.bandwidth, args.latency)


if __name__ == "__main__":
    main()

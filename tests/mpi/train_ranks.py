"""Run by tests/test_distributed.py under ``mpiexec -n 2``: DistributedTrainer on the digits.

``python train_ranks.py OUT_DIR`` writes, from rank 0, ``OUT_DIR/result.json`` and
the parameter files the test compares with single-process training;
``python train_ranks.py OUT_DIR --raise-on-rank 1`` makes that rank raise at step 3.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
from mpi4py import MPI

import cyconv
from cyconv import datasets
from cyconv.distributed import DistributedTrainer
from cyconv.nn import SimpleConvNet

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()


class CountingComm:
    """COMM_WORLD, recording which collectives the trainer calls."""

    def __init__(self, comm):
        self._comm = comm
        self.calls = []

    def Allreduce(self, sendbuf, recvbuf, op):
        self.calls.append(("Allreduce", np.asarray(recvbuf).size, np.asarray(recvbuf).dtype.str))
        return self._comm.Allreduce(sendbuf, recvbuf, op=op)

    def __getattr__(self, name):
        attr = getattr(self._comm, name)
        if callable(attr) and name[0].islower() and not name.startswith("Get"):
            def recorded(*args, **kwargs):
                self.calls.append((name, None, None))
                return attr(*args, **kwargs)
            return recorded
        return attr


def make_net(seed, dtype):
    return SimpleConvNet((1, 8, 8), conv={"filters": 30, "size": 3, "pad": 1}, hidden=100,
                         weight_init="he", dtype=dtype, seed=seed)


def digest(net):
    h = hashlib.sha256()
    for key in sorted(net.params):
        h.update(np.ascontiguousarray(net.params[key]).tobytes())
    return h.hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--raise-on-rank", type=int, default=None)
    args = parser.parse_args()
    x, t = datasets.load_digits(dtype=np.float32)
    x_train, t_train, x_test, t_test = datasets.train_test_split(x, t, 0.2, seed=0)
    result = {"size": COMM.Get_size()}

    if args.raise_on_rank is not None:
        def fail(trainer, epoch, step, loss):
            if RANK == args.raise_on_rank and step == 3:
                raise ValueError(f"deliberate failure on rank {RANK} at step {step}")
        DistributedTrainer(make_net(0, np.float32), x_train, t_train, epochs=1, batch_size=32,
                           seed=0, progress=False, callback=fail).train()
        return

    # 1. The digits recipe, 2 ranks; every rank starts from its own seed (rank 0's wins)
    #    and the parameters are compared across ranks after every step.
    net = make_net(RANK, np.float32)
    comm = CountingComm(COMM)
    digests, threads_seen = [], set()

    def check(trainer, epoch, step, loss):
        # recorded here, compared after training: no extra collective per step
        threads_seen.add(cyconv.get_num_threads())
        digests.append(digest(trainer.network))

    threads_before = cyconv.get_num_threads()
    trainer = DistributedTrainer(net, x_train, t_train, x_test, t_test, comm=comm, epochs=20,
                                 batch_size=32, optimizer="adam",
                                 optimizer_params={"lr": 2e-3}, seed=0, callback=check,
                                 file=sys.stdout)
    init_calls = len(comm.calls)
    history = trainer.train()
    train_calls = comm.calls[init_calls:]
    everyone = COMM.gather(digests, root=0)
    mismatches = [] if RANK else [step for step, d in enumerate(zip(*everyone))
                                  if len(set(d)) != 1]
    initial = COMM.gather(digest(make_net(RANK, np.float32)), root=0)
    trainer.save_params(os.path.join(args.out, "digits.npz"))
    result["digits"] = {
        "history": history.as_dict(), "mismatches": mismatches, "initial_digests": initial,
        "steps_checked": len(digests) if RANK else min(map(len, everyone)),
        "threads_per_rank": trainer.threads_per_rank,
        "threads_seen": sorted(threads_seen), "threads_after": cyconv.get_num_threads(),
        "threads_before": threads_before,
        "train_collectives": sorted({name for name, _, _ in train_calls}),
        "allreduce_sizes": [size for name, size, _ in train_calls if name == "Allreduce"],
        "num_params": net.num_params(),
        "evaluate": list(trainer.evaluate(x_test, t_test)),
    }

    # 2. 20 steps of Adam from the same start, float64 and float32, global batch 64.
    for dtype in (np.float64, np.float32):
        net = make_net(0, dtype)
        DistributedTrainer(net, x_train[:1280], t_train[:1280], epochs=1, batch_size=64,
                           optimizer="adam", optimizer_params={"lr": 1e-3}, seed=3,
                           progress=False).train()
        if RANK == 0:
            net.save_params(os.path.join(args.out, f"steps20-{np.dtype(dtype).name}.npz"))

    # 3. A last global batch of one sample: rank 1 gets none in that step.
    net = make_net(0, np.float64)
    tr = DistributedTrainer(net, x_train[:33], t_train[:33], epochs=2, batch_size=4,
                            optimizer="sgd", optimizer_params={"lr": 0.1}, seed=5,
                            progress=False)
    shares = [[idx.tolist() for idx, _ in tr._epoch_batches(np.arange(33))]]
    result["shares"] = COMM.gather(shares[0], root=0)
    tr.train()
    result["uneven_digests"] = COMM.allgather(digest(net))
    if RANK == 0:
        net.save_params(os.path.join(args.out, "uneven.npz"))
        with open(os.path.join(args.out, "result.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()

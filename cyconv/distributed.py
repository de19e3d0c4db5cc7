"""Data-parallel training on MPI (``pip install "cyconv[mpi]"``: mpi4py and MPICH).

:class:`DistributedTrainer` is :class:`cyconv.training.Trainer` run by every
rank of an MPI job (``mpiexec -n 4 python train.py``), in Horovod's design.

Design:

* Rank 0's initial parameters are broadcast to every rank (one ``Bcast`` of a
  flat buffer) when the trainer is made, so the ranks start identical whatever
  seed each one built its network with; the shuffling seed is rank 0's too.
* Every rank draws the same permutation each epoch and cuts it into the same
  global mini-batches of ``batch_size``; each rank takes its contiguous share of
  every global batch.  So every sample is seen exactly once per epoch across the
  ranks, and ``batch_size`` means the same global batch as in one process.
* Per step each rank computes the mean gradient of its share, scales it by its
  share of the global batch (``n_local / n_global``, exact for halves) into one
  preallocated contiguous buffer, and the ranks sum it with one ``Allreduce``
  (the buffer method: no pickling, nothing allocated per step).  The result is
  the global batch's mean gradient; every rank applies the same optimizer step
  to the same parameters, so the parameters stay identical on every rank (the
  sum is the same on every rank: IEEE addition is commutative, and MPICH's
  algorithms give every rank the same combination).
* Against one process with the same global batch, the only difference is the
  order of floating-point summation over the batch (and NumPy's matrix product,
  whose rounding depends on the batch size): the trajectories agree to rounding
  (tests/test_distributed.py states and checks the tolerance over 20 steps).
  Layers that depend on the batch statistics (BatchNorm) or draw random numbers
  (Dropout) see each rank's share alone, as in Horovod.
* The per-epoch training loss/accuracy and the evaluation on the test set are
  reduced across ranks (each rank evaluates a contiguous slice of the test set),
  so every rank's :class:`~cyconv.training.History` holds the global values
  (``epoch_time`` is the rank's own).  Only rank 0 prints and shows progress;
  :meth:`DistributedTrainer.save_params` writes on rank 0 only.
* Threads: each rank's kernels use ``threads_per_rank`` threads (default: an
  explicit ``cyconv.set_num_threads``/``CYCONV_NUM_THREADS``, else this node's
  cores shared out among the node's ranks), set for the training thread only
  (``local_num_threads``), and, being cyconv's one thread knob, it governs the
  rank's BLAS products too (cyconv's own calls only; the user's BLAS setting is
  in force between them); more threads than the node's cores is refused.
* A rank that raises does not leave the others waiting in a collective: the
  trainer's collective sections run under :func:`abort_on_error`, which prints
  the traceback and calls ``MPI.COMM_WORLD.Abort``, ending the whole job.
  Ctrl-C aborts too (a rank stopping on its own would hang the others).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

import numpy as np

try:
    from mpi4py import MPI
except ImportError as exc:  # pragma: no cover - exercised by the import test in a subprocess
    raise ImportError('cyconv.distributed needs mpi4py and an MPI library: '
                      'pip install "cyconv[mpi]" (mpi4py and the mpich wheel)') from exc

from . import _threads
from ._param_validation import check
from .training import Trainer

__all__ = ["DistributedTrainer", "abort_on_error"]


@contextlib.contextmanager
def abort_on_error(comm=None):
    """Abort the whole MPI job if the block raises on this rank (instead of a hang).

    The traceback is printed to this rank's stderr, prefixed by the rank, and
    ``MPI.COMM_WORLD.Abort`` ends every rank (exit status 1; 130 for Ctrl-C).
    ``SystemExit(0)`` passes through, and so does everything when ``comm`` has
    a single rank: nobody waits for it, and the caller gets the exception.
    For a whole script, ``mpiexec -n N python -m mpi4py script.py`` aborts on
    an uncaught exception too.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    try:
        yield
    except BaseException as exc:
        if comm.Get_size() == 1 or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            raise
        sys.stdout.flush()
        sys.stderr.write(f"cyconv.distributed: rank {comm.Get_rank()} of {comm.Get_size()} "
                         f"raised {type(exc).__name__}; aborting all ranks\n")
        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(130 if isinstance(exc, KeyboardInterrupt) else 1)


def _node_threads(comm, threads_per_rank):
    """Threads for this rank's kernels: asked for, or this node's cores shared out."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        mine = _threads.usable_cpus()
        node_cores = len(set().union(*node.allgather(sorted(mine))))
        ranks = node.Get_size()
    finally:
        node.Free()
    if threads_per_rank is None:
        explicit = _threads.explicit_num_threads()
        if explicit is not None:
            return _threads.resolve_num_threads(explicit)
        return max(1, min(len(mine), node_cores // ranks))
    if threads_per_rank * ranks > node_cores:
        raise ValueError(f"threads_per_rank={threads_per_rank} puts {threads_per_rank * ranks} "
                         f"threads on a node with {node_cores} cores for {ranks} ranks: use "
                         f"threads_per_rank={max(1, node_cores // ranks)} or fewer, or None")
    return threads_per_rank


class DistributedTrainer(Trainer):
    """:class:`cyconv.training.Trainer` on every rank of an MPI communicator.

    Every rank constructs it with the same arguments (each rank holds the whole
    training and test sets, or memory maps of them) and calls :meth:`train`;
    see the module docstring for what each step does.

    Parameters
    ----------
    network, x_train, t_train, x_test, t_test
        As in :class:`~cyconv.training.Trainer`; the network's parameters must
        share one dtype (a :class:`cyconv.nn.Sequential`'s do).
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    threads_per_rank : int, optional
        Kernel (and BLAS) threads per rank; default: ``cyconv.set_num_threads``
        or ``CYCONV_NUM_THREADS`` if set, else the node's cores divided by the
        node's ranks.
    batch_size : int
        The *global* mini-batch: each step uses ``batch_size`` samples in all,
        split among the ranks.
    progress, file
        Honoured on rank 0; the other ranks are silent.
    callback : callable, optional
        Called on every rank after every step with that rank's own batch loss
        (None when the rank had no sample in that step).
    **kwargs
        The other :class:`~cyconv.training.Trainer` arguments.
    """

    def __init__(self, network, x_train, t_train, x_test=None, t_test=None, *, comm=None,
                 threads_per_rank=None, seed=None, progress=True, **kwargs):
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        with abort_on_error(self.comm):
            if threads_per_rank is not None:
                threads_per_rank = check("threads_per_rank", threads_per_rank)
            if seed is None and self.rank == 0:
                seed = int(np.random.SeedSequence().entropy % 2**63)
            seed = self.comm.bcast(seed, root=0)
            super().__init__(network, x_train, t_train, x_test, t_test, seed=seed,
                             progress=progress and self.rank == 0, **kwargs)
            self._check_same_everywhere()
            self.threads_per_rank = _node_threads(self.comm, threads_per_rank)
            self._flat, self._views = self._flat_buffer()
            self._broadcast_params()

    # -- set-up ----------------------------------------------------------------------------
    def _check_same_everywhere(self):
        """Every rank must hold rank 0's network layout and data set sizes (all ranks raise)."""
        layout = [(key, tuple(p.shape), p.dtype.str) for key, p in self.network.params.items()]
        mine = {"network parameters (key, shape, dtype)": layout,
                "training set size": len(self.x_train),
                "test set size": None if self.x_test is None else len(self.x_test)}
        everyone = self.comm.allgather(mine)
        for rank, theirs in enumerate(everyone):
            for what, value in theirs.items():
                if value != everyone[0][what]:
                    raise ValueError(f"rank {rank}'s {what} differ from rank 0's: {value} vs "
                                     f"{everyone[0][what]}; every rank must build the same "
                                     f"network and load the same data")

    def _flat_buffer(self):
        params = self.network.params
        dtypes = {p.dtype for p in params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
            raise TypeError(f"the network's parameters must share one float32 or float64 "
                            f"dtype for the flat gradient buffer, got {sorted(map(str, dtypes))}")
        flat = np.empty(sum(p.size for p in params.values()), dtype=next(iter(dtypes)))
        views, offset = {}, 0
        for key, p in params.items():
            views[key] = flat[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        return flat, views

    def _broadcast_params(self):
        params = self.network.params
        if self.rank == 0:
            for key, view in self._views.items():
                view[...] = params[key]
        self.comm.Bcast(self._flat, root=0)
        for key, view in self._views.items():
            params[key][...] = view

    # -- the Trainer hooks -----------------------------------------------------------------
    def _epoch_batches(self, order):
        return [(idx[slice(*_share(count, self.rank, self.size))], count)
                for idx, count in super()._epoch_batches(order)]

    def _combine_gradients(self, grads, n_local, n_global):
        if grads is None:
            self._flat[...] = 0
        else:
            share = n_local / n_global
            for key, view in self._views.items():
                np.multiply(grads[key], share, out=view, casting="same_kind")
        self.comm.Allreduce(MPI.IN_PLACE, self._flat, op=MPI.SUM)
        return self._views

    def _epoch_totals(self, loss_sum, correct, seen):
        totals = np.array([loss_sum, correct, seen], dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        return float(totals[0]), int(round(totals[1])), int(round(totals[2]))

    def _evaluate(self, x, t):
        lo, hi = _share(len(x), self.rank, self.size)
        totals = np.zeros(3)
        if hi > lo:
            loss, acc = super()._evaluate(x[lo:hi], t[lo:hi])
            totals[:] = loss * (hi - lo), round(acc * (hi - lo)), hi - lo
        self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])

    def _on_interrupt(self):
        raise KeyboardInterrupt  # under abort_on_error: the whole job stops

    # -- public ----------------------------------------------------------------------------
    def train(self):
        """Train on every rank; return the :class:`~cyconv.training.History` (global values)."""
        with abort_on_error(self.comm):
            # the one knob: the rank's OpenMP kernels and its BLAS products alike
            with _threads.local_num_threads(self.threads_per_rank):
                return super().train()

    def evaluate(self, x, t):
        """``(mean loss, accuracy)`` over ``(x, t)``, each rank evaluating a slice."""
        with abort_on_error(self.comm):
            return self._evaluate(x, t)

    def save_params(self, path):
        """Save the network's parameters on rank 0 (the others wait for it); return ``path``."""
        with abort_on_error(self.comm):
            if self.rank == 0:
                self.network.save_params(path)
            self.comm.Barrier()
        return os.fspath(path)


def _share(n, rank, size):
    """Bounds of rank's contiguous slice of n items (the first n % size ranks get one more)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)

"""Thread-count settings: the one helper that owns their semantics.

* ``None``: the global setting (:func:`set_num_threads` or the
  ``CYCONV_NUM_THREADS`` environment variable), else all usable cores.
* "All usable cores" respects the CPU affinity mask and ``OMP_NUM_THREADS`` as
  it was when cyconv was imported (the OpenMP runtime, too, reads it once, when
  it loads): a library that sets it later for the processes it starts (a Dask
  nanny sets ``OMP_NUM_THREADS=1`` in the parent before spawning its workers)
  does not change this process's thread count.
* A negative count counts back from that maximum: ``-1`` is all cores,
  ``-2`` all but one.
* Out of range -- one rule, never silent: a count outside ``1`` to
  :func:`max_usable_threads` gets one :class:`ThreadCountWarning` (per count
  and core count, per process) and then runs as close to the request as
  possible.  A count above the usable cores is honoured, as PyTorch's
  ``set_num_threads`` and scikit-learn's ``n_jobs`` honour it (someone
  measuring oversubscription asked for it; everyone else learns that the
  extra threads only wait for a core).  A negative count that counts back
  past the first core (``-3`` on 2 cores) runs on one thread.
* ``0`` is an error, as is anything that is not an integer.
* One count governs all of cyconv's threads: the OpenMP kernels run it, and
  numpy's BLAS runs it inside cyconv's matrix products (``Affine``, the numpy
  backend's convolution), see :mod:`cyconv._blas`; outside cyconv's calls the
  user's BLAS setting (``OPENBLAS_NUM_THREADS``, ``threadpool_limits``) is in
  force.  Like the kernels, a product runs fewer threads than the count when
  it is too small to pay for waking them (:func:`threads_for_work`; BLAS
  threads cost more to wake than OpenMP's, so they need more work each,
  :data:`BLAS_WORK_PER_THREAD`): the count is a maximum, as PyTorch's is.
* In a process made by ``fork()`` after cyconv ran threaded kernels in the
  parent, every count resolves to 1 (with one :class:`ThreadsAfterForkWarning`):
  GNU OpenMP (libgomp) keeps the parent's thread pool in its state, but the
  child has none of its threads, so the child's first multi-threaded parallel
  region would wait for them forever.  A one-thread region never touches the
  pool.  Explicit requests (``n_threads=``, :func:`set_num_threads`) resolve to
  1 there too; the ``spawn`` and ``forkserver`` start methods give workers
  their threads back.

Kernels only ever see the positive count returned by
:func:`resolve_num_threads`, so every ``prange`` kernel (conv, pools, ReLU,
Adam, and compiled plugins that ask :func:`get_num_threads`) and every BLAS
product (:func:`blas_thread_count`) is covered here.

:func:`local_num_threads` overrides the setting for the calling thread only
(a Dask task on a threaded worker, an MPI rank's training loop), so that code
running tasks side by side never writes the process-wide setting.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings

from ._param_validation import PARAMS

__all__ = ["set_num_threads", "get_num_threads", "resolve_num_threads", "max_usable_threads",
           "ThreadsAfterForkWarning", "ThreadCountWarning", "blas_thread_count",
           "threads_for_work"]

_lock = threading.Lock()
_global_setting = None  # None: follow CYCONV_NUM_THREADS / all cores
_local = threading.local()  # .n_threads: this thread's override (local_num_threads)


def _omp_cap(value):
    """The thread cap an ``OMP_NUM_THREADS`` value sets (its first level), or None."""
    first = (value or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


# Read once, at import, like the OpenMP runtime does (see the module docstring).
_OMP_CAP = _omp_cap(os.environ.get("OMP_NUM_THREADS"))


def usable_cpus():
    """The CPUs the affinity mask lets this process use (all of them where there is no mask)."""
    try:
        return set(os.sched_getaffinity(0)) or {0}
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cores():
    """How many CPUs the affinity mask lets this process use, at least 1."""
    return len(usable_cpus())

# Fork safety.  _threads_resolved: this process has handed out (or reported) a
# count above 1, so libgomp may hold a thread pool.  _forked_after_threads: this
# process is a fork() child of such a process (or of such a child), where only
# one-thread parallel regions are safe.  Plain bools, written by one statement.
_threads_resolved = False
_forked_after_threads = False
_fork_warning_due = True


class ThreadsAfterForkWarning(RuntimeWarning):
    """cyconv's kernels run on one thread in this process, because it was made
    by ``fork()`` after its parent ran multi-threaded (OpenMP) kernels."""


_FORK_MESSAGE = (
    "cyconv: this process was made by fork() after cyconv ran multi-threaded kernels in "
    "its parent. GNU OpenMP cannot start threads in such a child (the first parallel "
    "region would hang), so cyconv's kernels run on one thread here, whatever n_threads "
    "or set_num_threads ask for. To run threaded kernels in worker processes, start them "
    "with the 'spawn' or 'forkserver' method, e.g. "
    "multiprocessing.get_context('forkserver').Pool(...) or "
    "concurrent.futures.ProcessPoolExecutor(mp_context=multiprocessing.get_context('spawn')).")


def _after_fork_in_child():
    global _forked_after_threads, _fork_warning_due
    if _threads_resolved:
        _forked_after_threads = True
        _fork_warning_due = True  # once per process


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _single_thread_after_fork():
    """The count for a forked child of a threaded parent: 1, said once."""
    global _fork_warning_due
    if _fork_warning_due:
        _fork_warning_due = False
        warnings.warn(_FORK_MESSAGE, ThreadsAfterForkWarning, stacklevel=4)
    return 1


class ThreadCountWarning(RuntimeWarning):
    """A thread count outside 1 to :func:`max_usable_threads` was asked for: a
    count above the cores runs as asked, one counting back past the first core
    runs on one thread (see :mod:`cyconv._threads`)."""


_warned_counts = set()  # (requested, cores) said once each


def _warn_out_of_range(requested, cores, runs):
    if (requested, cores) in _warned_counts:
        return
    _warned_counts.add((requested, cores))
    if requested > 0:
        message = (f"cyconv: thread count {requested} is more than the {cores} usable cores; "
                   f"cyconv runs {requested} threads as asked (OpenMP kernels and BLAS "
                   f"products), and the extra ones only wait for a core. Use None or -1 for "
                   f"all usable cores.")
    else:
        message = (f"cyconv: thread count {requested} counts back past the first of the "
                   f"{cores} usable cores (-1 is all of them, -{cores} one); cyconv runs "
                   f"{runs} thread.")
    warnings.warn(message, ThreadCountWarning, stacklevel=4)


def _in_range(n_threads):
    """A checked nonzero count as the positive count it runs (the out-of-range rule)."""
    if n_threads == 1:  # in range everywhere: no need to count the cores
        return 1
    cores = max_usable_threads()
    runs = cores + 1 + n_threads if n_threads < 0 else n_threads
    if runs < 1 or runs > cores:
        runs = max(runs, 1)
        _warn_out_of_range(n_threads, cores, runs)
    return runs


def max_usable_threads():
    """Cores this process may use: :func:`usable_cores`, capped by ``OMP_NUM_THREADS`` at import."""
    cores = usable_cores()
    return cores if _OMP_CAP is None else min(cores, _OMP_CAP)


# the declared thread count (cyconv._param_validation): a non-zero int; fast for a positive int
_check_count = PARAMS["n_threads"].inner.check


def _from_environment():
    value = os.environ.get("CYCONV_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        return _check_count(int(value), "CYCONV_NUM_THREADS")
    except ValueError as exc:
        raise ValueError(f"CYCONV_NUM_THREADS={value!r} is invalid: {exc}") from None


def resolve_num_threads(n_threads=None):
    """Turn a requested thread count into the positive count a kernel uses.

    Parameters
    ----------
    n_threads : int or None
        See the module docstring for the rules.

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    ValueError
        For 0.
    TypeError
        For a non-integer.

    Examples
    --------
    >>> resolve_num_threads(1)
    1
    >>> resolve_num_threads(-1) == max_usable_threads()
    True
    """
    global _threads_resolved
    if n_threads is None:
        n_threads = explicit_num_threads()
    if n_threads is None:
        n_threads = max_usable_threads()  # in range by definition: not checked again
    else:
        n_threads = _in_range(_check_count(n_threads, "n_threads"))
    if n_threads > 1:
        if _forked_after_threads:
            return _single_thread_after_fork()
        _threads_resolved = True
    return n_threads


def set_num_threads(n_threads):
    """Set the number of threads cyconv's compiled kernels use.

    Parameters
    ----------
    n_threads : int or None
        A positive count, a negative count (``-1`` = all usable cores), or
        ``None`` to go back to the default (``CYCONV_NUM_THREADS`` or all cores).
        It governs cyconv's OpenMP kernels and numpy's BLAS inside cyconv's
        products alike; a count out of range warns here, once (see the
        module docstring).  Safe to call while other threads compute: each
        call reads the setting once, when it starts.  In a ``fork()`` child of a process that ran
        threaded kernels the setting is kept but kernels run on one thread
        (see :class:`ThreadsAfterForkWarning`).
    """
    global _global_setting
    if n_threads is not None:
        _in_range(_check_count(n_threads, "n_threads"))
    with _lock:
        _global_setting = n_threads


def explicit_num_threads():
    """The count someone asked for, unresolved: this thread's :func:`local_num_threads`,
    else :func:`set_num_threads`, else ``CYCONV_NUM_THREADS``; None when nobody did."""
    local = getattr(_local, "n_threads", None)
    if local is not None:
        return local
    if _global_setting is not None:
        return _global_setting
    return _from_environment()


@contextlib.contextmanager
def local_num_threads(n_threads):
    """Use ``n_threads`` for the kernels this thread calls, inside the ``with`` block only.

    Other threads, and the process-wide :func:`set_num_threads` setting, are
    not touched; the previous override (nesting) is restored on every exit.
    """
    n_threads = _check_count(n_threads, "n_threads")
    previous = getattr(_local, "n_threads", None)
    _local.n_threads = n_threads
    try:
        yield resolve_num_threads(n_threads)
    finally:
        _local.n_threads = previous


def get_num_threads():
    """Return the thread count a kernel started now would use (a positive int;
    1 in a ``fork()`` child of a process that ran threaded kernels)."""
    return resolve_num_threads(None)


#: Multiply-adds a BLAS product needs per thread before cyconv gives it
#: another.  Waking a BLAS thread (OpenBLAS's own pthreads pool) pays on a
#: machine with free cores and costs milliseconds on a busy one, where the
#: woken thread waits for a core.  Measured on the 2-core development machine
#: (docs/performance.md, "One thread knob"): two threads gained 1.2x at 1.5
#: million multiply-adds and 1.9x from 32 million when it was quiet, and lost
#: 3-9x at every size at load 9.  At 2**23 a thread's share is about 0.2 ms of
#: work there, and a training batch's Affine (32 x 480 x 100, 1.5 million)
#: runs on one thread.
BLAS_WORK_PER_THREAD = 1 << 23


def threads_for_work(n_threads, work, work_per_thread):
    """The threads worth waking for ``work`` units: ``n_threads`` (resolved,
    positive) at most, one per ``work_per_thread``, at least 1."""
    return int(max(1, min(int(n_threads), int(work) // work_per_thread)))


def blas_thread_count(n_threads, work):
    """The BLAS threads for a product of ``work`` multiply-adds under the
    request ``n_threads`` (None: this thread's setting; see the module docstring)."""
    return threads_for_work(resolve_num_threads(n_threads), work, BLAS_WORK_PER_THREAD)

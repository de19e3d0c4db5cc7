"""Batch inference and feature extraction on Dask (``pip install "cyconv[dask]"``).

:func:`predict` and :func:`transform` run a :class:`cyconv.nn.Sequential` over a
dask array of images (N, C, H, W) block by block and return a dask array; given
a NumPy array they run it on a :class:`distributed.Client` and return NumPy.

Design:

* One block is one task: a batch of whole images.  The images must be chunked
  along the batch axis only; any other chunking is rechunked to whole images,
  with a :class:`RechunkWarning` (a block split across channels or pixels cannot
  go through a convolution on its own).  ``batch_size`` rechunks the batch axis.
* The network is shipped to the workers once per call, not once per task: with
  a client it is scattered to every worker (``broadcast=True``) as one future on
  which every block task depends, so each worker deserialises it once; a worker
  that joins later (a replacement for a dead one) fetches it from a peer.
  Without a client (Dask's local schedulers) the object is shared in memory.
* What ships is ``net._inference_copy()``: the weights without the activations
  that layers keep from their last forward call for backward (after training
  they are most of a pickled network).  Layers are stateful, so every task runs
  on its own weight-sharing copy of that, and threads of a worker never share a
  layer.
* Threads: each task sets cyconv's thread count for its own thread
  (``local_num_threads``), never process-wide: ``threads_per_worker`` is split
  among the worker's task slots (its ``nthreads``); without it, a count set on
  the worker itself (``client.run(cyconv.set_num_threads, n)`` or
  ``CYCONV_NUM_THREADS``) is used, else one thread per task slot, Dask's own
  accounting, in which a worker thread owns a core.  Whatever a Dask nanny put
  in ``OMP_NUM_THREADS`` is not consulted.  An explicit ``threads_per_worker``
  that would put more threads on a host than its cores is refused.
* Results: a block's output is ``net.predict(block)`` (or ``net.transform``),
  so the result is bitwise equal to single-process calls over the same batches.
  NumPy's matrix product (``Affine``) rounds differently for other batch sizes
  or BLAS thread counts, by about one unit in the last place; inside cyconv's
  products BLAS runs the task's cyconv thread count (one thread knob, see
  :mod:`cyconv._threads`), and a product below 2**24 multiply-adds runs one.
* NumPy input is scattered in chunks, once; Dask cannot recompute scattered
  data, so losing a worker that holds a chunk fails that call.  A dask array
  read from storage (``da.from_zarr``, ``da.from_delayed`` loaders, ...) is
  recomputed by Dask when a worker dies.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # pragma: no cover - exercised by the import test in a subprocess
    raise ImportError('cyconv.dask needs Dask: pip install "cyconv[dask]" '
                      '(dask[array] and distributed)') from exc

from . import _threads
from ._param_validation import check
from .nn import Sequential

__all__ = ["RechunkWarning", "predict", "transform"]

MAX_AUTO_BATCH = 1024  # images per task when NumPy input is split automatically


class RechunkWarning(UserWarning):
    """The images were chunked along a non-batch axis and have been rechunked."""


def predict(net, images, *, client=None, batch_size=None, threads_per_worker=None):
    """Class scores (N, K) of ``net`` for ``images``, computed block by block on Dask.

    Parameters
    ----------
    net : cyconv.nn.Sequential
    images : dask.array.Array or numpy.ndarray
        (N,) + ``net.input_shape``; cast to ``net.dtype`` in each task.  A dask
        array gives a lazy dask array (compute it with the client it was made
        with); a NumPy array is scattered to ``client`` in chunks and the
        result comes back as a NumPy array.
    client : distributed.Client, optional
        Default: the current client (``distributed.default_client()``); a dask
        array without any client runs on Dask's local schedulers.
    batch_size : int, optional
        Images per task.  Default: the dask array's chunks along the batch
        axis; for NumPy input, four tasks per worker thread, at most 1024
        images each.
    threads_per_worker : int, optional
        cyconv kernel threads per worker process, shared by its task slots
        (``nthreads``).  Default: what ``cyconv.set_num_threads`` or
        ``CYCONV_NUM_THREADS`` says on the worker, else one per task slot.

    Returns
    -------
    dask.array.Array or numpy.ndarray
        ``net.dtype``, chunked like ``images`` along the batch axis.
    """
    return _map_network(net, images, -1, client, batch_size, threads_per_worker, "predict")


def transform(net, images, upto, *, client=None, batch_size=None, threads_per_worker=None):
    """The output of layer ``upto`` of ``net`` for ``images`` (features), on Dask.

    ``upto`` is a layer index (negative counts from the end) or one of
    ``net.layers``; the result has shape ``(N,) + net.shapes[i][1]`` where
    ``i = net.layer_index(upto)``.  Everything else is as in :func:`predict`.
    """
    return _map_network(net, images, upto, client, batch_size, threads_per_worker, "transform")


# -- the task ---------------------------------------------------------------------------------

def _task_threads(threads_per_worker):
    """The cyconv thread count of one task, decided on the worker that runs it."""
    try:
        from distributed import get_worker
        slots = get_worker().state.nthreads
    except (ImportError, ValueError):  # a local scheduler: its thread pool is the "worker"
        slots = dask.config.get("num_workers", None) or dask.system.CPU_COUNT
    if threads_per_worker is not None:
        return max(1, threads_per_worker // max(int(slots), 1))
    explicit = _threads.explicit_num_threads()
    return 1 if explicit is None else _threads.resolve_num_threads(explicit)


def _run_block(block, net, last, threads_per_worker):
    """One task: the network's layers 0..last on one batch of images."""
    with _threads.local_num_threads(_task_threads(threads_per_worker)):
        return net._inference_copy().transform(block, last)


# -- the boundary -----------------------------------------------------------------------------

def _find_client(client):
    if client is not None:
        return client
    try:
        from distributed import default_client
        return default_client()
    except (ImportError, ValueError):
        return None


def _check_threads_fit(client, threads_per_worker):
    """Refuse a threads_per_worker that puts more threads on a host than it has cores."""
    cores = client.run(_threads.usable_cores)
    hosts = {}
    for address, info in client.scheduler_info()["workers"].items():
        slots = max(int(info["nthreads"]), 1)
        host = hosts.setdefault(info["host"], {"threads": 0, "workers": 0, "cores": 1})
        host["threads"] += slots * max(1, threads_per_worker // slots)
        host["workers"] += 1
        host["cores"] = max(host["cores"], cores.get(address, 1))
    for name, host in hosts.items():
        if host["threads"] > host["cores"]:
            fit = max(1, host["cores"] // host["workers"])
            raise ValueError(f"threads_per_worker={threads_per_worker} puts {host['threads']} "
                             f"threads on host {name}, which has {host['cores']} cores for "
                             f"{host['workers']} worker(s): use threads_per_worker={fit} or "
                             f"fewer, or None")


def _check_images(images, net, client):
    if not isinstance(images, (da.Array, np.ndarray)):
        raise TypeError(f"images must be a dask array or a NumPy array, got "
                        f"{type(images).__name__}")
    if tuple(images.shape[1:]) != net.input_shape or images.ndim != len(net.input_shape) + 1:
        raise ValueError(f"images of shape {tuple(images.shape)} do not match the network's "
                         f"input shape (N, {', '.join(map(str, net.input_shape))})")
    if isinstance(images, np.ndarray) and client is None:
        raise ValueError("images is a NumPy array: cyconv.dask runs it on a "
                         "distributed.Client; start one (distributed.Client()) or pass "
                         "client=..., or call net.predict(images) in this process")


def _scattered(images, client, batch_size):
    """NumPy images as a dask array of chunks scattered to the workers, once."""
    n = len(images)
    if batch_size is None:
        slots = sum(int(w["nthreads"]) for w in client.scheduler_info()["workers"].values())
        batch_size = min(MAX_AUTO_BATCH, max(1, math.ceil(n / (4 * max(slots, 1)))))
    starts = range(0, n, batch_size)
    futures = client.scatter([images[i:i + batch_size] for i in starts])
    blocks = [da.from_delayed(future, shape=(min(batch_size, n - i),) + images.shape[1:],
                              dtype=images.dtype) for future, i in zip(futures, starts)]
    return da.concatenate(blocks) if blocks else da.from_array(images)


def _whole_images(arr, batch_size):
    """A dask array chunked along the batch axis only (rechunked, with a warning, if not)."""
    if any(len(c) > 1 for c in arr.chunks[1:]):
        warnings.warn(f"images are chunked along a non-batch axis (chunks {arr.chunksize}); "
                      f"rechunked to whole images per block: chunk along the batch axis only "
                      f"to avoid the copy", RechunkWarning, stacklevel=4)
        arr = arr.rechunk({axis: -1 for axis in range(1, arr.ndim)})
    if batch_size is not None:
        arr = arr.rechunk({0: batch_size})
    return arr


def _map_network(net, images, upto, client, batch_size, threads_per_worker, what):
    if not isinstance(net, Sequential):
        raise TypeError(f"net must be a cyconv.nn.Sequential, got {type(net).__name__}")
    last = net.layer_index(upto)
    batch_size = check("batch_size", batch_size, owner="dask")
    threads_per_worker = check("threads_per_worker", threads_per_worker)
    numpy_input = isinstance(images, np.ndarray)
    client = _find_client(client)
    _check_images(images, net, client)
    if client is not None and threads_per_worker is not None:
        _check_threads_fit(client, threads_per_worker)
    if numpy_input:
        arr = _scattered(images, client, batch_size)
    else:
        arr = _whole_images(images, batch_size)
    shipped = net._inference_copy()
    if client is not None:
        shipped = client.scatter(shipped, broadcast=True, hash=False)
    out_shape = tuple(net.shapes[last][1])
    out_ndim = 1 + len(out_shape)
    result = da.map_blocks(
        _run_block, arr, shipped, last, threads_per_worker,
        chunks=(arr.chunks[0],) + tuple((s,) for s in out_shape),
        drop_axis=list(range(out_ndim, arr.ndim)) or None,
        new_axis=list(range(arr.ndim, out_ndim)) or None,
        dtype=net.dtype, meta=np.empty((0,) * out_ndim, dtype=net.dtype),
        token=f"cyconv-{what}")
    if numpy_input:
        return client.compute(result, sync=True)
    return result

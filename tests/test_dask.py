"""cyconv.dask on real distributed.LocalClusters: a process cluster (2 workers x 1
thread, each behind a nanny) and a thread cluster (1 worker x 2 threads in this
process).

References are single-process ``net.predict``/``net.transform`` over the same
batches with the same BLAS thread count as the workers (one: NumPy's matrix
product rounds differently for other batch sizes or BLAS thread counts, see
cyconv/dask.py), and results must be bitwise equal to them.
"""

import contextlib
import os
import signal
import sys
import time
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="cyconv.dask needs dask[array] (cyconv[dask])")
distributed = pytest.importorskip("distributed", reason="cyconv.dask tests need distributed")
cloudpickle = pytest.importorskip("cloudpickle")
threadpoolctl = pytest.importorskip("threadpoolctl")

import cyconv  # noqa: E402
from cyconv import _threads, datasets  # noqa: E402
from cyconv import dask as cdask  # noqa: E402
from cyconv.nn import Sequential, SimpleConvNet  # noqa: E402

# Helpers below run on the workers, which cannot import this test module by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BATCH = 100
NANNY_ENVIRON = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                 "MALLOC_TRIM_THRESHOLD_")


@pytest.fixture(scope="module")
def digits():
    x, _ = datasets.load_digits(dtype=np.float32)
    return x


@pytest.fixture(scope="module")
def net():
    return SimpleConvNet((1, 8, 8), conv={"filters": 30, "size": 3, "pad": 1}, weight_init="he",
                         dtype=np.float32, seed=0)


def reference(net, x, batch=BATCH, upto=-1):
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"), \
            _threads.local_num_threads(1):  # the kernels' results do not depend on it
        return np.concatenate([net.transform(x[i:i + batch], upto)
                               for i in range(0, len(x), batch)])


def _restore_environ(saved):
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def _local_client(**cluster_kwargs):
    """A client of a fresh LocalCluster, closed afterwards, with the environment restored."""
    saved = {name: os.environ.get(name) for name in NANNY_ENVIRON}
    cluster = distributed.LocalCluster(dashboard_address=":0", **cluster_kwargs)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        # the nanny sets these in this process for its children and never unsets them
        _restore_environ(saved)


@pytest.fixture(scope="module")
def processes():
    """2 worker processes x 1 thread; records cyconv's thread count around the start."""
    threads_before = cyconv.get_num_threads()
    with _local_client(n_workers=2, threads_per_worker=1, processes=True) as client:
        client.threads_before_start = threads_before
        client.threads_after_start = cyconv.get_num_threads()
        client.omp_after_start = os.environ.get("OMP_NUM_THREADS")
        yield client


@pytest.fixture(scope="module")
def threads():
    """1 worker x 2 threads inside this process (no nanny, no pickling)."""
    with _local_client(n_workers=1, threads_per_worker=2, processes=False) as client:
        yield client


# -- helpers that run on workers --------------------------------------------------------------

def _count_network_loads():
    import cyconv.nn as nn

    nn._network_loads = 0

    def counting_setstate(self, state):
        # unpickling calls this; so does copy.copy (each task's _inference_copy), not counted
        if sys._getframe(1).f_code.co_name != "_reconstruct":
            nn._network_loads += 1
        self.__dict__.update(state)

    nn.Sequential.__setstate__ = counting_setstate


def _network_loads():
    import cyconv.nn as nn

    loads = getattr(nn, "_network_loads", 0)
    if "__setstate__" in vars(nn.Sequential):
        del nn.Sequential.__setstate__
    return loads


def _blas_threads():
    return {info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"}


def _slow_copy(block):
    time.sleep(0.1)
    return block.copy()


class ThreadProbe(cyconv.Layer):
    """Outputs, everywhere, the thread count cyconv's kernels would get in this call."""

    shape_preserving = True

    def forward(self, x, train=True):
        return np.full(x.shape, cyconv.get_num_threads(), dtype=x.dtype)

    def backward(self, dout):
        return dout


def probe_net():
    return Sequential([ThreadProbe(), cyconv.Affine(3)], input_shape=(1, 2, 2), dtype=np.float32)


def task_threads(client, **kw):
    """The distinct thread counts the tasks of one transform call saw."""
    images = da.zeros((8, 1, 2, 2), chunks=(1, 1, 2, 2), dtype=np.float32)
    seen = client.compute(cdask.transform(probe_net(), images, 0, client=client, **kw),
                          sync=True)
    return set(np.unique(seen).tolist())


# -- on the process cluster ------------------------------------------------------------------

def test_starting_a_cluster_leaves_cyconv_threads_alone(processes):
    # The nanny put OMP_NUM_THREADS=1 into this process's environment for its
    # children; cyconv read the variable at import and keeps its count.
    assert processes.omp_after_start == "1"
    assert processes.threads_after_start == processes.threads_before_start
    assert processes.run(_blas_threads) == {w: {1} for w in processes.run(os.getpid)}


def test_predict_and_transform_bitwise_equal_single_process(processes, net, digits):
    images = da.from_array(digits, chunks=(BATCH, 1, 8, 8))
    result = cdask.predict(net, images, client=processes)
    assert isinstance(result, da.Array) and result.dtype == np.float32
    assert result.shape == (len(digits), 10) and result.chunks[0] == images.chunks[0]
    got = processes.compute(result, sync=True)
    np.testing.assert_array_equal(got, reference(net, digits))
    assert got.dtype == np.float32

    features = cdask.transform(net, images, net.layers[2], client=processes)
    assert features.shape == (len(digits), 30, 4, 4) and features.chunks[1:] == ((30,), (4,), (4,))
    np.testing.assert_array_equal(processes.compute(features, sync=True),
                                  reference(net, digits, upto=2))


def test_numpy_input_on_a_client_returns_numpy(processes, net, digits):
    got = cdask.predict(net, digits.astype(np.float64), client=processes, batch_size=BATCH)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, reference(net, digits))
    # automatic split: four tasks per worker thread, here 2 x 1 -> 8 tasks of 225 images
    np.testing.assert_array_equal(cdask.predict(net, digits, client=processes),
                                  reference(net, digits, batch=225))


def test_other_chunkings_are_rechunked_with_a_warning(processes, net, digits):
    images = da.from_array(digits, chunks=(BATCH, 1, 4, 3))
    with pytest.warns(cdask.RechunkWarning, match="chunked along a non-batch axis"):
        result = cdask.predict(net, images, client=processes)
    assert result.chunks[0] == images.chunks[0]
    np.testing.assert_array_equal(processes.compute(result, sync=True), reference(net, digits))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebatched = cdask.predict(net, da.from_array(digits, chunks=(BATCH, 1, 8, 8)),
                                  client=processes, batch_size=300)
    assert set(rebatched.chunks[0][:-1]) == {300}
    np.testing.assert_array_equal(processes.compute(rebatched, sync=True),
                                  reference(net, digits, batch=300))


def test_network_is_shipped_once_not_per_task(processes, net, digits):
    images = da.from_array(digits, chunks=(BATCH, 1, 8, 8))
    processes.run(_count_network_loads)
    result = cdask.predict(net, images, client=processes)
    graph = dict(result.__dask_graph__())
    blocks = [task for key, task in graph.items() if key[0].startswith("cyconv-predict")]
    assert len(blocks) == len(images.chunks[0]) == 18
    network_keys = {dep for task in blocks for dep in task.dependencies
                    if str(dep).startswith("SimpleConvNet")}
    assert len(network_keys) == 1                      # one future every block depends on
    assert all(network_keys <= task.dependencies for task in blocks)
    processes.compute(result, sync=True)
    loads = processes.run(_network_loads)
    assert sorted(loads.values()) == [1, 1], loads     # once per worker, 18 tasks


def test_threads_follow_the_explicit_setting_on_workers(processes):
    # the workers' environment says OMP_NUM_THREADS=1; that is not what decides
    assert task_threads(processes) == {1}                     # one per task slot
    assert task_threads(processes, threads_per_worker=1) == {1}
    processes.run(cyconv.set_num_threads, 2)                  # set on the workers themselves
    try:
        assert task_threads(processes) == {2}
    finally:
        processes.run(cyconv.set_num_threads, None)
    cores = _threads.usable_cores()
    if cores < 4:  # 2 workers x 2 threads would oversubscribe this machine
        with pytest.raises(ValueError, match=r"threads_per_worker=2 puts 4 threads on host"):
            cdask.predict(probe_net(), np.zeros((2, 1, 2, 2)), client=processes,
                          threads_per_worker=2)


def test_a_killed_worker_is_recovered_and_the_result_complete(processes, net, digits):
    processes.wait_for_workers(2, timeout=60)
    images = da.from_array(digits, chunks=(BATCH, 1, 8, 8)).map_blocks(_slow_copy,
                                                                        dtype=np.float32)
    future = processes.compute(cdask.predict(net, images, client=processes))
    pids = processes.run(os.getpid)
    victim = sorted(pids)[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the victim holds finished blocks
        held = processes.has_what().get(victim, ())
        if any("cyconv-predict" in str(key) for key in held):
            break
        time.sleep(0.02)
    assert not future.done(), "the job ended before a worker could be killed"
    os.kill(pids[victim], signal.SIGKILL)
    got = future.result(timeout=120)
    np.testing.assert_array_equal(got, reference(net, digits))
    assert victim not in processes.scheduler_info()["workers"]   # it really died


# -- on the thread cluster -------------------------------------------------------------------

def test_thread_cluster_bitwise_equal_and_threads(threads, net, digits, monkeypatch):
    monkeypatch.delenv("CYCONV_NUM_THREADS", raising=False)
    images = da.from_array(digits, chunks=(BATCH, 1, 8, 8))
    # Two tasks run side by side in this process: BLAS at one thread, as on the
    # process workers (its thread count changes NumPy's rounding in Affine).
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        got = threads.compute(cdask.predict(net, images, client=threads), sync=True)
        features = threads.compute(cdask.transform(net, images, -3, client=threads), sync=True)
    np.testing.assert_array_equal(got, reference(net, digits))
    np.testing.assert_array_equal(features, reference(net, digits, upto=-3))
    # two task slots share threads_per_worker; the process-wide setting is not touched
    cyconv.set_num_threads(3)
    try:
        if _threads.usable_cores() >= 2:
            assert task_threads(threads, threads_per_worker=2) == {1}
        assert task_threads(threads) == {3}        # the explicit setting, seen in-process
        assert cyconv.get_num_threads() == 3
    finally:
        cyconv.set_num_threads(None)


# -- without a cluster -------------------------------------------------------------------------

def test_local_scheduler_and_bad_input(net, digits):
    images = da.from_array(digits, chunks=(BATCH, 1, 8, 8))
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        got = cdask.predict(net, images).compute(scheduler="threads")
    np.testing.assert_array_equal(got, reference(net, digits))
    with pytest.raises(ValueError, match=r"images is a NumPy array.*distributed.Client"):
        cdask.predict(net, digits)
    with pytest.raises(ValueError, match=r"images of shape \(1797, 1, 8, 9\) do not match"):
        cdask.predict(net, da.zeros((1797, 1, 8, 9), chunks=100))
    with pytest.raises(TypeError, match="images must be a dask array or a NumPy array"):
        cdask.predict(net, digits.tolist())
    with pytest.raises(TypeError, match="net must be a cyconv.nn.Sequential"):
        cdask.predict(net.layers[0], images)
    with pytest.raises(ValueError, match="upto=9 is out of range"):
        cdask.transform(net, images, 9)
    for name in ("batch_size", "threads_per_worker"):
        with pytest.raises(ValueError, match=name):
            cdask.predict(net, images, **{name: 0})

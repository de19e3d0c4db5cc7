"""Concurrency: Python threads calling the compiled kernels at the same time.

* 4 threads x 1,000 iterations of conv/pool forward+backward on different
  data give results bitwise identical to the serial ones.
* ``use_backend`` in one thread does not leak into another.
* ``set_num_threads`` flipped while other threads compute is safe.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import cyconv

N_THREADS = 4
ITERATIONS = 1000


def _data(seed):
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 2 else np.float64
    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    return x, w, b


def _compute(x, w, b, backend="cython", n_threads=None):
    y = cyconv.conv2d(x, w, b, padding=1, stride=1, backend=backend, n_threads=n_threads)
    dx, dw, db = cyconv.conv2d_backward(y, x, w, padding=1, backend=backend,
                                        n_threads=n_threads)
    m, idx = cyconv.max_pool2d(y, 2, rounding="ceil", return_indices=True, backend=backend,
                               n_threads=n_threads)
    dm = cyconv.max_pool2d_backward(m, y, 2, rounding="ceil", indices=idx, backend=backend,
                                    n_threads=n_threads)
    a = cyconv.avg_pool2d(y, 3, stride=2, padding=1, backend=backend, n_threads=n_threads)
    da = cyconv.avg_pool2d_backward(a, y, 3, stride=2, padding=1, backend=backend,
                                    n_threads=n_threads)
    return [y, dx, dw, db, m, idx, dm, a, da]


def _run_threads(target, n):
    errors = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append((i, exc))

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a worker thread hung"
    assert not errors, errors


def _assert_identical(got, want, where):
    for k, (g, e) in enumerate(zip(got, want)):
        assert g.dtype == e.dtype and g.shape == e.shape, where
        assert np.array_equal(g, e, equal_nan=True), f"{where}: output {k} differs"


needs_cython = pytest.mark.skipif("cython" not in cyconv.list_backends(),
                                  reason="compiled backend not built")


@needs_cython
def test_concurrent_calls_match_serial():
    data = [_data(i) for i in range(N_THREADS)]
    serial = [_compute(*d) for d in data]

    def work(i):
        for it in range(ITERATIONS):
            got = _compute(*data[i], n_threads=1 + (it % 3))
            _assert_identical(got, serial[i], f"thread {i} iteration {it}")

    _run_threads(work, N_THREADS)


@needs_cython
def test_set_num_threads_while_computing():
    data = [_data(10 + i) for i in range(N_THREADS)]
    serial = [_compute(*d) for d in data]
    stop = threading.Event()
    original = cyconv.get_num_threads()

    def flipper():
        k = 0
        while not stop.is_set():
            cyconv.set_num_threads([1, 2, -1, None, 3][k % 5])
            k += 1

    flip = threading.Thread(target=flipper)
    flip.start()
    try:
        def work(i):
            for it in range(ITERATIONS // 4):
                _assert_identical(_compute(*data[i]), serial[i], f"thread {i} iteration {it}")

        _run_threads(work, N_THREADS)
    finally:
        stop.set()
        flip.join()
        cyconv.set_num_threads(None)
    assert cyconv.get_num_threads() == original


@needs_cython
def test_use_backend_does_not_leak_between_threads():
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def holder():
        with cyconv.use_backend("numpy"):
            seen["holder"] = cyconv.get_layer("Conv2D").backend
            inside.set()
            release.wait(30)
            seen["holder_after"] = cyconv.get_layer("Conv2D").backend

    def other():
        inside.wait(30)
        seen["other"] = cyconv.get_layer("Conv2D").backend
        seen["other_layer"] = cyconv.Conv2D(W=np.ones((1, 1, 2, 2))).backend
        release.set()

    _run_threads(lambda i: (holder if i == 0 else other)(), 2)
    assert seen == {"holder": "numpy", "holder_after": "numpy", "other": "cython",
                    "other_layer": "cython"}


@needs_cython
def test_mixed_backends_concurrently():
    """One thread under use_backend('numpy'), others on cython: each gets its own."""
    data = _data(99)
    ref_c = _compute(*data, backend="cython")
    ref_n = _compute(*data, backend="numpy")

    def work(i):
        for it in range(100):
            if i == 0:
                with cyconv.use_backend("numpy"):
                    assert cyconv.get_layer("MaxPool2D").backend == "numpy"
                    got = _compute(*data, backend=None)
                _assert_identical(got, ref_n, f"numpy thread iteration {it}")
            else:
                assert cyconv.get_layer("MaxPool2D").backend == "cython"
                _assert_identical(_compute(*data, backend=None), ref_c,
                                  f"thread {i} iteration {it}")

    _run_threads(work, N_THREADS)

"""The one-thread BLAS limit around the convolution kernels (issue 12, items 4 and 5).

The conv kernels call single-threaded GEMMs from inside OpenMP threads, so the
BLAS library behind ``scipy.linalg.cython_blas`` runs one thread during every
conv call (``cyconv_ext/_blas_limit.pyx``).  These tests check, through the
library's own thread-count function:

* inside each conv call the GEMM BLAS runs one thread, from any Python thread;
* overlapping calls from several Python threads share one limit, and after
  them the user's count is back, whichever thread leaves last;
* a KeyboardInterrupt at any bytecode of the guarded code, or a real signal at
  random times, leaves the guard at depth 0 and the user's count restored;
* the user's own settings win: a count changed during a call is kept, a
  ``threadpool_limits`` block is respected, and threadpoolctl's "controlling
  thread" (3.8) is never taken by cyconv;
* all of the above with the oldest (3.1.0) and newest (3.8.0) threadpoolctl
  the package allows (``test_threadpoolctl_versions`` reruns this file in a
  subprocess with each on ``PYTHONPATH``).
"""

from __future__ import annotations

import ctypes
import dis
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import cyconv

cb = pytest.importorskip("cyconv.backends.cython_backend",
                         reason="the compiled backend is not built")
from cyconv.backends import _gemm_blas  # noqa: E402
from cyconv_ext import _blas_limit  # noqa: E402

GEMM = cb.GEMM_BLAS
pytestmark = pytest.mark.skipif(
    GEMM.get_address == 0, reason=f"the conv GEMM BLAS is not limited here: {GEMM.note}")

gemm_threads = ctypes.CFUNCTYPE(ctypes.c_int)(GEMM.get_address or 1)
set_gemm_threads = ctypes.CFUNCTYPE(None, ctypes.c_int)(GEMM.set_address or 1)
NUMPY_BLAS = _gemm_blas.find_gemm_blas(np._core._multiarray_umath.__file__)
SEPARATE_NUMPY_BLAS = NUMPY_BLAS.get_address != 0 and NUMPY_BLAS.path != GEMM.path
numpy_threads = ctypes.CFUNCTYPE(ctypes.c_int)(NUMPY_BLAS.get_address or 1)

X = np.random.default_rng(0).standard_normal((4, 3, 9, 9))
W = np.random.default_rng(1).standard_normal((5, 3, 3, 3))


@pytest.fixture(autouse=True)
def two_gemm_threads():
    """Run every test with the GEMM BLAS at 2 threads (so that a limit shows),
    and put the machine's count back afterwards."""
    assert _blas_limit.depth() == 0
    before = gemm_threads()
    set_gemm_threads(2)
    yield 2
    assert _blas_limit.depth() == 0, "a test left the guard entered"
    set_gemm_threads(before)


class _KernelSpy:
    """Stands in for ``cyconv_ext._conv`` in the backend: runs ``hook`` inside
    the guarded call, then the real kernel."""

    def __init__(self, hook):
        self._hook = hook

    def __getattr__(self, name):
        real = getattr(_REAL_CONV, name)
        if name not in ("conv2d_forward", "conv2d_backward"):
            return real

        def spied(*args):
            self._hook()
            return real(*args)
        return spied


_REAL_CONV = cb._conv


@pytest.fixture
def spy(monkeypatch):
    def install(hook):
        monkeypatch.setattr(cb, "_conv", _KernelSpy(hook))
    return install


def _gemm_conv(x=X, w=W, **kwargs):
    """One forward and one backward through the GEMM kernels."""
    y = cyconv.conv2d(x, w, padding=1, algorithm="gemm", **kwargs)
    return cyconv.conv2d_backward(y, x, w, padding=1, algorithm="gemm", **kwargs)


def test_the_guarded_library_is_the_one_scipy_cython_blas_calls():
    from threadpoolctl import threadpool_info

    def seen():
        return {os.path.realpath(i["filepath"]): i["num_threads"] for i in threadpool_info()
                if i.get("user_api") == "blas"}

    if GEMM.path not in seen():
        pytest.skip("this threadpoolctl does not see the GEMM BLAS (3.1 does not know "
                    "libscipy_openblas)")
    assert seen()[GEMM.path] == gemm_threads() == 2
    set_gemm_threads(3)
    assert seen()[GEMM.path] == 3
    if SEPARATE_NUMPY_BLAS:
        assert seen()[NUMPY_BLAS.path] == numpy_threads()


def test_one_gemm_thread_inside_every_conv_call_and_restored_after(spy):
    inside = []
    spy(lambda: inside.append((gemm_threads(), numpy_threads() if SEPARATE_NUMPY_BLAS else None)))
    numpy_before = numpy_threads() if SEPARATE_NUMPY_BLAS else None
    _gemm_conv(n_threads=2)
    assert [gemm for gemm, _ in inside] == [1, 1]
    assert [numpy for _, numpy in inside] == [numpy_before] * 2, "numpy's BLAS was limited"
    assert gemm_threads() == 2 and _blas_limit.depth() == 0


def test_threads_overlapping_calls_share_one_limit(spy):
    """Issue 12.5: with threadpoolctl 3.8 the limit set by a second Python
    thread was ignored, and the last thread out could not restore it."""
    cyconv.conv2d(X, W, algorithm="gemm")  # the main thread calls first (3.8: it "controls")
    order = []
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def hook():
        me = threading.current_thread().name
        order.append((me, "in", gemm_threads(), _blas_limit.depth()))
        if me == "first":
            first_in.set()
            assert second_in.wait(30)
        elif me == "second":
            second_in.set()
            assert first_out.wait(30)

    spy(hook)

    def run(name, wait_for=None):
        if wait_for is not None:
            assert wait_for.wait(30)
        cyconv.conv2d(X, W, algorithm="gemm", n_threads=2)
        if name == "first":
            order.append((name, "out", gemm_threads(), _blas_limit.depth()))
            first_out.set()

    threads = [threading.Thread(target=run, args=("first",), name="first"),
               threading.Thread(target=run, args=("second", first_in), name="second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert order == [("first", "in", 1, 1), ("second", "in", 1, 2), ("first", "out", 1, 1)]
    assert gemm_threads() == 2 and _blas_limit.depth() == 0  # the second thread restored it


def test_many_threads_hammering_the_guard_restore_the_count():
    errors = []

    def work():
        try:
            for _ in range(40):
                _gemm_conv(x=X[:1], n_threads=1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert gemm_threads() == 2 and _blas_limit.depth() == 0


def test_a_count_the_user_changes_during_a_call_is_kept(spy):
    spy(lambda: set_gemm_threads(3))  # as if another thread set it meanwhile
    cyconv.conv2d(X, W, algorithm="gemm")
    assert gemm_threads() == 3


def test_a_count_of_one_is_left_alone(spy):
    set_gemm_threads(1)
    inside = []
    spy(lambda: inside.append(gemm_threads()))
    _gemm_conv()
    assert inside == [1, 1] and gemm_threads() == 1


def test_threadpool_limits_of_the_user_are_respected():
    from threadpoolctl import threadpool_info, threadpool_limits
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not blas:
        pytest.skip("this threadpoolctl sees no BLAS library here")
    with threadpool_limits(limits=1, user_api="blas"):
        worker = threading.Thread(target=_gemm_conv)
        worker.start()
        worker.join(60)
        _gemm_conv()
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i.get("user_api") == "blas")
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info()
             if i.get("user_api") == "blas"}
    assert after == {i["filepath"]: i["num_threads"] for i in blas}


def test_cyconv_never_takes_threadpoolctls_controlling_thread():
    """threadpoolctl 3.8 lets one Python thread change OpenBLAS; the old guard
    made a worker thread that thread, and the user's limits in the main
    thread were silently ignored while the worker lived."""
    from threadpoolctl import threadpool_info, threadpool_limits
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas" and i["num_threads"] > 1]
    if not blas:
        pytest.skip("this threadpoolctl sees no multi-threaded BLAS here")
    done, leave = threading.Event(), threading.Event()

    def worker():
        _gemm_conv()
        done.set()
        leave.wait(60)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert done.wait(60)
        with threadpool_limits(limits=1, user_api="blas"):
            assert all(i["num_threads"] == 1 for i in threadpool_info()
                       if i.get("user_api") == "blas")
    finally:
        leave.set()
        t.join(60)


# -- interrupts ------------------------------------------------------------------------

GUARDED_CODE = ("cython_backend.py", "threadpoolctl.py")
# Where CPython delivers a signal's KeyboardInterrupt (or an asynchronous
# exception): when a call returns, on a backward jump, and at a function's start
# (bpo-29988), so neither between ``__enter__`` returning and the ``with`` body
# nor between the body's last call and ``__exit__``.  (PRECALL is not a call:
# under tracing 3.11 runs it unspecialised and CALL makes the call.)
CHECKS_AFTER = ("CALL", "CALL_FUNCTION", "CALL_METHOD", "CALL_FUNCTION_KW",
                "CALL_FUNCTION_EX", "JUMP_BACKWARD", "JUMP_ABSOLUTE")


def _opnames(code, cache={}):  # noqa: B006 - a deliberate per-process cache
    if code not in cache:
        cache[code] = {i.offset: i.opname for i in dis.get_instructions(code)}
    return cache[code]


def _interrupt_at(k):
    """A trace function that raises KeyboardInterrupt at the k-th point where
    CPython could deliver a signal, in the guard's Python code (the old
    guard's ``__enter__``/``__exit__`` and the threadpoolctl calls it made
    included); ``count[0]`` is how many such points the call passed."""
    count = [0]

    def tracer(frame, event, arg):
        if not frame.f_code.co_filename.endswith(GUARDED_CODE):
            return None
        frame.f_trace_opcodes = True
        previous = [None]

        def local(frame, event, arg):
            if event != "opcode":
                return local
            opnames = _opnames(frame.f_code)
            if previous[0] is None or opnames.get(previous[0], "").startswith(CHECKS_AFTER):
                count[0] += 1
                if count[0] == k:
                    raise KeyboardInterrupt(f"injected at signal check {k}")
            previous[0] = frame.f_lasti
            return local
        return local

    return tracer, count


@pytest.mark.parametrize("call", ["forward", "backward"])
def test_keyboard_interrupt_at_every_bytecode_leaves_the_guard_intact(call):
    """Issue 12.4, deterministic: a KeyboardInterrupt at each point of the
    backend's conv wrapper in turn where a signal could arrive (the old
    guard's own Python code included) must leave the guard at depth 0 and the
    user's count back."""
    x, w = X[:1], W
    y = cyconv.conv2d(x, w, padding=1, algorithm="gemm")

    def run():
        if call == "forward":
            cyconv.conv2d(x, w, padding=1, algorithm="gemm")
        else:
            cyconv.conv2d_backward(y, x, w, padding=1, algorithm="gemm")

    interrupted = 0
    for k in range(1, 100_000):
        tracer, count = _interrupt_at(k)
        sys.settrace(tracer)
        try:
            run()
        except KeyboardInterrupt:
            interrupted += 1
        finally:
            sys.settrace(None)
        assert _blas_limit.depth() == 0, f"guard left entered by an interrupt at check {k}"
        assert gemm_threads() == 2, f"BLAS left at {gemm_threads()} threads (check {k})"
        if count[0] < k:  # the call ran to its end before the k-th check
            break
    assert interrupted >= 10  # the wrapper's code really was interrupted, at every check


def test_signals_at_random_times_leave_the_guard_intact():
    """Issue 12.4 as reported: Ctrl-C during small training-sized calls (about
    2.5% of interrupts broke the old guard).  SIGALRM's handler raises
    KeyboardInterrupt the way SIGINT's does."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread only")
    x, w = np.ones((32, 1, 8, 8)), np.ones((16, 1, 3, 3))

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    rng = np.random.default_rng(0)
    interrupts = 0
    deadline = time.monotonic() + 20
    try:
        while interrupts < 400 and time.monotonic() < deadline:
            try:
                signal.setitimer(signal.ITIMER_REAL, float(rng.uniform(1e-5, 4e-4)))
                for _ in range(20):
                    cyconv.conv2d(x, w, algorithm="gemm")
                signal.setitimer(signal.ITIMER_REAL, 0)
            except KeyboardInterrupt:
                interrupts += 1
            assert _blas_limit.depth() == 0, f"guard left entered after {interrupts} interrupts"
            assert gemm_threads() == 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupts >= 50


# -- threadpoolctl versions -------------------------------------------------------------

@pytest.fixture(scope="session")
def threadpoolctl_at(tmp_path_factory):
    """A folder holding threadpoolctl ``version`` (pip-installed on first use)."""
    folders = {}

    def get(version):
        if version not in folders:
            target = tmp_path_factory.mktemp(f"threadpoolctl-{version}")
            try:
                subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                "--disable-pip-version-check", "--target", str(target),
                                f"threadpoolctl=={version}"],
                               check=True, capture_output=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"pip cannot fetch threadpoolctl=={version}: {exc}")
            folders[version] = target
        return folders[version]
    return get


@pytest.mark.skipif(os.environ.get("CYCONV_TEST_THREADPOOLCTL") is not None,
                    reason="already the subprocess run")
@pytest.mark.parametrize("version", ["3.1.0", "3.8.0"])
def test_threadpoolctl_versions(threadpoolctl_at, version):
    """This file's tests with the oldest and newest threadpoolctl allowed
    (pyproject: threadpoolctl>=3.1), on PYTHONPATH ahead of the installed one."""
    import threadpoolctl
    if threadpoolctl.__version__ == version:
        pytest.skip(f"threadpoolctl {version} is the installed one: this file's own run "
                    f"tests it")
    folder = threadpoolctl_at(version)
    env = dict(os.environ, CYCONV_TEST_THREADPOOLCTL=version,
               PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          __file__],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout[-3000:]


def test_the_threadpoolctl_asked_for_is_loaded():
    version = os.environ.get("CYCONV_TEST_THREADPOOLCTL")
    if version is None:
        pytest.skip("only in the subprocess runs of test_threadpoolctl_versions")
    import threadpoolctl
    assert threadpoolctl.__version__ == version

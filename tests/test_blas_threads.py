"""The one thread knob reaches numpy's BLAS inside cyconv's products (issue 14).

Every cyconv call that reaches BLAS goes through :func:`cyconv._blas.matmul`
(``Affine``, the numpy backend's convolution, the textbook-compat ``Affine``),
which sets numpy's BLAS to cyconv's thread count for the product and gives
the user's count back after (``cyconv_ext/_blas_limit.pyx``).  These tests
check, through the library's own thread-count function and threadpoolctl's
view of it:

* inside each product BLAS runs cyconv's count, whichever knob set it
  (``set_num_threads``, ``CYCONV_NUM_THREADS``, ``n_threads=``,
  ``local_num_threads``, the CLI's ``--threads``), fewer for a small product;
* after each call (normal return, exception, KeyboardInterrupt at any point,
  signals at random times) the user's count is back;
* overlapping calls from several Python threads share one setting, and after
  them the user's count is back, whichever thread leaves last;
* the user's own settings win outside cyconv's calls: a count changed during a
  call is kept, a ``threadpool_limits`` block is in force around the calls, and
  threadpoolctl's "controlling thread" (3.8) is never taken by cyconv;
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
import warnings

import numpy as np
import pytest

import cyconv
from cyconv import _blas, _threads

_blas_limit = pytest.importorskip("cyconv_ext._blas_limit",
                                  reason="the compiled extension is not built")
BLAS = _blas.NUMPY_BLAS
pytestmark = pytest.mark.skipif(
    BLAS.get_address == 0, reason=f"numpy's BLAS is not controlled here: {BLAS.note}")

blas_threads = ctypes.CFUNCTYPE(ctypes.c_int)(BLAS.get_address or 1)
set_blas_threads = ctypes.CFUNCTYPE(None, ctypes.c_int)(BLAS.set_address or 1)

REAL_BLAS_WORK_PER_THREAD = _threads.BLAS_WORK_PER_THREAD
USER = 4  # the user's own BLAS count in these tests: none of the counts cyconv is asked for

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3, 6, 6))
W = RNG.standard_normal((5, 3, 3, 3))
AFFINE_W = RNG.standard_normal((108, 7))


@pytest.fixture(autouse=True)
def user_blas_threads(monkeypatch):
    """Every test starts with the user's BLAS at USER threads, no cyconv
    setting and every product big enough for all threads (the work rule has
    its own test); the machine's count is put back afterwards."""
    assert _blas_limit.depth() == 0
    monkeypatch.delenv("CYCONV_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "BLAS_WORK_PER_THREAD", 1)
    monkeypatch.setattr(_threads, "_warned_counts", set())
    cyconv.set_num_threads(None)
    before = blas_threads()
    set_blas_threads(USER)
    yield USER
    assert _blas_limit.depth() == 0, "a test left the guard entered"
    cyconv.set_num_threads(None)
    set_blas_threads(before)


@pytest.fixture
def inside(monkeypatch):
    """The BLAS count seen inside each guarded product, in call order; a
    ``hook`` attribute, if set, runs there too."""
    class Seen(list):
        spy = None

    seen = Seen()

    def spied(a, b):
        seen.append(blas_threads())
        if spied.hook is not None:
            spied.hook()
        return np.matmul(a, b)

    spied.hook = None
    seen.spy = spied
    monkeypatch.setattr(_blas, "_matmul", spied)
    return seen


def _affine_step(**kwargs):
    """Forward and backward through Affine: three products."""
    layer = cyconv.Affine(W=AFFINE_W, b=np.zeros(7))
    return layer.backward(np.ones_like(layer.forward(X)))


def _numpy_conv_step(**kwargs):
    """The numpy backend's convolution: one product forward, two backward."""
    y = cyconv.conv2d(X, W, padding=1, backend="numpy", **kwargs)
    return cyconv.conv2d_backward(y, X, W, padding=1, backend="numpy", **kwargs)


def _compat_affine_step():
    from cyconv import compat
    layer = compat.Affine(AFFINE_W, np.zeros(7))
    return layer.backward(np.ones_like(layer.forward(X)))


# -- the library ----------------------------------------------------------------------------

def test_the_controlled_library_is_the_one_numpy_calls():
    from threadpoolctl import threadpool_info

    def seen():
        return {os.path.realpath(i["filepath"]): i["num_threads"] for i in threadpool_info()
                if i.get("user_api") == "blas"}

    if BLAS.path not in seen():
        pytest.skip("this threadpoolctl does not see numpy's BLAS (3.1 does not know "
                    "libscipy_openblas)")
    assert seen()[BLAS.path] == blas_threads() == USER
    set_blas_threads(3)
    assert seen()[BLAS.path] == 3


def test_show_config_says_how_blas_is_controlled():
    assert "cyconv's thread count inside cyconv's calls" in cyconv._config.config_info()[
        "blas threads"]


# -- every knob, every product ----------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("step", [_affine_step, _numpy_conv_step, _compat_affine_step])
def test_set_num_threads_governs_every_product(inside, step, count):
    cyconv.set_num_threads(count)
    step()
    assert inside == [count] * 3
    assert blas_threads() == USER


def test_cyconv_num_threads_governs_blas(inside, monkeypatch):
    monkeypatch.setenv("CYCONV_NUM_THREADS", "1")
    _affine_step()
    assert inside == [1] * 3 and blas_threads() == USER


def test_n_threads_argument_governs_blas(inside):
    cyconv.set_num_threads(2)  # the argument wins over the global setting
    _numpy_conv_step(n_threads=1)
    assert inside == [1] * 3 and blas_threads() == USER


def test_local_num_threads_governs_blas(inside):
    cyconv.set_num_threads(2)
    with _threads.local_num_threads(1):
        _affine_step()
        assert blas_threads() == USER  # between cyconv's calls: the user's count
        with _threads.local_num_threads(2):
            _affine_step()
    assert inside == [1] * 3 + [2] * 3 and blas_threads() == USER


def test_the_clis_threads_option_governs_blas(inside):
    from cyconv.__main__ import _threads as cli_threads
    with cli_threads(1):
        _affine_step()
    with cli_threads(None):  # no --threads: the setting as it is (all cores)
        _affine_step()
    assert inside == [1] * 3 + [cyconv.get_num_threads()] * 3
    assert blas_threads() == USER


def test_the_default_is_all_usable_cores(inside):
    _affine_step()
    assert inside == [_threads.max_usable_threads()] * 3


def test_a_small_product_runs_fewer_threads(inside, monkeypatch):
    """The count is a maximum: a product below BLAS_WORK_PER_THREAD
    multiply-adds per thread runs on fewer (a training batch's Affine on one)."""
    monkeypatch.setattr(_threads, "BLAS_WORK_PER_THREAD", 2 * 108 * 7)
    cyconv.set_num_threads(2)
    x = np.ones((4, 108))
    for rows in (1, 2, 3, 4):
        _blas.matmul(x[:rows], AFFINE_W)
    assert inside == [1, 1, 1, 2]
    # the real constant, 2**23 multiply-adds a thread
    assert _threads.threads_for_work(2, 32 * 480 * 100, REAL_BLAS_WORK_PER_THREAD) == 1
    assert _threads.threads_for_work(2, 2 ** 24 - 1, REAL_BLAS_WORK_PER_THREAD) == 1
    assert _threads.threads_for_work(2, 2 ** 24, REAL_BLAS_WORK_PER_THREAD) == 2


def test_products_round_as_numpy_does_at_cyconvs_count():
    """OpenBLAS splits a product differently for each thread count, so its
    last bits depend on the count: cyconv's product is bitwise numpy's at
    cyconv's count, whatever the user's count is (here 4)."""
    x = RNG.standard_normal((64, 300))
    w = RNG.standard_normal((300, 200))
    for count in (1, 2):
        cyconv.set_num_threads(count)
        got = _blas.matmul(x, w)
        set_blas_threads(count)
        expected = x @ w
        set_blas_threads(USER)
        np.testing.assert_array_equal(got, expected)


# -- the user's setting -------------------------------------------------------------------------

def test_an_exception_inside_a_product_restores_the_users_count(inside):
    def fail():
        raise RuntimeError("inside the product")

    inside.spy.hook = fail
    cyconv.set_num_threads(1)
    with pytest.raises(RuntimeError, match="inside the product"):
        _affine_step()
    assert inside == [1] and blas_threads() == USER and _blas_limit.depth() == 0


def test_a_count_the_user_changes_during_a_call_is_kept(inside):
    inside.spy.hook = lambda: set_blas_threads(3)  # as if another thread set it meanwhile
    cyconv.set_num_threads(1)
    _blas.matmul(np.ones((2, 2)), np.ones((2, 2)))
    assert blas_threads() == 3


def test_a_count_equal_to_the_users_is_left_alone(inside):
    set_blas_threads(2)
    cyconv.set_num_threads(2)
    _affine_step()
    assert inside == [2] * 3 and blas_threads() == 2


def test_threadpool_limits_of_the_user_are_in_force_around_cyconvs_calls(inside):
    from threadpoolctl import threadpool_info, threadpool_limits
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not blas:
        pytest.skip("this threadpoolctl sees no BLAS library here")
    cyconv.set_num_threads(2)
    with threadpool_limits(limits=1, user_api="blas"):
        worker = threading.Thread(target=_affine_step)
        worker.start()
        worker.join(60)
        _affine_step()
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i.get("user_api") == "blas")
    assert inside == [2] * 6
    after = {i["filepath"]: i["num_threads"] for i in threadpool_info()
             if i.get("user_api") == "blas"}
    assert after == {i["filepath"]: i["num_threads"] for i in blas}


def test_cyconv_never_takes_threadpoolctls_controlling_thread():
    """threadpoolctl 3.8 lets one Python thread change OpenBLAS; a guard made
    of threadpoolctl calls would make a worker thread that thread, and the
    user's limits in the main thread would be ignored while the worker lived."""
    from threadpoolctl import threadpool_info, threadpool_limits
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas" and i["num_threads"] > 1]
    if not blas:
        pytest.skip("this threadpoolctl sees no multi-threaded BLAS here")
    done, leave = threading.Event(), threading.Event()

    def worker():
        with _threads.local_num_threads(1):
            _affine_step()
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


# -- Python threads -----------------------------------------------------------------------------

def test_threads_overlapping_calls_share_one_setting(inside):
    """The count is one number per process: the most recent entrant's count
    is in force while calls overlap, the last one out restores the user's."""
    order = []
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def hook():
        me = threading.current_thread().name
        order.append((me, "in", blas_threads(), _blas_limit.depth()))
        if me == "first":
            first_in.set()
            assert second_in.wait(30)
        elif me == "second":
            second_in.set()
            assert first_out.wait(30)

    inside.spy.hook = hook

    def run(name, count, wait_for=None):
        if wait_for is not None:
            assert wait_for.wait(30)
        with _threads.local_num_threads(count):
            _blas.matmul(np.ones((2, 2)), np.ones((2, 2)))
        if name == "first":
            order.append((name, "out", blas_threads(), _blas_limit.depth()))
            first_out.set()

    threads = [threading.Thread(target=run, args=("first", 1), name="first"),
               threading.Thread(target=run, args=("second", 2, first_in), name="second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert order == [("first", "in", 1, 1), ("second", "in", 2, 2), ("first", "out", 2, 1)]
    assert blas_threads() == USER and _blas_limit.depth() == 0  # the second thread restored it


def test_many_threads_hammering_the_guard_restore_the_count():
    errors = []

    def work(count):
        try:
            with _threads.local_num_threads(count):
                for _ in range(40):
                    _affine_step()
                    _numpy_conv_step()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(1 + k % 2,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert blas_threads() == USER and _blas_limit.depth() == 0


# -- interrupts ---------------------------------------------------------------------------------

GUARDED_CODE = ("_blas.py", os.path.join("layers", "dense.py"), os.path.join("layers", "_base.py"),
                "threadpoolctl.py")
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
    CPython could deliver a signal, in the guarded products' Python code (the
    Affine layer and :func:`cyconv._blas.matmul`); ``count[0]`` is how many
    such points the call passed."""
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
    """A KeyboardInterrupt at each point of Affine's forward or backward where
    a signal could arrive must leave the guard at depth 0 and the user's count
    back."""
    cyconv.set_num_threads(1)
    layer = cyconv.Affine(W=AFFINE_W, b=np.zeros(7))
    y = layer.forward(X)

    def run():
        if call == "forward":
            layer.forward(X)
        else:
            layer.backward(y)

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
        assert blas_threads() == USER, f"BLAS left at {blas_threads()} threads (check {k})"
        if count[0] < k:  # the call ran to its end before the k-th check
            break
    assert interrupted >= 10  # the layer's code really was interrupted, at every check


def test_signals_at_random_times_leave_the_guard_intact():
    """Ctrl-C during small training-sized products.  SIGALRM's handler raises
    KeyboardInterrupt the way SIGINT's does."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread only")
    cyconv.set_num_threads(1)
    x, w = np.ones((32, 64)), np.ones((64, 10))

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
                for _ in range(50):
                    _blas.matmul(x, w)
                signal.setitimer(signal.ITIMER_REAL, 0)
            except KeyboardInterrupt:
                interrupts += 1
            assert _blas_limit.depth() == 0, f"guard left entered after {interrupts} interrupts"
            assert blas_threads() == USER
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupts >= 50


# -- out-of-range counts ------------------------------------------------------------------------

def test_out_of_range_counts_reach_blas_by_the_one_rule(inside, monkeypatch):
    """n_threads=-3 on 2 cores runs one thread, a count above the cores runs
    as asked; each warns once (the rule itself: tests/test_threads.py)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    with pytest.warns(cyconv.ThreadCountWarning, match="-3 counts back past"):
        _numpy_conv_step(n_threads=-3)
    with pytest.warns(cyconv.ThreadCountWarning, match="3 is more than the 2 usable cores"):
        cyconv.set_num_threads(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: not again
        _affine_step()
        _numpy_conv_step(n_threads=-3)
    assert inside == [1] * 3 + [3] * 3 + [1] * 3
    assert blas_threads() == USER


# -- cost ---------------------------------------------------------------------------------------

def test_the_guard_costs_less_than_the_smallest_product():
    """Affine on small batches runs its products thousands of times: setting
    and restoring the count (two C calls each way, no Python code) must cost
    less than the smallest product numpy computes.  Both are timed alike, so
    a busy machine slows both (the figures: docs/performance.md)."""
    x, w = np.ones((2, 2)), np.ones((2, 2))
    guard = _blas_limit.BlasThreads(1)

    def guarded():
        with guard:
            pass

    def best(fn, *args, repeat=9, number=5000):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn(*args)
            times.append((time.perf_counter() - start) / number)
        return min(times)

    assert best(guarded) < best(np.matmul, x, w)


# -- threadpoolctl versions ---------------------------------------------------------------------

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

"""Thread-count settings: set/get_num_threads, environment variables, the
``n_threads`` argument, and the count the kernels actually receive."""

import os
import subprocess
import sys
import threading
import uuid

import numpy as np
import pytest

import cyconv
from cyconv import _threads, get_num_threads, set_num_threads
from cyconv._registry import REGISTRY
from cyconv._threads import local_num_threads, max_usable_threads, resolve_num_threads
from cyconv.backends import numpy_backend
from cyconv.testing.strategies import INVALID_VALUES

BACKENDS = cyconv.backends_for("Conv2D")


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch):
    monkeypatch.delenv("CYCONV_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "_OMP_CAP", None)  # as if OMP_NUM_THREADS was unset at import
    set_num_threads(None)
    yield
    set_num_threads(None)


@pytest.fixture
def six_cores(monkeypatch):
    """Pretend the affinity mask holds six cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 5, 7}, raising=False)
    return 6


# -- defaults -----------------------------------------------------------------------------

def test_default_is_all_usable_cores():
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without affinity masks
        cores = os.cpu_count()
    assert max_usable_threads() == cores
    assert get_num_threads() == cores
    assert resolve_num_threads(None) == cores


def test_affinity_mask_respected(six_cores):
    assert get_num_threads() == 6
    assert resolve_num_threads(-1) == 6


def test_without_affinity_uses_cpu_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert get_num_threads() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert get_num_threads() == 1


@pytest.mark.parametrize("omp, expected", [("2", 2), ("3,2", 3), (" 4 ", 4), ("16", 6),
                                           ("0", 6), ("abc", 6), ("", 6)])
def test_omp_num_threads_caps_the_default(six_cores, monkeypatch, omp, expected):
    monkeypatch.setattr(_threads, "_OMP_CAP", _threads._omp_cap(omp))
    assert get_num_threads() == expected
    assert resolve_num_threads(-1) == expected


def _threads_in_fresh_process(code, **env):
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("OMP_NUM_THREADS", "CYCONV_NUM_THREADS")}, **env}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return [int(v) for v in out.split()]


def test_omp_num_threads_is_read_once_at_import():
    # OpenMP reads the variable when it loads; so does cyconv.  Set before the
    # import, it caps the default; set later (a Dask nanny does so in the parent
    # before spawning its workers), it changes nothing in this process.
    code = ("import os, cyconv; a = cyconv.get_num_threads(); os.environ['OMP_NUM_THREADS'] = "
            "'{}'; print(a, cyconv.get_num_threads())")
    before, after = _threads_in_fresh_process(code.format(1))
    assert before == after == _threads.usable_cores()
    assert _threads_in_fresh_process(code.format(7), OMP_NUM_THREADS="1") == [1, 1]


# -- set_num_threads --------------------------------------------------------------------------

def test_set_and_get(six_cores):
    set_num_threads(3)
    assert get_num_threads() == 3
    set_num_threads(11)  # more than the cores is allowed: the user asked for it
    assert get_num_threads() == 11
    set_num_threads(np.int64(2))
    assert get_num_threads() == 2 and type(get_num_threads()) is int
    set_num_threads(None)
    assert get_num_threads() == 6


@pytest.mark.parametrize("count, expected", [(-1, 6), (-2, 5), (-6, 1), (-7, 1), (-100, 1)])
def test_negative_counts_count_back(six_cores, count, expected):
    set_num_threads(count)
    assert get_num_threads() == expected
    assert resolve_num_threads(count) == expected


def test_negative_counts_follow_the_machine(six_cores, monkeypatch):
    set_num_threads(-2)
    assert get_num_threads() == 5
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert get_num_threads() == 2  # re-evaluated, not frozen at set time


def test_zero_is_an_error(six_cores):
    set_num_threads(4)
    with pytest.raises(ValueError, match="n_threads=0"):
        set_num_threads(0)
    assert get_num_threads() == 4  # unchanged
    with pytest.raises(ValueError):
        resolve_num_threads(0)


@pytest.mark.parametrize("bad", [1.5, 2.0, "2", True, False, [2], object()])
def test_non_integers_are_type_errors(bad):
    with pytest.raises(TypeError, match="n_threads"):
        set_num_threads(bad)
    with pytest.raises(TypeError, match="n_threads"):
        resolve_num_threads(bad)


def test_setting_is_process_wide():
    def other():
        set_num_threads(3)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert get_num_threads() == 3


# -- out-of-range counts: one rule, never silent ------------------------------------------------

@pytest.fixture
def two_cores(monkeypatch):
    """Pretend the affinity mask holds two cores, with no count warned about yet."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(_threads, "_warned_counts", set())
    return 2


def _thread_count_warnings(fn, *args):
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args)
    return result, [str(w.message) for w in caught
                    if issubclass(w.category, cyconv.ThreadCountWarning)]


def test_counting_back_past_the_first_core_runs_one_thread_and_says_so(two_cores):
    count, said = _thread_count_warnings(resolve_num_threads, -3)
    assert count == 1
    assert len(said) == 1 and "-3 counts back past the first of the 2 usable cores" in said[0]
    assert "runs 1 thread" in said[0]
    assert _thread_count_warnings(resolve_num_threads, -3) == (1, [])  # once per count
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    _, said = _thread_count_warnings(lambda: cyconv.conv2d(x, w, n_threads=-4))
    assert len(said) == 1 and "-4 counts back" in said[0]


def test_more_threads_than_cores_are_honoured_and_said_once(two_cores):
    _, said = _thread_count_warnings(set_num_threads, 100)
    assert len(said) == 1 and "100 is more than the 2 usable cores" in said[0]
    assert "runs 100 threads as asked" in said[0]
    assert _thread_count_warnings(get_num_threads) == (100, [])  # said at set time, once


def test_an_out_of_range_environment_count_is_said_at_first_use(two_cores, monkeypatch):
    monkeypatch.setenv("CYCONV_NUM_THREADS", "5")
    count, said = _thread_count_warnings(get_num_threads)
    assert count == 5 and len(said) == 1 and "5 is more than the 2 usable cores" in said[0]

    def inside_local():
        with local_num_threads(-9) as count:
            return count

    count, said = _thread_count_warnings(inside_local)
    assert count == 1 and len(said) == 1 and "-9 counts back" in said[0]


@pytest.mark.parametrize("count", [1, 2, -1, -2, None])
def test_counts_in_range_say_nothing(two_cores, count):
    _, said = _thread_count_warnings(set_num_threads, count)
    assert said == []
    _, said = _thread_count_warnings(get_num_threads)
    assert said == []


def test_the_warning_is_a_runtime_warning_exported_at_the_top():
    assert issubclass(cyconv.ThreadCountWarning, RuntimeWarning)
    assert "ThreadCountWarning" in cyconv.__all__


# -- local_num_threads: one thread's override --------------------------------------------------

def test_local_setting_is_this_threads_only(six_cores):
    set_num_threads(3)
    seen = {}

    def other():
        seen["other"] = get_num_threads()

    with local_num_threads(2) as resolved:
        assert resolved == 2 and get_num_threads() == 2
        assert _threads.explicit_num_threads() == 2
        with local_num_threads(-1):                    # nests, counts back from the cores
            assert get_num_threads() == 6
        assert get_num_threads() == 2
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen["other"] == 3                          # other threads keep the global setting
    assert get_num_threads() == 3 and _threads._global_setting == 3


def test_local_setting_restored_on_error_and_checked(six_cores):
    with pytest.raises(RuntimeError):
        with local_num_threads(4):
            raise RuntimeError("boom")
    assert get_num_threads() == 6 and _threads.explicit_num_threads() is None
    with pytest.raises(ValueError, match="n_threads=0"):
        with local_num_threads(0):
            pass
    with pytest.raises(TypeError, match="n_threads"):
        with local_num_threads(1.5):
            pass


def test_explicit_setting_is_none_unless_asked(six_cores, monkeypatch):
    assert _threads.explicit_num_threads() is None
    monkeypatch.setenv("CYCONV_NUM_THREADS", "-2")
    assert _threads.explicit_num_threads() == -2
    set_num_threads(4)
    assert _threads.explicit_num_threads() == 4


# -- CYCONV_NUM_THREADS ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("3", 3), (" 2 ", 2), ("-1", 6), ("-4", 3),
                                             ("", 6)])
def test_environment_variable(six_cores, monkeypatch, value, expected):
    monkeypatch.setenv("CYCONV_NUM_THREADS", value)
    assert get_num_threads() == expected


def test_set_num_threads_beats_environment(six_cores, monkeypatch):
    monkeypatch.setenv("CYCONV_NUM_THREADS", "3")
    set_num_threads(2)
    assert get_num_threads() == 2
    set_num_threads(None)
    assert get_num_threads() == 3


@pytest.mark.parametrize("value", ["0", "abc", "1.5", "2 threads"])
def test_bad_environment_variable(monkeypatch, value):
    monkeypatch.setenv("CYCONV_NUM_THREADS", value)
    with pytest.raises(ValueError, match="CYCONV_NUM_THREADS"):
        get_num_threads()
    set_num_threads(1)  # an explicit setting does not read the variable
    assert get_num_threads() == 1
    assert resolve_num_threads(2) == 2


# -- what the kernels receive ----------------------------------------------------------------------

class RecordingKernels:
    """numpy kernels that record the thread count they were called with."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, attr):
        func = getattr(numpy_backend, attr)

        def wrapped(*args, **kwargs):
            self.calls.append((attr, args[-1]))
            return func(*args, **kwargs)

        return wrapped


@pytest.fixture
def recorder():
    """Conv2D, MaxPool2D and AvgPool2D under a private backend whose kernels record."""
    backend = f"rec{uuid.uuid4().hex[:8]}"
    kernels = RecordingKernels()
    for name in ("Conv2D", "MaxPool2D", "AvgPool2D"):
        front = getattr(cyconv, name)
        cls = type(name, (front,), {"kernels": kernels})
        cyconv.register_layer(name, backend=backend)(cls)
    yield backend, kernels
    with REGISTRY._lock:
        for name in ("Conv2D", "MaxPool2D", "AvgPool2D"):
            REGISTRY._layers[name].pop(backend, None)


def _call_everything(backend, **kw):
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4))
    w = np.ones((3, 2, 3, 3))
    cyconv.conv2d(x, w, backend=backend, **kw)
    cyconv.conv2d_backward(np.ones((2, 3, 2, 2)), x, w, backend=backend, **kw)
    cyconv.max_pool2d(x, 2, backend=backend, **kw)
    cyconv.max_pool2d_backward(np.ones((2, 2, 2, 2)), x, 2, backend=backend, **kw)
    cyconv.avg_pool2d(x, 2, backend=backend, **kw)
    cyconv.avg_pool2d_backward(np.ones((2, 2, 2, 2)), x, 2, backend=backend, **kw)


KERNEL_NAMES = {"conv2d_forward", "conv2d_backward", "max_pool2d_forward", "max_pool2d_backward",
                "avg_pool2d_forward", "avg_pool2d_backward"}


@pytest.mark.parametrize("n_threads, expected", [(1, 1), (4, 4), (-1, 6), (-2, 5), (-50, 1)])
def test_n_threads_argument_reaches_kernels(recorder, six_cores, n_threads, expected):
    backend, kernels = recorder
    set_num_threads(3)  # the argument wins over the global setting
    _call_everything(backend, n_threads=n_threads)
    assert {name for name, _ in kernels.calls} == KERNEL_NAMES
    assert all(count == expected for _, count in kernels.calls), kernels.calls


def test_global_setting_reaches_kernels(recorder, six_cores, monkeypatch):
    backend, kernels = recorder
    _call_everything(backend)
    assert {count for _, count in kernels.calls} == {6}
    kernels.calls.clear()
    monkeypatch.setenv("CYCONV_NUM_THREADS", "2")
    _call_everything(backend)
    assert {count for _, count in kernels.calls} == {2}
    kernels.calls.clear()
    set_num_threads(3)
    _call_everything(backend)
    assert {count for _, count in kernels.calls} == {3}


def test_layers_use_global_setting(recorder, six_cores):
    backend, kernels = recorder
    set_num_threads(-3)
    x = np.ones((1, 2, 4, 4))
    conv = cyconv.Conv2D(W=np.ones((2, 2, 3, 3)), backend=backend)
    conv.backward(np.ones_like(conv.forward(x)))
    pool = cyconv.MaxPool2D(2, backend=backend)
    pool.backward(np.ones_like(pool.forward(x)))
    avg = cyconv.AvgPool2D(2, backend=backend)
    avg.backward(np.ones_like(avg.forward(x)))
    assert {name for name, _ in kernels.calls} == KERNEL_NAMES
    assert {count for _, count in kernels.calls} == {4}


@pytest.mark.parametrize("bad, exc", INVALID_VALUES["n_threads"])
def test_bad_n_threads_argument(bad, exc):
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(exc, match="n_threads"):
        cyconv.conv2d(x, np.ones((1, 1, 3, 3)), n_threads=bad, backend="numpy")
    with pytest.raises(exc, match="n_threads"):
        cyconv.max_pool2d(x, 2, n_threads=bad, backend="numpy")
    with pytest.raises(exc, match="n_threads"):
        cyconv.avg_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, n_threads=bad, backend="numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_do_not_depend_on_thread_count(backend, threads_on_tiny_work):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    dy = rng.standard_normal((5, 4, 9, 8))
    one = (cyconv.conv2d(x, w, padding=1, backend=backend, n_threads=1),
           *cyconv.conv2d_backward(dy, x, w, padding=1, backend=backend, n_threads=1),
           cyconv.max_pool2d(x, 3, stride=1, padding=1, backend=backend, n_threads=1),
           cyconv.avg_pool2d(x, 2, rounding="floor", backend=backend, n_threads=1))
    for n_threads in (2, 3, -1):
        many = (cyconv.conv2d(x, w, padding=1, backend=backend, n_threads=n_threads),
                *cyconv.conv2d_backward(dy, x, w, padding=1, backend=backend,
                                        n_threads=n_threads),
                cyconv.max_pool2d(x, 3, stride=1, padding=1, backend=backend,
                                  n_threads=n_threads),
                cyconv.avg_pool2d(x, 2, rounding="floor", backend=backend,
                                  n_threads=n_threads))
        for a, b in zip(one, many):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)

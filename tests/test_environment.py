"""What the environment and the build tell the user: CYCONV_BACKEND typos, serial builds,
``show_versions``."""

import io
import warnings

import numpy as np
import pytest

import cyconv
from cyconv import _config, _registry


@pytest.fixture
def fresh_backend_check(monkeypatch):
    monkeypatch.setattr(_registry, "_checked_environment", set())


def test_a_mistyped_cyconv_backend_warns_naming_it_and_the_valid_names(
        monkeypatch, fresh_backend_check):
    monkeypatch.setenv("CYCONV_BACKEND", "nmupy")
    with pytest.warns(UserWarning, match=r"unknown backend 'nmupy'.*valid names: .*numpy.*"
                                         r"Did you mean 'numpy'\?"):
        layer = cyconv.get_layer("MaxPool2D")
    assert layer.backend == cyconv.backends_for("MaxPool2D")[0]  # the typo is ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cyconv.get_layer("MaxPool2D")  # once per value, not on every lookup


def test_valid_cyconv_backend_values_do_not_warn(monkeypatch, fresh_backend_check):
    monkeypatch.setenv("CYCONV_BACKEND", " numpy , cython")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cyconv.get_layer("Conv2D").backend == "numpy"
    monkeypatch.setenv("CYCONV_BACKEND", "numpy,bogus")
    with pytest.warns(UserWarning, match="'bogus'"):
        assert cyconv.get_layer("Conv2D").backend == "numpy"


def test_a_serial_build_warns_once_when_threads_are_asked(monkeypatch):
    backend = pytest.importorskip("cyconv.backends.cython_backend",
                                  reason="needs the compiled backend")
    monkeypatch.setattr(backend, "OPENMP_ENABLED", False)
    monkeypatch.setattr(backend, "_serial_warned", False)
    x = np.random.default_rng(0).standard_normal((4, 8, 16, 16))
    w = np.random.default_rng(1).standard_normal((8, 8, 3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = cyconv.conv2d(x, w, backend="cython", n_threads=1)  # one thread: nothing to say
    with pytest.warns(cyconv.SerialBuildWarning, match="2 threads .* built without OpenMP"):
        two = cyconv.conv2d(x, w, backend="cython", n_threads=2)
    np.testing.assert_array_equal(one, two)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cyconv.max_pool2d(x, 2, backend="cython", n_threads=2)  # once per process


def test_show_versions_lists_the_system_dependencies_build_and_thread_pools():
    out = io.StringIO()
    cyconv.show_versions(file=out)
    text = out.getvalue()
    for section in ("System:", "Python dependencies:", "Build:", "threadpoolctl info"):
        assert f"\n{section}" in text
    info = _config.versions_info()
    assert info["Python dependencies"]["numpy"] == np.__version__
    assert info["Python dependencies"]["cyconv"] == cyconv.__version__
    for key in ("scipy", "threadpoolctl", "Cython"):
        assert key in info["Python dependencies"]
    build = info["Build"]
    assert {"OpenMP", "kernel variant"} <= set(build)
    record = _config._build_info()
    if "cython" in cyconv.backends_for("Conv2D") and record is not None:
        assert build["Cython"] == record.CYTHON_VERSION
        assert "-O" in build["compile flags"] and build["compiler"]
        from cyconv._cpu import selected_variant

        assert build["kernel variant"].startswith(selected_variant())
        assert selected_variant() in build["built variants"]
    pools = info["threadpoolctl info (OpenMP runtime, BLAS libraries and their threads)"]
    assert any(pool.get("user_api") == "blas" and "num_threads" in pool for pool in pools)

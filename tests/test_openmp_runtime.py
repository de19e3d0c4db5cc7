"""The OpenMP runtime's wait policy (cyconv/_openmp_runtime.py): applied while the
runtime loads, never left in the user's environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from cyconv import _openmp_runtime
from cyconv._openmp_runtime import RUNTIME_DEFAULTS, load_openmp_runtime

RUNTIME_FILE = _openmp_runtime.__file__


def test_the_loader_sees_the_defaults_and_the_environment_is_restored():
    environ = {"PATH": "/bin"}
    seen = []
    applied = load_openmp_runtime(environ, lambda: seen.append(dict(environ)))
    assert seen == [{"PATH": "/bin", **RUNTIME_DEFAULTS}]
    assert applied == RUNTIME_DEFAULTS
    assert environ == {"PATH": "/bin"}


def test_a_value_the_user_set_is_kept():
    environ = {"OMP_WAIT_POLICY": "active"}
    seen = []
    assert load_openmp_runtime(environ, lambda: seen.append(dict(environ))) == {}
    assert seen == [{"OMP_WAIT_POLICY": "active"}]
    assert environ == {"OMP_WAIT_POLICY": "active"}


def test_the_environment_is_restored_when_loading_fails():
    environ = {}

    def broken():
        raise RuntimeError("the runtime did not load")

    with pytest.raises(RuntimeError, match="did not load"):
        load_openmp_runtime(environ, broken)
    assert environ == {}


def run_fresh(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in RUNTIME_DEFAULTS}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_cyconv_leaves_os_environ_and_child_processes_alone():
    result = run_fresh("""
        import os, subprocess, sys
        before = dict(os.environ)
        import cyconv
        assert os.environ == before, set(os.environ.items()) ^ set(before.items())
        child = subprocess.run([sys.executable, "-c",
                                "import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                               capture_output=True, text=True, check=True)
        print(child.stdout.strip())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_runtime_loads_while_the_policy_is_set():
    pytest.importorskip("cyconv_ext._openmp_helpers", reason="the compiled extension is not built")
    from cyconv_ext._openmp_helpers import openmp_enabled
    if not openmp_enabled():
        pytest.skip("a serial build: no OpenMP runtime to load")
    # the module alone, by path, in a fresh process: nothing else loads libgomp first
    result = run_fresh(f"""
        import importlib.util, os
        def gomp_loaded():   # GNU, LLVM or Intel OpenMP
            with open("/proc/self/maps") as maps:
                return any(name in line for line in maps
                           for name in ("libgomp", "libomp", "libiomp"))
        assert not gomp_loaded()
        spec = importlib.util.spec_from_file_location("runtime", {RUNTIME_FILE!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(gomp_loaded(), module.RUNTIME_APPLIED, "OMP_WAIT_POLICY" in os.environ)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"True {RUNTIME_DEFAULTS} False"


def test_the_benchmark_header_names_the_wait_policy(monkeypatch):
    from cyconv.bench.environment import header

    monkeypatch.setattr(_openmp_runtime, "RUNTIME_APPLIED", dict(RUNTIME_DEFAULTS))
    lines = header([2])
    assert any(line.startswith("OpenMP wait policy: PASSIVE (cyconv's default")
               for line in lines), lines
    monkeypatch.setattr(_openmp_runtime, "RUNTIME_APPLIED", {})
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert "OpenMP wait policy: OMP_WAIT_POLICY=active (yours)" in header([2])

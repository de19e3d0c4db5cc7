"""Runtime CPU dispatch (cyconv/_cpu.py, cyconv_ext/_cpu.pyx).

Every kernel variant this build holds and this CPU runs is checked against the
NumPy reference in a subprocess that selects it with CYCONV_CPU_FEATURES
(tests/cpu_variant_parity.py); a variant the CPU cannot run is skipped with
the features it lacks (importing it could die of SIGILL).  The selection
rule is tested on synthetic build records, and the override's failure mode
(the compiled backend is unavailable, with the reason) in a subprocess.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from cyconv import _cpu
from cyconv._config import config_info

ext_cpu = pytest.importorskip("cyconv_ext._cpu", reason="the compiled extension is not built")
TESTS = os.path.dirname(os.path.abspath(__file__))
KNOWN_VARIANTS = ("baseline", "avx2", "avx512")
RECORD = ext_cpu.build_record()
BUILT = [name for name, _, _ in RECORD["variants"]]
NEEDS = {name: needed for name, _, needed in RECORD["variants"]}
FEATURES = ext_cpu.cpu_features()


def run_python(args, variant, **kwargs):
    env = dict(os.environ)
    if variant is None:
        env.pop(_cpu.ENV_VAR, None)
    else:
        env[_cpu.ENV_VAR] = variant
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.mark.parametrize("variant", KNOWN_VARIANTS)
def test_every_runnable_variant_matches_the_reference(variant):
    if variant not in BUILT:
        pytest.skip(f"the {variant} kernels are not in this build (built: {', '.join(BUILT)})")
    missing = sorted(set(NEEDS[variant]) - FEATURES)
    if missing:
        pytest.skip(f"this CPU cannot run the {variant} kernels: it lacks {', '.join(missing)}")
    result = run_python([os.path.join(TESTS, "cpu_variant_parity.py"), variant], variant)
    assert result.returncode == 0, result.stdout + result.stderr
    ok = [line for line in result.stdout.splitlines() if line.endswith(": ok")]
    assert len(ok) == 8, result.stdout   # {float32, float64} x {conv, pool, relu, adam}


SYNTHETIC = (("avx512", ("-march=x86-64-v4",), ("avx2", "fma", "avx512f", "avx512bw")),
             ("avx2", ("-march=x86-64-v3",), ("avx2", "fma")),
             ("baseline", (), ()))


@pytest.mark.parametrize("requested", [None, "", "auto", " AUTO "])
def test_auto_picks_the_best_variant_the_cpu_runs(requested):
    everything = {"avx2", "fma", "avx512f", "avx512bw"}
    assert _cpu.choose_variant(requested, SYNTHETIC, everything) == "avx512"
    assert _cpu.choose_variant(requested, SYNTHETIC, {"avx2", "fma", "avx512f"}) == "avx2"
    assert _cpu.choose_variant(requested, SYNTHETIC, {"avx2"}) == "baseline"
    assert _cpu.choose_variant(requested, SYNTHETIC, set()) == "baseline"
    assert _cpu.choose_variant(requested, SYNTHETIC[2:], everything) == "baseline"


def test_override_picks_exactly_the_named_variant():
    features = {"avx2", "fma", "avx512f", "avx512bw"}
    for name in ("baseline", "avx2", "avx512"):
        assert _cpu.choose_variant(name, SYNTHETIC, features) == name
    assert _cpu.choose_variant(" AVX2\n", SYNTHETIC, features) == "avx2"


@pytest.mark.parametrize("requested, record, words", [
    ("avx512", SYNTHETIC, ["'avx512'", "lacks avx512bw, avx512f", "this CPU runs: avx2, baseline",
                           "unset CYCONV_CPU_FEATURES"]),
    ("avx2", SYNTHETIC[2:], ["names no kernel variant of this build", "built: baseline"]),
    ("sse9", SYNTHETIC, ["'sse9'", "built: avx512, avx2, baseline", "'auto'"]),
])
def test_impossible_override_is_an_error_that_says_why(requested, record, words):
    with pytest.raises(_cpu.CpuDispatchError) as info:
        _cpu.choose_variant(requested, record, {"avx2", "fma"})
    assert isinstance(info.value, ImportError)  # -> the compiled backend is unavailable
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_impossible_override_disables_the_compiled_backend_with_the_reason():
    lacking = [v for v in BUILT if set(NEEDS[v]) - FEATURES]
    requested = lacking[0] if lacking else "avx1024"   # no such variant: refused the same way
    script = textwrap.dedent("""
        import warnings
        import numpy as np
        import cyconv
        from cyconv._config import config_info
        try:
            cyconv.get_layer("Conv2D", "cython")
        except cyconv.BackendError as exc:
            print("explicit:", exc)
        x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = cyconv.conv2d(x, w)
        assert y.shape == (1, 1, 2, 2) and np.all(y == 9.0), y
        print("fallback:", [str(c.message) for c in caught
                            if issubclass(c.category, cyconv.BackendFallbackWarning)])
        print("info:", config_info()["kernel variant"])
    """)
    result = run_python(["-c", script], requested)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    reason = f"CYCONV_CPU_FEATURES={requested!r}"
    assert reason in lines["explicit"] and "unavailable" in lines["explicit"]
    assert reason in lines["fallback"] and "numpy" in lines["fallback"]
    assert lines["info"].startswith(f"none: {reason}")


def test_show_config_reports_the_running_variant():
    info = config_info()
    running = _cpu.selected_variant()
    requested = os.environ.get(_cpu.ENV_VAR, "").strip()
    how = f"{_cpu.ENV_VAR}={os.environ[_cpu.ENV_VAR]}" if requested else "auto"
    assert info["kernel variant"] == f"{running} ({how})"
    assert info["built variants"] == ", ".join(BUILT)
    if not requested:  # auto: the best built variant this CPU supports
        assert running == next(v for v in BUILT if set(NEEDS[v]) <= FEATURES)
    from cyconv.backends import cython_backend as cb
    for kernel in RECORD["modules"]:
        if hasattr(cb, kernel):
            assert getattr(cb, kernel).__name__ == _cpu.module_name(kernel, running)


def test_show_config_without_override_says_auto():
    result = run_python(["-m", "cyconv", "info"], None)
    assert result.returncode == 0, result.stderr
    line = next(s for s in result.stdout.splitlines() if s.startswith("kernel variant"))
    best = next(v for v in BUILT if set(NEEDS[v]) <= FEATURES)
    assert line.split(":", 1)[1].strip() == f"{best} (auto)"


def test_build_record_is_consistent():
    assert BUILT[-1] == "baseline" and NEEDS["baseline"] == ()
    assert len(set(BUILT)) == len(BUILT) and set(BUILT) <= set(KNOWN_VARIANTS)
    assert {"_conv", "_pool", "_elementwise", "_optim"} <= set(RECORD["modules"])
    assert not {"_cpu", "_openmp_helpers"} & set(RECORD["modules"])  # always baseline
    probed = set(ext_cpu.probed_features())
    for name in BUILT:  # a need the probe cannot see would make a variant unreachable
        assert set(NEEDS[name]) <= probed, (name, set(NEEDS[name]) - probed)
    assert FEATURES <= probed
    with pytest.raises(ValueError, match="_openmp_helpers"):
        _cpu.import_kernels("_openmp_helpers")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or not os.path.exists("/proc/cpuinfo"), reason="needs Linux on x86-64")
def test_probe_agrees_with_the_kernel_cpu_flags():
    """The probe's answer equals Linux's /proc/cpuinfo flags (which the kernel
    also clears for registers the OS does not save)."""
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    linux_names = {"sse4.2": "sse4_2", "bmi": "bmi1"}
    probed = ext_cpu.probed_features()
    assert "sse2" in probed
    expected = {name for name in probed if linux_names.get(name, name) in flags}
    assert FEATURES == expected


def test_every_runnable_variant_module_imports():
    for name in BUILT:
        if set(NEEDS[name]) <= FEATURES:
            for kernel in RECORD["modules"]:
                module = __import__(_cpu.module_name(kernel, name), fromlist=["_"])
                assert module.__name__ == _cpu.module_name(kernel, name)


def test_module_names():
    assert _cpu.module_name("_conv", "baseline") == "cyconv_ext._conv"
    assert _cpu.module_name("_pool", "avx512") == "cyconv_ext._pool_avx512"

"""The benchmark's environment: the once-only re-exec, malloc settings, the header.

OpenBLAS reads ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` when it is loaded,
and glibc's default malloc returns large freed blocks to the OS; see the
package docstring for why the benchmark re-executes itself without the one and
with raised thresholds for the other.
"""

from __future__ import annotations

import os
import platform
import sys
import time

__all__ = ["prepare_environment", "set_mallopt", "header", "wait_policy_line"]

_REEXEC_MARK = "CYCONV_BENCH_REEXEC"
_ORIG_PREFIX = "CYCONV_BENCH_ORIG_"
_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


def prepare_environment(argv):
    """Re-exec once with the BLAS variables unset and malloc thresholds raised."""
    if "--no-reexec" in argv or os.environ.get(_REEXEC_MARK):
        return
    if "pytest" in sys.modules or not sys.argv or sys.argv[0] in ("", "-c"):
        # called in-process (tests, notebooks): never replace the caller's process
        return
    env = dict(os.environ)
    changed = False
    for var in _BLAS_VARS:
        if var in env:
            env[_ORIG_PREFIX + var] = env.pop(var)
            changed = True
    for var, value in _MALLOC_ENV.items():
        if var not in env:
            env[var] = value
            changed = True
    if not changed:
        return
    env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "cyconv.bench", *argv], env)
    except OSError as exc:  # pragma: no cover - exotic platforms
        print(f"warning: could not re-exec the benchmark ({exc}); measuring as is",
              file=sys.stderr)


def set_mallopt():
    """Raise glibc's trim/mmap thresholds in-process too (harmless elsewhere)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)   # M_MMAP_THRESHOLD (accepted by glibc >= 2.35)
        return True
    except (OSError, AttributeError):
        return False


def wait_policy_line():
    """The OpenMP wait policy the run's threads follow, and who chose it."""
    from .._openmp_runtime import RUNTIME_APPLIED

    if "OMP_WAIT_POLICY" in RUNTIME_APPLIED:
        return (f"OpenMP wait policy: {RUNTIME_APPLIED['OMP_WAIT_POLICY']} (cyconv's default; "
                "torch, loaded after cyconv, shares the runtime: its small calls run faster "
                "in a process of its own)")
    return f"OpenMP wait policy: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} (yours)"


def header(threads_list, clock=time.perf_counter):
    import numpy as np

    from .._config import cpu_model

    lines = [f"cyconv benchmark  (python {platform.python_version()}, numpy {np.__version__})",
             f"CPU: {cpu_model()}; {os.cpu_count()} logical cores; threads: "
             + ",".join(map(str, threads_list))]
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("user_api") == "blas":
                lines.append(f"BLAS: {info.get('internal_api')} {info.get('version')} "
                             f"kernel={info.get('architecture')} "
                             f"({os.path.basename(info.get('filepath', ''))})")
    except Exception as exc:  # threadpoolctl missing
        lines.append(f"BLAS: unknown ({exc})")
    try:
        load = os.getloadavg()
        lines.append(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if load[0] > 0.5 * (os.cpu_count() or 1):
            lines.append("WARNING: the machine is busy (load average above half the cores): "
                         "wall-clock times will be noisy and inflated; compare ratios, or use "
                         "--threads 1 --clock thread.")
    except OSError:
        pass
    lines.append(wait_policy_line())
    if clock is not time.perf_counter:
        lines.append("clock: thread CPU time of the calling thread (valid with 1 thread only)")
    for var in _BLAS_VARS:
        if var in os.environ:
            lines.append(f"WARNING: {var}={os.environ[var]} is set: OpenBLAS may run at half "
                         f"speed; unset it (or run without --no-reexec).")
        elif _ORIG_PREFIX + var in os.environ:
            lines.append(f"note: {var}={os.environ[_ORIG_PREFIX + var]} was set; unset for "
                         f"this run.")
    return lines


"""The OpenMP probe of every compiled build: cyconv's setup.py and its compiled plugins'.

Build-time only and standard library only: cyconv's own ``setup.py`` loads
this file by path (the package cannot be imported before its extension is
built), a plugin's ``setup.py`` imports it from the installed cyconv
(``from cyconv._openmp_probe import openmp_flags``), so that both decide
"does OpenMP work here" in one way and honour ``CYCONV_FAIL_NO_OPENMP``
alike.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

__all__ = ["detect_openmp_flags", "openmp_flags"]

# Counts the team of a parallel region: 1 only if the runtime really runs one.
OPENMP_TEST_PROGRAM = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d", n == omp_get_max_threads());
    return 0;
}
"""

# (compile, link) flags tried in order: GCC/Clang with libgomp, then Apple Clang + libomp.
CANDIDATE_FLAGS = ((["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"]))


def _c_compiler():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def detect_openmp_flags():
    """Return (compile_flags, link_flags) for OpenMP, or None if none works.

    A flag counts only if a tiny ``#pragma omp parallel`` program compiles,
    links and *runs* with it: a compiler that accepts -fopenmp but lacks the
    runtime library would otherwise produce an extension that fails at import.
    """
    cc = _c_compiler()
    tmp = tempfile.mkdtemp(prefix="cyconv_omp_")
    try:
        src = os.path.join(tmp, "omp_test.c")
        exe = os.path.join(tmp, "omp_test")
        with open(src, "w") as f:
            f.write(OPENMP_TEST_PROGRAM)
        for cflags, lflags in CANDIDATE_FLAGS:
            try:
                subprocess.run(cc + cflags + [src, "-o", exe] + lflags,
                               check=True, capture_output=True, timeout=120)
                out = subprocess.run([exe], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.stdout.strip() == b"1":
                return list(cflags), list(lflags)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


def openmp_flags(project):
    """(compile, link) flags for OpenMP, or ([], []) for a serial build of ``project``.

    Without a working flag: a loud warning (pip hides build output, so the run
    time says it again), or ``SystemExit`` when ``CYCONV_FAIL_NO_OPENMP`` is
    set (release builds must not be silently serial).
    """
    found = detect_openmp_flags()
    if found is not None:
        return found
    msg = (f"{project}: no working OpenMP flag found; building SERIAL kernels. "
           f"Install an OpenMP runtime (e.g. libgomp) and rebuild for multithreading.")
    if os.environ.get("CYCONV_FAIL_NO_OPENMP", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise SystemExit(f"error: {msg} (CYCONV_FAIL_NO_OPENMP=1 is set)")
    border = "*" * 78
    print(f"\n{border}\n{msg}\n{border}\n", file=sys.stderr)
    return [], []

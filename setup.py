"""Build script for cyconv's compiled backend (cyconv_ext/*.pyx).

Environment switches
--------------------
CYCONV_FAIL_NO_OPENMP=1   fail the build when no working OpenMP flag is found
                          (default: warn loudly and build serial kernels).
CYCONV_DEBUG_CYTHON=1     build with bounds/wraparound/initialized checks on,
                          for hunting out-of-bounds accesses (slow).
CYCONV_PORTABLE=1         no -march=native (for wheels that run on other CPUs).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))

OPENMP_TEST_PROGRAM = textwrap.dedent(
    """
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
)


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def detect_openmp_flags():
    """Return (compile_flags, link_flags) for OpenMP, or None if none works.

    A flag counts only if a tiny ``#pragma omp parallel`` program compiles,
    links and *runs* with it: a compiler that accepts -fopenmp but lacks the
    runtime library would otherwise produce an extension that fails at import.
    """
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    candidates = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    tmp = tempfile.mkdtemp(prefix="cyconv_omp_")
    try:
        src = os.path.join(tmp, "omp_test.c")
        exe = os.path.join(tmp, "omp_test")
        with open(src, "w") as f:
            f.write(OPENMP_TEST_PROGRAM)
        for cflags, lflags in candidates:
            try:
                subprocess.run(cc + cflags + [src, "-o", exe] + lflags,
                               check=True, capture_output=True, timeout=120)
                out = subprocess.run([exe], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.stdout.strip() == b"1":
                return cflags, lflags
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


def native_arch_flags():
    """``-march=native`` unless CYCONV_PORTABLE=1 or the compiler refuses it.

    A build from source runs on the machine that compiles it, so the pooling
    loops may use its widest vector units (AVX-512 here: SSE2 otherwise).
    Set CYCONV_PORTABLE=1 when building a wheel for other machines.
    """
    if _env_flag("CYCONV_PORTABLE"):
        return []
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    try:
        subprocess.run(cc + ["-march=native", "-x", "c", "-c", "-o", os.devnull, "-"],
                       input=b"int main(void) { return 0; }\n", check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    return ["-march=native"]


def build_extensions():
    debug = _env_flag("CYCONV_DEBUG_CYTHON")
    openmp = detect_openmp_flags()
    if openmp is None:
        msg = ("cyconv: no working OpenMP flag found; building SERIAL kernels. "
               "Install an OpenMP runtime (e.g. libgomp) and rebuild for multithreading.")
        if _env_flag("CYCONV_FAIL_NO_OPENMP"):
            raise SystemExit("error: " + msg + " (CYCONV_FAIL_NO_OPENMP=1 is set)")
        border = "*" * 78
        print(f"\n{border}\n{msg}\n{border}\n", file=sys.stderr)
        cflags, lflags = [], []
    else:
        cflags, lflags = openmp

    # Never -ffast-math/-Ofast: NaN propagation and exact reductions matter here.
    # -ffp-contract=off: GCC fuses a*b+c into one FMA by default, which rounds
    # differently from NumPy's separate operations; the elementwise kernels
    # (ReLU, Adam) promise bitwise the NumPy result.  The GEMMs run in BLAS.
    # -fno-math-errno: sqrt need not set errno (values are unchanged), which is
    # what lets GCC vectorise a loop that calls it.
    contract = ["-ffp-contract=off", "-fno-math-errno"]
    compile_args = ["-O3"] + contract + cflags + native_arch_flags()
    if debug:
        compile_args = ["-O0", "-g"] + contract + cflags

    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": not debug,
        "embedsignature": True,
    }
    extensions = []
    for pyx in sorted(glob(os.path.join("cyconv_ext", "*.pyx"))):
        modname = os.path.splitext(pyx)[0].replace(os.sep, ".")
        extensions.append(
            Extension(
                modname,
                [pyx],
                include_dirs=[np.get_include(), "cyconv_ext"],
                # C headers the .pyx include (rebuild when they change; in the sdist)
                depends=sorted(glob(os.path.join("cyconv_ext", "include", "*.h"))),
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=compile_args,
                extra_link_args=lflags,
            )
        )
    return cythonize(
        extensions,
        compiler_directives=directives,
        compile_time_env={"CYCONV_DEBUG": debug},
        nthreads=int(os.environ.get("CYCONV_BUILD_JOBS", "0") or 0),
    )


setup(ext_modules=build_extensions())

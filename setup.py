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


# -- checks and records around the build (separate from the flag logic above) ----

BUILD_INFO = os.path.join("cyconv_ext", "_build_info.py")
COMPILING_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def require_extensions(extensions):
    """Fail a build that would compile nothing.

    Without the ``.pyx`` sources (an incomplete sdist) setuptools would
    quietly produce a pure-Python ``py3-none-any`` wheel whose every call
    falls back to NumPy; refuse instead.
    """
    if not extensions:
        raise SystemExit("error: cyconv: no Cython sources (cyconv_ext/*.pyx) in this source "
                         "tree, so the compiled backend cannot be built; an sdist must ship "
                         "them (see MANIFEST.in)")
    return extensions


def write_build_info(extensions):
    """Record the build's Cython, NumPy, compiler and flags for ``cyconv.show_versions()``.

    Written into the source tree (git-ignored, left out of the sdist), so a
    wheel and an editable install both carry the record of their own build;
    only by commands that compile (not ``sdist`` or metadata queries, which
    would describe a build that did not happen).  Only reads the finished
    ``Extension`` objects.
    """
    if not COMPILING_COMMANDS.intersection(sys.argv[1:]):
        return extensions
    import Cython

    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    try:
        compiler = subprocess.run(cc + ["--version"], capture_output=True, text=True,
                                  timeout=60).stdout.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        compiler = " ".join(cc)
    compile_args = {ext.name: list(ext.extra_compile_args) for ext in extensions}
    link_args = {ext.name: list(ext.extra_link_args) for ext in extensions}
    text = (f'"""What built this copy of the extension: written by setup.py, not in git."""\n\n'
            f"CYTHON_VERSION = {Cython.__version__!r}\n"
            f"NUMPY_BUILD_VERSION = {np.__version__!r}\n"
            f"COMPILER = {compiler!r}\n"
            f"ENVIRONMENT = {_build_switches()!r}\n"
            f"COMPILE_ARGS = {compile_args!r}\n"
            f"LINK_ARGS = {link_args!r}\n")
    path = os.path.join(HERE, BUILD_INFO)
    try:
        with open(path) as f:
            unchanged = f.read() == text
    except OSError:
        unchanged = False
    if not unchanged:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:  # a read-only tree still builds; show_versions says "unknown"
            print(f"cyconv: could not write {BUILD_INFO}: {exc}", file=sys.stderr)
    return extensions


def _build_switches():
    return {name: os.environ[name] for name in sorted(os.environ)
            if name.startswith("CYCONV_") or name in ("CC", "CFLAGS", "LDFLAGS")}


setup(ext_modules=write_build_info(require_extensions(build_extensions())))

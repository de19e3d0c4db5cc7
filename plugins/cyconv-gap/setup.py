"""Build the cyconv-gap kernel against the *installed* cyconv.

The kernel ``cimport``\\ s cyconv's public declarations
(``from cyconv_ext._fused cimport floating_t``), so the build needs cyconv
importable: ``cyconv.get_include()`` is the folder holding ``cyconv_ext/*.pxd``.
cyconv is not on PyPI, so build without isolation, in the environment where
cyconv, Cython>=3, numpy and setuptools are installed:

    pip install --no-build-isolation ./plugins/cyconv-gap

OpenMP: ``-fopenmp`` is used if a tiny OpenMP program compiles, links and runs
with it; otherwise the kernel is built serial (with a warning), or the build
fails if ``CYCONV_FAIL_NO_OPENMP=1``.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize

    import cyconv
except ImportError as exc:  # pragma: no cover - explained to the user
    raise SystemExit(
        f"error: building cyconv-gap needs cyconv and Cython>=3 installed in this environment "
        f"({exc}). cyconv is not on PyPI, so install the plugin without build isolation:\n"
        f"    pip install --no-build-isolation ./plugins/cyconv-gap") from None

OPENMP_TEST = r"""
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


def _openmp_flags():
    """(compile, link) flags for OpenMP, or ([], []) for a serial build."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    tmp = tempfile.mkdtemp(prefix="cyconv_gap_omp_")
    try:
        src, exe = os.path.join(tmp, "t.c"), os.path.join(tmp, "t")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for cflags, lflags in ((["-fopenmp"], ["-fopenmp"]),
                               (["-Xpreprocessor", "-fopenmp"], ["-lomp"])):
            try:
                subprocess.run(cc + cflags + [src, "-o", exe] + lflags, check=True,
                               capture_output=True, timeout=120)
                out = subprocess.run([exe], check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            if out.stdout.strip() == b"1":
                return cflags, lflags
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    msg = "cyconv-gap: no working OpenMP flag found; building a SERIAL kernel"
    if os.environ.get("CYCONV_FAIL_NO_OPENMP", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise SystemExit(f"error: {msg} (CYCONV_FAIL_NO_OPENMP=1 is set)")
    print(f"\n{'*' * 72}\n{msg}\n{'*' * 72}\n", file=sys.stderr)
    return [], []


cflags, lflags = _openmp_flags()
extension = Extension(
    "cyconv_gap._gap",
    ["src/cyconv_gap/_gap.pyx"],
    extra_compile_args=["-O3"] + cflags,   # never -ffast-math: NaN must propagate
    extra_link_args=lflags,
)
setup(ext_modules=cythonize(
    [extension],
    include_path=[cyconv.get_include()],   # where `cimport cyconv_ext._fused` is found
    compiler_directives={
        "language_level": 3, "boundscheck": False, "wraparound": False,
        "initializedcheck": False, "cdivision": True, "embedsignature": True,
    },
))

"""Build the cyconv-gap kernel against the *installed* cyconv.

The kernel ``cimport``\\ s cyconv's public declarations
(``from cyconv_ext._fused cimport floating_t``), so the build needs cyconv
importable: ``cyconv.get_include()`` is the folder holding ``cyconv_ext/*.pxd``.
cyconv is not on PyPI, so build without isolation, in the environment where
cyconv, Cython>=3, numpy and setuptools are installed:

    pip install --no-build-isolation ./plugins/cyconv-gap

OpenMP: cyconv's build probe (``cyconv._openmp_probe``) decides, as for cyconv
itself: ``-fopenmp`` is used if a tiny OpenMP program compiles, links and runs
with it; otherwise the kernel is built serial (with a warning), or the build
fails if ``CYCONV_FAIL_NO_OPENMP=1``.
"""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize

    import cyconv
    from cyconv._openmp_probe import openmp_flags  # cyconv's own probe: one owner
except ImportError as exc:  # pragma: no cover - explained to the user
    raise SystemExit(
        f"error: building cyconv-gap needs cyconv and Cython>=3 installed in this environment "
        f"({exc}). cyconv is not on PyPI, so install the plugin without build isolation:\n"
        f"    pip install --no-build-isolation ./plugins/cyconv-gap") from None

cflags, lflags = openmp_flags("cyconv-gap")
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

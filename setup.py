"""Build script for cyconv's compiled backend (cyconv_ext/*.pyx).

Kernel variants (runtime CPU dispatch)
--------------------------------------
Every cyconv_ext/*.pyx except the small helpers in BASELINE_ONLY is compiled
once per variant: ``baseline`` (the platform's default instruction
set, SSE2 on x86-64) as ``cyconv_ext._conv``, and on x86-64 also ``avx2``
(x86-64-v3) as ``cyconv_ext._conv_avx2`` and ``avx512`` (x86-64-v4) as
``cyconv_ext._conv_avx512``.  At import, cyconv/_cpu.py loads the best variant
the CPU runs (``CYCONV_CPU_FEATURES`` overrides), so one build runs on every
x86-64 and uses the vector units where they exist.  A variant the compiler
refuses (``-march=x86-64-v3`` needs GCC >= 11 or Clang >= 12) is skipped with
a note.

Environment switches
--------------------
CYCONV_FAIL_NO_OPENMP=1   fail the build when no working OpenMP flag is found
                          (default: warn loudly and build serial kernels).
CYCONV_DEBUG_CYTHON=1     build with bounds/wraparound/initialized checks on,
                          for hunting out-of-bounds accesses (slow); builds
                          the baseline variant only.
CYCONV_VARIANTS=avx2,...  build only these variants besides baseline (which is
                          always built), e.g. ``avx2`` for a quicker local build;
                          ``baseline`` alone builds no variant.
CYCONV_BUILD_JOBS=N       parallel Cython and C compiler jobs (default: the
                          CPUs this process may use; 1 = serial).
CYCONV_PORTABLE           no longer read: every build is portable now (it
                          used to turn off -march=native, which is gone).
"""

import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
from glob import glob

import Cython
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _load_openmp_probe():
    """cyconv/_openmp_probe.py, the one OpenMP probe (the gap plugin's setup.py
    imports it from the installed cyconv), loaded by path: the package itself
    cannot be imported before its extension is built."""
    spec = importlib.util.spec_from_file_location(
        "cyconv_openmp_probe", os.path.join(HERE, "cyconv", "_openmp_probe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Kernel variants, best first: (name, compiler flags, CPU features those
# flags let the compiler use).  The features are checked at import by
# cyconv/_cpu.py, in the names of cyconv_ext/_cpu.pyx's probe.  The levels are
# the x86-64 psABI's: v3 = AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE on top of v2
# (SSE4.2, POPCNT, ...); v4 adds AVX-512 F/BW/CD/DQ/VL.  F16C, LZCNT and MOVBE
# are not probed (not every compiler's probe knows them): every CPU with
# AVX2, FMA and BMI2 has them.  -march=x86-64-vN keeps -mtune=generic.
X86_VARIANTS = (
    ("avx512", ("-march=x86-64-v4",),
     ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2",
      "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")),
    ("avx2", ("-march=x86-64-v3",),
     ("sse4.2", "popcnt", "avx", "avx2", "fma", "bmi", "bmi2")),
)
BASELINE = ("baseline", (), ())
# Small helpers that do no heavy loops: one build, and _cpu must run anywhere.
HEADERS = sorted(glob(os.path.join("cyconv_ext", "include", "*.h")))
BASELINE_ONLY = {"_cpu", "_openmp_helpers", "_blas_limit"}
# setup.py writes the build record (cyconv_ext/_cpu.pyx includes it) here, and
# the C files of the non-baseline variants under VARIANT_C_DIR/<variant>.
GENERATED_DIR = os.path.join("build", "cyconv_generated")
VARIANT_C_DIR = os.path.join("build", "cyconv_variants")
# Cython's utility code (memoryview types, buffer checks: most of each
# module's C, about 7 s of -O3 compile time) is built once into this module,
# which the others import, instead of into every module and variant
# (Cython >= 3.1).  It runs per call, not per element: baseline is enough.
SHARED_UTILITY = "cyconv_ext._cyutility"
SHARES_UTILITY = tuple(int(n) for n in re.findall(r"\d+", Cython.__version__)[:2]) >= (3, 1)


def _compiler_accepts(flags):
    """True if the C compiler compiles an empty program with ``flags``."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    try:
        subprocess.run(cc + list(flags) + ["-x", "c", "-c", "-o", os.devnull, "-"],
                       input=b"int main(void) { return 0; }\n", check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def select_variants(debug):
    """The variants to build, best first, ending with the baseline."""
    target = sysconfig.get_platform().rsplit("-", 1)[-1].lower()
    candidates = X86_VARIANTS if target in {"x86_64", "amd64"} else ()
    requested = os.environ.get("CYCONV_VARIANTS", "").strip().lower()
    if debug:
        candidates = ()
    elif requested:
        names = {n.strip() for n in requested.split(",") if n.strip()} - {"baseline"}
        known = {v[0] for v in candidates}
        if names - known:
            raise SystemExit(f"error: CYCONV_VARIANTS={requested!r}: unknown or not for this "
                             f"platform ({target}): {', '.join(sorted(names - known))}; "
                             f"choose from: baseline, {', '.join(sorted(known)) or '(none)'}")
        candidates = tuple(v for v in candidates if v[0] in names)
    chosen = []
    for variant in candidates:
        if _compiler_accepts(variant[1]):
            chosen.append(variant)
        else:
            print(f"cyconv: the C compiler refuses {' '.join(variant[1])}: not building the "
                  f"{variant[0]} kernels (this build runs the baseline ones on such CPUs)",
                  file=sys.stderr)
    return chosen + [BASELINE]


def write_build_record(variants, dispatched):
    """Write the .pxi that cyconv_ext/_cpu.pyx includes, only if its text changes
    (so that Cython rebuilds _cpu exactly when the set of variants changes)."""
    text = ("# Generated by setup.py: the kernel variants this build compiled, best first\n"
            "# (name, compiler flags, CPU features needed), and the modules built per variant.\n"
            f"BUILT_VARIANTS = {tuple((n, tuple(f), tuple(r)) for n, f, r in variants)!r}\n"
            f"DISPATCHED_MODULES = {tuple(dispatched)!r}\n")
    os.makedirs(GENERATED_DIR, exist_ok=True)
    path = os.path.join(GENERATED_DIR, "_cpu_build_record.pxi")
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


def build_jobs():
    """CYCONV_BUILD_JOBS, else the number of CPUs this process may run on."""
    value = os.environ.get("CYCONV_BUILD_JOBS", "").strip()
    if value:
        return max(1, int(value))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def build_extensions(jobs):
    debug = _env_flag("CYCONV_DEBUG_CYTHON")
    cflags, lflags = _load_openmp_probe().openmp_flags("cyconv")

    # Never -ffast-math/-Ofast: NaN propagation and exact reductions matter here.
    # -ffp-contract=off: GCC fuses a*b+c into one FMA by default, which rounds
    # differently from NumPy's separate operations; the elementwise kernels
    # (ReLU, Adam) promise bitwise the NumPy result.  The GEMM (include/
    # cyconv_gemm.h) fuses through explicit FMA intrinsics, which it leaves alone.
    # -fno-math-errno: sqrt need not set errno (values are unchanged), which is
    # what lets GCC vectorise a loop that calls it.
    contract = ["-ffp-contract=off", "-fno-math-errno", "-fno-tree-loop-distribute-patterns"]
    compile_args = ["-O3"] + contract + cflags
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
    sources = sorted(glob(os.path.join("cyconv_ext", "*.pyx")))
    dispatched = [os.path.splitext(os.path.basename(pyx))[0] for pyx in sources]
    dispatched = [name for name in dispatched if name not in BASELINE_ONLY]
    variants = select_variants(debug)
    write_build_record(variants, dispatched)

    ext_modules = []
    for name, arch_flags, _ in variants:
        if name == "baseline":  # cyconv_ext/_conv.pyx -> cyconv_ext._conv, C file beside it
            modules = [(os.path.splitext(pyx)[0].replace(os.sep, "."), pyx) for pyx in sources]
            if SHARES_UTILITY and sources:  # cythonize generates its C file
                modules.append((SHARED_UTILITY, SHARED_UTILITY.replace(".", os.sep) + ".c"))
            build_dir = None
        else:
            # Same source, its own module name (Cython takes it from the
            # Extension, so PyInit__conv_avx2 and relative cimports resolve as
            # for cyconv_ext._conv), and its own C file under build/.
            modules = [(f"cyconv_ext.{mod}_{name}", os.path.join("cyconv_ext", mod + ".pyx"))
                       for mod in dispatched]
            build_dir = os.path.join(VARIANT_C_DIR, name)
        extensions = cythonize(
            # depends: the C headers the .pyx include (rebuild when they change)
            [Extension(modname, [pyx], depends=HEADERS) for modname, pyx in modules],
            build_dir=build_dir,
            include_path=[GENERATED_DIR],
            compiler_directives=directives,
            compile_time_env={"CYCONV_DEBUG": debug},
            nthreads=jobs if jobs > 1 else 0,
            **({"shared_utility_qualified_name": SHARED_UTILITY} if SHARES_UTILITY else {}),
        )
        # Compiler options are added after cythonize() (to any that a
        # "# distutils:" line in the source gave), as new lists: cythonize
        # merges an Extension's list options into a per-source cache (Cython
        # 3.3), so flags given before would leak from one variant into the next.
        for ext in extensions:
            ext.include_dirs = [np.get_include(), "cyconv_ext"] + list(ext.include_dirs)
            ext.define_macros = ([("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
                                 + list(ext.define_macros))
            ext.extra_compile_args = compile_args + list(arch_flags) + list(ext.extra_compile_args)
            ext.extra_link_args = list(lflags) + list(ext.extra_link_args)
        ext_modules += extensions
    # Biggest C files first, so that parallel compiler jobs finish together.
    ext_modules.sort(key=lambda ext: -os.path.getsize(ext.sources[0]))
    return ext_modules


# -- checks and records around the build (separate from the flag logic above) ----

BUILD_INFO = os.path.join("cyconv_ext", "_build_info.py")
COMPILING_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def require_extensions(extensions):
    """Fail a build that would compile nothing.

    Without the ``.pyx`` sources (an incomplete sdist) setuptools would
    quietly produce a pure-Python ``py3-none-any`` wheel whose every call
    falls back to NumPy; refuse instead.
    """
    if not glob(os.path.join(HERE, "cyconv_ext", "*.pyx")) or not extensions:
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


JOBS = build_jobs()
setup(ext_modules=write_build_info(require_extensions(build_extensions(JOBS))),
      options={"build_ext": {"parallel": JOBS if JOBS > 1 else False}})

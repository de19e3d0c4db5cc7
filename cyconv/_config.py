"""``show_config()`` and ``show_versions()``: what this cyconv build is and runs on."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys

import numpy as np


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def config_info():
    """Return the information :func:`show_config` prints, as a dict."""
    from . import __version__
    from ._cpu import dispatch_info
    from ._registry import REGISTRY, list_layers
    from ._threads import get_num_threads, max_usable_threads

    try:
        from cyconv_ext import _openmp_helpers
        openmp = _openmp_helpers.openmp_enabled()
        extension = "built"
    except ImportError as exc:
        openmp, extension = False, f"missing ({exc})"
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                f"{i.get('num_threads')} threads)" for i in threadpool_info()
                if i.get("user_api") == "blas"]
    except ImportError:
        blas = ["threadpoolctl not installed"]
    from ._blas import NUMPY_BLAS
    blas_threads = (f"numpy's {NUMPY_BLAS.api} ({NUMPY_BLAS.path or 'library file unknown'}): "
                    f"{NUMPY_BLAS.note}")
    plugins = REGISTRY.plugin_report()
    algorithms = {}
    for backend in REGISTRY.all_backends():
        try:
            kernels = REGISTRY.get("Conv2D", backend).kernels
        except Exception:  # backend unavailable: listed as such below
            continue
        algorithms[backend] = ("auto",) + tuple(getattr(kernels, "CONV2D_ALGORITHMS", ("gemm",)))
    return {
        "cyconv": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "compiled extension": extension,
        "openmp": openmp,
        **dispatch_info(),
        "threads": get_num_threads(),
        "usable cores": max_usable_threads(),
        "blas": blas,
        "blas threads": blas_threads,
        "backends": {b: REGISTRY.unavailable_backends.get(b, "available")
                     for b in REGISTRY.all_backends()},
        "layers": {name: REGISTRY.backends_for(name) for name in list_layers()},
        "conv2d algorithms": algorithms,
        "plugins": plugins,
    }


def show_config(file=None):
    """Print versions, OpenMP, threads, BLAS, backends, layers and plugins.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.show_config()  # doctest: +SKIP
    """
    info = config_info()
    out = file or sys.stdout
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "layers":
            print(f"{key:<{width}} :", file=out)
            for name, backends in value.items():
                print(f"  {name:<{width}} {', '.join(backends)}", file=out)
        elif key == "backends":
            print(f"{key:<{width}} :", file=out)
            for name, state in value.items():
                print(f"  {name:<{width}} {state}", file=out)
        elif key == "plugins":
            print(f"{key:<{width}} : loaded: {', '.join(value['loaded']) or 'none'}", file=out)
            for name, reason in value["failed"]:
                print(f"  failed {name}: {reason}", file=out)
        elif key == "blas":
            print(f"{key:<{width}} : {'; '.join(value) or 'none found'}", file=out)
        else:
            print(f"{key:<{width}} : {value}", file=out)


# -- show_versions (scikit-learn's name and layout) ----------------------------------

def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _build_info():
    """The build's record written by setup.py (``cyconv_ext/_build_info.py``), or None."""
    try:
        return importlib.import_module("cyconv_ext._build_info")
    except ImportError:
        return None


def versions_info():
    """Return what :func:`show_versions` prints, as a dict of sections."""
    from . import __version__

    dependencies = {"cyconv": __version__}
    for name in ("numpy", "scipy", "threadpoolctl", "Cython", "tqdm", "matplotlib",
                 "scikit-learn", "hypothesis"):
        dependencies[name] = _version(name) or "not installed"
    try:
        from cyconv_ext import _openmp_helpers
        openmp = "enabled" if _openmp_helpers.openmp_enabled() else "disabled (serial kernels)"
        extension = "built"
    except ImportError as exc:
        openmp, extension = "n/a", f"missing ({exc})"
    build = {"compiled extension": extension}
    info = _build_info()
    if info is None:
        build["Cython"] = "unknown (no build record: built by an older setup.py)"
    else:
        distinct = sorted({" ".join(args) for args in info.COMPILE_ARGS.values()})
        links = sorted({" ".join(args) for args in info.LINK_ARGS.values()})
        build.update({
            "Cython": info.CYTHON_VERSION,
            "numpy (build)": info.NUMPY_BUILD_VERSION,
            "compiler": info.COMPILER,
            "compile flags": " | ".join(distinct) or "none",
            "link flags": " | ".join(links) or "none",
            "build switches": ", ".join(f"{k}={v}" for k, v in info.ENVIRONMENT.items())
                              or "none",
        })
    from ._cpu import dispatch_info

    build.update(dispatch_info())  # the CPU variants built and the one running
    build["OpenMP"] = openmp
    try:
        from threadpoolctl import threadpool_info
        pools = threadpool_info()
    except ImportError:
        pools = [{"threadpoolctl": "not installed"}]
    return {
        "System": {"python": sys.version.replace("\n", " "), "executable": sys.executable,
                   "machine": platform.platform(), "cpu": cpu_model()},
        "Python dependencies": dependencies,
        "Build": build,
        "threadpoolctl info (OpenMP runtime, BLAS libraries and their threads)": pools,
    }


def show_versions(file=None):
    """Print versions of cyconv, its dependencies and its build, scikit-learn style.

    System (Python, platform), Python dependencies (numpy, scipy,
    threadpoolctl, ...), the build (the Cython, NumPy and compiler it was
    built with, its compiler flags, its CPU variants and the one running,
    OpenMP) and threadpoolctl's view of the OpenMP runtime and BLAS libraries
    with their thread counts.  Paste it into bug reports.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.show_versions()  # doctest: +SKIP
    """
    out = file or sys.stdout
    for title, section in versions_info().items():
        print(f"\n{title}:", file=out)
        if isinstance(section, dict):
            width = max(len(k) for k in section)
            for key, value in section.items():
                print(f"{key:>{width}}: {value}", file=out)
        else:
            for pool in section:
                width = max(len(k) for k in pool)
                for key, value in pool.items():
                    print(f"{key:>{width}}: {value}", file=out)
                print(file=out)

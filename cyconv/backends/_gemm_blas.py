"""Which BLAS library the convolution kernels' GEMMs call, and its thread-count functions.

The kernels call ``sgemm``/``dgemm`` from :mod:`scipy.linalg.cython_blas`; the
library behind them is whatever that extension module was linked against
(scipy's bundled ``libscipy_openblas`` for PyPI wheels, a system OpenBLAS,
MKL or FlexiBLAS elsewhere).  It is found by looking the libraries'
thread-count functions up through the module's own dependency tree
(``dlsym`` on its handle), so numpy's BLAS -- a different library in PyPI
wheels -- is never touched.  The functions are handed by address to
:mod:`cyconv_ext._blas_limit`, which limits the library without Python code.

Libraries that need no limit are not bound: OpenBLAS built sequential, and
OpenBLAS built with OpenMP, which runs one thread when called from inside an
OpenMP parallel region (threadpoolctl's ``sequential_blas_under_openmp`` rule).
"""

from __future__ import annotations

import ctypes
import itertools
import os
from typing import NamedTuple

__all__ = ["GemmBlas", "find_gemm_blas"]


class GemmBlas(NamedTuple):
    api: str              # "openblas", "mkl", "flexiblas" or "unknown"
    path: str | None      # the shared library file (None: not found)
    get_address: int      # int get(void), 0 when not bound
    set_address: int      # void set(int), 0 when not bound
    note: str             # why it is (not) limited, for show_config()


# (api, get, set, threading-layer query or None); OpenBLAS's names carry the
# prefixes and suffixes of its builds (scipy's wheels: "scipy_", "64_").
_CANDIDATES = [("flexiblas", "flexiblas_get_num_threads", "flexiblas_set_num_threads", None)]
_CANDIDATES += [("openblas", f"{p}openblas_get_num_threads{s}", f"{p}openblas_set_num_threads{s}",
                 f"{p}openblas_get_parallel{s}")
                for p, s in itertools.product(("", "scipy_"), ("", "64_", "_64"))]
_CANDIDATES += [("mkl", "MKL_Get_Max_Threads", "MKL_Set_Num_Threads", None)]

_OPENBLAS_LAYERS = {0: "sequential", 1: "pthreads", 2: "openmp"}


def _address(function):
    return ctypes.cast(function, ctypes.c_void_p).value or 0


def _library_path(address):
    """The file that holds ``address`` (dladdr), or None where unknown."""

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError, TypeError):
        return None
    info = DlInfo()
    if not dladdr(ctypes.c_void_p(address), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def find_gemm_blas(module_file=None):
    """Find the BLAS behind ``scipy.linalg.cython_blas`` (or the extension at
    ``module_file``) and say whether and how to limit it.

    Returns
    -------
    GemmBlas
        ``get_address``/``set_address`` are 0 when the library needs no limit
        or cannot be controlled (then ``note`` says which).
    """
    if module_file is None:
        from scipy.linalg import cython_blas
        module_file = cython_blas.__file__
    try:
        handle = ctypes.CDLL(module_file, mode=getattr(os, "RTLD_NOLOAD", 0))
    except OSError as exc:
        return GemmBlas("unknown", None, 0, 0, f"not limited: cannot open {module_file} ({exc})")
    for api, get_name, set_name, layer_name in _CANDIDATES:
        try:
            get_threads, set_threads = getattr(handle, get_name), getattr(handle, set_name)
        except AttributeError:
            continue
        get_threads.restype = ctypes.c_int
        path = _library_path(_address(get_threads))
        if layer_name is not None and hasattr(handle, layer_name):
            query = getattr(handle, layer_name)
            query.restype = ctypes.c_int
            layer = _OPENBLAS_LAYERS.get(query(), "unknown")
            if layer in ("sequential", "openmp"):
                return GemmBlas(api, path, 0, 0, f"not limited: {api} built {layer} runs one "
                                                 f"thread inside OpenMP threads")
        return GemmBlas(api, path, _address(get_threads), _address(set_threads),
                        "one thread during conv calls")
    return GemmBlas("unknown", None, 0, 0,
                    "not limited: no known thread-count function (OpenBLAS, MKL, FlexiBLAS)")

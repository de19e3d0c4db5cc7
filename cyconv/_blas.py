"""numpy's BLAS under cyconv's thread count: :func:`matmul`, the one way cyconv reaches BLAS.

cyconv's own kernels (convolution, pooling, ReLU, Adam) are compiled loops and
GEMMs run on cyconv's OpenMP threads; the matrix products of ``Affine``, of the
numpy backend's convolution and of the textbook-compat ``Affine`` are numpy's
``@``, which numpy hands to its BLAS library (the ``libscipy_openblas`` bundled
in numpy's wheels, a system OpenBLAS, MKL or FlexiBLAS elsewhere).  That
library has a thread pool of its own, sized at load time to all cores, so
before this module ``cyconv.set_num_threads(1)`` left those products on two
threads, and on a busy machine a two-thread OpenBLAS product of a training
batch took milliseconds instead of a tenth of one (docs/performance.md,
"One thread knob").

:func:`matmul` runs ``a @ b`` with the BLAS library set to the count
:func:`cyconv._threads.blas_thread_count` gives (cyconv's resolved count, fewer
for a small product), through :class:`cyconv_ext._blas_limit.BlasThreads`,
which sets the count by the library's own function and gives the user's count
back when the last overlapping call leaves, on every exit path.  The library's
thread count is one number for the whole process: while a cyconv product runs,
a product another Python thread starts at the same time runs cyconv's count
too; before and after cyconv's calls every thread sees the user's setting.

The library is found by looking its thread-count functions up through numpy's
``_multiarray_umath`` extension (``dlsym`` on its handle), so a second BLAS in
the process (scipy's own ``libscipy_openblas`` in PyPI wheels) is never touched.
Without the compiled extension (cyconv_ext) the products run with the user's
BLAS setting (``show_config()`` says so under "blas threads").
"""

from __future__ import annotations

import ctypes
import itertools
import os
from typing import NamedTuple

import numpy as np

from . import _threads

__all__ = ["BlasLibrary", "find_blas", "matmul", "NUMPY_BLAS"]


class BlasLibrary(NamedTuple):
    api: str              # "openblas", "mkl", "flexiblas" or "unknown"
    path: str | None      # the shared library file (None: not found)
    get_address: int      # int get(void), 0 when not found
    set_address: int      # void set(int), 0 when not found
    note: str             # how cyconv controls it, for show_config()


# (api, get, set); OpenBLAS's names carry the prefixes and suffixes of its
# builds (numpy's wheels: "scipy_" and "64_", scipy's: "scipy_").
_CANDIDATES = [("flexiblas", "flexiblas_get_num_threads", "flexiblas_set_num_threads")]
_CANDIDATES += [("openblas", f"{p}openblas_get_num_threads{s}", f"{p}openblas_set_num_threads{s}")
                for p, s in itertools.product(("", "scipy_"), ("", "64_", "_64"))]
_CANDIDATES += [("mkl", "MKL_Get_Max_Threads", "MKL_Set_Num_Threads")]


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


def find_blas(module_file=None):
    """Find the BLAS behind numpy's ``_multiarray_umath`` (or the extension at
    ``module_file``) and its thread-count functions.

    Returns
    -------
    BlasLibrary
        ``get_address``/``set_address`` are 0 when no known thread-count
        function was found (then ``note`` says so).
    """
    if module_file is None:
        module_file = np._core._multiarray_umath.__file__
    try:
        handle = ctypes.CDLL(module_file, mode=getattr(os, "RTLD_NOLOAD", 0))
    except OSError as exc:
        return BlasLibrary("unknown", None, 0, 0, f"not controlled: cannot open {module_file} "
                                                  f"({exc})")
    for api, get_name, set_name in _CANDIDATES:
        try:
            get_threads, set_threads = getattr(handle, get_name), getattr(handle, set_name)
        except AttributeError:
            continue
        return BlasLibrary(api, _library_path(_address(get_threads)), _address(get_threads),
                           _address(set_threads), "cyconv's thread count inside cyconv's calls")
    return BlasLibrary("unknown", None, 0, 0, "not controlled: no known thread-count function "
                                              "(OpenBLAS, MKL, FlexiBLAS)")


NUMPY_BLAS = find_blas()

try:
    from cyconv_ext import _blas_limit
except ImportError as exc:  # no compiled extension: the user's BLAS setting stays in force
    _blas_limit = None
    NUMPY_BLAS = NUMPY_BLAS._replace(note=f"not controlled: compiled extension missing ({exc})")
else:
    _blas_limit.bind(NUMPY_BLAS.get_address, NUMPY_BLAS.set_address)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_blas_limit.after_fork_in_child)


class _Untouched:
    """Stands in for ``BlasThreads`` without the compiled extension."""

    def __init__(self, n_threads):
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        return False


_BlasThreads = _Untouched if _blas_limit is None else _blas_limit.BlasThreads
_matmul = np.matmul  # a module global, so that tests can look inside a guarded product


def matmul(a, b, n_threads=None):
    """``a @ b`` with numpy's BLAS on cyconv's thread count.

    Parameters
    ----------
    a, b : ndarray
        As for ``np.matmul``; ``b`` is a matrix (the multiply-adds are
        ``a.size * b.shape[-1]``).
    n_threads : int or None
        Resolved by :func:`cyconv._threads.blas_thread_count` (None: the
        calling thread's setting).
    """
    with _BlasThreads(_threads.blas_thread_count(n_threads, a.size * b.shape[-1])):
        # stored, and returned after the block: the opcodes that follow a
        # ``return``'s call already unwind the block, outside its handler
        product = _matmul(a, b)
    return product

"""Thread-count settings: the one helper that owns their semantics.

* ``None``: the global setting (:func:`set_num_threads` or the
  ``CYCONV_NUM_THREADS`` environment variable), else all usable cores.
* "All usable cores" respects the CPU affinity mask and ``OMP_NUM_THREADS``.
* A negative count counts back from that maximum: ``-1`` is all cores,
  ``-2`` all but one (never fewer than one).
* ``0`` is an error, as is anything that is not an integer.

Kernels only ever see the positive count returned by
:func:`resolve_num_threads`.
"""

from __future__ import annotations

import numbers
import os
import threading

__all__ = ["set_num_threads", "get_num_threads", "resolve_num_threads", "max_usable_threads"]

_lock = threading.Lock()
_global_setting = None  # None: follow CYCONV_NUM_THREADS / all cores


def max_usable_threads():
    """Cores this process may use: the affinity mask, capped by ``OMP_NUM_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(cores, 1)


def _check_count(n_threads, name):
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {n_threads!r}")
    if n_threads == 0:
        raise ValueError(f"{name}=0 is not a thread count; use None for all cores, "
                         f"a positive count, or a negative one to count back from all cores")
    return int(n_threads)


def _from_environment():
    value = os.environ.get("CYCONV_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        return _check_count(int(value), "CYCONV_NUM_THREADS")
    except ValueError as exc:
        raise ValueError(f"CYCONV_NUM_THREADS={value!r} is invalid: {exc}") from None


def resolve_num_threads(n_threads=None):
    """Turn a requested thread count into the positive count a kernel uses.

    Parameters
    ----------
    n_threads : int or None
        See the module docstring for the rules.

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    ValueError
        For 0.
    TypeError
        For a non-integer.

    Examples
    --------
    >>> resolve_num_threads(1)
    1
    >>> resolve_num_threads(-1) == max_usable_threads()
    True
    """
    if n_threads is None:
        n_threads = _global_setting if _global_setting is not None else _from_environment()
        if n_threads is None:
            return max_usable_threads()
    n_threads = _check_count(n_threads, "n_threads")
    if n_threads < 0:
        return max(max_usable_threads() + 1 + n_threads, 1)
    return n_threads


def set_num_threads(n_threads):
    """Set the number of threads cyconv's compiled kernels use.

    Parameters
    ----------
    n_threads : int or None
        A positive count, a negative count (``-1`` = all usable cores), or
        ``None`` to go back to the default (``CYCONV_NUM_THREADS`` or all cores).
        Safe to call while other threads compute: each call reads the setting
        once, when it starts.
    """
    global _global_setting
    if n_threads is not None:
        _check_count(n_threads, "n_threads")
    with _lock:
        _global_setting = n_threads


def get_num_threads():
    """Return the thread count a kernel started now would use (a positive int)."""
    return resolve_num_threads(None)

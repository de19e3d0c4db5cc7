"""The kernel-set table and the backend preference order (see :mod:`cyconv.backends`).

Kept apart from the package's ``__init__`` so that the backends themselves
import only this (their warnings), never the package that loads them.
"""

from __future__ import annotations

import contextvars
import os
import threading
import warnings


class SerialBuildWarning(UserWarning):
    """More than one thread was asked of a compiled backend built without OpenMP.

    The kernels still run, on one thread; rebuild with an OpenMP runtime
    (``libgomp``) for multithreading.  Issued once per process.
    """



#: cyconv's own backends, in default preference order.
BUILTIN_BACKENDS = ("cython", "numpy")


class BackendError(LookupError):
    """A requested backend does not exist, is unavailable, or lacks the layer."""


def explicit_backend_error(layer, backend, serving, unavailable):
    """The error for an explicitly named ``backend`` that cannot serve ``layer``:
    unavailable (``unavailable`` maps such backends to the reason), or lacking
    the layer; ``serving`` lists the backends that can."""
    if backend in unavailable:
        return BackendError(f"backend {backend!r} is unavailable: {unavailable[backend]}. "
                            f"Layer {layer!r} is available for: {', '.join(serving)}.")
    return BackendError(f"layer {layer!r} has no {backend!r} implementation; available "
                        f"backends for it: {', '.join(serving)}.")


class BackendFallbackWarning(UserWarning):
    """The compiled backend is unavailable and cyconv runs on the numpy backend."""


def ordered(backends):
    """Built-in backends first (in preference order), then the rest alphabetically."""
    builtin = [b for b in BUILTIN_BACKENDS if b in backends]
    return builtin + sorted(b for b in backends if b not in BUILTIN_BACKENDS)


_context_backends = contextvars.ContextVar("cyconv_backends", default=())


def environment_backends():
    """``CYCONV_BACKEND`` as a list of names (the registry warns about unknown ones)."""
    return [b.strip() for b in os.environ.get("CYCONV_BACKEND", "").split(",") if b.strip()]


def preference_order():
    """Backends entered with ``use_backend`` (innermost first), ``CYCONV_BACKEND``, then
    ``cython, numpy``; duplicates removed."""
    order = list(_context_backends.get()) + environment_backends() + list(BUILTIN_BACKENDS)
    return list(dict.fromkeys(order))


def push_preference(backends):
    """Prefer ``backends`` in this context; returns the token for :func:`pop_preference`."""
    return _context_backends.set(tuple(backends) + _context_backends.get())


def pop_preference(token):
    _context_backends.reset(token)


def _nothing_pending():
    pass


class KernelSets:
    """``backend name -> kernel set``, with the reasons some failed to load."""

    def __init__(self):
        self._sets = {}
        self._from_layers = set()  # names whose kernel set came with a layer class
        self._lock = threading.RLock()
        self.unavailable = {}  # backend -> reason it failed to load
        self.fallback_warned = False
        # Set by the layer registry, run before every selection as its own lookups
        # do: the pending plugin discovery (which may add kernel sets) and the
        # check of CYCONV_BACKEND for unknown names.
        self.before_lookup = _nothing_pending
        # select()'s answers, keyed by everything they depend on (see _selection_key);
        # _generation counts the changes to _sets
        self._selected = {}
        self._generation = 0

    def add(self, name, kernels):
        if not isinstance(name, str) or not name:
            raise TypeError(f"backend must be a non-empty str, got {name!r}")
        with self._lock:
            self._sets[name] = kernels
            self._generation += 1

    def set_layer_kernels(self, kernel_sets):
        """Replace the kernel sets that came with registered layer classes.

        A plugin class registered under a backend of its own may carry a
        kernel set (``kernels``); the layer registry keeps this table in step
        with its entries, so ``cyconv.conv2d(..., backend="plugin")`` runs it.
        Built-in backends are never replaced.
        """
        with self._lock:
            for name in self._from_layers:
                self._sets.pop(name, None)
            self._from_layers = {n for n in kernel_sets
                                 if n not in BUILTIN_BACKENDS and n not in self._sets}
            self._sets.update({n: kernel_sets[n] for n in self._from_layers})
            self._generation += 1

    def names(self):
        with self._lock:
            return ordered(list(self._sets))

    def get(self, name):
        """The kernel set registered as ``name`` and available, else None."""
        with self._lock:
            return None if name in self.unavailable else self._sets.get(name)

    @staticmethod
    def serves(kernels, needed):
        """Whether ``kernels`` has every function named in ``needed``."""
        return kernels is not None and all(hasattr(kernels, k) for k in needed)

    def serving(self, needed):
        """Available backends whose kernel set serves ``needed``, built-ins first."""
        with self._lock:
            return ordered([n for n, k in self._sets.items()
                            if n not in self.unavailable and self.serves(k, needed)])

    def select(self, needed, backend=None, *, layer):
        """``(name, kernels)`` for ``layer`` (which needs ``needed``).

        A named ``backend`` is used exactly or raises :class:`BackendError`;
        None takes the first backend in :func:`preference_order` that serves
        it, warning once (:class:`BackendFallbackWarning`) when a built-in one
        was skipped because it failed to load.
        """
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"backend must be a str or None, got {backend!r}")
        self.before_lookup()
        # Every convolution call selects: the answer is remembered per key (it
        # cost a batch-1 convolution a fifth of its time); errors are not.
        key = self._selection_key(needed, backend)
        selected = self._selected.get(key)
        if selected is None:
            selected = self._select(needed, backend, layer)
            with self._lock:
                if len(self._selected) >= 64:  # contexts and environments seen: few
                    self._selected.clear()
                self._selected[key] = selected
        name, skipped_builtin = selected
        if skipped_builtin:
            self.warn_fallback(name)
        return name, self.get(name)

    def _selection_key(self, needed, backend):
        """What a selection depends on: the request, the preference order's inputs
        (``use_backend`` contexts, ``CYCONV_BACKEND``) and the table's state."""
        return (tuple(needed), backend, _context_backends.get(),
                os.environ.get("CYCONV_BACKEND", ""), self._generation,
                tuple(self.unavailable))

    def _select(self, needed, backend, layer):
        """``(name, skipped_builtin)``: :meth:`select`'s choice, and whether a built-in
        backend that failed to load was passed over for it."""
        serving = self.serving(needed)
        if backend is not None:
            if backend in serving:
                return backend, False
            raise explicit_backend_error(layer, backend, serving, self.unavailable)
        skipped = False
        for candidate in preference_order() + serving:
            if candidate in serving:
                return candidate, skipped
            skipped |= candidate in BUILTIN_BACKENDS and candidate in self.unavailable
        raise BackendError(f"no backend serves layer {layer!r} (it needs {', '.join(needed)})")

    def warn_fallback(self, used, stacklevel=4):
        if not self.fallback_warned:
            self.fallback_warned = True
            warnings.warn(f"cyconv's compiled backend is unavailable "
                          f"({self.unavailable.get('cython')}); using the {used} "
                          f"backend. Rebuild with `pip install .` to get the fast kernels.",
                          BackendFallbackWarning, stacklevel=stacklevel)

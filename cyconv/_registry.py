"""The layer registry: layer name and backend are two separate keys.

``(name, backend) -> layer class``.  The built-in backends are ``"numpy"``
(the reference) and ``"cython"`` (compiled conv, pooling and ReLU kernels); their names are
reserved for cyconv itself.  Plugins add new names or new backends.

Lookup rules
------------
* ``get_layer(name, backend="x")``: exactly backend ``x``; never falls back.
  A missing or unavailable backend raises :class:`BackendError` naming what is
  available (and why ``x`` is unavailable, e.g. the extension failed to load).
* ``get_layer(name)``: the first backend in the preference order that has the
  layer.  The order is: backends entered with :func:`use_backend` (innermost
  first), then ``CYCONV_BACKEND`` (comma list), then ``cython, numpy``, then
  any other backend that registered the name.  If the compiled extension could
  not be loaded, a single :class:`BackendFallbackWarning` says so.
* An unknown name raises :class:`LayerNotFoundError` listing close matches.

Built-in layers under the built-in backends can never be replaced, so
installing a plugin never changes what existing code computes.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import fnmatch
import os
import threading
import warnings

__all__ = [
    "BackendError",
    "LayerNotFoundError",
    "BackendFallbackWarning",
    "register_layer",
    "get_layer",
    "create_layer",
    "list_layers",
    "backends_for",
    "list_backends",
    "use_backend",
    "backend_preference",
]

BUILTIN_BACKENDS = ("cython", "numpy")


class LayerNotFoundError(KeyError, LookupError):
    """No layer registered under that name."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendError(LookupError):
    """A requested backend does not exist, is unavailable, or lacks the layer."""


class BackendFallbackWarning(UserWarning):
    """The compiled backend is unavailable and cyconv runs on the numpy backend."""


class Registry:
    """Mapping ``name -> {backend -> layer class}``, with thread-safe updates."""

    def __init__(self):
        self._layers = {}
        self._lock = threading.RLock()
        self._discovery_lock = threading.RLock()
        self.unavailable_backends = {}  # backend -> reason it failed to load
        self._builtin_entries = set()  # (name, backend) pairs no plugin may replace
        self._fallback_warned = False
        self.plugin_hook = None  # callable(registry) run once before the first lookup

    # -- registration -----------------------------------------------------
    def register(self, name, backend, cls, *, override=False, builtin=False):
        from .layers import Layer  # local: layers import the registry

        if not isinstance(name, str) or not name:
            raise TypeError(f"layer name must be a non-empty str, got {name!r}")
        if not isinstance(backend, str) or not backend:
            raise TypeError(f"backend must be a non-empty str, got {backend!r}")
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"register_layer({name!r}) expects a subclass of cyconv.Layer, "
                            f"got {cls!r}")
        with self._lock:
            builtin_name = any(n == name for n, _ in self._builtin_entries)
            if builtin_name and backend in BUILTIN_BACKENDS and not builtin:
                # Also for a built-in backend that lacks the name (ReLU under
                # "cython"): preference order would make it the new default.
                raise ValueError(f"layer {name!r} under backend {backend!r} is built into cyconv "
                                 f"and cannot be replaced; register it under your own backend "
                                 f"name (e.g. backend='myplugin') and select it explicitly")
            if builtin:
                self._builtin_entries.add((name, backend))
            slot = self._layers.setdefault(name, {})
            if backend in slot and slot[backend] is not cls and not override:
                raise ValueError(f"layer {name!r} is already registered for backend {backend!r} "
                                 f"({slot[backend].__module__}.{slot[backend].__qualname__}); "
                                 f"pass override=True to replace it")
            slot[backend] = cls
        return cls

    def _ensure_plugins(self):
        if self.plugin_hook is None:  # fast path once discovery has run
            return
        # Other threads wait here until discovery has finished, so none of them
        # sees a registry without the plugins' layers.
        with self._discovery_lock:
            hook, self.plugin_hook = self.plugin_hook, None
            if hook is not None:
                hook(self)

    # -- lookup -------------------------------------------------------------
    def names(self):
        self._ensure_plugins()
        with self._lock:
            return sorted(self._layers)

    def backends_for(self, name):
        if not isinstance(name, str):
            raise TypeError(f"layer name must be a str, got {name!r}")
        self._ensure_plugins()
        with self._lock:
            if name not in self._layers:
                raise self._not_found(name)
            return [b for b in _ordered(list(self._layers[name]))]

    def all_backends(self):
        self._ensure_plugins()
        with self._lock:
            found = {b for slot in self._layers.values() for b in slot}
        return _ordered(sorted(found | set(self.unavailable_backends)))

    def _not_found(self, name):
        close = difflib.get_close_matches(name, list(self._layers), n=3, cutoff=0.5)
        lowered = [n for n in self._layers if n.lower() == str(name).lower()]
        matches = list(dict.fromkeys(lowered + close))
        hint = f" Did you mean {', '.join(map(repr, matches))}?" if matches else ""
        return LayerNotFoundError(f"no layer named {name!r}.{hint} "
                                  f"cyconv.list_layers() shows every registered name.")

    def get(self, name, backend=None):
        if not isinstance(name, str):
            raise TypeError(f"layer name must be a str, got {name!r}")
        self._ensure_plugins()
        with self._lock:
            slot = self._layers.get(name)
            if slot is None:
                raise self._not_found(name)
            slot = dict(slot)
        if backend is not None:
            if not isinstance(backend, str):
                raise TypeError(f"backend must be a str or None, got {backend!r}")
            if backend in slot:
                return slot[backend]
            if backend in self.unavailable_backends:
                raise BackendError(f"backend {backend!r} is unavailable: "
                                   f"{self.unavailable_backends[backend]}. Layer {name!r} is "
                                   f"available for: {', '.join(_ordered(list(slot)))}.")
            raise BackendError(f"layer {name!r} has no {backend!r} implementation; available "
                               f"backends for it: {', '.join(_ordered(list(slot)))}.")
        skipped_reserved = False
        for candidate in backend_preference() + _ordered(list(slot)):
            if candidate in slot:
                if skipped_reserved:
                    self._warn_fallback(candidate)
                return slot[candidate]
            # A built-in entry whose backend failed to load: say so once.
            skipped_reserved |= ((name, candidate) in self._builtin_entries
                                 and candidate in self.unavailable_backends)
        raise AssertionError("unreachable: a registered name has at least one backend")

    def reserve(self, name, backend):
        """Mark ``(name, backend)`` as cyconv's own even though it failed to load."""
        with self._lock:
            self._builtin_entries.add((name, backend))

    def _warn_fallback(self, used):
        if not self._fallback_warned:
            self._fallback_warned = True
            warnings.warn(f"cyconv's compiled backend is unavailable "
                          f"({self.unavailable_backends.get('cython')}); using the {used} "
                          f"backend. Rebuild with `pip install .` to get the fast kernels.",
                          BackendFallbackWarning, stacklevel=4)


def _ordered(backends):
    """Built-in backends first (in preference order), then the rest alphabetically."""
    builtin = [b for b in BUILTIN_BACKENDS if b in backends]
    return builtin + sorted(b for b in backends if b not in BUILTIN_BACKENDS)


REGISTRY = Registry()
_context_backends = contextvars.ContextVar("cyconv_backends", default=())


_checked_environment = set()  # CYCONV_BACKEND values already checked for unknown names


def _environment_backends():
    """``CYCONV_BACKEND`` as a list; an unknown name in it warns once (a typo is not silent)."""
    value = os.environ.get("CYCONV_BACKEND", "")
    names = [b.strip() for b in value.split(",") if b.strip()]
    if names and value not in _checked_environment:
        _checked_environment.add(value)
        known = REGISTRY.all_backends()
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                warnings.warn(f"CYCONV_BACKEND={value!r} names an unknown backend {name!r}, which "
                              f"is ignored; valid names: {', '.join(known)}.{hint}",
                              UserWarning, stacklevel=2)
    return names


def backend_preference():
    """Current backend preference order (context, environment, default)."""
    order = list(_context_backends.get()) + _environment_backends() + list(BUILTIN_BACKENDS)
    return list(dict.fromkeys(order))


@contextlib.contextmanager
def use_backend(*backends):
    """Prefer ``backends`` (in order) for lookups that name no backend.

    The setting lives in a :mod:`contextvars` variable, so it is private to
    the current thread (and asyncio task) and never leaks into others.  Layers
    the preferred backend does not implement (e.g. ``ReLU`` under
    ``"cython"``) come from the default order; a backend that is unknown or
    failed to load raises :class:`BackendError` on entry.

    Examples
    --------
    >>> import cyconv
    >>> with cyconv.use_backend("numpy"):
    ...     cyconv.get_layer("Conv2D").backend
    'numpy'
    """
    if not backends or not all(isinstance(b, str) and b for b in backends):
        raise TypeError(f"use_backend expects one or more backend names, got {backends!r}")
    known = REGISTRY.all_backends()
    for b in backends:
        if b in REGISTRY.unavailable_backends:
            raise BackendError(f"backend {b!r} is unavailable: {REGISTRY.unavailable_backends[b]}")
        if b not in known:
            raise BackendError(f"unknown backend {b!r}; available: {', '.join(known)}")
    token = _context_backends.set(tuple(backends) + _context_backends.get())
    try:
        yield
    finally:
        _context_backends.reset(token)


def register_layer(name, backend="numpy", override=False):
    """Class decorator registering a layer under ``(name, backend)``.

    Parameters
    ----------
    name : str
        Layer name, e.g. ``"LeakyReLU"``.
    backend : str
        Backend key.  A new layer name may use any backend, ``"numpy"`` and
        ``"cython"`` included; cyconv's built-in layers under its built-in
        backends can never be replaced (a faster ``Conv2D`` registers under a
        backend of its own and is used only where that backend is asked for).
    override : bool
        Replace an existing third-party ``(name, backend)`` entry instead of
        raising.

    Examples
    --------
    >>> import cyconv
    >>> @cyconv.register_layer("Identity", backend="mine")
    ... class Identity(cyconv.Layer):
    ...     def forward(self, x, train=True):
    ...         return x
    ...     def backward(self, dout):
    ...         return dout
    >>> cyconv.get_layer("Identity") is Identity
    True
    """
    def decorator(cls):
        REGISTRY.register(name, backend, cls, override=override)
        cls.name = name
        cls.backend = backend
        return cls

    return decorator


def get_layer(name, backend=None):
    """Return the layer class registered as ``name`` (see module rules for ``backend``)."""
    return REGISTRY.get(name, backend)


def create_layer(name, backend=None, **kwargs):
    """Instantiate ``get_layer(name, backend)(**kwargs)``."""
    return get_layer(name, backend)(**kwargs)


def list_layers(pattern="*"):
    """Registered layer names matching an :mod:`fnmatch` ``pattern``, sorted."""
    return [n for n in REGISTRY.names() if fnmatch.fnmatchcase(n, pattern)]


def backends_for(name):
    """Backends that implement layer ``name``, built-ins first."""
    return REGISTRY.backends_for(name)


def list_backends():
    """Every backend known to the registry (including unavailable ones)."""
    return REGISTRY.all_backends()

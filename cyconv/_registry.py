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
installing a plugin never changes what existing code computes.  That rule
lives here only (:meth:`Registry.check_not_builtin`); the plugin loader adds
its ownership rules on top and uses the public API below (``entries``,
``snapshot``/``restore``, ``plugin_report``).

The registry is built on :mod:`cyconv.backends` (the kernel sets and the
preference order) and :mod:`cyconv.layers`; neither imports it.  Built-in
layers that run on kernels (``Conv2D``, ...) are registered once per kernel
set that serves them.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import os
import threading
import warnings
from dataclasses import dataclass

from .backends import (
    BUILTIN_BACKENDS,
    KERNEL_SETS,
    BackendError,
    BackendFallbackWarning,
    KernelSets,
    environment_backends,
    explicit_backend_error,
    pop_preference,
    preference_order,
    push_preference,
)
from .backends import ordered as _ordered
from .layers import BUILTIN_LAYERS, Layer

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

__all__ += ["Registry", "RegistrySnapshot", "REGISTRY"]


class LayerNotFoundError(KeyError, LookupError):
    """No layer registered under that name."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class RegistrySnapshot:
    """What :meth:`Registry.snapshot` saved: the entries and the built-in marks."""

    layers: dict
    builtin_entries: frozenset


def _no_plugins():
    return {"loaded": [], "failed": [], "disabled": []}


class Registry:
    """Mapping ``name -> {backend -> layer class}``, with thread-safe updates."""

    def __init__(self, kernel_sets=KERNEL_SETS):
        self._layers = {}
        self._lock = threading.RLock()
        self._discovery_lock = threading.RLock()
        self._kernel_sets = kernel_sets
        self._builtin_entries = set()  # (name, backend) pairs no plugin may replace
        self.plugin_hook = None  # callable(registry) run once before the first lookup
        self._plugin_reporter = _no_plugins
        self._families = {}  # name -> built-in class that picks its backend (Conv2D)

    @property
    def unavailable_backends(self):
        """``{backend: reason it failed to load}`` (the kernel sets' record)."""
        return self._kernel_sets.unavailable

    @property
    def _fallback_warned(self):
        return self._kernel_sets.fallback_warned

    @_fallback_warned.setter
    def _fallback_warned(self, value):
        self._kernel_sets.fallback_warned = value

    # -- rules -------------------------------------------------------------
    def check_not_builtin(self, name, backend, *, pair_only=False):
        """Raise ``ValueError`` if ``(name, backend)`` is cyconv's own.

        Also for a built-in backend that lacks the name (``Sigmoid`` under
        ``"cython"``): the preference order would make it the new default;
        ``pair_only=True`` leaves that case to the caller (the plugin loader
        reports it with its ownership rule).
        """
        with self._lock:
            if pair_only:
                builtin = (name, backend) in self._builtin_entries
            else:
                builtin = (backend in BUILTIN_BACKENDS
                           and any(n == name for n, _ in self._builtin_entries))
        if builtin:
            raise ValueError(f"layer {name!r} under backend {backend!r} is built into cyconv "
                             f"and cannot be replaced; register it under your own backend "
                             f"name (e.g. backend='myplugin') and select it explicitly")

    # -- registration -----------------------------------------------------
    def register(self, name, backend, cls, *, override=False, builtin=False):
        """Register layer class ``cls`` as ``(name, backend)``; return it.

        ``builtin=True`` is cyconv's own registration (its entries can never
        be replaced); a taken pair needs ``override=True``.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"layer name must be a non-empty str, got {name!r}")
        if not isinstance(backend, str) or not backend:
            raise TypeError(f"backend must be a non-empty str, got {backend!r}")
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"register_layer({name!r}) expects a subclass of cyconv.Layer, "
                            f"got {cls!r}")
        with self._lock:
            if builtin:
                self._builtin_entries.add((name, backend))
            else:
                self.check_not_builtin(name, backend)
            slot = self._layers.setdefault(name, {})
            if backend in slot and slot[backend] is not cls and not override:
                raise ValueError(f"layer {name!r} is already registered for backend {backend!r} "
                                 f"({slot[backend].__module__}.{slot[backend].__qualname__}); "
                                 f"pass override=True to replace it")
            slot[backend] = cls
            self._sync_lower_layers()
        return cls

    def _sync_lower_layers(self):
        """Tell the layers and the kernel sets (which cannot import the registry) about
        plugin entries: the classes registered for a built-in layer that picks its
        backend (``Conv2D(backend="plugin")`` builds them), and the kernel sets such
        classes carry (``cyconv.conv2d(..., backend="plugin")`` runs them)."""
        with self._lock:
            carried = {}
            for name, family in self._families.items():
                own = {b: c for b, c in self._layers.get(name, {}).items()
                       if (name, b) not in self._builtin_entries}
                family.plugin_classes = own
                for backend, cls in sorted(own.items()):
                    if cls.kernels is not None:
                        carried.setdefault(backend, cls.kernels)
            self._kernel_sets.set_layer_kernels(carried)

    def reserve(self, name, backend):
        """Mark ``(name, backend)`` as cyconv's own even though it failed to load."""
        with self._lock:
            self._builtin_entries.add((name, backend))

    # -- state, for transactional loaders (the plugin loader) ----------------------
    def entries(self):
        """``{(name, backend): layer class}`` for every registered entry."""
        with self._lock:
            return {(n, b): c for n, slot in self._layers.items() for b, c in slot.items()}

    def builtin_entries(self):
        """The ``(name, backend)`` pairs that are cyconv's own."""
        with self._lock:
            return frozenset(self._builtin_entries)

    def snapshot(self):
        """The registry's entries, for :meth:`restore` (e.g. to roll back a plugin)."""
        with self._lock:
            return RegistrySnapshot({n: dict(slot) for n, slot in self._layers.items()},
                                    frozenset(self._builtin_entries))

    def restore(self, snapshot):
        """Return to the state :meth:`snapshot` saved."""
        with self._lock:
            self._layers.clear()
            self._layers.update({n: dict(slot) for n, slot in snapshot.layers.items()})
            self._builtin_entries.clear()
            self._builtin_entries.update(snapshot.builtin_entries)
            self._sync_lower_layers()

    # -- plugins -----------------------------------------------------------------
    def set_plugin_reporter(self, reporter):
        """Install ``reporter()``, the source of :meth:`plugin_report` (the plugin loader)."""
        self._plugin_reporter = reporter

    def plugin_report(self):
        """``{"loaded": [...], "failed": [(plugin, reason), ...], "disabled": [...]}``.

        Runs entry-point discovery first if it has not happened yet; all empty
        when no plugin loader is installed.
        """
        self.ensure_plugins()
        return self._plugin_reporter()

    def ensure_plugins(self):
        """Run the pending plugin discovery (``plugin_hook``), once; lookups call this."""
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
        self.ensure_plugins()
        with self._lock:
            return sorted(self._layers)

    def backends_for(self, name):
        if not isinstance(name, str):
            raise TypeError(f"layer name must be a str, got {name!r}")
        self.ensure_plugins()
        with self._lock:
            if name not in self._layers:
                raise self._not_found(name)
            return [b for b in _ordered(list(self._layers[name]))]

    def all_backends(self):
        self.ensure_plugins()
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
        self.ensure_plugins()
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
            raise explicit_backend_error(name, backend, _ordered(list(slot)),
                                         self.unavailable_backends)
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

    def register_builtin_layers(self, classes):
        """cyconv's layers: NumPy ones under "numpy", the others once per kernel set
        that serves them (a built-in backend that failed to load stays reserved)."""
        for cls in classes:
            if not cls.kernels_needed:
                cls.backend = "numpy"
                self.register(cls.name, "numpy", cls, builtin=True)
                continue
            self._families[cls.name] = cls
            for backend in BUILTIN_BACKENDS:
                kernels = self._kernel_sets.get(backend)
                if kernels is None:  # failed to load: still cyconv's, no plugin may take it
                    self.reserve(cls.name, backend)
                elif KernelSets.serves(kernels, cls.kernels_needed):
                    self.register(cls.name, backend, cls.on_backend(backend, kernels),
                                  builtin=True)

    def _warn_fallback(self, used):
        self._kernel_sets.warn_fallback(used, stacklevel=5)


REGISTRY = Registry()
REGISTRY.register_builtin_layers(BUILTIN_LAYERS)


_checked_environment = set()  # CYCONV_BACKEND values already checked for unknown names


def _environment_backends():
    """``CYCONV_BACKEND`` as a list; an unknown name in it warns once (a typo is not silent)."""
    value = os.environ.get("CYCONV_BACKEND", "")
    names = environment_backends()
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


def _before_kernel_lookup():
    """What a kernel-set selection runs first (``cyconv.conv2d``, ``Conv2D(...)``), as a
    registry lookup does: plugin discovery, then the CYCONV_BACKEND check."""
    REGISTRY.ensure_plugins()
    _environment_backends()


KERNEL_SETS.before_lookup = _before_kernel_lookup


def backend_preference():
    """Current backend preference order (context, environment, default)."""
    _environment_backends()  # warns about a mistyped name
    return preference_order()


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
    token = push_preference(backends)
    try:
        yield
    finally:
        pop_preference(token)


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

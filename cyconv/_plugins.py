"""Layer plugins: entry-point discovery and explicit local loading.

Entry-point contract
--------------------
A plugin distribution declares, in its ``pyproject.toml``::

    [project.entry-points."cyconv.layers"]
    activations = "cyconv_activations:register"

The object an entry point names must be a **callable taking one argument**.
cyconv calls it once, with a :class:`PluginRegistry` (not the global
registry): a small facade whose ``register(name, backend, cls, override=False)``
method and ``register_layer(name, backend="numpy")`` decorator record every
registration as coming from that plugin.  The return value is ignored.

Rules a plugin must follow (breaking one makes the whole plugin *fail*: its
registrations are rolled back, a :class:`PluginLoadWarning` names the plugin,
its distribution and the error, and ``cyconv.show_config()`` lists it under
failed plugins; everything else keeps working):

* ``cls`` is a subclass of :class:`cyconv.Layer`.
* A plugin may add **new layer names** under any backend (``"numpy"`` and
  ``"cython"`` included), and may add **any layer name under a backend of its
  own** (e.g. ``Conv2D`` under ``backend="mkl"``, used only where the user
  asks for ``"mkl"``).
* It may not take a ``(name, backend)`` pair that is already registered
  (by cyconv, by the application or by another plugin), and it may not add a
  built-in backend (``"numpy"``/``"cython"``) implementation of a name that
  someone else introduced: with ``cython`` preferred over ``numpy``, that
  would silently change what ``get_layer(name)`` returns.  ``override=True``
  only lets a plugin replace its *own* earlier registration.

So installing a plugin never changes what existing code computes.

Discovery is lazy: nothing is imported at ``import cyconv``; the entry points
are read on the first registry lookup or listing (``get_layer``,
``create_layer``, ``list_layers``, ``list_backends``, ``show_config``, a layer
class that dispatches on backend, ...).  Identical entry points (stale metadata
often lists one twice) are loaded once.  ``CYCONV_DISABLE_PLUGINS=a,b`` (read
at discovery time) skips the plugins whose entry-point name or distribution
name is listed; ``*`` skips them all.

:func:`load_plugins` loads plugin *modules* (``.py`` files) from a folder, on
request, with the same rules and error reporting.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
import warnings
from importlib import metadata as _metadata
from pathlib import Path

from ._registry import BUILTIN_BACKENDS, REGISTRY
from .layers import Layer

__all__ = ["GROUP", "PluginLoadWarning", "PluginRegistry", "load_plugins", "plugin_report"]

GROUP = "cyconv.layers"
DISABLE_ENV = "CYCONV_DISABLE_PLUGINS"


class PluginLoadWarning(UserWarning):
    """A cyconv plugin could not be loaded and was skipped."""


class PluginRuleError(ValueError):
    """A plugin broke the registration rules (see :mod:`cyconv._plugins`)."""


def _normalize(name):
    """Distribution-name normalisation (PEP 503): ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", str(name)).lower().strip()


class PluginRegistry:
    """What a plugin's ``register`` callable receives.

    Attributes
    ----------
    plugin : str
        The plugin's label as shown in reports, e.g.
        ``"activations (cyconv-activations 0.1.0)"``.

    Examples
    --------
    >>> def register(registry):                           # doctest: +SKIP
    ...     registry.register("LeakyReLU", "numpy", LeakyReLU)
    ...     @registry.register_layer("ELU")
    ...     class ELU(cyconv.Layer): ...
    """

    def __init__(self, registry, plugin, manager):
        self._registry = registry
        self._manager = manager
        self.plugin = plugin

    def register(self, name, backend, cls, *, override=False):
        """Register layer class ``cls`` under ``(name, backend)``; return ``cls``.

        Sets ``cls.name`` and ``cls.backend``, like :func:`cyconv.register_layer`.
        Raises (and so fails the plugin) on a non-layer, a taken pair, or a
        built-in backend entry for a name someone else introduced.
        """
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"plugin {self.plugin} registered {cls!r} as {name!r}, which is not "
                            f"a subclass of cyconv.Layer")
        self._manager._check_rules(self._registry, self.plugin, name, backend, cls, override)
        old = (cls.__dict__.get("name", _MISSING), cls.__dict__.get("backend", _MISSING))
        self._registry.register(name, backend, cls, override=override)
        self._manager._class_attrs.setdefault(cls, old)
        self._manager.owners[(name, backend)] = self.plugin
        cls.name = name
        cls.backend = backend
        return cls

    def register_layer(self, name, backend="numpy", *, override=False):
        """Class-decorator form of :meth:`register`."""
        def decorator(cls):
            return self.register(name, backend, cls, override=override)

        return decorator

    def get_layer(self, name, backend=None):
        """Look up an already registered layer (e.g. to subclass it)."""
        return self._registry.get(name, backend)

    def __repr__(self):
        return f"<cyconv PluginRegistry for {self.plugin}>"


_MISSING = object()


class _PluginManager:
    """Loader state: what was loaded, what failed, who owns which entry."""

    def __init__(self):
        self.loaded = []        # plugin labels
        self.failed = []        # (label, reason)
        self.disabled = []      # labels skipped by CYCONV_DISABLE_PLUGINS
        self.owners = {}        # (name, backend) -> plugin label
        self.local_paths = {}   # resolved .py path -> label (loaded ones)
        self._class_attrs = {}  # cls -> (name, backend) before a plugin set them
        self._lock = threading.RLock()
        self._discovery_lock = threading.RLock()
        self.discovered = False  # entry points read (successfully or not)

    # -- rules ---------------------------------------------------------------
    def _check_rules(self, registry, plugin, name, backend, cls, override):
        """The plugin rules on top of the registry's own (which ``register`` applies)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"layer name must be a non-empty str, got {name!r}")
        if not isinstance(backend, str) or not backend:
            raise TypeError(f"backend must be a non-empty str, got {backend!r}")
        registry.check_not_builtin(name, backend, pair_only=True)  # first: it says why
        slot = {b: c for (n, b), c in registry.entries().items() if n == name}
        if backend in slot:
            owner = self.owners.get((name, backend))
            if owner != plugin:
                raise PluginRuleError(f"layer {name!r} is already registered for backend "
                                      f"{backend!r} by {owner or 'cyconv or the application'}")
            if slot[backend] is not cls and not override:
                raise PluginRuleError(f"plugin registered {name!r} for backend {backend!r} twice "
                                      f"with different classes (pass override=True)")
        if backend in BUILTIN_BACKENDS:
            others = sorted({self.owners.get((name, b)) or "cyconv or the application"
                             for b in slot if self.owners.get((name, b)) != plugin})
            if others:
                raise PluginRuleError(f"layer {name!r} belongs to {', '.join(others)}; a plugin "
                                      f"may not add a built-in backend ({backend!r}) "
                                      f"implementation of it, because that would change what "
                                      f"get_layer({name!r}) returns. Register it under a backend "
                                      f"of your own instead")

    # -- one plugin, transactionally -----------------------------------------
    def _run(self, registry, label, load, hint=""):
        """Call ``load(facade)``; on any error roll back and record the failure."""
        with self._lock:
            # a retried local module reports only its latest outcome
            self.failed = [(lbl, why) for lbl, why in self.failed if lbl != label]
            snapshot = registry.snapshot()
            owners_before = dict(self.owners)
            facade = PluginRegistry(registry, label, self)
            try:
                load(facade)
                self._validate_diff(registry, label, snapshot)
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a plugin must not break cyconv
                self._rollback(registry, snapshot, owners_before)
                reason = f"{type(exc).__name__}: {exc}"
                self.failed.append((label, reason))
                warnings.warn(f"cyconv plugin {label} failed to load and was skipped: "
                              f"{reason}{hint}", PluginLoadWarning, stacklevel=2)
                return False
            self.loaded.append(label)
            return True

    def _validate_diff(self, registry, label, snapshot):
        """Catch registrations that bypassed the facade (e.g. ``cyconv.register_layer``
        at import time): attribute new entries to the plugin, refuse the rest."""
        if registry.builtin_entries() != snapshot.builtin_entries:
            raise PluginRuleError("a plugin may not register built-in layers")
        before = {(n, b): c for n, slot in snapshot.layers.items() for b, c in slot.items()}
        after = registry.entries()
        for key in sorted(set(before) - set(after)):
            raise PluginRuleError(f"plugin removed layer {key[0]!r} (backend {key[1]!r})")
        for key, cls in sorted(after.items(), key=lambda kv: kv[0]):
            if key in before and before[key] is cls:
                continue
            if self.owners.get(key) == label:  # registered through the facade
                continue
            name, backend = key
            if key in before:
                raise PluginRuleError(f"layer {name!r} under backend {backend!r} was replaced, "
                                      f"but it belongs to "
                                      f"{self.owners.get(key) or 'cyconv or the application'}")
            # a direct registration: check it as if it had gone through the facade
            slot_before = {b for (n, b) in before if n == name}
            others = sorted({self.owners.get((name, b)) or "cyconv or the application"
                             for b in slot_before if self.owners.get((name, b)) != label})
            if backend in BUILTIN_BACKENDS and others:
                raise PluginRuleError(f"layer {name!r} belongs to {', '.join(others)}; a plugin "
                                      f"may not add a built-in backend ({backend!r}) "
                                      f"implementation of it")
            self.owners[key] = label

    def _rollback(self, registry, snapshot, owners_before):
        registry.restore(snapshot)
        for key in [k for k in self.owners if k not in owners_before]:
            del self.owners[key]
        self.owners.update(owners_before)
        live = {id(c) for c in registry.entries().values()}
        for cls, (name, backend) in list(self._class_attrs.items()):
            if id(cls) not in live:
                for attr, value in (("name", name), ("backend", backend)):
                    if value is _MISSING:
                        if attr in cls.__dict__:
                            delattr(cls, attr)
                    else:
                        setattr(cls, attr, value)
                del self._class_attrs[cls]

    # -- entry points ------------------------------------------------------------
    def discover(self, registry):
        """The registry's ``plugin_hook``: load every ``cyconv.layers`` entry point."""
        try:
            eps = list(_metadata.entry_points(group=GROUP))
        except Exception as exc:  # noqa: BLE001 - broken metadata must not break cyconv
            reason = f"{type(exc).__name__}: {exc}"
            self.failed.append((f"<{GROUP} entry points>", reason))
            warnings.warn(f"cyconv could not read the {GROUP!r} entry points: {reason}",
                          PluginLoadWarning, stacklevel=2)
            return
        blocked = {_normalize(n) for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        # identical entry points (same name and target; stale metadata, a package on
        # sys.path twice) load once; keep the copy that knows its distribution
        unique = {}
        for ep in eps:
            key = (ep.name, ep.value)
            if key not in unique or (_dist_name(unique[key]) is None
                                     and _dist_name(ep) is not None):
                unique[key] = ep
        # a stable order (by distribution, then entry-point name), so that which of two
        # conflicting plugins wins does not depend on sys.path or filesystem order
        eps = sorted(unique.values(),
                     key=lambda ep: (_normalize(_dist_name(ep) or ""), ep.name, ep.value))
        for ep in eps:
            dist = _dist_name(ep)
            # e.g. "activations (cyconv-activations 0.1.0)": entry point, distribution, version
            label = ep.name if dist is None else f"{ep.name} ({dist}{_dist_version(ep)})"
            if "*" in blocked or _normalize(ep.name) in blocked or (
                    dist is not None and _normalize(dist) in blocked):
                self.disabled.append(label)
                continue
            hint = (f". cyconv keeps working without it; set {DISABLE_ENV}={ep.name} to stop "
                    f"loading it")
            self._run(registry, label, lambda facade, ep=ep: _call_entry_point(ep, facade), hint)

    # -- local modules -------------------------------------------------------
    def load_path(self, registry, path):
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.py") if not p.name.startswith(("_", ".")))
        elif path.is_file() and path.suffix == ".py":
            files = [path]
        else:
            raise FileNotFoundError(f"load_plugins expects a folder of .py plugin modules "
                                    f"(or one .py file), got {str(path)!r}")
        loaded = []
        for file in files:
            resolved = str(file.resolve())
            if resolved in self.local_paths:
                loaded.append(self.local_paths[resolved])
                continue
            label = f"{file.stem} ({file})"
            if self._run(registry, label,
                         lambda facade, file=file: _exec_local_module(file, facade)):
                self.local_paths[resolved] = label
                loaded.append(label)
        return loaded

    def report(self):
        return {"loaded": list(self.loaded), "failed": list(self.failed),
                "disabled": list(self.disabled)}


def _dist_name(ep):
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        return dist.name or dist.metadata["Name"]
    except Exception:  # noqa: BLE001
        return None


def _dist_version(ep):
    try:
        version = ep.dist.version
    except Exception:  # noqa: BLE001
        return ""
    return f" {version}" if version else ""


def _call_entry_point(ep, facade):
    obj = ep.load()
    if not callable(obj):
        raise TypeError(f"entry point {ep.name} = {ep.value!r} names {obj!r}, which is not "
                        f"callable; it must name a function register(registry)")
    obj(facade)


def _exec_local_module(file, facade):
    modname = "cyconv_local_plugins." + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(modname, file)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(modname)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
        register = getattr(module, "register", None)
        if register is not None:
            if not callable(register):
                raise TypeError(f"{file.name}: 'register' must be a function register(registry)")
            register(facade)
    except BaseException:
        if previous is None:
            sys.modules.pop(modname, None)
        else:
            sys.modules[modname] = previous
        raise


_MANAGER = _PluginManager()


def _manager():
    return _MANAGER


#: Seconds a lookup in another thread waits for a discovery in progress (a safety
#: valve against an import-lock deadlock; discovery normally takes milliseconds).
DISCOVERY_WAIT_S = 60.0


def discover_entry_points(registry):
    """Plugin hook installed on :data:`cyconv._registry.REGISTRY` (runs once, lazily).

    The registry clears its hook before calling it; while discovery runs, a waiting
    hook stands in, so a lookup from another thread blocks until the plugins are in
    instead of missing their layers.  Lookups made by the plugins themselves (same
    thread) do not block.
    """
    manager = _manager()
    with manager._discovery_lock:
        if manager.discovered:
            return
        registry.plugin_hook = _wait_for_discovery
        try:
            manager.discover(registry)
        finally:
            manager.discovered = True
            if registry.plugin_hook is _wait_for_discovery:
                registry.plugin_hook = None


def _wait_for_discovery(registry):
    manager = _manager()
    if manager.discovered:
        return
    registry.plugin_hook = _wait_for_discovery  # keep later callers waiting as well
    if manager._discovery_lock.acquire(timeout=DISCOVERY_WAIT_S):  # re-entrant in its thread
        manager._discovery_lock.release()
    if manager.discovered and registry.plugin_hook is _wait_for_discovery:
        registry.plugin_hook = None


def plugin_report():
    """``{"loaded": [...], "failed": [(plugin, reason), ...], "disabled": [...]}``.

    Runs entry-point discovery first if it has not happened yet
    (:meth:`cyconv._registry.Registry.plugin_report`).
    """
    return REGISTRY.plugin_report()


def plugin_layers():
    """``{(layer name, backend): plugin label}`` for every plugin-registered layer."""
    REGISTRY.ensure_plugins()
    return dict(_manager().owners)


def load_plugins(path):
    """Load local plugin modules: every ``*.py`` in folder ``path`` (or one file).

    For experiments without packaging.  Each module either defines
    ``register(registry)`` (called with a :class:`PluginRegistry`, exactly like
    an entry point) or registers at import time with
    :func:`cyconv.register_layer`.  Files whose name starts with ``_`` are
    skipped; a file already loaded is not loaded again.  Installed entry-point
    plugins are discovered first, so the outcome does not depend on call order.

    A module that raises, registers a non-layer or breaks the plugin rules is
    rolled back and reported like a failing entry point (a
    :class:`PluginLoadWarning`, and ``show_config()`` lists it under failed
    plugins).

    Returns
    -------
    list of str
        Labels of the modules from ``path`` that are loaded.

    Examples
    --------
    >>> import cyconv
    >>> cyconv.load_plugins("my_layers/")  # doctest: +SKIP
    ['swish (my_layers/swish.py)']
    """
    REGISTRY.ensure_plugins()
    return _manager().load_path(REGISTRY, path)


def _report():
    return _manager().report()


def install(registry):
    """Wire the lazy discovery hook and the report source into ``registry``
    (done by ``import cyconv``)."""
    registry.plugin_hook = discover_entry_points
    registry.set_plugin_reporter(_report)

"""Plugins: lazy entry-point discovery, failure isolation, CYCONV_DISABLE_PLUGINS,
load_plugins(path), and the two example plugins from plugins/.

Fake plugins are real distributions: a ``<dist>-1.0.dist-info`` folder (METADATA and
entry_points.txt) plus a module, written into a temporary folder put on ``sys.path``,
so :mod:`importlib.metadata` finds them exactly like installed ones.  Every test runs
on a registry reset to cyconv's built-in layers with a fresh plugin loader, and the
global state is restored afterwards (the ``plugin_state`` fixture).
"""

import importlib.metadata
import io
import itertools
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import cyconv
from cyconv import PluginLoadWarning, _plugins
from cyconv._registry import REGISTRY

GROUP = "cyconv.layers"
_counter = itertools.count()


# -- fixtures and helpers ------------------------------------------------------------

@pytest.fixture(autouse=True)
def plugin_state(monkeypatch):
    """Built-in layers only, undiscovered plugins, a fresh loader; restore everything after."""
    saved_layers = {name: dict(slot) for name, slot in REGISTRY._layers.items()}
    saved_builtin = set(REGISTRY._builtin_entries)
    saved_hook = REGISTRY.plugin_hook
    saved_report = REGISTRY.__dict__.get("plugin_report")
    saved_manager = _plugins._MANAGER
    saved_modules = set(sys.modules)
    missing = object()
    saved_attrs = {cls: {a: cls.__dict__.get(a, missing) for a in ("name", "backend")}
                   for slot in saved_layers.values() for cls in slot.values()}

    REGISTRY._layers = {name: {b: c for b, c in slot.items() if (name, b) in saved_builtin}
                        for name, slot in saved_layers.items()}
    REGISTRY._layers = {name: slot for name, slot in REGISTRY._layers.items() if slot}
    _plugins._MANAGER = _plugins._PluginManager()
    _plugins.install(REGISTRY)
    monkeypatch.delenv(_plugins.DISABLE_ENV, raising=False)
    try:
        yield
    finally:
        REGISTRY._layers = saved_layers
        REGISTRY._builtin_entries.clear()
        REGISTRY._builtin_entries.update(saved_builtin)
        REGISTRY.plugin_hook = saved_hook
        if saved_report is not None:
            REGISTRY.plugin_report = saved_report
        _plugins._MANAGER = saved_manager
        for cls, attrs in saved_attrs.items():  # register() sets cls.name/backend
            for attr, value in attrs.items():
                if value is missing:
                    if attr in cls.__dict__:
                        delattr(cls, attr)
                elif cls.__dict__.get(attr, missing) is not value:
                    setattr(cls, attr, value)
        for mod in set(sys.modules) - saved_modules:
            if mod.startswith(("fakeplug_", "cyconv_local_plugins")):
                del sys.modules[mod]


LAYER_SOURCE = '''
import numpy as np
import cyconv


class {cls}(cyconv.Layer):
    shape_preserving = True

    def forward(self, x, train=True):
        self._x = np.asarray(x)
        return {expr}

    def backward(self, dout):
        return dout * {grad}
'''


def layer_module(cls="Double", expr="2 * self._x", grad="2"):
    return LAYER_SOURCE.format(cls=cls, expr=expr, grad=grad)


def make_dist(root, dist, entry_points, modules):
    """Write an installed-looking distribution into ``root``.

    entry_points: {entry point name: "module:attr"}; modules: {module name: source}.
    """
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"[{GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path for fake distributions; returns a maker."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def add(dist, source, *, ep_name=None, attr="register", extra_modules=None):
        mod = f"fakeplug_{next(_counter)}"
        ep_name = ep_name or dist.replace("fake-", "")
        make_dist(root, dist, {ep_name: f"{mod}:{attr}" if attr else mod},
                  {mod: source, **(extra_modules or {})})
        importlib.invalidate_caches()
        return mod

    add.root = root
    return add


def only_fakes(monkeypatch):
    """Let discovery see only the fake distributions (not the installed example plugins)."""
    real = importlib.metadata.entry_points

    def fake_entry_points(**kwargs):
        return [ep for ep in real(**kwargs)
                if ep.dist is not None and ep.dist.name.startswith("fake-")]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)


def record(fn, *args, **kwargs):
    """Call fn; return (result, list of PluginLoadWarning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]


def config_text():
    out = io.StringIO()
    cyconv.show_config(file=out)
    return out.getvalue()


def assert_core_intact(sigmoid_backends=("numpy",)):
    """The built-in layers still answer; Sigmoid stands for a NumPy-only built-in."""
    assert cyconv.get_layer("Sigmoid") is cyconv.Sigmoid
    assert cyconv.get_layer("Sigmoid", "numpy") is cyconv.Sigmoid
    assert cyconv.backends_for("Sigmoid") == list(sigmoid_backends)
    assert cyconv.get_layer("Conv2D", "numpy").backend == "numpy"
    assert "Conv2D" in cyconv.list_layers()
    x = np.arange(4.0).reshape(1, 1, 2, 2) - 1.5
    np.testing.assert_allclose(cyconv.create_layer("Sigmoid").forward(x), 1 / (1 + np.exp(-x)))


# -- discovery -----------------------------------------------------------------------

def test_import_cyconv_does_not_load_entry_points(tmp_path):
    """In a fresh interpreter: nothing is imported at ``import cyconv``; the first lookup
    loads the plugins; a broken one warns and does not break import or lookups."""
    make_dist(tmp_path, "fake-lazy", {"lazy": "fakeplug_lazy:register"}, {"fakeplug_lazy": """
        import os
        open(os.environ["FLAG_FILE"], "w").close()      # the flag: this module was imported

        def register(registry):
            import cyconv

            class Lazy(cyconv.Layer):
                def forward(self, x, train=True):
                    return x

            registry.register("LazyLayer", "numpy", Lazy)
        """})
    make_dist(tmp_path, "fake-boom", {"boom": "fakeplug_boom:register"},
              {"fakeplug_boom": "raise RuntimeError('boom at import')\n"})
    flag = tmp_path / "flag"
    script = textwrap.dedent("""
        import os, sys, warnings
        warnings.simplefilter("always")
        import cyconv
        assert not os.path.exists(os.environ["FLAG_FILE"]), "import cyconv loaded a plugin"
        assert "fakeplug_lazy" not in sys.modules and "fakeplug_boom" not in sys.modules
        from cyconv._registry import REGISTRY
        assert REGISTRY.plugin_hook is not None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert "LazyLayer" in cyconv.list_layers()
            cyconv.get_layer("Conv2D"); cyconv.get_layer("LazyLayer"); cyconv.list_layers()
        assert os.path.exists(os.environ["FLAG_FILE"])
        msgs = [str(w.message) for w in caught if issubclass(w.category, cyconv.PluginLoadWarning)]
        assert len(msgs) == 1 and "fake-boom" in msgs[0] and "boom at import" in msgs[0], msgs
        print("OK")
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path)] + sys.path),
               FLAG_FILE=str(flag))
    env.pop(_plugins.DISABLE_ENV, None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def test_discovery_waits_for_first_lookup(site, monkeypatch):
    site("fake-good", """
        import cyconv
        LOADS = []

        class Double(cyconv.Layer):
            shape_preserving = True
            def forward(self, x, train=True):
                return 2 * x
            def backward(self, dout):
                return 2 * dout

        def register(registry):
            LOADS.append(registry)
            registry.register("FakeDouble", "numpy", Double)
        """)
    calls = []
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: calls.append(kw) or real(**kw))
    cyconv.register_layer("AppLayer", backend="app")(type("AppLayer", (cyconv.Layer,), {}))
    assert calls == []                        # registering does not trigger discovery
    assert cyconv.get_layer("FakeDouble").__module__.startswith("fakeplug_")
    assert calls == [{"group": GROUP}]
    cyconv.list_layers()
    cyconv.get_layer("Sigmoid")
    assert len(calls) == 1                    # once
    layer = cyconv.create_layer("FakeDouble")
    assert layer.forward(np.ones(2)).tolist() == [2.0, 2.0]
    assert layer.name == "FakeDouble" and layer.backend == "numpy"
    report = _plugins.plugin_report()
    assert "good (fake-good 1.0)" in report["loaded"]
    assert _plugins.plugin_layers()[("FakeDouble", "numpy")] == "good (fake-good 1.0)"
    assert "good (fake-good 1.0)" in config_text()


def test_identical_entry_points_loaded_once(site, monkeypatch):
    mod = site("fake-dup", """
        import cyconv
        CALLS = []

        class Dup(cyconv.Layer):
            def forward(self, x, train=True):
                return x

        def register(registry):
            CALLS.append(1)
            registry.register("Dup", "numpy", Dup)
        """)
    real = importlib.metadata.entry_points

    def stale_metadata(**kwargs):
        eps = [ep for ep in real(**kwargs) if ep.dist is not None and ep.dist.name == "fake-dup"]
        assert len(eps) == 1
        return eps + eps + [importlib.metadata.EntryPoint(eps[0].name, eps[0].value, GROUP)]

    monkeypatch.setattr(importlib.metadata, "entry_points", stale_metadata)
    _, msgs = record(cyconv.list_layers)
    assert msgs == []
    assert sys.modules[mod].CALLS == [1]
    assert _plugins.plugin_report()["loaded"] == ["dup (fake-dup 1.0)"]


def test_load_order_is_deterministic(site, monkeypatch):
    """Two plugins claiming the same new name: the first by distribution name wins."""
    only_fakes(monkeypatch)
    src = (layer_module("Twin") +
           "\ndef register(registry):\n    registry.register('Twin', 'numpy', Twin)\n")
    site("fake-zeta", src)
    site("fake-alpha", src)
    _, msgs = record(cyconv.list_layers)
    assert len(msgs) == 1 and "fake-zeta" in msgs[0] and "alpha (fake-alpha 1.0)" in msgs[0]
    assert _plugins.plugin_report()["loaded"] == ["alpha (fake-alpha 1.0)"]


# -- broken plugins ------------------------------------------------------------------

GOOD_FIRST = layer_module("Partial") + "\n"

BROKEN = {
    "raises-on-import": ("raise ImportError('missing dependency foo')\n", "register",
                         "ImportError: missing dependency foo"),
    "raises-in-register": (GOOD_FIRST + """
def register(registry):
    registry.register("PartialLayer", "numpy", Partial)   # rolled back
    raise RuntimeError("register exploded")
""", "register", "RuntimeError: register exploded"),
    "builtin-name": (layer_module("MySigmoid") + """
def register(registry):
    registry.register("Sigmoid", "numpy", MySigmoid)
""", "register", "built into cyconv"),
    "builtin-name-other-builtin-backend": (layer_module("MySigmoid") + """
def register(registry):
    registry.register("Sigmoid", "cython", MySigmoid)   # would win over numpy by preference
""", "register", "may not add a built-in backend"),
    "builtin-conv-override": (layer_module("MyConv") + """
def register(registry):
    registry.register("Conv2D", "cython", MyConv, override=True)
""", "register", "built into cyconv"),
    "not-a-layer-function": ("""
def forward(x):
    return x

def register(registry):
    registry.register("NotALayer", "numpy", forward)
""", "register", "not a subclass of cyconv.Layer"),
    "not-a-layer-class": (GOOD_FIRST + """
class Plain:
    pass

def register(registry):
    registry.register("PartialLayer", "numpy", Partial)
    registry.register_layer("PlainThing", backend="numpy")(Plain)
""", "register", "not a subclass of cyconv.Layer"),
    "global-decorator-hijack": ("""
import cyconv

@cyconv.register_layer("Sigmoid", backend="cython")   # bypasses the facade
class Hijack(cyconv.Layer):
    def forward(self, x, train=True):
        return x * 0 + 42

def register(registry):
    pass
""", "register", "built into cyconv"),
    "not-callable": ("register = 42\n", "register", "not callable"),
    "missing-attribute": ("x = 1\n", "register", "AttributeError"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_plugin_is_isolated(site, monkeypatch, case):
    source, attr, reason = BROKEN[case]
    only_fakes(monkeypatch)
    site("fake-good", layer_module("Good") +
         "\ndef register(registry):\n    registry.register('GoodLayer', 'numpy', Good)\n")
    site("fake-broken", source, ep_name="broken", attr=attr)

    _, msgs = record(lambda: [cyconv.list_layers(), cyconv.get_layer("Sigmoid"),
                              cyconv.get_layer("GoodLayer"), cyconv.list_backends()])
    assert len(msgs) == 1, msgs                                 # warns once
    assert "fake-broken" in msgs[0] and reason in msgs[0]       # names distribution and error
    assert "CYCONV_DISABLE_PLUGINS=broken" in msgs[0]

    _, more = record(lambda: [cyconv.list_layers(), cyconv.get_layer("Conv2D"), config_text()])
    assert more == []                                           # ... and only once
    assert_core_intact()
    assert cyconv.get_layer("GoodLayer").__name__ == "Good"     # other plugins still load
    for name in ("PartialLayer", "NotALayer", "PlainThing"):
        assert name not in cyconv.list_layers()                 # partial work rolled back
    report = _plugins.plugin_report()
    assert report["loaded"] == ["good (fake-good 1.0)"]
    assert [label for label, _ in report["failed"]] == ["broken (fake-broken 1.0)"]
    assert reason in report["failed"][0][1]
    text = config_text()
    assert "failed broken (fake-broken 1.0): " in text and reason in text


def test_broken_metadata_does_not_break_cyconv(monkeypatch):
    def broken(**kwargs):
        raise OSError("unreadable site-packages")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken)
    _, msgs = record(cyconv.list_layers)
    assert len(msgs) == 1 and "unreadable site-packages" in msgs[0]
    assert_core_intact()
    assert "unreadable site-packages" in config_text()


def test_taken_name_from_another_plugin(site, monkeypatch):
    only_fakes(monkeypatch)
    site("fake-first", layer_module("A") +
         "\ndef register(registry):\n    registry.register('Shared', 'numpy', A)\n")
    site("fake-second", layer_module("B") + """
def register(registry):
    registry.register('Shared', 'numpy', B, override=True)   # not its own entry
""")
    _, msgs = record(cyconv.list_layers)
    assert len(msgs) == 1 and "fake-second" in msgs[0] and "first (fake-first 1.0)" in msgs[0]
    assert cyconv.get_layer("Shared").__name__ == "A"


def test_taken_name_from_the_application(site, monkeypatch):
    """Code that registered a name itself keeps it; the plugin fails."""
    only_fakes(monkeypatch)

    @cyconv.register_layer("Mine", backend="numpy")
    class Mine(cyconv.Layer):
        pass

    site("fake-late", layer_module("Late") +
         "\ndef register(registry):\n    registry.register('Mine', 'numpy', Late)\n")
    _, msgs = record(cyconv.list_layers)
    assert len(msgs) == 1 and "already registered" in msgs[0]
    assert cyconv.get_layer("Mine") is Mine


def test_plugin_backend_only_used_when_asked(site, monkeypatch):
    """A plugin may add Conv2D under its own backend: existing code is unaffected."""
    only_fakes(monkeypatch)
    site("fake-fastconv", layer_module("FastConv", expr="self._x * 0 + 42") + """
class FastSigmoid(FastConv):
    pass

def register(registry):
    registry.register("Conv2D", "fastconv", FastConv)
    registry.register("Sigmoid", "fastconv", FastSigmoid)
""")
    slot = REGISTRY._layers["Conv2D"]
    builtin_default = slot.get("cython") or slot["numpy"]
    _, msgs = record(cyconv.get_layer, "Conv2D")
    assert msgs == []
    assert cyconv.get_layer("Conv2D") is builtin_default
    assert cyconv.Conv2D(2, 3).backend == builtin_default.backend
    assert_core_intact(sigmoid_backends=("numpy", "fastconv"))
    assert cyconv.get_layer("Conv2D", "fastconv").__name__ == "FastConv"
    with cyconv.use_backend("fastconv"):
        assert cyconv.get_layer("Sigmoid").__name__ == "FastSigmoid"
    assert cyconv.get_layer("Sigmoid") is cyconv.Sigmoid


def test_plugin_may_extend_its_own_names(site, monkeypatch):
    """New names under the built-in backends are fine, numpy and cython both."""
    only_fakes(monkeypatch)
    site("fake-own", layer_module("Own") + """
class OwnFast(Own):
    pass

def register(registry):
    registry.register("Own", "numpy", Own)
    registry.register("Own", "cython", OwnFast)
    registry.register("Own", "numpy", Own)                 # the same again: fine
    registry.register("Own", "numpy", OwnFast, override=True)
    registry.register("Own", "numpy", Own, override=True)
""")
    _, msgs = record(cyconv.list_layers)
    assert msgs == []
    assert cyconv.backends_for("Own") == ["cython", "numpy"]
    assert cyconv.get_layer("Own").__name__ == "OwnFast"


# -- CYCONV_DISABLE_PLUGINS -------------------------------------------------------------

@pytest.mark.parametrize("value", ["broken", "fake-broken", "FAKE_Broken", " other , broken ",
                                   "*"])
def test_disable_plugins(site, monkeypatch, value):
    only_fakes(monkeypatch)
    mod = site("fake-broken", "raise RuntimeError('should never run')\n", ep_name="broken")
    site("fake-keep", layer_module("Keep") +
         "\ndef register(registry):\n    registry.register('KeepLayer', 'numpy', Keep)\n")
    monkeypatch.setenv("CYCONV_DISABLE_PLUGINS", value)
    _, msgs = record(cyconv.list_layers)
    assert msgs == []
    assert mod not in sys.modules                      # never imported
    report = _plugins.plugin_report()
    assert "broken (fake-broken 1.0)" in report["disabled"]
    assert report["failed"] == []
    assert ("KeepLayer" in cyconv.list_layers()) == (value != "*")


# -- load_plugins(path) ------------------------------------------------------------------

def test_load_plugins_good_and_bad(tmp_path):
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "good.py").write_text(layer_module("Triple", "3 * self._x", "3") + """
def register(registry):
    registry.register("Triple", "numpy", Triple)
""")
    (folder / "decorated.py").write_text("""
import cyconv

@cyconv.register_layer("Negate", backend="numpy")
class Negate(cyconv.Layer):
    shape_preserving = True
    def forward(self, x, train=True):
        return -x
    def backward(self, dout):
        return -dout
""")
    (folder / "bad.py").write_text(layer_module("Bad") + """
def register(registry):
    registry.register("BadLayer", "numpy", Bad)
    registry.register("Flatten", "numpy", Bad)          # built-in: refused
""")
    (folder / "_helper.py").write_text("raise RuntimeError('private modules are skipped')\n")
    (folder / "notes.txt").write_text("not a module")

    loaded, msgs = record(cyconv.load_plugins, folder)
    assert [label.split()[0] for label in loaded] == ["decorated", "good"]
    assert len(msgs) == 1 and "bad (" in msgs[0] and "built into cyconv" in msgs[0]
    assert cyconv.create_layer("Triple").forward(np.ones(2)).tolist() == [3.0, 3.0]
    assert cyconv.create_layer("Negate").forward(np.ones(1)).tolist() == [-1.0]
    assert "BadLayer" not in cyconv.list_layers()
    assert_core_intact()
    report = _plugins.plugin_report()
    assert any(label.startswith("bad (") for label, _ in report["failed"])
    assert "failed bad (" in config_text()
    owners = _plugins.plugin_layers()
    assert owners[("Negate", "numpy")].startswith("decorated (")

    again, msgs = record(cyconv.load_plugins, folder)       # loaded modules are not re-run
    assert again == loaded and len(msgs) == 1               # the bad one is retried
    assert len(_plugins.plugin_report()["failed"]) == 1     # ... and reported once
    (folder / "bad.py").write_text(layer_module("Bad") +
                                   "\ndef register(registry):\n"
                                   "    registry.register('BadLayer', 'numpy', Bad)\n")
    fixed, msgs = record(cyconv.load_plugins, folder)
    assert msgs == [] and len(fixed) == 3 and "BadLayer" in cyconv.list_layers()
    assert _plugins.plugin_report()["failed"] == []
    one, msgs = record(cyconv.load_plugins, folder / "good.py")
    assert one == [loaded[1]] and msgs == []


def test_load_plugins_checks_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_plugins"):
        cyconv.load_plugins(tmp_path / "nowhere")


def test_load_plugins_runs_discovery_first(site, tmp_path, monkeypatch):
    """Installed plugins are discovered before local modules, so a clash is decided the
    same way whatever the call order."""
    only_fakes(monkeypatch)
    site("fake-installed", layer_module("Inst") +
         "\ndef register(registry):\n    registry.register('Clash', 'numpy', Inst)\n")
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "clash.py").write_text(layer_module("Loc") +
                                     "\ndef register(registry):\n"
                                     "    registry.register('Clash', 'numpy', Loc)\n")
    loaded, msgs = record(cyconv.load_plugins, folder)
    assert loaded == [] and len(msgs) == 1 and "installed (fake-installed 1.0)" in msgs[0]
    assert cyconv.get_layer("Clash").__name__ == "Inst"


# -- the example plugins in plugins/ -----------------------------------------------------

ACTIVATIONS = ["LeakyReLU", "ELU", "GELU", "Swish", "SiLU"]


def _example_plugin_loaded(module, install, label):
    """Skip unless the example plugin (and Hypothesis) is installed; the plugin
    loads through its entry point with no message, reported as ``label ...``."""
    pytest.importorskip(module, reason=f"example plugin not installed: pip install {install}")
    pytest.importorskip("hypothesis")
    _, msgs = record(cyconv.list_layers)
    assert msgs == []
    assert any(loaded.startswith(label) for loaded in _plugins.plugin_report()["loaded"])


def test_example_activations_plugin_via_entry_point():
    _example_plugin_loaded("cyconv_activations", "./plugins/cyconv-activations",
                           "activations (cyconv-activations")
    from cyconv.testing import check_layer

    for name in ACTIVATIONS:
        cls = cyconv.get_layer(name)
        assert cls.__module__ == "cyconv_activations" and cls.backend == "numpy"
        assert check_layer(name, backend="numpy").ok


def test_example_gap_plugin_via_entry_point():
    _example_plugin_loaded("cyconv_gap", "--no-build-isolation ./plugins/cyconv-gap",
                           "gap (cyconv-gap")
    from cyconv.testing import check_layer

    assert cyconv.backends_for("GlobalAvgPool2D") == ["cython", "numpy"]
    for backend in ("cython", "numpy"):
        report = check_layer("GlobalAvgPool2D", backend=backend)
        assert report.ok
    assert check_layer("GlobalAvgPool2D", backend="cython")[
        "check_matches_reference"].status == "passed"


def test_example_plugins_can_be_disabled(monkeypatch):
    pytest.importorskip("cyconv_activations",
                        reason="example plugin not installed: "
                               "pip install ./plugins/cyconv-activations")
    monkeypatch.setenv("CYCONV_DISABLE_PLUGINS", "cyconv-activations,gap")
    assert "LeakyReLU" not in cyconv.list_layers()
    assert "GlobalAvgPool2D" not in cyconv.list_layers()
    assert_core_intact()


def test_public_api():
    assert cyconv.load_plugins is _plugins.load_plugins
    assert issubclass(cyconv.PluginLoadWarning, UserWarning)
    assert {"load_plugins", "PluginLoadWarning"} <= set(cyconv.__all__)
    report = _plugins.plugin_report()
    assert set(report) >= {"loaded", "failed"}


def test_fixture_left_builtin_classes_alone():
    """Runs after the tests above: the fixture restored class attributes exactly."""
    for name in ("Conv2D", "MaxPool2D", "AvgPool2D"):
        for backend in cyconv.backends_for(name):
            cls = cyconv.get_layer(name, backend)
            assert cls.name == name and cls.backend == backend


def test_lookup_in_another_thread_waits_for_discovery(site, monkeypatch):
    """Two threads doing their first lookup at once: the second one waits for the
    plugins instead of missing their layers; the plugin's own lookups do not block."""
    import threading
    import types

    only_fakes(monkeypatch)
    events = types.SimpleNamespace(started=threading.Event(), proceed=threading.Event())
    monkeypatch.setitem(sys.modules, "fakeplug_events", events)
    site("fake-slow", layer_module("Slow") + """
import fakeplug_events

def register(registry):
    fakeplug_events.started.set()
    assert registry.get_layer("Sigmoid") is cyconv.Sigmoid        # same thread: no wait
    assert "Conv2D" in cyconv.list_layers()
    fakeplug_events.proceed.wait(10)
    registry.register("SlowLayer", "numpy", Slow)
""")
    results = {}

    def first():
        results["first"] = cyconv.get_layer("SlowLayer").__name__

    def second():
        try:
            results["second"] = cyconv.get_layer("SlowLayer").__name__
        except Exception as exc:  # noqa: BLE001 - report it to the main thread
            results["second"] = repr(exc)

    t1 = threading.Thread(target=first)
    t1.start()
    assert events.started.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(0.2)
    assert t2.is_alive()                      # blocked on the discovery in progress
    events.proceed.set()
    t1.join(10)
    t2.join(10)
    assert results == {"first": "Slow", "second": "Slow"}
    assert REGISTRY.plugin_hook is None

"""The layer registry: names x backends, preference order, overrides, use_backend,
CYCONV_BACKEND, and show_config().

The registry is global: every test that registers something does so under a
unique name through the ``registry`` fixture, which restores the registry's
state afterwards.
"""

import contextlib
import io
import threading
import types
import uuid
import warnings

import numpy as np
import pytest

import cyconv
from cyconv import (
    BackendError,
    BackendFallbackWarning,
    LayerNotFoundError,
    backends_for,
    create_layer,
    get_layer,
    list_backends,
    list_layers,
    register_layer,
    use_backend,
)
from cyconv._registry import REGISTRY
from cyconv.backends import KernelSets, numpy_backend, pop_preference, push_preference

BUILTIN_NAMES = ["Affine", "AvgPool2D", "BatchNorm", "Conv2D", "Dropout", "Flatten",
                 "MaxPool2D", "ReLU", "Sigmoid", "SoftmaxWithLoss"]
COMPILED = ["Conv2D", "MaxPool2D", "AvgPool2D", "ReLU"]
CYTHON_BUILT = "cython" in backends_for("Conv2D")


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch):
    monkeypatch.delenv("CYCONV_BACKEND", raising=False)


@pytest.fixture
def registry():
    """The global registry, restored to its current state after the test."""
    list_layers()  # load entry-point plugins before taking the snapshot
    saved = REGISTRY.snapshot()
    unavailable = dict(REGISTRY.unavailable_backends)
    warned = REGISTRY._fallback_warned
    yield REGISTRY
    REGISTRY.restore(saved)
    with REGISTRY._lock:
        REGISTRY.unavailable_backends.clear()
        REGISTRY.unavailable_backends.update(unavailable)
        REGISTRY._fallback_warned = warned


@pytest.fixture
def name():
    return f"TestLayer{uuid.uuid4().hex[:10]}"


def make_class(tag):
    class Tagged(cyconv.Layer):
        def __init__(self, scale=1.0, *, backend=None):
            super().__init__()
            self.scale = scale

        def forward(self, x, train=True):
            return x * self.scale

        def backward(self, dout):
            return dout * self.scale

    Tagged.tag = tag
    return Tagged


def register(name, backend, tag=None, **kwargs):
    cls = make_class(tag or backend)
    assert register_layer(name, backend=backend, **kwargs)(cls) is cls
    return cls


@pytest.fixture
def cython_unavailable(registry, monkeypatch):
    """Simulate a build whose compiled extension failed to load."""
    for layer in COMPILED:
        slot = dict(registry._layers[layer])
        slot.pop("cython", None)
        registry._layers[layer] = slot
        registry.reserve(layer, "cython")  # as cyconv.layers does when the import fails
    registry.unavailable_backends["cython"] = "simulated: _conv failed to import"
    registry._fallback_warned = False
    return registry


# -- default preference ------------------------------------------------------------------

def test_default_preference():
    if CYTHON_BUILT:
        with warnings.catch_warnings():
            warnings.simplefilter("error", BackendFallbackWarning)
            for layer in COMPILED:
                assert get_layer(layer).backend == "cython"
                assert get_layer(layer, backend="numpy").backend == "numpy"
            assert cyconv.Conv2D(W=np.ones((1, 1, 1, 1))).backend == "cython"
    else:
        assert "cython" in REGISTRY.unavailable_backends
        for layer in COMPILED:
            assert get_layer(layer).backend == "numpy"
    for layer in ["Sigmoid", "Affine", "BatchNorm"]:
        assert get_layer(layer).backend == "numpy"


def test_fallback_warns_once(cython_unavailable):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            for layer in COMPILED:
                assert get_layer(layer).backend == "numpy"
        conv = cyconv.Conv2D(W=np.ones((1, 1, 1, 1)))
        cyconv.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)))
    fallback = [w for w in caught if issubclass(w.category, BackendFallbackWarning)]
    assert len(fallback) == 1
    assert "simulated: _conv failed to import" in str(fallback[0].message)
    assert conv.backend == "numpy"


def test_no_fallback_warning_for_numpy_only_layers(cython_unavailable):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        assert get_layer("Sigmoid").backend == "numpy"
        assert get_layer("Conv2D", backend="numpy").backend == "numpy"


def test_unavailable_backend_explicitly(cython_unavailable):
    with pytest.raises(BackendError) as info:
        get_layer("Conv2D", backend="cython")
    msg = str(info.value)
    assert "unavailable" in msg and "simulated" in msg and "numpy" in msg
    with pytest.raises(BackendError, match="unavailable"):
        with use_backend("cython"):
            pass
    with pytest.raises(BackendError):
        cyconv.conv2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), backend="cython")
    assert "cython" in list_backends()


# -- explicit backends never fall back -----------------------------------------------------

def test_explicit_backend_never_falls_back():
    with pytest.raises(BackendError) as info:
        get_layer("Conv2D", backend="bogus")
    msg = str(info.value)
    assert "bogus" in msg
    for backend in backends_for("Conv2D"):
        assert backend in msg
    with pytest.raises(BackendError, match="numpy"):
        get_layer("Sigmoid", backend="cython")
    with pytest.raises(BackendError):
        create_layer("MaxPool2D", backend="bogus", kernel_size=2)
    with pytest.raises(TypeError, match="backend"):
        get_layer("ReLU", backend=1)
    assert issubclass(BackendError, LookupError)


# -- unknown names ---------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, right", [("conv2d", "Conv2D"), ("CONV2D", "Conv2D"),
                                          ("MaxPool", "MaxPool2D"), ("Relu", "ReLU"),
                                          ("Sigmiod", "Sigmoid")])
def test_unknown_name_suggests_close_matches(wrong, right):
    with pytest.raises(LayerNotFoundError) as info:
        get_layer(wrong)
    msg = str(info.value)
    assert f"'{right}'" in msg and "Did you mean" in msg
    assert msg.startswith("no layer named")  # not KeyError's quoted repr
    assert isinstance(info.value, KeyError) and isinstance(info.value, LookupError)
    with pytest.raises(LayerNotFoundError):
        create_layer(wrong)
    with pytest.raises(LayerNotFoundError):
        backends_for(wrong)


def test_unknown_name_without_close_match():
    with pytest.raises(LayerNotFoundError) as info:
        get_layer("Qwxzyvvvkk")
    assert "Did you mean" not in str(info.value)
    assert "list_layers" in str(info.value)


# -- registration ------------------------------------------------------------------------------

def test_register_layer_decorator(registry, name):
    cls = register(name, "alpha")
    assert cls.name == name and cls.backend == "alpha"
    assert get_layer(name) is cls
    assert get_layer(name, backend="alpha") is cls
    assert name in list_layers()
    assert backends_for(name) == ["alpha"]
    layer = create_layer(name, scale=3.0)
    assert isinstance(layer, cls) and layer.scale == 3.0
    np.testing.assert_array_equal(layer.forward(np.ones(2)), [3.0, 3.0])
    assert isinstance(create_layer(name, backend="alpha"), cls)


def test_register_rejects_bad_arguments(registry, name):
    with pytest.raises(TypeError, match="Layer"):
        register_layer(name, backend="alpha")(object)
    with pytest.raises(TypeError, match="name"):
        register_layer("", backend="alpha")(make_class("x"))
    with pytest.raises(TypeError, match="backend"):
        register_layer(name, backend="")(make_class("x"))
    assert name not in list_layers()


def test_collision_requires_override(registry, name):
    first = register(name, "alpha", tag="first")
    with pytest.raises(ValueError, match="override=True") as info:
        register(name, "alpha", tag="second")
    assert name in str(info.value) and "alpha" in str(info.value)
    assert get_layer(name, backend="alpha") is first
    # registering the very same class again is harmless
    register_layer(name, backend="alpha")(first)
    third = register(name, "alpha", tag="third", override=True)
    assert get_layer(name, backend="alpha") is third
    # another backend is not a collision
    other = register(name, "beta")
    assert get_layer(name, backend="beta") is other
    assert get_layer(name, backend="alpha") is third


@pytest.mark.parametrize("layer", BUILTIN_NAMES)
def test_builtin_entries_cannot_be_replaced(registry, layer):
    for backend in backends_for(layer):
        if backend not in ("numpy", "cython"):
            continue
        original = get_layer(layer, backend=backend)
        for override in (False, True):
            with pytest.raises(ValueError, match="built into cyconv"):
                register_layer(layer, backend=backend, override=override)(make_class("evil"))
            with pytest.raises(ValueError, match="built into cyconv"):
                REGISTRY.register(layer, backend, make_class("evil"), override=override)
        assert get_layer(layer, backend=backend) is original
        assert get_layer(layer, backend=backend).__module__ == "cyconv.layers"


def test_builtin_name_under_a_new_backend(registry, name):
    """A plugin may add Conv2D under its own backend; defaults do not change."""
    calls = []

    class Kernels:
        def __getattr__(self, attr):
            def wrapped(*args):
                calls.append(attr)
                return getattr(numpy_backend, attr)(*args)
            return wrapped

    backend = f"plug{name[-6:]}"
    default = get_layer("Conv2D")

    @register_layer("Conv2D", backend=backend)
    class PlugConv(cyconv.Conv2D):
        kernels = Kernels()

    assert get_layer("Conv2D") is default
    assert get_layer("Conv2D", backend=backend) is PlugConv
    assert backends_for("Conv2D")[-1] == backend
    assert backend in list_backends()
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5))
    w = np.random.default_rng(1).standard_normal((3, 2, 3, 3))
    y = cyconv.conv2d(x, w, backend=backend)
    assert calls == ["conv2d_forward"]
    np.testing.assert_allclose(y, cyconv.conv2d(x, w, backend="numpy"), rtol=1e-13)
    layer = cyconv.Conv2D(W=w, backend=backend)
    assert type(layer) is PlugConv
    layer.forward(x)
    assert calls == ["conv2d_forward"] * 2


# -- listing --------------------------------------------------------------------------------------

def test_list_layers(registry, name):
    names = list_layers()
    assert names == sorted(names)
    assert set(BUILTIN_NAMES) <= set(names)
    pools = list_layers("*Pool2D")
    assert {"AvgPool2D", "MaxPool2D"} <= set(pools)
    assert all(p.endswith("Pool2D") for p in pools)
    assert "Conv2D" not in pools
    for suffix in ("B", "A", "C2"):
        register(name + suffix, "alpha")
    assert list_layers(name + "*") == [name + "A", name + "B", name + "C2"]
    assert list_layers(name + "?") == [name + "A", name + "B"]
    assert list_layers(name + "[AC]*") == [name + "A", name + "C2"]
    assert list_layers(name.lower() + "*") == []  # case-sensitive
    assert list_layers("NoSuchLayer*") == []


def test_backends_for(registry, name):
    assert backends_for("Sigmoid") == ["numpy"]
    conv = backends_for("Conv2D")
    assert "numpy" in conv
    assert conv[:2] == (["cython", "numpy"] if CYTHON_BUILT else ["numpy"])
    register(name, "zeta")
    register(name, "alpha")
    register(name, "numpy")
    assert backends_for(name) == ["numpy", "alpha", "zeta"]
    assert {"numpy", "cython", "alpha", "zeta"} <= set(list_backends())


# -- preference: environment and use_backend ----------------------------------------------------

@pytest.fixture
def two_backends(registry, name):
    """A layer under backends 'alpha' and 'beta' (default order: alphabetical)."""
    register(name, "beta")
    register(name, "alpha")
    return name


def test_kernel_set_selection_follows_every_change(monkeypatch):
    """select() remembers its answers; each input they depend on still counts."""
    sets = KernelSets()
    serves_f = {name: types.SimpleNamespace(f=None) for name in ("cython", "numpy", "zeta", "omega")}
    sets.add("cython", serves_f["cython"])
    assert sets.select(("f",), layer="L")[0] == "cython"
    sets.add("numpy", serves_f["numpy"])
    sets.add("zeta", serves_f["zeta"])
    monkeypatch.setenv("CYCONV_BACKEND", "zeta")
    assert sets.select(("f",), layer="L") == ("zeta", serves_f["zeta"])
    monkeypatch.delenv("CYCONV_BACKEND")
    assert sets.select(("f",), layer="L")[0] == "cython"
    token = push_preference(["zeta"])
    assert sets.select(("f",), layer="L")[0] == "zeta"
    pop_preference(token)
    assert sets.select(("f",), layer="L")[0] == "cython"
    sets.unavailable["cython"] = "simulated"
    with pytest.warns(BackendFallbackWarning, match="simulated"):
        assert sets.select(("f",), layer="L")[0] == "numpy"
    del sets.unavailable["cython"]
    assert sets.select(("f",), layer="L")[0] == "cython"
    monkeypatch.setenv("CYCONV_BACKEND", "omega")
    assert sets.select(("f",), layer="L")[0] == "cython"
    sets.set_layer_kernels({"omega": serves_f["omega"]})
    assert sets.select(("f",), layer="L")[0] == "omega"
    with pytest.raises(BackendError):  # errors are not remembered: raised each time
        sets.select(("g",), layer="L")
    with pytest.raises(BackendError):
        sets.select(("g",), layer="L")


def test_default_order_for_plugin_backends(two_backends):
    assert get_layer(two_backends).backend == "alpha"


def test_environment_variable_order(two_backends, monkeypatch):
    monkeypatch.setenv("CYCONV_BACKEND", "beta")
    assert get_layer(two_backends).backend == "beta"
    monkeypatch.setenv("CYCONV_BACKEND", "beta,alpha")
    assert get_layer(two_backends).backend == "beta"
    monkeypatch.setenv("CYCONV_BACKEND", " gamma , alpha,beta ")
    monkeypatch.setattr(cyconv._registry, "_checked_environment", set())
    with pytest.warns(UserWarning, match="unknown backend 'gamma'"):  # ignored, with a warning
        assert get_layer(two_backends).backend == "alpha"
    monkeypatch.setenv("CYCONV_BACKEND", "numpy")
    assert get_layer("Conv2D").backend == "numpy"
    assert get_layer(two_backends).backend == "alpha"  # numpy lacks it: default order
    monkeypatch.setenv("CYCONV_BACKEND", "")
    assert get_layer(two_backends).backend == "alpha"
    # an explicit backend ignores the environment
    monkeypatch.setenv("CYCONV_BACKEND", "beta")
    assert get_layer(two_backends, backend="alpha").backend == "alpha"


def test_use_backend_overrides_environment(two_backends, monkeypatch):
    monkeypatch.setenv("CYCONV_BACKEND", "beta")
    with use_backend("alpha"):
        assert get_layer(two_backends).backend == "alpha"
    assert get_layer(two_backends).backend == "beta"


def test_use_backend_nesting(two_backends):
    with use_backend("beta"):
        assert get_layer(two_backends).backend == "beta"
        with use_backend("alpha"):
            assert get_layer(two_backends).backend == "alpha"
            with use_backend("numpy"):
                assert get_layer(two_backends).backend == "alpha"  # numpy lacks it
                assert get_layer("Conv2D").backend == "numpy"
            assert get_layer("Conv2D").backend == ("cython" if CYTHON_BUILT else "numpy")
        assert get_layer(two_backends).backend == "beta"
        with use_backend("numpy", "alpha"):
            assert get_layer(two_backends).backend == "alpha"
    assert get_layer(two_backends).backend == "alpha"
    with use_backend("beta"):
        # a backend without the layer leaves the default order in charge
        assert get_layer("Conv2D").backend == ("cython" if CYTHON_BUILT else "numpy")


def test_use_backend_restored_after_exception(two_backends):
    with pytest.raises(RuntimeError):
        with use_backend("beta"):
            raise RuntimeError("boom")
    assert get_layer(two_backends).backend == "alpha"


def test_use_backend_numpy_for_layers_and_functions():
    with use_backend("numpy"):
        assert cyconv.Conv2D(W=np.ones((1, 1, 1, 1))).backend == "numpy"
        assert cyconv.MaxPool2D(2).backend == "numpy"
        assert create_layer("AvgPool2D", kernel_size=2).backend == "numpy"


def test_use_backend_rejects_unknown(registry):
    with pytest.raises(BackendError, match="unknown backend 'nope'") as info:
        with use_backend("nope"):
            pass
    assert "numpy" in str(info.value)
    with pytest.raises(BackendError):
        with use_backend("numpy", "nope"):
            pass
    assert get_layer("Conv2D").backend == ("cython" if CYTHON_BUILT else "numpy")
    for bad in [(), ("",), (3,), (None,)]:
        with pytest.raises(TypeError):
            with use_backend(*bad):
                pass


def test_use_backend_is_thread_local(two_backends):
    barrier = threading.Barrier(3, timeout=20)
    seen, errors = {}, []

    def worker(key, backend):
        try:
            cm = use_backend(backend) if backend else contextlib.nullcontext()
            with cm:
                barrier.wait()  # all three threads are inside their contexts
                seen[key, 1] = get_layer(two_backends).backend
                barrier.wait()  # everybody has looked once
                seen[key, 2] = get_layer(two_backends).backend
            barrier.wait()  # everybody has left
            seen[key, 3] = get_layer(two_backends).backend
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=("a", "beta")),
               threading.Thread(target=worker, args=("b", "alpha")),
               threading.Thread(target=worker, args=("c", None))]
    with use_backend("beta"):  # the main thread's context does not leak into new threads
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert seen == {("a", 1): "beta", ("a", 2): "beta", ("a", 3): "alpha",
                    ("b", 1): "alpha", ("b", 2): "alpha", ("b", 3): "alpha",
                    ("c", 1): "alpha", ("c", 2): "alpha", ("c", 3): "alpha"}


# -- show_config ----------------------------------------------------------------------------------

SECTIONS = ["cyconv", "python", "numpy", "openmp", "threads", "blas", "backends", "layers",
            "plugins"]


def _section(text, key):
    for line in text.splitlines():
        if line.split(":")[0].strip() == key:
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {key!r} line in:\n{text}")


def test_show_config(capsys):
    cyconv.show_config()
    out = capsys.readouterr().out
    for key in SECTIONS:
        _section(out, key)
    assert _section(out, "cyconv") == cyconv.__version__
    assert _section(out, "numpy") == np.__version__
    assert _section(out, "threads") == str(cyconv.get_num_threads())
    assert _section(out, "openmp") in ("True", "False")
    lines = out.splitlines()
    layer_lines = {line.split()[0]: line.split(None, 1)[1] for line in
                   lines[lines.index(next(l for l in lines if l.startswith("layers"))) + 1:]
                   if line.startswith("  ")}
    for layer in BUILTIN_NAMES:
        assert layer_lines[layer] == ", ".join(backends_for(layer))
    backend_block = out.split("backends", 1)[1].split("layers", 1)[0]
    assert "numpy" in backend_block and "available" in backend_block
    assert "cython" in backend_block


def test_show_config_to_file(capsys):
    buffer = io.StringIO()
    cyconv.show_config(file=buffer)
    assert capsys.readouterr().out == ""
    text = buffer.getvalue()
    for key in SECTIONS:
        _section(text, key)


def test_show_config_reports_unavailable_backend(cython_unavailable, capsys):
    cyconv.show_config()
    out = capsys.readouterr().out
    assert "simulated: _conv failed to import" in out
    assert _section(out, "openmp") in ("True", "False")

def test_builtin_name_under_cython_is_reserved_even_when_unavailable(cython_unavailable):
    """With the extension missing, a third party must not be able to put its own
    Conv2D under 'cython' (the preferred backend): that would silently change
    what cyconv.Conv2D / cyconv.conv2d compute."""
    with pytest.raises(ValueError, match="built into cyconv"):
        register_layer("Conv2D", backend="cython")(make_class("evil"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_layer("Conv2D").backend == "numpy"

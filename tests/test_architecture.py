"""The package's shape (issue 13): imports run one way, modules stay small, layers pickle.

The import graph is read from the source (``ast``): an edge ``a -> b`` for
every ``import``/``from ... import`` of a module inside ``cyconv``, ``b`` the
module itself or, for ``from package import name``, the submodule ``name`` when
there is one.  Parent packages that Python imports on the way are not edges.
The main graph has module-level imports only; the lazy one adds the imports
inside functions (where cycles used to hide), less those of the package root
``cyconv`` (the facade, which ``_config`` asks for ``__version__``).
"""

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest

import cyconv

PACKAGE = Path(cyconv.__file__).parent

#: Lines above which a module is too long to read as one piece.
MAX_LINES = 600
#: Modules allowed over the limit; this set may only shrink (it held bench.py, now the
#: package cyconv/bench/, and nn.py, now under the limit).
KNOWN_LONG = set()


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _top_level_imports(tree):
    """Import statements outside functions and classes (also under module-level if/try)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler)
                                   else [child])


def _targets(module, path, node):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module
    found = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.append(sub if sub in MODULES else base)
    return found


def import_graph(lazy=False):
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        nodes = ([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
                 if lazy else _top_level_imports(tree))
        edges = set()
        for node in nodes:
            edges.update(t for t in _targets(module, path, node) if t in MODULES and t != module)
        graph[module] = edges - {"cyconv"} if lazy else edges
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("lazy", [False, True])
def test_the_import_graph_has_no_cycle(lazy):
    graph = import_graph(lazy)
    assert "cyconv.layers.conv" in graph and "cyconv.functional" in graph["cyconv.layers.conv"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("lower, upper", [
    ("cyconv._validation", "cyconv.backends"),
    ("cyconv._shapes", "cyconv.backends"),
    ("cyconv._threads", "cyconv.backends"),
    ("cyconv.backends", "cyconv.functional"),
    ("cyconv.functional", "cyconv.layers"),
    ("cyconv.layers", "cyconv._registry"),
    ("cyconv._registry", "cyconv._plugins"),
])
def test_imports_run_one_way(lower, upper):
    """Nothing at or below ``lower`` imports ``upper`` (or its package), even lazily."""
    graph = import_graph(lazy=True)
    below = {m for m in graph if m == lower or m.startswith(lower + ".")}
    reached, pending = set(), list(below)
    while pending:
        module = pending.pop()
        for nxt in graph[module] - reached:
            reached.add(nxt)
            pending.append(nxt)
    assert not {m for m in reached if m == upper or m.startswith(upper + ".")}, reached


def test_no_module_is_too_long():
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
               for p in MODULES.values()}
    too_long = {name for name, n in lengths.items() if n > MAX_LINES}
    assert too_long <= KNOWN_LONG, {n: lengths[n] for n in too_long - KNOWN_LONG}


# -- a layer instance records its backend and pickles with it ------------------------

def _layers(backend):
    w = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    layers = [cyconv.Conv2D(W=w, b=np.zeros(2), padding=1, backend=backend),
              cyconv.create_layer("Conv2D", backend, W=w),
              cyconv.MaxPool2D(2, backend=backend), cyconv.AvgPool2D(2, backend=backend),
              cyconv.ReLU(backend=backend)]
    if backend == "numpy":
        layers += [cyconv.Sigmoid(), cyconv.Flatten(), cyconv.Dropout(0.5, rng=0),
                   cyconv.BatchNorm(), cyconv.Affine(3, rng=0)]
    return layers


@pytest.mark.parametrize("backend", cyconv.backends_for("Conv2D"))
def test_layers_pickle_with_their_backend(backend):
    x = np.random.default_rng(1).standard_normal((2, 1, 4, 4))
    for layer in _layers(backend):
        if isinstance(layer, cyconv.Affine):
            layer.build(x.shape[1:])
        y = layer.forward(x)
        clone = pickle.loads(pickle.dumps(layer))
        assert type(clone) is type(layer) and clone.backend == layer.backend == (
            backend if layer.kernels_needed else "numpy"), layer
        assert clone.kernels is layer.kernels
        np.testing.assert_array_equal(clone.backward(np.ones_like(y)),
                                      layer.backward(np.ones_like(y)))


@pytest.mark.parametrize("backend", cyconv.backends_for("Conv2D"))
def test_networks_pickle_per_backend(backend):
    with cyconv.use_backend(backend):
        net = cyconv.nn.Sequential([cyconv.Conv2D(3, 3, padding=1), cyconv.ReLU(),
                                    cyconv.MaxPool2D(2), cyconv.Flatten(), cyconv.Affine(4)],
                                   input_shape=(1, 6, 6), seed=0)
    assert net.layers[0].backend == backend
    x = np.random.default_rng(2).standard_normal((3, 1, 6, 6))
    t = np.array([0, 1, 3])
    clone = pickle.loads(pickle.dumps(net))
    assert [layer.backend for layer in clone.layers] == [layer.backend for layer in net.layers]
    np.testing.assert_array_equal(clone.predict(x), net.predict(x))
    grads, clone_grads = net.gradient(x, t), clone.gradient(x, t)
    for key in grads:
        np.testing.assert_array_equal(clone_grads[key], grads[key])


def test_a_mistyped_private_attribute_is_an_attribute_error():
    layer = cyconv.ReLU()
    with pytest.raises(AttributeError) as info:
        layer._positiev  # noqa: B018 - the typo is the point
    assert not isinstance(info.value, cyconv.ForwardNotCalledError)
    with pytest.raises(cyconv.ForwardNotCalledError, match="forward"):
        layer.backward(np.ones(3))


def test_tags_are_declared_on_the_classes():
    from cyconv.layers import TAGS

    assert TAGS == ("has_params", "shape_preserving", "is_loss", "stochastic", "batch_coupled")
    assert cyconv.SoftmaxWithLoss.is_loss and cyconv.Dropout.stochastic
    assert cyconv.BatchNorm.batch_coupled and cyconv.BatchNorm.has_params
    assert cyconv.ReLU.shape_preserving and not cyconv.Flatten.shape_preserving
    assert not any(getattr(cyconv.Layer, tag) for tag in TAGS)


def test_a_plugin_conv_under_a_preferred_backend_leaves_unpickling_alone():
    """``Conv2D(backend=...)`` builds a plugin's registered class; unpickling a layer
    made before must not choose again (it rebuilds the class it was)."""
    from cyconv._registry import REGISTRY

    layer = cyconv.Conv2D(W=np.ones((1, 1, 2, 2)), backend="numpy")
    snapshot = REGISTRY.snapshot()
    try:
        @cyconv.register_layer("Conv2D", backend="archplug")
        class PlugConv(cyconv.Conv2D):
            kernels = cyconv.backends.numpy_backend

        assert type(cyconv.Conv2D(W=np.ones((1, 1, 2, 2)), backend="archplug")) is PlugConv
        with cyconv.use_backend("archplug"):
            assert type(cyconv.Conv2D(W=np.ones((1, 1, 2, 2)))) is PlugConv
            clone = pickle.loads(pickle.dumps(layer))
        assert type(clone) is cyconv.Conv2D and clone.backend == "numpy"
    finally:
        REGISTRY.restore(snapshot)
    assert "archplug" not in cyconv.list_backends()
    with pytest.raises(cyconv.BackendError):
        cyconv.Conv2D(W=np.ones((1, 1, 2, 2)), backend="archplug")


def test_kernel_selection_checks_the_environment_like_a_registry_lookup(monkeypatch):
    """``cyconv.conv2d`` chooses kernels without the registry, yet a mistyped
    CYCONV_BACKEND still warns (the registry's check runs before each selection)."""
    from cyconv import _registry

    monkeypatch.setattr(_registry, "_checked_environment", set())
    monkeypatch.setenv("CYCONV_BACKEND", "nmupy")
    with pytest.warns(UserWarning, match="unknown backend 'nmupy'"):
        cyconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))

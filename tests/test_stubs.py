"""The ``.pyi`` stubs of the compiled modules match what the modules define.

A stub is what a type checker and an editor see of a ``.pyx``; a stale one
(a parameter renamed, added or dropped, a function missing) misleads without
failing anything else.  Each stub is compared with the compiled module: the
same public functions, classes and their methods, and for each the same
parameter names, kinds and which ones have defaults.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib

import pytest

pytest.importorskip("cyconv_ext._conv", reason="the compiled backend is not built")

EXT = pathlib.Path(__file__).resolve().parents[1] / "cyconv_ext"
STUBS = sorted(EXT.glob("*.pyi"))


def _stub_parameters(node):
    """(name, kind, has_default) of a stub's ``def`` node, in order."""
    args = node.args
    positional = args.posonlyargs + args.args
    defaults = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
    params = [(a.arg, "POSITIONAL_ONLY" if a in args.posonlyargs else "POSITIONAL_OR_KEYWORD", d)
              for a, d in zip(positional, defaults)]
    if args.vararg:
        params.append((args.vararg.arg, "VAR_POSITIONAL", False))
    params += [(a.arg, "KEYWORD_ONLY", d is not None)
               for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append((args.kwarg.arg, "VAR_KEYWORD", False))
    return params


def _compiled_parameters(func):
    return [(p.name, p.kind.name, p.default is not inspect.Parameter.empty)
            for p in inspect.signature(func).parameters.values()]


def _embedded_init_parameters(cls):
    """A cdef class's ``__init__`` is a slot wrapper with no signature to inspect;
    Cython's ``embedsignature`` writes it as the class docstring's first line,
    ``Name(int n_threads, x=None)``."""
    first = (cls.__doc__ or "").splitlines()[0]
    assert first.startswith(cls.__name__ + "("), f"{cls.__name__}: no embedded signature"
    params = [("self", "POSITIONAL_OR_KEYWORD", False)]
    for part in filter(None, (p.strip() for p in first[first.index("(") + 1:-1].split(","))):
        name, _, default = part.partition("=")
        params.append((name.split()[-1], "POSITIONAL_OR_KEYWORD", bool(default)))
    return params


def _stub_definitions(tree):
    """{qualified name: def node} of the stub's functions and class methods."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            found[node.name] = None
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    found[f"{node.name}.{item.name}"] = item
    return found


def _public_callables(module):
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or not callable(value):
            continue
        if getattr(value, "__module__", module.__name__) != module.__name__:
            continue  # imported, not defined here (numpy, numbers, ...)
        names.add(name)
        if isinstance(value, type):
            names.update(f"{name}.{m}" for m in ("__enter__", "__exit__") if m in vars(value))
    return names


def test_every_compiled_module_with_a_stub_was_found():
    assert {"_pool", "_elementwise", "_optim", "_gemm", "_openmp_helpers", "_blas_limit",
            "_cpu", "_conv", "_winograd"} <= {p.stem for p in STUBS}


@pytest.mark.parametrize("stub", STUBS, ids=lambda p: p.stem)
def test_stub_matches_the_compiled_module(stub):
    module = importlib.import_module(f"cyconv_ext.{stub.stem}")
    defined = _stub_definitions(ast.parse(stub.read_text()))
    missing = _public_callables(module) - set(defined)
    assert not missing, f"{stub.name} lacks {sorted(missing)}"
    for qualname, node in defined.items():
        owner, _, attr = qualname.rpartition(".")
        obj = getattr(getattr(module, owner) if owner else module, attr, None)
        assert obj is not None, f"{stub.name} declares {qualname}, which the module lacks"
        if node is None:
            continue
        if attr == "__init__" and inspect.signature(obj) == inspect.signature(object.__init__):
            compiled = _embedded_init_parameters(getattr(module, owner))
        else:
            compiled = _compiled_parameters(obj)
        assert _stub_parameters(node) == compiled, (
            f"{stub.name}: {qualname}{inspect.signature(obj)} differs from the stub")

"""One place for argument checks (issue 13): ``cyconv._param_validation.PARAMS``.

Every declared constraint's generated invalid values are refused, with the
exception class it names and a message naming the argument, by every public
function and layer taking that parameter; its valid values are accepted; the
testing catalogue is built from the same constraints; and the helper families
that used to check scalars each on their own are gone or delegate.
"""

import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import cyconv
from cyconv import _param_validation as pv
from cyconv import _shapes, _threads, _validation, functional, optim
from cyconv._param_validation import PARAMS
from cyconv.testing.strategies import INVALID_VALUES, invalid_params

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
W = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
DY_POOL = np.ones((2, 3, 2, 2))


def _conv(**kw):
    return cyconv.conv2d(X, W, rounding="floor", backend="numpy", **kw)


def _conv_backward(**kw):
    y = _conv(**kw)
    return cyconv.conv2d_backward(np.ones_like(y), X, W, rounding="floor", backend="numpy", **kw)


def _pool(fn, kernel_size=4, **kw):
    return fn(X, kernel_size, rounding="floor", backend="numpy", **kw)


def _avg_backward(**kw):
    y = _pool(cyconv.avg_pool2d, **kw)
    return cyconv.avg_pool2d_backward(np.ones_like(y), X, 4, rounding="floor", backend="numpy",
                                      **kw)


def _conv_groups(groups):
    if not PARAMS["groups"].is_satisfied_by(groups):
        return cyconv.conv2d(X, W, groups=groups, backend="numpy")
    w = np.zeros((2, 2 // int(groups), 3, 3))
    return cyconv.conv2d(np.zeros((1, 2, 4, 4)), w, groups=groups, backend="numpy")


def _tiny_net():
    return cyconv.nn.Sequential([cyconv.Flatten(), cyconv.Affine(2, rng=0)], input_shape=(1, 2, 2),
                                seed=0)


def _trainer(**kw):
    x = np.zeros((4, 1, 2, 2))
    return cyconv.training.Trainer(_tiny_net(), x, np.array([0, 1, 0, 1]), progress=False, **kw)


def _dask_predict(**kw):
    dask = pytest.importorskip("cyconv.dask")
    return dask.predict(_tiny_net(), np.zeros((2, 1, 2, 2)), **kw)


# parameter (a PARAMS key) -> (label, call with the value, whether valid values are tried too)
TAKERS = {
    "kernel_size": [
        ("max_pool2d", lambda v: _pool(cyconv.max_pool2d, v), True),
        ("avg_pool2d", lambda v: _pool(cyconv.avg_pool2d, v), True),
        ("MaxPool2D", lambda v: cyconv.MaxPool2D(v), True),
        ("AvgPool2D", lambda v: cyconv.AvgPool2D(v), True),
        ("Conv2D", lambda v: cyconv.Conv2D(2, v), True),
        ("conv_output_size", lambda v: cyconv.conv_output_size((8, 8), v, rounding="floor"), True),
    ],
    "stride": [
        ("conv2d", lambda v: _conv(stride=v), True),
        ("conv2d_backward", lambda v: _conv_backward(stride=v), True),
        ("Conv2D", lambda v: cyconv.Conv2D(2, 3, stride=v), True),
        ("resolve_geometry", lambda v: cyconv.resolve_geometry((8, 8), 3, stride=v,
                                                               rounding="floor"), True),
    ],
    "pool.stride": [
        ("max_pool2d", lambda v: _pool(cyconv.max_pool2d, stride=v), True),
        ("avg_pool2d", lambda v: _pool(cyconv.avg_pool2d, stride=v), True),
        ("avg_pool2d_backward", lambda v: _avg_backward(stride=v), True),
        ("MaxPool2D", lambda v: cyconv.MaxPool2D(4, stride=v), True),
        ("AvgPool2D", lambda v: cyconv.AvgPool2D(4, stride=v), True),
    ],
    "dilation": [
        ("conv2d", lambda v: _conv(dilation=v), True),
        ("max_pool2d", lambda v: _pool(cyconv.max_pool2d, 2, dilation=v), True),
        ("Conv2D", lambda v: cyconv.Conv2D(2, 3, dilation=v), True),
        ("MaxPool2D", lambda v: cyconv.MaxPool2D(2, dilation=v), True),
    ],
    "input_size": [
        ("resolve_geometry", lambda v: cyconv.resolve_geometry(v, 1), False),
        ("conv_output_size", lambda v: cyconv.conv_output_size(v, 1), False),
    ],
    "padding": [
        ("conv2d", lambda v: _conv(padding=v), True),
        ("max_pool2d", lambda v: _pool(cyconv.max_pool2d, padding=v), True),
        ("avg_pool2d", lambda v: _pool(cyconv.avg_pool2d, padding=v), True),
        ("Conv2D", lambda v: cyconv.Conv2D(2, 3, padding=v), True),
        ("MaxPool2D", lambda v: cyconv.MaxPool2D(4, padding=v), True),
        ("AvgPool2D", lambda v: cyconv.AvgPool2D(4, padding=v), True),
        ("normalize_padding", lambda v: cyconv.normalize_padding(v, (8, 8), 3), True),
    ],
    "rounding": [
        ("conv2d", lambda v: cyconv.conv2d(X, W, rounding=v, backend="numpy"), True),
        ("max_pool2d", lambda v: cyconv.max_pool2d(X, 2, rounding=v, backend="numpy"), True),
        ("Conv2D", lambda v: cyconv.Conv2D(2, 3, rounding=v), True),
        ("AvgPool2D", lambda v: cyconv.AvgPool2D(2, rounding=v), True),
    ],
    "ceil_mode": [
        ("max_pool2d", lambda v: cyconv.max_pool2d(X, 4, ceil_mode=v, backend="numpy"), True),
        ("avg_pool2d", lambda v: cyconv.avg_pool2d(X, 4, ceil_mode=v, backend="numpy"), True),
        ("MaxPool2D", lambda v: cyconv.MaxPool2D(2, ceil_mode=v), True),
        ("pool_output_size", lambda v: cyconv.pool_output_size((8, 8), 2, ceil_mode=v), True),
    ],
    "groups": [
        ("conv2d", lambda v: _conv_groups(v), True),
        ("Conv2D", lambda v: cyconv.Conv2D(2, 3, groups=v), True),
    ],
    "algorithm": [
        # valid names only on the constructor: the numpy backend offers "gemm" alone
        ("conv2d", lambda v: _conv(algorithm=v), False),
        ("conv2d_backward", lambda v: _conv_backward(algorithm=v), False),
        ("Conv2D", lambda v: cyconv.Conv2D(2, 3, algorithm=v), True),
    ],
    "count_include_pad": [
        ("avg_pool2d", lambda v: _pool(cyconv.avg_pool2d, count_include_pad=v), True),
        ("avg_pool2d_backward", lambda v: _avg_backward(count_include_pad=v), True),
        ("AvgPool2D", lambda v: cyconv.AvgPool2D(2, count_include_pad=v), True),
    ],
    "divisor_override": [
        ("avg_pool2d", lambda v: _pool(cyconv.avg_pool2d, divisor_override=v), True),
        ("avg_pool2d_backward", lambda v: _avg_backward(divisor_override=v), True),
        ("AvgPool2D", lambda v: cyconv.AvgPool2D(2, divisor_override=v), True),
    ],
    "n_threads": [
        ("conv2d", lambda v: _conv(n_threads=v), True),
        ("max_pool2d", lambda v: _pool(cyconv.max_pool2d, n_threads=v), True),
        ("avg_pool2d_backward", lambda v: _avg_backward(n_threads=v), True),
        ("set_num_threads", lambda v: cyconv.set_num_threads(v), False),
    ],
    "out_channels": [("Conv2D", lambda v: cyconv.Conv2D(v, 3), True)],
    "out_features": [("Affine", lambda v: cyconv.Affine(v), True)],
    "num_features": [("BatchNorm", lambda v: cyconv.BatchNorm(v), True)],
    "ratio": [("Dropout", lambda v: cyconv.Dropout(v), True)],
    "momentum": [
        ("BatchNorm", lambda v: cyconv.BatchNorm(momentum=v), True),
        ("Momentum", lambda v: optim.Momentum(momentum=v), True),
        ("Nesterov", lambda v: optim.Nesterov(momentum=v), True),
    ],
    "BatchNorm.eps": [("BatchNorm", lambda v: cyconv.BatchNorm(eps=v), True)],
    "lr": [
        ("SGD", lambda v: optim.SGD(v), True),
        ("Adam", lambda v: optim.Adam(lr=v), True),
        ("RMSprop", lambda v: optim.RMSprop(lr=v), True),
    ],
    "decay_rate": [("RMSprop", lambda v: optim.RMSprop(decay_rate=v), True)],
    "beta1": [("Adam", lambda v: optim.Adam(beta1=v), True)],
    "beta2": [("Adam", lambda v: optim.Adam(beta2=v), True)],
    "eps": [
        ("AdaGrad", lambda v: optim.AdaGrad(eps=v), True),
        ("RMSprop", lambda v: optim.RMSprop(eps=v), True),
        ("Adam", lambda v: optim.Adam(eps=v), True),
    ],
    "eps_placement": [("Adam", lambda v: optim.Adam(eps_placement=v), True)],
    "upto": [
        ("Sequential.transform", lambda v: _tiny_net().transform(np.zeros((1, 1, 2, 2)), v), True),
        ("dask.transform", lambda v: pytest.importorskip("cyconv.dask").transform(
            _tiny_net(), np.zeros((2, 1, 2, 2)), v), False),
    ],
    "kind": [("load_mnist", lambda v: cyconv.datasets.load_mnist("/nonexistent", kind=v), False)],
    "test_fraction": [("train_test_split", lambda v: cyconv.datasets.train_test_split(
        np.zeros((10, 1)), np.zeros(10), test_fraction=v), True)],
    "epochs": [("Trainer", lambda v: _trainer(epochs=v), True)],
    "batch_size": [("Trainer", lambda v: _trainer(batch_size=v), True)],
    "eval_batch_size": [("Trainer", lambda v: _trainer(eval_batch_size=v), True)],
    "dask.batch_size": [("dask.predict", lambda v: _dask_predict(batch_size=v), False)],
    "threads_per_worker": [("dask.predict", lambda v: _dask_predict(threads_per_worker=v),
                            False)],
    # threads_per_rank: DistributedTrainer needs an MPI world (tests/mpi); the constraint
    # alone is checked below
}

INVALID = [pytest.param(key, label, call, value, exc, id=f"{key}-{label}-{value!r}")
           for key, takers in TAKERS.items() for label, call, _ in takers
           for value, exc in PARAMS[key].invalid_cases()]
VALID = [pytest.param(key, label, call, value, id=f"{key}-{label}-{value!r}")
         for key, takers in TAKERS.items() for label, call, try_valid in takers if try_valid
         for value in PARAMS[key].valid_values()]


def _argument(key):
    return key.rpartition(".")[2]


@pytest.mark.parametrize("key", sorted(PARAMS))
def test_every_constraint_refuses_its_invalid_values_naming_the_argument(key):
    constraint = PARAMS[key]
    cases = constraint.invalid_cases()
    assert cases and all(exc in (TypeError, ValueError) for _, exc in cases)
    for value, exc in cases:
        with pytest.raises(exc, match=re.escape(_argument(key))) as info:
            constraint.check(value, _argument(key))
        assert type(info.value) is exc  # not a subclass: the declared class
        assert not constraint.is_satisfied_by(value)
        assert repr(value) in str(info.value) or str(value) in str(info.value)


@pytest.mark.parametrize("key", sorted(PARAMS))
def test_every_constraint_accepts_its_valid_values(key):
    constraint = PARAMS[key]
    assert constraint.valid_values()
    for value in constraint.valid_values():
        assert constraint.is_satisfied_by(value), value
        constraint.check(value, _argument(key))


def test_every_declared_parameter_has_public_takers_here():
    assert set(TAKERS) | {"threads_per_rank"} == set(PARAMS)


@pytest.mark.parametrize("key, label, call, value, exc", INVALID)
def test_public_functions_and_layers_refuse_the_generated_invalid_values(key, label, call,
                                                                        value, exc):
    with pytest.raises(exc, match=re.escape(_argument(key))):
        call(value)


@pytest.mark.parametrize("key, label, call, value", VALID)
def test_public_functions_and_layers_accept_the_generated_valid_values(key, label, call, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a thread count above the cores warns
        call(value)


def test_threads_per_rank_is_declared_like_the_other_integrations():
    assert PARAMS["threads_per_rank"] is PARAMS["threads_per_worker"]
    with pytest.raises(ValueError, match="threads_per_rank must be a positive int or None"):
        pv.check("threads_per_rank", 0)


def test_owner_entries_come_first():
    assert pv.constraint_for("eps", owner="BatchNorm") is PARAMS["BatchNorm.eps"]
    assert pv.constraint_for("eps", owner="Adam") is PARAMS["eps"]
    assert pv.check("eps", 0.0) == 0.0
    with pytest.raises(ValueError, match="eps must be > 0"):
        pv.check("eps", 0.0, owner="BatchNorm")


def test_checks_normalise():
    assert pv.check("stride", 2) == (2, 2) and pv.check("stride", [1, np.int64(3)]) == (1, 3)
    assert pv.check("padding", 1) == ((1, 1), (1, 1))
    assert pv.check("padding", (1, 2)) == ((1, 1), (2, 2))
    assert pv.check("padding", "SAME") == "same"
    assert type(pv.check("groups", np.int64(2))) is int
    assert type(pv.check("lr", 1)) is float
    assert pv.check("count_include_pad", np.bool_(False)) is False
    assert pv.check("ceil_mode", 1) is True
    assert pv.check("n_threads", None) is None and pv.check("n_threads", -1) == -1


def test_the_module_is_layer_one():
    """It imports the standard library and NumPy only (docs/architecture.md)."""
    import ast
    import sys

    tree = ast.parse(Path(pv.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.partition(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.partition(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))
    assert imported - {"__future__", "numpy"} <= sys.stdlib_module_names, imported


# -- the catalogue is built from the declarations -----------------------------------------

@pytest.mark.parametrize("argument", sorted(set(INVALID_VALUES) - {"backend"}))
def test_the_catalogue_is_generated_from_the_constraints(argument):
    assert INVALID_VALUES[argument] == pv.constraint_for(argument, owner="pool").invalid_cases()


def test_the_catalogue_keeps_every_value_it_listed_by_hand():
    """The hand-written lists the generated ones replaced: still refused, as before."""
    V, T = ValueError, TypeError
    before = {
        "kernel_size": ((0, V), (-2, V), ((2, 0), V), ((3, -1), V), (2.0, T), (1.5, T),
                        (None, T), ((1, 2, 3), T), ("2", T)),
        "stride": ((0, V), (-1, V), (-2, V), ((1, 0), V), ((2, -1), V), (1.5, T), ("1", T),
                   ((1, 2, 3), T), (True, T), ((1.0, 1), T)),
        "dilation": ((0, V), (-1, V), ((1, 0), V), (2.0, T), (1.5, T), ("x", T), (False, T),
                     (None, T), ((1, 2, 3), T), ((1.0, 1), T)),
        "padding": ((-1, V), ((0, -1), V), (((0, 0), (-1, 0)), V), (((0, 0), (0, -1)), V),
                    ((1, -1), V), (((0, -2), (0, 0)), V), (True, T), ("full", V),
                    ("samee", V), ("validd", V), ("causal", V), ("", V), ("2", V), (1.5, T),
                    ((1, 2, 3), T), (None, T), (((1, 2), 3), T), ((1.0, 1), T)),
        "rounding": (("round", V), ("EXACT", V), ("nearest", V), ("truncate", V),
                     ("FLOOR", V), ("up", V), ("", V), (None, V), (1, V)),
        "groups": ((0, V), (-1, V), (1.0, T), (2.5, T), (True, T), ("2", T), (None, T)),
        "ceil_mode": (("yes", T), (None, T), (1.5, T)),
        "count_include_pad": (("yes", T), (None, T), (2, T), (1.0, T)),
        "divisor_override": ((0, V), (-3, V), (1.5, T), ("2", T), (True, T)),
        "n_threads": ((0, V), (1.5, T), ("2", T), ("4", T), (True, T)),
    }
    for argument, cases in before.items():
        constraint = pv.constraint_for(argument, owner="pool")
        generated = {(type(v), e) for v, e in INVALID_VALUES[argument]}
        for value, exc in cases:
            with pytest.raises(exc, match=re.escape(argument)):
                constraint.check(value, argument)
            # the same kind of mistake is among the generated values
            assert (type(value), exc) in generated, (argument, value)


def test_layer_invalid_params_come_from_the_constraints():
    from cyconv.testing._builtin_settings import BUILTIN_SETTINGS

    assert all(entry in BUILTIN_SETTINGS["Dropout"]["invalid_params"]
               for entry in invalid_params("ratio"))
    assert invalid_params("eps", owner="BatchNorm") == [
        {"eps": v} for v in PARAMS["BatchNorm.eps"].invalid_values()]
    assert all(entry in BUILTIN_SETTINGS["BatchNorm"]["invalid_params"]
               for entry in invalid_params("eps", owner="BatchNorm"))


# -- the old helper families are gone or delegate -----------------------------------------

def test_the_old_helpers_are_gone():
    assert not hasattr(_validation, "check_positive_int")
    assert not hasattr(_shapes, "as_pair") and not hasattr(_shapes, "_check_range")
    assert not any(hasattr(optim, name) for name in ("_check_rate", "_check_eps", "_check_fraction"))
    import cyconv.training

    assert "positive int" not in inspect.getsource(cyconv.training.Trainer.__init__)


def test_the_remaining_helpers_delegate():
    inner = PARAMS["n_threads"].inner
    assert _threads._check_count.__self__ is inner and _threads._check_count.__func__ is \
        type(inner).check
    assert _shapes.padding_keyword.__self__ is PARAMS["padding"]
    for helper in (_shapes.check_rounding, _shapes.normalize_padding,
                   _shapes.validate_window_options, functional.check_avg_options,
                   functional.check_algorithm):
        source = inspect.getsource(helper)
        assert "isinstance(" not in source and "numbers." not in source, helper.__name__
    from cyconv import __main__ as cli

    for parser in (cli._positive_int, cli._nonzero_int, cli._positive_float):
        assert parser.__code__ is pv.argparse_type(PARAMS["epochs"], int, "").__code__


def test_no_module_words_a_declared_check_itself():
    """The messages of the declared checks are written in one module only."""
    fragments = ("must be a positive int", "must be an int or a pair", "must be a bool",
                 "must be in [0, 1)", "must be a positive number", "must be a finite number",
                 "must be an int or None", "in every dimension", "is not a thread count;",
                 "bool) or not isinstance")
    package = Path(cyconv.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "_param_validation.py":
            continue
        text = path.read_text(encoding="utf-8")
        found = [f for f in fragments if f in text]
        assert not found, (path.name, found)


def test_cli_types_keep_their_messages():
    import argparse

    from cyconv import __main__ as cli

    assert cli._positive_int("3") == 3 and cli._nonzero_int("-1") == -1
    assert cli._positive_float("0.5") == 0.5
    for parse, text, message in [(cli._positive_int, "0", "expected a positive integer, got '0'"),
                                 (cli._positive_int, "x", "expected a positive integer, got 'x'"),
                                 (cli._nonzero_int, "0", "0 is not a thread count"),
                                 (cli._nonzero_int, "1.5", "expected an integer, got '1.5'"),
                                 (cli._positive_float, "inf", "expected a positive number"),
                                 (cli._positive_float, "nan", "expected a positive number"),
                                 (cli._positive_float, "-1", "expected a positive number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            parse(text)

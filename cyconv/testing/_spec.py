"""What the conformance checks share: the resolved layer spec and the helpers
that build instances, inputs and gradients for one example.

Private to :mod:`cyconv.testing`; its public piece,
:class:`CheckSkipped`, is re-exported by :mod:`cyconv.testing.checks`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import sys
import unittest
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .._registry import get_layer
from ..layers import Layer
from ._builtin_settings import BUILTIN_SETTINGS
from .gradcheck import spec_flag

DEFAULT_INPUT_SHAPE = (2, 5, 5)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


class CheckSkipped(unittest.SkipTest):
    """A check does not apply to a layer (pytest reports it as skipped)."""


_SPEC_ATTRS = ("check_init_kwargs", "check_input_shape", "check_cases", "check_shape_rule",
               "invalid_params")


@dataclass
class LayerSpec:
    """Everything the checks need to know about one layer."""

    cls: type
    label: str
    name: str
    backend: str
    template: object  # a Layer instance given by the user, or None
    init_kwargs: dict
    input_shape: tuple
    cases: object  # SearchStrategy of (kwargs, input_shape)
    shape_rule: object
    invalid_params: object
    has_params: bool
    shape_preserving: bool
    is_loss: bool
    stochastic: bool
    batch_coupled: bool
    randomize_params: bool
    reference_backend: str = "numpy"  # what check_matches_reference compares with


def resolve_spec(layer_or_name, backend=None, layer_kwargs=None, input_shape=None,
                 reference_backend="numpy"):
    """The :class:`LayerSpec` of a layer name, class or instance (a spec is returned as is).

    Spec attributes the class does not set come from the built-in settings
    (:mod:`cyconv.testing._builtin_settings`) for cyconv's own layers.
    """
    if isinstance(layer_or_name, LayerSpec):
        return layer_or_name
    template = None
    if isinstance(layer_or_name, str):
        cls = get_layer(layer_or_name, backend)
    elif isinstance(layer_or_name, type) and issubclass(layer_or_name, Layer):
        cls = layer_or_name
    elif isinstance(layer_or_name, Layer):
        template, cls = layer_or_name, type(layer_or_name)
    else:
        raise TypeError(f"expected a layer name, a cyconv.Layer subclass or instance, got "
                        f"{layer_or_name!r}")
    if cls.picks_backend():  # cyconv.Conv2D itself: the class registered for the backend
        cls = get_layer(cls.name, template.backend if template is not None else backend)
    name = cls.name or cls.__name__
    table = BUILTIN_SETTINGS.get(cls.name, {})
    attrs = {a: getattr(cls, a, None) for a in _SPEC_ATTRS}
    for a in _SPEC_ATTRS:
        if attrs[a] is None:
            attrs[a] = table.get(a)
    init_kwargs = dict(attrs["check_init_kwargs"] or {})
    shape = tuple(attrs["check_input_shape"] or DEFAULT_INPUT_SHAPE)
    cases = attrs["check_cases"]
    if cases is not None and not isinstance(cases, st.SearchStrategy):
        cases = cases()
    if layer_kwargs is not None or input_shape is not None or template is not None \
            or cases is None:
        if layer_kwargs is not None:
            init_kwargs = dict(layer_kwargs)
        if input_shape is not None:
            shape = tuple(input_shape)
        cases = st.just((init_kwargs, shape))
    backend_label = cls.backend if cls.backend is not None else "?"
    return LayerSpec(cls=cls, label=f"{name}[{backend_label}]", name=name, backend=cls.backend,
                     template=template, init_kwargs=init_kwargs, input_shape=shape, cases=cases,
                     shape_rule=attrs["check_shape_rule"],
                     invalid_params=attrs["invalid_params"],
                     has_params=bool(getattr(cls, "has_params", False)),
                     shape_preserving=bool(getattr(cls, "shape_preserving", False)),
                     is_loss=spec_flag(cls, "is_loss"), stochastic=spec_flag(cls, "stochastic"),
                     batch_coupled=spec_flag(cls, "batch_coupled"),
                     randomize_params=bool(getattr(cls, "check_randomize_params", True)),
                     reference_backend=reference_backend)


# -- helpers -----------------------------------------------------------------------

def skip(reason):
    """Stop the running check: it does not apply to this layer."""
    raise CheckSkipped(reason)


_expect_failure = contextvars.ContextVar("cyconv_testing_expect_failure", default=False)


@contextlib.contextmanager
def expecting_failure(flag):
    token = _expect_failure.set(bool(flag))
    try:
        yield
    finally:
        _expect_failure.reset(token)


def run_examples(strategy, body, max_examples):
    """Run ``body(example)`` under Hypothesis with a modest example budget.

    Inherits the loaded profile (``derandomize``, ...).  The failing example
    is reported without shrinking (fast failures) unless the environment sets
    ``CYCONV_TESTING_SHRINK=1``; expected failures never shrink.
    """
    n = max(1, min(max_examples, settings.default.max_examples))
    shrink = os.environ.get("CYCONV_TESTING_SHRINK", "") not in ("", "0") \
        and not _expect_failure.get()
    phases = [p for p in settings.default.phases if shrink or p is not Phase.shrink]

    @settings(max_examples=n, deadline=None, database=None, report_multiple_bugs=False,
              phases=phases,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(strategy)
    def run(example):
        body(*example)

    run()


def examples(spec, *, min_batch=1, max_batch=3, extra=None):
    parts = [spec.cases, st.integers(min_batch, max_batch), st.integers(0, 2 ** 32 - 1)]
    if extra is not None:
        parts.append(extra)
    return st.tuples(*parts)


class GlobalRandom:
    """Save NumPy's global random state, reseed it, restore on exit."""

    def __enter__(self):
        self.state = np.random.get_state()
        return self

    def reset(self):
        np.random.seed(12345)

    def __exit__(self, *exc):
        np.random.set_state(self.state)


def make_layer(spec, kwargs, input_shape, dtype, rng):
    """A built instance with random parameters of ``dtype``."""
    if spec.template is not None:
        layer = copy.deepcopy(spec.template)
    else:
        layer = spec.cls(**copy.deepcopy(kwargs))
    out = layer.build(tuple(input_shape), dtype=dtype, rng=int(rng.integers(2 ** 31)))
    for key, value in list(layer.params.items()):
        if spec.randomize_params:
            layer.params[key] = rng.uniform(-1, 1, np.shape(value)).astype(dtype)
        else:
            layer.params[key] = np.asarray(value).astype(dtype)
    return layer, out


def make_input(rng, shape, dtype):
    """Random permutation of well-separated values in about [-2, 2]: no ties, no zeros."""
    size = int(np.prod(shape))
    grid = ((np.arange(size) + 0.25) / max(size, 1)) * 2.0 - 1.0
    jitter = rng.uniform(-0.2, 0.2, size) / max(size, 1)
    values = rng.permutation(grid + jitter) * rng.uniform(0.5, 2.0)
    return values.reshape(shape).astype(dtype)


def make_target(spec, rng, x):
    if not spec.is_loss:
        return None
    return rng.integers(0, x.shape[1], size=x.shape[0])


def make_example(spec, kwargs, shape, n, seed, dtype):
    """One drawn example: ``(rng, layer, x, t)``, the seeded generator, a built
    layer, an input batch of ``n`` and the targets (None unless a loss layer),
    drawn from ``rng`` in that order."""
    rng = np.random.default_rng(seed)
    layer, _ = make_layer(spec, kwargs, shape, dtype, rng)
    x = make_input(rng, (n,) + tuple(shape), dtype)
    return rng, layer, x, make_target(spec, rng, x)


def make_dout(spec, rng, y, dtype):
    if spec.is_loss:
        return float(rng.uniform(0.5, 2.0))
    return rng.uniform(-1, 1, np.shape(y)).astype(dtype)


def call_forward(spec, layer, x, t, train):
    if spec.is_loss:
        return layer.forward(x, t, train=train)
    return layer.forward(x, train=train)


def run_copy(spec, proto, x, t, dout, train, rand=None):
    """Forward and backward on a deep copy of ``proto``: (y, dx, grads)."""
    layer = copy.deepcopy(proto)
    if rand is not None:
        rand.reset()
    y = call_forward(spec, layer, x, t, train)
    y = y if np.ndim(y) == 0 else np.array(y, copy=True)
    if dout is None:
        return y, None, {}
    dx = layer.backward(dout)
    grads = {k: np.array(layer.grads[k], copy=True) for k in layer.params if k in layer.grads}
    return y, np.array(dx, copy=True), grads


def run_with_random_dout(spec, proto, x, t, train, rand, rng, dtype):
    """Forward once for the output's shape, draw ``dout`` for it, then forward and backward.

    Returns
    -------
    dout, (y, dx, grads)
        ``dout`` and :func:`run_copy`'s results with it.
    """
    y = run_copy(spec, proto, x, t, None, train, rand)[0]
    dout = make_dout(spec, rng, y, dtype)
    return dout, run_copy(spec, proto, x, t, dout, train, rand)


def tolerance(dtype, strict=False):
    if np.dtype(dtype) == F32:
        return (1e-4, 1e-5) if not strict else (1e-5, 1e-6)
    return (1e-9, 1e-11) if not strict else (1e-11, 1e-13)


def assert_close(actual, expected, dtype, what, strict=False):
    rtol, atol = tolerance(dtype, strict)
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale,
                               err_msg=what)


def describe_example(spec, kwargs, shape, n):
    """Where a failure happened: layer, constructor arguments and input shape."""
    kw = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) if kwargs else ""
    return f"{spec.label} with ({kw}) on input {(n,) + tuple(shape)}"


def under_pytest():
    """True when running inside a pytest session (a skip then becomes ``pytest.skip``)."""
    return "pytest" in sys.modules and "_pytest" in sys.modules


_PARAMETERS_DOC = """
    Parameters
    ----------
    layer : str, Layer subclass or Layer instance
        The layer to check (a name is looked up with ``backend``).
    backend : str, optional
        Backend for a layer name.
    reference_backend : str
        Backend whose implementation is the reference (used by
        ``check_matches_reference`` only).
    layer_kwargs : dict, optional
        Constructor arguments, instead of the layer's spec.
    input_shape : tuple, optional
        Per-sample input shape, instead of the layer's spec.

    Raises
    ------
    AssertionError
        The layer violates the property.
    CheckSkipped
        The check does not apply (under pytest: ``pytest.skip``).
"""


def layer_check(run):
    """Give ``run(spec)`` the public signature shared by every check.

    The public function resolves its arguments to a spec and runs ``run``;
    :func:`cyconv.testing.check_layer` resolves a layer once and calls
    ``check.run(spec)`` for each check.
    """
    def check(layer, *, backend=None, reference_backend="numpy", layer_kwargs=None,
              input_shape=None):
        spec = resolve_spec(layer, backend, layer_kwargs, input_shape, reference_backend)
        try:
            run(spec)
        except CheckSkipped as exc:
            if under_pytest():
                import pytest

                pytest.skip(str(exc))
            raise

    check.__name__ = check.__qualname__ = run.__name__
    check.__module__ = run.__module__
    check.__doc__ = run.__doc__.rstrip() + "\n" + _PARAMETERS_DOC
    check.run = run
    return check

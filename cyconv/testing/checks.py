"""The layer conformance kit: property checks every cyconv layer should pass.

:func:`check_layer` runs the checks below on one layer (built-in or plugin,
by name, class or instance) and returns a report;
:func:`parametrize_with_checks` turns them into one pytest test per
(layer, check).  Each check is Hypothesis-driven: it draws layer
configurations, batch sizes and seeds with an explicit, modest
``max_examples`` (capped by the loaded profile's ``max_examples``) and
inherits the rest of the loaded profile (``derandomize`` included).  A
failing example is reported as found, without shrinking, unless
``CYCONV_TESTING_SHRINK=1`` is set in the environment.

Checks
------
check_output_shape
    ``forward(x).shape == (N,) + layer.output_shape(s)`` (and ``build``'s
    return value, the layer's shape rule when known, ``s`` itself for
    ``shape_preserving`` layers); ``dx`` has the shape of ``x`` and every
    gradient the shape of its parameter.  Loss layers return a scalar.
check_matches_reference
    Forward and backward (``dx`` and every parameter gradient) agree with the
    same layer name under ``reference_backend`` (same parameters), float32
    and float64.  Skipped when the layer *is* the reference.
check_gradients
    :func:`cyconv.testing.layer_gradcheck` in float64, one thread: the full
    Jacobian on small problems, random directions on larger ones; with
    ``train=True``, and also ``train=False`` for ``stochastic`` or
    ``batch_coupled`` layers.
check_backward_params
    ``backward_params(dout)`` (what a network runs on its first layer, whose
    input needs no gradient) returns None and leaves the same ``grads`` as
    ``backward(dout)``.
check_dtype_preserved
    float32 in, float32 out (and ``dx``, gradients); same for float64.
check_readonly_noncontiguous_inputs
    Read-only, non-contiguous (strided, Fortran-ordered, reversed) ``x``,
    ``dout`` and targets work and give the contiguous result.
check_inputs_not_mutated
    ``forward``/``backward`` leave ``x``, ``dout``, targets and the
    parameters untouched.
check_batch_subset_invariance
    Running a subset of the batch gives that subset of the outputs and of
    ``dx``.
check_batch_order_invariance
    Permuting the batch permutes outputs and ``dx`` and leaves parameter
    gradients (and a loss) unchanged.
check_thread_invariance
    ``cyconv.set_num_threads(1)``, ``2`` and ``4`` give bitwise identical
    results.
check_invalid_parameters_raise
    Every constructor-argument set in ``invalid_params`` raises ValueError or
    TypeError (in the constructor, or at the latest in ``build``/``forward``).

Layer spec attributes
---------------------
A layer class describes how to test it with class attributes (all optional;
read with defaults, and for the ten built-in layers filled in from an
internal table when absent):

has_params : bool
    (:class:`cyconv.Layer`) The layer has trainable ``params``.
shape_preserving : bool
    (:class:`cyconv.Layer`) ``output_shape(s) == s``.
check_init_kwargs : dict
    Keyword arguments constructing a small instance, e.g.
    ``{"out_channels": 3, "kernel_size": 3}``.  Default ``{}``.
check_input_shape : tuple
    Per-sample input shape (no batch axis), e.g. ``(2, 5, 5)`` or ``(6,)``.
    Default ``(2, 5, 5)``.
check_cases : SearchStrategy or callable returning one
    Strategy of ``(init_kwargs, input_shape)`` pairs, for checks over many
    configurations (the built-in conv/pool layers draw their geometries from
    :mod:`cyconv.testing.strategies`).  Default: the single pair above.
check_shape_rule : callable
    ``rule(init_kwargs, input_shape) -> per-sample output shape``, an
    independent statement of the shape law.
is_loss : bool
    ``forward(x, t, train=...)`` returns a scalar loss for integer labels
    ``t`` of shape (N,) in ``[0, x.shape[1])``; ``backward(dout=1.0)``
    returns ``dx``.
stochastic : bool
    ``forward(x, train=True)`` draws random numbers (``Dropout``).  Checks
    comparing separate forward passes deep-copy one built instance, so a
    generator held by the layer replays, and reset NumPy's global random
    state; the batch checks and the reference comparison use ``train=False``.
batch_coupled : bool
    In training, a sample's output depends on the rest of the batch
    (``BatchNorm``): the batch-subset check uses ``train=False``.
invalid_params : list of dict
    Constructor-argument sets that must be rejected; each is merged over
    ``check_init_kwargs`` (a value of :data:`MISSING` deletes that key).
check_randomize_params : bool
    Replace built parameters by uniform values in [-1, 1] (default True), so
    that e.g. ``gamma = 1, beta = 0`` cannot hide a bug.

Parameters are created with ``layer.build(input_shape, dtype=..., rng=...)``.
Inputs are random permutations of well-separated values (no ties, no exact
zeros), so max pooling and ReLU have well-defined gradients.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import os
import sys
import unittest
from dataclasses import dataclass, field

import numpy as np

try:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is a test extra
    raise ImportError("cyconv.testing.checks needs Hypothesis: "
                      "pip install 'cyconv[test]' (or pip install hypothesis)") from exc

from .. import _threads
from .._registry import BackendError, LayerNotFoundError, get_layer
from .._shapes import conv_output_size, pool_output_size
from .._threads import set_num_threads
from ..layers import Layer
from . import strategies as cst
from .gradcheck import layer_gradcheck, spec_flag

__all__ = [
    "CHECK_NAMES",
    "MISSING",
    "CheckSkipped",
    "CheckResult",
    "LayerCheckReport",
    "check_layer",
    "parametrize_with_checks",
    "check_output_shape",
    "check_matches_reference",
    "check_gradients",
    "check_backward_params",
    "check_dtype_preserved",
    "check_readonly_noncontiguous_inputs",
    "check_inputs_not_mutated",
    "check_batch_subset_invariance",
    "check_batch_order_invariance",
    "check_thread_invariance",
    "check_invalid_parameters_raise",
]


class _Missing:
    def __repr__(self):
        return "MISSING"


#: Value in an ``invalid_params`` entry that removes the key from the base kwargs.
MISSING = _Missing()

_DEFAULT_INPUT_SHAPE = (2, 5, 5)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


class CheckSkipped(unittest.SkipTest):
    """A check does not apply to a layer (pytest reports it as skipped)."""


# -- built-in layer table -----------------------------------------------------------

def _conv_cases():
    return cst.conv_cases(max_batch=1, max_channels_per_group=2, max_groups=2,
                          dtypes=(np.float64,), max_kernel=3, max_stride=2, max_dilation=2,
                          max_size=6, max_padding=1).map(
        lambda c: (c.layer_kwargs(), (c.in_channels,) + tuple(c.geometry.input_size)))


def _pool_cases(kind):
    @st.composite
    def cases(draw):
        g = draw(cst.pool_geometries(kind, max_kernel=3, max_stride=3, max_size=7))
        kw = g.layer_kwargs()
        if kind == "avg":
            kw["count_include_pad"] = draw(st.booleans())
            kw["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 4)))
        return kw, (draw(st.integers(1, 3)),) + tuple(g.input_size)
    return cases()


def _small_shapes():
    return st.one_of(st.tuples(st.integers(1, 6)),
                     st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))


def _conv_rule(kw, s):
    return (kw["out_channels"],) + conv_output_size(
        s[1:], kw["kernel_size"], kw.get("stride", 1), kw.get("padding", 0),
        kw.get("dilation", 1), kw.get("rounding", "exact"))


def _pool_rule(kw, s):
    return (s[0],) + pool_output_size(s[1:], kw["kernel_size"], kw.get("stride"),
                                      kw.get("padding", 0), kw.get("dilation", 1),
                                      kw.get("rounding", "exact"), kw.get("ceil_mode", False))


_BUILTIN = {
    "Conv2D": dict(
        check_init_kwargs={"out_channels": 3, "kernel_size": 3, "padding": 1},
        check_input_shape=(2, 5, 5), check_cases=_conv_cases, check_shape_rule=_conv_rule,
        invalid_params=[{"out_channels": 0}, {"out_channels": 2.5}, {"kernel_size": 0},
                        {"kernel_size": (3, -1)}, {"groups": 0}, {"groups": 2},
                        {"rounding": "round"}, {"stride": 0}, {"dilation": -1},
                        {"padding": -1}, {"padding": "full"}, {"weight_init": "zeros"},
                        {"kernel_size": MISSING}]),
    "MaxPool2D": dict(
        check_init_kwargs={"kernel_size": 2}, check_input_shape=(2, 4, 4),
        check_cases=lambda: _pool_cases("max"), check_shape_rule=_pool_rule,
        invalid_params=[{"kernel_size": 0}, {"kernel_size": 1.5}, {"stride": 0},
                        {"padding": 2}, {"dilation": 0}, {"rounding": "nearest"},
                        {"rounding": "floor", "ceil_mode": True}]),
    "AvgPool2D": dict(
        check_init_kwargs={"kernel_size": 2}, check_input_shape=(2, 4, 4),
        check_cases=lambda: _pool_cases("avg"), check_shape_rule=_pool_rule,
        invalid_params=[{"kernel_size": 0}, {"stride": -1}, {"padding": 2},
                        {"rounding": "up"}, {"count_include_pad": "yes"},
                        {"divisor_override": 0}, {"divisor_override": 1.5}]),
    "Affine": dict(
        check_init_kwargs={"out_features": 3}, check_input_shape=(2, 3, 3),
        check_cases=lambda: st.tuples(
            st.fixed_dictionaries({"out_features": st.integers(1, 4),
                                   "bias": st.booleans()}), _small_shapes()),
        check_shape_rule=lambda kw, s: (kw["out_features"],),
        invalid_params=[{"out_features": 0}, {"out_features": MISSING},
                        {"out_features": "3"}, {"weight_init": -1.0}]),
    "ReLU": dict(check_input_shape=(2, 4, 4),
                 check_cases=lambda: st.tuples(st.just({}), _small_shapes())),
    "Sigmoid": dict(check_input_shape=(2, 4, 4),
                    check_cases=lambda: st.tuples(st.just({}), _small_shapes())),
    "SoftmaxWithLoss": dict(
        check_input_shape=(5,),
        check_cases=lambda: st.tuples(st.just({}), st.tuples(st.integers(2, 6)))),
    "Dropout": dict(
        check_init_kwargs={"ratio": 0.5, "rng": 0}, check_input_shape=(2, 4, 4),
        check_cases=lambda: st.tuples(
            st.fixed_dictionaries({"ratio": st.sampled_from([0.0, 0.25, 0.5]),
                                   "rng": st.integers(0, 2 ** 16)}), _small_shapes()),
        invalid_params=[{"ratio": 1.0}, {"ratio": -0.1}, {"ratio": "half"}]),
    "BatchNorm": dict(
        check_input_shape=(2, 3, 3),
        check_cases=lambda: st.tuples(
            st.fixed_dictionaries({}, optional={"momentum": st.sampled_from([0.0, 0.5, 0.9])}),
            _small_shapes()),
        invalid_params=[{"momentum": 1.0}, {"momentum": -0.5}, {"eps": 0}, {"eps": -1e-5},
                        {"num_features": 0}]),
    "Flatten": dict(check_input_shape=(2, 3, 3),
                    check_cases=lambda: st.tuples(st.just({}), _small_shapes()),
                    check_shape_rule=lambda kw, s: (int(np.prod(s)),)),
}

_SPEC_ATTRS = ("check_init_kwargs", "check_input_shape", "check_cases", "check_shape_rule",
               "invalid_params")


@dataclass
class _Spec:
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


def _resolve(layer_or_name, backend=None, layer_kwargs=None, input_shape=None):
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
    table = _BUILTIN.get(cls.name, {})
    attrs = {a: getattr(cls, a, None) for a in _SPEC_ATTRS}
    for a in _SPEC_ATTRS:
        if attrs[a] is None:
            attrs[a] = table.get(a)
    init_kwargs = dict(attrs["check_init_kwargs"] or {})
    shape = tuple(attrs["check_input_shape"] or _DEFAULT_INPUT_SHAPE)
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
    return _Spec(cls=cls, label=f"{name}[{backend_label}]", name=name, backend=cls.backend,
                 template=template, init_kwargs=init_kwargs, input_shape=shape, cases=cases,
                 shape_rule=attrs["check_shape_rule"],
                 invalid_params=attrs["invalid_params"],
                 has_params=bool(getattr(cls, "has_params", False)),
                 shape_preserving=bool(getattr(cls, "shape_preserving", False)),
                 is_loss=spec_flag(cls, "is_loss"), stochastic=spec_flag(cls, "stochastic"),
                 batch_coupled=spec_flag(cls, "batch_coupled"),
                 randomize_params=bool(getattr(cls, "check_randomize_params", True)))


# -- helpers -----------------------------------------------------------------------

def _skip(reason):
    raise CheckSkipped(reason)


_expect_failure = contextvars.ContextVar("cyconv_testing_expect_failure", default=False)


@contextlib.contextmanager
def _expecting_failure(flag):
    token = _expect_failure.set(bool(flag))
    try:
        yield
    finally:
        _expect_failure.reset(token)


def _run_examples(strategy, body, max_examples):
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


def _examples(spec, *, min_batch=1, max_batch=3, extra=None):
    parts = [spec.cases, st.integers(min_batch, max_batch), st.integers(0, 2 ** 32 - 1)]
    if extra is not None:
        parts.append(extra)
    return st.tuples(*parts)


class _GlobalRandom:
    """Save NumPy's global random state, reseed it, restore on exit."""

    def __enter__(self):
        self.state = np.random.get_state()
        return self

    def reset(self):
        np.random.seed(12345)

    def __exit__(self, *exc):
        np.random.set_state(self.state)


def _make_layer(spec, kwargs, input_shape, dtype, rng):
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


def _make_input(rng, shape, dtype):
    """Random permutation of well-separated values in about [-2, 2]: no ties, no zeros."""
    size = int(np.prod(shape))
    grid = ((np.arange(size) + 0.25) / max(size, 1)) * 2.0 - 1.0
    jitter = rng.uniform(-0.2, 0.2, size) / max(size, 1)
    values = rng.permutation(grid + jitter) * rng.uniform(0.5, 2.0)
    return values.reshape(shape).astype(dtype)


def _make_target(spec, rng, x):
    if not spec.is_loss:
        return None
    return rng.integers(0, x.shape[1], size=x.shape[0])


def _make_dout(spec, rng, y, dtype):
    if spec.is_loss:
        return float(rng.uniform(0.5, 2.0))
    return rng.uniform(-1, 1, np.shape(y)).astype(dtype)


def _forward(spec, layer, x, t, train):
    if spec.is_loss:
        return layer.forward(x, t, train=train)
    return layer.forward(x, train=train)


def _run(spec, proto, x, t, dout, train, rand=None):
    """Forward and backward on a deep copy of ``proto``: (y, dx, grads)."""
    layer = copy.deepcopy(proto)
    if rand is not None:
        rand.reset()
    y = _forward(spec, layer, x, t, train)
    y = y if np.ndim(y) == 0 else np.array(y, copy=True)
    if dout is None:
        return y, None, {}
    dx = layer.backward(dout)
    grads = {k: np.array(layer.grads[k], copy=True) for k in layer.params if k in layer.grads}
    return y, np.array(dx, copy=True), grads


def _tolerance(dtype, strict=False):
    if np.dtype(dtype) == _F32:
        return (1e-4, 1e-5) if not strict else (1e-5, 1e-6)
    return (1e-9, 1e-11) if not strict else (1e-11, 1e-13)


def _close(actual, expected, dtype, what, strict=False):
    rtol, atol = _tolerance(dtype, strict)
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale,
                               err_msg=what)


def _where(spec, kwargs, shape, n):
    kw = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) if kwargs else ""
    return f"{spec.label} with ({kw}) on input {(n,) + tuple(shape)}"


# -- the checks --------------------------------------------------------------------

def _check_output_shape(spec):
    def body(kwargs, shape, n, seed):
        rng = np.random.default_rng(seed)
        layer, built = _make_layer(spec, kwargs, shape, _F64, rng)
        where = _where(spec, kwargs, shape, n)
        declared = tuple(layer.output_shape(tuple(shape)))
        x = _make_input(rng, (n,) + tuple(shape), _F64)
        t = _make_target(spec, rng, x)
        y = _forward(spec, layer, x, t, True)
        if spec.is_loss:
            assert np.ndim(y) == 0, f"{where}: a loss layer must return a scalar, got shape " \
                                    f"{np.shape(y)}"
            assert np.isfinite(y), f"{where}: loss is {y}"
        else:
            assert y.shape == (n,) + declared, (
                f"{where}: forward returned shape {y.shape}, output_shape() says "
                f"{(n,) + declared}")
            if built is not None:
                assert tuple(built) == declared, (
                    f"{where}: build() returned {tuple(built)}, output_shape() {declared}")
            if spec.shape_rule is not None and spec.template is None:
                rule = tuple(spec.shape_rule(kwargs, tuple(shape)))
                assert declared == rule, (f"{where}: output_shape() is {declared}, the shape "
                                          f"rule gives {rule}")
            if spec.shape_preserving:
                assert declared == tuple(shape), (
                    f"{where}: shape_preserving layer maps {tuple(shape)} to {declared}")
        dx = layer.backward(_make_dout(spec, rng, y, _F64))
        assert np.shape(dx) == x.shape, f"{where}: backward returned dx of shape " \
                                        f"{np.shape(dx)}, x has {x.shape}"
        for k, p in layer.params.items():
            assert k in layer.grads, f"{where}: backward did not set grads[{k!r}]"
            assert np.shape(layer.grads[k]) == np.shape(p), (
                f"{where}: grads[{k!r}] has shape {np.shape(layer.grads[k])}, params[{k!r}] "
                f"has {np.shape(p)}")

    _run_examples(_examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 10)


def _reference_class(spec, reference_backend):
    if spec.backend == reference_backend:
        _skip(f"{spec.label} is the reference implementation ({reference_backend!r})")
    if spec.cls.name is None:
        _skip(f"{spec.label} is not registered under a name, so it has no reference")
    try:
        ref_cls = get_layer(spec.cls.name, reference_backend)
    except (BackendError, LayerNotFoundError) as exc:
        _skip(f"no reference implementation: {exc}")
    if ref_cls is spec.cls:
        _skip(f"{spec.label} is the reference implementation ({reference_backend!r})")
    return ref_cls


def _check_matches_reference(spec, reference_backend="numpy"):
    ref_cls = _reference_class(spec, reference_backend)
    train = not spec.stochastic

    def body(kwargs, shape, n, seed, dtype):
        rng = np.random.default_rng(seed)
        layer, _ = _make_layer(spec, kwargs, shape, dtype, rng)
        if spec.template is not None:
            ref = ref_cls.__new__(ref_cls)
            ref.__dict__.update(copy.deepcopy(spec.template.__dict__))
        else:
            ref = ref_cls(**copy.deepcopy(kwargs))
        ref.build(tuple(shape), dtype=dtype, rng=0)
        for k, v in layer.params.items():
            ref.params[k] = v.copy()
        x = _make_input(rng, (n,) + tuple(shape), dtype)
        t = _make_target(spec, rng, x)
        where = _where(spec, kwargs, shape, n) + f", {dtype}, vs {ref_cls.backend!r}"
        with _GlobalRandom() as rand:
            y_ref = _run(spec, ref, x, t, None, train, rand)[0]
            dout = _make_dout(spec, rng, y_ref, dtype)
            y, dx, grads = _run(spec, layer, x, t, dout, train, rand)
            y_ref, dx_ref, grads_ref = _run(spec, ref, x, t, dout, train, rand)
        _close(y, y_ref, dtype, f"{where}: forward differs")
        _close(dx, dx_ref, dtype, f"{where}: dx differs")
        assert set(grads) == set(grads_ref), f"{where}: gradient keys {sorted(grads)} vs " \
                                             f"{sorted(grads_ref)}"
        for k in grads:
            _close(grads[k], grads_ref[k], dtype, f"{where}: grads[{k!r}] differs")

    _run_examples(_examples(spec, extra=st.sampled_from([_F64, _F32])),
                  lambda c, n, s, d: body(c[0], c[1], n, s, d), 10)


def _check_gradients(spec):
    # train=False differs from train=True only for stochastic / batch-coupled layers
    modes = (True, False) if (spec.stochastic or spec.batch_coupled) else (True,)

    def body(kwargs, shape, n, seed):
        rng = np.random.default_rng(seed)
        layer, _ = _make_layer(spec, kwargs, shape, _F64, rng)
        x = _make_input(rng, (n,) + tuple(shape), _F64)
        t = _make_target(spec, rng, x)
        previous = _threads._global_setting
        set_num_threads(1)  # correctness does not depend on it; thread checks are separate
        try:
            for train in modes:
                try:
                    layer_gradcheck(layer, x, t=t, train=train, rtol=1e-5, atol=1e-6,
                                    seed=seed % 2 ** 31, max_full_size=200, n_directions=3)
                except AssertionError as exc:
                    raise AssertionError(f"{_where(spec, kwargs, shape, n)}, train={train}: "
                                         f"{exc}") from None
        finally:
            set_num_threads(previous)

    _run_examples(_examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 5)


def _check_dtype_preserved(spec):
    def body(kwargs, shape, n, seed):
        for dtype in (_F32, _F64):
            rng = np.random.default_rng(seed)
            layer, _ = _make_layer(spec, kwargs, shape, dtype, rng)
            x = _make_input(rng, (n,) + tuple(shape), dtype)
            t = _make_target(spec, rng, x)
            where = _where(spec, kwargs, shape, n) + f", {dtype}"
            y = _forward(spec, layer, x, t, True)
            if not spec.is_loss:
                assert y.dtype == dtype, f"{where}: forward returned {y.dtype}"
            dx = layer.backward(_make_dout(spec, rng, y, dtype))
            assert np.asarray(dx).dtype == dtype, f"{where}: backward returned {dx.dtype}"
            for k, p in layer.params.items():
                assert np.asarray(p).dtype == dtype, f"{where}: params[{k!r}] became " \
                                                     f"{np.asarray(p).dtype}"
                assert np.asarray(layer.grads[k]).dtype == dtype, (
                    f"{where}: grads[{k!r}] has dtype {np.asarray(layer.grads[k]).dtype}")

    _run_examples(_examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 8)


def _awkward(a, layout):
    """A read-only, non-contiguous array equal to ``a``."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a
    if layout == "fortran" and a.ndim >= 2 and sum(d > 1 for d in a.shape) >= 2:
        out = np.asfortranarray(a)
    elif layout == "reversed":
        out = a[..., ::-1].copy()[..., ::-1]
    else:
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        out = buf[..., ::2]
        out[...] = a
    out = out.view()
    out.flags.writeable = False
    return out


def _check_readonly_noncontiguous_inputs(spec):
    train = True

    def body(kwargs, shape, n, seed, layout, dtype):
        rng = np.random.default_rng(seed)
        proto, _ = _make_layer(spec, kwargs, shape, dtype, rng)
        x = _make_input(rng, (n,) + tuple(shape), dtype)
        t = _make_target(spec, rng, x)
        where = _where(spec, kwargs, shape, n) + f", {dtype}, {layout} read-only inputs"
        with _GlobalRandom() as rand:
            y0 = _run(spec, proto, x, t, None, train, rand)[0]
            dout = _make_dout(spec, rng, y0, dtype)
            y, dx, grads = _run(spec, proto, x, t, dout, train, rand)
            xa, doa = _awkward(x, layout), _awkward(dout, layout)
            ta = None if t is None else _awkward(t, layout)
            try:
                y2, dx2, grads2 = _run(spec, proto, xa, ta, doa, train, rand)
            except Exception as exc:
                raise AssertionError(f"{where}: raised {type(exc).__name__}: {exc}") from exc
        _close(y2, y, dtype, f"{where}: forward differs from the contiguous result", True)
        _close(dx2, dx, dtype, f"{where}: dx differs from the contiguous result", True)
        for k in grads:
            _close(grads2[k], grads[k], dtype, f"{where}: grads[{k!r}] differs", True)

    layouts = st.sampled_from(["strided", "fortran", "reversed"])
    _run_examples(_examples(spec, extra=st.tuples(layouts, st.sampled_from([_F64, _F32]))),
                  lambda c, n, s, e: body(c[0], c[1], n, s, *e), 8)


def _check_inputs_not_mutated(spec):
    def body(kwargs, shape, n, seed, dtype):
        rng = np.random.default_rng(seed)
        layer, _ = _make_layer(spec, kwargs, shape, dtype, rng)
        x = _make_input(rng, (n,) + tuple(shape), dtype)
        t = _make_target(spec, rng, x)
        where = _where(spec, kwargs, shape, n) + f", {dtype}"
        x0 = x.copy()
        t0 = None if t is None else t.copy()
        params0 = {k: np.array(v, copy=True) for k, v in layer.params.items()}
        y = _forward(spec, layer, x, t, True)
        dout = _make_dout(spec, rng, y, dtype)
        dout0 = copy.deepcopy(dout)
        layer.backward(dout)
        assert np.array_equal(x, x0), f"{where}: forward/backward modified x"
        if t is not None:
            assert np.array_equal(t, t0), f"{where}: forward/backward modified the targets"
        assert np.array_equal(dout, dout0), f"{where}: backward modified dout"
        for k, v in params0.items():
            assert np.array_equal(layer.params[k], v), (
                f"{where}: forward/backward modified params[{k!r}]")

    _run_examples(_examples(spec, extra=st.sampled_from([_F64, _F32])),
                  lambda c, n, s, d: body(c[0], c[1], n, s, d), 8)


def _check_backward_params(spec):
    train = not (spec.stochastic or spec.batch_coupled)

    def body(kwargs, shape, n, seed):
        rng = np.random.default_rng(seed)
        proto, _ = _make_layer(spec, kwargs, shape, _F64, rng)
        x = _make_input(rng, (n,) + tuple(shape), _F64)
        t = _make_target(spec, rng, x)
        where = _where(spec, kwargs, shape, n)
        with _GlobalRandom() as rand:
            y = _run(spec, proto, x, t, None, train, rand)[0]
            dout = _make_dout(spec, rng, y, _F64)
            _, _, grads = _run(spec, proto, x, t, dout, train, rand)
            layer = copy.deepcopy(proto)
            rand.reset()
            _forward(spec, layer, x, t, train)
            returned = layer.backward_params(np.copy(dout) if np.ndim(dout) else dout)
        assert returned is None, f"{where}: backward_params returned {type(returned).__name__}, " \
                                 f"not None"
        for k in proto.params:
            assert k in layer.grads, f"{where}: backward_params did not set grads[{k!r}]"
            _close(layer.grads[k], grads[k], _F64,
                   f"{where}: grads[{k!r}] from backward_params differs from backward's",
                   strict=True)

    _run_examples(_examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 5)


def _check_batch_subset_invariance(spec):
    if spec.is_loss:
        _skip(f"{spec.label} is a loss layer: its output reduces over the batch")
    train = not (spec.stochastic or spec.batch_coupled)

    def body(kwargs, shape, n, seed):
        rng = np.random.default_rng(seed)
        proto, _ = _make_layer(spec, kwargs, shape, _F64, rng)
        x = _make_input(rng, (n,) + tuple(shape), _F64)
        size = int(rng.integers(1, n))
        idx = np.sort(rng.choice(n, size=size, replace=False))
        where = _where(spec, kwargs, shape, n) + f", subset {idx.tolist()}, train={train}"
        with _GlobalRandom() as rand:
            y = _run(spec, proto, x, None, None, train, rand)[0]
            dout = _make_dout(spec, rng, y, _F64)
            y, dx, _ = _run(spec, proto, x, None, dout, train, rand)
            ys, dxs, _ = _run(spec, proto, x[idx], None, dout[idx], train, rand)
        _close(ys, y[idx], _F64, f"{where}: forward on the subset differs")
        _close(dxs, dx[idx], _F64, f"{where}: dx on the subset differs")

    _run_examples(_examples(spec, min_batch=2, max_batch=4),
                  lambda c, n, s: body(c[0], c[1], n, s), 8)


def _check_batch_order_invariance(spec):
    train = not spec.stochastic

    def body(kwargs, shape, n, seed):
        rng = np.random.default_rng(seed)
        proto, _ = _make_layer(spec, kwargs, shape, _F64, rng)
        x = _make_input(rng, (n,) + tuple(shape), _F64)
        t = _make_target(spec, rng, x)
        perm = rng.permutation(n)
        if n > 1 and np.array_equal(perm, np.arange(n)):
            perm = np.roll(perm, 1)
        where = _where(spec, kwargs, shape, n) + f", permutation {perm.tolist()}"
        with _GlobalRandom() as rand:
            y = _run(spec, proto, x, t, None, train, rand)[0]
            dout = _make_dout(spec, rng, y, _F64)
            y, dx, grads = _run(spec, proto, x, t, dout, train, rand)
            dout_p = dout if spec.is_loss else dout[perm]
            yp, dxp, gradsp = _run(spec, proto, x[perm], None if t is None else t[perm],
                                   dout_p, train, rand)
        _close(yp, y if spec.is_loss else y[perm], _F64, f"{where}: forward not permuted")
        _close(dxp, dx[perm], _F64, f"{where}: dx not permuted")
        for k in grads:
            _close(gradsp[k], grads[k], _F64, f"{where}: grads[{k!r}] changed")

    _run_examples(_examples(spec, min_batch=2, max_batch=4),
                  lambda c, n, s: body(c[0], c[1], n, s), 8)


def _check_thread_invariance(spec):
    def body(kwargs, shape, n, seed, dtype):
        rng = np.random.default_rng(seed)
        proto, _ = _make_layer(spec, kwargs, shape, dtype, rng)
        x = _make_input(rng, (n,) + tuple(shape), dtype)
        t = _make_target(spec, rng, x)
        where = _where(spec, kwargs, shape, n) + f", {dtype}"
        previous = _threads._global_setting
        results = {}
        try:
            with _GlobalRandom() as rand:
                dout = None
                for threads in (1, 2, 4):
                    set_num_threads(threads)
                    if dout is None:
                        dout = _make_dout(spec, rng, _run(spec, proto, x, t, None, True,
                                                          rand)[0], dtype)
                    results[threads] = _run(spec, proto, x, t, dout, True, rand)
        finally:
            set_num_threads(previous)
        y1, dx1, g1 = results[1]
        for threads in (2, 4):
            y, dx, g = results[threads]
            assert np.array_equal(y, y1), (
                f"{where}: forward with {threads} threads differs from 1 thread (max abs "
                f"difference {np.max(np.abs(np.asarray(y) - y1)):.3g})")
            assert np.array_equal(dx, dx1), (
                f"{where}: dx with {threads} threads differs from 1 thread (max abs "
                f"difference {np.max(np.abs(dx - dx1)):.3g})")
            for k in g1:
                assert np.array_equal(g[k], g1[k]), (
                    f"{where}: grads[{k!r}] with {threads} threads differs from 1 thread")

    _run_examples(_examples(spec, extra=st.sampled_from([_F64, _F32])),
                  lambda c, n, s, d: body(c[0], c[1], n, s, d), 6)


def _check_invalid_parameters_raise(spec):
    if spec.template is not None:
        _skip("checking constructor arguments needs a layer class or name, not an instance")
    if not spec.invalid_params:
        _skip(f"{spec.label} declares no invalid_params")
    problems = []
    for bad in spec.invalid_params:
        kwargs = {**spec.init_kwargs, **bad}
        kwargs = {k: v for k, v in kwargs.items() if v is not MISSING}
        call = f"{spec.cls.__name__}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
        try:
            layer = spec.cls(**kwargs)
        except (ValueError, TypeError):
            continue
        except Exception as exc:
            problems.append(f"{call} raised {type(exc).__name__} (expected ValueError or "
                            f"TypeError): {exc}")
            continue
        try:  # accepted by the constructor: must fail at the latest on first use
            layer.build(spec.input_shape, dtype=_F64, rng=0)
            x = _make_input(np.random.default_rng(0), (2,) + spec.input_shape, _F64)
            t = _make_target(spec, np.random.default_rng(0), x)
            _forward(spec, layer, x, t, True)
        except (ValueError, TypeError):
            continue
        except Exception as exc:
            problems.append(f"{call} then build/forward raised {type(exc).__name__} "
                            f"(expected ValueError or TypeError): {exc}")
            continue
        problems.append(f"{call} was accepted: the constructor, build and forward all "
                        f"succeeded")
    assert not problems, f"{spec.label}: invalid parameters not rejected:\n  " + \
        "\n  ".join(problems)


_CHECKS = {
    "check_output_shape": _check_output_shape,
    "check_matches_reference": _check_matches_reference,
    "check_gradients": _check_gradients,
    "check_backward_params": _check_backward_params,
    "check_dtype_preserved": _check_dtype_preserved,
    "check_readonly_noncontiguous_inputs": _check_readonly_noncontiguous_inputs,
    "check_inputs_not_mutated": _check_inputs_not_mutated,
    "check_batch_subset_invariance": _check_batch_subset_invariance,
    "check_batch_order_invariance": _check_batch_order_invariance,
    "check_thread_invariance": _check_thread_invariance,
    "check_invalid_parameters_raise": _check_invalid_parameters_raise,
}

#: Names of every check, in the order :func:`check_layer` runs them.
CHECK_NAMES = tuple(_CHECKS)


def _under_pytest():
    return "pytest" in sys.modules and "_pytest" in sys.modules


def _run_check(name, spec, reference_backend):
    fn = _CHECKS[name]
    if name == "check_matches_reference":
        return fn(spec, reference_backend)
    return fn(spec)


_SUMMARIES = {
    "check_output_shape": "Check that forward's output shape matches output_shape() and the "
                          "shape rule",
    "check_matches_reference": "Check forward and backward against the reference backend's "
                               "implementation",
    "check_gradients": "Check dx and every parameter gradient with numeric differences "
                       "(float64)",
    "check_backward_params": "Check that backward_params fills the grads backward fills "
                             "(the first layer of a network skips dx this way)",
    "check_dtype_preserved": "Check that float32 and float64 inputs keep their dtype",
    "check_readonly_noncontiguous_inputs": "Check read-only, non-contiguous inputs give the "
                                           "contiguous result",
    "check_inputs_not_mutated": "Check that forward/backward modify neither inputs nor "
                                "parameters",
    "check_batch_subset_invariance": "Check that a subset of the batch gives that subset of "
                                     "the results",
    "check_batch_order_invariance": "Check that permuting the batch permutes the results",
    "check_thread_invariance": "Check that 1, 2 and 4 threads give bitwise identical results",
    "check_invalid_parameters_raise": "Check that the declared invalid_params are rejected",
}


def _public_check(name):
    def check(layer, *, backend=None, reference_backend="numpy", layer_kwargs=None,
              input_shape=None):
        spec = _resolve(layer, backend, layer_kwargs, input_shape)
        try:
            _run_check(name, spec, reference_backend)
        except CheckSkipped as exc:
            if _under_pytest():
                import pytest

                pytest.skip(str(exc))
            raise

    summary = _SUMMARIES[name]
    check.__name__ = check.__qualname__ = name
    check.__doc__ = f"""{summary} (see :mod:`cyconv.testing.checks`).

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
    return check


check_output_shape = _public_check("check_output_shape")
check_matches_reference = _public_check("check_matches_reference")
check_gradients = _public_check("check_gradients")
check_backward_params = _public_check("check_backward_params")
check_dtype_preserved = _public_check("check_dtype_preserved")
check_readonly_noncontiguous_inputs = _public_check("check_readonly_noncontiguous_inputs")
check_inputs_not_mutated = _public_check("check_inputs_not_mutated")
check_batch_subset_invariance = _public_check("check_batch_subset_invariance")
check_batch_order_invariance = _public_check("check_batch_order_invariance")
check_thread_invariance = _public_check("check_thread_invariance")
check_invalid_parameters_raise = _public_check("check_invalid_parameters_raise")


# -- reports -----------------------------------------------------------------------

@dataclass
class CheckResult:
    """Outcome of one check.

    Attributes
    ----------
    name : str
    status : {"passed", "skipped", "failed", "xfailed", "xpassed"}
        ``xfailed``: failed as declared in ``expected_failed_checks``;
        ``xpassed``: declared as an expected failure but passed.
    message : str
        Skip reason, failure message, or the declared reason.
    """

    name: str
    status: str
    message: str = ""


@dataclass
class LayerCheckReport:
    """Results of :func:`check_layer`: a mapping check name -> :class:`CheckResult`.

    Attributes
    ----------
    layer : str
        Label such as ``"Conv2D[cython]"``.
    results : dict
    """

    layer: str
    results: dict = field(default_factory=dict)

    def __getitem__(self, name):
        return self.results[name]

    def __iter__(self):
        return iter(self.results)

    def __len__(self):
        return len(self.results)

    def items(self):
        """(check name, :class:`CheckResult`) pairs."""
        return self.results.items()

    def status(self):
        """Mapping check name -> status string.

        Returns
        -------
        dict
        """
        return {k: r.status for k, r in self.results.items()}

    def with_status(self, *statuses):
        """Names of the checks whose status is one of ``statuses``.

        Returns
        -------
        list of str
        """
        return [k for k, r in self.results.items() if r.status in statuses]

    @property
    def ok(self):
        """True when nothing failed and no expected failure passed."""
        return not self.with_status("failed", "xpassed")

    def __str__(self):
        lines = [f"cyconv.testing.check_layer report for {self.layer}:"]
        for name, r in self.results.items():
            msg = f": {r.message}" if r.message else ""
            if len(msg) > 400:
                msg = msg[:400] + " ..."
            lines.append(f"  {r.status.upper():8s} {name}{msg}")
        return "\n".join(lines)


def _check_expected(expected):
    expected = dict(expected or {})
    unknown = [k for k in expected if k not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown check names in expected_failed_checks: {unknown}; "
                         f"known: {list(CHECK_NAMES)}")
    return expected


def check_layer(layer_or_name, *, backend=None, reference_backend="numpy",
                expected_failed_checks=None, layer_kwargs=None, input_shape=None, checks=None):
    """Run the conformance checks on one layer.

    Parameters
    ----------
    layer_or_name : str, Layer subclass or Layer instance
        A registered name (looked up with ``backend`` via
        :func:`cyconv.get_layer`), a layer class, or a configured instance
        (then every check uses deep copies of it).
    backend : str, optional
        Backend for a layer name; None follows the preference order.
    reference_backend : str
        Implementation ``check_matches_reference`` compares with.
    expected_failed_checks : dict, optional
        ``{check_name: reason}``: checks known to fail.  They are run and
        reported as "xfailed"; one that passes is reported as "xpassed" and
        makes the call fail (remove it from the dict).
    layer_kwargs : dict, optional
        Constructor arguments (instead of ``check_init_kwargs``/``check_cases``).
    input_shape : tuple, optional
        Per-sample input shape (instead of ``check_input_shape``/``check_cases``).
    checks : sequence of str, optional
        Run only these checks (default: all of :data:`CHECK_NAMES`).

    Returns
    -------
    LayerCheckReport
        check name -> passed / skipped (reason) / xfailed / xpassed / failed.

    Raises
    ------
    AssertionError
        If any check failed or an expected failure passed; the message lists
        them (the report is attached as ``exc.report``).

    Examples
    --------
    >>> from cyconv.testing import check_layer
    >>> report = check_layer("ReLU", checks=["check_output_shape"])
    >>> report["check_output_shape"].status
    'passed'
    """
    expected = _check_expected(expected_failed_checks)
    names = list(CHECK_NAMES) if checks is None else list(checks)
    unknown = [c for c in names if c not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {list(CHECK_NAMES)}")
    spec = _resolve(layer_or_name, backend, layer_kwargs, input_shape)
    report = LayerCheckReport(spec.label)
    for name in names:
        try:
            with _expecting_failure(name in expected):
                _run_check(name, spec, reference_backend)
        except CheckSkipped as exc:
            report.results[name] = CheckResult(name, "skipped", str(exc))
        except Exception as exc:  # any error of the layer is a failed check
            message = f"{type(exc).__name__}: {exc}"
            if name in expected:
                report.results[name] = CheckResult(name, "xfailed",
                                                   f"{expected[name]} ({message})")
            else:
                report.results[name] = CheckResult(name, "failed", message)
        else:
            if name in expected:
                report.results[name] = CheckResult(
                    name, "xpassed", f"declared as an expected failure ({expected[name]}) but "
                                     f"passed; remove it from expected_failed_checks")
            else:
                report.results[name] = CheckResult(name, "passed")
    if not report.ok:
        bad = report.with_status("failed", "xpassed")
        error = AssertionError(f"{spec.label} failed {len(bad)} check(s): {', '.join(bad)}\n"
                               f"{report}")
        error.report = report
        raise error
    return report


# -- pytest integration ------------------------------------------------------------

class _BoundCheck:
    """Callable ``check(layer)`` handed to tests by :func:`parametrize_with_checks`."""

    def __init__(self, name, reference_backend, expect_failure=False):
        self.name = name
        self.reference_backend = reference_backend
        self.expect_failure = expect_failure
        self._fn = globals()[name]
        functools.update_wrapper(self, self._fn)

    def __call__(self, layer):
        with _expecting_failure(self.expect_failure):
            return self._fn(layer, reference_backend=self.reference_backend)

    def __repr__(self):
        return self.name


def _expand(item, backend):
    """(layer object, label) pairs for one entry of ``layers``."""
    if isinstance(item, str):
        if backend in (None,):
            classes = [get_layer(item)]
        elif backend == "all":
            from .._registry import backends_for

            classes = [get_layer(item, b) for b in backends_for(item)]
        elif isinstance(backend, str):
            classes = [get_layer(item, backend)]
        else:
            classes = [get_layer(item, b) for b in backend]
        return [(c, _resolve(c).label) for c in classes]
    return [(item, _resolve(item).label)]


def parametrize_with_checks(layers, *, backend=None, expected_failed_checks=None,
                            reference_backend="numpy", checks=None):
    """Pytest decorator: one test per (layer, check), like scikit-learn's.

    The decorated test takes ``(layer, check)`` and calls ``check(layer)``.
    Test ids read ``Conv2D[cython]-check_matches_reference``, so
    ``pytest -k matches_reference`` selects one check.

    Parameters
    ----------
    layers : iterable of str, Layer subclasses or Layer instances
    backend : None, str, "all" or sequence of str
        For names: None follows the preference order, a string picks that
        backend, ``"all"`` expands to every backend of
        :func:`cyconv.backends_for`, a sequence to those backends.
    expected_failed_checks : dict or callable, optional
        ``{check_name: reason}`` for every layer, or
        ``callable(layer) -> dict`` per layer.  Those tests are marked
        ``xfail(strict=True)``: they must fail.
    reference_backend : str
        As in :func:`check_layer`.
    checks : sequence of str, optional
        Only these checks.

    Returns
    -------
    pytest.MarkDecorator

    Examples
    --------
    >>> from cyconv.testing import parametrize_with_checks
    >>> @parametrize_with_checks(["ReLU", "Conv2D"], backend="all")  # doctest: +SKIP
    ... def test_conformance(layer, check):
    ...     check(layer)
    """
    import pytest

    names = list(CHECK_NAMES) if checks is None else list(checks)
    unknown = [c for c in names if c not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {list(CHECK_NAMES)}")
    params = []
    for item in layers:
        for obj, label in _expand(item, backend):
            if callable(expected_failed_checks):
                expected = _check_expected(expected_failed_checks(obj))
            else:
                expected = _check_expected(expected_failed_checks)
            is_reference = _resolve(obj).cls.backend == reference_backend
            for name in names:
                if name == "check_matches_reference" and is_reference:
                    continue  # a layer compared with itself proves nothing
                marks = ([pytest.mark.xfail(reason=expected[name], strict=True)]
                         if name in expected else [])
                params.append(pytest.param(obj, _BoundCheck(name, reference_backend,
                                                            name in expected),
                                           id=f"{label}-{name}", marks=marks))
    return pytest.mark.parametrize("layer, check", params)


"""The layer conformance checks: property checks every cyconv layer should pass.

Each ``check_*`` function below takes a layer (a registered name, a
:class:`cyconv.Layer` subclass or a configured instance), draws layer
configurations, batch sizes and seeds with Hypothesis (an explicit, modest
``max_examples``, capped by the loaded profile's; the rest of the profile,
``derandomize`` included, is inherited) and raises AssertionError naming the
failing example.  A failing example is reported as found, without
shrinking, unless ``CYCONV_TESTING_SHRINK=1`` is set in the environment.

:func:`cyconv.testing.check_layer` runs them all and returns a report;
:func:`cyconv.testing.parametrize_with_checks` makes one pytest test per
(layer, check).  :data:`CHECK_NAMES` lists the checks in the order they run:
check_output_shape, check_matches_reference, check_gradients,
check_backward_params, check_dtype_preserved,
check_readonly_noncontiguous_inputs, check_inputs_not_mutated,
check_batch_subset_invariance, check_batch_order_invariance,
check_thread_invariance, check_invalid_parameters_raise.

Layer spec attributes
---------------------
A layer class describes how to test it with class attributes (all optional;
read with defaults, and for the ten built-in layers filled in from
:mod:`cyconv.testing._builtin_settings` when absent):

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

import copy

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - hypothesis is a test extra
    raise ImportError("cyconv.testing.checks needs Hypothesis: "
                      "pip install 'cyconv[test]' (or pip install hypothesis)") from exc

from .._registry import BackendError, LayerNotFoundError, get_layer
from .._threads import local_num_threads
from ._catalogue import AWKWARD_LAYOUTS, MISSING, awkward_copy
from ._spec import (
    F32,
    F64,
    CheckSkipped,
    GlobalRandom,
    assert_close,
    call_forward,
    describe_example,
    examples,
    layer_check,
    make_dout,
    make_example,
    make_input,
    make_layer,
    make_target,
    run_copy,
    run_examples,
    run_with_random_dout,
    skip,
)
from .gradcheck import layer_gradcheck

__all__ = [
    "CHECK_NAMES",
    "MISSING",
    "CheckSkipped",
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


@layer_check
def check_output_shape(spec):
    """Check that forward's output shape matches output_shape() and the shape rule.

    ``forward(x).shape == (N,) + layer.output_shape(s)``, and so are ``build``'s
    return value, the layer's ``check_shape_rule`` when known and ``s`` itself
    for ``shape_preserving`` layers; ``dx`` has the shape of ``x`` and every
    gradient the shape of its parameter.  Loss layers return a finite scalar.
    """
    def body(kwargs, shape, n, seed):
        rng = np.random.default_rng(seed)
        layer, built = make_layer(spec, kwargs, shape, F64, rng)
        where = describe_example(spec, kwargs, shape, n)
        declared = tuple(layer.output_shape(tuple(shape)))
        x = make_input(rng, (n,) + tuple(shape), F64)
        t = make_target(spec, rng, x)
        y = call_forward(spec, layer, x, t, True)
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
        dx = layer.backward(make_dout(spec, rng, y, F64))
        assert np.shape(dx) == x.shape, f"{where}: backward returned dx of shape " \
                                        f"{np.shape(dx)}, x has {x.shape}"
        for k, p in layer.params.items():
            assert k in layer.grads, f"{where}: backward did not set grads[{k!r}]"
            assert np.shape(layer.grads[k]) == np.shape(p), (
                f"{where}: grads[{k!r}] has shape {np.shape(layer.grads[k])}, params[{k!r}] "
                f"has {np.shape(p)}")

    run_examples(examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 10)


def _reference_class(spec, reference_backend):
    if spec.backend == reference_backend:
        skip(f"{spec.label} is the reference implementation ({reference_backend!r})")
    if spec.cls.name is None:
        skip(f"{spec.label} is not registered under a name, so it has no reference")
    try:
        ref_cls = get_layer(spec.cls.name, reference_backend)
    except (BackendError, LayerNotFoundError) as exc:
        skip(f"no reference implementation: {exc}")
    if ref_cls is spec.cls:
        skip(f"{spec.label} is the reference implementation ({reference_backend!r})")
    return ref_cls


@layer_check
def check_matches_reference(spec):
    """Check forward and backward against the reference backend's implementation.

    Forward, ``dx`` and every parameter gradient agree with the same layer
    name under ``reference_backend`` (same parameters), in float32 and
    float64.  Skipped when the layer *is* the reference.
    """
    ref_cls = _reference_class(spec, spec.reference_backend)
    train = not spec.stochastic

    def body(kwargs, shape, n, seed, dtype):
        rng = np.random.default_rng(seed)
        layer, _ = make_layer(spec, kwargs, shape, dtype, rng)
        if spec.template is not None:
            ref = ref_cls.__new__(ref_cls)
            ref.__dict__.update(copy.deepcopy(spec.template.__dict__))
        else:
            ref = ref_cls(**copy.deepcopy(kwargs))
        ref.build(tuple(shape), dtype=dtype, rng=0)
        for k, v in layer.params.items():
            ref.params[k] = v.copy()
        x = make_input(rng, (n,) + tuple(shape), dtype)
        t = make_target(spec, rng, x)
        where = describe_example(spec, kwargs, shape, n) + f", {dtype}, vs {ref_cls.backend!r}"
        with GlobalRandom() as rand:
            y_ref = run_copy(spec, ref, x, t, None, train, rand)[0]
            dout = make_dout(spec, rng, y_ref, dtype)
            y, dx, grads = run_copy(spec, layer, x, t, dout, train, rand)
            y_ref, dx_ref, grads_ref = run_copy(spec, ref, x, t, dout, train, rand)
        assert_close(y, y_ref, dtype, f"{where}: forward differs")
        assert_close(dx, dx_ref, dtype, f"{where}: dx differs")
        assert set(grads) == set(grads_ref), f"{where}: gradient keys {sorted(grads)} vs " \
                                             f"{sorted(grads_ref)}"
        for k in grads:
            assert_close(grads[k], grads_ref[k], dtype, f"{where}: grads[{k!r}] differs")

    run_examples(examples(spec, extra=st.sampled_from([F64, F32])),
                  lambda c, n, s, d: body(c[0], c[1], n, s, d), 10)


@layer_check
def check_gradients(spec):
    """Check dx and every parameter gradient with numeric differences (float64).

    :func:`cyconv.testing.layer_gradcheck` on one thread: the full Jacobian on
    small problems, random directions on larger ones; with ``train=True``,
    and also ``train=False`` for ``stochastic`` or ``batch_coupled`` layers.
    """
    # train=False differs from train=True only for stochastic / batch-coupled layers
    modes = (True, False) if (spec.stochastic or spec.batch_coupled) else (True,)

    def body(kwargs, shape, n, seed):
        rng, layer, x, t = make_example(spec, kwargs, shape, n, seed, F64)
        # one thread: correctness does not depend on it (check_thread_invariance is separate)
        with local_num_threads(1):
            for train in modes:
                try:
                    layer_gradcheck(layer, x, t=t, train=train, rtol=1e-5, atol=1e-6,
                                    seed=seed % 2 ** 31, max_full_size=200, n_directions=3)
                except AssertionError as exc:
                    raise AssertionError(f"{describe_example(spec, kwargs, shape, n)}, "
                                         f"train={train}: {exc}") from None

    run_examples(examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 5)


@layer_check
def check_dtype_preserved(spec):
    """Check that float32 and float64 inputs keep their dtype.

    float32 in, float32 out (and ``dx``, parameters, gradients); the same for
    float64.
    """
    def body(kwargs, shape, n, seed):
        for dtype in (F32, F64):
            rng, layer, x, t = make_example(spec, kwargs, shape, n, seed, dtype)
            where = describe_example(spec, kwargs, shape, n) + f", {dtype}"
            y = call_forward(spec, layer, x, t, True)
            if not spec.is_loss:
                assert y.dtype == dtype, f"{where}: forward returned {y.dtype}"
            dx = layer.backward(make_dout(spec, rng, y, dtype))
            assert np.asarray(dx).dtype == dtype, f"{where}: backward returned {dx.dtype}"
            for k, p in layer.params.items():
                assert np.asarray(p).dtype == dtype, f"{where}: params[{k!r}] became " \
                                                     f"{np.asarray(p).dtype}"
                assert np.asarray(layer.grads[k]).dtype == dtype, (
                    f"{where}: grads[{k!r}] has dtype {np.asarray(layer.grads[k]).dtype}")

    run_examples(examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 8)


@layer_check
def check_readonly_noncontiguous_inputs(spec):
    """Check read-only, non-contiguous inputs give the contiguous result.

    ``x``, ``dout`` and targets in each layout of
    :data:`cyconv.testing.strategies.AWKWARD_LAYOUTS` (strided, Fortran-ordered,
    reversed), read-only, give the result of contiguous copies.
    """
    train = True

    def body(kwargs, shape, n, seed, layout, dtype):
        rng, proto, x, t = make_example(spec, kwargs, shape, n, seed, dtype)
        where = describe_example(spec, kwargs, shape, n) + f", {dtype}, {layout} read-only inputs"
        with GlobalRandom() as rand:
            dout, (y, dx, grads) = run_with_random_dout(spec, proto, x, t, train, rand, rng,
                                                        dtype)
            xa, doa = awkward_copy(x, layout), awkward_copy(dout, layout)
            ta = None if t is None else awkward_copy(t, layout)
            try:
                y2, dx2, grads2 = run_copy(spec, proto, xa, ta, doa, train, rand)
            except Exception as exc:
                raise AssertionError(f"{where}: raised {type(exc).__name__}: {exc}") from exc
        assert_close(y2, y, dtype, f"{where}: forward differs from the contiguous result", True)
        assert_close(dx2, dx, dtype, f"{where}: dx differs from the contiguous result", True)
        for k in grads:
            assert_close(grads2[k], grads[k], dtype, f"{where}: grads[{k!r}] differs", True)

    layouts = st.sampled_from(AWKWARD_LAYOUTS)
    run_examples(examples(spec, extra=st.tuples(layouts, st.sampled_from([F64, F32]))),
                  lambda c, n, s, e: body(c[0], c[1], n, s, *e), 8)


@layer_check
def check_inputs_not_mutated(spec):
    """Check that forward/backward modify neither inputs nor parameters.

    ``x``, ``dout``, targets and ``params`` are unchanged afterwards.
    """
    def body(kwargs, shape, n, seed, dtype):
        rng, layer, x, t = make_example(spec, kwargs, shape, n, seed, dtype)
        where = describe_example(spec, kwargs, shape, n) + f", {dtype}"
        x0 = x.copy()
        t0 = None if t is None else t.copy()
        params0 = {k: np.array(v, copy=True) for k, v in layer.params.items()}
        y = call_forward(spec, layer, x, t, True)
        dout = make_dout(spec, rng, y, dtype)
        dout0 = copy.deepcopy(dout)
        layer.backward(dout)
        assert np.array_equal(x, x0), f"{where}: forward/backward modified x"
        if t is not None:
            assert np.array_equal(t, t0), f"{where}: forward/backward modified the targets"
        assert np.array_equal(dout, dout0), f"{where}: backward modified dout"
        for k, v in params0.items():
            assert np.array_equal(layer.params[k], v), (
                f"{where}: forward/backward modified params[{k!r}]")

    run_examples(examples(spec, extra=st.sampled_from([F64, F32])),
                  lambda c, n, s, d: body(c[0], c[1], n, s, d), 8)


@layer_check
def check_backward_params(spec):
    """Check that backward_params fills the grads backward fills.

    ``backward_params(dout)`` (what a network runs on its first layer, whose
    input needs no gradient) returns None and leaves the same ``grads`` as
    ``backward(dout)``.
    """
    train = not (spec.stochastic or spec.batch_coupled)

    def body(kwargs, shape, n, seed):
        rng, proto, x, t = make_example(spec, kwargs, shape, n, seed, F64)
        where = describe_example(spec, kwargs, shape, n)
        with GlobalRandom() as rand:
            dout, (_, _, grads) = run_with_random_dout(spec, proto, x, t, train, rand, rng, F64)
            layer = copy.deepcopy(proto)
            rand.reset()
            call_forward(spec, layer, x, t, train)
            returned = layer.backward_params(np.copy(dout) if np.ndim(dout) else dout)
        assert returned is None, f"{where}: backward_params returned {type(returned).__name__}, " \
                                 f"not None"
        for k in proto.params:
            assert k in layer.grads, f"{where}: backward_params did not set grads[{k!r}]"
            assert_close(layer.grads[k], grads[k], F64,
                   f"{where}: grads[{k!r}] from backward_params differs from backward's",
                   strict=True)

    run_examples(examples(spec), lambda c, n, s: body(c[0], c[1], n, s), 5)


@layer_check
def check_batch_subset_invariance(spec):
    """Check that a subset of the batch gives that subset of the results.

    Running a subset of the batch gives that subset of the outputs and of
    ``dx`` (``train=False`` for ``stochastic``/``batch_coupled`` layers).
    Skipped for loss layers.
    """
    if spec.is_loss:
        skip(f"{spec.label} is a loss layer: its output reduces over the batch")
    train = not (spec.stochastic or spec.batch_coupled)

    def body(kwargs, shape, n, seed):
        rng, proto, x, _ = make_example(spec, kwargs, shape, n, seed, F64)  # t: not a loss
        size = int(rng.integers(1, n))
        idx = np.sort(rng.choice(n, size=size, replace=False))
        where = describe_example(spec, kwargs, shape, n) + f", subset {idx.tolist()}, train={train}"
        with GlobalRandom() as rand:
            dout, (y, dx, _) = run_with_random_dout(spec, proto, x, None, train, rand, rng, F64)
            ys, dxs, _ = run_copy(spec, proto, x[idx], None, dout[idx], train, rand)
        assert_close(ys, y[idx], F64, f"{where}: forward on the subset differs")
        assert_close(dxs, dx[idx], F64, f"{where}: dx on the subset differs")

    run_examples(examples(spec, min_batch=2, max_batch=4),
                  lambda c, n, s: body(c[0], c[1], n, s), 8)


@layer_check
def check_batch_order_invariance(spec):
    """Check that permuting the batch permutes the results.

    Outputs and ``dx`` are permuted alike; parameter gradients (and a loss)
    are unchanged.
    """
    train = not spec.stochastic

    def body(kwargs, shape, n, seed):
        rng, proto, x, t = make_example(spec, kwargs, shape, n, seed, F64)
        perm = rng.permutation(n)
        if n > 1 and np.array_equal(perm, np.arange(n)):
            perm = np.roll(perm, 1)
        where = describe_example(spec, kwargs, shape, n) + f", permutation {perm.tolist()}"
        with GlobalRandom() as rand:
            dout, (y, dx, grads) = run_with_random_dout(spec, proto, x, t, train, rand, rng, F64)
            dout_p = dout if spec.is_loss else dout[perm]
            yp, dxp, gradsp = run_copy(spec, proto, x[perm], None if t is None else t[perm],
                                   dout_p, train, rand)
        assert_close(yp, y if spec.is_loss else y[perm], F64, f"{where}: forward not permuted")
        assert_close(dxp, dx[perm], F64, f"{where}: dx not permuted")
        for k in grads:
            assert_close(gradsp[k], grads[k], F64, f"{where}: grads[{k!r}] changed")

    run_examples(examples(spec, min_batch=2, max_batch=4),
                  lambda c, n, s: body(c[0], c[1], n, s), 8)


@layer_check
def check_thread_invariance(spec):
    """Check that 1, 2 and 4 threads give bitwise identical results.

    Forward, ``dx`` and gradients under ``cyconv._threads.local_num_threads``
    (1, 2 and 4 threads for this thread's calls; the process-wide setting is
    not touched).
    """
    def body(kwargs, shape, n, seed, dtype):
        rng, proto, x, t = make_example(spec, kwargs, shape, n, seed, dtype)
        where = describe_example(spec, kwargs, shape, n) + f", {dtype}"
        results = {}
        with GlobalRandom() as rand:
            dout = None
            for threads in (1, 2, 4):
                with local_num_threads(threads):  # this thread only, restored on exit
                    if dout is None:
                        y = run_copy(spec, proto, x, t, None, True, rand)[0]
                        dout = make_dout(spec, rng, y, dtype)
                    results[threads] = run_copy(spec, proto, x, t, dout, True, rand)
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

    run_examples(examples(spec, extra=st.sampled_from([F64, F32])),
                  lambda c, n, s, d: body(c[0], c[1], n, s, d), 6)


@layer_check
def check_invalid_parameters_raise(spec):
    """Check that the declared invalid_params are rejected.

    Every constructor-argument set in ``invalid_params`` (merged over
    ``check_init_kwargs``; :data:`MISSING` deletes a key) raises ValueError or
    TypeError, in the constructor or at the latest in ``build``/``forward``.
    Skipped for an instance (it has no constructor call to vary) or when no
    ``invalid_params`` are declared.
    """
    if spec.template is not None:
        skip("checking constructor arguments needs a layer class or name, not an instance")
    if not spec.invalid_params:
        skip(f"{spec.label} declares no invalid_params")
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
            layer.build(spec.input_shape, dtype=F64, rng=0)
            x = make_input(np.random.default_rng(0), (2,) + spec.input_shape, F64)
            t = make_target(spec, np.random.default_rng(0), x)
            call_forward(spec, layer, x, t, True)
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



#: Every check, in the order :func:`cyconv.testing.check_layer` runs them.
ALL_CHECKS = (
    check_output_shape,
    check_matches_reference,
    check_gradients,
    check_backward_params,
    check_dtype_preserved,
    check_readonly_noncontiguous_inputs,
    check_inputs_not_mutated,
    check_batch_subset_invariance,
    check_batch_order_invariance,
    check_thread_invariance,
    check_invalid_parameters_raise,
)

#: Names of every check, in the order :func:`cyconv.testing.check_layer` runs them.
CHECK_NAMES = tuple(check.__name__ for check in ALL_CHECKS)

#: Check name -> check function.
CHECKS = {check.__name__: check for check in ALL_CHECKS}

# Names that lived in this module before the reports and the pytest glue
# moved out; still importable from here.
_MOVED = {"check_layer": "_reports", "CheckResult": "_reports", "LayerCheckReport": "_reports",
          "parametrize_with_checks": "_pytest_glue"}


def __getattr__(name):
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{_MOVED[name]}"), name)

"""Tests of cyconv.testing itself: strategies, gradcheck and the conformance kit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyconv
from cyconv import Layer
from cyconv.testing import (
    CHECK_NAMES,
    MISSING,
    GradcheckResult,
    check_layer,
    gradcheck,
    layer_gradcheck,
    parametrize_with_checks,
)
from cyconv.testing import checks as kit_checks
from cyconv.testing.strategies import (
    ConvCase,
    ConvGeometry,
    PoolGeometry,
    conv_cases,
    conv_geometries,
    float_arrays,
    float_dtypes,
    invalid_conv_geometries,
    invalid_pool_geometries,
    pool_geometries,
)

# -- strategies ------------------------------------------------------------------------

@given(conv_geometries())
def test_conv_geometries_are_valid(g):
    assert isinstance(g, ConvGeometry)
    geom = cyconv.resolve_geometry(g.input_size, g.kernel_size, **g.kwargs())
    assert geom.out_h >= 1 and geom.out_w >= 1
    kh, kw = geom.kernel_size
    x = np.zeros((1, 1) + tuple(g.input_size))
    y = cyconv.conv2d(x, np.zeros((1, 1, kh, kw)), backend="numpy", **g.kwargs())
    assert y.shape[2:] == g.output_size == geom.out_size


@given(conv_geometries(roundings=("exact",), paddings=("int", "pair", "sides", "valid")))
def test_exact_geometries_need_no_rounding(g):
    geom = g.resolve()
    for size, k, s, d, p0, p1, out in [
            (geom.in_h, geom.kernel_h, geom.stride_h, geom.dilation_h, geom.pad_top,
             geom.pad_bottom, geom.out_h),
            (geom.in_w, geom.kernel_w, geom.stride_w, geom.dilation_w, geom.pad_left,
             geom.pad_right, geom.out_w)]:
        span = size + p0 + p1 - d * (k - 1) - 1
        assert span >= 0 and span % s == 0 and out == span // s + 1


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(data=st.data())
def test_pool_geometries_are_valid(kind, data):
    g = data.draw(pool_geometries(kind))
    assert isinstance(g, PoolGeometry) and g.kind == kind
    geom = g.resolve()
    assert max(geom.pad_top, geom.pad_bottom) <= geom.kernel_h // 2
    assert max(geom.pad_left, geom.pad_right) <= geom.kernel_w // 2
    if kind == "avg":
        assert (geom.dilation_h, geom.dilation_w) == (1, 1) and "dilation" not in g.kwargs()
    x = np.random.default_rng(0).standard_normal((1, 2) + tuple(g.input_size))
    fn = cyconv.max_pool2d if kind == "max" else cyconv.avg_pool2d
    y = fn(x, g.kernel_size, backend="numpy", **g.kwargs())
    assert y.shape == (1, 2) + g.output_size
    layer = cyconv.create_layer("MaxPool2D" if kind == "max" else "AvgPool2D", "numpy",
                                **g.layer_kwargs())
    assert layer.output_shape((2,) + tuple(g.input_size)) == (2,) + g.output_size


@given(conv_cases())
def test_conv_cases_are_consistent(case):
    assert isinstance(case, ConvCase)
    assert case.in_channels % case.groups == 0 and case.out_channels % case.groups == 0
    x, w, b = case.arrays(seed=1)
    assert x.shape == case.x_shape and w.shape == case.w_shape and x.dtype == case.dtype
    assert (b is None) == (not case.bias)
    y = cyconv.conv2d(x, w, b, backend="numpy", **case.kwargs())
    assert y.shape == case.y_shape and y.dtype == case.dtype
    layer = cyconv.create_layer("Conv2D", "numpy", **case.layer_kwargs())
    assert layer.build(case.x_shape[1:], dtype=case.dtype) == case.y_shape[1:]


@given(invalid_conv_geometries())
def test_invalid_conv_geometries_raise_naming_the_argument(case):
    with pytest.raises(case.error) as info:
        case.call(backend="numpy")
    assert case.argument in str(info.value), (case.reason, str(info.value))
    if case.geometry_only:
        with pytest.raises(case.error) as info:
            case.resolve()
        assert case.argument in str(info.value)


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(data=st.data())
def test_invalid_pool_geometries_raise_naming_the_argument(kind, data):
    case = data.draw(invalid_pool_geometries(kind))
    with pytest.raises(case.error) as info:
        case.call(backend="numpy")
    assert case.argument in str(info.value), (case.reason, str(info.value))
    if case.geometry_only:
        with pytest.raises(case.error):
            case.resolve()


INVALID_REASONS = ["non_integral", "kernel_too_large", "bad_stride", "bad_dilation",
                   "negative_padding", "bad_padding_string", "bad_type", "bad_rounding",
                   "groups_not_dividing", "groups_not_dividing_out", "bad_groups",
                   "channel_mismatch"]


@pytest.mark.parametrize("reason", INVALID_REASONS)
@settings(max_examples=5)
@given(data=st.data())
def test_invalid_conv_geometries_cover_every_reason(reason, data):
    case = data.draw(invalid_conv_geometries([reason]))
    with pytest.raises(case.error) as info:
        case.call(backend="numpy")
    assert case.argument in str(info.value), (case.reason, str(info.value))


def test_invalid_conv_geometries_rejects_unknown_reasons():
    with pytest.raises(ValueError, match="unknown reasons"):
        invalid_conv_geometries(["nope"])


@given(float_arrays(st.tuples(st.integers(1, 3), st.integers(1, 5)), float_dtypes(),
                    bound=10.0))
def test_float_arrays_are_bounded_and_finite(x):
    assert x.dtype in (np.float32, np.float64)
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 10)
    tiny = np.finfo(x.dtype).tiny
    assert not np.any((x != 0) & (np.abs(x) < tiny))  # no subnormals


def test_float_arrays_rejects_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        float_arrays((2,), np.int32)


# -- gradcheck -------------------------------------------------------------------------

def _tanh_f(x, w):
    return np.tanh(x @ w)


def _tanh_backward(dout, x, w):
    g = dout * (1 - np.tanh(x @ w) ** 2)
    return [g @ w.T, x.T @ g]


@pytest.mark.parametrize("mode", ["full", "directional", "auto"])
def test_gradcheck_passes_a_correct_gradient(mode):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    result = gradcheck(_tanh_f, [x, w], _tanh_backward, mode=mode)
    assert isinstance(result, GradcheckResult)
    assert result.mode == ("full" if mode == "auto" else mode)
    assert result.max_abs_error < 1e-7


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_gradcheck_catches_a_wrong_gradient(mode):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    def wrong_backward(dout, x, w):
        dx, dw = _tanh_backward(dout, x, w)
        dw = dw.copy()
        dw[2, 1] *= 1.5  # one wrong entry
        return [dx, dw]

    with pytest.raises(AssertionError) as info:
        gradcheck(_tanh_f, [x, w], wrong_backward, mode=mode, names=["x", "w"])
    msg = str(info.value)
    assert "input 1 (w)" in msg and "numeric=" in msg and "analytic=" in msg
    assert "abs error=" in msg and "rel error=" in msg
    if mode == "full":
        assert "index (2, 1)" in msg and "1 of 8 entries" in msg
    else:
        assert "direction" in msg


def test_gradcheck_auto_switches_to_directional():
    x = np.linspace(-1, 1, 50)
    result = gradcheck(np.sin, [x], lambda d, x: [d * np.cos(x)], max_full_size=10)
    assert result.mode == "directional" and result.n_checked == 3


def test_gradcheck_scalar_output():
    x = np.array([0.3, -0.2, 0.5])
    result = gradcheck(lambda x: float(np.sum(x ** 3)), [x], lambda d, x: [d * 3 * x ** 2])
    assert result.mode == "full" and result.n_checked == 3


def test_gradcheck_refuses_non_float_inputs_and_float32_results():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 1.0, [np.arange(3)], lambda d, x: [d])
    with pytest.raises(TypeError, match="float32"):
        gradcheck(lambda x: x.astype(np.float32), [np.ones(3)], lambda d, x: [d])
    with pytest.raises(ValueError, match="2 gradients"):
        gradcheck(lambda x: x, [np.ones(3)], lambda d, x: [d, d])
    with pytest.raises(ValueError, match="shape"):
        gradcheck(lambda x: x, [np.ones(3)], lambda d, x: [d[:2]])
    with pytest.raises(ValueError, match="mode"):
        gradcheck(lambda x: x, [np.ones(3)], lambda d, x: [d], mode="exact")


def test_gradcheck_handles_non_finite_outputs():
    # a constant -inf output entry (max pooling over padding only) is no difference
    def f(x):
        return np.concatenate([np.sin(x), [-np.inf]])
    def backward(d, x):
        return [d[:-1] * np.cos(x)]
    assert gradcheck(f, [np.linspace(0, 1, 4)], backward).max_abs_error < 1e-7
    # NaN never passes
    with pytest.raises(AssertionError, match="numeric=nan"):
        gradcheck(lambda x: x * np.nan, [np.ones(3)], lambda d, x: [d])
    with pytest.raises(AssertionError):
        gradcheck(lambda x: x * np.nan, [np.ones(3)], lambda d, x: [d], mode="directional")


def test_gradcheck_casts_float32_inputs():
    x = np.linspace(-1, 1, 5, dtype=np.float32)
    assert gradcheck(np.sin, [x], lambda d, x: [d * np.cos(x)]).mode == "full"


# -- toy layers --------------------------------------------------------------------------

class Scale(Layer):
    """y = a * x + c with parameters a (D,) and c (D,) on (N, D) input: correct."""

    name = "KitScale"
    backend = "toy"
    has_params = True
    shape_preserving = True
    check_input_shape = (3,)
    invalid_params = [{"init": -1.0}, {"init": "one"}]

    def __init__(self, init=0.5, *, backend=None):
        super().__init__()
        if not isinstance(init, float):
            raise TypeError(f"init must be a float, got {init!r}")
        if init < 0:
            raise ValueError(f"init must be >= 0, got {init!r}")
        self.init = init

    def build(self, input_shape, *, dtype=np.float64, rng=None):
        d = input_shape[0]
        self.params["a"] = np.full(d, self.init, dtype=dtype)
        self.params["c"] = np.zeros(d, dtype=dtype)
        return tuple(input_shape)

    def forward(self, x, train=True):
        x = np.asarray(x)
        self._x = x
        return x * self.params["a"] + self.params["c"]

    def backward(self, dout):
        self.grads["a"] = (dout * self._x).sum(axis=0)
        self.grads["c"] = dout.sum(axis=0)
        return dout * self.params["a"]


class WrongShape(Scale):
    """output_shape() lies."""

    name = "KitWrongShape"
    shape_preserving = False

    def output_shape(self, input_shape):
        return (input_shape[0] + 1,)

    def build(self, input_shape, *, dtype=np.float64, rng=None):
        super().build(input_shape, dtype=dtype, rng=rng)
        return self.output_shape(input_shape)


class MutatesInput(Scale):
    """backward scales dout in place."""

    name = "KitMutatesInput"

    def backward(self, dout):
        self.grads["a"] = (dout * self._x).sum(axis=0)
        self.grads["c"] = dout.sum(axis=0)
        dout *= self.params["a"]
        return dout


class MutatesX(Scale):
    """forward zeroes its input after computing the output."""

    name = "KitMutatesX"

    def forward(self, x, train=True):
        y = super().forward(np.array(x, copy=True))
        x[...] = 0
        return y


class WrongGradient(Scale):
    """grads['a'] is off by a factor 2."""

    name = "KitWrongGradient"

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["a"] = 2 * self.grads["a"]
        return dx


class WrongParamsOnly(Scale):
    """Its backward_params (the first-layer shortcut) forgets a factor."""

    name = "KitWrongParamsOnly"

    def backward_params(self, dout):
        self.backward(dout)
        self.grads["a"] = self.grads["a"] + 1.0


class AcceptsAnything(Scale):
    """Declares invalid_params but accepts them."""

    name = "KitAcceptsAnything"
    invalid_params = [{"init": -1.0}]

    def __init__(self, init=0.5, *, backend=None):
        Layer.__init__(self)
        self.init = init


class OffByEpsConv(cyconv.get_layer("Conv2D", "numpy")):
    """A 'plugin' Conv2D whose forward is slightly off: not registered, backend 'toy'."""

    backend = "toy"

    def forward(self, x, train=True):
        return super().forward(x, train) + 1e-3


def test_layer_gradcheck_on_builtin_layers():
    rng = np.random.default_rng(0)
    conv = cyconv.create_layer("Conv2D", "numpy", out_channels=2, kernel_size=3, padding=1,
                               stride=2, rounding="floor")
    conv.build((2, 5, 5), rng=0)
    before = {k: v.copy() for k, v in conv.params.items()}
    result = layer_gradcheck(conv, rng.standard_normal((2, 2, 5, 5)))
    assert result.mode == "full"
    assert all(np.array_equal(conv.params[k], v) for k, v in before.items())  # untouched
    layer_gradcheck(cyconv.Dropout(0.5, rng=1), rng.standard_normal((3, 4)), train=True)
    layer_gradcheck(cyconv.SoftmaxWithLoss(), rng.standard_normal((4, 5)))
    layer_gradcheck(conv, rng.standard_normal((2, 2, 5, 5)), mode="directional")


def test_layer_gradcheck_names_the_wrong_parameter():
    layer = WrongGradient()
    layer.build((3,))
    with pytest.raises(AssertionError, match=r"params\['a'\]"):
        layer_gradcheck(layer, np.random.default_rng(0).standard_normal((2, 3)))
    layer_gradcheck(Scale(), np.random.default_rng(0).standard_normal((2, 3)))  # builds a copy


# -- check_layer -------------------------------------------------------------------------

def test_check_layer_passes_a_correct_toy_layer():
    report = check_layer(Scale)
    status = report.status()
    assert set(status) == set(CHECK_NAMES)
    assert status["check_matches_reference"] == "skipped"  # no 'numpy' KitScale
    assert status["check_invalid_parameters_raise"] == "passed"
    assert all(s in ("passed", "skipped") for s in status.values()), str(report)
    assert "KitScale[toy]" in str(report)


@pytest.mark.parametrize("layer, broken", [
    (WrongShape, "check_output_shape"),
    (MutatesInput, "check_inputs_not_mutated"),
    (MutatesX, "check_inputs_not_mutated"),
    (WrongGradient, "check_gradients"),
    (WrongParamsOnly, "check_backward_params"),
    (AcceptsAnything, "check_invalid_parameters_raise"),
])
def test_check_layer_flags_broken_layers(layer, broken):
    with pytest.raises(AssertionError) as info:
        check_layer(layer)
    report = info.value.report
    assert report[broken].status == "failed", str(report)
    assert broken in str(info.value)
    # the report names what is wrong
    if broken == "check_gradients":
        assert "params['a']" in report[broken].message
    if broken == "check_invalid_parameters_raise":
        assert "init=-1.0" in report[broken].message


def test_check_layer_compares_with_the_reference_backend():
    kw = {"out_channels": 2, "kernel_size": 3}
    with pytest.raises(AssertionError) as info:
        check_layer(OffByEpsConv, layer_kwargs=kw, input_shape=(1, 4, 4),
                    checks=["check_matches_reference", "check_output_shape"])
    report = info.value.report
    assert report["check_matches_reference"].status == "failed"
    assert "forward differs" in report["check_matches_reference"].message
    assert report["check_output_shape"].status == "passed"


def test_expected_failed_checks():
    report = check_layer(WrongGradient, expected_failed_checks={
        "check_gradients": "known bug"})
    assert report["check_gradients"].status == "xfailed"
    assert "known bug" in report["check_gradients"].message
    assert report.ok
    # an expected failure that passes is reported and fails the call
    with pytest.raises(AssertionError, match="xpassed|check_output_shape") as info:
        check_layer(Scale, expected_failed_checks={"check_output_shape": "not really"},
                    checks=["check_output_shape"])
    assert info.value.report["check_output_shape"].status == "xpassed"
    with pytest.raises(ValueError, match="unknown check"):
        check_layer(Scale, expected_failed_checks={"check_nonsense": "?"})


def test_check_layer_accepts_names_instances_and_kwargs():
    report = check_layer("Flatten", backend="numpy", checks=["check_output_shape"])
    assert report["check_output_shape"].status == "passed"
    report = check_layer(cyconv.create_layer("AvgPool2D", "numpy", kernel_size=3, padding=1),
                         input_shape=(2, 7, 7),
                         checks=["check_output_shape", "check_invalid_parameters_raise"])
    assert report["check_invalid_parameters_raise"].status == "skipped"
    report = check_layer("Conv2D", backend="numpy", layer_kwargs={
        "out_channels": 2, "kernel_size": 2, "stride": 2},
        input_shape=(1, 4, 4), checks=["check_gradients"])
    assert report["check_gradients"].status == "passed"


def test_single_checks_skip_under_pytest():
    with pytest.raises(pytest.skip.Exception, match="reference implementation"):
        kit_checks.check_matches_reference("ReLU", backend="numpy")
    kit_checks.check_output_shape(Scale)


def test_missing_sentinel_removes_a_constructor_argument():
    class NeedsSize(Scale):
        name = "KitNeedsSize"
        check_init_kwargs = {"init": 0.5}
        invalid_params = [{"init": MISSING}]  # NeedsSize() falls back to the default

    with pytest.raises(AssertionError, match=r"NeedsSize\(\) was accepted"):
        check_layer(NeedsSize, checks=["check_invalid_parameters_raise"])


def test_parametrize_with_checks_ids_and_marks():
    mark = parametrize_with_checks(["Sigmoid", "Conv2D"], backend="all",
                                   expected_failed_checks={"check_gradients": "why"})
    argnames, params = mark.args
    assert argnames == "layer, check"
    ids = [p.id for p in params]
    # the reference implementation is never compared with itself
    assert "Sigmoid[numpy]-check_matches_reference" not in ids
    assert "Conv2D[numpy]-check_matches_reference" not in ids
    assert "Conv2D[numpy]-check_gradients" in ids
    for backend in cyconv.backends_for("Conv2D"):
        assert f"Conv2D[{backend}]-check_thread_invariance" in ids
        if backend != "numpy":
            assert f"Conv2D[{backend}]-check_matches_reference" in ids
    n_layers = 1 + len(cyconv.backends_for("Conv2D"))
    assert len(ids) == len(set(ids)) == len(CHECK_NAMES) * n_layers - 2
    xfails = [p for p in params if p.marks]
    assert {p.id.split("-", 1)[1] for p in xfails} == {"check_gradients"}
    assert all(m.kwargs["strict"] for p in xfails for m in p.marks)
    layer, check = params[0].values
    assert repr(check) == "check_output_shape" and layer is cyconv.get_layer("Sigmoid", "numpy")


@parametrize_with_checks([Scale], checks=["check_output_shape", "check_gradients"],
                         expected_failed_checks=lambda layer: {})
def test_parametrize_with_checks_runs(layer, check):
    check(layer)


@parametrize_with_checks([WrongGradient], checks=["check_gradients"],
                         expected_failed_checks={"check_gradients": "deliberately wrong"})
def test_parametrize_with_checks_xfails(layer, check):
    check(layer)


@pytest.mark.parametrize("rounding", ["exact", "floor", "ceil"])
@settings(max_examples=10)
@given(data=st.data())
def test_strategies_respect_rounding_choice(rounding, data):
    assert data.draw(conv_geometries(roundings=(rounding,))).rounding == rounding
    assert data.draw(pool_geometries("avg", roundings=(rounding,))).rounding == rounding

"""Tests of the cyconv-activations example plugin, through cyconv's entry-point discovery.

Run after ``pip install ./plugins/cyconv-activations``::

    python -m pytest plugins/cyconv-activations/tests
"""

import io
import math

import numpy as np
import pytest

pytest.importorskip("cyconv_activations",
                    reason="example plugin not installed: pip install ./plugins/cyconv-activations")
pytest.importorskip("hypothesis", reason="cyconv.testing needs hypothesis")

import cyconv  # noqa: E402
from cyconv.testing import check_layer, parametrize_with_checks  # noqa: E402

NAMES = ["LeakyReLU", "ELU", "GELU", "Swish", "SiLU"]


def test_layers_come_from_the_entry_point():
    for name in NAMES:
        cls = cyconv.get_layer(name)          # no import of cyconv_activations needed
        assert cls.__module__ == "cyconv_activations"
        assert cls.name == name and cls.backend == "numpy"
        assert cyconv.backends_for(name) == ["numpy"]
    out = io.StringIO()
    cyconv.show_config(file=out)
    loaded = next(line for line in out.getvalue().splitlines() if line.startswith("plugins"))
    assert "activations (cyconv-activations" in loaded


def test_builtin_layers_unchanged():
    """Installing the plugin adds names only: built-in lookups are untouched."""
    assert cyconv.get_layer("Sigmoid") is cyconv.Sigmoid
    assert cyconv.get_layer("Sigmoid", "numpy") is cyconv.Sigmoid
    assert cyconv.get_layer("ReLU").__module__ == "cyconv.layers"


# The conformance suite cyconv runs on its own layers (shapes, gradients vs finite
# differences, dtypes, read-only/strided inputs, batch invariances, threads, bad options).
@parametrize_with_checks(NAMES, backend="numpy")
def test_conformance(layer, check):
    check(layer)


def test_check_layer_report():
    report = check_layer("GELU", layer_kwargs={"approximate": "none"}, input_shape=(3, 2, 2))
    assert report.ok
    assert report["check_matches_reference"].status == "skipped"  # it *is* the reference


X = np.array([-3.0, -1.0, -0.5, 0.25, 1.0, 4.0])


def _fwd_bwd(name, x=X, **kwargs):
    layer = cyconv.create_layer(name, **kwargs)
    y = layer.forward(x)
    return y, layer.backward(np.ones_like(y))


def test_leaky_relu_values():
    y, dx = _fwd_bwd("LeakyReLU", negative_slope=0.1)
    np.testing.assert_allclose(y, np.where(X > 0, X, 0.1 * X))
    np.testing.assert_allclose(dx, np.where(X > 0, 1.0, 0.1))
    _, d0 = _fwd_bwd("LeakyReLU", np.zeros(1))
    assert d0[0] == 0.01  # gradient at 0: the negative side, like ReLU


def test_elu_values():
    y, dx = _fwd_bwd("ELU", alpha=2.0)
    np.testing.assert_allclose(y, np.where(X > 0, X, 2.0 * (np.exp(X) - 1)))
    np.testing.assert_allclose(dx, np.where(X > 0, 1.0, 2.0 * np.exp(X)))
    big, _ = _fwd_bwd("ELU", np.array([1000.0, -1000.0]))
    np.testing.assert_array_equal(big, [1000.0, -1.0])  # no overflow warnings/NaN


def test_gelu_exact_and_tanh():
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in X])
    y, dx = _fwd_bwd("GELU", approximate="none")
    np.testing.assert_allclose(y, exact, rtol=1e-14, atol=1e-15)
    pdf = np.exp(-X ** 2 / 2) / math.sqrt(2 * math.pi)
    cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in X])
    np.testing.assert_allclose(dx, cdf + X * pdf, rtol=1e-14)
    grid = np.linspace(-8, 8, 4001)
    approx, _ = _fwd_bwd("GELU", grid)
    exact_grid, _ = _fwd_bwd("GELU", grid, approximate="none")
    assert np.max(np.abs(approx - exact_grid)) < 5e-4  # the documented accuracy


def test_silu_is_swish_with_beta_one():
    np.testing.assert_array_equal(_fwd_bwd("SiLU")[0], _fwd_bwd("Swish", beta=1.0)[0])
    y, dx = _fwd_bwd("Swish", beta=2.0)
    s = 1 / (1 + np.exp(-2.0 * X))
    np.testing.assert_allclose(y, X * s)
    np.testing.assert_allclose(dx, s + 2.0 * X * s * (1 - s))
    y, _ = _fwd_bwd("SiLU", np.array([-800.0, 800.0]))  # stable sigmoid: no overflow
    np.testing.assert_array_equal(y, [-0.0, 800.0])


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    x = X.astype(np.float32).reshape(2, 3)
    layer = cyconv.create_layer(name)
    y = layer.forward(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert layer.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_bad_dout_shape_and_dtype(name):
    layer = cyconv.create_layer(name)
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="dout must have shape"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer.forward(np.ones(3, dtype=np.complex128))

"""Tests of the cyconv-gap example plugin, through cyconv's entry-point discovery.

Run after ``pip install --no-build-isolation ./plugins/cyconv-gap``::

    python -m pytest plugins/cyconv-gap/tests
"""

import io

import numpy as np
import pytest

cyconv_gap = pytest.importorskip(
    "cyconv_gap",
    reason="example plugin not installed: pip install --no-build-isolation ./plugins/cyconv-gap")
pytest.importorskip("hypothesis", reason="cyconv.testing needs hypothesis")

import cyconv  # noqa: E402
from cyconv.testing import check_layer, parametrize_with_checks  # noqa: E402


def test_found_through_the_entry_point():
    assert cyconv.backends_for("GlobalAvgPool2D") == ["cython", "numpy"]
    assert cyconv.get_layer("GlobalAvgPool2D") is cyconv_gap.GlobalAvgPool2DCython
    assert cyconv.get_layer("GlobalAvgPool2D", "numpy") is cyconv_gap.GlobalAvgPool2DNumpy
    with cyconv.use_backend("numpy"):
        assert cyconv.get_layer("GlobalAvgPool2D") is cyconv_gap.GlobalAvgPool2DNumpy
    out = io.StringIO()
    cyconv.show_config(file=out)
    assert "gap (cyconv-gap" in out.getvalue()


def test_compiled_kernel_is_loaded():
    assert cyconv_gap._gap is not None, cyconv_gap._GAP_IMPORT_ERROR


# Conformance: both backends; the cython one is also compared with the numpy reference.
@parametrize_with_checks(["GlobalAvgPool2D"], backend="all")
def test_conformance(layer, check):
    check(layer)


def test_check_layer_on_an_odd_shape():
    report = check_layer("GlobalAvgPool2D", backend="cython", input_shape=(5, 1, 7))
    assert report["check_matches_reference"].status == "passed"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_gradient(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6)).astype(dtype)
    for backend in ("cython", "numpy"):
        layer = cyconv.create_layer("GlobalAvgPool2D", backend=backend)
        y = layer.forward(x)
        assert y.shape == (3, 4) and y.dtype == dtype
        np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(2, 3)),
                                   rtol=1e-6 if dtype == np.float32 else 1e-13)
        dout = rng.standard_normal((3, 4)).astype(dtype)
        dx = layer.backward(dout)
        assert dx.shape == x.shape and dx.dtype == dtype
        np.testing.assert_allclose(dx, np.broadcast_to(dout[:, :, None, None] / 30, x.shape),
                                   rtol=1e-6)


def test_threads_large_input_bitwise_identical():
    """Big enough for several threads: one feature map per thread, fixed summation order."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    layer = cyconv.create_layer("GlobalAvgPool2D", backend="cython")
    ref = cyconv.create_layer("GlobalAvgPool2D", backend="numpy").forward(x)
    results = []
    try:
        for n in (1, 2, 4):
            cyconv.set_num_threads(n)
            results.append(layer.forward(x))
    finally:
        cyconv.set_num_threads(None)
    for y in results:
        np.testing.assert_array_equal(y, results[0])
    np.testing.assert_array_equal(results[0], ref)  # both sum in float64, then round


def test_output_shape_and_errors():
    layer = cyconv.create_layer("GlobalAvgPool2D")
    assert layer.output_shape((7, 3, 3)) == (7,)
    with pytest.raises(ValueError, match="4-D"):
        layer.forward(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="H, W >= 1"):
        layer.forward(np.ones((2, 3, 0, 4)))
    with pytest.raises(TypeError, match="float32 or float64"):
        layer.forward(np.ones((1, 1, 2, 2), dtype=np.float16))
    layer.forward(np.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="dout must have shape"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(TypeError):
        cyconv.create_layer("GlobalAvgPool2D", kernel_size=2)


def test_empty_batch():
    for backend in ("cython", "numpy"):
        layer = cyconv.create_layer("GlobalAvgPool2D", backend=backend)
        assert layer.forward(np.ones((0, 3, 2, 2))).shape == (0, 3)
        assert layer.backward(np.ones((0, 3))).shape == (0, 3, 2, 2)


def test_built_against_cyconv_headers():
    import os

    include = cyconv.get_include()
    assert os.path.isfile(os.path.join(include, "cyconv_ext", "_fused.pxd"))
    assert os.path.isfile(os.path.join(include, "cyconv_ext", "_openmp.pxd"))
    assert isinstance(cyconv_gap.openmp_enabled(), bool)

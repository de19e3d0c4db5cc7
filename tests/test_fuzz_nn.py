"""Fuzzing Sequential: random layer stacks and input shapes, valid or not.

Every build either yields a network whose forward/backward shapes match the
inferred ones, or raises ShapeError/ValueError/TypeError naming the failing
layer ("layer N (Name): ...").  This runs in-process: Sequential only reaches
the compiled kernels through the functional boundary that tools/fuzz/
fuzzes in crash-proof subprocesses.
"""

import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyconv
from cyconv.nn import Sequential


def _layer(draw):
    kind = draw(st.sampled_from(["conv", "maxpool", "avgpool", "relu", "sigmoid", "affine",
                                 "flatten", "batchnorm", "dropout"]))
    k = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    rounding = draw(st.sampled_from(["exact", "floor", "ceil"]))
    backend = draw(st.sampled_from([None, "numpy"]))
    if kind == "conv":
        return lambda: cyconv.Conv2D(draw(st.integers(1, 4)), k, stride=stride, padding=pad,
                                     rounding=rounding, backend=backend)
    if kind == "maxpool":
        return lambda: cyconv.MaxPool2D(k, stride, min(pad, k // 2), rounding=rounding,
                                        backend=backend)
    if kind == "avgpool":
        return lambda: cyconv.AvgPool2D(k, stride, min(pad, k // 2), rounding=rounding,
                                        backend=backend)
    if kind == "affine":
        return lambda: cyconv.Affine(draw(st.integers(1, 6)))
    simple = {"relu": cyconv.ReLU, "sigmoid": cyconv.Sigmoid, "flatten": cyconv.Flatten,
              "batchnorm": cyconv.BatchNorm, "dropout": lambda: cyconv.Dropout(0.3, rng=0)}
    return simple[kind]


@st.composite
def networks(draw):
    makers = [_layer(draw) for _ in range(draw(st.integers(1, 5)))]
    layers = [make() for make in makers] + [cyconv.Affine(3)]
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return layers, shape, draw(st.sampled_from([np.float32, np.float64]))


OUTCOMES = {"built": 0, "refused": 0}


@settings(max_examples=60, deadline=None)
@given(networks(), st.integers(1, 3))
def _fuzz_one_network(spec, n):
    layers, shape, dtype = spec
    try:
        net = Sequential(layers, input_shape=shape, dtype=dtype, seed=0)
    except (cyconv.ShapeError, ValueError, TypeError) as exc:
        assert str(exc).startswith(("layer ", "the last layer")), str(exc)
        OUTCOMES["refused"] += 1
        return
    x = np.random.default_rng(0).standard_normal((n,) + shape).astype(dtype)
    t = np.arange(n) % 3
    grads = net.gradient(x, t)
    assert np.isfinite(net.last_loss)
    assert net.last_scores.shape == (n, 3) and net.last_scores.dtype == dtype
    for key, array in net.params.items():
        assert grads[key].shape == array.shape and grads[key].dtype == array.dtype
    for (shape_in, shape_out), layer in zip(net.shapes, net.layers):
        assert tuple(layer.output_shape(shape_in)) == shape_out
    OUTCOMES["built"] += 1
    with pytest.raises(ValueError, match="does not match the network's input shape"):
        net.predict(np.zeros((n,) + shape[:-1] + (shape[-1] + 1,), dtype=dtype))


def test_sequential_builds_and_runs_or_names_the_layer():
    OUTCOMES.update(built=0, refused=0)
    _fuzz_one_network()
    # both kinds of case must occur, or the property above is vacuous
    assert OUTCOMES["built"] > 0 and OUTCOMES["refused"] > 0, OUTCOMES


@pytest.fixture
def clean_registry():
    from cyconv._registry import REGISTRY

    saved = {name: dict(slot) for name, slot in REGISTRY._layers.items()}
    yield
    REGISTRY._layers = saved


def test_plugin_layer_with_a_wrong_shape_is_named(tmp_path, clean_registry):
    """A plugin layer whose forward breaks its output_shape is reported by name and module."""
    (tmp_path / "liar_plugin.py").write_text(textwrap.dedent("""
        import cyconv

        @cyconv.register_layer("LiarDouble", backend="liar")
        class LiarDouble(cyconv.Layer):
            shape_preserving = True     # but forward doubles the last axis

            def forward(self, x, train=True):
                import numpy as np
                return np.concatenate([x, x], axis=-1)

            def backward(self, dout):
                return dout[..., : dout.shape[-1] // 2]
    """))
    cyconv.load_plugins(tmp_path)
    liar = cyconv.create_layer("LiarDouble", backend="liar")
    net = Sequential([cyconv.Flatten(), liar, cyconv.Affine(2)], input_shape=(1, 2, 2))
    with pytest.raises(ValueError) as info:
        net.predict(np.ones((1, 1, 2, 2)))
    message = str(info.value)
    assert "layer 1 (LiarDouble" in message and "liar_plugin" in message
    assert "(8,)" in message and "(4,)" in message

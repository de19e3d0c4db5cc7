"""What PyTorch, Keras and scikit-learn users expect: signatures, callables, reprs, hints."""

import inspect

import numpy as np
import pytest

import cyconv
from cyconv.nn import DeepConvNet, Sequential, SimpleConvNet


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- functional signatures: PyTorch's order and names ------------------------------

TORCH_SIGNATURES = {
    "conv2d": ["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
    "max_pool2d": ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices"],
    "avg_pool2d": ["input", "kernel_size", "stride", "padding", "ceil_mode",
                   "count_include_pad", "divisor_override"],
}
EXTRAS = {"rounding", "backend", "n_threads", "algorithm"}


@pytest.mark.parametrize("name", sorted(TORCH_SIGNATURES))
def test_signature_is_pytorchs_with_cyconvs_extras_keyword_only(name):
    params = inspect.signature(getattr(cyconv, name)).parameters
    positional = [p.name for p in params.values()
                  if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == TORCH_SIGNATURES[name]
    keyword_only = {p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keyword_only <= EXTRAS | {"indices"} and "rounding" in keyword_only


def test_conv2d_positional_keyword_and_alias_calls_agree():
    x = _rng(0).standard_normal((2, 4, 9, 9))
    w = _rng(1).standard_normal((6, 2, 3, 3))
    b = _rng(2).standard_normal(6)
    positional = cyconv.conv2d(x, w, b, 2, 1, 1, 2, rounding="exact")
    torch_names = cyconv.conv2d(input=x, weight=w, bias=b, stride=2, padding=1, groups=2)
    short_names = cyconv.conv2d(x=x, w=w, b=b, stride=2, padding=1, groups=2)
    assert positional.shape == (2, 6, 5, 5)
    np.testing.assert_array_equal(positional, torch_names)
    np.testing.assert_array_equal(positional, short_names)
    np.testing.assert_array_equal(positional, cyconv.conv2d(x, w, b=b, stride=2, padding=1,
                                                            groups=2))


@pytest.mark.parametrize("call", [
    lambda x, w: cyconv.conv2d(x, w, x=x),
    lambda x, w: cyconv.conv2d(input=x, x=x, weight=w),
    lambda x, w: cyconv.conv2d(x, w, None, b=None),
])
def test_a_parameter_and_its_alias_together_is_an_error(call):
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    with pytest.raises(TypeError, match="alias"):
        call(x, w)


def test_cyconv_extras_are_keyword_only():
    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    with pytest.raises(TypeError):
        cyconv.conv2d(x, w, None, 1, 0, 1, 1, "floor")
    with pytest.raises(TypeError):
        cyconv.max_pool2d(x, 2, 2, 0, 1, False, False, "floor")


def test_conv2d_backward_takes_pytorch_names_and_cyconvs():
    x = _rng(3).standard_normal((2, 3, 7, 7))
    w = _rng(4).standard_normal((4, 3, 3, 3))
    dy = _rng(5).standard_normal((2, 4, 4, 4))
    expected = cyconv.conv2d_backward(dy, x, w, 2, 1)
    for got in (cyconv.conv2d_backward(grad_output=dy, input=x, weight=w, stride=2, padding=1),
                cyconv.conv2d_backward(dy=dy, x=x, w=w, stride=2, padding=1)):
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def test_pools_take_pytorchs_positional_order():
    x = _rng(6).standard_normal((2, 3, 9, 9))
    y, idx = cyconv.max_pool2d(x, 3, 2, 1, 1, True, True)
    y_kw, idx_kw = cyconv.max_pool2d(x=x, kernel_size=3, stride=2, padding=1, ceil_mode=True,
                                     return_indices=True)
    np.testing.assert_array_equal(y, y_kw)
    np.testing.assert_array_equal(idx, idx_kw)
    dy = np.ones_like(y)
    np.testing.assert_array_equal(
        cyconv.max_pool2d_backward(dy, x, 3, 2, 1, 1, True, indices=idx),
        cyconv.max_pool2d_backward(grad_output=dy, input=x, kernel_size=3, stride=2, padding=1,
                                   ceil_mode=True))
    a = cyconv.avg_pool2d(x, 3, 2, 1, True, False, None)
    np.testing.assert_array_equal(a, cyconv.avg_pool2d(input=x, kernel_size=3, stride=2,
                                                       padding=1, ceil_mode=True,
                                                       count_include_pad=False))
    np.testing.assert_array_equal(
        cyconv.avg_pool2d_backward(np.ones_like(a), x, 3, 2, 1, True, False),
        cyconv.avg_pool2d_backward(dy=np.ones_like(a), x=x, kernel_size=3, stride=2, padding=1,
                                   ceil_mode=True, count_include_pad=False))


def test_the_same_positional_call_as_pytorch_gives_pytorchs_result():
    torch = pytest.importorskip("torch", reason="torch is the optional oracle here")
    tf = torch.nn.functional
    x = _rng(7).standard_normal((2, 4, 10, 10))
    w = _rng(8).standard_normal((6, 2, 3, 3))
    b = _rng(9).standard_normal(6)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    np.testing.assert_allclose(cyconv.conv2d(x, w, b, 2, 1, 1, 2, rounding="floor"),
                               tf.conv2d(tx, tw, tb, 2, 1, 1, 2).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(cyconv.max_pool2d(x, 3, 2, 1, 1, True),
                                  tf.max_pool2d(tx, 3, 2, 1, 1, True).numpy())
    np.testing.assert_allclose(cyconv.avg_pool2d(x, 3, 2, 1, True, False),
                               tf.avg_pool2d(tx, 3, 2, 1, True, False).numpy(), rtol=1e-12)


def test_shape_error_names_pytorchs_rounding():
    with pytest.raises(cyconv.ShapeError, match="rounding='floor' .*PyTorch's behaviour"):
        cyconv.conv2d(np.ones((1, 1, 32, 32)), np.ones((1, 1, 3, 3)), None, 2, 1)
    y = cyconv.conv2d(np.ones((1, 1, 32, 32)), np.ones((1, 1, 3, 3)), None, 2, 1,
                      rounding="floor")
    assert y.shape == (1, 1, 16, 16)  # torch's floor((32 + 2 - 3) / 2) + 1


# -- inputs that are not NCHW float arrays --------------------------------------------

def test_a_list_x_is_converted_or_refused_naming_x():
    w32 = np.ones((2, 3, 3, 3), np.float32)
    x_list = np.ones((1, 3, 4, 4)).tolist()
    with pytest.raises(TypeError, match=r"^x is a list.*np\.asarray\(x, dtype=np\.float32\)"):
        cyconv.conv2d(x_list, w32)
    with pytest.raises(TypeError, match=r"^x is a list"):
        cyconv.conv2d_backward(np.ones((1, 2, 2, 2), np.float32), x_list, w32)
    # with float64 peers a list is simply converted
    y = cyconv.conv2d(x_list, w32.astype(np.float64))
    np.testing.assert_array_equal(y, np.full((1, 2, 2, 2), 27.0))
    with pytest.raises(TypeError, match=r"^w is a list.*the other inputs are float32"):
        cyconv.conv2d(np.ones((1, 3, 4, 4), np.float32), w32.tolist())


@pytest.mark.parametrize("padding", ["SAME", "Same", "VALID", "valid"])
def test_padding_keywords_in_any_case(padding):
    x, w = _rng(10).standard_normal((1, 2, 7, 7)), _rng(11).standard_normal((3, 2, 3, 3))
    np.testing.assert_array_equal(cyconv.conv2d(x, w, padding=padding),
                                  cyconv.conv2d(x, w, padding=padding.lower()))
    assert cyconv.normalize_padding(padding, (7, 7), 3) == cyconv.normalize_padding(
        padding.lower(), (7, 7), 3)
    layer = cyconv.Conv2D(3, 3, padding=padding)
    layer.build((2, 7, 7))
    assert layer.output_shape((2, 7, 7)) == ((3, 7, 7) if padding.lower() == "same"
                                             else (3, 5, 5))
    assert cyconv.max_pool2d(x, 3, 1, padding=padding).shape[2:] == cyconv.max_pool2d(
        x, 3, 1, padding=padding.lower()).shape[2:]
    with pytest.raises(ValueError, match="padding"):
        cyconv.conv2d(x, w, padding="SAMEISH")


NHWC = "looks channels-last.*x.transpose\\(0, 3, 1, 2\\)"


def test_nhwc_input_gets_the_transpose_hint():
    x = np.ones((2, 8, 8, 3))
    with pytest.raises(ValueError, match=NHWC):
        cyconv.conv2d(x, np.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=NHWC):
        cyconv.Conv2D(W=np.ones((4, 3, 3, 3))).forward(x)
    with pytest.raises(ValueError, match="looks channels-last"):
        cyconv.BatchNorm(3).forward(x)  # num_features given, no gamma yet
    with pytest.raises(ValueError, match=NHWC):
        cyconv.BatchNorm(gamma=np.ones(3)).forward(x)
    # no hint where the shape does not look channels-last
    with pytest.raises(ValueError) as info:
        cyconv.conv2d(np.ones((2, 8, 8, 5)), np.ones((4, 3, 3, 3)))
    assert "channels-last" not in str(info.value)


def test_sequential_refuses_a_channels_last_input_shape():
    for shape in [(28, 28, 1), (32, 32, 3), (64, 48, 4)]:
        with pytest.raises(ValueError, match=r"looks channels-last \(H, W, C\).*input_shape=\("
                           + str(shape[2])):
            Sequential([cyconv.Conv2D(8, 3, padding=1), cyconv.Affine(10)], input_shape=shape)
    # the same rule through shape-preserving layers in front
    with pytest.raises(ValueError, match="channels-last"):
        Sequential([cyconv.ReLU(), cyconv.Conv2D(8, 3), cyconv.Affine(10)],
                   input_shape=(28, 28, 1))
    # not refused: channels-first shapes, 1-D convolutions over (C, L, 1), given weights
    Sequential([cyconv.Conv2D(8, 3, padding=1), cyconv.Affine(10)], input_shape=(1, 28, 28))
    Sequential([cyconv.Conv2D(8, (5, 1)), cyconv.Affine(10)], input_shape=(16, 100, 1))
    Sequential([cyconv.Conv2D(W=np.ones((4, 8, 3, 3))), cyconv.Affine(10)], input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match=r"looks channels-last \(H, W, C\).*use \(3, 8, 8\)"):
        Sequential([cyconv.Conv2D(W=np.ones((4, 3, 3, 3))), cyconv.Affine(10)],
                   input_shape=(8, 8, 3))
    net = Sequential([cyconv.Conv2D(4, 3, padding=1), cyconv.Affine(10)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=NHWC):
        net.predict(np.zeros((2, 8, 8, 1)))


# -- layers are callables with readable reprs ---------------------------------------

def test_layers_and_networks_are_callable():
    x = _rng(12).standard_normal((2, 1, 8, 8))
    conv = cyconv.Conv2D(4, 3, padding=1, rng=0)
    conv.build((1, 8, 8))
    np.testing.assert_array_equal(conv(x), conv.forward(x))
    np.testing.assert_array_equal(conv.backward(np.ones((2, 4, 8, 8))).shape, x.shape)
    scores = _rng(13).standard_normal((4, 3))
    loss = cyconv.SoftmaxWithLoss()
    assert loss(scores, np.array([0, 1, 2, 0])) == loss.forward(scores, np.array([0, 1, 2, 0]))
    drop = cyconv.Dropout(0.5, rng=0)
    np.testing.assert_array_equal(drop(x, train=False), x)
    net = Sequential([cyconv.Conv2D(4, 3, padding=1), cyconv.ReLU(), cyconv.Affine(10)],
                     input_shape=(1, 8, 8), seed=0)
    np.testing.assert_array_equal(net(x), net.predict(x))


def test_conv2d_repr_is_the_issues_example():
    assert repr(cyconv.Conv2D(16, 3, padding=1)) == (
        f"Conv2D(16, kernel_size=(3, 3), stride=1, padding=1, "
        f"backend={cyconv.backends_for('Conv2D')[0]!r})")
    assert repr(cyconv.Conv2D(16, 3, padding=1, backend="numpy")) == (
        "Conv2D(16, kernel_size=(3, 3), stride=1, padding=1, backend='numpy')")
    text = repr(cyconv.Conv2D(8, (3, 5), stride=2, groups=2, bias=False, algorithm="gemm",
                              weight_init="xavier", rng=3, backend="numpy"))
    assert text == ("Conv2D(8, kernel_size=(3, 5), stride=2, padding=0, groups=2, bias=False, "
                    "algorithm='gemm', weight_init='xavier', rng=3, backend='numpy')")


BUILTIN_LAYERS = [
    cyconv.Conv2D(16, 3, padding="same", dilation=2, rounding="floor", backend="numpy"),
    cyconv.MaxPool2D(2, backend="numpy"),
    cyconv.MaxPool2D(3, 2, 1, ceil_mode=True, backend="numpy"),
    cyconv.AvgPool2D(3, 1, 1, count_include_pad=False, divisor_override=4, backend="numpy"),
    cyconv.Affine(10, bias=False),
    cyconv.ReLU(backend="numpy"),
    cyconv.Sigmoid(),
    cyconv.SoftmaxWithLoss(),
    cyconv.Dropout(0.25),
    cyconv.BatchNorm(30, momentum=0.8),
    cyconv.BatchNorm(),
    cyconv.Flatten(),
]


@pytest.mark.parametrize("layer", BUILTIN_LAYERS, ids=lambda layer: type(layer).__name__)
def test_builtin_layer_repr_rebuilds_the_layer(layer):
    text = repr(layer)
    assert text.startswith(type(layer).__name__ + "(") and "backend=" in text
    again = eval(text, vars(cyconv))
    assert type(again) is type(layer) and repr(again) == text


def test_repr_shows_only_non_default_options():
    assert repr(cyconv.MaxPool2D(3, 2, 1, ceil_mode=True, backend="numpy")) == (
        "MaxPool2D(kernel_size=(3, 3), stride=2, padding=1, rounding='ceil', backend='numpy')")
    assert repr(cyconv.Affine(10)) == "Affine(10, backend='numpy')"
    assert repr(cyconv.Dropout()) == "Dropout(0.5, backend='numpy')"
    assert repr(cyconv.BatchNorm(3, eps=1e-3)) == "BatchNorm(3, eps=0.001, backend='numpy')"


def test_network_reprs():
    net = Sequential([cyconv.Conv2D(30, 3, padding=1, backend="numpy"), cyconv.ReLU(),
                      cyconv.MaxPool2D(2, backend="numpy"), cyconv.Affine(10)],
                     input_shape=(1, 8, 8), dtype=np.float32, weight_init="he", seed=0)
    relu = repr(net.layers[1])
    assert repr(net) == (
        "Sequential([\n"
        "    Conv2D(30, kernel_size=(3, 3), stride=1, padding=1, backend='numpy'),\n"
        f"    {relu},\n"
        "    MaxPool2D(kernel_size=(2, 2), stride=(2, 2), padding=0, backend='numpy'),\n"
        "    Affine(10, backend='numpy'),\n"
        "], input_shape=(1, 8, 8), dtype='float32', weight_init='he', seed=0)")
    again = eval(repr(net), dict(vars(cyconv), Sequential=Sequential))
    assert repr(again) == repr(net) and sorted(again.params) == sorted(net.params)
    assert repr(Sequential([cyconv.Affine(3)], input_shape=(4,))) == (
        "Sequential([Affine(3, backend='numpy')], input_shape=(4,))")
    assert repr(SimpleConvNet()) == "SimpleConvNet(input_shape=(1, 28, 28))"
    assert repr(SimpleConvNet((1, 8, 8), conv={"size": 3, "pad": 1}, dtype=np.float32,
                              seed=0, backend="numpy")) == (
        "SimpleConvNet(input_shape=(1, 8, 8), conv={'size': 3, 'pad': 1}, dtype='float32', "
        "seed=0, backend='numpy')")
    assert repr(DeepConvNet(seed=1)) == "DeepConvNet(input_shape=(1, 28, 28), seed=1)"

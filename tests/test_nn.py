"""cyconv.nn: Sequential shape inference, params, gradients, summary, save/load, presets."""

import zipfile

import numpy as np
import pytest

import cyconv
from cyconv.nn import DeepConvNet, Sequential, SimpleConvNet


def small_net(seed=0, dtype=np.float64, backend="numpy", **kw):
    return Sequential([cyconv.Conv2D(4, 3, padding=1, backend=backend), cyconv.ReLU(),
                       cyconv.MaxPool2D(2, backend=backend), cyconv.Affine(16), cyconv.ReLU(),
                       cyconv.Affine(3)], input_shape=(2, 6, 6), dtype=dtype, seed=seed, **kw)


def batch(n=5, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2, 6, 6)).astype(dtype), rng.integers(0, 3, n)


def test_shapes_inferred_and_params_are_references():
    net = small_net()
    assert [out for _, out in net.shapes] == [(4, 6, 6), (4, 6, 6), (4, 3, 3), (16,), (16,), (3,)]
    assert sorted(net.params) == ["0.W", "0.b", "3.W", "3.b", "5.W", "5.b"]
    assert net.params["0.W"].shape == (4, 2, 3, 3)
    assert net.params["3.W"].shape == (36, 16)
    for key, array in net.params.items():
        i, name = key.split(".")
        assert net.layers[int(i)].params[name] is array
    # an in-place update of params shows in the layer's output
    x, _ = batch()
    before = net.predict(x)
    net.params["5.b"] += 1.0
    np.testing.assert_allclose(net.predict(x), before + 1.0)


def test_loss_layer_appended_or_given_last():
    net = small_net()
    assert isinstance(net.loss_layer, cyconv.SoftmaxWithLoss)
    assert not any(isinstance(layer, cyconv.SoftmaxWithLoss) for layer in net.layers)
    loss = cyconv.SoftmaxWithLoss()
    net2 = Sequential([cyconv.Affine(3), loss], input_shape=(4,))
    assert net2.loss_layer is loss and len(net2.layers) == 1
    with pytest.raises(ValueError, match=r"layer 0 \(SoftmaxWithLoss\).*last"):
        Sequential([cyconv.SoftmaxWithLoss(), cyconv.Affine(3)], input_shape=(4,))


def test_shape_error_names_the_layer():
    layers = [cyconv.Conv2D(4, 3), cyconv.ReLU(), cyconv.Conv2D(4, 3), cyconv.MaxPool2D(2),
              cyconv.Affine(10)]
    with pytest.raises(cyconv.ShapeError) as info:
        Sequential(layers, input_shape=(1, 7, 7))
    message = str(info.value)
    assert message.startswith("layer 3 (MaxPool2D): ")
    assert "not an integer" in message and "MaxPool2D: MaxPool2D" not in message


def test_network_must_end_in_class_scores_and_input_checked():
    with pytest.raises(cyconv.ShapeError, match="Affine"):
        Sequential([cyconv.Conv2D(2, 3)], input_shape=(1, 5, 5))
    net = small_net()
    with pytest.raises(ValueError, match=r"does not match the network's input shape"):
        net.predict(np.zeros((2, 1, 6, 6)))


def test_weight_init_global_override_and_seed():
    a, b = small_net(seed=3), small_net(seed=3)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    c = small_net(seed=4)
    assert not np.array_equal(a.params["0.W"], c.params["0.W"])
    big = Sequential([cyconv.Affine(400), cyconv.Affine(10)], input_shape=(400,), seed=0,
                     weight_init=0.01)
    assert big.params["0.W"].std() == pytest.approx(0.01, rel=0.05)
    he = Sequential([cyconv.Affine(400), cyconv.Affine(10)], input_shape=(400,), seed=0,
                    weight_init="he")
    xavier = Sequential([cyconv.Affine(400), cyconv.Affine(10)], input_shape=(400,), seed=0,
                        weight_init="xavier")
    assert he.params["0.W"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    assert xavier.params["0.W"].std() == pytest.approx(np.sqrt(1 / 400), rel=0.05)
    # per-layer choice kept without a global override
    mixed = Sequential([cyconv.Affine(400, weight_init=0.5), cyconv.Affine(10)],
                       input_shape=(400,), seed=0)
    assert mixed.params["0.W"].std() == pytest.approx(0.5, rel=0.05)


def test_dtype_float32():
    net = small_net(dtype=np.float32)
    assert all(a.dtype == np.float32 for a in net.params.values())
    x, t = batch()
    assert net.predict(x).dtype == np.float32
    grads = net.gradient(x, t)
    assert all(grads[k].dtype == np.float32 for k in net.params)


def test_gradient_matches_numerical_gradient():
    net = small_net(seed=0)
    x, t = batch(4)
    grads = net.gradient(x, t)
    assert set(grads) == set(net.params)
    rng = np.random.default_rng(0)
    for key, p in net.params.items():
        for flat in rng.choice(p.size, size=min(4, p.size), replace=False):
            idx = np.unravel_index(flat, p.shape)
            old = p[idx]
            p[idx] = old + 1e-5
            up = net.loss(x, t)
            p[idx] = old - 1e-5
            down = net.loss(x, t)
            p[idx] = old
            assert grads[key][idx] == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-7), key


def test_gradient_skips_the_input_gradient():
    """Nothing needs d(loss)/d(input): the first layer gets backward_params
    (Conv2D then skips dx), and a first layer without parameters no backward."""
    net = small_net(seed=0)
    x, t = batch(4)
    first = net.layers[0]
    calls = []
    first.backward = lambda dout: calls.append("backward")
    real = first.backward_params
    first.backward_params = lambda dout: (calls.append("params"), real(dout))[1]
    grads = net.gradient(x, t)
    assert calls == ["params"] and set(grads) == set(net.params)

    net = Sequential([cyconv.ReLU(), cyconv.Flatten(), cyconv.Affine(3)], input_shape=(1, 2, 2),
                     seed=0)
    net.layers[0].backward = lambda dout: pytest.fail("the input layer's backward ran")
    assert set(net.gradient(np.ones((2, 1, 2, 2)), np.array([0, 2]))) == {"2.W", "2.b"}


def test_accuracy_evaluate_and_one_hot():
    net = small_net()
    x, t = batch(7)
    scores = net.predict(x)
    expected = np.mean(scores.argmax(axis=1) == t)
    assert net.accuracy(x, t, batch_size=3) == pytest.approx(expected)
    assert net.accuracy(x, np.eye(3)[t], batch_size=2) == pytest.approx(expected)
    loss, acc = net.evaluate(x, t, batch_size=3)
    assert acc == pytest.approx(expected)
    assert loss == pytest.approx(net.loss(x, t, train=False))
    assert net.last_loss is None
    net.gradient(x, t)
    assert net.last_scores.shape == (7, 3) and np.isfinite(net.last_loss)


def test_summary_table():
    net = small_net()
    text = net.summary()
    for word in ("Conv2D", "MaxPool2D", "Affine", "ReLU", "SoftmaxWithLoss", "(4, 3, 3)",
                 "numpy", "output shape"):
        assert word in text
    total = 4 * 2 * 9 + 4 + 36 * 16 + 16 + 16 * 3 + 3
    assert net.num_params() == total
    assert f"total parameters: {total:,}" in text
    printed = []
    assert net.summary(printed.append) == printed[0]


def test_save_load_round_trip(tmp_path):
    net = small_net(seed=0)
    path = tmp_path / "p.npz"
    net.save_params(path)
    other = small_net(seed=1)
    refs = {k: v for k, v in other.params.items()}
    other.load_params(path)
    x, _ = batch()
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
    for key, array in refs.items():  # loaded in place: the layers hold the same arrays
        assert other.params[key] is array
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == sorted(net.params)


@pytest.fixture
def saved(tmp_path):
    net = small_net()
    path = tmp_path / "p.npz"
    net.save_params(path)
    return net, path, {k: v.copy() for k, v in net.params.items()}


def test_load_missing_key(saved, tmp_path):
    net, _, arrays = saved
    del arrays["3.b"]
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(ValueError, match=r"'3\.b' is missing"):
        net.load_params(tmp_path / "m.npz")


def test_load_extra_key(saved, tmp_path):
    net, _, arrays = saved
    arrays["9.W"] = np.zeros(2)
    np.savez(tmp_path / "e.npz", **arrays)
    with pytest.raises(ValueError, match=r"unexpected key '9\.W'"):
        net.load_params(tmp_path / "e.npz")


def test_load_wrong_shape(saved, tmp_path):
    net, _, arrays = saved
    arrays["5.W"] = np.zeros((16, 4))
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(ValueError, match=r"'5\.W' has shape \(16, 4\).*\(16, 3\)"):
        net.load_params(tmp_path / "s.npz")


def test_load_wrong_dtype(saved, tmp_path):
    net, _, arrays = saved
    arrays["0.b"] = arrays["0.b"].astype(np.float32)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=r"'0\.b' has dtype float32.*float64"):
        net.load_params(tmp_path / "d.npz")


def test_load_bad_files(saved, tmp_path):
    net, path, _ = saved
    before = {k: v.copy() for k, v in net.params.items()}
    text = tmp_path / "t.npz"
    text.write_text("not numpy at all")
    with pytest.raises(ValueError, match="not a valid .npz"):
        net.load_params(text)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a valid .npz"):
        net.load_params(truncated)
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="npz"):
        net.load_params(npy)
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, **{k: v for k, v in before.items()}, extra=np.array([{}], dtype=object))
    with pytest.raises(ValueError):
        net.load_params(pickled)
    with pytest.raises(FileNotFoundError):
        net.load_params(tmp_path / "absent.npz")
    for key, array in before.items():  # failed loads leave the parameters untouched
        np.testing.assert_array_equal(net.params[key], array)
    assert zipfile.is_zipfile(path)


def test_simple_conv_net_preset():
    net = SimpleConvNet(seed=0)
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"0.W": (30, 1, 5, 5), "0.b": (30,), "3.W": (4320, 100), "3.b": (100,),
                      "5.W": (100, 10), "5.b": (10,)}
    assert net.params["0.W"].std() == pytest.approx(0.01, rel=0.1)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2D", "ReLU", "MaxPool2D", "Affine", "ReLU", "Affine"]
    alias = SimpleConvNet((1, 10, 10), conv={"filter_num": 3, "filter_size": 3, "pad": 1},
                          hidden=7, classes=4, seed=0)
    assert alias.params["0.W"].shape == (3, 1, 3, 3) and alias.params["3.W"].shape == (75, 7)


def test_deep_conv_net_preset():
    net = DeepConvNet(seed=0, backend="numpy")
    outs = [out for _, out in net.shapes]
    assert outs[4] == (16, 14, 14) and outs[7] == (32, 16, 16) and outs[14] == (64, 4, 4)
    assert net.params["15.W"].shape == (1024, 50) and net.params["18.W"].shape == (50, 10)
    pads = [layer.padding for layer in net.layers if isinstance(layer, cyconv.Conv2D)]
    assert pads == [1, 1, 1, 2, 1, 1]
    assert net.params["0.W"].std() == pytest.approx(np.sqrt(2 / 9), rel=0.2)
    assert net.params["15.W"].std() == pytest.approx(np.sqrt(2 / 1024), rel=0.05)
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    assert net.predict(x).shape == (2, 10)
    # dropout is off at prediction time and seeded in training
    np.testing.assert_array_equal(net.predict(x), net.predict(x))
    a = DeepConvNet(seed=5, backend="numpy").gradient(x, np.array([1, 2]))
    b = DeepConvNet(seed=5, backend="numpy").gradient(x, np.array([1, 2]))
    np.testing.assert_array_equal(a["18.W"], b["18.W"])


def test_transform_returns_a_layers_output_and_upto_is_checked():
    net = small_net()
    x, _ = batch()
    h = x
    for i, layer in enumerate(net.layers):
        h = layer.forward(h, train=False)
        np.testing.assert_array_equal(net.transform(x, i), h)
        np.testing.assert_array_equal(net.transform(x, i - len(net.layers)), h)
        np.testing.assert_array_equal(net.transform(x, layer), h)
        assert net.layer_index(layer) == i == net.layer_index(i - len(net.layers))
    np.testing.assert_array_equal(net.transform(x), net.predict(x))
    with pytest.raises(ValueError, match=r"upto=6 is out of range.*6 layers"):
        net.transform(x, 6)
    with pytest.raises(ValueError, match="upto=-7"):
        net.layer_index(-7)
    with pytest.raises(TypeError, match="upto must be a layer index"):
        net.transform(x, "3")
    with pytest.raises(TypeError, match="upto"):
        net.layer_index(True)
    with pytest.raises(ValueError, match="not one of this network's layers"):
        net.layer_index(cyconv.ReLU())


def test_inference_copy_shares_weights_and_drops_forward_state():
    import pickle

    net = small_net()
    x, t = batch(n=40)
    net.gradient(x, t)  # every layer now holds the state of a forward/backward pass
    assert "_cache" in vars(net.layers[0]) and net.last_scores is not None
    clone = net._inference_copy()
    assert all(clone.params[k] is v for k, v in net.params.items())       # no weight copied
    assert all(c is not layer for c, layer in zip(clone.layers, net.layers))
    for layer in clone.layers + [clone.loss_layer]:
        assert not [a for a in vars(layer) if a.startswith("_")], layer
    assert clone.last_scores is None and clone.last_loss is None
    assert len(pickle.dumps(clone)) < len(pickle.dumps(net)) / 2
    np.testing.assert_array_equal(clone.predict(x), net.predict(x))
    assert "_cache" in vars(net.layers[0])                                # the original untouched
    with pytest.raises(cyconv.ForwardNotCalledError):
        net._inference_copy().layers[0].backward(np.ones((40, 4, 6, 6)))

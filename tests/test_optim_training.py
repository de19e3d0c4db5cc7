"""cyconv.optim against hand-computed updates; cyconv.training.Trainer on tiny data."""

import io

import numpy as np
import pytest

import cyconv
from cyconv import optim
from cyconv.nn import Sequential
from cyconv.training import History, Trainer


def one_param():
    return {"w": np.array([1.0, -2.0])}, {"w": np.array([0.5, 0.25])}


def test_sgd():
    p, g = one_param()
    arr = p["w"]
    optim.SGD(lr=0.1).update(p, g)
    assert p["w"] is arr
    np.testing.assert_allclose(arr, [0.95, -2.025])


def test_momentum_two_steps():
    p, g = one_param()
    opt = optim.Momentum(lr=0.1, momentum=0.9)
    opt.update(p, g)  # v = -0.1 g
    np.testing.assert_allclose(p["w"], [1 - 0.05, -2 - 0.025])
    opt.update(p, g)  # v = 0.9 * (-0.1 g) - 0.1 g = -0.19 g
    np.testing.assert_allclose(p["w"], [1 - 0.05 - 0.095, -2 - 0.025 - 0.0475])


def test_nesterov_textbook_formula():
    p, g = one_param()
    opt = optim.Nesterov(lr=0.1, momentum=0.9)
    opt.update(p, g)
    v = -0.1 * g["w"]
    expected = np.array([1.0, -2.0]) + 0.81 * v - 1.9 * 0.1 * g["w"]
    np.testing.assert_allclose(p["w"], expected)
    opt.update(p, g)
    v = 0.9 * v - 0.1 * g["w"]
    expected = expected + 0.81 * v - 1.9 * 0.1 * g["w"]
    np.testing.assert_allclose(p["w"], expected)


def test_adagrad():
    p, g = one_param()
    opt = optim.AdaGrad(lr=0.1)
    opt.update(p, g)
    np.testing.assert_allclose(p["w"], [1 - 0.1 * 0.5 / (0.5 + 1e-7),
                                        -2 - 0.1 * 0.25 / (0.25 + 1e-7)])
    opt.update(p, g)
    h = 2 * g["w"] ** 2
    np.testing.assert_allclose(p["w"], [1 - 0.1 * 0.5 / (0.5 + 1e-7) - 0.1 * 0.5 / (np.sqrt(h[0]) + 1e-7),
                                        -2 - 0.1 * 0.25 / (0.25 + 1e-7)
                                        - 0.1 * 0.25 / (np.sqrt(h[1]) + 1e-7)])


def test_rmsprop():
    p, g = one_param()
    optim.RMSprop(lr=0.01, decay_rate=0.99).update(p, g)
    h = 0.01 * g["w"] ** 2
    np.testing.assert_allclose(p["w"], np.array([1.0, -2.0]) - 0.01 * g["w"] / (np.sqrt(h) + 1e-7))


def test_adam_first_and_second_step():
    p, g = one_param()
    opt = optim.Adam(lr=0.001, beta1=0.9, beta2=0.999)
    opt.update(p, g)
    # step 1: m = 0.1 g, v = 0.001 g^2, lr_t = lr sqrt(0.001)/0.1 -> step = lr * g/|g| (approx)
    lr_t = 0.001 * np.sqrt(1 - 0.999) / (1 - 0.9)
    m, v = 0.1 * g["w"], 0.001 * g["w"] ** 2
    w1 = np.array([1.0, -2.0]) - lr_t * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(p["w"], w1)
    g2 = {"w": np.array([-1.0, 2.0])}
    opt.update(p, g2)
    lr_t = 0.001 * np.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    m = m + 0.1 * (g2["w"] - m)
    v = v + 0.001 * (g2["w"] ** 2 - v)
    np.testing.assert_allclose(p["w"], w1 - lr_t * m / (np.sqrt(v) + 1e-7))


def test_eps_is_a_parameter_of_the_adaptive_optimizers():
    p, g = one_param()
    optim.AdaGrad(lr=0.1, eps=0.5).update(p, g)
    np.testing.assert_allclose(p["w"], [1 - 0.1 * 0.5 / (0.5 + 0.5), -2 - 0.1 * 0.25 / 0.75])
    p, g = one_param()
    optim.RMSprop(lr=0.1, decay_rate=0.0, eps=0.25).update(p, g)
    np.testing.assert_allclose(p["w"], [1 - 0.1 * 0.5 / 0.75, -2 - 0.1 * 0.25 / 0.5])
    p, g = one_param()
    optim.Adam(lr=0.1, eps=0.25).update(p, g)
    lr_t = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)
    np.testing.assert_allclose(p["w"], [1.0, -2.0] - lr_t * 0.1 * g["w"] / (np.sqrt(0.001) * g["w"] + 0.25))
    for bad in (-1e-8, float("nan"), float("inf"), True, "1e-8"):
        for make in (lambda e: optim.AdaGrad(eps=e), lambda e: optim.RMSprop(eps=e),
                     lambda e: optim.Adam(eps=e)):
            with pytest.raises(ValueError, match="eps must be"):
                make(bad)
    with pytest.raises(ValueError, match="eps_placement must be one of"):
        optim.Adam(eps_placement="v_hat")


def pytorch_adam_steps(w, grads, lr, beta1, beta2, eps):
    """torch.optim.Adam's documented algorithm (eps added to sqrt(v_hat)), by hand."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w = w - lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    return w


@pytest.mark.parametrize("fused", [True, False])
def test_adam_eps_on_sqrt_v_hat_is_the_pytorch_step(fused):
    """Gradients as small as eps are where the two placements part: the
    default (the textbook's) damps them more in early steps than PyTorch's."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(50)
    grads = [rng.standard_normal(50) * 10.0 ** rng.integers(-9, 0, 50) for _ in range(5)]
    expected = pytorch_adam_steps(w0, grads, 0.01, 0.9, 0.999, 1e-8)
    results = {}
    for placement in ("sqrt_v", "sqrt_v_hat"):
        p = {"w": w0.copy()}
        opt = optim.Adam(lr=0.01, eps=1e-8, eps_placement=placement)
        if not fused:
            opt._fused = None
        for g in grads:
            opt.update(p, {"w": g})
        results[placement] = p["w"]
    np.testing.assert_allclose(results["sqrt_v_hat"], expected, rtol=1e-13, atol=1e-15)
    assert np.abs(results["sqrt_v"] - expected).max() > 1e-3  # a real difference


def test_adam_sqrt_v_hat_tracks_torch_training():
    """SimpleConvNet-style training on cyconv (any backend) and on torch from
    the same weights and batches: with PyTorch's eps placement the weights
    stay together over 20 Adam steps (rounding only); with the textbook's they
    part at the first step, by about one learning rate."""
    torch = pytest.importorskip("torch", reason="torch not installed: optional oracle test")
    from torch import nn

    rng = np.random.default_rng(0)
    x = rng.random((200, 1, 12, 12))
    t = rng.integers(0, 10, 200)

    def as_torch(w):  # cyconv's Affine W is (in, out), torch's Linear weight (out, in)
        return w if w.ndim == 4 else w.T

    drift = {}
    for placement in ("sqrt_v", "sqrt_v_hat"):
        net = Sequential([cyconv.Conv2D(6, 5), cyconv.ReLU(), cyconv.MaxPool2D(2),
                          cyconv.Affine(20), cyconv.ReLU(), cyconv.Affine(10)],
                         input_shape=(1, 12, 12), weight_init=0.01, seed=0)
        ref = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(6 * 4 * 4, 20), nn.ReLU(), nn.Linear(20, 10)).double()
        pairs = ((ref[0], "0"), (ref[4], "3"), (ref[6], "5"))
        with torch.no_grad():
            for module, key in pairs:
                module.weight.copy_(torch.from_numpy(as_torch(net.params[key + ".W"]).copy()))
                module.bias.copy_(torch.from_numpy(net.params[key + ".b"]))
        ours = optim.Adam(lr=1e-3, eps=1e-8, eps_placement=placement)
        theirs = torch.optim.Adam(ref.parameters(), lr=1e-3, eps=1e-8)
        for _ in range(20):
            idx = rng.permutation(200)[:20]
            ours.update(net.params, net.gradient(x[idx], t[idx]))
            theirs.zero_grad()
            nn.functional.cross_entropy(ref(torch.from_numpy(x[idx])),
                                        torch.from_numpy(t[idx])).backward()
            theirs.step()
        drift[placement] = max(
            np.abs(module.weight.detach().numpy() - as_torch(net.params[key + ".W"])).max()
            for module, key in pairs)
    assert drift["sqrt_v_hat"] < 1e-10, drift  # float64: 1e-16 seen
    assert drift["sqrt_v"] > 1e-4, drift


@pytest.mark.parametrize("placement", optim.Adam.EPS_PLACEMENTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_fused_pass_is_bitwise_the_numpy_code(monkeypatch, dtype, placement):
    """The compiled one-pass Adam (contiguous same-dtype arrays) and the NumPy
    code give identical bits over several steps, for any thread count; odd
    layouts (a strided parameter, a float64 gradient for float32 weights) take
    the NumPy code."""
    if optim._fused_adam() is None:
        pytest.skip("the compiled extension is not built: there is no fused pass to compare")
    from cyconv.backends import cython_backend
    monkeypatch.setattr(cython_backend, "WORK_PER_THREAD", 1)  # threads even on small arrays
    rng = np.random.default_rng(0)
    shapes = {"W": (40, 1000), "b": (7,), "big": (16384 * 2 + 3,)}
    start = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    start["W"][0, :3] = [0.0, 1e-30, -1e30]
    grads = [{k: (rng.standard_normal(s) * 10.0 ** rng.integers(-8, 3)).astype(dtype)
              for k, s in shapes.items()} for _ in range(4)]
    results = []
    for fused, threads in ((False, 1), (True, 1), (True, 2), (True, 3)):
        params = {k: v.copy() for k, v in start.items()}
        arrays = dict(params)
        opt = optim.Adam(lr=0.01, eps_placement=placement)
        if not fused:
            opt._fused = None
        monkeypatch.setattr(cyconv._threads, "_global_setting", threads)
        for g in grads:
            opt.update(params, g)
        assert all(params[k] is arrays[k] for k in params)  # in place
        results.append(params)
    for other in results[1:]:
        for k in shapes:
            np.testing.assert_array_equal(other[k], results[0][k], err_msg=k)
            assert other[k].tobytes() == results[0][k].tobytes()
    # odd layouts fall to the NumPy code and still agree with it
    assert not optim._fusable(np.ones((4, 4))[:, ::2], np.ones((4, 2)), np.ones((4, 2)),
                              np.ones((4, 2)))
    assert not optim._fusable(np.ones(3, np.float32), np.ones(3), np.ones(3, np.float32),
                              np.ones(3, np.float32))


def test_float32_params_stay_float32_and_in_place():
    p = {"w": np.ones(3, dtype=np.float32)}
    arr = p["w"]
    for cls in (optim.SGD, optim.Momentum, optim.Nesterov, optim.AdaGrad, optim.RMSprop,
                optim.Adam):
        cls().update(p, {"w": np.full(3, 0.5, dtype=np.float32)})
        assert p["w"] is arr and arr.dtype == np.float32


def test_repr_shows_every_setting_and_rebuilds_the_optimizer():
    opt = optim.Adam(lr=0.01, beta2=0.99, eps=1e-8, eps_placement="sqrt_v_hat")
    assert repr(opt) == ("Adam(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-08, "
                         "eps_placement='sqrt_v_hat')")
    for cls in optim.OPTIMIZERS.values():
        again = eval(repr(cls()), vars(optim))
        assert type(again) is cls and repr(again) == repr(cls())

    class Custom(optim.SGD):
        def __init__(self, lr=0.1, schedule=None):  # a setting it does not store
            super().__init__(lr)

    assert repr(Custom()) == "Custom(lr=0.1)"


def test_get_optimizer_and_errors():
    assert isinstance(optim.get_optimizer("ADAM", lr=0.1), optim.Adam)
    sgd = optim.SGD()
    assert optim.get_optimizer(sgd) is sgd
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get_optimizer("lbfgs")
    with pytest.raises(ValueError, match="bad parameters"):
        optim.get_optimizer("sgd", momentum=0.9)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(lr=-1)
    with pytest.raises(KeyError, match="'w'"):
        optim.SGD().update({"w": np.ones(2)}, {})
    with pytest.raises(ValueError, match="shape"):
        optim.SGD().update({"w": np.ones(2)}, {"w": np.ones(3)})


# -- Trainer ---------------------------------------------------------------------------------

def toy_data(n=240, seed=0):
    """4 classes of 6x6 images: a bright bar in one of four places, plus noise."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 4, n)
    x = 0.3 * rng.standard_normal((n, 1, 6, 6))
    for i, c in enumerate(t):
        if c == 0:
            x[i, 0, 1, :] += 1
        elif c == 1:
            x[i, 0, 4, :] += 1
        elif c == 2:
            x[i, 0, :, 1] += 1
        else:
            x[i, 0, :, 4] += 1
    return x, t


def toy_net(seed=0):
    return Sequential([cyconv.Conv2D(4, 3, padding=1), cyconv.ReLU(), cyconv.MaxPool2D(2),
                       cyconv.Affine(4)], input_shape=(1, 6, 6), seed=seed)


def run(seed=0, epochs=3, **kw):
    x, t = toy_data()
    net = toy_net()
    trainer = Trainer(net, x[:200], t[:200], x[200:], t[200:], epochs=epochs, batch_size=20,
                      optimizer="adam", optimizer_params={"lr": 0.01}, seed=seed,
                      progress=False, **kw)
    return net, trainer, trainer.train()


def test_training_lowers_loss_and_raises_accuracy():
    net, trainer, history = run(epochs=4)
    x, t = toy_data()
    assert isinstance(history, History) and history is trainer.history
    assert history.epochs == 4 and history.steps == 40 and history.samples == 800
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_loss[-1] < history.test_loss[0]
    assert history.test_acc[-1] > history.test_acc[0] or history.test_acc[0] == 1.0
    assert history.test_acc[-1] >= 0.9
    assert history.test_acc[-1] == pytest.approx(net.accuracy(x[200:], t[200:]))
    assert not history.interrupted and history.train_time > 0
    assert len(history.epoch_time) == 4
    assert set(history.as_dict()) >= {"train_loss", "train_acc", "test_loss", "test_acc"}


def test_trainer_reproducible_with_seed():
    net_a, _, ha = run(seed=7, epochs=2)
    net_b, _, hb = run(seed=7, epochs=2)
    assert ha.train_loss == hb.train_loss and ha.test_acc == hb.test_acc
    for key in net_a.params:
        np.testing.assert_array_equal(net_a.params[key], net_b.params[key])
    _, _, hc = run(seed=8, epochs=2)
    assert hc.train_loss != ha.train_loss


def test_batches_without_replacement():
    seen = []

    class Spy:
        def __init__(self, net):
            self.net = net
            self.params = net.params

        def gradient(self, x, t):
            seen.append(x[:, 0, 0, 0].copy())
            return self.net.gradient(x, t)

        def __getattr__(self, name):  # loss, accuracy, last_loss, ...
            return getattr(self.net, name)

    x, t = toy_data(50)
    x[:, 0, 0, 0] = np.arange(50)  # tag every sample
    Trainer(Spy(toy_net()), x, t, x, t, epochs=2, batch_size=16, seed=0, progress=False).train()
    sizes = [len(b) for b in seen]
    assert sizes == [16, 16, 16, 2] * 2
    for epoch in (seen[:4], seen[4:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(50))
    assert not np.array_equal(np.concatenate(seen[:4]), np.concatenate(seen[4:]))


def test_keyboard_interrupt_keeps_history_and_params():
    def interrupt(trainer, epoch, step, loss):
        if epoch == 2 and step == 3:
            raise KeyboardInterrupt

    net, trainer, history = run(epochs=5, callback=interrupt)
    assert history.interrupted and trainer.interrupted
    assert history.epochs == 1 and history.steps == 14
    # the parameters reached so far are kept: those after the 14th step
    net2 = toy_net()
    x, t = toy_data()
    order_rng = np.random.default_rng(0)
    opt = optim.Adam(lr=0.01)
    steps = 0
    for _ in range(2):
        order = order_rng.permutation(200)
        for s in range(10):
            if steps == 14:
                break
            idx = order[s * 20:(s + 1) * 20]
            opt.update(net2.params, net2.gradient(x[idx], t[idx]))
            steps += 1
    for key in net.params:
        np.testing.assert_allclose(net.params[key], net2.params[key])


def test_keyboard_interrupt_from_the_network(monkeypatch):
    x, t = toy_data()
    net = toy_net()
    calls = {"n": 0}
    original = net.gradient

    def gradient(xb, tb):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt
        return original(xb, tb)

    monkeypatch.setattr(net, "gradient", gradient)
    out = io.StringIO()
    trainer = Trainer(net, x[:200], t[:200], x[200:], t[200:], epochs=4, batch_size=20,
                      seed=0, progress=True, file=out)
    history = trainer.train()
    assert history.interrupted and history.epochs == 2 and history.steps == 24
    assert "interrupted" in out.getvalue()


def test_progress_output_plain_and_tqdm(monkeypatch):
    from cyconv import training

    monkeypatch.setattr(training, "_tqdm", lambda: None)
    out = io.StringIO()
    x, t = toy_data()
    Trainer(toy_net(), x[:200], t[:200], x[200:], t[200:], epochs=2, batch_size=50, seed=0,
            progress=True, file=out).train()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "test loss" in lines[0] and "samples/s" in lines[0]
    monkeypatch.undo()
    pytest.importorskip("tqdm")
    out = io.StringIO()
    Trainer(toy_net(), x[:200], t[:200], x[200:], t[200:], epochs=1, batch_size=50, seed=0,
            progress=True, file=out).train()
    assert "epoch 1/1" in out.getvalue()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_live_bar_only_on_a_terminal_or_in_a_notebook():
    tqdm = pytest.importorskip("tqdm")
    from cyconv import training

    x, t = toy_data()
    log = io.StringIO()  # a file or a pipe: one plain line per epoch
    Trainer(toy_net(), x[:200], t[:200], x[200:], t[200:], epochs=2, batch_size=50, seed=0,
            progress=True, file=log).train()
    assert "\r" not in log.getvalue()
    assert [line.split(":")[0] for line in log.getvalue().splitlines()] == ["epoch 1/2",
                                                                         "epoch 2/2"]
    terminal = _Terminal()
    Trainer(toy_net(), x[:200], t[:200], x[200:], t[200:], epochs=1, batch_size=50, seed=0,
            progress=True, file=terminal).train()
    assert "\r" in terminal.getvalue() and "img" in terminal.getvalue()
    notebook = type("tqdm_notebook", (tqdm.std.tqdm,), {"__module__": "tqdm.notebook"})
    assert training._shows_a_bar(notebook, io.StringIO())
    assert not training._shows_a_bar(tqdm.std.tqdm, io.StringIO())


def test_trainer_argument_errors():
    x, t = toy_data(20)
    with pytest.raises(ValueError, match="samples"):
        Trainer(toy_net(), x, t[:5])
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(toy_net(), x, t, batch_size=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        Trainer(toy_net(), x, t, optimizer="nope")
    trainer = Trainer(toy_net(), x, t, epochs=1, batch_size=10, optimizer=optim.SGD(lr=0.1),
                      progress=False)
    history = trainer.train()
    assert history.epochs == 1 and np.isnan(history.test_acc[0])


# -- plots (cyconv.plots) ----------------------------------------------------------------------

def test_plots_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from cyconv import plots

    _, _, history = run(epochs=2)
    curves = plots.plot_history(history, tmp_path / "curves.png", title="toy")
    with open(curves, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    plots.plot_history(history.as_dict(), tmp_path / "curves2.png")
    w = np.random.default_rng(0).standard_normal((7, 1, 3, 3))
    path = plots.plot_filters(w, w * 2, tmp_path / "filters.png")
    assert (tmp_path / "filters.png").stat().st_size > 1000 and path.endswith("filters.png")
    plots.plot_filters(w, path=tmp_path / "only.png")
    with pytest.raises(ValueError, match="FN, C, FH, FW"):
        plots.plot_filters(w[0], path=tmp_path / "bad.png")
    with pytest.raises(ValueError, match="differ"):
        plots.plot_filters(w, w[:3], tmp_path / "bad.png")


def test_plots_without_matplotlib(monkeypatch, tmp_path):
    import sys

    from cyconv import plots

    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "cyconv\[demo\]"'):
        plots.plot_history(History(train_loss=[1.0]), tmp_path / "x.png")


def test_keyboard_interrupt_during_evaluation(monkeypatch):
    x, t = toy_data()
    net = toy_net()
    calls = {"n": 0}
    original = net.evaluate

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(net, "evaluate", evaluate)
    history = Trainer(net, x[:200], t[:200], x[200:], t[200:], epochs=3, batch_size=50,
                      seed=0, progress=False).train()
    assert history.interrupted and history.epochs == 1 and history.steps == 8
    assert len(history.train_acc) == len(history.test_loss) == len(history.test_acc) == 1


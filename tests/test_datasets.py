"""cyconv.datasets: digits, MNIST IDX files (written here: gzip, raw, broken), real MNIST."""

import gzip
import os
import struct
import sys

import numpy as np
import pytest

from cyconv import datasets

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")


def idx_bytes(array, magic):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_set(folder, n=7, kind="t10k", compress=True, images=None, labels=None):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    lab = rng.integers(0, 10, n, dtype=np.uint8)
    images = idx_bytes(img, 2051) if images is None else images
    labels = idx_bytes(lab, 2049) if labels is None else labels
    suffix = ".gz" if compress else ""
    opener = gzip.open if compress else open
    with opener(os.path.join(folder, f"{kind}-images-idx3-ubyte{suffix}"), "wb") as f:
        f.write(images)
    with opener(os.path.join(folder, f"{kind}-labels-idx1-ubyte{suffix}"), "wb") as f:
        f.write(labels)
    return img, lab


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_gzip_and_raw(tmp_path, compress):
    img, lab = write_set(tmp_path, compress=compress)
    x, t = datasets.load_mnist(tmp_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], img / 255.0, rtol=1e-6)
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_array_equal(t, lab)
    assert t.dtype == np.int64
    raw, _ = datasets.load_mnist(tmp_path, normalize=False)
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw[:, 0], img)
    x64, _ = datasets.load_mnist(str(tmp_path), dtype=np.float64)
    assert x64.dtype == np.float64


def test_load_mnist_train_kind_and_missing_files(tmp_path):
    write_set(tmp_path, n=3, kind="train")
    x, _ = datasets.load_mnist(tmp_path, kind="train")
    assert len(x) == 3
    with pytest.raises(FileNotFoundError, match="t10k"):
        datasets.load_mnist(tmp_path, kind="t10k")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load_mnist(tmp_path / "nope")
    with pytest.raises(ValueError, match="kind"):
        datasets.load_mnist(tmp_path, kind="test")


def test_bad_magic_numbers(tmp_path):
    img = np.zeros((2, 28, 28), np.uint8)
    lab = np.zeros(2, np.uint8)
    # labels where the images should be
    write_set(tmp_path, images=idx_bytes(lab, 2049), labels=idx_bytes(lab, 2049))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: bad magic number 2049.*2051"):
        datasets.load_mnist(tmp_path)
    write_set(tmp_path, images=idx_bytes(img, 2051), labels=idx_bytes(img, 2051))
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte.gz: bad magic number 2051.*2049"):
        datasets.load_mnist(tmp_path)


def test_truncated_and_garbage_files(tmp_path):
    img = np.zeros((5, 28, 28), np.uint8)
    lab = np.zeros(5, np.uint8)
    good = idx_bytes(img, 2051)
    write_set(tmp_path, images=good[:-100], labels=idx_bytes(lab, 2049))
    with pytest.raises(ValueError, match=r"images-idx3-ubyte.gz: truncated.*\(5, 28, 28\)"):
        datasets.load_mnist(tmp_path)
    write_set(tmp_path, images=good[:10], labels=idx_bytes(lab, 2049))
    with pytest.raises(ValueError, match="truncated header"):
        datasets.load_mnist(tmp_path)
    write_set(tmp_path, images=good + b"xx", labels=idx_bytes(lab, 2049))
    with pytest.raises(ValueError, match="2 unexpected bytes"):
        datasets.load_mnist(tmp_path)
    write_set(tmp_path, compress=False, images=b"garbage garbage", labels=b"x")
    for name in os.listdir(tmp_path):
        if name.endswith(".gz"):
            os.remove(tmp_path / name)
    with pytest.raises(ValueError, match="images-idx3-ubyte: bad magic number"):
        datasets.load_mnist(tmp_path)
    # a gzip file cut in the middle
    write_set(tmp_path, images=good, labels=idx_bytes(lab, 2049))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        datasets.load_mnist(tmp_path)


def test_count_mismatch_and_label_range(tmp_path):
    write_set(tmp_path, images=idx_bytes(np.zeros((4, 28, 28)), 2051),
              labels=idx_bytes(np.zeros(3), 2049))
    with pytest.raises(ValueError, match="holds 4 images but .* holds 3 labels"):
        datasets.load_mnist(tmp_path)
    write_set(tmp_path, images=idx_bytes(np.zeros((2, 28, 28)), 2051),
              labels=idx_bytes(np.array([1, 12]), 2049))
    with pytest.raises(ValueError, match="label 12 is out of range"):
        datasets.load_mnist(tmp_path)


def test_load_digits():
    pytest.importorskip("sklearn")
    x, t = datasets.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float64
    assert x.min() == 0 and x.max() == 1
    assert t.shape == (1797,) and set(np.unique(t)) == set(range(10))
    x32, _ = datasets.load_digits(dtype=np.float32)
    assert x32.dtype == np.float32


def test_load_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'pip install "cyconv\[demo\]"'):
        datasets.load_digits()


def test_train_test_split():
    x = np.arange(100).reshape(100, 1, 1, 1).astype(float)
    t = np.arange(100)
    xa, ta, xb, tb = datasets.train_test_split(x, t, 0.2, seed=1)
    assert len(xa) == 80 and len(xb) == 20
    assert sorted(np.concatenate([ta, tb]).tolist()) == list(range(100))
    np.testing.assert_array_equal(xa[:, 0, 0, 0], ta)
    again = datasets.train_test_split(x, t, 0.2, seed=1)
    np.testing.assert_array_equal(again[3], tb)
    with pytest.raises(ValueError):
        datasets.train_test_split(x, t, 1.5)


@pytest.mark.skipif(not os.path.isdir(MNIST_DIR),
                    reason="the MNIST test set is not at ../shared/data/mnist")
def test_real_mnist_end_to_end():
    x, t = datasets.load_mnist(MNIST_DIR)
    assert x.shape == (10000, 1, 28, 28) and t.shape == (10000,)
    assert np.bincount(t).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # a short training run on real digits learns something
    from cyconv.nn import SimpleConvNet
    from cyconv.training import Trainer

    net = SimpleConvNet(conv={"filters": 8, "size": 5}, hidden=32, weight_init="he",
                        dtype=np.float32, seed=0)
    history = Trainer(net, x[:600], t[:600], x[8000:8300], t[8000:8300], epochs=2,
                      batch_size=50, optimizer_params={"lr": 3e-3}, seed=0,
                      progress=False).train()
    assert history.test_acc[-1] > 0.6

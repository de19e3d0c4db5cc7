"""Fuzzing the file boundaries: IDX (MNIST) loader, parameter files, CLI arguments.

* ``cyconv.datasets.read_idx`` / ``load_mnist`` on truncated, bit-flipped,
  garbage and gzip-damaged files: an array consistent with its header or a
  ``ValueError`` naming the file -- never another exception.
* ``Sequential.save_params`` / ``load_params``: wrong keys, shapes and dtypes,
  truncated archives, non-npz files, pickled object arrays: a clear
  ``ValueError``/``FileNotFoundError`` naming the problem, and a failed load
  leaves the network's parameters untouched.
* The CLI's argument parser with junk: a parsed namespace or exit status 2
  with a one-line message, never a traceback.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cyconv

datasets = pytest.importorskip("cyconv.datasets")
nn = pytest.importorskip("cyconv.nn")

FILE_SETTINGS = settings(max_examples=settings.default.max_examples * 3, deadline=None,
                         database=None, suppress_health_check=list(HealthCheck))


# -- IDX ----------------------------------------------------------------------

def idx_bytes(array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x800 | array.ndim
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) \
        + array.tobytes()


def _mnist_folder(tmp_path, images, labels, gz=True):
    folder = tmp_path / "mnist"
    folder.mkdir(exist_ok=True)
    for name, data in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("header"), st.integers(0, 2**32 - 1), st.integers(0, 3)),
    st.tuples(st.just("garbage"), st.binary(max_size=64)),
    st.tuples(st.just("gzip_truncate"), st.integers(0, 10**6)),
)


def _mutate(data, m):
    kind = m[0]
    if kind == "truncate":
        return data[: m[1] % (len(data) + 1)]
    if kind == "flip":
        b = bytearray(data)
        if b:
            b[m[1] % len(b)] ^= m[2]
        return bytes(b)
    if kind == "append":
        return data + m[1]
    if kind == "header":  # overwrite one 32-bit header field (magic or a dimension)
        b = bytearray(data)
        pos = 4 * m[2]
        if pos + 4 <= len(b):
            b[pos:pos + 4] = struct.pack(">I", m[1])
        return bytes(b)
    if kind == "garbage":
        return m[1]
    if kind == "gzip_truncate":
        z = gzip.compress(data)
        return z[: m[1] % (len(z) + 1)]
    raise AssertionError(kind)


def _check_idx_result(out, path):
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    data = datasets._read_bytes(path)
    header = 4 + 4 * out.ndim
    assert out.size == len(data) - header
    assert out.shape == struct.unpack(f">{out.ndim}I", data[4:header])


@FILE_SETTINGS
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=3), m=mutation,
       gz=st.booleans())
def test_read_idx_fuzz(tmp_path_factory, shape, m, gz):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=shape).astype(np.uint8)
    data = _mutate(idx_bytes(arr), m)
    if gz and m[0] != "gzip_truncate":
        data = gzip.compress(data)
    path = tmp_path_factory.mktemp("idx") / "file-idx-ubyte"
    path.write_bytes(data)
    try:
        out = datasets.read_idx(path)
    except ValueError as exc:
        assert str(path) in str(exc), f"message does not name the file: {exc}"
        return
    _check_idx_result(out, str(path))


def test_finding_read_idx_size_overflow_is_reported(tmp_path):
    """F7: a header whose dimensions multiply past 2**64 (four dims of 65536)
    must be reported as truncated, not wrap around to 0 bytes."""
    path = tmp_path / "overflow-idx4-ubyte"
    path.write_bytes(struct.pack(">I", 0x804) + struct.pack(">4I", *(65536,) * 4))
    with pytest.raises(ValueError, match="overflow-idx4-ubyte"):
        datasets.read_idx(path)


@FILE_SETTINGS
@given(m=mutation, which=st.sampled_from(["images", "labels"]), gz=st.booleans())
def test_load_mnist_fuzz(tmp_path_factory, m, which, gz):
    rng = np.random.default_rng(1)
    images = idx_bytes(rng.integers(0, 256, size=(3, 4, 4)))
    labels = idx_bytes(rng.integers(0, 10, size=3))
    if which == "images":
        images = _mutate(images, m)
    else:
        labels = _mutate(labels, m)
    folder = _mnist_folder(tmp_path_factory.mktemp("mn"), images, labels,
                           gz=gz and m[0] != "gzip_truncate")
    try:
        x, t = datasets.load_mnist(folder)
    except (ValueError, FileNotFoundError) as exc:
        assert "mnist" in str(exc).lower() or str(folder) in str(exc), str(exc)
        return
    assert x.ndim == 4 and x.shape[1] == 1 and len(x) == len(t)
    assert x.dtype == np.float32 and np.all((0 <= x) & (x <= 1))
    assert t.min() >= 0 and t.max() <= 9


@pytest.mark.parametrize("case", ["count_mismatch", "label_range", "missing_labels",
                                  "swapped", "no_folder", "images_2d"])
def test_load_mnist_inconsistent_files(tmp_path, case):
    rng = np.random.default_rng(2)
    images = idx_bytes(rng.integers(0, 256, size=(3, 4, 4)))
    labels = idx_bytes(rng.integers(0, 10, size=3))
    if case == "count_mismatch":
        labels = idx_bytes(rng.integers(0, 10, size=2))
    elif case == "label_range":
        labels = idx_bytes([1, 2, 10])
    elif case == "swapped":
        images, labels = labels, images
    elif case == "images_2d":
        images = idx_bytes(rng.integers(0, 256, size=(3, 16)))
    folder = _mnist_folder(tmp_path, images, labels)
    if case == "missing_labels":
        os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    if case == "no_folder":
        folder = tmp_path / "does-not-exist"
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        datasets.load_mnist(folder)
    msg = str(info.value)
    assert "t10k" in msg or str(folder) in msg, msg


# -- parameter files ----------------------------------------------------------

def _net(dtype=np.float64):
    return nn.Sequential([cyconv.Conv2D(2, 3), cyconv.ReLU(), cyconv.MaxPool2D(2),
                          cyconv.Affine(3)], input_shape=(1, 6, 6), dtype=dtype, seed=0)


def _params_copy(net):
    return {k: v.copy() for k, v in net.params.items()}


def _assert_unchanged(net, before):
    assert set(net.params) == set(before)
    for k, v in before.items():
        assert np.array_equal(net.params[k], v), f"failed load modified params[{k!r}]"


def test_params_round_trip(tmp_path):
    net = _net()
    path = net.save_params(tmp_path / "p.npz")
    other = _net()
    for v in other.params.values():
        v[...] = 0
    other.load_params(path)
    for k in net.params:
        assert np.array_equal(net.params[k], other.params[k])


def _write_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("case", ["missing_key", "extra_key", "wrong_shape", "wrong_dtype",
                                  "object_array", "single_npy", "text", "empty", "directory",
                                  "nonexistent", "not_zip_npz", "zip_without_npy"])
def test_load_params_bad_files(tmp_path, case):
    net = _net()
    good = {k: v.copy() for k, v in net.params.items()}
    key = sorted(good)[0]
    path = tmp_path / "bad.npz"
    expect = [key]
    if case == "missing_key":
        good.pop(key)
        _write_npz(path, good)
    elif case == "extra_key":
        good["bogus"] = np.zeros(3)
        _write_npz(path, good)
        expect = ["bogus"]
    elif case == "wrong_shape":
        good[key] = np.zeros(good[key].shape + (1,))
        _write_npz(path, good)
    elif case == "wrong_dtype":
        good[key] = good[key].astype(np.float32)
        _write_npz(path, good)
    elif case == "object_array":
        good[key] = np.array([{"evil": 1}], dtype=object)
        with open(path, "wb") as f:
            np.savez(f, **good)
        expect = ["pickle", "object", key, "corrupt", "unreadable"]
    elif case == "single_npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
        expect = ["npz", "npy"]
    elif case == "text":
        path.write_text("W1,b1\n1,2\n")
        expect = ["npz", "corrupt", "unreadable"]
    elif case == "empty":
        path.write_bytes(b"")
        expect = ["npz", "corrupt", "unreadable", "empty", "truncated"]
    elif case == "directory":
        path = tmp_path / "adir"
        path.mkdir()
        expect = ["adir"]
    elif case == "nonexistent":
        path = tmp_path / "missing.npz"
        expect = ["missing.npz"]
    elif case == "not_zip_npz":
        path.write_bytes(b"PK\x03\x04" + os.urandom(64))
        expect = ["npz", "corrupt", "truncated", "unreadable"]
    elif case == "zip_without_npy":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("W1.npy", b"not an npy file")
        expect = ["npz", "corrupt", "truncated", "unreadable", "W1"]
    before = _params_copy(net)
    with pytest.raises((ValueError, FileNotFoundError, IsADirectoryError, PermissionError)) \
            as info:
        net.load_params(path)
    msg = str(info.value)
    assert any(e.lower() in msg.lower() for e in expect), msg
    _assert_unchanged(net, before)


@FILE_SETTINGS
@given(cut=st.integers(0, 10**6), flip=st.one_of(st.none(), st.tuples(st.integers(0, 10**6),
                                                                      st.integers(1, 255))))
def test_load_params_truncated_or_corrupt(tmp_path_factory, cut, flip):
    net = _net()
    buf = io.BytesIO()
    np.savez(buf, **net.params)
    data = bytearray(buf.getvalue())
    if flip is not None:
        data[flip[0] % len(data)] ^= flip[1]
    else:
        data = data[: cut % len(data)]
    path = tmp_path_factory.mktemp("p") / "p.npz"
    path.write_bytes(bytes(data))
    target = _net()
    for v in target.params.values():
        v[...] = 7
    before = _params_copy(target)
    try:
        target.load_params(path)
    except ValueError as exc:
        assert str(path) in str(exc), str(exc)
        _assert_unchanged(target, before)
        return
    # a flipped byte the zip/npy layers cannot notice (e.g. inside the data):
    # the load may succeed, but with the right shapes and dtypes
    for k, v in net.params.items():
        assert target.params[k].shape == v.shape and target.params[k].dtype == v.dtype


# -- CLI argument parsing -----------------------------------------------------

cli = pytest.importorskip("cyconv.__main__")

OPTIONS = ["--epochs", "--batch-size", "--lr", "--seed", "--threads", "--compare-steps",
           "--data", "--data-dir", "--kind", "--model", "--optimizer", "--init", "--dtype",
           "--backend", "--save", "--plot", "--train-size", "--test-size", "--summary",
           "--quiet", "--out", "--bogus", "-x", "--"]
VALUES = ["0", "-1", "1", "3", "1e3", "nan", "inf", "-inf", "1.5", "", "abc", "digits", "mnist",
          "deep", "float16", "float32", "he", "xavier", "sgd", "adam", "numpy", "cython", "x" * 300,
          "\x00", "ü", "--", "9" * 40]


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from(["train", "demo", "layers", "info", "", "trian", "--help"]),
       pairs=st.lists(st.tuples(st.sampled_from(OPTIONS), st.sampled_from(VALUES)), max_size=3),
       extra=st.lists(st.sampled_from(OPTIONS + VALUES), max_size=2))
def test_cli_parser_fuzz(command, pairs, extra):
    argv = ([command] if command else []) + [t for p in pairs for t in p] + extra
    parser = cli.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2), (argv, exc.code)
        if exc.code == 2:
            text = err.getvalue()
            assert "error:" in text and "Traceback" not in text, text
        return
    # parsed: the numeric options hold sane values
    for name in ("epochs", "batch_size", "train_size", "test_size", "compare_steps"):
        value = getattr(args, name, None)
        assert value is None or (isinstance(value, int) and value >= 1), (name, value)
    lr = getattr(args, "lr", None)
    assert lr is None or (np.isfinite(lr) and lr > 0), f"--lr accepted {lr!r}"
    threads = getattr(args, "threads", None)
    assert threads is None or (isinstance(threads, int) and threads != 0)


@pytest.mark.parametrize("argv", [["train", "--lr", "inf"], ["demo", "--lr", "1e400"],
                                  ["train", "--init", "inf"], ["train", "--lr", "-0"]])
def test_finding_cli_rejects_non_finite_numbers(argv):
    """F8: --lr/--init accept inf (float('inf') > 0), so training runs with an
    infinite learning rate / weight std and produces NaN; expected exit 2."""
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(argv)
    assert info.value.code == 2


@pytest.mark.parametrize("argv,expect", [
    (["train", "--data", "mnist", "--data-dir", "{tmp}/nope"], "nope"),
    (["train", "--data", "mnist", "--data-dir", "{tmp}/garbage"], "t10k"),
    (["train", "--backend", "nope", "--epochs", "1"], "nope"),
])
def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv, expect):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    (garbage / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    status = cli.main(argv + ["--quiet"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and expect in err, err


@pytest.mark.parametrize("field,value", [(6, 0x01), (8, 99)])
def test_finding_load_params_corrupt_zip_header(tmp_path, field, value):
    """F9: a parameter file whose zip local header is damaged (flag bit 0
    'encrypted', or an unknown compression method) leaks RuntimeError /
    NotImplementedError from zipfile instead of ValueError naming the file."""
    net = _net()
    path = net.save_params(tmp_path / "p.npz")
    data = bytearray(open(path, "rb").read())
    pos = data.find(b"PK\x03\x04")
    data[pos + field] = value
    cd = data.find(b"PK\x01\x02")  # the central directory carries the same fields
    data[cd + field + 2] = value
    open(path, "wb").write(bytes(data))
    before = _params_copy(net)
    with pytest.raises(ValueError, match="p.npz"):
        net.load_params(path)
    _assert_unchanged(net, before)

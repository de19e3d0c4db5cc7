"""Fuzzing the file boundaries: IDX (MNIST) loader, parameter files, CLI arguments.

* ``cyconv.datasets.read_idx`` / ``load_mnist`` on truncated, bit-flipped,
  garbage and gzip-damaged files: an array consistent with its header or a
  ``ValueError`` naming the file -- never another exception.
* ``Sequential.save_params`` / ``load_params``: wrong keys, shapes and dtypes,
  truncated archives, non-npz files, pickled object arrays, members that are
  not arrays, decompression bombs, headers and sizes that lie, symlink loops:
  a clear ``ValueError``/``FileNotFoundError`` naming the problem, judged
  before anything big is read, and a failed load leaves the network's
  parameters untouched.
* The CLI's argument parser with junk: a parsed namespace or exit status 2
  with a one-line message, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import re
import struct
import zipfile
import zlib

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


# -- hostile parameter files (issue 12, items 2 and 3) ---------------------------------

def _npy(array=None, *, header=None, data=b""):
    """A .npy member: np.save's bytes, or a hand-made header dict and data."""
    buf = io.BytesIO()
    if header is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array_header_1_0(buf, header)
        buf.write(data)
    return buf.getvalue()


def _deflated_zeros(prefix, n_mib):
    """A raw deflate stream of ``prefix`` followed by n_mib MiB of zeros, made
    in milliseconds: after a full flush the compressor starts afresh, so one
    compressed MiB repeated is the stream of many."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * n_mib + c.flush(zlib.Z_FINISH)


def _write_zip(path, members):
    """A zip archive from (name, payload, method, crc, claimed size) written by
    hand, so that payloads and sizes can lie (method 0 stored, 8 deflated)."""
    out, central = io.BytesIO(), b""
    for name, payload, method, crc, size in members:
        raw, offset = name.encode(), out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc,
                              len(payload), size, len(raw), 0) + raw + payload)
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc,
                               len(payload), size, len(raw), 0, 0, 0, 0, 0, offset) + raw
    start = out.tell()
    out.write(central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members),
                                    len(members), len(central), start, 0))
    path.write_bytes(out.getvalue())
    return path


def _stored(name, data):
    return (name, data, 0, zlib.crc32(data), len(data))


def _good_members(net, skip=()):
    return [_stored(k + ".npy", _npy(v)) for k, v in net.params.items() if k not in skip]


def test_hand_made_zips_are_what_they_claim(tmp_path):
    net = _net()
    path = _write_zip(tmp_path / "p.npz", _good_members(net))
    other = _net()
    for v in other.params.values():
        v[...] = 0
    other.load_params(path)
    assert all(np.array_equal(other.params[k], v) for k, v in net.params.items())
    stream = _deflated_zeros(b"abc", 3)
    assert zlib.decompress(stream, -15) == b"abc" + bytes(3 << 20)


@pytest.mark.parametrize("junk", [b"junk", b"junk" * 40, b"\x93NUMPY\x09\x00" + b"x" * 50,
                                  b"\x93NUMPY\x01\x00\xff\xff{'descr': 'zz'"])
def test_finding_load_params_member_that_is_not_an_array(tmp_path, junk):
    """Issue 12.2: a member without the .npy magic came back from np.load as
    bytes and load_params raised AttributeError ('bytes' has no 'shape')."""
    net = _net()
    members = [(n, junk if n == "0.W.npy" else d, m, c, s) if n != "0.W.npy"
               else _stored(n, junk) for n, d, m, c, s in _good_members(net)]
    path = _write_zip(tmp_path / "p.npz", members)
    before = _params_copy(net)
    with pytest.raises(ValueError, match=r"'0\.W' is not a \.npy array") as info:
        net.load_params(path)
    assert "p.npz" in str(info.value)
    _assert_unchanged(net, before)


def test_finding_load_params_issue_reproducer(tmp_path):
    net = nn.Sequential([cyconv.Conv2D(2, 3), cyconv.Affine(3)], input_shape=(1, 6, 6), seed=0)
    path = tmp_path / "p.npz"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in net.params.items():
            b = io.BytesIO()
            np.save(b, v)
            z.writestr(k + ".npy", b"junk" if k == "0.W" else b.getvalue())
    with pytest.raises(ValueError, match="0.W"):
        net.load_params(path)


HOSTILE_LOADS = '''
import json, resource, sys, tracemalloc
import numpy as np, cyconv
from cyconv import nn
net = nn.Sequential([cyconv.Conv2D(2, 3), cyconv.ReLU(), cyconv.MaxPool2D(2), cyconv.Affine(3)],
                    input_shape=(1, 6, 6), seed=0)
before = {k: v.copy() for k, v in net.params.items()}
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (512 << 20),) * 2)
results = {}
for case, path in json.loads(sys.argv[1]).items():
    tracemalloc.start()
    try:
        net.load_params(path)
        outcome = ["loaded", ""]
    except BaseException as exc:
        outcome = [type(exc).__name__, str(exc)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    results[case] = dict(outcome=outcome, peak=peak,
                         unchanged=all(np.array_equal(net.params[k], v) for k, v in before.items()))
print(json.dumps(results))
'''


def test_finding_load_params_bombs_and_lying_headers_are_judged_before_reading(tmp_path):
    """Issue 12.3: load_params read every member in full, unexpected ones
    included, before it checked names and shapes: a small file with a member
    inflating to 1 GiB, or a header claiming shape (2**30,), exhausted memory
    (here: MemoryError under an address-space limit of 512 MiB more than the
    process has) before the file was judged.  Now each is a ValueError naming
    the key, the parameters untouched, and at most a few MiB traced."""
    import json
    import subprocess
    import sys
    net = _net()
    shape, gib = net.params["0.W"].shape, 1024
    header = _npy(header={"descr": "<f8", "fortran_order": False, "shape": shape})
    inflating = _deflated_zeros(header, gib)
    cases = {
        "bomb": _good_members(net) + [("bomb.npy", _deflated_zeros(b"", gib), 8, 0, 1 << 30)],
        "huge_shape": _good_members(net, skip="0.W") + [_stored("0.W.npy", _npy(
            header={"descr": "<f8", "fortran_order": False, "shape": (2**30,)}, data=bytes(64)))],
        "inflating_member": _good_members(net, skip="0.W") + [
            ("0.W.npy", inflating, 8, 0, len(header) + (1 << 30))],
        # the directory claims the right size: zipfile inflates no more than
        # that, so the rest of the stream is never decompressed (and the claimed
        # part must match the claimed CRC)
        "inflating_member_lying_size": _good_members(net, skip="0.W") + [
            ("0.W.npy", inflating, 8, 0, len(header) + net.params["0.W"].nbytes)],
        "inflating_member_lying_size_right_crc": _good_members(net, skip="0.W") + [
            ("0.W.npy", inflating, 8, zlib.crc32(header + bytes(net.params["0.W"].nbytes)),
             len(header) + net.params["0.W"].nbytes)],
    }
    paths = {case: str(_write_zip(tmp_path / f"{case}.npz", members))
             for case, members in cases.items()}
    assert max(os.path.getsize(p) for p in paths.values()) < (2 << 20)
    out = subprocess.run([sys.executable, "-c", HOSTILE_LOADS, json.dumps(paths)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    expect = {"bomb": r"unexpected key 'bomb'",
              "huge_shape": r"key '0\.W' has shape \(1073741824,\), the network expects",
              "inflating_member": r"key '0\.W' holds 1073741\d+ bytes",
              "inflating_member_lying_size": r"key '0\.W' is truncated or corrupt \(Bad CRC"}
    assert set(results) == set(cases)
    for case, result in results.items():
        assert result["peak"] < (8 << 20), (case, result["peak"])
        kind, message = result["outcome"]
        if case == "inflating_member_lying_size_right_crc":
            assert kind == "loaded", result  # zeros, as the directory says
            continue
        assert kind == "ValueError" and re.search(expect[case], message), (case, result)
        assert paths[case] in message, (case, message)
        assert result["unchanged"], case


def test_load_params_reads_fortran_order_and_npy_format_2(tmp_path):
    net = _net()
    key = next(k for k, v in net.params.items() if v.ndim == 2)
    members = []
    for k, v in net.params.items():
        if k == key:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asfortranarray(v), version=(2, 0))
            members.append(_stored(k + ".npy", buf.getvalue()))
        else:
            members.append(_stored(k + ".npy", _npy(v)))
    other = _net()
    for v in other.params.values():
        v[...] = 0
    other.load_params(_write_zip(tmp_path / "f.npz", members))
    assert all(np.array_equal(other.params[k], v) for k, v in net.params.items())


@pytest.mark.parametrize("case", ["duplicate", "extra_bytes", "short_member", "big_endian"])
def test_load_params_refuses_inconsistent_members(tmp_path, case):
    net = _net()
    members = _good_members(net)
    name, data = "0.b.npy", _npy(net.params["0.b"])
    if case == "duplicate":
        members.append(_stored(name, data))
        expect = r"key '0\.b' appears twice"
    elif case == "extra_bytes":
        members = _good_members(net, skip="0.b") + [_stored(name, data + b"\0" * 8)]
        expect = r"key '0\.b' holds \d+ bytes, but its \.npy header and shape make \d+"
    elif case == "short_member":
        members = _good_members(net, skip="0.b") + [_stored(name, data[:-8])]
        expect = r"key '0\.b' holds \d+ bytes"
    else:
        members = _good_members(net, skip="0.b") + [
            _stored(name, _npy(net.params["0.b"].astype(">f8")))]
        expect = r"key '0\.b' has dtype >f8, the network expects float64"
    before = _params_copy(net)
    with pytest.raises(ValueError, match=expect):
        net.load_params(_write_zip(tmp_path / "p.npz", members))
    _assert_unchanged(net, before)


def test_finding_load_params_symlink_loop_is_named(tmp_path):
    """A symlink loop was reported as 'no such parameter file'."""
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(OSError, match="loop of symbolic links.*ELOOP") as info:
        _net().load_params(a)
    assert info.value.errno == errno.ELOOP and not isinstance(info.value, FileNotFoundError)
    assert str(a) in str(info.value)
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="no such parameter file"):
        _net().load_params(dangling)

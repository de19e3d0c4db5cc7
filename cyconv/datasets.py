"""Small image data sets as NCHW float arrays.

* :func:`load_digits`: scikit-learn's bundled 8x8 handwritten digits (1,797
  images; needs ``pip install "cyconv[demo]"``).
* :func:`load_mnist`: MNIST from the original IDX files (gzip-compressed or
  raw) in a folder, with every header checked.
* :func:`train_test_split`: a seeded shuffled split.

Nothing here downloads anything.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from ._param_validation import check

__all__ = ["load_digits", "load_mnist", "read_idx", "train_test_split"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def load_digits(dtype=np.float64):
    """The 8x8 digits as ``(x, t)``: x (1797, 1, 8, 8) in [0, 1], t int64 labels 0-9.

    Raises
    ------
    ImportError
        scikit-learn is not installed (it is in the ``demo`` and ``test`` extras).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError('load_digits needs scikit-learn, which is not installed; '
                          'install it with: pip install "cyconv[demo]"') from None
    data = sk_load_digits()
    x = (np.asarray(data.images, dtype=np.float64) / 16.0).astype(dtype)
    return x[:, None, :, :], np.asarray(data.target, dtype=np.int64)


def train_test_split(x, t, test_fraction=0.2, seed=0):
    """Shuffle with ``seed`` and hold out ``test_fraction`` of the samples.

    Returns ``x_train, t_train, x_test, t_test``.
    """
    test_fraction = check("test_fraction", test_fraction)
    n = len(x)
    if n != len(t):
        raise ValueError(f"x has {n} samples but t has {len(t)}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], t[train], x[test], t[test]


def _read_bytes(path):
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    with open(path, "rb") as f:
        return f.read()


def read_idx(path, expected_magic=None):
    """Read one IDX file (gzip or raw) of unsigned bytes into an array.

    Checks the magic number (``0x00000803`` = 2051 for image files,
    ``0x00000801`` = 2049 for label files), that the header is complete and
    that the data length equals the size the header announces.

    Raises
    ------
    ValueError
        The message names the file and what is wrong.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: file too short ({len(data)} bytes) to be an IDX file")
    magic = struct.unpack(">I", data[:4])[0]
    zero, dtype_code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if expected_magic is not None and magic != expected_magic:
        kind = {IMAGES_MAGIC: "an images", LABELS_MAGIC: "a labels"}.get(expected_magic, "this")
        raise ValueError(f"{path}: bad magic number {magic} (0x{magic:08x}); {kind} IDX file "
                         f"starts with {expected_magic} (0x{expected_magic:08x})")
    if zero != 0 or dtype_code != 0x08 or ndim == 0:
        raise ValueError(f"{path}: bad magic number {magic} (0x{magic:08x}): not an IDX file "
                         f"of unsigned bytes")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, "
                         f"the file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)  # Python ints: no wrap-around on absurd headers
    actual = len(data) - header
    if actual < expected:
        raise ValueError(f"{path}: truncated: the header announces shape {dims} "
                         f"({expected} data bytes) but the file has only {actual}")
    if actual > expected:
        raise ValueError(f"{path}: {actual - expected} unexpected bytes after the data "
                         f"(header announces shape {dims}, {expected} bytes)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder, kind, what):
    names = [f"{kind}-{what}-ubyte.gz", f"{kind}-{what}-ubyte", f"{kind}-{what}.gz",
             f"{kind}-{what.replace('-idx', '.idx')}-ubyte.gz",
             f"{kind}-{what.replace('-idx', '.idx')}-ubyte"]
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no MNIST {kind} {what.split('-')[0]} file in {folder!r} "
                            f"(looked for {names[0]} or {names[1]})")


def load_mnist(path, kind="t10k", normalize=True, dtype=np.float32):
    """MNIST images and labels from the IDX files in folder ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Folder holding ``{kind}-images-idx3-ubyte[.gz]`` and
        ``{kind}-labels-idx1-ubyte[.gz]``.
    kind : {"t10k", "train"}
    normalize : bool
        Scale to [0, 1] as ``dtype``; ``False`` returns the raw uint8 pixels.
    dtype : float dtype
        Dtype of normalised images (float32 by default).

    Returns
    -------
    x : ndarray (N, 1, 28, 28)
    t : ndarray (N,) int64

    Raises
    ------
    FileNotFoundError
        The folder or a file is missing.
    ValueError
        Bad magic number, truncated or corrupt file, image/label count mismatch.
    """
    kind = check("kind", kind)
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"MNIST folder {folder!r} does not exist")
    images_path = _find(folder, kind, "images-idx3")
    labels_path = _find(folder, kind, "labels-idx1")
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected 3 dimensions (N, rows, cols), "
                         f"got shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected 1 dimension (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                         f"{len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: label {int(labels.max())} is out of range 0-9")
    x = images[:, None, :, :]
    if normalize:
        x = x.astype(dtype) / np.asarray(255, dtype=dtype)
    else:
        x = x.copy()
    return x, labels.astype(np.int64)

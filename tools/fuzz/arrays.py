"""Argument descriptions (plain, printable dicts) and the arrays they stand for.

A case names its arrays by shape, dtype, layout, contents and seed
(:func:`arr`) so that it can be printed and replayed; :func:`build_array`
materialises one inside the worker.  Dtypes float-only functions refuse,
non-finite fills and the non-contiguous layouts come from the catalogue of
:mod:`cyconv.testing.strategies`.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from hypothesis import strategies as st

from cyconv.testing.strategies import NON_FINITE_FILLS, NON_FLOAT_DTYPES, awkward_copy

GOOD_DTYPES = ("f8", "f4", ">f8", ">f4")
BAD_DTYPES = NON_FLOAT_DTYPES
# "c" (contiguous) three times: most cases are plain arrays
LAYOUTS = ("c", "c", "c", "f", "T", "neg", "strided", "memmap", "broadcast", "list")
SPECIALS = (None, None, None, None) + NON_FINITE_FILLS
FILLS = ("normal", "normal", "ties")
# the fuzzer's layout names for the catalogue's awkward layouts ("T" and "f" both
# mean column-major; kept apart so printed cases from older runs replay)
_AWKWARD = {"f": "fortran", "T": "fortran", "neg": "reversed", "strided": "strided"}


def arr(shape, dtype="f8", layout="c", fill="normal", special=None, seed=0, readonly=False):
    """Description of an array argument (materialised by :func:`build_array`)."""
    return {"kind": "array", "shape": [int(s) for s in shape], "dtype": dtype,
            "layout": layout, "fill": fill, "special": special, "seed": int(seed),
            "readonly": bool(readonly)}


def lit(value):
    """A non-array argument passed as is (junk: None, str, int, ragged list...)."""
    return {"kind": "literal", "value": value}


def _values(spec, shape, dtype):
    rng = np.random.default_rng(spec["seed"])
    size = int(np.prod(shape)) if len(shape) else 1
    if spec["fill"] == "ties":
        vals = rng.integers(-2, 3, size=size).astype(np.float64)
    else:
        vals = rng.standard_normal(size)
    special = spec.get("special")
    if special and size:
        count = max(1, size // 7)
        pos = rng.integers(0, size, size=count)
        choices = {"nan": [np.nan], "inf": [np.inf, -np.inf],
                   "mixed": [np.nan, np.inf, -np.inf]}[special]
        vals[pos] = rng.choice(choices, size=count)
    vals = vals.reshape(shape)
    dt = np.dtype(dtype)
    if dt.kind in "iub":
        with np.errstate(invalid="ignore"):
            vals = np.nan_to_num(vals, nan=0.0, posinf=3.0, neginf=-3.0)
        return (vals > 0).astype(dt) if dt.kind == "b" else np.round(vals * 3).astype(dt)
    if dt.kind == "c":
        return (vals + 1j * vals[::-1].reshape(shape) if len(shape) else vals).astype(dt)
    if dt.kind == "O":
        return vals.astype(object)
    with np.errstate(over="ignore", invalid="ignore"):
        return vals.astype(dt)


def build_array(spec, tmpdir=None):
    """Materialise an argument description (see :func:`arr`)."""
    kind = spec["kind"]
    if kind == "literal":
        return spec["value"]
    if kind == "broadcast":
        base = np.asarray(1.5, dtype=spec.get("dtype", "f8"))
        return np.broadcast_to(base, tuple(spec["shape"]))
    shape = tuple(spec["shape"])
    layout = spec["layout"]
    dtype = spec["dtype"]
    if layout in _AWKWARD:
        a = awkward_copy(_values(spec, shape, dtype), _AWKWARD[layout], readonly=False)
    elif layout == "memmap" and np.dtype(dtype).kind != "O" and int(np.prod(shape)) > 0:
        vals = _values(spec, shape, dtype)
        fd, path = tempfile.mkstemp(suffix=".mm", dir=tmpdir)
        os.close(fd)
        mm = np.memmap(path, dtype=vals.dtype, mode="w+", shape=shape)
        mm[...] = vals
        mm.flush()
        del mm
        a = np.memmap(path, dtype=vals.dtype, mode="r" if spec["readonly"] else "r+",
                      shape=shape)
    elif layout == "broadcast" and len(shape) >= 1 and shape[0] >= 1:
        row = _values(spec, (1,) + shape[1:], dtype)
        a = np.broadcast_to(row, shape)
    elif layout == "list" and np.dtype(dtype).kind == "f" and np.dtype(dtype).isnative \
            and np.dtype(dtype).itemsize == 8:
        a = _values(spec, shape, dtype).tolist()
    else:
        a = _values(spec, shape, dtype)
    if spec["readonly"] and isinstance(a, np.ndarray) and a.flags.writeable:
        a.flags.writeable = False
    return a


def clean(a, dtype=None):
    """The normalised copy the reference runs on: C-contiguous native float."""
    a = np.array(a, copy=True)
    if dtype is None:
        dtype = a.dtype.newbyteorder("=") if a.dtype.kind == "f" else np.float64
    return np.ascontiguousarray(a.astype(dtype))


def array_variant(draw, shape, dtype, *, allow_special=True, fill=None):
    """Draw the description of a valid array of ``shape`` in any layout, fill and contents."""
    layout = draw(st.sampled_from(LAYOUTS))
    return arr(shape, dtype,
               layout=layout,
               fill=fill or draw(st.sampled_from(FILLS)),
               special=draw(st.sampled_from(SPECIALS)) if allow_special else None,
               seed=draw(st.integers(0, 2**31 - 1)),
               readonly=draw(st.booleans()))

#!/usr/bin/env python
"""Crash-proof fuzzer for cyconv's public API.

Usage::

    python tools/fuzz.py --cases 10000            # long run, prints a summary
    python tools/fuzz.py --cases 2000 --seed 7    # another stream of cases
    python tools/fuzz.py --replay "<case>"        # re-run one printed case in-process

Cases are plain dicts ("specs": op name, argument descriptions, seeds) drawn
by Hypothesis strategies (:func:`case_strategy`).  A spec is turned into
arrays inside a *worker* subprocess (:class:`WorkerPool`), which runs the
public call, checks the outcome and sends back a small result dict.  A worker
that dies (segfault, abort, OOM kill) or does not answer within the per-case
timeout is reported as ``crash`` / ``hang`` with the case, and respawned, so
one bad case never takes the test run (or the machine: each worker runs under
an address-space limit, ``RLIMIT_AS``) down.

What every case must satisfy (else it is a *failure*):

* the call returns, and the result equals the numpy reference backend run on a
  clean, normalised (C-contiguous, native float) copy of the inputs, or
* it raises ``ValueError`` (incl. ``cyconv.ShapeError``), ``TypeError``,
  ``MemoryError`` (or ``LookupError`` for registry/backend names) whose
  message names the offending argument,
* no input array is modified, and an invalid argument is never accepted.

Whether a case is valid is decided by an *independent* oracle (this file's
own shape rule and argument rules, :func:`expectation`), not by cyconv.

tests/test_fuzz.py imports this file (by path) and runs a bounded number of
cases under pytest; docs/reliability.md has the long-run numbers.
"""

from __future__ import annotations

import argparse
import ast
import collections
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# ----------------------------------------------------------------------------
# Array descriptions
# ----------------------------------------------------------------------------
GOOD_DTYPES = ("f8", "f4", ">f8", ">f4")
BAD_DTYPES = ("f2", "i1", "i8", "u1", "?", "c16", "O")
LAYOUTS = ("c", "c", "c", "f", "T", "neg", "strided", "memmap", "broadcast", "list")
SPECIALS = (None, None, None, None, "nan", "inf", "mixed")
FILLS = ("normal", "normal", "ties")


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
    if layout == "T":
        base = _values(spec, shape[::-1], dtype)
        a = base.transpose()
    elif layout == "neg":
        a = _values(spec, shape, dtype)
        if a.ndim >= 2:
            a = a[..., ::-1, ::-1]
        elif a.ndim == 1:
            a = a[::-1]
    elif layout == "strided":
        if len(shape) >= 1:
            big = list(shape)
            big[-1] = 2 * big[-1]
            a = _values(spec, tuple(big), dtype)[..., ::2]
        else:
            a = _values(spec, shape, dtype)
    elif layout == "f":
        a = np.asfortranarray(_values(spec, shape, dtype))
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


# ----------------------------------------------------------------------------
# The oracle: argument rules and the shape rule, written independently
# ----------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _pair(v):
    if _is_int(v):
        return (int(v), int(v))
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(q) for q in v):
        return (int(v[0]), int(v[1]))
    return None


def _pads(padding, size, kernel, stride, dilation):
    """((top, bottom), (left, right)) or None if malformed; may hold negatives."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            out = []
            for i in range(2):
                eff = dilation[i] * (kernel[i] - 1) + 1
                o = -(-size[i] // stride[i])
                total = max((o - 1) * stride[i] + eff - size[i], 0)
                out.append((total // 2, total - total // 2))
            return tuple(out)
        return None
    if _is_int(padding):
        return ((int(padding),) * 2,) * 2
    if isinstance(padding, (list, tuple)) and len(padding) == 2:
        if all(_is_int(p) for p in padding):
            return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
        if all(isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(q) for q in p)
               for p in padding):
            return tuple((int(p[0]), int(p[1])) for p in padding)
    return None


def out_length(size, k, s, d, pb, pa, rounding):
    """Output length or None when not a positive integer under ``rounding``."""
    span = size + pb + pa - (d * (k - 1) + 1)
    if span < 0:
        return None
    if rounding == "ceil":
        # one more, partial window only if it starts inside the input or the
        # leading padding (PyTorch's rule); never fewer windows than "floor"
        out = span // s + 1
        if span % s and out * s < size + pb:
            out += 1
        return out
    if rounding == "floor" or span % s == 0:
        return span // s + 1
    return None


MAX_WINDOW_VALUE = 2**31 - 1
GEOM_WORDS = ("kernel", "window", "stride", "padding", "pad", "dilation", "output", "input",
              "rounding", "size", "height", "width")


def geometry(size, kw):
    """Resolve geometry from call kwargs. Returns (error_names or None, geom dict)."""
    pool = kw["_pool"]
    kernel = _pair(kw["kernel"])
    if kernel is None or min(kernel) < 1:
        return (["kernel_size"], None)
    stride_arg = kw.get("stride", 1)
    if pool and stride_arg is None:
        stride_arg = kernel
    stride = _pair(stride_arg)
    if stride is None or min(stride) < 1:
        return (["stride"], None)
    dilation = _pair(kw.get("dilation", 1))
    if dilation is None or min(dilation) < 1:
        return (["dilation"], None)
    rounding = kw.get("rounding", "exact")
    ceil_mode = kw.get("ceil_mode", False)
    if rounding not in ("exact", "floor", "ceil"):
        return (["rounding"], None)
    if not isinstance(ceil_mode, (bool, np.bool_, int)):
        return (["ceil_mode"], None)
    if ceil_mode:
        if rounding not in ("exact", "ceil"):
            return (["ceil_mode", "rounding"], None)
        rounding = "ceil"
    padding = kw.get("padding", 0)
    pads = _pads(padding, size, kernel, stride, dilation)
    if pads is None or min(min(p) for p in pads) < 0:
        return (["padding"], None)
    # documented limit: window sizes, strides, dilations, paddings <= 2**31 - 1
    too_big = [name for name, vals in (("kernel", kernel), ("stride", stride),
                                       ("dilation", dilation),
                                       ("padding", pads[0] + pads[1]))
               if max(vals) > MAX_WINDOW_VALUE]
    if too_big:
        return (too_big, None)
    if pool and any(max(pads[i]) > kernel[i] // 2 for i in range(2)):
        return (["padding"], None)
    if padding == "same":
        rounding = "floor"
    outs = [out_length(size[i], kernel[i], stride[i], dilation[i], pads[i][0], pads[i][1],
                       rounding) for i in range(2)]
    if None in outs:
        return (list(GEOM_WORDS), None)
    return (None, {"kernel": kernel, "stride": stride, "dilation": dilation, "pads": pads,
                   "out": tuple(outs), "size": tuple(size)})


# ----------------------------------------------------------------------------
# Case generation (Hypothesis strategies)
# ----------------------------------------------------------------------------
FUNCTIONAL_OPS = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                  "avg_pool2d", "avg_pool2d_backward")
LAYER_NAMES = ("Conv2D", "MaxPool2D", "AvgPool2D", "Affine", "ReLU", "Sigmoid", "Flatten",
               "Dropout", "BatchNorm", "SoftmaxWithLoss")

COMMON_FAULTS = ("x_ndim", "x_dtype", "x_junk", "x_empty", "stride_bad", "padding_bad",
                 "n_threads_bad", "backend_bad", "huge_padding", "huge_int", "huge_broadcast",
                 "rounding_bad", "kernel_too_big")
CONV_FAULTS = COMMON_FAULTS + ("w_ndim", "w_dtype", "b_shape", "b_dtype", "channel_mismatch",
                               "groups_bad", "groups_not_dividing", "dilation_bad", "w_empty")
POOL_FAULTS = COMMON_FAULTS + ("kernel_bad", "pool_pad_over_half", "ceil_mode_bad",
                               "huge_kernel")
BACKWARD_FAULTS = ("dy_shape", "dy_dtype", "dy_ndim", "dy_junk")
MAXBWD_FAULTS = ("indices_float", "indices_oob", "indices_neg", "indices_shape", "indices_list")
AVG_FAULTS = ("count_include_pad_bad", "divisor_override_bad")


def _strategies():
    from hypothesis import strategies as st
    return st


def array_variant(draw, st, shape, dtype, *, allow_special=True, fill=None):
    layout = draw(st.sampled_from(LAYOUTS))
    return arr(shape, dtype,
               layout=layout,
               fill=fill or draw(st.sampled_from(FILLS)),
               special=draw(st.sampled_from(SPECIALS)) if allow_special else None,
               seed=draw(st.integers(0, 2**31 - 1)),
               readonly=draw(st.booleans()))


def _draw_padding(draw, st, kmax_half=None, conv=False):
    hi = 3 if conv else None
    if kmax_half is None:
        kmax_half = (0, 0)
    lim_h = hi if conv else kmax_half[0]
    lim_w = hi if conv else kmax_half[1]
    form = draw(st.sampled_from(("int", "int", "pair", "sides", "same", "valid")))
    if form == "int":
        return draw(st.integers(0, min(lim_h, lim_w)))
    if form == "pair":
        return (draw(st.integers(0, lim_h)), draw(st.integers(0, lim_w)))
    if form == "sides":
        return ((draw(st.integers(0, lim_h)), draw(st.integers(0, lim_h))),
                (draw(st.integers(0, lim_w)), draw(st.integers(0, lim_w))))
    return form


def _int_or_pair(draw, st, lo, hi):
    if draw(st.booleans()):
        return draw(st.integers(lo, hi))
    return (draw(st.integers(lo, hi)), draw(st.integers(lo, hi)))


def functional_case(draw):
    """Draw one functional-API case (a spec dict)."""
    st = _strategies()
    op = draw(st.sampled_from(FUNCTIONAL_OPS))
    conv = op.startswith("conv")
    maxp = op.startswith("max")
    avg = op.startswith("avg")
    backward = op.endswith("backward")
    faults = CONV_FAULTS if conv else POOL_FAULTS
    if backward:
        faults = faults + BACKWARD_FAULTS
    if op == "max_pool2d_backward":
        faults = faults + MAXBWD_FAULTS
    if avg:
        faults = faults + AVG_FAULTS
    fault = draw(st.one_of(st.just(None), st.sampled_from(faults)))
    dtype = draw(st.sampled_from(GOOD_DTYPES))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kwargs = {}
    spec = {"op": op, "fault": fault}
    if conv:
        kh, kw_ = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        divisors = [g for g in range(1, c + 1) if c % g == 0]
        groups = draw(st.sampled_from(divisors))
        oc = groups * draw(st.integers(1, 3))
        kwargs["stride"] = _int_or_pair(draw, st, 1, 3)
        kwargs["dilation"] = _int_or_pair(draw, st, 1, 2)
        kwargs["padding"] = _draw_padding(draw, st, conv=True)
        kwargs["groups"] = groups
        kernel = (kh, kw_)
    else:
        kernel = _int_or_pair(draw, st, 1, 4)
        kp = _pair(kernel)
        kwargs["kernel_size"] = kernel
        kwargs["stride"] = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(
            st.integers(1, 3), st.integers(1, 3)).map(list)))
        kwargs["padding"] = _draw_padding(draw, st, (kp[0] // 2, kp[1] // 2))
        if maxp:
            kwargs["dilation"] = _int_or_pair(draw, st, 1, 2)
            if op == "max_pool2d":
                kwargs["return_indices"] = draw(st.booleans())
        if avg:
            kwargs["count_include_pad"] = draw(st.booleans())
            kwargs["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 5)))
    rounding = draw(st.sampled_from(("floor", "floor", "ceil", "exact", "ceil_mode")))
    if rounding == "ceil_mode":
        if not conv:
            kwargs["ceil_mode"] = True
        else:
            kwargs["rounding"] = "ceil"
    else:
        kwargs["rounding"] = rounding
    kwargs["n_threads"] = draw(st.sampled_from((None, None, 1, 2, 3, -1)))
    kwargs["backend"] = draw(st.sampled_from((None, None, "cython", "numpy")))
    xshape = [n, c, h, w]
    x = array_variant(draw, st, xshape, dtype, fill="ties" if maxp else None)
    args = {"x": x}
    if conv:
        wshape = [oc, c // groups, kernel[0], kernel[1]]
        args["w"] = array_variant(draw, st, wshape, dtype)
        if op == "conv2d":
            args["b"] = draw(st.one_of(st.just(lit(None)), st.just("b")))
            if args["b"] == "b":
                args["b"] = array_variant(draw, st, [oc], dtype)
    # -- faults (one per case) ------------------------------------------------
    seed = draw(st.integers(0, 2**31 - 1))
    if fault == "x_ndim":
        args["x"] = arr(draw(st.sampled_from(([c, h, w], [n, c, h, w, 1], [h], []))), dtype,
                        seed=seed)
    elif fault == "x_dtype":
        args["x"] = arr(xshape, draw(st.sampled_from(BAD_DTYPES)),
                        layout=draw(st.sampled_from(("c", "T", "neg"))), seed=seed)
    elif fault == "x_junk":
        args["x"] = lit(draw(st.sampled_from((None, "abc", 3.0, {"a": 1}, [[1.0, 2.0], [3.0]],
                                              b"\x00\x01"))))
    elif fault == "x_empty":
        shape = list(xshape)
        shape[draw(st.integers(0, 3))] = 0
        args["x"] = arr(shape, dtype, seed=seed)
    elif fault == "w_empty":
        shape = list(args["w"]["shape"])
        shape[0] = 0
        args["w"] = arr(shape, dtype, seed=seed)
    elif fault == "w_ndim":
        args["w"] = arr(args["w"]["shape"][:3], dtype, seed=seed)
    elif fault == "w_dtype":
        other = draw(st.sampled_from(BAD_DTYPES + (("f4",) if "8" in dtype else ("f8",))))
        args["w"] = arr(args["w"]["shape"], other, seed=seed)
    elif fault == "b_shape":
        args["b"] = arr(draw(st.sampled_from(([oc + 1], [oc, 1], [1, oc], []))), dtype,
                        seed=seed)
        if op != "conv2d":
            spec["fault"] = fault = None
            args.pop("b")
    elif fault == "b_dtype":
        other = draw(st.sampled_from(BAD_DTYPES + (("f4",) if "8" in dtype else ("f8",))))
        args["b"] = arr([oc], other, seed=seed)
        if op != "conv2d":
            spec["fault"] = fault = None
            args.pop("b")
    elif fault == "channel_mismatch":
        shape = list(args["w"]["shape"])
        shape[1] += draw(st.integers(1, 2))
        args["w"] = arr(shape, dtype, seed=seed)
    elif fault == "groups_bad":
        kwargs["groups"] = draw(st.sampled_from((0, -1, 1.0, True, "2", None)))
    elif fault == "groups_not_dividing":
        g = draw(st.integers(2, 5))
        while c % g == 0:
            g += 1
        kwargs["groups"] = g
        args["w"] = arr([g * 2, 1, kernel[0], kernel[1]], dtype, seed=seed)
    elif fault == "stride_bad":
        kwargs["stride"] = draw(st.sampled_from((0, -1, -2, 1.5, (1, 0), (2, -1), "1",
                                                 (1, 2, 3), True)))
    elif fault == "dilation_bad":
        kwargs["dilation"] = draw(st.sampled_from((0, -1, (1, 0), 2.0, "x", False)))
    elif fault == "padding_bad":
        kwargs["padding"] = draw(st.sampled_from((-1, (0, -1), ((0, 0), (-1, 0)), "full", 1.5,
                                                  (1, 2, 3), None, ((1, 2), 3))))
    elif fault == "pool_pad_over_half":
        kp = _pair(kwargs["kernel_size"])
        kwargs["padding"] = draw(st.sampled_from(((kp[0] // 2 + 1, 0), (0, kp[1] // 2 + 1),
                                                  ((0, kp[0] // 2 + 1), (0, 0)))))
    elif fault == "kernel_bad":
        kwargs["kernel_size"] = draw(st.sampled_from((0, -2, (2, 0), 2.0, None, (1, 2, 3), "2")))
    elif fault == "kernel_too_big":
        big_h, big_w = h + draw(st.integers(7, 12)), 1
        if conv:
            args["w"] = arr([args["w"]["shape"][0], args["w"]["shape"][1], big_h, big_w], dtype,
                            seed=seed)
        else:
            kwargs["kernel_size"] = (big_h, big_w)
        kwargs["padding"] = 0
    elif fault == "rounding_bad":
        kwargs["rounding"] = draw(st.sampled_from(("round", "", None, 1, "FLOOR")))
    elif fault == "ceil_mode_bad":
        kwargs["ceil_mode"] = draw(st.sampled_from(("yes", None, 1.5)))
    elif fault == "n_threads_bad":
        kwargs["n_threads"] = draw(st.sampled_from((0, 1.5, "2", True)))
    elif fault == "backend_bad":
        kwargs["backend"] = draw(st.sampled_from(("nope", "CYTHON", "", 3)))
    elif fault == "count_include_pad_bad":
        kwargs["count_include_pad"] = draw(st.sampled_from(("yes", None, 2, 1.0)))
    elif fault == "divisor_override_bad":
        kwargs["divisor_override"] = draw(st.sampled_from((0, -3, 1.5, "2", True)))
    elif fault == "huge_padding":
        # tiny arrays, astronomically large output: must be refused quickly
        kwargs["padding"] = draw(st.sampled_from((10**5, 10**6, 2**31, 2**40, 2**62)))
        if not conv:
            big = 2 * kwargs["padding"] + 1
            kwargs["kernel_size"] = big
            kwargs["stride"] = draw(st.sampled_from((1, None)))
            kwargs.pop("dilation", None)
    elif fault == "huge_kernel":
        # pooling: a huge kernel/padding/stride over a tiny input; output is tiny
        k = draw(st.sampled_from((2**20, 2**26, 2**31, 2**40, 2**61)))
        kwargs["kernel_size"] = k
        kwargs["padding"] = k // 2
        kwargs["stride"] = k
        kwargs.pop("dilation", None)
    elif fault == "huge_int":
        key = draw(st.sampled_from(("stride", "dilation", "padding")))
        value = draw(st.sampled_from((2**62, 2**63, 2**64, 2**70)))
        if key == "dilation" and avg:
            key = "stride"
        kwargs[key] = value
    elif fault == "huge_broadcast":
        hshape = draw(st.sampled_from(([2**20, c, 1024, 1024], [n, c, 2**17, 2**17],
                                       [2**40, c, 4, 4])))
        args["x"] = {"kind": "broadcast", "shape": hshape, "dtype": dtype}
    # -- derived arguments ----------------------------------------------------
    spec["args"], spec["kwargs"] = args, kwargs
    spec["expect"] = expectation(spec)
    if backward:
        out_shape = spec["expect"].get("out_shape") or [n, c, 1, 1]
        if conv:
            oc_ = args["w"]["shape"][0] if args["w"]["kind"] == "array" and \
                len(args["w"]["shape"]) == 4 else oc
            dshape = [out_shape[0], oc_, out_shape[2], out_shape[3]]
        else:
            dshape = list(out_shape)
        if dshape and math.prod(dshape) > 4096:
            dshape = [1, 1, 1, 1]
        args["dy"] = array_variant(draw, st, dshape, dtype)
        if fault == "dy_shape":
            bad = list(dshape)
            bad[draw(st.integers(0, 3))] += draw(st.integers(1, 2))
            args["dy"] = arr(bad, dtype, seed=seed)
        elif fault == "dy_dtype":
            other = draw(st.sampled_from(BAD_DTYPES + (("f4",) if "8" in dtype else ("f8",))))
            args["dy"] = arr(dshape, other, seed=seed)
        elif fault == "dy_ndim":
            args["dy"] = arr(dshape[1:], dtype, seed=seed)
        elif fault == "dy_junk":
            args["dy"] = lit(draw(st.sampled_from((None, "dy", 1.0))))
        if op == "max_pool2d_backward":
            mode = draw(st.sampled_from(("none", "none", "forward", "random", "random_i32")))
            if fault in MAXBWD_FAULTS:
                mode = fault
            args["indices"] = {"kind": "indices", "mode": mode, "shape": dshape,
                               "seed": seed, "layout": draw(st.sampled_from(("c", "T", "ro")))}
        spec["expect"] = expectation(spec)
    return spec


# -- layers -------------------------------------------------------------------
LAYER_FAULTS = ("x_dtype", "x_ndim", "dout_shape", "backward_first", "dout_dtype")


def layer_case(draw):
    st = _strategies()
    name = draw(st.sampled_from(LAYER_NAMES))
    dtype = draw(st.sampled_from(GOOD_DTYPES))
    fault = draw(st.one_of(st.just(None), st.just(None), st.sampled_from(LAYER_FAULTS)))
    n, c, h, w = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 7)),
                  draw(st.integers(2, 7)))
    seed = draw(st.integers(0, 2**31 - 1))
    ctor = {}
    xshape = [n, c, h, w]
    if name == "Conv2D":
        k = draw(st.integers(1, 3))
        k = min(k, h, w)
        ctor = {"W": arr([draw(st.integers(1, 3)), c, k, k], draw(st.sampled_from(("f8", "f4"))),
                         seed=seed + 1),
                "b": "b", "stride": 1, "padding": draw(st.integers(0, 1))}
        ctor["b"] = arr([ctor["W"]["shape"][0]], ctor["W"]["dtype"], seed=seed + 2)
    elif name in ("MaxPool2D", "AvgPool2D"):
        k = draw(st.integers(1, 2))
        ctor = {"kernel_size": k, "stride": 1, "padding": draw(st.integers(0, k // 2)),
                "rounding": "floor"}
    elif name == "Affine":
        ctor = {"W": arr([c * h * w, draw(st.integers(1, 4))],
                         draw(st.sampled_from(("f8", "f4"))), seed=seed + 1)}
        ctor["b"] = arr([ctor["W"]["shape"][1]], ctor["W"]["dtype"], seed=seed + 2)
    elif name == "Dropout":
        ctor = {"ratio": draw(st.sampled_from((0.0, 0.3, 0.5))), "rng": seed}
    elif name == "BatchNorm":
        ctor = {}
    elif name == "SoftmaxWithLoss":
        xshape = [n, draw(st.integers(2, 5))]
    x = array_variant(draw, st, xshape, dtype)
    t = None
    if name == "SoftmaxWithLoss":
        x["special"] = None
        t = {"kind": "labels", "n": n, "k": xshape[1], "seed": seed,
             "onehot": draw(st.booleans())}
    if name == "BatchNorm":
        x["special"] = None
    if fault == "x_dtype":
        x = arr(xshape, draw(st.sampled_from(BAD_DTYPES)), seed=seed)
    elif fault in ("dout_shape", "dout_dtype") and name == "SoftmaxWithLoss":
        fault = None
    elif fault == "x_ndim":
        if name in ("Conv2D", "MaxPool2D", "AvgPool2D", "BatchNorm"):
            x = arr(xshape[:3], dtype, seed=seed)
        elif name in ("Affine", "SoftmaxWithLoss"):
            x = arr(xshape[:1], dtype, seed=seed)
        else:
            fault = None
    spec = {"op": "layer", "layer": name, "ctor": ctor, "fault": fault,
            "args": {"x": x, "t": t}, "train": draw(st.booleans()),
            "backend": draw(st.sampled_from((None, "cython", "numpy"))),
            "dout": {"dtype": dtype, "seed": seed + 3,
                     "layout": draw(st.sampled_from(("c", "T", "neg", "ro")))}}
    if name not in ("Conv2D", "MaxPool2D", "AvgPool2D", "ReLU"):
        spec["backend"] = None
    spec["expect"] = expectation(spec)
    return spec


# -- registry -----------------------------------------------------------------
def registry_case(draw):
    st = _strategies()
    kind = draw(st.sampled_from(("get", "get", "create", "register", "use_backend")))
    names = ("Conv2D", "ReLU", "Sigmoid", "MaxPool2D", "conv2d", "Conv2d", "NoSuchLayer", "", None, 3,
             b"Conv2D", ("Conv2D",), 1.5)
    backends = (None, None, "cython", "numpy", "nope", "", 3, b"numpy")
    spec = {"op": "registry", "kind": kind, "name": draw(st.sampled_from(names)),
            "backend": draw(st.sampled_from(backends)), "fault": None}
    if kind == "create":
        spec["kwargs"] = draw(st.sampled_from(({}, {"kernel_size": 2}, {"kernel_size": 0},
                                               {"out_channels": 2, "kernel_size": 3},
                                               {"bogus": 1}, {"ratio": 2.0}, {"ratio": 0.5})))
    if kind == "register":
        spec["cls"] = draw(st.sampled_from(("layer", "int", "instance", "none", "function")))
        spec["backend"] = draw(st.sampled_from(("numpy", "cython", "fuzzmine", "", 3, None)))
        spec["name"] = draw(st.sampled_from(("Conv2D", "ReLU", "FuzzLayer", "", None, 3)))
        spec["uid"] = draw(st.integers(0, 10**9))
    if kind == "use_backend":
        spec["backends"] = draw(st.sampled_from((["numpy"], ["cython", "numpy"], [], ["nope"],
                                                 [3], [""], [None])))
    spec["expect"] = expectation(spec)
    return spec


def case_strategy(weights=(6, 2, 1)):
    """Hypothesis strategy drawing functional, layer and registry cases."""
    st = _strategies()

    @st.composite
    def _case(draw):
        kind = draw(st.sampled_from(("functional",) * weights[0] + ("layer",) * weights[1]
                                    + ("registry",) * weights[2]))
        if kind == "functional":
            return functional_case(draw)
        if kind == "layer":
            return layer_case(draw)
        return registry_case(draw)

    return _case()


def functional_strategy():
    st = _strategies()
    return st.composite(lambda draw: functional_case(draw))()


def layer_strategy():
    st = _strategies()
    return st.composite(lambda draw: layer_case(draw))()


def registry_strategy():
    st = _strategies()
    return st.composite(lambda draw: registry_case(draw))()


# ----------------------------------------------------------------------------
# Expectations
# ----------------------------------------------------------------------------
VALUE_ERRORS = ("ValueError", "ShapeError")
ARG_ERRORS = ("ValueError", "ShapeError", "TypeError")
MEM_ERRORS = ("MemoryError", "ValueError", "ShapeError")
LOOKUP_ERRORS = ("BackendError", "LayerNotFoundError")


def _raise(names, types=ARG_ERRORS, **extra):
    return dict({"kind": "raise", "names": list(names), "types": list(types)}, **extra)


def _arg_ok(a, ndim):
    """Is this argument description a valid float array of ``ndim`` dims?"""
    if a["kind"] == "literal":
        return False
    if a["kind"] == "broadcast":
        return len(a["shape"]) == ndim
    dt = np.dtype(a["dtype"])
    if a["layout"] == "list" and dt.kind == "f" and dt.isnative and dt.itemsize == 8:
        pass
    elif not (dt.kind == "f" and dt.itemsize in (4, 8)):
        return False
    return len(a["shape"]) == ndim


def _arr_error(a, name, ndim, dtype=None):
    """Expected error for array argument ``a`` or None."""
    if a["kind"] == "literal":
        if isinstance(a["value"], (int, float)) and not isinstance(a["value"], bool):
            return _raise([name], ("TypeError", "ValueError"))  # a 0-d array: wrong ndim
        return _raise([name], ("TypeError",))
    dt = np.dtype(a.get("dtype", "f8"))
    if not (dt.kind == "f" and dt.itemsize in (4, 8)):
        return _raise([name], ("TypeError",))
    if dtype is not None and dt.newbyteorder("=") != np.dtype(dtype).newbyteorder("="):
        return _raise([name], ("TypeError",))
    if len(a["shape"]) != ndim:
        return _raise([name], VALUE_ERRORS)
    return None


def expectation(spec):
    op = spec["op"]
    if op == "registry":
        return _registry_expect(spec)
    if op == "layer":
        return _layer_expect(spec)
    a, kw = spec["args"], spec["kwargs"]
    fault = spec["fault"]
    conv = op.startswith("conv")
    huge = fault in ("huge_padding", "huge_kernel", "huge_int", "huge_broadcast")
    x = a["x"]
    e = _arr_error(x, "x", 4)
    if e:
        return e
    dtype = np.dtype(x["dtype"]).newbyteorder("=")
    if x["kind"] == "array" and 0 in x["shape"]:
        return _raise(["x"], VALUE_ERRORS)
    if huge and x["kind"] == "broadcast":
        # copying the logical array would need terabytes: refuse (MemoryError)
        return _raise(["x"], ("MemoryError", "ValueError"), unnamed_ok=True)
    n, c, h, w_ = x["shape"]
    pool_kw = {"_pool": not conv}
    if conv:
        wa = a["w"]
        wdt = np.dtype(wa.get("dtype", "f8")).newbyteorder("=")
        x_is_list = (x["kind"] == "array" and x["layout"] == "list"
                     and np.dtype(x["dtype"]) == np.dtype("=f8"))  # see build_array
        if (x_is_list and wa["kind"] != "literal" and wdt in (np.dtype("f4"), np.dtype("f8"))
                and wdt != dtype):
            return _raise(["x"], ("TypeError",))  # the list's float64 is not w's dtype
        e = _arr_error(wa, "w", 4, dtype)
        if e:
            return e
        if 0 in wa["shape"]:
            return _raise(["w"], VALUE_ERRORS)
        groups = kw.get("groups", 1)
        if not _is_int(groups):
            return _raise(["groups"], ("TypeError",))
        if groups < 1:
            return _raise(["groups"], VALUE_ERRORS)
        oc, cg, kh, kw_ = wa["shape"]
        if c % groups or oc % groups:
            return _raise(["groups"], VALUE_ERRORS)
        if cg * groups != c:
            return _raise(["channel", "w"], VALUE_ERRORS)
        b = a.get("b") if op == "conv2d" else None
        if b is not None and not (b["kind"] == "literal" and b["value"] is None):
            e = _arr_error(b, "b", 1, dtype)
            if e:
                return e
            if b["shape"] != [oc]:
                return _raise(["b"], VALUE_ERRORS)
        pool_kw["kernel"] = (kh, kw_)
        out_c = oc
    else:
        pool_kw["kernel"] = kw["kernel_size"]
        out_c = c
    for key in ("stride", "padding", "dilation", "rounding", "ceil_mode"):
        if key in kw:
            pool_kw[key] = kw[key]
    if not conv and "stride" not in kw:
        pool_kw["stride"] = None
    names, geom = _safe_geometry((h, w_), pool_kw)
    if names is not None:
        types = ("TypeError",) + VALUE_ERRORS
        if huge:
            return _raise(names, MEM_ERRORS + ("TypeError",), unnamed_ok=True, any_ok=False)
        return _raise(names, types)
    if op.startswith("avg"):
        cip = kw.get("count_include_pad", True)
        if not isinstance(cip, (bool, np.bool_)):
            return _raise(["count_include_pad"], ("TypeError",))
        dov = kw.get("divisor_override")
        if dov is not None:
            if not _is_int(dov):
                return _raise(["divisor_override"], ("TypeError",))
            if dov < 1:
                return _raise(["divisor_override"], VALUE_ERRORS)
    out_shape = [n, out_c, geom["out"][0], geom["out"][1]]
    if op.endswith("backward") and "dy" in a:
        e = _arr_error(a["dy"], "dy", 4, dtype)
        if e:
            return e
        if a["dy"]["shape"] != out_shape:
            return _raise(["dy"], VALUE_ERRORS)
    nt = kw.get("n_threads")
    if nt is not None and (not _is_int(nt) or nt == 0):
        return _raise(["n_threads"], ("TypeError",) + VALUE_ERRORS)
    be = kw.get("backend")
    if be is not None and be not in ("cython", "numpy"):
        return _raise(["backend", repr(be)], ("TypeError",) + LOOKUP_ERRORS)
    if op == "max_pool2d_backward" and "indices" in a:
        mode = a["indices"]["mode"]
        if mode in ("indices_float", "indices_list"):
            return _raise(["indices"], ("TypeError",))
        if mode in ("indices_oob", "indices_neg", "indices_shape"):
            return _raise(["indices"], VALUE_ERRORS)
    result = {"kind": "ok", "out_shape": out_shape, "geom": geom}
    if huge:
        result.update(kind="any", types=list(MEM_ERRORS), names=[], unnamed_ok=True)
    return result


def _safe_geometry(size, kw):
    try:
        return geometry(size, kw)
    except TypeError:
        return (list(GEOM_WORDS), None)


LAYER_4D = ("Conv2D", "MaxPool2D", "AvgPool2D")


def _layer_expect(spec):
    fault = spec["fault"]
    if fault == "backward_first":
        # either "call forward first" or (the placeholder gradient is the
        # wrong shape) an error naming dout
        return _raise(["forward", "dout"], ("RuntimeError", "ValueError", "TypeError"))
    if fault == "x_dtype":
        return _raise(["x"], ("TypeError",))
    if fault == "x_ndim":
        return _raise(["x"], VALUE_ERRORS)
    if fault in ("dout_shape",):
        return _raise(["dout", "dy"], VALUE_ERRORS)
    if fault == "dout_dtype":
        return _raise(["dout", "dy"], ("TypeError",))
    return {"kind": "ok"}


def _registry_expect(spec):
    kind, name, backend = spec["kind"], spec["name"], spec["backend"]
    known = ("Conv2D", "ReLU", "Sigmoid", "MaxPool2D")
    if kind == "use_backend":
        bs = spec["backends"]
        if not bs or not all(isinstance(b, str) and b for b in bs):
            return _raise(["backend"], ("TypeError",))
        if any(b not in ("cython", "numpy") for b in bs):
            return _raise(["backend"], LOOKUP_ERRORS)
        return {"kind": "ok"}
    if kind == "register":
        cls = spec["cls"]
        if not isinstance(name, str) or not name:
            return _raise(["name"], ("TypeError",))
        if not isinstance(backend, str) or not backend:
            return _raise(["backend"], ("TypeError",))
        if cls != "layer":
            return _raise(["Layer"], ("TypeError",))
        if name in ("Conv2D", "ReLU") and backend in ("numpy", "cython"):
            # a built-in name under a built-in backend: ("ReLU", "cython") too,
            # else the plugin class would win default lookups (finding F10)
            return _raise(["built", name], VALUE_ERRORS)
        return {"kind": "ok"}
    if not isinstance(name, str):
        return _raise(["name"], ("TypeError",) + LOOKUP_ERRORS)
    if name not in known:
        return _raise([repr(name)], LOOKUP_ERRORS)
    if backend is not None and not isinstance(backend, str):
        return _raise(["backend"], ("TypeError",))
    if backend is not None and backend not in ("cython", "numpy"):
        return _raise([repr(backend)], LOOKUP_ERRORS)
    if backend == "cython" and name == "Sigmoid":  # NumPy only: never a fallback
        return _raise(["'cython'"], LOOKUP_ERRORS)
    if kind == "create":
        kws = spec["kwargs"]
        valid = {"Conv2D": [{"out_channels": 2, "kernel_size": 3}],
                 "MaxPool2D": [{"kernel_size": 2}],
                 "ReLU": [{}], "Sigmoid": [{}]}[name]
        if kws in valid:
            return {"kind": "ok"}
        return _raise([k for k in kws] + ["kernel_size", "out_channels", "argument"],
                      ("TypeError", "ValueError"))
    return {"kind": "ok"}


# ----------------------------------------------------------------------------
# Running one case (inside the worker)
# ----------------------------------------------------------------------------
def _snapshot(values):
    snap = []
    for v in values:
        if isinstance(v, np.ndarray) and (v.flags.writeable or v.nbytes < (64 << 20)):
            snap.append((v, np.array(v, copy=True), v.flags.writeable))
    return snap


def _mutated(snap):
    for v, copy, writeable in snap:
        if v.flags.writeable != writeable:
            return "writeable flag changed"
        if v.dtype.kind == "O":
            same = all(a is b or a == b or (a != a and b != b)
                       for a, b in zip(v.ravel().tolist(), copy.ravel().tolist()))
        else:
            same = np.array_equal(v, copy, equal_nan=v.dtype.kind in "fc")
        if not same:
            return f"input of shape {v.shape} dtype {v.dtype} was modified"
    return None


def _tolerance(dtype):
    return 2e-4 if np.dtype(dtype) == np.float32 else 1e-9


def compare(actual, expected, mag, what="result"):
    """None if equal (NaN pattern, inf pattern, finite values within tolerance)."""
    if isinstance(expected, tuple):
        if not isinstance(actual, tuple) or len(actual) != len(expected):
            return f"{what}: expected a {len(expected)}-tuple, got {type(actual).__name__}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            msg = compare(a, e, mag[i] if isinstance(mag, (list, tuple)) else mag,
                          f"{what}[{i}]")
            if msg:
                return msg
        return None
    if not isinstance(actual, np.ndarray):
        return f"{what}: expected an ndarray, got {type(actual).__name__}"
    if actual.shape != expected.shape:
        return f"{what}: shape {actual.shape} != reference {expected.shape}"
    if actual.dtype != expected.dtype:
        return f"{what}: dtype {actual.dtype} != reference {expected.dtype}"
    if actual.dtype.kind in "iu":
        if not np.array_equal(actual, expected):
            bad = np.argwhere(actual != expected)[:3].tolist()
            return f"{what}: integer values differ at {bad}"
        return None
    a_nan, e_nan = np.isnan(actual), np.isnan(expected)
    if not np.array_equal(a_nan, e_nan):
        bad = np.argwhere(a_nan != e_nan)[:3].tolist()
        return f"{what}: NaN pattern differs at {bad}"
    a_inf, e_inf = np.isinf(actual), np.isinf(expected)
    if not np.array_equal(a_inf, e_inf) or not np.array_equal(actual[a_inf], expected[e_inf]):
        bad = np.argwhere((a_inf != e_inf) | (a_inf & (actual != expected)))[:3].tolist()
        return f"{what}: +-inf pattern differs at {bad}"
    fin = ~(a_nan | a_inf)
    tol = _tolerance(actual.dtype) * (np.abs(expected[fin]) + mag)
    diff = np.abs(actual[fin].astype(np.float64) - expected[fin].astype(np.float64))
    if diff.size and np.any(diff > tol):
        i = int(np.argmax(diff - tol))
        return (f"{what}: max abs difference {diff.max():.3g} exceeds tolerance "
                f"(at flat finite index {i}: {actual[fin][i]!r} vs reference "
                f"{expected[fin][i]!r})")
    return None


def _finite_max(a):
    a = np.asarray(a, dtype=np.float64)
    f = a[np.isfinite(a)]
    return float(np.abs(f).max()) if f.size else 0.0


def _build_indices(spec_idx, x, kwargs):
    import cyconv
    mode = spec_idx["mode"]
    shape = tuple(spec_idx["shape"])
    rng = np.random.default_rng(spec_idx["seed"])
    if mode == "none":
        return None
    plane = x.shape[2] * x.shape[3] if isinstance(x, np.ndarray) and x.ndim == 4 else 1
    if mode == "forward":
        kw = {k: v for k, v in kwargs.items() if k not in ("n_threads",)}
        kw["backend"] = "numpy"
        _, idx = cyconv.max_pool2d(clean(x), return_indices=True, **kw)
    else:
        idx = rng.integers(-1, max(plane, 1), size=shape).astype(np.int64)
    if mode == "random_i32":
        idx = idx.astype(np.int32)
    elif mode == "indices_float":
        idx = idx.astype(np.float64)
    elif mode == "indices_list":
        idx = idx.tolist()
    elif mode == "indices_oob":
        idx = idx.copy()
        idx.flat[rng.integers(0, idx.size)] = plane + int(rng.integers(0, 3))
    elif mode == "indices_neg":
        idx = idx.copy()
        idx.flat[rng.integers(0, idx.size)] = -2 - int(rng.integers(0, 5))
    elif mode == "indices_shape":
        idx = idx[..., :0] if idx.shape[-1] > 1 else np.concatenate([idx, idx], axis=-1)
    if isinstance(idx, np.ndarray):
        if spec_idx["layout"] == "T":
            idx = np.ascontiguousarray(np.swapaxes(idx, 2, 3)).swapaxes(2, 3)
        elif spec_idx["layout"] == "ro":
            idx = idx.copy()
            idx.flags.writeable = False
    return idx


def _call_functional(spec, vals):
    import cyconv
    op = spec["op"]
    kw = dict(spec["kwargs"])
    if op == "conv2d":
        return getattr(cyconv, op)(vals["x"], vals["w"], vals.get("b"), **kw)
    if op == "conv2d_backward":
        return cyconv.conv2d_backward(vals["dy"], vals["x"], vals["w"], **kw)
    if op in ("max_pool2d", "avg_pool2d"):
        kernel = kw.pop("kernel_size")
        return getattr(cyconv, op)(vals["x"], kernel, **kw)
    kernel = kw.pop("kernel_size")
    if op == "max_pool2d_backward":
        kw["indices"] = vals.get("indices")
    return getattr(cyconv, op)(vals["dy"], vals["x"], kernel, **kw)


def _reference_functional(spec, vals):
    """The numpy backend on clean copies; (result, magnitude for the tolerance)."""
    import cyconv
    op = spec["op"]
    kw = dict(spec["kwargs"])
    kw["backend"] = "numpy"
    kw["n_threads"] = None
    x = clean(vals["x"])
    dt = x.dtype
    mx = _finite_max(x)
    if op.startswith("conv"):
        w = clean(vals["w"], dt)
        k = w.shape[1] * w.shape[2] * w.shape[3]
        mw = _finite_max(w)
        if op == "conv2d":
            b = vals.get("b")
            b = None if b is None else clean(b, dt)
            return cyconv.conv2d(x, w, b, **kw), k * mx * mw + (_finite_max(b) if b is not None
                                                                 else 0)
        dy = clean(vals["dy"], dt)
        mdy = _finite_max(dy)
        terms_x = w.shape[0] * w.shape[2] * w.shape[3]
        terms_w = dy.shape[0] * dy.shape[2] * dy.shape[3]
        return (cyconv.conv2d_backward(dy, x, w, **kw),
                [terms_x * mdy * mw, terms_w * mdy * mx, terms_w * mdy])
    kernel = kw.pop("kernel_size")
    if op == "max_pool2d":
        return cyconv.max_pool2d(x, kernel, **kw), mx
    if op == "avg_pool2d":
        return cyconv.avg_pool2d(x, kernel, **kw), mx
    dy = clean(vals["dy"], dt)
    kp = _pair(kernel)
    terms = kp[0] * kp[1] if kp and kp[0] * kp[1] < 10**6 else 1
    if op == "max_pool2d_backward":
        idx = vals.get("indices")
        kw["indices"] = None if idx is None else np.ascontiguousarray(idx, dtype=np.int64)
        return cyconv.max_pool2d_backward(dy, x, kernel, **kw), terms * _finite_max(dy)
    return cyconv.avg_pool2d_backward(dy, x, kernel, **kw), terms * _finite_max(dy)


def _direct_pool(spec, vals):
    """Independent loop reference for pooling (used when the numpy reference
    cannot allocate, e.g. huge kernels over tiny inputs)."""
    op = spec["op"]
    kw = spec["kwargs"]
    x = clean(vals["x"])
    n, c, h, w = x.shape
    geom = spec["expect"]["geom"]
    (kh, kw_), (sh, sw), (dh, dw) = geom["kernel"], geom["stride"], geom["dilation"]
    (pt, pb), (pl, pr) = geom["pads"]
    oh, ow = geom["out"]

    def taps(o, s, p, d, k, size):
        start = o * s - p
        lo = max(0, -(-(0 - start) // d)) if start < 0 else 0
        hi = min(k, (size - 1 - start) // d + 1) if size - 1 - start >= 0 else 0
        return [start + t * d for t in range(lo, max(lo, hi))]

    if op.startswith("max"):
        y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
        idx = np.full((n, c, oh, ow), -1, dtype=np.int64)
        for oy in range(oh):
            rows = taps(oy, sh, pt, dh, kh, h)
            for ox in range(ow):
                cols = taps(ox, sw, pl, dw, kw_, w)
                for i in range(n):
                    for j in range(c):
                        best, bi = None, -1
                        for r in rows:
                            for q in cols:
                                v = x[i, j, r, q]
                                if v != v:
                                    best, bi = v, r * w + q
                                    break
                                if bi < 0 or v > best:
                                    best, bi = v, r * w + q
                            if best is not None and best != best:
                                break
                        if bi >= 0:
                            y[i, j, oy, ox], idx[i, j, oy, ox] = best, bi
        if op == "max_pool2d":
            return ((y, idx) if kw.get("return_indices") else y), _finite_max(x)
        dy = clean(vals["dy"], x.dtype)
        given = vals.get("indices")
        if given is not None:
            idx = np.asarray(given, dtype=np.int64)
        dx = np.zeros_like(x).reshape(n, c, -1)
        for i in range(n):
            for j in range(c):
                for o, t in zip(dy[i, j].ravel(), idx[i, j].ravel()):
                    if t >= 0:
                        dx[i, j, t] += o
        return dx.reshape(x.shape), _finite_max(dy)
    # average pooling
    cip = kw.get("count_include_pad", True)
    dov = kw.get("divisor_override")
    div = np.zeros((oh, ow))
    for oy in range(oh):
        rs = oy * sh - pt
        re = min(rs + kh, h + pb)
        for ox in range(ow):
            cs = ox * sw - pl
            ce = min(cs + kw_, w + pr)
            if dov is not None:
                div[oy, ox] = dov
            elif cip:
                div[oy, ox] = (re - rs) * (ce - cs)
            else:
                div[oy, ox] = (min(re, h) - max(rs, 0)) * (min(ce, w) - max(cs, 0))
    if op == "avg_pool2d":
        y = np.zeros((n, c, oh, ow), dtype=x.dtype)
        for oy in range(oh):
            rows = taps(oy, sh, pt, 1, kh, h)
            for ox in range(ow):
                cols = taps(ox, sw, pl, 1, kw_, w)
                s = x[:, :, rows][:, :, :, cols].sum(axis=(2, 3)) if rows and cols else 0
                y[:, :, oy, ox] = s / div[oy, ox]
        return y, _finite_max(x)
    dy = clean(vals["dy"], x.dtype)
    dx = np.zeros_like(x)
    for oy in range(oh):
        rows = taps(oy, sh, pt, 1, kh, h)
        for ox in range(ow):
            cols = taps(ox, sw, pl, 1, kw_, w)
            for r in rows:
                for q in cols:
                    dx[:, :, r, q] += dy[:, :, oy, ox] / div[oy, ox]
    return dx, _finite_max(dy)


def _message_ok(exc, expect):
    msg = str(exc)
    if expect.get("unnamed_ok") and type(exc).__name__ == "MemoryError":
        return True
    names = expect.get("names") or []
    low = msg.lower()
    return not names or any(n.lower() in low for n in names)


def _allowed(exc, expect):
    """The exception's class or one of its bases is an expected type."""
    return any(t.__name__ in expect.get("types", ()) for t in type(exc).__mro__)


def _judge_exception(exc, expect, tb):
    name = type(exc).__name__
    if expect["kind"] == "ok":
        return {"status": "rejected_valid", "exc_type": name, "message": str(exc)[:500],
                "traceback": tb}
    if not _allowed(exc, expect):
        return {"status": "bad_error_type", "exc_type": name, "message": str(exc)[:500],
                "traceback": tb}
    if not _message_ok(exc, expect):
        return {"status": "bad_message", "exc_type": name, "message": str(exc)[:500]}
    return {"status": "error", "exc_type": name, "message": str(exc)[:200]}


def evaluate(spec, tmpdir=None):
    """Run one case; return a result dict (``status`` is the outcome)."""
    import warnings

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    try:
        if spec["op"] == "registry":
            res = _eval_registry(spec)
        elif spec["op"] == "layer":
            res = _eval_layer(spec, tmpdir)
        else:
            res = _eval_functional(spec, tmpdir)
    except Exception as exc:  # a bug in the harness itself
        res = {"status": "harness_error", "exc_type": type(exc).__name__,
               "message": str(exc)[:500], "traceback": traceback.format_exc()[-3000:]}
    res["seconds"] = round(time.perf_counter() - t0, 4)
    return res


def _eval_functional(spec, tmpdir):
    expect = spec["expect"]
    vals = {}
    for key, a in spec["args"].items():
        if key == "indices":
            continue
        vals[key] = build_array(a, tmpdir)
    if "indices" in spec["args"]:
        try:
            vals["indices"] = _build_indices(spec["args"]["indices"], vals["x"], spec["kwargs"])
        except Exception:
            vals["indices"] = None  # forward itself invalid; the call will say so
    if isinstance(vals.get("b"), type(None)):
        vals["b"] = None
    snap = _snapshot(vals.values())
    try:
        out = _call_functional(spec, vals)
        exc = None
    except Exception as e:  # noqa: BLE001 - judged below
        exc, tb = e, traceback.format_exc()[-3000:]
    mutated = _mutated(snap)
    if mutated:
        return {"status": "mutated_input", "message": mutated}
    if exc is not None:
        return _judge_exception(exc, expect, tb)
    if expect["kind"] == "raise":
        return {"status": "accepted_invalid",
                "message": f"expected {expect['types']} naming {expect['names']}"}
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        for v in vals.values():
            if isinstance(v, np.ndarray) and isinstance(o, np.ndarray) and \
                    np.shares_memory(o, v):
                return {"status": "wrong_result", "message": "output shares memory with an input"}
    try:
        ref, mag = _reference_functional(spec, vals)
        how = "numpy"
    except (MemoryError, ValueError, OverflowError):
        if spec["op"].startswith(("max", "avg")):
            ref, mag = _direct_pool(spec, vals)
            how = "direct"
        else:
            return {"status": "ok_unverified"}
    msg = compare(out, ref, mag)
    if msg is None and how == "numpy" and spec["op"].startswith(("max", "avg")):
        small = spec.get("fault") is None and np.prod(clean(vals["x"]).shape) <= 200
        if small:  # second opinion: independent loops
            ref2, mag2 = _direct_pool(spec, vals)
            msg = compare(out, ref2, mag2, "result vs direct loops")
    if msg:
        return {"status": "wrong_result", "message": msg}
    return {"status": "ok", "via": how}


def _layer_inputs(spec, tmpdir):
    x = build_array(spec["args"]["x"], tmpdir)
    t = None
    tspec = spec["args"].get("t")
    if tspec:
        rng = np.random.default_rng(tspec["seed"])
        t = rng.integers(0, tspec["k"], size=tspec["n"])
        if tspec["onehot"]:
            t = np.eye(tspec["k"])[t]
    return x, t


def _make_layer(spec, backend, tmpdir, fresh_params):
    import cyconv
    ctor = {}
    for k, v in spec["ctor"].items():
        if isinstance(v, dict) and v.get("kind") == "array":
            ctor[k] = clean(build_array(v, tmpdir)) if fresh_params else build_array(v, tmpdir)
        else:
            ctor[k] = v
    cls = cyconv.get_layer(spec["layer"], backend)
    return cls(**ctor), ctor


def _run_layer(layer, spec, x, t, dout_spec, fault=None):
    if spec["layer"] == "SoftmaxWithLoss":
        loss = layer.forward(x, t, train=spec["train"]) if fault != "backward_first" else None
        return loss, layer.backward(1.0)
    if fault == "backward_first":
        return None, layer.backward(np.ones((1,)))
    y = layer.forward(x, train=spec["train"])
    rng = np.random.default_rng(dout_spec["seed"])
    dshape = y.shape
    if fault == "dout_shape":
        dshape = tuple(s + 1 for s in y.shape)
    dout = rng.standard_normal(dshape).astype(np.dtype(dout_spec["dtype"]).newbyteorder("="))
    if fault == "dout_dtype":
        dout = dout.astype(np.float16)
    if dout_spec["layout"] == "T" and dout.ndim >= 2:
        dout = np.ascontiguousarray(dout.T).T
    elif dout_spec["layout"] == "neg" and dout.ndim >= 1:
        dout = np.ascontiguousarray(dout[..., ::-1])[..., ::-1]
    elif dout_spec["layout"] == "ro":
        dout.flags.writeable = False
    dout = dout.astype(y.dtype) if fault != "dout_dtype" else dout
    return y, layer.backward(dout)


def _eval_layer(spec, tmpdir):
    expect = spec["expect"]
    x, t = _layer_inputs(spec, tmpdir)
    try:
        layer, ctor = _make_layer(spec, spec["backend"], tmpdir, False)
    except Exception as exc:  # noqa: BLE001
        return _judge_exception(exc, expect, traceback.format_exc()[-3000:])
    snap = _snapshot([x, t] + [v for v in ctor.values() if isinstance(v, np.ndarray)])
    try:
        y, dx = _run_layer(layer, spec, x, t, spec["dout"], spec["fault"])
        exc = None
    except Exception as e:  # noqa: BLE001
        exc, tb = e, traceback.format_exc()[-3000:]
    mutated = _mutated(snap)
    if mutated:
        return {"status": "mutated_input", "message": mutated}
    if exc is not None:
        return _judge_exception(exc, expect, tb)
    if expect["kind"] == "raise":
        return {"status": "accepted_invalid",
                "message": f"expected {expect['types']} naming {expect['names']}"}
    ref_backend = "numpy" if spec["layer"] in LAYER_4D else None
    ref_layer, _ = _make_layer(spec, ref_backend, tmpdir, True)
    xc = clean(x)
    y_ref, dx_ref = _run_layer(ref_layer, spec, xc, t, spec["dout"], None)
    mag = max(_finite_max(xc), 1.0) * 64
    for what, a, r in (("forward", y, y_ref), ("backward", dx, dx_ref)):
        if isinstance(r, float):
            ok = (a == r) or (abs(a - r) <= 1e-5 * (abs(r) + 1)) or (a != a and r != r)
            msg = None if ok else f"{what}: {a!r} != reference {r!r}"
        else:
            msg = compare(a, r, mag, what)
        if msg:
            return {"status": "wrong_result", "message": msg}
    for key, g in ref_layer.grads.items():
        msg = compare(layer.grads.get(key), g, mag * 64, f"grads[{key!r}]")
        if msg:
            return {"status": "wrong_result", "message": msg}
    return {"status": "ok", "via": "numpy"}


def _eval_registry(spec):
    import cyconv
    expect = spec["expect"]
    kind = spec["kind"]
    try:
        if kind == "get":
            out = cyconv.get_layer(spec["name"], spec["backend"])
            if not (isinstance(out, type) and issubclass(out, cyconv.Layer)):
                return {"status": "wrong_result", "message": f"get_layer returned {out!r}"}
        elif kind == "create":
            out = cyconv.create_layer(spec["name"], spec["backend"], **spec["kwargs"])
            if not isinstance(out, cyconv.Layer):
                return {"status": "wrong_result", "message": f"create_layer returned {out!r}"}
        elif kind == "use_backend":
            with cyconv.use_backend(*spec["backends"]):
                got = cyconv.get_layer("Conv2D").backend
            if got != spec["backends"][0]:
                return {"status": "wrong_result", "message": f"Conv2D backend {got!r}"}
        else:
            cls = {"layer": None, "int": int, "instance": cyconv.ReLU(), "none": None,
                   "function": len}[spec["cls"]]
            if spec["cls"] == "layer":
                cls = type(f"Fuzz{spec['uid']}", (cyconv.Layer,), {})
            name = spec["name"]
            if name == "FuzzLayer":
                name = f"FuzzLayer{spec['uid']}"
            out = cyconv.register_layer(name, backend=spec["backend"])(cls)
        exc = None
    except Exception as e:  # noqa: BLE001
        exc, tb = e, traceback.format_exc()[-3000:]
    if exc is not None:
        return _judge_exception(exc, expect, tb)
    if expect["kind"] == "raise":
        return {"status": "accepted_invalid",
                "message": f"expected {expect['types']} naming {expect['names']}"}
    return {"status": "ok", "via": "registry"}


# ----------------------------------------------------------------------------
# The crash-proof worker pool
# ----------------------------------------------------------------------------
FAILURES = ("wrong_result", "mutated_input", "accepted_invalid", "rejected_valid",
            "bad_error_type", "bad_message", "crash", "hang", "harness_error")


def _send(fd, obj):
    data = pickle.dumps(obj, protocol=4)
    data = struct.pack("<Q", len(data)) + data
    while data:
        k = os.write(fd, data)
        data = data[k:]


def _recv(fd, deadline=None):
    buf = b""
    need = 8
    length = None
    while True:
        while len(buf) < need:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                r, _, _ = select.select([fd], [], [], left)
                if not r:
                    raise TimeoutError
            chunk = os.read(fd, max(need - len(buf), 1 << 16))
            if not chunk:
                raise EOFError
            buf += chunk
        if length is None:
            length = struct.unpack("<Q", buf[:8])[0]
            buf = buf[8:]
            need = length
            continue
        return pickle.loads(buf[:length])


def worker_main(mem_headroom):
    """Worker loop: read pickled specs on stdin, answer result dicts on stdout."""
    import faulthandler
    import resource

    faulthandler.enable()
    proto_out = os.dup(1)
    os.dup2(2, 1)  # stray prints from the library go to stderr, not the protocol
    proto_in = sys.stdin.fileno()
    import cyconv

    # warm up (thread pools, BLAS buffers) before limiting the address space
    x = np.random.rand(2, 2, 6, 6)
    w = np.random.rand(2, 2, 3, 3)
    y = cyconv.conv2d(x, w, padding=1)
    cyconv.conv2d_backward(y, x, w, padding=1)
    cyconv.max_pool2d(x, 2)
    cyconv.avg_pool2d(x, 2)
    if mem_headroom > 0:
        with open("/proc/self/statm") as f:
            vsize = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vsize + mem_headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    tmpdir = tempfile.mkdtemp(prefix="cyconv_fuzz_")
    _send(proto_out, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            spec = _recv(proto_in)
        except EOFError:
            break
        res = evaluate(spec, tmpdir)
        for name in os.listdir(tmpdir):
            try:
                os.unlink(os.path.join(tmpdir, name))
            except OSError:
                pass
        _send(proto_out, res)


class Worker:
    def __init__(self, timeout, mem_headroom, env=None):
        self.timeout = timeout
        self.mem_headroom = mem_headroom
        self.env = env
        self.proc = None
        self.err = None
        self.spawns = 0

    def start(self):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker",
             "--mem-headroom", str(self.mem_headroom)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=self.env,
            close_fds=True)
        self.spawns += 1
        try:
            hello = _recv(self.proc.stdout.fileno(), time.monotonic() + 120)
        except (EOFError, TimeoutError):
            raise RuntimeError("fuzz worker failed to start:\n" + self.stderr_tail()) from None
        assert hello.get("ready")

    def stderr_tail(self, n=4000):
        if self.err is None:
            return ""
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-n:]

    def stop(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def submit(self, spec):
        if self.proc is None:
            self.start()
        self.spec = spec
        self.deadline = time.monotonic() + self.timeout
        try:
            _send(self.proc.stdin.fileno(), spec)
        except (BrokenPipeError, OSError):
            pass

    def collect(self):
        try:
            return _recv(self.proc.stdout.fileno(), self.deadline)
        except TimeoutError:
            self.kill()
            return {"status": "hang", "message": f"no answer within {self.timeout:.0f} s"}
        except EOFError:
            rc = self.proc.wait()
            tail = self.stderr_tail()
            self.proc = None
            return {"status": "crash", "message": f"worker died (returncode {rc})",
                    "stderr": tail}


class WorkerPool:
    """``n`` persistent worker subprocesses; crashes and hangs respawn them."""

    def __init__(self, n=1, timeout=10.0, mem_headroom=3 << 30, env=None):
        self.workers = [Worker(timeout, mem_headroom, env) for _ in range(n)]

    def run(self, spec):
        w = self.workers[0]
        w.submit(spec)
        return w.collect()

    def run_many(self, specs, callback=None):
        """Run specs on all workers; yields (spec, result) in completion order."""
        pending = list(specs)[::-1]
        busy = {}
        for w in self.workers:
            if w.proc is None:
                w.start()
        while pending or busy:
            for w in self.workers:
                if w not in busy.values() and pending:
                    spec = pending.pop()
                    w.submit(spec)
                    busy[w.proc.stdout.fileno()] = w
            fds = list(busy)
            timeout = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
            ready, _, _ = select.select(fds, [], [], timeout)
            if not ready:  # someone passed their deadline
                ready = [fd for fd, w in busy.items() if time.monotonic() >= w.deadline]
            for fd in ready:
                w = busy.pop(fd)
                res = w.collect()
                yield w.spec, res

    def close(self):
        for w in self.workers:
            w.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def describe_failure(spec, res):
    """A failure report with the case and the one-line reproducer."""
    lines = [f"outcome: {res.get('status')}: {res.get('exc_type', '')} {res.get('message', '')}",
             f"case: {spec!r}",
             "reproduce: python tools/fuzz.py --replay " + repr(repr(spec))]
    if res.get("traceback"):
        lines.append(res["traceback"])
    if res.get("stderr"):
        lines.append("worker stderr:\n" + res["stderr"])
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------
def generate(n, seed=0, weights=(6, 2, 1)):
    """``n`` case specs drawn by Hypothesis (deterministic for a given seed)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    specs = []
    rounds = 0
    while len(specs) < n:
        batch = []

        @hseed(seed * 1000 + rounds)
        @settings(max_examples=min(n - len(specs), 5000), database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case_strategy(weights))
        def collect(spec):
            batch.append(spec)  # noqa: B023 -- called at once, in this iteration

        collect()
        specs.extend(batch)
        rounds += 1
    return specs[:n]


def summarize(results, elapsed):
    outcomes = collections.Counter(r["status"] for _, r in results)
    errors = collections.Counter(r.get("exc_type") for _, r in results if r["status"] == "error")
    by_op = collections.Counter(s["op"] if s["op"] not in ("layer", "registry") else
                                f"{s['op']}:{s.get('layer', s.get('kind'))}"
                                for s, _ in results)
    lines = [f"cases: {len(results)} in {elapsed:.1f} s",
             "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())),
             "errors by type: " + ", ".join(f"{k}={v}" for k, v in sorted(errors.items())),
             f"crashes: {outcomes.get('crash', 0)}",
             f"hangs: {outcomes.get('hang', 0)}",
             f"wrong results: {outcomes.get('wrong_result', 0)}",
             f"mutated inputs: {outcomes.get('mutated_input', 0)}",
             "other failures: " + str(sum(outcomes.get(k, 0) for k in FAILURES
                                          if k not in ('crash', 'hang', 'wrong_result',
                                                       'mutated_input'))),
             "cases by op: " + ", ".join(f"{k}={v}" for k, v in sorted(by_op.items()))]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    p.add_argument("--mem-headroom", type=int, default=3 << 30,
                   help="bytes of address space a worker may add after warm-up")
    p.add_argument("--replay", help="run one case (repr of its spec) in-process")
    p.add_argument("--show-failures", type=int, default=20)
    p.add_argument("--failures-file", help="write every failing case (repr, one a line) here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.mem_headroom)
        return 0
    if args.replay:
        spec = ast.literal_eval(args.replay)
        spec["expect"] = expectation(spec)
        res = evaluate(spec)
        print(res)
        return 0 if res["status"] not in FAILURES else 1
    t0 = time.time()
    specs = generate(args.cases, args.seed)
    print(f"generated {len(specs)} cases in {time.time() - t0:.1f} s", flush=True)
    results = []
    t1 = time.time()
    with WorkerPool(args.workers, args.timeout, args.mem_headroom) as pool:
        for i, (spec, res) in enumerate(pool.run_many(specs)):
            results.append((spec, res))
            if res["status"] in FAILURES and sum(
                    r["status"] in FAILURES for _, r in results) <= args.show_failures:
                print("FAILURE\n" + describe_failure(spec, res) + "\n", flush=True)
            if (i + 1) % 1000 == 0:
                print(f"... {i + 1} cases", flush=True)
    print(summarize(results, time.time() - t1))
    failing = [(s, r) for s, r in results if r["status"] in FAILURES]
    if failing:
        kinds = collections.Counter(
            (r["status"], r.get("exc_type", ""), s["op"], s.get("fault")) for s, r in failing)
        print("failures by (outcome, exception, op, fault):")
        for key, count in kinds.most_common():
            print(f"  {count:5d}  {key}")
    if args.failures_file:
        with open(args.failures_file, "w") as f:
            for s, r in failing:
                f.write(repr({"result": r, "case": s}) + "\n")
    bad = len(failing)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

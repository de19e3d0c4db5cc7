"""Running one case in the worker: build the arguments, call, judge (see :func:`evaluate`)."""

from __future__ import annotations

import time
import traceback

import numpy as np

import cyconv

from .arrays import build_array, clean
from .judge import accepted_invalid, call_and_judge, compare, finite_max, judge_exception
from .oracle import LAYER_4D
from .reference import direct_pool, reference_functional


def _plane_size(x):
    """H * W of a 4-D x given as an array or as nested lists (1 otherwise): an
    out-of-bounds index must lie past the plane of x in whatever form x came."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError):     # ragged or not numeric
        return 1
    return a.shape[2] * a.shape[3] if a.ndim == 4 else 1


def _build_indices(spec_idx, x, kwargs):
    mode = spec_idx["mode"]
    shape = tuple(spec_idx["shape"])
    rng = np.random.default_rng(spec_idx["seed"])
    if mode == "none":
        return None
    plane = _plane_size(x)
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
    verdict, out = call_and_judge(lambda: _call_functional(spec, vals), list(vals.values()),
                                  expect)
    if verdict is not None:
        return verdict
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        for v in vals.values():
            if isinstance(v, np.ndarray) and isinstance(o, np.ndarray) and \
                    np.shares_memory(o, v):
                return {"status": "wrong_result", "message": "output shares memory with an input"}
    try:
        ref, mag = reference_functional(spec, vals)
        how = "numpy"
    except (MemoryError, ValueError, OverflowError):
        if spec["op"].startswith(("max", "avg")):
            ref, mag = direct_pool(spec, vals)
            how = "direct"
        else:
            return {"status": "ok_unverified"}
    msg = compare(out, ref, mag)
    if msg is None and how == "numpy" and spec["op"].startswith(("max", "avg")):
        small = spec.get("fault") is None and np.prod(clean(vals["x"]).shape) <= 200
        if small:  # second opinion: independent loops
            ref2, mag2 = direct_pool(spec, vals)
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
        return judge_exception(exc, expect, traceback.format_exc()[-3000:])
    arrays = [x, t] + [v for v in ctor.values() if isinstance(v, np.ndarray)]
    verdict, out = call_and_judge(
        lambda: _run_layer(layer, spec, x, t, spec["dout"], spec["fault"]), arrays, expect)
    if verdict is not None:
        return verdict
    y, dx = out
    ref_backend = "numpy" if spec["layer"] in LAYER_4D else None
    ref_layer, _ = _make_layer(spec, ref_backend, tmpdir, True)
    xc = clean(x)
    y_ref, dx_ref = _run_layer(ref_layer, spec, xc, t, spec["dout"], None)
    mag = max(finite_max(xc), 1.0) * 64
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
        return judge_exception(exc, expect, tb)
    if expect["kind"] == "raise":
        return accepted_invalid(expect)
    return {"status": "ok", "via": "registry"}

"""The oracle: which cases are valid and what a valid call returns, decided
independently of cyconv (this module's own argument rules and shape rule).

:func:`expectation` maps a case to ``{"kind": "ok", ...}`` (with the output
shape and the resolved geometry), ``{"kind": "raise", "names", "types"}``
(the error classes allowed and the words one of which the message must
contain) or ``{"kind": "any", ...}`` (huge inputs: computing or refusing are
both right).
"""

from __future__ import annotations

import numpy as np


def is_int(v):
    """An int (NumPy ints too), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def pair(v):
    """``(a, b)`` from an int or a pair of ints; None for anything else."""
    if is_int(v):
        return (int(v), int(v))
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(is_int(q) for q in v):
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
    if is_int(padding):
        return ((int(padding),) * 2,) * 2
    if isinstance(padding, (list, tuple)) and len(padding) == 2:
        if all(is_int(p) for p in padding):
            return ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
        if all(isinstance(p, (list, tuple)) and len(p) == 2 and all(is_int(q) for q in p)
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
    kernel = pair(kw["kernel"])
    if kernel is None or min(kernel) < 1:
        return (["kernel_size"], None)
    stride_arg = kw.get("stride", 1)
    if pool and stride_arg is None:
        stride_arg = kernel
    stride = pair(stride_arg)
    if stride is None or min(stride) < 1:
        return (["stride"], None)
    dilation = pair(kw.get("dilation", 1))
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


VALUE_ERRORS = ("ValueError", "ShapeError")


ARG_ERRORS = ("ValueError", "ShapeError", "TypeError")


MEM_ERRORS = ("MemoryError", "ValueError", "ShapeError")


LOOKUP_ERRORS = ("BackendError", "LayerNotFoundError")


def _raise(names, types=ARG_ERRORS, **extra):
    return dict({"kind": "raise", "names": list(names), "types": list(types)}, **extra)


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
    """What ``spec`` must do: ``{"kind": "ok"|"raise"|"any", ...}`` (see the module docstring)."""
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
        if not is_int(groups):
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
            if not is_int(dov):
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
    if nt is not None and (not is_int(nt) or nt == 0):
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

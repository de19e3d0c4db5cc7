"""Case generation: Hypothesis strategies drawing printable case specs.

A functional case draws a valid call (geometry from
:mod:`cyconv.testing.strategies`, arrays from :mod:`.arrays`), then at most
one *fault*.  :data:`FAULT_BUILDERS` maps each fault to the function that
puts it into the call; the bad argument values come from the catalogue
(``cyconv.testing.strategies.invalid_values``), the impossible geometries
from its invalid-geometry strategies.  The oracle (:mod:`.oracle`) then
says, independently, what the call must do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import strategies as st

from cyconv.testing import strategies as cst

from .arrays import BAD_DTYPES, GOOD_DTYPES, arr, array_variant, lit
from .oracle import expectation, pair

FUNCTIONAL_OPS = ("conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward",
                  "avg_pool2d", "avg_pool2d_backward")
LAYER_NAMES = ("Conv2D", "MaxPool2D", "AvgPool2D", "Affine", "ReLU", "Sigmoid", "Flatten",
               "Dropout", "BatchNorm", "SoftmaxWithLoss")

# fault -> the argument whose catalogued bad values it draws
BAD_ARGUMENT_FAULTS = {
    "stride_bad": "stride", "padding_bad": "padding", "rounding_bad": "rounding",
    "n_threads_bad": "n_threads", "backend_bad": "backend", "groups_bad": "groups",
    "dilation_bad": "dilation", "kernel_bad": "kernel_size", "ceil_mode_bad": "ceil_mode",
    "count_include_pad_bad": "count_include_pad", "divisor_override_bad": "divisor_override",
}
COMMON_FAULTS = ("x_ndim", "x_dtype", "x_junk", "x_empty", "stride_bad", "padding_bad",
                 "n_threads_bad", "backend_bad", "huge_padding", "huge_int", "huge_broadcast",
                 "rounding_bad", "geometry_invalid")
CONV_FAULTS = COMMON_FAULTS + ("w_ndim", "w_dtype", "b_shape", "b_dtype", "channel_mismatch",
                               "groups_bad", "groups_not_dividing", "dilation_bad", "w_empty")
POOL_FAULTS = COMMON_FAULTS + ("kernel_bad", "ceil_mode_bad", "huge_kernel")
BACKWARD_FAULTS = ("dy_shape", "dy_dtype", "dy_ndim", "dy_junk")
MAXBWD_FAULTS = ("indices_float", "indices_oob", "indices_neg", "indices_shape", "indices_list")
AVG_FAULTS = ("count_include_pad_bad", "divisor_override_bad")
# the catalogue's invalid convolution geometries that need no particular channel counts
_CONV_GEOMETRY_REASONS = ("non_integral", "kernel_too_large", "bad_stride", "bad_dilation",
                          "negative_padding", "bad_padding_string", "bad_type", "bad_rounding")
_GEOMETRY_KEYS = ("kernel_size", "stride", "padding", "dilation", "rounding", "ceil_mode")


@dataclass
class Draft:
    """A functional case while it is drawn: what the fault builders read and change."""

    op: str
    dtype: str
    n: int
    c: int
    h: int
    w: int
    kernel: tuple  # (kh, kw): the weights' spatial shape or the pooling window
    oc: int
    seed: int
    fault: object = None
    kwargs: dict = field(default_factory=dict)
    args: dict = field(default_factory=dict)

    @property
    def conv(self):
        return self.op.startswith("conv")

    @property
    def avg(self):
        return self.op.startswith("avg")

    @property
    def x_shape(self):
        return [self.n, self.c, self.h, self.w]

    def other_float(self):
        """A dtype that is not this case's: non-float, or the other float width."""
        return BAD_DTYPES + (("f4",) if "8" in self.dtype else ("f8",))


# -- the fault builders: one per fault, each changes the draft in place ---------------

def _bad_argument(draw, d):
    argument = BAD_ARGUMENT_FAULTS[d.fault]
    d.kwargs[argument] = draw(st.sampled_from(cst.invalid_values(argument)))


def _x_ndim(draw, d):
    shape = draw(st.sampled_from(([d.c, d.h, d.w], d.x_shape + [1], [d.h], [])))
    d.args["x"] = arr(shape, d.dtype, seed=d.seed)


def _x_dtype(draw, d):
    d.args["x"] = arr(d.x_shape, draw(st.sampled_from(BAD_DTYPES)),
                      layout=draw(st.sampled_from(("c", "T", "neg"))), seed=d.seed)


def _x_junk(draw, d):
    d.args["x"] = lit(draw(st.sampled_from((None, "abc", 3.0, {"a": 1}, [[1.0, 2.0], [3.0]],
                                            b"\x00\x01"))))


def _x_empty(draw, d):
    shape = d.x_shape
    shape[draw(st.integers(0, 3))] = 0
    d.args["x"] = arr(shape, d.dtype, seed=d.seed)


def _w_empty(draw, d):
    d.args["w"] = arr([0] + d.args["w"]["shape"][1:], d.dtype, seed=d.seed)


def _w_ndim(draw, d):
    d.args["w"] = arr(d.args["w"]["shape"][:3], d.dtype, seed=d.seed)


def _w_dtype(draw, d):
    d.args["w"] = arr(d.args["w"]["shape"], draw(st.sampled_from(d.other_float())), seed=d.seed)


def _b_shape(draw, d):
    if d.op != "conv2d":  # only the forward takes a bias
        d.fault = None
        return
    shape = draw(st.sampled_from(([d.oc + 1], [d.oc, 1], [1, d.oc], [])))
    d.args["b"] = arr(shape, d.dtype, seed=d.seed)


def _b_dtype(draw, d):
    if d.op != "conv2d":
        d.fault = None
        return
    d.args["b"] = arr([d.oc], draw(st.sampled_from(d.other_float())), seed=d.seed)


def _channel_mismatch(draw, d):
    shape = list(d.args["w"]["shape"])
    shape[1] += draw(st.integers(1, 2))
    d.args["w"] = arr(shape, d.dtype, seed=d.seed)


def _groups_not_dividing(draw, d):
    g = draw(st.integers(2, 5))
    while d.c % g == 0:
        g += 1
    d.kwargs["groups"] = g
    d.args["w"] = arr([g * 2, 1, d.kernel[0], d.kernel[1]], d.dtype, seed=d.seed)


def _geometry_invalid(draw, d):
    """An impossible geometry from the catalogue's strategies, on this case's channels."""
    if d.conv:
        case = draw(cst.invalid_conv_geometries(_CONV_GEOMETRY_REASONS))
        d.kernel = tuple(case.w_shape[2:])
        d.args["w"] = arr(list(d.args["w"]["shape"][:2]) + list(d.kernel), d.dtype,
                          seed=d.seed)
    else:
        case = draw(cst.invalid_pool_geometries("avg" if d.avg else "max"))
    for key in _GEOMETRY_KEYS:
        d.kwargs.pop(key, None)
    d.kwargs.update(case.kwargs)
    d.h, d.w = case.x_shape[2:]
    d.args["x"] = arr(d.x_shape, d.dtype, seed=d.seed)


def _huge_padding(draw, d):
    # tiny arrays, astronomically large output: must be refused quickly
    d.kwargs["padding"] = draw(st.sampled_from((10**5, 10**6, 2**31, 2**40, 2**62)))
    if not d.conv:
        d.kwargs["kernel_size"] = 2 * d.kwargs["padding"] + 1
        d.kwargs["stride"] = draw(st.sampled_from((1, None)))
        d.kwargs.pop("dilation", None)


def _huge_kernel(draw, d):
    # pooling: a huge kernel/padding/stride over a tiny input; output is tiny
    k = draw(st.sampled_from((2**20, 2**26, 2**31, 2**40, 2**61)))
    d.kwargs.update(kernel_size=k, padding=k // 2, stride=k)
    d.kwargs.pop("dilation", None)


def _huge_int(draw, d):
    key = draw(st.sampled_from(("stride", "dilation", "padding")))
    if key == "dilation" and d.avg:
        key = "stride"
    d.kwargs[key] = draw(st.sampled_from((2**62, 2**63, 2**64, 2**70)))


def _huge_broadcast(draw, d):
    shape = draw(st.sampled_from(([2**20, d.c, 1024, 1024], [d.n, d.c, 2**17, 2**17],
                                  [2**40, d.c, 4, 4])))
    d.args["x"] = {"kind": "broadcast", "shape": shape, "dtype": d.dtype}


def _no_change(draw, d):
    """Faults put in later, on the gradient or the indices (see :func:`_add_dy`)."""


FAULT_BUILDERS = {
    **{fault: _bad_argument for fault in BAD_ARGUMENT_FAULTS},
    "x_ndim": _x_ndim, "x_dtype": _x_dtype, "x_junk": _x_junk, "x_empty": _x_empty,
    "w_empty": _w_empty, "w_ndim": _w_ndim, "w_dtype": _w_dtype, "b_shape": _b_shape,
    "b_dtype": _b_dtype, "channel_mismatch": _channel_mismatch,
    "groups_not_dividing": _groups_not_dividing, "geometry_invalid": _geometry_invalid,
    "huge_padding": _huge_padding, "huge_kernel": _huge_kernel, "huge_int": _huge_int,
    "huge_broadcast": _huge_broadcast,
    **{fault: _no_change for fault in BACKWARD_FAULTS + MAXBWD_FAULTS},
}

def _dy_shape(draw, d, shape):
    bad = list(shape)
    bad[draw(st.integers(0, 3))] += draw(st.integers(1, 2))
    return arr(bad, d.dtype, seed=d.seed)


def _dy_dtype(draw, d, shape):
    return arr(shape, draw(st.sampled_from(d.other_float())), seed=d.seed)


def _dy_ndim(draw, d, shape):
    return arr(shape[1:], d.dtype, seed=d.seed)


def _dy_junk(draw, d, shape):
    return lit(draw(st.sampled_from((None, "dy", 1.0))))


# the gradient's faults: builder(draw, draft, the well-shaped dy shape) -> dy description
DY_FAULT_BUILDERS = {"dy_shape": _dy_shape, "dy_dtype": _dy_dtype, "dy_ndim": _dy_ndim,
                     "dy_junk": _dy_junk}


# -- functional cases ------------------------------------------------------------------

def _faults_for(op):
    faults = CONV_FAULTS if op.startswith("conv") else POOL_FAULTS
    if op.endswith("backward"):
        faults += BACKWARD_FAULTS
    if op == "max_pool2d_backward":
        faults += MAXBWD_FAULTS
    if op.startswith("avg"):
        faults += AVG_FAULTS
    return faults


def _draw_valid_call(draw):
    """A valid functional call (geometry by construction) and the fault to put in."""
    op = draw(st.sampled_from(FUNCTIONAL_OPS))
    fault = draw(st.one_of(st.just(None), st.sampled_from(_faults_for(op))))
    dtype = draw(st.sampled_from(GOOD_DTYPES))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kwargs = {}
    if op.startswith("conv"):
        g = draw(cst.conv_geometries(max_kernel=4, max_stride=3, max_dilation=2, max_size=9,
                                     max_padding=3))
        groups = draw(st.sampled_from([k for k in range(1, c + 1) if c % k == 0]))
        oc = groups * draw(st.integers(1, 3))
        kwargs.update(g.kwargs(), groups=groups)
    else:
        kind = "max" if op.startswith("max") else "avg"
        g = draw(cst.pool_geometries(kind, max_kernel=4, max_stride=3, max_dilation=2,
                                     max_size=9, max_padding=2))
        oc = c
        kwargs.update(g.layer_kwargs())
        if g.rounding != "floor" and draw(st.integers(0, 4)) == 0:
            del kwargs["rounding"]  # PyTorch's spelling of rounding="ceil"
            kwargs["ceil_mode"] = True
        if op == "max_pool2d":
            kwargs["return_indices"] = draw(st.booleans())
        if kind == "avg":
            kwargs["count_include_pad"] = draw(st.booleans())
            kwargs["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 5)))
    kwargs["n_threads"] = draw(st.sampled_from((None, None, 1, 2, 3, -1)))
    kwargs["backend"] = draw(st.sampled_from((None, None, "cython", "numpy")))
    h, w = g.input_size
    d = Draft(op=op, dtype=dtype, n=n, c=c, h=h, w=w, kernel=pair(g.kernel_size), oc=oc,
              seed=0, fault=fault, kwargs=kwargs)
    d.args["x"] = array_variant(draw, d.x_shape, dtype,
                                fill="ties" if op.startswith("max") else None)
    if d.conv:
        d.args["w"] = array_variant(draw, [oc, c // kwargs["groups"]] + list(d.kernel), dtype)
        if op == "conv2d":
            with_bias = draw(st.booleans())
            d.args["b"] = array_variant(draw, [oc], dtype) if with_bias else lit(None)
    d.seed = draw(st.integers(0, 2**31 - 1))
    return d


def _add_dy(draw, d, spec):
    """The backward ops' gradient (and max pooling's indices), then the expectation again."""
    out_shape = spec["expect"].get("out_shape") or [d.n, d.c, 1, 1]
    if d.conv:
        w = d.args["w"]
        oc = w["shape"][0] if w["kind"] == "array" and len(w["shape"]) == 4 else d.oc
        dshape = [out_shape[0], oc, out_shape[2], out_shape[3]]
    else:
        dshape = list(out_shape)
    if dshape and math.prod(dshape) > 4096:
        dshape = [1, 1, 1, 1]
    d.args["dy"] = array_variant(draw, dshape, d.dtype)
    if d.fault in DY_FAULT_BUILDERS:
        d.args["dy"] = DY_FAULT_BUILDERS[d.fault](draw, d, dshape)
    if d.op == "max_pool2d_backward":
        mode = draw(st.sampled_from(("none", "none", "forward", "random", "random_i32")))
        if d.fault in MAXBWD_FAULTS:
            mode = d.fault
        d.args["indices"] = {"kind": "indices", "mode": mode, "shape": dshape, "seed": d.seed,
                             "layout": draw(st.sampled_from(("c", "T", "ro")))}
    spec["expect"] = expectation(spec)


def functional_case(draw):
    """Draw one functional-API case (a spec dict): a valid call with at most one fault."""
    d = _draw_valid_call(draw)
    if d.fault is not None:
        FAULT_BUILDERS[d.fault](draw, d)
    spec = {"op": d.op, "fault": d.fault, "args": d.args, "kwargs": d.kwargs}
    spec["expect"] = expectation(spec)
    if d.op.endswith("backward"):
        _add_dy(draw, d, spec)
    return spec


# -- layers and the registry -------------------------------------------------------------

LAYER_FAULTS = ("x_dtype", "x_ndim", "dout_shape", "backward_first", "dout_dtype")


def layer_case(draw):
    """Draw one layer case: a built-in layer's forward and backward, valid or with a fault."""
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
    x = array_variant(draw, xshape, dtype)
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


def registry_case(draw):
    """Draw one registry case: get/create/register/use_backend with good and junk names."""
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
    """Hypothesis strategy drawing functional, layer and registry cases in these proportions."""
    kinds = ("functional",) * weights[0] + ("layer",) * weights[1] + ("registry",) * weights[2]
    draw_case = {"functional": functional_case, "layer": layer_case, "registry": registry_case}

    @st.composite
    def case(draw):
        return draw_case[draw(st.sampled_from(kinds))](draw)

    return case()


def functional_strategy():
    """Strategy of functional cases."""
    return st.composite(functional_case)()


def layer_strategy():
    """Strategy of layer cases."""
    return st.composite(layer_case)()


def registry_strategy():
    """Strategy of registry cases."""
    return st.composite(registry_case)()

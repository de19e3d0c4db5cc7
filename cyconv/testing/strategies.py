"""Hypothesis strategies for convolution / pooling geometries and float arrays.

Valid geometries are built *by construction*: the strategy draws kernel,
dilation, stride, padding and rounding first and then an input size for
which the output size is a positive integer under ``rounding="exact"``
(no :func:`hypothesis.assume`, no filtering), so every drawn example is
accepted by :func:`cyconv.resolve_geometry`.

Invalid geometries come tagged with the exception type that must be raised
and the argument name the error message must mention.

Examples
--------
>>> from hypothesis import given
>>> import cyconv
>>> from cyconv.testing.strategies import conv_geometries
>>> @given(conv_geometries())
... def test_shape_rule(g):
...     cyconv.resolve_geometry(g.input_size, g.kernel_size, **g.kwargs())
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - hypothesis is a test extra
    raise ImportError("cyconv.testing.strategies needs Hypothesis: "
                      "pip install 'cyconv[test]' (or pip install hypothesis)") from exc

from .._shapes import as_pair, resolve_geometry

__all__ = [
    "ConvGeometry",
    "PoolGeometry",
    "ConvCase",
    "InvalidCase",
    "PADDING_FORMS",
    "conv_geometries",
    "pool_geometries",
    "conv_cases",
    "invalid_conv_geometries",
    "invalid_pool_geometries",
    "float_dtypes",
    "float_arrays",
]

#: Padding spellings the geometry strategies can draw.
PADDING_FORMS = ("int", "pair", "sides", "same", "valid")
_ROUNDINGS = ("exact", "floor", "ceil")


# -- result types ----------------------------------------------------------------------

@dataclass(frozen=True)
class ConvGeometry:
    """A valid convolution geometry, ready for :func:`cyconv.conv2d`.

    Attributes
    ----------
    input_size : (int, int)
        Spatial input size ``(H, W)``.
    kernel_size, stride, dilation : int or (int, int)
        As drawn (an int when both dimensions agree and the int spelling was
        drawn).
    padding : int, (int, int), ((int, int), (int, int)), "same" or "valid"
    rounding : {"exact", "floor", "ceil"}
    """

    input_size: tuple
    kernel_size: object
    stride: object
    padding: object
    dilation: object
    rounding: str

    def kwargs(self):
        """Keyword arguments for :func:`cyconv.conv2d` / :class:`cyconv.Conv2D`.

        Returns
        -------
        dict
            ``stride``, ``padding``, ``dilation`` and ``rounding``.
        """
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    rounding=self.rounding)

    def resolve(self):
        """Resolve with :func:`cyconv.resolve_geometry`.

        Returns
        -------
        Geometry
        """
        return resolve_geometry(self.input_size, self.kernel_size, **self.kwargs())

    @property
    def output_size(self):
        """``(OH, OW)`` under the shape rule."""
        return self.resolve().out_size


@dataclass(frozen=True)
class PoolGeometry:
    """A valid pooling geometry (padding at most ``kernel // 2`` per side).

    Attributes
    ----------
    kind : {"max", "avg"}
    input_size : (int, int)
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        ``None`` means ``stride = kernel_size`` (the pooling default).
    padding : int, pair, per-side pairs, "same" or "valid"
    dilation : int or (int, int)
        Always 1 for ``kind="avg"`` (average pooling has no dilation).
    rounding : {"exact", "floor", "ceil"}
    """

    kind: str
    input_size: tuple
    kernel_size: object
    stride: object
    padding: object
    dilation: object
    rounding: str

    def kwargs(self):
        """Keyword arguments (besides ``kernel_size``) for the pooling functions/layers.

        Returns
        -------
        dict
            ``stride``, ``padding``, ``rounding`` and, for max pooling,
            ``dilation``.
        """
        out = dict(stride=self.stride, padding=self.padding, rounding=self.rounding)
        if self.kind == "max":
            out["dilation"] = self.dilation
        return out

    def layer_kwargs(self):
        """Constructor arguments for :class:`cyconv.MaxPool2D` / :class:`cyconv.AvgPool2D`.

        Returns
        -------
        dict
        """
        return dict(kernel_size=self.kernel_size, **self.kwargs())

    def resolve(self):
        """Resolve with :func:`cyconv.resolve_geometry` (pooling padding limit on).

        Returns
        -------
        Geometry
        """
        return resolve_geometry(self.input_size, self.kernel_size,
                                stride=self.kernel_size if self.stride is None else self.stride,
                                padding=self.padding, dilation=self.dilation,
                                rounding=self.rounding, layer="pool2d", max_pool_padding=True)

    @property
    def output_size(self):
        """``(OH, OW)`` under the shape rule."""
        return self.resolve().out_size


@dataclass(frozen=True)
class ConvCase:
    """A complete, valid convolution problem: shapes, geometry and options.

    Attributes
    ----------
    n, in_channels, out_channels, groups : int
        ``groups`` divides both channel counts.
    bias : bool
    geometry : ConvGeometry
    dtype : numpy.dtype
    """

    n: int
    in_channels: int
    out_channels: int
    groups: int
    bias: bool
    geometry: ConvGeometry
    dtype: np.dtype = field(default=np.dtype(np.float64))

    @property
    def x_shape(self):
        """``(N, C, H, W)``."""
        return (self.n, self.in_channels) + tuple(self.geometry.input_size)

    @property
    def w_shape(self):
        """``(OC, C // groups, KH, KW)``."""
        kh, kw = as_pair(self.geometry.kernel_size, "kernel_size")
        return (self.out_channels, self.in_channels // self.groups, kh, kw)

    @property
    def b_shape(self):
        """``(OC,)`` or None without bias."""
        return (self.out_channels,) if self.bias else None

    @property
    def y_shape(self):
        """``(N, OC, OH, OW)`` under the shape rule."""
        return (self.n, self.out_channels) + self.geometry.output_size

    def kwargs(self):
        """Keyword arguments for :func:`cyconv.conv2d` (geometry and ``groups``).

        Returns
        -------
        dict
        """
        return dict(self.geometry.kwargs(), groups=self.groups)

    def layer_kwargs(self):
        """Constructor arguments for :class:`cyconv.Conv2D` (weights built lazily).

        Returns
        -------
        dict
        """
        return dict(self.kwargs(), out_channels=self.out_channels,
                    kernel_size=self.geometry.kernel_size, bias=self.bias)

    def arrays(self, seed=0, *, low=-1.0, high=1.0):
        """Random ``(x, w, b)`` of the case's shapes and dtype (``b`` is None without bias).

        Parameters
        ----------
        seed : int or numpy.random.Generator
        low, high : float
            Uniform range of the values.

        Returns
        -------
        tuple of ndarray
        """
        rng = np.random.default_rng(seed)
        def draw(shape):
            return rng.uniform(low, high, shape).astype(self.dtype)
        return draw(self.x_shape), draw(self.w_shape), (draw(self.b_shape) if self.bias
                                                       else None)


@dataclass(frozen=True)
class InvalidCase:
    """An invalid convolution or pooling call and the error it must raise.

    Attributes
    ----------
    kind : {"conv", "max", "avg"}
        Which function the case is for (:func:`cyconv.conv2d`,
        :func:`cyconv.max_pool2d`, :func:`cyconv.avg_pool2d`).
    x_shape : tuple
        Input shape ``(N, C, H, W)``.
    w_shape : tuple or None
        Weight shape (convolution only).
    kwargs : dict
        Keyword arguments for the call (``kernel_size`` included for pooling).
    error : type
        Exception class that must be raised (a subclass also matches).
    argument : str
        Text the error message must contain (the offending argument's name).
    reason : str
        What is wrong, for test ids and reports.
    geometry_only : bool
        True when :func:`cyconv.resolve_geometry` alone already rejects the
        case (the channel/groups cases need the arrays).
    """

    kind: str
    x_shape: tuple
    w_shape: object
    kwargs: dict
    error: type
    argument: str
    reason: str
    geometry_only: bool = True

    def call(self, backend=None):
        """Make zero arrays and run the call that must raise.

        Parameters
        ----------
        backend : str, optional
            Passed to the functional API.
        """
        import cyconv

        x = np.zeros(self.x_shape)
        if self.kind == "conv":
            return cyconv.conv2d(x, np.zeros(self.w_shape), backend=backend, **self.kwargs)
        fn = cyconv.max_pool2d if self.kind == "max" else cyconv.avg_pool2d
        return fn(x, backend=backend, **self.kwargs)

    def resolve(self):
        """Run :func:`cyconv.resolve_geometry` on the case's geometry (for
        ``geometry_only`` cases)."""
        kw = dict(self.kwargs)
        if self.kind == "conv":
            kernel = self.w_shape[2:]
            extra = {}
        else:
            kernel = kw.pop("kernel_size")
            if kw.get("stride", None) is None:
                kw["stride"] = kernel
            extra = {"max_pool_padding": True}
        kw.pop("groups", None)
        return resolve_geometry(self.x_shape[2:], kernel, **kw, **extra)


# -- building blocks -------------------------------------------------------------------

def _spelled(pair, square):
    """An int when ``square`` (both equal), else the pair."""
    return pair[0] if square else tuple(pair)


def _size_for(draw, effective, pads, stride, rounding, max_size):
    """Input length giving a positive output (integral under "exact")."""
    total = pads[0] + pads[1]
    if rounding == "exact":
        # in = effective - total + stride * m, m >= 0, in >= 1
        m_lo = max(0, -((effective - total - 1) // stride))  # ceil((1 - eff + total) / s)
        m_hi = max(m_lo, (max_size - effective + total) // stride)
        return effective - total + stride * draw(st.integers(m_lo, m_hi))
    low = max(1, effective - total)
    return draw(st.integers(low, max(low, max_size)))


@st.composite
def _geometry(draw, *, pool, kind, max_kernel, max_stride, max_dilation, max_padding, max_size,
              roundings, paddings, default_stride):
    if not roundings or any(r not in _ROUNDINGS for r in roundings):
        raise ValueError(f"roundings must be a non-empty subset of {_ROUNDINGS}, got {roundings!r}")
    if not paddings or any(p not in PADDING_FORMS for p in paddings):
        raise ValueError(f"paddings must be a non-empty subset of {PADDING_FORMS}, "
                         f"got {paddings!r}")
    square = draw(st.booleans())
    n_dims = 1 if square else 2
    kernel = [draw(st.integers(1, max_kernel)) for _ in range(n_dims)] * (2 // n_dims)
    dilation = [draw(st.integers(1, max_dilation)) for _ in range(n_dims)] * (2 // n_dims)
    stride = [draw(st.integers(1, max_stride)) for _ in range(n_dims)] * (2 // n_dims)
    stride_arg = _spelled(stride, square)
    if default_stride and draw(st.booleans()):
        stride, stride_arg = list(kernel), None  # pooling default: stride = kernel_size
    rounding = draw(st.sampled_from(roundings))
    forms = list(paddings)
    if pool and max(dilation) > 1 and "same" in forms and len(forms) > 1:
        forms.remove("same")  # 'same' with dilation may exceed the pooling padding limit
    form = draw(st.sampled_from(forms))

    def side_limit(i):
        return min(max_padding, kernel[i] // 2) if pool else max_padding

    if form == "valid":
        padding, pads = "valid", [(0, 0), (0, 0)]
    elif form == "int":
        p = draw(st.integers(0, min(side_limit(0), side_limit(1))))
        padding, pads = p, [(p, p), (p, p)]
    elif form == "pair":
        ph, pw = draw(st.integers(0, side_limit(0))), draw(st.integers(0, side_limit(1)))
        padding, pads = (ph, pw), [(ph, ph), (pw, pw)]
    elif form == "sides":
        pads = [tuple(draw(st.integers(0, side_limit(i))) for _ in range(2)) for i in range(2)]
        padding = tuple(pads)
    else:  # same: any input size works (output ceil(in/stride), floor rounding)
        padding = "same"
        size = tuple(draw(st.integers(1, max_size)) for _ in range(2))
        if pool:  # dilation 1: 'same' pads at most kernel // 2 per side; keep it safe
            from .._shapes import normalize_padding
            sides = normalize_padding("same", size, kernel, stride, dilation)
            if any(max(sides[i]) > kernel[i] // 2 for i in range(2)):  # pragma: no cover
                padding = "valid"
                size = tuple(_size_for(draw, dilation[i] * (kernel[i] - 1) + 1, (0, 0),
                                       stride[i], rounding, max_size) for i in range(2))
        pads = None
    if pads is not None:
        size = tuple(_size_for(draw, dilation[i] * (kernel[i] - 1) + 1, pads[i], stride[i],
                               rounding, max_size) for i in range(2))
    kernel_arg = _spelled(kernel, square)
    dilation_arg = _spelled(dilation, square)
    if pool:
        return PoolGeometry(kind=kind, input_size=size, kernel_size=kernel_arg, stride=stride_arg,
                            padding=padding, dilation=dilation_arg if kind == "max" else 1,
                            rounding=rounding)
    return ConvGeometry(input_size=size, kernel_size=kernel_arg, stride=stride_arg,
                        padding=padding, dilation=dilation_arg, rounding=rounding)


def conv_geometries(max_kernel=4, max_stride=3, max_dilation=2, max_size=12, *, max_padding=2,
                    roundings=_ROUNDINGS, paddings=PADDING_FORMS):
    """Strategy for valid convolution geometries.

    Parameters
    ----------
    max_kernel, max_stride, max_dilation : int
        Upper bounds (inclusive) of the per-dimension values drawn.
    max_size : int
        Soft upper bound of the input size; exceeded only when a large
        effective kernel needs a larger input.
    max_padding : int
        Largest padding per side for the explicit padding spellings.
    roundings : sequence of {"exact", "floor", "ceil"}
    paddings : sequence of {"int", "pair", "sides", "same", "valid"}
        Padding spellings to draw from.

    Returns
    -------
    hypothesis.strategies.SearchStrategy of ConvGeometry
        Every example resolves with :func:`cyconv.resolve_geometry`.

    Examples
    --------
    >>> g = conv_geometries().example()  # doctest: +SKIP
    >>> cyconv.conv2d(x, w, **g.kwargs())  # doctest: +SKIP
    """
    return _geometry(pool=False, kind="conv", max_kernel=max_kernel, max_stride=max_stride,
                     max_dilation=max_dilation, max_padding=max_padding, max_size=max_size,
                     roundings=tuple(roundings), paddings=tuple(paddings), default_stride=False)


def pool_geometries(kind="max", max_kernel=3, max_stride=3, max_dilation=2, max_size=12, *,
                    max_padding=2, roundings=_ROUNDINGS, paddings=PADDING_FORMS,
                    default_stride=True):
    """Strategy for valid pooling geometries.

    Padding never exceeds ``kernel // 2`` on a side (the pooling limit) and
    average pooling always has dilation 1.

    Parameters
    ----------
    kind : {"max", "avg"}
    max_kernel, max_stride, max_dilation, max_size, max_padding, roundings, paddings
        As in :func:`conv_geometries` (``max_dilation`` is ignored for "avg").
    default_stride : bool
        Also draw ``stride=None`` (stride equal to the kernel size).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of PoolGeometry
    """
    if kind not in ("max", "avg"):
        raise ValueError(f"kind must be 'max' or 'avg', got {kind!r}")
    return _geometry(pool=True, kind=kind, max_kernel=max_kernel, max_stride=max_stride,
                     max_dilation=max_dilation if kind == "max" else 1, max_padding=max_padding,
                     max_size=max_size, roundings=tuple(roundings), paddings=tuple(paddings),
                     default_stride=default_stride)


@st.composite
def _conv_cases(draw, max_batch, max_channels_per_group, max_groups, dtypes, geometry):
    groups = draw(st.integers(1, max_groups))
    c = groups * draw(st.integers(1, max_channels_per_group))
    oc = groups * draw(st.integers(1, max_channels_per_group))
    return ConvCase(n=draw(st.integers(1, max_batch)), in_channels=c, out_channels=oc,
                    groups=groups, bias=draw(st.booleans()), geometry=draw(geometry),
                    dtype=np.dtype(draw(st.sampled_from(dtypes))))


def conv_cases(max_batch=3, max_channels_per_group=3, max_groups=3, *,
               dtypes=(np.float64, np.float32), geometries=None, **geometry_kwargs):
    """Strategy for complete convolution problems (shapes, groups, bias, dtype).

    Parameters
    ----------
    max_batch : int
        Largest ``N``.
    max_channels_per_group : int
        Largest ``C // groups`` and ``OC // groups``.
    max_groups : int
    dtypes : sequence of dtype
    geometries : SearchStrategy of ConvGeometry, optional
        Defaults to ``conv_geometries(**geometry_kwargs)``.
    **geometry_kwargs
        Forwarded to :func:`conv_geometries`.

    Returns
    -------
    hypothesis.strategies.SearchStrategy of ConvCase
        ``case.arrays(seed)`` gives ``(x, w, b)``; ``case.kwargs()`` the
        keyword arguments of :func:`cyconv.conv2d`.
    """
    geometry = geometries if geometries is not None else conv_geometries(**geometry_kwargs)
    return _conv_cases(max_batch, max_channels_per_group, max_groups, tuple(dtypes), geometry)


# -- invalid geometries ---------------------------------------------------------------

def _invalid_conv_builders():
    """(reason, strategy of InvalidCase) pairs for convolution."""
    from .._shapes import ShapeError

    def case(x_shape, w_shape, error, argument, reason, geometry_only=True, **kwargs):
        return InvalidCase(kind="conv", x_shape=tuple(x_shape), w_shape=tuple(w_shape),
                           kwargs=kwargs, error=error, argument=argument, reason=reason,
                           geometry_only=geometry_only)

    ints = st.integers
    builders = {}

    @st.composite
    def non_integral(draw):
        k, s, p = draw(ints(1, 4)), draw(ints(2, 3)), draw(ints(0, 2))
        base = k - 2 * p + draw(ints(1, s - 1))  # span % s != 0
        m_lo = max(0, -(-(1 - base) // s))
        h = base + s * draw(ints(m_lo, m_lo + 2))
        w = max(1, k - 2 * p)  # the width is fine (stride 1 there)
        return case((1, 1, h, w), (1, 1, k, k), ShapeError, "rounding",
                    "output size not an integer under rounding='exact'",
                    stride=(s, 1), padding=(p, p))

    @st.composite
    def kernel_too_large(draw):
        size, p = draw(ints(1, 5)), draw(ints(0, 1))
        d = draw(ints(1, 2))
        # effective kernel d*(k-1)+1 > size + 2p
        k = (size + 2 * p) // d + 2
        return case((1, 1, size, size), (1, 1, k, k), ShapeError, "kernel",
                    "kernel larger than the padded input", padding=p, dilation=d)

    def bad_positive(argument, reason, error=ValueError):
        @st.composite
        def build(draw):
            value = draw(ints(-3, 0))
            if draw(st.booleans()):
                value = (draw(ints(-3, 0)), 1) if draw(st.booleans()) else (1, value)
            return case((1, 1, 6, 6), (1, 1, 3, 3), error, argument, reason, **{argument: value})
        return build()

    @st.composite
    def negative_padding(draw):
        p = draw(ints(-3, -1))
        value = draw(st.sampled_from([p, (p, 0), (0, p), ((0, p), (0, 0)), ((0, 0), (p, 0))]))
        return case((1, 1, 6, 6), (1, 1, 3, 3), ValueError, "padding", "negative padding",
                    padding=value)

    @st.composite
    def bad_padding_string(draw):
        value = draw(st.sampled_from(["full", "samee", "validd", "causal", ""]))
        return case((1, 1, 6, 6), (1, 1, 3, 3), ValueError, "padding", "unknown padding string",
                    padding=value)

    @st.composite
    def bad_type(draw):
        argument = draw(st.sampled_from(["stride", "dilation", "padding"]))
        value = draw(st.sampled_from([1.5, (1, 2, 3), "2", None, (1.0, 1)]))
        if argument == "padding" and value == "2":
            value = 1.5
        return case((1, 1, 6, 6), (1, 1, 3, 3), TypeError, argument,
                    f"{argument} of the wrong type", **{argument: value})

    @st.composite
    def bad_rounding(draw):
        value = draw(st.sampled_from(["round", "EXACT", "nearest", "truncate"]))
        return case((1, 1, 6, 6), (1, 1, 3, 3), ValueError, "rounding", "unknown rounding",
                    rounding=value)

    @st.composite
    def groups_not_dividing(draw):
        groups = draw(ints(2, 4))
        c = groups * draw(ints(1, 2)) + draw(ints(1, groups - 1))  # not a multiple
        return case((1, c, 5, 5), (groups, 1, 3, 3), ValueError, "groups",
                    "groups does not divide the input channels", geometry_only=False,
                    groups=groups)

    @st.composite
    def groups_not_dividing_out(draw):
        groups = draw(ints(2, 4))
        oc = groups * draw(ints(1, 2)) + draw(ints(1, groups - 1))
        return case((1, groups, 5, 5), (oc, 1, 3, 3), ValueError, "groups",
                    "groups does not divide the output channels", geometry_only=False,
                    groups=groups)

    @st.composite
    def bad_groups(draw):
        value = draw(ints(-2, 0))
        return case((1, 2, 5, 5), (2, 2, 3, 3), ValueError, "groups", "groups < 1",
                    geometry_only=False, groups=value)

    @st.composite
    def channel_mismatch(draw):
        c = draw(ints(1, 4))
        wc = c + draw(ints(1, 2))
        return case((1, c, 5, 5), (2, wc, 3, 3), ValueError, "w.shape",
                    "weight channels do not match the input", geometry_only=False)

    builders["non_integral"] = non_integral()
    builders["kernel_too_large"] = kernel_too_large()
    builders["bad_stride"] = bad_positive("stride", "stride < 1")
    builders["bad_dilation"] = bad_positive("dilation", "dilation < 1")
    builders["negative_padding"] = negative_padding()
    builders["bad_padding_string"] = bad_padding_string()
    builders["bad_type"] = bad_type()
    builders["bad_rounding"] = bad_rounding()
    builders["groups_not_dividing"] = groups_not_dividing()
    builders["groups_not_dividing_out"] = groups_not_dividing_out()
    builders["bad_groups"] = bad_groups()
    builders["channel_mismatch"] = channel_mismatch()
    return builders


def invalid_conv_geometries(reasons=None):
    """Strategy for invalid convolution calls, each tagged with the expected error.

    Covers: output size not integral under ``rounding="exact"``, a (dilated)
    kernel larger than the padded input, stride or dilation < 1, negative
    padding, an unknown padding string, arguments of the wrong type, an
    unknown rounding, ``groups`` not dividing the input or output channels,
    ``groups < 1`` and weights whose channel count does not match the input.

    Parameters
    ----------
    reasons : sequence of str, optional
        Restrict to these builder keys (``"non_integral"``,
        ``"kernel_too_large"``, ``"bad_stride"``, ``"bad_dilation"``,
        ``"negative_padding"``, ``"bad_padding_string"``, ``"bad_type"``,
        ``"bad_rounding"``, ``"groups_not_dividing"``,
        ``"groups_not_dividing_out"``, ``"bad_groups"``, ``"channel_mismatch"``).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of InvalidCase
        ``case.call()`` must raise ``case.error`` with ``case.argument`` in
        the message.
    """
    builders = _invalid_conv_builders()
    keys = list(builders) if reasons is None else list(reasons)
    unknown = [k for k in keys if k not in builders]
    if unknown:
        raise ValueError(f"unknown reasons {unknown}; choose from {list(builders)}")
    return st.one_of([builders[k] for k in keys])


@st.composite
def _invalid_pool(draw, kind):
    from .._shapes import ShapeError

    choice = draw(st.sampled_from(["padding_limit", "non_integral", "kernel_too_large",
                                   "bad_stride", "bad_kernel", "bad_rounding", "ceil_conflict"]
                                  + (["bad_dilation"] if kind == "max" else [])))
    x_shape = (1, 1, 6, 6)
    kw = {"kernel_size": 2}

    def make(error, argument, reason, **kwargs):
        return InvalidCase(kind=kind, x_shape=x_shape, w_shape=None, kwargs=dict(kw, **kwargs),
                           error=error, argument=argument, reason=reason,
                           geometry_only="ceil_mode" not in kwargs)

    if choice == "padding_limit":
        k = draw(st.integers(1, 4))
        p = k // 2 + draw(st.integers(1, 2))
        kw["kernel_size"] = k
        x_shape = (1, 1, 8, 8)
        padding = draw(st.sampled_from([p, (p, 0), (0, p), ((0, p), (0, 0))]))
        return make(ValueError, "padding", "padding exceeds half the kernel", stride=1,
                    padding=padding)
    if choice == "non_integral":
        k = draw(st.integers(2, 3))
        size = k * draw(st.integers(1, 3)) + draw(st.integers(1, k - 1))
        x_shape = (1, 1, size, k)
        kw["kernel_size"] = k
        return make(ShapeError, "rounding", "output size not an integer under rounding='exact'")
    if choice == "kernel_too_large":
        size = draw(st.integers(1, 4))
        x_shape = (1, 1, size, size)
        kw["kernel_size"] = size + draw(st.integers(1, 2))
        return make(ShapeError, "kernel", "kernel larger than the padded input", stride=1)
    if choice == "bad_stride":
        return make(ValueError, "stride", "stride < 1", stride=draw(st.integers(-2, 0)))
    if choice == "bad_dilation":
        return make(ValueError, "dilation", "dilation < 1", dilation=draw(st.integers(-2, 0)))
    if choice == "bad_kernel":
        kw["kernel_size"] = draw(st.integers(-2, 0))
        return make(ValueError, "kernel_size", "kernel_size < 1", stride=1)
    if choice == "bad_rounding":
        return make(ValueError, "rounding", "unknown rounding",
                    rounding=draw(st.sampled_from(["round", "Floor", "up"])))
    return make(ValueError, "ceil_mode", "ceil_mode=True conflicts with rounding='floor'",
                rounding="floor", ceil_mode=True)


def invalid_pool_geometries(kind="max"):
    """Strategy for invalid pooling calls, each tagged with the expected error.

    Covers the pooling padding limit (more than ``kernel // 2`` per side),
    non-integral output under ``rounding="exact"``, a kernel larger than the
    input, stride/dilation/kernel < 1, an unknown rounding and ``ceil_mode``
    conflicting with ``rounding="floor"``.

    Parameters
    ----------
    kind : {"max", "avg"}

    Returns
    -------
    hypothesis.strategies.SearchStrategy of InvalidCase
    """
    if kind not in ("max", "avg"):
        raise ValueError(f"kind must be 'max' or 'avg', got {kind!r}")
    return _invalid_pool(kind)


# -- arrays --------------------------------------------------------------------------

def float_dtypes():
    """Strategy for the supported float dtypes (float32, float64).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of numpy.dtype
    """
    return st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])


def float_arrays(shape, dtype=np.float64, *, bound=1.0, unique=False):
    """Strategy for arrays of bounded, finite floats (no NaN, inf or subnormals).

    Parameters
    ----------
    shape : int, tuple of int, or a strategy of those
    dtype : float32/float64 dtype, or a strategy of those (e.g. :func:`float_dtypes`)
    bound : float
        Values lie in ``[-bound, bound]`` (e.g. 1.0 or 10.0).
    unique : bool
        All elements distinct (useful for max pooling, where ties make the
        gradient ambiguous).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of ndarray

    Examples
    --------
    >>> from hypothesis import given
    >>> @given(float_arrays((2, 3, 4, 4), float_dtypes()))
    ... def test_relu(x): ...
    """
    if isinstance(dtype, st.SearchStrategy):
        return dtype.flatmap(lambda dt: float_arrays(shape, dt, bound=bound, unique=unique))
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    width = 32 if dt == np.float32 else 64
    bound = float(np.asarray(bound, dtype=dt))
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                         allow_subnormal=False, width=width)
    return hnp.arrays(dt, shape, elements=elements, unique=unique)

"""Hypothesis strategies for convolution / pooling geometries and float arrays.

Valid geometries are built *by construction*: the strategy draws kernel,
dilation, stride, padding and rounding first and then an input size for
which the output size is a positive integer under ``rounding="exact"``
(no :func:`hypothesis.assume`, no filtering), so every drawn example is
accepted by :func:`cyconv.resolve_geometry`.

Invalid geometries come tagged with the exception type that must be raised
and the argument name the error message must mention.

This module is the one catalogue of valid, invalid and faulty inputs that
:func:`cyconv.testing.check_layer`, cyconv's test suite and its fuzzer
(``tools/fuzz``) share: besides the strategies it re-exports the table of
bad argument values (:data:`INVALID_VALUES`, :func:`invalid_values`,
:func:`invalid_params`), the dtypes float-only functions refuse
(:data:`NON_FLOAT_DTYPES`), non-finite fills and the non-contiguous layouts
of :func:`awkward_copy`.  Those need only NumPy
(:mod:`cyconv.testing._catalogue`); the strategies need Hypothesis.

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

from .._param_validation import PARAMS, ROUNDINGS
from .._shapes import resolve_geometry
from ._catalogue import (
    AWKWARD_LAYOUTS,
    INVALID_VALUES,
    MISSING,
    NON_FINITE_FILLS,
    NON_FLOAT_DTYPES,
    awkward_copy,
    invalid_params,
    invalid_values,
)
from ._invalid_strategies import InvalidCase, invalid_conv_geometries, invalid_pool_geometries

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
    # the catalogue of invalid and faulty inputs (cyconv.testing._catalogue)
    "INVALID_VALUES",
    "MISSING",
    "NON_FLOAT_DTYPES",
    "NON_FINITE_FILLS",
    "AWKWARD_LAYOUTS",
    "invalid_values",
    "invalid_params",
    "awkward_copy",
]

#: Padding spellings the geometry strategies can draw.
PADDING_FORMS = ("int", "pair", "sides", "same", "valid")
_ROUNDINGS = ROUNDINGS  # the declared rounding options


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
        kh, kw = PARAMS["kernel_size"].check(self.geometry.kernel_size, "kernel_size")
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

"""Strategies for invalid convolution and pooling calls, each tagged with its error.

The bad values come from the catalogue (:mod:`cyconv.testing._catalogue`) and
the declared constraints it is built from (``cyconv._param_validation``);
the builders here add what a value alone cannot say: shapes that make a
geometry impossible (non-integral output, a kernel larger than the padded
input, the pooling padding limit) and channel/groups mismatches.
Re-exported by :mod:`cyconv.testing.strategies`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from .._param_validation import PARAMS
from .._shapes import ShapeError, resolve_geometry
from ._catalogue import INVALID_VALUES, invalid_values

__all__ = ["InvalidCase", "invalid_conv_geometries", "invalid_pool_geometries"]

_PADDING_STRINGS = tuple(v for v in invalid_values("padding", ValueError) if isinstance(v, str))


def _too_small(argument, count=3):
    """The ``count`` integers just below what the declared constraint of ``argument`` accepts."""
    constraint = PARAMS[argument]
    low = getattr(constraint, "minimum", None)
    low = constraint.left if low is None else low
    return st.integers(low - count, low - 1)


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


def _invalid_conv_builders():
    """(reason, strategy of InvalidCase) pairs for convolution."""
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
            value = draw(_too_small(argument, 4))
            if draw(st.booleans()):
                value = (value, 1) if draw(st.booleans()) else (1, value)
            return case((1, 1, 6, 6), (1, 1, 3, 3), error, argument, reason, **{argument: value})
        return build()

    @st.composite
    def negative_padding(draw):
        p = draw(_too_small("padding"))
        value = draw(st.sampled_from([p, (p, 0), (0, p), ((0, p), (0, 0)), ((0, 0), (p, 0))]))
        return case((1, 1, 6, 6), (1, 1, 3, 3), ValueError, "padding", "negative padding",
                    padding=value)

    @st.composite
    def bad_padding_string(draw):
        value = draw(st.sampled_from(_PADDING_STRINGS))
        return case((1, 1, 6, 6), (1, 1, 3, 3), ValueError, "padding", "unknown padding string",
                    padding=value)

    @st.composite
    def bad_type(draw):
        argument = draw(st.sampled_from(["stride", "dilation", "padding"]))
        value = draw(st.sampled_from(invalid_values(argument, TypeError)))
        return case((1, 1, 6, 6), (1, 1, 3, 3), TypeError, argument,
                    f"{argument} of the wrong type", **{argument: value})

    @st.composite
    def bad_rounding(draw):
        value, error = draw(st.sampled_from(INVALID_VALUES["rounding"]))
        return case((1, 1, 6, 6), (1, 1, 3, 3), error, "rounding", "unknown rounding",
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
        value = draw(_too_small("groups"))
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
        return make(ValueError, "stride", "stride < 1", stride=draw(_too_small("stride")))
    if choice == "bad_dilation":
        return make(ValueError, "dilation", "dilation < 1", dilation=draw(_too_small("dilation")))
    if choice == "bad_kernel":
        kw["kernel_size"] = draw(_too_small("kernel_size"))
        return make(ValueError, "kernel_size", "kernel_size < 1", stride=1)
    if choice == "bad_rounding":
        value, error = draw(st.sampled_from(INVALID_VALUES["rounding"]))
        return make(error, "rounding", "unknown rounding", rounding=value)
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

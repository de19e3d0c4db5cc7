"""Shape rules: the one place where output sizes and paddings are computed.

The law, per spatial dimension::

    out = (in + pad_before + pad_after - dilation*(k - 1) - 1) / stride + 1

With dilation 1 and symmetric padding this is the textbook
``OH = (H + 2P - FH)/S + 1``.  ``rounding="exact"`` (the default) demands an
integer result and raises :class:`ShapeError` explaining how to fix it;
``"floor"`` is PyTorch's default and ``"ceil"`` follows PyTorch's
``ceil_mode`` rule (the last window must start inside the input or the
left/top padding).

Every layer, the functional API and every backend call
:func:`resolve_geometry`; nothing else computes an output size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ._param_validation import PARAMS, WindowPair

__all__ = [
    "ShapeError",
    "Geometry",
    "conv_output_size",
    "pool_output_size",
    "resolve_geometry",
    "normalize_padding",
]

_DIM_NAMES = ("height", "width")


class ShapeError(ValueError):
    """An output size that is not a positive integer under the chosen rounding.

    Subclass of :class:`ValueError`; the message names the layer and dimension,
    shows the formula with the numbers filled in and suggests valid
    alternatives.
    """


@dataclass(frozen=True)
class Geometry:
    """Fully resolved 2-D window geometry handed to every backend kernel.

    All fields are plain Python ints.  ``pad_bottom``/``pad_right`` are the
    paddings the output size was computed with; a kernel treats every input
    position outside ``[0, H) x [0, W)`` as padding (zero for convolution and
    average pooling, ``-inf`` for max pooling).
    """

    in_h: int
    in_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    out_h: int
    out_w: int

    @property
    def out_size(self):
        return (self.out_h, self.out_w)

    @property
    def kernel_size(self):
        return (self.kernel_h, self.kernel_w)


_KERNEL_SIZE, _STRIDE, _DILATION = PARAMS["kernel_size"], PARAMS["stride"], PARAMS["dilation"]
_INPUT_SIZE, _PADDING, _ROUNDING = PARAMS["input_size"], PARAMS["padding"], PARAMS["rounding"]
_CEIL_MODE = PARAMS["ceil_mode"]
_SAME_INPUT_SIZE = WindowPair(1)  # 'same' padding of an empty input: an error naming input_size


def check_rounding(rounding, ceil_mode=False):
    """Validate ``rounding`` and fold PyTorch's ``ceil_mode=True`` alias into it."""
    rounding = _ROUNDING.check(rounding, "rounding")
    if ceil_mode is not False and _CEIL_MODE.check(ceil_mode, "ceil_mode"):
        if rounding not in ("exact", "ceil"):
            raise ValueError(f"ceil_mode=True conflicts with rounding={rounding!r}; pass one of them")
        return "ceil"
    return rounding


def _same_padding(in_size, k, stride, dilation):
    """TensorFlow's 'same' rule: out = ceil(in/stride); extra padding bottom/right."""
    effective = dilation * (k - 1) + 1
    out = -(-in_size // stride)
    total = max((out - 1) * stride + effective - in_size, 0)
    return (total // 2, total - total // 2)


padding_keyword = _PADDING.keyword


def normalize_padding(padding, input_size, kernel_size, stride=1, dilation=1):
    """Resolve any accepted padding spelling to ``((top, bottom), (left, right))``.

    Parameters
    ----------
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
        The two strings in any case (``"SAME"``).  ``"same"`` keeps
        ``out = ceil(in / stride)`` (TensorFlow's rule; with stride 1 the output
        equals the input), putting any odd extra padding at the bottom/right.
    input_size, kernel_size, stride, dilation : int or pair

    Returns
    -------
    ((int, int), (int, int))

    Examples
    --------
    >>> normalize_padding(1, (4, 4), 3)
    ((1, 1), (1, 1))
    >>> normalize_padding("same", (5, 5), 2, stride=1)
    ((0, 1), (0, 1))
    """
    kernel = _KERNEL_SIZE.check(kernel_size, "kernel_size")
    strides = _STRIDE.check(stride, "stride")
    dilations = _DILATION.check(dilation, "dilation")
    pads = _PADDING.check(padding, "padding")
    if pads == "valid":
        return ((0, 0), (0, 0))
    if pads == "same":
        size = _SAME_INPUT_SIZE.check(input_size, "input_size")
        return tuple(_same_padding(size[i], kernel[i], strides[i], dilations[i]) for i in range(2))
    return pads


def validate_window_options(kernel_size, stride, padding, dilation, *, pool=False):
    """Check window options before any input is seen (layer constructors).

    Raises the same errors :func:`resolve_geometry` would, naming the argument;
    with ``pool=True`` also PyTorch's limit of padding <= kernel_size // 2.
    """
    kernel = _KERNEL_SIZE.check(kernel_size, "kernel_size")
    _STRIDE.check(stride, "stride")
    _DILATION.check(dilation, "dilation")
    if padding_keyword(padding) is not None:
        return
    pads = normalize_padding(padding, kernel, kernel)
    if pool:
        for i in range(2):
            if max(pads[i]) > kernel[i] // 2:
                raise ValueError(f"padding {pads[i]} in {_DIM_NAMES[i]} exceeds half the kernel "
                                 f"size {kernel[i]} (max {kernel[i] // 2}); use padding <= "
                                 f"kernel_size // 2")


def _suggestions(in_size, k, stride, dilation, pad_before, pad_after):
    """Nearby settings that make the exact rule hold, for the error message.

    The searches are bounded (a few thousand candidates at most), so a huge
    stride or padding still gets its error at once.
    """
    effective = dilation * (k - 1) + 1
    hints = []
    if stride > 4096 or max(pad_before, pad_after) > 4096 or in_size > 1 << 20:
        return ["a smaller stride or padding"]
    symmetric = pad_before == pad_after
    pads = [p for p in range(0, max(pad_before, pad_after) + stride + 1)
            if in_size + 2 * p - effective >= 0 and (in_size + 2 * p - effective) % stride == 0]
    if symmetric and pads:
        best = sorted(pads, key=lambda p: (abs(p - pad_before), p))[:2]
        hints.append("padding " + " or ".join(
            f"{p} (-> {(in_size + 2 * p - effective) // stride + 1})" for p in sorted(best)))
    span = in_size + pad_before + pad_after - effective
    if span >= 0:
        near = range(max(1, stride - 64), min(stride + 64, max(span, 1)) + 1)
        strides = [s for s in near if span % s == 0] or [1]
        best = sorted(strides, key=lambda s: (abs(s - stride), s))[:2]
        hints.append("stride " + " or ".join(f"{s} (-> {span // s + 1})" for s in sorted(best)))
    below = in_size - (span % stride)
    above = below + stride
    sizes = [n for n in (below, above) if n >= 1 and n + pad_before + pad_after - effective >= 0]
    if sizes:
        hints.append("input size " + " or ".join(str(n) for n in sizes))
    return hints


def _output_length(in_size, k, stride, dilation, pad_before, pad_after, rounding, *, layer, dim):
    effective = dilation * (k - 1) + 1
    span = in_size + pad_before + pad_after - effective
    formula = (f"(in + pad_before + pad_after - dilation*(k-1) - 1)/stride + 1 = "
               f"({in_size} + {pad_before} + {pad_after} - {dilation}*({k}-1) - 1)/{stride} + 1")
    if span < 0:
        raise ShapeError(
            f"{layer}: the {dim} window (kernel {k}, dilation {dilation}: {effective} pixels) is "
            f"larger than the padded input ({in_size} + {pad_before} + {pad_after} = "
            f"{in_size + pad_before + pad_after}); {formula} = {span / stride + 1:.4g} is not a "
            f"positive size. Use a smaller kernel or dilation, or more padding.")
    if rounding == "ceil":
        out = span // stride + 1
        # One more, partial, window -- PyTorch's rule: only if it starts inside
        # the input or the left padding.
        if span % stride and out * stride < in_size + pad_before:
            out += 1
        return out
    if rounding == "floor" or span % stride == 0:
        return span // stride + 1
    hints = _suggestions(in_size, k, stride, dilation, pad_before, pad_after)
    raise ShapeError(
        f"{layer}: output {dim} is not an integer: {formula} = {span / stride + 1:.2f}. "
        f"Valid alternatives: " + "; ".join(hints)
        + f"; or pass rounding='floor' (-> {span // stride + 1}, PyTorch's behaviour) or "
          f"rounding='ceil' (PyTorch's ceil_mode=True).")


def resolve_geometry(input_size, kernel_size, *, stride=1, padding=0, dilation=1,
                     rounding="exact", layer="conv2d", max_pool_padding=False):
    """Resolve a 2-D window geometry and its output size.

    Parameters
    ----------
    input_size : (int, int)
        Spatial input size ``(H, W)``.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, pair, ((top, bottom), (left, right)), "valid" or "same"
    rounding : {"exact", "floor", "ceil"}
    layer : str
        Name used in error messages.
    max_pool_padding : bool
        Enforce PyTorch's pooling limit: padding at most half the kernel.

    Returns
    -------
    Geometry

    Raises
    ------
    ShapeError
        If an output size is not a positive integer under ``rounding``.
    ValueError, TypeError
        For malformed arguments (each message names the argument).
    """
    args = (input_size, kernel_size, stride, padding, dilation, rounding, layer)
    if all(map(_is_plain_key, args)):
        return _cached_geometry(*args, bool(max_pool_padding))
    return _resolve_geometry(*args, max_pool_padding)


def _is_plain_key(value):
    """Whether ``value`` may key the geometry cache: exact ints and strs, and tuples of
    them.  Anything else (lists, NumPy ints, floats, bools: 1.0 and True hash and
    compare like 1 and would share its entry) is resolved uncached, so that it
    meets the same checks and errors as ever."""
    kind = type(value)
    if kind is int or kind is str:
        return True
    return kind is tuple and all(map(_is_plain_key, value))


def _resolve_geometry(input_size, kernel_size, stride, padding, dilation, rounding, layer,
                      max_pool_padding):
    size = _INPUT_SIZE.check(input_size, "input_size")
    kernel = _KERNEL_SIZE.check(kernel_size, "kernel_size")
    strides = _STRIDE.check(stride, "stride")
    dilations = _DILATION.check(dilation, "dilation")
    rounding = _ROUNDING.check(rounding, "rounding")
    pads = normalize_padding(padding, size, kernel, strides, dilations)
    if min(size) < 1:
        raise ShapeError(f"{layer}: input spatial size must be >= 1, got {size}")
    if max_pool_padding:
        try:
            validate_window_options(kernel, strides, pads, dilations, pool=True)
        except ValueError as exc:
            raise ValueError(f"{layer}: {exc}") from None
    out = tuple(
        _output_length(size[i], kernel[i], strides[i], dilations[i], pads[i][0], pads[i][1],
                       "floor" if padding_keyword(padding) == "same" else rounding, layer=layer,
                       dim=_DIM_NAMES[i])
        for i in range(2))
    return Geometry(in_h=size[0], in_w=size[1], kernel_h=kernel[0], kernel_w=kernel[1],
                    stride_h=strides[0], stride_w=strides[1],
                    dilation_h=dilations[0], dilation_w=dilations[1],
                    pad_top=pads[0][0], pad_bottom=pads[0][1],
                    pad_left=pads[1][0], pad_right=pads[1][1],
                    out_h=out[0], out_w=out[1])


# A layer resolves one geometry call after call, and resolving it cost a batch-1
# convolution a sixth of its time.  Only plain keys reach it (_is_plain_key);
# errors are never cached.
_cached_geometry = functools.lru_cache(maxsize=512)(_resolve_geometry)


def conv_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1, rounding="exact"):
    """Output ``(OH, OW)`` of a convolution.

    Examples
    --------
    >>> conv_output_size((4, 4), 3, stride=1, padding=1)
    (4, 4)
    >>> conv_output_size((28, 31), 5, stride=3, padding=2)
    (10, 11)
    """
    return resolve_geometry(input_size, kernel_size, stride=stride, padding=padding,
                            dilation=dilation, rounding=rounding, layer="conv2d").out_size


def pool_output_size(input_size, kernel_size, stride=None, padding=0, dilation=1,
                     rounding="exact", ceil_mode=False):
    """Output ``(OH, OW)`` of a pooling window; ``stride=None`` means ``stride = kernel_size``.

    Examples
    --------
    >>> pool_output_size((24, 24), 2)
    (12, 12)
    >>> pool_output_size((5, 5), 2, ceil_mode=True)
    (3, 3)
    """
    rounding = check_rounding(rounding, ceil_mode)
    return resolve_geometry(input_size, kernel_size,
                            stride=kernel_size if stride is None else stride,
                            padding=padding, dilation=dilation, rounding=rounding,
                            layer="pool2d", max_pool_padding=True).out_size


def winograd_serves(geom):
    """Whether Winograd F(m x m, 3 x 3) computes a convolution of this geometry.

    It serves 3x3 kernels with stride 1 and dilation 1: any padding, groups
    and dtype.
    """
    return ((geom.kernel_h, geom.kernel_w) == (3, 3) and (geom.stride_h, geom.stride_w) == (1, 1)
            and (geom.dilation_h, geom.dilation_w) == (1, 1))

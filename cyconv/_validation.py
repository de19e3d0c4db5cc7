"""Input checks for the public boundary.

Every public entry point (functional API, layers) normalises its arrays here
once: float32/float64 only, native byte order, C-contiguous, right rank.  The
compiled kernels run without bounds checks and trust what comes out of this
module; they never see an array they could read out of bounds.
"""

from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(value, name, *, ndim=None, dtype=None):
    """Return ``value`` as a C-contiguous, native-endian float32/float64 array.

    Never copies an array that already qualifies and never mutates the input.

    Raises
    ------
    TypeError
        Non-float dtypes (int, bool, float16, complex, object) or a dtype that
        differs from ``dtype``; the message names ``name`` and the fix.
    ValueError
        Wrong number of dimensions.
    """
    given = value
    if not isinstance(value, np.ndarray):
        if value is None or isinstance(value, (str, bytes, dict, set)):
            raise TypeError(f"{name} must be a float32 or float64 NumPy array, "
                            f"got {type(value).__name__}")
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be converted to an array: {exc}") from None
        if value.dtype.kind in "iub":
            value = value.astype(np.float64)
    kind_ok = value.dtype.kind == "f" and value.dtype.itemsize in (4, 8)
    if not kind_ok:
        hint = ("; convert it with .astype(np.float32)" if value.dtype.kind in "iubf"
                else "")
        raise TypeError(f"{name} must have dtype float32 or float64, got {value.dtype}{hint}")
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    if dtype is not None and value.dtype != dtype:
        if not isinstance(given, np.ndarray):
            raise TypeError(converted_dtype_message(name, given, value.dtype, "the other inputs",
                                                    dtype))
        raise TypeError(f"{name} has dtype {value.dtype} but the other inputs are {np.dtype(dtype)}; "
                        f"cast one of them with .astype(...) so that all match")
    if ndim is not None and value.ndim != ndim:
        shape_hint = {4: "(N, C, H, W)", 1: "(C,)"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{name} must be {ndim}-D {shape_hint}, got shape {value.shape}")
    return np.ascontiguousarray(value)


def converted_dtype_message(name, given, converted, others, dtype):
    """The error for a non-array input whose conversion gave another dtype than its peers'."""
    dtype = np.dtype(dtype).newbyteorder("=")
    return (f"{name} is a {type(given).__name__}, which converts to {converted}, but "
            f"{others} {'is' if others[:4] != 'the ' else 'are'} {dtype}: all inputs must share "
            f"one dtype; pass {name} as np.asarray({name}, dtype=np.{dtype.name})")


def _channels(count):
    return f"{count} channel" if count == 1 else f"{count} channels"


def channels_last_hint(shape, channels, *, batch_axis=True):
    """A sentence for a channel-count error when ``shape`` looks channels-last.

    The hint is given when the last axis of ``shape`` has the expected
    ``channels`` and the channel axis does not: an NHWC array (or an
    ``(H, W, C)`` per-sample shape, ``batch_axis=False``) handed to cyconv,
    which is channels-first.  Empty otherwise.
    """
    shape = tuple(int(s) for s in shape)
    axis = 1 if batch_axis else 0
    if len(shape) != axis + 3 or shape[-1] != channels or shape[axis] == channels:
        return ""
    if batch_axis:
        return (f"; x of shape {shape} looks channels-last (NHWC) with {_channels(channels)}, "
                f"and cyconv is channels-first (NCHW): pass x.transpose(0, 3, 1, 2)")
    return (f"; the input shape {shape} looks channels-last (H, W, C) with "
            f"{_channels(channels)}, and cyconv is channels-first: use "
            f"{(shape[2], shape[0], shape[1])} (and x.transpose(0, 3, 1, 2) for the data)")


def check_nonempty(x, name):
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")


def check_shape(array, expected, name):
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(array.shape)}")


def class_labels(t):
    """Integer class labels of targets ``t``: labels (N,) as given, one-hot (N, K) by argmax."""
    t = np.asarray(t)
    return t.argmax(axis=1) if t.ndim == 2 else t

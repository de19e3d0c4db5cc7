"""The catalogue of invalid and faulty inputs, one table for every tester.

:func:`cyconv.testing.check_layer` (through the built-in layers'
``invalid_params``), the strategies of :mod:`cyconv.testing.strategies`, the
test suite and the fuzzer (``tools/fuzz``) all draw their bad values from
here, so a new way of getting an argument wrong is added once.

Each geometry or call argument maps to the values every function taking it
must reject, with the exception class cyconv raises for them (a
``LookupError`` is a :class:`cyconv.BackendError`).  ``stride=None`` is not
listed: it is the pooling default (and a TypeError for :func:`cyconv.conv2d`).

Re-exported by :mod:`cyconv.testing.strategies`; needs only NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "AWKWARD_LAYOUTS",
    "INVALID_VALUES",
    "MISSING",
    "NON_FINITE_FILLS",
    "NON_FLOAT_DTYPES",
    "awkward_copy",
    "invalid_params",
    "invalid_values",
]


class _Missing:
    def __repr__(self):
        return "MISSING"


#: Value in an ``invalid_params`` entry that removes the key from the base kwargs.
MISSING = _Missing()

#: argument -> ((value, exception class), ...): values that must be rejected.
INVALID_VALUES = {
    "kernel_size": ((0, ValueError), (-2, ValueError), ((2, 0), ValueError),
                    ((3, -1), ValueError), (2.0, TypeError), (1.5, TypeError), (None, TypeError),
                    ((1, 2, 3), TypeError), ("2", TypeError)),
    "stride": ((0, ValueError), (-1, ValueError), (-2, ValueError), ((1, 0), ValueError),
               ((2, -1), ValueError), (1.5, TypeError), ("1", TypeError), ((1, 2, 3), TypeError),
               (True, TypeError), ((1.0, 1), TypeError)),
    "dilation": ((0, ValueError), (-1, ValueError), ((1, 0), ValueError), (2.0, TypeError),
                 (1.5, TypeError), ("x", TypeError), (False, TypeError), (None, TypeError),
                 ((1, 2, 3), TypeError), ((1.0, 1), TypeError)),
    "padding": ((-1, ValueError), ((0, -1), ValueError), (((0, 0), (-1, 0)), ValueError),
                (((0, 0), (0, -1)), ValueError), ((1, -1), ValueError),
                (((0, -2), (0, 0)), ValueError), (True, TypeError),
                ("full", ValueError), ("samee", ValueError), ("validd", ValueError),
                ("causal", ValueError), ("", ValueError), ("2", ValueError), (1.5, TypeError),
                ((1, 2, 3), TypeError), (None, TypeError), (((1, 2), 3), TypeError),
                ((1.0, 1), TypeError)),
    "rounding": (("round", ValueError), ("EXACT", ValueError), ("nearest", ValueError),
                 ("truncate", ValueError), ("FLOOR", ValueError), ("up", ValueError),
                 ("", ValueError), (None, ValueError), (1, ValueError)),
    "groups": ((0, ValueError), (-1, ValueError), (1.0, TypeError), (2.5, TypeError),
               (True, TypeError), ("2", TypeError), (None, TypeError)),
    "ceil_mode": (("yes", TypeError), (None, TypeError), (1.5, TypeError)),
    "count_include_pad": (("yes", TypeError), (None, TypeError), (2, TypeError),
                          (1.0, TypeError)),
    "divisor_override": ((0, ValueError), (-3, ValueError), (1.5, TypeError), ("2", TypeError),
                         (True, TypeError)),
    "n_threads": ((0, ValueError), (1.5, TypeError), ("2", TypeError), ("4", TypeError),
                  (True, TypeError)),
    "backend": (("nope", LookupError), ("CYTHON", LookupError), ("", LookupError),
                (3, TypeError)),
}

#: Array dtypes every float-only entry point refuses with TypeError.
NON_FLOAT_DTYPES = ("f2", "i1", "i8", "u1", "?", "c16", "O")

#: Non-finite contents (valid input: they must propagate as IEEE arithmetic says).
NON_FINITE_FILLS = ("nan", "inf", "mixed")

#: Memory layouts that are valid input yet not C-contiguous (see :func:`awkward_copy`).
AWKWARD_LAYOUTS = ("strided", "fortran", "reversed")


def invalid_values(argument, error=None):
    """The catalogued bad values of one argument.

    Parameters
    ----------
    argument : str
        A key of :data:`INVALID_VALUES`.
    error : type, optional
        Only the values rejected with this exception class.

    Returns
    -------
    tuple
    """
    if argument not in INVALID_VALUES:
        raise ValueError(f"argument must be one of {sorted(INVALID_VALUES)}, got {argument!r}")
    return tuple(v for v, e in INVALID_VALUES[argument] if error is None or e is error)


def invalid_params(*arguments):
    """``invalid_params`` entries (one ``{argument: value}`` each) for layer constructors.

    Parameters
    ----------
    *arguments : str
        Constructor arguments the layer shares with the functional API.

    Returns
    -------
    list of dict
    """
    return [{argument: value} for argument in arguments for value in invalid_values(argument)]


def awkward_copy(a, layout, *, readonly=True):
    """An array equal to ``a`` in a valid but not C-contiguous layout.

    Parameters
    ----------
    a : array_like
    layout : {"strided", "fortran", "reversed"}
        Every other element of a buffer twice as wide, Fortran order (falls
        back to "strided" when that would still be C-contiguous), or negative
        strides in the last axis.
    readonly : bool
        Clear the writeable flag of the result.

    Returns
    -------
    ndarray
        ``a`` itself for a 0-d array.
    """
    if layout not in AWKWARD_LAYOUTS:
        raise ValueError(f"layout must be one of {AWKWARD_LAYOUTS}, got {layout!r}")
    a = np.asarray(a)
    if a.ndim == 0:
        return a
    if layout == "fortran" and a.ndim >= 2 and sum(d > 1 for d in a.shape) >= 2:
        out = np.asfortranarray(a)
    elif layout == "reversed":
        out = a[..., ::-1].copy()[..., ::-1]
    else:
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        out = buf[..., ::2]
        out[...] = a
    out = out.view()
    if readonly:
        out.flags.writeable = False
    return out

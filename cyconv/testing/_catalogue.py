"""The catalogue of invalid and faulty inputs, one table for every tester.

:func:`cyconv.testing.check_layer` (through the built-in layers'
``invalid_params``), the strategies of :mod:`cyconv.testing.strategies`, the
test suite and the fuzzer (``tools/fuzz``) all draw their bad values from
here, so a new way of getting an argument wrong is added once.

Each geometry or call argument maps to the values every function taking it
must reject, with the exception class cyconv raises for them (a
``LookupError`` is a :class:`cyconv.BackendError`).  ``stride=None`` is not
listed: it is the pooling default (and a TypeError for :func:`cyconv.conv2d`).

The bad scalar values are not written here: each declared parameter's come from its
constraint in ``cyconv._param_validation.PARAMS`` (``constraint.invalid_cases()``), the
table the library checks its arguments with, so the two cannot drift apart.

Re-exported by :mod:`cyconv.testing.strategies`; needs only NumPy.
"""

from __future__ import annotations

import numpy as np

from .._param_validation import constraint_for

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

#: The arguments whose bad values come from their declared constraint (every function
#: and layer taking one of them checks it through ``cyconv._param_validation.PARAMS``).
DECLARED_ARGUMENTS = ("kernel_size", "stride", "dilation", "padding", "rounding", "groups",
                      "ceil_mode", "count_include_pad", "divisor_override", "n_threads",
                      "algorithm", "out_channels", "out_features", "num_features", "ratio",
                      "momentum")

#: argument -> ((value, exception class), ...): values that must be rejected.  Generated
#: from the declared constraints; ``backend`` (the registry's and the kernel sets' rule, no
#: declared constraint) is listed here.
INVALID_VALUES = {
    # ``owner="pool"``: the stride pooling takes (None, its default, is no bad value)
    **{name: constraint_for(name, owner="pool").invalid_cases() for name in DECLARED_ARGUMENTS},
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


def invalid_params(*arguments, owner=None):
    """``invalid_params`` entries (one ``{argument: value}`` each) for layer constructors.

    Parameters
    ----------
    *arguments : str
        Constructor arguments the layer shares with the functional API (keys of
        :data:`INVALID_VALUES`).
    owner : str, optional
        A cyconv layer (``"BatchNorm"``) whose own declared constraints give the values
        (for an argument that means something else elsewhere, such as ``eps``).

    Returns
    -------
    list of dict
    """
    if owner is not None:
        return [{argument: value} for argument in arguments
                for value in constraint_for(argument, owner).invalid_values()]
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

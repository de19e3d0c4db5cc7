"""Argument checks: every public scalar parameter's constraint, declared once.

In the spirit of scikit-learn's ``Interval``/``StrOptions`` and
``validate_params``.  A *constraint* does three things:

* ``check(value, name)`` returns the value normalised (``int``, ``float``, a
  ``(h, w)`` pair, a lower-case keyword...) or raises a :class:`TypeError`
  (wrong kind of value) or :class:`ValueError` (right kind, out of range) whose
  message names the argument, shows what was given and says what is accepted;
* ``invalid_cases()`` lists invalid example values of itself, each with the
  exception class ``check`` raises for it (scikit-learn's
  ``generate_invalid_param_val``); the testing catalogue
  (``cyconv.testing.strategies.INVALID_VALUES``) is built from them;
* ``valid_values()`` lists values it accepts.

:data:`PARAMS` is the table: parameter name -> constraint, for every function
and layer taking a parameter of that name.  Where one name means different
things to different owners (``eps`` is ``> 0`` for BatchNorm and a finite
``>= 0`` for the optimizers) the owner's entry is ``"Owner.name"``;
:func:`constraint_for` looks that up first.  The functional API, the layers,
the optimizers, the trainer, the thread settings and the CLI all check through
this table; the geometry rules that combine several arguments (a ``'same'``
padding, ``ceil_mode`` against ``rounding``, the pooling padding limit) stay
in :mod:`cyconv._shapes`.

The common cases are fast: an ``int`` passes an integer constraint after a
``type(x) is int`` test and a comparison (``conv2d`` is called in hot loops).

Layer 1 of docs/architecture.md: the standard library and NumPy only.
"""

from __future__ import annotations

import argparse
import math
import numbers

import numpy as np

__all__ = [
    "MAX_WINDOW_VALUE", "PARAMS", "ROUNDINGS", "CONV2D_ALGORITHMS",
    "Constraint", "Interval", "NonZeroInt", "StrOptions", "Boolean", "NoneOr", "WindowPair",
    "Padding", "constraint_for", "check", "argparse_type",
]

#: Window sizes, strides, dilations and paddings must fit a C int64 with room for the index
#: arithmetic of the kernels; nothing real comes close.
MAX_WINDOW_VALUE = 2**31 - 1

ROUNDINGS = ("exact", "floor", "ceil")
#: ``algorithm=`` values of the convolutions.
CONV2D_ALGORITHMS = ("auto", "gemm", "winograd")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Constraint:
    """What a parameter accepts.  Subclasses define ``check`` and the example values."""

    def check(self, value, name):
        """Return ``value`` normalised, or raise TypeError/ValueError naming ``name``."""
        raise NotImplementedError

    def is_satisfied_by(self, value):
        try:
            self.check(value, "value")
        except (TypeError, ValueError):
            return False
        return True

    def invalid_cases(self):
        """``((value, exception class), ...)``: values ``check`` refuses, and how."""
        raise NotImplementedError

    def invalid_values(self, error=None):
        """The invalid example values (only those refused with ``error``, if given)."""
        return tuple(v for v, e in self.invalid_cases() if error is None or e is error)

    def valid_values(self):
        """Example values ``check`` accepts."""
        raise NotImplementedError


class Interval(Constraint):
    """A number of ``kind`` (``numbers.Integral`` or ``numbers.Real``) in an interval.

    ``left``/``right`` are the bounds (None: unbounded; ``right=math.inf`` with an
    open right end means "finite"), ``closed`` one of "left", "right", "both",
    "neither".  A bool is never a number here.  ``message`` is the error for a
    value of the wrong kind (formatted with ``name`` and ``value``; raised as
    ``type_error``), ``range_message`` the one for a value outside (ValueError;
    defaults to ``message``).
    """

    def __init__(self, kind, left, right, *, closed, message, range_message=None,
                 type_error=TypeError):
        if kind not in (numbers.Integral, numbers.Real):
            raise ValueError(f"kind must be numbers.Integral or numbers.Real, got {kind!r}")
        if closed not in ("left", "right", "both", "neither"):
            raise ValueError(f"closed must be 'left', 'right', 'both' or 'neither', got {closed!r}")
        self.kind, self.left, self.right, self.closed = kind, left, right, closed
        self.message, self.type_error = message, type_error
        self.range_message = range_message or message
        self._left_closed = closed in ("left", "both")
        self._right_closed = closed in ("right", "both")
        self._convert = int if kind is numbers.Integral else float

    def __repr__(self):
        return (f"Interval({self.kind.__name__}, {self.left!r}, {self.right!r}, "
                f"closed={self.closed!r})")

    def inside(self, value):
        left, right = self.left, self.right
        if left is not None and not (value >= left if self._left_closed else value > left):
            return False
        return right is None or (value <= right if self._right_closed else value < right)

    def check(self, value, name):
        kind = type(value)
        if kind is int or (kind is not bool and isinstance(value, self.kind)):
            if not self.inside(value):
                raise ValueError(self.range_message.format(name=name, value=value))
            return value if kind is int and self._convert is int else self._convert(value)
        raise self.type_error(self.message.format(name=name, value=value))

    def _step(self):
        return 1 if self.kind is numbers.Integral else 0.5

    def valid_values(self):
        if self.kind is numbers.Integral:
            lo = (self.left + (not self._left_closed) if self.left is not None
                  else 0 if self.right is None else self.right - 1)
            values = [lo, lo + 1, np.int64(lo + 1), self.right]
        else:
            lo = self.left if self.left is not None else self.right - 2
            hi = self.right if self.right not in (None, math.inf) else lo + 2
            mid = (lo + hi) / 2
            values = [mid, np.float32(mid), int(mid), lo, self.right]
        found = {(type(v), v): v for v in values if v is not None and self.is_satisfied_by(v)}
        return tuple(found.values())

    def invalid_cases(self):
        step, cases = self._step(), []
        if self.left is not None:
            below = [self.left - step, self.left - 2 * step]
            cases += [(self.left, ValueError)] * (not self._left_closed) + \
                [(v, ValueError) for v in below]
        if self.right is not None and self.right != math.inf:
            cases += [(self.right, ValueError)] * (not self._right_closed) + \
                [(self.right + step, ValueError)]
        elif self.right == math.inf and not self._right_closed:  # "finite"
            cases.append((math.inf, ValueError))
        if self.kind is numbers.Real:
            cases.append((math.nan, ValueError))
        good = self.valid_values()[0]
        wrong = [str(good), True, None]
        if self.kind is numbers.Integral:
            wrong = [float(good), good + 1.5] + wrong
        else:
            wrong.append(complex(good, 1))
        return tuple(cases + [(v, self.type_error) for v in wrong])


class NonZeroInt(Constraint):
    """An int other than 0 (a thread count: negative counts back from all cores)."""

    def __init__(self, *, message, zero_message):
        self.message, self.zero_message = message, zero_message

    def check(self, value, name):
        if type(value) is int and value > 0:  # the common case, without the ABC check
            return value
        if not _is_int(value):
            raise TypeError(self.message.format(name=name, value=value))
        if value == 0:
            raise ValueError(self.zero_message.format(name=name, value=value))
        return int(value)

    def valid_values(self):
        return (1, 2, -1, np.int64(3))

    def invalid_cases(self):
        return ((0, ValueError), (np.int64(0), ValueError), (1.5, TypeError), (2.0, TypeError),
                ("2", TypeError), (True, TypeError), (False, TypeError))


class StrOptions(Constraint):
    """One of the strings ``options`` (a tuple: its order is the one messages show).

    Anything else, a non-string included, is a ValueError ("must be one of").
    ``case_insensitive``: any case is accepted and the lower-case option returned.
    ``mistakes``: likely wrong spellings (other libraries' names) to list among
    the invalid examples.
    """

    def __init__(self, options, *, case_insensitive=False, message=None, mistakes=()):
        self.options = tuple(options)
        self.case_insensitive = case_insensitive
        self.message = message or "{name} must be one of {options}, got {value!r}"
        self.mistakes = tuple(mistakes)

    def __repr__(self):
        return f"StrOptions({self.options!r})"

    def check(self, value, name):
        if isinstance(value, str):
            key = value.lower() if self.case_insensitive else value
            if key in self.options:
                return key
        raise ValueError(self.message.format(name=name, value=value, options=self.options))

    def valid_values(self):
        return self.options + tuple(o.upper() for o in self.options if self.case_insensitive)

    def invalid_cases(self):
        values = []
        for option in self.options:
            if not self.case_insensitive and option.upper() != option:
                values.append(option.upper())
            values.append(option + option[-1])
        values = [v for v in values + ["", *self.mistakes]
                  if not self.is_satisfied_by(v)] + [None, 1]
        return tuple((v, ValueError) for v in dict.fromkeys(values))


class Boolean(Constraint):
    """A bool (or ``np.bool_``); ``allow_int``: any int as well (PyTorch's ``ceil_mode=1``)."""

    def __init__(self, *, allow_int=False, message="{name} must be a bool, got {value!r}"):
        self.allow_int, self.message = allow_int, message

    def check(self, value, name):
        if isinstance(value, (bool, np.bool_)) or (self.allow_int and _is_int(value)):
            return bool(value)
        raise TypeError(self.message.format(name=name, value=value))

    def valid_values(self):
        return (True, False, np.bool_(True)) + ((0, 1) if self.allow_int else ())

    def invalid_cases(self):
        values = ["yes", "True", None, 1.5, 1.0] + ([] if self.allow_int else [0, 1, 2])
        return tuple((v, TypeError) for v in values)


class NoneOr(Constraint):
    """None, or a value ``inner`` accepts."""

    def __init__(self, inner):
        self.inner = inner

    def __repr__(self):
        return f"NoneOr({self.inner!r})"

    def check(self, value, name):
        return None if value is None else self.inner.check(value, name)

    def valid_values(self):
        return (None,) + self.inner.valid_values()

    def invalid_cases(self):
        return tuple((v, e) for v, e in self.inner.invalid_cases() if v is not None)


def _range_error(name, minimum, original, pairs):
    if min(min(p) for p in pairs) < minimum:
        return ValueError(f"{name} must be >= {minimum} in every dimension, got {original!r}")
    return ValueError(f"{name} must be <= 2**31 - 1 in every dimension, got {original!r}")


def _int_pair(value):
    """``value`` as a pair of ints when it is a tuple/list of two ints, else None."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    return None


class WindowPair(Constraint):
    """An int or a pair of ints ``(h, w)``, each in ``[minimum, 2**31 - 1]``: returns the pair.

    The kernel size, stride and dilation of a window (``minimum=1``), an input
    size (``minimum=0``).
    """

    def __init__(self, minimum=1):
        self.minimum = minimum

    def __repr__(self):
        return f"WindowPair(minimum={self.minimum})"

    def check(self, value, name):
        kind = type(value)
        if kind is int:
            if self.minimum <= value <= MAX_WINDOW_VALUE:
                return (value, value)
            pair = (value, value)
        elif (kind is tuple and len(value) == 2 and type(value[0]) is int
              and type(value[1]) is int):
            pair = value
        elif _is_int(value):
            pair = (int(value), int(value))
        else:
            pair = _int_pair(value)
            if pair is None:
                raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
        if min(pair) < self.minimum or max(pair) > MAX_WINDOW_VALUE:
            raise _range_error(name, self.minimum, value, (pair,))
        return pair

    def valid_values(self):
        m = self.minimum
        return (m, m + 1, (m, m + 1), [m + 2, m], np.int64(m + 1), (np.int64(m), m))

    def invalid_cases(self):
        m, big = self.minimum, MAX_WINDOW_VALUE + 1
        below = [m - 1, m - 2, (m, m - 1), (m - 1, m), [m + 1, m - 2], big, (m, big)]
        wrong = [float(m + 1), m + 0.5, None, str(m + 1), "x", True, False, (m, m, m),
                 (float(m), m), (m,), (True, m)]
        return tuple([(v, ValueError) for v in below] + [(v, TypeError) for v in wrong])


class Padding(Constraint):
    """A padding: an int, ``(ph, pw)``, ``((top, bottom), (left, right))`` (each >= 0),
    or the keyword ``'valid'``/``'same'`` in any case.

    ``check`` returns the per-side pairs ``((top, bottom), (left, right))`` or the
    lower-case keyword (resolving ``'same'`` needs the geometry: ``_shapes``).
    """

    #: the keywords; an unknown string is a ValueError saying what is accepted
    keywords = StrOptions(("valid", "same"), case_insensitive=True,
                          message="{name} must be an int, a pair, ((top, bottom), (left, "
                                  "right)), 'valid' or 'same'; got {value!r}",
                          mistakes=("full", "causal", "half"))

    minimum = 0

    def __repr__(self):
        return "Padding()"

    def keyword(self, value):
        """``"same"``/``"valid"`` for those strings in any case (Keras/TF write ``"SAME"``), else None."""
        if isinstance(value, str) and value.lower() in ("same", "valid"):
            return value.lower()
        return None

    def check(self, value, name):
        if type(value) is int and 0 <= value <= MAX_WINDOW_VALUE:
            return ((value, value), (value, value))
        if isinstance(value, str):
            return self.keywords.check(value, name)
        if _is_int(value):
            pads = ((int(value),) * 2,) * 2
        else:
            pair = _int_pair(value)
            if pair is not None:
                pads = ((pair[0],) * 2, (pair[1],) * 2)
            elif isinstance(value, (tuple, list)) and len(value) == 2:
                pads = tuple(_int_pair(p) for p in value)
                pads = None if None in pads else pads
            else:
                pads = None
        if pads is None:
            raise TypeError(f"{name} must be an int, a pair (ph, pw), ((top, bottom), "
                            f"(left, right)), 'valid' or 'same'; got {value!r}")
        if min(min(p) for p in pads) < 0 or max(max(p) for p in pads) > MAX_WINDOW_VALUE:
            raise _range_error(name, 0, value, pads)
        return pads

    def valid_values(self):
        return (0, 1, (1, 0), [0, 2], ((0, 1), (1, 0)), [[1, 1], [0, 0]], np.int64(1), "same",
                "valid", "SAME", "Valid")

    def invalid_cases(self):
        big = MAX_WINDOW_VALUE + 1
        below = [-1, -2, (0, -1), (-1, 0), ((0, 0), (-1, 0)), ((0, -1), (0, 0)), big,
                 ((0, 0), (0, big))]
        wrong = [True, False, 1.5, 1.0, None, (0, 0, 0), ((1, 2), 3), (1.0, 1),
                 ((0, 0.5), (0, 0)), ((0, 0, 0), (0, 0)), (True, 0)]
        return tuple([(v, ValueError) for v in below] + list(self.keywords.invalid_cases()[:-2])
                     + [("1", ValueError)] + [(v, TypeError) for v in wrong])


# -- the table ------------------------------------------------------------------------

def _positive_int(error=TypeError, message="{name} must be a positive int, got {value!r}",
                  range_message="{name} must be >= 1, got {value}"):
    return Interval(numbers.Integral, 1, None, closed="left", message=message,
                    range_message=range_message if error is TypeError else message,
                    type_error=error)


def _fraction(message="{name} must be in [0, 1), got {value!r}"):
    """A number in [0, 1) (momentum, a decay or dropout rate); every refusal a ValueError."""
    return Interval(numbers.Real, 0, 1, closed="left", message=message, type_error=ValueError)


#: The checks of the layer and functional arguments that say how many of something.
POSITIVE_INT = _positive_int()
#: The same, refused with ValueError whatever is wrong (the trainer's, the Dask and MPI ones).
POSITIVE_INT_VALUE = _positive_int(ValueError)
#: A positive number, every refusal a ValueError (a learning rate; inf is accepted).
POSITIVE_NUMBER = Interval(numbers.Real, 0, None, closed="neither", type_error=ValueError,
                           message="{name} must be a positive number, got {value!r}")
#: A positive finite number (the CLI's ``--lr`` and ``--init`` std).
POSITIVE_FINITE = Interval(numbers.Real, 0, math.inf, closed="neither", type_error=ValueError,
                           message="{name} must be a positive finite number, got {value!r}")
_POSITIVE_OR_NONE = NoneOr(_positive_int(ValueError,
                                         message="{name} must be a positive int or None, "
                                                 "got {value!r}"))

#: parameter name (or "Owner.name") -> its constraint, for every public function and layer.
PARAMS = {
    # window geometry: the functional API, the layers, resolve_geometry and friends
    "kernel_size": WindowPair(1),
    "stride": WindowPair(1),
    "pool.stride": NoneOr(WindowPair(1)),  # max_pool2d, avg_pool2d: None means kernel_size
    "dilation": WindowPair(1),
    "input_size": WindowPair(0),
    "padding": Padding(),
    "rounding": StrOptions(ROUNDINGS, mistakes=("round", "nearest", "truncate", "up")),
    "ceil_mode": Boolean(allow_int=True),
    "groups": POSITIVE_INT,
    "algorithm": StrOptions(CONV2D_ALGORITHMS, mistakes=("fft", "direct", "im2col")),
    "count_include_pad": Boolean(),
    "divisor_override": NoneOr(POSITIVE_INT),
    # threads (cyconv._threads: n_threads=, set_num_threads, CYCONV_NUM_THREADS)
    "n_threads": NoneOr(NonZeroInt(
        message="{name} must be an int or None, got {value!r}",
        zero_message="{name}=0 is not a thread count; use None for all cores, a positive count, "
                     "or a negative one to count back from all cores")),
    # layer constructors
    "out_channels": POSITIVE_INT,
    "out_features": POSITIVE_INT,
    "num_features": NoneOr(POSITIVE_INT),
    "ratio": _fraction("{name} must be a float in [0, 1), got {value!r}"),
    "momentum": _fraction(),  # BatchNorm's and the optimizers'
    "BatchNorm.eps": Interval(numbers.Real, 0, None, closed="neither", type_error=ValueError,
                              message="{name} must be > 0, got {value!r}"),
    # optimizers (cyconv.optim)
    "lr": POSITIVE_NUMBER,
    "decay_rate": _fraction(),
    "beta1": _fraction(),
    "beta2": _fraction(),
    "eps": Interval(numbers.Real, 0, math.inf, closed="left", type_error=ValueError,
                    message="{name} must be a finite number >= 0, got {value!r}"),
    "eps_placement": StrOptions(("sqrt_v", "sqrt_v_hat"), mistakes=("v_hat",)),
    # networks (cyconv.nn.Sequential.transform, cyconv.dask.transform): a layer index, negative
    # from the end (its range is the network's), or the layer itself (checked before this)
    "upto": Interval(numbers.Integral, None, None, closed="neither",
                     message="{name} must be a layer index or one of the network's layers, "
                             "got {value!r}"),
    # data sets (cyconv.datasets)
    "kind": StrOptions(("t10k", "train"), message="{name} must be 't10k' or 'train', got {value!r}",
                       mistakes=("test", "training")),
    "test_fraction": Interval(numbers.Real, 0, 1, closed="neither", type_error=ValueError,
                              message="{name} must be in (0, 1), got {value!r}"),
    # training (cyconv.training.Trainer) and its integrations
    "epochs": POSITIVE_INT_VALUE,
    "batch_size": POSITIVE_INT_VALUE,
    "eval_batch_size": POSITIVE_INT_VALUE,
    "dask.batch_size": _POSITIVE_OR_NONE,
    "threads_per_worker": _POSITIVE_OR_NONE,
    "threads_per_rank": _POSITIVE_OR_NONE,
}


def constraint_for(name, owner=None):
    """The declared constraint of parameter ``name`` (``owner``'s own, where it has one)."""
    if owner is not None:
        found = PARAMS.get(f"{owner}.{name}")
        if found is not None:
            return found
    return PARAMS[name]


def check(name, value, owner=None):
    """Check ``value`` against the declared constraint of ``name``; return it normalised."""
    return constraint_for(name, owner).check(value, name)


def argparse_type(constraint, parse, expected, *, refused=None):
    """An ``argparse`` ``type=`` function: ``parse`` the text, then check it with ``constraint``.

    Text that does not parse, or a value the constraint refuses, is an
    ``ArgumentTypeError`` "expected <expected>, got '<text>'" (``refused`` replaces
    the second message: formatted with ``text``).
    """
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not constraint.is_satisfied_by(value):
            message = refused or "expected {expected}, got {text!r}"
            raise argparse.ArgumentTypeError(message.format(expected=expected, text=text))
        return value

    convert.__name__ = parse.__name__
    return convert

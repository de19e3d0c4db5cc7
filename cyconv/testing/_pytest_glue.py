"""pytest glue: :func:`parametrize_with_checks`, one test per (layer, check)."""

from __future__ import annotations

import functools

from .._registry import backends_for, get_layer
from ._reports import expected_failures, selected_checks
from ._spec import expecting_failure, resolve_spec
from .checks import CHECKS

__all__ = ["parametrize_with_checks"]


class _BoundCheck:
    """Callable ``check(layer)`` handed to tests by :func:`parametrize_with_checks`."""

    def __init__(self, name, reference_backend, expect_failure=False):
        self.name = name
        self.reference_backend = reference_backend
        self.expect_failure = expect_failure
        self._fn = CHECKS[name]
        functools.update_wrapper(self, self._fn)

    def __call__(self, layer):
        with expecting_failure(self.expect_failure):
            return self._fn(layer, reference_backend=self.reference_backend)

    def __repr__(self):
        return self.name


def _expand(item, backend):
    """(layer object, label) pairs for one entry of ``layers``."""
    if isinstance(item, str):
        if backend in (None,):
            classes = [get_layer(item)]
        elif backend == "all":
            classes = [get_layer(item, b) for b in backends_for(item)]
        elif isinstance(backend, str):
            classes = [get_layer(item, backend)]
        else:
            classes = [get_layer(item, b) for b in backend]
        return [(c, resolve_spec(c).label) for c in classes]
    return [(item, resolve_spec(item).label)]


def parametrize_with_checks(layers, *, backend=None, expected_failed_checks=None,
                            reference_backend="numpy", checks=None):
    """Pytest decorator: one test per (layer, check), like scikit-learn's.

    The decorated test takes ``(layer, check)`` and calls ``check(layer)``.
    Test ids read ``Conv2D[cython]-check_matches_reference``, so
    ``pytest -k matches_reference`` selects one check.

    Parameters
    ----------
    layers : iterable of str, Layer subclasses or Layer instances
    backend : None, str, "all" or sequence of str
        For names: None follows the preference order, a string picks that
        backend, ``"all"`` expands to every backend of
        :func:`cyconv.backends_for`, a sequence to those backends.
    expected_failed_checks : dict or callable, optional
        ``{check_name: reason}`` for every layer, or
        ``callable(layer) -> dict`` per layer.  Those tests are marked
        ``xfail(strict=True)``: they must fail.
    reference_backend : str
        As in :func:`check_layer`.
    checks : sequence of str, optional
        Only these checks.

    Returns
    -------
    pytest.MarkDecorator

    Examples
    --------
    >>> from cyconv.testing import parametrize_with_checks
    >>> @parametrize_with_checks(["ReLU", "Conv2D"], backend="all")  # doctest: +SKIP
    ... def test_conformance(layer, check):
    ...     check(layer)
    """
    import pytest

    names = selected_checks(checks)
    params = []
    for item in layers:
        for obj, label in _expand(item, backend):
            if callable(expected_failed_checks):
                expected = expected_failures(expected_failed_checks(obj))
            else:
                expected = expected_failures(expected_failed_checks)
            is_reference = resolve_spec(obj).cls.backend == reference_backend
            for name in names:
                if name == "check_matches_reference" and is_reference:
                    continue  # a layer compared with itself proves nothing
                marks = ([pytest.mark.xfail(reason=expected[name], strict=True)]
                         if name in expected else [])
                params.append(pytest.param(obj, _BoundCheck(name, reference_backend,
                                                            name in expected),
                                           id=f"{label}-{name}", marks=marks))
    return pytest.mark.parametrize("layer, check", params)

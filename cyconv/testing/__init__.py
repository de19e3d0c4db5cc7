"""Testing utilities for cyconv layers: the property tests cyconv runs on itself.

Plugin authors get the same tools cyconv uses for its built-in layers:

* :mod:`cyconv.testing.strategies`: Hypothesis strategies for valid and
  invalid convolution/pooling geometries, convolution problems and bounded
  float arrays, and the one catalogue of invalid and faulty inputs
  (bad argument values, non-float dtypes, non-contiguous layouts) that the
  checks, cyconv's test suite and its fuzzer share.
* :mod:`cyconv.testing.gradcheck`: numeric gradient checks
  (:func:`gradcheck` for any function, :func:`layer_gradcheck` for a layer).
* :mod:`cyconv.testing.checks`: the conformance checks, one documented
  ``check_*`` function each (see that module for the layer spec attributes
  such as ``check_init_kwargs`` and ``invalid_params``); :func:`check_layer`
  runs them all and reports, :func:`parametrize_with_checks` makes them
  pytest tests.

Examples
--------
A plugin's test file::

    import cyconv
    from cyconv.testing import parametrize_with_checks

    @parametrize_with_checks(["LeakyReLU"], backend="all")
    def test_conformance(layer, check):
        check(layer)

:mod:`cyconv.testing.gradcheck` needs only NumPy; the strategies and checks
need Hypothesis (``pip install 'cyconv[test]'``) and are imported on first
use.
"""

from __future__ import annotations

from .gradcheck import GradcheckResult, gradcheck, layer_gradcheck

_LAZY = {
    "check_layer": "_reports",
    "parametrize_with_checks": "_pytest_glue",
    "CHECK_NAMES": "checks",
    "MISSING": "checks",
    "CheckSkipped": "checks",
    "CheckResult": "_reports",
    "LayerCheckReport": "_reports",
    "checks": None,
    "strategies": None,
}

__all__ = [
    "CHECK_NAMES", "MISSING", "CheckResult", "CheckSkipped", "GradcheckResult",
    "LayerCheckReport", "check_layer", "checks", "gradcheck", "layer_gradcheck",
    "parametrize_with_checks", "strategies",
]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'cyconv.testing' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f"{__name__}.{_LAZY[name] or name}")
    return module if _LAZY[name] is None else getattr(module, name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

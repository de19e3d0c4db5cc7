"""Dogfooding: every built-in layer through cyconv.testing's conformance kit.

All ten built-in layers run on the numpy (reference) backend; the compiled
layers also run on every other backend ``cyconv.backends_for(name)`` reports
at collection time (``cython`` once it is built), where
``check_matches_reference`` compares them with the numpy reference.
"""

import cyconv
from cyconv.testing import parametrize_with_checks

BUILTIN = ["Conv2D", "MaxPool2D", "AvgPool2D", "Affine", "ReLU", "Sigmoid",
           "SoftmaxWithLoss", "Dropout", "BatchNorm", "Flatten"]

LAYERS = [cyconv.get_layer(name, backend) for name in BUILTIN
          for backend in cyconv.backends_for(name)]

# Known core bugs, reported to the layers' owner; strict xfail: these tests
# start failing (XPASS) as soon as the bug is fixed, so the entry gets removed.
KNOWN_FAILURES = {}


def expected_failures(layer):
    return KNOWN_FAILURES.get(layer.name, {})


@parametrize_with_checks(LAYERS, expected_failed_checks=expected_failures)
def test_builtin_layer_conformance(layer, check, threads_on_tiny_work):
    check(layer)


def test_every_builtin_layer_is_covered():
    assert sorted(BUILTIN) == sorted(n for n in cyconv.list_layers() if n in BUILTIN)
    assert {layer.name for layer in LAYERS} == set(BUILTIN)
    assert all(("numpy" in cyconv.backends_for(name)) for name in BUILTIN)

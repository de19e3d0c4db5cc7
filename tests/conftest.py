"""Hypothesis profiles.

``dev`` (default): quick, random.  ``ci``: derandomized, no deadline, more
examples; `.ci/run` selects it with ``--hypothesis-profile=ci``.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", max_examples=50, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def threads_on_tiny_work(monkeypatch):
    """Let the compiled kernels use every requested thread even on tiny inputs.

    ``cython_backend`` normally caps the thread count by the amount of work
    (``WORK_PER_THREAD``); thread-invariance tests use small arrays and must
    still run multithreaded to mean something.
    """
    try:
        from cyconv.backends import cython_backend
    except ImportError:
        return
    monkeypatch.setattr(cython_backend, "WORK_PER_THREAD", 1)

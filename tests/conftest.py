"""Hypothesis profiles.

``dev`` (default): quick, random.  ``ci``: derandomized, no deadline, more
examples; `.ci/run` selects it with ``--hypothesis-profile=ci``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", max_examples=50, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

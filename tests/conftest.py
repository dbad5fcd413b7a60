"""Shared test configuration: Hypothesis profiles and the R requirement.

Profiles (HYPOTHESIS_PROFILE): ``dev`` (default), ``ci`` (derandomized, fixed budget; .ci/run uses it),
``thorough`` (10x the examples). The example database lives in .hypothesis/ and is not committed.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, print_blob=True,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=600, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

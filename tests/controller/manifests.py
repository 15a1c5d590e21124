"""The small SerflowInference of the controller tests, from the test bed (where
``bench/operator_scale.py`` takes it too); the tests import it from here."""

from __future__ import annotations

from serflow_testbed.harness import REPO
from serflow_testbed.manifests import manifest

__all__ = ["REPO", "manifest"]

"""A plan's children as local processes: in the test bed (``serflow_testbed.plans``),
where ``bench/faults.py`` takes them too; the tests import them from here."""

from __future__ import annotations

from serflow_testbed.plans import OWNER, Shape, plan, serve

__all__ = ["OWNER", "Shape", "plan", "serve"]

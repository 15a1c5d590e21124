"""The fault run: in the test bed (``serflow_testbed.faults``), where ``bench/faults.py``
takes it too; the fault test imports it from here."""

from __future__ import annotations

from serflow_testbed.faults import SHAPE, fault_run

__all__ = ["SHAPE", "fault_run"]

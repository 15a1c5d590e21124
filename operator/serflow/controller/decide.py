"""Pure decisions of the operator: status documents, conditions, rates from counters.

The handlers read the cluster, call these and ``serflow.policy``, and write the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from serflow.policy.configurator import Candidate, Plan
from serflow.policy.monitor import TrafficEstimate
from serflow.policy.scaler import ScalerState
from serflow.report import candidate_dict


class ConditionType(StrEnum):
    CONFIGURED = "Configured"
    SCALED = "Scaled"
    ROUTED = "Routed"
    READY = "Ready"


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: ConditionType,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """metav1.Condition semantics: lastTransitionTime moves only when the status flips."""
    status = "True" if ok else "False"
    out: list[dict[str, Any]] = []
    since = now
    for c in conditions:
        if c.get("type") != type_.value:
            out.append(dict(c))
        elif c.get("status") == status:
            since = str(c.get("lastTransitionTime", now))
    out.append(
        {
            "type": type_.value,
            "status": status,
            "reason": reason,
            "message": message[:32000],
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }
    )
    return out


def condition_true(conditions: Sequence[Mapping[str, Any]], type_: ConditionType) -> bool:
    return any(c.get("type") == type_.value and c.get("status") == "True" for c in conditions)


def _finite(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else x


def plan_status(plan: Plan) -> dict[str, Any]:
    """status.plan: the chosen candidate and every candidate's cost."""
    c = plan.chosen
    assert c is not None
    cands = []
    for x in plan.candidates:
        d = candidate_dict(x)
        cands.append({k: v for k, v in d.items() if v is not None and k in _CANDIDATE_KEYS})
    return {
        "tau": c.tau,
        "accuracy": c.accuracy,
        "pool": c.setup.pool.value,
        "instance": c.setup.instance,
        "cut": c.setup.cut,
        "granularity": c.setup.granularity.value if c.setup.granularity else "",
        "function": c.setup.function,
        "mu": c.economics.mu,
        "tcip": _finite(c.economics.tcip) if _finite(c.economics.tcip) is not None else -1.0,
        "costPerHour": c.cost_per_hour,
        "rate": plan.rate,
        "candidates": cands,
    }


_CANDIDATE_KEYS = {
    "tau", "accuracy", "pool", "instance", "cut", "granularity", "function", "feasible",
    "reason", "costPerHour", "tcip",
}  # fmt: skip


def same_setup(a: Mapping[str, Any], c: Candidate) -> bool:
    """Whether status.plan describes this candidate's setup (tau included)."""
    s = c.setup
    return (
        a.get("pool") == s.pool.value
        and a.get("instance", "") == s.instance
        and a.get("cut", 0) == s.cut
        and a.get("granularity", "") == (s.granularity.value if s.granularity else "")
        and a.get("function") == s.function
        and math.isclose(float(a.get("tau", -1)), c.tau)
    )


def scaler_from_status(status: Mapping[str, Any]) -> ScalerState:
    t = status.get("traffic") or {}
    inst = status.get("instances") or {}
    return ScalerState(
        estimate=TrafficEstimate(
            ewma=float(t.get("ewma", 0.0)),
            dev=float(t.get("deviation", 0.0)),
            samples=int(t.get("samples", 0)),
        ),
        epoch=int(t.get("epoch", 0)),
        desired=int(inst.get("desired", 0)),
    )


def with_prior(state: ScalerState, expected_rate: float) -> ScalerState:
    """Seed a monitor that has seen nothing with the spec's expected rate.

    The operator's epochs start when the object is created, usually before traffic
    arrives; without a prior the first (empty) epoch would size the pool at 0 and undo the
    plan made for the expected rate. The prior counts as one sample: real epochs then
    move the EWMA as usual.
    """
    if state.estimate.samples or expected_rate <= 0:
        return state
    return ScalerState(
        TrafficEstimate(ewma=expected_rate, dev=0.0, samples=1), state.epoch, state.desired
    )


def counter_rate(prev: Mapping[str, int], now: Mapping[str, int], seconds: float) -> float | None:
    """Requests per second from downstream_rq_total counters of several Envoys.

    A counter that went down was reset (Envoy restarted): its whole value is new. An
    endpoint not seen before counts fully too (a new replica starts at 0) unless nothing
    was seen before at all: the first reading is only a baseline (None).
    """
    if not prev or seconds <= 0:
        return None
    total = 0
    for key, v in now.items():
        p = prev.get(key)
        total += v if p is None or v < p else v - p
    return total / seconds


def parse_counter(text: str, name: str) -> int | None:
    """The value of one counter in Envoy's plain /stats output ('name: value' lines)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def estimate_status(
    state: ScalerState, rate: float, target: float, counters: Mapping[str, int]
) -> dict[str, Any]:
    return {
        "rate": rate,
        "ewma": state.estimate.ewma,
        "deviation": state.estimate.dev,
        "target": target,
        "samples": state.estimate.samples,
        "epoch": state.epoch,
        "counters": dict(counters),
    }

"""What a user asks for: the profile, the prices, the SLO, the expected traffic, the scaling knobs.

Two documents carry it: a ``Profile`` document (profile plus optional prices, slo,
traffic and scaling at the top level; what the CLI and the presets use) and a
``SerflowInference`` manifest (the same pieces under ``spec``, the profile inline).
Both parse into one ``Workload``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serflow.errors import InputError
from serflow.fields import Fields, number
from serflow.profile import (
    PriceSheet,
    Profile,
    check_prices_cover,
    parse_prices,
    parse_profile,
)


@dataclass(frozen=True)
class Objective:
    """What must hold for a plan to be acceptable."""

    slo_s: float
    """Latency SLO in seconds: the worst-case warm batch must finish within it."""
    target_accuracy: float = 0.0
    """Only taus whose profiled accuracy reaches this are considered."""
    thresholds: tuple[float, ...] = ()
    """Taus the user allows (empty: every profiled tau)."""
    epoch_s: float = 0.0
    """D: epoch length in seconds (0 means: equal to the SLO)."""
    cold_start_in_feasibility: bool = False
    """Also charge each function stage's cold start to the worst-case batch (stricter)."""
    pack_batches: bool = False
    """Let an instance serve several batches per epoch when they still meet the SLO
    (serflow's extension; the paper gives each instance one batch per epoch)."""

    @property
    def epoch(self) -> float:
        return self.epoch_s or self.slo_s


@dataclass(frozen=True)
class ScalingSpec:
    """Knobs of the online loop (DESIGN.md section 2, online loop)."""

    interval_epochs: int = 25
    """S: the pool is resized every S epochs."""
    ewma_a: float = 0.2
    """a: weight of the newest rate in the EWMA."""
    ewma_b: float = 0.2
    """b: weight of the newest absolute deviation."""
    k: float = 1.0
    """Target = EWMA + k * deviation."""
    min_instances: int = 0
    """Lower bound on the pool size."""
    max_instances: int = 1000
    """Upper bound on the pool size."""


@dataclass(frozen=True)
class Workload:
    """Everything the configurator, the scaler and the simulator need."""

    name: str
    """The document's name."""
    profile: Profile
    """What was measured."""
    prices: PriceSheet
    """What each config costs."""
    objective: Objective
    """SLO and accuracy target."""
    scaling: ScalingSpec
    """Online-loop knobs."""
    expected_rate: float
    """Long-term rate in req/s the offline configurator plans for (0: not given)."""


def parse_workload(doc: Any) -> Workload:
    """Parse a Profile document or a SerflowInference manifest."""
    top = Fields(doc, "")
    kind = top.text("kind")
    name = str(Fields(top.value.get("metadata") or {}, "metadata").value.get("name") or "")
    if kind == "SerflowInference":
        spec = top.sub("spec")
        prof = spec.sub("profile")
        if not prof.has("inline"):
            raise InputError(
                prof.at("inline"),
                "missing (the CLI needs the profile inline; a ConfigMap reference is resolved "
                "by the operator)",
            )
        profile = parse_profile(prof.raw("inline"), prof.at("inline"))
    elif kind == "Profile":
        spec = top
        profile = parse_profile(top.raw("profile"), "profile")
    else:
        raise InputError("kind", f"expected Profile or SerflowInference, got {kind!r}")
    if not spec.has("prices"):
        raise InputError(spec.at("prices"), "missing (a price sheet is needed to plan)")
    prices = parse_prices(spec.raw("prices"), spec.at("prices"))
    check_prices_cover(profile, prices, spec.at("prices"))
    objective = parse_objective(spec)
    for i, tau in enumerate(objective.thresholds):
        try:
            profile.threshold(tau)
        except KeyError:
            raise InputError(f"thresholds[{i}]", f"tau {tau:g} was not profiled") from None
    return Workload(
        name=name,
        profile=profile,
        prices=prices,
        objective=objective,
        scaling=parse_scaling(spec.opt_sub("scaling")),
        expected_rate=spec.opt_sub("traffic").number("expectedRate", 0.0, min=0),
    )


def parse_objective(spec: Fields) -> Objective:
    slo = spec.sub("slo")
    taus = tuple(_tau(v, p) for p, v in spec.items("thresholds", nonempty=False)) or tuple(
        _tau(v, p) for p, v in slo.items("thresholds", nonempty=False)
    )
    return Objective(
        slo_s=slo.number("latencySeconds", above=0),
        target_accuracy=slo.number("targetAccuracy", 0.0, min=0, max=1),
        thresholds=taus,
        epoch_s=spec.opt_sub("scaling").number("epochSeconds", 0.0, min=0),
        cold_start_in_feasibility=bool(slo.value.get("coldStartInFeasibility", False)),
        pack_batches=bool(spec.opt_sub("scaling").value.get("packBatches", False)),
    )


def parse_scaling(f: Fields) -> ScalingSpec:
    ewma = f.opt_sub("ewma")
    lo = f.integer("minInstances", 0, min=0)
    hi = f.integer("maxInstances", 1000, min=0)
    if hi < lo:
        raise InputError(f.at("maxInstances"), f"expected >= minInstances ({lo}), got {hi}")
    return ScalingSpec(
        interval_epochs=f.integer("intervalEpochs", 25, min=1),
        ewma_a=ewma.number("a", 0.2, above=0, max=1),
        ewma_b=ewma.number("b", 0.2, above=0, max=1),
        k=f.number("k", 1.0, min=0),
        min_instances=lo,
        max_instances=hi,
    )


def _tau(v: Any, path: str) -> float:
    return number(v, path, above=0, max=1)

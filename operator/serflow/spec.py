"""What a user asks for: the profile, the prices, the SLO, the expected traffic, the scaling knobs.

Two documents carry it: a ``Profile`` document (profile plus optional prices, slo,
traffic and scaling at the top level; what the CLI and the presets use) and a
``SerflowInference`` manifest (the same pieces under ``spec``, the profile inline).
Both are validated against their JSON Schema (``serflow.schemas``) and parse into one
``Workload``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from serflow.errors import InputError
from serflow.fields import Fields
from serflow.profile import PriceSheet, Profile, check_prices_cover, prices_of, profile_of
from serflow.schemas import (
    DOCUMENT_KIND,
    SCALING,
    inference_document_schema,
    profile_document_schema,
    validate,
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
    pools: tuple[str, ...] = ("faas", "iaas", "hybrid")
    """Pool kinds the configurator may choose (``PoolKind`` values)."""

    @property
    def epoch(self) -> float:
        return self.epoch_s or self.slo_s


class ScalingPolicy(StrEnum):
    """How the pool is sized every S epochs (``scaling.policy``)."""

    EXPECTED_COST = "expected-cost"
    """The size with the least expected cost over the recent rates (``policy.expected_cost``)."""
    PAPER = "paper"
    """SERFLOW's rule: floor(lam*/mu) + [remainder > T-CIP], lam* = EWMA + k x deviation."""


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
    policy: ScalingPolicy = ScalingPolicy.EXPECTED_COST
    """Which scaler sizes the pool."""
    replan: bool = True
    """Whether the operator re-ranks the running plan on the object's own traffic (and
    plans on it after a spec change); False pins the plan to the spec's expected rate."""


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
    """Validate a Profile document or a SerflowInference manifest against its JSON Schema,
    then build the Workload."""
    validate(doc, DOCUMENT_KIND, strict=False)  # only which kind: the full schema follows
    manifest = doc["kind"] == "SerflowInference"
    schema = inference_document_schema() if manifest else profile_document_schema()
    validate(doc, schema)
    top = Fields(doc, "", schema)
    name = str((top.value.get("metadata") or {}).get("name") or "")
    if manifest:
        spec = top.sub("spec")
        prof = spec.sub("profile")
        if not prof.has("inline"):
            raise InputError(
                prof.at("inline"),
                "missing (the CLI needs the profile inline; a ConfigMap reference is resolved "
                "by the operator)",
            )
        profile = profile_of(prof.sub("inline"))
    else:
        spec = top
        profile = profile_of(top.sub("profile"))
    if not spec.has("prices"):
        raise InputError(spec.at("prices"), "missing (a price sheet is needed to plan)")
    prices = prices_of(spec.sub("prices"))
    check_prices_cover(profile, prices, spec.at("prices"))
    objective = parse_objective(spec)
    for i, tau in enumerate(objective.thresholds):
        try:
            profile.threshold(tau)
        except KeyError:
            raise InputError(
                f"{spec.at('thresholds')}[{i}]", f"tau {tau:g} was not profiled"
            ) from None
    return Workload(
        name=name,
        profile=profile,
        prices=prices,
        objective=objective,
        scaling=parse_scaling(spec.opt_sub("scaling")),
        expected_rate=spec.opt_sub("traffic").number("expectedRate"),
    )


def parse_objective(spec: Fields) -> Objective:
    """The objective of a validated document (or spec)."""
    slo, scaling = spec.sub("slo"), spec.opt_sub("scaling")
    return Objective(
        slo_s=slo.number("latencySeconds"),
        target_accuracy=slo.number("targetAccuracy"),
        thresholds=spec.numbers("thresholds"),
        epoch_s=scaling.number("epochSeconds", 0.0),
        cold_start_in_feasibility=slo.flag("coldStartInFeasibility"),
        pack_batches=scaling.flag("packBatches"),
        pools=tuple(dict.fromkeys(spec.texts("pools"))) or Objective.pools,
    )


def parse_scaling(f: Fields) -> ScalingSpec:
    """The scaling knobs of a validated ``scaling`` mapping (defaults from its schema)."""
    f = Fields(f.value, f.path, SCALING)
    ewma = f.opt_sub("ewma")
    lo, hi = f.integer("minInstances"), f.integer("maxInstances")
    if hi < lo:
        raise InputError(f.at("maxInstances"), f"expected >= minInstances ({lo}), got {hi}")
    return ScalingSpec(
        interval_epochs=f.integer("intervalEpochs"),
        ewma_a=ewma.number("a"),
        ewma_b=ewma.number("b"),
        k=f.number("k"),
        min_instances=lo,
        max_instances=hi,
        policy=ScalingPolicy(f.text("policy")),
        replan=f.flag("replan"),
    )

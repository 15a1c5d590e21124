"""What a user asks for: the profile, the prices, the SLO, the expected traffic, the scaling knobs.

Two documents carry it: a ``Profile`` document (profile plus optional prices, slo,
traffic and scaling at the top level; what the CLI and the presets use) and a
``SerflowInference`` manifest (the same pieces under ``spec``, the profile inline).
Both are validated against their JSON Schema (``serflow.schemas``) and parse into one
``Workload`` (a ``serflow.domain`` type, as are the others built here).
"""

from __future__ import annotations

from typing import Any

# The types are serflow.domain's; re-exported for the importers of this module.
from serflow.domain import Objective as Objective
from serflow.domain import ScalingPolicy as ScalingPolicy
from serflow.domain import ScalingSpec as ScalingSpec
from serflow.domain import Workload as Workload
from serflow.errors import InputError
from serflow.fields import Fields
from serflow.profile import check_prices_cover, prices_of, profile_of
from serflow.schemas import (
    DOCUMENT_KIND,
    MAX_PLAN_COMBINATIONS,
    SCALING,
    inference_document_schema,
    profile_document_schema,
    validate,
)


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
    taus = len(objective.thresholds or profile.thresholds)
    combos = taus * max(1, len(prices.instances)) * max(1, len(prices.functions))
    if combos * profile.partitions > MAX_PLAN_COMBINATIONS:
        raise InputError(
            spec.at("prices"),
            f"{profile.partitions} stages x {taus} taus x {len(prices.instances)} instance "
            f"types x {len(prices.functions)} function sizes is "
            f"{combos * profile.partitions:,} combinations to cost; at most "
            f"{MAX_PLAN_COMBINATIONS:,} (fewer taus or sizes)",
        )
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

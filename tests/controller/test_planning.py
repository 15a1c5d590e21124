"""Planning, once: the plan a spec gets, the plan status keeps, and ``place``."""

from __future__ import annotations

import dataclasses

import pytest

from serflow.controller.planning import (
    ChosenPlan,
    Planned,
    Refused,
    kept_plan,
    place,
    plan_spec,
    refusal_status,
    same_setup,
    scaler_from_status,
)
from serflow.domain import RankedBy
from serflow.inference import parse_inference
from serflow.k8s import builders
from serflow.policy.balancer import pool_share, route_weights
from serflow.policy.configurator import configure
from serflow.spec import parse_workload
from serflow.status import (
    ConditionType,
    InferenceStatus,
    InstanceCounts,
    TrafficStatus,
    candidate_from_status,
    find_condition,
    plan_status,
    set_condition,
)
from tests.controller.manifests import manifest

OWNER = builders.Owner("vgg", "default", "uid-1")


def test_plan_status_round_trips_the_setup() -> None:
    w = parse_workload(manifest())
    plan = configure(w, 30.0)
    assert plan.chosen is not None
    st = plan_status(plan, plan.chosen)
    assert same_setup(st, plan.chosen)
    assert st.costed == len(plan.candidates) and 0 < len(st.candidates) < st.costed
    others = [c for c in plan.candidates if c.setup != plan.chosen.setup]
    assert not any(same_setup(st, c) for c in others if c.tau == plan.chosen.tau)
    # The economics kept in status rebuild the chosen candidate without the configurator.
    kept = candidate_from_status(st, w.scaling)
    assert kept is not None
    assert (kept.setup, kept.tau, kept.economics) == (
        plan.chosen.setup,
        plan.chosen.tau,
        plan.chosen.economics,
    )
    assert kept.cost_per_hour == pytest.approx(plan.chosen.cost_per_hour)
    assert candidate_from_status(dataclasses.replace(st, economics=None), w.scaling) is None


def test_scaler_state_from_status_keeps_the_history() -> None:
    status = InferenceStatus(
        traffic=TrafficStatus(ewma=3.5, deviation=1.0, samples=4, epoch=9, recent=(1.0, 2.0)),
        instances=InstanceCounts(desired=2),
    )
    s = scaler_from_status(status)
    assert (s.estimate.ewma, s.estimate.dev, s.estimate.samples, s.epoch, s.desired) == (
        3.5, 1.0, 4, 9, 2,
    )  # fmt: skip
    assert s.recent == (1.0, 2.0)  # re-ranking and the expected-cost scaler need it
    assert scaler_from_status(InferenceStatus()).estimate.samples == 0


def test_resume_keeps_the_plan_status_holds_for_the_same_spec() -> None:
    w = parse_workload(manifest())
    plan = configure(w, 30.0)
    assert plan.chosen is not None
    conds = set_condition((), ConditionType.CONFIGURED, True, "Planned", "x", 4, "t")
    status = InferenceStatus(
        observed_generation=4, conditions=conds, plan=plan_status(plan, plan.chosen)
    )
    kept = kept_plan(True, status, 4, w.scaling)
    assert kept is not None and kept.economics == plan.chosen.economics
    assert kept_plan(False, status, 4, w.scaling) is None  # a spec change re-plans
    assert kept_plan(True, status, 5, w.scaling) is None  # changed while the operator was down
    refused = set_condition(conds, ConditionType.CONFIGURED, False, "InvalidSpec", "x", 4, "t")
    assert kept_plan(True, dataclasses.replace(status, conditions=refused), 4, w.scaling) is None


def _plan_spec(status: InferenceStatus, resume: bool = False, ready: int = 0) -> Planned | Refused:
    m = manifest()
    inf, w = parse_inference(m["spec"], "vgg"), parse_workload(m)
    return plan_spec(OWNER, inf, w, 3, status, resume, ready, "t0")


def test_a_new_spec_is_planned_at_its_expected_rate_and_put_in_force() -> None:
    got = _plan_spec(InferenceStatus())
    assert isinstance(got, Planned) and got.changed and not got.kept
    placed, w = got.placement, parse_workload(manifest())
    chosen = configure(w, w.expected_rate).chosen
    assert chosen is not None and placed.plan.candidate == chosen
    st = placed.status
    assert st.observed_generation == 3 and st.plan is not None
    assert st.plan.ranked_by is RankedBy.STEADY and same_setup(st.plan, chosen)
    assert [c.type for c in st.conditions or ()] == ["Configured", "Routed"]
    assert st.instances == InstanceCounts(placed.desired, 0)
    # No instance is ready yet: the functions take everything.
    assert st.split is not None and (st.split.pool_share, st.split.pool_weight) == (0.0, 0)
    assert [o["kind"] for o in placed.children] == [
        o["kind"] for o in placed.plan.children(placed.desired, 0)
    ]


def test_a_restart_keeps_the_plan_and_size_status_holds() -> None:
    first = _plan_spec(InferenceStatus())
    assert isinstance(first, Planned)
    written = dataclasses.replace(first.placement.status, instances=InstanceCounts(5, 5))
    again = _plan_spec(written, resume=True, ready=5)
    assert isinstance(again, Planned) and again.kept and not again.changed
    assert again.placement.desired == 5  # the epochs' size, not a fresh one
    assert again.placement.status.plan is None  # the plan status stays as it is


def test_nothing_feasible_is_refused_and_the_refusal_status_says_so() -> None:
    m = manifest()
    m["spec"]["slo"]["latencySeconds"] = 1e-6
    inf, w = parse_inference(m["spec"], "vgg"), parse_workload(m)
    got = plan_spec(OWNER, inf, w, 2, InferenceStatus(), False, 0, "t")
    assert isinstance(got, Refused) and got.reason == "NoFeasibleSetup"
    st = refusal_status(got, InferenceStatus(), 2, "t")
    ready = find_condition(st.conditions or (), ConditionType.READY)
    assert ready is not None and not ready.true and ready.reason == "NoFeasibleSetup"
    assert st.plan is None and st.instances is None  # children and their status untouched


@pytest.mark.parametrize(("desired", "ready"), [(0, 0), (3, 1), (3, 3), (2, 5)])
def test_place_routes_to_the_ready_instances_that_stay(desired: int, ready: int) -> None:
    m = manifest()
    w = parse_workload(m)
    cand = configure(w, 30.0).chosen
    assert cand is not None
    plan = ChosenPlan(OWNER, parse_inference(m["spec"], "vgg"), w, cand, 1)
    placed = place(plan, desired, ready, 30.0, (), "t")
    share = pool_share(min(ready, desired), cand.economics.mu, 30.0)
    assert placed.split.pool_share == share
    assert (placed.split.pool_weight, placed.split.function_weight) == route_weights(share)
    assert placed.status.cost_per_hour == pytest.approx(cand.economics.cost_rate(30.0) * 3600)
    deployment = next(o for o in placed.children if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == desired


def test_a_refusal_leaves_ready_to_the_plan_that_serves() -> None:
    ready = set_condition((), ConditionType.READY, True, "Serving", "ok", 3, "t0")
    before = InferenceStatus(observed_generation=3, conditions=ready)
    refused = Refused("InvalidSpec", "spec.slo: bad")
    alone = refusal_status(refused, before, 4, "t1")
    kept = refusal_status(refused, before, 4, "t1", serving=True)
    assert [(c.type, c.status) for c in alone.conditions or ()] == [
        ("Configured", "False"), ("Ready", "False"),
    ]  # fmt: skip
    assert [(c.type, c.status) for c in kept.conditions or ()] == [
        ("Ready", "True"), ("Configured", "False"),
    ]  # fmt: skip


def test_the_epochs_run_the_plan_of_the_spec_or_the_last_good_one() -> None:
    from serflow.controller.planning import epoch_may_run

    got = _plan_spec(InferenceStatus())  # generation 3
    assert isinstance(got, Planned)
    placed = got.placement
    planned = placed.status
    assert epoch_may_run(placed, 3, planned)
    # A new spec not handled yet, or planned but not yet in memory: wait.
    assert not epoch_may_run(placed, 4, planned)
    newer = dataclasses.replace(placed.status, observed_generation=4)
    assert not epoch_may_run(placed, 4, newer)
    # A new spec refused: the plan of generation 3 keeps running.
    refused = refusal_status(Refused("InvalidSpec", "x"), placed.status, 4, "t", serving=True)
    assert epoch_may_run(placed, 4, refused)


def test_after_a_restart_with_a_refused_spec_the_served_spec_plans_as_it_ran() -> None:
    from serflow.controller.planning import as_when_served, epoch_may_run
    from serflow.status import served_spec

    first = _plan_spec(InferenceStatus())  # generation 3, put in force
    assert isinstance(first, Planned)
    ran = dataclasses.replace(first.placement.status, instances=InstanceCounts(4, 4),
                              served=served_spec(manifest()["spec"], 3))  # fmt: skip
    refused = refusal_status(Refused("InvalidSpec", "x"), ran, 5, "t1", serving=True)
    merged = dataclasses.replace(ran, observed_generation=5, conditions=refused.conditions)
    then = as_when_served(merged, "t2")
    assert then is not None and then.observed_generation == 3
    c = find_condition(then.conditions or (), ConditionType.CONFIGURED)
    assert c is not None and c.true
    again = _plan_spec(then, resume=True, ready=4)  # the served spec is generation 3
    assert isinstance(again, Planned) and again.kept and not again.changed
    assert again.placement.desired == 4  # the size the epochs had reached
    assert ran.plan is not None and same_setup(ran.plan, again.placement.plan.candidate)
    assert epoch_may_run(again.placement, 5, merged)  # and the epochs run it
    # Nothing to go back to: no served spec, or one too large to have been kept.
    assert as_when_served(dataclasses.replace(merged, served=None), "t2") is None
    emptied = dataclasses.replace(merged, served=served_spec({"x": "y" * 2**17}, 3))
    assert emptied.served is not None and emptied.served.spec == ""
    assert as_when_served(emptied, "t2") is None

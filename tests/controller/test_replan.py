"""The operator's re-ranking of a running plan on its own traffic (pure, no cluster; the
daemon putting a replacement in force is tested on the API server, ``test_epoch_cluster``)."""

from __future__ import annotations

from serflow.controller.decide import EventReason
from serflow.controller.planning import ChosenPlan
from serflow.controller.replan import Kept, Replan, replan
from serflow.inference import parse_inference
from serflow.k8s import builders
from serflow.policy.configurator import PoolKind, configure
from serflow.policy.monitor import TrafficEstimate
from serflow.policy.scaler import ScalerState
from serflow.ranking import SWITCH_MARGIN
from serflow.sim import PolicyName
from serflow.spec import parse_workload
from serflow.status import encode
from tests.controller.manifests import manifest

# The manifest: D = 1 s, S = 2, so a re-ranking every 8 ticks (16 epochs) once the
# history holds 16 rates; at 30 req/s the configurator picks c6i.xlarge instances.
BURSTY = (240.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) * 2


def running(policy: str = "paper") -> ChosenPlan:
    m = manifest("vgg")
    m["spec"]["scaling"]["policy"] = policy
    w = parse_workload(m)
    cand = configure(w, 30.0).chosen
    assert cand is not None and cand.setup.pool is PoolKind.IAAS
    owner = builders.Owner("vgg", "ns", "uid-1")
    return ChosenPlan(owner, parse_inference(m["spec"], "vgg"), w, cand, 3)


def scaler(epoch: int, recent: tuple[float, ...]) -> ScalerState:
    return ScalerState(TrafficEstimate(30.0, 0.0, epoch), epoch, 3, recent)


# Each way of keeping the plan is its own test, on the bursts that replace the pool at
# epoch 16 (below) with one input changed, so that none passes for another reason.


def test_nothing_between_re_rankings() -> None:
    plan = running()
    for epoch in (0, 15, 17, 24):
        assert replan(plan, scaler(epoch, BURSTY), 3, [], "t") is Kept.NOT_DUE, epoch


def test_nothing_before_a_full_history() -> None:
    plan = running()
    assert replan(plan, scaler(16, BURSTY[1:]), 3, [], "t") is Kept.SHORT_HISTORY  # 15 rates
    assert replan(plan, scaler(16, ()), 3, [], "t") is Kept.SHORT_HISTORY


def test_steady_traffic_keeps_the_running_plan() -> None:
    assert replan(running(), scaler(16, (30.0,) * 16), 3, [], "t") is Kept.NO_SAVING


def test_nothing_feasible_keeps_the_running_plan() -> None:
    # Feasibility (accuracy, SLO) does not depend on the rate, so only a workload that
    # admits no setup at all gets here: an accuracy target no threshold reaches.
    plan = running()
    m = manifest("vgg")
    m["spec"]["slo"]["targetAccuracy"] = 0.99
    w = parse_workload(m)
    assert configure(w, 30.0).chosen is None
    strict = ChosenPlan(plan.owner, plan.inference, w, plan.candidate, 3)
    assert replan(strict, scaler(16, BURSTY), 3, [], "t") is Kept.NOTHING_FEASIBLE


def test_bursts_replace_the_pool_with_functions() -> None:
    plan = running()
    r = replan(plan, scaler(16, BURSTY), 3, [], "2026-01-01T00:00:00Z")
    assert isinstance(r, Replan), r
    assert r.rerank.switch and r.rerank.saving > SWITCH_MARGIN
    new = r.placement
    assert new.plan.candidate.setup.pool is PoolKind.FAAS
    assert (new.plan.generation, new.desired, new.split.pool_weight) == (3, 0, 0)
    assert (new.plan.owner, new.plan.workload) == (plan.owner, plan.workload)
    st = encode(new.status)
    assert st["plan"]["pool"] == "faas" and st["plan"]["rankedBy"] == "replay"
    assert st["plan"]["replaySaving"] == r.rerank.saving
    assert st["plan"]["rate"] == 30.0  # the history's mean: 480 requests in 16 s
    assert st["instances"] == {"desired": 0, "ready": 3}
    assert st["split"] == {"poolShare": 0.0, "poolWeight": 0, "functionWeight": 1000}
    assert st["costPerHour"] == new.plan.candidate.economics.cost_rate(30.0) * 3600
    configured, routed = st["conditions"]
    assert (configured["type"], configured["status"], configured["reason"]) == (
        "Configured", "True", "Replanned",
    )  # fmt: skip
    assert (routed["type"], routed["message"]) == ("Routed", "pool weight 0/1000")
    assert r.event.reason is EventReason.REPLANNED
    assert f"{100 * r.rerank.saving:.1f}% less" in r.event.message


def test_the_replay_runs_the_objects_own_scaler() -> None:
    for policy, ran in (("paper", PolicyName.SERFLOW), ("expected-cost", PolicyName.EXPECTED_COST)):
        r = replan(running(policy), scaler(16, BURSTY), 3, [], "t")
        assert isinstance(r, Replan), r
        assert {x.result.policy for x in r.rerank.ranking.replayed} == {ran}


def test_a_pinned_plan_is_never_re_ranked() -> None:
    # The same bursts that replace the pool above, with spec.scaling.replan false.
    plan = running()
    m = manifest("vgg")
    m["spec"]["scaling"] |= {"policy": "paper", "replan": False}
    w = parse_workload(m)
    assert w.scaling.replan is False and plan.workload.scaling.replan is True
    pinned = ChosenPlan(plan.owner, plan.inference, w, plan.candidate, 3)
    assert replan(pinned, scaler(16, BURSTY), 3, [], "t") is Kept.PINNED
    assert replan(pinned, scaler(15, BURSTY[1:]), 3, [], "t") is Kept.PINNED  # whatever else

"""One billing truth: the plan's steady cost rate is what the simulator bills in steady state."""

from __future__ import annotations

import math

import pytest

from serflow.policy.configurator import Candidate, Granularity, PoolKind, configure
from serflow.policy.cost import FunctionStage, per_use_per_request
from serflow.schedule import ticks
from serflow.sim import _Replay, replay_schedule
from serflow.spec import Workload, parse_workload
from tests.policy.helpers import paper_doc, tiny, tiny_doc

RATE = 3.0  # req/s: 30 requests a 10 s epoch, three full batches of 10


def _setups(w: Workload) -> list[Candidate]:
    plan = configure(w, RATE)
    out = []
    for pool, gran in (
        (PoolKind.FAAS, None),
        (PoolKind.IAAS, None),
        (PoolKind.HYBRID, Granularity.FUSED),
        (PoolKind.HYBRID, Granularity.CHAINED),
    ):
        out.append(
            next(
                c
                for c in plan.candidates
                if c.tau == 0.5 and c.setup.pool is pool and c.setup.granularity is gran
            )
        )
    return out


def _steady_epoch_cost(w: Workload, c: Candidate) -> float:
    """The bill of one more epoch, once the pool the plan sizes is warm."""
    n = c.economics.instances_for(RATE)

    def bill(epochs: int) -> float:
        at = ticks(epochs, w.scaling.interval_epochs)
        sizes = dict.fromkeys(at, n)
        return replay_schedule(w, c, [round(RATE * w.objective.epoch)] * epochs, sizes).total_cost

    return bill(40) - bill(39)


@pytest.mark.parametrize("mode", ["per-pod", "per-use"])
def test_plan_cost_rate_is_the_simulated_steady_bill(mode: str) -> None:
    w = tiny(prices__mode=mode)
    for c in _setups(w):
        plan = c.economics.cost_rate(RATE) * w.objective.epoch
        # Per use, the plan charges one invocation per batch where the simulator charges
        # only batches with a survivor (1 - 0.5^10 of them): 0.1% apart at most.
        rel = 1e-12 if mode == "per-pod" else 1e-3
        assert plan == pytest.approx(_steady_epoch_cost(w, c), rel=rel), c.setup.describe()


def test_per_pod_functions_cost_pod_epochs_not_execution_seconds() -> None:
    w = tiny(prices__mode="per-pod")
    faas = _setups(w)[0]
    # One pod of 1 GB ($0.001/s) held the 10 s epoch per batch of 10: $0.001 a request,
    # where execution seconds would say 0.35 s x $0.001.
    assert faas.economics.faas_per_request == pytest.approx(0.001)


@pytest.mark.parametrize("mode", ["per-pod", "per-use"])
@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_the_plan_prices_the_stages_the_simulator_bills(preset: str, mode: str) -> None:
    """One model of the function side (``serflow.policy.cost``), not a copy kept equal:
    the plan's per-request prices are, to the last bit, those of the very stages the
    simulator bills, for every setup the configurator costs."""
    doc = tiny_doc() if preset == "tiny" else paper_doc()
    doc["prices"]["mode"] = mode
    w = parse_workload(doc)
    b, d = w.profile.batch, w.objective.epoch
    costed = [c for c in configure(w, RATE).candidates if math.isfinite(c.worst_batch_s)]
    assert {c.setup.granularity for c in costed} >= set(Granularity)
    for c in costed:
        r = _Replay(w, c, warm_functions=False)
        p_f, p_inv = w.prices.function_per_second(c.setup.function), w.prices.invocation_fee
        overhead = w.profile.config(c.setup.function).request_overhead_s
        tail = [st for _, st in r.stages]

        def price(stages: list[FunctionStage], o: float) -> float:
            if mode == "per-pod":
                return p_f * d * sum(st.calls_per_batch(b) for st in stages) / b  # noqa: B023
            return per_use_per_request(stages, p_f, p_inv, b, o)  # noqa: B023

        assert c.economics.faas_per_request == price([r.spill], overhead), c.setup.describe()
        if c.setup.pool is PoolKind.HYBRID:
            k, cut = w.profile.partitions, c.setup.cut
            chained = c.setup.granularity is Granularity.CHAINED
            assert [st.first for st in tail] == (list(range(cut, k)) if chained else [cut])
            assert c.economics.add_per_request == price(tail, 0.0), c.setup.describe()
        else:
            assert tail == [] and c.economics.add_per_request == 0.0

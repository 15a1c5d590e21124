"""One billing truth: the plan's steady cost rate is what the simulator bills in steady state."""

from __future__ import annotations

import pytest

from serflow.policy.configurator import Candidate, Granularity, PoolKind, configure
from serflow.schedule import ticks
from serflow.sim import replay_schedule
from serflow.spec import Workload
from tests.policy.helpers import tiny

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

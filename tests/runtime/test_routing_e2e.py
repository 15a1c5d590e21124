"""The simulator routes as the operator does: a sequence of epochs replayed with
``Routing.ENVOY`` gives each epoch's pool share and so the requests it offers the pool;
the same shares, written as the operator's route into the rendered Envoy in front of real
workers and functions, split real requests the way the simulator counts them (within a
stated tolerance).  What a worker then sheds past its budget (the simulator's cap of B per
batch slot) is tested with real processes in ``test_envoy_e2e``."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("envoy")

from serflow.policy.balancer import route_weights
from serflow.policy.configurator import PoolKind
from serflow.sim import Routing, online_policy, replay

from .conftest import Envoy, Split, post_many, raw_bytes
from .plans import Shape, plan, serve

SHAPE = Shape(PoolKind.IAAS)
# Quiet, a rise, a fall: the pool is cold for the first epochs (all to the functions),
# then takes a share that changes with the EWMA and the ready instances.
COUNTS = [40] * 4 + [120] * 6 + [200] * 4 + [60] * 4
"""The simulator: 10 epochs with no instance ready (share 0), then shares 0.84, 0.74,
0.67, 0.63, 0.72, then 1."""
SIGMAS = 4.0
"""Tolerance: Envoy picks a cluster per request at random with the route's weights, so
an epoch's pool count is binomial; the total may differ from the simulator's by 4 standard
deviations of that sum, plus what the weights' rounding to 1/1000 can move."""


def _rds_updates(e: Envoy) -> float:
    return e.stat("envoy_http_rds_update_success")


def _route(e: Envoy, weight: int, version: str, timeout: float = 20.0) -> None:
    """Write the route and wait until Envoy has loaded it."""
    before = _rds_updates(e)
    e.set_pool_weight(weight, version)
    end = time.monotonic() + timeout
    while _rds_updates(e) <= before:
        assert time.monotonic() < end, f"Envoy did not load route {version} in {timeout} s"
        time.sleep(0.02)


def test_envoy_splits_each_epoch_as_the_simulator_routes(tmp_path: Path, digits: Split) -> None:
    # The simulator replays the example at its own epoch D; the local processes close
    # batches fast (the split does not depend on D, and no worker budget binds here).
    _, w, cand = plan(SHAPE, epoch_s=2.0)
    sim = replay(w, cand, COUNTS, online_policy(w.scaling.policy), routing=Routing.ENVOY)
    shares = sim.series.share
    assert all(s is not None for s in shares)
    slots = [r * cand.economics.batches_per_instance * w.profile.batch for r in sim.series.ready]
    offers = [round(n * s) for n, s in zip(COUNTS, shares, strict=True) if s is not None]
    # The simulator's pool count is the offer, capped by the ready instances' budget.
    assert sim.series.pool == [min(o, cap) for o, cap in zip(offers, slots, strict=True)]
    assert 0 < sum(offers) < sum(COUNTS)  # a real mix, not all one way
    assert {s for s in shares if s is not None and 0 < s < 1}  # and shares in between

    served = serve(SHAPE, tmp_path, 0, workers=max(sim.series.ready))
    bodies = [raw_bytes(x) for x in digits.x_val]
    got_pool: list[int] = []
    try:
        for t, (n, s) in enumerate(zip(COUNTS, shares, strict=True)):
            assert s is not None
            weight = route_weights(s)[0]
            _route(served.envoy, weight, f"e{t}")
            answers = post_many(
                served.envoy.url + "/infer", [bodies[(t * 97 + i) % len(bodies)] for i in range(n)]
            )
            assert [c for c, _ in answers if c != 200] == [], answers[:3]
            got_pool.append(sum(1 for _, out in answers if _on(out).startswith("worker:")))
    finally:
        served.stop()
    # A share of 0 or 1 is exact: no request may go the other way.
    for t, s in enumerate(shares):
        if s in (0.0, 1.0):
            assert got_pool[t] == offers[t], (t, got_pool, offers)
    var = sum(n * s * (1 - s) for n, s in zip(COUNTS, shares, strict=True) if s is not None)
    tol = SIGMAS * math.sqrt(var) + sum(COUNTS) / 1000 + 1
    assert abs(sum(got_pool) - sum(offers)) <= tol, (got_pool, offers, tol)


def _on(out: dict[str, Any]) -> str:
    return str(out["ran"][0]["on"])

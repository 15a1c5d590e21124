"""Cost rates and T-CIP (DESIGN.md section 2, "Cost rates" and "T-CIP").

All rates are dollars per second; all per-request costs are dollars per request.
Partitions are 1-based in the design; sequences here are 0-based (index i-1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionStage:
    """One function (Knative Service) of a setup and the work a request brings it: the
    one model of the function side, which the plan prices and the simulator bills."""

    first: int
    """The 0-based partition it starts with."""
    seconds: float
    """Function seconds it runs per request sent its way, in expectation: s_j u_j^f over
    its partitions, plus s_first x_first to receive the activation when it follows a cut."""
    survival: float
    """s_first: the share of those requests that reach it."""

    def calls_per_batch(self, batch: int) -> float:
        """Its invocations per batch of ``batch`` requests, in expectation."""
        return batch_calls(self.survival, batch)


def batch_calls(survival: float, batch: int) -> float:
    """Invocations of a stage per batch: one when at least one of the batch's requests
    reaches it, probability 1 - (1 - s)^B."""
    return 1.0 - (1.0 - survival) ** batch


def model_stage(u: Sequence[float], survival: Sequence[float]) -> FunctionStage:
    """The whole model on one function (FaaS-only, and the spill of every pool)."""
    return FunctionStage(0, sum(s * x for s, x in zip(survival, u, strict=True)), survival[0])


def tail_stages(
    u: Sequence[float],
    survival: Sequence[float],
    transfer: Sequence[float],
    cut: int,
    chained: bool,
) -> tuple[FunctionStage, ...]:
    """The hybrid tail after partition ``cut``: partitions cut+1..K on one function
    (fused), or one function per partition, each receiving the activation before it
    (``chained``). ``transfer[i-1]`` is x_i, the function-side seconds to receive one
    activation cut after partition i."""
    k = len(u)
    if chained:
        return tuple(
            FunctionStage(j, survival[j] * (u[j] + transfer[j - 1]), survival[j])
            for j in range(cut, k)
        )
    tail = sum(survival[j] * u[j] for j in range(cut, k))
    return (FunctionStage(cut, tail + survival[cut] * transfer[cut - 1], survival[cut]),)


def per_use_per_request(
    stages: Sequence[FunctionStage], p_f: float, p_inv: float, batch: int, overhead: float = 0.0
) -> float:
    """Per-use dollars per request on these stages: p_f * (their seconds + o) + p_inv / B
    for each stage. The plan charges every batch one invocation of every stage, where the
    simulator charges the expected ones (``FunctionStage.calls_per_batch``): for a tail,
    at most (1 - s)^B apart per invocation."""
    return p_f * (sum(st.seconds for st in stages) + overhead) + (p_inv / batch) * len(stages)


def faas_per_request(
    u: Sequence[float],
    survival: Sequence[float],
    p_f: float,
    p_inv: float,
    batch: int,
    overhead: float = 0.0,
) -> float:
    """c_F = p_f * (sum_i s_i u_i^f + o_f) + p_inv / B: one request run on a function,
    whole model; o_f is what the function's server bills a lone image beyond the batched
    compute (the profile's ``requestOverheadSeconds``)."""
    return per_use_per_request([model_stage(u, survival)], p_f, p_inv, batch, overhead)


def fused_tail_per_request(
    u: Sequence[float],
    survival: Sequence[float],
    transfer: Sequence[float],
    cut: int,
    p_f: float,
    p_inv: float,
    batch: int,
) -> float:
    """c_T(cut), fused: partitions cut+1..K in one function, one invocation per batch.

    c_T = p_f * (sum_{j>cut} s_j u_j + s_{cut+1} x_cut) + p_inv / B.
    """
    return per_use_per_request(tail_stages(u, survival, transfer, cut, False), p_f, p_inv, batch)


def chained_tail_per_request(
    u: Sequence[float],
    survival: Sequence[float],
    transfer: Sequence[float],
    cut: int,
    p_f: float,
    p_inv: float,
    batch: int,
) -> float:
    """c_T(cut), chained: one function per partition j > cut, each receiving x_{j-1}.

    c_T = p_f * sum_{j>cut} s_j (u_j + x_{j-1}) + (p_inv / B) * (K - cut).
    """
    return per_use_per_request(tail_stages(u, survival, transfer, cut, True), p_f, p_inv, batch)


def pod_epochs_per_request(
    survival: Sequence[float], stages: Sequence[int], p_f: float, epoch_s: float, batch: int
) -> float:
    """Per-pod billing: dollars per request when each batch a stage receives holds a pod
    for the whole epoch (as the simulator bills per-pod functions).

    ``stages`` are the 0-based partitions that start a function stage (whole model on a
    function: [0]; fused tail: [cut]; chained: cut..K-1), the ``first`` of
    ``model_stage`` and ``tail_stages``. A stage is called for a batch when at least one
    of its B requests reaches it (``batch_calls``).
    """
    calls = sum(batch_calls(survival[j], batch) for j in stages)
    return p_f * epoch_s * calls / batch


def batches_per_epoch(busy_s: float, worst_s: float, epoch_s: float, slo_s: float) -> int:
    """How many batches one instance can serve per epoch and still meet the SLO.

    ``busy_s`` is the instance's own time per worst-case batch, ``worst_s`` the whole
    batch's (the instance part plus what follows on functions). The k-th batch of an epoch
    starts after k-1 others: it finishes at k*busy + (worst - busy) <= SLO, and the
    instance must be free again within the epoch (k*busy <= D). Never less than 1.
    """
    if busy_s <= 0:
        return 1
    rest = worst_s - busy_s
    n = min(math.floor(epoch_s / busy_s + 1e-9), math.floor((slo_s - rest) / busy_s + 1e-9))
    return max(1, n)


def within(n: int, lo: int, hi: int | None) -> int:
    """``n`` within the pool-size bounds [lo, hi] (hi None: no upper bound): how the
    spec's minInstances and maxInstances apply, to the steady cost and to the scalers."""
    return max(lo, n if hi is None else min(hi, n))


def tcip(instance_price: float, faas_per_req: float, add_per_req: float) -> float:
    """Traffic cost indifference point in req/s: TCIP = p / (c_F - c_add).

    Adding an instance for a residual r costs p + r*c_add; sending r to FaaS costs r*c_F.
    Infinite when the function is no dearer per request than the pool's own add-on.
    """
    margin = faas_per_req - add_per_req
    if margin <= 0:
        return math.inf
    return instance_price / margin


@dataclass(frozen=True)
class PoolEconomics:
    """The numbers the scaler, the balancer and the cost rate need for one setup."""

    mu: float
    """Capacity of one instance, req/s (B / D)."""
    instance_price: float
    """p: dollars per second of one pool instance (0 when there is no pool)."""
    faas_per_request: float
    """c_F: cost of one request served wholly by a function."""
    add_per_request: float
    """c_add: the pool's per-request add-on (0 for IaaS, c_T(cut) for hybrid)."""
    has_pool: bool
    """False for the FaaS-only pool, which never runs an instance."""
    batches_per_instance: int = 1
    """Batches one instance serves per epoch (1 in the paper; more when packing fits the SLO)."""
    min_instances: int = 0
    """The spec's ``scaling.minInstances``: the steady cost counts at least this many."""
    max_instances: int | None = None
    """The spec's ``scaling.maxInstances``: the steady cost counts at most this many, the
    rest of the rate spilling to functions (None: no bound)."""

    @property
    def tcip(self) -> float:
        """Remainder in req/s above which one more instance is cheaper than FaaS."""
        if not self.has_pool:
            return math.inf
        return tcip(self.instance_price, self.faas_per_request, self.add_per_request)

    def tcip_instances(self, rate: float) -> int:
        """N = floor(rate / mu) + [remainder > TCIP], with no bound; 0 without a pool."""
        if not self.has_pool or rate <= 0:
            return 0
        q = math.floor(rate / self.mu + 1e-12)
        return q + (1 if rate - q * self.mu > self.tcip else 0)

    def instances_for(self, rate: float) -> int:
        """``tcip_instances`` within the spec's bounds; 0 without a pool."""
        if not self.has_pool:
            return 0
        return within(self.tcip_instances(rate), self.min_instances, self.max_instances)

    def cost_rate(self, rate: float) -> float:
        """C(lam) in dollars per second at a steady rate (C_F, C_V or C_H)."""
        if not self.has_pool:
            return rate * self.faas_per_request
        n = self.instances_for(rate)
        pooled = min(rate, n * self.mu)
        return (
            n * self.instance_price
            + pooled * self.add_per_request
            + (rate - pooled) * self.faas_per_request
        )

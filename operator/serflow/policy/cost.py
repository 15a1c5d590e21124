"""Cost rates and T-CIP (DESIGN.md section 2, "Cost rates" and "T-CIP").

All rates are dollars per second; all per-request costs are dollars per request.
Partitions are 1-based in the design; sequences here are 0-based (index i-1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


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
    return p_f * (sum(s * x for s, x in zip(survival, u, strict=True)) + overhead) + p_inv / batch


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

    ``transfer[i-1]`` is x_i, the function-side seconds to receive one activation cut after
    partition i.
    """
    tail = sum(survival[j] * u[j] for j in range(cut, len(u)))
    return p_f * (tail + survival[cut] * transfer[cut - 1]) + p_inv / batch


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
    k = len(u)
    run = sum(survival[j] * (u[j] + transfer[j - 1]) for j in range(cut, k))
    return p_f * run + (p_inv / batch) * (k - cut)


def pod_epochs_per_request(
    survival: Sequence[float], stages: Sequence[int], p_f: float, epoch_s: float, batch: int
) -> float:
    """Per-pod billing: dollars per request when each batch a stage receives holds a pod
    for the whole epoch (as the simulator bills per-pod functions).

    ``stages`` are the 0-based partitions that start a function stage (whole model on a
    function: [0]; fused tail: [cut]; chained: cut..K-1). A stage is called for a batch
    when at least one of its B requests reaches it: probability 1 - (1 - s)^B.
    """
    calls = sum(1.0 - (1.0 - survival[j]) ** batch for j in stages)
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

    def instances_for(self, rate: float) -> int:
        """N = floor(rate / mu) + [remainder > TCIP], within the spec's bounds; 0 without
        a pool."""
        if not self.has_pool:
            return 0
        n = 0
        if rate > 0:
            q = math.floor(rate / self.mu + 1e-12)
            n = q + (1 if rate - q * self.mu > self.tcip else 0)
        if self.max_instances is not None:
            n = min(n, self.max_instances)
        return max(n, self.min_instances)

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

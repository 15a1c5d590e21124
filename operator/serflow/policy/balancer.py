"""Load balancer: which requests of an epoch the pool takes, and Envoy's weights.

Full batches of B go to free ready instances; the partial batch to a free instance if one
is left; everything else to FaaS. Nothing is dropped (DESIGN.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from serflow.wire import WEIGHT_TOTAL


@dataclass(frozen=True)
class Allocation:
    """Where one epoch's requests go."""

    full_batches: int
    """Full batches of B served by the pool (one instance each)."""
    partial: int
    """Size of the partial batch the pool serves (0: none, or it went to FaaS)."""
    faas: int
    """Requests sent to functions."""
    batch: int
    """B."""

    @property
    def pool_requests(self) -> int:
        return self.full_batches * self.batch + self.partial

    @property
    def batches(self) -> int:
        """Batches the pool serves (one slot each)."""
        return self.full_batches + (1 if self.partial else 0)


def balance(requests: int, ready: int, batch: int, per_instance: int = 1) -> Allocation:
    """Split ``requests`` between ``ready`` instances (``per_instance`` batches each) and FaaS."""
    if requests < 0 or ready < 0 or batch < 1 or per_instance < 1:
        raise ValueError("requests and ready must be >= 0, batch and per_instance >= 1")
    slots = ready * per_instance
    full, rest = divmod(requests, batch)
    on_pool = min(full, slots)
    partial = rest if rest and slots > on_pool else 0
    faas = requests - on_pool * batch - partial
    return Allocation(on_pool, partial, faas, batch)


def pool_share(ready: int, mu: float, ewma: float) -> float:
    """Share of traffic Envoy sends to the pool: min(1, ready*mu / ewma); 0 with no instance."""
    if ready <= 0:
        return 0.0
    if ewma <= 0:
        return 1.0
    return min(1.0, ready * mu / ewma)


def route_weights(share: float) -> tuple[int, int]:
    """Integer (pool, functions) weights summing to 1000."""
    pool = round(max(0.0, min(1.0, share)) * WEIGHT_TOTAL)
    return pool, WEIGHT_TOTAL - pool

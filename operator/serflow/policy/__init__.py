"""The pure maths of serflow (DESIGN.md section 2): no I/O, no clock, no Kubernetes."""

from serflow.policy.balancer import Allocation, balance, pool_share, route_weights
from serflow.policy.configurator import (
    Candidate,
    CostCrossing,
    Granularity,
    Plan,
    PoolKind,
    Setup,
    best_at,
    candidates,
    configure,
)
from serflow.policy.cost import (
    PoolEconomics,
    chained_tail_per_request,
    faas_per_request,
    fused_tail_per_request,
    tcip,
)
from serflow.policy.monitor import TrafficEstimate, observe
from serflow.policy.scaler import ScalerState, ScalingDecision, desired_instances, step

__all__ = [
    "Allocation",
    "Candidate",
    "CostCrossing",
    "Granularity",
    "Plan",
    "PoolEconomics",
    "PoolKind",
    "ScalerState",
    "ScalingDecision",
    "Setup",
    "TrafficEstimate",
    "balance",
    "best_at",
    "candidates",
    "chained_tail_per_request",
    "configure",
    "desired_instances",
    "faas_per_request",
    "fused_tail_per_request",
    "observe",
    "pool_share",
    "route_weights",
    "step",
    "tcip",
]

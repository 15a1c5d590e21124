"""The paper's scaler (``ScalingPolicy.PAPER``): every S epochs, N = floor(lam*/mu) +
[remainder > T-CIP] for lam* = EWMA + k x deviation (DESIGN.md section 2, online loop)."""

from __future__ import annotations

from serflow.policy.scaler import Scaler, ScalingContext


def target_rate(ctx: ScalingContext) -> float:
    """lam* = EWMA + k x deviation, from the monitor's estimate."""
    return ctx.state.estimate.target(ctx.scaling.k)


def size(ctx: ScalingContext) -> int:
    """The T-CIP rule at lam*: the full instances it fills, and one more for a remainder
    above T-CIP."""
    return ctx.economics.tcip_instances(target_rate(ctx))


SCALER = Scaler(size=size, target_rate=target_rate)
"""The paper's rule, as the registry holds it."""

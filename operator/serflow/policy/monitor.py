"""Traffic monitor: EWMA of the arrival rate and of its absolute deviation (DESIGN.md section 2).

ewma_t = a*lam_t + (1-a)*ewma_{t-1};  dev_t = b*|lam_t - ewma_{t-1}| + (1-b)*dev_{t-1};
both start from the first sample (ewma_0 = lam_0, dev_0 = 0). Target = ewma + k*dev.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrafficEstimate:
    """The monitor's state after some epochs; stored in the object's status between ticks."""

    ewma: float = 0.0
    """Smoothed arrival rate, req/s."""
    dev: float = 0.0
    """Smoothed absolute deviation from the previous EWMA, req/s."""
    samples: int = 0
    """Epochs observed so far (0: no sample yet)."""

    def target(self, k: float) -> float:
        """lam* = ewma + k * dev: the rate the pool is sized for."""
        return self.ewma + k * self.dev


def observe(prev: TrafficEstimate, rate: float, a: float, b: float) -> TrafficEstimate:
    """Fold one epoch's observed rate into the estimate."""
    if prev.samples == 0:
        return TrafficEstimate(ewma=rate, dev=0.0, samples=1)
    return TrafficEstimate(
        ewma=a * rate + (1.0 - a) * prev.ewma,
        dev=b * abs(rate - prev.ewma) + (1.0 - b) * prev.dev,
        samples=prev.samples + 1,
    )

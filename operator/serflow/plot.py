"""PNG figures: cost versus residual load with T-CIP marked, and a replay's timeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from serflow.policy.configurator import Candidate
from serflow.sim import SimResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tcip(c: Candidate, path: str | Path) -> None:
    """Cost of serving a residual r (req/s): one more instance versus FaaS (the paper's CIP figure)."""
    plt = _pyplot()
    e = c.economics
    # Show T-CIP even when it lies past mu (then a remainder never earns an instance).
    span = e.mu if math.isinf(e.tcip) else min(3 * e.mu, max(e.mu, 1.2 * e.tcip))
    xs = [span * i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, [r * e.faas_per_request * 3600 for r in xs], label="residual on FaaS")
    if e.has_pool:
        ax.plot(
            xs,
            [(e.instance_price + r * e.add_per_request) * 3600 for r in xs],
            label="one more instance",
        )
        if not math.isinf(e.tcip) and e.tcip <= span:
            ax.axvline(e.tcip, color="k", linestyle="--", label=f"T-CIP {e.tcip:.3g} req/s")
        ax.axvline(e.mu, color="grey", linestyle=":", label=f"mu {e.mu:.3g} req/s")
    ax.set_xlabel("residual load r (req/s)")
    ax.set_ylabel("cost ($/h)")
    ax.set_title(f"{c.setup.describe()} at tau {c.tau:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timeline(results: list[SimResult], epoch_s: float, batch: int, path: str | Path) -> None:
    """Per-epoch load, pool capacity and spill, one panel per policy (like the paper's Fig. 13)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.6 * len(results)), sharex=True)
    if len(results) == 1:
        axes = [axes]
    for ax, r in zip(axes, results, strict=True):
        t = range(r.epochs)
        s = r.series
        ax.plot(t, s.requests, lw=0.7, label="requests / epoch")
        ax.plot(t, [n * batch for n in s.ready], lw=0.9, label="ready pool capacity")
        ax.fill_between(t, 0, s.faas, color="tab:red", alpha=0.35, lw=0, label="on FaaS")
        ax.set_ylabel("requests")
        ax.set_title(f"{r.policy.value}: {r.setup}, ${r.total_cost:.3f}", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel(f"epoch ({epoch_s:g} s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

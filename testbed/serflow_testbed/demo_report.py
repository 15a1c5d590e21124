"""The one report of both demos (``make demo-local`` and ``make demo``): results.json, the
timeline PNG and report.md, so that the two say the same things the same way and a fix to
one lands in both.

A demo hands over what it replayed (``Replay``), the bill of what ran and ``serflow
simulate``'s prediction for the same counts (``predict``); what only one demo can say
(the local demo's function profile, kind's billing sources and its network line) comes in
as ``Sections`` of text. ``markdown`` is pure, so a test renders it from made-up numbers.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serflow_testbed import decide
from serflow_testbed.decide import Bill, Record, Summary


def say(msg: str) -> None:
    """A transcript line, flushed at once (it interleaves with the children's logs)."""
    print(msg, flush=True)


def shown(path: Path) -> str:
    """``path`` as the user named it, relative to the working directory, so a transcript
    pasted into a report carries no path of the machine that made it."""
    return os.path.relpath(path)


# -- what a demo hands over ---------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """One measured replay, as the report needs it."""

    trace: str
    """Where the counts come from (the transcript's words)."""
    counts: list[int]
    """Requests sent per epoch."""
    scale: float
    """The factor the trace's lines were multiplied by."""
    spec: Mapping[str, Any]
    """The applied SerflowInference's spec (epoch, SLO, scaling, prices)."""
    plan: Mapping[str, Any]
    """The operator's plan (its status), which the bill is priced by."""
    profile: Mapping[str, Any]
    """The profile the operator and simulate planned with (``spec.profile.inline`` form)."""
    records: list[Record]
    """Every request, as the client saw it."""
    timeline: list[dict[str, Any]]
    """One row per epoch: the operator's status and the pool as seen then."""
    start_pool: int = 0
    """Pool instances ready when the replay began (simulate starts from as many)."""

    @property
    def epoch_s(self) -> float:
        return float(self.spec["scaling"]["epochSeconds"])

    @property
    def slo_s(self) -> float:
        return float(self.spec["slo"]["latencySeconds"])

    @property
    def bound_s(self) -> float:
        """D + SLO: a request meets the SLO when answered within it."""
        return self.epoch_s + self.slo_s

    @property
    def tau(self) -> float:
        return float(self.plan.get("tau", self.spec["thresholds"][0]))

    @property
    def profiled_accuracy(self) -> float:
        """The profile's accuracy at the plan's tau (NaN: the profile has none there)."""
        return next((float(t["accuracy"]) for t in self.profile.get("thresholds", [])
                     if abs(float(t["tau"]) - self.tau) < 1e-9), math.nan)  # fmt: skip


@dataclass(frozen=True)
class Prediction:
    """``serflow simulate`` on the replayed counts: as its default fills the pool, and
    routed as the operator routes (``--routing envoy``)."""

    fill: dict[str, Any]
    envoy: dict[str, Any]


@dataclass(frozen=True)
class Sections:
    """What one demo says and the other cannot."""

    where: str = ""
    """After "Replay" in the first line: where it ran (" on kind")."""
    scaled: str = ""
    """After the scale factor: how it was chosen (" (busiest epoch 24 req/s)")."""
    setup: str = ""
    """Sentences after the first line's plan: where the profile came from."""
    notes: list[str] = field(default_factory=list)
    """Lines after the exits: how the bill was taken, cold starts as observed."""
    footer: list[str] = field(default_factory=list)
    """Lines after the timeline (kind: what the network dropped)."""
    ready: str = "local workers"
    """What the timeline's ready instances are."""


# -- the prediction ------------------------------------------------------------------------


def prices_of(m: Mapping[str, Any], plan: Mapping[str, Any]) -> decide.Prices:
    """The manifest's prices of the plan's instance type and function size."""
    pr = m["spec"]["prices"]
    inst = next((i["perHour"] for i in pr["instances"] if i["name"] == plan.get("instance")), 0.0)
    size = next(s for s in pr["functions"]["sizes"] if s["name"] == plan.get("function"))
    return decide.Prices(
        instance_per_s=float(inst) / 3600,
        function_per_s=float(size["memoryMiB"]) / 1024 * float(pr["functions"]["perGBSecond"]),
        per_invocation=float(pr["functions"].get("perInvocation", 0.0)),
        per_pod=pr.get("mode") == "per-pod",
    )


def simulate(manifest: Path, trace: Path, epochs: int, routing: str = "fill",
             start_pool: int = 0) -> dict[str, Any]:  # fmt: skip
    """``serflow simulate`` of the manifest's plan on the trace, with the scaler the
    manifest's ``spec.scaling.policy`` names (as the operator runs it), starting with
    ``start_pool`` instances ready (the pool that was up when the replay began)."""
    from serflow.sim import online_policy
    from serflow.spec import ScalingPolicy

    doc = yaml.safe_load(manifest.read_text())
    scaler = online_policy(ScalingPolicy(doc["spec"]["scaling"].get("policy", "expected-cost")))
    r = subprocess.run([sys.executable, "-m", "serflow.cli", "simulate", "-f", str(manifest),
                        "--trace", str(trace), "--epochs", str(epochs), "--policy", scaler.value, "--phases",
                        "--routing", routing, "--start-pool", str(start_pool), "--json"],
                       capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    return dict(json.loads(r.stdout)["results"][0])


def predict(manifest: Path, trace: Path, epochs: int, start_pool: int = 0) -> Prediction:
    """Both of simulate's predictions for the applied manifest on the replayed counts."""
    return Prediction(simulate(manifest, trace, epochs, "fill", start_pool),
                      simulate(manifest, trace, epochs, "envoy", start_pool))  # fmt: skip


# -- the report's parts --------------------------------------------------------------------


def header(r: Replay, sections: Sections) -> str:
    """The first paragraph: what was replayed, the SLO's bound, the operator's plan."""
    p = r.plan
    return (
        f"Replay{sections.where}: {r.trace}, {len(r.counts)} epochs of {r.epoch_s:g} s scaled by "
        f"{r.scale:.3g}{sections.scaled}, tau {r.tau:g}, SLO {r.slo_s:g} s (a request meets it "
        f"when answered within D + SLO = {r.bound_s:g} s, client-measured). The operator's "
        f"plan: {p.get('pool')} [{p.get('instance')}] + faas [{p.get('function')}], cut "
        f"{p.get('cut')}, mu {float(p.get('mu', 0)):.4g} req/s, T-CIP "
        f"{float(p.get('tcip', 0)):.4g} req/s.{sections.setup}"
    )  # fmt: skip


def comparison(s: Summary, b: Bill, pred: Mapping[str, Any], gap: float,
               profiled: float) -> list[str]:  # fmt: skip
    """The report's table: what the replay measured beside ``serflow simulate``'s
    prediction for the same counts."""
    return [
        "| | measured | simulate |",
        "|---|---|---|",
        f"| requests | {s.requests} | {pred['requests']} |",
        f"| failed requests | {s.failures} | - |",
        f"| SLO attainment | {s.slo_attainment:.2%} | {pred['sloAttainment']:.2%} |",
        f"| latency p50 / p99 | {s.p50 * 1e3:.0f} / {s.p99 * 1e3:.0f} ms | - |",
        f"| accuracy | {s.accuracy:.2%} (profiled {profiled:.2%}) | - |",
        f"| served by the pool / functions | {s.pool} / {s.function} ({s.pool_share:.1%} pool) | "
        f"{pred['poolRequests']} / {pred['faasRequests']} "
        f"({pred['poolRequests'] / max(1, pred['requests']):.1%} pool) |",
        f"| instance-seconds | {b.instance_seconds:.1f} | {pred['instanceSeconds']:.1f} |",
        f"| function-seconds | {b.function_seconds:.2f} | {pred['functionSeconds']:.2f} |",
        f"| instance cost | ${b.instance_cost:.6f} | ${pred['instanceCost']:.6f} |",
        f"| function cost | ${b.function_cost:.6f} | ${pred['functionCost']:.6f} |",
        f"| **total cost** | **${b.total:.6f}** | **${pred['totalCost']:.6f}** ({gap:+.1%} measured vs predicted) |",
    ]


def differences(b: Bill, pred: Mapping[str, Any]) -> str:
    """The cost gap split into its parts, each with the numbers behind it; a function
    request is one the bill counted (its invocations), as seconds per request divide the
    billed seconds."""
    inst = b.instance_cost - pred["instanceCost"]
    fn = b.function_cost - pred["functionCost"]
    per_req = b.function_seconds / max(1, b.invocations)
    per_req_pred = pred["functionSeconds"] / max(1, pred["faasRequests"])
    return (
        f"instances {inst:+.6f} $ ({b.instance_seconds:.1f} against {pred['instanceSeconds']:.1f} "
        f"instance-seconds); functions {fn:+.6f} $ ({b.invocations} against {pred['faasRequests']} "
        f"spilled requests, {per_req * 1e3:.2f} against {per_req_pred * 1e3:.2f} ms billed per "
        f"request)."
    )


def routed(b: Bill, envoy: Mapping[str, Any]) -> str:
    """The bill against simulate routed as the operator's Envoy routes."""
    return (
        f"Routed as the operator routes (`serflow simulate --routing envoy`: Envoy sends the "
        f"pool min(1, ready x mu / EWMA) of the traffic, a worker sheds past its budget), "
        f"simulate predicts {envoy['poolRequests']} / {envoy['faasRequests']} requests on the "
        f"pool / functions and ${envoy['totalCost']:.6f} "
        f"({decide.relative_gap(b.total, envoy['totalCost']):+.1%} measured vs that prediction)."
    )


def phase_band(measured: float, pred: Mapping[str, Any]) -> str:
    """The prediction over every scaling-tick phase: the operator's ticks are counted from
    its own start, simulate's from the trace's first line."""
    pr = pred.get("phaseRange")
    if not pr:
        return "simulate gave no range over the scaling-tick phases."
    where = decide.band_gap(measured, pr["cheapest"], pr["dearest"])
    verdict = "inside it" if where == 0 else f"{where:+.1%} from its nearer end"
    return (f"Over the {pr['phases']} scaling-tick phases simulate predicts ${pr['cheapest']:.6f} "
            f"to ${pr['dearest']:.6f} (the table's is phase 0); the measured bill is {verdict}.")  # fmt: skip


def estimates(timeline: Sequence[Mapping[str, Any]], counts: Sequence[int], d: float,
              scaling: Mapping[str, Any]) -> str:  # fmt: skip
    """The operator's traffic estimate next to the one simulate computes from the counts.

    The operator measures its rate over windows of its own clock; simulate takes each
    epoch's count.  The pool size follows the target (EWMA + k x deviation), so a lower
    deviation means a smaller pool and more spill for the same EWMA."""
    from serflow.fields import Fields
    from serflow.policy.monitor import TrafficEstimate, observe
    from serflow.spec import parse_scaling

    sc = parse_scaling(Fields(dict(scaling), "spec.scaling"))
    a, b, k = sc.ewma_a, sc.ewma_b, sc.k
    est, sim_dev, sim_target = TrafficEstimate(), [], []
    for n in counts:
        est = observe(est, n / d, a, b)
        sim_dev.append(est.dev)
        sim_target.append(est.target(k))
    seen = [r for r in timeline if r.get("deviation") is not None and r.get("target") is not None]
    if not seen:
        return "The operator reported no traffic estimate during the replay."
    op_dev = statistics.fmean(float(r["deviation"]) for r in seen)
    op_target = statistics.fmean(float(r["target"]) for r in seen)
    return (f"Traffic estimate, mean over the replay: the operator's deviation {op_dev:.1f} req/s "
            f"and target {op_target:.1f} req/s; simulate's {statistics.fmean(sim_dev):.1f} and "
            f"{statistics.fmean(sim_target):.1f} req/s (EWMA a {a:g}, b {b:g}, k {k:g}).")  # fmt: skip


def failures_by_status(records: Sequence[Record]) -> dict[str, int]:
    """Requests not answered 200, by status (-1: no answer)."""
    statuses = sorted({x.status for x in records if x.status != 200})
    return {str(k): sum(1 for x in records if x.status == k) for k in statuses}


def outcome(s: Summary, records: Sequence[Record]) -> str:
    """Where the answers left the network, and what failed."""
    exits = ", ".join(f"{k}: {v}" for k, v in s.exits.items())
    return (f"Exits per classifier: {exits}. Requests failed by status: "
            f"{failures_by_status(records) or 'none'}.")  # fmt: skip


def markdown(r: Replay, s: Summary, b: Bill, pred: Prediction, png: str,
             sections: Sections) -> str:  # fmt: skip
    """report.md: the replay and the plan, the table against simulate, where they differ,
    the other predictions, the traffic estimate, the demo's own notes, the timeline."""
    gap = decide.relative_gap(b.total, pred.fill["totalCost"])
    lines = [
        header(r, sections),
        "",
        *comparison(s, b, pred.fill, gap, r.profiled_accuracy),
        "",
        f"Where measured and predicted differ: {differences(b, pred.fill)}",
        "",
        routed(b, pred.envoy),
        "",
        phase_band(b.total, pred.fill),
        "",
        estimates(r.timeline, r.counts, r.epoch_s, r.spec["scaling"]),
        "",
        outcome(s, r.records),
        *sections.notes,
        "",
        f"![timeline]({png})",
        *sections.footer,
    ]
    return "\n".join(lines) + "\n"


def results(r: Replay, s: Summary, b: Bill, pred: Prediction) -> dict[str, Any]:
    """results.json's keys both demos write (each adds its own)."""
    return {
        "trace": r.trace, "scale": r.scale, "epochs": len(r.counts), "epochSeconds": r.epoch_s,
        "slo": r.slo_s, "tau": r.tau, "counts": r.counts, "scaling": r.spec["scaling"],
        "plan": dict(r.plan), "poolReadyAtStart": r.start_pool,
        "pricing": r.spec["prices"].get("mode", "per-use"),
        "summary": {**asdict(s), "sloAttainment": s.slo_attainment, "accuracy": s.accuracy,
                    "poolShare": s.pool_share},
        "profiledAccuracy": r.profiled_accuracy,
        "failuresByStatus": failures_by_status(r.records),
        "measured": asdict(b) | {"total": b.total},
        "predicted": pred.fill, "gap": decide.relative_gap(b.total, pred.fill["totalCost"]),
        "predictedEnvoyRouting": pred.envoy,
        "gapEnvoyRouting": decide.relative_gap(b.total, pred.envoy["totalCost"]),
        "timeline": r.timeline,
    }  # fmt: skip


def plot(timeline: Sequence[Mapping[str, Any]], records: Sequence[Record], epochs: int,
         d: float, bound: float, path: Path, ready: str = "local workers") -> None:  # fmt: skip
    """The replay's timeline: answers per epoch by path, the pool's size, p99 latency; the
    rows' ``ready`` counts the pool's ready instances (``ready``: what they are)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pe = decide.per_epoch(records, epochs)
    x = list(range(epochs))
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax1.bar(x, pe["pool"], label="answered by the pool", color="tab:blue")
    ax1.bar(x, pe["function"], bottom=pe["pool"], label="answered by functions (spill)",
            color="tab:orange")  # fmt: skip
    ew = [(row.get("ewma") or 0) * d for row in timeline]
    ax1.plot([row["epoch"] for row in timeline], ew, "k-", label="EWMA x D (operator)")
    ax1.set_ylabel("requests / epoch")
    ax1.legend(loc="upper left", fontsize=8)
    ax2.step([row["epoch"] for row in timeline], [row.get("desired") or 0 for row in timeline],
             where="post", label="desired (operator)")  # fmt: skip
    ax2.step([row["epoch"] for row in timeline], [row.get("ready") or 0 for row in timeline],
             where="post", label=f"ready ({ready})")  # fmt: skip
    ax2.set_ylabel("instances")
    ax2.legend(loc="upper left", fontsize=8)
    ax3.plot(x, pe["p99"], label="p99 latency (client)")
    ax3.axhline(bound, color="r", ls="--", label="D + SLO")
    ax3.set_ylabel("seconds")
    ax3.set_xlabel(f"epoch ({d:g} s)")
    ax3.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(out: Path, r: Replay, b: Bill, pred: Prediction, sections: Sections,
          extra: Mapping[str, Any]) -> int:  # fmt: skip
    """results.json (the shared keys and ``extra``), timeline.png and report.md in ``out``,
    the report printed too; 0 when every request was answered, else 1."""
    s = decide.summarise(r.records, r.bound_s)
    (out / "results.json").write_text(json.dumps(results(r, s, b, pred) | dict(extra), indent=1))
    png = out / "timeline.png"
    plot(r.timeline, r.records, len(r.counts), r.epoch_s, r.bound_s, png, sections.ready)
    md = markdown(r, s, b, pred, png.name, sections)
    (out / "report.md").write_text(md)
    say("")
    say(md)
    say(f"report: {shown(out / 'report.md')}  timeline: {shown(png)}")
    return 0 if s.failures == 0 else 1

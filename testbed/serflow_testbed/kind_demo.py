"""``python -m serflow_testbed.kind_demo``: the main job on a real kind cluster.

1. the kind cluster, Knative Serving and serflow's images (``hack/kind.sh``, reused when
   up), the chart installed with ``helm``: the operator runs as a pod;
2. in a fresh namespace, the example SerflowInference with its expected rate set to the
   replay's mean: the operator's Jobs profile the model on the cluster, it plans, and its
   children run: pool pods on the worker node, Knative functions, Envoy;
3. a calibration: the first epochs replayed there, unbilled, to measure what the Jobs
   cannot: a function's own seconds per answer where it runs (serving included, on cores
   shared with everything else) and the pods' cold starts; the profile takes them;
4. in a second namespace, the same object with that profile inline, and an open-loop
   replay of the trace (scaled so that its busiest epoch is ``--peak-rate``) through a
   NodePort in front of the operator's Envoy, with real held-out images;
5. a report (``demo_report``, the local demo's too): service, accuracy, pool vs function
   share, and the bill from what ran (pool pods' lives; function pods' own seconds per
   use or their lives per pod, as the manifest prices them) next to ``serflow
   simulate``'s prediction from the profile the Jobs measured, with each pod's cold start
   as observed, what the kind network dropped, and a PNG timeline.

What it started (the namespace, the cluster, the Docker engine) is removed at the end,
on Ctrl-C and on SIGTERM, unless ``--keep-cluster``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serflow_testbed import decide, demo_report
from serflow_testbed.decide import Record
from serflow_testbed.demo import Watch, main_of, read_raw
from serflow_testbed.demo_report import Replay, Sections, predict, prices_of, say
from serflow_testbed.harness import REPO, Cluster, wait_for
from serflow_testbed.kind import (
    Drops,
    KindSession,
    KindUnavailable,
    install_operator,
    pinned,
    router_url,
    wait_ready,
)
from serflow_testbed.podbill import FUNCTION, POOL, PodBill

PEAK_RATE = 24.0
"""Requests per second in the replay's busiest epoch, by default. One 2-core machine runs
both kind nodes, Knative and the load generator: it served 30 req/s without a failure and
timed requests out at 45 (README, "On kind"); the peak stays below both."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serflow_testbed.kind_demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-f", "--manifest", default=str(REPO / "examples" / "digits-kind.yaml"),
                   help="a SerflowInference whose images are the ones hack/kind.sh loads")  # fmt: skip
    p.add_argument("--trace", default="auto", help="per-epoch counts file, 'synthetic' or 'auto'")
    p.add_argument("--start", type=int, default=0, help="first trace line replayed")
    p.add_argument("--epochs", type=int, default=90, help="trace lines replayed (one per epoch)")
    p.add_argument("--peak-rate", type=float, default=PEAK_RATE,
                   help="req/s of the busiest replayed epoch (the trace is scaled to it)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="arrivals, image order, synthetic trace")
    p.add_argument("--calibration-epochs", type=int, default=20,
                   help="epochs replayed first, unbilled, to measure the function and the pods' "
                        "cold starts where they run (0: plan with the Jobs' profile alone)")  # fmt: skip
    p.add_argument("--out", default="out/demo-kind", help="folder for the report, PNG and logs")
    p.add_argument("--keep-cluster", action="store_true",
                   help="leave the cluster and the measured run's namespace, to look at "
                   "after (the calibration's is deleted all the same)")  # fmt: skip
    return p


@dataclass(frozen=True)
class Inputs:
    """What the demo will replay and apply, read and checked before anything starts."""

    counts: list[int]
    """Requests per epoch, scaled to the peak rate."""
    scale: float
    """The factor the trace's counts were multiplied by."""
    trace_what: str
    """Where the counts come from."""
    manifest: dict[str, Any]
    """The SerflowInference, as read."""


def read_inputs(a: argparse.Namespace) -> Inputs:
    """The arguments, the manifest and the trace, checked; an ``InputError`` names the first
    thing wrong, before anything starts."""
    from serflow.documents import read_document
    from serflow.errors import InputError
    from serflow.inference import parse_inference
    from serflow.schemas import inference_document_schema, validate

    for flag, value, least in (("--start", a.start, 0), ("--epochs", a.epochs, 1),
                               ("--calibration-epochs", a.calibration_epochs, 0)):  # fmt: skip
        if value < least:
            raise InputError(flag, f"expected {least} or more, got {value}")
    if not (a.peak_rate > 0 and a.peak_rate < float("inf")):
        raise InputError("--peak-rate", f"expected a finite number > 0, got {a.peak_rate}")
    doc = read_document(a.manifest)
    if doc.get("kind") != "SerflowInference":
        raise InputError(a.manifest, f"expected a SerflowInference, got {doc.get('kind')!r}")
    try:  # every field checked as the operator checks it (the profile may come from Jobs)
        validate(doc, inference_document_schema())
        parse_inference(doc["spec"], str(doc.get("metadata", {}).get("name", "")))
    except InputError as e:
        raise InputError(a.manifest, str(e)) from None
    raw, what = read_raw(a.trace, a.start, a.epochs, a.seed)
    d = float(doc["spec"]["scaling"].get("epochSeconds", 2))
    busiest = max(raw[a.start : a.start + a.epochs])
    if busiest <= 0:
        raise InputError(a.trace, f"lines {a.start}..{a.start + a.epochs - 1} are all zero")
    scale = a.peak_rate * d / busiest
    return Inputs(decide.transform_trace(raw, a.start, a.epochs, scale), scale, what, doc)


@dataclass
class Served:
    """One replay on the cluster: what the client saw and what ran."""

    records: list[Record]
    timeline: list[dict[str, Any]]
    t0: float
    t1: float
    plan: dict[str, Any]
    """The operator's plan (its status)."""
    bill: PodBill
    profile: dict[str, Any]
    """The profile the operator's Jobs measured (``spec.profile.inline`` form)."""


def run(a: argparse.Namespace) -> int:
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    given = read_inputs(a)
    counts = given.counts
    m = json.loads(json.dumps(given.manifest))
    spec = m["spec"]
    d = float(spec["scaling"]["epochSeconds"])
    mean_rate = sum(counts) / (len(counts) * d)
    # A user states the traffic they expect: the replay's own mean.
    spec.setdefault("traffic", {})["expectedRate"] = float(f"{mean_rate:.3g}")
    say(f"trace: {given.trace_what}; lines {a.start}..{a.start + a.epochs - 1} x {given.scale:.3g} "
        f"(busiest epoch {a.peak_rate:g} req/s), one line per {d:g} s epoch: {sum(counts)} "
        f"requests in {len(counts) * d:.0f} s, mean {mean_rate:.1f} req/s")  # fmt: skip
    trace_path = out / "trace.txt"
    trace_path.write_text("".join(f"{c}\n" for c in counts))

    session = KindSession(keep=a.keep_cluster)
    cal_note = "not calibrated (--calibration-epochs 0): the profile the operator's Jobs measured"
    try:
        cluster = session.up(say)
        say("chart: helm upgrade --install serflow charts/serflow-operator (the operator as a pod)")
        install_operator(cluster)
        if a.calibration_epochs > 0:
            cal = counts[: a.calibration_epochs]
            say(f"calibration: the first {len(cal)} epochs, unbilled, with the profile the "
                "operator's Jobs measure")  # fmt: skip
            first = serve(a, cluster, m, cal, show=False, keep=False)
            profile, cal_note = calibrated(first)
            say(cal_note)
            m = with_profile(m, profile)
        served = serve(a, cluster, m, counts, show=True, keep=a.keep_cluster)
        # Read before `down`, which removes the network and its rule.
        drops = session.drops()
    except KindUnavailable as e:
        say(f"error: the kind path cannot run here: {e}; `make demo-local` runs the demo "
            "without Docker")  # fmt: skip
        return 2
    finally:
        session.down()
    rc = report(a, out, m, counts, served, trace_path, given, cal_note, drops)
    if drops.outside():
        say(f"error: the cluster tried to leave this machine: {drops.outside()}")
        return rc or 1
    return rc


def serve(a: argparse.Namespace, cluster: Cluster, m: dict[str, Any], counts: list[int],
          show: bool, keep: bool) -> Served:  # fmt: skip
    """Apply ``m`` in a fresh namespace, wait for Ready, replay ``counts`` through Envoy;
    the namespace is deleted after (and waited for, so that its pool pods have left the
    node), unless ``keep``. The calibration's is never kept: left running, it would
    share the pool node with the measured run and be billed beside it."""
    from serflow.wire import FUNCTION_PORT
    from serflow_testbed import loadgen

    name, spec = m["metadata"]["name"], m["spec"]
    d, slo = float(spec["scaling"]["epochSeconds"]), float(spec["slo"]["latencySeconds"])
    ns = f"serflow-demo-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    bill = PodBill(cluster.kubeconfig, ns, FUNCTION_PORT).start()
    watch: Watch | None = None
    try:
        t = time.monotonic()
        cluster.apply(pinned([{**m, "metadata": {**m["metadata"], "namespace": ns}}]))
        how = ("the operator's Jobs profile the model on the cluster"
               if "fromJob" in spec["profile"] else "the calibrated profile inline")  # fmt: skip
        say(f"applied SerflowInference {ns}/{name} (expected rate {spec['traffic']['expectedRate']} "
            f"req/s); {how}")  # fmt: skip
        st = wait_ready(cluster, ns, name, 900)
        plan = st["plan"]
        say(f"Ready after {time.monotonic() - t:.0f} s. plan: {plan.get('pool')} "
            f"[{plan.get('instance')}] + faas [{plan.get('function')}] tau {plan.get('tau')}, "
            f"mu {plan.get('mu', 0):.4g} req/s, T-CIP {plan.get('tcip', 0):.4g} req/s")  # fmt: skip
        profile = (measured_profile(cluster, ns, name) if "fromJob" in spec["profile"]
                   else dict(spec["profile"]["inline"]))  # fmt: skip
        url = router_url(cluster, ns, name)
        # Knative starts each function at one pod; the replay starts from none, as simulate.
        wait_for("functions at zero (Knative's scale-to-zero)",
                 lambda: not bill.alive(FUNCTION), 300, 1)  # fmt: skip
        say(f"router: {url} (a NodePort in front of the operator's Envoy); replaying")
        watch = Watch(cluster.kubeconfig, ns, name)
        watch.thread.start()
        images, labels = loadgen.heldout_images(str(spec["model"]["artefact"]["path"]))
        timeline: list[dict[str, Any]] = []
        prices = prices_of(m, plan)
        t0 = time.time()

        def on_epoch(e: int, recs: list[Record]) -> None:
            assert watch is not None
            st = watch.status
            tr, inst, split = (
                st.get("traffic") or {},
                st.get("instances") or {},
                st.get("split") or {},
            )
            mine = [r for r in recs if r.epoch == e]
            last = [r for r in recs if r.epoch == e - 1 and r.status == 200]
            spill = sum(1 for r in last if r.where == "function") / max(1, len(last))
            cost = bill_of(bill, t0, time.time(), prices).total
            ready = bill.ready_count(POOL)
            timeline.append({
                "epoch": e, "sent": counts[e], "answered": len(mine),
                "function": sum(1 for r in mine if r.where == "function"),
                "ewma": tr.get("ewma"), "rate": tr.get("rate"), "deviation": tr.get("deviation"),
                "target": tr.get("target"), "desired": inst.get("desired"), "ready": ready,
                "functionPods": bill.ready_count(FUNCTION), "poolShare": split.get("poolShare"),
                "cost": cost,
            })  # fmt: skip
            if not show:
                return
            say(f"epoch {e + 1:3d}/{len(counts)}  rate {counts[e] / d:5.1f}/s  "
                f"ewma {float(tr.get('ewma') or 0):5.1f}  pool {ready}/{inst.get('desired', '-')}  "
                f"functions {bill.ready_count(FUNCTION)}  "
                f"pool share {float(split.get('poolShare') or 0):4.0%}  spill {spill:4.0%}  "
                f"cost ${cost:.6f}")  # fmt: skip

        records = asyncio.run(loadgen.replay(url, counts, d, images, labels, seed=a.seed,
                                             timeout_s=2 * d + slo + 60, on_epoch=on_epoch))  # fmt: skip
        t1 = t0 + len(counts) * d
        if not show and not bill.cold_starts(POOL):
            # A calibration too short for the scaler to start a pool pod, or planned on
            # functions alone (the Jobs' profile, measured on a busy machine, can put
            # T-CIP above the rate): ask for one through the spec, to see how long one
            # takes here; else the calibrated profile keeps the Jobs' 132 s assumption.
            patch: dict[str, Any] = {"spec": {"scaling": {"minInstances": 1}}}
            if plan.get("pool") == "faas":
                patch["spec"]["pools"] = ["iaas", "hybrid"]
            cluster.kubectl("-n", ns, "patch", "sfi", name, "--type=merge", "-p", json.dumps(patch))
            with contextlib.suppress(TimeoutError):
                wait_for("a pool pod Ready", lambda: bill.cold_starts(POOL), 180, 1)
    finally:
        if watch:
            watch.stop.set()
        bill.close()
        if not keep:
            with contextlib.suppress(Exception):
                cluster.run("kubectl", "delete", "namespace", ns, "--timeout=300s",
                            check=False, timeout=330)  # fmt: skip
    return Served(records, timeline, t0, t1, plan, bill, profile)


def measured_profile(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    """The profile the operator merged from its Jobs (its ConfigMap), for ``simulate``."""
    sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=profile"
    items = json.loads(
        cluster.kubectl("-n", ns, "get", "configmaps", "-l", sel, "-o", "json").stdout
    )
    for cm in items["items"]:
        for text in (cm.get("data") or {}).values():
            doc = yaml.safe_load(text)
            return dict(doc.get("profile", doc))
    raise RuntimeError(f"no profile ConfigMap of {ns}/{name} (selector {sel})")


def calibrated(run: Served) -> tuple[dict[str, Any], str]:
    """The Jobs' profile with what the calibration replay measured on the cluster: the
    function's own seconds per answer (whole-model spills only: a hybrid's tail answers
    run part of the model), as its per-request overhead above the partitions, and the
    median cold starts of pool and function pods; and a line saying so."""
    prof: dict[str, Any] = json.loads(json.dumps(run.profile))
    tau = float(run.plan["tau"])
    th = next(t for t in prof["thresholds"] if abs(float(t["tau"]) - tau) < 1e-9)
    use = run.bill.function_use()
    colds = {POOL: run.bill.cold_starts(POOL), FUNCTION: run.bill.cold_starts(FUNCTION)}
    per_answer = use.seconds / use.answers if use.answers else 0.0
    whole = run.plan.get("pool") != "hybrid"
    for c in prof["configs"]:
        role = POOL if c["kind"] == "instance" else FUNCTION
        if colds[role]:
            c["coldStartSeconds"] = round(statistics.median(colds[role]), 2)
        if (
            role == FUNCTION
            and whole
            and use.answers >= 20
            and c["name"] == run.plan.get("function")
        ):
            # A spilled answer bills its partitions and the server's own overhead: the
            # measured seconds above the partitions' are that overhead, as run here.
            sv = decide.survival(th["exitShares"])
            compute = decide.request_seconds(c["secondsPerRequest"], sv)
            if per_answer >= compute:
                c["requestOverheadSeconds"] = float(f"{per_answer - compute:.4g}")
            else:  # faster than the Jobs measured: the partitions themselves cost less
                c["secondsPerRequest"] = decide.calibrate_function(
                    c["secondsPerRequest"], sv, per_answer
                )
                c["requestOverheadSeconds"] = 0.0
    note = (f"calibrated on the cluster: {use.answers} answers from functions, "
            f"{per_answer * 1e3:.2f} ms of their own each"
            f"{'' if whole and use.answers >= 20 else ' (not used: too few, or tails)'}; cold "
            f"starts (median) pool pods {_median(colds[POOL])}, function pods "
            f"{_median(colds[FUNCTION])} (the Jobs assume 132 s and 0.5 s: a VM's boot, "
            "a FaaS's)")  # fmt: skip
    return prof, note


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} s" if xs else "none seen"


def with_profile(m: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """``m`` with ``profile`` inline in place of the Jobs."""
    out: dict[str, Any] = json.loads(json.dumps(m))
    out["spec"]["profile"] = {"inline": profile}
    return out


def bill_of(bill: PodBill, t0: float, t1: float, prices: decide.Prices) -> decide.Bill:
    lives = bill.lives()
    use = bill.function_use()
    return decide.bill(decide.alive_seconds(lives, POOL, t0, t1), use.seconds,
                       decide.alive_seconds(lives, FUNCTION, t0, t1), use.answers, prices)  # fmt: skip


def report(a: argparse.Namespace, out: Path, m: dict[str, Any], counts: list[int], run: Served,
           trace: Path, given: Inputs, calibration: str, drops: Drops) -> int:  # fmt: skip
    """The shared report (``demo_report``) with the bill of what ran on the cluster and
    what only this demo says: where the profile came from, what the bill was read from,
    the pods' cold starts as observed, and what the kind network dropped."""
    manifest = out / "applied-with-measured-profile.yaml"
    manifest.write_text(yaml.safe_dump(with_profile(m, run.profile), sort_keys=False))
    # simulate starts from the pool that was Ready when the replay began (the operator
    # planned it before the first request), not from a cold, empty one.
    up = run.bill.ready_at(POOL, run.t0)
    replay = Replay(given.trace_what, counts, given.scale, m["spec"], run.plan, run.profile,
                    run.records, run.timeline, up)  # fmt: skip
    b = bill_of(run.bill, run.t0, run.t1, prices_of(m, run.plan))
    use = run.bill.function_use()
    extra = {
        "peakRate": a.peak_rate,
        "functionAnswers": use.answers, "functionOwnSeconds": use.seconds,
        "poolColdStarts": run.bill.cold_starts(POOL),
        "functionColdStarts": run.bill.cold_starts(FUNCTION),
        "poolPeak": decide.peak_alive(run.bill.lives(), POOL),
        "functionPeak": decide.peak_alive(run.bill.lives(), FUNCTION),
        "calibration": calibration,
        "watchErrors": run.bill.errors,
    }  # fmt: skip
    sections = Sections(
        where=" on kind",
        scaled=f" (busiest epoch {a.peak_rate:g} req/s)",
        setup=f" Its profile: the operator's Jobs measured the partitions; {calibration}.",
        notes=[billed_from(extra, m["spec"]["prices"].get("mode", "per-use"))],
        footer=["", f"Nothing leaves the machine: {drops.summary()}."],
        ready="pool pods",
    )
    return demo_report.write(out, replay, b, predict(manifest, trace, len(counts), up), sections,
                             extra)  # fmt: skip


def _seconds(xs: list[float]) -> str:
    if not xs:
        return "none"
    return (f"{len(xs)}, median {statistics.median(xs):.1f} s (from {min(xs):.1f} to "
            f"{max(xs):.1f} s)")  # fmt: skip


def billed_from(r: dict[str, Any], pricing: str) -> str:
    """The report's note on what the bill was read from (pods' lives, the function pods'
    own seconds) and on the pods' cold starts, which only the cluster shows."""
    billed = ("its pods' lives (per-pod pricing)" if pricing == "per-pod" else
              f"its own seconds per answer (`serflow_request_seconds` read from each function "
              f"pod: {r['functionAnswers']} answers, {r['functionOwnSeconds']:.2f} s)")  # fmt: skip
    return (
        f"Billed from what ran: instances for their pool pods' lives (creation to removal, "
        f"cold start and drain included; up to {r['poolPeak']} at once); the function for "
        f"{billed}; up to {r['functionPeak']} function pods at once. Cold starts as observed "
        f"(pod created to Ready): pool pods {_seconds(r['poolColdStarts'])}; function pods "
        f"{_seconds(r['functionColdStarts'])}."
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return main_of(parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

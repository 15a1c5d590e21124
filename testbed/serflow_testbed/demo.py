"""``python -m serflow_testbed.demo``: the whole loop on one machine.

1. the local control plane (``hack/cluster.sh up`` unless one is up), the chart;
2. the model: the shipped artefact (ONNX stages, run by ONNX Runtime);
3. a function process measured alone (cold start, its own seconds per spilled image);
4. a calibration: the first epochs replayed, unbilled, on the whole running stack (as
   in 5 and 6) to measure the function where it runs; the demo's profile takes those
   numbers, so the operator and ``serflow simulate`` plan with them;
5. in a fresh namespace: the local runtime (workers, function activators, a real Envoy),
   the operator as a local process with the chart's ServiceAccount, the SerflowInference;
6. an open-loop replay of the trace with real held-out images and live progress;
7. a report (``demo_report``, the kind demo's too): service, accuracy, exits, pool vs
   function share, the measured bill next to ``serflow simulate``'s prediction for the
   same counts, and a PNG timeline.

Every process it started is stopped at the end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import math
import signal
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from serflow_runtime.server import server_timing_seconds
from serflow_testbed import decide, demo_report, netguard
from serflow_testbed.decide import Life, Record
from serflow_testbed.demo_report import Replay, Sections, predict, prices_of, say
from serflow_testbed.demo_report import estimates as estimates  # test_demo_cli reads demo.estimates
from serflow_testbed.harness import (
    REPO,
    Cluster,
    ControlPlane,
    Processes,
    free_port,
    http_ok,
    install_chart,
    kwok_node,
    operator_argv,
    operator_env,
    sa_kubeconfig,
    wait_for,
)

SHARED_TRACE = REPO.parent / "shared" / "traces" / "wits_logs.txt"
KWOK_READY_DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"


def pool_nodes(cluster: Cluster, m: dict[str, Any]) -> None:
    """Fake kwok nodes of the instance types, one per instance the pool may grow to."""
    nodes = []
    for inst in m["spec"]["prices"]["instances"]:
        cfg = next(
            c for c in m["spec"]["profile"]["inline"]["configs"] if c["name"] == inst["name"]
        )
        for i in range(int(m["spec"]["scaling"]["maxInstances"])):
            node = f"demo-{inst['name'].replace('.', '-')}-{i}"
            nodes.append(kwok_node(node, inst["name"], str(cfg["vcpu"]), f"{cfg['memoryMiB']}Mi"))
    cluster.apply(nodes)


# -- measuring the function once ------------------------------------------------------


@dataclass(frozen=True)
class FunctionMeasure:
    """One whole-model function process, measured alone before the replay."""

    cold_s: float
    """Seconds from its start to its first ready answer."""
    own_s: float
    """Median seconds of its own per single-image request (its Server-Timing): what a
    FaaS bills, and the profile given to the operator and to simulate."""
    round_trip_s: float
    """Median seconds a caller waited for the same requests (HTTP included)."""


def measure_function(tau: float, work: Path, images: list[bytes], artefact: str,
                     n: int = 150) -> FunctionMeasure:  # fmt: skip
    port = free_port()
    t0 = time.monotonic()
    procs = Processes()
    procs.start("function", [sys.executable, "-m", "serflow_runtime.cli", "function",
                             "--artefact", artefact, "--partitions", "1-K", "--tau", f"{tau:g}", "--port", str(port),
                             "--threads", "1"],
                work / "measure.log", {"OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        wait_for(
            "the function to answer", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 120, 0.05
        )
        cold = time.monotonic() - t0
        trips, owns = [], []
        for b in images[:n]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/infer", data=b,
                                         headers={"Content-Type": "application/octet-stream"})  # fmt: skip
            s = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                own = server_timing_seconds(r.headers.get("Server-Timing"))
            trips.append(time.perf_counter() - s)
            if own is None:
                raise RuntimeError("the function answered without a Server-Timing header")
            owns.append(own)
        # The first requests warm the allocator and caches: a warm pod's numbers.
        return FunctionMeasure(cold, statistics.median(owns[10:]), statistics.median(trips[10:]))
    finally:
        procs.stop(timeout=30)


def demo_manifest(base: dict[str, Any], fn: FunctionMeasure, inst_cold: float) -> dict[str, Any]:
    """The example manifest with this machine's measured function numbers.

    The function's seconds become the measured ones, and its price per GB-s moves the
    other way so that a spilled image costs what the example prices it at: the plan
    (T-CIP, pool size) is the example's on a fast machine and on a slow one alike."""
    m: dict[str, Any] = json.loads(json.dumps(base))
    prof = m["spec"]["profile"]["inline"]
    tau = float(m["spec"]["thresholds"][0])
    th = next(t for t in prof["thresholds"] if abs(t["tau"] - tau) < 1e-9)
    sv = decide.survival(th["exitShares"])
    functions = [c for c in prof["configs"] if c["kind"] == "function"]
    if len(functions) != 1:
        raise ValueError("the demo's example must profile exactly one function size")
    for c in prof["configs"]:
        if c["kind"] == "function":
            example_s = decide.request_seconds(c["secondsPerRequest"], sv)
            c["secondsPerRequest"] = decide.calibrate_function(c["secondsPerRequest"], sv, fn.own_s)
            c["coldStartSeconds"] = round(fn.cold_s, 2)
        else:
            c["coldStartSeconds"] = inst_cold
    fp = m["spec"]["prices"]["functions"]
    fp["perGBSecond"] = float(f"{float(fp['perGBSecond']) * example_s / fn.own_s:.4g}")
    # kwok marks a pool pod Ready after this delay: the operator's readyReplicas (so its
    # pool share and route weights) follows when the local worker serves: after its cold
    # start, and not before its process answers (it loads like a function), plus the
    # runtime's poll.
    notes = m["spec"]["model"].setdefault("podAnnotations", {})
    notes[KWOK_READY_DELAY] = f"{math.ceil(max(inst_cold, fn.cold_s)) + 1}s"
    return m


# -- live state -------------------------------------------------------------------


class Watch:
    """The object's status, polled in a thread (the replay's event loop never blocks)."""

    def __init__(self, kubeconfig: Path, ns: str, name: str) -> None:
        from kubernetes import client, config

        self.api = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(kubeconfig))
        )
        self.ns, self.name = ns, name
        self.status: dict[str, Any] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def get(self) -> dict[str, Any]:
        try:
            obj = self.api.get_namespaced_custom_object(
                "serflow.io", "v1alpha1", self.ns, "serflowinferences", self.name
            )
            return dict(cast(dict[str, Any], obj).get("status") or {})
        except Exception:  # a slow API server: keep the last status
            return self.status

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.status = self.get()
            self.stop.wait(0.5)


def read_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def lives(state: dict[str, Any]) -> list[Life]:
    return [Life(**x) for x in state.get("lives", [])]


# -- the run ------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serflow_testbed.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-f", "--manifest", default=str(REPO / "examples" / "digits-demo.yaml"),
                   help="a SerflowInference with an inline profile of one function size")  # fmt: skip
    p.add_argument("--trace", default="auto", help="per-epoch counts file, 'synthetic' or 'auto'")
    p.add_argument("--start", type=int, default=0, help="first trace line replayed")
    p.add_argument("--epochs", type=int, default=90, help="trace lines replayed (one per epoch)")
    p.add_argument("--scale", type=float, default=0.6, help="count-scale factor")
    p.add_argument("--cold-start", type=float, default=10.0, help="pool instance cold start, s")
    p.add_argument("--seed", type=int, default=0, help="arrivals, image order, synthetic trace")
    p.add_argument("--calibration-epochs", type=int, default=20,
                   help="epochs replayed first, unbilled, to profile the function on the "
                        "running stack (0: use the measurement of the function alone)")  # fmt: skip
    p.add_argument("--out", default="out/demo", help="folder for the report, PNG and logs")
    p.add_argument("--keep-cluster", action="store_true", help="leave a control plane it started")
    return p


@dataclass(frozen=True)
class Inputs:
    """What the demo will replay and apply, read and checked before anything starts."""

    counts: list[int]
    """Requests per epoch: the trace's lines from --start, times --scale."""
    trace_what: str
    """Where the counts come from, for the transcript and the report."""
    manifest: dict[str, Any]
    """The SerflowInference the demo calibrates and applies."""


def read_inputs(a: argparse.Namespace) -> Inputs:
    """The arguments, the manifest and the trace, checked; an ``InputError`` names the first
    thing wrong, so a bad input stops the demo before it starts a process."""
    from serflow.documents import read_document, workload_of
    from serflow.errors import InputError

    for flag, value, least in (("--start", a.start, 0), ("--epochs", a.epochs, 1),
                               ("--calibration-epochs", a.calibration_epochs, 0)):  # fmt: skip
        if value < least:
            raise InputError(flag, f"expected {least} or more, got {value}")
    for flag, x in (("--scale", a.scale), ("--cold-start", a.cold_start)):
        if not (math.isfinite(x) and x >= 0):
            raise InputError(flag, f"expected a finite number >= 0, got {x}")
    doc = read_document(a.manifest)
    workload_of(doc, a.manifest)  # every field checked as the CLI checks it
    if doc.get("kind") != "SerflowInference":
        raise InputError(a.manifest, f"expected a SerflowInference, got {doc.get('kind')!r}")
    ref = str(doc["spec"]["model"].get("artefact", {}).get("path", ""))
    if ref.startswith("/"):
        from serflow_runtime.artefact import shipped

        names = ", ".join(shipped())
        raise InputError(f"{a.manifest}: spec.model.artefact.path",
                         f"the demo runs processes here, not images: name a shipped artefact "
                         f"({names}), got {ref!r}")  # fmt: skip
    configs = doc["spec"]["profile"]["inline"]["configs"]
    fns = [c for c in configs if c.get("kind") == "function"]
    if len(fns) != 1:
        raise InputError(f"{a.manifest}: spec.profile.inline.configs",
                         f"the demo needs exactly one function config, found {len(fns)}")  # fmt: skip

    raw, what = read_raw(a.trace, a.start, a.epochs, a.seed)
    return Inputs(decide.transform_trace(raw, a.start, a.epochs, a.scale), what, doc)


def read_raw(src: str, start: int, epochs: int, seed: int) -> tuple[list[int], str]:
    """The trace's counts (``auto``: the shared WITS trace beside the repository, else the
    synthetic one) with a line saying where they come from; an ``InputError`` when it has
    fewer than ``start + epochs`` lines."""
    from serflow.errors import InputError
    from serflow.traces import read_trace, synthetic_trace

    if src == "auto":
        src = str(SHARED_TRACE) if SHARED_TRACE.is_file() else "synthetic"
    if src == "synthetic":
        raw = synthetic_trace(epochs=start + epochs, seed=seed)
        return raw, f"synthetic trace (seed {seed}; the WITS trace is not beside the repository)"
    raw = read_trace(src)
    if len(raw) < start + epochs:
        raise InputError(src, f"{len(raw)} lines; --start {start} and --epochs "
                              f"{epochs} need {start + epochs}")  # fmt: skip
    return raw, f"WITS trace ({Path(src).name})" if Path(src).name == "wits_logs.txt" else src


@dataclass
class Served:
    """One replay on the running stack: what the client saw and what the runtime billed."""

    records: list[Record]
    timeline: list[dict[str, Any]]
    t0: float
    t1: float
    state: dict[str, Any]
    """The local runtime's final state: process lives and function time."""
    plan: dict[str, Any]
    """The operator's plan (its status), which the bill is priced by."""


def run(a: argparse.Namespace) -> int:
    out = Path(a.out).resolve()
    work = out / "run"
    work.mkdir(parents=True, exist_ok=True)
    given = read_inputs(a)
    counts, trace_what, base = given.counts, given.trace_what, given.manifest
    spec = base["spec"]
    d = float(spec["scaling"]["epochSeconds"])
    tau = float(spec["thresholds"][0])
    say(f"trace: {trace_what}; lines {a.start}..{a.start + a.epochs - 1} x {a.scale:g}, "
        f"one line per {d:g} s epoch: {sum(counts)} requests in {a.epochs * d:.0f} s")  # fmt: skip

    from serflow_runtime.cli import BUNDLED
    from serflow_testbed import loadgen

    # The manifest names a shipped artefact (the local processes run it from the package).
    artefact = str(spec["model"].get("artefact", {}).get("path", BUNDLED.name))
    say(
        f"model: the shipped artefact {artefact} (trained on the digits training split, "
        "exported to ONNX, run by ONNX Runtime)"
    )
    images, labels = loadgen.heldout_images(artefact)
    alone = measure_function(tau, work, images, artefact)
    say(f"measured here: function cold start {alone.cold_s:.2f} s, {alone.own_s * 1e3:.2f} ms of "
        f"its own per spilled image alone ({alone.round_trip_s * 1e3:.2f} ms round trip)")  # fmt: skip
    trace_path = out / "trace.txt"
    trace_path.write_text("".join(f"{c}\n" for c in counts))

    control_plane = ControlPlane(keep=a.keep_cluster)
    try:
        cp = control_plane.up(say)
        say("chart: helm upgrade --install serflow charts/serflow-operator")
        install_chart(cp)
        pool_nodes(cp, base)
        fn = alone
        if a.calibration_epochs > 0:
            # A function alone runs warm; beside the pool, Envoy and the API server on 2
            # cores it runs slower.  Profile it where it will run, as on a real deployment.
            cal = counts[: a.calibration_epochs]
            say(f"calibration: the first {len(cal)} epochs on the whole stack, to profile the "
                f"function where it runs (not billed)")  # fmt: skip
            first = serve(a, cp, demo_manifest(base, alone, a.cold_start), cal, images, labels,
                          work / "calibration", show=False)  # fmt: skip
            fn = calibrated(alone, first.state)
            failed = sum(1 for r in first.records if r.status != 200)
            say(f"calibrated: {fn.own_s * 1e3:.2f} ms of its own per spilled image on the "
                f"running stack ({int(first.state.get('fnRequests', 0))} spilled of "
                f"{len(first.records)} requests, {failed} failed), cold start {fn.cold_s:.2f} s")  # fmt: skip
        m = demo_manifest(base, fn, a.cold_start)
        manifest_path = out / "digits-demo.applied.yaml"
        manifest_path.write_text(yaml.safe_dump(m, sort_keys=False))
        main = serve(a, cp, m, counts, images, labels, work, show=True)
    finally:
        control_plane.down(say)
    return report(a, out, m, counts, main, manifest_path, trace_path, trace_what, fn, alone)


def calibrated(alone: FunctionMeasure, state: dict[str, Any]) -> FunctionMeasure:
    """The function as the calibration replay billed it: mean own seconds per request and
    mean cold start; the alone numbers where it served too little to say."""
    n = int(state.get("fnRequests", 0))
    if n < 20:
        return alone
    colds = [float(x) for x in state.get("fnColdStarts", [])]
    return FunctionMeasure(
        cold_s=statistics.fmean(colds) if colds else alone.cold_s,
        own_s=float(state["fnExecSeconds"]) / n,
        round_trip_s=float(state.get("fnWallSeconds", state["fnExecSeconds"])) / n,
    )


def serve(a: argparse.Namespace, cp: Cluster, m: dict[str, Any], counts: list[int],
          images: list[bytes], labels: list[int], work: Path, show: bool) -> Served:  # fmt: skip
    """Replay ``counts`` against ``m`` in a fresh namespace: its own operator, local
    runtime and Envoy, all stopped (and the namespace deleted) on the way out."""
    work.mkdir(parents=True, exist_ok=True)
    name, spec = m["metadata"]["name"], m["spec"]
    d, slo = float(spec["scaling"]["epochSeconds"]), float(spec["slo"]["latencySeconds"])
    kids = Processes()
    ns = f"serflow-demo-{uuid.uuid4().hex[:6]}"
    watch: Watch | None = None
    state_path = work / "runtime-state.json"
    try:
        cp.kubectl("create", "namespace", ns)
        envoy_port, stats_port = free_port(), free_port()
        stats_url = f"http://127.0.0.1:{stats_port}/stats"
        kids.start("runtime", [
            sys.executable, "-m", "serflow_testbed.runtime", "--kubeconfig", str(cp.kubeconfig),
            "--namespace", ns, "--name", name, "--workdir", str(work), "--state", str(state_path),
            "--envoy-port", str(envoy_port), "--stats-port", str(stats_port),
            "--cold-start", str(a.cold_start),
            "--keep-alive", str(spec["prices"]["functions"]["keepAliveSeconds"]),
            "--timeout", str(2 * d + slo + 10), "--max-seconds", str(len(counts) * d + 600),
        ], work / "runtime.log")  # fmt: skip
        wait_for("Envoy's stats listener", lambda: http_ok(stats_url), 60)
        sak = work / "sa.kubeconfig"
        sa_kubeconfig(cp, sak)
        kids.start("operator", operator_argv(ns), work / "operator.log", operator_env(sak))
        doc = {**m, "metadata": {**m["metadata"], "namespace": ns}}
        doc["spec"] = {**spec, "routing": {"statsUrls": [stats_url]}}
        cp.apply([doc])
        if show:
            say(f"applied SerflowInference {ns}/{name}; operator, local runtime and Envoy running")
        watch = Watch(cp.kubeconfig, ns, name)
        wait_for("the functions' first pod (Knative's initial scale)",
                 lambda: read_state(state_path).get("functions"), 180)  # fmt: skip
        st = wait_for("the plan", lambda: (s := watch.get()).get("plan") and s, 90)
        plan = st["plan"]
        if show:
            say(f"plan: {plan.get('pool')} [{plan.get('instance')}] + faas [{plan.get('function')}] "
                f"tau {plan.get('tau')}, mu {plan.get('mu', 0):.4g} req/s, "
                f"T-CIP {plan.get('tcip', 0):.4g} req/s")  # fmt: skip
        watch.thread.start()
        records, timeline, t0 = replay(
            a, counts, d, slo, images, labels, envoy_port, watch, state_path, m, plan, show
        )
        t1 = t0 + len(counts) * d
    finally:
        if watch:
            watch.stop.set()
        kids.stop("runtime")
        kids.stop()
        with contextlib.suppress(Exception):
            cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    return Served(records, timeline, t0, t1, read_state(state_path), plan)


def fn_max_scale(m: dict[str, Any]) -> int:
    return int((m["spec"].get("functions") or {}).get("maxScale", 50))


def replay(a: argparse.Namespace, counts: list[int], d: float, slo: float, images: list[bytes],
           labels: list[int], port: int, watch: Watch, state_path: Path,
           m: dict[str, Any], plan: dict[str, Any], show: bool = True,
           ) -> tuple[list[Record], list[dict[str, Any]], float]:  # fmt: skip
    from serflow_testbed import loadgen

    timeline: list[dict[str, Any]] = []
    prices = prices_of(m, plan)
    t0 = time.time()

    def on_epoch(e: int, recs: list[Record]) -> None:
        st, rs = watch.status, read_state(state_path)
        tr, inst, split = st.get("traffic") or {}, st.get("instances") or {}, st.get("split") or {}
        mine = [r for r in recs if r.epoch == e]
        # Pool answers come after their batch (up to D): show the previous epoch's spill.
        last = [r for r in recs if r.epoch == e - 1 and r.status == 200]
        fn = sum(1 for r in mine if r.where == "function")
        spill = sum(1 for r in last if r.where == "function") / max(1, len(last))
        now = time.time()
        b = decide.bill(decide.alive_seconds(lives(rs), "instance", t0, now),
                        float(rs.get("fnExecSeconds", 0.0)), decide.alive_seconds(lives(rs), "function", t0, now),
                        int(rs.get("fnRequests", 0)), prices)  # fmt: skip
        row = {"epoch": e, "sent": counts[e], "answered": len(mine), "function": fn,
               "ewma": tr.get("ewma"), "rate": tr.get("rate"), "deviation": tr.get("deviation"),
               "target": tr.get("target"), "desired": inst.get("desired"), "readyK8s": inst.get("ready"),
               "ready": rs.get("ready"), "workers": rs.get("workers"),
               "poolShare": split.get("poolShare"), "cost": b.total,
               "fnRequests": rs.get("fnRequests", 0), "fnExecSeconds": rs.get("fnExecSeconds", 0.0)}  # fmt: skip
        timeline.append(row)
        if show:
            say(f"epoch {e + 1:3d}/{len(counts)}  rate {counts[e] / d:6.1f}/s  "
                f"ewma {float(tr.get('ewma') or 0):6.1f}  instances {rs.get('ready', 0)}/{inst.get('desired', '-')}  "
                f"pool share {float(split.get('poolShare') or 0):4.0%}  "
                f"spill {spill:4.0%}  cost ${b.total:.6f}")  # fmt: skip

    records = asyncio.run(loadgen.replay(f"http://127.0.0.1:{port}/infer", counts, d, images, labels,
                                         seed=a.seed, timeout_s=2 * d + slo + 10, on_epoch=on_epoch))  # fmt: skip
    return records, timeline, t0


def report(a: argparse.Namespace, out: Path, m: dict[str, Any], counts: list[int], run: Served,
           manifest: Path, trace: Path, trace_what: str, fn: FunctionMeasure,
           alone: FunctionMeasure) -> int:  # fmt: skip
    """The shared report (``demo_report``) with the local runtime's bill (its processes'
    lives, the functions' own seconds) and what only this demo measures: the function's
    profile and the processes' cold starts."""
    state, ls, spec = run.state, lives(run.state), m["spec"]
    b = decide.bill(decide.alive_seconds(ls, "instance", run.t0, run.t1), float(state.get("fnExecSeconds", 0.0)),
                    decide.alive_seconds(ls, "function", run.t0, run.t1), int(state.get("fnRequests", 0)),
                    prices_of(m, run.plan))  # fmt: skip
    replay = Replay(trace_what, counts, a.scale, spec, run.plan, spec["profile"]["inline"],
                    run.records, run.timeline)  # fmt: skip
    extra = {
        "envoyRestarts": state.get("envoyRestarts", 0),
        "functionColdStart": fn.cold_s, "functionSecondsPerImage": fn.own_s,
        "functionRoundTripPerImage": fn.round_trip_s,
        "functionAlone": asdict(alone), "calibrationEpochs": min(a.calibration_epochs, len(counts)),
        "functionWallSeconds": state.get("fnWallSeconds"),
        "functionUntimed": state.get("fnUntimed", 0),
        "workerColdStarts": state.get("workerColdStarts", []),
        "functionColdStarts": state.get("fnColdStarts", []),
        "functionPeak": decide.peak_alive(ls, "function"),
        "functionServingCpuSeconds": state.get("fnServingCpuSeconds"),
        "functionMaxScale": fn_max_scale(m),
        "functionConcurrency": int((spec.get("functions") or {}).get("containerConcurrency", 1)),
    }  # fmt: skip
    sections = Sections(notes=[function_profile(extra, a.cold_start)], ready="local workers")
    return demo_report.write(out, replay, b, predict(manifest, trace, len(counts)), sections, extra)


def function_profile(r: dict[str, Any], worker_cold_start: float) -> str:
    """The report's note on what only the local demo measures: the function's profile
    and how its seconds were billed, and the processes' cold starts."""
    wc = r["workerColdStarts"]
    return (
        f"Function profile given to the operator and to simulate: cold start "
        f"{r['functionColdStart']:.2f} s, {r['functionSecondsPerImage'] * 1e3:.2f} ms of its own per "
        f"spilled image, {calibration_source(r)}; cold starts during the run: "
        f"{', '.join(f'{x:.2f}' for x in r['functionColdStarts']) or 'none'} s "
        f"(up to {r['functionPeak']} function processes at once; max-scale "
        f"{r['functionMaxScale']}, containerConcurrency {r['functionConcurrency']}). "
        f"Function-seconds are billed as a FaaS bills them: each request's duration inside "
        f"the function process (its Server-Timing; {r['functionUntimed']} answers had none and "
        f"were billed at their wall time). Seen from the activator the same requests held a "
        f"function for {float(r['functionWallSeconds'] or 0):.2f} s (queueing for the machine's "
        f"cores and the HTTP hop included); the function processes' CPU time after their "
        f"cold starts was {float(r['functionServingCpuSeconds'] or 0):.2f} s. "
        f"Worker cold starts (configured {worker_cold_start:g} s): "
        f"{', '.join(f'{x:.1f}' for x in wc) or 'none'} s."
    )  # fmt: skip


def calibration_source(r: dict[str, Any]) -> str:
    alone = r["functionAlone"]
    was = (f"a function alone, back-to-back requests: {alone['own_s'] * 1e3:.2f} ms of its own, "
           f"{alone['round_trip_s'] * 1e3:.2f} ms round trip, cold start {alone['cold_s']:.2f} s")  # fmt: skip
    if r["calibrationEpochs"] and r["functionSecondsPerImage"] != alone["own_s"]:
        return (f"measured in an unbilled calibration replay of the first {r['calibrationEpochs']} "
                f"epochs on the running stack ({was})")  # fmt: skip
    return f"measured before the run on {was}"


@contextlib.contextmanager
def term_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT unwind like Ctrl-C, so the finally blocks stop every child (a
    shell starts a background job with SIGINT ignored: the demo takes it back)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def main_of(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
            argv: list[str] | None) -> int:  # fmt: skip
    """A demo's entry point: one demo per ``--out`` (a lock), bad input in one line with
    exit 2, Ctrl-C and SIGTERM unwinding so that everything it started is stopped."""
    from serflow.errors import InputError

    a = parser.parse_args(argv)
    out = Path(a.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = (out / ".lock").open("w")
    except OSError as e:
        say(f"error: --out {out}: cannot write there ({e.strerror})")
        return 2
    with lock, term_as_interrupt():
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"error: another demo is writing to {out}; pass another --out")
            return 2
        # Nothing leaves the machine: this process and every Python process it starts.
        guard_log = out / "netguard.log"
        guard_log.write_text("")
        netguard.activate(guard_log)
        try:
            rc = run(a)
            refused, _ = netguard.refusals(guard_log)
            for line in refused:
                say(f"error: refused a connection outside loopback and the kind network: {line}")
            return rc or (1 if refused else 0)
        except InputError as e:
            say(f"error: {e}")
            return 2
        except KeyboardInterrupt:
            say("interrupted: everything this demo started was stopped")
            return 130


def main(argv: list[str] | None = None) -> int:
    return main_of(parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

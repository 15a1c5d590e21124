"""Fault run: a hybrid plan (fused tail after cut 2) served by local worker, function and
Envoy processes started from the operator's builders, under closed-loop load spread over
two routers, while a pool worker, the tail function and a spill host are SIGKILLed, the
other worker and then a spill host are frozen (SIGSTOP) and resumed, the route is swapped
and a router is drained and restarted.

    .venv/bin/python bench/faults.py --out bench/results/faults.md

Every client error is counted, and every request a server answered more than once; the
run exits 1 if a client got an error, or an answer that differs from the whole model's
own (exit, class) for its image.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from serflow.k8s.timeouts import (
    function_attempt_timeout_s,
    pool_attempt_timeout_s,
    router_timeout_s,
)
from serflow_runtime import artefact
from serflow_runtime.cli import BUNDLED
from serflow_runtime.engine import decide
from serflow_runtime.runtimes import open_model
from serflow_testbed.faults import POOL_WEIGHT, SHAPE, fault_run
from serflow_testbed.loadgen import raw_bytes
from serflow_testbed.plans import plan
from serflow_testbed.reference import all_logits


def prose(pool_s: int, function_s: int, route_s: int) -> str:
    """What saves each request, with the plan's bounds."""
    return (
        "What saves each request. *Crashes:* a killed worker's open batch and connections "
        "reset, and the route retries them (`reset`, `connect-failure`) with the "
        "previous_priorities plugin, so they land on the functions; outlier detection "
        "ejects the dead worker after five local failures, and the pool cluster has no "
        "panic mode, so its share goes to the live worker. With the tail killed, the worker "
        "calls the stage once more, then answers its survivors 503, which the route retries "
        "on the functions (they run the whole model). A request that meets a killed spill "
        "host is retried on another (previous_hosts), and the functions cluster ejects the "
        "host after two local failures in a row, for 30 s at first. *A frozen worker* (SIGSTOP) resets nothing: "
        f"each attempt on it is cut at the pool's attempt bound ({pool_s} s: the batch "
        "wait, the tail call's bound and a second; the pool cluster's "
        "`max_stream_duration`) and retried on the functions, and the active health check "
        "(`/healthz`, three 2 s misses) takes it out of the rotation. *A frozen function "
        "host:* each attempt on it is cut at the route's per-try bound "
        f"({function_s} s: a cold start's bound of 30 s and twice the SLO, so a cold start "
        "shorter than that is never cut and a cold function is sent each request once) and "
        "retried on another host; Envoy counts each cut attempt as a local failure, and "
        "after two in a row a router ejects the host (each router counts its own; with five, "
        "as for the pool, the two routers ejected it at different times, and a client kept "
        "meeting it through the other: 170 answers in 300 s in one run). The host stays "
        "frozen for the bound and 10 s more. The frozen phases' longest waits are those "
        "bounds: with the worker, a request met it again until the health check took it "
        "out, so its p99 is the pool's bound; with the function host, the requests it held "
        "(at most one per client) waited the whole bound, and once it was ejected the rest "
        "were fast, so that phase's max is the bound and its p99 is not. The bound is a per-try timeout and not the "
        "functions cluster's `max_stream_duration` because Envoy's outlier detection does "
        "not count the latter's resets (checked by hand on this Envoy, 1.40: six attempts "
        "in a row cut by `max_stream_duration` ejected nothing; cut by a per-try timeout, "
        "the host was ejected). The route's timeout covers the pool's attempt and two "
        f"function attempts ({route_s} s). *Resumed* (SIGCONT), the frozen processes read "
        "the requests that had waited in their sockets and ran them, answering into "
        "connections Envoy had already closed: these are the requests the table counts as "
        "executed twice, once late by the frozen host (its answer reached nobody) and once "
        "by the host Envoy retried on. Retrying what may have run is what makes a hang cost "
        "no request; inference is idempotent, and no client got two answers. *The route "
        "swap* is a rename in Envoy's watched directory. *The router restart* is a drained "
        "one, as a router pod's stop runs it: router 0 is told to drain (`POST "
        "/drain_listeners?graceful&inboundonly` on its admin, Envoy run with "
        "`--drain-strategy immediate`; the run checks it then answers `Connection: close`, "
        "and it still accepts meanwhile), leaves the clients' endpoints one second later "
        "(the time a Service takes to drop a terminating pod), gets SIGTERM once it has no "
        "request in flight (a pod's Envoy, once its preStop has waited the route's timeout "
        "and 2 s), starts again on the same bootstrap and rejoins; the other router serves "
        "meanwhile. The pods' own restart is measured on kind (`bench/faults_kind.py`)."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-phase", type=int, default=400, help="answers after each event")
    ap.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    ap.add_argument("--out", type=Path, help="write the Markdown report here")
    a = ap.parse_args()
    if a.per_phase < 1 or a.clients < 1:
        print("error: --per-phase and --clients must be at least 1", file=sys.stderr)
        return 2
    model = open_model(BUNDLED, "onnx", threads=1)
    x, _ = artefact.held_out(model.root, model.manifest)
    _, w, cand = plan(SHAPE)
    ex, pred = decide(all_logits(model, x), cand.tau)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="serflow-faults-") as tmp:
        run = fault_run(Path(tmp), [raw_bytes(r) for r in x], a.per_phase, a.clients)
    failed = sum(a.code != 200 for a in run.answers)
    wrong = sum(
        a.code == 200
        and (a.body["exit"], a.body["class"]) != (int(ex[a.image]), int(pred[a.image]))
        for a in run.answers
    )
    twice = run.duplicates()
    late = run.late_duplicates()
    unlogged = run.unexecuted()
    e = run.envoy
    text = "\n".join(
        [
            "# Fault run: crashes, hangs, a route swap and a router restart under load",
            "",
            f"Command: `.venv/bin/python bench/faults.py --per-phase {a.per_phase} "
            f"--clients {a.clients} --out bench/results/faults.md`",
            "",
            f"Run {started} on {platform.machine()}, {os.cpu_count()} cores shared with other "
            f"work (load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at its end).",
            "",
            f"Plan: {SHAPE.label} (the digits example, tau {cand.tau:g}), children built by "
            "`serflow.k8s.builders`: two pool workers (the pool cluster's hosts), the fused "
            "tail function 3-K, four spill functions (the functions cluster's hosts, as pods "
            "would be), and two Envoy routers with the builders' bootstrap and route (pool "
            f"weight {POOL_WEIGHT}/1000), as the router Deployment's two replicas; only hosts, "
            f"ports and URLs are rewritten to 127.0.0.1. {a.clients} closed-loop clients send "
            f"the {len(x)} held-out digits images in turn, each request to the next router "
            "(a Service's endpoints), each with an `x-request-id` of its own. Each phase holds "
            "the answers that arrived after its event, until the next one.",
            "",
            run.table(),
            "",
            f"**Client errors: {failed}** of {len(run.answers)} requests; answers that differ "
            f"from the whole model's (exit, class): {wrong}. **Requests a server answered "
            f"more than once: {twice}**, of which {late} had every answer but one written "
            "to a connection Envoy had already closed (it reached nobody), and "
            f"{twice - late} had a second answer written while its connection still looked "
            "open to the server (Envoy had cut that attempt, or was cutting it, and keeps "
            "one answer); requests answered with no server line for their id: "
            f"{unlogged}. Each client request is one HTTP exchange and got one answer: no "
            "client was answered twice.",
            "",
            f"Envoy (both routers, the restarted one's counters read before it stopped): "
            f"{e.get('retries', 0):g} retries; pool attempts cut at the pool's bound "
            f"(`max_stream_duration`) {e.get('pool attempts cut (max_stream_duration)', 0):g}; "
            "function attempts cut at the per-try bound "
            f"{e.get('function attempts cut (per-try timeout)', 0):g}; hosts ejected by "
            f"outlier detection: {e.get('pool ejections', 0):g} in the pool, "
            f"{e.get('functions ejections', 0):g} in the functions.",
            "",
            *(
                [
                    "**The per-try bound was added by this run:** the builders' route has "
                    "none yet (the router's builder does not pass `attempt_timeout_s`), so "
                    "the bench set the renderer's `per_try_timeout` "
                    f"(`timeouts.function_attempt_timeout_s`: {function_attempt_timeout_s(w)} s) "
                    "on the route it serves; everything else is as built.",
                    "",
                ]
                if run.function_bound_added
                else []
            ),
            prose(pool_attempt_timeout_s(w), function_attempt_timeout_s(w), router_timeout_s(w)),
            "",
        ]
    )
    print(text)
    if a.out:
        a.out.write_text(text)
    return 1 if failed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())

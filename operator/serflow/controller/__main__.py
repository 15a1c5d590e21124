"""Run the operator: ``python -m serflow.controller [--namespace NS ...] [kopf run options]``.

Alone by default; with ``--peering NAME`` (the chart's way: two replicas), kopf's peering
object NAME elects one of them to work while the other waits (``handlers.startup``)."""

from __future__ import annotations

import os
import sys

from kopf.cli import main as kopf_main


def watched_namespaces(args: list[str]) -> list[str]:
    """The namespaces kopf is told to watch ([] : all of them, or patterns)."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a in ("-n", "--namespace") and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith("--namespace="):
            out.append(a.split("=", 1)[1])
    patterns = any(c in n for n in out for c in "*?[!")
    return [] if patterns or "-A" in args or "--all-namespaces" in args else out


def main() -> None:
    args = sys.argv[1:]
    if not any(a in ("-n", "--namespace", "-A", "--all-namespaces") for a in args):
        args = ["--all-namespaces", *args]
    os.environ["SERFLOW_NAMESPACES"] = ",".join(watched_namespaces(args))
    peered = os.environ.get("KOPF_RUN_PEERING") or any(
        a in ("-P", "--peering") or a.startswith("--peering=") for a in args
    )
    alone = [] if peered else ["--standalone"]
    sys.argv = ["kopf", "run", *alone, "-m", "serflow.controller.handlers", *args]
    kopf_main()


if __name__ == "__main__":
    main()

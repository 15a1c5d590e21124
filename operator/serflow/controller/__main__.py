"""Run the operator: ``python -m serflow.controller [--namespace NS ...] [kopf run options]``."""

from __future__ import annotations

import sys

from kopf.cli import main as kopf_main


def main() -> None:
    args = sys.argv[1:]
    if not any(a in ("-n", "--namespace", "-A", "--all-namespaces") for a in args):
        args = ["--all-namespaces", *args]
    sys.argv = ["kopf", "run", "--standalone", "-m", "serflow.controller.handlers", *args]
    kopf_main()


if __name__ == "__main__":
    main()

"""``serflow plan`` and ``serflow simulate``: what would it cost on my traffic?

Bad input is one line on stderr naming the file, field or line, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serflow.documents import read_workload
from serflow.domain import Workload
from serflow.errors import InputError
from serflow.policy.configurator import Candidate, PoolKind, best_at, configure
from serflow.ranking import rank
from serflow.report import (
    phase_text,
    plan_dict,
    plan_text,
    ranking_dict,
    ranking_text,
    result_dict,
    simulate_text,
)
from serflow.sim import (
    TICKED,
    PhaseRange,
    PolicyName,
    Routing,
    SimResult,
    online_policy,
    phase_range,
    replay,
)
from serflow.traces import read_trace, scale_counts, synthetic_trace

SYNTHETIC = "synthetic"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serflow", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="cost every setup and pick the cheapest feasible one")
    plan.add_argument(
        "-f", "--file", required=True, help="Profile or SerflowInference YAML/JSON, or preset:NAME"
    )
    plan.add_argument(
        "--rate", type=float, help="long-term rate in req/s (default: traffic.expectedRate)"
    )
    plan.add_argument(
        "--trace",
        help="also rank the cheapest candidates by replaying this trace (file of per-epoch "
        "counts, or 'synthetic') with --scaler",
    )
    plan.add_argument(
        "--scaler",
        choices=[PolicyName.EXPECTED_COST.value, PolicyName.SERFLOW.value],
        help="the online scaler the replay runs (default: the file's scaling.policy; "
        "serflow: the paper's rule)",
    )
    plan.add_argument("--epochs", type=int, help="replay only the first N epochs of --trace")
    plan.add_argument("--scale", type=float, default=1.0, help="multiply the trace's counts")
    plan.add_argument("--seed", type=int, default=0, help="seed of the synthetic trace")
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plan.add_argument("--plot", metavar="PNG", help="write cost versus residual load with T-CIP")

    sim = sub.add_parser(
        "simulate",
        help="replay a trace through FaaS-only, LIBRA, SERFLOW, the per-epoch bound and the same-rules limit",
    )
    sim.add_argument(
        "-f", "--file", required=True, help="Profile or SerflowInference YAML/JSON, or preset:NAME"
    )
    sim.add_argument(
        "--trace",
        required=True,
        help="requests per epoch, one integer a line (or CSV with a count column); "
        f"'{SYNTHETIC}' for the built-in bursty generator",
    )
    sim.add_argument(
        "--policy",
        default=",".join(p.value for p in PolicyName),
        help="comma-separated subset of " + ",".join(p.value for p in PolicyName),
    )
    sim.add_argument("--epochs", type=int, help="replay only the first N epochs")
    sim.add_argument("--scale", type=float, default=1.0, help="multiply every count by X")
    sim.add_argument("--tau", type=float, help="only this threshold (default: every allowed tau)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the synthetic trace")
    sim.add_argument(
        "--phases",
        action="store_true",
        help="also replay the policies that resize on ticks at each of the S scaling-tick phases and report "
        "the range of their cost (a running operator's ticks fall anywhere in the trace)",
    )
    sim.add_argument(
        "--routing",
        choices=[r.value for r in Routing],
        default=Routing.FILL.value,
        help="fill: each epoch's exact count fills the ready instances (the best routing "
        "can do); envoy: the operator's split, min(1, ready*mu/EWMA) of the traffic to "
        "the pool, the rest and what a worker sheds to the functions",
    )
    sim.add_argument(
        "--start-pool",
        type=int,
        default=0,
        metavar="N",
        help="instances ready when the trace begins, in every policy with a pool (default 0: "
        "the pool starts cold with the traffic; give the pool the operator had up, "
        "status.instances.ready, when traffic reached an object applied earlier)",
    )
    sim.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sim.add_argument("--plot", metavar="PNG", help="write a per-epoch timeline")

    syn = sub.add_parser("synth", help="write a synthetic bursty trace")
    syn.add_argument("--epochs", type=int, default=2000)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--base", type=float, default=150.0, help="mean requests per epoch")
    syn.add_argument("-o", "--output", help="file to write (default: stdout)")
    return p


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _check_plot(path: str | None) -> None:
    """Refuse a ``--plot`` path matplotlib cannot write, before any work."""
    if path is None:
        return
    if not path.lower().endswith(PLOT_SUFFIXES) or Path(path).is_dir():
        raise InputError("--plot", f"expected a file ending in {', '.join(PLOT_SUFFIXES)}, got {path!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("--plot", "needs matplotlib: pip install 'serflow[plot]'") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_plot(getattr(args, "plot", None))
        if args.command == "plan":
            return _plan(args)
        if args.command == "simulate":
            return _simulate(args)
        return _synth(args)
    except InputError as e:
        print(f"serflow: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"serflow: error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 2
    except OverflowError as e:  # e.g. a price or k near the float maximum
        print(f"serflow: error: a number in the input is too large to compute with ({e})", file=sys.stderr)
        return 2


def _plan(args: argparse.Namespace) -> int:
    w = read_workload(args.file)
    rate = _rate(w, args.rate)
    plan = configure(w, rate)
    if args.plot:
        shown = plan.chosen
        if shown is None or not shown.economics.has_pool:
            # The cheapest setup with a pool, so the figure has a T-CIP to show.
            pooled = configure(w, rate, [PoolKind.IAAS, PoolKind.HYBRID]).chosen
            shown = pooled or shown
        if shown is not None:
            from serflow.plot import plot_tcip

            plot_tcip(shown, args.plot)
    ranking = None
    if args.trace is not None:
        scaler = PolicyName(args.scaler) if args.scaler else online_policy(w.scaling.policy)
        ranking = rank(w, plan, _counts(args), scaler)
    if args.json:
        doc = plan_dict(plan)
        if ranking is not None:
            doc["ranking"] = ranking_dict(ranking)
        print(json.dumps(doc, indent=2))
    else:
        print(plan_text(plan))
        if ranking is not None:
            print(ranking_text(ranking, args.trace))
    return 0 if plan.chosen else 1


def _rate(w: Workload, rate: float | None) -> float:
    if rate is None:
        if w.expected_rate <= 0:
            raise InputError("--rate", "no rate: pass --rate or set traffic.expectedRate")
        return w.expected_rate
    if not rate >= 0 or rate == float("inf"):
        raise InputError("--rate", f"expected a finite rate >= 0, got {rate}")
    return rate


def _policies(text: str) -> list[PolicyName]:
    out = []
    for part in text.split(","):
        try:
            out.append(PolicyName(part.strip()))
        except ValueError:
            names = ", ".join(p.value for p in PolicyName)
            raise InputError(
                "--policy", f"unknown policy {part.strip()!r} (have: {names})"
            ) from None
    return out


def _counts(args: argparse.Namespace) -> list[int]:
    if args.epochs is not None and args.epochs < 1:
        raise InputError("--epochs", f"expected a positive integer, got {args.epochs}")
    if args.trace == SYNTHETIC:
        counts = synthetic_trace(epochs=args.epochs or 2000, seed=args.seed)
    else:
        counts = read_trace(args.trace)
    if args.epochs:
        counts = counts[: args.epochs]
    return scale_counts(counts, args.scale)


def _simulate(args: argparse.Namespace) -> int:
    w = read_workload(args.file)
    policies = _policies(args.policy)
    counts = _counts(args)
    rate = w.expected_rate or sum(counts) / len(counts) / w.objective.epoch
    plan = configure(w, rate)
    profiled = sorted(t.tau for t in w.profile.thresholds)
    if args.tau is not None and not any(math.isclose(args.tau, t) for t in profiled):
        have = ", ".join(f"{t:g}" for t in profiled)
        raise InputError("--tau", f"{args.tau:g} is not profiled (the profile has: {have})")
    if not 0 <= args.start_pool <= w.scaling.max_instances:
        raise InputError(
            "--start-pool",
            f"expected 0..{w.scaling.max_instances} instances (scaling.maxInstances), "
            f"got {args.start_pool}",
        )
    taus = [args.tau] if args.tau is not None else sorted({c.tau for c in plan.candidates})
    by_tau: dict[float, dict[PolicyName, SimResult]] = {}
    ranges: dict[tuple[float, PolicyName], PhaseRange] = {}
    runs = len(policies) + (w.scaling.interval_epochs * len(TICKED) if args.phases else 0)
    progress = _progress(len(counts) * len(taus) * runs)
    for tau in taus:
        picks = _setups(w, rate, tau)
        if not picks:
            continue
        results: dict[PolicyName, SimResult] = {}
        for pol in policies:
            cand = picks.get(pol)
            if cand is not None:
                routing = Routing(args.routing)
                start = args.start_pool
                results[pol] = replay(w, cand, counts, pol, progress, routing=routing, start_pool=start)
                if args.phases and pol in TICKED:
                    ranges[tau, pol] = phase_range(w, cand, counts, pol, progress, routing, start)
        by_tau[tau] = results
    progress(None)
    if not by_tau:
        why = sorted({c.reason for c in plan.candidates if c.tau in taus and c.reason})
        listed = ", ".join(f"{t:g}" for t in taus)
        raise InputError(
            args.file, f"no feasible setup at tau {listed}: " + ("; ".join(why) or "no candidate")
        )
    if args.plot:
        from serflow.plot import plot_timeline

        tau = min(by_tau, key=lambda t: _serflow_cost(by_tau[t]))
        shown = [by_tau[tau][p] for p in policies if p in by_tau[tau]]
        plot_timeline(shown, w.objective.epoch, w.profile.batch, args.plot)
    if args.json:
        out: dict[str, Any] = {
            "rate": rate,
            "routing": args.routing,
            "startPool": args.start_pool,
            "epochs": len(counts),
            "results": [
                result_dict(r, res, ranges.get((tau, r.policy)))
                for tau, res in by_tau.items()
                for r in res.values()
            ],
        }
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{len(counts)} epochs of {w.objective.epoch:g} s, {sum(counts)} requests, "
            f"planned at {rate:.4g} req/s, pricing {w.prices.mode.value}, routing {args.routing}"
            + (f", {args.start_pool} instance(s) ready at the start" if args.start_pool else "")
        )
        print(simulate_text(by_tau))
        if ranges:
            print(phase_text(ranges))
    return 0


def _serflow_cost(results: dict[PolicyName, SimResult]) -> float:
    r = results.get(PolicyName.SERFLOW) or next(iter(results.values()))
    return r.total_cost


def _setups(w: Workload, rate: float, tau: float) -> dict[PolicyName, Candidate]:
    """Each policy's setup at one tau: FaaS-only, LIBRA (IaaS), SERFLOW (any) with either
    scaler, its bound and its limit."""
    out: dict[PolicyName, Candidate] = {}
    for pol, pools in (
        (PolicyName.FAAS, [PoolKind.FAAS]),
        (PolicyName.LIBRA, [PoolKind.IAAS]),
        (PolicyName.SERFLOW, list(PoolKind)),
    ):
        c = best_at(configure(w, rate, pools), tau)
        if c is not None:
            out[pol] = c
    if PolicyName.SERFLOW in out:
        out[PolicyName.BOUND] = out[PolicyName.SERFLOW]
        out[PolicyName.EXPECTED_COST] = out[PolicyName.SERFLOW]
        out[PolicyName.LIMIT] = out[PolicyName.SERFLOW]
    return out


def _progress(total: int):  # type: ignore[no-untyped-def]
    """A progress bar on stderr for long replays at a terminal; silent otherwise."""
    done = [0]
    show = sys.stderr.isatty() and total > 50_000

    def tick(t: int | None) -> None:
        if not show:
            return
        if t is None:
            sys.stderr.write("\r" + " " * 40 + "\r")
            return
        done[0] += 1000
        sys.stderr.write(f"\rreplaying {min(100, 100 * done[0] // total):3d}%")
        sys.stderr.flush()

    return tick


def _synth(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise InputError("--epochs", f"expected a positive integer, got {args.epochs}")
    if not (math.isfinite(args.base) and args.base >= 0):
        raise InputError("--base", f"expected a finite number >= 0, got {args.base}")
    counts = synthetic_trace(epochs=args.epochs, seed=args.seed, base=args.base)
    text = "\n".join(map(str, counts)) + "\n"
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The offline configurator: SLO-aware, then tau-aware (DESIGN.md section 2).

Every (tau, pool, instance type, cut, granularity, function size) becomes a Candidate with
its worst-case batch time, its feasibility (and why not) and its cost rate at the
long-term rate. The plan is the cheapest feasible candidate; all candidates are kept so
users can see why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from serflow.domain import PricingMode, ThresholdProfile, Workload
from serflow.policy.cost import (
    PoolEconomics,
    batches_per_epoch,
    chained_tail_per_request,
    faas_per_request,
    fused_tail_per_request,
    pod_epochs_per_request,
)


class PoolKind(StrEnum):
    """The three pools of the paper."""

    FAAS = "faas"
    """{FaaS}: everything on functions."""
    IAAS = "iaas"
    """{IaaS, FaaS}: instances run the whole model, functions take the excess (LIBRA)."""
    HYBRID = "hybrid"
    """{Hybrid, FaaS}: instances run partitions 1..cut, functions the tail and the excess."""


class Granularity(StrEnum):
    """How a hybrid tail is deployed."""

    FUSED = "fused"
    """One Knative Service runs partitions cut+1..K."""
    CHAINED = "chained"
    """One Knative Service per partition, driven by the worker."""


_ORDER = {PoolKind.FAAS: 0, PoolKind.IAAS: 1, PoolKind.HYBRID: 2}


@dataclass(frozen=True)
class Setup:
    """Where each part of the model runs."""

    pool: PoolKind
    """Which of the three pools."""
    function: str
    """Function size for spill and tail."""
    instance: str = ""
    """Instance type of the pool ('' for FaaS)."""
    cut: int = 0
    """Hybrid: the pool runs partitions 1..cut (0 otherwise; IaaS runs all K)."""
    granularity: Granularity | None = None
    """Hybrid tail deployment (None otherwise)."""

    def describe(self) -> str:
        if self.pool is PoolKind.FAAS:
            return f"faas[{self.function}]"
        if self.pool is PoolKind.IAAS:
            return f"iaas[{self.instance}]+faas[{self.function}]"
        g = self.granularity.value if self.granularity else "?"
        return f"hybrid[{self.instance}, cut {self.cut}, {g}]+faas[{self.function}]"


@dataclass(frozen=True)
class Candidate:
    """One costed setup at one tau."""

    tau: float
    """Confidence threshold."""
    accuracy: float
    """Profiled accuracy at tau."""
    setup: Setup
    """Where things run."""
    worst_batch_s: float
    """Warm worst-case batch processing time (no request exits), seconds."""
    feasible: bool
    """Meets the SLO and the accuracy target."""
    reason: str
    """Why not, when infeasible ('' otherwise)."""
    economics: PoolEconomics
    """Scaling and costing numbers of the setup."""
    rate: float
    """The rate the cost was taken at, req/s."""
    cost_per_s: float
    """C(rate) in dollars per second (infinite when infeasible)."""
    meets_slo: bool = True
    """The worst-case batch fits the SLO (accuracy aside)."""

    @property
    def cost_per_hour(self) -> float:
        return self.cost_per_s * 3600.0


@dataclass(frozen=True)
class CostCrossing:
    """S-CIP: the tau at which two pools cost the same (linear interpolation)."""

    a: PoolKind
    b: PoolKind
    tau: float


@dataclass(frozen=True)
class Plan:
    """The configurator's answer."""

    chosen: Candidate | None
    """Cheapest feasible candidate; None when nothing is feasible."""
    candidates: tuple[Candidate, ...]
    """Every candidate, feasible or not."""
    rate: float
    """The long-term rate the plan was made for."""
    crossings: tuple[CostCrossing, ...]
    """S-CIPs between the pools' best costs across tau."""

    @property
    def reason(self) -> str:
        """Why no plan, when there is none."""
        if self.chosen is not None:
            return ""
        reasons = sorted({c.reason for c in self.candidates})
        return "no feasible setup: " + "; ".join(reasons)


def candidates(w: Workload, rate: float) -> list[Candidate]:
    """Cost every setup at every allowed tau."""
    prof, prices, obj = w.profile, w.prices, w.objective
    b, k, slo = prof.batch, prof.partitions, obj.slo_s
    mu = b / obj.epoch
    p_inv = prices.invocation_fee
    taus = obj.thresholds or tuple(t.tau for t in prof.thresholds)
    transfer = _transfers(w)
    lo, hi = w.scaling.min_instances, w.scaling.max_instances  # the steady cost's bounds
    out: list[Candidate] = []

    for tau in taus:
        th = prof.threshold(tau)
        s = th.survival
        acc_reason = (
            f"accuracy {th.accuracy:.3f} < target {obj.target_accuracy:.3f}"
            if th.accuracy + 1e-12 < obj.target_accuracy
            else ""
        )

        add = partial(_costed, out, th, acc_reason, slo, rate)

        for fsize in prices.functions:
            fprof = prof.config(fsize.name)
            uf = fprof.seconds_per_request
            p_f = prices.function_per_second(fsize.name)
            per_pod = prices.mode is PricingMode.PER_POD
            c_f = (
                pod_epochs_per_request(s, [0], p_f, obj.epoch, b)
                if per_pod
                else faas_per_request(uf, s, p_f, p_inv, b, fprof.request_overhead_s)
            )
            fcold = fprof.cold_start_s if obj.cold_start_in_feasibility else 0.0
            faas = PoolEconomics(mu, 0.0, c_f, 0.0, has_pool=False)
            add(Setup(PoolKind.FAAS, fsize.name), b * sum(uf) + fcold, faas)

            for inst in prices.instances:
                uh = prof.config(inst.name).seconds_per_request
                p = inst.per_second

                def pool(busy: float, worst: float, c_add: float) -> PoolEconomics:
                    n = batches_per_epoch(busy, worst, obj.epoch, slo) if obj.pack_batches else 1
                    return PoolEconomics(n * mu, p, c_f, c_add, True, n, lo, hi)  # noqa: B023

                iaas = pool(b * sum(uh), b * sum(uh), 0.0)
                add(Setup(PoolKind.IAAS, fsize.name, inst.name), b * sum(uh), iaas)
                for cut in range(1, k):
                    head = b * sum(uh[:cut])
                    for g in Granularity:
                        setup = Setup(PoolKind.HYBRID, fsize.name, inst.name, cut, g)
                        missing = _missing_cut(transfer, cut, k, g)
                        if missing:
                            add(
                                setup, math.inf, iaas, f"cut after partition {missing} not profiled"
                            )
                            continue
                        x = [t or 0.0 for t in transfer]
                        if g is Granularity.FUSED:
                            c_t = (
                                pod_epochs_per_request(s, [cut], p_f, obj.epoch, b)
                                if per_pod
                                else fused_tail_per_request(uf, s, x, cut, p_f, p_inv, b)
                            )
                            worst = head + b * (x[cut - 1] + sum(uf[cut:])) + fcold
                        else:
                            c_t = (
                                pod_epochs_per_request(s, range(cut, k), p_f, obj.epoch, b)
                                if per_pod
                                else chained_tail_per_request(uf, s, x, cut, p_f, p_inv, b)
                            )
                            worst = (
                                head
                                + b * sum(uf[j] + x[j - 1] for j in range(cut, k))
                                + fcold * (k - cut)
                            )
                        add(setup, worst, pool(head, worst, c_t))
    return out


def _costed(
    out: list[Candidate],
    th: ThresholdProfile,
    acc_reason: str,
    slo: float,
    rate: float,
    setup: Setup,
    worst: float,
    econ: PoolEconomics,
    why: str = "",
) -> None:
    """Append one candidate, deciding its feasibility (accuracy first, then the SLO)."""
    slo_ok = worst <= slo + 1e-9
    reason = why or acc_reason
    if not reason and not slo_ok:
        reason = f"worst-case batch {worst:.3g} s > SLO {slo:g} s"
    out.append(
        Candidate(
            tau=th.tau,
            accuracy=th.accuracy,
            setup=setup,
            worst_batch_s=worst,
            feasible=not reason,
            reason=reason,
            economics=econ,
            rate=rate,
            cost_per_s=econ.cost_rate(rate) if not reason else math.inf,
            meets_slo=slo_ok,
        )
    )


def configure(w: Workload, rate: float, pools: Iterable[PoolKind] | None = None) -> Plan:
    """The plan at a long-term rate, restricted to the pools the objective allows and,
    optionally, to ``pools`` (e.g. LIBRA: IaaS)."""
    allowed = set(pools) if pools is not None else set(PoolKind)
    allowed &= {PoolKind(p) for p in w.objective.pools}
    cands = [c for c in candidates(w, rate) if c.setup.pool in allowed]
    feasible = [c for c in cands if c.feasible]
    chosen = min(feasible, key=_rank) if feasible else None
    return Plan(chosen, tuple(cands), rate, cost_crossings(cands))


def best_per_pool(cands: Iterable[Candidate], few: int) -> tuple[Candidate, ...]:
    """Per pool kind, its ``few`` best feasible candidates in the configurator's order
    or, where none is feasible, its first candidate (it says why): what a bounded
    report of a plan keeps of candidates that grow as the product of the spec's lists."""
    by_pool: dict[PoolKind, list[Candidate]] = {}
    for c in cands:
        by_pool.setdefault(c.setup.pool, []).append(c)
    kept: list[Candidate] = []
    for pool in sorted(by_pool, key=lambda p: _ORDER[p]):
        feasible = sorted((c for c in by_pool[pool] if c.feasible), key=_rank)
        kept += feasible[:few] if feasible else by_pool[pool][:1]
    return tuple(kept)


def _rank(c: Candidate) -> tuple[float, int, float, int, str]:
    # Cheapest first; on a tie prefer fewer moving parts, then the higher tau (accuracy).
    g = 0 if c.setup.granularity in (None, Granularity.FUSED) else 1
    return (
        round(c.cost_per_s, 15),
        _ORDER[c.setup.pool] * 2 + g,
        -c.tau,
        c.setup.cut,
        c.setup.describe(),
    )


def cost_crossings(cands: Iterable[Candidate]) -> tuple[CostCrossing, ...]:
    """S-CIP: where the best costs of two pools cross between consecutive profiled taus.

    Accuracy is ignored here (S-CIP is about sparsity); the SLO is not.
    """
    best: dict[PoolKind, dict[float, float]] = {}
    for c in cands:
        if c.meets_slo:
            d = best.setdefault(c.setup.pool, {})
            d[c.tau] = min(d.get(c.tau, math.inf), c.economics.cost_rate(c.rate))
    out: list[CostCrossing] = []
    kinds = sorted(best, key=lambda p: _ORDER[p])
    for i, a in enumerate(kinds):
        for bk in kinds[i + 1 :]:
            taus = sorted(set(best[a]) & set(best[bk]))
            diff = [best[a][t] - best[bk][t] for t in taus]
            for j in range(len(taus) - 1):
                d0, d1 = diff[j], diff[j + 1]
                if d0 * d1 < 0:
                    t0, t1 = taus[j], taus[j + 1]
                    out.append(CostCrossing(a, bk, t0 + (t1 - t0) * d0 / (d0 - d1)))
            out.extend(CostCrossing(a, bk, t) for t, d in zip(taus, diff, strict=True) if d == 0)
    return tuple(out)


def instance_cold_epochs(w: Workload, c: Candidate) -> int:
    """Whole epochs a new pool instance is billed before it serves (0 without a pool)."""
    if c.setup.pool is PoolKind.FAAS:
        return 0
    return math.ceil(w.profile.config(c.setup.instance).cold_start_s / w.objective.epoch - 1e-9)


def best_at(plan: Plan, tau: float) -> Candidate | None:
    """The cheapest feasible candidate at one tau."""
    at = [c for c in plan.candidates if c.feasible and math.isclose(c.tau, tau)]
    return min(at, key=_rank) if at else None


def _transfers(w: Workload) -> list[float | None]:
    """x_i for i = 1..K-1 (None where the cut was not profiled)."""
    k = w.profile.partitions
    out: list[float | None] = [None] * (k - 1)
    for c in w.profile.cuts:
        out[c.after - 1] = c.transfer_s
    return out


def _missing_cut(transfer: list[float | None], cut: int, k: int, g: Granularity) -> int:
    needed = [cut] if g is Granularity.FUSED else list(range(cut, k))
    for i in needed:
        if transfer[i - 1] is None:
            return i
    return 0


__all__ = [
    "Candidate",
    "CostCrossing",
    "Granularity",
    "Plan",
    "PoolKind",
    "Setup",
    "best_at",
    "candidates",
    "configure",
    "cost_crossings",
]

"""Trace replay: per-epoch counts through a policy, with cold starts, billing and SLO accounting.

Per epoch t (DESIGN.md section 2):
1. the balancer splits the epoch's n_t requests between the ready instances and FaaS;
2. instances are billed D seconds each while alive (from launch, cold start included);
   functions per use (execution seconds x price + invocations) or per pod (alive pods);
3. at the end of the epoch the monitor observes n_t / D and, every S epochs, the scaler
   resizes the pool; new instances serve only after their cold start.

Requests are counted, not simulated one by one, so 45,000 epochs take well under a
second. Function instances stay warm for ``keep_alive_s`` after use; an invocation above
the recent peak is a cold start. A request counts as an SLO miss when its batch's
processing up to its exit, plus any function cold start on its path, exceeds the SLO
(its wait for the batch is at most D; the client-side bound is D + SLO).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from serflow.domain import PricingMode, ScalingPolicy, Workload
from serflow.policy.balancer import Allocation, balance, pool_share
from serflow.policy.configurator import Candidate, Granularity, PoolKind, instance_cold_epochs
from serflow.policy.cost import FunctionStage, model_stage, tail_stages, within
from serflow.policy.scaler import ScalerState, ScalingContext, step
from serflow.policy.scalers import SCALERS
from serflow.schedule import EpochCosts, cheapest_schedule, ticks


class Routing(StrEnum):
    """How an epoch's requests reach the pool in the replay."""

    FILL = "fill"
    """Each epoch's exact count fills the ready instances, batch by batch, and only the
    rest spills (DESIGN.md section 2): what the routing could do at best."""
    ENVOY = "envoy"
    """The operator's rule: Envoy sends min(1, ready * mu / EWMA) of the traffic to the
    pool (ready counts only instances that stay), a worker admits at most its budget per
    epoch, and everything else, shed requests included, goes to the functions."""


class PolicyName(StrEnum):
    """The policies the simulator replays, all at the same tau."""

    FAAS = "faas"
    """Everything on functions."""
    LIBRA = "libra"
    """IaaS instances sized for the whole model, FaaS for the excess (the baseline)."""
    SERFLOW = "serflow"
    """The configurator's pool (FaaS, IaaS or hybrid) with the paper's T-CIP scaling rule."""
    EXPECTED_COST = "expected-cost"
    """The configurator's pool with the expected-cost scaler
    (``serflow.policy.scalers.expected_cost``)."""
    BOUND = "bound"
    """Clairvoyant lower bound: SERFLOW's setup, each epoch's best instance count, no cold start."""
    LIMIT = "limit"
    """Same-rules limit: SERFLOW's setup, knowing every count but obeying the online rules
    (one size per scaling window, the same cold start and billing): the cheapest schedule."""


@dataclass(frozen=True)
class Series:
    """Per-epoch values, for plots."""

    requests: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    alive: list[int] = field(default_factory=list)
    pool: list[int] = field(default_factory=list)
    faas: list[int] = field(default_factory=list)
    share: list[float | None] = field(default_factory=list)
    """The pool's route share (Routing.ENVOY); None where the replay fills the pool."""


@dataclass(frozen=True)
class SimResult:
    """The bill and the service of one replay."""

    policy: PolicyName
    """Which policy."""
    tau: float
    """Threshold used."""
    setup: str
    """Human-readable setup."""
    epochs: int
    """Epochs replayed."""
    requests: int
    """Requests in the trace."""
    pool_requests: int
    """Requests whose head ran on the pool."""
    faas_requests: int
    """Requests served wholly by functions (spill)."""
    instance_cost: float
    """Dollars for instances."""
    function_cost: float
    """Dollars for functions (tail and spill)."""
    instance_seconds: float
    """Instance-seconds billed, cold starts included."""
    function_seconds: float
    """Function seconds billed: execution (per-use) or pod life (per-pod)."""
    invocations: float
    """Function invocations (expected count for tails: a batch with no survivor calls none)."""
    slo_misses: float
    """Requests whose latency exceeded D + SLO (expected count)."""
    series: Series
    """Per-epoch detail."""

    @property
    def total_cost(self) -> float:
        return self.instance_cost + self.function_cost

    @property
    def cost_per_million(self) -> float:
        return self.total_cost / self.requests * 1e6 if self.requests else 0.0

    @property
    def slo_attainment(self) -> float:
        return 1.0 - self.slo_misses / self.requests if self.requests else 1.0


class _FunctionRole:
    """One Knative Service (spill, fused tail, or one stage): warm instances and billing."""

    def __init__(self, window: int | None) -> None:
        self.window = window  # None: always warm, nothing kept alive (the clairvoyant bound)
        self.peaks: deque[tuple[int, float]] = deque()  # (epoch, invocations), decreasing

    def use(self, epoch: int, inv: float) -> tuple[float, float]:
        """Invocations this epoch -> (cold invocations, instances alive)."""
        if self.window is None:
            return 0.0, inv
        while self.peaks and self.peaks[0][0] < epoch - self.window:
            self.peaks.popleft()
        warm = self.peaks[0][1] if self.peaks else 0.0
        while self.peaks and self.peaks[-1][1] <= inv:
            self.peaks.pop()
        self.peaks.append((epoch, inv))
        return max(0.0, inv - warm), max(warm, inv)


class _Replay:
    """The mechanics shared by every policy: serving one epoch and billing it."""

    def __init__(self, w: Workload, cand: Candidate, *, warm_functions: bool) -> None:
        prof, prices, obj = w.profile, w.prices, w.objective
        s = cand.setup
        th = prof.threshold(cand.tau)
        self.b = prof.batch
        self.d = obj.epoch
        self.slo = obj.slo_s
        self.sv = th.survival
        self.k = prof.partitions
        self.per_pod = prices.mode is PricingMode.PER_POD
        self.p_f = prices.function_per_second(s.function)
        self.p_inv = prices.invocation_fee
        fprof = prof.config(s.function)
        self.uf = fprof.seconds_per_request
        self.f_cold = 0.0 if warm_functions else fprof.cold_start_s
        self.inst_price = cand.economics.instance_price
        self.per_instance = cand.economics.batches_per_instance
        self.inst_cold_epochs = 0
        window = None if warm_functions else math.ceil(prices.keep_alive_s / self.d)
        self.roles: dict[str, _FunctionRole] = {"spill": _FunctionRole(window)}
        # Whole model on a function: prefix[i] = sum_{j<=i} s_j u_j (seconds per request).
        self.faas_prefix = _prefix(self.sv, self.uf)
        # The function side is the plan's own model (serflow.policy.cost): a spilled
        # request bills the whole model's stage and the server's own overhead.
        self.spill = model_stage(self.uf, self.sv)
        self.faas_exec = self.spill.seconds + fprof.request_overhead_s
        self.cut = 0
        self.head_s = 0.0  # instance seconds per request of the head (hybrid)
        self.stages: list[tuple[str, FunctionStage]] = []  # the tail's, with their roles
        if s.pool is not PoolKind.FAAS:
            inst = prof.config(s.instance)
            self.inst_cold_epochs = 0 if warm_functions else instance_cold_epochs(w, cand)
            uh = inst.seconds_per_request
            x = [0.0] * (self.k - 1)
            for c in prof.cuts:
                x[c.after - 1] = c.transfer_s
            if s.pool is PoolKind.IAAS:
                self.pool_prefix = _prefix(self.sv, uh)
            else:
                self.cut = s.cut
                self.head_s = sum(uh[: s.cut])
                u_mix = list(uh[: s.cut]) + [self.uf[j] + x[j - 1] for j in range(s.cut, self.k)]
                self.pool_prefix = _prefix(self.sv, u_mix)
                chained = s.granularity is Granularity.CHAINED
                self.stages = [
                    (f"stage-{st.first + 1}" if chained else "tail", st)
                    for st in tail_stages(self.uf, self.sv, x, s.cut, chained)
                ]
                for role, _ in self.stages:
                    self.roles[role] = _FunctionRole(window)
        self.full_hit = [st.calls_per_batch(self.b) for _, st in self.stages]

    def serve(
        self, epoch: int, count: int, ready: int, share: float | None = None
    ) -> tuple[int, int, float, float, float, float]:
        """One epoch -> (pool requests, faas requests, fn cost, fn seconds, invocations, misses).

        ``share``: the pool's share of the route (Routing.ENVOY); None fills the pool from
        the epoch's exact count (Routing.FILL)."""
        offered = count if share is None else round(count * share)
        # A worker admits B requests per batch it may serve in an epoch; Envoy retries the
        # rest on the functions.
        admitted = min(offered, ready * self.per_instance * self.b)
        alloc = balance(admitted, ready, self.b, self.per_instance) if ready else None
        return self.serve_allocation(epoch, count, alloc)

    def serve_allocation(
        self, epoch: int, count: int, alloc: Allocation | None
    ) -> tuple[int, int, float, float, float, float]:
        """Like ``serve``, with the pool's share given (None: nothing on the pool)."""
        pooled = alloc.pool_requests if alloc else 0
        spill = count - pooled
        fn_cost = fn_sec = inv_total = misses = 0.0
        # Spill: whole model on functions, in batches of B.
        if spill:
            full, part = divmod(spill, self.b)
            inv = float(full + (1 if part else 0))
            cold, alive = self.roles["spill"].use(epoch, inv)
            exec_s = spill * self.faas_exec
            fn_cost, fn_sec = self._bill(exec_s, inv, alive)
            inv_total += inv
            if cold and self.f_cold:
                frac = cold / inv
                misses += frac * (
                    full * self._late(self.faas_prefix, self.b, self.f_cold)
                    + self._late(self.faas_prefix, part, self.f_cold)
                )
        else:
            _, alive = self.roles["spill"].use(epoch, 0.0)
            fn_cost, fn_sec = self._bill(0.0, 0.0, alive)  # idle pods still bill per-pod
        # Tail of the pool's batches (hybrid only).
        if self.stages:
            assert alloc is not None or pooled == 0
            full = alloc.full_batches if alloc else 0
            part = alloc.partial if alloc else 0
            worst_cold = 0.0
            for (role, st), hit in zip(self.stages, self.full_hit, strict=True):
                inv = full * hit + (st.calls_per_batch(part) if part else 0.0)
                cold, alive = self.roles[role].use(epoch, inv)
                c, sec = self._bill(pooled * st.seconds, inv, alive)
                fn_cost += c
                fn_sec += sec
                inv_total += inv
                if inv > 0:
                    worst_cold = max(worst_cold, cold / inv)
            if worst_cold and self.f_cold:
                misses += worst_cold * (full * self._late_tail(self.b) + self._late_tail(part))
        return pooled, spill, fn_cost, fn_sec, inv_total, misses

    def _bill(self, exec_s: float, inv: float, alive: float) -> tuple[float, float]:
        if self.per_pod:
            sec = alive * self.d
            return sec * self.p_f, sec
        return exec_s * self.p_f + inv * self.p_inv, exec_s

    def _late(self, prefix: list[float], m: int, delay: float) -> float:
        """Requests of a batch of m that leave after SLO when the batch starts ``delay`` late."""
        if m <= 0:
            return 0.0
        i = bisect_right(prefix, (self.slo - delay) / m)
        return m * self.sv[i] if i < self.k else 0.0

    def _late_tail(self, m: int) -> float:
        """Like _late for a pool batch whose tail stages all cold-start."""
        if m <= 0:
            return 0.0
        for i in range(self.cut, self.k):
            stages = 1 if len(self.stages) == 1 else i - self.cut + 1
            # A packed batch may start behind the others of its instance: take the last.
            shift = (self.per_instance - 1) * m * self.head_s
            if shift + m * self.pool_prefix[i] + stages * self.f_cold > self.slo:
                return m * self.sv[i]
        return 0.0


def _prefix(survival: Sequence[float], u: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for s, x in zip(survival, u, strict=True):
        acc += s * x
        out.append(acc)
    return out


@dataclass
class _Totals:
    """Running sums of one replay, and the per-epoch series."""

    series: Series = field(default_factory=Series)
    pool: int = 0
    faas: int = 0
    fn_cost: float = 0.0
    fn_sec: float = 0.0
    inv: float = 0.0
    misses: float = 0.0
    inst_sec: float = 0.0

    def add(self, n: int, ready: int, alive: int, served: tuple[int, int, float, float, float, float],
            inst_sec: float, share: float | None = None) -> None:  # fmt: skip
        pooled, spill, c, sec, i, miss = served
        self.pool += pooled
        self.faas += spill
        self.fn_cost += c
        self.fn_sec += sec
        self.inv += i
        self.misses += miss
        self.inst_sec += inst_sec
        self.series.requests.append(n)
        self.series.ready.append(ready)
        self.series.alive.append(alive)
        self.series.pool.append(pooled)
        self.series.faas.append(spill)
        self.series.share.append(share)

    def result(
        self, policy: PolicyName, cand: Candidate, counts: Sequence[int], inst_price: float
    ) -> SimResult:
        return SimResult(
            policy=policy,
            tau=cand.tau,
            setup=cand.setup.describe(),
            epochs=len(counts),
            requests=sum(counts),
            pool_requests=self.pool,
            faas_requests=self.faas,
            instance_cost=self.inst_sec * inst_price,
            function_cost=self.fn_cost,
            instance_seconds=self.inst_sec,
            function_seconds=self.fn_sec,
            invocations=self.inv,
            slo_misses=self.misses,
            series=self.series,
        )


def replay(
    w: Workload,
    cand: Candidate,
    counts: Sequence[int],
    policy: PolicyName,
    progress: Callable[[int], None] | None = None,
    phase: int = 0,
    routing: Routing = Routing.FILL,
    start_pool: int = 0,
) -> SimResult:
    """Replay per-epoch request counts through one policy and setup.

    ``phase`` places the scaling ticks: the pool is sized at epoch 0, then resized at the
    epochs t > 0 with t = phase (mod S).  A running operator counts its epochs from when
    it started, not from a trace's first line, so every phase in [0, S) is as likely.
    ``routing`` says how each epoch's requests reach the pool (the limits and the bound
    always fill: they are what the routing could do at best).
    ``start_pool`` instances are ready (and billed) from the first epoch, as when the
    traffic reaches an object whose planned pool came up before it; FaaS-only and the
    per-epoch bound have no pool to start with.
    """
    if not 0 <= phase < w.scaling.interval_epochs:
        raise ValueError(f"phase must be in [0, {w.scaling.interval_epochs}), got {phase}")
    if start_pool < 0:
        raise ValueError(f"the starting pool must not be negative, got {start_pool}")
    if policy is PolicyName.BOUND:
        return _replay_bound(w, cand, counts)
    if cand.setup.pool is PoolKind.FAAS or policy is PolicyName.FAAS:
        start_pool = 0
    if policy is PolicyName.LIMIT:
        return _replay_limit(w, cand, counts, phase, progress, start_pool)
    econ, scaling, d = cand.economics, w.scaling, w.objective.epoch
    shift = -phase % scaling.interval_epochs  # added to the tick clock after epoch 0
    scaler = SCALERS[SCALED_BY[policy]]
    cold = instance_cold_epochs(w, cand)
    state = ScalerState(desired=start_pool)

    def resize(t: int, n: int) -> int | None:
        nonlocal state
        decision, state = step(scaler, ScalingContext(n / d, state, econ, scaling, cold))
        if t == 0:
            state = ScalerState(state.estimate, state.epoch + shift, state.desired, state.recent)
        return decision.desired if decision.rescaled else None

    def share(ready: int) -> float:
        # As the operator's epoch: instances being scaled in take no new traffic.
        return pool_share(min(ready, state.desired), econ.mu, state.estimate.ewma)

    routed = share if routing is Routing.ENVOY else None
    return _replay_sizes(w, cand, counts, policy, resize, progress, routed, start_pool)


def _replay_sizes(
    w: Workload,
    cand: Candidate,
    counts: Sequence[int],
    policy: PolicyName,
    resize: Callable[[int, int], int | None],
    progress: Callable[[int], None] | None,
    share: Callable[[int], float] | None = None,
    start_pool: int = 0,
) -> SimResult:
    """The online mechanics: after each epoch, ``resize`` may set a new pool size;
    ``share`` (Routing.ENVOY) gives the pool's route share from the ready instances;
    ``start_pool`` instances are ready from epoch 0."""
    r = _Replay(w, cand, warm_functions=False)
    launched: list[int] = [0] * start_pool  # ready epoch of each alive instance, ascending
    tot = _Totals()
    for t, n in enumerate(counts):
        ready = bisect_right(launched, t)
        routed = share(ready) if share else None
        served = r.serve(t, n, ready, routed)
        tot.add(n, ready, len(launched), served, len(launched) * r.d, routed)
        desired = resize(t, n)
        if desired is not None:
            alive = len(launched)
            if desired > alive:
                launched.extend([t + 1 + r.inst_cold_epochs] * (desired - alive))
            elif desired < alive:
                del launched[desired:]  # the newest (least ready) go first
        if progress and t % 1000 == 0:
            progress(t)
    return tot.result(policy, cand, counts, r.inst_price)


def _replay_limit(
    w: Workload,
    cand: Candidate,
    counts: Sequence[int],
    phase: int,
    progress: Callable[[int], None] | None,
    start_pool: int = 0,
) -> SimResult:
    """The same-rules limit: the cheapest schedule (``serflow.schedule``), then replayed
    from the same starting pool as the policies it bounds.

    The schedule is found with each epoch's function bill as a function of the ready
    instances. Per use, that bill does not depend on which functions are warm, so the
    replay's cost equals the schedule's and the limit is exact. Per pod, idle function
    pods kept alive depend on the past; the schedule is chosen without them, and the
    replay then bills them as for every other policy.
    """
    s = w.scaling
    at = ticks(len(counts), s.interval_epochs, phase)
    if cand.setup.pool is PoolKind.FAAS or not counts:
        sizes = [0] * len(at)
    else:
        costs = epoch_costs(w, cand, counts)
        b = w.profile.batch
        # More instances than every batch of the busiest epoch only add cost.
        slots = max(math.ceil(math.ceil(n / b) / costs.per_instance) for n in counts)
        top = within(slots, s.min_instances, s.max_instances)
        r = _Replay(w, cand, warm_functions=False)
        sizes = cheapest_schedule(
            costs,
            at,
            r.inst_cold_epochs,
            r.d * r.inst_price,
            range(s.min_instances, top + 1),
            start_pool,
        ).sizes
    return replay_schedule(
        w, cand, counts, dict(zip(at, sizes, strict=True)), progress=progress, start_pool=start_pool
    )


def replay_schedule(
    w: Workload,
    cand: Candidate,
    counts: Sequence[int],
    sizes: Mapping[int, int],
    policy: PolicyName = PolicyName.LIMIT,
    progress: Callable[[int], None] | None = None,
    start_pool: int = 0,
) -> SimResult:
    """Replay a given schedule: after epoch t, the pool is resized to ``sizes[t]`` if present."""
    return _replay_sizes(
        w, cand, counts, policy, lambda t, _: sizes.get(t), progress, start_pool=start_pool
    )


def epoch_costs(w: Workload, cand: Candidate, counts: Sequence[int]) -> EpochCosts:
    """Each epoch's function bill with nothing, the full batches, or everything on the pool."""
    r = _Replay(w, cand, warm_functions=True)
    b = r.b
    none, full, whole, batches = [], [], [], []
    for t, n in enumerate(counts):
        q, rest = divmod(n, b)
        g0 = r.serve_allocation(t, n, None)[2]
        gq = r.serve_allocation(t, n, Allocation(q, 0, n - q * b, b))[2] if q else g0
        ga = r.serve_allocation(t, n, Allocation(q, rest, 0, b))[2] if rest else gq
        none.append(g0)
        full.append(gq)
        whole.append(ga)
        batches.append(q)
    return EpochCosts(none, full, whole, batches, r.per_instance)


SCALED_BY: Mapping[PolicyName, ScalingPolicy] = MappingProxyType(
    {
        PolicyName.FAAS: ScalingPolicy.PAPER,  # its FaaS setup has no pool to size
        PolicyName.LIBRA: ScalingPolicy.PAPER,
        PolicyName.SERFLOW: ScalingPolicy.PAPER,
        PolicyName.EXPECTED_COST: ScalingPolicy.EXPECTED_COST,
    }
)
"""The scaler each online policy replays with (the bound and the limit have none)."""

ONLINE: Mapping[ScalingPolicy, PolicyName] = MappingProxyType(
    {ScalingPolicy.PAPER: PolicyName.SERFLOW, ScalingPolicy.EXPECTED_COST: PolicyName.EXPECTED_COST}
)
"""The simulator's policy that runs the configurator's setup with each scaler."""


def online_policy(scaler: ScalingPolicy) -> PolicyName:
    """The simulator's policy that runs the configurator's setup with this scaler."""
    return ONLINE[scaler]


TICKED = (PolicyName.LIBRA, PolicyName.SERFLOW, PolicyName.EXPECTED_COST, PolicyName.LIMIT)
"""The policies that resize a pool on scaling ticks, so whose cost depends on the phase."""


@dataclass(frozen=True)
class PhaseRange:
    """One policy's total cost over every scaling-tick phase (see ``replay``)."""

    cheapest: float
    """The lowest total cost, $."""
    dearest: float
    """The highest total cost, $."""
    phases: int
    """How many phases were replayed: S."""


def phase_range(
    w: Workload,
    cand: Candidate,
    counts: Sequence[int],
    policy: PolicyName,
    progress: Callable[[int], None] | None = None,
    routing: Routing = Routing.FILL,
    start_pool: int = 0,
) -> PhaseRange:
    """Replay at each phase in [0, S): how much the operator's tick phase alone moves the bill."""
    costs = [
        replay(w, cand, counts, policy, progress, phase, routing, start_pool).total_cost
        for phase in range(w.scaling.interval_epochs)
    ]
    return PhaseRange(min(costs), max(costs), len(costs))


def _replay_bound(w: Workload, cand: Candidate, counts: Sequence[int]) -> SimResult:
    """Clairvoyant: each epoch the cheapest of 0, q or q+1 instances (q = n // B), all warm.

    Cost is linear in the number of full batches given to instances, so the optimum is at
    an end: no instance, enough for the full batches, or one more for the partial batch.
    """
    r = _Replay(w, cand, warm_functions=True)
    has_pool = cand.setup.pool is not PoolKind.FAAS
    tot = _Totals()
    for t, n in enumerate(counts):
        q = n // r.b // r.per_instance
        options = (0, q, q + 1) if has_pool else (0,)
        best: tuple[float, int, tuple[int, int, float, float, float, float]] | None = None
        for k in options:
            out = r.serve(t, n, k)
            total = out[2] + k * r.d * r.inst_price
            if best is None or total < best[0] - 1e-15:
                best = (total, k, out)
        assert best is not None
        _, k, out = best
        tot.add(n, k, k, (*out[:5], 0.0), k * r.d)  # all warm: no miss
    return tot.result(PolicyName.BOUND, cand, counts, r.inst_price)

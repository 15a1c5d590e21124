"""The domain types: what was measured, what it costs, and what a user asks for.

Plain frozen dataclasses and str enums, with no parsing, no validation, no I/O and
nothing but the standard library, so that the pure maths (``serflow.policy``) can use
them without reaching the parsers and their schemas. The parsers that build them from
documents are ``serflow.profile`` (profile and price sheet) and ``serflow.spec`` (the
workload); both re-export these names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

# ---------------------------------------------------------------------------------------
# The profile and the price sheet (DESIGN.md sections 2 and 4)


class ConfigKind(StrEnum):
    """Where a resource config runs."""

    INSTANCE = "instance"
    FUNCTION = "function"


class PricingMode(StrEnum):
    """How functions are billed (DESIGN.md section 2)."""

    PER_USE = "per-use"
    """Cloud functions: execution seconds x GB, plus a fee per invocation."""
    PER_POD = "per-pod"
    """Self-hosted Knative: a function pod costs its size while alive, idle time included."""


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a model; the operator refuses a profile that does not match its spec."""

    stages: int
    """K: the model's stages (partitions), one exit after each; the last is the final
    classifier."""
    architecture: str = ""
    """Network family, e.g. ``vgg16_bn`` ('' when not described)."""
    exits: tuple[int, ...] = ()
    """Where the internal classifiers sit, in the family's own numbering (VGG: the conv
    blocks they follow); () when not described. A description: K alone counts."""
    width: float = 1.0
    """Channel width multiplier (1.0 is the full network)."""
    num_classes: int = 10
    """Classes of the final and internal classifiers."""
    checkpoint_sha256: str = ""
    """SHA-256 of the checkpoint file that was profiled ('' when not from a checkpoint)."""
    artefact_digest: str = ""
    """Digest of the profiled artefact ('' when not recorded): what the model is."""

    @property
    def partitions(self) -> int:
        """K: one partition per stage."""
        return self.stages


@dataclass(frozen=True)
class ResourceProfile:
    """Measurements of one resource config: a node-pool instance type or a function size."""

    name: str
    """Named as in the price sheet and the node labels (e.g. ``c6i.xlarge``)."""
    kind: ConfigKind
    """Instance (pool node) or function."""
    vcpu: float
    """CPUs the measurement was taken with."""
    memory_mib: float
    """Memory of the config in MiB (for functions, the billed size)."""
    cold_start_s: float
    """Seconds from launch until it serves (VM boot plus pod start, or function cold start)."""
    seconds_per_request: tuple[float, ...]
    """u_i: mean seconds per request of partition i when run in batches of B (one per partition)."""
    request_overhead_s: float = 0.0
    """Functions: seconds a lone image is billed beyond its partitions' batched compute
    (HTTP, decoding, the answer, batch 1 instead of B); added to each spilled request."""

    @property
    def whole_model_s(self) -> float:
        """Seconds per request through every partition (no request exits)."""
        return sum(self.seconds_per_request)


@dataclass(frozen=True)
class CutProfile:
    """The hidden tensor that crosses a cut after partition ``after``."""

    after: int
    """The cut sits after partition i (1 <= i < K)."""
    activation_bytes: float
    """Compressed bytes per request sent to the tail."""
    transfer_s: float
    """x_cut: function-side seconds per request to receive and decompress the activation."""


@dataclass(frozen=True)
class ThresholdProfile:
    """Where requests leave at one confidence threshold, measured on a validation set."""

    tau: float
    """Confidence threshold in (0, 1]: a request leaves at the first exit whose max softmax >= tau."""
    accuracy: float
    """Accuracy in [0, 1] of the early-exit model at this tau."""
    exit_shares: tuple[float, ...]
    """e_i: share of all requests that leave at exit i (sums to 1)."""

    @property
    def survival(self) -> tuple[float, ...]:
        """s_i = e_i + ... + e_K: share of requests entering partition i (s_1 = 1)."""
        out, acc = [], 0.0
        for e in reversed(self.exit_shares):
            acc += e
            out.append(acc)
        out.reverse()
        return (1.0, *out[1:]) if out else ()


@dataclass(frozen=True)
class Profile:
    """Everything measured about one model."""

    fingerprint: Fingerprint
    """Which model was measured."""
    batch: int
    """B: the batch size the runtimes were measured with."""
    configs: tuple[ResourceProfile, ...]
    """One per instance type or function size."""
    cuts: tuple[CutProfile, ...]
    """One per cut position 1..K-1."""
    thresholds: tuple[ThresholdProfile, ...]
    """One per profiled tau, ascending."""

    @property
    def partitions(self) -> int:
        return self.fingerprint.partitions

    def config(self, name: str) -> ResourceProfile:
        for c in self.configs:
            if c.name == name:
                return c
        raise KeyError(name)

    def cut(self, after: int) -> CutProfile:
        for c in self.cuts:
            if c.after == after:
                return c
        raise KeyError(after)

    def threshold(self, tau: float) -> ThresholdProfile:
        for t in self.thresholds:
            if math.isclose(t.tau, tau, abs_tol=1e-9):
                return t
        raise KeyError(tau)


@dataclass(frozen=True)
class InstancePrice:
    """One node-pool instance type."""

    name: str
    """Instance type, as in the profile and the node label."""
    per_hour: float
    """Dollars per hour for one instance."""
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Labels that select this type's nodes (default: the well-known instance-type label).
    Compared, not hashed (a dict), so that a workload can key a cache."""

    @property
    def per_second(self) -> float:
        return self.per_hour / 3600.0


@dataclass(frozen=True)
class FunctionSize:
    """One function (Knative Service) size."""

    name: str
    """As in the profile."""
    memory_mib: float
    """Billed memory; GB = MiB / 1024 as cloud functions bill."""

    @property
    def gb(self) -> float:
        return self.memory_mib / 1024.0


@dataclass(frozen=True)
class PriceSheet:
    """What every config costs."""

    instances: tuple[InstancePrice, ...]
    """Node-pool instance types (may be empty: FaaS only)."""
    functions: tuple[FunctionSize, ...]
    """Function sizes (at least one: spill always goes to a function)."""
    per_gb_second: float
    """Dollars per GB-second of function execution (per-use) or of pod life (per-pod)."""
    per_invocation: float = 0.0
    """Dollars per function invocation (per-use only)."""
    mode: PricingMode = PricingMode.PER_USE
    """Billing of functions."""
    keep_alive_s: float = 300.0
    """Seconds an idle function instance stays warm (and, per-pod, billed) before it is reclaimed."""

    def instance(self, name: str) -> InstancePrice:
        for i in self.instances:
            if i.name == name:
                return i
        raise KeyError(name)

    def function(self, name: str) -> FunctionSize:
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(name)

    def function_per_second(self, name: str) -> float:
        """p_f: dollars per second of one function of this size."""
        return self.function(name).gb * self.per_gb_second

    @property
    def invocation_fee(self) -> float:
        """p_inv as billed in this mode (per-pod pays for pods, not invocations)."""
        return self.per_invocation if self.mode is PricingMode.PER_USE else 0.0


# ---------------------------------------------------------------------------------------
# The workload: the profile and prices with the SLO, the traffic and the scaling knobs


@dataclass(frozen=True)
class Objective:
    """What must hold for a plan to be acceptable."""

    slo_s: float
    """Latency SLO in seconds: the worst-case warm batch must finish within it."""
    target_accuracy: float = 0.0
    """Only taus whose profiled accuracy reaches this are considered."""
    thresholds: tuple[float, ...] = ()
    """Taus the user allows (empty: every profiled tau)."""
    epoch_s: float = 0.0
    """D: epoch length in seconds (0 means: equal to the SLO)."""
    cold_start_in_feasibility: bool = False
    """Also charge each function stage's cold start to the worst-case batch (stricter)."""
    pack_batches: bool = False
    """Let an instance serve several batches per epoch when they still meet the SLO
    (serflow's extension; the paper gives each instance one batch per epoch)."""
    pools: tuple[str, ...] = ("faas", "iaas", "hybrid")
    """Pool kinds the configurator may choose (``PoolKind`` values)."""

    @property
    def epoch(self) -> float:
        return self.epoch_s or self.slo_s


class ScalingPolicy(StrEnum):
    """How the pool is sized every S epochs (``scaling.policy``)."""

    EXPECTED_COST = "expected-cost"
    """The size with the least expected cost over the recent rates (``policy.scalers.expected_cost``)."""
    PAPER = "paper"
    """SERFLOW's rule: floor(lam*/mu) + [remainder > T-CIP], lam* = EWMA + k x deviation."""


@dataclass(frozen=True)
class ScalingSpec:
    """Knobs of the online loop (DESIGN.md section 2, online loop)."""

    interval_epochs: int = 25
    """S: the pool is resized every S epochs."""
    ewma_a: float = 0.2
    """a: weight of the newest rate in the EWMA."""
    ewma_b: float = 0.2
    """b: weight of the newest absolute deviation."""
    k: float = 1.0
    """Target = EWMA + k * deviation."""
    min_instances: int = 0
    """Lower bound on the pool size."""
    max_instances: int = 1000
    """Upper bound on the pool size."""
    policy: ScalingPolicy = ScalingPolicy.EXPECTED_COST
    """Which scaler sizes the pool."""
    replan: bool = True
    """Whether the operator re-ranks the running plan on the object's own traffic (and
    plans on it after a spec change); False pins the plan to the spec's expected rate."""


@dataclass(frozen=True)
class Workload:
    """Everything the configurator, the scaler and the simulator need."""

    name: str
    """The document's name."""
    profile: Profile
    """What was measured."""
    prices: PriceSheet
    """What each config costs."""
    objective: Objective
    """SLO and accuracy target."""
    scaling: ScalingSpec
    """Online-loop knobs."""
    expected_rate: float
    """Long-term rate in req/s the offline configurator plans for (0: not given)."""


class RankedBy(StrEnum):
    """Which ranking chose the plan."""

    STEADY = "steady"
    """Cost at the long-term rate (no trace, or nothing feasible to replay)."""
    REPLAY = "replay"
    """Cost of a replay of the traffic with the scaler that will run the plan."""

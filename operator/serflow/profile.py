"""The profile and price-sheet schema (DESIGN.md sections 2 and 4).

A *profile* is what was measured about one model: the batch B, per resource config
(instance type or function size) the seconds per request of every partition, per cut the
activation size and transfer time, per threshold tau the exit shares and accuracy, and the
model's fingerprint. A *price sheet* says what each config costs. Both are owned here and
reused by the CRD's inline profile, by the runtime's profiler and by the CLI.

Keys are camelCase on the wire (as in Kubernetes). The JSON Schema in ``serflow.schemas``
(published as ``schemas/profile.schema.json``) validates every field; the parsers here
build the dataclasses and check the cross-field rules. Pure, and every error names the
field that is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from serflow.errors import InputError
from serflow.fields import Fields
from serflow.schemas import PRICES, PROFILE, prices_schema, profile_schema, validate

SHARE_TOLERANCE = 1e-3
"""How far the exit shares of one tau may sum from 1 (rounding in measured profiles)."""


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

    architecture: str
    """Network family, e.g. ``vgg16_bn``."""
    exits: tuple[int, ...]
    """IC placement: the conv blocks after which an internal classifier sits."""
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
        """K: one partition per IC plus the final one."""
        return len(self.exits) + 1


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
    node_selector: Mapping[str, str] = field(default_factory=dict)
    """Labels that select this type's nodes (default: the well-known instance-type label)."""

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
# Parsing (pure: takes already-decoded YAML/JSON values)


def parse_profile(value: Any, path: str = "profile") -> Profile:
    """Validate ``value`` against the profile's JSON Schema, then build it."""
    validate(value, profile_schema(), path)
    return profile_of(Fields(value, path, PROFILE))


def parse_prices(value: Any, path: str = "prices") -> PriceSheet:
    """Validate ``value`` against the price sheet's JSON Schema, then build it."""
    validate(value, prices_schema(), path)
    return prices_of(Fields(value, path, PRICES))


def profile_of(f: Fields) -> Profile:
    """Build a validated profile; check what the schema cannot (lengths per partition, ...)."""
    fp = _fingerprint(f.sub("fingerprint"))
    k = fp.partitions
    configs = tuple(_config(c, k) for c in f.each("configs"))
    _unique([c.name for c in configs], f.at("configs"), "name")
    cuts = tuple(_cut(c, k) for c in f.each("cuts"))
    _unique([c.after for c in cuts], f.at("cuts"), "after")
    thresholds = tuple(_threshold(t, k) for t in f.each("thresholds"))
    _unique([t.tau for t in thresholds], f.at("thresholds"), "tau")
    return Profile(
        fp,
        f.integer("batch"),
        configs,
        tuple(sorted(cuts, key=lambda c: c.after)),
        tuple(sorted(thresholds, key=lambda t: t.tau)),
    )


def prices_of(f: Fields) -> PriceSheet:
    """Build a validated price sheet; names must be unique."""
    instances = tuple(_instance(i) for i in f.each("instances"))
    _unique([i.name for i in instances], f.at("instances"), "name")
    fn = f.sub("functions")
    sizes = tuple(FunctionSize(s.text("name"), s.number("memoryMiB")) for s in fn.each("sizes"))
    _unique([s.name for s in sizes], fn.at("sizes"), "name")
    return PriceSheet(
        instances=instances,
        functions=sizes,
        per_gb_second=fn.number("perGBSecond"),
        per_invocation=fn.number("perInvocation"),
        mode=PricingMode(f.text("mode")),
        keep_alive_s=fn.number("keepAliveSeconds"),
    )


def check_prices_cover(profile: Profile, prices: PriceSheet, path: str = "prices") -> None:
    """Every priced config must have been profiled with the matching kind."""
    kinds = {c.name: c.kind for c in profile.configs}
    for i, inst in enumerate(prices.instances):
        if kinds.get(inst.name) is not ConfigKind.INSTANCE:
            raise InputError(
                f"{path}.instances[{i}].name",
                f"{inst.name!r} has no instance config in the profile",
            )
    for i, fs in enumerate(prices.functions):
        if kinds.get(fs.name) is not ConfigKind.FUNCTION:
            raise InputError(
                f"{path}.functions.sizes[{i}].name",
                f"{fs.name!r} has no function config in the profile",
            )


def _fingerprint(f: Fields) -> Fingerprint:
    exits = tuple(int(x) for x in f.numbers("exits"))
    if list(exits) != sorted(set(exits)):
        raise InputError(f.at("exits"), "expected strictly increasing block indices")
    return Fingerprint(
        architecture=f.text("architecture"),
        exits=exits,
        width=f.number("width"),
        num_classes=f.integer("numClasses"),
        checkpoint_sha256=f.text("checkpointSha256"),
        artefact_digest=f.text("artefactDigest"),
    )


def _config(f: Fields, k: int) -> ResourceProfile:
    u = f.numbers("secondsPerRequest")
    if len(u) != k:
        raise InputError(
            f.at("secondsPerRequest"), f"expected {k} values (one per partition), got {len(u)}"
        )
    if sum(u) <= 0:
        raise InputError(f.at("secondsPerRequest"), "expected a positive total runtime")
    return ResourceProfile(
        name=f.text("name"),
        kind=ConfigKind(f.text("kind")),
        vcpu=f.number("vcpu"),
        memory_mib=f.number("memoryMiB"),
        cold_start_s=f.number("coldStartSeconds"),
        seconds_per_request=u,
        request_overhead_s=f.number("requestOverheadSeconds"),
    )


def _cut(f: Fields, k: int) -> CutProfile:
    after = f.integer("after")
    if after >= k:
        raise InputError(
            f.at("after"), f"expected a cut between partitions (1..{k - 1}), got {after}"
        )
    return CutProfile(
        after=after,
        activation_bytes=f.number("activationBytes"),
        transfer_s=f.number("transferSeconds"),
    )


def _threshold(f: Fields, k: int) -> ThresholdProfile:
    shares = f.numbers("exitShares")
    if len(shares) != k:
        raise InputError(
            f.at("exitShares"), f"expected {k} values (one per exit), got {len(shares)}"
        )
    total = sum(shares)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise InputError(f.at("exitShares"), f"expected shares summing to 1, got {total:.6g}")
    # Renormalise the rounding so survival starts at exactly 1.
    shares = tuple(s / total for s in shares)
    return ThresholdProfile(tau=f.number("tau"), accuracy=f.number("accuracy"), exit_shares=shares)


def _instance(f: Fields) -> InstancePrice:
    name = f.text("name")
    selector = f.string_map("nodeSelector") or {"node.kubernetes.io/instance-type": name}
    return InstancePrice(name=name, per_hour=f.number("perHour"), node_selector=selector)


def _unique(values: list[Any], path: str, key: str) -> None:
    seen: set[Any] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise InputError(f"{path}[{i}].{key}", f"duplicate {v!r}")
        seen.add(v)


# ---------------------------------------------------------------------------------------
# Rendering (the inverse of parsing; what the profiler writes)


def profile_to_dict(p: Profile) -> dict[str, Any]:
    fp = p.fingerprint
    return {
        "fingerprint": {
            "architecture": fp.architecture,
            "width": fp.width,
            "exits": list(fp.exits),
            "numClasses": fp.num_classes,
            "checkpointSha256": fp.checkpoint_sha256,
            "artefactDigest": fp.artefact_digest,
        },
        "batch": p.batch,
        "configs": [
            {
                "name": c.name,
                "kind": c.kind.value,
                "vcpu": c.vcpu,
                "memoryMiB": c.memory_mib,
                "coldStartSeconds": c.cold_start_s,
                "secondsPerRequest": list(c.seconds_per_request),
                "requestOverheadSeconds": c.request_overhead_s,
            }
            for c in p.configs
        ],
        "cuts": [
            {
                "after": c.after,
                "activationBytes": c.activation_bytes,
                "transferSeconds": c.transfer_s,
            }
            for c in p.cuts
        ],
        "thresholds": [
            {"tau": t.tau, "accuracy": t.accuracy, "exitShares": list(t.exit_shares)}
            for t in p.thresholds
        ],
    }


def prices_to_dict(s: PriceSheet) -> dict[str, Any]:
    return {
        "mode": s.mode.value,
        "instances": [
            {"name": i.name, "perHour": i.per_hour, "nodeSelector": dict(i.node_selector)}
            for i in s.instances
        ],
        "functions": {
            "perGBSecond": s.per_gb_second,
            "perInvocation": s.per_invocation,
            "keepAliveSeconds": s.keep_alive_s,
            "sizes": [{"name": f.name, "memoryMiB": f.memory_mib} for f in s.functions],
        },
    }

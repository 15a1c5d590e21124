"""The profile and price-sheet documents: parsers and renderers (DESIGN.md sections 2 and 4).

A *profile* is what was measured about one model: the batch B, per resource config
(instance type or function size) the seconds per request of every partition, per cut the
activation size and transfer time, per threshold tau the exit shares and accuracy, and the
model's fingerprint. A *price sheet* says what each config costs. Their types are
``serflow.domain``'s; their documents are owned here and reused by the CRD's inline
profile, by the runtime's profiler and by the CLI.

Keys are camelCase on the wire (as in Kubernetes). The JSON Schema in ``serflow.schemas``
(published as ``schemas/profile.schema.json``) validates every field; the parsers here
build the domain types and check the cross-field rules. Pure, and every error names the
field that is wrong.
"""

from __future__ import annotations

from typing import Any

# The types are serflow.domain's; re-exported for the importers of this module.
from serflow.domain import ConfigKind as ConfigKind
from serflow.domain import CutProfile as CutProfile
from serflow.domain import Fingerprint as Fingerprint
from serflow.domain import FunctionSize as FunctionSize
from serflow.domain import InstancePrice as InstancePrice
from serflow.domain import PriceSheet as PriceSheet
from serflow.domain import PricingMode as PricingMode
from serflow.domain import Profile as Profile
from serflow.domain import ResourceProfile as ResourceProfile
from serflow.domain import ThresholdProfile as ThresholdProfile
from serflow.errors import InputError
from serflow.fields import Fields
from serflow.schemas import PRICES, PROFILE, prices_schema, profile_schema, validate

SHARE_TOLERANCE = 1e-3
"""How far the exit shares of one tau may sum from 1 (rounding in measured profiles)."""


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
    if not f.has("stages") and not exits:
        raise InputError(f.at("stages"), "set stages (K), or exits (K - 1 of them)")
    k = f.integer("stages") if f.has("stages") else len(exits) + 1
    if exits and len(exits) + 1 != k:
        raise InputError(
            f.at("exits"), f"{len(exits)} exits describe {len(exits) + 1} stages, not {k}"
        )
    return Fingerprint(
        stages=k,
        architecture=f.text("architecture", ""),
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
            "stages": fp.stages,
            **({"architecture": fp.architecture} if fp.architecture else {}),
            "width": fp.width,
            **({"exits": list(fp.exits)} if fp.exits else {}),
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

"""``serflow-runtime profile``: measure an artefact and write a serflow Profile document.

Per resource config (instance type or function size, named as in the price sheet): the
seconds per request of each stage in batches of B, worst case (every row runs every
stage), with the runtime limited to the config's vCPUs (capped at this machine's cores;
the cap is recorded in an annotation).  Per cut: compressed activation bytes per request
and the function-side seconds per request to decode the frame (header, bounded LZ4
decompression, array).  Per function size: the seconds its own server bills a lone image
beyond the batched compute (a spilled request arrives alone, over HTTP, as an image).
Per tau: exit shares and accuracy on the artefact's calibration set (the held-out split,
as 8-bit pixels through the serving path's preprocessing).
The document is validated with the control plane's rules when they are installed (the
operator checks it again when it reads the profile).
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serflow_runtime import artefact, codec
from serflow_runtime.engine import run_all
from serflow_runtime.runtimes import Runtime, ServedModel, open_model

# vCPUs and memory of the instance types we name (AWS list values).
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    "c6i.large": (2, 4096),
    "c6i.xlarge": (4, 8192),
    "c6i.2xlarge": (8, 16384),
    "m6i.large": (2, 8192),
    "m6i.xlarge": (4, 16384),
}
PRICE_PER_HOUR = {
    "c6i.large": 0.085,
    "c6i.xlarge": 0.17,
    "c6i.2xlarge": 0.34,
    "m6i.large": 0.096,
    "m6i.xlarge": 0.192,
}
LAMBDA_MIB_PER_VCPU = 1769  # AWS Lambda grants one vCPU per 1,769 MB
INSTANCE_COLD_START = 132.0  # the paper's 22 epochs of 6 s (assumed)
FUNCTION_COLD_START = 0.5  # assumed, as in the paper preset
DEFAULT_CONFIGS = ("c6i.large", "c6i.xlarge", "fn-2048")
LONE_IMAGES = 40
"""Lone images a function's own server answers to measure its per-request overhead:
enough for a steady median at a few milliseconds each, few enough for a short Job."""


@dataclass(frozen=True)
class ConfigSpec:
    name: str
    kind: str
    vcpu: float
    memory_mib: int
    cold_start: float

    @property
    def threads(self) -> int:
        return max(1, min(round(self.vcpu), os.cpu_count() or 1))


def config_spec(name: str) -> ConfigSpec:
    """``c6i.xlarge`` (a known instance type) or ``fn-<MiB>`` (a function size)."""
    if name in INSTANCE_TYPES:
        cores, mem = INSTANCE_TYPES[name]
        return ConfigSpec(name, "instance", cores, mem, INSTANCE_COLD_START)
    if name.startswith("fn-") and name[3:].isdigit():
        mem = int(name[3:])
        vcpu = max(mem / LAMBDA_MIB_PER_VCPU, 0.1)
        return ConfigSpec(name, "function", round(vcpu, 3), mem, FUNCTION_COLD_START)
    known = ", ".join(INSTANCE_TYPES)
    raise ValueError(f"unknown config {name!r}: use one of {known} or fn-<MiB>")


@dataclass
class ProfileRequest:
    artefact: Path
    runtime: Runtime = Runtime.ONNX
    batch: int = 100
    taus: Sequence[float] = (0.5, 0.7, 0.85, 0.95)
    configs: Sequence[str] | None = None
    repeats: int = 3
    name: str | None = None
    slo_seconds: float = 6.0
    expected_rate: float = 20.0
    extra: dict[str, Any] = field(default_factory=dict)


def _batch(x: np.ndarray, b: int) -> np.ndarray:
    reps = (b + x.shape[0] - 1) // x.shape[0]
    return np.ascontiguousarray(np.concatenate([x] * reps)[:b])


def partition_seconds(model: ServedModel, x: np.ndarray, repeats: int) -> list[float]:
    """Seconds per request of each stage: the fastest of ``repeats`` worst-case passes.

    The minimum, not the median: on a shared machine other processes only ever add time.
    """
    times: list[list[float]] = [[] for _ in range(model.k)]
    for r in range(repeats + 1):  # the first pass warms up
        h = x
        for i in range(1, model.k + 1):
            t0 = time.perf_counter()
            h, _ = model.run_stage(i, h)
            dt = time.perf_counter() - t0
            if r:
                times[i - 1].append(dt)
    return [min(t) / x.shape[0] for t in times]


def request_overhead(req: ProfileRequest, spec: ConfigSpec, x: np.ndarray, batched_s: float) -> float:
    """Seconds a function's server bills a lone image beyond ``batched_s`` (the whole
    model's compute per request in batches of B): HTTP, decoding, the answer, and batch 1.

    The function's own server answers ``LONE_IMAGES`` held-out images in the raw wire
    format on 127.0.0.1, one at a time and with no early exit (every partition runs, as
    ``batched_s`` assumes); each answer's Server-Timing is the duration a FaaS bills.
    The median, not the mean: on a shared machine other processes only ever add time.
    """
    from aiohttp.test_utils import TestClient, TestServer

    from serflow_runtime.function import FunctionApp, FunctionConfig
    from serflow_runtime.server import server_timing_seconds

    fn = FunctionApp(
        FunctionConfig(
            artefact=req.artefact, runtime=req.runtime, tau=None, threads=spec.threads,
            batch=req.batch, name=spec.name,
        )
    )  # fmt: skip
    wire = x.dtype.newbyteorder("<")  # the raw format: little-endian, the input's dtype
    bodies = [np.ascontiguousarray(x[i % x.shape[0]], dtype=wire).tobytes() for i in range(LONE_IMAGES)]

    async def serve() -> list[float]:
        took = []
        async with TestClient(TestServer(fn.app(), host="127.0.0.1")) as client:
            for i, body in enumerate([bodies[0], *bodies]):  # the first warms up
                r = await client.post("/infer", data=body, headers={"Content-Type": codec.RAW_CT})
                if r.status != 200:
                    raise RuntimeError(f"{spec.name}: the function answered {r.status}: {await r.text()}")
                await r.read()
                own = server_timing_seconds(r.headers.get("Server-Timing"))
                if own is None:
                    raise RuntimeError(f"{spec.name}: the function's answer has no Server-Timing")
                if i:
                    took.append(own)
        return took

    try:
        served = statistics.median(asyncio.run(serve()))
    finally:
        fn.pool.shutdown(wait=True)
    return max(0.0, served - batched_s)


def cut_stats(model: ServedModel, x: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    """Per cut: compressed bytes per request and frame decode seconds per request."""
    out = []
    h = x
    for i in range(1, model.k):
        h, _ = model.run_stage(i, h)
        frame = codec.encode_frame(
            {"fingerprint": model.token, "partition": i + 1, "rows": list(range(h.shape[0]))}, h
        )
        payload = len(codec.compress(h))
        dts = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            codec.decode_frame(frame, 1 << 30, model.manifest.cut_shape(i))
            dts.append(time.perf_counter() - t0)
        n = h.shape[0]
        out.append(
            {
                "after": i,
                "activationBytes": round(payload / n, 1),
                "transferSeconds": min(dts) / n,
                "rawBytes": codec.activation_bytes(model.manifest.cut_shape(i)),
            }
        )
    return out


def thresholds(
    model: ServedModel, x: np.ndarray, y: np.ndarray, taus: Sequence[float]
) -> list[dict[str, Any]]:
    k = model.k
    n = x.shape[0]
    out = []
    for tau in sorted(taus):
        counts = [0] * k
        correct = 0
        for s in range(0, n, 256):
            res = run_all(model, x[s : s + 256], tau)
            for e in res.exits:
                counts[e.exit - 1] += 1
                correct += int(e.cls == int(y[s + e.row]))
        out.append(
            {
                "tau": tau,
                "accuracy": round(correct / n, 6),
                "exitShares": [c / n for c in counts],
            }
        )
    return out


def default_prices(configs: Sequence[ConfigSpec]) -> dict[str, Any]:
    return {
        "mode": "per-use",
        "instances": [
            {"name": c.name, "perHour": PRICE_PER_HOUR[c.name]}
            for c in configs
            if c.kind == "instance"
        ],
        "functions": {
            "perGBSecond": 0.0000166667,
            "perInvocation": 0.0000002,
            "keepAliveSeconds": 300,
            "sizes": [
                {"name": c.name, "memoryMiB": c.memory_mib} for c in configs if c.kind == "function"
            ],
        },
    }


def accuracy_per_exit(model: ServedModel, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Held-out accuracy of each exit's classifier, every image run to every exit."""
    correct = [0] * model.k
    for s in range(0, x.shape[0], 256):
        h = x[s : s + 256]
        for i in range(1, model.k + 1):
            h, lg = model.run_stage(i, h)
            correct[i - 1] += int((lg.argmax(axis=1) == y[s : s + 256]).sum())
    return [c / x.shape[0] for c in correct]


def fingerprint(m: artefact.Manifest) -> dict[str, Any]:
    """The profile's fingerprint: K and the artefact digest from the manifest, with the
    descriptions the control plane also checks when a spec gives them (architecture, exit
    placement, width, classes); a description the manifest lacks is left out."""
    d = m.describes
    out: dict[str, Any] = {
        "stages": m.num_stages,
        "width": float(d.get("width", 1.0)),
        "numClasses": len(m.classes),
        "artefactDigest": m.digest,
    }
    arch = str(d.get("architecture", m.name))
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", arch):  # the profile schema's pattern
        out["architecture"] = arch
    exits = d.get("exits")
    if isinstance(exits, list) and len(exits) == m.num_stages - 1:
        out["exits"] = [int(e) for e in exits]
    return out


def run_profile(req: ProfileRequest) -> dict[str, Any]:
    ref = open_model(req.artefact, req.runtime, 1)
    m = ref.manifest
    x_val, labels = artefact.held_out(ref.root, m)
    # One config alone is a whole measurement: the operator's profiling Jobs each measure
    # one and merge them; planning refuses a price sheet the merged profile does not cover.
    specs = [config_spec(c) for c in (req.configs or DEFAULT_CONFIGS)]
    xb = _batch(x_val, req.batch)
    configs = []
    for s in specs:
        timed = open_model(req.artefact, req.runtime, s.threads)
        spr = partition_seconds(timed, xb, req.repeats)
        config = {
            "name": s.name,
            "kind": s.kind,
            "vcpu": s.vcpu,
            "memoryMiB": s.memory_mib,
            "coldStartSeconds": s.cold_start,
            "secondsPerRequest": spr,
        }
        if s.kind == "function":
            config["requestOverheadSeconds"] = request_overhead(req, s, x_val, sum(spr))
        configs.append(config)
    # The smallest function decodes single-threaded: `ref` runs on one thread.
    cuts = cut_stats(ref, xb, req.repeats)
    measured_threads = {s.name: s.threads for s in specs}
    doc: dict[str, Any] = {
        "apiVersion": "serflow.io/v1alpha1",
        "kind": "Profile",
        "metadata": {
            "name": req.name or m.name,
            "annotations": {
                "serflow.io/runtime": str(req.runtime),
                "serflow.io/measured-threads": ", ".join(
                    f"{k}={v}" for k, v in measured_threads.items()
                ),
                "serflow.io/dataset": f"the artefact's calibration set, {x_val.shape[0]} rows",
                "serflow.io/accuracy-per-exit": " ".join(
                    f"{v:.4f}" for v in accuracy_per_exit(ref, x_val, labels)
                ),
                "serflow.io/load-average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                "serflow.io/assumed": "coldStartSeconds (instances 132, functions 0.5); prices",
                "serflow.io/transfer-seconds": "frame decode (header, LZ4, array) per request on"
                " 1 thread; network time not included",
                "serflow.io/request-overhead": f"functions: the median Server-Timing of "
                f"{LONE_IMAGES} lone images through the function's own server on 127.0.0.1, "
                "less the batched whole-model compute",
                "serflow.io/raw-cut-bytes": ", ".join(
                    f"{c['after']}={c['rawBytes']}" for c in cuts
                ),
            },
        },
        "profile": {
            "fingerprint": fingerprint(m),
            "batch": req.batch,
            "configs": configs,
            "cuts": [
                {k: c[k] for k in ("after", "activationBytes", "transferSeconds")} for c in cuts
            ],
            "thresholds": thresholds(ref, x_val, labels, req.taus),
        },
        "slo": {"latencySeconds": req.slo_seconds, "targetAccuracy": 0.0},
        "traffic": {"expectedRate": req.expected_rate},
    }
    if any(s.kind == "function" for s in specs):  # a price sheet needs a function size
        doc["prices"] = default_prices(specs)
    validate(doc)
    return doc


def validate(doc: dict[str, Any]) -> None:
    """Parse with the control plane's schema when it is installed (a development checkout;
    the images carry only the data plane); raises serflow.errors.InputError."""
    try:
        from serflow.profile import check_prices_cover, parse_prices, parse_profile
    except ImportError:
        return

    prof = parse_profile(doc["profile"], "profile")
    if "prices" in doc:
        check_prices_cover(prof, parse_prices(doc["prices"], "prices"), "prices")


def write_profile(doc: dict[str, Any], out: str | Path) -> None:
    import yaml

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by `serflow-runtime profile`; the measurements are real, on this\n"
        "# artefact and its held-out calibration set.  See metadata.annotations for what was assumed.\n"
    )
    Path(out).write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100))

"""The parts of a SerflowInference spec that are about deployment, not cost.

The cost side (profile, prices, SLO, traffic, scaling) is ``serflow.spec.Workload``; this
module reads the model, the functions' scaling, the routing and where the profile comes
from. Pure: it takes the decoded spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from serflow.errors import InputError
from serflow.fields import Fields
from serflow.profile import Profile

DEFAULT_ENVOY_IMAGE = "envoyproxy/envoy:v1.34.1"


class ProfileSource(StrEnum):
    """Where the profile comes from."""

    INLINE = "inline"
    CONFIGMAP = "configMapRef"
    JOB = "fromJob"


@dataclass(frozen=True)
class ModelSpec:
    """The model the pods serve."""

    image: str
    """Worker image (Dockerfile.worker)."""
    function_image: str
    """Function image (Dockerfile.fn)."""
    checkpoint: str
    """Checkpoint path inside the image ('' for the bundled one)."""
    architecture: str
    """Must match the profile's fingerprint."""
    width: float
    """Channel width multiplier."""
    exits: tuple[int, ...]
    """IC placement."""
    num_classes: int
    """Classes."""
    batch: int
    """B."""
    pod_annotations: tuple[tuple[str, str], ...] = ()
    """Extra annotations on the pool's pods (e.g. a scrape config, or kwok's ready delay)."""


@dataclass(frozen=True)
class FunctionsSpec:
    """Knative scaling of the tail and spill services."""

    container_concurrency: int = 1
    """Requests one function pod takes at once (one batch)."""
    min_scale: int = 0
    """Knative min-scale; 0 scales to zero."""
    max_scale: int = 50
    """Knative max-scale."""


@dataclass(frozen=True)
class RoutingSpec:
    """Envoy in front of the pool and the functions."""

    image: str = DEFAULT_ENVOY_IMAGE
    """Envoy image."""
    replicas: int = 1
    """Envoy replicas (their counters are summed)."""
    stats_urls: tuple[str, ...] = ()
    """Explicit stats endpoints (default: the Envoy pods' stats port)."""
    stat_prefix: str = "ingress"
    """Envoy HTTP stat prefix whose downstream_rq_total counts this object's requests."""


@dataclass(frozen=True)
class InferenceSpec:
    """Deployment-side view of a SerflowInference spec."""

    model: ModelSpec
    functions: FunctionsSpec
    routing: RoutingSpec
    profile_source: ProfileSource
    """inline, configMapRef or fromJob."""
    configmap_name: str = ""
    """The ConfigMap holding the profile (configMapRef / fromJob)."""
    configmap_key: str = "profile.yaml"
    """Key of the Profile YAML in that ConfigMap."""
    job_taus: tuple[float, ...] = ()
    """Taus the profiling Jobs measure (fromJob)."""
    job_image: str = ""
    """Profiler image (fromJob; default: the model image)."""


def parse_inference(spec: Mapping[str, Any], name: str) -> InferenceSpec:
    f = Fields(spec, "spec")
    m = f.sub("model")
    image = m.text("image")
    model = ModelSpec(
        image=image,
        function_image=m.text("functionImage", image),
        checkpoint=str(m.value.get("checkpoint") or ""),
        architecture=m.text("architecture", "vgg16_bn"),
        width=m.number("width", 1.0, above=0),
        exits=tuple(int(x) for x in m.numbers("exits", min=1)),
        num_classes=m.integer("numClasses", 10, min=2),
        batch=m.integer("batch", 100, min=1),
        pod_annotations=tuple(sorted(m.string_map("podAnnotations").items())),
    )
    fn = f.opt_sub("functions")
    r = f.opt_sub("routing")
    urls = tuple(str(u) for _, u in r.items("statsUrls", nonempty=False))
    for i, u in enumerate(urls):
        if not u.startswith(("http://", "https://")):
            raise InputError(f"spec.routing.statsUrls[{i}]", f"expected an http(s) URL, got {u!r}")
    prof = f.sub("profile")
    present = [s for s in ProfileSource if prof.has(s.value)]
    if len(present) != 1:
        raise InputError("spec.profile", "set exactly one of inline, configMapRef or fromJob")
    source = present[0]
    cm_name, cm_key, job_image = "", "profile.yaml", ""
    taus: tuple[float, ...] = ()
    if source is ProfileSource.CONFIGMAP:
        ref = prof.sub("configMapRef")
        cm_name, cm_key = ref.text("name"), ref.text("key", "profile.yaml")
    elif source is ProfileSource.JOB:
        job = prof.opt_sub("fromJob")
        cm_name = f"{name}-profile"
        taus = job.numbers("taus") if job.has("taus") else (0.5, 0.7, 0.85, 0.95)
        job_image = str(job.value.get("image") or image)
    return InferenceSpec(
        model=model,
        functions=FunctionsSpec(
            container_concurrency=fn.integer("containerConcurrency", 1, min=1),
            min_scale=fn.integer("minScale", 0, min=0),
            max_scale=fn.integer("maxScale", 50, min=1),
        ),
        routing=RoutingSpec(
            image=r.text("image", DEFAULT_ENVOY_IMAGE),
            replicas=r.integer("replicas", 1, min=1),
            stats_urls=urls,
            stat_prefix=r.text("statPrefix", "ingress"),
        ),
        profile_source=source,
        configmap_name=cm_name,
        configmap_key=cm_key,
        job_taus=taus,
        job_image=job_image,
    )


def fingerprint_mismatch(model: ModelSpec, profile: Profile) -> str:
    """Why the profile does not describe this model ('' when it does)."""
    fp = profile.fingerprint
    checks = [
        ("architecture", fp.architecture, model.architecture),
        ("exits", fp.exits, model.exits),
        ("width", fp.width, model.width),
        ("numClasses", fp.num_classes, model.num_classes),
        ("batch", profile.batch, model.batch),
    ]
    for field, got, want in checks:
        if got != want:
            return f"profile {field} {got!r} does not match the model's {want!r}"
    return ""

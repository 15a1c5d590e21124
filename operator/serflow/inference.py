"""The parts of a SerflowInference spec that are about deployment, not cost.

The cost side (profile, prices, SLO, traffic, scaling) is ``serflow.domain.Workload``; this
module reads the model, the functions' scaling, the routing and where the profile comes
from, after validating the spec against its JSON Schema. Pure: it takes the decoded spec.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from serflow import wire
from serflow.domain import Profile
from serflow.errors import InputError
from serflow.fields import Fields
from serflow.schemas import inference_spec_schema, validate


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
    artefact_path: str
    """The artefact folder inside the images ('' for the shipped one)."""
    artefact_digest: str
    """The artefact's digest ('' when not pinned): pods and profiles must have it."""
    architecture: str
    """A description ('' when not given): the profile's fingerprint must say the same."""
    width: float | None
    """A description (None when not given): channel width multiplier."""
    exits: tuple[int, ...]
    """A description (() when not given): IC placement in the family's numbering."""
    num_classes: int | None
    """A description (None when not given): classes."""
    batch: int
    """B."""
    storage_uri: str = ""
    """Where an init container fetches the artefact from ('' : inside the images):
    ``pvc://CLAIM/PATH``, ``http(s)://...``, ``s3://BUCKET/PATH``."""
    storage_secret: str = ""
    """A Secret of the object's namespace whose keys (AWS_*) the fetch reads (s3://)."""
    storage_image: str = wire.STORAGE_IMAGE
    """The storage initializer's image (Dockerfile.storage)."""
    artefact_max_mib: int = 4096
    """The fetched artefact's bound in MiB: the fetch's byte limit and its emptyDir's size."""
    pod_annotations: tuple[tuple[str, str], ...] = ()
    """Extra annotations on the pool's pods (e.g. a scrape config, or kwok's ready delay)."""


class FunctionAccess(StrEnum):
    """How Envoy and the pool reach the Knative functions."""

    REVISION = "revision"
    """The pinned Revision's Kubernetes Service with Knative's routing headers (the
    activator answers while it is at zero): needs no Knative networking layer."""
    ROUTE = "route"
    """The Knative Service's cluster-local URL: needs a networking layer."""


@dataclass(frozen=True)
class FunctionsSpec:
    """Knative scaling of the tail and spill services, and how they are reached."""

    container_concurrency: int = 1
    """Requests one function pod takes at once (one batch)."""
    min_scale: int = 0
    """Knative min-scale; 0 scales to zero."""
    max_scale: int = 50
    """Knative max-scale."""
    access: FunctionAccess = FunctionAccess.REVISION
    """Through the pinned Revisions, or through the Knative Services' routes."""


@dataclass(frozen=True)
class RoutingSpec:
    """Envoy in front of the pool and the functions."""

    image: str = wire.ENVOY_IMAGE
    """Envoy image."""
    replicas: int = 2
    """Envoy replicas (their counters are summed): two, so that one answers while the
    other's node is drained or lost."""
    stats_urls: tuple[str, ...] = ()
    """Explicit stats endpoints (default: the Envoy pods' stats port)."""
    stat_prefix: str = wire.STAT_PREFIX
    """Envoy HTTP stat prefix whose downstream_rq_total counts this object's requests."""
    sync_image: str = wire.OPERATOR_IMAGE
    """The image of the router's route-sync sidecar: the operator's own (not in the
    object's spec: the operator sets it, ``controller.routes.with_route_sync``)."""
    routes_url: str = ""
    """Where the router's pods reach the operator's route server ('' : they follow the
    ConfigMap alone; set by the operator, like ``sync_image``)."""


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
    """Validate a SerflowInference spec against its JSON Schema, then build the deployment side."""
    schema = inference_spec_schema()
    validate(spec, schema, "spec")
    f = Fields(spec, "spec", schema)
    m = f.sub("model")
    if m.has("checkpoint"):
        raise InputError(
            "spec.model.checkpoint",
            "no longer served: export the checkpoint with `serflow-runtime export` and set "
            "spec.model.artefact",
        )
    art = m.opt_sub("artefact")
    image = m.text("image")
    if m.has("storageUri"):
        # A fetched artefact is verified before it serves: by the digest the spec pins.
        if not art.has("digest"):
            raise InputError(m.at("artefact.digest"), "required with storageUri (what the fetch verifies)")
        if art.has("path"):
            raise InputError(m.at("artefact.path"), "names an artefact inside the images: not with storageUri")
    model = ModelSpec(
        image=image,
        function_image=m.text("functionImage", image),
        artefact_path=art.text("path", ""),
        artefact_digest=art.text("digest", ""),
        architecture=m.text("architecture", ""),
        width=m.number("width") if m.has("width") else None,
        exits=tuple(int(x) for x in m.numbers("exits")) if m.has("exits") else (),
        num_classes=m.integer("numClasses") if m.has("numClasses") else None,
        batch=m.integer("batch"),
        storage_uri=m.text("storageUri", ""),
        storage_secret=m.text("storageSecret", ""),
        storage_image=m.text("storageImage"),
        artefact_max_mib=art.integer("maxMiB"),
        pod_annotations=tuple(sorted(m.string_map("podAnnotations").items())),
    )
    fn, r, prof = f.opt_sub("functions"), f.opt_sub("routing"), f.sub("profile")
    present = [s for s in ProfileSource if prof.has(s.value)]
    if len(present) != 1:
        raise InputError("spec.profile", "set exactly one of inline, configMapRef or fromJob")
    source = present[0]
    cm_name, cm_key, job_image = "", "profile.yaml", ""
    taus: tuple[float, ...] = ()
    if source is ProfileSource.CONFIGMAP:
        ref = prof.sub("configMapRef")
        cm_name, cm_key = ref.text("name"), ref.text("key")
    elif source is ProfileSource.JOB:
        job = prof.opt_sub("fromJob")
        cm_name = f"{name}-profile"
        taus = job.numbers("taus")
        if len(set(taus)) != len(taus):  # the merged profile would hold a tau twice
            raise InputError(job.at("taus"), "expected distinct taus")
        job_image = job.text("image", image)
    min_scale, max_scale = fn.integer("minScale"), fn.integer("maxScale")
    if min_scale > max_scale:  # Knative refuses the Service otherwise
        raise InputError(fn.at("maxScale"), f"expected >= minScale ({min_scale}), got {max_scale}")
    return InferenceSpec(
        model=model,
        functions=FunctionsSpec(
            container_concurrency=fn.integer("containerConcurrency"),
            min_scale=min_scale,
            max_scale=max_scale,
            access=FunctionAccess(fn.text("access")),
        ),
        routing=RoutingSpec(
            image=r.text("image"),
            replicas=r.integer("replicas"),
            stats_urls=r.texts("statsUrls"),
            stat_prefix=r.text("statPrefix"),
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
    if model.artefact_digest:
        # A pinned artefact is matched by its digest; the descriptive fields are not needed.
        if fp.artefact_digest != model.artefact_digest:
            have = fp.artefact_digest[:12] + "..." if fp.artefact_digest else "none"
            return (
                f"profile artefactDigest {have} does not match the model's "
                f"{model.artefact_digest[:12]}..."
            )
        if profile.batch != model.batch:
            return f"profile batch {profile.batch!r} does not match the model's {model.batch!r}"
        return ""
    # The descriptions the spec gives must agree; K itself comes from the profile (and,
    # through the profiler, from the artefact's manifest).
    checks = [
        ("architecture", fp.architecture, model.architecture or None),
        ("exits", fp.exits, model.exits or None),
        ("width", fp.width, model.width),
        ("numClasses", fp.num_classes, model.num_classes),
        ("batch", profile.batch, model.batch),
    ]
    for field, got, want in checks:
        if want is not None and got != want:
            return f"profile {field} {got!r} does not match the model's {want!r}"
    return ""


def stats_url_outside(urls: Sequence[str], namespace: str) -> str:
    """Why one of ``spec.routing.statsUrls`` points outside what the object owns ('' when
    none does): the operator GETs them every epoch, so an object may name only the
    loopback (an operator run beside its routers, as in the tests) or a Service of its
    own namespace, never another namespace's pods or any host on the network."""
    own = (f".{namespace}.svc", f".{namespace}.svc.cluster.local")
    for i, url in enumerate(urls):
        host = (urllib.parse.urlsplit(url).hostname or "").lower().rstrip(".")
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            if host == "localhost" or host.endswith(own):
                continue
        return (
            f"spec.routing.statsUrls[{i}]: {host or url} is neither the loopback nor a "
            f"Service of namespace {namespace} (<service>.{namespace}.svc)"
        )
    return ""

"""kopf handlers: plan on create/update/resume, then one epoch per D seconds.

- create/update/resume: run the configurator (resume keeps the plan status already
  holds for the current spec), server-side apply the children, and leave the chosen
  plan in the object's memo;
- one daemon per object runs the epochs (``serflow.controller.epoch``): gather the
  counters and the children, decide (pure), execute. It reads its own object only
  through kopf's live body, never with a GET. Every few scaling ticks it re-ranks the
  plan on the object's own traffic (``serflow.controller.replan``) and replaces it only
  when that saves more than a margin.

State that must survive a restart (monitor, epoch, desired size, last counters, the
plan's economics) lives in the object's status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import kopf
import yaml

from serflow.controller import metrics, routes
from serflow.controller.decide import EpochState, Event, epoch_state_from_status
from serflow.controller.epoch import Clock, install, run_epoch, utc_now
from serflow.controller.kube import Kube, load_config, shared_kube
from serflow.controller.liveness import STALL_S, EpochWatch
from serflow.controller.planning import (
    Placement,
    Planned,
    Refused,
    as_when_served,
    epoch_may_run,
    plan_spec,
    refusal_status,
)
from serflow.controller.replan import Kept, Replan, replan
from serflow.documents import load_yaml
from serflow.domain import Workload
from serflow.errors import InputError
from serflow.inference import (
    InferenceSpec,
    ProfileSource,
    fingerprint_mismatch,
    parse_inference,
    stats_url_outside,
)
from serflow.k8s import builders, jobs
from serflow.k8s.crd import FINALIZER, GROUP, PLURAL, VERSION
from serflow.k8s.storage import fetch_problem
from serflow.profile import parse_prices
from serflow.spec import parse_workload
from serflow.status import (
    Condition,
    InferenceStatus,
    candidate_line,
    decode,
    encode,
    served_spec,
)

Logger = logging.Logger | logging.LoggerAdapter[Any]
KIND = "SerflowInference"


PEERING_LIFETIME_S = 20
"""Seconds after which a peered replica that stopped renewing its record is deemed gone."""


class Pending(Exception):
    """The inputs are not there yet (a profile ConfigMap, profiling Jobs)."""


class ProfileFailed(Exception):
    """A profiling Job failed (its retries spent, or past its deadline)."""

    def __init__(self, message: str, reason: str = "ProfileFailed") -> None:
        super().__init__(message)
        self.reason = reason
        """ProfileFailed, or the artefact's fetch's (ArtefactMismatch, ArtefactUnavailable)."""


API_BACKOFFS_S = (1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 60, 60, 60, 60, 60, 60)
"""Seconds between kopf's retries of a failed API call: 474 s in all, longer than the
liveness probe's stall bound (``liveness.STALL_S``), after which a restart is the remedy."""


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="serflow.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="serflow.io")
    settings.persistence.finalizer = FINALIZER  # the uninstall hook takes it off (release.py)
    settings.posting.level = logging.INFO
    if not settings.peering.standalone and settings.peering.priority == 0:
        # Peered replicas (kopf pauses every one but the highest priority; two alike would
        # both pause): a random one each, so one works and a restarted one may take over.
        settings.peering.priority = random.randrange(1, 2**31)
    # A replica gone (its node lost) is taken over once its record is this many seconds
    # old: the epochs, not the data plane, wait that long (kopf's default is 60).
    settings.peering.lifetime = PEERING_LIFETIME_S
    settings.execution.max_workers = 16  # reconcile bursts (many objects created at once)
    # An API server away for minutes (an upgrade, a control-plane node restarting) is
    # waited out: kopf's default backoffs give up after 54 s, and its peering keepalive
    # then ends the process (measured on kind: the operator exited 1 during a 60 s stop).
    settings.networking.error_backoffs = API_BACKOFFS_S
    # Strict mode: exact namespaces or the whole cluster, no namespace/CRD scanning (which
    # would need list/watch on namespaces and CRDs that the operator does not otherwise use).
    settings.scanning.disabled = True
    load_config()
    # The epochs' reads, from watch-fed caches: over the cluster, or in each namespace the
    # operator was told to watch (__main__ passes them on; only those are granted).
    watched = [n for n in os.environ.get("SERFLOW_NAMESPACES", "").split(",") if n]
    shared_kube().start_caches(watched or None)
    metrics.serve()
    routes.serve()


@dataclass(frozen=True)
class Inputs:
    """Everything read for one object."""

    workload: Workload
    inference: InferenceSpec


def start_profiling(kube: Kube, owner: builders.Owner, inf: InferenceSpec, prices: Any) -> None:
    """spec.profile.fromJob: create the profiling Jobs, and merge their profiles when done."""
    namespace = owner.namespace
    made = jobs.profiler_jobs(owner, inf, parse_prices(prices, "spec.prices"))
    for job in made:
        if kube.job_state(namespace, job["metadata"]["name"]) == "missing":
            kube.apply(job)
    if kube.configmap_data(namespace, inf.configmap_name) is None:
        collect_profile(kube, owner, inf, [j["metadata"]["name"] for j in made])


def read_inputs(kube: Kube, namespace: str, inf: InferenceSpec, spec: Mapping[str, Any]) -> Inputs:
    """The workload of a parsed spec; the profile from its ConfigMap when it is not inline."""
    doc: dict[str, Any] = {"kind": KIND, "spec": dict(spec)}
    if inf.profile_source is not ProfileSource.INLINE:
        data = kube.configmap_data(namespace, inf.configmap_name)
        if data is None or inf.configmap_key not in data:
            what = "profiling Jobs" if inf.profile_source is ProfileSource.JOB else "ConfigMap"
            raise Pending(f"waiting for {what}: ConfigMap {inf.configmap_name}/{inf.configmap_key}")
        loaded = load_yaml(data[inf.configmap_key], f"configmap {inf.configmap_name}")
        profile = loaded.get("profile", loaded) if isinstance(loaded, dict) else loaded
        doc["spec"]["profile"] = {"inline": profile}
    return Inputs(parse_workload(doc), inf)


def collect_profile(
    kube: Kube, owner: builders.Owner, inf: InferenceSpec, names: list[str]
) -> None:
    """When every profiling Job is done, merge their profiles into the ConfigMap the plan reads."""
    states = {n: kube.job_state(owner.namespace, n) for n in names}
    failed = [n for n, s in states.items() if s == "failed"]
    if failed:
        fetch = fetch_problem(kube.fetch_failures(owner.namespace, {"job-name": failed[0]}))
        if fetch is not None:
            raise ProfileFailed(f"profiling Job {failed[0]}: {fetch[1]}", fetch[0])
        why = kube.job_failure(owner.namespace, failed[0])
        raise ProfileFailed(f"profiling Job {failed[0]} failed: {why}")
    if any(s != "succeeded" for s in states.values()):
        return
    docs = []
    for n in names:
        doc = jobs.profile_from_log(kube.job_log(owner.namespace, n))
        if doc is None:
            raise ProfileFailed(f"profiling Job {n} printed no profile")
        docs.append(doc)
    merged = jobs.merge_profiles(docs)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": builders.meta(owner, inf.configmap_name, "profile"),
            "data": {inf.configmap_key: yaml.safe_dump(merged, sort_keys=False)},
        }
    )


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str | None,
    name: str,
    uid: str,
    reason: str,
    memo: kopf.Memo,
    logger: Logger,
    **_: Any,
) -> None:
    """Gather the inputs, plan (``planning.plan_spec``, pure), put the plan in force."""
    assert namespace, "SerflowInference is namespaced"
    kube = shared_kube()
    gen = int(meta.get("generation") or 0)
    current = decode(status)
    owner = builders.Owner(name, namespace, uid)

    def refuse(refused: Refused) -> None:
        # Children are left as they were: a bad spec must not take serving down, and the
        # last good plan, if one runs, keeps serving (its epochs say how well); after a
        # restart, that plan is the one status.served describes.
        kopf.warn(body, reason=refused.reason, message=refused.message)
        if not isinstance(memo.get("placement"), Placement):
            served = served_placement(kube, owner, current)
            if served is not None:
                memo["placement"] = served
                logger.info("serving generation %d's plan while generation %d is refused",
                            served.plan.generation, gen)  # fmt: skip
        serving = isinstance(memo.get("placement"), Placement)
        written = refusal_status(refused, current, gen, utc_now(), serving)
        kube.patch_status(namespace, name, encode(written))

    try:
        inf = routes.with_route_sync(parse_inference(spec, name))
        if inf.profile_source is ProfileSource.JOB:
            start_profiling(kube, owner, inf, spec.get("prices"))
        inputs = read_inputs(kube, namespace, inf, spec)
    except InputError as e:
        return refuse(Refused("InvalidSpec", str(e)))
    except ProfileFailed as e:
        return refuse(Refused(e.reason, str(e)))
    except Pending as e:
        refuse(Refused("ProfilePending", str(e)))
        raise kopf.TemporaryError(str(e), delay=15) from None
    mismatch = fingerprint_mismatch(inf.model, inputs.workload.profile)
    if mismatch:
        return refuse(Refused("ProfileMismatch", mismatch))
    outside = stats_url_outside(inf.routing.stats_urls, namespace)
    if outside:
        return refuse(Refused("InvalidSpec", outside))
    ready = _ready(kube, namespace, builders.Names(name).pool)
    resume = reason == kopf.Reason.RESUME
    planned = plan_spec(owner, inf, inputs.workload, gen, current, resume, ready, utc_now())
    if isinstance(planned, Refused):
        return refuse(planned)
    placed = planned.placement
    for event in install(kube, placed.plan, placed.children):
        kopf.info(body, reason=event.reason.value, message=event.message)
    served = served_spec(dict(spec), gen)
    kube.patch_status(namespace, name, encode(replace(placed.status, served=served)))
    memo["placement"] = placed  # the epochs read it from here: no re-planning per epoch
    if planned.changed:
        kopf.info(body, reason="Planned", message=candidate_line(placed.plan.candidate))
    what = "kept" if planned.kept else "planned"
    logger.info("%s %s", what, placed.plan.candidate.setup.describe())


def served_placement(
    kube: Kube, owner: builders.Owner, status: InferenceStatus
) -> Placement | None:
    """The plan of the spec ``status.served`` keeps, as planning put it in force; None
    when there is none or it no longer plans (its profile gone or changed)."""
    as_then = as_when_served(status, utc_now())
    if as_then is None or as_then.served is None:
        return None
    served = as_then.served
    try:
        spec = json.loads(served.spec)
        inf = routes.with_route_sync(parse_inference(spec, owner.name))
        inputs = read_inputs(kube, owner.namespace, inf, spec)
    except (ValueError, InputError, Pending):
        return None
    if fingerprint_mismatch(inf.model, inputs.workload.profile):
        return None
    ready = _ready(kube, owner.namespace, builders.Names(owner.name).pool)
    planned = plan_spec(owner, inf, inputs.workload, served.generation, as_then, True, ready,
                        utc_now())  # fmt: skip
    return planned.placement if isinstance(planned, Planned) and planned.kept else None


def _ready(kube: Kube, namespace: str, deployment: str) -> int:
    d = kube.get("apps/v1", "Deployment", namespace, deployment)
    return int(((d or {}).get("status") or {}).get("readyReplicas") or 0)


CLOCK = Clock()
"""The epochs' clock."""
EPOCHS = EpochWatch()
"""The epochs under way, for the liveness probe."""


@kopf.on.probe(id="epochs", errors=kopf.ErrorsMode.PERMANENT)
def epochs_progress(**_: Any) -> dict[str, int]:
    """Fails the liveness probe (kopf answers 500) while the epochs are stalled."""
    late = EPOCHS.stalled(CLOCK.monotonic())
    if late:
        shown = ", ".join(late[:5])
        raise kopf.PermanentError(
            f"no epoch ended in {STALL_S:g} s; {len(late)} under way that long: {shown}"
        )
    return {"underWay": len(EPOCHS.started)}


EPOCH_THREADS = 10
"""Threads the epochs' blocking calls run on, their own (not asyncio's default pool, which
others share): at most this many API calls in flight at once, client-go's default burst
for a controller. Measured at 1,000 objects on two cores shared with the API server, 32
threads slowed the API server so much that creating the objects did not end in 25
minutes (226 s with asyncio's 6)."""
_EPOCH_POOL = ThreadPoolExecutor(max_workers=EPOCH_THREADS, thread_name_prefix="epoch")
T = TypeVar("T")


async def _in_epoch_pool(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_EPOCH_POOL, partial(fn, *args))


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0, initial_delay=1.0)
async def epoch_loop(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    logger: Logger,
    **_: Any,
) -> None:
    """Once per epoch: gather, decide, execute, with the plan planning left in ``memo``.

    ``spec``, ``status`` and ``meta`` are kopf's live views of the object (kept current
    by its watch), so the loop never GETs its own object. The carried state lives in
    this coroutine; it is seeded from status when the daemon starts (after a restart).
    """
    # Async, with the blocking API calls in worker threads: a sync daemon would hold one
    # of kopf's executor threads for the object's whole life and starve the others.
    routes.ROUTES.open(str(meta.get("namespace")), str(meta.get("name")))
    try:
        await _epochs(stopped, body, spec, status, meta, memo, logger)
    finally:
        # The object deleted, or this replica paused (another works now): its route is no
        # longer this process's to serve.
        routes.ROUTES.forget(str(meta.get("namespace")), str(meta.get("name")))


async def _epochs(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    memo: kopf.Memo,
    logger: Logger,
) -> None:
    kube = shared_kube()
    state: EpochState | None = None
    used: Placement | None = None
    last = CLOCK.monotonic()
    while not stopped:
        period = _epoch_seconds(spec)
        await stopped.wait(max(0.2, period - (CLOCK.monotonic() - last)))
        if stopped:
            return
        now = CLOCK.monotonic()
        lateness, last = max(0.0, now - (last + max(0.2, period))), now
        metrics.EPOCH_LATENESS.labels(meta.get("namespace"), meta.get("name")).set(lateness)
        placed = memo.get("placement")
        if not isinstance(placed, Placement) or not epoch_may_run(
            placed, meta.get("generation"), decode(status)
        ):
            continue
        if state is None:
            state = epoch_state_from_status(decode(status), placed)
        elif placed is not used:
            state = state.replanned(placed)
        used = placed
        conditions = decode(status).conditions or ()
        seen = meta.get("resourceVersion")
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        began = CLOCK.monotonic()
        EPOCHS.begin(key, began)
        try:
            generation = int(meta.get("generation") or 0)
            decision, written = await _in_epoch_pool(
                run_epoch, kube, placed.plan, state, CLOCK, conditions, seen, generation
            )
        except Exception:  # keep the loop alive; the next epoch retries
            logger.exception("epoch failed")
            continue
        finally:
            ended = CLOCK.monotonic()
            EPOCHS.end(key, ended)
            metrics.EPOCH_SECONDS.observe(ended - began)
        state = decision.state
        for e in decision.events:
            logger.info("%s: %s", e.reason.value, e.message)
        if not written:  # the object changed meanwhile: decide again on the new one
            logger.info("the object changed during the epoch: its status was not written")
            continue
        try:
            new = await _in_epoch_pool(
                replan_and_apply, kube, placed, decision.state, decision.ready,
                decision.status.conditions or (),
            )  # fmt: skip
        except Exception:  # the plan in force stays; the next re-ranking retries
            logger.exception("re-planning failed")
            continue
        if new is not None:
            replan_done, events = new
            memo["placement"] = replan_done.placement  # the next epoch runs it
            for e in (replan_done.event, *events):
                kopf.info(body, reason=e.reason.value, message=e.message)
                logger.info("%s: %s", e.reason.value, e.message)


def replan_and_apply(
    kube: Kube,
    placed: Placement,
    state: EpochState,
    ready: int,
    conditions: Sequence[Condition],
) -> tuple[Replan, list[Event]] | None:
    """When a re-ranking is due and replaces the plan: put it in force (its children,
    the old plan's functions pruned) and write its status; the events of the install."""
    new = replan(placed.plan, state.scaler, ready, conditions, utc_now())
    if isinstance(new, Kept):
        return None
    p = new.placement
    events = install(kube, p.plan, p.children)
    owner = p.plan.owner
    kube.patch_status(owner.namespace, owner.name, encode(p.status))
    return new, events


def _epoch_seconds(spec: Mapping[str, Any]) -> float:
    scaling = spec.get("scaling") or {}
    slo = (spec.get("slo") or {}).get("latencySeconds") or 6.0
    return float(scaling.get("epochSeconds") or slo)

"""kopf handlers: read, decide with ``serflow.policy``, write.

- create/update/resume: run the configurator and server-side apply the children;
- one daemon per object, once per epoch: read Envoy's counters, step the traffic
  monitor, every S epochs resize the pool, and move the route weights.

State that must survive a restart (monitor, epoch, desired size, last counters) lives in
the object's status.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf
import yaml

from serflow.controller import metrics
from serflow.controller.decide import (
    ConditionType,
    counter_rate,
    estimate_status,
    plan_status,
    same_setup,
    scaler_from_status,
    set_condition,
    with_prior,
)
from serflow.controller.kube import Kube, load_config, read_counters, stats_urls
from serflow.documents import load_yaml
from serflow.errors import InputError
from serflow.inference import InferenceSpec, ProfileSource, fingerprint_mismatch, parse_inference
from serflow.k8s import builders, jobs
from serflow.k8s.crd import GROUP, PLURAL, VERSION
from serflow.policy.balancer import pool_share, route_weights
from serflow.policy.configurator import Candidate, Plan, configure
from serflow.policy.scaler import desired_instances, step
from serflow.profile import parse_prices
from serflow.report import chosen_line
from serflow.spec import Workload, parse_workload

API_VERSION = f"{GROUP}/{VERSION}"
Logger = logging.Logger | logging.LoggerAdapter[Any]
KIND = "SerflowInference"


class Pending(Exception):
    """The inputs are not there yet (a profile ConfigMap, profiling Jobs)."""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="serflow.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="serflow.io")
    settings.posting.level = logging.INFO
    settings.peering.standalone = True
    settings.execution.max_workers = 16  # reconcile bursts (many objects created at once)
    # Strict mode: exact namespaces or the whole cluster, no namespace/CRD scanning (which
    # would need list/watch on namespaces and CRDs that the operator does not otherwise use).
    settings.scanning.disabled = True
    load_config()
    metrics.serve()


@dataclass(frozen=True)
class Inputs:
    """Everything read for one object."""

    workload: Workload
    inference: InferenceSpec


def read_inputs(kube: Kube, namespace: str, name: str, uid: str, spec: Mapping[str, Any]) -> Inputs:
    """Parse the spec; fetch the profile from a ConfigMap (or Jobs) when not inline."""
    inf = parse_inference(spec, name)
    doc: dict[str, Any] = {"kind": KIND, "spec": dict(spec)}
    if inf.profile_source is not ProfileSource.INLINE:
        if inf.profile_source is ProfileSource.JOB:
            owner = builders.Owner(name, namespace, uid)
            prices = parse_prices(spec.get("prices"), "spec.prices")
            made = jobs.profiler_jobs(owner, inf, prices)
            for job in made:
                if kube.job_state(namespace, job["metadata"]["name"]) == "missing":
                    kube.apply(job)
            if kube.configmap_data(namespace, inf.configmap_name) is None:
                collect_profile(kube, owner, inf, [j["metadata"]["name"] for j in made])
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
        raise InputError("spec.profile.fromJob", f"profiling Job {failed[0]} failed")
    if any(s != "succeeded" for s in states.values()):
        return
    docs = []
    for n in names:
        doc = jobs.profile_from_log(kube.job_log(owner.namespace, n))
        if doc is None:
            raise InputError("spec.profile.fromJob", f"profiling Job {n} printed no profile")
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
    logger: Logger,
    **_: Any,
) -> None:
    assert namespace, "SerflowInference is namespaced"
    kube = Kube()
    gen = int(meta.get("generation") or 0)
    conds = list(status.get("conditions") or [])

    def refuse(reason: str, message: str) -> None:
        # Children are left as they were: a bad spec must not take serving down.
        kopf.warn(body, reason=reason, message=message)
        c = set_condition(conds, ConditionType.CONFIGURED, False, reason, message, gen, now())
        c = set_condition(c, ConditionType.READY, False, reason, message, gen, now())
        kube.patch_status(namespace, name, {"conditions": c, "observedGeneration": gen})

    try:
        inputs = read_inputs(kube, namespace, name, uid, spec)
    except InputError as e:
        return refuse("InvalidSpec", str(e))
    except Pending as e:
        refuse("ProfilePending", str(e))
        raise kopf.TemporaryError(str(e), delay=15) from None
    w, inf = inputs.workload, inputs.inference
    mismatch = fingerprint_mismatch(inf.model, w.profile)
    if mismatch:
        return refuse("ProfileMismatch", mismatch)
    state = scaler_from_status(status)
    rate = state.estimate.ewma if state.estimate.samples else w.expected_rate
    plan = configure(w, rate)
    if plan.chosen is None:
        return refuse("NoFeasibleSetup", plan.reason)
    cand = plan.chosen
    old_plan = status.get("plan") or {}
    changed = not same_setup(old_plan, cand)
    target = state.estimate.target(w.scaling.k) if state.estimate.samples else rate
    desired = (
        desired_instances(target, cand.economics, w.scaling)
        if changed or not old_plan
        else state.desired
    )
    owner = builders.Owner(name, namespace, uid)
    ready = _ready(kube, namespace, builders.Names(name).pool)
    share = pool_share(ready, cand.economics.mu, state.estimate.ewma or rate)
    pool_w, fn_w = route_weights(share)
    for obj in builders.children(owner, inf, w, cand, desired, pool_w, f"g{gen}e{state.epoch}"):
        kube.apply(obj)
    c = set_condition(
        conds, ConditionType.CONFIGURED, True, "Planned", chosen_line(cand), gen, now()
    )
    c = set_condition(
        c, ConditionType.ROUTED, True, "RouteApplied", f"pool weight {pool_w}/1000", gen, now()
    )
    kube.patch_status(
        namespace,
        name,
        {
            "observedGeneration": gen,
            "conditions": c,
            "plan": plan_status(plan),
            "instances": {"desired": desired, "ready": ready},
            "split": {"poolShare": share, "poolWeight": pool_w, "functionWeight": fn_w},
            "costPerHour": cand.economics.cost_rate(rate) * 3600,
        },
    )
    if changed:
        kopf.info(body, reason="Planned", message=chosen_line(cand))
    logger.info("planned %s", cand.setup.describe())


def _ready(kube: Kube, namespace: str, deployment: str) -> int:
    d = kube.get("apps/v1", "Deployment", namespace, deployment)
    return int(((d or {}).get("status") or {}).get("readyReplicas") or 0)


def current_candidate(w: Workload, plan_st: Mapping[str, Any]) -> Candidate | None:
    """The candidate status.plan describes, re-costed from the same inputs."""
    plan: Plan = configure(w, float(plan_st.get("rate", 0.0)))
    for c in plan.candidates:
        if c.feasible and same_setup(plan_st, c):
            return c
    return None


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0, initial_delay=1.0)
async def epoch_loop(
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    uid: str,
    logger: Logger,
    **_: Any,
) -> None:
    # Async, with the blocking API calls in worker threads: a sync daemon would hold one
    # of kopf's executor threads for the object's whole life and starve the others.
    assert namespace, "SerflowInference is namespaced"
    kube = Kube()
    last = time.monotonic()
    while not stopped:
        obj = await asyncio.to_thread(kube.get, API_VERSION, KIND, namespace, name)
        if obj is None:
            return
        epoch_s = _epoch_seconds(obj.get("spec") or {})
        await stopped.wait(max(0.2, epoch_s - (time.monotonic() - last)))
        if stopped:
            return
        elapsed, last = time.monotonic() - last, time.monotonic()
        try:
            await asyncio.to_thread(tick, kube, namespace, name, uid, elapsed, logger)
        except (InputError, Pending) as e:
            logger.info("epoch skipped: %s", e)
        except Exception:  # keep the loop alive; the next epoch retries
            logger.exception("epoch failed")


def _epoch_seconds(spec: Mapping[str, Any]) -> float:
    scaling = spec.get("scaling") or {}
    slo = (spec.get("slo") or {}).get("latencySeconds") or 6.0
    return float(scaling.get("epochSeconds") or slo)


def tick(kube: Kube, namespace: str, name: str, uid: str, elapsed: float, logger: Logger) -> None:
    """One epoch: observe the rate, step the scaler, write replicas, weights and status."""
    obj = kube.get(API_VERSION, KIND, namespace, name)
    if obj is None:
        return
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conds = list(status.get("conditions") or [])
    if not any(c.get("type") == "Configured" and c.get("status") == "True" for c in conds):
        return
    inputs = read_inputs(kube, namespace, name, uid, spec)
    w, inf = inputs.workload, inputs.inference
    cand = current_candidate(w, status.get("plan") or {})
    if cand is None:
        return
    owner = builders.Owner(name, namespace, uid)
    names = builders.Names(name)
    pods = (
        {} if inf.routing.stats_urls else kube.pod_ips(namespace, builders.labels(owner, "router"))
    )
    urls = stats_urls(inf.routing.stats_urls, pods, builders.STATS_PORT)
    counters = read_counters(urls, f"http.{inf.routing.stat_prefix}.downstream_rq_total")
    prev = (status.get("traffic") or {}).get("counters") or {}
    rate = counter_rate(prev, counters, elapsed)
    state = with_prior(scaler_from_status(status), w.expected_rate)
    gen = int((obj.get("metadata") or {}).get("generation") or 0)
    patch: dict[str, Any] = {}
    if rate is None:
        patch["traffic"] = {**(status.get("traffic") or {}), "counters": counters}
        kube.patch_status(namespace, name, patch)
        return
    before = state.desired
    decision, state = step(state, rate, cand.economics, w.scaling)
    ready = _ready(kube, namespace, names.pool)
    body = kopf.Body(cast(kopf.RawBody, obj))
    if decision.rescaled and decision.desired != before:
        kube.apply(builders.pool_deployment(owner, inf, w, cand, decision.desired))
        msg = (
            f"pool {before} -> {decision.desired} instances "
            f"(target {decision.target_rate:.4g} req/s, T-CIP {cand.economics.tcip:.4g})"
        )
        kopf.info(body, reason="Scaled", message=msg)
        logger.info(msg)
    # Instances being scaled in drain: only the ones that stay take new traffic.
    share = pool_share(min(ready, decision.desired), cand.economics.mu, state.estimate.ewma)
    weights = route_weights(share)
    old = status.get("split") or {}
    if weights[0] != old.get("poolWeight"):
        kube.apply(builders.envoy_configmap(owner, inf, w, weights[0], f"g{gen}e{state.epoch}"))
        kopf.info(
            body,
            reason="Routed",
            message=f"pool weight {old.get('poolWeight')} -> {weights[0]}/1000",
        )
    ready_ok = ready >= decision.desired and _functions_ready(kube, owner, w, cand)
    t = now()
    c = set_condition(conds, ConditionType.SCALED, ready >= decision.desired, "PoolSize",
                      f"{ready}/{decision.desired} instances ready", gen, t)  # fmt: skip
    c = set_condition(
        c, ConditionType.ROUTED, True, "RouteApplied", f"pool weight {weights[0]}/1000", gen, t
    )
    c = set_condition(c, ConditionType.READY, ready_ok, "Serving" if ready_ok else "NotReady",
                      "pool, functions and route ready" if ready_ok else "waiting for the pool or functions",
                      gen, t)  # fmt: skip
    cost = cand.economics.cost_rate(state.estimate.ewma) * 3600
    patch = {
        "traffic": estimate_status(state, rate, decision.target_rate, counters),
        "instances": {"desired": decision.desired, "ready": ready},
        "split": {"poolShare": share, "poolWeight": weights[0], "functionWeight": weights[1]},
        "costPerHour": cost,
        "conditions": c,
    }
    kube.patch_status(namespace, name, patch)
    metrics.record(namespace, name, rate, state.estimate.ewma, state.estimate.dev,
                   decision.target_rate, decision.desired, ready, share, cost)  # fmt: skip


def _functions_ready(kube: Kube, owner: builders.Owner, w: Workload, cand: Candidate) -> bool:
    for st in builders.stages(owner, w, cand):
        ks = kube.get("serving.knative.dev/v1", "Service", owner.namespace, st.name)
        conds = ((ks or {}).get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            return False
    return True

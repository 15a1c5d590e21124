"""Release the SerflowInferences when the operator is uninstalled: ``python -m
serflow.controller.release``, the chart's pre-delete hook.

kopf puts a finalizer on every object it runs an epoch daemon for, and only a running
operator takes it off; after ``helm uninstall`` an object (or its namespace) deleted later
would wait for an operator that is not coming back. The hook stops the operator first
(its Deployment scaled to 0, its pods waited out: a running replica would put the
finalizer back), then takes the finalizer off every object it served. The objects stay, as
the CRD does (Helm keeps CRDs), and their children keep serving at their last size; an
operator installed again finds them and adds the finalizer again. Deleting them collects
their children by owner reference, with no operator.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serflow.k8s.crd import FINALIZER, GROUP, PLURAL, VERSION

WAIT_S = 120.0
"""How long to wait for the operator's pods to be gone (their grace period is 30 s)."""


@dataclass(frozen=True)
class Release:
    """One run of the hook."""

    deployment: str
    """The operator's Deployment, scaled to 0."""
    namespace: str
    """Where it runs (the release's namespace)."""
    selector: str
    """Its pods' label selector."""
    watched: tuple[str, ...]
    """The namespaces it watched; empty: every namespace."""


def finalizer_patch(meta: Mapping[str, Any], finalizer: str = FINALIZER) -> dict[str, Any] | None:
    """The merge patch that takes ``finalizer`` off an object (the others kept, and its
    resourceVersion, so a change made meanwhile is a conflict, not overwritten); None when
    it has none."""
    held = list(meta.get("finalizers") or [])
    if finalizer not in held:
        return None
    return {
        "metadata": {
            "finalizers": [f for f in held if f != finalizer],
            "resourceVersion": meta.get("resourceVersion"),
        }
    }


def _parse(argv: Sequence[str]) -> Release:
    ap = argparse.ArgumentParser(prog="python -m serflow.controller.release")
    ap.add_argument("--deployment", required=True, help="the operator's Deployment")
    ap.add_argument("--release-namespace", required=True, help="where it runs")
    ap.add_argument("--selector", required=True, help="its pods' label selector")
    ap.add_argument(
        "--namespace", action="append", default=[], help="a watched namespace (default: all)"
    )
    a = ap.parse_args(argv)
    return Release(a.deployment, a.release_namespace, a.selector, tuple(a.namespace))


def _wait(what: str, done: Callable[[], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while not done():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} after {seconds:g} s")
        time.sleep(1.0)


def run(r: Release) -> str:
    """Stop the operator, release its objects; one line saying what was done."""
    from kubernetes import client
    from kubernetes.client import ApiException

    from serflow.controller.kube import Kube, load_config

    load_config()
    api = Kube().api
    apps, core, custom = client.AppsV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)
    try:
        apps.patch_namespaced_deployment_scale(r.deployment, r.namespace, {"spec": {"replicas": 0}})
    except ApiException as e:
        if e.status != 404:  # gone already: nothing to stop
            raise

    def stopped() -> bool:
        pods = core.list_namespaced_pod(r.namespace, label_selector=r.selector)
        return not pods.items

    _wait("the operator's pods still run", stopped, WAIT_S)

    def objects() -> list[dict[str, Any]]:
        if not r.watched:
            listed: Any = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            return list(listed["items"])
        out: list[dict[str, Any]] = []
        for ns in r.watched:
            listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
            out += listed["items"]
        return out

    released = 0
    for _ in range(3):  # an object changed meanwhile (409) is read again
        conflicts = 0
        for o in objects():
            patch = finalizer_patch(o["metadata"])
            if patch is None:
                continue
            meta = o["metadata"]
            try:
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch
                )
                released += 1
            except ApiException as e:
                if e.status == 409:
                    conflicts += 1
                elif e.status != 404:
                    raise
        if not conflicts:
            return f"released {released} SerflowInference(s); operator {r.deployment} stopped"
    raise RuntimeError(f"objects kept changing; released {released}")


def main(argv: Sequence[str] | None = None) -> int:
    r = _parse(sys.argv[1:] if argv is None else argv)
    try:
        print(run(r), flush=True)
    except Exception as e:  # one line for the hook's log, not a traceback
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        status = getattr(e, "status", None)
        print(f"error: {f'{status} ' if status else ''}{reason}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

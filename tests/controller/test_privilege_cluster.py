"""Least privilege on the real control plane: what the chart's ServiceAccount may write in
each install mode, and the children (NetworkPolicies included) as the API server keeps them.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import config
from kubernetes.client import ApiException

from serflow.controller.decide import first_difference
from serflow.controller.kube import CACHED, DELETABLE, Kube
from serflow.inference import parse_inference
from serflow.k8s import builders
from serflow.policy.configurator import Granularity, PoolKind, configure
from serflow.spec import parse_workload
from serflow_testbed.harness import (
    CHART,
    SA,
    SYSTEM_NS,
    Cluster,
    can_i_names,
    free_port,
    install_chart,
    operator_argv,
    operator_env,
    sa_kubeconfig,
    stop_process,
    wait_for,
)
from tests.controller.manifests import manifest

pytestmark = pytest.mark.cluster

NAMESPACED_RELEASE = "serflow-scoped"
NAMESPACED_NS = "serflow-scoped-system"


@dataclass(frozen=True)
class Installs:
    """Both install modes of the chart, side by side on one control plane."""

    watched: tuple[str, str]
    """The namespaces the namespaced release watches."""
    unwatched: str
    """A namespace neither release was told about."""


@pytest.fixture(scope="module")
def installs(cluster: Cluster) -> Iterator[Installs]:
    install_chart(cluster)  # the default: cluster-wide
    tag = uuid.uuid4().hex[:6]
    watched = (f"sfp-a-{tag}", f"sfp-b-{tag}")
    unwatched = f"sfp-c-{tag}"
    for ns in (*watched, unwatched):
        cluster.kubectl("create", "namespace", ns)
    cluster.helm("upgrade", "--install", NAMESPACED_RELEASE, str(CHART), "-n", NAMESPACED_NS,
                 "--create-namespace", "--wait=false", "--set", "watchAllNamespaces=false",
                 "--set", f"watchNamespaces={{{','.join(watched)}}}")  # fmt: skip
    try:
        yield Installs(watched, unwatched)
    finally:
        # No pod runs on this control plane, so the uninstall hook's Job would never end
        # (the kind test runs it).
        cluster.helm("uninstall", NAMESPACED_RELEASE, "-n", NAMESPACED_NS, "--no-hooks",
                     check=False)  # fmt: skip
        for ns in (*watched, unwatched):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _can(cluster: Cluster, who: str, verb: str, resource: str, *where: str) -> bool:
    r = cluster.kubectl("auth", "can-i", verb, resource, *where, "--as", who, check=False)
    return r.stdout.strip() == "yes"


WRITES = [
    ("patch", "deployments.apps"),
    ("create", "deployments.apps"),
    ("patch", "services"),
    ("list", "services.serving.knative.dev"),
    ("patch", "configmaps"),
    ("patch", "services.serving.knative.dev"),
    ("patch", "networkpolicies.networking.k8s.io"),
    ("patch", "poddisruptionbudgets.policy"),
    ("create", "jobs.batch"),
    ("create", "events"),
    ("patch", "serflowinferences.serflow.io"),
    *((verb, "pods") for verb in ("list", "watch")),  # the routers' (stats and their cache)
]
"""Every write the operator makes, and the listing that finds functions to prune; with
the lists and watches of every kind the epochs' caches hold (``kube.CACHED``) and the
deletes of every kind it deletes (``kube.DELETABLE``), below."""


def test_namespaced_mode_writes_only_in_the_watched_namespaces(
    cluster: Cluster, installs: Installs
) -> None:
    scoped = f"system:serviceaccount:{NAMESPACED_NS}:{SA}"
    wide = f"system:serviceaccount:{SYSTEM_NS}:{SA}"
    wrong = []
    elsewhere = (installs.unwatched, "kube-system", "default", NAMESPACED_NS)
    cached = can_i_names(cluster, ((w.api_version, w.kind) for w in CACHED))
    deleted = can_i_names(cluster, DELETABLE)
    for verb, res in [*WRITES, *((v, r) for r in cached for v in ("list", "watch")),
                      *(("delete", r) for r in deleted)]:  # fmt: skip
        for ns in installs.watched:
            if not _can(cluster, scoped, verb, res, "-n", ns):
                wrong.append(f"namespaced: cannot {verb} {res} in watched {ns}")
        for ns in elsewhere:
            if _can(cluster, scoped, verb, res, "-n", ns):
                wrong.append(f"namespaced: may {verb} {res} in {ns}")
        # The default mode is cluster-wide, as documented.
        if not _can(cluster, wide, verb, res, "-n", installs.unwatched):
            wrong.append(f"cluster-wide: cannot {verb} {res} in {installs.unwatched}")
    for verb, res in (("list", "serflowinferences.serflow.io"), ("list", "pods")):
        if _can(cluster, scoped, verb, res, "--all-namespaces"):
            wrong.append(f"namespaced: may {verb} {res} in every namespace")
    for ns in elsewhere:
        if _can(cluster, scoped, "get", "serflowinferences.serflow.io", "-n", ns):
            wrong.append(f"namespaced: may read serflowinferences in {ns}")
    assert not wrong, wrong


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "watchNamespaces must list at least one namespace"),
        (["watchNamespaces={a,a}"], "items at 0 and 1 are equal"),
        (["watchNamespaces={A_b}"], "does not match pattern"),
    ],
)
def test_namespaced_mode_with_bad_namespaces_is_refused(
    cluster: Cluster, values: list[str], message: str
) -> None:
    sets = [a for v in values for a in ("--set", v)]
    r = cluster.helm("template", "x", str(CHART), "--set", "watchAllNamespaces=false", *sets,
                     check=False)  # fmt: skip
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


def _hybrid_chained(m: dict[str, Any]) -> Any:
    for c in configure(parse_workload(m), 30.0).candidates:
        s = c.setup
        if c.feasible and s.pool is PoolKind.HYBRID and s.granularity is Granularity.CHAINED:
            return c
    raise AssertionError("no feasible hybrid chained plan")


def test_children_applied_by_the_namespaced_operator_identity_are_kept_as_built(
    cluster: Cluster, installs: Installs, tmp_path: Path
) -> None:
    """Every child of the widest plan, NetworkPolicies included, applied with the operator's
    own apply under the namespaced ServiceAccount, reads back as built: the API server
    accepts it and keeps every field the builders set, so the epoch sees no drift."""
    ns = installs.watched[0]
    m = manifest("priv")
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(m))
    uid = json.loads(cluster.kubectl("get", "serflowinference", "priv", "-n", ns,
                                     "-o", "json").stdout)["metadata"]["uid"]  # fmt: skip
    owner = builders.Owner("priv", ns, uid)
    objs = builders.children(owner, parse_inference(m["spec"], "priv"), parse_workload(m),
                             _hybrid_chained(m), 2, 300)  # fmt: skip
    assert sum(o["kind"] == "NetworkPolicy" for o in objs) == 4
    scoped = Kube(config.new_client_from_config(
        str(sa_kubeconfig(cluster, tmp_path / "sa", 600, namespace=NAMESPACED_NS))))  # fmt: skip
    admin = Kube(config.new_client_from_config(str(cluster.kubeconfig)))
    for obj in objs:
        scoped.apply(obj)
    kept = {
        f"{o['kind']} {o['metadata']['name']}": first_difference(
            o, admin.get(o["apiVersion"], o["kind"], ns, o["metadata"]["name"])
        )
        for o in objs
    }
    assert kept == dict.fromkeys(kept), kept
    # Outside the watched namespaces the same identity writes nothing.
    other = {**objs[-1], "metadata": {**objs[-1]["metadata"], "namespace": installs.unwatched}}
    with pytest.raises(ApiException) as refused:
        scoped.apply(other)
    assert refused.value.status == 403


def test_namespaced_operator_configures_its_object(
    cluster: Cluster, installs: Installs, tmp_path: Path
) -> None:
    """The real operator, run with the namespaced ServiceAccount's token on a watched
    namespace, reconciles a SerflowInference: no cluster-wide permission is needed."""
    ns = installs.watched[1]
    kc = sa_kubeconfig(cluster, tmp_path / "sa", 600, namespace=NAMESPACED_NS)
    log = tmp_path / "operator.log"
    proc = subprocess.Popen(operator_argv(ns), env={**os.environ, **operator_env(kc)},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip
    try:
        # kwok's pods have fake addresses, never dialled: the epochs read a loopback
        # endpoint where nothing listens (no sample), not the router pods.
        idle = f"http://127.0.0.1:{free_port()}/stats"
        scoped = manifest("scoped", routing={"statsUrls": [idle]})
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(scoped))

        def configured() -> bool:
            r = cluster.kubectl("get", "serflowinference", "scoped", "-n", ns, "-o", "json")
            conds = (json.loads(r.stdout).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Configured" and c["status"] == "True" for c in conds)

        wait_for("the namespaced operator to configure its object", configured, timeout=90)
        names = cluster.kubectl("get", "networkpolicies", "-n", ns, "-o", "name",
                                "-l", "app.kubernetes.io/instance=scoped").stdout.split()  # fmt: skip
        assert sorted(names) == [f"networkpolicy.networking.k8s.io/scoped-{s}"
                                 for s in ("envoy", "pool", "spill", "tail")]  # fmt: skip
    finally:
        stop_process(proc, 30)
        print(log.read_text()[-3000:])


POD_WRITES = [
    (verb, res)
    for res in ("pods", "pods/exec", "pods/attach", "pods/portforward", "pods/ephemeralcontainers",
                "pods/eviction", "pods/binding", "pods/status")
    for verb in ("create", "update", "patch", "delete", "deletecollection")
]  # fmt: skip
"""Every way to write a pod, or to run code in one."""


def _can_i_list(cluster: Cluster, who: str, *where: str) -> str:
    r = cluster.kubectl("auth", "can-i", "--list", *where, "--as", who)
    return str(r.stdout)


def test_the_default_install_writes_no_pod_anywhere(cluster: Cluster, installs: Installs) -> None:
    """The default install (cluster-wide) may not write a pod in any namespace, nor exec,
    attach or evict one: changing a pod's image is running code in its namespace. A new
    route reaches the routers through their route-sync sidecars, not through their pods.
    The can-i table of its ServiceAccount is printed, in a namespace it does not own."""
    wide = f"system:serviceaccount:{SYSTEM_NS}:{SA}"
    table = _can_i_list(cluster, wide, "-n", installs.unwatched)
    print(f"kubectl auth can-i --list -n {installs.unwatched} --as {wide}\n{table}")
    rows = [line.split() for line in table.splitlines()[1:] if line.strip()]
    on_pods = [r for r in rows if r[0] == "pods" or r[0].startswith("pods/")]
    assert on_pods, table  # it does read them (the stats listeners, the Jobs' logs)
    for row in on_pods:
        verbs = set(row[-1].strip("[]").split())
        assert verbs <= {"get", "list", "watch"}, row
    wrong = []
    for verb, res in POD_WRITES:
        name, _, sub = res.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        for where in (["--all-namespaces"], ["-n", installs.unwatched], ["-n", "kube-system"]):
            r = cluster.kubectl("auth", "can-i", verb, name, *extra, *where, "--as", wide,
                                check=False)  # fmt: skip
            if r.stdout.strip() != "no":
                wrong.append(f"{verb} {res} {' '.join(where)}: {r.stdout.strip()}")
    assert not wrong, wrong
    # Nor does the chart install an admission policy to narrow a pod write.
    got = cluster.kubectl("get", "validatingadmissionpolicies", "-o", "name", check=False)
    assert "serflow" not in got.stdout, got.stdout

"""Pure builders of the children: names, owners, placement, security, routing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from serflow import wire
from serflow.inference import parse_inference
from serflow.k8s import builders, envoy, timeouts
from serflow.k8s.crd import crd_yaml
from serflow.k8s.jobs import MARKER, merge_profiles, profile_from_log, profiler_jobs
from serflow.policy.configurator import Granularity, PoolKind, configure
from serflow.spec import parse_workload
from tests.controller.manifests import REPO, manifest

OWNER = builders.Owner("vgg", "ns1", "uid-1")


def _plan(pool: PoolKind, granularity: Granularity | None = None, cut: int = 0):  # type: ignore[no-untyped-def]
    m = manifest()
    w = parse_workload(m)
    for c in configure(w, 30.0).candidates:
        s = c.setup
        if (
            c.feasible
            and s.pool is pool
            and s.granularity == granularity
            and (not cut or s.cut == cut)
        ):
            return m, w, c
    raise AssertionError("no such candidate")


def _by_kind(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


@pytest.mark.parametrize(
    ("pool", "granularity", "cut", "functions"),
    [
        (PoolKind.FAAS, None, 0, ["vgg-spill"]),
        (PoolKind.IAAS, None, 0, ["vgg-spill"]),
        (PoolKind.HYBRID, Granularity.FUSED, 2, ["vgg-spill", "vgg-tail"]),
        (PoolKind.HYBRID, Granularity.CHAINED, 2, ["vgg-spill", "vgg-p3", "vgg-p4"]),
    ],
)
def test_children_per_plan(
    pool: PoolKind, granularity: Granularity | None, cut: int, functions: list[str]
) -> None:
    m, w, cand = _plan(pool, granularity, cut)
    inf = parse_inference(m["spec"], "vgg")
    objs = builders.children(OWNER, inf, w, cand, 3, 250)
    kinds = _by_kind(objs)
    assert sorted(
        n for k, n in kinds if k == "Service" and kinds[(k, n)]["apiVersion"].startswith("serving")
    ) == sorted(functions)
    for o in objs:
        ref = o["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "SerflowInference",
            "vgg",
            "uid-1",
            True,
        )
        assert o["metadata"]["namespace"] == "ns1"
    dep = kinds[("Deployment", "vgg-pool")]
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 3
    c = pod["containers"][0]
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["terminationGracePeriodSeconds"] >= w.objective.slo_s
    args = c["args"]
    assert args[args.index("--cut") + 1] == str(cut)
    tails = [args[i + 1] for i, a in enumerate(args) if a == "--tail"]
    # Each tail is the function's pinned Revision (the default access).
    pinned = [kinds[("Service", f)]["spec"]["template"]["metadata"]["name"] for f in functions]
    assert [t.split("=", 1)[1] for t in tails] == [
        f"knative-revision://ns1/{r}" for r in pinned[1:]
    ]
    for f, r in zip(functions, pinned, strict=True):
        assert r.startswith(f"{f}-") and len(r) == len(f) + 6
    if pool is not PoolKind.FAAS:
        assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": cand.setup.instance}
    if granularity is Granularity.CHAINED:
        assert tails[0].startswith(f"{cut + 1}-{cut + 1}=knative-revision://ns1/vgg-p{cut + 1}-")
        assert tails[-1].startswith("4-K=")


def _route(cm: dict[str, Any]) -> dict[str, Any]:
    return dict(
        json.loads(cm["data"]["route.yaml"])["resources"][0]["virtual_hosts"][0]["routes"][0]
    )


def test_revision_access_reaches_each_pinned_revision_with_knatives_routing_headers() -> None:
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.FUSED, 2)
    objs = _by_kind(
        builders.children(OWNER, parse_inference(m["spec"], "vgg"), w, cand, 1, 500)
    )
    spill = objs[("Service", "vgg-spill")]["spec"]["template"]["metadata"]["name"]
    route = _route(objs[("ConfigMap", "vgg-envoy")])
    assert route["route"]["host_rewrite_literal"] == f"{spill}.ns1.svc.cluster.local"
    assert {h["header"]["key"]: h["header"]["value"] for h in route["request_headers_to_add"]} == {
        "Knative-Serving-Revision": spill,
        "Knative-Serving-Namespace": "ns1",
    }
    assert all(
        h["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD" for h in route["request_headers_to_add"]
    )
    boot = yaml.safe_load(objs[("ConfigMap", "vgg-envoy")]["data"]["envoy.yaml"])
    fn = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "functions")
    addr = fn["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert addr["socket_address"] == {"address": f"{spill}.ns1.svc.cluster.local", "port_value": 80}


def test_route_access_reaches_the_knative_services_urls() -> None:
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.FUSED, 2)
    m["spec"]["functions"] = {"access": "route"}
    objs = _by_kind(
        builders.children(OWNER, parse_inference(m["spec"], "vgg"), w, cand, 1, 500)
    )
    args = objs[("Deployment", "vgg-pool")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--tail") + 1] == "3-K=http://vgg-tail.ns1.svc.cluster.local"
    route = _route(objs[("ConfigMap", "vgg-envoy")])
    assert route["route"]["host_rewrite_literal"] == "vgg-spill.ns1.svc.cluster.local"
    assert "request_headers_to_add" not in route


def test_a_changed_function_template_pins_a_new_revision_and_rolls_the_router() -> None:
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.FUSED, 2)

    def build(functions: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        m["spec"]["functions"] = functions
        inf = parse_inference(m["spec"], "vgg")
        return _by_kind(builders.children(OWNER, inf, w, cand, 1, 500))

    def pinned(objs: dict[tuple[str, str], dict[str, Any]]) -> str:
        return str(objs[("Service", "vgg-spill")]["spec"]["template"]["metadata"]["name"])

    def rolled(objs: dict[tuple[str, str], dict[str, Any]]) -> str:
        tmpl = objs[("Deployment", "vgg-envoy")]["spec"]["template"]
        return str(tmpl["metadata"]["annotations"][builders.BOOTSTRAP_HASH_ANNOTATION])

    a, same, b = build({"maxScale": 7}), build({"maxScale": 7}), build({"maxScale": 8})
    assert pinned(a) == pinned(same) and rolled(a) == rolled(same)
    assert pinned(a) != pinned(b) and rolled(a) != rolled(b)
    # The route weights change without a new bootstrap: Envoy watches the route file.
    inf = parse_inference(m["spec"], "vgg")
    again = _by_kind(builders.children(OWNER, inf, w, cand, 1, 100))
    assert rolled(again) == rolled(b)


def test_knative_service_scaling_and_resources() -> None:
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.FUSED, 2)
    m["spec"]["functions"] = {"containerConcurrency": 2, "minScale": 1, "maxScale": 7}
    inf = parse_inference(m["spec"], "vgg")
    ks = _by_kind(builders.children(OWNER, inf, w, cand, 1, 0))[("Service", "vgg-tail")]
    tmpl = ks["spec"]["template"]
    ann = tmpl["metadata"]["annotations"]
    assert ann["autoscaling.knative.dev/min-scale"] == "1"
    assert ann["autoscaling.knative.dev/max-scale"] == "7"
    assert tmpl["spec"]["containerConcurrency"] == 2
    c = tmpl["spec"]["containers"][0]
    assert c["args"][c["args"].index("--partitions") + 1] == "3-K"
    assert c["resources"]["limits"]["memory"] == "2048Mi"


def test_envoy_configmap_carries_the_weights_and_never_exposes_admin() -> None:
    m, w, cand = _plan(PoolKind.IAAS)
    inf = parse_inference(m["spec"], "vgg")
    cm = builders.envoy_configmap(OWNER, inf, w, cand, 375)
    route = json.loads(cm["data"]["route.yaml"])
    # The version is the route's content: the same weights give the same version (no
    # rewrite on a restart), other weights another.
    again = json.loads(builders.envoy_configmap(OWNER, inf, w, cand, 375)["data"]["route.yaml"])
    other = json.loads(builders.envoy_configmap(OWNER, inf, w, cand, 376)["data"]["route.yaml"])
    assert route["version_info"] == again["version_info"] != other["version_info"]
    assert route["version_info"] == envoy.route_version(
        {k: v for k, v in route["resources"][0].items() if k != "@type"}
    )
    clusters = route["resources"][0]["virtual_hosts"][0]["routes"][0]["route"]["weighted_clusters"][
        "clusters"
    ]
    assert {c["name"]: c["weight"] for c in clusters} == {"pool_spill": 375, "functions": 625}
    boot = yaml.safe_load(cm["data"]["envoy.yaml"])
    assert boot["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert (
        boot["static_resources"]["listeners"][0]["address"]["socket_address"]["address"]
        == "0.0.0.0"
    )


@pytest.mark.parametrize("prefix", [None, "sfi_vgg"])
def test_envoy_counts_under_the_specs_stat_prefix_on_the_wire_ports(prefix: str | None) -> None:
    m, w, cand = _plan(PoolKind.IAAS)
    if prefix:
        m["spec"]["routing"] = {"statPrefix": prefix}
    inf = parse_inference(m["spec"], "vgg")
    assert inf.routing.stat_prefix == (prefix or wire.STAT_PREFIX)
    objs = _by_kind(builders.children(OWNER, inf, w, cand, 1, 500))
    boot = yaml.safe_load(objs[("ConfigMap", "vgg-envoy")]["data"]["envoy.yaml"])
    listeners = {li["name"]: li for li in boot["static_resources"]["listeners"]}
    hcm = listeners["ingress"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["stat_prefix"] == inf.routing.stat_prefix
    ports = {n: li["address"]["socket_address"]["port_value"] for n, li in listeners.items()}
    assert ports == {"ingress": wire.ENVOY_PORT, "stats": wire.STATS_PORT}
    router = objs[("Deployment", "vgg-envoy")]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in router["ports"]} == {
        "http": wire.ENVOY_PORT,
        "stats": wire.STATS_PORT,
    }
    assert router["image"] == wire.ENVOY_IMAGE
    pool = objs[("Deployment", "vgg-pool")]["spec"]["template"]["spec"]["containers"][0]
    assert pool["ports"] == [{"name": "http", "containerPort": wire.WORKER_PORT}]
    spill = objs[("Service", "vgg-spill")]["spec"]["template"]["spec"]["containers"][0]
    assert spill["ports"] == [{"containerPort": wire.FUNCTION_PORT}]


def test_the_routers_sidecar_hands_envoy_its_route_from_the_operator() -> None:
    """Envoy watches an emptyDir the route-sync sidecar writes (first from the ConfigMap,
    by an init container, then from the operator's route server), read-only for Envoy; the
    sidecar runs the operator's image under the restricted profile with bounded resources,
    and no container of the router has a token or writes anything else."""
    from dataclasses import replace

    m, w, cand = _plan(PoolKind.IAAS)
    inf = parse_inference(m["spec"], "vgg")
    told = replace(inf, routing=replace(inf.routing, sync_image="reg/op:7",
                                        routes_url="http://op.sys.svc:8081/"))  # fmt: skip
    objs = _by_kind(builders.children(OWNER, told, w, cand, 1, 500))
    boot = yaml.safe_load(objs[("ConfigMap", "vgg-envoy")]["data"]["envoy.yaml"])
    listeners = {li["name"]: li for li in boot["static_resources"]["listeners"]}
    hcm = listeners["ingress"]["filter_chains"][0]["filters"][0]["typed_config"]
    source = hcm["rds"]["config_source"]["path_config_source"]
    assert source == {"path": f"{builders.ROUTE_DIR}/{envoy.ROUTE_FILE}",
                      "watched_directory": {"path": builders.ROUTE_DIR}}  # fmt: skip
    pod = objs[("Deployment", "vgg-envoy")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (init,) = pod["initContainers"]
    envoy_c, sync = pod["containers"]
    cm_route = f"{builders.ENVOY_DIR}/{envoy.ROUTE_FILE}"
    assert init["args"] == ["--from", cm_route, "--to", builders.ROUTE_DIR, "--once"]
    assert sync["args"] == ["--from", cm_route, "--to", builders.ROUTE_DIR,
                            "--url", "http://op.sys.svc:8081/routes/ns1/vgg"]  # fmt: skip
    for c in (init, sync):
        assert c["image"] == "reg/op:7"
        assert c["command"] == ["python", "-m", "serflow.routesync"]
        assert c["securityContext"] == envoy_c["securityContext"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["limits"]["memory"] == "64Mi"
        assert {"name": "route", "mountPath": builders.ROUTE_DIR} in c["volumeMounts"]
    assert {"name": "route", "mountPath": builders.ROUTE_DIR, "readOnly": True} in (
        envoy_c["volumeMounts"]
    )
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["route"] == {"name": "route", "emptyDir": {"sizeLimit": "4Mi"}}
    # Without a route server the sidecar follows the ConfigMap alone; by default it runs
    # the chart's default operator image.
    plain = _by_kind(builders.children(OWNER, inf, w, cand, 1, 500))
    sync = plain[("Deployment", "vgg-envoy")]["spec"]["template"]["spec"]["containers"][1]
    assert "--url" not in sync["args"] and sync["image"] == wire.OPERATOR_IMAGE
    # The route the server hands out is the ConfigMap's, and only a router's ConfigMap has one.
    cm = objs[("ConfigMap", "vgg-envoy")]
    assert builders.router_route(cm) == cm["data"][envoy.ROUTE_FILE]
    assert builders.router_route({**cm, "metadata": {"labels": {}}}) is None
    assert builders.router_route(objs[("Deployment", "vgg-envoy")]) is None


def test_profiler_jobs_one_per_config() -> None:
    m = manifest()
    m["spec"]["profile"] = {"fromJob": {"taus": [0.5, 0.9]}}
    inf = parse_inference(m["spec"], "vgg")
    w = parse_workload(manifest())
    jobs = profiler_jobs(OWNER, inf, w.prices)
    names = [j["metadata"]["name"] for j in jobs]
    assert names == ["vgg-profile-c6i-xlarge", "vgg-profile-c6i-large", "vgg-profile-fn-2048"]
    assert jobs[0]["spec"]["template"]["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "c6i.xlarge"
    }
    script = jobs[0]["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "profile --config c6i.xlarge --batch 10 --taus 0.5,0.9" in script


def test_profiles_printed_by_jobs_are_merged() -> None:
    prof = manifest()["spec"]["profile"]["inline"]
    logs = []
    for cfg in prof["configs"]:
        one = {**prof, "configs": [cfg]}
        text = yaml.safe_dump({"kind": "Profile", "profile": one})
        logs.append(f"measuring {cfg['name']}...\nwrote /tmp/profile.yaml\n{MARKER}\n{text}")
    docs = [profile_from_log(log) for log in logs]
    assert all(d is not None for d in docs)
    merged = merge_profiles([d for d in docs if d])
    assert [c["name"] for c in merged["profile"]["configs"]] == [
        "c6i.xlarge",
        "c6i.large",
        "fn-2048",
    ]
    w = parse_workload(
        {**manifest(), "spec": {**manifest()["spec"], "profile": {"inline": merged["profile"]}}}
    )
    assert w.profile.config("c6i.large").seconds_per_request == (0.04, 0.06, 0.08, 0.1)
    assert profile_from_log("no marker here") is None


def test_generated_crd_files_are_current() -> None:
    want = crd_yaml()
    for path in (
        "crds/serflowinference.yaml",
        "charts/serflow-operator/crds/serflowinference.yaml",
    ):
        assert (REPO / path).read_text() == want, f"regenerate {path}: python -m serflow.k8s.crd"


def test_pod_annotations_reach_the_pool_pods() -> None:
    m, w, cand = _plan(PoolKind.IAAS)
    m["spec"]["model"]["podAnnotations"] = {"pod-ready.stage.kwok.x-k8s.io/delay": "10s"}
    inf = parse_inference(m["spec"], "vgg")
    dep = builders.pool_deployment(OWNER, inf, w, cand, 1)
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "pod-ready.stage.kwok.x-k8s.io/delay": "10s"
    }


def test_knative_services_are_cluster_local_tokenless_with_cpu_requests() -> None:
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.FUSED, 2)
    inf = parse_inference(m["spec"], "vgg")
    objs = builders.children(OWNER, inf, w, cand, 1, 0)
    knative = [o for o in objs if o["apiVersion"].startswith("serving.knative.dev")]
    assert len(knative) == 2
    vcpu = w.profile.config(cand.setup.function).vcpu
    for ks in knative:
        assert ks["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
        pod = ks["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        requests = pod["containers"][0]["resources"]["requests"]
        assert requests["cpu"] == f"{max(100, int(vcpu * 1000))}m"
    for o in objs:
        if o["kind"] == "Deployment":  # the pool and Envoy never call the API either
            assert o["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def _peers(policy: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """Port -> the peers the policy admits on it (an empty peer list: anyone)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            assert port["protocol"] == "TCP"
            out.setdefault(port["port"], []).extend(rule.get("from", [{}]))
    return out


def _components(selector: dict[str, Any]) -> set[str]:
    assert selector["matchLabels"] == {"app.kubernetes.io/instance": "vgg"}
    (expr,) = selector["matchExpressions"]
    assert (expr["key"], expr["operator"]) == ("app.kubernetes.io/component", "In")
    return set(expr["values"])


def test_network_policies_admit_only_the_intended_peers() -> None:
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.CHAINED, 2)
    inf = parse_inference(m["spec"], "vgg")
    objs = builders.children(OWNER, inf, w, cand, 1, 0)
    pols = {o["metadata"]["name"]: o for o in objs if o["kind"] == "NetworkPolicy"}
    assert sorted(pols) == ["vgg-envoy", "vgg-pool", "vgg-spill", "vgg-tail"]
    # Every pod the plan runs is selected by exactly one policy.
    selected = [c for p in pols.values() for c in _components(p["spec"]["podSelector"])]
    pod_components = {
        o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in objs
        if o["kind"] in ("Deployment", "Service") and "template" in o["spec"]
    }
    assert pod_components <= set(selected) and len(selected) == len(set(selected))
    for p in pols.values():
        assert p["spec"]["policyTypes"] == ["Ingress"]
        assert p["metadata"]["ownerReferences"][0]["uid"] == "uid-1"

    knative = {
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": ["knative-serving", "kourier-system"],
                }
            ]
        }
    }
    pool = _peers(pols["vgg-pool"])
    assert list(pool) == [wire.WORKER_PORT]
    assert [_components(p["podSelector"]) for p in pool[wire.WORKER_PORT]] == [{"router"}]

    for name, caller in (("vgg-spill", "router"), ("vgg-tail", "pool")):
        fn = _peers(pols[name])
        assert wire.FUNCTION_PORT not in fn  # reached through the queue-proxy only
        for port in (8012, 8013):
            peers = fn[port]
            assert knative in peers and len(peers) == 2
            (own,) = [p for p in peers if p != knative]
            assert set(own) == {"podSelector"} and _components(own["podSelector"]) == {caller}
        assert fn[9090] == [knative]  # the autoscaler scrapes the queue-proxy's metrics
    assert _components(pols["vgg-tail"]["spec"]["podSelector"]) == {
        "function-tail",
        "function-stage",
    }

    router = _peers(pols["vgg-envoy"])
    assert router[wire.ENVOY_PORT] == [{}]  # clients come from anywhere
    assert router[wire.STATS_PORT] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": builders.OPERATOR_POD_LABELS}}
    ]
    assert set(router) == {wire.ENVOY_PORT, wire.STATS_PORT}


DIGEST = "ab" * 32


def test_a_pinned_artefact_reaches_every_server_and_the_profiling_jobs() -> None:
    """Pool pods and functions run the named artefact and refuse any other digest; the
    profiling Jobs measure the same artefact."""
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.FUSED, 2)
    m["spec"]["model"]["artefact"] = {"path": "/models/resnet", "digest": DIGEST}
    inf = parse_inference(m["spec"], "vgg")
    objs = builders.children(OWNER, inf, w, cand, 3, 250)
    servers = [
        o["spec"]["template"]["spec"]["containers"][0]["args"]
        for o in objs
        if o["kind"] in ("Deployment", "Service") and "template" in o["spec"]
        and o["metadata"]["name"] != "vgg-envoy"
    ]  # fmt: skip
    assert len(servers) == 3  # the pool, the fused tail, the spill function
    for args in servers:
        assert args[args.index("--artefact") + 1] == "/models/resnet"
        assert args[args.index("--digest") + 1] == DIGEST
    m["spec"]["profile"] = {"fromJob": {"taus": [0.5]}}
    jobs = profiler_jobs(OWNER, parse_inference(m["spec"], "vgg"), w.prices)
    for job in jobs:
        assert (
            "--artefact /models/resnet"
            in job["spec"]["template"]["spec"]["containers"][0]["command"][2]
        )


@pytest.mark.parametrize("granularity", [Granularity.FUSED, Granularity.CHAINED])
def test_every_server_serves_the_model_under_the_objects_name(granularity: Granularity) -> None:
    """The Open Inference Protocol's /v2/models/NAME is the SerflowInference's name on
    the pool and on every function, whichever one the router sends a request to."""
    m, w, cand = _plan(PoolKind.HYBRID, granularity, 2)
    objs = builders.children(OWNER, parse_inference(m["spec"], "vgg"), w, cand, 3, 250)
    servers = [
        o["spec"]["template"]["spec"]["containers"][0]["args"]
        for o in objs
        if o["kind"] in ("Deployment", "Service") and "template" in o["spec"]
        and o["metadata"]["name"] != "vgg-envoy"
    ]  # fmt: skip
    assert len(servers) >= 3
    for args in servers:
        assert args[args.index("--model-name") + 1] == OWNER.name == "vgg"


def test_the_shipped_artefact_is_the_default() -> None:
    m, w, cand = _plan(PoolKind.IAAS)
    objs = builders.children(OWNER, parse_inference(m["spec"], "vgg"), w, cand, 3, 250)
    for o in objs:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "vgg-pool":
            args = o["spec"]["template"]["spec"]["containers"][0]["args"]
            assert "--artefact" not in args and "--digest" not in args


def test_servers_run_as_many_threads_as_their_config_has_cpus() -> None:
    """As the profiler measured them; left to itself a runtime sizes its thread pools by
    the node's cores, not the pod's share."""
    m, w, cand = _plan(PoolKind.HYBRID, Granularity.FUSED, 2)
    objs = builders.children(OWNER, parse_inference(m["spec"], "vgg"), w, cand, 3, 250)
    for o in objs:
        if o["kind"] not in ("Deployment", "Service") or "template" not in o["spec"]:
            continue
        if o["metadata"]["name"] == "vgg-envoy":
            continue
        args = o["spec"]["template"]["spec"]["containers"][0]["args"]
        cfg = cand.setup.instance if o["kind"] == "Deployment" else cand.setup.function
        want = max(1, round(w.profile.config(cfg).vcpu))
        assert args[args.index("--threads") + 1] == str(want), o["metadata"]["name"]


@pytest.mark.parametrize(
    ("pool", "granularity", "cut"),
    [
        (PoolKind.IAAS, None, 0),
        (PoolKind.HYBRID, Granularity.FUSED, 2),
        (PoolKind.HYBRID, Granularity.CHAINED, 2),
    ],
)
def test_the_tail_call_ends_before_the_router_gives_up_and_warms_the_tail_first(
    pool: PoolKind, granularity: Granularity | None, cut: int
) -> None:
    """The manifest's D = 1 s and SLO 2 s: the pool's part may take ceil(2 D + SLO) = 4 s,
    so a worker's tail call gets what is left after the batch wait (1 s): 3 s, then its
    survivors are answered 503 and retried on the functions; an attempt on a worker is cut
    after 1 + 3 + 1 = 5 s. A function's attempt may wait a cold start (30 s) and twice
    the SLO: 34 s. Envoy waits for a pool attempt and two function attempts (the first
    host may hang): 5 + 2 * 34 + 1 = 74 s. A hybrid pool is ready only once its tail
    answers (--warm-tail)."""
    m, w, cand = _plan(pool, granularity, cut)
    inf = parse_inference(m["spec"], "vgg")
    assert (w.objective.epoch, w.objective.slo_s) == (1, 2)
    assert (builders.router_timeout_s(w), builders.tail_timeout_s(w)) == (74, 3)
    assert builders.pool_attempt_timeout_s(w) == 5
    assert timeouts.function_attempt_timeout_s(w) == 34
    kinds = _by_kind(builders.children(OWNER, inf, w, cand, 1, 500))
    assert _route(kinds[("ConfigMap", "vgg-envoy")])["route"]["timeout"] == "74s"
    args = kinds[("Deployment", "vgg-pool")]["spec"]["template"]["spec"]["containers"][0]["args"]
    if pool is PoolKind.HYBRID:
        i = args.index("--stage-timeout")
        assert args[i : i + 3] == ["--stage-timeout", "3", "--warm-tail"]
    else:  # no tail: nothing to wait for
        assert "--stage-timeout" not in args and "--warm-tail" not in args

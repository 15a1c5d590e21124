"""The local control plane is a real one: scheduling onto kwok nodes, readiness,
garbage collection, ServiceAccount tokens, Knative's real CRD schemas, pinned versions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient, ApiException

from serflow_testbed.harness import Cluster, wait_for

pytestmark = pytest.mark.cluster


def test_two_fake_nodes_with_pool_labels(api_client: ApiClient) -> None:
    nodes = client.CoreV1Api(api_client).list_node(label_selector="serflow.io/pool").items
    types = sorted(n.metadata.labels["node.kubernetes.io/instance-type"] for n in nodes)
    assert types == ["c6i.large", "c6i.xlarge"]
    for node in nodes:
        ready = [c.status for c in node.status.conditions or [] if c.type == "Ready"]
        assert ready == ["True"], node.metadata.name


def test_deployment_of_three_replicas_becomes_available(
    api_client: ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api_client)
    labels = {"app": "echo"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="echo"),
            spec=client.V1DeploymentSpec(
                replicas=3,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        node_selector={"serflow.io/pool": "default"},
                        containers=[
                            client.V1Container(
                                name="echo",
                                image="registry.invalid/echo:1",
                                resources=client.V1ResourceRequirements(
                                    requests={"cpu": "100m", "memory": "64Mi"}
                                ),
                            )
                        ],
                    ),
                ),
            ),
        ),
    )

    def available() -> int | None:
        status = apps.read_namespaced_deployment_status("echo", namespace).status
        return status.available_replicas if status.available_replicas == 3 else None

    assert wait_for("3 available replicas", available, 120, 0.5) == 3
    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector="app=echo")
    assert len(pods.items) == 3
    nodes = {p.spec.node_name for p in pods.items}
    assert nodes <= {"pool-c6i-xlarge-0", "pool-c6i-large-0"}
    assert all(p.status.phase == "Running" for p in pods.items)


def test_child_is_garbage_collected_with_its_owner(api_client: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name="child",
                owner_references=[
                    client.V1OwnerReference(
                        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
                    )
                ],
            )
        ),
    )
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    assert wait_for("the child ConfigMap to be garbage-collected", child_gone, 120, 0.5)


def test_service_account_token_authenticates(api_client: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    token = core.create_namespaced_service_account_token(
        "robot",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    # The root-CA publisher writes kube-root-ca.crt into every namespace.
    wait_for(
        "kube-root-ca.crt",
        lambda: [
            c
            for c in core.list_namespaced_config_map(namespace).items
            if c.metadata.name == "kube-root-ca.crt"
        ],
        120,
        0.5,
    )
    # A client that authenticates with the token only (no admin client certificate).
    conf = copy.copy(api_client.configuration)
    conf.cert_file = conf.key_file = None
    conf.api_key = {"authorization": f"Bearer {token}"}
    with ApiClient(conf) as robot:
        review = client.AuthenticationV1Api(robot).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"
        # RBAC is on: a fresh ServiceAccount may not list pods.
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(robot).list_namespaced_pod(namespace)
        assert denied.value.status == 403


def knative_service(name: str, spec_extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"image": "registry.invalid/fn:1"}],
                    **spec_extra,
                }
            }
        },
    }


def test_knative_service_is_validated_by_its_real_schema(
    api_client: ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api_client)
    args = ("serving.knative.dev", "v1", namespace, "services")

    created = custom.create_namespaced_custom_object(
        *args, knative_service("ok", {"containerConcurrency": 4, "timeoutSeconds": 30})
    )
    assert created["spec"]["template"]["spec"]["containerConcurrency"] == 4

    with pytest.raises(ApiException) as wrong_type:
        custom.create_namespaced_custom_object(
            *args, knative_service("bad-type", {"containerConcurrency": "lots"})
        )
    assert wrong_type.value.status == 422
    message = json.loads(wrong_type.value.body)["message"]
    assert "spec.template.spec.containerConcurrency" in message
    assert "integer" in message

    with pytest.raises(ApiException) as unknown:
        custom.create_namespaced_custom_object(
            *args, knative_service("bad-field", {"bogusField": 1}), field_validation="Strict"
        )
    assert unknown.value.status == 400
    message = json.loads(unknown.value.body)["message"]
    assert 'unknown field "spec.template.spec.bogusField"' in message


def test_knative_and_gateway_api_crds_are_established(api_client: ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    names = {crd.metadata.name for crd in ext.list_custom_resource_definition().items}
    for name in (
        "services.serving.knative.dev",
        "configurations.serving.knative.dev",
        "revisions.serving.knative.dev",
        "routes.serving.knative.dev",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
    ):
        assert name in names
    svc = ext.read_custom_resource_definition("services.serving.knative.dev")
    schema = svc.spec.versions[0].schema.open_apiv3_schema
    assert "template" in schema.properties["spec"].properties


def test_kubectl_version_reports_the_pinned_server(
    cluster: Cluster, versions: dict[str, str]
) -> None:
    pinned = versions["KUBERNETES_VERSION"]
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == pinned
    assert out["clientVersion"]["gitVersion"] == pinned


def test_helm_version(cluster: Cluster, versions: dict[str, str]) -> None:
    pinned = versions["HELM_VERSION"]
    out = cluster.helm("version", "--short").stdout.strip()
    assert out.startswith(pinned), out


def test_kwok_pod_ready_delay_models_a_cold_start(api_client: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(
                name="cold", annotations={"pod-ready.stage.kwok.x-k8s.io/delay": "3s"}
            ),
            spec=client.V1PodSpec(
                node_selector={"node.kubernetes.io/instance-type": "c6i.large"},
                containers=[client.V1Container(name="c", image="registry.invalid/w:1")],
            ),
        ),
    )

    def ready_at() -> Any:
        pod = core.read_namespaced_pod_status("cold", namespace)
        ready = [c for c in pod.status.conditions or [] if c.type == "Ready" and c.status == "True"]
        return (pod, ready[0].last_transition_time) if ready else None

    pod, ready_time = wait_for("the cold pod to become Ready", ready_at, 120, 0.5)
    assert pod.spec.node_name == "pool-c6i-large-0"
    # kwok held the pod for its 3 s delay (server timestamps have 1 s resolution).
    assert (ready_time - pod.metadata.creation_timestamp).total_seconds() >= 2


def test_helm_installs_a_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  answer: {{ .Values.answer | quote }}\n"
    )
    cluster.helm("install", "rel", str(chart), "-n", namespace, "--set", "answer=42", "--wait")
    out = cluster.kubectl("get", "configmap", "rel-cm", "-n", namespace, "-o", "json")
    assert json.loads(out.stdout)["data"] == {"answer": "42"}


def test_server_side_apply_conflict_and_status_subresource(
    cluster: Cluster, namespace: str
) -> None:
    def manifest(concurrency: int) -> str:
        return json.dumps(knative_service("fn", {"containerConcurrency": concurrency}))

    ns = ("-n", namespace)
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=operator", *ns, "-f", "-", input=manifest(4)
    )
    other = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=someone-else",
        *ns,
        "-f",
        "-",
        input=manifest(8),
        check=False,
    )
    assert other.returncode != 0
    assert "conflict" in other.stderr.lower()
    assert "spec.template.spec.containerConcurrency" in other.stderr

    # Status is a subresource: written only through it, as Knative's controller would.
    status = json.dumps({"status": {"url": "http://fn.example", "observedGeneration": 1}})
    cluster.kubectl(
        "patch", "ksvc", "fn", *ns, "--subresource=status", "--type=merge", "-p", status
    )
    cluster.kubectl(
        "patch",
        "ksvc",
        "fn",
        *ns,
        "--type=merge",
        "-p",
        json.dumps({"status": {"url": "http://ignored"}}),
    )
    got = json.loads(cluster.kubectl("get", "ksvc", "fn", *ns, "-o", "json").stdout)
    assert got["status"]["url"] == "http://fn.example"
    assert got["spec"]["template"]["spec"]["containerConcurrency"] == 4

"""A model of the user's own, fetched by the storage initializer on a real kind cluster
(issue 25): a network defined here is exported (``export_network``), uploaded to a
PersistentVolumeClaim and to an S3-compatible server in the cluster (Versity's gateway),
and served by the operator from each URI (``spec.model.storageUri``), its answers the
whole network's own; a wrong digest leaves an object not serving, with the initializer's
reason in its Ready condition and no pod of it serving.

- ``pvc://``: a hostPath PersistentVolume under the directory both kind nodes mount
  (``hack/kind.sh``; kind's local-path provisioner is a stand-in here), filled through a
  short-lived pod that mounts the claim (``kubectl cp``). The object is hybrid with one
  pool instance and profiled by the operator's Jobs, so the artefact is fetched on both
  nodes: by the instance-type Job and the pool pod on the pool node, by the function-size
  Job and the functions on the control plane.
- ``s3://``: ``hack/kind.sh load versitygw`` (the binary of ``hack/versitygw.sh``), a
  Deployment with a restricted security context on emptyDirs, its root keys from a
  Secret; the bucket and objects PUT through ``kubectl port-forward`` on 127.0.0.1,
  SigV4-signed by awscrt. The object is FaaS-only with an inline profile whose exit
  shares and accuracy are the network's own on its calibration set.
- The shipped sequence model (``seq-chatterbot-langid-transformer``, int64 token ids),
  uploaded to the same bucket, profiled by the operator's Job and served FaaS: held-out
  rows by raw ``/infer`` and by gRPC with tritonclient, each answer the network's own.
- A wrong digest (its inline profile's ``artefactDigest`` the same wrong one, as the CRD
  requires): Ready=False, reason ArtefactMismatch, the initializer's line quoted.

The cluster is the session's (tests/kind/conftest.py), shared with the end-to-end test.
Skipped only where no Docker engine can run or the binaries cannot be built, saying why.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serflow_testbed.harness import Cluster, wait_for
from serflow_testbed.kind import (
    ENVOY_IMAGE,
    FUNCTION_IMAGE,
    POOL_IMAGE,
    STORAGE_IMAGE,
    STORAGE_IMAGES,
    VERSITYGW_IMAGE,
    KindSession,
    KindUnavailable,
    install_operator,
    kind_env,
    load_images,
    pinned,
    port_forward,
    router_url,
    status_of,
    wait_ready,
)
from serflow_testbed.reference import reference
from serflow_testbed.s3 import signed_put

pytestmark = pytest.mark.kind

VOCAB, LENGTH, WIDTH, CLASSES = 50, 12, 16, ("neg", "neutral", "pos")
K = 3
"""Stages of the test's network: an embedding, then two residual layers, an exit after each."""
BUCKET, PREFIX, CLAIM, FOLDER = "models", "tokens/v1", "artefacts", "tokens/v1"
SEQ, SEQ_PREFIX, SEQ_TAU, SEQ_ROWS = "seq-chatterbot-langid-transformer", "langid/v1", 0.85, 60
"""The shipped sequence model (int64 token ids, 15 languages), served from the bucket as
a user's would be, profiled by the operator's Job on the function size it serves on: its
held-out rows, by raw ``/infer`` and by gRPC (tritonclient)."""
S3_PORT, REGION = 7070, "us-east-1"
KEY, SECRET = "serflow-kind-key", "serflow-kind-secret-0123456789"
UPLOADER_IMAGE = STORAGE_IMAGE
"""Any image with tar (kubectl cp) serves; this one is pushed here."""


def say(msg: str) -> None:
    print(f"kind storage: {msg}", flush=True)


# -- the network, defined here ----------------------------------------------------------


def _export(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Export a tiny token network into ``root``; its calibration inputs and labels (the
    network's own final classes, so that a profile's accuracy is agreement with the last
    exit)."""
    import torch
    from torch import nn

    from serflow_runtime.export import export_network

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.head = nn.Linear(WIDTH, len(CLASSES))

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.embed(ids).mean(dim=1)
            return h, self.head(h)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh())
            self.head = nn.Linear(WIDTH, len(CLASSES))

        def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = h + self.mlp(h)
            return h, self.head(h)

    torch.manual_seed(25)
    stages = [Embed(), Layer(), Layer()]
    ids = np.random.default_rng(25).integers(0, VOCAB, (60, LENGTH), dtype=np.int64)
    with torch.no_grad():
        h = torch.from_numpy(ids)
        for st in stages:
            st.eval()
            h, logits = st(h)
    labels = logits.argmax(dim=1).numpy().astype(np.int64)
    export_network(
        stages, root, name="tokens", example=torch.from_numpy(ids[:4]), classes=CLASSES,
        calibration=(ids, labels), input_name="tokens", input_range=(0, VOCAB - 1),
        describes={"architecture": "embedding-mlp", "note": "untrained, defined in a kind test"},
    )  # fmt: skip
    return ids, labels


def _tau(model: Any, rows: np.ndarray) -> float:
    """A tau in the widest gap between the confidences of the early exits for ``rows``,
    among the middle half of the first exit's, rounded as the operator writes taus
    (``%g``): no row lies near it, where batch-dependent float sums could tip an exit."""
    from serflow_runtime.engine import confidence
    from serflow_testbed.reference import all_logits

    conf = sorted({float(c) for lg in all_logits(model, rows)[:-1] for c in confidence(lg)})
    first = sorted(float(c) for c in confidence(all_logits(model, rows)[0]))
    lo, hi = first[len(first) // 4], first[3 * len(first) // 4]
    gaps = [(b - a, a, b) for a, b in itertools.pairwise(conf) if lo <= a and b <= hi]
    width, a, b = max(gaps)
    tau = round((a + b) / 2, 4)
    assert a + width / 4 < tau < b - width / 4, (a, b, tau)
    return tau


@dataclass
class Store:
    """The test namespace with the artefact uploaded to each store."""

    cluster: Cluster
    namespace: str
    root: Path
    """The exported artefact on this machine."""
    digest: str
    rows: np.ndarray
    """The requests sent (token ids)."""
    tau: float
    want: list[tuple[int, int]]
    """(exit, class) of each row, from the whole network here."""
    profile: dict[str, Any]
    """An inline profile of the artefact for FaaS (fn-512), its exit shares measured here."""

    def kubectl(self, *args: str, check: bool = True, timeout: float = 300) -> Any:
        return self.cluster.run("kubectl", "-n", self.namespace, *args, check=check,
                                timeout=timeout)  # fmt: skip

    def get(self, kind: str, name: str = "", selector: str = "") -> Any:
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if selector:
            args += ["-l", selector]
        r = self.kubectl(*args, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None


# -- the stores -------------------------------------------------------------------------


def _versitygw(ns: str) -> list[dict[str, Any]]:
    """Versity's gateway: posix backend on emptyDirs (metadata in a sidecar folder, no
    xattrs needed), root keys from a Secret, non-root on a read-only root file system."""
    labels = {"app": "versitygw"}
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "versitygw-root"},
         "stringData": {"ROOT_ACCESS_KEY_ID": KEY, "ROOT_SECRET_ACCESS_KEY": SECRET}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "versitygw"},
         "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                        "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [{
                        "name": "versitygw",
                        "image": VERSITYGW_IMAGE,
                        "args": ["--port", f":{S3_PORT}", "--region", REGION, "--quiet",
                                 "posix", "--sidecar", "/data/meta", "/data/root"],
                        "envFrom": [{"secretRef": {"name": "versitygw-root"}}],
                        "ports": [{"name": "s3", "containerPort": S3_PORT}],
                        "readinessProbe": {"tcpSocket": {"port": "s3"}, "periodSeconds": 1},
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                      "limits": {"memory": "256Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "root", "mountPath": "/data/root"},
                                         {"name": "meta", "mountPath": "/data/meta"},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": v, "emptyDir": {"sizeLimit": "64Mi"}}
                                for v in ("root", "meta", "tmp")],
                },
            },
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "versitygw"},
         "spec": {"selector": labels, "ports": [{"name": "s3", "port": S3_PORT,
                                                  "targetPort": "s3"}]}},
        # What the storage initializer reads (spec.model.storageSecret): the gateway by its
        # Service's name, the region and the keys.
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "model-store"},
         "stringData": {"AWS_ENDPOINT_URL": f"http://versitygw.{ns}.svc:{S3_PORT}",
                        "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": KEY,
                        "AWS_SECRET_ACCESS_KEY": SECRET}},
    ]  # fmt: skip


def _claim(ns: str, shared: str) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume in the directory every node mounts from this machine
    (the same files on either node, as a network file system would be), bound to the
    claim ``CLAIM`` of the namespace."""
    pv = f"{ns}-{CLAIM}"
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": f"{shared}/{ns}", "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": ns, "name": CLAIM},
         }},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": CLAIM, "namespace": ns},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "64Mi"}}}},
    ]  # fmt: skip


def _uploader(ns: str) -> dict[str, Any]:
    """A short-lived pod with the claim mounted read-write. Root without capabilities: the
    kubelet made the volume's folder root's own (hostPath ignores fsGroup)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "uploader", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "uploader",
                "image": UPLOADER_IMAGE,
                "command": ["sleep", "600"],
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "claim", "mountPath": "/mnt/claim"}],
            }],
            "volumes": [{"name": "claim", "persistentVolumeClaim": {"claimName": CLAIM}}],
        },
    }  # fmt: skip


# -- the objects ------------------------------------------------------------------------


def _sfi(s: Store, name: str, uri: str, *, digest: str, profile: dict[str, Any],
         pools: list[str], instances: bool, min_instances: int = 0,
         tau: float | None = None) -> dict[str, Any]:  # fmt: skip
    model: dict[str, Any] = {
        "image": POOL_IMAGE,
        "functionImage": FUNCTION_IMAGE,
        "storageImage": STORAGE_IMAGE,
        "storageUri": uri,
        "artefact": {"digest": digest, "maxMiB": 16},
        "batch": 100,
    }
    if uri.startswith("s3://"):
        model["storageSecret"] = "model-store"
    prices: dict[str, Any] = {
        "mode": "per-use",
        "functions": {"perGBSecond": 0.0042, "perInvocation": 0.0, "keepAliveSeconds": 20,
                      "sizes": [{"name": "fn-512", "memoryMiB": 512}]},
    }  # fmt: skip
    if instances:  # hack/kind.sh labels its pool node so
        prices["instances"] = [{"name": "c6i.large", "perHour": 0.085}]
    return {
        "apiVersion": "serflow.io/v1alpha1",
        "kind": "SerflowInference",
        "metadata": {"name": name, "namespace": s.namespace},
        "spec": {
            "model": model,
            "slo": {"latencySeconds": 3, "targetAccuracy": 0},
            "thresholds": [s.tau if tau is None else tau],
            "pools": pools,
            "prices": prices,
            "profile": profile,
            "traffic": {"expectedRate": 5},
            "functions": {"maxScale": 1},  # room beside Knative on the control plane
            # One router: a stopping one holds its CPU while it drains (route timeout +
            # 2 s), and four objects come and go on a two-core control plane.
            "routing": {"image": ENVOY_IMAGE, "replicas": 1},
            "scaling": {"epochSeconds": 2, "intervalEpochs": 3, "policy": "paper",
                        "replan": False, "minInstances": min_instances},
        },
    }  # fmt: skip


def _inline_profile(model: Any, x: np.ndarray, y: np.ndarray, tau: float,
                    digest: str) -> dict[str, Any]:  # fmt: skip
    """FaaS on fn-512: the exit shares and accuracy at tau measured here on the
    calibration set; the seconds per request a generous guess (the network is tiny)."""
    got = reference(model, x, tau)
    shares = [sum(e == i for e, _ in got) / len(got) for i in range(1, K + 1)]
    accuracy = sum(c == int(t) for (_, c), t in zip(got, y, strict=True)) / len(got)
    return {"inline": {
        "fingerprint": {"stages": K, "artefactDigest": digest},
        "batch": 100,
        "configs": [{"name": "fn-512", "kind": "function", "vcpu": 0.289, "memoryMiB": 512,
                     "coldStartSeconds": 3.0, "secondsPerRequest": [2e-5] * K}],
        "thresholds": [{"tau": tau, "accuracy": round(accuracy, 4),
                        "exitShares": [round(v, 6) for v in shares]}],
    }}  # fmt: skip


def _clear_of(model: Any, rows: np.ndarray, tau: float, margin: float = 1e-3) -> np.ndarray:
    """The rows whose early exits' confidences all lie ``margin`` or more from ``tau``: a
    server batching them otherwise than here (float sums in another order) decides each
    as the whole network does here."""
    from serflow_runtime.engine import confidence
    from serflow_testbed.reference import all_logits

    near = np.zeros(len(rows), dtype=bool)
    for lg in all_logits(model, rows)[:-1]:
        near |= np.abs(confidence(lg) - tau) < margin
    return rows[~near]


def _ask(url: str, row: np.ndarray) -> tuple[int, dict[str, Any]]:
    """POST one row of token ids (raw little-endian int64) to the router's /infer."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=90)
    try:
        conn.request("POST", u.path, body=row.astype("<i8").tobytes(),
                     headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, {"body": body[:300].decode(errors="replace")}
    finally:
        conn.close()


def _served_like_the_network(s: Store, name: str, rows: np.ndarray | None = None,
                             want: list[tuple[int, int]] | None = None) -> list[str]:  # fmt: skip
    """Every row (the store's, or ``rows``) through the object's router, a few at once:
    each answer the whole network's (exit, class), none failed. Where they ran."""
    rows = s.rows if rows is None else rows
    want = s.want if want is None else want
    url = router_url(s.cluster, s.namespace, name)

    def reached() -> tuple[int, dict[str, Any]] | None:
        """The first row's answer once the router's new NodePort is reached (kube-proxy
        programs it within seconds): only a refused connection is tried again."""
        try:
            return _ask(url, rows[0])
        except ConnectionError:
            return None

    answers = [wait_for(f"{name}'s router at {url}", reached, 60, every=1)]
    with ThreadPoolExecutor(8) as pool:
        answers += pool.map(lambda r: _ask(url, r), rows[1:])
    failed = [(i, code, a) for i, (code, a) in enumerate(answers) if code != 200]
    assert not failed, f"{len(failed)} of {len(answers)} failed: {failed[:3]}"
    got = [(int(a["exit"]), int(a["class"])) for _, a in answers]
    assert got == want, [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True))
                         if g != w]  # fmt: skip
    return [str((a.get("ran") or [{}])[0].get("on", "")) for _, a in answers]


def _plan(status: dict[str, Any]) -> dict[str, Any]:
    """The plan's setup, as a person reads it."""
    keys = ("pool", "instance", "cut", "function", "tau", "accuracy")
    return {k: status["plan"][k] for k in keys if status["plan"].get(k) not in (None, "")}


def _fetch_messages(s: Store, selector: str) -> list[str]:
    """The storage initializer's termination message in each pod selected where it has
    ended: its current state's, else its last one's (a failed one restarts, backing off)."""
    out = []
    for p in (s.get("pods", selector=selector) or {}).get("items", []):
        for cs in p["status"].get("initContainerStatuses") or []:
            if cs["name"] != "fetch-artefact":
                continue
            for state in (cs.get("state"), cs.get("lastState")):
                ended = (state or {}).get("terminated")
                if ended:
                    out.append(str(ended.get("message", "")).strip())
                    break
    return out


def _ready_pods(s: Store, name: str) -> list[str]:
    """Pods of the object that serve it (the pool's and the functions', not the router's)
    and are Ready."""
    out = []
    for p in (s.get("pods", selector=f"app.kubernetes.io/instance={name}") or {})["items"]:
        comp = p["metadata"]["labels"].get("app.kubernetes.io/component", "")
        if comp == "router":
            continue
        conds = {c["type"]: c["status"] for c in p["status"].get("conditions") or []}
        if conds.get("Ready") == "True":
            out.append(p["metadata"]["name"])
    return out


# -- the fixture and the tests ----------------------------------------------------------

PVC_NAME, S3_NAME, WRONG_NAME = "from-pvc", "from-s3", "wrong-digest"


@pytest.fixture(scope="module")
def kind(session: KindSession) -> Cluster:
    """The session's cluster with the operator installed from the chart."""
    cluster = session.running
    assert cluster is not None
    install_operator(cluster)
    return cluster


@pytest.fixture(scope="module")
def store(kind: Cluster, session: KindSession,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:  # fmt: skip
    from serflow_runtime import artefact
    from serflow_runtime.runtimes import open_model

    t0 = time.monotonic()
    try:
        load_images(*STORAGE_IMAGES)
    except KindUnavailable as e:
        pytest.skip(f"the kind path cannot run here: {e}")
    say(f"hack/kind.sh load {' '.join(STORAGE_IMAGES)}: {time.monotonic() - t0:.0f} s")

    root = tmp_path_factory.mktemp("own") / "tokens"
    x, y = _export(root)
    digest = artefact.load(root).digest
    model = open_model(root, "onnx", threads=1)
    rows = np.random.default_rng(26).integers(0, VOCAB, (40, LENGTH), dtype=np.int64)
    tau = _tau(model, rows)
    want = reference(model, rows, tau)
    assert len({e for e, _ in want}) >= 2, f"tau {tau} takes one exit only: {want}"
    say(f"exported {artefact.load(root).name} (K={K}, digest {digest[:12]}...), tau {tau}, "
        f"exits {sorted({e for e, _ in want})}")  # fmt: skip

    ns = f"storage-{uuid.uuid4().hex[:6]}"
    kind.kubectl("create", "namespace", ns)
    s = Store(kind, ns, root, digest, rows, tau, want, _inline_profile(model, x, y, tau, digest))
    shared = kind_env()["SERFLOW_KIND_SHARED"]
    try:
        t1 = time.monotonic()
        kind.apply(pinned([*(dict(d, metadata={**d["metadata"], "namespace": ns})
                             for d in _versitygw(ns)), *_claim(ns, shared), _uploader(ns)]))  # fmt: skip
        # The PersistentVolumeClaim: through a pod that mounts it.
        s.kubectl("wait", "--for=condition=Ready", "pod/uploader", "--timeout=120s")
        s.kubectl("exec", "uploader", "--", "mkdir", "-p", f"/mnt/claim/{FOLDER.rsplit('/', 1)[0]}")
        s.kubectl("cp", str(root), f"{ns}/uploader:/mnt/claim/{FOLDER}")
        listed = s.kubectl("exec", "uploader", "--", "ls", f"/mnt/claim/{FOLDER}").stdout.split()
        assert sorted(listed) == sorted(p.name for p in root.iterdir()), listed
        s.kubectl("delete", "pod", "uploader", "--wait=false")
        # S3: the bucket and the objects, PUT through a port-forward on 127.0.0.1.
        s.kubectl("rollout", "status", "deployment/versitygw", "--timeout=120s")
        with port_forward(kind, ns, "service/versitygw", S3_PORT) as port:
            put = signed_put(f"http://127.0.0.1:{port}", KEY, SECRET, REGION)
            put(BUCKET, b"")
            for f in sorted(root.iterdir()):
                put(f"{BUCKET}/{PREFIX}/{f.name}", f.read_bytes())
            for f in sorted(artefact.resolve(SEQ).iterdir()):
                put(f"{BUCKET}/{SEQ_PREFIX}/{f.name}", f.read_bytes())
        say(f"versitygw up, artefact in the claim and the bucket: {time.monotonic() - t1:.0f} s")
        # Profiled by Jobs on both nodes: started now, it runs while the other tests do.
        kind.apply(pinned([_sfi(s, PVC_NAME, f"pvc://{CLAIM}/{FOLDER}", digest=digest,
                         profile={"fromJob": {"taus": [tau]}}, pools=["hybrid"], instances=True,
                         min_instances=1)]))  # fmt: skip
        yield s
    finally:
        kind.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        kind.kubectl("delete", "persistentvolume", f"{ns}-{CLAIM}", "--wait=false", check=False)


def test_a_wrong_digest_is_not_served(store: Store) -> None:
    s = store
    wrong = "0" * 64
    profile = json.loads(json.dumps(s.profile))
    profile["inline"]["fingerprint"]["artefactDigest"] = wrong
    t0 = time.monotonic()
    s.cluster.apply(pinned([_sfi(s, WRONG_NAME, f"s3://{BUCKET}/{PREFIX}", digest=wrong, profile=profile,
                          pools=["faas"], instances=False)]))  # fmt: skip

    def mismatch() -> dict[str, Any] | None:
        conds = {c["type"]: c for c in status_of(s.cluster, s.namespace, WRONG_NAME).get(
            "conditions") or []}  # fmt: skip
        ready = conds.get("Ready") or {}
        return ready if ready.get("reason") == "ArtefactMismatch" else None

    ready = wait_for("Ready=False ArtefactMismatch", mismatch, 300, every=2)
    say(f"{WRONG_NAME}: ArtefactMismatch {time.monotonic() - t0:.0f} s after apply: "
        f"{ready['message']}")  # fmt: skip
    line = f"mismatch: manifest.json has digest {s.digest[:12]}..., expected {wrong[:12]}..."
    assert ready["status"] == "False"
    assert line in ready["message"], ready
    # The initializer said so in its pod, and no pod of the object serves it: the fetch
    # runs before the server starts.
    msgs = _fetch_messages(s, f"app.kubernetes.io/instance={WRONG_NAME}")
    assert any(m == line for m in msgs), msgs
    assert not _ready_pods(s, WRONG_NAME)
    time.sleep(10)  # and it stays so
    assert not _ready_pods(s, WRONG_NAME)
    st = status_of(s.cluster, s.namespace, WRONG_NAME)
    assert {c["type"]: c for c in st["conditions"]}["Ready"]["reason"] == "ArtefactMismatch", st
    s.kubectl("delete", "sfi", WRONG_NAME, "--wait=false")  # room on the control plane


def _faas_from_s3(s: Store, name: str, prefix: str, model: str, digest: str,
                  profile: dict[str, Any], tau: float | None = None,
                  timeout: float = 420) -> dict[str, Any]:  # fmt: skip
    """Apply a FaaS object serving ``s3://BUCKET/prefix``, wait for Ready; its status, once
    every storage initializer of it said it fetched ``model`` at ``digest``."""
    t0 = time.monotonic()
    s.cluster.apply(pinned([_sfi(s, name, f"s3://{BUCKET}/{prefix}", digest=digest, profile=profile,
                          pools=["faas"], instances=False, tau=tau)]))  # fmt: skip
    st = wait_ready(s.cluster, s.namespace, name, timeout=timeout)
    say(f"{name}: Ready {time.monotonic() - t0:.0f} s after apply; plan {_plan(st)}")
    assert st["plan"]["pool"] == "faas", st["plan"]
    msgs = _fetch_messages(s, f"app.kubernetes.io/instance={name}")
    assert msgs and all(m.startswith(f"fetched: {model} digest {digest}") for m in msgs), msgs
    return st


def test_served_from_s3(store: Store) -> None:
    s = store
    _faas_from_s3(s, S3_NAME, PREFIX, "tokens", s.digest, s.profile)
    t1 = time.monotonic()
    where = _served_like_the_network(s, S3_NAME)
    say(f"{S3_NAME}: {len(where)} answers as the network's in {time.monotonic() - t1:.1f} s")
    s.kubectl("delete", "sfi", S3_NAME, "--wait=false")  # room on the control plane


def test_the_sequence_model_served_from_s3_over_rest_and_grpc(store: Store) -> None:
    import tritonclient.grpc as grpcclient

    from serflow_runtime import artefact
    from serflow_runtime.runtimes import open_model

    s = store
    root = artefact.resolve(SEQ)
    digest = artefact.load(root).digest
    model = open_model(root, "onnx", threads=1)
    tokens, _ = artefact.held_out(root, model.manifest)
    rows = _clear_of(model, tokens[: 2 * SEQ_ROWS], SEQ_TAU)[:SEQ_ROWS]
    assert len(rows) == SEQ_ROWS, len(rows)
    want = reference(model, rows, SEQ_TAU)
    name = "langid"
    st = _faas_from_s3(s, name, SEQ_PREFIX, SEQ, digest, {"fromJob": {"taus": [SEQ_TAU]}},
                       tau=SEQ_TAU, timeout=600)  # fmt: skip
    assert st["plan"]["function"] == "fn-512", st["plan"]
    t1 = time.monotonic()
    _served_like_the_network(s, name, rows, want)
    say(f"{name}: {len(rows)} raw answers as the network's in {time.monotonic() - t1:.1f} s")
    # The same rows from a stock Open Inference Protocol client, over gRPC (HTTP/2 to the
    # router's NodePort), eight to a request; the model's name is the object's.
    url = router_url(s.cluster, s.namespace, name)
    client = grpcclient.InferenceServerClient(url.removeprefix("http://").split("/")[0])
    try:
        meta = client.get_model_metadata(name, as_json=True)
        assert meta["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": ["-1", "64"]}]
        got: list[tuple[int, int]] = []
        for start in range(0, len(rows), 8):
            part = rows[start : start + 8]
            inp = grpcclient.InferInput("tokens", list(part.shape), "INT64")
            inp.set_data_from_numpy(part)
            res = client.infer(name, [inp], client_timeout=90)
            got += zip(res.as_numpy("exit").tolist(), res.as_numpy("class").tolist(), strict=True)
    finally:
        client.close()
    assert got == want
    say(f"{name}: {len(rows)} gRPC answers as the network's")
    s.kubectl("delete", "sfi", name, "--wait=false")  # room on the control plane


def test_served_from_a_pvc_profiled_on_both_nodes(store: Store) -> None:
    s = store
    t0 = time.monotonic()
    st = wait_ready(s.cluster, s.namespace, PVC_NAME, timeout=900)
    say(f"{PVC_NAME}: Ready {time.monotonic() - t0:.0f} s into this test; plan {_plan(st)}")
    assert st["plan"]["pool"] == "hybrid", st["plan"]
    # The profiling Jobs fetched it on each node (the instance type's on the pool node, the
    # function size's on the control plane) and measured it.
    jobs = s.get("jobs", selector=f"app.kubernetes.io/instance={PVC_NAME}")["items"]
    assert {j["metadata"]["labels"]["serflow.io/config"] for j in jobs} == {"c6i-large", "fn-512"}
    assert all(j["status"].get("succeeded") == 1 for j in jobs)
    selector = f"app.kubernetes.io/instance={PVC_NAME}"
    pods = (s.get("pods", selector=selector) or {})["items"]
    nodes = {p["spec"].get("nodeName") for p in pods
             if p["metadata"]["labels"].get("app.kubernetes.io/component") in ("pool", "profiler")}  # fmt: skip
    assert len(nodes) == 2, nodes
    msgs = _fetch_messages(s, selector)
    assert msgs and all(m.startswith(f"fetched: tokens digest {s.digest}") for m in msgs), msgs
    t1 = time.monotonic()
    where = _served_like_the_network(s, PVC_NAME)
    say(f"{PVC_NAME}: {len(where)} answers as the network's in {time.monotonic() - t1:.1f} s, "
        f"entered at {sorted(set(where))}")  # fmt: skip


def test_nothing_left_the_kind_network_after_the_storage_run(session: KindSession) -> None:
    """As the end-to-end module's last test: the S3 gateway, the initializers and the
    uploads stayed inside the cluster and this machine."""
    drops = session.drops()
    print(f"kind: {drops.summary()}", flush=True)
    assert not drops.outside(), f"tried to leave the machine: {drops.outside()}"

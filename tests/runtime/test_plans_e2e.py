"""Every plan shape served end to end by the operator's own children: the pool worker and
the Knative functions run with the builders' container args, Envoy with the builders'
bootstrap and route (hosts, ports and URLs rewritten to 127.0.0.1), and held-out digits
images go through Envoy."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("envoy")

from serflow.k8s import builders
from serflow.policy.configurator import Granularity, PoolKind
from serflow_runtime import codec
from serflow_runtime.engine import decide
from serflow_runtime.runtimes import ServedModel
from serflow_runtime.worker import Stage

from .conftest import Split, all_logits, http, post_many, raw_bytes
from .plans import OWNER, Shape, plan, serve

SHAPES = [
    Shape(PoolKind.FAAS),
    Shape(PoolKind.IAAS),
    Shape(PoolKind.HYBRID, Granularity.FUSED, 2),
    Shape(PoolKind.HYBRID, Granularity.CHAINED, 4),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.label for s in SHAPES])
def test_builders_write_ranges_the_runtime_reads(shape: Shape) -> None:
    inf, w, cand = plan(shape)
    k = w.profile.partitions
    objs = builders.children(OWNER, inf, w, cand, 1, 500)
    stages = {st.name: st for st in builders.stages(OWNER, w, cand)}
    tails: list[tuple[int, int]] = []
    for o in objs:
        if "template" not in o.get("spec", {}):
            continue
        args = o["spec"]["template"]["spec"]["containers"][0].get("args", [])
        if o["kind"] == "Service" and o["metadata"]["name"] in stages:
            st = stages[o["metadata"]["name"]]
            rng = args[args.index("--partitions") + 1]
            assert codec.parse_partitions(rng, k) == (st.first, st.last)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{OWNER.name}-pool":
            for i, a in enumerate(args):
                if a == "--tail":
                    # The worker reads the builders' target: the pinned Revision, reached
                    # through its Service with Knative's routing headers.
                    parsed = Stage.parse(args[i + 1], k)
                    rev = parsed.headers["Knative-Serving-Revision"]
                    assert parsed.url == f"http://{rev}.{OWNER.namespace}.svc.cluster.local"
                    assert parsed.headers["Knative-Serving-Namespace"] == OWNER.namespace
                    assert rev.startswith(f"{OWNER.name}-")
                    tails.append((parsed.first, parsed.last))
    cut = cand.setup.cut
    if shape.pool is PoolKind.HYBRID:
        assert tails[0][0] == cut + 1 and tails[-1][1] == k
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(tails))
    else:
        assert tails == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("3-K=", "must look like A-B=http"),
        ("3-K", "must look like A-B=http"),
        ("x-K=http://h", "must look like A-B with integers"),
        ("3-9=http://h", "outside 1..7"),
        ("5-3=http://h", "outside 1..7"),
        ("3-K=knative-revision://ns", "or A-B=knative-revision://NAMESPACE/REVISION"),
        ("3-K=knative-revision://Ns/r-1", "or A-B=knative-revision://NAMESPACE/REVISION"),
        ("3-K=knative-revision://ns/r/x", "or A-B=knative-revision://NAMESPACE/REVISION"),
    ],
)
def test_bad_tail_argument_is_one_line_and_exit_2(
    tmp_path: Path, artefact_path: Path, text: str, problem: str
) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "serflow_runtime.cli",
            "worker",
            "--artefact",
            str(artefact_path),
            "--cut",
            "2",
            "--tail",
            text,
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], r.stderr


def _oip(url: str, model: str, x: Any) -> tuple[int, Any]:
    """One Open Inference Protocol request of ``x``'s rows, as JSON."""
    t = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    body = json.dumps({"inputs": [t]}).encode()
    code, raw = http("POST", f"{url}/v2/models/{model}/infer", body, "application/json")
    return code, json.loads(raw)


def _requests(served: ServedModel, digits: Split, tau: float) -> tuple[list[Any], list[Any]]:
    """200 held-out images, with every image that leaves after exit 3 sent three times:
    with the pool's share of the route, some reach each stage of a chained tail."""
    x = digits.x_val
    ex, pred = decide(all_logits(served, x), tau)
    late = [i for i in range(len(x)) if int(ex[i]) > 3]
    idx = list(range(200)) + late * 3
    return [raw_bytes(x[i]) for i in idx], [(int(ex[i]), int(pred[i])) for i in idx]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.label for s in SHAPES])
def test_plan_shape_served_through_envoy(
    shape: Shape, tmp_path: Path, served: ServedModel, digits: Split
) -> None:
    _, w, cand = plan(shape)
    weight = 0 if shape.pool is PoolKind.FAAS else 700
    local = serve(shape, tmp_path, weight)
    try:
        bodies, want = _requests(served, digits, cand.tau)
        got = post_many(local.envoy.url + "/infer", bodies, concurrency=16)
        oip = [_oip(local.envoy.url, OWNER.name, digits.x_val[i : i + 16]) for i in (0, 16)]
        unknown = _oip(local.envoy.url, "vgg", digits.x_val[:1])
    finally:
        local.stop()
    # The Open Inference Protocol under the object's name (the builders' --model-name):
    # 16 instances a request, each answered as /infer answers it.
    for (code, out), start in zip(oip, (0, 16), strict=True):
        assert code == 200, out
        exits = {o["name"]: o["data"] for o in out["outputs"]}
        got_oip = list(zip(exits["exit"], exits["class"], strict=True))
        assert got_oip == [(o["exit"], o["class"]) for _, o in got[start : start + 16]]
    assert unknown[0] == 404 and "'digits'" in unknown[1]["error"]
    failed = [(c, o) for c, o in got if c != 200]
    assert not failed, failed[:3]
    seen: set[str] = set()
    for (_, out), (ex, cls) in zip(got, want, strict=True):
        assert (out["exit"], out["class"]) == (ex, cls)
        ran = out["ran"]
        # the parts that ran cover 1..exit in order, each on a named worker or function
        assert ran[0]["partitions"][0] == 1 and ran[-1]["partitions"][1] == ex
        for a, b in itertools.pairwise(ran):
            assert a["partitions"][1] + 1 == b["partitions"][0]
        seen |= {r["on"] for r in ran}
    names = builders.Names(OWNER.name)
    want_on = {f"function:{st.name}" for st in builders.stages(OWNER, w, cand)}
    if shape.pool is not PoolKind.FAAS:
        want_on.add(f"worker:{names.pool}-0")
    assert seen == want_on

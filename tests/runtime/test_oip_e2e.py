"""The Open Inference Protocol through the router, with a client this project did not
write: ``tritonclient.http`` (REST) calls a real local Envoy in front of real worker and
function processes, all on 127.0.0.1, and every answer is compared with ``/infer``'s for
the same image through the same Envoy.

Pool = two workers (cut 2: one with a chained tail 3-4, 5-7, one with a fused tail 3-7);
functions = one whole-model function; the pool's share is 700 of 1000, so requests are
answered by workers, by their tails and by the spill function.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("envoy")
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from serflow_runtime.runtimes import ServedModel
from serflow_runtime.server import server_timing_seconds
from serflow_testbed.harness import wait_for

from .conftest import (
    Envoy,
    Servers,
    Split,
    Stack,
    http,
    post_many,
    raw_bytes,
    reference,
    wait_ready,
)

MODEL = "digits-vgg16-w025"
"""The stack's servers have no --model-name: the artefact's name is the model's."""
N = 120


@pytest.fixture(scope="module")
def routed(stack: Stack, tmp_path_factory: pytest.TempPathFactory, artefact_path: Path) -> Any:
    c = Servers(tmp_path_factory.mktemp("oip"), artefact_path)
    try:
        yield c.envoy([stack.chained_worker.port, stack.fused_worker.port], [stack.whole.port], 700)
    finally:
        c.stop()


@pytest.fixture
def client(routed: Envoy) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(url=routed.url.removeprefix("http://"), network_timeout=60)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def via_infer(routed: Envoy, digits: Split) -> list[dict[str, Any]]:
    """``/infer``'s answer for each of the first N held-out images, through the router."""
    got = post_many(routed.url + "/infer", [raw_bytes(r) for r in digits.x_val[:N]])
    assert [c for c, _ in got] == [200] * N
    return [o for _, o in got]


def _infer(client: Any, x: np.ndarray, binary: bool, **kw: Any) -> Any:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return client.infer(MODEL, [inp], **kw)


def _answers(request: pytest.FixtureRequest, transport: str, x: np.ndarray, rid: str) -> list[Any]:
    """(exit, class, confidence, where each part ran) per instance of one OIP request of
    ``x``'s rows over ``transport`` (REST with binary or JSON tensors, or gRPC)."""
    if transport == "grpc":
        result = _grpc_infer(request.getfixturevalue("grpc_client"), x, request_id=rid)
        response = result.get_response(as_json=True)
        ran = json.loads(response["parameters"]["ran"]["string_param"])
    else:
        client = request.getfixturevalue("client")
        result = _infer(client, x, transport == "binary", request_id=rid)
        response = result.get_response()
        ran = json.loads(response["parameters"]["ran"])
    assert response["id"] == rid
    return list(
        zip(
            result.as_numpy("exit").tolist(),
            result.as_numpy("class").tolist(),
            result.as_numpy("confidence").tolist(),
            ran,
            strict=True,
        )
    )


def test_health_readiness_and_metadata_through_the_router(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "class": "INT64",
        "confidence": "FP32",
        "exit": "INT64",
    }
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("transport", ["binary", "json", "grpc"])
def test_answers_equal_infer_for_the_same_inputs_multi_instance_included(
    request: pytest.FixtureRequest,
    via_infer: list[dict[str, Any]],
    served: ServedModel,
    digits: Split,
    stack: Stack,
    transport: str,
) -> None:
    """REST (binary or JSON tensors) and gRPC through the router's one listener: answered
    by the workers, their tails and the spill function, each instance as ``/infer``
    answers it."""
    x = digits.x_val[:N]
    want = reference(served, x, stack.tau)
    sizes = itertools.cycle([1, 3, 8, 16, 2, 5])
    start, mixed, where = 0, 0, set()
    while start < N:
        n = min(next(sizes), N - start)
        got = _answers(request, transport, x[start : start + n], f"r{start}")
        assert len(got) == n
        for i, (ex, cls, conf, ran) in enumerate(got, start):
            ref = via_infer[i]
            assert (ex, cls) == (ref["exit"], ref["class"]) == want[i], i
            assert conf == pytest.approx(ref["confidence"], abs=1e-6), i  # FP32 of the same
            assert ran[-1]["partitions"][1] == ex
            where.add(ran[0]["on"].split(":")[0] + ("+tail" if len(ran) > 1 else ""))
        mixed += len({g[0] for g in got}) > 1
        start += n
    assert mixed > 0, "no multi-instance request had instances exit at different stages"
    assert {"worker", "worker+tail", "function"} <= where


STATUS = {
    "rest": {"invalid": "400", "not found": "404"},
    "grpc": {"invalid": "StatusCode.INVALID_ARGUMENT", "not found": "StatusCode.NOT_FOUND"},
}
"""What each transport's client reports for a refused tensor, and for another model."""


@pytest.mark.parametrize("transport", sorted(STATUS))
def test_a_wrong_tensor_is_refused_naming_it(
    request: pytest.FixtureRequest, digits: Split, transport: str
) -> None:
    """REST: a 400; gRPC: INVALID_ARGUMENT (the servers' own status, which the router sets
    on the call), each naming the tensor in one line."""
    import tritonclient.grpc as grpcclient

    lib: Any = grpcclient if transport == "grpc" else httpclient
    client = request.getfixturevalue("grpc_client" if transport == "grpc" else "client")
    status = STATUS[transport]
    x = digits.x_val[:2]
    cases: list[tuple[Any, str]] = []
    bad = lib.InferInput("image", [2, 3, 32, 32], "FP32")
    bad.set_data_from_numpy(x)
    cases.append((bad, "unknown input tensor 'image'"))
    bad = lib.InferInput("input", [2, 3, 32, 32], "FP64")
    bad.set_data_from_numpy(x.astype(np.float64))
    cases.append((bad, "input tensor 'input' has datatype 'FP64'"))
    bad = lib.InferInput("input", [2, 3, 16, 64], "FP32")
    bad.set_data_from_numpy(x.reshape(2, 3, 16, 64))
    cases.append((bad, "input tensor 'input' has shape [2, 3, 16, 64]"))
    bad = lib.InferInput("input", [3, 32, 32], "FP32")
    bad.set_data_from_numpy(x[0])
    cases.append((bad, "input tensor 'input' has shape [3, 32, 32]"))
    for inp, says in cases:
        with pytest.raises(InferenceServerException) as e:
            client.infer(MODEL, [inp])
        assert e.value.status() == status["invalid"], (says, e.value)
        assert says in e.value.message() and "\n" not in e.value.message()
    good = lib.InferInput("input", [2, 3, 32, 32], "FP32")
    good.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as e:
        client.infer("other-model", [good])
    assert e.value.status() == status["not found"] and "'other-model'" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [good], outputs=[lib.InferRequestedOutput("logits")])
    assert e.value.status() == status["invalid"]
    assert "unknown output tensor 'logits'" in e.value.message()
    if transport == "grpc":  # a method the servers do not serve
        with pytest.raises(InferenceServerException) as e:
            client.get_model_repository_index()
        assert e.value.status() == "StatusCode.UNIMPLEMENTED"


def test_requested_outputs_only(client: Any, digits: Split) -> None:
    result = _infer(
        client,
        digits.x_val[:4],
        True,
        outputs=[httpclient.InferRequestedOutput("class", binary_data=True)],
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["class"]
    assert result.as_numpy("confidence") is None
    assert result.as_numpy("class").shape == (4,)


def _json_body(x: np.ndarray) -> bytes:
    """A V2 request of ``x``'s rows as JSON numbers, written by hand (no client)."""
    t = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    return json.dumps({"inputs": [t]}).encode()


def _requests_200(url: str) -> float:
    code, raw = http("GET", url + "/metrics")
    assert code == 200
    for line in raw.decode().splitlines():
        if line.startswith('serflow_requests_total{code="200"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("which", ["worker", "function"])
def test_billed_and_counted_like_infer(stack: Stack, digits: Split, which: str) -> None:
    """An OIP answer carries the server's own Server-Timing and counts as a request."""
    proc = stack.fused_worker if which == "worker" else stack.whole
    body = _json_body(digits.x_val[:2])
    before = _requests_200(proc.url)
    req = urllib.request.Request(
        f"{proc.url}/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200 and len(json.loads(r.read())["outputs"]) == 3
        timing = r.headers["Server-Timing"]
    assert server_timing_seconds(timing) is not None, timing
    assert _requests_200(proc.url) == before + 1


def test_a_tail_stage_takes_no_oip_request(stack: Stack, digits: Split) -> None:
    body = _json_body(digits.x_val[:1])
    code, raw = http("POST", f"{stack.stage_a.url}/v2/models/{MODEL}/infer", body)
    assert code == 404 and "partitions 3..4" in json.loads(raw)["error"]


def test_a_request_is_admitted_whole_or_shed_whole(
    tmp_path: Path, artefact_path: Path, digits: Split
) -> None:
    """Each instance takes one place of the worker's epoch budget and joins its batcher on
    its own; a request that does not fit whole is a 503 (Envoy retries it, whole, on the
    functions), never half answered."""
    c = Servers(tmp_path, artefact_path)
    try:
        # B = 8, a budget of 8 per (long) epoch: a batch closes only once 8 instances wait
        w = c.worker("w-budget", 0, [], batch=8, epoch=600.0, budget=8)
        wait_ready(w)
        url = f"{w.url}/v2/models/{MODEL}/infer"
        with ThreadPoolExecutor(1) as ex:
            first = ex.submit(http, "POST", url, _json_body(digits.x_val[:5]))
            wait_for("5 instances queued", lambda: _queued(w.url) == 5, 30)
            code, raw = http("POST", url, _json_body(digits.x_val[5:9]))  # 3 places left
            assert code == 503 and "budget" in json.loads(raw)["error"]
            assert _queued(w.url) == 5
            code, raw = http("POST", url, _json_body(digits.x_val[5:8]))  # fills the batch
            code1, raw1 = first.result(timeout=60)
        assert code == 200 and json.loads(raw)["outputs"][0]["shape"] == [3]
        assert code1 == 200 and json.loads(raw1)["outputs"][0]["shape"] == [5]
    finally:
        c.stop()


def _queued(url: str) -> float:
    code, raw = http("GET", url + "/metrics")
    assert code == 200
    for line in raw.decode().splitlines():
        if line.startswith("serflow_queued_requests "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no serflow_queued_requests")


# -- gRPC ---------------------------------------------------------------------------------


@pytest.fixture
def grpc_client(routed: Envoy) -> Iterator[Any]:
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(url=routed.url.removeprefix("http://"))
    try:
        yield c
    finally:
        c.close()


def _grpc_infer(client: Any, x: np.ndarray, **kw: Any) -> Any:
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(MODEL, [inp], **kw)


def test_grpc_health_readiness_and_metadata_through_the_router(grpc_client: Any) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready(MODEL)
    meta = grpc_client.get_model_metadata(MODEL, as_json=True)
    assert meta["name"] == MODEL
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "3", "32", "32"]}]
    assert [o["name"] for o in meta["outputs"]] == ["class", "confidence", "exit"]
    assert grpc_client.get_server_metadata(as_json=True)["name"] == "serflow"

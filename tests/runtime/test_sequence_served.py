"""The shipped sequence model (``seq-chatterbot-langid-transformer``: int64 token ids, 15
languages) served as the digits models are: a worker running stage 1 with the tail on a
function, a whole-model spill function and the builders' Envoy, all on 127.0.0.1. Every
answer, by raw ``/infer`` and by the Open Inference Protocol over gRPC, equals the whole
network's for the same text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from serflow_runtime import artefact
from serflow_runtime.runtimes import ServedModel, open_model

from .conftest import Envoy, Servers, post_many, reference, wait_ready

pytest.importorskip("envoy")

NAME = "seq-chatterbot-langid-transformer"
TAU = 0.85
N = 200


@dataclass
class Stack:
    model: ServedModel
    tokens: np.ndarray
    envoy: Envoy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = artefact.resolve(NAME)
    model = open_model(root, "onnx", threads=1)
    tokens, _ = artefact.held_out(root, model.manifest)
    c = Servers(tmp_path_factory.mktemp("seq"), root)
    try:
        tail = c.function("seq-tail", "2-K", TAU)
        whole = c.function("seq-whole", "1-K", TAU)
        wait_ready(tail)
        worker = c.worker("seq-worker", 1, [f"2-K={tail.url}"], TAU, batch=16)
        for p in (whole, worker):
            wait_ready(p)
        yield Stack(model, tokens[:N], c.envoy([worker.port], [whole.port], 600))
    finally:
        c.stop()


def test_raw_token_ids_through_the_router(stack: Stack) -> None:
    want = reference(stack.model, stack.tokens, TAU)
    got = post_many(stack.envoy.url + "/infer", [r.astype("<i8").tobytes() for r in stack.tokens])
    assert [c for c, _ in got] == [200] * N
    assert [(a["exit"], a["class"]) for _, a in got] == want
    where = {a["ran"][0]["on"].split(":")[0] for _, a in got}
    assert where == {"worker", "function"}  # the pool's share and the spill


def test_grpc_with_int64_tokens(stack: Stack) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(stack.envoy.url.removeprefix("http://"))
    try:
        meta = client.get_model_metadata(NAME, as_json=True)
        assert meta["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": ["-1", "64"]}]
        want = reference(stack.model, stack.tokens, TAU)
        got: list[Any] = []
        for start in range(0, N, 8):
            inp = grpcclient.InferInput("tokens", [8, 64], "INT64")
            inp.set_data_from_numpy(stack.tokens[start : start + 8])
            res = client.infer(NAME, [inp])
            got += zip(res.as_numpy("exit").tolist(), res.as_numpy("class").tolist(), strict=True)
        assert got == want
    finally:
        client.close()

"""The Open Inference Protocol's pure half: requests parsed and refused, answers built."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from serflow_runtime import oip
from serflow_runtime.artefact import InputSpec
from serflow_runtime.codec import BadRequest

SPEC = oip.ModelInput("digits", InputSpec((3, 32, 32)), max_instances=4)


def _x(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def _doc(x: np.ndarray, **tensor: Any) -> dict[str, Any]:
    t = {"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    return {"inputs": [{**t, **tensor}]}


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _refused(body: bytes, header: str | None = None, status: int = 400) -> str:
    with pytest.raises(BadRequest) as e:
        oip.parse_request(body, header, SPEC)
    assert e.value.status == status
    assert "\n" not in e.value.problem
    return e.value.problem


def test_json_tensor_flat_or_nested_is_the_same_batch() -> None:
    x = _x(3)
    flat = oip.parse_request(_json(_doc(x)), None, SPEC)
    nested = oip.parse_request(_json(_doc(x, data=x.tolist())), None, SPEC)
    assert flat.x.dtype == np.float32 and flat.x.shape == (3, 3, 32, 32)
    assert np.array_equal(flat.x, x) and np.array_equal(nested.x, x)
    assert flat.outputs == ("class", "confidence", "exit") and flat.binary == frozenset()
    assert flat.id is None


def test_binary_tensor_extension() -> None:
    x = _x(2)
    blob = x.astype("<f4").tobytes()
    doc = {
        "id": "r1",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [2, 3, 32, 32],
                "parameters": {"binary_data_size": len(blob)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = _json(doc)
    req = oip.parse_request(head + blob, str(len(head)), SPEC)
    assert np.array_equal(req.x, x) and req.id == "r1"
    assert req.binary == frozenset(oip.OUTPUTS)
    assert "binary_data_size" in _refused(head + blob[:-4], str(len(head)))
    assert oip.HEADER_LENGTH in _refused(head + blob, "x12")
    assert "belong to no tensor" in _refused(_json(_doc(x)) + b"abcd", str(len(_json(_doc(x)))))


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        ({"name": "image"}, "unknown input tensor 'image'"),
        ({"datatype": "INT32"}, "input tensor 'input' has datatype 'INT32'"),
        ({"datatype": "FP64"}, "input tensor 'input' has datatype 'FP64'"),
        ({"shape": [1, 3, 28, 28]}, "input tensor 'input' has shape [1, 3, 28, 28]"),
        ({"shape": [3, 32, 32]}, "input tensor 'input' has shape [3, 32, 32]"),
        ({"shape": [1, 3, 32, "32"]}, "input tensor 'input' shape must be"),
        ({"shape": [0, 3, 32, 32]}, "carries no instance"),
        ({"shape": [2, 3, 32, 32]}, "input tensor 'input' data has 3072 values"),
        ({"data": ["a"] * 3072}, "input tensor 'input' data must be numbers"),
        ({"data": [True] * 3072}, "input tensor 'input' data must be numbers"),
        ({"data": [[1.0, 2.0], [3.0]]}, "input tensor 'input' data is not a list"),
        ({"data": None}, "input tensor 'input' needs 'data'"),
        ({"data": [float("nan")] * 3072}, "input tensor 'input' contains NaN or Inf"),
        ({"data": [1e39] * 3072}, "input tensor 'input' contains NaN or Inf"),
        ({"parameters": [1]}, "input tensor 'input' parameters must be an object"),
    ],
)
def test_a_wrong_tensor_is_a_400_naming_it(mutate: dict[str, Any], says: str) -> None:
    assert says in _refused(_json(_doc(_x(1), **mutate)))


def test_too_many_instances_is_a_413_before_any_value_is_read() -> None:
    doc = _doc(_x(1), shape=[5, 3, 32, 32], data=[])
    assert "5 instances; at most 4" in _refused(_json(doc), status=413)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "JSON object"),
        (b"{}", "'inputs'"),
        (b'{"inputs": [1]}', "'name'"),
        (b"[" * 100_000 + b"]" * 100_000, "nest"),
    ],
)
def test_malformed_requests_are_one_line_400s(body: bytes, says: str) -> None:
    assert says in _refused(body)


def test_duplicate_input_and_unknown_output_are_named() -> None:
    x = _x(1)
    doc = _doc(x)
    doc["inputs"] *= 2
    assert "given 2 times" in _refused(_json(doc))
    doc = {**_doc(x), "outputs": [{"name": "logits"}]}
    assert "unknown output tensor 'logits'" in _refused(_json(doc))
    assert "'id'" in _refused(_json({**_doc(x), "id": 7}))


def test_model_name_must_be_the_served_one() -> None:
    oip.check_model(SPEC, "digits")
    with pytest.raises(BadRequest) as e:
        oip.check_model(SPEC, "other")
    assert e.value.status == 404 and "'other'" in e.value.problem


def test_body_limit_fits_b_instances_as_json_text() -> None:
    x = np.full((SPEC.max_instances, 3, 32, 32), -1.2345678901234567e-05, dtype=np.float32)
    body = json.dumps(_doc(x), indent=None).encode()
    assert len(body) <= oip.body_limit(SPEC)


ANSWERS = [
    {"class": 3, "exit": 2, "confidence": 0.97, "fingerprint": "m/d",
     "ran": [{"partitions": [1, 2], "on": "worker:w"}]},
    {"class": 8, "exit": 7, "confidence": 0.5, "fingerprint": "m/d",
     "ran": [{"partitions": [1, 2], "on": "worker:w"}, {"partitions": [3, 7], "on": "function:f"}]},
]  # fmt: skip


def test_json_answer_carries_outputs_and_per_instance_exits_and_where_they_ran() -> None:
    req = oip.parse_request(_json({**_doc(_x(2)), "id": "a"}), None, SPEC)
    body, headers = oip.response(SPEC, req, ANSWERS)
    assert headers == {"Content-Type": "application/json"}
    doc = json.loads(body)
    assert doc["model_name"] == "digits" and doc["id"] == "a"
    out = {o["name"]: o for o in doc["outputs"]}
    assert out["class"] == {"name": "class", "datatype": "INT64", "shape": [2], "data": [3, 8]}
    assert out["exit"]["data"] == [2, 7]
    assert out["confidence"]["datatype"] == "FP32"
    assert out["confidence"]["data"] == pytest.approx([0.97, 0.5], abs=1e-7)
    p = doc["parameters"]
    assert p["fingerprint"] == "m/d" and json.loads(p["exits"]) == [2, 7]
    assert json.loads(p["ran"]) == [a["ran"] for a in ANSWERS]
    assert all(isinstance(v, str) for v in p.values())  # the protocol's parameters are scalars


def test_binary_answer_puts_the_asked_outputs_after_the_json() -> None:
    doc = {**_doc(_x(2)), "outputs": [{"name": "class", "parameters": {"binary_data": True}},
                                      {"name": "confidence"}]}  # fmt: skip
    req = oip.parse_request(_json(doc), None, SPEC)
    body, headers = oip.response(SPEC, req, ANSWERS)
    n = int(headers[oip.HEADER_LENGTH])
    head = json.loads(body[:n])
    assert [o["name"] for o in head["outputs"]] == ["class", "confidence"]
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert struct.unpack("<2q", body[n:]) == (3, 8)
    assert head["outputs"][1]["data"] == pytest.approx([0.97, 0.5], abs=1e-7)


def test_metadata_names_the_tensors() -> None:
    m = oip.metadata(SPEC)
    assert m["name"] == "digits"
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert [o["name"] for o in m["outputs"]] == ["class", "confidence", "exit"]
    assert "binary_tensor_data" in oip.server_metadata("0.1.0")["extensions"]

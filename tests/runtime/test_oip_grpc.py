"""The Open Inference Protocol's gRPC half, pure: the messages as a client this project did
not write (tritonclient) declares them, requests parsed and refused naming the tensor, and
answers that client reads."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from serflow_runtime import oip, oip_grpc, oip_proto
from serflow_runtime.artefact import InputSpec
from serflow_runtime.codec import BadRequest

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="tritonclient[grpc]")

SPEC = oip.ModelInput("digits", InputSpec((3, 2, 2)), max_instances=4)
TOKENS = oip.ModelInput("tokens", InputSpec((5,), "int64", "ids", (0, 9)), max_instances=4)


def _mismatches(ours: Any, theirs: Any, path: str) -> list[str]:
    out = []
    for f in ours.fields:
        g = theirs.fields_by_name.get(f.name)
        same = g is not None and (g.number, g.type, g.is_repeated) == (f.number, f.type, f.is_repeated)
        if same and f.message_type is not None:
            same = f.message_type.full_name == g.message_type.full_name
        if not same:
            out.append(f"{path}.{f.name}")
    for n in ours.nested_types:
        out += _mismatches(n, theirs.nested_types_by_name[n.name], f"{path}.{n.name}")
    return out


@pytest.mark.parametrize("name", sorted(oip_proto.MESSAGES))
def test_every_field_is_the_protocols(name: str) -> None:
    ours = oip_proto.MESSAGES[name].DESCRIPTOR
    assert ours.full_name == f"inference.{name}"
    assert _mismatches(ours, getattr(service_pb2, name).DESCRIPTOR, name) == []


def test_the_served_methods_are_the_services() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method, (req, resp) in oip_proto.METHODS.items():
        m = service.methods_by_name[method]
        assert (m.input_type.name, m.output_type.name) == (req, resp)


def _request(spec: oip.ModelInput = SPEC, **kw: Any) -> Any:
    r = service_pb2.ModelInferRequest(model_name=spec.model, id="r1")
    for key, value in kw.items():
        setattr(r, key, value) if not isinstance(value, list) else getattr(r, key).extend(value)
    return r


def test_raw_and_typed_contents_parse_alike() -> None:
    x = np.arange(24, dtype="<f4").reshape(2, 3, 2, 2)
    raw = _request()
    raw.inputs.add(name="input", datatype="FP32", shape=[2, 3, 2, 2])
    raw.raw_input_contents.append(x.tobytes())
    typed = _request()
    t = typed.inputs.add(name="input", datatype="FP32", shape=[2, 3, 2, 2])
    t.contents.fp32_contents.extend(x.ravel().tolist())
    typed.outputs.add(name="class")
    a = oip_grpc.infer_request(raw.SerializeToString(), SPEC)
    b = oip_grpc.infer_request(typed.SerializeToString(), SPEC)
    assert np.array_equal(a.x, x) and np.array_equal(b.x, x)
    assert a.outputs == tuple(oip.OUTPUTS) and b.outputs == ("class",) and a.id == "r1"


def test_int64_tokens_in_range_only() -> None:
    r = _request(TOKENS)
    r.inputs.add(name="ids", datatype="INT64", shape=[1, 5]).contents.int64_contents.extend([1, 2, 3, 4, 9])
    assert oip_grpc.infer_request(r.SerializeToString(), TOKENS).x.tolist() == [[1, 2, 3, 4, 9]]
    r.inputs[0].contents.int64_contents[4] = 10
    with pytest.raises(BadRequest, match=r"input tensor 'ids' holds 10, outside the model's range 0\.\.9"):
        oip_grpc.infer_request(r.SerializeToString(), TOKENS)


def _bad(**change: Any) -> bytes:
    r = _request()
    t = r.inputs.add(name="input", datatype="FP32", shape=[1, 3, 2, 2])
    r.raw_input_contents.append(np.zeros(12, "<f4").tobytes())
    for key, value in change.items():
        if key == "name":
            t.name = value
        elif key == "shape":
            del t.shape[:]
            t.shape.extend(value)
        elif key == "datatype":
            t.datatype = value
        elif key == "raw":
            del r.raw_input_contents[:]
            r.raw_input_contents.extend(value)
        elif key == "model":
            r.model_name = value
        elif key == "output":
            r.outputs.add(name=value)
        elif key == "twice":
            r.inputs.add(name="input", datatype="FP32", shape=[1, 3, 2, 2])
    return bytes(r.SerializeToString())


@pytest.mark.parametrize(
    ("body", "problem", "status"),
    [
        (_bad(name="image"), "unknown input tensor 'image': the model takes 'input'", 400),
        (_bad(datatype="FP64"), "input tensor 'input' has datatype 'FP64'; the model takes FP32", 400),
        (_bad(shape=[1, 3, 4, 1]), "input tensor 'input' has shape [1, 3, 4, 1]", 400),
        (_bad(raw=[b"\0" * 8]), "input tensor 'input' binary_data_size is 8", 400),
        (_bad(raw=[]), "input tensor 'input' needs raw_input_contents or contents.fp32_contents", 400),
        (_bad(raw=[b"", b""]), "2 raw_input_contents for 1 input tensor", 400),
        (_bad(shape=[5, 3, 2, 2]), "carries 5 instances; at most 4", 413),
        (_bad(model="other"), "unknown model 'other'", 404),
        (_bad(output="logits"), "unknown output tensor 'logits'", 400),
        (_bad(twice=True), "input tensor 'input' is given 2 times", 400),
        (b"\xff\xff\xff", "body is not an ModelInferRequest message", 400),
    ],
)
def test_refusals_name_what_is_wrong(body: bytes, problem: str, status: int) -> None:
    with pytest.raises(BadRequest) as e:
        oip_grpc.infer_request(body, SPEC)
    assert problem in e.value.problem and e.value.status == status
    assert oip_grpc.code_of(status) in (
        oip_grpc.Code.INVALID_ARGUMENT, oip_grpc.Code.RESOURCE_EXHAUSTED, oip_grpc.Code.NOT_FOUND
    )  # fmt: skip


def test_the_answer_is_what_the_client_reads() -> None:
    r = _request()
    r.inputs.add(name="input", datatype="FP32", shape=[2, 3, 2, 2])
    r.raw_input_contents.append(np.zeros(24, "<f4").tobytes())
    req = oip_grpc.infer_request(r.SerializeToString(), SPEC)
    answers = [
        {"class": 3, "exit": 1, "confidence": 0.9, "fingerprint": "m/d", "ran": [{"on": "w"}]},
        {"class": 7, "exit": 2, "confidence": 0.5, "fingerprint": "m/d", "ran": [{"on": "f"}]},
    ]
    back = service_pb2.ModelInferResponse.FromString(oip_grpc.infer_response(SPEC, req, answers))
    assert back.model_name == "digits" and back.id == "r1"
    assert [o.name for o in back.outputs] == ["class", "confidence", "exit"]
    assert [list(o.shape) for o in back.outputs] == [[2]] * 3
    assert np.frombuffer(back.raw_output_contents[0], "<i8").tolist() == [3, 7]
    assert np.frombuffer(back.raw_output_contents[1], "<f4").tolist() == pytest.approx([0.9, 0.5])
    assert json.loads(back.parameters["exits"].string_param) == [1, 2]
    assert back.parameters["fingerprint"].string_param == "m/d"


def test_metadata_and_methods() -> None:
    meta = service_pb2.ModelMetadataResponse.FromString(oip_grpc.metadata(TOKENS))
    assert (meta.name, meta.inputs[0].name, meta.inputs[0].datatype) == ("tokens", "ids", "INT64")
    assert list(meta.inputs[0].shape) == [-1, 5]
    assert oip_grpc.method_of("/inference.GRPCInferenceService/ModelInfer") == "ModelInfer"
    with pytest.raises(BadRequest) as e:
        oip_grpc.method_of("/inference.GRPCInferenceService/RepositoryIndex")
    assert e.value.status == 501
    h = oip_grpc.status_headers(oip_grpc.Code.INVALID_ARGUMENT, "input tensor 'x' has shape [1]\nü")
    assert h == {"x-serflow-grpc-status": "3",
                 "x-serflow-grpc-message": "input tensor 'x' has shape [1]%0A%C3%BC"}  # fmt: skip

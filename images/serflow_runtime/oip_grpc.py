"""The Open Inference Protocol over gRPC, as the servers see it: pure functions.

A gRPC client calls the router (Envoy) over HTTP/2. Envoy's gRPC-HTTP/1.1 reverse bridge
hands each unary call to the pool or a function as an HTTP/1.1 ``POST
/inference.GRPCInferenceService/METHOD`` whose body is the request message (content type
``application/x-protobuf``), and wraps the answer's body back into a gRPC response. So a
gRPC request is routed, batched, spilled, and retried exactly as a REST one, by the
same routes; the servers speak HTTP/1.1 only (a Knative Service has one port).

The bridge sets the gRPC status from the HTTP status (200: OK); a refusal also carries
``x-serflow-grpc-status`` and ``x-serflow-grpc-message``, which the router's Lua filter
turns into the call's own status and message (``INVALID_ARGUMENT`` naming the tensor,
``NOT_FOUND`` for another model, ``UNIMPLEMENTED`` for a method not served), so a client
reads them as a gRPC server's. The tensors are parsed and the answer built by ``oip``'s
REST code: one set of checks for both transports.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from serflow_runtime import oip
from serflow_runtime.codec import BadRequest
from serflow_runtime.oip_proto import MESSAGES, METHODS, SERVICE

PREFIX = f"/{SERVICE}/"
"""The path of every method: ``/inference.GRPCInferenceService/ModelInfer``."""
PROTO_CT = "application/x-protobuf"
"""The content type the bridge sends and expects back."""
STATUS_HEADER = "x-serflow-grpc-status"
MESSAGE_HEADER = "x-serflow-grpc-message"


class Code(IntEnum):
    """The gRPC status codes a server answers."""

    OK = 0
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


def code_of(http_status: int) -> Code:
    """The gRPC status of a refusal the REST path would answer with ``http_status``."""
    return {
        400: Code.INVALID_ARGUMENT,
        404: Code.NOT_FOUND,
        413: Code.RESOURCE_EXHAUSTED,
        415: Code.INVALID_ARGUMENT,
        503: Code.UNAVAILABLE,
    }.get(http_status, Code.INTERNAL)


def status_headers(code: Code, message: str) -> dict[str, str]:
    """The headers that carry a refusal's status and message (percent-encoded, as gRPC's
    ``grpc-message``) through the bridge to the router's Lua filter."""
    return {
        STATUS_HEADER: str(int(code)),
        MESSAGE_HEADER: urllib.parse.quote(message[:1024], safe=" !'(),./:;=?@[]_-"),
    }


def method_of(path: str) -> str:
    """The served method a path names; a method this server does not serve is refused."""
    method = path.removeprefix(PREFIX)
    if method not in METHODS:
        raise BadRequest(f"method {SERVICE}/{method} is not served here", 501)
    return method


def parse(method: str, body: bytes) -> Any:
    """The request message of ``method``."""
    msg = MESSAGES[METHODS[method][0]]()
    try:
        msg.ParseFromString(body)
    except DecodeError:
        raise BadRequest(f"body is not an {METHODS[method][0]} message") from None
    return msg


def encode(method: str, **fields: Any) -> bytes:
    """The response message of ``method`` with ``fields``, serialized."""
    return bytes(MESSAGES[METHODS[method][1]](**fields).SerializeToString())


_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "INT8": "int_contents",
    "UINT8": "uint_contents",
}
"""Where ``InferTensorContents`` holds each datatype's values (FP16 comes only raw)."""


def infer_request(body: bytes, spec: oip.ModelInput) -> oip.Request:
    """A ``ModelInferRequest`` to the REST path's validated ``oip.Request``: the same
    checks, the same one-line refusals naming the tensor."""
    req = parse("ModelInfer", body)
    oip.check_model(spec, req.model_name)
    want = spec.input.name
    if not req.inputs:
        raise BadRequest(f"inference request must carry input tensor {want!r}")
    for t in req.inputs:
        if t.name != want:
            raise BadRequest(f"unknown input tensor {t.name!r}: the model takes {want!r}")
    if len(req.inputs) > 1:
        raise BadRequest(f"input tensor {want!r} is given {len(req.inputs)} times")
    (t,) = req.inputs
    doc: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
    binary = b""
    if req.raw_input_contents:
        if len(req.raw_input_contents) != 1:
            raise BadRequest(
                f"{len(req.raw_input_contents)} raw_input_contents for 1 input tensor"
            )
        binary = bytes(req.raw_input_contents[0])
        doc["parameters"] = {"binary_data_size": len(binary)}
    else:
        field = _CONTENTS.get(t.datatype)
        values = list(getattr(t.contents, field)) if field else []
        if not values:
            raise BadRequest(
                f"input tensor {want!r} needs raw_input_contents or contents.{field or 'raw'}"
            )
        doc["data"] = values
    x = oip.tensor(doc, binary, spec)
    names = tuple(dict.fromkeys(o.name for o in req.outputs)) or tuple(oip.OUTPUTS)
    for n in names:
        if n not in oip.OUTPUTS:
            raise BadRequest(f"unknown output tensor {n!r}: the model gives {', '.join(oip.OUTPUTS)}")
    return oip.Request(x, req.id or None, names, frozenset(names))


def infer_response(
    spec: oip.ModelInput, req: oip.Request, answers: Sequence[Mapping[str, Any]]
) -> bytes:
    """The ``ModelInferResponse``: each output's little-endian bytes in
    ``raw_output_contents``, the fingerprint, exits and where each part ran as parameters
    (as the REST answer carries them)."""
    values = oip.output_values(answers)
    msg = MESSAGES["ModelInferResponse"](model_name=spec.model, id=req.id or "")
    for name in req.outputs:
        msg.outputs.add(name=name, datatype=oip.OUTPUTS[name], shape=[len(answers)])
        msg.raw_output_contents.append(np.ascontiguousarray(values[name]).tobytes())
    for key, value in oip.answer_parameters(answers).items():
        msg.parameters[key].string_param = value
    return bytes(msg.SerializeToString())


def metadata(spec: oip.ModelInput) -> bytes:
    doc = oip.metadata(spec)
    return encode(
        "ModelMetadata",
        name=doc["name"],
        platform=doc["platform"],
        inputs=[dict(t) for t in doc["inputs"]],
        outputs=[dict(t) for t in doc["outputs"]],
    )


def server_metadata(version: str) -> bytes:
    return encode("ServerMetadata", name="serflow", version=version, extensions=[])


__all__ = [
    "MESSAGE_HEADER",
    "PREFIX",
    "PROTO_CT",
    "STATUS_HEADER",
    "Code",
    "code_of",
    "encode",
    "infer_request",
    "infer_response",
    "metadata",
    "method_of",
    "parse",
    "server_metadata",
    "status_headers",
]

"""The Open Inference Protocol (KServe V2, REST) beside ``/infer``: pure functions.

The servers (``worker``, ``function``) route ``/v2/...`` here for parsing and for the
answer; which batch a request joins and where its parts run is theirs, exactly as for
``/infer``.  Kept free of aiohttp so that every refusal is unit-tested without a server.

* The request: ``{"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, C, H,
  W], "data": [...]}], "outputs": [{"name": ...}], "id": ...}``.  ``n`` is the batch
  axis: n instances, each answered on its own (each may exit at another stage).  ``data``
  is flat or nested row-major numbers; or, with the binary tensor extension (the
  ``Inference-Header-Content-Length`` header), the tensor's little-endian bytes after the
  JSON header, sized by the input's ``parameters.binary_data_size``.
* The input is the artefact manifest's: one tensor of its name, dtype and shape (images:
  float32 (C, H, W), already normalised with the artefact's mean/std), like
  ``/infer``'s ``application/octet-stream``; an integer input's values must lie in the
  manifest's range.
* The answer: outputs ``class`` INT64 [n], ``confidence`` FP32 [n] and ``exit`` INT64
  [n]; ``parameters`` carry the fingerprint and, per instance, the exit taken and where
  each part ran (``/infer``'s ``ran``), JSON-encoded in a string because the protocol's
  parameter values are scalars.  Outputs asked for with ``binary_data`` (or all of them,
  with the request parameter ``binary_data_output``) are sent as bytes after the JSON.
* Any malformed request is a ``BadRequest`` with one line naming the tensor: a 400, or a
  413 beyond the size limits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serflow_runtime.artefact import InputSpec
from serflow_runtime.codec import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
"""The binary tensor extension's header: bytes of JSON before the tensors' bytes."""
BINARY_CT = "application/octet-stream"
JSON_CT = "application/json"
OUTPUTS: dict[str, str] = {"class": "INT64", "confidence": "FP32", "exit": "INT64"}
"""The answer's tensors, each [n], and their datatypes."""
DATATYPES: dict[str, str] = {
    "float32": "FP32",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "uint8": "UINT8",
    "int8": "INT8",
}
"""The protocol's datatype of each manifest dtype (``artefact.DTYPES``)."""
_NUMPY = {"INT64": "<i8", "FP32": "<f4"}
JSON_BYTES_PER_VALUE = 26
"""Bytes one value takes at most as JSON text (``-1.2345678901234567e-05, ``; an int64
is shorter): the body limit of a JSON tensor, so a request of B instances always fits."""
SLACK = 64 << 10
"""Bytes a request may carry beyond its tensor (names, parameters, blanks)."""


@dataclass(frozen=True)
class ModelInput:
    """What the model takes: its name under OIP, its input tensor (the manifest's), and
    the most instances one request may carry (the batch B: no request holds more than a
    batch's rows)."""

    model: str
    input: InputSpec
    max_instances: int

    @property
    def datatype(self) -> str:
        return DATATYPES[self.input.dtype]


@dataclass(frozen=True)
class Request:
    """A parsed, validated inference request."""

    x: np.ndarray
    """(n, *shape) of the input's dtype, its values checked (finite, in range)."""
    id: str | None
    """The request's ``id``, echoed in the answer."""
    outputs: tuple[str, ...]
    """The outputs to answer, in order."""
    binary: frozenset[str]
    """The outputs to send as bytes (the binary tensor extension)."""


def body_limit(spec: ModelInput) -> int:
    """The largest request body: B instances as JSON text, plus slack."""
    return spec.max_instances * math.prod(spec.input.shape) * JSON_BYTES_PER_VALUE + SLACK


def metadata(spec: ModelInput) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the model's tensors (the batch axis is -1)."""
    return {
        "name": spec.model,
        "platform": "serflow",
        "inputs": [
            {"name": spec.input.name, "datatype": spec.datatype, "shape": [-1, *spec.input.shape]}
        ],
        "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in OUTPUTS.items()],
    }


def server_metadata(version: str) -> dict[str, Any]:
    """``GET /v2``: the server and the protocol extensions it implements."""
    return {"name": "serflow", "version": version, "extensions": ["binary_tensor_data"]}


def check_model(spec: ModelInput, name: str) -> None:
    """A model name other than the served one is a 404 naming both."""
    if name != spec.model:
        raise BadRequest(f"unknown model {name!r}: this server serves {spec.model!r}", 404)


def parse_request(body: bytes, header_length: str | None, spec: ModelInput) -> Request:
    """A V2 inference request (JSON, or JSON then tensor bytes) to a validated ``Request``."""
    doc, binary = _split(body, header_length)
    if not isinstance(doc, dict):
        raise BadRequest("inference request must be a JSON object")
    inputs = doc.get("inputs")
    want = spec.input.name
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(f"inference request must carry 'inputs': a list with tensor {want!r}")
    for t in inputs:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest("every input tensor must be an object with a 'name'")
        if t["name"] != want:
            raise BadRequest(f"unknown input tensor {t['name']!r}: the model takes {want!r}")
    if len(inputs) > 1:
        raise BadRequest(f"input tensor {want!r} is given {len(inputs)} times")
    x = tensor(inputs[0], binary, spec)
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest("request 'id' must be a string")
    outputs, wanted_binary = _outputs(doc)
    return Request(x, rid, outputs, wanted_binary)


def _split(body: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """(JSON document, the bytes after it): the binary extension puts tensors after the
    JSON, whose length its header gives."""
    n = len(body)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 < n <= len(body):
            raise BadRequest(
                f"{HEADER_LENGTH} must be an integer in 1..{len(body)}, got {header_length!r}"
            )
    try:
        return json.loads(body[:n]), body[n:]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"inference request is not JSON: {e}") from None
    except RecursionError:  # the C decoder stops at the interpreter's recursion limit
        raise BadRequest("inference request nests too deeply") from None


def tensor(t: Mapping[str, Any], binary: bytes, spec: ModelInput) -> np.ndarray:
    """One input tensor (its name, datatype, shape and ``data`` or, with the binary
    extension, ``binary``) checked against the model's input: the one set of checks of
    both transports (``oip_grpc`` maps its message onto this)."""
    name, inp = t["name"], spec.input
    want = [-1, *inp.shape]
    if t.get("datatype") != spec.datatype:
        raise BadRequest(
            f"input tensor {name!r} has datatype {t.get('datatype')!r}; the model takes "
            f"{spec.datatype}"
        )
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"input tensor {name!r} shape must be a list of non-negative integers")
    if len(shape) != len(want) or tuple(shape[1:]) != inp.shape:
        raise BadRequest(f"input tensor {name!r} has shape {shape}; the model takes {want}")
    n = shape[0]
    if n < 1:
        raise BadRequest(f"input tensor {name!r} carries no instance (shape {shape})")
    if n > spec.max_instances:
        raise BadRequest(
            f"input tensor {name!r} carries {n} instances; at most {spec.max_instances} "
            "per request",
            413,
        )
    count = n * math.prod(inp.shape)
    params = t.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"input tensor {name!r} parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in t:
            raise BadRequest(f"input tensor {name!r} has both data and binary_data_size")
        need = count * inp.numpy_dtype.itemsize
        if size != need or len(binary) != size:
            raise BadRequest(
                f"input tensor {name!r} binary_data_size is {size!r} with {len(binary)} "
                f"bytes sent; shape {shape} of {spec.datatype} needs {need}"
            )
        a = np.frombuffer(binary, dtype=inp.numpy_dtype)
    else:
        if binary:
            raise BadRequest(f"{len(binary)} bytes after the JSON belong to no tensor")
        a = _json_values(name, t.get("data"), shape, count, inp)
    if (why := inp.problem(a)) is not None:
        raise BadRequest(f"input tensor {name!r} {why}")
    return np.ascontiguousarray(a.reshape(shape), dtype=inp.numpy_dtype.newbyteorder("="))


def _json_values(
    name: str, data: Any, shape: list[int], count: int, inp: InputSpec
) -> np.ndarray:
    """The numbers of ``data``, flat or nested as ``shape``, as the input's dtype."""
    if not isinstance(data, list):
        raise BadRequest(f"input tensor {name!r} needs 'data' (a list of numbers)")
    try:
        a = np.asarray(data)
    except ValueError:  # ragged nesting
        raise BadRequest(f"input tensor {name!r} data is not a list of numbers of shape {shape}") from None
    if a.dtype.kind not in "fiu":  # bools, strings, nulls, objects
        raise BadRequest(f"input tensor {name!r} data must be numbers")
    if a.shape not in ((count,), tuple(shape)):
        raise BadRequest(
            f"input tensor {name!r} data has {a.size} values in shape {list(a.shape)}; "
            f"shape {shape} needs {count}"
        )
    dtype = inp.numpy_dtype
    if dtype.kind == "f":
        with np.errstate(over="ignore"):  # beyond the dtype's range becomes inf, refused after
            return a.astype(dtype)
    if a.dtype.kind == "f" and not bool((a == np.round(a)).all()):
        raise BadRequest(f"input tensor {name!r} data must be integers for {DATATYPES[inp.dtype]}")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise BadRequest(f"input tensor {name!r} data does not fit {DATATYPES[inp.dtype]}")
    return a.astype(dtype)


def _outputs(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The outputs asked for (all by default) and those to send as bytes."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("request parameters must be an object")
    all_binary = params.get("binary_data_output") is True
    asked = doc.get("outputs")
    if asked is None:
        names = tuple(OUTPUTS)
        return names, frozenset(names if all_binary else ())
    if not isinstance(asked, list):
        raise BadRequest("request 'outputs' must be a list of tensors")
    names_l: list[str] = []
    binary: set[str] = set()
    for o in asked:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest("every requested output must be an object with a 'name'")
        if o["name"] not in OUTPUTS:
            raise BadRequest(
                f"unknown output tensor {o['name']!r}: the model gives {', '.join(OUTPUTS)}"
            )
        op = o.get("parameters") or {}
        if not isinstance(op, dict):
            raise BadRequest(f"output tensor {o['name']!r} parameters must be an object")
        if o["name"] not in names_l:
            names_l.append(o["name"])
        if op.get("binary_data", all_binary) is True:
            binary.add(o["name"])
    return tuple(names_l), frozenset(binary)


def output_values(answers: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Each output tensor's values, little-endian, in instance order."""
    return {
        "class": np.array([a["class"] for a in answers], dtype="<i8"),
        "confidence": np.array([a["confidence"] for a in answers], dtype="<f4"),
        "exit": np.array([a["exit"] for a in answers], dtype="<i8"),
    }


def answer_parameters(answers: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The answer's parameters: the fingerprint, and per instance the exit taken and where
    each part ran, JSON-encoded in strings (the protocol's parameter values are scalars)."""
    return {
        "fingerprint": str(answers[0]["fingerprint"]) if answers else "",
        "exits": json.dumps([int(a["exit"]) for a in answers]),
        "ran": json.dumps([a["ran"] for a in answers], separators=(",", ":")),
    }


def response(
    spec: ModelInput, req: Request, answers: Sequence[Mapping[str, Any]]
) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers from one ``/infer``-style answer per instance
    (``class``, ``exit``, ``confidence``, ``ran``, ``fingerprint``), in instance order."""
    n = len(answers)
    values = output_values(answers)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in req.outputs:
        out: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": [n]}
        a = values[name].astype(_NUMPY[OUTPUTS[name]])
        if name in req.binary:
            blob = a.tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = a.tolist()
        outputs.append(out)
    doc: dict[str, Any] = {
        "model_name": spec.model,
        "outputs": outputs,
        "parameters": answer_parameters(answers),
    }
    if req.id is not None:
        doc["id"] = req.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"Content-Type": JSON_CT}
    return head + b"".join(blobs), {"Content-Type": BINARY_CT, HEADER_LENGTH: str(len(head))}

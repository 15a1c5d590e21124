"""The Open Inference Protocol's gRPC messages (KServe V2, ``inference.GRPCInferenceService``).

Declared here as a protobuf descriptor built in code, so the images need only the
``protobuf`` runtime: no ``.proto`` compiler, no generated module to keep in step with it.
The messages, their field numbers and types are those of KServe's ``grpc_predict_v2.proto``
(Triton's ``grpc_service.proto`` is a superset); a test checks every field against the
descriptors of a client library serflow did not write. Only the messages of the methods
serflow serves are declared: ServerLive, ServerReady, ModelReady, ServerMetadata,
ModelMetadata and ModelInfer.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"
METHODS: dict[str, tuple[str, str]] = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}
"""Each method served and its (request, response) message."""

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}

Field = tuple[str, int, str, bool]
"""(name, number, type: a scalar's name or a message's full name, repeated)."""
PARAMETERS = "parameters"


def _message(
    parent: Any, name: str, fields: list[Field], oneof: str = "", maps: tuple[int, ...] = ()
) -> Any:
    """Add message ``name`` to ``parent`` (a file or a message); fields numbered in
    ``maps`` are ``map<string, InferParameter>`` (a nested entry message, as protoc makes)."""
    m = parent.message_type.add() if hasattr(parent, "message_type") else parent.nested_type.add()
    m.name = name
    if oneof:
        m.oneof_decl.add().name = oneof
    for fname, number, ftype, repeated in fields:
        f = m.field.add()
        f.name, f.number = fname, number
        f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
        if ftype in _TYPES:
            f.type = _TYPES[ftype]
        else:
            f.type, f.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{ftype}"
        if oneof:
            f.oneof_index = 0
        if number in maps:
            entry = f"{''.join(p.capitalize() for p in fname.split('_'))}Entry"
            e = m.nested_type.add()
            e.name = entry
            e.options.map_entry = True
            for en, num, et in (("key", 1, _F.TYPE_STRING), ("value", 2, _F.TYPE_MESSAGE)):
                ef = e.field.add()
                ef.name, ef.number, ef.label, ef.type = en, num, _F.LABEL_OPTIONAL, et
            e.field[1].type_name = f".{PACKAGE}.InferParameter"
            f.type, f.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{_path(m, parent)}.{entry}"
    return m


def _path(m: Any, parent: Any) -> str:
    return f"{parent.name}.{m.name}" if not hasattr(parent, "message_type") else m.name


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="serflow/oip_grpc_predict_v2.proto", package=PACKAGE, syntax="proto3"
    )
    _message(f, "ServerLiveRequest", [])
    _message(f, "ServerLiveResponse", [("live", 1, "bool", False)])
    _message(f, "ServerReadyRequest", [])
    _message(f, "ServerReadyResponse", [("ready", 1, "bool", False)])
    _message(f, "ModelReadyRequest", [("name", 1, "string", False), ("version", 2, "string", False)])
    _message(f, "ModelReadyResponse", [("ready", 1, "bool", False)])
    _message(f, "ServerMetadataRequest", [])
    _message(f, "ServerMetadataResponse", [
        ("name", 1, "string", False), ("version", 2, "string", False),
        ("extensions", 3, "string", True),
    ])  # fmt: skip
    _message(f, "ModelMetadataRequest", [("name", 1, "string", False), ("version", 2, "string", False)])
    meta = _message(f, "ModelMetadataResponse", [
        ("name", 1, "string", False), ("versions", 2, "string", True),
        ("platform", 3, "string", False),
        ("inputs", 4, "ModelMetadataResponse.TensorMetadata", True),
        ("outputs", 5, "ModelMetadataResponse.TensorMetadata", True),
    ])  # fmt: skip
    tensor_meta: list[Field] = [
        ("name", 1, "string", False), ("datatype", 2, "string", False), ("shape", 3, "int64", True),
    ]  # fmt: skip
    _message(meta, "TensorMetadata", tensor_meta)
    _message(f, "InferParameter", [
        ("bool_param", 1, "bool", False), ("int64_param", 2, "int64", False),
        ("string_param", 3, "string", False), ("double_param", 4, "double", False),
        ("uint64_param", 5, "uint64", False),
    ], oneof="parameter_choice")  # fmt: skip
    _message(f, "InferTensorContents", [
        ("bool_contents", 1, "bool", True), ("int_contents", 2, "int32", True),
        ("int64_contents", 3, "int64", True), ("uint_contents", 4, "uint32", True),
        ("uint64_contents", 5, "uint64", True), ("fp32_contents", 6, "float", True),
        ("fp64_contents", 7, "double", True), ("bytes_contents", 8, "bytes", True),
    ])  # fmt: skip
    tensor: list[Field] = [
        *tensor_meta, (PARAMETERS, 4, "", True), ("contents", 5, "InferTensorContents", False),
    ]  # fmt: skip
    for name, inner, extra in (
        ("ModelInferRequest", "InferInputTensor", ("raw_input_contents", 7)),
        ("ModelInferResponse", "InferOutputTensor", ("raw_output_contents", 6)),
    ):
        fields: list[Field] = [
            ("model_name", 1, "string", False), ("model_version", 2, "string", False),
            ("id", 3, "string", False), (PARAMETERS, 4, "", True),
        ]  # fmt: skip
        if name == "ModelInferRequest":
            fields += [
                ("inputs", 5, f"{name}.{inner}", True),
                ("outputs", 6, f"{name}.InferRequestedOutputTensor", True),
            ]
        else:
            fields.append(("outputs", 5, f"{name}.{inner}", True))
        fields.append((extra[0], extra[1], "bytes", True))
        msg = _message(f, name, fields, maps=(4,))
        _message(msg, inner, tensor, maps=(4,))
        if name == "ModelInferRequest":
            _message(msg, "InferRequestedOutputTensor",
                     [("name", 1, "string", False), (PARAMETERS, 2, "", True)], maps=(2,))  # fmt: skip
    return f


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())  # type: ignore[no-untyped-call]


def _class(name: str) -> Any:
    found = _POOL.FindMessageTypeByName(f"{PACKAGE}.{name}")  # type: ignore[no-untyped-call]
    return message_factory.GetMessageClass(found)


MESSAGES: dict[str, Any] = {
    name: _class(name) for pair in METHODS.values() for name in [*pair, "InferParameter"]
}
"""Each message class by its name, e.g. ``MESSAGES["ModelInferRequest"]``."""

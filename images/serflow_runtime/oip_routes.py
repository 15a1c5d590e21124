"""The Open Inference Protocol's routes (REST), shared by the worker and function servers.

A server hands in what differs between the two: whether it is ready, and how it answers a
batch of instances (the worker queues each in its batcher like an ``/infer`` request; a
function runs them through its partitions).  Parsing and the answer are ``oip``'s.

Routes: ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``, ``POST
/v2/models/{name}/infer``; and the gRPC methods as Envoy's reverse bridge hands them over
(``POST /inference.GRPCInferenceService/{method}``, see ``oip_grpc``).  Envoy routes every
path the same way as ``/infer``, so these are answered by whichever pool pod or function
the request lands on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from serflow_runtime import __version__, oip, oip_grpc
from serflow_runtime.codec import BadRequest
from serflow_runtime.server import read_body

Classify = Callable[[np.ndarray], Awaitable[Sequence[dict[str, Any]] | web.Response]]
"""(n, *input shape) to one ``/infer`` answer per instance, or a refusal (503, 404) as is."""

MODELS = "/v2/models/"


@dataclass
class OipRoutes:
    """The V2 routes of one server."""

    spec: oip.ModelInput
    ready: Callable[[], str | None]
    """None when ready, else why not (the answer's 503 says it)."""
    classify: Classify
    client_timeout: float

    @property
    def max_body(self) -> int:
        return oip.body_limit(self.spec)

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.server_ready)
        r.add_get(MODELS + "{name}", self.model_metadata)
        r.add_get(MODELS + "{name}/ready", self.model_ready)
        r.add_post(MODELS + "{name}/infer", self.infer)
        r.add_post(oip_grpc.PREFIX + "{method}", self.grpc)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(oip.server_metadata(__version__))

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def server_ready(self, request: web.Request) -> web.Response:
        why = self.ready()
        if why is not None:
            return web.json_response({"ready": False, "error": why}, status=503)
        return web.json_response({"ready": True})

    async def model_metadata(self, request: web.Request) -> web.Response:
        oip.check_model(self.spec, request.match_info["name"])
        return web.json_response(oip.metadata(self.spec))

    async def model_ready(self, request: web.Request) -> web.Response:
        oip.check_model(self.spec, request.match_info["name"])
        return await self.server_ready(request)

    async def infer(self, request: web.Request) -> web.Response:
        oip.check_model(self.spec, request.match_info["name"])
        body = await read_body(request, self.max_body, self.client_timeout)
        req = oip.parse_request(body, request.headers.get(oip.HEADER_LENGTH), self.spec)
        answers = await self.classify(req.x)
        if isinstance(answers, web.Response):
            return answers
        payload, headers = oip.response(self.spec, req, answers)
        return web.Response(body=payload, headers=headers)

    async def grpc(self, request: web.Request) -> web.Response:
        """One unary gRPC call, bridged to HTTP/1.1 by the router: the message in, the
        message out; a refusal carries its gRPC status for the router to set."""
        try:
            method = oip_grpc.method_of(request.path)
            body = await read_body(request, self.max_body, self.client_timeout, empty=True)
            return await self._grpc(method, body)
        except BadRequest as e:
            code = oip_grpc.Code.UNIMPLEMENTED if e.status == 501 else oip_grpc.code_of(e.status)
            return _grpc_refusal(e.status, code, e.problem)

    async def _grpc(self, method: str, body: bytes) -> web.Response:
        msg = oip_grpc.parse(method, body)
        if method == "ServerLive":
            out = oip_grpc.encode(method, live=True)
        elif method == "ServerReady":
            out = oip_grpc.encode(method, ready=self.ready() is None)
        elif method == "ServerMetadata":
            out = oip_grpc.server_metadata(__version__)
        elif method == "ModelReady":
            oip.check_model(self.spec, msg.name)
            out = oip_grpc.encode(method, ready=self.ready() is None)
        elif method == "ModelMetadata":
            oip.check_model(self.spec, msg.name)
            out = oip_grpc.metadata(self.spec)
        else:
            req = oip_grpc.infer_request(body, self.spec)
            answers = await self.classify(req.x)
            if isinstance(answers, web.Response):  # shed or draining: Envoy retries a 503
                return _grpc_refusal(answers.status, oip_grpc.code_of(answers.status),
                                     answers.text or "not answered")  # fmt: skip
            out = oip_grpc.infer_response(self.spec, req, answers)
        return web.Response(body=out, content_type=oip_grpc.PROTO_CT)


def _grpc_refusal(status: int, code: oip_grpc.Code, message: str) -> web.Response:
    return web.Response(
        status=status,
        content_type=oip_grpc.PROTO_CT,
        headers=oip_grpc.status_headers(code, message),
    )

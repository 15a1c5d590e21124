"""The Open Inference Protocol's routes (REST), shared by the worker and function servers.

A server hands in what differs between the two: whether it is ready, and how it answers a
batch of instances (the worker queues each in its batcher like an ``/infer`` request; a
function runs them through its partitions).  Parsing and the answer are ``oip``'s.

Routes: ``GET /v2`` (server metadata), ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``, ``POST
/v2/models/{name}/infer``.  Envoy routes every path the same way as ``/infer``, so these
are answered by whichever pool pod or function the request lands on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from serflow_runtime import __version__, oip
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

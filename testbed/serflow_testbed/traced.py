"""``serflow_runtime.cli`` with one line logged per answered serving request: the request's
``x-request-id`` (which Envoy sets, or keeps, and sends with every attempt, retries
included), its path, its status and whether its connection was still open (``open``) or
already closed by the caller (``gone``: the answer reaches nobody). The fault run counts from these lines how often each
request was executed, to find duplicates (a request answered by two servers, or twice).

    python -m serflow_testbed.traced worker|function ARGS

A test-bed wrapper, not the images' code: the servers themselves log no request ids."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from serflow_runtime import server

TAG = "serflow-traced"
"""The first word of each traced line."""
_LINE = re.compile(rf"^{TAG} (\S+) (\S+) (\d+) (open|gone)$")

_timing = server.server_timing


def _traced_timing(metrics: Any) -> Any:
    """``server.server_timing`` (the outermost middleware of both servers), then the line."""
    inner = _timing(metrics)

    @web.middleware
    async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
        resp: web.StreamResponse = await inner(request, handler)
        if server.served(request.path):
            rid = request.headers.get("x-request-id", "-")
            t = request.transport
            state = "gone" if t is None or t.is_closing() else "open"
            print(f"{TAG} {rid} {request.path} {resp.status} {state}", file=sys.stderr, flush=True)
        return resp

    return mw


def answered(logs: Iterable[Path], status: int = 200, state: str | None = None) -> Counter[str]:
    """How many times each request id was answered ``status`` on ``/infer`` (on a
    connection in ``state``, ``open`` or ``gone``; None: either), over the logs of every
    server (a killed server's lines stay in its log)."""
    out: Counter[str] = Counter()
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if m and m[2] == "/infer" and int(m[3]) == status and state in (None, m[4]):
                out[m[1]] += 1
    return out


if __name__ == "__main__":
    # Set before the servers' modules import it by name.
    server.server_timing = _traced_timing
    from serflow_runtime.cli import main

    sys.exit(main())

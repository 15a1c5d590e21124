"""The router's route-sync sidecar: ``python -m serflow.routesync`` in the router's pod, run
from the operator's image (the standard library only: no Kubernetes client, no token).

Envoy watches the route file in a directory the pod shares (an emptyDir, ``--to``). This
process fills it:

- at start (``--once``, the pod's init container) with the route file of the router's
  ConfigMap, mounted at ``--from``: the kubelet writes the current one into a new pod;
- then, in a loop, with what the operator's route server says the object's route is now
  (``--url``; ``serflow.controller.routes``, a long poll: the answer comes as soon as the
  operator applies a new route to the ConfigMap). The kubelet refreshes a mounted
  ConfigMap only on its periodic sync, about a minute; this is how a new split reaches
  Envoy at once without anyone writing to the pod.

The data plane never depends on the operator: when it cannot be reached (down, being
replaced, or a replica that does not work) Envoy keeps the route it has, and the loop
follows changes of the mounted ConfigMap instead, the durable source the kubelet
refreshes (and, after ``SETTLE_S`` of silence, takes the mount's route whatever it is).
A route that does not parse is never written (Envoy keeps the last good one).
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from serflow.k8s.envoy import ROUTE_FILE, write_route_text

log = logging.getLogger("serflow.routesync")

ROUTE_LIMIT = 1 << 20
"""Bytes of a route read at most, from the operator or the mount (one is a few KB)."""
WAIT_S = 20.0
"""How long the operator may hold one request while the route stays the same."""
CONNECT_TIMEOUT_S = 2.0
"""Seconds to connect to the operator's route server."""
SLACK_S = 5.0
"""Seconds beyond ``WAIT_S`` a request may take in all before it counts as failed."""
SETTLE_S = 120.0
"""Seconds without an answer from the operator after which the mount is the route, even
unchanged: nobody else writes the ConfigMap, and by then the kubelet has refreshed it
(its periodic sync, about a minute)."""
RETRY_S = 1.0
"""Pause after a request that brought no route (operator down, or not serving it)."""
GAP_S = 0.25
"""The least time between two requests (a server that answers at once, not holding the
request, is asked four times a second at most)."""


class Answer(Enum):
    ROUTE = "route"
    """The operator's route (maybe the one we have)."""
    SAME = "same"
    """Unchanged since the version we sent (304)."""
    UNKNOWN = "unknown"
    """The operator does not serve this object's route (404: not the working replica, or
    it has not applied a route since it started)."""
    DOWN = "down"
    """No usable answer: refused, timed out, an error, or a body that is not a route."""


@dataclass(frozen=True)
class Fetched:
    answer: Answer
    text: str = ""
    etag: str = ""


def valid_route(text: str) -> bool:
    """Whether ``text`` is a route file Envoy reads: a DiscoveryResponse (JSON, which is
    YAML) with a version and one RouteConfiguration."""
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("version_info"), str):
        return False
    res = doc.get("resources")
    return (
        isinstance(res, list)
        and len(res) == 1
        and isinstance(res[0], dict)
        and str(res[0].get("@type", "")).endswith("config.route.v3.RouteConfiguration")
    )


def read_bounded(path: Path, limit: int = ROUTE_LIMIT) -> str | None:
    """The file's text, None when it is missing, unreadable or larger than ``limit``."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    return data.decode("utf-8", "replace")


def fetch(url: str, etag: str, wait_s: float = WAIT_S) -> Fetched:
    """One long poll of the operator's route server: the route when it is not ``etag``
    (at once), else when it changes within ``wait_s`` seconds, else SAME. Every request
    is a new connection, so that a Service in front of several operator replicas sends
    the next one wherever it likes."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        return Fetched(Answer.DOWN)
    query = urllib.parse.urlencode({"wait": f"{wait_s:g}"})
    path = f"{u.path or '/'}?{query}"
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=CONNECT_TIMEOUT_S)
    deadline = time.monotonic() + wait_s + SLACK_S
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(wait_s + SLACK_S)
        conn.request("GET", path, headers={"If-None-Match": f'"{etag}"'} if etag else {})
        r = conn.getresponse()
        if r.status == 304:
            return Fetched(Answer.SAME, etag=etag)
        if r.status == 404:
            return Fetched(Answer.UNKNOWN)
        if r.status != 200:
            return Fetched(Answer.DOWN)
        body = bytearray()
        while len(body) <= ROUTE_LIMIT and (chunk := r.read(64 * 1024)):
            body += chunk
            if time.monotonic() > deadline:
                return Fetched(Answer.DOWN)
        if len(body) > ROUTE_LIMIT:
            return Fetched(Answer.DOWN)
        text = body.decode("utf-8", "replace")
        if not valid_route(text):
            return Fetched(Answer.DOWN)
        return Fetched(Answer.ROUTE, text, (r.getheader("ETag") or "").strip('"'))
    except (OSError, http.client.HTTPException):
        return Fetched(Answer.DOWN)
    finally:
        conn.close()


@dataclass
class Sync:
    """The route file Envoy watches, kept current from the operator or the mount."""

    source: Path
    """The route file of the mounted ConfigMap."""
    route_dir: Path
    """The directory Envoy watches (its route file is written there by rename)."""
    url: str = ""
    """The operator's route for this object ('' : follow the mount only)."""
    current: str | None = None
    """What the route file holds (as this process wrote or found it)."""
    mount_seen: str | None = None
    """The mount's route when last looked at: a change of it is news."""
    etag: str = ""
    """The version of the operator's route we hold ('' : none)."""
    settle_s: float = SETTLE_S
    """See ``SETTLE_S``."""
    silent_since: float | None = None
    """Since when the operator has not answered with a route (None: it answers)."""

    def start(self) -> None:
        """The route file from the mount, unless the directory holds a good one already (a
        restarted sidecar keeps what Envoy serves; the loop corrects it)."""
        self.mount_seen = read_bounded(self.source)
        have = read_bounded(self.route_dir / ROUTE_FILE)
        if have is not None and valid_route(have):
            self.current = have
        elif self.mount_seen is not None:
            self.write(self.mount_seen)

    def write(self, text: str) -> bool:
        """Put ``text`` in Envoy's route file when it is a route and not what it holds."""
        if text == self.current or not valid_route(text):
            return False
        write_route_text(self.route_dir, text)
        self.current = text
        log.info("route %s written", json.loads(text).get("version_info"))
        return True

    def step(self, got: Fetched, now: float | None = None) -> bool:
        """Act on one answer of the operator; whether the route file was written.

        The mount is read each time. While the operator answers, its changes are old news
        (the operator applied them before it served them). When it does not, a change of
        the mount is the newest route there is; and once it has been silent for
        ``settle_s`` the mount is the route even unchanged (a route the operator applied
        just before it went away may have reached the mount before it reached us)."""
        now = time.monotonic() if now is None else now
        mount = read_bounded(self.source)
        changed = mount is not None and mount != self.mount_seen
        if mount is not None:
            self.mount_seen = mount
        if got.answer in (Answer.ROUTE, Answer.SAME):
            self.silent_since = None
            if got.answer is Answer.SAME:
                return False
            self.etag = got.etag
            return self.write(got.text)
        self.etag = ""
        if self.silent_since is None:
            self.silent_since = now
        settled = now - self.silent_since >= self.settle_s
        return mount is not None and (changed or settled) and self.write(mount)

    def run(
        self,
        stop: Callable[[], bool] = lambda: False,
        wait_s: float = WAIT_S,
        retry_s: float = RETRY_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Poll until ``stop()``; never raises on a failed request or write."""
        self.start()
        while not stop():
            began = time.monotonic()
            got = fetch(self.url, self.etag, wait_s) if self.url else Fetched(Answer.DOWN)
            try:
                self.step(got)
            except OSError as e:  # a full or unwritable directory: try again next time
                log.warning("route not written: %s", e)
            if got.answer in (Answer.DOWN, Answer.UNKNOWN):
                sleep(retry_s)
            else:
                sleep(max(GAP_S - (time.monotonic() - began), 0.0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serflow.routesync", description=__doc__)
    p.add_argument("--from", dest="source", required=True, type=Path,
                   help="the route file of the mounted ConfigMap")  # fmt: skip
    p.add_argument("--to", dest="route_dir", required=True, type=Path,
                   help="the directory Envoy watches")  # fmt: skip
    p.add_argument("--url", default="", help="the operator's route of this object")
    p.add_argument("--once", action="store_true", help="copy the mount's route and exit")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help="seconds without the operator after which the mount is the route")  # fmt: skip
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sync = Sync(a.source, a.route_dir, a.url, settle_s=a.settle)
    if a.once:
        text = read_bounded(a.source)
        if text is None or not valid_route(text):
            log.error("no route in %s", a.source)
            return 1
        write_route_text(a.route_dir, text)
        return 0
    sync.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

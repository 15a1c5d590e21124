"""The operator's route server on 127.0.0.1: what it serves, the long poll, and that a
route is served only while the object's epochs run in this process."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator

import pytest

from serflow.controller import routes
from serflow.k8s import envoy

NS, NAME = "team-a", "digits"


def _route(weight: int) -> str:
    return envoy.route_file_text(weight, f"v{weight}")


@pytest.fixture
def server() -> Iterator[routes.RouteServer]:
    s = routes.RouteServer(routes.RouteStore(), "127.0.0.1", 0).start()
    try:
        yield s
    finally:
        s.stop()


def _get(
    s: routes.RouteServer, path: str, etag: str = "", timeout: float = 10.0
) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"If-None-Match": f'"{etag}"'} if etag else {})
        r = conn.getresponse()
        return r.status, r.read().decode(), (r.getheader("ETag") or "").strip('"')
    finally:
        conn.close()


def test_a_route_is_served_only_while_its_object_is_open(server: routes.RouteServer) -> None:
    path = f"/routes/{NS}/{NAME}"
    store = server.store
    store.publish(NS, NAME, _route(300))  # the object's epochs do not run here
    assert _get(server, path)[0] == 404
    store.open(NS, NAME)
    store.publish(NS, NAME, _route(300))
    code, body, tag = _get(server, path)
    assert (code, body, tag) == (200, _route(300), routes.etag_of(_route(300)))
    assert _get(server, path, tag)[0] == 304  # unchanged, not held without ?wait
    assert _get(server, f"/routes/{NS}/other")[0] == 404
    store.forget(NS, NAME)
    assert _get(server, path)[0] == 404
    store.publish(NS, NAME, _route(500))  # an epoch ending after its daemon stopped
    assert _get(server, path)[0] == 404


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"/routes/{NS}/{NAME}?wait=soon", 400),
        (f"/routes/{NS}/Not_A_Name", 404),
        (f"/routes/{NS}", 404),
        (f"/routes/{NS}/{NAME}/x", 404),
        ("/metrics", 404),
    ],
)
def test_what_is_not_a_route_request(server: routes.RouteServer, path: str, code: int) -> None:
    server.store.open(NS, NAME)
    server.store.publish(NS, NAME, _route(300))
    assert _get(server, path)[0] == code


def test_a_held_request_is_answered_as_soon_as_the_route_changes(
    server: routes.RouteServer,
) -> None:
    store = server.store
    store.open(NS, NAME)
    store.publish(NS, NAME, _route(300))
    tag = routes.etag_of(_route(300))
    got: list[tuple[float, tuple[int, str, str]]] = []
    began = time.monotonic()

    def held_request() -> None:
        answer = _get(server, f"/routes/{NS}/{NAME}?wait=20", tag, timeout=30)
        got.append((time.monotonic() - began, answer))

    t = threading.Thread(target=held_request)
    t.start()
    time.sleep(0.5)
    assert not got and store.held == 1  # held: the route is what the client has
    store.publish(NS, NAME, _route(300))  # the same route again: still held
    time.sleep(0.2)
    assert not got
    store.publish(NS, NAME, _route(700))  # from an epoch's thread
    t.join(5)
    ((after, (code, body, new_tag)),) = got
    assert (code, body, new_tag) == (200, _route(700), routes.etag_of(_route(700)))
    assert 0.6 < after < 10, after  # after the change, long before the 20 s wait
    assert store.held == 0


def test_a_held_request_ends_unchanged_or_when_the_route_is_forgotten(
    server: routes.RouteServer,
) -> None:
    store = server.store
    store.open(NS, NAME)
    store.publish(NS, NAME, _route(300))
    tag = routes.etag_of(_route(300))
    t0 = time.monotonic()
    code, _, same = _get(server, f"/routes/{NS}/{NAME}?wait=0.5", tag)
    assert (code, same) == (304, tag) and 0.4 < time.monotonic() - t0 < 10
    threading.Timer(0.3, store.forget, (NS, NAME)).start()
    t0 = time.monotonic()
    assert _get(server, f"/routes/{NS}/{NAME}?wait=20", tag)[0] == 404
    assert time.monotonic() - t0 < 10  # at the forgetting, not at the 20 s wait
    # A request's wait is bounded by the server's, whatever it asks.
    assert routes.MAX_WAIT_S <= 30


def test_the_routers_learn_the_operators_image_and_route_server_from_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serflow.inference import parse_inference
    from tests.controller.manifests import manifest

    inf = parse_inference(manifest("x")["spec"], "x")
    monkeypatch.delenv("SERFLOW_OPERATOR_IMAGE", raising=False)
    monkeypatch.delenv("SERFLOW_ROUTES_URL", raising=False)
    kept = routes.with_route_sync(inf)
    assert kept == inf and kept.routing.routes_url == ""
    monkeypatch.setenv("SERFLOW_OPERATOR_IMAGE", "reg/op:1")
    monkeypatch.setenv("SERFLOW_ROUTES_URL", "http://op.sys.svc:8081")
    told = routes.with_route_sync(inf).routing
    assert (told.sync_image, told.routes_url) == ("reg/op:1", "http://op.sys.svc:8081")


def test_not_served_unless_a_port_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERFLOW_ROUTES_PORT", raising=False)
    assert routes.serve() is None
    monkeypatch.setenv("SERFLOW_ROUTES_PORT", "0")
    assert routes.serve() is None

"""The stats scrape has one deadline for every endpoint, first byte to last.

A per-read socket timeout lets an endpoint that drips a byte now and then hold the scrape
(and the thread every object's epochs share) for ever. Servers here bind 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from serflow.controller.kube import read_counters
from serflow_testbed.harness import stuck_server

COUNTER = "http.ingress.downstream_rq_total"


@contextmanager
def http_server(body: bytes, drip: float | None = None) -> Iterator[str]:
    """An HTTP/1.1 server on 127.0.0.1 answering every request with ``body``; with
    ``drip``, one byte of it every ``drip`` seconds."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            try:
                conn.sendall(head)
                if drip is None:
                    conn.sendall(body)
                    return
                for i in range(len(body)):
                    if stop.wait(drip):
                        return
                    conn.sendall(body[i : i + 1])
            except OSError:
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/stats"
    finally:
        stop.set()
        t.join(5)
        srv.close()


def test_a_dripping_or_silent_endpoint_reads_missing_and_the_others_still_count() -> None:
    page = f"{COUNTER}: 42\n".encode()
    with (
        http_server(page) as good,
        http_server(page, drip=0.3) as dripping,
        stuck_server() as silent,
    ):
        t0 = time.monotonic()
        got = read_counters(
            {"good": good, "dripping": dripping, "silent": f"{silent.url}/stats"},
            COUNTER,
            deadline=1.0,
        )
        took = time.monotonic() - t0
    assert {r.endpoint: r.value for r in got} == {"good": 42, "dripping": None, "silent": None}
    # The dripping page would take 0.3 s x 34 bytes: the scrape gave up at its deadline
    # (bounded generously here: the point is that it ends, not how fast).
    assert took < 8.0, took


def test_a_page_past_the_limit_is_cut() -> None:
    from serflow.controller.kube import STATS_LIMIT

    long = (f"{COUNTER}: 7\n" + "x" * (STATS_LIMIT + 10)).encode()
    with http_server(long) as url:
        (reading,) = read_counters({"a": url}, COUNTER)
    assert reading.value == 7
    assert read_counters({}, COUNTER) == ()


def test_an_api_server_that_never_answers_ends_the_call() -> None:
    import pytest
    from kubernetes import client

    from serflow.controller.kube import Kube

    with stuck_server() as silent:
        conf = client.Configuration()
        conf.host = silent.url
        kube = Kube(client.ApiClient(conf), timeout=(1.0, 1.0))
        t0 = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            kube.get("v1", "ConfigMap", "default", "x")
        assert time.monotonic() - t0 < 8.0  # it ends (without the bound it waits for ever)

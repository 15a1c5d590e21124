"""The liveness probe (``serflow.controller.liveness``): an epoch under way for longer
than any healthy one takes fails it, through kopf's own probe server."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import kopf
import pytest

from serflow.controller import handlers
from serflow.controller.liveness import STALL_S, EpochWatch, stalled
from serflow_testbed.harness import free_port


def test_epochs_under_way_past_the_bound_with_none_ended_are_stalled() -> None:
    started = {"a/x": 150.0, "b/y": 100.0, "c/z": 390.0}
    assert stalled(started, None, now=400.0, bound=STALL_S) == []
    assert stalled(started, None, now=401.0, bound=STALL_S) == ["b/y"]
    assert stalled(started, None, now=1000.0, bound=STALL_S) == ["b/y", "a/x", "c/z"]


def test_epochs_that_queue_but_end_are_load_not_a_stall() -> None:
    # b/y has waited 500 s, but another epoch ended 10 s ago: the pool moves.
    started = {"b/y": 100.0}
    assert stalled(started, last_end=590.0, now=600.0, bound=STALL_S) == []
    assert stalled(started, last_end=250.0, now=600.0, bound=STALL_S) == ["b/y"]


def test_nothing_under_way_is_never_stalled() -> None:
    assert stalled({}, last_end=0.0, now=1e6) == []


def test_an_ended_epoch_is_not_under_way() -> None:
    w = EpochWatch()
    w.begin("a/x", 0.0)
    w.end("a/x", 1.0)
    w.end("a/x", 2.0)  # twice: harmless
    assert w.stalled(now=1e6) == [] and w.started == {} and w.last_end == 2.0


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _probe_once(registry: kopf.OperatorRegistry) -> int:
    """Start kopf's probe server on 127.0.0.1, GET it once, stop it: the status."""
    from kopf._core.engines.probing import health_reporter  # kopf's own server

    url = f"http://127.0.0.1:{free_port()}/healthz"

    async def scenario() -> int:
        ready = asyncio.Event()
        server = asyncio.create_task(
            health_reporter(url, memo=kopf.Memo(), indices={}, registry=registry,
                            settings=kopf.OperatorSettings(), ready_flag=ready)
        )  # fmt: skip
        try:
            await asyncio.wait_for(ready.wait(), 10)
            return await asyncio.to_thread(_get, url)
        finally:
            server.cancel()

    return asyncio.run(scenario())


def test_kopfs_probe_answers_500_while_an_epoch_is_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = kopf.OperatorRegistry()
    kopf.on.probe(id="epochs", errors=kopf.ErrorsMode.PERMANENT, registry=registry)(
        handlers.epochs_progress
    )
    watch = EpochWatch()
    monkeypatch.setattr(handlers, "EPOCHS", watch)
    now = handlers.CLOCK.monotonic()
    assert _probe_once(registry) == 200  # nothing under way
    watch.begin("ns/healthy", now)
    assert _probe_once(registry) == 200
    watch.begin("ns/stuck", now - STALL_S - 1)
    assert _probe_once(registry) == 500
    watch.end("ns/stuck", now)  # it ends: the epochs move again
    assert _probe_once(registry) == 200


def test_kopf_waits_out_an_api_server_away_for_longer_than_the_stall_bound() -> None:
    # kopf's own default (54 s in all) ended the process during a 60 s API server stop.
    assert sum(kopf.OperatorSettings().networking.error_backoffs) < 60
    assert sum(handlers.API_BACKOFFS_S) > STALL_S

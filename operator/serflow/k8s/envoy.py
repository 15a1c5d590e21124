"""The one Envoy renderer (DESIGN.md section 4, Routing): pure functions, no I/O but
``write_route_file`` and ``write_route_text``.

Fixed cluster names; the upstream addresses and the pool's weight are parameters.

* ``pool``: the worker Deployment (its Service, or local processes in tests).
* ``functions``: the function entry (the fused or first Knative Service).
* ``pool_spill``: an aggregate cluster [pool, functions].  The route sends the pool's
  share to it; a 503 from the pool (its epoch budget is full, or it drains) is retried
  once, and the previous_priorities retry plugin makes that retry skip priority 0 (the
  pool), so it lands on the functions.
* ``envoy_admin``: the admin interface, bound to 127.0.0.1 only; the stats listener
  proxies just the read-only stats paths to it.

Weights are integers summing to ``wire.WEIGHT_TOTAL``.  The route lives in its own file
(an RDS DiscoveryResponse) read through ``path_config_source`` with
``watched_directory``: swapping the file by rename applies the new split to the next
request without dropping in-flight ones (a kubelet-updated ConfigMap does the same).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serflow import wire

CLUSTER_POOL = "pool"
CLUSTER_FUNCTIONS = "functions"
CLUSTER_SPILL = "pool_spill"
CLUSTER_ADMIN = "envoy_admin"
ROUTE_NAME = "serflow"
ROUTE_FILE = "route.yaml"
STATS_PATHS = ("/stats/prometheus", "/stats")

Address = tuple[str, int]

_T = "type.googleapis.com/envoy."
_HCM = _T + "extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = _T + "extensions.filters.http.router.v3.Router"
_AGGREGATE = _T + "extensions.clusters.aggregate.v3.ClusterConfig"
_PREV_PRIO = _T + "extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"
_PREV_HOSTS = _T + "extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_ROUTE_CFG = _T + "config.route.v3.RouteConfiguration"


def _sock(host: str, port: int) -> dict[str, Any]:
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _breakers() -> dict[str, Any]:
    # Envoy never retries a circuit-breaker overflow, and the default allows only 3
    # concurrent retries: a burst spilling to the functions needs far more.
    big = 100_000
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": big,
                "max_pending_requests": big,
                "max_requests": big,
                "max_retries": big,
            }
        ]
    }


def _outlier_detection(failures: int = 5, ejection_s: int = 10) -> dict[str, Any]:
    # Only failures Envoy sees itself (connect failures, resets, timeouts) eject a host:
    # a worker's 503 sheds a request beyond its epoch budget and must not eject it.  Five
    # in a row: a dead host fails every request at once (each one retried elsewhere),
    # while a live but slow one rarely times out five times running.
    return {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": failures,
        "enforcing_consecutive_local_origin_failure": 100,
        "enforcing_local_origin_success_rate": 0,
        "enforcing_consecutive_5xx": 0,
        "enforcing_consecutive_gateway_failure": 0,
        "enforcing_success_rate": 0,
        "interval": "1s",
        "base_ejection_time": f"{ejection_s}s",
        "max_ejection_percent": 100,
    }


def _health_check() -> dict[str, Any]:
    # A host that stops answering (frozen, or stuck in a call) fails no request Envoy sees
    # until one times out; its /healthz, answered on the server's event loop beside the
    # compute thread, stops at once. Three misses of 2 s: out of rotation within 6 to 8 s,
    # while a worker busy with a batch still answers. Every 2 s also while Envoy counts no
    # traffic to the pool (its own default then is 60 s, and the pool's requests go through
    # the aggregate cluster): measured with a frozen worker, clients kept meeting it for
    # 70 s.
    return {
        "timeout": "2s",
        "interval": "2s",
        "no_traffic_interval": "2s",
        "unhealthy_threshold": 3,
        "healthy_threshold": 1,
        "http_health_check": {"path": "/healthz"},
    }


def cluster(
    name: str,
    upstreams: Sequence[Address],
    connect_timeout: float = 1.0,
    eject_failed_hosts: bool = False,
    panic_threshold: float | None = None,
    attempt_s: float | None = None,
    health_check: bool = True,
    ejection: tuple[int, int] = (5, 10),
) -> dict[str, Any]:
    """A ROUND_ROBIN cluster; a host name (a headless Service) is resolved to every
    address it has, so each pod is a host of its own.  ``eject_failed_hosts``: outlier
    detection ejects a host that fails to connect, resets or times out five times in a row,
    and (``health_check``) an active health check takes one out that stops answering
    ``/healthz``. ``ejection``: (failures in a row, seconds of the first ejection).
    ``panic_threshold``: below this percentage of healthy hosts Envoy balances over all
    of them, ejected or not (None: Envoy's 50; 0: never, so within the aggregate cluster
    a pool without a healthy worker leaves its share to the functions).
    ``attempt_s``: an attempt on one of its hosts unanswered after this is reset, and the
    route's retry (``reset``) sends the request elsewhere (Envoy reads the bound from the
    host's own cluster, so within the aggregate cluster it holds for the pool alone)."""
    if not upstreams:
        raise ValueError(f"cluster {name} needs at least one upstream address")
    static = all(_is_ip(h) for h, _ in upstreams)
    out: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": f"{connect_timeout}s",
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": _breakers(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _sock(h, p)}} for h, p in upstreams]}
            ],
        },
    }
    if eject_failed_hosts:
        out["outlier_detection"] = _outlier_detection(*ejection)
        if health_check:
            out["health_checks"] = [_health_check()]
    if attempt_s is not None:
        out["typed_extension_protocol_options"] = {
            _HTTP_OPTIONS: {
                "@type": _T + "extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"max_stream_duration": f"{attempt_s:g}s"},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }
    if panic_threshold is not None:
        out["common_lb_config"] = {"healthy_panic_threshold": {"value": panic_threshold}}
    return out


def spill_cluster() -> dict[str, Any]:
    return {
        "name": CLUSTER_SPILL,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "circuit_breakers": _breakers(),
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {"@type": _AGGREGATE, "clusters": [CLUSTER_POOL, CLUSTER_FUNCTIONS]},
        },
    }


GRPC_PREFIX = "/inference.GRPCInferenceService/"
"""The Open Inference Protocol's gRPC methods (unary calls over HTTP/2)."""
GRPC_UPSTREAM_CT = "application/x-protobuf"
"""What the reverse bridge hands the servers: the call's message as an HTTP/1.1 body."""
_GRPC_STATUS_LUA = """
function envoy_on_response(handle)
  local status = handle:headers():get("x-serflow-grpc-status")
  if status == nil then
    return
  end
  local message = handle:headers():get("x-serflow-grpc-message") or ""
  handle:headers():remove("x-serflow-grpc-status")
  handle:headers():remove("x-serflow-grpc-message")
  local trailers = handle:trailers()
  if trailers ~= nil then
    trailers:replace("grpc-status", status)
    trailers:replace("grpc-message", message)
  end
end
"""
"""The bridge sets a call's status from the HTTP status alone (400 is INTERNAL); a server's
refusal names its own (INVALID_ARGUMENT, NOT_FOUND) in headers, set here as the trailers."""


def _grpc_filters() -> list[dict[str, Any]]:
    """gRPC clients on the ingress listener: each unary call is handed to the servers as an
    HTTP/1.1 POST of its message (the pool and the functions speak HTTP/1.1 only, and a
    Knative Service has one port), so it is routed and retried as REST is."""
    return [
        {
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": _T + "extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": _GRPC_STATUS_LUA},
            },
        },
        {
            "name": "envoy.filters.http.grpc_http1_reverse_bridge",
            "typed_config": {
                "@type": _T + "extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig",
                "content_type": GRPC_UPSTREAM_CT,
                "withhold_grpc_frames": True,
            },
        },
    ]


EDGE_LIMITS: dict[str, Any] = {
    # A client must send its headers within 10 s (a slow one holds no stream for longer),
    # at most 64 of them in 32 KiB; a header name with an underscore is refused (proxies
    # differ on whether it equals one with a dash); an idle connection closes after 5 min.
    "request_headers_timeout": "10s",
    "max_request_headers_kb": 32,
    "common_http_protocol_options": {
        "idle_timeout": "300s",
        "max_headers_count": 64,
        "headers_with_underscores_action": "REJECT_REQUEST",
    },
}
"""What the ingress listener bounds for each client: it is the object's edge."""
MAX_DOWNSTREAM_CONNECTIONS = 10_000
"""Open client connections one router takes at most (Envoy's overload manager): a bound
for each pod's memory, far above what a pool of workers answers at once."""


def _hcm(
    stat_prefix: str, route: dict[str, Any], grpc: bool = False, stream_idle_s: float | None = None
) -> dict[str, Any]:
    edge: dict[str, Any] = {}
    if grpc:  # the ingress listener
        edge = dict(EDGE_LIMITS)
        if stream_idle_s is not None:
            # Envoy's default 5 min would cut a request a long epoch may lawfully hold.
            edge["stream_idle_timeout"] = f"{stream_idle_s:g}s"
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": stat_prefix,
            **edge,
            **route,
            "http_filters": [
                *(_grpc_filters() if grpc else []),
                {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}},
            ],
        },
    }


def route_config(
    pool_weight: int,
    timeout_seconds: float = 60.0,
    functions_host: str | None = None,
    functions_headers: Sequence[tuple[str, str]] = (),
    attempt_timeout_s: float | None = None,
) -> dict[str, Any]:
    """The RouteConfiguration: weighted [pool_spill, functions] with the spill retry.

    ``attempt_timeout_s``: Envoy's per-try timeout, for a function host that hangs (a
    frozen pod resets nothing): the attempt is cut and retried on another host, and the
    functions cluster counts it towards ejecting that host. Longer than a cold start
    (``timeouts.function_attempt_timeout_s``), so a cold function is sent a request once;
    a pool worker's attempts end sooner, at the pool cluster's own bound. None: no bound
    but the route's timeout.

    ``functions_headers`` are set on every request (a client's own values are replaced):
    the routing headers Knative's activator needs to find a Revision. The pool ignores them.
    """
    if isinstance(pool_weight, bool) or not isinstance(pool_weight, int):
        raise TypeError("pool_weight must be an int")
    total = wire.WEIGHT_TOTAL
    if not 0 <= pool_weight <= total:
        raise ValueError(f"pool_weight must be in 0..{total}, got {pool_weight}")
    weights = [(CLUSTER_SPILL, pool_weight), (CLUSTER_FUNCTIONS, total - pool_weight)]
    action: dict[str, Any] = {
        # Envoy refuses a zero weight only when all are zero; leave zeros out anyway.
        "weighted_clusters": {"clusters": [{"name": n, "weight": w} for n, w in weights if w > 0]},
        "timeout": f"{timeout_seconds}s",
        # Inference is idempotent: a request whose host failed to connect or reset (a
        # killed worker's open batch, a killed function) is sent again, to another host
        # and, from the pool, to the functions.  Three retries: a request the pool sheds
        # (503) may meet a dead function host before outlier detection ejects it; then
        # every priority has been tried, the plugin starts over at the pool, and only the
        # third retry reaches a live function host. A 504 is an upstream's own timeout
        # (Knative's activator when a cold start outlasts the Revision's timeoutSeconds,
        # seen once in a CI run on kind): sent again, the pod started meanwhile answers
        # it. Envoy's own route timeout is final and never retried.
        "retry_policy": {
            "retry_on": "retriable-status-codes,connect-failure,refused-stream,reset",
            "retriable_status_codes": [503, 504],
            "num_retries": 3,
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {"@type": _PREV_PRIO, "update_frequency": 1},
            },
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": _PREV_HOSTS},
                }
            ],
            "host_selection_retry_max_attempts": 3,
        },
    }
    if attempt_timeout_s is not None:
        # No hedging: the attempt is cut before it is sent again, never duplicated.
        action["retry_policy"]["per_try_timeout"] = f"{attempt_timeout_s:g}s"
    if functions_host:
        # Knative routes by Host; the worker ignores it.
        action["host_rewrite_literal"] = functions_host
    added = [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in functions_headers
    ]
    routes: list[dict[str, Any]] = []
    for match in INFERENCE_MATCHES:
        route: dict[str, Any] = {"match": match, "route": action}
        if added:
            route["request_headers_to_add"] = added
        routes.append(route)
    # The router is the edge: nothing but inference reaches the servers behind it (not
    # their /metrics, nor a function's /run frames).
    routes.append({"match": {"prefix": "/"}, "direct_response": NOT_ROUTED})
    return {
        "name": ROUTE_NAME,
        "virtual_hosts": [{"name": "serflow", "domains": ["*"], "routes": routes}],
    }


_POST = [{"name": ":method", "string_match": {"exact": "POST"}}]
INFERENCE_MATCHES: tuple[dict[str, Any], ...] = (
    {"path": "/infer", "headers": _POST},
    {"path": "/v2"},
    {"prefix": "/v2/"},
    {"prefix": GRPC_PREFIX, "headers": _POST},
)
"""What the router forwards: ``POST /infer`` and the Open Inference Protocol's paths, REST
and gRPC."""
NOT_ROUTED = {"status": 404, "body": {"inline_string": "not an inference path\n"}}
"""Envoy's own answer to anything else."""


def route_version(route: dict[str, Any]) -> str:
    """A route's version_info: a digest of its content, so that the version changes
    exactly when the route does, whoever writes it and however often."""
    text = json.dumps(route, sort_keys=True, separators=(",", ":"))
    return "r" + hashlib.sha256(text.encode()).hexdigest()[:16]


def route_discovery(route: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """The file Envoy reads through path_config_source: a DiscoveryResponse (versioned
    by its content unless ``version`` is given)."""
    v = route_version(route) if version is None else version
    return {"version_info": v, "resources": [{"@type": _ROUTE_CFG, **route}]}


def bootstrap(
    pool: Sequence[Address],
    functions: Sequence[Address],
    route_dir: str,
    listen: Address = ("127.0.0.1", wire.ENVOY_PORT),
    stats: Address = ("127.0.0.1", wire.STATS_PORT),
    admin_port: int = wire.ENVOY_ADMIN_PORT,
    node_id: str = "serflow",
    stat_prefix: str = wire.STAT_PREFIX,
    stream_idle_s: float | None = None,
    pool_attempt_s: float | None = None,
) -> dict[str, Any]:
    """The static bootstrap: ingress listener (route from ``route_dir``), stats listener.
    ``stream_idle_s``: how long a request may wait with no byte moving (at least the
    route's timeout; None: Envoy's 5 min). ``pool_attempt_s``: how long one attempt on a
    pool worker may take before it is reset and retried elsewhere (a frozen worker; None:
    the route's timeout). A function host whose attempts fail or time out (the route's
    ``attempt_timeout_s``) twice in a row is ejected.

    The ingress listener counts its requests under ``stat_prefix``
    (``wire.request_counter(stat_prefix)``), which is where the operator reads them.
    """
    route_path = str(Path(route_dir) / ROUTE_FILE)
    ingress_route = {
        "rds": {
            "route_config_name": ROUTE_NAME,
            "config_source": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": route_path,
                    "watched_directory": {"path": str(route_dir)},
                },
            },
        }
    }
    stats_route = {
        "route_config": {
            "name": "stats",
            "virtual_hosts": [
                {
                    "name": "stats",
                    "domains": ["*"],
                    "routes": [
                        *(
                            {
                                "match": {
                                    "path": p,
                                    "headers": [
                                        {"name": ":method", "string_match": {"exact": "GET"}}
                                    ],
                                },
                                "route": {"cluster": CLUSTER_ADMIN},
                            }
                            for p in STATS_PATHS
                        ),
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 404},
                        },
                    ],
                }
            ],
        }
    }
    return {
        "node": {"id": node_id, "cluster": node_id},
        # Never beyond loopback: the admin interface can change Envoy's state.
        "admin": {"address": _sock("127.0.0.1", admin_port)},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _T + "extensions.resource_monitors.downstream_connections.v3"
                        ".DownstreamConnectionsConfig",
                        "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                    },
                }
            ]
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": _sock(*listen),
                    # Inbound: what a stopping router's drain (drain_listeners?inboundonly)
                    # covers; the stats listener, unmarked, keeps answering scrapes.
                    "traffic_direction": "INBOUND",
                    "filter_chains": [
                        {"filters": [_hcm(stat_prefix, ingress_route, True, stream_idle_s)]}
                    ],
                },
                {
                    "name": "stats",
                    "address": _sock(*stats),
                    "filter_chains": [{"filters": [_hcm("stats", stats_route)]}],
                },
            ],
            "clusters": [
                cluster(
                    CLUSTER_POOL,
                    pool,
                    eject_failed_hosts=True,
                    panic_threshold=0.0,
                    attempt_s=pool_attempt_s,
                ),
                # The route's retries skip a host that failed (previous_hosts), and a
                # host that is gone or hangs is ejected: two attempts in a row cut at the
                # route's per-try bound (Envoy counts those, not max_stream_duration's
                # resets), or failed to connect, or reset, take it out for 30 s. Two, as
                # each router counts its own and a hung host holds every attempt for the
                # whole bound: with five, routers ejected it at different times and a
                # client met it again through the other (measured: 170 answers in 300 s).
                # No active health check: behind one Knative address it would keep a pod
                # warm, or start one. Envoy's panic mode (below 50% healthy) still sends
                # to an ejected last host, as that one address.
                cluster(
                    CLUSTER_FUNCTIONS,
                    functions,
                    eject_failed_hosts=True,
                    health_check=False,
                    ejection=(2, 30),
                ),
                spill_cluster(),
                cluster(CLUSTER_ADMIN, [("127.0.0.1", admin_port)]),
            ],
        },
    }


def to_yaml(doc: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(doc, sort_keys=False))


def route_file_text(pool_weight: int, version: str, **kw: Any) -> str:
    """The route file's content (for a ConfigMap key ``ROUTE_FILE`` or a local file).

    JSON is YAML: Envoy parses the .yaml file either way.
    """
    return json.dumps(route_discovery(route_config(pool_weight, **kw), version), indent=1)


def write_route_file(route_dir: str | Path, pool_weight: int, version: str, **kw: Any) -> Path:
    """Swap the route file atomically (temp file + rename in the watched directory)."""
    return write_route_text(route_dir, route_file_text(pool_weight, version, **kw))


def write_route_text(route_dir: str | Path, text: str) -> Path:
    """Put ``text`` in the directory's route file by a rename: Envoy, watching the
    directory, reads the whole new file or the old one, never a half-written one."""
    d = Path(route_dir)
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".route-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # Envoy may run as another user than the writer
        os.replace(tmp, d / ROUTE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d / ROUTE_FILE

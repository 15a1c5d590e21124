"""serflow data plane: early-exit model, profiler, worker and function servers."""

__version__ = "0.1.0"

DEFAULT_PORT = 8080
"""Port the worker and function servers listen on unless told (Knative's default ``$PORT``).
The control plane, which this package never imports, builds pods for the same port; a test
checks the two agree."""

KNATIVE_ROUTING_HEADERS = ("Knative-Serving-Revision", "Knative-Serving-Namespace")
"""The headers by which Knative's activator finds a Revision; the worker sends them to a
tail named ``knative-revision://NAMESPACE/REVISION`` (the control plane's ``wire`` spells
the same; a test checks the two agree)."""
REVISION_SCHEME = "knative-revision"

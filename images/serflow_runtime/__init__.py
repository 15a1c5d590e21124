"""serflow data plane: early-exit model, profiler, worker and function servers."""

__version__ = "0.1.0"

DEFAULT_PORT = 8080
"""Port the worker and function servers listen on unless told (Knative's default ``$PORT``).
The control plane, which this package never imports, builds pods for the same port; a test
checks the two agree."""

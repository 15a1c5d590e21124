"""serflow data plane: early-exit model, profiler, worker and function servers."""

__version__ = "0.1.0"

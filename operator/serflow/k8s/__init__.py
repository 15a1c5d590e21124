"""Pure builders of Kubernetes child objects and the Envoy config (no I/O, no torch)."""

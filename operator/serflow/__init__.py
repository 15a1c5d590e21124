"""serflow: serve early-exit networks on a node pool plus Knative functions at least cost.

The control plane. Nothing in this package imports torch.
"""

__version__ = "0.1.0"

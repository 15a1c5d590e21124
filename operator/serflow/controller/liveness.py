"""Whether the operator makes progress: the liveness probe's decision.

kopf's probe answers while its event loop runs, and the epochs do their API calls in
worker threads: a thread that never returns, or a pool whose threads all wait, stalls the
epochs of every object while the probe stays healthy. So each epoch says when it starts
and ends, and the probe fails (the kubelet then restarts the pod, and peering hands the
work to another replica) when one has been under way for longer than any healthy epoch
takes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

STALL_S = 300.0
"""An epoch under way this long is stalled: it makes a handful of API calls, each bounded
by ``kube.API_TIMEOUT`` (35 s), so a healthy one ends well within five minutes even with
the API server slow; the kubelet's probe then restarts the pod within a minute more."""


def stalled(started: dict[str, float], now: float, bound: float = STALL_S) -> list[str]:
    """The objects whose epoch started more than ``bound`` seconds before ``now``, the
    longest under way first."""
    late = [(t, key) for key, t in started.items() if now - t > bound]
    return [key for _, key in sorted(late)]


@dataclass
class EpochWatch:
    """The epochs under way, by object (``namespace/name``): when each started, on the
    epochs' monotonic clock. Shared by the daemons (the event loop) and the probe."""

    started: dict[str, float] = field(default_factory=dict)
    """Object key -> when its epoch in flight started; absent when none is."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, key: str, now: float) -> None:
        with self._lock:
            self.started[key] = now

    def end(self, key: str) -> None:
        with self._lock:
            self.started.pop(key, None)

    def stalled(self, now: float, bound: float = STALL_S) -> list[str]:
        with self._lock:
            return stalled(dict(self.started), now, bound)

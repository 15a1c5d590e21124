"""Whether the operator makes progress: the liveness probe's decision.

kopf's probe answers while its event loop runs, and the epochs do their API calls in
worker threads: a thread that never returns, or a pool whose threads all wait, stalls the
epochs of every object while the probe stays healthy. So each epoch says when it starts
and ends, and the probe fails (the kubelet then restarts the pod, and peering hands the
work to another replica) when epochs are under way and none has ended for longer than
any healthy one takes. Epochs that queue for a thread on a slow API server still end, one
after another: that is load, not a stall, and a restart would not help it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

STALL_S = 300.0
"""No epoch ended for this long while some are under way: stalled. An epoch makes a
handful of API calls, each bounded by ``kube.API_TIMEOUT`` (35 s), so a healthy operator
ends one well within five minutes even with the API server slow; the kubelet's probe then
restarts the pod within a minute more."""


def stalled(
    started: Mapping[str, float], last_end: float | None, now: float, bound: float = STALL_S
) -> list[str]:
    """The objects whose epoch has been under way for over ``bound`` seconds, the longest
    first, when no epoch has ended for that long either; else none."""
    if not started:
        return []
    progress = max(min(started.values()), last_end if last_end is not None else float("-inf"))
    if now - progress <= bound:
        return []
    late = [(t, key) for key, t in started.items() if now - t > bound]
    return [key for _, key in sorted(late)]


@dataclass
class EpochWatch:
    """The epochs under way, by object (``namespace/name``), and when one last ended, on
    the epochs' monotonic clock. Shared by the daemons (the event loop) and the probe."""

    started: dict[str, float] = field(default_factory=dict)
    """Object key -> when its epoch in flight started; absent when none is."""
    last_end: float | None = None
    """When the last epoch ended (None: none has yet)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, key: str, now: float) -> None:
        with self._lock:
            self.started[key] = now

    def end(self, key: str, now: float) -> None:
        with self._lock:
            self.started.pop(key, None)
            self.last_end = now

    def stalled(self, now: float, bound: float = STALL_S) -> list[str]:
        with self._lock:
            return stalled(dict(self.started), self.last_end, now, bound)

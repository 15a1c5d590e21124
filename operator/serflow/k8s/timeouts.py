"""How long a request may take at each hop: the router's route, the worker's tail call and
a function's own timeout.

One module because the bounds are one budget: the router's timeout must outlast the pool's
part plus a function's cold start, and the worker's tail call must end before the router
gives up (else Envoy answers 504, which it never retries). The router, the pool and the
functions each read their share from here.
"""

from __future__ import annotations

import math

from serflow.domain import Workload

COLD_START_BOUND_S = 30
"""How long a request may wait for a function's cold start from zero (Knative's activator
holds it meanwhile) before the router and Knative give up on it: Kubernetes' pod-startup
SLO is 5 s at the 99th percentile with the image present, and a model server's runtime
import and model load add seconds more on a busy node. Timeouts bound stuck requests; a
late answer is measured against the SLO, not dropped at it."""


def router_timeout_s(w: Workload) -> int:
    """Envoy's route timeout: a request may wait up to an epoch D for its batch, the pool's
    part (the head, the tail call) may take D + SLO, and a request the pool gives back
    (503) may meet a function's cold start on Envoy's retry."""
    return math.ceil(2 * w.objective.epoch + w.objective.slo_s) + COLD_START_BOUND_S


def pool_attempt_timeout_s(w: Workload) -> int:
    """How long one attempt on a pool worker may take before Envoy resets it and retries
    the request elsewhere (another worker; from the pool, the functions): a live worker
    answers within its batch wait (D) plus its tail call's bound (``tail_timeout_s``),
    then writes its 503 if the tail failed (a second's slack). Longer means a frozen
    worker (a hang, not a crash: nothing resets) holds its requests for the route's whole
    timeout. Only the pool's attempts are bounded so: a function's may legitimately
    wait a cold start, and sending it again would only start more pods."""
    return math.ceil(w.objective.epoch) + tail_timeout_s(w) + 1


def tail_timeout_s(w: Workload) -> int:
    """How long a worker's call to its tail function may take before the worker answers
    that batch's survivors 503 (Envoy then retries them on the spill function): what the
    router's timeout leaves after the batch wait (D) and the retry's cold start. Longer,
    and a tail that cannot start (no room on a node for its pod) makes Envoy time out
    first and answer 504, which it never retries (measured on kind: 303 of 1,800)."""
    return max(1, router_timeout_s(w) - math.ceil(w.objective.epoch) - COLD_START_BOUND_S)

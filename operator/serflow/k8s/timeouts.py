"""How long a request may take at each hop: the router's route, the worker's tail call and
a function's own timeout.

One module because the bounds are one budget: the router's timeout must outlast the pool's
attempt plus two functions' attempts (a cold start each: the first host may hang), and the
worker's tail call must end before the router gives up (else Envoy answers 504, which it
never retries). The router, the pool and the
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
    """Envoy's route timeout: one attempt on the pool (``pool_attempt_timeout_s``), then
    one on a function and, if that host hangs, one more on another
    (``function_attempt_timeout_s`` each), with a second's slack for Envoy's retry
    backoff. Shorter, and a request that meets a frozen function host after the pool gave
    it back would get Envoy's 504 (never retried) instead of its retry."""
    return pool_attempt_timeout_s(w) + 2 * function_attempt_timeout_s(w) + 1


def function_attempt_timeout_s(w: Workload) -> int:
    """How long one attempt on a function host may take before Envoy resets it and retries
    the request on another host (the route's per-try timeout): a cold
    start from zero (``COLD_START_BOUND_S``) plus what Knative lets a running pod take
    (twice the SLO: the Revision's ``timeoutSeconds`` beyond the cold start). A frozen
    host answers nothing and resets nothing; a cold one answers within this, so a cold
    start under the bound is never cut and a cold function is sent each request once
    (hedging every attempt after D + SLO sent cold requests up to four times)."""
    return COLD_START_BOUND_S + math.ceil(2 * w.objective.slo_s)


def _pool_part_s(w: Workload) -> int:
    """What the pool's part of a request may take: a batch wait of up to an epoch D, then
    the head and the tail call within D + SLO."""
    return math.ceil(2 * w.objective.epoch + w.objective.slo_s)


def pool_attempt_timeout_s(w: Workload) -> int:
    """How long one attempt on a pool worker may take before Envoy resets it and retries
    the request elsewhere (another worker; from the pool, the functions): a live worker
    answers within its batch wait (D) plus its tail call's bound (``tail_timeout_s``),
    then writes its 503 if the tail failed (a second's slack). Longer means a frozen
    worker (a hang, not a crash: nothing resets) holds its requests for the route's whole
    timeout. A function's attempt has a bound of its own, past a cold start
    (``function_attempt_timeout_s``)."""
    return math.ceil(w.objective.epoch) + tail_timeout_s(w) + 1


def tail_timeout_s(w: Workload) -> int:
    """How long a worker's call to its tail function may take before the worker answers
    that batch's survivors 503 (Envoy then retries them on the spill function): what the
    pool's part leaves after the batch wait (D). The router's timeout covers this, the
    pool's attempt and the functions' attempts after it; were the tail's bound longer
    than the router's, a tail that cannot start (no room on a node for its pod) would
    make Envoy time out first and answer 504, which it never retries (measured on kind:
    303 of 1,800)."""
    return max(1, _pool_part_s(w) - math.ceil(w.objective.epoch))

"""The batch load balancer and Envoy's weights."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serflow.policy.balancer import balance, pool_share, route_weights


@pytest.mark.parametrize(
    ("requests", "ready", "batch", "full", "partial", "faas"),
    [
        (0, 3, 100, 0, 0, 0),
        (250, 3, 100, 2, 50, 0),  # partial batch on the third instance
        (250, 2, 100, 2, 0, 50),  # no instance left for the partial batch
        (250, 0, 100, 0, 0, 250),
        (300, 3, 100, 3, 0, 0),
        (500, 3, 100, 3, 0, 200),
        (40, 1, 100, 0, 40, 0),
    ],
)
def test_balance_table(
    requests: int, ready: int, batch: int, full: int, partial: int, faas: int
) -> None:
    a = balance(requests, ready, batch)
    assert (a.full_batches, a.partial, a.faas) == (full, partial, faas)


@given(
    requests=st.integers(0, 100_000),
    ready=st.integers(0, 500),
    batch=st.integers(1, 512),
    per_instance=st.integers(1, 8),
)
def test_balance_never_drops_duplicates_or_overfills(
    requests: int, ready: int, batch: int, per_instance: int
) -> None:
    a = balance(requests, ready, batch, per_instance)
    assert a.pool_requests + a.faas == requests  # nothing dropped or duplicated
    assert a.batches <= ready * per_instance  # never more batches than slots
    assert 0 <= a.partial < batch
    assert a.faas >= 0
    # FaaS only gets work when every slot is taken by a full batch.
    if a.faas:
        assert a.full_batches == ready * per_instance


def test_balance_packs_batches_per_instance() -> None:
    a = balance(450, 2, 100, per_instance=3)
    assert (a.full_batches, a.partial, a.faas) == (4, 50, 0)
    a = balance(750, 2, 100, per_instance=3)
    assert (a.full_batches, a.partial, a.faas) == (6, 0, 150)


def test_balance_rejects_negative_input() -> None:
    with pytest.raises(ValueError):
        balance(-1, 1, 10)


def exact_share(ready: int, mu: float, ewma: float) -> Fraction:
    """The documented rule, in exact arithmetic: min(1, ready*mu/ewma), 0 with no ready
    instance, 1 with no traffic estimate yet (ewma 0)."""
    if ready <= 0:
        return Fraction(0)
    if ewma <= 0:
        return Fraction(1)
    return min(Fraction(1), ready * Fraction(mu) / Fraction(ewma))


@pytest.mark.parametrize(
    ("ready", "mu", "ewma", "weights"),
    [
        (0, 16.7, 30.0, (0, 1000)),  # no ready instance: no traffic to the pool
        (-1, 16.7, 30.0, (0, 1000)),
        (0, 10.0, 0.0, (0, 1000)),  # no instance wins over no estimate
        (2, 10.0, 0.0, (1000, 0)),  # no estimate yet: the ready pool takes everything
        (1, 10.0, 40.0, (250, 750)),
        (3, 10.0, 30.0, (1000, 0)),  # exactly 1
        (3, 10.0, 20.0, (1000, 0)),  # 1.5, capped at 1
        (1, 10.0, 30.0, (333, 667)),  # 333.3 rounds down
        (2, 10.0, 30.0, (667, 333)),  # 666.7 rounds up
        # Ties (1/16 and 3/16 are exact in binary): Python's round, to the even weight.
        (1, 1.0, 16.0, (62, 938)),  # 62.5
        (3, 1.0, 16.0, (188, 812)),  # 187.5
        (1, 1.0, 4000.0, (0, 1000)),  # a quarter step: a ready pool can get no weight
    ],
)
def test_pool_share_and_weights(
    ready: int, mu: float, ewma: float, weights: tuple[int, int]
) -> None:
    pool = round(exact_share(ready, mu, ewma) * 1000)
    assert (pool, 1000 - pool) == weights  # the hand-worked case agrees with the rule
    assert route_weights(pool_share(ready, mu, ewma)) == weights


@given(
    ready=st.integers(-2, 500),
    mu=st.floats(0.01, 1_000.0),
    ewma=st.one_of(st.just(0.0), st.floats(0.01, 100_000.0)),
)
def test_pool_share_is_the_documented_rule(ready: int, mu: float, ewma: float) -> None:
    want = exact_share(ready, mu, ewma)
    share = pool_share(ready, mu, ewma)
    if want in (0, 1):
        assert share == want  # exactly 0 or 1, not a float near them
    else:
        assert share == pytest.approx(float(want), rel=1e-12)
    pool, fn = route_weights(share)
    steps = want * 1000
    if abs(steps - math.floor(steps) - Fraction(1, 2)) > Fraction(1, 10**9):
        assert pool == round(steps)
    else:  # within float error of a tie, the float share may land on either side
        assert math.floor(steps) <= pool <= math.ceil(steps)
    assert fn == 1000 - pool


@given(st.floats(-1.0, 2.0))
def test_weights_are_the_share_in_thousandths(share: float) -> None:
    pool, fn = route_weights(share)
    clamped = min(Fraction(1), max(Fraction(0), Fraction(share)))
    # The nearest integer weight; within float error of a tie, either neighbour.
    assert abs(pool - clamped * 1000) <= Fraction(1, 2) + Fraction(1, 10**9)
    assert 0 <= pool <= 1000 and fn == 1000 - pool

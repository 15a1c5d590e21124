"""The batch load balancer and Envoy's weights."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("ready", "mu", "ewma", "share", "weights"),
    [
        (0, 16.7, 30.0, 0.0, (0, 1000)),
        (1, 10.0, 40.0, 0.25, (250, 750)),
        (3, 10.0, 20.0, 1.0, (1000, 0)),
        (2, 10.0, 0.0, 1.0, (1000, 0)),
        (1, 10.0, 30.0, 1 / 3, (333, 667)),
    ],
)
def test_pool_share_and_weights(
    ready: int, mu: float, ewma: float, share: float, weights: tuple[int, int]
) -> None:
    assert pool_share(ready, mu, ewma) == pytest.approx(share)
    assert route_weights(share) == weights


@given(st.floats(-1.0, 2.0))
def test_weights_always_sum_to_1000(share: float) -> None:
    pool, fn = route_weights(share)
    assert pool + fn == 1000 and 0 <= pool <= 1000

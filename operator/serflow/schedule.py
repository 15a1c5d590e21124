"""The same-rules limit: the cheapest pool-size schedule that obeys the online rules.

A clairvoyant that knows every epoch's count but, like the operator, sets one pool size
per scaling window (at the ticks), waits the same cold start for new instances, removes
the newest instances first and pays the same bills (DESIGN.md section 2, baselines). No
scaler bound by those rules can cost less, so it measures how much of a policy's gap to
the per-epoch bound is its rule and how much is physics.

Found exactly by dynamic programming over the ticks. The state at a tick is the pool in
force: the ready instances and, when the cold start outlasts a window, the cohorts still
warming (by the epoch they become ready). Pure: the caller supplies each epoch's function
cost as a function of the ready instances (``EpochCosts``) and bills instances per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EpochCosts:
    """Each epoch's function cost given k ready instances, which is piecewise linear in k.

    The pool takes min(full batches, k x per_instance) full batches, and the partial batch
    when a slot is left; the function cost is linear in the full batches it takes.
    """

    none: Sequence[float]
    """Function cost with nothing on the pool, $."""
    full: Sequence[float]
    """Function cost with every full batch on the pool and the partial batch spilled, $."""
    whole: Sequence[float]
    """Function cost with every request on the pool, $."""
    batches: Sequence[int]
    """Full batches in the epoch."""
    per_instance: int
    """Batches one instance serves per epoch."""

    def table(self, start: int, stop: int, sizes: int) -> Floats:
        """Cumulative cost of epochs [start, stop) at each ready count 0..sizes-1.

        Row k, column j: the cost of epochs start .. start+j-1 with k ready instances.
        """
        none = np.asarray(self.none[start:stop], dtype=np.float64)
        full = np.asarray(self.full[start:stop], dtype=np.float64)
        whole = np.asarray(self.whole[start:stop], dtype=np.float64)
        batches = np.asarray(self.batches[start:stop], dtype=np.float64)
        slots = np.arange(sizes, dtype=np.float64)[:, None] * self.per_instance
        taken = np.minimum(batches[None, :], slots)
        per_batch = np.divide(full - none, batches, out=np.zeros_like(none), where=batches > 0)
        cost = none[None, :] + taken * per_batch[None, :]
        cost += np.where(slots > batches[None, :], (whole - full)[None, :], 0.0)
        out = np.zeros((sizes, stop - start + 1))
        np.cumsum(cost, axis=1, out=out[:, 1:])
        return out


@dataclass(frozen=True)
class Schedule:
    """The cheapest schedule found."""

    sizes: list[int]
    """The pool size decided at each tick, in tick order."""
    cost: float
    """Its total cost, instances and functions, $."""


def ticks(epochs: int, interval: int, phase: int = 0) -> list[int]:
    """The epochs after which the pool is resized: 0, then every t > 0 with t = phase (mod S)."""
    return [0, *(t for t in range(1, epochs) if t % interval == phase % interval)]


def cheapest_schedule(
    costs: EpochCosts,
    tick_epochs: Sequence[int],
    cold_epochs: int,
    instance_epoch_cost: float,
    sizes: range,
    start: int = 0,
) -> Schedule:
    """The cheapest pool size at each tick, over ``sizes``, with everything else fixed.

    A size decided after epoch t serves from epoch t+1 until the next tick; instances
    added at t are billed from t+1 and ready from t+1+cold_epochs; a shrink removes the
    newest (least ready) first. Epoch 0, before the first tick, runs with ``start``
    instances ready (and billed): the pool in force when the trace begins.
    """
    epochs = len(costs.none)
    if epochs == 0:
        return Schedule([], 0.0)
    if not tick_epochs or tick_epochs[0] != 0 or not sizes:
        raise ValueError("ticks must start at epoch 0 and sizes must not be empty")
    if start < 0:
        raise ValueError(f"the starting pool must not be negative, got {start}")
    top = max(sizes[-1], start) + 1
    head = float(costs.table(0, 1, start + 1)[start, 1]) + start * instance_epoch_cost
    bounds = [*tick_epochs, epochs - 1]
    windows = [(t + 1, bounds[i + 1] + 1) for i, t in enumerate(tick_epochs)]
    if all(stop - start >= cold_epochs for start, stop in windows[:-1]):
        return _warm_by_next_tick(
            costs, windows, cold_epochs, instance_epoch_cost, sizes, top, (start, head)
        )
    return _with_warming(costs, windows, cold_epochs, instance_epoch_cost, sizes, top, (start, head))


def _warm_by_next_tick(
    costs: EpochCosts,
    windows: list[tuple[int, int]],
    cold: int,
    inst: float,
    sizes: range,
    top: int,
    head: tuple[int, float],
) -> Schedule:
    """The usual case: every instance is ready by the next tick, so the state is the size.

    Vectorised over (size in force, new size): growing from p to n serves the first
    ``cold`` epochs of the window with p ready and the rest with n; shrinking serves n.
    """
    options = np.array(list(sizes))
    best = np.full(top, np.inf)
    best[head[0]] = head[1]  # the pool in force before the first tick
    choices: list[npt.NDArray[np.intp]] = []
    for start, stop in windows:
        span = stop - start
        cum = costs.table(start, stop, top)
        early = min(cold, span)
        grow = cum[:, early][:, None] + (cum[options, span] - cum[options, early])[None, :]
        shrink = cum[options, span][None, :]
        step = np.where(options[None, :] >= np.arange(top)[:, None], grow, shrink)
        total = best[:, None] + step + (options * span * inst)[None, :]
        pick = np.argmin(total, axis=0)
        nxt = np.full(top, np.inf)
        nxt[options] = total[pick, np.arange(len(options))]
        prev = np.zeros(top, dtype=np.intp)
        prev[options] = pick
        choices.append(prev)
        best = nxt
    end = int(np.argmin(best))
    plan = [end]
    for prev in reversed(choices[1:]):
        plan.append(int(prev[plan[-1]]))
    plan.reverse()
    return Schedule(plan, float(best[end]))


_State = tuple[int, tuple[tuple[int, int], ...]]
"""(ready instances, cohorts still warming as (ready epoch, count), oldest first)."""


def _with_warming(
    costs: EpochCosts,
    windows: list[tuple[int, int]],
    cold: int,
    inst: float,
    sizes: range,
    top: int,
    head: tuple[int, float],
) -> Schedule:
    """A cold start that outlasts a window: the state also holds the warming cohorts."""
    layer: dict[_State, tuple[float, _State | None, int]] = {(head[0], ()): (head[1], None, 0)}
    history: list[dict[_State, tuple[float, _State | None, int]]] = []
    for start, stop in windows:
        cum = costs.table(start, stop, top)
        nxt: dict[_State, tuple[float, _State | None, int]] = {}
        for state, (so_far, _, _) in layer.items():
            ready = state[0] + sum(c for e, c in state[1] if e <= start)
            warming = tuple((e, c) for e, c in state[1] if e > start)
            for n in sizes:
                # Decided after epoch start - 1: billed from start, ready from start + cold.
                kept = _resize(ready, warming, n, start + cold)
                cost = so_far + n * (stop - start) * inst + _window_cost(cum, start, stop, kept)
                key = (  # folded as the next window sees it, so equal pools share a key
                    kept[0] + sum(c for e, c in kept[1] if e <= stop),
                    tuple((e, c) for e, c in kept[1] if e > stop),
                )
                if key not in nxt or cost < nxt[key][0]:
                    nxt[key] = (cost, state, n)
        history.append(nxt)
        layer = nxt
    end = min(layer, key=lambda s: layer[s][0])
    total = layer[end][0]
    plan: list[int] = []
    at: _State | None = end
    for step in reversed(history):
        assert at is not None
        _, at, n = step[at]
        plan.append(n)
    plan.reverse()
    return Schedule(plan, total)


def _resize(ready: int, warming: tuple[tuple[int, int], ...], n: int, ready_at: int) -> _State:
    """The pool after resizing to n: add a cohort ready at ``ready_at``, or drop the newest."""
    alive = ready + sum(c for _, c in warming)
    if n >= alive:
        added = ((ready_at, n - alive),) if n > alive else ()
        return ready, warming + added
    drop = alive - n
    kept = list(warming)
    while drop and kept:
        e, c = kept.pop()
        if c > drop:
            kept.append((e, c - drop))
            drop = 0
        else:
            drop -= c
    return ready - drop, tuple(kept)


def _window_cost(cum: Floats, start: int, stop: int, state: _State) -> float:
    """Function cost of the window's epochs, the ready count stepping up as cohorts warm."""
    ready, warming = state
    cost, at = 0.0, start
    for e, c in warming:
        if e >= stop:
            break
        if e > at:
            cost += float(cum[ready, e - start] - cum[ready, at - start])
            at = e
        ready += c
    return cost + float(cum[ready, stop - start] - cum[ready, at - start])

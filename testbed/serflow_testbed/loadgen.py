"""Open-loop replay of per-epoch counts with real held-out images.

Each epoch's requests leave at uniform random moments inside the epoch, whether or not
earlier ones were answered (open loop).  Every request carries one image of the digits
held-out split (raw float32, preprocessed like a PNG would be) and is recorded:
latency, where it entered (pool or function), its exit, and whether the class is right.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

import aiohttp
import numpy as np

from serflow_testbed.decide import Record, arrivals, where_from


def raw_bytes(x: np.ndarray) -> bytes:
    """One model input (a row of the held-out set, preprocessed) as the worker's raw wire
    format: little-endian values of its dtype (the digits models: float32), C order."""
    return np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<")).tobytes()


def heldout_images(ref: str) -> tuple[list[bytes], list[int]]:
    """An artefact's held-out calibration set (``ref``: a path or a shipped artefact's
    name) as the worker's raw wire format, preprocessed as the servers preprocess a PNG,
    with labels."""
    from serflow_runtime import artefact

    root = artefact.resolve(ref)
    m = artefact.load(root)
    x, labels = artefact.held_out(root, m)
    return [raw_bytes(r) for r in x], labels.tolist()


async def replay(
    url: str,
    counts: Sequence[int],
    epoch_s: float,
    images: Sequence[bytes],
    labels: Sequence[int],
    *,
    seed: int = 0,
    timeout_s: float = 30.0,
    on_epoch: Callable[[int, list[Record]], None] | None = None,
) -> list[Record]:
    """Send ``counts[t]`` requests in epoch t; returns one Record per request."""
    plan = arrivals(counts, epoch_s, seed)
    order = list(range(len(images)))
    random.Random(seed).shuffle(order)
    records: list[Record] = []
    conn = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        t0 = time.monotonic()

        async def one(i: int, at: float, epoch: int) -> None:
            k = order[i % len(order)]
            start = time.monotonic()
            error = ""
            try:
                async with session.post(
                    url, data=images[k], headers={"Content-Type": "application/octet-stream"}
                ) as r:
                    body = await r.json(content_type=None) if r.status == 200 else None
                    status = r.status
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as x:
                body, status, error = None, -1, type(x).__name__
            lat = time.monotonic() - start
            if status == 200 and isinstance(body, dict):
                records.append(
                    Record(epoch, at, lat, 200, where_from(body.get("ran") or []),
                           int(body.get("exit", 0)), int(body.get("class", -1)) == labels[k])
                )  # fmt: skip
            else:
                records.append(Record(epoch, at, lat, status if status != 200 else -2, error=error))

        tasks: list[asyncio.Task[None]] = []
        shown = 0
        for i, (at, epoch) in enumerate(plan):
            while epoch > shown:  # an epoch has ended: report what came back so far
                if on_epoch:
                    on_epoch(shown, records)
                shown += 1
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, at, epoch)))
        end = t0 + len(counts) * epoch_s
        while shown < len(counts):
            await asyncio.sleep(max(0.0, t0 + (shown + 1) * epoch_s - time.monotonic()))
            if on_epoch:
                on_epoch(shown, records)
            shown += 1
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 5)
    return records

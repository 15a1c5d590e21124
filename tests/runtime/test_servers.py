"""Worker and function servers as real processes on 127.0.0.1 (no Envoy)."""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from serflow_runtime import codec
from serflow_runtime.engine import run_range
from serflow_runtime.metrics import BATCH_SECONDS_BUCKETS, BATCH_SIZE_BUCKETS
from serflow_runtime.runtimes import ServedModel
from serflow_testbed.harness import wait_for

from .conftest import (
    Servers,
    Split,
    Stack,
    http,
    http_json,
    post_many,
    raw_bytes,
    reference,
    wait_ready,
)


def head_frame(
    served: ServedModel, x: np.ndarray, cut: int, token: str | None = None
) -> tuple[bytes, Any]:
    res = run_range(served, x, 1, cut, None)  # exits off: every row survives
    hdr = {
        "fingerprint": token or served.token,
        "partition": cut + 1,
        "rows": list(range(x.shape[0])),
    }
    return codec.encode_frame(hdr, res.hidden), res


def test_function_runs_its_range_like_in_process(
    stack: Stack, served: ServedModel, digits: Split
) -> None:
    x = digits.x_val[:40]
    frame, head = head_frame(served, x, 2)
    code, body = http("POST", stack.stage_a.url + "/run", frame, ctype=codec.FRAME_CT)
    assert code == 200
    header, hidden = codec.decode_frame(body, 1 << 30, served.manifest.cut_shape(4))
    want = run_range(served, head.hidden, 3, 4, stack.tau, list(range(40)))
    assert header["exits"] == [
        [e.row, e.exit, e.cls, pytest.approx(e.confidence, abs=1e-5)] for e in want.exits
    ]
    assert header["rows"] == want.survivor_rows
    assert want.hidden is not None
    np.testing.assert_allclose(hidden, want.hidden, rtol=1e-4, atol=1e-4)
    assert header["fingerprint"] == served.token and header["partition"] == 5


@pytest.mark.parametrize("n", [100])
def test_function_takes_large_frames(stack: Stack, served: ServedModel, digits: Split, n: int) -> None:
    """A full batch (B = 100) arrives in many TCP reads; the whole body must be read."""
    x = digits.x_val[:n]
    frame, _ = head_frame(served, x, 2)
    assert len(frame) > 512 << 10
    code, body = http("POST", stack.stage_a.url + "/run", frame, ctype=codec.FRAME_CT)
    assert code == 200, body[:300]
    header, _ = codec.decode_frame(body, 1 << 30, served.manifest.cut_shape(4))
    assert len(header["exits"]) + len(header["rows"]) == n


def test_fingerprint_mismatch_refused(stack: Stack, served: ServedModel, digits: Split) -> None:
    other = served.token.replace(served.manifest.digest, "0" * 64)
    frame, _ = head_frame(served, digits.x_val[:4], 2, token=other)
    code, body = http_json("POST", stack.stage_a.url + "/run", frame, ctype=codec.FRAME_CT)
    assert code == 409
    assert (
        "fingerprint mismatch" in body["error"] and body["expected"] == served.token
    )


def test_frame_for_another_partition_refused(stack: Stack, served: ServedModel, digits: Split) -> None:
    frame, _ = head_frame(served, digits.x_val[:4], 4)  # enters partition 5, stage_a runs 3..4
    code, body = http_json("POST", stack.stage_a.url + "/run", frame, ctype=codec.FRAME_CT)
    assert code == 409 and "partition" in body["error"]


def _bad_requests() -> list[tuple[str, str, bytes, str, int]]:
    good = np.zeros(3 * 32 * 32, "<f4").tobytes()
    return [
        ("/infer", "application/octet-stream", b"\x00" * 7, "12288 bytes", 400),
        (
            "/infer",
            "application/octet-stream",
            good[:-4] + np.float32(np.nan).tobytes(),
            "NaN",
            400,
        ),
        ("/infer", "image/png", b"\x89PNGnope", "PNG", 400),
        ("/infer", "text/plain", b"hi", "Content-Type", 415),
        ("/infer", "application/octet-stream", b"\x00" * (2 << 20), "exceeds", 413),
        ("/infer", "application/octet-stream", b"", "empty", 400),
        ("/run", codec.FRAME_CT, b"SFLW\x01\x00\x00\x00\x02{}", "fingerprint", 409),
        ("/run", codec.FRAME_CT, b"garbage!garbage!", "magic", 400),
    ]


@pytest.mark.parametrize(("path", "ctype", "body", "problem", "status"), _bad_requests())
def test_bad_input_is_a_json_4xx_and_the_server_keeps_serving(
    stack: Stack, digits: Split, path: str, ctype: str, body: bytes, problem: str, status: int
) -> None:
    targets = [stack.whole, stack.chained_worker] if path == "/infer" else [stack.stage_a]
    for p in targets:
        code, out = http_json("POST", p.url + path, body, ctype=ctype)
        assert code == status, (p.url, out)
        assert problem in out["error"]
        assert http("GET", p.url + "/healthz")[0] == 200
        assert "Traceback" not in p.log.read_text()
    code, out = http_json("POST", stack.whole.url + "/infer", raw_bytes(digits.x_val[0]))
    assert code == 200 and "class" in out


def test_stage_function_does_not_take_images(stack: Stack, digits: Split) -> None:
    code, out = http_json("POST", stack.stage_b.url + "/infer", raw_bytes(digits.x_val[0]))
    assert code == 404 and "partitions 5..7" in out["error"]


@pytest.mark.parametrize("which", ["chained", "fused"])
def test_worker_answers_like_the_whole_model(
    stack: Stack, served: ServedModel, digits: Split, which: str
) -> None:
    worker = stack.chained_worker if which == "chained" else stack.fused_worker
    x = digits.x_val[:80]
    want = reference(served, x, stack.tau)
    got = post_many(worker.url + "/infer", [raw_bytes(r) for r in x])
    stages_seen = set()
    for i, (code, out) in enumerate(got):
        assert code == 200, out
        assert (out["exit"], out["class"]) == want[i], i
        assert out["fingerprint"] == served.token
        ran = out["ran"]
        assert ran[0]["on"].startswith("worker:")
        if out["exit"] <= stack.cut:
            assert ran == [{"partitions": [1, out["exit"]], "on": ran[0]["on"]}]
        else:
            assert ran[0]["partitions"] == [1, stack.cut]
            assert all(r["on"].startswith("function:") for r in ran[1:])
            assert ran[-1]["partitions"][1] == out["exit"]
            stages_seen.update(r["on"] for r in ran[1:])
    assert any(o["exit"] <= stack.cut for _, o in got), "no early exit answered by the worker"
    assert any(o["exit"] > stack.cut for _, o in got), "no survivor reached the tail"
    if which == "chained":
        assert {"function:fn-3-4", "function:fn-5-7"} <= stages_seen
    else:
        assert stages_seen == {"function:fn-3-7"}


def test_png_requests(stack: Stack, served: ServedModel) -> None:
    from sklearn.datasets import load_digits

    from serflow_runtime.data import digits_pixels

    pix = digits_pixels(load_digits().images[:8])
    pngs = [
        codec.encode_png((p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for p in pix
    ]
    got = post_many(stack.chained_worker.url + "/infer", pngs, ctype="image/png")
    assert all(code == 200 for code, _ in got)
    # same pixels through the in-process decoder and model
    xs = np.concatenate(
        [codec.decode_input(b, "image/png", served.manifest.input) for b in pngs]
    )
    assert [(o["exit"], o["class"]) for _, o in got] == reference(served, xs, stack.tau)


def test_answers_carry_the_servers_own_duration(
    stack: Stack, served: ServedModel, digits: Split
) -> None:
    """Server-Timing is what the local runtime bills a function for: the server's own time,
    never more than what the caller waited, on answers and refusals alike."""
    import urllib.error
    import urllib.request

    from serflow_runtime.server import server_timing_seconds

    frame, _ = head_frame(served, digits.x_val[:8], 2)
    for url, body, ctype, want in (
        (stack.stage_a.url + "/run", frame, codec.FRAME_CT, 200),
        (stack.stage_a.url + "/run", b"not a frame", codec.FRAME_CT, 400),
        (
            stack.chained_worker.url + "/infer",
            raw_bytes(digits.x_val[0]),
            "application/octet-stream",
            200,
        ),
    ):
        req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                code, header = r.status, r.headers.get("Server-Timing")
        except urllib.error.HTTPError as e:
            code, header = e.code, e.headers.get("Server-Timing")
        waited = time.perf_counter() - t0
        own = server_timing_seconds(header)
        assert code == want, url
        assert own is not None and 0 < own <= waited, (url, header, waited)
    code, _ = http("GET", stack.stage_a.url + "/readyz")
    assert code == 200


def _metrics(url: str) -> dict[str, list[Sample]]:
    """A server's /metrics parsed by prometheus_client, samples by name (``_created`` left out)."""
    code, raw = http("GET", url + "/metrics")
    assert code == 200
    out: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(raw.decode()):
        for s in fam.samples:
            if not s.name.endswith("_created"):
                out.setdefault(s.name, []).append(s)
    return out


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if s.labels == labels)


def test_metrics_exposed(stack: Stack, digits: Split) -> None:
    before = _metrics(stack.chained_worker.url)
    n = 20
    got = post_many(stack.chained_worker.url + "/infer", [raw_bytes(r) for r in digits.x_val[:n]])
    assert [c for c, _ in got] == [200] * n
    after = _metrics(stack.chained_worker.url)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("serflow_requests_total", code="200") == n
    exits = {s.labels["exit"] for s in after["serflow_exits_total"]}
    assert sum(grew("serflow_exits_total", exit=e) for e in exits) == n
    assert grew("serflow_batch_seconds_count") >= 1
    assert grew("serflow_batch_size_sum") == n
    # each answer's own seconds (its Server-Timing), as a FaaS bills them
    assert grew("serflow_request_seconds_count") == n
    assert grew("serflow_request_seconds_sum") > 0
    assert _value(after, "serflow_sheds_total") == 0
    # the batch-size histogram has its own edges (requests), not the latency ones
    edges = [float(s.labels["le"]) for s in after["serflow_batch_size_bucket"]]
    assert edges == [*BATCH_SIZE_BUCKETS, math.inf]
    stage_b = _metrics(stack.stage_b.url)
    edges = [float(s.labels["le"]) for s in stage_b["serflow_batch_seconds_bucket"]]
    assert edges == [*BATCH_SECONDS_BUCKETS, math.inf]


def test_worker_sheds_beyond_its_epoch_budget(
    tmp_path: Any, artefact_path: Any, digits: Split
) -> None:
    c = Servers(tmp_path, artefact_path)
    try:
        # budget 8 = B, long epoch: exactly 8 admitted, the rest refused until the next epoch
        w = c.worker("w-shed", 0, [], batch=8, epoch=600.0, budget=8)
        wait_ready(w)
        got = post_many(w.url + "/infer", [raw_bytes(r) for r in digits.x_val[:12]], concurrency=12)
        codes = sorted(code for code, _ in got)
        assert codes == [200] * 8 + [503] * 4
        assert all("budget" in o["error"] for code, o in got if code == 503)
        assert _value(_metrics(w.url), "serflow_sheds_total") == 4
    finally:
        c.stop()


def test_worker_drains_on_sigterm(tmp_path: Any, artefact_path: Any, digits: Split) -> None:
    c = Servers(tmp_path, artefact_path)
    try:
        # a partial batch would wait an hour for its epoch; SIGTERM must flush it at once
        w = c.worker("w-drain", 0, [], batch=100, epoch=3600.0)
        wait_ready(w)
        results: list[tuple[int, Any]] = []
        t = threading.Thread(
            target=lambda: results.extend(
                post_many(w.url + "/infer", [raw_bytes(r) for r in digits.x_val[:5]], concurrency=5)
            )
        )
        t.start()
        wait_for(
            "the five to be queued",
            lambda: _value(_metrics(w.url), "serflow_queued_requests") == 5,
            30.0,
            every=0.05,
        )
        w.proc.send_signal(signal.SIGTERM)
        t.join(60)  # bounded: without the flush they would wait out the hour
        assert w.proc.wait(20) == 0
        assert [code for code, _ in results] == [200] * 5
        assert "Traceback" not in w.log.read_text()
    finally:
        c.stop()


@pytest.mark.parametrize(
    ("batch", "epoch", "n", "want_batches"),
    [
        (4, 600.0, 8, 2),  # full batches only: two batches of B=4, nothing waits for the epoch
        (100, 1.0, 3, 1),  # never full: the oldest waits one epoch, then all three go together
    ],
)
def test_batches_form_at_b_or_after_one_epoch(
    tmp_path: Any,
    artefact_path: Any,
    digits: Split,
    batch: int,
    epoch: float,
    n: int,
    want_batches: int,
) -> None:
    c = Servers(tmp_path, artefact_path)
    try:
        w = c.worker("w-batch", 0, [], batch=batch, epoch=epoch)
        wait_ready(w)
        got = post_many(w.url + "/infer", [raw_bytes(r) for r in digits.x_val[:n]], concurrency=n)
        assert [code for code, _ in got] == [200] * n
        m = _metrics(w.url)
        count, total = _value(m, "serflow_batch_size_count"), _value(m, "serflow_batch_size_sum")
        assert (count, total) == (want_batches, n)
        # every batch lands in the bucket of its size: le=n (or the next edge) counts them all
        size_edge = min(e for e in BATCH_SIZE_BUCKETS if e >= n / want_batches)
        assert _value(m, "serflow_batch_size_bucket", le=str(size_edge)) == want_batches
    finally:
        c.stop()


def _head_answers_the_tail_fails_503(got: list[Any], want: list[Any]) -> None:
    """Requests that exit in the worker's head (exits 1-2) are answered as the model
    answers; those that need the failed tail are answered 503 (Envoy retries them)."""
    for (code, out), (ex, cls) in zip(got, want, strict=True):
        if ex <= 2:
            assert code == 200 and (out["exit"], out["class"]) == (ex, cls)
        else:
            assert code == 503 and "offload failed" in out["error"]
    assert {code for code, _ in got} == {200, 503}


def test_unreachable_tail_fails_only_the_survivors(
    tmp_path: Any, artefact_path: Any, served: ServedModel, digits: Split
) -> None:
    from serflow_testbed.harness import free_port

    c = Servers(tmp_path, artefact_path)
    try:
        dead = f"http://127.0.0.1:{free_port()}"
        w = c.worker("w-dead-tail", 2, [f"3-7={dead}"], tau=0.85)
        wait_ready(w)
        x = digits.x_val[:40]
        want = reference(served, x, 0.85)
        got = post_many(w.url + "/infer", [raw_bytes(r) for r in x])
        _head_answers_the_tail_fails_503(got, want)
        assert http("GET", w.url + "/healthz")[0] == 200
    finally:
        c.stop()


def test_a_stuck_tail_answers_its_survivors_503_after_the_stage_timeout(
    tmp_path: Any, artefact_path: Any, served: ServedModel, digits: Split
) -> None:
    """A tail that accepts and never answers (a Knative function that cannot start: its
    activator holds the call) fails its survivors 503 after --stage-timeout, which Envoy
    retries on the functions, instead of holding them until the router answers 504."""
    from serflow_testbed.harness import stuck_server

    c = Servers(tmp_path, artefact_path)
    with stuck_server() as stuck:
        held = stuck.accepted
        try:
            w = c.worker("w-stuck-tail", 2, [f"3-7={stuck.url}"], extra=("--stage-timeout", "1.5"))
            wait_ready(w)
            x = digits.x_val[:40]
            want = reference(served, x, 0.85)
            got = post_many(w.url + "/infer", [raw_bytes(r) for r in x])
            # 503s, not the test client's own timeout (code -1), which at 60 s would end the
            # requests before a worker left at the default --stage-timeout (60 s) gave up.
            _head_answers_the_tail_fails_503(got, want)
            # The worker gave up on its own: each stage call reached the tail once (it was no
            # connect failure, and a timed-out call is not made again), and the worker hung up
            # on every call the tail held unanswered.
            calls = int(_value(_metrics(w.url), "serflow_offloads_total", stage="3"))
            assert calls >= 1
            wait_for("every stage call to be accepted", lambda: len(held) >= calls, 10.0, every=0.05)
            assert len(held) == calls
            for s in held:
                s.settimeout(10.0)
                while s.recv(1 << 16):  # the frame the worker sent, then its end of the call
                    pass
        finally:
            c.stop()


def test_a_worker_warming_its_tail_is_ready_only_once_the_tail_answers(
    tmp_path: Any, artefact_path: Any, served: ServedModel, digits: Split
) -> None:
    """--warm-tail: /readyz answers 503 until the tail answers (a Knative function at zero
    is started by that call), so the router sends the pool nothing its tail cannot serve."""
    from serflow_testbed.harness import free_port

    from .conftest import spawn

    c = Servers(tmp_path, artefact_path)
    try:
        port = free_port()
        w = c.worker("w-warm", 2, [f"3-7=http://127.0.0.1:{port}"], extra=("--warm-tail",))
        wait_ready(w, "/healthz")
        for _ in range(6):  # the tail is not there: never ready meanwhile
            code, out = http_json("GET", w.url + "/readyz")
            assert (code, out["error"]) == (503, "warming the tail")
            time.sleep(0.25)
        tail = spawn(
            ["function", "--artefact", str(artefact_path), "--partitions", "3-K",
             "--tau", "0.85", "--name", "tail"],
            tmp_path, "tail", port=port,
        )  # fmt: skip
        c.procs.append(tail)
        wait_ready(w)
        assert http_json("GET", w.url + "/readyz") == (200, {"ready": True, "cut": 2})
        x = digits.x_val[:40]
        got = post_many(w.url + "/infer", [raw_bytes(r) for r in x])
        assert [(o["exit"], o["class"]) for _, o in got] == reference(served, x, 0.85)
    finally:
        c.stop()


def test_function_listens_on_knative_port_env(tmp_path: Any, artefact_path: Any) -> None:
    import os
    import subprocess
    import sys

    from serflow_testbed.harness import free_port

    from .conftest import Proc

    port = free_port()
    log = tmp_path / "fn-port.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serflow_runtime.cli",
            "function",
            "--artefact",
            str(artefact_path),
            "--threads",
            "1",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PORT": str(port), "OMP_NUM_THREADS": "1"},
    )
    p = Proc(proc, port, log)
    try:
        wait_ready(p)
        code, out = http_json("GET", p.url + "/readyz")
        assert code == 200 and out["partitions"] == [1, 7]
    finally:
        p.stop()
    assert proc.returncode == 0

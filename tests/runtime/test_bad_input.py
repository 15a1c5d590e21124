"""Bad input against the real worker and function processes: every class ends in a 4xx
naming the problem, the next valid request succeeds, and the servers' memory grows by at
most B activations plus 64 MiB; disconnecting, idle and slow clients are dropped without
a 500 or a traceback."""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lz4.frame
import numpy as np
import pytest

from serflow_runtime import codec
from serflow_runtime.engine import run_range
from serflow_runtime.runtimes import ServedModel
from serflow_testbed.harness import wait_for

from .conftest import Proc, Split, http, http_json, raw_bytes, spawn, wait_ready

B = 100
CUT = 2
CLIENT_TIMEOUT = 2.0
MIB = 1 << 20


@dataclass
class Servers:
    worker: Proc  # partitions 1..2, tail 3-K
    whole: Proc  # function 1-K: takes images
    tail: Proc  # function 3-K: takes frames


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, artefact_path: Path) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("bad-input")
    common = ["--artefact", str(artefact_path), "--batch", str(B)]
    common += ["--client-timeout", str(CLIENT_TIMEOUT)]
    tail = spawn(["function", *common, "--partitions", "3-K", "--name", "tail"], tmp, "tail")
    whole = spawn(["function", *common, "--partitions", "1-K", "--name", "whole"], tmp, "whole")
    procs = [tail, whole]
    try:
        wait_ready(tail)
        worker = spawn(
            ["worker", *common, "--cut", str(CUT), "--epoch", "0.02", "--tail", f"3-K={tail.url}"],
            tmp,
            "worker",
        )
        procs.append(worker)
        for p in procs:
            wait_ready(p)
        yield Servers(worker, whole, tail)
    finally:
        for p in procs:
            p.stop()


# -- bodies -------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, rows: int, bit_depth: int = 8) -> bytes:
    """A grey PNG of width x height whose IDAT holds ``rows`` rows of zeros."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    z = zlib.compressobj(9)
    row = bytes(1 + width * bit_depth // 8)
    idat = b"".join(z.compress(row * min(1024, rows - i)) for i in range(0, rows, 1024))
    idat += z.flush()
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _frame(header: dict[str, object] | bytes, payload: bytes = b"") -> bytes:
    hj = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(">4sBI", b"SFLW", 1, len(hj)) + hj + payload


def _zeros_lz4(n: int, store_size: bool = True) -> bytes:
    c = lz4.frame.LZ4FrameCompressor(content_checksum=True)
    out = [c.begin(n if store_size else 0)]
    out += [c.compress(bytes(min(16 * MIB, n - i))) for i in range(0, n, 16 * MIB)]
    return b"".join([*out, c.flush()])


@dataclass(frozen=True)
class Bad:
    """One class of bad input: where it goes, what it is, and the answer it must get."""

    name: str
    target: str  # "image": the worker and the whole function; "frame": the tail function
    ctype: str
    body: bytes
    status: int
    problem: str


def _table(served: ServedModel, token: str) -> list[Bad]:
    row = served.manifest.input_shape_of(CUT + 1)
    row_bytes = codec.activation_bytes(row)
    fr = codec.FRAME_CT

    def hdr(n: int, **over: object) -> dict[str, object]:
        h: dict[str, object] = {
            "fingerprint": token,
            "partition": CUT + 1,
            "rows": list(range(n)),
            "shape": [n, *row],
            "dtype": "float32",
            "rawBytes": n * row_bytes,
        }
        return {**h, **over}

    many = 256 * MIB // row_bytes  # the rows of the 256 MiB frame the issue measured
    nested = b'{"rows":' + b"[" * 7000 + b"]" * 7000 + b"}"
    png16 = _png(32, 32, 32, bit_depth=16)
    return [
        Bad("png-bomb-header", "image", "image/png", _png(20000, 20000, 2048), 413, "20000x20000"),
        Bad("png-bomb-whole", "image", "image/png", _png(20000, 20000, 20000), 413, "exceeds"),
        Bad("png-16-bit", "image", "image/png", png16, 400, "8-bit"),
        Bad("png-garbage", "image", "image/png", b"\x89PNG\r\n\x1a\nnope", 400, "PNG"),
        Bad("raw-short", "image", codec.RAW_CT, b"\x00" * 7, 400, "12288 bytes"),
        Bad("raw-nan", "image", codec.RAW_CT, np.full(3072, np.nan, "<f4").tobytes(), 400, "NaN"),
        Bad("image-2MiB", "image", codec.RAW_CT, bytes(2 * MIB), 413, "exceeds"),
        Bad("content-type", "image", "text/plain", b"hi", 415, "Content-Type"),
        Bad("empty", "image", codec.RAW_CT, b"", 400, "empty"),
        Bad("frame-nested-header", "frame", fr, _frame(nested), 400, "nests too deeply"),
        Bad("frame-header-too-long", "frame", fr, _frame(b" " * 20000 + b"{}"), 400, "limit"),
        Bad("frame-not-json", "frame", fr, _frame(b"{{{"), 400, "not JSON"),
        Bad("frame-256MiB-zeros", "frame", fr, _frame(hdr(many), _zeros_lz4(many * row_bytes)), 413, "exceeds"),
        Bad("frame-256MiB-declared", "frame", fr, _frame(hdr(many, rows=[0]), _zeros_lz4(row_bytes)), 413, "would decompress"),
        Bad("frame-B+1-rows", "frame", fr, _frame(hdr(B + 1), _zeros_lz4((B + 1) * row_bytes)), 413, "would decompress"),
        Bad("frame-lz4-declares-more", "frame", fr, _frame(hdr(2), _zeros_lz4(64 * MIB)), 400, "declares"),
        Bad("frame-lz4-expands", "frame", fr, _frame(hdr(2), _zeros_lz4(64 * MIB, False)), 400, "beyond rawBytes"),
        Bad("frame-rows", "frame", fr, _frame(hdr(2, rows=["a", "b"]), _zeros_lz4(2 * row_bytes)), 400, "rows"),
        Bad("frame-2MiB", "frame", fr, bytes(2 * MIB), 413, "exceeds"),
    ]  # fmt: skip


def rss_bytes(p: Proc) -> int:
    text = Path(f"/proc/{p.proc.pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    assert m, text
    return int(m.group(1)) * 1024


def test_bad_input_table(servers: Servers, served: ServedModel, digits: Split) -> None:
    token = served.token
    image = raw_bytes(digits.x_val[0])
    x = digits.x_val[:8]
    hidden = run_range(served, x, 1, CUT, None).hidden
    good_frame = codec.encode_frame(
        {"fingerprint": token, "partition": CUT + 1, "rows": list(range(8))}, hidden
    )
    targets = {"image": [servers.worker, servers.whole], "frame": [servers.tail]}
    good = {"image": (codec.RAW_CT, image), "frame": (codec.FRAME_CT, good_frame)}

    def ok(p: Proc, kind: str) -> bool:
        ctype, body = good[kind]
        return (
            http("POST", p.url + "/infer" if kind == "image" else p.url + "/run", body, ctype)[0]
            == 200
        )

    for kind, ps in targets.items():  # warm: the first valid request allocates the model
        assert all(ok(p, kind) for p in ps)
    before = {p.proc.pid: rss_bytes(p) for ps in targets.values() for p in ps}
    rows: list[str] = []
    for bad in _table(served, token):
        for p in targets[bad.target]:
            path = "/infer" if bad.target == "image" else "/run"
            code, out = http_json("POST", p.url + path, bad.body, ctype=bad.ctype)
            assert (code, bad.problem in out["error"]) == (bad.status, True), (bad.name, out)
            assert ok(p, bad.target), bad.name  # and the server keeps serving
            rows.append(
                f"| {bad.name} | {p.log.stem} | {len(bad.body)} | {code} | {out['error']} |"
            )
    print("\n| input | server | body bytes | status | answer |\n|---|---|---|---|---|")
    print("\n".join(rows))
    # B activations of the largest row this model passes, plus 64 MiB of allocator slack
    largest = max(codec.activation_bytes(served.manifest.input_shape_of(i)) for i in range(1, 8))
    bound = B * largest + 64 * MIB
    for ps in targets.values():
        for p in ps:
            after = rss_bytes(p)
            grew = after - before[p.proc.pid]
            print(f"{p.log.stem}: VmRSS {before[p.proc.pid] / MIB:.1f} -> {after / MIB:.1f} MiB")
            assert grew <= bound, (p.log.stem, grew / MIB, bound / MIB)
            log = p.log.read_text()
            assert "Traceback" not in log and "internal error" not in log
            assert (
                'serflow_requests_total{code="500"}'
                not in http("GET", p.url + "/metrics")[1].decode()
            )


def test_png_bomb_never_reaches_the_decoder(served: ServedModel) -> None:
    bomb = _png(20000, 20000, 20000)  # complete: 400 MB of pixels
    with pytest.raises(codec.BadRequest, match="20000x20000") as ei:
        codec.decode_input(bomb, "image/png", served.manifest.input)
    assert ei.value.status == 413


def test_limits_follow_the_shape_and_the_batch(served: ServedModel) -> None:
    row = (32, 8, 8)
    assert codec.frame_raw_limit(row, 100) == 100 * 32 * 8 * 8 * 4
    assert codec.frame_raw_limit(row, 10) * 10 == codec.frame_raw_limit(row, 100)
    incompressible = np.random.default_rng(0).bytes(codec.frame_raw_limit(row, 100))
    wire = len(lz4.frame.compress(incompressible, content_checksum=True))
    header = len(json.dumps({"rows": list(range(100)), "exits": [[99, 7, 9, 0.123456]] * 100}))
    assert wire + header + 9 <= codec.frame_body_limit(row, 100)
    assert header <= codec.header_limit(100)
    assert codec.input_body_limit(served.manifest.input) == 12288 + codec.PNG_SLACK


def _metric(p: Proc, series: str) -> float:
    text = http("GET", p.url + "/metrics")[1].decode()
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.parametrize("which", ["worker", "tail"])
def test_disconnect_is_one_line_and_no_500(servers: Servers, which: str) -> None:
    p = servers.worker if which == "worker" else servers.tail
    ctype = codec.RAW_CT if which == "worker" else codec.FRAME_CT
    path = "/infer" if which == "worker" else "/run"
    series = 'serflow_requests_total{code="499"}'
    gone = _metric(p, series)
    lines = p.log.read_text().count("client disconnected")
    with socket.create_connection(("127.0.0.1", p.port)) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: 12288\r\n\r\n".encode()
            + bytes(100)
        )
    wait_for("the disconnect counted as 499", lambda: _metric(p, series) > gone, 20.0, every=0.05)
    log = p.log.read_text()
    assert log.count("client disconnected") == lines + 1
    assert "Traceback" not in log
    assert _metric(p, 'serflow_requests_total{code="500"}') == 0


def test_idle_and_slow_clients_are_dropped(servers: Servers, digits: Split) -> None:
    """200 connections: idle ones, ones sending headers at 1 byte/s, ones sending a body at
    1 byte/s.  The server closes every one within a few client timeouts, and serves a
    valid request meanwhile."""
    p = servers.worker
    head = f"POST /infer HTTP/1.1\r\nHost: x\r\nContent-Type: {codec.RAW_CT}\r\n"
    body_head = (head + "Content-Length: 12288\r\n\r\n").encode()
    socks: dict[socket.socket, bytes] = {}  # socket -> the bytes it still trickles
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", p.port))
        kind = i % 3
        if kind == 2:
            s.sendall(body_head)
        socks[s] = b"" if kind == 0 else (head.encode() * 10 if kind == 1 else bytes(12288))
    try:
        code, out = http_json("POST", p.url + "/infer", raw_bytes(digits.x_val[0]))
        assert code == 200 and "class" in out
        answers: list[bytes] = []
        open_ = set(socks)
        deadline = time.monotonic() + 10 * CLIENT_TIMEOUT
        next_byte = time.monotonic()
        while open_ and time.monotonic() < deadline:
            readable, _, _ = select.select(list(open_), [], [], 0.2)
            for s in readable:
                try:
                    data = s.recv(65536)
                except ConnectionError:
                    data = b""
                if data:
                    answers.append(data)
                else:
                    open_.discard(s)
            if time.monotonic() >= next_byte:  # 1 byte per second from each slow client
                next_byte += 1.0
                for s in list(open_):
                    rest = socks[s]
                    if rest:
                        try:
                            s.send(rest[:1])
                        except ConnectionError:
                            open_.discard(s)
                        socks[s] = rest[1:]
        assert not open_, f"{len(open_)} of 200 slow or idle connections still open"
        assert any(a.startswith(b"HTTP/1.1 408") for a in answers)
        log = p.log.read_text()
        assert "Traceback" not in log
    finally:
        for s in socks:
            s.close()
    code, _ = http_json("POST", p.url + "/infer", raw_bytes(digits.x_val[1]))
    assert code == 200

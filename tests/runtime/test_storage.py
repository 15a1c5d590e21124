"""The storage initializer (``serflow-runtime fetch``): the shipped digits artefact served
from a pvc-like folder, over HTTP (a threaded ``http.server`` on 127.0.0.1) and over S3
(Versity's gateway, built by ``hack/gotool.sh versitygw``, on 127.0.0.1 with its posix backend),
fetched and loaded; then each failure, its class, its bound and its one-line reason."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from serflow_runtime import artefact, storage
from serflow_runtime.cli import main as cli_main
from serflow_testbed.harness import free_port, stop_process, stuck_server, wait_for
from serflow_testbed.s3 import signed_put

REPO = Path(__file__).resolve().parents[2]
SHIPPED = "digits-vgg16-w025"
STAGE = "stage-3.onnx"


@dataclass(frozen=True)
class Art:
    root: Path
    digest: str
    files: tuple[str, ...]
    """Every file of the folder, manifest.json included."""
    size: int


def _art(root: Path) -> Art:
    m = artefact.load(root)
    files = tuple(sorted(p.name for p in root.iterdir() if p.is_file()))
    return Art(root, m.digest, files, sum((root / f).stat().st_size for f in files))


def _write_doc(root: Path, doc: dict[str, object]) -> str:
    """Write a manifest whose own digest is right; returns that digest."""
    doc = {**doc, "digest": artefact.digest_of(doc)}
    (root / artefact.MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True))
    return str(doc["digest"])


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Art:
    root = tmp_path_factory.mktemp("art") / SHIPPED
    shutil.copytree(artefact.SHIPPED / SHIPPED, root)
    return _art(root)


def _fetched(dest: Path, a: Art) -> None:
    m = artefact.load(dest, expect_digest=a.digest)
    assert m.name == SHIPPED and m.num_stages == 7
    assert sorted(p.name for p in dest.iterdir()) == list(a.files)


def _no_leftovers(dest: Path) -> None:
    """A failed fetch leaves neither the folder nor its temporary sibling."""
    assert not dest.exists()
    assert not list(dest.parent.glob(f".{dest.name}.fetch-*"))


# -- an HTTP server -------------------------------------------------------------------


@dataclass
class Web:
    url: str
    root: Path
    requests: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)

    def paths(self, prefix: str) -> list[str]:
        return [p for p in self.requests if p.startswith(prefix)]


def _handler(web: Web) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        """Files under ``web.root``; the first path segment may pick a misbehaviour for
        every file but the manifest (which comes from the good copy ``a/``)."""

        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, directory=str(web.root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            web.requests.append(self.path)
            mode, _, rest = self.path.lstrip("/").partition("/")
            if mode in ("drip", "endless", "dripheaders", "redirect", "elsewhere"):
                if rest == artefact.MANIFEST:
                    self.path = f"/a/{rest}"
                    return super().do_GET()
                getattr(self, f"_{mode}")(rest)
                return
            super().do_GET()

        def _drip(self, name: str) -> None:
            """The right length announced, then one byte every 50 ms."""
            body = (web.root / "a" / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(len(body)):
                try:
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)

        def _endless(self, name: str) -> None:
            """No length, and bytes until the client hangs up."""
            self.send_response(200)
            self.end_headers()
            block, n = b"\0" * 65536, 0
            try:
                while n < 1 << 30:
                    self.wfile.write(block)
                    n += len(block)
            except OSError:
                pass
            web.sent[name] = n

        def _dripheaders(self, name: str) -> None:
            """A status line, then a header that never ends, a byte every 50 ms."""
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(2000):
                try:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.05)

        def _redirect(self, name: str) -> None:
            self.send_response(302)
            self.send_header("Location", f"/a/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _elsewhere(self, name: str) -> None:
            """A redirect to another scheme (never followed, so never connected)."""
            self.send_response(301)
            self.send_header("Location", f"{web.url.replace('http:', 'https:')}/a/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, art: Art) -> Iterator[Web]:
    root = tmp_path_factory.mktemp("web")
    shutil.copytree(art.root, root / "a")
    shutil.copytree(art.root, root / "tampered")
    stage = root / "tampered" / STAGE
    data = bytearray(stage.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stage.write_bytes(bytes(data))
    shutil.copytree(art.root, root / "missing")
    (root / "missing" / "stage-5.onnx").unlink()
    # A manifest, consistent with its own digest, naming a file outside the folder.
    (root / "escape").mkdir()
    doc = json.loads((art.root / artefact.MANIFEST).read_text())
    doc["calibration"]["file"] = "../a/calibration.npz"
    _write_doc(root / "escape", doc)
    (root / "big").mkdir()
    (root / "big" / artefact.MANIFEST).write_bytes(b" " * (artefact.MAX_MANIFEST_BYTES + 1))

    w = Web("", root)
    srv = _Server(("127.0.0.1", 0), _handler(w))
    w.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield w
    finally:
        srv.shutdown()
        srv.server_close()


def test_http_fetch_loads_and_is_idempotent(web: Web, art: Art, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    m = storage.fetch(f"{web.url}/a", dest, digest=art.digest)
    assert m.digest == art.digest
    _fetched(dest, art)
    assert not list(tmp_path.glob(".model.fetch-*"))
    # the init container run again in the same pod: verified in place, nothing requested
    n = len(web.requests)
    assert storage.fetch(f"{web.url}/a/", dest, digest=art.digest).digest == art.digest
    assert len(web.requests) == n


def test_http_fetch_replaces_a_different_artefact(web: Web, art: Art, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    shutil.copytree(artefact.SHIPPED / "digits-resnet", dest)
    storage.fetch(f"{web.url}/a", dest, digest=art.digest)
    _fetched(dest, art)
    assert not list(tmp_path.glob(".model.fetch-*"))


def test_same_scheme_redirects_are_followed(web: Web, art: Art, tmp_path: Path) -> None:
    storage.fetch(f"{web.url}/redirect", tmp_path / "m", digest=art.digest)
    _fetched(tmp_path / "m", art)


def test_wrong_digest_fails_before_any_stage_is_requested(
    web: Web, art: Art, tmp_path: Path
) -> None:
    wrong = "0" * 64
    start = len(web.requests)
    with pytest.raises(storage.Mismatch) as e:
        storage.fetch(f"{web.url}/a", tmp_path / "m", digest=wrong)
    assert str(e.value) == (
        f"manifest.json has digest {art.digest[:12]}..., expected {wrong[:12]}..."
    )
    assert web.requests[start:] == ["/a/manifest.json"]
    _no_leftovers(tmp_path / "m")


def test_altered_manifest_is_a_mismatch(web: Web, art: Art, tmp_path: Path) -> None:
    root = web.root / "altered"
    shutil.copytree(art.root, root)
    doc = json.loads((root / artefact.MANIFEST).read_text())
    doc["name"] = "someone-else"  # the digest field left as it was
    (root / artefact.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(storage.Mismatch, match="the manifest was altered"):
        storage.fetch(f"{web.url}/altered", tmp_path / "m", digest=art.digest)


def test_tampered_stage_file_is_a_mismatch_naming_it(web: Web, art: Art, tmp_path: Path) -> None:
    want = json.loads((art.root / artefact.MANIFEST).read_text())["stages"][2]["sha256"]
    got = artefact.sha256_file(web.root / "tampered" / STAGE)
    with pytest.raises(storage.Mismatch) as e:
        storage.fetch(f"{web.url}/tampered", tmp_path / "m", digest=art.digest)
    assert str(e.value) == f"{STAGE} has sha256 {got[:12]}..., the manifest says {want[:12]}..."
    _no_leftovers(tmp_path / "m")


def test_missing_file_is_unavailable(web: Web, art: Art, tmp_path: Path) -> None:
    with pytest.raises(storage.Unavailable) as e:
        storage.fetch(f"{web.url}/missing", tmp_path / "m", digest=art.digest)
    assert str(e.value) == f"{web.url}/missing/stage-5.onnx: not found (HTTP 404)"
    _no_leftovers(tmp_path / "m")
    with pytest.raises(storage.Unavailable, match="not found"):
        storage.fetch(f"{web.url}/nothing-here", tmp_path / "m", digest=art.digest)


def test_too_many_bytes_is_unavailable_and_bounded(web: Web, art: Art, tmp_path: Path) -> None:
    # announced: refused before the body of the file that passes the budget is read
    limit = 1_000_000
    with pytest.raises(storage.Unavailable, match=r"larger than the 1000000 bytes allowed"):
        storage.fetch(f"{web.url}/a", tmp_path / "m", digest=art.digest, max_bytes=limit)
    _no_leftovers(tmp_path / "m")
    # not announced: cut off at the budget
    t0 = time.monotonic()
    with pytest.raises(storage.Unavailable) as e:
        storage.fetch(f"{web.url}/endless", tmp_path / "m", digest=art.digest, max_bytes=limit)
    assert "calibration.npz: the artefact is larger than the 1000000 bytes allowed" in str(e.value)
    assert time.monotonic() - t0 < 10
    wait_for("the endless server to notice", lambda: web.sent.get("calibration.npz"), 10, 0.05)
    # what the server wrote before the client hung up: the budget plus socket buffers
    assert web.sent["calibration.npz"] < limit + (16 << 20)
    _no_leftovers(tmp_path / "m")


def test_manifest_size_is_bounded(web: Web, art: Art, tmp_path: Path) -> None:
    with pytest.raises(
        storage.Unavailable, match=f"larger than {artefact.MAX_MANIFEST_BYTES} bytes"
    ):
        storage.fetch(f"{web.url}/big", tmp_path / "m", digest=art.digest)


@pytest.mark.parametrize("mode", ["drip", "dripheaders"])
def test_a_dripping_server_times_out_within_the_bound(
    web: Web, art: Art, tmp_path: Path, mode: str
) -> None:
    t0 = time.monotonic()
    with pytest.raises(storage.Unavailable) as e:
        storage.fetch(
            f"{web.url}/{mode}", tmp_path / "m", digest=art.digest, timeout_s=1.5, io_timeout_s=5
        )
    took = time.monotonic() - t0
    assert "the fetch took longer than 1.5 s (timeout)" in str(e.value)
    assert 1.4 < took < 4.5, took
    _no_leftovers(tmp_path / "m")


def test_a_silent_server_times_out_on_io(art: Art, tmp_path: Path) -> None:
    with stuck_server() as srv:
        t0 = time.monotonic()
        with pytest.raises(storage.Unavailable) as e:
            storage.fetch(f"{srv.url}/a", tmp_path / "m", digest=art.digest, io_timeout_s=0.5)
        assert str(e.value) == f"{srv.url}/a/manifest.json: no answer for 0.5 s"
        assert time.monotonic() - t0 < 3


def test_connection_refused_is_unavailable(art: Art, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/a"
    with pytest.raises(storage.Unavailable, match=r"manifest\.json: connection refused"):
        storage.fetch(url, tmp_path / "m", digest=art.digest)


def test_redirect_to_another_scheme_is_not_followed(web: Web, art: Art, tmp_path: Path) -> None:
    with pytest.raises(
        storage.Unavailable, match="redirected to a https URL; only http is followed"
    ):
        storage.fetch(f"{web.url}/elsewhere", tmp_path / "m", digest=art.digest)


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_http_without_a_digest_is_refused(scheme: str, tmp_path: Path) -> None:
    # refused before any connection (the port is closed anyway)
    with pytest.raises(storage.Refused, match=rf"{scheme}:// needs the artefact's digest"):
        storage.fetch(f"{scheme}://127.0.0.1:1/models/a", tmp_path / "m", digest=None)


@pytest.mark.parametrize(
    ("uri", "digest", "match"),
    [
        ("ftp://127.0.0.1/a", "0" * 64, "unsupported scheme ftp://"),
        ("/data/a", None, "is not a URI"),
        ("http://127.0.0.1:1/a", "ABC", "64 lowercase hex"),
        ("http://u:p@127.0.0.1:1/a", "0" * 64, "credentials in the URI"),
        ("http://127.0.0.1:1/a?x=1", "0" * 64, "no query"),
        ("http://127.0.0.1:1/a/../b", "0" * 64, "'.' and '..'"),
        ("s3://Bad_Bucket/a", None, "not an S3 bucket name"),
        ("s3://models/a/../b", None, "'.' and '..'"),
        ("pvc://claim/../other", None, "must stay inside the claim"),
        ("pvc://Claim/a", None, "not a PersistentVolumeClaim name"),
    ],
)
def test_bad_requests_are_refused(uri: str, digest: str | None, match: str, tmp_path: Path) -> None:
    with pytest.raises(storage.Refused, match=match):
        storage.fetch(uri, tmp_path / "m", digest=digest, s3=storage.S3Access())


def test_manifest_naming_a_file_outside_is_a_mismatch(web: Web, tmp_path: Path) -> None:
    digest = json.loads((web.root / "escape" / artefact.MANIFEST).read_text())["digest"]
    start = len(web.requests)
    with pytest.raises(storage.Mismatch) as e:
        storage.fetch(f"{web.url}/escape", tmp_path / "m", digest=digest)
    assert str(e.value) == (
        "manifest.json names file '../a/calibration.npz', which is not inside the artefact"
    )
    assert web.requests[start:] == ["/escape/manifest.json"]
    _no_leftovers(tmp_path / "m")


# -- a pvc-like folder ----------------------------------------------------------------


@pytest.fixture
def pvc(tmp_path: Path, art: Art) -> Path:
    """A mount root holding the claim ``models`` with the artefact at ``digits/v1``."""
    root = tmp_path / "pvc"
    shutil.copytree(art.root, root / "models" / "digits" / "v1")
    return root


def test_pvc_fetch_copies_and_loads(pvc: Path, art: Art, tmp_path: Path) -> None:
    dest = tmp_path / "model"
    storage.fetch("pvc://models/digits/v1", dest, digest=art.digest, pvc_root=pvc)
    _fetched(dest, art)
    # a digest is optional here (the claim is the cluster's own)
    storage.fetch("pvc://models/digits/v1/", tmp_path / "m2", digest=None, pvc_root=pvc)
    _fetched(tmp_path / "m2", art)


def test_pvc_symlinks_inside_are_followed_and_leaving_ones_refused(
    pvc: Path, art: Art, tmp_path: Path
) -> None:
    folder = pvc / "models" / "digits" / "v1"
    # inside the folder: fine
    (folder / "blobs").mkdir()
    (folder / STAGE).rename(folder / "blobs" / STAGE)
    (folder / STAGE).symlink_to(Path("blobs") / STAGE)
    storage.fetch("pvc://models/digits/v1", tmp_path / "m", digest=art.digest, pvc_root=pvc)
    _fetched(tmp_path / "m", art)
    assert not (tmp_path / "m" / STAGE).is_symlink()
    # a file leaving the folder
    outside = tmp_path / "outside.onnx"
    shutil.copy(art.root / "stage-2.onnx", outside)
    (folder / "stage-2.onnx").unlink()
    (folder / "stage-2.onnx").symlink_to(outside)
    with pytest.raises(storage.Mismatch, match=r"stage-2\.onnx is a symbolic link leaving"):
        storage.fetch("pvc://models/digits/v1", tmp_path / "m2", digest=art.digest, pvc_root=pvc)
    _no_leftovers(tmp_path / "m2")
    # the folder itself leaving the claim
    (pvc / "models" / "link").symlink_to(art.root)
    with pytest.raises(storage.Mismatch, match="leaving the claim"):
        storage.fetch("pvc://models/link", tmp_path / "m3", digest=art.digest, pvc_root=pvc)


def test_pvc_missing_is_unavailable(pvc: Path, art: Art, tmp_path: Path) -> None:
    with pytest.raises(storage.Unavailable, match="no such folder in the claim"):
        storage.fetch("pvc://models/digits/v2", tmp_path / "m", digest=None, pvc_root=pvc)
    (pvc / "models" / "digits" / "v1" / "source.pt").unlink()
    with pytest.raises(storage.Unavailable, match=r"pvc://models/digits/v1/source\.pt: not found"):
        storage.fetch("pvc://models/digits/v1", tmp_path / "m", digest=None, pvc_root=pvc)
    _no_leftovers(tmp_path / "m")


def test_pvc_bounds(pvc: Path, art: Art, tmp_path: Path) -> None:
    with pytest.raises(storage.Unavailable, match="larger than the 100000 bytes allowed"):
        storage.fetch("pvc://models/digits/v1", tmp_path / "m", digest=None, pvc_root=pvc,
                      max_bytes=100_000)  # fmt: skip
    _no_leftovers(tmp_path / "m")


# -- the command: exit status, stderr, termination message ----------------------------


def _cli(args: list[str], tmp_path: Path) -> tuple[int, str]:
    log = tmp_path / "termination-log"
    log.write_text("")  # Kubernetes creates it; fetch never does
    code = cli_main(["fetch", *args, "--termination-log", str(log)])
    return code, log.read_text()


def test_cli_exit_codes_and_termination_message(web: Web, art: Art, tmp_path: Path) -> None:
    code, msg = _cli([f"{web.url}/a", str(tmp_path / "ok"), "--digest", art.digest], tmp_path)
    assert code == storage.EXIT_OK and msg.startswith(f"fetched: {SHIPPED} digest {art.digest}")
    _fetched(tmp_path / "ok", art)
    code, msg = _cli([f"{web.url}/tampered", str(tmp_path / "t"), "--digest", art.digest], tmp_path)
    assert (code, msg.split(":")[0]) == (storage.EXIT_MISMATCH, "mismatch")
    assert msg.count("\n") == 1 and STAGE in msg
    code, msg = _cli([f"{web.url}/missing", str(tmp_path / "t"), "--digest", art.digest], tmp_path)
    assert (code, msg.split(":")[0]) == (storage.EXIT_UNAVAILABLE, "unavailable")
    code, msg = _cli([f"{web.url}/a", str(tmp_path / "t")], tmp_path)
    assert (code, msg) == (
        storage.EXIT_REFUSED,
        "refused: http:// needs the artefact's digest (--digest)\n",
    )
    # outside Kubernetes the file is not there, and is not created
    absent = tmp_path / "no-such-log"
    assert (
        cli_main(["fetch", "ftp://x/y", str(tmp_path / "t"), "--termination-log", str(absent)]) == 2
    )
    assert not absent.exists()


def test_cli_as_a_process(web: Web, art: Art, tmp_path: Path) -> None:
    """The console script's module run as the init container runs it: exit status and
    the reason on stderr."""
    r = subprocess.run(
        [sys.executable, "-m", "serflow_runtime.cli", "fetch", f"{web.url}/a", str(tmp_path / "m"),
         "--digest", "f" * 64, "--termination-log", str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == storage.EXIT_MISMATCH, r.stderr
    assert r.stderr.strip() == (
        f"serflow-runtime fetch: mismatch: manifest.json has digest {art.digest[:12]}..., "
        f"expected {'f' * 12}..."
    )


# -- S3: Versity's gateway --------------------------------------------------------------


@dataclass(frozen=True)
class S3:
    access: storage.S3Access
    put: Callable[[str, bytes], None]


KEY, SECRET = "serflow-test-key", "serflow-test-secret-0123456789"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, art: Art) -> Iterator[S3]:
    pytest.importorskip(
        "awscrt",
        reason="the storage extra is not installed (pip install -c images/constraints.txt "
        "awscrt==0.38.1)",
    )
    r = subprocess.run([str(REPO / "hack" / "gotool.sh"), "versitygw"], capture_output=True,
                       text=True, timeout=1800)  # fmt: skip
    if r.returncode == 3:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"versitygw cannot be built here (hack/gotool.sh versitygw exit 3): {last}")
    assert r.returncode == 0, r.stderr
    binary = r.stdout.strip().splitlines()[-1]
    tmp = tmp_path_factory.mktemp("versitygw")
    (tmp / "root").mkdir()
    (tmp / "meta").mkdir()
    port = free_port()
    log = tmp / "versitygw.log"
    proc = subprocess.Popen(
        [binary, "--port", f"127.0.0.1:{port}", "--access", KEY, "--secret", SECRET,
         "--region", "us-east-1", "--quiet", "posix", "--sidecar", str(tmp / "meta"),
         str(tmp / "root")],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VGW_", "ROOT_"))},
    )  # fmt: skip

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"versitygw exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for("versitygw to listen", listening, 30, 0.1)
        access = storage.S3Access(f"http://127.0.0.1:{port}", "us-east-1", KEY, SECRET)
        put = signed_put(access.endpoint_url or "", access.access_key_id or "", access.secret_access_key or "", access.region)
        put("models", b"")
        for f in art.files:
            put(f"models/digits/v1/{f}", (art.root / f).read_bytes())
            data = (art.root / f).read_bytes()
            if f == STAGE:
                data = data[:-1] + bytes([data[-1] ^ 1])
            put(f"models/digits/tampered/{f}", data)
        yield S3(access, put)
    finally:
        stop_process(proc, 10)


def test_s3_fetch_loads(s3: S3, art: Art, tmp_path: Path) -> None:
    storage.fetch("s3://models/digits/v1", tmp_path / "m", digest=art.digest, s3=s3.access)
    _fetched(tmp_path / "m", art)
    # no digest: allowed (the bucket is authenticated), the manifest still self-consistent
    storage.fetch("s3://models/digits/v1/", tmp_path / "m2", digest=None, s3=s3.access)
    _fetched(tmp_path / "m2", art)


def test_s3_access_from_the_standard_environment(
    s3: S3, art: Art, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*storage.S3_ENV, "AWS_REGION", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    assert s3.access.endpoint_url
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.access.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert storage.S3Access.from_env() == s3.access
    assert SECRET not in repr(storage.S3Access.from_env())
    code, msg = _cli(["s3://models/digits/v1", str(tmp_path / "m"), "--digest", art.digest],
                     tmp_path)  # fmt: skip
    assert code == 0, msg
    _fetched(tmp_path / "m", art)


def test_s3_failures(s3: S3, art: Art, tmp_path: Path) -> None:
    dest = tmp_path / "m"
    with pytest.raises(storage.Mismatch) as e:
        storage.fetch("s3://models/digits/tampered", dest, digest=art.digest, s3=s3.access)
    assert str(e.value).startswith(f"{STAGE} has sha256 ")
    with pytest.raises(storage.Mismatch, match=r"manifest\.json has digest"):
        storage.fetch("s3://models/digits/v1", dest, digest="1" * 64, s3=s3.access)
    with pytest.raises(storage.Unavailable) as u:
        storage.fetch("s3://models/digits/v9", dest, digest=art.digest, s3=s3.access)
    assert str(u.value) == "s3://models/digits/v9/manifest.json: not found (HTTP 404 NoSuchKey)"
    wrong = storage.S3Access(s3.access.endpoint_url, "us-east-1", KEY, "not-the-secret")
    with pytest.raises(storage.Unavailable, match=r"HTTP 403 Forbidden SignatureDoesNotMatch"):
        storage.fetch("s3://models/digits/v1", dest, digest=art.digest, s3=wrong)
    anonymous = storage.S3Access(s3.access.endpoint_url)
    with pytest.raises(storage.Unavailable, match=r"HTTP 403 Forbidden AccessDenied"):
        storage.fetch("s3://models/digits/v1", dest, digest=art.digest, s3=anonymous)
    with pytest.raises(storage.Unavailable, match="larger than the 2000000 bytes allowed"):
        storage.fetch("s3://models/digits/v1", dest, digest=art.digest, s3=s3.access,
                      max_bytes=2_000_000)  # fmt: skip
    _no_leftovers(dest)

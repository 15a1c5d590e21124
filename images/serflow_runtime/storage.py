"""The storage initializer: fetch a model artefact named by a URI into a folder, bounded and
verified, before a server starts (``serflow-runtime fetch URI DEST --digest HEX``).

An init container of pool pods, Knative functions and profiling Jobs runs it into an
emptyDir; the server then opens ``DEST`` like any artefact folder.

Schemes
-------
- ``pvc://CLAIM/PATH``: the claim is mounted read-only at ``PVC_ROOT/CLAIM``
  (``/mnt/pvc/CLAIM``); the artefact folder ``PVC_ROOT/CLAIM/PATH`` is copied. ``..`` in
  the URI, and symbolic links leaving that folder, are refused.
- ``https://HOST/PATH`` and ``http://HOST/PATH``: the URI names the artefact folder;
  ``PATH/manifest.json`` is fetched first, then each file the manifest lists, relative to
  it. A digest is required (the transport proves nothing about the bytes), and redirects
  are followed only to the same scheme (at most ``MAX_REDIRECTS``).
- ``s3://BUCKET/PREFIX``: the same layout under the prefix. The endpoint, region and keys
  come from the standard AWS environment variables, which the operator sets from a
  user-named Secret (``S3Access.from_env``): ``AWS_ENDPOINT_URL`` (an S3-compatible
  server; path-style addressing), ``AWS_DEFAULT_REGION`` (or ``AWS_REGION``),
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optionally ``AWS_SESSION_TOKEN`` and
  ``AWS_CA_BUNDLE``. Without keys the requests go unsigned (a public bucket); instance
  roles and web identities (IRSA) are not read.

Bounds: the bytes of the whole fetch (``max_bytes``; ``manifest.json`` alone at most
``artefact.MAX_MANIFEST_BYTES``), its wall time (``timeout_s``: checked at every chunk, no
socket timeout longer than what is left, and a watchdog that shuts the connection down at
the deadline, so a server dripping a byte now and then, headers included, is cut off
then), and every socket operation (a connect, or a wait for the next bytes:
``io_timeout_s``). A server announcing a ``Content-Length`` over
the budget is refused before its body is read; one that does not is cut off at the budget.
There are no retries: the kubelet restarts a failed init container with back-off.

Verification: the manifest's own digest (and the expected one) before any other file is
requested, each file's SHA-256 while it streams, then ``artefact.load(..., expect_digest)``
of the finished folder. Everything is written into a temporary folder beside ``DEST``
(``.DEST.fetch-*``), verified, then renamed to ``DEST``: a half fetch never looks complete.
When ``DEST`` already holds the artefact with the expected digest (an init container run
again in the same pod), nothing is fetched.

Errors are one line naming what differs or what failed, in three classes: ``Refused``
(the request itself is wrong: URI, digest, options; exit 2, as argparse's usage errors),
``Unavailable`` (not found, refused connection, HTTP error, timeout, too big; exit 3) and
``Mismatch`` (a digest or SHA-256 differs, or the manifest is malformed or names a path
outside the artefact; exit 4). The CLI writes ``KIND: REASON`` (``refused``,
``unavailable``, ``mismatch``; ``fetched`` on success) to the termination-message file
when it exists and is writable (``/dev/termination-log``: Kubernetes shows it as the
container's termination message) and the reason to stderr.

Dependencies
------------
``http(s)://`` and ``pvc://`` need only the standard library. ``s3://`` needs the
``storage`` extra (``serflow-runtime[storage]``): ``awscrt``, AWS's own Common Runtime
(Apache-2.0, what the AWS CLI v2 and ``boto3[crt]`` sign with), for the credentials and
the SigV4 signature; the standard library's HTTP client carries the request, so one
bounded streaming path serves every remote scheme. Measured (``pip download``, CPython
3.11 manylinux x86_64 wheels, with their dependencies):

- ``kserve-storage`` 0.21.0: 64 wheels, 38.9 MB (Azure Blob and File Share, Google Cloud
  Storage, Hugging Face Hub and hf-xet, ModelScope, dulwich, oras, cryptography, boto3).
  It downloads whatever the prefix holds, with no bound on bytes or on total time and no
  content verification, so serflow would wrap it with all the checks here anyway; and it
  requires boto3, whose conflict follows.
- ``boto3`` 1.44.18: 7 wheels, 18.1 MB (botocore 17.5 MB). botocore requires
  ``python-dateutil<3``, the control plane's ``kubernetes==37.0.2`` requires
  ``python-dateutil>=3``: pip reports ResolutionImpossible, so boto3 cannot join the
  development environment that holds both planes (and the tests). Its streaming body
  reads fixed-size blocks, so a server dripping bytes is bounded only per socket read.
- ``awscrt`` 0.38.1: 1 wheel, 4.4 MB, no dependencies. Chosen.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from serflow_runtime import artefact

PVC_ROOT = Path("/mnt/pvc")
"""Where a pod mounts the claim of ``pvc://CLAIM/...`` (read-only): ``PVC_ROOT/CLAIM``."""
TERMINATION_LOG = Path("/dev/termination-log")
"""Kubernetes' default ``terminationMessagePath``."""
DEFAULT_MAX_BYTES = 4 << 30
"""4 GiB: room for a model at ONNX's 2 GiB protobuf limit twice over (its stage files and
the torch checkpoint it was exported from), plus the calibration set. The operator should
pass the emptyDir's ``sizeLimit`` instead when it sets one."""
DEFAULT_TIMEOUT_S = 600.0
"""The default byte budget at about 7 MiB/s: slower than that from an in-cluster server or
an object store of the same region is an outage, reported so the kubelet retries."""
DEFAULT_IO_TIMEOUT_S = 30.0
"""A connect, or a wait for the next bytes: TCP's retransmissions of one lost segment
(1 + 2 + 4 + 8 + 16 s) fit; longer, the peer is gone."""
MAX_REDIRECTS = 5
CHUNK = 1 << 16
MAX_MESSAGE = 1024
"""Characters of the one-line reason (Kubernetes keeps at most 4096 bytes)."""

EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_UNAVAILABLE = 3
EXIT_MISMATCH = 4

ENV_ENDPOINT = "AWS_ENDPOINT_URL"
ENV_REGION = "AWS_DEFAULT_REGION"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_SESSION_TOKEN = "AWS_SESSION_TOKEN"
ENV_CA_BUNDLE = "AWS_CA_BUNDLE"
S3_ENV = (
    ENV_ENDPOINT,
    ENV_REGION,
    ENV_ACCESS_KEY,
    ENV_SECRET_KEY,
    ENV_SESSION_TOKEN,
    ENV_CA_BUNDLE,
)
"""The variables the operator sets from the user's Secret (``AWS_REGION`` and
``AWS_ENDPOINT_URL_S3`` are read too, as the AWS SDKs do)."""

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CLAIM = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class FetchError(Exception):
    """Why a fetch failed, in one line."""

    kind: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1


class Refused(FetchError):
    """The request is wrong (URI, digest, options): fixing the spec is the only cure."""

    kind = "refused"
    exit_code = EXIT_REFUSED


class Unavailable(FetchError):
    """The artefact could not be read: not found, access denied, connection refused,
    timeout, or more bytes than allowed."""

    kind = "unavailable"
    exit_code = EXIT_UNAVAILABLE


class Mismatch(FetchError):
    """The bytes are not the artefact expected: a digest or SHA-256 differs, or the
    manifest is malformed or names a file outside the artefact."""

    kind = "mismatch"
    exit_code = EXIT_MISMATCH


def _short(h: str) -> str:
    return f"{h[:12]}..."


# -- bounds ---------------------------------------------------------------------------


class _Bounds:
    """The fetch's byte budget and deadline, shared by every file."""

    def __init__(self, max_bytes: int, timeout_s: float, io_timeout_s: float) -> None:
        self.max_bytes, self.timeout_s, self.io_timeout_s = max_bytes, timeout_s, io_timeout_s
        self.used = 0
        self.deadline = time.monotonic() + timeout_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def io_timeout(self, where: str) -> float:
        """The socket timeout for the next operation: never past the deadline."""
        left = self.left()
        if left <= 0:
            raise self.expired(where)
        return min(self.io_timeout_s, left)

    def expired(self, where: str) -> Unavailable:
        return Unavailable(f"{where}: the fetch took longer than {self.timeout_s:g} s (timeout)")

    def timed_out(self, where: str) -> Unavailable:
        """A socket timeout: the deadline's, or a peer silent for ``io_timeout_s``."""
        if self.left() <= 0:
            return self.expired(where)
        return Unavailable(f"{where}: no answer for {self.io_timeout_s:g} s")

    def room(self) -> int:
        return self.max_bytes - self.used

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used > self.max_bytes:
            raise self.too_big(where)

    def too_big(self, where: str) -> Unavailable:
        return Unavailable(
            f"{where}: the artefact is larger than the {self.max_bytes} bytes allowed (max-bytes)"
        )


def _copy(
    chunks: Iterator[bytes], out: BinaryIO, where: str, bounds: _Bounds, cap: int | None = None
) -> tuple[int, str]:
    """Stream ``chunks`` into ``out`` within the budget (and ``cap`` bytes for this file);
    returns (bytes, hex SHA-256)."""
    h, n = hashlib.sha256(), 0
    for chunk in chunks:
        n += len(chunk)
        if cap is not None and n > cap:
            raise Unavailable(f"{where} is larger than {cap} bytes")
        bounds.take(len(chunk), where)
        h.update(chunk)
        out.write(chunk)
    return n, h.hexdigest()


# -- where the files come from ------------------------------------------------------


Opened = contextlib.AbstractContextManager[tuple[Iterator[bytes], int | None]]
"""A file being read: its chunks and its announced length (None when unknown)."""


class _Source(abc.ABC):
    """Reads the files of one artefact folder, by name relative to it."""

    @abc.abstractmethod
    def where(self, name: str) -> str:
        """How errors name the file."""

    @abc.abstractmethod
    def open(self, name: str, bounds: _Bounds) -> Opened:
        """The file's chunks, within ``bounds``' deadline."""


class _PvcSource(_Source):
    """Files of a folder on a mounted claim (resolved: no symbolic link in its path)."""

    def __init__(self, folder: Path, shown: str) -> None:
        self.folder, self.shown = folder, shown

    def where(self, name: str) -> str:
        return f"{self.shown}/{name}"

    @contextlib.contextmanager
    def open(self, name: str, bounds: _Bounds) -> Iterator[tuple[Iterator[bytes], int | None]]:
        where = self.where(name)
        path = self.folder / name
        if not os.path.lexists(path):
            raise Unavailable(f"{where}: not found")
        real = path.resolve()
        if not real.is_relative_to(self.folder):
            raise Mismatch(f"{where} is a symbolic link leaving the artefact folder (to {real})")
        if not real.is_file():
            raise Unavailable(f"{where}: not a regular file")
        try:
            f = real.open("rb")
        except OSError as e:
            raise Unavailable(f"{where}: {e.strerror or e}") from e
        with f:
            size = os.fstat(f.fileno()).st_size

            def chunks() -> Iterator[bytes]:
                while True:
                    if bounds.left() <= 0:
                        raise bounds.expired(where)
                    try:
                        chunk = f.read(CHUNK)
                    except OSError as e:
                        raise Unavailable(f"{where}: {e.strerror or e}") from e
                    if not chunk:
                        return
                    yield chunk

            yield chunks(), size


def _pvc_source(rest: str, pvc_root: Path) -> _PvcSource:
    claim, _, path = rest.partition("/")
    if not _CLAIM.fullmatch(claim):
        raise Refused(f"pvc://{rest}: {claim!r} is not a PersistentVolumeClaim name")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts) or "\\" in path or "\0" in path:
        raise Refused(f"pvc://{rest}: the path must stay inside the claim (no '.' or '..')")
    claim_root = (pvc_root / claim).resolve()
    folder = claim_root.joinpath(*parts).resolve() if parts else claim_root
    shown = f"pvc://{claim}" + "".join(f"/{p}" for p in parts)
    if not folder.is_relative_to(claim_root):
        raise Mismatch(f"{shown} is a symbolic link leaving the claim (to {folder})")
    if not folder.is_dir():
        raise Unavailable(f"{shown}: no such folder in the claim (mounted at {pvc_root / claim})")
    return _PvcSource(folder, shown)


Signer = Callable[[str, str, str], dict[str, str]]
"""(method, host header, path with query) -> the headers to send."""


class _HttpSource(_Source):
    """Files under a base URL, over the standard library's HTTP client."""

    def __init__(
        self,
        base: urllib.parse.SplitResult,
        shown: str,
        *,
        signer: Signer | None = None,
        cafile: str | None = None,
        follow_redirects: bool = True,
    ) -> None:
        self.base, self.shown, self.signer = base, shown, signer
        self.follow_redirects = follow_redirects
        self.context = ssl.create_default_context(cafile=cafile) if base.scheme == "https" else None

    def where(self, name: str) -> str:
        return f"{self.shown}/{name}"

    def url(self, name: str) -> urllib.parse.SplitResult:
        path = self.base.path.rstrip("/") + "/" + urllib.parse.quote(name, safe="/")
        return self.base._replace(path=path)

    def _connect(
        self, url: urllib.parse.SplitResult, bounds: _Bounds, where: str
    ) -> http.client.HTTPConnection:
        if url.hostname is None:
            raise Unavailable(f"{where}: no host")
        try:
            port = url.port
        except ValueError as e:
            raise Unavailable(f"{where}: {e}") from e
        timeout = bounds.io_timeout(where)
        if url.scheme == "https":
            return http.client.HTTPSConnection(
                url.hostname, port, timeout=timeout, context=self.context
            )
        return http.client.HTTPConnection(url.hostname, port, timeout=timeout)

    @contextlib.contextmanager
    def open(self, name: str, bounds: _Bounds) -> Iterator[tuple[Iterator[bytes], int | None]]:
        where = self.where(name)
        url = self.url(name)
        for _ in range(MAX_REDIRECTS + 1):
            conn = self._connect(url, bounds, where)
            # The deadline's watchdog: a peer that drips a byte now and then (headers
            # included) never lets a socket timeout fire; shutting the socket down at the
            # deadline ends any read.
            held: list[socket.socket] = []
            resp: http.client.HTTPResponse | None = None
            watchdog = threading.Timer(max(bounds.left(), 0.0), _shut, [held])
            watchdog.daemon = True
            watchdog.start()
            try:
                resp, sock = self._request(conn, url, bounds, where, held)
                location = resp.getheader("Location")
                if resp.status in (301, 302, 303, 307, 308) and location:
                    if not self.follow_redirects:
                        raise Unavailable(f"{where}: HTTP {resp.status} redirect (not followed)")
                    nxt = urllib.parse.urlsplit(urllib.parse.urljoin(url.geturl(), location))
                    if nxt.scheme != url.scheme:
                        raise Unavailable(
                            f"{where}: redirected to a {nxt.scheme or 'schemeless'} URL; "
                            f"only {url.scheme} is followed"
                        )
                    url = nxt
                    continue
                if resp.status != 200:
                    raise self._status_error(resp, where, bounds)
                length = _content_length(resp)
                if length is not None and length > bounds.room():
                    raise bounds.too_big(where)
                yield self._chunks(resp, sock, bounds, where, length), length
                return
            finally:
                watchdog.cancel()
                # The response holds the socket too: the connection ends (and a server
                # still sending is reset) only once both let go.
                if resp is not None:
                    resp.close()
                conn.close()
                for sock in held:
                    sock.close()
        raise Unavailable(f"{where}: more than {MAX_REDIRECTS} redirects")

    def _request(
        self,
        conn: http.client.HTTPConnection,
        url: urllib.parse.SplitResult,
        bounds: _Bounds,
        where: str,
        held: list[socket.socket],
    ) -> tuple[http.client.HTTPResponse, socket.socket]:
        target = url.path or "/"
        if url.query:
            target += "?" + url.query
        headers = {"Accept-Encoding": "identity", "User-Agent": "serflow-runtime-fetch"}
        if self.signer is not None:
            headers.update(self.signer("GET", url.netloc, target))
        try:
            conn.connect()
            sock = conn.sock
            assert isinstance(sock, socket.socket)
            held.append(sock)
            conn.request("GET", target, headers=headers)
            sock.settimeout(bounds.io_timeout(where))
            # The response keeps reading through ``sock`` after a ``Connection: close``
            # answer has made ``conn`` let go of it.
            return conn.getresponse(), sock
        except TimeoutError as e:
            raise bounds.timed_out(where) from e
        except ssl.SSLError as e:
            raise _lost(bounds, where, f"TLS: {e.reason or e}") from e
        except (OSError, http.client.HTTPException) as e:
            raise _lost(bounds, where, _os_reason(e)) from e

    def _status_error(
        self, resp: http.client.HTTPResponse, where: str, bounds: _Bounds
    ) -> Unavailable:
        detail = ""
        with contextlib.suppress(OSError, http.client.HTTPException):
            body = resp.read1(4096) if bounds.left() > 0 else b""
            code = re.search(rb"<Code>([^<]{1,100})</Code>", body)  # S3's error document
            if code:
                detail = f" {code.group(1).decode(errors='replace')}"
        if resp.status in (404, 410):
            return Unavailable(f"{where}: not found (HTTP {resp.status}{detail})")
        return Unavailable(f"{where}: HTTP {resp.status} {resp.reason}{detail}".rstrip())

    @staticmethod
    def _chunks(
        resp: http.client.HTTPResponse,
        sock: socket.socket,
        bounds: _Bounds,
        where: str,
        length: int | None,
    ) -> Iterator[bytes]:
        got = 0
        while True:
            try:
                sock.settimeout(bounds.io_timeout(where))
                chunk = resp.read1(CHUNK)
            except TimeoutError as e:
                raise bounds.timed_out(where) from e
            except (OSError, http.client.HTTPException) as e:
                raise _lost(bounds, where, _os_reason(e)) from e
            if not chunk:
                if bounds.left() <= 0:  # the watchdog shut the socket
                    raise bounds.expired(where)
                break
            got += len(chunk)
            yield chunk
        if length is not None and got < length:
            raise Unavailable(f"{where}: the connection closed after {got} of {length} bytes")


def _shut(held: list[socket.socket]) -> None:
    for sock in held:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _lost(bounds: _Bounds, where: str, reason: str) -> Unavailable:
    """A failed connection: the deadline's doing (the watchdog), or the peer's."""
    return bounds.expired(where) if bounds.left() <= 0 else Unavailable(f"{where}: {reason}")


def _content_length(resp: http.client.HTTPResponse) -> int | None:
    raw = resp.getheader("Content-Length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)


def _os_reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host ({e.strerror})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _http_source(uri: str) -> _HttpSource:
    u = urllib.parse.urlsplit(uri)
    if not u.hostname:
        raise Refused(f"{uri}: no host")
    if u.username is not None or u.password is not None:
        raise Refused(f"{u.scheme}://...@{u.hostname}: credentials in the URI are refused")
    if u.query or u.fragment:
        raise Refused(f"{uri}: the URI names a folder: no query or fragment")
    if any(p in (".", "..") for p in u.path.split("/")):
        raise Refused(f"{uri}: '.' and '..' are refused in the path")
    try:
        u.port  # noqa: B018 (validates the port)
    except ValueError as e:
        raise Refused(f"{uri}: {e}") from e
    return _HttpSource(u, uri.rstrip("/"))


# -- S3 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Access:
    """How to reach an S3 bucket: the operator passes these as the standard AWS
    environment variables, set from the user's Secret."""

    endpoint_url: str | None = None
    """An S3-compatible server (path-style addressing); None: AWS
    (``https://BUCKET.s3.REGION.amazonaws.com``)."""
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    ca_bundle: str | None = None
    """A PEM file of certificate authorities to trust instead of the system's."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Access:
        e = os.environ if env is None else env

        def get(*names: str) -> str | None:
            return next((e[n] for n in names if e.get(n)), None)

        return cls(
            endpoint_url=get("AWS_ENDPOINT_URL_S3", ENV_ENDPOINT),
            region=get("AWS_REGION", ENV_REGION) or "us-east-1",
            access_key_id=get(ENV_ACCESS_KEY),
            secret_access_key=get(ENV_SECRET_KEY),
            session_token=get(ENV_SESSION_TOKEN),
            ca_bundle=get(ENV_CA_BUNDLE),
        )

    def __repr__(self) -> str:  # never print the keys
        return f"S3Access(endpoint_url={self.endpoint_url!r}, region={self.region!r})"


def s3_signer(access: S3Access) -> Signer:
    """SigV4 headers for a request (AWS's ``awscrt``): the storage extra."""
    try:
        from awscrt import auth  # type: ignore[import-untyped]
        from awscrt import http as crt_http
    except ImportError as e:
        raise Refused(
            "s3:// needs the storage extra: pip install 'serflow-runtime[storage]' (awscrt)"
        ) from e
    assert access.access_key_id and access.secret_access_key
    creds = auth.AwsCredentialsProvider.new_static(
        access.access_key_id, access.secret_access_key, access.session_token
    )

    def sign(method: str, host: str, target: str) -> dict[str, str]:
        config = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4,
            signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=creds,
            region=access.region,
            service="s3",
            use_double_uri_encode=False,
            should_normalize_uri_path=False,
            signed_body_value=auth.AwsSignedBodyValue.EMPTY_SHA256,
            signed_body_header_type=auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
        )
        req = crt_http.HttpRequest(method, target, crt_http.HttpHeaders([("Host", host)]))
        try:
            signed = auth.aws_sign_request(req, config).result(10)
        except Exception as e:
            raise Refused(f"cannot sign the S3 request: {e}") from e
        return dict(signed.headers)

    return sign


def _s3_source(uri: str, access: S3Access) -> _HttpSource:
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise Refused(f"{uri}: {bucket!r} is not an S3 bucket name")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise Refused(f"{uri}: '.' and '..' are refused in the key prefix")
    key = "/".join(parts)
    if not re.fullmatch(r"[a-z0-9-]{1,64}", access.region):
        raise Refused(f"{ENV_REGION}={access.region!r} is not an AWS region name")
    if access.endpoint_url:
        ep = urllib.parse.urlsplit(access.endpoint_url)
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise Refused(f"{ENV_ENDPOINT}={access.endpoint_url!r} is not an http(s) URL")
        path = f"{ep.path.rstrip('/')}/{bucket}" + (f"/{key}" if key else "")
        base = urllib.parse.SplitResult(ep.scheme, ep.netloc, path, "", "")
    elif "." in bucket:  # a dotted bucket breaks the virtual host's certificate
        path = f"/{bucket}" + (f"/{key}" if key else "")
        base = urllib.parse.SplitResult("https", f"s3.{access.region}.amazonaws.com", path, "", "")
    else:
        host = f"{bucket}.s3.{access.region}.amazonaws.com"
        base = urllib.parse.SplitResult("https", host, f"/{key}" if key else "", "", "")
    base = base._replace(path=urllib.parse.quote(base.path, safe="/"))
    if (access.access_key_id is None) != (access.secret_access_key is None):
        raise Refused(f"{ENV_ACCESS_KEY} and {ENV_SECRET_KEY} come together")
    signer = s3_signer(access) if access.access_key_id else None
    shown = f"s3://{bucket}" + (f"/{key}" if key else "")
    return _HttpSource(base, shown, signer=signer, cafile=access.ca_bundle, follow_redirects=False)


# -- the fetch ------------------------------------------------------------------------


def _file_refs(doc: Any) -> dict[str, str]:
    """Every ``{"file": NAME, "sha256": HEX}`` object of the manifest, at any depth (the
    stages, the calibration set, the source checkpoint): name -> SHA-256."""
    found: dict[str, str] = {}

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            f, h = v.get("file"), v.get("sha256")
            if isinstance(f, str) and isinstance(h, str):
                _check_name(f)
                if found.setdefault(f, h) != h:
                    raise Mismatch(f"{artefact.MANIFEST} lists {f} twice with different sha256")
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(doc)
    return found


def _check_name(name: str) -> None:
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(p in ("", ".", "..") for p in parts)
        or name == artefact.MANIFEST
        or len(name) > 1024
    ):
        raise Mismatch(f"{artefact.MANIFEST} names file {name!r}, which is not inside the artefact")


def _read_manifest(
    source: _Source, bounds: _Bounds, digest: str | None
) -> tuple[bytes, dict[str, str]]:
    """The manifest's bytes and its files, checked before any file is requested."""
    buf = io.BytesIO()
    where = source.where(artefact.MANIFEST)
    with source.open(artefact.MANIFEST, bounds) as (chunks, length):
        if length is not None and length > artefact.MAX_MANIFEST_BYTES:
            raise Unavailable(f"{where} is larger than {artefact.MAX_MANIFEST_BYTES} bytes")
        _copy(chunks, buf, where, bounds, cap=artefact.MAX_MANIFEST_BYTES)
    raw = buf.getvalue()
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Mismatch(f"{where} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise Mismatch(f"{where} is not a JSON object")
    content = artefact.digest_of(doc)
    claimed = doc.get("digest")
    if claimed != content:
        raise Mismatch(
            f"{artefact.MANIFEST} says digest {_short(str(claimed))} but its content hashes to "
            f"{_short(content)}: the manifest was altered"
        )
    if digest is not None and content != digest:
        raise Mismatch(
            f"{artefact.MANIFEST} has digest {_short(content)}, expected {_short(digest)}"
        )
    return raw, _file_refs(doc)


def _fetch_into(tmp: Path, source: _Source, bounds: _Bounds, digest: str | None) -> None:
    raw, files = _read_manifest(source, bounds, digest)
    for name, want in files.items():
        where = source.where(name)
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open(name, bounds) as (chunks, _), target.open("wb") as out:
            _, got = _copy(chunks, out, where, bounds)
        if got != want:
            raise Mismatch(f"{name} has sha256 {_short(got)}, the manifest says {_short(want)}")
    (tmp / artefact.MANIFEST).write_bytes(raw)


def _source(uri: str, digest: str | None, s3: S3Access | None, pvc_root: Path) -> _Source:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise Refused(f"{uri!r} is not a URI (pvc://, https://, http:// or s3://)")
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        if digest is None:
            raise Refused(f"{scheme}:// needs the artefact's digest (--digest)")
        return _http_source(uri)
    if scheme == "s3":
        return _s3_source(uri, s3 if s3 is not None else S3Access.from_env())
    if scheme == "pvc":
        return _pvc_source(rest, pvc_root)
    raise Refused(f"{uri}: unsupported scheme {scheme}:// (pvc://, https://, http://, s3://)")


def _clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def fetch(
    uri: str,
    dest: str | Path,
    *,
    digest: str | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    io_timeout_s: float = DEFAULT_IO_TIMEOUT_S,
    s3: S3Access | None = None,
    pvc_root: Path = PVC_ROOT,
) -> artefact.Manifest:
    """Fetch the artefact folder ``uri`` into the new folder ``dest``, bounded and
    verified (module docstring); returns its manifest. Raises ``Refused``,
    ``Unavailable`` or ``Mismatch``."""
    if digest is not None and not _DIGEST.fullmatch(digest):
        raise Refused(f"--digest must be 64 lowercase hex characters (SHA-256), got {digest!r}")
    if max_bytes <= 0 or timeout_s <= 0 or io_timeout_s <= 0:
        raise Refused("max-bytes, timeout and io-timeout must be positive")
    dest = Path(dest)
    source = _source(uri, digest, s3, pvc_root)
    parent = dest.parent.resolve()
    if not parent.is_dir():
        raise Refused(f"{dest}: the folder {parent} does not exist")
    if dest.exists() and not dest.is_dir():
        raise Refused(f"{dest} exists and is not a folder")
    if digest is not None and (dest / artefact.MANIFEST).is_file():
        with contextlib.suppress(artefact.ArtefactError):
            return artefact.load(dest, expect_digest=digest)  # fetched by an earlier run
    prefix = f".{dest.name}.fetch-"
    for stale in parent.glob(prefix + "*"):  # a run killed half-way
        _clear(stale)
    bounds = _Bounds(max_bytes, timeout_s, io_timeout_s)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        _fetch_into(tmp, source, bounds, digest)
        try:
            m = artefact.load(tmp, expect_digest=digest)
        except artefact.ArtefactError as e:
            raise Mismatch(str(e).replace(str(tmp), source.where("").rstrip("/"))) from e
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            os.rename(dest, old / "old")
        os.rename(tmp, dest)
        if old is not None:
            _clear(old)
        return m
    finally:
        if tmp.exists():
            _clear(tmp)


# -- the command ----------------------------------------------------------------------


def one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_MESSAGE]


def write_termination_message(line: str, path: Path = TERMINATION_LOG) -> bool:
    """Write ``line`` to an existing, writable termination-message file (never create
    one: outside Kubernetes the path is not there)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(line + "\n")
    return True


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``fetch`` subcommand of ``serflow-runtime``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "fetch",
        help="fetch a model artefact (pvc://, https://, http://, s3://) into a folder, verified",
        description="Fetch the artefact folder URI into the new folder DEST: bounded in bytes "
        "and time, every file's SHA-256 and the manifest's digest verified, written "
        "atomically. Exit 0 fetched, 2 refused (the request is wrong), 3 unavailable, "
        "4 mismatch; the reason goes to stderr and to --termination-log.",
    )
    p.add_argument(
        "uri", help="pvc://CLAIM/PATH, https://HOST/PATH, http://..., s3://BUCKET/PREFIX"
    )
    p.add_argument("dest", type=Path, help="the artefact folder to create (its parent must exist)")
    p.add_argument(
        "--digest",
        default=None,
        help="the artefact's manifest digest (64 hex); required for http(s)",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help=f"the most bytes fetched in all (default {DEFAULT_MAX_BYTES}: 4 GiB)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds the whole fetch may take (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--io-timeout",
        type=float,
        default=DEFAULT_IO_TIMEOUT_S,
        help=f"seconds a connect or a wait for bytes may take (default {DEFAULT_IO_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--pvc-root",
        type=Path,
        default=PVC_ROOT,
        help=f"where pvc://CLAIM is mounted, as ROOT/CLAIM (default {PVC_ROOT})",
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        default=TERMINATION_LOG,
        help=f"the container's terminationMessagePath (default {TERMINATION_LOG}); "
        "written only when it exists",
    )
    p.set_defaults(fn=run)
    return p


def run(a: argparse.Namespace) -> int:
    """Run ``fetch`` for the CLI: exit status and one line for Kubernetes."""
    t0 = time.monotonic()
    try:
        m = fetch(
            a.uri,
            a.dest,
            digest=a.digest,
            max_bytes=a.max_bytes,
            timeout_s=a.timeout,
            io_timeout_s=a.io_timeout,
            pvc_root=a.pvc_root,
        )
    except FetchError as e:
        line = one_line(f"{e.kind}: {e}")
        print(f"serflow-runtime fetch: {line}", file=sys.stderr)
        write_termination_message(line, a.termination_log)
        return e.exit_code
    except Exception as e:  # a bug: the traceback to the log, one line to Kubernetes
        traceback.print_exc()
        write_termination_message(one_line(f"error: {type(e).__name__}: {e}"), a.termination_log)
        return 1
    size = sum(f.stat().st_size for f in Path(a.dest).rglob("*") if f.is_file())
    line = one_line(
        f"fetched: {m.name} digest {m.digest} into {a.dest} "
        f"({size} bytes, {time.monotonic() - t0:.1f} s)"
    )
    print(line)
    write_termination_message(line, a.termination_log)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serflow_runtime.storage URI DEST ...`` (the same as ``serflow-runtime fetch``)."""
    p = argparse.ArgumentParser(prog="serflow-runtime")
    add_parser(p.add_subparsers(dest="cmd", required=True))
    return run(p.parse_args(["fetch", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())

"""Wire formats of the data plane.

Client requests (``POST /infer`` on the worker and on the function server), one instance
each, of the input the artefact's manifest declares:

* ``Content-Type: application/octet-stream``: the model input as raw little-endian
  values of its dtype, row-major (the shipped digits models: float32 3x32x32 = 12,288
  bytes, already normalised with the artefact's mean and std).  Any other length, a
  NaN/Inf value, or an integer outside the manifest's range is a 400.
* ``Content-Type: image/png``, for image inputs only: an 8-bit PNG of the input's size
  (grey, RGB or RGBA); pixels are scaled to [0, 1], grey replicated to 3 channels, then
  normalised like training data.  Other sizes are refused before the pixels are decoded.

Stage calls (worker -> function ``POST /run``) and their answers are *frames*::

    b"SFLW" | version u8 (=1) | header length u32 big-endian | header JSON | LZ4 frame

The header names the model fingerprint, the next partition to run, the tensor shape
[n, ...], its dtype (float32 activations; stage 1 takes the model input's), the row ids
and ``rawBytes``.  The payload is
one LZ4 frame (content checksum on) of the survivors' activations; its decompressed
size is bounded by ``rawBytes`` and the server's limit *before* decompressing, so a
corrupt or oversized frame costs at most that.  An answer frame also carries
``exits``: [[row, exit, class, confidence], ...].
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Sequence
from typing import Any

import lz4.frame
import numpy as np

from serflow_runtime.artefact import DTYPES, InputSpec, preprocess

MAGIC = b"SFLW"
VERSION = 1
FRAME_CT = "application/x-serflow-frame"
RAW_CT = "application/octet-stream"
PNG_CT = "image/png"
MAX_HEADER = 1 << 20
_PREFIX = struct.Struct(">4sBI")
PNG_SLACK = 64 << 10
"""Bytes a PNG may carry beyond the raw size of the image (chunks, metadata)."""


# -- limits, from the model's shapes and the batch B ------------------------------------


def activation_bytes(row_shape: Sequence[int]) -> int:
    """Bytes of one row of float32 activations (or of one input image)."""
    return math.prod(row_shape) * 4


def input_body_limit(spec: InputSpec) -> int:
    """The largest ``/infer`` body: one raw input, or (images) a PNG of it with its chunks."""
    return spec.row_bytes + (PNG_SLACK if spec.image is not None else 0)


def header_limit(batch: int) -> int:
    """The largest frame header for B rows: row ids and exits of at most B requests."""
    return 4096 + 128 * batch


def frame_raw_limit(row_shape: Sequence[int], batch: int, itemsize: int = 4) -> int:
    """The most a frame may decompress to: B rows of float32 activations (``itemsize``:
    another dtype's, the model input's for a frame entering stage 1)."""
    return batch * math.prod(row_shape) * itemsize


def frame_body_limit(row_shape: Sequence[int], batch: int, itemsize: int = 4) -> int:
    """The largest frame on the wire: prefix, header, and LZ4's worst case (incompressible
    data grows by 1/255 plus a frame header and block headers)."""
    raw = frame_raw_limit(row_shape, batch, itemsize)
    return _PREFIX.size + header_limit(batch) + raw + raw // 255 + 4096


def parse_partitions(text: str, k: int) -> tuple[int, int]:
    """A partition range ``A-B`` (or ``A``) to (A, B) with 1 <= A <= B <= k; ``B`` may be
    ``K``, the model's last partition.  The one format of the worker's ``--tail A-B=URL``
    and the function's ``--partitions A-B`` (the operator's builders write it)."""
    a, sep, b = text.strip().partition("-")
    try:
        first = int(a)
        last = k if b.strip().upper() == "K" else int(b) if sep else first
    except ValueError:
        raise ValueError(
            f"partition range {text!r} must look like A-B with integers (B may be K)"
        ) from None
    if not 1 <= first <= last <= k:
        raise ValueError(f"partition range {text!r} is outside 1..{k} (K={k})")
    return first, last


class BadRequest(ValueError):
    """A client error: becomes a 4xx JSON answer naming ``problem``."""

    def __init__(self, problem: str, status: int = 400) -> None:
        super().__init__(problem)
        self.problem = problem
        self.status = status


def _finite(a: np.ndarray, what: str) -> None:
    if not bool(np.isfinite(a).all()):
        raise BadRequest(f"{what} contains NaN or Inf values")


def decode_input(body: bytes, content_type: str, spec: InputSpec) -> np.ndarray:
    """One request body to a (1, *shape) array of the stage-1 input."""
    ct = content_type.split(";")[0].strip().lower()
    if ct in (RAW_CT, "application/x-serflow-tensor"):
        want = spec.row_bytes
        if len(body) != want:
            dims = "x".join(map(str, spec.shape))
            raise BadRequest(f"raw tensor must be {want} bytes ({spec.dtype} {dims}), got {len(body)}")
        a = np.frombuffer(body, dtype=spec.numpy_dtype)
        if (why := spec.problem(a)) is not None:
            raise BadRequest(f"input tensor {why}")
        return a.reshape(1, *spec.shape).astype(spec.numpy_dtype.newbyteorder("="))
    if ct == PNG_CT and spec.image is not None:
        return _decode_png(body, spec)
    accepted = f"{RAW_CT} or {PNG_CT}" if spec.image is not None else RAW_CT
    raise BadRequest(f"unsupported Content-Type {content_type!r}: use {accepted}", status=415)


def _decode_png(body: bytes, spec: InputSpec) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    _, h, w = spec.shape
    # The size comes from the IHDR chunk: refuse before PIL sees the image (its own bomb
    # check would raise past the handler) and before any pixel data is decompressed.
    pw, ph = _png_size(body)
    if (pw, ph) != (w, h):
        raise BadRequest(
            f"PNG must be {w}x{h}, got {pw}x{ph}", status=413 if pw * ph > w * h else 400
        )
    try:
        img = Image.open(io.BytesIO(body), formats=["PNG"])
        if img.size != (w, h) or img.mode not in _PNG_MODES:
            raise BadRequest(
                f"PNG must be 8-bit {w}x{h} grey, RGB or RGBA, got {img.mode} {img.size}"
            )
        rgb = img.convert("RGB")
    except BadRequest:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as e:
        raise BadRequest(f"body is not a valid PNG: {e}") from e
    # The artefact's own preprocessing: the profiler's calibration set goes through it too.
    return preprocess(np.asarray(rgb, dtype=np.uint8)[None], spec)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = ("L", "LA", "P", "RGB", "RGBA")


def _png_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which must come first."""
    if len(body) < 24 or body[:8] != _PNG_SIGNATURE or body[12:16] != b"IHDR":
        raise BadRequest("body is not a valid PNG: no PNG signature and IHDR chunk")
    w, h = struct.unpack_from(">II", body, 16)
    return int(w), int(h)


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 to PNG bytes (for clients and tests)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def compress(a: np.ndarray) -> bytes:
    # Little-endian on the wire, in the array's own kind (activations float32).
    data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return bytes(lz4.frame.compress(data, compression_level=0, content_checksum=True))


def decompress(payload: bytes, raw_bytes: int) -> bytes:
    """Decompress one LZ4 frame that must expand to exactly ``raw_bytes`` bytes."""
    if raw_bytes == 0:
        if payload:
            raise BadRequest("frame payload present but rawBytes is 0")
        return b""
    try:
        declared = int(lz4.frame.get_frame_info(payload)["content_size"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"corrupt LZ4 frame: {e}") from e
    if declared and declared != raw_bytes:  # 0: the writer did not store it
        raise BadRequest(f"LZ4 frame declares {declared} bytes, rawBytes={raw_bytes}")
    d = lz4.frame.LZ4FrameDecompressor()
    out = bytearray()
    data = payload
    try:
        # The decompressor may stop short of max_length; pull until the frame ends.  Each
        # call may produce at most one byte past rawBytes, so memory stays bounded.
        while True:
            chunk = d.decompress(data, max_length=raw_bytes - len(out) + 1)
            data = b""
            out += chunk
            if len(out) > raw_bytes:
                raise BadRequest(f"LZ4 frame expands beyond rawBytes={raw_bytes}")
            if d.eof or d.needs_input or not chunk:
                break
    except RuntimeError as e:
        raise BadRequest(f"corrupt LZ4 frame: {e}") from e
    if not d.eof:
        raise BadRequest(f"truncated LZ4 frame (got {len(out)} of rawBytes={raw_bytes})")
    if len(out) != raw_bytes:
        raise BadRequest(f"LZ4 frame does not decompress to exactly rawBytes={raw_bytes}")
    if d.unused_data:
        raise BadRequest("trailing bytes after the LZ4 frame")
    return bytes(out)


def encode_frame(header: dict[str, Any], tensor: np.ndarray | None) -> bytes:
    h = dict(header)
    if tensor is None or tensor.shape[0] == 0:
        shape = list(tensor.shape) if tensor is not None else [0]
        payload = b""
        raw = 0
    else:
        shape = list(tensor.shape)
        payload = compress(tensor)
        raw = tensor.nbytes
    dtype = "float32" if tensor is None else tensor.dtype.name
    h.update(shape=shape, dtype=dtype, rawBytes=raw)
    hj = json.dumps(h, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(hj)) + hj + payload


def frame_header(body: bytes, max_header: int = MAX_HEADER) -> tuple[dict[str, Any], int]:
    """Parse the prefix and JSON header; returns (header, payload offset)."""
    if len(body) < _PREFIX.size:
        raise BadRequest("frame too short")
    magic, version, hlen = _PREFIX.unpack_from(body)
    if magic != MAGIC:
        raise BadRequest("not a serflow frame (bad magic)")
    if version != VERSION:
        raise BadRequest(f"unsupported frame version {version}")
    if hlen > max_header or _PREFIX.size + hlen > len(body):
        raise BadRequest(f"frame header length {hlen} out of bounds (limit {max_header})")
    try:
        header = json.loads(body[_PREFIX.size : _PREFIX.size + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"frame header is not JSON: {e}") from e
    except RecursionError:  # the C decoder stops at the interpreter's recursion limit
        raise BadRequest("frame header nests too deeply") from None
    if not isinstance(header, dict):
        raise BadRequest("frame header must be a JSON object")
    return header, _PREFIX.size + hlen


def decode_frame(
    body: bytes,
    max_raw: int,
    expect_shape: tuple[int, ...] | None = None,
    max_header: int = MAX_HEADER,
    expect_dtype: str = "float32",
) -> tuple[dict[str, Any], np.ndarray]:
    """Full frame to (header, array); ``expect_shape`` is one row's shape, ``expect_dtype``
    its dtype (activations are float32; stage 1's input is the model's).  The shape and
    size are checked against ``max_raw`` before anything is decompressed."""
    header, off = frame_header(body, max_header)
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise BadRequest("frame shape must be a list of non-negative integers")
    if header.get("dtype") != expect_dtype:
        raise BadRequest(f"frame dtype must be {expect_dtype}, got {header.get('dtype')!r}")
    item = np.dtype(DTYPES[expect_dtype])
    n = shape[0]
    if n > 0 and expect_shape is not None and tuple(shape[1:]) != tuple(expect_shape):
        raise BadRequest(f"frame rows have shape {shape[1:]}, expected {list(expect_shape)}")
    raw = math.prod(shape) * item.itemsize if n > 0 else 0
    if header.get("rawBytes") != raw:
        raise BadRequest(f"rawBytes {header.get('rawBytes')!r} does not match shape {shape}")
    if raw > max_raw:
        raise BadRequest(f"frame would decompress to {raw} bytes, limit {max_raw}", status=413)
    data = decompress(body[off:], raw)
    if n == 0:
        empty = (0, *expect_shape) if expect_shape is not None else (0,)
        return header, np.empty(empty, dtype=item.newbyteorder("="))
    a = np.frombuffer(data, dtype=item)
    if item.kind == "f":
        _finite(a, "frame tensor")
    return header, a.reshape(shape).astype(item.newbyteorder("="))

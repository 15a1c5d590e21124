"""Wire formats of the data plane.

Client requests (``POST /infer`` on the worker and on the function server), one image each:

* ``Content-Type: application/octet-stream``: the model input as raw little-endian
  float32, C*H*W = 3*32*32 = 12,288 bytes, channel-major, already normalised with the
  checkpoint's mean and std.  Any other length, or a NaN/Inf value, is a 400.
* ``Content-Type: image/png``: an 8-bit 32x32 PNG (grey, RGB or RGBA); pixels are
  scaled to [0, 1], grey replicated to 3 channels, then normalised like training data.
  Other sizes are refused before the pixels are decoded.

Stage calls (worker -> function ``POST /run``) and their answers are *frames*::

    b"SFLW" | version u8 (=1) | header length u32 big-endian | header JSON | LZ4 frame

The header names the model fingerprint, the next partition to run, the tensor shape
[n, C, H, W], dtype float32, the row ids and ``rawBytes`` (= n*C*H*W*4).  The payload is
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
from typing import Any

import lz4.frame
import numpy as np
import torch

MAGIC = b"SFLW"
VERSION = 1
FRAME_CT = "application/x-serflow-frame"
RAW_CT = "application/octet-stream"
PNG_CT = "image/png"
MAX_HEADER = 1 << 20
_PREFIX = struct.Struct(">4sBI")


class BadRequest(ValueError):
    """A client error: becomes a 4xx JSON answer naming ``problem``."""

    def __init__(self, problem: str, status: int = 400) -> None:
        super().__init__(problem)
        self.problem = problem
        self.status = status


def _finite(a: np.ndarray, what: str) -> None:
    # numpy, not torch: a torch op here costs ~100 us while the compute thread runs.
    if not bool(np.isfinite(a).all()):
        raise BadRequest(f"{what} contains NaN or Inf values")


def decode_image(
    body: bytes,
    content_type: str,
    shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> torch.Tensor:
    """One request body to a (1, C, H, W) normalised float32 tensor."""
    ct = content_type.split(";")[0].strip().lower()
    c, h, w = shape
    if ct in (RAW_CT, "application/x-serflow-tensor"):
        want = c * h * w * 4
        if len(body) != want:
            raise BadRequest(
                f"raw tensor must be {want} bytes (float32 {c}x{h}x{w}), got {len(body)}"
            )
        a = np.frombuffer(body, dtype="<f4")
        _finite(a, "input tensor")
        return torch.from_numpy(a.copy()).view(1, c, h, w)
    if ct == PNG_CT:
        return _decode_png(body, shape, mean, std)
    raise BadRequest(
        f"unsupported Content-Type {content_type!r}: use {RAW_CT} or {PNG_CT}", status=415
    )


def _decode_png(
    body: bytes, shape: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        img = Image.open(io.BytesIO(body), formats=["PNG"])
        # The size comes from the header: refuse before decoding any pixel data.
        if img.size != (w, h):
            raise BadRequest(f"PNG must be {w}x{h}, got {img.size[0]}x{img.size[1]}")
        img = img.convert("RGB")
    except BadRequest:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadRequest(f"body is not a valid PNG: {e}") from e
    arr = np.asarray(img, dtype=np.float32) / 255.0  # (H, W, 3)
    t = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)[:, :c]
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((t - m) / s).contiguous()


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 to PNG bytes (for clients and tests)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def compress(t: torch.Tensor) -> bytes:
    data = t.detach().to(torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes()
    return bytes(lz4.frame.compress(data, compression_level=0, content_checksum=True))


def decompress(payload: bytes, raw_bytes: int) -> bytes:
    """Decompress one LZ4 frame that must expand to exactly ``raw_bytes`` bytes."""
    if raw_bytes == 0:
        if payload:
            raise BadRequest("frame payload present but rawBytes is 0")
        return b""
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


def encode_frame(header: dict[str, Any], tensor: torch.Tensor | None) -> bytes:
    h = dict(header)
    if tensor is None or tensor.shape[0] == 0:
        shape = list(tensor.shape) if tensor is not None else [0]
        payload = b""
        raw = 0
    else:
        shape = list(tensor.shape)
        payload = compress(tensor)
        raw = math.prod(shape) * 4
    h.update(shape=shape, dtype="float32", rawBytes=raw)
    hj = json.dumps(h, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(hj)) + hj + payload


def frame_header(body: bytes) -> tuple[dict[str, Any], int]:
    """Parse the prefix and JSON header; returns (header, payload offset)."""
    if len(body) < _PREFIX.size:
        raise BadRequest("frame too short")
    magic, version, hlen = _PREFIX.unpack_from(body)
    if magic != MAGIC:
        raise BadRequest("not a serflow frame (bad magic)")
    if version != VERSION:
        raise BadRequest(f"unsupported frame version {version}")
    if hlen > MAX_HEADER or _PREFIX.size + hlen > len(body):
        raise BadRequest("frame header length out of bounds")
    try:
        header = json.loads(body[_PREFIX.size : _PREFIX.size + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"frame header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise BadRequest("frame header must be a JSON object")
    return header, _PREFIX.size + hlen


def decode_frame(
    body: bytes, max_raw: int, expect_shape: tuple[int, ...] | None = None
) -> tuple[dict[str, Any], torch.Tensor]:
    """Full frame to (header, tensor); ``expect_shape`` is one row's (C, H, W)."""
    header, off = frame_header(body)
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise BadRequest("frame shape must be a list of non-negative integers")
    if header.get("dtype") != "float32":
        raise BadRequest(f"frame dtype must be float32, got {header.get('dtype')!r}")
    n = shape[0]
    if n > 0 and expect_shape is not None and tuple(shape[1:]) != tuple(expect_shape):
        raise BadRequest(f"frame rows have shape {shape[1:]}, expected {list(expect_shape)}")
    raw = math.prod(shape) * 4 if n > 0 else 0
    if header.get("rawBytes") != raw:
        raise BadRequest(f"rawBytes {header.get('rawBytes')!r} does not match shape {shape}")
    if raw > max_raw:
        raise BadRequest(f"frame would decompress to {raw} bytes, limit {max_raw}", status=413)
    data = decompress(body[off:], raw)
    if n == 0:
        empty = (0, *expect_shape) if expect_shape is not None else (0,)
        return header, torch.empty(empty)
    a = np.frombuffer(data, dtype="<f4")
    _finite(a, "frame tensor")
    return header, torch.from_numpy(a.copy()).view(*shape)

"""Wire formats: images in, LZ4 frames of real activations between stages, bad input."""

from __future__ import annotations

import json
import struct

import lz4.frame
import numpy as np
import pytest

from serflow_runtime import artefact, codec
from serflow_runtime.runtimes import ServedModel

from .conftest import Split

SHAPE = (3, 32, 32)
IMAGE = artefact.InputSpec(SHAPE, image=artefact.ImagePreprocessing((0.0,) * 3, (1.0,) * 3))


@pytest.fixture(scope="module")
def activations(served: ServedModel, digits: Split) -> dict[int, np.ndarray]:
    """Real post-ReLU activations of the trained model at every cut, 64 held-out images."""
    out = {}
    h = digits.x_val[:64]
    for i in range(1, served.k):
        h, _ = served.run_stage(i, h)
        out[i] = h.copy()
    return out


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 6])
def test_lz4_round_trip_of_real_activations(
    activations: dict[int, np.ndarray], served: ServedModel, cut: int
) -> None:
    h = activations[cut]
    frame = codec.encode_frame({"fingerprint": "fp", "partition": cut + 1, "rows": [1, 2]}, h)
    header, back = codec.decode_frame(frame, 1 << 30, served.manifest.cut_shape(cut))
    assert np.array_equal(back, h)  # lossless, bit for bit
    assert header["fingerprint"] == "fp" and header["rows"] == [1, 2]
    raw = h.size * 4
    assert header["rawBytes"] == raw
    # post-ReLU activations are sparse: LZ4 must shrink them
    assert len(codec.compress(h)) < raw
    assert float((h == 0).mean()) > 0.1


@pytest.mark.parametrize("kind", ["activations", "noise", "zeros"])
def test_large_frames_round_trip(served: ServedModel, digits: Split, kind: str) -> None:
    """Megabytes per frame: the decompressor returns its output in several pieces."""
    if kind == "activations":
        t, _ = served.run_stage(1, digits.x_val[:100])
    elif kind == "noise":
        t = np.random.default_rng(0).standard_normal((100, 16, 16, 16), dtype=np.float32)
    else:
        t = np.zeros((100, 16, 16, 16), np.float32)
    frame = codec.encode_frame({"fingerprint": "fp"}, t)
    _, back = codec.decode_frame(frame, 1 << 30, tuple(t.shape[1:]))
    assert np.array_equal(back, t)


def test_empty_frame_round_trip(served: ServedModel) -> None:
    shape = served.manifest.cut_shape(2)
    frame = codec.encode_frame({"fingerprint": "fp"}, np.empty((0, *shape), np.float32))
    header, t = codec.decode_frame(frame, 1 << 20, shape)
    assert header["rawBytes"] == 0 and t.shape == (0, *shape)


def _frame(header: dict[str, object], payload: bytes) -> bytes:
    hj = json.dumps(header).encode()
    return struct.pack(">4sBI", b"SFLW", 1, len(hj)) + hj + payload


def _good() -> tuple[dict[str, object], np.ndarray]:
    t = np.maximum(np.random.default_rng(0).standard_normal((2, 4, 2, 2), dtype=np.float32), 0)
    return {"fingerprint": "fp", "shape": [2, 4, 2, 2], "dtype": "float32", "rawBytes": 128}, t


def _bad_frames() -> list[tuple[str, bytes, str, int]]:
    h, t = _good()
    payload = codec.compress(t)
    big = codec.compress(np.zeros((4, 4, 2, 2), np.float32))  # decompresses to 256 bytes
    big_unsized = lz4.frame.compress(bytes(256), store_size=False)  # says nothing of it
    nan = codec.compress(np.full((2, 4, 2, 2), np.nan, np.float32))
    corrupt = bytearray(payload)
    corrupt[len(corrupt) // 2] ^= 0xFF
    return [
        ("short", b"SFL", "too short", 400),
        ("magic", b"XXXX" + bytes(20), "bad magic", 400),
        ("version", struct.pack(">4sBI", b"SFLW", 9, 0), "version", 400),
        ("header-len", struct.pack(">4sBI", b"SFLW", 1, 1 << 30), "out of bounds", 400),
        ("header-json", struct.pack(">4sBI", b"SFLW", 1, 3) + b"{{{", "not JSON", 400),
        ("header-list", _frame([], b""), "JSON object", 400),  # type: ignore[arg-type]
        ("dtype", _frame({**h, "dtype": "float16"}, payload), "dtype", 400),
        ("shape-neg", _frame({**h, "shape": [2, -4, 2, 2]}, payload), "non-negative", 400),
        ("shape-rows", _frame({**h, "shape": [2, 8, 1, 2]}, payload), "expected", 400),
        ("raw-lie", _frame({**h, "rawBytes": 64}, payload), "does not match", 400),
        (
            "oversized",
            _frame({**h, "shape": [4096, 4, 2, 2], "rawBytes": 4096 * 64}, payload),
            "limit",
            413,
        ),
        ("declares-more", _frame(h, big), "declares 256 bytes", 400),
        ("expands-beyond", _frame(h, big_unsized), "beyond rawBytes", 400),
        ("truncated", _frame(h, payload[:-6]), "LZ4", 400),
        ("corrupt", _frame(h, bytes(corrupt)), "LZ4", 400),
        ("trailing", _frame(h, payload + b"junk"), "", 400),
        ("garbage", _frame(h, b"\x00" * 40), "LZ4", 400),
        ("nan", _frame(h, nan), "NaN", 400),
    ]


@pytest.mark.parametrize(
    ("name", "body", "problem", "status"),
    _bad_frames(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else "",
)
def test_bad_frames_refused(name: str, body: bytes, problem: str, status: int) -> None:
    with pytest.raises(codec.BadRequest, match=problem or None) as ei:
        codec.decode_frame(body, 64 * 1024, (4, 2, 2))
    assert ei.value.status == status


def test_good_frame_passes_the_same_checks() -> None:
    """The bad-frame table is honest: the unmodified frame decodes."""
    h, t = _good()
    _, back = codec.decode_frame(_frame(h, codec.compress(t)), 64 * 1024, (4, 2, 2))
    assert np.array_equal(back, t)


def test_png_decodes_like_calibration_pixels(served: ServedModel) -> None:
    """A PNG of a held-out image decodes to (pixels / 255 - mean) / std, channel-major."""
    cal = artefact.load_calibration(served.root, served.manifest)
    inp = served.manifest.input
    px = cal.inputs[0]  # (32, 32, 3) uint8
    x = codec.decode_input(codec.encode_png(px), "image/png", inp)
    assert inp.image is not None
    mean = np.asarray(inp.image.mean).reshape(3, 1, 1)
    std = np.asarray(inp.image.std).reshape(3, 1, 1)
    want = (px.transpose(2, 0, 1) / 255.0 - mean) / std
    assert x.shape == (1, *SHAPE) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("body", "ctype", "problem", "status"),
    [
        (b"\x00" * 100, "application/octet-stream", "12288 bytes", 400),
        (np.full(3 * 32 * 32, np.nan, "<f4").tobytes(), "application/octet-stream", "NaN", 400),
        (np.full(3 * 32 * 32, np.inf, "<f4").tobytes(), "application/octet-stream", "NaN", 400),
        (b"\x89PNG\r\n\x1a\nbroken", "image/png", "valid PNG", 400),
        (b"hello", "text/plain", "Content-Type", 415),
    ],
)
def test_bad_images_refused(body: bytes, ctype: str, problem: str, status: int) -> None:
    with pytest.raises(codec.BadRequest, match=problem) as ei:
        codec.decode_input(body, ctype, IMAGE)
    assert ei.value.status == status


def test_png_of_wrong_size_refused_before_decoding() -> None:
    png = codec.encode_png(np.zeros((4000, 4000, 3), np.uint8))
    with pytest.raises(codec.BadRequest, match="32x32"):
        codec.decode_input(png, "image/png", IMAGE)


def test_raw_tensor_round_trip() -> None:
    x = np.random.default_rng(1).standard_normal((1, *SHAPE), dtype=np.float32)
    body = x.astype("<f4").tobytes()
    assert np.array_equal(
        codec.decode_input(body, "application/octet-stream", IMAGE), x
    )

"""The model contract and its artefact: a folder with ``manifest.json`` and one file per stage.

The contract: a model is K stages; stage i maps the previous stage's hidden tensor (stage
1: the preprocessed input) to ``(hidden_i, logits_i)``; the last stage's logits are the
final classifier.  The exit rule (``engine``) is the same for every model.

The manifest states the input (shape, dtype, preprocessing), the classes, K, each stage's
file, digest and shapes, the calibration set the profiler measures on, and optionally the
torch checkpoint the stages were exported from (the torch runtime's input).  Its
``digest`` is the SHA-256 of the manifest's canonical JSON without that field; it covers
every file's digest, so it names the whole artefact and is the model fingerprint that
profiles and frames carry.

Reading an artefact needs only numpy: the images that serve it carry no torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "serflow-artefact/1"
SHIPPED = Path(__file__).parent / "artefacts"
"""The artefacts this package ships, each named by its folder."""
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_CALIBRATION_ROWS = 100_000


class ArtefactError(ValueError):
    """An artefact that is incomplete, altered, or not what the caller expects."""


@dataclass(frozen=True)
class FileRef:
    """A file of the artefact, named relative to its folder."""

    file: str
    """Path inside the artefact folder (no ``..``, not absolute)."""
    sha256: str
    """Hex SHA-256 of the file's bytes."""


@dataclass(frozen=True)
class Stage:
    """One stage of the contract."""

    file: FileRef
    """The stage's ONNX graph: inputs ``x``, outputs ``hidden`` and ``logits``."""
    input_shape: tuple[int, ...]
    """One request's input to this stage (the batch axis left out)."""
    hidden_shape: tuple[int, ...]
    """One request's hidden tensor after this stage."""


@dataclass(frozen=True)
class InputSpec:
    """What a request carries and how it becomes the stage-1 input."""

    shape: tuple[int, int, int]
    """(C, H, W) of the preprocessed input, float32."""
    mean: tuple[float, ...]
    """Per-channel mean subtracted after scaling 8-bit pixels to [0, 1]."""
    std: tuple[float, ...]
    """Per-channel standard deviation divided after the mean."""


@dataclass(frozen=True)
class Manifest:
    """A verified artefact's manifest."""

    name: str
    """Human name of the model (profiles and tokens carry it)."""
    input: InputSpec
    """The input and its preprocessing."""
    classes: tuple[str, ...]
    """Class names, in logit order."""
    stages: tuple[Stage, ...]
    """The K stages, in order."""
    calibration: FileRef | None
    """``.npz`` with ``pixels`` (N, H, W, 3) uint8 and ``labels`` (N,): the held-out split
    the profiler measures on, stored as a client would send it."""
    source: FileRef | None
    """The torch checkpoint the stages were exported from (for the torch runtime)."""
    describes: dict[str, Any]
    """Descriptive facts of the exporting module (architecture, width, exit placement)."""
    digest: str
    """SHA-256 of the manifest without this field: the model fingerprint."""

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def token(self) -> str:
        """What frames and answers carry: the name and the digest."""
        return f"{self.name}/{self.digest}"

    def input_shape_of(self, stage: int) -> tuple[int, ...]:
        """One request's input to ``stage`` (1-based)."""
        return self.stages[stage - 1].input_shape

    def cut_shape(self, after: int) -> tuple[int, ...]:
        """One request's hidden tensor crossing the cut after stage ``after``."""
        return self.stages[after - 1].hidden_shape


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest_of(doc: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``doc`` without its ``digest`` field."""
    body = {k: v for k, v in doc.items() if k != "digest"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not v or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v
    ):
        raise ArtefactError(f"{where} must be a list of positive integers, got {v!r}")
    return tuple(v)


def _ref(root: Path, v: Any, where: str) -> FileRef:
    if not isinstance(v, dict) or not isinstance(v.get("file"), str) or not isinstance(
        v.get("sha256"), str
    ):
        raise ArtefactError(f"{where} must name a file and its sha256")
    rel = Path(v["file"])
    if rel.is_absolute() or ".." in rel.parts:
        raise ArtefactError(f"{where}.file {v['file']!r} must stay inside the artefact")
    path = root / rel
    if not path.is_file():
        raise ArtefactError(f"{where}.file {v['file']} is missing from {root}")
    got = sha256_file(path)
    if got != v["sha256"]:
        raise ArtefactError(
            f"{where}.file {v['file']} has sha256 {got[:12]}..., the manifest says "
            f"{v['sha256'][:12]}..."
        )
    return FileRef(v["file"], v["sha256"])


def _manifest_doc(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ArtefactError(f"{root} is not a serflow artefact: {MANIFEST} is missing")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ArtefactError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtefactError(f"{path} is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArtefactError(f"{path} is not a {FORMAT} manifest")
    return doc


def shipped() -> list[str]:
    """Names of the artefacts this package ships."""
    return sorted(d.name for d in SHIPPED.iterdir() if (d / MANIFEST).is_file())


def resolve(ref: str | Path) -> Path:
    """An artefact folder from a path, or from the name of a shipped artefact."""
    text = str(ref)
    if text and "/" not in text and (SHIPPED / text / MANIFEST).is_file():
        return SHIPPED / text
    return Path(text)


def load(root: str | Path, expect_digest: str | None = None) -> Manifest:
    """Read and verify an artefact: every file present with its digest, the manifest's own
    digest, K, and each stage's input the previous stage's hidden shape."""
    root = Path(root)
    doc = _manifest_doc(root)
    digest = digest_of(doc)
    if doc.get("digest") != digest:
        raise ArtefactError(
            f"{root / MANIFEST} digest {str(doc.get('digest'))[:12]}... does not match its "
            f"content ({digest[:12]}...): the manifest was altered"
        )
    if expect_digest is not None and expect_digest != digest:
        raise ArtefactError(
            f"artefact {root} has digest {digest[:12]}..., expected {expect_digest[:12]}..."
        )
    inp = doc.get("input")
    if not isinstance(inp, dict):
        raise ArtefactError("manifest input must be an object")
    in_shape = _shape(inp.get("shape"), "input.shape")
    if len(in_shape) != 3 or inp.get("dtype") != "float32":
        raise ArtefactError("input must be float32 of shape [C, H, W]")
    pre = inp.get("preprocessing", {})
    mean = tuple(float(m) for m in pre.get("mean", []))
    std = tuple(float(s) for s in pre.get("std", []))
    if len(mean) != in_shape[0] or len(std) != in_shape[0] or not all(s > 0 for s in std):
        raise ArtefactError("input.preprocessing needs a mean and a positive std per channel")
    classes = doc.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ArtefactError("manifest classes must list at least two names")
    raw_stages = doc.get("stages")
    k = doc.get("numStages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ArtefactError("manifest stages must be a non-empty list")
    if k != len(raw_stages):
        raise ArtefactError(f"manifest says numStages={k!r} but lists {len(raw_stages)} stages")
    stages: list[Stage] = []
    prev: tuple[int, ...] = in_shape
    for i, s in enumerate(raw_stages, start=1):
        where = f"stages[{i}]"
        if not isinstance(s, dict):
            raise ArtefactError(f"{where} must be an object")
        st = Stage(
            _ref(root, s, where),
            _shape(s.get("input"), f"{where}.input"),
            _shape(s.get("hidden"), f"{where}.hidden"),
        )
        if st.input_shape != prev:
            raise ArtefactError(
                f"{where} takes input {list(st.input_shape)} but "
                f"{'the model input' if i == 1 else f'stage {i - 1} outputs'} {list(prev)}"
            )
        prev = st.hidden_shape
        stages.append(st)
    opt = {k_: _ref(root, doc[k_], k_) if k_ in doc else None for k_ in ("calibration", "source")}
    describes = doc.get("describes", {})
    return Manifest(
        name=str(doc.get("name", root.name)),
        input=InputSpec((in_shape[0], in_shape[1], in_shape[2]), mean, std),
        classes=tuple(str(c) for c in classes),
        stages=tuple(stages),
        calibration=opt["calibration"],
        source=opt["source"],
        describes=dict(describes) if isinstance(describes, dict) else {},
        digest=digest,
    )


@dataclass(frozen=True)
class Calibration:
    """The profiler's inputs, as a client would send them."""

    pixels: np.ndarray
    """(N, H, W, 3) uint8."""
    labels: np.ndarray
    """(N,) int64 class indices."""


def load_calibration(root: str | Path, m: Manifest) -> Calibration:
    if m.calibration is None:
        raise ArtefactError(f"artefact {m.name} ships no calibration set")
    path = Path(root) / m.calibration.file
    # Verified by digest at load; allow_pickle=False keeps the file plain data.
    with np.load(path, allow_pickle=False) as z:
        if "pixels" not in z or "labels" not in z:
            raise ArtefactError(f"{path} needs arrays 'pixels' and 'labels'")
        px, y = z["pixels"], z["labels"]
    _, h, w = m.input.shape
    if px.dtype != np.uint8 or px.shape[1:] != (h, w, 3) or px.shape[0] != y.shape[0]:
        raise ArtefactError(f"{path}: pixels must be (N, {h}, {w}, 3) uint8 with N labels")
    if not 0 < px.shape[0] <= MAX_CALIBRATION_ROWS:
        raise ArtefactError(f"{path}: 1..{MAX_CALIBRATION_ROWS} rows, got {px.shape[0]}")
    return Calibration(px, y.astype(np.int64))


def held_out(root: str | Path, m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The calibration set as the model's input (preprocessed as the servers preprocess a
    PNG) and its labels."""
    cal = load_calibration(root, m)
    return preprocess(cal.pixels, m.input), cal.labels


def preprocess(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 to (N, C, H, W) float32: scale to [0, 1], then normalise."""
    c = spec.shape[0]
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2)[:, :c] / np.float32(255.0)
    m = np.asarray(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(spec.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def write_manifest(root: str | Path, doc: dict[str, Any]) -> str:
    """Seal ``doc`` with its digest and write it; returns the digest."""
    doc = {k: v for k, v in doc.items() if k != "digest"}
    doc["format"] = FORMAT
    doc["digest"] = digest_of(doc)
    Path(root, MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return str(doc["digest"])

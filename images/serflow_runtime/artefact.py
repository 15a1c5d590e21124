"""The model contract and its artefact: a folder with ``manifest.json`` and one file per stage.

The contract, for any early-exit network: a model is K stages; stage i maps the previous
stage's hidden tensor (stage 1: the input, preprocessed if the manifest says so) to
``(hidden_i, logits_i)``; the last stage's logits are the final classifier.  A request
leaves at the first exit whose confidence passes tau under the manifest's named
``exitRule`` (``engine``).

The manifest states the input (its name, dtype, shape without the batch axis, for
integer inputs the range of a value, and the preprocessing: ``image`` (8-bit pixels
scaled to [0, 1], then a per-channel mean and std) or ``none``), the classes, K, each
stage's file, digest and shapes, the exit rule, the calibration set the profiler
measures on, and optionally the torch checkpoint the stages were exported from.  Its
``digest`` is the SHA-256 of the manifest's canonical JSON without that field; it covers
every file's digest, so it names the whole artefact and is the model fingerprint that
profiles and frames carry.  Manifests written before the input had a name, a dtype
choice, a preprocessing kind and an exit rule read as float32 images named ``input``
under ``max-softmax`` (what they were), so their digests stand.

Reading an artefact needs only numpy: the images that serve it carry no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
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


DTYPES: dict[str, str] = {
    "float32": "<f4",
    "float16": "<f2",
    "int64": "<i8",
    "int32": "<i4",
    "uint8": "|u1",
    "int8": "|i1",
}
"""The input dtypes a manifest may declare, and their little-endian layout on the wire."""
EXIT_RULES = ("max-softmax",)
"""Named exit rules: ``max-softmax`` leaves when the largest softmax probability of an
exit's logits is >= tau (the paper's).  A new rule is a new name, not a new format."""
DEFAULT_EXIT_RULE = EXIT_RULES[0]
MAX_STAGES = 64
"""K at most: the control plane's bound on partitions (63 exits and the final one)."""
INPUT_NAME = "^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
"""An input tensor's name: what the Open Inference Protocol's requests name it by."""


@dataclass(frozen=True)
class ImagePreprocessing:
    """8-bit pixels (a PNG or the calibration set) to the stage-1 input: scale to [0, 1],
    replicate grey to the channels, subtract ``mean`` and divide by ``std`` per channel."""

    mean: tuple[float, ...]
    """Per-channel mean subtracted after scaling 8-bit pixels to [0, 1]."""
    std: tuple[float, ...]
    """Per-channel standard deviation divided after the mean (all > 0)."""


@dataclass(frozen=True)
class InputSpec:
    """What a request carries: one tensor per instance."""

    shape: tuple[int, ...]
    """One instance's input, the batch axis left out (images: (C, H, W))."""
    dtype: str = "float32"
    """One of ``DTYPES``: what the raw body and the Open Inference Protocol carry."""
    name: str = "input"
    """The tensor's name under the Open Inference Protocol."""
    value_range: tuple[int, int] | None = None
    """Integer inputs: the inclusive bounds of a value (token ids: 0..vocabulary-1); a
    request outside them is refused before it can fail a whole batch."""
    image: ImagePreprocessing | None = None
    """Image preprocessing, or None: the input goes to stage 1 as sent."""

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return np.dtype(DTYPES[self.dtype])

    @property
    def row_bytes(self) -> int:
        """Bytes of one instance's raw input."""
        return math.prod(self.shape) * self.numpy_dtype.itemsize

    def problem(self, a: np.ndarray) -> str | None:
        """Why values of this input are refused (None when they are fine): NaN or Inf in a
        float input, a value outside ``value_range`` in an integer one."""
        if a.dtype.kind == "f":
            return None if bool(np.isfinite(a).all()) else "contains NaN or Inf values"
        if self.value_range is not None and a.size:
            lo, hi = self.value_range
            amin, amax = int(a.min()), int(a.max())
            if amin < lo or amax > hi:
                bad = amin if amin < lo else amax
                return f"holds {bad}, outside the model's range {lo}..{hi}"
        return None


@dataclass(frozen=True)
class Manifest:
    """A verified artefact's manifest."""

    name: str
    """Human name of the model (profiles and tokens carry it)."""
    input: InputSpec
    """The input and its preprocessing."""
    exit_rule: str
    """One of ``EXIT_RULES``: when a request leaves at an internal exit."""
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


def _input(inp: Any) -> InputSpec:
    """The manifest's ``input``; one written before ``preprocessing.kind`` existed is an
    image (it carries ``pixels``)."""
    if not isinstance(inp, dict):
        raise ArtefactError("manifest input must be an object")
    shape = _shape(inp.get("shape"), "input.shape")
    dtype = inp.get("dtype")
    if dtype not in DTYPES:
        raise ArtefactError(f"input.dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    name = inp.get("name", "input")
    if not isinstance(name, str) or not re.fullmatch(INPUT_NAME, name):
        raise ArtefactError(f"input.name {name!r} must match {INPUT_NAME}")
    value_range: tuple[int, int] | None = None
    if "range" in inp:
        r = inp["range"]
        if (
            np.dtype(DTYPES[dtype]).kind not in "iu"
            or not isinstance(r, list)
            or len(r) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in r)
            or r[0] > r[1]
        ):
            raise ArtefactError("input.range must be [low, high] integers of an integer input")
        value_range = (r[0], r[1])
    pre = inp.get("preprocessing", {"kind": "none"})
    if not isinstance(pre, dict):
        raise ArtefactError("input.preprocessing must be an object")
    kind = pre.get("kind", "image" if "pixels" in pre else None)
    if kind == "none":
        return InputSpec(shape, dtype, name, value_range, None)
    if kind != "image":
        raise ArtefactError(f"input.preprocessing.kind {kind!r} is not 'image' or 'none'")
    mean = tuple(float(m) for m in pre.get("mean", []))
    std = tuple(float(s) for s in pre.get("std", []))
    if len(shape) != 3 or dtype != "float32" or shape[0] not in (1, 3):
        raise ArtefactError("an image input must be float32 of shape [C, H, W] with C 1 or 3")
    if len(mean) != shape[0] or len(std) != shape[0] or not all(s > 0 for s in std):
        raise ArtefactError("input.preprocessing needs a mean and a positive std per channel")
    return InputSpec(shape, dtype, name, None, ImagePreprocessing(mean, std))


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
    spec = _input(doc.get("input"))
    rule = doc.get("exitRule", {"name": DEFAULT_EXIT_RULE})
    if not isinstance(rule, dict) or rule.get("name") not in EXIT_RULES:
        name = rule.get("name") if isinstance(rule, dict) else rule
        raise ArtefactError(
            f"exitRule {name!r} is not one this runtime knows ({', '.join(EXIT_RULES)})"
        )
    classes = doc.get("classes")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ArtefactError("manifest classes must list at least two names")
    raw_stages = doc.get("stages")
    k = doc.get("numStages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ArtefactError("manifest stages must be a non-empty list")
    if len(raw_stages) > MAX_STAGES:
        raise ArtefactError(f"manifest lists {len(raw_stages)} stages; at most {MAX_STAGES}")
    if k != len(raw_stages):
        raise ArtefactError(f"manifest says numStages={k!r} but lists {len(raw_stages)} stages")
    stages: list[Stage] = []
    prev: tuple[int, ...] = spec.shape
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
        input=spec,
        exit_rule=str(rule["name"]),
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

    inputs: np.ndarray
    """Images: (N, H, W, 3) uint8 pixels (the file's ``pixels``); otherwise (N, *shape)
    of the input's dtype (the file's ``inputs``)."""
    labels: np.ndarray
    """(N,) int64 class indices."""


def load_calibration(root: str | Path, m: Manifest) -> Calibration:
    if m.calibration is None:
        raise ArtefactError(f"artefact {m.name} ships no calibration set")
    path = Path(root) / m.calibration.file
    spec = m.input
    key = "pixels" if spec.image else "inputs"
    # Verified by digest at load; allow_pickle=False keeps the file plain data.
    with np.load(path, allow_pickle=False) as z:
        if key not in z or "labels" not in z:
            raise ArtefactError(f"{path} needs arrays {key!r} and 'labels'")
        x, y = z[key], z["labels"]
    want: tuple[int, ...]
    if spec.image:
        want, dtype = (spec.shape[1], spec.shape[2], 3), np.dtype(np.uint8)
    else:
        want, dtype = spec.shape, spec.numpy_dtype
    if x.dtype != dtype or x.shape[1:] != want or x.shape[0] != y.shape[0]:
        raise ArtefactError(
            f"{path}: {key} must be (N, {', '.join(map(str, want))}) {dtype} with N labels, "
            f"got {x.dtype} {list(x.shape)} and {y.shape[0]} labels"
        )
    if not 0 < x.shape[0] <= MAX_CALIBRATION_ROWS:
        raise ArtefactError(f"{path}: 1..{MAX_CALIBRATION_ROWS} rows, got {x.shape[0]}")
    if (why := spec.problem(x)) is not None:
        raise ArtefactError(f"{path}: {key} {why}")
    return Calibration(x, y.astype(np.int64))


def held_out(root: str | Path, m: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The calibration set as the model's input (images preprocessed as the servers
    preprocess a PNG) and its labels."""
    cal = load_calibration(root, m)
    return model_input(cal.inputs, m.input), cal.labels


def model_input(sent: np.ndarray, spec: InputSpec) -> np.ndarray:
    """What a client sends (images: 8-bit pixels) to the stage-1 input."""
    if spec.image is not None:
        return preprocess(sent, spec)
    return np.ascontiguousarray(sent, dtype=spec.numpy_dtype)


def preprocess(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 to (N, C, H, W) float32: scale to [0, 1], then normalise."""
    assert spec.image is not None, "preprocess needs an image input"
    c = spec.shape[0]
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2)[:, :c] / np.float32(255.0)
    m = np.asarray(spec.image.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(spec.image.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def write_manifest(root: str | Path, doc: dict[str, Any]) -> str:
    """Seal ``doc`` with its digest and write it; returns the digest."""
    doc = {k: v for k, v in doc.items() if k != "digest"}
    doc["format"] = FORMAT
    doc["digest"] = digest_of(doc)
    Path(root, MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return str(doc["digest"])

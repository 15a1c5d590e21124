"""Checkpoints that carry the architecture, IC placement and input normalisation.

A checkpoint is a ``torch.save`` dict loaded with ``weights_only=True`` (no pickled
code).  Float tensors may be stored as float16 to keep the shipped checkpoint small;
they are loaded back as float32.  A checkpoint is what training writes and what the
torch runtime rebuilds a module from; what serves, and what profiles and frames name, is
the artefact exported from it (``serflow_runtime.artefact``), which records the
checkpoint's sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serflow_runtime import resnet
from serflow_runtime.artefact import sha256_file
from serflow_runtime.model import Arch, EarlyExitVGG

AnyArch = Arch | resnet.ResArch
AnyModel = EarlyExitVGG | resnet.EarlyExitResNet

FORMAT = "serflow-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is unreadable or does not match what the caller expects."""


@dataclass
class Loaded:
    model: AnyModel
    arch: AnyArch
    meta: dict[str, Any]
    sha256: str
    mean: tuple[float, ...]
    std: tuple[float, ...]



def save(
    path: str | Path,
    model: AnyModel,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    meta: dict[str, Any] | None = None,
    half: bool = False,
) -> str:
    """Write the checkpoint; returns its sha256."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v.clone())
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "arch": model.arch.to_dict(),
        "normalize": {"mean": list(mean), "std": list(std)},
        "meta": dict(meta or {}),
        "state_dict": state,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, str(path))
    return sha256_file(path)


def arch_from_dict(d: dict[str, Any]) -> AnyArch:
    """The architecture a checkpoint names (VGG-16-BN or the residual network)."""
    if d.get("architecture") == resnet.ARCHITECTURE:
        return resnet.ResArch.from_dict(d)
    return Arch.from_dict(d)


def build_model(arch: AnyArch) -> AnyModel:
    if isinstance(arch, resnet.ResArch):
        return resnet.EarlyExitResNet(arch)
    return EarlyExitVGG(arch)


def load(path: str | Path, expect: AnyArch | None = None) -> Loaded:
    """Load and rebuild the model in eval mode; refuse a checkpoint unlike ``expect``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        payload = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt file
        raise CheckpointError(f"checkpoint {p} is unreadable: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {p} is not a {FORMAT} file")
    try:
        arch = arch_from_dict(payload["arch"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {p} names no known architecture: {e}") from e
    if expect is not None and expect != arch:
        raise CheckpointError(
            f"checkpoint {p} holds {arch.to_dict()} but {expect.to_dict()} was expected"
        )
    model = build_model(arch)
    state = {
        k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {p} does not fit its declared architecture: {e}") from e
    model.eval()
    norm = payload["normalize"]
    return Loaded(
        model=model,
        arch=arch,
        meta=dict(payload.get("meta", {})),
        sha256=sha256_file(p),
        mean=tuple(float(m) for m in norm["mean"]),
        std=tuple(float(s) for s in norm["std"]),
    )

"""``serflow-runtime export``: write an artefact from any torch module of the contract.

A module implements the contract when it can be cut into K stages, each an ``nn.Module``
mapping the previous hidden tensor to ``(hidden, logits)``.  Each stage becomes one ONNX
graph with a dynamic batch axis; the manifest records each file's digest and shapes, the
input's preprocessing, the classes, the calibration set (the held-out split as 8-bit
pixels, what a client sends) and, optionally, the checkpoint the stages came from.
Needs the `torch` extra (torch, onnx, onnxscript); serving the artefact does not.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from serflow_runtime import artefact

OPSET = 18


def to_pixels(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised (N, C, H, W) back to (N, H, W, 3) uint8, grey replicated to 3 channels."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    px = ((x * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
    if px.shape[1] == 1:
        px = px.repeat(1, 3, 1, 1)
    return np.ascontiguousarray(px.permute(0, 2, 3, 1).numpy())


def export_stage(stage: nn.Module, example: torch.Tensor, path: Path) -> tuple[int, ...]:
    """One stage to ONNX; returns one request's hidden shape."""
    stage.eval()
    with torch.no_grad():
        hidden, _ = stage(example)
    # torch.export's exporter (the TorchScript one is deprecated); the batch axis is dynamic.
    torch.onnx.export(
        stage,
        (example,),
        str(path),
        input_names=["x"],
        output_names=["hidden", "logits"],
        dynamic_shapes=({0: torch.export.Dim("n")},),
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    _strip_provenance(path)
    return tuple(int(d) for d in hidden.shape[1:])


def _strip_provenance(path: Path) -> None:
    """Drop what the exporter records about where it ran (source stack traces with this
    machine's paths, doc strings): an artefact names its weights and graph, nothing else."""
    import onnx

    model = onnx.load(str(path))

    def clean(graph: onnx.GraphProto) -> None:
        graph.doc_string = ""
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
            for attr in node.attribute:
                if attr.HasField("g"):
                    clean(attr.g)
        for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            if hasattr(v, "metadata_props"):
                del v.metadata_props[:]

    clean(model.graph)
    del model.metadata_props[:]
    model.doc_string = ""
    onnx.save(model, str(path))


def export(
    stages: Sequence[nn.Module],
    out: str | Path,
    *,
    name: str,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[str],
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
    source: str | Path | None = None,
    describes: dict[str, Any] | None = None,
) -> artefact.Manifest:
    """Write the artefact into ``out`` (created; must be empty) and return it verified."""
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise artefact.ArtefactError(f"{root} is not empty: export writes a new artefact")
    root.mkdir(parents=True, exist_ok=True)
    x = torch.zeros((2, *input_shape))
    entries = []
    for i, st in enumerate(stages, start=1):
        f = root / f"stage-{i}.onnx"
        in_shape = tuple(int(d) for d in x.shape[1:])
        hidden = export_stage(st, x, f)
        entries.append(
            {
                "file": f.name,
                "sha256": artefact.sha256_file(f),
                "input": list(in_shape),
                "hidden": list(hidden),
            }
        )
        with torch.no_grad():
            x, _ = st(x)
    doc: dict[str, Any] = {
        "name": name,
        "input": {
            "shape": list(input_shape),
            "dtype": "float32",
            "preprocessing": {
                "pixels": "8-bit RGB, scaled to [0, 1]",
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
            },
        },
        "classes": [str(c) for c in classes],
        "numStages": len(entries),
        "stages": entries,
        "describes": dict(describes or {}),
    }
    if calibration is not None:
        pixels, labels = calibration
        f = root / "calibration.npz"
        np.savez_compressed(f, pixels=pixels.astype(np.uint8), labels=labels.astype(np.int64))
        doc["calibration"] = {"file": f.name, "sha256": artefact.sha256_file(f)}
    if source is not None:
        f = root / "source.pt"
        shutil.copyfile(source, f)
        doc["source"] = {"file": f.name, "sha256": artefact.sha256_file(f)}
    artefact.write_manifest(root, doc)
    return artefact.load(root)

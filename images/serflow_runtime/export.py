"""``serflow-runtime export``: write an artefact from any early-exit torch network.

A network implements the contract when it can be cut into K stages, each an
``nn.Module`` mapping the previous hidden tensor (stage 1: the input) to ``(hidden,
logits)``.  ``export_network`` takes those stages, an example batch of inputs (its dtype
and shape are what clients send: float32 features or images, int64 token ids, ...), the
class names and a calibration set, and writes the artefact: one ONNX graph per stage with
a dynamic batch axis, each checked against torch on the example, and the manifest with
each file's digest and shapes, the input's declaration and preprocessing, the exit rule
and the calibration set (what a client sends, so the profiler measures the serving
path).  Needs the `torch` extra (torch, onnx, onnxscript); serving the artefact does not.
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


def export_stage(stage: nn.Module, example: torch.Tensor, path: Path) -> None:
    """One stage to ONNX, its batch axis dynamic."""
    stage.eval()
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


def _check_stage(path: Path, x: torch.Tensor, hidden: torch.Tensor, logits: torch.Tensor) -> None:
    """The ONNX graph gives what torch gave on the example (float32 kernels sum in other
    orders: 1e-4 relative to the largest value is far below any exit's margin)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h, lg = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    for name, got, want in (("hidden", h, hidden), ("logits", lg, logits)):
        w = want.numpy()
        tol = 1e-4 * max(1.0, float(np.abs(w).max(initial=0.0)))
        if got.shape != w.shape or not np.allclose(got, w, rtol=0, atol=tol):
            raise artefact.ArtefactError(
                f"{path.name}: ONNX {name} differs from torch's by "
                f"{float(np.abs(got - w).max()) if got.shape == w.shape else got.shape}"
            )


def export_network(
    stages: Sequence[nn.Module],
    out: str | Path,
    *,
    name: str,
    example: torch.Tensor,
    classes: Sequence[str],
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
    input_name: str = "input",
    input_range: tuple[int, int] | None = None,
    image: artefact.ImagePreprocessing | None = None,
    describes: dict[str, Any] | None = None,
    exit_rule: str = artefact.DEFAULT_EXIT_RULE,
    source: str | Path | None = None,
) -> artefact.Manifest:
    """Write the artefact of ``stages`` into ``out`` (created; must be empty) and return
    it verified.

    ``example``: a batch of inputs as the model takes them (``image``: already
    normalised).  ``calibration``: the held-out inputs exactly as a client sends them
    (``image``: (N, H, W, 3) uint8 pixels; otherwise rows of the example's dtype and
    shape) and their labels.  ``input_range``: for integer inputs, the inclusive bounds
    of a value.  ``source``: a torch checkpoint copied in for the torch runtime."""
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise artefact.ArtefactError(f"{root} is not empty: export writes a new artefact")
    dtype = example.dtype.__repr__().removeprefix("torch.")
    if dtype not in artefact.DTYPES:
        raise artefact.ArtefactError(f"example dtype {dtype} is not one of {', '.join(artefact.DTYPES)}")
    if not stages or len(stages) > artefact.MAX_STAGES:
        raise artefact.ArtefactError(f"a network needs 1..{artefact.MAX_STAGES} stages, got {len(stages)}")
    input_shape = tuple(int(d) for d in example.shape[1:])
    # torch.export specialises a batch axis of 1; two rows keep it dynamic.
    x = example if example.shape[0] > 1 else torch.cat([example, example])
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, st in enumerate(stages, start=1):
        f = root / f"stage-{i}.onnx"
        st.eval()
        with torch.no_grad():
            hidden, logits = st(x)
        if hidden.dtype != torch.float32 or logits.shape != (x.shape[0], len(classes)):
            raise artefact.ArtefactError(
                f"stage {i} must give float32 hidden and logits of ({x.shape[0]}, "
                f"{len(classes)}), gives {hidden.dtype} and {tuple(logits.shape)}"
            )
        export_stage(st, x, f)
        _check_stage(f, x, hidden, logits)
        entries.append(
            {
                "file": f.name,
                "sha256": artefact.sha256_file(f),
                "input": [int(d) for d in x.shape[1:]],
                "hidden": [int(d) for d in hidden.shape[1:]],
            }
        )
        x = hidden
    inp: dict[str, Any] = {"name": input_name, "shape": list(input_shape), "dtype": dtype}
    if input_range is not None:
        inp["range"] = [int(input_range[0]), int(input_range[1])]
    if image is not None:
        inp["preprocessing"] = {
            "kind": "image",
            "pixels": "8-bit RGB, scaled to [0, 1]",
            "mean": [float(v) for v in image.mean],
            "std": [float(v) for v in image.std],
        }
    else:
        inp["preprocessing"] = {"kind": "none"}
    doc: dict[str, Any] = {
        "name": name,
        "input": inp,
        "exitRule": {"name": exit_rule},
        "classes": [str(c) for c in classes],
        "numStages": len(entries),
        "stages": entries,
        "describes": dict(describes or {}),
    }
    if calibration is not None:
        sent, labels = calibration
        f = root / "calibration.npz"
        if image is not None:
            np.savez_compressed(f, pixels=sent, labels=labels.astype(np.int64))
        else:
            np.savez_compressed(f, inputs=sent, labels=labels.astype(np.int64))
        doc["calibration"] = {"file": f.name, "sha256": artefact.sha256_file(f)}
    if source is not None:
        f = root / "source.pt"
        shutil.copyfile(source, f)
        doc["source"] = {"file": f.name, "sha256": artefact.sha256_file(f)}
    artefact.write_manifest(root, doc)
    m = artefact.load(root)  # the reader's checks: shapes chain, range, calibration rows
    if calibration is not None:
        artefact.load_calibration(root, m)
    return m

"""Two runtimes for one artefact: ONNX Runtime (the images' default) and torch.

Both take and give numpy arrays, so everything around a stage (decoding, preprocessing,
the exit rule, the codec) is the same code whichever runs it.  The torch runtime rebuilds
the module from the checkpoint the artefact was exported from (its ``source``); it is for
development and for models that do not export, and needs torch installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from serflow_runtime import artefact

StageFn = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]

PARITY_TOLERANCE = 1e-4
"""How far the two runtimes may disagree, absolute, on a logit and on an exit's confidence:
float32 kernels sum in different orders (measured on the shipped model: under 1e-5).  A
request may leave at different exits only where its confidence is this close to tau."""


class Runtime(StrEnum):
    """What executes the stages."""

    ONNX = "onnx"
    """ONNX Runtime on the CPU, one session per stage."""
    TORCH = "torch"
    """Eager torch on the module the artefact was exported from."""


@dataclass
class ServedModel:
    """A verified artefact, ready to run stage by stage."""

    root: Path
    """The artefact folder."""
    manifest: artefact.Manifest
    """Its verified manifest."""
    runtime: Runtime
    """What runs the stages."""
    run_stage: StageFn
    """``(i, x) -> (hidden_i, logits_i)`` for stage i (1-based) on a batch ``x``."""

    @property
    def k(self) -> int:
        return self.manifest.num_stages

    @property
    def token(self) -> str:
        return self.manifest.token


def _onnx(root: Path, m: artefact.Manifest, threads: int) -> StageFn:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - the package depends on it
        raise artefact.ArtefactError(f"the onnx runtime needs onnxruntime: {e}") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # One session per stage, each with its own thread pool: a pool left spinning after its
    # stage competes with the next stage's for the cores (measured: at 2 threads a pass
    # took 2.2x its 1-thread time with spinning, 0.87x without; bench/results/runtime.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    sessions = []
    for i, st in enumerate(m.stages, start=1):
        try:
            s = ort.InferenceSession(
                str(root / st.file.file), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own types for a bad graph
            raise artefact.ArtefactError(f"stage {i} ({st.file.file}) does not load: {e}") from e
        names = [o.name for o in s.get_outputs()]
        if names != ["hidden", "logits"] or len(s.get_inputs()) != 1:
            raise artefact.ArtefactError(
                f"stage {i} ({st.file.file}) must take one input and give (hidden, logits), "
                f"gives {names}"
            )
        sessions.append((s, s.get_inputs()[0].name))
    # Stage 1 takes the model's input dtype; every later stage float32 activations.
    dtypes = [m.input.numpy_dtype.newbyteorder("="), *[np.dtype(np.float32)] * (m.num_stages - 1)]

    def run(i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, name = sessions[i - 1]
        h, lg = s.run(None, {name: np.ascontiguousarray(x, dtype=dtypes[i - 1])})
        return h, lg

    return run


def _torch(root: Path, m: artefact.Manifest, threads: int) -> StageFn:
    if m.source is None:
        raise artefact.ArtefactError(
            f"artefact {m.name} has no source checkpoint: the torch runtime cannot run it"
        )
    try:
        import torch
    except ImportError:
        raise artefact.ArtefactError("the torch runtime needs torch installed") from None
    from serflow_runtime import checkpoint

    module = checkpoint.load(root / m.source.file).model
    if len(module.partitions) != m.num_stages:
        raise artefact.ArtefactError(
            f"source checkpoint has {len(module.partitions)} stages, the manifest {m.num_stages}"
        )
    if threads:
        torch.set_num_threads(threads)

    def run(i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            h, lg = module.part(i)(torch.from_numpy(np.ascontiguousarray(x)))
        return h.numpy(), lg.numpy()

    return run


def open_model(
    root: str | Path,
    runtime: Runtime | str = Runtime.ONNX,
    threads: int = 0,
    expect_digest: str | None = None,
) -> ServedModel:
    """Verify the artefact at ``root`` (a path, or a shipped artefact's name) and prepare
    ``runtime`` to run it."""
    root = artefact.resolve(root)
    m = artefact.load(root, expect_digest)
    rt = Runtime(runtime)
    run = _onnx(root, m, threads) if rt is Runtime.ONNX else _torch(root, m, threads)
    return ServedModel(root, m, rt, run)

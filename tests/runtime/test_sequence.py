"""The sequence model (``serflow_runtime.sequence``): a byte-level transformer with an
exit after each layer, trained on the dialog statements chatterbot-corpus ships in its
wheel to tell their language.

The corpus loader is deterministic and gives exactly the shipped calibration set; a
short training run exports stages whose ONNX outputs match torch; the shipped artefact
loads, and ONNX Runtime on its calibration set gives the accuracy per exit its manifest
states.  The last test needs only numpy and ONNX Runtime (what serves); the others need
torch and the pinned corpus (the ``datasets`` extra)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from serflow_runtime import artefact

NAME = "seq-chatterbot-langid-transformer"
SHIPPED = artefact.SHIPPED / NAME


def _sequence() -> ModuleType:
    """The module (needs torch) with its pinned corpus installed, or a skip."""
    pytest.importorskip("torch", reason="the sequence model's training side needs torch")
    from serflow_runtime import data, sequence

    try:
        sequence.corpus_dir()
    except data.DataMissingError as e:
        pytest.skip(f"the pinned corpus is not installed: {e}")
    return sequence


def _sessions(root: Path, m: artefact.Manifest) -> list[Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return [
        ort.InferenceSession(
            str(root / st.file.file), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        for st in m.stages
    ]


def _run_all(sessions: list[Any], x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every stage in order on x (no exit taken): each stage's (hidden, logits)."""
    outs = []
    h = x
    for s in sessions:
        h, lg = s.run(None, {s.get_inputs()[0].name: h})
        outs.append((h, lg))
    return outs


def test_loader_is_deterministic_and_is_the_shipped_calibration_set() -> None:
    seq = _sequence()
    a, b = seq.read_corpus(), seq.read_corpus()
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    assert a.version == seq.CORPUS_VERSION and len(a.languages) >= 2
    counts = np.bincount(a.labels)
    assert counts.min() >= seq.MIN_ROWS
    # No statement (as the model sees it) under two labels or twice.
    ids = seq.encode(a.texts)
    assert len({r.tobytes() for r in ids}) == len(a.texts)
    tr, va = seq.split(a.labels, seed=0)
    tr2, va2 = seq.split(a.labels, seed=0)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not set(tr.tolist()) & set(va.tolist()) and tr.size + va.size == a.labels.size
    # Stratified: each language keeps its share in the held-out split.
    share = np.bincount(a.labels[va], minlength=counts.size) / counts
    assert np.all(np.abs(share - seq.VAL_FRACTION) < 0.02)
    assert not np.array_equal(seq.split(a.labels, seed=1)[1], va)
    # The shipped artefact's calibration set is this loader's held-out split, as sent.
    m = artefact.load(SHIPPED)
    cal = artefact.load_calibration(SHIPPED, m)
    d = seq.load(seed=0)
    assert m.classes == d.classes
    assert np.array_equal(cal.inputs, d.x_val.numpy()) and np.array_equal(cal.labels, d.y_val)


def test_encode_is_utf8_bytes_shifted_by_one() -> None:
    seq = _sequence()
    ids = seq.encode(["Hé", "", "x" * 100])
    assert ids.dtype == np.int64 and ids.shape == (3, seq.SEQ_LEN)
    assert ids[0, :4].tolist() == [ord("H") + 1, 0xC3 + 1, 0xA9 + 1, 0]
    assert not ids[1].any() and (ids[2] == ord("x") + 1).all()
    assert seq.decode(ids[0]) == "Hé"
    assert int(ids.max()) <= seq.VOCAB - 1


def test_short_training_exports_stages_that_match_torch(tmp_path: Path) -> None:
    seq = _sequence()
    import torch

    d = seq.load(seed=0)
    d.x_train, d.y_train = d.x_train[:512], d.y_train[:512]
    torch.manual_seed(0)
    arch = seq.SeqArch(num_classes=len(d.classes), d_model=16, layers=3, heads=2, ff=32)
    model = seq.build(arch)
    cfg = seq.SeqTrainConfig(epochs=1, batch=64, seed=0, threads=1, max_steps=4)
    acc = seq.train(model, d, cfg, log=lambda _: None)
    assert len(acc) == arch.layers == len(model.stages())
    m = seq.export_artefact(model, d, tmp_path / "a", name="seq-test")
    assert m.num_stages == 3 and m.input.dtype == "int64" and m.input.name == "tokens"
    assert m.input.shape == (seq.SEQ_LEN,) and m.input.value_range == (0, seq.VOCAB - 1)
    assert m.input.image is None and m.classes == d.classes
    assert m.cut_shape(1) == (seq.SEQ_LEN, arch.d_model + 1)
    # A batch of another size than the export's example (the batch axis is dynamic),
    # with an all-padding row.
    x = d.x_val[:7].clone()
    x[3] = 0
    outs = _run_all(_sessions(tmp_path / "a", m), x.numpy())
    h = x
    with torch.inference_mode():
        for stage, (oh, olg) in zip(model.stages(), outs, strict=True):
            h, lg = stage(h)
            np.testing.assert_allclose(oh, h.numpy(), rtol=0, atol=1e-4)
            np.testing.assert_allclose(olg, lg.numpy(), rtol=0, atol=1e-4)
    assert all(np.isfinite(lg).all() for _, lg in outs)


def test_shipped_artefact_accuracy_per_exit_is_what_it_describes() -> None:
    pytest.importorskip("onnxruntime", reason="running the artefact needs onnxruntime")
    m = artefact.load(SHIPPED)
    assert m.name == NAME and m.input.dtype == "int64" and m.input.image is None
    assert m.num_stages == m.describes["layers"] >= 4
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 2 * 1024 * 1024, f"the artefact is {size} bytes"
    x, y = artefact.held_out(SHIPPED, m)
    assert x.shape == (m.describes["dataset"]["heldOutRows"], *m.input.shape)
    sessions = _sessions(SHIPPED, m)
    correct = np.zeros(m.num_stages)
    for s in range(0, x.shape[0], 512):
        for i, (_, lg) in enumerate(_run_all(sessions, x[s : s + 512])):
            correct[i] += int((lg.argmax(axis=1) == y[s : s + 512]).sum())
    acc = correct / x.shape[0]
    stated = np.asarray(m.describes["valAccuracyPerExit"])
    # torch measured it; ONNX Runtime sums floats in other orders: at most a row's tie.
    assert np.all(np.abs(acc - stated) <= 1.0 / x.shape[0] + 1e-9), (acc, stated)


def test_train_sequence_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reproduces the artefact through ``sequence.reproduce`` (stubbed here:
    the real run takes minutes), and a missing corpus is one line and exit 2."""
    seq = _sequence()
    from serflow_runtime import data
    from serflow_runtime.cli import main as cli_main

    calls: list[tuple[Any, ...]] = []
    shipped = artefact.load(SHIPPED)

    def fake(out: Any, *, seed: int, epochs: int, threads: int) -> artefact.Manifest:
        calls.append((str(out), seed, epochs, threads))
        return shipped

    monkeypatch.setattr(seq, "reproduce", fake)
    out = str(tmp_path / "a")
    assert cli_main(["train-sequence", "--out", out, "--epochs", "3", "--threads", "1"]) == 0
    assert calls == [(out, 0, 3, 1)]

    def missing(*_: Any, **__: Any) -> artefact.Manifest:
        raise data.DataMissingError("chatterbot-corpus is not installed")

    monkeypatch.setattr(seq, "reproduce", missing)
    assert cli_main(["train-sequence", "--out", out]) == 2

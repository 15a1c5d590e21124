"""The artefact: export, verification, bad artefacts refused in one line, and the two
runtimes giving one answer on the held-out split."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serflow_runtime import artefact
from serflow_runtime.cli import main as cli_main
from serflow_runtime.engine import confidence, run_all
from serflow_runtime.runtimes import PARITY_TOLERANCE, ServedModel, open_model

from .conftest import Split, all_logits


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / "art"
    shutil.copytree(src, dst)
    return dst


def _doc(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / artefact.MANIFEST).read_text()))


def _reseal(root: Path, doc: dict[str, Any]) -> None:
    """Write an edited manifest with a correct digest: only the edit is wrong."""
    artefact.write_manifest(root, doc)


def _drop_stage_file(root: Path) -> None:
    (root / "stage-3.onnx").unlink()


def _alter_stage_file(root: Path) -> None:
    with (root / "stage-2.onnx").open("ab") as f:
        f.write(b"\0")


def _alter_manifest(root: Path) -> None:
    doc = _doc(root)
    doc["name"] = "someone-else"
    (root / artefact.MANIFEST).write_text(json.dumps(doc))


def _stage_count(root: Path) -> None:
    doc = _doc(root)
    doc["numStages"] = 6
    _reseal(root, doc)


def _shape_chain(root: Path) -> None:
    doc = _doc(root)
    doc["stages"][3]["input"] = [64, 4, 4]  # stage 3 gives [64, 8, 8]
    _reseal(root, doc)


def _not_a_graph(root: Path) -> None:
    (root / "stage-4.onnx").write_bytes(b"not an onnx graph")
    doc = _doc(root)
    doc["stages"][3]["sha256"] = artefact.sha256_file(root / "stage-4.onnx")
    _reseal(root, doc)


def _escape(root: Path) -> None:
    doc = _doc(root)
    doc["stages"][0]["file"] = "../stage-1.onnx"
    _reseal(root, doc)


def _no_manifest(root: Path) -> None:
    (root / artefact.MANIFEST).unlink()


BAD: list[tuple[str, Callable[[Path], None], str]] = [
    ("missing file", _drop_stage_file, r"stages\[3\]\.file stage-3\.onnx is missing"),
    ("file digest", _alter_stage_file, r"stages\[2\]\.file stage-2\.onnx has sha256 .* says"),
    ("manifest digest", _alter_manifest, "digest .* does not match its content"),
    ("stage count", _stage_count, "numStages=6 but lists 7 stages"),
    ("shape chain", _shape_chain, r"stages\[4\] takes input \[64, 4, 4\] but stage 3 outputs \[64, 8, 8\]"),
    ("not a graph", _not_a_graph, r"stage 4 \(stage-4\.onnx\) does not load"),
    ("path escape", _escape, "must stay inside the artefact"),
    ("no manifest", _no_manifest, "not a serflow artefact: manifest.json is missing"),
]


@pytest.mark.parametrize(("what", "spoil", "problem"), BAD, ids=[b[0] for b in BAD])
def test_bad_artefact_refused_in_one_line(
    tmp_path: Path,
    artefact_path: Path,
    capsys: pytest.CaptureFixture[str],
    what: str,
    spoil: Callable[[Path], None],
    problem: str,
) -> None:
    """Each server refuses to start on a spoiled artefact: exit 2, one line naming it."""
    root = _copy(artefact_path, tmp_path)
    spoil(root)
    for server in ("worker", "function"):
        assert cli_main([server, "--artefact", str(root), "--port", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert re.search(problem, err), err


def test_digest_pin_refuses_another_artefact(
    artefact_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["function", "--artefact", str(artefact_path), "--digest", "0" * 64]) == 2
    assert "expected 000000000000..." in capsys.readouterr().err


def test_digest_covers_every_file(served: ServedModel) -> None:
    """The digest is the manifest's canonical JSON, which holds every file's sha256."""
    m = served.manifest
    doc = _doc(served.root)
    assert doc["digest"] == m.digest == artefact.digest_of(doc)
    files = [s["file"] for s in doc["stages"]] + [doc["calibration"]["file"], doc["source"]["file"]]
    for f in files:
        assert f in json.dumps(doc)
    assert m.token == f"{m.name}/{m.digest}"
    assert m.num_stages == 7 and m.input.shape == (3, 32, 32)
    assert [m.input_shape_of(i + 1) for i in range(1, 7)] == [m.cut_shape(i) for i in range(1, 7)]


# -- two runtimes, one answer ---------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_model(artefact_path: Path) -> ServedModel:
    pytest.importorskip("torch", reason="the torch runtime needs torch (the images carry none)")
    return open_model(artefact_path, "torch", threads=1)


def test_runtimes_agree_on_logits(
    served: ServedModel, torch_model: ServedModel, digits: Split
) -> None:
    a, b = all_logits(served, digits.x_val), all_logits(torch_model, digits.x_val)
    for i, (la, lb) in enumerate(zip(a, b, strict=True), start=1):
        assert la.shape == lb.shape
        assert float(np.abs(la - lb).max()) <= PARITY_TOLERANCE, f"stage {i}"


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.85, 0.95, 0.99])
def test_runtimes_agree_on_classes_and_exits(
    served: ServedModel, torch_model: ServedModel, digits: Split, tau: float
) -> None:
    """Same class and exit for every held-out image; an exit may differ only where the
    confidence lies within the tolerance of tau (counted, and none here)."""
    ra, rb = run_all(served, digits.x_val, tau), run_all(torch_model, digits.x_val, tau)
    ea = {e.row: e for e in ra.exits}
    eb = {e.row: e for e in rb.exits}
    assert set(ea) == set(eb) == set(range(digits.x_val.shape[0]))
    logits = all_logits(served, digits.x_val)
    near = 0
    for row, x in ea.items():
        y = eb[row]
        if (x.exit, x.cls) != (y.exit, y.cls):
            first = min(x.exit, y.exit)
            c = float(confidence(logits[first - 1][row : row + 1])[0])
            assert abs(c - tau) <= PARITY_TOLERANCE, (row, x, y, c)
            near += 1
        else:
            assert abs(x.confidence - y.confidence) <= PARITY_TOLERANCE
    assert near == 0  # measured: no held-out image lies that close to these taus


# -- export ------------------------------------------------------------------------------


def test_export_writes_a_verified_artefact(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="export needs torch")
    from serflow_runtime import checkpoint, export
    from serflow_runtime.model import build

    torch.manual_seed(0)
    model = build(0.125, (3, 8)).eval()
    ckpt = tmp_path / "m.pt"
    checkpoint.save(ckpt, model, (0.5,) * 3, (0.25,) * 3)
    px = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(20) % 10
    image = artefact.ImagePreprocessing((0.5,) * 3, (0.25,) * 3)
    m = export.export_network(
        list(model.partitions),
        tmp_path / "out",
        name="tiny",
        example=torch.zeros((2, 3, 32, 32)),
        image=image,
        classes=[str(i) for i in range(10)],
        calibration=(px, labels),
        source=ckpt,
        describes=model.arch.to_dict(),
    )
    assert m.num_stages == 3
    import onnx

    for st in m.stages:  # no provenance of the exporting machine (stack traces, paths)
        graph = onnx.load(str(tmp_path / "out" / st.file.file)).graph
        assert not any(n.metadata_props or n.doc_string for n in graph.node)
    assert [s.hidden_shape for s in m.stages[:2]] == [model.cut_shape(1), model.cut_shape(2)]
    cal = artefact.load_calibration(tmp_path / "out", m)
    assert np.array_equal(cal.inputs, px) and cal.labels.tolist() == labels.tolist()
    x = artefact.preprocess(px, m.input)
    onnx_model = open_model(tmp_path / "out", "onnx", 1)
    torch_model = open_model(tmp_path / "out", "torch", 1)
    for la, lb in zip(all_logits(onnx_model, x), all_logits(torch_model, x), strict=True):
        assert float(np.abs(la - lb).max()) <= PARITY_TOLERANCE
    with pytest.raises(artefact.ArtefactError, match="not empty"):
        export.export_network(list(model.partitions), tmp_path / "out", name="again",
                              example=torch.zeros((2, 3, 32, 32)), image=image,
                              classes=[str(i) for i in range(10)])  # fmt: skip


def test_cli_export_refuses_a_missing_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch", reason="export needs torch")
    rc = cli_main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err

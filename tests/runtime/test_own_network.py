"""A network of the user's own, defined here: exported with ``export_network`` and served
by the worker and function processes like the shipped models.

Its input is not an image: a sequence of int64 token ids (an embedding, then one exit
after each layer), so the manifest's dtype, range and ``none`` preprocessing are what the
servers, the codec and the Open Inference Protocol must follow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from serflow_runtime import artefact, codec
from serflow_runtime.runtimes import ServedModel, open_model

from .conftest import Proc, Servers, http, http_json, reference, wait_ready

torch = pytest.importorskip("torch", reason="exporting a network needs torch")
nn = torch.nn

VOCAB, LENGTH, WIDTH, CLASSES = 50, 12, 16, ("neg", "neutral", "pos")


class Embed(nn.Module):  # type: ignore[misc]
    """Stage 1: token ids to a mean-pooled embedding, and its exit."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.head = nn.Linear(WIDTH, len(CLASSES))

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(ids).mean(dim=1)
        return h, self.head(h)


class Layer(nn.Module):  # type: ignore[misc]
    """Stages 2..K: a residual MLP layer, and its exit."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh())
        self.head = nn.Linear(WIDTH, len(CLASSES))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = h + self.mlp(h)
        return h, self.head(h)


@dataclass
class Served:
    root: Path
    model: ServedModel
    ids: np.ndarray
    worker: Proc
    whole: Proc
    tau: float


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    torch.manual_seed(3)
    stages = [Embed(), Layer(), Layer()]
    rng = np.random.default_rng(3)
    ids = rng.integers(0, VOCAB, (60, LENGTH), dtype=np.int64)
    tmp = tmp_path_factory.mktemp("own")
    root = tmp / "tokens"
    m = artefact_export(stages, root, ids)
    assert m.input == artefact.InputSpec((LENGTH,), "int64", "tokens", (0, VOCAB - 1), None)
    model = open_model(root, "onnx", threads=1)
    # A tau the untrained heads pass for some rows and not others (every exit is taken),
    # in the widest gap between the middle rows' confidences: no row lies near it, where
    # batch-dependent float sums could tip it.
    conf = sorted(float(c) for c in _confidences(model, ids))
    mid = range(len(conf) // 4, 3 * len(conf) // 4)
    i = max(mid, key=lambda j: conf[j + 1] - conf[j])
    tau = (conf[i] + conf[i + 1]) / 2
    servers = Servers(tmp, root)
    try:
        tail = servers.function("own-tail", "2-K", tau)
        whole = servers.function("own-whole", "1-K", tau)
        wait_ready(tail)
        worker = servers.worker("own-worker", 1, [f"2-3={tail.url}"], tau, batch=8)
        for p in (worker, whole):
            wait_ready(p)
        yield Served(root, model, ids, worker, whole, tau)
    finally:
        servers.stop()


def artefact_export(stages: list[nn.Module], root: Path, ids: np.ndarray) -> artefact.Manifest:
    from serflow_runtime.export import export_network

    return export_network(
        stages,
        root,
        name="tokens",
        example=torch.from_numpy(ids[:4]),
        classes=CLASSES,
        calibration=(ids, np.arange(ids.shape[0]) % len(CLASSES)),
        input_name="tokens",
        input_range=(0, VOCAB - 1),
        describes={"architecture": "embedding-mlp", "note": "untrained, defined in a test"},
    )


def _confidences(model: ServedModel, ids: np.ndarray) -> np.ndarray:
    from serflow_runtime.engine import confidence

    _, lg = model.run_stage(1, ids)
    return confidence(lg)


def test_the_manifest_declares_the_input_and_the_rule(own: Served) -> None:
    doc = json.loads((own.root / artefact.MANIFEST).read_text())
    assert doc["input"] == {
        "name": "tokens",
        "dtype": "int64",
        "shape": [LENGTH],
        "range": [0, VOCAB - 1],
        "preprocessing": {"kind": "none"},
    }
    assert doc["exitRule"] == {"name": "max-softmax"} and doc["numStages"] == 3
    x, y = artefact.held_out(own.root, own.model.manifest)
    assert x.dtype == np.int64 and np.array_equal(x, own.ids) and y.shape == (60,)


def test_raw_requests_answer_like_the_whole_network(own: Served) -> None:
    want = reference(own.model, own.ids, own.tau)
    assert len({e for e, _ in want}) == 3, "the test's tau takes every exit"
    for proc in (own.worker, own.whole):
        got = []
        for row in own.ids[:30]:
            code, ans = http_json("POST", proc.url + "/infer", row.astype("<i8").tobytes())
            assert code == 200, ans
            got.append((ans["exit"], ans["class"]))
        assert got == want[:30]


def test_oip_takes_int64_tokens_in_a_batch(own: Served) -> None:
    rows = own.ids[:5]
    body = {"inputs": [{"name": "tokens", "datatype": "INT64", "shape": [5, LENGTH],
                        "data": rows.flatten().tolist()}]}  # fmt: skip
    code, meta = http_json("GET", own.worker.url + "/v2/models/tokens")
    assert code == 200
    assert meta["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": [-1, LENGTH]}]
    code, ans = http_json(
        "POST", own.worker.url + "/v2/models/tokens/infer", json.dumps(body).encode(),
        ctype="application/json",
    )  # fmt: skip
    assert code == 200, ans
    out = {o["name"]: o["data"] for o in ans["outputs"]}
    assert list(zip(out["exit"], out["class"], strict=True)) == reference(own.model, rows, own.tau)


@pytest.mark.parametrize(
    ("make", "problem", "status"),
    [
        (lambda r: np.full(LENGTH, VOCAB, "<i8").tobytes(), f"outside the model's range 0..{VOCAB - 1}", 400),
        (lambda r: np.full(LENGTH, -1, "<i8").tobytes(), "outside the model's range", 400),
        (lambda r: r.astype("<f4").tobytes(), f"{LENGTH * 8} bytes (int64 {LENGTH})", 400),
    ],
)  # fmt: skip
def test_bad_tokens_are_refused_one_by_one(own: Served, make, problem: str, status: int) -> None:  # type: ignore[no-untyped-def]
    """A token outside the vocabulary would fail ONNX Runtime's gather for the whole
    batch; the server refuses that request alone, before it is batched."""
    code, body = http("POST", own.worker.url + "/infer", make(own.ids[0]))
    assert code == status and problem in json.loads(body)["error"]
    code, ans = http_json("POST", own.worker.url + "/infer", own.ids[0].astype("<i8").tobytes())
    assert code == 200, ans  # and it goes on serving


def test_oip_refuses_a_wrong_datatype_or_value_naming_the_tensor(own: Served) -> None:
    url = own.worker.url + "/v2/models/tokens/infer"
    for t, problem in (
        ({"datatype": "FP32", "data": [0.0] * LENGTH}, "has datatype 'FP32'; the model takes INT64"),
        ({"datatype": "INT64", "data": [0.5] * LENGTH}, "must be integers for INT64"),
        ({"datatype": "INT64", "data": [VOCAB] * LENGTH}, "'tokens' holds 50, outside"),
    ):  # fmt: skip
        body = {"inputs": [{"name": "tokens", "shape": [1, LENGTH], **t}]}
        code, ans = http_json("POST", url, json.dumps(body).encode(), ctype="application/json")
        assert code == 400 and problem in ans["error"], ans


def test_a_png_is_refused_for_a_model_that_takes_no_image(own: Served) -> None:
    png = codec.encode_png(np.zeros((8, 8, 3), np.uint8))
    code, body = http("POST", own.whole.url + "/infer", png, ctype="image/png")
    assert code == 415 and "application/octet-stream" in json.loads(body)["error"]


def test_the_readme_example_exports_profiles_and_plans(tmp_path: Path) -> None:
    """README "Serve your own model": examples/own_model.py, then the profile command on
    what it wrote, then the plan, as a user runs them."""
    import subprocess
    import sys

    from serflow.cli import main as serflow_main
    from serflow_runtime.cli import main as runtime_main

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "my-model"
    run = subprocess.run(
        [sys.executable, str(repo / "examples" / "own_model.py"), str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    m = artefact.load(out)
    assert (m.input.dtype, m.input.shape, m.input.name, m.input.image) == (
        "float32", (13,), "measurements", None
    )
    assert m.num_stages == 3 and m.classes == ("class_0", "class_1", "class_2")
    profile = tmp_path / "my-model.yaml"
    assert runtime_main(["profile", "--artefact", str(out), "--config", "c6i.large",
                         "--config", "fn-2048", "--out", str(profile)]) == 0  # fmt: skip
    doc = yaml_load(profile)
    assert doc["profile"]["fingerprint"]["stages"] == 3
    assert doc["profile"]["fingerprint"]["artefactDigest"] == m.digest
    assert serflow_main(["plan", "-f", str(profile)]) == 0


def yaml_load(path: Path) -> dict[str, object]:
    import yaml

    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc

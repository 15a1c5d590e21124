"""Checkpoints (architecture carried, mismatch refused), data sets, training, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from serflow_runtime import checkpoint, data  # noqa: E402
from serflow_runtime.cli import main as cli_main  # noqa: E402
from serflow_runtime.model import Arch, build  # noqa: E402
from serflow_runtime.train import TrainConfig, evaluate, train  # noqa: E402


@pytest.fixture(scope="module")
def digits_data() -> data.Dataset:
    """The training data set itself (the servers' tests use the artefact's copy)."""
    return data.digits(seed=0)


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip(tmp_path: Path, half: bool) -> None:
    torch.manual_seed(1)
    m = build(0.125, (2, 5)).eval()
    p = tmp_path / "m.pt"
    sha = checkpoint.save(p, m, (0.1, 0.2, 0.3), (1.0, 1.0, 1.0), {"seed": 1}, half=half)
    ld = checkpoint.load(p)
    assert ld.sha256 == sha == checkpoint.sha256_file(p)
    assert ld.arch == m.arch and ld.mean == (0.1, 0.2, 0.3) and ld.meta == {"seed": 1}
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        a, b = m(x), ld.model(x)
    tol = 5e-2 if half else 0.0
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)
    assert ld.arch.to_dict()["exits"] == [2, 5] and ld.sha256 == sha


@pytest.mark.parametrize(
    "expect",
    [Arch(width=0.25, exits=(2, 5)), Arch(width=0.125, exits=(2, 4)), Arch(0.125, (2, 5), 100)],
)
def test_mismatched_checkpoint_refused(tmp_path: Path, expect: Arch) -> None:
    p = tmp_path / "m.pt"
    checkpoint.save(p, build(0.125, (2, 5)), (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(checkpoint.CheckpointError, match="was expected"):
        checkpoint.load(p, expect=expect)


def test_checkpoint_whose_weights_do_not_fit_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.pt"
    checkpoint.save(p, build(0.125, (2, 5)), (0.0,) * 3, (1.0,) * 3)
    payload = torch.load(p, weights_only=True)
    payload["arch"]["exits"] = [3, 5]  # claims another IC placement than its weights
    torch.save(payload, p)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit"):
        checkpoint.load(p)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_refused(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(p)


def test_digest_differs_between_checkpoints(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.manual_seed(1)
    checkpoint.save(a, build(0.125), (0.0,) * 3, (1.0,) * 3)
    torch.manual_seed(2)
    checkpoint.save(b, build(0.125), (0.0,) * 3, (1.0,) * 3)
    assert checkpoint.load(a).sha256 != checkpoint.load(b).sha256


def test_digits_split_is_held_out_and_fixed(digits_data: data.Dataset) -> None:
    digits = digits_data
    assert digits.x_train.shape[1:] == (3, 32, 32)
    assert digits.x_train.shape[0] + digits.x_val.shape[0] == 1797
    # grey replicated to three channels
    assert torch.equal(digits.x_val[:, 0], digits.x_val[:, 1])
    again = data.digits(seed=0)
    assert torch.equal(again.x_val, digits.x_val)
    # no validation image is also a training image
    tr = {bytes(r.numpy().tobytes()) for r in digits.x_train[:, 0]}
    dup = sum(bytes(r.numpy().tobytes()) in tr for r in digits.x_val[:, 0])
    assert dup <= 2  # digits has a couple of identical images; a leak would be hundreds


def test_cifar10_missing_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(data.DataMissingError, match=r"data_batch_1.*Downloads are disabled"):
        data.cifar10(tmp_path)


def test_cli_train_cifar_without_files_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.pt"),
        ]
    )
    assert rc == 2
    assert "CIFAR-10 files missing" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_training_learns(digits_data: data.Dataset) -> None:
    digits = digits_data
    """Joint training fits a small training set (the shipped checkpoint shows generalisation)."""
    torch.manual_seed(0)
    n = 96
    small = data.Dataset(
        "digits-sub",
        digits.x_train[:n],
        digits.y_train[:n],
        digits.x_train[:n],
        digits.y_train[:n],
        digits.mean,
        digits.std,
    )
    m = build(0.125, (4,))
    before = evaluate(m, small.x_val, small.y_val)
    after = train(m, small, TrainConfig(epochs=10, batch=32, lr=5e-3), log=lambda s: None)
    assert max(after) > 0.5 and max(after) > max(before) + 0.3, (before, after)

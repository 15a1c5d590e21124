"""Data sets: scikit-learn's digits (ships in the wheel) and CIFAR-10 from local files.

Nothing is ever downloaded at run time: CIFAR-10 is read from ``--data-dir`` (the
python version, ``cifar-10-batches-py``) and a missing file is a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class DataMissingError(FileNotFoundError):
    pass


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, 3, 32, 32) float32, normalised
    y_train: torch.Tensor
    x_val: torch.Tensor  # held out: never used for training
    y_val: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


def digits_pixels(images: np.ndarray) -> torch.Tensor:
    """8x8 digits (0..16) to 3x32x32 in [0, 1]: bilinear upsampling, grey replicated."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).view(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()


def digits(seed: int = 0, val_fraction: float = 0.25) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    xtr, xva, ytr, yva = train_test_split(
        d.images, d.target, test_size=val_fraction, random_state=seed, stratify=d.target
    )
    xt, xv = digits_pixels(xtr), digits_pixels(xva)
    mean = tuple(float(v) for v in xt.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in xt.std(dim=(0, 2, 3)))
    return Dataset(
        "digits",
        _normalise(xt, mean, std),
        torch.as_tensor(ytr, dtype=torch.long),
        _normalise(xv, mean, std),
        torch.as_tensor(yva, dtype=torch.long),
        mean,
        std,
    )


def cifar10(data_dir: str | Path) -> Dataset:
    """CIFAR-10 from local files; the official test batch is the held-out split."""
    root = Path(data_dir)
    missing = [f for f in CIFAR_FILES if not (root / CIFAR_DIR / f).is_file()]
    if missing:
        raise DataMissingError(
            f"CIFAR-10 files missing under {root / CIFAR_DIR}: {', '.join(missing)}. "
            "Downloads are disabled at run time: unpack cifar-10-python.tar.gz into "
            "--data-dir, or train on --dataset digits."
        )
    from torchvision.datasets import CIFAR10

    def part(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = CIFAR10(str(root), train=train, download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255.0
        return _normalise(x, CIFAR_MEAN, CIFAR_STD), torch.as_tensor(ds.targets)

    xt, yt = part(True)
    xv, yv = part(False)
    return Dataset("cifar10", xt, yt, xv, yv, CIFAR_MEAN, CIFAR_STD)


def load(name: str, data_dir: str | Path | None = None, seed: int = 0) -> Dataset:
    if name == "digits":
        return digits(seed=seed)
    if name == "cifar10":
        if data_dir is None:
            raise DataMissingError("--data-dir is required for cifar10")
        return cifar10(data_dir)
    raise ValueError(f"unknown dataset {name!r} (digits or cifar10)")

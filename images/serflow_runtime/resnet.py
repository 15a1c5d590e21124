"""A residual early-exit network for 32x32 input: a second architecture of the contract.

Different in kind from the VGG: identity shortcuts around pairs of 3x3 convolutions,
stride-2 downsampling inside blocks (a 1x1 projection on the shortcut), and exits that
pool globally.  Four groups of two basic blocks (16, 32, 64, 128 channels times
``width``; 32, 16, 8, 4 pixels), after a 3x3 stem.  An exit after each of the first
three groups (global average pooling, then one linear layer); the last stage ends in the
final classifier (the same head).  Stage i is group i (the stem rides with group 1) and
its head: it maps the previous hidden tensor to (hidden_i, logits_i), as the contract
asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from serflow_runtime.model import StagedNetwork, check_arch

ARCHITECTURE = "resnet_ee"
GROUP_CHANNELS: tuple[int, ...] = (16, 32, 64, 128)
BLOCKS_PER_GROUP = 2
INPUT_SHAPE: tuple[int, int, int] = (3, 32, 32)


@dataclass(frozen=True)
class ResArch:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    width: float = 1.0
    num_classes: int = 10
    architecture: str = ARCHITECTURE
    input_shape: tuple[int, int, int] = field(default=INPUT_SHAPE)

    def __post_init__(self) -> None:
        check_arch(self.architecture, ARCHITECTURE, self.width, self.num_classes)

    @property
    def num_partitions(self) -> int:
        return len(GROUP_CHANNELS)

    @property
    def exits(self) -> tuple[int, ...]:
        """The groups followed by an internal exit (for the profile's fingerprint)."""
        return tuple(range(1, len(GROUP_CHANNELS)))

    def channels(self) -> list[int]:
        return [max(1, round(c * self.width)) for c in GROUP_CHANNELS]

    def to_dict(self) -> dict[str, object]:
        return {
            "architecture": self.architecture,
            "width": self.width,
            "exits": list(self.exits),
            "numClasses": self.num_classes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ResArch:
        return cls(
            width=float(d["width"]),  # type: ignore[arg-type]
            num_classes=int(d["numClasses"]),  # type: ignore[call-overload]
            architecture=str(d["architecture"]),
        )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + self.shortcut(x))


class PooledHead(nn.Module):
    """Global average pooling, then one linear layer."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]


class Stage(nn.Module):
    """A group of blocks and its head; returns (hidden, logits)."""

    def __init__(self, body: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.head(h)


class EarlyExitResNet(StagedNetwork):
    """The network as an ``nn.ModuleList`` of stages; ``forward`` returns all K logits."""

    def __init__(self, arch: ResArch) -> None:
        super().__init__()
        self.arch = arch
        ch = arch.channels()
        stages: list[Stage] = []
        cin = arch.input_shape[0]
        for g, cout in enumerate(ch):
            layers: list[nn.Module] = []
            if g == 0:  # the stem
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                           nn.ReLU(inplace=True)]  # fmt: skip
                cin = cout
            for b in range(BLOCKS_PER_GROUP):
                stride = 2 if g > 0 and b == 0 else 1
                layers.append(BasicBlock(cin, cout, stride))
                cin = cout
            stages.append(Stage(nn.Sequential(*layers), PooledHead(cout, arch.num_classes)))
        self.partitions = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def part(self, i: int) -> Stage:
        """Stage ``i`` (1-based)."""
        p = self.partitions[i - 1]
        assert isinstance(p, Stage)
        return p

    def cut_shape(self, after: int) -> tuple[int, int, int]:
        """Shape (C, H, W) of one request's hidden tensor after stage ``after``."""
        return (self.arch.channels()[after - 1], 32 >> (after - 1), 32 >> (after - 1))


def build(width: float = 1.0, num_classes: int = 10) -> EarlyExitResNet:
    return EarlyExitResNet(ResArch(width=width, num_classes=num_classes))

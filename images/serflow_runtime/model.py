"""VGG-16-BN with internal classifiers (Shallow-Deep Networks style) for 32x32 input.

DESIGN.md section 3: 13 conv blocks, 2x2 max pool after blocks 2, 4, 7, 10, 13, then
FC 512-512-classes.  Internal classifiers (ICs) sit after the blocks named in
``exits`` (default 2, 4, 6, 7, 9, 10).  Partition i holds the blocks after exit i-1 up
to exit i plus the classifier of exit i; the last partition ends in the final classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

ARCHITECTURE = "vgg16_bn"
CHANNELS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
POOL_AFTER: frozenset[int] = frozenset({2, 4, 7, 10, 13})
DEFAULT_EXITS: tuple[int, ...] = (2, 4, 6, 7, 9, 10)
# The SERFLOW authors' placement: after each of the first ten blocks (11 exits).
PAPER_EXITS: tuple[int, ...] = tuple(range(1, 11))
INPUT_SHAPE: tuple[int, int, int] = (3, 32, 32)
IC_MAP = 4  # ICs pool down to at most IC_MAP x IC_MAP before their linear layer


def check_arch(architecture: str, expected: str, width: float, num_classes: int) -> None:
    """What every trainable network's description must hold (ValueError otherwise)."""
    if architecture != expected:
        raise ValueError(f"unknown architecture {architecture!r}")
    if not 0 < width <= 4:
        raise ValueError(f"width multiplier must be in (0, 4], got {width}")
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2")


@dataclass(frozen=True)
class Arch:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    width: float = 1.0
    exits: tuple[int, ...] = DEFAULT_EXITS
    num_classes: int = 10
    architecture: str = ARCHITECTURE
    input_shape: tuple[int, int, int] = field(default=INPUT_SHAPE)

    def __post_init__(self) -> None:
        check_arch(self.architecture, ARCHITECTURE, self.width, self.num_classes)
        ex = tuple(self.exits)
        if list(ex) != sorted(set(ex)) or any(not 1 <= b <= 12 for b in ex):
            raise ValueError(f"exits must be strictly increasing block numbers in 1..12: {ex}")

    @property
    def num_partitions(self) -> int:
        return len(self.exits) + 1

    def channels(self) -> list[int]:
        return [max(1, round(c * self.width)) for c in CHANNELS]

    def hidden(self) -> int:
        return max(1, round(512 * self.width))

    def to_dict(self) -> dict[str, object]:
        return {
            "architecture": self.architecture,
            "width": self.width,
            "exits": list(self.exits),
            "numClasses": self.num_classes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Arch:
        exits = d["exits"]
        assert isinstance(exits, list)
        return cls(
            width=float(d["width"]),  # type: ignore[arg-type]
            exits=tuple(int(x) for x in exits),
            num_classes=int(d["numClasses"]),  # type: ignore[call-overload]
            architecture=str(d["architecture"]),
        )


def _map_size_after(block: int) -> int:
    """Spatial size of the feature map after ``block`` (1-based) for 32x32 input."""
    return 32 >> sum(1 for p in POOL_AFTER if p <= block)


class MixPool(nn.Module):
    """SDN's learned mix of max and average pooling: a*max + (1-a)*avg, a = sigmoid(w)."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.alpha)
        mx = nn.functional.max_pool2d(x, self.kernel)
        av = nn.functional.avg_pool2d(x, self.kernel)
        return a * mx + (1 - a) * av


class InternalClassifier(nn.Module):
    def __init__(self, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        kernel = max(1, size // IC_MAP)
        self.pool: nn.Module = MixPool(kernel) if kernel > 1 else nn.Identity()
        out = size // kernel
        self.linear = nn.Linear(channels * out * out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(x), 1))  # type: ignore[no-any-return]


def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Partition(nn.Module):
    """Blocks (first..last) followed by one classifier; returns (hidden, logits)."""

    def __init__(
        self, index: int, first: int, last: int, body: nn.Sequential, head: nn.Module
    ) -> None:
        super().__init__()
        self.index, self.first, self.last = index, first, last
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.head(h)


class FinalHead(nn.Module):
    def __init__(self, channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)  # type: ignore[no-any-return]


class StagedNetwork(nn.Module):
    """A torch module of the contract: ``partitions`` in order, each mapping the previous
    hidden tensor to (hidden, logits); ``forward`` returns all K logits."""

    partitions: nn.ModuleList

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return every_exit(self.partitions, x)


class EarlyExitVGG(StagedNetwork):
    """The network as an ``nn.ModuleList`` of partitions; ``forward`` returns all K logits."""

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        ch = arch.channels()
        bounds = [0, *arch.exits, len(CHANNELS)]
        parts: list[Partition] = []
        for i in range(arch.num_partitions):
            first, last = bounds[i] + 1, bounds[i + 1]
            body = nn.Sequential(
                *(
                    _block(ch[b - 2] if b > 1 else arch.input_shape[0], ch[b - 1], b in POOL_AFTER)
                    for b in range(first, last + 1)
                )
            )
            head: nn.Module
            if i < len(arch.exits):
                head = InternalClassifier(ch[last - 1], _map_size_after(last), arch.num_classes)
            else:
                head = FinalHead(ch[-1], arch.hidden(), arch.num_classes)
            parts.append(Partition(i + 1, first, last, body, head))
        self.partitions = nn.ModuleList(parts)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def part(self, i: int) -> Partition:
        """Partition ``i`` (1-based, as in DESIGN.md)."""
        p = self.partitions[i - 1]
        assert isinstance(p, Partition)
        return p

    def cut_shape(self, after: int) -> tuple[int, int, int]:
        """Shape (C, H, W) of one request's hidden tensor crossing the cut after partition ``after``."""
        last = self.part(after).last
        s = _map_size_after(last)
        return (self.arch.channels()[last - 1], s, s)


def every_exit(stages: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """All K logits: each stage takes the previous one's hidden tensor (the contract)."""
    logits = []
    for stage in stages:
        x, out = stage(x)
        logits.append(out)
    return logits


def build(
    width: float = 1.0, exits: Sequence[int] = DEFAULT_EXITS, num_classes: int = 10
) -> EarlyExitVGG:
    return EarlyExitVGG(Arch(width=width, exits=tuple(exits), num_classes=num_classes))

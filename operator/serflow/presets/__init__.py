"""Named profiles shipped with serflow, and the arithmetic that derived their numbers."""

from __future__ import annotations

import itertools
from importlib import resources

VGG16_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
"""Output channels of VGG-16's 13 conv blocks."""
VGG16_POOL_AFTER = (2, 4, 7, 10, 13)
"""2x2 max pooling follows these blocks."""
VGG16_FC = (512, 512, 10)
"""Fully connected layers after the last block (Shallow-Deep Networks' VGG-16 for 32x32)."""


def vgg16_block_macs(size: int = 32) -> list[int]:
    """Multiply-accumulates of each conv block (3x3 conv) for a size x size input."""
    macs, c_in, hw = [], 3, size
    for i, c_out in enumerate(VGG16_CHANNELS, start=1):
        macs.append(hw * hw * c_in * c_out * 9)
        c_in = c_out
        if i in VGG16_POOL_AFTER:
            hw //= 2
    return macs


def vgg16_fc_macs() -> int:
    dims = (VGG16_CHANNELS[-1], *VGG16_FC)
    return sum(a * b for a, b in itertools.pairwise(dims))


def vgg16_partition_shares(exits: tuple[int, ...]) -> list[float]:
    """Share of the network's MACs in each partition for ICs after the given blocks.

    Partition i holds the blocks after exit i-1 up to exit i; the last also holds the FC
    layers. Internal classifiers themselves are not counted (they are tiny).
    """
    blocks = vgg16_block_macs()
    bounds = (0, *exits, len(blocks))
    parts = [sum(blocks[a:b]) for a, b in itertools.pairwise(bounds)]
    parts[-1] += vgg16_fc_macs()
    total = sum(parts)
    return [p / total for p in parts]


def vgg16_activation_bytes(after_block: int, size: int = 32) -> int:
    """fp32 bytes of one image's hidden tensor after a block (pooling included)."""
    hw = size
    for i in range(1, after_block + 1):
        if i in VGG16_POOL_AFTER:
            hw //= 2
    return VGG16_CHANNELS[after_block - 1] * hw * hw * 4


def preset_text(name: str) -> str:
    """The YAML of a shipped preset (e.g. ``paper``)."""
    path = resources.files(__name__).joinpath(f"{name}.yaml")
    if not path.is_file():
        raise KeyError(name)
    return path.read_text()


def preset_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".yaml")
    )

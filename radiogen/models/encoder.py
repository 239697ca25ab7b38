"""Background encoder of the generator (paper Fig. 1a): strided convolutions with BN, one feature per scale."""

from __future__ import annotations

import torch
from torch import nn


def level_channels(base: int, maximum: int, depth: int) -> list[int]:
    """Channels at levels 0..depth (level k has resolution image_size / 2**k)."""
    return [min(base * 2**k, maximum) for k in range(depth + 1)]


class BackgroundEncoder(nn.Module):
    """x_b (B, 1, S, S) -> [features at S, S/2, ..., S/2**depth], finest first.

    Args:
        channels: channels per level, from `level_channels`; len = depth + 1.
    """

    def __init__(self, channels: list[int]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels[0]), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))
            for c_in, c_out in zip(channels[:-1], channels[1:]))

    def forward(self, background: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(background)]
        for block in self.down:
            feats.append(block(feats[-1]))  # (B, C_k, S/2**k, S/2**k)
        return feats

"""Building blocks shared by both generators: start of synthesis, upsampling, output head."""

from __future__ import annotations

import torch
from torch import nn


def squash(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Map to a probability in [0, 1]: sigmoid or (tanh + 1) / 2."""
    return torch.sigmoid(x) if kind == "sigmoid" else (torch.tanh(x) + 1) / 2


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    """conv3x3 (no bias: BN follows) + BN."""
    return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)]


class StyleToMap(nn.Module):
    """Start of synthesis: style (B, D) -> FC + BN + GLU -> (B, C, s, s).

    Args:
        style_dim: input vector size.
        channels: channels of the map.
        size: side of the map (image_size / 2**depth).
    """

    def __init__(self, style_dim: int, channels: int, size: int):
        super().__init__()
        self.shape = (channels, size, size)
        self.fc = nn.Linear(style_dim, 2 * channels * size * size, bias=False)
        self.bn = nn.BatchNorm1d(2 * channels * size * size)
        self.glu = nn.GLU(dim=1)

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        return self.glu(self.bn(self.fc(style))).view(-1, *self.shape)


class UpBlock(nn.Module):
    """Nearest x2, conv3x3 to 2*C_out, BN, GLU: (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Conv2d(c_in, 2 * c_out, 3, 1, 1, bias=False),
                                 nn.BatchNorm2d(2 * c_out), nn.GLU(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ImageMaskHead(nn.Module):
    """conv3x3 -> 2 channels: the image channel (tanh) and the mask channel (sigmoid or (tanh+1)/2)."""

    def __init__(self, channels: int, mask_activation: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2, 3, 1, 1)
        self.mask_activation = mask_activation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.conv(x).chunk(2, dim=1)  # (B, 2, H, W) -> 2 x (B, 1, H, W)
        return torch.tanh(image), squash(mask, self.mask_activation)

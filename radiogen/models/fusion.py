"""Fusion block (paper Sec. 2.2, Fig. 1b): fuse background feature, synthetic feature and gene style at one scale.

`FUSION_BLOCKS` maps the `generator.fusion` config value to its block: the paper's gating ("paper"),
an MC-GAN-style concatenation ("concat"), and gating without the "-" path ("additive").
"""

from __future__ import annotations

import torch
from torch import nn

from .adain import AdaIN
from .blocks import conv_bn, squash


class PaperFusion(nn.Module):
    """out = AdaIN(o * w, style) + bg * (1 - w), where [w, o] = split(conv-BN-conv-BN(h)).

    Args:
        channels: channels of both the background and the synthetic feature at this scale.
        style_dim: size of the style vector (gene code + noise).
        adain: "affine" or "off" (see AdaIN).
        weight_activation: "sigmoid" or "tanh" squashing of the weight map.
        minus_path: True = the paper's "-" path bg * (1 - w); False = bg added unsuppressed ("additive").
    """

    def __init__(self, channels: int, style_dim: int, adain: str, weight_activation: str, minus_path: bool = True):
        super().__init__()
        # Two conv+BN layers, the second doubling the channels (paper: "the channel number is doubled").
        self.encode = nn.Sequential(*conv_bn(channels, channels), nn.LeakyReLU(0.2), *conv_bn(channels, 2 * channels))
        self.adain = AdaIN(channels, style_dim, adain)
        self.weight_activation = weight_activation
        self.minus_path = minus_path

    def forward(self, synth: torch.Tensor, bg: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, obj = self.encode(synth).chunk(2, dim=1)  # (B, 2C, H, W) -> weight (B, C, H, W), obj (B, C, H, W)
        w = squash(w, self.weight_activation)
        plus = self.adain(obj * w, style)  # "+": object region, styled by the gene
        minus = bg * (1 - w) if self.minus_path else bg  # "-": background kept where no nodule
        return plus + minus, w


class ConcatFusion(nn.Module):
    """out = AdaIN(conv-BN-conv-BN([h, bg]), style): no weight map (MC-GAN-style concatenation).

    Args: as PaperFusion (weight_activation is unused).
    """

    def __init__(self, channels: int, style_dim: int, adain: str, weight_activation: str):
        super().__init__()
        self.encode = nn.Sequential(*conv_bn(2 * channels, channels), nn.LeakyReLU(0.2), *conv_bn(channels, channels))
        self.adain = AdaIN(channels, style_dim, adain)

    def forward(self, synth: torch.Tensor, bg: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.adain(self.encode(torch.cat([synth, bg], dim=1)), style), None  # (B, 2C, H, W) -> (B, C, H, W)


def _additive(channels: int, style_dim: int, adain: str, weight_activation: str) -> PaperFusion:
    return PaperFusion(channels, style_dim, adain, weight_activation, minus_path=False)


FUSION_BLOCKS = {"paper": PaperFusion, "concat": ConcatFusion, "additive": _additive}

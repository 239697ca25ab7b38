"""Fusion block (paper Sec. 2.2, Fig. 1b): fuse background feature, synthetic feature and gene style at one scale.

`FUSION_BLOCKS` maps the `generator.fusion` config value to its block (one line each):
- paper: weight-map gating, "+" path o*w styled by AdaIN, "-" path bg*(1-w), at every fused level;
- concat: MC-GAN-style bottleneck concatenation: [synthetic, background] convolved at the bottleneck
  only, no weight map, no AdaIN (the gene enters only through the start of synthesis);
- concat_all: the same concatenation at every fused level, followed by AdaIN;
- additive: the paper's "+" path added to the unsuppressed background (no "-" path).
The generator gives `concat` one level and no AdaIN (GeneratorConfig.n_fusion_levels / adain_mode).
"""

from __future__ import annotations

import torch
from torch import nn

from .adain import AdaIN
from .blocks import conv_bn, squash


class PaperFusion(nn.Module):
    """out = AdaIN(o * w, style) + bg * (1 - w), where [w, o] = split(conv-BN-conv-BN(h)).

    With adain_position="before_gate" the "+" path is AdaIN(o, style) * w: the style then cannot reach
    pixels where w = 0 (after gating, instance norm and the style's bias spread it over the whole map).

    Args:
        channels: channels of both the background and the synthetic feature at this scale.
        style_dim: size of the style vector (gene code + noise).
        adain: "affine" or "off" (see AdaIN).
        weight_activation: "sigmoid" or "tanh" squashing of the weight map.
        minus_path: True = the paper's "-" path bg * (1 - w); False = bg added unsuppressed ("additive").
        adain_position: "after_gate" = AdaIN(o * w) (the paper's order); "before_gate" = AdaIN(o) * w.
    """

    def __init__(self, channels: int, style_dim: int, adain: str, weight_activation: str, minus_path: bool = True,
                 adain_position: str = "after_gate"):
        super().__init__()
        # Two conv+BN layers, the second doubling the channels (paper: "the channel number is doubled").
        self.encode = nn.Sequential(*conv_bn(channels, channels), nn.LeakyReLU(0.2), *conv_bn(channels, 2 * channels))
        self.adain = AdaIN(channels, style_dim, adain)
        self.weight_activation = weight_activation
        self.minus_path = minus_path
        if adain_position not in ("after_gate", "before_gate"):
            raise ValueError(f"adain_position must be 'after_gate' or 'before_gate', got {adain_position!r}")
        self.adain_before_gate = adain_position == "before_gate"

    def forward(self, synth: torch.Tensor, bg: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, obj = self.encode(synth).chunk(2, dim=1)  # (B, 2C, H, W) -> weight (B, C, H, W), obj (B, C, H, W)
        w = squash(w, self.weight_activation)
        if self.adain_before_gate:
            plus = self.adain(obj, style) * w  # "+": styled object, confined to the object region
        else:
            plus = self.adain(obj * w, style)  # "+": object region, styled by the gene (paper order)
        minus = bg * (1 - w) if self.minus_path else bg  # "-": background kept where no nodule
        return plus + minus, w


class ConcatFusion(nn.Module):
    """out = AdaIN(conv-BN-conv-BN([h, bg]), style): no weight map (MC-GAN-style concatenation).

    Args: as PaperFusion (weight_activation and adain_position are unused).
    """

    def __init__(self, channels: int, style_dim: int, adain: str, weight_activation: str,
                 adain_position: str = "after_gate"):
        super().__init__()
        self.encode = nn.Sequential(*conv_bn(2 * channels, channels), nn.LeakyReLU(0.2), *conv_bn(channels, channels))
        self.adain = AdaIN(channels, style_dim, adain)

    def forward(self, synth: torch.Tensor, bg: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.adain(self.encode(torch.cat([synth, bg], dim=1)), style), None  # (B, 2C, H, W) -> (B, C, H, W)


def _additive(channels: int, style_dim: int, adain: str, weight_activation: str,
              adain_position: str = "after_gate") -> PaperFusion:
    return PaperFusion(channels, style_dim, adain, weight_activation, minus_path=False, adain_position=adain_position)


FUSION_BLOCKS = {"paper": PaperFusion, "concat": ConcatFusion, "concat_all": ConcatFusion, "additive": _additive}

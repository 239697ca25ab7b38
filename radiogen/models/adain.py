"""AdaIN (paper Sec. 2.1, StyleGAN form): instance-normalise the object feature, then scale/bias from the style."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AdaIN(nn.Module):
    """AdaIN(x, s) = (1 + A_scale(s)) * IN(x) + A_bias(s).

    Args:
        channels: channels of the content feature x.
        style_dim: size of the style vector (gene code + noise).
        mode: "affine" = learned affine of the style; "off" = identity (the ablation without AdaIN).
    """

    def __init__(self, channels: int, style_dim: int, mode: str = "affine"):
        super().__init__()
        self.mode = mode
        if mode == "affine":
            self.to_scale = nn.Linear(style_dim, channels)
            self.to_bias = nn.Linear(style_dim, channels)
        elif mode != "off":
            raise ValueError(f"adain mode must be 'affine' or 'off', got {mode!r}")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        # Instance statistics in fp32: under bf16 autocast the variance of small maps underflows.
        normed = F.instance_norm(x.float(), eps=1e-5).to(x.dtype)
        scale = 1 + self.to_scale(style)[:, :, None, None]  # (B, C, 1, 1); starts at identity
        bias = self.to_bias(style)[:, :, None, None]
        return normed * scale + bias

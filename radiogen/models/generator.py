"""The paper's multi-conditional generator G(x_b, g, n) -> (G_x, G_m, w) (Sec. 2.1-2.2, Fig. 1a)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GeneratorConfig
from .blocks import ImageMaskHead, StyleToMap, UpBlock
from .encoder import BackgroundEncoder, level_channels
from .fusion import FUSION_BLOCKS
from .mapping import GeneMapping


class GeneratorOutput(NamedTuple):
    image: torch.Tensor
    """G_x (B, 1, S, S) in [-1, 1]."""
    mask: torch.Tensor
    """G_m (B, 1, S, S) in [0, 1]."""
    weight: torch.Tensor | None
    """Background weight map (B, 1, S, S): 1 - w of the finest fusion block (paper Fig. 2c); None without one."""
    code: torch.Tensor
    """The gene code the discriminator sees (phi(g); the baseline's mu)."""
    kl: torch.Tensor | None
    """KL term of conditioning augmentation (baseline only)."""


def make_style(code: torch.Tensor, noise_dim: int, noise: torch.Tensor | None) -> torch.Tensor:
    """Style = [code, n] with n ~ N(0, 1) of size noise_dim (drawn here unless given)."""
    if noise_dim == 0:
        return code
    if noise is None:
        noise = torch.randn(code.shape[0], noise_dim, device=code.device, dtype=code.dtype)
    return torch.cat([code, noise], dim=1)


class MultiConditionalGenerator(nn.Module):
    """Background encoder + gene mapping + fusion blocks from the bottleneck up to full resolution.

    Args:
        cfg: the generator slice of the experiment config.
        image_size: side of the square input/output slices.
        n_genes: length of the gene-expression vector.
    """

    def __init__(self, cfg: GeneratorConfig, image_size: int, n_genes: int):
        super().__init__()
        self.cfg = cfg
        chans = level_channels(cfg.base_channels, cfg.max_channels, cfg.depth)
        style_dim = cfg.code_dim + cfg.noise_dim
        self.encoder = BackgroundEncoder(chans)
        self.mapping = GeneMapping(n_genes, cfg.gene_hidden, cfg.code_dim, cfg.gene_dropout, cfg.gene_noise)
        self.start = StyleToMap(style_dim, chans[-1], image_size // 2**cfg.depth)
        # Level k has resolution image_size / 2**k; fusion blocks sit on the n coarsest levels.
        self.fused_levels = list(range(cfg.depth, cfg.depth - cfg.n_fusion_levels, -1))
        self.fusion = nn.ModuleDict({
            f"{image_size // 2**k}px": FUSION_BLOCKS[cfg.fusion](chans[k], style_dim, cfg.adain_mode,
                                                                 cfg.weight_activation,
                                                                 adain_position=cfg.adain_position)
            for k in self.fused_levels})
        self.up = nn.ModuleList(UpBlock(chans[k], chans[k - 1]) for k in range(cfg.depth, 0, -1))
        self.head = ImageMaskHead(chans[0], cfg.mask_activation)

    def gene_code(self, genes: torch.Tensor) -> torch.Tensor:
        """The code the discriminator pairs with an image (used for mismatched genes)."""
        return self.mapping(genes)

    def gene_input_weight(self) -> torch.Tensor:
        """(hidden, n_genes) weight of phi's first layer: one column per gene (loss.phi_group_lasso)."""
        return self.mapping.net[0].weight

    def forward(self, background: torch.Tensor, genes: torch.Tensor,
                noise: torch.Tensor | None = None) -> GeneratorOutput:
        feats = self.encoder(background)  # [(B, C_k, S/2**k, S/2**k) for k = 0..depth]
        code = self.mapping(genes)  # (B, code_dim)
        style = make_style(code, self.cfg.noise_dim, noise)  # (B, code_dim + noise_dim)
        h = self.start(style)  # (B, C_depth, s0, s0)
        w = None
        for k in range(self.cfg.depth, -1, -1):
            key = f"{feats[k].shape[-1]}px"
            if key in self.fusion:
                h, w_k = self.fusion[key](h, feats[k], style)
                w = w_k if w_k is not None else w
            if k > 0:
                h = self.up[self.cfg.depth - k](h)  # (B, C_k, H, W) -> (B, C_{k-1}, 2H, 2W)
        residual, mask = self.head(h)
        image = background * (1 - mask) + residual * mask if self.cfg.final_blend else residual
        weight = None
        if w is not None:
            weight = F.interpolate(1 - w.mean(1, keepdim=True), size=image.shape[-2:], mode="nearest")
        return GeneratorOutput(image, mask, weight, code, None)

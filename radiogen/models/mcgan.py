"""The MC-GAN baseline generator (Park et al., BMVC 2018; the paper's comparison, docs/design.md §3)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import GeneratorConfig
from .blocks import ImageMaskHead, StyleToMap, UpBlock, conv_bn
from .encoder import BackgroundEncoder, level_channels
from .generator import GeneratorOutput, make_style


class ConditioningAugmentation(nn.Module):
    """genes -> FC + GLU -> (mu, logvar); c = mu + exp(logvar / 2) * eps (StackGAN/MC-GAN)."""

    def __init__(self, n_genes: int, code_dim: int):
        super().__init__()
        self.fc = nn.Linear(n_genes, 4 * code_dim)
        self.glu = nn.GLU(dim=1)

    def forward(self, genes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.glu(self.fc(genes)).chunk(2, dim=1)  # (B, 4D) -> (B, 2D) -> 2 x (B, D)
        return mu, logvar


class SynthesisBlock(nn.Module):
    """MC-GAN synthesis block: obj = conv-BN-act(h); out = obj + bg * sigmoid(conv(obj))."""

    def __init__(self, channels: int):
        super().__init__()
        self.obj = nn.Sequential(*conv_bn(channels, channels), nn.LeakyReLU(0.2))
        self.switch = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, synth: torch.Tensor, bg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obj = self.obj(synth)
        keep = torch.sigmoid(self.switch(obj))  # how much background passes at each position
        return obj + bg * keep, keep


class MCGANGenerator(nn.Module):
    """Conditioning augmentation, code + noise at the bottleneck, switch-gated synthesis blocks, no AdaIN.

    Args:
        cfg: the generator slice (arch=mcgan; fusion/adain/final_blend fields do not apply).
        image_size: side of the square slices.
        n_genes: length of the gene-expression vector.
    """

    def __init__(self, cfg: GeneratorConfig, image_size: int, n_genes: int):
        super().__init__()
        self.cfg = cfg
        chans = level_channels(cfg.base_channels, cfg.max_channels, cfg.depth)
        self.encoder = BackgroundEncoder(chans)
        self.ca = ConditioningAugmentation(n_genes, cfg.code_dim)
        self.start = StyleToMap(cfg.code_dim + cfg.noise_dim, chans[-1], image_size // 2**cfg.depth)
        # The code map is concatenated with the background feature at the bottleneck and mixed.
        self.joint = nn.Sequential(*conv_bn(2 * chans[-1], chans[-1]), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(SynthesisBlock(chans[k]) for k in range(cfg.depth, -1, -1))
        self.up = nn.ModuleList(UpBlock(chans[k], chans[k - 1]) for k in range(cfg.depth, 0, -1))
        self.head = ImageMaskHead(chans[0], cfg.mask_activation)

    def gene_code(self, genes: torch.Tensor) -> torch.Tensor:
        return self.ca(genes)[0]

    def gene_input_weight(self) -> torch.Tensor:
        """(4 code_dim, n_genes) weight of the conditioning augmentation's layer: one column per gene."""
        return self.ca.fc.weight

    def forward(self, background: torch.Tensor, genes: torch.Tensor,
                noise: torch.Tensor | None = None) -> GeneratorOutput:
        feats = self.encoder(background)
        mu, logvar = self.ca(genes)
        c = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        kl = 0.5 * torch.mean(mu.float() ** 2 + logvar.float().exp() - 1 - logvar.float())
        h = self.joint(torch.cat([self.start(make_style(c, self.cfg.noise_dim, noise)), feats[-1]], dim=1))
        keep = None
        for i, k in enumerate(range(self.cfg.depth, -1, -1)):
            h, keep = self.blocks[i](h, feats[k])
            if k > 0:
                h = self.up[i](h)
        image, mask = self.head(h)
        return GeneratorOutput(image, mask, keep.mean(1, keepdim=True), mu, kl)

"""The three-head discriminator D_I, D_IS, D_ISG (paper Sec. 2.3, Fig. 1c); heads output patch maps."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..config import HEADS, DiscriminatorConfig


class DiscriminatorOutput(NamedTuple):
    """Patch scores (B, 1, h, w) per requested head; None for heads not computed."""

    I: torch.Tensor | None = None  # noqa: E741 - the paper's name
    IS: torch.Tensor | None = None
    ISG: torch.Tensor | None = None
    IS_wrong_mask: torch.Tensor | None = None
    ISG_wrong_mask: torch.Tensor | None = None
    ISG_wrong_code: torch.Tensor | None = None
    genes: torch.Tensor | None = None
    """Auxiliary head: the gene vector predicted from (image, mask), (B, n_genes); None when not built."""


def _conv_norm(c_in: int, c_out: int, kernel: int, stride: int, batch_norm: bool) -> list[nn.Module]:
    """conv (no bias when BN follows) + BN, or a biased conv alone."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, 1, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(c_out)] if batch_norm else [conv]


def _encoder(c_in: int, channels: list[int], batch_norm: bool = True) -> nn.Sequential:
    """Stride-2 4x4 convs with LeakyReLU 0.2; no BN after the first (pix2pix/DCGAN practice)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, channels[0], 4, 2, 1), nn.LeakyReLU(0.2)]
    for a, b in zip(channels[:-1], channels[1:]):
        layers += [*_conv_norm(a, b, 4, 2, batch_norm), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """Only the heads with a positive loss weight are built (so DDP sees no unused parameters).

    Args:
        cfg: the discriminator slice.
        code_dim: size of the gene code tiled into D_ISG.
        heads: heads to build, a subset of ("I", "IS", "ISG").
        aux_genes: length of the gene vector the auxiliary head predicts from D_IS's features
            (loss.aux_genes > 0); 0 = no auxiliary head.
    """

    def __init__(self, cfg: DiscriminatorConfig, code_dim: int, heads: tuple[str, ...] = HEADS, aux_genes: int = 0):
        super().__init__()
        if not heads or set(heads) - set(HEADS):
            raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {heads}")
        self.heads = tuple(h for h in HEADS if h in heads)
        chans = [min(cfg.base_channels * 2**k, cfg.max_channels) for k in range(cfg.depth)]
        c, bn = chans[-1], not cfg.spectral_norm
        if "I" in heads:
            self.enc_I = _encoder(1, chans, bn)
            self.head_I = nn.Conv2d(c, 1, 3, 1, 1)
        self.aux = aux_genes > 0
        if "IS" in heads or "ISG" in heads or self.aux:  # D_ISG and the auxiliary head read D_IS's encoder output
            self.enc_IS = _encoder(2, chans, bn)
        if "IS" in heads:
            self.head_IS = nn.Conv2d(c, 1, 3, 1, 1)
        if "ISG" in heads:
            self.head_ISG = nn.Sequential(*_conv_norm(c + code_dim, c, 3, 1, bn),
                                          nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 3, 1, 1))
        if self.aux:  # AC-GAN-style regression (Odena et al. 2017): pooled features -> the gene vector
            self.head_genes = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, aux_genes))
        if cfg.spectral_norm:  # Miyato et al. 2018, "Spectral Normalization for GANs": every conv, heads included
            for conv in [m for m in self.modules() if isinstance(m, nn.Conv2d)]:
                nn.utils.parametrizations.spectral_norm(conv)

    def _isg(self, feat: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        tiled = code[:, :, None, None].expand(-1, -1, *feat.shape[-2:]).to(feat.dtype)  # (B, D) -> (B, D, h, w)
        return self.head_ISG(torch.cat([feat, tiled], dim=1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor, code: torch.Tensor, *,
                wrong_mask: torch.Tensor | None = None, wrong_code: torch.Tensor | None = None,
                heads: tuple[str, ...] | None = None) -> DiscriminatorOutput:
        """Scores of (image, mask, code) and, when given, of (image, wrong_mask, code) and (image, mask, wrong_code)."""
        heads = self.heads if heads is None else heads
        missing = set(heads) - set(self.heads)
        if missing:
            raise ValueError(f"heads {sorted(missing)} were not built (their loss weight is 0)")
        out: dict[str, torch.Tensor] = {}
        if "I" in heads:
            out["I"] = self.head_I(self.enc_I(image))
        if "IS" in heads or "ISG" in heads or self.aux:
            f_is = self.enc_IS(torch.cat([image, mask], dim=1))  # (B, 2, S, S) -> (B, C, S/2**d, S/2**d)
            f_wrong = self.enc_IS(torch.cat([image, wrong_mask], dim=1)) if wrong_mask is not None else None
            if "IS" in heads:
                out["IS"] = self.head_IS(f_is)
                if f_wrong is not None:
                    out["IS_wrong_mask"] = self.head_IS(f_wrong)
            if "ISG" in heads:
                out["ISG"] = self._isg(f_is, code)
                if f_wrong is not None:
                    out["ISG_wrong_mask"] = self._isg(f_wrong, code)
                if wrong_code is not None:
                    out["ISG_wrong_code"] = self._isg(f_is, wrong_code)
            if self.aux:
                out["genes"] = self.head_genes(f_is)
        return DiscriminatorOutput(**out)

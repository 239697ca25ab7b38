"""The paper's least-squares GAN losses (Sec. 2.3) with per-head weights and the background L1.

L_DI   = E[(D_I(x)-1)^2] + E[D_I(G_x)^2]
L_DIS  = E[(D_IS(x,m)-1)^2] + E[D_IS(x,m_bar)^2] + E[D_IS(G_x,G_m)^2]
L_DISG = E[(D_ISG(x,m,g)-1)^2] + E[D_ISG(x,m_bar,g)^2] + E[D_ISG(x,m,g_bar)^2] + E[D_ISG(G_x,G_m,g)^2]
L_G    = sum_h E[(D_h(G_x, ...)-1)^2] + lambda * E|G_x*M - x_b*M|,  M = erode(1 - G_m), no gradient through M
(+ kl_weight * KL for the MC-GAN baseline). Every head term is multiplied by its weight; a weight-0
term is never computed (its head is not even built). E is the mean over batch and patch positions.

Optional stabilisers, all off by default: the R1 penalty (loss.r1_gamma), DiffAugment of every D input
(train.augment) and a detached code for D_ISG in the G step (loss.code_to_d); see their config docs.
Optional frequency-aware realism term, off by default: the squared log ratio of the high-frequency energy inside
G's nodules to that inside the batch's real ones (loss.speckle).
Optional sparsity prior, off by default: a group lasso over each gene's input weights in phi
(loss.phi_group_lasso), + weight * sum_g ||W_1[:, g]||_2 in L_G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import augment as aug
from .batch import Batch
from .config import LossConfig
from .models import Discriminator, GeneratorOutput


def ls_real(score: torch.Tensor) -> torch.Tensor:
    return ((score.float() - 1) ** 2).mean()


def ls_fake(score: torch.Tensor) -> torch.Tensor:
    return (score.float() ** 2).mean()


def erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Grey-level erosion with a size x size square (min filter); size 1 = identity."""
    if size == 1:
        return mask
    return -F.max_pool2d(-mask, size, stride=1, padding=size // 2)


def masked_background_l1(image: torch.Tensor, background: torch.Tensor, gen_mask: torch.Tensor,
                         erosion: int) -> torch.Tensor:
    """The paper's background term E|G_x*M - x_b*M|, M = erode(1 - G_m) by a square: a mean over every pixel,
    those near or inside the generated mask counting 0. The mask is detached (no gradient through M).
    (metrics.outside_mask_l1 is the validation measure: a mean over the pixels outside a disk margin only.)"""
    keep = erode(1 - gen_mask.detach().float(), erosion)
    return ((image.float() - background.float()) * keep).abs().mean()


def gene_mse(predicted: torch.Tensor, genes: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the auxiliary head's gene prediction, over batch and genes."""
    return F.mse_loss(predicted.float(), genes.float())


def group_lasso(weight: torch.Tensor) -> torch.Tensor:
    """sum over input columns g of ||weight[:, g]||_2 for a (out, in) layer weight: each input (gene) is one group,
    kept or driven to zero as a whole. The tiny epsilon keeps the gradient finite at an all-zero column."""
    return torch.sqrt((weight.float() ** 2).sum(dim=0) + 1e-12).sum()


def high_frequency_energy(image: torch.Tensor, mask: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """(B,) mean over each (soft) mask of the squared image minus its Gaussian-smoothed self, the smoothing
    normalised over the mask so the step to the lung outside is not counted: the torch form of
    radiogen.metrics.high_frequency_rms squared (the speckle measure), differentiable in image and mask."""
    radius = max(1, int(4 * sigma + 0.5))  # scipy's gaussian_filter truncates at 4 sigma too
    t = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
    k1 = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = (k1[:, None] * k1[None, :] / k1.sum() ** 2)[None, None]
    x, m = image.float(), mask.float()
    smooth = F.conv2d(x * m, kernel, padding=radius) / (F.conv2d(m, kernel, padding=radius) + 1e-6)
    return ((x - smooth) ** 2 * m).sum(dim=(1, 2, 3)) / (m.sum(dim=(1, 2, 3)) + 1e-3)  # 0 for an empty mask


def speckle_gap(fake_image: torch.Tensor, fake_mask: torch.Tensor, real_image: torch.Tensor,
                real_mask: torch.Tensor) -> torch.Tensor:
    """(log E_fake - log E_real)^2 of the batch's mean high-frequency energy inside the nodules: 0 when G's
    nodules carry the real ones' pixel-scale energy, growing as they get speckled (or flat). A frequency-aware
    realism term: D's patch scores did not stop the speckle the stable config draws."""
    fake = high_frequency_energy(fake_image, fake_mask).mean()
    with torch.no_grad():
        real = high_frequency_energy(real_image, real_mask).mean()
    return (torch.log(fake + 1e-6) - torch.log(real + 1e-6)) ** 2


def r1_penalty(scores: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """sum_h E_b ||grad_x sum_p D_h(x)_bp||^2 (Mescheder et al. 2018, "Which training methods for GANs do
    actually converge?"), with a graph so that D's backward includes it; `image` must require grad."""
    total = image.new_zeros((), dtype=torch.float32)
    for score in scores:
        (grad,) = torch.autograd.grad(score.float().sum(), image, create_graph=True)
        total = total + grad.float().pow(2).flatten(1).sum(1).mean()
    return total


class GANLoss:
    """One loss object for both players; returns every term it computed under hierarchical names.

    Args:
        cfg: the loss slice.
        augment: the augmentation policy of every discriminator input (train.augment; "off" = none).
    """

    def __init__(self, cfg: LossConfig, augment: str = "off"):
        self.cfg = cfg
        self.weights = cfg.head_weights  # only heads with weight > 0
        self.augment = augment != "off"
        self.policy = augment

    def term_names(self, arch: str) -> set[str]:
        """The loss/... names `discriminator` and `generator` return for a generator of `arch`: what a sweep may
        name as an objective, known before any step (a test keeps it equal to the terms a step reports)."""
        names = {f"loss/{side}/{h}" for side in "DG" for h in self.weights} | {"loss/D/total", "loss/G/total"}
        optional = {"loss/D/aux": self.cfg.aux_genes > 0, "loss/G/aux": self.cfg.aux_genes > 0,
                    "loss/D/r1": self.cfg.r1_gamma > 0, "loss/G/l1": self.cfg.lambda_l1 > 0,
                    "loss/G/speckle": self.cfg.speckle > 0, "loss/G/phi_group_lasso": self.cfg.phi_group_lasso > 0,
                    "loss/G/kl": arch == "mcgan" and self.cfg.kl_weight > 0}  # only MC-GAN's VAE has a KL
        return names | {name for name, on in optional.items() if on}

    def mask_for_d(self, mask: torch.Tensor) -> torch.Tensor:
        """G's mask as D sees it: as drawn (soft) or binarised at 0.5 with a straight-through gradient (hard),
        so D cannot tell a synthetic mask from a real {0, 1} one by its softness alone."""
        if self.cfg.mask_to_d == "soft":
            return mask
        return (mask >= 0.5).to(mask.dtype) + (mask - mask.detach())  # exactly {0, 1} forward, identity backward

    def discriminator(self, D: Discriminator, batch: Batch, fake: GeneratorOutput,
                      code: torch.Tensor, wrong_code: torch.Tensor) -> dict[str, torch.Tensor]:
        """D loss; fake, code and wrong_code must already be detached from G."""
        image, mask, wrong_mask = batch.image, batch.mask, batch.mask_mismatch
        fake_image, fake_mask = fake.image, self.mask_for_d(fake.mask)
        if self.cfg.r1_gamma > 0:
            image = image.detach().requires_grad_(True)  # R1 differentiates w.r.t. the real image, before augmentation
        real_image = image
        if self.augment:  # one draw per sample shared by the image and its masks; fresh draws for the fakes
            real_image, mask, wrong_mask = aug.diff_augment(image, mask, wrong_mask, policy=self.policy)
            fake_image, fake_mask = aug.diff_augment(fake_image, fake_mask, policy=self.policy)
        real = D(real_image, mask, code, wrong_mask=wrong_mask, wrong_code=wrong_code)
        gen = D(fake_image, fake_mask, code)
        terms: dict[str, torch.Tensor] = {}
        if "I" in self.weights:
            terms["loss/D/I"] = ls_real(real.I) + ls_fake(gen.I)
        if "IS" in self.weights:
            terms["loss/D/IS"] = ls_real(real.IS) + ls_fake(real.IS_wrong_mask) + ls_fake(gen.IS)
        if "ISG" in self.weights:
            terms["loss/D/ISG"] = (ls_real(real.ISG) + ls_fake(real.ISG_wrong_mask)
                                   + ls_fake(real.ISG_wrong_code) + ls_fake(gen.ISG))
        total = sum(self.weights[k.split("/")[-1]] * v for k, v in terms.items())
        if self.cfg.aux_genes > 0:  # real tuples only: D must not learn the gene map from G's mistakes
            terms["loss/D/aux"] = gene_mse(real.genes, batch.genes)
            total = total + self.cfg.aux_genes * terms["loss/D/aux"]
        if self.cfg.r1_gamma > 0:
            terms["loss/D/r1"] = r1_penalty([getattr(real, h) for h in self.weights], image)
            total = total + self.cfg.r1_gamma / 2 * terms["loss/D/r1"]
        terms["loss/D/total"] = total
        with torch.no_grad():  # diagnostics: how often each head is right (LSGAN targets 1 real, 0 fake)
            for h in self.weights:
                terms[f"acc/D/{h}/real"] = (getattr(real, h).float() > 0.5).float().mean()
                terms[f"acc/D/{h}/fake"] = (getattr(gen, h).float() < 0.5).float().mean()
        return terms

    def generator(self, D: Discriminator, batch: Batch, fake: GeneratorOutput,
                  gene_weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """G loss; gene_weight: G's (hidden, n_genes) first gene-reading layer, for loss.phi_group_lasso."""
        image, mask = fake.image, self.mask_for_d(fake.mask)
        if self.augment:
            image, mask = aug.diff_augment(image, mask, policy=self.policy)
        code = fake.code if self.cfg.code_to_d == "attached" else fake.code.detach()
        scores = D(image, mask, code)
        terms = {f"loss/G/{h}": ls_real(getattr(scores, h)) for h in self.weights}
        total = sum(self.weights[h] * terms[f"loss/G/{h}"] for h in self.weights)
        if self.cfg.aux_genes > 0:
            terms["loss/G/aux"] = gene_mse(scores.genes, batch.genes)
            total = total + self.cfg.aux_genes * terms["loss/G/aux"]
        if self.cfg.lambda_l1 > 0:  # on the unaugmented image: the background must match where it is
            terms["loss/G/l1"] = masked_background_l1(fake.image, batch.background, fake.mask, self.cfg.erosion)
            total = total + self.cfg.lambda_l1 * terms["loss/G/l1"]
        if self.cfg.speckle > 0:  # G's own mask, as drawn: the energy is of what G calls nodule
            terms["loss/G/speckle"] = speckle_gap(fake.image, fake.mask, batch.image, batch.mask)
            total = total + self.cfg.speckle * terms["loss/G/speckle"]
        if fake.kl is not None and self.cfg.kl_weight > 0:
            terms["loss/G/kl"] = fake.kl
            total = total + self.cfg.kl_weight * fake.kl
        if self.cfg.phi_group_lasso > 0:
            if gene_weight is None:
                raise ValueError("loss.phi_group_lasso > 0 needs the generator's gene input weights (gene_weight)")
            terms["loss/G/phi_group_lasso"] = group_lasso(gene_weight)
            total = total + self.cfg.phi_group_lasso * terms["loss/G/phi_group_lasso"]
        terms["loss/G/total"] = total
        return terms

"""A procedurally generated toy batch with a known gene -> nodule link, for sanity runs and tests.

Each row is its own subject: a smooth lung-like background, and a nodule whose radius and density
follow two latent gene programs that drive count-like expression of two gene modules. It is a
fixed batch (no dataset needed), so `radiogen overfit` and the tests can check that the model and
losses learn at all before any data is prepared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import Batch, mismatch_index
from .genes import apply_gene_stats, fit_gene_stats


def _smooth_field(g: torch.Generator, n: int, size: int, coarse: int = 4) -> torch.Tensor:
    low = torch.randn(n, 1, coarse, coarse, generator=g)
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)


def toy_batch(batch_size: int, image_size: int, n_genes: int, seed: int = 0) -> tuple[Batch, list[str]]:
    """(Batch, subject ids) with normalised genes; deterministic by seed."""
    g = torch.Generator().manual_seed(seed)
    n, s = batch_size, image_size
    programs = torch.randn(n, 2, generator=g)  # (B, 2): size, density
    # Genes: two modules of 8 genes load on the programs, the rest are nuisance; Poisson counts.
    loadings = torch.zeros(2, n_genes)
    module = min(8, n_genes // 2)
    loadings[0, :module], loadings[1, module:2 * module] = 1.0, 1.0
    rate = torch.exp(2.0 + programs @ loadings + 0.3 * torch.randn(n, n_genes, generator=g))
    counts = torch.poisson(rate, generator=g).numpy()
    genes = torch.from_numpy(apply_gene_stats(fit_gene_stats(counts, "log_zscore"), counts))

    yy, xx = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij")

    def backgrounds() -> torch.Tensor:
        return (-0.75 + 0.08 * _smooth_field(g, n, s) + 0.02 * torch.randn(n, 1, s, s, generator=g)).clamp(-1, 1)

    def nodules() -> torch.Tensor:
        radius = s * (0.12 + 0.04 * programs[:, 0].clamp(-2, 2))  # (B,)
        centre = s / 2 + s * 0.15 * (torch.rand(n, 2, generator=g) - 0.5)
        dist = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2).sqrt()
        return (dist <= radius[:, None, None]).float()[:, None]  # (B, 1, S, S)

    mask = nodules()
    density = (0.1 + 0.35 * torch.tanh(programs[:, 1]))[:, None, None, None]
    image = backgrounds() * (1 - mask) + density * mask
    subjects = [f"toy-{i:03d}" for i in range(n)]
    other = mismatch_index(subjects, g)
    batch = Batch(image=image, mask=mask, genes=genes, background=backgrounds(),
                  mask_mismatch=mask[other], genes_mismatch=genes[other])
    return batch, subjects


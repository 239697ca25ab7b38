"""Differentiable phenotype proxies of a nodule slice: the read-out every radiogenomic map estimator shares.

A map says how genes move each program's phenotype. Reading that phenotype off thousands of synthetic
nodules (one per gene intervention) and differentiating it through the generator needs a measurement that
is cheap, batched and smooth in the mask, so the same four torch functions serve the real nodules, the gene
swap, the interventions and the gradients (PROXIES, one per program):

- size: soft area, the sum of mask probabilities (pixels);
- density: soft mean intensity inside the mask, sum(x m) / (sum(m) + 1);
- irregularity: soft isoperimetric ratio P^2 / (4 pi (A + 1)), P the summed gradient magnitude of the mask
  (about 1 for a disc, larger as lobes and spicules lengthen the boundary);
- texture: soft RMS of the image minus its 3x3 local mean inside the mask (internal heterogeneity; the
  slice-wide SD would follow the solid core, i.e. density).

The +1 (one pixel) in the denominators keeps every proxy finite for an empty mask: its area is 0 and its
other proxies are 0 or near it, so a map over empty masks is flat, never NaN. Images in [-1, 1], masks in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PROXIES: dict[str, str] = {"size": "area", "density": "intensity", "irregularity": "isoperimetric",
                           "texture": "local_rms"}
"""Program -> the proxy that tracks it."""
PROGRAMS = tuple(PROXIES)
EMPTY_PIXELS = 5
"""A mask with fewer pixels >= 0.5 is empty (as radiogen.evaluation.features.MIN_PIXELS)."""


def proxies(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, 4) proxies in PROGRAMS order of (B, H, W) or (B, 1, H, W) images and masks; differentiable."""
    x = images.reshape(-1, 1, *images.shape[-2:]).float()
    m = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    area = m.sum(dim=(1, 2, 3))                                          # (B,)
    weight = area + 1.0
    intensity = (x * m).sum(dim=(1, 2, 3)) / weight
    dy, dx = m[..., 1:, :-1] - m[..., :-1, :-1], m[..., :-1, 1:] - m[..., :-1, :-1]
    perimeter = torch.sqrt(dx ** 2 + dy ** 2 + 1e-6).sum(dim=(1, 2, 3)) - 1e-3 * dx[0].numel()
    isoperimetric = perimeter ** 2 / (4 * math.pi * weight)
    local = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    interior = -F.max_pool2d(-m, 3, stride=1, padding=1)                 # soft 3x3 erosion: off the boundary
    local_rms = torch.sqrt((local ** 2 * interior).sum(dim=(1, 2, 3)) / (interior.sum(dim=(1, 2, 3)) + 1.0) + 1e-8)
    return torch.stack([area, intensity, isoperimetric, local_rms], dim=1)


def proxies_np(images: np.ndarray, masks: np.ndarray, batch: int = 4096) -> np.ndarray:
    """numpy form of `proxies`: (..., H, W) -> (..., 4) float64."""
    images, masks = np.asarray(images), np.asarray(masks)
    lead = images.shape[:-2]
    flat_x = torch.from_numpy(images.reshape(-1, *images.shape[-2:]).astype(np.float32))
    flat_m = torch.from_numpy(masks.reshape(-1, *masks.shape[-2:]).astype(np.float32))
    with torch.no_grad():
        out = [proxies(a, b) for a, b in zip(flat_x.split(batch), flat_m.split(batch))]
    return torch.cat(out).double().numpy().reshape(*lead, len(PROGRAMS))


def empty_fraction(masks: np.ndarray) -> float:
    """Fraction of (..., H, W) masks with fewer than EMPTY_PIXELS pixels >= 0.5."""
    masks = np.asarray(masks)
    return float(((masks >= 0.5).sum(axis=(-2, -1)) < EMPTY_PIXELS).mean())

"""Gene-swap synthesis (docs/design.md §5, conditioning): every subject's genes drawn over the same fixed backgrounds.

Holding the backgrounds and the noise fixed and varying only the gene vector makes any difference
between two subjects' synthetic nodules an effect of their genes. The radiogenomic map estimators
(radiogen.evaluation.estimators) and the validation map objective (radiogen.evaluation.objective) read
the generator the same way.

G is any generator of the radiogen protocol: G(background (B,1,S,S), genes (B,G), noise=None) -> an
output with .image, .mask (B,1,S,S), .weight (B,1,S,S) or None and .code (B,C); `gene_code(genes)`
when present gives the deterministic code (phi(g); the MC-GAN baseline's mean mu).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from radiogen.train_step import local_rng

from .features import subject_means
from .phenotype import proxies_np

MIN_SUBJECTS = 3  # a rank correlation over fewer subjects says nothing


@dataclass
class SwapResult:
    """Subject s's genes over background k, for S subjects and K backgrounds."""

    images: np.ndarray          # (S, K, H, W) in [-1, 1]
    masks: np.ndarray           # (S, K, H, W) in [0, 1]
    weights: np.ndarray | None  # (S, K, H, W) background weight map, None when G has none
    codes: np.ndarray           # (S, C) gene code per subject


def _as_tensor(x, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32).to(device)


@torch.no_grad()
def gene_swap(G: torch.nn.Module, backgrounds, genes, device: torch.device | str = "cpu", *, seed: int = 0,
              batch_size: int = 256) -> SwapResult:
    """Synthesise every (subject, background) pair with G in eval mode.

    backgrounds: (K, H, W) or (K, 1, H, W); genes: (S, G) as G expects them (normalised).
    The noise vector is drawn once per background on its own RNG stream (`local_rng(seed)`) and
    shared by all subjects, so only the genes differ along a column; the global RNG is untouched.
    """
    device = torch.device(device)
    bg = _as_tensor(backgrounds, device)
    bg = bg[:, None] if bg.ndim == 3 else bg                              # (K, 1, H, W)
    g = _as_tensor(genes, device)                                         # (S, G)
    S, K = g.shape[0], bg.shape[0]
    noise_dim = int(getattr(getattr(G, "cfg", None), "noise_dim", 0) or 0)
    was_training = G.training
    G.eval()
    images, masks, weights = [], [], []
    try:
        with local_rng(seed, device):
            noise = torch.randn(K, noise_dim, device=device) if noise_dim else None
            pairs = torch.arange(S * K, device=device)
            for chunk in pairs.split(batch_size):
                s, k = chunk // K, chunk % K                              # row-major: subject, then background
                out = G(bg[k], g[s], None if noise is None else noise[k])
                images.append(out.image.float()[:, 0].cpu())
                masks.append(out.mask.float()[:, 0].cpu())
                weights.append(None if out.weight is None else out.weight.float()[:, 0].cpu())
            code = G.gene_code(g) if hasattr(G, "gene_code") else G(bg[:1].expand(S, -1, -1, -1), g).code
    finally:
        G.train(was_training)
    H, W = bg.shape[-2:]

    def stack(parts: list[torch.Tensor]) -> np.ndarray:
        return torch.cat(parts).numpy().reshape(S, K, H, W)

    return SwapResult(stack(images), stack(masks), None if weights[0] is None else stack(weights),
                      code.float().cpu().numpy())


def cheap_phenotype_by_subject(images: np.ndarray, masks: np.ndarray, subject_ids, subjects) -> np.ndarray:
    """(len(subjects), 4) per-subject mean of the phenotype proxies (radiogen.evaluation.phenotype, program
    order) over a subject's real slices, rows in the order of `subjects` (NaN for a subject without slices):
    the real side of the validation map objective (objective.MapReference.phenotype)."""
    means, present = subject_means(proxies_np(images, masks), [str(s) for s in subject_ids])
    row = {sid: i for i, sid in enumerate(present)}
    out = np.full((len(subjects), means.shape[1]), np.nan)
    for i, sid in enumerate(subjects):
        if str(sid) in row:
            out[i] = means[row[str(sid)]]
    return out


def nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without its warning for all-NaN slices: those are all-empty subjects, NaN is meant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)

"""Realism of synthetic nodules (docs/design.md §5): distances between radiomic feature distributions and
background fidelity.

No pretrained network can be downloaded, so FID/KID are computed on pyradiomics feature vectors
(features.radiomic_features) instead of Inception activations, after z-scoring every feature with
the REAL set's statistics. Their values are comparable only across runs evaluated on the same real
set.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy import ndimage
from skimage.metrics import structural_similarity

from radiogen.evaluation.features import radiomic_features

MIN_ROWS = 2


def _finite_rows(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a).all(axis=1)]


def normalise_on(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """[reference, *others], each z-scored column-wise with the reference set's mean and std.

    Rows holding any NaN/inf are dropped from every set (a slice without features, e.g. an empty
    mask; count them separately). Columns that are constant on the remaining reference rows are
    dropped from every set: they carry no scale, and a generator that varies them would otherwise
    get an unbounded z-score. std is the population std (ddof=0).
    """
    sets = [np.asarray(a, dtype=np.float64) for a in (reference, *others)]
    for a in sets:
        if a.ndim != 2 or a.shape[1] != sets[0].shape[1]:
            raise ValueError(f"expected (N, F) arrays with the same F, got {[s.shape for s in sets]}")
    sets = [_finite_rows(a) for a in sets]
    ref = sets[0]
    if len(ref) < MIN_ROWS:
        raise ValueError(f"the reference set has {len(ref)} rows without NaN; need at least {MIN_ROWS}")
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    keep = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    return [(a[:, keep] - mean[keep]) / std[keep] for a in sets]


def _check_pair(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected two (N, F) arrays with the same F, got {real.shape} and {fake.shape}")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise ValueError("features hold NaN/inf: pass them through normalise_on first (it drops such rows)")
    if len(real) < MIN_ROWS or len(fake) < MIN_ROWS:
        raise ValueError(f"need at least {MIN_ROWS} rows per set, got {len(real)} and {len(fake)}")
    return real, fake


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^1/2) between Gaussian fits of two (N, F) sets.

    No rescaling here (normalise first). Tr (C_r C_f)^1/2 is computed as the sum of square roots of
    the eigenvalues of the symmetric PSD matrix C_r^1/2 C_f C_r^1/2 (same spectrum), which stays
    real and finite when the covariances are singular (fewer rows than features).
    """
    real, fake = _check_pair(real, fake)
    mu_r, mu_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(real, rowvar=False))
    cov_f = np.atleast_2d(np.cov(fake, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on singular input; its real part is still valid
        root_r = np.real(scipy.linalg.sqrtm(cov_r))
    root_r = (root_r + root_r.T) / 2
    middle = root_r @ cov_f @ root_r
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    d = float(np.sum((mu_r - mu_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2.0 * tr_covmean)
    return max(d, 0.0)  # round-off can make an exact match slightly negative


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(real: np.ndarray, fake: np.ndarray, *, subset_size: int | None = None, n_subsets: int = 50,
        seed: int = 0) -> tuple[float, float]:
    """Kernel distance (Bińkowski et al. 2018): unbiased squared MMD with k(x, y) = (x.y / d + 1)^3.

    Mean and std over n_subsets random subsets (rows drawn without replacement within a subset) of
    subset_size rows from each set (default min(len(real), len(fake), 100), capped at that). Being
    unbiased, it scatters around 0, slightly negative included, when both sets share a distribution.
    """
    real, fake = _check_pair(real, fake)
    cap = min(len(real), len(fake))
    m = min(cap, 100) if subset_size is None else min(int(subset_size), cap)
    if m < 2 or n_subsets < 1:
        raise ValueError(f"need subset_size >= 2 and n_subsets >= 1, got {m} and {n_subsets}")
    rng = np.random.default_rng(seed)
    values = np.array([_mmd2_unbiased(real[rng.choice(len(real), m, replace=False)],
                                      fake[rng.choice(len(fake), m, replace=False)]) for _ in range(n_subsets)])
    return float(values.mean()), float(values.std())


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx**2 + yy**2 <= radius**2


def background_fidelity(synthetic: np.ndarray, background: np.ndarray, masks: np.ndarray, *,
                        dilate: int = 5) -> dict[str, float]:
    """How well the synthetic slice keeps its background outside the nodule; images (N, H, W) in [-1, 1].

    masks (binarised at 0.5) are dilated with a disk of radius `dilate` pixels. "l1" is the mean
    |synthetic - background| and "ssim" the mean of skimage's full SSIM map (7x7 uniform window,
    data_range=2), both pooled over the pixels outside the dilated masks of all slices. A window
    reaches 3 pixels, so with dilate >= 3 an edit confined to the mask changes neither value.
    NaN when no pixel lies outside.
    """
    syn = np.asarray(synthetic, dtype=np.float64)
    bg = np.asarray(background, dtype=np.float64)
    masks = np.asarray(masks)
    if syn.ndim != 3 or syn.shape != bg.shape or syn.shape != masks.shape:
        raise ValueError(f"synthetic, background and masks must be (N, H, W) of one shape, got "
                         f"{syn.shape}, {bg.shape}, {masks.shape}")
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 pixels, got {dilate}")
    inside = masks >= 0.5
    if dilate > 0:
        inside = ndimage.binary_dilation(inside, structure=_disk(dilate)[None])  # per slice
    outside = ~inside
    if not outside.any():
        return {"l1": float("nan"), "ssim": float("nan")}
    ssim_maps = np.stack([structural_similarity(s, b, data_range=2.0, full=True)[1] for s, b in zip(syn, bg)])
    return {"l1": float(np.abs(syn - bg)[outside].mean()), "ssim": float(ssim_maps[outside].mean())}


def _mean_area(masks: np.ndarray) -> float:
    return float((np.asarray(masks) >= 0.5).sum(axis=(1, 2)).mean())


def realism(real_images: np.ndarray, real_masks: np.ndarray, fake_images: np.ndarray, fake_masks: np.ndarray,
            *, seed: int = 0) -> dict[str, float]:
    """Radiomic Fréchet distance and KID of synthetic vs real nodules, plus mask statistics.

    Features of both sets (features.radiomic_features, unit pixel spacing) are normalised on the real
    set (normalise_on). Distances are NaN, not an error, when either set has fewer than 2 slices with
    features (e.g. a generator that draws no masks); empty_mask_fraction (of the synthetic set) and
    mask_area_ratio (mean synthetic mask area / mean real mask area, empty masks included) say why.
    """
    real_f, _ = radiomic_features(real_images, real_masks)
    fake_f, _ = radiomic_features(fake_images, fake_masks)
    out = {"frechet_radiomic": float("nan"), "kid_radiomic": float("nan"), "kid_radiomic_std": float("nan")}
    if len(_finite_rows(real_f)) >= MIN_ROWS and len(_finite_rows(fake_f)) >= MIN_ROWS:
        real_z, fake_z = normalise_on(real_f, fake_f)
        out["frechet_radiomic"] = frechet_distance(real_z, fake_z)
        out["kid_radiomic"], out["kid_radiomic_std"] = kid(real_z, fake_z, seed=seed)
    fake_masks = np.asarray(fake_masks)
    real_area = _mean_area(real_masks)
    out["empty_mask_fraction"] = (float((~(fake_masks >= 0.5).any(axis=(1, 2))).mean()) if len(fake_masks)
                                  else float("nan"))
    out["mask_area_ratio"] = _mean_area(fake_masks) / real_area if real_area > 0 else float("nan")
    return out

"""Realism metrics of docs/design.md §5: radiomic features, their Fréchet distance, and background fidelity.

No pretrained network can be downloaded here, so the FID of the paper's era is replaced by an
"FID-style on radiomic features" distance: each nodule (image inside its mask) is summarised by
hand-crafted radiomic features (first-order intensity, mask shape, GLCM texture), and the Fréchet
distance between Gaussian fits of the real and synthetic feature sets is reported. Its value has
no absolute meaning: it is comparable only across runs evaluated on the same validation set.

Conventions: images are (N, H, W) floats in [-1, 1] (the CT window [-1000, 500] HU scaled
linearly); masks are (N, H, W) in {0, 1} or probabilities, binarised at 0.5.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy import ndimage
from skimage import measure
from skimage.feature import graycomatrix, graycoprops

FIRST_ORDER = ("mean", "std", "skewness", "kurtosis", "p10", "p90", "entropy")
SHAPE = ("area_fraction", "compactness", "eccentricity", "solidity")
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation", "dissimilarity")
FEATURE_NAMES: tuple[str, ...] = (FIRST_ORDER + SHAPE + tuple(f"glcm_{p}" for p in GLCM_PROPS))

HIST_BINS = 32       # fixed bins over [-1, 1] for the first-order entropy
GLCM_LEVELS = 32     # grey levels inside the mask; level 0 is reserved for "outside the mask"
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
MIN_VALID_ROWS = 2


def _check_stack(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W), got shape {a.shape}; add a batch axis or squeeze the channel axis")
    return a


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shapes differ: {shapes}")


def _quantise(image: np.ndarray, levels: int) -> np.ndarray:
    """Fixed-range quantisation of [-1, 1] to 0..levels-1 (fixed so slices are comparable)."""
    q = np.floor((np.clip(image, -1.0, 1.0) + 1.0) / 2.0 * levels).astype(np.int64)
    return np.minimum(q, levels - 1)


def _first_order(values: np.ndarray) -> list[float]:
    v = values.astype(np.float64)
    mean, std = v.mean(), v.std()
    if std > 0:
        z = (v - mean) / std
        skew, kurt = float(np.mean(z**3)), float(np.mean(z**4) - 3.0)
    else:
        # A perfectly flat nodule (e.g. a collapsed generator) must stay in the Fréchet fit rather
        # than be dropped as NaN; 0 is the value of any symmetric, normal-tailed distribution.
        skew, kurt = 0.0, 0.0
    p10, p90 = np.percentile(v, [10, 90])
    counts = np.bincount(_quantise(v, HIST_BINS), minlength=HIST_BINS)
    p = counts[counts > 0] / v.size
    entropy = float(-(p * np.log2(p)).sum())
    return [float(mean), float(std), skew, kurt, float(p10), float(p90), entropy]


def _shape(mask: np.ndarray) -> list[float]:
    # The whole mask is one region (not only its largest component), so a fragmented synthetic
    # mask shows up as low compactness/solidity instead of being hidden.
    props = measure.regionprops(mask.astype(np.uint8))[0]
    area = float(props.area)
    perimeter = float(props.perimeter_crofton)  # closer to the continuous perimeter than the 4-connected one
    compactness = 4 * np.pi * area / perimeter**2 if perimeter > 0 else np.nan
    return [area / mask.size, compactness, float(props.eccentricity), float(props.solidity)]


def _glcm(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """GLCM texture over co-occurring pixel pairs that both lie inside the mask.

    The mask's bounding box is quantised to levels 1..GLCM_LEVELS, pixels outside the mask get
    level 0, and row/column 0 of the co-occurrence matrix is dropped, so no pair touching an
    outside pixel counts. Properties are averaged over the four angles at distance 1 (angles
    without any inside pair are skipped; a mask with no inside pair at all gives NaN).
    """
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    crop, inside = image[r0:r1, c0:c1], mask[r0:r1, c0:c1]
    q = np.where(inside, _quantise(crop, GLCM_LEVELS) + 1, 0).astype(np.uint8)
    P = graycomatrix(q, [1], GLCM_ANGLES, levels=GLCM_LEVELS + 1, symmetric=True)[1:, 1:]  # (L, L, 1, A)
    has_pairs = P.sum(axis=(0, 1))[0] > 0                                                  # (A,)
    if not has_pairs.any():
        return [np.nan] * len(GLCM_PROPS)
    P = P[..., has_pairs]
    # graycoprops reports correlation 1 for a flat GLCM (zero variance); kept as skimage defines it.
    return [float(graycoprops(P, prop).mean()) for prop in GLCM_PROPS]


def radiomic_features(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-slice radiomic features inside the nodule mask, (N, len(FEATURE_NAMES)) float64.

    images: (N, H, W) in [-1, 1]; masks: (N, H, W) in {0, 1} or probabilities (binarised at 0.5).
    First-order features are in the image's [-1, 1] units (entropy in bits over 32 fixed bins);
    shape features use skimage regionprops on the whole binarised mask; GLCM texture is described
    in `_glcm`. A slice whose mask is empty gives a row of NaN.
    """
    images = _check_stack("images", images)
    masks = _check_stack("masks", masks)
    _check_same_shape(images=images, masks=masks)
    binary = masks >= 0.5
    out = np.full((images.shape[0], len(FEATURE_NAMES)), np.nan, dtype=np.float64)
    for i, (image, mask) in enumerate(zip(images, binary)):
        if not mask.any():
            continue
        out[i] = _first_order(image[mask]) + _shape(mask) + _glcm(image, mask)
    return out


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID-style Fréchet distance on radiomic features: ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^1/2).

    Both sets are standardised with the REAL set's per-feature mean and std first, so features of
    different units weigh equally (a feature constant in the real set keeps scale 1). Rows holding
    any NaN are dropped from each set. Because the scale comes from the real set only, the distance
    is symmetric when both sets have the same per-feature spread and only approximately so
    otherwise: always pass the real set first. Comparable only across runs that use the same
    validation (real) set.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected two (N, F) feature arrays with the same F, got {real.shape} and {fake.shape}")
    real = real[~np.isnan(real).any(axis=1)]
    fake = fake[~np.isnan(fake).any(axis=1)]
    if len(real) < MIN_VALID_ROWS or len(fake) < MIN_VALID_ROWS:
        raise ValueError(f"need at least {MIN_VALID_ROWS} rows without NaN in each set to fit a Gaussian, "
                         f"got {len(real)} real and {len(fake)} fake (empty masks give NaN rows)")
    mu = real.mean(axis=0)
    scale = real.std(axis=0)
    scale[scale == 0] = 1.0
    real, fake = (real - mu) / scale, (fake - mu) / scale

    mu_r, mu_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(real, rowvar=False))
    cov_f = np.atleast_2d(np.cov(fake, rowvar=False))
    with warnings.catch_warnings():
        # Few rows make the covariances singular; sqrtm then warns but its real part is still usable.
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(cov_r @ cov_f)
    if not np.isfinite(covmean).all():
        # Standard FID remedy for a singular product: a small ridge on both covariances.
        eps = 1e-6 * np.eye(cov_r.shape[0])
        covmean = scipy.linalg.sqrtm((cov_r + eps) @ (cov_f + eps))
    covmean = np.real(covmean)
    d = float(np.sum((mu_r - mu_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2 * np.trace(covmean))
    return max(d, 0.0)  # round-off can make an exact match slightly negative


REALISM_KEYS = ("frechet_radiomic", "speckle_ratio", "fake_empty_mask_fraction", "real_empty_mask_fraction")
"""The keys of `realism_report` (validation reports them as val/<key>)."""


def realism_report(real_images: np.ndarray, real_masks: np.ndarray,
                   fake_images: np.ndarray, fake_masks: np.ndarray) -> dict[str, float]:
    """Radiomic Fréchet distance plus the empty-mask fractions that explain a NaN distance.

    Never raises for too few non-empty masks (early in training the generator often draws none):
    frechet_radiomic is then NaN and the fractions say which side was short.
    """
    real = radiomic_features(real_images, real_masks)
    fake = radiomic_features(fake_images, fake_masks)
    real_valid = int((~np.isnan(real).any(axis=1)).sum())
    fake_valid = int((~np.isnan(fake).any(axis=1)).sum())
    if real_valid >= MIN_VALID_ROWS and fake_valid >= MIN_VALID_ROWS:
        frechet = frechet_distance(real, fake)
    else:
        frechet = float("nan")
    return dict(zip(REALISM_KEYS, (frechet, speckle_ratio(real_images, real_masks, fake_images, fake_masks),
                                   _empty_fraction(fake_masks), _empty_fraction(real_masks))))


def high_frequency_rms(images: np.ndarray, masks: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """(N,) RMS over each mask (binarised at 0.5) of the image minus its Gaussian-smoothed self (sigma in pixels),
    the smoothing normalised over the mask's own pixels so that the step to the surrounding lung is not counted: a
    flat nodule scores 0 whatever its outline. NaN for an empty mask. The pixel-scale energy that a speckled nodule
    has and a smooth one lacks; the truth measures use it as the texture measurement too."""
    images = _check_stack("images", images).astype(np.float64)
    binary = _check_stack("masks", masks) >= 0.5
    _check_same_shape(images=images, masks=binary)
    inside = binary.astype(np.float64)
    blur = (0, sigma, sigma)  # per slice, never across slices
    weight = ndimage.gaussian_filter(inside, sigma=blur, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = ndimage.gaussian_filter(images * inside, sigma=blur, mode="constant") / weight
        residual = np.where(binary, images - smooth, 0.0)
        count = binary.sum(axis=(1, 2))
        return np.where(count > 0, np.sqrt((residual ** 2).sum(axis=(1, 2)) / np.maximum(count, 1)), np.nan)


def speckle_ratio(real_images: np.ndarray, real_masks: np.ndarray, fake_images: np.ndarray,
                  fake_masks: np.ndarray) -> float:
    """Mean high-frequency energy (high_frequency_rms squared) inside the synthetic nodules over that of the real
    ones: 1 = as smooth as real, 2 = twice the pixel-scale energy (speckle). NaN when either set has no mask."""
    real = high_frequency_rms(real_images, real_masks) ** 2
    fake = high_frequency_rms(fake_images, fake_masks) ** 2
    if not (np.isfinite(real).any() and np.isfinite(fake).any()) or np.nanmean(real) == 0:
        return float("nan")
    return float(np.nanmean(fake) / np.nanmean(real))


def _empty_fraction(masks: np.ndarray) -> float:
    binary = np.asarray(masks) >= 0.5
    return float((~binary.any(axis=(1, 2))).mean()) if len(binary) else float("nan")


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx**2 + yy**2 <= radius**2


def outside_mask_l1(images: np.ndarray, backgrounds: np.ndarray, masks: np.ndarray, dilate: int = 5) -> float:
    """Background fidelity: mean |synthetic - background| over the pixels outside the dilated mask only
    (losses.masked_background_l1, the training term, averages over every pixel instead).

    masks are binarised at 0.5 and dilated with a disk of radius `dilate` pixels (0 = no dilation);
    the mean is pooled over all outside pixels of all slices. NaN when no pixel lies outside.
    """
    images = _check_stack("images", images)
    backgrounds = _check_stack("backgrounds", backgrounds)
    masks = _check_stack("masks", masks)
    _check_same_shape(images=images, backgrounds=backgrounds, masks=masks)
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 pixels, got {dilate}")
    binary = masks >= 0.5
    if dilate > 0:
        # A (1, k, k) structuring element dilates every slice at once without mixing slices.
        binary = ndimage.binary_dilation(binary, structure=_disk(dilate)[None])
    outside = ~binary
    if not outside.any():
        return float("nan")
    diff = np.abs(images.astype(np.float64) - backgrounds.astype(np.float64))
    return float(diff[outside].mean())

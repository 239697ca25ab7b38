"""Radiomic features of nodule slices with pyradiomics (docs/design.md §5), the evaluation's feature space.

Each slice is handed to pyradiomics as a one-slice 3D SimpleITK image with force2D (axial plane,
force2Ddimension=0), in Hounsfield units, with the nodule mask as label 1. The enabled classes are
FEATURE_CLASSES with every non-deprecated feature of each class.

Settings, and why:
- binWidth = BIN_WIDTH_HU (25 HU, pyradiomics' default): a FIXED bin width in HU, not a fixed bin
  count, so grey levels mean the same tissue density on every slice (the usual choice for CT); it
  gives 60 levels over the [-1000, 500] HU window, which resolves ground glass (-600..-400 HU) from
  solid tissue (~+30 HU) and the internal texture (SD of tens of HU) of the synthetic cohort.
- voxelArrayShift = 1000: first-order Energy/TotalEnergy square HU + 1000, so air is 0 and energy
  grows with density instead of being dominated by the sign of negative HU values.
- minimumROISize = MIN_PIXELS: a mask of fewer pixels gives a row of NaN (pyradiomics cannot compute
  shape or texture of one or two pixels); so does any mask pyradiomics rejects (e.g. a one-pixel-wide
  line, "too few dimensions").

Conventions (as radiogen.metrics): images (N, H, W) in [-1, 1] = the CT window [-1000, 500] HU scaled
linearly; masks (N, H, W) in {0, 1} or probabilities, binarised at 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

from radiogen.schema import HU_WINDOW

# pyradiomics logs every extraction at INFO and some at WARNING to stderr; evaluation of thousands
# of slices must not flood the log. ERROR still surfaces real failures.
logging.getLogger("radiomics").setLevel(logging.ERROR)

FEATURE_CLASSES = ("firstorder", "shape2D", "glcm")
BIN_WIDTH_HU = 25.0
VOXEL_ARRAY_SHIFT_HU = 1000
MIN_PIXELS = 5

PHENOTYPE_FEATURES: dict[str, str] = {
    # Area in mm^2 (pixel count x pixel area): the nodule's extent on the slice.
    "size": "shape2D_PixelSurface",
    # Mean HU inside the mask: ground glass -> solid.
    "density": "firstorder_Mean",
    # Sphericity 2 sqrt(pi A) / P is 1 for a disc and falls as lobes and spicules lengthen the
    # boundary. It is scale-free; PerimeterSurfaceRatio is not and tracked size (|rho| 0.97-0.99 on
    # synthetic-cohort slices) far more than irregularity. Sphericity DEcreases with irregularity
    # (PHENOTYPE_DIRECTION): rho -0.81 at 0.7 mm pixels, -0.72 at 1.4 mm, -0.47 at 2.8 mm.
    "irregularity": "shape2D_Sphericity",
    # Entropy of the HU histogram (fixed 25 HU bins): internal heterogeneity spreads the values over
    # more bins. Variance was not chosen: a solid core in ground glass (density) dominates it. On
    # synthetic-cohort slices its Spearman rho with the nodule's texture value was 0.71 at 0.7 mm pixels
    # (0.50 at 1.4 mm, 0.36 at 2.8 mm, where size takes over); no GLCM feature tried did better.
    "texture": "firstorder_Entropy",
}
PHENOTYPE_DIRECTION: dict[str, int] = {"size": 1, "density": 1, "irregularity": -1, "texture": 1}
"""Sign of each PHENOTYPE_FEATURES feature's response to its program (for plots; |rho| ignores it)."""


def _feature_keys() -> list[tuple[str, str]]:
    """(pyradiomics key, our name) in a fixed order: FEATURE_CLASSES order, then feature name."""
    classes = radiomics.getFeatureClasses()
    keys = []
    for cls in FEATURE_CLASSES:
        names = sorted(n for n, deprecated in classes[cls].getFeatureNames().items() if not deprecated)
        keys += [(f"original_{cls}_{n}", f"{cls}_{n}") for n in names]
    return keys


_KEYS = _feature_keys()
FEATURE_NAMES: tuple[str, ...] = tuple(name for _, name in _KEYS)


def _extractor() -> featureextractor.RadiomicsFeatureExtractor:
    ex = featureextractor.RadiomicsFeatureExtractor(
        binWidth=BIN_WIDTH_HU, force2D=True, force2Ddimension=0, voxelArrayShift=VOXEL_ARRAY_SHIFT_HU,
        minimumROIDimensions=2, minimumROISize=MIN_PIXELS, additionalInfo=False, label=1)
    ex.disableAllFeatures()
    for cls in FEATURE_CLASSES:
        ex.enableFeatureClassByName(cls)
    return ex


def to_hu(images: np.ndarray) -> np.ndarray:
    """[-1, 1] -> HU over HU_WINDOW (the inverse of the preprocessing's linear window scaling)."""
    lo, hi = HU_WINDOW
    return (np.asarray(images, dtype=np.float64) + 1.0) / 2.0 * (hi - lo) + lo


def _check_stacks(images: np.ndarray, masks: np.ndarray) -> None:
    if images.ndim != 3 or images.shape != masks.shape:
        raise ValueError(f"images and masks must both be (N, H, W) of the same shape, got {images.shape} "
                         f"and {masks.shape}")


def radiomic_features(images: np.ndarray, masks: np.ndarray, *,
                      spacing_mm: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """pyradiomics firstorder, shape2D and glcm features inside each slice's mask.

    Returns ((N, F) float64, F names "<class>_<Feature>"), F names in a fixed order. spacing_mm is the
    in-plane pixel size (shape features are in mm / mm^2). A slice with fewer than MIN_PIXELS mask
    pixels, or whose mask pyradiomics rejects, gives a row of NaN.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    _check_stacks(images, masks)
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
    hu = to_hu(images)
    binary = (masks >= 0.5).astype(np.uint8)
    ex = _extractor()
    out = np.full((len(images), len(_KEYS)), np.nan)
    spacing = (float(spacing_mm),) * 3
    for i in range(len(images)):
        if int(binary[i].sum()) < MIN_PIXELS:
            continue
        image = sitk.GetImageFromArray(hu[i][None])
        mask = sitk.GetImageFromArray(binary[i][None])
        image.SetSpacing(spacing)
        mask.SetSpacing(spacing)
        try:
            result = ex.execute(image, mask)
        except ValueError:  # pyradiomics' checkMask rejects the ROI (e.g. a one-pixel-wide line)
            continue
        out[i] = [float(result[key]) for key, _ in _KEYS]
    return out, list(FEATURE_NAMES)


def subject_means(values: np.ndarray, subject_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-subject NaN-mean of the rows of values (N, F); subjects sorted. A subject whose rows are all
    NaN in a column gets NaN there."""
    values = np.asarray(values, dtype=np.float64)
    ids = np.asarray(list(subject_ids))
    if values.ndim != 2 or len(ids) != len(values):
        raise ValueError(f"values must be (N, F) with one subject id per row, got {values.shape} and {len(ids)} ids")
    subjects, inverse = np.unique(ids, return_inverse=True)
    valid = ~np.isnan(values)
    sums = np.zeros((len(subjects), values.shape[1]))
    counts = np.zeros_like(sums)
    np.add.at(sums, inverse, np.where(valid, values, 0.0))
    np.add.at(counts, inverse, valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    return means, [str(s) for s in subjects]

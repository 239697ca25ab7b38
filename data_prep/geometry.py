"""VOI extraction, lung segmentation and background sampling (paper Section 3, docs/design.md §4).

A VOI is a cube of side voi_mm around a physical point. It is sampled with SimpleITK on a
reference grid that shares the CT's direction cosines: in plane image_size x image_size pixels of
voi_mm / image_size mm centred exactly on the point, along the slice normal the CT's own axial
planes within voi_mm / 2 of the point (so no slice is interpolated between two thick CT slices).
Everything is in physical (LPS) millimetres, so origin, spacing and direction of the CT are
honoured whatever they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# Lung segmentation (docs/design.md §4 D): air-like voxels below this HU inside the body are lung.
LUNG_HU = -320.0
# Lungs are segmented on a grid of about this spacing (integer shrink factors): background
# centres are drawn from a 5-25 mm band, which needs mm, not sub-mm, precision, and a 512x512 CT
# shrinks ~16x in voxels.
LUNG_GRID_MM = 2.5
# A lung component smaller than this fraction of the largest one is airway/bowel gas, not lung.
LUNG_MIN_FRACTION = 0.05
# Connected mask components smaller than this are specks, not nodules (reported, not cropped).
MIN_NODULE_MM3 = 10.0


@dataclass(frozen=True)
class Nodule:
    label: int
    center_mm: tuple[float, float, float]
    """Physical centroid of the component's voxels."""
    volume_mm3: float


@dataclass
class Voi:
    """One resampled VOI: (Z, H, W) arrays, Z = CT planes within voi_mm / 2 of the centre."""

    center_mm: tuple[float, float, float]
    image: np.ndarray          # (Z, H, W) float32 in [-1, 1]
    mask: np.ndarray           # (Z, H, W) uint8, the VOI's own nodule (zeros for background)
    other_nodules: np.ndarray  # (Z,) bool: plane contains any nodule voxel (for background picks)
    in_ct: np.ndarray          # (Z,) bool: plane is one of the CT's planes (not beyond its ends)
    padded: np.ndarray         # (Z,) bool: part of the plane lay outside the CT (filled with air)
    offsets_mm: np.ndarray     # (Z,) signed distance of each plane from the centre
    pixel_spacing_mm: float


def hu_to_unit(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to the window and scale linearly to [-1, 1] (float32)."""
    lo, hi = window
    return ((np.clip(hu, lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)


def find_nodules(mask: sitk.Image) -> tuple[list[Nodule], sitk.Image, list[str]]:
    """Connected components (26-connected) of a binary mask with their physical centroids.
    Returns the nodules (largest first), their label image (cropped to the mask's bounding box,
    same physical space), and warnings about components too small to be a nodule."""
    occupied = [np.flatnonzero(sitk.GetArrayViewFromImage(mask).any(axis=axes)) for axes in ((0, 1), (0, 2), (1, 2))]
    if any(len(o) == 0 for o in occupied):
        return [], mask, []
    (x0, x1), (y0, y1), (z0, z1) = ((int(o[0]), int(o[-1]) + 1) for o in occupied)
    components = sitk.ConnectedComponent(mask[x0:x1, y0:y1, z0:z1], True)  # the bounding box only: fast
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputePerimeterOff()
    stats.Execute(components)
    nodules, warnings = [], []
    for label in stats.GetLabels():
        volume = stats.GetPhysicalSize(label)
        if volume < MIN_NODULE_MM3:
            warnings.append(f"mask speck ignored (< {MIN_NODULE_MM3:g} mm3): a component of {volume:.1f} mm3")
            continue
        nodules.append(Nodule(label, tuple(stats.GetCentroid(label)), volume))
    nodules.sort(key=lambda n: -n.volume_mm3)
    return nodules, components, warnings


def _plane_range(ct: sitk.Image, center_mm, half_mm: float) -> tuple[int, int, float]:
    """CT plane indices k_first..k_last within half_mm of the centre, and the centre's continuous k."""
    kc = ct.TransformPhysicalPointToContinuousIndex(center_mm)[2]
    dz = ct.GetSpacing()[2]
    return int(np.ceil(kc - half_mm / dz - 1e-6)), int(np.floor(kc + half_mm / dz + 1e-6)), kc


def voi_reference(ct: sitk.Image, center_mm, voi_mm: float, image_size: int) -> tuple[sitk.Image, np.ndarray]:
    """The VOI's reference grid (for sitk.Resample) and each plane's offset from the centre in mm."""
    d = np.array(ct.GetDirection()).reshape(3, 3)
    s = voi_mm / image_size
    dz = ct.GetSpacing()[2]
    k_first, k_last, kc = _plane_range(ct, center_mm, voi_mm / 2)
    half = (image_size - 1) / 2 * s
    origin = np.asarray(center_mm) + d @ np.array([-half, -half, (k_first - kc) * dz])
    ref = sitk.Image(image_size, image_size, k_last - k_first + 1, sitk.sitkUInt8)
    ref.SetSpacing((s, s, dz))
    ref.SetDirection(ct.GetDirection())
    ref.SetOrigin(tuple(origin))
    offsets = (np.arange(k_first, k_last + 1) - kc) * dz
    return ref, offsets


def _plane_coverage(ct: sitk.Image, ref: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Per VOI plane: (lies on a CT plane, lies partly outside the CT). The map from VOI index to CT
    index is affine, so a plane is fully inside iff its four corners are."""
    size = np.array(ct.GetSize())
    n, _, nz = ref.GetSize()
    in_ct, padded = np.zeros(nz, bool), np.zeros(nz, bool)
    for k in range(nz):
        corners = [ct.TransformPhysicalPointToContinuousIndex(ref.TransformIndexToPhysicalPoint((i, j, k)))
                   for i in (0, n - 1) for j in (0, n - 1)]
        c = np.array(corners)
        inside = (c >= -0.5 - 1e-3) & (c <= size - 0.5 + 1e-3)
        in_ct[k] = inside[:, 2].all()
        padded[k] = not inside.all()
    return in_ct, padded


def extract_voi(ct: sitk.Image, center_mm, *, voi_mm: float, image_size: int, window: tuple[float, float],
                own_mask: sitk.Image | None = None, all_nodules: sitk.Image | None = None) -> Voi:
    """Resample the CT (linear) and masks (nearest neighbour) onto the VOI grid around center_mm.
    Voxels outside the CT are filled with the window minimum (air) and flagged as padded."""
    ref, offsets = voi_reference(ct, center_mm, voi_mm, image_size)
    identity = sitk.Transform()
    hu = sitk.Resample(ct, ref, identity, sitk.sitkLinear, float(window[0]), sitk.sitkFloat32)
    image = hu_to_unit(sitk.GetArrayFromImage(hu), window)
    nz = ref.GetSize()[2]

    def on_grid(m: sitk.Image | None) -> np.ndarray:
        if m is None:
            return np.zeros((nz, image_size, image_size), np.uint8)
        return sitk.GetArrayFromImage(sitk.Resample(m, ref, identity, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))

    mask = on_grid(own_mask)
    others = on_grid(all_nodules).reshape(nz, -1).any(1)
    in_ct, padded = _plane_coverage(ct, ref)
    return Voi(tuple(float(c) for c in center_mm), image, mask, others, in_ct, padded, offsets,
               voi_mm / image_size)


# ---------------------------------------------------------------------------------------------
# Lungs and background VOI centres


def _coarse(image: sitk.Image) -> sitk.Image:
    """Block-average to about LUNG_GRID_MM (float32)."""
    factors = [max(1, int(round(LUNG_GRID_MM / s))) for s in image.GetSpacing()]
    image = sitk.Cast(image, sitk.sitkFloat32)
    return sitk.BinShrink(image, factors) if any(f > 1 for f in factors) else image


def _fill_holes_per_slice(mask: sitk.Image) -> sitk.Image:
    """2D hole filling of every axial slice in one call: the slices are tiled into one 2D mosaic
    with a background row between them, so a hole cannot reach into another slice."""
    a = sitk.GetArrayFromImage(mask)                        # (Z, Y, X)
    z, y, x = a.shape
    mosaic = np.zeros((z, y + 1, x), np.uint8)
    mosaic[:, :y] = a
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(mosaic.reshape(z * (y + 1), x))))
    out = sitk.GetImageFromArray(filled.reshape(z, y + 1, x)[:, :y].copy())
    out.CopyInformation(mask)
    return out


def segment_lungs(ct: sitk.Image) -> sitk.Image:
    """Binary lung mask on a ~LUNG_GRID_MM grid: air below LUNG_HU not connected to the air around
    the body, the largest components, closed and with per-slice holes (vessels) filled."""
    coarse = _coarse(ct)
    # A one-voxel air frame around each slice joins all outside air into one 3D component, while
    # lungs cut by the ends of a slab are not mistaken for outside air (no padding along z).
    framed = sitk.ConstantPad(coarse, (1, 1, 0), (1, 1, 0), -1000.0)
    air = sitk.BinaryThreshold(framed, -1e9, LUNG_HU, 1, 0)
    components = sitk.ConnectedComponent(air, True)
    outside = components[0, 0, 0]
    components = sitk.Mask(components, sitk.NotEqual(components, outside))
    components = sitk.Crop(components, (1, 1, 0), (1, 1, 0))
    relabel = sitk.RelabelComponentImageFilter()
    relabel.SortByObjectSizeOn()
    ordered = relabel.Execute(components)
    sizes = relabel.GetSizeOfObjectsInPixels()
    if not sizes:
        return sitk.Cast(ordered * 0, sitk.sitkUInt8)
    keep = [i + 1 for i, s in enumerate(sizes[:2]) if s >= LUNG_MIN_FRACTION * sizes[0]]
    lungs = sitk.Cast(sitk.BinaryThreshold(ordered, 1, max(keep), 1, 0), sitk.sitkUInt8)
    lungs = sitk.BinaryMorphologicalClosing(lungs, (1, 1, 1))
    # Vessels are holes in 2D but, branching to the hilum, not in 3D: fill slice by slice.
    return _fill_holes_per_slice(lungs)


def _voi_fits(ct: sitk.Image, grid: sitk.Image, index_zyx: np.ndarray, half_mm: float) -> np.ndarray:
    """Per voxel (z, y, x) of `grid`: the cube of half side half_mm around it (along the CT's axes)
    lies inside the CT, i.e. its VOI would have all its planes and no padding."""
    d = np.array(ct.GetDirection()).reshape(3, 3)
    phys = np.asarray(grid.GetOrigin()) + (index_zyx[:, ::-1] * np.asarray(grid.GetSpacing())) @ d.T
    ijk = (phys - np.asarray(ct.GetOrigin())) @ d / np.asarray(ct.GetSpacing())  # continuous CT index
    reach = half_mm / np.asarray(ct.GetSpacing())
    return np.all((ijk - reach >= -0.5 - 1e-3) & (ijk + reach <= np.asarray(ct.GetSize()) - 0.5 + 1e-3), axis=1)


def background_centres(ct: sitk.Image, nodules: sitk.Image | None, count: int, rng: np.random.Generator,
                       min_mm: float = 5.0, max_mm: float = 25.0,
                       voi_mm: float | None = None) -> tuple[list[tuple[float, float, float]], str]:
    """Up to `count` random physical points inside the lungs (nodules removed) whose distance to
    the boundary of that region is in [min_mm, max_mm]. With voi_mm, points whose voi_mm cube lies
    inside the CT and holds no nodule are drawn first (their VOI has every plane to pick from); the
    others only when there are too few. Returns the points and a warning ('' if none) of the form
    "<kind>: <details>" (prep prints one line per kind)."""
    if count <= 0:
        return [], ""
    lungs = segment_lungs(ct)
    touched = None
    if nodules is not None:
        # Block average '> 0' on the same coarse grid: every coarse voxel a nodule touches leaves the lungs.
        touched = sitk.Cast(sitk.NotEqual(_coarse(nodules), 0.0), sitk.sitkUInt8)
        lungs = sitk.Mask(lungs, sitk.Cast(sitk.Equal(touched, 0), sitk.sitkUInt8))
    if not np.any(sitk.GetArrayViewFromImage(lungs)):
        return [], f"no background VOI: no lung found (air below {LUNG_HU:g} HU inside the body)"
    distance = sitk.SignedMaurerDistanceMap(lungs, insideIsPositive=True, squaredDistance=False,
                                            useImageSpacing=True)
    d = sitk.GetArrayViewFromImage(distance)
    candidates = np.argwhere((d >= min_mm) & (d <= max_mm))  # (N, 3) as (z, y, x)
    if len(candidates) == 0:
        return [], f"no background VOI: no lung voxel is {min_mm:g}-{max_mm:g} mm inside the lung boundary"
    order = rng.permutation(len(candidates))
    if voi_mm is not None:
        good = _voi_fits(ct, lungs, candidates, voi_mm / 2)
        if touched is not None:
            radius = [int(np.ceil(voi_mm / 2 / s)) for s in lungs.GetSpacing()]
            near = sitk.GetArrayViewFromImage(sitk.BinaryDilate(touched, radius, sitk.sitkBox))
            good &= near[tuple(candidates.T)] == 0
        order = np.concatenate([order[good[order]], order[~good[order]]])  # stable: still random within each
    picks = order[:count]
    centres = [lungs.TransformIndexToPhysicalPoint(tuple(int(v) for v in candidates[p][::-1])) for p in picks]
    warning = ("" if len(centres) == count
               else f"fewer background VOIs than asked: {len(centres)} of {count} (few lung voxels)")
    return [tuple(float(v) for v in c) for c in centres], warning

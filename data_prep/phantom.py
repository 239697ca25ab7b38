"""The CT phantom of the synthetic cohort: a chest CT in HU with nodules whose phenotype follows the programs.

A subject's four programs z (data_prep.gene_model.PROGRAMS, one value each, about N(0, 1)) set its nodules:
size (nominal diameter 5 + 25 Phi(z) mm), density (solid fraction Phi(z): a solid core of that volume
fraction inside a ground-glass nodule), irregularity (lobulation and spiculation of the boundary, amplitude
Phi(z)) and texture (internal heterogeneity: SD and correlation length grow with Phi(z)); every nodule adds
its own small jitter to z. The phantom does not know where the programs come from (data_prep.gene_model).

Geometry: `matrix` voxels in plane over a 358.4 mm field of view (0.7 mm at 512) and a 210 mm slab of
axial slices 1.25 mm * 512 / matrix thick (168 slices of 1.25 mm at 512, 42 of 5 mm at 128): small
matrices keep the anisotropy of the 512 grid and stay fast. The lungs end 35 mm inside the slab and
nodules lie at least 35 mm from its ends and sides, so prep's 60 mm VOIs (nodule and background)
have all their CT planes. Subject k's anatomy and nodules come from its own stream (1 + k, 1) of the
cohort's SeedSequence (data_prep.gene_model.stream).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from .gene_model import PROGRAMS, stream, subject_id, subject_programs

FOV_MM = 358.4         # 512 x 0.7 mm
SLAB_MM = 210.0
EDGE_MARGIN_MM = 35.0  # distance from a nodule centre to the volume's sides and ends (a 60 mm VOI fits)
LUNG_END_MM = 35.0     # lungs end this far from the first/last plane: a background VOI (centre >= 5 mm
                       # inside the lungs) keeps all its planes
DIAMETER_MM = (5.0, 30.0)
SECOND_NODULE_P = 0.25
RADIUS_CAP = 1.9       # spikes and lobes reach at most this multiple of the nominal radius
JITTER = 0.2           # per-nodule noise on the programs, in units of their SD
MAX_VESSEL_GENERATION = 6
SUBVOXEL_MM = 1.0      # nodules are rendered on sub-voxels of at most this size (partial volume)
PROGRAM_EFFECTS = {
    "size": "nodule diameter_mm = 5 + 25 * Phi(z + jitter)",
    "density": "solid volume fraction Phi(z + jitter): solid core (~+30 HU) in ground glass (-600..-400 HU)",
    "irregularity": "lobulation and spiculation amplitude Phi(z + jitter)",
    "texture": "internal heterogeneity: SD 8 + 70 * Phi(z + jitter) HU, scale 0.8 + 0.8 * Phi mm",
}
"""What each program does to a nodule (written into truth.json)."""


@dataclass(frozen=True)
class Grid:
    """Voxel grid of every subject: (Z, Y, X) arrays, identity direction (LPS)."""

    matrix: int
    slices: int
    spacing: tuple[float, float, float]  # (x, y, z) mm, SimpleITK order

    @classmethod
    def for_matrix(cls, matrix: int) -> "Grid":
        sxy = FOV_MM / matrix
        sz = 1.25 * 512 / matrix
        return cls(matrix, int(round(SLAB_MM / sz)), (sxy, sxy, sz))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.slices, self.matrix, self.matrix)



@dataclass
class Subject:
    """One synthetic subject: CT in HU and nodule mask as (Z, Y, X) arrays on `grid`, placed at `origin`."""

    subject_id: str
    hu: np.ndarray             # int16
    mask: np.ndarray           # uint8
    origin: tuple[float, float, float]
    nodules: list[dict]
    anatomy: dict


def _box(center_idx: np.ndarray, half_vox: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    lo = np.maximum(center_idx - half_vox, 0)
    hi = np.minimum(center_idx + half_vox + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _box_coords(box: tuple[slice, ...], origin_zyx: np.ndarray, spacing_zyx: np.ndarray) -> list[np.ndarray]:
    """Physical coordinates (mm) of the voxel centres in `box`, as broadcastable (z, y, x) arrays."""
    return [(origin_zyx[a] + spacing_zyx[a] * np.arange(box[a].start, box[a].stop, dtype=np.float32)).reshape(
        [-1 if b == a else 1 for b in range(3)]) for a in range(3)]


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _anatomy(rng: np.random.Generator, grid: Grid, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Body, chest wall, ribs, mediastinum, heart, aorta, spine, trachea and two lung fields in HU
    (float32, before vessels, nodules and noise) and the lung-field mask (bool).

    Shapes are ellipses whose axes change smoothly with z; a per-slice scale (nz, 1, 1) broadcast
    against x (1, 1, nx) and y (1, ny, 1) keeps every full-volume step to one or two array passes."""
    nz, ny, nx = grid.shape
    sx, sy, _ = grid.spacing
    centre = np.array([rng.uniform(-6, 6), rng.uniform(-10, 4)])  # body centre (x, y) mm
    x = (origin[0] + sx * np.arange(nx, dtype=np.float32) - centre[0])[None, None, :]
    y = (origin[1] + sy * np.arange(ny, dtype=np.float32) - centre[1])[None, :, None]
    z = (np.arange(nz, dtype=np.float32) * grid.spacing[2])[:, None, None]  # mm above the first plane
    lung_lo, lung_hi = LUNG_END_MM, (nz - 1) * grid.spacing[2] - LUNG_END_MM
    t = np.clip((z - lung_lo) / (lung_hi - lung_lo), 0.0, 1.0)  # 0 lung base, 1 apex (abdomen / neck beyond)

    def ellipse(cx, cy, a, b, scale: float | np.ndarray = 1.0) -> np.ndarray:
        """((x - cx) / a)^2 + ((y - cy) / b)^2 < scale, slice by slice (no full-volume float temporaries)."""
        ex, ey = ((x - cx) / a) ** 2, ((y - cy) / b) ** 2  # (nz or 1, 1, nx), (nz or 1, ny, 1)
        out = np.empty(grid.shape, dtype=bool)
        buf = np.empty((ny, nx), dtype=np.float32)
        for k in range(nz):
            np.add(ex[k % len(ex)], ey[k % len(ey)], out=buf)
            np.less(buf, scale, out=out[k])
        return out

    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    a_body, b_body = rng.uniform(145, 165), rng.uniform(100, 118)
    fat, muscle = rng.uniform(6, 18), rng.uniform(8, 12)
    ab, bb = a_body * (1 - 0.05 * t), b_body * (1 - 0.03 * t)
    ac, bc = ab - fat - muscle, bb - fat - muscle  # thoracic cavity
    np.copyto(hu, np.float32(-100.0), where=ellipse(0, 0, ab, bb))  # subcutaneous fat
    np.copyto(hu, np.float32(45.0), where=ellipse(0, 0, ab - fat, bb - fat))  # chest-wall muscle
    # Ribs: short bright arcs just outside the cavity, shifting with z as ribs slant:
    # cos(11 theta + w z + p) > 0.55, with theta taken in plane (2D) and the sum expanded per slice.
    theta = np.arctan2(y[0] / b_body, x[0] / a_body)  # (ny, nx)
    wz = (2 * np.pi * z / 38.0 + rng.uniform(0, 2 * np.pi))
    ribs = np.cos(11 * theta) * np.cos(wz) - np.sin(11 * theta) * np.sin(wz) > 0.55
    ribs &= ellipse(0, 0, ac + 7.0, bc + 7.0) & (y > -0.7 * bb)
    np.copyto(hu, np.float32(550.0), where=ribs)
    del ribs
    cavity = ellipse(0, 0, ac, bc)
    np.copyto(hu, np.float32(-60.0), where=cavity)  # mediastinal fat and soft tissue

    # Lungs: two ellipses with a wobbly boundary, narrower towards the apex, cut by the mediastinum.
    lx, ly = rng.uniform(0.47, 0.53), rng.uniform(0.0, 0.08)
    la, lb = rng.uniform(0.40, 0.45), rng.uniform(0.80, 0.88)
    apex = 1.0 - 0.12 * t
    lungs = np.zeros(grid.shape, dtype=bool)
    a_mid, b_mid = a_body - fat - muscle, b_body - fat - muscle
    for side in (-1.0, 1.0):  # -1: patient right (-x), +1: patient left
        phi = np.arctan2(y[0] - ly * b_mid, x[0] - side * lx * a_mid)  # (ny, nx)
        wobble = 1.0 + 0.04 * np.cos(3 * phi + rng.uniform(0, 6.3)) + 0.03 * np.cos(5 * phi + rng.uniform(0, 6.3))
        lungs |= ellipse(side * lx * ac, ly * bc, la * ac * apex * (0.95 if side > 0 else 1.0), lb * bc * apex,
                         wobble ** 2)
    heart_scale = np.sqrt(np.clip(1.0 - t / 0.75, 0.0, 1.0)) + 1e-3
    heart = ellipse(rng.uniform(12, 25), -rng.uniform(20, 30), 0.42 * ac * heart_scale, 0.45 * bc * heart_scale)
    spine_y = 0.82 * bc
    aorta = ellipse(0.15 * ac, 0.55 * bc, 13.0, 13.0)
    vertebra = ellipse(0.0, spine_y, 17.0, 17.0)
    lungs &= cavity & (z >= lung_lo) & (z <= lung_hi)
    lungs &= ~(heart | aorta | vertebra)
    lungs &= ~((np.abs(x) < rng.uniform(14, 22)) | ((y > spine_y - 12) & (np.abs(x) < 35)))  # mediastinum
    np.copyto(hu, np.float32(40.0), where=heart | aorta)  # blood, unenhanced
    np.copyto(hu, np.float32(700.0), where=vertebra)  # cortical rim
    np.copyto(hu, np.float32(250.0), where=ellipse(0.0, spine_y, 14.5, 14.5))  # trabecular bone
    np.copyto(hu, np.float32(20.0), where=ellipse(0.0, spine_y + 24.0, 7.0, 7.0))  # spinal canal
    # Lung parenchyma: denser in the dependent (posterior) part, as in a supine patient.
    np.copyto(hu, -862.0 + 35.0 * np.clip(y / bc, -1.0, 1.0), where=lungs)
    # Trachea above the carina: air inside the body that is not lung.
    np.copyto(hu, np.float32(-1000.0), where=(t > 0.7) & ellipse(0.0, -0.05 * b_mid, 9.0, 9.0))
    info = {"body_semi_axes_mm": [round(float(a_body), 1), round(float(b_body), 1)],
            "body_centre_mm": [round(float(c), 2) for c in centre]}
    return hu, lungs, info


def _vessels(rng: np.random.Generator, grid: Grid, origin: np.ndarray, hu: np.ndarray, lungs: np.ndarray) -> None:
    """Branching, tapering vessel trees from each hilum, drawn into the lung fields (+40 HU, partial volume)."""
    spacing_zyx = np.array(grid.spacing[::-1])
    origin_zyx = origin[::-1]
    h = float(min(grid.spacing))
    alpha = np.zeros(grid.shape, dtype=np.float32)
    zc = origin[2] + 0.5 * (grid.slices - 1) * grid.spacing[2]
    for side in (-1.0, 1.0):
        lung_x = np.nonzero(lungs.any(axis=(0, 1)))[0]
        half = lung_x[lung_x < grid.matrix // 2] if side < 0 else lung_x[lung_x >= grid.matrix // 2]
        if half.size == 0:
            continue
        medial = half.max() if side < 0 else half.min()
        hilum = np.array([origin[0] + medial * grid.spacing[0], 0.0, zc])
        ys = np.nonzero(lungs[:, :, medial].any(axis=0))[0]
        hilum[1] = origin[1] + (ys.mean() if ys.size else grid.matrix / 2) * grid.spacing[1]
        # Lobar trunks fan out from the hilum: up, down, lateral, anterior and posterior.
        trunks = [(0.5, 0.0, 0.9), (0.5, 0.0, -0.9), (1.0, 0.0, 0.0), (0.6, -0.8, 0.2), (0.6, 0.8, -0.2)]
        stack = [(hilum, np.array([side * dx, dy + rng.uniform(-0.2, 0.2), dz]), rng.uniform(3.5, 5.0), 0)
                 for dx, dy, dz in trunks]
        while stack:
            start, direction, radius, gen = stack.pop()
            direction = direction / np.linalg.norm(direction)
            length = rng.uniform(22, 34) * 0.8 ** gen
            end = start + direction * length
            lo = np.minimum(start, end) - radius - h
            hi = np.maximum(start, end) + radius + h
            lo_idx = np.floor((lo[::-1] - origin_zyx) / spacing_zyx).astype(int)
            hi_idx = np.ceil((hi[::-1] - origin_zyx) / spacing_zyx).astype(int)
            box = tuple(slice(max(a, 0), min(b + 1, n)) for a, b, n in zip(lo_idx, hi_idx, grid.shape))
            if all(s.stop > s.start for s in box):
                zz, yy, xx = _box_coords(box, origin_zyx, spacing_zyx)
                seg = end - start
                u = ((xx - start[0]) * seg[0] + (yy - start[1]) * seg[1] + (zz - start[2]) * seg[2]) / (seg @ seg)
                u = np.clip(u, 0.0, 1.0)
                d = np.sqrt((xx - start[0] - u * seg[0]) ** 2 + (yy - start[1] - u * seg[1]) ** 2
                            + (zz - start[2] - u * seg[2]) ** 2)
                np.maximum(alpha[box], np.clip((radius - d) / h + 0.5, 0.0, 1.0), out=alpha[box])
            end_idx = np.round((end[::-1] - origin_zyx) / spacing_zyx).astype(int)
            inside = bool(np.all(end_idx >= 0) and np.all(end_idx < grid.shape) and lungs[tuple(end_idx)])
            if gen < MAX_VESSEL_GENERATION and (inside or gen == 0):
                for sign in (-1.0, 1.0):
                    turn = np.cross(direction, _unit_vectors(rng, 1)[0])
                    turn /= np.linalg.norm(turn) + 1e-9
                    child = direction + sign * rng.uniform(0.35, 0.7) * turn
                    stack.append((end, child, max(radius * 0.72, 0.6), gen + 1))
    alpha *= lungs
    hu += alpha * (40.0 - hu)


def _nodule_params(rng: np.random.Generator, z: np.ndarray) -> dict:
    """Phenotype of one nodule from the subject's programs plus per-nodule jitter."""
    q = ndtr(z + JITTER * rng.standard_normal(len(PROGRAMS)))  # in (0, 1), monotone in each program
    size, solid, irregular, texture = (float(v) for v in q)
    p = {
        "diameter_mm": DIAMETER_MM[0] + (DIAMETER_MM[1] - DIAMETER_MM[0]) * size,
        "density": solid,  # solid volume fraction: 0 pure ground glass, 1 solid
        "solid_hu": float(30.0 + 6.0 * rng.standard_normal()),
        "ggo_hu": float(-600.0 + 200.0 * solid + 20.0 * rng.standard_normal()),
        "irregularity": irregular,
        "lobes": int(rng.integers(3, 7)),
        "spicules": int(round(2 + 12 * irregular)),
        "texture": texture,
        "texture_sd_hu": 8.0 + 70.0 * texture,
        "texture_scale_mm": 0.8 + 0.8 * texture,
        "elongation": [float(v) for v in rng.uniform(0.88, 1.12, 3)],
    }
    p["lobe_dirs"] = _unit_vectors(rng, p["lobes"]).astype(np.float32)
    p["spike_dirs"] = _unit_vectors(rng, p["spicules"]).astype(np.float32)
    p["spike_kappa"] = rng.uniform(60.0, 160.0, p["spicules"])
    # How far the boundary reaches, as a multiple of the nominal radius: its maximum over many
    # directions, including the tips of lobes and spikes.
    probe = np.concatenate([_unit_vectors(rng, 4000).astype(np.float32), p["lobe_dirs"], p["spike_dirs"]])
    p["reach"] = float(_radius_factor(probe, p).max()) * max(p["elongation"]) * 1.02
    return p


def _radius_factor(u: np.ndarray, p: dict) -> np.ndarray:
    """Boundary radius / nominal radius along unit directions u (..., 3): broad lobes (lobulation) and
    narrow spikes (spiculation) whose amplitude grows with irregularity."""
    a = p["irregularity"]
    f = np.ones(u.shape[:-1], dtype=np.float32)
    for v in p["lobe_dirs"]:
        f += 0.35 * a * np.exp(4.0 * (u @ v - 1.0))
    for v, k in zip(p["spike_dirs"], p["spike_kappa"]):
        f += 0.9 * a * a * np.exp(k * (u @ v - 1.0))
    return np.minimum(f, RADIUS_CAP)


def _place(rng: np.random.Generator, grid: Grid, origin: np.ndarray, lungs: np.ndarray, reach_mm: float,
           taken: list[tuple[np.ndarray, float]]) -> np.ndarray | None:
    """A voxel centre (x, y, z mm) whose ball of radius reach_mm + 2 mm lies in the lung fields, at least
    EDGE_MARGIN_MM from the volume's sides and ends, with the nodule inside the slab and clear of other nodules."""
    spacing_zyx = np.array(grid.spacing[::-1])
    origin_zyx = origin[::-1]
    candidates = np.flatnonzero(lungs)
    margin = reach_mm + 2.0
    half = np.ceil(margin / spacing_zyx).astype(int)
    edge = int(math.ceil(EDGE_MARGIN_MM / grid.spacing[0]))
    for _ in range(400):
        idx = np.array(np.unravel_index(candidates[rng.integers(len(candidates))], grid.shape))
        if idx[1] < edge or idx[2] < edge or idx[1] >= grid.matrix - edge or idx[2] >= grid.matrix - edge:
            continue
        z_lo, z_hi = (idx[0] * spacing_zyx[0] + d * max(reach_mm, EDGE_MARGIN_MM) for d in (-1, 1))
        if z_lo < 0 or z_hi > (grid.slices - 1) * spacing_zyx[0]:
            continue
        centre = origin_zyx + idx * spacing_zyx
        if any(np.linalg.norm(centre - c) < margin + r + 8.0 for c, r in taken):
            continue
        box = _box(idx, half, grid.shape)
        zz, yy, xx = _box_coords(box, origin_zyx, spacing_zyx)
        ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= margin ** 2
        if np.all(lungs[box][ball]):
            return centre[::-1].copy()
    return None


def _draw_nodule(rng: np.random.Generator, grid: Grid, origin: np.ndarray, hu: np.ndarray, centre: np.ndarray,
                 p: dict) -> np.ndarray:
    """Draw one nodule into hu (in place) and return its mask (bool, whole grid).

    The nodule is rendered on sub-voxels of at most ~1 mm and averaged, so a voxel holds the partial
    volume of rim, core and lung it covers; the mask is the voxels at least half inside the nodule."""
    spacing_zyx = np.array(grid.spacing[::-1])
    origin_zyx = origin[::-1]
    f = np.clip(np.ceil(spacing_zyx / SUBVOXEL_MM), 1, 4).astype(int)  # sub-voxels per voxel (z, y, x)
    sub = spacing_zyx / f
    r0 = 0.5 * p["diameter_mm"]
    idx = np.round((centre[::-1] - origin_zyx) / spacing_zyx).astype(int)
    box = _box(idx, np.ceil((r0 * p["reach"] + 2 * spacing_zyx.max()) / spacing_zyx).astype(int), grid.shape)
    # Sub-voxel centres along each axis, as offsets from the nodule centre (mm), broadcastable (z, y, x).
    zz, yy, xx = [(origin_zyx[a] + spacing_zyx[a] * ((np.arange(box[a].start * f[a], box[a].stop * f[a]) + 0.5)
                                                     / f[a] - 0.5) - centre[2 - a]).astype(np.float32).reshape(
        [-1 if b == a else 1 for b in range(3)]) for a in range(3)]
    e = p["elongation"]
    d = np.stack(np.broadcast_arrays(xx / e[0], yy / e[1], zz / e[2]), axis=-1)  # (z, y, x, 3), nodule frame
    r = np.linalg.norm(d, axis=-1)
    u = d / np.maximum(r, 1e-6)[..., None]
    boundary = r0 * _radius_factor(u, p)
    inside = (r <= boundary).astype(np.float32)
    # Solid core of volume fraction `density` inside a ground-glass rim, plus internal texture.
    core = (r <= np.cbrt(p["density"]) * boundary).astype(np.float32)
    field = ndimage.gaussian_filter(rng.standard_normal(inside.shape).astype(np.float32),
                                    p["texture_scale_mm"] / sub, mode="reflect")
    field /= field.std() + 1e-6
    value = p["ggo_hu"] + (p["solid_hu"] - p["ggo_hu"]) * core + p["texture_sd_hu"] * field

    def to_voxels(a: np.ndarray) -> np.ndarray:
        n = a.shape
        return a.reshape(n[0] // f[0], f[0], n[1] // f[1], f[1], n[2] // f[2], f[2]).mean(axis=(1, 3, 5))

    alpha = to_voxels(inside)
    region = hu[box]
    region *= 1.0 - alpha
    region += to_voxels(inside * value)
    own = alpha >= 0.5
    centre_voxel = tuple(int(i - b.start) for i, b in zip(idx, box))
    own[centre_voxel] = own[centre_voxel] or alpha[centre_voxel] > 0  # a nodule smaller than a voxel: its voxel
    # Keep the mask one 26-connected piece: a spike thinner than a voxel may break off.
    labels, n = ndimage.label(own, structure=np.ones((3, 3, 3)))
    if n > 1:
        own = labels == 1 + int(np.argmax(ndimage.sum_labels(own, labels, range(1, n + 1))))
    mask = np.zeros(grid.shape, dtype=bool)
    mask[box] = own
    return mask


def synthesize_subject(seed: int, index: int, grid: Grid, programs: np.ndarray | None = None) -> Subject:
    """CT, mask and nodule records of subject `index` of the cohort with this seed, as write_cohort writes
    them. `programs` (len(PROGRAMS),) are the subject's programs (data_prep.gene_model.simulate_expression);
    None: those of the aligned design (`subject_programs`). Other values keep the anatomy and draws (what-if)."""
    sid = subject_id(index)
    z = subject_programs(seed, index) if programs is None else np.asarray(programs, dtype=np.float64)
    rng = stream(seed, 1 + index, 1)
    origin = np.array([-(grid.matrix - 1) / 2 * grid.spacing[0] + rng.uniform(-5, 5),
                       -(grid.matrix - 1) / 2 * grid.spacing[1] + rng.uniform(-5, 5),
                       -float(rng.integers(150, 260))])
    hu, lungs, anatomy = _anatomy(rng, grid, origin)
    _vessels(rng, grid, origin, hu, lungs)
    n_nodules = 1 + int(rng.random() < SECOND_NODULE_P)
    mask = np.zeros(grid.shape, dtype=np.uint8)
    taken: list[tuple[np.ndarray, float]] = []
    nodules = []
    voxel_mm3 = float(np.prod(grid.spacing))
    for n in range(n_nodules):
        p = _nodule_params(rng, z)
        reach = 0.5 * p["diameter_mm"] * p["reach"]
        centre = _place(rng, grid, origin, lungs, reach, taken)
        if centre is None:
            if n == 0:
                raise RuntimeError(f"{sid}: no place in the lungs for a {p['diameter_mm']:.1f} mm nodule; "
                                   f"this is a bug in the phantom (lungs too small for the grid {grid})")
            break
        taken.append((centre[::-1], reach))
        own = _draw_nodule(rng, grid, origin, hu, centre, p)
        mask[own] = 1
        zi, yi, xi = np.nonzero(own)
        centroid = origin + np.array([xi.mean(), yi.mean(), zi.mean()]) * np.array(grid.spacing)
        volume = own.sum() * voxel_mm3
        nodules.append({
            "center_mm": [round(float(c), 3) for c in centroid],
            "diameter_mm": round(p["diameter_mm"], 3),
            "equivalent_diameter_mm": round(float(np.cbrt(6 * volume / np.pi)), 3),
            "volume_mm3": round(float(volume), 2),
            "voxels": int(own.sum()),
            "density": round(p["density"], 4),
            "solid_hu": round(p["solid_hu"], 1),
            "ggo_hu": round(p["ggo_hu"], 1),
            "irregularity": round(p["irregularity"], 4),
            "lobes": p["lobes"],
            "spicules": p["spicules"],
            "texture": round(p["texture"], 4),
            "texture_sd_hu": round(p["texture_sd_hu"], 2),
            "texture_scale_mm": round(p["texture_scale_mm"], 3),
        })
    # Quantum noise over the whole field of view, then the scanner's integer store.
    hu += np.float32(rng.uniform(14.0, 22.0)) * rng.standard_normal(grid.shape, dtype=np.float32)
    np.clip(hu, -1024, 3071, out=hu)
    hu_i16 = np.rint(hu).astype(np.int16)
    return Subject(sid, hu_i16, mask, tuple(float(o) for o in origin), nodules, anatomy)

"""One subject, from its input files to its slices: read -> nodule VOIs -> lung and backgrounds -> slices.

Runs inside a Ray task or in the driver's process (data_prep.prep.executor). Bad input never raises
out of `process_subject`: the subject's result says "failed" with a one-line reason, and the other
subjects go on. A subject's result is cached under `subject_key` (its inputs' SHA-256 and the
parameters below), so whatever shapes the slices must be in PrepParams or PREP_VERSION.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data_prep.constants import DEFAULT_SEED
from data_prep.readers import SubjectError, SubjectInputs
from radiogen.schema import HU_WINDOW

if TYPE_CHECKING:
    import pyarrow as pa

PREP_VERSION = 2
"""Bump when the processing changes what a subject's slices (or its recorded outcome) are for the
same inputs (cache key). 2: background centres whose VOI fits in the CT and holds no nodule are
drawn first; warnings as "<kind>: <details>"."""


@dataclass(frozen=True)
class PrepParams:
    """Everything that shapes one subject's slices (part of the cache key)."""

    image_size: int = 128
    """Side of the square slices in pixels (paper: 128)."""
    voi_mm: float = 60.0
    """Side of the cubic VOI in mm (paper: 60)."""
    bg_vois: int = 2
    """Background VOIs per subject; 0 = none."""
    bg_slices: int = 20
    """Random nodule-free planes per background VOI (paper: 20)."""
    bg_min_mm: float = 5.0
    """Background VOI centres lie at least this far inside the lung boundary (paper: 5)."""
    bg_max_mm: float = 25.0
    """... and at most this far (paper: 25)."""
    hu_window: tuple[float, float] = HU_WINDOW
    """HU clipped to this window, then scaled to [-1, 1]."""
    seed: int = DEFAULT_SEED
    """Seed of background centres and plane choice (per subject) and of the split."""

    def cache_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prep_version": PREP_VERSION}


@dataclass
class SubjectResult:
    """What became of one subject: its slices, or why it has none."""

    subject_id: str
    key: str | None = None
    """Cache key (None when the inputs could not be read)."""
    inputs: dict[str, str] = field(default_factory=dict)
    """{path: SHA-256} of every input file."""
    cached: bool = False
    """True: unchanged since it was cached; table and info are read from the cache instead."""
    status: str = "failed"
    """"ok" or "failed"."""
    reason: str = ""
    """One line: why it failed."""
    deterministic: bool = True
    """False for a failure of the machine, not of the input (not cached, so a re-run tries again)."""
    table: "pa.Table | None" = None
    """The slices (radiogen.schema.SLICE_SCHEMA without `split`)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Counts, warnings, CT geometry and nodule centres (the manifest's per-subject outcome)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step."""
    traceback: str | None = None
    """The traceback of an internal error, printed by the driver."""


def subject_key(inputs: dict[str, str], params: PrepParams) -> str:
    blob = json.dumps({"inputs": sorted(inputs.values()), "params": params.cache_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def fingerprint(inputs: SubjectInputs) -> dict[str, str]:
    """{path: SHA-256} of every input file of one subject; SubjectError names an unreadable one."""
    from radiogen.schema import sha256_file

    hashes = {}
    for f in inputs.files:
        try:
            hashes[f] = sha256_file(f)
        except OSError as err:
            raise SubjectError(f"cannot read input file {f}: {err.strerror}") from None
    return hashes


def _subject_rng(subject_id: str, seed: int) -> np.random.Generator:
    # Independent of processing order and of the other subjects.
    return np.random.default_rng([seed, int(hashlib.sha256(subject_id.encode()).hexdigest()[:12], 16)])


def _subject_schema() -> "pa.Schema":
    """The slice schema without `split`, which the driver assigns per run."""
    import pyarrow as pa

    from radiogen.schema import SLICE_SCHEMA

    return pa.schema([f for f in SLICE_SCHEMA if f.name != "split"])


def _rows(subject_id: str, kind: str, voi_id: int, voi, planes: np.ndarray) -> dict[str, list]:
    from radiogen.schema import encode_image, encode_mask

    cx, cy, cz = voi.center_mm
    n = len(planes)
    return {"subject_id": [subject_id] * n, "kind": [kind] * n, "voi_id": [voi_id] * n,
            "slice_index": [int(k) for k in planes],
            "slice_offset_mm": [float(voi.offsets_mm[k]) for k in planes],
            "image": [encode_image(voi.image[k]) for k in planes],
            "mask": [encode_mask(voi.mask[k]) for k in planes],
            "pixel_spacing_mm": [voi.pixel_spacing_mm] * n,
            "voi_center_x_mm": [cx] * n, "voi_center_y_mm": [cy] * n, "voi_center_z_mm": [cz] * n,
            "padded": [bool(voi.padded[k]) for k in planes]}


def _read(inputs: SubjectInputs, timings: dict[str, float]):
    """(CT, nodule mask on the CT grid, nodules, their labelled components, warnings)."""
    from data_prep import geometry, readers

    t = time.perf_counter()
    ct = readers.read_ct(inputs.image)
    timings["read_image"] = time.perf_counter() - t
    t = time.perf_counter()
    if inputs.mask is None:
        raise SubjectError(f"CT read ({'x'.join(map(str, ct.GetSize()))} voxels) but no nodule mask / SEG series "
                           f"was found for this subject")
    if inputs.mask_is_seg:  # a DICOM SEG is placed on the CT grid by position
        mask = readers.read_seg(inputs.mask, ct, inputs.image)
    else:
        mask = readers.read_mask_file(inputs.mask, ct)
    readers.check_mask_content(mask, Path(inputs.mask).name)
    nodules, components, warnings = geometry.find_nodules(mask)
    if not nodules:
        raise SubjectError(f"mask {Path(inputs.mask).name} has only specks below {geometry.MIN_NODULE_MM3:g} mm3; "
                           f"no nodule to crop")
    timings["read_mask"] = time.perf_counter() - t
    return ct, mask, nodules, components, warnings


def _slices(inputs: SubjectInputs, params: PrepParams, timings: dict[str, float]) -> tuple["pa.Table", dict]:
    import pyarrow as pa
    import SimpleITK as sitk

    from data_prep import geometry

    ct, mask, nodules, components, warnings = _read(inputs, timings)
    t = time.perf_counter()
    window = tuple(params.hu_window)
    subject_schema = _subject_schema()
    columns: dict[str, list] = {f.name: [] for f in subject_schema}

    def add(rows: dict[str, list]) -> None:
        for k, v in rows.items():
            columns[k].extend(v)

    # Every plane of a nodule's VOI that shows it.
    n_nodule = 0
    for voi_id, nodule in enumerate(nodules):
        own = sitk.Cast(sitk.Equal(components, nodule.label), sitk.sitkUInt8)
        voi = geometry.extract_voi(ct, nodule.center_mm, voi_mm=params.voi_mm, image_size=params.image_size,
                                   window=window, own_mask=own)
        planes = np.flatnonzero(voi.mask.reshape(len(voi.mask), -1).any(1))
        if voi.padded[planes].any():
            warnings.append(f"nodule too close to the image edge for a full {params.voi_mm:g} mm VOI: nodule "
                            f"{voi_id} at {tuple(round(c, 1) for c in nodule.center_mm)} mm, "
                            f"{int(voi.padded[planes].sum())} of {len(planes)} slices padded with {window[0]:g} HU")
        if not voi.in_ct.all():
            warnings.append(f"CT ends within {params.voi_mm / 2:g} mm of a nodule along its slice axis: nodule "
                            f"{voi_id}'s VOI has {int(voi.in_ct.sum())} of {len(voi.in_ct)} planes")
        add(_rows(inputs.subject_id, "nodule", voi_id, voi, planes))
        n_nodule += len(planes)
    timings["nodule_vois"] = time.perf_counter() - t

    # Background VOIs inside the lung, away from every nodule; random nodule-free planes of each.
    t = time.perf_counter()
    rng = _subject_rng(inputs.subject_id, params.seed)
    centres, warning = geometry.background_centres(ct, mask, params.bg_vois, rng, params.bg_min_mm, params.bg_max_mm,
                                                   voi_mm=params.voi_mm)
    if warning:
        warnings.append(warning)
    timings["lung_segmentation"] = time.perf_counter() - t
    t = time.perf_counter()
    n_background = 0
    for j, centre in enumerate(centres):
        voi = geometry.extract_voi(ct, centre, voi_mm=params.voi_mm, image_size=params.image_size,
                                   window=window, all_nodules=mask)
        eligible = np.flatnonzero(voi.in_ct & ~voi.other_nodules)
        if len(eligible) < params.bg_slices:
            warnings.append(f"background VOI with fewer nodule-free CT planes than --bg-slices {params.bg_slices}: "
                            f"VOI {j} has {len(eligible)}, took them all")
        planes = np.sort(rng.choice(eligible, size=min(params.bg_slices, len(eligible)), replace=False))
        if voi.padded[planes].any():
            warnings.append(f"background VOI reaches beyond the image: VOI {j}, {int(voi.padded[planes].sum())} "
                            f"slices padded")
        add(_rows(inputs.subject_id, "background", len(nodules) + j, voi, planes))
        n_background += len(planes)
    timings["background_vois"] = time.perf_counter() - t
    info = {"n_nodules": len(nodules), "n_nodule_slices": n_nodule, "n_background_vois": len(centres),
            "n_background_slices": n_background, "warnings": warnings,
            "ct": {"size": list(ct.GetSize()), "spacing_mm": [round(s, 4) for s in ct.GetSpacing()]},
            "nodule_centres_mm": [[round(c, 2) for c in n.center_mm] for n in nodules]}
    return pa.table(columns, schema=subject_schema), info


def process_subject(inputs: SubjectInputs, params: PrepParams, hashes: dict[str, str] | None = None,
                    threads: int = 0) -> SubjectResult:
    """Make one subject's slices; never raises for bad input (status "failed" with a one-line reason).

    hashes: the inputs' `fingerprint` when the caller has it (None = hash them here).
    threads: SimpleITK threads (0 = leave its setting alone)."""
    import SimpleITK as sitk

    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    out = SubjectResult(inputs.subject_id)
    t = time.perf_counter()
    try:
        out.inputs = fingerprint(inputs) if hashes is None else hashes
        out.key = subject_key(out.inputs, params)
        if hashes is None:
            out.timings["fingerprint"] = time.perf_counter() - t
        if inputs.error:
            raise SubjectError(inputs.error)
        out.table, out.info = _slices(inputs, params, out.timings)
        out.status = "ok"
    except SubjectError as err:
        out.reason = str(err).splitlines()[0]
    except Exception as err:  # a bug or a resource problem, not the input: do not cache it
        out.reason = f"internal error {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        out.deterministic = False
        out.traceback = traceback.format_exc()
    return out

"""Reading CT volumes and nodule masks (docs/design.md §4): image files, DICOM series, DICOM SEG.

Everything is read with SimpleITK so spacing, origin and direction travel with the voxels; DICOM
SEG is decoded with highdicom and placed on the CT grid by physical position. Every problem with
one subject's input raises `SubjectError` with a one-line reason that says what to fix; the
caller records it and goes on with the other subjects.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# A CT in Hounsfield units has air near -1000 and soft tissue / bone above 0.
HU_AIR_MAX = -500.0
HU_TISSUE_MIN = 0.0
# A nodule mask covering more than this fraction of the volume is a body/lung mask or inverted.
MAX_MASK_FRACTION = 0.25
# Geometry tolerances when comparing image and mask grids (relative to the voxel size).
_GEOMETRY_RTOL = 1e-3
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SubjectError(Exception):
    """One subject's input cannot be used; str(err) is the one-line reason for the manifest."""


@dataclass(frozen=True)
class SubjectInputs:
    """Where one subject's CT and nodule mask are."""

    subject_id: str
    image: str
    """Image file (any format SimpleITK reads) or a DICOM series folder."""
    mask: str | None
    """Mask file on the image grid, a DICOM SEG file, or None when none was found."""
    mask_is_seg: bool = False
    files: tuple[str, ...] = ()
    """Every input file of this subject (fingerprinted; a change re-runs the subject)."""
    error: str = ""
    """A problem found while locating the inputs; the subject fails with it."""


def check_subject_id(subject_id: str) -> None:
    if not SAFE_ID.match(subject_id):
        raise SubjectError(f"subject id {subject_id!r} is unsafe as a file name; ids must match "
                           f"{SAFE_ID.pattern} (letters, digits, '.', '_', '-'); rename it in the inputs")


# ---------------------------------------------------------------------------------------------
# Locating inputs


def read_cases_file(path: str | Path) -> list[SubjectInputs]:
    """A CSV/TSV with columns subject_id, image, mask; relative paths are relative to the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheet exports often start with a byte-order mark
    except OSError as err:
        raise ValueError(f"cannot read cases file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"cases file {path} is not UTF-8 text; save it as UTF-8 CSV") from None
    dialect = "excel-tab" if text and "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    need = {"subject_id", "image", "mask"}
    header = set(rows[0]) if rows else set()
    if not rows or not need <= header:
        raise ValueError(f"cases file {path} needs a header with columns subject_id, image, mask "
                         f"(found {sorted(k for k in header if k)}) and at least one row")
    cases = []
    for row in rows:
        sid = (row["subject_id"] or "").strip()
        image = (path.parent / (row["image"] or "").strip()) if (row["image"] or "").strip() else None
        mask = (path.parent / (row["mask"] or "").strip()) if (row["mask"] or "").strip() else None
        files = tuple(str(p) for p in (image, mask) if p is not None)
        error = "" if image is not None else "no image path in the cases file"
        cases.append(SubjectInputs(sid, str(image) if image else "", str(mask) if mask else None,
                                   mask_is_seg=False, files=files, error=error))
    return cases


def _dicom_header(path: Path):
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM (README, thumbnails, ...): ignored by discovery
        return None


def discover_tcia(root: str | Path) -> list[SubjectInputs]:
    """Walk the TCIA layout ROOT/<subject>/<study>/<series>/*.dcm. For each subject pick the SEG
    series and the CT series it references (or the only CT series when there is no SEG)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--tcia-root {root} is not a folder (expected ROOT/<subject>/<study>/<series>/*.dcm)")
    cases = []
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        sid = subject_dir.name
        ct_series: dict[str, Path] = {}       # SeriesInstanceUID -> folder
        segs: list[tuple[Path, str]] = []     # (file, referenced CT series uid)
        all_files: list[str] = []
        for series_dir in sorted({f.parent for f in subject_dir.rglob("*") if f.is_file()}):
            files = sorted(f for f in series_dir.iterdir() if f.is_file())
            header = next((h for h in map(_dicom_header, files[:3]) if h is not None), None)
            if header is None:
                continue
            modality = str(header.get("Modality", ""))
            if modality == "CT":
                ct_series[str(header.SeriesInstanceUID)] = series_dir
                all_files += [str(f) for f in files]
            elif modality == "SEG":
                for f in files:
                    h = _dicom_header(f)
                    if h is not None and str(h.get("Modality", "")) == "SEG":
                        refs = h.get("ReferencedSeriesSequence") or []
                        segs.append((f, str(refs[0].SeriesInstanceUID) if refs else ""))
                        all_files.append(str(f))
        error, image, mask = "", "", None
        if not ct_series:
            error = f"no CT series under {subject_dir}"
        elif len(segs) > 1:
            error = f"{len(segs)} SEG objects under {subject_dir}; keep one nodule SEG per subject"
        elif segs:
            mask, ref = str(segs[0][0]), segs[0][1]
            if ref in ct_series:
                image = str(ct_series[ref])
            else:
                image = str(next(iter(ct_series.values()))) if len(ct_series) == 1 else ""
                # The SEG reader repeats this check with the decoded SEG and reports it.
                if not image:
                    error = (f"SEG {segs[0][0].name} references series {ref or '(none)'}, which is not among "
                             f"the {len(ct_series)} CT series of this subject")
        elif len(ct_series) == 1:
            image = str(next(iter(ct_series.values())))
        else:
            error = f"{len(ct_series)} CT series and no SEG under {subject_dir}; cannot tell which CT to use"
        cases.append(SubjectInputs(sid, image, mask, mask_is_seg=True, files=tuple(sorted(all_files)),
                                   error=error))
    return cases


# ---------------------------------------------------------------------------------------------
# Reading and checking volumes


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # SimpleITK errors start with a source location; the useful part is the last line.
    return (lines[-1] if lines else type(err).__name__)[:300]


@dataclass(frozen=True)
class _NiftiLayout:
    data_offset: int
    n_voxels: int
    bitpix: int
    float_dtype: str | None   # numpy dtype of float voxels, None for integer data

    @property
    def total_bytes(self) -> int:
        return self.data_offset + self.n_voxels * self.bitpix // 8


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """Where the voxels of a NIfTI-1/2 file are, or None if `header` is not NIfTI."""
    floats = {16: "f4", 64: "f8"}
    for order in ("<", ">"):
        size = int(np.frombuffer(header[:4], f"{order}i4")[0]) if len(header) >= 4 else 0
        if size == 348 and len(header) >= 348:
            dims = np.frombuffer(header[40:56], f"{order}i2").astype(np.int64)
            datatype = int(np.frombuffer(header[70:72], f"{order}i2")[0])
            bitpix = int(np.frombuffer(header[72:74], f"{order}i2")[0])
            offset = max(int(np.frombuffer(header[108:112], f"{order}f4")[0]), 352)
        elif size == 540 and len(header) >= 540:
            dims = np.frombuffer(header[16:80], f"{order}i8")
            datatype = int(np.frombuffer(header[12:14], f"{order}i2")[0])
            bitpix = int(np.frombuffer(header[14:16], f"{order}i2")[0])
            offset = max(int(np.frombuffer(header[168:176], f"{order}i8")[0]), 544)
        else:
            continue
        n = int(np.prod(dims[1:1 + max(int(dims[0]), 1)]))
        dtype = order + floats[datatype] if datatype in floats else None
        return _NiftiLayout(offset, n, bitpix, dtype)
    return None


def check_nifti(path: Path, role: str) -> None:
    """Checks ITK's NIfTI reader does not make: it fills a truncated file with zeros and reads
    NaN/Inf voxels as 0. Truncation is caught from the header (and, for .gz, the gzip trailer's
    uncompressed size) without a second read; float files are scanned for NaN/Inf."""
    import gzip

    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            layout = _nifti_layout(f.read(544))
        if layout is None:
            return
        if name.endswith(".gz"):
            with open(path, "rb") as f:
                f.seek(-4, 2)
                actual = int.from_bytes(f.read(4), "little")
            complete = actual == layout.total_bytes % 2**32  # the exact size, mod 2**32
        else:
            actual = path.stat().st_size
            complete = actual >= layout.total_bytes
        if not complete:
            raise SubjectError(f"{role} {path.name} is truncated or corrupt: {actual} bytes where its NIfTI header "
                               f"needs {layout.total_bytes} (uncompressed); re-export or re-copy the file")
        if layout.float_dtype is not None:
            with opener(path, "rb") as f:
                f.seek(layout.data_offset)
                voxels = np.frombuffer(f.read(layout.n_voxels * layout.bitpix // 8), layout.float_dtype)
            bad = int(np.count_nonzero(~np.isfinite(voxels)))
            if bad:
                raise SubjectError(f"{role} {path.name} has {bad} NaN/Inf voxels (ITK would read them as 0); fix or "
                                   f"re-export the volume")
    except (OSError, EOFError) as err:
        raise SubjectError(f"cannot read {role} {path.name} (unreadable or truncated): {err}") from None


def read_ct(path: str) -> sitk.Image:
    """Read a CT volume (file or DICOM series folder) and check that it is a 3D HU volume."""
    p = Path(path)
    try:
        if p.is_dir():
            names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p))
            if not names:
                raise SubjectError(f"no DICOM image series in {p}")
            header = _dicom_header(Path(names[0]))
            modality = str(header.get("Modality", "")) if header is not None else ""
            if modality and modality != "CT":
                raise SubjectError(f"series {p.name} has modality {modality}, not CT")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(names)
            image = reader.Execute()
        elif p.is_file():
            check_nifti(p, "image")
            image = sitk.ReadImage(str(p))
        else:
            raise SubjectError(f"image {p} does not exist")
    except SubjectError:
        raise
    except RuntimeError as err:
        raise SubjectError(f"cannot read image {p.name} (unreadable or truncated): {_first_line(err)}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise SubjectError(f"image {p.name} is {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} "
                           f"components per voxel; a CT is one 3D scalar volume")
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise SubjectError(f"image {p.name} has {bad} NaN/Inf voxels; fix or re-export the volume")
    lo, hi = float(array.min()), float(array.max())
    if lo > HU_AIR_MAX or hi < HU_TISSUE_MIN:
        raise SubjectError(f"image {p.name} spans [{lo:g}, {hi:g}], not a CT in Hounsfield units (air near -1000, "
                           f"tissue above 0); is it MR/PET, or a CT without its rescale intercept?")
    return image


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    sa, sb = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    tol = _GEOMETRY_RTOL * sa.min()
    return (np.allclose(sa, sb, atol=tol) and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol * 10)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def _describe(img: sitk.Image) -> str:
    return (f"size {img.GetSize()}, spacing {tuple(round(s, 3) for s in img.GetSpacing())}, "
            f"origin {tuple(round(o, 2) for o in img.GetOrigin())}")


def read_mask_file(path: str, ct: sitk.Image) -> sitk.Image:
    """Read a mask file that must share the CT's grid; nonzero voxels are nodule."""
    p = Path(path)
    try:
        check_nifti(p, "mask")
        mask = sitk.ReadImage(str(p))
    except RuntimeError as err:
        raise SubjectError(f"cannot read mask {p.name} (unreadable or truncated): {_first_line(err)}") from None
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise SubjectError(f"mask {p.name} is not a 3D scalar volume")
    if not _same_geometry(mask, ct):
        raise SubjectError(f"mask geometry does not match the image: mask {_describe(mask)} vs image "
                           f"{_describe(ct)}; export the mask on the CT's grid")
    mask.CopyInformation(ct)  # within tolerance: use exactly the CT's grid
    return sitk.NotEqual(mask, 0)  # uint8 {0, 1}


def read_seg(path: str, ct: sitk.Image, ct_dir: str) -> sitk.Image:
    """Decode a DICOM SEG with highdicom and place its frames on the CT grid by physical position.
    Refuses a SEG that references another series or frame of reference than the CT."""
    import highdicom as hd

    p = Path(path)
    try:
        seg = hd.seg.segread(str(p))
    except Exception as err:  # pydicom/highdicom raise many types for a broken file
        raise SubjectError(f"cannot read SEG {p.name}: {_first_line(err)}") from None
    ct_header = _dicom_header(Path(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(ct_dir)[0]))
    ct_uid = str(ct_header.SeriesInstanceUID)
    referenced = {str(series) for _, series, _ in seg.get_source_image_uids()}
    referenced |= {str(r.SeriesInstanceUID) for r in seg.get("ReferencedSeriesSequence") or []}
    if ct_uid not in referenced:
        raise SubjectError(f"SEG {p.name} references series {sorted(referenced)} but the CT series is {ct_uid}; "
                           f"the SEG belongs to another series")
    if str(seg.get("FrameOfReferenceUID", "")) != str(ct_header.get("FrameOfReferenceUID", "")):
        raise SubjectError(f"SEG {p.name} is in another frame of reference than the CT; cannot align them")
    try:
        volume = seg.get_volume(combine_segments=True, dtype=np.uint8)
    except (RuntimeError, ValueError) as err:
        raise SubjectError(f"SEG {p.name} frames do not form a regular volume: {_first_line(err)}") from None
    seg_image = volume.to_simpleitk()
    # Nearest neighbour on an identity transform: each SEG voxel lands on the CT voxel at the same
    # physical position; frames absent from the SEG (slices without nodule) stay 0.
    mask = sitk.Resample(seg_image, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if int(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) == 0 and np.any(volume.array):
        raise SubjectError(f"SEG {p.name} has nodule voxels but none falls inside the CT volume; "
                           f"its positions do not match the CT")
    return sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)


def check_mask_content(mask: sitk.Image, name: str) -> None:
    """Refuse an empty mask and one that covers (nearly) the whole volume."""
    array = sitk.GetArrayViewFromImage(mask)
    count = int(np.count_nonzero(array))
    if count == 0:
        raise SubjectError(f"mask {name} is empty (no voxel > 0): no nodule to crop; check the mask file or label")
    fraction = count / array.size
    if fraction > MAX_MASK_FRACTION:
        raise SubjectError(f"mask {name} covers {fraction:.0%} of the volume (> {MAX_MASK_FRACTION:.0%}); a nodule "
                           f"mask cannot - is it a body/lung mask or inverted?")

"""Writing a CT volume as a DICOM series and its nodule mask as a DICOM SEG, in the TCIA folder layout.

The layout mirrors a TCIA download (NSCLC Radiogenomics):
ROOT/<PatientID>/<MM-DD-YYYY>-NA-<study description>-<last 5 digits of the study UID>/
    <series number>.000000-<series description>-<last 5 digits of the series UID>/1-NNN.dcm
The CT is stored like a Siemens series: unsigned 12-bit pixels with RescaleIntercept -1024, axial
slices with identity orientation, instance 1 the most superior slice. The SEG (highdicom, BINARY,
one segment "Nodule") references the CT series and holds only the frames that contain nodule.
UIDs derive from the given key, so the same cohort seed writes the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

HU_MIN, HU_MAX = -1024, 3071  # what a 12-bit store with intercept -1024 can hold
_SOFTWARE = "radiogen cohort"


@dataclass(frozen=True)
class Study:
    """Who and what the series belong to; `key` seeds every UID."""

    patient_id: str
    key: str
    study_date: str        # YYYYMMDD
    study_time: str = "093000"
    patient_sex: str = "O"
    patient_age: str = ""  # e.g. "064Y"; empty = unknown
    study_description: str = "Thorax^CHEST (Adult)"
    series_description: str = "Thorax  1.25  B45f"
    series_number: int = 2
    seg_series_number: int = 1000
    seg_series_description: str = "Segmentation"

    def uid(self, what: str) -> str:
        return str(generate_uid(entropy_srcs=[_SOFTWARE, self.key, what]))


def _folder_text(text: str) -> str:
    """TCIA folder names keep letters, digits, spaces, '.' and '-' of a description."""
    return re.sub(r"[^A-Za-z0-9 .\-]", "", text)


def study_folder(study: Study) -> str:
    d = study.study_date
    return f"{d[4:6]}-{d[6:8]}-{d[0:4]}-NA-{_folder_text(study.study_description)}-{study.uid('study')[-5:]}"


def series_folder(number: int, description: str, series_uid: str) -> str:
    return f"{number}.000000-{_folder_text(description)}-{series_uid[-5:]}"


def _common(study: Study) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study.study_time
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.study_description
    ds.PatientName = f"{study.patient_id}^"  # one-component name, caret says so
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = study.patient_sex
    if study.patient_age:
        ds.PatientAge = study.patient_age
    ds.StudyInstanceUID = study.uid("study")
    ds.StudyID = ""
    ds.FrameOfReferenceUID = study.uid("frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "radiogen"
    ds.ManufacturerModelName = "synthetic cohort"
    ds.SoftwareVersions = "1"
    ds.DeviceSerialNumber = "0"
    return ds


def ct_datasets(hu: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float],
                study: Study) -> list[Dataset]:
    """One CT Image Storage dataset per axial slice of `hu` (Z, Y, X) int16 HU, in slice order k = 0..Z-1
    (k = 0 the most inferior). Identity orientation: column i -> +x, row j -> +y, slice k -> +z (LPS)."""
    if hu.ndim != 3:
        raise ValueError(f"CT must be a (Z, Y, X) volume, got shape {hu.shape}")
    if hu.min() < HU_MIN or hu.max() > HU_MAX:
        raise ValueError(f"CT values must lie in [{HU_MIN}, {HU_MAX}] HU for a 12-bit store; clip them first")
    nz, rows, cols = hu.shape
    sx, sy, sz = spacing
    series_uid = study.uid("ct-series")
    stored = (hu.astype(np.int32) - HU_MIN).astype("<u2")
    out = []
    for k in range(nz):
        ds = _common(study)
        instance = nz - k  # instance 1 is the top slice, as scanners number a head-first series
        sop_uid = study.uid(f"ct-{k}")
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Modality = "CT"
        ds.SeriesDescription = study.series_description
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{sz:.6g}"
        ds.KVP = "120"
        ds.ConvolutionKernel = "B45f"
        ds.PatientPosition = "HFS"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = study.series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = instance
        z = origin[2] + k * sz
        ds.ImagePositionPatient = [f"{origin[0]:.6f}", f"{origin[1]:.6f}", f"{z:.6f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z:.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [f"{sy:.9g}", f"{sx:.9g}"]  # row spacing (y), column spacing (x)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(HU_MIN), "1", "HU"
        ds.WindowCenter, ds.WindowWidth = ["-600", "40"], ["1500", "400"]
        ds.PixelData = stored[k].tobytes()
        out.append(ds)
    return out


def write_ct_series(folder: Path, datasets: list[Dataset]) -> None:
    """Files 1-001.dcm ... numbered by instance, as TCIA names them."""
    folder.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(len(datasets))))
    for ds in datasets:
        ds.save_as(folder / f"1-{int(ds.InstanceNumber):0{width}d}.dcm", enforce_file_format=True)


def nodule_seg(ct: list[Dataset], mask: np.ndarray, study: Study) -> Dataset:
    """A BINARY DICOM SEG of `mask` (Z, Y, X), frames aligned with `ct` (slice order k); empty frames
    are left out, as in SEGs exported from annotation tools."""
    import highdicom as hd

    if mask.shape != (len(ct), ct[0].Rows, ct[0].Columns):
        raise ValueError(f"mask shape {mask.shape} does not match the CT series "
                         f"({len(ct)} slices of {ct[0].Rows}x{ct[0].Columns})")
    if not mask.any():
        raise ValueError("the nodule mask is empty; a SEG needs at least one nodule voxel")
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="radiogen synthetic cohort", family=codes.cid7162.MorphologicalOperations, version="1"),
    )
    seg = hd.seg.Segmentation(
        source_images=ct,
        pixel_array=(mask != 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=study.uid("seg-series"),
        series_number=study.seg_series_number,
        sop_instance_uid=study.uid("seg"),
        instance_number=1,
        manufacturer="radiogen",
        manufacturer_model_name="synthetic cohort",
        software_versions="1",
        device_serial_number="0",
        series_description=study.seg_series_description,
        omit_empty_frames=True,
    )
    # highdicom stamps creation times and a random dimension-organization UID; the study's date and a
    # derived UID keep the file a function of the seed.
    seg.SeriesDate = seg.ContentDate = seg.InstanceCreationDate = study.study_date
    seg.SeriesTime = seg.ContentTime = seg.InstanceCreationTime = study.study_time
    for item in seg.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = study.study_date + study.study_time
    dimension_uid = study.uid("seg-dimension-organization")
    for item in [*seg.get("DimensionOrganizationSequence", []), *seg.get("DimensionIndexSequence", [])]:
        item.DimensionOrganizationUID = dimension_uid
    return seg


def write_tcia_subject(root: Path, hu: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float],
                       origin: tuple[float, float, float], study: Study) -> tuple[Path, Path]:
    """Write ROOT/<patient>/<study>/<CT series>/1-NNN.dcm and <SEG series>/1-1.dcm; return both series folders."""
    study_dir = root / study.patient_id / study_folder(study)
    ct = ct_datasets(hu, spacing, origin, study)
    ct_dir = study_dir / series_folder(study.series_number, study.series_description, study.uid("ct-series"))
    write_ct_series(ct_dir, ct)
    seg = nodule_seg(ct, mask, study)
    seg_dir = study_dir / series_folder(study.seg_series_number, study.seg_series_description,
                                        study.uid("seg-series"))
    seg_dir.mkdir(parents=True, exist_ok=True)
    seg.save_as(seg_dir / "1-1.dcm", enforce_file_format=True)
    return ct_dir, seg_dir


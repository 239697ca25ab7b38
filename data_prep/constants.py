"""Values that both the light argument parsers (data_prep.cli, read for `radiogen --help`) and the
heavy modules (cohort, gene_model, gene_table, prep) use: defined here once, importing nothing."""

from __future__ import annotations

COHORT_FORMATS: tuple[str, ...] = ("nifti", "tcia")
"""`radiogen cohort --format`: NIfTI + cases.csv, or the TCIA layout (DICOM CT series + DICOM SEG)."""

DESIGNS: dict[str, tuple[str, ...]] = {
    "aligned": ("aligned",) * 4,
    "weak": ("weak",) * 4,
    "drivers": ("drivers",) * 4,
    "interaction": ("interaction",) * 4,
    "null": ("null",) * 4,
    "mixed": ("drivers", "weak", "interaction", "aligned"),
}
"""Design -> the kind of truth of each program (data_prep.gene_model.PROGRAMS order)."""

DEFAULT_DESIGN = "mixed"
DEFAULT_GENES = 500
DEFAULT_NA_FRACTION = 0.05

GENE_ORIENTATIONS: tuple[str, ...] = ("genes-x-samples", "samples-x-genes")
"""Layouts of a gene table: GEO's genes x samples, or samples x genes."""

DEFAULT_SPLIT: tuple[float, float, float] = (0.7, 0.15, 0.15)
"""`radiogen prep --split`: train, val and test fractions of the subjects."""
DEFAULT_SEED = 0
"""`radiogen prep --seed`: of the split and of background sampling."""

USE_RAY: tuple[str, ...] = ("auto", "always")
"""`radiogen prep --ray`: auto (Ray only where it is expected to pay off) or always."""

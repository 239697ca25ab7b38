"""`radiogen cohort`: a synthetic cohort whose genes relate to nodule phenotype by a KNOWN link (docs/design.md §6).

The gene model (data_prep.gene_model) draws each subject's four programs and gene counts under a design
(`--design`: aligned, weak, drivers, interaction, null or mixed, the default) that fixes which genes cause
which program; the CT phantom (data_prep.phantom) draws a chest CT whose nodules follow the programs; this
module writes both in the raw formats of the real data (docs/design.md §4), so the whole pipeline runs on it:
  OUT/genes.tsv   GEO layout: tab-separated genes x samples, column `gene_symbol`, literal NA
  OUT/truth.json  design, programs per subject, nodules (physical LPS centroid of each nodule's mask, size,
                  density, ...), gene -> program (null for genes that cause nothing), signed gene effects
  nifti: OUT/cases.csv (subject_id,image,mask relative to OUT), OUT/images/<sid>_ct.nii.gz (int16 HU),
         OUT/masks/<sid>_mask.nii.gz (uint8, 1 inside nodules, same grid)
  tcia:  OUT/tcia/<sid>/<study>/<CT series>/1-NNN.dcm and <SEG series>/1-1.dcm (data_prep.dicom_write)

Everything is a function of the seed and the arguments: the same command writes the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from radiogen.publish import building

from .constants import COHORT_FORMATS, DEFAULT_DESIGN, DEFAULT_GENES, DEFAULT_NA_FRACTION, DESIGNS
from .gene_model import PROGRAMS, check_design, genes_tsv, simulate_expression, stream
from .phantom import PROGRAM_EFFECTS, Grid, synthesize_subject

Format = Literal["nifti", "tcia"]


def _check_args(*, subjects: int, genes: int, na_fraction: float, matrix: int = 512, fmt: str = "nifti",
                design: str = DEFAULT_DESIGN) -> None:
    if not 1 <= subjects <= 9999:
        raise ValueError(f"--subjects must be between 1 and 9999, got {subjects}")
    check_design(design, genes)
    if not 0.0 <= na_fraction < 0.5:
        raise ValueError(f"--na-fraction is the fraction of genes with NA cells and must be in [0, 0.5), "
                         f"got {na_fraction}")
    if not 64 <= matrix <= 1024:
        raise ValueError(f"--matrix (in-plane voxels) must be between 64 and 1024, got {matrix}")
    if fmt not in COHORT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(COHORT_FORMATS)}, got {fmt!r}")


def _write_nifti(path: Path, array: np.ndarray, grid: Grid, origin: tuple[float, float, float]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), useCompression=True)


def _study(sid: str, seed: int, rng: np.random.Generator) -> "dicom_write.Study":
    from data_prep import dicom_write

    year, month, day = int(rng.integers(1990, 2012)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return dicom_write.Study(patient_id=sid, key=f"seed={seed}/{sid}", study_date=f"{year:04d}{month:02d}{day:02d}",
                             patient_sex=str(rng.choice(["M", "F"])), patient_age=f"{int(rng.integers(45, 86)):03d}Y")


def _truth(expr, *, fmt: str, seed: int, genes: int, matrix: int, na_fraction: float, grid: Grid,
           subjects: dict) -> dict:
    """truth.json: what the cohort is, and the links an evaluation scores against."""
    linked = [(s, e, p) for s, e, p in zip(expr.gene_symbols, expr.effects, expr.gene_program) if p is not None]
    truth = {
        "format": fmt, "seed": seed, "genes": genes, "matrix": matrix, "na_fraction": na_fraction,
        "spacing_mm": [round(s, 6) for s in grid.spacing], "shape_zyx": list(grid.shape),
        "programs": list(PROGRAMS), "program_effects": PROGRAM_EFFECTS, "subjects": subjects,
        "gene_programs": dict(zip(expr.gene_symbols, expr.gene_program)),
    }
    if expr.design == "aligned":  # the original cohort's key, kept for readers of it
        truth["gene_loadings"] = {s: round(float(e), 4) for s, e, _ in linked}
    truth["design"] = expr.design
    truth["program_kinds"] = dict(zip(PROGRAMS, expr.kinds))
    # Signed effect of each linked gene on its program (loading or driver weight); null where the sign is
    # undefined (a module of an interaction program).
    truth["gene_effects"] = {s: None if np.isnan(e) else round(float(e), 4) for s, e, _ in linked}
    return truth


def write_cohort(out_dir: Path | str, *, subjects: int, seed: int, genes: int = DEFAULT_GENES,
                 fmt: Format = "nifti", matrix: int = 512, na_fraction: float = DEFAULT_NA_FRACTION,
                 design: str = DEFAULT_DESIGN) -> Path:
    """Write a synthetic cohort into out_dir (absent or empty) and return it.

    out_dir     the cohort folder; it is assembled next to it and moved into place when complete
    subjects    number of subjects (ids SYN-0001 ...)
    seed        everything is a function of the seed (same seed: same files)
    genes       genes in genes.tsv (program genes, co-expression clusters and nuisance genes; gene_model)
    fmt         "nifti" (cases.csv, images/, masks/) or "tcia" (tcia/<sid>/<study>/<series>/*.dcm with a SEG)
    matrix      in-plane voxels over a 358.4 mm field of view (data_prep.phantom)
    na_fraction fraction of genes with NA cells (0 = no NA)
    design      which genes cause which program (data_prep.gene_model.DESIGNS)
    """
    _check_args(subjects=subjects, genes=genes, na_fraction=na_fraction, matrix=matrix, fmt=fmt, design=design)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"cohort output {out} exists and is not an empty folder; the cohort writer never "
                              f"overwrites: choose a new --out or delete {out} first")
    grid = Grid.for_matrix(matrix)
    expr = simulate_expression(subjects, seed, genes, na_fraction, design)
    with building(out) as tmp:  # a crash leaves no half-written cohort
        truth_subjects = {}
        cases = []
        for j, sid in enumerate(expr.subject_ids):
            subj = synthesize_subject(seed, j, grid, expr.programs[j])
            record = {"programs": {name: round(float(v), 6) for name, v in zip(PROGRAMS, expr.programs[j])},
                      "nodules": subj.nodules, "anatomy": subj.anatomy}
            if fmt == "nifti":
                (tmp / "images").mkdir(exist_ok=True)
                (tmp / "masks").mkdir(exist_ok=True)
                image, mask = f"images/{sid}_ct.nii.gz", f"masks/{sid}_mask.nii.gz"
                _write_nifti(tmp / image, subj.hu, grid, subj.origin)
                _write_nifti(tmp / mask, subj.mask, grid, subj.origin)
                cases.append((sid, image, mask))
                record.update(image=image, mask=mask)
            else:
                from data_prep import dicom_write

                study = _study(sid, seed, stream(seed, 1 + j, 2))
                ct_dir, seg_dir = dicom_write.write_tcia_subject(tmp / "tcia", subj.hu, subj.mask, grid.spacing,
                                                                 subj.origin, study)
                record.update(image=ct_dir.relative_to(tmp).as_posix(),
                              mask=(seg_dir / "1-1.dcm").relative_to(tmp).as_posix())
            truth_subjects[sid] = record
        if fmt == "nifti":
            with open(tmp / "cases.csv", "w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["subject_id", "image", "mask"])
                writer.writerows(cases)
        (tmp / "genes.tsv").write_text(genes_tsv(expr))
        truth = _truth(expr, fmt=fmt, seed=seed, genes=genes, matrix=matrix, na_fraction=na_fraction, grid=grid,
                       subjects=truth_subjects)
        (tmp / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from data_prep.cli import add_cohort_parser  # the flags live there, light enough for `radiogen --help`

    add_cohort_parser(subparsers).set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        out = write_cohort(args.out, subjects=args.subjects, seed=args.seed, genes=args.genes, fmt=args.fmt,
                           matrix=args.matrix, na_fraction=args.na_fraction, design=args.design)
    except (ValueError, FileExistsError) as err:
        print(f"cohort failed: {err}", file=sys.stderr)
        return 1
    grid = Grid.for_matrix(args.matrix)
    kinds = ", ".join(f"{p} {k}" for p, k in zip(PROGRAMS, DESIGNS[args.design]))
    print(f"wrote {args.subjects} synthetic subjects ({args.fmt}, {grid.matrix}x{grid.matrix}x{grid.slices} voxels "
          f"of {grid.spacing[0]:.3g}x{grid.spacing[1]:.3g}x{grid.spacing[2]:.3g} mm, {args.genes} genes, design "
          f"{args.design}: {kinds}) to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="radiogen")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cohort", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

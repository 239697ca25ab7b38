"""Argument definitions of `radiogen cohort` and `radiogen prep`: argparse only, no numpy or SimpleITK.

The `radiogen` command (ray_jobs.cli) builds its parser from these, so `--help` answers at once;
data_prep.cohort and data_prep.prep register the same parsers with their handlers. Choices and
defaults come from data_prep.constants, which the heavy modules read too.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from radiogen.cli import source_docstring

from .constants import (COHORT_FORMATS, DEFAULT_DESIGN, DEFAULT_GENES, DEFAULT_NA_FRACTION, DEFAULT_SEED,
                        DEFAULT_SPLIT, DESIGNS, GENE_ORIENTATIONS, USE_RAY)


def add_cohort_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("cohort", help="write a synthetic cohort (CT + nodule masks + GEO gene table) "
                                             "with known gene-program -> phenotype links",
                              description=source_docstring("data_prep.cohort"),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--subjects", type=int, required=True, help="number of subjects")
    p.add_argument("--seed", type=int, required=True, help="random seed (same seed: same files)")
    p.add_argument("--genes", type=int, default=DEFAULT_GENES,
                   help=f"genes in genes.tsv (default {DEFAULT_GENES})")
    p.add_argument("--format", dest="fmt", choices=COHORT_FORMATS, default="nifti",
                   help="nifti (cases.csv + .nii.gz, default) or tcia (DICOM CT series + DICOM SEG per subject)")
    p.add_argument("--matrix", type=int, default=512,
                   help="in-plane voxels over a 358 mm field of view (default 512: 0.7 mm, 1.25 mm slices)")
    p.add_argument("--na-fraction", type=float, default=DEFAULT_NA_FRACTION,
                   help=f"fraction of genes with NA cells (default {DEFAULT_NA_FRACTION})")
    p.add_argument("--design", choices=tuple(DESIGNS), default=DEFAULT_DESIGN,
                   help="which genes cause which program: aligned (a co-expressed module per program), weak (many "
                        "weakly loaded genes), drivers (a few driver genes with co-expressed passengers), interaction "
                        "(a product of two modules), null (no gene matters), or mixed (one program of each kind; "
                        f"default {DEFAULT_DESIGN})")
    return p


def split_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1) > 1e-6 or parts[0] <= 0:
        raise argparse.ArgumentTypeError(f"--split needs three fractions train,val,test >= 0 summing to 1 "
                                         f"with train > 0, e.g. 0.7,0.15,0.15; got {text!r}")
    return parts  # type: ignore[return-value]


def na_policy(text: str):
    """--na-policy as a data_prep.gene_table.NaPolicy (imported when parsing, not for --help)."""
    from data_prep import gene_table as gt

    try:
        return gt.parse_na_policy(text)
    except gt.GeneTableError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_prep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("prep", help="raw CT + nodule masks + gene table -> parquet slices + manifest",
                              description=source_docstring("data_prep.prep"),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tcia-root", type=Path, help="TCIA folder: ROOT/<subject>/<study>/<series>/*.dcm "
                                                    "(a CT series and a DICOM SEG series per subject)")
    src.add_argument("--cases", type=Path, help="CSV/TSV with columns subject_id,image,mask (paths relative to it; "
                                                "any format SimpleITK reads)")
    p.add_argument("--genes", type=Path, required=True,
                   help="gene table: GEO layout (tab-separated genes x samples, NA), CSV, or gzip of either")
    p.add_argument("--genes-orientation", choices=GENE_ORIENTATIONS, default="genes-x-samples",
                   help="genes-x-samples (GEO; default) or samples-x-genes")
    p.add_argument("--na-policy", type=na_policy, default="drop",  # a string default goes through `type`
                   help="drop (default, paper: drop genes with any NA) or max-fraction=F (keep genes with at most "
                        "a fraction F of NA, impute the rest with the train median; every cell is listed)")
    p.add_argument("--out", type=Path, required=True, help="dataset folder (replaced atomically)")
    p.add_argument("--image-size", type=int, default=128,
                   help="slice side in pixels, a multiple of 8 (default 128, the paper's; 32 for the tiny config)")
    p.add_argument("--voi-mm", type=float, default=60.0, help="VOI side in mm (default 60)")
    p.add_argument("--bg-vois", type=int, default=2, help="background VOIs per subject (default 2; 0 = none)")
    p.add_argument("--bg-slices", type=int, default=20, help="random planes per background VOI (default 20)")
    p.add_argument("--split", type=split_fractions, default=DEFAULT_SPLIT,
                   help="train,val,test (default 0.7,0.15,0.15)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the split and of background sampling (default {DEFAULT_SEED})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="CPUs prep uses: of the local Ray cluster it starts, or SimpleITK threads when it runs "
                        "subjects in this process (default: all); 0 = in this process without Ray (debugging)")
    p.add_argument("--address", default=None, help="connect to this Ray cluster instead (or set RAY_ADDRESS)")
    p.add_argument("--ray", dest="use_ray", choices=USE_RAY, default="auto",
                   help="auto (default): Ray tasks on the cluster of --address / RAY_ADDRESS; without one, "
                        "subjects run in this process, timed, until the rest are expected to save more than a "
                        "local cluster's start-up (the choice is printed); always: Ray tasks from the start. "
                        "Unchanged subjects are never sent to Ray")
    p.add_argument("--cache", type=Path, default=None,
                   help="per-subject result cache (default: .<out name>.prep-cache next to --out)")
    return p

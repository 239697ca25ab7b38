"""`radiogen prep`: raw CT + nodule masks + gene table -> parquet slices + manifest (docs/design.md §4).

Per subject (a Ray task each, or in this process where Ray would not pay off): read the CT with
SimpleITK and the mask (file on the CT grid, or DICOM SEG placed by position); one voi_mm VOI per
connected nodule with every plane that shows it; lungs segmented, nodules removed, bg_vois background
VOI centres 5-25 mm inside the lung boundary, bg_slices random nodule-free planes per VOI; HU window
to [-1, 1]. A subject whose input is bad fails with a one-line reason recorded in the manifest; the
others go on.

On the driver: match imaging subjects with gene-table subjects, split by subject (a seeded hash of
each id, so adding or removing subjects never moves another), apply the NA policy over the subjects
that made it, drop genes constant on the train split, fit gene statistics on the train split, write
the dataset (radiogen.schema, with the hash of every data file in the manifest) beside --out and
swap it in, so a killed run leaves the previous complete dataset (or none), never a partial one.
Subject warnings are printed one line per kind; the details are in the manifest.

Resume: each subject's result is cached under a key made of its input files' SHA-256 and the
parameters that shape slices. The driver hashes every subject's files first; a re-run re-processes
only subjects whose key changed, and when none did it neither imports nor starts Ray.

The stages, one module each (data flows down this list):
  subjects    match imaging and gene-table subjects; why each other id is excluded
  case        one subject: read -> nodule VOIs -> lung and backgrounds -> slices (SubjectResult)
  cache       per-subject results kept between runs, keyed by input hashes and parameters
  executor    in this process or as Ray tasks, chosen from measured time
  splits      train / val / test by a seeded hash of each subject id
  gene_stats  NA policy, constant genes, log_zscore statistics fitted on the training split
  manifest    manifest.json
  report      the printed summary
  prep        the orchestration (run_prep) and the command
"""

from data_prep.constants import USE_RAY

from .case import PrepParams, SubjectResult, process_subject
from .options import PrepError, PrepOptions
from .prep import main, run_command, run_prep
from .report import outcome_lines
from .splits import assign_splits, seed_with_splits

__all__ = ["USE_RAY", "PrepError", "PrepOptions", "PrepParams", "SubjectResult", "assign_splits", "main",
           "outcome_lines", "process_subject", "run_command", "run_prep", "seed_with_splits"]

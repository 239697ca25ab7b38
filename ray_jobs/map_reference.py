"""The reference of the validation map objective (`val/map_objective`, radiogen.evaluation.objective).

`map_reference(data, image_size, truth)` gives what RunSettings.validation["map"] carries to the training
loop: the validation subjects that have nodule slices, their real phenotype proxies and, with a truth file
(truth.json, or a gene,program CSV with its per-subject programs CSV), the true gene x program links in the
dataset's gene order. Without a truth file the objective is the truth-free map agreement; with one, the
AUPRC of the generator's intervention map. A truth file that does not belong to the dataset is refused
(radiogen.evaluation.truth_table.TruthError, naming the file and the fix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiogen import schema
from radiogen.data import read_records
from radiogen.evaluation.objective import MIN_SUBJECTS
from radiogen.evaluation.synthesis import cheap_phenotype_by_subject
from radiogen.evaluation.truth_table import load_truth

Records = dict[str, np.ndarray]


def map_reference(data: str | Path, image_size: int, truth: str | Path | None = None,
                  truth_programs: str | Path | None = None, allow_partial: bool = False) -> Records:
    """{"subject_ids", "phenotype" (S, 4)[, "links" (G, 4) bool]} of the validation split; {} when it has fewer
    than MIN_SUBJECTS subjects with nodules (the objective is then off)."""
    rows = read_records(data, "val", "nodule")
    subjects = sorted({str(s) for s in rows["subject_id"]})
    if len(subjects) < MIN_SUBJECTS:
        return {}
    images, masks = schema.decode_images(rows["image"], image_size), schema.decode_masks(rows["mask"], image_size)
    out = {"subject_ids": np.asarray(subjects),
           "phenotype": cheap_phenotype_by_subject(images, masks, rows["subject_id"], subjects)}
    if truth is not None:
        known = load_truth(truth, truth_programs)
        genes = schema.read_manifest(data)["gene_names"]
        known.check(genes, [], allow_partial)  # the links must be of this dataset's genes
        out["links"] = known.link_matrix(genes)
    return out

"""The reference of the validation map objective (`val/map_objective`, radiogen.evaluation.objective).

`map_reference(data, image_size, truth)` gives what RunSettings.validation["map"] carries to the training
loop: the validation subjects that have nodule slices, their real phenotype proxies and, with a truth file
(truth.json, or a gene,program CSV with its per-subject programs CSV), the true gene x program links in the
dataset's gene order. Without a truth file the objective is the truth-free map agreement; with one, the
AUPRC of the generator's intervention map, and the subjects' true programs (the program response). A truth file
that does not belong to the dataset is refused (radiogen.evaluation.truth_table.TruthError, naming the file and
the fix). `frechet_floor` gives the realism
floor, RunSettings.validation["frechet_floor"]: the radiomic Fréchet distance between two sets of real nodules.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiogen import schema
from radiogen.data import read_records
from radiogen.evaluation.features import subject_means
from radiogen.evaluation.objective import MIN_SUBJECTS
from radiogen.evaluation.phenotype import PROGRAMS
from radiogen.evaluation.synthesis import cheap_phenotype_by_subject
from radiogen.evaluation.truth import nodule_measures, program_response
from radiogen.evaluation.truth_table import load_truth
from radiogen.metrics import realism_report

Records = dict[str, np.ndarray]


def map_reference(data: str | Path, image_size: int, truth: str | Path | None = None,
                  truth_programs: str | Path | None = None, allow_partial: bool = False) -> Records:
    """{"subject_ids", "phenotype" (S, 4)[, "links" (G, 4) bool, "programs" (S, 4), "real_response"]} of the
    validation split; {} when it has fewer than MIN_SUBJECTS subjects with nodules (the objective is then off)."""
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
        out["programs"] = known.programs_of(subjects)
        measures, present = subject_means(nodule_measures(images, masks), [str(s) for s in rows["subject_id"]])
        # The ceiling of val/response/*: the same measurement on the subjects' real nodules.
        out["real_response"] = program_response(measures, known.programs_of(present), PROGRAMS)
    return out


def frechet_floor(data: str | Path, val_nodules: Records, image_size: int, train: Records | None = None,
                  seed: int = 0) -> float | None:
    """The radiomic Fréchet distance between the validation slices' real nodules and as many real nodules of the
    training split (a fixed draw): what two disjoint sets of real nodules score, the scale of
    val/frechet_radiomic (its estimate grows as sets shrink, hence equal sizes). None when either side has fewer
    than 2 nodules with features. `train`: the training split's nodule records when the caller has read them."""
    train = read_records(data, "train", "nodule") if train is None else train
    n = min(len(val_nodules["subject_id"]), len(train["subject_id"]))
    pick = np.sort(np.random.default_rng(seed).permutation(len(train["subject_id"]))[:n])
    decode = lambda rows, idx: (schema.decode_images(rows["image"][idx], image_size),  # noqa: E731
                                schema.decode_masks(rows["mask"][idx], image_size))
    floor = realism_report(*decode(val_nodules, np.arange(len(val_nodules["subject_id"]))), *decode(train, pick))
    value = floor["frechet_radiomic"]
    return float(value) if np.isfinite(value) and value > 0 else None

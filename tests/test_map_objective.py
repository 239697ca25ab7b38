"""The validation map objective at training time: ray_jobs.map_reference builds the reference (the validation
subjects' real phenotype and, from a truth file, the true links in the dataset's gene order) and the training
loop's `validate` reports val/map_objective from it, never NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from .helpers import validation_of


@pytest.fixture(scope="module")
def dataset(drivers_dataset):
    return drivers_dataset


def test_map_reference_carries_the_truth_in_the_dataset_gene_order(dataset, tmp_path) -> None:
    from radiogen import schema
    from radiogen.evaluation.truth_table import TruthError
    from ray_jobs.map_reference import map_reference

    cohort, data = dataset
    plain = map_reference(data, 32)
    assert set(plain) == {"subject_ids", "phenotype"} and len(plain["subject_ids"]) >= 3
    assert plain["phenotype"].shape == (len(plain["subject_ids"]), 4) and np.isfinite(plain["phenotype"]).all()
    known = map_reference(data, 32, cohort / "truth.json")
    genes = schema.read_manifest(data)["gene_names"]
    truth = json.loads((cohort / "truth.json").read_text())["gene_programs"]
    expected = np.array([[truth[g] == p for p in ("size", "density", "irregularity", "texture")] for g in genes])
    assert np.array_equal(known["links"], expected) and known["links"].sum() >= 12  # 3-8 drivers per program
    other = json.loads((cohort / "truth.json").read_text())
    other["gene_programs"] = {"NOTAGENE": "size"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(TruthError, match="this truth is of another cohort"):
        map_reference(data, 32, tmp_path / "other.json")


def test_validate_reports_the_map_objective_with_and_without_truth(dataset, tmp_path) -> None:
    from radiogen.evaluation.objective import MapReference
    from ray_jobs.loop import validate
    from ray_jobs.map_reference import map_reference

    cohort, data = dataset
    state, genes, nodules, pairs = validation_of(data)
    for truth, keys in ((None, {"val/map_objective", "val/map_agreement"}),
                        (cohort / "truth.json", {"val/map_objective", "val/map_agreement", "val/map_auprc"})):
        ref = map_reference(data, 32, truth)
        reference = MapReference(genes(list(ref["subject_ids"])).numpy(), ref["phenotype"], ref.get("links"))
        metrics, figure = validate(state, pairs, 1, tmp_path / "figures", reference)
        assert keys <= set(metrics) and "val/map_quality" not in metrics and figure.is_file()
        assert all(math.isfinite(metrics[k]) for k in keys)
        assert metrics["val/map_objective"] == metrics["val/map_auprc" if truth else "val/map_agreement"]
    assert 0 <= metrics["val/map_auprc"] <= 1

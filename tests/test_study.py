"""The ablation study on the platform: validation reports what the study compares (program responses of held-out
subjects and their real ceiling, the realism floor and the speckle ratio), and the shipped study file runs in
reduced form (2 variants x 2 seeds, a few steps) as `radiogen sweep` grid on the session's Ray cluster and a real
MLflow server."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import sys
from pathlib import Path

from .helpers import REPO, validation_of

PROGRAMS = ("size", "density", "irregularity", "texture")
STUDY = ("val/frechet_over_floor", "val/speckle_ratio", *(f"val/response/{p}" for p in PROGRAMS),
         "val/response/decoy", "val/map_objective")


def test_validation_with_truth_reports_the_responses_their_ceiling_the_floor_and_the_speckle(drivers_dataset,
                                                                                          tmp_path):
    from radiogen.evaluation.objective import MapReference
    from ray_jobs.loop import validate
    from ray_jobs.map_reference import frechet_floor, map_reference

    cohort, data = drivers_dataset
    state, genes, nodules, pairs = validation_of(data)
    ref = map_reference(data, 32, cohort / "truth.json")
    assert ref["programs"].shape == (len(ref["subject_ids"]), 4) and ref["real_response"]["response/size"] > 0.5
    floor = frechet_floor(data, nodules, 32)
    assert floor is not None and floor > 0
    reference = MapReference(genes(list(ref["subject_ids"])).numpy(), ref["phenotype"], ref["links"],
                             ref["programs"], ref["real_response"])
    metrics, _ = validate(state, pairs, 1, tmp_path / "figures", reference, floor)
    for key in (*STUDY, "val/program_response", *(f"val/real/response/{p}" for p in PROGRAMS)):
        assert key in metrics and not math.isnan(metrics[key]), key
    assert metrics["val/frechet_over_floor"] == metrics["val/frechet_radiomic"] / floor
    assert metrics["val/real/response/size"] == ref["real_response"]["response/size"]
    plain, _ = validate(state, pairs, 1, tmp_path / "figures", MapReference(
        genes(list(ref["subject_ids"])).numpy(), ref["phenotype"]))
    assert not any(k.startswith(("val/response/", "val/real/")) for k in plain)  # no truth, no response
    # What a sweep may name as an objective is exactly what validation reports (all of it, with truth and floor).
    from ray_jobs.loop import validation_metric_names

    always, with_truth = validation_metric_names()
    assert set(metrics) == always | with_truth
    assert set(plain) == always - {"val/frechet_floor", "val/frechet_over_floor"}


def test_the_study_file_runs_reduced_as_a_grid_and_tabulates_every_objective(drivers_dataset, mlflow_server,
                                                                           ray_cluster, tmp_path):
    from mlflow import MlflowClient

    from ray_jobs.sweep import main

    cohort, data = drivers_dataset
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--config", str(REPO / "ablations" / "sweep_ablation.yaml"), "--data", str(data), "--truth",
                     str(cohort / "truth.json"), "--variants", "stable,paper", "--seeds", "0,1", "--max-steps", "3",
                     "--runs-dir", str(tmp_path / "runs"), "--tracking-uri", mlflow_server, "--experiment",
                     "study-reduced", "--name", "study", "--val-size", "8", "--set", "train.batch_size=4"])
    assert code == 0, out.getvalue()
    rows = list(csv.DictReader(Path(tmp_path / "runs" / "sweeps" / "study" / "report" / "grid_table.csv")
                               .read_text().splitlines()))
    assert [r["variant"] for r in rows] == ["stable", "paper"] and all(r["seeds"] == "2" for r in rows)
    for metric in STUDY:
        cells = [v for k, v in rows[1].items() if k.startswith(metric + " ")]
        assert cells and all(c != "n/a" for c in cells), (metric, rows[1])
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("study-reduced")
    children = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4
    assert {c.data.params["loss.aux_genes"] for c in children if c.data.tags["radiogen.variant"] == "paper"} == {"0.0"}
    assert all(set(STUDY) <= set(c.data.metrics) for c in children)

    sys.path.insert(0, str(REPO / "scripts"))
    from study_curves import main as study_curves  # the curves figure, read back from the same MLflow runs

    figure = tmp_path / "curves.png"
    assert study_curves(["--tracking-uri", mlflow_server, "--sweep", "study", "--out", str(figure)]) == 0
    assert figure.stat().st_size > 20_000
    assert study_curves(["--tracking-uri", mlflow_server, "--sweep", "study", "--variants", "stable,no_such",
                         "--out", str(figure)]) == 2

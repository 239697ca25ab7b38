"""The README's main job, `make demo`, in a reduced form through the same entry point (DEMO_ARGS: a small cohort,
2 trials of 12 steps, few permutations), on the session's Ray cluster (RAY_ADDRESS) and MLflow server."""

from __future__ import annotations

import json
import os
import subprocess

from .helpers import REPO


ESTIMATORS = ("direct", "classical", "regressor-lasso", "synthesis-intervention", "synthesis-gradient")
"""One map of each kind (the others differ in parameters, not in the path they take)."""


def make_demo(out_dir, gcs: str, uri: str) -> str:
    cmd = ["make", "demo", f"DEMO={out_dir}", f"DEMO_ARGS=--subjects 10 --trials 2 --steps 12 --n-perm 20 "
                                              f"--estimators {','.join(ESTIMATORS)}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "RAY_ADDRESS": gcs, "MLFLOW_TRACKING_URI": uri})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def test_make_demo_runs_every_stage_quietly_and_reuses_them(ray_cluster, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    gcs = ray_cluster.get_runtime_context().gcs_address
    out = make_demo(tmp_path / "demo", gcs, mlflow_server)
    lines = out.splitlines()
    assert len(lines) < 200, out
    for stage in ("cohort", "prep", "sweep", "baseline", "eval"):
        assert sum(line.startswith(f"demo {stage}: ") for line in lines) == 1, stage
    assert "| rank | trial | state |" in out  # the leaderboard
    assert "radiogenomic map vs the cohort's true links (every map fitted on the " in out
    for estimator in ESTIMATORS:
        assert sum(line.startswith(f"    {estimator}: ") for line in lines) == 1, estimator  # the estimators table
    assert sum(line.startswith("    synthesis-intervention (baseline): ") for line in lines) == 1
    assert "realism, radiomic Frechet distance" in out and "MLflow: open " in out
    report = tmp_path / "demo" / "eval" / "demo"
    assert (report / "report.md").is_file() and any((report / "figures").glob("*.png"))
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    assert any(k.endswith("/baseline/realism/frechet_radiomic") for k in metrics)  # evaluated against MC-GAN

    # Everything is in MLflow: the sweep's parent with its trials nested, the baseline, the evaluation of the best.
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("radiogen-demo")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3 opens it on runs, not GenAI
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("radiogen.sweep_role") == "parent"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(children) == 2
    assert [r.data.tags.get("radiogen.run_name") for r in runs].count("demo-mcgan") == 1
    evals = [r for r in runs if r.data.tags.get("radiogen.kind") == "eval"]
    assert len(evals) == 1 and evals[0].data.tags["mlflow.parentRunId"] in {c.info.run_id for c in children}

    # A re-run reuses every stage.
    again = make_demo(tmp_path / "demo", gcs, mlflow_server)
    for stage in ("cohort", "prep", "baseline", "eval"):
        assert f"demo {stage}: reused " in again, stage
    assert len(client.search_runs([exp.experiment_id])) == len(runs)  # no new run

"""The README's main job, `make demo`, in a reduced form through the same entry point (DEMO_ARGS: a small cohort,
2 trials of 12 steps, few permutations), as a new user runs it: its own local Ray cluster and sqlite tracking store.
It runs in the background lane (tests/background.py), beside the tests on the session's Ray cluster."""

from __future__ import annotations

import json
import subprocess

from .background import in_background, lane_env
from .helpers import REPO


ESTIMATORS = ("direct", "classical", "regressor-lasso", "synthesis-gradient")
"""One map of each kind, the generator's by its cheapest (the others differ in parameters, not in the path they
take; synthesis-intervention, the costliest, is in the full table tests/test_eval.py checks with a baseline)."""
DEMO_ARGS = f"--subjects 10 --trials 2 --steps 12 --n-perm 20 --estimators {','.join(ESTIMATORS)}"


def make_demo(out) -> list[str]:
    return ["make", "demo", f"DEMO={out / 'demo'}", f"DEMO_ARGS={DEMO_ARGS}"]


def refused_before_its_first_trial(out) -> list[str]:
    """Leave what a sweep refused before its first trial leaves (a folder without sweep.json), and give the
    command, `make demo`, that must start that sweep again, not resume it. (The lane calls this just before the
    command runs.)"""
    folder = out / "demo" / "sweeps" / "demo"
    folder.mkdir(parents=True)
    (folder / "driver.log").write_text("refused\n")
    return make_demo(out)


@in_background(refused_before_its_first_trial)
def test_make_demo_runs_every_stage_quietly_and_reuses_them(background, capsys):
    from mlflow import MlflowClient

    assert background.returncode == 0, background.stdout[-5000:]
    out, demo = background.stdout, background.out / "demo"
    lines = out.splitlines()
    assert len(lines) < 200, out
    for stage in ("cohort", "prep", "sweep", "baseline", "eval"):
        assert sum(line.startswith(f"demo {stage}: ") for line in lines) == 1, stage
    assert "| rank | trial | state |" in out  # the leaderboard
    assert "radiogenomic map vs the cohort's true links (every map fitted on the " in out
    for estimator in ESTIMATORS:
        assert sum(line.startswith(f"    {estimator}: ") for line in lines) == 1, estimator  # the estimators table
    assert sum(line.startswith("    synthesis-gradient (baseline): ") for line in lines) == 1  # MC-GAN's map beside
    assert "realism, radiomic Frechet distance" in out
    uri = f"sqlite:///{demo / 'mlflow.db'}"
    assert "MLflow: open the tracking UI with: " in out and f"--backend-store-uri {uri} --host 127.0.0.1" in out
    assert "warning: the heldout split has 5 subjects, fewer than 8" in out  # 10 subjects: 5 train, 5 held out
    report = demo / "eval" / "demo"
    assert (report / "report.md").is_file() and any((report / "figures").glob("*.png"))
    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    assert any(k.endswith("/baseline/realism/frechet_radiomic") for k in metrics)  # evaluated against MC-GAN

    # Everything is in MLflow: the sweep's parent with its trials nested, the baseline, the evaluation of the best.
    client = MlflowClient(uri)
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

    # A re-run reuses every stage (nothing of it starts Ray).
    res = subprocess.run(make_demo(background.out), cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=lane_env())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for stage in ("cohort", "prep", "baseline", "eval"):
        assert f"demo {stage}: reused " in res.stdout, stage
    assert len(client.search_runs([exp.experiment_id])) == len(runs)  # no new run

    # A re-run that asks for something else is refused before anything runs: nothing of the first is reused for it.
    from ray_jobs.cli import main

    assert main(["demo", "--out", str(demo), "--subjects", "12", "--trials", "2", "--steps", "12"]) == 2
    err = capsys.readouterr().err
    assert "holds a demo made with --subjects 10 --trials 2 --steps 12" in err and "Traceback" not in err
    assert "this run asks for --subjects 12 --trials 2 --steps 12" in err
    assert len(client.search_runs([exp.experiment_id])) == len(runs)


def test_demo_refuses_a_cohort_too_small_and_a_cohort_of_another_size(tmp_path, capsys):
    from ray_jobs.cli import main

    assert main(["demo", "--out", str(tmp_path / "tiny"), "--subjects", "1"]) == 2
    err = capsys.readouterr().err
    assert "--subjects 1 gives 1 training and 0 validation subjects" in err and "use --subjects 7 or more" in err
    assert not (tmp_path / "tiny").exists()  # refused before anything was made
    # An OUT made before the demo recorded its flags: its cohort's size is what it was made with.
    assert main(["cohort", "--out", str(tmp_path / "old" / "cohort"), "--subjects", "7", "--seed", "0",
                 "--matrix", "128"]) == 0
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path / "old"), "--subjects", "10"]) == 2
    assert "holds a demo made with --subjects 7; this run asks for --subjects 10" in capsys.readouterr().err

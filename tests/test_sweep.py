"""Sweeps end to end on real services: the session's Ray cluster, a real MLflow server, the prepared synthetic
dataset, the tiny config for a few steps per trial."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from .helpers import REPO

TINY = str(REPO / "ablations" / "tiny.yaml")


def sweep_file(tmp_path: Path, **fields) -> str:
    data = {"experiment": TINY, "objectives": [{"metric": "val/l1_background", "mode": "min"}], "max_steps": 6,
            "report_every": 3, "trials": 3, "seed": 0, "set": {"data.n_genes": None, "train.batch_size": 4},
            "space": {"loss.lambda_l1": {"loguniform": [1, 300]}, "generator.code_dim": {"choice": [8, 16]}}} | fields
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def sweep_args(data: Path, runs: Path, uri: str, config: str | None, name: str, *extra: str) -> list[str]:
    first = ["--config", config, "--data", str(data)] if config else []
    return [*first, "--runs-dir", str(runs), "--tracking-uri", uri, "--experiment", f"sweep-{name}",
            "--log-every", "3", "--val-size", "8", *extra]


def sweep(data: Path, runs: Path, uri: str, config: str | None, name: str, *extra: str) -> int:
    """`python -m ray_jobs.sweep` in this process, on the session's Ray cluster."""
    from ray_jobs.sweep import main

    return main(sweep_args(data, runs, uri, config, name, *extra))


def runs_of(uri: str, name: str):
    """(client, parent run, child runs) of the sweep tracked in experiment sweep-<name>."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(f"sweep-{name}")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1, "every other run of the experiment is a child of the sweep"
    return client, parents[0], children


def steps_of(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def artifact_text(client, run_id: str, path: str, tmp_path: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text()


@pytest.fixture(scope="module")
def searched(prepared, mlflow_server, ray_cluster, tmp_path_factory):
    """One search of 3 trials, 2 at a time, ASHA on: two with the final blend start first; the third, without it
    (a constructed, clearly worse case: the output no longer keeps the background outside the mask, so its
    background L1 is far higher), starts once one of them is done and trails both at ASHA's first rung."""
    tmp = tmp_path_factory.mktemp("searched")
    space = {"generator.final_blend": {"choice": [True, False]}, "loss.lambda_l1": {"loguniform": [1, 300]}}
    points = [{"generator.final_blend": True, "loss.lambda_l1": 100}, {"generator.final_blend": True,
              "loss.lambda_l1": 30}, {"generator.final_blend": False, "loss.lambda_l1": 100}]
    config = sweep_file(tmp, max_steps=12, asha={"grace_period": 3, "reduction_factor": 2}, space=space,
                        points_to_evaluate=points)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep(prepared, tmp / "runs", mlflow_server, config, "three", "--name", "three", "--max-concurrent", "2")
    assert code == 0, out.getvalue()
    return tmp, out.getvalue()


def test_three_trial_sweep_tracks_a_parent_three_children_and_a_best_config_that_trains(
        searched, prepared, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    from ray_jobs.cli import main as radiogen

    tmp, out = searched
    # One worker with in-memory data: direct trials, one per CPU, no CPU held back for Ray Data.
    assert "resources: 2 trial(s) at a time, each one process training directly" in out
    assert "with 1 CPU and 1 torch thread(s)" in out and "Ray Data" not in out
    assert "Tune configuration" not in out and "(raylet)" not in out  # Tune's and Ray's output went to the log
    client, parent, children = runs_of(mlflow_server, "three")
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.info.status == "FINISHED" and parent.data.tags["radiogen.sweep_role"] == "parent"
    assert parent.data.params["sweep.mode"] == "search"
    assert parent.data.params["sweep.space.loss.lambda_l1"] == "loguniform[1, 300]"
    assert len(children) == 3
    for child in children:
        assert child.info.status in {"FINISHED", "KILLED"}  # never left RUNNING
        assert child.data.params["generator.final_blend"] in {"True", "False"}
        assert 1 <= float(child.data.params["loss.lambda_l1"]) <= 300 and child.data.params["train.max_steps"] == "12"
        assert child.data.params["run.mode"] == "direct" and child.data.params["run.torch_threads"] == "1"
        phases = {k for k in child.data.metrics if k.startswith("phase/")}
        assert {"phase/mlflow_open_s", "phase/model_built_s", "phase/first_step_s", "phase/first_report_s"} <= phases
        assert steps_of(client, child.info.run_id, "val/l1_background")[0] == 3
        assert child.info.run_id in out  # one line per trial event, and the leaderboard, name each run

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/leaderboard.csv", "sweep/leaderboard.md", "sweep/best_config.yaml", "sweep/optuna_history.png",
            "sweep/optuna_parallel.png", "sweep/summary.json"} <= artifacts
    board = list(csv.DictReader(artifact_text(client, parent.info.run_id, "sweep/leaderboard.csv", tmp_path)
                                .splitlines()))
    assert [r["mlflow_run"] for r in board] != [] and {r["mlflow_run"] for r in board} == {c.info.run_id
                                                                                           for c in children}
    complete = {c.info.run_id: c.data.metrics["val/l1_background"] for c in children
                if c.data.tags["radiogen.trial_state"] == "complete"}
    assert complete and board[0]["state"] == "complete" and board[0]["mlflow_run"] == min(complete, key=complete.get)
    assert float(board[0]["val/l1_background (min)"]) == pytest.approx(min(complete.values()), rel=1e-3)
    assert "leaderboard of sweep three:\n| rank | trial | state | step | val/l1_background (min) |" in out

    # The best config trains unchanged with `radiogen train`, into a run with exactly the best trial's config.
    best_yaml = tmp_path / "best_config.yaml"
    best_yaml.write_text(artifact_text(client, parent.info.run_id, "sweep/best_config.yaml", tmp_path))
    assert radiogen(["train", "--config", str(best_yaml), "--data", str(prepared), "--local", "--runs-dir",
                     str(tmp_path / "rerun"), "--tracking-uri", mlflow_server, "--experiment", "sweep-best-rerun",
                     "--name", "best-rerun"]) == 0
    mlflow = MlflowClient(mlflow_server)
    rerun = mlflow.search_runs([mlflow.get_experiment_by_name("sweep-best-rerun").experiment_id])[0]
    best = next(c for c in children if c.info.run_id == board[0]["mlflow_run"])
    config_params = lambda run: {k: v for k, v in run.data.params.items() if not k.startswith("run.")}  # noqa: E731
    assert config_params(rerun) == config_params(best)


def test_asha_stops_a_clearly_worse_trial_and_optuna_sees_it_pruned_not_complete(searched, mlflow_server):
    import optuna

    tmp, out = searched
    study = optuna.load_study(study_name="three", storage=f"sqlite:///{tmp / 'runs' / 'sweeps' / 'three' / 'optuna.db'}")
    stopped = next(t for t in study.trials if t.params["generator.final_blend"] is False)
    kept = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.user_attrs["steps"] < 12
    assert kept and all(t.params["generator.final_blend"] for t in kept)
    step = stopped.user_attrs["steps"]
    assert stopped.intermediate_values[step] > max(t.intermediate_values[step] for t in kept)  # clearly worse
    # No truncated score entered the sampler as complete: every complete trial trained for the full budget.
    assert all(t.user_attrs["steps"] == 12 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert f"trial {stopped.user_attrs['tune_trial_id']} stopped early by ASHA at step {step} (pruned)" in out

    client, parent, children = runs_of(mlflow_server, "three")
    run = next(c for c in children if c.data.tags["radiogen.trial_id"] == stopped.user_attrs["tune_trial_id"])
    assert run.info.status == "KILLED" and run.data.tags["radiogen.trial_state"] == "pruned"
    assert {c.info.status for c in children if c is not run} <= {"FINISHED", "KILLED"}
    summary = json.loads((tmp / "runs" / "sweeps" / "three" / "report" / "summary.json").read_text())
    pruned = [t for t in summary["trials"] if t["state"] == "pruned"]
    assert summary["trial_steps"] == 12 * (3 - len(pruned)) + sum(t["step"] for t in pruned) < 36
    assert summary["full_budget_steps"] == 36


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


GRID_STEPS = 30
"""Long enough that a direct trial (~0.1 s a step here) is still training when the driver is killed."""


def midway(started: list[str], finished: list[str], tune_dir: Path, before: int = GRID_STEPS) -> dict[str, int]:
    """Unfinished trials with a checkpoint before step `before` (Tune keeps a direct trial's checkpoints in its
    trial folder): the step of their newest checkpoint."""
    from ray_jobs.loop import read_checkpoint_records

    out = {}
    for t in started:
        steps = [records[-1]["step"] for p in tune_dir.glob(f"*{t}*/checkpoint_*")
                 if (records := read_checkpoint_records(p))]
        if t not in finished and steps and max(steps) < before:
            out[t] = max(steps)
    return out


@pytest.fixture(scope="module")
def grid_resumed(prepared, mlflow_server, ray_cluster, tmp_path_factory):
    """A 2 variants x 2 seeds grid, 2 trials at a time, whose driver is killed (SIGKILL: no clean-up) once its first
    trial finished and another has a checkpoint; then `--resume` completes it in this process."""
    tmp = tmp_path_factory.mktemp("grid")
    runs = tmp / "runs"
    config = sweep_file(tmp, mode="grid", space={}, max_steps=GRID_STEPS, report_every=5, grid={
        "seeds": [0, 1], "reference": "full", "variants": {"full": {}, "no_blend": {"generator.final_blend": False}}})
    gcs = ray_cluster.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "ray_jobs.sweep", *sweep_args(prepared, runs, mlflow_server, config, "grid",
                                                               "--name", "grid", "--max-concurrent", "2",
                                                               "--address", gcs)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    lines, seen, finished, started = lines_of(proc), [], [], []
    tune_dir = runs / "sweeps" / "grid" / "tune"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:
                pytest.fail("the sweep ended before it could be killed:\n" + "".join(seen))
            seen.append(line)
            words = line.split()
            if line.startswith("trial ") and " started" in line:
                started.append(words[1])
            if line.startswith("trial ") and f" finished at step {GRID_STEPS}" in line:
                finished.append(words[1])
            if finished and midway(started, finished, tune_dir, before=GRID_STEPS // 3):
                break  # a trial a third of the way: it cannot finish in the 2 s before the kill
        else:
            pytest.fail("no finished trial and checkpointed unfinished one in time:\n" + "".join(seen))
        time.sleep(2)  # Tune saves its experiment state every second
    finally:
        proc.kill()
        proc.wait(timeout=60)
    while (line := lines.get(timeout=10)) is not None:  # what it printed before it died
        seen.append(line)
        if line.startswith("trial ") and f" finished at step {GRID_STEPS}" in line:
            finished.append(line.split()[1])
    before = midway(started, finished, tune_dir)
    parent_id = json.loads((runs / "sweeps" / "grid" / "sweep.json").read_text())["parent_run_id"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep(prepared, runs, mlflow_server, None, "grid", "--resume", "grid")
    assert code == 0, out.getvalue()
    return {"tmp": tmp, "runs": runs, "out": out.getvalue(), "finished": finished, "unfinished": before,
            "parent_id": parent_id, "tune_dir": tune_dir, "killed_output": "".join(seen)}


def test_grid_of_two_variants_and_two_seeds_gives_mean_std_and_paired_difference(grid_resumed, mlflow_server,
                                                                                 tmp_path):
    from ray_jobs.sweep_report import mean_std, paired_difference

    out = grid_resumed["out"]
    client, parent, children = runs_of(mlflow_server, "grid")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    values = {(c.data.tags["radiogen.variant"], int(c.data.tags["radiogen.seed"])): c.data.metrics["val/l1_background"]
              for c in children}
    assert sorted(values) == [("full", 0), ("full", 1), ("no_blend", 0), ("no_blend", 1)]
    assert {c.data.params["generator.final_blend"] for c in children if c.data.tags["radiogen.variant"] == "no_blend"} \
        == {"False"}
    assert {c.data.params["train.seed"] for c in children} == {"0", "1"}

    table = list(csv.DictReader(artifact_text(client, parent.info.run_id, "sweep/grid_table.csv", tmp_path)
                                .splitlines()))
    assert [row["variant"] for row in table] == ["full", "no_blend"] and [row["seeds"] for row in table] == ["2", "2"]
    by_variant = {v: {s: values[(v, s)] for s in (0, 1)} for v in ("full", "no_blend")}
    for row in table:
        mean, std = mean_std(list(by_variant[row["variant"]].values()))
        assert row["val/l1_background (min) mean ± std"] == f"{mean:.4g} ± {std:.2g}"
    d = paired_difference(by_variant["no_blend"], by_variant["full"])
    assert table[0]["Δ vs full [95% CI]"] == "(reference)"
    assert table[1]["Δ vs full [95% CI]"].startswith(f"{d['mean']:+.4g} [{d['low']:+.4g}, {d['high']:+.4g}]")
    assert "ablation grid (2 seeds; Δ = variant - full, paired by seed, 95% t-interval" in out
    assert "| no_blend | 2 |" in out
    best_yaml = artifact_text(client, parent.info.run_id, "sweep/best_config.yaml", tmp_path)
    assert "variant full" in best_yaml.splitlines()[0]  # the final blend keeps the background: lower L1


def test_resume_after_the_driver_died_keeps_finished_trials_and_continues_the_others(grid_resumed, mlflow_server):
    import ray._private.worker

    r = grid_resumed
    out, tune_dir = r["out"], r["tune_dir"]
    assert r["finished"] and r["unfinished"], r["killed_output"]
    for trial in r["finished"]:
        assert f"trial {trial} started" not in out  # a finished trial is not re-run
    for trial in r["unfinished"]:
        assert f"trial {trial} started" in out and f"trial {trial} finished at step {GRID_STEPS}" in out, \
            r["killed_output"] + out
    # Each unfinished trial continued from the checkpoint the killed driver's trial had written (the loop says so,
    # in the trial process's log file).
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    text = "".join(f.read_text(errors="replace") for f in logs.glob("worker-*.out"))
    for trial in r["unfinished"]:
        folder = next(tune_dir.glob(f"*{trial}*"))
        assert f"resumed from {folder}/checkpoint_" in text, trial

    client, parent, children = runs_of(mlflow_server, "grid")
    assert parent.info.run_id == r["parent_id"] and parent.info.status == "FINISHED"
    assert len(children) == 4 and len({c.data.tags["radiogen.trial_id"] for c in children}) == 4  # no duplicate
    assert {c.info.status for c in children} == {"FINISHED"}  # none left RUNNING
    for child in children:
        assert steps_of(client, child.info.run_id, "loss/G/total") == list(range(3, GRID_STEPS + 1, 3))  # once each
    summary = json.loads((r["runs"] / "sweeps" / "grid" / "report" / "summary.json").read_text())
    assert [t["state"] for t in summary["trials"]] == ["complete"] * 4

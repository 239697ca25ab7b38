"""Faults radiogen promises to survive (docs/reliability.md), on real services: a full disk while a checkpoint is
written, a damaged checkpoint on disk, two sweeps at once and a killed trial on the session's Ray cluster and MLflow
server; an MLflow outage and two trainings starting at once on a new sqlite store as self-contained commands in the
background lane (tests/tracking_faults.py)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path


from .background import in_background
from .helpers import REPO
from .test_train import run_of, steps_of, train


def test_a_full_disk_during_a_checkpoint_write_fails_clearly_and_a_rerun_resumes(prepared, mlflow_server, tmp_path,
                                                                                 capsys, monkeypatch) -> None:
    import ray_jobs.loop as loop
    from radiogen.checkpoint import load_checkpoint

    real, calls = loop.save_checkpoint, []

    def disk_full(path, state, extra=None):
        calls.append(state.step)
        if len(calls) == 2:  # the second checkpoint: half a file, then the disk is full
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, state, extra)

    monkeypatch.setattr(loop, "save_checkpoint", disk_full)
    assert train(prepared, tmp_path, mlflow_server, "--local", name="full-disk") == 1
    err = capsys.readouterr().err
    assert "error: run full-disk: could not write the checkpoint of step 12 to " in err and "Traceback" not in err
    assert " (No space left on device); the previous checkpoint stays as it was: free space and run again with the " \
           "same --name to resume" in err
    kept = sorted((tmp_path / "full-disk" / "checkpoints").iterdir())
    assert [p.name for p in kept] == ["step_00000006"]  # nothing half-written beside it
    assert load_checkpoint(kept[0] / "state.pt")[0].step == 6
    assert run_of(mlflow_server, "full-disk")[1].info.status == "FAILED"

    monkeypatch.setattr(loop, "save_checkpoint", real)  # space freed
    assert train(prepared, tmp_path, mlflow_server, "--local", name="full-disk") == 0
    assert "resumed from " in capsys.readouterr().out
    client, run = run_of(mlflow_server, "full-disk")
    assert run.info.status == "FINISHED" and steps_of(client, run.info.run_id, "val/l1_background") == [6, 12]


def test_a_damaged_checkpoint_falls_back_to_the_one_before_it_or_is_refused(prepared, mlflow_server, tmp_path,
                                                                           capsys, monkeypatch) -> None:
    import ray_jobs.loop as loop

    real = loop.save_checkpoint

    def stopped_at_18(path, state, extra=None):
        if state.step == 18:  # the run is stopped (an interrupt) after its checkpoints of steps 6 and 12
            raise KeyboardInterrupt
        return real(path, state, extra)

    monkeypatch.setattr(loop, "save_checkpoint", stopped_at_18)
    assert train(prepared, tmp_path, mlflow_server, "--local", name="damaged", steps=18) != 0
    monkeypatch.setattr(loop, "save_checkpoint", real)
    checkpoints = tmp_path / "damaged" / "checkpoints"
    older, newest = checkpoints / "step_00000006" / "state.pt", checkpoints / "step_00000012" / "state.pt"
    kept = older.read_bytes()

    for state in (older, newest):  # every kept checkpoint damaged: refused with a message, never a torch.load crash
        state.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert train(prepared, tmp_path, mlflow_server, "--local", name="damaged", steps=18) == 1
    err = capsys.readouterr().err
    assert f"cannot resume: {older} is damaged (truncated or corrupted" in err
    assert "no earlier checkpoint is kept" in err and "Traceback" not in err

    older.write_bytes(kept)  # the older one intact, the newest cut short
    newest.write_bytes(kept[: len(kept) // 2])
    assert train(prepared, tmp_path, mlflow_server, "--local", name="damaged", steps=18) == 0
    out = capsys.readouterr().out
    assert f"warning: {newest} is damaged (truncated or corrupted" in out
    assert f"resuming from the checkpoint before it, {older.parent}" in out and "at step 6," in out
    assert run_of(mlflow_server, "damaged")[1].info.status == "FINISHED"


@in_background(lambda out: [sys.executable, "-m", "tests.tracking_faults", "twins", str(out)])
def test_two_trainings_start_at_once_on_a_new_sqlite_store(background) -> None:
    """Two `radiogen train --local` runs started together on one new sqlite store (tests/tracking_faults.py twins: its own
    cohort, in the background lane): the store's first migration must not need "start the second one later"."""
    from mlflow import MlflowClient

    assert background.returncode == 0, background.stdout[-3000:]
    result = json.loads((background.out / "twins.json").read_text())
    assert result["returncodes"] == [0, 0], "\n".join(o[-2000:] for o in result["outputs"])
    client = MlflowClient(f"sqlite:///{background.out / 'store' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("radiogen").experiment_id])
    assert sorted(r.data.tags["radiogen.run_name"] for r in runs) == ["twin-0", "twin-1"]
    assert all(r.info.status == "FINISHED" for r in runs)


def _sweep_command(prepared: Path, tmp_path: Path, name: str, uri: str, **fields) -> list[str]:
    from .test_sweep import sweep_args, sweep_file

    folder = tmp_path / name
    folder.mkdir()
    config = sweep_file(folder, **{"trials": 2, "max_steps": 6, "asha": {"grace_period": 3, "reduction_factor": 2},
                                   **fields})
    return [sys.executable, "-m", "ray_jobs.cli", "sweep",
            *sweep_args(prepared, tmp_path / "runs", uri, config, name, "--name", name)]


def test_two_sweeps_at_once_share_one_ray_cluster_and_one_new_sqlite_store(prepared, ray_cluster, tmp_path) -> None:
    """Two sweeps started together on the session's cluster and one new sqlite store: a direct trial (left) and a
    trial that needs two workers (right), which the sweep trains as a Ray Train run: its rank-0 worker opens the
    trial's MLflow run (nested under the sweep) and logs every step once; the driver closes it."""
    from mlflow import MlflowClient
    from ray.util.placement_group import placement_group_table

    from .test_sweep import runs_of

    gcs = ray_cluster.get_runtime_context().gcs_address
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = {**__import__("os").environ, "RAY_ADDRESS": gcs}
    flags = {"left": [], "right": ["--num-workers", "2"]}
    procs = [subprocess.Popen(_sweep_command(prepared, tmp_path, name, uri, trials=1) + flags[name], cwd=REPO,
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for name in flags]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    client = MlflowClient(uri)
    for name in flags:
        runs = client.search_runs([client.get_experiment_by_name(f"sweep-{name}").experiment_id])
        parent = [r for r in runs if r.data.tags.get("radiogen.sweep_role") == "parent"]
        assert len(parent) == 1 and parent[0].info.status == "FINISHED"
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
        assert len(children) == 1 and children[0].info.status == "FINISHED", name
    # Every placement group the two sweeps' trials reserved is released, the Ray Train worker group's too.
    held = {g: t["state"] for g, t in placement_group_table().items() if t["state"] not in ("REMOVED",)}
    assert held == {}

    # The two-worker trial: a Ray Train run, sized to leave Ray Data a CPU, one MLflow run logged by its rank 0.
    out = outs[1]
    assert "each a Ray Train run of 2 worker(s) x 0.495 CPU" in out and "1 CPU left for Ray Data" in out
    client, _, (child,) = runs_of(uri, "right")
    assert child.data.tags["radiogen.trial_state"] == "complete"
    assert child.data.params["run.mode"] == "ray" and child.data.params["run.num_workers"] == "2"
    assert steps_of(client, child.info.run_id, "loss/G/total") == [3, 6]
    assert {"phase/mlflow_open_s", "phase/first_step_s", "phase/end_s"} <= set(child.data.metrics)
    assert "finished at step 6: val/l1_background=" in out


def test_a_killed_trial_worker_is_said_and_the_trial_restarts_from_its_checkpoint(prepared, ray_cluster,
                                                                                  mlflow_server, tmp_path) -> None:
    import os
    import signal
    import time

    from ray.util.state import list_actors

    gcs = ray_cluster.get_runtime_context().gcs_address
    cmd = _sweep_command(prepared, tmp_path, "killed", mlflow_server, trials=1, max_steps=12, report_every=3)
    proc = subprocess.Popen(cmd + ["--max-concurrent", "1"], cwd=REPO, env={**os.environ, "RAY_ADDRESS": gcs},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tune = tmp_path / "runs" / "sweeps" / "killed"
    deadline = time.time() + 300
    while not list(tune.rglob("checkpoint_000000")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # the trial has committed its first checkpoint
    # The session's cluster by its address: the background lane's own clusters may run beside it.
    alive = list_actors(address=gcs, filters=[("state", "=", "ALIVE")], detail=True)
    trials = [a for a in alive if "ImplicitFunc" in a.class_name]
    assert len(trials) == 1, [a.class_name for a in alive]
    os.kill(trials[0].pid, signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    said = [line for line in out.splitlines() if " failed (" in line]
    assert len(said) == 1 and "restarts from its last checkpoint" in said[0], out
    assert "died" in said[0].lower() or "sigkill" in said[0].lower(), said[0]  # the reason, not only a path
    assert " finished at step 12" in out  # the restarted trial completed its budget


@in_background(lambda out: [sys.executable, "-m", "tests.tracking_faults", "outage", str(out)])
def test_an_mlflow_outage_mid_run_loses_no_metric(background) -> None:
    """A `radiogen train --local` run whose MLflow server is SIGKILLed after its first checkpoint and brought back on
    the same store 2 s later (tests/tracking_faults.py outage: its own cohort, server and run, in the background lane)."""
    from mlflow import MlflowClient

    assert background.returncode == 0, background.stdout[-3000:]
    result = json.loads((background.out / "outage.json").read_text())
    out = result["output"]
    assert result["outage"], "the run ended before the outage; the test needs a longer run"
    assert result["returncode"] == 0 and "Traceback" not in out, out[-3000:]
    # Quiet: MLflow's INFO lines, artifact progress bars and run links stay out of the command's output.
    assert not [line for line in out.splitlines() if "INFO mlflow" in line or "View run" in line
                or "Downloading artifacts" in line or "Uploading artifacts" in line], out[-3000:]
    client = MlflowClient(f"sqlite:///{background.out / 'mlflow' / 'mlflow.db'}")  # the server's own store
    run = client.search_runs([client.get_experiment_by_name("radiogen").experiment_id])[0]
    assert run.info.status == "FINISHED"
    logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/G/total"))
    assert logged == list(range(2, result["steps"] + 1, 2))  # every step once: none lost, none twice


def test_the_fault_matrix_names_tests_that_exist() -> None:
    """docs/reliability.md stays true: every test it names for a promise is a test of the suite."""
    import re

    text = (REPO / "docs" / "reliability.md").read_text()
    named = re.findall(r"(tests/\w+\.py)(?:::(\w+))?", text)
    assert len(named) >= 15
    for path, name in named:
        source = (REPO / path).read_text()
        assert not name or f"def {name}(" in source, f"{path}::{name}"
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| fault")
            and not line.startswith("| rule") and "---" not in line]
    assert all("tests/" in row or "`::" in row for row in rows), [r for r in rows if "tests/" not in r]

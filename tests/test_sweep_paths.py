"""A sweep whose trials need more than one worker trains each trial with Ray Train, on real services (the session's
Ray cluster and MLflow server, the prepared synthetic dataset). That a direct trial, a one-worker Ray Train trial
and `--local` train identically is checked on the sweep benchmark's runs (tests/test_bench_sweep.py)."""

from __future__ import annotations

import contextlib
import io

from .test_sweep import runs_of, steps_of, sweep, sweep_file


def run_sweep(prepared, tmp_path, mlflow_server, config: str, name: str, *flags: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep(prepared, tmp_path / "runs", mlflow_server, config, name, "--name", name, *flags)
    assert code == 0, out.getvalue()
    return out.getvalue()



def test_a_two_worker_sweep_trains_each_trial_with_ray_train(prepared, mlflow_server, ray_cluster, tmp_path):
    """More than one worker: each trial is a Ray Train run; its rank-0 worker opens the trial's MLflow run (one
    per trial, nested under the sweep) and logs every step once; the driver closes it."""
    config = sweep_file(tmp_path, trials=1, max_steps=6, asha=False)
    out = run_sweep(prepared, tmp_path, mlflow_server, config, "two-workers", "--num-workers", "2")
    assert "each a Ray Train run of 2 worker(s) x 0.495 CPU" in out and "1 CPU left for Ray Data" in out
    client, parent, children = runs_of(mlflow_server, "two-workers")
    assert parent.info.status == "FINISHED" and len(children) == 1
    (child,) = children
    assert child.info.status == "FINISHED" and child.data.tags["radiogen.trial_state"] == "complete"
    assert child.data.params["run.mode"] == "ray" and child.data.params["run.num_workers"] == "2"
    assert steps_of(client, child.info.run_id, "loss/G/total") == [3, 6]
    assert {"phase/mlflow_open_s", "phase/first_step_s", "phase/end_s"} <= set(child.data.metrics)
    assert "finished at step 6: val/l1_background=" in out

"""The two ways a sweep trial trains, on real services (the session's Ray cluster and MLflow server, the prepared
synthetic dataset): a direct trial (one process, `loop.fit` in the Tune function) and a Ray Train trial (a
TorchTrainer per trial) run the same loop as `radiogen train --local`, so the same seed gives the same losses;
a `--num-workers 2` sweep takes the Ray Train path by itself."""

from __future__ import annotations

import contextlib
import io

import pytest

from .test_sweep import runs_of, steps_of, sweep, sweep_file

LOSSES = ("loss/D/total", "loss/G/total", "loss/G/l1")


def history(client, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def one_trial_grid(tmp_path, steps: int) -> str:
    return sweep_file(tmp_path, mode="grid", space={}, max_steps=steps,
                      grid={"seeds": [0], "reference": "base", "variants": {"base": {}}})


def run_sweep(prepared, tmp_path, mlflow_server, config: str, name: str, *flags: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep(prepared, tmp_path / "runs", mlflow_server, config, name, "--name", name, *flags)
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_direct_trial_ray_train_trial_and_local_give_the_same_losses(prepared, mlflow_server, ray_cluster,
                                                                      tmp_path):
    """Same config, seed, batches (the seeded in-memory permutation), checkpoint cadence (the RNG is re-seeded at
    every checkpoint) and one torch thread in all three: the losses must agree."""
    from ray_jobs.cli import main as radiogen
    from .test_train import n_genes, run_of

    config = one_trial_grid(tmp_path, steps=6)
    direct = run_sweep(prepared, tmp_path, mlflow_server, config, "same-direct")
    train_path = run_sweep(prepared, tmp_path, mlflow_server, config, "same-train", "--trial-mode", "train")
    assert "each one process training directly" in direct
    assert "each a Ray Train run of 1 worker(s)" in train_path and "CPU left for Ray Data" in train_path
    assert radiogen(["train", "--config", str(tmp_path / "runs" / "sweeps" / "same-direct" / "report" /
                                              "best_config.yaml"),
                     "--data", str(prepared), "--local", "--runs-dir", str(tmp_path / "runs"), "--tracking-uri",
                     mlflow_server, "--name", "same-local", "--log-every", "3", "--val-every", "3",
                     "--checkpoint-every", "3", "--val-size", "8"]) == 0

    client, _, (a,) = runs_of(mlflow_server, "same-direct")
    _, _, (b,) = runs_of(mlflow_server, "same-train")
    _, local = run_of(mlflow_server, "same-local")
    assert a.data.params["run.mode"] == "direct" and b.data.params["run.mode"] == "ray"
    assert local.data.params["run.torch_threads"] == "1" == a.data.params["run.torch_threads"] \
        == b.data.params["run.torch_threads"]
    assert a.data.params["data.n_genes"] == str(n_genes(prepared)) == local.data.params["data.n_genes"]
    for key in LOSSES:
        ha, hb, hl = (history(client, r.info.run_id, key) for r in (a, b, local))
        assert len(ha) == 2 and ha == pytest.approx(hl, rel=1e-6, abs=1e-7), key
        assert hb == pytest.approx(hl, rel=1e-6, abs=1e-7), key


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
    assert f"finished at step 6: val/l1_background=" in out

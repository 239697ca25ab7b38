"""Training end to end on real services: a real local Ray cluster, a real MLflow server, real parquet data."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import free_port
from .helpers import REPO

TINY = str(REPO / "ablations" / "tiny.yaml")


def n_genes(data: Path) -> int:
    return len(json.loads((data / "manifest.json").read_text())["gene_names"])


def train_args(data: Path, runs: Path, *extra: str, name: str, steps: int = 12) -> list[str]:
    return ["--config", TINY, "--data", str(data), "--runs-dir", str(runs), "--name", name, "--max-steps", str(steps),
            "--set", f"data.n_genes={n_genes(data)}", "--set", "train.batch_size=4", "--log-every", "2",
            "--val-every", "6", "--checkpoint-every", "6", "--val-size", "8", *extra]


def train(data: Path, runs: Path, uri: str, *extra: str, name: str, steps: int = 12) -> int:
    """The `ray_jobs.train` entry point in this process, on the session's Ray cluster."""
    from ray_jobs.train import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        return main(train_args(data, runs, *extra, name=name, steps=steps))


def run_of(uri: str, name: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("radiogen")
    runs = client.search_runs([exp.experiment_id], f"tags.`radiogen.run_name` = '{name}'")
    assert len(runs) == 1, f"expected exactly one MLflow run named {name}, found {len(runs)}"
    return client, runs[0]


def steps_of(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_local_run_is_fully_tracked(prepared, mlflow_server, tmp_path, capsys):
    from radiogen import schema

    assert train(prepared, tmp_path, mlflow_server, "--local", name="local-tracked") == 0
    out, err = capsys.readouterr()
    assert f"run local-tracked finished; open {mlflow_server} in a browser" in out
    assert "View run" not in out + err and "Downloading artifacts" not in err  # radiogen names the run once
    client, run = run_of(mlflow_server, "local-tracked")
    assert run.info.status == "FINISHED"
    assert run.data.params["generator.code_dim"] == "16" and run.data.params["loss.lambda_l1"] == "100.0"
    assert run.data.tags["radiogen.ablation"] == "tiny"
    # The dataset's content fingerprint (no timestamp in it: a re-prep of the same inputs gives the same tag).
    assert run.data.tags["radiogen.dataset_fingerprint"] == schema.dataset_fingerprint(prepared)
    assert run.data.tags["radiogen.code_version"]
    for key in ("loss/D/ISG", "loss/G/I", "loss/G/l1", "grad_norm/G", "perf/images_per_s", "perf/data_wait_fraction"):
        assert steps_of(client, run.info.run_id, key) == [2, 4, 6, 8, 10, 12], key
    assert steps_of(client, run.info.run_id, "val/l1_background") == [6, 12]
    assert "val/frechet_radiomic" in run.data.metrics
    # The gene-swap map score over the 3 validation subjects: logged with every validation, a rank correlation.
    assert steps_of(client, run.info.run_id, "val/map_objective") == [6, 12]
    assert -1 <= run.data.metrics["val/map_objective"] <= 1
    figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    assert figures == ["figures/fig2_step0000006.png", "figures/fig2_step0000012.png"]
    assert {"generator_ema_config.json", "generator_ema_weights.pt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run.info.run_id}'")
    assert [m.name for m in models] == ["generator_ema"]  # MLflow 3: a logged model linked to the run
    # The metrics are also kept next to the last checkpoint.
    ckpt = sorted((tmp_path / "local-tracked" / "checkpoints").glob("step_*"))[-1]
    lines = [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert ckpt.name == "step_00000012" and [r["step"] for r in lines if "loss/G/l1" in r["metrics"]] == [2, 4, 6, 8, 10, 12]


def test_logged_model_takes_raw_expression(prepared, mlflow_server, tmp_path):
    """The logged generator stands on its own: fed a patient's raw expression (as genes.parquet holds it) and a
    background slice, it gives what G_ema gives on the normalised vector; a weights-only file sits beside it."""
    import mlflow
    import mlflow.pyfunc
    import numpy as np
    import torch

    from radiogen import schema
    from radiogen.checkpoint import load_generator
    from radiogen.data import read_records
    from radiogen.genes import apply_gene_stats

    assert train(prepared, tmp_path, mlflow_server, "--local", name="local-model", steps=4) == 0
    client, run = run_of(mlflow_server, "local-model")
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/generator_ema")
    manifest = schema.read_manifest(prepared)
    raw = schema.read_genes(prepared).values[:2].astype(np.float32)
    bg = schema.decode_images(read_records(prepared, "train", "background", 2)["image"], 32)[:, None]
    out = model.predict({"background": bg, "genes": raw}, params={"seed": 7})

    G, cfg = load_generator(tmp_path / "local-model" / "checkpoints" / "step_00000004" / "state.pt")
    stats = schema.gene_stats(manifest, cfg.data.gene_norm)
    with torch.no_grad():
        torch.manual_seed(7)
        ref = G(torch.from_numpy(bg), torch.from_numpy(apply_gene_stats(stats, raw)))
        torch.manual_seed(7)
        unnormalised = G(torch.from_numpy(bg), torch.from_numpy(raw))
    assert out["image"].shape == (2, 1, 32, 32)
    np.testing.assert_allclose(out["image"], ref.image.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["mask"], ref.mask.numpy(), atol=1e-5)
    assert np.abs(out["image"] - unnormalised.image.numpy()).max() > 1e-3  # the normalisation really is applied

    # What a user needs comes with the model: gene order, statistics, signature, an input example.
    meta = model.metadata
    assert meta.metadata["gene_names"] == manifest["gene_names"] and meta.metadata["gene_stats"] == stats.to_dict()
    assert meta.get_input_schema().input_names() == ["background", "genes"] and meta.saved_input_example_info
    assert torch.equal(model.unwrap_python_model().module.normalise(torch.from_numpy(raw)),
                       torch.from_numpy(apply_gene_stats(stats, raw)))
    weights = torch.load(client.download_artifacts(run.info.run_id, "generator_ema_weights.pt", str(tmp_path)),
                         weights_only=True)
    assert weights["gene_names"] == manifest["gene_names"] and weights["gene_stats"] == stats.to_dict()
    assert weights["config"]["data"]["n_genes"] == n_genes(prepared)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in weights["state_dict"].items())


def test_a_sigkilled_worker_resumes_from_checkpoint_in_the_same_run(prepared, mlflow_server, tmp_path):
    assert train(prepared, tmp_path, mlflow_server, "--num-workers", "2", "--cpus-per-worker", "0.5",
                 "--fail-at-step", "9", name="ray-fail", steps=18) == 0
    assert (tmp_path / "ray-fail" / ".injected_failure").exists()  # the failure really happened
    client, run = run_of(mlflow_server, "ray-fail")
    assert run.info.status == "FINISHED"
    for key in ("loss/G/total", "loss/D/total", "perf/images_per_s"):
        assert steps_of(client, run.info.run_id, key) == list(range(2, 19, 2)), key  # none missing, none twice
    assert steps_of(client, run.info.run_id, "val/l1_background") == [6, 12, 18]


@pytest.mark.parametrize("data_mode,order", [("streaming", "--no-shuffle")])
def test_local_and_single_ray_worker_give_the_same_losses(prepared, mlflow_server, tmp_path, data_mode, order):
    """Both paths see the same batches, the same seeds and the same step function, so they must produce the same
    losses. Streaming shuffles with Ray Data, so it is compared in file order (--no-shuffle); the in-memory path,
    shuffled, is compared through a sweep's Ray Train trial (tests/test_bench_sweep.py; a sweep runs the same
    launcher). A Ray worker with one CPU runs torch on one thread (its reservation), so the local run does too: a
    different thread count changes float summation order."""
    import torch

    shuffle = () if order == "--shuffle" else ("--no-shuffle",)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train(prepared, tmp_path, mlflow_server, *shuffle, "--local", name=f"same-local-{data_mode}",
                     steps=6) == 0
    finally:
        torch.set_num_threads(threads)
    assert train(prepared, tmp_path, mlflow_server, *shuffle, "--num-workers", "1", "--data-mode", data_mode,
                 name=f"same-ray-{data_mode}", steps=6) == 0
    client, local = run_of(mlflow_server, f"same-local-{data_mode}")
    _, ray_run = run_of(mlflow_server, f"same-ray-{data_mode}")
    assert ray_run.data.params["run.data_mode"] == data_mode and local.data.params["run.data_mode"] == "memory"
    assert ray_run.data.params["run.torch_threads"] == "1"  # the worker's 1-CPU reservation
    for key in ("loss/D/total", "loss/G/total", "loss/G/l1"):
        a = [m.value for m in sorted(client.get_metric_history(local.info.run_id, key), key=lambda m: m.step)]
        b = [m.value for m in sorted(client.get_metric_history(ray_run.info.run_id, key), key=lambda m: m.step)]
        assert len(a) == 3 and a == pytest.approx(b, rel=1e-6, abs=1e-7), key


def test_unreachable_tracking_server_fails_fast(prepared, tmp_path, capsys):
    assert train(prepared, tmp_path, f"http://127.0.0.1:{free_port()}", "--local", name="no-server") == 2
    err = capsys.readouterr().err
    assert "MLflow tracking server http://127.0.0.1:" in err and "is unreachable" in err


def test_config_and_dataset_mismatch_is_explained(prepared, mlflow_server, tmp_path):
    cmd = [sys.executable, "-m", "ray_jobs.train", "--config", TINY, "--data", str(prepared), "--local",
           "--runs-dir", str(tmp_path)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server})
    assert res.returncode == 2 and f"use --set data.n_genes={n_genes(prepared)}" in res.stderr


def test_ray_job_submit_of_two_workers_at_default_flags_succeeds_quietly_and_fits_the_cluster(
        prepared, mlflow_server, ray_dashboard, ray_cluster_alone, tmp_path):
    """`ray job submit` as the README gives it (ray_jobs/runtime_env.yaml, `--tracking-uri` expanded by the
    submitting shell, `--num-workers N` without --cpus-per-worker) to the session's real 2-CPU Ray cluster through
    its dashboard's job API (token auth, as every local cluster since Ray 2.59).
    - The job does not see MLFLOW_TRACKING_URI: the run must still reach the tracking server on the command line.
    - Two workers are sized to 0.5 CPU each so that Ray Data keeps one CPU (at 1 CPU each the workers took both and
      the per-epoch shuffle waited forever); the job's driver is a process of its own, so a hang is a timeout here
      (and the job is stopped), not a stuck session.
    - Quiet by default: start-up lines, progress lines and a summary; Ray Data's and Ray Train's chatter in files."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_DATA_", "RAY_TRAIN_", "MLFLOW_"))}
    env.pop("RAY_ADDRESS", None)
    env["RAY_AUTH_MODE"] = "token"
    entry = [sys.executable, "-m", "ray_jobs.train",
             *train_args(prepared, tmp_path, "--num-workers", "2", "--tracking-uri", mlflow_server, name="submitted")]
    job = f"radiogen-test-{os.getpid()}"
    try:
        res = subprocess.run([ray_bin, "job", "submit", "--address", ray_dashboard, "--submission-id", job,
                              "--runtime-env", "ray_jobs/runtime_env.yaml", "--", *entry],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        subprocess.run([ray_bin, "job", "stop", "--address", ray_dashboard, job], env=env, timeout=60)
        raise
    status = subprocess.run([ray_bin, "job", "status", "--address", ray_dashboard, job],
                            env=env, capture_output=True, text=True, timeout=60)
    assert f"Job '{job}' succeeded" in status.stdout, res.stdout[-3000:] + res.stderr[-3000:] + status.stdout
    assert "resources: 2 worker(s) x 0.5 CPU (sized automatically); cluster 2 CPUs, 0 GPUs; 1 CPU left for Ray Data" \
        in res.stdout
    output = res.stdout + res.stderr
    assert "data: memory (" in output and "step 12/12: " in output and "trained steps 0 -> 12 in " in output
    for chatter in ("Running Dataset", "Execution plan of Dataset", "logging_progress", "Reporting training result",
                    "Requesting resources", "Downloading artifacts", "row/s]", "core_worker", "View run"):
        assert chatter not in output, chatter
    printed = res.stdout.split("Tailing logs until the job exits")[-1]  # the job's own, after `ray job`'s preamble
    assert len(printed.splitlines()) < 30, res.stdout
    log_file = next(line.split()[1].rstrip(",") for line in res.stdout.splitlines() if line.startswith("logs: "))
    assert Path(log_file).is_file()
    client, run = run_of(mlflow_server, "submitted")
    assert run.info.status == "FINISHED" and run.data.params["run.num_workers"] == "2"
    assert run.data.params["run.cpus_per_worker"] == "0.5"
    assert steps_of(client, run.info.run_id, "loss/G/total") == [2, 4, 6, 8, 10, 12]
    assert run.data.metrics["perf/images_per_s"] > 0 and 0 <= run.data.metrics["perf/data_wait_fraction"] < 1
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a sqlite store in the runs folder


def test_kuberay_manifest_and_runtime_env_point_at_real_entry_points():
    from ray_jobs.train import add_arguments

    import argparse

    docs = list(yaml.safe_load_all((REPO / "ray_jobs" / "kuberay-rayjob.yaml").read_text()))
    assert len(docs) == 1 and docs[0]["kind"] == "RayJob" and docs[0]["apiVersion"] == "ray.io/v1"
    entry = shlex.split(docs[0]["spec"]["entrypoint"])
    assert entry[:3] == ["python", "-m", "ray_jobs.train"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(entry[3:])  # every flag in the manifest is a real flag
    assert (REPO / args.config).is_file() and args.gpu and args.num_workers == 2
    assert docs[0]["spec"]["rayClusterSpec"]["rayVersion"] == "2.60.0"
    assert yaml.safe_load(docs[0]["spec"]["runtimeEnvYAML"])["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    env = yaml.safe_load((REPO / "ray_jobs" / "runtime_env.yaml").read_text())
    assert env["working_dir"] == "." and ".venv/" in env["excludes"]

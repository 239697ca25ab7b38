"""Training throughput: one Ray Train worker against the in-process loop (`--local`) on the same config and data.

Three trainings of the tiny config on the bench's 32 px cohort, in this process's Ray cluster, each tracked in a
throwaway sqlite store: `--local`; Ray Train with 1 worker and the in-memory data path (the default where the data
fits); and Ray Train with 1 worker streaming through Ray Data (a shuffle re-executed per epoch). Images/s and the
fraction of step time spent waiting for data come from the metric records each run keeps with its last checkpoint
(the first window, which holds start-up, is left out). FLOPs per step are counted with radiogen.cost (MFU on a GPU
is the gpu stage's).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
from collections.abc import Iterator
from pathlib import Path

from .common import Context, Measure, ratio_measure

STAGE = "train"
CONFIG = Path(__file__).resolve().parents[2] / "ablations" / "tiny.yaml"
LOG_EVERY = 20
QUICK_STEPS, QUICK_LOG_EVERY = 20, 5  # --quick: every path, and the 3 metric windows perf() reads


def perf(records_file: Path) -> tuple[float, float]:
    """(median images/s, mean data-wait fraction) over the metric windows after the first."""
    rows = [json.loads(x)["metrics"] for x in records_file.read_text().splitlines()]
    rows = [r for r in rows if "perf/images_per_s" in r][1:]
    return (statistics.median(r["perf/images_per_s"] for r in rows),
            statistics.mean(r["perf/data_wait_fraction"] for r in rows))


def train_run(data: Path, runs: Path, name: str, steps: int, log_every: int, *flags: str) -> tuple[float, float]:
    from ray_jobs.train import main as train

    args = ["--config", str(CONFIG), "--data", str(data), "--runs-dir", str(runs), "--name", name,
            "--max-steps", str(steps), "--set", "data.n_genes=null", "--log-every", str(log_every),
            "--val-every", str(steps), "--checkpoint-every", str(steps), "--experiment", "bench-train",
            "--tracking-uri", f"sqlite:///{runs / 'mlflow.db'}", *flags]
    if train(args) != 0:
        raise RuntimeError(f"training {name} failed; see the log named above")
    last = f"step_{steps:08d}"
    found = [runs / name / "checkpoints" / last, runs / "ray" / name / last]
    return perf(next(p for p in found if p.is_dir()) / "metrics.jsonl")


@contextlib.contextmanager
def threads_env(threads: int) -> Iterator[None]:
    """--local's torch threads set the way a user does (OMP_NUM_THREADS), for one run."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = before


def run(ctx: Context) -> list[Measure]:
    import torch

    from radiogen.config import load_config
    from radiogen.cost import measure

    data = ctx.cohorts["small32"]
    runs = ctx.work / STAGE
    runs.mkdir(parents=True, exist_ok=True)
    steps, log_every = (QUICK_STEPS, QUICK_LOG_EVERY) if ctx.quick else (600, LOG_EVERY)
    tag = f"{os.getpid()}"
    # --local at the Ray worker's thread count (its 1-CPU reservation, and --local's own choice at 32 px), so that
    # the ratio compares the paths, not thread counts; --local at every core's thread is reported beside it (the
    # measurement behind --local's thread rule, ray_jobs/resources.py).
    cores = torch.get_num_threads()
    with threads_env(cores):
        local_cores_ips, _ = train_run(data, runs, f"local-cores-{tag}", steps, log_every, "--local")
    with threads_env(1):
        local_ips, local_wait = train_run(data, runs, f"local-{tag}", steps, log_every, "--local")
    mem_ips, mem_wait = train_run(data, runs, f"ray-memory-{tag}", steps, log_every, "--num-workers", "1",
                                  "--data-mode", "memory")
    str_ips, str_wait = train_run(data, runs, f"ray-streaming-{tag}", steps, log_every, "--num-workers", "1",
                                  "--data-mode", "streaming")

    manifest = json.loads((data / "manifest.json").read_text())
    cfg = load_config(CONFIG, [f"data.n_genes={len(manifest['gene_names'])}"])
    cost = measure(cfg)
    setup = (f"tiny config, batch {cfg.train.batch_size}, {steps} steps, "
             f"{manifest['counts']['slices']['nodule']['train']} training nodule slices; one torch thread in both "
             f"(the Ray worker's 1-CPU reservation; Ray Data keeps the other CPU)")
    return [
        ratio_measure(STAGE, "Ray Train 1 worker, in-memory data (default) vs --local", mem_ips, "img/s", local_ips,
                      "--local", target=0.97, note=setup),
        ratio_measure(STAGE, f"--local at {cores} threads (one per core) vs 1 thread", local_cores_ips,
                      "img/s", local_ips, "--local, 1 thread",
                      note="below 1: --local trains 32 px images with one thread (ray_jobs/resources.py)"),
        Measure(STAGE, "data wait, Ray in-memory path", 100 * mem_wait, "% of step time", None,
                f"--local {100 * local_wait:.1f}%", "< 2%", mem_wait < 0.02),
        ratio_measure(STAGE, "Ray Train 1 worker, Ray Data streaming vs --local", str_ips, "img/s", local_ips,
                      "--local", note="a Ray Data random_shuffle per epoch and a streaming_split restart per epoch"),
        Measure(STAGE, "data wait, Ray Data streaming", 100 * str_wait, "% of step time", None, "", "", None,
                "the cost the in-memory path removes"),
        Measure(STAGE, "FLOPs per training step", cost.flops_per_step / 1e9, "GFLOP", None, "", "", None,
                f"tiny config at batch {cost.batch_size}; achieved "
                f"{cost.flops_per_step * local_ips / cfg.train.batch_size / 1e9:.1f} GFLOP/s in --local"),
    ]

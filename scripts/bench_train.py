"""Training throughput: the Ray path (Ray Data + Ray Train, 1 worker) against `--local`, same config.

    python scripts/bench_train.py --data DIR [--config ablations/tiny.yaml] [--steps 200] [--set k=v ...] [--gpu]

Runs both trainings in this process's Ray cluster with a throwaway sqlite tracking store and reads
`perf/images_per_s` and `perf/data_wait_fraction` from the metrics each run keeps next to its last
checkpoint (the first log window, which includes start-up, is left out). Prints both and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch


def perf(records_file: Path) -> tuple[float, float]:
    rows = [json.loads(x) for x in records_file.read_text().splitlines()]
    rows = [r["metrics"] for r in rows if "perf/images_per_s" in r["metrics"]][1:]  # skip the warm-up window
    return (statistics.median(r["perf/images_per_s"] for r in rows),
            statistics.mean(r["perf/data_wait_fraction"] for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "ablations" / "tiny.yaml"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()

    from ray_jobs.train import main as train

    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    results = {}
    with tempfile.TemporaryDirectory() as runs:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        common = ["--config", args.config, "--data", args.data, "--runs-dir", runs, "--max-steps", str(args.steps),
                  "--log-every", "20", "--val-every", str(args.steps), "--checkpoint-every", str(args.steps)]
        for o in args.overrides:
            common += ["--set", o]
        assert train([*common, "--local", "--name", "bench-local"]) == 0
        results["local (one process, pyarrow)"] = perf(Path(runs) / "bench-local" / "checkpoints"
                                                       / f"step_{args.steps:08d}" / "metrics.jsonl")
        ray_args = [*common, "--num-workers", "1", "--name", "bench-ray"] + (["--gpu"] if args.gpu else [])
        assert train(ray_args) == 0
        results["Ray Data + Ray Train, 1 worker"] = perf(Path(runs) / "ray" / "bench-ray" / f"step_{args.steps:08d}"
                                                         / "metrics.jsonl")
    print(f"device: {device}; config {Path(args.config).name} {' '.join(args.overrides)}; {args.steps} steps")
    print(f"{'path':<36}{'images/s':>10}{'data wait':>11}")
    for name, (ips, wait) in results.items():
        print(f"{name:<36}{ips:>10.1f}{wait:>10.1%}")
    (l_ips, _), (r_ips, _) = results.values()
    print(f"ratio Ray / local images/s: {r_ips / l_ips:.2f}")


if __name__ == "__main__":
    main()

"""`radiogen train` / `python -m ray_jobs.train`: train on a prepared dataset with Ray Train (or `--local`).

Ray's levels as Ray documents them: `train_loop_per_worker` runs on every worker (it calls the
shared `loop.fit`), and `run_ray` is the driver that builds the datasets and the TorchTrainer.
This module is what `ray job submit` runs (see ray_jobs/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import torch

from radiogen import schema
from radiogen.config import ConfigError, ExperimentConfig, load_config, to_dict
from radiogen.data import (ROW_COLUMNS, DatasetMismatch, LocalSource, check_compatible, paired_batches, pool_records,
                           read_records)

from .cli import add_train_arguments as add_arguments
from .loop import Records, RunSettings, fit
from .tracking import (TrackingUnavailable, Tracker, check_tracking, code_version, default_tracking_uri, flatten,
                       open_run)

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# ---------------------------------------------------------------------------------------------
# Ray: one function per worker, one driver.


class RaySession:
    """Batches from this worker's Ray Data shards; checkpoints committed through ray.train.report."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.nodules = ray.train.get_dataset_shard("nodule")
        self.backgrounds = ray.train.get_dataset_shard("background")

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def epoch_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Records, Records]]:
        def stream(shard):
            return lambda _: shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True,
                                                prefetch_batches=2)

        return paired_batches(stream(self.nodules), stream(self.backgrounds), epoch)

    def latest_checkpoint(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        if checkpoint.filesystem.type_name == "local":
            return Path(checkpoint.path)  # read in place: no copy on a shared or local filesystem
        return Path(checkpoint.to_directory())

    def commit(self, checkpoint_dir: Path | None, step: int, metrics: dict[str, float]) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"step_{step:08d}")


def train_loop_per_worker(config: dict) -> None:
    fit(RunSettings(**config), RaySession())


def run_ray(settings: RunSettings, args: argparse.Namespace, run_name: str, files: list[str], shuffle: bool) -> None:
    import ray
    from ray.data import ExecutionOptions
    from ray.data.expressions import col
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(address=args.address, dashboard_host="127.0.0.1", configure_logging=False)
    rows = ray.data.read_parquet(files).select_columns([*ROW_COLUMNS, "split", "kind"])

    def train_part(kind: str) -> ray.data.Dataset:
        # Materialised once; the shuffle after it is redone every epoch (a fresh order per epoch).
        wanted = (col("split") == "train") & (col("kind") == kind)
        part = rows.filter(expr=wanted).select_columns(list(ROW_COLUMNS)).materialize()
        return part.random_shuffle() if shuffle else part

    options = ExecutionOptions(preserve_order=not shuffle)
    storage = Path(args.runs_dir).resolve() / "ray"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(settings),
        scaling_config=ScalingConfig(num_workers=args.num_workers, use_gpu=args.gpu,
                                     resources_per_worker={"CPU": args.cpus_per_worker}),
        run_config=RunConfig(name=run_name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=args.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"nodule": train_part("nodule"), "background": train_part("background")},
        dataset_config=DataConfig(execution_options=options),
    )
    trainer.fit()


# ---------------------------------------------------------------------------------------------
# The command.


def dataset_fingerprint(root: Path) -> str:
    return hashlib.sha256((root / schema.MANIFEST_NAME).read_bytes()).hexdigest()[:16]


def run(args: argparse.Namespace) -> int:
    try:
        overrides = list(args.overrides) + ([f"train.max_steps={args.max_steps}"] if args.max_steps else [])
        cfg: ExperimentConfig = load_config(args.config, overrides)
        data = Path(args.data).resolve()
        manifest = schema.read_manifest(data)
        check_compatible(manifest, cfg.data)
        if cfg.data.n_genes is None:  # the config asks to follow the dataset
            cfg = replace(cfg, data=replace(cfg.data, n_genes=len(manifest["gene_names"])))
        run_name = args.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not RUN_NAME.fullmatch(run_name):
            raise ConfigError(f"--name {run_name!r}: use letters, digits, '.', '_' and '-' only")
        runs_dir = Path(args.runs_dir).resolve()
        uri = default_tracking_uri(runs_dir)
        check_tracking(uri)
    except (ConfigError, schema.SchemaError, DatasetMismatch, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    matrix = schema.read_genes(data)
    train_subjects = {s for s, split in zip(matrix.subject_ids, matrix.splits) if split == "train"}
    if len(train_subjects) < 2:
        print(f"error: the training split of {data} has {len(train_subjects)} subject(s); mismatched tuples need "
              f"at least 2 - prepare more subjects or change the split", file=sys.stderr)
        return 2
    nodules_val = read_records(data, "val", "nodule", args.val_size)
    backgrounds_val = read_records(data, "val", "background", len(nodules_val["subject_id"]))
    n_val = min(len(nodules_val["subject_id"]), len(backgrounds_val["subject_id"]))
    validation = {"nodules": {k: v[:n_val] for k, v in nodules_val.items()},
                  "backgrounds": {k: v[:n_val] for k, v in backgrounds_val.items()}} if n_val >= 2 else {}
    if not validation:
        print("warning: the validation split has fewer than 2 paired slices; validation metrics and figures are off")

    mode = "local" if args.local else "ray"
    params = flatten("", to_dict(cfg)) | {"run.mode": mode, "run.num_workers": 1 if args.local else args.num_workers,
                                          "run.data": str(data), "run.gpu": args.gpu}
    tags = {"radiogen.ablation": cfg.name, "radiogen.dataset_fingerprint": dataset_fingerprint(data),
            "radiogen.code_version": code_version(), "radiogen.mode": mode}
    artifact_root = runs_dir / "mlartifacts" if uri.startswith("sqlite:") else None
    run_id = open_run(uri, args.experiment, run_name, params, tags, artifact_root)
    stats = schema.gene_stats(manifest, cfg.data.gene_norm)
    settings = RunSettings(
        config=to_dict(cfg), tracking_uri=uri, run_id=run_id,
        genes={"subject_ids": matrix.subject_ids, "values": matrix.values, "stats": stats.to_dict()},
        pool=pool_records(data), validation=validation, log_every=args.log_every, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, fail_at_step=args.fail_at_step,
        fail_marker=str(runs_dir / run_name / ".injected_failure") if args.fail_at_step else None)
    (runs_dir / run_name).mkdir(parents=True, exist_ok=True)
    print(f"run {run_name} (MLflow run {run_id}) tracking at {uri}")

    tracker = Tracker(uri, run_id)
    try:
        if args.local:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            source = LocalSource(data, "train", cfg.train.batch_size, cfg.train.seed, shuffle=not args.no_shuffle)
            from .local import LocalSession

            fit(settings, LocalSession(source, runs_dir / run_name, device))
        else:
            run_ray(settings, args, run_name, schema.slice_files(data, manifest), shuffle=not args.no_shuffle)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    print(f"run {run_name} finished; open the tracking UI with: mlflow ui --backend-store-uri {uri}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.train", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

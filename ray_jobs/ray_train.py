"""The Ray Train launcher: a typed plan in, a TorchTrainer of `train_loop_per_worker` out (Ray's three levels as
Ray documents them: this is the per-worker function and the driver; a sweep's Train-path trials call it too).

Every worker runs the shared `loop.fit` through a `RaySession`: batches from its Ray Data shards (read once into
memory, or streamed per epoch), checkpoints committed with `ray.train.report`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from radiogen.data import ROW_COLUMNS, MemorySource, Slices, concat_records, decode_slices, paired_batches

from .loop import RunSettings, fit, read_checkpoint_records
from .quiet import quiet_worker, train_logging
from .tracking import Tracker

PLACEMENT_GROUP_TAG = "radiogen.placement_group"
"""The workers' Ray placement group (hex id), tagged by rank 0: a sweep frees it when it stops the trial early."""


@dataclass(frozen=True)
class RunPlan:
    """How one training runs on Ray Train (what `radiogen train` and a sweep's Train-path trials decide)."""

    name: str
    """The run's folder under `storage`; the same name resumes from its last checkpoint."""
    storage: Path
    num_workers: int
    gpu: bool
    cpus_per_worker: float
    max_failures: int
    """Worker-group restarts from the last checkpoint before the run fails."""
    shuffle: bool
    data_mode: str
    """memory (each worker reads its shard once) or streaming (Ray Data every epoch)."""


class RaySession:
    """Batches from this worker's Ray Data shards; checkpoints committed through ray.train.report.

    data_mode "memory": the shards are read once into a MemorySource on this worker's device (a GPU when
    training there) and every epoch is an index permutation; "streaming": each epoch re-runs the Ray Data
    pipeline (its per-epoch shuffle) and every record batch is decoded as it arrives.
    """

    def __init__(self, settings: RunSettings) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.nodules = ray.train.get_dataset_shard("nodule")
        self.backgrounds = ray.train.get_dataset_shard("background")
        cfg = settings.config
        self.image_size, self.seed = cfg.data.image_size, cfg.train.seed
        self.mode, self.shuffle = settings.data_mode, settings.shuffle
        self.memory: MemorySource | None = None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world_size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def epoch_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Slices, Slices]]:
        if self.mode == "memory":
            if self.memory is None:  # the shard crosses the Ray Data pipeline once per worker (and per restart)
                whole = {kind: concat_records(shard.iter_batches(batch_size=4096, batch_format="numpy"))
                         for kind, shard in (("nodule", self.nodules), ("background", self.backgrounds))}
                self.memory = MemorySource(whole, self.image_size, batch_size, self.seed, self.shuffle,
                                           rank=self.rank, device=self.device)
            return self.memory.epoch(epoch)

        def stream(shard, kind: str):
            def batches(_):
                for records in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True,
                                                  prefetch_batches=2):
                    yield decode_slices(records, self.image_size, masks=kind == "nodule")
            return batches

        return paired_batches(stream(self.nodules, "nodule"), stream(self.backgrounds, "background"), epoch)

    def previous_checkpoint(self, checkpoint: Path) -> Path | None:
        """None: Ray hands a worker only its latest checkpoint, so a damaged one fails the attempt with its reason."""
        return None

    def latest_checkpoint(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        if checkpoint.filesystem.type_name == "local":
            return Path(checkpoint.path)  # read in place: no copy on a shared or local filesystem
        return Path(checkpoint.to_directory())

    def commit(self, checkpoint_dir: Path | None, step: int, metrics: dict[str, float]) -> None:
        """Report the checkpoint with its losses and (rank 0) the latest validation metrics it holds: what
        Ray Tune's schedulers read in a sweep (the Train-to-Tune bridge forwards rank 0's report)."""
        import ray.train

        if checkpoint_dir is not None:
            metrics = {**latest_validation(checkpoint_dir), **metrics}
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"step_{step:08d}")


def latest_validation(checkpoint_dir: Path) -> dict[str, float]:
    """The val/* metrics of the newest validation record in a checkpoint's metrics.jsonl ({} when none)."""
    for record in reversed(read_checkpoint_records(checkpoint_dir)):
        found = {k: v for k, v in record["metrics"].items() if k.startswith("val/")}
        if found:
            return found
    return {}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray

    settings: RunSettings = ray.get(config["settings"])
    quiet_worker()
    if settings.threads:
        torch.set_num_threads(settings.threads)  # the worker's CPU reservation, not every core of the node
    session = RaySession(settings)
    if session.rank == 0:
        import ray.util

        if settings.run_id is None:  # a sweep's Train-path trial: this worker is the one that talks to MLflow
            run_id = settings.run_request.open()
            settings = replace(settings, run_id=run_id, phases={**settings.phases, "mlflow_open": time.time()})
        group = ray.util.get_current_placement_group()
        try:
            if group is not None:
                Tracker(settings.tracking_uri, settings.run_id).client.set_tag(settings.run_id, PLACEMENT_GROUP_TAG,
                                                                               group.id.hex())
        except Exception as err:  # noqa: BLE001 - informational; training goes on
            print(f"tracking: placement group not tagged ({err})")
    fit(settings, session)


def training_datasets(files: list[str], shuffle: bool, data_mode: str) -> dict[str, Any]:
    """{"nodule", "background"}: the training split's rows as Ray Datasets, materialised once (a sweep builds them
    once for all its Train-path trials). Streaming: the shuffle after the materialise point is redone every epoch;
    memory: each worker reads its shard once, in order, and shuffles indices itself."""
    import ray
    from ray.data.expressions import col

    rows = ray.data.read_parquet(files).select_columns([*ROW_COLUMNS, "split", "kind"])

    def part(kind: str) -> ray.data.Dataset:
        wanted = (col("split") == "train") & (col("kind") == kind)
        done = rows.filter(expr=wanted).select_columns(list(ROW_COLUMNS)).materialize()
        return done.random_shuffle() if shuffle and data_mode == "streaming" else done

    return {"nodule": part("nodule"), "background": part("background")}


def launch(plan: RunPlan, settings: RunSettings, datasets: dict[str, Any], callbacks: list | None = None) -> None:
    """Fit one training run on Ray Train (`callbacks`: Ray Train callbacks, e.g. a sweep's TuneReportCallback)."""
    import ray
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    options = ExecutionOptions(preserve_order=not (plan.shuffle and plan.data_mode == "streaming"))
    # The settings go by object reference: Ray Train's controller unpickles the loop config, and RunSettings by
    # value would make it import the loop (torch, scikit-learn): ~4 s of every run's start-up on 2 cores.
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"settings": ray.put(settings)},
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=plan.gpu,
                                     resources_per_worker={"CPU": plan.cpus_per_worker}),
        run_config=RunConfig(name=plan.name, storage_path=str(plan.storage),
                             failure_config=FailureConfig(max_failures=plan.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks,
                             logging_config=train_logging()),
        datasets=datasets,
        dataset_config=DataConfig(execution_options=options),
    )
    trainer.fit()

"""`radiogen train` / `python -m ray_jobs.train`: train on a prepared dataset with Ray Train (or `--local`).

Ray's levels as Ray documents them: `train_loop_per_worker` runs on every worker (it calls the
shared `loop.fit`), and `run_ray` is the driver that builds the datasets and the TorchTrainer.
This module is what `ray job submit` runs (README.md, Training); give it --tracking-uri there.

Before an MLflow run is opened: the config, the dataset (every file against its recorded hash), the
tracking store and, on Ray, the cluster's resources are checked (exit 2 with the flag to change).
Workers get min(1, (CPUs - 1) / workers) CPUs unless --cpus-per-worker says otherwise: Ray Data keeps
one whole CPU. Once the run is open, it ends FINISHED, FAILED (any error) or KILLED (SIGTERM: exit 143,
checkpoints kept; the same --name resumes it). The name of a finished run is refused.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from radiogen import schema
from radiogen.config import ConfigError, ExperimentConfig, load_config, to_dict
from radiogen.data import (DATA_MODES, ROW_COLUMNS, DatasetMismatch, LocalSource, MemorySource, Slices,
                           check_compatible, concat_records, decode_slices, paired_batches, plan_data_mode,
                           pool_records, read_records)

from .cli import add_train_arguments as add_arguments
from .quiet import apply_ray_env, quiet_logs, quiet_worker, ray_log_dir, ray_started, recapture, train_logging
from .loop import Records, RunSettings, fit
from .loop import _read_records as read_checkpoint_records
from .tracking import (RunFinished, TrackingUnavailable, Tracker, check_tracking, code_version, default_tracking_uri,
                       flatten, open_run, ui_hint)

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# ---------------------------------------------------------------------------------------------
# Ray: one function per worker, one driver.


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
        self.image_size, self.seed = cfg["data"]["image_size"], cfg["train"]["seed"]
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


PLACEMENT_GROUP_TAG = "radiogen.placement_group"
"""The workers' Ray placement group (hex id), tagged by rank 0: a sweep frees it when it stops the trial early."""


def train_loop_per_worker(config: dict) -> None:
    settings = RunSettings(**config)
    quiet_worker()
    if settings.threads:
        torch.set_num_threads(settings.threads)  # the worker's CPU reservation, not every core of the node
    session = RaySession(settings)
    if session.rank == 0:
        import ray.util

        group = ray.util.get_current_placement_group()
        try:
            if group is not None:
                Tracker(settings.tracking_uri, settings.run_id).client.set_tag(settings.run_id, PLACEMENT_GROUP_TAG,
                                                                               group.id.hex())
        except Exception as err:  # noqa: BLE001 - informational; training goes on
            print(f"tracking: placement group not tagged ({err})")
    fit(settings, session)


def connect_ray(address: str | None, log_to_driver: bool = True) -> bool:
    """Initialise Ray (once per process); True when joining a cluster that exists already. With
    log_to_driver=False the workers' output stays in Ray's log files (a sweep prints one line per event)."""
    import ray

    recapture()
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    if not ray.is_initialized():
        # The job's workers get the quiet environment (ray_jobs/quiet.py); a submitted job has it from
        # ray_jobs/runtime_env.yaml already.
        env = apply_ray_env(address or os.environ.get("RAY_ADDRESS"))
        ray.init(address=address, dashboard_host="127.0.0.1", configure_logging=False, log_to_driver=log_to_driver,
                 **({} if env is None else {"runtime_env": {"env_vars": env}}))
        ray_started()
    return joining


class ResourceMismatch(ValueError):
    """The requested workers do not fit the cluster while leaving one CPU for Ray Data."""


RAY_DATA_CPUS = 1.0
"""Ray Data only schedules on whole CPUs: one stays free of Train workers, or the per-epoch shuffle waits forever."""
MIN_CPUS_PER_WORKER = 0.1
RESOURCE_WAIT_S = 60.0
"""How long a job joining an existing cluster waits for nodes still starting before it gives up."""


def plan_cpus_per_worker(cpus: float, gpus: float, num_workers: int, requested: float | None, gpu: bool) -> float:
    """CPUs per Train worker that leave RAY_DATA_CPUS for Ray Data; raise ResourceMismatch naming the flag."""
    if num_workers < 1:
        raise ResourceMismatch(f"--num-workers must be at least 1, got {num_workers}")
    if gpu and gpus < num_workers:
        raise ResourceMismatch(f"--gpu asks for one GPU per worker: --num-workers {num_workers} needs {num_workers} "
                               f"GPUs but the cluster has {gpus:g}; lower --num-workers to {int(gpus)} or leave "
                               f"out --gpu" if gpus >= 1 else
                               "--gpu asks for one GPU per worker but the cluster has no GPU; leave out --gpu")
    spare = cpus - RAY_DATA_CPUS
    if requested is None:
        share = min(1.0, math.floor(spare / num_workers * 1000) / 1000)  # Ray counts resources in 1e-4 units
        if share < MIN_CPUS_PER_WORKER:
            most = math.floor(round(spare / MIN_CPUS_PER_WORKER, 6))
            fix = (f"lower --num-workers to {most} or fewer" if most >= 1 else
                   "train with --local, or on a cluster with at least 2 CPUs")
            raise ResourceMismatch(f"--num-workers {num_workers} on a cluster of {cpus:g} CPUs leaves {max(share, 0):g} "
                                   f"CPU per worker after {RAY_DATA_CPUS:g} CPU for Ray Data (at least "
                                   f"{MIN_CPUS_PER_WORKER:g} is needed); {fix}")
        return share
    if requested <= 0:
        raise ResourceMismatch(f"--cpus-per-worker must be > 0, got {requested:g}")
    if requested * num_workers > spare + 1e-9:
        fits = math.floor(max(spare, 0) / num_workers * 1000) / 1000
        raise ResourceMismatch(
            f"--cpus-per-worker {requested:g} x --num-workers {num_workers} = {requested * num_workers:g} CPUs, but "
            f"the cluster has {cpus:g} and Ray Data needs {RAY_DATA_CPUS:g} of them; lower --cpus-per-worker to "
            f"{fits:g} or less (or leave it out to size it automatically) or lower --num-workers")
    return requested


def size_workers(args: argparse.Namespace, joining: bool) -> float:
    """Check the cluster's resources against the request; print and return the CPUs per worker."""
    import ray

    deadline = time.monotonic() + (RESOURCE_WAIT_S if joining else 0)
    waited = False
    while True:
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        try:
            share = plan_cpus_per_worker(cpus, gpus, args.num_workers, args.cpus_per_worker, args.gpu)
            break
        except ResourceMismatch:
            if time.monotonic() >= deadline:
                raise
            if not waited:
                print(f"resources: the cluster has {cpus:g} CPUs, {gpus:g} GPUs so far; waiting up to "
                      f"{RESOURCE_WAIT_S:g} s for more nodes")
                waited = True
            time.sleep(2)
    how = "--cpus-per-worker" if args.cpus_per_worker is not None else "sized automatically"
    print(f"resources: {args.num_workers} worker(s) x {share:g} CPU{' + 1 GPU' if args.gpu else ''} ({how}); "
          f"cluster {cpus:g} CPUs, {gpus:g} GPUs; {cpus - share * args.num_workers:g} CPU left for Ray Data")
    return share


def run_ray(settings: RunSettings, args: argparse.Namespace, run_name: str, files: list[str], shuffle: bool,
            cpus_per_worker: float, storage: Path | None = None, callbacks: list | None = None) -> None:
    """The driver: datasets and the TorchTrainer of one training run (`storage`/`run_name` is where its checkpoints
    live, and where the same name resumes; `callbacks` are Ray Train callbacks, e.g. the sweep's TuneReportCallback)."""
    import ray
    from ray.data import ExecutionOptions
    from ray.data.expressions import col
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    rows = ray.data.read_parquet(files).select_columns([*ROW_COLUMNS, "split", "kind"])
    streaming = settings.data_mode == "streaming"

    def train_part(kind: str) -> ray.data.Dataset:
        # Materialised once. Streaming: the shuffle after it is redone every epoch (a fresh order per epoch);
        # memory: each worker reads its shard once, in order, and shuffles indices itself.
        wanted = (col("split") == "train") & (col("kind") == kind)
        part = rows.filter(expr=wanted).select_columns(list(ROW_COLUMNS)).materialize()
        return part.random_shuffle() if shuffle and streaming else part

    options = ExecutionOptions(preserve_order=not (shuffle and streaming))
    storage = storage or Path(args.runs_dir).resolve() / "ray"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(settings),
        scaling_config=ScalingConfig(num_workers=args.num_workers, use_gpu=args.gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=run_name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=args.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks,
                             logging_config=train_logging()),
        datasets={"nodule": train_part("nodule"), "background": train_part("background")},
        dataset_config=DataConfig(execution_options=options),
    )
    trainer.fit()


# ---------------------------------------------------------------------------------------------
# The command.


class Sigterm:
    """Within `with Sigterm() as stop:` the first SIGTERM raises KeyboardInterrupt in the main thread and sets
    `stop.received`; later ones are ignored while the run is being closed. A KeyboardInterrupt, because Ray's
    blocking calls pass only that one on promptly (as a plain KeyboardInterrupt: hence the flag) and no
    `except Exception` retry loop swallows it. This replaces Ray's own handler, which dumps a stack and aborts."""

    def __init__(self) -> None:
        self.received = False
        self.previous = None

    def _handle(self, signum, frame) -> None:
        if not self.received:
            self.received = True
            raise KeyboardInterrupt("SIGTERM")

    def __enter__(self) -> "Sigterm":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class TooFewSubjects(ValueError):
    """The training split cannot form mismatched tuples."""


def resolve_config(cfg: ExperimentConfig, manifest: dict) -> ExperimentConfig:
    """`cfg` checked against the dataset, with data.n_genes = null filled in from it."""
    check_compatible(manifest, cfg.data)
    if cfg.data.n_genes is None:  # the config asks to follow the dataset
        cfg = replace(cfg, data=replace(cfg.data, n_genes=len(manifest["gene_names"])))
    return cfg


@dataclass
class TrainingInputs:
    """What a run reads from the prepared dataset before training: one per run, one per sweep (all trials)."""

    data: Path
    manifest: dict
    matrix: schema.GeneMatrix
    validation: dict
    """{"nodules", "backgrounds", "map"} of the validation split, or {} (see RunSettings.validation)."""
    pool: Records
    files: list[str]


def read_inputs(data: Path, manifest: dict, image_size: int, val_size: int) -> TrainingInputs:
    """The gene table, the validation slices and the mismatch pool; raise TooFewSubjects, print what is off."""
    matrix = schema.read_genes(data)
    train_subjects = {s for s, split in zip(matrix.subject_ids, matrix.splits) if split == "train"}
    if len(train_subjects) < 2:
        raise TooFewSubjects(f"the training split of {data} has {len(train_subjects)} subject(s); mismatched tuples "
                             f"need at least 2 - prepare more subjects or change the split")
    nodules_val = read_records(data, "val", "nodule", val_size)
    backgrounds_val = read_records(data, "val", "background", len(nodules_val["subject_id"]))
    n_val = min(len(nodules_val["subject_id"]), len(backgrounds_val["subject_id"]))
    validation = {"nodules": {k: v[:n_val] for k, v in nodules_val.items()},
                  "backgrounds": {k: v[:n_val] for k, v in backgrounds_val.items()}} if n_val >= 2 else {}
    if not validation:
        print("warning: the validation split has fewer than 2 paired slices; validation metrics and figures are off")
    else:
        validation["map"] = map_reference(data, image_size)
        if not validation["map"]:
            print("warning: the validation split has fewer than 3 subjects with nodules; val/map_quality is off")
    return TrainingInputs(data, manifest, matrix, validation, pool_records(data), schema.slice_files(data, manifest))


def worker_threads(cpus_per_worker: float | None) -> int | None:
    """torch intra-op threads of a Ray worker: its CPU reservation, at least 1 (None: --local, torch's default)."""
    return max(1, math.floor(cpus_per_worker)) if cpus_per_worker is not None else None


def run_params(cfg: ExperimentConfig, data: Path, mode: str, num_workers: int, gpu: bool,
               cpus_per_worker: float | None, data_mode: str = "memory") -> dict:
    """The MLflow params of a training run: the whole config, flattened, and how it ran."""
    params = flatten("", to_dict(cfg)) | {"run.mode": mode, "run.num_workers": num_workers, "run.data": str(data),
                                          "run.gpu": gpu, "run.data_mode": data_mode}
    if cpus_per_worker is not None:
        params["run.cpus_per_worker"] = cpus_per_worker
        params["run.torch_threads"] = worker_threads(cpus_per_worker)
    return params


def run_tags(cfg: ExperimentConfig, data: Path, mode: str) -> dict:
    return {"radiogen.ablation": cfg.name, "radiogen.dataset_fingerprint": schema.dataset_fingerprint(data),
            "radiogen.code_version": code_version(), "radiogen.mode": mode}


def progress_interval(max_steps: int, log_every: int, lines: int = 10) -> int:
    """Steps between progress lines: about `lines` per run, on the metric records (multiples of log_every)."""
    return max(1, round(max_steps / lines / log_every)) * log_every


def make_settings(cfg: ExperimentConfig, inputs: TrainingInputs, uri: str, run_id: str, log_every: int,
                  val_every: int, checkpoint_every: int, data_timeout: float, fail_at_step: int | None = None,
                  fail_marker: str | None = None, data_mode: str = "memory", cpus_per_worker: float | None = None,
                  shuffle: bool = True, progress: bool = True) -> RunSettings:
    """Everything a worker needs for one training run of `cfg` into the open MLflow run `run_id`."""
    stats = schema.gene_stats(inputs.manifest, cfg.data.gene_norm)
    threads = worker_threads(cpus_per_worker)
    return RunSettings(
        config=to_dict(cfg), tracking_uri=uri, run_id=run_id,
        genes={"subject_ids": inputs.matrix.subject_ids, "values": inputs.matrix.values, "stats": stats.to_dict(),
               "names": list(inputs.manifest["gene_names"])},
        pool=inputs.pool, validation=inputs.validation, log_every=log_every, val_every=val_every,
        checkpoint_every=checkpoint_every, data_timeout=data_timeout, fail_at_step=fail_at_step,
        fail_marker=fail_marker, data_mode=data_mode, threads=threads, shuffle=shuffle,
        progress_every=progress_interval(cfg.train.max_steps, log_every) if progress else 0)


def run(args: argparse.Namespace) -> int:
    """`radiogen train`: what Ray, MLflow and Python warnings log on this driver goes to a file under --runs-dir."""
    log_file = Path(args.runs_dir).resolve() / "logs" / f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with quiet_logs(log_file):
        return run_logged(args, log_file)


def run_logged(args: argparse.Namespace, log_file: Path) -> int:
    try:
        overrides = list(args.overrides) + ([f"train.max_steps={args.max_steps}"] if args.max_steps else [])
        cfg: ExperimentConfig = load_config(args.config, overrides)
        data = Path(args.data).resolve()
        manifest = schema.read_manifest(data)
        cfg = resolve_config(cfg, manifest)
        run_name = args.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not RUN_NAME.fullmatch(run_name):
            raise ConfigError(f"--name {run_name!r}: use letters, digits, '.', '_' and '-' only")
        if args.data_timeout < 0:
            raise ConfigError(f"--data-timeout must be >= 0 (0 = off), got {args.data_timeout:g}")
        runs_dir = Path(args.runs_dir).resolve()
        uri = default_tracking_uri(runs_dir, args.tracking_uri)
        check_tracking(uri)
        schema.verify_dataset(data)  # every file against its recorded size and hash, before any run exists
        inputs = read_inputs(data, manifest, cfg.data.image_size, args.val_size)
    except (ConfigError, schema.SchemaError, DatasetMismatch, TrackingUnavailable, TooFewSubjects) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    cpus_per_worker = None
    if not args.local:
        try:
            cpus_per_worker = size_workers(args, connect_ray(args.address))
        except ResourceMismatch as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    data_mode = choose_data_mode(args, manifest)

    mode = "local" if args.local else "ray"
    params = run_params(cfg, data, mode, 1 if args.local else args.num_workers, args.gpu, cpus_per_worker, data_mode)
    tags = run_tags(cfg, data, mode)
    artifact_root = runs_dir / "mlartifacts" if uri.startswith("sqlite:") else None
    with Sigterm() as stop:
        try:
            run_id = open_run(uri, args.experiment, run_name, params, tags, artifact_root)
        except RunFinished as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 128 + (signal.SIGTERM if stop.received else signal.SIGINT)
        # From here on the MLflow run exists: whatever ends this process closes it (FINISHED, FAILED or KILLED).
        status = "FAILED"
        try:
            print(f"logs: {log_file}" + ("" if args.local else f", Ray workers in {ray_log_dir()}"))
            train(args, cfg, inputs, runs_dir, run_name, uri, run_id, cpus_per_worker, data_mode)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            where = runs_dir / run_name if args.local else runs_dir / "ray" / run_name
            print(f"run {run_name} stopped by {'SIGTERM' if stop.received else 'an interrupt'}; its checkpoints stay "
                  f"in {where}; run again with --name {run_name} to resume", file=sys.stderr)
            return 128 + (signal.SIGTERM if stop.received else signal.SIGINT)
        finally:
            try:
                Tracker(uri, run_id).finish(status)
            except Exception as err:  # noqa: BLE001 - never hide the original error
                print(f"tracking: could not mark MLflow run {run_id} {status} ({err})", file=sys.stderr)
    print(f"run {run_name} finished; {ui_hint(uri)}")
    return 0


def map_reference(data: Path, image_size: int) -> Records:
    """The real nodule phenotype per validation subject: the reference `val/map_quality` compares the
    gene-swapped synthetic nodules with ({} when fewer than MIN_SUBJECTS validation subjects)."""
    from radiogen.evaluation.synthesis import MIN_SUBJECTS, cheap_phenotype_by_subject

    rows = read_records(data, "val", "nodule")
    subjects = sorted({str(s) for s in rows["subject_id"]})
    if len(subjects) < MIN_SUBJECTS:
        return {}
    images, masks = schema.decode_images(rows["image"], image_size), schema.decode_masks(rows["mask"], image_size)
    return {"subject_ids": np.asarray(subjects),
            "phenotype": cheap_phenotype_by_subject(images, masks, rows["subject_id"], subjects)}


def available_memory() -> int | None:
    """Bytes of host memory available on this node (None when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:  # not Linux: the plan then goes by the per-worker budget alone
        pass
    return None


def choose_data_mode(args: argparse.Namespace, manifest: dict) -> str:
    """memory or streaming for this run (--local always reads into memory); prints the choice and why."""
    if getattr(args, "local", False):
        print("data: in memory (--local reads the training split with pyarrow once)")
        return "memory"
    mode, reason = plan_data_mode(args.data_mode, manifest, args.num_workers, available_memory())
    print(f"data: {mode} ({reason})")
    return mode


def train(args: argparse.Namespace, cfg: ExperimentConfig, inputs: TrainingInputs, runs_dir: Path, run_name: str,
          uri: str, run_id: str, cpus_per_worker: float | None, data_mode: str = "memory") -> None:
    """The training itself, into the open MLflow run `run_id`."""
    settings = make_settings(
        cfg, inputs, uri, run_id, args.log_every, args.val_every, args.checkpoint_every, args.data_timeout,
        args.fail_at_step, str(runs_dir / run_name / ".injected_failure") if args.fail_at_step else None,
        data_mode=data_mode, cpus_per_worker=cpus_per_worker, shuffle=not args.no_shuffle)
    (runs_dir / run_name).mkdir(parents=True, exist_ok=True)
    print(f"run {run_name} (MLflow run {run_id}) tracking at {uri}")
    if args.local:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        source = LocalSource(inputs.data, "train", cfg.train.batch_size, cfg.train.seed, shuffle=not args.no_shuffle,
                             device=device)
        from .local import LocalSession

        fit(settings, LocalSession(source, runs_dir / run_name, device))
    else:
        run_ray(settings, args, run_name, inputs.files, not args.no_shuffle, cpus_per_worker)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

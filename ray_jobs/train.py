"""`radiogen train` / `python -m ray_jobs.train`: train on a prepared dataset with Ray Train (or `--local`).

This module is the command: it checks, prints and tracks; the training is `loop.fit` through a local session
(`--local`: one process, no Ray) or the Ray Train launcher (ray_jobs/ray_train.py). `ray job submit` runs it
(README.md, Training); give it --tracking-uri there.

Before an MLflow run is opened: the config, the dataset (every file against its recorded hash), the
tracking store and, on Ray, the cluster's resources are checked (exit 2 with the flag to change).
Workers get min(1, (CPUs - 1) / workers) CPUs unless --cpus-per-worker says otherwise: Ray Data keeps
one whole CPU. `--local` picks its torch threads by a measured rule and prints it (ray_jobs/resources.py).
Once the run is open, it ends FINISHED, FAILED (any error) or KILLED (SIGTERM: exit 143, checkpoints kept;
the same --name resumes it). The name of a finished run is refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from radiogen import schema
from radiogen.checkpoint import CheckpointError
from radiogen.config import ConfigError, ExperimentConfig, load_config
from radiogen.data import DatasetMismatch, LocalSource
from radiogen.evaluation.truth_table import TruthError

from .cli import add_train_arguments as add_arguments
from .loop import fit
from .phases import Phases
from .quiet import quiet_logs, ray_log_dir
from .ray_train import RunPlan, launch, training_datasets
from .resources import ResourceMismatch, choose_data_mode, connect_ray, local_threads, size_workers, worker_threads
from .run_inputs import (RunIdentity, TooFewSubjects, TrainingInputs, TruthFiles, make_settings, read_inputs,
                         resolve_config)
from .signals import Sigterm
from .tracking import (RUN_NAME, RunFinished, TrackingUnavailable, Tracker, check_tracking, default_tracking_uri,
                       open_run, ui_hint)

def run(args: argparse.Namespace) -> int:
    """`radiogen train`: what Ray, MLflow and Python warnings log on this driver goes to a file under --runs-dir."""
    # Time and pid in the name: two trainings started in the same second never share a log file.
    log_file = Path(args.runs_dir).resolve() / "logs" / f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with quiet_logs(log_file):
        return run_logged(args, log_file)


def run_logged(args: argparse.Namespace, log_file: Path) -> int:
    """Check every input, open (or re-attach) the MLflow run, train, close the run; returns the exit code."""
    phases = Phases()
    # Everything that can be wrong with the inputs fails here, with exit 2, before Ray starts or a run exists.
    try:
        # --max-steps goes after every --set: overrides apply in order, so it wins over a --set train.max_steps.
        overrides = list(args.overrides) + ([f"train.max_steps={args.max_steps}"] if args.max_steps else [])
        cfg: ExperimentConfig = load_config(args.config, overrides)
        data = Path(args.data).resolve()
        manifest = schema.read_manifest(data)
        cfg = resolve_config(cfg, manifest)
        # A fresh name per invocation: only an explicit --name re-attaches (resumes) an earlier run.
        run_name = args.name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        # The name becomes a folder under --runs-dir and a tag value inside MLflow search filters.
        if not RUN_NAME.fullmatch(run_name):
            raise ConfigError(f"--name {run_name!r}: use letters, digits, '.', '_' and '-' only")
        if args.data_timeout < 0:
            raise ConfigError(f"--data-timeout must be >= 0 (0 = off), got {args.data_timeout:g}")
        runs_dir = Path(args.runs_dir).resolve()
        uri = default_tracking_uri(runs_dir, args.tracking_uri)
        check_tracking(uri)
        schema.verify_dataset(data)  # every file against its recorded size and hash, before any run exists
        # Reads the gene table, validation slices and truth now, so TooFewSubjects / TruthError exit 2 as well.
        inputs = read_inputs(data, manifest, cfg.data.image_size, args.val_size,
                             truth=TruthFiles(args.truth, args.truth_programs, args.truth_partial))
    except (ConfigError, schema.SchemaError, DatasetMismatch, TrackingUnavailable, TooFewSubjects, TruthError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    cpus_per_worker, threads = None, None
    if args.local:
        threads, why = local_threads(cfg.data.image_size)
        print(f"threads: {threads} torch thread(s) ({why})")
    else:
        # Ray starts (or joins the cluster) before the run opens: a cluster too small exits 2 with no MLflow run.
        try:
            cpus_per_worker = size_workers(args.num_workers, args.cpus_per_worker, args.gpu, connect_ray(args.address))
        except ResourceMismatch as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        threads = worker_threads(cpus_per_worker, cfg.data.image_size)
    data_mode = choose_data_mode(args.data_mode, manifest, args.num_workers, local=args.local)

    mode = "local" if args.local else "ray"
    identity = RunIdentity.of(data)  # the fingerprint trusts the manifest's hashes: verify_dataset checked them
    # --local is one process whatever --num-workers says: log the world size it really trains with.
    params = identity.params(cfg, mode, 1 if args.local else args.num_workers, args.gpu, data_mode, cpus_per_worker,
                             threads)
    # A sqlite store would put artifacts in ./mlruns of the working directory: keep them beside the store instead.
    artifact_root = runs_dir / "mlartifacts" if uri.startswith("sqlite:") else None
    # SIGTERM covers the open too: a scheduler's stop then exits 143 instead of Ray's handler dumping a stack.
    with Sigterm() as stop:
        try:
            run_id = open_run(uri, args.experiment, run_name, params, identity.tags(cfg, mode), artifact_root)
            phases.mark("mlflow_open")
        except RunFinished as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # no run id yet, nothing to close; the same --name re-attaches what was created
            return stop.exit_code()
        # From here on the MLflow run exists: whatever ends this process closes it (FINISHED, FAILED or KILLED).
        status = "FAILED"
        try:
            print(f"logs: {log_file}" + ("" if args.local else f", Ray workers in {ray_log_dir()}"))
            train(args, cfg, inputs, runs_dir, run_name, uri, run_id, cpus_per_worker, threads, data_mode, phases)
            status = "FINISHED"
        except CheckpointError as err:  # a full disk, or no readable checkpoint to resume from: said, not a trace
            print(f"error: run {run_name}: {err}", file=sys.stderr)
            return 1  # the finally below marks the run FAILED
        except KeyboardInterrupt:
            status = "KILLED"  # checkpoints stay: the same --name resumes from them into this MLflow run
            where = runs_dir / run_name if args.local else runs_dir / "ray" / run_name
            print(f"run {run_name} stopped by {'SIGTERM' if stop.received else 'an interrupt'}; its checkpoints stay "
                  f"in {where}; run again with --name {run_name} to resume", file=sys.stderr)
            return stop.exit_code()  # the finally below runs before the return: it marks the run KILLED
        finally:
            try:
                Tracker(uri, run_id).finish(status)
            except Exception as err:  # noqa: BLE001 - never hide the original error
                print(f"tracking: could not mark MLflow run {run_id} {status} ({err})", file=sys.stderr)
    print(f"run {run_name} finished; {ui_hint(uri)}")
    return 0


def train(args: argparse.Namespace, cfg: ExperimentConfig, inputs: TrainingInputs, runs_dir: Path, run_name: str,
          uri: str, run_id: str, cpus_per_worker: float | None, threads: int, data_mode: str, phases: Phases) -> None:
    """The training itself, into the open MLflow run `run_id`."""
    # Test-only fault injection: the marker file makes the failure happen once, so the restarted workers (or the
    # resumed run) train past that step instead of failing again.
    fail_marker = str(runs_dir / run_name / ".injected_failure") if args.fail_at_step else None
    settings = make_settings(
        cfg, inputs, uri, run_id, log_every=args.log_every, val_every=args.val_every,
        checkpoint_every=args.checkpoint_every, data_timeout=args.data_timeout, fail_at_step=args.fail_at_step,
        fail_marker=fail_marker, data_mode=data_mode, threads=threads, shuffle=not args.no_shuffle,
        phases=phases.times)
    # Made on Ray too, whose checkpoints live under ray/<name>: the fail marker above is written here.
    (runs_dir / run_name).mkdir(parents=True, exist_ok=True)
    print(f"run {run_name} (MLflow run {run_id}) tracking at {uri}")
    if args.local:
        from .local import LocalSession

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        source = LocalSource(inputs.data, "train", cfg.train.batch_size, cfg.train.seed, shuffle=not args.no_shuffle,
                             device=device)
        settings.phases["data_ready"] = time.time()  # phase/data_ready_s: what reading the split cost this run
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            fit(settings, LocalSession(source, runs_dir / run_name, device))
        finally:  # a caller in this process (a notebook, the bench) keeps its own setting
            torch.set_num_threads(before)
    else:
        # Ray Train resumes from the folder storage/<name> when it exists: the same --name continues its checkpoints.
        plan = RunPlan(name=run_name, storage=runs_dir / "ray", num_workers=args.num_workers, gpu=args.gpu,
                       cpus_per_worker=cpus_per_worker, max_failures=args.max_failures, shuffle=not args.no_shuffle,
                       data_mode=data_mode)
        datasets = training_datasets(inputs.files, plan.shuffle, data_mode)  # materialised here, before the workers
        settings.phases["data_ready"] = time.time()
        launch(plan, settings, datasets)


def main(argv: list[str] | None = None) -> int:
    from .quiet import quiet_mlflow_env

    quiet_mlflow_env()  # before MLflow is imported: `python -m` skips the radiogen command's main
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""One sweep trial: a Tune function that trains its configuration with the shared `loop.fit`, either directly in
the trial's own process or as a Ray Train run.

- Direct (one worker, CPU or one GPU, data in memory: the default where it applies): the trial process builds
  the config once, opens its MLflow run, decodes the training split the driver put in the object store, and runs
  `fit` through a `DirectSession` (`tune.report` with checkpoints, `tune.get_checkpoint` to resume). Tune restarts
  a failed trial from its last checkpoint (`--max-failures`).
- Train path (several workers, or data streamed through Ray Data): the trial builds a `RunPlan` and launches Ray
  Train on the datasets the driver materialised once; the run's rank-0 worker opens the MLflow run (the one
  process of the trial that talks to MLflow) and Ray Train restarts failed workers.

Either way the run is nested under the sweep's parent run and found again by its trial id (a resumed trial
re-attaches, never duplicates), and its checkpoints live under the sweep's folder by trial id (a resumed trial
continues from its last one). What the driver computed once (the base config, the dataset's fingerprint, the code
version, the experiment id) reaches every trial in the `SweepContext`, which `tune.with_parameters` stores once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radiogen.config import ExperimentConfig
from radiogen.data import check_compatible
from radiogen.search_space import SweepSpec, trial_config

from .loop import fit, read_checkpoint_records
from .ray_train import RunPlan, latest_validation, launch
from .resources import TrialPlan
from .run_inputs import RunIdentity, TrainingInputs, make_settings
from .tracking import RunFinished, RunRequest, Tracker, find_run, open_run, with_retry

SWEEP_TAG = "radiogen.sweep"
TRIAL_TAG = "radiogen.trial_id"
STATE_TAG = "radiogen.trial_state"
"""complete (trained to max_steps), pruned (stopped early by ASHA) or failed."""


@dataclass
class SweepContext:
    """What every trial and the driver's callback need, computed once by the driver; passed with
    tune.with_parameters, never in param_space (a restored experiment would freeze it): a resumed sweep hands its
    trials the current context."""

    name: str
    spec: SweepSpec
    base: dict[str, Any]
    """The base experiment as plain data: file, `set:`, --set, the budget, data.n_genes from the dataset."""
    inputs: TrainingInputs
    identity: RunIdentity
    uri: str
    experiment: str
    exp_id: str
    parent_run_id: str
    artifact_root: Path | None
    train_storage: Path
    plan: TrialPlan
    num_workers: int
    gpu: bool
    log_every: int
    data_timeout: float
    max_failures: int
    shuffle: bool
    data_mode: str = "memory"
    datasets: dict[str, Any] | None = None
    """Train path: the training split as Ray Datasets materialised once by the driver."""
    log_models: str = "best"
    """best: trials log their weights and the sweep logs the best trial's pyfunc model; all: every trial logs it."""

    @property
    def mode(self) -> str:
        return "direct" if self.plan.direct else "ray"


def trial_run_name(sweep: str, trial_id: str) -> str:
    return f"{sweep}.{trial_id}"


def trial_values(spec: SweepSpec, config: dict[str, Any]) -> tuple[dict[str, Any], int | None, str | None]:
    """(config values, seed or None, variant or None) of a trial from its Tune config."""
    if spec.mode == "grid":
        variant = config["variant"]
        return dict(spec.grid.variants[variant]), int(config["seed"]), variant
    return {k: config[k] for k in spec.param_keys if k in config}, None, None


def config_of(ctx: SweepContext, config: dict[str, Any]) -> ExperimentConfig:
    """The trial's experiment config, built once from the driver's base data and the trial's values."""
    values, seed, _ = trial_values(ctx.spec, config)
    cfg = trial_config(ctx.spec, values, seed=seed, base=ctx.base)
    check_compatible(ctx.inputs.manifest, cfg.data)  # a swept data.* value must still fit the dataset
    return cfg


def run_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """The Tune function of one trial."""
    import ray.tune

    phases = {"start": time.time()}
    trial_id = ray.tune.get_context().get_trial_id()
    _, seed, variant = trial_values(ctx.spec, config)
    cfg = config_of(ctx, config)
    name = trial_run_name(ctx.name, trial_id)
    tags = ctx.identity.tags(cfg, ctx.mode) | {SWEEP_TAG: ctx.name, TRIAL_TAG: trial_id}
    if variant is not None:
        tags |= {"radiogen.variant": variant, "radiogen.seed": str(seed)}
    plan = ctx.plan
    params = ctx.identity.params(cfg, ctx.mode, ctx.num_workers, ctx.gpu, ctx.data_mode, plan.cpus, plan.threads)
    request = RunRequest(ctx.uri, ctx.experiment, name, params, tags, ctx.artifact_root, ctx.parent_run_id)
    run = dict(log_every=ctx.log_every, val_every=ctx.spec.report_every, checkpoint_every=ctx.spec.report_every,
               data_timeout=ctx.data_timeout, data_mode=ctx.data_mode, threads=plan.threads, shuffle=ctx.shuffle,
               phases=phases, log_model="full" if ctx.log_models == "all" else "weights")
    if plan.direct:
        direct_trial(ctx, cfg, request, run)
    else:
        train_path_trial(ctx, cfg, request, run)


def direct_trial(ctx: SweepContext, cfg: ExperimentConfig, request: RunRequest, run: dict[str, Any]) -> None:
    import ray.tune
    import torch

    from .direct_trial import DirectSession

    torch.set_num_threads(ctx.plan.threads)  # set for every trial: Tune may reuse this process
    try:
        run_id = request.open()
    except RunFinished:  # it trained to the end before the sweep's driver died: hand Tune its final metrics again
        ray.tune.report(final_metrics(ctx, request.name))
        return
    run["phases"]["mlflow_open"] = time.time()
    device = torch.device("cuda" if ctx.gpu else "cpu")
    session = DirectSession(ctx.inputs.train_split, cfg.data.image_size, cfg.train.batch_size, cfg.train.seed,
                            ctx.shuffle, device)
    run["phases"]["data_ready"] = time.time()
    done = final_report(session.latest_checkpoint(), cfg.train.max_steps)
    if done is None:
        fit(make_settings(cfg, ctx.inputs, ctx.uri, run_id, progress=False, **run), session)
    else:  # its last checkpoint is the full budget: report it again, train nothing
        ray.tune.report(done)
    close_run(ctx, run_id, "FINISHED", "complete")


def train_path_trial(ctx: SweepContext, cfg: ExperimentConfig, request: RunRequest, run: dict[str, Any]) -> None:
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    folder = ctx.train_storage / request.name
    newest = max(folder.glob("step_*"), default=None) if folder.is_dir() else None
    done = final_report(newest, cfg.train.max_steps)
    if done is not None:  # trained to the end before the driver died; the driver's callback closes its run
        ray.tune.report(done)
        return
    settings = make_settings(cfg, ctx.inputs, ctx.uri, None, run_request=request, progress=False, **run)
    plan = RunPlan(name=request.name, storage=ctx.train_storage, num_workers=ctx.num_workers, gpu=ctx.gpu,
                   cpus_per_worker=ctx.plan.cpus, max_failures=ctx.max_failures, shuffle=ctx.shuffle,
                   data_mode=ctx.data_mode)
    launch(plan, settings, ctx.datasets, callbacks=[TuneReportCallback()])


def final_report(checkpoint: Path | None, max_steps: int) -> dict[str, float] | None:
    """The report of a checkpoint that holds the full budget (step, losses, latest validation); None otherwise."""
    records = read_checkpoint_records(checkpoint) if checkpoint is not None else []
    if not records or records[-1]["step"] < max_steps:
        return None
    losses = {k: v for k, v in records[-1]["metrics"].items() if k.startswith("loss/")}
    return {**latest_validation(checkpoint), **losses, "step": records[-1]["step"]}


def final_metrics(ctx: SweepContext, run_name: str) -> dict[str, float]:
    run = find_run(ctx.uri, ctx.exp_id, run_name)
    return {**run.data.metrics, "step": ctx.spec.max_steps}


def close_run(ctx: SweepContext, run_id: str, status: str, state: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(ctx.uri)
    with_retry(lambda: client.set_tag(run_id, STATE_TAG, state), "tag trial state")
    Tracker(ctx.uri, run_id).finish(status)

"""One sweep trial as Ray documents it (a Tune function that builds and fits a TorchTrainer), and the pieces of
Tune that make early stopping honest and keep MLflow in step.

- `run_trial` is the trial driver: the same training run `radiogen train` builds (ray_jobs.train's resolve_config,
  run_params, run_tags, make_settings, run_ray), into a nested MLflow child run that is found again by its trial id
  (so a resumed trial re-attaches, never duplicates), with checkpoints under the sweep's folder by trial id (so a
  resumed trial continues from its last checkpoint).
- `HonestOptunaSearch`: Ray's OptunaSearch hands a trial that ASHA stopped to Optuna as COMPLETE with its last,
  truncated value. Here a trial that did not reach max_steps is told to Optuna as PRUNED (its intermediate
  values are reported by training step), so the sampler only ever sees complete values measured at the full budget.
- `BudgetASHA`: ASHA that never stops a trial at its full budget (it ends by itself and closes its run).
- `SweepEvents`: the driver's Tune callback: one line per trial event, and every child run closed (FINISHED,
  KILLED when ASHA stopped it, FAILED) - a trial stopped by ASHA cannot close its own run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from radiogen.config import ExperimentConfig
from radiogen.search_space import SweepSpec, trial_config

from .tracking import RunFinished, Tracker, find_run, open_run, with_retry
from .train import (PLACEMENT_GROUP_TAG, TrainingInputs, make_settings, resolve_config, run_params, run_ray,
                    run_tags)

logger = logging.getLogger(__name__)

SWEEP_TAG = "radiogen.sweep"
TRIAL_TAG = "radiogen.trial_id"
TRIAL_DRIVER_CPUS = 0.01
"""A trial's own process (its Tune function) only waits on its TorchTrainer; the workers carry the real request."""
STATE_TAG = "radiogen.trial_state"
"""complete (trained to max_steps), pruned (stopped early by ASHA) or failed."""


@dataclass
class SweepContext:
    """What every trial and the driver's callback need; passed with tune.with_parameters, never in param_space (a
    restored experiment would freeze it): a resumed sweep hands its trials the current context."""

    name: str
    spec: SweepSpec
    overrides: tuple[str, ...]
    inputs: TrainingInputs
    uri: str
    experiment: str
    exp_id: str
    parent_run_id: str
    artifact_root: Path | None
    train_storage: Path
    num_workers: int
    gpu: bool
    cpus_per_worker: float
    log_every: int
    data_timeout: float
    max_failures: int
    shuffle: bool
    data_mode: str = "memory"


def trial_run_name(sweep: str, trial_id: str) -> str:
    return f"{sweep}.{trial_id}"


def trial_values(spec: SweepSpec, config: dict[str, Any]) -> tuple[dict[str, Any], int | None, str | None]:
    """(config values, seed or None, variant or None) of a trial from its Tune config."""
    if spec.mode == "grid":
        variant = config["variant"]
        return dict(spec.grid.variants[variant]), int(config["seed"]), variant
    return {k: config[k] for k in spec.param_keys if k in config}, None, None


def config_of(ctx: SweepContext, config: dict[str, Any]) -> ExperimentConfig:
    values, seed, _ = trial_values(ctx.spec, config)
    return resolve_config(trial_config(ctx.spec, values, ctx.overrides, seed=seed), ctx.inputs.manifest)


def run_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """The Tune function of one trial: a training run as `radiogen train` makes it, reporting to Tune."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    values, seed, variant = trial_values(ctx.spec, config)
    cfg = config_of(ctx, config)
    run_name = trial_run_name(ctx.name, trial_id)
    data = ctx.inputs.data
    params = run_params(cfg, data, "ray", ctx.num_workers, ctx.gpu, ctx.cpus_per_worker, ctx.data_mode)
    tags = run_tags(cfg, data, "ray") | {SWEEP_TAG: ctx.name, TRIAL_TAG: trial_id}
    if variant is not None:
        tags |= {"radiogen.variant": variant, "radiogen.seed": str(seed)}
    try:
        run_id = open_run(ctx.uri, ctx.experiment, run_name, params, tags, ctx.artifact_root,
                          parent_run_id=ctx.parent_run_id)
    except RunFinished:
        # It trained to the end before the sweep's driver died: hand Tune its final metrics again, train nothing.
        ray.tune.report(final_metrics(ctx, run_name))
        return
    settings = make_settings(cfg, ctx.inputs, ctx.uri, run_id, ctx.log_every, ctx.spec.report_every,
                             ctx.spec.report_every, ctx.data_timeout, data_mode=ctx.data_mode,
                             cpus_per_worker=ctx.cpus_per_worker, shuffle=ctx.shuffle)
    run_args = SimpleNamespace(num_workers=ctx.num_workers, gpu=ctx.gpu, max_failures=ctx.max_failures,
                               runs_dir=str(ctx.train_storage))
    try:
        run_ray(settings, run_args, run_name, ctx.inputs.files, ctx.shuffle, ctx.cpus_per_worker,
                storage=ctx.train_storage, callbacks=[TuneReportCallback()])
    except Exception:
        if not stopped_early(ctx, run_id):  # the driver tagged it pruned before Tune stopped its workers
            close_run(ctx, run_id, "FAILED", "failed")
        raise
    close_run(ctx, run_id, "FINISHED", "complete")


def final_metrics(ctx: SweepContext, run_name: str) -> dict[str, float]:
    run = find_run(ctx.uri, ctx.exp_id, run_name)
    return {**run.data.metrics, "step": ctx.spec.max_steps}


def stopped_early(ctx: SweepContext, run_id: str) -> bool:
    from mlflow import MlflowClient

    try:
        return MlflowClient(ctx.uri).get_run(run_id).data.tags.get(STATE_TAG) == "pruned"
    except Exception:  # noqa: BLE001
        return False


def close_run(ctx: SweepContext, run_id: str, status: str, state: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(ctx.uri)
    with_retry(lambda: client.set_tag(run_id, STATE_TAG, state), "tag trial state")
    Tracker(ctx.uri, run_id).finish(status)


# ---------------------------------------------------------------------------------------------
# Honest early stopping.


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about budgets: a trial that ended before `max_steps` steps is
    PRUNED (with its intermediate values by training step), never COMPLETE with a truncated value; only trials
    that trained for the full budget enter the sampler as complete. Each Optuna trial carries the steps it
    trained (user attr `steps`) and its Tune trial id (`tune_trial_id`)."""

    def __init__(self, *args: Any, max_steps: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_steps = max_steps

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return  # Optuna keeps intermediate values for single-objective studies only
        value, step = result.get(self.metric), result.get("step")
        if value is None or step is None or not math.isfinite(value):
            return
        self._ot_trials[trial_id].report(float(value), int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        steps = int((result or {}).get("step") or 0)
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = [(result or {}).get(m) for m in metrics]
        if error:
            state, told = optuna.trial.TrialState.FAIL, None
        elif steps < self._max_steps:
            # Tune hands the result that made ASHA stop the trial to on_trial_complete only: record it as the
            # pruned trial's last intermediate value (the value Optuna keeps for a pruned trial).
            if not isinstance(self.metric, list) and math.isfinite(values[0] if values[0] is not None else math.nan):
                ot_trial.report(float(values[0]), steps)
            state, told = optuna.trial.TrialState.PRUNED, None
        elif any(v is None or not math.isfinite(v) for v in values):
            state, told = optuna.trial.TrialState.FAIL, None  # a NaN objective (e.g. empty masks) ranks nowhere
        else:
            state, told = optuna.trial.TrialState.COMPLETE, values if len(values) > 1 else values[0]
        try:
            ot_trial.set_user_attr("steps", steps)
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            self._ot_study.tell(ot_trial, told, state=state)
        except Exception as exc:  # noqa: BLE001 - as OptunaSearch: a refused tell must not stop the sweep
            logger.warning("optuna: trial %s not told (%s)", trial_id, exc)
        self._completed_trials.add(trial_id)


NAN_RANK = 1e30
"""What a NaN objective counts as at an ASHA rung (worst in either direction): e.g. the radiomic Fréchet distance
of a generator that draws no nodule masks yet. NaNs among themselves tie (no one stops)."""


class BudgetASHA(AsyncHyperBandScheduler):
    """ASHA on the training step that leaves a trial alone once it reached its full budget: it then ends by itself,
    after logging its final model, and closes its own MLflow run (stopping it there would kill that work). A NaN
    objective ranks below every finite one (ASHA would otherwise never stop it)."""

    def _worst_for_nan(self, result: dict) -> dict:
        value = result.get(self._metric)
        if isinstance(value, float) and math.isnan(value):
            return {**result, self._metric: -self._metric_op * NAN_RANK}
        return result

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self._max_t:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, self._worst_for_nan(result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, self._worst_for_nan(result))


# ---------------------------------------------------------------------------------------------
# The driver's view of trial events.

FREE_GROUP_AFTER_S = 10.0
"""How long after Tune stops a trial its workers' placement group is freed (its actor and controller are gone by
then; freeing it earlier would let the controller start replacement workers)."""

_ACTIVE: dict[str, tuple[SweepContext, TextIO]] = {}
"""The running sweep's context and terminal in the driver process, by sweep name: the callback is pickled into
the Tune experiment, so it holds only the name and looks the current context (tracking URI, parent run) up here;
it prints to the terminal while Tune's own output goes to the sweep's log file."""


def activate(ctx: SweepContext, terminal: TextIO) -> None:
    _ACTIVE[ctx.name] = (ctx, terminal)


def describe(values: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in values.items())


class SweepEvents(Callback):
    """One printed line per trial event; closes each trial's MLflow run when Tune is done with the trial."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopped_groups: list[tuple[str, float]] = []

    def __setstate__(self, state: dict) -> None:  # restored from an older experiment state
        self.__dict__.update(state)
        self.__dict__.setdefault("stopped_groups", [])

    @property
    def ctx(self) -> SweepContext:
        return _ACTIVE[self.name][0]

    def say(self, line: str) -> None:
        print(line, file=_ACTIVE[self.name][1], flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        values, seed, variant = trial_values(self.ctx.spec, trial.config)
        what = f"variant {variant} seed {seed}" if variant is not None else describe(values)
        self.say(f"trial {trial.trial_id} started: {what}")

    def _close(self, trial: Any, status: str, state: str) -> str | None:
        ctx = self.ctx
        try:
            run = find_run(ctx.uri, ctx.exp_id, trial_run_name(ctx.name, trial.trial_id))
            if run is None:
                return None
            done = run.info.status == status and run.data.tags.get(STATE_TAG) == state
            if not done and run.info.status != "FINISHED":  # a finished run is never marked down
                close_run(ctx, run.info.run_id, status, state)
            if state != "complete" and PLACEMENT_GROUP_TAG in run.data.tags:
                self.stopped_groups.append((run.data.tags[PLACEMENT_GROUP_TAG], time.monotonic()))
            return run.info.run_id
        except Exception as err:  # noqa: BLE001 - a tracking outage must not end the sweep
            self.say(f"tracking: trial {trial.trial_id}'s MLflow run not marked {status} ({err})")
            return None

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = self.ctx.spec
        last = trial.last_result or {}
        step = int(last.get("step") or 0)
        complete = step >= spec.max_steps
        run_id = self._close(trial, "FINISHED" if complete else "KILLED", "complete" if complete else "pruned")
        scores = " ".join(f"{o.metric}={last[o.metric]:.4g}" for o in spec.objectives if o.metric in last)
        how = f"finished at step {step}" if complete else f"stopped early by ASHA at step {step} (pruned)"
        self.say(f"trial {trial.trial_id} {how}: {scores or 'no validation metric reported'}"
                 + (f" (MLflow run {run_id})" if run_id else ""))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._free_groups(wait=False)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._free_groups(wait=True)

    def _free_groups(self, wait: bool) -> None:
        """Free the workers' placement group of a trial stopped early, once its controller is gone. Ray Train's own
        cleaner does this too, but it finds its cluster by auto-detection, which fails when several local Ray
        clusters run on the machine: the CPUs would stay reserved and later trials starve Ray Data."""
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

        keep = []
        for group_hex, since in self.stopped_groups:
            due = since + FREE_GROUP_AFTER_S - time.monotonic()
            if due > 0 and wait:
                time.sleep(due)
            elif due > 0:
                keep.append((group_hex, since))
                continue
            try:
                group = PlacementGroup(PlacementGroupID.from_hex(group_hex))
                if placement_group_table(group).get("state") not in (None, "REMOVED"):
                    remove_placement_group(group)
                    logger.warning("freed placement group %s of a stopped trial", group_hex)
            except Exception as err:  # noqa: BLE001
                logger.warning("placement group %s not freed (%s)", group_hex, err)
        self.stopped_groups = keep

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._close(trial, "FAILED", "failed")
        where = getattr(trial, "error_file", None) or trial.path
        self.say(f"trial {trial.trial_id} failed; its error is in {where}"
                 + (f" (MLflow run {run_id})" if run_id else ""))

"""The Tuner of a sweep: trials as Tune functions, searched by Optuna (or a fixed grid), stopped by ASHA.

Built fresh for a new sweep, restored from its folder for `--resume` (Tuner.restore with the trainable given
again, so that the trials get the driver's current context: endpoints are never part of the restored state).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from radiogen.search_space import Param, sample

from .resources import TRIAL_DRIVER_CPUS
from .sweep_events import SweepEvents
from .sweep_search import BudgetASHA, HonestOptunaSearch
from .sweep_trial import SweepContext, run_trial

TUNE_DIR = "tune"


class SpaceSampler:
    """Optuna define-by-run function of a search space (picklable: Tune saves the searcher with it)."""

    def __init__(self, space: tuple[Param, ...]) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        sample(trial, self.space)


def searcher_and_scheduler(ctx: SweepContext, folder: Path) -> tuple[Any, Any]:
    import optuna
    from ray.tune.schedulers import FIFOScheduler

    spec = ctx.spec
    metrics, modes = [o.metric for o in spec.objectives], [o.mode for o in spec.objectives]
    searcher = HonestOptunaSearch(
        space=SpaceSampler(spec.space), metric=metrics if spec.multi_objective else metrics[0],
        mode=modes if spec.multi_objective else modes[0], points_to_evaluate=list(spec.points_to_evaluate) or None,
        seed=spec.seed, study_name=ctx.name, storage=optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}"),
        max_steps=spec.max_steps)
    if spec.asha is None:
        return searcher, FIFOScheduler()
    scheduler = BudgetASHA(time_attr="step", metric=metrics[0], mode=modes[0], max_t=spec.max_steps,
                           grace_period=spec.asha.grace_period, reduction_factor=spec.asha.reduction_factor,
                           brackets=1)
    return searcher, scheduler


def fit_trials(ctx: SweepContext, folder: Path, concurrent: int, resume: bool) -> list:
    """Run (or resume) every trial of the sweep; returns Tune's Trial objects (status, config, last_result)."""
    from ray import tune

    plan = ctx.plan
    # A direct trial's process is the training: it reserves the trial's CPUs (and GPU). A Train-path trial's process
    # only drives its Ray Train run, whose workers reserve theirs.
    resources = ({"CPU": plan.cpus, "GPU": 1 if ctx.gpu else 0} if plan.direct else {"CPU": TRIAL_DRIVER_CPUS})
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources)
    path = folder / TUNE_DIR
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise RuntimeError(f"--resume: {path} holds no Tune experiment state to continue")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        spec = ctx.spec
        if spec.mode == "grid":
            param_space = {"variant": tune.grid_search(list(spec.grid.variants)),
                           "seed": tune.grid_search(list(spec.grid.seeds))}
            searcher, scheduler, samples = None, None, 1
        else:
            searcher, scheduler = searcher_and_scheduler(ctx, folder)
            param_space, samples = {}, spec.trials
        # Direct trials keep their process warm for the next trial (torch, MLflow and the tracking store loaded
        # once): start-up falls from seconds to milliseconds. Each trial sets its own seeds and threads. Tune
        # restarts a failed direct trial from its checkpoint; Ray Train restarts a Train-path trial's workers.
        tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=samples,
                                      max_concurrent_trials=concurrent, reuse_actors=plan.direct)
        run_config = tune.RunConfig(
            name=TUNE_DIR, storage_path=str(folder), callbacks=[SweepEvents(ctx.name)], verbose=0,
            failure_config=tune.FailureConfig(max_failures=ctx.max_failures if plan.direct else 0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    with open(folder / "driver.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        results = tuner.fit()  # Tune's tables and Ray's warnings to the log; SweepEvents prints to the terminal
    return list(tune.ExperimentAnalysis(results.experiment_path).trials)

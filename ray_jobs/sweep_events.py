"""The sweep driver's view of trial events (a Tune callback): one printed line per event, and every trial's MLflow
run closed (FINISHED, KILLED when ASHA stopped it, FAILED) - a trial stopped early cannot close its own run."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from .ray_train import PLACEMENT_GROUP_TAG
from .sweep_trial import STATE_TAG, SweepContext, close_run, trial_run_name, trial_values
from .tracking import find_run

logger = logging.getLogger(__name__)

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

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.say(f"trial {trial.trial_id} failed ({failure_reason(trial)}) and restarts from its last checkpoint; "
                 f"the full error is in {getattr(trial, 'error_file', None) or trial.path}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._close(trial, "FAILED", "failed")
        where = getattr(trial, "error_file", None) or trial.path
        self.say(f"trial {trial.trial_id} failed ({failure_reason(trial)}); the full error is in {where}"
                 + (f" (MLflow run {run_id})" if run_id else ""))


def failure_reason(trial: Any) -> str:
    """The first line of the trial's latest failure in Tune's error file ("Failure # n (...)" blocks): why it
    failed, on the sweep's terminal line, with the whole trace left in the file."""
    try:
        text = Path(trial.error_file).read_text()
    except (TypeError, OSError):
        return "no error recorded"
    last = text.rsplit("Failure # ", 1)[-1].splitlines()[1:]
    lines = [line.strip() for line in last if line.strip() and not line.startswith(("Traceback", "  File"))]
    # Ray prefixes an actor's death with its own class names; the sentence after it says why.
    reason = next((line for line in lines if "died" in line or "Error" in line), lines[0] if lines else "")
    return reason[:200] or "no error recorded"

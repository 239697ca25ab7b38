"""The pieces of Tune that make early stopping honest: the sampler only ever learns from trials measured at their
full budget, and ASHA never stops a trial that reached it.

- `HonestOptunaSearch`: Ray's OptunaSearch hands a trial that ASHA stopped to Optuna as COMPLETE with its last,
  truncated value. Here a trial that did not reach max_steps is told to Optuna as PRUNED (its intermediate
  values are reported by training step), so the sampler only ever sees complete values measured at the full budget.
- `BudgetASHA`: ASHA that never stops a trial at its full budget (it ends by itself and closes its run).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

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


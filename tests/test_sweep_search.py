"""The search and scheduling pieces without a cluster: Optuna is told the truth about budgets, and ASHA leaves
full-budget trials alone and ranks NaN objectives last."""

from __future__ import annotations

import math

import optuna
import pytest

from radiogen.sweep_file import load_sweep
from ray_jobs.sweep_search import BudgetASHA, HonestOptunaSearch
from ray_jobs.sweep_tune import SpaceSampler

from .helpers import REPO


def searcher(metric="val/l1_background", mode="min"):
    spec = load_sweep(REPO / "ablations" / "sweep_lambda_code.yaml")
    s = HonestOptunaSearch(space=SpaceSampler(spec.space), metric=metric, mode=mode, seed=0, max_steps=60)
    return s


def test_a_trial_stopped_before_its_budget_reaches_optuna_pruned_not_complete():
    s = searcher()
    for tid in ("full", "stopped", "broken"):
        config = s.suggest(tid)
        assert set(config) == {"loss.lambda_l1", "generator.code_dim"}
    for step, value in ((15, 0.4), (30, 0.3), (60, 0.2)):
        s.on_trial_result("full", {"step": step, "val/l1_background": value, "training_iteration": step // 15})
    s.on_trial_complete("full", {"step": 60, "val/l1_background": 0.2})
    s.on_trial_complete("stopped", {"step": 15, "val/l1_background": 0.01})  # Tune hands ASHA's STOP result here
    s.on_trial_complete("broken", None, error=True)
    trials = {t.user_attrs.get("tune_trial_id"): t for t in s._ot_study.trials}
    assert trials["full"].state == optuna.trial.TrialState.COMPLETE and trials["full"].value == 0.2
    assert trials["full"].intermediate_values == {15: 0.4, 30: 0.3, 60: 0.2}  # by training step
    assert trials["stopped"].state == optuna.trial.TrialState.PRUNED and trials["stopped"].user_attrs["steps"] == 15
    assert trials["stopped"].intermediate_values == {15: 0.01}  # its value, at the budget it was measured at
    assert trials["broken"].state == optuna.trial.TrialState.FAIL
    # The sampler's complete trials are only full-budget ones: the truncated 0.01 is not "best".
    assert s._ot_study.best_trial.user_attrs["tune_trial_id"] == "full"


def test_multi_objective_pareto_sees_only_full_budget_trials_and_nan_is_not_complete():
    s = HonestOptunaSearch(space=SpaceSampler(load_sweep(REPO / "ablations" / "sweep_lambda_code.yaml").space),
                           metric=["val/frechet_radiomic", "val/l1_background"], mode=["min", "min"], seed=0,
                           max_steps=60)
    for tid in "abc":
        s.suggest(tid)
    s.on_trial_complete("a", {"step": 60, "val/frechet_radiomic": 2.0, "val/l1_background": 0.1})
    s.on_trial_complete("b", {"step": 30, "val/frechet_radiomic": 0.1, "val/l1_background": 0.01})
    s.on_trial_complete("c", {"step": 60, "val/frechet_radiomic": math.nan, "val/l1_background": 0.01})
    states = {t.user_attrs["tune_trial_id"]: t.state.name for t in s._ot_study.trials}
    assert states == {"a": "COMPLETE", "b": "PRUNED", "c": "FAIL"}
    assert [t.user_attrs["tune_trial_id"] for t in s._ot_study.best_trials] == ["a"]


class Trial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


@pytest.mark.parametrize("mode,good,bad", [("min", 0.1, 0.9), ("max", 0.9, 0.1)])
def test_asha_stops_the_worse_trial_at_a_rung_never_at_the_budget_and_nan_ranks_last(mode, good, bad):
    asha = BudgetASHA(time_attr="step", metric="m", mode=mode, max_t=12, grace_period=3, reduction_factor=2,
                      brackets=1)
    trials = [Trial(i) for i in "abcd"]
    for t in trials:
        asha.on_trial_add(None, t)
    a, b, c, d = trials
    assert asha.on_trial_result(None, a, {"step": 3, "m": good}) == "CONTINUE"
    assert asha.on_trial_result(None, b, {"step": 3, "m": bad}) == "STOP"
    assert asha.on_trial_result(None, c, {"step": 3, "m": math.nan}) == "STOP"
    assert asha.on_trial_result(None, d, {"step": 12, "m": bad}) == "CONTINUE"  # at its budget: it ends itself

"""The sweep's reports from plain trial rows (no Ray, no MLflow): ranking, Pareto front, the ablation-grid
statistics, and how many trials the cluster fits."""

from __future__ import annotations

import math

import pytest
import yaml

from radiogen.sweep_file import load_sweep
from ray_jobs.sweep_report import TrialRow, best, grid_table, leaderboard_table, paired_difference, rank

from .helpers import REPO

TINY = str(REPO / "ablations" / "tiny.yaml")


def spec_of(tmp_path, **fields):
    data = {"experiment": TINY, "objectives": [{"metric": "val/l1_background", "mode": "min"}], "max_steps": 12,
            "report_every": 3, "space": {"loss.lambda_l1": {"loguniform": [1, 300]}}} | fields
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    return load_sweep(tmp_path / "s.yaml")


def test_complete_trials_rank_before_pruned_ones_whatever_their_truncated_score(tmp_path):
    spec = spec_of(tmp_path)
    rows = [TrialRow("a", "complete", 12, {"val/l1_background": 0.5}, {"loss.lambda_l1": 1.0}),
            TrialRow("b", "pruned", 3, {"val/l1_background": 0.1}, {"loss.lambda_l1": 2.0}),
            TrialRow("c", "complete", 12, {"val/l1_background": 0.2}, {"loss.lambda_l1": 3.0}),
            TrialRow("d", "failed", 0, {"val/l1_background": None}),
            TrialRow("e", "pruned", 6, {"val/l1_background": 0.9})]
    assert [r.trial_id for r in rank(rows, spec)] == ["c", "a", "e", "b", "d"]
    assert best(rows, spec).trial_id == "c"  # b's 0.1 was measured after 3 of 12 steps: not comparable
    header, body = leaderboard_table(rows, spec)
    assert header[:5] == ["rank", "trial", "state", "step", "val/l1_background (min)"] and "loss.lambda_l1" in header
    assert body[0][:5] == ["1", "c", "complete", "12", "0.2"]


def test_pareto_front_of_two_objectives(tmp_path):
    spec = spec_of(tmp_path, objectives=[{"metric": "val/frechet_radiomic", "mode": "min"},
                                         {"metric": "val/map_quality", "mode": "max"}])
    m = lambda f, q: {"val/frechet_radiomic": f, "val/map_quality": q}  # noqa: E731
    rows = [TrialRow("a", "complete", 12, m(1.0, 0.5)), TrialRow("b", "complete", 12, m(2.0, 0.9)),
            TrialRow("c", "complete", 12, m(2.5, 0.4)), TrialRow("d", "complete", 12, m(float("nan"), 0.99))]
    ranked = rank(rows, spec)
    assert {r.trial_id for r in ranked if r.pareto} == {"a", "b"}  # c is dominated by both; d has a NaN
    assert [r.trial_id for r in ranked][:2] == ["a", "b"] and best(rows, spec).trial_id == "a"


def test_paired_difference_is_a_t_interval_over_seeds():
    d = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.0, 2: 2.0})  # differences 0.5, 1, 1
    mean, sd = 2.5 / 3, math.sqrt(((0.5 - 2.5 / 3) ** 2 + 2 * (1 - 2.5 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
    assert d["n"] == 3 and d["mean"] == pytest.approx(mean)
    assert (d["low"], d["high"]) == pytest.approx((mean - half, mean + half))
    assert paired_difference({0: 1.0, 1: 2.0}, {1: 1.5})["n"] == 1  # only seed 1 is paired


def test_grid_table_rows_per_variant_with_paired_difference(tmp_path):
    spec = spec_of(tmp_path, mode="grid", grid={"seeds": [0, 1], "variants": {"full": {}, "no_blend": {
        "generator.final_blend": False}}})
    rows = [TrialRow(f"t{i}", "complete", 12, {"val/l1_background": v}, variant=var, seed=s)
            for i, (var, s, v) in enumerate([("full", 0, 0.10), ("full", 1, 0.12), ("no_blend", 0, 0.50),
                                             ("no_blend", 1, 0.56)])]
    header, body = grid_table(rows, spec)
    assert header == ["variant", "seeds", "val/l1_background (min) mean ± std", "Δ vs full [95% CI]"]
    assert [b[0] for b in body] == ["full", "no_blend"] and body[0][3] == "(reference)"
    assert body[0][2] == "0.11 ± 0.014" and body[1][2] == "0.53 ± 0.042"
    d = paired_difference({0: 0.50, 1: 0.56}, {0: 0.10, 1: 0.12})
    assert body[1][3] == f"{d['mean']:+.4g} [{d['low']:+.4g}, {d['high']:+.4g}] *"  # excludes 0


def test_train_path_trials_at_a_time_leave_one_cpu_for_ray_data():
    from ray_jobs.resources import ResourceMismatch, plan_trials

    def plan(*args):
        p = plan_trials(*args)
        return p.cpus, p.concurrent

    assert plan(2, 0, 1, None, False, None) == (0.99, 1)  # like `radiogen train`: one trial fills it
    assert plan(2, 0, 1, None, False, 2) == (0.49, 2)  # 2 x (0.49 + 0.01 driver) = 1, 1 CPU left
    assert plan(16, 0, 1, None, False, None) == (1.0, 14)
    assert plan(16, 4, 2, None, True, None)[1] == 2  # GPUs bound it
    with pytest.raises(ResourceMismatch, match="--max-concurrent 20 x --num-workers 1"):
        plan(2, 0, 1, None, False, 20)
    with pytest.raises(ResourceMismatch, match="--max-concurrent 3: only 1 trial"):
        plan(2, 0, 1, 0.9, False, 3)
    with pytest.raises(ResourceMismatch, match="need 4 GPUs"):
        plan(16, 2, 2, None, True, 2)


def test_direct_trials_fill_every_cpu_with_one_thread_per_cpu_and_small_images_one_thread():
    from ray_jobs.resources import ResourceMismatch, TrialPlan, plan_trials

    assert plan_trials(2, 0, 1, None, False, None, direct=True) == TrialPlan(True, 1.0, 2, 1)  # no Ray Data CPU
    assert plan_trials(16, 0, 1, None, False, 4, direct=True) == TrialPlan(True, 4.0, 4, 4)  # threads = CPU share
    assert plan_trials(16, 0, 1, None, False, 4, True, image_size=32).threads == 1  # a 32 px step: one thread
    assert plan_trials(16, 0, 1, None, False, 4, True, image_size=128).threads == 4
    assert plan_trials(2, 0, 1, None, False, 3, direct=True) == TrialPlan(True, 0.666, 3, 1)
    assert plan_trials(8, 2, 1, None, True, None, direct=True).concurrent == 2  # one GPU per trial
    assert plan_trials(4, 0, 1, 2.0, False, None, direct=True) == TrialPlan(True, 2.0, 2, 2)
    with pytest.raises(ResourceMismatch, match="--max-concurrent 3 x --cpus-per-worker 1"):
        plan_trials(2, 0, 1, 1.0, False, 3, direct=True)
    with pytest.raises(ResourceMismatch, match="need 3 GPUs"):
        plan_trials(8, 2, 1, None, True, 3, direct=True)


def test_local_threads_follow_the_measured_rule(monkeypatch):
    from ray_jobs.resources import LOCAL_ONE_THREAD_MAX_SIZE, local_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert local_threads(LOCAL_ONE_THREAD_MAX_SIZE)[0] == 1  # small steps: one thread
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2, 3})
    monkeypatch.setattr("os.getloadavg", lambda: (1.2, 0.0, 0.0))
    threads, why = local_threads(128)
    assert threads == 3 and "1 kept busy by other processes" in why  # a busy core is left to its owner
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 0.0, 0.0))
    assert local_threads(128)[0] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert local_threads(32) == (2, "OMP_NUM_THREADS")  # the user's setting wins

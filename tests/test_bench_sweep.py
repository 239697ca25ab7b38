"""The sweep stage of `radiogen bench --quick` (run once in the background lane, tests/background.py) on real
services: its own local Ray cluster and small prepared cohort, three real sweeps (direct trials with ASHA, direct trials to the end, Ray Train trials) and a plain `radiogen train
--local`, tracked in a real MLflow (sqlite) store. Checks that the measures are well formed and agree with what the
runs recorded, and - with those same runs - that a direct trial, a Ray Train trial and `--local` of the same
config and seed train identically; no timings."""

from __future__ import annotations

import json
import math
import re
import statistics

import pytest

from ray_jobs.bench.common import Measure

from .background import in_background
from .helpers import bench_quick

COMPUTE, WALL, THROUGHPUT = ("compute with ASHA vs every trial to the end",
                             "sweep wall time with ASHA vs every trial to the end",
                             "trial-steps per hour of the sweep (ASHA) vs one plain training")
STARTUP, TRAIN_STARTUP = ("median start-up of a direct trial (trial start -> first step)",
                          "median start-up of a Ray Train trial (trial start -> first step)")


@pytest.fixture
def stage(background):
    """(work folder, measures by name) of the sweep stage of the lane's `radiogen bench --quick`."""
    assert background.returncode == 0, background.stdout[-3000:]
    report = json.loads((background.out / "bench.json").read_text())
    return background.out / "work", {m["name"]: Measure(**m) for m in report["measures"] if m["stage"] == "sweep"}


def summary(work, label: str) -> dict:
    path = work / "sweep" / "runs" / "sweeps" / f"bench-sweep_lambda_code-{label}" / "report" / "summary.json"
    return json.loads(path.read_text())


def client_of(work):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{work / 'sweep' / 'runs' / 'mlflow.db'}")


def reference_figure(m: Measure) -> float:
    """The reference's own absolute figure, the first number in parentheses."""
    return float(re.search(r"\(([0-9.]+) ", m.reference).group(1))


@in_background(bench_quick)
def test_measures_are_well_formed(stage):
    _, measures = stage
    assert set(measures) == {COMPUTE, WALL, THROUGHPUT, STARTUP, TRAIN_STARTUP}
    for m in measures.values():
        assert m.stage == "sweep" and m.unit and m.note
        assert math.isfinite(m.value) and m.value > 0
        json.dumps(m.to_dict())  # what the orchestrator writes into bench.json
    for name in (COMPUTE, WALL, THROUGHPUT, TRAIN_STARTUP):
        m = measures[name]
        assert m.reference and math.isfinite(m.ratio) and m.ratio > 0
        assert m.ratio == pytest.approx(m.value / reference_figure(m), rel=1e-2), m
    assert measures[THROUGHPUT].target == ">= 0.9x" and measures[THROUGHPUT].met == (measures[THROUGHPUT].ratio >= 0.9)
    assert measures[STARTUP].target == "<= 3 s" and measures[STARTUP].met == (measures[STARTUP].value <= 3)


@in_background(bench_quick)
def test_compute_is_what_the_two_sweeps_trained(stage):
    work, measures = stage
    asha, full = summary(work, "asha"), summary(work, "full")
    assert [t["values"] for t in asha["trials"]] == [t["values"] for t in full["trials"]]  # same configurations
    assert full["trial_steps"] == full["full_budget_steps"] == len(full["trials"]) * full["max_steps"]
    assert all(t["state"] == "complete" for t in full["trials"])
    assert asha["trial_steps"] == sum(t["step"] for t in asha["trials"]) <= full["trial_steps"]
    m = measures[COMPUTE]
    assert m.value == asha["trial_steps"] and reference_figure(m) == full["trial_steps"]
    assert m.ratio == pytest.approx(asha["trial_steps"] / full["trial_steps"])
    same = [t["values"] for t in asha["trials"] if t["trial_id"] == asha["best"]] == \
           [t["values"] for t in full["trials"] if t["trial_id"] == full["best"]]
    assert ("same best configuration" if same else "a different best configuration") in m.note


@in_background(bench_quick)
def test_throughput_is_over_the_asha_sweeps_wall_time_and_a_plain_run_of_as_many_steps(stage):
    work, measures = stage
    asha = summary(work, "asha")
    steps, wall = asha["trial_steps"], measures[WALL].value
    m = measures[THROUGHPUT]
    assert m.value == pytest.approx(steps / wall * 3600, rel=1e-2)
    client = client_of(work)
    experiment = client.get_experiment_by_name("bench-sweep")
    local = client.search_runs([experiment.experiment_id], "attributes.run_name = 'bench-sweep-local'")
    assert len(local) == 1 and local[0].info.status == "FINISHED"
    assert int(local[0].data.params["train.max_steps"]) == steps
    assert max(h.step for h in client.get_metric_history(local[0].info.run_id, "loss/G/total")) == steps


@in_background(bench_quick)
def test_startup_is_the_median_of_the_phases_the_trials_logged(stage):
    work, measures = stage
    client = client_of(work)
    firsts = {"direct": [], "ray": []}
    for label in ("asha", "full", "train"):
        for trial in summary(work, label)["trials"]:
            run = client.get_run(trial["run_id"])
            phases = {k: v for k, v in run.data.metrics.items() if k.startswith("phase/")}
            assert phases["phase/first_step_s"] >= phases["phase/model_built_s"] >= phases["phase/mlflow_open_s"] > 0
            firsts[run.data.params["run.mode"]].append(phases["phase/first_step_s"])
    assert len(firsts["direct"]) == 4 and len(firsts["ray"]) == 1
    assert measures[STARTUP].value == pytest.approx(statistics.median(firsts["direct"]))
    assert measures[TRAIN_STARTUP].value == pytest.approx(firsts["ray"][0])


@in_background(bench_quick)
def test_a_direct_trial_a_ray_train_trial_and_local_train_identically(stage):
    """The three sweeps' first trial is the same configuration (the file's points_to_evaluate, seed 0), and the
    plain run trains the same base experiment: same batches (the seeded in-memory permutation), same checkpoint
    cadence (the RNG is re-seeded at each), one torch thread each - so the same losses, step for step."""
    work, _ = stage
    client = client_of(work)
    first = {label: next(t for t in summary(work, label)["trials"] if t["values"] == {
        "loss.lambda_l1": 100, "generator.code_dim": 16}) for label in ("full", "train")}
    direct, ray_train = (client.get_run(first[k]["run_id"]) for k in ("full", "train"))
    local = client.search_runs([client.get_experiment_by_name("bench-sweep").experiment_id],
                               "attributes.run_name = 'bench-sweep-local'")[0]
    assert direct.data.params["run.mode"] == "direct" and ray_train.data.params["run.mode"] == "ray"
    config = lambda run: {k: v for k, v in run.data.params.items()  # noqa: E731
                          if not k.startswith("run.") and k != "train.max_steps"}
    assert config(direct) == config(ray_train) == config(local)
    assert {r.data.params["run.torch_threads"] for r in (direct, ray_train, local)} == {"1"}
    steps = int(direct.data.params["train.max_steps"])
    for key in ("loss/D/total", "loss/G/total", "loss/G/l1"):
        a, b, c = ([m.value for m in sorted(client.get_metric_history(r.info.run_id, key), key=lambda m: m.step)
                    if m.step <= steps] for r in (direct, ray_train, local))
        assert len(a) == 2 and a == pytest.approx(b, rel=1e-6, abs=1e-7) and a == pytest.approx(c, rel=1e-6,
                                                                                                  abs=1e-7), key

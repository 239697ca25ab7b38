"""The sweep benchmark stage in its quick form on real services: the session's Ray cluster and prepared dataset,
two real sweeps (ASHA, every trial to the end) and a plain `radiogen train --local`, tracked in a real MLflow
(sqlite) store. Checks that the measures are well formed and agree with what the runs recorded; no timings."""

from __future__ import annotations

import json
import math
import re

import pytest

from ray_jobs.bench.common import Context, Measure

COMPUTE, WALL, THROUGHPUT = ("compute with ASHA vs every trial to the end",
                             "sweep wall time with ASHA vs every trial to the end",
                             "trial-steps per hour of the sweep (ASHA) vs one plain training")


@pytest.fixture(scope="module")
def stage(prepared, ray_cluster, tmp_path_factory):
    """(work folder, measures by name) of one quick run of the stage."""
    from ray_jobs.bench.sweep import run

    work = tmp_path_factory.mktemp("bench")
    measures = run(Context(work=work, quick=True, cohorts={"small32": prepared}))
    return work, {m.name: m for m in measures}


def summary(work, label: str) -> dict:
    path = work / "sweep" / "runs" / "sweeps" / f"bench-sweep_lambda_code-{label}" / "report" / "summary.json"
    return json.loads(path.read_text())


def reference_figure(m: Measure) -> float:
    """The reference's own absolute figure, the first number in parentheses."""
    return float(re.search(r"\(([0-9.]+) ", m.reference).group(1))


def test_measures_are_well_formed(stage):
    _, measures = stage
    assert set(measures) == {COMPUTE, WALL, THROUGHPUT}
    for m in measures.values():
        assert m.stage == "sweep" and m.unit and m.reference and m.note
        assert math.isfinite(m.value) and m.value > 0 and math.isfinite(m.ratio) and m.ratio > 0
        assert m.target == "" and m.met is None  # the issue sets no target for sweeps
        json.dumps(m.to_dict())  # what the orchestrator writes into bench.json


def test_ratios_are_value_over_reference(stage):
    _, measures = stage
    for m in measures.values():
        assert m.ratio == pytest.approx(m.value / reference_figure(m), rel=1e-2), m


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


def test_throughput_is_over_the_asha_sweeps_wall_time_and_a_plain_run_of_as_many_steps(stage):
    from mlflow import MlflowClient

    work, measures = stage
    asha = summary(work, "asha")
    steps, wall = asha["trial_steps"], measures[WALL].value
    m = measures[THROUGHPUT]
    assert m.value == pytest.approx(steps / wall * 3600, rel=1e-2)
    client = MlflowClient(f"sqlite:///{work / 'sweep' / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bench-sweep")
    local = client.search_runs([experiment.experiment_id], "attributes.run_name = 'bench-sweep-local'")
    assert len(local) == 1 and local[0].info.status == "FINISHED"
    assert int(local[0].data.params["train.max_steps"]) == steps
    assert max(h.step for h in client.get_metric_history(local[0].info.run_id, "loss/G/total")) == steps

"""The radiogenomic-map benchmark (scripts/bench_map.py) end to end in its reduced form: cohorts of two designs,
prep, a short `radiogen train --local`, every map estimator, the tables, the figure and the JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from .background import in_background
from .helpers import REPO


@in_background(lambda out: [sys.executable, str(REPO / "scripts" / "bench_map.py"), "--quick", "--out", str(out)])
def test_map_benchmark_quick_runs_end_to_end(background):
    res, tmp_path = background, background.out
    assert res.returncode == 0, res.stdout[-3000:]
    from radiogen.evaluation.estimators import ESTIMATORS

    result = json.loads((tmp_path / "bench_map.json").read_text())
    assert set(result["summary"]) == {"drivers", "null"}
    for design, table in result["summary"].items():
        # every map, each once per design (one variant), and the generator's fidelity to the programs
        assert list(table) == [*ESTIMATORS, "program-response"][:len(table)] and len(table) == len(ESTIMATORS) + 1
        assert f"### {design}" in res.stdout
    drivers, null = result["summary"]["drivers"], result["summary"]["null"]
    for m in ESTIMATORS:
        if not drivers[m]["undefined"]:
            assert 0 <= drivers[m]["auroc/pooled"]["mean"] <= 1 and 0 < drivers[m]["prevalence/size"]["mean"] < 0.1
    # A model-based map's paired difference is against the better of direct and classical, per program.
    assert drivers["synthesis-intervention"]["diff/size"]["against"] in ("direct", "classical")
    assert "diff/size" not in drivers["direct"]
    # On null nothing is linked: the family-wise error is reported where a map makes calls, no AUPRC.
    assert null["direct"]["fwer/q0.05"]["mean"] in (0.0, 1.0) and null["direct"]["auprc/size"]["mean"] is None
    units = result["units"]
    assert len(units) == 2 * (len(ESTIMATORS) + 1) and {u["train_seed"] for u in units} == {None, 0}
    response = result["summary"]["drivers"]["program-response"]
    assert -1 <= response["response/generator/train/size"]["mean"] <= 1 and "generator fidelity" in res.stdout
    assert response["response/real/train/size"]["mean"] > 0.5  # the real nodules follow their size program
    assert all(u["seconds"] >= 0 for u in units) and result["stage_seconds"]["train"] > 0
    assert "stage seconds this run (wall clock" in res.stdout and (tmp_path / "bench_map.md").read_text().startswith("bench_map:")
    assert (tmp_path / "bench_map.png").stat().st_size > 10_000
    # A re-run reuses every stage (cohorts, data, trainings, fitted maps): no training time.
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_map.py"), "--quick", "--out",
                            str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "train 0, maps 0;" in again.stdout
    assert not any(math.isnan(v) for v in result["stage_seconds"].values())

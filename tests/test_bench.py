"""`radiogen bench`: the one command that runs the stage benchmarks and writes bench.json and bench.md.

`radiogen bench --quick` as a user runs it (its own small cohort and local Ray cluster), in the background lane
(tests/background.py); here the ingest and train stages, each other stage in its own tests. The figures are not checked against any speed (a test never asserts timing), only that
every measure is well formed and its ratio is the ratio of the figures it names.
"""

from __future__ import annotations

import json
import re

import pytest

from .background import in_background
from .helpers import bench_quick


@in_background(bench_quick)
def test_bench_writes_json_and_table_of_ratios(background):
    assert background.returncode == 0, background.stdout[-3000:]
    out, printed = background.out, background.stdout
    # Quiet: one line per stage, the table and where it was written; the trainings' own output is in the logs.
    assert "bench ingest: 5 measure(s) in" in printed and "bench train: 6 measure(s) in" in printed
    assert "step 20/20" not in printed and "step 20/20" in (out / "logs" / "train.log").read_text()
    report = json.loads((out / "bench.json").read_text())
    assert report["failed"] == [] and report["machine"]["cpus"] >= 1 and report["quick"] is True
    assert report["stages"] == ["prep", "ingest", "train", "sweep", "gpu"]  # every stage by default
    assert {m["stage"] for m in report["measures"]} == set(report["stages"])
    measures = [m for m in report["measures"] if m["stage"] in ("ingest", "train")]
    for m in measures:
        assert m["value"] is not None and m["value"] > 0, m
        if m["ratio"] is not None:  # the ratio is value / the reference figure printed beside it
            ref = float(re.search(r"\(([\d,.]+) ", m["reference"]).group(1).replace(",", ""))
            assert m["ratio"] == pytest.approx(m["value"] / ref, rel=0.01), m
        if m["target"]:
            assert m["met"] in (True, False), m
    names = {m["name"] for m in measures}
    assert "Ray Train 1 worker, in-memory data (default) vs --local" in names
    assert "Ray Data streaming to a worker (shuffle per epoch)" in names
    table = (out / "bench.md").read_text()
    assert table.startswith("Machine: ") and "| stage | measure | value | ratio |" in table
    assert table.count("\n| ingest |") == 5 and table.count("\n| train |") == 6


def test_bench_rejects_an_unknown_stage(tmp_path, capsys):
    from ray_jobs.cli import main

    assert main(["bench", "--stages", "ingest,warp", "--out", str(tmp_path)]) == 2
    assert "unknown stage(s) warp; choose from prep, ingest, train, sweep, gpu" in capsys.readouterr().err

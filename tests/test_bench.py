"""`radiogen bench`: the one command that runs the stage benchmarks and writes bench.json and bench.md.

Quick mode on the session's dataset and Ray cluster; the figures are not checked against any speed (a test never
asserts timing), only that every measure is well formed and its ratio is the ratio of the figures it names.
"""

from __future__ import annotations

import json
import re

import pytest


def test_bench_writes_json_and_table_of_ratios(prepared, ray_cluster, tmp_path, capsys):
    from ray_jobs.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--stages", "ingest,train", "--quick", "--data", str(prepared), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # Quiet: one line per stage, the table and where it was written; the trainings' own output is in the logs.
    assert "bench ingest: 5 measure(s) in" in printed and "bench train: 6 measure(s) in" in printed
    assert "step 20/20" not in printed and "step 20/20" in (out / "logs" / "train.log").read_text()
    report = json.loads((out / "bench.json").read_text())
    assert report["failed"] == [] and report["machine"]["cpus"] >= 1 and report["quick"] is True
    measures = report["measures"]
    assert {m["stage"] for m in measures} == {"ingest", "train"}
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

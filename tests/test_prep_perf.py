"""`radiogen prep` start-up and resume: what a cached re-run imports and skips, and the bench stage's measures."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from radiogen import schema

from .background import in_background
from .helpers import bench_quick

REPO = Path(__file__).resolve().parents[1]
PROBED = ("torch", "ray", "SimpleITK", "pyarrow")


def wrapper(setup: str = "") -> str:
    """Python source: `setup`, the real command (argv), then which of PROBED it imported, as JSON."""
    return "\n".join(["import json, sys", setup, "from ray_jobs.cli import main", "rc = main(sys.argv[1:])",
                      f"print(json.dumps({{m: m in sys.modules for m in {PROBED!r}}}))", "sys.exit(rc)"])


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    from data_prep.cohort import write_cohort

    return write_cohort(tmp_path / "cohort", subjects=4, seed=0, matrix=64, genes=40, design="aligned")


def prep(cohort: Path, out: Path, *flags: str, setup: str = "") -> tuple[dict, dict, str]:
    """Run `radiogen prep` in a fresh interpreter without RAY_ADDRESS: (imported modules, manifest, fingerprint)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = ["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"), "--out", str(out),
            "--image-size", "32", "--bg-vois", "1", "--bg-slices", "4", *flags]
    done = subprocess.run([sys.executable, "-c", wrapper(setup), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), schema.read_manifest(out), schema.dataset_fingerprint(out)


def test_in_process_and_cached_runs_import_neither_torch_nor_ray(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    modules, cold, cold_fingerprint = prep(cohort, out, "--workers", "0")
    assert cold["counts"]["processed"] == 4 and cold["executor"]["on"] == "process"
    assert modules == {"torch": False, "ray": False, "SimpleITK": True, "pyarrow": True}  # the probe sees imports

    modules, again, fingerprint = prep(cohort, out)  # default flags: Ray if anything were left to compute
    assert again["counts"]["processed"] == 0 and again["counts"]["from_cache"] == 4
    assert again["executor"] == {"on": "none", "reason": "every subject unchanged since it was cached"}
    assert not modules["torch"] and not modules["ray"]
    assert fingerprint == cold_fingerprint


def test_rerun_recomputes_only_a_subject_whose_input_changed(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _, cold, cold_fingerprint = prep(cohort, out, "--workers", "0")
    changed = cold["subjects"]["SYN-0002"]
    ct_file = next(f for f in changed["inputs"] if "_ct" in Path(f).name)
    ct = sitk.ReadImage(ct_file)
    sitk.WriteImage(ct + 1, ct_file)  # one HU more everywhere: different bytes, a valid CT

    modules, again, fingerprint = prep(cohort, out)
    assert again["counts"]["processed"] == 1 and again["counts"]["from_cache"] == 3
    assert [s for s, o in again["subjects"].items() if not o["from_cache"]] == ["SYN-0002"]
    assert again["subjects"]["SYN-0002"]["key"] != changed["key"]
    assert again["executor"]["on"] == "process" and again["executor"]["reason"].startswith("1 subject to compute")
    assert not modules["ray"]
    assert fingerprint != cold_fingerprint


def test_auto_mode_hands_the_rest_to_ray_and_gives_the_same_dataset(cohort: Path, tmp_path: Path) -> None:
    _, alone, alone_fingerprint = prep(cohort, tmp_path / "a", "--workers", "0")
    # A free Ray start-up: after the first subject the rest are worth a local cluster.
    modules, mixed, fingerprint = prep(cohort, tmp_path / "b", "--workers", "2",
                                       setup="import data_prep.prep.executor\ndata_prep.prep.executor.RAY_START_S = 0.0")
    assert mixed["executor"]["on"] == "process+ray" and modules["ray"]
    assert "expected to save" in mixed["executor"]["reason"] and mixed["counts"]["processed"] == 4
    assert fingerprint == alone_fingerprint


@in_background(bench_quick)
def test_bench_stage_measures_are_well_formed(background) -> None:
    """The prep stage of `radiogen bench --quick`: its preps are subprocesses that start their own local Ray
    clusters."""
    assert background.returncode == 0, background.stdout[-3000:]
    from ray_jobs.bench import prep as stage

    report = json.loads((background.out / "bench.json").read_text())
    assert report["failed"] == [] and report["stages"][0] == "prep" and report["quick"] is True
    measures = [m for m in report["measures"] if m["stage"] == "prep"]
    names = [m["name"] for m in measures]
    assert len(names) == len(set(names)) == 4 * len(stage.cohorts(quick=True))
    for m in measures:
        assert m["stage"] == "prep" and m["unit"] and m["note"]
        assert m["value"] is not None and m["value"] > 0 and m["ratio"] is not None and m["ratio"] > 0
        reference = float(re.search(r"\(([0-9.e+-]+) " + re.escape(m["unit"]) + r"\)$", m["reference"]).group(1))
        assert math.isclose(m["ratio"], m["value"] / reference, rel_tol=1e-3), (m["name"], m["ratio"], m["reference"])
    rerun = next(m for m in measures if m["name"].endswith("cached re-run vs cold"))
    assert rerun["target"] == "< 0.2" and rerun["met"] == (rerun["ratio"] < 0.2)
    assert all(m["target"] == "" and m["met"] is None for m in measures if m is not rerun)
    work = background.out / "work" / "prep" / "small"
    assert len(list(work.glob("cohort-*/cases.csv"))) == 1
    schema.verify_dataset(work / "ds")


def test_ray_choices_of_the_parser_are_those_of_prep() -> None:
    from data_prep import cli, prep

    assert cli.USE_RAY == prep.USE_RAY

"""Benchmark stage "prep": `radiogen prep` against SimpleITK alone reading the same files.

Per cohort (a small one: 24 subjects on a 128 matrix, 64 px slices; a realistic one: 4 subjects of
512x512 in-plane, 128 px slices), each figure with its reference from the same run:

- subject processing, one SimpleITK thread as in a Ray task, vs SimpleITK reading that subject's CT
  and mask (page cache warm for both);
- a cold prep (empty cache, default flags) per subject vs that SimpleITK read;
- prep with 2 Ray workers vs 1 (`--ray always`, so both start a local cluster: start-up included);
- a cached re-run vs the cold prep (target < 0.2), whose dataset must have the same fingerprint.

Whole preps run as `python -m ray_jobs.cli prep` subprocesses without RAY_ADDRESS: each pays the
interpreter, its imports and whatever Ray it starts, as a user's command does, and no Ray cluster
of the bench process is used or left behind. Cohorts live under ctx.work/prep/<cohort> and are
reused by a later run on the same folder. The small cohort's prepared dataset is offered to later
stages as ctx.cohorts["small"].
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ray_jobs.bench.common import Context, Measure

STAGE = "prep"
REPO = Path(__file__).resolve().parents[2]
RERUN_TARGET = 0.2


@dataclass(frozen=True)
class Cohort:
    name: str
    subjects: int
    matrix: int
    """In-plane voxels of the synthetic CT (data_prep.cohort: 358 mm field of view)."""
    image_size: int
    """Slice side of the prepared dataset."""


def cohorts(quick: bool) -> list[Cohort]:
    if quick:  # every code path, figures meaningless
        return [Cohort("small", subjects=4, matrix=96, image_size=32)]
    return [Cohort("small", subjects=24, matrix=128, image_size=64),
            Cohort("realistic", subjects=4, matrix=512, image_size=128)]


def _cohort_files(folder: Path, spec: Cohort) -> Path:
    """The synthetic cohort at `folder` (write_cohort moves it into place only when complete)."""
    from data_prep.cohort import write_cohort

    if not (folder / "cases.csv").is_file():
        write_cohort(folder, subjects=spec.subjects, seed=0, matrix=spec.matrix, design="aligned")  # as measured
    return folder


def _sitk_read(cases) -> list[float]:
    """Seconds per subject for SimpleITK alone reading its CT and mask."""
    import SimpleITK as sitk

    seconds = []
    for case in cases:
        t = time.perf_counter()
        sitk.ReadImage(case.image)
        sitk.ReadImage(case.mask)
        seconds.append(time.perf_counter() - t)
    return seconds


def _one_thread_processing(cases, params) -> list[float]:
    """Seconds per subject of data_prep.prep.process_subject with one SimpleITK thread (a Ray task's)."""
    import SimpleITK as sitk

    from data_prep.prep import process_subject

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    seconds = []
    try:
        for case in cases:
            t = time.perf_counter()
            result = process_subject(case, params, threads=1)
            seconds.append(time.perf_counter() - t)
            if result.status != "ok":
                raise RuntimeError(f"bench cohort subject {case.subject_id} failed: {result.reason}")
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    return seconds


def _prep(cohort: Path, out: Path, image_size: int, *flags: str) -> tuple[float, dict, str]:
    """Wall seconds of one `radiogen prep` subprocess, the manifest it wrote (with "seconds": the time
    inside run_prep, from its summary line) and the dataset's fingerprint."""
    from radiogen import schema

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "ray_jobs.cli", "prep", "--cases", str(cohort / "cases.csv"),
           "--genes", str(cohort / "genes.tsv"), "--out", str(out), "--image-size", str(image_size), *flags]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    manifest = schema.read_manifest(out)
    inside = re.search(r" in ([0-9.]+) s$", done.stdout.strip().splitlines()[-1])
    manifest["seconds"] = float(inside.group(1)) if inside else None
    return seconds, manifest, schema.dataset_fingerprint(out)


def _cold(cohort: Path, out: Path, image_size: int, *flags: str) -> tuple[float, dict, str]:
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f".{out.name}.prep-cache", ignore_errors=True)
    return _prep(cohort, out, image_size, *flags)


def _measure(name: str, value: float, unit: str, ref: float, ref_text: str, **kw) -> Measure:
    return Measure(stage=STAGE, name=name, value=value, unit=unit, ratio=value / ref,
                   reference=f"{ref_text} ({ref:.4g} {unit})", **kw)


def measure_cohort(root: Path, spec: Cohort) -> tuple[list[Measure], Path]:
    """The four measures of one cohort, and its prepared (cold, default flags) dataset."""
    from data_prep import readers
    from data_prep.prep import PrepParams

    cohort = _cohort_files(root / f"cohort-{spec.subjects}x{spec.matrix}", spec)  # a quick run's is another
    cases = readers.read_cases_file(cohort / "cases.csv")
    n = len(cases)
    setup = f"{n} subjects, {spec.matrix}x{spec.matrix} in-plane, {spec.image_size} px slices"

    _sitk_read(cases)  # warm the page cache: every figure below reads from memory
    read = statistics.mean(_sitk_read(cases))
    processing = statistics.mean(_one_thread_processing(cases, PrepParams(image_size=spec.image_size)))

    ds = root / "ds"
    cold, cold_manifest, cold_fingerprint = _cold(cohort, ds, spec.image_size)
    rerun, rerun_manifest, rerun_fingerprint = _prep(cohort, ds, spec.image_size)
    if rerun_manifest["counts"]["processed"] != 0:
        raise RuntimeError(f"re-run of an unchanged cohort processed {rerun_manifest['counts']['processed']} "
                           f"subjects; the cache should have served all {n}")
    if rerun_fingerprint != cold_fingerprint:
        raise RuntimeError("the cached re-run wrote a dataset whose fingerprint differs from the cold run's")
    one = _cold(cohort, root / "ds_w1", spec.image_size, "--workers", "1", "--ray", "always")[0]
    two = _cold(cohort, root / "ds_w2", spec.image_size, "--workers", "2", "--ray", "always")[0]

    inside = rerun_manifest["seconds"]
    executor = cold_manifest["executor"]
    rerun_ratio = rerun / cold
    rerun_note = (f"{setup}; whole commands; the re-run recomputed nothing, "
                  f"{'started no Ray' if rerun_manifest['executor']['on'] == 'none' else 'used Ray'} and wrote a "
                  f"dataset of the same fingerprint")
    if inside is not None:
        rerun_note += (f"; {'bottleneck: ' if rerun_ratio >= RERUN_TARGET else ''}of its {rerun:.2f} s, {inside:.2f} s "
                       f"in run_prep (hashing the inputs, rewriting the dataset from the cache), the rest Python "
                       f"start-up and imports (pyarrow.dataset pulls in pandas)")
    return [
        _measure(f"{spec.name}: subject processing, 1 thread", processing, "s/subject", read,
                 "SimpleITK read of CT + mask alone", note=f"{setup}; process_subject in this process, page cache "
                                                           f"warm: the read plus lung segmentation and VOIs"),
        _measure(f"{spec.name}: cold prep per subject", cold / n, "s/subject", read,
                 "SimpleITK read of CT + mask alone",
                 note=f"{setup}; whole command, empty cache, default flags ({executor['on']}: {executor['reason']})"),
        _measure(f"{spec.name}: prep with 2 vs 1 Ray workers", two, "s", one, "1 Ray worker",
                 note=f"{setup}; whole commands with --ray always, each starting its own local Ray cluster "
                      f"(start-up included); 0.5 would be perfect scaling; the default cold prep took {cold:.2f} s "
                      f"({executor['on']})"),
        _measure(f"{spec.name}: cached re-run vs cold", rerun, "s", cold, "cold prep, default flags",
                 target=f"< {RERUN_TARGET:g}", met=rerun_ratio < RERUN_TARGET, note=rerun_note),
    ], ds


def run(ctx: Context) -> list[Measure]:
    measures: list[Measure] = []
    for spec in cohorts(ctx.quick):
        got, ds = measure_cohort(ctx.work / STAGE / spec.name, spec)
        measures += got
        if spec.name == "small":
            ctx.cohorts.setdefault("small", ds)
    return measures

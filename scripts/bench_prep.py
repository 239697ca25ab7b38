"""Benchmark `radiogen prep`: subjects per minute and time per stage, against SimpleITK reading alone.

    python scripts/bench_prep.py --subjects 6 --matrix 512            # synthetic cohort (data_prep.cohort)
    python scripts/bench_prep.py --cohort DIR                         # DIR's cohort (written there first
                                                                      # if DIR has no genes.tsv, and kept)

A cohort folder holds genes.tsv and either cases.csv (NIfTI layout) or tcia/ (DICOM layout), as
`data_prep.cohort.write_cohort` writes them. All figures come from one run on one machine, so the
ratios are what to compare across machines. Files are read once before timing, so every figure is
with a warm page cache (as a re-run on a workstation would be).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("fingerprint", "read_image", "read_mask", "nodule_vois", "lung_segmentation", "background_vois")


def _cases(cohort: Path, fmt: str):
    from data_prep import readers

    if fmt == "tcia":
        return readers.discover_tcia(cohort / "tcia")
    return readers.read_cases_file(cohort / "cases.csv")


def _sitk_read_seconds(cases) -> list[float]:
    """SimpleITK alone reading each subject's CT and mask (file, or DICOM series + SEG file)."""
    import SimpleITK as sitk

    times = []
    for case in cases:
        t = time.perf_counter()
        if Path(case.image).is_dir():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(case.image))
            reader.Execute()
        else:
            sitk.ReadImage(case.image)
        if case.mask:
            sitk.ReadImage(case.mask)
        times.append(time.perf_counter() - t)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, help="cohort folder; a synthetic cohort is written there if it has no "
                                                    "genes.tsv (default: a temporary one)")
    parser.add_argument("--subjects", type=int, default=6, help="synthetic cohort size (default 6)")
    parser.add_argument("--matrix", type=int, default=512, help="synthetic in-plane matrix (default 512)")
    parser.add_argument("--fmt", choices=("nifti", "tcia"), default="nifti", help="cohort layout (default nifti)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--bg-vois", type=int, default=2)
    parser.add_argument("--bg-slices", type=int, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray CPUs (default: all)")
    args = parser.parse_args()

    import SimpleITK as sitk

    from data_prep.prep import PrepOptions, PrepParams, process_subject, run_prep

    work = Path(tempfile.mkdtemp(prefix="bench_prep_"))
    try:
        cohort = args.cohort or work / "cohort"
        if not (cohort / "genes.tsv").is_file():
            from data_prep.cohort import write_cohort

            t = time.perf_counter()
            cohort = write_cohort(cohort, subjects=args.subjects, seed=0, fmt=args.fmt, matrix=args.matrix)
            print(f"wrote a synthetic {args.fmt} cohort of {args.subjects} subjects ({args.matrix} matrix) "
                  f"in {time.perf_counter() - t:.1f} s")
        fmt = "tcia" if (cohort / "tcia").is_dir() and not (cohort / "cases.csv").is_file() else args.fmt
        cases = _cases(cohort, fmt)
        params = PrepParams(image_size=args.image_size, bg_vois=args.bg_vois, bg_slices=args.bg_slices)
        first = cases[0]
        probe = (sitk.ImageSeriesReader.GetGDCMSeriesFileNames(first.image) if Path(first.image).is_dir()
                 else [first.image])
        reader = sitk.ImageFileReader()
        reader.SetFileName(probe[0])
        reader.ReadImageInformation()
        size = list(reader.GetSize())
        if Path(first.image).is_dir():
            size[2] = len(probe)
        print(f"cohort: {len(cases)} subjects ({fmt}), first CT {'x'.join(map(str, size))} voxels; "
              f"slices {args.image_size}px, {args.bg_vois} background VOIs x {args.bg_slices} slices")

        # Warm the page cache, then SimpleITK alone.
        _sitk_read_seconds(cases)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        sitk_read = _sitk_read_seconds(cases)

        # Per stage, one subject after another in this process, one thread (as in a Ray task).
        per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
        totals = []
        for case in cases:
            t = time.perf_counter()
            result = process_subject(case, params, threads=1)
            totals.append(time.perf_counter() - t)
            if result["status"] != "ok":
                print(f"  {case.subject_id}: {result['reason']}")
            for s in STAGES:
                per_stage[s].append(result["timings"].get(s, 0.0))
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(0)

        # End to end through run_prep: Ray tasks (cold cache, then a re-run), and in-process.
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t
        runs = {}
        for label, workers, keep_cache in (("ray, cold (new worker processes)", args.workers, False),
                                           ("ray, cold cache, warm workers", args.workers, False),
                                           ("ray, re-run (all cached)", args.workers, True),
                                           ("in-process (--workers 0)", 0, False)):
            if not keep_cache:
                shutil.rmtree(work / "cache", ignore_errors=True)
            opts = PrepOptions(out=work / "ds", genes=cohort / "genes.tsv", cases=cohort / "cases.csv" if fmt == "nifti" else None,
                               tcia_root=cohort / "tcia" if fmt == "tcia" else None, params=params, workers=workers,
                               cache=work / "cache")
            t = time.perf_counter()
            manifest = run_prep(opts)
            runs[label] = (time.perf_counter() - t, manifest)
        ray.shutdown()

        n = len(cases)
        mean_read = statistics.mean(sitk_read)
        print()
        print(f"{'stage (per subject, 1 thread)':34s} {'mean s':>8s} {'x sitk read':>12s}")
        print(f"{'SimpleITK read alone (CT + mask)':34s} {mean_read:8.3f} {1.0:12.2f}")
        for s in STAGES:
            m = statistics.mean(per_stage[s])
            print(f"{'  ' + s:34s} {m:8.3f} {m / mean_read:12.2f}")
        m = statistics.mean(totals)
        print(f"{'  whole subject':34s} {m:8.3f} {m / mean_read:12.2f}")
        print()
        print(f"{'end to end (run_prep)':34s} {'wall s':>8s} {'subjects/min':>12s} {'x sitk read':>12s}")
        print(f"{'SimpleITK read alone, sequential':34s} {sum(sitk_read):8.2f} {60 * n / sum(sitk_read):12.1f} {1.0:12.2f}")
        for label, (secs, manifest) in runs.items():
            c = manifest["counts"]
            assert c["subjects"]["ok"] + c["subjects"]["failed"] >= 1
            print(f"{label:34s} {secs:8.2f} {60 * n / secs:12.1f} {secs / sum(sitk_read):12.2f}")
        slices = runs["in-process (--workers 0)"][1]["counts"]["slices"]
        print(f"(Ray start-up, not included above: {ray_start:.1f} s; {args.workers} workers; "
              f"{sum(slices['nodule'].values())} nodule + {sum(slices['background'].values())} background slices)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`radiogen bench`: every benchmark stage in one run on this machine, into OUT/bench.json and OUT/bench.md.

Stages, in order (each a module of ray_jobs/bench exposing `run(ctx) -> list[Measure]`):
  prep    time per subject against SimpleITK alone reading the same CT; 1 vs 2 workers; cached re-run vs cold
  ingest  batches/s to a worker (Ray Data streaming, in-memory) against pyarrow alone and the step's consumption
  train   images/s of Ray Train (1 worker) against --local on the same config; data-wait fraction; FLOPs per step
  sweep   trial-steps per hour, and the compute ASHA saves against every trial trained to the end
  gpu     the GPU fast path against the reference settings (fp32, eager, batch 16), torch.compile on/off, MFU
          (on a machine without a GPU the GPU figures are marked not measured)

Every figure is an absolute value and a ratio against a reference measured in the same run; compare ratios across
machines. A stage that fails is recorded as failed and the others still run (exit 1). Each stage's own output
goes to OUT/logs/<stage>.log; the terminal gets one line per stage and the table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from .common import Context, Measure, machine, markdown_table

STAGES = ("prep", "ingest", "train", "sweep", "gpu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/bench",
                   help="output folder: bench.json, bench.md, logs/ (default runs/bench)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run (default all: {','.join(STAGES)})")
    p.add_argument("--data", default=None,
                   help="a prepared 32 px dataset for the ingest, train and sweep stages (default: a synthetic cohort "
                        "of 24 subjects, 8 with --quick, made and kept under OUT/work)")
    p.add_argument("--quick", action="store_true",
                   help="the smallest sizes that run every code path (a first look, tests); figures not meaningful")


def small_cohort(work: Path, quick: bool, log) -> Path:
    """The 32 px dataset the ingest and train stages share (the tiny config's size); kept between bench runs."""
    from ray_jobs.cli import main as radiogen

    subjects = 8 if quick else 24
    cohort, data = work / f"cohort{subjects}", work / f"data{subjects}_32px"
    if not (cohort / "truth.json").is_file():
        code = radiogen(["cohort", "--out", str(cohort), "--subjects", str(subjects), "--seed", "0", "--matrix", "128"])
        if code != 0:
            raise RuntimeError(f"radiogen cohort failed (exit {code}); see {log}")
    if not (data / "manifest.json").is_file():
        code = radiogen(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"),
                         "--out", str(data), "--image-size", "32", "--bg-slices", "10", "--workers", "0"])
        if code != 0:
            raise RuntimeError(f"radiogen prep failed (exit {code}); see {log}")
    return data


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def report(measures: list[Measure], info: dict, quick: bool) -> str:
    gpu = info.get("gpu") or "none"
    head = (f"Machine: {info['platform']}, {info['cpus']} CPUs ({info['processor']}), GPU: {gpu}; "
            f"Python {info['python']}, torch {info.get('torch')}, Ray {info.get('ray')}."
            + (" Quick mode: the figures exercise the code paths and mean nothing." if quick else ""))
    return f"{head}\n\n{markdown_table(measures)}\n"


def run(args: argparse.Namespace) -> int:
    from ray_jobs.quiet import quiet_logs, release_ray

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"error: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(work=out / "work", quick=args.quick)
    ctx.work.mkdir(exist_ok=True)
    if args.data:
        ctx.cohorts["small32"] = Path(args.data).resolve()
    measures: list[Measure] = []
    failed: list[str] = []
    print(f"bench: stages {', '.join(stages)}{' (quick)' if args.quick else ''}; logs in {logs}", flush=True)
    with quiet_logs(logs / "bench.log"):
        for stage in stages:
            start, log = time.perf_counter(), logs / f"{stage}.log"
            try:
                with open(log, "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    if stage in ("ingest", "train", "sweep") and "small32" not in ctx.cohorts:
                        ctx.cohorts["small32"] = small_cohort(ctx.work, args.quick, log)
                    got = importlib.import_module(f"ray_jobs.bench.{stage}").run(ctx)
                measures += got
                print(f"bench {stage}: {len(got)} measure(s) in {time.perf_counter() - start:.0f} s", flush=True)
            except Exception as err:  # noqa: BLE001 - one stage's failure must not lose the others' figures
                failed.append(stage)
                with open(log, "a") as sink:
                    traceback.print_exc(file=sink)
                measures.append(Measure(stage, "stage failed", None, "", note=f"{type(err).__name__}: {err}"[:300]))
                print(f"bench {stage}: FAILED after {time.perf_counter() - start:.0f} s ({type(err).__name__}: {err}); "
                      f"see {log}", flush=True)
        with open(logs / "ray.log", "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            release_ray()  # workers' last buffered lines land in the log, not after the table
    info = machine()
    write_atomic(out / "bench.json", json.dumps({"machine": info, "quick": args.quick, "stages": stages,
                                                 "failed": failed, "measures": [m.to_dict() for m in measures]},
                                                indent=1))
    text = report(measures, info, args.quick)
    write_atomic(out / "bench.md", text)
    print(text)
    print(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

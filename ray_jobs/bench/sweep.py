"""Sweeps: trial-steps per hour, and the compute saved by early stopping (ASHA).

The same sweep file (space, trials, seeds) runs twice on a 32 px dataset: with its ASHA settings and with every
trial trained to the end (`asha: off`). With at most 10 trials both evaluate the same configurations (Optuna's TPE
draws its first 10 at random from the seed), so the difference in trial-steps (the sum over trials of the steps
each trained) is ASHA's alone. Then the base experiment trains as one plain `radiogen train --local` run for as
many steps as the ASHA sweep's trials trained in all: the raw throughput that the sweep's machinery (Tune, Ray
Train, Ray Data, each trial's start-up) is measured against.

    python -m ray_jobs.bench.sweep --out DIR [--trials N] [--max-concurrent N] [--quick] [--data DIR]

Full mode is `ablations/sweep_lambda_code.yaml` with 6 trials, 2 at a time, on a 12-subject synthetic cohort.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

from .common import Context, Measure, markdown_table

REPO = Path(__file__).resolve().parents[2]
SWEEP_FILE = REPO / "ablations" / "sweep_lambda_code.yaml"
STAGE = "sweep"
EXPERIMENT = "bench-sweep"
QUICK_SPEC = {"trials": 2, "max_steps": 6, "report_every": 3, "asha": {"grace_period": 3, "reduction_factor": 2}}
"""Quick mode: one ASHA rung halfway, so that the second trial can be stopped."""
QUICK_SET = {"train.batch_size": 4}
QUICK_RUN_FLAGS = ["--log-every", "3", "--val-size", "8"]


def say(msg: str) -> None:
    print(f"[bench sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(out: Path, quick: bool) -> Path:
    """A synthetic cohort prepared at 32 px (the tiny config's size); kept between runs of the stage."""
    from ray_jobs.cli import main as radiogen

    cohort, data = out / "cohort", out / "data"
    subjects = 6 if quick else 12
    if not (cohort / "truth.json").is_file():
        say(f"cohort: {subjects} subjects")
        assert radiogen(["cohort", "--out", str(cohort), "--subjects", str(subjects), "--seed", "0",
                         "--matrix", "128"]) == 0, "radiogen cohort failed"
    if not (data / "manifest.json").is_file():
        say("prep at 32 px")
        # 6 subjects under the default 70/15/15 split leave no validation subject to rank trials on
        split = ["--split", "0.67,0.33,0"] if quick else []
        assert radiogen(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"),
                         "--out", str(data), "--image-size", "32", "--bg-slices", "10", "--workers", "1",
                         *split]) == 0, "radiogen prep failed"
    return data


def variant_file(config: Path, out: Path, asha: bool, trials: int, quick: bool) -> Path:
    """The sweep file as it is (ASHA) or with `asha: off`; the experiment path made absolute; quick sizes."""
    spec = yaml.safe_load(config.read_text())
    spec["experiment"] = str((config.parent / spec["experiment"]).resolve())
    spec["trials"] = trials
    if quick:
        spec |= {k: v for k, v in QUICK_SPEC.items() if k != "trials"}
        spec["set"] = {**spec.get("set", {}), **QUICK_SET}
    if not asha:
        spec["asha"] = False
    path = out / f"{config.stem}_{'asha' if asha else 'full'}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(config: Path, data: Path, runs: Path, name: str, concurrent: int, flags: list[str]) -> dict:
    """One sweep in this process (on its Ray cluster, or a local one it starts): its summary.json, the wall time,
    and per trial the seconds since its start at each report, from Tune's records."""
    from ray.tune import ExperimentAnalysis

    from ray_jobs.sweep import main as sweep, sweep_dir
    from ray_jobs.sweep_tune import TUNE_DIR

    say(f"sweep {name}")
    start = time.perf_counter()
    code = sweep(["--config", str(config), "--data", str(data), "--runs-dir", str(runs), "--name", name,
                  "--max-concurrent", str(concurrent), "--experiment", EXPERIMENT,
                  "--tracking-uri", tracking_uri(runs), *flags])
    wall = time.perf_counter() - start
    assert code == 0, f"sweep {name} failed (exit {code})"
    folder = sweep_dir(runs, name)
    summary = json.loads((folder / "report" / "summary.json").read_text())
    analysis = ExperimentAnalysis(str(folder / TUNE_DIR))
    reports = {}
    for df in analysis.trial_dataframes.values():
        if len(df) and {"trial_id", "step", "time_total_s"} <= set(df.columns):
            reports[str(df["trial_id"].iloc[0])] = sorted(zip(df["step"].astype(int), df["time_total_s"]))
    return summary | {"wall_s": wall, "reports": reports}


def tracking_uri(runs: Path) -> str:
    return f"sqlite:///{(runs / 'mlflow.db').resolve()}"


def plain_training(config: Path, data: Path, runs: Path, steps: int, flags: list[str]) -> float:
    """Wall seconds of `radiogen train --local` of the sweep's base experiment (its `set:` applied) for `steps`
    steps, validating and checkpointing as often as a trial reports, into the same tracking store."""
    from ray_jobs.cli import main as radiogen

    spec = yaml.safe_load(config.read_text())
    every = str(spec["report_every"])
    sets = [a for k, v in spec.get("set", {}).items() for a in ("--set", f"{k}={json.dumps(v)}")]
    say(f"radiogen train --local, {steps} steps")
    start = time.perf_counter()
    code = radiogen(["train", "--config", spec["experiment"], "--data", str(data), "--local", *sets,
                     "--max-steps", str(steps), "--val-every", every, "--checkpoint-every", every,
                     "--runs-dir", str(runs), "--tracking-uri", tracking_uri(runs), "--experiment", EXPERIMENT,
                     "--name", "bench-sweep-local", *flags])
    wall = time.perf_counter() - start
    assert code == 0, f"radiogen train --local failed (exit {code})"
    return wall


def best_of(summary: dict) -> dict | None:
    return next((t for t in summary["trials"] if t["trial_id"] == summary["best"]), None)


def describe(trial: dict | None) -> str:
    if trial is None:
        return "none"
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    values = ", ".join(f"{k}={fmt(v)}" for k, v in trial["values"].items())
    return f"{values} ({', '.join(f'{k}={fmt(v)}' for k, v in trial['metrics'].items() if v is not None)})"


def trial_timings(reports: dict[str, list[tuple[int, float]]]) -> tuple[float, float, float] | None:
    """(median start-up s per trial, s per step inside a trial, summed seconds to the trials' last reports) from
    each trial's (step, seconds since its start) reports. The pace is the median over trials that reported twice
    (between their first and last reports); a trial's start-up is the time to its first report less its steps at
    that pace, so that a trial stopped at the first rung, with one report, counts too."""
    paces = [(r[-1][1] - r[0][1]) / (r[-1][0] - r[0][0]) for r in reports.values() if len(r) > 1 and r[-1][0] > r[0][0]]
    if not paces:
        return None
    pace = statistics.median(paces)
    starts = [r[0][1] - r[0][0] * pace for r in reports.values() if r]
    return statistics.median(starts), pace, sum(r[-1][1] for r in reports.values() if r)


def measure(ctx: Context, trials: int, concurrent: int, config: Path = SWEEP_FILE) -> list[Measure]:
    out = (ctx.work / STAGE).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = ctx.cohorts.get("small32") or prepare(out, ctx.quick)
    runs = out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # sweep names are unique per store: every run of the stage starts afresh
    flags = QUICK_RUN_FLAGS if ctx.quick else []
    asha_file = variant_file(config, out, True, trials, ctx.quick)
    spec = yaml.safe_load(asha_file.read_text())
    if not spec.get("asha"):
        raise ValueError(f"{config.name} has no ASHA section to compare")

    from ray_jobs.train import connect_ray

    connect_ray(None, log_to_driver=False)  # a cluster started here must not count in the first sweep's wall time
    a = run_sweep(asha_file, data, runs, f"bench-{config.stem}-asha", concurrent, flags)
    f = run_sweep(variant_file(config, out, False, trials, ctx.quick), data, runs, f"bench-{config.stem}-full",
                  concurrent, flags)
    local_s = plain_training(asha_file, data, runs, a["trial_steps"], flags)

    setup = (f"{config.name}{' (quick sizes)' if ctx.quick else ''}: {trials} trials of {spec['max_steps']} steps, "
             f"{concurrent} at a time, ASHA grace {spec['asha']['grace_period']} x{spec['asha']['reduction_factor']}; "
             f"32 px dataset {data}")
    best_a, best_f = best_of(a), best_of(f)
    same = best_a is not None and best_f is not None and best_a["values"] == best_f["values"]
    pruned = sum(t["state"] == "pruned" for t in a["trials"])
    compute = Measure(
        STAGE, "compute with ASHA vs every trial to the end", float(a["trial_steps"]), "trial-steps",
        a["trial_steps"] / f["trial_steps"], f"every trial to the end ({f['trial_steps']} trial-steps)",
        note=f"{setup}. ASHA stopped {pruned} of {len(a['trials'])} trials, saving "
             f"{1 - a['trial_steps'] / f['trial_steps']:.0%} of the trial-steps; {'same' if same else 'a different'} "
             f"best configuration: with ASHA {describe(best_a)}, every trial to the end {describe(best_f)}")
    wall = Measure(
        STAGE, "sweep wall time with ASHA vs every trial to the end", round(a["wall_s"], 1), "s",
        a["wall_s"] / f["wall_s"], f"every trial to the end ({f['wall_s']:.1f} s)",
        note="each trial's start-up is paid whether ASHA stops it or not, so the wall time falls less than the "
             "trial-steps")
    rate, ref_rate = a["trial_steps"] / a["wall_s"] * 3600, a["trial_steps"] / local_s * 3600
    gap = trial_timings(a["reports"])
    where = ("no trial reported twice: no per-trial start-up estimate" if gap is None else
             f"per trial a median {gap[0]:.1f} s of start-up (Ray Train worker group, Ray Data pipeline, MLflow run; "
             f"time to its first report less its steps at the trials' pace), then {gap[1]:.2f} s per step against "
             f"{local_s / a['trial_steps']:.2f} s in the plain run (its own start-up included); the trials summed "
             f"{gap[2]:.0f} s up to their last reports in {a['wall_s']:.0f} s of wall time at {concurrent} at a time; "
             f"the rest is each trial's end (final model logged to MLflow, workers torn down), Tune's scheduling "
             f"and the sweep's report")
    throughput = Measure(
        STAGE, "trial-steps per hour of the sweep (ASHA) vs one plain training", round(rate, 1), "trial-steps/h",
        rate / ref_rate, f"radiogen train --local of the base experiment, {a['trial_steps']} steps "
                         f"({ref_rate:.1f} steps/h, {local_s:.1f} s)",
        note=f"validation and checkpoint every {spec['report_every']} steps in both; {where}")
    return [compute, wall, throughput]


def run(ctx: Context) -> list[Measure]:
    return measure(ctx, *((QUICK_SPEC["trials"], 1) if ctx.quick else (6, 2)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.bench.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="working folder (cohort, data, runs)")
    p.add_argument("--trials", type=int, default=None, help="trials per sweep (default 6; quick 2)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at a time (default 2; quick 1)")
    p.add_argument("--quick", action="store_true", help="smallest sizes (figures not meaningful)")
    p.add_argument("--data", default=None, help="a prepared 32 px dataset (default: prepare a synthetic cohort)")
    args = p.parse_args(argv)
    ctx = Context(work=Path(args.out).resolve(), quick=args.quick,
                  cohorts={"small32": Path(args.data).resolve()} if args.data else {})
    trials, concurrent = (QUICK_SPEC["trials"], 1) if args.quick else (6, 2)
    measures = measure(ctx, args.trials or trials, args.max_concurrent or concurrent)
    print(markdown_table(measures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

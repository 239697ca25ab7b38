"""Sweeps: trial-steps per hour against plain training, where a trial's start-up goes, and the compute saved by
early stopping (ASHA).

The same sweep file (space, trials, seeds) runs twice on a 32 px dataset: with its ASHA settings and with every
trial trained to the end (`asha: off`). With at most 10 trials both evaluate the same configurations (Optuna's TPE
draws its first 10 at random from the seed), so the difference in trial-steps (the sum over trials of the steps
each trained) is ASHA's alone. Then the base experiment trains as one plain `radiogen train --local` run for as
many steps as the ASHA sweep's trials trained in all: the raw throughput that the sweep's machinery (Tune, each
trial's start-up and end, the trials sharing the machine) is measured against. Both sweeps run direct trials
(the default for one worker with in-memory data); a third, smaller sweep of the same file runs its trials as Ray
Train runs (`--trial-mode train`) to show what that path costs per trial. Start-up is read from the phase
timestamps every trial logs to MLflow (ray_jobs/phases.py): trial start (its Tune function entered) -> MLflow run
open -> data ready -> model built -> first step.

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

from radiogen.strict_yaml import parse_yaml

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


def variant_file(config: Path, out: Path, asha: bool, trials: int, quick: bool, suffix: str = "") -> Path:
    """The sweep file as it is (ASHA) or with `asha: off`; the experiment path made absolute; quick sizes."""
    spec = parse_yaml(config.read_text())
    spec["experiment"] = str((config.parent / spec["experiment"]).resolve())
    spec["trials"] = trials
    if quick:
        spec |= {k: v for k, v in QUICK_SPEC.items() if k != "trials"}
        spec["set"] = {**spec.get("set", {}), **QUICK_SET}
    if not asha:
        spec["asha"] = False
    path = out / f"{config.stem}_{suffix or ('asha' if asha else 'full')}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(config: Path, data: Path, runs: Path, name: str, concurrent: int, flags: list[str]) -> dict:
    """One sweep in this process (on its Ray cluster, or a local one it starts): its summary.json, the wall time,
    per trial the seconds since its start at each report (Tune's records), and per trial the phase timings it
    logged to MLflow."""
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
    return summary | {"wall_s": wall, "reports": reports, "phases": trial_phases(runs, summary)}


def trial_phases(runs: Path, summary: dict) -> list[dict[str, float]]:
    """Per trial, {phase: seconds since the trial's start} as the trial logged them (ray_jobs/phases.py)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri(runs))
    out = []
    for trial in summary["trials"]:
        if trial.get("run_id"):
            metrics = client.get_run(trial["run_id"]).data.metrics
            out.append({k.split("/", 1)[1].removesuffix("_s"): v for k, v in metrics.items()
                        if k.startswith("phase/")})
    return out


def median_phase(phases: list[dict[str, float]], name: str) -> float | None:
    values = [p[name] for p in phases if name in p]
    return statistics.median(values) if values else None


def startup_note(phases: list[dict[str, float]]) -> str:
    """Median seconds from the trial's start to each phase before its first step."""
    steps = [(n, median_phase(phases, n)) for n in ("mlflow_open", "data_ready", "model_built", "first_step")]
    return ", ".join(f"{n} {v:.2f} s" for n, v in steps if v is not None)


def tracking_uri(runs: Path) -> str:
    return f"sqlite:///{(runs / 'mlflow.db').resolve()}"


def plain_training(config: Path, data: Path, runs: Path, steps: int, flags: list[str]) -> float:
    """Wall seconds of `radiogen train --local` of the sweep's base experiment (its `set:` applied) for `steps`
    steps, validating and checkpointing as often as a trial reports, into the same tracking store."""
    from ray_jobs.cli import main as radiogen

    spec = parse_yaml(config.read_text())
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
    spec = parse_yaml(asha_file.read_text())
    if not spec.get("asha"):
        raise ValueError(f"{config.name} has no ASHA section to compare")

    from ray_jobs.resources import connect_ray
    from ray_jobs.tracking import experiment_id

    # Neither starting a local cluster nor creating the sqlite tracking store (its schema: ~2 s) is a sweep's
    # cost: a user's cluster and store exist already. Both happen here, before any timed run.
    connect_ray(None, log_to_driver=False)
    experiment_id(tracking_uri(runs), EXPERIMENT, runs / "mlartifacts")
    a = run_sweep(asha_file, data, runs, f"bench-{config.stem}-asha", concurrent, flags)
    f = run_sweep(variant_file(config, out, False, trials, ctx.quick), data, runs, f"bench-{config.stem}-full",
                  concurrent, flags)
    train_trials = 1 if ctx.quick else 2
    t = run_sweep(variant_file(config, out, False, train_trials, ctx.quick, suffix="train"), data, runs,
                  f"bench-{config.stem}-train", 1, [*flags, "--trial-mode", "train"])
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
        note="a stopped trial frees its CPU for the next one at once")
    rate, ref_rate = a["trial_steps"] / a["wall_s"] * 3600, a["trial_steps"] / local_s * 3600
    gap = trial_timings(a["reports"])
    pace = ("" if gap is None else f"; inside a trial {gap[1]:.3f} s per step (validation included) against "
            f"{local_s / a['trial_steps']:.3f} s in the plain run (its own start-up included)")
    throughput = Measure(
        STAGE, "trial-steps per hour of the sweep (ASHA) vs one plain training", round(rate, 1), "trial-steps/h",
        rate / ref_rate, f"radiogen train --local of the base experiment, {a['trial_steps']} steps "
                         f"({ref_rate:.1f} steps/h, {local_s:.1f} s)", target=">= 0.9x",
        met=rate / ref_rate >= 0.9,
        note=f"validation and checkpoint every {spec['report_every']} steps in both; the sweep runs {concurrent} "
             f"direct trials at a time, one torch thread each, the plain run one process at --local's threads"
             f"{pace}; the sweep's wall time also holds Ray's and Tune's start, the trials' ends and the report")
    direct_start = median_phase(a["phases"] + f["phases"], "first_step")
    startup = Measure(
        STAGE, "median start-up of a direct trial (trial start -> first step)", direct_start, "s", None, "",
        "<= 3 s", None if direct_start is None else direct_start <= 3.0,
        note=f"{len(a['phases']) + len(f['phases'])} direct trials of both sweeps, median seconds from the trial's "
             f"start to: {startup_note(a['phases'] + f['phases'])}; the first trial of each process pays the "
             f"imports (torch's dynamo on the first optimiser, MLflow) and later ones reuse the warm process")
    train_start = median_phase(t["phases"], "first_step")
    train_path = Measure(
        STAGE, "median start-up of a Ray Train trial (trial start -> first step)", train_start, "s",
        None if not (train_start and direct_start) else train_start / direct_start,
        "" if not direct_start else f"direct trial ({direct_start:.2f} s)",
        note=f"{len(t['phases'])} trial(s) of the same file with --trial-mode train, one at a time (a Ray Train run "
             f"per trial: controller, worker group, dataset shards); median seconds to: {startup_note(t['phases'])}")
    return [compute, wall, throughput, startup, train_path]


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

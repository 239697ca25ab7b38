"""`radiogen demo`: the main job end to end on a synthetic cohort whose gene -> nodule links are known.

  cohort    a synthetic cohort (NIfTI CT + nodule masks + a GEO-style gene table + truth.json)
  prep      -> parquet slices at 32 px + manifest
  sweep     Ray Tune + Optuna over the fusion ablations and lambda on the stable tiny config, ASHA on
            (ablations/sweep_demo.yaml): realism and the map against the cohort's truth; every trial trains
            directly in its Tune process (2 at a time on 2 cores), nested under the sweep's MLflow run
  baseline  the MC-GAN baseline (ablations/mcgan_tiny.yaml) trained with Ray Train for the same steps
  eval      the best trial against the baseline, the classical pipeline and the cohort's truth

One line per stage on the terminal, then the leaderboard, what was learned, the report's paths and the command
that opens the MLflow UI on these runs; each stage's full output is in OUT/logs/<stage>.log. Running it again
reuses what exists: the cohort, the prepared data, a finished sweep (an unfinished one is resumed, one refused
before its first trial starts again), the trained baseline and the report (for the same permutations and
estimators). OUT/demo.json records --subjects, --trials and --steps: a rerun asking for others is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import yaml

from radiogen.strict_yaml import parse_yaml

REPO = Path(__file__).resolve().parents[1]  # the shipped sweep files are found wherever the demo runs from
SWEEP_FILE = REPO / "ablations" / "sweep_demo.yaml"
BASELINE = REPO / "ablations" / "mcgan_tiny.yaml"
EXPERIMENT = "radiogen-demo"
# Fixed names are what let a second run find the sweep (to reuse or resume) and the baseline (to reuse or resume).
SWEEP_NAME, BASELINE_NAME = "demo", "demo-mcgan"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `radiogen demo`; the `radiogen` parser imports this module for them, so its imports stay light."""
    p.add_argument("--out", default="runs/demo",
                   help="folder of everything the demo makes: cohort, data, runs, sweeps, eval, logs, the sqlite "
                        "tracking store (default runs/demo)")
    p.add_argument("--subjects", type=int, default=30, help="subjects of the synthetic cohort (default 30)")
    p.add_argument("--trials", type=int, default=None, help="sweep trials (default: the sweep file's, 4)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of every trial and of the baseline (default: the sweep file's, 2000)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///OUT/mlflow.db)")
    p.add_argument("--estimators", default=None,
                   help="comma-separated map estimators of the evaluation's table (default: all of `radiogen eval "
                        "--estimators`; fewer make a quicker demo)")
    p.add_argument("--n-perm", type=int, default=1000,
                   help="permutations of the evaluation's tests (default 1000; its linear-probe nulls take at most "
                        "100)")


class StageFailed(RuntimeError):
    pass


MIN_TRAIN_SUBJECTS = 2  # gene statistics need a spread over the training split (prep)


def check_request(args: argparse.Namespace, out: Path) -> None:
    """Refuse, before anything runs, a cohort too small for the demo's sweep, and a rerun whose flags differ from
    what OUT was made with (its stages would be reused for another request). Records the request in OUT."""
    from data_prep.constants import DEFAULT_SEED, DEFAULT_SPLIT
    from data_prep.gene_model import subject_id
    from data_prep.prep.splits import assign_splits
    from radiogen.evaluation.objective import MIN_SUBJECTS  # what the sweep's map objective needs to validate

    def counts(n: int) -> tuple[int, int]:
        # prep's split rule on the cohort's ids (the demo preps with the default split and seed): known before any
        # file exists.
        got = list(assign_splits([subject_id(j) for j in range(n)], DEFAULT_SPLIT, DEFAULT_SEED).values())
        return got.count("train"), got.count("val")

    def enough(n: int) -> bool:
        train, val = counts(n)
        return train >= MIN_TRAIN_SUBJECTS and val >= MIN_SUBJECTS

    if not enough(args.subjects):
        # Adding subjects never moves one between splits, so the smallest size that works is a fixed number.
        smallest = next(n for n in range(args.subjects, 1000) if enough(n))
        train, val = counts(args.subjects)
        raise StageFailed(f"--subjects {args.subjects} gives {train} training and {val} validation subjects; the "
                          f"demo's sweep needs {MIN_TRAIN_SUBJECTS} and {MIN_SUBJECTS}: use --subjects {smallest} "
                          f"or more (default 30)")
    asked = {"subjects": args.subjects, "trials": args.trials, "steps": args.steps}
    path = out / "demo.json"
    if path.is_file():
        made = {k: json.loads(path.read_text()).get(k) for k in asked}
    elif (out / "cohort" / "truth.json").is_file():  # made before demo.json was written: its cohort tells
        made = {**asked, "subjects": len(json.loads((out / "cohort" / "truth.json").read_text())["subjects"])}
    else:
        made = asked
    if made != asked:
        def flags(d: dict) -> str:
            return " ".join(f"--{k} {v}" for k, v in d.items() if v is not None) or "the defaults"
        raise StageFailed(f"{out} holds a demo made with {flags(made)}; this run asks for {flags(asked)}. Its "
                          f"cohort, data and sweep would be reused for another request: give another --out, or "
                          f"delete {out} to start over")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asked) + "\n")


def stage(name: str, logs: Path, work) -> object:
    """Run `work()` with its output in logs/<name>.log; print one line with the time it took (or the failure)."""
    log = logs / f"{name}.log"
    start = time.perf_counter()
    # Appended, not overwritten: a rerun that reuses or resumes a stage keeps the earlier run's output above it.
    with open(log, "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        print(f"== {name} {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
        result, summary = work()
    print(f"demo {name}: {summary} ({time.perf_counter() - start:.0f} s)", flush=True)
    return result


def check(code: int, what: str, log: Path) -> None:
    """Raise StageFailed unless the command exited 0 (its errors went to its stage's log, not the terminal)."""
    if code != 0:
        raise StageFailed(f"{what} exited {code}; its output is in {log}")


def sweep_file(out: Path, trials: int | None, steps: int | None) -> Path:
    """The shipped sweep file, or a copy in OUT with --trials/--steps applied (rungs and reports scaled)."""
    if trials is None and steps is None:
        return SWEEP_FILE
    spec = parse_yaml(SWEEP_FILE.read_text())
    # The copy lives in OUT: its experiment path, relative to ablations/ in the original, must be made absolute.
    spec["experiment"] = str((SWEEP_FILE.parent / spec["experiment"]).resolve())
    if trials is not None:
        spec["trials"] = trials
    if steps is not None:
        # Reports, and ASHA's first rung, every third of the budget: a shortened trial can still be stopped twice.
        every = max(1, steps // 3)
        spec |= {"max_steps": steps, "report_every": every}
        spec["asha"] = {**spec["asha"], "grace_period": every}
    path = out / "sweep_demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def finished_run(uri: str, name: str):
    """The FINISHED MLflow run named `name` in the demo's experiment, or None."""
    from mlflow import MlflowClient

    from .tracking import RUN_NAME_TAG

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    # Only a FINISHED one: an interrupted baseline is trained again under its name, which resumes it.
    runs = client.search_runs([exp.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{name}' and attributes.status = "
                                                   f"'FINISHED'", max_results=1)
    return runs[0] if runs else None


def learned(metrics: dict[str, float], estimators: list[dict] = ()) -> list[str]:
    """What the demo learned, in a few lines: realism, the programs' response, and the estimators table (every
    radiogenomic map against the cohort's truth; `estimators` as metrics.json holds them)."""
    from types import SimpleNamespace

    from radiogen.evaluation.report import PROGRAMS, estimator_lines, fmt, metric_name, small_split_warning

    # The held-out subjects when there are any: the model never trained on them.
    split = "heldout" if metrics.get(metric_name("heldout", "n_subjects"), 0) > 0 else "train"
    # NaN for a metric the evaluation could not compute (e.g. no baseline): fmt prints it as n/a.
    m = lambda who, *parts: metrics.get(metric_name(split, who, *parts), float("nan"))  # noqa: E731
    n = int(metrics.get(metric_name(split, "n_subjects"), 0))
    n_train = int(metrics.get(metric_name("train", "n_subjects"), 0))
    warning = small_split_warning(split, n)
    return [
        *([warning] if warning else []),
        f"what was learned ({split} subjects: {n}):",
        f"  realism, radiomic Frechet distance (lower is better): best trial "
        f"{fmt(m('model', 'realism', 'frechet_radiomic'))}, "
        f"MC-GAN baseline {fmt(m('baseline', 'realism', 'frechet_radiomic'))}, two sets of real nodules (the floor) "
        f"{fmt(m('real', 'realism', 'frechet_radiomic'))}",
        "  nodules follow the gene programs (Spearman rho; size / density / irregularity / texture, decoy): best trial "
        + " / ".join(fmt(m("model", "truth", f"response/{p}")) for p in PROGRAMS)
        + f", decoy {fmt(m('model', 'truth', 'response/decoy'))}; real nodules "
        + " / ".join(fmt(m("real", "truth", f"response/{p}")) for p in PROGRAMS)
        + f", decoy {fmt(m('real', 'truth', 'response/decoy'))}",
        f"  radiogenomic map vs the cohort's true links (every map fitted on the {n_train} training subjects; AUROC / "
        f"AUPRC, prevalence = a random ranking's AUPRC; calls by BH over the map):",
        *("  " + line for line in estimator_lines([SimpleNamespace(**r) for r in estimators])),
    ]


def run(args: argparse.Namespace) -> int:
    """`radiogen demo`: each stage runs its `radiogen` command in this process, skipped where its result exists."""
    # In-process, not subprocesses: the Ray session the sweep starts serves the baseline's training too.
    from .cli import main as radiogen
    from .eval import DEFAULT_ESTIMATORS
    from .quiet import quiet_logs, release_ray
    from .tracking import default_tracking_uri, ui_hint

    out = Path(args.out).resolve()
    try:
        check_request(args, out)
    except StageFailed as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    uri = default_tracking_uri(out, args.tracking_uri)
    cohort, data = out / "cohort", out / "data"
    # Every run in one experiment and one folder: the demo's MLflow view holds exactly its own runs.
    tracking = ["--tracking-uri", uri, "--experiment", EXPERIMENT, "--runs-dir", str(out)]
    start = time.perf_counter()
    print(f"demo: cohort -> prep -> sweep -> baseline -> eval in {out}; each stage's output in {logs}", flush=True)
    try:
        # Ray's and MLflow's records between stages go to demo.log; each command nests its own log file inside.
        with quiet_logs(logs / "demo.log"):
            def make_cohort():
                # cohort and prep publish their folders whole: a file in one means that stage finished.
                if (cohort / "truth.json").is_file():
                    return None, f"reused {cohort}"
                check(radiogen(["cohort", "--out", str(cohort), "--subjects", str(args.subjects), "--seed", "0",
                                "--matrix", "128"]), "radiogen cohort", logs / "cohort.log")
                return None, f"{args.subjects} subjects with known gene-program -> nodule links in {cohort}"

            def prep():
                if (data / "manifest.json").is_file():
                    return None, f"reused {data}"
                check(radiogen(["prep", "--cases", str(cohort / "cases.csv"), "--genes", str(cohort / "genes.tsv"),
                                # 32 px: the size ablations/tiny.yaml, and so the sweep and baseline, train at.
                                "--out", str(data), "--image-size", "32", "--bg-slices", "10"]),
                      "radiogen prep", logs / "prep.log")
                counts = json.loads((data / "manifest.json").read_text())["counts"]["slices"]
                return None, (f"{sum(counts['nodule'].values())} nodule and {sum(counts['background'].values())} "
                              f"background slices at 32 px in {data}")

            def sweep():
                report = out / "sweeps" / SWEEP_NAME / "report"
                if not (report / "summary.json").is_file():  # the last report file: a finished sweep has it
                    # A sweep with a state but no report: its driver died; resume it. A folder without a state
                    # (sweep.json) holds a sweep refused before any trial: start it again.
                    started = (out / "sweeps" / SWEEP_NAME / "sweep.json").is_file()
                    flags = ["--resume", SWEEP_NAME] if started else \
                        ["--config", str(sweep_file(out, args.trials, args.steps)), "--data", str(data),
                         "--name", SWEEP_NAME, "--truth", str(cohort / "truth.json")]
                    check(radiogen(["sweep", *flags, *tracking]), "radiogen sweep", logs / "sweep.log")
                summary = json.loads((report / "summary.json").read_text())
                states = [t["state"] for t in summary["trials"]]
                return summary, (f"{len(states)} trials, {states.count('pruned')} stopped early by ASHA, "
                                 f"{summary['trial_steps']} of {summary['full_budget_steps']} trial-steps trained")

            stage("cohort", logs, make_cohort)
            stage("prep", logs, prep)
            summary = stage("sweep", logs, sweep)
            best = next((t for t in summary["trials"] if t["trial_id"] == summary["best"]), None)
            if best is None:
                raise StageFailed(f"the sweep has no complete trial with finite objectives to evaluate; see "
                                  f"{out / 'sweeps' / SWEEP_NAME / 'report' / 'leaderboard.md'}")

            def baseline():
                run = finished_run(uri, BASELINE_NAME)
                if run is not None:
                    return run.info.run_id, f"reused MLflow run {run.info.run_id}"
                steps = summary["max_steps"]  # the sweep's own budget, so the comparison is at equal steps
                # One validation and one checkpoint, at the end: only the final weights are evaluated.
                check(radiogen(["train", "--config", str(BASELINE), "--data", str(data), "--name", BASELINE_NAME,
                                "--max-steps", str(steps), "--set", "data.n_genes=null", "--val-every", str(steps),
                                "--checkpoint-every", str(steps), *tracking]), "radiogen train", logs / "baseline.log")
                run = finished_run(uri, BASELINE_NAME)  # its id went to the stage's log; eval needs it
                return run.info.run_id, f"MC-GAN trained {steps} steps with Ray Train (MLflow run {run.info.run_id})"

            baseline_id = stage("baseline", logs, baseline)
            report_dir = out / "eval" / SWEEP_NAME

            def evaluate():
                done = report_dir / "metrics.json"
                if done.is_file():
                    # Reused only for the same best trial, baseline, permutations and estimators: a resumed sweep may
                    # have another best, and a rerun may ask for other tests.
                    report = json.loads(done.read_text())
                    want = {"run": best["run_id"], "baseline": baseline_id, "n_perm": args.n_perm,
                            "estimators": args.estimators or ",".join(DEFAULT_ESTIMATORS)}
                    if all(report.get("args", {}).get(k) == v for k, v in want.items()):
                        return report["metrics"], f"reused {report_dir / 'report.md'}"
                check(radiogen(["eval", "--run", best["run_id"], "--baseline", baseline_id, "--data", str(data),
                                "--truth", str(cohort / "truth.json"), "--out", str(report_dir), "--runs-dir",
                                str(out), "--tracking-uri", uri, "--n-perm", str(args.n_perm),
                                "--probe-perm", str(min(args.n_perm, 100)),
                                "--map-backgrounds", "2", "--threads", "1",  # CPU time of the generators' maps
                                *(["--estimators", args.estimators] if args.estimators else [])]),
                      "radiogen eval", logs / "eval.log")
                return json.loads(done.read_text())["metrics"], f"trial {best['trial_id']} vs MC-GAN and the truth"

            metrics = stage("eval", logs, evaluate)
            with open(logs / "ray.log", "a") as sink, contextlib.redirect_stdout(sink), \
                    contextlib.redirect_stderr(sink):
                release_ray()  # workers' last buffered lines land in the log, not after the summary
    except StageFailed as err:
        print(f"demo: FAILED: {err}", file=sys.stderr)
        return 1
    print()
    print((out / "sweeps" / SWEEP_NAME / "report" / "leaderboard.md").read_text().strip())
    print()
    estimators = json.loads((report_dir / "metrics.json").read_text()).get("estimators", [])
    for line in learned(metrics, estimators):
        print(line)
    print(f"report: {report_dir / 'report.md'}; figures: {report_dir / 'figures'}; sweep report: "
          f"{out / 'sweeps' / SWEEP_NAME / 'report'}")
    print(f"MLflow: {ui_hint(uri)} (experiment {EXPERIMENT}: the sweep's parent run, its trials nested under it, "
          f"the baseline, and the evaluation nested under the best trial)")
    print(f"demo finished in {time.perf_counter() - start:.0f} s; logs in {logs}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from .quiet import quiet_mlflow_env

    quiet_mlflow_env()  # before MLflow is imported: `python -m` skips the radiogen command's main
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

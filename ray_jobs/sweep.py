"""`radiogen sweep` / `python -m ray_jobs.sweep`: many trainings as Ray Tune trials, compared in MLflow.

The sweep file (ablations/sweep_*.yaml; format in radiogen/search_space.py and docs/sweeps.md) names a base
experiment and either a search space (mode: search - Optuna's TPE, seeded, proposes configurations; ASHA
stops hopeless ones early on a validation metric; several objectives give a Pareto front) or an ablation grid
(mode: grid - variants x seeds, each to the full budget, reported as mean ± std per variant and the paired
difference to the reference with a 95% interval). Every trial is a training run exactly as `radiogen train`
makes it, as a nested MLflow run under the sweep's parent run.

Checked before any trial starts (exit 2): the sweep file and search space (unknown parameters, empty choices,
reversed bounds, conditions no variant satisfies, values the config rejects), the dataset, the tracking store
and the cluster's resources. Trials run as many at a time as the cluster fits while one CPU stays free for Ray
Data (--max-concurrent N sizes the workers so that N fit). Trials stopped by ASHA reach Optuna as PRUNED and
their MLflow runs end KILLED. When the driver dies, `--resume NAME` continues: finished trials are kept,
unfinished ones resume from their checkpoints, the same MLflow parent run is reused. At the end the leaderboard
is printed; it, the best config (accepted by `radiogen train --config`), the grid table and Optuna's plots are
artifacts of the parent run. Ray's own logs go to files whose path is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import math
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from radiogen import schema
from radiogen.config import ConfigError, dump_yaml
from radiogen.search_space import SearchSpaceError, SweepSpec, load_sweep, trial_config
from radiogen.data import DatasetMismatch

from .cli import add_sweep_arguments as add_arguments
from .sweep_report import TrialRow, best, grid_table, leaderboard_table, markdown, optuna_plots, rank, write_csv
from .sweep_trial import (SWEEP_TAG, TRIAL_DRIVER_CPUS, SweepContext, activate, config_of, describe, trial_run_name,
                          trial_values)
from .tracking import (RunFinished, TrackingUnavailable, Tracker, check_tracking, code_version, default_tracking_uri,
                       experiment_id, find_run, flatten, open_run, ui_hint, with_retry)
from .quiet import quiet_logs, ray_log_dir
from .train import (RAY_DATA_CPUS, RUN_NAME, ResourceMismatch, Sigterm, TooFewSubjects, choose_data_mode, connect_ray,
                    plan_cpus_per_worker, read_inputs, resolve_config)

"""The tag MLflow 3's UI reads to show an experiment as model training (not GenAI)."""


def plan_trials(cpus: float, gpus: float, num_workers: int, requested: float | None, gpu: bool,
                max_concurrent: int | None) -> tuple[float, int]:
    """(CPUs per worker, trials at a time) such that the trials' workers and drivers leave RAY_DATA_CPUS free."""
    if max_concurrent is not None and max_concurrent < 1:
        raise ResourceMismatch(f"--max-concurrent must be at least 1, got {max_concurrent}")
    n = max_concurrent or 1
    if gpu and gpus < num_workers * n:
        raise ResourceMismatch(f"--gpu: {n} trial(s) x {num_workers} worker(s) need {num_workers * n} GPUs but the "
                               f"cluster has {gpus:g}; lower --max-concurrent or --num-workers, or leave out --gpu")
    budget = cpus - TRIAL_DRIVER_CPUS * n
    if requested is None and max_concurrent:
        try:  # the workers of N trials sized together, like one training of N x workers
            cpw = plan_cpus_per_worker(budget, gpus, num_workers * n, None, False)
        except ResourceMismatch:
            raise ResourceMismatch(f"--max-concurrent {n} x --num-workers {num_workers} on a cluster of {cpus:g} "
                                   f"CPUs leaves too little CPU per worker after {RAY_DATA_CPUS:g} CPU for Ray Data; "
                                   f"lower --max-concurrent") from None
    else:
        cpw = plan_cpus_per_worker(budget, gpus, num_workers, requested, False)
    fits = math.floor((cpus - RAY_DATA_CPUS + 1e-9) / (num_workers * cpw + TRIAL_DRIVER_CPUS))
    if gpu:
        fits = min(fits, math.floor(gpus / num_workers))
    if max_concurrent and max_concurrent > fits:
        raise ResourceMismatch(f"--max-concurrent {max_concurrent}: only {fits} trial(s) of {num_workers} worker(s) x "
                               f"{cpw:g} CPU fit in {cpus:g} CPUs with {RAY_DATA_CPUS:g} left for Ray Data; lower "
                               f"--max-concurrent or --cpus-per-worker")
    return cpw, max_concurrent or fits


def sweep_dir(runs_dir: Path, name: str) -> Path:
    return runs_dir / "sweeps" / name


def run(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir).resolve()
    try:
        if args.resume:
            name, state = args.resume, read_state(sweep_dir(runs_dir, args.resume))
            spec, overrides = SweepSpec.from_dict(state["spec"]), tuple(state["overrides"])
            data, experiment = Path(state["data"]), state["experiment"]
            uri = default_tracking_uri(runs_dir, args.tracking_uri) if args.tracking_uri else state["uri"]
        else:
            if not args.config or not args.data:
                raise ConfigError("--config and --data are required (unless --resume NAME continues a sweep)")
            spec = load_sweep(args.config, args.overrides, args.mode, args.trials)
            overrides, data, experiment = tuple(args.overrides), Path(args.data).resolve(), args.experiment
            name = args.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            if not RUN_NAME.fullmatch(name):
                raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only")
            if (sweep_dir(runs_dir, name) / "sweep.json").exists():
                raise ConfigError(f"sweep {name!r} exists in {sweep_dir(runs_dir, name)}; continue it with --resume "
                                  f"{name} or choose a new --name")
            uri = default_tracking_uri(runs_dir, args.tracking_uri)
        manifest = schema.read_manifest(data)
        base = resolve_config(trial_config(spec, {}, overrides), manifest)
        check_tracking(uri)
        schema.verify_dataset(data)
    except (SearchSpaceError, ConfigError, schema.SchemaError, DatasetMismatch, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    folder = sweep_dir(runs_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_logs(folder / "driver.log"):
        return sweep(args, name, spec, overrides, data, experiment, uri, manifest, base, folder, runs_dir)


def sweep(args: argparse.Namespace, name: str, spec: SweepSpec, overrides: tuple[str, ...], data: Path,
          experiment: str, uri: str, manifest: dict, base, folder: Path, runs_dir: Path) -> int:
    """The sweep once its inputs are checked: resources, parent run, trials, report."""
    try:
        connect_ray(args.address, log_to_driver=False)
        import ray

        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        if args.resume:  # Tune restores its concurrency limit: the workers keep the size planned for it
            state = read_state(folder)
            cpw, concurrent = state["cpus_per_worker"], state["concurrent"]
            args.num_workers, args.gpu = state["num_workers"], state["gpu"]
        else:
            cpw, concurrent = plan_trials(cpus, gpus, args.num_workers, args.cpus_per_worker, args.gpu,
                                          args.max_concurrent)
        inputs = read_inputs(data, manifest, base.data.image_size, args.val_size)
        check_objectives(spec, inputs.validation)
        data_mode = choose_data_mode(args, manifest)
    except (ResourceMismatch, TooFewSubjects, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_trials = spec.trials if spec.mode == "search" else len(spec.grid.variants) * len(spec.grid.seeds)
    print(f"sweep {name}: {spec.mode} over {Path(spec.experiment).name}, {n_trials} trial(s) of {spec.max_steps} steps, "
          f"objective(s) {', '.join(f'{o.metric} ({o.mode})' for o in spec.objectives)}"
          + (f", ASHA grace {spec.asha.grace_period} x{spec.asha.reduction_factor}" if spec.mode == "search"
             and spec.asha else ""))
    print(f"resources: {concurrent} trial(s) at a time, each {args.num_workers} worker(s) x {cpw:g} CPU"
          f"{' + 1 GPU' if args.gpu else ''}; cluster {cpus:g} CPUs, {gpus:g} GPUs; "
          f"{cpus - concurrent * (args.num_workers * cpw + TRIAL_DRIVER_CPUS):g} CPU left for Ray Data")
    print(f"logs: Tune and Optuna in {folder / 'driver.log'}, trials in {ray_log_dir()}")

    artifact_root = runs_dir / "mlartifacts" if uri.startswith("sqlite:") else None
    try:
        exp_id = experiment_id(uri, experiment, artifact_root)
        parent = open_run(uri, experiment, name, parent_params(spec, overrides, data, args, cpw, concurrent),
                          {SWEEP_TAG: name, "radiogen.sweep_role": "parent", "radiogen.ablation": base.name,
                           "radiogen.code_version": code_version(),
                           "radiogen.dataset_fingerprint": schema.dataset_fingerprint(data)}, artifact_root)
    except RunFinished:
        print(f"error: sweep {name!r} finished already; its report is in {folder / 'report'}", file=sys.stderr)
        return 2
    reopen(uri, parent)
    if not args.resume:
        write_state(folder, {"spec": spec.to_dict(), "overrides": list(overrides), "data": str(data),
                             "experiment": experiment, "uri": uri, "parent_run_id": parent, "cpus_per_worker": cpw,
                             "concurrent": concurrent, "num_workers": args.num_workers, "gpu": args.gpu})
    print(f"sweep {name} (MLflow parent run {parent}) tracking at {uri}")
    ctx = SweepContext(name=name, spec=spec, overrides=overrides, inputs=inputs, uri=uri, experiment=experiment,
                       exp_id=exp_id, parent_run_id=parent, artifact_root=artifact_root, train_storage=folder / "train",
                       num_workers=args.num_workers, gpu=args.gpu, cpus_per_worker=cpw, log_every=args.log_every,
                       data_timeout=args.data_timeout, max_failures=args.max_failures, shuffle=not args.no_shuffle,
                       data_mode=data_mode)
    activate(ctx, sys.stdout)
    # Tune saves the experiment's state at most this often: a trial that finished stays finished after the
    # driver dies (a later save window would re-run it; its finished MLflow run would then only be re-reported).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    from .sweep_tune import fit_trials

    status = "FAILED"
    with Sigterm() as stop:
        try:
            trials = fit_trials(ctx, folder, concurrent, resume=bool(args.resume))
            unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
            if unfinished:
                raise KeyboardInterrupt(f"{len(unfinished)} trial(s) unfinished")
            rows = [row_of(ctx, t) for t in trials]
            report(ctx, rows, folder)
            status = "FINISHED" if any(r.state == "complete" for r in rows) else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            close_unfinished(ctx)
            print(f"sweep {name} interrupted; continue it with --resume {name} (same --runs-dir)", file=sys.stderr)
            return 128 + (signal.SIGTERM if stop.received else signal.SIGINT)
        finally:
            try:
                Tracker(uri, parent).finish(status)
            except Exception as err:  # noqa: BLE001 - never hide the original error
                print(f"tracking: could not mark the sweep's MLflow run {parent} {status} ({err})", file=sys.stderr)
    if status == "FAILED":
        print(f"error: no trial of sweep {name} trained to the end; see the trials' errors above", file=sys.stderr)
        return 1
    print(f"sweep {name} finished; report in {folder / 'report'}; {ui_hint(uri)}")
    return 0


def check_objectives(spec: SweepSpec, validation: dict) -> None:
    """Validation objectives need a validation split that yields them (else no trial could be compared)."""
    metrics = [o.metric for o in spec.objectives]
    if not validation and any(m.startswith("val/") for m in metrics):
        raise ConfigError("the objectives are validation metrics but the dataset's validation split has fewer than "
                          "2 paired slices; prepare a validation split (radiogen prep --split) or raise --val-size")
    if "val/map_quality" in metrics and not validation.get("map"):
        raise ConfigError("objective val/map_quality needs 3+ validation subjects with nodules; prepare more "
                          "subjects or choose another objective")


def read_state(folder: Path) -> dict:
    path = folder / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"--resume: no sweep at {folder} (sweep.json missing); give the name of a sweep started "
                          f"with the same --runs-dir")
    return json.loads(path.read_text())


def write_state(folder: Path, state: dict) -> None:
    tmp = folder / "sweep.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(folder / "sweep.json")


def reopen(uri: str, run_id: str) -> None:
    """A resumed sweep's parent run (KILLED when its driver was stopped) runs again."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    if client.get_run(run_id).info.status != "RUNNING":
        with_retry(lambda: client.update_run(run_id, status="RUNNING"), "reopen run")


def parent_params(spec: SweepSpec, overrides: tuple[str, ...], data: Path, args: argparse.Namespace, cpw: float,
                  concurrent: int) -> dict:
    space = {p.key: (f"choice{list(p.choices)}" if p.kind == "choice" else f"{p.kind}[{p.low}, {p.high}]")
                    + (f" when {dict(p.when)}" if p.when else "") for p in spec.space}
    return flatten("sweep", {
        "file": spec.path, "experiment": spec.experiment, "mode": spec.mode, "max_steps": spec.max_steps,
        "report_every": spec.report_every, "trials": spec.trials, "seed": spec.seed,
        "objectives": ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives),
        "asha": asdict(spec.asha) if spec.asha else "off", "set": {**spec.fixed}, "overrides": " ".join(overrides),
        "space": space, "grid": {"variants": spec.grid.variants, "seeds": list(spec.grid.seeds),
                                  "reference": spec.grid.reference} if spec.grid else "none"}) | {
        "run.data": str(data), "run.num_workers": args.num_workers, "run.cpus_per_worker": cpw,
        "run.max_concurrent": concurrent, "run.gpu": args.gpu}


def close_unfinished(ctx: SweepContext) -> None:
    """Children still RUNNING when the driver stops are marked KILLED (a resume re-attaches them)."""
    from mlflow import MlflowClient

    client = MlflowClient(ctx.uri)
    try:
        for run in client.search_runs([ctx.exp_id], f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}' and "
                                                    f"attributes.status = 'RUNNING'"):
            client.set_terminated(run.info.run_id, "KILLED")
    except Exception as err:  # noqa: BLE001
        print(f"tracking: unfinished trial runs not marked KILLED ({err})", file=sys.stderr)


def row_of(ctx: SweepContext, trial) -> TrialRow:
    last = trial.last_result or {}
    step = int(last.get("step") or 0)
    state = "failed" if trial.status == "ERROR" else "complete" if step >= ctx.spec.max_steps else "pruned"
    values, seed, variant = trial_values(ctx.spec, trial.config)
    run = find_run(ctx.uri, ctx.exp_id, trial_run_name(ctx.name, trial.trial_id))
    return TrialRow(trial.trial_id, state, step, {o.metric: last.get(o.metric) for o in ctx.spec.objectives},
                    values, variant, seed, run.info.run_id if run else None)


def report(ctx: SweepContext, rows: list[TrialRow], folder: Path) -> None:
    """Leaderboard, best config, grid table, Optuna plots: written to folder/report, logged to the parent run."""
    spec, out = ctx.spec, folder / "report"
    out.mkdir(exist_ok=True)
    header, body = leaderboard_table(rows, spec)
    files = [write_csv(out / "leaderboard.csv", header, body)]
    (out / "leaderboard.md").write_text(markdown(header, body))
    files.append(out / "leaderboard.md")
    print(f"\nleaderboard of sweep {ctx.name}:\n{markdown(header, body)}")
    if spec.mode == "grid":
        gh, gb = grid_table(rows, spec)
        write_csv(out / "grid_table.csv", gh, gb)
        (out / "grid_table.md").write_text(markdown(gh, gb))
        files += [out / "grid_table.csv", out / "grid_table.md"]
        print(f"ablation grid ({len(spec.grid.seeds)} seeds; Δ = variant - {spec.grid.reference}, paired by seed, "
              f"95% t-interval; * = excludes 0):\n{markdown(gh, gb)}")
    top = best(rows, spec)
    if spec.mode == "grid":
        chosen = best_variant(rows, spec)
        top = next((r for r in rank(rows, spec) if r.variant == chosen and r.state == "complete"), None)
    if top is not None:
        trial = {"variant": top.variant, "seed": top.seed} if spec.mode == "grid" else top.values
        cfg = config_of(ctx, trial)
        scores = ", ".join(f"{o.metric}={top.metrics[o.metric]:.4g}" for o in spec.objectives)
        text = (f"# Best trial {top.trial_id} of sweep {ctx.name} ({scores})"
                + (f", variant {top.variant}" if top.variant else f": {describe(top.values)}")
                + f"\n# Train it with: radiogen train --config best_config.yaml --data {ctx.inputs.data}\n")
        (out / "best_config.yaml").write_text(text + dump_yaml(cfg))
        files.append(out / "best_config.yaml")
        print(f"best: trial {top.trial_id} ({scores}); config in {out / 'best_config.yaml'}")
    else:
        print("best: no trial completed its full budget with finite objectives; no best config written")
    if spec.mode == "search":
        import optuna

        study = optuna.load_study(study_name=ctx.name, storage=f"sqlite:///{folder / 'optuna.db'}")
        written, skipped = optuna_plots(study, spec, out)
        files += written
        for reason in skipped:
            print(f"plot skipped: {reason}")
    steps = sum(r.step for r in rows)
    summary = {"name": ctx.name, "mode": spec.mode, "max_steps": spec.max_steps, "trial_steps": steps,
               "full_budget_steps": len(rows) * spec.max_steps, "best": top.trial_id if top else None,
               "parent_run_id": ctx.parent_run_id, "trials": [asdict(r) for r in rows]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    files.append(out / "summary.json")
    print(f"compute: {steps} trial-steps of {len(rows) * spec.max_steps} for every trial to the end "
          f"({sum(r.state == 'pruned' for r in rows)} pruned, {sum(r.state == 'failed' for r in rows)} failed)")
    tracker = Tracker(ctx.uri, ctx.parent_run_id)
    tracker.log_records([{"step": 0, "metrics": {"sweep/trial_steps": steps, **{
        f"best/{o.metric}": top.metrics[o.metric] for o in spec.objectives if top is not None}}}])
    for f in files:
        tracker.log_artifact(f, "sweep")


def best_variant(rows: list[TrialRow], spec: SweepSpec) -> str | None:
    """The grid variant with the best mean of the first objective over its complete seeds."""
    o = spec.objectives[0]
    means = {}
    for v in spec.grid.variants:
        vals = [r.metrics[o.metric] for r in rows if r.variant == v and r.state == "complete"
                and isinstance(r.metrics.get(o.metric), float) and math.isfinite(r.metrics[o.metric])]
        if vals:
            means[v] = sum(vals) / len(vals)
    if not means:
        return None
    return (min if o.mode == "min" else max)(means, key=means.get)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

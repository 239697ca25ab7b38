"""`radiogen sweep` / `python -m ray_jobs.sweep`: many trainings as Ray Tune trials, compared in MLflow.

The sweep file (ablations/sweep_*.yaml; format in radiogen/sweep_file.py and docs/sweeps.md) names a base
experiment and either a search space (mode: search - Optuna's TPE, seeded, proposes configurations; ASHA
stops hopeless ones early on a validation metric; several objectives give a Pareto front) or an ablation grid
(mode: grid - variants x seeds, each to the full budget, reported as mean ± std per variant and the paired
difference to the reference with a 95% interval). Every trial is a training run of the shared loop, as a nested
MLflow run under the sweep's parent run.

A trial of one worker whose data fits in memory trains directly in its Tune trial's process (ray_jobs/direct_trial.py:
no Ray Train or Ray Data start-up, so trials fill every CPU, one torch thread per CPU); more workers or streamed
data make each trial a Ray Train run (--trial-mode says which). The driver does once what every trial shares:
the config, the dataset's fingerprint, the code version, the training split (read once into Ray's object store,
or materialised once as Ray Datasets).

Checked before any trial starts (exit 2): the sweep file and search space (unknown parameters, empty choices,
reversed bounds, conditions no variant satisfies, values the config rejects), the dataset, the tracking store
and the cluster's resources. Trials stopped by ASHA reach Optuna as PRUNED and their MLflow runs end KILLED.
When the driver dies, `--resume NAME` continues: finished trials are kept, unfinished ones resume from their
checkpoints, the same MLflow parent run is reused. At the end the leaderboard is printed; it, the best config
(accepted by `radiogen train --config`), the grid table and Optuna's plots are artifacts of the parent run, and
the best trial carries the MLflow pyfunc model (every trial carries its weights). Ray's own logs go to files
whose path is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from radiogen import schema
from radiogen.config import ConfigError, dump_yaml, set_values
from radiogen.data import DatasetMismatch
from radiogen.evaluation.truth_table import TruthError
from radiogen.search_space import SearchSpaceError, SweepSpec, base_data, trial_config
from radiogen.sweep_file import load_sweep

from .cli import add_sweep_arguments as add_arguments
from .quiet import quiet_logs, quiet_mlflow, ray_log_dir
from .ray_train import training_datasets
from .resources import (RAY_DATA_CPUS, TRIAL_DRIVER_CPUS, ResourceMismatch, TrialPlan, choose_data_mode, cluster_size,
                        connect_ray, plan_trials)
from .run_inputs import RunIdentity, TooFewSubjects, TruthFiles, read_inputs, resolve_config
from .signals import Sigterm
from .sweep_events import activate, describe
from .sweep_report import TrialRow, best, grid_table, leaderboard_table, markdown, optuna_plots, rank, write_csv
from .sweep_trial import SWEEP_TAG, SweepContext, config_of, trial_run_name, trial_values
from .tracking import (RUN_NAME, RunFinished, TrackingUnavailable, Tracker, check_tracking, default_tracking_uri,
                       experiment_id, find_run, flatten, open_run, ui_hint)


def sweep_dir(runs_dir: Path, name: str) -> Path:
    """The sweep's own folder: sweep.json, optuna.db, Tune's state (tune/), Train-path checkpoints, report/."""
    return runs_dir / "sweeps" / name


def run(args: argparse.Namespace) -> int:
    """`radiogen sweep`: check the sweep file (or the state of the sweep to resume), the dataset and the tracking
    store (exit 2, before the sweep's folder exists), then run the sweep with its logs in that folder."""
    runs_dir = Path(args.runs_dir).resolve()
    try:
        if args.resume:
            # A resumed sweep keeps the file, --set values and dataset it started with (sweep.json), whatever is given.
            name, state = args.resume, read_state(sweep_dir(runs_dir, args.resume))
            spec, overrides = SweepSpec.from_dict(state["spec"]), tuple(state["overrides"])
            data, experiment = Path(state["data"]), state["experiment"]
            # Only the tracking URI may change on resume: the server may have moved since the sweep started.
            uri = default_tracking_uri(runs_dir, args.tracking_uri) if args.tracking_uri else state["uri"]
        else:
            if not args.config or not args.data:  # not required by argparse: --resume takes them from sweep.json
                raise ConfigError("--config and --data are required (unless --resume NAME continues a sweep)")
            spec = load_sweep(args.config, args.overrides, args.mode, args.trials, args.max_steps, args.variants,
                              args.seeds)
            overrides, data, experiment = tuple(args.overrides), Path(args.data).resolve(), args.experiment
            name = args.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            if not RUN_NAME.fullmatch(name):
                raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only")
            # Same name, same Tune folder, Optuna study (loaded if it exists) and MLflow parent: the trials would mix.
            if (sweep_dir(runs_dir, name) / "sweep.json").exists():
                raise ConfigError(f"sweep {name!r} exists in {sweep_dir(runs_dir, name)}; continue it with --resume "
                                  f"{name} or choose a new --name")
            uri = default_tracking_uri(runs_dir, args.tracking_uri)
        manifest = schema.read_manifest(data)
        # The base config without trial values, checked against the dataset once for every trial.
        base = resolve_config(trial_config(spec, {}, overrides), manifest)
        # Trials build their configs from this plain data: data.n_genes: null is filled from the dataset here, once.
        base_dict = set_values(base_data(spec, overrides), {"data.n_genes": base.data.n_genes})
        if not args.resume:  # a resumed sweep's objectives passed this when it started
            check_metric_names(spec, base, truth=bool(args.truth))
        check_tracking(uri)
        schema.verify_dataset(data)  # re-hashes every file: a damaged copy exits 2 before any trial trains on it
    except (SearchSpaceError, ConfigError, schema.SchemaError, DatasetMismatch, TrackingUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    folder = sweep_dir(runs_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    # Tune's, Optuna's and MLflow's log records go to the sweep's folder; the terminal gets one line per event.
    with quiet_logs(folder / "driver.log"):
        return sweep(args, name, spec, overrides, data, experiment, uri, manifest, base, base_dict, folder, runs_dir)


def choose_trial_mode(requested: str, num_workers: int, data_mode: str) -> bool:
    """True for direct trials: `auto` takes them for one worker with in-memory data; raise ConfigError when
    `direct` is asked for a trial that cannot be one."""
    possible = num_workers == 1 and data_mode == "memory"
    if requested == "direct" and not possible:
        raise ConfigError(f"--trial-mode direct trains one worker with its data in memory; this sweep has "
                          f"--num-workers {num_workers} and data mode {data_mode} - use --trial-mode auto or train")
    return requested == "direct" or (requested == "auto" and possible)


def sweep(args: argparse.Namespace, name: str, spec: SweepSpec, overrides: tuple[str, ...], data: Path,
          experiment: str, uri: str, manifest: dict, base, base_dict: dict, folder: Path, runs_dir: Path) -> int:
    """The sweep once its inputs are checked: resources, parent run, trials, report."""
    # Resources, inputs and objectives are checked before the parent run opens: a refusal leaves no MLflow run.
    quiet_mlflow()  # before MLflow or Optuna is first used here: their console handlers are replaced now
    try:
        connect_ray(args.address, log_to_driver=False)  # the trials' output stays in Ray's log files
        cpus, gpus = cluster_size()
        if args.resume:  # Tune restores its concurrency limit: the trials keep the plan made for it
            state = read_state(folder)
            plan = TrialPlan(**state["plan"])
            # The rest of the driver (params, resources line, trial context) reads args: give it the saved values.
            args.num_workers, args.gpu, args.data_mode = state["num_workers"], state["gpu"], state["data_mode"]
            data_mode = state["data_mode"]
        else:
            data_mode = choose_data_mode(args.data_mode, manifest, args.num_workers)
            direct = choose_trial_mode(args.trial_mode, args.num_workers, data_mode)
            plan = plan_trials(cpus, gpus, args.num_workers, args.cpus_per_worker, args.gpu, args.max_concurrent,
                               direct, base.data.image_size)
        # A resumed trial must score its objectives against the same truth as the trials before it.
        truth = TruthFiles(**state["truth"]) if args.resume else TruthFiles(args.truth, args.truth_programs,
                                                                            args.truth_partial)
        # Direct trials decode the training split the driver reads once; Train-path trials get Ray Datasets below.
        inputs = read_inputs(data, manifest, base.data.image_size, args.val_size, train_split=plan.direct,
                             truth=truth)
        check_objectives(spec, inputs.validation)  # needs the validation split read: the last check before a run
    except (ResourceMismatch, TooFewSubjects, ConfigError, TruthError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # spec.trials counts search trials only; a grid runs every variant with every seed.
    n_trials = spec.trials if spec.mode == "search" else len(spec.grid.variants) * len(spec.grid.seeds)
    print(f"sweep {name}: {spec.mode} over {Path(spec.experiment).name}, {n_trials} trial(s) of {spec.max_steps} "
          f"steps, objective(s) {', '.join(f'{o.metric} ({o.mode})' for o in spec.objectives)}"
          + (f", ASHA grace {spec.asha.grace_period} x{spec.asha.reduction_factor}" if spec.mode == "search"
             and spec.asha else ""))
    print(resources_line(plan, args.num_workers, args.gpu, cpus, gpus))
    print(f"logs: Tune and Optuna in {folder / 'driver.log'}, trials in {ray_log_dir()}")

    # A sqlite store would put artifacts in ./mlruns of the working directory: keep them beside the store instead.
    artifact_root = runs_dir / "mlartifacts" if uri.startswith("sqlite:") else None
    identity = RunIdentity.of(data)  # fingerprint and code version computed once, shared by every trial's tags
    try:
        exp_id = experiment_id(uri, experiment, artifact_root)  # once: trials find their runs by name in it
        # Found by name: a resumed sweep re-attaches its parent run (shown RUNNING again), never a second one.
        parent = open_run(uri, experiment, name, parent_params(spec, overrides, data, args, plan),
                          {SWEEP_TAG: name, "radiogen.sweep_role": "parent", "radiogen.ablation": base.name,
                           "radiogen.code_version": identity.code_version,
                           "radiogen.dataset_fingerprint": identity.fingerprint}, artifact_root)
    except RunFinished:
        print(f"error: sweep {name!r} finished already; its report is in {folder / 'report'}", file=sys.stderr)
        return 2
    # Written once the parent run exists, and never rewritten: a resume keeps the plan the sweep started with.
    if not args.resume:
        write_state(folder, {"spec": spec.to_dict(), "overrides": list(overrides), "data": str(data),
                             "experiment": experiment, "uri": uri, "parent_run_id": parent, "plan": asdict(plan),
                             "num_workers": args.num_workers, "gpu": args.gpu, "data_mode": data_mode,
                             "truth": asdict(truth)})
    print(f"sweep {name} (MLflow parent run {parent}) tracking at {uri}")
    # Train-path trials share Ray Datasets materialised once here rather than each re-reading the parquet.
    datasets = None if plan.direct else training_datasets(inputs.files, not args.no_shuffle, data_mode)
    ctx = SweepContext(name=name, spec=spec, base=base_dict, inputs=inputs, identity=identity, uri=uri,
                       experiment=experiment, exp_id=exp_id, parent_run_id=parent, artifact_root=artifact_root,
                       train_storage=folder / "train", plan=plan, num_workers=args.num_workers, gpu=args.gpu,
                       log_every=args.log_every, data_timeout=args.data_timeout, max_failures=args.max_failures,
                       shuffle=not args.no_shuffle, data_mode=data_mode, datasets=datasets,
                       log_models=args.log_models)
    # SweepEvents is pickled into Tune's state with the sweep's name only: it looks up this context and prints to
    # this stdout, the terminal (fit_trials sends Tune's own output to driver.log).
    activate(ctx, sys.stdout)
    # Tune saves the experiment's state at most this often: a trial that finished stays finished after the
    # driver dies (a later save window would re-run it; its finished MLflow run would then only be re-reported).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    from .sweep_tune import fit_trials

    status = "FAILED"
    with Sigterm() as stop:
        try:
            trials = fit_trials(ctx, folder, plan.concurrent, resume=bool(args.resume))
            unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
            # Tune's SIGINT handler ends fit() normally, trials left unfinished: treat that as the interrupt it was.
            if unfinished:
                raise KeyboardInterrupt(f"{len(unfinished)} trial(s) unfinished")
            rows = [row_of(ctx, t) for t in trials]
            report(ctx, rows, folder)
            # No trial trained its full budget: there is no best config, so the sweep counts as FAILED (exit 1).
            status = "FINISHED" if any(r.state == "complete" for r in rows) else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"  # the finally below runs before the return
            close_unfinished(ctx)
            print(f"sweep {name} interrupted; continue it with --resume {name} (same --runs-dir)", file=sys.stderr)
            return stop.exit_code()
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


def resources_line(plan: TrialPlan, num_workers: int, gpu: bool, cpus: float, gpus: float) -> str:
    """What the trials take, and why (printed before any trial starts)."""
    cluster = f"cluster {cpus:g} CPUs, {gpus:g} GPUs"
    # Fewer threads than whole CPUs reserved: the small-image rule of resources.worker_threads chose one thread.
    small = " (small images: one thread is faster)" if plan.threads < math.floor(plan.cpus + 1e-9) else ""
    if plan.direct:
        return (f"resources: {plan.concurrent} trial(s) at a time, each one process training directly (direct "
                f"trials: one worker, data in memory) with {plan.cpus:g} CPU{' + 1 GPU' if gpu else ''} and "
                f"{plan.threads} torch thread(s){small}; {cluster}")
    left = cpus - plan.concurrent * (num_workers * plan.cpus + TRIAL_DRIVER_CPUS)
    return (f"resources: {plan.concurrent} trial(s) at a time, each a Ray Train run of {num_workers} worker(s) x "
            f"{plan.cpus:g} CPU{' + 1 GPU' if gpu else ''} ({plan.threads} torch thread(s) each{small}); {cluster}; "
            f"{left:g} CPU left for Ray Data (at least {RAY_DATA_CPUS:g})")


def check_metric_names(spec: SweepSpec, base, truth: bool) -> None:
    """Every objective (the first is also ASHA's metric) must be a metric the trials report: a misspelt name is
    refused here, before Ray starts, rather than after the first trial has trained."""
    import difflib

    from radiogen.losses import GANLoss

    from .loop import validation_metric_names

    always, with_truth = validation_metric_names()
    reported = always | GANLoss(base.loss).term_names(base.generator.arch)
    for metric in (o.metric for o in spec.objectives):
        if metric in reported or (truth and metric in with_truth):
            continue
        if metric in with_truth:
            raise ConfigError(f"objective {metric} is measured against the cohort's truth: give it with --truth")
        close = difflib.get_close_matches(metric, sorted(reported | with_truth), n=1)
        raise ConfigError(f"objective {metric!r} is not a metric the trials report"
                          + (f"; did you mean {close[0]}?" if close else "")
                          + f" They report {', '.join(sorted(reported))}; with --truth also "
                            f"{', '.join(sorted(with_truth))}")


def check_objectives(spec: SweepSpec, validation: dict) -> None:
    """Validation objectives need a validation split that yields them (else no trial could be compared)."""
    metrics = [o.metric for o in spec.objectives]
    if not validation and any(m.startswith("val/") for m in metrics):
        raise ConfigError("the objectives are validation metrics but the dataset's validation split has fewer than "
                          "2 paired slices; prepare a validation split (radiogen prep --split) or raise --val-size")
    map_metrics = [m for m in metrics if m in ("val/map_objective", "val/map_agreement", "val/map_auprc")]
    if map_metrics and not validation.get("map"):
        raise ConfigError(f"objective {map_metrics[0]} needs 3+ validation subjects with nodules; prepare more "
                          f"subjects or choose another objective")
    # validation["map"] exists from here on for map objectives: the check above refused them without it.
    if "val/map_auprc" in metrics and "links" not in validation["map"]:
        raise ConfigError("objective val/map_auprc scores the map against known links: give the cohort's truth "
                          "with --truth (or use val/map_objective, which falls back to the truth-free agreement)")
    response = [m for m in metrics if m.startswith("val/response/") or m == "val/program_response"]
    if response and not validation.get("map"):
        raise ConfigError(f"objective {response[0]} needs 3+ validation subjects with nodules; prepare more "
                          f"subjects or choose another objective")
    if response and "programs" not in validation["map"]:  # the check above made validation["map"] exist
        raise ConfigError(f"objective {response[0]} compares the nodules with the subjects' true programs: give the "
                          f"cohort's truth with --truth")
    floored = [m for m in metrics if m in ("val/frechet_floor", "val/frechet_over_floor")]
    if floored and not validation.get("frechet_floor"):
        raise ConfigError(f"objective {floored[0]} needs the realism floor, the Fréchet distance between the "
                          f"validation and training splits' real nodules: each needs 2+ nodule slices")


def read_state(folder: Path) -> dict:
    """The saved state of a sweep to resume; ConfigError when there is none or an older radiogen wrote it."""
    path = folder / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"--resume: no sweep at {folder} (sweep.json missing); give the name of a sweep started "
                          f"with the same --runs-dir")
    state = json.loads(path.read_text())
    if "plan" not in state:
        raise ConfigError(f"--resume: {path} was written by an older radiogen (no trial plan); start a new sweep")
    return state


def write_state(folder: Path, state: dict) -> None:
    """sweep.json via a temporary file and a rename: a driver killed mid-write leaves no half-written state
    (which would make the sweep neither resumable nor startable again under its name)."""
    tmp = folder / "sweep.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(folder / "sweep.json")


def parent_params(spec: SweepSpec, overrides: tuple[str, ...], data: Path, args: argparse.Namespace,
                  plan: TrialPlan) -> dict:
    """The parent run's MLflow params: the sweep file as read (the space one readable string per parameter, e.g.
    `loguniform[10, 300] when {...}`) and how the trials share the cluster."""
    space = {p.key: (f"choice{list(p.choices)}" if p.kind == "choice" else f"{p.kind}[{p.low}, {p.high}]")
                    + (f" when {dict(p.when)}" if p.when else "") for p in spec.space}
    return flatten("sweep", {
        "file": spec.path, "experiment": spec.experiment, "mode": spec.mode, "max_steps": spec.max_steps,
        "report_every": spec.report_every, "trials": spec.trials, "seed": spec.seed,
        "objectives": ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives),
        "asha": asdict(spec.asha) if spec.asha else "off", "set": {**spec.fixed}, "overrides": " ".join(overrides),
        "space": space, "grid": {"variants": spec.grid.variants, "seeds": list(spec.grid.seeds),
                                  "reference": spec.grid.reference} if spec.grid else "none"}) | {
        "run.data": str(data), "run.num_workers": args.num_workers, "run.cpus_per_worker": plan.cpus,
        "run.max_concurrent": plan.concurrent, "run.gpu": args.gpu, "run.trial_mode": "direct" if plan.direct
        else "ray-train", "run.torch_threads": plan.threads}


def close_unfinished(ctx: SweepContext) -> None:
    """Children still RUNNING when the driver stops are marked KILLED (a resume re-attaches them)."""
    from mlflow import MlflowClient

    client = MlflowClient(ctx.uri)
    try:  # a trial killed mid-training cannot close its own run; the driver is the last one that can
        for run in client.search_runs([ctx.exp_id], f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}' and "
                                                    f"attributes.status = 'RUNNING'"):
            client.set_terminated(run.info.run_id, "KILLED")
    except Exception as err:  # noqa: BLE001 - the interrupt's exit must not turn into a tracking traceback
        print(f"tracking: unfinished trial runs not marked KILLED ({err})", file=sys.stderr)


def row_of(ctx: SweepContext, trial) -> TrialRow:
    """A leaderboard row from Tune's Trial: its state, last reported metrics and values, and its MLflow run."""
    last = trial.last_result or {}
    step = int(last.get("step") or 0)
    # Tune ends a trial ASHA stopped as TERMINATED too: only its last step tells it from a complete one.
    state = "failed" if trial.status == "ERROR" else "complete" if step >= ctx.spec.max_steps else "pruned"
    values, seed, variant = trial_values(ctx.spec, trial.config)
    run = find_run(ctx.uri, ctx.exp_id, trial_run_name(ctx.name, trial.trial_id))  # Tune never saw the run id
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
    # A grid's best is a variant (best mean over its seeds), not a lucky seed: take that variant's top-ranked trial.
    if spec.mode == "grid":
        chosen = best_variant(rows, spec)
        top = next((r for r in rank(rows, spec) if r.variant == chosen and r.state == "complete"), None)
    if top is not None:
        trial = {"variant": top.variant, "seed": top.seed} if spec.mode == "grid" else top.values  # its Tune config
        cfg = config_of(ctx, trial)
        scores = ", ".join(f"{o.metric}={top.metrics[o.metric]:.4g}" for o in spec.objectives)
        text = (f"# Best trial {top.trial_id} of sweep {ctx.name} ({scores})"
                + (f", variant {top.variant}" if top.variant else f": {describe(top.values)}")
                + f"\n# Train it with: radiogen train --config best_config.yaml --data {ctx.inputs.data}\n")
        (out / "best_config.yaml").write_text(text + dump_yaml(cfg))
        files.append(out / "best_config.yaml")
    # The best trial's MLflow model (seconds of file and database writes) is logged while the plots render.
    with ThreadPoolExecutor(1) as pool:
        model = pool.submit(log_best_model, ctx, top.run_id if top else None)
        if spec.mode == "search":
            import optuna

            # The searcher wrote every trial to optuna.db as Tune ran: the plots read the study back from there.
            study = optuna.load_study(study_name=ctx.name, storage=f"sqlite:///{folder / 'optuna.db'}")
            written, skipped = optuna_plots(study, spec, out)
            files += written
            for reason in skipped:
                print(f"plot skipped: {reason}")
    if top is not None:
        print(f"best: trial {top.trial_id} ({scores}); config in {out / 'best_config.yaml'}{model.result()}")
    else:
        print("best: no trial completed its full budget with finite objectives; no best config written")
    steps = sum(r.step for r in rows)
    summary = {"name": ctx.name, "mode": spec.mode, "max_steps": spec.max_steps, "trial_steps": steps,
               "full_budget_steps": len(rows) * spec.max_steps, "best": top.trial_id if top else None,
               "parent_run_id": ctx.parent_run_id, "trials": [asdict(r) for r in rows]}
    # `radiogen demo` takes summary.json as the sign of a finished sweep: it is written after the other reports.
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    files.append(out / "summary.json")
    print(f"compute: {steps} trial-steps of {len(rows) * spec.max_steps} for every trial to the end "
          f"({sum(r.state == 'pruned' for r in rows)} pruned, {sum(r.state == 'failed' for r in rows)} failed)")
    tracker = Tracker(ctx.uri, ctx.parent_run_id)
    tracker.log_records([{"step": 0, "metrics": {"sweep/trial_steps": steps, **{
        f"best/{o.metric}": top.metrics[o.metric] for o in spec.objectives if top is not None}}}])
    for f in files:
        tracker.log_artifact(f, "sweep")


def log_best_model(ctx: SweepContext, run_id: str | None) -> str:
    """Log the best trial's MLflow pyfunc model over its weights (trials log weights only: a pyfunc model costs
    each trial seconds and megabytes); returns what to add to the printed line."""
    if ctx.log_models != "best" or run_id is None:
        return ""
    try:
        Tracker(ctx.uri, run_id).log_model_from_logged_weights()
    except Exception as err:  # noqa: BLE001 - the sweep's results stand without it
        return f"; its MLflow model was not logged ({err})"
    return f"; its MLflow model: runs:/{run_id}/generator_ema"


def best_variant(rows: list[TrialRow], spec: SweepSpec) -> str | None:
    """The grid variant with the best mean of the first objective over its complete seeds."""
    o = spec.objectives[0]
    means = {}
    for v in spec.grid.variants:
        # A failed seed or a NaN would make the mean undefined: average the complete, finite seeds only.
        vals = [r.metrics[o.metric] for r in rows if r.variant == v and r.state == "complete"
                and isinstance(r.metrics.get(o.metric), float) and math.isfinite(r.metrics[o.metric])]
        if vals:
            means[v] = sum(vals) / len(vals)
    if not means:
        return None
    return (min if o.mode == "min" else max)(means, key=means.get)


def main(argv: list[str] | None = None) -> int:
    from .quiet import quiet_mlflow_env

    quiet_mlflow_env()  # before MLflow is imported: `python -m` skips the radiogen command's main
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

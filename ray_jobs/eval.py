"""`radiogen eval` / `python -m ray_jobs.eval`: evaluate a trained generator on a prepared dataset (docs/design.md §5).

The model is an MLflow training run (`--run RUN_ID`: its weights-only `generator_ema_weights.pt`
artifact, else its latest checkpoint under --runs-dir) or a checkpoint (`--checkpoint PATH`). The
evaluation (radiogen.evaluation.pipeline) measures realism, conditioning, code structure, the
radiogenomic map and the classical pipeline on the training and the held-out subjects, fits every map
estimator (radiogen.evaluation.estimators) on the training subjects, and with `--truth` (a cohort's truth.json,
or a gene,program table with --truth-programs) scores each map against the known links. It writes OUT/report.md,
OUT/metrics.json and OUT/figures/*.png (atomically), and logs them with `eval/...` metrics to an
MLflow child run of the evaluated run (a run of experiment `radiogen-eval` for a bare checkpoint;
none with --no-mlflow).

Heavy packages are imported inside functions: the `radiogen` parser imports this module for
`add_arguments` only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

WEIGHTS_ARTIFACT = "generator_ema_weights.pt"  # logged beside the model by ray_jobs.tracking.Tracker.log_generator
EVAL_EXPERIMENT = "radiogen-eval"  # for a bare checkpoint, which has no training run to nest its eval run under


DEFAULT_ESTIMATORS = ("direct", "classical", "classical-k4", "classical-k8", "classical-k16", "regressor-lasso",
                      "regressor-kernel", "synthesis-correlation", "synthesis-intervention",
                      "synthesis-intervention-module", "synthesis-gradient")
"""Every map estimator (radiogen.evaluation.estimators.ESTIMATORS), named here so that `--help` stays light."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `radiogen eval` (argparse only)."""
    # Exactly one model; --baseline below takes either form (a path that exists is a checkpoint, else a run id).
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_ID", help="MLflow run id of a training run (the model to evaluate)")
    src.add_argument("--checkpoint", metavar="PATH",
                     help="a training checkpoint: a state.pt, its step_* folder, a run folder RUNS/<name> (its latest "
                          "checkpoint), or a weights-only generator_ema_weights.pt")
    p.add_argument("--data", required=True, help="prepared dataset folder (output of `radiogen prep`)")
    p.add_argument("--baseline", metavar="RUN_ID|PATH", default=None,
                   help="the MC-GAN baseline (run id or checkpoint path) for Fig. 3/4 and the comparison")
    p.add_argument("--truth", metavar="PATH", default=None,
                   help="known truth: the truth.json of the synthetic cohort the dataset was prepared from, or a CSV "
                        "gene,program with one row per true link (then also --truth-programs): link metrics of every "
                        "map, program response and probes")
    p.add_argument("--truth-programs", metavar="CSV", default=None,
                   help="with a gene,program --truth table: a CSV subject_id,<program>,... of per-subject program "
                        "values")
    p.add_argument("--truth-partial", action="store_true",
                   help="score a truth whose genes only partly match the dataset's (the overlap is printed)")
    p.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS),
                   help="comma-separated map estimators of the table (default: all)")
    p.add_argument("--map-backgrounds", type=int, default=4,
                   help="fixed backgrounds the generator's map estimators draw over (default 4)")
    p.add_argument("--out", default=None, help="report folder (default RUNS_DIR/eval/<run or checkpoint name>)")
    p.add_argument("--runs-dir", default="runs", help="where training runs keep checkpoints (default runs)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///RUNS_DIR/mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="write the report only (not with --run)")
    p.add_argument("--backgrounds", type=int, default=8, help="fixed backgrounds of the gene swap (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of backgrounds, noise, clusters, permutations (default 0)")
    p.add_argument("--n-perm", type=int, default=1000,
                   help="permutations of the retrieval and association-map tests (default 1000)")
    p.add_argument("--probe-perm", type=int, default=100, help="permutations of each linear-probe null (default 100)")
    p.add_argument("--clusters", type=int, default=3, help="KMeans clusters of the codes (default 3, as Fig. 4)")
    p.add_argument("--metagenes", type=int, default=8, help="metagenes of the classical pipeline (default 8)")
    p.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default 0: torch's default); the tiny model's small batches run "
                        "faster on 1 thread of a shared 2-core machine")


class EvalError(RuntimeError):
    """A problem with the command's inputs; the message says what to change."""


def _latest_state(folder: Path) -> Path | None:
    """The newest state.pt below a run folder (local: checkpoints/step_*, Ray: step_* directly)."""
    found = sorted(folder.glob("checkpoints/step_*/state.pt")) + sorted(folder.glob("step_*/state.pt"))
    # step_%08d folder names: the greatest name is the latest step.
    return max(found, key=lambda p: p.parent.name) if found else None


def checkpoint_file(path: str | Path) -> Path:
    """A state.pt / weights file from a path to it, to its step_* folder, or to a run folder."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "state.pt").is_file():
        return path / "state.pt"
    if path.is_dir() and (latest := _latest_state(path)) is not None:
        return latest
    raise EvalError(f"{path}: no checkpoint there (expected a state.pt, a step_* folder or a run folder with "
                    f"checkpoints/step_*/state.pt)")


def checkpoint_name(path: Path) -> str:
    """A readable name for a checkpoint: <run folder>-<step folder> where the layout shows them."""
    step = path.parent.name if path.name == "state.pt" else path.stem
    # --local: RUNS/<name>/checkpoints/step_*/state.pt; Ray Train: RUNS/ray/<name>/step_*/state.pt.
    run = path.parent.parent
    run = run.parent if run.name == "checkpoints" else run
    return f"{run.name}-{step}" if step.startswith("step_") and run.name else step


def load_model(path: Path, label: str, manifest: dict, source: str, device):
    """pipeline.Model from a training checkpoint (gene statistics from the dataset) or a weights-only file
    (gene names checked against the dataset, its own statistics)."""
    import torch

    from radiogen import schema
    from radiogen.checkpoint import load_generator, read_checkpoint
    from radiogen.config import ExperimentConfig, from_dict
    from radiogen.evaluation.pipeline import Model

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # a foreign file cannot run code here
    except Exception as err:  # noqa: BLE001 - torch raises pickle, zip and runtime errors for a foreign file
        raise EvalError(f"{source}: {path} is not a radiogen checkpoint or weights file ({str(err)[:200]})") from None
    # A weights-only file carries its gene names and statistics; a checkpoint carries neither (see below).
    if isinstance(payload, dict) and "state_dict" in payload and "gene_names" in payload:
        from .generator_model import load_weights

        module = load_weights(path)
        if list(module.gene_names) != list(manifest["gene_names"]):
            raise EvalError(f"{source}: the model was trained on other genes than the dataset's (or in another "
                            f"order); evaluate it on a dataset prepared with the same gene table")
        cfg = from_dict(ExperimentConfig, payload["config"])
        return Model(label, module.generator.to(device).eval(), cfg, module.stats, source)
    read_checkpoint(path)  # format check with a readable error
    G, cfg = load_generator(path, device)
    # The gene count is all a checkpoint can be checked by; it is read with the dataset's statistics.
    n_genes = len(manifest["gene_names"])
    if cfg.data.n_genes != n_genes:
        raise EvalError(f"{source}: the model takes {cfg.data.n_genes} genes but the dataset has {n_genes}; "
                        f"evaluate it on the dataset it was trained on")
    return Model(label, G, cfg, schema.gene_stats(manifest, cfg.data.gene_norm), source)


def resolve_run(client, run_id: str, runs_dir: Path, scratch: Path) -> tuple[Path, object]:
    """(weights or checkpoint file, MLflow run) of a training run: its weights artifact, else its latest
    checkpoint under runs_dir (a run still training, or one logged before the weights file existed)."""
    from .tracking import RUN_NAME_TAG, with_retry

    try:
        run = with_retry(lambda: client.get_run(run_id), f"get run {run_id}")
    except Exception as err:  # noqa: BLE001 - mlflow raises its own types for a missing run
        raise EvalError(f"MLflow run {run_id} not found at this tracking URI ({str(err)[:200]})") from None
    names = {a.path for a in with_retry(lambda: client.list_artifacts(run_id), "list artifacts")}
    if WEIGHTS_ARTIFACT in names:
        target = scratch / run_id  # the model's and the baseline's weights files have the same name
        target.mkdir(parents=True, exist_ok=True)
        local = with_retry(lambda: client.download_artifacts(run_id, WEIGHTS_ARTIFACT, str(target)),
                           "download weights")
        return Path(local), run
    name = run.data.tags.get(RUN_NAME_TAG) or run.info.run_name  # the tag is the run's folder name under runs_dir
    for folder in (runs_dir / name, runs_dir / "ray" / name):
        if (latest := _latest_state(folder)) is not None:
            return latest, run
    raise EvalError(f"MLflow run {run_id} ({name}) has no {WEIGHTS_ARTIFACT} artifact (training not finished?) and "
                    f"no checkpoint under {runs_dir / name} or {runs_dir / 'ray' / name}; pass --runs-dir of that "
                    f"training or --checkpoint PATH")


def _write_atomically(out: Path, fill):
    """Build the report folder with fill(folder) and publish it as `out` (a reader sees the old or the new
    one); returns what fill returns."""
    from radiogen.publish import building

    with building(out) as tmp:
        result = fill(tmp)
        for path in [tmp, *tmp.rglob("*")]:  # save_figure's mkstemp makes owner-only files; a report is shared
            path.chmod(0o755 if path.is_dir() else 0o644)
    return result


def _json_ready(value):
    """NaN and infinities as null, recursively: json.dumps would write NaN, which strict JSON readers refuse."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    """`radiogen eval`: every input checked (exit 2) before an eval run exists; then evaluate, publish, log."""
    import json
    import math
    import tempfile
    import time

    import torch

    from radiogen import schema
    from dataclasses import asdict

    from radiogen.evaluation.estimators import ESTIMATORS
    from radiogen.evaluation.pipeline import evaluate, load_data
    from radiogen.evaluation.report import estimator_lines, key_metrics, render_report
    from radiogen.evaluation.truth_table import load_truth

    from .tracking import TrackingUnavailable, Tracker, check_tracking, code_version, default_tracking_uri, with_retry

    start = time.perf_counter()
    runs_dir = Path(args.runs_dir).resolve()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    use_mlflow = not args.no_mlflow
    client = parent = uri = None  # stay None with --no-mlflow
    # Flags, estimators, dataset, truth, tracking store and models are checked before the (long) evaluation.
    try:
        # A --baseline that is no existing path is a run id, which only MLflow can resolve.
        if args.no_mlflow and (args.run or (args.baseline and not Path(args.baseline).exists())):
            raise EvalError("--no-mlflow cannot look up an MLflow run; pass checkpoints (--checkpoint, "
                            "--baseline PATH)")
        # At least 2 clusters: the silhouette of a single cluster is undefined.
        for flag, value, least in (("--backgrounds", args.backgrounds, 1), ("--n-perm", args.n_perm, 1),
                                   ("--probe-perm", args.probe_perm, 1), ("--clusters", args.clusters, 2),
                                   ("--metagenes", args.metagenes, 1), ("--map-backgrounds", args.map_backgrounds, 1)):
            if value < least:
                raise EvalError(f"{flag} must be at least {least}, got {value}")
        estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
        unknown = [e for e in estimators if e not in ESTIMATORS]
        if unknown:
            raise EvalError(f"--estimators: unknown {unknown}; choose from {', '.join(ESTIMATORS)}")
        data_dir = Path(args.data).resolve()
        manifest = schema.read_manifest(data_dir)
        truth = load_truth(args.truth, args.truth_programs) if args.truth else None  # checked against the data below
        if use_mlflow:
            from mlflow import MlflowClient

            uri = default_tracking_uri(runs_dir, args.tracking_uri)
            check_tracking(uri)  # an unreachable server exits 2 before any download
            client = MlflowClient(uri)

        def resolve(spec: str, is_run: bool, scratch: Path) -> tuple[Path, str, object]:
            """(file, description for the report, MLflow run or None) of a run id or a checkpoint path."""
            if is_run:
                path, mlrun = resolve_run(client, spec, runs_dir, scratch)
                return path, f"MLflow run {spec} ({mlrun.info.run_name})", mlrun
            path = checkpoint_file(spec).resolve()
            return path, str(path), None

        with tempfile.TemporaryDirectory(prefix="radiogen-eval-") as scratch:  # downloaded weights, once loaded
            path, source, parent = resolve(args.run or args.checkpoint, bool(args.run), Path(scratch))
            model = load_model(path, "model", manifest, source, device)
            baseline = None
            if args.baseline:
                b_path, b_source, _ = resolve(args.baseline, not Path(args.baseline).exists(), Path(scratch))
                baseline = load_model(b_path, "baseline", manifest, b_source, device)
        name = parent.info.run_name if parent is not None else checkpoint_name(path)  # names the report folder
        out = Path(args.out).resolve() if args.out else runs_dir / "eval" / name
        print(f"model: {source} ({model.cfg.generator.arch}); baseline: "
              f"{baseline.source if baseline else 'none'}; device {device}")
        # After the models: one that does not fit the dataset's genes fails before every slice is read.
        data = load_data(data_dir, args.backgrounds, args.seed)
        overlap = truth.check(data.gene_names, data.subjects, args.truth_partial) if truth is not None else None
        if overlap:
            print(f"truth: {overlap}")
    # ValueError: a checkpoint, weights or truth file of another format or version; OSError: a missing/unreadable one.
    except (EvalError, schema.SchemaError, TrackingUnavailable, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    eval_run = None
    if use_mlflow:  # opened only now: an input error above leaves no eval run behind
        eval_run = _open_eval_run(client, parent, name, data.fingerprint, runs_dir, uri, args, code_version())
        print(f"MLflow: eval run {eval_run} " + (f"(child of {parent.info.run_id})" if parent else
                                                f"in experiment {EVAL_EXPERIMENT}") + f" at {uri}")
        # A warning, not an error: evaluating a model on another cohort is a legitimate question.
        if parent is not None and parent.data.tags.get("radiogen.dataset_fingerprint") not in (None, data.fingerprint):
            print(f"warning: the run was trained on dataset {parent.data.tags['radiogen.dataset_fingerprint']} but "
                  f"this is dataset {data.fingerprint}; 'train' and 'heldout' below are this dataset's splits")
    status = "FAILED"
    # No except: an error in the evaluation itself is a bug and keeps its traceback; the run still ends FAILED.
    try:
        # The report's header, also in metrics.json: `radiogen demo` reuses a report only when model and baseline match.
        context = {"model": source, "baseline": baseline.source if baseline else "none",
                   "dataset": f"{data_dir} (fingerprint {data.fingerprint})",
                   "subjects": f"{len(data.subjects)} with genes and nodule slices",
                   "settings": f"{args.backgrounds} fixed backgrounds, seed {args.seed}, {args.n_perm} permutations "
                               f"(probes {args.probe_perm}), {args.clusters} code clusters, {args.metagenes} metagenes",
                   "truth": f"{args.truth} ({overlap})" if truth is not None else "none (real data: no ground truth)",
                   "map estimators": f"{', '.join(estimators)}; fitted on the training subjects, the generator's "
                                     f"over {args.map_backgrounds} backgrounds",
                   "MLflow run": f"{eval_run} at {uri}" if eval_run else "not logged",
                   "code version": code_version()}

        def fill(folder: Path):
            """Evaluate and write report, metrics and figures into the build folder that replaces `out`."""
            ev = evaluate(data, model, baseline, figures_dir=folder / "figures", truth=truth, n_perm=args.n_perm,
                          probe_perm=args.probe_perm, n_clusters=args.clusters, n_metagenes=args.metagenes,
                          seed=args.seed, device=device, estimators=estimators,
                          map_backgrounds=args.map_backgrounds,
                          log=lambda line: print(f"[{time.perf_counter() - start:5.0f} s] {line}", flush=True))
            (folder / "report.md").write_text(render_report(context=context, metrics=ev.metrics, figures=ev.figures,
                                                            top_links=ev.top_links, has_baseline=baseline is not None,
                                                            estimators=ev.estimators))
            (folder / "metrics.json").write_text(json.dumps(_json_ready(
                {"context": context, "metrics": ev.metrics, "figures": ev.figures, "top_links": ev.top_links,
                 "feature_names": ev.feature_names, "estimators": [asdict(r) for r in ev.estimators],
                 # The flags as parsed: what a caller (the demo) compares to reuse a report of the same request.
                 "args": {k: v if v is None or isinstance(v, (bool, int, float)) else str(v)
                          for k, v in vars(args).items()}}), indent=1)
                + "\n")
            return ev

        ev = _write_atomically(out, fill)
        metrics = ev.metrics
        if eval_run:
            # NaN (undefined) metrics stay in metrics.json as null and are not sent.
            finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
            tracker = Tracker(uri, eval_run)
            tracker.log_records([{"step": 0, "metrics": finite}])
            with_retry(lambda: client.log_artifacts(eval_run, str(out)), "log report")
            print(f"MLflow: {len(finite)} metrics and the report logged to run {eval_run}")
        status = "FINISHED"
    finally:
        if eval_run:
            try:
                with_retry(lambda: client.set_terminated(eval_run, status), "finish eval run")
            except Exception as err:  # noqa: BLE001 - never hide the original error
                print(f"tracking: could not mark eval run {eval_run} {status} ({err})", file=sys.stderr)
    for line in key_metrics(metrics):
        print(line)
    if ev.estimators:
        print(f"radiogenomic map estimators (fitted on {len(data.indices('train'))} training subjects; AUROC / AUPRC "
              f"against the truth, prevalence = a random ranking's AUPRC):")
        for line in estimator_lines(ev.estimators):
            print(line)
    print(f"report: {out / 'report.md'} ({time.perf_counter() - start:.0f} s)")
    return 0


def _open_eval_run(client, parent, name: str, fingerprint: str, runs_dir: Path, uri: str, args, version: str) -> str:
    """A child run of the evaluated run (its experiment), or a run of EVAL_EXPERIMENT for a bare checkpoint."""
    from mlflow.entities import Param

    from .tracking import experiment_id, with_retry

    if parent is not None:
        exp_id = parent.info.experiment_id
    else:
        sqlite = uri.startswith("sqlite:")  # artifacts beside the store, as training does
        exp_id = experiment_id(uri, EVAL_EXPERIMENT, runs_dir / "mlartifacts" if sqlite else None)
    # A new run per evaluation: evaluating one model with other settings keeps both.
    # No radiogen.run_name tag: training resumes the run carrying its name, and this is not that run.
    tags = {"radiogen.dataset_fingerprint": fingerprint, "radiogen.code_version": version, "radiogen.kind": "eval"}
    if parent is not None:
        tags |= {"mlflow.parentRunId": parent.info.run_id, "radiogen.eval_of": parent.info.run_id}
    run = with_retry(lambda: client.create_run(exp_id, run_name=f"eval-{name}", tags=tags), "create eval run")
    params = {"eval.data": str(Path(args.data).resolve()), "eval.model": args.run or args.checkpoint,
              "eval.baseline": args.baseline or "none", "eval.truth": args.truth or "none",
              "eval.estimators": args.estimators, "eval.map_backgrounds": args.map_backgrounds,
              "eval.backgrounds": args.backgrounds, "eval.seed": args.seed, "eval.n_perm": args.n_perm,
              "eval.probe_perm": args.probe_perm, "eval.clusters": args.clusters, "eval.metagenes": args.metagenes}
    with_retry(lambda: client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()]),
               "log params")
    return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    from .quiet import quiet_mlflow_env

    quiet_mlflow_env()  # before MLflow is imported: `python -m` skips the radiogen command's main
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

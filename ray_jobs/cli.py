"""The `radiogen` command: one subcommand per pipeline stage (`radiogen COMMAND --help` for each).

This is the outermost layer: it builds one parser from light argument-definition functions
(radiogen.cli, data_prep.cli and `add_train_arguments` below: argparse only) and imports the heavy
module of a command (torch, Ray, MLflow, SimpleITK) only when that command runs, named as
"module:function" in the parser's `handler` default.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `radiogen train`, which are exactly those of `python -m ray_jobs.train`."""
    p.add_argument("--config", required=True, help="experiment YAML, e.g. ablations/tiny.yaml")
    p.add_argument("--data", required=True, help="prepared dataset folder (output of `radiogen prep`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set loss.lambda_l1=50 (repeatable)")
    p.add_argument("--local", action="store_true", help="one process, no Ray: the debugger-friendly run")
    p.add_argument("--max-steps", type=int, default=None, help="shorthand for --set train.max_steps=N")
    p.add_argument("--name", default=None,
                   help="run name; reusing the name of an unfinished (failed, killed) run resumes it, the name of "
                        "a finished run is refused (default: <config name>-<time>)")
    p.add_argument("--val-every", type=int, default=100, help="steps between validations + figures (default 100)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    add_run_arguments(p)
    p.add_argument("--fail-at-step", type=int, default=None, help=argparse.SUPPRESS)  # fault-tolerance tests only


def add_run_arguments(p: argparse.ArgumentParser, per: str = "") -> None:
    """How a training runs and where it is tracked: flags shared by `radiogen train` and `radiogen sweep`."""
    p.add_argument("--num-workers", type=int, default=1, help=f"Ray Train workers (DDP ranks){per}, default 1")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (Ray path); --local uses CUDA when present")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs reserved per worker (default: min(1, (cluster CPUs - 1) / workers), leaving one "
                        "CPU for Ray Data; a sweep's direct trial: its CPUs, default one per trial)")
    p.add_argument("--experiment", default="radiogen", help="MLflow experiment name (default radiogen)")
    p.add_argument("--runs-dir", default="runs",
                   help="checkpoints, Ray results and (without a tracking URI) the sqlite tracking store "
                        "(default runs)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI, e.g. http://mlflow:5000 (default: MLFLOW_TRACKING_URI, else "
                        "sqlite:///RUNS_DIR/mlflow.db); give it explicitly under `ray job submit`, whose job "
                        "does not see the submitting shell's environment")
    p.add_argument("--log-every", type=int, default=10, help="steps per metric record (default 10)")
    p.add_argument("--val-size", type=int, default=32, help="validation slices (default 32)")
    p.add_argument("--truth", metavar="PATH", default=None,
                   help="known gene -> program links of the cohort (its truth.json, or a gene,program CSV with "
                        "--truth-programs): val/map_objective is then the AUPRC of the generator's intervention map "
                        "against them (default: none, the truth-free map agreement)")
    p.add_argument("--truth-programs", metavar="CSV", default=None,
                   help="with a gene,program --truth table: subject_id,<program>,... per-subject program values")
    p.add_argument("--truth-partial", action="store_true",
                   help="accept a truth whose genes only partly match the dataset's (default: refuse it)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="worker-group restarts from the last checkpoint (default 2)")
    p.add_argument("--data-timeout", type=float, default=300.0,
                   help="fail when the data pipeline yields no batch for this many seconds (default 300; 0 = "
                        "wait forever)")
    p.add_argument("--data-mode", choices=DATA_MODES, default="auto",
                   help="memory: each worker decodes its training shard once (into GPU memory with --gpu) and "
                        "shuffles indices per epoch; streaming: Ray Data re-shuffles and streams every epoch (for "
                        "datasets that do not fit); auto (default): memory when the shard fits, with the reason "
                        "printed")
    p.add_argument("--no-shuffle", action="store_true",
                   help="keep file order (debugging; makes --local and one Ray worker see the same batches)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")


DATA_MODES = ("auto", "memory", "streaming")  # radiogen.data.DATA_MODES (a test keeps them equal)
SWEEP_MODES = ("search", "grid")  # radiogen.search_space.SWEEP_MODES (a test keeps them equal)
TRIAL_MODES = ("auto", "direct", "train")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `radiogen sweep`, which are exactly those of `python -m ray_jobs.sweep`."""
    p.add_argument("--config", default=None,
                   help="sweep YAML, e.g. ablations/sweep_lambda_code.yaml (required unless --resume)")
    p.add_argument("--data", default=None,
                   help="prepared dataset folder (output of `radiogen prep`; required unless --resume)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the base experiment for every trial (repeatable)")
    p.add_argument("--trials", type=int, default=None, help="search mode: configurations to try (default: the file's)")
    p.add_argument("--mode", choices=SWEEP_MODES, default=None,
                   help="search (Optuna + ASHA over `space:`) or grid (`grid:` variants x seeds); default: the file's")
    p.add_argument("--max-steps", type=int, default=None,
                   help="steps per trial (default: the file's max_steps; its report_every is capped at it)")
    p.add_argument("--variants", default=None, metavar="NAME,...",
                   help="grid mode: run only these variants of the file (the reference among them)")
    p.add_argument("--seeds", default=None, metavar="SEED,...", help="grid mode: these seeds instead of the file's")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials at a time (default: direct trials one per CPU; Ray Train trials as many as fit at "
                        "the per-worker CPUs `radiogen train` would use; with this flag and no --cpus-per-worker, "
                        "trials are sized so that N fit)")
    p.add_argument("--name", default=None, help="sweep name (default: <sweep file name>-<time>)")
    p.add_argument("--resume", default=None, metavar="NAME",
                   help="continue the sweep NAME after its driver died: unfinished trials resume from their "
                        "checkpoints, finished ones are kept, the same MLflow parent run is reused")
    p.add_argument("--trial-mode", choices=TRIAL_MODES, default="auto",
                   help="direct: each trial trains in its own Tune process (one worker, data in memory: no Ray Train "
                        "or Ray Data start-up, trials fill every CPU); train: each trial is a Ray Train run; auto "
                        "(default): direct when --num-workers is 1 and the data fits in memory")
    p.add_argument("--log-models", choices=("best", "all"), default="best",
                   help="which trials log an MLflow pyfunc model beside their weights: the best one, at the sweep's "
                        "end (default), or all of them")
    add_run_arguments(p, per=" per trial")


def _command_parser(subparsers: argparse._SubParsersAction, name: str, module: str, help: str
                    ) -> argparse.ArgumentParser:
    """A subcommand whose description is `module`'s docstring, read from source (nothing heavy imported)."""
    from radiogen.cli import source_docstring

    return subparsers.add_parser(name, help=help, description=source_docstring(module),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = _command_parser(subparsers, "train", "ray_jobs.train",
                        "train on a prepared dataset (Ray Train DDP, or --local), tracked in MLflow")
    add_train_arguments(p)
    return p


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = _command_parser(subparsers, "sweep", "ray_jobs.sweep", "many trainings as Ray Tune trials: Optuna search "
                        "with ASHA early stopping, or an ablation grid (variants x seeds), compared in MLflow")
    add_sweep_arguments(p)
    return p


def add_module_parser(subparsers: argparse._SubParsersAction, name: str, module: str, help: str
                      ) -> argparse.ArgumentParser:
    """A subcommand whose flags `module.add_arguments` defines (such modules import only argparse-light packages
    at top level, so building the parser stays cheap)."""
    p = _command_parser(subparsers, name, module, help)
    importlib.import_module(module).add_arguments(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    from data_prep.cli import add_cohort_parser, add_prep_parser
    from radiogen.cli import register_cli as register_core

    parser = argparse.ArgumentParser(prog="radiogen", description=__doc__, epilog=WORKFLOW,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_cohort_parser(sub).set_defaults(handler="data_prep.cohort:_run")
    add_prep_parser(sub).set_defaults(handler="data_prep.prep:run_command")
    add_train_parser(sub).set_defaults(handler="ray_jobs.train:run")
    add_sweep_parser(sub).set_defaults(handler="ray_jobs.sweep:run")
    add_module_parser(sub, "eval", "ray_jobs.eval", "evaluate a trained generator: figures, realism, conditioning, "
                      "the radiogenomic map vs the classical pipeline (and vs truth), report"
                      ).set_defaults(handler="ray_jobs.eval:run")
    add_module_parser(sub, "bench", "ray_jobs.bench.run", "benchmark every stage (prep, ingest, train, sweep, GPU) "
                      "against its ceiling: JSON + a markdown table of ratios"
                      ).set_defaults(handler="ray_jobs.bench.run:run")
    add_module_parser(sub, "demo", "ray_jobs.demo", "the main job end to end on a synthetic cohort: cohort -> prep "
                      "-> sweep -> MC-GAN baseline -> eval, and what was learned"
                      ).set_defaults(handler="ray_jobs.demo:run")
    register_core(sub)
    return parser


WORKFLOW = """example workflow (each command's --help gives its options and their defaults):
  radiogen cohort --out runs/c --subjects 30 --seed 0 --matrix 128      # or bring TCIA DICOM + GEO genes to prep
  radiogen prep --cases runs/c/cases.csv --genes runs/c/genes.tsv --out runs/data --image-size 32
  radiogen train --config ablations/stable_tiny.yaml --data runs/data --set data.n_genes=null --max-steps 300
  radiogen sweep --config ablations/sweep_demo.yaml --data runs/data
  radiogen eval --run RUN_ID --data runs/data --truth runs/c/truth.json
  radiogen bench                                                        # every stage against its ceiling
  radiogen demo                                                         # all of the above, as `make demo`
"""


def handler_of(spec: str):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    from .quiet import quiet_mlflow_env

    quiet_mlflow_env()  # before any command imports MLflow
    args = build_parser().parse_args(argv)
    handler = handler_of(args.handler)
    from radiogen.config import ConfigError

    try:
        return handler(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""MLflow tracking for training runs: fail fast when the server is unreachable, retry transient errors.

Only rank 0 talks to MLflow, through `Tracker`. Every metric also lives in `metrics.jsonl` inside
each checkpoint, so a tracker outage never loses data: the next commit (or a resume) sends what the
server has not acknowledged yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import radiogen

T = TypeVar("T")

RUN_NAME_TAG = "radiogen.run_name"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""Names of runs and sweeps: they become folder names and MLflow tags."""
# Errors that retrying cannot fix (bad request, missing run): raise at once.
_PERMANENT = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST"}


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be used; the message says where it was looked for and what to do."""


class RunFinished(RuntimeError):
    """The named run finished already; it is not resumed (the message suggests a new --name)."""


def default_tracking_uri(runs_dir: str | Path, explicit: str | None = None) -> str:
    """`explicit` (--tracking-uri) when given, else MLFLOW_TRACKING_URI when set, else a sqlite store in the
    runs folder (open it with `mlflow ui`)."""
    if explicit is not None:
        if not explicit.strip():
            raise TrackingUnavailable("--tracking-uri is empty (was it `--tracking-uri \"$MLFLOW_TRACKING_URI\"` "
                                      "with the variable unset?); give a URI or leave the flag out")
        return explicit.strip()
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path(runs_dir).resolve() / 'mlflow.db')}"


def ui_hint(uri: str) -> str:
    """How to look at the runs of a tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    command = str(mlflow_bin) if mlflow_bin.is_file() else "mlflow"
    return f"open the tracking UI with: {command} ui --backend-store-uri {uri} --host 127.0.0.1"


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingUnavailable unless the tracking store answers (http) or can be created (sqlite)."""
    if uri.startswith(("http://", "https://")):
        try:
            health_url = f"{uri.rstrip('/')}/health"
            with urllib.request.urlopen(health_url, timeout=timeout) as resp:  # noqa: S310 - user's URI
                if resp.status == 200:
                    return
                problem = f"answered HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as err:
            problem = f"is unreachable ({getattr(err, 'reason', err)})"
        raise TrackingUnavailable(f"MLflow tracking server {uri} {problem}; start it (e.g. `mlflow server "
                                  f"--backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000`) or "
                                  f"unset MLFLOW_TRACKING_URI to use a local sqlite store")
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingUnavailable(f"cannot create the folder of the sqlite tracking store {uri}: {err}") from None
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"the folder of the sqlite tracking store {uri} is not writable")
        _create_sqlite_store(uri)
        return
    if uri.startswith("file:") or "://" not in uri:
        raise TrackingUnavailable(f"MLflow 3 refuses the plain file store ({uri}); use sqlite:///path/mlflow.db "
                                  f"or an http(s) tracking server")


def _create_sqlite_store(uri: str) -> None:
    """Create (and migrate) a sqlite store under an exclusive lock beside it: two commands started at once on a new
    store would otherwise both run MLflow's schema migration, and one of them fails."""
    import fcntl

    from mlflow import MlflowClient

    db = Path(uri.removeprefix("sqlite:///"))
    with open(db.with_name(f"{db.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this process dies
        MlflowClient(uri).search_experiments(max_results=1)  # opening the store creates and migrates it


def with_retry(fn: Callable[[], T], what: str, attempts: int = 5, first_wait: float = 0.5) -> T:
    """Call fn, retrying transient failures with exponential backoff; re-raise the last error."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - mlflow raises many types for network trouble
            if getattr(err, "error_code", None) in _PERMANENT or attempt == attempts - 1:
                raise
            wait = first_wait * 2**attempt
            print(f"tracking: {what} failed ({type(err).__name__}: {str(err)[:200]}); retrying in {wait:.1f}s")
            time.sleep(wait)
    raise AssertionError("unreachable")


def code_version() -> str:
    """git commit (+dirty) of the source tree when available, else the package version and a source hash."""
    root = Path(radiogen.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        digest = hashlib.sha256()
        for path in sorted(Path(radiogen.__file__).parent.rglob("*.py")):
            digest.update(path.read_bytes())
        return f"{radiogen.__version__}+src.{digest.hexdigest()[:12]}"


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return {prefix: value}


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
"""MLflow 3 opens an experiment without this tag in its GenAI view; with it, on runs, metrics and charts."""


def experiment_id(uri: str, experiment: str, artifact_root: Path | None) -> str:
    """The id of the MLflow experiment named `experiment`, created (artifacts under artifact_root) if missing, and
    marked as a model-training experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = with_retry(lambda: client.get_experiment_by_name(experiment), "get experiment")
    if exp is not None:
        if EXPERIMENT_KIND[0] not in exp.tags:
            with_retry(lambda: client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND), "tag experiment")
        return exp.experiment_id
    location = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
    return with_retry(lambda: client.create_experiment(experiment, artifact_location=location,
                                                       tags=dict([EXPERIMENT_KIND])), "create experiment")


def find_run(uri: str, exp_id: str, run_name: str) -> Any:
    """The MLflow run tagged with `run_name` (RUN_NAME_TAG) in the experiment, or None."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = with_retry(lambda: client.search_runs([exp_id], f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                                                  max_results=1), "search runs")
    return found[0] if found else None


def open_run(uri: str, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str],
             artifact_root: Path | None, parent_run_id: str | None = None) -> str:
    """Create the run, or re-attach to the unfinished (failed, killed, running) run of the same name (a
    resumed training); raise RunFinished for a finished one. With `parent_run_id` the run is created nested
    under that run (a sweep's trial under the sweep)."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    client = MlflowClient(uri)
    exp_id = experiment_id(uri, experiment, artifact_root)
    found = find_run(uri, exp_id, run_name)
    if found:
        info = found.info
        if info.status == "FINISHED":
            raise RunFinished(f"run {run_name!r} of experiment {experiment!r} finished already (MLflow run "
                              f"{info.run_id}); a finished run is not resumed - choose a new --name")
        if info.status != "RUNNING":  # a resumed run shows as running again until it ends
            with_retry(lambda: client.update_run(info.run_id, status="RUNNING"), "reopen run")
        return info.run_id
    nesting = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run = with_retry(lambda: client.create_run(exp_id, run_name=run_name,
                                               tags={**tags, **nesting, RUN_NAME_TAG: run_name}), "create run")
    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        with_retry(lambda chunk=items[i:i + 100]: client.log_batch(run.info.run_id, params=chunk), "log params")
    with_retry(lambda: client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()]), "log tags")
    return run.info.run_id


@dataclass(frozen=True)
class RunRequest:
    """A run to open (or re-attach by name): a sweep's driver makes one per Train-path trial and the trial's rank-0
    worker opens it, so that the worker, which logs anyway, is the only process of the trial that opens MLflow."""

    uri: str
    experiment: str
    name: str
    params: dict[str, Any]
    tags: dict[str, str]
    artifact_root: Path | None = None
    parent_run_id: str | None = None

    def open(self) -> str:
        return open_run(self.uri, self.experiment, self.name, self.params, self.tags, self.artifact_root,
                        self.parent_run_id)


class Tracker:
    """Rank 0's handle on one MLflow run."""

    def __init__(self, uri: str, run_id: str):
        from mlflow import MlflowClient

        self.uri, self.run_id = uri, run_id
        self.client = MlflowClient(uri)

    def last_step(self, key: str) -> int:
        """The highest step logged for `key` (-1 when none): where a resumed run continues logging."""
        history = with_retry(lambda: self.client.get_metric_history(self.run_id, key), "read metric history")
        return max((m.step for m in history), default=-1)

    def log_records(self, records: Iterable[dict[str, Any]]) -> None:
        """records: {"step": int, "metrics": {name: float}} each; sent in batches of <= 1000 values."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(k, float(v), now, int(r["step"])) for r in records for k, v in r["metrics"].items()]
        for i in range(0, len(values), 1000):
            with_retry(lambda chunk=values[i:i + 1000]: self.client.log_batch(self.run_id, metrics=chunk),
                       "log metrics")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with_retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), f"log artifact {path}")

    def log_weights(self, generator: Any, config: dict[str, Any], gene_names: list[str],
                    gene_stats: dict[str, Any]) -> None:
        """The final EMA generator as a weights-only file (what `radiogen eval --run` loads), with its config."""
        from radiogen.genes import GeneStats

        from . import generator_model as gm

        with tempfile.TemporaryDirectory(prefix="radiogen-weights-") as tmp:
            self.log_artifact(gm.save_weights(Path(tmp) / gm.WEIGHTS_FILE, generator, config, gene_names,
                                              GeneStats.from_dict(gene_stats)))
        with_retry(lambda: self.client.log_dict(self.run_id, config, "generator_ema_config.json"), "log config")

    def log_generator(self, generator: Any, config: dict[str, Any], gene_names: list[str],
                      gene_stats: dict[str, Any]) -> None:
        """The final EMA generator: the weights-only file (`log_weights`) and, over it, an MLflow pyfunc model that
        takes raw gene expression (ray_jobs/generator_model.py)."""
        self.log_weights(generator, config, gene_names, gene_stats)
        self.log_model_from_logged_weights()

    def log_model_from_logged_weights(self) -> None:
        """The MLflow pyfunc model (`generator_ema`) over the weights file this run logged: a sweep does this for its
        best trial only, since a pyfunc model costs seconds and megabytes per trial."""
        import mlflow
        import mlflow.pyfunc
        import torch

        from . import generator_model as gm

        with tempfile.TemporaryDirectory(prefix="radiogen-model-") as tmp:
            weights = Path(with_retry(lambda: self.client.download_artifacts(self.run_id, gm.WEIGHTS_FILE, tmp),
                                      "download weights"))
            module, config = gm.load_weights(weights), gm.weights_config(weights)
            signature, example = gm.signature_and_example(module, int(config["data"]["image_size"]))
            metadata = {"radiogen_config": json.dumps(config), "gene_names": list(module.gene_names),
                        "gene_stats": module.stats.to_dict()}
            requirements = [f"radiogen=={radiogen.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                            f"mlflow=={mlflow.__version__}", "numpy"]  # given, so MLflow does not infer them
            mlflow.set_tracking_uri(self.uri)
            with mlflow.start_run(run_id=self.run_id):
                with_retry(lambda: mlflow.pyfunc.log_model(
                    name="generator_ema", python_model=gm.__file__, artifacts={"weights": str(weights)},
                    signature=signature, input_example=example, metadata=metadata, pip_requirements=requirements),
                    "log model")

    def finish(self, status: str) -> None:
        with_retry(lambda: self.client.set_terminated(self.run_id, status), "finish run")

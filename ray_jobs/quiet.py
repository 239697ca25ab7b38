"""Quiet by default: radiogen's commands print one line per stage (and training progress lines); what Ray,
Ray Data, Ray Train, Optuna and MLflow log goes to files the commands name.

- Ray Data: no progress bars, its INFO lines only in ray-data.log (ray_data_logging.yaml), in the driver and,
  through the job's runtime environment, in every worker.
- Ray Train: its own INFO lines (resource requests, worker-group start, reports) only in its log files
  (`train_logging()`, `quiet_worker()`), and prints of the training function reach the terminal once, unpatched.
- MLflow in workers: warnings only, no artifact progress bars.
- The driver's Python loggers of Ray, Optuna and MLflow, and Python warnings: into a log file (`quiet_logs`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")


MLFLOW_QUIET = {"MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
"""MLflow without INFO lines, artifact progress bars or its own "View run" lines (radiogen prints the run once)."""


def quiet_mlflow_env() -> None:
    """Set MLFLOW_QUIET in this process before MLflow is imported (a user's own settings win): every command, with
    or without Ray, calls this first."""
    for key, value in MLFLOW_QUIET.items():
        os.environ.setdefault(key, value)


def ray_env(local_files: bool = True) -> dict[str, str]:
    """Environment of the driver and of the Ray workers of its job (a user's own settings of these variables win).
    `local_files=False` leaves out the Ray Data logging file, whose path only this machine is known to have."""
    # No preemption watcher: the loop reads no preemption notice (a lost worker restarts from its checkpoint), and
    # Ray Train force-kills the watcher's actor at every shutdown, which printed a core_worker error line.
    wanted = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
              "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", **MLFLOW_QUIET}
    if local_files:
        wanted["RAY_DATA_LOGGING_CONFIG"] = str(RAY_DATA_LOGGING)
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


def on_this_host(address: str | None) -> bool:
    """Whether a Ray address (None: a cluster started here) names this machine, whose files its workers then see."""
    if not address:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0]
    try:
        from ray._private.services import get_node_ip_address

        mine = {"127.0.0.1", "localhost", socket.gethostname(), get_node_ip_address()}
    except Exception:  # noqa: BLE001
        mine = {"127.0.0.1", "localhost", socket.gethostname()}
    return host in mine


def apply_ray_env(address: str | None = None) -> dict[str, str] | None:
    """Set the quiet environment in this process (before Ray Data is imported); return it as the job's
    runtime_env env_vars, or None inside a submitted job that has them already (ray_jobs/runtime_env.yaml)."""
    configured = all(k in os.environ for k in ray_env(local_files=False))
    env = ray_env(local_files=on_this_host(address))
    os.environ.update(env)
    return None if configured else env


def quiet_worker() -> None:
    """In a Ray Train worker: INFO records of Ray's own loggers (e.g. one line per reported checkpoint) stay in the
    worker's log files; the console (forwarded to the driver) gets warnings, errors and what the loop prints."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PlainRayHandler":  # Ray Train's console handler on the worker's root logger
            handler.setLevel(logging.WARNING)
    # Prints go straight to the worker's log file (no print patch): flush each line, so that what a worker said
    # is in its log even when Ray ends the process without flushing.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)


def train_logging():
    """Ray Train's RunConfig logging: its INFO lines to its log files only, warnings to the console."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="WARNING")


# "ray._private" on its own as well: ray.init(configure_logging=False) clears the "ray" logger's handlers, and the
# warnings it logs during init (token authentication) would reach stderr through Python's last-resort handler.
QUIET_LOGGERS = ("ray", "ray._private", "optuna", "mlflow", "alembic", "py.warnings")
_active: list[logging.Handler] = []


def _capture(handler: logging.Handler) -> None:
    for name in QUIET_LOGGERS:
        log = logging.getLogger(name)
        log.handlers, log.propagate = [handler], False


@contextlib.contextmanager
def quiet_logs(log_file: Path) -> Iterator[None]:
    """Within: the log records of Ray, Optuna, MLflow and Python warnings go to `log_file`, not the terminal."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = [(log.handlers, log.propagate) for log in map(logging.getLogger, QUIET_LOGGERS)]
    _capture(handler)
    _active.append(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        _active.remove(handler)
        for log, (handlers, propagate) in zip(map(logging.getLogger, QUIET_LOGGERS), saved):
            log.handlers, log.propagate = handlers, propagate
        handler.close()


def recapture() -> None:
    """Importing Ray installs its own handler on the "ray" logger: call this after the import, within quiet_logs."""
    if _active:
        _capture(_active[-1])


def quiet_mlflow() -> None:
    """In a driver within quiet_logs: MLflow's artifact progress bars off, and MLflow's and Optuna's log records
    into the log file. Both install their own console handler on import or first use, so import them here, drop
    Optuna's, and capture both loggers again."""
    quiet_mlflow_env()
    import mlflow  # noqa: F401
    import optuna

    optuna.logging.disable_default_handler()
    recapture()


def ray_log_dir() -> str:
    """The Ray session's log folder (workers' stdout/stderr, ray-data.log, Ray Train's logs)."""
    try:
        import ray._private.worker as worker

        return worker._global_node.get_logs_dir_path()  # noqa: SLF001 - Ray has no public accessor
    except Exception:  # noqa: BLE001
        return "/tmp/ray/session_latest/logs on the head node"


_ray_started_here = False


def ray_started() -> None:
    """Record that this command initialised Ray (then `release_ray` may shut it down)."""
    global _ray_started_here
    _ray_started_here = True


def release_ray() -> None:
    """Shut down the Ray connection this command opened (a cluster it started stops), so that the workers' last
    output arrives now, inside the caller's redirection, rather than at interpreter exit. A Ray session that
    existed before the command (a notebook's, a test's) is left alone."""
    global _ray_started_here
    if _ray_started_here:
        import ray

        ray.shutdown()
        _ray_started_here = False

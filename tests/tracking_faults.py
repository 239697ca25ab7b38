"""Tracking faults as self-contained commands for the background lane (tests/background.py), each on its own cohort
prepared without Ray; tests/test_faults.py asserts on what they leave in OUT.

    python -m tests.tracking_faults outage OUT
        the MLflow server (its own, sqlite) is SIGKILLed during a `radiogen train --local` run and brought back on
        the same store: outage.json (the run's exit code and output) and the store, OUT/mlflow/mlflow.db
    python -m tests.tracking_faults twins OUT
        two `radiogen train --local` runs start at once on one new sqlite store, OUT/store/mlflow.db: twins.json
        (their exit codes and output)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import free_port, start_mlflow_server, stop_mlflow_server
from .helpers import REPO, prepare_tiny
from .test_train import train_args

STEPS = 30


def prepared(out: Path) -> Path:
    """The session's `prepared` dataset made here: a 6-subject cohort, prepared in this process (no Ray)."""
    from data_prep.cohort import write_cohort

    cohort = write_cohort(out / "cohort", subjects=6, seed=0, matrix=128, design="aligned")
    return prepare_tiny(cohort, out / "data", "--workers", "0")


def twins(out: Path) -> int:
    data = prepared(out)
    uri = f"sqlite:///{out / 'store' / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-m", "ray_jobs.cli", "train", "--local",
                               *train_args(data, out / "runs", name=f"twin-{k}", steps=2), "--tracking-uri", uri],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    (out / "twins.json").write_text(json.dumps({"returncodes": [p.returncode for p in procs], "outputs": outputs}))
    return 0


def outage(out: Path) -> int:
    data = prepared(out)
    root, port = out / "mlflow", free_port()
    root.mkdir()
    server = start_mlflow_server(root, port)
    cmd = [sys.executable, "-m", "ray_jobs.cli", "train", "--local", "--tracking-uri", f"http://127.0.0.1:{port}",
           *train_args(data, out / "runs", name="outage", steps=STEPS)]
    # The MLflow client's own retries back off 2 s, 4 s, 8 s... (default 4 s, 8 s, 16 s...): the run then waits out
    # the few seconds of outage instead of a minute. What is under test is that nothing is lost.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**env, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
    try:
        checkpoints = out / "runs" / "outage" / "checkpoints"
        deadline = time.time() + 180
        while not any(checkpoints.glob("step_*")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        outage = proc.poll() is None  # False: the run ended before the outage (the test then needs a longer run)
        if outage:
            stop_mlflow_server(server, signal.SIGKILL)  # the tracking server dies while the run trains on
            time.sleep(2)
            server = start_mlflow_server(root, port)  # and comes back on the same store
        output = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_mlflow_server(server)
    (out / "outage.json").write_text(json.dumps({"outage": outage, "returncode": proc.returncode, "output": output,
                                                 "steps": STEPS}))
    return 0


if __name__ == "__main__":
    sys.exit({"outage": outage, "twins": twins}[sys.argv[1]](Path(sys.argv[2])))

"""Tests whose work is one self-contained command (its own folder; no session Ray cluster, no MLflow server) run it
in a background lane that starts with the session, beside the other tests: alone, those on the session's Ray
cluster leave about a third of the 2 cores idle while Ray starts its actors. A test opts in with
`@in_background(command)` and takes the `background` fixture (conftest.py), the finished command's result; it
asserts on it as it would on a run of its own.

The lane runs the commands one after another, without the session's RAY_ADDRESS and MLFLOW_TRACKING_URI (a command
that needs Ray or a tracking store starts its own, as on a fresh machine) and at one torch thread per process
(OMP_NUM_THREADS=1). Tests marked with the same command share one run of it, and the lane's tests run last, so the
others never wait for it; the session's summary says how long each command took.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Command = Callable[[Path], list[str]]
"""The command line of a test's work, given the folder it writes into."""


def in_background(command: Command) -> Callable:
    """Mark a test: `command(folder)` runs in the session's background lane; the `background` fixture waits for it."""
    def mark(test: Callable) -> Callable:
        test.background_command = command
        return test
    return mark


@dataclass
class Result:
    returncode: int
    stdout: str
    """stdout and stderr together, as the command printed them."""
    out: Path
    """The folder the command wrote into."""


def lane_env() -> dict[str, str]:
    """The session's environment less its services (a lane command starts its own Ray cluster and tracking store,
    as a user's command on a fresh machine does), at one torch thread."""
    drop = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1"}


class Job:
    """One test's command; its output goes to a file beside its folder."""

    def __init__(self, command: Command, root: Path, label: str) -> None:
        self.command, self.root, self.out, self.log = command, root, root / "out", root / "output.txt"
        self.label = label
        """The first test that takes the command's result, named in the session's summary."""
        self.done = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.cancelled = False
        self.lock = threading.Lock()
        self.seconds: float | None = None
        """How long the command ran, once it has finished."""

    def run(self, cwd: Path) -> None:
        """In the lane's thread: start the command (unless stopped before its turn) and wait for it."""
        with self.lock:
            if self.cancelled:
                self.done.set()
                return
            self.out.mkdir(parents=True, exist_ok=True)
            sink = self.log.open("w")
            self.proc = subprocess.Popen(self.command(self.out), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                         text=True, env=lane_env())
        start = time.monotonic()
        try:
            self.proc.wait()
            self.seconds = time.monotonic() - start
        finally:
            sink.close()
            self.done.set()

    def result(self, timeout: float) -> Result:
        """Wait for the command (queue time included); after `timeout` seconds it is stopped and the test fails."""
        if not self.done.wait(timeout) or self.proc is None:
            self.stop(keep=True)
            raise AssertionError(f"the background command did not finish in {timeout:.0f} s; its output: {self.log}")
        return Result(self.proc.returncode, self.log.read_text(), self.out)

    def stop(self, keep: bool) -> None:
        """End the command if it runs, and cancel it if its turn has not come; remove its folder unless `keep`."""
        with self.lock:
            self.cancelled = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


class Lane:
    """Runs its jobs (by test node id; tests may share one) one after another in a daemon thread, in the order
    given (the tests' collection order)."""

    def __init__(self, jobs: dict[str, Job], cwd: Path) -> None:
        self.jobs = jobs
        self.commands = list(dict.fromkeys(jobs.values()))
        """Each job once, in the order they run."""
        self.thread = threading.Thread(target=lambda: [job.run(cwd) for job in self.commands], daemon=True,
                                       name="background-lane")
        self.thread.start()

    def wait(self, timeout: float) -> None:
        """Until every command of the lane has ended (an AssertionError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        for job in self.commands:
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"a background command still runs after {timeout:.0f} s; its output: {job.log}")

    def stop(self, keep: bool) -> None:
        for job in self.commands:
            job.stop(keep)

"""Tests whose work is one self-contained command (its own folder; no session Ray cluster, no MLflow server) start
it when the session starts, and it runs beside the other tests: those on the session's Ray cluster leave about a
third of the 2 cores idle while Ray starts its actors. A test opts in with `@in_background(command)` and takes the
`background` fixture (conftest.py), the finished command's result; it asserts on it as it would on its own run.

Such a command runs at one torch thread (OMP_NUM_THREADS=1), so that it takes the idle core, not both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Command = Callable[[Path], list[str]]
"""The command line of a test's work, given the folder it writes into."""


def in_background(command: Command) -> Callable:
    """Mark a test: `command(folder)` starts when the session starts; the test's `background` fixture waits for it."""
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


class Job:
    """One started command, its output in a file beside its folder."""

    def __init__(self, command: Command, root: Path, cwd: Path) -> None:
        self.root, self.out = root, root / "out"
        self.log = root / "output.txt"
        self.out.mkdir(parents=True)
        with self.log.open("w") as sink:
            self.proc = subprocess.Popen(command(self.out), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def result(self, timeout: float) -> Result:
        """Wait for the command (killed after `timeout` seconds from now, which fails the test)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(keep=True)
            raise AssertionError(f"the background command did not finish in {timeout:.0f} s; its output: {self.log}")
        return Result(code, self.log.read_text(), self.out)

    def stop(self, keep: bool) -> None:
        """End the command if it still runs; remove its folder unless `keep` (a failed session keeps it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

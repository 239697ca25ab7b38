"""Where a run's start-up goes: wall-clock timestamps of its phases, logged to MLflow as `phase/<name>_s`
(seconds since the run's start) so that `radiogen bench` can say what a trial pays before its first step."""

from __future__ import annotations

import time

PHASES = ("start", "mlflow_open", "data_ready", "model_built", "first_step", "first_report", "last_report", "end")
"""In order: the run (or trial) began; its MLflow run is open; its training data is decoded; the model is built
(or restored); the first optimiser step is done; the first checkpoint is about to be written and reported;
the last one is; it ended."""


class Phases:
    """Unix times of the phases reached so far; `mark` keeps the first time of a phase (`again=True`: the last)."""

    def __init__(self, times: dict[str, float] | None = None) -> None:
        self.times = dict(times or {})
        self.times.setdefault("start", time.time())
        self.sent: set[str] = set()

    def mark(self, name: str, again: bool = False) -> None:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; one of {', '.join(PHASES)}")
        if again or name not in self.times:
            self.times[name] = time.time()
            self.sent.discard(name)

    def unsent(self) -> dict[str, float]:
        """`phase/<name>_s` of the phases not logged yet (or marked again since), and mark them logged."""
        start = self.times["start"]
        out = {f"phase/{k}_s": v - start for k, v in self.times.items() if k != "start" and k not in self.sent}
        self.sent |= set(self.times)
        return out
